"""The per-item log (#14.2): what each item did, recorded with its task's completion, read
back paged, streamed as events, kept after cancel, and not repeated or lost across runs. How
the stores keep it (packed chunks, older schemas) is `test_itemlog.py`."""

from __future__ import annotations

import dataclasses
import os
import sqlite3
import time
from typing import Any

import pytest
import trio

import parjobs
from parjobs import EventKind, ItemRecord, JobStatus, Written
from parjobs._items import ItemRow, row_record


@dataclasses.dataclass
class NoteTask(parjobs.Task[int]):
    """Records one item (or raises / skips), as a user job's task would."""

    index: int
    sleep: float = 0.0
    fail: bool = False
    skip: bool = False

    def run(self, tc: parjobs.TaskContext) -> int:
        tc.check()
        if self.sleep:
            time.sleep(self.sleep)
        tc.check()
        if self.fail:
            raise ValueError(f"item {self.index} is bad")
        if self.skip:
            raise parjobs.Skip("nothing to do")
        tc.record(
            "made",
            f"/in/{self.index}",
            b"/out/\xff" + str(self.index).encode(),
            bytes=self.index,
            detail="d",
            written=Written(self.index, 7, 9),
        )
        return self.index


@parjobs.job_type("test-note", version=1)
class NoteJob(parjobs.Job):
    n: int
    sleep: float = 0.0
    fail_every: int = 0
    skip_every: int = 0
    fail_once: bool = False

    async def run(self, ctx: parjobs.JobContext) -> dict[str, Any]:
        ctx.record_item("planned", "/plan", detail=str(self.n))
        tasks = [
            NoteTask(
                i,
                self.sleep,
                fail=bool(self.fail_every)
                and i % self.fail_every == 0
                and not (self.fail_once and ctx.resumed),
                skip=bool(self.skip_every) and i % self.skip_every == 0,
            )
            for i in range(self.n)
        ]
        async for _ in ctx.task_dispatcher().dispatch_many(tasks):
            pass
        return {}


@pytest.mark.both_stores
async def test_items_of_a_completed_job_in_order_paged_and_filtered(store_path: str) -> None:
    async with parjobs.open_manager(store_path, workers=4) as m:
        h = await m.submit(NoteJob(n=30, fail_every=10, skip_every=7))
        await h.wait()
        items = await m.items(h.id)
        assert [r.seq for r in items] == list(range(1, len(items) + 1))
        made = [r for r in items if r.action == "made"]
        failed = [r for r in items if r.action == "failed"]
        skipped = [r for r in items if r.action == "skipped"]
        assert sorted(r.index for r in made) == [i for i in range(30) if i % 10 and i % 7]
        assert {r.index for r in failed} == {0, 10, 20}
        assert all(r.error == f"item {r.index} is bad" for r in failed)
        errors = {(e.stage, e.index) for e in await m.errors(h.id)}
        assert {(r.stage, r.index) for r in failed} == errors  # a failed record names its error
        assert {r.index for r in skipped} == {7, 14, 21, 28}
        assert all(r.detail == "nothing to do" for r in skipped)
        one = next(r for r in made if r.index == 3)
        assert one.source == "/in/3"
        assert one.destination == os.fsdecode(b"/out/\xff3")  # exact bytes kept
        assert one.written == Written(3, 7, 9) and one.bytes == 3 and one.stage == "default"
        planned = [r for r in items if r.action == "planned"]
        assert len(planned) == 1 and planned[0].stage == "job" and planned[0].detail == "30"
        assert await m.item_count(h.id) == len(items)
        assert await m.item_count(h.id, action="failed") == 3
        page = await m.items(h.id, limit=5, offset=5)
        assert page == items[5:10]
        assert await m.items(h.id, after=items[-3].seq) == items[-2:]
        assert await m.items(h.id, action="skipped") == skipped
        assert items[0].to_json()["seq"] == 1


@pytest.mark.both_stores
async def test_items_stream_as_events_with_their_seq(store_path: str) -> None:
    async with parjobs.open_manager(store_path, workers=2) as m:
        with m.events(items=True) as events, m.events() as others:
            h = await m.submit(NoteJob(n=12))
            await h.wait()
            got: list[ItemRecord] = []
            with trio.move_on_after(2):
                async for event in events:
                    if event.kind is EventKind.ITEM:
                        assert event.record is not None
                        got.append(event.record)
                    if len(got) == 13:
                        break
            others.close()
            kinds = {e.kind async for e in others}
        assert got == await m.items(h.id)
        assert EventKind.ITEM not in kinds and EventKind.STATUS in kinds  # only when asked


@pytest.mark.both_stores
async def test_items_are_kept_after_cancel(store_path: str) -> None:
    async with parjobs.open_manager(store_path, workers=2) as m:
        h = await m.submit(NoteJob(n=400, sleep=0.01))
        while await m.item_count(h.id, action="made") < 5:
            await trio.sleep(0.05)
        await m.cancel(h.id)
        await m.wait(h.id)
        assert (await m.get(h.id)).status is JobStatus.CANCELLED
        info = await m.get(h.id)
        made = await m.items(h.id, action="made")
        assert len(made) >= 5
        assert len(made) == len({r.index for r in made}) == info.done_items


