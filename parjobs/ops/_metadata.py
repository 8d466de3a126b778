"""Give a written file or directory its source's metadata: mode, times, xattrs, owner."""

from __future__ import annotations

import errno
import os
import stat

from ._fs import DIR_FLAGS, At, display, split_at

_XATTR_IGNORED = frozenset(
    {errno.EPERM, errno.EACCES, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENODATA}
)

#: Why a directory's metadata is not read: not a directory (a symlink) since the walk.
_REPLACED = "replaced since it was listed; its mode and times not read"


def copy_xattrs(src_fd: int, dst_fd: int) -> None:
    try:
        names = os.listxattr(src_fd)
    except OSError as exc:
        if exc.errno in _XATTR_IGNORED:
            return
        raise
    for attr in names:
        try:
            os.setxattr(dst_fd, attr, os.getxattr(src_fd, attr))
        except OSError as exc:
            if exc.errno not in _XATTR_IGNORED:
                raise


def apply_metadata(
    src_fd: int,
    dst_fd: int,
    st: os.stat_result,
    mode: bool,
    times: bool,
    xattrs: bool,
    owner: bool,
) -> None:
    """Copy metadata onto the open temporary; owner first, since chown clears set-id bits."""
    if owner:
        try:
            os.fchown(dst_fd, st.st_uid, st.st_gid)
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EINVAL):
                raise
    if xattrs:
        copy_xattrs(src_fd, dst_fd)
    if mode:
        os.fchmod(dst_fd, stat.S_IMODE(st.st_mode))
    if times:
        os.utime(dst_fd, ns=(st.st_atime_ns, st.st_mtime_ns))


def apply_dir_metadata(
    src: bytes,
    fd: int,
    follow: bool,
    xattrs: bool,
    owner: bool,
    durable: bool,
    mtime_ns: int | None = None,
    at: At | None = None,
) -> None:
    """Give the directory open at ``fd`` the mode and times (xattrs, owner) of ``src``.

    ``mtime_ns``: the source's mtime as walked, for a move, whose moving files out of ``src``
    changed its mtime since. ``at``: ``src``'s directory fd and name (`SourceDirs.dir_at`),
    read there, never through a symlink (by path, a directory above it swapped for one
    since gave the destination another tree's mode, times and attributes)."""
    name, dir_fd = split_at(src, at)
    flags = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
    if not follow or at is not None:
        flags |= os.O_NOFOLLOW  # (a root written ``link/`` is still followed: its slash)
    try:
        path_fd = os.open(name, flags, dir_fd=dir_fd)
    except OSError as exc:
        exc.filename = src
        if at is not None and exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise OSError(errno.ESTALE, _REPLACED, display(src)) from None
        raise
    src_fd = -1
    try:
        st = os.fstat(path_fd)
        if xattrs:  # (the very directory stat'ed: reopened through its O_PATH fd)
            src_fd = os.open(f"/proc/self/fd/{path_fd}", DIR_FLAGS)
        apply_metadata(src_fd, fd, st, True, False, xattrs, owner)
    finally:
        os.close(path_fd)
        if src_fd >= 0:
            os.close(src_fd)
    os.utime(fd, ns=(st.st_atime_ns, st.st_mtime_ns if mtime_ns is None else mtime_ns))
    if durable:
        os.fsync(fd)
