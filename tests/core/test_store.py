"""The SQLite store: format checks and clear errors, checkpoints, damaged rows, read-only
files; who counts as alive (leases) is `test_leases.py`."""

from __future__ import annotations

import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import trio
from _forkcli import run as forked_run
from _jobs import CountJob

import parjobs
from parjobs import JobStatus
from parjobs._indexset import IndexSet, to_ranges


@pytest.mark.both_stores
async def test_idempotency_key_returns_the_existing_job(store_path, tmp_path):
    async with parjobs.open_manager(store_path) as m1, parjobs.open_manager(store_path) as m2:
        a = await m1.submit(CountJob(n=2, log=str(tmp_path / "l")), idempotency_key="k")
        b = await m2.submit(CountJob(n=2, log=str(tmp_path / "l")), idempotency_key="k")
        assert a.id == b.id
        await a.wait()
        assert len(await m1.list_jobs()) == 1


@pytest.mark.both_stores
async def test_list_with_status_filter(store_path, tmp_path):
    async with parjobs.open_manager(store_path) as manager:
        done = await manager.submit(CountJob(n=1, log=str(tmp_path / "l")))
        await done.wait()
        paused = await manager.submit(CountJob(n=1, log=str(tmp_path / "l")), start=False)
        assert [i.id for i in await manager.list_jobs(JobStatus.PAUSED)] == [paused.id]
        assert [i.id for i in await manager.list_jobs(JobStatus.COMPLETED)] == [done.id]
        assert len(await manager.list_jobs()) == 2
        with pytest.raises(parjobs.JobNotFoundError, match="no job with id 'nope'"):
            await manager.get("nope")


@pytest.mark.both_stores
def test_checkpoint_ranges_compact_and_round_trip(store_path):
    from parjobs._records import CheckpointBatch
    from parjobs._stores import open_store

    store = open_store(store_path)
    try:
        store.insert_job("j", "test-count", 1, '{"n": 1, "log": "x"}')
        expected = IndexSet()
        for batch_no in range(300):
            # every other index: gaps keep ranges from merging; then fill some gaps
            indices = [2 * (batch_no * 10 + k) for k in range(10)]
            if batch_no % 3 == 0:
                indices += [i + 1 for i in indices[:5]]
            for i in indices:
                expected.add(i)
            store.checkpoint(
                "j", CheckpointBatch(ranges={"s": to_ranges(indices)}, done_items=len(indices))
            )
        ranges = store.completed_ranges("j")["s"]
        assert IndexSet(ranges).ranges().__next__() == next(expected.ranges())
        assert list(IndexSet(ranges).ranges()) == list(expected.ranges())
        assert len(ranges) < 2 * len(list(expected.ranges())) + 300
        assert store.get("j").done_items == len(expected)
    finally:
        store.close()


@pytest.mark.both_stores
def test_a_result_written_by_a_transition_is_stored_not_read_back(store_path):
    """Finishing a job writes its result JSON and decodes none of it (a duplicates result
    is megabytes); `get` reads it, and a later transition that writes none returns it."""
    from parjobs._stores import open_store

    store = open_store(store_path)
    try:
        store.insert_job("j", "test-count", 1, "{}")
        store.transition("j", JobStatus.RUNNING)
        done = store.transition("j", JobStatus.COMPLETED, result='{"groups": [[1, 2]]}')
        assert done.status is JobStatus.COMPLETED and done.result is None
        assert store.get("j").result == {"groups": [[1, 2]]}
        again = store.transition("j", JobStatus.COMPLETED, error="noted")
        assert again.result == {"groups": [[1, 2]]} and again.error == "noted"
    finally:
        store.close()


# -- damaged rows, read-only stores, dead and live managers (issue 12) ---------------------


def _cli(*args: str, store: str) -> subprocess.CompletedProcess[str]:
    return forked_run([*args, "--store", store])


DAMAGE = {
    "binary spec": "spec=CAST(x'ff00fe61' AS TEXT)",
    "blob progress": "progress=x'00ff10'",
    "binary result": "result=CAST(x'c3' AS TEXT)",
    "bad status": "status='bogus'",
    "text as a number": "created='yesterday'",
    "prerequisites not a list": "after='5'",
}


