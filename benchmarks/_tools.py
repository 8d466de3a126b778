"""Helpers for file-operation scenarios: external tools, page cache, parjobs jobs, checks.

External programs run under GNU ``time`` when it is installed, because ``ru_maxrss`` of a child
started from this (large) process carries this process' peak over through ``exec`` on Linux;
``time`` is a small process that forks the tool, so the tool's peak RSS is its own. CPU of
children comes from ``getrusage(RUSAGE_CHILDREN)`` deltas.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import subprocess
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import trio

import parjobs

from ._common import Stopwatch, Timing, children_cpu_seconds, children_sys_seconds, log

GNU_TIME = "/usr/bin/time"
_DROP_CACHES = "/proc/sys/vm/drop_caches"
_counter = itertools.count()

CACHED = "cached"
COLD = "cold-ish"
CACHE_NOTES = {
    CACHED: "page cache warm: sources were read in the warm-up round",
    COLD: "guest page cache dropped (sync; echo 3 > /proc/sys/vm/drop_caches) before every "
    "call; in a VM the host may still cache the disk, so reads are faster than a cold disk",
}


def which(name: str) -> str | None:
    return shutil.which(name)


def tool_version(argv: Sequence[str]) -> str:
    """The first line a ``--version`` style command prints, or ``""``."""
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    text = (proc.stdout or proc.stderr).strip()
    return text.splitlines()[0].strip() if text else ""


def run_tool(argv: Sequence[str], *, env: dict[str, str] | None = None) -> Timing:
    """Run an external program to completion: wall time, CPU of the child (and its own
    children), and its peak RSS (via GNU time when available). Output is discarded; a
    non-zero exit raises with the tail of stderr."""
    report = None
    cmd = list(argv)
    if os.access(GNU_TIME, os.X_OK):
        fd, report = tempfile.mkstemp(prefix="parjobs-bench-time-")
        os.close(fd)
        cmd = [GNU_TIME, "-f", "%M", "-o", report, *cmd]
    full_env = dict(os.environ, **(env or {}))
    try:
        cpu0, sys0, sw = children_cpu_seconds(), children_sys_seconds(), Stopwatch()
        proc = subprocess.run(
            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=full_env, check=False
        )
        wall = sw.stop().wall
        cpu = children_cpu_seconds() - cpu0
        sys_time = children_sys_seconds() - sys0
        if proc.returncode != 0:
            err = proc.stderr.decode(errors="replace")[-2000:]
            raise RuntimeError(f"{argv[0]} failed ({proc.returncode}): {err}")
        peak = None
        if report is not None:
            with contextlib.suppress(OSError, ValueError, IndexError):
                peak = int(Path(report).read_text().split()[-1]) * 1024
    finally:
        if report is not None:
            os.unlink(report)
    return Timing(wall, cpu, peak, sys_time)


def in_process(fn: Callable[[], Any]) -> Timing:
    """Time a call in this process (CPU of all its threads)."""
    sw = Stopwatch()
    fn()
    return sw.stop()


# -- page cache -----------------------------------------------------------------------------


def drop_caches() -> bool:
    """Write back dirty pages and drop the page cache (root only); False if refused."""
    os.sync()
    try:
        with open(_DROP_CACHES, "w") as f:
            f.write("3\n")
    except OSError:
        return False
    return True


def cold_cache_support() -> tuple[bool, str]:
    """Whether `drop_caches` works here, and why not."""
    if not os.path.exists(_DROP_CACHES):
        return False, f"{_DROP_CACHES} does not exist"
    if drop_caches():
        return True, ""
    return False, f"writing {_DROP_CACHES} was refused (needs root and a permitting kernel)"


def refresh_metadata(sources: Sequence[Path]) -> None:
    """Drop the page cache (`drop_caches`), then read ``sources`` back in: their data and
    metadata are cached again, but the cached inode-table blocks of files that earlier
    rounds deleted are gone.

    Why: ext4 without a journal (as here) skips, one by one, inodes deleted in the last
    minutes whose inode-table block is cached (``recently_deleted()`` in
    ``find_inode_bit``). Each round deletes 10,000 destination files, so later creates in
    the same block groups scan thousands of them; ``cp -r`` of the small-file set grew from
    0.8 s to 9.3 s over six create/delete cycles, and by how much depends on where each
    tool's inodes land. Unique destination names (`fresh_dir`) alone were not enough."""
    drop_caches()
    warm(sources)


def warm(paths: Sequence[Path]) -> None:
    """Read every file under ``paths`` once, so the page cache holds them."""
    buf = bytearray(4 << 20)
    for root in paths:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for path in files:
            with open(path, "rb", buffering=0) as f:
                while f.readinto(buf):
                    pass


