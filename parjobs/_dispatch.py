"""The task dispatcher: a bounded, nursery-based worker pool with resource lanes.

Data flow for one job::

    dispatch_many(iterable)  --work-->  [bounded priority queue]  <--pull--  N worker threads
          ^                                                                   | (one trio worker
          +------ outcomes (completion order) <-- collector <-- posted -------+  task each, under
                                                                                 the lane limiter)

The iterable is pulled lazily, never more than ``window`` tasks ahead of the outcomes the
caller consumed, so memory is O(concurrency). Tasks already checkpointed are skipped before
they are sent.

Sync tasks stream: a worker's thread call runs one task, posts its outcome and takes the next
task straight from the queue (under a lock), for up to `BATCH_MAX_ITEMS` tasks or
`BATCH_MAX_SECONDS`. It never waits for the event loop between tasks, so while trio records
outcomes and refills the queue, the threads keep copying; and since each thread takes one task
at a time, slow tasks spread over every worker instead of piling up in one. Posted outcomes
are finished (checkpoint bookkeeping, progress, delivery) by one collector task per pool,
woken at most once per batch of posts. While tasks are tiny, `_Governor` keeps them on few
threads: more would only contend for the GIL. Tasks of a class with ``group_size > 1`` are
taken several at a time and handed to its `Task.run_group` (a copy passes small files to C
that way), in calls sized to about `GROUP_SECONDS` of measured work.
"""

from __future__ import annotations

import collections
import dataclasses
import heapq
import os
import threading
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import trio

