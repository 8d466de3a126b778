"""HashJob: digests of every file under some paths, parallel and resumable.

The job walks its paths (symlinks are reported as skipped, never followed) and fans out one
`HashTask` per regular file. Worker threads stream many small files per thread call; a large
file is read in 1 MiB chunks with byte-accurate progress and a pause/cancel check between
chunks (its weight, the file size, marks it as one that may take a while).

Each file's digest is in its "hashed" item record (``detail`` ``ALGORITHM:DIGEST``), stored
with the task's completion: the job reads its own item log at the end for the counts and the
checksum file (`HashLog`), so a resumed run has the digests of files it does not hash again,
and neither the result nor the store's kept task results hold 20,000 digests again.

Checksum file format (``output``)
---------------------------------
One line per file, in walk order, in the format ``xxhsum`` prints and checks (``xxhsum -c``):

* ``xxh3_128`` (``xxhsum -H2``) and ``xxh64`` (``xxhsum -H1``): ``<hex>  <path>``;
* ``xxh3_64`` (``xxhsum -H3``): ``XXH3 (<path>) = <hex>`` (the BSD tag form, which xxhsum uses
  for XXH3-64 because a bare 16-digit digest would read as XXH64).

Paths are written as raw bytes. A path containing a newline or carriage return would break
the line format; such a line starts with a backslash and escapes ``\\``, ``\\n`` and ``\\r``, the
GNU coreutils convention (newer xxhsum versions read it; 0.8.1 does not).

Where the checksum file goes (`output_target`)
----------------------------------------------
What ``output`` names decides how it is written, checked when the job writes it:

* absent, or a regular file: written to a temporary beside it, flushed, then renamed over
  it (atomic: readers see the old file or the new one, never half of it). The new file
  keeps the old one's permission bits;
* a symlink: written through to what it points to, by these same rules (a link to a regular
  file stays a link; its target is replaced atomically in the target's own directory), as
  shells and most tools do;
* a character device or a FIFO (``/dev/null``, ``/dev/stdout`` on a terminal or pipe, a named
  pipe): written in place, opened without creating or truncating anything, never replaced
  (a rename would put a regular file where the device node was). A FIFO is waited on until
  a reader opens it (the job can still be paused or cancelled meanwhile); a write error such
  as ``/dev/full``'s ENOSPC fails the job with that error;
* anything else (a directory, a block device, a socket): refused.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import stat
import sys
from collections.abc import AsyncGenerator, Callable, Iterable
from contextlib import aclosing
from typing import Any, Literal

import trio

from .._context import JobContext
from .._exceptions import JobSpecError
from .._items import ItemRecord
from .._job import Job, job_type, runtime_field
from .._task import OutcomeStatus, Task
from .._util import printable
from ._entries import HashTask, entry_report
from ._fs import check_dotdot, display, root_path
from ._hashing import ALGORITHMS
from ._names import job_token, stored_token
from ._partials import remove_own_temps, tmp_name
from ._paths import absolute_paths, check_writable_dir, keep_dir_identity
from ._prehash import Prehash
from ._prescan import covered_roots
from ._walk import WALKED_STAGES, WALKS, Entry, RootCount, Totals, check_roots, walk_ahead

# O_EXCL|O_NOFOLLOW: whatever sits at the temporary's name (it is random, see `output_tmp`) is
# never opened, truncated and written through, nor removed: another name is tried instead.
_TMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC

Algorithm = Literal["xxh3_128", "xxh3_64", "xxh64"]


@job_type("hash", version=1)
class HashJob(Job):
    """Hash every regular file under ``paths`` (files or directories, walked recursively).

    Result: ``{"files", "bytes", "failed", "skipped", "algorithm"}`` (counts only); each
    digest is in the item log (``manager.items(id, action="hashed")``: ``detail`` is
    ``ALGORITHM:DIGEST``; `HashLog` reads them back in walk order, named as ``names`` say).
    With ``output`` the digests also go to that checksum file (written to a temporary
    name, then renamed into place) and ``"output"`` names it.

    ``names``, one per path, is what the lines and digests say in place of each path: the
    CLI gives the paths as typed (``hash .`` writes ``./a.txt``, as ``sha256sum ./a.txt``
    would), while ``paths`` are absolute so the job can resume from another directory. A
    checksum file with relative names verifies a copy of the tree kept elsewhere.
    """

    paths: list[str]
    algorithm: Algorithm = "xxh3_128"
    output: str | None = None
    names: list[str] | None = None
    #: The files hashed while the command started (`Prehash`, the CLI's): its tasks take
    #: what it read instead of reading again. The first run in this process only.
    prehash: Prehash | None = runtime_field()

    def validate(self) -> None:
        check_roots("hash", self.paths)
        given = self.paths
        self.paths = absolute_paths("hash", given)
        if self.names is None and self.paths != given:  # (named as given, as before)
            self.names = list(given)
        if self.output is not None:
            (self.output,) = absolute_paths("hash", [self.output])
        if self.names is not None:
            if len(self.names) != len(self.paths):
                raise JobSpecError(
                    f"hash: {len(self.names)} names for {len(self.paths)} paths; give one each"
                )
            for name in self.names:
                if not name or "\0" in name:
                    raise JobSpecError(f"hash: invalid name {name!r}")
        if self.algorithm not in ALGORITHMS:
            raise JobSpecError(
                f"hash: unknown algorithm {self.algorithm!r}; expected one of "
                + ", ".join(ALGORITHMS)
            )
        if self.output is not None:
            if not self.output or "\0" in self.output:
                raise JobSpecError(f"hash: invalid output path {self.output!r}")
            check_dotdot("hash", self.output)  # (written where the kernel finds it)
            try:
                in_place, target = output_target(self.output)
            except OSError as exc:
                raise JobSpecError(f"hash: output {self.output!r}: {exc.strerror}") from None
            parent = os.path.dirname(os.path.abspath(self.output))
            if not os.path.isdir(parent):
                raise JobSpecError(f"hash: the directory of output {self.output!r} does not exist")
            if not in_place:  # written there atomically: not /proc, not read-only
                where = os.fsdecode(os.path.dirname(target))
                try:
                    where_st = os.stat(where)
                except OSError as exc:
                    raise JobSpecError(f"hash: output {self.output!r}: {exc.strerror}") from None
                check_writable_dir("hash", "the directory of output", where, where_st)

    async def run(self, ctx: JobContext) -> dict[str, Any]:
        prehash, self.prehash = self.prehash, None  # (once: a retry reads for itself)
        try:
            if prehash is not None and ctx.clustered:  # (its tasks run elsewhere)
                prehash.drop()
                prehash = None
            own: _Own | None = None
            if self.output is not None:
                in_place, target = output_target(self.output)
                if not in_place:  # not a directory swapped in since an earlier run (a symlink)
                    where = os.fsdecode(os.path.dirname(target))
                    await keep_dir_identity(ctx, "output_dir_identity", "hash", where)
                    own = await trio.to_thread.run_sync(_own_output, target)
            dispatcher = ctx.task_dispatcher()
            ctx.progress.set_message("hashing")
            failed = 0
            async with aclosing(self._tasks(ctx, prehash, own)) as tasks:
                async for outcome in dispatcher.dispatch_many(tasks):
                    if outcome.status is OutcomeStatus.FAILED:
                        failed += 1
        finally:
            if prehash is not None:
                prehash.drop()
        await ctx.checkpoint(force=True)  # this run's records are in the log: read it whole
        log = HashLog()
        after = 0
        while page := await ctx.job_items(ctx.job_id, after=after, limit=LOG_PAGE):
            log.add(page)
            after = page[-1].seq
        rows = log.rows(self.paths, self.names)
        result: dict[str, Any] = {
            "files": len(rows),
            "bytes": sum(n for _, n in rows.values()),
            "failed": failed,
            "skipped": log.skipped,
            "algorithm": self.algorithm,
        }
        if self.output is not None:
            ctx.progress.set_message("writing " + self.output)
            lines = ((p, d) for p, (d, _) in rows.items())
            in_place, target = await trio.to_thread.run_sync(output_target, self.output)
            if in_place:
                fd = await _open_in_place(ctx, target)
                write = functools.partial(_write_to_fd, fd, self.output, self.algorithm, lines)
                await trio.to_thread.run_sync(write)
            else:
                token = await job_token(ctx)  # checkpointed before the temporary is made
                await trio.to_thread.run_sync(
                    functools.partial(write_checksums, target, self.algorithm, lines, owner=token)
                )
            result["output"] = self.output
        return result

    async def cleanup(self, ctx: JobContext, *, cancelled: bool) -> None:
        token = stored_token(ctx.state)
        if self.output is not None and token is not None:
            # A checksum file half-written when the run was killed: this job's own temporary
            # (it carries the job's name token), never a user's file or another job's.
            # Beside the output, or beside what it links to (see `output_target`).
            names = (os.path.abspath(self.output), os.path.realpath(self.output))
            for directory in dict.fromkeys(os.path.dirname(name) for name in names):
                await trio.to_thread.run_sync(
                    functools.partial(remove_own_temps, directory, token, recursive=False)
                )

    async def _tasks(
        self, ctx: JobContext, prehash: Prehash | None, own: _Own | None
    ) -> AsyncGenerator[Task[Any], None]:
        """One task per walked non-directory entry (taking what ``prehash`` read); the walk
        runs ahead, counting totals. The checksum file itself (``own``: its device, inode
        and name), when it is in the tree, is left out: its digest, of the file the job
        then replaces, would never check."""

        def item(entry: Entry) -> bool:
            return entry.kind != "dir" and (
                own is None
                or (entry.dev, entry.ino) != own[:2]
                or os.path.basename(entry.path) != own[2]
            )

        def count(batch: list[Entry]) -> Totals:
            files = [e for e in batch if item(e)]
            return len(files), sum(e.size for e in files)

        def estimate(roots: list[RootCount]) -> Totals:
            return sum(r.others for r in roots), sum(r.file_bytes for r in roots)

        skip = await _covered_roots(ctx, self.paths)
        walked = walk_ahead(ctx, self.paths, count, estimate=estimate, name=WALK, skip=skip)
        async with aclosing(walked) as batches:
            async for batch in batches:
                for entry in batch:
                    if not item(entry):
                        continue
                    if entry.kind == "file":
                        yield HashTask(
                            entry.index, entry.path, entry.size, self.algorithm, prehash=prehash
                        )
                    elif entry.kind != "dir":
                        yield entry_report(entry, "hashed")


#: The job's state: the indices of its paths that another one covers, not walked.
COVERED = "covered_roots"
#: The name of the job's walk (its manifest, its record in the state's `WALKS`).
WALK = "walk"


async def _covered_roots(ctx: JobContext, paths: list[str]) -> set[int]:
    """The indices of ``paths`` inside another or the same as an earlier one
    (`covered_roots`, as ``dupes`` drops them): ``hash x x/sub``, ``x ./x``, ``x link/`` and
    a file given twice read each such file once per path, counted it so in the progress
    (``2 files hashed (6 B)`` for 4 bytes) and listed it once. Decided while no earlier
    run recorded the walk (a first run, or one killed before its first checkpoint: its
    manifest holds only the roots walked with this decision) and kept in the job's state, so
    the walk's roots keep their numbers on resume; a job begun before this was kept, with
    its walk or a task recorded, skips none, as its earlier runs did."""
    covered = ctx.state.get(COVERED)
    if covered is None:
        covered = []
        if WALK not in ctx.state.get(WALKS, {}) and not ctx.recorded_end(WALKED_STAGES):
            roots = [root_path(p) for p in paths]
            covered = sorted(await trio.to_thread.run_sync(covered_roots, roots))
        ctx.state[COVERED] = covered
    return set(covered)


#: A checksum file's device, inode and name (`_own_output`).
_Own = tuple[int, int, bytes]


def _own_output(target: bytes) -> _Own | None:
    """The identity of the checksum file at ``target`` (`output_target`'s, symlinks
    followed), if a regular file is there: a tree hashed into a checksum file of its own
    (``hash photos -o photos/SUMS``) listed that file, with the digest of the one the job
    was about to replace, so ``xxhsum -c`` failed on it after every later run."""
    try:
        st = os.lstat(target)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return st.st_dev, st.st_ino, os.path.basename(target)


#: Records of the item log read per page (the job's own, at its end; the CLI's).
LOG_PAGE = 5000


class HashLog:
    """The digests of a hash job, from its item log (``add`` each page of it, in order): each
    file's "hashed" record holds its digest, so neither the job's result nor its kept task
    results need to (a 20,000-file hash stored them three times over)."""

    def __init__(self) -> None:
        self.found: dict[int, tuple[bytes, str, int]] = {}  # index -> (path, digest, bytes)
        self.skipped = 0

    def add(self, records: Iterable[ItemRecord]) -> None:
        # os.fsencode's own steps, looked up once (it costs ~1 us a call, a third of this)
        encoding, errors = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()
        for r in records:
            if r.action == "hashed" and r.detail and r.stage == "default":
                digest = r.detail.partition(":")[2]
                self.found[r.index] = (r.source.encode(encoding, errors), digest, r.bytes)
            elif r.action == "skipped":
                self.skipped += 1

    def rows(self, paths: list[str], names: list[str] | None) -> dict[bytes, tuple[str, int]]:
        """``path -> (digest, bytes)`` in walk order, a path given twice once, each path
        named as ``names`` say (see `HashJob`)."""
        rows: dict[bytes, tuple[str, int]] = {}
        for index in sorted(self.found):
            path, digest, nbytes = self.found[index]
            rows.setdefault(path, (digest, nbytes))
        if names is not None:
            rename = _as_named(paths, names)
            rows = {rename(path): row for path, row in rows.items()}
        return rows


def _as_named(paths: list[str], names: list[str]) -> Callable[[bytes], bytes]:
    """``path -> name``: a walked path with its root (as the walk normalises it) replaced by
    that root's name. Nested roots: the longest one that contains the path names it."""
    pairs = sorted(
        (
            (os.fsencode(os.path.normpath(p)), os.fsencode(_strip_slashes(n)))
            for p, n in zip(paths, names, strict=True)
        ),
        key=lambda pair: len(pair[0]),
        reverse=True,
    )
    # (root, what its files start with, its length, the name, what the names start with)
    prefixes = [
        (root, root.rstrip(b"/") + b"/", len(root.rstrip(b"/")) + 1, name, name.rstrip(b"/") + b"/")
        for root, name in pairs
    ]

    def rename(path: bytes) -> bytes:
        for root, inner, cut, name, outer in prefixes:
            if path.startswith(inner):
                return outer + path[cut:]
            if path == root:
                return name
        return path  # not under a root: never, kept as is

    return rename


