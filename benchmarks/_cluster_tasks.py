"""What `bench_cluster` sends to Dask workers, in a module they import by name (a class of
the ``__main__`` module would not unpickle there)."""

from __future__ import annotations

import dataclasses
from typing import Any

import parjobs

from .bench_slow_storage import injected_latency


@dataclasses.dataclass
class Noop(parjobs.Task[None]):
    """A task that does nothing, anywhere (workers import it from this module)."""

    cluster = True
    index: int

    def run(self, tc: parjobs.TaskContext) -> None:
        return None


@parjobs.job_type("bench-cluster-noop", version=1)
class NoopJob(parjobs.Job):
    n: int

    async def run(self, ctx: parjobs.JobContext) -> None:
        ctx.progress.set_total(items=self.n)
        async for outcome in ctx.task_dispatcher().dispatch_many(Noop(i) for i in range(self.n)):
            if not outcome.ok:
                raise RuntimeError(f"no-op task {outcome.index}: {outcome!r}")


_installed: list[Any] = []


def install_latency() -> None:
    """(On each Dask worker) The slow-storage latency, for the rest of the process' life."""
    if not _installed:
        cm = injected_latency()
        cm.__enter__()
        _installed.append(cm)
