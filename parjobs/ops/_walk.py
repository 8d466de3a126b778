"""Lazy tree walking with a durable manifest, so task indices stay stable across resumes.

A walked entry's task index is its position in the job's manifest (``ctx.job_dir``). The
first run appends every entry to the manifest *before* yielding it (so no checkpoint can ever
name an index the manifest does not hold). A resumed run replays the manifest first — same
index, same path — then walks the tree again and appends only entries it has not seen, so files
created since the interruption get new indices and nothing is ever mistaken for done.

One worker-thread call lists directories for up to ~10 ms (the walk's first, ~2 ms: work
starts sooner) or 4,096 new entries (amortizing the ~100 us hop and the manifest append over
them): ``os.scandir`` and a stat per entry, numbering, and one manifest append (a first
walk's directories in one C call each, `_fastscan.walk_dir`: the listing, the entries and
their manifest rows). Depth first
with names sorted, never following symlinks unless asked, except a root written with a
trailing ``/`` (`parjobs.ops._fs.root_path`: a symlink to a directory given as ``link/`` is
that directory). `walk_batches` yields each call's entries as one list (fewer per-entry
steps); `walk_ahead` does too, with the walk running ahead of the work in a task of its own
(totals known early). Errors (unreadable directory, symlink loop) become ``error`` entries.

An ``error`` entry of an earlier run is not replayed: it is held until the re-walk reaches
its path again. Read now (permissions fixed), it is resolved under the same index: a
directory's contents come as new entries, an entry that could not be stat'ed comes as what
it now is; failing again, it comes again with today's reason. So a resumed job copies what
it could not read before, and ends completed once everything was.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import math
import os
import stat
import sys
import time
from collections.abc import AsyncGenerator, Callable, Collection, Sequence
from contextlib import aclosing
from typing import Literal, NamedTuple

import trio

from .._context import JobContext
from .._exceptions import JobSpecError, ParjobsError
from . import _kernel
from ._fs import DIR_FLAGS, check_dotdot, display, root_path
from ._hashing import fastscan

#: One worker-thread call of the walk lists directories for about this long (seconds) ...
SLICE_SECONDS = 0.01
#: ... or until it has this many new entries, so a pause is noticed and work can start.
SLICE_ENTRIES = 4096
#: The first call of a walk's first directory lists for this long only: its entries go to
#: the workers while the walk goes on (a first slice of `SLICE_SECONDS` held the first
#: copies of 3,000 small files back 11-13 ms).
FIRST_SLICE_SECONDS = 0.002
#: A directory still to list: (path, path relative to its root, its (dev, ino) as its
#: parent's listing saw it, (dev, ino) of ancestors and itself).
_Pending = tuple[bytes, bytes, tuple[int, int], frozenset[tuple[int, int]]]
#: What the walk keeps of a stat: (mode, size, mtime_ns, dev, ino, nlink).
Stat = tuple[int, int, int, int, int, int]

Kind = Literal["file", "dir", "symlink", "special", "error"]


def root_name(root_b: bytes) -> bytes:
    """The name of a root (`root_path`) in ``rel``: its last component."""
    return os.path.basename(root_b.rstrip(b"/")) or root_b


def check_roots(kind: str, paths: object) -> None:
    """The first check of a job that walks ``paths``: a non-empty list of non-empty path
    strings without NUL, none with a ``..`` the walk would read otherwise than the kernel
    (`check_dotdot`: it reads ``..`` lexically, as copy and move; the command line resolves
    it first) (`JobSpecError` naming the job ``kind`` otherwise)."""
    if not isinstance(paths, list) or not paths:
        raise JobSpecError(f"{kind}: no paths given")
    for path in paths:
        if not isinstance(path, str) or not path or "\0" in path:
            raise JobSpecError(f"{kind}: invalid path {path!r}")
        check_dotdot(kind, path)


@dataclasses.dataclass(slots=True)
class Entry:
    """One walked item. ``path`` and ``rel`` are bytes so non-UTF-8 names survive.

    Treat it as read-only (not frozen only because a frozen dataclass takes 6x longer to
    build, and a walk builds one per file).

    ``rel`` is relative to the root's parent directory: it starts with the root's own name
    (``cp -r src dst`` puts ``src/a`` at ``dst/src/a``). ``root`` indexes the job's roots.
    """

    index: int
    kind: Kind
    root: int
    rel: bytes
    path: bytes
    size: int = 0
    mtime_ns: int = 0
    mode: int = 0
    dev: int = 0
    ino: int = 0
    error: str = ""
    #: Hard links to the inode (for a copy that keeps hard links linked; 1 for a directory).
    nlink: int = 1

    @property
    def display(self) -> str:
        """The path for people: undecodable bytes shown as backslash escapes."""
        return display(self.path)

    @property
    def parts(self) -> list[bytes]:
        return self.rel.split(b"/")


class HardLinks:
    """Which walked files are later names of a file met before (hard links in the tree):
    the first name met, in walk order (the manifest's, so the same on every run), is the
    one a copy writes; the others link to it. Holds files with several links only. Each
    first name's index goes to ``on_first`` as it is met (`TaskDispatcher.keep_written`: the
    links need the copy made of it, `firsts_made`)."""

    def __init__(self, on_first: Callable[[int], object] | None = None) -> None:
        self.firsts: dict[tuple[int, int], Entry] = {}
        self.on_first = on_first

    def first_of(self, entry: Entry) -> Entry | None:
        """The first name of ``entry``'s file, when ``entry`` is a later one; else None."""
        if entry.nlink < 2 or entry.kind != "file":
            return None
        first = self.firsts.setdefault((entry.dev, entry.ino), entry)
        if first is not entry:
            return first
        if self.on_first is not None:
            self.on_first(entry.index)
        return None


