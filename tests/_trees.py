"""The file-tree helpers, now public in `parjobs.testing` (kept importable here for the
tests and the crash-test children that import ``_trees``), and special files to plant."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

import parjobs
from parjobs.ops import _transfer
from parjobs.testing import read, snapshot, write


def save_in_place(path: Path, data: bytes) -> None:
    """Write ``data`` over the start of ``path`` in place, then put its times back to the
    nanosecond (``touch -r``, ``rsync --inplace``, a tagger keeping a photo's date): the
    same inode, size and mtime, new bytes; only its ctime tells."""
    old = os.lstat(path)
    with open(path, "r+b") as f:
        f.write(data)
    os.utime(path, ns=(old.st_atime_ns, old.st_mtime_ns))
    new = os.lstat(path)
    assert (new.st_ino, new.st_size, new.st_mtime_ns) == (old.st_ino, old.st_size, old.st_mtime_ns)


#: The special files a test plants where a regular one is expected, and how errors name them.
SPECIAL_KINDS = {"fifo": "FIFO", "socket": "socket", "chardev": "character device"}


async def run_job(store_path: str, job: parjobs.Job, **manager: Any) -> tuple[Any, Any, list]:
    """Run ``job`` in a manager of ``store_path`` (``manager``: its options) to its end:
    (its result if it completed, else None; its record; its item errors)."""
    async with parjobs.open_manager(store_path, **manager) as m:
        handle = await m.submit(job)
        with trio.fail_after(30):
            status = await handle.wait()
        info = await handle.info()
        result = info.result if status.value.startswith("completed") else None
        return result, info, await m.errors(handle.id)


def make_special(path: Path, kind: str) -> tuple[int, int, int]:
    """A FIFO, socket or (root only) character device at ``path``, older than any source
    (so "update" would replace it); returns its (inode, mode, rdev)."""
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "socket":  # bound by a relative name: AF_UNIX paths are short
        with contextlib.chdir(path.parent), socket.socket(socket.AF_UNIX) as sock:
            sock.bind(path.name)
    else:
        if os.geteuid() != 0:
            pytest.skip("mknod of a character device needs root")
        os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 3))
    os.utime(path, (1_000_000_000, 1_000_000_000), follow_symlinks=False)
    return identity(path)


def identity(path: Path) -> tuple[int, int, int]:
    """(inode, mode, rdev) of ``path`` itself: what must not change under a special file."""
    st = os.lstat(path)
    return st.st_ino, st.st_mode, st.st_rdev


__all__ = ["SPECIAL_KINDS", "identity", "make_special", "read", "snapshot", "write"]


def names_tree(root: Path, files: int = 40) -> dict[int, list[str]]:
    """``files`` small files over four directories, each with two more names (hard links) in
    other directories: file number -> its three names, first the one walked first."""
    for d in range(4):
        (root / f"d{d}").mkdir(parents=True)
    names: dict[int, list[str]] = {}
    for i in range(files):
        first = f"d{i % 4}/f{i:02}"
        write(root / first, os.urandom(100 + i))
        names[i] = [first] + [f"d{(i + k) % 4}/l{k}-{i:02}" for k in (1, 2)]
        for later in names[i][1:]:
            os.link(root / first, root / later)
    return names


#: A child that copies or moves a tree with each hard link slowed, so a test kills it while
#: it links (the module's ``link_first``); run again, it resumes the job.
_SLOW_LINKER = """
import time, trio, parjobs
from parjobs.ops import {module} as mod
real = mod.link_first
def slowed(*args):
    time.sleep(0.02)
    return real(*args)
mod.link_first = slowed
async def main():
    async with parjobs.open_manager({store!r}, workers=2) as m:
        jobs = await m.list_jobs()
        handle = await m.resume(jobs[0].id) if jobs else await m.submit(
            mod.{job}(sources=[{src!r}], destination={dst!r})
        )
        print(await handle.wait(), flush=True)
trio.run(main)
"""


async def kill_while_linking_then_resume(
    store: str, module: str, job: str, src: Path, dst: Path, at: int, total: int
) -> Any:
    """`kill_while_linking`, then resume the job here: its result."""
    await trio.to_thread.run_sync(kill_while_linking, store, module, job, src, dst, at, total)
    async with parjobs.open_manager(store) as m:
        (info,) = await m.list_jobs()
        handle = await m.resume(info.id)
        with trio.fail_after(60):
            return await handle.result()


def kill_while_linking(
    store: str, module: str, job: str, src: Path, dst: Path, at: int, total: int
) -> None:
    """Run ``job`` (of ``parjobs.ops.<module>``) from ``src`` to ``dst`` in a child, SIGKILL
    it once ``dst`` holds ``at`` files (past the first names: it is linking the others),
    and check that it was killed before all ``total`` were there."""
    code = _SLOW_LINKER.format(module=module, job=job, store=store, src=str(src), dst=str(dst))
    child = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE)

    def count() -> int:
        return sum(len(names) for _, _, names in os.walk(dst))

    deadline = time.monotonic() + 30
    while count() < at:
        assert child.poll() is None, child.stderr.read().decode()  # type: ignore[union-attr]
        assert time.monotonic() < deadline, "the child made no progress"
        time.sleep(0.005)
    os.kill(child.pid, signal.SIGKILL)
    assert child.wait() == -signal.SIGKILL
    assert count() < total, "killed before the end"


def user_file_at_first(src: Path, dst: Path) -> tuple[int, int]:
    """``src/s/a`` and ``src/s/b``, two names of one file, and the user's own file at
    ``dst/s/a``: other bytes of the same size and mtime (``touch -r``), which a conflict
    policy keeps. Returns the user's file's (inode, link count)."""
    (src / "s").mkdir(parents=True)
    write(src / "s" / "a", b"source bytes")
    os.link(src / "s" / "a", src / "s" / "b")
    (dst / "s").mkdir(parents=True)
    write(dst / "s" / "a", b"user's bytes")
    st = os.stat(src / "s" / "a")
    os.utime(dst / "s" / "a", ns=(st.st_atime_ns, st.st_mtime_ns))
    user = os.stat(dst / "s" / "a")
    return user.st_ino, user.st_nlink


async def run_pausing_before_links(
    store_path: str, job: parjobs.Job, paused: bool
) -> parjobs.JobStatus:
    """Run ``job`` (a copy or move) to its end; with ``paused``, pause it once its first
    stage is done, before the "links" stage looks up its firsts (`firsts_made`, which both
    call through `_transfer.run_links`), and resume it: what the later names link to then
    comes from the first run's records."""
    module: Any = _transfer  # (its firsts_made is replaced for the run)
    real = module.firsts_made
    reached = trio.Event()

    async def stop_first(ctx: parjobs.JobContext, *args: Any) -> Any:
        if paused and not reached.is_set():
            reached.set()
            while True:  # until the pause below reaches the job
                await ctx.check_interrupt()
                await trio.sleep(0.005)
        return await real(ctx, *args)

    module.firsts_made = stop_first
    try:
        async with parjobs.open_manager(store_path) as m:
            handle = await m.submit(job)
            with trio.fail_after(20):
                if paused:
                    await reached.wait()
                    await m.pause(handle.id)
                    assert await handle.wait() is parjobs.JobStatus.PAUSED
                    handle = await m.resume(handle.id)
                return await handle.wait()
    finally:
        module.firsts_made = real


async def pause_at(
    m: parjobs.JobManager,
    job: parjobs.Job,
    cls: Any,
    name: bytes,
    mp: pytest.MonkeyPatch,
    after: threading.Event | None = None,
) -> parjobs.JobHandle:
    """Submit ``job`` to ``m`` (a manager of one worker: items run in walk order) and pause
    it from the item of ``cls`` (`CopyItem`, `MoveItem`) whose destination leaf is
    ``name``, once, before that item is booked (it runs again on resume); ``after``: once
    it is set (e.g. `walk_recorded`: the walk, running ahead, got so far). Returns the
    paused job's handle."""
    handles: list[parjobs.JobHandle] = []
    real = cls._run
    paused: list[bool] = []

    def run(self: Any, tc: parjobs.TaskContext) -> Any:
        if self.entry.rel.rpartition(b"/")[2] == name and not paused:
            paused.append(True)
            assert after is None or after.wait(30)
            trio.from_thread.run(handles[0].pause)
            tc.check()  # raises: never booked
        return real(self, tc)

    mp.setattr(cls, "_run", run)
    handles.append(await m.submit(job))
    with trio.fail_after(30):
        assert await handles[0].wait() is parjobs.JobStatus.PAUSED
    mp.setattr(cls, "_run", real)
    return handles[0]


def reached_in_small_steps(root: Path, mp: pytest.MonkeyPatch) -> Path:
    """``root``: a file ``first``, then 40 directories of 6 files, which a copy or move
    walks and reaches in small steps (walk batches of 8 entries, its reach raised by none
    ahead and past each task alone, a task a file in the dispatch window), so a job of one
    worker paused at ``first`` (`pause_at`) has not reached the last directory.
    Returns its last file."""
    from parjobs.ops import _transfer, _walk

    mp.setattr(_walk, "SLICE_ENTRIES", 8)
    mp.setattr(_transfer, "REACH_AHEAD", 0, raising=False)  # (older code: none)
    mp.setattr(_transfer, "COVER_MAX", 0, raising=False)  # a task at a time (older: so)
    mp.setattr(_transfer, "BUNDLE_MAX", 1)
    root.mkdir(parents=True)
    write(root / "first", b"1")
    for d in range(40):
        (root / f"d{d:02}").mkdir()
        for f in range(6):
            write(root / f"d{d:02}" / f"f{f}", b"%d" % (d * f))
    return root / "d39" / "f5"


def walk_recorded(path: Path, mp: pytest.MonkeyPatch) -> threading.Event:
    """An event set once a walk recorded ``path`` in its manifest: a resumed run knows it
    then (a file the walk had not listed before a pause is walked afresh, as it is)."""
    from parjobs.ops import _walk

    recorded = threading.Event()
    real = _walk._Walker.directories
    wanted = os.fsencode(path)

    def directories(self: Any, *args: Any, **kwargs: Any) -> list[Any]:
        out = real(self, *args, **kwargs)
        if any(e.path == wanted for e in out):
            recorded.set()
        return out

    mp.setattr(_walk._Walker, "directories", directories)
    return recorded


def swap_after_listing(monkeypatch: pytest.MonkeyPatch, sub: Path, outside: Path) -> None:
    """Replace directory ``sub`` by a symlink to ``outside`` just after the walk listed it,
    before any of its files is copied or moved."""
    from parjobs.ops import _walk as walk_mod

    swapped = os.fsencode(sub)

    def after(real: Callable[..., Any]) -> Callable[..., Any]:
        def swapping(path: bytes, follow: bool, *rest: Any) -> Any:
            listed = real(path, follow, *rest)
            if path == swapped:
                os.rename(path, path + b".kept")
                os.symlink(outside, path)
            return listed

        return swapping

    monkeypatch.setattr(walk_mod, "_scan", after(walk_mod._scan))
    if walk_mod._walk_dir is not None:  # a first walk lists in `_fastscan.walk_dir`
        monkeypatch.setattr(walk_mod, "_walk_dir", after(walk_mod._walk_dir))
