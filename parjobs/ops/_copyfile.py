"""Blocking copy primitives: one regular file or one symlink, atomically and resumably.

Everything here is synchronous and meant to run in a worker thread. ``check`` is called
between chunks (it raises to interrupt) and ``on_bytes`` reports progress, so a trio task can
pause, cancel and display a copy without this module knowing about trio.

Write protocol (rsync/rclone style): data goes to a hidden temporary in the destination
directory; mode, times, xattrs and owner are applied to the open temporary; it is then renamed
over the destination. Temporaries carry their writer's name token (`parjobs.ops._partials`):
a one-shot temporary for files of at most one chunk and symlinks, a resumable partial plus a
``.meta`` sidecar for larger files. A leftover partial is reused only when its meta still
matches *and* its bytes re-read identical to the source's prefix, so a resume never trusts
anything it did not check; and a partial is checked to still be the file this call wrote just
before it is renamed into place.

Sparse files keep their holes: only data extents are copied (``SEEK_DATA``/``SEEK_HOLE``) and
the temporary is truncated to the source's size. Other files past one chunk have their blocks
reserved before the copy where that saves CPU (`preallocate`: ext4), their size unchanged.

Destination safety: every destination operation goes through a directory fd and a single name
(``dir_fd=``, ``O_NOFOLLOW``), so a symlink planted in the destination tree cannot redirect a
write.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import stat
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal, NoReturn, TypeAlias

import xxhash

from ._errors import NotOursError, SourceChangedError, SpecialFileError, VerifyError
from ._fs import (
    DIR_FLAGS,
    FilePath,
    changed_error,
    check_unchanged,
    exists_error,
    leaf,
    lexists,
    noop,
    open_regular,
    rename_noreplace,
    split_at,
    unlink_quiet,
)
from ._kernel import FALLBACK_ERRNOS, NO_RANGE, NO_REFLINK_ERRNOS, preallocate, try_reflink
from ._metadata import apply_metadata
from ._partials import meta_record, owner_token, partial_names, read_meta, tmp_name

Method: TypeAlias = Literal["reflink", "copy_file_range", "sendfile", "readwrite"]

DEFAULT_CHUNK_SIZE = 8 * 1024 * 1024

_ALL_METHODS: tuple[Method, ...] = ("reflink", "copy_file_range", "sendfile", "readwrite")

_EXCL_FLAGS = os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_CREATE_FLAGS = os.O_RDWR | _EXCL_FLAGS


@dataclass(frozen=True, slots=True)
class CopyOptions:
    """How files are copied: one frozen object, from the job's fields to `copy_file`.

    ``chunk_size``: a larger file is copied in chunks of this size (``check`` runs between
    them) and, with ``resume_partial``, through a resumable partial; ``durable`` fsyncs the
    file and its directory; ``preserve_*`` carry the source's metadata; ``verify`` re-reads
    the destination and compares xxh3-128 digests; ``hash_source`` returns the source's
    digest without verifying.
    """

    chunk_size: int = DEFAULT_CHUNK_SIZE
    durable: bool = False
    preserve_mode: bool = True
    preserve_times: bool = True
    preserve_xattrs: bool = False
    preserve_owner: bool = False
    resume_partial: bool = True
    verify: bool = False
    hash_source: bool = False

    def __post_init__(self) -> None:
        if self.chunk_size <= 0:
            raise ValueError(f"chunk_size must be positive, got {self.chunk_size}")

    @property
    def lean(self) -> bool:
        """Whether a one-chunk file may take the lean one-shot path (in Python or, for
        groups, in C): nothing to hash, verify or carry beyond mode and times."""
        return self.groupable and not self.verify

    @property
    def groupable(self) -> bool:
        """Whether small files may go through the C group path: lean, or lean but for
        ``verify``, which that path does itself (`_smallfiles.copy_small_files`' ``compare``)."""
        return not (self.hash_source or self.preserve_xattrs or self.preserve_owner)


#: The options of a plain ``cp``: mode and times, no fsync, no verification.
PLAIN = CopyOptions()


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


def _open_dst(dst: FilePath, dst_dir_fd: int | None) -> tuple[int, bytes, bool]:
    """Return (dir fd, leaf name, whether we own the fd) for a destination argument."""
    raw = os.fsencode(dst)
    if dst_dir_fd is not None:
        return dst_dir_fd, leaf(raw), False
    head, tail = os.path.split(raw)
    name = leaf(tail)
    return os.open(head or b".", DIR_FLAGS), name, True


# ---------------------------------------------------------------------------------------------
# source checks, hashing, metadata


def is_sparse(st: os.stat_result) -> bool:
    """Whether a regular file has fewer blocks on disk than its size needs: it has holes
    (or is compressed; either way the hole-aware copy is right for it)."""
    return st.st_blocks * 512 < st.st_size


# ---------------------------------------------------------------------------------------------
# resumable partials


# ---------------------------------------------------------------------------------------------
# copying


def _read_at(fd: int, buf: memoryview, pos: int) -> int:
    """Fill as much of ``buf`` as possible from ``fd`` at ``pos``; short only at EOF."""
    got = 0
    while got < len(buf):
        n = os.preadv(fd, [buf[got:]], pos + got)
        if n == 0:
            break
        got += n
    return got


def data_extents(fd: int, pos: int, size: int) -> Iterator[tuple[int, int]]:
    """The data extents of ``fd`` between ``pos`` and ``size``, ``(start, end)`` in order
    (``SEEK_DATA``, ``SEEK_HOLE``; what lies between them is a hole: zeros). Where the
    filesystem cannot seek so, one extent: the rest."""
    while pos < size:
        try:
            start = min(os.lseek(fd, pos, os.SEEK_DATA), size)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # only a hole from pos on
                return
            if exc.errno in FALLBACK_ERRNOS:  # no SEEK_DATA here: all of it
                yield pos, size
                return
            raise
        if start >= size:
            return
        pos = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        yield start, pos


def _hash_zeros(hasher: xxhash.xxh3_128, length: int) -> None:
    """Feed ``length`` zero bytes (a hole) to ``hasher``, without reading them."""
    zeros = bytes(min(length, 1 << 20))
    while length:
        n = min(length, len(zeros))
        hasher.update(zeros[:n] if n < len(zeros) else zeros)
        length -= n


def _same_bytes(a: memoryview, b: memoryview) -> bool:
    """Whether two byte views hold the same bytes, at memcmp speed: a bytearray compares
    with any buffer through memcmp, while two memoryviews compare item by item, ~90x slower
    (0.5 against 44 ms per 8 MiB), which made checking a 1 GiB partial before resuming it
    cost seconds of CPU. A view shorter than its bytearray (a file's last piece) is copied."""
    base = a.obj
    whole = base if isinstance(base, bytearray) and len(base) == len(a) else bytearray(a)
    return whole == b


def _write_at(fd: int, data: memoryview, pos: int) -> None:
    while data:
        n = os.pwrite(fd, data, pos)
        data, pos = data[n:], pos + n


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
    rename_noreplace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, overwrite=overwrite)


