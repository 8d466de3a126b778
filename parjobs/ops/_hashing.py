"""Blocking hashing primitives: full-file digests, fast content ids, duplicate grouping.

Everything here is synchronous and meant to run in a worker thread; trio jobs call it through
``trio.to_thread``. Long operations take a ``check`` callable, called between chunks, that
raises to interrupt (pause/cancel), and an ``on_bytes`` callable for progress.

Files are opened with ``O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC`` and must be regular files:
symlinks are never followed and FIFOs, sockets, devices and directories raise
`SpecialFileError` without blocking. A file whose size or mtime changes while it is read
raises `SourceChangedError`, so a digest always describes one consistent version of the file.
Both errors are the ones a copy raises (`parjobs.ops._errors`) (``OSError`` subclasses whose message
and ``filename`` name the path), so a job handles "special" and "changed" files alike whether
it copies or hashes them.

Content id layout (version 1)
-----------------------------
``content_id(path)`` is a cheap identity in the spirit of Spacedrive's ``cas_id``: equal files
always have equal ids, and different ids prove different content. It is the lowercase hex
XXH3-128 digest (seed 0, 32 hex digits) of this byte stream::

    size.to_bytes(8, "little")                  # the file size, unsigned 64-bit little-endian
    if size <= CONTENT_ID_SMALL_LIMIT:          # 102_400 bytes (100 KiB)
        bytes [0, size)                         # the whole file; nothing else
    else:                                       # six blocks of CONTENT_ID_BLOCK = 8_192 bytes
        bytes [0, 8192)                         # header
        for k in 1, 2, 3, 4:                    # CONTENT_ID_SAMPLES samples, in this order
            o_k = (size * k // 5) // 4096 * 4096    # k/5 of the size, aligned down to 4 KiB
            bytes [o_k, o_k + 8192)
        bytes [size - 8192, size)               # footer

For ``size > CONTENT_ID_SMALL_LIMIT`` the six regions lie inside the file and never overlap,
so exactly 49_152 bytes are hashed whatever the size. For small files the id covers every
byte, so equal ids prove equal content; for larger files only a full hash does.

Duplicate finding
-----------------
Duplicates are found in stages of rising cost, each run only on the candidates that survived
the one before: group by size, then by `content_id`, then (only for
files larger than ``CONTENT_ID_SMALL_LIMIT``) by the full `hash_file` digest. `group_by` is
the pure building block, so a job can run every stage's I/O in parallel and regroup;
`parjobs.ops._sequential.find_duplicates_sequential` is the plain reference implementation
(the tests' and the job's reference, in its own module: a command that does not find
duplicates does not build its records). Two rules:

* Hard links are one file. Paths are first reduced to one per ``(st_dev, st_ino)``, keeping
  the first in input order; other links to that inode are left out of the report, because
  deleting one of several links reclaims nothing.
* Empty files are duplicates of each other (their content is identical): they form one group
  whose ``reclaimable`` is 0, with the digest of empty input, and are never opened.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Hashable, Iterable
from types import ModuleType
from typing import TypeVar

import xxhash

from . import _kernel
from ._fs import FilePath, changed_error, check_unchanged, noop, open_regular

__all__ = [
    "ALGORITHMS",
    "CONTENT_IDS_CALL",
    "CONTENT_ID_ALIGN",
    "CONTENT_ID_BLOCK",
    "CONTENT_ID_SAMPLES",
    "CONTENT_ID_SMALL_LIMIT",
    "DEFAULT_CHUNK_SIZE",
    "MIN_CHUNK_SIZE",
    "content_id",
    "content_id_regions",
    "content_ids",
    "full_hashes",
    "full_hashes_in_c",
    "group_by",
    "hash_file",
    "new_hasher",
]

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)

ALGORITHMS = ("xxh3_128", "xxh3_64", "xxh64")
"""Digest algorithms `new_hasher` and `hash_file` accept; the first is the default."""

MIN_CHUNK_SIZE = 1 << 20
"""Smallest read size `hash_file` accepts (1 MiB): smaller reads waste time per syscall."""
DEFAULT_CHUNK_SIZE = 1 << 20
"""Default read size of `hash_file` (1 MiB): each chunk is hashed while it is still in the
core's L2 cache (1 MiB here); 4 MiB reads hashed 1 GiB on two threads about 10 % slower."""

