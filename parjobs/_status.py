"""Job statuses and the transitions allowed between them (see docs/concepts.md)."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from types import MappingProxyType

from ._exceptions import InvalidTransitionError

#: How the stored error of a job its failing store paused begins: the mark that it was the
#: store, not a person, that stopped it, so a manager resumes it once the store takes writes
#: again (`parjobs._housekeeping`). A person's pause, resume or cancel replaces it. While it
#: rests so, the manager that paused it keeps its lease, to resume it: only a reservation,
#: which anyone's pause, resume, cancel or delete overrides (the stores' `_check_owner`);
#: once that manager is gone, the job is recovered as ``interrupted`` (see `recover`).
STORE_PAUSED = "paused: its progress cannot be recorded"


#: What the record of a job resumed that way says while it is queued (its run clears it).
RESUMED = "resumed by itself: the store takes writes again (its failures had paused it)"


#: How the stored error of a job cancelled without its cleanup begins: this parjobs could not
#: load its job type (a plug-in uninstalled) or its spec, so what the cleanup removes (the
#: partials it kept for a resume) may remain, and its record says so (`uncleaned`).
UNCLEANED = "cancelled without its cleanup"


def uncleaned(why: object, error: str | None) -> str:
    """The error a job cancelled without its cleanup records: ``why`` the cleanup could not
    run, what may remain, and the job's ``error`` before (its failure), if one was a
    failure's (not a store's pause or the note of a resume)."""
    text = (
        f"{UNCLEANED}, which cannot run here: {why}; partial or temporary files it kept "
        "for a resume may remain where it wrote (its spec says where)"
    )
    if error and not paused_by_store(error) and error != RESUMED:
        text += f"; its error before: {error}"
    return text


def paused_by_store(error: str | None) -> bool:
    """Whether a paused job's stored ``error`` says its failing store paused it."""
    return error is not None and error.startswith(STORE_PAUSED)


class JobStatus(enum.StrEnum):
    """Where a job is in its life. The values are what the store and the CLI show."""

    QUEUED = "queued"
    RUNNING = "running"
    PAUSING = "pausing"
    PAUSED = "paused"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"
    COMPLETED = "completed"
    COMPLETED_WITH_ERRORS = "completed_with_errors"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    TIMED_OUT = "timed_out"
    SKIPPED = "skipped"

    @property
    def is_active(self) -> bool:
        """True while some process is (or should be) working on the job."""
        return self in _ACTIVE

    @property
    def is_final(self) -> bool:
        """True when the job will never run again by itself or on resume."""
        return self in (JobStatus.COMPLETED, JobStatus.CANCELLED)

    @property
    def is_ended(self) -> bool:
        """True when the job's run is over and nothing is kept for a continuation: the
        statuses after which ``Job.cleanup`` has run."""
        return self in _ENDED

    @property
    def is_resting(self) -> bool:
        """True when nothing runs and nothing will until somebody acts."""
        return not self.is_active

    @property
    def can_resume(self) -> bool:
        """True when ``resume`` is allowed (paused, interrupted, failed, with errors)."""
        return JobStatus.QUEUED in TRANSITIONS[self]


_ACTIVE = frozenset({JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.PAUSING, JobStatus.CANCELLING})

_ENDED = frozenset(
    {
        JobStatus.COMPLETED,
        JobStatus.COMPLETED_WITH_ERRORS,
        JobStatus.FAILED,
        JobStatus.CANCELLED,
        JobStatus.TIMED_OUT,
        JobStatus.SKIPPED,
    }
)

S = JobStatus
#: Every allowed status change. Resuming a failed job or one completed with errors retries
#: what did not complete; completed and cancelled are final.
TRANSITIONS: Mapping[JobStatus, frozenset[JobStatus]] = MappingProxyType(
    {
        # (cancelling: a queued job's cancel cleans up before it is cancelled)
        S.QUEUED: frozenset(
            {S.RUNNING, S.PAUSED, S.CANCELLING, S.CANCELLED, S.INTERRUPTED, S.SKIPPED}
        ),
        S.RUNNING: frozenset(
            {
                S.PAUSING,
                S.CANCELLING,
                S.COMPLETED,
                S.COMPLETED_WITH_ERRORS,
                S.FAILED,
                S.INTERRUPTED,
                S.PAUSED,
                S.CANCELLED,
                S.TIMED_OUT,
                S.QUEUED,  # retried after a transient failure
            }
        ),
        S.PAUSING: frozenset(
            {
                S.PAUSED,
                S.CANCELLING,
                S.COMPLETED,
                S.COMPLETED_WITH_ERRORS,
                S.FAILED,
                S.INTERRUPTED,
                S.TIMED_OUT,
            }
        ),
        # A job may finish its last task before a cancel reaches it.
        S.CANCELLING: frozenset(
            {S.CANCELLED, S.COMPLETED, S.COMPLETED_WITH_ERRORS, S.FAILED, S.INTERRUPTED}
        ),
        S.PAUSED: frozenset({S.QUEUED, S.CANCELLED}),
        S.INTERRUPTED: frozenset({S.QUEUED, S.CANCELLED}),
        S.FAILED: frozenset({S.QUEUED, S.CANCELLED}),
        S.COMPLETED_WITH_ERRORS: frozenset({S.QUEUED}),
        S.TIMED_OUT: frozenset({S.QUEUED, S.CANCELLED}),
        S.SKIPPED: frozenset({S.QUEUED, S.CANCELLED}),
        S.COMPLETED: frozenset(),
        S.CANCELLED: frozenset(),
    }
)
del S

_VERBS = {
    JobStatus.QUEUED: "resume",
    JobStatus.PAUSING: "pause",
    JobStatus.PAUSED: "pause",
    JobStatus.CANCELLING: "cancel",
    JobStatus.CANCELLED: "cancel",
}


def check_transition(job_id: str, current: JobStatus, new: JobStatus) -> None:
    """Raise `InvalidTransitionError` unless ``current -> new`` is allowed."""
    if new not in TRANSITIONS[current]:
        verb = _VERBS.get(new, f"move to {new.value}")
        raise InvalidTransitionError(f"cannot {verb} job {job_id}: it is {current.value}")


def dependency_state(
    after: Iterable[str], statuses: Mapping[str, JobStatus]
) -> tuple[bool, str | None]:
    """(still blocked, first failed prerequisite described) for a queued job whose
    prerequisites are ``after``, given their ``statuses`` (a missing one no longer exists).
    The scheduler and the stores' claim of the next queued job share this rule."""
    blocked = False
    for dep in after:
        status = statuses.get(dep)
        if status is None:
            return False, f"{dep} no longer exists"
        if status in _DEP_FAILED:
            return False, f"{dep} is {status.value}"
        if status not in (JobStatus.COMPLETED, JobStatus.COMPLETED_WITH_ERRORS):
            blocked = True
    return blocked, None


_DEP_FAILED = frozenset(
    {JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.SKIPPED, JobStatus.TIMED_OUT}
)
