"""Tasks over walked entries that several jobs share: hash one file (`HashTask`), and report
an entry that is not worked on, skipped or unreadable (`EntryTask`, `entry_report`)."""

from __future__ import annotations

import dataclasses
from typing import Any

from .._exceptions import Skip
from .._task import Task, TaskContext
from ._errors import SourceChangedError
from ._fs import display
from ._hashing import hash_file
from ._walk import Entry


@dataclasses.dataclass(slots=True)
class HashTask(Task[list[Any]]):
    """Hash one regular file; the value is ``[hex digest, bytes read]`` (JSON data)."""

    cluster = True  # reads only: running twice is harmless

    index: int
    path: bytes
    size: int
    algorithm: str = "xxh3_128"
    exact: bool = False
    """Fail unless the file still has ``size`` bytes (it changed since it was listed)."""

    @property
    def weight(self) -> int:
        return self.size

    def label(self) -> str:
        return display(self.path)

    def run(self, tc: TaskContext) -> list[Any]:
        digest = hash_file(
            self.path, algorithm=self.algorithm, check=tc.check, on_bytes=tc.add_bytes
        )
        if self.exact and tc.bytes_done != self.size:
            raise SourceChangedError(
                None,
                f"file changed since it was listed (size {self.size} -> {tc.bytes_done})",
                self.label(),
            )
        tc.record("hashed", self.path, bytes=tc.bytes_done, detail=f"{self.algorithm}:{digest}")
        return [digest, tc.bytes_done]


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
