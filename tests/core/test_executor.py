"""The local thread executor: streaming thread calls, task groups, and the throttle that keeps
tiny tasks from thrashing the GIL with many threads while slow (waiting) tasks still run in
parallel."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import pytest
import trio
from _jobs import CountJob

import parjobs
from parjobs import FunctionTask, JobContext, Outcome, OutcomeStatus
from parjobs import _task as task_mod
from parjobs._task import Bundle, BundleDone
from parjobs._throttle import TinyTaskThrottle


class Concurrency:
    """Counts how many tasks run at once, across worker threads."""

    def __init__(self, n: int = 0, together: int = 0, meet: int = 0) -> None:
        self.lock = threading.Lock()
        #: With ``together``, a task starts its wait only once that many run at once (10 s
        #: at most, then it fails): tasks held back until another ends make the job fail.
        self.barrier = threading.Barrier(together) if together else None
        #: With ``meet``, a task starting once two have ended (measured slow: the throttle
        #: lifts) holds its wait until ``meet`` ran at once, 10 s at most (then the peak
        #: falls short): how fast a loaded machine starts threads does not decide the peak.
        self.meet = meet
        self.met = threading.Event()
        self.now = 0
        self.peak = 0
        self.threads: set[int] = set()
        self.ended: dict[float, float] = {}  # task length -> when the last such task ended
        self.finished = 0
        self.all_ended = threading.Event()  # set once ``n`` tasks of `task` have ended
        self.n = n
        self.others_ended_meanwhile = False  # `heavy`: all ``n`` ended while it ran

    def task(self, seconds: float) -> int:
        """Spin (tiny tasks) or sleep (slow ones, like a wait on I/O) for ``seconds``."""
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)
            self.threads.add(threading.get_ident())
            if self.meet and self.now >= self.meet:
                self.met.set()
            wait_to_meet = self.meet and self.finished >= 2
        try:
            if self.barrier is not None:
                self.barrier.wait(10)
            if wait_to_meet and not self.met.wait(10):
                self.met.set()  # given up: the others need not wait too (the peak tells)
            end = time.monotonic() + seconds
            while time.monotonic() < end:  # tiny tasks spin; slow ones sleep (I/O-like)
                if seconds > 0.001:
                    time.sleep(seconds)
        finally:
            with self.lock:
                self.now -= 1
                self.ended[seconds] = time.monotonic()
                self.finished += 1
                if self.finished == self.n:
                    self.all_ended.set()
        return 1

    def heavy(self, limit: float) -> int:
        """A heavy task (a big file being copied) that lasts until the ``n`` others have all
        ended, ``limit`` seconds at most: the others flowed past it if they did. Waiting for
        them, not for a fixed time, keeps a loaded machine from ending it too soon."""
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)
        try:
            self.others_ended_meanwhile = self.all_ended.wait(limit)
        finally:
            with self.lock:
                self.now -= 1
        return 1


TRACKERS: dict[str, Concurrency] = {}


@parjobs.job_type("test-dispatch-fanout", version=1)
class FanOut(parjobs.Job):
    """``n`` tasks of ``seconds`` each (of ``weight`` bytes); returns how many finished, by
    status."""

    name: str
    n: int
    seconds: float
    weight: int = 0
    #: When not 0: a first, heavy (1 MiB) task before the others, lasting until they have
    #: all ended, at most this many seconds (`Concurrency.heavy`).
    heavy_first: float = 0

    async def run(self, ctx: JobContext) -> dict[str, int]:
        tracker = TRACKERS[self.name]
        tasks: list[FunctionTask] = []
        if self.heavy_first:
            tasks.append(FunctionTask(self.n, tracker.heavy, (self.heavy_first,), cost=1 << 20))
        tasks += [
            FunctionTask(i, tracker.task, (self.seconds,), cost=self.weight) for i in range(self.n)
        ]
        counts: dict[str, int] = {}
        outcome: Outcome[int]
        async for outcome in ctx.task_dispatcher().dispatch_many(tasks):
            counts[outcome.status.value] = counts.get(outcome.status.value, 0) + 1
        return counts


async def run_fanout(
    store_path: str,
    name: str,
    n: int,
    seconds: float,
    workers: int,
    weight: int = 0,
    heavy_first: float = 0,
    together: int = 0,
    meet: int = 0,
) -> None:
    TRACKERS[name] = Concurrency(n, together, meet)
    job = FanOut(name=name, n=n, seconds=seconds, weight=weight, heavy_first=heavy_first)
    async with parjobs.open_manager(store_path, workers=workers) as manager:
        handle = await manager.submit(job)
        assert await handle.result() == {OutcomeStatus.DONE.value: n + bool(heavy_first)}


async def test_tiny_tasks_run_on_few_threads(
    store_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Only hiccups of 1 s x TINY_WINDOW would lift the limit, and a thread descheduled
    # mid-task is never taken for a stalled one (at load 20+ one can be, for 100 ms): the
    # scheduling of a loaded CI machine must not add threads here.
    monkeypatch.setattr("parjobs._throttle.TINY_TASK", 1.0)
    monkeypatch.setattr("parjobs._executor.STALL_SECONDS", 60.0)
    cap = TinyTaskThrottle(8, os.cpu_count() or 2).cap
    await run_fanout(store_path, "tiny", n=3000, seconds=0.00005, workers=8)
    assert TRACKERS["tiny"].peak <= cap


async def test_waiting_tasks_use_every_worker(
    store_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 64 tasks waiting 20 ms each: the first ones, measured slow, lift the throttle and all 8
    # workers take them. The tasks after the first two meet (`Concurrency.meet`) rather
    # than the run beating a wall-clock bound (< 0.8 s, against 1.3 s in one thread), which
    # load 20 broke (2.2 s); stalled calls cannot stand in for the lifted throttle here.
    monkeypatch.setattr("parjobs._executor.STALL_SECONDS", 60.0)
    await run_fanout(store_path, "slow", n=64, seconds=0.02, workers=8, meet=8)
    assert TRACKERS["slow"].peak == 8


async def test_slow_tasks_spread_over_workers_instead_of_queueing_in_one(
    store_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each thread takes one task at a time, so slow tasks run side by side once the first
    # ones, measured in one thread, have shown they are slow: the 8 after them all run at
    # once (they meet: `Concurrency.meet`; a thread queueing two of them would keep the 8
    # from meeting). Was a wall-clock bound (< 0.6 s, against 1 s in one thread), which load
    # 20 broke; stalled calls cannot stand in for the lifted throttle here.
    monkeypatch.setattr("parjobs._executor.STALL_SECONDS", 60.0)
    await run_fanout(store_path, "spread", n=10, seconds=0.1, workers=8, meet=8)
    assert TRACKERS["spread"].peak == 8


async def test_heavy_tasks_are_never_held_back(store_path: str) -> None:
    # Big files (weight >= 1 MiB) start side by side at once: none waits to be measured
    # (the first alone, then the rest). Each waits until all 4 run, so a loaded machine's
    # slow thread starts cannot fail it; one held back until another ends fails the job.
    await run_fanout(store_path, "heavy", n=4, seconds=0.15, workers=4, weight=1 << 20, together=4)
    assert TRACKERS["heavy"].peak == 4


async def test_tiny_tasks_go_on_beside_a_heavy_one(
    store_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A big file does not count against the limit: small files keep flowing past it, and
    # its thread stops after it instead of streaming tiny tasks as an extra thread. As in
    # test_tiny_tasks_run_on_few_threads, a tiny task's thread descheduled for 0.1 s by a
    # loaded machine must not pass for a stalled call (it added a thread at load 7.5).
    monkeypatch.setattr("parjobs._throttle.TINY_TASK", 0.05)
    monkeypatch.setattr("parjobs._executor.STALL_SECONDS", 60.0)
    cap = TinyTaskThrottle(8, os.cpu_count() or 2).cap
    await run_fanout(store_path, "mixed", n=2000, seconds=0.00005, workers=8, heavy_first=30)
    mixed = TRACKERS["mixed"]
    assert mixed.others_ended_meanwhile  # all tiny ones done while it ran
    assert mixed.peak <= cap + 1


# -- task groups (Task.run_group) -------------------------------------------------------------

GROUP_LOG: list[tuple[str, list[int]]] = []


class Grouped(parjobs.Task[str]):
    """Tasks whose group path does the even indices and leaves the odd ones to `run`; an
    index of 1000+ makes the group path raise, a weight of 1 MiB+ is heavy; ``WAIT`` seconds
    per task are slept in the group path (a slow share)."""

    group_size = 8
    WAIT = 0.0
    #: Group calls sleeping now (``WAIT``), and the most at once.
    waiting = peak = 0
    lock = threading.Lock()
    #: A group call holding index ``GATE`` first waits until every index in ``AFTER`` has
    #: finished its group call (``FINISHED``), then sleeps `BUNDLE_SECONDS` more: its bundle
    #: is still long once nothing else is left to run, however slow the machine.
    GATE = -1
    AFTER: frozenset[int] = frozenset()
    FINISHED: set[int] = set()

    def __init__(self, index: int, weight: int = 0) -> None:
        self.index = index
        self.cost = weight

    @property
    def weight(self) -> int:
        return self.cost

    @classmethod
    def run_group(cls, tasks, tcs):
        indices = [t.index for t in tasks]
        GROUP_LOG.append(("group", indices))
        if cls.GATE in indices:
            deadline = time.monotonic() + 30
            while not cls.AFTER <= cls.FINISHED:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the gate's tasks never finished: {cls.FINISHED}")
                time.sleep(0.002)
            time.sleep(task_mod.BUNDLE_SECONDS)
        if cls.WAIT:
            with cls.lock:
                cls.waiting += 1
                cls.peak = max(cls.peak, cls.waiting)
            time.sleep(cls.WAIT * len(tasks))
            with cls.lock:
                cls.waiting -= 1
        cls.FINISHED.update(indices)
        if any(i >= 1000 for i in indices):
            raise OSError(5, "the group path broke")
        for tc, t in zip(tcs, tasks, strict=True):
            if t.index % 2 == 0:
                tc.add_bytes(10)
        return [f"group {i}" if i % 2 == 0 else parjobs.RUN_ALONE for i in indices]

    def run(self, tc: parjobs.TaskContext) -> str:
        GROUP_LOG.append(("alone", [self.index]))
        return f"alone {self.index}"


@parjobs.job_type("test-dispatch-groups", version=1)
class GroupJob(parjobs.Job):
    indices: list[int]
    heavy: tuple[int, ...] = ()

    async def run(self, ctx: JobContext) -> dict[str, list[str]]:
        tasks = [Grouped(i, 1 << 20 if i in self.heavy else 0) for i in self.indices]
        out: dict[str, list[str]] = {}
        async for outcome in ctx.task_dispatcher().dispatch_many(tasks):
            text = outcome.value if outcome.ok else f"{outcome.status.value}: {outcome.error}"
            out[str(outcome.index)] = [str(text), str(outcome.bytes)]
        return out


async def run_groups(store_path: str, job: GroupJob) -> dict[str, list[str]]:
    GROUP_LOG.clear()
    async with parjobs.open_manager(store_path, workers=1) as m:
        handle = await m.submit(job)
        assert await handle.wait() is parjobs.JobStatus.COMPLETED
        result: dict[str, list[str]] = (await handle.info()).result
        return result


async def test_queued_tasks_of_a_class_run_in_groups_and_the_rest_alone(
    store_path: str,
) -> None:
    result = await run_groups(store_path, GroupJob(indices=list(range(40))))
    assert result == {
        str(i): [f"group {i}", "10"] if i % 2 == 0 else [f"alone {i}", "0"] for i in range(40)
    }
    groups = [ix for kind, ix in GROUP_LOG if kind == "group"]
    assert sorted(i for ix in groups for i in ix) == list(range(40))
    assert max(map(len, groups)) == Grouped.group_size  # a backlog was queued: full groups
    alone = sorted(ix[0] for kind, ix in GROUP_LOG if kind == "alone")
    assert alone == list(range(1, 40, 2))


async def test_heavy_tasks_are_never_grouped(store_path: str) -> None:
    result = await run_groups(store_path, GroupJob(indices=list(range(20)), heavy=(4, 10)))
    assert len(result) == 20
    for kind, ix in GROUP_LOG:
        if kind == "group" and len(ix) > 1:
            assert 4 not in ix and 10 not in ix


async def test_a_failing_group_fails_each_of_its_tasks_with_the_reason(store_path: str) -> None:
    GROUP_LOG.clear()
    async with parjobs.open_manager(store_path, workers=1) as m:
        handle = await m.submit(GroupJob(indices=[1000]))
        assert await handle.wait() is parjobs.JobStatus.COMPLETED_WITH_ERRORS
        (error,) = await m.errors(handle.id)
    assert error.index == 1000 and "the group path broke" in error.message
    assert ("alone", [1000]) not in GROUP_LOG  # never run twice


async def test_groups_shrink_to_single_tasks_when_tasks_wait(
    store_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tasks of 20 ms (a slow share): each group call takes one task, so the waits overlap
    across the 8 workers instead of queueing in one call."""
    monkeypatch.setattr(Grouped, "WAIT", 0.02)
    monkeypatch.setattr(Grouped, "group_size", 64)
    monkeypatch.setattr(Grouped, "peak", 0)
    GROUP_LOG.clear()
    async with parjobs.open_manager(store_path, workers=8) as m:
        handle = await m.submit(GroupJob(indices=[2 * i for i in range(64)]))
        assert await handle.wait() is parjobs.JobStatus.COMPLETED
    sizes = [len(ix) for kind, ix in GROUP_LOG if kind == "group"]
    assert sum(sizes) == 64
    assert sizes.count(1) >= 60  # groups start with one task and grow only while tasks are tiny
    # The waits overlap: group calls sleep side by side (one call for all never would). Was
    # a wall-clock bound (< 0.9 s against 1.28 s in one call), which a loaded machine breaks.
    assert Grouped.peak >= 2


