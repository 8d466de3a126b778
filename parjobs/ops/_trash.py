"""Blocking primitives to move items to the trash (freedesktop.org Trash 1.0) or delete them.

Everything here is synchronous and meant to run in a worker thread. Paths may be ``str`` or
``bytes`` (names that are not UTF-8); results come back in the type they were given. Symlinks
are never followed: a symlink is trashed or deleted as the link itself.

Trashing (`trash_path`)
-----------------------
* Which trash: the home trash ``$XDG_DATA_HOME/Trash`` (default ``~/.local/share/Trash``) when
  the item is on the same filesystem (``st_dev``) as the home trash. Otherwise a trash on the
  item's own volume, whose top directory ``$topdir`` is the item's mount point: the shared
  ``$topdir/.Trash/$uid`` if ``$topdir/.Trash`` is a real directory (not a symlink) with the
  sticky bit set, else ``$topdir/.Trash-$uid``. `select_trash_dir` makes this choice and is
  testable on its own. Directories it creates get mode 0o700.
* The item is moved with ``rename(2)`` only, never copied: that is what per-volume trash is
  for. If the rename fails (``EXDEV`` for a bind mount, say), the ``.trashinfo`` is removed and
  `TrashError` is raised with the item untouched.
* ``info/NAME.trashinfo`` is written first, created with ``O_CREAT | O_EXCL``: creating it is
  what reserves ``NAME``. Its content is exactly::

      [Trash Info]
      Path=<original path, percent-encoded per RFC 2396, '/' kept>
      DeletionDate=YYYY-MM-DDThh:mm:ss

  with the deletion date in local time without a timezone. In the home trash ``Path`` is
  absolute; in a per-volume trash it is relative to ``$topdir``, so the volume can be mounted
  elsewhere. Parent directories are resolved (symlinks and ``..``) before recording.
* Name collisions: the candidates are ``NAME``, ``NAME.2``, ``NAME.3`` … ``NAME.999``, then
  ``NAME.<8 random hex digits>``. A candidate is taken when its ``.trashinfo`` could be
  created exclusively and ``files/`` holds nothing of that name. ``NAME`` is shortened (at a
  UTF-8 character boundary when it is UTF-8) so that ``NAME<suffix>.trashinfo`` fits in 255
  bytes.
* Not done: the optional ``directorysizes`` cache of the spec is not updated; trash viewers
  recompute missing entries.

Deleting (`delete_path`)
------------------------
Removes a file, symlink or whole directory tree without following any symlink: directories are
opened with ``O_NOFOLLOW | O_DIRECTORY`` and their entries removed relative to the directory
descriptor (``unlinkat``/``rmdir`` with ``dir_fd``), so swapping a directory for a symlink
mid-way cannot redirect the deletion outside the tree. Directories are listed lazily, never
read whole, and the walk is iterative: memory is bounded by the depth of the tree, not its
size or the length of one directory. Each level holds one descriptor (two for the innermost 64
levels), so the depth is limited by ``RLIMIT_NOFILE``, not by Python's recursion limit.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import AnyStr, Generic, NamedTuple
from urllib.parse import quote, unquote_to_bytes

from ._errors import TrashError
from ._fs import DIR_FLAGS, DIR_NOFOLLOW, NAME_MAX, noop
from ._names import is_own_temp
from ._partials import tmp_name

__all__ = [
    "TrashDir",
    "TrashError",
    "TrashInfo",
    "TrashResult",
    "delete_path",
    "find_topdir",
    "home_trash_dir",
    "read_trashinfo",
    "recover_trash",
    "select_trash_dir",
    "trash_path",
]

FilePath = str | bytes | os.PathLike[str] | os.PathLike[bytes]

_OPEN_LISTINGS = 64  # innermost levels of a tree being deleted that keep their listing open
_INFO_SUFFIX = b".trashinfo"
_SEQUENTIAL_CANDIDATES = 999
_INFO_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
#: Temporary info files (written whole, then linked to their ``.trashinfo`` name).
#: Slack for coarse file timestamps when comparing an info file's mtime with a clock time.
_MTIME_SLACK = 2.0


@dataclass(frozen=True, slots=True)
class TrashResult(Generic[AnyStr]):
    """Where `trash_path` put an item, in the path type it was given."""

    trashed_path: AnyStr
    """The item's new path, ``<trash_dir>/files/<name>``."""
    info_path: AnyStr
    """Its metadata, ``<trash_dir>/info/<name>.trashinfo``."""
    trash_dir: AnyStr
    """The trash directory used (home trash or a per-volume one)."""


