"""Tasks and their outcomes: the small units a job fans out.

A `Task` runs its blocking ``run`` in a worker thread; an `AsyncTask` runs ``arun`` in trio.
Both carry a stable ``index`` (unique within the job's dispatcher stage) that checkpoints
record, so a resumed job skips them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import errno
import random
import time
import typing
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar, Final, Generic, TypeVar

from ._exceptions import CancelRequested, PauseRequested, TaskTimeoutError
from ._items import Identity, ItemRow, Written
from ._util import NoPublicConstructor

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


def _nothing_queued() -> int:
    return 0


class Interrupter:
    """A flag shared by a job and its worker threads: None, "pause" or "cancel"; and how
    many of the job's tasks wait for a worker (``queued``), which a `Bundle` polls as it
    polls the flag.

    Plain attribute reads and writes are atomic in CPython, so threads poll it without a lock.
    Cancel wins over pause.
    """

    __slots__ = ("queued", "reason")

    def __init__(self) -> None:
        self.reason: str | None = None
        #: How many tasks wait in the queue of the pool that runs the job's tasks (set by
        #: the pool; 0 without one). Read from worker threads without the queue's lock: a
        #: count a moment old is good enough for `Bundle.run`'s hand-back.
        self.queued: Callable[[], int] = _nothing_queued

    def request(self, reason: str) -> None:
        if reason not in ("pause", "cancel"):
            raise ValueError(f"unknown interrupt reason {reason!r}")
        if self.reason != "cancel":
            self.reason = reason

    def clear(self) -> None:
        self.reason = None

    def check(self) -> None:
        """Raise `PauseRequested` or `CancelRequested` when an interrupt is pending."""
        reason = self.reason
        if reason == "cancel":
            raise CancelRequested("the job is being cancelled")
        if reason == "pause":
            raise PauseRequested("the job is being paused")


#: errno values worth retrying: the operation may succeed if tried again later.
TRANSIENT_ERRNOS = frozenset(
    {
        errno.EAGAIN,
        errno.EINTR,
        errno.EIO,
        errno.EBUSY,
        errno.ETIMEDOUT,
        errno.ECONNRESET,
        errno.ECONNABORTED,
        errno.ECONNREFUSED,
        errno.ENETDOWN,
        errno.ENETUNREACH,
        errno.EHOSTUNREACH,
        errno.ESTALE,
    }
)


def is_transient(exc: BaseException) -> bool:
    """True for errors that may go away on retry (timeouts, EAGAIN, EIO on a network share,
    dropped connections); False for permanent ones (ENOENT, EACCES, bad input, bugs)."""
    if isinstance(exc, TimeoutError | ConnectionError):
        return True
    return isinstance(exc, OSError) and exc.errno in TRANSIENT_ERRNOS


@typing.final
@dataclasses.dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently to retry a failing task or job.

    Attempt ``n`` (1-based) that fails is retried after
    ``min(max_delay, initial_delay * multiplier**(n-1))`` seconds, randomized by +-``jitter``
    (a fraction), while ``n < max_attempts`` and ``retry_on(error)`` is true.
    """

    max_attempts: int = 3
    initial_delay: float = 0.5
    multiplier: float = 2.0
    max_delay: float = 60.0
    jitter: float = 0.1
    retry_on: Callable[[BaseException], bool] = is_transient

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if self.initial_delay < 0 or self.max_delay < 0 or not 0 <= self.jitter <= 1:
            raise ValueError("retry delays must be >= 0 and jitter within [0, 1]")

    def should_retry(self, attempt: int, exc: BaseException) -> bool:
        return attempt < self.max_attempts and self.retry_on(exc)

    def delay(self, attempt: int) -> float:
        base = min(self.max_delay, self.initial_delay * self.multiplier ** (attempt - 1))
        return base * (1 + random.uniform(-self.jitter, self.jitter))