from ._exceptions import Interrupted, Skip, TaskTimeoutError
from ._progress import ItemError
from ._task import (
    RUN_ALONE,
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

#: At most this many tasks run in one worker-thread call (1: one thread hop per task).
BATCH_MAX_ITEMS = 256
#: A thread call takes no new task after running this long, so lane tokens rotate among jobs.
BATCH_MAX_SECONDS = 0.05
#: A worker thread wakes the event loop once this many outcomes are waiting...
POST_BATCH = 32
#: ... or the oldest has waited this long (seconds) ...
POST_DELAY = 0.005
#: ... or before a task at least this heavy (estimated bytes), which may take a while.
HEAVY_WEIGHT = 1 << 20
#: A group (see `Task.run_group`) takes queued tasks while their weights add up to less.
GROUP_MAX_WEIGHT = 4 << 20
#: A group is sized to take about this long (seconds), judged by the time per task of the
#: groups before it: many tiny tasks per call, but one at a time when tasks wait (files on a
#: slow network share), so that their waits still overlap across workers.
GROUP_SECONDS = 0.02
#: Sync tasks averaging less than this (seconds, measured alone) are "tiny": see `_Governor`.
TINY_TASK = 0.001
#: Judge by at least this many tasks' worth of time: one task this slow (a 20 ms network
#: open) lifts the limit at once, while a thread held up by a GIL wait (up to the 5 ms switch
#: interval) or a page fault does not.
TINY_WINDOW = 16
#: How long the governor leaves concurrency unlimited before measuring again.
PROBE_INTERVAL = 1.0
#: The most workers a pool may have. Concurrency is bounded by the lanes' threads anyway
#: (``io``: 4 per core, at least 16, by default); past a thousand, more workers only cost
#: memory (the dispatch window grows with them) and scheduling.
MAX_WORKERS = 1024
#: The dispatch window (tasks pulled ahead of the outcomes consumed) never exceeds this, so a
#: job's memory does not grow with its worker count.
MAX_WINDOW = 4096


def check_workers(workers: object) -> int:
    """``workers`` if it is an int in 1..`MAX_WORKERS`, else `ValueError` (`TypeError` for a
    non-int) saying so; the pool, the manager and the CLI share this bound."""
    if not isinstance(workers, int) or isinstance(workers, bool):
        raise TypeError(f"workers must be an int, got {type(workers).__name__}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if workers > MAX_WORKERS:
        raise ValueError(f"workers must be at most {MAX_WORKERS}, got {workers}")
    return workers


class _Governor:
    """Limits how many threads run *tiny* sync tasks at once.

    Each call into CPython releases and retakes the GIL, and a small-file copy makes about
    ten of them in ~150 us. Several threads doing that contend for the GIL more than they
    overlap: on the 2-core reference machine, 8 threads copied 10,000 small files 1.6x slower
    than one. Threads pay off when tasks wait (a slow disk or network share) or run long
    outside the GIL (big chunks, image decoding), and then tasks are slow.

    Streams of grouped tasks (`Task.run_group`) get `group_cap`, one thread per core: a group
    call spends most of its time outside the GIL. On ext4 here, two streams of C group calls
    copied the small-file set 1.3x faster than one.

    A task weighing `HEAVY_WEIGHT` or more (a big file) is never held back and does not
    count: it cannot be tiny, and it leaves the GIL alone while the kernel copies its chunks.
    Otherwise the pool starts limited to `cap` streaming threads and measures task times
    while at most `cap` threads stream (measurements under contention would be inflated by
    GIL waits). Tasks averaging over `TINY_TASK` (over at least `TINY_WINDOW` tasks' worth of
    time) lift the limit; `PROBE_INTERVAL` later the pool limits itself again to re-measure,
    since a job's work can change (small files, then large ones).
    """

    __slots__ = ("cap", "group_cap", "limited", "n", "since", "total", "useful")

    def __init__(self, workers: int, cpus: int) -> None:
        self.cap = max(1, min(workers, cpus // 2))
        # A group call (`Task.run_group`) is meant to leave the GIL free most of the time
        # (C with the GIL released): groups may stream on every core.
        self.group_cap = max(1, min(workers, cpus))
        self.useful = self.cap < workers  # else there is nothing to limit
        self.limited = self.useful
        self.n = 0
        self.total = 0.0
        self.since = 0.0

    def observe(self, seconds: float, count: int = 1) -> None:
        """From a worker thread while measuring: the wall time of ``count`` tasks (races
        between threads only blur the statistics)."""
        self.n += count
        self.total += seconds

    def review(self, now: float) -> bool | None:
        """From trio: True when the limit was just lifted (wake the waiting workers), False
        when it was just set again, None when nothing changed."""
        if self.limited:
            n = self.n
            if n and self.total > max(n, TINY_WINDOW) * TINY_TASK:
                self.limited = False
                self.since = now
                return True
            if n >= 64:  # tiny so far: measure a fresh window
                self.n, self.total = 0, 0.0
            return None
        if self.useful and now - self.since >= PROBE_INTERVAL:
            self.limited = True
            self.n, self.total = 0, 0.0
            return False
        return None


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


def _run_group(group: list[_Work], interrupter: Interrupter) -> list[tuple[_Work, Outcome[Any]]]:
    """Run tasks of one class through its `Task.run_group`, then alone those it left."""
    if interrupter.reason is not None:
        return [(work, _run_one(work, interrupter)) for work in group]
    try:
        values = type(group[0].task).run_group(
            [work.task for work in group], [work.tc for work in group]
        )
        if len(values) != len(group):
            raise RuntimeError(f"run_group returned {len(values)} values for {len(group)} tasks")
    except Exception as exc:
        return [
            (work, Outcome(work.task, OutcomeStatus.FAILED, error=exc, bytes=work.tc.bytes_done))
            for work in group
        ]
    done = OutcomeStatus.DONE
    return [
        (
            work,
            _run_one(work, interrupter)
            if value is RUN_ALONE
            else Outcome(work.task, done, value=value, bytes=work.tc.bytes_done),
        )
        for work, value in zip(group, values, strict=True)
    ]


class _WorkQueue:
    """A bounded priority queue: higher ``task.priority`` first, FIFO among equals.

    Trio tasks ``put`` (waits while full: backpressure) and ``get`` (waits while empty);
    worker threads `take` without waiting. A lock guards the heap; parking lots are touched
    only from trio, so a thread's take leaves waking blocked putters to `wake_putters`.
    """

    def __init__(self, capacity: int, on_unclaimed: Callable[[], None] | None = None) -> None:
        self.capacity = capacity
        # Called (from trio) when a put finds no getter waiting: the pool may start a worker.
        self._on_unclaimed = on_unclaimed
        self._heap: list[tuple[int, int, _Work]] = []
        self._seq = 0
        self._closed = False
        self._lock = threading.Lock()
        self._getters = trio.lowlevel.ParkingLot()
        self._putters = trio.lowlevel.ParkingLot()

    def __len__(self) -> int:
        return len(self._heap)

    def put_nowait(self, work: _Work, *, force: bool = False) -> None:
        if self._closed:
            raise trio.ClosedResourceError("the worker pool is closed")
        with self._lock:
            if len(self._heap) >= self.capacity and not force:
                raise trio.WouldBlock
            self._seq += 1
            heapq.heappush(self._heap, (-work.task.priority, self._seq, work))
        if self._getters:
            self._getters.unpark()
        elif self._on_unclaimed is not None:
            self._on_unclaimed()

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
        with self._lock:
            if not self._heap:
                raise trio.EndOfChannel if self._closed else trio.WouldBlock
            work = heapq.heappop(self._heap)[2]
        self.wake_putters()
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

    def take(self, lane: str) -> _Work | None:
        """From a worker thread: pop the head if it is a sync task of ``lane``, else None
        (an async task or another lane's task is left for a trio worker to pick up)."""
        with self._lock:
            heap = self._heap
            if not heap:
                return None
            task = heap[0][2].task
            if task.lane != lane or isinstance(task, AsyncTask):
                return None
            return heapq.heappop(heap)[2]

    def take_group(self, first: _Work, size: int) -> list[_Work]:
        """From a worker thread: ``first`` and the queued tasks of its class that follow it
        at the head, up to ``size`` tasks and `GROUP_MAX_WEIGHT`; heavy tasks end it."""
        cls = type(first.task)
        group, weight = [first], first.task.weight
        with self._lock:
            heap = self._heap
            while heap and len(group) < size:
                task = heap[0][2].task
                if type(task) is not cls or task.group_size == 1:
                    break
                weight += task.weight
                if task.weight >= HEAVY_WEIGHT or weight >= GROUP_MAX_WEIGHT:
                    break
                group.append(heapq.heappop(heap)[2])
        return group

    def wake_putters(self) -> None:
        """From trio: let a blocked `put` retry once there is room."""
        if self._putters and len(self._heap) < self.capacity:
            self._putters.unpark()

    def close(self) -> None:
        self._closed = True
        self._getters.unpark_all()
        self._putters.unpark_all()


class WorkerPool:
    """Up to N worker tasks of one job (plus an outcome collector), living in the job's
    nursery until the job ends.

    Workers start lazily: a task put while no worker waits for one starts a new worker, up
    to ``workers``. So a pool never holds more workers than it had tasks in flight at once,
    and ``-w 1000`` on 50 files costs 50 workers, not 1000.
    """

    def __init__(
        self,
        ctx: JobContext,
        nursery: trio.Nursery,
        *,
        workers: int,
        lanes: dict[str, trio.CapacityLimiter],
    ) -> None:
        check_workers(workers)
        self._ctx = ctx
        self._nursery = nursery
        self.workers = workers
        self._lanes = lanes
        # Room for every worker to find its next task queued when it finishes one (bounded:
        # past a few hundred workers, the lanes' threads are the limit, not the backlog).
        self.window = min(workers * 16 + 112, max(MAX_WINDOW, 2 * workers))
        self.queue = _WorkQueue(self.window, self._start_worker)
        # Outcomes posted by worker threads, finished in trio by `_collect`.
        self._posted: collections.deque[tuple[_Work, Outcome[Any]]] = collections.deque()
        self._wake_pending = False
        self._first_post = 0.0
        self._wake = trio.Event()
        self._token = trio.lowlevel.current_trio_token()
        self._started_workers = 0
        self._live_workers = 0
        self._closed = False
        self._governor = _Governor(workers, os.cpu_count() or 2)
        self._group_task_seconds = GROUP_SECONDS  # per grouped task: start with single tasks
        self._streaming = 0  # thread calls started by a light task, running now
        self._gate = trio.lowlevel.ParkingLot()  # workers waiting for the governor
        nursery.start_soon(self._collect, name=f"parjobs-collector-{ctx.job_id}")

    def _start_worker(self) -> None:
        """A task was queued and no worker is waiting for one: start a worker, if the pool
        has fewer than ``workers``. (A busy worker takes it otherwise when it is done.)"""
        if self._closed or self._started_workers >= self.workers:
            return
        self._started_workers += 1
        self._live_workers += 1
        name = f"parjobs-worker-{self._ctx.job_id}-{self._started_workers - 1}"
        self._nursery.start_soon(self._worker, name=name)

    def lane(self, name: str) -> trio.CapacityLimiter:
        try:
            return self._lanes[name]
        except KeyError:
            raise ValueError(f"unknown lane {name!r}; known: {', '.join(self._lanes)}") from None

    async def submit(self, work: _Work) -> None:
        await self.queue.put(work)

    def close(self) -> None:
        self._closed = True
        self.queue.close()
        self._wake.set()  # with no worker left (or none ever started) the collector ends

    async def _worker(self) -> None:
        queue = self.queue
        try:
            while True:
                try:
                    work = await queue.get()
                except trio.EndOfChannel:
                    return
                if isinstance(work.task, AsyncTask):
                    await self._run_async(work)
                    continue
                governor = self._governor
                light = work.task.weight < HEAVY_WEIGHT  # a heavy task is never tiny
                cap = governor.group_cap if work.task.group_size > 1 else governor.cap
                while light and governor.limited and self._streaming >= cap:
                    await self._gate.park()
                await self._run_stream(work, light, cap)
        finally:
            self._live_workers -= 1
            if self._live_workers == 0:
                self._wake.set()  # the collector drains what is left and ends

    async def _run_stream(self, first: _Work, light: bool, cap: int) -> None:
        """One thread call: run ``first``, then keep taking queued tasks of its lane. A call
        started by a heavy task does not count against the governor's cap, so while the
        governor limits threads it runs that task only."""
        interrupter = self._ctx._interrupter
        tracker = self._ctx.progress
        queue, post, lane = self.queue, self._post, first.task.lane
        current: list[_Work] = [first]
        governor = self._governor
        no_earlier: tuple[tuple[_Work, Outcome[Any]], ...] = ()

        def run_all() -> None:
            monotonic = time.monotonic
            started = monotonic()
            end = started + BATCH_MAX_SECONDS
            work, left = first, BATCH_MAX_ITEMS
            while True:
                if work.task.group_size > 1 and work.task.weight < HEAVY_WEIGHT:
                    fit = int(GROUP_SECONDS / self._group_task_seconds)
                    group = queue.take_group(work, max(1, min(work.task.group_size, fit)))
                    current.extend(group[1:])
                    for member in group:
                        tracker.started(id(member), member.tc)
                    call = monotonic()
                    done = _run_group(group, interrupter)
                    now = monotonic()
                    # (threads race on this average: that only blurs it)
                    per_task = max(1e-6, (now - call) / len(group))
                    self._group_task_seconds = (self._group_task_seconds + per_task) / 2
                    earlier: Sequence[tuple[_Work, Outcome[Any]]] = done[:-1]
                    work, outcome = done[-1]  # posted below, like a single task's
                else:
                    tracker.started(id(work), work.tc)
                    outcome = _run_one(work, interrupter)
                    now = monotonic()
                    earlier = no_earlier
                count = len(earlier) + 1
                if light and governor.limited and self._streaming <= cap:
                    governor.observe(now - started, count)
                started = now
                current.clear()
                for finished, done_outcome in earlier:
                    post(finished, done_outcome, False)
                left -= count
                nxt = None
                # Past the governor's limit (a heavy task's call, or the limit was just set
                # again), the thread ends its call rather than stream tiny tasks.
                over = governor.limited and (not light or self._streaming > cap)
                if left > 0 and now < end and not over:
                    try:
                        trio.from_thread.check_cancelled()
                    except trio.Cancelled:
                        pass
                    else:
                        nxt = queue.take(lane)
                # Wake trio now if the call ends or the next task may take long; else let
                # posts pile up a little.
                post(work, outcome, nxt is None or nxt.task.weight >= HEAVY_WEIGHT)
                if nxt is None:
                    return  # trio drains what is left when the call returns
                current.append(nxt)
                work = nxt

        if light:
            self._streaming += 1
        try:
            await trio.to_thread.run_sync(run_all, limiter=self.lane(lane))
        except BaseException:
            for work in current:  # taken, never run (the thread failed): not finished
                tracker.finished(id(work), "cancelled", 0, None)
            raise
        finally:
            if light:
                self._streaming -= 1
                self._gate.unpark()
            self._drain()

    def _post(self, work: _Work, outcome: Outcome[Any], urgent: bool) -> None:
        """From a worker thread: hand an outcome to trio.

        Waking the event loop costs a syscall on this side and a scheduling round on that
        side, so a thread wakes it only every `POST_BATCH` outcomes, after `POST_DELAY`, or
        when ``urgent`` (the next task may be slow, or the thread call ends). Attribute
        writes and ``deque.append`` are atomic in CPython; a wake-up lost to a race between
        threads only delays outcomes until their thread call ends (drained there).
        """
        posted = self._posted
        posted.append((work, outcome))
        if self._wake_pending:
            return
        now = time.monotonic()
        if len(posted) == 1:
            self._first_post = now
        if urgent or len(posted) >= POST_BATCH or now - self._first_post >= POST_DELAY:
            self._wake_pending = True
            self._token.run_sync_soon(self._wake_collector)

    def _wake_collector(self) -> None:
        self._wake.set()

    def _drain(self) -> None:
        """Finish every posted outcome (trio thread). The flag is cleared first, so a post
        racing with this drain either is drained here or schedules another wake-up."""
        self._wake_pending = False
        posted = self._posted
        while posted:
            work, outcome = posted.popleft()
            self._finish(work, outcome)
        self.queue.wake_putters()
        if self._governor.review(time.monotonic()):
            self._gate.unpark_all()

    async def _collect(self) -> None:
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            self._drain()
            if self._closed and self._live_workers == 0 and not self._posted:
                return

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
        # Refill in bursts, not one task per outcome: fewer wake-ups, and a backlog to stream.
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