# -- bundles (one task for a group's tasks: parjobs._task.Bundle) ---------------------------


class Member(Grouped):
    """`Grouped`, whose ``run`` (a task the group path left) fails for index 3."""

    def run(self, tc: parjobs.TaskContext) -> str:
        if self.index == 3:
            raise OSError(2, "No such file or directory", "f3")
        tc.record("done", f"f{self.index}")
        return super().run(tc)


@parjobs.job_type("test-dispatch-bundles", version=1)
class BundleJob(parjobs.Job):
    indices: list[int]

    async def run(self, ctx: JobContext) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {"bundle": [], "alone": [], "failed": [], "bookings": []}
        dispatcher = ctx.task_dispatcher()
        stage = ctx._stages["default"]
        async for outcome in dispatcher.dispatch_many([Bundle([Member(i) for i in self.indices])]):
            if isinstance(outcome.value, BundleDone):
                out["bundle"] += [int(v.split()[1]) for v in outcome.value.values]
            elif outcome.ok:
                out["alone"].append(outcome.index)
            else:
                out["failed"].append(outcome.index)
            out["bookings"].append(len(stage.new))  # booked as the job got it
        return out


async def test_a_bundle_books_its_tasks_together_and_leaves_the_rest_to_run_alone(
    store_path: str,
) -> None:
    """A `Bundle` is one task for many: the tasks its group path did are booked by one
    outcome (one booking, with each task's bytes and item count); the ones the group path
    left run as tasks of their own afterwards, a failure among them reported alone under its
    own index, and nothing runs twice."""
    GROUP_LOG.clear()
    async with parjobs.open_manager(store_path, workers=2) as m:
        handle = await m.submit(BundleJob(indices=list(range(12))))
        assert await handle.wait() is parjobs.JobStatus.COMPLETED_WITH_ERRORS
        info = await handle.info()
        (error,) = await m.errors(handle.id)
        records = await m.items(handle.id)
    result = info.result
    assert result["bundle"] == list(range(0, 12, 2))  # one outcome for the six
    assert sorted(result["alone"]) == [1, 5, 7, 9, 11] and result["failed"] == [3]
    assert result["bookings"][0] == 6  # the bundle's first: its six booked at once
    assert error.index == 3 and "f3" in error.message
    assert info.done_items == 11 and info.done_bytes == 60
    grouped = sorted(i for kind, ix in GROUP_LOG if kind == "group" for i in ix)
    assert grouped == list(range(12))  # each once through the group path...
    assert sorted(ix[0] for kind, ix in GROUP_LOG if kind == "alone") == [1, 5, 7, 9, 11]
    assert sorted(r.index for r in records if r.action == "done") == [1, 5, 7, 9, 11]


