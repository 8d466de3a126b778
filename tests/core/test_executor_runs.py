"""Runs of plain tasks (`ThreadExecutor`, `WorkQueue.take_run`): a worker thread takes a run
of queued light tasks under one lock, runs them one after the other and hands their outcomes
to trio as one unit. Each member still ends, is booked and is counted on its own: a failing
member fails only its index, an interrupt stops the members after it (never booked, run on
resume), a member stuck past its timeout fails alone while the finished ones keep their
outcomes and the rest run once elsewhere."""

from __future__ import annotations

import collections
import os
import signal
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
from _jobs import bare_context, logged, read_log, spawn_count_job, trim_torn_line

import parjobs
from parjobs import FunctionTask, JobContext, OutcomeStatus
from parjobs import _executor as executor_mod
from parjobs._pool import WorkerPool
from parjobs._stores import open_store
from parjobs._workqueue import WorkItem, WorkQueue

#: Tasks per test: the first run takes 64 of them (see `runs`).
N = 200


@pytest.fixture
async def ctx() -> AsyncIterator[JobContext]:
    """A job context with one worker and no store: checkpoints go nowhere."""
    async with trio.open_nursery() as nursery:
        context = bare_context(nursery, workers=1, threads=16)
        yield context
        context._close_pool()


def watch_runs(ctx: JobContext, monkeypatch: pytest.MonkeyPatch) -> list[list[int]]:
    """The indices of each run ``ctx``'s pool takes from now on. Runs are sized to 64 tasks
    from the start (the executor's measure says tasks take a microsecond, the target is a
    second), so with one worker and the queue filled before it starts, the first run is
    indices 0-63."""
    taken: list[list[int]] = []
    take_run = WorkQueue.take_run

    def spy(self: WorkQueue, first: WorkItem, size: int) -> list[WorkItem]:
        run = take_run(self, first, size)
        taken.append([work.task.index for work in run])
        return run

    monkeypatch.setattr(WorkQueue, "take_run", spy)
    monkeypatch.setattr(executor_mod, "RUN_SECONDS", 1.0)
    ctx.task_dispatcher()  # the job's pool, and its executor
    assert ctx._pool is not None
    ctx._pool._threads._task_seconds = 1e-6
    return taken


@pytest.fixture
def runs(ctx: JobContext, monkeypatch: pytest.MonkeyPatch) -> list[list[int]]:
    return watch_runs(ctx, monkeypatch)


