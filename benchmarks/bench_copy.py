"""Copy a tree: parjobs `CopyJob` (1 worker and N workers) against ``cp -r``, ``rsync -a``,
``shutil.copytree`` and ``rclone copy``, on three sets: many small files, 10 MiB files and
256 MiB files (quick mode: smaller sets).

Every contender copies the set's directory into an empty destination on the same filesystem
(written to the page cache, no fsync, as ``cp`` does). The destination is created before and
removed after each call, untimed, and checked (file count and bytes) so every contender did
all the work. Baseline: ``cp -r``. With the page cache warm ("cached") and, where permitted,
after dropping it before every call ("cold-ish").

One more case, "small/tmpfs": the small-file set copied within ``/dev/shm``, where creating
a file is cheap and ext4's quirks (see `refresh_metadata`) are out of the way, so what is
left is each tool's own per-file cost. It adds a floor: a bare Python loop making exactly the
system calls parjobs makes per file (`syscall_loop`), nothing else.
"""

from __future__ import annotations

import functools
import os
import random
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from parjobs.ops import _smallfiles
from parjobs.ops._copy import CopyJob
from parjobs.ops._fs import rename_noreplace

from ._common import Timing, load_average, log, panel_chart, run_rounds
from ._session import Session
from ._tools import (
    CACHED,
    COLD,
    checked_copy,
    describe_tools,
    drop_caches,
    in_process,
    refresh_metadata,
    run_job,
    run_tool,
    warm,
    which,
)

SETS = ("small", "medium", "large")
WORDS = {CACHED: "warm", COLD: "dropped (cold-ish)"}
BASELINE = "cp -r"
#: Sets with at least this many files get `refresh_metadata` before every cached call.
REFRESH_FILES = 1000
REFRESH_NOTE = (
    "before every call: sync, drop the page cache, re-read the sources (so their data and "
    "metadata are cached again) - ext4 without a journal otherwise makes every create scan "
    "the inodes earlier calls deleted"
)
#: parjobs without its C extension (the group path for small files).
PYTHON_ONLY = "parjobs, Python only"
#: Left out of the cold-ish rounds, to keep a full run short.
NOT_COLD = ("rclone copy", "parjobs 16 workers")
#: What each contender keeps of the source's metadata (they do not all do the same work).
SEMANTICS = {
    "parjobs": "mode and times; temporary name, renamed into place",
    "cp -r": "mode only (no times); writes in place",
    "rsync -a": "mode, times, owner, group, symlinks; temporary name, renamed into place",
    "shutil.copytree": "copy2: mode and times; writes in place",
    "rclone copy": "times; checks size (and hash) after copying; 4 parallel transfers",
}


def _parjobs(
    session: Session, src: Path, dst: Path, workers: int, files: int, python_only: bool = False
) -> Timing:
    """One CopyJob; ``python_only``: without the C group path (as installed with no C
    compiler), to show what it brings."""
    job = CopyJob(sources=[str(src)], destination=str(dst))
    saved = _smallfiles.fastcopy
    if python_only:
        _smallfiles.fastcopy = None
    try:
        result, timing = run_job(job, workers=workers, store_dir=session.scratch)
    finally:
        _smallfiles.fastcopy = saved
    if result["failed"] or result["copied"] != files:
        raise RuntimeError(f"parjobs copy: unexpected result {result}")
    return timing


Copy = Callable[[Path], Timing]


