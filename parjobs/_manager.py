"""JobManager: submit, run, pause, resume and cancel jobs; persistence and recovery.

One manager per process and store (several processes may share a store). Every job this
manager runs lives in the manager's nursery; a job's tasks live in the job's own nursery, so
closing the manager pauses and then stops everything it owns, and nothing outlives it.

Leases: a manager registers itself (pid, start time, host, heartbeat) and claims a job
atomically before running it (a compare-and-set on the lease: a job runs in one place at a
time). A job whose manager died is recovered as ``interrupted`` by the next manager that
opens the store. Pause and cancel requests from other processes travel through the store and
are polled every `REQUEST_POLL` seconds, with the leases: a run whose lease was taken stops at
once and writes nothing more.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import json
import math
import os
import re
import secrets
import shutil
import time
import traceback
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any, TypeVar, Unpack

import trio

from ._config import ConfigOptions, ManagerConfig, make_config
from ._context import JobContext
from ._events import DEFAULT_BUFFER, EventBus, EventKind, EventSubscription
from ._exceptions import (
    Interrupted,
    InvalidTransitionError,
    JobCancelledError,
    JobFailedError,
    JobLoadError,
    JobNotFinishedError,
    JobSpecError,
    LeaseError,
    StoreError,
)
from ._job import Job, dump_job, load_job
from ._jobstore import JobStore
from ._progress import ItemError, Progress, ProgressTracker
from ._records import CheckpointBatch, JobInfo, ManagerStatistics
from ._status import JobStatus, check_transition
from ._store import SQLiteJobStore
from ._util import exception_leaves

R = TypeVar("R")

#: How often the manager looks for pause/cancel requests from other processes.
REQUEST_POLL = 0.2
#: How often the manager renews its lease.
HEARTBEAT = 2.0
#: How long a cancel may take before the job's trio code is cancelled outright (threads
#: still finish their current chunk: nothing keeps running after the job says cancelled).
HARD_STOP_AFTER = 10.0
#: How often a running job's progress snapshot is saved for other processes to see.
PROGRESS_SAVE = 1.0
#: How often the event stream looks at the store for other processes' changes (while
#: somebody listens; this manager's own changes are seen at once).
EVENT_POLL = 0.25
#: Seconds of ``updated`` looked at again before the last seen change (other processes'
#: clocks, and changes committed out of order).
CLOCK_SLACK = 2.0
#: Store calls after which the event stream looks at the store at once.
_STATUS_CHANGING = frozenset(
    {"insert_job", "transition", "requeue", "claim", "take", "recover", "set_priority"}
)
#: How often prerequisites run by other processes are polled.
DEPENDENCY_POLL = 1.0


class _LiveJob:
    """A job this manager is queuing or running (one per run)."""

    _seq = itertools.count()

    def __init__(self, info: JobInfo) -> None:
        self.id = info.id
        self.info = info
        self.priority = info.priority
        self.seq = next(self._seq)
        self.status = info.status
        self.tracker = ProgressTracker(info.id)
        self.tracker.status = info.status.value
        self.tracker.restore(info)
        self.ctx: JobContext | None = None
        self.scope: trio.CancelScope | None = None
        self.pending: str | None = None  # pause/cancel asked before the context existed
        self.value: Any = None
        self.error: str | None = None
        self.rested = trio.Event()
        self.job: Job | None = None  # the submitted object (with runtime fields), if here
        self.timed_out = False
        self.starting = False  # taken from the queue; its run is about to begin
        self.lost: str | None = None  # why this run lost the job (lease gone): it stops
        self.releasing = False  # giving its lease back (finishing, resting while queued)
        self.validated = False  # `job` was validated at submit, moments before this run

    def set_status(self, status: JobStatus) -> None:
        self.status = status
        self.tracker.set_status(status.value)

    def rest(self, status: JobStatus) -> None:
        self.set_status(status)
        self.tracker.run_stopped()
        self.tracker.close()
        self.rested.set()


class JobHandle:
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

    async def progress(self) -> AsyncIterator[Progress]:
        """Snapshots (~10/s) until the job rests: completed, paused, failed, cancelled..."""
        async for snap in self._manager.watch(self.id):
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


class JobManager:
    """Runs jobs from a `JobStore`. Create with `open_manager`."""

    def __init__(self, store: JobStore, config: ManagerConfig) -> None:
        self.config = config
        self.queues = config.queue_capacities()
        self.retention = config.retention
        self._running_by_queue: dict[str, int] = dict.fromkeys(self.queues, 0)
        self._counters = {"tasks": 0, "bytes": 0}
        self.store = store
        self.id = secrets.token_hex(8)
        self.workers = config.workers
        self.max_running = config.max_running
        self.lanes = {name: trio.CapacityLimiter(n) for name, n in config.lane_limits().items()}
        self._db_limiter = trio.CapacityLimiter(1)
        self._live: dict[str, _LiveJob] = {}
        self._queue: list[_LiveJob] = []
        self._running = 0
        self._wake = trio.Event()
        self._nursery: trio.Nursery | None = None
        self._closing = False
        self._identity: object | None = None  # the store's identity (file: dev, inode)
        # The event stream: subscribers, and what the store looked like at the last look.
        self._events = EventBus()
        self._store_changed = trio.Event()
        self._mark: float | None = None
        self._primed = 0.0
        self._known: dict[str, tuple[JobStatus, Progress]] = {}

    # -- plumbing ------------------------------------------------------------------------

    async def _db(self, fn: Callable[..., R], *args: Any, **kwargs: Any) -> R:
        """Run a blocking store call in the store's single worker thread."""
        call = functools.partial(fn, *args, **kwargs)
        result = await trio.to_thread.run_sync(call, limiter=self._db_limiter)
        if getattr(fn, "__name__", "") in _STATUS_CHANGING:
            self._store_changed.set()  # the event stream looks at once
        return result

    async def _prepare(self) -> None:
        """Register, recover the jobs of dead managers, apply retention (may raise
        `StoreError`, before anything runs)."""
        self._identity = await self._db(self.store.identity)
        await self._db(self.store.register_manager, self.id)
        await self._db(self.store.recover)
        await self.purge_expired()
        await self._sweep_job_dirs()

    async def _sweep_job_dirs(self) -> None:
        """Remove the private directories (manifests) of jobs of this store that are final
        (completed, cancelled) or no longer exist: a process killed between a job's last
        transition, or its deletion, and the removal of its directory left it behind. Only
        ``<store>.d/<job id>`` directories are looked at; any other name is left alone, and
        so is every job that may still run (paused, failed, with errors, a damaged row)."""
        root = self.store.path + ".d"
        try:
            names = await trio.to_thread.run_sync(os.listdir, root)
        except OSError:
            return
        ids = [n for n in names if _JOB_ID.fullmatch(n)]
        if not ids:
            return
        statuses = await self._db(self.store.statuses, ids)
        for job_id in ids:
            status = statuses.get(job_id)
            if status is None or status.is_final:
                await trio.to_thread.run_sync(_remove_tree, self.job_dir(job_id))

    async def _start(self, nursery: trio.Nursery, resume_interrupted: bool) -> None:
        self._nursery = nursery
        nursery.start_soon(self._scheduler)
        nursery.start_soon(self._housekeeping)
        nursery.start_soon(self._watch_store)
        if resume_interrupted:
            for info in await self.list_jobs([JobStatus.INTERRUPTED]):
                await self.resume(info.id)

    async def _shutdown(self, grace: float) -> None:
        """Pause what runs (checkpointed, resumable), release queued jobs, unregister."""
        self._closing = True
        for live in list(self._live.values()):
            if live in self._queue:
                await self._rest_queued(live, JobStatus.INTERRUPTED)
            elif live.starting and live.ctx is None and not live.rested.is_set():
                self._apply_request(live, "pause")
            elif live.status in (JobStatus.RUNNING, JobStatus.PAUSING):
                with contextlib.suppress(InvalidTransitionError):  # ended meanwhile
                    await self._interrupt(live, "pause", JobStatus.PAUSING)
        with trio.move_on_after(grace):
            for live in list(self._live.values()):
                await live.rested.wait()
        for live in list(self._live.values()):
            if live.scope is not None and not live.rested.is_set():
                live.scope.cancel()
        for live in list(self._live.values()):
            await live.rested.wait()
        await self._db(self.store.unregister_manager, self.id)

    # -- public API ----------------------------------------------------------------------

    async def submit(
        self,
        job: Job,
        *,
        priority: int | None = None,
        idempotency_key: str | None = None,
        start: bool = True,
        queue: str | None = None,
        owner: str | None = None,
        after: Iterable[str] = (),
        on_dependency_failure: str = "skip",
        timeout: float | None = None,  # noqa: ASYNC109 - a job setting, not this call's
    ) -> JobHandle:
        """Store ``job`` (validated) and queue it to run in this manager.

        ``priority``: higher starts first (FIFO among equals), default the job type's.
        ``queue``: the named queue whose capacity bounds it (default the job type's).
        ``idempotency_key``: a job submitted before with the same key (by any process) is
        returned instead of a duplicate. ``owner``: free-form owner/tenant for filtering.
        ``after``: ids of jobs that must complete first; if one fails, is cancelled or is
        skipped, this job becomes ``skipped`` (``on_dependency_failure="skip"``) or runs
        anyway (``"run"``). ``timeout``: seconds a run may take before the job ends
        ``timed_out`` (its completed work checkpointed). ``start=False`` stores it paused.
        """
        if self._closing:
            raise StoreError("the manager is closing")
        # Validated once, here, off the event loop (validate may stat and resolve paths).
        type_name, version, spec = await trio.to_thread.run_sync(dump_job, job)
        queue = queue or type(job).queue
        if queue not in self.queues:
            known = ", ".join(sorted(self.queues))
            raise ValueError(f"unknown queue {queue!r}; configured queues: {known}")
        if on_dependency_failure not in ("skip", "run"):
            raise ValueError("on_dependency_failure must be 'skip' or 'run'")
        if timeout is not None and not timeout > 0:  # NaN too
            raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
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
            lease=self.id,
            idempotency_key=idempotency_key,
            owner=owner,
            after=after,
            dep_policy=on_dependency_failure,
            timeout=job_timeout,
        )
        if not created:
            return JobHandle(self, info.id)
        if not start:
            await self._db(self.store.transition, info.id, JobStatus.PAUSED, lease=None)
            return JobHandle(self, info.id)
        live = self._enqueue(info)
        live.job = job
        live.validated = True  # just now: its first run need not validate it again
        return JobHandle(self, info.id)

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
        """Delete ended jobs older than the retention setting (no-op without one)."""
        if self.retention is None:
            return []
        ended = [s for s in JobStatus if s.is_ended]
        cutoff = time.time() - self.retention
        ids = await self._db(self.store.purge, cutoff, ended)
        for job_id in ids:
            self._live.pop(job_id, None)
            self._forget(job_id)
            await trio.to_thread.run_sync(_remove_tree, self.job_dir(job_id))
        return ids

    def statistics(self) -> ManagerStatistics:
        """Counters of this manager: jobs running/queued here, per-queue use, and the
        current throughput of its running jobs (tasks/s, bytes/s), plus totals since open."""
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

    def job_dir(self, job_id: str) -> str:
        """Where a job keeps its own files: ``<store>.d/<job id>/``."""
        return os.path.join(self.store.path + ".d", job_id)

    def handle(self, job_id: str) -> JobHandle:
        return JobHandle(self, job_id)

    async def get(self, job_id: str) -> JobInfo:
        """The stored record of a job (raises `JobNotFoundError`)."""
        return await self._db(self.store.get, job_id)

    async def resolve(self, id_prefix: str) -> str:
        """The full id of the job whose id starts with ``id_prefix``."""
        return await self._db(self.store.resolve_id, id_prefix)

    async def list_jobs(
        self,
        status: JobStatus | Iterable[JobStatus] | None = None,
        *,
        type: str | None = None,
        owner: str | None = None,
        order: str = "created",
        limit: int = -1,
        offset: int = 0,
        damaged: list[tuple[str, str]] | None = None,
    ) -> list[JobInfo]:
        """Jobs in the store filtered by status(es), type and owner, ordered by ``created``,
        ``finished``, ``priority``, ``run_time`` or ``updated`` (``-`` prefix: descending),
        paged with ``limit``/``offset``. Damaged rows are left out; pass a list as
        ``damaged`` to get them as (job id, reason)."""
        statuses = [status] if isinstance(status, JobStatus) else status
        return await self._db(
            self.store.list_jobs,
            statuses,
            type=type,
            owner=owner,
            order=order,
            limit=limit,
            offset=offset,
            damaged=damaged,
        )

    async def errors(self, job_id: str, *, limit: int = -1) -> list[ItemError]:
        """Every failed item of the job's latest run, with its reason."""
        return await self._db(self.store.errors, job_id, limit=limit)

    async def pause(self, job_id: str) -> None:
        """Pause a job: running ones stop at the next chunk boundary, keeping their progress.
        Works for jobs run by another process (the request travels through the store)."""
        live = self._live.get(job_id)
        if live is not None and live in self._queue:
            await self._rest_queued(live, JobStatus.PAUSED)
            return
        if live is not None and live.starting and live.ctx is None and not live.rested.is_set():
            self._apply_request(live, "pause")  # applied as soon as its run begins
            return
        if live is not None and live.status in (JobStatus.RUNNING, JobStatus.PAUSING):
            await self._interrupt(live, "pause", JobStatus.PAUSING)
            return
        if await self._db(self.store.request, job_id, "pause", self.id):
            return  # another live process holds it: it pauses the job itself
        info = await self.get(job_id)
        # Nobody live holds it: a compare-and-set on its status and owner.
        await self._db(
            self.store.transition,
            job_id,
            JobStatus.PAUSED,
            expect=info.status,
            manager=self.id,
            lease=None,
            request=None,
        )

    async def cancel(self, job_id: str) -> None:
        """Cancel a job. Running: stops at the next chunk boundary and cleans up. Resting
        (paused, interrupted, failed): cleaned up now. Illegal when completed or cancelled."""
        live = self._live.get(job_id)
        if live is not None and live in self._queue:
            await self._rest_queued(live, JobStatus.CANCELLED)
            await self._cleanup_offline(live.info)
            return
        if live is not None and live.starting and live.ctx is None and not live.rested.is_set():
            self._apply_request(live, "cancel")  # applied as soon as its run begins
            return
        if live is not None and live.status in (
            JobStatus.RUNNING,
            JobStatus.PAUSING,
            JobStatus.CANCELLING,
        ):
            await self._interrupt(live, "cancel", JobStatus.CANCELLING)
            return
        if await self._db(self.store.request, job_id, "cancel", self.id):
            return  # another live process holds it: it stops, cleans up and says cancelled
        info = await self.get(job_id)
        check_transition(job_id, info.status, JobStatus.CANCELLED)
        if info.status.is_active:  # queued, its process gone: a compare-and-set, then clean
            info = await self._db(
                self.store.transition,
                job_id,
                JobStatus.CANCELLED,
                expect=info.status,
                manager=self.id,
                lease=None,
                request=None,
            )
            await self._cleanup_offline(info)
        else:
            # Resting: lease it first, so nobody resumes it while its cleanup runs.
            info = await self._db(self.store.take, job_id, self.id, info.status)
            try:
                await self._cleanup_offline(info)
            finally:
                with trio.CancelScope(shield=True):
                    await self._db(
                        self.store.transition,
                        job_id,
                        JobStatus.CANCELLED,
                        expect=info.status,
                        holder=self.id,
                        lease=None,
                        request=None,
                    )

    async def resume(self, job_id: str) -> JobHandle:
        """Queue a paused, interrupted, failed or completed-with-errors job to run here.
        Completed tasks are skipped; failed ones are retried."""
        live = self._live.get(job_id)
        if live is not None and not live.rested.is_set():
            raise InvalidTransitionError(f"cannot resume job {job_id}: it is {live.status.value}")
        # One transaction: refused (LeaseError) while any other live process holds the job.
        info = await self._db(self.store.requeue, job_id, self.id)
        self._enqueue(info)
        return JobHandle(self, job_id)

    async def delete(self, job_id: str) -> None:
        """Forget a job that rests (its completions, errors and results too)."""
        info = await self.get(job_id)
        if info.status.is_active:
            raise InvalidTransitionError(f"cannot delete job {job_id}: it is {info.status.value}")
        await self._db(self.store.delete, job_id)  # checks again, in its transaction
        self._live.pop(job_id, None)
        self._forget(job_id)
        await trio.to_thread.run_sync(_remove_tree, self.job_dir(job_id))

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
            # or resumed and finished by another process.
            info = await self.get(job_id)
            if info.status.is_resting:
                return info.status
            await trio.sleep(REQUEST_POLL)

    async def watch(self, job_id: str) -> AsyncIterator[Progress]:
        """Progress snapshots of a job until it rests (from the store for other processes)."""
        live = self._live.get(job_id)
        if live is not None:
            async for snap in live.tracker.subscribe():
                yield snap
            return
        last: Progress | None = None
        while True:
            info = await self.get(job_id)
            snap = info.progress
            if info.status.value != snap.status:
                snap = _with_status(snap, info.status)
            if snap != last:
                yield snap
                last = snap
            if info.status.is_resting:
                return
            await trio.sleep(max(REQUEST_POLL, 0.25))

    # -- events --------------------------------------------------------------------------

    def events(
        self, job_id: str | None = None, *, buffer: int = DEFAULT_BUFFER
    ) -> EventSubscription:
        """A subscription to every event from now on: status changes (of every job in the
        store, also those run by other processes), progress snapshots (coalesced; from the
        store, about once a second, for jobs run elsewhere), item errors (of the jobs run
        here, as they are checkpointed) and deletions; only those of ``job_id`` if given::

            with manager.events() as events:
                async for event in events:
                    ...

        Each subscription has its own buffer of ``buffer`` events; when it is full, further
        events are dropped and the next one delivered says how many (``Event.dropped``).
        Publishing never waits for a subscriber."""
        if self._mark is None:  # nobody listened: "from now on" starts here
            self._mark = self._primed = time.time()
            self._known.clear()
        subscription = self._events.subscribe(job_id, buffer=buffer)
        self._store_changed.set()
        return subscription

    def _forget(self, job_id: str) -> None:
        self._known.pop(job_id, None)
        self._events.publish(EventKind.DELETED, job_id)

    async def _forward_progress(self, live: _LiveJob) -> None:
        """Publish the progress snapshots of a run of this manager (~10/s while someone
        listens; the tracker coalesces them)."""
        async for snap in live.tracker.subscribe():
            if self._events.listening:
                self._events.publish(EventKind.PROGRESS, live.id, progress=snap)

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
            self.store.list_jobs, None, order="updated", updated_since=self._mark - CLOCK_SLACK
        )
        for info in changed:
            self._mark = max(self._mark, info.updated)
            known = self._known.get(info.id)
            self._known[info.id] = (info.status, info.progress)
            if known is None and info.updated <= self._primed:
                continue  # it changed before anybody listened
            if known is None or known[0] is not info.status:
                self._events.publish(EventKind.STATUS, info.id, status=info.status, info=info)
            live = self._live.get(info.id)
            running_here = live is not None and not live.rested.is_set()
            if not running_here and known is not None and known[1] != info.progress:
                snap = _with_status(info.progress, info.status)
                self._events.publish(EventKind.PROGRESS, info.id, progress=snap)

    # -- scheduling ----------------------------------------------------------------------

    def _enqueue(self, info: JobInfo) -> _LiveJob:
        previous = self._live.get(info.id)
        live = _LiveJob(info)
        if previous is not None:
            live.job = previous.job  # keep runtime fields across pause/resume
        self._live[info.id] = live
        self._queue.append(live)
        self._wake.set()
        return live

    async def _rest_queued(self, live: _LiveJob, status: JobStatus) -> None:
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

    def _holding(self) -> list[_LiveJob]:
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

    def _lose_all(self, reason: str) -> None:
        """`_lose` every job this manager holds."""
        for live in list(self._live.values()):
            if not live.rested.is_set() and not live.releasing:
                self._lose(live, reason)

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

    def _apply_request(self, live: _LiveJob, request: str) -> None:
        status = JobStatus.CANCELLING if request == "cancel" else JobStatus.PAUSING
        if live.status is not JobStatus.CANCELLING:
            live.set_status(status)
        if live.ctx is not None:
            live.ctx._request(request)
        else:
            live.pending = request
        if request == "cancel" and live.scope is not None:
            live.scope.deadline = min(live.scope.deadline, trio.current_time() + HARD_STOP_AFTER)

    async def _interrupt(self, live: _LiveJob, request: str, status: JobStatus) -> None:
        if live.status is not status:
            try:
                await self._db(self.store.transition, live.id, status, holder=self.id)
            except LeaseError as exc:
                self._lose(live, str(exc))
                return
        self._apply_request(live, request)

    def _lose(self, live: _LiveJob, reason: str) -> None:
        """This run no longer owns its job (its lease was taken, the store is gone): stop it
        at once like a pause, and write nothing more for it (no checkpoint, no cleanup, no
        final status: they belong to the job's new owner, if any)."""
        if live.lost is None:
            live.lost = reason
            live.error = reason
        if live.ctx is None and not live.starting:  # queued here, or waiting for a retry
            if live in self._queue:
                self._queue.remove(live)
            if not live.rested.is_set():
                live.rest(JobStatus.INTERRUPTED)
            return
        if live.ctx is not None:
            live.ctx._request("pause")
        else:
            live.pending = "pause"
        if live.scope is not None:
            live.scope.deadline = min(live.scope.deadline, trio.current_time() + HARD_STOP_AFTER)

    # -- running one job -----------------------------------------------------------------

    async def _run(self, live: _LiveJob, info: JobInfo) -> None:
        assert self._nursery is not None
        self._nursery.start_soon(self._forward_progress, live)
        try:
            await self._run_inner(live, info)
        finally:
            if not live.rested.is_set():  # never leave waiters (or shutdown) hanging
                live.rest(JobStatus.INTERRUPTED)
            self._running -= 1
            self._running_by_queue[info.queue] -= 1
            snap = live.tracker.snapshot()
            self._counters["tasks"] += snap.items_finished
            self._counters["bytes"] += snap.bytes_done
            self._wake.set()

    async def _run_inner(self, live: _LiveJob, info: JobInfo) -> None:
        live.set_status(JobStatus.RUNNING)
        try:
            job = await trio.to_thread.run_sync(_job_to_run, live, info)
        except (JobLoadError, JobSpecError) as exc:
            with trio.CancelScope(shield=True):
                await self._cleanup_offline(info, cancelled=False)  # e.g. partials it left
            await self._finish(live, JobStatus.FAILED, error=str(exc))
            return
        stored_state: object = info.state  # untrusted JSON: must be an object
        if not isinstance(stored_state, dict):
            await self._finish(live, JobStatus.FAILED, error="stored job state is not an object")
            return
        completed = await self._db(self.store.completed_ranges, live.id)
        tracker = live.tracker
        tracker.restore(info)
        tracker.run_started()
        failure: BaseException | None = None
        value: Any = None
        ctx: JobContext | None = None
        with trio.CancelScope() as scope:
            live.scope = scope
            try:
                async with trio.open_nursery() as nursery:
                    ctx = JobContext(
                        live.id,
                        nursery=nursery,
                        lanes=self.lanes,
                        workers=self.workers,
                        completed=completed,
                        state=dict(info.state),
                        progress=tracker,
                        write=functools.partial(self._write_checkpoint, live.id),
                        load_results=functools.partial(self._load_results, live.id),
                        run_number=info.runs,
                        job_dir=self.job_dir(live.id),
                    )
                    live.ctx = ctx
                    if live.pending is not None:
                        self._apply_request(live, live.pending)
                    timer = trio.CancelScope()
                    if info.timeout is not None:
                        nursery.start_soon(self._time_out, live, info.timeout, timer)
                    try:
                        value = await job.run(ctx)
                    except Exception as exc:
                        failure = exc
                    finally:
                        timer.cancel()
                        ctx._close_pool()
            finally:
                # Record what completed, whatever happened (also on manager shutdown).
                if ctx is not None:
                    with trio.CancelScope(shield=True):
                        await ctx.checkpoint(force=True)
        assert ctx is not None
        reason = ctx.interrupt_reason
        retry = type(job).retry
        if live.lost is not None:  # no cleanup: what the job left now belongs to its owner
            await self._finish(live, JobStatus.INTERRUPTED, error=live.lost)
        elif live.timed_out and reason != "cancel" and (failure is None or _is_interrupt(failure)):
            await self._cleanup(job, ctx, live, cancelled=False)
            await self._finish(
                live, JobStatus.TIMED_OUT, error=f"timed out after {info.timeout:g} s"
            )
        elif (
            failure is not None
            and reason is None
            and retry is not None
            and retry.should_retry(info.runs, failure)
        ):
            await self._retry_job(live, failure, retry.delay(info.runs))
        elif reason == "cancel":
            await self._cleanup(job, ctx, live, cancelled=True)
            await self._finish(live, JobStatus.CANCELLED)
        elif (failure is not None and _is_interrupt(failure)) or (
            scope.cancelled_caught and reason == "pause"
        ):
            await self._finish(live, JobStatus.PAUSED)
        elif scope.cancelled_caught:
            await self._finish(live, JobStatus.INTERRUPTED, error="stopped by the manager")
        elif failure is not None:
            await self._cleanup(job, ctx, live, cancelled=False)
            detail = "".join(traceback.format_exception_only(type(failure), failure)).strip()
            await self._finish(live, JobStatus.FAILED, error=detail)
        else:
            await self._cleanup(job, ctx, live, cancelled=False)
            live.value = value
            status = (
                JobStatus.COMPLETED_WITH_ERRORS if tracker.items_failed else JobStatus.COMPLETED
            )
            tracker.finalize_totals()
            await self._finish(live, status, result=value)

    async def _time_out(self, live: _LiveJob, seconds: float, scope: trio.CancelScope) -> None:
        """After ``seconds``, stop the job like a pause (tasks stop at their next chunk,
        completions are checkpointed) and let it end ``timed_out``."""
        with scope:
            await trio.sleep(seconds)
            live.timed_out = True
            self._apply_request(live, "pause")
            if live.scope is not None:
                live.scope.deadline = min(
                    live.scope.deadline, trio.current_time() + HARD_STOP_AFTER
                )

    async def _retry_job(self, live: _LiveJob, failure: BaseException, delay: float) -> None:
        """Queue the job again after ``delay`` (a transient failure; attempts are counted in
        ``runs``). Waiters keep waiting: the job is not resting."""
        error = f"attempt {live.info.runs + 1} failed, retrying in {delay:.1f} s: {failure!r}"
        with trio.CancelScope(shield=True):
            try:
                info = await self._db(
                    self.store.transition,
                    live.id,
                    JobStatus.QUEUED,
                    holder=self.id,
                    lease=self.id,
                    error=error,
                )
            except LeaseError as exc:
                self._lose(live, str(exc))
                await self._finish(live, JobStatus.INTERRUPTED, error=live.lost)
                return
        again = _LiveJob(info)
        again.job = live.job
        self._live[live.id] = again
        live.ctx = None
        live.rest(JobStatus.QUEUED)
        assert self._nursery is not None
        self._nursery.start_soon(self._requeue_later, again, delay)

    async def _requeue_later(self, live: _LiveJob, delay: float) -> None:
        await trio.sleep(delay)
        if self._live.get(live.id) is live and not live.rested.is_set() and not self._closing:
            self._queue.append(live)
            self._wake.set()

    async def _cleanup(self, job: Job, ctx: JobContext, live: _LiveJob, *, cancelled: bool) -> None:
        with trio.CancelScope(shield=True):
            try:
                await job.cleanup(ctx, cancelled=cancelled)
            except Exception as exc:  # reported, never masks the job's own outcome
                live.error = f"cleanup failed: {exc}"

    async def _cleanup_offline(self, info: JobInfo, *, cancelled: bool = True) -> None:
        """Run the cleanup of a job that is not running (cancel of a paused, interrupted or
        failed job; a stored job that no longer validates). Field types are still checked:
        cleanup never runs on a spec it cannot trust."""
        try:
            job = await trio.to_thread.run_sync(
                functools.partial(load_job, info.type, info.version, info.spec, validate=False)
            )
        except JobLoadError:
            return
        async with trio.open_nursery() as nursery:
            ctx = JobContext(
                info.id,
                nursery=nursery,
                lanes=self.lanes,
                workers=1,
                completed={},
                state=dict(info.state),
                progress=ProgressTracker(info.id),
                write=functools.partial(self._write_offline, info.id),
                load_results=functools.partial(self._load_results, info.id),
                job_dir=self.job_dir(info.id),
            )
            ctx._request("cancel")
            try:
                await job.cleanup(ctx, cancelled=cancelled)
            except Exception:  # a cleanup that fails must not hide the job's own outcome
                pass
            finally:
                ctx._close_pool()

    async def _finish(
        self, live: _LiveJob, status: JobStatus, *, error: str | None = None, result: Any = None
    ) -> None:
        if live.lost is not None:  # the job is not ours any more: write nothing for it
            live.ctx = None
            live.rest(JobStatus.INTERRUPTED)
            return
        live.releasing = True
        live.tracker.run_stopped()
        live.tracker.status = status.value
        snap = live.tracker.snapshot()
        fields: dict[str, Any] = {
            "lease": None,
            "request": None,
            "progress": json.dumps(snap.to_json()),
            "error": error or live.error,
            "run_time": snap.elapsed,  # running time over all runs (the tracker carries it)
        }
        if status in (JobStatus.COMPLETED, JobStatus.COMPLETED_WITH_ERRORS):
            fields["result"] = json.dumps(result, default=repr)
        with trio.CancelScope(shield=True):
            try:
                await self._db(self.store.transition, live.id, status, holder=self.id, **fields)
            except InvalidTransitionError:
                # The job moved meanwhile: keep what the store says rather than crash.
                status = (await self.get(live.id)).status
            except LeaseError as exc:  # taken from this run: its status is not ours to set
                live.lost = live.error = str(exc)
                live.ctx = None
                live.rest(JobStatus.INTERRUPTED)
                return
            if status.is_final:
                await trio.to_thread.run_sync(_remove_tree, self.job_dir(live.id))
        live.error = error or live.error
        live.ctx = None
        live.rest(status)

    async def _write_checkpoint(self, job_id: str, batch: CheckpointBatch) -> None:
        """Record a running job's checkpoint, only while this manager holds its lease: a
        run that lost its job stops, and never records over the new owner's progress."""
        live = self._live.get(job_id)
        if live is not None and live.lost is not None:
            return
        try:
            await self._db(self.store.checkpoint, job_id, batch, self.id)
        except LeaseError as exc:
            if live is not None:
                self._lose(live, str(exc))
            return
        for error in batch.errors:
            self._events.publish(EventKind.ITEM_ERROR, job_id, error=error)

    async def _write_offline(self, job_id: str, batch: CheckpointBatch) -> None:
        await self._db(self.store.checkpoint, job_id, batch)

    async def _load_results(self, job_id: str, stage: str) -> dict[int, str]:
        return await self._db(self.store.task_results, job_id, stage)


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


