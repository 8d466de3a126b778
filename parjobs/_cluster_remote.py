"""The worker side of the cluster lane (`parjobs._cluster`): what a Dask worker runs.

A *group* is one Dask task: several parjobs tasks run one after another (groups of the same
class through `Task.run_group`, the way a worker thread runs them here), their outcomes
pickled back in one answer. Everything crosses the wire as bytes made by `dumps` / `loads`,
which rewrite paths by the manager's path map (hosts that mount the shared storage at
different places), so neither Dask's serializer nor the tasks need to know about it.

Only this module's functions run on workers; it imports no trio-facing code beyond the
capture of an outcome (`parjobs._executor`), which the workers share with local runs.
"""

from __future__ import annotations

import contextlib
import contextvars
import io
import json
import pickle
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

from ._executor import _run_group, _run_one
from ._progress import ItemError
from ._stage import Stage
from ._task import Interrupter, Outcome, OutcomeStatus, Task, TaskContext
from ._workqueue import WorkItem, groupable

#: Worker events (`Worker.log_event`) of one group come at most this often (seconds).
EVENT_INTERVAL = 0.2

PathPairs = Sequence[tuple[str, str]]


# ---------------------------------------------------------------------------------------------
# the path map


def check_path_map(pairs: object) -> tuple[tuple[str, str], ...]:
    """Validate a path map: pairs of absolute directories ``(here, there)``, meaning "what
    this manager sees at ``here``, workers see at ``there``". Raises `ValueError` saying why."""
    if isinstance(pairs, Mapping):
        pairs = list(pairs.items())
    if not isinstance(pairs, list | tuple):
        raise TypeError(f"a path map is a mapping or a list of pairs, got {type(pairs).__name__}")
    out: list[tuple[str, str]] = []
    for pair in pairs:
        if not (isinstance(pair, list | tuple) and len(pair) == 2):
            raise ValueError(f"a path map entry is a pair of directories, got {pair!r}")
        here, there = pair
        for side in (here, there):
            if not isinstance(side, str) or not side.startswith("/") or "\0" in side:
                raise ValueError(f"path map directories must be absolute paths, got {side!r}")
        out.append((here.rstrip("/") or "/", there.rstrip("/") or "/"))
    if len({here for here, _ in out}) != len(out):
        raise ValueError("a path map names the same directory twice")
    return tuple(out)


def parse_path_map(text: str) -> tuple[tuple[str, str], ...]:
    """``"/mnt/nas=/data/nas,/srv/a=/a"`` as a path map (the CLI's and the environment's form)."""
    pairs = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        here, sep, there = part.partition("=")
        if not sep:
            raise ValueError(f"a path map entry is HERE=THERE, got {part!r}")
        pairs.append((here, there))
    return check_path_map(pairs)


def reverse(pairs: PathPairs) -> tuple[tuple[str, str], ...]:
    return tuple((there, here) for here, there in pairs)


def _mapper(pairs: PathPairs) -> Callable[[object], object | None]:
    """A function giving the mapped str or bytes for a path under one of ``pairs``' first
    directories (on a component boundary), else None. Longest prefix wins."""
    ordered = sorted(pairs, key=lambda pair: -len(pair[0]))
    text = [(a, b, a if a == "/" else a + "/") for a, b in ordered]
    raw = [(a.encode(), b.encode(), (a if a == "/" else a + "/").encode()) for a, b in ordered]

    def mapped(obj: object) -> object | None:
        if isinstance(obj, str):
            for a, b, under in text:
                if obj == a or obj.startswith(under):
                    return b + obj[len(a) :] if a != "/" else b.rstrip("/") + obj
        elif isinstance(obj, bytes):
            for ba, bb, bunder in raw:
                if obj == ba or obj.startswith(bunder):
                    return bb + obj[len(ba) :] if ba != b"/" else bb.rstrip(b"/") + obj
        return None

    return mapped


#: The path map of the `dumps` under way in this thread, for `mapped_below`.
_dumping: contextvars.ContextVar[PathPairs] = contextvars.ContextVar("parjobs_map", default=())


