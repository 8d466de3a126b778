"""A moved directory's metadata, as the move found it: recorded in the move's item log so an
undo can give the source directories it puts back their mode, owner, times, extended
attributes and ACLs (not the undo's time and default mode).

A move removes each source directory once its entries are gone; its destination directory
got the source's metadata (`apply_dir_metadata`), but it is not the directory an undo puts
the entries back into: that one is made anew (`os.makedirs`). So the move records, per
walked directory, a `ACTION` record whose ``detail`` is `PREFIX` and the JSON of `snapshot`,
and the undo applies it (`restore`) once the directory's entries are back, deepest first.
Data and the few calls that read or set it; the tasks live in `_finish` and `_undo`.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
from typing import Any

from .._items import DIRECTORY
from ._metadata import ACL_ACCESS, ACL_DEFAULT, XATTR_IGNORED, put_acls

#: The action of a move's record of a source directory: not "moved" (the directory itself
#: was not moved, and one the move kept is still there), which an undo before session 23
#: moves back: it counted each directory skipped, and took the destination directory aside
#: (a file going back out of it then found it gone, and stayed).
ACTION = "source-dir"
#: The ``detail`` of a move's record of a directory: this, then the JSON of `snapshot`.
PREFIX = DIRECTORY + " "


def snapshot(src: int | str, st: os.stat_result, mtime_ns: int | None) -> dict[str, Any]:
    """The metadata of the directory ``src`` (an fd, or a path: /proc/self/fd for an
    ``O_PATH`` one) whose `os.stat_result` is ``st``: mode, owner, times (``mtime_ns``
    instead of its mtime when given: a move's walked one), the device and inode it is, and
    its extended attributes (hex), ACLs among them. ``kept`` is set by the caller (`detail`)."""
    attrs: dict[str, str] = {}
    try:
        names = os.listxattr(src)
    except OSError as exc:
        if exc.errno not in XATTR_IGNORED:
            raise
        names = []
    for name in names:
        try:
            attrs[name] = os.getxattr(src, name).hex()
        except OSError as exc:
            if exc.errno not in XATTR_IGNORED:
                raise
    return {
        "mode": stat.S_IMODE(st.st_mode),
        "uid": st.st_uid,
        "gid": st.st_gid,
        "atime_ns": st.st_atime_ns,
        "mtime_ns": st.st_mtime_ns if mtime_ns is None else mtime_ns,
        "dev": st.st_dev,
        "ino": st.st_ino,
        "kept": False,
        "xattrs": attrs,
    }


def detail(meta: dict[str, Any]) -> str:
    """The record's ``detail`` for the snapshot ``meta``."""
    return PREFIX + json.dumps(meta, separators=(",", ":"))


def parse(text: str | None) -> dict[str, Any] | None:
    """The snapshot in a record's ``detail``; None for any other detail (a file's, or a
    malformed one: that directory is put back as before, undo's time and default mode)."""
    if text is None or not text.startswith(PREFIX):
        return None
    try:
        data = json.loads(text[len(PREFIX) :])
    except ValueError:
        return None
    return data if isinstance(data, dict) and "mode" in data else None


def is_same(meta: dict[str, Any], st: os.stat_result) -> bool:
    """Whether ``st`` is the very directory ``meta`` was read from (its device and inode;
    never for a snapshot read from the destination, which holds no source inode)."""
    return meta["ino"] is not None and (st.st_dev, st.st_ino) == (meta["dev"], meta["ino"])


def is_original(meta: dict[str, Any], st: os.stat_result) -> bool:
    """Whether ``st`` is the very source directory the move found and left in place (its
    mode and owner are its own: only its times moved with the entries)."""
    return bool(meta.get("kept")) and is_same(meta, st)


def restore(fd: int, meta: dict[str, Any], *, times_only: bool) -> None:
    """Give the directory open at ``fd`` the snapshot ``meta``: owner first (chown clears
    set-id bits), extended attributes, mode and ACLs, then the times last (an fchmod or a
    setxattr leaves the mtime as it is, but the times must follow the entries put back).
    ``times_only``: the times alone (`is_original`). An owner, attribute, mode or time this
    process may not set (EPERM: a directory of another user's the move left in place, an
    immutable one) is left as it is, as a copy leaves an owner: every entry under it is back,
    so the undo does not fail for it."""
    with contextlib.suppress(PermissionError):  # (EPERM/EACCES: see above)
        _restore(fd, meta, times_only)


def _restore(fd: int, meta: dict[str, Any], times_only: bool) -> None:
    if not times_only:
        try:
            os.fchown(fd, meta["uid"], meta["gid"])
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EINVAL):
                raise
        attrs = {name: bytes.fromhex(value) for name, value in meta["xattrs"].items()}
        for name, value in attrs.items():
            if name in (ACL_ACCESS, ACL_DEFAULT):
                continue
            try:
                os.setxattr(fd, name, value)
            except OSError as exc:
                if exc.errno not in XATTR_IGNORED:
                    raise
        os.fchmod(fd, meta["mode"])
        put_acls(fd, meta["mode"], attrs.get(ACL_ACCESS), attrs.get(ACL_DEFAULT), directory=True)
    os.utime(fd, ns=(meta["atime_ns"], meta["mtime_ns"]))