def contenders(session: Session, src: Path, files: int) -> tuple[dict[str, Copy], dict[str, str]]:
    """Functions copying ``src`` to ``dst/<src.name>`` given an empty ``dst``, by name, and
    the skipped ones with reasons."""
    out: dict[str, Copy] = {}
    skipped: dict[str, str] = {}
    for n in [1, *session.workers]:
        name = f"parjobs {n} worker" + ("s" if n > 1 else "")
        out[name] = lambda dst, n=n: _parjobs(session, src, dst, n, files)
    if files >= REFRESH_FILES and _smallfiles.fastcopy is not None:  # many small files
        n = session.workers[0]
        out[f"{PYTHON_ONLY} ({n} workers)"] = lambda dst: _parjobs(
            session, src, dst, n, files, python_only=True
        )
    out[BASELINE] = lambda dst: run_tool(["cp", "-r", str(src), f"{dst}/"])
    if which("rsync"):
        out["rsync -a"] = lambda dst: run_tool(["rsync", "-a", str(src), f"{dst}/"])
    else:
        skipped["rsync -a"] = "rsync is not installed (apt-get install rsync)"
    out["shutil.copytree"] = lambda dst: in_process(lambda: shutil.copytree(src, dst / src.name))
    if which("rclone"):
        env = {"RCLONE_CONFIG": "/dev/null"}
        out["rclone copy"] = lambda dst: run_tool(
            ["rclone", "copy", "-q", str(src), str(dst / src.name)], env=env
        )
    else:
        skipped["rclone copy"] = "rclone is not installed"
    return out, skipped


TMPFS = Path("/dev/shm")
FLOOR = "Python loop, parjobs' syscalls"


def syscall_loop(src: Path, dst: Path) -> None:
    """Copy the tree ``src`` into ``dst/<src.name>`` with parjobs' per-file system calls and
    nothing else: open, fstat, create a temporary, copy_file_range, fstat (source changed?),
    fchmod, futimens, close, rename without replacing, close. The floor for any Python tool
    keeping modes and times with an atomic rename."""
    top = os.fsencode(src)
    out = os.fsencode(dst / src.name)
    for d, _, files in os.walk(top):
        target = out + d[len(top) :]
        os.mkdir(target)
        dir_fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for name in files:
                fd = os.open(d + b"/" + name, os.O_RDONLY | os.O_NOFOLLOW)
                st = os.fstat(fd)
                tmp = b".%s.%016x.tmp" % (name, random.getrandbits(64))
                wfd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600, dir_fd=dir_fd)
                done = 0
                while done < st.st_size:
                    done += os.copy_file_range(fd, wfd, st.st_size - done)
                os.fstat(fd)
                os.fchmod(wfd, st.st_mode & 0o7777)
                os.utime(wfd, ns=(st.st_atime_ns, st.st_mtime_ns))
                os.close(wfd)
                os.close(fd)
                rename_noreplace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, overwrite=False)
        finally:
            os.close(dir_fd)


def _on_tmpfs(path: Path) -> bool:
    with open("/proc/mounts", encoding="utf-8") as f:
        mounts = [line.split() for line in f]
    return any(m[1] == str(path) and m[2] == "tmpfs" for m in mounts if len(m) > 2)


def _tmpfs_case(session: Session, out: dict[str, Any]) -> tuple[str, Any, str] | None:
    """The small-file set within tmpfs: per-file costs with the filesystem out of the way."""
    data = session.data
    info = data.info["sets"]["small"]
    if not (TMPFS.is_dir() and _on_tmpfs(TMPFS)):
        out["tmpfs_skipped_reason"] = f"{TMPFS} is not a tmpfs mount"
        return None
    with tempfile.TemporaryDirectory(dir=TMPFS, prefix="parjobs-bench-") as name:
        base = Path(name)
        src = base / "small"
        shutil.copytree(data.path("small"), src)
        scratch = base / "scratch"
        scratch.mkdir()
        files = info["files"]
        copies, _skipped = contenders(session, src, files)
        copies = {n: c for n, c in copies.items() if n not in ("rsync -a", "rclone copy")}
        copies[FLOOR] = lambda dst: in_process(lambda: syscall_loop(src, dst))
        log(f"[copy] {data.label('small')}, within tmpfs, {session.rounds} rounds")
        load0 = load_average()
        expect = (files, info["bytes"])
        rounds = run_rounds(
            {n: _checked(c, n, scratch, expect, False, None) for n, c in copies.items()},
            session.rounds,
            session.warmup,
        )
        out["cases"]["small/tmpfs"] = session.case(
            rounds,
            BASELINE,
            data_set={"small": info},
            loadavg_before=load0,
            where="source and destination in /dev/shm (tmpfs)",
            skipped={"rsync -a": "left out here", "rclone copy": "left out here"},
        )
        return (f"{data.label('small')}, within tmpfs", rounds, BASELINE)


