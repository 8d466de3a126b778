"""The executor seam: where the worker pool runs its sync tasks, and the local executor that
runs them on worker threads.

A `WorkerPool` owns the queue, the trio workers, outcome collection and retries; when one
of its workers takes a sync task off the queue, it hands that `WorkItem` to the `Executor`
of the task's lane and awaits it. Today every lane uses `ThreadExecutor`. Another executor
(a Dask cluster lane, issue #17) is a class with the same two methods, given to the pool for
its lane; jobs do not change, only a task's ``lane`` says where it runs.

How a cluster executor plugs in
-------------------------------
It is built by the pool with a `PoolPort` (``executors={"cluster": DaskExecutor}``) and gets,
per ``run(first)`` call, one `WorkItem`: ``first.task`` (must pickle), ``first.tc`` (the local
`TaskContext`: index, label, attempt, deadline), ``first.timeout``. It may take more of its
lane's work with ``port.queue.take(lane)`` / ``take_group``. For each item it takes it must:

- call ``port.progress.started(id(item), item.tc)`` when the item starts running;
- make the task see a `TaskContext` whose ``check()`` raises once ``port.interrupter.reason``
  is set (a remote flag it sets when the local one changes, e.g. a Dask ``Variable`` per job
  polled by the remote context) and whose ``add_bytes`` reaches ``item.tc.bytes_done`` here
  (periodic updates copied into the local counter: the progress tracker reads that counter);
- capture how the task ended as an `Outcome` (what ``_run_one`` does, run remotely: values
  and errors must pickle) and hand it over with ``port.post(item, outcome, urgent)`` from any
  thread; the pool's collector books it, retries it or delivers it;
- not return from ``run`` while an item it took is neither posted nor given back: on trio
  cancellation, mark each such item ``port.progress.finished(id(item), "cancelled", 0, None)``
  (as `ThreadExecutor` does) and let the cancellation through.

``port.limiter(lane)`` bounds how many calls run at once (a `trio.CapacityLimiter`). The
pool calls ``collected()`` from trio after each batch of posted outcomes it booked: an
executor that adapts (like the local one's throttle) looks at its measurements there.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any, Protocol

import trio

from ._exceptions import Interrupted, Skip
from ._progress import ProgressTracker
from ._task import RUN_ALONE, Interrupter, Outcome, OutcomeStatus
from ._throttle import ThrottleStatistics, TinyTaskThrottle
from ._workqueue import HEAVY_BYTES, WorkItem, WorkQueue, groupable

#: At most this many tasks run in one worker-thread call (1: one thread hop per task).
BATCH_MAX_ITEMS = 256
#: A thread call takes no new task after running this long, so lane tokens rotate among jobs.
BATCH_MAX_SECONDS = 0.05
#: A group is sized to take about this long (seconds), judged by the time per task of the
#: groups before it: many tiny tasks per call, but one at a time when tasks wait (files on a
#: slow network share), so that their waits still overlap across workers.
GROUP_SECONDS = 0.02


class PoolPort(Protocol):
    """What a `WorkerPool` offers the executors it runs tasks with."""

    @property
    def queue(self) -> WorkQueue: ...

    @property
    def interrupter(self) -> Interrupter: ...

    @property
    def progress(self) -> ProgressTracker: ...

    def post(self, work: WorkItem, outcome: Outcome[Any], urgent: bool) -> None:
        """Hand a finished item's outcome to the pool (from any thread); ``urgent`` wakes
        the pool's collector now rather than with the next batch."""
        ...

    def limiter(self, lane: str) -> trio.CapacityLimiter: ...


class Executor(Protocol):
    """Runs a pool's sync tasks (see the module docstring for the full contract)."""

    async def run(self, first: WorkItem) -> None:
        """Run ``first`` (and any more queued work it takes), posting every outcome."""
        ...

    def collected(self) -> None:
        """From trio, after the pool booked a batch of posted outcomes."""
        ...


def _run_one(work: WorkItem, interrupter: Interrupter) -> Outcome[Any]:
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


def _run_group(
    group: list[WorkItem], interrupter: Interrupter
) -> list[tuple[WorkItem, Outcome[Any]]]:
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


