"""Resume and checkpoint costs.

1. Resume of a job with 1,000,000 completed tasks (10 left): the dispatcher benchmark's
   figures (`bench_dispatch.bench_resume`), reused when the dispatch scenario ran in this
   session, measured here otherwise (quick mode: 100,000 tasks).
2. Checkpoint overhead of a real copy: `CopyJob` on the small-file set with N workers, with
   ``JobStore.checkpoint`` (the SQLite write, in the store thread) and
   ``JobContext.checkpoint`` (what callers await) wrapped by timers in this process. Their
   totals divided by the copy's wall time bound what checkpointing costs; the store writes
   run in their own thread, concurrently with the workers, so the real cost is at most that.
3. Checkpoint cost as copy time: the same copy with the checkpoint writer's interval at
   50 ms (the default), at 0.5 s (the interval before #14) and with no background
   checkpoints at all (only the first write and the final one): the baseline, so the ratios
   are what checkpointing costs.
4. Re-runs after ``kill -9`` (#14): a child process runs a job of tiny tasks (each logs its
   index and end time), is SIGKILLed mid-job and resumed to the end in another child; the
   tasks run twice are counted and compared with the completions of the 50 ms before the
   kill, for the default interval and for 0.5 s.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import trio

import parjobs
import parjobs._context as context_mod
from parjobs._context import CHECKPOINT_INTERVAL, JobContext
from parjobs._store import JobStore
from parjobs.ops._copy import CopyJob

from . import bench_dispatch
from ._common import Rounds, load_average, log, run_rounds, temp_dir
from ._session import Session
from ._tools import expect_tree, fresh_dir, refresh_metadata, remove, run_job, warm


class CheckpointTimer:
    """Sums of seconds spent in ``JobStore.checkpoint`` and in awaited
    ``JobContext.checkpoint`` calls while `installed`; and the CPU seconds of the threads
    doing the checkpoints' work: the store's writes (its thread) and the job's gathering of
    each batch (``JobContext._drain``, the trio thread), a figure the machine's load barely
    moves, unlike wall time."""

    def __init__(self) -> None:
        self.store_s = 0.0
        self.store_calls = 0
        self.cpu_s = 0.0
        self.ctx_s = 0.0
        self.ctx_calls = 0
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def installed(self) -> Iterator[CheckpointTimer]:
        real_store, real_ctx = JobStore.checkpoint, JobContext.checkpoint
        real_drain = JobContext._drain

        @functools.wraps(real_store)
        def store_checkpoint(store: JobStore, *args: Any, **kwargs: Any) -> Any:
            t0, c0 = time.perf_counter(), time.thread_time()
            try:
                return real_store(store, *args, **kwargs)
            finally:
                with self._lock:
                    self.store_s += time.perf_counter() - t0
                    self.cpu_s += time.thread_time() - c0
                    self.store_calls += 1

        @functools.wraps(real_drain)
        def drain(ctx: JobContext, *args: Any, **kwargs: Any) -> Any:
            c0 = time.thread_time()
            try:
                return real_drain(ctx, *args, **kwargs)
            finally:
                with self._lock:
                    self.cpu_s += time.thread_time() - c0

        @functools.wraps(real_ctx)
        async def ctx_checkpoint(ctx: JobContext, *args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return await real_ctx(ctx, *args, **kwargs)
            finally:
                self.ctx_s += time.perf_counter() - t0
                self.ctx_calls += 1

        JobStore.checkpoint = store_checkpoint  # type: ignore[method-assign]
        JobContext.checkpoint = ctx_checkpoint  # type: ignore[method-assign]
        JobContext._drain = drain  # type: ignore[method-assign]
        try:
            yield self
        finally:
            JobStore.checkpoint = real_store  # type: ignore[method-assign]
            JobContext.checkpoint = real_ctx  # type: ignore[method-assign]
            JobContext._drain = real_drain  # type: ignore[method-assign]


def checkpoint_overhead(session: Session, set_name: str, workers: int) -> dict[str, Any]:
    """Copy ``set_name`` ``session.rounds`` times with timed checkpoints."""
    data = session.data
    src, info = data.path(set_name), data.info["sets"][set_name]
    warm([src])
    rows = []
    for r in range(session.warmup + session.rounds):
        if session.can_drop_caches:  # as in the copy scenario: forget inodes earlier rounds deleted
            refresh_metadata([src])
        dst = fresh_dir(session.scratch, "resume-copy")
        timer = CheckpointTimer()
        with timer.installed():
            job = CopyJob(sources=[str(src)], destination=str(dst))
            result, timing = run_job(job, workers=workers, store_dir=session.scratch)
        expect_tree(dst, info["files"], info["bytes"], "parjobs copy")
        remove(dst)
        assert result["copied"] == info["files"], result
        if r < session.warmup:
            continue
        rows.append(
            {
                "wall_s": round(timing.wall, 4),
                "store_checkpoint_s": round(timer.store_s, 5),
                "store_checkpoint_calls": timer.store_calls,
                "store_share": round(timer.store_s / timing.wall, 4),
                "awaited_checkpoint_s": round(timer.ctx_s, 5),
                "awaited_checkpoint_calls": timer.ctx_calls,
                "awaited_share": round(timer.ctx_s / timing.wall, 4),
            }
        )
        log(
            f"  copy {timing.wall * 1e3:8.1f} ms; store checkpoints {timer.store_calls} "
            f"writes, {timer.store_s * 1e3:.1f} ms ({timer.store_s / timing.wall:.2%})"
        )
    return {
        "data_set": {set_name: info},
        "workers": workers,
        "checkpoint_interval_s": CHECKPOINT_INTERVAL,
        "rounds": rows,
        "median_wall_s": statistics.median(r["wall_s"] for r in rows),
        "median_store_share": statistics.median(r["store_share"] for r in rows),
        "median_awaited_share": statistics.median(r["awaited_share"] for r in rows),
        "median_store_writes": statistics.median(r["store_checkpoint_calls"] for r in rows),
    }


def million_resume(session: Session) -> dict[str, Any]:
    """The dispatcher's resume figures (from this session, or measured now)."""
    shared = session.shared.get("dispatch")
    if shared is not None:
        return {"source": "dispatch scenario of this run", **shared["resume"]}
    tiny = session.mode == "tiny"
    log("[resume] a paused job with all but 10 tasks done (from bench_dispatch)")
    with temp_dir() as tmp:
        rss, paused, job_id = bench_dispatch.bench_rss(tmp, session.quick, tiny=tiny)
        res = bench_dispatch.bench_resume(tmp, session.quick, paused, job_id, rss["n"], tiny=tiny)
    return {"source": "measured by the resume scenario", **res}


