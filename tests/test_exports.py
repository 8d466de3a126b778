"""The public surface of `parjobs` and its named modules, pinned against written lists: a
name added or removed must be added or removed here too, on purpose."""

from __future__ import annotations

import enum
import importlib
import inspect
import pkgutil
import types

import pytest

import parjobs
import parjobs.blocking
import parjobs.process
import parjobs.testing

TOP = {
    # running jobs
    "open_manager",
    "ManagerConfig",
    "JobManager",
    "JobHandle",
    "OwnerView",
    "ManagerStatistics",
    "BlockingManager",
    "JobInfo",
    "JobEvent",
    "EventKind",
    "EventSubscription",
    # writing jobs
    "Job",
    "job_type",
    "runtime_field",
    "registered_job_types",
    "JobContext",
    "Task",
    "AsyncTask",
    "FunctionTask",
    "TaskContext",
    "TaskDispatcher",
    "TaskHandle",
    "Outcome",
    "OutcomeStatus",
    "RetryPolicy",
    "is_transient",
    "RUN_ALONE",
    # state and records
    "JobStatus",
    "TRANSITIONS",
    "Progress",
    "ItemError",
    "ItemRecord",
    "Written",
    # errors and signals
    "ParjobsError",
    "JobSpecError",
    "JobLoadError",
    "StoreError",
    "StoreFormatError",
    "ClusterError",
    "ManagerClosedError",
    "JobNotFoundError",
    "IdempotencyConflictError",
    "InvalidTransitionError",
    "LeaseError",
    "JobNotFinishedError",
    "JobFailedError",
    "JobCancelledError",
    "TaskTimeoutError",
    "ProcessFailedError",
    "Interrupted",
    "PauseRequested",
    "CancelRequested",
    "Skip",
}

MODULES = {
    "parjobs.blocking": {"BlockingManager", "PROGRESS_QUEUE_SIZE", "run_trio_guest"},
    "parjobs.process": {"Chunk", "Lost", "OutputLine", "ProcessFailedError", "ProcessTask"},
    "parjobs.testing": {"mock_clock", "read", "run_to_end", "snapshot", "write"},
}


def test_top_level_all_is_the_written_list() -> None:
    assert set(parjobs.__all__) == TOP
    assert len(parjobs.__all__) == len(TOP)  # no name listed twice


