"""Jobs a failing store paused, and the manager that resumes them by itself (`_heal`): what
holds when that meets a second manager, a person, a delete, a close, and a store that never
comes back. Real outages (rel_helpers, as in test_rel_faults): another connection holds
the SQLite store's write lock (``BEGIN EXCLUSIVE``)."""

from __future__ import annotations

import math
from typing import Any

import pytest
import rel_helpers as faults
import trio
import trio.testing

import parjobs
from parjobs import JobStatus
from parjobs._housekeeping import HEAL_AFTER
from parjobs._manager_core import ManagerCore
from parjobs._status import RESUMED, paused_by_store
from parjobs._util import exception_leaves as leaves


@pytest.fixture
def store(outage_store: faults.OutageStore) -> faults.OutageStore:
    """The reliability suite's ``outage_store`` (SQLite): a 50 ms busy timeout, jobs that
    pause after 0.2 s of failed checkpoints."""
    return outage_store


async def rested_by_store(m: parjobs.JobManager, store: faults.OutageStore) -> str:
    """A job of ``m`` paused by an outage, the outage over: once it rests paused by its
    store (its resume `HEAL_AFTER` away), its id."""
    handle = await faults.pause_by_outage(m, store)
    await faults.end_outage(store)
    with trio.fail_after(60):
        assert await handle.wait() is JobStatus.PAUSED
    assert paused_by_store((await m.get(handle.id)).error)
    return handle.id


