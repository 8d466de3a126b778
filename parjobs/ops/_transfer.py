"""What copy and move share: the pre-flight path checks, the plan of one run (destination tree
and options), the conflict policies and the ``ask`` bridge, and the result tally."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import inspect
import operator
import os
import stat
import threading
from collections import Counter
from collections.abc import AsyncGenerator, Awaitable, Callable, Container, Sequence
from typing import Any, Literal, NamedTuple, TypeVar

import trio

from .._context import JobContext
from .._dispatch import TaskDispatcher
from .._exceptions import JobSpecError, Skip
from .._items import Identity, ItemRow, fingerprint
from .._job import validating_stored
from .._task import Bundle, BundleDone, Members, Outcome, OutcomeStatus, Task, TaskContext
from .._util import names_contents
from .._workqueue import GROUP_MAX_BYTES
from . import _probe, _smallfiles
from ._copyfile import CopyOptions, CopyResult, copy_file, copy_symlink
from ._desttree import NOT_A_DIR, DestTree
from ._errors import DirConflictError, ForeignDirError
from ._fs import (
    DIR_NOFOLLOW,
    KINDS,
    At,
    absolute_root,
    ancestor_ids,
    check_dotdot,
    check_replaceable,
    check_slash,
    clean_error,
    display,
    lexists,
    numbered,
    rename_noreplace,
    same_size_mtime,
    split_at,
    split_ext,
    unique_name,
)
from ._names import job_token, stored_token
from ._partials import sweep_temporaries, tmp_name
from ._paths import (
    absolute_paths,
    check_identity,
    check_writable_dir,
    dir_identity,
    existing_prefix,
)
from ._srctree import SourceDirs
from ._walk import SLICE_ENTRIES, Entry

T = TypeVar("T")


#: Files larger than this are copied (and resumable) in chunks of this size.
CHUNK_SIZE = 8 * 1024 * 1024


#: How often a pending ``ask`` callback checks for pause/cancel.
ASK_POLL = 0.1


Policy = Literal["skip", "overwrite", "rename", "update", "fail", "ask"]


#: What the ``ask`` callback may answer.
Choice = Literal["skip", "overwrite", "rename"]


#: Skip reasons (kept short and path-free: the result counts them per reason).
EXISTS = "destination exists"


UP_TO_DATE = "destination is up to date"


@dataclasses.dataclass(frozen=True, slots=True)
class Conflict:
    """What the ``ask`` callback is shown: a source whose destination already exists.

    Paths are ``str`` (undecodable bytes as surrogate escapes, usable with `os`); mtimes are
    seconds since the epoch.
    """

    source: str
    destination: str
    source_size: int
    destination_size: int
    source_mtime: float
    destination_mtime: float


@dataclasses.dataclass(frozen=True, slots=True)
class Answer:
    """An answer of the ``ask`` callback that may settle more than this conflict:
    ``Answer("skip", for_all=True)`` skips this file and every later conflict of the run
    without asking again ("same for all"). A plain `Choice` answers this conflict only."""

    choice: Choice
    for_all: bool = False


#: ``async def ask(conflict) -> Choice | Answer``, awaited in the job's trio loop, or a plain
#: ``def ask(conflict) -> Choice | Answer``, called in a worker thread (it may block: show a
#: dialog and wait for it), e.g. from `parjobs.BlockingManager` code. One question at a time.
AskCallback = (
    Callable[[Conflict], Awaitable[Choice | Answer]] | Callable[[Conflict], Choice | Answer]
)


class CopyDone(NamedTuple):
    """What a copy or move item returns: what was done (``"file"``, ``"dir"``, ``"symlink"``,
    ``"linked"``, ``"renamed"``...), bytes copied, and bytes reused from a partial. An item
    found in place on resume (put there by a run stopped before its checkpoint; its item
    record says "present") says what was done to it then, so the tally counts it as it would
    have. A tuple, so a stage that keeps its results stores it as JSON (and gets a list back
    on resume)."""

    kind: str
    copied: int = 0
    reused: int = 0


class TransferItem(Task[CopyDone]):
    """What the copy and move tasks of one walked entry share: their label, the bytes of a
    skipped item, and how a conflict at the destination is settled. A subclass sets
    ``index``, ``entry`` and ``plan``, says its ``weight`` (the bytes the job's total counts
    for it) and does the work in `_run`."""

    entry: Entry
    plan: CopyPlan

    def label(self) -> str:
        return self.entry.display

    def run(self, tc: TaskContext) -> CopyDone:
        try:
            return self._run(tc)
        except Skip:
            # Finished without copying (exists, up to date): the bytes the total counts for
            # it are finished (`Progress.bytes_skipped`), or a completed job would show
            # "completed 26%".
            tc.add_bytes(max(0, self.weight - tc.bytes_done))
            raise

    def _run(self, tc: TaskContext) -> CopyDone:
        raise NotImplementedError

    def _settle(
        self,
        tc: TaskContext,
        src_st: os.stat_result,
        dir_fd: int,
        put: Callable[[bytes, bool], T],
        *,
        maybe_ours: bool = True,
        src_at: At | None = None,
    ) -> T | None:
        """Apply the conflict policy to the entry's destination, which exists in ``dir_fd``:
        ``put``'s value, or None when it already holds the source, put there by this job: an
        earlier run that reached the entry (`CopyPlan.reached`) and was stopped before its
        checkpoint, or this very task before its worker was lost; not when ``maybe_ours`` is
        False. A regular file must then have the source's size, mtime *and* bytes: a file that
        was there before the job, with the source's size and mtime (``touch -r``) but other
        bytes, is a conflict, as in a fresh run (the bytes are read only for such a name,
        on resume: the in-flight window of a kill, a conflict of an earlier run)."""
        src = self.entry.path
        ours = maybe_ours and (tc.rerun or self.plan.reached(self.index))
        deep_check = None
        if ours and stat.S_ISREG(src_st.st_mode):
            deep_check = functools.partial(same_content, src, dir_fd, check=tc.check, src_at=src_at)
        return resolve_conflict(
            self.plan,
            tc,
            src,
            src_st,
            dir_fd=dir_fd,
            rel=self.entry.rel,
            put=put,
            deep_check=deep_check,
            resumed=ours,
            src_at=src_at,
        )


class Landing:
    """Where a copy or move item's ``put`` wrote (a conflict policy may pick another name,
    or replace), for its item record (`record_landing`)."""

    __slots__ = ("leaf", "name", "replaced")

    def __init__(self, name: bytes, replaced: bool = False) -> None:
        self.name = name
        self.leaf = name
        self.replaced = replaced

    def wrap(self, put: Callable[[bytes, bool], T]) -> Callable[[bytes, bool], T]:
        """``put``, noting the leaf and whether it overwrote (only a conflict's put does)."""

        def noted(leaf: bytes, overwrite: bool) -> T:
            value = put(leaf, overwrite)
            self.leaf, self.replaced = leaf, overwrite
            return value

        return noted


def symlink_put(
    plan: CopyPlan, src: bytes, dir_fd: int, *, preserve_owner: bool, src_at: At | None = None
) -> Callable[[bytes, bool], None]:
    """The ``put`` of a symlink item (see `resolve_conflict`): recreate ``src`` as ``leaf``
    in ``dir_fd``, atomically, replacing what is there when ``overwrite``."""

    def put(leaf: bytes, overwrite: bool) -> None:
        copy_symlink(
            src,
            leaf,
            dst_dir_fd=dir_fd,
            overwrite=overwrite,
            preserve_owner=preserve_owner,
            durable=plan.options.durable,
            owner=plan.token,
            src_at=src_at,
        )

    return put


def record_landing(
    tc: TaskContext,
    verb: str,
    src: bytes,
    tree: DestTree,
    parent: bytes,
    dir_fd: int,
    landing: Landing,
) -> None:
    """Record an item written to ``landing.leaf`` in ``dir_fd`` (``parent`` in ``tree``),
    with the identity it has now, which undo checks. A copy is "copied" to a new name,
    "renamed-as" another name, or "replaced" an existing file; a move is "moved", with
    ``detail`` "renamed-as" or "replaced" in those cases."""
    leaf = landing.leaf
    st = os.stat(leaf, dir_fd=dir_fd, follow_symlinks=False)
    how = "replaced" if landing.replaced else None if leaf == landing.name else "renamed-as"
    action, detail = (how or verb, None) if verb == "copied" else (verb, how)
    rel = parent + b"/" + leaf if parent else leaf
    tc.record(action, src, tree.path(rel), bytes=st.st_size, detail=detail, written=fingerprint(st))


class Target(NamedTuple):
    """Where a copy or move writes: into the directory ``root``, each source under its name
    in ``names`` (bytes, in the order of the sources)."""

    root: str
    names: list[bytes]


def copies_into(sources: Sequence[str], destination: str) -> bool:
    """Whether the sources go *into* ``destination`` (``cp a b dir/``) rather than the one
    source becoming ``destination`` itself (``cp a.txt b.txt``, ``cp -r dir newdir``): into
    an existing directory (or a symlink to one), for several sources, and for a destination
    written with a trailing ``/`` (created if missing). Not into it for one source ending
    in ``.`` or ``..`` (`names_contents`): ``cp -a x/. D`` copies what ``x`` holds as
    ``D``, merged into an existing ``D``. Decided once, when the job is submitted
    (`CopyJob.into`), so a resumed run, which finds the directory it made, keeps the same
    interpretation."""
    if len(sources) == 1 and names_contents(sources[0]):
        return False
    if len(sources) != 1 or destination.endswith("/"):
        return True
    try:
        return stat.S_ISDIR(os.stat(destination).st_mode)
    except (OSError, ValueError):
        return False


def target_of(sources: Sequence[str], destination: str, into: bool) -> Target:
    """The `Target` of a job: ``destination`` and the sources' own names, or, not ``into``,
    the destination's parent directory and the destination's name for the one source."""
    if into:
        names = [os.path.basename(os.fsencode(os.path.abspath(s))) for s in sources]
        return Target(destination, names)
    head, leaf = os.path.split(os.path.abspath(destination))
    return Target(head, [os.fsencode(leaf)])


def merged_destination(destination: str) -> str:
    """The destination a copy of ``x/.`` merges into: a symlink to a directory is that
    directory, as for ``cp -a x/. link`` (its target, resolved once, on submission), where
    the job, which makes the destination as the copy of ``x``, took the link for a file in
    its way (with ``--on-conflict overwrite``, deleted it). Any other path as it is."""
    path = os.path.abspath(destination)
    if os.path.islink(path) and os.path.isdir(path):
        return os.path.realpath(path)
    return destination


class IntoDestination:
    """What copy and move share about their destination: ``into`` (see `copies_into`) is
    decided once, when the job is submitted, and stored in its spec, so a resumed run keeps
    the interpretation; a spec stored before ``into`` existed (version 1) always copied into
    the destination. Put before `Job` in a job's bases; the job declares the fields."""

    sources: list[str]
    destination: str
    into: bool | None

    @classmethod
    def upgrade_spec(cls, spec: dict[str, Any], from_version: int) -> dict[str, Any]:
        return {**spec, "into": True} if from_version < 2 else spec

    def to_spec(self) -> dict[str, Any]:
        self._decide_into()  # the spec stores the decision (submit stores the spec)
        spec: dict[str, Any] = super().to_spec()  # type: ignore[misc]
        return spec

    def _absolute(self, kind: str) -> None:
        """The sources and destination made absolute on submission, refused relative when
        stored (`absolute_paths`)."""
        self.sources = absolute_paths(kind, self.sources)
        (self.destination,) = absolute_paths(kind, [self.destination])

    def _decide_into(self) -> None:
        if self.into is None:
            self.into = copies_into(self.sources, self.destination)

    def _target(self) -> Target:
        return target_of(self.sources, self.destination, self.into is not False)

    def _check_contents(self, kind: str) -> None:
        """On submission, refuse a source ending in ``.`` or ``..`` (`names_contents`) that
        the job would take as the directory itself: a move's (``mv x/. D`` is refused), a
        copy's into the destination (``cp -a x/. D`` merges what ``x`` holds into ``D``,
        where ``into`` makes ``D/x``); the destination of a copy it merges into as
        `merged_destination` has it (a symlink to a directory is that directory). A job
        stored before this check keeps its meaning."""
        if validating_stored():
            return
        for src in self.sources:
            if not names_contents(src):
                continue
            if kind == "move":
                raise JobSpecError(
                    f"move: refusing {display(src)!r}: like mv, parjobs does not move a path "
                    "ending in '.' or '..'; name the directory itself"
                )
            if self.into is not False:
                raise JobSpecError(
                    f"copy: {display(src)!r} names what the directory holds, which is copied "
                    "as the destination itself, merged into it (cp -a x/. D): give it as the "
                    "only source, with into unset or false, or name the directory without "
                    "the '.' to copy it into the destination"
                )
            self.destination = merged_destination(self.destination)

    def _make_plan(
        self,
        resumed: bool,
        identity: Any,
        options: CopyOptions,
        *,
        kind: str,
        policy: Policy,
        follow: bool,
        ask: AskCallback | None,
    ) -> CopyPlan:
        """`make_plan` for this job's target (see `open_plan`)."""
        target = self._target()
        return make_plan(
            self.sources,
            target.root,
            options,
            policy=policy,
            follow=follow,
            resumed=resumed,
            ask=ask,
            kind=kind,
            identity=identity,
            names=target.names,
        )

    async def _sweep(self, ctx: JobContext, walked: Container[str] | None = None) -> None:
        """Remove this job's temporaries and partials in the destination (of the sources in
        ``walked`` only, if given), unless the destination was swapped since: whatever is
        there now is not this job's."""
        target = self._target()
        if not await trio.to_thread.run_sync(dest_is_unchanged, target.root, ctx.state):
            return
        names = [
            name
            for source, name in zip(self.sources, target.names, strict=True)
            if walked is None or source in walked
        ]
        token = stored_token(ctx.state)
        await trio.to_thread.run_sync(sweep_temporaries, target.root, names, token)


def item_error(exc: OSError, policy: Policy) -> None:
    """What copy and move do with an item's error before it is raised: a directory needed
    where the destination holds a file is skipped under the ``skip`` policy (raises `Skip`);
    any other error's text is made storable."""
    if isinstance(exc, DirConflictError) and policy == "skip":
        raise Skip(NOT_A_DIR) from None
    clean_error(exc)


async def open_plan(ctx: JobContext, make: Callable[[bool, Any], CopyPlan]) -> CopyPlan:
    """The plan of a copy or move run, with the job's name token, from ``make(resumed,
    identity)`` run in a thread (it opens the destination).

    The token is checkpointed before any temporary can be made, and the destination's
    identity, the first time it is known, before anything is written into it: a later run
    then refuses a destination swapped since (issue #12). The plan's ``reach`` is what the
    earlier runs reached (`cover`)."""
    token = await job_token(ctx)
    identity = ctx.state.get("dest_identity")
    plan = await trio.to_thread.run_sync(make, ctx.resumed, identity)
    plan.reach = _earlier_reach(ctx)
    if plan.tree.identity != identity:
        ctx.state["dest_identity"] = plan.tree.identity
        # The first entries' reach goes with this write (`cover` then needs none for them).
        ctx.state["reach"] = max(plan.reach, REACH_AHEAD)
        await ctx.checkpoint(force=True)
    plan.token = token
    return plan


async def probe_plan(ctx: JobContext, plan: CopyPlan) -> None:
    """Put the job's probe (`parjobs.ops._probe`) where a cluster worker reaches the
    destination by a path of its own: the root, and each path map directory below it that
    the copy writes into (under one of the plan's names; made when missing), then mark the
    plan so its workers check them. Only when the plan's items go to a cluster."""
    from .._cluster_remote import below  # (not loaded by a local copy)

    assert plan.token is not None  # (`open_plan` set it)
    root = plan.tree.root
    anchors = _under(below(root, ctx.cluster_path_map), plan.names)
    await _probe.place_all(ctx, plan.token, [root, *sorted(anchors.values())], make=True)
    plan.probe = True


def _under(anchors: dict[bytes, bytes], names: Sequence[bytes]) -> dict[bytes, bytes]:
    """The ``anchors`` (relative paths below a destination's root) the copy of ``names``
    writes into: each one of them or below one."""
    return {
        rel: path
        for rel, path in anchors.items()
        if any(rel == name or rel.startswith(name + b"/") for name in names)
    }


#: A run marks entries as reached this many past the walked batch (or `COVER_MAX` of it)
#: it hands to its workers (`covered`): a forced checkpoint per batch at most, and at
#: most that many and this many more names that a resumed run compares byte for byte when
#: it finds them in the way.
REACH_AHEAD = 1024
#: The most of a walked batch one raise of the reach covers past the task that passed it
#: (`covered`): a walk's slice at most, so one forced checkpoint per slice.
COVER_MAX = SLICE_ENTRIES
#: The reach of a resumed job whose earlier runs kept none (begun by an older parjobs):
#: every entry.
_EVERY = 2**62


def _earlier_reach(ctx: JobContext) -> int:
    """The highest entry index the job's earlier runs may have handed to a worker (-1 on a
    first run), from ``ctx.state["reach"]``, which `cover` raises."""
    reach = ctx.state.setdefault("reach", _EVERY if ctx.resumed else -1)
    return int(reach)


async def covered(ctx: JobContext, tasks: Sequence[Task[Any]]) -> AsyncGenerator[Task[Any], None]:
    """``tasks`` (a copy's or move's walked batch, about to be handed to the workers), each
    once this run's reach (``ctx.state["reach"]``) covers the entries it stands for,
    checkpointed: when it does not, raised with one forced checkpoint to cover the rest of
    the batch, `COVER_MAX` entries of it at most (a walk's slice: one checkpoint for it; a
    resumed run's replayed manifest, one batch, is covered a slice at a time), and
    `REACH_AHEAD` entries more. So a resumed run knows which names in the way may hold the
    job's own output (`CopyPlan.reached`): at most those of the tasks the dispatcher had
    pulled (its window), `COVER_MAX` and `REACH_AHEAD` entries more. (Raised
    `REACH_AHEAD` past each task that passed it, a first slice of 3,000 small files cost
    three forced checkpoints before its first bundles could run.)"""
    state = ctx.state
    last = -1  # the batch's highest index, once needed
    for task in tasks:
        top = max(map(_INDEX, task.members)) if type(task) is EntryBundle else task.index
        if top > state["reach"]:
            if last < 0:
                last = max(
                    max(map(_INDEX, t.members)) if type(t) is EntryBundle else t.index
                    for t in tasks
                )
            state["reach"] = min(last, top + COVER_MAX) + REACH_AHEAD
            await ctx.checkpoint(force=True)
        yield task


def make_plan(
    sources: Sequence[str],
    destination: str,
    options: CopyOptions,
    *,
    policy: Policy,
    follow: bool,
    resumed: bool,
    ask: AskCallback | None,
    kind: str = "copy",
    identity: dict[str, Any] | None = None,
    names: Sequence[bytes] | None = None,
) -> CopyPlan:
    """Create the destination directory (its parent was checked) and plan the transfer.

    ``names``: each source's name in the destination (default: its own; see `Target`).

    ``identity`` is what an earlier run recorded (`DestTree.identity`): the destination
    must still be that directory, or, when it is gone, be re-created in the same parent
    directory; otherwise `DestinationChangedError` is raised before anything is written.
    Everything below is then reached through the fds opened here, never by path again.
    """
    dest = os.path.abspath(destination)
    expect = identity or {}
    head, leaf = os.path.split(dest)
    parent_fd = os.open(head or "/", DIR_NOFOLLOW & ~os.O_NOFOLLOW)  # a user's symlinks above
    try:
        parent_id = dir_identity(parent_fd)
        made = False
        if leaf:
            try:
                os.mkdir(leaf, dir_fd=parent_fd)
            except FileExistsError:
                pass
            else:
                made = True
        if made and expect.get("parent") not in (None, parent_id):
            os.rmdir(leaf, dir_fd=parent_fd)  # ours, just made, empty
            check_identity(kind, head, parent_fd, expect["parent"])  # raises
        if made:  # a directory made just now: never a symlink
            root_fd = os.open(leaf, DIR_NOFOLLOW, dir_fd=parent_fd)
        else:  # the user may name a symlinked directory; its identity is checked
            root_fd = os.open(leaf or ".", DIR_NOFOLLOW & ~os.O_NOFOLLOW, dir_fd=parent_fd)
            try:
                check_identity(kind, dest, root_fd, expect.get("dest"))
            except BaseException:
                os.close(root_fd)
                raise
    finally:
        os.close(parent_fd)
    tree = DestTree(
        dest,
        replace_nondirs=policy == "overwrite",
        durable=options.durable,
        root_new=made,
        root_fd=root_fd,
    )
    tree.identity["parent"] = parent_id
    return CopyPlan(
        tree=tree,
        # A copy of ``link/`` copies the directory it names; a move renames what the walk
        # walks, so its roots are the names themselves.
        roots=[absolute_root(s) if kind == "copy" else os.path.abspath(s) for s in sources],
        names=list(names) if names is not None else target_of(sources, dest, True).names,
        policy=policy,
        options=options,
        follow=follow,
        resumed=resumed,
        ask=ask,
    )


def dest_is_unchanged(destination: str, state: dict[str, Any]) -> bool:
    """Whether ``destination`` is still the directory the job's runs recorded (or nothing
    was recorded): a cleanup never sweeps a destination that was swapped meanwhile."""
    recorded = state.get("dest_identity")
    if not isinstance(recorded, dict) or recorded.get("dest") is None:
        return True
    try:
        fd = os.open(os.path.abspath(destination), DIR_NOFOLLOW & ~os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        return dir_identity(fd) == list(recorded["dest"])
    finally:
        os.close(fd)


def check_paths(
    kind: str,
    sources: Sequence[str],
    destination: str,
    *,
    into: bool = True,
    follow_symlinks: bool = False,
    moved_ok: bool = False,
) -> None:
    """Refuse, with a `JobSpecError` naming the problem, what ``cp -r``/``mv`` would refuse:
    no sources, a missing source, a source equal to (or containing) the destination or to its
    own target, two sources with the same name, a destination that is not a directory (when
    copying ``into`` it; otherwise a directory source cannot replace a non-directory) or whose
    parent is missing, or where nothing can be written (not writable, ``/proc``...). Touches
    nothing. ``moved_ok`` accepts a missing source whose target exists (a resumed move that
    already renamed it).

    "Inside" is decided by device and inode, as ``cp`` does: each source directory is compared
    with the destination's existing prefix and every directory above it (through ``..``), so
    a destination reached through a bind mount, a symlink or a relative path is caught too.
    """
    if not sources:
        raise JobSpecError(f"{kind}: no sources given")
    if not destination:
        raise JobSpecError(f"{kind}: the destination is empty")
    if not into and len(sources) != 1:
        raise JobSpecError(f"{kind}: several sources go into a directory, not to one name")
    for path in (*sources, destination):
        check_dotdot(kind, path)
    if names_contents(destination):  # ``D/.``: an existing directory, as the kernel finds it
        try:
            os.stat(destination)
        except OSError as exc:
            raise JobSpecError(
                f"{kind}: cannot use destination {display(destination)!r}: {exc.strerror}"
            ) from None
    dest = os.path.abspath(destination)
    try:
        dst_st: os.stat_result | None = os.stat(dest)
    except FileNotFoundError:
        dst_st = None
        parent = os.path.dirname(dest)
        if not os.path.isdir(parent):
            raise JobSpecError(
                f"{kind}: the destination's parent directory {display(parent)!r} does not exist"
            ) from None
    except OSError as exc:
        raise JobSpecError(
            f"{kind}: cannot use destination {display(destination)!r}: {exc.strerror}"
        ) from None
    dest_is_dir = dst_st is not None and stat.S_ISDIR(dst_st.st_mode)
    if dst_st is not None and not dest_is_dir and into:
        raise JobSpecError(
            f"{kind}: destination {display(destination)!r} exists and is not a directory"
        )
    if dst_st is None or not into:
        where = os.path.dirname(dest)
        check_writable_dir(kind, "the destination's parent directory", where, os.stat(where))
    else:
        check_writable_dir(kind, "destination", dest, dst_st)
    prefix, prefix_st = existing_prefix(dest)
    above_dest = ancestor_ids(prefix_st, prefix)  # the destination's directory and up
    dest_id = (dst_st.st_dev, dst_st.st_ino) if dst_st is not None else None
    names: dict[str, str] = {}
    for src in sources:
        if not src:
            raise JobSpecError(f"{kind}: a source path is empty")
        path = os.path.abspath(src)
        base = os.path.basename(path)
        if not base:
            raise JobSpecError(f"{kind}: cannot {kind} the root directory {src!r}")
        if base in names:
            raise JobSpecError(
                f"{kind}: sources {display(names[base])!r} and {display(src)!r} would both "
                f"become {display(os.path.join(destination, base))!r}"
            )
        names[base] = src
        check_slash(kind, src, link_ok=kind == "copy")
        target_path = os.path.join(dest, base) if into else dest
        try:
            # The item itself; a symlink stands for its target only when followed, or for a
            # copy, when written `link/` (the walk reads it so: `absolute_root`).
            item = absolute_root(src) if kind == "copy" else path
            src_st = os.stat(item, follow_symlinks=follow_symlinks)
        except FileNotFoundError:
            if not os.path.lexists(path):
                if moved_ok and os.path.lexists(target_path):
                    continue
                raise JobSpecError(f"{kind}: source {display(src)!r} does not exist") from None
            src_st = os.lstat(path)  # a broken symlink, followed: copied as the link
        except OSError as exc:
            raise JobSpecError(
                f"{kind}: cannot use source {display(src)!r}: {exc.strerror}"
            ) from None
        src_id = (src_st.st_dev, src_st.st_ino)
        if src_id == dest_id:
            raise JobSpecError(f"{kind}: source {display(src)!r} is the destination")
        if stat.S_ISDIR(src_st.st_mode) and src_id in above_dest:
            raise JobSpecError(
                f"{kind}: destination {display(destination)!r} is inside source {display(src)!r}"
            )
        if not into and dst_st is not None and not dest_is_dir and stat.S_ISDIR(src_st.st_mode):
            raise JobSpecError(
                f"{kind}: cannot replace non-directory {display(destination)!r} "
                f"with directory {display(src)!r}"
            )
        if dst_st is not None and into:
            try:
                target = os.lstat(target_path)  # never followed below the root
            except OSError:
                continue
            if (target.st_dev, target.st_ino) == src_id:
                raise JobSpecError(
                    f"{kind}: source {display(src)!r} is already its own target in the destination"
                )


def special_reason(mode: int, verb: str = "copied") -> str:
    """The skip reason of a FIFO, socket or device, e.g. "FIFO not copied"."""
    return f"{KINDS.get(stat.S_IFMT(mode), 'special file')} not {verb}"


def same_content(
    src: bytes, dir_fd: int, name: bytes, check: Callable[[], None], src_at: At | None = None
) -> bool:
    """Whether ``src`` and ``dir_fd/name`` hold the same bytes: read side by side, so the
    answer is exact and a difference stops the reading where it is found. (The C group path
    compares the same way: `_smallfiles.copy_small_files`' ``compare``.) Only regular files
    hold the same content: a FIFO or device swapped in since the caller's lstat is opened
    without waiting (``O_NONBLOCK``) and is not."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    src_name, src_dir_fd = split_at(src, src_at)
    a = os.open(src_name, flags, dir_fd=src_dir_fd)
    try:
        b = os.open(name, flags, dir_fd=dir_fd)
        try:
            sa, sb = os.fstat(a), os.fstat(b)
            if not (stat.S_ISREG(sa.st_mode) and stat.S_ISREG(sb.st_mode)):
                return False
            if sa.st_size != sb.st_size:
                return False
            while True:
                chunk = os.read(a, _smallfiles.COMPARE_CHUNK)
                if chunk != _read_full(b, len(chunk) or 1):
                    return False
                if not chunk:
                    return True
                check()
        finally:
            os.close(b)
    finally:
        os.close(a)


def _read_full(fd: int, size: int) -> bytes:
    """``size`` bytes from ``fd`` (fewer only at its end): `os.read` may return less."""
    parts = [os.read(fd, size)]
    got = len(parts[0])
    while parts[-1] and got < size:
        parts.append(os.read(fd, size - got))
        got += len(parts[-1])
    return b"".join(parts)


def same_item(
    src: bytes, src_st: os.stat_result, dir_fd: int, src_at: At | None = None
) -> Callable[[bytes, os.stat_result], bool]:
    """The quick conflict test: does ``dir_fd/leaf`` (whose lstat is given) already hold the
    source? A regular file of the same size and mtime, or a symlink with the same target."""
    if stat.S_ISLNK(src_st.st_mode):
        src_name, src_dir_fd = split_at(src, src_at)
        target = os.readlink(src_name, dir_fd=src_dir_fd)

        def same_link(leaf: bytes, dst: os.stat_result) -> bool:
            return stat.S_ISLNK(dst.st_mode) and os.readlink(leaf, dir_fd=dir_fd) == target

        return same_link

    def same_file(leaf: bytes, dst: os.stat_result) -> bool:
        return stat.S_ISREG(dst.st_mode) and same_size_mtime(src_st, dst)

    return same_file


def strictly_newer(src_st: os.stat_result, dst_st: os.stat_result) -> bool:
    """Whether the source's mtime is strictly later than the destination's (the "update"
    policy). To the nanosecond when both carry a sub-second part, else to the second, as in
    `same_size_mtime` (a filesystem with 1 s timestamps must not make every file look old)."""
    a, b = src_st.st_mtime_ns, dst_st.st_mtime_ns
    if a % 1_000_000_000 and b % 1_000_000_000:
        return a > b
    return a // 1_000_000_000 > b // 1_000_000_000


def renamed_variants(dir_fd: int, name: bytes) -> list[bytes]:
    """The existing ``name (1).ext``, ``name (2).ext``… in ``dir_fd``, up to the first gap:
    where an interrupted run with the rename policy may have put its copy."""
    stem, ext = split_ext(name)
    found = []
    for n in range(1, 1000):
        candidate = numbered(stem, ext, n)
        try:
            os.stat(candidate, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            break
        found.append(candidate)
    return found


#: The index of an entry (or a task).
_INDEX = operator.attrgetter("index")

#: A `Bundle` of a copy or move stands for at most this many files (`bundled`).
BUNDLE_MAX = 64


class EntryBundle(Bundle):
    """A `Bundle` of walked small files held as their entries: the task of a file (a
    `CopyItem`, a `MoveItem`: ``make``) is made only for one it hands back (to run alone,
    or not reached), and its chunks go to the item class's group path over entries
    (``run_entries``: `CopyItem.run_entries`, `MoveItem.run_entries`), which a task of the
    pool's own groups reaches through its `Task.run_members`. Everything else is a
    `Bundle`'s: one queue item, outcome and booking, the same rows and values, the same
    hand-backs. (A task a file, with `bundled`'s pass over the tasks, cost ~1.4 us a file
    on the trio thread.)"""

    member_items = 1  # (a file is one item, as its task would say)

    def __init__(
        self,
        entries: list[Entry],
        make: Callable[[Entry], Task[Any]],
        run_entries: Callable[[list[Entry], TaskContext], Members],
        weight: int,
    ) -> None:
        """``weight``: the largest entry's size (the bundle's weight, as a `Bundle`'s)."""
        if not entries:
            raise ValueError("a bundle needs at least one task")
        self.members = entries
        self.index = entries[0].index
        self._weight = weight
        self.items = len(entries)
        self.ran = 0
        self.make = make
        self.run_entries = run_entries

    def task_of(self, member: Any) -> Task[Any]:
        return self.make(member)

    def label(self) -> str:
        more = len(self.members) - 1  # (a file's label is its entry's, as `TransferItem`'s)
        first: Entry = self.members[0]
        return f"{first.display} (+{more})" if more else first.display

    def run_chunk(self, chunk: list[Any], tc: TaskContext) -> Members:
        return self.run_entries(chunk, tc)

    def rebundle(self, rest: list[Any]) -> Bundle:
        weight = max(entry.size for entry in rest)
        return EntryBundle(rest, self.make, self.run_entries, weight)


def bundled(
    todo: list[Task[Any] | Entry],
    workers: int,
    make: Callable[[Entry], Task[Any]],
    run_entries: Callable[[list[Entry], TaskContext], Members],
    group_size: int = BUNDLE_MAX,
) -> list[Task[Any]]:
    """A walked batch's tasks, with its small files (given as their `Entry`: those whose
    task the pool would group, `groupable`) packed into `EntryBundle` s, in order: one
    queue item, one outcome and one booking per bundle instead of per file, and no task a
    file. A bundle holds up to `BUNDLE_MAX` files (and the item class's ``group_size``),
    under `GROUP_MAX_BYTES`, and no more than an even share of the batch's small files
    among ``workers`` (a hundred files on slow storage still spread over the workers); a
    lone file is its task (``make``), and so is every file with no ``workers`` (0: no
    bundles, e.g. a cluster runs the tasks)."""
    grouping = list(map(type, todo)).count(Entry)
    if grouping < 2 or not workers:
        return [item if isinstance(item, Task) else make(item) for item in todo]
    size = min(BUNDLE_MAX, group_size, -(-grouping // workers))
    out: list[Task[Any]] = []
    pack: list[Entry] = []
    n = total = top = 0
    for item in todo:
        if type(item) is not Entry:
            out.append(item)  # type: ignore[arg-type]
            continue
        weight = item.size
        if n and (n >= size or total + weight >= GROUP_MAX_BYTES):
            out.append(EntryBundle(pack, make, run_entries, top) if n > 1 else make(pack[0]))
            pack = []
            n = total = top = 0
        pack.append(item)
        n += 1
        total += weight
        if weight > top:
            top = weight
    if pack:
        out.append(EntryBundle(pack, make, run_entries, top) if len(pack) > 1 else make(pack[0]))
    return out


class Tally:
    """The counters of a job's result, kept in ``ctx.state`` so they add up across runs.

    ``failed`` counts this run only: resuming retries failed items. ``kinds``: the counters
    that a done item of each kind (`CopyDone.kind`) adds one to, for `count`; ``other``:
    those of a kind not in it.
    """

    def __init__(
        self,
        state: dict[str, Any],
        keys: Sequence[str],
        kinds: dict[str, tuple[str, ...]] | None = None,
        other: tuple[str, ...] = (),
    ) -> None:
        self.data: dict[str, Any] = state.setdefault("tally", {})
        for key in keys:
            self.data.setdefault(key, 0)
        self.data.setdefault("skipped_reasons", {})
        self.failed = 0
        self.kinds = kinds or {}
        self.other = other

    def count(self, outcome: Outcome[Any]) -> None:
        """Count one outcome of a copy's or move's tasks: a done item's bytes and its kind's
        counters (``kinds``), a `Bundle`'s for each file it finished, a skip or a failure.
        One call per outcome on the trio thread (a busy machine's bundles leave most small
        files to run as tasks of their own: one outcome each)."""
        value = outcome.value
        data, kinds, other = self.data, self.kinds, self.other
        if type(value) is CopyDone and outcome.status is OutcomeStatus.DONE:
            data["bytes"] += value.copied
            data["bytes_reused"] += value.reused
            for key in kinds.get(value.kind, other):
                data[key] += 1
            return
        done = self.bundle(outcome)
        if done is None:
            what = self.record(outcome)
            done = {} if what is None else {what: 1}
        for what, n in done.items():
            for key in kinds.get(what, other):
                data[key] += n

    def add(self, key: str, n: int = 1) -> None:
        self.data[key] += n

    def record(self, outcome: Outcome[Any]) -> str | None:
        """Count a failure or skip; return the "what" of a done item (None otherwise)."""
        status = outcome.status
        if status is OutcomeStatus.DONE:
            assert outcome.value is not None
            done = outcome.value
            if isinstance(done, BundleDone):
                raise TypeError("a bundle's outcome: count it with `bundle`")
            if not isinstance(done, CopyDone):  # a kept result, back from JSON
                done = CopyDone(*done)
            self.data["bytes"] += done.copied
            self.data["bytes_reused"] += done.reused
            return done.kind
        if status is OutcomeStatus.SKIPPED:
            self.data["skipped"] += 1
            reasons = self.data["skipped_reasons"]
            reasons[outcome.reason] = reasons.get(outcome.reason, 0) + 1
        elif status is OutcomeStatus.FAILED:
            self.failed += 1
        return None

    def bundle(self, outcome: Outcome[Any]) -> dict[str, int] | None:
        """For the outcome of a `Bundle`: count its files' bytes and return how many were
        done of each kind (`CopyDone.kind`); None for any other outcome (`record` it)."""
        done = outcome.value
        if not isinstance(done, BundleDone):
            return None
        values = done.values
        if not values:
            return {}
        # Column by column (C loops): a bundle's files are nearly always of one kind.
        kinds, copied, reused = zip(*values, strict=True)
        self.data["bytes"] += sum(copied)
        self.data["bytes_reused"] += sum(reused)
        first = kinds[0]
        n = len(kinds)
        return {first: n} if kinds.count(first) == n else dict(Counter(kinds))

    def result(self) -> dict[str, Any]:
        out = dict(self.data)
        out["failed"] = self.failed
        out["skipped_reasons"] = dict(sorted(self.data["skipped_reasons"].items()))
        return out


def _is_async(ask: AskCallback) -> bool:
    return inspect.iscoroutinefunction(ask) or inspect.iscoroutinefunction(
        getattr(ask, "__call__", None)  # noqa: B004 - an object with an async __call__
    )


async def _call(ask: AskCallback, conflict: Conflict) -> object:
    """The callback's answer: awaited if it is async, else called in a thread (abandoned,
    its answer unused, if the job is paused or cancelled meanwhile)."""
    if _is_async(ask):
        return await ask(conflict)  # type: ignore[misc]
    answer = await trio.to_thread.run_sync(ask, conflict, abandon_on_cancel=True)
    if inspect.isawaitable(answer):  # async after all (a callable we could not tell)
        return await answer
    return answer


async def _ask_interruptibly(ask: AskCallback, conflict: Conflict, tc: TaskContext) -> object:
    """The callback's answer, giving up when the job is paused or cancelled meanwhile."""
    answer: list[object] = []
    async with trio.open_nursery() as nursery:

        async def call() -> None:
            answer.append(await _call(ask, conflict))
            nursery.cancel_scope.cancel()

        nursery.start_soon(call)
        while True:
            if tc.interrupted:
                nursery.cancel_scope.cancel()
                break
            await trio.sleep(ASK_POLL)
    if not answer:
        tc.check()
        raise RuntimeError("ask callback returned nothing")  # pragma: no cover
    return answer[0]


@dataclasses.dataclass(slots=True)
class CopyPlan:
    """What every item of one run shares: the destination tree and the options."""

    tree: DestTree
    roots: list[str]
    #: Each root's name in the destination (``rel`` of its walked entries starts with it).
    names: list[bytes]
    policy: Policy
    #: How each file is copied, as the job's fields say (passed as is to `copy_file`).
    options: CopyOptions
    follow: bool
    resumed: bool
    ask: AskCallback | None
    group_off: bool = False
    #: The job's name token (`parjobs.ops._names`): every temporary of this plan carries it.
    token: bytes | None = None
    #: The choice answered "for all" (`Answer.for_all`): later conflicts are not asked.
    for_all: str | None = None
    #: One question at a time, however many workers meet a conflict.
    ask_lock: trio.Lock = dataclasses.field(default_factory=trio.Lock)
    #: A move's group path: entry index -> how its source differs from the file walked and
    #: copied (kept, not unlinked), for the item, run alone, to fail with that reason.
    kept: dict[int, str] = dataclasses.field(default_factory=dict)
    #: The highest entry index earlier runs of the job may have handed to a worker
    #: (`Reach`; -1 on a first run): only an entry up to it may find its destination put
    #: there by the job (`reached`).
    reach: int = -1
    #: The entries whose copy this run put in place and whose source it has not unlinked
    #: (a move's; dropped once moved, so it holds the ones in flight and failed): an attempt
    #: that failed after that (the unlink refused) and is tried again finds its own copy in
    #: the way (`reached`).
    landed: set[int] = dataclasses.field(default_factory=set)
    #: The source directories, reached from each root without following a symlink below it
    #: (made here, never passed: a cluster worker's plan makes its own).
    src_dirs: SourceDirs = dataclasses.field(init=False)
    #: A cluster worker's: the path map's directories below the sources' roots, as the
    #: worker sees them (`SourceDirs.anchors`).
    src_anchors: tuple[bytes, ...] = ()
    #: Whether the manager put the job's probe in the root and the path map's directories
    #: below it (`probe_plan`): a cluster worker checks them before it writes.
    probe: bool = False

    def __post_init__(self) -> None:
        self.src_dirs = SourceDirs(self.follow, self.src_anchors)

    def source_at(self, stack: contextlib.ExitStack[Any], entry: Entry, verb: str) -> At | None:
        """Entry's source as `SourceDirs.at` reaches it, held until ``stack`` closes; None
        when following symlinks (by request, as the walk did: the path is used)."""
        if self.follow:
            return None
        return stack.enter_context(self.src_dirs.at(entry.path, entry.rel, verb))

    def reached(self, index: int) -> bool:
        """Whether an earlier run may have written entry ``index``'s destination and been
        stopped before its checkpoint, or this run did (`landed`): what is there may be the
        job's own copy (compared byte for byte before it is taken for one). Beyond that a
        name in the way is a conflict, as in a fresh run, with nothing read."""
        return index <= self.reach or index in self.landed

    @property
    def portable(self) -> bool:
        """Whether the plan's items may run on a cluster worker: not when they may have to
        ask (the ``ask`` callback lives in this process)."""
        return self.policy != "ask"

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled for a cluster worker (`parjobs._cluster`): the destination travels as its
        path and the worker opens its own `DestTree` there (`_worker_plan`)."""
        if not self.portable:
            raise TypeError("a plan that asks about conflicts cannot leave its process")
        from .._cluster_remote import mapped_below  # (not loaded by a local copy)

        tree = self.tree
        args: tuple[Any, ...] = (
            tree.root,
            tree.replace_nondirs,
            tree.durable,
            self.roots,
            self.names,
            self.policy,
            self.options,
            self.follow,
            self.resumed,
            self.token,
            self.reach,
        )
        # Map directories below the root (a copy into a new directory is planned from its
        # parent: a map naming that directory) and below the sources' roots, which the
        # worker reaches by relative names: their paths, mapped by the pickling.
        anchors = _under(mapped_below(tree.root), self.names)
        sources = tuple(p for r in self.roots for p in mapped_below(os.fsencode(r)).values())
        if self.probe:
            return (_worker_plan, (*args, anchors, sources, True))
        return (_worker_plan, (*args, anchors, sources) if anchors or sources else args)

    @property
    def groups(self) -> bool:
        """Whether plain small files may go through `copy_small_files` (`CopyItem.run_group`):
        the one place that decides it from the options. Not without the C extension; options
        beyond mode, times and ``verify`` (`CopyOptions.groupable`; C verifies each copy
        before its rename), followed symlinks and overwriting take the Python path;
        ``durable`` does not (C fsyncs each file, `copy_group` each directory). (C still hands
        back a file that grew past a chunk, or is sparse, or is no longer regular.)"""
        return self.options.groupable and self._c_groups

    @property
    def move_groups(self) -> bool:
        """Whether a move across filesystems may copy plain small files in groups
        (`MoveItem.run_group`): as `groups`, but with ``verify`` and the owner and extended
        attributes kept, because the move's group path takes only files with no owner or
        attributes to carry and verifies each copy itself before removing its source.
        Not ``durable``: a durable move syncs its sources' directories too, alone."""
        options = self.options
        return not (options.hash_source or options.durable) and self._c_groups

    @property
    def _c_groups(self) -> bool:
        options = self.options
        return (
            _smallfiles.fastcopy is not None
            and not self.group_off
            and options.preserve_mode
            and options.preserve_times
            and not self.follow
            and self.policy != "overwrite"
        )

    def copy(
        self,
        src: bytes,
        name: bytes,
        dir_fd: int,
        tc: TaskContext,
        overwrite: bool,
        *,
        new_dir: bool = False,
        src_at: tuple[int, bytes] | None = None,
    ) -> CopyResult:
        """Copy ``src`` to ``name`` in ``dir_fd``; ``new_dir``: this run made that directory;
        ``src_at``: the source's directory fd and name (`SourceDirs.at`)."""
        return copy_file(
            src,
            name,
            self.options,
            dst_dir_fd=dir_fd,
            check=tc.check,
            on_bytes=tc.add_bytes,
            overwrite=overwrite,
            precheck=not new_dir,
            src_lstat=self.resumed,  # a fresh walk lstat'ed it moments ago
            dst_dev=self.tree.dev,
            owner=self.token,
            src_at=src_at,
        )

    def ask_user(self, tc: TaskContext, conflict: Conflict) -> str:
        """The ``ask`` callback's choice, from this worker thread (a trio thread); the
        choice answered for all, if there is one, without asking."""
        if self.for_all is not None:
            return self.for_all
        if self.ask is None:
            raise FileExistsError(
                errno.EEXIST,
                "destination exists and nobody can be asked",
                display(conflict.destination),
            )
        return trio.from_thread.run(self._ask, self.ask, conflict, tc)

    async def _ask(self, ask: AskCallback, conflict: Conflict, tc: TaskContext) -> str:
        async with self.ask_lock:
            if self.for_all is not None:  # answered for all while this one waited
                return self.for_all
            answer = await _ask_interruptibly(ask, conflict, tc)
            choice = answer.choice if isinstance(answer, Answer) else answer
            if choice not in ("skip", "overwrite", "rename"):
                raise ValueError(
                    f"ask callback answered {choice!r}; expected skip, overwrite or rename "
                    "(or an Answer of one)"
                )
            assert isinstance(choice, str)
            if isinstance(answer, Answer) and answer.for_all:
                self.for_all = choice
            return choice


#: A group path result meaning "this filesystem lacks what the C path needs": stop grouping.
NO_GROUPS_ERRNOS = frozenset({errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP})


def copy_group(
    plan: CopyPlan,
    entries: Sequence[Entry | None],
    *,
    compare: bool = False,
    plain: bool = False,
    sources: list[_smallfiles.SourceId | None] | None = None,
    sync: bool = False,
    unlinked: list[int | None] | None = None,
) -> list[Identity | None]:
    """Copy the walked plain files among ``entries`` (None: not for the group) whose
    directory this run created, with one `copy_small_files` call (C, the GIL released).

    Per entry, the identity of its copy (size, mtime_ns, inode), now in place, or None: not
    taken or handed back (a problem, a conflict, a file grown past a chunk), to be copied
    alone. Only new directories: elsewhere a destination may exist, and the alone path looks
    before it copies; the no-replace rename keeps guarding against other writers either
    way. A filesystem without what C needs turns the plan's groups off (`CopyPlan.group_off`).

    ``durable`` (or ``sync``: a move's, durable or not): C fsyncs each copy before its
    rename, and each directory that received one is synced once here, before anything is
    returned (so before anything is recorded, or a move unlinks a source). A directory whose
    fsync fails raises: the whole group fails with that error (its copies are in place; a
    resumed run finds them and counts them present). ``compare`` (copy --verify, a move's
    verify): C compares each copy with its source before its rename; one that differs is
    removed and handed back, to be copied and verified alone (which reports a real
    mismatch). ``plain`` (a move): only files with nothing to carry beyond mode and times go
    to C: none in a directory with the set-group-id bit (a new file there takes the
    directory's group; looked up once per directory), and C hands back a source not of this
    process' user and group, or, when the options keep extended attributes, one that has
    any (to be moved alone, which carries them). ``sources`` (a move, one None per entry):
    each copied entry's source identity as C copied it (`copy_small_files`), what the move
    may unlink. ``unlinked`` (a move, with ``sources`` and ``sync``; one None per entry):
    once the copies and their directories are on disk, the copied entries' sources are
    unlinked in one `unlink_files` call, which checks each copy still holds its name and
    each source is still the file copied; each result (0: unlinked) goes to its entry.
    """
    assert unlinked is None or (sync and sources is not None), "a source goes once synced"
    out: list[Identity | None] = [None] * len(entries)
    tree = plan.tree
    # (source dir fd, source name, destination dir fd, name): each source reached from its
    # root without following a symlink (`SourceDirs`), held until the sources are unlinked.
    batch: list[tuple[int, bytes, int, bytes]] = []
    where: list[int] = []
    held: list[bytes] = []
    sources_held = contextlib.ExitStack()
    # Each directory is looked up once per group (a group's files share a few): its fd, or
    # None when its files are copied alone (not new, set-group-id with ``plain``, or it
    # cannot be opened: alone, the copy reports that).
    fds: dict[bytes, int | None] = {}
    # Likewise each source directory (`SourceDirs.at`, ~2.5 us a file when looked up per
    # file): its fd, or None when it cannot be reached (its files are copied alone).
    src_fds: dict[tuple[int, bytes], int | None] = {}
    src_dev = 0  # (the first file's: C keys its caches of refusals by the pair)
    done = None
    gone: list[int] = []
    seen: list[_smallfiles.SourceId | None] | None = None if sources is None else []
    # The directory of the previous file (a group's files come a directory at a time, in
    # walk order): its fds, or None when its files are copied alone; each file below a root
    # in the same directory reuses them with no lookup.
    last: tuple[int, bytes] | None = None
    dir_fd: int | None = None
    src_fd: int | None = None
    try:
        for i, entry in enumerate(entries):
            if entry is None or entry.kind != "file":
                continue  # (sizes: the pool groups light tasks only; C checks max_size)
            parent, _, name = entry.rel.rpartition(b"/")
            if parent and last is not None and last[1] == parent and last[0] == entry.root:
                if dir_fd is not None and src_fd is not None:
                    batch.append((src_fd, name, dir_fd, name))
                    where.append(i)
                continue
            if parent in fds:
                dir_fd = fds[parent]
            else:
                try:
                    dir_fd = tree.acquire(parent)
                except OSError:
                    dir_fd = None
                else:
                    held.append(parent)
                    # (a sealed directory's files go alone, which fail them: `check_writable`)
                    if (
                        not tree.is_new(parent)
                        or tree.is_sealed(parent)
                        or (plain and os.fstat(dir_fd).st_mode & stat.S_ISGID)
                    ):
                        dir_fd = None
                fds[parent] = dir_fd
            if not parent:  # a root itself: its directory as the user named it, per file
                last = None
                if dir_fd is None:
                    continue
                try:
                    src_fd, src_name = sources_held.enter_context(
                        plan.src_dirs.at(entry.path, entry.rel, "copied")
                    )
                except OSError:
                    continue  # copied alone, which reports it
                batch.append((src_fd, src_name, dir_fd, name))
                where.append(i)
                src_dev = src_dev or entry.dev
                continue
            last = (entry.root, parent)  # (a root's rel names one path per parent)
            if dir_fd is None:
                src_fd = None  # (not looked up: its files are copied alone)
                continue
            # below its root: its source's directory, once per group
            if last in src_fds:
                src_fd = src_fds[last]
            else:
                try:
                    src_fd = sources_held.enter_context(
                        plan.src_dirs.at(entry.path, entry.rel, "copied")
                    )[0]
                except OSError:
                    src_fd = None  # its files are copied alone, which reports it
                src_fds[last] = src_fd
            if src_fd is not None:  # (below a root, the source's name is the copy's)
                batch.append((src_fd, name, dir_fd, name))
                where.append(i)
                src_dev = src_dev or entry.dev  # (a directory's first file comes this way)
        if batch:
            done = _smallfiles.copy_small_files(
                batch,
                src_dev=src_dev,
                dst_dev=tree.dev,
                src_lstat=plan.resumed,  # a fresh walk lstat'ed them moments ago
                max_size=plan.options.chunk_size,
                owner=plan.token,
                durable=plan.options.durable or sync,
                compare=compare,
                owned=plain,
                no_xattrs=plain and plan.options.preserve_xattrs,
                sources=seen,
            )
            if done is not None and (plan.options.durable or sync):
                landed = {batch[k][2] for k, result in enumerate(done[0]) if result == 0}
                for dir_fd in landed:  # the renames are on disk before any is recorded
                    os.fsync(dir_fd)
            if done is not None and unlinked is not None and seen:
                # Only now: the copies are complete, verified and on disk (their directories
                # still held, so each name is checked in the directory it was written in).
                gone = _smallfiles.unlink_files(
                    [
                        (src_name, *source[:4], dir_fd, name, written[2], src_fd, *source[4:])
                        for (src_fd, src_name, dir_fd, name), written, source in zip(
                            batch, done[1], seen, strict=True
                        )
                        if written is not None and source is not None
                    ]
                )
    finally:
        sources_held.close()
        for parent in held:
            tree.release(parent)
    if done is not None:
        codes, written = done
        if not NO_GROUPS_ERRNOS.isdisjoint(codes):
            plan.group_off = True  # e.g. no renameat2 here: the Python path copes
        if len(where) == len(out):  # (every entry went to C: the identities as C listed them)
            out = written  # (None unless its result is 0: in place)
        else:
            for i, identity in zip(where, written, strict=True):
                out[i] = identity
        if sources is not None and seen:
            for i, source in zip(where, seen, strict=True):
                sources[i] = source
        if unlinked is not None and gone:
            results = iter(gone)
            for i in where:
                if out[i] is not None:
                    unlinked[i] = next(results)
    return out


def landed_rows(
    action: str,
    stage: str,
    tree: DestTree,
    entries: Sequence[Entry | None],
    copies: Sequence[Identity | None],
    out: list[Any],
    rows: list[ItemRow],
    kind: str = "file",
) -> int:
    """For each entry whose copy is in place (``copies[i]``, its identity as C returned it:
    size, mtime_ns, inode), its value in ``out[i]`` (a `CopyDone` of ``kind`` and its size)
    and its item row appended to ``rows``: what `TaskContext.record` notes (``action``, the
    source and the destination as text, undecodable bytes as surrogate escapes, no detail,
    the identity, ``stage`` and the entry's index), built in one loop from the columns
    (no context or call a file). Returns the bytes of them all."""
    # (UTF-8 decoding restarts at every ASCII byte: the root's text, "/" and the relative
    # path's text are the text of `DestTree.path`'s bytes.)
    root = tree.root.decode("utf-8", "surrogateescape") + "/"
    total = 0
    append = rows.append
    for i, written in enumerate(copies):
        if written is None:
            continue
        entry = entries[i]
        assert entry is not None
        size, mtime_ns, inode = written
        total += size
        out[i] = _new_tuple(CopyDone, (kind, size, 0))  # CopyDone(kind, size), no Python call
        append(
            (
                action,
                entry.path.decode("utf-8", "surrogateescape"),
                root + entry.rel.decode("utf-8", "surrogateescape"),
                size,
                None,
                None,
                size,
                mtime_ns,
                inode,
                stage,
                entry.index,
            )
        )
    return total


#: `tuple.__new__`: builds a `CopyDone` without its generated ``__new__``'s Python frame.
_new_tuple = tuple.__new__


#: A worker's open destination trees, by (root, replace_nondirs, durable, anchors), newest
#: last.
_worker_trees: dict[tuple[bytes, bool, bool, tuple[tuple[bytes, bytes], ...]], DestTree] = {}
_worker_trees_lock = threading.Lock()
#: Destination trees a worker process keeps open.
WORKER_TREES = 8


def _worker_plan(
    root: bytes,
    replace_nondirs: bool,
    durable: bool,
    roots: list[str],
    names: list[bytes],
    policy: Policy,
    options: CopyOptions,
    follow: bool,
    resumed: bool,
    token: bytes | None,
    reach: int = -1,
    anchors: dict[bytes, bytes] | None = None,
    src_anchors: tuple[bytes, ...] = (),
    probe: bool = False,
) -> CopyPlan:
    """A `CopyPlan` unpickled on a cluster worker: its destination tree opened here (kept
    for the next groups of the run). The manager checked the destination's identity; a
    worker only knows it by path. Nothing here is new to this tree, so every file looks
    before it copies (`DestTree.is_new`). ``anchors``: the path map's directories below the
    root, where they are for this worker (`DestTree.anchors`); ``src_anchors``, those below
    the sources' roots (`SourceDirs.anchors`). ``probe``: the manager put the job's probe
    in the root and the anchors: `ForeignDirError` unless they hold it (`DestTree.verify`),
    before anything is written (the group's tasks fail with it)."""
    key = (root, replace_nondirs, durable, tuple(sorted((anchors or {}).items())))
    with _worker_trees_lock:  # (held through a first check: no group gets a tree it closes)
        tree = _worker_trees.pop(key, None)
        if tree is None:
            try:
                tree = DestTree(
                    root, replace_nondirs=replace_nondirs, durable=durable, anchors=anchors
                )
            except (FileNotFoundError, NotADirectoryError):
                if probe:
                    raise _probe.missing(root) from None
                raise
        if probe:
            assert token is not None  # (`open_plan` set it before `probe_plan`)
            try:
                tree.verify(token)
            except ForeignDirError:
                # Not kept, unless another job's check passed in it: the next group opens
                # the root again by path, and finds the share once it is mounted there (the
                # fds held are of the directory it hides).
                if tree.verified:
                    _worker_trees[key] = tree
                else:
                    tree.close()
                raise
        _worker_trees[key] = tree
        while len(_worker_trees) > WORKER_TREES:
            _worker_trees.pop(next(iter(_worker_trees))).close()
    return CopyPlan(
        tree,
        roots,
        names,
        policy,
        options,
        follow,
        resumed,
        None,
        token=token,
        reach=reach,
        src_anchors=src_anchors,
    )


def resolve_conflict(
    plan: CopyPlan,
    tc: TaskContext,
    src: bytes,
    src_st: os.stat_result,
    *,
    dir_fd: int,
    rel: bytes,
    put: Callable[[bytes, bool], T],
    deep_check: Callable[[bytes], bool] | None = None,
    resumed: bool,
    src_at: At | None = None,
) -> T | None:
    """Settle a destination ``rel`` (in ``dir_fd``) that exists for ``src``: return ``put``'s
    value, or None when ``resumed`` and it already is this job's earlier output.

    ``put(leaf, overwrite)`` writes the item; `same_item` is the quick test of "already
    there" (and of "update"), ``deep_check(leaf)`` the content test added to it on resume.
    """
    name = rel.rpartition(b"/")[2]
    identical = same_item(src, src_st, dir_fd, src_at)
    try:
        dst_st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:  # gone meanwhile: try once more
        return put(name, False)
    same = identical(name, dst_st)
    if resumed:
        if same and (deep_check is None or deep_check(name)):
            return None
        for variant in renamed_variants(dir_fd, name) if plan.policy == "rename" else ():
            vst = os.stat(variant, dir_fd=dir_fd, follow_symlinks=False)
            if identical(variant, vst) and (deep_check is None or deep_check(variant)):
                return None
    choice: str = plan.policy
    if choice == "ask":
        conflict = Conflict(
            os.fsdecode(src),
            os.fsdecode(plan.tree.path(rel)),
            src_st.st_size,
            dst_st.st_size,
            src_st.st_mtime,
            dst_st.st_mtime,
        )
        choice = plan.ask_user(tc, conflict)
    if choice == "update":  # rsync -u, cp -u: replace only an older destination
        if same or not strictly_newer(src_st, dst_st):
            raise Skip(UP_TO_DATE)
        choice = "overwrite"
    if choice == "skip":
        raise Skip(EXISTS)
    if choice == "overwrite":
        check_replaceable(dir_fd, name, plan.tree.display(rel))  # before copying a byte
        return put(name, True)
    if choice == "rename":
        for _ in range(100):
            try:
                return put(unique_name(name, dst_dir_fd=dir_fd), False)
            except FileExistsError:
                continue
    raise FileExistsError(errno.EEXIST, EXISTS, plan.tree.display(rel))


#: ``link()`` errors meaning "no hard link here" (another filesystem under the destination,
#: one without hard links, too many links): the file is copied instead.
_NO_LINK_ERRNOS = frozenset(
    {errno.EXDEV, errno.EPERM, errno.EMLINK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS}
)


#: Records read per page of a job's own item log (`firsts_made`).
_LOG_PAGE = 5000


async def firsts_made(
    ctx: JobContext, firsts: TaskDispatcher, links: Sequence[tuple[Entry, Entry]]
) -> dict[int, Identity]:
    """The copy this job made of each ``first`` of ``links`` (``(later name, first)``) in
    the stage ``firsts``, this run or an earlier one, by the first's index: the identity its
    item record holds (size, mtime_ns, inode). The only file a later name may be linked to
    (`link_first`): a file of the same size and mtime at the first's name may be the
    user's (a conflict policy kept it) or an earlier job's copy. A copy found in place on
    resume (its record lost to a kill) is recorded "present" with its identity once its
    bytes are the source's (`CopyItem._file`). Once the run's records so far are stored:
    this run's kept on the way (`TaskDispatcher.keep_written`, asked for every first name
    as it was walked), the job's log read only for firsts done without one (by an earlier
    run, or skipped): reading it all for every copy with hard links took seconds of a large
    tree's copy. A first with none (skipped, renamed, failed) is absent."""
    await ctx.checkpoint(force=True)
    made: dict[int, Identity] = {}
    earlier: set[int] = set()
    for _, first in links:
        i = first.index
        kept = firsts.written(i)
        if kept is not None:
            made[i] = kept
        elif firsts.is_completed(i):
            earlier.add(i)
    after, stage = 0, firsts.stage
    while earlier and (page := await ctx.job_items(ctx.job_id, after=after, limit=_LOG_PAGE)):
        for record in page:
            w = record.written
            if w is not None and record.index in earlier and record.stage == stage:
                made[record.index] = (w.size, w.mtime_ns, w.inode)
        after = page[-1].seq
    return made


async def run_links(
    ctx: JobContext,
    firsts: TaskDispatcher,
    links: Sequence[tuple[Entry, Entry]],
    make: Callable[[Entry, Entry, Identity | None], Task[CopyDone]],
    count: Callable[[Any], object],
) -> None:
    """A copy's or move's ``links`` stage, after the stage ``firsts`` put every first name
    in place: each later name of ``links`` (``(later name, first)``) not done yet, as the
    task ``make`` builds from it, its first and the copy the job made of that first
    (`firsts_made`), handed to the workers once covered by the run's reach (`covered`);
    each outcome to ``count``."""
    stage = ctx.task_dispatcher("links")
    todo = [(e, f) for e, f in links if not stage.is_completed(e.index)]
    made = await firsts_made(ctx, firsts, todo) if todo else {}
    tasks = [make(e, f, made.get(f.index)) for e, f in todo]
    async with contextlib.aclosing(covered(ctx, tasks)) as reached:
        async for outcome in stage.dispatch_many(reached):
            count(outcome)


def link_first(
    task: TransferItem, tc: TaskContext, dir_fd: int, first: Entry, made: Identity | None
) -> tuple[Landing, bool] | None:
    """Make ``task``'s entry (its leaf in ``dir_fd``), a later name of the file ``first``
    names, a hard link to ``first``'s copy, ``made`` by this job (`firsts_made`):
    ``(landing, False)`` where it was linked, ``(landing, True)`` when it already is (a run
    killed before its checkpoint), None to copy it instead: the source is no longer a link
    of ``first`` (``first.dev``, ``first.ino``) or not as walked (size and mtime: saved
    anew after ``first`` was copied, a link would lose that), the job made no copy of
    ``first`` at its name (skipped or renamed by a conflict policy, failed) or it is not
    there as made (replaced or changed since: size, mtime and inode), or the destination
    cannot link here.

    The link is made at its final name (``link()`` never replaces: atomic no-clobber), or,
    to overwrite, at a temporary renamed over it; a name in the way gets the conflict policy.
    """
    if made is None:
        return None
    plan, src, rel = task.plan, task.entry.path, task.entry.rel
    try:
        src_st = os.stat(src, follow_symlinks=plan.follow)
    except OSError:
        return None  # (the copy reports what is wrong)
    if (src_st.st_dev, src_st.st_ino) != (first.dev, first.ino):
        return None
    if (src_st.st_size, src_st.st_mtime_ns) != (first.size, first.mtime_ns):
        return None  # saved anew since the walk: ``first``'s copy holds older contents
    first_parent, _, first_name = first.rel.rpartition(b"/")
    try:
        first_fd = plan.tree.acquire(first_parent, create=False)
    except OSError:
        return None  # its directory was never made
    try:
        try:
            target = os.stat(first_name, dir_fd=first_fd, follow_symlinks=False)
        except OSError:
            return None
        if not (
            stat.S_ISREG(target.st_mode)
            and (target.st_size, target.st_mtime_ns, target.st_ino) == made
        ):
            return None  # not the first's copy as this job made it
        name = rel.rpartition(b"/")[2]

        def put(leaf: bytes, overwrite: bool) -> bool:
            if not overwrite:
                os.link(first_name, leaf, src_dir_fd=first_fd, dst_dir_fd=dir_fd)
                return True
            tmp = tmp_name(leaf, plan.token)
            os.link(first_name, tmp, src_dir_fd=first_fd, dst_dir_fd=dir_fd)
            try:
                rename_noreplace(tmp, leaf, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, overwrite=True)
            finally:  # (left in place by a rename onto another link of the same file)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp, dir_fd=dir_fd)
            return True

        overwrite = plan.policy == "overwrite"
        landing = Landing(name, overwrite and lexists(dir_fd, name))
        try:
            try:
                put(name, overwrite)
            except FileExistsError:
                dst = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                if (dst.st_dev, dst.st_ino) == (target.st_dev, target.st_ino):
                    return landing, True
                if task._settle(tc, src_st, dir_fd, landing.wrap(put)) is None:
                    return landing, True
        except OSError as exc:
            if exc.errno in _NO_LINK_ERRNOS:
                return None
            raise
        return landing, False
    finally:
        plan.tree.release(first_parent)
