"""Job stores: PostgreSQL against SQLite (issue 16). Opt-in: ``python -m benchmarks --only
stores`` (it needs PostgreSQL: ``$PARJOBS_BENCH_PG``, the URL of a database the benchmark
may drop its ``parjobs`` schema in, else a throwaway cluster started with the tests' helper,
tests/_pg.py, from the ``postgresql`` package's binaries).

1. Submit-to-start latency: one idle ``parjobs worker`` process; tiny jobs submitted with
   ``detach`` one after another; the latency is the store's ``started - created``. SQLite
   wakes the workers from a look at ``PRAGMA data_version`` every 50 ms (it polled each
   second before); PostgreSQL wakes them with NOTIFY.
2. Claims per second with 1, 2 and 4 ``parjobs worker`` processes (CLI, end to end) on a
   queue of tiny jobs: jobs / (last finish - first start), from the store's timestamps.
3. Checkpoint cost of a 10,000-small-file copy (quick: 2,000): the copy's wall time, and the
   calls to and seconds in the store's ``checkpoint`` (in the store thread) on each store.

Ratios are PostgreSQL against SQLite in the same run.
"""

from __future__ import annotations

import contextlib
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import trio

import parjobs
from parjobs._stores import open_store
from parjobs.ops._copy import CopyJob
from parjobs.ops._hash import HashJob

from ._common import ROOT, Stopwatch, load_average, log, temp_dir
from ._session import Session

SIZES = {"full": (30, 400, 10_000), "quick": (10, 100, 2_000), "tiny": (3, 20, 200)}
WORKER_COUNTS = (1, 2, 4)


@contextlib.contextmanager
def _postgres() -> Iterator[Callable[[], str]]:
    """A function returning the URL of an empty store database, each call."""
    given = os.environ.get("PARJOBS_BENCH_PG")
    if given:

        def reset() -> str:
            import psycopg

            with psycopg.connect(given, autocommit=True) as conn:
                conn.execute("DROP SCHEMA IF EXISTS parjobs CASCADE")
            return given

        yield reset
        return
    sys.path.insert(0, str(ROOT / "tests"))
    import _pg

    with _pg.server() as server:
        yield lambda: server.url(server.create_db())


def _stores(new_pg: Callable[[], str], scratch: Path) -> dict[str, Callable[[], str]]:
    counter = iter(range(10**6))
    return {
        "sqlite": lambda: str(scratch / f"store-{next(counter)}.sqlite"),
        "postgresql": new_pg,
    }


def _worker(store: str, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "parjobs", "worker", "--store", store, *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _summary(values: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), 4),
        "min": round(min(values), 4),
        "max": round(max(values), 4),
    }


async def _latency(store: str, tiny: Path, n: int) -> list[float]:
    worker = _worker(store, "--jobs", "4")
    try:
        await trio.sleep(3.0)  # let it start and go idle
        out = []
        async with parjobs.open_manager(store) as manager:
            for _ in range(n):
                handle = await manager.submit(HashJob(paths=[str(tiny)]), detach=True)
                while (info := await manager.get(handle.id)).started is None:
                    await trio.sleep(0.005)
                out.append(info.started - info.created)
                await manager.wait(handle.id)
        return out
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait()


async def _claims(store: str, tiny: Path, jobs: int, workers: int) -> float:
    async with parjobs.open_manager(store) as manager:
        for _ in range(jobs):
            await manager.submit(HashJob(paths=[str(tiny)]), detach=True)
    procs = [_worker(store, "--until-idle", "--jobs", "4") for _ in range(workers)]
    for p in procs:
        await trio.to_thread.run_sync(p.wait)
    async with parjobs.open_manager(store) as manager:
        infos = await manager.list_jobs()
    assert len(infos) == jobs and all(i.status.value == "completed" for i in infos)
    first = min(i.started for i in infos if i.started is not None)
    last = max(i.finished for i in infos if i.finished is not None)
    return jobs / (last - first)


async def _checkpoint_cost(target: str, src: Path, dst: Path) -> dict[str, float]:
    store = await trio.to_thread.run_sync(open_store, target)
    spent = {"calls": 0, "seconds": 0.0}
    write = store.checkpoint

    def timed(*args: Any, **kwargs: Any) -> None:
        t0 = time.perf_counter()
        try:
            write(*args, **kwargs)
        finally:
            spent["calls"] += 1
            spent["seconds"] += time.perf_counter() - t0

    store.checkpoint = timed  # type: ignore[method-assign]  # this process' instance only
    sw = Stopwatch()
    async with parjobs.open_manager(store, workers=8) as manager:
        handle = await manager.submit(CopyJob(sources=[str(src)], destination=str(dst)))
        await handle.result()
    wall = sw.stop().wall
    return {
        "wall_s": round(wall, 3),
        "checkpoints": spent["calls"],
        "checkpoint_s": round(spent["seconds"], 4),
        "ms_per_checkpoint": round(1000 * spent["seconds"] / max(1, spent["calls"]), 3),
        "share_of_wall": round(spent["seconds"] / wall, 4),
    }


def _small_files(root: Path, n: int) -> None:
    for i in range(n):
        d = root / f"d{i // 500}"
        if i % 500 == 0:
            d.mkdir(parents=True)
        (d / f"f{i}").write_bytes(os.urandom(1024 + (i * 37) % 8192))


def run(session: Session) -> dict[str, Any]:
    latency_n, claim_jobs, files = SIZES[session.mode]
    log(f"[stores] latency x{latency_n}, claims of {claim_jobs} jobs, copy of {files} files")
    with temp_dir(dir=session.scratch) as scratch, _postgres() as new_pg:
        os.environ["PARJOBS_JOB_FILES"] = str(scratch / "job-files")
        stores = _stores(new_pg, scratch)
        tiny = scratch / "tiny"
        tiny.write_bytes(b"x" * 100)
        latency = {
            name: _summary(trio.run(_latency, make(), tiny, latency_n))
            for name, make in stores.items()
        }
        log(f"[stores] submit-to-start latency: {latency}")
        claims: dict[str, dict[str, float]] = {}
        for name, make in stores.items():
            claims[name] = {
                str(k): round(trio.run(_claims, make(), tiny, claim_jobs, k), 1)
                for k in WORKER_COUNTS
            }
        log(f"[stores] claims per second: {claims}")
        src = scratch / "src"
        _small_files(src, files)
        copy = {
            name: trio.run(_checkpoint_cost, make(), src, scratch / f"dst-{name}")
            for name, make in stores.items()
        }
        log(f"[stores] copy checkpoints: {copy}")
    return {
        "baseline": "sqlite",
        "load_average": load_average(),
        "latency_s": latency,
        "latency_ratio": round(
            latency["postgresql"]["median"] / max(latency["sqlite"]["median"], 1e-9), 3
        ),
        "claims_per_s": claims,
        "claims_ratio": {
            k: round(claims["postgresql"][k] / claims["sqlite"][k], 3) for k in claims["sqlite"]
        },
        "copy_files": files,
        "copy": copy,
        "copy_wall_ratio": round(copy["postgresql"]["wall_s"] / copy["sqlite"]["wall_s"], 3),
    }
