"""The `JobStore` protocol: what the manager, the job context and the CLI need from a job
store (SQLite today, PostgreSQL next), with no backend's types in it."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Any, Protocol, TypedDict, Unpack

from ._items import ItemRecord
from ._progress import ItemError
from ._records import CheckpointBatch, ItemQuery, JobInfo, JobQuery
from ._status import JobStatus


class StoreJobQuery(JobQuery, total=False):
    """`JobQuery` plus what only the layers above the store ask: the jobs changed since
    ``updated_since`` (a time.time() value; the event stream's poll, which reads them with
    ``results=False``: it looks at status and progress)."""

    updated_since: float | None


class NewJobFields(TypedDict, total=False):
    """What a new job may carry beyond its id, type, version and spec (`JobStore.insert_job`):
    ``priority`` (0), ``queue`` ("default"), ``lease`` (the manager that runs it, or None for
    any worker), ``idempotency_key``, ``owner``, ``after`` (prerequisite job ids),
    ``dep_policy`` ("skip" or "run" when a prerequisite fails) and ``timeout`` (seconds)."""

    priority: int
    queue: str
    lease: str | None
    idempotency_key: str | None
    owner: str | None
    after: Iterable[str]
    dep_policy: str
    timeout: float | None


class StoreListener(Protocol):
    """Wake-ups from a store that can send them (PostgreSQL's LISTEN/NOTIFY): the manager
    waits for `fileno` to be readable in trio, then calls `drain`. Never the source of
    truth: a wake-up only makes the manager look at the store sooner than its poll would."""

    def fileno(self) -> int:
        """The socket to wait on."""

    def ping(self) -> bool:
        """Ask the far end for an answer, without blocking (`drain` reads it): whether one
        is awaited (False: a listener with no far end, nothing to ask). A connection that
        stays silent then is dead though still open; `StoreError` when it is gone."""

    def drain(self) -> list[str]:
        """The job ids whose status changed since the last call, without blocking (empty
        when nothing arrived); `StoreError` when the connection is gone."""

    def close(self) -> None:
        """Stop listening and release the connection."""


class JobStore(Protocol):
    """A persistent, multi-process job store.

    Every method blocks (the manager runs them in one worker thread, one at a time) and
    raises `StoreError` (`StoreFormatError` for a damaged or foreign store) when the backend
    fails: no backend exception crosses this interface. Ownership is a lease: a job runs
    only where its ``lease`` names a live manager, and every write on behalf of a run is a
    compare-and-set on that lease (`LeaseError` when it was taken meanwhile). Status changes
    are checked against `TRANSITIONS` (`InvalidTransitionError`); an unknown id raises
    `JobNotFoundError`.
    """

    #: Where the store lives (a file path for SQLite). Jobs keep their private files in
    #: ``<path>.d/<job id>/``, and errors name it.
    path: str

    def close(self) -> None:
        """Release the connection; the object is unusable afterwards."""

    def reopen(self) -> JobStore:
        """A second, independent connection to the same store (`parjobs serve`'s reader:
        its reads never wait behind this connection's calls). The caller closes it."""

    def identity(self) -> object | None:
        """A token that changes when the store is deleted or replaced under a running
        manager (None when it is gone), so the manager stops instead of writing nowhere."""

    # -- managers and leases -----------------------------------------------------------

    def register_manager(self, manager_id: str) -> None:
        """Record a live manager (process identity, host, heartbeat)."""

    def heartbeat(self, manager_id: str) -> bool:
        """Renew the manager's liveness; False when another process declared it dead."""

    def unregister_manager(self, manager_id: str) -> None:
        """Forget the manager and release the leases it holds (clean shutdown)."""

    def recover(self) -> list[str]:
        """Rest the active jobs of dead managers (interrupted, or paused when a pause was
        asked), and as interrupted the jobs resting paused by their failing store whose
        manager (which holds their lease, to resume them) is gone; return their ids."""

    def lease_state(self, manager_id: str) -> tuple[bool, dict[str, str | None]]:
        """(manager still registered, {job id: pending request} of the jobs it holds)."""

    def managers(self) -> list[dict[str, Any]]:
        """The managers sharing the store (id, pid, host, started, heartbeat and its age by
        the store's clock, alive, jobs)."""

    # -- the life of a job -------------------------------------------------------------

    def insert_job(
        self, job_id: str, type_name: str, version: int, spec: str, **fields: Unpack[NewJobFields]
    ) -> tuple[JobInfo, bool]:
        """Insert a queued job, or return the one with the same idempotency key:
        (info, created)."""

    def claim(self, job_id: str, manager_id: str) -> JobInfo:
        """Lease a queued job to ``manager_id`` and mark it running, atomically."""

    def claim_next(self, manager_id: str, capacities: Mapping[str, int]) -> JobInfo | None:
        """For a worker: lease the next queued (or interrupted) job nobody holds, whose
        queue runs fewer jobs in the whole store than its capacity in ``capacities`` and
        whose prerequisites completed, and mark it running, atomically across managers;
        the jobs of dead managers are recovered first. None when none can start now."""

    def listener(self) -> StoreListener | None:
        """A new connection that wakes the manager when a job's status changes anywhere
        (None when the store cannot: the manager polls)."""

    def requeue(self, job_id: str, manager_id: str) -> JobInfo:
        """Resume: queue a resting job, leased to ``manager_id``, atomically."""

    def take(self, job_id: str, manager_id: str, expect: JobStatus) -> JobInfo:
        """Lease a resting job (still ``expect``) for its cancel, without changing its
        status; the cancel is pending (``request``) until the job is recorded cancelled."""

    def transition(
        self,
        job_id: str,
        new: JobStatus,
        *,
        expect: JobStatus | None = None,
        manager: str | None = None,
        holder: str | None = None,
        keep_cancel: bool = False,
        keep_request: bool = False,
        **fields: Any,
    ) -> JobInfo:
        """Move a job to ``new`` and update ``fields`` (result, error, progress, lease,
        request, run_time), atomically: ``expect`` is a compare-and-set on the status,
        ``holder`` on the lease, ``manager`` refuses a job another live manager holds;
        ``keep_cancel``: a cancel another process asked meanwhile makes it ``cancelling``;
        ``keep_request``: such a cancel stays pending on the resting job, a pause rests an
        ``interrupted`` one ``paused``.
        Returns the job as stored, but a ``result`` written here is not decoded back (None)."""

    def request(self, job_id: str, request: str, manager_id: str | None = None) -> bool:
        """Ask the other live process holding the job to pause or cancel it; False when
        none does (the caller acts itself)."""

    def raise_version(self, job_id: str, version: int, spec: str, holder: str) -> None:
        """Store a job an older version of its type stored as ``version``, with ``spec``,
        while ``holder`` holds its lease (`LeaseError` else)."""

    def set_priority(self, job_id: str, priority: int) -> JobInfo:
        """Change the priority of a queued job."""

    def delete(self, job_id: str) -> None:
        """Forget a resting job with everything recorded for it."""

    def purge(
        self, older_than: float, statuses: Iterable[JobStatus], keep: Collection[str] = ()
    ) -> list[str]:
        """Delete the jobs in ``statuses`` finished before ``older_than``, but those in
        ``keep``; their ids."""

    def now(self) -> float:
        """Now by the store's clock (seconds since the epoch), which every manager of the
        store writes a job's end (``finished``) and heartbeats with: the database server's
        on PostgreSQL, whose hosts' clocks may disagree. A retention or ``--older-than``
        reckons from it, so a host whose clock is ahead does not delete jobs early."""

    # -- checkpoints -------------------------------------------------------------------

    def checkpoint(self, job_id: str, batch: CheckpointBatch, holder: str | None = None) -> None:
        """Record what completed since the last checkpoint in one transaction; with
        ``holder``, only while that manager holds the lease (else `LeaseError`, nothing
        written). ``batch.items`` are appended to the job's item log, numbered on from its
        last ``seq``; ``batch.first_seq`` is set to the first one's."""

    def completed_ranges(self, job_id: str) -> dict[str, list[tuple[int, int]]]:
        """Checkpointed completions: stage -> [start, stop) ranges."""

    def task_results(self, job_id: str, stage: str) -> dict[int, str]:
        """Stored task values (JSON) of a stage that keeps them: index -> value."""

    # -- queries -----------------------------------------------------------------------

    def get(self, job_id: str) -> JobInfo:
        """The job's record (`StoreFormatError` naming it when its row is damaged)."""

    def resolve_id(self, prefix: str) -> str:
        """The one job id starting with ``prefix``."""

    def list_jobs(
        self, statuses: Iterable[JobStatus] | None = None, **query: Unpack[StoreJobQuery]
    ) -> list[JobInfo]:
        """Jobs filtered and paged (see `JobQuery`); ``updated_since`` keeps those changed
        since then (a time.time() value)."""

    def statuses(self, job_ids: Iterable[str]) -> dict[str, JobStatus]:
        """The status of each of ``job_ids`` that exists."""

    def status_counts(self) -> dict[str, int]:
        """Jobs per status."""

    def errors(self, job_id: str, *, limit: int = -1, offset: int = 0) -> list[ItemError]:
        """The failed items of the job's latest run, oldest first, paged, each with the
        traceback stored with it (``ItemError.traceback``, "" when none was kept)."""

    def error_count(self, job_id: str) -> int:
        """How many failed items `errors` pages through."""

    def items(self, job_id: str, **query: Unpack[ItemQuery]) -> list[ItemRecord]:
        """The job's item log (every run's, in the order checkpoints stored it), paged (see
        `ItemQuery`). A run's failed-item records are dropped when the next run starts (it
        retries those items), with their errors."""

    def item_count(self, job_id: str, *, action: str | None = None) -> int:
        """How many records `items` pages through."""

    def job_stats(self) -> list[tuple[str, str, str, int, int, int, int]]:
        """Per (type, queue, status): jobs, items done, bytes done, failed items."""
