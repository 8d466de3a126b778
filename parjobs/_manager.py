"""JobManager: submit, run, pause, resume and cancel jobs; persistence and recovery.

One manager per process and store (several processes may share a store). Every job this
manager runs lives in the manager's nursery; a job's tasks live in the job's own nursery, so
closing the manager pauses and then stops everything it owns, and nothing outlives it.

Leases: a manager registers itself (pid, start time, host, heartbeat) and claims a job
atomically before running it (a compare-and-set on the lease: a job runs in one place at a
time). A job whose manager died is recovered as ``interrupted`` by the next manager that
opens the store. Pause and cancel requests from other processes travel through the store and
are polled with the leases (`parjobs._housekeeping`): a run whose lease was taken stops at
once and writes nothing more.

This module holds the public face (`JobManager`'s API, `JobHandle`, the event stream,
`open_manager`); the layers below it are `_manager_core`, `_runner`, `_scheduler` and
`_housekeeping`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import secrets
import time
import typing
from collections.abc import AsyncGenerator, AsyncIterator, Collection, Iterable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypedDict, Unpack

import trio

from ._config import ConfigOptions, ManagerConfig, make_config
from ._events import DEFAULT_BUFFER, EventKind, EventSubscription, OwnerEvents
from ._exceptions import (
    IdempotencyConflictError,
    InvalidTransitionError,
    JobCancelledError,
    JobFailedError,
    JobLoadError,
    JobNotFinishedError,
    JobNotFoundError,
    LeaseError,
    StoreError,
)
from ._housekeeping import REQUEST_POLL, Housekeeping
from ._items import ItemRecord
from ._job import DumpedJob, Job, dump_job, job_class, lookup_job_type
from ._jobstore import JobStore, StoreListener
from ._leases import CLOSED
from ._progress import ItemError, Progress
from ._records import UNDO_REQUEST, ItemQuery, JobInfo, JobQuery
from ._status import TRANSITIONS, JobStatus, check_transition, paused_by_store
from ._store import CancelPending
from ._stores import open_store
from ._util import NoPublicConstructor, exception_leaves

if TYPE_CHECKING:  # the cluster lane loads only when a manager is given a cluster
    from ._cluster import ClusterBridge
    from ._statistics import ManagerStatistics

_log = logging.getLogger("parjobs")

#: The job type `JobManager.undo` submits (``{"job": id}``), provided by `parjobs.ops`.
UNDO_JOB_TYPE = "undo"

#: How often the event stream looks at the store for other processes' changes (while
#: somebody listens; this manager's own changes are seen at once).
EVENT_POLL = 0.25
#: Seconds of ``updated`` looked at again before the last seen change (other processes'
#: clocks, and changes committed out of order).
CLOCK_SLACK = 2.0

#: The ended statuses a job can still be resumed (and cancelled) from: it may keep partials
#: for its resume, which the retention removes by cancelling it first (`_purge_resumable`).
_RESUMABLE_ENDED = [s for s in JobStatus if s.is_ended and JobStatus.CANCELLED in TRANSITIONS[s]]
#: The other ended statuses: a job in one is purged as it is.
_PURGED_AS_IS = [s for s in JobStatus if s.is_ended and s not in _RESUMABLE_ENDED]

#: How often a manager with a retention deletes the ended jobs that passed it (besides
#: when it opens), so a long-running ``serve`` or ``worker`` does not keep them forever.
RETENTION_SWEEP = 3600.0


@typing.final
class JobHandle(metaclass=NoPublicConstructor):
    """A reference to one job: its id, status, progress stream and result."""

    def __init__(self, manager: JobManager, job_id: str) -> None:
        self._manager = manager
        self.id = job_id

    def __repr__(self) -> str:
        return f"<JobHandle {self.id}>"

    @property
    def status(self) -> JobStatus | None:
        """The status as last seen by this manager (None if it does not run the job; use
        `info` then)."""
        live = self._manager._live.get(self.id)
        return live.status if live is not None else None

    async def info(self) -> JobInfo:
        return await self._manager.get(self.id)

    async def progress(self) -> AsyncGenerator[Progress, None]:
        """Snapshots (~10/s) until the job ends (completed, failed, cancelled, timed out,
        skipped) or the manager closes: one subscription through pauses and resumes, by this
        process or another (see `JobManager.watch`)."""
        async for snap in self._manager.watch(self.id, through_pauses=True):
            yield snap

    async def wait(self) -> JobStatus:
        """Wait until the job rests (nothing runs until somebody acts) and return its status."""
        return await self._manager.wait(self.id)

    async def result(self) -> Any:
        """Wait, then return the job's result. Raises `JobFailedError`, `JobCancelledError`,
        or `JobNotFinishedError` (paused/interrupted)."""
        status = await self.wait()
        live = self._manager._live.get(self.id)
        info = await self._manager.get(self.id)
        if status in (JobStatus.COMPLETED, JobStatus.COMPLETED_WITH_ERRORS):
            if live is not None and live.status is status:
                return live.value
            return info.result
        if status is JobStatus.FAILED:
            raise JobFailedError(f"job {self.id} failed: {info.error}")
        if status is JobStatus.CANCELLED:
            raise JobCancelledError(f"job {self.id} was cancelled")
        raise JobNotFinishedError(f"job {self.id} is {status.value}; resume it to finish")

    async def pause(self) -> None:
        await self._manager.pause(self.id)

    async def resume(self) -> None:
        await self._manager.resume(self.id)

    async def cancel(self) -> None:
        await self._manager.cancel(self.id)


#: What pause and cancel lead to: (the status a queued job rests in, a running job's status
#: while it stops).
_STEERING = {
    "pause": (JobStatus.PAUSED, JobStatus.PAUSING),
    "cancel": (JobStatus.CANCELLED, JobStatus.CANCELLING),
}


class SubmitOptions(TypedDict, total=False):
    """The keywords of `JobManager.submit` (they mean what they mean there) that the owner's
    view and `BlockingManager.submit` pass on as they are."""

    priority: int | None
    idempotency_key: str | None
    start: bool
    queue: str | None
    after: Iterable[str]
    on_dependency_failure: str
    timeout: float | None
    detach: bool


class ResumeOptions(TypedDict, total=False):
    """The keywords of `JobManager.resume` (they mean what they mean there) that the owner's
    view passes on as they are."""

    timeout: float | None
    detach: bool


@typing.final
class JobManager(Housekeeping, metaclass=NoPublicConstructor):
    """Runs jobs from a `JobStore`. Create with `open_manager`.

    Built in layers, each in its own module: `ManagerCore` (state, the store thread hop),
    `JobRunner` (one run), `JobScheduler` (admission), `Housekeeping` (leases, requests,
    background checkpoints); this class adds the public API and the event stream."""

    # -- plumbing ------------------------------------------------------------------------

    async def _prepare(self) -> None:
        """Register, recover the jobs of dead managers, apply retention, and remove the job
        directories left behind (may raise `StoreError`, before anything runs)."""
        root = self.store.path + ".d"

        def register() -> tuple[
            object | None, StoreListener | None, list[str], list[JobInfo], list[str]
        ]:
            # One trip to the store's thread, not seven: each trip is a hand-off to that
            # thread and back (0.1-0.5 ms, several times that on a loaded machine).
            identity = self.store.identity()
            self.store.register_manager(self.id)
            self.store.recover()
            expiry = self._expiry()
            purged = [] if expiry is None else self.store.purge(*expiry, _undoing(self.store))
            resumable = [] if expiry is None else _resumable_expired(self.store, expiry[0])
            left = _left_behind(self.store, root, purged)
            return identity, self.store.listener(), purged, resumable, left

        self._identity, self._listener, purged, resumable, left = await self._db(register)
        self._store_changed.set()  # recovered jobs changed status: the event stream looks
        await self._forget_purged(purged)
        for job_id in left:
            await self._remove_job_dir(job_id)
        await self._purge_resumable(resumable)

    async def _start(self, nursery: trio.Nursery, resume_interrupted: bool) -> None:
        self._nursery = nursery
        nursery.start_soon(self._scheduler)
        nursery.start_soon(self._housekeeping)
        nursery.start_soon(self._watch_store)
        if self.retention is not None:
            nursery.start_soon(self._retention_sweeps)
        if self._listener is not None:
            nursery.start_soon(self._listen, self._listener)
        if resume_interrupted:  # (with the jobs their failing store paused, their manager
            # gone: `_prepare`'s recovery made them interrupted)
            for info in await self.list_jobs([JobStatus.INTERRUPTED]):
                await self.resume(info.id)

    async def _shutdown(self, grace: float) -> None:
        """Pause what runs (checkpointed, resumable), release queued jobs, unregister. Once:
        the blocking facade shuts its manager down before `open_manager` closes it."""
        if self._shut_down:
            return
        self._closing = True
        self._closed_event.set()  # a run waiting for a failing store tries once more, now
        async with self._claim_lock:
            pass  # a worker's claim under way has registered its run by now
        for live in list(self._live.values()):
            if self._claiming and live.status is JobStatus.RUNNING:
                self._handing_back.add(live.id)  # rests interrupted: another worker's
            if live in self._queue or live.requeued:  # (a retry's delay: never queued now)
                # (the store failing, it rests interrupted here all the same, `close`
                # raising: the store still says queued here, and so it is recovered)
                await self._rest_queued(live, JobStatus.INTERRUPTED)
            elif live.starting and live.ctx is None and not live.rested.is_set():
                self._apply_request(live, "pause")
            elif live.status in (JobStatus.RUNNING, JobStatus.PAUSING) and not live.releasing:
                try:
                    await self._interrupt(live, "pause", JobStatus.PAUSING)
                except InvalidTransitionError:  # ended meanwhile
                    pass
                except StoreError as exc:  # it pauses all the same, its end unrecorded
                    self._apply_request(live, "pause")
                    if self._unrecorded is None:
                        self._unrecorded = exc
        with trio.move_on_after(grace):
            for live in list(self._live.values()):
                await live.rested.wait()
        self._cut_cleanups = True  # nor is a run's cleanup waited for past the grace
        for scope in list(self._cleanups):
            scope.cancel()
        for live in list(self._live.values()):
            if live.scope is not None and not live.rested.is_set():
                live.scope.cancel()
        for live in list(self._live.values()):
            await live.rested.wait()
        self._events.close_all()  # every subscription ends: nothing more will come
        try:
            await self._db(self.store.unregister_manager, self.id)
        except StoreError:
            CLOSED.add(self.id)  # its jobs are recovered by the next manager of this process
            raise
        self._shut_down = True
        if self._unrecorded is not None:  # the store took the rest: still, say it failed
            raise self._unrecorded

    # -- public API ----------------------------------------------------------------------

    async def submit(
        self,
        job: Job | DumpedJob,
        *,
        priority: int | None = None,
        idempotency_key: str | None = None,
        start: bool = True,
        queue: str | None = None,
        owner: str | None = None,
        after: Iterable[str] = (),
        on_dependency_failure: str = "skip",
        timeout: float | None = None,  # noqa: ASYNC109 - a job setting, not this call's
        detach: bool = False,
    ) -> JobHandle:
        """Store ``job`` (validated) and queue it to run in this manager (``detach``: queue
        it for any worker of the store instead, see `work`; this manager does not run it).

        ``priority``: higher starts first (FIFO among equals), default the job type's.
        ``queue``: the named queue whose capacity bounds it (default the job type's).
        ``idempotency_key``: a job submitted before with the same key (by any process) is
        returned instead of a duplicate; `IdempotencyConflictError` if that job is another
        one (type, spec or owner differ). ``owner``: free-form owner/tenant for filtering.
        ``after``: ids of jobs that must complete first; if one fails, is cancelled or is
        skipped, this job becomes ``skipped`` (``on_dependency_failure="skip"``) or runs
        anyway (``"run"``). ``timeout``: seconds of run time the job may take, over all
        its runs (pauses and crashes do not restart it), before it ends ``timed_out`` (its
        completed work checkpointed). ``start=False`` stores it paused.

        The job is validated once, here, in a worker thread (validation may look at the
        file system), unless ``job`` is what `dump_job` returned for it: validated then.
        """
        if self._closing:
            raise StoreError("the manager is closing")
        if isinstance(job, DumpedJob):
            dumped = job
        else:
            dumped = await trio.to_thread.run_sync(dump_job, job)
        job, type_name, version, spec = dumped.job, dumped.type_name, dumped.version, dumped.spec
        queue = queue or type(job).queue
        if queue not in self.queues:
            known = ", ".join(sorted(self.queues))
            raise ValueError(f"unknown queue {queue!r}; configured queues: {known}")
        if on_dependency_failure not in ("skip", "run"):
            raise ValueError("on_dependency_failure must be 'skip' or 'run'")
        _check_timeout(timeout)
        job_timeout = timeout if timeout is not None else type(job).timeout
        job_id = secrets.token_hex(6)
        prio = type(job).priority if priority is None else priority
        _check_priority(prio)
        info, created = await self._db(
            self.store.insert_job,
            job_id,
            type_name,
            version,
            spec,
            priority=prio,
            queue=queue,
            lease=None if detach else self.id,
            idempotency_key=idempotency_key,
            owner=owner,
            after=after,
            dep_policy=on_dependency_failure,
            timeout=job_timeout,
        )
        if not created:
            _check_same_job(info, idempotency_key, type_name, spec, owner)
            return JobHandle._create(self, info.id)
        if not start:
            await self._db(self.store.transition, info.id, JobStatus.PAUSED, lease=None)
            return JobHandle._create(self, info.id)
        if detach:
            return JobHandle._create(self, info.id)
        live = self._enqueue(info)
        live.job = job
        live.validated = True  # just now: its first run need not validate it again
        return JobHandle._create(self, info.id)

    async def work(self, *, until_idle: bool = False) -> None:
        """Be a worker: besides its own jobs, this manager claims and runs the queued jobs
        nobody holds (submitted with ``detach``, by any process or host) and the jobs left
        interrupted by dead managers, resumed from their checkpoints; at most
        ``max_running`` at once, and no more in a queue than its capacity counting every
        manager's running jobs. Returns with ``until_idle`` once nothing runs here and no
        job can be claimed; else runs until cancelled. Jobs it holds when the manager
        closes are handed back (``interrupted``) for another worker."""
        self._claiming = self._claims_open = True
        self._wake.set()
        if not until_idle:
            await trio.sleep_forever()
        while True:
            self._idle = trio.Event()
            self._wake.set()
            await self._idle.wait()
            self._claims_open = False
            async with self._claim_lock:
                pass  # a claim under way has registered its run by now
            if not any(not live.rested.is_set() for live in self._live.values()):
                return
            self._claims_open = True  # one more was claimed meanwhile: run it first

    async def set_priority(self, job_id: str, priority: int) -> None:
        """Change the priority of a job that has not started (e.g. bring the thumbnails of
        the folder on screen to the front)."""
        _check_priority(priority)
        await self._db(self.store.set_priority, job_id, priority)
        live = self._live.get(job_id)
        if live is not None and live.ctx is None:
            live.priority = priority
            self._wake.set()

    async def purge_expired(self) -> list[str]:
        """Delete ended jobs older than the retention setting (no-op without one); one that
        could still be resumed is cancelled first, as `delete` does."""
        if self.retention is None:
            return []
        expiry = await self._db(self._expiry)
        assert expiry is not None
        ids = await self._db(lambda: self.store.purge(*expiry, _undoing(self.store)))
        await self._forget_purged(ids)
        resumable = await self._db(_resumable_expired, self.store, expiry[0])
        return ids + await self._purge_resumable(resumable)

    def _expiry(self) -> tuple[float, list[JobStatus]] | None:
        """`JobStore.purge`'s arguments for the retention setting (None without one): the
        ended jobs that finished before now minus the retention, and that nothing could
        resume (the others, `_purge_resumable`). Now by the store's clock (`JobStore.now`,
        the database server's on PostgreSQL; run in the store's thread): by this host's, a
        host whose clock was ahead deleted jobs early by as much, a failed one's partials
        with it, and a copy's record its undo needs."""
        if self.retention is None:
            return None
        return self.store.now() - self.retention, _PURGED_AS_IS

    async def _purge_resumable(self, infos: list[JobInfo]) -> list[str]:
        """Delete the expired jobs ``infos`` that could still be resumed
        (`_resumable_expired`) through `delete`, whose cancel runs each one's cleanup: it
        removes the partials kept for its resume, which nothing could once its name token is
        forgotten. One it cannot clean now (resumed or taken meanwhile, the store busy) is
        kept for the next sweep; so is one whose job type this process cannot load (its
        entry point is loaded first, as the CLI loads one lazily), which the cleanup needs:
        reported once per manager on the ``parjobs`` logger, never deleted uncleaned (it
        was, its partials left for good). Returns the ids deleted."""
        purged = []
        for info in infos:
            exc = await self._uncleanable(info)
            if exc is not None:
                if info.id not in self._kept_expired:
                    self._kept_expired.add(info.id)
                    _log.warning(
                        "job %s (%s) is past the retention but kept: %s; its cleanup, which "
                        "removes what it kept for a resume, cannot run without it (deleting "
                        "the job forgets it uncleaned)",
                        info.id,
                        info.status.value,
                        exc,
                    )
                continue
            try:
                await self.delete(info.id)
            except (InvalidTransitionError, LeaseError, JobNotFoundError, StoreError):
                continue
            purged.append(info.id)
        return purged

    async def _uncleanable(self, info: JobInfo) -> JobLoadError | None:
        """Why the cleanup of ``info``'s job cannot run in this process (its job type, its
        entry point loaded first, unknown here or of a newer version), or None."""
        try:
            await trio.to_thread.run_sync(job_class, info.type, info.version)
        except JobLoadError as exc:
            return exc
        return None

    async def _forget_purged(self, ids: list[str]) -> None:
        for job_id in ids:
            self._live.pop(job_id, None)
            self._forget(job_id)
            await self._remove_job_dir(job_id)

    async def _retention_sweeps(self) -> None:
        """`purge_expired` every `RETENTION_SWEEP` seconds while the manager is open."""
        while True:
            await trio.sleep(RETENTION_SWEEP)
            with contextlib.suppress(StoreError):  # busy or full for now: next time
                await self.purge_expired()

    def statistics(self) -> ManagerStatistics:
        """Counters of this manager: jobs running/queued here, per-queue use, and the
        current throughput of its running jobs (tasks/s, bytes/s), plus totals since open."""
        from ._statistics import ManagerStatistics

        rates = [live.tracker.snapshot() for live in self._live.values() if live.ctx is not None]
        return ManagerStatistics(
            running=self._running,
            queued=len(self._queue),
            queues={q: (self._running_by_queue.get(q, 0), c) for q, c in self.queues.items()},
            tasks_per_second=sum(r.rate_items for r in rates),
            bytes_per_second=sum(r.rate_bytes for r in rates),
            tasks_finished=self._counters["tasks"],
            bytes_processed=self._counters["bytes"],
        )

    async def job_counts(self) -> dict[str, int]:
        """Jobs in the store by status (all processes)."""
        return await self._db(self.store.status_counts)

    def handle(self, job_id: str) -> JobHandle:
        return JobHandle._create(self, job_id)

    def for_owner(self, owner: str) -> OwnerView:
        """This manager as ``owner`` sees it: only that owner's jobs exist (see
        `OwnerView`). For a server's per-user tokens, a tenant's session, a plug-in."""
        return OwnerView._create(self, owner)

    def holds(self, job_id: str) -> bool:
        """Whether this manager holds a run of the job (under way, or just rested here)."""
        return job_id in self._live

    def local_status(self, job_id: str) -> JobStatus | None:
        """The job's status as this manager sees it while one of its runs is under way; None
        otherwise, when the store has the last word (`get`)."""
        live = self._live.get(job_id)
        if live is None or live.rested.is_set():
            return None
        return live.status

    async def resolve(self, id_prefix: str) -> str:
        """The full id of the job whose id starts with ``id_prefix``."""
        return await self._db(self.store.resolve_id, id_prefix)

    async def store_now(self) -> float:
        """Now by the store's clock (`JobStore.now`: the database server's on PostgreSQL),
        which jobs' ``finished`` times are written with: an age reckoned from it (``jobs
        prune --older-than``) is not shortened by this host's clock running ahead."""
        return await self._db(self.store.now)

    async def list_jobs(
        self,
        status: JobStatus | Iterable[JobStatus] | None = None,
        **query: Unpack[JobQuery],
    ) -> list[JobInfo]:
        """Jobs in the store with the given status(es) (default: any), filtered by type and
        owner, ordered and paged as `JobQuery` says: ``type``, ``owner``, ``order``
        (``created``, ``finished``, ``priority``, ``run_time`` or ``updated``; ``-`` prefix:
        descending), ``limit``, ``offset``. Damaged rows are left out; pass a list as
        ``damaged`` to get them as (job id, reason)."""
        statuses = [status] if isinstance(status, JobStatus) else status
        return await self._db(self.store.list_jobs, statuses, **query)

    async def errors(self, job_id: str, *, limit: int = -1, offset: int = 0) -> list[ItemError]:
        """The failed items of the job's latest run, with their reasons, oldest first
        (paged with ``limit``/``offset``; `error_count` says how many there are)."""
        return await self._db(self.store.errors, job_id, limit=limit, offset=offset)

    async def error_count(self, job_id: str) -> int:
        """How many items of the job's latest run failed (what `errors` pages through)."""
        return await self._db(self.store.error_count, job_id)

    async def items(self, job_id: str, **query: Unpack[ItemQuery]) -> list[ItemRecord]:
        """The job's item log: what each item did (`ItemRecord`), in the order it was
        checkpointed, kept after the job ends or is cancelled; paged with ``limit`` and
        ``offset`` or (cheaper far in) ``after`` a record's ``seq``; of one ``action`` only
        if given (see `ItemQuery`). `item_count` says how many there are."""
        return await self._db(self.store.items, job_id, **query)

    async def item_count(self, job_id: str, *, action: str | None = None) -> int:
        """How many records `items` pages through."""
        return await self._db(self.store.item_count, job_id, action=action)

    async def undo(self, job_id: str, *, owner: str | None = None) -> JobHandle:
        """Submit the job that undoes ``job_id`` from its item log (the ``undo`` job type:
        `parjobs.ops.UndoJob` restores what it trashed, moves back what it moved, removes
        the files it copied that nobody changed since). Once per job: undoing it again
        returns the same undo job (a new one once that was cancelled). The job must not be
        running (pause or cancel it first); undone, it never runs again: a paused,
        interrupted or failed one is cancelled first, and `resume` refuses it. Both in one
        compare-and-set (`_take_for_undo`): a job resumed anywhere since it was read here is
        not undone (`InvalidTransitionError`, nothing cancelled or reverted).
        `JobLoadError` when no ``undo`` job type is installed."""
        info = await self.get(job_id)
        if info.status.is_active:
            raise InvalidTransitionError(
                f"cannot undo job {info.id}: it is {info.status.value}; pause or cancel it first"
            )
        cls = await trio.to_thread.run_sync(lookup_job_type, UNDO_JOB_TYPE)
        if cls is None:
            raise JobLoadError(f"no {UNDO_JOB_TYPE!r} job type is installed")
        job = cls.from_spec({"job": info.id})
        try:
            await self._take_for_undo(info)
        except (InvalidTransitionError, LeaseError) as exc:  # resumed or taken meanwhile
            raise InvalidTransitionError(f"cannot undo job {info.id}: {exc}") from None
        # Once per job, but an undo that was cancelled (never to run again) is followed by
        # a new one: the job, perhaps half undone, is never resumed, so only an undo can
        # finish it (it returned the cancelled one, for good).
        cancelled = sum(u.status is JobStatus.CANCELLED for u in await self._undos(info.id))
        key = f"undo:{info.id}" + (f":{cancelled}" if cancelled else "")
        return await self.submit(job, idempotency_key=key, owner=owner)

    async def _take_for_undo(self, info: JobInfo) -> None:
        """Make the job, resting as ``info`` says, never run again before its undo is
        submitted, in one compare-and-set on its status and lease: a resume (here or in
        another process) after the undo read it either came first, and the undo is refused
        (`InvalidTransitionError`, `LeaseError`: nothing reverted), or comes after, and is
        refused itself. Undone, a job never runs again (a resume would skip what the undo
        reverts and report it done): one that may be cancelled rests cancelled, leftovers
        removed; one completed with errors (never cancelled) is marked (``request``
        ``undo``: the store's `requeue` refuses it); a completed or cancelled one is final."""
        if JobStatus.CANCELLED in TRANSITIONS[info.status]:
            await self._cancel_once(info.id, resting=info.status)
        elif JobStatus.QUEUED in TRANSITIONS[info.status]:
            # (its status and end time kept: only its request is new)
            mark: dict[str, Any] = {"expect": info.status, "finished": info.finished}
            mark["request"] = UNDO_REQUEST
            await self._db(self.store.transition, info.id, info.status, manager=self.id, **mark)

    async def _undos(self, job_id: str) -> list[JobInfo]:
        """The undo jobs submitted for ``job_id``."""
        undos = await self._db(self.store.list_jobs, type=UNDO_JOB_TYPE, results=False)
        return [
            u for u in undos if isinstance(u.spec_data, dict) and u.spec_data.get("job") == job_id
        ]

    async def _undone_by(self, job_id: str) -> str | None:
        """The undo job submitted for ``job_id``, if any (read once per `resume`)."""
        undos = await self._undos(job_id)
        return undos[0].id if undos else None

    async def pause(self, job_id: str) -> None:
        """Pause a job: running ones stop at the next chunk boundary, keeping their progress.
        Works for jobs run by another process (the request travels through the store).
        A job its failing store paused (which resumes by itself once the store takes writes
        again) stays paused from then on, its store error cleared."""
        await self._steered_settled(job_id)
        info = await self._steer(job_id, "pause")
        if info is not None:  # nobody live holds it: a compare-and-set on status and owner
            mine = info.status is JobStatus.PAUSED and paused_by_store(info.error)
            await self._rest_offline(info, JobStatus.PAUSED, **({"error": None} if mine else {}))

    async def cancel(self, job_id: str) -> None:
        """Cancel a job. Running: stops at the next chunk boundary and cleans up. Queued or
        resting (paused, interrupted, failed): cleaned up now. Recorded ``cancelled`` only
        once cleaned up (a queued job is ``cancelling`` meanwhile). Illegal when completed
        or cancelled. A cancel of the job already under way here is waited for. One whose
        job type (or spec) this process cannot load, a plug-in uninstalled, is cancelled
        without its cleanup, which cannot run: its error says so, and what may remain."""
        await self._cancel_once(job_id)

    async def _cancel_once(self, job_id: str, *, resting: JobStatus | None = None) -> None:
        """`cancel`, or with ``resting`` only the cancel of a job that still rests so, held
        by no other live process (a compare-and-set: else `InvalidTransitionError` or
        `LeaseError`, nothing done): `undo`'s."""
        under_way = self._cancels.get(job_id)
        if under_way is not None:  # (a resume finding its cancel pending comes here too)
            await under_way.wait()
            now = (await self._db(self.store.statuses, [job_id])).get(job_id)
            if resting is not None and now is not JobStatus.CANCELLED:
                raise InvalidTransitionError(f"job {job_id} is {now}: its cancel did not end")
            return
        done = self._cancels[job_id] = trio.Event()
        try:
            await self._cancel(job_id, resting)
        finally:
            del self._cancels[job_id]
            done.set()

    async def _cancel(self, job_id: str, resting: JobStatus | None = None) -> None:
        await self._steered_settled(job_id)
        status = resting  # (a run of it here makes it active in the store too)
        if status is None:
            steered = await self._steer(job_id, "cancel")
            if steered is None:
                return
            status = steered.status
        check_transition(job_id, status, JobStatus.CANCELLED)
        if status.is_active:  # queued for any worker, or its process gone: a
            # compare-and-set leases it here, cancelling while its cleanup runs (a process
            # dying meanwhile leaves its cancel pending, `CancelPending`)
            info = await self._db(
                self.store.transition,
                job_id,
                JobStatus.CANCELLING,
                expect=status,
                manager=self.id,
                lease=self.id,
            )
        else:  # resting: leased here, so nobody resumes it while its cleanup runs
            info = await self._db(self.store.take, job_id, self.id, status)
        with trio.CancelScope(shield=True):  # cancelled only once cleaned up
            skipped = await self._cleanup_offline(info)  # (or recorded as not: its error)
            # The store failing, its end waits for it, as a run's does: the job rests
            # cancelling (or its cancel pending), leased here, and no other process's
            # cancel or resume could finish it while this manager lives. Closing
            # meanwhile, it is released with its cancel pending (`close` raises).
            await self._patiently(None, self._cancelled_write(job_id, info.status, skipped))

    async def _steer(self, job_id: str, request: str) -> JobInfo | None:
        """What pause and cancel (``request``) share: reach the job where it is. Queued here,
        it rests at once (a cancelled one is cleaned up); starting or running here, it is
        interrupted; held by another live process, that process is asked through the store.
        Returns None then, else the stored job, which nobody live holds. A run writing its
        end (retried while the store fails) is waited for: the request then acts on the job
        as that run left it (its end may forbid the run's own stopping status: a paused end
        after cancelling)."""
        rest, stopping = _STEERING[request]
        live = self._live.get(job_id)
        while live is not None and live.releasing and not live.rested.is_set():
            await live.rested.wait()
            live = self._live.get(job_id)  # (a retry's requeue: its next run, waiting)
        if live is not None and (live in self._queue or live.requeued):
            await self._rest_queued(live, rest)  # (a cancel: cleaned up, then cancelled)
            return None
        if live is not None and live.starting and live.ctx is None and not live.rested.is_set():
            self._apply_request(live, request)  # applied as soon as its run begins
            return None
        if live is not None and live.status in (JobStatus.RUNNING, JobStatus.PAUSING, stopping):
            await self._interrupt(live, request, stopping)
            return None
        if await self._db(self.store.request, job_id, request, self.id):
            return None  # the process that holds it pauses or cancels (and cleans up) itself
        return await self.get(job_id)

    async def _rest_offline(self, info: JobInfo, status: JobStatus, **fields: Any) -> JobInfo:
        """Set a job nobody live holds to ``status`` (and ``fields``), if it is still as
        ``info`` says."""
        return await self._db(
            self.store.transition,
            info.id,
            status,
            expect=info.status,
            manager=self.id,
            lease=None,
            request=None,
            **fields,
        )

    async def resume(
        self,
        job_id: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - a job setting, not this call's
        detach: bool = False,
    ) -> JobHandle:
        """Queue a paused, interrupted, failed or completed-with-errors job to run here
        (``detach``: queue it for whichever worker of the store claims it, see `work`).
        Completed tasks are skipped; failed ones are retried. A job recovered with its
        cancel pending (its manager gone while cancelling it) is cancelled instead.

        A job's timeout bounds its total run time over all its runs; ``timeout`` sets a new
        total (a job that ended ``timed_out`` has used up its own: give it more here)."""
        _check_timeout(timeout)
        live = self._live.get(job_id)
        if live is not None and not live.rested.is_set():
            raise InvalidTransitionError(f"cannot resume job {job_id}: it is {live.status.value}")
        undo = await self._undone_by(job_id)
        if undo is not None:  # (one completed with errors: the others rest cancelled)
            raise InvalidTransitionError(f"cannot resume job {job_id}: undone by job {undo}")
        # One transaction: refused (LeaseError) while any other live process holds the job.
        try:
            info = await self._db(self.store.requeue, job_id, self.id)
        except CancelPending:  # a person asked to cancel it: that wins, never run again
            await self.cancel(job_id)
            return JobHandle._create(self, job_id)
        self._steered(job_id)
        if timeout is not None or detach:  # queued and leased to us: nobody else writes it
            fields: dict[str, object] = {} if timeout is None else {"timeout": timeout}
            if detach:  # let go: any worker may claim it now (its checkpoint stays)
                fields["lease"] = None
            info = await self._db(
                self.store.transition, job_id, JobStatus.QUEUED, holder=self.id, **fields
            )
        if not detach:
            self._enqueue(info)
        return JobHandle._create(self, job_id)

    async def delete(self, job_id: str) -> None:
        """Forget a job that rests (its completions, errors and results too). One that could
        still be resumed (paused, interrupted, failed...) is cancelled first: its cleanup
        removes its partials, which nothing could remove once its name token is forgotten.
        One whose undo is not over is refused (`InvalidTransitionError`): the undo reads
        its item log on every run (the retention keeps it too); so is one to cancel whose job
        type this process cannot load (a plug-in uninstalled): its cleanup cannot run, and
        forgotten, what it kept for its resume would stay for good."""
        info = await self.get(job_id)
        if info.status.is_active:
            raise InvalidTransitionError(f"cannot delete job {job_id}: it is {info.status.value}")
        for undo in await self._undos(info.id):
            if not undo.status.is_final:  # it reads the job's item log until it is
                raise InvalidTransitionError(
                    f"cannot delete job {info.id}: its undo, job {undo.id}, is "
                    f"{undo.status.value} and reads what the job did; let it finish or "
                    "cancel it first"
                )
        if JobStatus.CANCELLED in TRANSITIONS[info.status]:
            exc = await self._uncleanable(info)
            if exc is not None:
                raise InvalidTransitionError(
                    f"cannot delete job {info.id}: it is {info.status.value}, and its cleanup "
                    f"(which removes the partial files it kept for a resume) cannot run: {exc}; "
                    "install what defines its job type and delete it again, or cancel it first "
                    "to give it up (its partial files then stay)"
                )
            await self.cancel(info.id)
        await self._db(self.store.delete, job_id)  # checks again, in its transaction
        self._live.pop(job_id, None)
        self._forget(job_id)
        await self._remove_job_dir(job_id)

    async def wait(self, job_id: str) -> JobStatus:
        """Wait until the job rests; works for jobs run by other processes too (polls)."""
        while True:
            live = self._live.get(job_id)
            if live is not None and not live.rested.is_set():
                await live.rested.wait()
                continue
            if live is not None and live.lost is not None:
                return live.status  # our run lost the job: what it does now is not ours
            # The store has the last word: the job may have been cancelled while resting,
            # or resumed and finished by another process. (Its status only: not the whole
            # record, whose result may be megabytes of JSON.)
            status = (await self._db(self.store.statuses, [job_id])).get(job_id)
            if status is None:
                raise JobNotFoundError(f"no job with id {job_id!r}")
            if status.is_resting:
                return status
            await trio.sleep(REQUEST_POLL)

    async def get_rested(self, job_id: str, status: JobStatus) -> JobInfo:
        """The stored record of a job that `wait` just saw rest with ``status``: when this
        manager's run ended it so, the record that run wrote (durably, before it rested)
        with the result its job returned here, not read back and decoded from the store (a
        dupes report is megabytes of JSON); else `get`."""
        live = self._live.get(job_id)
        ended = live.ended if live is not None and live.rested.is_set() else None
        if ended is not None and ended.status is status:
            return ended
        return await self.get(job_id)

    async def watch(
        self, job_id: str, *, through_pauses: bool = False
    ) -> AsyncGenerator[Progress, None]:
        """Progress snapshots of a job, with its status, from one `events` subscription: the
        current one first, then one per change (~10/s while it runs here, about once a
        second from the store for a run elsewhere), until the job rests (paused,
        interrupted, ended), or with ``through_pauses`` until it ends (completed, failed,
        cancelled, timed out, skipped: `JobStatus.is_ended`), pauses and resumes included.
        Also ends when the job is deleted or the manager closes. Raises `JobNotFoundError`
        for an unknown job."""
        with self.events(job_id) as events:  # before looking: nothing after is missed
            info = await self.get(job_id)
            live = self._live.get(job_id)
            seen = 0  # events up to this one are older than the first snapshot: skipped
            if live is not None and not live.rested.is_set():
                status, last = live.status, live.tracker.snapshot()
                seen = self._events.last_seq
            else:  # (events published meanwhile may hold a newer look at the store)
                status, last = info.status, _with_status(info.progress, info.status)
            yield last
            if _stops(status, through_pauses):
                return
            async for event in events:
                if event.seq <= seen:
                    continue
                if event.kind is EventKind.DELETED:
                    return
                snap = event.progress
                if snap is not None and snap != last:
                    last = snap
                    yield snap
                now = event.status
                if event.kind is EventKind.STATUS and now and _stops(now, through_pauses):
                    return

    # -- events --------------------------------------------------------------------------

    def events(
        self, job_id: str | None = None, *, buffer: int = DEFAULT_BUFFER, items: bool = False
    ) -> EventSubscription:
        """A subscription to every event from now on: status changes (of every job in the
        store, also those run by other processes), progress snapshots (coalesced; from the
        store, about once a second, for jobs run elsewhere), item errors (of the jobs run
        here, as they are checkpointed), deletions and the output lines of process tasks
        run here (``EventKind.OUTPUT``), and with ``items=True`` the records of the item log
        of jobs run here (``EventKind.ITEM``: one per item, so a subscription asks for them);
        only those of ``job_id`` if given::

            with manager.events() as events:
                async for event in events:
                    ...

        Each subscription has its own buffer of ``buffer`` events; when it is full, further
        events are dropped and the next one delivered says how many (``Event.dropped``).
        Publishing never waits for a subscriber."""
        if self._mark is None:  # nobody listened: "from now on" starts here
            self._mark = self._primed = time.time()
            self._known.clear()
        subscription = self._events.subscribe(job_id, buffer=buffer, items=items)
        self._store_changed.set()
        return subscription

    def _forget(self, job_id: str) -> None:
        """A job was deleted (or purged): drop what this manager kept about it."""
        self._known.pop(job_id, None)
        self._store_pauses.pop(job_id, None)
        self._events.publish(EventKind.DELETED, job_id)

    async def _watch_store(self) -> None:
        """While somebody listens to `events`, turn the store's changes into status events
        (and progress events for jobs run elsewhere): woken at once by this manager's own
        status changes, every `EVENT_POLL` seconds for those of other processes."""
        while True:
            while not self._events.listening:
                self._mark = None  # the next subscriber starts from a fresh look
                await self._events.subscribed.wait()
            self._store_changed = trio.Event()
            with contextlib.suppress(StoreError):  # busy store: try again next round
                await self._publish_changes()
            with trio.move_on_after(EVENT_POLL):
                await self._store_changed.wait()

    async def _publish_changes(self) -> None:
        if self._mark is None:
            return
        changed = await self._db(
            self.store.list_jobs,
            None,
            order="updated",
            updated_since=self._mark - CLOCK_SLACK,
            results=False,  # read below for the few whose status changed elsewhere
        )
        for info in changed:
            self._mark = max(self._mark, info.updated)
            known = self._known.get(info.id)
            if known is not None and info.updated < known[2]:
                continue  # read before a transition this manager published meanwhile
            if known is None and info.updated <= self._primed:
                self._known[info.id] = (info.status, info.progress, info.updated, info.can_resume)
                continue  # it changed before anybody listened
            news = known is None or (known[0], known[3]) != (info.status, info.can_resume)
            if news and info.status.is_ended:
                with contextlib.suppress(JobNotFoundError):  # (deleted meanwhile)
                    info = await self._db(self.store.get, info.id)  # with its result
            live = self._live.get(info.id)
            running_here = live is not None and not live.rested.is_set()
            # A run pausing itself for a store that took no writes is still running there.
            behind = running_here and live is not None and live.status is JobStatus.PAUSING
            if not (behind and info.status is JobStatus.RUNNING):
                self._publish_status(info)  # if its status changed (by another process)
            if not running_here and known is not None and known[1] != info.progress:
                snap = _with_status(info.progress, info.status)
                self._events.publish(EventKind.PROGRESS, info.id, progress=snap)


