"""Undo a job from its item log: `UndoJob` (``parjobs undo ID``, ``manager.undo(id)``).

It reads the log of the job it undoes (`JobContext.job_items`) page by page and makes one task
per record it can reverse, indexed by the record's ``seq``, so a resumed undo skips what it
already did:

* "trashed": the item goes back from the trash to its original path (`_trashcan.restore`:
  a no-replace rename, then the ``.trashinfo`` removed);
* "moved": the item goes back to its source path by a no-replace rename (parent directories
  re-created), when the destination still holds the very item (same inode);
* "copied" and "renamed-as": the file the copy created is removed when it still has the
  identity recorded at write time (inode, size, mtime in ns), that is when nobody changed it
  since; a directory the copy created is removed last, deepest first, when empty.

Never undone: "replaced" (the replaced data is gone; removing the copy would lose both),
"present" (found in place on resume: maybe not this job's), "skipped", "deleted". What is
kept is reported as a skipped item with its reason, each undone item with its own record
("removed", "restored").
"""

from __future__ import annotations

import dataclasses
import errno
import itertools
import os
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

from .._context import JobContext
from .._exceptions import JobSpecError, Skip
from .._items import DIRECTORY, ItemRecord
from .._job import Job, job_type
from .._task import OutcomeStatus, Task, TaskContext
from ._fs import display, rename_noreplace
from ._trashcan import info_of, restore

#: Records read from the log per page.
PAGE = 1000
_REMOVABLE = frozenset({"copied", "renamed-as"})
_UNDOABLE = _REMOVABLE | {"moved", "trashed"}

CHANGED = "changed since the job wrote it; kept"
GONE = "no longer there"


@dataclasses.dataclass(slots=True)
class UndoTask(Task[str]):
    """Reverse one record of a job's item log (see the module docstring)."""

    index: int
    record: ItemRecord

    def label(self) -> str:
        r = self.record
        return display(os.fsencode(r.destination or r.source))

    def run(self, tc: TaskContext) -> str:
        tc.check()
        action = self.record.action
        if action == "trashed":
            return self._restore(tc)
        if action == "moved":
            return self._move_back(tc)
        return self._remove(tc)

    def _restore(self, tc: TaskContext) -> str:
        r = self.record
        assert r.destination is not None
        trashed, source = os.fsencode(r.destination), os.fsencode(r.source)
        # Gone from files/ with its info file left: an earlier run of this undo restored it
        # and was stopped before removing the info file (`restore` finishes that).
        if not os.path.lexists(trashed) and not os.path.lexists(info_of(trashed)):
            raise Skip("no longer in the trash")
        try:
            target = restore(trashed, source)
        except FileExistsError:
            raise Skip("something is at the original path; left in the trash") from None
        tc.record("restored", trashed, target)
        return "restored"

    def _move_back(self, tc: TaskContext) -> str:
        r = self.record
        assert r.destination is not None
        moved, source = os.fsencode(r.destination), os.fsencode(r.source)
        try:
            st = os.lstat(moved)
        except FileNotFoundError:
            raise Skip(GONE) from None
        if r.written is None or st.st_ino != r.written.inode:
            raise Skip("another item is there now; left in place")
        parent, name = os.path.split(source)
        os.makedirs(parent, exist_ok=True)
        fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            rename_noreplace(moved, name, dst_dir_fd=fd, overwrite=False)
        except FileExistsError:
            raise Skip("something is at the original path; left in place") from None
        finally:
            os.close(fd)
        tc.record("restored", moved, source, bytes=st.st_size)
        return "restored"

    def _remove(self, tc: TaskContext) -> str:
        r = self.record
        assert r.destination is not None
        path = os.fsencode(r.destination)
        parent, name = os.path.split(path)
        try:
            fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise Skip(GONE) from None
        try:
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                raise Skip(GONE) from None
            w = r.written
            if r.detail == DIRECTORY:
                if w is None or st.st_ino != w.inode:
                    raise Skip(CHANGED)
                try:
                    os.rmdir(name, dir_fd=fd)
                except OSError as exc:
                    if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                        raise Skip("directory not empty; kept") from None
                    raise
            else:
                if w is None or (st.st_size, st.st_mtime_ns, st.st_ino) != (
                    w.size,
                    w.mtime_ns,
                    w.inode,
                ):
                    raise Skip(CHANGED)
                os.unlink(name, dir_fd=fd)
        finally:
            os.close(fd)
        tc.record("removed", path, bytes=0 if r.detail == DIRECTORY else st.st_size)
        return "removed"


@job_type("undo", version=1)
class UndoJob(Job):
    """Undo job ``job`` from its item log: restore what it trashed, move back what it
    moved, remove what it copied (only files it created and nobody changed since).

    Result: ``{"job", "removed", "restored", "kept", "failed", "kept_reasons"}``: ``kept``
    counts the items left as they are (changed since, gone, a name taken), by reason in
    ``kept_reasons``. The job being undone must not be running (`JobManager.undo` checks).
    """

    job: str

    def validate(self) -> None:
        if not self.job.strip():
            raise JobSpecError("undo: no job id given")

    async def run(self, ctx: JobContext) -> dict[str, Any]:
        counts = ctx.state.setdefault(
            "undo", {"removed": 0, "restored": 0, "kept": 0, "kept_reasons": {}}
        )
        failed = 0
        ctx.progress.set_message("undoing")
        dirs: list[ItemRecord] = []
        files = ctx.task_dispatcher("undo")
        async with aclosing(self._tasks(ctx, files.is_completed, dirs)) as tasks:
            async for outcome in files.dispatch_many(tasks):
                failed += _count(counts, outcome)
        ctx.progress.finalize_totals()
        # Directories last, one depth at a time, deepest first: each empties as its
        # children go (tasks of one dispatch run in parallel).
        stage = ctx.task_dispatcher("dirs")
        todo = [r for r in dirs if not stage.is_completed(r.seq)]
        ctx.progress.add_total(items=len(todo))
        todo.sort(key=_depth)
        for _, level in itertools.groupby(todo, key=_depth):
            async for outcome in stage.dispatch_many([UndoTask(r.seq, r) for r in level]):
                failed += _count(counts, outcome)
        return {"job": self.job, **counts, "failed": failed}

    async def _tasks(
        self, ctx: JobContext, done: Any, dirs: list[ItemRecord]
    ) -> AsyncGenerator[UndoTask, None]:
        after = 0
        while True:
            page = await ctx.job_items(self.job, after=after, limit=PAGE)
            if not page:
                return
            after = page[-1].seq
            for r in page:
                if r.action not in _UNDOABLE or r.destination is None:
                    continue
                if r.action in _REMOVABLE and r.detail == DIRECTORY:
                    dirs.append(r)
                elif not done(r.seq):
                    ctx.progress.add_total(items=1)
                    yield UndoTask(r.seq, r)


def _depth(record: ItemRecord) -> int:
    """Minus the depth of the record's destination (so sorting puts the deepest first)."""
    return -(record.destination or "").count("/")


def _count(counts: dict[str, Any], outcome: Any) -> int:
    """Add an outcome to the counters kept in state; 1 for a failure."""
    if outcome.status is OutcomeStatus.DONE:
        counts[outcome.value] += 1
    elif outcome.status is OutcomeStatus.SKIPPED:
        counts["kept"] += 1
        reasons = counts["kept_reasons"]
        reasons[outcome.reason] = reasons.get(outcome.reason, 0) + 1
    elif outcome.status is OutcomeStatus.FAILED:
        return 1
    return 0


__all__ = ["UndoJob", "UndoTask"]