def _kind_of(mode: int) -> Kind:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISLNK(mode):
        return "symlink"
    return "special"


def _entry(index: int, root: int, rel: bytes, path: bytes, st: Stat) -> Entry:
    mode, size, mtime_ns, dev, ino, nlink = st
    kind = _kind_of(mode)
    if kind != "file":
        size, nlink = 0, 1
    return Entry(index, kind, root, rel, path, size, mtime_ns, mode, dev, ino, "", nlink)


def _fields(st: os.stat_result) -> Stat:
    return (st.st_mode, st.st_size, st.st_mtime_ns, st.st_dev, st.st_ino, st.st_nlink)


def _stat(path: bytes, follow: bool) -> Stat:
    """Stat a root; when following, a broken symlink is kept as the link (as in `_scan`)."""
    try:
        return _fields(os.stat(path, follow_symlinks=follow))
    except FileNotFoundError:
        if not follow:
            raise
        return _fields(os.stat(path, follow_symlinks=False))


#: Why a directory was not walked: it is no longer the one its parent's listing saw
#: (`_fastscan.c`'s REPLACED_TEXT, the same words).
REPLACED = "replaced since it was listed; not walked"


def _prefix(directory: bytes) -> bytes:
    """What a walked directory's entries' paths start with (a root ``link/`` has its ``/``)."""
    return directory if directory.endswith(b"/") else directory + b"/"


_DIR_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_DIRECTORY | os.O_CLOEXEC

#: Where a directory's inode number may change while it stays (`_kernel.UNSTABLE_INODES`).
UNSTABLE_INODES = _kernel.UNSTABLE_INODES


def is_expected(fd: int, st: os.stat_result, expect: tuple[int, int]) -> bool:
    """Whether the directory open at ``fd`` (``st`` its fstat) is the one ``expect``, the
    ``(st_dev, st_ino)`` a listing saw: the same device, and the same inode where inode
    numbers are stable (`_kernel.same_inode`: a symlink swapped in is refused by
    ``O_NOFOLLOW`` already; a directory renamed into its place there is not seen)."""
    return st.st_dev == expect[0] and _kernel.same_inode(fd, st.st_ino, expect[1])


def scan_dir(
    path: bytes, follow: bool, expect: tuple[int, int] | None = None
) -> list[tuple[bytes, Stat | None, str]]:
    """List one directory: ``(name, stat fields or None, error)`` for every entry, sorted by
    name; lstat unless ``follow`` (then stat, and the lstat of a broken symlink). In Python
    where the C extension is not built (`_fastscan.scan_dir` does the same in one call).

    ``expect``: the ``(st_dev, st_ino)`` its parent's listing saw. Another directory, or no
    directory, at ``path`` now (without ``follow``, a symlink swapped in for it is not
    followed) raises
    OSError(ESTALE, `REPLACED`): what is below it is not walked as if it were in the tree,
    where a delete would remove it and a copy read it."""
    try:
        fd = os.open(path, _DIR_FLAGS if follow else _DIR_FLAGS | os.O_NOFOLLOW)
    except OSError as exc:
        if expect is not None and (
            exc.errno == errno.ENOTDIR or (exc.errno == errno.ELOOP and not follow)
        ):
            raise OSError(errno.ESTALE, REPLACED, path) from None
        raise
    out: list[tuple[bytes, Stat | None, str]] = []
    try:
        if expect is not None and not is_expected(fd, os.fstat(fd), expect):
            raise OSError(errno.ESTALE, REPLACED, path)
        with os.scandir(fd) as it:
            for de in it:
                try:
                    st = de.stat(follow_symlinks=follow)
                except OSError as exc:
                    if follow:  # a broken symlink when following: keep the link itself
                        try:
                            st = de.stat(follow_symlinks=False)
                        except OSError as exc2:
                            out.append((os.fsencode(de.name), None, exc2.strerror or str(exc2)))
                            continue
                    else:
                        out.append((os.fsencode(de.name), None, exc.strerror or str(exc)))
                        continue
                out.append((os.fsencode(de.name), _fields(st), ""))
    finally:
        os.close(fd)
    out.sort(key=lambda t: t[0])
    return out


_scan = fastscan.scan_dir if fastscan is not None else scan_dir

#: `Entry`'s fields in the order `_fastscan.walk_dir` fills them (`entry_class` checks each is
#: a slot of `Entry`; a test, that they are its fields in this order).
ENTRY_FIELDS = (
    *("index", "kind", "root", "rel", "path", "size"),
    *("mtime_ns", "mode", "dev", "ino", "error", "nlink"),
)
#: A first walk's directory in one C call: its listing, its entries built and its manifest
#: rows formatted (`_Walker.directories`); None where `_fastscan` is not built.
_walk_dir: Callable[..., tuple[list[Entry], bytes | None, list[_Pending]]] | None = None
if fastscan is not None:
    fastscan.entry_class(Entry, ENTRY_FIELDS)
    _walk_dir = fastscan.walk_dir
