"""The one home of the small file-system helpers every operation shares: single names below a
directory fd, regular-file opens, change checks, the no-replace rename, name shortening and
path display.

Destination-side helpers take a directory fd and a single name (``dir_fd=``, ``O_NOFOLLOW``), so
a symlink planted in a destination tree cannot redirect a write.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import os
import re
import stat
from collections.abc import Callable, Sequence
from typing import Literal, TypeAlias, TypeVar, cast, overload

from .._exceptions import JobSpecError
from .._util import kernel_abspath, kernel_split, names_contents
from ._errors import SourceChangedError, SpecialFileError

#: Any path `os` accepts.
FilePath: TypeAlias = str | bytes | os.PathLike[str] | os.PathLike[bytes]
#: What a primitive was doing when it found a problem: the word its error message uses.
Verb: TypeAlias = Literal["copy", "read"]

#: The longest single name (bytes) Linux filesystems take.
NAME_MAX = 255
#: ``renameat2`` flag: fail with EEXIST rather than replace (the C extension uses the same).
RENAME_NOREPLACE = 1
#: A directory fd (may be a symlink the caller trusts).
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
#: A directory fd that never follows a symlink.
DIR_NOFOLLOW = DIR_FLAGS | os.O_NOFOLLOW
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_AT_FDCWD = -100

#: What a non-regular file is called in messages, by ``stat.S_IFMT``.
KINDS = {
    stat.S_IFIFO: "FIFO",
    stat.S_IFSOCK: "socket",
    stat.S_IFCHR: "character device",
    stat.S_IFBLK: "block device",
    stat.S_IFDIR: "directory",
    stat.S_IFLNK: "symbolic link",
}


def noop(*_args: object) -> None:
    """Default for ``check`` and ``on_bytes`` callbacks: do nothing."""


def display(path: bytes | str) -> str:
    """A path for people and for the store: undecodable bytes as backslash escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def clean_error(exc: Exception) -> None:
    """Make an error's text storable: SQLite refuses the surrogates ``os.fsdecode`` makes."""
    if isinstance(exc, OSError) and isinstance(exc.filename, str):
        exc.filename = display(exc.filename)
    if len(exc.args) == 1 and isinstance(exc.args[0], str):
        exc.args = (display(exc.args[0]),)


# ---------------------------------------------------------------------------------------------
# names below a directory fd


def leaf(name: str | bytes) -> bytes:
    """Encode a single path component, refusing anything that could escape its directory."""
    raw = os.fsencode(name)
    if not raw or raw in (b".", b"..") or b"/" in raw or b"\0" in raw:
        raise ValueError(f"not a single path component: {name!r}")
    return raw


def lexists(dir_fd: int, name: bytes) -> bool:
    """Whether ``name`` exists in ``dir_fd`` (a symlink counts, never followed)."""
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def unlink_quiet(dir_fd: int, name: bytes) -> bool:
    """Unlink ``name`` in ``dir_fd``; False when it was already gone."""
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return False
    return True


def exists_error(name: bytes) -> FileExistsError:
    """The error of a destination name that is taken."""
    return FileExistsError(errno.EEXIST, "destination exists", os.fsdecode(name))


def open_dir_nofollow(
    root: FilePath, rel_parts: Sequence[str | bytes], *, create: bool = False
) -> int:
    """Open ``root/rel_parts...`` as a directory fd without following any symlink below root.

    ``root`` itself is trusted (it may be a symlink). Each component is opened with
    ``O_DIRECTORY|O_NOFOLLOW`` relative to its parent's fd, so a symlink planted inside the tree
    raises `OSError` (ELOOP/ENOTDIR) instead of redirecting writes elsewhere. With ``create``,
    missing directories are made. The caller closes the returned fd.
    """
    fd = os.open(root, DIR_FLAGS)
    try:
        for part in rel_parts:
            name = leaf(part)
            if create:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(name, dir_fd=fd)
            child = os.open(name, DIR_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


@functools.cache
def _renameat2() -> Callable[[int, bytes, int, bytes, int], int] | None:
    try:
        func = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    func.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint)
    func.restype = ctypes.c_int
    return cast(Callable[[int, bytes, int, bytes, int], int], func)


