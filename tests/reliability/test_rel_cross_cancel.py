"""A cancel another process sends through the store (``parjobs cancel ID`` from a shell, the
server) while the manager running the job writes its end: the person is told "cancel
requested", so the job ends cancelled, its cancel cleanup run once, whether the end is a
normal pause or one retried through a store outage. Manager B stands for the other
process (its cancel goes through ``store.request`` as a shell's would); real outages
(rel_helpers): SQLite's write lock held, PostgreSQL refusing connections."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import rel_helpers as faults
import trio

import parjobs
from parjobs import JobStatus

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _jobs import CountJob, logged


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
