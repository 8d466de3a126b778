"""A stage's completion book: what is recorded as completed, and what a checkpoint drains."""

from __future__ import annotations

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
