"""Core runtime: jobs run, pause, resume, cancel, crash and recover through a real store."""

from __future__ import annotations

import dataclasses
import itertools
import os
import signal
import textwrap
import time
from typing import Any

import pytest
import trio
from _forkcli import Forked
from _jobs import CountJob, KeepsPartialJob, SlowCleanupJob, logged, read_log

import parjobs
import parjobs._manager as parjobs_manager
from parjobs import JobStatus
from parjobs._records import CheckpointBatch

pytestmark = pytest.mark.both_stores  # the same suite on SQLite and PostgreSQL


async def test_ten_thousand_tasks_each_run_exactly_once(store_path, tmp_path):
    log = str(tmp_path / "log")
    async with parjobs.open_manager(store_path) as manager:
        handle = await manager.submit(CountJob(n=10_000, log=log))
        assert await handle.result() == {"done_this_run": 10_000, "runs": 1}
        info = await handle.info()
    ran = read_log(log)
    assert sorted(ran) == list(range(10_000))
    assert info.status is JobStatus.COMPLETED
    assert info.progress.items_done == 10_000
    assert info.done_items == 10_000


async def test_pause_halfway_then_resume_runs_everything_once(store_path, tmp_path):
    """(Its tasks from the 300th on wait for a flag file, made before the resume: free, the
    last 200 (0.25 s) ran before the pause under load, the job completed.)"""
    log, flag = str(tmp_path / "log"), str(tmp_path / "flag")
    n = 400
    async with parjobs.open_manager(store_path, workers=4) as manager:
        handle = await manager.submit(CountJob(n=n, log=log, sleep=0.005, hold=flag, hold_from=300))
        while logged(log) < n // 2:
            await trio.sleep(0.01)
        await manager.pause(handle.id)
        assert await handle.wait() is JobStatus.PAUSED
        paused_info = await handle.info()
        done_at_pause = len(read_log(log))
        assert 0 < done_at_pause < n
        assert paused_info.progress.items_done == paused_info.done_items
        # nothing runs while paused
        await trio.sleep(0.2)
        assert len(read_log(log)) == done_at_pause

        open(flag, "w").close()
        await manager.resume(handle.id)
        snaps = []
        async for snap in handle.progress():
            snaps.append(snap)
        result = await handle.result()
    ran = read_log(log)
    assert sorted(ran) == list(range(n)), "every task ran exactly once overall"
    assert result["runs"] == 1  # state saved at the end of the completed run only
    # progress continues from where it was, monotonically
    done = [s.items_done for s in snaps]
    assert done[0] >= paused_info.done_items
    assert done == sorted(done)
    assert snaps[-1].items_done == n and snaps[-1].status == "completed"


async def test_cancel_stops_promptly_and_nothing_keeps_running(store_path, tmp_path):
    """A cancel ends the job without waiting for its tasks (each sleeps 0.5 s in 50 steps;
    the rest of the job would take ~20 minutes), and no task runs after it. The bound is
    wall time: 1 s measured 1.01 s once on PostgreSQL at load 15 (session 21), so it is 3 s,
    still far from what waiting for the tasks would take."""
    log = str(tmp_path / "log")
    async with parjobs.open_manager(store_path, workers=4) as manager:
        handle = await manager.submit(CountJob(n=10_000, log=log, sleep=0.5, chunks=50))
        while handle.status is not JobStatus.RUNNING:
            await trio.sleep(0.01)
        await trio.sleep(0.2)
        t0 = time.monotonic()
        await manager.cancel(handle.id)
        assert await handle.wait() is JobStatus.CANCELLED
        assert time.monotonic() - t0 < 3.0
        count = len(read_log(log))
        await trio.sleep(0.3)
        assert len(read_log(log)) == count, "a task kept running after cancelled"
        with pytest.raises(parjobs.JobCancelledError):
            await handle.result()
        with pytest.raises(parjobs.InvalidTransitionError, match=r"cannot cancel .* cancelled"):
            await manager.cancel(handle.id)
        with pytest.raises(parjobs.InvalidTransitionError, match="cannot resume"):
            await manager.resume(handle.id)


