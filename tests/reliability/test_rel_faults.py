"""Faults: a full disk, permission denied, sources that change or vanish, a destination
removed mid-job, a locked store, a truncated or corrupt store.

Each test injects one fault and checks: the job ends as documented (docs/reliability.md),
the failing items are reported with a reason naming them, nothing is lost or left
half-written under a real name, and once the fault is gone a resume completes exactly.
"""

from __future__ import annotations

import os
import random
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from _forkcli import Forked
from _forkcli import run as forked_run
from rel_helpers import (
    MIB,
    NOBODY,
    Outage,
    OutageStore,
    assert_each_task_ran_once,
    assert_no_half_written,
    can_demote,
    chown_tree,
    end_outage,
    lose_an_answer,
    pause_by_outage,
    read,
    remount,
    resume_to_end,
    run_child,
    run_to_end,
    short_busy_timeout,
    snapshot,
    temp_names,
    tmpfs,
    world_dir,
    write,
)

import parjobs
from parjobs import JobStatus
from parjobs._housekeeping import HEAL_AFTER
from parjobs._util import exception_leaves as leaves
from parjobs.ops import _smallfiles as smallfiles_mod
from parjobs.ops import _transfer as transfer_mod
from parjobs.ops._copy import CopyJob
from parjobs.ops._copyfile import copy_file
from parjobs.ops._hash import HashJob
from parjobs.ops._hashing import hash_file

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _jobs import FLAKY_ATTEMPTS, CountJob, FlakyJob, MarkJob, SlowCleanupJob, logged, read_log


def small_tree(root: Path, *, big: int = 6, small: int = 50, seed: int = 3) -> None:
    rng = random.Random(seed)
    (root / "sub").mkdir(parents=True)
    for i in range(big):
        write(root / f"big{i}.bin", rng.randbytes(2 * MIB + i))
    for i in range(small):
        write(root / "sub" / f"s{i:02}.txt", rng.randbytes(10_000 + i))


