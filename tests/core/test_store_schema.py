"""The SQLite store file's format guards (`parjobs._store_schema`): a file that is not a
parjobs store (foreign, corrupt, truncated, a FIFO or a device) is refused with a clear error
and left untouched; a store from an older parjobs gains what it lacks."""

from __future__ import annotations

import os
import sqlite3
import stat

import pytest
import trio
from _jobs import CountJob
from _pg import store_sql

import parjobs


async def test_foreign_and_corrupt_store_files_give_clear_errors(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello, I am not a database\n" * 10)
    with pytest.raises(parjobs.StoreFormatError, match="not a parjobs store"):
        async with parjobs.open_manager(text):
            pass
    foreign = tmp_path / "other.sqlite"
    conn = sqlite3.connect(foreign)
    conn.execute("CREATE TABLE photos(id INTEGER)")
    conn.commit()
    conn.close()
    with pytest.raises(parjobs.StoreFormatError, match="another application"):
        async with parjobs.open_manager(foreign):
            pass
    assert foreign.stat().st_size > 0  # untouched
    with pytest.raises(parjobs.StoreFormatError, match="is a directory"):
        async with parjobs.open_manager(tmp_path):
            pass


@pytest.mark.parametrize("kind", ["fifo", "char-device"])
async def test_store_that_is_not_a_regular_file_is_refused_before_sqlite_opens_it(tmp_path, kind):
    """A FIFO used to hang the open; a device got "disk I/O error" and a -journal beside it.
    Made in tmp_path: never the real /dev nodes."""
    path = tmp_path / "store"
    if kind == "fifo":
        os.mkfifo(path)
    elif os.geteuid() != 0:
        pytest.skip("mknod of a character device needs root")
    else:
        os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 3))
    what = "a FIFO" if kind == "fifo" else "a character device"
    with trio.fail_after(10):
        with pytest.raises(parjobs.StoreFormatError, match=f"is {what}, not a parjobs store"):
            async with parjobs.open_manager(path):
                pass
    assert os.listdir(tmp_path) == ["store"]  # no -journal, -wal or -shm beside it


async def test_truncated_store_gives_clear_error(store_path, tmp_path):
    async with parjobs.open_manager(store_path) as manager:
        await (await manager.submit(CountJob(n=3, log=str(tmp_path / "l")))).wait()
    with open(store_path, "rb") as f:
        data = f.read()
    with open(store_path, "wb") as f:
        f.write(data[:100] + b"\x00garbage" * 100)
    for suffix in ("-wal", "-shm"):
        assert not os.path.exists(store_path + suffix)
    with pytest.raises(parjobs.StoreError):
        async with parjobs.open_manager(store_path):
            pass


def test_a_store_from_before_tracebacks_gains_the_column(tmp_path):
    from parjobs._store import SQLiteJobStore

    path = str(tmp_path / "old.sqlite")
    SQLiteJobStore.open(path).close()
    conn = sqlite3.connect(path)
    conn.execute("ALTER TABLE task_errors DROP COLUMN traceback")  # as an older parjobs made it
    conn.execute(
        "INSERT INTO task_errors(job_id, stage, idx, label, error, message, at) "
        "VALUES ('j', 'default', 3, 'x', 'OSError', 'gone', 0)"
    )
    conn.commit()
    conn.close()
    store = SQLiteJobStore.open(path)
    try:
        (error,) = store.errors("j")
        assert (error.index, error.message, error.traceback) == (3, "gone", "")
    finally:
        store.close()


@pytest.mark.both_stores
def test_a_jobs_undos_are_found_without_reading_every_job(store_path):
    """`JobManager.delete` looks up the job's undos (`list_jobs` of type ``undo``) once per
    job, so a ``jobs prune`` read the whole jobs table for each job it deleted: 46,000 jobs
    took 27 ms each (~20 min; 0.9 ms with the index). A store an older parjobs made, without
    the ``jobs_type`` index, gains it when opened; on SQLite the lookup runs a few VM
    instructions among 2,000 other jobs, not a scan of them (~0.2 s)."""
    from parjobs._stores import open_store

    pg = store_path.startswith("postgresql://")
    open_store(store_path).close()
    store_sql(store_path, "DROP INDEX IF EXISTS jobs_type")  # as an older parjobs left it
    store_sql(
        store_path,
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000) "
        "INSERT INTO jobs(id, type, version, spec, status, created, updated) "
        "SELECT 'j' || i, 'copy', 1, '{}', 'completed', i, i FROM n",
    )
    store = open_store(store_path)
    try:
        if pg:
            names = store_sql(store_path, "SELECT indexname FROM pg_indexes WHERE tablename='jobs'")
            assert ("jobs_type",) in names
        else:
            steps = []
            store._conn.set_progress_handler(lambda: steps.append(1), 100)  # type: ignore[attr-defined]
            assert store.list_jobs(type="undo", results=False) == []
            store._conn.set_progress_handler(None, 0)  # type: ignore[attr-defined]
            assert len(steps) < 10, f"{len(steps) * 100} VM steps: the jobs table was scanned"
        assert len(store.list_jobs(type="copy", results=False)) == 2000
    finally:
        store.close()


def test_a_listing_without_results_does_not_read_them(tmp_path):
    """``results=False`` (`JobQuery`) reads no job's result from the file: a duplicates
    job's is megabytes of JSON, which ``parjobs jobs`` and the event stream's poll read and
    then left undecoded."""
    from parjobs._store import SQLiteJobStore

    store = SQLiteJobStore.open(str(tmp_path / "s.sqlite"))
    try:
        store.insert_job("a", "t", 1, "{}")
        read: list[str] = []

        def authorize(action: int, table: object, column: object, *_: object) -> int:
            if action == sqlite3.SQLITE_READ and table == "jobs":
                read.append(str(column))
            return sqlite3.SQLITE_OK

        store._conn.set_authorizer(authorize)
        (info,) = store.list_jobs(results=False)
        assert info.id == "a" and info.result is None
        assert "status" in read and "result" not in read
        read.clear()
        store.list_jobs()
        assert "result" in read
    finally:
        store._conn.set_authorizer(None)
        store.close()
