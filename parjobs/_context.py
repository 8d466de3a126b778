"""JobContext: what a running job sees — dispatchers, checkpoints, interrupts, progress, state.

The context is the only channel between a job and the manager: the job never touches the
store. Completions flow from the dispatchers into per-stage bookkeeping here, and a
checkpoint writer (one trio task per running job) writes what is new in one transaction as
soon as there is something new and its previous write is done, at most every
`CHECKPOINT_INTERVAL`: a group commit. After a ``kill -9``, a resumed job runs again only
the tasks in flight and those that finished in the last interval (plus one write's time).
"""

from __future__ import annotations

import json
import math
import os
import time
import typing
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import trio

from ._dispatch import TaskDispatcher
from ._exceptions import StoreError
from ._histogram import CHECKPOINT_SECONDS
from ._indexset import IndexSet
from ._items import ItemRecord, ItemRow, Written, item_row
from ._pool import ExecutorFactory, WorkerPool
from ._progress import ProgressTracker
from ._records import CheckpointBatch
from ._stage import Stage
from ._status import STORE_PAUSED
from ._task import Interrupter, RetryPolicy
from ._util import NoPublicConstructor

#: The checkpoint writer starts a write at most this often (seconds): completions arriving
#: meanwhile go into the next write (a group commit). A module attribute, read at each write,
#: so the benchmark can compare intervals.
CHECKPOINT_INTERVAL = 0.05
#: Once checkpoint writes have failed this long in a row (seconds), and at least
#: `FAILED_WRITES_TO_PAUSE` times (a store whose disk is full, a database server that stays
#: unreachable), the job is paused: what it does from then on could not be recorded, and
#: would only be done again after a resume. A store failing for less (a restart, a lock
#: held past the busy timeout once) is only retried.
PAUSE_AFTER_FAILING = 1.0
FAILED_WRITES_TO_PAUSE = 3