@pytest.fixture
def mnt(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of 8 MiB (unmounted at the end), or skip where mounting is not permitted."""
    try:
        with tmpfs(tmp_path / "mnt", "8m") as path:
            yield path
    except PermissionError as exc:
        pytest.skip(f"cannot mount a tmpfs here: {exc}")


async def run_to_rest(store: str, job: parjobs.Job, **manager: Any) -> tuple[Any, list]:
    async with parjobs.open_manager(store, **manager) as m:
        handle = await m.submit(job)
        with trio.fail_after(60):
            await handle.wait()
        return await handle.info(), await m.errors(handle.id)


# -- a full disk ---------------------------------------------------------------------------


async def test_disk_full_reports_the_files_then_resume_completes(tmp_path: Path, mnt: Path):
    """12 MB into 8 MB: the files that do not fit fail with ENOSPC and are named; the job
    ends completed_with_errors; nothing is half-written under a real name and no temporary
    is left; after the disk grows (space freed) a resume copies exactly the rest."""
    src = tmp_path / "src"
    small_tree(src)
    expected = snapshot(src)
    store = str(tmp_path / "jobs.sqlite")
    info, errors = await run_to_rest(
        store, CopyJob(into=True, sources=[str(src)], destination=str(mnt))
    )
    assert info.status is JobStatus.COMPLETED_WITH_ERRORS
    assert errors and all(e.message.startswith("No space left on device") for e in errors)
    assert all(str(src) in e.label for e in errors)
    assert info.result["failed"] == len(errors)
    assert_no_half_written(snapshot(mnt / "src"), expected, "disk full")
    assert temp_names(mnt) == []
    remount(mnt, "64m")
    final = await resume_to_end(store)
    assert final.status is JobStatus.COMPLETED
    assert snapshot(mnt / "src") == expected
    assert temp_names(mnt) == []


#: The disk fills 0.3 s after the job starts, 300-450 tasks in: after a second of failed
#: checkpoint writes the job pauses, 0.75 ms a task. It ran all its tasks unrecorded before
#: (20,000 took 10 s there and 4 s to resume). Quiet, ~1,500 run; at load 10 once 3,047:
#: the test asks for fewer than three quarters.
FULL_STORE_TASKS = 8000

#: The child prints the job's status events (status, then error) until the job ends.
FULL_STORE_CHILD = """
import sys, trio, parjobs
sys.path.insert(0, {tests!r})
from _jobs import CountJob
async def main():
    async with parjobs.open_manager({store!r}, workers=2) as m:
        with m.events() as events:
            h = await m.submit(CountJob(n={n}, log={log!r}, sleep=0.0002, fail_every=3))
            print("READY", h.id, flush=True)
            async for e in events:
                if e.job_id == h.id and e.status is not None and e.info is not None:
                    print(e.status.value, e.info.error, flush=True)
                    if e.status.is_ended:
                        break
trio.run(main)
"""


def fill_store_disk(
    tmp_path: Path, mnt: Path
) -> tuple[str, str, list[str], int, subprocess.CompletedProcess]:
    """A child runs a job of `FULL_STORE_TASKS` tasks whose store is on a tmpfs that fills
    up mid-job; once the job says it is pausing, the tasks it ran are counted and the space
    is freed. Returns the store, the log, the status lines the child printed, that count
    and the ended child."""
    store, log = str(mnt / "jobs.sqlite"), str(tmp_path / "log")
    remount(mnt, "1m")
    tests = str(Path(__file__).parent.parent)
    code = FULL_STORE_CHILD.format(tests=tests, store=store, log=log, n=FULL_STORE_TASKS)
    child = Forked([], code=textwrap.dedent(code))  # a real process, started warm
    assert child.stdout is not None
    assert child.stdout.readline().startswith("READY")
    time.sleep(0.3)
    subprocess.run(["dd", "if=/dev/zero", f"of={mnt}/filler", "bs=4k"], capture_output=True)
    lines = []
    try:
        while not (line := child.stdout.readline()).startswith("pausing"):
            assert line, "the child ended before its job paused"
            lines.append(line)
        lines.append(line)
        time.sleep(0.5)  # its tasks stop, its last checkpoint fails and waits for the store
        ran = len(read_log(log))
    finally:
        os.unlink(mnt / "filler")
        remount(mnt, "64m")  # room for the rest of the job
    out, err = child.communicate(timeout=60)
    lines += out.splitlines(keepends=True)
    proc = subprocess.CompletedProcess(child.args, child.returncode, out, err)
    return store, log, [line.rstrip("\n") for line in lines], ran, proc


async def test_store_on_a_full_disk_pauses_the_job_then_it_resumes_by_itself(
    tmp_path: Path, mnt: Path
) -> None:
    """The store's own disk fills mid-job: the job pauses soon after, not at its end (what
    it did meanwhile could not be recorded), saying why, and waits for the store (it ended
    the process with a `StoreError` before, and the next manager recovered it as
    interrupted). Once space is freed its last checkpoint is written, it rests paused by
    the store, resumes by itself and completes: every task ran exactly once."""
    store, log, lines, ran, proc = fill_store_disk(tmp_path, mnt)
    assert proc.returncode == 0, proc.stderr
    assert ran < FULL_STORE_TASKS * 3 // 4  # all of them ran before
    statuses = [line.split(" ", 1)[0] for line in lines]
    assert statuses == [
        "queued",
        "running",
        "pausing",
        "paused",
        "queued",
        "running",
        "completed_with_errors",
    ], lines
    pausing, paused, queued = lines[2], lines[3], lines[4]
    assert "paused: its progress cannot be recorded" in pausing and "disk is full" in pausing
    assert "disk is full" in paused and "resumes by itself" in paused
    assert "resumed by itself" in queued
    async with parjobs.open_manager(store) as m:
        (info,) = await m.list_jobs()
    assert info.status is JobStatus.COMPLETED_WITH_ERRORS and info.error is None
    assert info.runs == 2
    expected = [i for i in range(FULL_STORE_TASKS) if i % 3]
    assert sorted(read_log(log)) == expected  # each once: its last checkpoint was kept
    assert info.done_items == len(expected)


# -- permissions -------------------------------------------------------------------------


@pytest.fixture
def shared() -> Iterator[Path]:
    """A directory uid 65534 can use (pytest's tmp_path is private to root)."""
    if not can_demote():
        pytest.skip("not root: cannot run a child as uid 65534 (and root ignores modes)")
    with world_dir("parjobs-rel-") as path:
        yield path


def copy_config(store: str, src: Path, dst: Path) -> dict[str, Any]:
    return {
        "store": store,
        "action": "submit",
        "job": {
            "type": "copy",
            "spec": {"sources": [str(src)], "destination": str(dst), "into": True},
        },
        "workers": 4,
        "user": NOBODY,  # the child drops root's privileges once Python has started
    }


def test_permission_denied_on_a_source_file(shared: Path) -> None:
    """As uid 65534: an unreadable source fails alone with "Permission denied: <path>"; once
    readable, a resume copies it."""
    src, dst, work = shared / "src", shared / "dst", shared / "work"
    small_tree(src, big=2, small=20)
    write(src / "sub" / "secret.txt", b"top secret")
    work.mkdir()
    chown_tree(work, NOBODY)
    os.chmod(src / "sub" / "secret.txt", 0)
    store = str(work / "jobs.sqlite")
    run = run_child(copy_config(store, src, dst), work)
    assert run.status == "completed_with_errors", run
    con = sqlite3.connect(store)
    errors = con.execute("SELECT label, message FROM task_errors").fetchall()
    con.close()
    secret = str(src / "sub" / "secret.txt")
    assert errors == [(secret, f"Permission denied: {secret}")]
    assert not (dst / "src" / "sub" / "secret.txt").exists()
    assert temp_names(dst) == []
    os.chmod(src / "sub" / "secret.txt", 0o644)
    config = copy_config(store, src, dst) | {"action": "resume"}
    assert run_child(config, work).status == "completed"
    assert snapshot(dst / "src") == snapshot(src)


def deny_destination_dir(shared: Path) -> tuple[Path, Path, list[tuple[str, str]]]:
    """As uid 65534, copy into a destination whose subdirectory belongs to root (0755)."""
    src, dst, work = shared / "src", shared / "dst", shared / "work"
    small_tree(src, big=1, small=10)
    work.mkdir()
    chown_tree(work, NOBODY)
    (dst / "src" / "sub").mkdir(parents=True)
    chown_tree(dst, NOBODY)
    os.chown(dst / "src" / "sub", 0, 0)
    os.chmod(dst / "src" / "sub", 0o755)  # root's: nobody may not create files in it
    store = str(work / "jobs.sqlite")
    run = run_child(copy_config(store, src, dst), work)
    assert run.status == "completed_with_errors", run
    con = sqlite3.connect(store)
    errors = con.execute("SELECT label, message FROM task_errors ORDER BY label").fetchall()
    con.close()
    return src, dst, errors


def test_permission_denied_on_a_destination_directory(shared: Path) -> None:
    """As uid 65534: a destination subdirectory it may not write to fails the items in it
    (each named by its source, EACCES) and the last step (its mode and times); the others
    are copied; nothing is half-written, no temporary is left."""
    src, dst, errors = deny_destination_dir(shared)
    files = [(label, msg) for label, msg in errors if label.startswith(str(src / "sub" / "s"))]
    assert len(files) == 10 and all(m.startswith("Permission denied") for _, m in files)
    assert [label for label, _ in errors if (label, _) not in files] == [
        f"finishing {dst}"
    ]  # could not set the mode/times of dst/src/sub
    assert os.listdir(dst / "src" / "sub") == []
    assert read(dst / "src" / "big0.bin") == read(src / "big0.bin")
    assert temp_names(dst) == []


def test_permission_denied_names_the_destination_not_a_temporary(shared: Path) -> None:
    src, dst, errors = deny_destination_dir(shared)
    for label, message in errors:
        if label.startswith(str(src / "sub" / "s")):
            assert ".parjobs" not in message and str(dst / "src" / "sub") in message, message


# -- sources that change ------------------------------------------------------------------


def wrap_copy_file(monkeypatch: pytest.MonkeyPatch, before: Any = None, during: Any = None):
    """Call ``before(src)`` before each file's copy and ``during(src)`` at its checks
    (with the C group path, which never calls copy_file, switched off)."""
    real = copy_file
    monkeypatch.setattr(smallfiles_mod, "fastcopy", None)

    def wrapped(src: bytes, *args: Any, check: Any = None, **kwargs: Any) -> Any:
        if before is not None:
            before(src)

        def checked() -> None:
            if during is not None:
                during(src)
            if check is not None:
                check()

        return real(src, *args, check=checked, **kwargs)

    monkeypatch.setattr(transfer_mod, "copy_file", wrapped)


async def test_source_deleted_truncated_or_grown_after_the_scan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Changed between the walk and the copy: a deleted file fails (named, ENOENT); a
    truncated or grown one is copied as it is when copied (opened and stat'ed then, checked
    unchanged after): the destination equals the source's final state."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("gone", "shrinks", "grows", "same"):
        write(src / name, name.encode() * 50_000)

    def before(path: bytes) -> None:
        name = os.path.basename(path)
        if name == b"gone":
            os.unlink(path)
        elif name == b"shrinks":
            os.truncate(path, 1000)
        elif name == b"grows":
            with open(path, "ab") as f:
                f.write(b"more" * 100_000)

    wrap_copy_file(monkeypatch, before=before)
    dst = tmp_path / "dst"
    info, errors = await run_to_rest(
        str(tmp_path / "jobs.sqlite"), CopyJob(into=True, sources=[str(src)], destination=str(dst))
    )
    assert info.status is JobStatus.COMPLETED_WITH_ERRORS
    assert [(e.label, e.error) for e in errors] == [(str(src / "gone"), "FileNotFoundError")]
    assert snapshot(dst / "src") == snapshot(src)


@pytest.mark.parametrize("change", ["grows", "truncated", "rewritten"])
async def test_source_changing_during_the_copy_is_reported_then_recopied(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    """Changed while being copied (between chunks): the item fails with "source changed",
    its temporary is removed, nothing appears under its name; a resume copies the file as it
    now is."""
    monkeypatch.setattr(transfer_mod, "CHUNK_SIZE", 256 * 1024)
    src = tmp_path / "src"
    src.mkdir()
    write(src / "big.bin", random.Random(1).randbytes(3 * MIB))
    write(src / "ok.txt", b"fine")
    calls = [0]

    def during(path: bytes) -> None:
        if os.path.basename(path) != b"big.bin":
            return
        calls[0] += 1
        if calls[0] != 3:
            return
        if change == "grows":
            with open(path, "ab") as f:
                f.write(b"x" * 1000)
        elif change == "truncated":
            os.truncate(path, MIB)
        else:  # same size, new bytes and mtime
            with open(path, "r+b") as f:
                f.write(b"y" * 1000)

    wrap_copy_file(monkeypatch, during=during)
    dst, store = tmp_path / "dst", str(tmp_path / "jobs.sqlite")
    info, errors = await run_to_rest(
        store, CopyJob(into=True, sources=[str(src)], destination=str(dst))
    )
    assert info.status is JobStatus.COMPLETED_WITH_ERRORS
    ((label, error, message),) = [(e.label, e.error, e.message) for e in errors]
    assert label == str(src / "big.bin")
    assert error == "SourceChangedError" and "changed while being copied" in message
    assert not (dst / "src" / "big.bin").exists()
    assert temp_names(dst) == []
    monkeypatch.setattr(transfer_mod, "copy_file", transfer_mod.__dict__["copy_file"])
    final = await resume_to_end(store)
    assert final.status is JobStatus.COMPLETED
    assert snapshot(dst / "src") == snapshot(src)


async def test_partial_is_never_trusted_after_the_source_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Paused mid-file (a resumable partial is left), then the source is rewritten, even with
    its size and mtime restored: the resume re-reads and compares the partial's prefix, finds
    it stale and copies the new content."""
    monkeypatch.setattr(transfer_mod, "CHUNK_SIZE", 256 * 1024)
    src = tmp_path / "src"
    src.mkdir()
    data = random.Random(2).randbytes(4 * MIB)
    write(src / "big.bin", data)
    st = os.stat(src / "big.bin")
    paused = trio.Event()
    slow = [0]

    def during(path: bytes) -> None:
        slow[0] += 1
        if slow[0] > 4:
            time.sleep(0.05)

    wrap_copy_file(monkeypatch, during=during)
    dst, store = tmp_path / "dst", str(tmp_path / "jobs.sqlite")
    async with parjobs.open_manager(store) as m:
        handle = await m.submit(CopyJob(into=True, sources=[str(src)], destination=str(dst)))
        with trio.fail_after(20):
            while not temp_names(dst):
                await trio.sleep(0.01)
            await trio.sleep(0.1)
        await m.pause(handle.id)
        assert await handle.wait() is JobStatus.PAUSED
        paused.set()
    assert any(p.endswith(b".parjobs-partial") for p in temp_names(dst))
    new = bytearray(data)
    new[:1000] = b"z" * 1000  # the prefix the partial holds
    write(src / "big.bin", bytes(new))
    os.utime(src / "big.bin", ns=(st.st_atime_ns, st.st_mtime_ns))
    final = await resume_to_end(store)
    assert final.status is JobStatus.COMPLETED
    assert read(dst / "src" / "big.bin") == bytes(new)
    assert temp_names(dst) == []


async def test_hash_of_a_file_growing_while_read_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from parjobs.ops import _entries as entries_mod

    src = tmp_path / "src"
    src.mkdir()
    write(src / "log.txt", b"x" * (3 * MIB))
    write(src / "still.txt", b"y")
    real = hash_file

    def growing(path: bytes, **kwargs: Any) -> str:
        check = kwargs.pop("check")

        def grow() -> None:
            if path.endswith(b"log.txt"):
                with open(path, "ab") as f:
                    f.write(b"more")
            check()

        return real(path, check=grow, chunk_size=MIB, **kwargs)

    monkeypatch.setattr(entries_mod, "hash_file", growing)
    info, errors = await run_to_rest(str(tmp_path / "jobs.sqlite"), HashJob(paths=[str(src)]))
    assert info.status is JobStatus.COMPLETED_WITH_ERRORS
    assert [(e.label, e.error) for e in errors] == [(str(src / "log.txt"), "SourceChangedError")]
    assert (info.result["files"], info.result["failed"]) == (1, 1), "still.txt alone is hashed"


# -- the destination removed mid-job ------------------------------------------------------


async def test_destination_removed_mid_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The destination tree is deleted while the copy runs: the items that follow fail with
    a reason naming them (never written anywhere else: the job writes through directory fds
    of the tree it created), the job ends completed_with_errors, and a resume recreates the
    destination and copies what had failed."""
    src = tmp_path / "src"
    small_tree(src, big=0, small=60)
    calls = [0]
    dst = tmp_path / "dst"

    def before(path: bytes) -> None:
        calls[0] += 1
        time.sleep(0.002)
        if calls[0] == 20:
            shutil.rmtree(dst)

    wrap_copy_file(monkeypatch, before=before)
    store = str(tmp_path / "jobs.sqlite")
    info, errors = await run_to_rest(
        store, CopyJob(into=True, sources=[str(src)], destination=str(dst)), workers=1
    )
    assert info.status is JobStatus.COMPLETED_WITH_ERRORS
    assert len(errors) >= 40
    assert all(e.label.startswith(str(src)) and e.message for e in errors)
    assert sorted(os.listdir(tmp_path)) == ["dst", "jobs.sqlite", "jobs.sqlite.d", "src"] or (
        sorted(os.listdir(tmp_path)) == ["jobs.sqlite", "jobs.sqlite.d", "src"]
    )
    monkeypatch.setattr(transfer_mod, "copy_file", transfer_mod.__dict__["copy_file"])
    final = await resume_to_end(store)
    # The files copied before the removal were recorded done: a resume does not redo them
    # (the user deleted them); every failed one is copied now.
    assert final.status is JobStatus.COMPLETED
    copied = snapshot(dst / "src")
    assert_no_half_written(copied, snapshot(src), "after the resume")
    assert len([v for v in copied.values() if v[0] == "file"]) >= len(errors)
    assert temp_names(dst) == []


# -- the store ----------------------------------------------------------------------------

LOCK_HOLDER = """
import sqlite3, sys, time
con = sqlite3.connect(sys.argv[1], isolation_level=None)
con.execute("BEGIN EXCLUSIVE")
print("LOCKED", flush=True)
time.sleep(float(sys.argv[2]))
con.execute("ROLLBACK")
"""


def hold_lock(store: str, seconds: float) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", LOCK_HOLDER, store, str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "LOCKED"
    return proc


async def make_store(tmp_path: Path, n: int = 50) -> tuple[str, str, str]:
    store, log = str(tmp_path / "jobs.sqlite"), str(tmp_path / "log")
    async with parjobs.open_manager(store) as m:
        handle = await m.submit(CountJob(n=n, log=log))
        assert await handle.wait() is JobStatus.COMPLETED
    return store, log, handle.id


async def test_store_locked_briefly_by_another_process_is_waited_for(tmp_path: Path) -> None:
    store, log, job_id = await make_store(tmp_path)
    holder = hold_lock(store, 1.0)
    try:
        t0 = time.monotonic()
        async with parjobs.open_manager(store) as m:
            assert time.monotonic() - t0 >= 0.5  # it waited for the lock
            handle = await m.submit(CountJob(n=30, log=log + "2"))
            assert await handle.wait() is JobStatus.COMPLETED
            assert (await m.get(job_id)).done_items == 50
    finally:
        holder.wait()


async def test_store_locked_too_long_is_a_clear_error_and_nothing_is_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, _, job_id = await make_store(tmp_path)
    short_busy_timeout(monkeypatch)
    holder = hold_lock(store, 3.0)
    try:
        with pytest.raises(BaseException) as caught:
            async with parjobs.open_manager(store):
                pass
    finally:
        holder.wait()
    errors = list(leaves(caught.value))
    assert errors and all(isinstance(e, parjobs.StoreError) for e in errors), errors
    assert "locked by another process" in str(errors[0]) and store in str(errors[0])
    async with parjobs.open_manager(store) as m:
        info = await m.get(job_id)
        assert (info.status, info.done_items) == (JobStatus.COMPLETED, 50)
        assert [i.id for i in await m.list_jobs()] == [job_id]


async def test_store_locked_too_long_raises_a_plain_store_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, _, _ = await make_store(tmp_path)
    short_busy_timeout(monkeypatch)
    holder = hold_lock(store, 2.0)
    try:
        with pytest.raises(parjobs.StoreError, match="locked by another process"):
            async with parjobs.open_manager(store):
                pass
    finally:
        holder.wait()


async def test_a_close_the_store_refuses_keeps_the_callers_error_in_view(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The caller's error ends the block, then the manager's close fails (the store locked
    by another process): the StoreError raised names the caller's error. (Only the close's
    error was shown: a flaky test's submit refused by a locked store was seen as a failed
    unregister at its close.)"""
    store = str(tmp_path / "jobs.sqlite")
    short_busy_timeout(monkeypatch, 0.05)
    outage: Outage | None = None
    try:
        with pytest.raises(parjobs.StoreError, match="locked by another process") as caught:
            async with parjobs.open_manager(store):
                outage = Outage(store)
                raise KeyError("the caller's own error")
    finally:
        if outage is not None:
            outage.end()
    shown = "".join(traceback.format_exception(caught.value))
    assert "closing the manager after KeyError" in shown and "caller's own" in shown, shown


async def test_store_locked_mid_job_delays_checkpoints_only(tmp_path: Path) -> None:
    """Another process takes the store's write lock for a second while a job runs: the job's
    checkpoints wait, then the job completes; every task ran exactly once."""
    store, log = str(tmp_path / "jobs.sqlite"), str(tmp_path / "log")
    async with parjobs.open_manager(store, workers=2) as m:
        handle = await m.submit(CountJob(n=3000, log=log, sleep=0.0005))
        with trio.fail_after(10):
            while logged(log) < 300:
                await trio.sleep(0.01)
        holder = await trio.to_thread.run_sync(hold_lock, store, 1.0)
        with trio.fail_after(60):
            assert await handle.wait() is JobStatus.COMPLETED
        await trio.to_thread.run_sync(holder.wait)
        assert (await handle.info()).done_items == 3000
    assert sorted(read_log(log)) == list(range(3000))


# -- a store that fails for longer than the pause threshold, then recovers -----------------


@pytest.mark.parametrize("outage_store", ["sqlite", "postgresql"], indirect=True)
async def test_a_job_its_failing_store_paused_resumes_by_itself_once_it_works(
    outage_store: OutageStore, autojump_clock: trio.abc.Clock
) -> None:
    """The store takes no writes for longer than the pause threshold (SQLite: another
    connection holds its lock; PostgreSQL: the database refuses connections): the job
    pauses, saying why, and waits; once the store works again its last checkpoint is
    written, it rests paused by the store, then resumes by itself and completes, every
    task run exactly once. Events show each step with its reason."""
    store = outage_store
    seen: list[tuple[JobStatus, str | None]] = []

    async def follow(events: parjobs.EventSubscription) -> None:
        async for e in events:
            if e.kind is parjobs.EventKind.STATUS and e.status is not None and e.info:
                seen.append((e.status, e.info.error))

    async with (
        parjobs.open_manager(store.path, workers=2) as m,
        trio.open_nursery() as nursery,
    ):
        with m.events() as events:
            nursery.start_soon(follow, events)
            handle = await pause_by_outage(m, store)
            await trio.sleep(1)  # its last checkpoint fails, and is tried again later
            assert handle.status is JobStatus.PAUSING
            await end_outage(store)
            open(store.flag, "w").close()
            info = await run_to_end(m, handle.id)
            nursery.cancel_scope.cancel()
    assert (info.status, info.runs, info.error) == (JobStatus.COMPLETED, 2, None)
    assert_each_task_ran_once(store.log)
    statuses = [status for status, _ in seen]
    assert statuses == [
        JobStatus.QUEUED,
        JobStatus.RUNNING,
        JobStatus.PAUSING,
        JobStatus.PAUSED,
        JobStatus.QUEUED,
        JobStatus.RUNNING,
        JobStatus.COMPLETED,
    ], "\n".join(map(str, seen))
    for error in (seen[2][1], seen[3][1]):
        assert error is not None and "paused: its progress cannot be recorded" in error
        assert "resumes by itself" in error
    assert seen[4][1] is not None and "resumed by itself" in seen[4][1]


async def test_a_job_waiting_for_its_failing_store_retries_with_a_backoff(
    outage_store: OutageStore, autojump_clock: trio.abc.Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the store stays locked, the paused run's last checkpoint is tried again after
    `STORE_RETRY` (here 0.1 s), then twice as long each time: some 6 tries in 3.2 s, not
    one more per housekeeping round (16 more); the job still completes, every task once,
    when the lock goes."""
    store = outage_store
    tries = [0]
    real = parjobs._store.SQLiteJobStore.checkpoint

    def counted(self: Any, *args: Any, **kwargs: Any) -> None:
        tries[0] += 1
        real(self, *args, **kwargs)

    monkeypatch.setattr(parjobs._store.SQLiteJobStore, "checkpoint", counted)
    monkeypatch.setattr(parjobs._runner, "STORE_RETRY", 0.1)
    async with parjobs.open_manager(store.path, workers=2) as m:
        handle = await pause_by_outage(m, store)
        before = tries[0]
        await trio.sleep(3.2)
        assert 4 <= tries[0] - before <= 8, tries[0] - before
        await end_outage(store)
        open(store.flag, "w").close()
        info = await run_to_end(m, handle.id)
    assert (info.status, info.runs) == (JobStatus.COMPLETED, 2)
    assert_each_task_ran_once(store.log)


@pytest.mark.parametrize("when", ["pausing", "paused"])
async def test_a_person_pause_during_a_store_outage_is_not_overridden(
    outage_store: OutageStore, autojump_clock: trio.abc.Clock, when: str
) -> None:
    """A person pauses the job while its failing store pauses it (``pausing``) or once it
    rests paused by the store, before its resume (``paused``): it stays paused, with no
    store error, long after the store works again; a resume then finishes it."""
    store = outage_store
    async with parjobs.open_manager(store.path, workers=2) as m:
        handle = await pause_by_outage(m, store)
        if when == "pausing":
            await m.pause(handle.id)  # the store is still locked
        await end_outage(store)
        assert await handle.wait() is JobStatus.PAUSED
        if when == "paused":
            assert (await m.get(handle.id)).error is not None  # the store's, for now
            await m.pause(handle.id)
        await trio.sleep(5 * HEAL_AFTER)  # well past the resume of a store-paused job
        info = await m.get(handle.id)
        assert (info.status, info.runs, info.error) == (JobStatus.PAUSED, 1, None)
        open(store.flag, "w").close()
        await m.resume(handle.id)
        info = await run_to_end(m, handle.id)
    assert (info.status, info.runs) == (JobStatus.COMPLETED, 2)
    assert_each_task_ran_once(store.log)


async def test_a_job_paused_by_its_store_is_resumed_by_the_next_resuming_manager(
    outage_store: OutageStore, autojump_clock: trio.abc.Clock
) -> None:
    """The manager that paused the job for its store closes before resuming it: the job is
    recovered as ``interrupted`` (nobody is left to resume it); a plain manager leaves it
    so (a CLI command must not run it), one opened with ``resume_interrupted`` resumes it
    with the other interrupted jobs."""
    store = outage_store
    async with parjobs.open_manager(store.path, workers=2) as m:
        handle = await pause_by_outage(m, store)
        await end_outage(store)
        assert await handle.wait() is JobStatus.PAUSED
    async with parjobs.open_manager(store.path, workers=2) as m:
        await trio.sleep(5 * HEAL_AFTER)
        info = await m.get(handle.id)
        assert info.status is JobStatus.INTERRUPTED and info.runs == 1
        assert "the process that was to resume it" in (info.error or "")
    open(store.flag, "w").close()
    async with parjobs.open_manager(store.path, workers=2, resume_interrupted=True) as m:
        info = await run_to_end(m, handle.id)
    assert (info.status, info.runs, info.error) == (JobStatus.COMPLETED, 2, None)
    assert_each_task_ran_once(store.log)


@pytest.mark.parametrize("outage_store", ["sqlite", "postgresql"], indirect=True)
async def test_a_worker_takes_over_a_store_paused_job_once_its_manager_is_gone(
    outage_store: OutageStore, autojump_clock: trio.abc.Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the manager its failing store paused the job in lives, the job is that
    manager's to resume (its lease): a worker on the store leaves it alone. Once that
    manager closes before the resume (here an hour away), the worker claims the job and
    runs it on from its checkpoint to its end, every task once."""
    store = outage_store
    monkeypatch.setattr(parjobs._housekeeping, "HEAL_AFTER", 3600.0)
    async with (
        parjobs.open_manager(store.path, workers=2) as worker,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(worker.work)
        async with parjobs.open_manager(store.path, workers=2) as m:
            handle = await pause_by_outage(m, store)
            await end_outage(store)
            assert await handle.wait() is JobStatus.PAUSED
            await trio.sleep(5)  # many claims by the worker
            info = await worker.get(handle.id)
            assert (info.status, info.runs, info.lease) == (JobStatus.PAUSED, 1, m.id)
        open(store.flag, "w").close()
        info = await run_to_end(worker, handle.id)
        nursery.cancel_scope.cancel()
    assert (info.status, info.runs, info.error) == (JobStatus.COMPLETED, 2, None)
    assert_each_task_ran_once(store.log)


@pytest.mark.parametrize(
    "damage",
    [
        "truncated",
        "garbage-pages",
        "garbage-header",
        "empty",
    ],
)
async def test_damaged_store_is_a_clear_error(tmp_path: Path, damage: str) -> None:
    store, _, _ = await make_store(tmp_path, n=2000)
    size = os.path.getsize(store)
    assert not os.path.exists(store + "-wal") or os.path.getsize(store + "-wal") == 0
    with open(store, "r+b") as f:
        if damage == "truncated":
            f.truncate(size // 2 + 100)
        elif damage == "garbage-pages":
            f.seek(4096)
            f.write(random.Random(1).randbytes(size - 4096))
        elif damage == "garbage-header":
            f.write(b"not a database at all")
        else:
            f.truncate(0)
    before = read(store)
    if damage == "empty":
        # A zero-length file is an empty SQLite database: the store starts over (the jobs it
        # held are gone with its bytes), it is not refused.
        async with parjobs.open_manager(store) as m:
            assert await m.list_jobs() == []
        return
    with pytest.raises(parjobs.StoreError) as caught:  # a plain error, not a group
        async with parjobs.open_manager(store) as m:
            await m.list_jobs()
    assert store in str(caught.value)
    assert read(store) == before  # refused without writing to it
    proc = forked_run(["jobs", "--store", store])
    assert proc.returncode == 2, proc
    assert proc.stderr.count("\n") == 1 and store in proc.stderr, proc.stderr


def outage_at_the_end(
    m: parjobs.JobManager, store: OutageStore, end: JobStatus = JobStatus.COMPLETED
) -> trio.Event:
    """Start an outage of ``store`` just as ``m`` records a job's end (its ``end`` status,
    completed by default, and result: the write after its last checkpoint; queued: a
    retry's requeue); the returned event is set then."""
    real = m._db
    began = trio.Event()

    async def db(fn: Any, *args: Any, **kwargs: Any) -> Any:
        ending = getattr(fn, "__name__", "") == "transition" and end in args
        if ending and not began.is_set():
            store.outages.append(await trio.to_thread.run_sync(store.begin))
            began.set()
        return await real(fn, *args, **kwargs)

    m._db = db  # type: ignore[method-assign]
    return began


@pytest.mark.parametrize("outage_store", ["sqlite", "postgresql"], indirect=True)
async def test_a_store_failing_as_a_job_ends_records_its_end_once_it_works(
    outage_store: OutageStore, autojump_clock: trio.abc.Clock
) -> None:
    """The store fails just as the job's end is recorded (its last checkpoint written, its
    completed status and result not yet): the manager waits for the store, trying again
    with a backoff, instead of failing; once the store works the job is completed, its
    result stored, in one run (every task once), its completion published once."""
    store = outage_store
    seen: list[JobStatus] = []

    async def follow(events: parjobs.EventSubscription) -> None:
        async for e in events:
            if e.kind is parjobs.EventKind.STATUS and e.status is not None:
                seen.append(e.status)

    async with (
        parjobs.open_manager(store.path, workers=2) as m,
        trio.open_nursery() as nursery,
    ):
        with m.events() as events:
            nursery.start_soon(follow, events)
            began = outage_at_the_end(m, store)
            handle = await m.submit(CountJob(n=50, log=store.log))
            with trio.fail_after(60):
                await began.wait()
            await trio.sleep(5)  # a few tries, backing off
            assert m.local_status(handle.id) is JobStatus.RUNNING
            await end_outage(store)
            with trio.fail_after(120):
                assert await handle.wait() is JobStatus.COMPLETED
            info = await m.get(handle.id)
            await trio.sleep(1)
            nursery.cancel_scope.cancel()
    assert (info.status, info.runs, info.error) == (JobStatus.COMPLETED, 1, None)
    assert info.result == {"done_this_run": 50, "runs": 1}
    assert sorted(read_log(store.log)) == list(range(50))
    assert seen.count(JobStatus.COMPLETED) == 1, seen


async def test_closing_as_a_job_waits_to_record_its_end_leaves_it_resumable(
    outage_store: OutageStore, autojump_clock: trio.abc.Clock
) -> None:
    """The manager closes while the job's end waits for a store that takes no writes: it
    tries once more at once, then `close` raises one `StoreError` promptly (not after its
    shutdown grace). Nothing recorded the job's end: once the store works, the next manager
    recovers it ``interrupted``, and a resume completes it from its last checkpoint (no
    task runs again) with its result."""
    store = outage_store
    raised: BaseException | None = None
    t0 = 0.0
    try:
        async with parjobs.open_manager(store.path, workers=2) as m:
            # The guard begins once the manager runs: while the store calls of
            # `open_manager` ran in threads (real time: long at load 17) it was the only
            # deadline, and the autojump clock went straight to it.
            with trio.fail_after(120):
                began = outage_at_the_end(m, store)
                handle = await m.submit(CountJob(n=50, log=store.log))
                await began.wait()
                await trio.sleep(10)  # backing off: the next try 5.5 s away
            t0 = trio.current_time()
    except BaseException as exc:
        raised = exc
    assert trio.current_time() - t0 < 2
    assert isinstance(raised, parjobs.StoreError), leaves(raised) if raised else raised
    await end_outage(store)
    async with parjobs.open_manager(store.path, resume_interrupted=True) as m:
        info = await run_to_end(m, handle.id)
    assert (info.status, info.runs) == (JobStatus.COMPLETED, 2)
    assert info.result == {"done_this_run": 0, "runs": 2}
    assert sorted(read_log(store.log)) == list(range(50))


async def test_a_cancel_as_a_paused_run_retries_its_end_cancels_the_job(
    outage_store: OutageStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A person pauses a job, the store fails as its paused end is written, comes back
    between two tries, and the person cancels the job then: the cancel wins (the job ends
    cancelled, cleaned up), it is neither lost to the paused end nor left ``cancelling``
    with nobody running it (the retried end found the job moved to cancelling, which may not
    become paused, and rested so here)."""
    monkeypatch.setattr(parjobs._runner, "STORE_RETRY", 1.0)  # the cancel comes first
    store = outage_store
    async with parjobs.open_manager(store.path, workers=2) as m:
        handle = await m.submit(CountJob(n=20, log=store.log, hold=store.flag, hold_from=5))
        with trio.fail_after(8):
            while logged(store.log) < 5:
                await trio.sleep(0.01)
            began = outage_at_the_end(m, store, JobStatus.PAUSED)
            await m.pause(handle.id)
            await began.wait()
            await trio.sleep(0.2)  # the first try failed: the next is 1 s away
            store.outages[-1].end()  # (not in a thread: the retry stays 1 s away)
            await m.cancel(handle.id)
            assert await handle.wait() is JobStatus.CANCELLED
        info = await m.get(handle.id)
    assert (info.status, info.lease, info.request) == (JobStatus.CANCELLED, None, None)


async def test_a_cancel_as_a_retry_is_requeued_cancels_the_job(
    outage_store: OutageStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job's attempt failed and its requeue (the retry policy's) meets a failing store that
    comes back between two tries; a person cancels the job then: it ends cancelled and the
    manager goes on (the retried requeue found the job cancelling, which may not be queued,
    and raised out of the manager), the job never attempted again."""
    monkeypatch.setattr(parjobs._runner, "STORE_RETRY", 1.0)
    store = outage_store
    name = f"requeue-cancel-{os.getpid()}-{time.monotonic()}"
    async with parjobs.open_manager(store.path, workers=2) as m:
        began = outage_at_the_end(m, store, JobStatus.QUEUED)
        handle = await m.submit(FlakyJob(name=name, failures=5))
        with trio.fail_after(8):
            await began.wait()
            await trio.sleep(0.2)
            store.outages[-1].end()
            await m.cancel(handle.id)
            assert await handle.wait() is JobStatus.CANCELLED
            await trio.sleep(0.5)  # past the retry policy's delay: nothing runs it again
        info = await m.get(handle.id)
    assert (info.status, info.lease, info.request) == (JobStatus.CANCELLED, None, None)
    assert FLAKY_ATTEMPTS[name] == 1


@pytest.mark.parametrize("how", ["resume", "resume_interrupted"])
async def test_a_cancel_whose_end_went_unrecorded_is_cancelled_not_run_again(
    outage_store: OutageStore, how: str
) -> None:
    """A person cancels a running job; its cleanup runs, but the store fails as its
    cancelled end is written and the manager closes (its end unrecorded). The next manager
    recovers it ``interrupted`` with the cancel pending: a resume (by hand or
    ``resume_interrupted``) finishes the cancel (the job ends cancelled), it does not run the
    job again after its cleanup (its held tasks would wait for good)."""
    store = outage_store
    with trio.fail_after(8):
        with pytest.raises(parjobs.StoreError):
            async with parjobs.open_manager(store.path, workers=2) as m:
                began = outage_at_the_end(m, store, JobStatus.CANCELLED)
                handle = await m.submit(CountJob(n=20, log=store.log, hold=store.flag, hold_from=5))
                while logged(store.log) < 5:
                    await trio.sleep(0.01)
                await m.cancel(handle.id)
                await began.wait()
        ran = logged(store.log)
        await end_outage(store)
        async with parjobs.open_manager(
            store.path, resume_interrupted=how == "resume_interrupted"
        ) as m:
            if how == "resume":
                info = await m.get(handle.id)
                assert (info.status, info.request) == (JobStatus.INTERRUPTED, "cancel")
                await m.resume(handle.id)
            assert await m.wait(handle.id) is JobStatus.CANCELLED
            info = await m.get(handle.id)
    assert (info.status, info.lease, info.request) == (JobStatus.CANCELLED, None, None)
    assert logged(store.log) == ran


async def test_an_end_retried_after_another_manager_ended_the_job_is_not_taken_as_its_own(
    outage_store: OutageStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store fails as manager A writes a job's completed end; meanwhile A counts as gone
    (as a host whose heartbeat aged does: here A's id in ``_leases.CLOSED``), and manager B
    recovers the job, resumes and completes it with its own result. A's retried write finds
    the job completed with no lease, as its own write would have left it: it must not take
    B's end for its own (A's waiters got A's result and a completion of A's run). A's run
    is lost; the store keeps B's end, written once."""
    monkeypatch.setattr(parjobs._runner, "STORE_RETRY", 1.0)
    store = outage_store
    async with parjobs.open_manager(store.path, workers=2) as a:
        began = outage_at_the_end(a, store)
        handle = await a.submit(CountJob(n=5, log=store.log))
        with trio.fail_after(8):
            await began.wait()
            await trio.sleep(0.2)  # the first try failed: the next is 1 s away
            parjobs._leases.CLOSED.add(a.id)
            try:
                store.outages[-1].end()
                async with parjobs.open_manager(store.path) as b:
                    await b.resume(handle.id)
                    assert await b.wait(handle.id) is JobStatus.COMPLETED
                    theirs = await b.get(handle.id)
                    ours = await a.wait(handle.id)  # (once A's run rested: the job was lost)
            finally:
                parjobs._leases.CLOSED.discard(a.id)
            assert ours is JobStatus.INTERRUPTED
            assert await a.get_rested(handle.id, JobStatus.COMPLETED) == theirs
    assert theirs.result == {"done_this_run": 0, "runs": 2}
    assert sorted(read_log(store.log)) == list(range(5))


@pytest.mark.parametrize("outage_store", ["sqlite", "postgresql"], indirect=True)
async def test_an_end_written_whose_answer_was_lost_is_recognized_once(
    outage_store: OutageStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The job's completed end is written but its answer lost (the connection failing as it
    committed: the manager sees a `StoreError`); the retry finds the job ended as its write
    left it (status, no lease, its run time read back exactly) and takes it as its own: the
    job completed once, with this run's result, its completion published once."""
    monkeypatch.setattr(parjobs._runner, "STORE_RETRY", 0.1)
    store = outage_store
    async with parjobs.open_manager(store.path, workers=2) as m:
        seen = lose_an_answer(m, "transition", JobStatus.COMPLETED)

        async def follow(events: parjobs.EventSubscription) -> None:
            async for e in events:
                if e.kind is parjobs.EventKind.STATUS and e.status is not None:
                    ended.append(e.status)

        ended: list[JobStatus] = []
        async with trio.open_nursery() as nursery:
            with m.events() as events:
                nursery.start_soon(follow, events)
                handle = await m.submit(CountJob(n=5, log=store.log))
                with trio.fail_after(8):
                    assert await handle.wait() is JobStatus.COMPLETED
                info = await m.get(handle.id)
                await trio.sleep(0.3)
                nursery.cancel_scope.cancel()
        assert await handle.result() == {"done_this_run": 5, "runs": 1}
    assert seen == [JobStatus.COMPLETED]
    assert (info.status, info.runs, info.lease) == (JobStatus.COMPLETED, 1, None)
    assert ended.count(JobStatus.COMPLETED) == 1, ended


@pytest.mark.parametrize("outage_store", ["sqlite", "postgresql"], indirect=True)
async def test_a_dependant_waits_for_its_prerequisites_end_to_be_recorded(
    outage_store: OutageStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job queued after another waits while its prerequisite's end is retried against a
    failing store (its scheduler's look at the store fails too: it tries again, the
    manager goes on), and starts once that end is recorded: never before, never twice.

    The prerequisite's last task waits for the flag file, made once the dependant is
    queued: free to end, it ended (and the outage began) before the dependant's submit
    under load, and that submit failed on the locked store (1 run in ~100 with -n 2)."""
    monkeypatch.setattr(parjobs._runner, "STORE_RETRY", 0.2)
    store = outage_store
    marks = str(tmp_path / "marks")
    async with parjobs.open_manager(store.path, workers=2) as m:
        began = outage_at_the_end(m, store)
        first = await m.submit(CountJob(n=5, log=store.log, hold=store.flag, hold_from=4))
        then = await m.submit(MarkJob(name="then", log=marks), after=[first.id])
        open(store.flag, "w").close()
        with trio.fail_after(20):
            await began.wait()
            await trio.sleep(1)  # a few tries of the end; the scheduler looks meanwhile
            assert m.local_status(first.id) is JobStatus.RUNNING
            assert m.local_status(then.id) is JobStatus.QUEUED
            assert not os.path.exists(marks)
            await end_outage(store)
            assert await then.wait() is JobStatus.COMPLETED
        assert await first.wait() is JobStatus.COMPLETED
        done = await m.get(first.id)
        started = await m.get(then.id)
    assert started.started is not None and done.finished is not None
    assert started.started >= done.finished
    with open(marks) as f:
        assert [line.split()[:2] for line in f] == [["start", "then"], ["end", "then"]]


async def test_closing_as_a_job_waits_out_its_retry_delay_is_prompt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The manager closes while a job's failed attempt waits out its retry policy's delay
    (queued again, not yet in the scheduler's queue): close returns at once, the job rests
    ``interrupted`` (close waited for good for a run that would never come), and a resume
    runs it on."""
    monkeypatch.setattr(FlakyJob, "retry", parjobs.RetryPolicy(initial_delay=30.0, jitter=0.0))
    store = str(tmp_path / "jobs.sqlite")
    name = f"close-in-delay-{os.getpid()}-{time.monotonic()}"
    with trio.fail_after(5):
        async with parjobs.open_manager(store) as m:
            handle = await m.submit(FlakyJob(name=name, failures=1))
            while FLAKY_ATTEMPTS.get(name, 0) < 1 or m.local_status(handle.id) is not (
                JobStatus.QUEUED
            ):
                await trio.sleep(0.01)
        async with parjobs.open_manager(store) as m:
            assert (await m.get(handle.id)).status is JobStatus.INTERRUPTED
            await m.resume(handle.id)
            assert await m.wait(handle.id) is JobStatus.COMPLETED
    assert FLAKY_ATTEMPTS[name] == 2


@pytest.mark.parametrize("steer", ["pause", "cancel"])
@pytest.mark.parametrize("outage_store", ["sqlite", "postgresql"], indirect=True)
async def test_a_queued_job_steered_while_the_store_fails_rests_once_it_works(
    outage_store: OutageStore, steer: str
) -> None:
    """A person pauses (or cancels) a job queued here while the store fails: the call
    waits for the store, as a run's end does, and the job rests paused (cancelled, cleaned
    up once) once the store works again (the call raised `StoreError` and left the job out
    of the queue and resting nowhere: it never ran, its waiters waited for good, and
    closing the manager hung)."""
    store = outage_store
    cleaned = os.path.join(os.path.dirname(store.log), "cleaned")
    with trio.fail_after(10):
        async with parjobs.open_manager(store.path) as m:
            first = await m.submit(CountJob(n=1, log=store.log), start=False)
            job = SlowCleanupJob(n=3, log=store.log, cleaned=cleaned)
            handle = await m.submit(job, after=[first.id])  # queued behind it
            store.outages.append(await trio.to_thread.run_sync(store.begin))
            refused: list[parjobs.StoreError] = []

            async def steer_it() -> None:
                try:
                    await (m.pause if steer == "pause" else m.cancel)(handle.id)
                except parjobs.StoreError as exc:
                    refused.append(exc)
                    m._live[handle.id].rest(JobStatus.INTERRUPTED)  # (or the close hangs)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(steer_it)
                await trio.sleep(0.3)
                await end_outage(store)
            assert refused == []
            status = await m.wait(handle.id)
            info = await m.get(handle.id)
    expected = JobStatus.PAUSED if steer == "pause" else JobStatus.CANCELLED
    assert (status, info.status, info.lease, info.request) == (expected, expected, None, None)
    with open(cleaned) if os.path.exists(cleaned) else open(os.devnull) as f:
        assert f.read() == ("" if steer == "pause" else "begin cancelled\nend\n")
    assert read_log(store.log) == []


@pytest.mark.both_stores
async def test_a_checkpoint_written_whose_answer_was_lost_is_recorded_once(
    store_path: str, tmp_path: Path
) -> None:
    """A checkpoint commits but its answer is lost (the connection failing as it committed:
    the manager sees a `StoreError`). Its batch was kept and written again with what came
    next, so its completions, bytes and item records were recorded twice (done 28 of 22,
    six files twice in the item log, for one lost batch of six). The retry finds its own
    mark in the store and writes nothing twice."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(40):
        (src / f"f{i:02}").write_bytes(b"x" * (i + 1))
    async with parjobs.open_manager(store_path, workers=2) as m:
        real = m._db
        lost: list[int] = []

        async def db(fn: Any, *args: Any, **kwargs: Any) -> Any:
            done = await real(fn, *args, **kwargs)
            if getattr(fn, "__name__", "") == "checkpoint" and not lost and args[1].items:
                lost.append(len(args[1].items))
                raise parjobs.StoreError("lost the answer of the job store")
            return done

        m._db = db  # type: ignore[method-assign]
        handle = await m.submit(CopyJob(sources=[str(src)], destination=str(tmp_path / "dst")))
        with trio.fail_after(30):
            assert await handle.wait() is JobStatus.COMPLETED
        info = await m.get(handle.id)
        items = await m.items(handle.id)
    assert lost and lost[0] > 0
    assert (info.done_items, info.done_bytes) == (42, sum(range(1, 41)))  # 40 files, 2 dirs
    assert sorted(r.source for r in items) == sorted({r.source for r in items})
    copied = sorted(os.path.basename(r.source) for r in items if r.action == "copied")
    assert copied == sorted(["src", *(f"f{i:02}" for i in range(40))])
