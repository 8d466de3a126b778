"""The manager-wide event stream (`JobManager.events`) and its bounded subscriptions."""

from __future__ import annotations

import os

import trio
from _jobs import CountJob, read_log

import parjobs
from parjobs._events import EventBus, EventKind, EventSubscription, JobEvent


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
    (last,) = [e.info for e in seen if e.status is parjobs.JobStatus.COMPLETED_WITH_ERRORS]
    assert last is not None and last.result == {"done_this_run": 17, "runs": 1}  # not re-read
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
        results = []

        events = watcher.events(handle.id)

        async def listen() -> None:
            with events:
                async for event in events:
                    if event.kind is EventKind.STATUS:
                        statuses.append(event.status)
                        if event.status is parjobs.JobStatus.COMPLETED:
                            results.append(event.info and event.info.result)
                            return

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(listen)
                await other.resume(handle.id)  # paused -> queued -> running -> completed
    assert statuses[-1] is parjobs.JobStatus.COMPLETED
    assert results == [{"done_this_run": 3, "runs": 1}]  # the poll reads it for the event
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


async def _statuses_until(
    events: EventSubscription, last: parjobs.JobStatus, out: list[parjobs.JobStatus]
) -> None:
    with events:
        async for event in events:
            if event.kind is EventKind.STATUS and event.status is not None:
                out.append(event.status)
                if event.status is last:
                    return


async def test_every_transition_made_here_is_published_even_a_short_queued(tmp_path) -> None:
    """Jobs queued and started at once: `queued` lasted no time in the store, and a stream
    that read statuses back from the store missed it (#13)."""
    store = str(tmp_path / "jobs.sqlite")
    S = parjobs.JobStatus
    seen: dict[str, list[parjobs.JobStatus]] = {}
    async with parjobs.open_manager(store, max_running=8) as manager:
        events = manager.events()
        ids = [
            (await manager.submit(CountJob(n=2, log=str(tmp_path / f"l{i}")))).id for i in range(6)
        ]
        with trio.fail_after(30), events:
            async for event in events:
                if event.kind is EventKind.STATUS and event.status is not None:
                    seen.setdefault(event.job_id, []).append(event.status)
                    done = [s[-1] for s in seen.values() if s[-1] is S.COMPLETED]
                    if len(done) == len(ids):
                        break
    for job_id in ids:
        assert seen[job_id] == [S.QUEUED, S.RUNNING, S.COMPLETED], job_id


async def test_one_subscription_lives_through_pause_and_resume(tmp_path) -> None:
    store = str(tmp_path / "jobs.sqlite")
    log = str(tmp_path / "log")
    S = parjobs.JobStatus
    async with parjobs.open_manager(store, workers=2) as manager:
        statuses: list[parjobs.JobStatus] = []
        snaps: list[parjobs.Progress] = []
        events = manager.events()  # (the only job of this store)
        handle = await manager.submit(CountJob(n=60, log=log, sleep=0.02, chunks=2))

        async def follow() -> None:
            async for snap in handle.progress():
                snaps.append(snap)

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_statuses_until, events, S.COMPLETED, statuses)
                nursery.start_soon(follow)
                while len(read_log(log)) < 5:
                    await trio.sleep(0.01)
                await manager.pause(handle.id)
                assert await manager.wait(handle.id) is S.PAUSED
                await trio.sleep(0.1)
                await manager.resume(handle.id)
    assert statuses == [S.QUEUED, S.RUNNING, S.PAUSING, S.PAUSED, S.QUEUED, S.RUNNING, S.COMPLETED]
    seen = [s.status for s in snaps]
    order = [st for i, st in enumerate(seen) if i == 0 or seen[i - 1] != st]
    assert order[-4:] == ["paused", "queued", "running", "completed"]
    assert snaps[-1].items_done == 60
    done = [s.items_done for s in snaps]
    assert done == sorted(done)  # nothing lost at the pause, nothing counted twice


async def test_watch_without_through_pauses_ends_when_the_job_rests(tmp_path) -> None:
    store = str(tmp_path / "jobs.sqlite")
    async with parjobs.open_manager(store) as manager:
        handle = await manager.submit(CountJob(n=3, log=str(tmp_path / "l")), start=False)
        with trio.fail_after(10):
            snaps = [snap async for snap in manager.watch(handle.id)]
        assert [s.status for s in snaps] == ["paused"]


async def test_subscriptions_end_when_the_manager_closes(tmp_path) -> None:
    store = str(tmp_path / "jobs.sqlite")
    got: list[JobEvent] = []
    with trio.fail_after(20):
        async with parjobs.open_manager(store) as manager:
            handle = await manager.submit(CountJob(n=3, log=str(tmp_path / "l")), start=False)
            events = manager.events()
        async for event in events:  # what it held, then the end
            got.append(event)
        with manager.events() as late:  # subscribed after the close: ends at once
            assert [e async for e in late] == []
    assert handle.id