@typing.final
class JobContext(metaclass=NoPublicConstructor):
    """Handed to ``Job.run``. Obtain dispatchers, checkpoint, check for interrupts, report
    progress, and keep job-level state that must survive a resume in ``state``.

    ``state`` is a JSON-able dict saved with every checkpoint; it comes back on resume.
    """

    def __init__(
        self,
        job_id: str,
        *,
        nursery: trio.Nursery,
        lanes: dict[str, trio.CapacityLimiter],
        workers: int,
        completed: dict[str, list[tuple[int, int]]],
        state: dict[str, Any],
        progress: ProgressTracker,
        write: Callable[[CheckpointBatch], Awaitable[None]],
        load_results: Callable[[str], Awaitable[dict[int, str]]],
        read_items: Callable[[str, int, int], Awaitable[list[ItemRecord]]] | None = None,
        run_number: int = 1,
        job_dir: str | None = None,
        remote: ExecutorFactory | None = None,
        on_store_pause: Callable[[str], None] | None = None,
        cluster_path_map: tuple[tuple[str, str], ...] = (),
    ) -> None:
        self.job_id = job_id
        #: The cluster's path map (`ManagerConfig.cluster_path_map`) when `clustered`: pairs
        #: (here, there), what the workers see at ``there`` (`parjobs._cluster_remote`).
        self.cluster_path_map = cluster_path_map
        self.state: dict[str, Any] = state
        self.progress = progress
        self.run_number = run_number
        self._job_dir = job_dir
        self._nursery = nursery
        self._completed_ranges = completed
        self._stages: dict[str, Stage] = {}
        self._interrupter = Interrupter()
        # ``remote``: the cluster lane's executor, if the manager has a cluster.
        self._pool = WorkerPool(
            nursery,
            name=job_id,
            interrupter=self._interrupter,
            progress=progress,
            workers=workers,
            lanes=lanes,
            remote=remote,
        )
        self._write = write
        self._load_results = load_results
        self._read_items = read_items
        self._on_store_pause = on_store_pause
        self._saved_state = json.dumps(state, sort_keys=True)
        self._checkpoint_lock = trio.Lock()
        # What a failed write kept, written again before the next one (None: nothing).
        self._pending: CheckpointBatch | None = None
        self._want_progress = False
        self._dirty = trio.Event()  # set when there may be something new to write
        self._writer: trio.CancelScope | None = None  # the writer's scope while it runs
        self._write_begun = -math.inf  # (trio time) writes begin at most an interval apart
        self._closed = False
        self._items: list[ItemRow] = []
        self._undone = 0  # items `count_done_as_failed` took back from the store's done count
        self._failed_writes = 0  # checkpoint writes failed in a row ...
        self._failing_since = 0.0  # ... since then (time.monotonic())
        #: Why the job paused itself (its checkpoints could not be written), for its record;
        #: the manager clears it when a person pauses the job meanwhile (then it stays paused).
        self.store_error: str | None = None

    @property
    def resumed(self) -> bool:
        """True when an earlier run of this job recorded progress."""
        return self.run_number > 1

    @property
    def job_dir(self) -> str:
        """A private directory for this job's own files (e.g. a manifest of walked items),
        created on first use next to the store, kept across resumes, removed when the job
        completes, is cancelled or is deleted."""
        if self._job_dir is None:
            raise RuntimeError("this context has no job directory")
        os.makedirs(self._job_dir, mode=0o700, exist_ok=True)
        return self._job_dir

    @property
    def workers(self) -> int:
        return self._pool.workers

    def recorded_end(self, stages: Iterable[str]) -> int:
        """One past the highest task index the job's earlier runs recorded done in
        ``stages`` (0 when none): a resumed walk whose manifest holds fewer entries than
        that lost some that were done (`parjobs.ops` fails it rather than number files
        anew)."""
        ranges = self._completed_ranges
        return max((b for st in stages for _, b in ranges.get(st, ())), default=0)

    @property
    def clustered(self) -> bool:
        """Whether the manager runs ``cluster`` tasks on a cluster (`parjobs._cluster`): a
        job then leaves such tasks unbundled (a `Bundle` runs here)."""
        return self._pool.queue.remote

    def task_dispatcher(
        self,
        stage: str = "default",
        *,
        keep_results: bool = False,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
    ) -> TaskDispatcher:
        """The dispatcher for ``stage`` (each stage has its own task index space).

        ``keep_results`` stores every task's return value (must be JSON data) with its
        completion, so a resumed run can get the values of skipped tasks back. ``retry`` and
        ``timeout`` are defaults for tasks that do not set their own.
        """
        st = self._stages.get(stage)
        if st is None:
            completed = IndexSet(self._completed_ranges.get(stage, ()))
            st = Stage(
                stage,
                completed,
                keep_results,
                lambda: self._load_results(stage),
                notify=self._nudge,
            )
            self._stages[stage] = st
            self._start_writer()
        return TaskDispatcher._create(st, self._pool, retry=retry, timeout=timeout)

    def start_soon(self, fn: Callable[..., Awaitable[object]], *args: object) -> None:
        """Run ``fn(*args)`` beside the job's tasks, in the run's nursery (e.g. a tree walk
        running ahead of the work). It must end (or be cancelled by the job) before the job's
        ``run`` returns, and must not raise: an error is the job's to report, so hand it over
        (a walk sends it down its channel)."""
        self._nursery.start_soon(fn, *args)

    # -- interrupts ----------------------------------------------------------------------

    @property
    def interrupt_reason(self) -> str | None:
        """None, "pause" or "cancel"."""
        return self._interrupter.reason

    async def check_interrupt(self) -> None:
        """A trio checkpoint that raises `PauseRequested` or `CancelRequested` when the job is
        being paused or cancelled. Call it between steps of job-level work."""
        await trio.lowlevel.checkpoint()
        self._interrupter.check()

    def _request(self, reason: str) -> None:
        self._interrupter.request(reason)

    def count_done_as_failed(self, items: int = 1) -> None:
        """Count as failed ``items`` that an earlier run counted done and checkpointed, and
        that this run did again and failed (a file read again because it changed since):
        progress moves them from done to failed, and the store's done count drops by as many
        with the next checkpoint. Change ``state`` in the same step to say which they were:
        the store no longer counts them, so a resumed run must count each as an item to do
        (it retries what failed, as for any failed item)."""
        self.progress.count_done_as_failed(items)
        self._undone += items
        self._dirty.set()

    # -- the item log --------------------------------------------------------------------

    def record_item(
        self,
        action: str,
        source: str | bytes,
        destination: str | bytes | None = None,
        *,
        bytes: int = 0,
        detail: str | None = None,
        error: str | None = None,
        written: Written | None = None,
    ) -> None:
        """Add a record to the job's item log for work the job did itself, outside a task
        (a task records through `TaskContext.record`, stored with its completion). Stored
        with the next checkpoint, with ``state``: record and update ``state`` together, so a
        resumed run knows what it recorded."""
        record = ItemRecord(
            action,
            os.fsdecode(source),
            None if destination is None else os.fsdecode(destination),
            bytes,
            detail,
            error,
            written,
            stage="job",
        )
        self._items.append(item_row(record))
        self._dirty.set()

    async def job_items(
        self, job_id: str, *, after: int = 0, limit: int = 1000
    ) -> list[ItemRecord]:
        """Up to ``limit`` records of a job's item log (this job's or another's, e.g. the job
        an undo reverses) past ``seq`` ``after``, in order."""
        if self._read_items is None:
            raise RuntimeError("this context cannot read item logs")
        return await self._read_items(job_id, after, limit)

    # -- checkpoints ---------------------------------------------------------------------

    async def checkpoint(self, *, force: bool = False, save_progress: bool = False) -> None:
        """Record completions since the previous checkpoint (and ``state`` if it changed).

        Cheap to call after every outcome: unless ``force``, it only asks the job's checkpoint
        writer for a write (the writer already writes as completions arrive, at most every
        `CHECKPOINT_INTERVAL`). ``force`` writes now and returns once written (e.g. a state
        that must be durable before the job goes on). ``save_progress`` also stores a
        progress snapshot when nothing completed (a long single file), so other processes
        can follow the job; the manager asks for one every second.
        """
        if save_progress:
            self._want_progress = True
        if force or self._writer is None or self._closed:
            await self._flush()
        else:
            self._dirty.set()

    def _nudge(self) -> None:
        self._dirty.set()

    def _start_writer(self) -> None:
        if self._writer is None and not self._closed:
            self._writer = trio.CancelScope()
            self._nursery.start_soon(self._write_loop, self._writer, name=f"checkpoints-{self}")

    async def _write_loop(self, scope: trio.CancelScope) -> None:
        """The checkpoint writer: write as soon as something is new and the previous write
        is done, but start writes at most every `CHECKPOINT_INTERVAL` (group commit)."""
        with scope:
            while True:
                await self._dirty.wait()
                # Spaced from the last write begun (forced ones too), not from the last
                # round: a round that found nothing new wrote nothing, and the next
                # completion went out one interval after it, not at once.
                await trio.sleep_until(self._write_begun + CHECKPOINT_INTERVAL)
                self._dirty = trio.Event()
                await self._flush(retry=True)

    async def _flush(self, *, retry: bool = False) -> None:
        """Drain what is new and write it (shielded: a drained batch is never dropped by a
        cancellation). A store error keeps the batch, written again before anything newer;
        it is raised too unless ``retry`` (the writer: it tries again on its next round).

        A failed write may have committed all the same, its answer lost (a connection cut
        as it committed): written again with more in it, its counts, item records and
        errors were recorded twice ("28 done" of 22, each file twice in the item log). It
        goes again alone now, as it was, and the store skips it if it finds its `mark`."""
        async with self._checkpoint_lock:
            if self._pending is not None:
                pending, self._pending = self._pending, None
                pending.retried = True
                if not await self._write_batch(pending, retry):
                    return
            batch = CheckpointBatch(mark=os.urandom(8).hex())
            self._drain(batch, self._want_progress)
            self._want_progress = False
            if batch:
                await self._write_batch(batch, retry)

    async def _write_batch(self, batch: CheckpointBatch, retry: bool) -> bool:
        """Write ``batch`` (see `_flush`); False when the store failed (kept pending)."""
        with trio.CancelScope(shield=True):
            self._write_begun = trio.current_time()
            try:
                began = time.monotonic()
                await self._write(batch)
                CHECKPOINT_SECONDS.observe(time.monotonic() - began)
            except StoreError as exc:
                self._pending = batch
                if not retry:
                    raise
                self._dirty.set()
                if not self._failed_writes:
                    self._failing_since = began
                self._failed_writes += 1
                failing = time.monotonic() - self._failing_since
                if self._failed_writes >= FAILED_WRITES_TO_PAUSE and (
                    failing >= PAUSE_AFTER_FAILING
                ):
                    self._stop_unrecorded(exc)
                return False
            self._failed_writes = 0
        return True

    def _stop_unrecorded(self, exc: StoreError) -> None:
        """Checkpoints keep failing: pause the job rather than run all its tasks unrecorded
        (it failed only at its final checkpoint, its work since the last one lost). What
        is recorded stays resumable; the writer keeps trying meanwhile. The manager is told
        (``on_store_pause``): it resumes the job once the store takes writes again."""
        if self._interrupter.reason is None:
            self.store_error = (
                f"{STORE_PAUSED} ({exc}); it resumes by itself once the store takes writes again"
            )
            self._request("pause")
            if self._on_store_pause is not None:
                self._on_store_pause(self.store_error)

    def _drain(self, batch: CheckpointBatch, save_progress: bool = False) -> CheckpointBatch:
        for stage in self._stages.values():
            stage.drain(batch)
        if self._items:
            batch.items.extend(self._items)
            self._items = []
        if self._undone:
            batch.done_items -= self._undone
            self._undone = 0
        state = json.dumps(self.state, sort_keys=True)
        if state != self._saved_state:
            batch.state = self._saved_state = state
        if batch or save_progress:
            snapshot = self.progress.snapshot().to_json()
            if batch.mark is not None:
                snapshot["checkpoint"] = batch.mark  # (`Progress.from_json` leaves it out)
            batch.progress = json.dumps(snapshot)
        return batch

    def _close_pool(self) -> None:
        """The job's run is over: close its pool and stop the checkpoint writer (the
        caller writes the final checkpoint, forced)."""
        self._closed = True
        self._pool.close()
        if self._writer is not None:
            self._writer.cancel()  # a write under way finishes first (shielded)

    def __repr__(self) -> str:
        return f"<JobContext job={self.job_id} pid={os.getpid()}>"