CONTENT_ID_SMALL_LIMIT = 100 * 1024
"""Files up to this size (bytes, inclusive) are hashed whole by `content_id`."""
CONTENT_ID_BLOCK = 8 * 1024
"""Size of each header, sample and footer block `content_id` reads from a larger file."""
CONTENT_ID_SAMPLES = 4
"""Number of evenly spaced sample blocks between header and footer."""
CONTENT_ID_ALIGN = 4 * 1024
"""Sample offsets are aligned down to this multiple (a page), so each sample is 2 pages."""

_EMPTY_DIGEST = xxhash.xxh3_128().hexdigest()

fastscan: ModuleType | None
try:  # the optional C extension (_fastscan.c); None where it could not be built
    from . import _fastscan as fastscan
except ImportError:  # pragma: no cover - built without a C compiler
    fastscan = None


def _agrees(module: ModuleType) -> bool:
    """Whether the built `_fastscan` computes this layout of content ids (a stale build may
    not): the walk (`parjobs.ops._walk`) and the content-id runs use it only then."""
    return (
        getattr(module, "API", None) == 9
        and frozenset(getattr(module, "UNSTABLE_INODES", ())) == _kernel.UNSTABLE_INODES
        and getattr(module, "CONTENT_ID_SMALL_LIMIT", None) == CONTENT_ID_SMALL_LIMIT
        and getattr(module, "CONTENT_ID_BLOCK", None) == CONTENT_ID_BLOCK
        and getattr(module, "CONTENT_ID_SAMPLES", None) == CONTENT_ID_SAMPLES
        and getattr(module, "CONTENT_ID_ALIGN", None) == CONTENT_ID_ALIGN
    )


if fastscan is not None and not _agrees(fastscan):
    fastscan = None  # pragma: no cover - a stale build


def new_hasher(name: str) -> xxhash.xxh3_128 | xxhash.xxh3_64 | xxhash.xxh64:
    """Return a fresh xxhash object for ``name``, one of `ALGORITHMS`."""
    if name == "xxh3_128":
        return xxhash.xxh3_128()
    if name == "xxh3_64":
        return xxhash.xxh3_64()
    if name == "xxh64":
        return xxhash.xxh64()
    raise ValueError(f"unknown hash algorithm {name!r}; expected one of {', '.join(ALGORITHMS)}")


def hash_file(
    path: FilePath,
    *,
    algorithm: str = "xxh3_128",
    check: Callable[[], None] = noop,
    on_bytes: Callable[[int], None] = noop,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    buffer: bytearray | None = None,
) -> str:
    """Return the hex digest of the regular file at ``path``.

    Reads the size seen at open in ``chunk_size`` chunks (at least `MIN_CHUNK_SIZE`) into one
    reused buffer; ``check()`` runs before every read and may raise to stop, ``on_bytes(n)``
    reports each chunk. Raises `SpecialFileError` for non-regular files and `SourceChangedError`
    if the file changed while it was read. ``buffer``, if given, is that buffer (its length
    the chunk size): a caller hashing many files passes one for all of them, instead of one
    allocated (and zeroed, page by page) per file.
    """
    if buffer is not None:
        chunk_size = len(buffer)
    if chunk_size < MIN_CHUNK_SIZE:
        raise ValueError(f"chunk_size must be at least {MIN_CHUNK_SIZE} bytes, got {chunk_size}")
    hasher = new_hasher(algorithm)
    fd, before = open_regular(path)
    with open(fd, "rb", buffering=0, closefd=True) as f:
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
        # Read exactly the size seen at open, never "until EOF": a file that keeps growing
        # must not keep us reading forever. Growth and shrinkage show in the second fstat.
        buf = memoryview(bytearray(min(chunk_size, before.st_size)) if buffer is None else buffer)
        total = 0
        while total < before.st_size:
            check()
            n = f.readinto(buf[: before.st_size - total])
            if not n:
                break
            hasher.update(buf[:n])
            total += n
            on_bytes(n)
        after = os.fstat(fd)
    check_unchanged(path, before, after)
    if total != after.st_size:
        raise changed_error(path, f"read {total} bytes but it has {after.st_size}", "read")
    return hasher.hexdigest()