class TaskContext(metaclass=NoPublicConstructor):
    """What a running task sees: its index, an interruption check and a byte counter.

    Thread-safe by construction: only the task's own thread writes ``bytes_done``.
    """

    __slots__ = (
        "_interrupter",
        "_label",
        "attempt",
        "bytes_done",
        "covers",
        "deadline",
        "index",
        "items",
        "off_since",
        "rerun",
        "stage",
        "started",
        "timeout",
    )

    def __init__(
        self,
        index: int,
        label: str | Callable[[], str],
        interrupter: Interrupter,
        timeout: float | None = None,
        stage: str = "default",
    ) -> None:
        self.index = index
        #: The dispatcher stage the task belongs to (with ``index``, it names the item).
        self.stage = stage
        self._label = label  # computed on first use: most tasks are never displayed
        self.bytes_done = 0
        self.attempt = 1
        #: This attempt may repeat one that already ran to its end (a cluster worker was
        #: lost after running it): an output equal to what this task would write is its own
        #: earlier result, done, not a conflict. False on local runs.
        self.rerun = False
        self.items: list[ItemRow] | None = None  # what `record` noted, for the checkpoint
        #: The indices the task finished, when it stands for several items of its stage (a
        #: `Bundle`): the stage books these as completed instead of the task's own index.
        self.covers: list[int] | None = None
        self._interrupter = interrupter
        self.timeout = timeout
        #: When the task must be done (``time.monotonic()``): set by `start`, None before
        #: and without a timeout.
        self.deadline: float | None = None
        #: When this attempt started (``time.monotonic()``), None before `start`.
        self.started: float | None = None
        #: Since when the task waits off its clock (`off_clock`), else None: neither `check`
        #: nor the executor's watchdog times it out meanwhile.
        self.off_since: float | None = None

    def start(self) -> None:
        """The task starts running now: its timeout counts from here (not from when it was
        queued, maybe behind slow tasks). Called by the executor that runs it; a later call
        in the same attempt (a task a group left to run alone) keeps the first deadline."""
        if self.started is None:
            self.started = time.monotonic()
        if self.timeout is not None and self.deadline is None:
            self.deadline = self.started + self.timeout

    def check(self) -> None:
        """Call between chunks: raises `PauseRequested`/`CancelRequested` to stop early, or
        `TaskTimeoutError` past the task's timeout. Whatever the task wrote so far must be
        safe to leave (a partial under a temporary name)."""
        self._interrupter.check()
        deadline = self.deadline
        if deadline is not None and self.off_since is None and time.monotonic() > deadline:
            raise TaskTimeoutError(f"{self.label}: timed out")

    @contextlib.contextmanager
    def off_clock(self) -> Iterator[None]:
        """Time in the block does not count toward the task's timeout: waiting for a share
        of something the process rations (the decode memory budget) is not running, and a
        batch waiting its turn must not time out items that never started. `check` checks
        interrupts only meanwhile; the deadline then moves by the time spent. The executor's
        watchdog, which times out a thread whose task is past its deadline, looks again while
        ``off_since`` is set (it abandoned the thread and ran the task again elsewhere, over
        and over, when the deadline was just cleared)."""
        deadline = self.deadline
        if deadline is None or self.off_since is not None:
            yield
            return
        began = time.monotonic()
        self.off_since = began
        try:
            yield
        finally:
            # (the deadline first: the watchdog reads it once ``off_since`` is None)
            self.deadline = deadline + (time.monotonic() - began)
            self.off_since = None

    @property
    def label(self) -> str:
        """What progress shows for this task (e.g. its file name)."""
        label = self._label
        if not isinstance(label, str):
            label = self._label = label()
        return label

    @property
    def interrupted(self) -> bool:
        return self._interrupter.reason is not None

    def member(self, task: Task[Any]) -> TaskContext:
        """A context for ``task``, one of the tasks a `Bundle` stands for: its own index,
        label and item records, this task's interrupt flag and stage (no timeout: the
        bundle's own clock runs)."""
        return TaskContext._create(task.index, task.label, self._interrupter, None, self.stage)

    def add_bytes(self, n: int) -> None:
        """Report ``n`` more bytes processed, for byte-accurate progress."""
        self.bytes_done += n

    def record(
        self,
        action: str,
        source: str | bytes,
        destination: str | bytes | None = None,
        *,
        bytes: int = 0,
        detail: str | None = None,
        written: Written | None = None,
    ) -> None:
        """Note what this task did to one item (see `parjobs.ItemRecord`): kept only if the
        task ends done or skipped, and stored in the same checkpoint as its completion, so
        the job's item log has it exactly once. Paths may be bytes (kept exactly)."""
        w = None if written is None else (written.size, written.mtime_ns, written.inode)
        _note(self, action, source, destination, bytes, detail, w)