@pytest.mark.both_stores
async def test_a_resumed_run_neither_loses_nor_repeats_records(store_path: str) -> None:
    async with parjobs.open_manager(store_path, workers=2) as m:
        h = await m.submit(NoteJob(n=200, sleep=0.005, fail_every=50, fail_once=True))
        while (await m.get(h.id)).done_items < 20:
            await trio.sleep(0.02)
        await m.pause(h.id)
        await m.wait(h.id)
        await m.resume(h.id)
        await m.wait(h.id)
        assert (await m.get(h.id)).status is JobStatus.COMPLETED
        items = await m.items(h.id)
        made = sorted(r.index for r in items if r.action == "made")
        assert made == list(range(200))  # item 0, 50... failed in run 1, done in run 2
        assert not [r for r in items if r.action == "failed"]  # retried: errors dropped


async def test_a_failed_attempt_that_is_retried_records_once(store_path: str) -> None:
    attempts: list[int] = []

    @dataclasses.dataclass
    class Flaky(parjobs.Task[None]):
        index: int
        retry = parjobs.RetryPolicy(max_attempts=3, initial_delay=0, retry_on=lambda e: True)

        def run(self, tc: parjobs.TaskContext) -> None:
            tc.record("tried", "/x")
            attempts.append(tc.attempt)
            if tc.attempt < 2:
                raise OSError("flaky")

    async with parjobs.open_manager(store_path) as m:
        async with trio.open_nursery() as nursery:
            ctx_items: list[ItemRow] = []
            ctx = parjobs.JobContext._create(
                "j",
                nursery=nursery,
                lanes={"io": trio.CapacityLimiter(2)},
                workers=2,
                completed={},
                state={},
                progress=parjobs._progress.ProgressTracker("j"),
                write=_collect(ctx_items),
                load_results=_no_results,
            )
            async for _ in ctx.task_dispatcher().dispatch_many([Flaky(0)]):
                pass
            await ctx.checkpoint(force=True)
            ctx._close_pool()
        assert attempts == [1, 2]
        assert [r[0] for r in ctx_items] == ["tried"]
    del m


def _collect(into: list[ItemRow]) -> Any:
    async def write(batch: parjobs._records.CheckpointBatch) -> None:
        into.extend(batch.items)

    return write


async def _no_results(stage: str) -> dict[int, str]:
    return {}


async def test_deleting_a_job_deletes_its_items(store_path: str) -> None:
    async with parjobs.open_manager(store_path) as m:
        h = await m.submit(NoteJob(n=3))
        await h.wait()
        assert await m.item_count(h.id) == 4
        await m.delete(h.id)
        with sqlite3.connect(store_path) as conn:
            assert conn.execute("SELECT COUNT(*) FROM item_log").fetchone()[0] == 0


@pytest.mark.parametrize("action", [None, "made"])
@pytest.mark.both_stores
async def test_item_count_of_an_unknown_job_is_zero(store_path: str, action: str | None) -> None:
    async with parjobs.open_manager(store_path) as m:
        assert await m.item_count("nope", action=action) == 0


def test_a_task_records_under_its_own_stage() -> None:
    """`TaskContext.record` names the task's stage itself, so booking it copies nothing."""
    from parjobs._task import Interrupter, TaskContext

    tc = TaskContext._create(3, "x", Interrupter(), stage="files")
    tc.record("copied", b"/a", "/b", bytes=1)
    assert tc.items is not None
    [record] = [row_record(row) for row in tc.items]
    assert (record.stage, record.index, record.source) == ("files", 3, "/a")


#: Names an item log must store and give back exactly: the SQLite store inserts a batch as
#: one statement over JSON (UTF-8 text cast to the BLOB columns), names that are not UTF-8
#: (lone surrogates for undecodable bytes) row by row, both in one batch here.
AWKWARD = [
    "/in/plain.txt",
    "/in/café naïve.txt",
    "/in/emoji \U0001f600 astral.txt",
    "/in/new\nline\tand tab.txt",
    '/in/quote " backslash \\ and \u2028.txt',
    os.fsdecode(b"/in/latin1 \xe9 byte.txt"),  # not UTF-8: a lone surrogate
    "/in/\x01 control.txt",
]


@parjobs.job_type("test-awkward-items", version=1)
class AwkwardItemsJob(parjobs.Job):
    async def run(self, ctx: parjobs.JobContext) -> dict[str, Any]:
        for name in AWKWARD:
            ctx.record_item("made", name, name.replace("/in/", "/out/"), detail=name)
        return {}


@pytest.mark.both_stores
async def test_awkward_names_come_back_from_the_item_log_exactly(store_path: str) -> None:
    async with parjobs.open_manager(store_path) as m:
        handle = await m.submit(AwkwardItemsJob())
        assert await handle.wait() is JobStatus.COMPLETED
        records = await m.items(handle.id)
    assert [r.source for r in records] == AWKWARD
    assert [os.fsencode(r.destination or "") for r in records] == [
        os.fsencode(name.replace("/in/", "/out/")) for name in AWKWARD
    ]
    assert records[0].detail == AWKWARD[0] and records[3].detail == AWKWARD[3]
    assert [r.seq for r in records] == list(range(1, len(AWKWARD) + 1))