def _strip_slashes(name: str) -> str:
    """``dir/`` -> ``dir`` (its files are ``dir/x``, not ``dir//x``); ``/`` stays."""
    return name.rstrip("/") or "/"


def checksum_line(algorithm: str, path: bytes, digest: str) -> bytes:
    """One line of an xxhsum-compatible checksum file (format in the module docstring)."""
    prefix = b""
    if b"\n" in path or b"\r" in path:
        prefix = b"\\"
        path = path.replace(b"\\", b"\\\\").replace(b"\n", b"\\n").replace(b"\r", b"\\r")
    if algorithm == "xxh3_64":
        return prefix + b"XXH3 (" + path + b") = " + digest.encode("ascii") + b"\n"
    return prefix + digest.encode("ascii") + b"  " + path + b"\n"


#: Opened in place (a device or FIFO): never created, truncated or followed into a tty.
_IN_PLACE_FLAGS = os.O_WRONLY | os.O_NOCTTY | os.O_CLOEXEC


def output_target(output: str) -> tuple[bool, bytes]:
    """How to write ``output`` (see "Where the checksum file goes" above): ``(False, path)``
    to write ``path`` atomically (``output``, or what its symlinks lead to), ``(True,
    output)`` to write in place (a character device or FIFO). OSError for anything else."""
    raw = os.fsencode(output)
    try:
        st = os.stat(raw)  # through symlinks: what would be written
    except FileNotFoundError:
        st = None  # absent (or a dangling symlink: created where it points)
    if st is None or stat.S_ISREG(st.st_mode):
        return False, os.path.realpath(raw)
    if stat.S_ISCHR(st.st_mode) or stat.S_ISFIFO(st.st_mode):
        return True, raw
    what = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file, device or FIFO"
    if stat.S_ISBLK(st.st_mode):
        what = "a block device (a disk: never written)"
    code = errno.EISDIR if stat.S_ISDIR(st.st_mode) else errno.EINVAL
    raise OSError(code, f"it is {what}", output)