class Ran:
    """Counts each index's runs, across worker threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.count: collections.Counter[int] = collections.Counter()

    def __call__(self, index: int, then: Any = None) -> int:
        with self.lock:
            self.count[index] += 1
        if then is not None:
            then()
        return index


async def collect(ctx: JobContext, tasks: list[FunctionTask], **kw: Any) -> dict[int, Any]:
    return {o.index: o async for o in ctx.task_dispatcher(**kw).dispatch_many(tasks)}


async def test_tiny_tasks_go_in_runs_each_booked_and_counted_once(
    ctx: JobContext, runs: list[list[int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    units: list[int] = []
    post_group = WorkerPool.post_group

    def handed(self: WorkerPool, group: Any, urgent: bool) -> None:
        units.append(len(group))
        post_group(self, group, urgent)

    monkeypatch.setattr(WorkerPool, "post_group", handed)
    ran = Ran()
    outcomes = await collect(ctx, [FunctionTask(i, ran, (i,)) for i in range(N)])
    assert runs[0] == list(range(64))
    assert sorted(outcomes) == list(range(N)) and all(o.ok for o in outcomes.values())
    assert ran.count == collections.Counter(range(N))
    assert max(units) == 64 and sum(units) <= N  # a run reaches the job as one unit
    assert ctx.progress.snapshot().items_done == N  # counted per task, not per run
    assert sorted(ctx._stages["default"].completed.ranges()) == [(0, N)]


async def test_a_failing_member_fails_only_its_own_index(
    ctx: JobContext, runs: list[list[int]]
) -> None:
    def fail() -> None:
        raise OSError(5, "broken")

    ran = Ran()
    tasks = [FunctionTask(i, ran, (i, fail if i == 10 else None)) for i in range(N)]
    outcomes = await collect(ctx, tasks)
    assert 10 in runs[0][1:-1]  # in the middle of a run
    assert outcomes[10].status is OutcomeStatus.FAILED and "broken" in str(outcomes[10].error)
    assert all(o.ok for i, o in outcomes.items() if i != 10)
    assert ran.count == collections.Counter(range(N))  # no member ran twice
    done = ctx._stages["default"].completed
    assert 10 not in done and len(done) == N - 1
    snap = ctx.progress.snapshot()
    assert (snap.items_done, snap.items_failed) == (N - 1, 1)
    assert [e.index for e in snap.recent_errors] == [10]


@pytest.mark.parametrize(
    ("reason", "raised"), [("pause", parjobs.PauseRequested), ("cancel", parjobs.CancelRequested)]
)
async def test_an_interrupt_mid_run_stops_the_members_after_it(
    ctx: JobContext, runs: list[list[int]], reason: str, raised: type[Exception]
) -> None:
    """Task 10 asks for the interrupt as it ends: it and the members before it are done and
    booked; those after it end cancelled without running and are not booked; a resumed
    dispatch runs each of them once, and nothing twice."""
    ran = Ran()

    def interrupt() -> None:
        ctx._request(reason)

    tasks = [FunctionTask(i, ran, (i, interrupt if i == 10 else None)) for i in range(N)]
    seen: dict[int, Any] = {}
    with pytest.raises(raised):
        async for outcome in ctx.task_dispatcher().dispatch_many(tasks):
            seen[outcome.index] = outcome
    assert 10 in runs[0][1:-1]
    assert set(ran.count) == set(range(11))
    assert {i for i, o in seen.items() if o.ok} == set(range(11))
    assert {o.status for i, o in seen.items() if i > 10} == {OutcomeStatus.CANCELLED}
    assert sorted(ctx._stages["default"].completed.ranges()) == [(0, 11)]
    assert ctx.progress.snapshot().items_done == 11
    ctx._interrupter.clear()  # resumed
    outcomes = await collect(ctx, [FunctionTask(i, ran, (i,)) for i in range(N)])
    assert sorted(outcomes) == list(range(11, N))
    assert ran.count == collections.Counter(range(N))
    assert sorted(ctx._stages["default"].completed.ranges()) == [(0, N)]


async def test_a_member_stuck_past_its_timeout_fails_alone(
    ctx: JobContext, runs: list[list[int]], autojump_clock: trio.abc.Clock
) -> None:
    """The watchdog gives up on the run's thread: the stuck member fails "timed out", the
    members that ended before it keep their outcomes (none runs again), those after it go
    back to the queue and run once in another thread."""
    ran = Ran()
    release = threading.Event()
    tasks = [FunctionTask(i, ran, (i, release.wait if i == 10 else None)) for i in range(N)]
    try:
        with trio.fail_after(60):
            outcomes = await collect(ctx, tasks, timeout=0.3)
        assert ctx.task_dispatcher().statistics().threads.abandoned == 1
    finally:
        release.set()
    assert 10 in runs[0][1:-1]
    assert outcomes[10].status is OutcomeStatus.FAILED
    assert isinstance(outcomes[10].error, parjobs.TaskTimeoutError)
    assert sorted(outcomes) == list(range(N))
    assert all(o.ok for i, o in outcomes.items() if i != 10)
    assert ran.count == collections.Counter(range(N))  # the finished ones ran once
    assert len(ctx._stages["default"].completed) == N - 1


async def test_a_hung_member_holds_back_none_of_the_members_after_it(
    autojump_clock: trio.abc.Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A member that hangs (no timeout: a stat on a dead mount) stalls its thread; once the
    stall shows, the outcomes of the members that ended before it reach the job, and those
    it had not started go back to the queue and run in another thread meanwhile, each once."""
    ran = Ran()
    release = threading.Event()
    tasks = [FunctionTask(i, ran, (i, release.wait if i == 10 else None)) for i in range(N)]
    async with trio.open_nursery() as nursery:
        ctx = bare_context(nursery, workers=2, threads=16)
        runs = watch_runs(ctx, monkeypatch)
        seen: list[int] = []
        try:
            with trio.fail_after(60):
                async for outcome in ctx.task_dispatcher().dispatch_many(tasks):
                    assert outcome.ok
                    seen.append(outcome.index)
                    if len(seen) == N - 1:
                        assert not release.is_set()  # all of them ran beside the hung one
                        release.set()
        finally:
            release.set()
            ctx._close_pool()
    hung = next(run for run in runs if 10 in run)
    assert hung.index(10) < len(hung) - 1  # members after it, given back
    assert seen[-1] == 10 and sorted(seen) == list(range(N))
    assert ran.count == collections.Counter(range(N))


async def test_killed_mid_run_the_store_books_only_what_ran_and_a_resume_the_rest(
    store_path: str, tmp_path: Path
) -> None:
    """kill -9 while tiny tasks stream in runs: every task the store booked had logged its
    work before (nothing recorded before it is done), and the resumed run runs each task
    the store had not booked and none it had."""
    log, n = str(tmp_path / "log"), 6000
    child = spawn_count_job(store_path, log, n, workers=2, sleep=0.0)
    try:
        with trio.fail_after(60):
            while logged(log) < n // 3:
                await trio.sleep(0.005)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait()
    trim_torn_line(log)
    ran = read_log(log)
    assert len(ran) < n, "the child ended before the kill"
    store = open_store(store_path)
    try:
        (info,) = store.list_jobs()
        booked = {
            i for a, z in store.completed_ranges(info.id).get("default", []) for i in range(a, z)
        }
    finally:
        store.close()
    assert booked and booked <= set(ran)
    async with parjobs.open_manager(store_path, workers=2) as manager:
        handle = await manager.resume(info.id)
        await handle.result()
    again = read_log(log)[len(ran) :]
    assert set(again) == set(range(n)) - booked  # the rest, each once...
    assert len(again) == len(set(again))  # ...and nothing booked ran again
