"""Blocking copy primitives: one regular file or one symlink, atomically and resumably.

Everything here is synchronous and meant to run in a worker thread. ``check`` is called
between chunks (it raises to interrupt) and ``on_bytes`` reports progress, so a trio task can
pause, cancel and display a copy without this module knowing about trio.

Write protocol (rsync/rclone style): data goes to a hidden temporary in the destination
directory; mode, times, xattrs and owner are applied to the open temporary; it is then renamed
over the destination. Every temporary carries its writer's *name token* (a job's, see
`parjobs.ops._names`; by default this process's): ``.<name>.<token>.<random>.parjobs-tmp`` for
one-shot writes (files of at most one chunk, symlinks), and for resumable copies a partial
deterministic per (token, name), ``.<name>.<token>.parjobs-partial``, plus a ``.meta`` sidecar
recording the owner token and the source's identity (dev, ino, size, mtime). So two jobs
writing the same destination name never share, remove or reuse each other's partial. A
leftover partial is reused only when its meta still matches *and* its bytes re-read identical
to the source's prefix, so a resume never trusts anything it did not check; and a partial is
checked to still be the file this call wrote just before it is renamed into place.

Sparse files keep their holes: only data extents are copied (``SEEK_DATA``/``SEEK_HOLE``) and
the temporary is truncated to the source's size.

Destination safety: every destination operation goes through a directory fd and a single name
(``dir_fd=``, ``O_NOFOLLOW``), so a symlink planted in the destination tree cannot redirect a
write; `open_dir_nofollow` walks a relative path the same way.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import functools
import json
import os
import random
import stat
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Literal, NoReturn, TypeAlias, cast, overload

import xxhash

from parjobs._exceptions import ParjobsError

from ._names import META_SUFFIX, PARTIAL_SUFFIX, TMP_SUFFIX, check_token, is_own_temp, new_token

fastcopy: ModuleType | None
try:  # the optional C extension (see _fastcopy.c); None where it could not be built
    from . import _fastcopy as fastcopy
except ImportError:  # pragma: no cover - built without a C compiler
    fastcopy = None
if fastcopy is not None and getattr(fastcopy, "TMP_SUFFIX", None) != TMP_SUFFIX:
    fastcopy = None  # pragma: no cover - a stale build naming temporaries differently

StrOrBytesPath: TypeAlias = str | bytes | os.PathLike[str] | os.PathLike[bytes]
Method: TypeAlias = Literal["reflink", "copy_file_range", "sendfile", "readwrite"]

DEFAULT_CHUNK_SIZE = 8 * 1024 * 1024

_NAME_MAX = 255
_FICLONE = 0x40049409  # _IOW(0x94, 9, int)
_RENAME_NOREPLACE = 1
_ALL_METHODS: tuple[Method, ...] = ("reflink", "copy_file_range", "sendfile", "readwrite")
# Errors meaning "this kernel fast path does not apply here": try the next method.
_FALLBACK_ERRNOS = frozenset(
    {errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EBADF}
    | {errno.ENOTTY, errno.EPERM}  # ioctl unknown to the fs; seccomp-filtered syscalls
)
# FICLONE errors that hold for every file of a (source fs, destination fs) pair.
_NO_REFLINK_ERRNOS = frozenset(
    {errno.EXDEV, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOTTY, errno.ENOSYS}
)
_NO_REFLINK: set[tuple[int, int]] = set()
_TOKENS = random.Random()  # seeded from os.urandom, reseeded in forked children
_PROCESS_OWNER = [new_token()]  # the owner of temporaries written without a job's token


def _after_fork() -> None:
    _TOKENS.seed()
    _PROCESS_OWNER[0] = new_token()


os.register_at_fork(after_in_child=_after_fork)
_XATTR_IGNORED = frozenset(
    {errno.EPERM, errno.EACCES, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENODATA}
)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_EXCL_FLAGS = os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_CREATE_FLAGS = os.O_RDWR | _EXCL_FLAGS


class CopyError(ParjobsError, OSError):
    """Base of the errors a copy raises on purpose; ``filename`` names the file concerned."""

    def __str__(self) -> str:  # the message already names the path
        return str(self.args[0]) if len(self.args) == 1 else super().__str__()


class SpecialFileError(CopyError):
    """The source is not a regular file (FIFO, socket, device, directory or symlink)."""


class SourceChangedError(CopyError):
    """The source's size or mtime changed while it was copied; the copy was discarded."""


class NotOursError(CopyError):
    """A temporary this copy wrote was replaced or changed by someone else before its rename:
    nothing was published, and what is there now was left alone."""


class VerifyError(CopyError):
    """The destination read back with a different digest than the source; it was discarded.

    ``filename`` is the destination; ``expected``/``actual`` are the xxh3-128 hex digests.
    """

    expected: str
    actual: str


@dataclass(frozen=True, slots=True)
class CopyResult:
    """What one `copy_file` call did.

    ``method`` is the method that wrote the last byte ("readwrite" if nothing needed copying);
    digests are xxh3-128 hex, ``src_digest`` when ``hash_source`` or ``verify`` was asked and
    ``dst_digest`` when ``verify`` was.
    """

    bytes_copied: int
    bytes_reused: int
    method: Method
    src_digest: str | None
    dst_digest: str | None


# ---------------------------------------------------------------------------------------------
# names and directories


def _leaf(name: str | bytes) -> bytes:
    """Encode a single path component, refusing anything that could escape its directory."""
    raw = os.fsencode(name)
    if not raw or raw in (b".", b"..") or b"/" in raw or b"\0" in raw:
        raise ValueError(f"not a single path component: {name!r}")
    return raw