def mapped_below(root: bytes) -> dict[bytes, bytes]:
    """For an object being pickled by `dumps` that reaches paths from ``root`` by relative
    names (a destination tree's directory fds): each map directory strictly below ``root``
    (on a component boundary), as {its path relative to ``root``: its path}. The path is
    rewritten by the pickling like any other, so the worker learns where that directory is
    for it: a relative name would otherwise bypass the map."""
    return below(root, _dumping.get())


def below(root: bytes, pairs: PathPairs) -> dict[bytes, bytes]:
    """Each of ``pairs``' first directories strictly below ``root`` (on a component
    boundary), as {its path relative to ``root``: its path}."""
    out = {}
    under = root.rstrip(b"/") + b"/"
    for here, _ in pairs:
        raw = here.encode("utf-8", "surrogateescape")
        if raw.startswith(under):
            out[raw[len(under) :]] = raw
    return out


def dumps(obj: object, pairs: PathPairs = ()) -> bytes:
    """Pickle ``obj``, rewriting every str or bytes under a mapped directory (``pairs``)."""
    buf = io.BytesIO()
    pickler = pickle.Pickler(buf, protocol=pickle.HIGHEST_PROTOCOL)
    if pairs:
        mapped = _mapper(pairs)

        def persistent_id(o: object) -> object | None:
            new = mapped(o)
            return None if new is None else ("path", new)

        pickler.persistent_id = persistent_id  # type: ignore[method-assign]
    token = _dumping.set(pairs)
    try:
        pickler.dump(obj)
    finally:
        _dumping.reset(token)
    return buf.getvalue()


class _Unpickler(pickle.Unpickler):
    def persistent_load(self, pid: Any) -> Any:
        if isinstance(pid, tuple) and len(pid) == 2 and pid[0] == "path":
            return pid[1]
        raise pickle.UnpicklingError(f"unknown persistent id {pid!r}")


def loads(data: bytes) -> Any:
    """Unpickle what `dumps` made (paths are mapped already)."""
    return _Unpickler(io.BytesIO(data)).load()


# ---------------------------------------------------------------------------------------------
# interrupts: one flag per job run and worker process, set by the manager's broadcast

_flags: dict[str, Interrupter] = {}
_flags_lock = threading.Lock()


def interrupter(tag: str) -> Interrupter:
    """The interrupter of job run ``tag`` in this worker process."""
    with _flags_lock:
        flag = _flags.get(tag)
        if flag is None:
            flag = _flags[tag] = Interrupter()
        return flag


def request(tag: str, reason: str | None) -> None:
    """Run on every worker by the manager (``Client.run``): pause or cancel job run ``tag``
    (its running tasks stop at their next ``check()``); None forgets the run."""
    if reason is None:
        with _flags_lock:
            _flags.pop(tag, None)
    else:
        interrupter(tag).request(reason)


# ---------------------------------------------------------------------------------------------
# running a group


