"""Copy files and trees into a directory as a parallel, resumable job: `CopyJob` (``cp -r``).

How a copy runs::

    walk(sources)  --entries, stable indices-->  CopyItem tasks  --dispatcher-->  worker threads
        (manifest in ctx.job_dir)                 (one per file, dir, symlink…)   copy_file()
                                                                                       |
    FinishDirs (deepest first: dir modes/times; sweep of leftover temporaries) <------+

* Every walked entry is one indexed item, so a resumed run skips exactly what was checkpointed;
  worker threads stream many small files per thread call (a file's ``weight`` is its size),
  and hand plain small files to C in groups (`CopyItem.run_group`, `copy_small_files`).
* The destination side goes through `DestTree`: a cache of directory fds opened one component
  at a time with ``O_NOFOLLOW``, so a symlink planted in the destination never redirects a write
  and each file costs no path walk. Directories are created on demand by whichever item needs
  them first; their modes and times are applied at the end, deepest first.
* Conflicts follow ``on_conflict``. On a resumed run a destination that matches the source's
  size and mtime (and content, with ``verify``) is taken as this job's own earlier output, whose
  completion the interruption kept from being checkpointed; it is not a conflict.

`MoveJob` (``parjobs.ops.move``) reuses the tree, the checks and the tally defined here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import os
import stat
import threading
from collections import OrderedDict
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from contextlib import aclosing
from typing import Any, Literal, TypeVar, cast

import trio
import xxhash

from .._context import JobContext
from .._exceptions import Interrupted, JobSpecError, Skip
from .._job import Job, job_type, runtime_field
from .._task import RUN_ALONE, Outcome, OutcomeStatus, Task, TaskContext
from . import _copyfile
from ._copyfile import (
    _KINDS,
    _NAME_MAX,
    CopyError,
    CopyResult,
    _apply_metadata,
    _split_ext,
    _truncate,
    copy_file,
    copy_small_files,
    copy_symlink,
    remove_own_temps,
    same_size_mtime,
    unique_name,
)
from ._names import job_token, stored_token
from ._paths import (
    ancestor_ids,
    check_identity,
    check_writable_dir,
    dir_identity,
    existing_prefix,
)
from ._walk import Entry, walk_batches

T = TypeVar("T")

#: Files larger than this are copied (and resumable) in chunks of this size.
CHUNK_SIZE = 8 * 1024 * 1024
#: Directory fds kept open in a `DestTree` beyond those in use.
MAX_OPEN_DIRS = 256
#: How often a pending ``ask`` callback checks for pause/cancel.
ASK_POLL = 0.1

Policy = Literal["skip", "overwrite", "rename", "update", "fail", "ask"]
#: What the ``ask`` callback may answer.
Choice = Literal["skip", "overwrite", "rename"]

#: Skip reasons (kept short and path-free: the result counts them per reason).
EXISTS = "destination exists"
UP_TO_DATE = "destination is up to date"
NOT_A_DIR = "destination exists and is not a directory"

_DIR_OPEN = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
#: A group path result meaning "this filesystem lacks what the C path needs": stop grouping.
_NO_GROUPS_ERRNOS = frozenset({errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP})


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


#: ``async def ask(conflict) -> "skip" | "overwrite" | "rename"``
AskCallback = Callable[[Conflict], Awaitable[Choice]]
#: What an item task returns: (what, bytes copied, bytes reused from a partial).
Done = tuple[str, int, int]


class DirConflictError(CopyError):
    """A directory is needed where the destination holds something else (file, symlink)."""


class WalkError(CopyError):
    """The walk could not read an entry (unreadable directory, symlink loop)."""


def display(path: bytes | str) -> str:
    """A path for people and for the store: undecodable bytes as backslash escapes."""
    raw = os.fsencode(path)
    return raw.decode("utf-8", "backslashreplace")


def clean_error(exc: Exception) -> None:
    """Make an error's text storable: SQLite refuses the surrogates ``os.fsdecode`` makes."""
    if isinstance(exc, OSError) and isinstance(exc.filename, str):
        exc.filename = display(exc.filename)
    if len(exc.args) == 1 and isinstance(exc.args[0], str):
        exc.args = (display(exc.args[0]),)


# ---------------------------------------------------------------------------------------------
# the destination tree