def test_every_public_name_is_in_all_and_importable() -> None:
    """Most names load on first use (`parjobs.__getattr__`): ``dir`` lists them all, and
    once each is loaded the namespace holds exactly those."""
    listed = {name for name in dir(parjobs) if not name.startswith("_")}
    assert listed - {"blocking", "cli", "ops", "process", "server", "testing"} == TOP
    for name in TOP:
        assert getattr(parjobs, name) is not None
    public = {
        name
        for name, value in vars(parjobs).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public == TOP
    with pytest.raises(AttributeError, match="no attribute 'open_managr'"):
        parjobs.open_managr  # noqa: B018


@pytest.mark.parametrize("module", sorted(MODULES))
def test_named_modules_all_is_the_written_list(module: str) -> None:
    mod = importlib.import_module(module)
    assert set(mod.__all__) == MODULES[module]
    for name in mod.__all__:
        assert getattr(mod, name) is not None


def test_power_features_are_not_at_the_top() -> None:
    for name in ("ProcessTask", "Chunk", "Lost", "run_trio_guest", "DEFAULT_QUEUES"):
        assert not hasattr(parjobs, name), name
    for name in ("default_lanes", "ProgressTracker"):
        assert not hasattr(parjobs, name), name


def test_public_classes_and_functions_show_their_public_module() -> None:
    """Reprs and tracebacks name ``parjobs.JobManager``, not ``parjobs._manager.JobManager``
    (except `Job`, whose module resolves the string annotations of job classes)."""
    for name in TOP - {"Job"}:
        obj = getattr(parjobs, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert obj.__module__ == "parjobs", name
    assert repr(parjobs.JobStatus.QUEUED).startswith("<JobStatus.QUEUED")
    assert parjobs.process.ProcessTask.__module__ == "parjobs.process"
    assert parjobs.process.ProcessFailedError is parjobs.ProcessFailedError


def test_immutable_tables() -> None:
    with pytest.raises(TypeError):
        parjobs.TRANSITIONS[parjobs.JobStatus.COMPLETED] = frozenset()  # type: ignore[index]
    assert all(isinstance(v, frozenset) for v in parjobs.TRANSITIONS.values())
    from parjobs._config import DEFAULT_QUEUES

    with pytest.raises(TypeError):
        DEFAULT_QUEUES["x"] = 1  # type: ignore[index]


def test_ops_names_show_parjobs_ops() -> None:
    """The job classes live in private modules (``parjobs.ops._copy``) but show as
    ``parjobs.ops.CopyJob``, and their specs still load (annotations resolve at home)."""
    import parjobs.ops as ops

    for name in ops.__all__:
        obj = getattr(ops, name)
        if inspect.isclass(obj):
            assert obj.__module__ == "parjobs.ops", name
    job = ops.CopyJob(sources=["/tmp/a"], destination="/tmp/b")
    assert ops.CopyJob.from_spec(job.to_spec(), validate=False) == job
    assert repr(ops.CopyError) == "<class 'parjobs.ops.CopyError'>"


#: What users receive but never build: their constructors take the package's private parts.
NO_PUBLIC_CONSTRUCTOR = {
    "JobManager",  # open_manager
    "JobHandle",  # JobManager.submit / handle
    "OwnerView",  # JobManager.for_owner
    "EventSubscription",  # JobManager.events
    "JobContext",  # handed to Job.run
    "TaskDispatcher",  # JobContext.task_dispatcher
    "TaskHandle",  # TaskDispatcher.dispatch
    "TaskContext",  # handed to Task.run
}

#: Classes to use, not to extend (records, the managers, what the package hands out).
#: `TaskContext` is not among them: the cluster lane's remote context extends it.
FINAL = (NO_PUBLIC_CONSTRUCTOR - {"TaskContext"}) | {
    "BlockingManager",
    "ManagerConfig",
    "ManagerStatistics",
    "JobInfo",
    "JobEvent",
    "Progress",
    "ItemError",
    "ItemRecord",
    "Written",
    "Outcome",
    "RetryPolicy",
}

#: Classes users extend: they must stay open.
EXTENSIBLE = {"Job", "Task", "AsyncTask", "FunctionTask", "ParjobsError", "Skip"}


@pytest.mark.parametrize("name", sorted(FINAL))
def test_classes_users_must_not_extend_are_final(name: str) -> None:
    assert getattr(getattr(parjobs, name), "__final__", False) is True, name


@pytest.mark.parametrize("name", sorted(EXTENSIBLE))
def test_classes_users_extend_are_not_final(name: str) -> None:
    assert not getattr(getattr(parjobs, name), "__final__", False), name


@pytest.mark.parametrize("name", sorted(NO_PUBLIC_CONSTRUCTOR))
def test_classes_users_receive_refuse_public_construction(name: str) -> None:
    cls = getattr(parjobs, name)
    with pytest.raises(TypeError, match=rf"^parjobs\.{name} has no public constructor"):
        cls()
    with pytest.raises(TypeError, match="no public constructor"):
        cls("any", "arguments", at="all")


def test_private_create_builds_what_the_class_refuses() -> None:
    """The package's own way in: ``_create`` runs the real constructor."""
    from parjobs._task import Interrupter

    tc = parjobs.TaskContext._create(7, "label", Interrupter(), stage="files")
    assert (tc.index, tc.label, tc.stage) == (7, "label", "files")
    assert type(tc) is parjobs.TaskContext


def test_every_public_class_is_classified() -> None:
    """A new public class must be put in one of the lists above (or be an error, an enum
    or a table): deciding whether users may build and extend it is part of adding it."""
    classified = FINAL | NO_PUBLIC_CONSTRUCTOR | EXTENSIBLE
    for name in TOP:
        obj = getattr(parjobs, name)
        if not inspect.isclass(obj) or issubclass(obj, BaseException | enum.Enum):
            continue
        assert name in classified, name


def test_every_library_error_is_in_the_one_tree() -> None:
    """Every exception class the core and the operations define is a `ParjobsError` (#13:
    one tree), except `Skip`, a task's signal that it did nothing on purpose. The CLI's and
    the server's own errors (`CliError`, `ApiError`) never leave them, and are not walked."""
    import parjobs.ops

    outside = set()
    for package in (parjobs, parjobs.ops):
        for info in pkgutil.iter_modules(package.__path__, package.__name__ + "."):
            if info.name.rpartition(".")[2] in ("cli", "server", "ops", "__main__"):
                continue
            module = importlib.import_module(info.name)
            for value in vars(module).values():
                if (
                    inspect.isclass(value)
                    and issubclass(value, BaseException)
                    and value.__module__.startswith("parjobs")
                    and not issubclass(value, parjobs.ParjobsError)
                ):
                    outside.add(value.__qualname__)
    assert outside == {"Skip"}