@typing.final
class OwnerView(metaclass=NoPublicConstructor):
    """A `JobManager` limited to one owner's jobs: an owner boundary, not a filter.

    Everything it lists, shows, steers or streams is a job of ``owner``; a job of anybody
    else behaves as if it did not exist (`JobNotFoundError`, the same message as for an
    unknown id), also as a prerequisite or behind an id prefix. Jobs it submits get the
    owner. Made by `JobManager.for_owner`; the handles it returns are those of the manager
    (a job's owner never changes).
    """

    def __init__(self, manager: JobManager, owner: str) -> None:
        if not isinstance(owner, str) or not owner:
            raise ValueError(f"owner must be a non-empty string, got {owner!r}")
        self.manager = manager
        self.owner = owner

    def __repr__(self) -> str:
        return f"<OwnerView {self.owner!r} of manager {self.manager.id}>"

    async def get(self, job_id: str) -> JobInfo:
        """The owner's job ``job_id`` (`JobNotFoundError` for another owner's)."""
        try:
            info = await self.manager.get(job_id)
        except JobNotFoundError:
            raise JobNotFoundError(f"no job with id {job_id!r}") from None
        if info.owner != self.owner:
            raise JobNotFoundError(f"no job with id {job_id!r}")
        return info

    async def _own(self, job_id: str) -> str:
        return (await self.get(job_id)).id

    async def resolve(self, id_prefix: str) -> str:
        """The full id of the owner's one job whose id starts with ``id_prefix`` (other
        owners' jobs neither match nor make a prefix ambiguous; ``""`` names none)."""
        if not id_prefix:
            raise JobNotFoundError("no job with id ''")
        try:
            return await self._own(await self.manager.resolve(id_prefix))
        except JobNotFoundError:
            pass
        mine = [i.id for i in await self.list_jobs() if i.id.startswith(id_prefix)]
        if len(mine) == 1:
            return mine[0]
        if mine:
            raise JobNotFoundError(f"job id prefix {id_prefix!r} is ambiguous")
        raise JobNotFoundError(f"no job with id {id_prefix!r}")

    async def list_jobs(
        self,
        status: JobStatus | Iterable[JobStatus] | None = None,
        **query: Unpack[JobQuery],
    ) -> list[JobInfo]:
        """`JobManager.list_jobs` of the owner's jobs (another ``owner`` lists nothing)."""
        if query.get("owner") not in (None, self.owner):
            return []
        query["owner"] = self.owner
        return await self.manager.list_jobs(status, **query)

    async def submit(self, job: Job | DumpedJob, **options: Unpack[SubmitOptions]) -> JobHandle:
        """`JobManager.submit` as the owner: the job is the owner's, and so must be its
        prerequisites (``after``)."""
        options["after"] = [await self._own(dep) for dep in options.get("after", ())]
        return await self.manager.submit(job, owner=self.owner, **options)

    async def handle(self, job_id: str) -> JobHandle:
        """A handle to the owner's job (`JobNotFoundError` for another owner's)."""
        return self.manager.handle(await self._own(job_id))

    async def errors(self, job_id: str, *, limit: int = -1, offset: int = 0) -> list[ItemError]:
        return await self.manager.errors(await self._own(job_id), limit=limit, offset=offset)

    async def error_count(self, job_id: str) -> int:
        return await self.manager.error_count(await self._own(job_id))

    async def items(self, job_id: str, **query: Unpack[ItemQuery]) -> list[ItemRecord]:
        return await self.manager.items(await self._own(job_id), **query)

    async def item_count(self, job_id: str, *, action: str | None = None) -> int:
        return await self.manager.item_count(await self._own(job_id), action=action)

    async def undo(self, job_id: str) -> JobHandle:
        """Undo the owner's job; the undo job is the owner's too."""
        return await self.manager.undo(await self._own(job_id), owner=self.owner)

    async def pause(self, job_id: str) -> None:
        await self.manager.pause(await self._own(job_id))

    async def resume(self, job_id: str, **options: Unpack[ResumeOptions]) -> JobHandle:
        return await self.manager.resume(await self._own(job_id), **options)

    async def cancel(self, job_id: str) -> None:
        await self.manager.cancel(await self._own(job_id))

    async def delete(self, job_id: str) -> None:
        await self.manager.delete(await self._own(job_id))

    async def set_priority(self, job_id: str, priority: int) -> None:
        await self.manager.set_priority(await self._own(job_id), priority)

    async def wait(self, job_id: str) -> JobStatus:
        return await self.manager.wait(await self._own(job_id))

    async def watch(
        self, job_id: str, *, through_pauses: bool = False
    ) -> AsyncGenerator[Progress, None]:
        owned = await self._own(job_id)
        async for snap in self.manager.watch(owned, through_pauses=through_pauses):
            yield snap

    def events(
        self, job_id: str | None = None, *, buffer: int = DEFAULT_BUFFER, items: bool = False
    ) -> OwnerEvents:
        """`JobManager.events` of the owner's jobs only (a foreign ``job_id`` sees nothing)."""

        async def owner_of(job_id: str) -> str | None:
            live = self.manager._live.get(job_id)  # held here: known without the store
            if live is not None:
                return live.info.owner
            try:
                return (await self.manager.get(job_id)).owner
            except JobNotFoundError:
                return None

        return OwnerEvents(
            self.manager.events(job_id, buffer=buffer, items=items), self.owner, owner_of
        )


