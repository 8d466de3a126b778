"""Tasks over walked entries that several jobs share: hash one file (`HashTask`), and report
an entry that is not worked on, skipped or unreadable (`EntryTask`, `entry_report`); and
`run_each`, the group path of tasks that read small files one after another."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, cast

from .._exceptions import Interrupted, Skip
from .._task import RUN_ALONE, Task, TaskContext
from ._errors import SourceChangedError
from ._fs import display
from ._hashing import hash_file
from ._walk import Entry

if TYPE_CHECKING:
    from ._prehash import Prehash

TaskT = TypeVar("TaskT", bound=Task[Any])


def run_each(
    tasks: Sequence[TaskT], tcs: Sequence[TaskContext], value: Callable[[TaskT, TaskContext], Any]
) -> list[Any]:
    """The group path of tasks that each read one small file: ``value(task, tc)`` for each, in
    one worker-thread call (the reads release the GIL; the saving is the per-task thread hop
    and dispatch). A task whose ``value`` raises `OSError` (a timeout too) or is interrupted
    (``tc.check()``) is answered `RUN_ALONE`, so its own ``run`` meets the problem again and
    reports it; ``value`` must therefore leave no trace (bytes, records) before it has
    succeeded. Once a pause or cancel is pending, the rest are
    left to ``run`` too, which stops them at once: a group never delays an interruption by more
    than one file.
    """
    out: list[Any] = []
    for task, tc in zip(tasks, tcs, strict=True):
        if tc.interrupted:
            out.append(RUN_ALONE)
            continue
        try:
            out.append(value(task, tc))
        except (OSError, Interrupted):  # (a timeout is an OSError) run meets it again
            out.append(RUN_ALONE)
    return out


@dataclasses.dataclass(slots=True)
class HashTask(Task[list[Any]]):
    """Hash one regular file; the value is ``[hex digest, bytes read]`` (JSON data)."""

    cluster = True  # reads only: running twice is harmless
    #: Light (small) files are hashed up to this many per worker-thread call (`run_each`).
    group_size = 64

    index: int
    path: bytes
    size: int
    algorithm: str = "xxh3_128"
    exact: bool = False
    """Fail unless the file still has ``size`` bytes (it changed since it was listed)."""
    #: The job's files hashed while the command started (`Prehash`): a digest it read of
    #: this file is taken instead of reading it again. Not part of the task's identity.
    prehash: Prehash | None = dataclasses.field(
        default=None, kw_only=True, compare=False, repr=False
    )

    @property
    def weight(self) -> int:
        return self.size

    def label(self) -> str:
        return display(self.path)

    def run(self, tc: TaskContext) -> list[Any]:
        if self.exact:
            return self._exactly(tc)
        digest = self._hash(tc, tc.add_bytes)
        self._check_size(tc.bytes_done)
        return self._done(tc, digest, tc.bytes_done)

    def _exactly(self, tc: TaskContext) -> list[Any]:
        """`run` for an ``exact`` file, counting no more than its listed size as it reads:
        a file grown since fails without counting more bytes than the totals hold for it."""
        read = 0
        size = self.size

        def count(n: int) -> None:
            nonlocal read
            if read < size:
                tc.add_bytes(min(n, size - read))
            read += n

        digest = self._hash(tc, count)
        self._check_size(read)
        return self._done(tc, digest, read)

    @classmethod
    def run_group(cls, tasks: Sequence[Task[Any]], tcs: Sequence[TaskContext]) -> list[Any]:
        """Hash the group's (light, so small) files one after another in this thread."""
        return run_each(cast(Sequence[HashTask], tasks), tcs, HashTask._quietly)

    def _quietly(self, tc: TaskContext) -> list[Any]:
        """`run` that counts bytes only once the digest is known (see `run_each`)."""
        value = self._uncounted(tc)
        tc.add_bytes(value[1])
        return value

    def _uncounted(self, tc: TaskContext) -> list[Any]:
        """`run` that counts no bytes (the caller counts them, or counted them already)."""
        read = 0

        def count(n: int) -> None:
            nonlocal read
            read += n

        digest = self._hash(tc, count)
        self._check_size(read)
        return self._done(tc, digest, read)

    def _hash(self, tc: TaskContext, on_bytes: Callable[[int], None]) -> str:
        """`hash_file` of the file, or the digest `prehash` read of it (`Prehash.take`: the
        same file, unchanged), its bytes counted at once."""
        if self.prehash is not None and self.algorithm == "xxh3_128":
            known = self.prehash.take(self.path, tc.check)
            if known is not None:
                on_bytes(known[1])
                return known[0]
        return hash_file(self.path, algorithm=self.algorithm, check=tc.check, on_bytes=on_bytes)

    def _check_size(self, read: int) -> None:
        if self.exact and read != self.size:
            raise SourceChangedError(
                None, f"file changed since it was listed (size {self.size} -> {read})", self.label()
            )

    def _done(self, tc: TaskContext, digest: str, read: int) -> list[Any]:
        tc.record("hashed", self.path, bytes=read, detail=f"{self.algorithm}:{digest}")
        return [digest, read]


@dataclasses.dataclass(slots=True)
class EntryTask(Task[None]):
    """Report a walked entry that is not worked on: skipped (``skip`` reason) or failed.

    A task rather than a silent drop, so the item shows in progress and in the job's errors
    with its path, and a resumed run knows it was reported.
    """

    cluster = True

    index: int
    path: bytes
    reason: str
    skip: bool

    def label(self) -> str:
        return display(self.path)

    def run(self, tc: TaskContext) -> None:
        if self.skip:
            raise Skip(self.reason)
        raise OSError(None, self.reason, display(self.path))


def entry_report(entry: Entry, what: str) -> EntryTask:
    """The `EntryTask` for an entry of kind symlink, special or error (``what``: "hashed"…)."""
    if entry.kind == "error":
        return EntryTask(entry.index, entry.path, entry.error, skip=False)
    kind = "a symbolic link (not followed)" if entry.kind == "symlink" else "a special file"
    return EntryTask(entry.index, entry.path, f"not {what}: {kind}", skip=True)