def _checked(
    copy: Copy, name: str, scratch: Path, expect: tuple[int, int], cold: bool, refresh: Path | None
) -> Callable[[], Timing]:
    """`checked_copy` with dropped caches before the copy when ``cold``, or dropped and
    re-read ``refresh`` sources."""
    before: Callable[[], object] | None = None
    if cold:
        before = drop_caches
    elif refresh is not None:
        before = functools.partial(refresh_metadata, [refresh])
    return checked_copy(copy, name, scratch, expect, before=before)


def run(session: Session) -> dict[str, Any]:
    """Every set in every cache state; returns the scenario's JSON and draws its charts."""
    data = session.data
    tools = describe_tools(
        [("cp", ["cp", "--version"]), ("rsync", ["rsync", "--version"]),
         ("rclone", ["rclone", "version"])]
    )  # fmt: skip
    out: dict[str, Any] = {
        "what": "copy a directory tree into an empty directory on the same filesystem",
        "timed": "the copy only (destination created before, checked and removed after)",
        "baseline": BASELINE,
        "semantics": SEMANTICS,
        "tools": tools,
        "cold_available": session.cold,
        "cold_skipped_reason": session.cold_reason or None,
        "cases": {},
    }
    panels: dict[str, list[tuple[str, Any, str]]] = {}
    for cache in session.cache_states:
        for set_name in SETS:
            src = data.path(set_name)
            info = data.info["sets"][set_name]
            expect = (info["files"], info["bytes"])
            copies, skipped = contenders(session, src, info["files"])
            log(f"[copy] {data.label(set_name)}, {cache}, {session.rounds} rounds")
            cold = cache != CACHED
            # Many files: forget the inodes earlier calls deleted (see refresh_metadata).
            many = info["files"] >= REFRESH_FILES
            refresh = src if not cold and many and session.can_drop_caches else None
            if cold:  # a warm-up round warms nothing here
                left_out = [n for n in copies if n in NOT_COLD or n.startswith(PYTHON_ONLY)]
                skipped.update((n, "not run cold-ish (keeps a full run short)") for n in left_out)
                copies = {n: c for n, c in copies.items() if n not in NOT_COLD}
            else:
                warm([src])
            load0 = load_average()
            rounds = run_rounds(
                {
                    n: _checked(c, n, session.scratch, expect, cold, refresh)
                    for n, c in copies.items()
                },
                session.rounds,
                0 if cold else session.warmup,
            )
            key = f"{set_name}/{cache}"
            out["cases"][key] = session.case(
                rounds,
                BASELINE,
                data_set={set_name: info},
                cache=cache,
                skipped=skipped,
                loadavg_before=load0,
                warmup_rounds=0 if cold else session.warmup,
                metadata_refresh=None if refresh is None else REFRESH_NOTE,
            )
            mib = info["bytes"] / 2**20
            for name, m in rounds.items():
                out["cases"][key]["contenders"][name]["mib_per_s"] = round(mib / m.median, 1)
            panels.setdefault(cache, []).append((data.label(set_name), rounds, BASELINE))
    tmpfs = _tmpfs_case(session, out)
    if session.charts and tmpfs is not None:
        panel_chart(
            [tmpfs],
            filename="copy_tmpfs.png",
            title="Copy within tmpfs (lower is better; ratio to cp -r)",
            note=session.note(),
        )
    if session.charts:
        for cache, chart in panels.items():
            suffix = "" if cache == CACHED else "_cold"
            panel_chart(
                chart,
                filename=f"copy{suffix}.png",
                title=f"Copy a tree, page cache {WORDS[cache]} (lower is better; ratio to cp -r)",
                note=session.note(),
            )
    return out
