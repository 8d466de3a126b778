"""A cancel another process sends through the store (``parjobs cancel ID`` from a shell, the
server) while the manager running the job writes its end: the person is told "cancel
requested", so the job ends cancelled, its cancel cleanup run once, whether the end is a
normal pause or one retried through a store outage. Manager B stands for the other
process (its cancel goes through ``store.request`` as a shell's would); real outages
(rel_helpers): SQLite's write lock held, PostgreSQL refusing connections.

Then what ``cancelled`` promises: recorded only once the job's cleanup ran (a queued job
rests ``cancelling`` meanwhile), a process killed (kill -9, a real child) in the middle of
the cleanup leaving the cancel pending for the job's resume; and requests landing as a
manager closes, or as a closing worker hands its job back, kept."""

from __future__ import annotations

import os
import signal
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import rel_helpers as faults
import trio

import parjobs
from parjobs import JobStatus

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _forkcli import Forked
from _jobs import CountJob, SlowCleanupJob, logged, read_log


@parjobs.job_type("test-cleaned-count", version=1)
class CleanedCountJob(CountJob):  # type: ignore[misc]  # (_jobs: Any to mypy here)
    """A `CountJob` whose cleanup appends ``cancelled`` or ``ended`` to the file ``cleaned``
    (how many times it ran, and why)."""

    cleaned: str = ""

    async def cleanup(self, ctx: parjobs.JobContext, *, cancelled: bool) -> None:
        with open(self.cleaned, "a") as f:
            f.write("cancelled\n" if cancelled else "ended\n")


async def running_job(m: parjobs.JobManager, store: faults.OutageStore) -> parjobs.JobHandle:
    """A job of ``m`` that ran 5 of its tasks; the rest wait for the flag file."""
    cleaned = os.path.join(os.path.dirname(store.log), "cleaned")
    handle = await m.submit(
        CleanedCountJob(n=20, log=store.log, hold=store.flag, hold_from=5, cleaned=cleaned)
    )
    with trio.fail_after(8):
        while logged(store.log) < 5:
            await trio.sleep(0.01)
    return handle


async def assert_cancelled_once(
    m: parjobs.JobManager, handle: parjobs.JobHandle, store: faults.OutageStore
) -> None:
    with trio.fail_after(8):
        assert await handle.wait() is JobStatus.CANCELLED
    info = await m.get(handle.id)
    assert (info.status, info.lease, info.request) == (JobStatus.CANCELLED, None, None)
    with open(os.path.join(os.path.dirname(store.log), "cleaned")) as f:
        assert f.read() == "cancelled\n"  # its cancel cleanup, once