#: What `submit` names jobs (``secrets.token_hex(6)``): the only job directories swept.
_JOB_ID = re.compile(r"[0-9a-f]{12}")


def _undoing(store: JobStore) -> set[str]:
    """The jobs an undo not yet final (queued, running, paused, failed...) reverts: the
    retention keeps them, as `JobManager.delete` refuses them. The undo reads the job's item
    log on every run and on cancel; with the job forgotten it found an empty log, and
    completed having undone nothing more (or, cancelled, left its held items aside)."""
    return {
        undo.spec_data["job"]
        for undo in store.list_jobs(type=UNDO_JOB_TYPE, results=False)
        if not undo.status.is_final
        and isinstance(undo.spec_data, dict)
        and isinstance(undo.spec_data.get("job"), str)
    }


def _resumable_expired(store: JobStore, older_than: float) -> list[JobInfo]:
    """The ended jobs that finished before ``older_than`` and could still be resumed
    (failed, timed out, skipped): the retention cancels them before it forgets them
    (`JobManager._purge_resumable`)."""
    return [
        info
        for info in store.list_jobs(_RESUMABLE_ENDED)
        if info.finished is not None and info.finished < older_than
    ]


def _left_behind(store: JobStore, root: str, purged: Collection[str]) -> list[str]:
    """The private directories (manifests) in ``root`` (``<store>.d``) of jobs that are final
    (completed, cancelled) or no longer exist: a process killed between a job's last
    transition, or its deletion, and the removal of its directory left them behind (those of
    the ``purged`` jobs are being removed already). Only names of job ids are looked at; any
    other is left alone, and so is every job that may still run (paused, failed, with
    errors, a damaged row)."""
    try:
        names = os.listdir(root)
    except OSError:
        return []
    ids = [n for n in names if _JOB_ID.fullmatch(n) and n not in purged]
    if not ids:
        return []
    statuses = store.statuses(ids)
    return [i for i in ids if (status := statuses.get(i)) is None or status.is_final]


