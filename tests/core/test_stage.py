"""A stage's completion book: what is recorded as completed, and what a checkpoint drains."""

from __future__ import annotations

import types

import pytest

import parjobs
from parjobs._indexset import IndexSet
from parjobs._progress import ItemError
from parjobs._records import CheckpointBatch as Batch  # what the context hands a stage
from parjobs._stage import Stage
from parjobs._task import Outcome, OutcomeStatus


def outcome(index: int, status: OutcomeStatus, value: object = None) -> Outcome[object]:
    return Outcome(parjobs.FunctionTask(index, print), status, value=value, bytes=10)


async def stored() -> dict[int, str]:
    return {1: '"earlier"'}


@pytest.mark.parametrize("keep_results", [False, True])
async def test_a_stage_books_completions_and_drains_only_what_is_new(keep_results: bool) -> None:
    stage = Stage("copy", IndexSet([(0, 2)]), keep_results, stored)
    error = ItemError(index=4, label="x", error="OSError", message="no")
    stage.record(outcome(3, OutcomeStatus.DONE, {"n": 3}), None)
    stage.record(outcome(5, OutcomeStatus.SKIPPED), None)
    stage.record(outcome(1, OutcomeStatus.DONE), None)  # already completed: not new
    stage.record(outcome(4, OutcomeStatus.FAILED), error)
    stage.record(outcome(6, OutcomeStatus.CANCELLED), None)
    assert [i for i in range(10) if i in stage.completed] == [0, 1, 3, 5]
    batch = Batch()
    stage.drain(batch)
    assert batch.ranges == {"copy": [(3, 4), (5, 6)]}
    assert batch.results == ([("copy", 3, '{"n": 3}')] if keep_results else [])
    assert batch.errors == [error]
    assert (batch.done_items, batch.skipped_items, batch.done_bytes) == (2, 1, 20)
    again = Batch()
    stage.drain(again)
    assert again == Batch()
    await stage.load_results()
    assert stage.stored_result(1) == ("earlier" if keep_results else None)


def test_a_stage_wakes_the_writer_once_per_drain_and_at_every_failure() -> None:
    """The first record since a drain notifies (the checkpoint writer wakes and drains all
    booked meanwhile); later ones do not, until the next drain; a failure always does."""
    woken: list[int] = []
    stage = Stage("copy", IndexSet(), False, stored, notify=lambda: woken.append(1))
    for i in range(3):
        stage.record(outcome(i, OutcomeStatus.DONE), None)
    assert len(woken) == 1
    error = ItemError(index=9, label="x", error="OSError", message="no")
    stage.record(outcome(9, OutcomeStatus.FAILED), error)
    assert len(woken) == 2
    stage.drain(Batch())
    stage.record(outcome(3, OutcomeStatus.SKIPPED), None)
    stage.record(outcome(4, OutcomeStatus.DONE), None)
    assert len(woken) == 3


def bundle_outcome(covers: list[int]) -> tuple[Outcome[object], types.SimpleNamespace]:
    """A `Bundle`'s outcome as the stage gets it: what it finished is in its context."""
    done = Outcome(parjobs.FunctionTask(covers[0], print), OutcomeStatus.DONE, bytes=len(covers))
    done.task.items = len(covers)
    return done, types.SimpleNamespace(covers=covers, items=[])


def test_a_bundles_run_of_indices_is_booked_at_once_and_drained_with_the_rest() -> None:
    """A bundle's indices, one run as a bundle of walked files mostly has, are booked as
    that run (`IndexSet.add_run`), not one by one; one with a gap, or with an index already
    completed, one by one (only the new ones count). A drain hands the runs and the single
    tasks over as one list of sorted, maximal ranges."""
    stage = Stage("copy", IndexSet([(40, 41)]), False, stored)
    stage.record(outcome(9, OutcomeStatus.DONE), None)
    for covers in (list(range(10, 20)), [2, 3, 5], list(range(38, 42)), list(range(20, 24))):
        done, tc = bundle_outcome(covers)
        stage.record(done, None, tc)  # type: ignore[arg-type]
    assert stage.new_runs == [(10, 20), (20, 24)]
    assert stage.new == [9, 2, 3, 5, 38, 39, 41]
    assert len(stage.completed) == 1 + 1 + 10 + 3 + 3 + 4
    batch = Batch()
    stage.drain(batch)
    assert batch.ranges == {"copy": [(2, 4), (5, 6), (9, 24), (38, 40), (41, 42)]}
    assert stage.new == [] and stage.new_runs == []
    woken: list[int] = []
    stage = Stage("copy", IndexSet(), False, stored, notify=lambda: woken.append(1))
    for covers in (list(range(0, 4)), list(range(4, 8))):
        done, tc = bundle_outcome(covers)
        stage.record(done, None, tc)  # type: ignore[arg-type]
    assert len(woken) == 1  # a run booked counts as new: the writer is woken once