@dataclass(frozen=True, slots=True)
class TrashDir:
    """A trash directory chosen by `select_trash_dir`; ``files/`` and ``info/`` exist in it."""

    path: bytes
    topdir: bytes | None
    """The volume's top directory for a per-volume trash (``Path`` is relative to it), or
    ``None`` for the home trash (``Path`` is absolute)."""


class TrashInfo(NamedTuple, Generic[AnyStr]):
    """The content of a ``.trashinfo`` file, as returned by `read_trashinfo`."""

    original_path: AnyStr
    """Absolute original path of the trashed item (relative ones are resolved)."""
    deletion_date: datetime | None
    """Local deletion time, naive; ``None`` if the file has no valid ``DeletionDate``."""


def _like(given: AnyStr, value: bytes) -> AnyStr:
    """Return ``value`` as ``str`` or ``bytes``, matching the type of ``given``."""
    if isinstance(given, bytes):
        return value
    return os.fsdecode(value)


def _split_item(path: bytes) -> tuple[bytes, bytes]:
    """Split ``path`` into (parent, name), refusing paths that do not name an entry."""
    stripped = path.rstrip(b"/")
    head, name = os.path.split(stripped)
    if name in (b"", b".", b".."):
        raise ValueError(f"{os.fsdecode(path)!r} does not name a file or directory")
    return head or b".", name


def home_trash_dir(xdg_data_home: FilePath | None = None) -> bytes:
    """Return the home trash path: ``<xdg_data_home>/Trash``.

    Without an argument ``$XDG_DATA_HOME`` is used when it is set to an absolute path (as the
    XDG base directory spec says), else ``~/.local/share``.
    """
    if xdg_data_home is None:
        env = os.environb.get(b"XDG_DATA_HOME", b"")
        if os.path.isabs(env):
            xdg_data_home = env
        else:
            xdg_data_home = os.path.join(os.path.expanduser(b"~"), b".local", b"share")
    return os.path.join(os.fsencode(xdg_data_home), b"Trash")


def _existing_dev(path: bytes) -> int:
    """Return the ``st_dev`` of ``path``, or of its nearest existing ancestor."""
    while True:
        try:
            return os.stat(path).st_dev
        except FileNotFoundError:
            parent = os.path.dirname(path)
            if parent == path:
                raise
            path = parent


def find_topdir(path: FilePath) -> bytes:
    """Return the mount point holding ``path`` (a real path; the last component may be a link).

    Walks up the parents while they stay on the same ``st_dev`` as ``path`` itself.
    """
    current = os.path.abspath(os.fsencode(path))
    dev = os.lstat(current).st_dev
    while True:
        parent = os.path.dirname(current)
        if parent == current or os.lstat(parent).st_dev != dev:
            return current
        current = parent


def _ensure_layout(trash: bytes) -> None:
    """Create ``files/`` and ``info/`` in ``trash`` (mode 0o700) if missing."""
    for sub in (b"files", b"info"):
        with contextlib.suppress(FileExistsError):
            os.mkdir(os.path.join(trash, sub), 0o700)


