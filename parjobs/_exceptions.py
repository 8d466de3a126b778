"""The parjobs error tree.

```
ParjobsError                      base of everything parjobs raises on purpose
├── JobSpecError (ValueError)     a job spec is invalid (bad field type, bad value)
├── JobLoadError                  a stored job cannot be loaded (unknown type, newer version,
│                                 corrupt JSON); affects that job only
├── StoreError                    the job store cannot be used
│   └── StoreFormatError          the file is not a parjobs store (foreign, corrupt, too new)
├── ClusterError (ConnectionError) the Dask cluster cannot be used (unreachable, no Dask)
├── ManagerClosedError (RuntimeError) a closed or stopped BlockingManager was called
├── JobNotFoundError (KeyError)   no job with that id
├── IdempotencyConflictError      an idempotency key reused for a different job
├── InvalidTransitionError        e.g. resume a completed job, cancel a cancelled one
├── LeaseError                    another live process owns the job
├── JobNotFinishedError           result() asked of a job that rests paused/interrupted
├── JobFailedError                result() of a failed job; __cause__ is the original error
├── JobCancelledError             result() of a cancelled job
├── TaskTimeoutError (TimeoutError) a task ran past its timeout (transient: may be retried)
├── ProcessFailedError            a ProcessTask's program exited with a non-zero status
└── Interrupted                   raised inside a job/task to unwind on request
    ├── PauseRequested            stop now, keep progress, resume later
    └── CancelRequested           stop now, discard what is unfinished
```

`Skip` is not an error: a task raises it to report that it deliberately did nothing. The
errors of the built-in operations (copy, trash, images) are exported by `parjobs.ops`.
"""

from __future__ import annotations

from collections.abc import Sequence


class ParjobsError(Exception):
    """Base class of all errors parjobs raises on purpose."""


class JobSpecError(ParjobsError, ValueError):
    """A job spec is invalid: a field has the wrong type or an unacceptable value."""


class JobLoadError(ParjobsError):
    """A stored job cannot be turned back into a job object.

    Raised for an unknown job type, a stored version newer than this code, or corrupt JSON.
    The manager marks only that job failed and keeps running the others.
    """


class StoreError(ParjobsError):
    """The job store cannot be opened or used."""


class StoreFormatError(StoreError):
    """The store file is not a parjobs store: a foreign SQLite file, corrupt, or too new."""


class ClusterError(ParjobsError, ConnectionError):
    """The manager's Dask cluster cannot be used: no scheduler at the address, Dask is not
    installed, or the cluster lost a task too many times (docs/scale-out.md)."""


class ManagerClosedError(ParjobsError, RuntimeError):
    """The `BlockingManager` is closed, or its loop stopped: it accepts no more calls.

    Not a `StoreError`: the store may be fine; this facade object is what is gone."""


class JobNotFoundError(ParjobsError, KeyError):
    """No job with the given id exists in the store."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else "job not found"


class IdempotencyConflictError(ParjobsError):
    """An idempotency key was reused for a different job (another type, spec or owner):
    the job stored under that key is not the one asked for, so it is not returned."""


class InvalidTransitionError(ParjobsError):
    """The requested status change is not allowed from the job's current status."""


class LeaseError(ParjobsError):
    """Another live process holds the lease on this job, so this process may not run it."""


class JobNotFinishedError(ParjobsError):
    """The job rests without a result (paused or interrupted); resume it first."""


class JobFailedError(ParjobsError):
    """The job failed as a whole; the message and ``__cause__`` say why."""


class JobCancelledError(ParjobsError):
    """The job was cancelled, so it has no result."""


class TaskTimeoutError(ParjobsError, TimeoutError):
    """A task ran longer than its timeout (sync tasks notice it at their next check())."""


class ProcessFailedError(ParjobsError):
    """The program exited with a non-zero status (the message carries the end of stderr)."""

    def __init__(self, argv: Sequence[str], returncode: int, stderr_tail: str) -> None:
        detail = f": {stderr_tail.strip()}" if stderr_tail.strip() else ""
        super().__init__(f"{argv[0]} exited with status {returncode}{detail}")
        self.returncode = returncode


class Interrupted(ParjobsError):
    """Base of the two interruption signals delivered by ``check_interrupt``."""


class PauseRequested(Interrupted):
    """The job is being paused: stop at the next safe point, progress is kept."""


class CancelRequested(Interrupted):
    """The job is being cancelled: stop at the next safe point."""


class Skip(Exception):
    """Raised by a task to report that it deliberately did nothing (e.g. conflict=skip)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