#: Background checkpoint intervals compared: the default, the one before #14, none at all.
INTERVALS = {"every 50 ms": CHECKPOINT_INTERVAL, "every 0.5 s (before)": 0.5, "none": 1e9}
NO_CHECKPOINTS = "none"


@contextlib.contextmanager
def checkpoint_interval(seconds: float) -> Iterator[None]:
    """Run with the checkpoint writer's interval at ``seconds`` (the writer reads the module
    attribute at every write)."""
    old = context_mod.CHECKPOINT_INTERVAL
    context_mod.CHECKPOINT_INTERVAL = seconds
    try:
        yield
    finally:
        context_mod.CHECKPOINT_INTERVAL = old


def checkpoint_cost(session: Session, set_name: str, workers: int) -> dict[str, Any]:
    """Copy ``set_name`` with each of `INTERVALS`, alternating, ``session.rounds`` times."""
    data = session.data
    src, info = data.path(set_name), data.info["sets"][set_name]
    warm([src])
    writes: dict[str, list[int]] = {name: [] for name in INTERVALS}
    cpu: dict[str, list[float]] = {name: [] for name in INTERVALS}

    def copy_with(name: str) -> None:
        dst = fresh_dir(session.scratch, "checkpoint-cost")
        timer = CheckpointTimer()
        with checkpoint_interval(INTERVALS[name]), timer.installed():
            job = CopyJob(sources=[str(src)], destination=str(dst))
            result, _timing = run_job(job, workers=workers, store_dir=session.scratch)
        expect_tree(dst, info["files"], info["bytes"], "parjobs copy")
        remove(dst)
        assert result["copied"] == info["files"], result
        writes[name].append(timer.store_calls)
        cpu[name].append(timer.cpu_s)

    log(f"[resume] checkpoint cost: copy {data.label(set_name)}, {workers} workers")
    load0 = load_average()
    rounds = run_rounds(
        {name: functools.partial(copy_with, name) for name in INTERVALS},
        session.rounds,
        session.warmup,
    )
    case = session.case(
        rounds,
        NO_CHECKPOINTS,
        data_set={set_name: info},
        loadavg_before=load0,
        workers=workers,
        intervals_s=INTERVALS,
        store_writes=writes,
        checkpoint_cpu_s={name: [round(c, 5) for c in v] for name, v in cpu.items()},
    )
    ratios = rounds.ratio_to(NO_CHECKPOINTS)
    log("  " + ", ".join(f"{n}: {r:.3f}x" for n, r in ratios.items()))
    case["paired"] = paired = _paired_ratios(rounds, NO_CHECKPOINTS)
    log(
        "  paired by round: "
        + ", ".join(f"{n}: wall {r['wall']:.3f}x cpu {r['cpu']:.3f}x" for n, r in paired.items())
    )
    return case