# -- files ----------------------------------------------------------------------------------


def fresh_dir(parent: Path, prefix: str) -> Path:
    """A new, uniquely named directory under ``parent`` (see `prepare_scratch` for why the
    name must differ on every call)."""
    path = parent / f"{prefix}-{next(_counter)}"
    path.mkdir()
    return path


def remove(path: Path) -> None:
    """Remove a file or tree if it exists (not timed by any contender)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def tree_stats(root: Path) -> tuple[int, int]:
    """(regular files, bytes) under ``root``: checks that a contender did all the work."""
    files = size = 0
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            st = os.lstat(os.path.join(dirpath, name))
            files += 1
            size += st.st_size
    return files, size


def expect_tree(root: Path, files: int, size: int, who: str) -> None:
    got = tree_stats(root)
    if got != (files, size):
        raise RuntimeError(f"{who}: expected {files} files / {size} bytes, got {got} in {root}")


def checked_copy(
    copy: Callable[[Path], Timing],
    who: str,
    scratch: Path,
    expect: tuple[int, int],
    *,
    prefix: str = "copy",
    before: Callable[[], object] | None = None,
) -> Callable[[], Timing]:
    """A contender for `run_rounds` around ``copy(dst)``: a new empty ``dst`` under
    ``scratch`` (then ``before()``, if given) before, the copy's tree checked against
    ``expect`` (files, bytes) and removed after; only the copy is timed."""

    def contender() -> Timing:
        dst = fresh_dir(scratch, prefix)
        if before is not None:
            before()
        timing = copy(dst)
        expect_tree(dst, *expect, who)
        remove(dst)
        return timing

    return contender


# -- parjobs --------------------------------------------------------------------------------


def run_job(
    job: parjobs.Job,
    *,
    workers: int,
    store_dir: Path,
    lanes: dict[str, int] | None = None,
    finish: Callable[[parjobs.JobManager, str], Awaitable[Any]] | None = None,
) -> tuple[Any, Timing]:
    """Run ``job`` to its end in a fresh manager and store; time the whole thing (opening
    the store, the job, closing the manager), as a user's script would experience it.
    ``finish(manager, job_id)`` gives what to return instead of the job's result (e.g. the
    digests of a hash, read from its item log: timed too, as a script would read them)."""
    store = store_dir / f"bench-{os.getpid()}-{next(_counter)}.sqlite"

    async def main() -> Any:
        async with parjobs.open_manager(store, workers=workers, lanes=lanes) as manager:
            handle = await manager.submit(job)
            status = await handle.wait()
            if status is not parjobs.JobStatus.COMPLETED:
                errors = await manager.errors(handle.id, limit=3)
                raise RuntimeError(f"job ended {status.value}: {errors}")
            if finish is not None:
                return await finish(manager, handle.id)
            return await handle.result()

    sw = Stopwatch()
    try:
        result = trio.run(main)
        timing = sw.stop()
    finally:
        for suffix in ("", "-wal", "-shm", "-journal"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{store}{suffix}")
        shutil.rmtree(f"{store}.d", ignore_errors=True)
    return result, timing


def describe_tools(names: Sequence[tuple[str, Sequence[str]]]) -> dict[str, str | None]:
    """``{tool: version line or None when not installed}`` for the results JSON."""
    out: dict[str, str | None] = {}
    for name, version_argv in names:
        out[name] = tool_version(version_argv) if which(name) else None
        if out[name] is None:
            log(f"  {name}: not installed, skipped")
    return out


def create_probe(parent: Path, n: int = 200) -> float:
    """Microseconds to create (and close) one empty file in a fresh directory under
    ``parent``: on ext4 this varies a lot with the block group the directory landed in."""
    probe = Path(tempfile.mkdtemp(prefix="probe-", dir=parent))
    try:
        sw = Stopwatch()
        for i in range(n):
            os.close(os.open(probe / f"f{i}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        return sw.stop().wall / n * 1e6
    finally:
        shutil.rmtree(probe)


def prepare_scratch(path: Path) -> dict[str, Any]:
    """Mark ``path`` as a top of a directory hierarchy (``chattr +T``) and report how long
    creating a file takes there.

    With ``+T`` ext4 spreads the children of ``path`` over block groups by a hash of their
    name, so destinations with unique names (`fresh_dir`) start in different block groups
    rather than where the previous round's deleted inodes are (see `refresh_metadata`)."""
    topdir = False
    if which("chattr"):
        proc = subprocess.run(["chattr", "+T", str(path)], capture_output=True, check=False)
        topdir = proc.returncode == 0
    return {
        "path": str(path),
        "chattr_T": topdir,
        "create_us_per_file": round(create_probe(path), 1),
    }
