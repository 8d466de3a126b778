"""The task dispatcher: a bounded, nursery-based worker pool with resource lanes and batching.

Data flow for one job::

    dispatch_many(iterable)  --work-->  [bounded channel]  -->  N worker tasks (nursery)
          ^                                                        | one thread call per batch,
          +---------------- outcomes (completion order) <---------+ under the lane's limiter

The iterable is pulled lazily, never more than ``window`` tasks ahead of the outcomes the
caller consumed, so memory is O(concurrency). Tasks already checkpointed are skipped before
they are sent. Sync tasks much lighter than a thread round trip are batched: a worker that
finds a backlog takes up to `BATCH_MAX_ITEMS` of them into one ``trio.to_thread`` call.
"""

from __future__ import annotations

import collections
import dataclasses
import heapq
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import trio

from ._exceptions import Interrupted, Skip, TaskTimeoutError
from ._progress import ItemError
from ._task import (
    AsyncTask,
    Interrupter,
    Outcome,
    OutcomeStatus,
    RetryPolicy,
    Task,
    TaskContext,
)

if TYPE_CHECKING:
    from ._context import JobContext, _Stage

T = TypeVar("T")

#: At most this many tasks go into one worker-thread call.
BATCH_MAX_ITEMS = 64
#: A batch stops growing once its tasks' weights add up to this many bytes.
BATCH_MAX_WEIGHT = 1 << 20


class _Work:
    __slots__ = ("deliver", "retry", "stage", "task", "tc", "timeout")

    def __init__(
        self,
        task: Task[Any],
        tc: TaskContext,
        stage: _Stage,
        deliver: Callable[[Outcome[Any]], None],
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
    ) -> None:
        self.task = task
        self.tc = tc
        self.stage = stage
        self.deliver = deliver
        self.retry = retry
        self.timeout = timeout


def _run_one(work: _Work, interrupter: Interrupter) -> Outcome[Any]:
    """Run one sync task in the current (worker) thread and capture how it ended."""
    task, tc = work.task, work.tc
    if interrupter.reason is not None:
        return Outcome(task, OutcomeStatus.CANCELLED, reason=f"job {interrupter.reason}d")
    try:
        value = task.run(tc)
    except Skip as exc:
        return Outcome(task, OutcomeStatus.SKIPPED, reason=exc.reason, bytes=tc.bytes_done)
    except Interrupted as exc:
        return Outcome(task, OutcomeStatus.CANCELLED, error=exc, reason=str(exc))
    except Exception as exc:
        return Outcome(task, OutcomeStatus.FAILED, error=exc, bytes=tc.bytes_done)
    return Outcome(task, OutcomeStatus.DONE, value=value, bytes=tc.bytes_done)


