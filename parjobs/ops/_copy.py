"""Copy files and trees into a directory as a parallel, resumable job: `CopyJob` (``cp -r``).

How a copy runs::

    walk(sources)  --entries, stable indices-->  CopyItem tasks  --dispatcher-->  worker threads
        (manifest in ctx.job_dir)                 (one per file, dir, symlink…)   copy_file()
                                                                                       |
    FinishDirs (deepest first: dir modes/times; sweep of leftover temporaries) <------+

* Every walked entry is one indexed item, so a resumed run skips exactly what was checkpointed;
  worker threads stream many small files per thread call (a file's ``weight`` is its size),
  and hand plain small files to C in groups (`CopyItem.run_group`, `copy_small_files`); such
  files travel as one task per group (`Bundle`, made by `bundled` from each walked batch).
* The destination side goes through `DestTree`: a cache of directory fds opened one component
  at a time with ``O_NOFOLLOW``, so a symlink planted in the destination never redirects a write
  and each file costs no path walk. Directories are created on demand by whichever item needs
  them first; their modes and times are applied at the end, deepest first.
* Conflicts follow ``on_conflict``. On a resumed run a destination that matches the source's
  size, mtime and bytes, at the name of an entry an earlier run reached (`covered`), is taken
  as this job's own earlier output, whose completion the interruption kept from being
  checkpointed; it is not a conflict. Past that reach every name in the way is a conflict, as
  in a fresh run.

`MoveJob` (``parjobs.ops._move``) shares the tree (`_desttree`), the checks, conflict policies
and tally (`_transfer`) and the last step (`_finish`) with it.
"""

from __future__ import annotations

import contextlib
import functools
import operator
import os
import stat
from collections.abc import AsyncGenerator, Callable, Sequence
from contextlib import aclosing
from typing import Any, cast

from .._context import JobContext
from .._exceptions import Interrupted, Skip
from .._items import DIRECTORY, Identity, ItemRow, fingerprint
from .._job import Job, job_type, runtime_field
from .._task import RUN_ALONE, Members, Task, TaskContext, spread_rows
from .._workqueue import HEAVY_BYTES
from . import _probe, _transfer
from ._copyfile import CopyOptions, CopyResult
from ._errors import WalkError
from ._finish import FinishDirs
from ._fs import lexists
from ._partials import sweep_temporaries
from ._srctree import lstat_at
from ._transfer import (
    AskCallback,
    CopyDone,
    CopyPlan,
    IntoDestination,
    Landing,
    Policy,
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
    probe_plan,
    record_landing,
    run_links,
    special_reason,
    symlink_put,
)
from ._walk import Entry, HardLinks, RootCount, Totals, walk_ahead

# ---------------------------------------------------------------------------------------------
# tasks


def _followed(path: bytes) -> bytes:
    """The file a followed symlink points to (copy_file never opens a symlink itself)."""
    return os.path.realpath(path) if stat.S_ISLNK(os.lstat(path).st_mode) else path


