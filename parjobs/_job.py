"""Jobs: typed, serializable specs registered by name and version.

A job is a plain dataclass whose fields are JSON data (the *spec*: what to do) plus an async
``run(ctx)`` (how to orchestrate it). Specs are stored as JSON and validated against the field
types when they are loaded back, because a store file is untrusted input.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import types
import typing
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar, dataclass_transform

from ._exceptions import JobLoadError, JobSpecError
from ._task import RetryPolicy

if TYPE_CHECKING:
    import importlib.metadata

    from ._context import JobContext

JobT = TypeVar("JobT", bound="type[Job]")


@dataclass_transform(kw_only_default=True)
class Job:
    """Base class of all jobs. Subclass it, declare the spec as annotated fields, register it
    with `job_type`, and implement `run`.

    Class attributes a job type may set: ``queue`` (the manager queue it runs in by default),
    ``priority`` (default priority), ``retry`` (a `RetryPolicy` for the whole job) and
    ``timeout`` (seconds per run).
    """

    job_type_name: ClassVar[str] = ""
    job_type_version: ClassVar[int] = 0
    queue: ClassVar[str] = "default"
    priority: ClassVar[int] = 0
    #: Retry the whole job after a transient failure of ``run`` (None: never).
    retry: ClassVar[RetryPolicy | None] = None
    #: Seconds a run may take before the job ends ``timed_out`` (None: unlimited).
    timeout: ClassVar[float | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__dataclass_fields__" not in cls.__dict__:
            dataclasses.dataclass(kw_only=True)(cls)

    async def run(self, ctx: JobContext) -> Any:
        """Do the work: fan out tasks through ``ctx.task_dispatcher()`` and return a JSON-able
        result. Called again on resume; checkpointed tasks are skipped by the dispatcher."""
        raise NotImplementedError

    def result_json(self, result: Any) -> str | None:
        """The JSON text of ``result`` (what `run` returned) exactly as ``json.dumps(result)``
        writes it, or None (the default): the runner then encodes it. For a job whose result
        is big and has a cheaper encoding than the generic encoder's (``duplicates``)."""
        return None

    async def cleanup(self, ctx: JobContext, *, cancelled: bool) -> None:
        """Called once when the job ends for good (completed, failed or cancelled), also when
        it is cancelled while not running. Remove temporary state here (e.g. partial files).
        Not called on pause: what is kept there is what resume continues from."""

    def validate(self) -> None:
        """Check values beyond their types; raise `JobSpecError` naming the problem. Called
        once on submit, in a worker thread (it may block), and again before every run but the
        one that follows a submit in its process (the stored spec may have been edited)."""

    # -- serialization -------------------------------------------------------------------

    def to_spec(self) -> dict[str, Any]:
        """The spec as plain JSON data."""
        return {f.name: _to_json(getattr(self, f.name)) for f in _spec_fields(type(self))}

    @classmethod
    def upgrade_spec(cls, spec: dict[str, Any], from_version: int) -> dict[str, Any]:
        """Turn a spec stored by an older version of this job type into the current shape.
        The default accepts it unchanged (new fields need defaults)."""
        return spec

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any], *, validate: bool = True) -> Job:
        """Build a job from plain data, checking every field's type and (unless ``validate``
        is false, as for cleaning up after a job that no longer validates) its values;
        raise `JobSpecError` on any mismatch."""
        if not isinstance(spec, Mapping):
            raise JobSpecError(f"{cls.job_type_name}: spec must be an object, got {_tname(spec)}")
        hints = spec_hints(cls)
        fields = {f.name: f for f in _spec_fields(cls)}
        unknown = sorted(set(spec) - set(fields))
        if unknown:
            raise JobSpecError(f"{cls.job_type_name}: unknown field(s) {', '.join(unknown)}")
        kwargs: dict[str, Any] = {}
        for name, field in fields.items():
            if name in spec:
                kwargs[name] = _coerce(spec[name], hints[name], f"{cls.job_type_name}.{name}")
            elif (
                field.default is dataclasses.MISSING
                and field.default_factory is dataclasses.MISSING
            ):
                raise JobSpecError(f"{cls.job_type_name}: missing field {name!r}")
        job = cls(**kwargs)
        if validate:
            token = _STORED.set(True)
            try:
                job.validate()
            finally:
                _STORED.reset(token)
        return job


#: Set while `Job.from_spec` validates: the spec is a stored one (`validating_stored`).
_STORED: ContextVar[bool] = ContextVar("parjobs_validating_stored", default=False)


def validating_stored() -> bool:
    """Whether the `Job.validate` running now checks a spec built by `Job.from_spec` (a
    stored job loaded to run or resume) rather than a job being submitted (`dump_job`).
    What only a request is checked for (a path that must exist now, a form of path refused
    since the job was stored) is checked on submission only: a job accepted then keeps
    running as it began."""
    return _STORED.get()


_REGISTRY: dict[str, type[Job]] = {}


