"""Dispatcher benchmarks: per-task overhead, memory at a million tasks, resume, checkpoints.

1. Overhead: no-op tasks through ``dispatch_many`` in a real job (manager, store, 8 workers)
   against hand-written trio worker pools (one thread call per task, and 64 per call) and
   ``ThreadPoolExecutor.map`` with 8 threads. Everything times only its dispatch loop.
2. Peak RSS of a 1M-task no-op job, in a fresh interpreter, above its RSS after imports. The
   job runs until all but 10 tasks are done (those wait for the pause), then is paused.
3. Resume of that paused job (999,990 tasks checkpointed) with ``dispatch_range`` and with
   ``dispatch_many``: each round resumes a fresh copy of the paused store (the copy's spec
   switched to the mode) in a new manager and times ``resume()`` -> ``result()``.
4. Cost of ``await ctx.checkpoint(force=True)`` with 1, 100 and 10,000 new completions
   (contiguous indices: one range; and every other index: one range per completion).

Run: ``python -m benchmarks.bench_dispatch [--quick]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shutil
import sqlite3
import statistics
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import trio
import trio.testing

import parjobs
from parjobs._context import CHECKPOINT_INTERVAL

from ._common import (
    Stopwatch,
    Timing,
    bar_chart,
    current_rss_bytes,
    load_average,
    log,
    machine_note,
    peak_rss_bytes,
    reset_peak_rss,
    ru_maxrss_bytes,
    run_python,
    run_rounds,
    temp_dir,
    write_results,
)

WORKERS = 8
BATCH = 64
#: Tasks left undone in the resume scenario.
LEFT_UNDONE = 10


# -- tasks and jobs -------------------------------------------------------------------------


@dataclasses.dataclass(slots=True)
class Noop(parjobs.Task[None]):
    """A task that does nothing: what remains is the cost of dispatching it."""

    index: int

    def run(self, tc: parjobs.TaskContext | None) -> None:
        return None


@dataclasses.dataclass(slots=True)
class HoldUntilPaused(parjobs.AsyncTask[None]):
    """Waits in trio until the job is paused (async, so it never shares a thread batch)."""

    index: int

    async def arun(self, tc: parjobs.TaskContext) -> None:
        # The interrupt is a plain flag shared with threads: there is no event to wait on.
        while not tc.interrupted:
            await trio.sleep(0.005)
        tc.check()


@parjobs.job_type("bench-noop", version=1)
class NoopJob(parjobs.Job):
    """``n`` no-op tasks; returns how many ran and the wall/CPU time of the dispatch loop.

    ``mode`` picks ``dispatch_many`` over a generator or ``dispatch_range``; ``checkpoint``
    calls ``ctx.checkpoint()`` after every outcome (the idiomatic loop); on the first run the
    last ``hold`` tasks wait until the job is paused.
    """

    n: int
    mode: Literal["many", "range"] = "many"
    checkpoint: bool = False
    hold: int = 0

    async def run(self, ctx: parjobs.JobContext) -> dict[str, Any]:
        sw = Stopwatch()
        dispatcher = ctx.task_dispatcher()
        n = self.n
        hold_from = n - self.hold if ctx.run_number == 1 else n
        factory: Callable[[int], parjobs.Task[None]] = Noop
        if hold_from < n:

            def factory(i: int) -> parjobs.Task[None]:
                return Noop(i) if i < hold_from else HoldUntilPaused(i)

        if self.mode == "range":
            outcomes = dispatcher.dispatch_range(n, factory)
        elif factory is Noop:
            outcomes = dispatcher.dispatch_many(Noop(i) for i in range(n))
        else:
            outcomes = dispatcher.dispatch_many(factory(i) for i in range(n))
        ok = 0
        async for outcome in outcomes:
            if outcome.ok:
                ok += 1
            if self.checkpoint:
                await ctx.checkpoint()
        timing = sw.stop()
        return {"ok": ok, "wall": timing.wall, "cpu": timing.cpu}


@parjobs.job_type("bench-checkpoint", version=1)
class CheckpointJob(parjobs.Job):
    """Runs ``size`` no-op tasks, then times one forced checkpoint; ``reps`` times per size.

    ``stride`` 1 gives contiguous indices (one stored range per checkpoint); 2 leaves a gap
    after every index, so every completion is its own range.
    """

    sizes: list[int]
    reps: list[int]
    stride: int = 1

    async def run(self, ctx: parjobs.JobContext) -> dict[str, Any]:
        dispatcher = ctx.task_dispatcher()
        await ctx.checkpoint(force=True)
        last, max_gap, start = trio.current_time(), 0.0, 0
        out: dict[str, Any] = {}
        for size, reps in zip(self.sizes, self.reps, strict=True):
            walls, cpus = [], []
            for _ in range(reps):
                indices = range(start, start + size * self.stride, self.stride)
                start += size * self.stride
                async for outcome in dispatcher.dispatch_many(Noop(i) for i in indices):
                    assert outcome.ok
                sw = Stopwatch()
                await ctx.checkpoint(force=True)
                timing = sw.stop()
                walls.append(timing.wall)
                cpus.append(timing.cpu)
                now = trio.current_time()
                max_gap, last = max(max_gap, now - last), now
            out[str(size)] = {"wall": walls, "cpu": cpus}
        # A gap this long (on the trio clock) lets the manager's background checkpoint take
        # completions before the timed one.
        out["max_gap_s"] = max_gap
        out["clean"] = max_gap < CHECKPOINT_INTERVAL
        return out


# -- 1. per-task overhead -------------------------------------------------------------------


def _parjobs_contender(tmp: Path, n: int, mode: str, checkpoint: bool) -> Callable[[], Timing]:
    def contender() -> Timing:
        store = tmp / "overhead.sqlite"

        async def main() -> dict[str, Any]:
            async with parjobs.open_manager(store, workers=WORKERS) as manager:
                job = NoopJob(n=n, mode=mode, checkpoint=checkpoint)  # type: ignore[arg-type]
                handle = await manager.submit(job)
                result: dict[str, Any] = await handle.result()
                return result

        try:
            result = trio.run(main)
        finally:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{store}{suffix}").unlink(missing_ok=True)
        assert result["ok"] == n, result
        return Timing(result["wall"], result["cpu"])

    return contender


def _run_batch(batch: list[Noop]) -> int:
    for task in batch:
        task.run(None)
    return len(batch)


def _trio_pool_contender(n: int, batch: int) -> Callable[[], Timing]:
    """The hand-written pool: a producer feeds a bounded channel, N workers each do one
    ``trio.to_thread.run_sync`` per task (or per ``batch`` tasks) and send results back."""

    async def main() -> Timing:
        sw = Stopwatch()
        work_send, work_recv = trio.open_memory_channel[Any](WORKERS * 4 if batch == 1 else WORKERS)
        out_send, out_recv = trio.open_memory_channel[None](math.inf)

        async def produce() -> None:
            async with work_send:
                if batch == 1:
                    for i in range(n):
                        await work_send.send(Noop(i))
                    return
                chunk: list[Noop] = []
                for i in range(n):
                    chunk.append(Noop(i))
                    if len(chunk) == batch:
                        await work_send.send(chunk)
                        chunk = []
                if chunk:
                    await work_send.send(chunk)

        async def work(out: trio.MemorySendChannel[None]) -> None:
            async with out:
                async for item in work_recv:
                    if batch == 1:
                        await trio.to_thread.run_sync(item.run, None)
                        out.send_nowait(None)
                    else:
                        for _ in range(await trio.to_thread.run_sync(_run_batch, item)):
                            out.send_nowait(None)

        done = 0
        async with trio.open_nursery() as nursery:
            nursery.start_soon(produce)
            async with out_send:
                for _ in range(WORKERS):
                    nursery.start_soon(work, out_send.clone())
            async for _ in out_recv:
                done += 1
        timing = sw.stop()
        assert done == n
        return timing

    return lambda: trio.run(main)


def _executor_contender(n: int) -> Callable[[], Timing]:
    def contender() -> Timing:
        sw = Stopwatch()
        with ThreadPoolExecutor(WORKERS) as pool:
            done = sum(1 for _ in pool.map(Noop.run, (Noop(i) for i in range(n)), [None] * n))
        timing = sw.stop()
        assert done == n
        return timing

    return contender


TRIO_LOOP = "trio pool, 1 task/thread call"
TRIO_BATCHED = "trio pool, 64 tasks/thread call"


def bench_overhead(
    tmp: Path, quick: bool, chart: bool = True, *, tiny: bool = False, n: int | None = None
) -> dict[str, Any]:
    """Per-task cost of no-op tasks; quick mode skips the warmup round and two variants
    (``tiny``: a smoke test's sizes, one round; ``n`` overrides the task count)."""
    n = n or (500 if tiny else 20_000 if quick else 200_000)
    rounds, warmup = (1, 0) if tiny else (3, 0) if quick else (3, 1)
    log(f"[dispatch] per-task overhead: {n:,} no-op tasks, {WORKERS} workers, {rounds} rounds")
    contenders = {
        "parjobs dispatch_many": _parjobs_contender(tmp, n, "many", False),
        "parjobs dispatch_range": _parjobs_contender(tmp, n, "range", False),
        "parjobs dispatch_many + checkpoint()": _parjobs_contender(tmp, n, "many", True),
        TRIO_LOOP: _trio_pool_contender(n, 1),
        TRIO_BATCHED: _trio_pool_contender(n, BATCH),
        "ThreadPoolExecutor.map": _executor_contender(n),
    }
    if quick:
        del contenders["parjobs dispatch_range"], contenders["parjobs dispatch_many + checkpoint()"]
    result = run_rounds(contenders, rounds, warmup, items=n)
    if chart:
        bar_chart(
            result,
            baseline=TRIO_LOOP,
            filename="dispatch_overhead.png",
            title=f"Dispatch overhead: {n:,} no-op tasks, {WORKERS} workers (lower is better)",
            target=1.5,
            note=machine_note(),
        )
    main = result.ratio_to(TRIO_LOOP)["parjobs dispatch_many"]
    return {
        "n": n,
        "workers": WORKERS,
        "rounds": rounds,
        "warmup_rounds": warmup,
        "timed": "the dispatch loop only (pool start, every task, every outcome consumed)",
        "baseline": TRIO_LOOP,
        "contenders": result.to_json(baseline=TRIO_LOOP, trio_batched=TRIO_BATCHED),
        "target": {
            "max_ratio_to_baseline": 1.5,
            "ratio": round(main, 3),
            "met": main <= 1.5,
            "ratio_to_trio_batched": round(
                result.ratio_to(TRIO_BATCHED)["parjobs dispatch_many"], 3
            ),
        },
    }


# -- 2 and 3. a million-task job: peak RSS, then resume -------------------------------------


def paused_job_child(store: str, n: int) -> dict[str, Any]:
    """Runs in a fresh interpreter: an ``n``-task job (``dispatch_many`` over a generator,
    ``ctx.checkpoint()`` after every outcome) runs until all but `LEFT_UNDONE` tasks are
    done and is then paused. Reports RSS after imports, the peak, and the job id."""
    base_rss, base_maxrss = current_rss_bytes(), ru_maxrss_bytes()
    reset_peak_rss()

    async def main() -> str:
        async with parjobs.open_manager(store, workers=WORKERS) as manager:
            job = NoopJob(n=n, checkpoint=True, hold=LEFT_UNDONE)
            handle = await manager.submit(job)
            async for snap in handle.progress():
                if snap.items_done >= n - LEFT_UNDONE:
                    break
            await manager.pause(handle.id)
            status = await handle.wait()
            assert status is parjobs.JobStatus.PAUSED, status
            return handle.id

    sw = Stopwatch()
    job_id = trio.run(main)
    return {
        "job_id": job_id,
        "run_s": sw.stop().wall,
        "base_rss": base_rss,
        "base_maxrss": base_maxrss,
        "peak_rss": peak_rss_bytes(),
        "maxrss": ru_maxrss_bytes(),
    }


def bench_rss(tmp: Path, quick: bool, *, tiny: bool = False) -> tuple[dict[str, Any], Path, str]:
    """Peak RSS of the job in `paused_job_child`; also returns the paused store and job id."""
    n = 5_000 if tiny else 100_000 if quick else 1_000_000
    store = tmp / "paused.sqlite"
    code = (
        "import json; from benchmarks.bench_dispatch import paused_job_child; "
        f"print(json.dumps(paused_job_child({str(store)!r}, {n})))"
    )
    child, timing = run_python(code)
    delta = (child["peak_rss"] - child["base_rss"]) / 2**20
    out = {
        "n": n,
        "completed_before_pause": n - LEFT_UNDONE,
        "rss_after_imports_mb": round(child["base_rss"] / 2**20, 1),
        "peak_rss_mb": round(child["peak_rss"] / 2**20, 1),
        "peak_above_imports_mb": round(delta, 1),
        "ru_maxrss_mb": round(child["maxrss"] / 2**20, 1),
        "ru_maxrss_after_imports_mb": round(child["base_maxrss"] / 2**20, 1),
        "note": "peak is VmHWM (reset after imports); ru_maxrss carries over the parent's "
        "high-water mark through exec on Linux, so it is reported only for reference",
        "run_s": round(child["run_s"], 3),
        "us_per_task": round(child["run_s"] / n * 1e6, 2),
        "process_wall_s": round(timing.wall, 3),
        "process_cpu_s": round(timing.cpu, 3),
        "target_mb": 100,
        "met": delta < 100,
    }
    log(f"[dispatch] peak RSS of a {n:,}-task job: +{delta:.1f} MB above imports")
    return out, store, child["job_id"]


def _store_stats(store: Path) -> dict[str, Any]:
    conn = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    try:
        rows, done = conn.execute("SELECT COUNT(*), SUM(stop - start) FROM completed").fetchone()
    finally:
        conn.close()
    files = [Path(f"{store}{s}") for s in ("", "-wal")]
    size = sum(f.stat().st_size for f in files if f.exists())
    return {"store_bytes": size, "completed_rows": rows, "completed_indices": done}


def _with_mode(paused: Path, copy: Path, job_id: str, mode: str) -> None:
    """Copy the paused store, switching the job's dispatch mode in the copy's spec."""
    shutil.copyfile(paused, copy)
    conn = sqlite3.connect(copy)
    try:
        (spec,) = conn.execute("SELECT spec FROM jobs WHERE id=?", (job_id,)).fetchone()
        spec = json.dumps(dict(json.loads(spec), mode=mode))
        with conn:
            conn.execute("UPDATE jobs SET spec=? WHERE id=?", (spec, job_id))
    finally:
        conn.close()


def _resume_contender(
    template: Path, work: Path, job_id: str, open_times: list[float]
) -> Callable[[], Timing]:
    def contender() -> Timing:
        for suffix in ("-wal", "-shm"):
            Path(f"{work}{suffix}").unlink(missing_ok=True)
        shutil.copyfile(template, work)

        async def main() -> tuple[Timing, dict[str, Any]]:
            sw = Stopwatch()
            async with parjobs.open_manager(work, workers=WORKERS) as manager:
                open_times.append(sw.stop().wall)
                sw = Stopwatch()
                handle = await manager.resume(job_id)
                result: dict[str, Any] = await handle.result()
                return sw.stop(), result

        timing, result = trio.run(main)
        assert result["ok"] == LEFT_UNDONE, result
        return timing

    return contender


def bench_resume(
    tmp: Path, quick: bool, paused: Path, job_id: str, n: int, *, tiny: bool = False
) -> dict[str, Any]:
    """Time ``resume`` -> ``result`` on fresh copies of the paused store, in a new manager."""
    rounds = 1 if tiny else 3 if quick else 5
    out: dict[str, Any] = {"n": n, "left_undone": LEFT_UNDONE, **_store_stats(paused)}
    assert out["completed_indices"] == n - LEFT_UNDONE, out
    contenders: dict[str, Callable[[], Timing]] = {}
    opens: dict[str, list[float]] = {}
    for mode in ("range", "many"):
        template = tmp / f"paused-{mode}.sqlite"
        _with_mode(paused, template, job_id, mode)
        opens[mode] = []
        contenders[f"dispatch_{mode}"] = _resume_contender(
            template, tmp / f"work-{mode}.sqlite", job_id, opens[mode]
        )
    log(f"[dispatch] resume of a {n:,}-task job with {LEFT_UNDONE} left, {rounds} rounds")
    result = run_rounds(contenders, rounds, warmup=1)
    for mode in ("range", "many"):
        m = result[f"dispatch_{mode}"]
        m.extra["open_manager_median_s"] = round(statistics.median(opens[mode][1:]), 6)
        m.extra["met"] = m.median < 1.0
    out["variants"] = result.to_json()
    out["target_s"] = 1.0
    return out


# -- 4. checkpoints -------------------------------------------------------------------------


def bench_checkpoint(tmp: Path, quick: bool, *, tiny: bool = False) -> dict[str, Any]:
    """Forced-checkpoint cost. The manager's background checkpoint would take part of the
    completions; a frozen trio clock (``MockClock(rate=0)``) keeps it from ever firing."""
    sizes = [1, 100, 10_000]
    reps = [5, 2, 1] if tiny else [50, 20, 2] if quick else [300, 100, 10]
    out: dict[str, Any] = {"sizes": sizes, "reps": reps}
    for stride, label in ((1, "contiguous"), (2, "scattered")):
        store = tmp / f"checkpoint-{stride}.sqlite"

        async def main(stride: int = stride, store: Path = store) -> dict[str, Any]:
            async with parjobs.open_manager(store, workers=WORKERS) as manager:
                job = CheckpointJob(sizes=sizes, reps=reps, stride=stride)
                result: dict[str, Any] = await (await manager.submit(job)).result()
                return result

        raw = trio.run(main, clock=trio.testing.MockClock(rate=0))
        assert raw["clean"], raw
        section: dict[str, Any] = {}
        for size in sizes:
            walls, cpus = raw[str(size)]["wall"], raw[str(size)]["cpu"]
            section[str(size)] = {
                "median_us": round(statistics.median(walls) * 1e6, 1),
                "min_us": round(min(walls) * 1e6, 1),
                "max_us": round(max(walls) * 1e6, 1),
                "first_us": round(walls[0] * 1e6, 1),
                "last_us": round(walls[-1] * 1e6, 1),
                "cpu_median_us": round(statistics.median(cpus) * 1e6, 1),
                "us_per_completion": round(statistics.median(walls) * 1e6 / size, 3),
            }
        section["store"] = _store_stats(store)
        out[label] = section
        summary = ", ".join(f"{s}: {section[str(s)]['median_us']:,.0f} µs" for s in sizes)
        log(f"[dispatch] checkpoint ({label}): {summary}")
    return out


# -- entry points ---------------------------------------------------------------------------


def run(
    quick: bool, *, write: bool = True, tiny: bool = False, overhead_n: int | None = None
) -> dict[str, Any]:
    """Run all dispatcher scenarios and return their figures; with ``write``, also merge them
    into the results JSON under ``"dispatch"`` and render ``dispatch_overhead.png``.
    ``tiny`` shrinks everything to smoke-test sizes (figures meaningless); ``overhead_n``
    sets the task count of the overhead rounds (``python -m benchmarks`` uses fewer)."""
    total, phases = Stopwatch(), {}
    data: dict[str, Any] = {"quick": quick, "tiny": tiny, "loadavg_before": load_average()}
    with temp_dir() as tmp:
        sw = Stopwatch()
        data["overhead"] = bench_overhead(tmp, quick, chart=write, tiny=tiny, n=overhead_n)
        phases["overhead"], sw = sw.stop().wall, Stopwatch()
        data["rss"], paused, job_id = bench_rss(tmp, quick, tiny=tiny)
        phases["rss"], sw = sw.stop().wall, Stopwatch()
        data["resume"] = bench_resume(tmp, quick, paused, job_id, data["rss"]["n"], tiny=tiny)
        phases["resume"], sw = sw.stop().wall, Stopwatch()
        data["checkpoint"] = bench_checkpoint(tmp, quick, tiny=tiny)
        phases["checkpoint"] = sw.stop().wall
    data["loadavg_after"] = load_average()
    data["phase_s"] = {k: round(v, 1) for k, v in phases.items()}
    data["total_s"] = round(total.stop().wall, 1)
    if write:
        path = write_results("dispatch", data)
        log(f"[dispatch] wrote {path} in {data['total_s']} s")
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (~30 s)")
    parser.add_argument("--no-write", action="store_true", help="print only: no JSON, no PNG")
    args = parser.parse_args()
    data = run(args.quick, write=not args.no_write)
    print(json.dumps(data, indent=2))


if __name__ == "__main__":
    main()
