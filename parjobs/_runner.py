"""Running one job: a run from its claim to its end (context, timeout, retry, cleanup, the
final status), and the pure decision of that status, `classify`."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import shutil
import time
import traceback
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import trio

from ._context import JobContext
from ._events import EventKind
from ._exceptions import (
    Interrupted,
    InvalidTransitionError,
    JobLoadError,
    JobNotFoundError,
    JobSpecError,
    LeaseError,
    StoreError,
)
from ._items import ItemRecord, row_record
from ._job import Job, load_job
from ._manager_core import JobRun, ManagerCore
from ._output import OUTPUT_SINK, OutputLine
from ._progress import ProgressTracker
from ._records import CheckpointBatch, JobInfo
from ._status import JobStatus, paused_by_store, uncleaned

#: How long a cancel may take before the job's trio code is cancelled outright (threads
#: still finish their current chunk: nothing keeps running after the job says cancelled).
HARD_STOP_AFTER = 10.0
#: A run whose last checkpoint the store refuses (a run its failing store paused, mostly)
#: tries again after this long, then twice as long each time, up to `STORE_RETRY_MAX`
#: (seconds): it waits for the store, rather than end the manager with a `StoreError`.
STORE_RETRY = 0.5
STORE_RETRY_MAX = 30.0


@dataclasses.dataclass(frozen=True, slots=True)
class Ending:
    """How a run ends: its status (None: retried after a delay), whether `Job.cleanup`
    runs first (and with which ``cancelled``; None: no cleanup), and the error recorded."""

    status: JobStatus | None
    cleanup: bool | None = None
    error: str | None = None


def classify(
    *,
    lost: str | None,
    timed_out: bool,
    timeout: float | None,
    reason: str | None,
    failure: BaseException | None,
    cancelled_caught: bool,
    retry: bool,
    items_failed: int,
) -> Ending:
    """The end of a run, from what happened to it (a pure function).

    ``lost``: why the run lost its lease (it writes nothing more, cleans nothing); ``timed_out``:
    its timer fired (``timeout`` seconds); ``reason``: the interrupt asked ("pause",
    "cancel" or None); ``failure``: what ``run`` raised; ``cancelled_caught``: its cancel
    scope was cancelled (shutdown, hard stop); ``retry``: the job's retry policy wants
    another attempt; ``items_failed``: items that failed (completed with errors)."""
    interrupted = failure is not None and isinstance(failure, Interrupted)
    if lost is not None:
        return Ending(JobStatus.INTERRUPTED, error=lost)
    if timed_out and reason != "cancel" and (failure is None or interrupted):
        return Ending(JobStatus.TIMED_OUT, cleanup=False, error=f"timed out after {timeout:g} s")
    if failure is not None and reason is None and retry:
        return Ending(None)
    if reason == "cancel":
        return Ending(JobStatus.CANCELLED, cleanup=True)
    if interrupted or (cancelled_caught and reason == "pause"):
        return Ending(JobStatus.PAUSED)
    if cancelled_caught:
        return Ending(JobStatus.INTERRUPTED, error="stopped by the manager")
    if failure is not None:
        detail = "".join(traceback.format_exception_only(type(failure), failure)).strip()
        return Ending(JobStatus.FAILED, cleanup=False, error=detail)
    status = JobStatus.COMPLETED_WITH_ERRORS if items_failed else JobStatus.COMPLETED
    return Ending(status, cleanup=False)


class JobRunner(ManagerCore):
    """The part of a manager that runs jobs and stops them on request."""

    async def _remove_job_dir(self, job_id: str) -> None:
        """Remove a job's private directory (every caller goes through `_remove_tree`, which
        the crash tests replace)."""
        await trio.to_thread.run_sync(_remove_tree, self.job_dir(job_id))

    def _apply_request(self, live: JobRun, request: str) -> None:
        status = JobStatus.CANCELLING if request == "cancel" else JobStatus.PAUSING
        if live.status is not JobStatus.CANCELLING:
            live.set_status(status)
        if live.ctx is not None:
            live.ctx._request(request)
        else:
            live.pending = request
        if request == "cancel" and live.scope is not None:
            live.scope.deadline = min(live.scope.deadline, trio.current_time() + HARD_STOP_AFTER)

    async def _interrupt(self, live: JobRun, request: str, status: JobStatus) -> None:
        if live.status is not status:
            try:
                await self._db(self.store.transition, live.id, status, holder=self.id)
            except LeaseError as exc:
                self._lose(live, str(exc))
                return
        self._apply_request(live, request)

    def _lose(self, live: JobRun, reason: str) -> None:
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

    def _lose_all(self, reason: str) -> None:
        """`_lose` every job this manager holds."""
        for live in list(self._live.values()):
            if not live.rested.is_set() and not live.releasing:
                self._lose(live, reason)

    async def _forward_progress(self, live: JobRun) -> None:
        """Publish the progress snapshots of a run of this manager (~10/s while someone
        listens; the tracker coalesces them)."""
        async for snap in live.tracker.subscribe():
            if self._events.listening:
                self._events.publish(EventKind.PROGRESS, live.id, progress=snap)

    def _publish_output(self, job_id: str, line: OutputLine) -> None:
        self._events.publish(EventKind.OUTPUT, job_id, output=line)

    async def _run(self, live: JobRun, info: JobInfo) -> None:
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

    async def _run_inner(self, live: JobRun, info: JobInfo) -> None:
        live.set_status(JobStatus.RUNNING)
        try:
            if live.job is not None and live.validated:
                job = live.job  # submitted here and validated just before: nothing to block on
            else:
                job = await trio.to_thread.run_sync(_job_to_run, live, info)
        except (JobLoadError, JobSpecError) as exc:
            with trio.CancelScope(shield=True):
                await self._cleanup_offline(info, cancelled=False)  # e.g. partials it left
            await self._finish(live, JobStatus.FAILED, error=str(exc))
            return
        if info.version < type(job).job_type_version and not await self._raise_version(live, job):
            return
        stored_state: object = info.state  # untrusted JSON: must be an object
        if not isinstance(stored_state, dict):
            await self._finish(live, JobStatus.FAILED, error="stored job state is not an object")
            return
        completed = await self._db(self.store.completed_ranges, live.id)
        # Process tasks of this run (in this task's descendants) send their lines here.
        OUTPUT_SINK.set(functools.partial(self._publish_output, live.id))
        tracker = live.tracker
        tracker.restore(info)
        tracker.run_started()
        failure: BaseException | None = None
        value: Any = None
        ctx: JobContext | None = None
        recorded = False  # its last checkpoint
        with trio.CancelScope() as scope:
            live.scope = scope
            try:
                async with trio.open_nursery() as nursery:
                    ctx = JobContext._create(
                        live.id,
                        nursery=nursery,
                        lanes=self.lanes,
                        workers=self.workers,
                        completed=completed,
                        state=dict(info.state),
                        progress=tracker,
                        write=functools.partial(self._write_checkpoint, live.id),
                        load_results=functools.partial(self._load_results, live.id),
                        read_items=self._read_items,
                        run_number=info.runs,
                        job_dir=self.job_dir(live.id),
                        remote=None if self.cluster is None else self.cluster.executor(live.id),
                        cluster_path_map=() if self.cluster is None else self.cluster.path_map,
                        on_store_pause=functools.partial(self._store_pause, live),
                    )
                    live.ctx = ctx
                    if live.pending is not None:
                        self._apply_request(live, live.pending)
                    timer = trio.CancelScope()
                    if info.timeout is not None:
                        left = info.timeout - run_time_so_far(info)
                        nursery.start_soon(self._time_out, live, max(0.0, left), timer)
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
                    recorded = await self._final_checkpoint(live, ctx)
        assert ctx is not None
        if not recorded:  # the manager closes and the store takes no writes: the run
            return  # rests interrupted here, and so does the next manager recover it
        reason = ctx.interrupt_reason
        policy = type(job).retry
        ending = classify(
            lost=live.lost,
            timed_out=live.timed_out,
            timeout=info.timeout,
            reason=reason,
            failure=failure,
            cancelled_caught=scope.cancelled_caught,
            retry=(
                live.lost is None
                and failure is not None
                and reason is None
                and policy is not None
                and policy.should_retry(info.runs, failure)
            ),
            items_failed=tracker.items_failed,
        )
        if ending.status is None:  # a transient failure: queued again after a delay
            assert failure is not None and policy is not None
            await self._retry_job(live, failure, policy.delay(info.runs))
            return
        # (never after a lost lease: that is the new owner's)
        if ending.cleanup is not None and not await self._cleanup(
            job, ctx, live, cancelled=ending.cleanup
        ):  # cut by a closing manager: its end unrecorded, as in `_finish`'s
            live.ctx = None
            live.rest(JobStatus.INTERRUPTED)
            return
        if ending.status not in (JobStatus.COMPLETED, JobStatus.COMPLETED_WITH_ERRORS):
            await self._finish(live, ending.status, error=ending.error or ctx.store_error)
            if ctx.store_error is not None and live.status is JobStatus.PAUSED:
                self._healing.add(live.id)  # recorded paused by its store: resumed later
                assert self._nursery is not None
                self._nursery.start_soon(self._heal, live.id)
            return
        live.value = value
        # Items failed by the cleanup count too (the same rule as classify's).
        status = JobStatus.COMPLETED_WITH_ERRORS if tracker.items_failed else JobStatus.COMPLETED
        tracker.finalize_totals()
        await self._finish(live, status, result=value, encoded=job.result_json(value))

    async def _final_checkpoint(self, live: JobRun, ctx: JobContext) -> bool:
        """Write a run's last checkpoint (`_patiently`); whether it was written. A
        shutdown's hard stop ends the wait too, its batch unrecorded (redone on resume,
        never trusted). Meanwhile housekeeping leaves the run's checkpoints alone
        (``waiting``): this is the only retry."""
        return await self._patiently(live, lambda: ctx.checkpoint(force=True))

    async def _patiently(self, live: JobRun | None, write: Callable[[], Awaitable[object]]) -> bool:
        """Run ``write`` (shielded: a write is never cut in half), a store write of the run's
        end (its last checkpoint, its final status); whether the store took it. While the
        store fails, try again after `STORE_RETRY`, then twice as long each time: the
        manager rides out the outage (a database restart, a full disk freed) and records
        the run's end once it can. Unless the manager is closing: it tries once more at
        once, and if the store still fails, the run ends unrecorded, its error kept for
        `close` to raise (``_unrecorded``: one `StoreError`, not one per run and another
        for the manager's own record), and the next manager to open the store recovers the
        job as ``interrupted`` (or ``paused``), resumable from its last checkpoint. (No
        ``live``: a job with no run here, e.g. the end of a resting job's cancel.)"""
        delay = STORE_RETRY
        failed: StoreError | None = None
        try:
            while True:
                try:
                    with trio.CancelScope(shield=True):
                        await write()
                    failed = None
                    return True
                except StoreError as exc:
                    failed = exc
                    if self._closing:
                        return False
                except BaseException:  # the store answered (the job taken, ...): no outage's
                    failed = None
                    raise
                if live is not None:
                    live.waiting = True
                with trio.move_on_after(delay):
                    await self._closed_event.wait()
                delay = min(2 * delay, STORE_RETRY_MAX)
        finally:
            if live is not None:
                live.waiting = False
            if failed is not None and self._unrecorded is None:
                self._unrecorded = failed

    def _store_pause(self, live: JobRun, reason: str) -> None:
        """The run's checkpoints kept failing and it pauses itself: show it ``pausing``,
        saying why, at once (the store cannot be told: it takes no writes), and count the
        job's store pauses (each waits longer before its resume)."""
        live.set_status(JobStatus.PAUSING)
        self._store_pauses[live.id] = self._store_pauses.get(live.id, 0) + 1
        info = dataclasses.replace(
            live.info, status=JobStatus.PAUSING, error=reason, updated=time.time()
        )
        self._publish_status(info)

    def _steered(self, job_id: str) -> bool:
        """A person paused, cancelled or resumed the job: theirs to decide now, it is no
        longer resumed by itself once the store takes writes again (a run pausing for its
        store rests paused by the person, with no store error). Whether it was to be."""
        healing = job_id in self._healing
        self._healing.discard(job_id)
        live = self._live.get(job_id)
        if live is not None and live.ctx is not None:
            live.ctx.store_error = None
        return healing

    async def _steered_settled(self, job_id: str) -> None:
        """`_steered`, then, if the job was to resume by itself, wait for that resume if it
        is under way (it holds the claim lock across its store call, and backs out when it
        finds the job steered meanwhile: `_heal_once`): the person's pause or cancel then
        finds the job paused as before, never started, not half-way (the store already
        saying queued, this manager's queue not yet)."""
        if self._steered(job_id):
            async with self._claim_lock:
                pass

    async def _heal(self, job_id: str) -> None:
        """Resume a job its failing store paused, once the store takes writes again
        (`parjobs._housekeeping`, which can queue jobs)."""
        raise NotImplementedError

    async def _time_out(self, live: JobRun, seconds: float, scope: trio.CancelScope) -> None:
        """After ``seconds`` (what is left of the job's timeout), stop the job like a pause
        (tasks stop at their next chunk, completions are checkpointed) and let it end
        ``timed_out``."""
        with scope:
            await trio.sleep(seconds)
            live.timed_out = True
            self._apply_request(live, "pause")
            if live.scope is not None:
                live.scope.deadline = min(
                    live.scope.deadline, trio.current_time() + HARD_STOP_AFTER
                )

    async def _retry_job(self, live: JobRun, failure: BaseException, delay: float) -> None:
        """Queue the job again after ``delay`` (a transient failure; attempts are counted in
        ``runs``). Waiters keep waiting: the job is not resting."""
        error = f"attempt {live.info.runs + 1} failed, retrying in {delay:.1f} s: {failure!r}"
        live.releasing = True  # its end: no pause or cancel moves the job meanwhile (`_steer`)
        queued: JobInfo | None = None

        async def requeue() -> None:  # (again after a failed attempt: queued to queued)
            nonlocal queued
            queued = await self._db(
                self.store.transition,
                live.id,
                JobStatus.QUEUED,
                holder=self.id,
                lease=self.id,
                error=error,
            )

        try:
            written = await self._patiently(live, requeue)
        except LeaseError as exc:
            self._lose(live, str(exc))
            await self._finish(live, JobStatus.INTERRUPTED, error=live.lost)
            return
        if not written or queued is None:  # closing, the store failing: as in `_finish`
            live.ctx = None
            live.rest(JobStatus.INTERRUPTED)
            return
        info = queued
        again = JobRun(info)
        again.job = live.job
        self._live[live.id] = again
        live.ctx = None
        live.rest(JobStatus.QUEUED)
        assert self._nursery is not None
        self._nursery.start_soon(self._requeue_later, again, delay)

    async def _requeue_later(self, live: JobRun, delay: float) -> None:
        await trio.sleep(delay)
        if self._live.get(live.id) is live and live.requeued and not self._closing:
            self._queue.append(live)
            self._wake.set()

    async def _raise_version(self, live: JobRun, job: Job) -> bool:
        """Store a job an older version of its type stored as this code's version, before its
        run writes anything: its state from now on may be one that code would misread (a
        dupes ``hash-runs`` value naming the files its run did not hash), so that code must
        refuse it rather than resume it. False when the job is no longer ours (rested
        here: its new owner runs it)."""
        spec = json.dumps(job.to_spec(), allow_nan=False)
        version = type(job).job_type_version
        try:
            await self._db(self.store.raise_version, live.id, version, spec, self.id)
        except LeaseError as exc:
            self._lose(live, str(exc))
            await self._finish(live, JobStatus.INTERRUPTED)
            return False
        return True

    async def _cleanup(self, job: Job, ctx: JobContext, live: JobRun, *, cancelled: bool) -> bool:
        """Run the job's cleanup at the end of its run; False when a closing manager cut it
        (`_cuttable`): nothing is then recorded for the run."""
        with self._cuttable() as cut:
            try:
                await job.cleanup(ctx, cancelled=cancelled)
            except Exception as exc:  # reported, never masks the job's own outcome
                live.error = f"cleanup failed: {exc}"
        return not cut.cancel_called

    @contextlib.contextmanager
    def _cuttable(self) -> Iterator[trio.CancelScope]:
        """A shielded scope for a cleanup that a run's end waits for (a cancel's, most of
        all): nothing but a closing manager stops it, and only once its shutdown grace is
        over (`_shutdown`), rather than wait for a cleanup that never ends (a hung file
        system). A cut run records nothing more: the store still has the job as it was
        (``cancelling``, or running with its cancel asked), and the next manager recovers it
        ``interrupted`` with its cancel pending, which a resume finishes (`CancelPending`)."""
        with trio.CancelScope(shield=True) as scope:
            if self._cut_cleanups:
                scope.cancel()
            self._cleanups.add(scope)
            try:
                yield scope
            finally:
                self._cleanups.discard(scope)

    async def _cleanup_offline(self, info: JobInfo, *, cancelled: bool = True) -> str | None:
        """Run the cleanup of a job that is not running (cancel of a paused, interrupted or
        failed job; a stored job that no longer validates). Field types are still checked:
        cleanup never runs on a spec it cannot trust. Returns, when it cannot run (the job
        type unknown here, a plug-in uninstalled; its spec unreadable), the error text the
        cancelled job records (`uncleaned`), so the user learns what may remain; else None."""
        try:
            job = await trio.to_thread.run_sync(
                functools.partial(load_job, info.type, info.version, info.spec, validate=False)
            )
        except JobLoadError as exc:
            return uncleaned(exc, info.error)
        async with trio.open_nursery() as nursery:
            ctx = JobContext._create(
                info.id,
                nursery=nursery,
                lanes=self.lanes,
                workers=1,
                completed={},
                state=dict(info.state),
                progress=ProgressTracker(info.id),
                write=functools.partial(self._write_offline, info.id),
                load_results=functools.partial(self._load_results, info.id),
                read_items=self._read_items,
                job_dir=self.job_dir(info.id),
            )
            ctx._request("cancel")
            try:
                await job.cleanup(ctx, cancelled=cancelled)
            except Exception:  # a cleanup that fails must not hide the job's own outcome
                pass
            finally:
                ctx._close_pool()
        return None

    async def _finish(
        self,
        live: JobRun,
        status: JobStatus,
        *,
        error: str | None = None,
        result: Any = None,
        encoded: str | None = None,
    ) -> None:
        """Record the run's end: ``status``, ``error``, and for a completed job ``result``,
        stored as ``encoded`` (its JSON text, from `Job.result_json`) if given, else as
        `json.dumps` writes it."""
        if live.lost is not None:  # the job is not ours any more: write nothing for it
            live.ctx = None
            live.rest(JobStatus.INTERRUPTED)
            return
        if status is JobStatus.PAUSED and live.id in self._handing_back:
            status = JobStatus.INTERRUPTED  # a worker closing: another one takes it over
        live.releasing = True
        live.tracker.run_stopped()
        live.tracker.status = status.value
        snap = live.tracker.snapshot()
        error = error or live.error
        # Paused by its failing store: this manager keeps the lease, its reservation to
        # resume the job (`_heal`); recovered as interrupted once this manager is gone.
        keep = status is JobStatus.PAUSED and paused_by_store(error)
        fields: dict[str, Any] = {
            "lease": self.id if keep else None,
            "request": None,
            "progress": json.dumps(snap.to_json()),
            "error": error,
            "run_time": snap.elapsed,  # running time over all runs (the tracker carries it)
        }
        plain = False  # the result is JSON as it is: followers here may use it undecoded
        if status in (JobStatus.COMPLETED, JobStatus.COMPLETED_WITH_ERRORS):
            try:
                fields["result"], plain = encoded or json.dumps(result), True
            except TypeError:
                fields["result"] = json.dumps(result, default=repr)
        stored: JobStatus | None = None  # what the store says once written (None: lost)
        attempts = 0
        # A resumable rest (nothing cleaned up yet) keeps a cancel another process sent
        # meanwhile: the job is cancelling then, and this run finishes the cancel below;
        # a pause sent meanwhile rests an interrupted job (a worker closing) paused, and
        # makes a pause of its failing store a person's (never resumed by itself).
        keep_cancel = status in (JobStatus.PAUSED, JobStatus.INTERRUPTED)

        async def record() -> None:
            nonlocal stored, attempts
            attempts += 1
            stored = await self._record_end(
                live, status, fields, result, plain, attempts > 1, keep=keep_cancel
            )

        if not await self._patiently(live, record) or stored is None:
            # Closing with the store still failing (nothing recorded: the store still says
            # the job runs here, and the next manager to open it recovers it, `_patiently`),
            # or the job taken from this run (its status is not ours to set).
            live.ctx = None
            live.rest(JobStatus.INTERRUPTED)
            return
        status = stored
        if keep_cancel and status is JobStatus.CANCELLING:
            live.ctx = None
            live.error = error or live.error
            await self._finish_cancel(live)
            return
        if status.is_ended:
            self._store_pauses.pop(live.id, None)
        if status.is_final:
            # Recorded: while its directory goes, the run reads as the store does (a
            # resume asked meanwhile is refused as "cancelled", not "cancelling").
            live.set_status(status)
            with trio.CancelScope(shield=True):
                await self._remove_job_dir(live.id)
        live.error = error or live.error
        live.ctx = None
        live.rest(status)

    async def _record_end(
        self,
        live: JobRun,
        status: JobStatus,
        fields: dict[str, Any],
        result: Any,
        plain: bool,
        again: bool,
        *,
        keep: bool,
    ) -> JobStatus | None:
        """One attempt of `_finish`'s write: the status the store now holds for the job
        (``status``; with ``keep``, a resumable rest, ``cancelling`` for a cancel another
        process sent meanwhile, ``paused`` for an interrupted end with a pause sent so: the
        store's `transition`; or what it moved to meanwhile), or None when the job was
        taken from this run (``live.lost`` says why). ``again``: an earlier attempt failed,
        and may have been written all the same (PostgreSQL's connection lost as it
        committed): a job found ended so, its lease and run time as that write left them,
        was ours, and is not written twice. (Its run time tells it from the same end
        written by another manager that recovered the job meanwhile: that run's time
        counts too.)"""
        try:
            stored = await self._db(
                self.store.transition,
                live.id,
                status,
                holder=self.id,
                keep_cancel=keep,
                keep_request=keep,
                job_result=result,
                **fields,
            )
        except InvalidTransitionError:
            # The job moved meanwhile: keep what the store says rather than crash. (Or an
            # earlier attempt landed, keeping a cancel: still leased here, ours to finish.)
            now = await self.get(live.id)
            if keep and now.status is JobStatus.CANCELLING and now.lease == self.id:
                return JobStatus.CANCELLING
            return now.status
        except LeaseError as exc:
            if again:
                found: JobInfo | None
                try:
                    found = await self.get(live.id)
                except JobNotFoundError:
                    found = None
                # (an interrupted end that a pause sent meanwhile rested paused; a store's
                # pause that a person's pause sent so made theirs: no lease)
                written = {status, JobStatus.PAUSED} if keep else {status}
                leases = {fields["lease"], None} if keep else {fields["lease"]}
                if (
                    found is not None
                    and found.status in written
                    and found.lease in leases
                    and found.run_time == fields["run_time"]
                ):
                    if plain:
                        live.ended = dataclasses.replace(found, result=result)
                    return found.status
            live.lost = live.error = str(exc)
            return None
        if stored.status is JobStatus.CANCELLING:
            return stored.status  # a cancel kept: no result to hand on
        if plain:
            live.ended = dataclasses.replace(stored, result=result)
        return stored.status

    async def _finish_cancel(self, live: JobRun) -> None:
        """Finish the cancel of a job resting ``cancelling`` under this manager's lease: a
        cancel another process asked while the run's end (a resumable rest) was written,
        kept by the store, or the cancel of a job queued here. Nobody else resumes or
        cancels it meanwhile. Its cleanup runs once, as for a resting job's cancel
        (`JobManager.cancel`), then the job is recorded ``cancelled`` (never before: a
        waiter finds its temporaries gone), its directory removed, and the run rests. If
        that write is not made (the manager closing with the store failing, or past its
        grace, or the job taken from this manager), the run rests interrupted: the job is
        recovered with its cancel pending, which a resume finishes (`CancelPending`)."""
        live.set_status(JobStatus.CANCELLING)
        found: list[JobInfo] = []

        async def read() -> None:
            found.append(await self._db(self.store.get, live.id))

        written = False
        if await self._patiently(live, read):
            with self._cuttable() as cut:
                skipped = await self._cleanup_offline(found[-1])
            cancelled = self._cancelled_write(live.id, JobStatus.CANCELLING, skipped)
            try:
                written = not cut.cancel_called and await self._patiently(live, cancelled)
            except (LeaseError, InvalidTransitionError) as exc:  # recovered by another one
                live.lost = live.error = str(exc)
        if not written:
            live.rest(JobStatus.INTERRUPTED)
            return
        self._store_pauses.pop(live.id, None)
        # Recorded: while its directory goes, the run reads as the store does (a resume
        # asked meanwhile is refused as "cancelled", not "cancelling").
        live.set_status(JobStatus.CANCELLED)
        with trio.CancelScope(shield=True):
            await self._remove_job_dir(live.id)
        live.rest(JobStatus.CANCELLED)

    def _cancelled_write(
        self, job_id: str, expect: JobStatus, uncleaned: str | None = None
    ) -> Callable[[], Awaitable[None]]:
        """The write, for `_patiently`, that records a job ``cancelled`` once its cleanup ran,
        from ``expect`` (the status it rests in meanwhile, leased here); ``uncleaned``, the
        error it records when its cleanup could not run. A try after one whose answer was
        lost (committed, then the connection failed: PostgreSQL) finds the job cancelled
        already: that was this write, not another manager's."""
        tries = 0
        fields = {} if uncleaned is None else {"error": uncleaned}

        async def write() -> None:
            nonlocal tries
            tries += 1
            try:
                await self._db(
                    self.store.transition,
                    job_id,
                    JobStatus.CANCELLED,
                    expect=expect,
                    holder=self.id,
                    lease=None,
                    request=None,
                    **fields,
                )
            except (InvalidTransitionError, LeaseError):
                statuses = await self._db(self.store.statuses, [job_id])
                if tries == 1 or statuses.get(job_id) is not JobStatus.CANCELLED:
                    raise

        return write

    async def _write_checkpoint(self, job_id: str, batch: CheckpointBatch) -> None:
        """Record a running job's checkpoint, only while this manager holds its lease: a
        run that lost its job stops, and never records over the new owner's progress."""
        live = self._live.get(job_id)
        if live is not None and live.lost is not None:
            return
        try:
            await self._db(self.store.checkpoint, job_id, batch, self.id)
        except LeaseError as exc:
            # A run writing its end, or rested, is not lost by a checkpoint sent before and
            # written after that end released the lease (housekeeping's, under load): its
            # end's write decides (`_record_end`). Taken for lost, it answered `wait` with
            # its own rest for good, the job resumed and completed by another process.
            if live is not None and not live.releasing and not live.rested.is_set():
                self._lose(live, str(exc))
            return
        for error in batch.errors:
            self._events.publish(EventKind.ITEM_ERROR, job_id, error=error)
        if self._events.listening_items:  # numbered as stored, only when somebody asked
            for seq, row in enumerate(batch.items, batch.first_seq):
                self._events.publish(EventKind.ITEM, job_id, record=row_record(row, seq))

    async def _write_offline(self, job_id: str, batch: CheckpointBatch) -> None:
        await self._db(self.store.checkpoint, job_id, batch)

    async def _read_items(self, job_id: str, after: int, limit: int) -> list[ItemRecord]:
        return await self._db(self.store.items, job_id, after=after, limit=limit)

    async def _load_results(self, job_id: str, stage: str) -> dict[int, str]:
        return await self._db(self.store.task_results, job_id, stage)


def run_time_so_far(info: JobInfo) -> float:
    """Seconds the job ran in earlier runs: what its timeout has used up. The stored run
    time is written when a run ends; after a crash the last checkpoint's snapshot knows
    more (it carries the elapsed time of every run until then)."""
    return max(info.run_time, info.progress.elapsed)


def _remove_tree(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)


def _job_to_run(live: JobRun, info: JobInfo) -> Job:
    """The job a run executes: the submitted object (runtime fields kept) or the stored spec
    loaded (field types checked), validated unless it was at submit just before this run;
    every resume validates again (the paths it names may have changed meanwhile). Blocking:
    called in a worker thread."""
    if live.job is None:
        return load_job(info.type, info.version, info.spec)  # validates too
    if not live.validated:
        live.job.validate()
    return live.job