async def _open_in_place(ctx: JobContext, path: bytes) -> int:
    """Open a device or FIFO for writing; for a FIFO, wait (pausable, cancellable) until a
    reader has it open, rather than block a thread that no pause could stop."""
    while True:
        try:
            fd = os.open(path, _IN_PLACE_FLAGS | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno != errno.ENXIO:  # ENXIO: a FIFO nobody reads yet
                raise
            await ctx.check_interrupt()
            await trio.sleep(0.05)
            continue
        try:
            _check_in_place(fd, path)
            os.set_blocking(fd, True)
        except BaseException:
            os.close(fd)
            raise
        return fd


def _check_in_place(fd: int, path: bytes) -> None:
    """Refuse an opened target that is no longer a device or FIFO (swapped since it was
    checked): written in place, a regular file would be overwritten without truncation."""
    mode = os.fstat(fd).st_mode
    if not (stat.S_ISCHR(mode) or stat.S_ISFIFO(mode)):
        raise OSError(errno.EAGAIN, "it changed while being opened; not written", display(path))


def _write_to_fd(fd: int, output: str, algorithm: str, rows: Iterable[tuple[bytes, str]]) -> None:
    """Write the checksum lines to the open device or FIFO ``fd`` and close it; an error
    names ``output`` (``/dev/full``: "No space left on device: /dev/full"). To a terminal
    (``-o /dev/tty``, ``-o /dev/stdout`` on one) a line's control characters are escaped
    (`printable`), as the CLI prints them there: raw, a name holding ``ESC [ 2 K ESC [ G``
    erased its own start and showed as another path."""
    tty = os.isatty(fd)
    try:
        buf = bytearray()
        for path, digest in rows:
            line = checksum_line(algorithm, path, digest)
            if tty:
                text = line.decode("utf-8", "surrogateescape")
                line = printable(text, keep_newlines=True).encode()
            buf += line
            if len(buf) >= 1 << 16:
                _write_all(fd, buf)
                buf.clear()
        _write_all(fd, buf)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, output) from None
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes | bytearray) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def write_checksums(
    output: str | bytes,
    algorithm: str,
    rows: Iterable[tuple[bytes, str]],
    *,
    owner: str | bytes | None = None,
) -> None:
    """Write ``(path, digest)`` rows to ``output`` as `output_target` says: a regular file
    (or none) atomically, to a temporary next to it (`output_tmp`, carrying ``owner``'s name
    token), flushed to disk, then renamed over it; a device or FIFO in place (a FIFO: this
    blocks until a reader opens it)."""
    in_place, target = output_target(os.fsdecode(output))
    if in_place:
        fd = os.open(target, _IN_PLACE_FLAGS)
        try:
            _check_in_place(fd, target)
        except BaseException:
            os.close(fd)
            raise
        _write_to_fd(fd, os.fsdecode(output), algorithm, rows)
        return
    old = _lstat(target)
    mode = stat.S_IMODE(old.st_mode) if old is not None and stat.S_ISREG(old.st_mode) else None
    output = os.fsdecode(target)
    while True:
        tmp = output_tmp(output, owner)
        try:
            fd = os.open(tmp, _TMP_FLAGS, 0o644)
            break
        except FileExistsError:
            continue
    try:
        with open(fd, "wb") as f:
            if mode is not None:
                os.fchmod(f.fileno(), mode)
            for path, digest in rows:
                f.write(checksum_line(algorithm, path, digest))
            f.flush()
            os.fsync(f.fileno())
        now = _lstat(target)  # a device node planted since `output_target` looked: kept
        if now is not None and not stat.S_ISREG(now.st_mode):
            raise OSError(errno.EEXIST, "it is no longer a regular file; not replaced", output)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _lstat(path: bytes) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def output_tmp(output: str, owner: str | bytes | None = None) -> bytes:
    """A fresh temporary name beside ``output`` for its checksum file, carrying ``owner``'s
    name token (see `parjobs.ops._names`), so only that owner's cleanup removes it."""
    head, leaf = os.path.split(os.fsencode(output))
    return os.path.join(head, tmp_name(leaf, owner))


__all__ = [
    "LOG_PAGE",
    "HashJob",
    "HashLog",
    "checksum_line",
    "output_target",
    "output_tmp",
    "write_checksums",
]