async def test_failing_task_is_reported_and_siblings_go_on(store_path, tmp_path):
    log = str(tmp_path / "log")
    async with parjobs.open_manager(store_path) as manager:
        handle = await manager.submit(CountJob(n=100, log=log, fail_every=25))
        await handle.result()
        info = await handle.info()
        errors = await manager.errors(handle.id)
    assert info.status is JobStatus.COMPLETED_WITH_ERRORS
    assert sorted(e.index for e in errors) == [0, 25, 50, 75]
    assert all(e.error == "ValueError" and "is bad" in e.message for e in errors)
    assert len(read_log(log)) == 96
    assert info.progress.items_failed == 4 and info.progress.items_done == 96


async def test_resume_of_completed_job_is_refused(store_path, tmp_path):
    async with parjobs.open_manager(store_path) as manager:
        handle = await manager.submit(CountJob(n=3, log=str(tmp_path / "log")))
        await handle.result()
        with pytest.raises(parjobs.InvalidTransitionError, match="it is completed"):
            await manager.resume(handle.id)
        with pytest.raises(parjobs.InvalidTransitionError):
            await manager.pause(handle.id)


async def test_progress_is_monotone_and_final_totals_exact(store_path, tmp_path):
    async with parjobs.open_manager(store_path, workers=3) as manager:
        handle = await manager.submit(CountJob(n=300, log=str(tmp_path / "l"), sleep=0.002))
        snaps = [s async for s in handle.progress()]
    for a, b in itertools.pairwise(snaps):
        assert b.items_done >= a.items_done
        assert b.bytes_done >= a.bytes_done
        assert b.elapsed >= a.elapsed
    final = snaps[-1]
    assert (final.items_done, final.items_total) == (300, 300)
    assert (final.bytes_done, final.bytes_total) == (3000, 3000)
    assert final.in_flight == 0 and final.status == "completed"


async def test_many_subscribers_and_a_stuck_one_do_not_slow_the_job(store_path, tmp_path):
    async with parjobs.open_manager(store_path) as manager:
        handle = await manager.submit(CountJob(n=2000, log=str(tmp_path / "l")))
        stuck = handle.progress()
        await stuck.__anext__()  # subscribes, then never reads again
        results = []

        async def follow():
            results.append([s async for s in handle.progress()])

        async with trio.open_nursery() as nursery:
            for _ in range(5):
                nursery.start_soon(follow)
        await handle.result()
        await stuck.aclose()
    assert all(r[-1].items_done == 2000 for r in results)
    # coalesced: ~10 per second, never one per task
    assert all(len(r) < 200 for r in results)


async def test_manager_restart_recovers_running_job_as_interrupted(store_path, tmp_path):
    log = str(tmp_path / "log")
    child = _spawn_child(store_path, log, n=3000, sleep=0.002)
    try:
        await _wait_for_lines(log, 500)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait()
    ran_before = read_log(log)
    async with parjobs.open_manager(store_path) as manager:
        (info,) = await manager.list_jobs()
        assert info.status is JobStatus.INTERRUPTED
        checkpointed = info.done_items
        assert 0 < checkpointed <= len(ran_before)
        handle = await manager.resume(info.id)
        await handle.result()
        final = await handle.info()
    ran = read_log(log)
    assert set(ran) == set(range(3000))
    assert final.status is JobStatus.COMPLETED and final.done_items == 3000
    # a task may rerun only if its completion was not checkpointed before the kill
    reruns = len(ran) - 3000
    assert reruns <= len(ran_before) - checkpointed


async def test_pause_from_another_process_through_the_store(store_path, tmp_path):
    log = str(tmp_path / "log")
    child = _spawn_child(store_path, log, n=100_000, sleep=0.001, wait_result=True)
    try:
        await _wait_for_lines(log, 100)
        async with parjobs.open_manager(store_path) as manager:
            (info,) = await manager.list_jobs()
            assert info.status is JobStatus.RUNNING
            with pytest.raises(parjobs.LeaseError):
                await manager._db(manager.store.claim, info.id, manager.id)
            await manager.pause(info.id)
            status = await manager.wait(info.id)
            assert status is JobStatus.PAUSED
        out, err = child.communicate(timeout=20)
        assert "paused" in out, err
    finally:
        child.kill()
        child.wait()