class CopyItem(TransferItem):
    """Copy one walked entry to ``destination/<entry.rel>``.

    Queued items are grouped (`run_group`): the small plain files of a group are copied by
    one call into C with the GIL released, the rest item by item.
    """

    group_size = 64
    cluster = True  # a re-run finds its own output (`TaskContext.rerun`) and counts it done
    #: The entry's size: a plain attribute, as the pool reads it several times per task.
    weight = 0

    def __init__(
        self,
        entry: Entry,
        plan: CopyPlan,
        grouped: bool | None = None,
        portable: bool | None = None,
    ) -> None:
        """``grouped``: whether the entry may take the group path; None decides it here
        (a file, and ``plan.groups``); ``portable``: ``plan.portable``, None reads it here.
        The walk decides both once per batch and passes them (`CopyJob._items`), not
        property calls per file on the trio thread; positionally: a class called with
        keywords builds a dict of them per call (~0.5 us a file on the trio thread)."""
        self.index = entry.index
        self.entry = entry
        self.plan = plan
        self.weight = entry.size
        if not (plan.portable if portable is None else portable):
            self.cluster = False
        if grouped is None:
            grouped = entry.kind == "file" and plan.groups
        if not grouped:
            self.group_size = 1  # nothing for the group path: the pool treats it as plain

    def _run(self, tc: TaskContext) -> CopyDone:
        kind = self.entry.kind
        try:
            if kind == "file":
                return self._file(tc)
            if kind == "dir":
                tree = self.plan.tree
                fd = tree.acquire(self.entry.rel)  # creates it (merges into an existing one)
                try:
                    if tree.is_new(self.entry.rel):  # made by this run: undo may remove it
                        st = os.fstat(fd)
                        tc.record(
                            "copied",
                            self.entry.path,
                            tree.path(self.entry.rel),
                            detail=DIRECTORY,
                            written=fingerprint(st),
                        )
                finally:
                    tree.release(self.entry.rel)
                return CopyDone("dir")
            if kind == "symlink":
                return self._symlink(tc)
            if kind == "special":
                raise Skip(special_reason(self.entry.mode))
            raise WalkError(f"cannot read: {self.entry.error}")
        except OSError as exc:
            item_error(exc, self.plan.policy)
            raise

    @classmethod
    def run_group(cls, tasks: Sequence[Task[Any]], tcs: Sequence[TaskContext]) -> list[Any]:
        """`run_members`, each done task given its item row and bytes (the pool's groups)."""
        values, rows, _ = cls.run_members(tasks, tcs[0])
        spread_rows(values, rows, tcs)
        return values

    @classmethod
    def run_members(cls, tasks: Sequence[Task[Any]], tc: TaskContext) -> Members:
        """Copy the group's small files, in directories this run created, with one
        `copy_group` call (with ``verify``, C compares each copy with its source before it
        takes its final name, as the Python path does); everything else (and any file it
        did not copy, or whose copy failed the comparison) runs alone. Each copy's item row
        is built here from the walk's paths and C's identities, in one loop: no context or
        record call a file."""
        items = cast(Sequence[CopyItem], tasks)
        plan = items[0].plan
        return cls.run_entries(
            plan, [item.entry if item.plan is plan else None for item in items], tc
        )

    @classmethod
    def run_entries(
        cls, plan: CopyPlan, entries: Sequence[Entry | None], tc: TaskContext
    ) -> Members:
        """`run_members` for the files' entries (None: not for the group path): what a
        bundle of entries runs (`EntryBundle`), with no task a file."""
        out: list[Any] = [RUN_ALONE] * len(entries)
        rows: list[ItemRow] = []
        if not plan.groups:
            return out, rows, 0
        copies = copy_group(plan, entries, compare=plan.options.verify)
        return out, rows, landed_rows("copied", tc.stage, plan.tree, entries, copies, out, rows)

    def _file(self, tc: TaskContext) -> CopyDone:
        plan, rel = self.plan, self.entry.rel
        parent, _, name = rel.rpartition(b"/")
        src = _followed(self.entry.path) if plan.follow else self.entry.path
        dir_fd = plan.tree.acquire(parent)
        stack = contextlib.ExitStack()
        try:
            src_at = plan.source_at(stack, self.entry, "copied")
            overwrite = plan.policy == "overwrite"
            landing = Landing(name, overwrite and lexists(dir_fd, name))

            def write(leaf: bytes, overwrite: bool) -> CopyResult:
                return plan.copy(src, leaf, dir_fd, tc, overwrite, src_at=src_at)

            put = plan.tree.guarded(parent, write)  # (checked before any temporary)
            try:
                plan.tree.sealed_first(parent, dir_fd, name)
                res = plan.copy(
                    src,
                    name,
                    dir_fd,
                    tc,
                    overwrite,
                    new_dir=plan.tree.is_new(parent),
                    src_at=src_at,
                )
            except FileExistsError:
                src_st = os.stat(src) if src_at is None else lstat_at(src_at, src)
                got = self._settle(tc, src_st, dir_fd, landing.wrap(put), src_at=src_at)
                if got is None:  # in place already (e.g. by a run killed before its checkpoint)
                    tc.add_bytes(src_st.st_size)
                    # Its identity, as for a copy (the source's bytes, compared: the later
                    # names of a hard link link to it, `firsts_made`); none where "rename" may
                    # have found it at another name.
                    written = None
                    if plan.policy != "rename":
                        written = fingerprint(os.stat(name, dir_fd=dir_fd, follow_symlinks=False))
                    tc.record("present", self.entry.path, plan.tree.path(rel), written=written)
                    return CopyDone("file", src_st.st_size)  # counted as the copy it is
                res = got
            record_landing(tc, "copied", self.entry.path, plan.tree, parent, dir_fd, landing)
            return CopyDone("file", res.bytes_copied, res.bytes_reused)
        except OSError as exc:
            # A temporary's bare name means nothing to people: name the destination.
            name_in_error = exc.filename
            if isinstance(name_in_error, str):
                name_in_error = os.fsencode(name_in_error)
            if isinstance(name_in_error, bytes) and b".parjobs" in name_in_error:
                exc.filename = plan.tree.display(rel)
            raise
        finally:
            stack.close()
            plan.tree.release(parent)

    def _symlink(self, tc: TaskContext) -> CopyDone:
        plan, rel, src = self.plan, self.entry.rel, self.entry.path
        parent, _, name = rel.rpartition(b"/")
        dir_fd = plan.tree.acquire(parent)
        stack = contextlib.ExitStack()
        try:
            src_at = plan.source_at(stack, self.entry, "copied")
            made = symlink_put(
                plan, src, dir_fd, preserve_owner=plan.options.preserve_owner, src_at=src_at
            )

            put = plan.tree.guarded(parent, made)
            overwrite = plan.policy == "overwrite"
            landing = Landing(name, overwrite and lexists(dir_fd, name))
            try:
                plan.tree.sealed_first(parent, dir_fd, name)
                put(name, overwrite)
            except FileExistsError:
                src_st = os.lstat(src) if src_at is None else lstat_at(src_at, src)
                got = self._settle(tc, src_st, dir_fd, landing.wrap(put), src_at=src_at)
                if got is None:
                    tc.record("present", src, plan.tree.path(rel))
                    return CopyDone("symlink")  # (counted as a symlink, not a file)
            record_landing(tc, "copied", src, plan.tree, parent, dir_fd, landing)
            return CopyDone("symlink")
        finally:
            stack.close()
            plan.tree.release(parent)