class DestTree:
    """Thread-safe, reference-counted cache of directory fds below a trusted root.

    `acquire` returns the fd of ``root/rel`` (``rel`` is bytes, ``b""`` is the root),
    creating missing directories when asked. Each component is opened relative to its
    parent's fd with ``O_NOFOLLOW``: a symlink or file in the way raises `DirConflictError`,
    unless ``replace_nondirs`` (the overwrite policy) replaces it with a directory. Unused fds
    beyond `MAX_OPEN_DIRS` are closed, least recently used first; an fd in use is closed only
    once released, so a worker thread never writes through a recycled fd number.

    `is_new` tells whether this tree made a directory (``root_new``: the root), so it held
    nothing but what this run put there: copies into it skip the per-file "does the
    destination exist?" lookup (the no-replace rename still guards against other writers).
    """

    def __init__(
        self,
        root: str | bytes,
        *,
        replace_nondirs: bool,
        durable: bool,
        root_new: bool = False,
        root_fd: int | None = None,
    ) -> None:
        self.root = os.fsencode(root)
        self.replace_nondirs = replace_nondirs
        self.durable = durable
        self._new: set[bytes] = {b""} if root_new else set()
        self._lock = threading.Lock()
        fd = root_fd  # adopted: `make_plan` opened (and checked) it
        if fd is None:
            fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self.dev = os.fstat(fd).st_dev
        #: What a later run compares (`check_identity`): the root's and its parent's
        #: [device, inode], set by `make_plan`.
        self.identity: dict[str, list[int]] = {"dest": dir_identity(fd)}
        self._slots: OrderedDict[bytes, list[int]] = OrderedDict({b"": [fd, 1]})  # root pinned
        self._closed = False

    def path(self, rel: bytes) -> bytes:
        return self.root + b"/" + rel if rel else self.root

    def is_new(self, rel: bytes) -> bool:
        """Whether this tree created directory ``rel`` (a set lookup: no lock needed)."""
        return rel in self._new

    def display(self, rel: bytes) -> str:
        return display(self.path(rel))

    def acquire(self, rel: bytes, *, create: bool = True) -> int:
        """The fd of directory ``rel``; pair with `release`. Raises OSError when missing (and
        not ``create``) or unusable, `DirConflictError` when a non-directory is in the way."""
        with self._lock:
            if self._closed:
                raise RuntimeError("destination tree is closed")
            slot = self._slots.get(rel)
            if slot is None:
                slot = self._open(rel, create)
            else:
                self._slots.move_to_end(rel)
            slot[1] += 1
            if len(self._slots) > MAX_OPEN_DIRS + 32:
                self._evict()
            return slot[0]

    def release(self, rel: bytes) -> None:
        with self._lock:
            slot = self._slots[rel]
            slot[1] -= 1
            if self._closed and slot[1] == 0:
                del self._slots[rel]
                os.close(slot[0])

    def close(self) -> None:
        """Close every fd not in use now, the others when released."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._slots[b""][1] -= 1
            for rel, slot in list(self._slots.items()):
                if slot[1] == 0:
                    del self._slots[rel]
                    os.close(slot[0])

    def _open(self, rel: bytes, create: bool) -> list[int]:
        parts = rel.split(b"/")
        have = len(parts) - 1  # deepest cached ancestor
        while have > 0 and b"/".join(parts[:have]) not in self._slots:
            have -= 1
        slot = self._slots[b"/".join(parts[:have])]
        for depth in range(have, len(parts)):
            key = b"/".join(parts[: depth + 1])
            slot = [self._open_child(slot[0], key, parts[depth], create), 0]
            self._slots[key] = slot
        return slot

    def _open_child(self, parent: int, key: bytes, leaf: bytes, create: bool) -> int:
        try:
            fd = os.open(leaf, _DIR_OPEN, dir_fd=parent)
        except FileNotFoundError:
            if not create:
                raise
            return self._make(parent, leaf, key)
        except PermissionError:
            if not create:
                raise
            return self._open_own_unreadable(parent, leaf)
        except OSError as exc:
            if exc.errno not in (errno.ENOTDIR, errno.ELOOP):
                raise
            if not create:
                raise
            if not self.replace_nondirs:
                err = DirConflictError(f"{NOT_A_DIR}: {self.display(key)}")
                err.filename = self.display(key)
                raise err from None
            os.unlink(leaf, dir_fd=parent)  # the name only: a symlink is never followed
            return self._make(parent, leaf, key)
        if create:  # resuming into a directory finished read-only by an earlier run
            st = os.fstat(fd)
            if st.st_uid == os.geteuid() and st.st_mode & 0o700 != 0o700:
                os.fchmod(fd, stat.S_IMODE(st.st_mode) | 0o700)
        return fd

    @staticmethod
    def _open_own_unreadable(parent: int, leaf: bytes) -> int:
        """Open directory ``leaf`` that an earlier run finished unreadable (a source
        directory of mode 000 was unreadable at first): when it is ours, give it back
        ``u+rwx`` (the last step sets its mode again). Through an ``O_PATH`` fd, so the
        mode is set on that very directory, never through a symlink swapped in."""
        path_fd = os.open(
            leaf, os.O_PATH | os.O_NOFOLLOW | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=parent
        )
        try:
            st = os.fstat(path_fd)
            if st.st_uid != os.geteuid():
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), leaf)
            os.chmod(f"/proc/self/fd/{path_fd}", stat.S_IMODE(st.st_mode) | 0o700)
        finally:
            os.close(path_fd)
        return os.open(leaf, _DIR_OPEN, dir_fd=parent)

    def _make(self, parent: int, leaf: bytes, key: bytes) -> int:
        try:
            os.mkdir(leaf, 0o777, dir_fd=parent)
        except FileExistsError:
            pass
        else:
            self._new.add(key)
            if self.durable:
                os.fsync(parent)
        return os.open(leaf, _DIR_OPEN, dir_fd=parent)

    def _evict(self) -> None:
        for rel in list(self._slots):
            if len(self._slots) <= MAX_OPEN_DIRS:
                return
            slot = self._slots[rel]
            if slot[1] == 0:
                del self._slots[rel]
                os.close(slot[0])


# ---------------------------------------------------------------------------------------------
# checks shared by copy and move


def describe_transfer(verb: str, sources: Sequence[str], destination: str) -> str:
    """ "copy a, b, c and 2 more to dst" for job lists."""
    names = ", ".join(display(s) for s in sources[:3])
    more = f" and {len(sources) - 3} more" if len(sources) > 3 else ""
    return f"{verb} {names}{more} to {display(destination)}"


def make_plan(
    sources: Sequence[str],
    destination: str,
    *,
    policy: Policy,
    verify: bool,
    durable: bool,
    follow: bool,
    xattrs: bool,
    owner: bool,
    resumed: bool,
    ask: AskCallback | None,
    kind: str = "copy",
    identity: dict[str, Any] | None = None,
) -> CopyPlan:
    """Create the destination directory (its parent was checked) and plan the transfer.

    ``identity`` is what an earlier run recorded (`DestTree.identity`): the destination
    must still be that directory, or, when it is gone, be re-created in the same parent
    directory; otherwise `DestinationChangedError` is raised before anything is written.
    Everything below is then reached through the fds opened here, never by path again.
    """
    dest = os.path.abspath(destination)
    expect = identity or {}
    head, leaf = os.path.split(dest)
    parent_fd = os.open(head or "/", _DIR_OPEN & ~os.O_NOFOLLOW)  # a user's symlinks above
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
            root_fd = os.open(leaf, _DIR_OPEN, dir_fd=parent_fd)
        else:  # the user may name a symlinked directory; its identity is checked
            root_fd = os.open(leaf or ".", _DIR_OPEN & ~os.O_NOFOLLOW, dir_fd=parent_fd)
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
        durable=durable,
        root_new=made,
        root_fd=root_fd,
    )
    tree.identity["parent"] = parent_id
    return CopyPlan(
        tree=tree,
        roots=[os.path.abspath(s) for s in sources],
        policy=policy,
        verify=verify,
        durable=durable,
        follow=follow,
        xattrs=xattrs,
        owner=owner,
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
        fd = os.open(os.path.abspath(destination), _DIR_OPEN & ~os.O_NOFOLLOW)
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
    follow_symlinks: bool = False,
    moved_ok: bool = False,
) -> None:
    """Refuse, with a `JobSpecError` naming the problem, what ``cp -r``/``mv`` would refuse:
    no sources, a missing source, a source equal to (or containing) the destination or to its
    own target, two sources with the same name, a destination that is not a directory or whose
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
    if dst_st is not None and not stat.S_ISDIR(dst_st.st_mode):
        raise JobSpecError(
            f"{kind}: destination {display(destination)!r} exists and is not a directory"
        )
    if dst_st is None:
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
        try:
            # The item itself; a symlink stands for its target only when followed.
            src_st = os.stat(path, follow_symlinks=follow_symlinks)
        except FileNotFoundError:
            if not os.path.lexists(path):
                if moved_ok and os.path.lexists(os.path.join(dest, base)):
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
        if dst_st is not None:
            try:
                target = os.lstat(os.path.join(dest, base))  # never followed below the root
            except OSError:
                continue
            if (target.st_dev, target.st_ino) == src_id:
                raise JobSpecError(
                    f"{kind}: source {display(src)!r} is already its own target in the destination"
                )


