"""Admission: which queued job starts next (priority, then FIFO), within the global limit
and its queue's capacity, once its prerequisites completed."""

from __future__ import annotations

import math

import trio

from ._exceptions import InvalidTransitionError, LeaseError
from ._manager_core import JobRun
from ._records import JobInfo
from ._runner import JobRunner
from ._status import JobStatus

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

    async def _rest_queued(self, live: JobRun, status: JobStatus) -> None:
        if live in self._queue:
            self._queue.remove(live)
        live.releasing = True
        try:
            await self._db(
                self.store.transition, live.id, status, holder=self.id, lease=None, request=None
            )
        except LeaseError as exc:
            live.lost = str(exc)
            status = JobStatus.INTERRUPTED
        live.rest(status)

    async def _scheduler(self) -> None:
        while True:
            self._wake = trio.Event()
            waiting_on_others = await self._schedule_once()
            # Prerequisites run by other processes are polled; ours wake us when they rest.
            with trio.move_on_after(DEPENDENCY_POLL if waiting_on_others else math.inf):
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
            blocked, failed = _dependency_state(live.info, dep_status)
            if failed is not None and live.info.dep_policy == "skip":
                self._queue.remove(live)
                live.releasing = True
                live.error = f"prerequisite job {failed}"
                await self._db(
                    self.store.transition,
                    live.id,
                    JobStatus.SKIPPED,
                    holder=self.id,
                    lease=None,
                    error=live.error,
                )
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
            except (LeaseError, InvalidTransitionError) as exc:
                live.error = str(exc)
                stored = await self.get(live.id)
                live.rest(stored.status)
                continue
            if info.request in ("pause", "cancel"):  # sent while it waited in the queue
                self._apply_request(live, info.request)
            self._running += 1
            self._running_by_queue[queue] = self._running_by_queue.get(queue, 0) + 1
            self._nursery.start_soon(self._run, live, info)
        return waiting


def _dependency_state(info: JobInfo, statuses: dict[str, JobStatus]) -> tuple[bool, str | None]:
    """(still blocked, first failed prerequisite description) for a queued job."""
    blocked = False
    for dep in info.after:
        status = statuses.get(dep)
        if status is None:
            return False, f"{dep} no longer exists"
        if status in _DEP_FAILED:
            return False, f"{dep} is {status.value}"
        if status not in (JobStatus.COMPLETED, JobStatus.COMPLETED_WITH_ERRORS):
            blocked = True
    return blocked, None


_DEP_FAILED = frozenset(
    {JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.SKIPPED, JobStatus.TIMED_OUT}
)
