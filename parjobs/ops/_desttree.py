"""`DestTree`: the thread-safe cache of destination directory fds that copy and move write
through, opened one component at a time with ``O_NOFOLLOW``."""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import struct
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import TypeVar

from . import _probe
from ._errors import DirConflictError, SealedDirError
from ._fs import DIR_FLAGS, DIR_NOFOLLOW, check_replaceable, display, lexists
from ._paths import dir_identity

T = TypeVar("T")

#: The skip reason (and error text) of a non-directory where a directory is needed.
NOT_A_DIR = "destination exists and is not a directory"


#: ``FS_IOC_GETFLAGS`` (``_IOR('f', 1, long)``; `fcntl` has no name for it), and the inode
#: flags that forbid removing a name from a directory: ``FS_IMMUTABLE_FL``, ``FS_APPEND_FL``.
_GETFLAGS = 0x80006601 | struct.calcsize("l") << 16
_SEALED = ((0x10, "immutable"), (0x20, "append-only"))


def sealed(fd: int) -> str | None:
    """ "append-only" or "immutable" when directory ``fd`` has that flag (a rename out of a
    temporary there fails, and the temporary cannot be removed), else None (also where the
    filesystem keeps no such flags)."""
    try:
        buf = fcntl.ioctl(fd, _GETFLAGS, bytes(8))
    except OSError:
        return None
    flags = int.from_bytes(buf[:4], sys.byteorder)
    for flag, kind in _SEALED:
        if flags & flag:
            return kind
    return None