#: The module each registered job class was defined in, noted before a package re-exporting
#: it gives it a public ``__module__`` (``parjobs.ops.CopyJob``): its annotations are names there.
_HOMES: dict[type, str] = {}
_HINTS: dict[type, dict[str, Any]] = {}


def spec_hints(cls: type) -> dict[str, Any]:
    """The resolved field types of a job class, once per class."""
    hints = _HINTS.get(cls)
    if hints is None:
        home = sys.modules.get(_HOMES.get(cls, cls.__module__))
        hints = typing.get_type_hints(cls, localns=vars(home) if home is not None else None)
        _HINTS[cls] = hints
    return hints


def job_type(name: str, *, version: int = 1) -> Callable[[JobT], JobT]:
    """Register a `Job` subclass under a stable name and spec version.

    The name is what the store records, so renaming the class does not orphan stored jobs.
    Bump ``version`` when the spec changes shape and override `Job.upgrade_spec`.
    """
    if not name or not isinstance(name, str):
        raise ValueError("job type name must be a non-empty string")
    if version < 1:
        raise ValueError("job type version must be >= 1")

    def register(cls: JobT) -> JobT:
        existing = _REGISTRY.get(name)
        if existing is not None and existing.__qualname__ != cls.__qualname__:
            raise ValueError(f"job type {name!r} is already registered by {existing!r}")
        cls.job_type_name = name
        cls.job_type_version = version
        _REGISTRY[name] = cls
        _HOMES[cls] = cls.__module__
        return cls

    return register


_log = logging.getLogger("parjobs")

#: The entry-point group through which packages (parjobs.ops included) declare job types:
#: ``name = "package.module:JobClass"``, the name being the job type's registered name.
ENTRY_POINT_GROUP = "parjobs.job_types"


def _entry_points() -> list[importlib.metadata.EntryPoint]:
    import importlib.metadata  # here, not at the top: it costs start-up (email, csv, zipfile)

    return list(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))


def _load_entry_point(ep: importlib.metadata.EntryPoint) -> None:
    """Import the module behind ``ep`` (its `job_type` decorator registers the class)."""
    try:
        ep.load()
    except Exception as exc:  # a broken plug-in names itself instead of a bare ImportError
        raise JobLoadError(f"job type entry point {ep.name!r} ({ep.value}) failed: {exc}") from exc


def lookup_job_type(name: str) -> type[Job] | None:
    """The class registered as ``name``; if none is yet, the entry points of
    `ENTRY_POINT_GROUP` called ``name`` are loaded first (so a process that only resumes
    jobs need not import their modules). None when nothing provides it."""
    cls = _REGISTRY.get(name)
    if cls is None:
        for ep in _entry_points():
            if ep.name == name:
                _load_entry_point(ep)
        cls = _REGISTRY.get(name)
    return cls


def load_job_types() -> None:
    """Load every job type declared through `ENTRY_POINT_GROUP` (e.g. to list or resume any
    stored job). A plug-in that fails to load is logged and skipped: one broken package must
    not stop jobs of the others; asking for its type by name still raises `JobLoadError`."""
    for ep in _entry_points():
        if ep.name not in _REGISTRY:
            try:
                _load_entry_point(ep)
            except JobLoadError as exc:
                _log.warning("%s", exc)


def registered_job_types() -> dict[str, type[Job]]:
    """Every job type: name -> class (those declared through entry points are loaded)."""
    load_job_types()
    return dict(_REGISTRY)


@dataclasses.dataclass(frozen=True, slots=True)
class DumpedJob:
    """A job checked for storing, as `dump_job` returned it: the object (runtime fields
    kept), its type's registered name and version, and its spec as JSON. `JobManager.submit`
    takes one in place of the job, so a caller that validates before it opens the store (the
    CLI: a wrong spec must not create one) does not have the manager validate again."""

    job: Job
    type_name: str
    version: int
    spec: str


