"""The memory budget image decodes share: big ones take turns, small ones never wait."""

from __future__ import annotations

import collections
import dataclasses
import threading
import time
from pathlib import Path

import pytest
import trio
from _jobs import bare_context
from PIL import Image

from parjobs import OutcomeStatus, Task, TaskTimeoutError
from parjobs._task import Interrupter, TaskContext
from parjobs.ops import _decodebudget
from parjobs.ops._decodebudget import decode_budget, decoded_bytes, default_budget, reserve
from parjobs.ops._imaging import make_thumbnail

MIB = 1 << 20


@pytest.fixture
def budget(monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setenv("PARJOBS_DECODE_MEMORY", str(100 * MIB))
    return 100 * MIB


def never() -> None:
    pass


def test_the_budget_comes_from_the_environment_or_the_machine(monkeypatch):
    assert 0 < default_budget() <= 1 << 30
    for bad in ("", "lots", "0", "-5"):
        monkeypatch.setenv("PARJOBS_DECODE_MEMORY", bad)
        assert decode_budget() == default_budget()
    monkeypatch.setenv("PARJOBS_DECODE_MEMORY", "12345")
    assert decode_budget() == 12345


def test_estimates_follow_the_stored_mode_and_a_jpeg_draft(tmp_path: Path) -> None:
    assert decoded_bytes(Image.new("L", (100, 10))) == 1000
    assert decoded_bytes(Image.new("RGB", (100, 10))) == 4000  # Pillow pads RGB to 4 bytes
    assert decoded_bytes(Image.new("RGBA", (100, 10))) == 8000  # the resize premultiplies a copy
    assert decoded_bytes(Image.new("I;16", (100, 10))) == 6000  # converted to 8 bits first
    src = tmp_path / "big.jpg"
    Image.new("RGB", (4000, 3000), (9, 9, 9)).save(src)
    with Image.open(src) as im:
        im.draft("RGB", (500, 375))
        assert decoded_bytes(im) == 500 * 375 * 4


def in_thread(nbytes: int, events: list[str], name: str, hold: threading.Event) -> threading.Thread:
    def run() -> None:
        with reserve(nbytes, never):
            events.append(f"{name} in")
            hold.wait(10)
            events.append(f"{name} out")

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def wait_for(events: list[str], event: str) -> None:
    deadline = time.monotonic() + 10
    while event not in events:
        assert time.monotonic() < deadline, events
        time.sleep(0.01)


def wait_for_waiters(n: int) -> None:
    deadline = time.monotonic() + 10
    while len(_decodebudget._BUDGET._queue) != n:
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_big_reservations_wait_small_ones_do_not(budget):
    events: list[str] = []
    release_a, release_b = threading.Event(), threading.Event()
    a = in_thread(60 * MIB, events, "a", release_a)
    wait_for(events, "a in")
    b = in_thread(60 * MIB, events, "b", release_b)
    wait_for_waiters(1)
    with reserve(budget // 17, never):  # under a sixteenth: not counted, never waits
        events.append("small")
    time.sleep(0.2)
    assert events == ["a in", "small"]  # b waits for a
    release_a.set()
    release_b.set()
    a.join()
    b.join()
    assert events == ["a in", "small", "a out", "b in", "b out"]


def test_one_bigger_than_the_budget_runs_alone_and_first_come_first_served(budget):
    events: list[str] = []
    release = threading.Event()
    a = in_thread(30 * MIB, events, "a", release)
    wait_for(events, "a in")
    huge = in_thread(10 * budget, events, "huge", release)
    wait_for_waiters(1)
    c = in_thread(30 * MIB, events, "c", release)  # would fit beside a, but huge came first
    wait_for_waiters(2)
    time.sleep(0.2)
    assert events == ["a in"]
    release.set()
    for thread in (a, huge, c):
        thread.join()
    assert events.index("huge in") == events.index("a out") + 1
    assert events.index("c in") == events.index("huge out") + 1


def test_a_waiting_decode_gives_up_when_its_check_raises(budget):
    class Stop(Exception):
        pass

    def stop() -> None:
        raise Stop

    with reserve(budget, never), pytest.raises(Stop), reserve(budget, stop):
        pass
    with reserve(budget, never):  # nothing was left held or queued
        pass
    assert _decodebudget._BUDGET._held == 0


def test_a_thumbnail_of_an_image_bigger_than_the_budget_is_made(tmp_path, monkeypatch):
    monkeypatch.setenv("PARJOBS_DECODE_MEMORY", "1000")
    src = tmp_path / "p.png"
    Image.new("RGB", (600, 400), (1, 2, 3)).save(src)
    result = make_thumbnail(src, tmp_path / "t.webp", box=64)
    assert (result.width, result.height) == (64, 43)
    assert _decodebudget._BUDGET._held == 0


def test_a_task_waiting_for_the_budget_is_not_timed_out_by_the_wait(budget):
    """A task's timeout runs from its start, and a decode waiting its turn called the
    task's check every 0.2 s: a big batch timed out images that never began decoding
    (each waited behind the others). The wait is off the task's clock now (its deadline
    moves by the time waited), and the clock runs again once the decode has its share."""
    tc = TaskContext._create(0, "big.png", Interrupter(), 0.6)
    events: list[str] = []
    release = threading.Event()
    holder = in_thread(budget, events, "a", release)
    wait_for(events, "a in")
    threading.Timer(1.8, release.set).start()  # the whole budget, for three timeouts
    tc.start()
    began = time.monotonic()
    with reserve(budget, tc.check):
        assert time.monotonic() - began >= 1.7  # (it waited for a)
        tc.check()  # not timed out: it has only begun
        time.sleep(0.7)
        with pytest.raises(TaskTimeoutError):
            tc.check()
    holder.join()


@dataclasses.dataclass
class _Decode(Task[None]):
    """Takes the whole budget, then works ``seconds`` (asking check, or stuck without)."""

    index: int
    nbytes: int
    seconds: float
    asks: bool
    runs: collections.Counter[int] = dataclasses.field(compare=False, repr=False)

    def run(self, tc: TaskContext) -> None:
        self.runs[self.index] += 1
        with reserve(self.nbytes, tc.check):
            end = time.monotonic() + self.seconds
            while time.monotonic() < end:
                time.sleep(0.02)
                if self.asks:
                    tc.check()


@pytest.mark.parametrize("asks", [True, False], ids=["asks", "stuck"])
async def test_the_executor_does_not_time_out_a_task_waiting_for_the_budget(budget, asks):
    """The executor's watchdog gives up on a thread whose task is past the deadline it had
    at its start: a task waiting off its clock was abandoned there and, its deadline
    cleared for the wait, run again in another thread, which waited too: eleven runs of one
    task at once, ten threads abandoned, then 'timed out'. The watchdog reads the deadline
    the wait moved: the task runs once and ends; one stuck after its wait is still timed
    out (at the moved deadline, once)."""
    events: list[str] = []
    release = threading.Event()
    holder = in_thread(budget, events, "a", release)
    wait_for(events, "a in")
    threading.Timer(1.2, release.set).start()  # more than twice the task's timeout
    runs: collections.Counter[int] = collections.Counter()
    task = _Decode(0, budget, 0.2 if asks else 1.5, asks, runs)
    async with trio.open_nursery() as nursery:
        ctx = bare_context(nursery, workers=1, threads=4)
        try:
            began = time.monotonic()
            outcomes = [o async for o in ctx.task_dispatcher(timeout=0.5).dispatch_many([task])]
            took = time.monotonic() - began
            abandoned = ctx.task_dispatcher().statistics().threads.abandoned
        finally:
            ctx._close_pool()
    holder.join()
    assert runs == {0: 1}
    [outcome] = outcomes
    if asks:
        assert outcome.status is OutcomeStatus.DONE, outcome.error
        assert abandoned == 0
    else:
        assert outcome.status is OutcomeStatus.FAILED
        assert isinstance(outcome.error, TaskTimeoutError)
        assert abandoned == 1
        assert took >= 1.6  # the wait (1.2 s), then its timeout (0.5 s) from there