#: Whether paths decode as `walk_dir` formats them in JSON (UTF-8, surrogateescape); else it
#: formats ASCII paths only and leaves a batch with others to `Manifest.append`.
_UTF8 = (sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()) == (
    "utf-8",
    "surrogateescape",
)


#: The bytes JSON text escapes (``json.dumps``: controls, quote, backslash, DEL); with
#: non-ASCII, they send a batch's paths through the JSON encoder (`_plain_line`).
_ESCAPED = bytes(range(32)) + b'"\\\x7f'
#: A manifest entry of plain paths, formatted as ``json.dumps`` writes it (`_plain_line`).
_ROW = b'["%s",%d,"%s","%s",%d,%d,%d,%d,%d,%s,%d]'
#: Each `Kind` as it is formatted into `_ROW`.
_KINDS = {kind: kind.encode() for kind in ("file", "dir", "symlink", "special", "error")}


def _plain_line(batch: Sequence[Entry]) -> bytes | None:
    """The manifest line of ``batch``, byte for byte what ``json.dumps`` of its rows writes,
    formatted from the bytes of its paths when none needs escaping in JSON (ASCII, nothing
    of `_ESCAPED`: one check of them all); None otherwise (the JSON encoder writes it). A
    walk's manifest line cost ~16 k instructions an entry through the encoder: two paths
    decoded and escaped, eleven values dispatched one by one."""
    paths = b"".join([e.rel + e.path for e in batch])
    if not paths.isascii() or len(paths.translate(None, _ESCAPED)) != len(paths):
        return None
    kinds, dumps, row = _KINDS, json.dumps, _ROW
    try:
        rows = [
            row
            % (
                kinds[e.kind],
                e.root,
                e.rel,
                e.path,
                e.size,
                e.mtime_ns,
                e.mode,
                e.dev,
                e.ino,
                dumps(e.error).encode("ascii") if e.error else b'""',
                e.nlink,
            )
            for e in batch
        ]
    except (KeyError, TypeError):  # not an `Entry` as the walk makes them: JSON decides
        return None
    return b"[" + b",".join(rows) + b"]\n"


#: ``ctx.state`` key: the walks (by name) whose manifest holds entries, each with the job
#: directory it is in. A job resumed without it (the store opened through another path:
#: its ``.d`` elsewhere) walked anew, numbered the entries otherwise, and took the earlier
#: runs' completions for other files: "completed", files missing at the destination.
WALKS = "walks"
#: The stages of a copy, a hash, thumbnails: their tasks are numbered by the walk's entries
#: (a move's and a delete's are named where they walk).
WALKED_STAGES = ("default", "links")


class ManifestLostError(ParjobsError):
    """A resumed job's walk manifest is gone: which entries are done cannot be told."""


class Manifest:
    """The append-only list of entries of one walk.

    One line per appended batch (a directory's listing): a JSON array of entries, each
    ``[kind, root, rel, path, size, mtime_ns, mode, dev, ino, error, nlink]`` with paths as
    surrogate-escaped text. A line holding a single entry array is read too, and so are
    entries without ``nlink`` (written before it was recorded: read as 1). An entry's index
    is its position in the whole file. An empty array (`END`) says a walk went to its end:
    when it is the last line, the entries are the whole tree as last walked (``whole``).
    """

    #: The line `end` appends (an empty batch, which older readers skip too).
    END = b"[]\n"

    def __init__(self, path: str, durable: bool = False) -> None:
        self.path = path
        #: Whether the file read or written last ends with `END`.
        self.whole = False
        #: fsync each append before it returns (a job run with ``durable``: its completions
        #: are on disk when recorded, so its manifest must be as well, or a power cut leaves
        #: a job that cannot resume, `ManifestLostError`); the directories once, when made.
        self.durable = durable
        #: Whether the file is made and, if `durable`, its directories synced.
        self._made = False

    def load(self) -> list[Entry]:
        """Read the entries of earlier runs; drop a torn last line (killed mid-write)."""
        self.whole = False
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return []
        self._made = True
        end = data.rfind(b"\n") + 1
        if end != len(data):
            with open(self.path, "r+b") as f:
                f.truncate(end)
        self.whole = data[:end].endswith(b"\n" + self.END) or data[:end] == self.END
        entries: list[Entry] = []
        fsencode = os.fsencode
        for line in data[:end].splitlines():
            rows = json.loads(line)
            if rows and not isinstance(rows[0], list):
                rows = [rows]  # one entry per line
            for row in rows:
                kind, root, rel, path, size, mtime, mode, dev, ino, err = row[:10]
                entries.append(
                    Entry(
                        len(entries),
                        kind,
                        root,
                        fsencode(rel),
                        fsencode(path),
                        size,
                        mtime,
                        mode,
                        dev,
                        ino,
                        err,
                        row[10] if len(row) > 10 else 1,
                    )
                )
        return entries

    def append(self, batch: Sequence[Entry]) -> None:
        """Ordered append: written (one line, one write) before the entries are dispatched,
        so a torn last line only ever holds entries nobody saw."""
        line = _plain_line(batch)
        if line is not None:
            self._write(line)
            self.whole = False
            return
        # What `os.fsdecode` does (`load` undoes it with `os.fsencode`), without its two
        # calls a path: a batch is thousands of files.
        decode, enc, errors = (
            bytes.decode,
            sys.getfilesystemencoding(),
            sys.getfilesystemencodeerrors(),
        )
        rows = [
            [
                e.kind,
                e.root,
                decode(e.rel, enc, errors),
                decode(e.path, enc, errors),
                e.size,
                e.mtime_ns,
                e.mode,
                e.dev,
                e.ino,
                e.error,
                e.nlink,
            ]
            for e in batch
        ]
        self._write((json.dumps(rows, separators=(",", ":")) + "\n").encode("ascii"))
        self.whole = False

    def append_rows(self, rows: bytes) -> None:
        """`append` of entries whose rows are formatted already (``rows``: joined by ``,``,
        as `_fastscan.walk_dir` makes them; the same bytes as `append` writes)."""
        self._write(b"[" + rows + b"]\n")
        self.whole = False

    def end(self) -> None:
        """Mark the end of a walk (`END`), unless the file ends with that mark already. Not
        fsynced even when `durable`: a lost mark only makes a resume count the tree anew."""
        if not self.whole:
            with open(self.path, "ab") as f:
                f.write(self.END)
            self.whole = True

    def _write(self, line: bytes) -> None:
        """Append ``line``; when `durable`, fsync it, and the first time the file is made
        the directories that hold it (`sync_job_file_dirs`: the job directory is made on
        first use, with the manifest), so the entries are on disk before anybody is given
        them."""
        with open(self.path, "ab") as f:
            f.write(line)
            if self.durable:
                f.flush()
                os.fsync(f.fileno())
        if self.durable and not self._made:
            sync_job_file_dirs(self.path)
        self._made = True


