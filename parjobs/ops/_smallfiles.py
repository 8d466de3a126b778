"""Copy groups of small files (compared with their sources when asked), and remove a move's
sources, in one call into the optional C extension (`_fastcopy.c`), the GIL released: the only
caller of the extension, and the place that checks it was built with the constants the Python
side uses (temporary suffix, name length, rename flag, errnos, comparison chunk)."""

from __future__ import annotations

from types import ModuleType

from .._items import Identity
from . import _kernel
from ._fs import NAME_MAX, RENAME_NOREPLACE
from ._names import TMP_SUFFIX
from ._partials import owner_token

#: The largest file the group path takes by default (one chunk of the Python copier).
DEFAULT_MAX_SIZE = 8 * 1024 * 1024

#: How much of each side a content comparison reads at a time: `copy_small_files`'
#: ``compare`` (in C) and `parjobs.ops._transfer.same_content` (in Python) alike.
COMPARE_CHUNK = 1 << 20
#: `unlink_files`' result for a source kept: not the file walked and copied any more.
CHANGED = -2
#: `unlink_files`' result for a source kept: its copy's name holds another file now.
NOT_OURS = -7

fastcopy: ModuleType | None
try:  # the optional C extension; None where it could not be built
    from . import _fastcopy as fastcopy
except ImportError:  # pragma: no cover - built without a C compiler
    fastcopy = None


def _agrees(module: ModuleType) -> bool:
    """Whether the built extension shares the Python side's constants (a stale build may not)."""
    return (
        getattr(module, "API", None) == 11  # copy_many's and unlink_many's calling convention
        and isinstance(getattr(module, "RANGE", None), int)  # copy_file_range refusals cached
        and isinstance(getattr(module, "FSYNC", None), int)  # durable copies are synced
        and isinstance(getattr(module, "COPY_COMPARE", None), int)  # verified before landing
        and getattr(module, "TMP_SUFFIX", None) == TMP_SUFFIX
        and getattr(module, "NAME_MAX", None) == NAME_MAX
        and getattr(module, "RENAME_NOREPLACE", None) == RENAME_NOREPLACE
        and frozenset(getattr(module, "FALLBACK_ERRNOS", ())) == _kernel.FALLBACK_ERRNOS
        and frozenset(getattr(module, "NO_REFLINK_ERRNOS", ())) == _kernel.NO_REFLINK_ERRNOS
        and getattr(module, "COMPARE_CHUNK", None) == COMPARE_CHUNK
        and getattr(module, "CHANGED", None) == CHANGED
        and getattr(module, "NOT_OURS", None) == NOT_OURS
    )


if fastcopy is not None and not _agrees(fastcopy):
    fastcopy = None  # pragma: no cover - a stale build