def _owner(owner: str | bytes | None) -> bytes:
    """The name token temporaries are written under: ``owner``, or this process's."""
    return _PROCESS_OWNER[0] if owner is None else check_token(owner)


def partial_names(name: str | bytes, owner: str | bytes | None = None) -> tuple[bytes, bytes]:
    """Return the (partial, meta) names ``owner`` (a name token) uses for destination ``name``.

    Deterministic per (owner, name), so the owner's next run finds them; another owner's never
    collide. Names too long for ``.<name>.<owner>.parjobs-partial.meta`` to fit in 255 bytes
    fall back to ``.parjobs.<xxh64 of name>.<owner>.parjobs-partial``.
    """
    raw, token = _leaf(name), _owner(owner)
    partial = b"." + raw + b"." + token + PARTIAL_SUFFIX
    if len(partial) + len(b".meta") > _NAME_MAX:
        digest = xxhash.xxh64_hexdigest(raw).encode()
        partial = b".parjobs." + digest + b"." + token + PARTIAL_SUFFIX
    return partial, partial + b".meta"


def tmp_name(raw: bytes, owner: str | bytes | None = None) -> bytes:
    """An unpredictable one-shot temporary name for ``raw``, carrying ``owner``'s token:
    ``.<raw>.<owner>.<16 random hex>.parjobs-tmp`` (``.parjobs.<owner>.…`` when too long).

    The random part only has to avoid collisions (the create is O_EXCL|O_NOFOLLOW, so a
    planted name fails safely), so a urandom-seeded PRNG serves: no getrandom syscall per file.
    """
    tail = b"." + _owner(owner) + b".%016x" % _TOKENS.getrandbits(64) + TMP_SUFFIX
    tmp = b"." + raw + tail
    return tmp if len(tmp) <= _NAME_MAX else b".parjobs" + tail


_tmp_name = tmp_name


def _open_dst(dst: StrOrBytesPath, dst_dir_fd: int | None) -> tuple[int, bytes, bool]:
    """Return (dir fd, leaf name, whether we own the fd) for a destination argument."""
    raw = os.fsencode(dst)
    if dst_dir_fd is not None:
        return dst_dir_fd, _leaf(raw), False
    head, tail = os.path.split(raw)
    leaf = _leaf(tail)
    return os.open(head or b".", _DIR_FLAGS), leaf, True


def _lexists(dir_fd: int, name: bytes) -> bool:
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def _unlink_quiet(dir_fd: int, name: bytes) -> bool:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return False
    return True


def _exists_error(name: bytes) -> FileExistsError:
    return FileExistsError(errno.EEXIST, "destination exists", os.fsdecode(name))


def open_dir_nofollow(
    root: StrOrBytesPath, rel_parts: Sequence[str | bytes], *, create: bool = False
) -> int:
    """Open ``root/rel_parts...`` as a directory fd without following any symlink below root.

    ``root`` itself is trusted (it may be a symlink). Each component is opened with
    ``O_DIRECTORY|O_NOFOLLOW`` relative to its parent's fd, so a symlink planted inside the tree
    raises `OSError` (ELOOP/ENOTDIR) instead of redirecting writes elsewhere. With ``create``,
    missing directories are made. The caller closes the returned fd.
    """
    fd = os.open(root, _DIR_FLAGS)
    try:
        for part in rel_parts:
            leaf = _leaf(part)
            if create:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(leaf, dir_fd=fd)
            child = os.open(leaf, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=fd)
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


def _rename(dir_fd: int, tmp: bytes, name: bytes, overwrite: bool) -> None:
    """Rename ``tmp`` to ``name``; without ``overwrite`` raise FileExistsError atomically.

    No-replace tries renameat2(RENAME_NOREPLACE), then link+unlink; on filesystems with
    neither (e.g. FAT) it falls back to check-then-rename, which has a small race window.
    """
    if overwrite:
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        return
    func = _renameat2()
    if func is not None:
        if func(dir_fd, tmp, dir_fd, name, _RENAME_NOREPLACE) == 0:
            return
        err = ctypes.get_errno()
        if err == errno.EEXIST:
            raise _exists_error(name)
        if err not in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
            raise OSError(err, os.strerror(err), os.fsdecode(name))
    try:
        os.link(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
    except FileExistsError:
        raise _exists_error(name) from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOSYS, errno.EMLINK):
            raise
        if _lexists(dir_fd, name):  # racy last resort, see docstring
            raise _exists_error(name) from None
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        return
    os.unlink(tmp, dir_fd=dir_fd)


# ---------------------------------------------------------------------------------------------
# source checks, hashing, metadata

_KINDS = {
    stat.S_IFIFO: "FIFO",
    stat.S_IFSOCK: "socket",
    stat.S_IFCHR: "character device",
    stat.S_IFBLK: "block device",
    stat.S_IFDIR: "directory",
    stat.S_IFLNK: "symbolic link",
}


def _require_regular(st: os.stat_result, path: StrOrBytesPath) -> None:
    if not stat.S_ISREG(st.st_mode):
        kind = _KINDS.get(stat.S_IFMT(st.st_mode), "special file")
        exc = SpecialFileError(
            f"refusing to copy {os.fsdecode(path)!r}: it is a {kind}, not a regular file"
        )
        exc.filename = os.fsdecode(path)
        raise exc