class ThreadExecutor:
    """The local executor: runs sync tasks in worker threads (``trio.to_thread``), streaming.

    A call runs its first task, posts the outcome and takes the next task of its lane straight
    from the queue (under the queue's lock), for up to `BATCH_MAX_ITEMS` tasks or
    `BATCH_MAX_SECONDS`. It never waits for the event loop between tasks, so while trio books
    outcomes and refills the queue the threads keep working; and since each thread takes one
    task at a time, slow tasks spread over every worker instead of piling up in one. While
    tasks are tiny, a `TinyTaskThrottle` keeps them on few threads. `groupable` tasks are taken
    several at a time and handed to their class's `Task.run_group`, in calls sized to about
    `GROUP_SECONDS` of measured work.
    """

    def __init__(self, port: PoolPort, workers: int, cpus: int | None = None) -> None:
        self._port = port
        self._throttle = TinyTaskThrottle(workers, cpus or os.cpu_count() or 2)
        self._group_task_seconds = GROUP_SECONDS  # per grouped task: start with single tasks
        self._streaming = 0  # thread calls started by a light task, running now
        self._gate = trio.lowlevel.ParkingLot()  # calls waiting for the throttle

    def statistics(self) -> ThrottleStatistics:
        t = self._throttle
        return ThrottleStatistics(
            limited=t.limited,
            cap=t.cap,
            group_cap=t.group_cap,
            streaming=self._streaming,
            group_task_seconds=self._group_task_seconds,
        )

    def collected(self) -> None:
        if self._throttle.review(time.monotonic()):
            self._gate.unpark_all()

    async def run(self, first: WorkItem) -> None:
        throttle = self._throttle
        light = first.task.weight < HEAVY_BYTES  # a heavy task is never tiny
        cap = throttle.group_cap if groupable(first.task) else throttle.cap
        while light and throttle.limited and self._streaming >= cap:
            await self._gate.park()
        await self._run_stream(first, light, cap)

    async def _run_stream(self, first: WorkItem, light: bool, cap: int) -> None:
        """One thread call: run ``first``, then keep taking queued tasks of its lane. A call
        started by a heavy task does not count against the throttle's cap, so while the
        throttle limits threads it runs that task only."""
        port = self._port
        interrupter, tracker = port.interrupter, port.progress
        queue, post, lane = port.queue, port.post, first.task.lane
        current: list[WorkItem] = [first]
        throttle = self._throttle
        no_earlier: tuple[tuple[WorkItem, Outcome[Any]], ...] = ()

        def run_all() -> None:
            monotonic = time.monotonic
            started = monotonic()
            end = started + BATCH_MAX_SECONDS
            work, left = first, BATCH_MAX_ITEMS
            while True:
                if groupable(work.task):
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
                    earlier: Sequence[tuple[WorkItem, Outcome[Any]]] = done[:-1]
                    work, outcome = done[-1]  # posted below, like a single task's
                else:
                    tracker.started(id(work), work.tc)
                    outcome = _run_one(work, interrupter)
                    now = monotonic()
                    earlier = no_earlier
                count = len(earlier) + 1
                if light and throttle.limited and self._streaming <= cap:
                    throttle.observe(now - started, count)
                started = now
                current.clear()
                for finished, done_outcome in earlier:
                    post(finished, done_outcome, False)
                left -= count
                nxt = None
                # Past the throttle's limit (a heavy task's call, or the limit was just set
                # again), the thread ends its call rather than stream tiny tasks.
                over = throttle.limited and (not light or self._streaming > cap)
                if left > 0 and now < end and not over:
                    try:
                        trio.from_thread.check_cancelled()
                    except trio.Cancelled:
                        pass
                    else:
                        nxt = queue.take(lane)
                # Wake trio now if the call ends or the next task may take long; else let
                # posts pile up a little.
                post(work, outcome, nxt is None or nxt.task.weight >= HEAVY_BYTES)
                if nxt is None:
                    return  # trio drains what is left when the call returns
                current.append(nxt)
                work = nxt

        if light:
            self._streaming += 1
        try:
            await trio.to_thread.run_sync(run_all, limiter=port.limiter(lane))
        except BaseException:
            for work in current:  # taken, never run (the thread failed): not finished
                tracker.finished(id(work), "cancelled", 0, None)
            raise
        finally:
            if light:
                self._streaming -= 1
                self._gate.unpark()
