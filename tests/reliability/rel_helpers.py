"""Shared helpers of the reliability suite: trees, snapshots, child processes, checks."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio
from PIL import Image

import parjobs
from parjobs import JobStatus
from parjobs.ops._names import META_SUFFIX, PARTIAL_SUFFIX, TMP_SUFFIX

# tests/ holds _trees; crash-test children import this module without the test conftest.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _forkcli import Forked
from _jobs import CountJob, logged, read_log
from _trees import read as read
from _trees import snapshot as snapshot
from _trees import write as write

HERE = Path(__file__).resolve().parent
CHILD = HERE / "rel_child.py"
MIB = 1 << 20
NOBODY = 65534
#: Every temporary name parjobs uses contains this (partials, metas, one-shot temps,
#: thumbnail temps ``.parjobs-<hex>.tmp``, checksum temps ``<out>.parjobs-<id>.tmp``).
TEMP_MARK = b".parjobs"
TEMP_SUFFIXES = (PARTIAL_SUFFIX, META_SUFFIX, TMP_SUFFIX)


# -- trees -------------------------------------------------------------------------------


def photo(size: tuple[int, int], seed: int) -> Image.Image:
    """A photo-like image: gradients, noise and a seed-dependent box."""
    red = Image.linear_gradient("L").resize(size)
    green = Image.linear_gradient("L").rotate(90).resize(size)
    im = Image.merge("RGB", (red, green, Image.effect_noise(size, 40)))
    x, y = (seed * 37) % (size[0] - 40), (seed * 23) % (size[1] - 40)
    im.paste((seed * 29 % 256, 255 - seed % 256, 128), (x, y, x + 40, y + 40))
    return im


def mixed_tree(
    root: Path, *, seed: int = 1, small: int = 240, big: int = 3, photos: int = 8
) -> None:
    """Hundreds of small files in nested dirs, a few large ones (1.1-1.8 MB: several chunks
    of the crash children's 512 KiB, and above the 1 MiB under which files go in groups),
    photos, an empty file and dir, a symlink and two awkward names."""
    rng = random.Random(seed)
    root.mkdir(parents=True)
    for i in range(small):
        d = root / f"d{i % 6}"
        if i % 3 == 0:
            d = d / "sub" / ("deeper" if i % 9 == 0 else "")
        d.mkdir(parents=True, exist_ok=True)
        write(d / f"f{i:03}.dat", rng.randbytes(rng.choice([0, 10, 700, 5000, 40_000])))
    for i in range(big):
        write(root / f"big{i}.bin", rng.randbytes(MIB + 100_000 + i * 300_001))
    (root / "photos").mkdir()
    for i in range(photos):
        photo((640, 480), seed + i).save(root / "photos" / f"img{i:02}.jpg", quality=85)
    (root / "empty-dir").mkdir()
    write(root / "empty.txt", b"")
    os.symlink("big0.bin", root / "link-to-big")
    write(root / "ünï cødé.txt", "ünï".encode())
    write(os.fsencode(root) + b"/" + b"n" * 251 + b".txt", b"a name of 255 bytes")
    os.utime(root / "d0", ns=(1_000_000_000, 1_500_000_000_000))


def clone_tree(template: Path, dest: Path) -> None:
    """An exact copy (modes, times, symlinks) made with ``cp -a``."""
    subprocess.run(["cp", "-a", str(template), str(dest)], check=True)


def temp_names(*roots: Path | str | bytes) -> list[bytes]:
    """Paths below ``roots`` whose name marks a parjobs temporary or partial."""
    found = []
    for root in roots:
        for d, dirs, files in os.walk(os.fsencode(root)):
            for name in dirs + files:
                if TEMP_MARK in name or name.endswith(TEMP_SUFFIXES):
                    found.append(os.path.join(d, name))
    return sorted(found)


def real_files(snap: dict[bytes, tuple[str, str]]) -> dict[bytes, tuple[str, str]]:
    """The entries of a snapshot that are not parjobs temporaries."""
    return {
        rel: v
        for rel, v in snap.items()
        if TEMP_MARK not in os.path.basename(rel) and v[0] in ("file", "link")
    }


def assert_no_half_written(
    dest: dict[bytes, tuple[str, str]], expected: dict[bytes, tuple[str, str]], where: str
) -> None:
    """Every file under its real name at the destination is complete: the expected bytes."""
    bad = {
        rel: (got, expected.get(rel))
        for rel, got in real_files(dest).items()
        if expected.get(rel) != got
    }
    assert not bad, f"{where}: files under their real name differ from the expected: {bad}"


# -- child processes ---------------------------------------------------------------------


@dataclass
class ChildRun:
    """How one child run ended."""

    killed: bool
    status: str | None
    job_id: str | None
    elapsed: float  # seconds from READY to the end
    stderr: str = ""
    lines: list[str] = field(default_factory=list)


def spawn(
    config: dict[str, Any],
    workdir: Path,
    *,
    env: dict[str, str] | None = None,
    user: int | None = None,
) -> Forked | subprocess.Popen[str]:
    """Start `rel_child` with ``config``: forked from the warm interpreter (`_forkcli`), or
    a fresh one run as uid ``user`` if given."""
    fd, cfg_path = tempfile.mkstemp(suffix=".json", dir=workdir)
    with os.fdopen(fd, "w") as f:
        json.dump(config, f)
    os.chmod(cfg_path, 0o644)
    full_env = dict(os.environ)
    full_env.update(env or {})
    full_env["PYTHONPATH"] = os.pathsep.join(
        [str(HERE.parent), *filter(None, [full_env.get("PYTHONPATH")])]
    )

    if user is None:
        return Forked([cfg_path], module=str(CHILD), env=full_env)

    def demote() -> None:
        os.setgroups([])
        os.setgid(user)
        os.setuid(user)

    return subprocess.Popen(
        [sys.executable, str(CHILD), cfg_path],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=full_env,
        preexec_fn=demote,
    )


def run_child(
    config: dict[str, Any],
    workdir: Path,
    *,
    kill_after: float | None = None,
    timeout: float = 60,
    env: dict[str, str] | None = None,
    user: int | None = None,
) -> ChildRun:
    """Run a child to its end, or SIGKILL it ``kill_after`` seconds after it printed READY.

    A child may also kill itself (a hook); either way ``killed`` says it died by SIGKILL.
    """
    child = spawn(config, workdir, env=env, user=user)
    assert child.stdout is not None and child.stderr is not None
    lines: list[str] = []
    job_id = None
    try:
        line = child.stdout.readline()  # blocks until READY (or the child's death)
        started = time.monotonic()
        if line.startswith("READY"):
            job_id = line.split()[1]
            if kill_after is not None:
                deadline = started + kill_after
                while child.poll() is None and time.monotonic() < deadline:
                    time.sleep(0.002)
                if child.poll() is None:
                    os.kill(child.pid, signal.SIGKILL)
        else:
            lines.append(line)
        child.wait(timeout=timeout)
        elapsed = time.monotonic() - started
        rest = child.stdout.read()
        err = child.stderr.read()
    except BaseException:
        child.kill()
        child.wait()
        raise
    finally:
        child.stdout.close()
        child.stderr.close()
    lines += rest.splitlines()
    status = next((ln.split()[1] for ln in lines if ln.startswith("STATUS")), None)
    killed = child.returncode == -signal.SIGKILL
    if not killed and child.returncode != 0:
        raise AssertionError(f"child failed with {child.returncode}: {err}")
    return ChildRun(killed, status, job_id, elapsed, err, lines)


async def resume_to_end(store: str, *, timeout: float = 60, **manager: Any) -> parjobs.JobInfo:
    """Resume the one resting job of ``store`` in this process and wait for its end."""
    import trio

    async with parjobs.open_manager(store, **manager) as m:
        jobs = await m.list_jobs()
        assert len(jobs) == 1, jobs
        info = jobs[0]
        if info.status.is_resting and not info.status.is_final:
            await m.resume(info.id)
        with trio.fail_after(timeout):
            await m.wait(info.id)
        return await m.get(info.id)


# -- other processes and users -----------------------------------------------------------


@contextlib.contextmanager
def world_dir(prefix: str) -> Iterator[Path]:
    """A directory outside pytest's private tmp (which uid 65534 cannot enter), removed at
    the end."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    os.chmod(path, 0o777)
    try:
        yield path
    finally:
        for d, dirs, _ in os.walk(path):
            for name in dirs:
                with contextlib.suppress(OSError):
                    os.chmod(os.path.join(d, name), 0o755)
        shutil.rmtree(path, ignore_errors=True)


def can_demote() -> bool:
    """Whether this process can run children as uid 65534 (it is root)."""
    return os.geteuid() == 0


def chown_tree(root: Path, uid: int) -> None:
    os.chown(root, uid, uid)
    for d, dirs, files in os.walk(root):
        for name in dirs + files:
            os.chown(os.path.join(d, name), uid, uid, follow_symlinks=False)


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """Mount a tmpfs of ``size`` at ``path`` (created), unmounted at the end; raises
    `PermissionError` when mounting is not permitted here."""
    path.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0777", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise PermissionError(proc.stderr.strip() or "mount failed")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def remount(path: Path, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(path)], check=True)


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def job_dir(store: str, job_id: str) -> str:
    return os.path.join(store + ".d", job_id)


# -- store outages (test_rel_faults, test_rel_store_heal) -------------------------------


def short_busy_timeout(monkeypatch: pytest.MonkeyPatch, seconds: float = 0.5) -> None:
    """Stores opened from now on wait ``seconds`` for a lock another process holds, not the
    default busy timeout."""
    real_open = parjobs._store.JobStore.open.__func__  # type: ignore[attr-defined]
    monkeypatch.setattr(
        parjobs._store.JobStore,
        "open",
        classmethod(lambda cls, path, timeout=seconds: real_open(cls, path, timeout=timeout)),
    )


#: Tasks of the outage tests; those from `HELD_FROM` on wait for a flag file (created once
#: the store is released), so the job is still running whenever the outage comes; the
#: `GATED` before them wait for the outage to begin (`pause_by_outage`).
OUTAGE_TASKS, HELD_FROM, GATED = 200, 100, 10


class Outage:
    """Another connection holds the store's write lock (``BEGIN EXCLUSIVE``) until `end`:
    every write of the manager fails with SQLITE_BUSY after its (shortened) busy timeout."""

    def __init__(self, store: str) -> None:
        self.con: sqlite3.Connection | None = sqlite3.connect(
            store, isolation_level=None, check_same_thread=False
        )
        self.con.execute("BEGIN EXCLUSIVE")

    def end(self) -> None:
        if self.con is not None:
            self.con.execute("ROLLBACK")
            self.con.close()
            self.con = None


class PgOutage:
    """The PostgreSQL database refuses connections and its sessions are ended until `end`:
    every store call of the manager fails (its connection is gone, a new one refused)."""

    def __init__(self, server: Any, db: str) -> None:
        self.server, self.db, self.on = server, db, True
        server.sql(f"ALTER DATABASE {db} ALLOW_CONNECTIONS false")
        server.sql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE datname = '{db}' AND pid <> pg_backend_pid()"
        )

    def end(self) -> None:
        if self.on:
            self.server.sql(f"ALTER DATABASE {self.db} ALLOW_CONNECTIONS true")
            self.on = False