def special_reason(mode: int, verb: str = "copied") -> str:
    """The skip reason of a FIFO, socket or device, e.g. "FIFO not copied"."""
    return f"{_KINDS.get(stat.S_IFMT(mode), 'special file')} not {verb}"


def same_content(src: bytes, dir_fd: int, name: bytes, check: Callable[[], None]) -> bool:
    """Whether ``src`` and ``dir_fd/name`` hold the same bytes (xxh3-128 of each)."""
    digests = []
    for path, where in ((src, None), (name, dir_fd)):
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=where)
        try:
            hasher = xxhash.xxh3_128()
            while chunk := os.read(fd, 1 << 20):
                hasher.update(chunk)
                check()
        finally:
            os.close(fd)
        digests.append(hasher.hexdigest())
    return digests[0] == digests[1]


def same_item(
    src: bytes, src_st: os.stat_result, dir_fd: int
) -> Callable[[bytes, os.stat_result], bool]:
    """The quick conflict test: does ``dir_fd/leaf`` (whose lstat is given) already hold the
    source? A regular file of the same size and mtime, or a symlink with the same target."""
    if stat.S_ISLNK(src_st.st_mode):
        target = os.readlink(src)

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
    stem, ext = _split_ext(name)
    found = []
    for n in range(1, 1000):
        tag = b" (%d)" % n
        candidate = _truncate(stem, _NAME_MAX - len(tag) - len(ext)) + tag + ext
        try:
            os.stat(candidate, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            break
        found.append(candidate)
    return found


def sweep_temporaries(destination: str, sources: Sequence[str], token: bytes | None) -> int:
    """Remove the temporaries (partials, their meta, one-shot temps) that the job owning name
    ``token`` may have left copying ``sources`` into ``destination``; return how many.

    Only names carrying the job's token are removed (`remove_own_temps`): a user's file named
    like a temporary, or another job's temporary, is never touched. Looks inside each
    ``destination/<source name>`` directory, and in ``destination`` itself (top-level files).
    No token: the job never wrote anything, so nothing is its own.
    """
    if token is None:
        return 0
    dest = os.fsencode(os.path.abspath(destination))
    removed = remove_own_temps(dest, token, recursive=False)
    for source in sources:
        top = dest + b"/" + os.path.basename(os.fsencode(os.path.abspath(source)))
        with contextlib.suppress(OSError):
            if stat.S_ISDIR(os.lstat(top).st_mode):
                removed += remove_own_temps(top, token)
    return removed


# ---------------------------------------------------------------------------------------------
# result bookkeeping


class Tally:
    """The counters of a job's result, kept in ``ctx.state`` so they add up across runs.

    ``failed`` counts this run only: resuming retries failed items.
    """

    def __init__(self, state: dict[str, Any], keys: Sequence[str]) -> None:
        self.data: dict[str, Any] = state.setdefault("tally", {})
        for key in keys:
            self.data.setdefault(key, 0)
        self.data.setdefault("skipped_reasons", {})
        self.failed = 0

    def add(self, key: str, n: int = 1) -> None:
        self.data[key] += n

    def record(self, outcome: Outcome[Any]) -> str | None:
        """Count a failure or skip; return the "what" of a done item (None otherwise)."""
        status = outcome.status
        if status is OutcomeStatus.DONE:
            assert outcome.value is not None
            what, copied, reused = outcome.value
            self.data["bytes"] += copied
            self.data["bytes_reused"] += reused
            return str(what)
        if status is OutcomeStatus.SKIPPED:
            self.data["skipped"] += 1
            reasons = self.data["skipped_reasons"]
            reasons[outcome.reason] = reasons.get(outcome.reason, 0) + 1
        elif status is OutcomeStatus.FAILED:
            self.failed += 1
        return None

    def result(self) -> dict[str, Any]:
        out = dict(self.data)
        out["failed"] = self.failed
        out["skipped_reasons"] = dict(sorted(self.data["skipped_reasons"].items()))
        return out


# ---------------------------------------------------------------------------------------------
# tasks


async def _ask_interruptibly(ask: AskCallback, conflict: Conflict, tc: TaskContext) -> str:
    """Await the callback, giving up when the job is paused or cancelled meanwhile."""
    answer: list[str] = []
    async with trio.open_nursery() as nursery:

        async def call() -> None:
            answer.append(await ask(conflict))
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
    policy: Policy
    verify: bool
    durable: bool
    follow: bool
    xattrs: bool
    owner: bool
    resumed: bool
    ask: AskCallback | None
    group_off: bool = False
    #: The job's name token (`parjobs.ops._names`): every temporary of this plan carries it.
    token: bytes | None = None

    @property
    def groups(self) -> bool:
        """Whether plain small files may go through `copy_small_files` (`CopyItem.run_group`):
        not without the C extension; options beyond mode and times, and overwriting, take
        the Python path."""
        return (
            _copyfile.fastcopy is not None
            and not self.group_off
            and not (self.verify or self.durable or self.follow or self.xattrs or self.owner)
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
    ) -> CopyResult:
        """Copy ``src`` to ``name`` in ``dir_fd``; ``new_dir``: this run made that directory."""
        return copy_file(
            src,
            name,
            dst_dir_fd=dir_fd,
            check=tc.check,
            on_bytes=tc.add_bytes,
            chunk_size=CHUNK_SIZE,
            overwrite=overwrite,
            durable=self.durable,
            preserve_xattrs=self.xattrs,
            preserve_owner=self.owner,
            verify=self.verify,
            precheck=not new_dir,
            src_lstat=self.resumed,  # a fresh walk lstat'ed it moments ago
            dst_dev=self.tree.dev,
            owner=self.token,
        )

    def ask_user(self, tc: TaskContext, conflict: Conflict) -> str:
        """Await the ``ask`` callback from this worker thread (a trio thread)."""
        if self.ask is None:
            raise FileExistsError(
                errno.EEXIST,
                "destination exists and nobody can be asked",
                display(conflict.destination),
            )
        choice = trio.from_thread.run(_ask_interruptibly, self.ask, conflict, tc)
        if choice not in ("skip", "overwrite", "rename"):
            raise ValueError(
                f"ask callback answered {choice!r}; expected skip, overwrite or rename"
            )
        return choice


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
) -> T | None:
    """Settle a destination ``rel`` (in ``dir_fd``) that exists for ``src``: return ``put``'s
    value, or None when ``resumed`` and it already is this job's earlier output.

    ``put(leaf, overwrite)`` writes the item; `same_item` is the quick test of "already
    there" (and of "update"), ``deep_check(leaf)`` the content test added to it on resume.
    """
    name = rel.rpartition(b"/")[2]
    identical = same_item(src, src_st, dir_fd)
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
        return put(name, True)
    if choice == "rename":
        for _ in range(100):
            try:
                return put(unique_name(name, dst_dir_fd=dir_fd), False)
            except FileExistsError:
                continue
    raise FileExistsError(errno.EEXIST, EXISTS, plan.tree.display(rel))