def _check_same_job(
    info: JobInfo, key: str | None, type_name: str, spec: str, owner: str | None
) -> None:
    """Raise `IdempotencyConflictError` unless the job stored under ``key`` is the one
    being submitted (same type, spec and owner): a reused key must not silently hand back
    some other job. Specs are compared as data, not text (a store may reformat JSON)."""
    differs = [
        what
        for what, same in (
            ("type", info.type == type_name),
            ("spec", info.spec_data == json.loads(spec)),
            ("owner", info.owner == owner),
        )
        if not same
    ]
    if "owner" in differs:  # another owner's job is not named to this one
        raise IdempotencyConflictError(
            f"idempotency key {key!r} is already used by a job of another owner; use a new key"
        )
    if differs:
        raise IdempotencyConflictError(
            f"idempotency key {key!r} is already used by job {info.id} with another "
            f"{' and '.join(differs)}; use a new key for a different job"
        )


def _check_timeout(timeout: float | None) -> None:
    if timeout is not None and not timeout > 0:  # NaN too
        raise ValueError(f"timeout must be > 0 seconds, got {timeout}")


def _check_priority(priority: int) -> None:
    """A clear `ValueError` for a priority the store cannot hold (a SQLite INTEGER)."""
    if not -(2**63) <= priority < 2**63:
        raise ValueError(f"priority must fit in 64 bits, got {priority}")