async def test_a_bundle_whose_group_path_breaks_leaves_every_task_to_run_alone(
    store_path: str,
) -> None:
    GROUP_LOG.clear()
    async with parjobs.open_manager(store_path, workers=1) as m:
        handle = await m.submit(BundleJob(indices=[1000, 1002]))
        assert await handle.wait() is parjobs.JobStatus.COMPLETED
        result = (await handle.info()).result
    assert result["bundle"] == [] and sorted(result["alone"]) == [1000, 1002]


@parjobs.job_type("test-dispatch-slow-bundles", version=1)
class SlowBundlesJob(parjobs.Job):
    """Bundles of `Grouped` tasks (even indices: all done by the group path), ``per`` each;
    the result says what each bundle's outcome left: one bundle, or tasks of their own."""

    indices: list[int]
    per: int

    async def run(self, ctx: JobContext) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {"done": [], "left": [], "gated": []}
        members = [Grouped(i) for i in self.indices]
        bundles = [Bundle(members[i : i + self.per]) for i in range(0, len(members), self.per)]
        async for outcome in ctx.task_dispatcher().dispatch_many(bundles):
            if isinstance(outcome.value, BundleDone):
                done = [int(v.split()[1]) for v in outcome.value.values]
                out["done"] += done
                left = outcome.value.left
                if left:
                    bundle = [isinstance(t, Bundle) for t in left]
                    out["left"].append("bundle" if bundle == [True] else len(left))
                    assert not any(bundle) or bundle == [True], "singles and a bundle left"
                if Grouped.GATE in done:  # what the bundle held back by the gate left
                    out["gated"].append(out["left"][-1] if left else 0)
            elif outcome.ok:
                out["done"].append(outcome.index)
        return out