def sync_job_file_dirs(path: str) -> None:
    """fsync the job directory holding the job's file ``path``, ``<store>.d`` above it and
    the store's directory above that: a name is on disk only once the directory holding it
    is synced, and a job directory is made with the job's first file, ``<store>.d`` with a
    store's first job (a power cut lost the file with either name otherwise). The store's
    directory is synced whether or not this job made ``<store>.d`` (cheap when nothing is
    pending): another job, not durable, may have made it a moment before."""
    directory = os.path.dirname(os.path.abspath(path))
    store_d = os.path.dirname(directory)
    for name in (directory, store_d, os.path.dirname(store_d)):
        fd = os.open(name, DIR_FLAGS)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class _Walker:
    """The blocking half of a walk: list one directory, number its new entries and append
    them to the manifest, all in one worker-thread call (a walk runs one call at a time)."""

    def __init__(self, manifest: Manifest, follow: bool) -> None:
        self.manifest = manifest
        self.follow = follow
        self.seen: set[tuple[int, bytes]] = set()
        #: Error entries of earlier runs, by (root, rel), until the re-walk reaches them.
        self.held: dict[tuple[int, bytes], Entry] = {}
        self.again: list[Entry] = []  # held entries met again, for the next `_emit`
        self.next_index = 0

    def replay(self) -> list[Entry]:
        """The manifest's entries to dispatch again, error entries held back (`held`)."""
        entries = self.manifest.load()
        self.seen = {(e.root, e.rel) for e in entries}
        self.next_index = len(entries)
        self.held = {(e.root, e.rel): e for e in entries if e.kind == "error"}
        return [e for e in entries if e.kind != "error"] if self.held else entries

    def leftovers(self) -> list[Entry]:
        """Held error entries the re-walk never reached (their path or a parent is gone):
        they come again as they were, so their items still fail rather than vanish."""
        left = list(self.held.values())
        self.held = {}
        return left

    def _add(
        self,
        batch: list[Entry],
        root: int,
        rel: bytes,
        path: bytes,
        st: Stat | None,
        err: str,
    ) -> None:
        """Append an entry not seen before to ``batch``, numbered by its manifest position
        (entries replayed from the manifest keep theirs, so a re-walk never shifts an
        index). A first walk never meets an entry twice: ``seen`` is only filled on replay.
        An entry held from an earlier run's error takes what the walk finds now (or today's
        error) under its old index."""
        held = self.held.pop((root, rel), None) if self.held else None
        if held is not None:  # in the manifest already: yielded, not appended again
            if st is None:
                self.again.append(dataclasses.replace(held, error=err))
            else:
                self.again.append(_entry(held.index, root, rel, path, st))
            return
        seen = self.seen
        if seen:
            if (root, rel) in seen:
                return
            seen.add((root, rel))
        if st is None:
            batch.append(Entry(self.next_index, "error", root, rel, path, error=err))
        else:
            batch.append(_entry(self.next_index, root, rel, path, st))
        self.next_index += 1

    def _emit(self, batch: list[Entry]) -> list[Entry]:
        """Record new entries in the manifest before anybody sees them; add the held
        entries met again (recorded by an earlier run)."""
        if batch:
            self.manifest.append(batch)
        if self.again:
            batch = batch + self.again
            self.again = []
        return batch

    def root(self, root_no: int, root_b: bytes, base: bytes) -> tuple[list[Entry], Stat | None]:
        batch: list[Entry] = []
        try:
            st = _stat(root_b, self.follow)
        except OSError as exc:
            self._add(batch, root_no, base, root_b, None, exc.strerror or str(exc))
            return self._emit(batch), None
        self._add(batch, root_no, base, root_b, st, "")
        return self._emit(batch), st

    def directories(
        self, root_no: int, stack: list[_Pending], seconds: float = SLICE_SECONDS
    ) -> list[Entry]:
        """Walk directories off ``stack`` (depth first: the subdirectories of each go on
        top, first child last) until ``seconds`` (`SLICE_SECONDS`) or `SLICE_ENTRIES` is
        reached: their new entries, recorded in the manifest with one write. One
        worker-thread call per directory cost a thread round trip and a manifest write
        each (a tree of 2,600 directories spent more time on them than on listing)."""
        new: list[Entry] = []
        out: list[Entry] = []  # what the walk yields: new entries and held ones met again
        rows: list[bytes] | None = []  # the manifest rows of ``new``, while C formatted all
        deadline = time.monotonic() + seconds
        while stack:
            path, rel, key, ancestors = stack.pop()
            batch: list[Entry] = []
            if _walk_dir is not None and not self.held and not self.seen:
                # A first walk: the directory's entries and manifest rows made in C.
                try:
                    batch, part, subdirs = _walk_dir(
                        path, self.follow, key, rel, root_no, self.next_index, ancestors, _UTF8
                    )
                except OSError as exc:
                    self._add(batch, root_no, rel + b"/", path, None, exc.strerror or str(exc))
                    subdirs, part = [], None
                else:
                    self.next_index += len(batch)
                if part is None:
                    rows = None
                elif rows is not None and part:
                    rows.append(part)
            else:
                rows = None
                subdirs = self._list(batch, root_no, path, rel, key, ancestors)
            stack.extend(reversed(subdirs))
            new.extend(batch)
            out.extend(batch)
            if self.again:  # right after their directory's listing, as when walked alone
                out.extend(self.again)
                self.again = []
            if len(new) >= SLICE_ENTRIES or time.monotonic() >= deadline:
                break
        if new:  # before anybody sees them
            if rows is not None:
                self.manifest.append_rows(b",".join(rows))
            else:
                self.manifest.append(new)
        return out

    def _list(
        self,
        batch: list[Entry],
        root_no: int,
        path: bytes,
        rel: bytes,
        key: tuple[int, int],
        ancestors: frozenset[tuple[int, int]],
    ) -> list[_Pending]:
        """Add the new entries of one directory to ``batch``; its subdirectories to walk.
        Listed only while it is the directory ``key`` its parent's listing saw (`scan_dir`)."""
        try:
            listing = _scan(path, self.follow, key)
        except OSError as exc:
            self._add(batch, root_no, rel + b"/", path, None, exc.strerror or str(exc))
            return []
        if self.held:  # read now: an earlier run's error entry for it is resolved
            self.held.pop((root_no, rel + b"/"), None)
        subdirs: list[_Pending] = []
        add, isdir, isreg = self._add, stat.S_ISDIR, stat.S_ISREG
        prefix, rel_prefix = _prefix(path), rel + b"/"
        # A first walk (nothing held or seen from an earlier run) numbers each plain file
        # here, without `_add` and `_entry` per file: three calls a file fewer.
        fresh = not self.held and not self.seen
        for nm, st, err_text in listing:
            child_path, child_rel = prefix + nm, rel_prefix + nm
            if st is not None:
                mode = st[0]
                if fresh and isreg(mode):
                    _, size, mtime, dev, ino, links = st
                    i, self.next_index = self.next_index, self.next_index + 1
                    batch.append(
                        Entry(
                            i,
                            "file",
                            root_no,
                            child_rel,
                            child_path,
                            size,
                            mtime,
                            mode,
                            dev,
                            ino,
                            "",
                            links,
                        )
                    )
                    continue
                if isdir(mode):
                    key = (st[3], st[4])
                    if key in ancestors:
                        add(batch, root_no, child_rel, child_path, None, "symlink loop")
                        continue
                    subdirs.append((child_path, child_rel, key, ancestors | {key}))
            add(batch, root_no, child_rel, child_path, st, err_text)
        return subdirs


