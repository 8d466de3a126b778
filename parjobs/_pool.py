"""The worker pool of one job: trio workers that take tasks off the work queue, hand sync
ones to an executor, run async ones in trio, and book every outcome (retries included).

Data flow::

    TaskDispatcher --WorkItem--> [WorkQueue] <--take-- worker --sync--> Executor (threads)
          ^                                                |              | post(outcome)
          +---- deliver(outcome) <-- _finish <-- collector <--------------+

The pool books progress; the dispatcher books completions in the stage (what checkpoints
write) when it hands an outcome to the job (see `parjobs._dispatch`).

The pool knows nothing of the job context: it gets an `Interrupter`, a progress tracker and
a name (for its trio tasks' names).
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import time
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import trio

from ._exceptions import Interrupted, Skip, TaskTimeoutError
from ._executor import Executor, PoolPort, ThreadExecutor
from ._histogram import TASK_SECONDS
from ._progress import ItemError, ProgressTracker
from ._stage import Ended
from ._task import AsyncTask, Interrupter, Outcome, OutcomeStatus, TaskContext
from ._util import MAX_WORKERS as MAX_WORKERS  # (tests and `_dispatch` import it here)
from ._workqueue import WorkItem, WorkQueue

if TYPE_CHECKING:  # built only when asked for (start-up: see parjobs._statistics)
    from ._statistics import PoolStatistics

#: Failed tasks are logged here at DEBUG, with their tracebacks.
task_logger = logging.getLogger("parjobs.tasks")
#: Characters of a failed task's traceback kept with its error (the end: the raise site).
TRACEBACK_CHARS = 16_000

#: A worker thread wakes the event loop once this many outcomes are waiting...
POST_BATCH = 32
#: ... or the oldest has waited this long (seconds) (or before a heavy task: see `_post`).
POST_DELAY = 0.005
#: The dispatch window (tasks pulled ahead of the outcomes consumed) never exceeds this, so a
#: job's memory does not grow with its worker count.
MAX_WINDOW = 4096
#: ... and is at least this: a worker thread streams a few thousand tiny tasks in one GIL
#: switch interval (5 ms), and a call that finds the queue empty ends (another costs a
#: thread hand-off and a trio round); a thousand queued tasks (of any worker count) keep
#: the call going while trio books outcomes and refills.
MIN_WINDOW = 1024

#: What a worker thread posts: one task's outcome, or a task group's (`WorkerPool.post_group`).
Posted = tuple[WorkItem, Outcome[Any]] | list[tuple[WorkItem, Outcome[Any]]]

#: Builds the executor of a lane, given the pool.
ExecutorFactory = Callable[[PoolPort], Executor]


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


def describe_error(exc: BaseException) -> str:
    """A clear one-line reason: strerror and file name for OSError, else str(exc)."""
    if isinstance(exc, OSError) and exc.strerror:
        name = exc.filename
        if isinstance(name, bytes):
            name = name.decode("utf-8", "backslashreplace")
        return f"{exc.strerror}: {name}" if name is not None else exc.strerror
    text = str(exc)
    return text or type(exc).__name__


class WorkerPool:
    """Up to N worker tasks of one job (plus an outcome collector), living in the job's
    nursery until the job ends.

    Workers start lazily: a task put while no worker waits for one starts a new worker, up
    to ``workers``. So a pool never holds more workers than it had tasks in flight at once,
    and ``-w 1000`` on 50 files costs 50 workers, not 1000. Sync tasks go to an executor:
    the cluster's (``remote``) for tasks marked ``cluster`` when there is one, else
    `ThreadExecutor` (worker threads, bounded per lane).
    """

    def __init__(
        self,
        nursery: trio.Nursery,
        *,
        name: str,
        interrupter: Interrupter,
        progress: ProgressTracker,
        workers: int,
        lanes: dict[str, trio.CapacityLimiter],
        remote: ExecutorFactory | None = None,
    ) -> None:
        check_workers(workers)
        self.name = name
        self.interrupter = interrupter
        self.progress = progress
        self.workers = workers
        self._nursery = nursery
        self._lanes = lanes
        # Room for every worker to find its next task queued when it finishes one, and for a
        # thread streaming tiny tasks (`MIN_WINDOW`) (bounded: past a few hundred workers,
        # the lanes' threads are the limit, not the backlog).
        self.window = min(max(workers * 16 + 112, MIN_WINDOW), max(MAX_WINDOW, 2 * workers))
        self.queue = WorkQueue(self.window, self._start_worker)
        # What a `Bundle` asks before it hands back the tasks it has not run (`_hand_back`).
        interrupter.queued = self.queue.__len__
        # Outcomes posted by executors (from worker threads), booked in trio by `_collect`.
        self._posted: collections.deque[Posted] = collections.deque()
        self._wake_pending = False
        self._first_post = 0.0
        self._wake = trio.Event()
        self._token = trio.lowlevel.current_trio_token()
        self._started_workers = 0
        self._live_workers = 0
        self._done = 0
        self._closed = False
        self._threads = ThreadExecutor(self, workers, nursery=nursery)
        # A cluster: tasks marked ``cluster`` run there, whatever their lane.
        self._remote = None if remote is None else remote(self)
        if self._remote is not None:
            self.queue.remote = True
        nursery.start_soon(self._collect, name=f"parjobs-collector-{name}")

    def statistics(self) -> PoolStatistics:
        from ._statistics import PoolStatistics

        queued = len(self.queue)
        return PoolStatistics(
            workers=self.workers,
            workers_started=self._started_workers,
            queued=queued,
            running=self.queue.put_count - self._done - queued,
            done=self._done,
            threads=self._threads.statistics(),
        )

    def _start_worker(self, unclaimed: int) -> None:
        """``unclaimed`` tasks were queued with no worker waiting for them: start as many
        workers, up to ``workers`` in all. (Busy workers take them otherwise when done.)"""
        if self._closed:
            return
        for _ in range(min(unclaimed, self.workers - self._started_workers)):
            self._started_workers += 1
            self._live_workers += 1
            name = f"parjobs-worker-{self.name}-{self._started_workers - 1}"
            self._nursery.start_soon(self._worker, name=name)
        if self._started_workers == self.workers:
            self.queue.on_unclaimed = None  # all started: the queue need not ask again

    def limiter(self, lane: str) -> trio.CapacityLimiter:
        """The thread (or call) limiter of ``lane``."""
        try:
            return self._lanes[lane]
        except KeyError:
            raise ValueError(f"unknown lane {lane!r}; known: {', '.join(self._lanes)}") from None

    async def submit(self, work: WorkItem) -> None:
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
                if self._remote is not None and work.task.cluster:
                    executor = self._remote
                else:
                    executor = self._threads
                try:
                    await executor.run(work)
                finally:
                    self._drain()  # what the executor posted last
        finally:
            self._live_workers -= 1
            if self._live_workers == 0:
                self._wake.set()  # the collector drains what is left and ends

    def post(self, work: WorkItem, outcome: Outcome[Any], urgent: bool) -> None:
        """From a worker thread: hand an outcome to trio.

        Waking the event loop costs a syscall on this side and a scheduling round on that
        side, so a thread wakes it only every `POST_BATCH` outcomes, after `POST_DELAY`, or
        when ``urgent`` (the next task may be slow, or the thread call ends). Attribute
        writes and ``deque.append`` are atomic in CPython; a wake-up lost to a race between
        threads only delays outcomes until their thread call ends (drained there).
        """
        self.progress.ended(id(work))  # not running any more, though not booked yet
        self._hand_over((work, outcome), urgent)

    def _hand_over(self, entry: Posted, urgent: bool) -> None:
        posted = self._posted
        posted.append(entry)
        if self._wake_pending:
            return
        now = time.monotonic()
        if len(posted) == 1:
            self._first_post = now
        if urgent or len(posted) >= POST_BATCH or now - self._first_post >= POST_DELAY:
            self._wake_pending = True
            self._token.run_sync_soon(self._wake_collector)

    def post_group(self, group: list[tuple[WorkItem, Outcome[Any]]], urgent: bool) -> None:
        """From a worker thread: hand a task group's outcomes to trio together (`post`):
        they are booked, and reach the job, as one unit."""
        ended = self.progress.ended
        for work, _ in group:
            ended(id(work))
        self._hand_over(group, urgent or len(group) >= POST_BATCH)

    def _wake_collector(self) -> None:
        self._wake.set()

    def _drain(self) -> None:
        """Book every posted outcome (trio thread). The flag is cleared first, so a post
        racing with this drain either is drained here or schedules another wake-up."""
        self._wake_pending = False
        posted = self._posted
        if posted:
            settle = self._settle
            while posted:
                entry = posted.popleft()
                if isinstance(entry, list):
                    self._finish_group(entry)
                else:
                    work, outcome = entry
                    settled = settle(work, outcome)
                    if settled is not None:
                        work.deliver(*settled)
            self.progress.changed()  # once for the batch (`_settle` leaves it)
        self.queue.wake_putters()
        self._threads.collected()
        if self._remote is not None:
            self._remote.collected()

    async def _collect(self) -> None:
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            self._drain()
            if self._closed and self._live_workers == 0 and not self._posted:
                return

    async def _run_async(self, work: WorkItem) -> None:
        task = work.task
        assert isinstance(task, AsyncTask)
        self.progress.started(id(work), work.tc)
        tc = work.tc
        outcome: Outcome[Any]
        if self.interrupter.reason is not None:
            outcome = Outcome(task, OutcomeStatus.CANCELLED, reason="job interrupted")
        else:
            try:
                async with self.limiter(task.lane):
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
                self.progress.finished(id(work), "cancelled", 0, None)
                raise
            except Exception as exc:
                outcome = Outcome(task, OutcomeStatus.FAILED, error=exc, bytes=tc.bytes_done)
            else:
                outcome = Outcome(task, OutcomeStatus.DONE, value=value, bytes=tc.bytes_done)
        self._finish(work, outcome)

    def _finish(self, work: WorkItem, outcome: Outcome[Any]) -> None:
        """Book the outcome's progress and hand it to the dispatcher (which books it in its
        stage), or put the task back for another attempt when its retry policy says so."""
        settled = self._settle(work, outcome)
        self.progress.changed()
        if settled is not None:
            work.deliver(*settled)

    def _finish_group(self, group: list[tuple[WorkItem, Outcome[Any]]]) -> None:
        """`_finish` for the outcomes of one task group: handed to the dispatcher in one
        call when its items share a ``deliver_group`` (they do: one dispatcher queued them),
        else one by one."""
        ended = self._settle_group(group)
        deliver = group[0][0].deliver_group
        if deliver is not None and all(w.deliver_group is deliver for w, _ in group):
            if ended:
                deliver(ended)
            return
        by_tc = {id(w.tc): w for w, _ in group}
        for e in ended:
            by_tc[id(e[2])].deliver(*e)

    def _settle_group(self, group: list[tuple[WorkItem, Outcome[Any]]]) -> list[Ended]:
        """`_settle` for a task group's or run's outcomes: those of first attempts that are
        done (nearly all) are booked in one pass and one progress update, the others one by
        one."""
        ended: list[Ended] = []
        done: list[tuple[int, int, int]] = []  # (in-flight key, bytes, items) of plain ones
        now = time.monotonic()
        observe = TASK_SECONDS.observe
        settle = self._settle
        DONE = OutcomeStatus.DONE
        for work, outcome in group:
            tc = work.tc
            if outcome.status is not DONE or tc.attempt > 1:
                settled = settle(work, outcome)
                if settled is not None:
                    ended.append(settled)
                continue
            if tc.started is not None:
                observe(now - tc.started)
            done.append((id(work), outcome.bytes, work.task.items))
            ended.append((outcome, None, tc))
        self._done += len(done)
        self.progress.finished_done(done)
        return ended

    def _settle(self, work: WorkItem, outcome: Outcome[Any]) -> Ended | None:
        """Book a finished attempt's progress (the caller then calls ``progress.changed()``
        once for its batch); the outcome, its item error and context to hand on, or None
        when the task goes back for another attempt."""
        self._done += 1
        error: ItemError | None = None
        tc = work.tc
        if tc.started is not None:
            TASK_SECONDS.observe(time.monotonic() - tc.started)
        if tc.attempt > 1:
            outcome = dataclasses.replace(outcome, attempts=tc.attempt)
        if outcome.status is OutcomeStatus.FAILED:
            exc = outcome.error
            assert exc is not None
            policy = work.retry
            if policy is not None and policy.should_retry(tc.attempt, exc):
                self.progress.finished(id(work), "retrying", 0, None, bump=False)
                tc.items = None  # a failed attempt's records do not count
                self._nursery.start_soon(self._retry_later, work, policy.delay(tc.attempt))
                return None
            message = describe_error(exc)
            if tc.attempt > 1:
                message += f" (after {tc.attempt} attempts)"
            error = ItemError(
                index=outcome.index,
                label=tc.label,
                error=type(exc).__name__,
                message=message,
                stage=work.stage.name,
                traceback=format_traceback(exc),
            )
            task_logger.debug(
                "job %s: %s failed: %s\n%s",
                self.progress.job_id,
                tc.label,
                message,
                error.traceback,
            )
        # (a StrEnum: the status is its own string, without the enum `value` lookup)
        self.progress.finished(
            id(work), outcome.status, outcome.bytes, error, bump=False, items=work.task.items
        )
        return outcome, error, tc

    async def _retry_later(self, work: WorkItem, delay: float) -> None:
        """Back off, then queue the task again (at once if the job is being interrupted:
        the attempt then ends as cancelled without running)."""
        interrupter = self.interrupter
        deadline = trio.current_time() + delay
        while interrupter.reason is None and trio.current_time() < deadline:  # noqa: ASYNC110
            await trio.sleep(min(0.1, deadline - trio.current_time()))
        old = work.tc
        tc = TaskContext._create(old.index, old.label, interrupter, work.timeout, old.stage)
        tc.attempt = old.attempt + 1
        work.tc = tc
        self.queue.put_nowait(work, force=True)


def format_traceback(exc: BaseException) -> str:
    """``exc``'s traceback as Python prints it (chained causes included), its last
    `TRACEBACK_CHARS` characters when longer (the innermost frames say where it failed)."""
    text = "".join(traceback.format_exception(exc))
    if len(text) > TRACEBACK_CHARS:
        text = "…\n" + text[-TRACEBACK_CHARS:]
    return text
