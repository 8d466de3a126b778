"""Admission: which queued job starts next (priority, then FIFO), within the global limit
and its queue's capacity, once its prerequisites completed."""

from __future__ import annotations

import math

import trio

from ._exceptions import InvalidTransitionError, LeaseError, StoreError
from ._manager_core import JobRun
from ._records import JobInfo
from ._runner import JobRunner
from ._status import RESUMED, JobStatus, dependency_state

#: How often prerequisites run by other processes are polled.
DEPENDENCY_POLL = 1.0


class JobScheduler(JobRunner):
    """The part of a manager that queues jobs and starts them."""

    def _enqueue(self, info: JobInfo) -> JobRun:
        previous = self._live.get(info.id)
        live = JobRun(info)
        if previous is not None:
            live.job = previous.job  # keep runtime fields across pause/resume
        self._live[info.id] = live
        self._queue.append(live)
        self._wake.set()
        return live

    def _unqueue(self, live: JobRun) -> None:
        """Take a job queued here (or waiting out a retry's delay) out of the queue as it is
        steered to rest: nothing starts it, nor steers it again, meanwhile."""
        if live in self._queue:
            self._queue.remove(live)
        live.releasing = True

    async def _rest_queued(self, live: JobRun, status: JobStatus) -> None:
        """Rest a job queued here (or waiting out a retry's delay) as ``status``: ``paused``,
        ``interrupted`` (the manager closing) or ``cancelled``. A cancel rests the job
        ``cancelling``, still leased here, while its cleanup runs, and ``cancelled`` only
        after it: whoever waits finds its temporaries gone, and a manager that dies
        meanwhile leaves the cancel pending (its resume finishes it). A request another
        process sent meanwhile is kept (the store's ``keep_cancel``, ``keep_request``): a
        cancel wins over a pause, and stays pending on a job the close rests interrupted;
        a pause rests that job paused. The write waits out a failing store (`_patiently`),
        unless the manager closes: the job then rests interrupted here, the store still
        saying queued here (recovered so)."""
        self._unqueue(live)
        cancel = status is JobStatus.CANCELLED
        fields: dict[str, object] = {} if cancel else {"lease": None, "request": None}
        if live.info.error == RESUMED:  # (its store paused it and it queued itself again:
            fields["error"] = None  # its record no longer says so)
        rested: list[JobInfo] = []

        async def write() -> None:
            info = await self._db(
                self.store.transition,
                live.id,
                JobStatus.CANCELLING if cancel else status,
                holder=self.id,
                keep_cancel=status is JobStatus.PAUSED,
                keep_request=status is JobStatus.INTERRUPTED,
                **fields,
            )
            rested.append(info)

        try:
            written = await self._patiently(live, write)
        except LeaseError as exc:
            live.lost = str(exc)
            written = False
        if not written:
            live.rest(JobStatus.INTERRUPTED)
        elif rested[-1].status is JobStatus.CANCELLING:
            await self._finish_cancel(live)
        else:
            live.rest(rested[-1].status)

    async def _scheduler(self) -> None:
        while True:
            self._wake = trio.Event()
            try:
                waiting_on_others = await self._schedule_once()
            except StoreError:  # the store fails (an outage): look again at the next poll
                waiting_on_others = True
            # Prerequisites run by other processes are polled; ours wake us when they rest.
            # A worker polls the store for jobs to claim (a store's wake-ups come sooner).
            poll = DEPENDENCY_POLL if waiting_on_others or self._claiming else math.inf
            with trio.move_on_after(poll):
                await self._wake.wait()

    async def _schedule_once(self) -> bool:
        """Start every queued job that may start now: highest priority first, FIFO among
        equals, within the global limit and its queue's capacity, once its prerequisites
        completed. Returns True if some job waits for prerequisites."""
        assert self._nursery is not None
        queued = sorted(self._queue, key=lambda j: (-j.priority, j.seq))
        deps = {d for live in queued for d in live.info.after}
        dep_status = await self._db(self.store.statuses, deps) if deps else {}
        waiting = False
        for live in queued:
            if self._running >= self.max_running or self._closing:
                break
            if live not in self._queue:  # paused or cancelled while we looked
                continue
            blocked, failed = dependency_state(live.info.after, dep_status)
            if failed is not None and live.info.dep_policy == "skip":
                self._queue.remove(live)
                live.releasing = True
                error = f"prerequisite job {failed}"
                try:
                    await self._db(
                        self.store.transition,
                        live.id,
                        JobStatus.SKIPPED,
                        holder=self.id,
                        lease=None,
                        error=error,
                    )
                except StoreError:
                    live.releasing = False
                    self._not_started(live)
                    raise
                live.error = error
                live.rest(JobStatus.SKIPPED)
                self._wake.set()  # its own dependents may now be decidable
                continue
            if blocked:
                waiting = True
                continue
            queue = live.info.queue
            if self._running_by_queue.get(queue, 0) >= self.queues.get(queue, 1):
                continue
            self._queue.remove(live)
            live.starting = True
            try:
                info = await self._db(self.store.claim, live.id, self.id)
            except StoreError:
                live.starting = False
                self._not_started(live)
                raise
            except (LeaseError, InvalidTransitionError) as exc:
                stored = await self.get(live.id)
                if stored.status is JobStatus.RUNNING and stored.lease == self.id:
                    # An earlier claim of it landed, its answer lost (PostgreSQL's
                    # connection failing as it committed): that claim was this one's.
                    self._start_run(live, stored)
                    continue
                live.error = str(exc)
                live.rest(stored.status)
                continue
            self._start_run(live, info)
        if self._claiming and not self._closing:
            await self._claim_from_store()
        return waiting

    async def _claimed_unanswered(self) -> JobInfo | None:
        """After a worker's claim failed, a job the store shows running under this
        manager's lease with no run here: that claim's, committed, its answer lost (it
        would rest ``running`` with nobody running it while this manager lives). None if
        there is none, or no claim failed since the last look."""
        if not self._claim_unsure:
            return None
        _, held = await self._db(self.store.lease_state, self.id)
        self._claim_unsure = False
        for job_id in held:
            live = self._live.get(job_id)
            if live is None or live.rested.is_set():
                info = await self.get(job_id)
                if info.status is JobStatus.RUNNING and info.lease == self.id:
                    return info
        return None

    def _not_started(self, live: JobRun) -> None:
        """A queued job whose claim (or skip) the store refused: queued here again, looked at
        once the store works; or, the manager closing, rested interrupted (the store still
        says queued here: the next manager recovers it)."""
        if self._closing:
            live.rest(JobStatus.INTERRUPTED)
        else:
            self._queue.append(live)

    def _start_run(self, live: JobRun, info: JobInfo) -> None:
        """Run a claimed job (honouring a pause or cancel sent while it waited queued)."""
        assert self._nursery is not None
        if info.request in ("pause", "cancel"):
            self._apply_request(live, info.request)
        self._running += 1
        self._running_by_queue[info.queue] = self._running_by_queue.get(info.queue, 0) + 1
        self._nursery.start_soon(self._run, live, info)

    async def _claim_from_store(self) -> None:
        """A worker's share: claim jobs nobody holds while this manager has room (the
        store counts every manager's running jobs against the queues' capacities)."""
        while self._running < self.max_running and self._claims_open and not self._closing:
            async with self._claim_lock:  # closing waits for a claim under way
                try:
                    info = await self._claimed_unanswered()
                    if info is None:
                        info = await self._db(self.store.claim_next, self.id, self.queues)
                except StoreError:
                    # Busy, or the server restarting: the next poll tries again. The claim
                    # may have been committed all the same (PostgreSQL's connection failing
                    # as it committed): the next poll looks for it first.
                    self._claim_unsure = True
                    return
                if info is None:
                    if not any(not live.rested.is_set() for live in self._live.values()):
                        self._idle.set()
                    return
                live = JobRun(info)
                live.starting = True
                self._live[info.id] = live
                self._start_run(live, info)
