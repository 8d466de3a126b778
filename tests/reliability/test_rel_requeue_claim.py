"""Two edges of a job's claim and its retry's requeue. A cancel another process sends
through the store (``parjobs cancel ID`` from a shell; manager B stands for it) as a retry
policy queues the job again, or while it waits out its retry delay: the cancel wins at
once (not after the delay). A claim written whose answer is lost (PostgreSQL's connection
failing as it commits: the manager sees a `StoreError`): the job runs once, not left
``running`` with no run. Real stores: SQLite, PostgreSQL (its outage refuses connections;
SQLite's holds the write lock)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest
import rel_helpers as faults
import trio

import parjobs
from parjobs import JobStatus

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _jobs import FLAKY_ATTEMPTS, CountJob, FlakyJob, read_log

#: Long enough that a cancel waiting for the delay to pass fails the test's time limit.
DELAY = 30.0


@parjobs.job_type("test-cleaned-flaky", version=1)
class CleanedFlakyJob(FlakyJob):  # type: ignore[misc]  # (_jobs: Any to mypy here)
    """A `FlakyJob` whose cleanup appends ``cancelled`` or ``ended`` to ``cleaned``."""

    cleaned: str = ""
    retry = parjobs.RetryPolicy(max_attempts=3, initial_delay=DELAY, jitter=0.0)

    async def cleanup(self, ctx: parjobs.JobContext, *, cancelled: bool) -> None:
        with open(self.cleaned, "a") as f:
            f.write("cancelled\n" if cancelled else "ended\n")


async def assert_cancelled_once(
    m: parjobs.JobManager, handle: parjobs.JobHandle, name: str, cleaned: str
) -> None:
    with trio.fail_after(5):  # well before the retry delay
        assert await handle.wait() is JobStatus.CANCELLED
    with open(cleaned) as f:  # cleaned up before it was cancelled (it rested first)
        assert f.read() == "cancelled\n"
    info = await m.get(handle.id)
    assert (info.status, info.lease, info.request) == (JobStatus.CANCELLED, None, None)
    with open(cleaned) as f:
        assert f.read() == "cancelled\n"  # its cancel cleanup, once
    assert FLAKY_ATTEMPTS[name] == 1  # never attempted again


@pytest.mark.parametrize("when", ["in its delay", "just before", "during an outage"])
@pytest.mark.parametrize("outage_store", ["sqlite", "postgresql"], indirect=True)
async def test_a_cancel_from_elsewhere_as_a_retry_is_requeued_cancels_the_job_at_once(
    outage_store: faults.OutageStore, monkeypatch: pytest.MonkeyPatch, when: str
) -> None:
    """A's job failed its first attempt and its retry policy queues it again, to run after
    a 30 s delay; a person cancels it through B (A holds it: B asks through the store)
    while it waits out that delay, just before the requeue is written, or as the requeue
    is retried through a store outage. The requeue leaves the request on the row: A
    cancels the job at once, cleaned up once, never attempted again (A looked for requests
    only among its queued and running jobs: the cancel waited out the delay, and a close
    meanwhile rested the job interrupted, the cancel dropped)."""
    monkeypatch.setattr(parjobs._runner, "STORE_RETRY", 1.0)  # the cancel comes first
    store = outage_store
    name = f"cross-cancel-{when}-{os.getpid()}-{time.monotonic()}"
    cleaned = os.path.join(os.path.dirname(store.log), "cleaned")
    async with (
        parjobs.open_manager(store.path, workers=2) as a,
        parjobs.open_manager(store.path, workers=2) as b,
    ):
        job = CleanedFlakyJob(name=name, failures=5, cleaned=cleaned)
        if when == "in its delay":
            handle = await a.submit(job)
            with trio.fail_after(5):
                while not FLAKY_ATTEMPTS.get(name) or a.local_status(handle.id) is not (
                    JobStatus.QUEUED
                ):
                    await trio.sleep(0.01)
            await b.cancel(handle.id)
        elif when == "just before":
            ids: list[str] = []
            faults.before_write(a, JobStatus.QUEUED, lambda: b.cancel(ids[0]))
            handle = await a.submit(job)
            ids.append(handle.id)
        else:
            began = faults_outage_at_requeue(a, store)
            handle = await a.submit(job)
            with trio.fail_after(5):
                await began.wait()
            await trio.sleep(0.2)  # the first try failed: the next is 1 s away
            store.outages[-1].end()  # (not in a thread: the retry stays 1 s away)
            await b.cancel(handle.id)
            assert a._live[handle.id].releasing
        await assert_cancelled_once(a, handle, name, cleaned)


def faults_outage_at_requeue(m: parjobs.JobManager, store: faults.OutageStore) -> trio.Event:
    """Start an outage of ``store`` just as ``m`` writes a retry's requeue; the returned
    event is set then."""
    began = trio.Event()

    async def outage() -> None:
        store.outages.append(await trio.to_thread.run_sync(store.begin))
        began.set()

    faults.before_write(m, JobStatus.QUEUED, outage)
    return began


@pytest.mark.parametrize("outage_store", ["sqlite", "postgresql"], indirect=True)
async def test_a_claim_written_whose_answer_was_lost_runs_the_job_once(
    outage_store: faults.OutageStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The scheduler's claim of a queued job is committed but its answer lost (the
    connection failing as it committed): the job is queued here again, and its next claim
    finds it running under this manager's lease, which is this claim's: it runs, once
    (that claim was refused, and the job rested ``running`` here with no run, its waiters
    told so, until the manager closed)."""
    store = outage_store
    async with parjobs.open_manager(store.path, workers=2) as m:
        lost = faults.lose_an_answer(m, "claim")
        handle = await m.submit(CountJob(n=5, log=store.log))
        with trio.fail_after(5):
            assert await handle.wait() is JobStatus.COMPLETED
        info = await m.get(handle.id)
    assert lost == [JobStatus.RUNNING]
    assert (info.status, info.runs, info.lease) == (JobStatus.COMPLETED, 1, None)
    assert info.result == {"done_this_run": 5, "runs": 1}
    assert sorted(read_log(store.log)) == list(range(5))


@pytest.mark.parametrize("outage_store", ["sqlite", "postgresql"], indirect=True)
async def test_a_workers_claim_written_whose_answer_was_lost_runs_the_job_once(
    outage_store: faults.OutageStore,
) -> None:
    """A worker's claim of a job another manager queued for the workers is committed but
    its answer lost: the worker's next look finds the job running under its lease with no
    run here, and runs it, once (it rested ``running`` with nobody running it for as long
    as the worker lived: its claims pass over a leased job, and nobody recovers the job of
    a live manager)."""
    store = outage_store
    async with (
        parjobs.open_manager(store.path) as worker,
        parjobs.open_manager(store.path) as submitter,
        trio.open_nursery() as nursery,
    ):
        lost = faults.lose_an_answer(worker, "claim_next")
        nursery.start_soon(worker.work)
        handle = await submitter.submit(CountJob(n=5, log=store.log), detach=True)
        with trio.fail_after(5):
            assert await submitter.wait(handle.id) is JobStatus.COMPLETED
        info = await submitter.get(handle.id)
        nursery.cancel_scope.cancel()
    assert lost == [JobStatus.RUNNING]
    assert (info.status, info.runs, info.lease) == (JobStatus.COMPLETED, 1, None)
    assert info.result == {"done_this_run": 5, "runs": 1}
    assert sorted(read_log(store.log)) == list(range(5))