def _stops(status: JobStatus, through_pauses: bool) -> bool:
    """Whether `JobManager.watch` ends at ``status``."""
    return status.is_ended if through_pauses else status.is_resting


def _with_status(snap: Progress, status: JobStatus) -> Progress:
    return dataclasses.replace(snap, status=status.value)


@asynccontextmanager
async def open_manager(
    store_path: str | os.PathLike[str] | JobStore,
    config: ManagerConfig | None = None,
    **options: Unpack[ConfigOptions],
) -> AsyncIterator[JobManager]:
    """Open the store at ``store_path`` and run a manager until the block exits.

    ``store_path`` names a SQLite store file (created if needed), or is a
    ``postgresql://user:password@host/database`` URL (the ``[postgres]`` extra; the schema is
    created if needed), or is an open `JobStore` (closed when the block exits too).

    ``config`` says how (see `ManagerConfig`); keyword ``options`` are its fields, applied on
    top (``open_manager(path, workers=4)``).

    With ``cluster`` (an address, ``local:N`` or a ``distributed.Client``), tasks that may
    run on a cluster go to that Dask cluster; the manager still books every outcome (see
    docs/scale-out.md). An unreachable cluster raises `ClusterError` before any job runs.

    On entry, jobs left running by dead processes become ``interrupted`` (resumed at once
    with ``resume_interrupted``). On exit, running jobs are paused (checkpointed) and queued
    ones become ``interrupted``; ``shutdown_grace`` bounds how long pausing may take before the
    jobs are stopped outright (still checkpointed).
    """
    config = make_config(config, options)  # validated before the store is opened or created
    if isinstance(store_path, str | os.PathLike):
        store: JobStore = await trio.to_thread.run_sync(open_store, store_path)
    else:
        store = store_path
    bridge: ClusterBridge | None = None
    manager = JobManager._create(store, config)
    try:
        if config.cluster is not None:
            from ._cluster import ClusterBridge

            bridge = await trio.to_thread.run_sync(
                ClusterBridge.open, config.cluster, config.cluster_path_map
            )
            manager.cluster = bridge
        await manager._prepare()
        try:
            async with trio.open_nursery() as nursery:
                await manager._start(nursery, config.resume_interrupted)
                ended_by: BaseException | None = None
                try:
                    yield manager
                except BaseException as exc:
                    ended_by = exc
                    raise
                finally:
                    with trio.CancelScope(shield=True):
                        await _shutdown_after(manager, config.shutdown_grace, ended_by)
                    nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            # One error (the caller's own, or the manager's) is raised as itself, so
            # `except StoreError:` and friends work around `async with open_manager(...)`.
            leaves = exception_leaves(group)
            if len(leaves) == 1 and not isinstance(leaves[0], trio.Cancelled):
                raise leaves[0] from None
            raise
    finally:
        if bridge is not None:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(bridge.close)
        listener = manager._listener

        def close() -> None:  # one trip to a thread for both
            try:
                if listener is not None:
                    listener.close()
            finally:
                store.close()

        await trio.to_thread.run_sync(close)


async def _shutdown_after(
    manager: JobManager, grace: float, ended_by: BaseException | None
) -> None:
    """Shut ``manager`` down as its ``async with`` block ends (``ended_by``: the caller's
    error that ended it). A close that fails replaces that error, as Python's ``finally``
    does; its note names it, or the caller's error, the one to fix, was nowhere to be seen
    (a submit refused by a locked store, seen only as the close's refused unregister)."""
    try:
        await manager._shutdown(grace)
    except Exception as exc:
        if ended_by is not None and not isinstance(ended_by, trio.Cancelled):
            exc.add_note(
                f"(raised closing the manager after {type(ended_by).__name__}: {ended_by})"
            )
        raise


__all__ = ["JobHandle", "JobManager", "OwnerView", "open_manager"]