#: What `submit` names jobs (``secrets.token_hex(6)``): the only job directories swept.
_JOB_ID = re.compile(r"[0-9a-f]{12}")


def _remove_tree(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)


def _job_to_run(live: _LiveJob, info: JobInfo) -> Job:
    """The job a run executes: the submitted object (runtime fields kept) or the stored spec
    loaded (field types checked), validated unless it was at submit just before this run;
    every resume validates again (the paths it names may have changed meanwhile). Blocking:
    called in a worker thread."""
    if live.job is None:
        return load_job(info.type, info.version, info.spec)  # validates too
    if not live.validated:
        live.job.validate()
    return live.job


def _is_interrupt(exc: BaseException) -> bool:
    return isinstance(exc, Interrupted)


def _check_priority(priority: int) -> None:
    """A clear `ValueError` for a priority the store cannot hold (a SQLite INTEGER)."""
    if not -(2**63) <= priority < 2**63:
        raise ValueError(f"priority must fit in 64 bits, got {priority}")


def _with_status(snap: Progress, status: JobStatus) -> Progress:
    return dataclasses.replace(snap, status=status.value)


@asynccontextmanager
async def open_manager(
    store_path: str | os.PathLike[str] | JobStore,
    config: ManagerConfig | None = None,
    **options: Unpack[ConfigOptions],
) -> AsyncIterator[JobManager]:
    """Open the store at ``store_path`` and run a manager until the block exits.

    ``store_path`` names a SQLite store file (created if needed), or is an open `JobStore`
    of another kind (closed when the block exits too).

    ``config`` says how (see `ManagerConfig`); keyword ``options`` are its fields, applied on
    top (``open_manager(path, workers=4)``).

    On entry, jobs left running by dead processes become ``interrupted`` (resumed at once
    with ``resume_interrupted``). On exit, running jobs are paused (checkpointed) and queued
    ones become ``interrupted``; ``shutdown_grace`` bounds how long pausing may take before the
    jobs are stopped outright (still checkpointed).
    """
    config = make_config(config, options)  # validated before the store is opened or created
    if isinstance(store_path, str | os.PathLike):
        store: JobStore = await trio.to_thread.run_sync(SQLiteJobStore.open, store_path)
    else:
        store = store_path
    try:
        manager = JobManager(store, config)
        await manager._prepare()
        try:
            async with trio.open_nursery() as nursery:
                await manager._start(nursery, config.resume_interrupted)
                try:
                    yield manager
                finally:
                    with trio.CancelScope(shield=True):
                        await manager._shutdown(config.shutdown_grace)
                    nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            # One error (the caller's own, or the manager's) is raised as itself, so
            # `except StoreError:` and friends work around `async with open_manager(...)`.
            leaves = exception_leaves(group)
            if len(leaves) == 1 and not isinstance(leaves[0], trio.Cancelled):
                raise leaves[0] from None
            raise
    finally:
        await trio.to_thread.run_sync(store.close)


__all__ = ["JobHandle", "JobManager", "open_manager"]