def _followed(path: bytes) -> bytes:
    """The file a followed symlink points to (copy_file never opens a symlink itself)."""
    return os.path.realpath(path) if stat.S_ISLNK(os.lstat(path).st_mode) else path


class CopyItem(Task[Done]):
    """Copy one walked entry to ``destination/<entry.rel>``.

    Queued items are grouped (`run_group`): the small plain files of a group are copied by
    one call into C with the GIL released, the rest item by item.
    """

    group_size = 64

    def __init__(self, entry: Entry, plan: CopyPlan) -> None:
        self.index = entry.index
        self.entry = entry
        self.plan = plan
        if entry.kind != "file" or not plan.groups:
            self.group_size = 1  # nothing for the group path: the pool treats it as plain

    @property
    def weight(self) -> int:
        return self.entry.size

    def label(self) -> str:
        return self.entry.display

    def run(self, tc: TaskContext) -> Done:
        try:
            return self._run(tc)
        except Skip:
            # Finished without copying (exists, up to date): its bytes count as finished
            # (`Progress.bytes_skipped`), or a completed job would show "completed 26%".
            tc.add_bytes(max(0, self.entry.size - tc.bytes_done))
            raise

    def _run(self, tc: TaskContext) -> Done:
        kind = self.entry.kind
        try:
            if kind == "file":
                return self._file(tc)
            if kind == "dir":
                self.plan.tree.acquire(self.entry.rel)  # creates it (merges into an existing one)
                self.plan.tree.release(self.entry.rel)
                return ("dir", 0, 0)
            if kind == "symlink":
                return self._symlink(tc)
            if kind == "special":
                raise Skip(special_reason(self.entry.mode))
            raise WalkError(f"cannot read: {self.entry.error}")
        except DirConflictError:
            if self.plan.policy == "skip":
                raise Skip(NOT_A_DIR) from None
            raise
        except OSError as exc:
            clean_error(exc)
            raise

    @classmethod
    def run_group(cls, tasks: Sequence[Task[Any]], tcs: Sequence[TaskContext]) -> list[Any]:
        """Copy the group's small files, in directories this run created, with one
        `copy_small_files` call; everything else (and any file it did not copy) runs alone.

        Only new directories: elsewhere a destination may exist, and `run` looks before it
        copies; the no-replace rename keeps guarding against other writers either way.
        """
        items = cast(Sequence[CopyItem], tasks)
        out: list[Any] = [RUN_ALONE] * len(items)
        plan = items[0].plan
        if not plan.groups:
            return out
        tree = plan.tree
        batch: list[tuple[bytes, int, bytes]] = []
        where: list[int] = []
        held: list[bytes] = []
        done = None
        try:
            for i, item in enumerate(items):
                entry = item.entry
                if entry.kind != "file" or item.plan is not plan:
                    continue  # (sizes: the pool groups light tasks only; C checks max_size)
                parent, _, name = entry.rel.rpartition(b"/")
                try:
                    dir_fd = tree.acquire(parent)
                except OSError:
                    continue  # run alone, the item reports it
                held.append(parent)
                if tree.is_new(parent):
                    batch.append((entry.path, dir_fd, name))
                    where.append(i)
            if batch:
                done = copy_small_files(
                    batch,
                    src_dev=items[where[0]].entry.dev,
                    dst_dev=tree.dev,
                    src_lstat=plan.resumed,  # a fresh walk lstat'ed them moments ago
                    max_size=CHUNK_SIZE,
                    owner=plan.token,
                )
        finally:
            for parent in held:
                tree.release(parent)
        if done is not None:
            for i, result, size in zip(where, *done, strict=True):
                if result == 0:
                    tcs[i].add_bytes(size)
                    out[i] = ("file", size, 0)
                elif result in _NO_GROUPS_ERRNOS:
                    plan.group_off = True  # e.g. no renameat2 here: the Python path copes
        return out

    def _file(self, tc: TaskContext) -> Done:
        plan, rel = self.plan, self.entry.rel
        parent, _, name = rel.rpartition(b"/")
        src = _followed(self.entry.path) if plan.follow else self.entry.path
        dir_fd = plan.tree.acquire(parent)
        try:

            def put(leaf: bytes, overwrite: bool) -> CopyResult:
                return plan.copy(src, leaf, dir_fd, tc, overwrite)

            try:
                res = plan.copy(
                    src,
                    name,
                    dir_fd,
                    tc,
                    plan.policy == "overwrite",
                    new_dir=plan.tree.is_new(parent),
                )
            except FileExistsError:
                src_st = os.stat(src)
                deep = functools.partial(same_content, src, dir_fd, check=tc.check)
                got = resolve_conflict(
                    plan,
                    tc,
                    src,
                    src_st,
                    dir_fd=dir_fd,
                    rel=rel,
                    put=put,
                    deep_check=deep if plan.verify else None,
                    resumed=plan.resumed,
                )
                if got is None:
                    tc.add_bytes(src_st.st_size)
                    return ("present", 0, 0)
                res = got
            return ("file", res.bytes_copied, res.bytes_reused)
        except OSError as exc:
            # A temporary's bare name means nothing to people: name the destination.
            name_in_error = exc.filename
            if isinstance(name_in_error, str):
                name_in_error = os.fsencode(name_in_error)
            if isinstance(name_in_error, bytes) and b".parjobs" in name_in_error:
                exc.filename = plan.tree.display(rel)
            raise
        finally:
            plan.tree.release(parent)

    def _symlink(self, tc: TaskContext) -> Done:
        plan, rel, src = self.plan, self.entry.rel, self.entry.path
        parent, _, name = rel.rpartition(b"/")
        dir_fd = plan.tree.acquire(parent)
        try:

            def put(leaf: bytes, overwrite: bool) -> None:
                copy_symlink(
                    src,
                    leaf,
                    dst_dir_fd=dir_fd,
                    overwrite=overwrite,
                    preserve_owner=plan.owner,
                    durable=plan.durable,
                    owner=plan.token,
                )

            try:
                put(name, plan.policy == "overwrite")
            except FileExistsError:
                src_st = os.lstat(src)
                resolve_conflict(
                    plan, tc, src, src_st, dir_fd=dir_fd, rel=rel, put=put, resumed=plan.resumed
                )
            return ("symlink", 0, 0)
        finally:
            plan.tree.release(parent)