def _note(
    tc: TaskContext,
    action: str,
    source: str | bytes,
    destination: str | bytes | None,
    nbytes: int,
    detail: str | None,
    written: Identity | None,
) -> None:
    """Add an item row to ``tc.items``, stamped with the task's stage (as the stage books
    it: no copy of the row there) and index."""
    _note_each(action, detail, ((tc, source, destination, nbytes, written),))


#: One row of `_note_each`: the task, source, destination, bytes and the written file's
#: identity.
_NoteRow = tuple[TaskContext, str | bytes, str | bytes | None, int, Identity | None]


def _note_each(action: str, detail: str | None, rows: Sequence[_NoteRow]) -> None:
    """`_note` for each of ``rows``, each path as ``str`` (undecodable bytes as surrogate
    escapes, as `os.fsdecode` does), decoded inline."""
    for tc, source, destination, nbytes, written in rows:
        row: ItemRow = (
            action,
            source if isinstance(source, str) else source.decode("utf-8", "surrogateescape"),
            None
            if destination is None
            else destination
            if isinstance(destination, str)
            else destination.decode("utf-8", "surrogateescape"),
            nbytes,
            detail,
            None,
            *((None, None, None) if written is None else written),
            tc.stage,
            tc.index,
        )
        if tc.items is None:
            tc.items = [row]
        else:
            tc.items.append(row)


class _RunAlone:
    __slots__ = ()

    def __repr__(self) -> str:
        return "RUN_ALONE"


#: What `Task.run_group` answers for a task it leaves to that task's own `Task.run`.
RUN_ALONE: Final = _RunAlone()

#: What `Task.run_members` answers for a chunk of a `Bundle`: per task its value or
#: `RUN_ALONE` (as `Task.run_group`), the item rows of the tasks done (in their order, each
#: stamped with its task's stage and index) and the bytes they did.
Members = tuple[list[Any], list[ItemRow], int]


def spread_rows(values: Sequence[Any], rows: Sequence[ItemRow], tcs: Sequence[TaskContext]) -> None:
    """Give each task done in ``values`` (not `RUN_ALONE`) its row of ``rows`` (one per
    done task, in order) and the row's bytes: how a class whose `Task.run_members` makes
    one row a done task answers `Task.run_group` from it, for the pool's own groups (rows
    stamped with the first context's stage: each is stamped with its own task's)."""
    it = iter(rows)
    for tc, value in zip(tcs, values, strict=True):
        if value is not RUN_ALONE:
            row = next(it)
            if row[9] != tc.stage:
                row = (*row[:9], tc.stage, row[10])
            tc.bytes_done += row[3]
            if tc.items is None:
                tc.items = [row]
            else:
                tc.items.append(row)


