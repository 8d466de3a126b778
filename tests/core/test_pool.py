"""The worker pool: workers start as tasks arrive, never more than asked, and the bound on
worker counts is checked before anything opens."""

from __future__ import annotations

import time

import pytest
import trio

import parjobs
from parjobs import FunctionTask, JobContext
from parjobs._pool import MAX_WORKERS, check_workers, describe_error


@pytest.mark.parametrize(
    ("exc", "text"),
    [
        (
            FileNotFoundError(2, "No such file or directory", "/a/b"),
            "No such file or directory: /a/b",
        ),
        (PermissionError(13, "Permission denied", b"/x\xff"), "Permission denied: /x\\xff"),
        (OSError(5, "Input/output error"), "Input/output error"),
        (ValueError("bad input"), "bad input"),
        (RuntimeError(), "RuntimeError"),
    ],
)
def test_errors_are_described_in_one_line(exc: BaseException, text: str) -> None:
    assert describe_error(exc) == text


@pytest.mark.parametrize(
    ("workers", "error"), [(True, TypeError), (1.5, TypeError), (0, ValueError)]
)
def test_check_workers_refuses_what_is_not_a_worker_count(workers: object, error: type) -> None:
    with pytest.raises(error, match="workers must be"):
        check_workers(workers)
    assert check_workers(MAX_WORKERS) == MAX_WORKERS


# -- many workers ----------------------------------------------------------------------------


def _worker_tasks() -> int:
    """Live trio tasks that are pool workers (named ``parjobs-worker-...``), in this run."""
    root = trio.lowlevel.current_root_task()
    assert root is not None  # called from inside trio.run
    count, stack = 0, [root]
    while stack:
        task = stack.pop()
        count += task.name.startswith("parjobs-worker-")
        stack.extend(t for n in task.child_nurseries for t in n.child_tasks)
    return count


@parjobs.job_type("test-dispatch-count-workers", version=1)
class CountWorkers(parjobs.Job):
    """``n`` tasks sleeping ``seconds``; returns the most pool workers alive at once."""

    n: int
    seconds: float

    async def run(self, ctx: JobContext) -> int:
        tasks = [FunctionTask(i, time.sleep, (self.seconds,)) for i in range(self.n)]
        most = 0
        async for _ in ctx.task_dispatcher().dispatch_many(tasks):
            most = max(most, _worker_tasks())
        return max(most, _worker_tasks())


@pytest.mark.parametrize(("workers", "n", "most"), [(1024, 20, 20), (4, 50, 4), (8, 64, 8)])
async def test_workers_start_as_tasks_arrive_never_more_than_asked(
    store_path: str, workers: int, n: int, most: int
) -> None:
    """A pool starts a worker only when a task finds none waiting: 1024 workers on 20 tasks
    cost at most 20 worker tasks (memory does not grow with -w), while a pool with more
    tasks than workers still uses all of them."""
    async with parjobs.open_manager(store_path, workers=workers) as manager:
        handle = await manager.submit(CountWorkers(n=n, seconds=0.02))
        peak = await handle.result()
    assert 1 <= peak <= most
    if workers < n:
        assert peak == workers


@pytest.mark.parametrize("workers", [0, MAX_WORKERS + 1, 10**23])
async def test_worker_counts_out_of_range_are_refused_before_the_store_opens(
    tmp_path, workers: int
) -> None:
    store = tmp_path / "jobs.sqlite"
    with pytest.raises(ValueError, match=f"workers must be (>= 1|at most {MAX_WORKERS})"):
        async with parjobs.open_manager(str(store), workers=workers):
            pass
    assert not store.exists()
    with pytest.raises(ValueError, match="workers must be"):
        parjobs.BlockingManager(str(store), workers=workers).start()
    assert not store.exists()