class _Copier:
    """One file copy in progress: the open source, its stat, the callbacks, one buffer."""

    def __init__(
        self,
        src: FilePath,
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
        self.dst_dev = dst_dev  # the reflink cache's hint, see `try_reflink`

    @property
    def buf(self) -> memoryview:
        """The reusable I/O buffer, allocated on first use and no larger than the file."""
        if self._buf is None:
            self._buf = memoryview(bytearray(max(1, min(self.chunk_size, self.size))))
        return self._buf

    def changed(self, detail: str) -> NoReturn:
        raise changed_error(self.src, detail, "copy")

    def check_unchanged(self) -> None:
        check_unchanged(self.src, self.st, os.fstat(self.fd), "copy")

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
        self, part_fd: int, dir_fd: int, meta: bytes, hashing: bool
    ) -> tuple[int, xxhash.xxh3_128 | None] | None:
        """The partial's length if it provably equals the source's prefix (plus, when
        ``hashing``, the source hasher fed over that prefix), or None when the partial must
        be discarded."""
        pst = os.fstat(part_fd)
        if not stat.S_ISREG(pst.st_mode) or pst.st_uid != os.geteuid() or pst.st_nlink != 1:
            return None
        length = pst.st_size
        record = meta_record(self.st, self.owner)
        if not 0 < length <= self.size or read_meta(dir_fd, meta) != record:
            return None
        other = memoryview(bytearray(len(self.buf)))
        hasher = xxhash.xxh3_128() if hashing else None
        pos = 0
        while pos < length:
            self.check()
            want = min(len(other), length - pos)
            a, b = self.buf[:want], other[:want]
            if (
                _read_at(self.fd, a, pos) != want
                or _read_at(part_fd, b, pos) != want
                or not _same_bytes(a, b)
            ):
                return None
            if hasher is not None:
                hasher.update(a)
            pos += want
        return length, hasher

    def open_partial(
        self, dir_fd: int, partial: bytes, meta: bytes, mode: int, hashing: bool
    ) -> tuple[int, int, xxhash.xxh3_128 | None]:
        """Open the owner's deterministic partial: (fd, bytes reused, source hasher over them
        when ``hashing``). The names carry the owner's token, so what is removed here is
        never another's."""
        try:
            fd = os.open(partial, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        except OSError:  # missing, or a symlink/directory planted there: never follow it
            fd = -1
        if fd >= 0:
            try:
                reuse = self.reusable_prefix(fd, dir_fd, meta, hashing)
            except BaseException:
                os.close(fd)
                raise
            if reuse is not None:
                return fd, reuse[0], reuse[1]
            os.close(fd)
        unlink_quiet(dir_fd, partial)
        unlink_quiet(dir_fd, meta)
        mfd = os.open(meta, os.O_WRONLY | _EXCL_FLAGS, 0o600, dir_fd=dir_fd)
        try:
            os.write(mfd, json.dumps(meta_record(self.st, self.owner)).encode())
        finally:
            os.close(mfd)
        return os.open(partial, _CREATE_FLAGS, mode, dir_fd=dir_fd), 0, None

    def transfer(
        self,
        dst_fd: int,
        pos: int,
        methods: Iterable[Method],
        hasher: xxhash.xxh3_128 | None,
        room: Callable[[], None],
    ) -> Method:
        """Copy source bytes ``pos:size`` to the same offsets of ``dst_fd``; return the method
        that wrote the last byte. ``room`` is called before any byte is written, after a clone
        (which shares the source's extents and needs no room) was tried.

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
        room()
        if is_sparse(self.st):
            return self._transfer_sparse(dst_fd, pos, chain, hasher)
        preallocate(dst_fd, pos, size - pos)
        return self._copy_range(dst_fd, pos, size, chain, hasher)

    def _transfer_sparse(
        self, dst_fd: int, pos: int, chain: list[Method], hasher: xxhash.xxh3_128 | None
    ) -> Method:
        """`transfer` for a file with holes: copy its data extents only (SEEK_DATA and
        SEEK_HOLE), then truncate the temporary to the source's size, so holes stay holes
        (no copy method keeps them everywhere: copy_file_range fills them on ext4)."""
        size = self.size
        method: Method = "readwrite"
        for start, end in data_extents(self.fd, pos, size):
            self.check()
            self._hole(hasher, start - pos)
            method = self._copy_range(dst_fd, start, end, chain, hasher)
            pos = end
        self._hole(hasher, size - pos)
        os.ftruncate(dst_fd, size)
        return method

    def _hole(self, hasher: xxhash.xxh3_128 | None, length: int) -> None:
        """Account for a hole of ``length`` zero bytes: progress, and the digest."""
        if length:
            if hasher is not None:
                _hash_zeros(hasher, length)
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
                if method == "readwrite" or exc.errno not in FALLBACK_ERRNOS:
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
        if not try_reflink(self.fd, self.st.st_dev, dst_fd, self.dst_dev):
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
        """Re-read the written temporary and compare digests; durable copies read from disk.
        A sparse source's copy is read by its own data extents, its holes hashed as the
        zeros they read as (a 10 GiB file of 100 KB read 10 GiB, 14 s)."""
        if durable:
            os.fsync(dst_fd)
            os.posix_fadvise(dst_fd, 0, 0, os.POSIX_FADV_DONTNEED)
        hasher, size = xxhash.xxh3_128(), self.size
        extents = data_extents(dst_fd, 0, size) if is_sparse(self.st) else [(0, size)]
        read = 0
        for start, end in extents:
            _hash_zeros(hasher, start - read)
            read = start + self.hash_range(dst_fd, hasher, start, end - start)
            if read < end:
                break  # (it ended early: the sizes below differ)
        else:
            _hash_zeros(hasher, size - read)
            read = size
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


def copy_file(
    src: FilePath,
    dst: FilePath,
    options: CopyOptions = PLAIN,
    *,
    dst_dir_fd: int | None = None,
    check: Callable[[], None] | None = None,
    on_bytes: Callable[[int], None] | None = None,
    overwrite: bool = True,
    precheck: bool = True,
    src_lstat: bool = True,
    dst_dev: int | None = None,
    owner: str | bytes | None = None,
    src_at: tuple[int, bytes] | None = None,
    _methods: Sequence[Method] = _ALL_METHODS,
    _after_write: Callable[[int], object] | None = None,
) -> CopyResult:
    """Copy the regular file ``src`` to ``dst`` atomically: temporary, then rename into place.

    ``dst`` is a path, or a single name relative to ``dst_dir_fd`` (like the ``dir_fd=``
    arguments of `os`); the destination side never follows symlinks. ``options`` say how (see
    `CopyOptions`). ``check()`` runs between
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
    A sparse source keeps its holes. ``src_at``: the source's directory fd and name, opened
    there (`open_regular`'s ``at``).
    """
    chunk_size = options.chunk_size
    token = owner_token(owner)
    fd, st = open_regular(src, verb="copy", lstat_first=src_lstat, at=src_at)
    try:
        dir_fd, name, own_dir = _open_dst(dst, dst_dir_fd)
        try:
            if precheck and not overwrite and lexists(dir_fd, name):
                raise exists_error(name)
            if (
                st.st_size <= chunk_size
                and options.lean
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
                    durable=options.durable,
                    mode=options.preserve_mode,
                    times=options.preserve_times,
                    dst_dev=dst_dev,
                    owner=token,
                )
            copier = _Copier(
                src, fd, st, chunk_size, check or noop, on_bytes or noop, dst_dev, token
            )
            return _copy_general(
                copier,
                dir_fd,
                name,
                options,
                overwrite=overwrite,
                resumable=options.resume_partial and st.st_size > chunk_size,  # else nothing
                methods=_methods,
                after_write=_after_write,
            )
        finally:
            if own_dir:
                os.close(dir_fd)
    finally:
        os.close(fd)


#: Errors of a destination that cannot hold the file: its temporary is removed, not kept as
#: a partial to resume, since it would hold the space the other files being copied there need.
_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})

#: Files from this size on are checked against the destination's free space first.
ROOM_CHECK_MIN = 1 << 20


def check_room(dir_fd: int, st: os.stat_result, reused: int) -> None:
    """Raise ENOSPC when the source cannot fit the destination's free space.

    A file larger than the disk left filled it before failing, and every file written beside
    it meanwhile failed too, on each resume again: the files that fit never landed. What it
    must write at least (its size, or the blocks a sparse file holds, less what a partial
    already holds) is compared with the free space (what a user may use; root's reserve too,
    as the kernel lets root write there), so only a file that cannot fit is refused, before
    a byte is written. One ``fstatvfs`` per file of ``ROOM_CHECK_MIN`` or more, after a clone
    was tried: a reflink (btrfs, XFS) shares the source's extents and fits a full disk."""
    needed = min(st.st_size, st.st_blocks * 512) - reused
    if needed < ROOM_CHECK_MIN:
        return
    vfs = os.fstatvfs(dir_fd)
    free = (vfs.f_bfree if os.geteuid() == 0 else vfs.f_bavail) * vfs.f_frsize
    if vfs.f_blocks and needed > free:
        raise OSError(
            errno.ENOSPC,
            f"No space left on device ({needed} bytes to write, {free} free there)",
        )


def _copy_one_shot(
    src: FilePath,
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
            if try_reflink(fd, st.st_dev, dst_fd, dst_dev):
                method = "reflink"  # shares the source's extents: needs no room
            else:
                check_room(dir_fd, st, 0)
                devices = (st.st_dev, os.fstat(dst_fd).st_dev if dst_dev is None else dst_dev)
                method = _copy_small_range(src, fd, dst_fd, size, devices)
        if on_bytes is not None:
            on_bytes(size)
        check_unchanged(src, st, os.fstat(fd), "copy")
        apply_metadata(fd, dst_fd, st, mode, times, False, False)
        written, dst_fd = dst_fd, -1
        _commit(written, dir_fd, tmp, name, overwrite, durable)
        done = True
    finally:
        if dst_fd >= 0:
            os.close(dst_fd)
        if not done:
            unlink_quiet(dir_fd, tmp)
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


def _copy_small_range(
    src: FilePath, fd: int, dst_fd: int, size: int, devices: tuple[int, int]
) -> Method:
    """Copy ``size`` bytes with copy_file_range, else read/write; a source that ends early
    raises `SourceChangedError`. ``devices`` (source's, destination's) key the cache of
    pairs that refused copy_file_range for good (`NO_RANGE`, as the C group path keeps it)."""
    pos = 0
    try:
        if devices not in NO_RANGE:
            while pos < size:
                n = os.copy_file_range(fd, dst_fd, size - pos, pos, pos)
                if n == 0:
                    break
                pos += n
            else:
                return "copy_file_range"
    except OSError as exc:
        if exc.errno not in FALLBACK_ERRNOS:
            raise
        if exc.errno in NO_REFLINK_ERRNOS:
            NO_RANGE.add(devices)
    # A kernel path does not apply here (or stopped early): finish with read/write, which
    # tells a short source from a lazy filesystem.
    buf = memoryview(bytearray(size - pos))
    got = _read_at(fd, buf, pos)
    if got < len(buf):
        raise changed_error(src, f"it ended at byte {pos + got} of {size}", "copy")
    _write_at(dst_fd, buf, pos)
    return "readwrite"


def _copy_general(
    copier: _Copier,
    dir_fd: int,
    name: bytes,
    options: CopyOptions,
    *,
    overwrite: bool,
    resumable: bool,
    methods: Sequence[Method],
    after_write: Callable[[int], object] | None,
) -> CopyResult:
    """Every other case: chunked with byte progress and interruption checks, resumable
    partials, hashing and verification, xattrs and owner."""
    durable, verify = options.durable, options.verify
    hashing = options.hash_source or verify
    mode = 0o600 if options.preserve_mode else 0o666  # private until the real mode is set
    meta: bytes | None = None
    if resumable:
        tmp, meta = partial_names(name, copier.owner)
        dst_fd, reused, hasher = copier.open_partial(dir_fd, tmp, meta, mode, hashing)
    else:
        tmp, reused, hasher = tmp_name(name, copier.owner), 0, None
        dst_fd = os.open(tmp, _CREATE_FLAGS, mode, dir_fd=dir_fd)
    if hashing and hasher is None:
        hasher = xxhash.xxh3_128()
    discard, done = not resumable, False
    try:
        if reused:
            copier.on_bytes(reused)
        room = functools.partial(check_room, dir_fd, copier.st, reused)
        method = copier.transfer(dst_fd, reused, methods, hasher, room)
        if after_write is not None:
            after_write(dst_fd)
        copier.check_unchanged()
        src_digest = dst_digest = None
        if hasher is not None:
            src_digest = hasher.hexdigest()
            if verify:
                dst_digest = copier.verify(dst_fd, name, src_digest, durable)
        apply_metadata(
            copier.fd,
            dst_fd,
            copier.st,
            options.preserve_mode,
            options.preserve_times,
            options.preserve_xattrs,
            options.preserve_owner,
        )
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
    except OSError as exc:
        if exc.errno in _FULL_ERRNOS:
            discard = True
        raise
    finally:
        if dst_fd >= 0:
            os.close(dst_fd)
        if discard and not done:
            unlink_quiet(dir_fd, tmp)
            if meta is not None:
                unlink_quiet(dir_fd, meta)
    if meta is not None:
        unlink_quiet(dir_fd, meta)
    if durable:
        os.fsync(dir_fd)
    return CopyResult(copier.size - reused, reused, method, src_digest, dst_digest)


def copy_symlink(
    src: FilePath,
    dst: FilePath,
    *,
    dst_dir_fd: int | None = None,
    overwrite: bool = True,
    preserve_times: bool = True,
    preserve_owner: bool = False,
    durable: bool = False,
    owner: str | bytes | None = None,
    src_at: tuple[int, bytes] | None = None,
) -> None:
    """Recreate the symlink ``src`` (same target text) at ``dst``, atomically.

    The link is made under an unpredictable temporary name and renamed into place; its mtime
    (and owner, if asked and permitted) is set without following it. ``dst``/``dst_dir_fd``
    and ``overwrite`` mean what they mean for `copy_file`, as ``src_at``.
    """
    src_name, src_dir_fd = split_at(src, src_at)
    st = os.stat(src_name, dir_fd=src_dir_fd, follow_symlinks=False)
    if not stat.S_ISLNK(st.st_mode):
        exc = SpecialFileError(f"not a symbolic link: {os.fsdecode(src)!r}")
        exc.filename = os.fsdecode(src)
        raise exc
    target = os.readlink(os.fsencode(src_name), dir_fd=src_dir_fd)
    dir_fd, name, own_dir = _open_dst(dst, dst_dir_fd)
    try:
        if not overwrite and lexists(dir_fd, name):
            raise exists_error(name)
        tmp = tmp_name(name, owner)
        os.symlink(target, tmp, dir_fd=dir_fd)
        try:
            if preserve_owner:
                with contextlib.suppress(PermissionError):
                    os.chown(tmp, st.st_uid, st.st_gid, dir_fd=dir_fd, follow_symlinks=False)
            if preserve_times:
                ns = (st.st_atime_ns, st.st_mtime_ns)
                os.utime(tmp, ns=ns, dir_fd=dir_fd, follow_symlinks=False)
            rename_noreplace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, overwrite=overwrite)
        except BaseException:
            unlink_quiet(dir_fd, tmp)
            raise
        if durable:
            os.fsync(dir_fd)
    finally:
        if own_dir:
            os.close(dir_fd)


# ---------------------------------------------------------------------------------------------
# policies
