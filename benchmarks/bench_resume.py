"""Resume and checkpoint costs.

1. Resume of a job with 1,000,000 completed tasks (10 left): the dispatcher benchmark's
   figures (`bench_dispatch.bench_resume`), reused when the dispatch scenario ran in this
   session, measured here otherwise (quick mode: 100,000 tasks).
2. Checkpoint overhead of a real copy: `CopyJob` on the small-file set with N workers, with
   ``JobStore.checkpoint`` (the SQLite write, in the store thread) and
   ``JobContext.checkpoint`` (what callers await) wrapped by timers in this process. Their
   totals divided by the copy's wall time bound what checkpointing costs; the store writes
   run in their own thread, concurrently with the workers, so the real cost is at most that.
"""

from __future__ import annotations

import contextlib
import functools
import statistics
import threading
import time
from collections.abc import Iterator
from typing import Any

from parjobs._context import CHECKPOINT_INTERVAL, JobContext
from parjobs._store import JobStore
from parjobs.ops.copy import CopyJob

from . import bench_dispatch
from ._common import load_average, log, temp_dir
from ._session import Session
from ._tools import expect_tree, fresh_dir, refresh_metadata, remove, run_job, warm


class CheckpointTimer:
    """Sums of seconds spent in ``JobStore.checkpoint`` and in awaited
    ``JobContext.checkpoint`` calls while `installed`."""

    def __init__(self) -> None:
        self.store_s = 0.0
        self.store_calls = 0
        self.ctx_s = 0.0
        self.ctx_calls = 0
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def installed(self) -> Iterator[CheckpointTimer]:
        real_store, real_ctx = JobStore.checkpoint, JobContext.checkpoint

        @functools.wraps(real_store)
        def store_checkpoint(store: JobStore, *args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return real_store(store, *args, **kwargs)
            finally:
                with self._lock:
                    self.store_s += time.perf_counter() - t0
                    self.store_calls += 1

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
        try:
            yield self
        finally:
            JobStore.checkpoint = real_store  # type: ignore[method-assign]
            JobContext.checkpoint = real_ctx  # type: ignore[method-assign]


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


def run(session: Session) -> dict[str, Any]:
    load0 = load_average()
    resume = million_resume(session)
    workers = max(session.workers[0], 1)
    log(f"[resume] checkpoint overhead of copying {session.data.label('small')}")
    overhead = checkpoint_overhead(session, "small", workers)
    medians = {v: d["median_s"] for v, d in resume["variants"].items()}
    log(f"[resume] resume of {resume['n']:,} tasks: {medians}")
    return {
        "what": "resume of a paused job with n-10 tasks checkpointed; checkpoint time during "
        "a copy of the small-file set",
        "loadavg_before": load0,
        "loadavg_after": load_average(),
        "resume": resume,
        "checkpoint_overhead": overhead,
    }