class Task(Generic[T_co]):
    """One unit of blocking work, run in a worker thread of its ``lane``.

    Subclasses are usually small dataclasses with an ``index`` field. ``weight`` estimates the
    bytes it touches (a size, not a priority): a task of 1 MiB or more is *heavy*, may take a
    while, and is never throttled or grouped (see `parjobs._workqueue.HEAVY_BYTES`). Where
    ``run`` runs is up to the executor of the task's lane (`parjobs._executor`): worker
    threads, or a Dask cluster's workers for a class that sets ``cluster``.

    A class whose tasks are many and tiny may set ``group_size`` and implement `run_group`:
    a worker thread then takes up to that many queued light tasks of the class at once. The
    pool lets such groups stream on every core, so `run_group` should spend its time outside
    the GIL.
    """

    lane: ClassVar[str] = "io"
    #: Higher runs first among queued tasks of the job (FIFO among equals).
    priority: int = 0
    #: Retry failed attempts (None: the dispatcher's policy).
    retry: RetryPolicy | None = None
    #: Seconds an attempt may take (None: the dispatcher's default, usually unlimited).
    timeout: float | None = None
    #: Up to this many queued tasks of this class go to one `run_group` call (1: never). Set
    #: on the class; a task whose group path could do nothing sets 1 on itself.
    group_size: int = 1
    #: May run on a cluster worker (`parjobs._cluster`) when the manager has one: the task
    #: pickles, needs nothing of this process (no fds, callbacks or trio), and is idempotent
    #: (run twice, it ends as if run once: see ``TaskContext.rerun``).
    cluster: bool = False
    #: How many of the job's items this task stands for in progress counts: a task that
    #: handles a run of files in one go says how many, so "items done" still counts files.
    items: int = 1
    index: int

    @property
    def weight(self) -> int:
        return 0

    @classmethod
    def run_group(cls, tasks: Sequence[Task[Any]], tcs: Sequence[TaskContext]) -> list[Any]:
        """Run several tasks of this class in one go (blocking), for speed: e.g. one call
        into C that releases the GIL for a whole group of small files.

        Returns, per task, its value (the task is done) or `RUN_ALONE`: the worker then runs
        that task's own `run` right away, so the group path only has to handle the common
        case and leaves errors, conflicts and oddities to `run`. A task answered `RUN_ALONE`
        must be left as `run` expects to find it. An exception fails every task of the group.
        Calls are short (about 20 ms of work), so the group path may skip ``tc.check()``;
        it keeps the tasks' ``timeout`` only if it checks it itself.
        """
        return [RUN_ALONE] * len(tasks)

    @classmethod
    def run_members(cls, tasks: Sequence[Task[Any]], tc: TaskContext) -> Members:
        """`run_group` for a chunk of the `Bundle` whose context is ``tc``: the values, the
        item rows and the bytes of the whole chunk at once (`Members`). This default gives
        each task a context of its own (`TaskContext.member`) and runs `run_group`; a class
        whose group path notes one row a done task overrides it to build the rows in one
        loop, with no object a task (a copy's small files: columns of paths, sizes and
        identities from the walk to C to the item log), and answers `run_group` from it
        (`spread_rows`)."""
        tcs = [tc.member(task) for task in tasks]
        values = cls.run_group(tasks, tcs)
        rows: list[ItemRow] = []
        nbytes = 0
        for mtc, value in zip(tcs, values, strict=True):
            if value is not RUN_ALONE:
                nbytes += mtc.bytes_done
                if mtc.items:
                    rows.extend(mtc.items)
        return values, rows, nbytes

    def label(self) -> str:
        """What progress shows while this task runs (e.g. the file name)."""
        return f"task {self.index}"

    def run(self, tc: TaskContext) -> T_co:
        """Do the work (blocking). Raise `Skip` to report a deliberate no-op."""
        raise NotImplementedError


class AsyncTask(Task[T_co]):
    """A task that runs in trio itself (waits on processes, sockets, callbacks)."""

    def run(self, tc: TaskContext) -> T_co:  # pragma: no cover - never called
        raise TypeError("AsyncTask runs through arun()")

    async def arun(self, tc: TaskContext) -> T_co:
        raise NotImplementedError


class OutcomeStatus(enum.StrEnum):
    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"


@typing.final
@dataclasses.dataclass(frozen=True, slots=True, init=False)
class Outcome(Generic[T]):
    """How one task ended, delivered in completion order.

    ``resumed`` marks a task skipped because an earlier run checkpointed it (its ``value`` is
    the stored result when the dispatcher keeps results, else None).
    """

    task: Task[T]
    status: OutcomeStatus
    value: T | None = None
    error: BaseException | None = None
    reason: str = ""
    bytes: int = 0
    resumed: bool = False
    attempts: int = 1

    def __init__(
        self,
        task: Task[T],
        status: OutcomeStatus,
        value: T | None = None,
        error: BaseException | None = None,
        reason: str = "",
        bytes: int = 0,
        resumed: bool = False,
        attempts: int = 1,
    ) -> None:
        # What the generated frozen __init__ does (one ``object.__setattr__`` per field),
        # through the slots' own setters: 0.8 us instead of 1.35 us, once per task.
        s = _OUTCOME_SETTERS
        s[0](self, task)
        s[1](self, status)
        s[2](self, value)
        s[3](self, error)
        s[4](self, reason)
        s[5](self, bytes)
        s[6](self, resumed)
        s[7](self, attempts)

    @property
    def index(self) -> int:
        return self.task.index

    @property
    def ok(self) -> bool:
        return self.status is OutcomeStatus.DONE

    def __repr__(self) -> str:
        extra = f", error={self.error!r}" if self.error else ""
        return f"Outcome(index={self.index}, status={self.status.value}{extra})"


