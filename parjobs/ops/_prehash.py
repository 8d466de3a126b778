"""A hash job's files hashed before the job runs, on the core that start-up leaves idle.

``parjobs hash`` spends ~0.1 s importing trio and parjobs and opening its store before the
job's first file is read, on one core; the other core waits. `Prehash` lists the job's
paths (`_fastscan.scan_dir`, in C) and hashes their regular files (`_fastscan.full_hashes`,
XXH3-128 in C, the GIL released) in a thread from the moment the command line is parsed, in
the order the job's walk finds them. The job's tasks (`HashTask`) then `take` a file's
digest instead of reading the file again; a file the thread has not begun is the task's to
hash (the thread skips it from then on), and a task whose file the thread is reading waits
for it. So no file is read twice, and the job's workers take over where the thread is.

A digest is taken only for the same path, and only when the file is still what the thread
read: at the task's ``lstat``, a regular file with the device, inode, size and mtime its
listing saw, and a ctime from before the thread began (`clock_ns`: any change to the file
since then, a write, truncation or rename, would have moved its ctime past it). The thread
read the file after it began, at its listed size, its size and mtime unchanged while read
(the C call checks both). So the digest is the file's content as the task would read it now.
Anything else (another file, a change, a read error, a path the listing did not reach) is
hashed by the task as without a prehash, which reports what it meets. A resumed job has no
prehash.

This module imports no trio and nothing of the core: the CLI loads it before them.
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Callable, Iterator, Sequence

from . import _hashing
from ._prescan import clock_ns, scan_roots

#: A listed file as the thread read it: (st_dev, st_ino, size, mtime_ns).
Listed = tuple[int, int, int, int]
#: Files per C call at most (one return to Python per call: each takes the GIL from
#: start-up), and bytes: a call stops taking files once past this many.
GROUP_FILES = 64
GROUP_BYTES = 8 << 20
#: How often (seconds) a task waiting for the thread's read of its file asks ``check``.
WAIT_SLICE = 0.01


class _Reading:
    """A group of files the thread is reading: `Prehash.take` waits on ``done``."""

    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = threading.Event()


#: A path the job's task took before the thread reached it: the thread leaves it alone.
_TAKEN = object()


class Prehash:
    """The regular files under ``paths`` hashed (XXH3-128) in a daemon thread from now on
    (`start`), in walk order; `take` hands a file's digest to the job's task, once."""

    def __init__(self, paths: Sequence[str]) -> None:
        #: When it began (`clock_ns`): what it reads is a file's content from then on.
        self.began_ns = clock_ns()
        self.roots = scan_roots(paths)  # (no root another covers: the job walks none)
        self._lock = threading.Lock()
        #: Per path: a `_Reading` (being read), `_TAKEN` (the job's), or its answer, the
        #: digest with the file's `Listed`, or None (not read: the task reads it).
        self._files: dict[bytes, object] = {}
        #: Set to stop the reads (`drop`): a byte C reads without the GIL between chunks.
        self._stop = bytearray(1)
        self._thread = threading.Thread(target=self._run, name="parjobs-prehash", daemon=True)

    @classmethod
    def start(cls, paths: Sequence[str]) -> Prehash | None:
        """Hashing of ``paths`` begun now, or None where it would not be in C (`_fastscan`
        not built: Python reads would hold the GIL that start-up needs)."""
        if not _hashing.full_hashes_in_c():
            return None
        prehash = cls(paths)
        prehash._thread.start()
        return prehash

    def drop(self) -> None:
        """Stop reading (the job is over, or will not take from it)."""
        self._stop[0] = 1

    def take(self, path: bytes, check: Callable[[], None]) -> tuple[str, int] | None:
        """The digest of the file at ``path`` and its size, if the thread read it and it is
        still the file it read (see the module's docstring); else None, and the thread will
        not read it. Waits while the thread reads it, calling ``check()`` (which may raise to
        stop) every `WAIT_SLICE` seconds. Blocking: call it in a worker thread."""
        with self._lock:
            state = self._files.get(path)
            if state is None or state is _TAKEN:
                self._files[path] = _TAKEN
                return None
        if isinstance(state, _Reading):
            while not state.done.wait(WAIT_SLICE):
                check()
            with self._lock:
                state = self._files.get(path)
        with self._lock:
            self._files[path] = _TAKEN  # once
        if not isinstance(state, tuple):
            return None
        digest, (dev, ino, size, mtime_ns) = state
        try:
            st = os.lstat(path)
        except OSError:
            return None  # (the task meets it again and says why)
        if (
            stat.S_ISREG(st.st_mode)
            and (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) == (dev, ino, size, mtime_ns)
            and st.st_ctime_ns < self.began_ns
        ):
            return digest, size
        return None

    def _run(self) -> None:
        fastscan = _hashing.fastscan
        assert fastscan is not None
        group: list[tuple[bytes, Listed]] = []
        nbytes = 0
        for path, listed in _walk(self.roots, fastscan.scan_dir, self._stop):
            if self._stop[0]:
                return
            group.append((path, listed))
            nbytes += listed[2]
            if len(group) >= GROUP_FILES or nbytes >= GROUP_BYTES:
                self._read(group)
                group, nbytes = [], 0
        if group and not self._stop[0]:
            self._read(group)

    def _read(self, group: list[tuple[bytes, Listed]]) -> None:
        """Claim the group's files the job has not taken, read them in one C call, answer."""
        fastscan = _hashing.fastscan
        assert fastscan is not None
        reading = _Reading()
        with self._lock:
            mine = [(p, listed) for p, listed in group if p not in self._files]
            for path, _ in mine:
                self._files[path] = reading
        answers: list[str | int] = []
        try:
            if mine:
                answers = fastscan.full_hashes([(p, listed[2]) for p, listed in mine], self._stop)
        except Exception:  # (memory) the tasks read the files
            answers = []
        finally:
            with self._lock:
                for k, (path, listed) in enumerate(mine):
                    answer = answers[k] if k < len(answers) else None
                    self._files[path] = (answer, listed) if isinstance(answer, str) else None
            reading.done.set()  # (always: a task may be waiting)


#: `_fastscan.scan_dir`: a directory's entries, (name, stat fields or None, error).
Scan = Callable[[bytes, bool], list[tuple[bytes, tuple[int, int, int, int, int, int] | None, str]]]


def _walk(roots: list[bytes], scan: Scan, stop: bytearray) -> Iterator[tuple[bytes, Listed]]:
    """The regular files under ``roots`` with their `Listed`, in the order the job's walk
    yields them (a directory's entries by name, then its subdirectories, depth first);
    symlinks below a root are not followed, a directory that cannot be listed is left out
    (the job's walk reports it)."""
    for root in roots:
        try:
            st = os.lstat(root)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode):
            yield root, (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
            continue
        stack = [root] if stat.S_ISDIR(st.st_mode) else []
        while stack and not stop[0]:
            directory = stack.pop()
            try:
                listing = scan(directory, False)
            except OSError:
                continue
            prefix = directory if directory.endswith(b"/") else directory + b"/"
            subdirs = []
            for name, fields, _ in listing:
                if fields is None:
                    continue
                mode, size, mtime_ns, dev, ino, _nlink = fields
                if stat.S_ISREG(mode):
                    yield prefix + name, (dev, ino, size, mtime_ns)
                elif stat.S_ISDIR(mode):
                    subdirs.append(prefix + name)
            stack.extend(reversed(subdirs))


__all__ = ["Prehash"]