def copy_small_files(
    items: list[tuple[bytes, int, bytes]] | list[tuple[int, bytes, int, bytes]],
    *,
    src_dev: int,
    dst_dev: int,
    src_lstat: bool = True,
    max_size: int = DEFAULT_MAX_SIZE,
    owner: str | bytes | None = None,
    durable: bool = False,
    compare: bool = False,
    owned: bool = False,
    no_xattrs: bool = False,
    sources: list[SourceId | None] | None = None,
) -> tuple[list[int], list[Identity | None]] | None:
    """Copy many small files in one call into C (`_fastcopy.c`), with the GIL released.

    ``items`` are (source path, destination dir fd, name); each is copied as `copy_file`
    copies a one-chunk file with mode and times, no overwrite, no lookups beforehand. Returns
    (results, written): result 0 means the file is in place and ``written`` holds its
    identity (size, mtime_ns, inode: a `Written`'s fields, read from the copy's descriptor
    before its rename, so the caller records it without looking the name up again); any
    other result means nothing of
    it was left behind (``written`` None), so the caller copies it again with `copy_file`,
    which reports the problem properly. None when the C extension is not
    available (or an item cannot be passed to C): copy them all with `copy_file`.
    ``src_dev``/``dst_dev`` key the caches of pairs that refused reflinks (as in `try_reflink`)
    and copy_file_range (as in `copy_file`); ``src_lstat=False``
    skips the lstat before opening a source, as in `copy_file`. A source found larger than
    ``max_size`` (grown since it was listed) is handed back, for a chunked copy, and so is a
    sparse source (the Python path keeps its holes). Temporaries carry ``owner``'s token, as
    in `copy_file`. ``durable`` fsyncs each copy before its rename; the directories are the
    caller's to sync (once per group, not once per file as `copy_file` does). ``compare``
    (copy --verify) compares each temporary with its source before its rename, as
    `copy_file` verifies: a copy that differs is removed (result ``fastcopy.MISMATCH``) and
    never takes the final name. ``owned`` hands back (``fastcopy.NOT_PLAIN``) a source
    not of this process' user and group, ``no_xattrs`` one with extended attributes: a
    move's group copies nothing but bytes, mode and times (checked on the source's open
    descriptor, in C: no lstat and listxattr per file in Python). ``sources`` (a move) is
    extended with each item's source identity as it was copied (`SourceId`, read from the
    descriptor its bytes came from; None for an item not in place): what the move may
    unlink, whatever its walk saw (a walk replayed from an earlier run's manifest may carry
    another device or inode number: a drive plugged in again, a FAT filesystem remounted).
    """
    if fastcopy is None:
        return None
    devices = (src_dev, dst_dev)
    flags = fastcopy.MODE | fastcopy.TIMES
    if src_lstat:
        flags |= fastcopy.LSTAT
    if durable:
        flags |= fastcopy.FSYNC
    if compare:
        flags |= fastcopy.COPY_COMPARE
    if owned:
        flags |= fastcopy.OWNED
    if no_xattrs:
        flags |= fastcopy.NO_XATTRS
    if sources is not None:
        flags |= fastcopy.SOURCES
    if devices not in _kernel.NO_REFLINK:
        flags |= fastcopy.REFLINK
    if devices not in _kernel.NO_RANGE:
        flags |= fastcopy.RANGE
    try:
        results, raw, no_reflink, no_range, seen = fastcopy.copy_many(
            items, flags, max_size, owner_token(owner)
        )
    except ValueError:  # a NUL byte in a name: checked before copying anything
        return None
    if no_reflink:
        _kernel.NO_REFLINK.add(devices)
    if no_range:
        _kernel.NO_RANGE.add(devices)
    if sources is not None and seen is not None:
        sources.extend(seen)
    return results, raw


#: A source as `copy_small_files` copied it: (size, mtime_ns, st_dev, st_ino, ctime_ns,
#: st_nlink).
SourceId = tuple[int, int, int, int, int, int]
#: A source a move's group unlinks, with its copy: (path, size, mtime_ns, st_dev, st_ino) as
#: copied, then (the copy's directory fd, name, inode) as written; with a ninth field, the
#: source's directory fd (`SourceDirs.at`), the path is its name there; with a tenth and
#: eleventh, its ctime_ns and link count as copied (`_fs.ctime_change`).
Source = (
    tuple[bytes, int, int, int, int, int, bytes, int]
    | tuple[bytes, int, int, int, int, int, bytes, int, int]
    | tuple[bytes, int, int, int, int, int, bytes, int, int, int, int]
)


def unlink_files(sources: list[Source]) -> list[int]:
    """Unlink a move's group of sources whose copies are verified and on disk, in one call
    into C with the GIL released. Each copy's name must still hold the copy written (its
    inode, never through a symlink), else its source stays (`NOT_OURS`): a file renamed
    over a fresh copy is another program's, not the move's. A path is then unlinked only if
    it is still the regular file of that device and inode, size and mtime (and ctime, given
    it, while its link count is the same), so a source replaced since its copy is kept:
    saved anew in place (a new mtime, or its ctime alone when the mtime was put back), or
    replaced by a file renamed over it, even one of the same size and mtime (``rsync -a``,
    ``cp -p``).
    Per source: 0, `NOT_OURS` or `CHANGED` (kept), or the errno. Only for a group
    `copy_small_files` copied (so the extension is there)."""
    assert fastcopy is not None, "unlink_files without the C extension"
    results: list[int] = fastcopy.unlink_many(sources)
    return results