def check_replaceable(dir_fd: int, name: bytes, shown: str | None = None) -> None:
    """Refuse to replace ``dir_fd/name`` (never followed) when it holds a FIFO, socket or
    device: `SpecialFileError` naming the destination (``shown``, else its path through
    ``/proc/self/fd``). A regular file, directory, symlink or nothing may be replaced; the
    check is made just before the replacing call (a swap in between is not guarded)."""
    try:
        mode = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode) or stat.S_ISLNK(mode):
        return
    if shown is None:
        try:
            shown = display(os.path.join(os.readlink(f"/proc/self/fd/{dir_fd}"), os.fsdecode(name)))
        except OSError:
            shown = display(name)
    kind = KINDS.get(stat.S_IFMT(mode), "special file")
    exc = SpecialFileError(f"destination is a {kind}, not replaced: {shown!r}")
    exc.filename = shown
    raise exc


#: The error of a move onto another hard link of its source's file.
SAME_FILE = "destination is the same file as the source (a hard link of it); not moved"


def _same_file(src: bytes, src_dir_fd: int | None, name: bytes, dst_dir_fd: int) -> bool:
    """Whether ``name`` in ``dst_dir_fd`` is the very file ``src`` is (a hard link of it)."""
    try:
        a = os.stat(src, dir_fd=src_dir_fd, follow_symlinks=False)
        b = os.stat(name, dir_fd=dst_dir_fd, follow_symlinks=False)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def rename_noreplace(
    src: bytes,
    name: bytes,
    *,
    src_dir_fd: int | None = None,
    dst_dir_fd: int,
    overwrite: bool,
    moving: bool = False,
) -> None:
    """Rename ``src`` (relative to ``src_dir_fd``, or a path) to ``name`` in ``dst_dir_fd``;
    without ``overwrite`` an existing ``name`` raises FileExistsError, atomically; with it, a
    FIFO, socket or device at ``name`` is never replaced (`check_replaceable`), and, when
    ``moving`` a user's file, neither is another hard link of ``src``'s file: rename(2) between
    two names of one file succeeds doing nothing, so the move would report a source it left
    in place (FileExistsError, as ``mv`` says "are the same file").

    No-replace tries renameat2(RENAME_NOREPLACE) (the C extension makes the same call), then
    link+unlink (NFS refuses renameat2's flag with EINVAL; a link there that answers EEXIST
    but made the name counts as made); on filesystems with neither (e.g. FAT), or for a
    directory where renameat2 is missing, it falls back to check-then-rename, which has a
    small race window. A NUL byte in either name raises ValueError, as `os` does (ctypes
    would pass the name cut at it).
    """
    if b"\0" in src or b"\0" in name:
        raise ValueError("embedded null byte")
    if overwrite:
        check_replaceable(dst_dir_fd, name)
        if moving and _same_file(src, src_dir_fd, name, dst_dir_fd):
            raise FileExistsError(errno.EEXIST, SAME_FILE, os.fsdecode(name))
        os.replace(src, name, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd)
        return
    func = _renameat2()
    if func is not None:
        at = _AT_FDCWD if src_dir_fd is None else src_dir_fd
        if func(at, src, dst_dir_fd, name, RENAME_NOREPLACE) == 0:
            return
        err = ctypes.get_errno()
        if err == errno.EEXIST:
            raise exists_error(name)
        if err not in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
            raise OSError(err, os.strerror(err), os.fsdecode(name))
    try:
        os.link(src, name, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd, follow_symlinks=False)
    except FileExistsError:
        # Over NFS a link whose reply was lost is sent again and answers EEXIST although
        # it was made: the name is then our very file (the classic check), not a conflict.
        if not _same_file(src, src_dir_fd, name, dst_dir_fd):
            raise exists_error(name) from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOSYS, errno.EMLINK):
            raise
        if lexists(dst_dir_fd, name):  # racy last resort, see docstring
            raise exists_error(name) from None
        os.rename(src, name, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd)
        return
    os.unlink(src, dir_fd=src_dir_fd)


