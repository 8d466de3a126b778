"""Undo a job from its item log: `UndoJob` (``parjobs undo ID``, ``manager.undo(id)``).

It reads the log of the job it undoes (`JobContext.job_items`) page by page and makes one task
per record it can reverse, indexed by the record's ``seq``, so a resumed undo skips what it
already did:

* "trashed": the item goes back from the trash to its original path (`_trashcan.restore`:
  a no-replace rename, then the ``.trashinfo`` removed);
* "moved": the item goes back to its source path by a no-replace rename (parent directories
  re-created), when the destination still holds the very item (same inode); a move's
  record of a source directory (`_dirmeta`) gives it back its metadata last, deepest first
  (`DirTask`, the "dirmeta" stage), once its entries are back;
* "copied", "renamed-as" and "linked" (a hard link the copy made, unless it replaced a file):
  the file the copy created is removed when it still has the identity recorded at write time
  (inode, size, mtime in ns), that is when nobody changed it since; a directory the copy
  created is removed last, deepest first, when empty.

An item is never acted on by its name after checking it: another process could replace the
name in between, and undo would then delete (or move) a file it did not create. It is first
renamed, no-replace, within its directory to a name carrying the undo job's token
(``.<name>.<token>.parjobs-undo``, `held_name`); a descriptor of that name (``O_PATH``,
never followed) is checked for the recorded identity, and only then is the held name
unlinked (or moved back, or a directory removed). What does not match is renamed back and
kept ("changed since"). A run stopped between the two renames leaves the held name, which
the next run of the same undo (same token) finds first and checks the same way.

Never undone: "replaced" (the replaced data is gone; removing the copy would lose both),
"present" (found in place on resume: maybe not this job's; counted as kept, `PRESENT`),
"skipped", "deleted". What is kept is reported as a skipped item with its reason, each
undone item with its own record ("removed", "restored").
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import itertools
import os
import stat
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from typing import Any

import trio

from .._context import JobContext
from .._exceptions import JobSpecError, Skip
from .._items import DIRECTORY, ItemRecord, Written
from .._job import Job, job_type
from .._task import OutcomeStatus, Task, TaskContext
from . import _dirmeta
from ._copyfile import CopyOptions, copy_file, copy_symlink
from ._fs import DIR_FLAGS, DIR_NOFOLLOW, display, lexists, rename_noreplace, unique_name
from ._names import job_token, stored_token
from ._partials import held_name
from ._trash import deletion_stamp, read_trashinfo
from ._trashcan import info_of, restore

#: Records read from the log per page.
PAGE = 1000
_REMOVABLE = frozenset({"copied", "renamed-as", "linked"})
_UNDOABLE = _REMOVABLE | {"moved", "trashed"}
_HELD = _REMOVABLE | {"moved"}  # taken aside under a held name while undone
#: The records that get a task: those undone, and "present" (kept, with its reason: a copy
#: killed before its checkpoint leaves hundreds that a resume finds in place, which the
#: undo's result counted nowhere while they stayed at the destination).
_TASKS = _UNDOABLE | {"present"}
#: A move's records of its source directories (`_dirmeta`; "moved" by 13c05a8 alone).
_SOURCE_DIR = frozenset({_dirmeta.ACTION, "moved"})

CHANGED = "changed since the job wrote it; kept"
GONE = "no longer there"
NOT_EMPTY = "directory not empty; kept"
TRASH_REUSED = "another item is in the trash under its name now; left there"
PRESENT = "found in place on resume (maybe not this job's copy); kept"


def unchanged(st: os.stat_result, record: ItemRecord) -> bool:
    """Whether ``st`` is still the item ``record`` wrote: the same inode for a moved item or
    a directory (a moved file may have been edited since: it is still the user's item), the
    same inode, size and mtime for a file a copy created. Called twice per item: on the name
    before taking it aside, and on the descriptor of what was taken aside."""
    w = record.written
    if w is None:
        return False
    if record.action == "moved" or record.detail == DIRECTORY:
        return st.st_ino == w.inode
    return (st.st_size, st.st_mtime_ns, st.st_ino) == (w.size, w.mtime_ns, w.inode)


def _same_trashed(st: os.stat_result, w: Written) -> bool:
    """Whether ``st`` is the item a trash job recorded as ``w``: the same inode, and for
    all but a directory (whose entries may change in the trash) the same mtime, which an
    inode freed by emptying the trash and reused by a later file does not keep."""
    if st.st_ino != w.inode:
        return False
    return stat.S_ISDIR(st.st_mode) or st.st_mtime_ns == w.mtime_ns


@dataclasses.dataclass(slots=True)
class UndoTask(Task[str]):
    """Reverse one record of a job's item log (see the module docstring). ``token`` is the
    undo job's name token: the name it takes items aside under (`held_name`)."""

    index: int
    record: ItemRecord
    token: bytes

    def label(self) -> str:
        r = self.record
        return display(os.fsencode(r.destination or r.source))

    def run(self, tc: TaskContext) -> str:
        tc.check()
        action = self.record.action
        if action == "present":
            raise Skip(PRESENT)  # never undone: reported, not left out of the count
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
        info = info_of(trashed)
        if not os.path.lexists(trashed) and not os.path.lexists(info):
            raise Skip("no longer in the trash")
        # The name in the trash is free again once the item is emptied or restored, and the
        # next item trashed with its name takes it: that one is not this job's to restore,
        # even trashed from the same path (its DeletionDate and inode tell; a job before
        # session 19 recorded neither: its original path only).
        with contextlib.suppress(FileNotFoundError, ValueError):  # (`restore` says what)
            found = read_trashinfo(info)
            if found.original_path != source or (
                r.detail is not None and r.detail != deletion_stamp(found)
            ):
                raise Skip(TRASH_REUSED)
        if r.written is not None:
            with contextlib.suppress(FileNotFoundError):  # (restored by an earlier run)
                if not _same_trashed(os.lstat(trashed), r.written):
                    raise Skip(TRASH_REUSED)
        try:
            target = restore(trashed, source)
        except FileExistsError:
            raise Skip("something is at the original path; left in the trash") from None
        tc.record("restored", trashed, target)
        return "restored"

    def _take_aside(self, fd: int, name: bytes, changed: str) -> tuple[bytes, int]:
        """Rename ``name`` (in ``fd``) to its held name, check through a descriptor of the
        held name that it is still the recorded item, and return (held name, descriptor).

        Checking the name and then acting on it would act on whatever another process put
        there in between; a descriptor opened on the held name (``O_PATH|O_NOFOLLOW``:
        never followed, never blocks) is the very entry that was renamed, and only undo
        uses that name. A held name already there is what an earlier run of this undo took
        aside before it was stopped: it is checked the same way. What does not match goes
        back (`_put_back`) and the item is kept (Skip ``changed``).
        """
        held = held_name(name, self.token)
        if not lexists(fd, held):
            try:
                if not unchanged(os.stat(name, dir_fd=fd, follow_symlinks=False), self.record):
                    raise Skip(changed)
                rename_noreplace(name, held, src_dir_fd=fd, dst_dir_fd=fd, overwrite=False)
            except FileNotFoundError:
                raise Skip(GONE) from None
        try:
            held_fd = os.open(held, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
        except BaseException:
            _give_back(fd, held, name)
            raise
        try:
            same = unchanged(os.fstat(held_fd), self.record)
        except BaseException:
            os.close(held_fd)
            _give_back(fd, held, name)
            raise
        if same:
            return held, held_fd
        os.close(held_fd)
        raise Skip(_put_back(fd, held, name, changed))

    def _move_back(self, tc: TaskContext) -> str:
        r = self.record
        assert r.destination is not None
        moved, source = os.fsencode(r.destination), os.fsencode(r.source)
        try:
            size = self._move_back_from(moved, source, tc.check)
        except Skip as skip:
            try:
                st = os.lstat(source)
            except OSError:
                raise skip from None
            if skip.reason != GONE or not unchanged(st, r):
                raise
            size = st.st_size  # an earlier run moved it back, stopped before recording it
        tc.record("restored", moved, source, bytes=size)
        return "restored"

    def _move_back_from(self, moved: bytes, source: bytes, check: Callable[[], None]) -> int:
        """Move ``moved`` back to ``source`` (no-replace, its directory made); its size.
        ``check`` runs between the chunks of a copy back across filesystems."""
        here, name = os.path.split(moved)
        parent, back = os.path.split(source)
        fd = _open_dir(here)
        try:
            held, held_fd = self._take_aside(fd, name, "another item is there now; left in place")
            try:
                size = os.fstat(held_fd).st_size
            finally:
                os.close(held_fd)
            try:
                os.makedirs(parent, exist_ok=True)
                to = os.open(parent, DIR_FLAGS)
            except BaseException:
                _give_back(fd, held, name)
                raise
            try:
                try:
                    rename_noreplace(held, back, src_dir_fd=fd, dst_dir_fd=to, overwrite=False)
                except OSError as exc:
                    if exc.errno != errno.EXDEV:
                        raise
                    # Moved across filesystems: it goes back the way it came, copied whole
                    # (fsynced), then the held name unlinked.
                    _copy_back(fd, held, to, back, self.token, check)
                    os.unlink(held, dir_fd=fd)
            except FileExistsError:
                taken = "something is at the original path; left in place"
                raise Skip(_put_back(fd, held, name, taken)) from None
            except BaseException:
                _give_back(fd, held, name)
                raise
            finally:
                os.close(to)
        finally:
            os.close(fd)
        return size

    def _remove(self, tc: TaskContext) -> str:
        r = self.record
        assert r.destination is not None
        path = os.fsencode(r.destination)
        parent, name = os.path.split(path)
        directory = r.detail == DIRECTORY
        fd = _open_dir(parent)
        try:
            if directory and _has_entries(fd, name):  # not even taken aside for a moment
                raise Skip(NOT_EMPTY)
            held, held_fd = self._take_aside(fd, name, CHANGED)
            try:
                size = 0 if directory else os.fstat(held_fd).st_size
            finally:
                os.close(held_fd)
            try:
                if directory:
                    os.rmdir(held, dir_fd=fd)
                else:
                    os.unlink(held, dir_fd=fd)
            except OSError as exc:
                if not directory or exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    _give_back(fd, held, name)
                    raise
                raise Skip(_put_back(fd, held, name, NOT_EMPTY)) from None
        finally:
            os.close(fd)
        tc.record("removed", path, bytes=size)
        return "removed"


def _open_dir(path: bytes) -> int:
    """A descriptor of the directory an item was written to (missing: Skip, GONE)."""
    try:
        return os.open(path, DIR_FLAGS)
    except FileNotFoundError:
        raise Skip(GONE) from None


def _has_entries(fd: int, name: bytes) -> bool:
    """Whether the directory ``name`` in ``fd`` holds anything (False when it is not a
    directory, or gone: the checks that follow say so)."""
    try:
        sub = os.open(name, DIR_NOFOLLOW, dir_fd=fd)
    except OSError:
        return False
    try:
        with os.scandir(sub) as entries:
            return next(entries, None) is not None
    finally:
        os.close(sub)


def _copy_back(
    fd: int, held: bytes, to: int, back: bytes, token: bytes, check: Callable[[], None]
) -> None:
    """Copy the held item (in ``fd``) to ``back`` in ``to``, on another filesystem, as the
    move across filesystems copied it: no-replace (`FileExistsError` when taken), mode,
    times, owner and extended attributes kept, fsynced before the caller unlinks the held
    name. A regular file or a symlink; anything else raises the rename's ``EXDEV``."""
    at = (fd, held)  # (the source through its directory fd, as a move's sources are)
    mode = os.stat(held, dir_fd=fd, follow_symlinks=False).st_mode
    if stat.S_ISLNK(mode):
        copy_symlink(
            held,
            back,
            dst_dir_fd=to,
            overwrite=False,
            preserve_owner=True,
            durable=True,
            owner=token,
            src_at=at,
        )
    elif stat.S_ISREG(mode):
        options = CopyOptions(
            durable=True, preserve_xattrs=True, preserve_owner=True, resume_partial=False
        )
        copy_file(
            held,
            back,
            options,
            dst_dir_fd=to,
            check=check,
            overwrite=False,
            owner=token,
            src_at=at,
        )
    else:
        raise OSError(errno.EXDEV, os.strerror(errno.EXDEV), display(held))


def _give_back_all(paths: list[str], token: bytes) -> None:
    """Put back every item of ``paths`` found under its held name."""
    for path in paths:
        parent, name = os.path.split(os.fsencode(path))
        try:
            fd = os.open(parent, DIR_FLAGS)
        except OSError:
            continue
        try:
            if lexists(fd, held_name(name, token)):
                _give_back(fd, held_name(name, token), name)
        finally:
            os.close(fd)


def _give_back(fd: int, held: bytes, name: bytes) -> None:
    """`_put_back` on the way out of an error: the item goes back to its name (or beside
    it), never left under the held name; a failure to do so must not hide the error."""
    with contextlib.suppress(OSError):
        _put_back(fd, held, name, "")


def _put_back(fd: int, held: bytes, name: bytes, reason: str) -> str:
    """Rename the held ``held`` back to ``name`` (both in ``fd``), never replacing: if the
    name was taken meanwhile, to the first free ``name (N)``. Returns ``reason``, with the
    new name when it had to be one."""
    to = name
    for _ in range(100):
        try:
            rename_noreplace(held, to, src_dir_fd=fd, dst_dir_fd=fd, overwrite=False)
        except FileExistsError:
            to = unique_name(name, dst_dir_fd=fd)
            continue
        return reason if to == name else f"{reason} (as {display(to)}: the name was taken)"
    raise FileExistsError(errno.EEXIST, "no free name to put a held item back", display(held))


@job_type("undo", version=1)
class UndoJob(Job):
    """Undo job ``job`` from its item log: restore what it trashed, move back what it
    moved, remove what it copied (only files it created and nobody changed since).

    Result: ``{"job", "removed", "restored", "kept", "failed", "kept_reasons"}``: ``kept``
    counts the items left as they are (changed since, gone, a name taken, found in place by
    a resumed run), by reason in ``kept_reasons``. The job being undone must not be running
    (`JobManager.undo` checks).
    """

    job: str

    def validate(self) -> None:
        if not self.job.strip():
            raise JobSpecError("undo: no job id given")

    async def run(self, ctx: JobContext) -> dict[str, Any]:
        token = await job_token(ctx)
        counts = ctx.state.setdefault(
            "undo", {"removed": 0, "restored": 0, "kept": 0, "kept_reasons": {}}
        )
        failed = 0
        ctx.progress.set_message("undoing")
        dirs: list[ItemRecord] = []
        moved_dirs: list[tuple[ItemRecord, dict[str, Any]]] = []
        files = ctx.task_dispatcher("undo")
        feed = self._tasks(ctx, files.is_completed, dirs, moved_dirs, token)
        async with aclosing(feed) as tasks:
            async for outcome in files.dispatch_many(tasks):
                failed += _count(counts, outcome)
        ctx.progress.finalize_totals()
        failed += await _restore_dirs(ctx, moved_dirs)
        # Directories last, one depth at a time, deepest first: each empties as its
        # children go (tasks of one dispatch run in parallel).
        stage = ctx.task_dispatcher("dirs")
        todo = [r for r in dirs if not stage.is_completed(r.seq)]
        ctx.progress.add_total(items=len(todo))
        todo.sort(key=_depth)
        for _, level in itertools.groupby(todo, key=_depth):
            async for outcome in stage.dispatch_many([UndoTask(r.seq, r, token) for r in level]):
                failed += _count(counts, outcome)
        return {"job": self.job, **counts, "failed": failed}

    async def cleanup(self, ctx: JobContext, *, cancelled: bool) -> None:
        """A cancelled undo puts back what a run stopped by a crash left under a held name
        (a task takes an item aside and acts on it in one go, so only a crash leaves one;
        a resumed run finishes it instead). One lstat per record, on cancel only."""
        token = stored_token(ctx.state)
        if not cancelled or token is None:
            return
        after = 0
        while page := await ctx.job_items(self.job, after=after, limit=PAGE):
            after = page[-1].seq
            held = [r.destination for r in page if r.action in _HELD and r.destination]
            await trio.to_thread.run_sync(_give_back_all, held, token)

    async def _tasks(
        self,
        ctx: JobContext,
        done: Any,
        dirs: list[ItemRecord],
        moved_dirs: list[tuple[ItemRecord, dict[str, Any]]],
        token: bytes,
    ) -> AsyncGenerator[UndoTask, None]:
        after = 0
        while True:
            page = await ctx.job_items(self.job, after=after, limit=PAGE)
            if not page:
                return
            after = page[-1].seq
            for r in page:
                if r.action in _SOURCE_DIR and (meta := _dirmeta.parse(r.detail)) is not None:
                    moved_dirs.append((r, meta))  # (its metadata put back last: `DirTask`)
                    continue
                if r.action not in _TASKS or r.destination is None:
                    continue
                if r.action == "linked" and r.detail == "replaced":
                    continue  # never undone, as "replaced" (the old file is gone)
                if r.action in _REMOVABLE and r.detail == DIRECTORY:
                    dirs.append(r)
                elif not done(r.seq):
                    ctx.progress.add_total(items=1)
                    yield UndoTask(r.seq, r, token)


@dataclasses.dataclass(slots=True)
class DirTask(Task[str]):
    """Give a source directory of a move the metadata the move recorded (`_dirmeta`), once
    the entries that go back into it are back: the directory the undo re-created (or one
    made there since: not the one the move found) gets its mode, owner, times, extended
    attributes and ACLs; the very directory the move left in place (it held what was not
    moved) its times alone. A missing one is made first, while the move's directory is still
    where it put it (an empty directory moved comes back too; a tree deleted since is not
    rebuilt as empty directories)."""

    index: int
    record: ItemRecord
    meta: dict[str, Any]
    #: No item of the undo's counts (its result counts the entries put back, not the
    #: directories they went into); a failure is reported still.
    items = 0

    def label(self) -> str:
        return display(os.fsencode(self.record.source))

    def run(self, tc: TaskContext) -> str:
        tc.check()
        path = os.fsencode(self.record.source)
        if not os.path.lexists(path):
            if not self._moved_dir_there():
                return "absent"
            os.makedirs(path, exist_ok=True)
        try:
            fd = os.open(path, DIR_NOFOLLOW)
        except (FileNotFoundError, NotADirectoryError):
            return "absent"
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            return "absent"  # a symlink there now: not the directory
        try:
            original = _dirmeta.is_original(self.meta, os.fstat(fd))
            _dirmeta.restore(fd, self.meta, times_only=original)
        finally:
            os.close(fd)
        return "dir"

    def _moved_dir_there(self) -> bool:
        """Whether the directory the move made (or merged into) is still at its destination,
        the same inode."""
        w, dst = self.record.written, self.record.destination
        try:
            st = os.lstat(os.fsencode(dst or ""))
        except OSError:
            return False
        return stat.S_ISDIR(st.st_mode) and (w is None or st.st_ino == w.inode)


async def _restore_dirs(ctx: JobContext, moved: list[tuple[ItemRecord, dict[str, Any]]]) -> int:
    """The "dirmeta" stage: a `DirTask` per source directory the move recorded (the first
    record of each path: a later one is a resumed run's, read from the destination), one
    depth at a time, deepest first, so a directory's times (and a read-only mode) are set
    after everything below it is done. Its failures; nothing else is counted (a directory
    is not an item the undo restored)."""
    if not moved:
        return 0
    stage = ctx.task_dispatcher("dirmeta")
    firsts: dict[str, tuple[ItemRecord, dict[str, Any]]] = {}
    for r, meta in moved:
        firsts.setdefault(r.source, (r, meta))
    todo = [(r, meta) for r, meta in firsts.values() if not stage.is_completed(r.seq)]
    todo.sort(key=lambda rm: -rm[0].source.count("/"))
    failed = 0
    for _, level in itertools.groupby(todo, key=lambda rm: -rm[0].source.count("/")):
        tasks = [DirTask(r.seq, r, meta) for r, meta in level]
        async for outcome in stage.dispatch_many(tasks):
            failed += outcome.status is OutcomeStatus.FAILED
    return failed


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
