"""JobContext: what a running job sees — dispatchers, checkpoints, interrupts, progress, state.

The context is the only channel between a job and the manager: the job never touches the
store. Completions flow from the worker pool into per-stage bookkeeping here, and
`JobContext.checkpoint` writes what is new since the previous checkpoint in one transaction.
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from ._dispatch import TaskDispatcher, WorkerPool
from ._indexset import IndexSet, to_ranges
from ._progress import ItemError, ProgressTracker
from ._store import CheckpointBatch
from ._task import Interrupter, Outcome, OutcomeStatus, RetryPolicy

#: A checkpoint requested sooner than this after the previous one is coalesced into the next.
CHECKPOINT_INTERVAL = 0.5


class _Stage:
    """Completion bookkeeping of one dispatcher stage: the durable set plus what is new."""

    def __init__(
        self,
        name: str,
        completed: IndexSet,
        keep_results: bool,
        load_results: Callable[[], Awaitable[dict[int, str]]],
    ) -> None:
        self.name = name
        self.completed = completed
        self.keep_results = keep_results
        self.new: list[int] = []
        self.new_results: list[tuple[int, str]] = []
        self.new_errors: list[ItemError] = []
        self.new_done = 0
        self.new_skipped = 0
        self.new_bytes = 0
        self._load_results = load_results
        self._stored: dict[int, str] | None = None

    def record(self, outcome: Outcome[Any], error: ItemError | None) -> None:
        status = outcome.status
        if status is OutcomeStatus.DONE or status is OutcomeStatus.SKIPPED:
            if self.completed.add(outcome.index):
                self.new.append(outcome.index)
                self.new_done += 1
                self.new_bytes += outcome.bytes
                if status is OutcomeStatus.SKIPPED:
                    self.new_skipped += 1
                if self.keep_results and status is OutcomeStatus.DONE:
                    self.new_results.append((outcome.index, json.dumps(outcome.value)))
        elif error is not None:
            self.new_errors.append(error)

    async def load_results(self) -> None:
        """Fetch the values stored by earlier runs (once), for resumed outcomes."""
        if self.keep_results and self._stored is None:
            self._stored = await self._load_results()

    def stored_result(self, index: int) -> Any:
        text = self._stored.get(index) if self._stored is not None else None
        return None if text is None else json.loads(text)

    def drain(self, batch: CheckpointBatch) -> None:
        if self.new:
            batch.ranges[self.name] = to_ranges(self.new)
            self.new = []
        batch.results.extend((self.name, i, v) for i, v in self.new_results)
        batch.errors.extend(self.new_errors)
        batch.done_items += self.new_done
        batch.skipped_items += self.new_skipped
        batch.done_bytes += self.new_bytes
        self.new_results, self.new_errors = [], []
        self.new_done = self.new_skipped = self.new_bytes = 0


class JobContext:
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
        run_number: int = 1,
        job_dir: str | None = None,
    ) -> None:
        self.job_id = job_id
        self.state: dict[str, Any] = state
        self.progress = progress
        self.run_number = run_number
        self._job_dir = job_dir
        self._nursery = nursery
        self._lanes = lanes
        self._workers = workers
        self._completed_ranges = completed
        self._stages: dict[str, _Stage] = {}
        self._pool: WorkerPool | None = None
        self._interrupter = Interrupter()
        self._write = write
        self._load_results = load_results
        self._last_checkpoint = 0.0
        self._saved_state = json.dumps(state, sort_keys=True)
        self._checkpoint_lock = trio.Lock()

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
        return self._workers

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
            st = _Stage(stage, completed, keep_results, lambda: self._load_results(stage))
            self._stages[stage] = st
        if self._pool is None:
            self._pool = WorkerPool(self, self._nursery, workers=self._workers, lanes=self._lanes)
        return TaskDispatcher(self, st, self._pool, retry=retry, timeout=timeout)

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

    # -- checkpoints ---------------------------------------------------------------------

    async def checkpoint(self, *, force: bool = False, save_progress: bool = False) -> None:
        """Record completions since the previous checkpoint (and ``state`` if it changed).

        Cheap to call after every outcome: unless ``force``, calls within
        `CHECKPOINT_INTERVAL` of the last write are coalesced into the next one. The manager
        also checkpoints in the background and at every end of a run; ``save_progress`` also
        stores a progress snapshot when nothing completed (a long single file), so other
        processes can follow the job.
        """
        due = trio.current_time() - self._last_checkpoint >= CHECKPOINT_INTERVAL
        if not (force or due or save_progress):
            return
        async with self._checkpoint_lock:
            self._last_checkpoint = trio.current_time()
            batch = self._drain(save_progress)
            if batch:
                await self._write(batch)

    def _drain(self, save_progress: bool = False) -> CheckpointBatch:
        batch = CheckpointBatch()
        for stage in self._stages.values():
            stage.drain(batch)
        state = json.dumps(self.state, sort_keys=True)
        if state != self._saved_state:
            batch.state = self._saved_state = state
        if batch or save_progress:
            batch.progress = json.dumps(self.progress.snapshot().to_json())
        return batch

    def _close_pool(self) -> None:
        if self._pool is not None:
            self._pool.close()

    def __repr__(self) -> str:
        return f"<JobContext job={self.job_id} pid={os.getpid()}>"