#: The slot setters of `Outcome`'s fields, in order (its ``__init__`` uses them).
_OUTCOME_SETTERS: tuple[Callable[[Any, Any], None], ...] = tuple(
    getattr(Outcome, f.name).__set__ for f in dataclasses.fields(Outcome)
)


#: A `Bundle` runs its tasks' group path in calls sized to take about this long (seconds) by
#: the time per task measured so far (as the executor sizes task groups)...
BUNDLE_SECONDS = 0.02
#: ... and hands back what it has not run once it has run this long: a bundle on slow
#: storage ends soon (a thread call's own bound, so lane tokens still rotate among jobs).
BUNDLE_MAX_SECONDS = 0.05


@typing.final
@dataclasses.dataclass(frozen=True, slots=True)
class BundleDone:
    """The value of a `Bundle`: the values of the tasks it finished (``covers`` order) and
    the tasks it ``left``, which the dispatcher then runs as tasks of their own."""

    values: list[Any]
    left: list[Task[Any]]


#: What `_hand_back` tells a `Bundle` to do with the tasks it has not run: go on, ...
_KEEP = 0
#: ... hand them back as tasks of their own, ...
_SPREAD = 1
#: ... or hand them back as one bundle.
_REQUEUE = 2


def _hand_back(elapsed: float, queued: Callable[[], int]) -> int:
    """What a `Bundle` that has run ``elapsed`` seconds does with the tasks it has not run.

    Past `BUNDLE_MAX_SECONDS`, or past `BUNDLE_SECONDS` when its tasks are slow (waits,
    which overlap only across workers), it hands them back as tasks of their own
    (`_SPREAD`) when no task of the job waits in the queue (``queued()`` is 0): a worker is
    idle, or soon will be, and takes some. While tasks wait, every worker is busy: spread
    out, the rest would only cost a task, an outcome and a booking a file (on a busy machine
    that was 75-88 % of a copy's small files), so the bundle goes on, and past
    `BUNDLE_MAX_SECONDS` hands the rest back as one bundle (`_REQUEUE`): its thread call
    still ends, so lane tokens rotate among jobs and a stalled call still shows. Tiny tasks
    slowed by a busy machine keep going (`_KEEP`) to `BUNDLE_MAX_SECONDS`."""
    if elapsed < BUNDLE_SECONDS:
        return _KEEP
    if elapsed < BUNDLE_MAX_SECONDS and Bundle.member_seconds < BUNDLE_SECONDS / 8:
        return _KEEP
    if queued():
        return _REQUEUE if elapsed >= BUNDLE_MAX_SECONDS else _KEEP
    return _SPREAD


