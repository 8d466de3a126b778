"""A manager's periodic duties: its heartbeat, the leases it holds (a run whose lease was
taken stops), pause/cancel requests other processes sent through the store, background
checkpoints, resuming the jobs a failing store paused once it takes writes again, and
noticing that the store file was deleted or replaced."""

from __future__ import annotations

import contextlib
import threading

import trio

from ._exceptions import InvalidTransitionError, JobNotFoundError, LeaseError, StoreError
from ._jobstore import JobStore, StoreListener
from ._manager_core import JobRun
from ._scheduler import JobScheduler
from ._status import RESUMED, JobStatus

#: How often the manager looks for pause/cancel requests from other processes.
REQUEST_POLL = 0.2
#: How often the manager renews its lease.
HEARTBEAT = 2.0
#: How often a running job's progress snapshot is saved for other processes to see.
PROGRESS_SAVE = 1.0
#: A job its failing store paused is resumed this long after its pause (seconds), twice as
#: long after each further store pause of it here, and each failed attempt, up to
#: `HEAL_MAX`: the attempt is itself the test that the store takes writes again.
HEAL_AFTER = 1.0
HEAL_MAX = 60.0
#: A lost wake-up connection (PostgreSQL's LISTEN) is opened again this long after it
#: failed (seconds), then twice as long after each failed attempt, up to `LISTEN_RETRY_MAX`.
LISTEN_RETRY = 0.5
LISTEN_RETRY_MAX = 30.0
#: A wake-up connection that said nothing for `LISTEN_CHECK` seconds is asked for an answer,
#: and replaced when none comes within `LISTEN_ANSWER` (seconds): a dead one is replaced
#: within 40 s of going silent.
LISTEN_CHECK = 30.0
LISTEN_ANSWER = 10.0