#: Directory fds kept open in a `DestTree` beyond those in use.
MAX_OPEN_DIRS = 256


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

    #: Whether directories' flags are read as they are opened (`check_writable`).
    check_flags = True

    def __init__(
        self,
        root: str | bytes,
        *,
        replace_nondirs: bool,
        durable: bool,
        root_new: bool = False,
        root_fd: int | None = None,
        anchors: dict[bytes, bytes] | None = None,
    ) -> None:
        self.root = os.fsencode(root)
        #: Directories below the root opened by a path of their own, not through their
        #: parent's fd: {rel: path}. A cluster worker's, from the path map (`_worker_plan`).
        self.anchors = anchors or {}
        self.replace_nondirs = replace_nondirs
        self.durable = durable
        self._new: set[bytes] = {b""} if root_new else set()
        self._lock = threading.Lock()
        fd = root_fd  # adopted: `make_plan` opened (and checked) it
        if fd is None:
            fd = os.open(self.root, DIR_FLAGS)
        self.dev = os.fstat(fd).st_dev
        #: What a later run compares (`check_identity`): the root's and its parent's
        #: [device, inode], set by `make_plan`.
        self.identity: dict[str, list[int]] = {"dest": dir_identity(fd)}
        self._slots: OrderedDict[bytes, list[int]] = OrderedDict({b"": [fd, 1]})  # root pinned
        #: Directories found append-only or immutable when opened: {rel: which}
        #: (`check_writable`); one ioctl per directory opened.
        self._sealed: dict[bytes, str] = {}
        if self.check_flags and (kind := sealed(fd)) is not None:
            self._sealed[b""] = kind
        self._closed = False
        #: A cluster worker's: the anchors held open since `verify` checked them, and the
        #: name tokens whose probes it found.
        self._pinned: set[bytes] = set()
        self._verified: set[bytes] = set()
        self._verify_lock = threading.Lock()

    def path(self, rel: bytes) -> bytes:
        return self.root + b"/" + rel if rel else self.root

    def is_new(self, rel: bytes) -> bool:
        """Whether this tree created directory ``rel`` (a set lookup: no lock needed)."""
        return rel in self._new

    def display(self, rel: bytes) -> str:
        return display(self.path(rel))

    def is_sealed(self, rel: bytes) -> bool:
        """Whether directory ``rel`` (acquired) was append-only or immutable when opened."""
        return rel in self._sealed

    def check_writable(self, rel: bytes) -> None:
        """Raise `SealedDirError` when directory ``rel`` (acquired) was append-only or
        immutable when opened: a file written there as a temporary could be neither renamed
        into place nor removed, so its item fails before anything is written. (A rename into
        it from elsewhere, a move within a filesystem, adds a name only: allowed.)"""
        kind = self._sealed.get(rel)
        if kind is not None:
            where = self.display(rel)
            err = SealedDirError(
                f"{kind}: {where} (no name can be removed there, so no temporary could be"
                " renamed into place; cp writes in place, parjobs never does)"
            )
            err.filename = where
            raise err

    def sealed_first(self, rel: bytes, dir_fd: int, name: bytes) -> None:
        """Before a copy's first write of ``name`` into directory ``rel`` (``dir_fd``): in an
        append-only or immutable one (`check_writable`), fail the item now when ``name`` is
        free there (its temporary could never be renamed into place, nor removed); when
        taken, raise `FileExistsError`, so its conflict policy decides as anywhere (skip,
        update when equal: nothing written), through a `guarded` put (a write fails too).
        A copy and a move across filesystems share it, so they agree."""
        if rel in self._sealed:
            if not lexists(dir_fd, name):
                self.check_writable(rel)
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), name)

    def guarded(self, rel: bytes, put: Callable[[bytes, bool], T]) -> Callable[[bytes, bool], T]:
        """``put(leaf, overwrite)`` into directory ``rel``, checked by `check_writable`
        before anything is written: a conflict policy's rename or overwrite in an
        append-only or immutable directory fails rather than leave a temporary there."""

        def checked(leaf: bytes, overwrite: bool) -> T:
            self.check_writable(rel)
            return put(leaf, overwrite)

        return checked

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

    @property
    def verified(self) -> bool:
        """Whether `verify` found the probe of some job here."""
        return bool(self._verified)

    def verify(self, token: bytes) -> None:
        """(A cluster worker's tree) Raise `ForeignDirError` unless the root and every anchor
        hold the probe the manager put there for the job of ``token`` (`parjobs.ops._probe`):
        checked once per token, through the very fds the job writes through, which stay
        open (pinned: never evicted and opened again by path) for the tree's life. A share
        unmounted later cannot redirect the job's writes to the directory left in its place:
        they go through fds of the share's directories. Nothing is made: a missing anchor is
        a directory that is not the manager's."""
        with self._verify_lock:
            if token in self._verified:
                return
            for rel in (b"", *sorted(self.anchors)):
                where = self.anchors.get(rel, self.root)
                try:
                    fd = self.acquire(rel, create=False)
                except (FileNotFoundError, NotADirectoryError):
                    raise _probe.missing(where) from None
                try:
                    _probe.check(fd, token, where)
                except BaseException:
                    self.release(rel)
                    raise
                if rel in self._pinned or not rel:  # (held already: the root always is)
                    self.release(rel)
                else:
                    self._pinned.add(rel)
            self._verified.add(token)

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
            for rel in (b"", *self._pinned):
                self._slots[rel][1] -= 1
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
            if key in self.anchors:
                slot = [self._open_anchor(key, create), 0]
            else:
                slot = [self._open_child(slot[0], key, parts[depth], create), 0]
            self._slots[key] = slot
            if self.check_flags and (kind := sealed(slot[0])) is not None:
                self._sealed[key] = kind
            else:
                self._sealed.pop(key, None)
        return slot

    def _open_child(self, parent: int, key: bytes, leaf: bytes, create: bool) -> int:
        try:
            fd = os.open(leaf, DIR_NOFOLLOW, dir_fd=parent)
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
            check_replaceable(parent, leaf, self.display(key))  # never a FIFO or device
            os.unlink(leaf, dir_fd=parent)  # the name only: a symlink is never followed
            return self._make(parent, leaf, key)
        if create:  # resuming into a directory finished read-only by an earlier run
            st = os.fstat(fd)
            if st.st_uid == os.geteuid() and st.st_mode & 0o700 != 0o700:
                os.fchmod(fd, stat.S_IMODE(st.st_mode) | 0o700)
        return fd

    def _open_anchor(self, key: bytes, create: bool) -> int:
        """Directory ``key`` at its own path (`anchors`), made when missing (as `make_plan`
        makes a destination root: its parent must exist); a symlink there is followed, as
        for the root, which is named by the user, or here by the path map's author."""
        path = self.anchors[key]
        try:
            return os.open(path, DIR_NOFOLLOW & ~os.O_NOFOLLOW)
        except FileNotFoundError:
            if not create:
                raise
        try:
            os.mkdir(path, 0o777)
        except FileExistsError:
            pass
        else:
            self._new.add(key)
        return os.open(path, DIR_NOFOLLOW & ~os.O_NOFOLLOW)

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
        return os.open(leaf, DIR_NOFOLLOW, dir_fd=parent)

    def _make(self, parent: int, leaf: bytes, key: bytes) -> int:
        try:
            os.mkdir(leaf, 0o777, dir_fd=parent)
        except FileExistsError:
            pass
        else:
            self._new.add(key)
            if self.durable:
                os.fsync(parent)
        return os.open(leaf, DIR_NOFOLLOW, dir_fd=parent)

    def _evict(self) -> None:
        for rel in list(self._slots):
            if len(self._slots) <= MAX_OPEN_DIRS:
                return
            slot = self._slots[rel]
            if slot[1] == 0:
                del self._slots[rel]
                os.close(slot[0])
