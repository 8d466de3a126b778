"""DeleteJob: remove files and trees in parallel, or move them to the trash; never follows
symlinks.

Permanent delete walks the paths and removes every non-directory in parallel tasks (tiny, so
the dispatcher batches them per thread call; stage ``files``), then the directories deepest
level first, one level at a time, each after everything inside it (stage ``dirs``). Task
indices are the walk manifest's, so a job killed half-way resumes where it was; an entry
already gone counts as removed.

A mount point met in a tree (a directory bind-mounted into a chroot) fails, and what is
below it is skipped: another filesystem's files are never deleted through it (`MountsBelow`,
from ``/proc/self/mountinfo``: a bind mount of the same filesystem has the same device).

Each removal opens the entry's parent directory without following a symlink, checks that it
is still the directory the walk listed (same device and inode; where inode numbers are not
stable, `_walk.is_expected`, the same device and the directory its root reaches without
following a symlink, `_from_root`), and removes the entry
relative to it (``unlinkat``/``rmdir`` with ``dir_fd``): a directory swapped for a symlink
after the walk cannot redirect the deletion outside the tree. During the walk neither: a
directory is listed only while it is the one its parent's listing saw (`_walk.scan_dir`),
so another tree's directories are never recorded as this one's.

``trash=True`` moves each given path to the freedesktop.org trash with `trash_path` (one task
per path: renaming a whole directory into the trash is one atomic operation). The home trash
is ``$XDG_DATA_HOME/Trash``, read when the task runs; items on other volumes go to that
volume's ``.Trash-$UID``. The time the job started trashing is stored (``trash_since``) before
the first item moves, so a run resumed after a kill settles what the killed run left:
`recover_trash` reports the items it moved without recording them (they count as trashed, with
their place in the trash) and removes the ``.trashinfo`` files of moves that never happened.
"""

from __future__ import annotations

import dataclasses
import errno
import functools
import itertools
import os
import time
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

import trio

from .._context import JobContext
from .._exceptions import JobSpecError, Skip
from .._items import Written
from .._job import Job, job_type, validating_stored
from .._task import Outcome, OutcomeStatus, Task, TaskContext
from ._entries import EntryTask, entry_report
from ._errors import MOUNT_POINT
from ._fs import DIR_FLAGS, DIR_NOFOLLOW, MountsBelow, check_overlap, check_slash, display
from ._names import job_token
from ._paths import absolute_paths
from ._trash import deletion_stamp, read_trashinfo, recover_trash, trash_path
from ._trashcan import info_of
from ._walk import Entry, RootCount, Totals, is_expected, walk_ahead

INSIDE_MOUNT = "inside a mount point: not deleted"
#: Why a root given as ``dir/`` that is no longer a directory when the job runs (queued, or
#: replaced since its submission) is not deleted: the slash names a directory, as for ``rm``.
NOT_A_DIR = "not a directory (given with a trailing '/'); not deleted"
_CHECKED = "_parjobs_paths_checked"  # instance flag: existence was checked on submit


def _moved(path: bytes) -> OSError:
    return OSError(
        None,
        "its directory was moved or replaced since it was listed; not deleted",
        display(path),
    )


def remove_entry(
    path: bytes, parent: tuple[int, int] | None, *, is_dir: bool = False, below: int = 0
) -> bool:
    """Remove one file, symlink, special file or (empty) directory, never following symlinks.

    ``parent`` is the ``(st_dev, st_ino)`` the parent directory had when it was listed; the
    removal is refused if it is now another directory. ``None`` (a path the user named) trusts
    the parent path as given. ``below``: how many of the parent's last components lie below
    the job's root (`_from_root`). Returns False if the entry was already gone.
    """
    head, name = os.path.split(path)
    flags = DIR_FLAGS if parent is None else DIR_NOFOLLOW
    try:
        fd = os.open(head or b".", flags)
    except FileNotFoundError:
        return False
    except OSError as exc:
        if parent is not None and exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise _moved(path) from exc
        raise
    try:
        if parent is not None:
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) != parent and not (
                is_expected(fd, st, parent) and _from_root(head, below, st)
            ):
                raise _moved(path)
        if is_dir:
            os.rmdir(name, dir_fd=fd)
        else:
            os.unlink(name, dir_fd=fd)
    except FileNotFoundError:
        return False
    except OSError as exc:
        if exc.errno == errno.ENOTEMPTY:
            raise OSError(
                exc.errno,
                "Directory not empty (something inside could not be deleted)",
                display(path),
            ) from exc
        raise
    finally:
        os.close(fd)
    return True