def is_sparse(st: os.stat_result) -> bool:
    """Whether a regular file has fewer blocks on disk than its size needs: it has holes
    (or is compressed; either way the hole-aware copy is right for it)."""
    return st.st_blocks * 512 < st.st_size


def _open_source(src: StrOrBytesPath, *, lstat_first: bool = True) -> tuple[int, os.stat_result]:
    """Open a regular file for reading, never following a symlink or opening a special file.

    The lstat before opening keeps us from opening devices at all; O_NOFOLLOW|O_NONBLOCK and
    the fstat after close the race where the name is swapped in between. A caller that has
    just lstat'ed the name itself (a fresh tree walk) skips the first lstat.
    """
    if lstat_first:
        _require_regular(os.lstat(src), src)
    try:
        fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            _require_regular(os.lstat(src), src)
        raise
    try:
        st = os.fstat(fd)
        _require_regular(st, src)
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def _copy_xattrs(src_fd: int, dst_fd: int) -> None:
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


def _apply_metadata(
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
        _copy_xattrs(src_fd, dst_fd)
    if mode:
        os.fchmod(dst_fd, stat.S_IMODE(st.st_mode))
    if times:
        os.utime(dst_fd, ns=(st.st_atime_ns, st.st_mtime_ns))


# ---------------------------------------------------------------------------------------------
# resumable partials


def _meta_record(st: os.stat_result, owner: bytes) -> dict[str, object]:
    """What a partial's ``.meta`` records: its owner's token and the source's identity."""
    return {
        "v": 2,
        "owner": owner.decode(),
        "dev": st.st_dev,
        "ino": st.st_ino,
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
    }


def _read_meta(dir_fd: int, meta: bytes) -> object:
    try:
        fd = os.open(meta, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        return None
    try:
        return json.loads(os.read(fd, 4096))
    except ValueError:
        return None
    finally:
        os.close(fd)


def remove_partials(
    dst: StrOrBytesPath, *, dst_dir_fd: int | None = None, owner: str | bytes | None = None
) -> int:
    """Remove ``owner``'s leftover resumable partial and its meta for destination ``dst``.

    ``dst`` is a path, or a leaf name relative to ``dst_dir_fd``; ``owner`` the name token the
    copy ran under (default: this process's). Returns how many files were removed (0-2).
    """
    dir_fd, name, own = _open_dst(dst, dst_dir_fd)
    token = _owner(owner)
    try:
        return sum(_remove_own(dir_fd, n, token) for n in partial_names(name, token))
    finally:
        if own:
            os.close(dir_fd)


def _remove_own(dir_fd: int, name: bytes, token: bytes) -> bool:
    """Unlink ``name`` if it is ``token``'s temporary: the name carries the token, it is a
    regular file of ours, and (a partial) its meta, when there, names the same owner."""
    if not is_own_temp(name, token):
        return False
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
        return False
    if name.endswith(PARTIAL_SUFFIX):
        meta = _read_meta(dir_fd, name + b".meta")
        if isinstance(meta, dict) and meta.get("owner") not in (None, token.decode()):
            return False
    return _unlink_quiet(dir_fd, name)


def remove_own_temps(root: StrOrBytesPath, owner: str | bytes, *, recursive: bool = True) -> int:
    """Remove the temporaries and partials carrying ``owner``'s token under ``root`` (or in
    ``root`` alone); return how many. Nothing else is touched: not a user's file named like
    a temporary, not another job's temporary. Symlinks are never followed."""
    token = check_token(owner)
    removed = 0
    pending = [os.fsencode(root)]
    while pending:
        top = pending.pop()
        try:
            fd = os.open(top, _DIR_FLAGS | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            with os.scandir(fd) as entries:
                names = [(e.name, e.is_dir(follow_symlinks=False)) for e in entries]
            for leaf, is_dir in names:
                raw = os.fsencode(leaf)
                if is_dir:
                    if recursive:
                        pending.append(top + b"/" + raw)
                elif _remove_own(fd, raw, token):
                    removed += 1
        finally:
            os.close(fd)
    return removed


@overload
def find_partials(root: str | os.PathLike[str]) -> list[str]: ...
@overload
def find_partials(root: bytes | os.PathLike[bytes]) -> list[bytes]: ...
def find_partials(root: StrOrBytesPath) -> list[str] | list[bytes]:
    """List the files under ``root`` named like parjobs temporaries (partials, their meta,
    one-shot temps), whoever's they are: a diagnostic, never a list of things to remove
    (`remove_own_temps` removes a job's own).

    Symlinked directories are not followed. Paths come back sorted, of the type of ``root``.
    """
    suffixes = (PARTIAL_SUFFIX, META_SUFFIX, TMP_SUFFIX)
    top = os.fspath(root)
    found = sorted(
        os.path.join(d, f)
        for d, _, files in os.walk(os.fsencode(top))
        for f in files
        if f.endswith(suffixes)
    )
    return found if isinstance(top, bytes) else [os.fsdecode(p) for p in found]


# ---------------------------------------------------------------------------------------------
# copying


def _noop(*_: object) -> None:
    pass


def _read_at(fd: int, buf: memoryview, pos: int) -> int:
    """Fill as much of ``buf`` as possible from ``fd`` at ``pos``; short only at EOF."""
    got = 0
    while got < len(buf):
        n = os.preadv(fd, [buf[got:]], pos + got)
        if n == 0:
            break
        got += n
    return got


def _write_at(fd: int, data: memoryview, pos: int) -> None:
    while data:
        n = os.pwrite(fd, data, pos)
        data, pos = data[n:], pos + n


def _source_changed(src: StrOrBytesPath, detail: str) -> NoReturn:
    name = os.fsdecode(src)
    exc = SourceChangedError(f"source changed while being copied: {name!r} ({detail})")
    exc.filename = name
    raise exc


def _check_unchanged(src: StrOrBytesPath, fd: int, before: os.stat_result) -> None:
    """Raise `SourceChangedError` if the open source's size or mtime moved since ``before``."""
    now = os.fstat(fd)
    if now.st_size != before.st_size or now.st_mtime_ns != before.st_mtime_ns:
        _source_changed(
            src,
            f"size {before.st_size} -> {now.st_size}, "
            f"mtime_ns {before.st_mtime_ns} -> {now.st_mtime_ns}",
        )


def _commit(
    dst_fd: int, dir_fd: int, tmp: bytes, name: bytes, overwrite: bool, durable: bool
) -> None:
    """Flush (when ``durable``) and close the written temporary, then rename it into place.
    ``dst_fd`` is closed whatever happens."""
    try:
        if durable:
            os.fsync(dst_fd)
    finally:
        os.close(dst_fd)
    _rename(dir_fd, tmp, name, overwrite)


def _try_reflink(src_fd: int, src_dev: int, dst_fd: int, dst_dev: int | None) -> bool:
    """Clone ``src_fd`` into the empty ``dst_fd`` (FICLONE); False when the filesystems can't.

    A pair of filesystems that refused for good (not supported, cross-device) is remembered,
    so copying many small files does not pay a failing ioctl each. ``dst_dev`` (the
    destination directory's device, when the caller knows it) saves an fstat per file; a
    wrong hint only costs speed, never correctness.
    """
    devices = (src_dev, os.fstat(dst_fd).st_dev if dst_dev is None else dst_dev)
    if devices in _NO_REFLINK:
        return False
    try:
        fcntl.ioctl(dst_fd, _FICLONE, src_fd)
    except OSError as exc:
        if exc.errno not in _FALLBACK_ERRNOS:
            raise
        if exc.errno in _NO_REFLINK_ERRNOS:
            _NO_REFLINK.add(devices)
        return False
    return True


class _Copier:
    """One file copy in progress: the open source, its stat, the callbacks, one buffer."""

    def __init__(
        self,
        src: StrOrBytesPath,
        fd: int,
        st: os.stat_result,
        chunk_size: int,
        check: Callable[[], None],
        on_bytes: Callable[[int], None],
        dst_dev: int | None,
        owner: bytes,
    ) -> None:
        self.src = src
        self.fd, self.st = fd, st
        self.size = st.st_size
        self.owner = owner
        self.chunk_size, self.check, self.on_bytes = chunk_size, check, on_bytes
        self._buf: memoryview | None = None
        self.dst_dev = dst_dev  # the reflink cache's hint, see `_try_reflink`

    @property
    def buf(self) -> memoryview:
        """The reusable I/O buffer, allocated on first use and no larger than the file."""
        if self._buf is None:
            self._buf = memoryview(bytearray(max(1, min(self.chunk_size, self.size))))
        return self._buf

    def changed(self, detail: str) -> NoReturn:
        _source_changed(self.src, detail)

    def check_unchanged(self) -> None:
        _check_unchanged(self.src, self.fd, self.st)

    def hash_range(
        self, fd: int, hasher: xxhash.xxh3_128, pos: int, length: int, progress: bool = False
    ) -> int:
        """Feed ``length`` bytes of ``fd`` from ``pos`` to ``hasher``; return bytes read."""
        done = 0
        while done < length:
            self.check()
            view = self.buf[: min(len(self.buf), length - done)]
            n = _read_at(fd, view, pos + done)
            hasher.update(view[:n])
            done += n
            if progress:
                self.on_bytes(n)
            if n < len(view):
                break
        return done

    def reusable_prefix(
        self, part_fd: int, dir_fd: int, meta: bytes
    ) -> tuple[int, xxhash.xxh3_128] | None:
        """The partial's length if it provably equals the source's prefix (plus the source
        hasher fed over that prefix), or None when the partial must be discarded."""
        pst = os.fstat(part_fd)
        if not stat.S_ISREG(pst.st_mode) or pst.st_uid != os.geteuid() or pst.st_nlink != 1:
            return None
        length = pst.st_size
        record = _meta_record(self.st, self.owner)
        if not 0 < length <= self.size or _read_meta(dir_fd, meta) != record:
            return None
        other = memoryview(bytearray(len(self.buf)))
        hasher = xxhash.xxh3_128()
        pos = 0
        while pos < length:
            self.check()
            want = min(len(other), length - pos)
            a, b = self.buf[:want], other[:want]
            if _read_at(self.fd, a, pos) != want or _read_at(part_fd, b, pos) != want or a != b:
                return None
            hasher.update(a)
            pos += want
        return length, hasher

    def open_partial(
        self, dir_fd: int, partial: bytes, meta: bytes, mode: int
    ) -> tuple[int, int, xxhash.xxh3_128 | None]:
        """Open the owner's deterministic partial: (fd, bytes reused, source hasher over them).
        The names carry the owner's token, so what is removed here is never another's."""
        try:
            fd = os.open(partial, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        except OSError:  # missing, or a symlink/directory planted there: never follow it
            fd = -1
        if fd >= 0:
            try:
                reuse = self.reusable_prefix(fd, dir_fd, meta)
            except BaseException:
                os.close(fd)
                raise
            if reuse is not None:
                return fd, reuse[0], reuse[1]
            os.close(fd)
        _unlink_quiet(dir_fd, partial)
        _unlink_quiet(dir_fd, meta)
        mfd = os.open(meta, os.O_WRONLY | _EXCL_FLAGS, 0o600, dir_fd=dir_fd)
        try:
            os.write(mfd, json.dumps(_meta_record(self.st, self.owner)).encode())
        finally:
            os.close(mfd)
        return os.open(partial, _CREATE_FLAGS, mode, dir_fd=dir_fd), 0, None

    def transfer(
        self, dst_fd: int, pos: int, methods: Iterable[Method], hasher: xxhash.xxh3_128 | None
    ) -> Method:
        """Copy source bytes ``pos:size`` to the same offsets of ``dst_fd``; return the method
        that wrote the last byte.

        A kernel method falls back to the next on errors meaning "not supported here", or on a
        premature 0 (some filesystems answer so); read/write is always the last resort. The
        kernel paths never show us the data, so when hashing we re-read each copied range.
        """
        chain: list[Method] = [m for m in methods if m != "readwrite"] + ["readwrite"]
        size = self.size
        if chain[0] == "reflink":
            chain.pop(0)
            if pos == 0 and size > 0 and self._reflink(dst_fd, hasher):
                return "reflink"  # a clone shares the extents: holes stay holes
        if is_sparse(self.st):
            return self._transfer_sparse(dst_fd, pos, chain, hasher)
        return self._copy_range(dst_fd, pos, size, chain, hasher)

    def _transfer_sparse(
        self, dst_fd: int, pos: int, chain: list[Method], hasher: xxhash.xxh3_128 | None
    ) -> Method:
        """`transfer` for a file with holes: copy its data extents only (SEEK_DATA and
        SEEK_HOLE), then truncate the temporary to the source's size, so holes stay holes
        (no copy method keeps them everywhere: copy_file_range fills them on ext4)."""
        size = self.size
        method: Method = "readwrite"
        while pos < size:
            self.check()
            try:
                start = min(os.lseek(self.fd, pos, os.SEEK_DATA), size)
            except OSError as exc:
                if exc.errno == errno.ENXIO:  # only a hole from pos on
                    start = size
                elif exc.errno in _FALLBACK_ERRNOS:  # no SEEK_DATA here: copy it all
                    return self._copy_range(dst_fd, pos, size, chain, hasher)
                else:
                    raise
            if start > pos:
                self._hole(hasher, start - pos)
                pos = start
            if pos >= size:
                break
            end = min(os.lseek(self.fd, pos, os.SEEK_HOLE), size)
            method = self._copy_range(dst_fd, pos, end, chain, hasher)
            pos = end
        os.ftruncate(dst_fd, size)
        return method

    def _hole(self, hasher: xxhash.xxh3_128 | None, length: int) -> None:
        """Account for a hole of ``length`` zero bytes: progress, and the digest."""
        if hasher is not None:
            zeros = bytes(min(length, 1 << 20))
            left = length
            while left:
                n = min(left, len(zeros))
                hasher.update(zeros[:n] if n < len(zeros) else zeros)
                left -= n
        self.on_bytes(length)

    def _copy_range(
        self,
        dst_fd: int,
        pos: int,
        size: int,
        chain: list[Method],
        hasher: xxhash.xxh3_128 | None,
    ) -> Method:
        """Copy source bytes ``pos:size`` to the same offsets of ``dst_fd`` by the first
        method of ``chain`` that works (popping those that do not apply here)."""
        method: Method = "readwrite"
        while pos < size:
            self.check()
            method, want = chain[0], min(self.chunk_size, size - pos)
            try:
                if method == "copy_file_range":
                    n = os.copy_file_range(self.fd, dst_fd, want, pos, pos)
                elif method == "sendfile":
                    os.lseek(dst_fd, pos, os.SEEK_SET)
                    n = os.sendfile(dst_fd, self.fd, pos, want)
                else:
                    view = self.buf[:want]
                    n = _read_at(self.fd, view, pos)
                    if n == 0:
                        self.changed(f"it ended at byte {pos} of {self.size}")
                    _write_at(dst_fd, view[:n], pos)
                    if hasher is not None:
                        hasher.update(view[:n])
            except OSError as exc:
                if method == "readwrite" or exc.errno not in _FALLBACK_ERRNOS:
                    raise
                chain.pop(0)
                continue
            if n == 0:  # premature EOF from a kernel path: let read/write decide
                chain.pop(0)
                continue
            if hasher is not None and method != "readwrite":
                self.rehash(hasher, pos, n)
            pos += n
            self.on_bytes(n)
        return method

    def _reflink(self, dst_fd: int, hasher: xxhash.xxh3_128 | None) -> bool:
        """Clone the whole file (FICLONE); False when the filesystem cannot."""
        if not _try_reflink(self.fd, self.st.st_dev, dst_fd, self.dst_dev):
            return False
        if hasher is None:
            self.on_bytes(self.size)
        else:
            self.rehash(hasher, 0, self.size, progress=True)
        return True

    def rehash(
        self, hasher: xxhash.xxh3_128, pos: int, length: int, progress: bool = False
    ) -> None:
        """Hash a source range a kernel path just copied (it never showed us the bytes)."""
        if self.hash_range(self.fd, hasher, pos, length, progress) != length:
            self.changed("it shrank while being hashed")

    def verify(self, dst_fd: int, name: bytes, expected: str, durable: bool) -> str:
        """Re-read the written temporary and compare digests; durable copies read from disk."""
        if durable:
            os.fsync(dst_fd)
            os.posix_fadvise(dst_fd, 0, 0, os.POSIX_FADV_DONTNEED)
        hasher = xxhash.xxh3_128()
        read = self.hash_range(dst_fd, hasher, 0, self.size)
        actual, dst_size = hasher.hexdigest(), os.fstat(dst_fd).st_size
        if read != self.size or dst_size != self.size:
            actual = f"<{dst_size} bytes, expected {self.size}>"
        if actual != expected:
            exc = VerifyError(
                f"verification failed for {os.fsdecode(name)!r}: source xxh3-128 {expected}, "
                f"destination {actual}"
            )
            exc.filename, exc.expected, exc.actual = os.fsdecode(name), expected, actual
            raise exc
        return actual


def copy_small_files(
    items: list[tuple[bytes, int, bytes]],
    *,
    src_dev: int,
    dst_dev: int,
    src_lstat: bool = True,
    max_size: int = DEFAULT_CHUNK_SIZE,
    owner: str | bytes | None = None,
) -> tuple[list[int], list[int]] | None:
    """Copy many small files in one call into C (`_fastcopy.c`), with the GIL released.

    ``items`` are (source path, destination dir fd, name); each is copied as `copy_file`
    copies a one-chunk file with mode and times, no overwrite, no lookups beforehand. Returns
    (results, sizes): result 0 means the file is in place and ``sizes`` holds its bytes; any
    other result means nothing of it was left behind, so the caller copies it again with
    `copy_file`, which reports the problem properly. None when the C extension is not
    available (or an item cannot be passed to C): copy them all with `copy_file`.
    ``src_dev``/``dst_dev`` key the reflink cache, as in `_try_reflink`; ``src_lstat=False``
    skips the lstat before opening a source, as in `copy_file`. A source found larger than
    ``max_size`` (grown since it was listed) is handed back, for a chunked copy, and so is a
    sparse source (the Python path keeps its holes). Temporaries carry ``owner``'s token, as
    in `copy_file`.
    """
    if fastcopy is None:
        return None
    devices = (src_dev, dst_dev)
    flags = fastcopy.MODE | fastcopy.TIMES
    if src_lstat:
        flags |= fastcopy.LSTAT
    if devices not in _NO_REFLINK:
        flags |= fastcopy.REFLINK
    try:
        results, sizes, refused = fastcopy.copy_many(items, flags, max_size, _owner(owner))
    except ValueError:  # a NUL byte in a name: checked before copying anything
        return None
    if refused:
        _NO_REFLINK.add(devices)
    return results, sizes


def copy_file(
    src: StrOrBytesPath,
    dst: StrOrBytesPath,
    *,
    dst_dir_fd: int | None = None,
    check: Callable[[], None] | None = None,
    on_bytes: Callable[[int], None] | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    overwrite: bool = True,
    durable: bool = False,
    preserve_mode: bool = True,
    preserve_times: bool = True,
    preserve_xattrs: bool = False,
    preserve_owner: bool = False,
    resume_partial: bool = True,
    verify: bool = False,
    hash_source: bool = False,
    precheck: bool = True,
    src_lstat: bool = True,
    dst_dev: int | None = None,
    owner: str | bytes | None = None,
    _methods: Sequence[Method] = _ALL_METHODS,
    _after_write: Callable[[int], object] | None = None,
) -> CopyResult:
    """Copy the regular file ``src`` to ``dst`` atomically: temporary, then rename into place.

    ``dst`` is a path, or a single name relative to ``dst_dir_fd`` (like the ``dir_fd=``
    arguments of `os`); the destination side never follows symlinks. ``check()`` runs between
    chunks and may raise to interrupt: with ``resume_partial``, a file larger than one chunk
    then leaves its partial for the next call to resume (smaller files use a one-shot temp).
    ``on_bytes(n)`` sums to the file size; a reused prefix is reported once, up front.
    Without ``overwrite`` an existing destination raises FileExistsError and is left intact.
    Raises SpecialFileError for a non-regular source, SourceChangedError if its size or mtime
    changed during the copy, VerifyError if ``verify`` reads back different bytes; in these
    cases the temporary is removed. ``_methods`` and ``_after_write(temp_fd)`` are test seams.

    Hints from a caller that knows more (a tree copy), each saving a syscall per file:
    ``precheck=False`` skips looking for an existing destination before copying (the
    no-replace rename still refuses it, after the copy: for directories known to be new),
    ``src_lstat=False`` skips the lstat before opening the source (just walked: the
    O_NOFOLLOW|O_NONBLOCK open and the fstat still refuse a special file), and ``dst_dev`` is
    the destination directory's device (for the reflink cache).

    ``owner`` is the name token the temporaries carry (a job's, `parjobs.ops._names`; default
    this process's): a partial is resumed only by the same owner, and only ever removed by it.
    A sparse source keeps its holes.
    """
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    token = _owner(owner)
    fd, st = _open_source(src, lstat_first=src_lstat)
    try:
        dir_fd, name, own_dir = _open_dst(dst, dst_dir_fd)
        try:
            if precheck and not overwrite and _lexists(dir_fd, name):
                raise _exists_error(name)
            if (
                st.st_size <= chunk_size
                and not (verify or hash_source or preserve_xattrs or preserve_owner)
                and _methods is _ALL_METHODS
                and _after_write is None
                and not is_sparse(st)
            ):
                return _copy_one_shot(
                    src,
                    fd,
                    st,
                    dir_fd,
                    name,
                    check,
                    on_bytes,
                    overwrite=overwrite,
                    durable=durable,
                    mode=preserve_mode,
                    times=preserve_times,
                    dst_dev=dst_dev,
                    owner=token,
                )
            copier = _Copier(
                src, fd, st, chunk_size, check or _noop, on_bytes or _noop, dst_dev, token
            )
            return _copy_general(
                copier,
                dir_fd,
                name,
                overwrite=overwrite,
                durable=durable,
                resumable=resume_partial and st.st_size > chunk_size,  # else nothing to save
                hashing=hash_source or verify,
                verify=verify,
                metadata=(preserve_mode, preserve_times, preserve_xattrs, preserve_owner),
                methods=_methods,
                after_write=_after_write,
            )
        finally:
            if own_dir:
                os.close(dir_fd)
    finally:
        os.close(fd)


def _copy_one_shot(
    src: StrOrBytesPath,
    fd: int,
    st: os.stat_result,
    dir_fd: int,
    name: bytes,
    check: Callable[[], None] | None,
    on_bytes: Callable[[int], None] | None,
    *,
    overwrite: bool,
    durable: bool,
    mode: bool,
    times: bool,
    dst_dev: int | None,
    owner: bytes,
) -> CopyResult:
    """The common case, lean for many small files: one chunk or less, nothing to hash,
    verify, resume or carry beyond mode and times. Same protocol as the general path
    (temporary, metadata, rename), fewest syscalls: reflink or copy_file_range in one go,
    read/write when the kernel paths do not apply."""
    size = st.st_size
    tmp = tmp_name(name, owner)
    dst_fd = os.open(tmp, _CREATE_FLAGS, 0o600 if mode else 0o666, dir_fd=dir_fd)
    done = False
    try:
        if check is not None:
            check()
        method: Method = "readwrite"
        if size:
            if _try_reflink(fd, st.st_dev, dst_fd, dst_dev):
                method = "reflink"
            else:
                method = _copy_small_range(src, fd, dst_fd, size)
        if on_bytes is not None:
            on_bytes(size)
        _check_unchanged(src, fd, st)
        _apply_metadata(fd, dst_fd, st, mode, times, False, False)
        written, dst_fd = dst_fd, -1
        _commit(written, dir_fd, tmp, name, overwrite, durable)
        done = True
    finally:
        if dst_fd >= 0:
            os.close(dst_fd)
        if not done:
            _unlink_quiet(dir_fd, tmp)
    if durable:
        os.fsync(dir_fd)
    return CopyResult(size, 0, method, None, None)


def _check_still_ours(dst_fd: int, dir_fd: int, tmp: bytes, size: int) -> None:
    """Before a rename publishes ``tmp``: it must still be the very file this call wrote
    (same device and inode as ``dst_fd``) and hold exactly ``size`` bytes; else refuse, leaving
    whatever is there alone (it is not ours)."""
    mine = os.fstat(dst_fd)
    try:
        there = os.stat(tmp, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        there = None
    if there is None or (there.st_dev, there.st_ino) != (mine.st_dev, mine.st_ino):
        exc = NotOursError(f"temporary {os.fsdecode(tmp)!r} was replaced by another writer")
        exc.filename = os.fsdecode(tmp)
        raise exc
    if mine.st_size != size:
        exc = NotOursError(f"temporary {os.fsdecode(tmp)!r} holds {mine.st_size} bytes, not {size}")
        exc.filename = os.fsdecode(tmp)
        raise exc


def _copy_small_range(src: StrOrBytesPath, fd: int, dst_fd: int, size: int) -> Method:
    """Copy ``size`` bytes with copy_file_range, else read/write; a source that ends early
    raises `SourceChangedError`."""
    pos = 0
    try:
        while pos < size:
            n = os.copy_file_range(fd, dst_fd, size - pos, pos, pos)
            if n == 0:
                break
            pos += n
        else:
            return "copy_file_range"
    except OSError as exc:
        if exc.errno not in _FALLBACK_ERRNOS:
            raise
    # A kernel path does not apply here (or stopped early): finish with read/write, which
    # tells a short source from a lazy filesystem.
    buf = memoryview(bytearray(size - pos))
    got = _read_at(fd, buf, pos)
    if got < len(buf):
        _source_changed(src, f"it ended at byte {pos + got} of {size}")
    _write_at(dst_fd, buf, pos)
    return "readwrite"


def _copy_general(
    copier: _Copier,
    dir_fd: int,
    name: bytes,
    *,
    overwrite: bool,
    durable: bool,
    resumable: bool,
    hashing: bool,
    verify: bool,
    metadata: tuple[bool, bool, bool, bool],
    methods: Sequence[Method],
    after_write: Callable[[int], object] | None,
) -> CopyResult:
    """Every other case: chunked with byte progress and interruption checks, resumable
    partials, hashing and verification, xattrs and owner."""
    mode = 0o600 if metadata[0] else 0o666  # private until the real mode is set
    meta: bytes | None = None
    if resumable:
        tmp, meta = partial_names(name, copier.owner)
        dst_fd, reused, hasher = copier.open_partial(dir_fd, tmp, meta, mode)
    else:
        tmp, reused, hasher = tmp_name(name, copier.owner), 0, None
        dst_fd = os.open(tmp, _CREATE_FLAGS, mode, dir_fd=dir_fd)
    if not hashing:
        hasher = None
    elif hasher is None:
        hasher = xxhash.xxh3_128()
    discard, done = not resumable, False
    try:
        if reused:
            copier.on_bytes(reused)
        method = copier.transfer(dst_fd, reused, methods, hasher)
        if after_write is not None:
            after_write(dst_fd)
        copier.check_unchanged()
        src_digest = dst_digest = None
        if hasher is not None:
            src_digest = hasher.hexdigest()
            if verify:
                dst_digest = copier.verify(dst_fd, name, src_digest, durable)
        _apply_metadata(copier.fd, dst_fd, copier.st, *metadata)
        _check_still_ours(dst_fd, dir_fd, tmp, copier.size)
        written, dst_fd = dst_fd, -1
        _commit(written, dir_fd, tmp, name, overwrite, durable)
        done = True
    except (SourceChangedError, VerifyError, FileExistsError):
        discard = True
        raise
    except NotOursError:
        discard = False  # whatever is at the temporary's name now is not ours to remove
        raise
    finally:
        if dst_fd >= 0:
            os.close(dst_fd)
        if discard and not done:
            _unlink_quiet(dir_fd, tmp)
            if meta is not None:
                _unlink_quiet(dir_fd, meta)
    if meta is not None:
        _unlink_quiet(dir_fd, meta)
    if durable:
        os.fsync(dir_fd)
    return CopyResult(copier.size - reused, reused, method, src_digest, dst_digest)


def copy_symlink(
    src: StrOrBytesPath,
    dst: StrOrBytesPath,
    *,
    dst_dir_fd: int | None = None,
    overwrite: bool = True,
    preserve_times: bool = True,
    preserve_owner: bool = False,
    durable: bool = False,
    owner: str | bytes | None = None,
) -> None:
    """Recreate the symlink ``src`` (same target text) at ``dst``, atomically.

    The link is made under an unpredictable temporary name and renamed into place; its mtime
    (and owner, if asked and permitted) is set without following it. ``dst``/``dst_dir_fd``
    and ``overwrite`` mean what they mean for `copy_file`.
    """
    st = os.lstat(src)
    if not stat.S_ISLNK(st.st_mode):
        exc = SpecialFileError(f"not a symbolic link: {os.fsdecode(src)!r}")
        exc.filename = os.fsdecode(src)
        raise exc
    target = os.readlink(os.fsencode(src))
    dir_fd, name, own_dir = _open_dst(dst, dst_dir_fd)
    try:
        if not overwrite and _lexists(dir_fd, name):
            raise _exists_error(name)
        tmp = tmp_name(name, owner)
        os.symlink(target, tmp, dir_fd=dir_fd)
        try:
            if preserve_owner:
                with contextlib.suppress(PermissionError):
                    os.chown(tmp, st.st_uid, st.st_gid, dir_fd=dir_fd, follow_symlinks=False)
            if preserve_times:
                ns = (st.st_atime_ns, st.st_mtime_ns)
                os.utime(tmp, ns=ns, dir_fd=dir_fd, follow_symlinks=False)
            _rename(dir_fd, tmp, name, overwrite)
        except BaseException:
            _unlink_quiet(dir_fd, tmp)
            raise
        if durable:
            os.fsync(dir_fd)
    finally:
        if own_dir:
            os.close(dir_fd)


# ---------------------------------------------------------------------------------------------
# policies


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


def _split_ext(raw: bytes) -> tuple[bytes, bytes]:
    """Split off the extension, keeping ``.tar.*`` whole; leading dots are not extensions."""
    stem, ext = os.path.splitext(raw)
    if ext and stem.lower().endswith(b".tar") and len(stem) > 4:
        stem, ext = stem[:-4], stem[-4:] + ext
    if len(ext) > 64:  # not really an extension
        return raw, b""
    return stem, ext


def _truncate(raw: bytes, limit: int) -> bytes:
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


@overload
def unique_name(dst: str | os.PathLike[str], *, dst_dir_fd: int | None = None) -> str: ...
@overload
def unique_name(dst: bytes | os.PathLike[bytes], *, dst_dir_fd: int | None = None) -> bytes: ...
def unique_name(dst: StrOrBytesPath, *, dst_dir_fd: int | None = None) -> str | bytes:
    """Return ``dst`` with its last component changed to the first free ``name (N).ext``.

    For the "rename" conflict policy: ``archive.tar.gz`` becomes ``archive (1).tar.gz`` and
    ``.bashrc`` becomes ``.bashrc (1)``; the stem is shortened to stay within 255 bytes.
    ``dst`` is returned unchanged when free. The answer is only a hint (another writer may take
    the name): copy to it with ``overwrite=False`` and retry on FileExistsError.
    """
    path = os.fspath(dst)
    raw = os.fsencode(path)
    head, tail = os.path.split(raw) if dst_dir_fd is None else (b"", raw)
    dir_fd = os.open(head or b".", _DIR_FLAGS) if dst_dir_fd is None else dst_dir_fd
    try:
        leaf = _leaf(tail)
        stem, ext = _split_ext(leaf)
        candidate, n = leaf, 0
        while _lexists(dir_fd, candidate):
            n += 1
            if n > 100_000:
                raise _exists_error(leaf)
            tag = b" (%d)" % n
            candidate = _truncate(stem, _NAME_MAX - len(tag) - len(ext)) + tag + ext
    finally:
        if dst_dir_fd is None:
            os.close(dir_fd)
    result = os.path.join(head, candidate) if head else candidate
    return result if isinstance(path, bytes) else os.fsdecode(result)
