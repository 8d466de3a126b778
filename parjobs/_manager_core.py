"""The state every part of a job manager shares: its store (reached through one worker
thread), its configuration, the runs it holds (`JobRun`) and its event bus."""

from __future__ import annotations

import dataclasses
import functools
import itertools
import os
import secrets
import typing
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import trio

from ._config import ManagerConfig
from ._context import JobContext
from ._events import EventBus, EventKind
from ._exceptions import StoreError
from ._job import Job
from ._jobstore import JobStore, StoreListener
from ._progress import Progress, ProgressTracker
from ._records import JobInfo
from ._status import JobStatus

if TYPE_CHECKING:  # the cluster lane loads only when a manager is given a cluster
    from ._cluster import ClusterBridge

R = TypeVar("R")

#: Store calls after which the event stream looks at the store at once.
_STATUS_CHANGING = frozenset(
    {
        "insert_job",
        "transition",
        "requeue",
        "claim",
        "claim_next",
        "take",
        "recover",
        "set_priority",
    }
)
#: Store calls whose returned `JobInfo` is a status transition this manager just made: each
#: is published at once (a poll of the store could miss a short-lived status).
_TRANSITIONS = frozenset({"insert_job", "transition", "requeue", "claim", "claim_next"})


class JobRun:
    """A job this manager is queuing or running (one per run): the state bag its
    scheduler, runner and housekeeping share."""

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
        #: The record this run wrote when it ended the job, with ``value`` as its result
        #: (a result that is JSON as it is; see `JobManager.get_rested`).
        self.ended: JobInfo | None = None
        self.error: str | None = None
        self.rested = trio.Event()
        self.job: Job | None = None  # the submitted object (with runtime fields), if here
        self.timed_out = False
        self.starting = False  # taken from the queue; its run is about to begin
        self.lost: str | None = None  # why this run lost the job (lease gone): it stops
        self.releasing = False  # giving its lease back (finishing, resting while queued)
        self.validated = False  # `job` was validated at submit, moments before this run
        self.waiting = False  # its last checkpoint waits for a failing store (backing off)

    @property
    def requeued(self) -> bool:
        """A run a retry policy queued again, waiting out its delay before it joins the
        queue (`_requeue_later`): steered like a queued one (it rests here, never claimed
        later), whether by this process or by another through the store."""
        return self.status is JobStatus.QUEUED and not (
            self.starting or self.releasing or self.rested.is_set()
        )

    def set_status(self, status: JobStatus) -> None:
        self.status = status
        self.tracker.set_status(status.value)

    def rest(self, status: JobStatus) -> None:
        self.set_status(status)
        self.tracker.run_stopped()
        self.tracker.close()
        self.rested.set()


