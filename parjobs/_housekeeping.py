"""A manager's periodic duties: its heartbeat, the leases it holds (a run whose lease was
taken stops), pause/cancel requests other processes sent through the store, background
checkpoints, and noticing that the store file was deleted or replaced."""

from __future__ import annotations

import contextlib

import trio

from ._exceptions import InvalidTransitionError, StoreError
from ._jobstore import StoreListener
from ._manager_core import JobRun
from ._scheduler import JobScheduler
from ._status import JobStatus

#: How often the manager looks for pause/cancel requests from other processes.
REQUEST_POLL = 0.2
#: How often the manager renews its lease.
HEARTBEAT = 2.0
#: How often a running job's progress snapshot is saved for other processes to see.
PROGRESS_SAVE = 1.0


class Housekeeping(JobScheduler):
    """The part of a manager that runs beside its jobs."""

    async def _housekeeping(self) -> None:
        """Heartbeat, pause/cancel requests from other processes, background checkpoints."""
        last_beat = last_progress = trio.current_time()
        while True:
            await trio.sleep(REQUEST_POLL)
            await self._check_store_file()  # raises StoreError once the file is gone
            try:
                last_beat, last_progress = await self._housekeeping_once(last_beat, last_progress)
            except StoreError:
                continue  # the store is busy or full for now: try again on the next tick

    async def _housekeeping_once(
        self, last_beat: float, last_progress: float
    ) -> tuple[float, float]:
        """One round of housekeeping; returns the updated timestamps."""
        if trio.current_time() - last_beat >= HEARTBEAT:
            last_beat = trio.current_time()
            if not await self._db(self.store.heartbeat, self.id):
                # Another process declared this one dead and may run its jobs by now.
                self._lose_all("this process was declared dead by another one using the store")
                await self._db(self.store.register_manager, self.id)
        await self._check_leases()
        save_progress = trio.current_time() - last_progress >= PROGRESS_SAVE
        if save_progress:
            last_progress = trio.current_time()
        for live in list(self._live.values()):
            if live.ctx is not None and not live.rested.is_set():
                await live.ctx.checkpoint(save_progress=save_progress)
        return last_beat, last_progress

    def _holding(self) -> list[JobRun]:
        """The jobs whose lease this manager holds: queued here, starting or running."""
        return [
            live
            for live in self._live.values()
            if not live.rested.is_set() and live.lost is None and not live.releasing
        ]

    async def _check_leases(self) -> None:
        """Stop every job whose lease this manager lost (taken by another process, or this
        manager's registration deleted), and honour pause/cancel requests other processes
        sent through the store for the jobs it holds."""
        if not self._holding():
            return
        registered, held = await self._db(self.store.lease_state, self.id)
        for live in self._holding():  # again: some may have finished meanwhile
            if not registered or live.id not in held:
                self._lose(live, f"job {live.id} was taken over by another process")
                continue
            request = held[live.id]
            if request not in ("pause", "cancel"):
                continue
            if live in self._queue:
                status = JobStatus.CANCELLED if request == "cancel" else JobStatus.PAUSED
                await self._rest_queued(live, status)
                if status is JobStatus.CANCELLED:
                    await self._cleanup_offline(live.info)
            elif live.ctx is not None:
                if request == "pause" and live.status is JobStatus.CANCELLING:
                    continue  # a cancel asked first wins
                status = JobStatus.CANCELLING if request == "cancel" else JobStatus.PAUSING
                with contextlib.suppress(InvalidTransitionError):  # ended meanwhile
                    await self._interrupt(live, request, status)
            elif live.starting:
                self._apply_request(live, request)

    async def _listen(self, listener: StoreListener) -> None:
        """Wake the scheduler and the event stream as soon as the store says a job's status
        changed anywhere (a worker then claims a new job at once). Only a hint: when the
        connection fails, the polls go on alone."""
        while True:
            await trio.lowlevel.wait_readable(listener.fileno())
            try:
                changed = listener.drain()
            except StoreError:
                return
            if changed:
                self._wake.set()
                self._store_changed.set()

    async def _check_store_file(self) -> None:
        """Stop everything if the store file was deleted or replaced: SQLite would go on
        writing into the unlinked file, so nothing the jobs do could be resumed or seen."""
        if self._identity is None or await self._db(self.store.identity) == self._identity:
            return
        reason = (
            f"job store {self.store.path} was deleted or replaced while jobs ran; "
            "they were stopped (their progress could no longer be recorded)"
        )
        self._lose_all(reason)
        for live in list(self._live.values()):
            await live.rested.wait()
        raise StoreError(reason)