async def test_a_slow_bundle_keeps_its_tasks_while_others_wait_for_a_worker(
    store_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bundle whose tasks are slow (10 ms each: a loaded machine) hands back the tasks it
    has not run after `BUNDLE_SECONDS` only when no task waits for a worker: with another
    bundle queued behind it (one worker) it goes on and, past `BUNDLE_MAX_SECONDS`, hands
    its rest back as one bundle (one outcome and booking, not one a file; it spread them
    as tasks of their own). Every task is done once, through the group path."""
    monkeypatch.setattr(Grouped, "WAIT", 0.01)
    monkeypatch.setattr(Bundle, "member_seconds", task_mod.BUNDLE_SECONDS)  # one a call
    GROUP_LOG.clear()
    indices = [2 * i for i in range(32)]
    async with parjobs.open_manager(store_path, workers=1) as m:
        handle = await m.submit(SlowBundlesJob(indices=indices, per=16))
        assert await handle.wait() is parjobs.JobStatus.COMPLETED
        info = await handle.info()
    result = info.result
    assert result["left"][0] == "bundle"  # the first bundle, the second queued behind it
    assert sorted(result["done"]) == indices and info.done_items == 32
    grouped = sorted(i for kind, ix in GROUP_LOG if kind == "group" for i in ix)
    assert grouped == indices and not [ix for kind, ix in GROUP_LOG if kind == "alone"]


async def test_a_slow_bundle_spreads_its_tasks_when_nothing_else_waits(
    store_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With nothing queued behind it, a slow bundle hands the tasks it has not run back as
    tasks of their own after `BUNDLE_SECONDS`, so that idle workers take some (their waits
    overlap)."""
    monkeypatch.setattr(Grouped, "WAIT", 0.01)
    monkeypatch.setattr(Bundle, "member_seconds", task_mod.BUNDLE_SECONDS)
    GROUP_LOG.clear()
    indices = [2 * i for i in range(16)]
    async with parjobs.open_manager(store_path, workers=4) as m:
        handle = await m.submit(SlowBundlesJob(indices=indices, per=16))
        assert await handle.wait() is parjobs.JobStatus.COMPLETED
        result = (await handle.info()).result
    (left,) = result["left"]
    assert isinstance(left, int) and left >= 8  # spread: at most 4 of 10 ms ran in 20 ms
    assert sorted(result["done"]) == indices


@pytest.mark.parametrize(
    ("elapsed", "member", "queued", "how"),
    [
        (0.01, 0.01, 0, task_mod._KEEP),  # not yet `BUNDLE_SECONDS`
        (0.03, 0.0001, 0, task_mod._KEEP),  # tiny tasks go on to `BUNDLE_MAX_SECONDS`
        (0.03, 0.01, 0, task_mod._SPREAD),  # slow tasks, a worker idle
        (0.03, 0.01, 5, task_mod._KEEP),  # slow tasks, every worker busy
        (0.06, 0.0001, 0, task_mod._SPREAD),
        (0.06, 0.0001, 5, task_mod._REQUEUE),
        (0.06, 0.01, 5, task_mod._REQUEUE),
    ],
)
def test_what_a_bundle_does_with_the_tasks_it_has_not_run(
    monkeypatch: pytest.MonkeyPatch, elapsed: float, member: float, queued: int, how: int
) -> None:
    monkeypatch.setattr(Bundle, "member_seconds", member)
    assert task_mod._hand_back(elapsed, lambda: queued) == how


def test_spread_rows_gives_each_done_task_its_row_and_bytes() -> None:
    """A group path that builds a chunk's rows in one go (`Task.run_members`) answers the
    pool's `run_group` through `spread_rows`: each done task gets the next row (stamped with
    its own stage) and the row's bytes; a task left to run alone gets nothing."""
    interrupter = task_mod.Interrupter()
    tcs = [
        task_mod.TaskContext._create(i, f"t{i}", interrupter, None, stage)
        for i, stage in enumerate(["copy", "copy", "copy", "links"])
    ]
    tcs[2].items = [("old", "x", None, 0, None, None, None, None, None, "copy", 2)]
    rows = [
        ("copied", f"s{i}", f"d{i}", 10 * i, None, None, 10 * i, 5, 7, "copy", i) for i in (0, 2, 3)
    ]
    task_mod.spread_rows(["a", task_mod.RUN_ALONE, "c", "d"], rows, tcs)
    assert [tc.bytes_done for tc in tcs] == [0, 0, 20, 30]
    assert tcs[0].items == [rows[0]] and tcs[1].items is None
    assert tcs[2].items == [("old", "x", None, 0, None, None, None, None, None, "copy", 2), rows[1]]
    assert tcs[3].items == [(*rows[2][:9], "links", 3)]


class Flaky(Grouped):
    """`Grouped` whose ``run`` (an odd index, which the group path leaves) fails its first
    attempt for the indices in `FAILS_ONCE`."""

    FAILS_ONCE: frozenset[int] = frozenset()
    failed: set[int] = set()

    def run(self, tc: parjobs.TaskContext) -> str:
        if self.index in self.FAILS_ONCE and self.index not in Flaky.failed:
            Flaky.failed.add(self.index)
            raise OSError(5, "a passing read error")
        return super().run(tc)


#: Set when a `RequeuedBundlesJob` sees a bundle's rest come back as one bundle.
REQUEUED: list[Any] = []


@parjobs.job_type("test-dispatch-requeued-bundles", version=1)
class RequeuedBundlesJob(parjobs.Job):
    """Bundles of ``per`` `Flaky` tasks (the odd ones run alone, some fail once and are
    retried) of the indices not done yet; ``state`` keeps what was done (in every run) and
    how many bundles handed their rest back as one bundle."""

    indices: list[int]
    per: int

    async def run(self, ctx: JobContext) -> dict[str, Any]:
        retry = parjobs.RetryPolicy(max_attempts=2, initial_delay=0, retry_on=lambda e: True)
        dispatcher = ctx.task_dispatcher(retry=retry)
        todo = [Flaky(i) for i in self.indices if not dispatcher.is_completed(i)]
        bundles = [Bundle(todo[i : i + self.per]) for i in range(0, len(todo), self.per)]
        out = ctx.state.setdefault("out", {"done": [], "requeued": 0, "retried": []})
        async for outcome in dispatcher.dispatch_many(bundles):
            if isinstance(outcome.value, BundleDone):
                out["done"] += [int(v.split()[1]) for v in outcome.value.values]
                if any(isinstance(t, Bundle) for t in outcome.value.left):
                    out["requeued"] += 1
                    for event in REQUEUED:
                        event.set()
            elif outcome.ok:
                out["done"].append(outcome.index)
                if outcome.attempts > 1:
                    out["retried"].append(outcome.index)
        return dict(out)


def each_once_through_the_group_path(indices: list[int], fails_once: frozenset[int]) -> None:
    """Every task went through a group call once, and the odd ones ran alone once (those
    failing once, twice: the failed attempt logs nothing)."""
    grouped = sorted(i for kind, ix in GROUP_LOG if kind == "group" for i in ix)
    assert grouped == sorted(indices)
    alone = sorted(ix[0] for kind, ix in GROUP_LOG if kind == "alone")
    assert alone == sorted(i for i in indices if i % 2)


async def test_a_requeued_bundle_runs_each_task_once_retries_and_run_alone_included(
    store_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Slow members (10 ms) on one worker, three bundles: each hands its rest back as one
    bundle (others wait); the rest still leaves its odd members to run alone, one of them
    failing once and retried; every task is done and booked exactly once."""
    monkeypatch.setattr(Grouped, "WAIT", 0.01)
    monkeypatch.setattr(Bundle, "member_seconds", task_mod.BUNDLE_SECONDS)
    fails = frozenset({23, 45})
    monkeypatch.setattr(Flaky, "FAILS_ONCE", fails)
    monkeypatch.setattr(Flaky, "failed", set())
    GROUP_LOG.clear()
    indices = list(range(48))
    async with parjobs.open_manager(store_path, workers=1) as m:
        handle = await m.submit(RequeuedBundlesJob(indices=indices, per=16))
        assert await handle.wait() is parjobs.JobStatus.COMPLETED
        info = await handle.info()
    out = info.result
    assert out["requeued"] >= 1
    assert sorted(out["done"]) == indices and info.done_items == 48
    assert sorted(out["retried"]) == sorted(fails)
    each_once_through_the_group_path(indices, fails)


@pytest.mark.parametrize("steer", ["pause", "cancel"])
async def test_a_job_paused_or_cancelled_as_a_bundle_is_requeued(
    store_path: str, monkeypatch: pytest.MonkeyPatch, steer: str
) -> None:
    """A pause (or cancel) as soon as a bundle's rest comes back as one bundle (it then
    waits behind the others, or runs): the job rests with what finished booked, and a
    resume does the rest; every task is done once over the two runs."""
    monkeypatch.setattr(Grouped, "WAIT", 0.01)
    monkeypatch.setattr(Bundle, "member_seconds", task_mod.BUNDLE_SECONDS)
    monkeypatch.setattr(Flaky, "FAILS_ONCE", frozenset())
    GROUP_LOG.clear()
    indices = list(range(0, 96, 2))  # all through the group path
    requeued = trio.Event()
    monkeypatch.setattr(f"{__name__}.REQUEUED", [requeued])
    async with parjobs.open_manager(store_path, workers=1) as m:
        handle = await m.submit(RequeuedBundlesJob(indices=indices, per=16))
        await requeued.wait()
        await (m.pause if steer == "pause" else m.cancel)(handle.id)
        rested = await handle.wait()
        first = await handle.info()
        done_first = sorted(i for kind, ix in GROUP_LOG if kind == "group" for i in ix)
        assert first.done_items == len(done_first) < len(indices)
        if steer == "cancel":
            assert rested is parjobs.JobStatus.CANCELLED
            return
        assert rested is parjobs.JobStatus.PAUSED
        await m.resume(handle.id)
        assert await handle.wait() is parjobs.JobStatus.COMPLETED
        info = await handle.info()
    assert sorted(info.result["done"]) == indices and info.done_items == len(indices)
    each_once_through_the_group_path(indices, frozenset())


@pytest.mark.parametrize(("workers", "bundles"), [(2, 4), (4, 2)])
async def test_the_last_bundles_spread_once_no_task_waits(
    store_path: str, monkeypatch: pytest.MonkeyPatch, workers: int, bundles: int
) -> None:
    """Slow members (10 ms): more bundles than workers hand their rest back as one bundle
    while others wait, and the last ones spread their rest once nothing waits, so no worker
    sits idle at the end; fewer bundles than workers spread at once. Each task once.

    The last bundle's first group call waits until every other task has run (the gate), so
    it is still long (14+ members) when the queue is empty: without it, a loaded machine
    emptied the queue only when the last bundles had a member or two left, which finished
    before `BUNDLE_SECONDS`, and nothing was spread (the product right, the test flaky)."""
    monkeypatch.setattr(Grouped, "WAIT", 0.01)
    monkeypatch.setattr(Grouped, "peak", 0)
    monkeypatch.setattr(Bundle, "member_seconds", task_mod.BUNDLE_SECONDS)
    GROUP_LOG.clear()
    indices = [2 * i for i in range(16 * bundles)]
    gated = indices[-16:]
    monkeypatch.setattr(Grouped, "GATE", gated[0])
    monkeypatch.setattr(Grouped, "AFTER", frozenset(indices[:-16]))
    monkeypatch.setattr(Grouped, "FINISHED", set())
    async with parjobs.open_manager(store_path, workers=workers) as m:
        handle = await m.submit(SlowBundlesJob(indices=indices, per=16))
        assert await handle.wait() is parjobs.JobStatus.COMPLETED
        result = (await handle.info()).result
    left = result["left"]
    if bundles > workers:
        assert "bundle" in left, left
    # Spread: the gated bundle ran its first call (1 or 2 members: 10 ms or more each) and,
    # nothing queued, handed the rest back as tasks of their own for the idle workers.
    (rest,) = result["gated"]
    assert isinstance(rest, int) and rest >= 14, (rest, left)
    assert Grouped.peak >= 2  # group calls slept side by side
    assert sorted(result["done"]) == indices
    assert sorted(i for kind, ix in GROUP_LOG if kind == "group" for i in ix) == indices


async def test_a_bundle_counts_only_its_own_jobs_waiting_tasks(
    store_path: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another job of the same manager has hundreds of tasks waiting for its workers: a
    slow bundle of this job, whose own queue is empty, still spreads its rest over this
    job's idle workers (it counted everyone's waiting tasks, it would keep them)."""
    monkeypatch.setattr(Grouped, "WAIT", 0.01)
    monkeypatch.setattr(Bundle, "member_seconds", task_mod.BUNDLE_SECONDS)
    GROUP_LOG.clear()
    flag = tmp_path / "flag"
    async with parjobs.open_manager(store_path, workers=4) as m:
        other = await m.submit(CountJob(n=500, log=str(tmp_path / "log"), hold=str(flag)))
        with trio.fail_after(30):
            while (ctx := m._live[other.id].ctx) is None or len(ctx._pool.queue) < 100:
                await trio.sleep(0.01)
        handle = await m.submit(SlowBundlesJob(indices=[2 * i for i in range(16)], per=16))
        assert await handle.wait() is parjobs.JobStatus.COMPLETED
        result = (await handle.info()).result
        flag.touch()
        assert await other.wait() is parjobs.JobStatus.COMPLETED
    (left,) = result["left"]
    assert isinstance(left, int), left