class _Reporter:
    """Sends a group's progress to the manager as worker events: how many of its tasks have
    started, and the bytes of those that moved, at most every `EVENT_INTERVAL`."""

    def __init__(self, topic: str, key: str, log: Callable[[str, Any], None]) -> None:
        self.topic, self.key, self._log = topic, key, log
        self.started = 0
        self.contexts: list[TaskContext] = []
        self._sent: dict[int, int] = {}
        self._last = 0.0

    def start(self, count: int) -> None:
        first = self.started == 0
        self.started += count
        self.send(force=first)  # the group's start at once (a pause cancels unstarted ones)

    def send(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < EVENT_INTERVAL:
            return
        self._last = now
        moved = []
        for pos in range(self.started):
            done = self.contexts[pos].bytes_done
            if self._sent.get(pos, 0) != done:
                self._sent[pos] = done
                moved.append([pos, done])
        # Best effort: the outcome carries each task's final bytes anyway.
        with contextlib.suppress(Exception):
            self._log(self.topic, [self.key, self.started, moved])


class _Context(TaskContext):
    """A remote task's context: reports its bytes through the group's reporter."""

    __slots__ = ("_reporter",)

    def __init__(
        self,
        index: int,
        label: Callable[[], str],
        flag: Interrupter,
        timeout: float | None,
        reporter: _Reporter,
    ) -> None:
        super().__init__(index, label, flag, timeout)
        self._reporter = reporter

    def add_bytes(self, n: int) -> None:
        self.bytes_done += n
        self._reporter.send()


def _portable(exc: BaseException | None) -> BaseException | None:
    """``exc`` if it survives pickling, else a plain error with the same words (an OSError
    keeps errno, reason and file name), so an odd exception class never loses an outcome."""
    if exc is None:
        return None
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        if isinstance(exc, OSError):
            return OSError(exc.errno, exc.strerror, exc.filename)
        return RuntimeError(f"{type(exc).__name__}: {exc}")
    return exc


def _dummy_deliver(outcome: Outcome[Any], error: ItemError | None, tc: TaskContext) -> None:
    raise AssertionError("remote outcomes are delivered by the manager")  # pragma: no cover


def run_tasks(
    items: Sequence[tuple[Task[Any], int, float | None]],
    flag: Interrupter,
    reporter: _Reporter,
    rerun: bool,
) -> list[tuple[str, Any, BaseException | None, str, int, Any]]:
    """Run the tasks of one group in order, as a worker thread here would: consecutive
    `groupable` tasks of one class through their `Task.run_group` (up to their
    ``group_size``), the rest one by one. Returns, per task, (status, value, error, reason,
    bytes, item records)."""
    works: list[WorkItem] = []
    for task, attempt, timeout in items:
        tc = _Context._create(task.index, task.label, flag, timeout, reporter)
        tc.attempt = attempt
        tc.rerun = rerun
        works.append(WorkItem(task, tc, cast(Stage, None), _dummy_deliver))
    reporter.contexts = [work.tc for work in works]
    outcomes: list[Outcome[Any]] = []
    i = 0
    while i < len(works):
        work = works[i]
        if groupable(work.task):
            cls = type(work.task)
            group = [work]
            while (
                i + len(group) < len(works)
                and len(group) < work.task.group_size
                and type(works[i + len(group)].task) is cls
                and groupable(works[i + len(group)].task)
            ):
                group.append(works[i + len(group)])
            reporter.start(len(group))
            outcomes.extend(outcome for _, outcome in _run_group(group, flag))
            i += len(group)
        else:
            reporter.start(1)
            outcomes.append(_run_one(work, flag))
            i += 1
    reporter.send(force=True)
    return [
        (o.status.value, o.value, _portable(o.error), o.reason, o.bytes, w.tc.items)
        for o, w in zip(outcomes, works, strict=True)
    ]


def run_group(payload: bytes) -> bytes:
    """The Dask task of one group: unpickle (paths mapped), run, pickle the outcomes back
    (paths mapped back) with the seconds the tasks took."""
    import distributed  # only ever called on a Dask worker

    dask: Any = distributed

    job = loads(payload)
    tag: str = job["tag"]
    key: str = job["key"]
    pairs = check_path_map(json.loads(job["paths"]))  # a string, so left alone by the map
    worker = dask.get_worker()
    reporter = _Reporter(job["topic"], key, worker.log_event)
    flag = interrupter(tag)
    # A group that ran (in part) before, on a worker since lost, runs again: its tasks may
    # find their own outputs, which then count as done (`TaskContext.rerun`). The claim is
    # a scheduler-side flag the manager clears once it has the group's answer.
    claim = dask.Event(f"parjobs-claim-{key}")
    rerun = bool(job["rerun"]) or claim.is_set()
    claim.set()
    started = time.monotonic()
    results: list[tuple[str, Any, BaseException | None, str, int, Any]]
    if flag.reason is not None:
        results = [
            (OutcomeStatus.CANCELLED.value, None, None, f"job {flag.reason}d", 0, None)
            for _ in job["items"]
        ]
    else:
        results = run_tasks(job["items"], flag, reporter, rerun)
    # The items each task stands for, as its run left them: a run of files counts those it
    # finished (`Task.items`), which the manager's copy of the task cannot know.
    counts = [task.items for task, _, _ in job["items"]]
    answer = {"results": results, "seconds": time.monotonic() - started, "items": counts}
    return dumps(answer, reverse(pairs))
