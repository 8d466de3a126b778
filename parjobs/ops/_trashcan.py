"""Reading and restoring the freedesktop trash, whoever trashed the items (blocking).

`trash_dirs` finds the trash directories of this user: the home trash and, on every mounted
volume, ``$topdir/.Trash/$uid`` (only when ``$topdir/.Trash`` is a sticky directory, not a
symlink, as the spec requires) and ``$topdir/.Trash-$uid``. `list_trash` reads their
``info/*.trashinfo`` files; `restore` moves one item back to its original path.

Restoring is a no-replace rename of ``files/NAME`` to the original path (its missing parent
directories created, mode 0o777 minus the umask), then the removal of ``info/NAME.trashinfo``,
so an interruption between the two leaves an info file whose item is gone, which the next
`restore` of it finishes (the spec's readers ignore such orphans). An existing file at the
original path is never replaced.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from dataclasses import dataclass
from datetime import datetime

from ._errors import TrashError
from ._fs import DIR_FLAGS, mount_points, rename_noreplace
from ._trash import home_trash_dir, read_trashinfo

_INFO = b".trashinfo"


@dataclass(frozen=True, slots=True)
class TrashEntry:
    """One trashed item: where it is (``trashed_path``, ``info_path``), where it came from
    (``original_path``) and when it was trashed (``deletion_date``, local time, or None)."""

    trashed_path: bytes
    info_path: bytes
    original_path: bytes
    deletion_date: datetime | None

    @property
    def trash_dir(self) -> bytes:
        return os.path.dirname(os.path.dirname(self.trashed_path))


def _usable(trash: bytes) -> bool:
    return os.path.isdir(os.path.join(trash, b"info")) and not os.path.islink(trash)


def trash_dirs(xdg_data_home: str | bytes | None = None) -> list[bytes]:
    """The existing trash directories of this user: home first, then per volume."""
    found = [home_trash_dir(xdg_data_home)]
    uid = str(os.getuid()).encode()
    for top in mount_points():
        shared = os.path.join(top, b".Trash")
        with contextlib.suppress(OSError):
            st = os.lstat(shared)
            if stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_ISVTX:
                found.append(os.path.join(shared, uid))
        found.append(os.path.join(top, b".Trash-" + uid))
    seen: set[tuple[int, int]] = set()
    out: list[bytes] = []
    for trash in found:
        try:
            st = os.stat(trash)
        except OSError:
            continue
        if (st.st_dev, st.st_ino) not in seen and _usable(trash):
            seen.add((st.st_dev, st.st_ino))
            out.append(trash)
    return out


def list_trash(dirs: list[bytes] | None = None) -> list[TrashEntry]:
    """Every item of the trash ``dirs`` (default `trash_dirs`) with a readable info file,
    newest first. Info files that are damaged or whose item is gone are left out."""
    entries: list[TrashEntry] = []
    for trash in trash_dirs() if dirs is None else dirs:
        info_dir = os.path.join(trash, b"info")
        try:
            names = os.listdir(info_dir)
        except OSError:
            continue
        for name in names:
            if not name.endswith(_INFO):
                continue
            item = os.path.join(trash, b"files", name[: -len(_INFO)])
            info_path = os.path.join(info_dir, name)
            with contextlib.suppress(OSError, ValueError):
                if not os.path.lexists(item):
                    continue
                info = read_trashinfo(info_path)
                entries.append(TrashEntry(item, info_path, info.original_path, info.deletion_date))
    entries.sort(key=lambda e: (e.deletion_date or datetime.min, e.trashed_path), reverse=True)
    return entries


def info_of(trashed_path: bytes) -> bytes:
    """The ``.trashinfo`` of an item at ``<trash>/files/NAME``."""
    files_dir, name = os.path.split(os.path.normpath(trashed_path))
    if os.path.basename(files_dir) != b"files":
        raise TrashError(
            None, "not an item in a trash (not in a files/ directory)", os.fsdecode(trashed_path)
        )
    return os.path.join(os.path.dirname(files_dir), b"info", name + _INFO)


def restore(trashed_path: bytes, to: bytes | None = None) -> bytes:
    """Move the trashed item back to its original path (or ``to``) and drop its info file;
    returns where it went. `FileExistsError` when something is at that path (nothing is
    moved); `TrashError` for an item without its info file."""
    info_path = info_of(trashed_path)
    try:
        original = read_trashinfo(info_path).original_path
    except FileNotFoundError:
        raise TrashError(
            errno.ENOENT,
            "no .trashinfo for this item: its original path is unknown",
            os.fsdecode(trashed_path),
        ) from None
    target = original if to is None else to
    if not os.path.lexists(trashed_path):
        if os.path.lexists(target):  # restored by an earlier, interrupted call
            with contextlib.suppress(FileNotFoundError):
                os.unlink(info_path)
            return target
        raise FileNotFoundError(
            errno.ENOENT, "not in the trash any more", os.fsdecode(trashed_path)
        )
    parent, name = os.path.split(target)
    os.makedirs(parent, exist_ok=True)
    fd = os.open(parent, DIR_FLAGS)
    try:
        rename_noreplace(trashed_path, name, dst_dir_fd=fd, overwrite=False)
    except OSError as exc:
        if exc.errno == errno.EEXIST:
            raise FileExistsError(
                errno.EEXIST,
                "something is at the original path; not restored",
                os.fsdecode(target),
            ) from None
        raise
    finally:
        os.close(fd)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(info_path)
    return target


__all__ = ["TrashEntry", "info_of", "list_trash", "restore", "trash_dirs"]
