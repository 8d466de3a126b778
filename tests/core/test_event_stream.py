"""The manager-wide event stream (`JobManager.events`) and its bounded subscriptions."""

from __future__ import annotations

import os

import trio
from _jobs import CountJob

import parjobs
from parjobs._events import EventBus, EventKind, JobEvent


async def test_status_progress_and_errors_of_a_job_in_order(tmp_path) -> None:
    store = str(tmp_path / "jobs.sqlite")
    seen: list[JobEvent] = []
    async with parjobs.open_manager(store) as manager, trio.open_nursery() as nursery:
        events = manager.events()

        async def listen() -> None:
            with events:
                async for event in events:
                    seen.append(event)
                    status = event.status
                    if event.kind is EventKind.STATUS and status and status.is_resting:
                        return

        nursery.start_soon(listen)
        handle = await manager.submit(CountJob(n=20, log=str(tmp_path / "log"), fail_every=7))
        with trio.fail_after(20):
            await handle.wait()
    statuses = [e.status for e in seen if e.kind is EventKind.STATUS]
    assert statuses[0] in (parjobs.JobStatus.QUEUED, parjobs.JobStatus.RUNNING)
    assert statuses[-1] is parjobs.JobStatus.COMPLETED_WITH_ERRORS
    assert all(e.job_id == handle.id for e in seen)
    errors = [e.error for e in seen if e.kind is EventKind.ITEM_ERROR]
    assert sorted(e.index for e in errors if e is not None) == [0, 7, 14]
    assert any(e.kind is EventKind.PROGRESS for e in seen)
    seqs = [e.seq for e in seen]
    assert seqs == sorted(seqs)


async def test_changes_made_by_another_manager_arrive_as_status_events(tmp_path) -> None:
    store = str(tmp_path / "jobs.sqlite")
    async with parjobs.open_manager(store) as watcher, parjobs.open_manager(store) as other:
        handle = await other.submit(CountJob(n=3, log=str(tmp_path / "log")), start=False)
        statuses: list[parjobs.JobStatus | None] = []

        events = watcher.events(handle.id)

        async def listen() -> None:
            with events:
                async for event in events:
                    if event.kind is EventKind.STATUS:
                        statuses.append(event.status)
                        if event.status is parjobs.JobStatus.COMPLETED:
                            return

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(listen)
                await other.resume(handle.id)  # paused -> queued -> running -> completed
    assert statuses[-1] is parjobs.JobStatus.COMPLETED
    assert os.path.exists(tmp_path / "log")


async def test_a_slow_subscriber_loses_events_and_is_told_how_many() -> None:
    bus = EventBus()
    events = bus.subscribe(buffer=3)
    got: list[JobEvent] = []

    async def consume() -> None:
        async for event in events:
            got.append(event)
            if len(got) == 4:
                return

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consume)
        for i in range(3):
            bus.publish(EventKind.STATUS, f"job{i}", status=parjobs.JobStatus.RUNNING)
        bus.publish(EventKind.STATUS, "lost1", status=parjobs.JobStatus.RUNNING)
        bus.publish(EventKind.STATUS, "lost2", status=parjobs.JobStatus.RUNNING)
        await trio.sleep(0.01)
        bus.publish(EventKind.DELETED, "after")
    assert [e.job_id for e in got] == ["job0", "job1", "job2", "after"]
    assert [e.dropped for e in got] == [0, 0, 0, 2]


async def test_progress_is_coalesced_in_place_per_job() -> None:
    bus = EventBus()
    events = bus.subscribe()
    first = trio.Event()
    got: list[JobEvent] = []

    async def consume() -> None:
        async for event in events:
            got.append(event)
            if len(got) == 1:
                first.set()
                await trio.sleep(0.05)  # slow: the next ones pile up meanwhile
            if len(got) == 4:
                return

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consume)
        bus.publish(EventKind.DELETED, "x")
        await first.wait()
        for done in range(5):
            bus.publish(EventKind.PROGRESS, "a", progress=parjobs.Progress(items_done=done))
        bus.publish(EventKind.STATUS, "a", status=parjobs.JobStatus.PAUSED)
        bus.publish(EventKind.PROGRESS, "b", progress=parjobs.Progress(items_done=1))
    kinds = [(e.kind, e.job_id) for e in got]
    assert kinds == [
        (EventKind.DELETED, "x"),
        (EventKind.PROGRESS, "a"),
        (EventKind.STATUS, "a"),
        (EventKind.PROGRESS, "b"),
    ]
    assert got[1].progress is not None and got[1].progress.items_done == 4