def _spawn_child(store_path, log, *, n, sleep, wait_result=False):
    code = textwrap.dedent(
        f"""
        import sys, trio
        sys.path.insert(0, {os.path.dirname(os.path.dirname(__file__))!r})
        import parjobs
        from _jobs import CountJob
        async def main():
            async with parjobs.open_manager({store_path!r}, workers=4) as m:
                h = await m.submit(CountJob(n={n}, log={log!r}, sleep={sleep}))
                print(await h.wait(), flush=True)
        trio.run(main)
        """
    )
    # Forked from the tests' warm interpreter (tests/_forkcli.py): a process of its own (kill
    # -9 ends it), without a fresh interpreter's ~0.5 s of CPU for its imports.
    return Forked([], code=code)


async def _wait_for_lines(log, n, timeout=30):
    with trio.fail_after(timeout):
        while logged(log) < n:
            await trio.sleep(0.01)


async def test_a_job_held_by_a_live_manager_is_never_taken_over(store_path, tmp_path):
    """Two managers on one store (both alive): while one holds a job (queued or running
    there), the other's resume is refused with LeaseError, and its pause only sends a
    request, which the holder honours (it alone changes the job's status).

    No speed assumed (each failed under load): the job's tasks from the 20th on wait for a
    flag file, made once it rests paused (it completed before the holder saw the pause);
    the holder writes ``pausing`` only once the test has read the request (it was seen
    acted on already)."""
    log, flag = str(tmp_path / "log"), str(tmp_path / "flag")
    async with parjobs.open_manager(store_path) as m1, parjobs.open_manager(store_path) as m2:
        read = trio.Event()
        real_db = m1._db

        async def db(fn: Any, *args: Any, **kwargs: Any) -> Any:
            if getattr(fn, "__name__", "") == "transition" and JobStatus.PAUSING in args:
                await read.wait()
            return await real_db(fn, *args, **kwargs)

        m1._db = db  # type: ignore[method-assign]
        handle = await m1.submit(CountJob(n=40, log=log, hold=flag, hold_from=20), start=False)
        await m1.resume(handle.id)
        with pytest.raises(parjobs.LeaseError, match="in another parjobs process"):
            await m2.resume(handle.id)
        while (await m2.get(handle.id)).status is not JobStatus.RUNNING:
            await trio.sleep(0.01)
        with pytest.raises(parjobs.LeaseError):
            await m2.resume(handle.id)
        await m2.pause(handle.id)
        info = await m2.get(handle.id)
        assert (info.status, info.request, info.lease) == (JobStatus.RUNNING, "pause", m1.id)
        read.set()
        assert await m2.wait(handle.id) is JobStatus.PAUSED
        info = await m2.get(handle.id)
        assert info.lease is None and info.request is None
        open(flag, "w").close()
        await m2.resume(handle.id)  # resting now: anyone may take it
        assert await handle.wait() is JobStatus.COMPLETED
    assert sorted(read_log(log)) == list(range(40))


async def test_a_checkpoint_refused_after_the_runs_end_does_not_lose_its_job(store_path, tmp_path):
    """A checkpoint sent before a run's end and written after it (housekeeping's, on a
    loaded machine) is refused, the lease released: the run is not taken for lost, and
    the manager's `wait` follows the store once another manager resumes the job. (Taken
    for lost, the run answered its own ``paused`` for good, the job completed elsewhere.)"""
    log, flag = str(tmp_path / "log"), str(tmp_path / "flag")
    async with parjobs.open_manager(store_path) as m1, parjobs.open_manager(store_path) as m2:
        handle = await m1.submit(CountJob(n=3, log=log, hold=flag, hold_from=1))
        with trio.fail_after(10):
            while logged(log) < 1:
                await trio.sleep(0.01)
        await m1.pause(handle.id)
        assert await handle.wait() is JobStatus.PAUSED
        open(flag, "w").close()
        await m2.resume(handle.id)  # leased to m2 now
        # The late write, as it reached the store in the flaky run (test above).
        await m1._write_checkpoint(handle.id, CheckpointBatch(progress="{}"))
        with trio.fail_after(10):
            assert await handle.wait() is JobStatus.COMPLETED
    assert sorted(read_log(log)) == [0, 1, 2]


