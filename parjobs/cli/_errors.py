"""Exit codes and the error the commands raise for bad input."""

from __future__ import annotations

from .._exceptions import (
    ClusterError,
    InvalidTransitionError,
    JobLoadError,
    JobNotFoundError,
    JobSpecError,
    LeaseError,
    StoreError,
)
from .._util import exception_leaves

#: Every item done (or nothing to do).
EXIT_OK = 0
#: The job completed with failed items, or failed as a whole.
EXIT_ERRORS = 1
#: Bad usage or input: unknown option, missing source, unknown job id, unusable store.
EXIT_USAGE = 2
#: The job is paused or interrupted: ``parjobs resume ID`` continues it.
EXIT_PAUSED = 3
#: The job was cancelled.
EXIT_CANCELLED = 4
#: Interrupted before any job was running (Ctrl-C in a command that runs no job).
EXIT_SIGINT = 130


class CliError(Exception):
    """Bad input found by the CLI itself; reported as one line, exit `EXIT_USAGE`."""


#: Errors of the core that mean "the user asked for something impossible".
USER_ERRORS: tuple[type[Exception], ...] = (
    CliError,
    JobSpecError,
    JobNotFoundError,
    InvalidTransitionError,
    LeaseError,
    JobLoadError,
    StoreError,
    ClusterError,
)


def user_error(exc: BaseException) -> BaseException | None:
    """The first user-facing error in ``exc`` (which may be a group), if any."""
    return next((e for e in exception_leaves(exc) if isinstance(e, USER_ERRORS)), None)