async def walk_batches(
    ctx: JobContext,
    roots: Sequence[str],
    names: Sequence[bytes] | None = None,
    *,
    follow_symlinks: bool = False,
    name: str = "walk",
    stages: Sequence[str] = WALKED_STAGES,
    on_replay: Callable[[list[Entry], bool], None] | None = None,
    durable: bool = False,
    skip: Collection[int] = (),
) -> AsyncGenerator[list[Entry], None]:
    """Every entry under ``roots`` (roots included) with a stable index, parents before
    their children, a list at a time: the replayed manifest, then each root, then each
    directory's new entries (possibly empty lists are skipped). ``names``: each root's
    name in ``rel`` (default: its own, as `Entry` says; a copy to a new name gives that).
    ``stages``: the job's stages whose tasks are numbered by the walk's entries.
    ``on_replay(entries, whole)``: called with the replayed entries (none on a first walk)
    before anything is yielded; ``whole``: they are an earlier walk that went to its end.
    ``durable``: the manifest is fsynced before its new entries are yielded (`Manifest`), for
    a job run with ``durable``: a power cut never leaves it short of what a checkpoint
    records done, and the job resumes. ``skip``: the indices of roots not walked (another
    root covers them, `parjobs.ops._prescan.covered_roots`); the others keep their numbers,
    as their entries in the manifest do."""
    manifest = Manifest(os.path.join(ctx.job_dir, f"{name}.manifest"), durable)
    walker = _Walker(manifest, follow_symlinks)
    replayed = await trio.to_thread.run_sync(walker.replay)
    walks = ctx.state.setdefault(WALKS, {})
    _check_manifest(ctx, walker, walks.get(name), stages)
    if walker.next_index:  # (a job begun before this record was kept has it from now on)
        walks.setdefault(name, ctx.job_dir)
    if on_replay is not None:
        on_replay(replayed, bool(replayed) and walker.manifest.whole)
    if replayed:
        yield replayed
    for root_no, root in enumerate(roots):
        if root_no in skip:
            continue
        root_b = root_path(root)
        base = names[root_no] if names is not None else root_name(root_b)
        top, root_st = await trio.to_thread.run_sync(walker.root, root_no, root_b, base)
        if top:
            # Recorded once the manifest holds an entry and before any is dispatched, so
            # every checkpoint of a completion carries it.
            walks.setdefault(name, ctx.job_dir)
            yield top
        if root_st is None or not stat.S_ISDIR(root_st[0]):
            continue
        if replayed and root_b.endswith(b"/") and _walked_as_link(replayed, root_no, base):
            continue
        # Depth-first; ``ancestors`` holds (dev, ino) of the directories above, for loops.
        key = (root_st[3], root_st[4])
        stack: list[_Pending] = [(root_b, base, key, frozenset({key}))]
        seconds = FIRST_SLICE_SECONDS if root_no == 0 else SLICE_SECONDS
        while stack:
            await ctx.check_interrupt()
            batch = await trio.to_thread.run_sync(walker.directories, root_no, stack, seconds)
            seconds = SLICE_SECONDS
            if batch:
                yield batch
    left = walker.leftovers()
    if left:
        yield left
    if not walker.manifest.whole:
        await trio.to_thread.run_sync(walker.manifest.end)


