"""What a job uses to run tasks: `TaskDispatcher` (from ``ctx.task_dispatcher(stage)``) and
`TaskHandle`, the future of one dispatched task.

A dispatcher feeds one stage's tasks into the job's `WorkerPool` and hands back their
outcomes. ``dispatch_many`` pulls its iterable lazily, never more than the pool's window
ahead of the outcomes the caller consumed, so memory is O(concurrency); tasks a checkpoint
already records are skipped before they are sent.

A finished task is booked as completed in its stage (what the next checkpoint writes) when
the job gets its outcome (``dispatch_many`` yields it, ``await handle.outcome()`` returns
it), not when the task ended: a job that counts outcomes in ``ctx.state`` (a copy, its
bytes) before its next ``await`` therefore never has a checkpoint record an item without
the state that counts it, and the totals of a job killed and resumed add up exactly.
"""

from __future__ import annotations

import collections
import functools
import typing
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import trio

from ._exceptions import Interrupted
from ._pool import MAX_WORKERS as MAX_WORKERS  # (the manager and the CLI import these here)
from ._pool import WorkerPool
from ._pool import check_workers as check_workers
from ._progress import ItemError
from ._stage import Ended, Stage
from ._task import (
    AsyncTask,
    BundleDone,
    Outcome,
    OutcomeStatus,
    RetryPolicy,
    Task,
    TaskContext,
)
from ._util import NoPublicConstructor
from ._workqueue import Deliver, DeliverGroup, WorkItem

if TYPE_CHECKING:  # built only when asked for (start-up: see parjobs._statistics)
    from ._items import Identity
    from ._statistics import DispatcherStatistics

T = TypeVar("T")

#: ``dispatch_many`` queues tasks in chunks of at most this many (see `WorkQueue.put_many`).
PUT_CHUNK = 64


@typing.final
class TaskHandle(Generic[T], metaclass=NoPublicConstructor):
    """The future of one dispatched task: ``await handle.outcome()``. The task is booked
    as completed when its outcome is first awaited (see the module docstring): one never
    awaited runs again on resume."""

    def __init__(self, task: Task[T]) -> None:
        self.task = task
        self._outcome: Outcome[T] | None = None
        self._book: Callable[[], None] | None = None
        self._event = trio.Event()

    def _set(self, outcome: Outcome[Any], book: Callable[[], None] | None = None) -> None:
        self._outcome = outcome
        self._book = book
        self._event.set()

    @property
    def done(self) -> bool:
        return self._outcome is not None

    async def outcome(self) -> Outcome[T]:
        await self._event.wait()
        assert self._outcome is not None
        book, self._book = self._book, None
        if book is not None:
            book()
        return self._outcome