class ManagerCore:
    """What a manager is made of; the scheduler, the runner, housekeeping and the public
    `JobManager` build on it, in that order."""

    def __init__(self, store: JobStore, config: ManagerConfig) -> None:
        self.config = config
        self.queues = config.queue_capacities()
        self.retention = config.retention
        #: Expired jobs the retention keeps, their type not loadable here (reported once).
        self._kept_expired: set[str] = set()
        self._running_by_queue: dict[str, int] = dict.fromkeys(self.queues, 0)
        self._counters = {"tasks": 0, "bytes": 0}
        self.store = store
        self.id = secrets.token_hex(8)
        self.workers = config.workers
        self.max_running = config.max_running
        self.lanes = {name: trio.CapacityLimiter(n) for name, n in config.lane_limits().items()}
        #: The cluster lane (`ManagerConfig.cluster`), set by `open_manager` while it runs.
        self.cluster: ClusterBridge | None = None
        self._db_limiter = trio.CapacityLimiter(1)
        self._live: dict[str, JobRun] = {}
        #: job id -> set when this manager's `cancel` of it (its cleanup) has ended: a
        #: resume or cancel meanwhile waits for it instead of cleaning up beside it.
        self._cancels: dict[str, trio.Event] = {}
        self._queue: list[JobRun] = []
        self._running = 0
        self._wake = trio.Event()
        self._nursery: trio.Nursery | None = None
        self._closing = False
        self._closed_event = trio.Event()  # set with `_closing`: wakes what waits for the store
        #: The cleanups a run's end waits for (`JobRunner._cuttable`), and whether a closing
        #: manager's shutdown grace is over: it cuts them then, never waits for them.
        self._cleanups: set[trio.CancelScope] = set()
        self._cut_cleanups = False
        #: The store's error that kept a run's last checkpoint from being written as the
        #: manager closed: `close` raises it (once) if nothing else says the store failed.
        self._unrecorded: StoreError | None = None
        self._shut_down = False  # `_shutdown` went to its end (it is then not done again)
        self._identity: object | None = None  # the store's identity (file: dev, inode)
        # The event stream: subscribers, and what the store looked like at the last look.
        self._events = EventBus()
        self._store_changed = trio.Event()
        self._mark: float | None = None
        self._primed = 0.0
        #: job id -> (status, progress, updated) as last published or seen.
        #: (``can_resume`` too: an undo taking a job changes it, not its status.)
        self._known: dict[str, tuple[JobStatus, Progress, float, bool]] = {}
        # A worker (`JobManager.work`) claims the store's unheld jobs; `_idle` is set when
        # it found none and runs nothing; jobs it pauses on closing rest interrupted.
        self._claiming = False
        self._claims_open = False  # off again once an until-idle worker is idle
        self._idle = trio.Event()
        self._handing_back: set[str] = set()
        self._claim_lock = trio.Lock()  # held across a claim: closing waits for it
        self._claim_unsure = False  # a worker's claim failed: it may have been committed
        self._listener: StoreListener | None = None  # the store's wake-ups, if it sends any
        #: Jobs their failing store paused, that this manager resumes once the store takes
        #: writes again (a person's pause, resume or cancel takes a job out).
        self._healing: set[str] = set()
        self._store_pauses: dict[str, int] = {}  # job id -> store pauses here (the backoff)

    async def _db(
        self, fn: Callable[..., R], *args: Any, job_result: Any = None, **kwargs: Any
    ) -> R:
        """Run a blocking store call in the store's single worker thread. ``job_result``: the
        object whose JSON a transition stores as ``result`` (the store does not decode what it
        has just written), for the status event it publishes."""
        call = functools.partial(fn, *args, **kwargs)
        result = await trio.to_thread.run_sync(call, limiter=self._db_limiter)
        name = getattr(fn, "__name__", "")
        if name in _STATUS_CHANGING:
            self._store_changed.set()  # the event stream looks at once
            if name in _TRANSITIONS:
                info: object = result
                if name == "insert_job":  # (info, created): a transition only when created
                    info, created = typing.cast(tuple[JobInfo, bool], result)
                    info = info if created else None
                if isinstance(info, JobInfo):
                    if "result" in kwargs:
                        info = dataclasses.replace(info, result=job_result)
                    self._publish_status(info)
        return result

    def _publish_status(self, info: JobInfo) -> None:
        """Publish a status this manager just gave a job (or one the store shows changed),
        with the freshest progress at hand: the tracker's for a run held here. Also the same
        status once the job's `JobInfo.can_resume` changed (an undo took it): a view offers
        a resume by it."""
        if self._mark is None:  # nobody listens
            return
        known = self._known.get(info.id)
        self._known[info.id] = (info.status, info.progress, info.updated, info.can_resume)
        if known is not None and known[0] is info.status and known[3] == info.can_resume:
            return
        live = self._live.get(info.id)
        if live is not None and not live.rested.is_set():
            snap = live.tracker.snapshot()
        else:
            snap = info.progress
        if snap.status != info.status.value:
            snap = dataclasses.replace(snap, status=info.status.value)
        self._events.publish(
            EventKind.STATUS, info.id, status=info.status, info=info, progress=snap
        )

    def job_dir(self, job_id: str) -> str:
        """Where a job keeps its own files: ``<store>.d/<job id>/``."""
        return os.path.join(self.store.path + ".d", job_id)

    async def get(self, job_id: str) -> JobInfo:
        """The stored record of a job (raises `JobNotFoundError`)."""
        return await self._db(self.store.get, job_id)
