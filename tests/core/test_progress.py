"""`Progress` and `ProgressTracker`: totals, in flight, bytes of unfinished items (#14 part 3)."""

from __future__ import annotations

import dataclasses
import json

import trio
import trio.testing

from parjobs._progress import ItemError, Progress, ProgressTracker


@dataclasses.dataclass
class Item:
    """What the tracker reads of a running task (a `TaskContext` has the same fields)."""

    index: int
    label: str = ""
    bytes_done: int = 0
    stage: str = "default"


@dataclasses.dataclass
class Stored:
    """The stored record `ProgressTracker.restore` continues from."""

    progress: Progress
    done_items: int = 0
    skipped_items: int = 0
    done_bytes: int = 0


def tracker() -> ProgressTracker:
    now = [0.0]
    t = ProgressTracker("j", clock=lambda: now[0])
    t.run_started()
    return t


def test_a_group_run_by_one_call_counts_once_in_flight() -> None:
    t = tracker()
    group = [(100 + i, Item(i, f"small-{i}")) for i in range(50)]
    t.started_group(group)
    t.started(1, Item(60, "big"))
    snap = t.snapshot()
    assert snap.in_flight == 2
    assert snap.current == ("small-0", "big")
    for key, _ in group[:-1]:
        t.finished(key, "done", 1, None)
    assert t.snapshot().in_flight == 2  # the group still runs its last file
    t.finished(group[-1][0], "done", 1, None)
    assert t.snapshot().in_flight == 1
    assert t.snapshot().items_done == 50


def test_an_item_whose_task_ended_is_not_in_flight_while_its_outcome_waits() -> None:
    t = tracker()
    for key in range(20):  # one thread ran 20 tiny tasks; trio books them in a batch later
        t.started(key, Item(key, f"f{key}", bytes_done=10))
        t.ended(key)
    t.started(99, Item(99, "now", bytes_done=5))
    snap = t.snapshot()
    assert snap.in_flight == 1 and snap.current == ("now",)
    assert snap.bytes_done == 205  # their bytes stay counted until they are booked
    for key in range(20):
        t.finished(key, "done", 10, None)
    assert t.snapshot().bytes_done == 205 and t.snapshot().items_done == 20


def test_bytes_of_a_paused_item_are_kept_then_taken_over_when_it_runs_again() -> None:
    t = tracker()
    t.set_total(items=2, bytes=1000)
    first = Item(3, "big", bytes_done=400)
    t.started(7, first)
    t.finished(7, "cancelled", 0, None)  # paused mid-file
    paused = t.snapshot()
    assert paused.bytes_done == 400 and paused.partial == (("default", 3, 400),)

    # A later run (another process) continues from the stored snapshot.
    stored = Progress.from_json(paused.to_json())
    again = tracker()
    again.restore(Stored(stored))
    assert again.snapshot().bytes_done == 400
    rerun = Item(3, "big", bytes_done=0)  # re-reading its partial: not counted yet
    again.started(8, rerun)
    assert again.snapshot().bytes_done == 400
    rerun.bytes_done = 650
    assert again.snapshot().bytes_done == 650
    again.finished(8, "done", 1000, None)
    done = again.snapshot()
    assert done.bytes_done == 1000 and done.partial == ()


def test_a_retried_item_keeps_its_bytes_shown_and_other_stages_are_apart() -> None:
    t = tracker()
    t.started(1, Item(0, "a", bytes_done=300))
    t.finished(1, "retrying", 0, None)
    assert t.snapshot().bytes_done == 300
    t.started(2, Item(0, "finish", bytes_done=5, stage="finish"))  # same index, other stage
    assert t.snapshot().bytes_done == 305
    t.finished(2, "done", 5, None)
    t.started(1, Item(0, "a", bytes_done=100))
    assert t.snapshot().bytes_done == 305
    t.finished(1, "failed", 320, None)
    assert t.snapshot().bytes_done == 325 and t.snapshot().partial == ()


def test_totals_never_read_below_what_is_done() -> None:
    t = tracker()
    t.set_total(items=1, bytes=100, final=False)  # a resumed walk still re-counting
    t.bytes_done = 150
    t.items_done = 3
    snap = t.snapshot()
    assert snap.bytes_total == 150 and snap.items_total == 3
    t.started(1, Item(9, "grew", bytes_done=70))  # a file that grew while being copied
    t.finalize_totals()
    snap = t.snapshot()
    assert snap.bytes_done == 220 and snap.bytes_total == 220 and snap.fraction == 1.0


