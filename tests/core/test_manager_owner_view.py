"""`JobManager.for_owner`: an owner is a boundary, not a filter. Before, any caller could see
and cancel another owner's job through the manager; a scoped view treats it as not there."""

from __future__ import annotations

import pytest
import trio
from _jobs import CountJob

import parjobs
from parjobs import EventKind, JobStatus


async def test_a_foreign_job_behaves_as_not_found_and_is_left_alone(store_path, tmp_path):
    async with parjobs.open_manager(store_path) as manager:
        alice, bob = manager.for_owner("alice"), manager.for_owner("bob")
        mine = await alice.submit(CountJob(n=3, log=str(tmp_path / "a")), start=False)
        theirs = await bob.submit(CountJob(n=3, log=str(tmp_path / "b")), start=False)
        assert (await manager.get(mine.id)).owner == "alice"
        assert [i.id for i in await alice.list_jobs()] == [mine.id]
        assert await alice.list_jobs(owner="bob") == []
        assert [i.id for i in await alice.list_jobs(JobStatus.PAUSED)] == [mine.id]

        unknown = f"no job with id {theirs.id!r}"
        for call in (
            alice.get,
            alice.resolve,
            alice.handle,
            alice.pause,
            alice.resume,
            alice.cancel,
            alice.delete,
            alice.wait,
            alice.errors,
            alice.error_count,
            alice.items,
            alice.item_count,
            alice.undo,
        ):
            with pytest.raises(parjobs.JobNotFoundError) as info:
                await call(theirs.id)
            assert str(info.value) == unknown, call
        with pytest.raises(parjobs.JobNotFoundError, match=unknown):
            await alice.set_priority(theirs.id, 5)
        with pytest.raises(parjobs.JobNotFoundError, match=unknown):
            async for _ in alice.watch(theirs.id):
                pass
        with pytest.raises(parjobs.JobNotFoundError, match=unknown):
            await alice.submit(CountJob(n=1, log=str(tmp_path / "a")), after=[theirs.id])
        # Nothing of bob's changed, and nothing was submitted for alice by the refusal.
        stored = await manager.get(theirs.id)
        assert (stored.status, stored.priority) == (JobStatus.PAUSED, 0)
        assert len(await alice.list_jobs()) == 1

        # Her own job she steers as with the manager.
        await alice.set_priority(mine.id, 3)
        handle = await alice.resume(mine.id)
        assert await alice.wait(mine.id) is JobStatus.COMPLETED
        assert await handle.result() == {"done_this_run": 3, "runs": 1}
        assert await alice.item_count(mine.id) == len(await alice.items(mine.id))
        undo = await alice.undo(mine.id)
        assert (await manager.get(undo.id)).owner == "alice"  # her undo is hers
        await alice.wait(undo.id)
        await alice.delete(undo.id)
        await alice.delete(mine.id)
        assert await alice.list_jobs() == []
        assert [i.id for i in await manager.list_jobs()] == [theirs.id]
        with pytest.raises(ValueError, match="owner must be a non-empty string"):
            manager.for_owner("")


async def test_an_id_prefix_sees_only_the_owners_jobs(store_path):
    async with parjobs.open_manager(store_path) as manager:
        for job_id, owner in (("abc111111111", "alice"), ("abc222222222", "bob")):
            manager.store.insert_job(job_id, "test-count", 1, '{"n": 1, "log": "x"}', owner=owner)
        alice = manager.for_owner("alice")
        assert await alice.resolve("abc") == "abc111111111"  # bob's does not make it ambiguous
        with pytest.raises(parjobs.JobNotFoundError, match="no job with id 'abc2'"):
            await alice.resolve("abc2")
        with pytest.raises(parjobs.JobNotFoundError, match="ambiguous"):
            await manager.resolve("abc")  # the unscoped manager sees both


async def test_an_empty_id_names_no_job(store_path):
    """``""`` is a prefix of every id: with one job in the store (or one of the owner's),
    ``parjobs undo "$ID"`` with ``$ID`` unset undid it, ``jobs prune ''`` deleted it."""
    async with parjobs.open_manager(store_path) as manager:
        manager.store.insert_job(
            "abc111111111", "test-count", 1, '{"n": 1, "log": "x"}', owner="alice"
        )
        for view in (manager, manager.for_owner("alice")):
            with pytest.raises(parjobs.JobNotFoundError, match="no job with id ''"):
                await view.resolve("")
        assert await manager.resolve("a") == "abc111111111"


async def test_the_owners_events_only(store_path, tmp_path):
    async with parjobs.open_manager(store_path) as manager:
        alice = manager.for_owner("alice")
        with alice.events() as events:
            theirs = await manager.submit(CountJob(n=2, log=str(tmp_path / "b")), owner="bob")
            await theirs.wait()
            mine = await alice.submit(CountJob(n=2, log=str(tmp_path / "a")))
            await mine.wait()
            await manager.delete(theirs.id)
            await alice.delete(mine.id)
            seen: list[tuple[EventKind, str]] = []
            with trio.fail_after(10):
                async for event in events:
                    seen.append((event.kind, event.job_id))
                    if event.kind is EventKind.DELETED:
                        break
        assert {job_id for _, job_id in seen} == {mine.id}
        assert (EventKind.STATUS, mine.id) in seen and seen[-1] == (EventKind.DELETED, mine.id)
