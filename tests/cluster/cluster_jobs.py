"""A job whose tasks may run on a cluster and say where they ran (imported by Dask workers,
which unpickle its tasks, and by the crash test's child)."""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

import parjobs


@dataclasses.dataclass
class WhereTask(parjobs.Task[list[int]]):
    """Sleep in ``chunks`` (checking for interrupts), then log ``index pid rerun``."""

    cluster = True

    index: int
    log: str
    sleep: float = 0.0
    chunks: int = 1

    def run(self, tc: parjobs.TaskContext) -> list[int]:
        for _ in range(self.chunks):
            tc.check()
            if self.sleep:
                time.sleep(self.sleep / self.chunks)
            tc.add_bytes(10)
        fd = os.open(self.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{self.index} {os.getpid()} {int(tc.rerun)}\n".encode())
        finally:
            os.close(fd)
        return [self.index, os.getpid()]


@parjobs.job_type("test-cluster-where", version=1)
class WhereJob(parjobs.Job):
    n: int
    log: str
    sleep: float = 0.0
    chunks: int = 1

    async def run(self, ctx: parjobs.JobContext) -> dict[str, Any]:
        ctx.progress.set_total(items=self.n, bytes=self.n * 10 * self.chunks)
        dispatcher = ctx.task_dispatcher(keep_results=True)
        pids: set[int] = set()
        async for outcome in dispatcher.dispatch_many(
            WhereTask(i, self.log, self.sleep, self.chunks) for i in range(self.n)
        ):
            if outcome.ok and outcome.value is not None:
                pids.add(outcome.value[1])
            await ctx.checkpoint()
        return {"pids": sorted(pids)}


def read_runs(path: str) -> list[tuple[int, int, int]]:
    """(index, pid, rerun) per logged run."""
    try:
        with open(path) as f:
            return [
                (int(a), int(b), int(c)) for a, b, c in (line.split() for line in f if line.strip())
            ]
    except FileNotFoundError:
        return []