@typing.final
class TaskDispatcher(metaclass=NoPublicConstructor):
    """Fans tasks out to the job's worker pool and yields their outcomes.

    Obtained from ``ctx.task_dispatcher(stage)``. Each stage has its own index space and its
    own checkpointed completed set; ``keep_results=True`` stores each task's (JSON) value with
    its completion so a resumed run gets it back on the skipped outcome.
    """

    def __init__(
        self,
        stage: Stage,
        pool: WorkerPool,
        *,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
    ) -> None:
        self._stage = stage
        self._pool = pool
        self.retry = retry
        self.timeout = timeout

    @property
    def stage(self) -> str:
        return self._stage.name

    @property
    def workers(self) -> int:
        return self._pool.workers

    @property
    def completed_count(self) -> int:
        """Tasks of this stage recorded as finished (this run and earlier ones)."""
        return len(self._stage.completed)

    def is_completed(self, index: int) -> bool:
        return index in self._stage.completed

    async def stored_value(self, index: int) -> Any:
        """The value task ``index`` finished with in an earlier run (a stage that keeps
        results: ``keep_results``), None if none is stored; what a resumed outcome carries,
        for a job that must know it before it dispatches the stage."""
        await self._stage.load_results()
        return self._stage.stored_result(index)

    def keep_written(self, index: int) -> None:
        """Keep the written identity of task ``index``'s item record once it is checkpointed
        in this run (`written`): what a job needs again of a few of its records, without
        reading back its whole item log."""
        self._stage.watched.add(index)

    def written(self, index: int) -> Identity | None:
        """``(size, mtime_ns, inode)`` of the last record with a written file that task
        ``index`` (`keep_written`) noted in this run and a checkpoint took; None if none."""
        return self._stage.written.get(index)

    def statistics(self) -> DispatcherStatistics:
        """What the dispatcher and its pool are doing now (see `DispatcherStatistics`)."""
        from ._statistics import DispatcherStatistics

        pool = self._pool.statistics()
        return DispatcherStatistics(
            stage=self._stage.name,
            completed=len(self._stage.completed),
            workers=pool.workers,
            queued=pool.queued,
            running=pool.running,
            done=pool.done,
            threads=pool.threads,
        )

    def _work(
        self, task: Task[Any], deliver: Deliver, deliver_group: DeliverGroup | None = None
    ) -> WorkItem:
        index = getattr(task, "index", None)
        if (type(index) is not int or index < 0) and (  # (an int subclass will do, not bool)
            not isinstance(index, int) or isinstance(index, bool) or index < 0
        ):
            raise TypeError(f"task {task!r} needs an int index >= 0, got {index!r}")
        timeout = task.timeout
        if timeout is None:
            timeout = self.timeout
        tc = TaskContext._create(
            index,
            task.label,
            self._pool.interrupter,
            None if isinstance(task, AsyncTask) else timeout,
            self._stage.name,
        )
        retry = task.retry
        if retry is None:
            retry = self.retry
        return WorkItem(task, tc, self._stage, deliver, retry, timeout, deliver_group)

    def _resumed(self, task: Task[T]) -> Outcome[T]:
        return Outcome(
            task,
            OutcomeStatus.SKIPPED,
            value=self._stage.stored_result(task.index),
            reason="completed in an earlier run",
            resumed=True,
        )

    async def dispatch(self, task: Task[T]) -> TaskHandle[T]:
        """Send one task to the pool (waits while the pool is saturated); returns its handle."""
        handle = TaskHandle[T]._create(task)
        stage = self._stage
        if task.index in stage.completed:
            await stage.load_results()
            handle._set(self._resumed(task))
        else:

            def deliver(outcome: Outcome[Any], error: ItemError | None, tc: TaskContext) -> None:
                handle._set(outcome, functools.partial(stage.record, outcome, error, tc))

            await self._pool.submit(self._work(task, deliver))
        return handle

    async def dispatch_many(
        self,
        tasks: Iterable[Task[T]] | AsyncIterable[Task[T]],
        *,
        include_resumed: bool = False,
    ) -> AsyncIterator[Outcome[T]]:
        """Run ``tasks`` on the pool and yield outcomes in completion order.

        Tasks checkpointed by an earlier run are not run; they are yielded as resumed
        SKIPPED outcomes only with ``include_resumed``. On pause or cancel, dispatching stops,
        tasks in flight finish or stop at their next check, their outcomes are yielded, and
        then `PauseRequested`/`CancelRequested` is raised. ``tasks`` may itself raise
        `Interrupted` (e.g. from ``ctx.check_interrupt()`` while walking a tree): that ends
        the feed the same way, and the interrupt is raised after the outcomes in flight, so
        an item generator need not catch it.

        A `Bundle` among ``tasks`` is one task for the tasks it holds: its one outcome books
        those it finished; those it left (`BundleDone.left`) are queued here as tasks of
        their own, before the next task of ``tasks``, and their outcomes yielded as any other.
        """
        if include_resumed:
            await self._stage.load_results()
        # Each entry: one task's outcome, or a task group's outcomes (one unit).
        ready: collections.deque[Ended | list[Ended]] = collections.deque()
        arrived = trio.Event()

        def deliver(outcome: Outcome[T], error: ItemError | None, tc: TaskContext) -> None:
            ready.append((outcome, error, tc))
            arrived.set()

        def deliver_group(ended: list[Ended]) -> None:
            ready.append(ended)
            arrived.set()

        record = self._stage.record
        completed = self._stage.completed
        pool = self._pool
        queue = pool.queue
        interrupter = pool.interrupter
        window = pool.window
        outstanding = 0
        sync_iter = iter(tasks) if isinstance(tasks, Iterable) else None
        async_iter = aiter(tasks) if sync_iter is None else None  # type: ignore[arg-type]
        exhausted = False
        stopped: Interrupted | None = None  # raised by ``tasks`` itself
        # What `Bundle` s left (`BundleDone.left`): queued before the next task of the feed.
        left: collections.deque[Task[Any]] = collections.deque()
        # Refill in bursts, not one task per outcome: fewer wake-ups, and a backlog to stream.
        low_water = window // 2
        # Tasks of a sync feed go into the queue a chunk at a time (one lock and one wake-up
        # per chunk), and before anything that may wait (the consumer, the outcomes). An
        # async feed's go in one by one: the feed may wait for the tasks it fed. A bundle's
        # left tasks are all at hand: a chunk, whatever the feed (on a busy machine most of a
        # copy's small files come back so: one queue operation a bundle, not one a file).
        chunk: list[WorkItem] = []
        while True:
            while (
                (left or not exhausted)
                and outstanding < window
                and interrupter.reason is None
                and (outstanding <= low_water or not ready)
            ):
                from_left = bool(left)
                if chunk and not from_left and sync_iter is None:
                    await self._put(chunk)  # (a bundle's left tasks) before the feed may wait
                try:
                    if from_left:
                        task = left.popleft()
                    elif sync_iter is not None:
                        task = next(sync_iter)
                    else:
                        assert async_iter is not None
                        task = await anext(async_iter)
                except (StopIteration, StopAsyncIteration):
                    exhausted = True
                    break
                except Interrupted as exc:
                    stopped, exhausted = exc, True
                    break
                if task.index in completed:
                    if include_resumed:
                        if chunk:
                            await self._put(chunk)
                        yield self._resumed(task)
                    continue
                work = self._work(task, deliver, deliver_group)
                outstanding += 1
                if sync_iter is None and not from_left:
                    try:
                        queue.put_nowait(work)
                    except trio.WouldBlock:
                        await pool.submit(work)
                    continue
                chunk.append(work)
                if len(chunk) >= PUT_CHUNK:
                    await self._put(chunk)
            if chunk:
                await self._put(chunk)
            if outstanding == 0:
                break
            while not ready:  # ready outcomes go out without a trip through the scheduler
                arrived = trio.Event()
                await arrived.wait()
            entry = ready.popleft()
            if isinstance(entry, list):
                # A task group or run, handed over as one unit: each outcome is booked as the
                # job gets it, as a single task's (the job may await between two of them).
                outstanding -= len(entry)
                for outcome, error, tc in entry:
                    record(outcome, error, tc)
                    if tc.covers is not None:
                        _left(outcome, left)
                    yield outcome
                continue
            outstanding -= 1
            outcome, error, tc = entry
            record(outcome, error, tc)  # booked as the job gets it (see the module docstring)
            if tc.covers is not None:  # a bundle's outcome
                _left(outcome, left)
            yield outcome
        interrupter.check()
        if stopped is not None:
            raise stopped

    async def _put(self, chunk: list[WorkItem]) -> None:
        """Queue ``chunk`` (and empty it): what fits at once in one operation, the rest as
        room frees up (waiting while the pool is saturated)."""
        put = self._pool.queue.put_many(chunk)
        rest = chunk[put:]
        chunk.clear()
        for work in rest:
            await self._pool.submit(work)

    def dispatch_range(
        self, count: int, factory: Callable[[int], Task[T]], *, include_resumed: bool = False
    ) -> AsyncIterator[Outcome[T]]:
        """Like `dispatch_many` over ``factory(i) for i in range(count)``, but checkpointed
        indices are skipped without building their tasks: resuming a job with a million done
        tasks costs milliseconds."""
        if include_resumed:
            return self.dispatch_many((factory(i) for i in range(count)), include_resumed=True)
        return self.dispatch_many(factory(i) for i in self._stage.completed.missing(count))


def _left(outcome: Outcome[Any], left: collections.deque[Task[Any]]) -> None:
    """Add to ``left`` the tasks a done `Bundle` left (`BundleDone.left`): queued as tasks
    of their own."""
    value = outcome.value
    if outcome.status is OutcomeStatus.DONE and isinstance(value, BundleDone):
        left.extend(value.left)


__all__ = ["TaskDispatcher", "TaskHandle"]