def _ensure_private_dir(path: bytes, uid: int) -> None:
    """Create directory ``path`` with mode 0o700, or check that the existing one is ours.

    Refuses symlinks and directories owned by someone else: on a shared volume another user
    could have planted them to capture or redirect our trash.
    """
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != uid:
        raise TrashError(
            None,
            f"not a directory owned by uid {uid} (a symlink, file or foreign directory); "
            "refusing to use it as a trash",
            os.fsdecode(path),
        )


def _shared_trash(topdir: bytes, uid: int) -> bytes | None:
    """Return ``$topdir/.Trash/$uid`` (created if needed) if the admin-provided trash is valid."""
    base = os.path.join(topdir, b".Trash")
    try:
        st = os.lstat(base)
    except FileNotFoundError:
        return None
    # The spec: must be a directory, not a symlink, with the sticky bit; else unusable.
    if not stat.S_ISDIR(st.st_mode) or not st.st_mode & stat.S_ISVTX:
        return None
    user = os.path.join(base, str(uid).encode())
    try:
        _ensure_private_dir(user, uid)
        _ensure_layout(user)
    except OSError:
        return None  # e.g. no permission to create it: fall back to $topdir/.Trash-$uid
    return user


def select_trash_dir(
    item_dev: int,
    home_trash_dev: int,
    topdir: FilePath | None,
    *,
    home_trash: FilePath,
    uid: int | None = None,
) -> TrashDir:
    """Choose (and create as needed) the trash directory for an item on ``item_dev``.

    Same device as the home trash: ``home_trash``. Otherwise ``topdir`` (the item's mount
    point, required then) provides ``$topdir/.Trash/$uid`` when ``$topdir/.Trash`` is a
    sticky, non-symlink directory, else ``$topdir/.Trash-$uid``. ``uid`` defaults to the
    current user. Raises `TrashError` when ``.Trash-$uid`` exists but is not ours.
    """
    if item_dev == home_trash_dev:
        home = os.fsencode(home_trash)
        os.makedirs(home, 0o700, exist_ok=True)
        _ensure_layout(home)
        return TrashDir(home, None)
    if topdir is None:
        raise ValueError("topdir is required when the item is not on the home trash's device")
    top = os.fsencode(topdir)
    if uid is None:
        uid = os.getuid()
    shared = _shared_trash(top, uid)
    if shared is not None:
        return TrashDir(shared, top)
    private = os.path.join(top, b".Trash-%d" % uid)
    _ensure_private_dir(private, uid)
    _ensure_layout(private)
    return TrashDir(private, top)


def _truncate(name: bytes, limit: int) -> bytes:
    """Shorten ``name`` to at most ``limit`` bytes, at a character boundary if it is UTF-8."""
    if len(name) <= limit:
        return name
    try:
        name.decode("utf-8")
    except UnicodeDecodeError:
        return name[:limit]
    return name[:limit].decode("utf-8", "ignore").encode("utf-8")


def _candidates(name: bytes) -> Iterator[bytes]:
    """Yield trash names for ``name``: NAME, NAME.2 … NAME.999, then NAME.<random hex>."""
    limit = NAME_MAX - len(_INFO_SUFFIX)
    yield _truncate(name, limit)
    n = 2
    while True:
        if n <= _SEQUENTIAL_CANDIDATES:
            suffix = b".%d" % n
            n += 1
        else:
            suffix = b"." + secrets.token_hex(4).encode()
        yield _truncate(name, limit - len(suffix)) + suffix


def _format_trashinfo(original: bytes, now: datetime | None) -> bytes:
    """Return the ``.trashinfo`` content for ``original`` deleted at ``now`` (local time)."""
    when = datetime.now() if now is None else now
    if when.tzinfo is not None:
        when = when.astimezone().replace(tzinfo=None)
    return (
        b"[Trash Info]\nPath="
        + quote(original, safe="/").encode("ascii")
        + b"\nDeletionDate="
        + when.isoformat(timespec="seconds").encode("ascii")
        + b"\n"
    )


