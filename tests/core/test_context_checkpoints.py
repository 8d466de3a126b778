"""Resume redoes (almost) nothing (#14 part 1): completions reach the store as they come, at
most `CHECKPOINT_INTERVAL` apart (they came every 0.5 s, the first after a full interval),
so after a ``kill -9`` only the tasks in flight and those of the last interval run again; a
failed write loses nothing; a checkpoint holds an item and the job state that counts it."""

from __future__ import annotations

import itertools
import os
import signal
import time

import pytest
import trio
from _jobs import (
    CountJob,
    bare_context,
    logged,
    read_log,
    read_stamped_log,
    spawn_count_job,
    trim_torn_line,
)

import parjobs
from parjobs import FunctionTask, JobContext, JobStatus
from parjobs import _context as context_mod
from parjobs._context import CHECKPOINT_INTERVAL
from parjobs._exceptions import StoreError
from parjobs._records import CheckpointBatch
from parjobs._store import SQLiteJobStore

WORKERS = 4
#: The target (#14): what completed more than this before a kill is not run again...
TARGET = 0.05
#: ... give or take one write and the hand-over of outcomes to the job, on a loaded machine.
#: (Before, completions of the last 0.3-0.4 s ran again.)
SLACK = 0.15


async def test_after_kill_9_only_tasks_in_flight_and_the_last_interval_run_again(
    store_path: str, tmp_path: object
) -> None:
    """Three kills in a row, each some 300 tasks (0.75 s, 15 checkpoint intervals) after the
    last: the tasks run again after each are at most those in flight plus those that ended
    within the last `TARGET` (+ `SLACK`) before the kill (before: 90-140 of 600, up to 0.4 s
    old; now 9-14, < 50 ms). The children are forked from a warm interpreter."""
    log, n = os.path.join(str(tmp_path), "log"), 1300
    kills: list[int] = []  # log lines when each killed child was gone
    for _ in range(3):
        before = len(read_log(log))
        child = spawn_count_job(store_path, log, n, workers=WORKERS, sleep=0.01, forked=True)
        try:
            with trio.fail_after(60):
                while logged(log) < before + 300:
                    await trio.sleep(0.01)
            os.kill(child.pid, signal.SIGKILL)
        finally:
            child.wait()
        trim_torn_line(log)
        kills.append(len(read_log(log)))
    async with parjobs.open_manager(store_path, workers=WORKERS) as manager:
        (info,) = await manager.list_jobs()
        handle = await manager.resume(info.id)
        await handle.result()
        final = await handle.info()
    entries = read_stamped_log(log)
    assert {i for i, _ in entries} == set(range(n))
    assert final.done_items == n
    start = 0
    for end in kills:
        ran = entries[start:end]
        later = {i for i, _ in entries[end:]}
        again = [i for i, _ in ran if i in later]
        last = max(t for _, t in ran)
        recent = [i for i, t in ran if t >= last - (TARGET + SLACK)]
        oldest = max((last - t for i, t in ran if i in later), default=0.0)
        assert len(again) <= WORKERS + len(recent), (len(again), len(recent), len(ran))
        assert oldest <= TARGET + SLACK, oldest
        start = end


async def test_the_writer_writes_at_once_then_at_most_every_interval(
    autojump_clock: trio.abc.Clock,
) -> None:
    """The first completion is written at once (it waited a full interval), later ones are
    grouped: never two writes within `CHECKPOINT_INTERVAL`, never one later than that plus
    the write itself."""
    writes: list[tuple[float, list[tuple[int, int]]]] = []

    async def write(batch: CheckpointBatch) -> None:
        writes.append((trio.current_time(), batch.ranges.get("default", [])))
        await trio.sleep(0.01)  # a write takes a while

    async with trio.open_nursery() as nursery:
        ctx = bare_context(nursery, workers=2, threads=4, write=write)
        dispatcher = ctx.task_dispatcher()
        # "At once" counts from the completion, not from the dispatch: while the task runs
        # in its thread (real time: 50 ms+ at load 8) the clock jumps through the executor's
        # watchdog ticks (`WATCHDOG_TICK`), so the completion itself may come 0.05 s later.
        async for _ in dispatcher.dispatch_many(FunctionTask(i, int) for i in range(1)):
            completed = trio.current_time()
        await trio.sleep(0.001)
        assert writes and writes[0][0] - completed < 0.005  # at once
        ends: list[float] = []
        for i in range(1, 41):  # one completion every 5 ms for 200 ms
            async for _ in dispatcher.dispatch_many([FunctionTask(i, int)]):
                pass
            ends.append(trio.current_time())
            await trio.sleep(0.005)
        await trio.sleep(0.2)
        ctx._close_pool()
    times = [t for t, _ in writes]
    assert all(b - a >= CHECKPOINT_INTERVAL - 1e-9 for a, b in itertools.pairwise(times))
    written = sorted(i for _, ranges in writes for a, b in ranges for i in range(a, b))
    assert written == list(range(41))
    for i, ended in enumerate(ends, 1):  # each was written within one interval + a write
        when = next(t for t, ranges in writes if any(a <= i < b for a, b in ranges))
        assert when - ended <= CHECKPOINT_INTERVAL + 0.01 + 1e-9