def test_damaged_store_rows_are_skipped_and_named(store_path, tmp_path):
    """One damaged row per kind: ``jobs`` lists every other job (exit 0) with one warning
    line per damaged one; ``show`` of a damaged job is one clear error line (exit 2); the
    rows are left as they are. A damaged result is not read by ``jobs`` (it shows none:
    session 23), which lists that job; ``show`` names it."""

    async def make() -> list[str]:
        async with parjobs.open_manager(store_path) as m:
            handles = [
                await m.submit(CountJob(n=1, log=str(tmp_path / "l")), start=False)
                for _ in range(len(DAMAGE) + 1)
            ]
            return [h.id for h in handles]

    ids = trio.run(make)
    conn = sqlite3.connect(store_path)
    for job_id, change in zip(ids, DAMAGE.values(), strict=False):
        conn.execute(f"UPDATE jobs SET {change} WHERE id=?", (job_id,))
    conn.commit()
    conn.close()
    damaged, good = ids[:-1], ids[-1]
    bad_result = ids[list(DAMAGE).index("binary result")]
    unlisted = [i for i in damaged if i != bad_result]
    for _ in range(2):  # not "permanently" broken: the same answer every time
        proc = _cli("jobs", store=store_path)
        assert proc.returncode == 0, proc.stderr
        assert good in proc.stdout and bad_result in proc.stdout, proc.stdout
        assert not any(i in proc.stdout for i in unlisted), proc.stdout
        warnings = proc.stderr.splitlines()
        named = {line.split()[3] for line in warnings}
        assert named == set(unlisted) and len(warnings) == len(unlisted), proc.stderr
        for line in warnings:
            assert line.startswith("parjobs: warning: job ") and " is damaged" in line, line
            assert line.isprintable(), line
    for job_id in damaged:
        proc = _cli("show", job_id, store=store_path)
        assert proc.returncode == 2, proc
        assert proc.stderr.startswith(f"parjobs: error: job {job_id} is damaged in the store")
        assert proc.stderr.count("\n") == 1 and proc.stderr[:-1].isprintable(), proc.stderr
    assert _cli("show", good, store=store_path).returncode == 0