def dump_job(job: Job) -> DumpedJob:
    """``job`` checked for storing: its field types as they will be checked on load, then
    `Job.validate` (the one validation of a submit). Blocking (``validate`` may look at the
    file system): callers run it in a worker thread."""
    cls = type(job)
    if not cls.job_type_name or _REGISTRY.get(cls.job_type_name) is not cls:
        raise JobSpecError(f"{cls.__qualname__} is not registered: decorate it with @job_type")
    # Field types first, as they will be checked on load, so a wrong type is named as such
    # (``sources="/data/x"``, a string where a list belongs, must not reach validate(),
    # which would walk it character by character; ``destination=5`` must not reach path
    # code as an int), and before a job's own to_spec, which may read its fields.
    cls.from_spec(Job.to_spec(job), validate=False)
    job.validate()
    try:
        text = json.dumps(job.to_spec(), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise JobSpecError(f"{cls.job_type_name}: spec is not JSON data: {exc}") from exc
    return DumpedJob(job, cls.job_type_name, cls.job_type_version, text)


def job_class(type_name: str, version: int) -> type[Job]:
    """The class that loads a job stored as ``type_name`` by ``version`` of its type (its
    entry point loaded if it is not yet: `lookup_job_type`); `JobLoadError` saying why when
    this process has none (an unknown type, a plug-in that fails to load, a newer version).
    Blocking (an entry point's import): callers on trio run it in a worker thread."""
    cls = lookup_job_type(type_name)
    if cls is None:
        raise JobLoadError(
            f"unknown job type {type_name!r} (is the module defining it imported, or declared "
            f"in the {ENTRY_POINT_GROUP!r} entry-point group?)"
        )
    if version > cls.job_type_version:
        raise JobLoadError(
            f"job type {type_name!r} was stored by version {version}, "
            f"newer than this code's version {cls.job_type_version}; upgrade parjobs"
        )
    return cls


def load_job(type_name: str, version: int, spec_json: str, *, validate: bool = True) -> Job:
    """Rebuild a stored job; raise `JobLoadError` (clear message) when that is impossible."""
    cls = job_class(type_name, version)
    try:
        spec = json.loads(spec_json)
    except (TypeError, ValueError, RecursionError) as exc:
        raise JobLoadError(f"stored spec of {type_name!r} is corrupt JSON: {exc}") from None
    try:
        if version < cls.job_type_version:
            spec = cls.upgrade_spec(spec, version)
        return cls.from_spec(spec, validate=validate)
    except JobSpecError as exc:
        if version < cls.job_type_version:
            how = (
                "its upgrade_spec"
                if cls.upgrade_spec.__func__ is not Job.upgrade_spec.__func__  # type: ignore[attr-defined]
                else "no upgrade_spec (the job type does not define one)"
            )
            raise JobLoadError(
                f"stored spec of {type_name!r} version {version} does not fit this code's "
                f"version {cls.job_type_version} after {how}: {exc}"
            ) from exc
        raise JobLoadError(f"stored spec is invalid: {exc}") from exc
    except RecursionError:
        raise JobLoadError(f"stored spec of {type_name!r} is nested too deeply") from None


def runtime_field(default: Any = None) -> Any:
    """A job attribute that is not part of the stored spec (e.g. an async callback).

    It exists only in the process that submitted the job; a job resumed elsewhere sees the
    default, so the job must behave sensibly without it.
    """
    return dataclasses.field(
        default=default, compare=False, repr=False, metadata={"parjobs_runtime": True}
    )


def _spec_fields(cls: type[Job]) -> list[dataclasses.Field[Any]]:
    return [
        f
        for f in dataclasses.fields(cls)  # type: ignore[arg-type]
        if not f.metadata.get("parjobs_runtime")
    ]


# -- JSON conversion and validation -------------------------------------------------------


def _tname(value: object) -> str:
    return type(value).__name__


def _to_json(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_to_json(v) for v in value]
    if isinstance(value, list):
        return [_to_json(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _to_json(v) for k, v in value.items()}
    return value


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Check ``value`` (parsed JSON) against the annotation ``hint``; convert lists to tuples
    where the field is a tuple. Raise `JobSpecError` naming the field on mismatch."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any or hint is object:
        return value
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            try:
                return _coerce(value, arg, where)
            except JobSpecError:
                continue
        raise JobSpecError(f"{where}: {value!r} does not match {_hint_name(hint)}")
    if hint is type(None):
        if value is None:
            return None
        raise JobSpecError(f"{where}: expected null, got {_tname(value)}")
    if origin is Literal:
        if value in args:
            return value
        choices = ", ".join(repr(a) for a in args)
        raise JobSpecError(f"{where}: {value!r} is not one of {choices}")
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise JobSpecError(f"{where}: expected a boolean, got {_tname(value)}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise JobSpecError(f"{where}: expected an integer, got {_tname(value)}")
    if hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise JobSpecError(f"{where}: expected a number, got {_tname(value)}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise JobSpecError(f"{where}: expected a string, got {_tname(value)}")
    if origin in (list, tuple) or hint in (list, tuple):
        if isinstance(value, str):  # the classic slip: one path where a list belongs
            raise JobSpecError(
                f"{where}: expected a list, got str {value!r} (a list of one is [{value!r}])"
            )
        if not isinstance(value, list | tuple):
            raise JobSpecError(f"{where}: expected a list, got {_tname(value)}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise JobSpecError(f"{where}: expected {len(args)} items, got {len(value)}")
            pairs = enumerate(zip(value, args, strict=True))
            return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in pairs)
        item = args[0] if args else Any
        items = [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if (origin or hint) is tuple else items
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise JobSpecError(f"{where}: expected an object, got {_tname(value)}")
        vt = args[1] if len(args) == 2 else Any
        return {str(k): _coerce(v, vt, f"{where}[{k!r}]") for k, v in value.items()}
    raise JobSpecError(f"{where}: unsupported field type {_hint_name(hint)} (use JSON types)")


def _hint_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint)