class LinkItem(CopyItem):
    """A later name of a file with several hard links in the tree: a hard link to the copy of
    its ``first`` name (the one with the lowest manifest index, so the same on every run),
    made in the "links" stage, after the copy stage put that copy in place (`link_first`);
    copied as any other file when it cannot be linked."""

    group_size = 1

    def __init__(
        self, entry: Entry, first: Entry, plan: CopyPlan, made: Identity | None = None
    ) -> None:
        super().__init__(entry, plan)
        self.first = first
        self.made = made  # the copy of ``first`` this job made (`firsts_made`)

    def _file(self, tc: TaskContext) -> CopyDone:
        plan, rel, src = self.plan, self.entry.rel, self.entry.path
        parent = rel.rpartition(b"/")[0]
        dir_fd = plan.tree.acquire(parent)
        try:
            got = link_first(self, tc, dir_fd, self.first, self.made)
            if got is not None:
                landing, present = got
                tc.add_bytes(self.entry.size)  # in place: its bytes count as finished
                if present:
                    tc.record("present", src, plan.tree.path(rel))
                    return CopyDone("linked")  # (counted as linked, not as a copy)
                record_landing(tc, "linked", src, plan.tree, parent, dir_fd, landing)
                return CopyDone("linked")
        finally:
            plan.tree.release(parent)
        return super()._file(tc)


#: An entry's size (the batch count's sum over a walked batch, in C).
_size = operator.attrgetter("size")


def _grouped_item(plan: CopyPlan, portable: bool, entry: Entry) -> CopyItem:
    """The task of a bundled file (`EntryBundle.make`): one it hands back."""
    return CopyItem(entry, plan, True, portable)  # (positional)


def _run_entries(plan: CopyPlan, entries: list[Entry], tc: TaskContext) -> Members:
    """A bundle's chunk (`EntryBundle.run_entries`), looked up on the class when it runs."""
    return CopyItem.run_entries(plan, entries, tc)


# ---------------------------------------------------------------------------------------------
# the job