# ---------------------------------------------------------------------------------------------
# reading a source


def special_error(path: FilePath, mode: int, verb: Verb) -> SpecialFileError:
    """The error for a non-regular file; the message and ``filename`` name the path."""
    name = os.fsdecode(path)
    kind = KINDS.get(stat.S_IFMT(mode), "special file")
    if verb == "read" and stat.S_ISLNK(mode):
        kind += " (not followed)"
    exc = SpecialFileError(f"refusing to {verb} {name!r}: it is a {kind}, not a regular file")
    exc.filename = name
    return exc


def _pseudo_error(path: FilePath, verb: Verb) -> SpecialFileError:
    """The error for a file of size 0 that reads bytes (see `open_regular`)."""
    name = os.fsdecode(path)
    exc = SpecialFileError(
        f"refusing to {verb} {name!r}: its size is 0 but it reads bytes "
        "(a pseudo-file, as in /proc), not a regular file"
    )
    exc.filename = name
    return exc


#: A source as `_srctree.SourceDirs.at` reaches it: its directory's fd and its name.
At: TypeAlias = tuple[int, bytes]

_P = TypeVar("_P")


def split_at(path: _P, at: At | None) -> tuple[_P | bytes, int | None]:
    """``(name, dir_fd)`` for the ``os`` calls on a source: ``at``'s, or ``path`` itself."""
    return (path, None) if at is None else (at[1], at[0])