def _check_manifest(
    ctx: JobContext, walker: _Walker, recorded_in: str | None, stages: Sequence[str]
) -> None:
    """Raise `ManifestLostError` saying why when the replayed manifest cannot number the walk as the
    earlier runs did: none here though the job recorded one elsewhere (the store opened by
    another path), or fewer entries than the job recorded done (the manifest is not fsynced
    unless the job is ``durable``, so a power cut may lose its end while the store's checkpoint
    after it survives). A manifest short of entries nobody recorded done is walked on from its
    end: the entries numbered anew past it were never recorded done, so none is taken for
    another. (``next_index``, not the replayed entries: a manifest of error entries only replays
    none, they are held for the re-walk.)"""
    if recorded_in is None:
        return
    held, path = walker.next_index, walker.manifest.path
    if not held and recorded_in != ctx.job_dir:
        raise ManifestLostError(
            f"the record of its walk ({path}) is gone, so a resume cannot "
            f"tell which files are done (it was in {recorded_in}: the store opened by "
            "another path, through a symlink or moved, or on a host whose $PARJOBS_JOB_FILES "
            "is elsewhere?); resume it where that is, or cancel it and start anew"
        )
    done = ctx.recorded_end(stages)
    if held < done:
        raise ManifestLostError(
            f"the record of its walk ({path}) holds {held} entries, but its earlier runs "
            f"recorded entries up to {done - 1} done: it lost its end (it is not written "
            "to disk at once: a power cut, or the system's crash, before it was?), so a "
            "resume cannot tell which files those are; cancel it and start anew"
        )


def _walked_as_link(replayed: list[Entry], root_no: int, base: bytes) -> bool:
    """Whether an earlier run's walk took root ``root_no``, written ``link/``, for the
    symlink itself: parjobs before 9c3690a did (it normalised the ``/`` away), and a job it
    began stays as it began. The re-walk does not go through the link then: the link is
    the job's item (done or to do, from the manifest), and a copy paused by that version
    and resumed by this one failed each file below it as "destination exists and is not a
    directory" (its own symlink at the destination). A walk of this version stats such a
    root through the link: it is a directory, or an error entry, never a symlink."""
    return any(e.kind == "symlink" for e in replayed if e.root == root_no and e.rel == base)


#: What a job counts of a walked batch, or makes of a quick count: (items, bytes).
Totals = tuple[int, int]


@dataclasses.dataclass(frozen=True, slots=True)
class RootCount:
    """What the quick count (`count_tree`) found under one root: every entry (the root
    included), the entries that are not directories, and the bytes of regular files."""

    entries: int
    others: int
    file_bytes: int