def test_a_job_whose_items_all_finished_is_whole_with_failures_and_skips() -> None:
    """Skipped and failed items are finished: a copy that ended with 1 done, 1 skipped and
    1 failed (its bytes never copied, and not counted as done) is at 100 %, not 67 %."""
    t = tracker()
    t.add_total(items=3, bytes=300)
    t.finalize_totals()
    t.finished(1, "done", 100, None)
    t.finished(2, "skipped", 100, None)
    assert t.snapshot().fraction == 2 / 3
    t.finished(3, "failed", 0, None)
    snap = t.snapshot()
    assert snap.fraction == 1.0 and snap.items_finished == snap.items_total == 3
    assert snap.bytes_done == 100 and snap.bytes_skipped == 100  # bytes stay as they were


def test_fraction_is_none_while_totals_may_grow() -> None:
    t = tracker()
    t.add_total(items=10, bytes=1000)
    t.finished(1, "done", 500, None)
    assert t.snapshot().fraction is None and t.snapshot().eta is None
    t.finalize_totals()
    assert t.snapshot().fraction == 0.5


def test_an_old_snapshot_without_partial_still_loads() -> None:
    data = Progress(job_id="j", bytes_done=5).to_json()
    del data["partial"]
    assert Progress.from_json(data).partial == ()


async def test_final_totals_are_shown_at_once_not_at_the_next_tick(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A subscriber paces its snapshots (~10/s), but the one with final totals (the first
    that can carry an ETA) comes at once, as the final snapshot does (#14)."""
    t = ProgressTracker("j", clock=trio.current_time)
    t.run_started()
    t.add_total(items=5)
    got: list[tuple[float, Progress]] = []

    async def follow() -> None:
        async for snap in t.subscribe():
            got.append((trio.current_time(), snap))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(follow)
        await trio.sleep(0.01)  # the first snapshot is out; the pause after it has begun
        start = trio.current_time()
        t.set_total(items=10, final=True)
        await trio.sleep(0.5)
        t.set_total(items=11, final=True)  # final already: paced as usual
        await trio.sleep(0.5)
        t.close()
    first_final = next((when, s) for when, s in got if s.totals_final)
    assert first_final[0] - start < 0.01 and first_final[1].items_total == 10
    late = next(when for when, s in got if s.items_total == 11)
    assert late - (start + 0.5) >= 0.0  # (not hurried: at its tick or after)
    assert got[-1][1].items_total == 11


def test_to_json_is_plain_data_and_reads_back() -> None:
    """`Progress.to_json` (written field by field for speed) gives what `dataclasses.asdict`
    gave, with lists for tuples and no tracebacks, and `from_json` reads it back."""
    error = ItemError(3, "a.txt", "OSError", "boom", "copy", traceback="Traceback ...")
    snap = Progress(
        job_id="j",
        items_done=2,
        items_total=9,
        bytes_total=None,
        eta=1.5,
        current=("a", "b"),
        recent_errors=(error,),
        partial=(("copy", 4, 100),),
    )
    data = snap.to_json()
    expected = dataclasses.asdict(snap)
    expected["current"] = ["a", "b"]
    expected["recent_errors"] = [
        {"index": 3, "label": "a.txt", "error": "OSError", "message": "boom", "stage": "copy"}
    ]
    expected["partial"] = [["copy", 4, 100]]
    assert data == expected and list(data) == list(expected)
    assert json.loads(json.dumps(data)) == data
    assert Progress.from_json(data) == dataclasses.replace(
        snap, recent_errors=(dataclasses.replace(error, traceback=""),)
    )


def test_a_snapshot_survives_threads_starting_items_while_it_copies() -> None:
    """`started` runs in worker threads, `snapshot` on trio's: the copy of the in-flight
    items must not iterate the live dict. A collection during that iteration runs Python
    (finalizers), where the GIL may pass to a thread that starts an item; here a finalizer
    starts one itself, as such a thread would ("dictionary changed size during iteration"
    before: once, under load, in the reliability suite)."""
    import gc

    t = tracker()
    for key in range(200):
        t.started(key, Item(key, f"f{key}"))
    added = iter(range(1000, 1100))
    armed, stopped = False, False

    class Thread:
        """Cyclic garbage whose finalizer (while ``armed``) starts an item, and leaves the
        next such garbage for the next collection."""

        def __init__(self) -> None:
            self.me = self

        def __del__(self) -> None:
            if stopped:
                return
            if armed:
                key = next(added, None)
                if key is None:
                    return
                t.started(key, Item(key, f"g{key}"))
            Thread()

    old = gc.get_threshold()
    Thread()
    gc.set_threshold(1)
    try:
        for _ in range(20):
            # Pairs held alive empty the interpreter's free list of pairs, so the copy's
            # pairs are new allocations, each of which may start a collection.
            held = [(i, i) for i in range(5000)]
            armed = True
            snap = t.snapshot()
            armed = False
            del held
    finally:
        stopped = True
        gc.set_threshold(*old)
        gc.collect()
    assert snap.in_flight >= 200