@pytest.mark.parametrize("outage_store", ["sqlite", "postgresql"], indirect=True)
async def test_a_cancel_from_elsewhere_as_a_paused_end_is_retried_cancels_the_job(
    outage_store: faults.OutageStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A person pauses the job in A; the store fails as its paused end is written, and comes
    back between two tries; the person cancels the job through B then (A still holds it:
    B asks through the store). A's retried end keeps that cancel (it wrote paused, the
    request cleared: the job rested paused, the person told "cancel requested") and A
    finishes it: cancelled, cleaned up once."""
    monkeypatch.setattr(parjobs._runner, "STORE_RETRY", 1.0)  # the cancel comes first
    store = outage_store
    began = trio.Event()

    async def outage() -> None:
        store.outages.append(await trio.to_thread.run_sync(store.begin))
        began.set()

    async with (
        parjobs.open_manager(store.path, workers=2) as a,
        parjobs.open_manager(store.path, workers=2) as b,
    ):
        handle = await running_job(a, store)
        faults.before_write(a, JobStatus.PAUSED, outage)
        await a.pause(handle.id)
        with trio.fail_after(8):
            await began.wait()
        await trio.sleep(0.2)  # the first try failed: the next is 1 s away
        store.outages[-1].end()  # (not in a thread: the retry stays 1 s away)
        await b.cancel(handle.id)
        assert a._live[handle.id].releasing and not a._live[handle.id].rested.is_set()
        await assert_cancelled_once(a, handle, store)


@pytest.mark.parametrize("outage_store", ["sqlite", "postgresql"], indirect=True)
async def test_a_cancel_from_elsewhere_just_before_a_paused_end_cancels_the_job(
    outage_store: faults.OutageStore,
) -> None:
    """A person pauses the job in A, and cancels it through B just before A writes its
    paused end (the run stopped, its last checkpoint written): A's end keeps the cancel
    and A finishes it (it wrote paused, the request cleared)."""
    store = outage_store
    async with (
        parjobs.open_manager(store.path, workers=2) as a,
        parjobs.open_manager(store.path, workers=2) as b,
    ):
        handle = await running_job(a, store)
        faults.before_write(a, JobStatus.PAUSED, lambda: b.cancel(handle.id))
        await a.pause(handle.id)
        await assert_cancelled_once(a, handle, store)


# -- a queued job's cancel: its cleanup before `cancelled` ----------------------------------


def text(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return ""


async def queued_behind(
    m: parjobs.JobManager, tmp_path: Path, *, detach: bool = False, **cleanup: Any
) -> parjobs.JobHandle:
    """A `SlowCleanupJob` queued in ``m`` (for any worker with ``detach``) behind a paused
    prerequisite: it stays queued, never runs, until somebody steers it."""
    log = str(tmp_path / "log")
    first = await m.submit(CountJob(n=1, log=log), start=False)
    job = SlowCleanupJob(n=3, log=log, cleaned=str(tmp_path / "cleaned"), **cleanup)
    return await m.submit(job, after=[first.id], detach=detach)


@pytest.mark.both_stores
@pytest.mark.parametrize("holder", ["another process", "this manager", "nobody"])
async def test_a_queued_job_cancelled_rests_cancelling_until_its_cleanup_ran(
    store_path: str, tmp_path: Path, autojump_clock: trio.testing.MockClock, holder: str
) -> None:
    """A queued job (held by manager A, or by nobody: queued for the workers) is cancelled:
    through the store by B while A holds it (``parjobs cancel ID`` from a shell), by A
    itself, or by B alone. Its cleanup takes 1 s (5 polls of a waiter). Every waiter (A's
    and B's `wait`) finds it ``cancelled`` only once the cleanup ran to its end, and
    meanwhile the store says ``cancelling`` (it said ``cancelled`` from the start: a waiter
    saw the job cancelled with its temporaries still there)."""
    cleaned = str(tmp_path / "cleaned")
    async with (
        parjobs.open_manager(store_path) as a,
        parjobs.open_manager(store_path) as b,
    ):
        handle = await queued_behind(a, tmp_path, detach=holder == "nobody", cleanup_seconds=1)
        found: dict[str, str] = {}

        async def wait(name: str, m: parjobs.JobManager) -> None:
            assert await m.wait(handle.id) is JobStatus.CANCELLED
            found[name] = text(cleaned)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(wait, "a", a)
            nursery.start_soon(wait, "b", b)
            await trio.sleep(0.5)  # both wait
            nursery.start_soon((a if holder == "this manager" else b).cancel, handle.id)
            with trio.fail_after(3):
                while not text(cleaned):
                    await trio.sleep(0.1)
            during = await b.get(handle.id)
        info = await b.get(handle.id)
    assert during.status is JobStatus.CANCELLING
    assert found == {"a": "begin cancelled\nend\n", "b": "begin cancelled\nend\n"}
    assert (info.status, info.lease, info.request) == (JobStatus.CANCELLED, None, None)
    assert read_log(str(tmp_path / "log")) == []  # never ran


#: A manager holding a queued `SlowCleanupJob` (as `queued_behind` makes it) whose cleanup
#: waits for the file ``hold``.
HOLDER_CHILD = """
import sys, trio, parjobs
sys.path.insert(0, {tests!r})
from _jobs import CountJob, SlowCleanupJob
async def main():
    async with parjobs.open_manager({store!r}) as m:
        first = await m.submit(CountJob(n=1, log={log!r}), start=False)
        job = SlowCleanupJob(n=3, log={log!r}, cleaned={cleaned!r}, cleanup_hold={hold!r})
        h = await m.submit(job, after=[first.id])
        print("READY", h.id, flush=True)
        await trio.sleep_forever()
trio.run(main)
"""


@pytest.mark.both_stores
async def test_a_manager_killed_in_a_queued_jobs_cancel_cleanup_leaves_the_cancel_pending(
    store_path: str, tmp_path: Path
) -> None:
    """A process holds a queued job; B cancels it through the store; the holder is killed
    (kill -9) in the middle of the job's cleanup. The job rested ``cancelling`` meanwhile,
    so it is recovered with its cancel pending, and a manager opened with
    ``resume_interrupted`` finishes it: the cleanup runs again, to its end, then
    ``cancelled`` (it was ``cancelled`` already, its cleanup never finished)."""
    hold, cleaned = str(tmp_path / "hold"), str(tmp_path / "cleaned")
    tests = str(Path(__file__).resolve().parent.parent)
    log = str(tmp_path / "log")
    code = HOLDER_CHILD.format(tests=tests, store=store_path, log=log, cleaned=cleaned, hold=hold)
    child = Forked([], code=textwrap.dedent(code))
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line.startswith("READY"), line + child.communicate()[1]
        job_id = line.split()[1]
        async with parjobs.open_manager(store_path) as b:
            await b.cancel(job_id)  # the child holds it: asked through the store
            with trio.fail_after(5):
                while not text(cleaned):
                    await trio.sleep(0.01)
            during = await b.get(job_id)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    assert during.status is JobStatus.CANCELLING
    Path(hold).touch()
    async with parjobs.open_manager(store_path, resume_interrupted=True) as c:
        with trio.fail_after(5):
            assert await c.wait(job_id) is JobStatus.CANCELLED
        info = await c.get(job_id)
    assert text(cleaned) == "begin cancelled\nbegin cancelled\nend\n"
    assert (info.status, info.lease, info.request) == (JobStatus.CANCELLED, None, None)
    assert read_log(log) == []


# -- a request landing as the manager closes ------------------------------------------------


@pytest.mark.both_stores
@pytest.mark.parametrize("request_", ["cancel", "pause"])
async def test_a_request_from_elsewhere_as_the_manager_closes_survives_the_close(
    store_path: str, tmp_path: Path, request_: str
) -> None:
    """A person cancels (or pauses) a job queued in A through B just as A closes, after A's
    last look for requests (it rests its queued jobs ``interrupted``). The cancel stays
    pending on the interrupted job: no worker claims it, and a resume finishes the cancel
    (cleanup once, ``cancelled``, never run); the pause rests it ``paused`` (both were
    dropped: the job rested interrupted, and a resume or a worker ran it)."""
    cleaned, log = str(tmp_path / "cleaned"), str(tmp_path / "log")
    async with parjobs.open_manager(store_path) as b:
        async with parjobs.open_manager(store_path) as a:
            handle = await queued_behind(a, tmp_path)
            steer = b.cancel if request_ == "cancel" else b.pause
            faults.before_write(a, JobStatus.INTERRUPTED, lambda: steer(handle.id))
        info = await b.get(handle.id)
        if request_ == "pause":
            assert (info.status, info.request, info.lease) == (JobStatus.PAUSED, None, None)
            return
        assert (info.status, info.request, info.lease) == (JobStatus.INTERRUPTED, "cancel", None)
        with trio.move_on_after(0.5):
            await b.work()  # a worker leaves it alone
        assert (await b.get(handle.id)).status is JobStatus.INTERRUPTED
        await b.resume(handle.id)  # finishes the cancel
        with trio.fail_after(5):
            assert await b.wait(handle.id) is JobStatus.CANCELLED
        info = await b.get(handle.id)
    assert (info.status, info.lease, info.request) == (JobStatus.CANCELLED, None, None)
    assert text(cleaned) == "begin cancelled\nend\n"
    assert read_log(log) == []


@pytest.mark.both_stores
async def test_a_cancel_from_elsewhere_as_a_queued_jobs_pause_is_written_cancels_it(
    store_path: str, tmp_path: Path
) -> None:
    """A person pauses a job queued in A, and another cancels it through B just before A
    writes it paused: the cancel wins (cleanup once, then ``cancelled``), as it does over
    a running job's pause (it rested paused, the request cleared)."""
    async with (
        parjobs.open_manager(store_path) as a,
        parjobs.open_manager(store_path) as b,
    ):
        handle = await queued_behind(a, tmp_path)
        faults.before_write(a, JobStatus.PAUSED, lambda: b.cancel(handle.id))
        await a.pause(handle.id)
        with trio.fail_after(5):
            assert await a.wait(handle.id) is JobStatus.CANCELLED
        info = await b.get(handle.id)
    assert (info.status, info.lease, info.request) == (JobStatus.CANCELLED, None, None)
    assert text(str(tmp_path / "cleaned")) == "begin cancelled\nend\n"


@pytest.mark.both_stores
@pytest.mark.parametrize("request_", ["pause", "cancel"])
async def test_a_request_from_elsewhere_as_a_closing_worker_hands_its_job_back_is_kept(
    store_path: str, tmp_path: Path, request_: str
) -> None:
    """A worker closes while it runs a job: it hands the job back (``interrupted``, for
    another worker). A person pauses (or cancels) it through B just before that end is
    written: the pause rests it ``paused``, no worker claims it (it rested interrupted,
    the request cleared, and the next worker ran it); the cancel is finished by the worker
    (cleanup once, ``cancelled``)."""
    log, flag, cleaned = str(tmp_path / "log"), str(tmp_path / "flag"), str(tmp_path / "cleaned")
    async with parjobs.open_manager(store_path) as b:
        async with parjobs.open_manager(store_path) as worker, trio.open_nursery() as nursery:
            nursery.start_soon(worker.work)
            job = SlowCleanupJob(n=4, log=log, hold=flag, hold_from=2, cleaned=cleaned)
            handle = await b.submit(job, detach=True)
            with trio.fail_after(5):
                while logged(log) < 2:
                    await trio.sleep(0.01)
            steer = b.cancel if request_ == "cancel" else b.pause
            faults.before_write(worker, JobStatus.INTERRUPTED, lambda: steer(handle.id))
            nursery.cancel_scope.cancel()
        info = await b.get(handle.id)
    if request_ == "pause":
        assert (info.status, info.lease, info.request) == (JobStatus.PAUSED, None, None)
        assert text(cleaned) == ""
    else:
        assert (info.status, info.lease, info.request) == (JobStatus.CANCELLED, None, None)
        assert text(cleaned) == "begin cancelled\nend\n"
    assert sorted(read_log(log)) == [0, 1]


#: Cancels the resting job ``job`` of the store, whose cleanup waits for the file ``hold``.
CANCELLING_CHILD = """
import sys, trio, parjobs
sys.path.insert(0, {tests!r})
import _jobs
async def main():
    async with parjobs.open_manager({store!r}) as m:
        print("READY", {job!r}, flush=True)
        await m.cancel({job!r})
trio.run(main)
"""


@pytest.mark.both_stores
async def test_a_process_killed_in_a_resting_jobs_cancel_cleanup_leaves_the_cancel_pending(
    store_path: str, tmp_path: Path
) -> None:
    """``parjobs cancel ID`` of a paused job is killed (kill -9) in the middle of the job's
    cleanup: the job still rests paused, but with its cancel pending, so its resume
    finishes the cancel (the cleanup again, to its end, then ``cancelled``) rather than
    run the job (it ran it: the person's cancel half done, the job completed)."""
    hold, cleaned = str(tmp_path / "hold"), str(tmp_path / "cleaned")
    log = str(tmp_path / "log")
    async with parjobs.open_manager(store_path) as m:
        job = SlowCleanupJob(n=3, log=log, cleaned=cleaned, cleanup_hold=hold)
        handle = await m.submit(job, start=False)
    tests = str(Path(__file__).resolve().parent.parent)
    code = CANCELLING_CHILD.format(tests=tests, store=store_path, job=handle.id)
    child = Forked([], code=textwrap.dedent(code))
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line.startswith("READY"), line + child.communicate()[1]
        with trio.fail_after(5):
            while not text(cleaned):
                await trio.sleep(0.01)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    Path(hold).touch()
    async with parjobs.open_manager(store_path) as m:
        assert (await m.get(handle.id)).status is JobStatus.PAUSED
        await m.resume(handle.id)
        with trio.fail_after(5):
            assert await m.wait(handle.id) is JobStatus.CANCELLED
        info = await m.get(handle.id)
    assert text(cleaned) == "begin cancelled\nbegin cancelled\nend\n"
    assert (info.status, info.lease, info.request) == (JobStatus.CANCELLED, None, None)
    assert read_log(log) == []


@pytest.mark.both_stores
@pytest.mark.parametrize("second", ["resume", "cancel"])
async def test_a_resume_or_cancel_during_the_managers_own_cancel_cleanup_waits_for_it(
    store_path: str, tmp_path: Path, autojump_clock: trio.testing.MockClock, second: str
) -> None:
    """A paused job is cancelled (its cleanup takes 1 s), and meanwhile the same manager is
    asked to resume it (its cancel is pending: the resume finishes the cancel) or to cancel
    it again. The second call waits for the cancel under way: the cleanup runs once, the
    job is ``cancelled`` and never ran (both started a second cleanup beside the first)."""
    log, cleaned = str(tmp_path / "log"), str(tmp_path / "cleaned")
    async with parjobs.open_manager(store_path) as m:
        job = SlowCleanupJob(n=3, log=log, cleaned=cleaned, cleanup_seconds=1)
        handle = await m.submit(job, start=False)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(m.cancel, handle.id)
            with trio.fail_after(3):
                while not text(cleaned):
                    await trio.sleep(0.01)
            await (m.resume if second == "resume" else m.cancel)(handle.id)
            assert text(cleaned) == "begin cancelled\nend\n"  # waited for the first
        assert await m.wait(handle.id) is JobStatus.CANCELLED
        info = await m.get(handle.id)
    assert text(cleaned) == "begin cancelled\nend\n"
    assert (info.status, info.lease, info.request) == (JobStatus.CANCELLED, None, None)
    assert read_log(log) == []


@pytest.mark.parametrize("outage_store", ["sqlite", "postgresql"], indirect=True)
@pytest.mark.parametrize("resting", ["queued for any worker", "paused"])
async def test_a_cancel_whose_end_meets_a_failing_store_waits_it_out(
    outage_store: faults.OutageStore, tmp_path: Path, resting: str
) -> None:
    """A job nobody runs (queued for any worker, or paused) is cancelled; the store fails
    as its ``cancelled`` is written, after its cleanup. The cancel waits the outage out and
    ends it cancelled (it raised StoreError, the job left ``cancelling`` or paused, leased
    to this live manager: another process's cancel was never acted on, its wait hung, and
    its resume refused, until this manager closed)."""
    store = outage_store
    hold, cleaned = str(tmp_path / "hold"), str(tmp_path / "cleaned")
    async with parjobs.open_manager(store.path) as a:
        if resting == "paused":
            job = SlowCleanupJob(n=3, log=store.log, cleaned=cleaned, cleanup_hold=hold)
            handle = await a.submit(job, start=False)
        else:
            handle = await queued_behind(a, tmp_path, detach=True, cleanup_hold=hold)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(a.cancel, handle.id)
            with trio.fail_after(5):
                while not text(cleaned):
                    await trio.sleep(0.01)
            store.outages.append(await trio.to_thread.run_sync(store.begin))
            Path(hold).touch()
            await trio.sleep(0.5)  # the cleanup ended, its first write failed
            await faults.end_outage(store)
        info = await a.get(handle.id)
    assert text(cleaned) == "begin cancelled\nend\n"
    assert (info.status, info.lease, info.request) == (JobStatus.CANCELLED, None, None)
    assert read_log(store.log) == []


@pytest.mark.both_stores
async def test_a_cancels_end_written_with_its_answer_lost_is_taken_as_written(
    store_path: str, tmp_path: Path
) -> None:
    """A paused job's cancel writes ``cancelled``; the write commits but its answer is lost
    (PostgreSQL's connection failing as it commits): the next try finds the job cancelled
    and the cancel returns, rather than raise that a cancelled job cannot be cancelled."""
    log, cleaned = str(tmp_path / "log"), str(tmp_path / "cleaned")
    async with parjobs.open_manager(store_path) as m:
        handle = await m.submit(SlowCleanupJob(n=3, log=log, cleaned=cleaned), start=False)
        lost = faults.lose_an_answer(m, "transition", JobStatus.CANCELLED)
        with trio.fail_after(5):
            await m.cancel(handle.id)
        info = await m.get(handle.id)
    assert lost == [JobStatus.CANCELLED]
    assert text(cleaned) == "begin cancelled\nend\n"
    assert (info.status, info.lease, info.request) == (JobStatus.CANCELLED, None, None)


@pytest.mark.both_stores
async def test_a_queued_jobs_cancelled_end_written_with_its_answer_lost_is_taken_as_written(
    store_path: str, tmp_path: Path
) -> None:
    """The same for a job queued here, whose cancel the run's end finishes (it rests
    ``cancelling`` leased here, cleans up, writes ``cancelled``): the next try finds the job
    cancelled, and the run rests cancelled (it took the job for recovered by another
    manager and rested interrupted: its waiters were told ``interrupted``)."""
    async with parjobs.open_manager(store_path) as m:
        handle = await queued_behind(m, tmp_path)
        lost = faults.lose_an_answer(m, "transition", JobStatus.CANCELLED)
        with trio.fail_after(5):
            await m.cancel(handle.id)
            assert await m.wait(handle.id) is JobStatus.CANCELLED
        info = await m.get(handle.id)
    assert lost == [JobStatus.CANCELLED]
    assert text(str(tmp_path / "cleaned")) == "begin cancelled\nend\n"
    assert (info.status, info.lease, info.request) == (JobStatus.CANCELLED, None, None)