def count_tree(
    roots: Sequence[str], follow: bool, stopped: Callable[[], bool]
) -> list[RootCount] | None:
    """Count the entries under each root, without numbering, recording or building them:
    one `_scan` call per directory (in C where `_fastscan` is built: the listing and a stat
    per entry in one call, without the GIL, so the count keeps pace on a loaded machine), a
    few microseconds an entry. Blocking (one worker-thread call); returns None as soon as
    ``stopped()``. Unreadable directories count as one entry, as the walk's error entries;
    an entry whose stat failed counts as an entry only."""
    out: list[RootCount] = []
    for root in roots:
        root_b = root_path(root)
        try:
            st = _stat(root_b, follow)
        except OSError:
            out.append(RootCount(1, 1, 0))
            continue
        mode, size, _, dev, ino, _ = st
        if not stat.S_ISDIR(mode):
            out.append(RootCount(1, 1, size if stat.S_ISREG(mode) else 0))
            continue
        entries, others, nbytes = 1, 0, 0
        stack, seen = [root_b], {(dev, ino)}
        while stack:
            if stopped():
                return None
            directory = stack.pop()
            try:
                listing = _scan(directory, follow)
            except OSError:
                continue
            entries += len(listing)
            for name, fields, _ in listing:
                if fields is None:
                    continue
                mode, size, _, dev, ino, _ = fields
                if stat.S_ISDIR(mode):
                    if follow:  # a loop is one (error) entry, as in the walk
                        if (dev, ino) in seen:
                            others += 1
                            continue
                        seen.add((dev, ino))
                    stack.append(os.path.join(directory, name))
                    continue
                others += 1
                if stat.S_ISREG(mode):
                    nbytes += size
        out.append(RootCount(entries, others, nbytes))
    return out


#: A regular file `list_files` found: (path, size, st_dev, st_ino, st_nlink).
Listed = tuple[bytes, int, int, int, int]


def list_files(
    roots: Sequence[str], stopped: Callable[[], bool]
) -> tuple[list[Listed], list[tuple[bytes, str]]] | None:
    """The regular files under ``roots`` in walk order (the order `walk_batches` yields them: a
    directory's entries by name, then its subdirectories depth first), symlinks never
    followed: ``(files, errors)``, ``errors`` the ``(path, reason)`` of what could not be
    listed or stat'ed (the walk's error entries, a loop through a mount included); symlinks
    and special files are left out. Nothing is numbered, recorded or built per entry but the
    file's tuple: for a job that keeps its own record of what it found (duplicates), at a
    fraction of the walk's cost. Blocking (one worker-thread call); None as soon as
    ``stopped()``."""
    files: list[Listed] = []
    errors: list[tuple[bytes, str]] = []
    isdir, isreg = stat.S_ISDIR, stat.S_ISREG
    for root in roots:
        root_b = root_path(root)
        try:
            mode, size, _, dev, ino, nlink = _stat(root_b, False)
        except OSError as exc:
            errors.append((root_b, exc.strerror or str(exc)))
            continue
        if not isdir(mode):
            if isreg(mode):
                files.append((root_b, size, dev, ino, nlink))
            continue
        stack = [(root_b, (dev, ino), frozenset({(dev, ino)}))]
        while stack:
            if stopped():
                return None
            path, key, ancestors = stack.pop()
            try:
                listing = _scan(path, False, key)
            except OSError as exc:
                errors.append((path, exc.strerror or str(exc)))
                continue
            prefix = _prefix(path)
            subdirs: list[tuple[bytes, tuple[int, int], frozenset[tuple[int, int]]]] = []
            for name, st, error in listing:
                if st is None:
                    errors.append((prefix + name, error))
                elif isreg(st[0]):
                    files.append((prefix + name, st[1], st[3], st[4], st[5]))
                elif not isdir(st[0]):
                    continue
                elif (st[3], st[4]) in ancestors:
                    errors.append((prefix + name, "symlink loop"))
                else:
                    subdirs.append((prefix + name, (st[3], st[4]), ancestors | {(st[3], st[4])}))
            stack.extend(reversed(subdirs))
    return files, errors


async def walk_ahead(
    ctx: JobContext,
    roots: Sequence[str],
    count: Callable[[list[Entry]], Totals],
    names: Sequence[bytes] | None = None,
    *,
    estimate: Callable[[list[RootCount]], Totals] | None = None,
    follow_symlinks: bool = False,
    name: str = "walk",
    stages: Sequence[str] = WALKED_STAGES,
    durable: bool = False,
    skip: Collection[int] = (),
) -> AsyncGenerator[list[Entry], None]:
    """`walk_batches`, with the walk running ahead of the caller: a task of its own walks
    the whole tree as fast as it can while the caller takes batches at the pace of its work.
    So the job's totals are known from the first moments of a job instead of when its last
    item is dispatched, and the fraction done never goes backwards as the walk finds more
    (like ``rclone --check-first``, without waiting for it). Entries wait in memory (the
    manifest holds them all anyway).

    The totals: the job's own (set before, e.g. a finishing step), plus ``count(batch)`` for
    every batch walked; they are final when the walk is over. With ``estimate``, a quick count
    of the tree (`count_tree`, several times faster than the walk, which numbers and records
    every entry) runs beside it, and ``estimate(root_counts)`` gives final totals as soon as
    it is done; the walk's exact figures replace them when it ends (the same, unless the tree
    changed meanwhile).

    The walk's own errors, an interrupt included, reach the caller where the walk met them,
    after every batch walked before; leaving early stops the walk."""
    send, receive = trio.open_memory_channel[list[Entry] | BaseException | None](math.inf)
    scope = trio.CancelScope()
    totals = _Totals(ctx, count, estimate)
    walk = _WalkSpec(follow_symlinks, name, stages, durable, skip)
    ctx.start_soon(_walk_into, ctx, roots, names, totals, walk, send, scope)
    try:
        async with receive:
            async for item in receive:
                if item is None:  # the walk is over
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        raise RuntimeError("the walk ended without finishing")  # cancelled under us
    finally:
        scope.cancel()