class Bundle(Task[BundleDone]):
    """One task that stands for several queued tasks of one grouping class (`run_group`):
    one queue item, one outcome and one booking in the stage for all the tasks it finishes,
    instead of one each (a copy's group of small files: the per-task path costs more than the
    copy in C). The tasks it finishes are booked together when the job takes its outcome
    (``tc.covers``, with their item records): a job killed before that runs them again.

    ``run`` hands the tasks to their class's `Task.run_members` in calls sized by
    `BUNDLE_SECONDS`; a task answered `RUN_ALONE` (a conflict, an error, anything the group
    path does not do) is set to run alone (``group_size = 1``) and left, with the tasks not
    reached (`_hand_back`: past `BUNDLE_MAX_SECONDS`, or `BUNDLE_SECONDS` for slow tasks,
    while no task waits for a worker; or once the job is being interrupted), in
    `BundleDone.left`: `TaskDispatcher.dispatch_many` queues those as tasks of their own,
    so a failure is reported (and retried) per task, as before (so a bundle goes through
    ``dispatch_many``, not ``dispatch``). While tasks wait for a worker, the tasks not
    reached go back as one `Bundle` instead, past `BUNDLE_MAX_SECONDS`. A bundle itself
    never fails but by a bug; it never runs on a cluster (its tasks may, unbundled).

    Its ``members`` are the tasks themselves here. A subclass may hold lighter members (a
    copy's walked entries, `parjobs.ops._transfer.EntryBundle`) and make the task of one
    only when it hands that one back (`task_of`), running its chunks through `run_chunk`:
    no task object a file it finishes."""

    #: The time per task of the last group calls (seconds; threads race on it: that only
    #: blurs it). Starts at one task a call, as the executor's groups do: on slow storage
    #: (a 20 ms open) a bundle runs a task or two and hands the rest back within
    #: `BUNDLE_MAX_SECONDS`, so the waits still overlap across workers; on fast storage
    #: the calls double to full size within the first bundle.
    member_seconds: ClassVar[float] = BUNDLE_SECONDS
    #: The items each member stands for when every member stands for the same number (a
    #: subclass's entries: one each); None: each member's own ``items`` (tasks).
    member_items: ClassVar[int | None] = None

    def __init__(self, tasks: Sequence[Task[Any]]) -> None:
        if not tasks:
            raise ValueError("a bundle needs at least one task")
        self.members: list[Any] = list(tasks)
        self.index = tasks[0].index
        self.priority = tasks[0].priority
        #: Its heaviest task's: every task is light, so the bundle is too (`HEAVY_BYTES`).
        self._weight = max(task.weight for task in tasks)
        self.items = sum(task.items for task in tasks)  # set to what it finished by `run`
        #: How many of its tasks `run` handed to the group path (the rest it left unrun).
        self.ran = 0

    @property
    def weight(self) -> int:
        return self._weight

    @property
    def tasks(self) -> list[Task[Any]]:
        """The tasks it stands for (a subclass makes them from its members: to look at
        only, e.g. in tests; `run` makes one only for a member it hands back)."""
        return [self.task_of(member) for member in self.members]

    def task_of(self, member: Any) -> Task[Any]:
        """The task ``member`` stands for: here the member itself."""
        task: Task[Any] = member
        return task

    def run_chunk(self, chunk: list[Any], tc: TaskContext) -> Members:
        """Run a chunk of members on the group path: here their class's `Task.run_members`."""
        cls: type[Task[Any]] = type(chunk[0])
        return cls.run_members(chunk, tc)

    def rebundle(self, rest: list[Any]) -> Bundle:
        """The members not reached, as one bundle of the same kind (`_REQUEUE`)."""
        return Bundle(rest)

    def label(self) -> str:
        first = self.task_of(self.members[0]).label()
        more = len(self.members) - 1
        return f"{first} (+{more})" if more else first

    def run(self, tc: TaskContext) -> BundleDone:
        members = self.members
        monotonic = time.monotonic
        started = monotonic()
        values: list[Any] = []
        covers: list[int] = []
        rows: list[ItemRow] = []
        left: list[Task[Any]] = []
        done_items = 0
        each = self.member_items
        queued = tc._interrupter.queued
        requeue = False
        i, n = 0, len(members)
        while i < n:
            if i:
                if tc.interrupted:
                    break  # the rest: left (and not run: the job is being interrupted)
                how = _hand_back(monotonic() - started, queued)
                if how != _KEEP:
                    requeue = how == _REQUEUE
                    break
            k = max(1, min(n - i, int(BUNDLE_SECONDS / Bundle.member_seconds)))
            chunk = members[i : i + k]
            call = monotonic()
            try:
                got, chunk_rows, nbytes = self.run_chunk(chunk, tc)
                if len(got) != k:
                    raise RuntimeError(f"run_members returned {len(got)} values for {k} tasks")
            except Exception:  # (a bug): each runs alone, and fails or not there
                got, chunk_rows, nbytes = [RUN_ALONE] * k, [], 0
            Bundle.member_seconds = (Bundle.member_seconds + (monotonic() - call) / k) / 2
            for member, value in zip(chunk, got, strict=True):
                if value is RUN_ALONE:
                    task = self.task_of(member)
                    task.group_size = 1  # the group path handed it back: alone next time
                    left.append(task)
                    continue
                values.append(value)
                covers.append(member.index)
                if each is None:
                    done_items += member.items
            tc.bytes_done += nbytes
            rows.extend(chunk_rows)
            i += k
        rest = members[i:]
        if requeue and len(rest) > 1:
            left.append(self.rebundle(rest))  # one queue item, outcome and booking, as this one
        else:
            left.extend(self.task_of(member) for member in rest)
        self.ran = i
        tc.covers = covers
        tc.items = rows
        self.items = done_items if each is None else each * len(covers)
        return BundleDone(values, left)