class FinishDirs(Task[Done]):
    """The last step of a run: sweep leftover temporaries (when a run may have left some),
    then apply source modes and times to the destination directories, deepest first."""

    def __init__(
        self,
        index: int,
        plan: CopyPlan,
        dirs: list[tuple[bytes, bytes]],
        sweep: Callable[[], object] | None,
        after: Callable[[TaskContext], None] | None = None,
    ) -> None:
        self.index = index
        self.plan = plan
        self.dirs = dirs
        self.sweep = sweep
        self.after = after

    @property
    def weight(self) -> int:
        return 1 << 30  # may take a while: deliver earlier outcomes first

    def label(self) -> str:
        return f"finishing {self.plan.tree.display(b'')}"

    def run(self, tc: TaskContext) -> Done:
        if self.sweep is not None:
            self.sweep()
        plan, failures = self.plan, []
        for rel, src in sorted(self.dirs, key=lambda d: -d[0].count(b"/")):
            tc.check()
            try:
                fd = plan.tree.acquire(rel, create=False)
            except OSError:  # never created (conflict, skipped): nothing to finish
                continue
            try:
                apply_dir_metadata(src, fd, plan.follow, plan.xattrs, plan.owner, plan.durable)
            except FileNotFoundError:
                # The source directory is gone: a move's earlier run applied its metadata,
                # then removed it, and was killed before recording this step.
                continue
            except OSError as exc:
                failures.append(f"{plan.tree.display(rel)}: {exc.strerror or exc}")
            finally:
                plan.tree.release(rel)
        if self.after is not None:
            self.after(tc)
        if failures:
            raise CopyError(
                f"could not set mode/times of {len(failures)} directories; first: {failures[0]}"
            )
        return ("finish", 0, 0)


