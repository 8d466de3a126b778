"""Move files and trees into a directory as a parallel, resumable job: `MoveJob` (``mv``).

A move runs in two stages, each item with a stable index:

1. ``roots``: one task per top-level source. On the destination's filesystem it is one
   atomic, no-clobber ``rename(2)``; a target that exists gets the conflict policy, except that
   a directory meeting a directory merges (stage 2, renaming file by file). A source on another
   filesystem goes to stage 2 to be copied. These decisions are stored with the completions,
   so a resumed run walks exactly the same roots.
2. ``move``: the walk of the roots stage 1 handed over. Each file is renamed into place, or,
   across filesystems, copied to a temporary, verified, renamed into place, and only then
   unlinked at the source. So at every instant each file exists in full at the source or the
   destination (or both, between the rename and the unlink): never in neither.

Then destination directories get their sources' modes and times, and source directories left
empty are removed, deepest first; each source directory's metadata is recorded for an undo
(`_dirmeta`). A resumed run that finds a file at the destination but no
longer at the source counts it as moved; one that finds it in both places compares contents
before unlinking the source.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import stat
from collections.abc import AsyncGenerator, Callable, Sequence
from contextlib import aclosing
from typing import Any, Literal, cast

import trio

from .._context import JobContext
from .._exceptions import Interrupted, Skip
from .._items import Identity, ItemRow
from .._job import Job, job_type, validating_stored
from .._task import RUN_ALONE, Members, OutcomeStatus, Task, TaskContext, spread_rows
from .._workqueue import HEAVY_BYTES
from . import _dirmeta, _smallfiles, _transfer
from ._copyfile import CopyOptions, CopyResult
from ._desttree import NOT_A_DIR
from ._entries import EntryTask
from ._errors import MOVE_MOUNT_POINT, CopyError, DirConflictError, WalkError
from ._finish import FinishDirs
from ._fs import (
    DIR_FLAGS,
    At,
    MountsBelow,
    changed_error,
    check_overlap,
    check_replaceable,
    check_same_file,
    ctime_change,
    display,
    lexists,
    rename_noreplace,
    source_change,
    unique_name,
)
from ._partials import sweep_temporaries
from ._srctree import lstat_at, named, unlink_at
from ._transfer import (
    CopyDone,
    CopyPlan,
    IntoDestination,
    Landing,
    Tally,
    TransferItem,
    bundled,
    check_paths,
    copy_group,
    covered,
    item_error,
    landed_rows,
    link_first,
    open_plan,
    record_landing,
    resolve_conflict,
    run_links,
    special_reason,
    symlink_put,
)
from ._walk import Entry, HardLinks, RootCount, Totals, walk_ahead

#: Why what is inside a mount point met by a move across filesystems is not moved (`_mounted`).
INSIDE_MOUNT = "inside a mount point: not moved"

MovePolicy = Literal["skip", "overwrite", "rename", "update", "fail"]


def _sync_parent(path: bytes) -> None:
    fd = os.open(os.path.dirname(path) or b".", DIR_FLAGS)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class MoveRoot(Task[CopyDone]):
    """Stage 1: move one top-level source by a single rename, or hand it to stage 2 as
    "merge" (a directory onto a directory) or "copy" (another filesystem)."""

    def __init__(self, index: int, source: str, plan: CopyPlan) -> None:
        self.index = index
        self.path = os.fsencode(os.path.abspath(source))
        self.plan = plan
        self.name = plan.names[index]  # its name in the destination

    def label(self) -> str:
        return display(self.path)

    def run(self, tc: TaskContext) -> CopyDone:
        try:
            return self._run(tc)
        except OSError as exc:
            item_error(exc, self.plan.policy)
            raise

    def _run(self, tc: TaskContext) -> CopyDone:
        plan, src, base = self.plan, self.path, self.name
        root_fd = plan.tree.acquire(b"")
        try:
            try:
                src_st = os.lstat(src)
            except FileNotFoundError:
                if plan.resumed and lexists(root_fd, base):
                    return CopyDone("renamed")  # by an earlier run
                raise
            if src_st.st_dev != plan.tree.dev:
                return CopyDone("copy")
            try:
                rename_noreplace(src, base, dst_dir_fd=root_fd, overwrite=False)
            except FileExistsError:
                return self._conflict(tc, src_st, root_fd, base)
            except OSError as exc:
                if exc.errno == errno.EXDEV:  # e.g. a bind mount of another filesystem
                    return CopyDone("copy")
                raise
            self._synced()
            record_landing(tc, "moved", src, plan.tree, b"", root_fd, Landing(base))
            return CopyDone("renamed")
        finally:
            plan.tree.release(b"")

    def _conflict(
        self, tc: TaskContext, src_st: os.stat_result, root_fd: int, base: bytes
    ) -> CopyDone:
        plan, src = self.plan, self.path
        dst_st = os.stat(base, dir_fd=root_fd, follow_symlinks=False)
        landing = Landing(base)
        if stat.S_ISDIR(src_st.st_mode):
            if stat.S_ISDIR(dst_st.st_mode):
                return CopyDone("merge")
            if plan.policy == "overwrite":
                check_replaceable(root_fd, base, plan.tree.display(base))
                os.unlink(base, dir_fd=root_fd)
                rename_noreplace(src, base, dst_dir_fd=root_fd, overwrite=False)
                landing.replaced = True
            elif plan.policy == "rename":
                landing.leaf = unique_name(base, dst_dir_fd=root_fd)
                rename_noreplace(src, landing.leaf, dst_dir_fd=root_fd, overwrite=False)
            else:
                err = DirConflictError(f"{NOT_A_DIR}: {plan.tree.display(base)}")
                err.filename = plan.tree.display(base)
                raise err
        else:

            def put(leaf: bytes, overwrite: bool) -> None:
                rename_noreplace(src, leaf, dst_dir_fd=root_fd, overwrite=overwrite, moving=True)

            resolve_conflict(
                plan,
                tc,
                src,
                src_st,
                dir_fd=root_fd,
                rel=base,
                put=landing.wrap(put),
                resumed=False,
            )
        self._synced()
        record_landing(tc, "moved", src, plan.tree, b"", root_fd, landing)
        return CopyDone("renamed")

    def _synced(self) -> None:
        if self.plan.options.durable:
            os.fsync(self.plan.tree.acquire(b""))
            self.plan.tree.release(b"")
            _sync_parent(self.path)


class MoveItem(TransferItem):
    """Stage 2: move one walked entry to ``destination/<entry.rel>``, by rename (``merge``
    roots; falls back to copying on EXDEV) or by copy, verify, then unlink (``copy`` roots).

    Queued small files moved by copying are grouped (`run_group`): copied, compared and
    synced by one call into C, then unlinked at the source by another."""

    group_size = 64
    #: The bytes a copy moves (0 for a rename): a plain attribute, as the pool reads it
    #: several times per task (as `CopyItem.weight`).
    weight = 0

    def __init__(
        self, entry: Entry, plan: CopyPlan, by_copy: bool, grouped: bool | None = None
    ) -> None:
        """``grouped``: whether the entry's directory lets it take the group path and
        ``plan.move_groups`` holds; None reads the plan here (`MoveJob._items` reads it once
        per batch, as a copy's walk does, and passes it positionally, as `CopyItem`'s)."""
        self.index = entry.index
        self.entry = entry
        self.plan = plan
        self.by_copy = by_copy
        if by_copy:
            self.weight = entry.size
        if grouped is None:
            grouped = plan.move_groups
        if not (by_copy and entry.kind == "file" and grouped):
            self.group_size = 1  # nothing for the group path: the pool treats it as plain

    @classmethod
    def run_group(cls, tasks: Sequence[Task[Any]], tcs: Sequence[TaskContext]) -> list[Any]:
        """`run_members`, each done task given its item row and bytes (the pool's groups)."""
        values, rows, _ = cls.run_members(tasks, tcs[0])
        spread_rows(values, rows, tcs)
        return values

    @classmethod
    def run_members(cls, tasks: Sequence[Task[Any]], tc: TaskContext) -> Members:
        """Move the group's plain small files across filesystems: one `copy_group` call
        puts their copies in place, each compared with its source (``verify``) and fsynced
        before its rename, each directory synced once, and then, in one C call, checks
        each copy still holds its name and unlinks its source if it is still the file
        copied. The rest, and any file the group path did not finish, runs alone (a copy
        that fails its verification never had its name: C removed its temporary).

        Only files with nothing more to carry than mode and times are taken (owned by this
        process' user and group, in a directory without the set-group-id bit, no extended
        attributes), so a copy in place is never briefly owned or labelled otherwise than
        its source."""
        items = cast(Sequence[MoveItem], tasks)
        plan = items[0].plan
        entries = [item.entry if item.plan is plan and item.by_copy else None for item in items]
        return cls.run_entries(plan, entries, tc)

    @classmethod
    def run_entries(
        cls, plan: CopyPlan, walked: Sequence[Entry | None], tc: TaskContext
    ) -> Members:
        """`run_members` for the entries of files moved by copying (None: not for the
        group path): what a bundle of entries runs (`EntryBundle`), with no task a file."""
        out: list[Any] = [RUN_ALONE] * len(walked)
        rows: list[ItemRow] = []
        if not plan.move_groups:
            return out, rows, 0
        # C checks each owner and attributes, and says what it copied of each source (what
        # it unlinks: not what the walk saw, as a walk replayed from the manifest may hold
        # device or inode numbers a remount changed).
        seen: list[_smallfiles.SourceId | None] = [None] * len(walked)
        unlinked: list[int | None] = [None] * len(walked)
        # A copy that differs from its source never takes its name: moved alone, which
        # reports a real mismatch. A source whose copy lost its name since (another file
        # renamed over it), or that is not the file C copied any more (changed since, in
        # place or replaced by a rename: its inode too), is kept and its entry runs alone
        # (finding the name taken; or failing as changed, with the reason noted here), as
        # does one that could not be unlinked (it finds its copy in place).
        copies = copy_group(
            plan,
            walked,
            compare=plan.options.verify,
            plain=True,
            sources=seen,
            sync=True,
            unlinked=unlinked,
        )
        for i, err in enumerate(unlinked):
            if err != 0:  # not copied (None), or its source kept
                if copies[i] is not None:  # in place: its own when it runs alone
                    plan.landed.add(cast(Entry, walked[i]).index)
                copies[i] = None
                if err == _smallfiles.CHANGED:
                    _keep(plan, cast(Entry, walked[i]), cast(_smallfiles.SourceId, seen[i]))
        nbytes = landed_rows("moved", tc.stage, plan.tree, walked, copies, out, rows, kind="copied")
        return out, rows, nbytes

    def _run(self, tc: TaskContext) -> CopyDone:
        entry, tree = self.entry, self.plan.tree
        try:
            if entry.kind == "dir":
                tree.acquire(entry.rel)  # created (or merged into) now, removed at the source last
                tree.release(entry.rel)
                return CopyDone("dir")
            if entry.kind == "error":
                raise WalkError(f"cannot read: {entry.error}")
            parent, _, name = entry.rel.rpartition(b"/")
            dir_fd = tree.acquire(parent)
            try:
                return self._move(tc, dir_fd, name)
            finally:
                tree.release(parent)
        except OSError as exc:
            item_error(exc, self.plan.policy)
            raise

    def _move(self, tc: TaskContext, dir_fd: int, name: bytes) -> CopyDone:
        src = self.entry.path
        if self.plan.kept and (kept := self.plan.kept.pop(self.index, None)) is not None:
            raise changed_error(src, kept, "copy")  # its group copied it, then kept it
        with contextlib.ExitStack() as stack:
            try:
                source = stack.enter_context(self.plan.src_dirs.at(src, self.entry.rel, "moved"))
                src_st = lstat_at(source, src)
            except FileNotFoundError:  # (it, or a directory above it)
                if self.plan.reached(self.index) and lexists(dir_fd, name):
                    # Moved by a run stopped before its checkpoint: counted as it was moved.
                    self._record(tc, dir_fd, Landing(name))
                    return CopyDone(self._moved_as(dir_fd, name))
                raise
            if not self.by_copy:
                try:
                    return self._rename(tc, src_st, source, dir_fd, name)
                except OSError as exc:
                    if exc.errno != errno.EXDEV:
                        raise
            # Across filesystems: a copy, by a temporary, checked as a copy's is
            # (`DestTree.sealed_first`; a rename into it adds a name only: allowed).
            if stat.S_ISREG(src_st.st_mode):
                return self._copy_file(tc, src_st, source, dir_fd, name)
            if stat.S_ISLNK(src_st.st_mode):
                return self._copy_symlink(tc, src_st, source, dir_fd, name)
        raise Skip(special_reason(src_st.st_mode, "moved across filesystems"))

    def _moved_as(self, dir_fd: int, name: bytes) -> str:
        """How an earlier run moved this entry, now in place as ``name`` (its source gone),
        for the tally: as a fresh move of it would say."""
        return "copied" if self.by_copy else "renamed"

    def _rename(
        self, tc: TaskContext, src_st: os.stat_result, source: At, dir_fd: int, name: bytes
    ) -> CopyDone:
        """Rename the source (``source``: its directory's fd and its name) into place."""
        src_fd, src_name = source

        def put(leaf: bytes, overwrite: bool) -> None:
            rename_noreplace(
                src_name,
                leaf,
                src_dir_fd=src_fd,
                dst_dir_fd=dir_fd,
                overwrite=overwrite,
                moving=True,
            )

        overwrite = self.plan.policy == "overwrite"
        landing = Landing(name, overwrite and lexists(dir_fd, name))
        try:
            with named(self.entry.path, src_name):  # (rename(2) names its source)
                put(name, overwrite)
        except FileExistsError:
            # A rename is atomic, so a source still here was not moved by an earlier run.
            self._settle(tc, src_st, dir_fd, landing.wrap(put), maybe_ours=False, src_at=source)
        if self.plan.options.durable:
            os.fsync(dir_fd)
            os.fsync(src_fd)  # the directory the name left (not one a symlink now points to)
        self._record(tc, dir_fd, landing)
        return CopyDone("renamed")

    def _record(self, tc: TaskContext, dir_fd: int, landing: Landing) -> None:
        parent = self.entry.rel.rpartition(b"/")[0]
        record_landing(tc, "moved", self.entry.path, self.plan.tree, parent, dir_fd, landing)

    def _copy_file(
        self, tc: TaskContext, src_st: os.stat_result, source: At, dir_fd: int, name: bytes
    ) -> CopyDone:
        plan, src = self.plan, self.entry.path
        overwrite = plan.policy == "overwrite"
        # The leaf the copy goes to (a conflict policy may rename it).
        landing = Landing(name, overwrite and lexists(dir_fd, name))

        def write(leaf: bytes, overwrite: bool) -> CopyResult:
            return plan.copy(src, leaf, dir_fd, tc, overwrite, src_at=source)

        parent = self.entry.rel.rpartition(b"/")[0]
        put = plan.tree.guarded(parent, write)  # (checked before any temporary)
        try:
            plan.tree.sealed_first(parent, dir_fd, name)
            res = put(name, overwrite)
        except FileExistsError:
            got = self._settle(tc, src_st, dir_fd, landing.wrap(put), src_at=source)
            if got is None:  # an earlier run copied it and was stopped before the unlink
                _sync_copy(dir_fd, name)
                check_same_file(src, src_st, lstat_at(source, src))  # still the file compared
                tc.add_bytes(src_st.st_size)
                unlink_at(source, src)
                self._record(tc, dir_fd, landing)
                plan.landed.discard(self.index)
                return CopyDone("copied")
            res = got
        plan.landed.add(self.index)  # (a retry after a refused unlink finds it its own)
        if not plan.options.durable:  # durable copies are already on disk
            _sync_copy(dir_fd, landing.leaf)
        # Only now: the destination is complete, verified and on disk; and only the file
        # copied (one saved anew meanwhile, or renamed over it, stays, and fails: as the
        # group path keeps it).
        check_same_file(src, src_st, lstat_at(source, src))
        unlink_at(source, src)
        self._record(tc, dir_fd, landing)
        plan.landed.discard(self.index)  # (kept only for a retry: a set of the run's size)
        return CopyDone("copied", res.bytes_copied, res.bytes_reused)

    def _copy_symlink(
        self, tc: TaskContext, src_st: os.stat_result, source: At, dir_fd: int, name: bytes
    ) -> CopyDone:
        plan, src = self.plan, self.entry.path
        made = symlink_put(plan, src, dir_fd, preserve_owner=False, src_at=source)
        parent = self.entry.rel.rpartition(b"/")[0]
        put = plan.tree.guarded(parent, made)
        overwrite = plan.policy == "overwrite"
        landing = Landing(name, overwrite and lexists(dir_fd, name))
        try:
            plan.tree.sealed_first(parent, dir_fd, name)
            put(name, overwrite)
        except FileExistsError:
            if self._settle(tc, src_st, dir_fd, landing.wrap(put), src_at=source) is None:
                check_same_file(src, src_st, lstat_at(source, src))  # still the link compared
                unlink_at(source, src)
                self._record(tc, dir_fd, landing)
                plan.landed.discard(self.index)
                return CopyDone("copied")
        plan.landed.add(self.index)
        check_same_file(src, src_st, lstat_at(source, src))  # not a link made anew since
        unlink_at(source, src)
        self._record(tc, dir_fd, landing)
        plan.landed.discard(self.index)
        return CopyDone("copied")


class MoveLinkItem(MoveItem):
    """A later name of a file with several hard links in a tree moved across filesystems: a
    hard link to where its ``first`` name was moved (`link_first`), made in the "links"
    stage, after the move stage; then its source name is removed. Moved by copying, as any
    other file, when it cannot be linked. (On one filesystem a rename keeps links as they
    are.)"""

    group_size = 1

    def __init__(
        self, entry: Entry, first: Entry, plan: CopyPlan, made: Identity | None = None
    ) -> None:
        super().__init__(entry, plan, by_copy=True)
        self.first = first
        self.made = made  # where this job moved ``first`` (`firsts_made`)

    def _moved_as(self, dir_fd: int, name: bytes) -> str:
        """Linked (a name of a file with other links), else copied (it could not be)."""
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        return "linked" if stat.S_ISREG(st.st_mode) and st.st_nlink > 1 else "copied"

    def _copy_file(
        self, tc: TaskContext, src_st: os.stat_result, source: At, dir_fd: int, name: bytes
    ) -> CopyDone:
        src = self.entry.path
        got = link_first(self, tc, dir_fd, self.first, self.made)
        if got is None:
            return super()._copy_file(tc, src_st, source, dir_fd, name)
        landing = got[0]  # (in place already, too, when a run stopped before its checkpoint)
        os.fsync(dir_fd)  # the new name is on disk before the old one goes
        check_same_file(src, src_st, lstat_at(source, src))  # still the file linked
        unlink_at(source, src)
        tc.add_bytes(self.entry.size)  # in place: its bytes count as finished
        self._record(tc, dir_fd, landing)
        return CopyDone("linked")


def _sync_copy(dir_fd: int, name: bytes) -> None:
    """fsync a copied file and its directory before its source is removed: even without
    ``durable``, a move never trades the only copy for one still in the page cache."""
    _sync_file(dir_fd, name)
    os.fsync(dir_fd)


def _sync_file(dir_fd: int, name: bytes) -> None:
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _keep(plan: CopyPlan, entry: Entry, copied: _smallfiles.SourceId) -> None:
    """Note why the group kept ``entry``'s source (not the file ``copied`` any more: size,
    mtime_ns, device, inode, ctime as C copied it), for its item, run alone next, to fail with
    that reason; none when it cannot tell (the item then finds its copy in place as a
    conflict)."""
    try:
        now = os.lstat(entry.path)
    except OSError:
        return
    size, mtime_ns, dev, ino, ctime_ns, nlink = copied
    detail = source_change((dev, ino, size, mtime_ns), now) or ctime_change(ctime_ns, nlink, now)
    if detail is not None:
        plan.kept[entry.index] = detail


def _mounted(entry: Entry, inside: bool) -> EntryTask:
    """A mount point met by a move across filesystems fails, what is below it is skipped,
    as a delete does (`MountsBelow`): copied then removed through the mount, the mounted
    filesystem's files left the place they were mounted from."""
    if inside:
        return EntryTask(entry.index, entry.path, INSIDE_MOUNT, skip=True)
    return EntryTask(entry.index, entry.path, MOVE_MOUNT_POINT, skip=False)


def _grouped_item(plan: CopyPlan, entry: Entry) -> MoveItem:
    """The task of a bundled file (`EntryBundle.make`): one it hands back."""
    return MoveItem(entry, plan, True, True)


def _run_entries(plan: CopyPlan, entries: list[Entry], tc: TaskContext) -> Members:
    """A bundle's chunk (`EntryBundle.run_entries`), looked up on the class when it runs."""
    return MoveItem.run_entries(plan, entries, tc)


def _remove_empty_dirs(
    plan: CopyPlan, dirs: list[Entry], removed: list[int], all_moved: bool
) -> None:
    """Remove the source directories left empty, deepest first, each while it is the one
    walked (`SourceDirs.rmdir`); others stay: they hold what was skipped or failed, or are
    not the directory the walk listed.

    ``all_moved``: nothing was skipped and nothing failed, so a directory still holding
    something holds entries another program put there after the walk listed it (a file
    saved, a directory made, while the move ran): never moved. They stay where they are
    (``mv`` across filesystems removes the tree it copied, and them with it), and the step
    fails naming the directories, so the job does not report the tree moved."""
    left: list[bytes] = []  # the directories holding what the walk never listed
    # (root, rel) of the directories with one kept below them, for any reason, filled child
    # to parent (deepest first): a set, not a scan of those kept per directory (a skipping
    # move keeps every directory: quadratic, 20 s for 8,000).
    above: set[tuple[int, bytes]] = set()
    for entry in sorted(dirs, key=lambda d: -d.rel.count(b"/")):
        try:
            plan.src_dirs.rmdir(entry.path, entry.rel, entry.ino)
        except OSError as exc:
            if not all_moved:
                continue
            # (Not one above a directory kept for another reason, such as a mount point
            # (EBUSY) or one not the directory walked: that explains it.)
            if (entry.root, entry.rel) not in above and exc.errno in (
                errno.ENOTEMPTY,
                errno.EEXIST,
            ):
                left.append(entry.path)
            above.add((entry.root, entry.rel.rpartition(b"/")[0]))
        else:
            removed[0] += 1
    if all_moved and left:
        raise CopyError(
            f"{len(left)} source directories were not removed: they hold entries added "
            f"after the move listed them, not moved (move them again); first: "
            f"{display(min(left))}"
        )


def _record_dirs(ctx: JobContext, finish: FinishDirs) -> None:
    """Record each walked source directory's metadata as the finishing step read it (a
    `_dirmeta.ACTION` record, `_dirmeta.PREFIX` its detail), for an undo to give it back to the
    directory it makes there; once per job (with ``state``, in one checkpoint): a run
    resumed after it found the sources gone."""
    if ctx.state.get("dirs_recorded"):
        return
    for src, dst, meta, written in finish.found:
        ctx.record_item(_dirmeta.ACTION, src, dst, detail=_dirmeta.detail(meta), written=written)
    ctx.state["dirs_recorded"] = True


@job_type("move", version=2)
class MoveJob(IntoDestination, Job):
    """Move files and directory trees, like ``mv``: into ``destination`` (created if
    missing) when it is a directory, for several sources or a ``destination`` ending with
    ``/``; otherwise the one source becomes ``destination`` (``mv a.txt b.txt``). ``into``
    as for `CopyJob`: decided at submission when None, stored with the spec.

    ``on_conflict`` as for `CopyJob` (without "ask"); under "skip" the source stays where it
    is. With ``verify`` (default) a file copied across filesystems is re-read and compared
    before its source is removed; ``durable`` fsyncs files and directories.

    Across filesystems, files hard-linked to each other in a moved tree stay linked, as with
    ``mv``: the first name is copied, the others become links to that copy (`MoveLinkItem`).

    The result: ``moved`` (files, symlinks and top-level items), of which ``renamed``,
    ``copied`` and ``linked`` say how, ``dirs`` (created or merged), ``skipped``,
    ``failed``, ``bytes`` copied, ``bytes_reused``, ``skipped_reasons`` and
    ``source_dirs_removed``.
    """

    sources: list[str]
    destination: str
    on_conflict: MovePolicy = "fail"
    verify: bool = True
    durable: bool = False
    into: bool | None = None

    def validate(self) -> None:
        self._absolute("move")
        self._decide_into()
        self._check_contents("move")
        check_paths(
            "move", self.sources, self.destination, into=self.into is not False, moved_ok=True
        )
        if not validating_stored():  # (a job stored before this check keeps running)
            check_overlap("move", self.sources)

    def _plan(self, resumed: bool, identity: Any) -> CopyPlan:
        options = CopyOptions(
            chunk_size=_transfer.CHUNK_SIZE,  # read now: a test may have set it
            durable=self.durable,
            preserve_xattrs=True,
            preserve_owner=True,
            verify=self.verify,
        )
        return self._make_plan(
            resumed, identity, options, kind="move", policy=self.on_conflict, follow=False, ask=None
        )

    async def run(self, ctx: JobContext) -> dict[str, Any]:
        plan = await open_plan(ctx, self._plan)
        keys = ("moved", "renamed", "copied", "linked", "dirs", "skipped", "bytes", "bytes_reused")
        # What a done item of each kind adds to ("moved" alone for the rest).
        kinds = {
            "dir": ("dirs",),
            "renamed": ("moved", "renamed"),
            "copied": ("moved", "copied"),
            "linked": ("moved", "linked"),
        }
        tally = Tally(ctx.state, (*keys, "source_dirs_removed"), kinds, ("moved",))
        progress = ctx.progress
        # The roots and the finishing step; the walk adds the rest.
        progress.set_total(items=len(self.sources) + 1, bytes=0, final=False)
        progress.set_message("moving")
        try:
            walked: dict[int, bool] = {}  # source index -> moved by copying
            roots = ctx.task_dispatcher("roots", keep_results=True)
            tasks = [MoveRoot(i, s, plan) for i, s in enumerate(self.sources)]
            async for outcome in roots.dispatch_many(tasks, include_resumed=True):
                what = outcome.value[0] if outcome.value is not None else None
                if outcome.status is OutcomeStatus.DONE and what in ("merge", "copy"):
                    pass  # not an item of its own: its files are
                elif not outcome.resumed:
                    tally.count(outcome)
                if what in ("merge", "copy"):
                    walked[outcome.index] = what == "copy"
            order = sorted(walked)
            ctx.state["walked"] = [self.sources[i] for i in order]
            await ctx.checkpoint(force=True)  # the decisions are durable before stage 2
            by_copy = [walked[i] for i in order]
            dirs: list[Entry] = []
            links: list[tuple[Entry, Entry]] = []
            dispatcher = ctx.task_dispatcher("move")
            bundle = 0 if ctx.clustered and plan.portable else dispatcher.workers  # (as a copy)
            # Nothing completed in the stage: no done-check per entry (as a copy).
            done = dispatcher.is_completed if dispatcher.completed_count else None
            first_name = dispatcher.keep_written
            feed = self._items(
                ctx, plan, order, by_copy, dirs, links, done, first_name=first_name, bundle=bundle
            )
            async with aclosing(feed) as items:
                async for outcome in dispatcher.dispatch_many(items):
                    tally.count(outcome)  # (the manager checkpoints in the background)
            if links:  # after the move stage: every first name is in place

                def link(e: Entry, f: Entry, made: Identity | None) -> MoveLinkItem:
                    return MoveLinkItem(e, f, plan, made)

                await run_links(ctx, dispatcher, links, link, tally.count)
            progress.finalize_totals()  # (the walk did, if there was one)
            progress.set_message("finishing")
            removed = [0]
            sweep = None  # only a resumed run or one with failures can have left temporaries
            if ctx.resumed or tally.failed:
                names = [plan.names[i] for i in order]
                sweep = functools.partial(sweep_temporaries, plan.tree.root, names, plan.token)
            finish = FinishDirs(
                ctx.run_number,
                plan,
                dirs,
                sweep,
                lambda tc: _remove_empty_dirs(
                    plan, dirs, removed, not tally.failed and not tally.data["skipped"]
                ),
                walked_mtime=True,
            )
            async for outcome in ctx.task_dispatcher("finish").dispatch_many([finish]):
                tally.record(outcome)
            _record_dirs(ctx, finish)
            tally.add("source_dirs_removed", removed[0])
            ctx.state["swept_run"] = ctx.run_number
        finally:
            plan.tree.close()
            plan.src_dirs.close()
        return tally.result()

    async def _items(
        self,
        ctx: JobContext,
        plan: CopyPlan,
        order: list[int],
        by_copy: list[bool],
        dirs: list[Entry],
        links: list[tuple[Entry, Entry]],
        done: Callable[[int], bool] | None,
        *,
        first_name: Callable[[int], object],
        bundle: int = 0,
    ) -> AsyncGenerator[Task[Any], None]:
        """One `MoveItem` per walked entry, except those ``done`` in an earlier run (None:
        nothing is done yet; the group path is decided once per batch), small files in
        bundles of their entries with ``bundle`` (as for a copy); across filesystems, a
        file's later names (``(entry, first name)``) go to ``links`` instead, for the
        "links" stage, and each first name's index to ``first_name`` (as for a copy)."""
        if not order:
            return
        hard_links = HardLinks(first_name)
        made_before: set[bytes] = set()  # as `CopyJob._items`: their files go as plain tasks
        roots = [plan.roots[i] for i in order]
        names = [plan.names[i] for i in order]

        def count(batch: list[Entry]) -> Totals:  # bytes only of what is moved by copying
            return len(batch), sum(e.size for e in batch if by_copy[e.root])

        def estimate(counts: list[RootCount]) -> Totals:
            nbytes = sum(
                c.file_bytes for c, copying in zip(counts, by_copy, strict=True) if copying
            )
            return sum(c.entries for c in counts), nbytes

        # (a merge's renames carry a mount below a directory, as `mv`; a copy would go through)
        mounts = await trio.to_thread.run_sync(MountsBelow, roots) if any(by_copy) else None
        try:
            walked = walk_ahead(
                ctx,
                roots,
                count,
                names,
                estimate=estimate,
                stages=("move", "links"),
                durable=plan.options.durable,
            )
            async with aclosing(walked) as batches:
                async for batch in batches:
                    todo: list[Task[Any] | Entry] = []
                    groups = plan.move_groups  # per batch: a group may turn it off
                    for entry in batch:
                        if (
                            mounts is not None
                            and by_copy[entry.root]
                            and (met := mounts.meet(entry.root, entry.rel))
                        ):
                            if done is None or not done(entry.index):
                                todo.append(_mounted(entry, met == "inside"))
                            continue
                        if entry.kind == "dir":
                            dirs.append(entry)  # finished again, done or not
                            if done is not None and done(entry.index):
                                made_before.add(entry.rel)
                                continue
                        elif (
                            entry.nlink > 1  # (most files: no look-up, as in a copy's walk)
                            and by_copy[entry.root]
                            and (first := hard_links.first_of(entry))
                        ):
                            if done is None or not done(entry.index):  # (by an older version)
                                links.append((entry, first))
                            continue
                        if done is None or not done(entry.index):
                            grouped = groups and not (
                                made_before and entry.rel.rpartition(b"/")[0] in made_before
                            )
                            copying = by_copy[entry.root]
                            if (
                                bundle
                                and grouped
                                and copying
                                and entry.kind == "file"
                                and entry.size < HEAVY_BYTES
                            ):
                                todo.append(entry)  # its task would be `groupable`: bundled
                            else:
                                todo.append(MoveItem(entry, plan, copying, grouped))
                    make = functools.partial(_grouped_item, plan)
                    run = functools.partial(_run_entries, plan)
                    tasks = bundled(todo, bundle, make, run, MoveItem.group_size)
                    async with aclosing(covered(ctx, tasks)) as reached:  # (reach first)
                        async for task in reached:
                            yield task
        except Interrupted:
            return  # the dispatcher lets the items in flight end, then raises the interrupt

    async def cleanup(self, ctx: JobContext, *, cancelled: bool) -> None:
        """Remove this job's leftover partials of files being copied across filesystems (never
        anyone else's: see `sweep_temporaries`)."""
        walked = ctx.state.get("walked")
        if not walked or (not cancelled and ctx.state.get("swept_run") == ctx.run_number):
            return
        await self._sweep(ctx, walked)


__all__ = ["MoveJob"]
