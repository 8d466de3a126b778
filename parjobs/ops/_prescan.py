"""A duplicates scan begun before its job runs, on the core that start-up leaves idle.

``parjobs dupes`` spends ~0.2 s importing trio and parjobs and opening its store before the
job's first line runs, on one core; the scan that follows (``_fastscan.scan_tree``: the
listing in C, the GIL released) then runs on one core too. `Prescan` starts that same call
in a thread as soon as the command line is parsed, and the job (`DuplicatesJob.prescan`, a
runtime field) takes its result instead of scanning again: the listing overlaps start-up.

What the job gets is what its own scan would have found a moment earlier: the same C call
with the same roots (normalized as the job normalizes its paths) and ``min_size``. The job
uses it only for exactly those roots, once, and only where its own scan would be this call
(`_hashing.fastscan` is built and agrees); a resumed job reads its saved scan as before.
Later stages check every file's size as they read it, as they do after a scan of their own.

Once listed, and until the job takes the scan, the thread goes on with the candidates'
content ids, in the order of the job's content-id runs (`known`), in one C call that the
job's `take` stops between two files: a run whose every id it computed is answered from
them, no task (`_duplicates._answered`), and the others read only the files it did not
reach (`IdRunTask.known`). Those ids are what the runs would have computed a moment
earlier; a file it could not read is left to the runs. A resumed job has no prescan: its
runs read every file, as before.

This module imports no trio and nothing of the core: the CLI loads it before them.
"""

from __future__ import annotations

import os
import stat
import sys
import threading
import time
from collections.abc import Callable, Sequence

from . import _hashing
from ._fs import ancestor_ids, root_path

#: What the scan returns (`_duplicates._scan_tree`): candidates, errors, regular files
#: found; None when it was stopped.
Scanned = tuple[list[tuple[int, bytes, int]], list[tuple[bytes, str]], int]


def scan_roots(paths: Sequence[str]) -> list[bytes]:
    """The roots the scan lists for a job's ``paths``: each as the walk reads it
    (`parjobs.ops._fs.root_path`: ``link/`` is the directory it names), as bytes, without
    those another one covers (`distinct_roots`)."""
    return distinct_roots([root_path(path) for path in paths])


def distinct_roots(roots: list[bytes]) -> list[bytes]:
    """``roots`` without those `covered_roots` names."""
    covered = covered_roots(roots)
    return [root for i, root in enumerate(roots) if i not in covered]


def covered_roots(roots: list[bytes]) -> set[int]:
    """The indices of the ``roots`` inside another or the same as an earlier one, by device
    and inode through ``..`` as the kernel sees it (`ancestor_ids`): ``dupes x ./x``,
    ``dupes x x/sub`` and ``dupes x link/`` (a link to x) listed each file twice and found
    it a duplicate of itself, so deleting "the other copy" deleted the only one. (Hard
    links are one file already: the scan keeps one name per inode of several names.) A
    root that cannot be stat'ed is kept, for the walk to report; one root is not stat'ed."""
    if len(roots) < 2:
        return set()
    seen: list[tuple[tuple[int, int], set[tuple[int, int]]] | None] = []
    for root in roots:
        try:
            st = os.lstat(root)  # (``link/`` follows the link, as the walk reads it)
            if stat.S_ISDIR(st.st_mode):
                chain = ancestor_ids(st, root)
            else:
                stripped = root.rstrip(b"/")
                parent = os.path.dirname(stripped) or (b"/" if stripped[:1] == b"/" else b".")
                chain = ancestor_ids(os.stat(parent), parent) | {(st.st_dev, st.st_ino)}
        except OSError:
            seen.append(None)
            continue
        seen.append(((st.st_dev, st.st_ino), chain))
    first: dict[tuple[int, int], int] = {}  # each root's (device, inode) -> its first index
    for i, one in enumerate(seen):
        if one is not None:
            first.setdefault(one[0], i)
    covered: set[int] = set()
    for j in range(len(roots)):
        mine = seen[j]
        # Covered: another root is a directory above it (its chain holds that root's id), or
        # an earlier root is the same entry. One lookup per link of its chain, not a pass
        # over every other root: a file manager's selection of thousands of files.
        if mine is not None and any(c in first and (c != mine[0] or first[c] < j) for c in mine[1]):
            covered.add(j)
    return covered


#: Linux's ``CLOCK_REALTIME_COARSE`` (which ``time`` does not name): the clock the kernel
#: stamps a file's times from, or its floor where it stamps them finer.
_COARSE_CLOCK: int | None = 5 if sys.platform == "linux" else None


def clock_ns() -> int:
    """Now, as the kernel stamps a file's ctime: on Linux its coarse clock (a write made
    after this call has a ctime at or after it; ``time.time_ns`` runs up to a tick, ~4 ms,
    ahead of that stamp), elsewhere ``time.time_ns`` a second early."""
    if _COARSE_CLOCK is None:
        return time.time_ns() - 1_000_000_000
    return time.clock_gettime_ns(_COARSE_CLOCK)


