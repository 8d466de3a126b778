"""`FinishDirs`: the last task of a copy or move run, which sweeps leftover temporaries and
gives destination directories their sources' modes and times, deepest first."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

from .._items import Written, fingerprint
from .._task import Task, TaskContext
from . import _dirmeta
from ._errors import CopyError
from ._metadata import apply_dir_metadata
from ._transfer import CopyDone, CopyPlan
from ._walk import Entry


@dataclasses.dataclass(eq=False)
class FinishDirs(Task[CopyDone]):
    """The last step of a run: sweep leftover temporaries (when a run may have left some),
    then apply source modes and times to the destination directories, deepest first.

    ``dirs``: the walked source directories, read through `SourceDirs.dir_at`. With
    ``walked_mtime`` (a move) a destination directory gets the mtime its source had when
    walked, since moving the files out changed it since, and ``found`` collects each source
    directory's metadata as read (`_dirmeta.snapshot`), for the move to record for its
    undo, once ``after`` (which removes them) ran: ``(source, destination, snapshot,
    destination's identity)``."""

    index: int
    plan: CopyPlan
    dirs: list[Entry]
    sweep: Callable[[], object] | None
    after: Callable[[TaskContext], None] | None = None
    walked_mtime: bool = False
    found: list[tuple[bytes, bytes, dict[str, Any], Written]] = dataclasses.field(
        default_factory=list
    )

    @property
    def weight(self) -> int:
        return 1 << 30  # may take a while: deliver earlier outcomes first

    def label(self) -> str:
        return f"finishing {self.plan.tree.display(b'')}"

    def run(self, tc: TaskContext) -> CopyDone:
        if self.sweep is not None:
            self.sweep()
        plan = self.plan
        failures: list[str] = []
        for entry in sorted(self.dirs, key=lambda d: -d.rel.count(b"/")):
            tc.check()
            rel = entry.rel
            try:
                fd = plan.tree.acquire(rel, create=False)
            except OSError:  # never created (conflict, skipped): nothing to finish
                continue
            try:
                self._finish(entry, fd, failures)
            finally:
                plan.tree.release(rel)
        try:
            if self.after is not None:
                self.after(tc)
        finally:
            _mark_kept(self.found)
        if failures:
            raise CopyError(
                f"could not set mode/times of {len(failures)} directories; first: {failures[0]}"
            )
        return CopyDone("finish")

    def _finish(self, entry: Entry, fd: int, failures: list[str]) -> None:
        """Give the directory open at ``fd`` its source's metadata (a failure: into
        ``failures``); for a move, keep the source's as read in ``found``."""
        plan, rel, src = self.plan, entry.rel, entry.path
        seen: list[dict[str, Any]] = []
        mtime_ns = entry.mtime_ns if self.walked_mtime else None
        try:
            options = plan.options
            with plan.src_dirs.dir_at(src, rel, "read") as at:
                apply_dir_metadata(
                    src,
                    fd,
                    plan.follow,
                    options.preserve_xattrs,
                    options.preserve_owner,
                    options.durable,
                    mtime_ns,
                    at=at,
                    seen=self._seen(seen, mtime_ns),
                )
        except FileNotFoundError:
            # The source directory is gone: a move's earlier run applied its metadata, then
            # removed it, and was killed before recording this step. Its destination holds
            # that metadata now: what is recorded (with no source inode to compare).
            if not self.walked_mtime:
                return
            seen = [_dirmeta.snapshot(f"/proc/self/fd/{fd}", os.fstat(fd), None)]
            seen[0]["ino"] = None
        except OSError as exc:
            failures.append(f"{plan.tree.display(rel)}: {exc.strerror or exc}")
            return
        if seen:
            self.found.append((src, plan.tree.path(rel), seen[0], fingerprint(os.fstat(fd))))

    def _seen(
        self, into: list[dict[str, Any]], mtime_ns: int | None
    ) -> Callable[[str, os.stat_result], None] | None:
        """What `apply_dir_metadata` calls with the source as read, for a move: its
        snapshot, into ``into``."""
        if not self.walked_mtime:
            return None
        return lambda proc, st: into.append(_dirmeta.snapshot(proc, st, mtime_ns))


def _mark_kept(found: list[tuple[bytes, bytes, dict[str, Any], Written]]) -> None:
    """Note in each snapshot whether its source directory is still there, the very one
    read (the move keeps a directory holding what it did not move): an undo gives that
    one its times back only, its mode and owner its own."""
    for src, _, meta, _ in found:
        try:
            st = os.lstat(src)
        except OSError:
            continue
        meta["kept"] = _dirmeta.is_same(meta, st)