class Housekeeping(JobScheduler):
    """The part of a manager that runs beside its jobs."""

    async def _housekeeping(self) -> None:
        """Heartbeat, pause/cancel requests from other processes, background checkpoints."""
        last = {"beat": trio.current_time(), "progress": trio.current_time()}
        while True:
            await trio.sleep(REQUEST_POLL)
            await self._check_store_file()  # raises StoreError once the file is gone
            try:
                await self._housekeeping_once(last)
            except StoreError:
                continue  # the store is busy or full for now: try again on the next tick

    async def _housekeeping_once(self, last: dict[str, float]) -> None:
        """One round of housekeeping; ``last``: when the last heartbeat and progress save
        began, updated before each (one that fails waits its turn too: a store that takes
        no writes is not asked every round, each ask waiting its busy timeout)."""
        if trio.current_time() - last["beat"] >= HEARTBEAT:
            last["beat"] = trio.current_time()
            if not await self._db(self.store.heartbeat, self.id):
                # Another process declared this one dead and may run its jobs by now.
                self._lose_all("this process was declared dead by another one using the store")
                await self._db(self.store.register_manager, self.id)
        await self._check_leases()
        save_progress = trio.current_time() - last["progress"] >= PROGRESS_SAVE
        if save_progress:
            last["progress"] = trio.current_time()
        for live in list(self._live.values()):
            if live.ctx is not None and not live.rested.is_set() and not live.waiting:
                await live.ctx.checkpoint(save_progress=save_progress)

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
            self._steered(live.id)  # a person's request, through the store
            if live in self._queue or live.requeued:  # (or waiting out a retry's delay)
                status = JobStatus.CANCELLED if request == "cancel" else JobStatus.PAUSED
                self._unqueue(live)  # now: steered once (its cleanup may take a while)
                assert self._nursery is not None
                self._nursery.start_soon(self._rest_queued, live, status)
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
        connection fails (a database restart, its session ended), the polls go on alone
        while a new one is opened, `LISTEN_RETRY` later, then twice as long each time it
        fails (`LISTEN_RETRY_MAX` at most); once listening again the manager looks at the
        store at once, since changes went by unheard meanwhile."""
        while True:
            await self._hear(listener)
            self._listener = None  # (closing the manager closes the one it finds here)
            listener.close()
            reopened = await self._relisten()
            if reopened is None:
                return
            listener = self._listener = reopened
            self._wake.set()
            self._store_changed.set()

    async def _hear(self, listener: StoreListener) -> None:
        """Pass the listener's wake-ups on until its connection fails, or is found silent:
        after `LISTEN_CHECK` seconds without a word from the far end it is asked for an
        answer (`StoreListener.ping`), and given up if none comes within `LISTEN_ANSWER`
        (a server gone without closing the connection: a network black hole, a host
        powered off; TCP keepalives may find it first). Any word from it will do."""
        asked = False
        while True:
            with trio.move_on_after(LISTEN_ANSWER if asked else LISTEN_CHECK) as quiet:
                await trio.lowlevel.wait_readable(listener.fileno())
            try:
                if quiet.cancelled_caught:
                    if asked:
                        return  # silent: dead, though its connection is still open
                    asked = listener.ping()
                    continue
                changed = listener.drain()
            except StoreError:
                return
            asked = False
            if changed:
                self._wake.set()
                self._store_changed.set()

    async def _relisten(self) -> StoreListener | None:
        """A new listener once the store takes a connection again (with a backoff), or None
        if the store no longer sends wake-ups. Its connection is made in a thread that a
        closing manager does not wait for (`_open_listener`)."""
        delay = LISTEN_RETRY
        while True:
            await trio.sleep(delay)
            delay = min(2 * delay, LISTEN_RETRY_MAX)
            with contextlib.suppress(StoreError):
                return await _open_listener(self.store)

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

    async def _heal(self, job_id: str) -> None:
        """Resume a job its failing store paused (recorded paused with `STORE_PAUSED` as its
        error), after a backoff (`HEAL_AFTER`, doubled for each earlier store pause of it
        here and each failed attempt): never a busy loop, and a store that fails again soon
        pauses the job less often. Ends when the job was resumed, or a person paused,
        resumed or cancelled it meanwhile (`_steered`)."""
        pauses = self._store_pauses.get(job_id, 1)
        delay = min(HEAL_AFTER * 2 ** (pauses - 1), HEAL_MAX)
        while job_id in self._healing:
            await trio.sleep(delay)
            delay = min(2 * delay, HEAL_MAX)
            try:
                await self._heal_once(job_id)
            except StoreError:
                continue  # the store still fails: later
            self._healing.discard(job_id)

    async def _heal_once(self, job_id: str) -> None:
        """Queue the job here if it still rests as its store paused it, leased to this
        manager (its reservation, kept since that pause): a compare-and-set on its status
        and lease. Anyone's pause, resume, cancel or delete meanwhile took the lease or the
        job, and wins; so does another process's recovery of it as ``interrupted`` (this
        manager was declared dead)."""
        async with self._claim_lock:  # a closing manager waits, then finds the job queued
            if self._closing or job_id not in self._healing:
                return
            try:
                info = await self._db(
                    self.store.transition,
                    job_id,
                    JobStatus.QUEUED,
                    expect=JobStatus.PAUSED,
                    holder=self.id,
                    request=None,
                    error=RESUMED,
                )
            except (InvalidTransitionError, LeaseError, JobNotFoundError):
                # Resumed, paused, cancelled or deleted meanwhile, or recovered: no longer
                # this manager's to resume, nor its store pauses to count here.
                self._store_pauses.pop(job_id, None)
                return
            if job_id not in self._healing:  # a person paused or cancelled it here meanwhile
                # (waiting for this step: `_steered_settled`): back out, so it never starts
                await self._db(
                    self.store.transition,
                    job_id,
                    JobStatus.PAUSED,
                    expect=JobStatus.QUEUED,
                    holder=self.id,
                    lease=None,
                    error=None,
                )
                return
            self._enqueue(info)


async def _open_listener(store: JobStore) -> StoreListener | None:
    """``store.listener()`` in a thread that a cancellation (the manager closing) leaves at
    once, rather than wait out the connect timeout (10 s against a server that does not
    answer). A listener the thread opens after that is closed there: never used, never
    left open."""
    handoff = _Handoff()
    try:
        return await trio.to_thread.run_sync(handoff.open, store, abandon_on_cancel=True)
    except trio.Cancelled:
        handoff.abandon()
        raise


class _Handoff:
    """A listener passed from the thread that opens it to the trio task that waits for
    it, unless that task left: then whichever side comes last closes it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._abandoned = False
        self._opened: StoreListener | None = None

    def open(self, store: JobStore) -> StoreListener | None:
        listener = store.listener()
        with self._lock:
            if not self._abandoned:
                self._opened = listener
                return listener
        if listener is not None:
            listener.close()
        return None

    def abandon(self) -> None:
        with self._lock:
            self._abandoned = True
            opened, self._opened = self._opened, None
        if opened is not None:  # opened just as the task left: its result went unread
            opened.close()