#: How often (seconds) `Prescan.take` asks its ``stopped`` while the listing runs.
STOP_CHECK_SECONDS = 0.01


class Prescan:
    """``_fastscan.scan_tree(roots, min_size, stopped)`` in a daemon thread from now on
    (`start`), then the candidates' content ids; `take` stops the ids, waits for the thread
    and hands its scan (or exception) over once, with ``known``, the ids computed."""

    def __init__(self, paths: Sequence[str], min_size: int) -> None:
        #: When it began (`clock_ns`): what it reads is a file's content from then on.
        self.began_ns = clock_ns()
        self.roots = scan_roots(paths)
        self.min_size = min_size
        #: Set to stop the listing: a byte C reads without the GIL (a callable would take
        #: the GIL every 10 ms to be asked, and wait for it while start-up runs Python:
        #: the listing took ~3x as long).
        self._stop = bytearray(1)
        #: Set to stop its content ids before the next file (`take`, `drop`): the call
        #: answers the files it did not read `_fastscan.STOPPED`. One call for them all
        #: (each return to Python takes the GIL from start-up: calls of 1,024 files made
        #: the command ~30 ms quicker than calls of 256), yet the job that takes the scan
        #: waits for one file's read, not for a call's (1,024 reads: seconds on a cold disk).
        self._ids_stop = bytearray(1)
        self._result: Scanned | None = None
        self._error: BaseException | None = None
        self.taken = False  # by a job (`take`)
        self._halt = False  # its content ids: taken or dropped
        #: The candidates' content ids computed so far, by their scan index (an empty file,
        #: never opened, has none), or the errno of a file it could not read.
        self.known: dict[int, str | int] = {}
        #: Its candidates by size, in order of first appearance (as the job groups them),
        #: once listed: the job that takes its scan takes these too.
        self.by_size: dict[int, list[tuple[int, bytes, int]]] | None = None
        self._thread = threading.Thread(target=self._scan, name="parjobs-prescan", daemon=True)

    @classmethod
    def start(cls, paths: Sequence[str], min_size: int) -> Prescan | None:
        """A scan of ``paths`` begun now, or None where the job would not scan in C (no
        `_fastscan` built): the Python walk holds the GIL, so it would slow start-up down."""
        if _hashing.fastscan is None:
            return None
        prescan = cls(paths, min_size)
        prescan._thread.start()
        return prescan

    def _scan(self) -> None:
        fastscan = _hashing.fastscan
        assert fastscan is not None
        try:
            self._result = fastscan.scan_tree(self.roots, self.min_size, self._stop)
        except BaseException as exc:  # handed to the job that takes the scan
            self._error = exc
            return
        if self._result is None:
            return
        # In the order of the job's content-id runs (size groups in order of first
        # appearance: `_duplicates._runs`), so the ids it computed before the job took it
        # answer whole runs, which the job then need not book (`_duplicates._answered`);
        # in scan order, the ids not reached were spread over every run.
        by_size: dict[int, list[tuple[int, bytes, int]]] = {}
        for f in self._result[0]:
            by_size.setdefault(f[2], []).append(f)
        self.by_size = by_size
        # (An empty file is never opened.)
        files = [f for size, same in by_size.items() if size for f in same]
        ids = fastscan.content_ids([(path, size) for _, path, size in files], self._ids_stop)
        # (An errno where a file could not be read: the run reads it and says why.)
        stopped = fastscan.STOPPED
        self.known.update(
            [(f[0], cid) for f, cid in zip(files, ids, strict=True) if cid != stopped]
        )

    def drop(self) -> None:
        """Stop it, listing or content ids (a job that does not take its scan)."""
        self._halt = True
        self._ids_stop[0] = 1
        if not self.taken:
            self._stop[0] = 1

    def matches(self, roots: list[bytes], min_size: int) -> bool:
        """Whether this is the scan of ``roots`` with ``min_size``, not yet taken."""
        return not self._halt and self.roots == roots and self.min_size == min_size

    def take(self, stopped: Callable[[], bool]) -> Scanned | None:
        """Its scan, once it is done (blocking: call it in a worker thread), and ``known``
        from then on; ``stopped`` from now on stops the listing as it would stop the job's
        own scan (then None); the content ids stop now, after the file being read."""
        self.taken = self._halt = True
        self._ids_stop[0] = 1
        while self._thread.is_alive():  # asked as often as C asks a callable
            self._thread.join(STOP_CHECK_SECONDS)
            if stopped():
                self._stop[0] = 1
        if self._error is not None:
            raise self._error
        result, self._result = self._result, None
        return result


__all__ = ["Prescan", "scan_roots"]