class _WalkSpec(NamedTuple):
    """What `walk_ahead` passes on to `walk_batches` of its own arguments."""

    follow_symlinks: bool
    name: str
    stages: Sequence[str]
    durable: bool
    skip: Collection[int]


class _Totals:
    """The totals a job shows while `walk_ahead` walks: its own, plus what the walk counted
    so far, or what the quick count says, whichever is more, until the walk ends."""

    def __init__(
        self,
        ctx: JobContext,
        count: Callable[[list[Entry]], Totals],
        estimate: Callable[[list[RootCount]], Totals] | None,
    ) -> None:
        progress = ctx.progress
        self.progress = progress
        self.count = count
        self.estimate = estimate
        self.base = (progress.items_total or 0, progress.bytes_total)
        self.walked = (0, 0)
        self.counted: Totals | None = None

    def add(self, batch: list[Entry]) -> None:
        items, nbytes = self.count(batch)
        self.walked = (self.walked[0] + items, self.walked[1] + nbytes)
        self.show(walk_over=False)

    def quick(self, counts: list[RootCount]) -> None:
        assert self.estimate is not None
        self.counted = self.estimate(counts)
        self.show(walk_over=False)

    def replayed_whole(self, entries: list[Entry]) -> None:
        """An earlier run walked the whole tree: its entries stand for the quick count (the
        re-walk adds what is new since)."""
        self.counted = self.count(entries)

    def show(self, *, walk_over: bool) -> None:
        items, nbytes = self.walked
        if self.counted is not None and not walk_over:
            items, nbytes = max(items, self.counted[0]), max(nbytes, self.counted[1])
        base_items, base_bytes = self.base
        self.progress.set_total(
            items=base_items + items,
            bytes=None if base_bytes is None and not nbytes else (base_bytes or 0) + nbytes,
            final=walk_over or self.counted is not None,
        )


async def _walk_into(
    ctx: JobContext,
    roots: Sequence[str],
    names: Sequence[bytes] | None,
    totals: _Totals,
    walk: _WalkSpec,
    send: trio.MemorySendChannel[list[Entry] | BaseException | None],
    scope: trio.CancelScope,
) -> None:
    """The task of `walk_ahead`: walk, count, send; then None, or the error that stopped it.
    ``walk``: `walk_batches`' ``follow_symlinks``, ``name``, ``stages``, ``durable`` and
    ``skip`` (not counted either)."""
    follow_symlinks, name, stages, durable, skip = walk
    counted = [root for i, root in enumerate(roots) if i not in skip]
    with scope, send:
        async with trio.open_nursery() as nursery:

            def replayed(entries: list[Entry], whole: bool) -> None:
                if whole:  # the manifest is the count: none beside the re-walk
                    totals.replayed_whole(entries)
                else:
                    nursery.start_soon(_count_quickly, ctx, counted, follow_symlinks, totals)

            walked = walk_batches(
                ctx,
                roots,
                names,
                follow_symlinks=follow_symlinks,
                name=name,
                stages=stages,
                on_replay=None if totals.estimate is None else replayed,
                durable=durable,
                skip=skip,
            )
            try:
                async with aclosing(walked) as batches:
                    async for batch in batches:
                        totals.add(batch)
                        send.send_nowait(batch)
            except Exception as exc:  # an interrupt too: the caller raises it in its turn
                with contextlib.suppress(trio.BrokenResourceError):
                    send.send_nowait(exc)
                nursery.cancel_scope.cancel()
                return
            nursery.cancel_scope.cancel()  # the walk knows better now
        totals.show(walk_over=True)
        with contextlib.suppress(trio.BrokenResourceError):
            send.send_nowait(None)


#: How long a walk runs before the quick count starts beside it (seconds).
COUNT_AFTER = 0.1


async def _count_quickly(
    ctx: JobContext, roots: Sequence[str], follow: bool, totals: _Totals
) -> None:
    """Run `count_tree` beside the walk, once the walk has taken `COUNT_AFTER` seconds; give
    `_Totals` what it found. A walk that ends sooner cancels it before it starts: a quick
    walk needs no count, and counting beside it would only take CPU from the walk and the
    work (a tenth of a 10,000-small-file copy's time on tmpfs). Not run at all when the
    manifest holds a whole earlier walk (`_Totals.replayed_whole`): a resumed copy of
    10,000 files spent 4-30 ms of CPU counting what it had just read."""
    await trio.sleep(COUNT_AFTER)
    stop = [False]

    def stopped() -> bool:
        return stop[0] or ctx.interrupt_reason is not None

    try:
        counts = await trio.to_thread.run_sync(
            count_tree, roots, follow, stopped, abandon_on_cancel=True
        )
    finally:
        stop[0] = True  # (an abandoned thread ends at its next directory)
    if counts is not None:
        totals.quick(counts)