def _reserve(
    trash: bytes, name: bytes, content: bytes, owner: str | bytes | None = None
) -> tuple[bytes, bytes]:
    """Create ``info/<candidate>.trashinfo``, complete or not at all; return (candidate,
    info path).

    The content is written to a private temporary in ``info/`` first and hard-linked to the
    candidate name: ``link(2)`` fails atomically when the name is taken, so a process killed
    at any instant never leaves an empty or half-written ``.trashinfo`` (only, at worst, a
    temporary carrying ``owner``'s name token, which that owner's `recover_trash` removes).
    Filesystems without hard links fall back to creating the info file exclusively and
    writing it in place.
    """
    info_dir = os.path.join(trash, b"info")
    tmp = os.path.join(info_dir, tmp_name(b"trashinfo", owner))
    fd = os.open(tmp, _INFO_FLAGS, 0o600)
    try:
        view = memoryview(content)
        while view:
            view = view[os.write(fd, view) :]
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    os.close(fd)
    try:
        for candidate in _candidates(name):
            info_path = os.path.join(info_dir, candidate + _INFO_SUFFIX)
            try:
                os.link(tmp, info_path, follow_symlinks=False)
            except FileExistsError:
                continue
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOSYS, errno.EMLINK):
                    raise
                return _reserve_in_place(trash, name, content)  # e.g. FAT: no hard links
            # An orphan in files/ (a crash after the rename, before the info was written by
            # another tool) must not be overwritten: rename() would replace it silently.
            if os.path.lexists(os.path.join(trash, b"files", candidate)):
                os.unlink(info_path)
                continue
            return candidate, info_path
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    raise AssertionError("unreachable: _candidates never ends")  # pragma: no cover


def _reserve_in_place(trash: bytes, name: bytes, content: bytes) -> tuple[bytes, bytes]:
    """`_reserve` where hard links are not available: create the info file exclusively,
    then write it (a crash in between leaves it empty)."""
    for candidate in _candidates(name):
        info_path = os.path.join(trash, b"info", candidate + _INFO_SUFFIX)
        try:
            fd = os.open(info_path, _INFO_FLAGS, 0o600)
        except FileExistsError:
            continue
        reserved = False
        try:
            if not os.path.lexists(os.path.join(trash, b"files", candidate)):
                view = memoryview(content)
                while view:
                    view = view[os.write(fd, view) :]
                reserved = True
        finally:
            os.close(fd)
            if not reserved:
                os.unlink(info_path)
        if reserved:
            return candidate, info_path
    raise AssertionError("unreachable: _candidates never ends")  # pragma: no cover


def trash_path(
    path: AnyStr | os.PathLike[AnyStr],
    *,
    now: datetime | None = None,
    xdg_data_home: FilePath | None = None,
    owner: str | bytes | None = None,
) -> TrashResult[AnyStr]:
    """Move ``path`` to the trash (freedesktop.org Trash 1.0); see the module docstring.

    ``now`` is the deletion time to record (default: the current local time; an aware
    datetime is converted to local time). ``xdg_data_home`` overrides ``$XDG_DATA_HOME``.
    ``owner`` is the name token the info file's temporary carries (a job's, see
    `parjobs.ops._names`).
    Symlinks are trashed as links. Raises `TrashError` if the item cannot be renamed into a
    trash on its own filesystem, or is in that trash already (its ``files/`` or ``info/``);
    the item is then left in place.
    """
    given = os.fspath(path)
    head, name = _split_item(os.fsencode(given))
    item = os.path.join(os.path.realpath(head), name)
    item_st = os.lstat(item)
    home = home_trash_dir(xdg_data_home)
    home_dev = _existing_dev(home)
    topdir = None
    if item_st.st_dev != home_dev:
        topdir = find_topdir(item)
        if topdir == item:
            raise TrashError(None, "is a mount point; it cannot be trashed", os.fsdecode(given))
    trash = select_trash_dir(item_st.st_dev, home_dev, topdir, home_trash=home)
    real_trash = _resolved(trash.path)
    if item == real_trash or item.startswith(real_trash + b"/"):
        # Renamed within the trash under a new name, its first .trashinfo would stay behind,
        # naming a file no longer there (and a restore of the new one would put it back here).
        raise TrashError(
            None,
            "is in the trash already; it cannot be trashed again (restore it, or delete it "
            "for good)",
            os.fsdecode(given),
        )
    original = item if trash.topdir is None else os.path.relpath(item, trash.topdir)
    candidate, info_path = _reserve(trash.path, name, _format_trashinfo(original, now), owner)
    trashed = os.path.join(trash.path, b"files", candidate)
    try:
        os.rename(item, trashed)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(info_path)
        if exc.errno == errno.EXDEV:
            raise TrashError(
                errno.EXDEV,
                f"cannot move into the trash {os.fsdecode(trash.path)!r} without copying "
                "(different mounts); left in place",
                os.fsdecode(given),
            ) from exc
        raise
    return TrashResult(_like(given, trashed), _like(given, info_path), _like(given, trash.path))


