"""The job-facing dispatcher: its statistics, and who handles an interrupt raised by the
item generator that feeds it."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
import trio

import parjobs
from parjobs import FunctionTask, JobContext, Outcome
from parjobs._statistics import DispatcherStatistics

SEEN: dict[str, list[int]] = {}
WAITING: set[str] = set()
STATS: list[DispatcherStatistics] = []


@parjobs.job_type("test-dispatch-generator-interrupt", version=1)
class WalkThenWait(parjobs.Job):
    """Feeds ``n`` slow tasks from an async generator, then waits in it for an interrupt
    (like a tree walk calling ``ctx.check_interrupt()``). With ``catch``, the generator
    catches the interrupt and returns (the old pattern); else it lets it through."""

    name: str
    n: int
    catch: bool

    async def _items(self, ctx: JobContext) -> AsyncIterator[FunctionTask]:
        try:
            for i in range(self.n):
                yield FunctionTask(i, time.sleep, (0.05,))
            WAITING.add(self.name)
            while True:
                await trio.sleep(0.01)
                await ctx.check_interrupt()
        except parjobs.Interrupted:
            if not self.catch:
                raise

    async def run(self, ctx: JobContext) -> None:
        seen = SEEN.setdefault(self.name, [])
        outcome: Outcome[None]
        async for outcome in ctx.task_dispatcher().dispatch_many(self._items(ctx)):
            seen.append(outcome.index)


@pytest.mark.parametrize("catch", [True, False])
async def test_an_interrupt_from_the_generator_ends_the_feed_after_the_tasks_in_flight(
    store_path: str, catch: bool
) -> None:
    name = f"walk-{catch}"
    async with parjobs.open_manager(store_path, workers=4) as manager:
        handle = await manager.submit(WalkThenWait(name=name, n=4, catch=catch))
        with trio.fail_after(10):
            while name not in WAITING:  # every task was sent, none has been yielded yet
                await trio.sleep(0.01)
            await manager.pause(handle.id)
            assert await handle.wait() is parjobs.JobStatus.PAUSED
    assert sorted(SEEN[name]) == [0, 1, 2, 3]


RAN: list[int] = []


@parjobs.job_type("test-dispatch-feed-waits-for-its-tasks", version=1)
class FeedWaitsForItsTasks(parjobs.Job):
    """An async feed that yields 3 tasks, waits until they ran, then yields a 4th."""

    async def _items(self) -> AsyncIterator[FunctionTask]:
        for i in range(3):
            yield FunctionTask(i, RAN.append, (i,))
        with trio.fail_after(5):  # (never: a task the feed gave is queued at once)
            while len(RAN) < 3:
                await trio.sleep(0.001)
        yield FunctionTask(3, RAN.append, (3,))

    async def run(self, ctx: JobContext) -> list[int]:
        dispatcher = ctx.task_dispatcher()
        return [o.index async for o in dispatcher.dispatch_many(self._items())]


async def test_an_async_feed_may_wait_for_the_tasks_it_fed(store_path: str) -> None:
    RAN.clear()
    async with parjobs.open_manager(store_path, workers=2) as manager:
        handle = await manager.submit(FeedWaitsForItsTasks())
        assert sorted(await handle.result()) == [0, 1, 2, 3]


@parjobs.job_type("test-dispatch-statistics", version=1)
class Watched(parjobs.Job):
    n: int

    async def run(self, ctx: JobContext) -> None:
        dispatcher = ctx.task_dispatcher("watched")
        STATS.append(dispatcher.statistics())
        tasks = [FunctionTask(i, time.sleep, (0.01,)) for i in range(self.n)]
        async for _ in dispatcher.dispatch_many(tasks):
            STATS.append(dispatcher.statistics())
        STATS.append(dispatcher.statistics())  # the last outcome is booked once taken


async def test_statistics_show_queued_running_and_done(store_path: str) -> None:
    STATS.clear()
    async with parjobs.open_manager(store_path, workers=2) as manager:
        handle = await manager.submit(Watched(n=20))
        await handle.result()
    first, last = STATS[0], STATS[-1]
    assert (first.stage, first.completed, first.queued, first.running, first.done) == (
        "watched",
        0,
        0,
        0,
        0,
    )
    assert first.workers == 2 and first.threads.cap >= 1
    assert (last.completed, last.queued, last.running, last.done) == (20, 0, 0, 20)
    assert any(s.running + s.queued > 0 for s in STATS[1:-1])
    with pytest.raises(AttributeError):
        last.done = 0  # type: ignore[misc]  # a frozen record


@parjobs.job_type("test-dispatch-handle-booking", version=1)
class BookedWhenAwaited(parjobs.Job):
    """One task through `dispatch`: how many its stage counts completed once the task has
    ended, then once its outcome was awaited."""

    async def run(self, ctx: JobContext) -> list[int]:
        dispatcher = ctx.task_dispatcher()
        handle = await dispatcher.dispatch(FunctionTask(0, time.sleep, (0,)))
        while not handle.done:
            await trio.sleep(0.001)
        ended = dispatcher.statistics().completed
        await handle.outcome()
        return [ended, dispatcher.statistics().completed]


async def test_a_dispatched_task_is_booked_when_its_outcome_is_awaited(store_path: str) -> None:
    """It was booked when it ended: a checkpoint then could record it done before the job
    had its outcome to count in its state (as ``dispatch_many`` never does)."""
    async with parjobs.open_manager(store_path) as manager:
        handle = await manager.submit(BookedWhenAwaited())
        assert await handle.result() == [0, 1]
