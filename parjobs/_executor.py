"""The executor seam: where the worker pool runs its sync tasks, and the local executor that
runs them on worker threads.

A `WorkerPool` owns the queue, the trio workers, outcome collection and retries; when one
of its workers takes a sync task off the queue, it hands that `WorkItem` to an `Executor`
and awaits it: `ThreadExecutor` (worker threads, bounded per lane). The cluster lane
(`parjobs._cluster`, issue #17) is a class with the same two methods, given to the pool as
``remote``: it runs every task whose class sets ``cluster``; jobs do not change.

How a cluster executor plugs in
-------------------------------
It is built by the pool with a `PoolPort` (``remote=``) and gets,
per ``run(first)`` call, one `WorkItem`: ``first.task`` (must pickle), ``first.tc`` (the local
`TaskContext`: index, label, attempt, deadline), ``first.timeout``. It may take more of its
lane's work with ``port.queue.take(lane)`` / ``take_group``. For each item it takes it must:

- call ``port.progress.started(id(item), item.tc)`` when the item starts running (items one
  call runs one after the other: ``port.progress.started_group([(id(item), item.tc), ...])``,
  so they count once in flight), and ``item.tc.start()`` (its timeout counts from there);
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

import logging
import os
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import trio

from ._exceptions import Interrupted, Skip, TaskTimeoutError
from ._progress import ProgressTracker
from ._task import RUN_ALONE, Bundle, Interrupter, Outcome, OutcomeStatus
from ._throttle import TinyTaskThrottle
from ._workqueue import HEAVY_BYTES, WorkItem, WorkQueue, groupable

if TYPE_CHECKING:  # built only when asked for (start-up: see parjobs._statistics)
    from ._statistics import ThrottleStatistics

#: At most this many tasks run in one worker-thread call (1: one thread hop per task).
BATCH_MAX_ITEMS = 256
#: A thread call takes no new task after running this long, so lane tokens rotate among jobs.
BATCH_MAX_SECONDS = 0.05
#: A group is sized to take about this long (seconds), judged by the time per task of the
#: groups before it: many tiny tasks per call, but one at a time when tasks wait (files on a
#: slow network share), so that their waits still overlap across workers.
GROUP_SECONDS = 0.02
#: Plain light tasks are taken off the queue in runs (one lock, one hand-over to trio and
#: one booking per run) sized to take about this long by the time per task measured so far,
#: starting with single tasks: slow ones (a 20 ms open on a network share) still go one at a
#: time and spread over the workers.
RUN_SECONDS = 0.002
#: ... and of at most this many tasks.
RUN_MAX_ITEMS = 64
#: A streaming call whose current task (or group) has run this long is *stalled* (a slow or
#: hung task: a ``stat`` on a dead NFS mount): it stops counting against the throttle's cap,
#: so the other workers go on meanwhile. Well above a group call (`GROUP_SECONDS`) and a GIL
#: switch, well below anything a person waits for.
STALL_SECONDS = 0.1
#: The watchdog looks at least this often for a task past its timeout (seconds).
WATCHDOG_TICK = 0.05

logger = logging.getLogger("parjobs")


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

    def post_group(self, group: list[tuple[WorkItem, Outcome[Any]]], urgent: bool) -> None:
        """`post` for the outcomes of one task group (`Task.run_group`), handed over, booked
        and given to the job as one unit."""
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
    tc.start()
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
    for work in group:
        work.tc.start()
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


#: `_Call.run` when no run is running.
_NO_RUN: list[WorkItem] = []


class _Call:
    """One thread call of `ThreadExecutor` (a stream of tasks), shared by its thread and trio.

    ``lock`` orders the thread's posts and takes against trio giving up on the call: once
    ``abandoned``, the thread posts nothing and takes nothing more, and whatever it had taken
    (``current``) is trio's to settle.
    """

    __slots__ = (
        "abandoned",
        "current",
        "deadline",
        "finished",
        "light",
        "lock",
        "returned",
        "run",
        "run_end",
        "run_started",
        "running",
        "scope",
        "seen_at",
        "seen_seq",
        "seq",
    )

    def __init__(self, first: WorkItem, light: bool, now: float) -> None:
        self.lock = threading.Lock()
        self.current: list[WorkItem] = [first]  # taken, outcome not posted
        self.abandoned = False
        self.running = False  # the thread has entered the call
        self.returned = False  # the thread has left the call
        self.deadline: float | None = None  # the earliest deadline of what runs now
        # The run (`ThreadExecutor._run_run`) running now: its members, how many of them
        # have started, where it ends (trio lowers it to give the rest back: `_reclaim`),
        # and the outcomes of those that ended, not posted yet.
        self.run: list[WorkItem] = _NO_RUN
        self.run_started = 0
        self.run_end = 0
        self.finished: list[tuple[WorkItem, Outcome[Any]]] = []
        self.light = light
        self.seq = 0  # tasks (or groups) started: bumped by the thread
        self.seen_seq = 0
        self.seen_at = now  # trio time at which ``seq`` was last seen changing
        self.scope = trio.CancelScope()

    def given_up(self) -> bool:
        """Whether trio abandoned the call (read under ``lock``)."""
        return self.abandoned


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

    Hung I/O stalls nothing else: a call whose current task has run `STALL_SECONDS` no longer
    counts against the throttle (the other workers start their own calls), and a watchdog
    (a trio task of the pool's nursery while calls run) gives up on a call whose task is past
    its timeout: the task fails "timed out", the call's other taken tasks go back to the
    queue, and the thread is abandoned (``abandon_on_cancel``): never waited for, never given
    work again, counted in `statistics` and logged. It keeps its lane's thread token until
    it returns, if ever. A job stopped outright (shutdown after its grace) abandons its
    threads the same way, so closing never waits for a thread stuck in a system call.
    """

    def __init__(
        self,
        port: PoolPort,
        workers: int,
        cpus: int | None = None,
        *,
        nursery: trio.Nursery | None = None,
    ) -> None:
        self._port = port
        self._throttle = TinyTaskThrottle(workers, cpus or os.cpu_count() or 2)
        self._group_task_seconds = GROUP_SECONDS  # per grouped task: start with single tasks
        self._task_seconds = RUN_SECONDS  # per plain task, the same
        self._streaming = 0  # thread calls started by a light task, running now
        self._gate = trio.lowlevel.ParkingLot()  # calls waiting for the throttle
        self._nursery = nursery  # where the watchdog runs (None: no watchdog)
        self._calls: set[_Call] = set()  # running now
        self._stalled = 0  # light calls seen stalled at the last look (read by threads)
        self._abandoned: list[_Call] = []  # given up on, thread maybe still running
        self._abandoned_total = 0
        self._watching = False
        self._calls_gone = trio.Event()  # wakes the watchdog when the last call ends

    def statistics(self) -> ThrottleStatistics:
        from ._statistics import ThrottleStatistics

        t = self._throttle
        self._abandoned = [c for c in self._abandoned if not c.returned]
        return ThrottleStatistics(
            limited=t.limited,
            cap=t.cap,
            group_cap=t.group_cap,
            streaming=self._streaming,
            group_task_seconds=self._group_task_seconds,
            stalled=self._stalled,
            abandoned=self._abandoned_total,
            stuck=len(self._abandoned),
        )

    def collected(self) -> None:
        self._look_for_stalls()
        if self._throttle.review(time.monotonic()):
            self._gate.unpark_all()

    def _look_for_stalls(self) -> int:
        """Count the light calls that stream now and are not stalled (and keep the stalled
        count for the threads' own "over the cap?" test); a stalled call's run gives back
        the members it has not started."""
        now = trio.current_time()
        busy = stalled = 0
        for call in self._calls:
            if not call.light:
                continue
            if call.seq != call.seen_seq:
                call.seen_seq, call.seen_at = call.seq, now
            if now - call.seen_at < STALL_SECONDS:
                busy += 1
            else:
                stalled += 1
                if call.run is not _NO_RUN:
                    self._reclaim(call)
        self._stalled = stalled
        return busy

    async def run(self, first: WorkItem) -> None:
        throttle = self._throttle
        light = first.task.weight < HEAVY_BYTES  # a heavy task is never tiny
        # (a bundle, like a group, spends its time in C with the GIL released)
        grouped = groupable(first.task) or isinstance(first.task, Bundle)
        cap = throttle.group_cap if grouped else throttle.cap
        while light and throttle.limited and self._look_for_stalls() >= cap:
            # Look again now and then: a stalled call frees no slot by returning.
            with trio.move_on_after(STALL_SECONDS):
                await self._gate.park()
        await self._run_stream(first, light, cap)

    async def _run_stream(self, first: WorkItem, light: bool, cap: int) -> None:
        """One thread call: run ``first``, then keep taking queued tasks of its lane. A call
        started by a heavy task does not count against the throttle's cap, so while the
        throttle limits threads it runs that task only."""
        port = self._port
        interrupter, tracker = port.interrupter, port.progress
        queue, post, post_group, lane = port.queue, port.post, port.post_group, first.task.lane
        call = _Call(first, light, trio.current_time())
        current = call.current
        throttle = self._throttle

        def run_all() -> None:
            monotonic = time.monotonic
            started = monotonic()
            end = started + BATCH_MAX_SECONDS
            work, left = first, BATCH_MAX_ITEMS
            with call.lock:
                if call.abandoned:  # given up on before this thread got going
                    return
                call.running = True
            try:
                while True:
                    call.seq += 1
                    if groupable(work.task):
                        fit = int(GROUP_SECONDS / self._group_task_seconds)
                        with call.lock:
                            if call.given_up():
                                return
                            group = queue.take_group(work, max(1, min(work.task.group_size, fit)))
                            current.extend(group[1:])
                        # One C call copies them one after the other: one in flight.
                        tracker.started_group([(id(member), member.tc) for member in group])
                        for member in group:
                            member.tc.start()
                        call.deadline = _earliest(group)
                        call_start = monotonic()
                        done = _run_group(group, interrupter)
                        now = monotonic()
                        # (threads race on this average: that only blurs it)
                        per_task = max(1e-6, (now - call_start) / len(group))
                        self._group_task_seconds = (self._group_task_seconds + per_task) / 2
                        group_done: list[tuple[WorkItem, Outcome[Any]]] | None = done
                        work, outcome = done[-1]
                    else:
                        size = min(left, int(RUN_SECONDS / self._task_seconds)) if light else 1
                        bundle = isinstance(work.task, Bundle)
                        if bundle:
                            size = 1  # ~`BUNDLE_SECONDS` of work already, measured apart
                        if size > 1 and len(queue):
                            with call.lock:
                                if call.given_up():
                                    return
                                run = queue.take_run(work, min(size, RUN_MAX_ITEMS))
                                current.extend(run[1:])
                                call.run, call.run_started, call.run_end = run, 0, len(run)
                        else:
                            run = [work]
                        call_start = monotonic()
                        if len(run) == 1:
                            group_done = None
                            tracker.started(id(work), work.tc)
                            work.tc.start()
                            call.deadline = work.tc.deadline
                            outcome = _run_one(work, interrupter)
                        else:
                            group_done = self._run_run(call, run, interrupter)
                            if group_done is None:
                                return  # trio settled what this call had taken
                            work, outcome = group_done[-1]
                        now = monotonic()
                        ran = 1 if group_done is None else len(group_done)
                        if not bundle:
                            per_task = max(1e-7, (now - call_start) / ran)
                            self._task_seconds = (self._task_seconds + per_task) / 2
                    call.deadline = None
                    if group_done is None:  # (a bundle counts as the tasks it ran)
                        count = max(1, work.task.ran) if isinstance(work.task, Bundle) else 1
                    else:
                        count = len(group_done)
                    if light and throttle.limited and self._streaming <= cap:
                        throttle.observe(now - started, count)
                    started = now
                    left -= count
                    # Past the throttle's limit (a heavy task's call, or the limit was just
                    # set again), the thread ends its call rather than stream tiny tasks.
                    over = throttle.limited and (not light or self._streaming - self._stalled > cap)
                    # (No trio.from_thread.check_cancelled() here: trio cancelling the call
                    # abandons it, and the next lock below sees that.)
                    more = left > 0 and now < end and not over
                    with call.lock:
                        if call.given_up():
                            return  # trio settled what this call had taken
                        current.clear()
                        nxt = queue.take(lane) if more else None
                        # Wake trio now if the call ends or the next task may take long;
                        # else let posts pile up a little.
                        urgent = nxt is None or nxt.task.weight >= HEAVY_BYTES
                        if group_done is None or len(group_done) == 1:
                            post(work, outcome, urgent)
                        else:
                            post_group(group_done, urgent)  # one unit from here to the job
                            if call.finished:
                                call.finished = []  # posted: nothing for the watchdog
                        if nxt is None:
                            return  # trio drains what is left when the call returns
                        current.append(nxt)
                    work = nxt
            finally:
                call.returned = True

        if light:
            self._streaming += 1
        self._calls.add(call)
        self._watch()
        try:
            with call.scope:
                await trio.to_thread.run_sync(
                    run_all, limiter=port.limiter(lane), abandon_on_cancel=True
                )
        except BaseException:  # cancelled from outside (the job stopped): abandon the thread
            if self._abandon(call):
                logger.warning(
                    "job %s: a worker thread did not stop in time and was abandoned (running %s)",
                    port_name(port),
                    ", ".join(w.tc.label for w in current) or "nothing",
                )
            for work in current:  # taken, never finished (the call is trio's now)
                tracker.finished(id(work), "cancelled", 0, None)
            raise
        finally:
            self._calls.discard(call)
            if not self._calls:
                self._calls_gone.set()  # the watchdog ends now, not a tick later
            if light:
                self._streaming -= 1
                self._gate.unpark()

    def _run_run(
        self, call: _Call, run: list[WorkItem], interrupter: Interrupter
    ) -> list[tuple[WorkItem, Outcome[Any]]] | None:
        """Run a run of plain tasks (`WorkQueue.take_run`) one after the other, in the
        calling worker thread; their outcomes, posted together afterwards as one unit (as a
        group's), or None when trio gave up on the call meanwhile.

        Each member starts its own timeout clock as it starts, and is marked started under
        the call's lock, its outcome kept in ``call.finished``: so a watchdog giving up on
        the call posts the finished ones and runs the rest again, never a finished one, and
        a member that hangs (`STALL_SECONDS`) has the outcomes before it handed over and
        the members after it given back to the queue (`_reclaim`), for other threads: one
        hung task still holds back no other."""
        self._port.progress.started_group([(id(member), member.tc) for member in run])
        done: list[tuple[WorkItem, Outcome[Any]]] = []
        call.finished = done
        member: WorkItem | None = None
        outcome: Outcome[Any] | None = None
        i = 0
        while True:
            with call.lock:
                if call.given_up():
                    return None
                if member is not None and outcome is not None:
                    done.append((member, outcome))
                if i >= call.run_end:  # the end, or the rest was given back
                    call.run = _NO_RUN
                    return done
                call.run_started = i + 1
            member = run[i]
            call.seq += 1  # a stall is one member running long
            tc = member.tc
            tc.start()
            call.deadline = tc.deadline
            outcome = _run_one(member, interrupter)
            i += 1

    def _reclaim(self, call: _Call) -> None:
        """A member of ``call``'s run has run `STALL_SECONDS` (hung I/O, say): hand over the
        outcomes of the members that ended before it, and give those it has not started back
        to the queue, for other threads."""
        with call.lock:
            if call.abandoned or call.returned or call.run is _NO_RUN:
                return
            keep = max(call.run_started, 1)
            rest = call.run[keep : call.run_end]
            call.run_end = min(call.run_end, keep)
            ended = call.finished[:]
            call.finished.clear()  # (the thread's list: it posts only what comes next)
            if not rest and not ended:
                return
            gone = {id(work) for work in rest} | {id(work) for work, _ in ended}
            call.current[:] = [work for work in call.current if id(work) not in gone]
        port = self._port
        if ended:
            port.post_group(ended, True)
        for work in rest:
            port.progress.finished(id(work), "retrying", 0, None)
            port.queue.put_nowait(work, force=True)

    def _abandon(self, call: _Call) -> bool:
        """Give up on ``call`` (trio side): from now on its thread posts and takes nothing.
        True if a thread is left running (counted); False if it had not started or had
        already left the call."""
        with call.lock:
            if call.returned or call.abandoned:
                return False
            call.abandoned = True
            if not call.running:
                return False
        self._abandoned.append(call)
        self._abandoned_total += 1
        return True

    # -- the watchdog --------------------------------------------------------------------

    def _watch(self) -> None:
        if not self._watching and self._nursery is not None:
            self._watching = True
            self._nursery.start_soon(self._watchdog, name="parjobs-watchdog")

    async def _watchdog(self) -> None:
        """While calls run: give up on each call whose task is past its timeout, and take
        back the members a stalled run has not started."""
        try:
            while self._calls:
                self._look_for_stalls()
                now = time.monotonic()
                wake = now + WATCHDOG_TICK
                for call in list(self._calls):
                    deadline = call.deadline
                    if deadline is None:
                        continue
                    if now >= deadline:
                        deadline = _moved_deadline(call, now)
                        if deadline is None or now >= deadline:
                            self._time_out(call)
                            continue
                        call.deadline = deadline
                    wake = min(wake, deadline)
                if self._calls_gone.is_set():
                    self._calls_gone = trio.Event()
                with trio.move_on_after(max(0.0, wake - now)):
                    await self._calls_gone.wait()
        finally:
            self._watching = False

    def _time_out(self, call: _Call) -> None:
        """A task of ``call`` is past its timeout: fail it (and any other of the call's
        tasks past theirs), give the call's other taken tasks back to the queue, and let
        the thread go."""
        if not self._abandon(call):
            return
        port = self._port
        now = time.monotonic()
        stuck = []
        finished = {id(work): outcome for work, outcome in call.finished}
        for work in call.current:
            tc = work.tc
            ended = finished.get(id(work))
            if ended is not None:  # ran to its end in a run: as it ended
                port.post(work, ended, True)
            elif tc.deadline is not None and now >= tc.deadline:
                stuck.append(tc.label)
                error = TaskTimeoutError(
                    f"{tc.label}: timed out after {tc.timeout:g} s and did not stop "
                    "(stuck in a system call?); its worker thread was abandoned"
                )
                outcome: Outcome[Any] = Outcome(
                    work.task, OutcomeStatus.FAILED, error=error, bytes=tc.bytes_done
                )
                port.post(work, outcome, True)
            else:  # a group or run member that had not timed out: it runs again elsewhere
                port.progress.finished(id(work), "retrying", 0, None)
                port.queue.put_nowait(work, force=True)
        call.current.clear()
        logger.warning(
            "job %s: %s timed out and did not stop; its worker thread was abandoned (%d so far)",
            port_name(port),
            ", ".join(stuck),
            self._abandoned_total,
        )
        call.scope.cancel()


def _moved_deadline(call: _Call, now: float) -> float | None:
    """``call``'s deadline read again from its running tasks (``call.deadline`` is the one
    they had when they started): a task that waited off its clock (`TaskContext.off_clock`)
    moved its own, and one waiting now is looked at again in `WATCHDOG_TICK`. None when no
    running task has a deadline."""
    with call.lock:
        ended = {id(work) for work, _ in call.finished}
        contexts = [work.tc for work in call.current if id(work) not in ended]
    deadlines = [
        now + WATCHDOG_TICK if tc.off_since is not None else tc.deadline
        for tc in contexts
        if tc.deadline is not None
    ]
    return min(deadlines) if deadlines else None


def _earliest(group: Sequence[WorkItem]) -> float | None:
    """The earliest deadline of ``group`` (None: no member has a timeout)."""
    deadlines = [w.tc.deadline for w in group if w.tc.deadline is not None]
    return min(deadlines) if deadlines else None


def port_name(port: PoolPort) -> str:
    """A pool's name for log lines (its job id), if it has one."""
    return str(getattr(port, "name", "?"))
