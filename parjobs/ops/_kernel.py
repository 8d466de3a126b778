"""What the kernel's fast copy paths (FICLONE, copy_file_range) accept: the errnos meaning "not
here", and the cache of filesystem pairs that refuse reflinks; shared by the Python copier and
the C group path (`_fastcopy` exports the same sets, checked at import by `_smallfiles`). Also
a filesystem's type (statfs) and block preallocation for big files where it pays."""

from __future__ import annotations

import ctypes
import errno
import fcntl
import functools
import os
from typing import Any

FICLONE = 0x40049409  # _IOW(0x94, 9, int)


# Errors meaning "this kernel fast path does not apply here": try the next method.
FALLBACK_ERRNOS = frozenset(
    {errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EBADF}
    | {errno.ENOTTY, errno.EPERM}  # ioctl unknown to the fs; seccomp-filtered syscalls
)


# FICLONE and copy_file_range errors that hold for every file of a (source fs, destination
# fs) pair: EXDEV between filesystems that cannot copy to each other (ext4 -> tmpfs), a
# filesystem or kernel without the call.
NO_REFLINK_ERRNOS = frozenset(
    {errno.EXDEV, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOTTY, errno.ENOSYS}
)


#: (source device, destination device) pairs that refused FICLONE for good.
NO_REFLINK: set[tuple[int, int]] = set()

#: ... and copy_file_range: their small files go straight to read/write, instead of paying a
#: failing call each (3,000 of them for 3,000 files copied disk -> tmpfs).
NO_RANGE: set[tuple[int, int]] = set()


def try_reflink(src_fd: int, src_dev: int, dst_fd: int, dst_dev: int | None) -> bool:
    """Clone ``src_fd`` into the empty ``dst_fd`` (FICLONE); False when the filesystems can't.

    A pair of filesystems that refused for good (not supported, cross-device) is remembered,
    so copying many small files does not pay a failing ioctl each. ``dst_dev`` (the
    destination directory's device, when the caller knows it) saves an fstat per file; a
    wrong hint only costs speed, never correctness.
    """
    devices = (src_dev, os.fstat(dst_fd).st_dev if dst_dev is None else dst_dev)
    if devices in NO_REFLINK:
        return False
    try:
        fcntl.ioctl(dst_fd, FICLONE, src_fd)
    except OSError as exc:
        if exc.errno not in FALLBACK_ERRNOS:
            raise
        if exc.errno in NO_REFLINK_ERRNOS:
            NO_REFLINK.add(devices)
        return False
    return True


#: statfs(2) ``f_type`` of the filesystems where `preallocate` pays: ext4 (ext2 and ext3 share
#: the magic; without extents they refuse fallocate, and the copy goes on without).
PREALLOCATE_ON = frozenset({0xEF53})

#: fallocate(2) mode: reserve blocks without changing the file's size.
FALLOC_FL_KEEP_SIZE = 1


@functools.cache
def _libc() -> Any:
    """The C library this process already has (no slow ``find_library``)."""
    return ctypes.CDLL(None, use_errno=True)


@functools.cache
def _fallocate() -> Any:
    """fallocate(2) with 64-bit offsets (glibc names it ``fallocate64`` too; recent musl
    only ``fallocate``, 64-bit there), or None when the C library has neither."""
    libc = _libc()
    func = getattr(libc, "fallocate64", None) or getattr(libc, "fallocate", None)
    if func is not None:
        func.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64)
    return func


def fs_type(target: int | str | bytes | os.PathLike[str] | os.PathLike[bytes]) -> int | None:
    """The statfs(2) ``f_type`` of the filesystem holding an open fd or a path (None when
    unknown)."""
    buf = ctypes.create_string_buffer(256)  # struct statfs is 120 bytes on 64-bit Linux
    libc = _libc()
    if isinstance(target, int):
        rc = libc.fstatfs(target, buf)
    else:
        rc = libc.statfs(os.fsencode(target), buf)
    if rc != 0:
        return None
    return int(ctypes.c_long.from_buffer(buf).value) & 0xFFFFFFFF


#: statfs(2) ``f_type`` of the filesystems whose inode numbers may change while the file or
#: directory stays: overlayfs (a directory, layers on different filesystems, without xino),
#: FUSE (without use_ino: sshfs), procfs (``/proc/sys``' directories), FAT and exFAT (USB
#: sticks, SD cards: ``iunique`` numbers each inode as it is read in) and CIFS/SMB
#: (``noserverino`` does so too). It gets a new number once its inode left the cache, so a
#: walk of a big tree found most of it "replaced" (`same_inode`). `_fastscan` exports the
#: same list, checked at import by `_hashing`. (FAT, exFAT and CIFS from the kernel's
#: sources: no such filesystem can be mounted where the suite runs.)
UNSTABLE_INODES = frozenset(
    {0x794C7630, 0x65735546, 0x9FA0, 0x4D44, 0x2011BAB0, 0xFF534D42, 0xFE534D42}
)


def same_inode(
    where: int | str | bytes | os.PathLike[str] | os.PathLike[bytes], ino: int, expect: int
) -> bool:
    """Whether inode number ``ino``, of a directory on the filesystem ``where`` (an fd or a
    path on it), is the one seen as ``expect``: equal, or on a filesystem of
    `UNSTABLE_INODES`, where a number tells nothing, any. For checks with another guard
    there: the walk's and a delete's (`_walk.is_expected`: ``O_NOFOLLOW``, the device, and
    for a delete the path from its root). Undo and a move's unlink compare the number as it
    is: it is their guard (a renumbered item is kept, never another taken)."""
    return ino == expect or fs_type(where) in UNSTABLE_INODES


def preallocate(fd: int, offset: int, length: int) -> bool:
    """Reserve the blocks for bytes ``offset:offset+length`` of the file being written to
    ``fd``, before writing them, where that pays (`PREALLOCATE_ON`); True if done.

    Why: ext4 otherwise reserves and maps blocks page by page as the copy dirties them
    (delayed allocation): preallocated, a 1 GiB ``copy_file_range`` copy took a third less
    CPU (0.36 -> 0.24 s, docs/benchmarks.md). Not on tmpfs, where it would zero pages that
    the copy then overwrites (+15 % CPU). The size is kept (FALLOC_FL_KEEP_SIZE), so a
    partial's length still says how much of it was written, as a resume needs. Not for
    sparse files (it would fill their holes). "Not here" errors return False; others (ENOSPC
    first of all) raise, as the write would have.
    """
    fallocate = _fallocate()
    if length <= 0 or fallocate is None or fs_type(fd) not in PREALLOCATE_ON:
        return False
    if fallocate(fd, FALLOC_FL_KEEP_SIZE, offset, length) == 0:
        return True
    err = ctypes.get_errno()
    if err in FALLBACK_ERRNOS:
        return False
    raise OSError(err, os.strerror(err))