def _resolved(directory: bytes) -> bytes:
    """``directory``'s path with every symlink and ``..`` resolved, as the kernel names the
    directory it opens (`os.path.realpath`'s answer in 3 system calls: it took 31 us, an
    lstat per component); `os.path.realpath` where ``/proc`` cannot tell."""
    try:
        fd = os.open(directory, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return os.path.realpath(directory)
    try:
        return os.readlink(b"/proc/self/fd/%d" % fd)
    except OSError:
        return os.path.realpath(directory)
    finally:
        os.close(fd)


def _volume_topdir(trash: bytes) -> bytes:
    """Return the directory that relative ``Path`` values in ``trash`` are relative to."""
    parent = os.path.dirname(trash)
    if os.path.basename(parent) == b".Trash":  # $topdir/.Trash/$uid
        return os.path.dirname(parent)
    return parent  # $topdir/.Trash-$uid (or any other trash: its parent)


def read_trashinfo(path: AnyStr | os.PathLike[AnyStr]) -> TrashInfo[AnyStr]:
    """Parse a ``.trashinfo`` file; the original path comes back absolute, in ``path``'s type.

    A relative ``Path`` (per-volume trash) is resolved against the volume's top directory,
    derived from where the info file lives (``<trash>/info/x.trashinfo``). Raises
    ``ValueError`` if there is no ``Path`` key in a ``[Trash Info]`` group, or it holds a NUL.
    """
    given = os.fspath(path)
    with open(given, "rb") as f:
        text = f.read().decode("utf-8", "surrogateescape")
    values: dict[str, str] = {}
    in_group = False
    for raw_line in text.splitlines():
        line = raw_line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            in_group = line == "[Trash Info]"
        elif in_group and "=" in line:
            key, _, value = line.partition("=")
            values.setdefault(key.strip(), value.strip())
    if "Path" not in values:
        raise ValueError(f"{os.fsdecode(given)!r} is not a trash info file: no Path key")
    original = unquote_to_bytes(values["Path"])
    if b"\0" in original:  # ``%00``: no path holds one (a rename through ctypes cut it there)
        raise ValueError(f"{os.fsdecode(given)!r} is not a valid trash info file: a NUL in Path")
    if not original.startswith(b"/"):
        trash = os.path.dirname(os.path.dirname(os.path.abspath(os.fsencode(given))))
        original = os.path.join(_volume_topdir(trash), original)
    try:
        deleted: datetime | None = datetime.fromisoformat(values.get("DeletionDate", ""))
    except ValueError:
        deleted = None
    if deleted is not None and deleted.tzinfo is not None:  # not per spec, but be lenient
        deleted = deleted.astimezone().replace(tzinfo=None)
    return TrashInfo(_like(given, original), deleted)


def deletion_stamp(info: TrashInfo[AnyStr]) -> str | None:
    """The ``DeletionDate`` of ``info`` as a trash job records it with an item it trashed
    (``deleted 2026-12-05T05:50:00``; None without a valid one): what tells that item
    from another trashed later from the same path under the same name, once the user
    emptied the first (undo compares it)."""
    when = info.deletion_date
    return None if when is None else f"deleted {when.isoformat(timespec='seconds')}"


def _trash_dirs_of(parent: bytes, home: bytes, home_dev: int) -> list[bytes]:
    """The trash directories an item of directory ``parent`` may have been moved to (without
    creating any): the home trash on its device, else the volume's two per-volume trashes."""
    if os.stat(parent).st_dev == home_dev:
        return [home]
    top = find_topdir(parent)
    uid = os.getuid()
    return [os.path.join(top, b".Trash", str(uid).encode()), os.path.join(top, b".Trash-%d" % uid)]


def recover_trash(
    paths: list[bytes],
    *,
    since: float,
    owner: str | bytes | None = None,
    xdg_data_home: FilePath | None = None,
) -> dict[bytes, tuple[bytes, bytes]]:
    """Settle what an interrupted run that trashed ``paths`` may have left, and report where
    items already went.

    For a resumed job that started trashing at ``since`` (epoch seconds) and was killed:

    * returns ``{given path: (original path, trashed path)}`` for every path whose item sits
      in a trash under an info file written since ``since`` (the latest, if several): the run
      moved it there but died before recording it;
    * removes the ``.trashinfo`` files written since ``since`` for one of ``paths`` whose item
      never arrived in ``files/`` (killed between the two steps);
    * removes the temporaries of `_reserve` carrying ``owner``'s name token (the job's: never
      another job's, however old) from the trashes concerned.

    Paths whose directory no longer exists are left out; errors reading a trash are ignored
    (this is housekeeping: the items themselves are never touched).
    """
    home = home_trash_dir(xdg_data_home)
    try:
        home_dev = _existing_dev(home)
    except OSError:
        return {}
    items: dict[bytes, bytes] = {}  # original path as recorded -> given path
    trashes: set[bytes] = set()
    for given in paths:
        try:
            head, name = _split_item(given)
            parent = os.path.realpath(head)
            trashes.update(_trash_dirs_of(parent, home, home_dev))
        except (OSError, ValueError):
            continue
        items[os.path.join(parent, name)] = given
    found: dict[bytes, tuple[float, bytes, bytes]] = {}
    for trash in sorted(trashes):
        info_dir = os.path.join(trash, b"info")
        try:
            listing = list(os.scandir(info_dir))
        except OSError:
            continue
        for entry in listing:
            name = entry.name
            with contextlib.suppress(OSError, ValueError):
                st = entry.stat(follow_symlinks=False)
                if not stat.S_ISREG(st.st_mode):
                    continue
                raw = os.fsencode(name)
                if owner is not None and is_own_temp(raw, os.fsencode(owner)):
                    if st.st_uid == os.geteuid():
                        os.unlink(entry.path)
                    continue
                if not name.endswith(_INFO_SUFFIX) or st.st_mtime < since - _MTIME_SLACK:
                    continue
                original = read_trashinfo(entry.path).original_path
                item = items.get(original)
                if item is None:
                    continue
                trashed = os.path.join(trash, b"files", name[: -len(_INFO_SUFFIX)])
                if not os.path.lexists(trashed):
                    os.unlink(entry.path)  # the rename never happened: an orphan of ours
                elif item not in found or found[item][0] < st.st_mtime:
                    found[item] = (st.st_mtime, original, trashed)
    return {given: (original, trashed) for given, (_, original, trashed) in found.items()}


class _Frame:
    """One directory being emptied: its descriptor, its listing, its name in the parent.

    The listing (an ``os.scandir`` over a duplicate descriptor) may be dropped while deeper
    levels are worked on and reopened later: everything listed before was removed, so a fresh
    listing simply continues with what is left.
    """

    __slots__ = ("_listing", "fd", "name", "removed")

    def __init__(self, parent_fd: int, name: str) -> None:
        self.fd = os.open(name, DIR_NOFOLLOW, dir_fd=parent_fd)
        self.name = name
        self.removed = 0
        self._listing: Iterator[os.DirEntry[str]] | None = None

    def next_entry(self) -> os.DirEntry[str] | None:
        """Return the next entry, or ``None`` when the listing is exhausted."""
        if self._listing is None:
            self._listing = os.scandir(self.fd)
        return next(self._listing, None)

    def drop_listing(self) -> None:
        """Close the listing (and its descriptor) until `next_entry` needs it again."""
        if self._listing is not None:
            self._listing.close()  # type: ignore[attr-defined]
            self._listing = None

    def close(self) -> None:
        self.drop_listing()
        os.close(self.fd)


def _rmtree_at(
    parent_fd: int, name: str, check: Callable[[], None], on_removed: Callable[[int], None]
) -> int:
    """Remove directory ``name`` in ``parent_fd`` and everything below it; return the count."""
    count = 0
    stack = [_Frame(parent_fd, name)]
    try:
        while stack:
            frame = stack[-1]
            entry = frame.next_entry()
            if entry is not None:
                if entry.is_dir(follow_symlinks=False):
                    try:
                        stack.append(_Frame(frame.fd, entry.name))
                        if len(stack) > _OPEN_LISTINGS:  # bound descriptors in deep trees
                            stack[-_OPEN_LISTINGS - 1].drop_listing()
                        continue
                    except FileNotFoundError:
                        continue
                    except OSError as exc:  # replaced by a non-directory meanwhile
                        if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                            raise
                check()
                try:
                    os.unlink(entry.name, dir_fd=frame.fd)
                except FileNotFoundError:
                    continue
                except IsADirectoryError:  # replaced by a directory meanwhile
                    stack.append(_Frame(frame.fd, entry.name))
                    continue
                count += 1
                frame.removed += 1
                on_removed(1)
                continue
            # The listing is exhausted: remove the directory itself.
            stack.pop()
            frame.close()
            outer_fd = stack[-1].fd if stack else parent_fd
            check()
            try:
                os.rmdir(frame.name, dir_fd=outer_fd)
            except OSError as exc:
                # Entries created meanwhile, or skipped by a listing that changed under us:
                # list again, as long as each pass makes progress.
                if exc.errno == errno.ENOTEMPTY and frame.removed:
                    stack.append(_Frame(outer_fd, frame.name))
                    continue
                raise
            count += 1
            if stack:
                stack[-1].removed += 1
            on_removed(1)
    finally:
        for frame in stack:
            frame.close()
    return count


def delete_path(
    path: FilePath,
    *,
    check: Callable[[], None] = noop,
    on_removed: Callable[[int], None] = noop,
) -> int:
    """Delete a file, symlink or directory tree without following symlinks; return the count.

    The count is every entry removed: files, links, special files and directories, ``path``
    included. ``check()`` runs before each removal and may raise to stop (what was removed
    stays removed); ``on_removed(1)`` reports each removal as it happens. A trailing slash is
    ignored, so a symlink to a directory is removed as the link.
    """
    head, name = _split_item(os.fsencode(path))
    parent_fd = os.open(head, DIR_FLAGS)
    try:
        if not stat.S_ISDIR(os.lstat(name, dir_fd=parent_fd).st_mode):
            check()
            os.unlink(name, dir_fd=parent_fd)
            on_removed(1)
            return 1
        return _rmtree_at(parent_fd, os.fsdecode(name), check, on_removed)
    finally:
        os.close(parent_fd)