def _paired_ratios(rounds: Rounds, baseline: str) -> dict[str, dict[str, Any]]:
    """Each contender's round-by-round ratios to the baseline's same round (the rounds
    alternate, so a pair shares the machine's state of the moment): the median of the wall
    and of the CPU ratios. CPU time (every thread of this process: the store's writes too) is
    the steadier figure on a loaded machine."""
    base = rounds[baseline]
    out: dict[str, dict[str, Any]] = {}
    for name, m in rounds.items():
        if name == baseline:
            continue
        wall = [a / b for a, b in zip(m.wall, base.wall, strict=True)]
        cpu = [a / b for a, b in zip(m.cpu, base.cpu, strict=True) if b > 0]
        out[name] = {
            "wall": statistics.median(wall),
            "cpu": statistics.median(cpu) if cpu else float("nan"),
            "rounds_wall": [round(r, 4) for r in wall],
        }
    return out


#: The targets of #14: checkpoints at the default interval cost under 2 % of the copy, and a
#: kill -9 re-runs at most the tasks in flight plus 50 ms of completions.
COST_TARGET = 0.02


def verdict(cost: dict[str, Any], reruns: dict[str, Any]) -> dict[str, Any]:
    """The two #14 figures against their targets (what the JSON and the log end with)."""
    default = next(iter(INTERVALS))
    paired = cost["paired"][default]
    rows = reruns["variants"][default]["kills"]
    # The checkpoints' own CPU beyond the baseline's first and final writes, as a share of
    # the baseline copy's CPU time (all threads of the process).
    spent = cost["checkpoint_cpu_s"]
    extra = statistics.median(spent[default]) - statistics.median(spent[NO_CHECKPOINTS])
    copy_cpu = cost["contenders"][NO_CHECKPOINTS]["cpu_median_s"]
    writes = statistics.median(cost["store_writes"][default])
    out = {
        "checkpoint_cost": {
            "interval_s": INTERVALS[default],
            "vs": NO_CHECKPOINTS,
            "wall_pct": round((paired["wall"] - 1) * 100, 2),
            "cpu_pct": round((paired["cpu"] - 1) * 100, 2),
            "own_cpu_pct": round(extra / copy_cpu * 100, 2) if copy_cpu > 0 else None,
            "writes": writes,
            "cpu_per_write_ms": round(statistics.median(spent[default]) / max(writes, 1) * 1e3, 3),
            "target_pct": COST_TARGET * 100,
            "met": paired["wall"] - 1 < COST_TARGET,
        },
        "reruns_after_kill": {
            "reruns": [r["reruns"] for r in rows],
            "allowed": [
                round(reruns["tasks"]["workers"] + r["completions_in_50ms"], 1) for r in rows
            ],
            "target": "in flight (one per worker) + 50 ms of completions",
            "met": all(r["within_target"] for r in rows),
        },
    }
    c, k = out["checkpoint_cost"], out["reruns_after_kill"]
    log(
        f"[resume] verdict: checkpoints every {INTERVALS[default] * 1000:.0f} ms cost "
        f"{c['wall_pct']:+.2f} % wall ({c['cpu_pct']:+.2f} % CPU; their own CPU "
        f"{c['own_cpu_pct']} %, {c['writes']} writes of {c['cpu_per_write_ms']} ms) of the "
        "copy, target < 2 %: "
        f"{'met' if c['met'] else 'NOT met'}; re-runs after kill -9 {k['reruns']} (allowed "
        f"{k['allowed']}): {'met' if k['met'] else 'NOT met'}"
    )
    return out


