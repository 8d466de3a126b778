"""What the kernel's fast copy paths (FICLONE, copy_file_range) accept: the errnos meaning "not
here", and the cache of filesystem pairs that refuse reflinks; shared by the Python copier and
the C group path (`_fastcopy` exports the same sets, checked at import by `_smallfiles`)."""

from __future__ import annotations

import errno
import fcntl
import os

FICLONE = 0x40049409  # _IOW(0x94, 9, int)


# Errors meaning "this kernel fast path does not apply here": try the next method.
FALLBACK_ERRNOS = frozenset(
    {errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EBADF}
    | {errno.ENOTTY, errno.EPERM}  # ioctl unknown to the fs; seccomp-filtered syscalls
)


# FICLONE errors that hold for every file of a (source fs, destination fs) pair.
NO_REFLINK_ERRNOS = frozenset(
    {errno.EXDEV, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOTTY, errno.ENOSYS}
)


NO_REFLINK: set[tuple[int, int]] = set()


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