async def test_errors_are_paged_and_counted(store_path, tmp_path):
    async with parjobs.open_manager(store_path) as manager:
        handle = await manager.submit(CountJob(n=10, log=str(tmp_path / "log"), fail_every=3))
        assert await handle.wait() is JobStatus.COMPLETED_WITH_ERRORS
        everything = await manager.errors(handle.id)
        assert sorted(e.index for e in everything) == [0, 3, 6, 9]
        assert await manager.error_count(handle.id) == 4
        page = await manager.errors(handle.id, limit=2, offset=1)
        assert page == everything[1:3]


async def test_opening_removes_the_job_directories_left_behind_and_only_those(tmp_path):
    """As it opens, a manager removes the private directories a killed process left behind:
    of a completed job, of a job no longer in the store, of a job its retention purges now
    (in the trip that registers it). It keeps those of jobs that may still run (paused) and
    any name that is no job id."""
    store, log = str(tmp_path / "jobs.sqlite"), str(tmp_path / "log")
    async with parjobs.open_manager(store) as manager:
        done = await manager.submit(CountJob(n=1, log=log))
        assert await done.wait() is JobStatus.COMPLETED
        paused = await manager.submit(CountJob(n=1, log=log), start=False)
    root = tmp_path / "jobs.sqlite.d"
    names = [done.id, "0123456789ab", paused.id, "notes"]
    for name in names:
        (root / name).mkdir(parents=True, exist_ok=True)
    async with parjobs.open_manager(store):
        assert sorted(os.listdir(root)) == sorted([paused.id, "notes"])
    (root / done.id).mkdir()
    async with parjobs.open_manager(store, retention=1e-6) as manager:
        assert [info.id for info in await manager.list_jobs()] == [paused.id]
        assert sorted(os.listdir(root)) == sorted([paused.id, "notes"])


async def _ended_with_partials(manager: parjobs.JobManager, tmp_path: Any) -> list[str]:
    """A failed and a timed-out `KeepsPartialJob`, each with its partial: their paths."""
    paths = [str(tmp_path / "failed.part"), str(tmp_path / "timed-out.part")]
    failed = await manager.submit(KeepsPartialJob(partial=paths[0]))
    late = await manager.submit(KeepsPartialJob(partial=paths[1], hang=True), timeout=0.01)
    assert await failed.wait() is JobStatus.FAILED
    assert await late.wait() is JobStatus.TIMED_OUT
    assert all(os.path.exists(p) for p in paths)
    return paths


async def test_retention_at_open_cleans_up_resumable_jobs_before_forgetting_them(
    store_path: str, tmp_path: Any
) -> None:
    """A failed or timed-out job past the retention is cancelled (its cleanup removes the
    partials kept for its resume), then forgotten; it was forgotten with its partials left
    for good (nothing removes them once its name token is gone)."""
    async with parjobs.open_manager(store_path) as manager:
        paths = await _ended_with_partials(manager, tmp_path)
    async with parjobs.open_manager(store_path, retention=1e-6) as manager:
        assert await manager.list_jobs() == []
    assert not any(os.path.exists(p) for p in paths)