class _WorkQueue:
    """A bounded priority queue for trio tasks: higher ``task.priority`` first, FIFO among
    equals. ``put`` waits while full (backpressure); ``get`` waits while empty."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._heap: list[tuple[int, int, _Work]] = []
        self._seq = 0
        self._closed = False
        self._getters = trio.lowlevel.ParkingLot()
        self._putters = trio.lowlevel.ParkingLot()

    def __len__(self) -> int:
        return len(self._heap)

    def put_nowait(self, work: _Work, *, force: bool = False) -> None:
        if self._closed:
            raise trio.ClosedResourceError("the worker pool is closed")
        if len(self._heap) >= self.capacity and not force:
            raise trio.WouldBlock
        self._seq += 1
        heapq.heappush(self._heap, (-work.task.priority, self._seq, work))
        if self._getters:
            self._getters.unpark()

    async def put(self, work: _Work) -> None:
        while True:
            try:
                self.put_nowait(work)
            except trio.WouldBlock:
                await self._putters.park()
            else:
                await trio.lowlevel.checkpoint()
                return

    def get_nowait(self) -> _Work:
        if not self._heap:
            raise trio.EndOfChannel if self._closed else trio.WouldBlock
        work = heapq.heappop(self._heap)[2]
        if self._putters:
            self._putters.unpark()
        return work

    async def get(self) -> _Work:
        while True:
            try:
                work = self.get_nowait()
            except trio.WouldBlock:
                await self._getters.park()
            else:
                await trio.lowlevel.checkpoint()
                return work

    def close(self) -> None:
        self._closed = True
        self._getters.unpark_all()
        self._putters.unpark_all()


class WorkerPool:
    """N worker tasks of one job, living in the job's nursery until the job ends."""

    def __init__(
        self,
        ctx: JobContext,
        nursery: trio.Nursery,
        *,
        workers: int,
        lanes: dict[str, trio.CapacityLimiter],
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self._ctx = ctx
        self._nursery = nursery
        self.workers = workers
        self._lanes = lanes
        buffer = workers * 4 if workers > 1 else 1
        self.window = buffer + workers * BATCH_MAX_ITEMS
        self.queue = _WorkQueue(self.window)
        for i in range(workers):
            nursery.start_soon(self._worker, name=f"parjobs-worker-{ctx.job_id}-{i}")

    def _batch_limit(self) -> int:
        """How many queued sync tasks one thread call may take: at most `BATCH_MAX_ITEMS`,
        and never more than a fair share of the backlog per worker.

        Batching amortizes the ~100 us thread hop over tiny tasks. The fair share keeps it
        from serializing slow ones: 100 files behind a 20 ms network open spread over all the
        workers instead of queueing 64 deep in one thread while others idle; with a deep
        backlog every worker holds a full batch, so all of them overlap their waits anyway.
        """
        return max(1, min(BATCH_MAX_ITEMS, len(self.queue) // self.workers + 1))

    def lane(self, name: str) -> trio.CapacityLimiter:
        try:
            return self._lanes[name]
        except KeyError:
            raise ValueError(f"unknown lane {name!r}; known: {', '.join(self._lanes)}") from None

    async def submit(self, work: _Work) -> None:
        await self.queue.put(work)

    def close(self) -> None:
        self.queue.close()

    async def _worker(self) -> None:
        carry: _Work | None = None
        queue = self.queue
        while True:
            if carry is not None:
                work, carry = carry, None
            else:
                try:
                    work = await queue.get()
                except trio.EndOfChannel:
                    return
            if isinstance(work.task, AsyncTask):
                await self._run_async(work)
                continue
            batch = [work]
            weight = work.task.weight
            lane = work.task.lane
            limit = self._batch_limit()
            while weight < BATCH_MAX_WEIGHT and len(batch) < limit:
                try:
                    nxt = queue.get_nowait()
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
                if isinstance(nxt.task, AsyncTask) or nxt.task.lane != lane:
                    carry = nxt
                    break
                batch.append(nxt)
                weight += nxt.task.weight
            await self._run_batch(batch, lane)

    async def _run_batch(self, batch: list[_Work], lane: str) -> None:
        interrupter = self._ctx._interrupter
        tracker = self._ctx.progress

        def run_all() -> list[Outcome[Any]]:
            out = []
            for work in batch:
                tracker.started(id(work), work.tc)
                out.append(_run_one(work, interrupter))
            return out

        try:
            outcomes = await trio.to_thread.run_sync(run_all, limiter=self.lane(lane))
        except BaseException:
            for work in batch:
                tracker.finished(id(work), "cancelled", 0, None)
            raise
        for work, outcome in zip(batch, outcomes, strict=True):
            self._finish(work, outcome)

    async def _run_async(self, work: _Work) -> None:
        task = work.task
        assert isinstance(task, AsyncTask)
        self._ctx.progress.started(id(work), work.tc)
        tc = work.tc
        outcome: Outcome[Any]
        if self._ctx._interrupter.reason is not None:
            outcome = Outcome(task, OutcomeStatus.CANCELLED, reason="job interrupted")
        else:
            try:
                async with self.lane(task.lane):
                    if work.timeout is None:
                        value = await task.arun(tc)
                    else:
                        try:
                            with trio.fail_after(work.timeout):
                                value = await task.arun(tc)
                        except trio.TooSlowError:
                            raise TaskTimeoutError(f"{tc.label}: timed out") from None
            except Skip as exc:
                outcome = Outcome(
                    task, OutcomeStatus.SKIPPED, reason=exc.reason, bytes=tc.bytes_done
                )
            except Interrupted as exc:
                outcome = Outcome(task, OutcomeStatus.CANCELLED, error=exc, reason=str(exc))
            except trio.Cancelled:
                self._ctx.progress.finished(id(work), "cancelled", 0, None)
                raise
            except Exception as exc:
                outcome = Outcome(task, OutcomeStatus.FAILED, error=exc, bytes=tc.bytes_done)
            else:
                outcome = Outcome(task, OutcomeStatus.DONE, value=value, bytes=tc.bytes_done)
        self._finish(work, outcome)

    def _finish(self, work: _Work, outcome: Outcome[Any]) -> None:
        """Record the outcome (checkpoint bookkeeping, progress) and hand it to the caller,
        or put the task back for another attempt when its retry policy says so."""
        error: ItemError | None = None
        tc = work.tc
        if tc.attempt > 1:
            outcome = dataclasses.replace(outcome, attempts=tc.attempt)
        if outcome.status is OutcomeStatus.FAILED:
            exc = outcome.error
            assert exc is not None
            policy = work.retry
            if policy is not None and policy.should_retry(tc.attempt, exc):
                self._ctx.progress.finished(id(work), "retrying", 0, None)
                self._nursery.start_soon(self._retry_later, work, policy.delay(tc.attempt))
                return
            message = _describe(exc)
            if tc.attempt > 1:
                message += f" (after {tc.attempt} attempts)"
            error = ItemError(
                index=outcome.index,
                label=tc.label,
                error=type(exc).__name__,
                message=message,
                stage=work.stage.name,
            )
        work.stage.record(outcome, error)
        self._ctx.progress.finished(id(work), outcome.status.value, outcome.bytes, error)
        work.deliver(outcome)

    async def _retry_later(self, work: _Work, delay: float) -> None:
        """Back off, then queue the task again (at once if the job is being interrupted:
        the attempt then ends as cancelled without running)."""
        interrupter = self._ctx._interrupter
        deadline = trio.current_time() + delay
        while interrupter.reason is None and trio.current_time() < deadline:  # noqa: ASYNC110
            await trio.sleep(min(0.1, deadline - trio.current_time()))
        old = work.tc
        tc = TaskContext(old.index, old.label, interrupter, work.timeout)
        tc.attempt = old.attempt + 1
        work.tc = tc
        self.queue.put_nowait(work, force=True)


def _describe(exc: BaseException) -> str:
    """A clear one-line reason: strerror and file name for OSError, else str(exc)."""
    if isinstance(exc, OSError) and exc.strerror:
        name = exc.filename
        if isinstance(name, bytes):
            name = name.decode("utf-8", "backslashreplace")
        return f"{exc.strerror}: {name}" if name is not None else exc.strerror
    text = str(exc)
    return text or type(exc).__name__


class TaskHandle(Generic[T]):
    """The future of one dispatched task: ``await handle.outcome()``."""

    def __init__(self, task: Task[T]) -> None:
        self.task = task
        self._outcome: Outcome[T] | None = None
        self._event = trio.Event()

    def _set(self, outcome: Outcome[Any]) -> None:
        self._outcome = outcome
        self._event.set()

    @property
    def done(self) -> bool:
        return self._outcome is not None

    async def outcome(self) -> Outcome[T]:
        await self._event.wait()
        assert self._outcome is not None
        return self._outcome


class TaskDispatcher:
    """Fans tasks out to the job's worker pool and yields their outcomes.

    Obtained from ``ctx.task_dispatcher(stage)``. Each stage has its own index space and its
    own checkpointed completed set; ``keep_results=True`` stores each task's (JSON) value with
    its completion so a resumed run gets it back on the skipped outcome.
    """

    def __init__(
        self,
        ctx: JobContext,
        stage: _Stage,
        pool: WorkerPool,
        *,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
    ) -> None:
        self._ctx = ctx
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

    def _work(self, task: Task[Any], deliver: Callable[[Outcome[Any]], None]) -> _Work:
        index = getattr(task, "index", None)
        if not isinstance(index, int) or isinstance(index, bool) or index < 0:
            raise TypeError(f"task {task!r} needs an int index >= 0, got {index!r}")
        timeout = task.timeout if task.timeout is not None else self.timeout
        sync_timeout = None if isinstance(task, AsyncTask) else timeout
        tc = TaskContext(index, task.label, self._ctx._interrupter, sync_timeout)
        retry = task.retry if task.retry is not None else self.retry
        return _Work(task, tc, self._stage, deliver, retry, timeout)

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
        handle: TaskHandle[T] = TaskHandle(task)
        if task.index in self._stage.completed:
            await self._stage.load_results()
            handle._set(self._resumed(task))
        else:
            await self._pool.submit(self._work(task, handle._set))
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
        then `PauseRequested`/`CancelRequested` is raised.
        """
        if include_resumed:
            await self._stage.load_results()
        ready: collections.deque[Outcome[T]] = collections.deque()
        arrived = trio.Event()

        def deliver(outcome: Outcome[T]) -> None:
            ready.append(outcome)
            arrived.set()

        completed = self._stage.completed
        interrupter = self._ctx._interrupter
        window = self._pool.window
        outstanding = 0
        sync_iter = iter(tasks) if isinstance(tasks, Iterable) else None
        async_iter = aiter(tasks) if sync_iter is None else None  # type: ignore[arg-type]
        exhausted = False
        # Refill in bursts, not one task per outcome: workers wake to a backlog and batch it.
        low_water = window // 2
        while True:
            while (
                not exhausted
                and outstanding < window
                and interrupter.reason is None
                and (outstanding <= low_water or not ready)
            ):
                try:
                    if sync_iter is not None:
                        task = next(sync_iter)
                    else:
                        assert async_iter is not None
                        task = await anext(async_iter)
                except (StopIteration, StopAsyncIteration):
                    exhausted = True
                    break
                if task.index in completed:
                    if include_resumed:
                        yield self._resumed(task)
                    continue
                work = self._work(task, deliver)
                try:
                    self._pool.queue.put_nowait(work)
                except trio.WouldBlock:
                    await self._pool.submit(work)
                outstanding += 1
            if outstanding == 0:
                break
            while not ready:  # ready outcomes go out without a trip through the scheduler
                arrived = trio.Event()
                await arrived.wait()
            outstanding -= 1
            yield ready.popleft()
        interrupter.check()

    def dispatch_range(
        self, count: int, factory: Callable[[int], Task[T]], *, include_resumed: bool = False
    ) -> AsyncIterator[Outcome[T]]:
        """Like `dispatch_many` over ``factory(i) for i in range(count)``, but checkpointed
        indices are skipped without building their tasks: resuming a job with a million done
        tasks costs milliseconds."""
        if include_resumed:
            return self.dispatch_many((factory(i) for i in range(count)), include_resumed=True)
        return self.dispatch_many(factory(i) for i in self._stage.completed.missing(count))