@job_type("copy", version=2)
class CopyJob(IntoDestination, Job):
    """Copy files and directory trees, like ``cp -a``: into ``destination`` (created if
    missing) when it is a directory, when there are several sources or when ``destination``
    ends with ``/`` (``sources=["a"]`` lands in ``destination/a``); otherwise the one source
    is copied *as* ``destination`` (``cp a.txt b.txt``, ``cp -r dir newdir``).

    ``into`` says which: None (default) decides as just said when the job is submitted, and
    the spec stores the decision, so a resumed run (which finds the directory its first run
    made) keeps it.

    ``on_conflict`` decides about an existing destination file: "skip", "overwrite",
    "rename" (``name (1).ext``), "update" (replace only a destination strictly older than
    the source, by mtime, else skip: rsync -u, cp -u), "fail"
    (that item fails, the job goes on), or "ask" (the ``ask`` callback decides per file, one
    question at a time: an async function, or a plain one called in a thread; it answers a
    `Choice`, or an `Answer` with ``for_all`` to settle every later conflict of the run). A
    directory merges into an existing directory; a non-directory in its way is replaced under
    "overwrite", skipped under "skip", and fails otherwise.

    ``hard_links`` (default): files linked to each other in the copied trees are linked in
    the copy too, as ``cp -a`` and ``rsync -aH`` do: the first name of such a file (in walk
    order) is copied, the others become hard links to that copy (`LinkItem`). A file whose
    other links are outside the trees is copied alone. False copies each name apart.

    The result: ``copied`` (files and symlinks; also apart as ``files`` and ``symlinks``),
    ``linked`` (files made as hard links, counted in ``copied`` and ``files`` too),
    ``dirs``, ``skipped``, ``failed``, ``bytes``
    copied, ``bytes_reused`` (from partials of an interrupted run) and ``skipped_reasons``
    (reason -> count). Each failed item is in ``manager.errors(job_id)`` under its source path.
    """

    sources: list[str]
    destination: str
    on_conflict: Policy = "fail"
    verify: bool = False
    durable: bool = False
    follow_symlinks: bool = False
    preserve_xattrs: bool = False
    preserve_owner: bool = False
    into: bool | None = None
    hard_links: bool = True
    ask: AskCallback | None = runtime_field()

    def validate(self) -> None:
        self._absolute("copy")
        self._decide_into()
        self._check_contents("copy")
        check_paths(
            "copy",
            self.sources,
            self.destination,
            into=self.into is not False,
            follow_symlinks=self.follow_symlinks,
        )

    def _plan(self, resumed: bool, identity: Any) -> CopyPlan:
        options = CopyOptions(
            chunk_size=_transfer.CHUNK_SIZE,  # read now: a test may have set it
            durable=self.durable,
            preserve_xattrs=self.preserve_xattrs,
            preserve_owner=self.preserve_owner,
            verify=self.verify,
        )
        return self._make_plan(
            resumed,
            identity,
            options,
            kind="copy",
            policy=self.on_conflict,
            follow=self.follow_symlinks,
            ask=self.ask,
        )

    async def run(self, ctx: JobContext) -> dict[str, Any]:
        plan = await open_plan(ctx, self._plan)
        if ctx.clustered and plan.portable:  # (its items go to the cluster's workers)
            await probe_plan(ctx, plan)
        keys = ("copied", "files", "symlinks", "linked", "dirs", "skipped", "bytes", "bytes_reused")
        # What a done item of each kind adds to (a file, the default: "copied" and "files").
        kinds = {
            "dir": ("dirs",),
            "symlink": ("copied", "symlinks"),
            "linked": ("copied", "files", "linked"),
        }
        tally = Tally(ctx.state, keys, kinds, ("copied", "files"))
        count = tally.count
        progress = ctx.progress
        progress.set_total(items=1, bytes=0, final=False)  # the finishing step; the walk adds
        progress.set_message("copying")
        dirs: list[Entry] = []
        links: list[tuple[Entry, Entry]] = []

        try:
            dispatcher = ctx.task_dispatcher()
            # Small files go as bundles (one task a group: `bundled`), unless a cluster runs
            # them (one by one there).
            bundle = 0 if ctx.clustered and plan.portable else dispatcher.workers
            # A stage with nothing completed yet (a first run) has no entry to skip: no
            # done-check per entry then (this run's own tasks complete after the walk yields
            # them).
            done = dispatcher.is_completed if dispatcher.completed_count else None
            first_name = dispatcher.keep_written
            feed = self._items(ctx, plan, dirs, links, done, first_name=first_name, bundle=bundle)
            async with aclosing(feed) as items:
                async for outcome in dispatcher.dispatch_many(items):
                    count(outcome)
            if links:  # after the copy stage: every first copy is in place

                def link(e: Entry, f: Entry, made: Identity | None) -> LinkItem:
                    return LinkItem(e, f, plan, made)

                await run_links(ctx, dispatcher, links, link, count)
            progress.set_message("finishing")
            # Only a resumed run or one with failed items can have left temporaries behind.
            sweep = None
            if ctx.resumed or tally.failed:
                sweep = functools.partial(sweep_temporaries, plan.tree.root, plan.names, plan.token)
            finish = FinishDirs(ctx.run_number, plan, dirs, sweep)
            async for outcome in ctx.task_dispatcher("finish").dispatch_many([finish]):
                tally.record(outcome)
            ctx.state["swept_run"] = ctx.run_number
        finally:
            plan.tree.close()
            plan.src_dirs.close()
        return tally.result()

    async def _items(
        self,
        ctx: JobContext,
        plan: CopyPlan,
        dirs: list[Entry],
        links: list[tuple[Entry, Entry]],
        done: Callable[[int], bool] | None,
        *,
        first_name: Callable[[int], object],
        bundle: int = 0,
    ) -> AsyncGenerator[Task[Any], None]:
        """One `CopyItem` per walked entry, except those ``done`` in an earlier run (a resume
        replays the manifest, and builds no task for what it will skip; None: nothing is
        done yet); the group path is decided once per batch; with ``bundle`` (the
        workers), a walked batch's small files go in bundles as their entries
        (`bundled`, `EntryBundle`: a file's task is built only if its bundle hands it
        back). With
        ``hard_links``, a file's later names (``(entry, first name)``) go to ``links``
        instead, for the "links" stage, and the index of each first name to ``first_name``
        (`TaskDispatcher.keep_written`, for `firsts_made`); the manifest's order makes the
        first the same on every run."""
        hard_links = HardLinks(first_name) if self.hard_links else None
        # Directories an earlier run made: not new to this one (`DestTree.is_new`), so their
        # files cannot take the group path (`copy_group`) and go as plain tasks, which the
        # pool keeps on fewer threads than groups (a copy alone holds the GIL most of its
        # time, a group's does not): a resumed copy's files in them took ~20 % more CPU as
        # groups that fell back to copying each alone.
        made_before: set[bytes] = set()

        def count(batch: list[Entry]) -> Totals:
            return len(batch), sum(map(_size, batch))

        def estimate(roots: list[RootCount]) -> Totals:
            return sum(r.entries for r in roots), sum(r.file_bytes for r in roots)

        try:
            walked = walk_ahead(
                ctx,
                plan.roots,
                count,
                plan.names,
                estimate=estimate,
                follow_symlinks=plan.follow,
                durable=plan.options.durable,
            )
            async with aclosing(walked) as batches:
                async for batch in batches:
                    todo: list[Task[Any] | Entry] = []
                    groups = plan.groups  # per batch: a group may turn it off (`group_off`)
                    portable = plan.portable
                    for entry in batch:
                        kind = entry.kind
                        if kind == "dir":
                            # finished again, done or not; times read then
                            dirs.append(entry)
                            if done is not None and done(entry.index):
                                made_before.add(entry.rel)
                                continue
                        elif (
                            hard_links and entry.nlink > 1 and (first := hard_links.first_of(entry))
                        ):
                            if done is None or not done(entry.index):  # (by an older version)
                                links.append((entry, first))
                            continue
                        if done is None or not done(entry.index):
                            grouped = (
                                groups
                                and kind == "file"
                                and not (
                                    made_before and entry.rel.rpartition(b"/")[0] in made_before
                                )
                            )
                            if grouped and bundle and entry.size < HEAVY_BYTES:
                                todo.append(entry)  # its task would be `groupable`: bundled
                            else:
                                todo.append(CopyItem(entry, plan, grouped, portable))
                    make = functools.partial(_grouped_item, plan, portable)
                    run = functools.partial(_run_entries, plan)
                    tasks = bundled(todo, bundle, make, run, CopyItem.group_size)
                    async with aclosing(covered(ctx, tasks)) as reached:  # (reach first)
                        async for task in reached:
                            yield task
        except Interrupted:
            return  # the dispatcher lets the items in flight end, then raises the interrupt

    async def cleanup(self, ctx: JobContext, *, cancelled: bool) -> None:
        """Remove this job's leftover partials and temporaries (never anyone else's), unless
        this run's last step already did (a completed run that needed it swept before
        finishing directory times); and its probes (a run on a cluster's)."""
        await _probe.remove_all(ctx)
        if not cancelled and ctx.state.get("swept_run") == ctx.run_number:
            return
        await self._sweep(ctx)


__all__ = ["CopyItem", "CopyJob", "LinkItem"]