@dataclasses.dataclass
class OutageStore:
    """A store whose outages a test starts (`begin`); every one is ended at the end."""

    path: str
    log: str
    flag: str
    begin: Callable[[], Outage | PgOutage]
    outages: list[Outage | PgOutage] = dataclasses.field(default_factory=list)


async def pause_by_outage(m: parjobs.JobManager, store: OutageStore) -> parjobs.JobHandle:
    """Submit a job, start an outage once its first `HELD_FROM` - `GATED` tasks ran (those
    from `HELD_FROM` on wait for the flag file), and return once the job pauses itself for
    its failing store.

    The `GATED` tasks before `HELD_FROM` end only once the outage began, so their
    completions are written into it: the failed writes pause the job. (With every task
    before the held ones free to end, all their completions were sometimes written before
    the outage began, on a loaded machine, the outage's start taking over the clock's
    0.1 s: nothing was left to write, a PostgreSQL outage failed the manager's lease reads
    before its progress save, and the job ran on, never pausing: 250 s to time out.)"""
    gate = store.flag + ".gate"
    job = CountJob(
        n=OUTAGE_TASKS,
        log=store.log,
        hold=store.flag,
        hold_from=HELD_FROM,
        gate=gate,
        gate_from=HELD_FROM - GATED,
    )
    handle = await m.submit(job)
    with trio.fail_after(60):
        while logged(store.log) < HELD_FROM - GATED:
            await trio.sleep(0.01)
        store.outages.append(await trio.to_thread.run_sync(store.begin))
        open(gate, "w").close()
        while handle.status is not JobStatus.PAUSING:
            await trio.sleep(0.01)
    return handle


