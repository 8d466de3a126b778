"""parjobs: file operations as parallel, resumable jobs on trio.

A job is a serializable spec plus an async ``run(ctx)`` that fans out small tasks through
``ctx.task_dispatcher()``; completions are checkpointed in an embedded SQLite store, so a job
interrupted by pause, Ctrl-C, a crash or ``kill -9`` resumes without redoing finished work.
"""

from ._context import JobContext as JobContext
from ._dispatch import TaskDispatcher as TaskDispatcher
from ._dispatch import TaskHandle as TaskHandle
from ._exceptions import CancelRequested as CancelRequested
from ._exceptions import Interrupted as Interrupted
from ._exceptions import InvalidTransitionError as InvalidTransitionError
from ._exceptions import JobCancelledError as JobCancelledError
from ._exceptions import JobFailedError as JobFailedError
from ._exceptions import JobLoadError as JobLoadError
from ._exceptions import JobNotFinishedError as JobNotFinishedError
from ._exceptions import JobNotFoundError as JobNotFoundError
from ._exceptions import JobSpecError as JobSpecError
from ._exceptions import LeaseError as LeaseError
from ._exceptions import ParjobsError as ParjobsError
from ._exceptions import PauseRequested as PauseRequested
from ._exceptions import Skip as Skip
from ._exceptions import StoreError as StoreError
from ._exceptions import StoreFormatError as StoreFormatError
from ._exceptions import TaskTimeoutError as TaskTimeoutError
from ._facade import BlockingManager as BlockingManager
from ._facade import ManagerClosedError as ManagerClosedError
from ._guest import run_trio_guest as run_trio_guest
from ._job import Job as Job
from ._job import job_type as job_type
from ._job import registered_job_types as registered_job_types
from ._job import runtime_field as runtime_field
from ._manager import DEFAULT_QUEUES as DEFAULT_QUEUES
from ._manager import JobHandle as JobHandle
from ._manager import JobManager as JobManager
from ._manager import ManagerStatistics as ManagerStatistics
from ._manager import default_lanes as default_lanes
from ._manager import open_manager as open_manager
from ._process import Chunk as Chunk
from ._process import Lost as Lost
from ._process import ProcessFailedError as ProcessFailedError
from ._process import ProcessTask as ProcessTask
from ._progress import ItemError as ItemError
from ._progress import Progress as Progress
from ._progress import ProgressTracker as ProgressTracker
from ._status import TRANSITIONS as TRANSITIONS
from ._status import JobStatus as JobStatus
from ._store import JobInfo as JobInfo
from ._task import RUN_ALONE as RUN_ALONE
from ._task import AsyncTask as AsyncTask
from ._task import FunctionTask as FunctionTask
from ._task import Outcome as Outcome
from ._task import OutcomeStatus as OutcomeStatus
from ._task import RetryPolicy as RetryPolicy
from ._task import Task as Task
from ._task import TaskContext as TaskContext
from ._task import is_transient as is_transient

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_QUEUES",
    "RUN_ALONE",
    "TRANSITIONS",
    "AsyncTask",
    "BlockingManager",
    "CancelRequested",
    "Chunk",
    "FunctionTask",
    "Interrupted",
    "InvalidTransitionError",
    "ItemError",
    "Job",
    "JobCancelledError",
    "JobContext",
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
    "Lost",
    "ManagerClosedError",
    "ManagerStatistics",
    "Outcome",
    "OutcomeStatus",
    "ParjobsError",
    "PauseRequested",
    "ProcessFailedError",
    "ProcessTask",
    "Progress",
    "ProgressTracker",
    "RetryPolicy",
    "Skip",
    "StoreError",
    "StoreFormatError",
    "Task",
    "TaskContext",
    "TaskDispatcher",
    "TaskHandle",
    "TaskTimeoutError",
    "default_lanes",
    "is_transient",
    "job_type",
    "open_manager",
    "registered_job_types",
    "run_trio_guest",
    "runtime_field",
]
