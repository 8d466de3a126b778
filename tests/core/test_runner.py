"""`classify`: how a run ends, decided without trio from what happened to it."""

from __future__ import annotations

import pytest

from parjobs import CancelRequested, JobStatus, PauseRequested
from parjobs._runner import Ending, classify

QUIET = dict(
    lost=None,
    timed_out=False,
    timeout=None,
    reason=None,
    failure=None,
    cancelled_caught=False,
    retry=False,
    items_failed=0,
)


def end(**changes: object) -> Ending:
    return classify(**{**QUIET, **changes})  # type: ignore[arg-type]


def test_a_run_that_returned_completes_with_or_without_errors() -> None:
    assert end() == Ending(JobStatus.COMPLETED, cleanup=False)
    assert end(items_failed=2) == Ending(JobStatus.COMPLETED_WITH_ERRORS, cleanup=False)


def test_a_lost_lease_wins_over_everything_and_cleans_nothing() -> None:
    ending = end(lost="taken", reason="cancel", failure=ValueError("x"), timed_out=True)
    assert ending == Ending(JobStatus.INTERRUPTED, cleanup=None, error="taken")


def test_timeout_unless_cancelled_or_failed_otherwise() -> None:
    assert end(timed_out=True, timeout=1.5, reason="pause", failure=PauseRequested()) == (
        Ending(JobStatus.TIMED_OUT, cleanup=False, error="timed out after 1.5 s")
    )
    assert end(timed_out=True, timeout=1, reason="cancel").status is JobStatus.CANCELLED
    failed = end(timed_out=True, timeout=1, failure=ValueError("boom"))
    assert failed.status is JobStatus.FAILED


def test_a_transient_failure_is_retried_only_when_nobody_interrupted() -> None:
    assert end(failure=OSError("busy"), retry=True) == Ending(None)
    paused = end(failure=OSError("busy"), retry=True, reason="pause", cancelled_caught=True)
    assert paused.status is JobStatus.PAUSED
    assert end(failure=OSError("busy"), retry=True, reason="cancel").status is (JobStatus.CANCELLED)


def test_cancel_cleans_up_as_cancelled() -> None:
    assert end(reason="cancel", failure=CancelRequested()) == Ending(
        JobStatus.CANCELLED, cleanup=True
    )


@pytest.mark.parametrize(
    "changes",
    [{"failure": PauseRequested()}, {"cancelled_caught": True, "reason": "pause"}],
)
def test_pause_keeps_everything_for_resume(changes: dict[str, object]) -> None:
    assert end(**changes) == Ending(JobStatus.PAUSED)


def test_stopped_by_the_manager_is_interrupted() -> None:
    assert end(cancelled_caught=True) == Ending(
        JobStatus.INTERRUPTED, error="stopped by the manager"
    )


def test_a_failure_fails_with_its_one_line_description() -> None:
    ending = end(failure=ValueError("bad input"))
    assert ending == Ending(JobStatus.FAILED, cleanup=False, error="ValueError: bad input")
