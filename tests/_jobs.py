"""Jobs used by the core tests (importable by child processes for crash tests)."""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

import parjobs


@dataclasses.dataclass
class AppendIndex(parjobs.Task[int]):
    """Append the index to a log file: a side effect we can count."""

    index: int
    log: str
    sleep: float = 0.0
    fail: bool = False
    chunks: int = 1

    def run(self, tc: parjobs.TaskContext) -> int:
        for _ in range(self.chunks):
            tc.check()
            if self.sleep:
                time.sleep(self.sleep / self.chunks)
            tc.add_bytes(10)
        if self.fail:
            raise ValueError(f"item {self.index} is bad")
        fd = os.open(self.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{self.index}\n".encode())
        finally:
            os.close(fd)
        return self.index * 2


@parjobs.job_type("test-count", version=1)
class CountJob(parjobs.Job):
    n: int
    log: str
    sleep: float = 0.0
    fail_every: int = 0
    chunks: int = 1

    async def run(self, ctx: parjobs.JobContext) -> dict[str, Any]:
        ctx.progress.set_total(items=self.n, bytes=self.n * 10 * self.chunks)
        dispatcher = ctx.task_dispatcher()
        done = 0
        async for outcome in dispatcher.dispatch_many(
            AppendIndex(
                i,
                self.log,
                self.sleep,
                bool(self.fail_every) and i % self.fail_every == 0,
                self.chunks,
            )
            for i in range(self.n)
        ):
            if outcome.ok:
                done += 1
            await ctx.checkpoint()
        ctx.state["runs"] = ctx.state.get("runs", 0) + 1
        return {"done_this_run": done, "runs": ctx.state["runs"]}


def read_log(path: str) -> list[int]:
    try:
        with open(path) as f:
            return [int(line) for line in f if line.strip()]
    except FileNotFoundError:
        return []