async def end_outage(store: OutageStore) -> None:
    await trio.to_thread.run_sync(store.outages[-1].end)


async def run_to_end(m: parjobs.JobManager, job_id: str) -> parjobs.JobInfo:
    """Follow the job through pauses and resumes until it ends."""
    with trio.fail_after(600):
        async for _ in m.watch(job_id, through_pauses=True):
            pass
    return await m.get(job_id)


def assert_each_task_ran_once(log: str) -> None:
    assert sorted(read_log(log)) == list(range(OUTAGE_TASKS))


def before_write(
    m: parjobs.JobManager, status: JobStatus, during: Callable[[], Awaitable[object]]
) -> None:
    """Run ``await during()`` once, just before ``m`` writes a job's move to ``status``
    (the store's ``transition``, e.g. a paused end, a retry's requeue: queued)."""
    real = m._db
    done = trio.Event()

    async def db(fn: Any, *args: Any, **kwargs: Any) -> Any:
        moving = getattr(fn, "__name__", "") == "transition" and status in args
        if moving and not done.is_set():
            done.set()
            await during()
        return await real(fn, *args, **kwargs)

    m._db = db  # type: ignore[method-assign]


def lose_an_answer(
    m: parjobs.JobManager, call: str, status: JobStatus | None = None
) -> list[JobStatus]:
    """The first store ``call`` of ``m`` (one with ``status`` among its arguments, if
    given) that returns a job is committed, but ``m`` gets a `StoreError`, as when the
    connection fails as it commits; the returned list gets the job's stored status then."""
    real = m._db
    lost: list[JobStatus] = []

    async def db(fn: Any, *args: Any, **kwargs: Any) -> Any:
        done = await real(fn, *args, **kwargs)
        named = getattr(fn, "__name__", "") == call and (status is None or status in args)
        if named and done is not None and not lost:
            lost.append(done.status)
            raise parjobs.StoreError("lost the answer of the job store")
        return done

    m._db = db  # type: ignore[method-assign]
    return lost