async def test_a_round_that_wrote_nothing_does_not_hold_back_the_next_write(
    autojump_clock: trio.abc.Clock,
) -> None:
    """The writer woken with nothing new (a job's `checkpoint` after a round that wrote it
    all) writes nothing: a completion soon after is written at once, as after any idle
    spell, not one interval after that empty round (it slept a full interval before), and
    writes still start at most every `CHECKPOINT_INTERVAL`, forced ones counted."""
    writes: list[float] = []

    async def write(batch: CheckpointBatch) -> None:
        writes.append(trio.current_time())
        await trio.sleep(0.001)

    async with trio.open_nursery() as nursery:
        ctx = bare_context(nursery, workers=2, threads=4, write=write)
        dispatcher = ctx.task_dispatcher()
        async for _ in dispatcher.dispatch_many([FunctionTask(0, int)]):
            pass
        await trio.sleep(1)
        assert len(writes) == 1
        await ctx.checkpoint()  # nothing new: an empty round
        await trio.sleep(CHECKPOINT_INTERVAL / 5)
        assert len(writes) == 1
        async for _ in dispatcher.dispatch_many([FunctionTask(1, int)]):
            completed = trio.current_time()
        await trio.sleep(0.001)
        assert len(writes) == 2 and writes[1] - completed < 0.005  # at once
        await trio.sleep(1)
        # A forced write counts for the spacing: the writer's next one waits an interval.
        async for _ in dispatcher.dispatch_many([FunctionTask(2, int)]):
            pass
        await ctx.checkpoint(force=True)
        async for _ in dispatcher.dispatch_many([FunctionTask(3, int)]):
            pass
        await trio.sleep(1)
        ctx._close_pool()
    assert len(writes) == 4 and writes[3] - writes[2] >= CHECKPOINT_INTERVAL - 1e-9


async def test_a_failed_write_keeps_its_batch_for_the_next(autojump_clock: trio.abc.Clock) -> None:
    """The store was busy (a StoreError): the background write lost its batch before; now
    the next write carries it."""
    writes: list[CheckpointBatch] = []
    failures = [1]

    async def write(batch: CheckpointBatch) -> None:
        if failures:
            failures.pop()
            raise StoreError("database is locked")
        writes.append(batch)

    async with trio.open_nursery() as nursery:
        ctx = bare_context(nursery, workers=2, threads=4, write=write)
        async for _ in ctx.task_dispatcher().dispatch_many(FunctionTask(i, int) for i in range(5)):
            pass
        await trio.sleep(1)
        ctx._close_pool()
        await ctx.checkpoint(force=True)
    assert not failures
    done = sorted(i for b in writes for a, z in b.ranges["default"] for i in range(a, z))
    assert done == list(range(5))
    assert sum(b.done_items for b in writes) == 5


