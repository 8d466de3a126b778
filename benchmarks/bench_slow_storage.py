"""Slow storage: copy 100 small files when every file open costs 20 ms (a network share).

The latency is injected honestly, in this benchmark process only: the copy primitives that
`CopyJob` calls (``copy_file`` per file, ``copy_small_files`` per group of small files in C)
are wrapped so that they first sleep 20 ms per file, blocking the worker thread as a slow
``open`` would. Sequential (1 worker, the
baseline) against 4, 8 and 16 workers; the ``io`` lane is raised to 32 threads
(``lanes={"io": 32}``) so the lane never limits the workers.

References with the same latency: a sequential Python loop (``sleep`` + ``shutil.copy2``,
the floor for one thread) and ``ThreadPoolExecutor(16)``. A diagnostic contender runs 16
workers with one task per thread call (``BATCH_MAX_ITEMS = 1``, "batching off"), to show
that streaming many tasks per thread call costs nothing when "light" tasks wait on I/O.
"""

from __future__ import annotations

import contextlib
import functools
import shutil
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import parjobs._executor
import parjobs.ops._copy
import parjobs.ops._smallfiles
import parjobs.ops._transfer
from parjobs.ops._copy import CopyJob

from ._common import Timing, load_average, log, panel_chart, run_rounds
from ._session import Session
from ._tools import checked_copy, in_process, run_job

LATENCY = 0.020
LANES = {"io": 32}
BASELINE = "parjobs 1 worker"
TARGET = 10.0  # speedup at 10+ workers, from the design
UNBATCHED = "parjobs 16 workers, batching off (diagnostic)"


@contextlib.contextmanager
def injected_latency(seconds: float = LATENCY) -> Iterator[None]:
    """Make every file copy of `CopyJob` start with a blocking ``sleep(seconds)``: in the
    Python path (``copy_file``) and in the C group path (``copy_small_files``, which then
    sleeps once per file of its group, as its opens would wait one after the other)."""
    real = parjobs.ops._transfer.copy_file
    real_group = parjobs.ops._smallfiles.copy_small_files

    @functools.wraps(real)
    def slow_copy_file(*args: Any, **kwargs: Any) -> Any:
        time.sleep(seconds)
        return real(*args, **kwargs)

    @functools.wraps(real_group)
    def slow_group(items: Any, **kwargs: Any) -> Any:
        time.sleep(seconds * len(items))
        return real_group(items, **kwargs)

    parjobs.ops._transfer.copy_file = slow_copy_file  # type: ignore[assignment]
    parjobs.ops._smallfiles.copy_small_files = slow_group  # type: ignore[assignment]
    try:
        yield
    finally:
        parjobs.ops._transfer.copy_file = real  # type: ignore[assignment]
        parjobs.ops._smallfiles.copy_small_files = real_group  # type: ignore[assignment]


@contextlib.contextmanager
def batching_off() -> Iterator[None]:
    saved = parjobs._executor.BATCH_MAX_ITEMS
    parjobs._executor.BATCH_MAX_ITEMS = 1
    try:
        yield
    finally:
        parjobs._executor.BATCH_MAX_ITEMS = saved


def _slow_copy(src: Path, dst: Path) -> None:
    time.sleep(LATENCY)
    shutil.copy2(src, dst)


def _parjobs(session: Session, src: Path, dst: Path, workers: int, batching: bool) -> Timing:
    job = CopyJob(sources=[str(src)], destination=str(dst))
    with injected_latency(), contextlib.nullcontext() if batching else batching_off():
        result, timing = run_job(job, workers=workers, store_dir=session.scratch, lanes=LANES)
    if result["failed"]:
        raise RuntimeError(f"parjobs copy: {result}")
    return timing


def _loop(files: list[Path], dst: Path) -> None:
    (dst / files[0].parent.name).mkdir()
    for f in files:
        _slow_copy(f, dst / f.parent.name / f.name)


def _pool(files: list[Path], dst: Path, threads: int) -> None:
    (dst / files[0].parent.name).mkdir()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda f: _slow_copy(f, dst / f.parent.name / f.name), files))


def run(session: Session) -> dict[str, Any]:
    data = session.data
    src = data.path("slow")
    files = data.files("slow")
    info = data.info["sets"]["slow"]
    made: dict[str, Callable[[Path], Timing]] = {}
    for n in (1, 4, 8, 16):
        name = f"parjobs {n} worker" + ("s" if n > 1 else "")
        made[name] = lambda dst, n=n: _parjobs(session, src, dst, n, True)
    made[UNBATCHED] = lambda dst: _parjobs(session, src, dst, 16, False)
    if not session.quick:  # what the 1-worker job costs on top of the sleeps, in full runs
        made["Python loop (sequential)"] = lambda dst: in_process(lambda: _loop(files, dst))
    made["ThreadPoolExecutor(16)"] = lambda dst: in_process(lambda: _pool(files, dst, 16))

    expect = (info["files"], info["bytes"])

    log(f"[slow_storage] {data.label('slow')}, {LATENCY * 1e3:.0f} ms per file open")
    load0 = load_average()
    warmup = 0 if session.quick else session.warmup
    rounds = run_rounds(
        {n: checked_copy(fn, n, session.scratch, expect, prefix="slow") for n, fn in made.items()},
        session.rounds,
        warmup,
    )
    speedups = {n: 1 / r for n, r in rounds.ratio_to(BASELINE).items()}
    best = max(speedups[f"parjobs {n} workers"] for n in (8, 16))
    case = session.case(
        rounds,
        BASELINE,
        data_set={"slow": info},
        loadavg_before=load0,
        warmup_rounds=warmup,
        latency_s=LATENCY,
        lanes=LANES,
        ideal_sequential_s=round(info["files"] * LATENCY, 3),
    )
    for name in rounds:
        case["contenders"][name]["speedup"] = round(speedups[name], 2)
    out: dict[str, Any] = {
        "what": f"copy {info['files']} small files with {LATENCY * 1e3:.0f} ms injected per "
        "file (blocking sleep in the worker thread before each copy_file)",
        "timed": "the whole call (parjobs: store open, job, manager close)",
        "baseline": BASELINE,
        "cache": "cached",
        "target": {"speedup": TARGET, "at_workers": "10+", "best": round(best, 2)},
        "cases": {"latency-20ms": case},
    }
    out["target"]["met"] = best >= TARGET
    if session.charts:
        panel_chart(
            [(f"{data.label('slow')}, +{LATENCY * 1e3:.0f} ms per file", rounds, BASELINE)],
            filename="slow_storage.png",
            title="Slow storage: copy with 20 ms per file open (lower is better)",
            note=session.note(),
        )
    return out