def apply_dir_metadata(
    src: bytes, fd: int, follow: bool, xattrs: bool, owner: bool, durable: bool
) -> None:
    """Give the directory open at ``fd`` the mode and times (xattrs, owner) of ``src``."""
    st = os.stat(src, follow_symlinks=follow)
    src_fd = -1
    if xattrs:
        src_fd = os.open(src, _DIR_OPEN if not follow else _DIR_OPEN & ~os.O_NOFOLLOW)
    try:
        _apply_metadata(src_fd, fd, st, True, True, xattrs, owner)
    finally:
        if src_fd >= 0:
            os.close(src_fd)
    if durable:
        os.fsync(fd)


# ---------------------------------------------------------------------------------------------
# the job


@job_type("copy", version=1)
class CopyJob(Job):
    """Copy files and directory trees into ``destination`` (created if missing), like
    ``cp -r``: ``sources=["a/"]`` lands in ``destination/a/``.

    ``on_conflict`` decides about an existing destination file: "skip", "overwrite",
    "rename" (``name (1).ext``), "update" (replace only a destination strictly older than
    the source, by mtime, else skip: rsync -u, cp -u), "fail"
    (that item fails, the job goes on), or "ask" (the ``ask`` callback decides per file). A
    directory merges into an existing directory; a non-directory in its way is replaced under
    "overwrite", skipped under "skip", and fails otherwise.

    The result: ``copied`` (files and symlinks), ``dirs``, ``skipped``, ``failed``, ``bytes``
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
    ask: AskCallback | None = runtime_field()

    def validate(self) -> None:
        check_paths("copy", self.sources, self.destination, follow_symlinks=self.follow_symlinks)

    def describe(self) -> str:
        return describe_transfer("copy", self.sources, self.destination)

    def _plan(self, resumed: bool, identity: Any) -> CopyPlan:
        return make_plan(
            self.sources,
            self.destination,
            policy=self.on_conflict,
            verify=self.verify,
            durable=self.durable,
            follow=self.follow_symlinks,
            xattrs=self.preserve_xattrs,
            owner=self.preserve_owner,
            resumed=resumed,
            ask=self.ask,
            kind="copy",
            identity=identity,
        )

    async def run(self, ctx: JobContext) -> dict[str, Any]:
        token = await job_token(ctx)  # checkpointed before any temporary is made
        identity = ctx.state.get("dest_identity")
        plan = await trio.to_thread.run_sync(self._plan, ctx.resumed, identity)
        if plan.tree.identity != identity:  # durable before anything is written
            ctx.state["dest_identity"] = plan.tree.identity
            await ctx.checkpoint(force=True)
        plan.token = token
        tally = Tally(ctx.state, ("copied", "dirs", "skipped", "bytes", "bytes_reused"))
        progress = ctx.progress
        progress.set_total(items=0, bytes=0, final=False)
        progress.set_message("copying")
        dirs: list[tuple[bytes, bytes]] = []
        try:
            async with aclosing(self._items(ctx, plan, dirs)) as items:
                async for outcome in ctx.task_dispatcher().dispatch_many(items):
                    what = tally.record(outcome)
                    if what is not None:  # (the manager checkpoints in the background)
                        tally.add("dirs" if what == "dir" else "copied")
            progress.finalize_totals()
            progress.set_message("finishing")
            progress.add_total(items=1)
            # Only a resumed run or one with failed items can have left temporaries behind.
            sweep = None
            if ctx.resumed or tally.failed:
                sweep = functools.partial(sweep_temporaries, self.destination, self.sources, token)
            finish = FinishDirs(ctx.run_number, plan, dirs, sweep)
            async for outcome in ctx.task_dispatcher("finish").dispatch_many([finish]):
                tally.record(outcome)
            ctx.state["swept_run"] = ctx.run_number
        finally:
            plan.tree.close()
        return tally.result()

    async def _items(
        self, ctx: JobContext, plan: CopyPlan, dirs: list[tuple[bytes, bytes]]
    ) -> AsyncGenerator[CopyItem, None]:
        add_total = ctx.progress.add_total
        try:
            walked = walk_batches(ctx, plan.roots, follow_symlinks=plan.follow)
            async with aclosing(walked) as batches:
                async for batch in batches:
                    add_total(len(batch), sum(e.size for e in batch))
                    for entry in batch:
                        if entry.kind == "dir":
                            dirs.append((entry.rel, entry.path))
                        yield CopyItem(entry, plan)
        except Interrupted:
            return  # the dispatcher lets the items in flight end, then raises the interrupt

    async def cleanup(self, ctx: JobContext, *, cancelled: bool) -> None:
        """Remove this job's leftover partials and temporaries (never anyone else's), unless
        this run's last step already did (a completed run that needed it swept before
        finishing directory times)."""
        if not cancelled and ctx.state.get("swept_run") == ctx.run_number:
            return
        if not await trio.to_thread.run_sync(dest_is_unchanged, self.destination, ctx.state):
            return  # swapped since: whatever is there now is not this job's
        token = stored_token(ctx.state)
        await trio.to_thread.run_sync(sweep_temporaries, self.destination, self.sources, token)


__all__ = [
    "AskCallback",
    "Conflict",
    "CopyJob",
    "DestTree",
    "check_paths",
    "dest_is_unchanged",
]