# -- re-runs after kill -9 -------------------------------------------------------------------


@dataclasses.dataclass
class StampTask(parjobs.Task[None]):
    """Sleep ``seconds``, then log ``index end-time``: a side effect that shows re-runs."""

    index: int
    log: str
    seconds: float

    def run(self, tc: parjobs.TaskContext) -> None:
        time.sleep(self.seconds)
        fd = os.open(self.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, f"{self.index} {time.time():.6f}\n".encode())
        finally:
            os.close(fd)


@parjobs.job_type("bench-stamped", version=1)
class StampedJob(parjobs.Job):
    """``n`` `StampTask`s (``dispatch_range``: a resumed run builds none of the done ones)."""

    n: int
    log: str
    seconds: float = 0.001

    async def run(self, ctx: JobContext) -> int:
        done = 0
        dispatcher = ctx.task_dispatcher()
        async for outcome in dispatcher.dispatch_range(
            self.n, lambda i: StampTask(i, self.log, self.seconds)
        ):
            done += outcome.ok
        return done


def child_main(
    store: str, log_path: str, n: int, seconds: float, workers: int, interval: float
) -> None:
    """The child: submit the stamped job (or resume the store's one job), run it to its end."""
    context_mod.CHECKPOINT_INTERVAL = interval

    async def main() -> None:
        async with parjobs.open_manager(store, workers=workers) as manager:
            jobs = await manager.list_jobs()
            if jobs:
                handle = await manager.resume(jobs[0].id)
            else:
                handle = await manager.submit(StampedJob(n=n, log=log_path, seconds=seconds))
            print("STATUS", (await handle.wait()).value, flush=True)

    trio.run(main)


def _read_stamps(path: Path) -> list[tuple[int, float]]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            out.append((int(parts[0]), float(parts[1])))
    return out


def _child(args: list[object]) -> subprocess.Popen[bytes]:
    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    code = f"import benchmarks.bench_resume as b; b.child_main(*{args!r})"
    return subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE)