def open_regular(
    path: FilePath,
    *,
    verb: Verb = "read",
    lstat_first: bool = False,
    at: tuple[int, bytes] | None = None,
) -> tuple[int, os.stat_result]:
    """Open a regular file for reading, never following a symlink or opening a special file;
    return the fd (the caller closes it) and its fstat.

    ``O_NOFOLLOW|O_NONBLOCK`` and the fstat after refuse a symlink, FIFO or device without
    blocking; ``lstat_first`` looks before opening too, so a device is never opened at all
    (a caller that has just lstat'ed the name itself, a fresh tree walk, skips it). So is a
    file of size 0 that reads bytes (``/proc/cpuinfo``: a pseudo-file, made as it is read):
    readers read the size fstat gives, so it was copied empty and hashed as empty input,
    reported done.

    ``at``: the file's directory fd and name (`_srctree.SourceDirs`), opened there rather
    than by ``path`` (then only named in errors).
    """
    name, dir_fd = split_at(path, at)
    if lstat_first:
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except OSError as exc:
            exc.filename = path  # (not only the name in its directory)
            raise
        if not stat.S_ISREG(st.st_mode):
            raise special_error(path, st.st_mode, verb)
    try:
        fd = os.open(name, _READ_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        exc.filename = path
        if exc.errno == errno.ELOOP:  # O_NOFOLLOW met a final symlink: say so
            mode = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
            if not stat.S_ISREG(mode):
                raise special_error(path, mode, verb) from exc
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise special_error(path, st.st_mode, verb)
        if st.st_size == 0 and os.pread(fd, 1, 0):  # one read more, for empty files only
            raise _pseudo_error(path, verb)
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def changed_error(path: FilePath, detail: str, verb: Verb) -> SourceChangedError:
    """The error for a file that changed while it was copied or read."""
    name = os.fsdecode(path)
    if verb == "copy":
        message = f"source changed while being copied: {name!r} ({detail})"
    else:
        message = f"file changed while it was read: {name!r} ({detail})"
    exc = SourceChangedError(message)
    exc.filename = name
    return exc


def check_unchanged(
    path: FilePath, before: os.stat_result, after: os.stat_result, verb: Verb = "read"
) -> None:
    """Raise `SourceChangedError` if size, mtime or ctime (`ctime_change`) differ between
    two stats of one file."""
    if before.st_size != after.st_size or before.st_mtime_ns != after.st_mtime_ns:
        raise changed_error(
            path,
            f"size {before.st_size} -> {after.st_size}, "
            f"mtime_ns {before.st_mtime_ns} -> {after.st_mtime_ns}",
            verb,
        )
    if (detail := ctime_change(before.st_ctime_ns, before.st_nlink, after)) is not None:
        raise changed_error(path, detail, verb)


def ctime_change(ctime_ns: int, nlink: int, now: os.stat_result) -> str | None:
    """What a file's ctime says changed since a stat of it gave ``ctime_ns`` and ``nlink``,
    or None.

    A file saved in place with its mtime put back (``touch -r``, ``rsync --inplace``, an
    editor or tagger keeping the date) has its size and mtime as before; its ctime, which
    nobody can set, moved. So does adding or removing a name of it (a hard link: a move
    unlinking another name of the same file meanwhile), so a ctime is compared only while
    the link count is the same: a changed count says nothing of the bytes."""
    if ctime_ns == now.st_ctime_ns or nlink != now.st_nlink:
        return None
    return f"ctime_ns {ctime_ns} -> {now.st_ctime_ns}: written or changed since"


def check_same_file(path: FilePath, before: os.stat_result, after: os.stat_result) -> None:
    """`check_unchanged` for a source a move is about to unlink, and the same file too
    (device and inode): one replaced by a rename (``rsync -a``, ``cp -p``: a temporary given
    the old mtime, renamed over the name) may match in size and mtime to the nanosecond."""
    detail = source_change(
        (before.st_dev, before.st_ino, before.st_size, before.st_mtime_ns), after
    )
    if detail is None:
        detail = ctime_change(before.st_ctime_ns, before.st_nlink, after)
    if detail is not None:
        raise changed_error(path, detail, "copy")


def source_change(seen: tuple[int, int, int, int], now: os.stat_result) -> str | None:
    """What tells a file apart from the one seen as ``seen`` (dev, ino, size, mtime_ns) for
    an error's text, or None if nothing does. (Another inode: another file, of any type.)"""
    dev, ino, size, mtime_ns = seen
    if (dev, ino) != (now.st_dev, now.st_ino):
        return f"replaced by another file: inode {ino} -> {now.st_ino}"
    if size != now.st_size or mtime_ns != now.st_mtime_ns:
        return f"size {size} -> {now.st_size}, mtime_ns {mtime_ns} -> {now.st_mtime_ns}"
    return None


def same_size_mtime(src_stat: os.stat_result, dst_stat: os.stat_result) -> bool:
    """rsync's quick check: same size and same mtime.

    Mtimes compare to the nanosecond when both carry a sub-second part, else to the second
    (a destination filesystem with 1 s timestamps must not make every file look changed).
    """
    if src_stat.st_size != dst_stat.st_size:
        return False
    a, b = src_stat.st_mtime_ns, dst_stat.st_mtime_ns
    if a % 1_000_000_000 and b % 1_000_000_000:
        return a == b
    return a // 1_000_000_000 == b // 1_000_000_000


# ---------------------------------------------------------------------------------------------
# names that fit


def split_ext(raw: bytes) -> tuple[bytes, bytes]:
    """Split off the extension, keeping ``.tar.*`` whole; leading dots are not extensions."""
    stem, ext = os.path.splitext(raw)
    if ext and stem.lower().endswith(b".tar") and len(stem) > 4:
        stem, ext = stem[:-4], stem[-4:] + ext
    if len(ext) > 64:  # not really an extension
        return raw, b""
    return stem, ext


def truncate_utf8(raw: bytes, limit: int) -> bytes:
    """Cut ``raw`` to ``limit`` bytes without splitting a UTF-8 character (if it was UTF-8)."""
    if len(raw) <= limit:
        return raw
    cut = raw[:limit]
    try:
        raw.decode()
    except UnicodeDecodeError:
        return cut
    while cut:
        try:
            cut.decode()
        except UnicodeDecodeError:
            cut = cut[:-1]
        else:
            break
    return cut


def numbered(stem: bytes, ext: bytes, n: int) -> bytes:
    """``stem (n).ext``, the stem shortened so the name fits in `NAME_MAX`."""
    tag = b" (%d)" % n
    return truncate_utf8(stem, NAME_MAX - len(tag) - len(ext)) + tag + ext


@overload
def unique_name(dst: str | os.PathLike[str], *, dst_dir_fd: int | None = None) -> str: ...
@overload
def unique_name(dst: bytes | os.PathLike[bytes], *, dst_dir_fd: int | None = None) -> bytes: ...
def unique_name(dst: FilePath, *, dst_dir_fd: int | None = None) -> str | bytes:
    """Return ``dst`` with its last component changed to the first free ``name (N).ext``.

    For the "rename" conflict policy: ``archive.tar.gz`` becomes ``archive (1).tar.gz`` and
    ``.bashrc`` becomes ``.bashrc (1)``; the stem is shortened to stay within 255 bytes.
    ``dst`` is returned unchanged when free. The answer is only a hint (another writer may take
    the name): copy to it with ``overwrite=False`` and retry on FileExistsError.
    """
    path = os.fspath(dst)
    raw = os.fsencode(path)
    head, tail = os.path.split(raw) if dst_dir_fd is None else (b"", raw)
    dir_fd = os.open(head or b".", DIR_FLAGS) if dst_dir_fd is None else dst_dir_fd
    try:
        name = leaf(tail)
        stem, ext = split_ext(name)
        candidate, n = name, 0
        while lexists(dir_fd, candidate):
            n += 1
            if n > 100_000:
                raise exists_error(name)
            candidate = numbered(stem, ext, n)
    finally:
        if dst_dir_fd is None:
            os.close(dir_fd)
    result = os.path.join(head, candidate) if head else candidate
    return result if isinstance(path, bytes) else os.fsdecode(result)


_OCTAL = re.compile(rb"\\([0-7]{3})")  # mountinfo escapes space, tab, newline, backslash


def mount_points(mountinfo: str = "/proc/self/mountinfo") -> list[bytes]:
    """Every mount point of this process' mount namespace, in the table's order, as absolute
    paths (octal escapes undone); none where there is no ``mountinfo``: nothing is then known
    to be a mount point. (A delete never deletes through one; the trash looks for a
    ``.Trash`` at each.)"""
    try:
        with open(mountinfo, "rb") as f:
            lines = f.read().split(b"\n")  # not splitlines: a mount path may hold a raw \r
    except OSError:
        return []
    fields = (line.split(b" ") for line in lines)
    return [_OCTAL.sub(lambda m: bytes([int(m[1], 8)]), f[4]) for f in fields if len(f) > 4]


class MountsBelow:
    """The mount points at or below a job's roots, as its walk meets them: what a delete or a
    move across filesystems never goes through (another filesystem's files, a home directory
    bind-mounted into a chroot, are not the tree's: deleted or moved away through the mount,
    they left the place they were mounted from). Usually none: `meet` is then one test.

    ``paths``: the roots as given (a root is not resolved itself, its parent directory is,
    as a walked entry's real path is that parent's, its own name and the rest of ``rel``)."""

    __slots__ = ("_met", "_roots", "points")

    def __init__(self, paths: Sequence[str]) -> None:
        self._roots = [
            os.path.join(
                os.fsencode(
                    os.path.realpath(os.path.dirname(os.path.abspath(os.path.normpath(p))))
                ),
                os.fsencode(os.path.basename(os.path.normpath(p))),
            )
            for p in paths
        ]
        roots = self._roots
        self.points = frozenset(
            m for m in mount_points() if any(m == r or m.startswith(r + b"/") for r in roots)
        )
        self._met: list[tuple[int, bytes]] = []  # (root, its rel + "/") of the points met

    def meet(self, root: int, rel: bytes) -> Literal["point", "inside"] | None:
        """Whether the walked entry ``rel`` (from its root's parent: it starts with a name
        for the root, `Entry.rel`) of root ``root`` is a mount point or inside one met
        before (the walk lists a directory before what is in it), or neither (None)."""
        if not self.points:
            return None
        if any(r == root and rel.startswith(below) for r, below in self._met):
            return "inside"
        _, slash, tail = rel.partition(b"/")
        if (self._roots[root] + slash + tail if slash else self._roots[root]) not in self.points:
            return None
        self._met.append((root, rel + b"/"))
        return "point"


def root_path(root: str) -> bytes:
    """A root as the walk reads it: normalised, keeping a trailing ``/``. A symlink to a
    directory written ``link/`` is then that directory (POSIX path resolution: a trailing
    slash resolves the link), as for ``cp -a link/ dst`` and ``rsync -a link/ dst``, and so
    is ``link/.`` (`names_contents`); only the root is followed so, never a symlink below
    it. A job whose root must stay the link itself (delete) normalises its roots first."""
    path = os.fsencode(os.path.normpath(root))
    return path + b"/" if _names_dir(root) and not path.endswith(b"/") else path


def absolute_root(path: str) -> str:
    """``path`` made absolute as a job stores a root, keeping a trailing ``/`` (`root_path`);
    its ``..`` as the kernel resolves it (`kernel_abspath`), not lexically."""
    absolute = kernel_abspath(path)
    return absolute + os.sep if _names_dir(path) and absolute != os.sep else absolute


def _names_dir(path: str) -> bool:
    """Whether ``path`` can only name a directory, which the kernel then resolves (a
    symlink's target): written with a trailing ``/``, or ending in ``.`` or ``..``."""
    return path.endswith(os.sep) or names_contents(path)


def ancestor_ids(st: os.stat_result, path: str | bytes) -> set[tuple[int, int]]:
    """(device, inode) of the existing directory ``path`` (stat ``st``) and of every
    directory above it, found through ``..`` as the kernel sees it (bind mounts included)."""
    ids = {(st.st_dev, st.st_ino)}
    here = os.fsencode(path)
    while True:
        here = here + b"/.."
        try:
            up = os.stat(here)
        except OSError:
            return ids
        key = (up.st_dev, up.st_ino)
        if key in ids:  # "/.." is "/"
            return ids
        ids.add(key)


def check_overlap(kind: str, paths: Sequence[str]) -> None:
    """Refuse, with a `JobSpecError` naming both, two ``paths`` of which one is inside the
    other (``x x/sub``, ``x link/sub`` with ``link`` to ``x``, ``link link/sub``) or that
    are the same entry (``x x``, ``x ./x``), for a job that takes each path as a whole
    (move, trash, delete): ``mv``, ``rm -r`` and ``trash-put`` take the outer one first and
    then fail on the inner one, gone with it, where parallel tasks would take them in any
    order (a move or trash would split the tree in two; a delete counts entries twice), and
    a resumed job could not tell which came first. Compared by device and inode, not text:
    each entry (its link itself, not followed) against the directories above every other
    path, found through ``..`` as the kernel sees it (`ancestor_ids`) and through each
    directory written in the path (a symlink among them). A missing path is left to the
    caller."""
    entries: dict[tuple[tuple[int, int], str], str] = {}  # (parent, name) -> the path given
    items: dict[tuple[int, int], str] = {}  # each path's own (device, inode)
    under: dict[tuple[int, int], str] = {}  # each directory above a path -> that path
    # Each directory as written -> its id and the ids above it, looked up once: a file
    # manager's selection is thousands of files of one directory (10,000 took 0.2-0.7 s).
    dirs: dict[str, tuple[tuple[int, int], set[tuple[int, int]]] | None] = {}
    for path in paths:
        directory, name = kernel_split(path)
        try:
            if name is None:  # ``x/..``: the directory itself
                st = os.stat(directory)
                directory = os.path.join(directory, os.pardir)
            else:
                st = os.lstat(os.path.join(directory, name))
        except OSError:
            continue
        first = directory not in dirs
        if first:
            dirs[directory] = _dir_and_above(directory)
        found = dirs[directory]
        if found is None:
            continue
        dir_id, above = found
        key = (st.st_dev, st.st_ino)
        entry = (dir_id, name or "")
        same = entries.get(entry) or (items.get(key) if stat.S_ISDIR(st.st_mode) else None)
        if same is not None:  # (two hard links of a file are two entries)
            raise JobSpecError(
                f"{kind}: {display(same)!r} and {display(path)!r} are the same; give it once"
            )
        outer = next((items[i] for i in above if i in items), None)
        inner, outer = (path, outer) if outer is not None else (under.get(key), path)
        if inner is not None:
            raise JobSpecError(
                f"{kind}: {display(inner)!r} is inside {display(outer)!r}, also given "
                f"(the {kind} of {display(outer)!r} takes it); give only {display(outer)!r}"
            )
        entries[entry] = path
        items.setdefault(key, path)
        if first:  # (a later path of this directory would set none: each is set)
            for i in above:
                under.setdefault(i, path)


def _dir_and_above(directory: str) -> tuple[tuple[int, int], set[tuple[int, int]]] | None:
    """For `check_overlap`: the (device, inode) of ``directory`` and of every directory
    above it, through ``..`` (`ancestor_ids`) and through each directory written in it (a
    symlink the path goes through is no ``..`` of it); None if it cannot be stat'ed."""
    try:
        dir_st = os.stat(directory)
    except OSError:
        return None
    above = ancestor_ids(dir_st, directory)
    written = os.path.abspath(directory)
    while written != os.sep:
        with contextlib.suppress(OSError):
            up = os.lstat(written)
            above.add((up.st_dev, up.st_ino))
        written = os.path.dirname(written)
    return (dir_st.st_dev, dir_st.st_ino), above


def check_slash(kind: str, path: str, *, link_ok: bool) -> None:
    """Refuse a source or a path to delete written with a trailing ``/`` that names no
    directory: POSIX path resolution makes ``a/`` a directory, so ``rm``, ``mv``, ``cp``
    and ``trash-put`` refuse a file written so ("Not a directory"), where the job's own
    normalised path would have taken the file; so is ``file/.`` (``cp -a file/. dst``).
    Unless ``link_ok`` (a copy, which copies
    the directory, as ``cp -a link/``; a trash, which takes the link, as ``trash-put`` and
    ``gio trash`` do), a symlink to a directory written ``link/`` is refused too: that is
    the directory, which cannot be moved or deleted through a link (``mv link/ dst`` says
    "Not a directory"; ``rm -r link/`` empties the directory, then says it). A path that
    does not exist is left to the caller's own check."""
    if not _names_dir(path):
        return
    try:
        os.stat(path)  # (the slash resolves a symlink)
    except NotADirectoryError:
        written = "'/.'" if names_contents(path) else "'/'"
        raise JobSpecError(
            f"{kind}: {display(path)!r} is not a directory (a trailing {written} names one); "
            f"name it without the {written}"
        ) from None
    except OSError:
        return
    if not link_ok and os.path.islink(path.rstrip(os.sep)):
        raise JobSpecError(
            f"{kind}: {display(path)!r} is a symlink to a directory, and its trailing '/' "
            f"names that directory, which cannot be {kind}d through the link; name the link "
            "without the '/' to take the link itself"
        )


def check_dotdot(kind: str, path: str) -> None:
    """Refuse a path whose ``..`` the job would take another way than the kernel: jobs make
    paths absolute lexically (``abspath``, ``normpath``), so ``link/../x`` named the ``x``
    beside the link, where the kernel (``mv``, ``cp``; the CLI, `operand_path`) finds the
    ``x`` next to the link's target, another file. Where both name the same directory (an
    ordinary ``../x``) the path is taken; a path that does not resolve is left to the
    caller's own check."""
    if os.pardir not in path.split(os.sep):
        return
    # The directory itself, or the parent whose entry it is (the operand's own name is not
    # resolved: a symlink stays one).
    kernel = kernel_split(path)[0]
    lexical = os.path.abspath(kernel)
    try:
        a, b = os.stat(lexical), os.stat(kernel)
    except OSError:
        return
    if (a.st_dev, a.st_ino) != (b.st_dev, b.st_ino):
        raise JobSpecError(
            f"{kind}: {display(path)!r} has a '..' that follows a symlink: the kernel takes it "
            f"from the link's target, {display(os.path.realpath(kernel))!r}, not from "
            f"{display(lexical)!r}; name the path without it"
        )