def hook_heal(m: parjobs.JobManager, during: Any) -> list[BaseException]:
    """Run ``await during()`` inside ``m``'s resume of a job its store paused, just before
    the store call that queues it (a compare-and-set on its status and lease); what
    ``during`` raised is kept in the returned list (an `AssertionError` if nothing)."""
    real = m._db
    raised: list[BaseException] = []

    async def db(fn: Any, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("error") == RESUMED and not raised:
            try:
                await during()
            except Exception as exc:
                raised.append(exc)
            else:
                raised.append(AssertionError("nothing raised"))
        return await real(fn, *args, **kwargs)

    m._db = db  # type: ignore[method-assign]
    return raised


async def test_a_person_resuming_it_elsewhere_before_its_heal_runs_it_there_only(
    store: faults.OutageStore, autojump_clock: trio.abc.Clock
) -> None:
    """Manager A's job rests paused by its store; before A resumes it by itself, a person
    resumes it through manager B (same store): it runs in B, and A's resume, when its
    time comes, finds it taken and leaves it (it never runs in two places: each task
    once, two runs, and it stays completed long after)."""
    async with (
        parjobs.open_manager(store.path, workers=2) as a,
        parjobs.open_manager(store.path, workers=2) as b,
    ):
        job_id = await rested_by_store(a, store)
        assert job_id in a._healing
        open(store.flag, "w").close()
        await b.resume(job_id)
        assert await b.wait(job_id) is JobStatus.COMPLETED
        await trio.sleep(5 * HEAL_AFTER)  # past A's resume
        assert job_id not in a._healing and job_id not in a._store_pauses
        live = a._live.get(job_id)  # (its store-paused run, rested)
        assert live is None or live.rested.is_set()
        info = await b.get(job_id)
    assert (info.status, info.runs, info.error) == (JobStatus.COMPLETED, 2, None)
    faults.assert_each_task_ran_once(store.log)


@pytest.mark.parametrize("steer", ["resume", "pause"])
async def test_a_person_steering_it_elsewhere_as_it_heals_wins(
    store: faults.OutageStore, autojump_clock: trio.abc.Clock, steer: str
) -> None:
    """A person's resume (or pause) through manager B lands just before A's own resume of
    the job queues it: the person wins (the job's reservation for A is overridden, A's
    compare-and-set finds it taken) and the job runs in one place only: in B (resumed),
    or nowhere until a person resumes it (paused, with no store error, long after A's
    resume was due). Each task once, two runs."""
    async with (
        parjobs.open_manager(store.path, workers=2) as a,
        parjobs.open_manager(store.path, workers=2) as b,
    ):
        job_id = await rested_by_store(a, store)
        raised = hook_heal(a, lambda: getattr(b, steer)(job_id))
        open(store.flag, "w").close()
        with trio.fail_after(60):
            while not raised:
                await trio.sleep(0.05)
        assert isinstance(raised[0], AssertionError), raised  # (nothing raised)
        if steer == "pause":
            await trio.sleep(5 * HEAL_AFTER)
            info = await b.get(job_id)
            assert (info.status, info.error) == (JobStatus.PAUSED, None)
            await b.resume(job_id)
        assert await b.wait(job_id) is JobStatus.COMPLETED
        assert job_id not in a._healing
        live = a._live.get(job_id)  # (its store-paused run, rested)
        assert live is None or live.rested.is_set()
        info = await b.get(job_id)
    assert (info.status, info.runs) == (JobStatus.COMPLETED, 2)
    faults.assert_each_task_ran_once(store.log)


@pytest.mark.parametrize("outage_store", ["sqlite", "postgresql"], indirect=True)
async def test_a_pause_from_elsewhere_as_its_store_pause_is_written_wins(
    store: faults.OutageStore, autojump_clock: trio.abc.Clock
) -> None:
    """A person pauses the job through manager B just as A writes its rest paused by its
    failing store (the outage over, the request lands in the store first): the person's
    pause wins as in the other orders (the job rests paused with no store error and no
    lease, and A never resumes it by itself), until a person resumes it. Each task once."""
    async with (
        parjobs.open_manager(store.path, workers=2) as a,
        parjobs.open_manager(store.path, workers=2) as b,
    ):
        steered: list[BaseException | None] = []

        async def pause() -> None:
            try:
                await b.pause(handle.id)
            except Exception as exc:
                steered.append(exc)
            else:
                steered.append(None)

        faults.before_write(a, JobStatus.PAUSED, pause)
        handle = await faults.pause_by_outage(a, store)
        await faults.end_outage(store)
        with trio.fail_after(60):
            assert await handle.wait() is JobStatus.PAUSED
        assert steered == [None]
        await trio.sleep(5 * HEAL_AFTER)  # past A's resume, were it still to come
        info = await b.get(handle.id)
        assert (info.status, info.error, info.lease) == (JobStatus.PAUSED, None, None)
        assert handle.id not in a._healing
        open(store.flag, "w").close()
        await b.resume(handle.id)
        assert await b.wait(handle.id) is JobStatus.COMPLETED
        info = await b.get(handle.id)
    assert info.runs == 2
    faults.assert_each_task_ran_once(store.log)


async def test_a_pause_in_the_healing_manager_as_it_queues_the_job_wins(
    store: faults.OutageStore, autojump_clock: trio.abc.Clock
) -> None:
    """A person pauses the job through the very manager that is resuming it by itself, as
    that resume queues it (the same process's race; the resume holds its claim lock across
    the store call): the pause returns without an error and wins (the job rests paused, no
    store error, and does not run until a person resumes it). Each task once, two runs."""
    paused: list[BaseException | None] = []
    async with parjobs.open_manager(store.path, workers=2) as m, trio.open_nursery() as nursery:
        job_id = await rested_by_store(m, store)

        async def pause() -> None:
            try:
                await m.pause(job_id)
            except Exception as exc:
                paused.append(exc)
            else:
                paused.append(None)

        async def during() -> None:  # the pause begins as the store call does
            nursery.start_soon(pause)

        hook_heal(m, during)
        open(store.flag, "w").close()
        with trio.fail_after(60):
            while not paused:
                await trio.sleep(0.05)
        assert paused == [None]
        await trio.sleep(5 * HEAL_AFTER)
        info = await m.get(job_id)
        assert (info.status, info.error) == (JobStatus.PAUSED, None)
        await m.resume(job_id)
        assert await m.wait(job_id) is JobStatus.COMPLETED
        info = await m.get(job_id)
    assert info.runs == 2
    faults.assert_each_task_ran_once(store.log)


async def test_a_job_deleted_before_its_heal_is_left_alone(
    store: faults.OutageStore, autojump_clock: trio.abc.Clock
) -> None:
    """A job resting paused by its store is deleted before its resume: the resume finds
    nothing, ends (no retry), and the manager closes without an error."""
    async with parjobs.open_manager(store.path, workers=2) as m:
        job_id = await rested_by_store(m, store)
        await m.delete(job_id)
        assert job_id not in m._store_pauses  # (its count of store pauses went with it)
        await trio.sleep(5 * HEAL_AFTER)
        assert job_id not in m._healing and job_id not in m._live
        assert await m.list_jobs() == []


async def test_a_manager_closing_as_it_heals_leaves_the_job_resumable(
    store: faults.OutageStore, autojump_clock: trio.abc.Clock
) -> None:
    """The manager closes just as it resumes a job its store paused (queued here as the
    close begins): the job rests ``interrupted``, leased to nobody (not queued under a gone
    manager's lease), and the next manager opened with ``resume_interrupted`` runs it to
    the end, each task once."""
    closing = trio.Event()

    async def during() -> None:
        closing.set()
        await trio.sleep(1)  # the test leaves the manager's block meanwhile

    async with parjobs.open_manager(store.path, workers=2) as m:
        job_id = await rested_by_store(m, store)
        hook_heal(m, during)
        await closing.wait()
    async with parjobs.open_manager(store.path) as m:
        info = await m.get(job_id)
        assert (info.status, info.lease) == (JobStatus.INTERRUPTED, None), info
    open(store.flag, "w").close()
    async with parjobs.open_manager(store.path, resume_interrupted=True) as m:
        info = await faults.run_to_end(m, job_id)
    assert (info.status, info.runs) == (JobStatus.COMPLETED, 2)
    faults.assert_each_task_ran_once(store.log)


#: Real seconds of idleness after which `jump_only_when_still` lets virtual time jump.
STILL = 1.0


def jump_only_when_still(clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch) -> None:
    """From now on ``clock`` (the ``autojump_clock``, whose store calls hold time) jumps
    only after `STILL` seconds of real idleness, not 20 ms."""
    inner = ManagerCore._db

    async def db(self: ManagerCore, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return await inner(self, fn, *args, **kwargs)
        finally:
            if clock.autojump_threshold != math.inf:  # (no other call in flight)
                clock.autojump_threshold = STILL

    monkeypatch.setattr(ManagerCore, "_db", db)
    clock.autojump_threshold = STILL


async def test_closing_a_manager_whose_job_waits_for_a_dead_store_is_prompt(
    store: faults.OutageStore,
    autojump_clock: trio.testing.MockClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The store never takes writes again: closing the manager of a job pausing for it
    (its last checkpoint retried every few seconds by now) ends with one `StoreError` (what
    ``except StoreError`` around `open_manager` catches, not a group of the run's and the
    manager's record's) within a couple of busy timeouts, as `_final_checkpoint` says (a
    closing manager ends the wait), not after its next retry or the whole shutdown grace.

    The close waits for no timer: virtual time then jumps only after `STILL` seconds of
    real idleness, so a close that waits for its next retry (or the grace) shows as a
    jump of seconds, while store threads slowed by a loaded machine (trio waits for them
    idle) no longer let it leap through every timer (109 s once, at load 10)."""
    t0 = 0.0
    raised: BaseException | None = None
    try:
        async with parjobs.open_manager(store.path, workers=2) as m:
            # The guard begins once the manager runs (as in f92c836): while `open_manager`
            # opened the store in a thread it was the only deadline, and the autojump clock
            # went straight to it when that took real time (a loaded machine).
            with trio.fail_after(120):
                await faults.pause_by_outage(m, store)
                await trio.sleep(10)  # its retries back off: the next one 5.5 s away
                jump_only_when_still(autojump_clock, monkeypatch)
            t0 = trio.current_time()
    except BaseException as exc:
        raised = exc
    took = trio.current_time() - t0
    assert isinstance(raised, parjobs.StoreError), leaves(raised) if raised else raised
    assert took < 2, took