async def test_a_job_whose_checkpoints_keep_failing_pauses_with_the_reason(
    store_path: str, tmp_path: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Checkpoint writes keep failing (its store's disk is full), at least
    `FAILED_WRITES_TO_PAUSE` times over `PAUSE_AFTER_FAILING` (here 0.2 s): the job pauses
    then, saying why, instead of running all its tasks unrecorded; once the store writes
    again it is paused, nothing it recorded is lost, and it resumes by itself to its end
    (every task run, those done before not again)."""
    log, n = os.path.join(str(tmp_path), "log"), 3000
    monkeypatch.setattr(context_mod, "PAUSE_AFTER_FAILING", 0.2)
    failing = [False]  # writes fail from the job's start until it pauses itself
    real = SQLiteJobStore.checkpoint
    real_stop = JobContext._stop_unrecorded

    def checkpoint(self: SQLiteJobStore, *args: object, **kwargs: object) -> None:
        if failing[0]:
            raise StoreError("job store failed: database or disk is full")
        real(self, *args, **kwargs)  # type: ignore[arg-type]

    def stop(ctx: JobContext, exc: StoreError) -> None:
        assert time.monotonic() - began >= 0.2  # (not before that long)
        failing[0] = False
        real_stop(ctx, exc)

    monkeypatch.setattr(SQLiteJobStore, "checkpoint", checkpoint)
    monkeypatch.setattr(JobContext, "_stop_unrecorded", stop)
    async with parjobs.open_manager(store_path, workers=2) as manager:
        began, failing[0] = time.monotonic(), True
        handle = await manager.submit(CountJob(n=n, log=log, sleep=0.001))
        with trio.fail_after(30):
            assert await handle.wait() is JobStatus.PAUSED
        info = await handle.info()
        assert info.error is not None and "disk is full" in info.error, info.error
        assert "paused: its progress cannot be recorded" in info.error
        ran = len(read_log(log))
        assert 0 < ran < n // 2  # (all 3,000 ran before, then the job failed at its end)
        with trio.fail_after(30):
            async for _ in manager.watch(handle.id, through_pauses=True):
                pass
        info = await handle.info()
        assert (info.status, info.runs, info.error) == (JobStatus.COMPLETED, 2, None)
    assert sorted(read_log(log)) == list(range(n))  # the writes that failed were kept


@parjobs.job_type("test-state-counts", version=1)
class StateCounts(parjobs.Job):
    """Counts its outcomes in ``ctx.state``, slowly, as a copy counts its bytes."""

    n: int

    async def run(self, ctx: JobContext) -> int:
        ctx.state.setdefault("count", 0)
        async for _ in ctx.task_dispatcher().dispatch_many(
            FunctionTask(i, int) for i in range(self.n)
        ):
            ctx.state["count"] += 1
            await trio.sleep(0.002)  # the job is slower than its tasks: outcomes wait
        return int(ctx.state["count"])


async def test_a_checkpoint_holds_an_item_only_with_the_state_that_counts_it(
    store_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Completions were booked when a task ended, the state when the job had counted them:
    a checkpoint between the two recorded items no state counted, and the totals of a
    resumed copy came out short. Now every stored checkpoint agrees with its state.

    Real time: 200 outcomes 2 ms apart make 8 or more checkpoints in 0.4 s (on the
    suite's `autojump_clock`, which jumps only after 20 ms of real idleness, each of the
    200 sleeps cost 20 ms: 4-5 s)."""
    seen: list[tuple[int, int]] = []
    real = SQLiteJobStore.checkpoint

    def spy(
        store: SQLiteJobStore, job_id: str, batch: CheckpointBatch, holder: str | None = None
    ) -> None:
        real(store, job_id, batch, holder)
        info = store.get(job_id)
        seen.append((info.done_items, info.state.get("count", 0)))

    monkeypatch.setattr(SQLiteJobStore, "checkpoint", spy)
    async with parjobs.open_manager(store_path) as manager:
        handle = await manager.submit(StateCounts(n=200))
        assert await handle.result() == 200
    assert len(seen) > 3
    assert all(done == count for done, count in seen), seen


class FiveFiles(parjobs.Task[None]):
    """A task standing for five of the job's items (as a run of files does)."""

    items = 5

    def __init__(self, index: int) -> None:
        self.index = index

    def run(self, tc: parjobs.TaskContext) -> None:
        return None


@parjobs.job_type("test-five-files", version=1)
class FiveFilesJob(parjobs.Job):
    """Tasks of five items each; the first run pauses itself after its fourth outcome."""

    n: int

    async def run(self, ctx: JobContext) -> None:
        ctx.progress.set_total(items=self.n * 5)
        taken = 0
        async for _ in ctx.task_dispatcher().dispatch_many(FiveFiles(i) for i in range(self.n)):
            taken += 1
            if taken == 4 and ctx.run_number == 1:
                ctx._request("pause")


async def test_a_resumed_run_counts_the_items_of_multi_item_tasks(store_path: str) -> None:
    """Checkpoints counted one item per task, the progress tracker `Task.items`: a job paused
    and resumed showed 44 of 200 items done at its end (the first run's 39 tasks restored
    as 39 items). Now the store counts items as progress does, across runs."""
    async with parjobs.open_manager(store_path, workers=2) as manager:
        handle = await manager.submit(FiveFilesJob(n=40))
        assert await handle.wait() is parjobs.JobStatus.PAUSED
        paused = await handle.info()
        assert 0 < paused.done_items < 200 and paused.done_items % 5 == 0
        await manager.resume(handle.id)
        assert await handle.wait() is parjobs.JobStatus.COMPLETED
        info = await handle.info()
    assert (info.done_items, info.progress.items_done, info.progress.items_total) == (200, 200, 200)