def _from_root(head: bytes, below: int, st: os.stat_result) -> bool:
    """Whether the directory ``head`` (``st``: the fstat of it, opened by its path) is the
    one its root reaches without following a symlink (the root: ``head`` less its last
    ``below`` components, a path the user named). Asked where the parent check compared
    the device only (`is_expected`: inode numbers that change): a directory *above* the
    parent swapped for a symlink to another tree of that filesystem passed it, and the
    unlink went there. Both open at once, the two are numbered alike."""
    parts = head.split(b"/")
    fd = os.open(b"/".join(parts[: len(parts) - below]) or b"/", DIR_FLAGS)
    try:
        for part in parts[len(parts) - below :]:
            child = os.open(part, DIR_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = child
        now = os.fstat(fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.ENOENT):
            return False
        raise
    finally:
        os.close(fd)
    return (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino)


@dataclasses.dataclass(slots=True)
class RemoveTask(Task[bool]):
    """Remove one walked entry (see `remove_entry`); the value says whether it was there."""

    index: int
    path: bytes
    parent: tuple[int, int] | None
    is_dir: bool = False
    below: int = 0  # the parent's components below the root (`remove_entry`)

    def label(self) -> str:
        return display(self.path)

    def run(self, tc: TaskContext) -> bool:
        tc.check()
        removed = remove_entry(self.path, self.parent, is_dir=self.is_dir, below=self.below)
        if removed:
            tc.record("deleted", self.path)
        else:
            tc.record("skipped", self.path, detail="no longer exists")
        return removed


@dataclasses.dataclass(slots=True)
class TrashTask(Task[list[str]]):
    """Move one path to the trash; the value is ``[original path, path in the trash]``.

    ``earlier`` is where an interrupted run of the job already put it (found by
    `recover_trash`): a path that no longer exists is then reported as trashed there.
    """

    index: int
    path: bytes
    earlier: tuple[bytes, bytes] | None = None
    owner: bytes | None = None  # the job's name token, carried by its temporaries

    def label(self) -> str:
        return display(self.path)

    def run(self, tc: TaskContext) -> list[str]:
        tc.check()
        try:
            os.lstat(self.path)
        except FileNotFoundError:
            if self.earlier is not None and os.path.lexists(self.earlier[1]):
                _record_trashed(tc, self.earlier[1], info_of(self.earlier[1]), self.earlier[0])
                return [os.fsdecode(self.earlier[0]), os.fsdecode(self.earlier[1])]
            raise Skip("no longer exists") from None
        moved = trash_path(self.path, owner=self.owner)
        original = _record_trashed(tc, moved.trashed_path, moved.info_path)
        return [os.fsdecode(original), os.fsdecode(moved.trashed_path)]


def _record_trashed(
    tc: TaskContext, trashed: bytes, info_path: bytes, earlier: bytes | None = None
) -> bytes:
    """Record the item this job put at ``trashed`` (its original path, from its info file):
    with its inode (``written``) and its ``DeletionDate`` (``detail``, `deletion_stamp`),
    which undo compares, so it never restores another item trashed later from the same
    path under the same name (the user emptied this one). Returns the original path.
    ``earlier``: the original path of an item an interrupted run trashed, recorded as it
    is if its info file can no longer be read (undo then checks the path only)."""
    try:
        info = read_trashinfo(info_path)
        st = os.lstat(trashed)
    except (OSError, ValueError):
        if earlier is None:
            raise
        tc.record("trashed", earlier, trashed)
        return earlier
    written = Written(st.st_size, st.st_mtime_ns, st.st_ino)
    tc.record("trashed", info.original_path, trashed, detail=deletion_stamp(info), written=written)
    return info.original_path


@dataclasses.dataclass(slots=True)
class _Dir:
    depth: int
    index: int
    path: bytes
    parent: tuple[int, int] | None
    below: int


def _resolved(norm: str) -> str:
    """Absolute path with its parent's symlinks resolved; the last component kept as is
    (a symlink named by the user is deleted as a link)."""
    head, tail = os.path.split(os.path.abspath(norm))
    if not tail:
        return "/"
    return os.path.join(os.path.realpath(head), tail)


def check_delete_path(path: str, *, exists: bool = True, cwd_ancestor_ok: bool = True) -> None:
    """Raise `JobSpecError` unless ``path`` is acceptable to delete.

    Refused, whatever the caller asks: empty or NUL-containing paths; a ``..`` component
    anywhere (``a/..`` is not ``.`` when ``a`` is a symlink: name the target itself); ``.`` as
    the last component (``.``, ``./``, ``x/.``: like ``rm``, which refuses to remove ``.``
    and ``..``); the root directory; the home directory and its ancestors. With
    ``cwd_ancestor_ok=False`` also the current directory and its ancestors (checked on
    submit, where a current directory means what the caller sees). With ``exists``, paths
    that do not exist.
    """
    if not path or "\0" in path:
        raise JobSpecError(f"delete: invalid path {path!r}")
    parts = path.split(os.sep)
    if ".." in parts:
        raise JobSpecError(f"delete: refusing {path!r}: it contains '..'; name the target itself")
    if path.rstrip(os.sep).rpartition(os.sep)[2] == ".":
        if os.path.normpath(path) == ".":
            raise JobSpecError(f"delete: refusing {path!r}: it is the current directory")
        raise JobSpecError(f"delete: refusing {path!r}: it ends in '.'; name the directory itself")
    resolved = _resolved(os.path.normpath(path))
    if resolved == "/":
        raise JobSpecError(f"delete: refusing {path!r}: it is the root directory")
    home = os.path.expanduser("~")
    if os.path.isabs(home):
        home = os.path.realpath(home)
        if _within(home, resolved):
            what = "the home directory" if home == resolved else "an ancestor of the home directory"
            raise JobSpecError(f"delete: refusing {path!r}: it is {what} {home}")
    if not cwd_ancestor_ok:
        try:
            cwd = os.path.realpath(os.getcwd())
        except OSError:  # the current directory is gone: it has no ancestors to protect
            cwd = None
        if cwd is not None and _within(cwd, resolved):
            what = (
                "the current directory"
                if cwd == resolved
                else "an ancestor of the current directory"
            )
            raise JobSpecError(
                f"delete: refusing {path!r}: it is {what} {cwd} (allowed with "
                "allow_cwd_ancestor=True; on the command line, --force-ancestor)"
            )
    if exists:
        try:
            os.lstat(path)
        except FileNotFoundError:
            raise JobSpecError(f"delete: {path!r} does not exist") from None
        except OSError as exc:
            raise JobSpecError(f"delete: cannot access {path!r}: {exc.strerror}") from None


def _within(inner: str, outer: str) -> bool:
    """True when ``inner`` is ``outer`` or below it (both absolute and resolved)."""
    return inner == outer or inner.startswith(outer.rstrip("/") + "/")


@job_type("delete", version=1)
class DeleteJob(Job):
    """Delete ``paths`` (files, symlinks, whole trees) permanently, or move them to the trash.

    Result: ``{"removed", "trashed", "failed", "skipped", "trashed_items"}``. ``removed``
    counts entries deleted (files, links and directories; an entry already gone counts too);
    ``trashed`` the paths moved to the trash and ``trashed_items`` their
    ``[original, path in the trash]`` pairs, in the order given.

    `validate` refuses the root, the home directory and its ancestors, and paths with a
    ``..`` component or ending in ``.`` (see `check_delete_path`), always. On submit only, it
    also checks that the paths exist (a stored job being resumed has removed some of them
    already) and refuses the current directory and its ancestors unless
    ``allow_cwd_ancestor`` (a resumed run's current directory is unrelated to the request).
    """

    paths: list[str]
    trash: bool = False
    allow_cwd_ancestor: bool = False

    def validate(self) -> None:
        if not self.paths:
            raise JobSpecError("delete: no paths given")
        check = not validating_stored() and not self.__dict__.get(_CHECKED, False)
        for path in self.paths:
            if check:  # (a resumed job's path may be gone, or in the trash)
                check_slash("delete", path, link_ok=self.trash)
            check_delete_path(
                path, exists=check, cwd_ancestor_ok=self.allow_cwd_ancestor or not check
            )
        if check:
            check_overlap("trash" if self.trash else "delete", self.paths)
        # (after the checks, which name a path as given: "." is the current directory)
        self.paths = absolute_paths("trash" if self.trash else "delete", self.paths)
        self.__dict__[_CHECKED] = True

    async def run(self, ctx: JobContext) -> dict[str, Any]:
        tally = _Tally()
        if self.trash:
            await self._trash(ctx, tally)
        else:
            await self._delete(ctx, tally)
        return {
            "removed": tally.removed,
            "trashed": len(tally.trashed),
            "failed": tally.failed,
            "skipped": tally.skipped,
            "trashed_items": [tally.trashed[i] for i in sorted(tally.trashed)],
        }

    async def _trash(self, ctx: JobContext, tally: _Tally) -> None:
        ctx.progress.set_message("moving to trash")
        ctx.progress.set_total(items=len(self.paths))
        dispatcher = ctx.task_dispatcher("trash", keep_results=True)
        paths = [os.fsencode(p) for p in self.paths]
        earlier: dict[bytes, tuple[bytes, bytes]] = {}
        token = await job_token(ctx)
        since = ctx.state.get("trash_since")
        if not isinstance(since, int | float):
            # Durable before the first item moves: a resumed run knows which trash entries
            # this job may have made without recording them.
            ctx.state["trash_since"] = time.time()
            await ctx.checkpoint(force=True)
        else:
            recover = functools.partial(recover_trash, paths, since=float(since), owner=token)
            earlier = await trio.to_thread.run_sync(recover)
        tasks = (TrashTask(i, p, earlier.get(p), token) for i, p in enumerate(paths))
        async for outcome in dispatcher.dispatch_many(tasks, include_resumed=True):
            tally.add(outcome)
            await ctx.checkpoint()

    async def _delete(self, ctx: JobContext, tally: _Tally) -> None:
        ctx.progress.set_message("deleting files")
        dirs: list[_Dir] = []
        files = ctx.task_dispatcher("files")
        async with aclosing(self._file_tasks(ctx, dirs)) as tasks:
            async for outcome in files.dispatch_many(tasks, include_resumed=True):
                tally.add(outcome)
                await ctx.checkpoint()
        ctx.progress.set_message("deleting directories")
        dispatcher = ctx.task_dispatcher("dirs")
        dirs.sort(key=lambda d: (-d.depth, d.index))
        for _, level in itertools.groupby(dirs, key=lambda d: d.depth):
            tasks_ = [
                RemoveTask(d.index, d.path, d.parent, is_dir=True, below=d.below) for d in level
            ]
            async for outcome in dispatcher.dispatch_many(tasks_, include_resumed=True):
                tally.add(outcome)
                await ctx.checkpoint()

    async def _file_tasks(
        self, ctx: JobContext, dirs: list[_Dir]
    ) -> AsyncGenerator[Task[Any], None]:
        """Walk (ahead, counting totals): yield a removal per non-directory; collect the
        directories for later."""
        listed: dict[tuple[int, bytes], tuple[int, int]] = {}  # (root, rel) -> (dev, ino)
        mounts = await trio.to_thread.run_sync(MountsBelow, self.paths)

        def count(batch: list[Entry]) -> Totals:
            return len(batch), 0

        def estimate(roots: list[RootCount]) -> Totals:
            return sum(r.entries for r in roots), 0

        # (``link/`` was refused on submission, `check_slash`; ``dir/`` is ``dir``, and
        # must still be a directory when walked: `NOT_A_DIR`.)
        roots = [os.path.normpath(p) for p in self.paths]
        slashed = {i for i, p in enumerate(self.paths) if p.endswith(os.sep)}
        walked = walk_ahead(ctx, roots, count, estimate=estimate, stages=("files", "dirs"))
        async with aclosing(walked) as batches:
            async for batch in batches:
                for entry in batch:
                    if met := mounts.meet(entry.root, entry.rel):
                        inside = met == "inside"
                        yield EntryTask(
                            entry.index,
                            entry.path,
                            INSIDE_MOUNT if inside else MOUNT_POINT,
                            skip=inside,
                        )
                        continue
                    parent_rel, slash, _ = entry.rel.rpartition(b"/")
                    parent = listed.get((entry.root, parent_rel)) if slash else None
                    if not slash and entry.root in slashed and entry.kind not in ("dir", "error"):
                        yield EntryTask(entry.index, entry.path, NOT_A_DIR, skip=False)
                        continue
                    below = parent_rel.count(b"/")  # (of the parent, below the root)
                    if entry.kind == "dir":
                        listed[(entry.root, entry.rel)] = (entry.dev, entry.ino)
                        depth = os.path.abspath(entry.path).count(b"/")
                        dirs.append(_Dir(depth, entry.index, entry.path, parent, below))
                    elif entry.kind == "error":
                        yield entry_report(entry, "deleted")
                    else:
                        yield RemoveTask(entry.index, entry.path, parent, below=below)


class _Tally:
    """Counts of a delete job's outcomes, this run and (resumed) earlier ones."""

    def __init__(self) -> None:
        self.removed = self.failed = self.skipped = 0
        self.trashed: dict[int, list[str]] = {}

    def add(self, outcome: Outcome[Any]) -> None:
        if outcome.status is OutcomeStatus.FAILED:
            self.failed += 1
        elif outcome.status is OutcomeStatus.CANCELLED:
            return
        elif isinstance(outcome.task, TrashTask):
            if isinstance(outcome.value, list):  # trashed now or in an earlier run
                self.trashed[outcome.index] = outcome.value
            else:
                self.skipped += 1
        elif outcome.status is OutcomeStatus.SKIPPED and not outcome.resumed:
            self.skipped += 1
        else:  # done now or in an earlier run
            self.removed += 1


__all__ = ["DeleteJob", "RemoveTask", "TrashTask", "check_delete_path", "remove_entry"]
