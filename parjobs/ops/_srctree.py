"""`SourceDirs`: the source directories copy and move read, stat, rename and unlink
through, reached from each root without following a symlink below it.

A walked entry's path was right when the walk listed its directory; a directory swapped
for a symlink since would send a path elsewhere (a move renamed the other tree's file of
the same name away, a copy read it). Through these fds the swap fails the item instead.
Nothing is compared with the walk's identities, so a remount between runs changes nothing.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
from collections.abc import Collection, Iterator

from ._desttree import DestTree
from ._fs import DIR_FLAGS, At, display, split_at
from ._kernel import same_inode

#: An ``O_PATH`` fd of a source directory itself (its stat, its identity; no read access
#: needed), never a symlink.
DIR_PATH = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

#: Why an item fails when a directory above its source is no longer a directory.
REPLACED = "its directory was moved or replaced since it was listed; not {verb}"


def lstat_at(at: At, path: bytes) -> os.stat_result:
    """The lstat of source ``path`` reached through its directory fd (errors name
    ``path``)."""
    with named(path):
        return os.stat(at[1], dir_fd=at[0], follow_symlinks=False)


def unlink_at(at: At, path: bytes) -> None:
    """Unlink source ``path`` through its directory fd (errors name ``path``)."""
    with named(path):
        os.unlink(at[1], dir_fd=at[0])


@contextlib.contextmanager
def named(path: bytes, name: bytes | None = None) -> Iterator[None]:
    """An OSError of a call on a source by its name in its directory names its path, as
    the call by path did (with ``name``: only an error that names it)."""
    try:
        yield
    except OSError as exc:
        if name is None or exc.filename in (name, os.fsdecode(name)):
            exc.filename = path
        raise


class _RootDirs(DestTree):
    """The directory fds below one root (opened by the path the user gave, following a
    symlink the user named, as the walk did): each component with ``O_NOFOLLOW`` unless
    ``follow``."""

    check_flags = False  # (sources: never written into)

    def __init__(self, root: bytes, follow: bool) -> None:
        super().__init__(root, replace_nondirs=False, durable=False)
        self.follow = follow

    def _open_child(self, parent: int, key: bytes, leaf: bytes, create: bool) -> int:
        if self.follow:
            return os.open(leaf, DIR_FLAGS, dir_fd=parent)
        return super()._open_child(parent, key, leaf, create)


#: Roots whose directory fds stay open (least recently used closed first): a job of
#: thousands of roots must not hold one fd each.
MAX_ROOTS = 16


class SourceDirs:
    """One `_RootDirs` per root parent, made on first use (thread-safe); `close` closes
    them all."""

    def __init__(self, follow: bool, anchors: Collection[bytes] = ()) -> None:
        self.follow = follow
        #: A cluster worker's path map directories below the roots, as the worker sees them
        #: (`CopyPlan.src_anchors`): what lies below one is reached from it.
        self.anchors = frozenset(anchors)
        self._lock = threading.Lock()
        self._roots: dict[bytes, _RootDirs] = {}

    @contextlib.contextmanager
    def at(self, path: bytes, rel: bytes, verb: str) -> Iterator[tuple[int, bytes]]:
        """``(dir_fd, name)`` of the walked source ``path`` (``rel`` its name in the
        destination): its directory as the walk reached it, from its root. A symlink or
        file where a directory was raises OSError(ESTALE) naming why, never followed."""
        _, below, rest = rel.partition(b"/")  # rel starts with the root's destination name
        anchored = self._anchored(path, rel) if self.anchors else None
        if anchored is not None:  # below a mapped directory: from it
            root = anchored
            parent, _, name = path[len(root) + 1 :].rpartition(b"/")
        elif below and path not in self.anchors:
            root = path[: len(path) - len(rest) - 1]
            parent, _, name = rest.rpartition(b"/")
        else:  # the root itself: its directory as the user named it
            root, name = os.path.split(path)
            parent = b""
        with self._lock:
            dirs = self._roots.pop(root, None)  # (put back last: most recently used)
            if dirs is None:
                dirs = _RootDirs(root or b"/", self.follow)
            self._roots[root] = dirs
            if len(self._roots) > MAX_ROOTS:  # each pins its root's fd: many roots, few fds
                self._roots.pop(next(iter(self._roots))).close()  # (fds in use: once released)
        try:
            fd = dirs.acquire(parent, create=False)
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
            raise OSError(errno.ESTALE, REPLACED.format(verb=verb), display(path)) from None
        try:
            yield fd, name
        finally:
            dirs.release(parent)

    def _anchored(self, path: bytes, rel: bytes) -> bytes | None:
        """The deepest of `anchors` that ``path`` lies below, when the rest of ``path`` is
        the end of ``rel`` (the map put it there), else None."""
        best = None
        for anchor in self.anchors:
            if path.startswith(anchor + b"/") and (best is None or len(anchor) > len(best)):
                best = anchor
        if best is None or not rel.endswith(path[len(best) :]):
            return None
        return best

    @contextlib.contextmanager
    def dir_at(self, path: bytes, rel: bytes, verb: str) -> Iterator[At | None]:
        """`at` for the walked directory ``path``; None (use the path) for a root, which
        is what the user named (``link/`` included), or when following symlinks."""
        if self.follow or b"/" not in rel:
            yield None
        else:
            with self.at(path, rel, verb) as at:
                yield at

    def rmdir(self, path: bytes, rel: bytes, ino: int) -> None:
        """Remove the walked directory ``path`` (emptied by a move) through its parent's fd,
        and only while it is the directory the walk listed (``ino``: its inode number, as
        `_kernel.same_inode` compares it); else OSError. By path, a directory above it
        swapped for a symlink since sent the call into another tree, which lost its
        directory of that name if empty. The device is not compared: one renamed into
        its place is on its parent's filesystem (rename(2) does not cross them), a mount
        point is never removed (EBUSY), and a remount between runs renumbers devices (the
        walk's manifest holds the old numbers)."""
        with self.dir_at(path, rel, "removed") as at:
            name, dir_fd = split_at(path, at)
            fd = os.open(name, DIR_PATH, dir_fd=dir_fd)
            try:
                if not same_inode(fd, os.fstat(fd).st_ino, ino):
                    raise OSError(errno.ESTALE, REPLACED.format(verb="removed"), display(path))
            finally:
                os.close(fd)
            os.rmdir(name, dir_fd=dir_fd)

    def close(self) -> None:
        with self._lock:
            for dirs in self._roots.values():
                dirs.close()
            self._roots.clear()
