"""Give a written file or directory its source's metadata: mode, times, xattrs, owner."""

from __future__ import annotations

import errno
import os
import stat
import struct
from collections.abc import Callable

from ._fs import At, display, split_at

#: Errors of reading or setting an extended attribute that mean "not here" (none, not
#: supported, not permitted): skipped, as ``cp -a`` does.
XATTR_IGNORED = frozenset(
    {errno.EPERM, errno.EACCES, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENODATA}
)

#: Why a directory's metadata is not read: not a directory (a symlink) since the walk.
_REPLACED = "replaced since it was listed; its mode and times not read"


#: A POSIX ACL's extended attributes: a file's or directory's access ACL (part of its mode,
#: as `cp -p` keeps it) and a directory's default ACL (what files made in it get).
ACL_ACCESS = "system.posix_acl_access"
ACL_DEFAULT = "system.posix_acl_default"

#: Setting an ACL refused because the destination cannot hold it (a filesystem without ACLs,
#: a user id it cannot map): the mode is narrowed instead.
_ACL_REFUSED = frozenset({errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM, errno.EINVAL})

_ACL_GROUP_OBJ, _ACL_MASK = 0x04, 0x10  # entry tags (linux/posix_acl_xattr.h)


def _read_xattr(src: int | str, attr: str) -> bytes | None:
    try:
        return os.getxattr(src, attr)
    except OSError as exc:
        if exc.errno in XATTR_IGNORED:
            return None
        raise


def narrowed_mode(acl: bytes, mode: int) -> int:
    """``mode`` with group bits no wider than the owning group's access under ``acl``.

    With an ACL the mode's group bits are its *mask* (the most any named user or group
    gets), which can be wider than the owning group's own entry: ``group::r--`` with
    ``user:bob:rw-`` has mode ``rw-rw----``. Without the ACL that mode gives the whole group
    write, so a copy that cannot keep the ACL keeps ``group:: & mask`` (named entries lose
    their access rather than the group gaining it). A malformed ACL gives no group bits."""
    group, mask = 0, 7
    body = acl[4:]
    if len(acl) < 4 or len(body) % 8:
        return mode & ~0o070
    for tag, perm, _ in struct.iter_unpack("<HHI", body):
        if tag == _ACL_GROUP_OBJ:
            group = perm & 7
        elif tag == _ACL_MASK:
            mask = perm & 7
    return (mode & ~0o070) | ((group & mask) << 3)


def keep_acl(src: int | str, dst_fd: int, mode: int, directory: bool) -> None:
    """Give ``dst_fd`` (its mode set to ``mode``) the source's access ACL, and a directory's
    default ACL, as ``cp -p`` does: the ACL is part of the mode, and the mode alone (its
    group bits the ACL's mask) can say more than the ACL allows. A destination that cannot
    hold the access ACL gets `narrowed_mode` instead; one that cannot hold a default ACL
    goes without (it only shapes files made there later). ``src``: an fd or a path."""
    default = _read_xattr(src, ACL_DEFAULT) if directory else None
    put_acls(dst_fd, mode, _read_xattr(src, ACL_ACCESS), default, directory)


def put_acls(
    dst_fd: int, mode: int, acl: bytes | None, default: bytes | None, directory: bool
) -> None:
    """`keep_acl` with the ACLs given (None: the source had none): what an undo puts back
    on a directory it made, from what the move recorded (`_dirmeta`)."""
    if acl is None:
        _drop_acl(dst_fd, ACL_ACCESS)
    elif not _set_acl(dst_fd, ACL_ACCESS, acl):
        os.fchmod(dst_fd, narrowed_mode(acl, mode))
    if directory:
        if default is None:
            _drop_acl(dst_fd, ACL_DEFAULT)
        else:
            _set_acl(dst_fd, ACL_DEFAULT, default)


def _drop_acl(dst_fd: int, attr: str) -> None:
    """Remove the ACL the copy took from its directory's default ACL, for a source without
    one: ``cp -p`` keeps the mode alone, and what it inherited could give named users or
    groups access the source did not."""
    try:
        os.removexattr(dst_fd, attr)
    except OSError as exc:
        if exc.errno not in XATTR_IGNORED:
            raise


def _set_acl(dst_fd: int, attr: str, acl: bytes) -> bool:
    """Set ``acl``: False when the destination refuses it (`_ACL_REFUSED`)."""
    try:
        os.setxattr(dst_fd, attr, acl)
    except OSError as exc:
        if exc.errno not in _ACL_REFUSED:
            raise
        return False
    return True


def copy_xattrs(src_fd: int | str, dst_fd: int) -> None:
    try:
        names = os.listxattr(src_fd)
    except OSError as exc:
        if exc.errno in XATTR_IGNORED:
            return
        raise
    for attr in names:
        try:
            os.setxattr(dst_fd, attr, os.getxattr(src_fd, attr))
        except OSError as exc:
            if exc.errno not in XATTR_IGNORED:
                raise


def apply_metadata(
    src_fd: int | str,
    dst_fd: int,
    st: os.stat_result,
    mode: bool,
    times: bool,
    xattrs: bool,
    owner: bool,
) -> None:
    """Copy metadata onto the open temporary; owner first, since chown clears set-id bits.
    The mode carries the source's POSIX ACLs (`keep_acl`). ``src_fd``: the source's fd, or
    a path to it (a directory's, through /proc/self/fd)."""
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
        keep_acl(src_fd, dst_fd, stat.S_IMODE(st.st_mode), stat.S_ISDIR(st.st_mode))
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
    seen: Callable[[str, os.stat_result], None] | None = None,
) -> None:
    """Give the directory open at ``fd`` the mode and times (xattrs, owner) of ``src``.

    ``mtime_ns``: the source's mtime as walked, for a move, whose moving files out of ``src``
    changed its mtime since. ``at``: ``src``'s directory fd and name (`SourceDirs.dir_at`),
    read there, never through a symlink (by path, a directory above it swapped for one
    since gave the destination another tree's mode, times and attributes). ``seen``: called
    with the source as read (a /proc/self/fd path to it, and its stat), before the
    destination is changed: a move records it for its undo (`_dirmeta`)."""
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
    try:
        st = os.fstat(path_fd)
        # (the very directory stat'ed, its xattrs and ACLs read through its O_PATH fd)
        proc = f"/proc/self/fd/{path_fd}"
        if seen is not None:
            seen(proc, st)
        apply_metadata(proc, fd, st, True, False, xattrs, owner)
    finally:
        os.close(path_fd)
    os.utime(fd, ns=(st.st_atime_ns, st.st_mtime_ns if mtime_ns is None else mtime_ns))
    if durable:
        os.fsync(fd)
