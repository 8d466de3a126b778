"""Hung I/O stalls nothing (#14 part 4): a task blocked in a thread does not hold back the
others, a timeout counts from a task's start, a watchdog gives up on a task stuck past its
timeout (the item fails with the reason, the thread is abandoned and counted, the job goes
on), and closing a manager with a thread stuck in a system call returns after its grace."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
from _jobs import bare_context

import parjobs
from parjobs import FunctionTask, JobContext, OutcomeStatus, TaskContext
from parjobs._progress import ProgressTracker
from parjobs._throttle import TinyTaskThrottle


@pytest.fixture
async def ctx() -> AsyncIterator[JobContext]:
    """A job context on its own (no manager, no store): checkpoints go nowhere."""
    async with trio.open_nursery() as nursery:
        context = bare_context(nursery, workers=8, threads=16)
        yield context
        context._close_pool()


def blocked(release: threading.Event, entered: threading.Event | None = None) -> str:
    """A task that never checks in: a stat on a dead mount, a read nobody answers."""
    if entered is not None:
        entered.set()
    release.wait(60)
    return "released"


async def test_a_hung_task_does_not_hold_back_the_others(
    ctx: JobContext, autojump_clock: trio.abc.Clock
) -> None:
    """On 2 cores the throttle lets one thread stream tiny tasks; a task hung in that thread
    held back every other (20 x 1 ms tasks started only once a 3 s task ended). Now a call
    stalled for `STALL_SECONDS` stops counting, and the others run while it hangs."""
    release = threading.Event()
    cap = TinyTaskThrottle(8, os.cpu_count() or 2).cap  # as many hung tasks as stream slots
    entered = [threading.Event() for _ in range(cap)]
    quick = [FunctionTask(i, time.sleep, (0.001,)) for i in range(20)]

    async def feed() -> AsyncIterator[FunctionTask]:
        for i, event in enumerate(entered):
            yield FunctionTask(100 + i, blocked, (release, event))
        while not all(e.is_set() for e in entered):  # the hung ones hold every slot now
            await trio.sleep(0.01)
        for task in quick:
            yield task

    dispatcher = ctx.task_dispatcher()
    done: list[int] = []
    stalled = 0
    try:
        with trio.fail_after(60):
            async for outcome in dispatcher.dispatch_many(feed()):
                assert outcome.status is OutcomeStatus.DONE
                done.append(outcome.index)
                stalled = max(stalled, dispatcher.statistics().threads.stalled)
                if len(done) == len(quick):
                    assert not release.is_set()  # every quick task ran beside the hung ones
                    release.set()
    finally:
        release.set()
    assert sorted(done[: len(quick)]) == list(range(20))
    assert sorted(done[len(quick) :]) == [100 + i for i in range(cap)]
    assert stalled == cap


def slow_check(seconds: float, tc: TaskContext) -> str:
    time.sleep(seconds)
    tc.check()
    return "ok"


async def test_a_timeout_counts_from_the_start_of_a_task(
    ctx: JobContext, autojump_clock: trio.abc.Clock
) -> None:
    """A 20 ms task with a 0.5 s timeout queued behind a 0.8 s task (one worker) used to
    fail "timed out" as it started: its deadline ran from when it was queued."""
    one = JobContext._create(
        "one",
        nursery=ctx._nursery,
        lanes={"io": trio.CapacityLimiter(1)},
        workers=1,
        completed={},
        state={},
        progress=ProgressTracker("one"),
        write=ctx._write,
        load_results=ctx._load_results,
    )
    first = FunctionTask(0, time.sleep, (0.8,))
    second = FunctionTask(1, slow_check, (0.02,), pass_context=True)
    second.timeout = 0.5
    try:
        outcomes = [o async for o in one.task_dispatcher().dispatch_many([first, second])]
    finally:
        one._close_pool()
    assert [(o.index, o.status) for o in outcomes] == [
        (0, OutcomeStatus.DONE),
        (1, OutcomeStatus.DONE),
    ]


async def test_a_task_stuck_past_its_timeout_is_given_up_and_the_job_goes_on(
    ctx: JobContext, autojump_clock: trio.abc.Clock
) -> None:
    """A task that never checks in used to run past its timeout and be reported done; now
    the watchdog fails it at its timeout with the reason, abandons its thread (counted as
    abandoned, and as stuck while it runs), and the other tasks go on."""
    release = threading.Event()
    stuck = FunctionTask(0, blocked, (release,), name="dead-mount/file")
    stuck.timeout = 0.3
    others = [FunctionTask(i, time.sleep, (0.001,)) for i in range(1, 11)]
    dispatcher = ctx.task_dispatcher()
    try:
        with trio.fail_after(30):
            outcomes = {o.index: o async for o in dispatcher.dispatch_many([stuck, *others])}
        threads = dispatcher.statistics().threads
        assert (threads.abandoned, threads.stuck) == (1, 1)
    finally:
        release.set()
    failed = outcomes.pop(0)
    assert failed.status is OutcomeStatus.FAILED
    assert isinstance(failed.error, parjobs.TaskTimeoutError)
    message = str(failed.error)
    assert "dead-mount/file: timed out after 0.3 s" in message
    assert "abandoned" in message
    assert all(o.status is OutcomeStatus.DONE for o in outcomes.values())
    assert len(outcomes) == 10
    with trio.fail_after(30):  # the thread, released, leaves: no longer stuck
        while dispatcher.statistics().threads.stuck:
            await trio.sleep(0.05)
    assert dispatcher.statistics().threads.abandoned == 1


@parjobs.job_type("test-hung-fifo", version=1)
class ReadFifo(parjobs.Job):
    """One task that opens a FIFO for reading: the open blocks in the kernel until someone
    opens it for writing (nobody does)."""

    fifo: str
    started: str

    async def run(self, ctx: JobContext) -> Any:
        def read(tc: TaskContext) -> bytes:
            open(self.started, "w").close()
            fd = os.open(self.fifo, os.O_RDONLY)  # blocks: no writer
            try:
                return os.read(fd, 1)
            finally:
                os.close(fd)

        task = FunctionTask(0, read, pass_context=True)
        return [o.status async for o in ctx.task_dispatcher().dispatch_many([task])]


async def test_close_returns_after_its_grace_with_a_thread_stuck_in_a_system_call(
    store_path: str, tmp_path: Any
) -> None:
    """Closing waited for the stuck thread (19.5 s in the report; forever on a dead mount).
    Now the job is stopped after ``shutdown_grace`` and its thread abandoned: close returns
    in about a second, the job is resumable, and nothing else is lost."""
    fifo, started = str(tmp_path / "fifo"), str(tmp_path / "started")
    os.mkfifo(fifo)

    def unblock() -> None:  # a safety net: the old code would hang forever
        time.sleep(15)
        if not closed.is_set():
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))

    closed = threading.Event()
    threading.Thread(target=unblock, daemon=True).start()
    try:
        async with parjobs.open_manager(store_path, shutdown_grace=1.0) as manager:
            handle = await manager.submit(ReadFifo(fifo=fifo, started=started))
            with trio.fail_after(20):
                while not os.path.exists(started):
                    await trio.sleep(0.01)
            await trio.sleep(0.1)  # the thread is in open() now
            t0 = time.monotonic()
        elapsed = time.monotonic() - t0
    finally:
        closed.set()
        with contextlib.suppress(OSError):  # let the abandoned thread go
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    assert elapsed < 4.0, f"close took {elapsed:.1f} s with grace=1"
    async with parjobs.open_manager(store_path) as manager:
        info = await manager.get(handle.id)
        assert info.status in (parjobs.JobStatus.INTERRUPTED, parjobs.JobStatus.PAUSED)
        assert info.done_items == 0  # the stuck item was not recorded as done


class Grouped(parjobs.Task[str]):
    """Tasks run in groups; the first group call of several tasks hangs (a dead mount under
    C code). Even indices have a short timeout."""

    group_size = 4
    RELEASE = threading.Event()
    CALLS: list[list[int]] = []

    def __init__(self, index: int) -> None:
        self.index = index
        self.timeout = 0.3 if index % 2 == 0 else 30.0

    @classmethod
    def run_group(cls, tasks: Any, tcs: Any) -> list[Any]:
        indices = [t.index for t in tasks]
        hang = len(indices) > 1 and not any(len(c) > 1 for c in cls.CALLS)
        cls.CALLS.append(indices)
        if hang:
            cls.RELEASE.wait(60)
        return ["grouped"] * len(tasks)

    def run(self, tc: TaskContext) -> str:
        return "alone"


async def test_a_stuck_group_fails_the_members_past_their_timeout_and_requeues_the_rest(
    ctx: JobContext, autojump_clock: trio.abc.Clock
) -> None:
    """A group call that hangs holds several tasks: the watchdog fails those past their
    timeout and gives the others back to the queue, where they run again (in another
    thread); the hung thread is abandoned."""
    Grouped.CALLS.clear()
    Grouped.RELEASE.clear()
    dispatcher = ctx.task_dispatcher()
    try:
        with trio.fail_after(60):
            outcomes = {
                o.index: o async for o in dispatcher.dispatch_many(Grouped(i) for i in range(32))
            }
        assert dispatcher.statistics().threads.abandoned == 1
    finally:
        Grouped.RELEASE.set()
    hung = next(c for c in Grouped.CALLS if len(c) > 1)  # groups grow as calls prove quick
    for i, outcome in outcomes.items():
        if i in hung and i % 2 == 0:
            assert outcome.status is OutcomeStatus.FAILED, i
            assert isinstance(outcome.error, parjobs.TaskTimeoutError)
        else:  # a member of the hung group ran again in another call
            assert outcome.value == "grouped", i
    assert len(outcomes) == 32
    assert any(i % 2 for i in hung) and any(i % 2 == 0 for i in hung)