def content_id_regions(size: int) -> list[tuple[int, int]]:
    """Return the ``(offset, length)`` regions `content_id` hashes, in order, for ``size``."""
    if size <= CONTENT_ID_SMALL_LIMIT:
        return [(0, size)] if size else []
    parts = CONTENT_ID_SAMPLES + 1
    samples = [
        (size * k // parts) // CONTENT_ID_ALIGN * CONTENT_ID_ALIGN
        for k in range(1, CONTENT_ID_SAMPLES + 1)
    ]
    offsets = [0, *samples, size - CONTENT_ID_BLOCK]
    return [(offset, CONTENT_ID_BLOCK) for offset in offsets]


def content_id(path: FilePath, *, size: int | None = None) -> str:
    """Return the content id of the regular file at ``path`` (layout in the module docstring).

    ``size``, if given, is the size the caller listed earlier (e.g. while grouping by size);
    a file whose size no longer matches raises `SourceChangedError`, as does a file that changes
    while it is read.
    """
    fd, before = open_regular(path)
    try:
        if size is not None and size != before.st_size:
            raise changed_error(path, f"size is {before.st_size}, expected {size}", "read")
        hasher = xxhash.xxh3_128(before.st_size.to_bytes(8, "little"))
        for offset, length in content_id_regions(before.st_size):
            data = os.pread(fd, length, offset)
            while len(data) < length:  # a short read is legal; EOF is not
                more = os.pread(fd, length - len(data), offset + len(data))
                if not more:
                    raise changed_error(path, "it shrank", "read")
                data += more
            hasher.update(data)
        after = os.fstat(fd)
    finally:
        os.close(fd)
    check_unchanged(path, before, after)
    return hasher.hexdigest()


#: `content_ids` calls C for this many files at a time, ``check()`` before each call: a
#: pause waits for at most this many files (64 cold reads on a slow disk), and the GIL is
#: taken back once per call, not per file.
CONTENT_IDS_CALL = 64


def content_ids(
    items: list[tuple[bytes, int]], *, check: Callable[[], None] = noop
) -> list[str | None]:
    """`content_id` of each ``(path, listed size)``, None for a file that could not be read
    (the caller learns why from `content_id` itself). In calls into C with the GIL released
    where the extension is built (``check()`` before every `CONTENT_IDS_CALL` files), else
    file by file in Python (``check()`` before each): the same ids and the same failures."""
    out: list[str | None] = []
    if fastscan is not None:
        for start in range(0, len(items), CONTENT_IDS_CALL):
            check()
            ids = fastscan.content_ids(items[start : start + CONTENT_IDS_CALL])
            out.extend([cid if isinstance(cid, str) else None for cid in ids])
        return out
    for path, size in items:
        check()
        try:
            out.append(content_id(path, size=size))
        except OSError:
            out.append(None)
    return out


def full_hashes_in_c() -> bool:
    """Whether `full_hashes` is one call into C (the GIL released for all its files): the
    extension is built and has it (it came within `_fastscan.API` 5, so is looked up)."""
    return hasattr(fastscan, "full_hashes")


def full_hashes(items: list[tuple[bytes, int]]) -> list[str | None]:
    """`hash_file` (XXH3-128) of each ``(path, listed size)``, None for a file that could not
    be read whole at its listed size or changed while read (the caller learns why from
    `hash_file` itself). In one call into C with the GIL released where it is built
    (`full_hashes_in_c`; no check between its files: the caller sizes its calls), else file
    by file in Python: the same digests and the same failures."""
    if fastscan is not None and full_hashes_in_c():
        return [d if isinstance(d, str) else None for d in fastscan.full_hashes(items)]
    out: list[str | None] = []
    for path, size in items:
        chunks: list[int] = []
        try:
            digest = hash_file(path, on_bytes=chunks.append)
        except OSError:
            digest = None
        out.append(digest if sum(chunks) == size else None)
    return out


def group_by(items: Iterable[T], key: Callable[[T], K]) -> dict[K, list[T]]:
    """Group ``items`` by ``key(item)``, keeping only groups with two or more members.

    Groups and their members keep input order. This is the pure step between the stages of
    duplicate finding: only what shares a key can be a duplicate.
    """
    groups: dict[K, list[T]] = {}
    for item in items:
        groups.setdefault(key(item), []).append(item)
    return {k: members for k, members in groups.items() if len(members) >= 2}
