"""parjobs: file operations as parallel, resumable jobs on trio.

A job is a serializable spec plus an async ``run(ctx)`` that fans out small tasks through
``ctx.task_dispatcher()``; completions are checkpointed in an embedded SQLite store, so a job
interrupted by pause, Ctrl-C, a crash or ``kill -9`` resumes without redoing finished work.

The everyday names are here. Power features live in named modules: `parjobs.blocking`
(`BlockingManager` for threads and GUIs, `run_trio_guest` for asyncio), `parjobs.process`
(`ProcessTask`: external programs as tasks), `parjobs.testing` (helpers for testing job
types) and `parjobs.ops` (the built-in file operations).
"""

import importlib as _importlib
import typing as _typing

from ._exceptions import CancelRequested as CancelRequested
from ._exceptions import ClusterError as ClusterError
from ._exceptions import IdempotencyConflictError as IdempotencyConflictError
from ._exceptions import Interrupted as Interrupted
from ._exceptions import InvalidTransitionError as InvalidTransitionError
from ._exceptions import JobCancelledError as JobCancelledError
from ._exceptions import JobFailedError as JobFailedError
from ._exceptions import JobLoadError as JobLoadError
from ._exceptions import JobNotFinishedError as JobNotFinishedError
from ._exceptions import JobNotFoundError as JobNotFoundError
from ._exceptions import JobSpecError as JobSpecError
from ._exceptions import LeaseError as LeaseError
from ._exceptions import ManagerClosedError as ManagerClosedError
from ._exceptions import ParjobsError as ParjobsError
from ._exceptions import PauseRequested as PauseRequested
from ._exceptions import ProcessFailedError as ProcessFailedError
from ._exceptions import Skip as Skip
from ._exceptions import StoreError as StoreError
from ._exceptions import StoreFormatError as StoreFormatError
from ._exceptions import TaskTimeoutError as TaskTimeoutError
from ._util import fixup_module_metadata as _fixup

if _typing.TYPE_CHECKING:
    from ._config import ManagerConfig as ManagerConfig
    from ._context import JobContext as JobContext
    from ._dispatch import TaskDispatcher as TaskDispatcher
    from ._dispatch import TaskHandle as TaskHandle
    from ._events import EventKind as EventKind
    from ._events import EventSubscription as EventSubscription
    from ._events import JobEvent as JobEvent
    from ._facade import BlockingManager as BlockingManager
    from ._functask import FunctionTask as FunctionTask
    from ._items import ItemRecord as ItemRecord
    from ._items import Written as Written
    from ._job import Job as Job
    from ._job import job_type as job_type
    from ._job import registered_job_types as registered_job_types
    from ._job import runtime_field as runtime_field
    from ._manager import JobHandle as JobHandle
    from ._manager import JobManager as JobManager
    from ._manager import OwnerView as OwnerView
    from ._manager import open_manager as open_manager
    from ._progress import ItemError as ItemError
    from ._progress import Progress as Progress
    from ._records import JobInfo as JobInfo
    from ._statistics import ManagerStatistics as ManagerStatistics
    from ._status import TRANSITIONS as TRANSITIONS
    from ._status import JobStatus as JobStatus
    from ._task import RUN_ALONE as RUN_ALONE
    from ._task import AsyncTask as AsyncTask
    from ._task import Outcome as Outcome
    from ._task import OutcomeStatus as OutcomeStatus
    from ._task import RetryPolicy as RetryPolicy
    from ._task import Task as Task
    from ._task import TaskContext as TaskContext
    from ._task import is_transient as is_transient

#: Where each lazily loaded name lives: ``import parjobs`` (which every command of the CLI
#: runs first) loads only the error tree; the manager, the store and the pool load on first
#: use (about 30 ms of start-up that ``parjobs --help`` does not need).
_LAZY = {
    "AsyncTask": "_task",
    "BlockingManager": "_facade",
    "EventKind": "_events",
    "EventSubscription": "_events",
    "FunctionTask": "_functask",
    "ItemError": "_progress",
    "ItemRecord": "_items",
    "Job": "_job",
    "JobContext": "_context",
    "JobEvent": "_events",
    "JobHandle": "_manager",
    "JobInfo": "_records",
    "JobManager": "_manager",
    "JobStatus": "_status",
    "ManagerConfig": "_config",
    "ManagerStatistics": "_statistics",
    "Outcome": "_task",
    "OutcomeStatus": "_task",
    "OwnerView": "_manager",
    "Progress": "_progress",
    "RUN_ALONE": "_task",
    "RetryPolicy": "_task",
    "TRANSITIONS": "_status",
    "Task": "_task",
    "TaskContext": "_task",
    "TaskDispatcher": "_dispatch",
    "TaskHandle": "_dispatch",
    "Written": "_items",
    "is_transient": "_task",
    "job_type": "_job",
    "open_manager": "_manager",
    "registered_job_types": "_job",
    "runtime_field": "_job",
}

__version__ = "0.1.0"

__all__ = [
    "RUN_ALONE",
    "TRANSITIONS",
    "AsyncTask",
    "BlockingManager",
    "CancelRequested",
    "ClusterError",
    "EventKind",
    "EventSubscription",
    "FunctionTask",
    "IdempotencyConflictError",
    "Interrupted",
    "InvalidTransitionError",
    "ItemError",
    "ItemRecord",
    "Job",
    "JobCancelledError",
    "JobContext",
    "JobEvent",
    "JobFailedError",
    "JobHandle",
    "JobInfo",
    "JobLoadError",
    "JobManager",
    "JobNotFinishedError",
    "JobNotFoundError",
    "JobSpecError",
    "JobStatus",
    "LeaseError",
    "ManagerClosedError",
    "ManagerConfig",
    "ManagerStatistics",
    "Outcome",
    "OutcomeStatus",
    "OwnerView",
    "ParjobsError",
    "PauseRequested",
    "ProcessFailedError",
    "Progress",
    "RetryPolicy",
    "Skip",
    "StoreError",
    "StoreFormatError",
    "Task",
    "TaskContext",
    "TaskDispatcher",
    "TaskHandle",
    "TaskTimeoutError",
    "Written",
    "is_transient",
    "job_type",
    "open_manager",
    "registered_job_types",
    "runtime_field",
]


def __getattr__(name: str) -> _typing.Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(_importlib.import_module(f"{__name__}.{module}"), name)
    # Reprs and tracebacks show parjobs.JobManager. `Job` keeps its private module:
    # `typing.get_type_hints` on a job class resolves the base class's string annotations in
    # the namespace of ``Job.__module__``.
    if name != "Job":
        _fixup(__name__, [name], {name: value})
    globals()[name] = value  # once: later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


_fixup(__name__, [n for n in __all__ if n not in _LAZY], globals())