@pytest.mark.parametrize("held", [False, True], ids=["alone", "held-open-elsewhere"])
def test_store_in_a_read_only_directory_is_not_called_locked(held):
    """A store whose directory this user may not write (SQLite must create its -wal and
    -shm there) is reported as that, with the path, not as "locked by another process";
    also while another process has it open (its -wal and -shm exist, read-only too)."""
    if os.geteuid() != 0:
        pytest.skip("needs root, to run parjobs as uid 65534 in a directory it cannot write")
    area = Path(tempfile.mkdtemp(prefix="parjobs-ro-", dir="/tmp"))
    store_dir = area / "state"
    store = str(store_dir / "jobs.sqlite")
    try:
        os.chmod(area, 0o755)
        store_dir.mkdir()
        trio.run(_one_job, store, str(area / "log"))
        os.chown(store_dir, 65534, 65534)
        os.chown(store, 65534, 65534)
        holder = None
        if held:
            os.chmod(store, 0o444)
            holder = sqlite3.connect(store)
            holder.execute("PRAGMA journal_mode=WAL")
            holder.execute("UPDATE jobs SET updated=updated")
            holder.commit()
        os.chmod(store_dir, 0o555)
        before = Path(store).read_bytes()
        proc = subprocess.run(
            [sys.executable, "-c", _AS_NOBODY, "jobs", "--store", store],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if holder is not None:
            holder.close()
        assert Path(store).read_bytes() == before
    finally:
        os.chmod(store_dir, 0o755)
        shutil.rmtree(area)
    assert proc.returncode == 2, proc
    assert "locked" not in proc.stderr, proc.stderr
    assert "read-only" in proc.stderr and str(store_dir) in proc.stderr, proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr


# Runs the CLI as uid 65534: imports first (as root, who can read this checkout), then drops.
_AS_NOBODY = """
import os, sys
import encodings.ascii, encodings.latin_1, encodings.utf_8, shutil, traceback
import rich.console, rich.live, rich.progress
import parjobs.cli, parjobs.cli._app, parjobs.cli._commands, parjobs.cli._manage, parjobs.ops
os.setgroups([]); os.setgid(65534); os.setuid(65534)
sys.exit(parjobs.cli.main(sys.argv[1:]))
"""


async def _one_job(store: str, log: str) -> None:
    async with parjobs.open_manager(store) as m:
        await (await m.submit(CountJob(n=1, log=log))).wait()


def test_a_new_store_is_private_to_its_user_and_an_old_one_keeps_its_mode(tmp_path) -> None:
    """The store holds paths and job specs: created 0600 whatever the umask (its -wal and
    -shm files take the same mode); a store that exists is never chmodded behind its user."""
    from parjobs._store import SQLiteJobStore

    old_umask = os.umask(0o022)
    try:
        store = SQLiteJobStore.open(tmp_path / "new.sqlite")
        store.close()
        shared = tmp_path / "shared.sqlite"
        shared.touch(mode=0o640)
        os.chmod(shared, 0o640)
        SQLiteJobStore.open(shared).close()
    finally:
        os.umask(old_umask)
    for name in ("new.sqlite", "new.sqlite-wal", "new.sqlite-shm"):
        if (tmp_path / name).exists():
            assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, name
    assert stat.S_IMODE(shared.stat().st_mode) == 0o640


def test_a_store_made_here_runs_as_one_made_elsewhere(tmp_path) -> None:
    """A store file this process creates gets its schema without fsyncs (nothing in it to
    lose yet) and then runs as any other: WAL, ``synchronous=NORMAL``, foreign keys, the
    same tables as a store whose empty file someone else made (the checked path)."""
    from parjobs._store import SQLiteJobStore
    from parjobs._store_schema import APPLICATION_ID, SCHEMA_VERSION

    pragmas = ("journal_mode", "synchronous", "foreign_keys", "application_id", "user_version")

    def looks(store: SQLiteJobStore) -> tuple[object, ...]:
        conn = store._conn
        tables = conn.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name")
        return (*(conn.execute(f"PRAGMA {p}").fetchone()[0] for p in pragmas), tables.fetchall())

    (tmp_path / "theirs.sqlite").touch()
    mine = SQLiteJobStore.open(tmp_path / "mine.sqlite")
    theirs = SQLiteJobStore.open(tmp_path / "theirs.sqlite")
    try:
        assert looks(mine) == looks(theirs)
        assert looks(mine)[:5] == ("wal", 1, 1, APPLICATION_ID, SCHEMA_VERSION)
    finally:
        mine.close()
        theirs.close()
    again = SQLiteJobStore.open(tmp_path / "mine.sqlite")  # every check of an existing store
    again.close()


async def test_idempotency_key_reused_for_another_job_is_a_conflict(store_path, tmp_path):
    """It used to hand back the old job silently: a different spec must raise, naming the
    key and the job; another owner's job is not named. Nothing new is stored."""
    log = str(tmp_path / "l")
    async with parjobs.open_manager(store_path) as manager:
        a = await manager.submit(CountJob(n=2, log=log), idempotency_key="k", owner="alice")
        with pytest.raises(parjobs.IdempotencyConflictError, match=f"'k'.*job {a.id}.*spec"):
            await manager.submit(CountJob(n=3, log=log), idempotency_key="k", owner="alice")
        with pytest.raises(parjobs.IdempotencyConflictError, match="another owner") as info:
            await manager.submit(CountJob(n=2, log=log), idempotency_key="k", owner="bob")
        assert a.id not in str(info.value)
        same = await manager.submit(CountJob(n=2, log=log), idempotency_key="k", owner="alice")
        assert same.id == a.id
        await a.wait()
        assert [i.id for i in await manager.list_jobs()] == [a.id]
        assert (await manager.get(a.id)).spec_data == {
            "n": 2,
            "log": log,
            "sleep": 0.0,
            "fail_every": 0,
            "chunks": 1,
            "stamp": False,
            "hold": "",
            "hold_from": 0,
            "gate": "",
            "gate_from": 0,
        }


async def test_a_failed_task_keeps_its_traceback_in_the_store_and_the_debug_log(
    store_path, tmp_path, caplog
):
    """A failed task kept no traceback anywhere: it is stored with the item's error (and
    paged by `errors`), logged at DEBUG on ``parjobs.tasks``, and left out of the progress
    snapshots (20 tracebacks in every stored snapshot would be heavy)."""
    caplog.set_level("DEBUG", logger="parjobs.tasks")
    async with parjobs.open_manager(store_path) as manager:
        handle = await manager.submit(CountJob(n=4, log=str(tmp_path / "l"), fail_every=2))
        assert await handle.wait() is JobStatus.COMPLETED_WITH_ERRORS
        errors = await manager.errors(handle.id)
        info = await handle.info()
    assert sorted(e.index for e in errors) == [0, 2]
    for e in errors:
        assert e.traceback.startswith("Traceback (most recent call last):")
        assert "in run\n" in e.traceback  # AppendIndex.run, where it raised
        assert e.traceback.rstrip().endswith(f"ValueError: item {e.index} is bad")
    assert all(e.traceback == "" for e in info.progress.recent_errors)
    logged = [r.getMessage() for r in caplog.records if r.name == "parjobs.tasks"]
    assert len(logged) == 2 and all("Traceback (most recent call last)" in m for m in logged)