def kill_reruns(session: Session) -> dict[str, Any]:
    """For each background interval: kill a child ``kills`` times mid-job (after
    ``kill_after`` seconds of work), resume to the end, count the tasks run twice."""
    tiny = session.mode == "tiny"
    kills = 1 if tiny else 2 if session.quick else 5
    n, seconds, workers, kill_after = (2_000, 0.001, 8, 0.2) if tiny else (20_000, 0.001, 8, 1.0)
    out: dict[str, Any] = {
        "what": "tasks run again after kill -9, against the completions of the 50 ms before it",
        "tasks": {"n": n, "task_s": seconds, "workers": workers},
        "kill_after_s": kill_after,
        "variants": {},
    }
    variants = list(INTERVALS.items())[: 1 if tiny else 2]  # tiny: a smoke test, 50 ms only
    for name, interval in variants:
        rows = []
        for _ in range(kills):
            with temp_dir(dir=session.scratch) as tmp:
                store, log_path = str(tmp / "jobs.sqlite"), tmp / "log"
                args: list[object] = [store, str(log_path), n, seconds, workers, interval]
                child = _child(args)
                try:
                    with_work = time.monotonic() + 60
                    while not _read_stamps(log_path) and time.monotonic() < with_work:
                        time.sleep(0.01)
                    time.sleep(kill_after)
                    if child.poll() is not None:
                        raise RuntimeError("the job ended before the kill: raise n")
                    os.kill(child.pid, signal.SIGKILL)
                finally:
                    child.wait()
                before = _read_stamps(log_path)
                rows.append(_count_reruns(before, store, log_path, interval, workers))
        out["variants"][name] = {
            "interval_s": interval,
            "kills": rows,
            "median_reruns": statistics.median(r["reruns"] for r in rows),
            "median_completions_in_50ms": statistics.median(r["completions_in_50ms"] for r in rows),
        }
        log(
            f"  {name}: re-runs {[r['reruns'] for r in rows]} after kill -9; 50 ms of "
            f"completions: {[r['completions_in_50ms'] for r in rows]}"
        )
    return out


def _count_reruns(
    before: list[tuple[int, float]], store: str, log_path: Path, interval: float, workers: int
) -> dict[str, Any]:
    """Resume the killed job to its end (a child, like the first), then count re-runs."""
    if not before:
        raise RuntimeError("the child was killed before any task ended")
    child = _child([store, str(log_path), 0, 0.0, workers, interval])
    out, _ = child.communicate(timeout=600)
    if b"STATUS completed" not in out:
        raise RuntimeError(f"the resumed job did not complete: {out!r}")
    after = {i for i, _ in _read_stamps(log_path)[len(before) :]}
    again = [(i, t) for i, t in before if i in after]
    last = max(t for _, t in before)
    rate = len(before) / max(1e-9, last - min(t for _, t in before))
    in_50ms = round(rate * 0.05, 1)
    return {
        "done_before_kill": len(before),
        "reruns": len(again),
        "completions_in_50ms": in_50ms,
        # The target (#14): at most the tasks in flight (one per worker) + 50 ms of completions
        "within_target": len(again) <= workers + in_50ms,
        "oldest_rerun_age_s": round(max((last - t for _, t in again), default=0.0), 4),
    }


def run(session: Session) -> dict[str, Any]:
    load0 = load_average()
    resume = million_resume(session)
    workers = max(session.workers[0], 1)
    log(f"[resume] checkpoint overhead of copying {session.data.label('small')}")
    overhead = checkpoint_overhead(session, "small", workers)
    cost = checkpoint_cost(session, "small", workers)
    log("[resume] re-runs after kill -9")
    reruns = kill_reruns(session)
    medians = {v: d["median_s"] for v, d in resume["variants"].items()}
    log(f"[resume] resume of {resume['n']:,} tasks: {medians}")
    return {
        "what": "resume of a paused job with n-10 tasks checkpointed; checkpoint time during "
        "a copy of the small-file set; copy time by checkpoint interval; re-runs after kill -9",
        "loadavg_before": load0,
        "loadavg_after": load_average(),
        "resume": resume,
        "checkpoint_overhead": overhead,
        "checkpoint_cost": cost,
        "kill_reruns": reruns,
        "verdict": verdict(cost, reruns),
    }