async def test_retention_sweep_cleans_up_resumable_jobs_before_forgetting_them(
    store_path: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As at open, in the sweep of a manager that stays open (``serve``, ``worker``)."""
    monkeypatch.setattr(parjobs_manager, "RETENTION_SWEEP", 0.05)
    async with parjobs.open_manager(store_path) as manager:
        paths = await _ended_with_partials(manager, tmp_path)
    async with parjobs.open_manager(store_path, retention=3600) as manager:
        assert len(await manager.list_jobs()) == 2  # not expired yet
        manager.retention = 1e-6  # now they are: the next sweep purges them
        with trio.fail_after(20):
            while await manager.list_jobs():
                await trio.sleep(0.05)
        assert not any(os.path.exists(p) for p in paths)


class _Odd:
    def __repr__(self) -> str:
        return "<odd>"


@parjobs.job_type("test-returns", version=1)
class ReturnsJob(parjobs.Job):
    """Returns a tuple in its result, and with ``odd`` an object JSON cannot hold."""

    odd: bool = False

    async def run(self, ctx: parjobs.JobContext) -> dict[str, object]:
        return {"pair": (1, 2), "odd": _Odd() if self.odd else None}


async def test_get_rested_gives_the_result_returned_here_once_the_store_holds_it(store_path):
    """What the CLI shows of a job it ran: the record its run wrote, with the result the job
    returned (the tuple, not the list the store's JSON gives back); a result JSON cannot
    hold as it is, and a status that is not the run's, are read from the store."""
    async with parjobs.open_manager(store_path) as manager:
        plain = await manager.submit(ReturnsJob())
        odd = await manager.submit(ReturnsJob(odd=True))
        assert await plain.wait() is JobStatus.COMPLETED
        assert await odd.wait() is JobStatus.COMPLETED
        here = await manager.get_rested(plain.id, JobStatus.COMPLETED)
        stored = await manager.get(plain.id)
        assert here.result == {"pair": (1, 2), "odd": None}
        assert stored.result == {"pair": [1, 2], "odd": None}
        assert here == dataclasses.replace(stored, result=here.result)
        assert (await manager.get_rested(plain.id, JobStatus.CANCELLED)).result == stored.result
        assert (await manager.get_rested(odd.id, JobStatus.COMPLETED)).result == {
            "pair": [1, 2],
            "odd": "<odd>",
        }


async def test_a_job_ended_in_the_store_reads_so_while_its_directory_goes(
    store_path, tmp_path, monkeypatch
):
    """Once a run has recorded a job's final status it removes the job's private directory,
    then rests: a resume asked in between is refused with the status the store holds
    ("cancelled"), not the run's last ("cancelling"); the server's API showed the one and
    answered with the other under load."""
    import threading

    import parjobs._runner as runner_module

    gate, removing = threading.Event(), threading.Event()
    remove = runner_module._remove_tree

    def slowly(path: str) -> None:
        removing.set()
        gate.wait(30)
        remove(path)

    monkeypatch.setattr(runner_module, "_remove_tree", slowly)
    async with parjobs.open_manager(store_path) as m:
        handle = await m.submit(CountJob(n=400, log=str(tmp_path / "log"), sleep=0.01))
        with trio.fail_after(30):
            while (await m.get(handle.id)).status is not JobStatus.RUNNING:
                await trio.sleep(0.01)
        await m.cancel(handle.id)
        try:
            assert await trio.to_thread.run_sync(removing.wait, 30)
            assert (await m.get(handle.id)).status is JobStatus.CANCELLED
            with pytest.raises(parjobs.InvalidTransitionError, match=r"it is cancelled$"):
                await m.resume(handle.id)
        finally:
            gate.set()
        assert await handle.wait() is JobStatus.CANCELLED


async def stored_resting(m: parjobs.JobManager, status: JobStatus, log: str, hold: str = "") -> str:
    """A job of ``m`` resting ``status``: paused (stored so, never run) or completed with
    errors (every fifth task fails, on every run). With ``hold``, its tasks wait for that
    path in a later run until it is made again (the first run finds it)."""
    if status is JobStatus.PAUSED:
        return (await m.submit(CountJob(n=20, log=log, hold=hold), start=False)).id
    if hold:
        open(hold, "w").close()
    handle = await m.submit(CountJob(n=20, log=log, fail_every=5, hold=hold))
    assert await handle.wait() is status
    if hold:
        os.unlink(hold)
    return handle.id


@pytest.mark.parametrize("status", [JobStatus.PAUSED, JobStatus.COMPLETED_WITH_ERRORS])
async def test_an_undo_loses_to_a_resume_elsewhere_after_it_read_the_job(
    store_path, tmp_path, status
):
    """Manager B resumes the job just after A's undo read it resting: the undo is refused
    (a clear error), nothing is submitted or cancelled, and the job runs to its end in B,
    not undone while it runs there. (B's run waits for ``hold`` until the undo was
    refused: under load, a run completed with errors again before the undo's
    compare-and-set, which then rightly took the job at rest.)"""
    hold = str(tmp_path / "hold")
    async with (
        parjobs.open_manager(store_path) as a,
        parjobs.open_manager(store_path) as b,
    ):
        job_id = await stored_resting(a, status, str(tmp_path / "log"), hold)
        real = a._db
        resumed: list[object] = []

        async def db(fn, *args, **kwargs):
            got = await real(fn, *args, **kwargs)
            if getattr(fn, "__name__", "") == "get" and not resumed:
                resumed.append(await b.resume(job_id))
            return got

        a._db = db  # type: ignore[method-assign]
        with pytest.raises(parjobs.InvalidTransitionError, match=f"cannot undo job {job_id}"):
            await a.undo(job_id)
        a._db = real  # type: ignore[method-assign]
        assert resumed
        open(hold, "w").close()
        ended = JobStatus.COMPLETED if status is JobStatus.PAUSED else status
        assert await b.wait(job_id) is ended
        assert await a.list_jobs(type="undo") == []


async def test_a_resume_elsewhere_loses_to_an_undo_that_took_the_job(store_path, tmp_path):
    """Manager B resumes a job completed with errors just after A's undo took it (before
    the undo job is stored): the resume is refused, and only the undo runs."""
    async with (
        parjobs.open_manager(store_path) as a,
        parjobs.open_manager(store_path) as b,
    ):
        job_id = await stored_resting(a, JobStatus.COMPLETED_WITH_ERRORS, str(tmp_path / "log"))
        real = a._db
        refused: list[BaseException | None] = []

        async def db(fn, *args, **kwargs):
            if getattr(fn, "__name__", "") == "insert_job" and not refused:
                try:
                    await b.resume(job_id)
                except parjobs.InvalidTransitionError as exc:
                    refused.append(exc)
                else:
                    refused.append(None)
            return await real(fn, *args, **kwargs)

        a._db = db  # type: ignore[method-assign]
        undo = await a.undo(job_id)
        a._db = real  # type: ignore[method-assign]
        assert refused and refused[0] is not None, refused
        assert "undone" in str(refused[0])
        assert await undo.wait() is JobStatus.COMPLETED
        info = await a.get(job_id)
        assert (info.status, info.runs) == (JobStatus.COMPLETED_WITH_ERRORS, 1)


async def test_closing_stops_waiting_for_a_cancel_cleanup_at_the_end_of_its_grace(
    store_path, tmp_path, autojump_clock
):
    """A cancelled job's cleanup outlasts the manager's shutdown grace (20 s against 1 s):
    the close stops waiting for it at the grace and records nothing more, so the
    job rests as the store had it, its cancel pending: the next manager finds it
    interrupted with that cancel, which a resume finishes (`CancelPending`)."""
    cleaned = tmp_path / "cleaned"
    job = SlowCleanupJob(
        n=20,
        log=str(tmp_path / "log"),
        hold=str(tmp_path / "never"),  # tasks from the tenth on wait: it runs until cancelled
        hold_from=10,
        cleaned=str(cleaned),
        cleanup_seconds=20,
    )
    async with parjobs.open_manager(store_path, shutdown_grace=1) as m:
        handle = await m.submit(job)
        with trio.fail_after(30):
            while handle.status is not JobStatus.RUNNING:
                await trio.sleep(0.01)
            await m.cancel(handle.id)
            while not cleaned.exists():
                await trio.sleep(0.01)
        t0 = trio.current_time()
    took = trio.current_time() - t0
    assert 1 <= took < 5, took
    assert cleaned.read_text() == "begin cancelled\n"
    async with parjobs.open_manager(store_path) as m:
        info = await m.get(handle.id)
    assert (info.status, info.request, info.lease) == (JobStatus.INTERRUPTED, "cancel", None)
