"""Several `parjobs worker` processes sharing one PostgreSQL store (issue 16): every queued
job runs exactly once, queue capacities hold across them, a killed worker's job is resumed
by another from its checkpoint, a pause sent through one process stops a job another runs;
and a store that cannot be used is a clear error (exit 2) with nothing touched."""

from __future__ import annotations

import filecmp
import os
import pathlib
import signal
import subprocess
import time

import psycopg
import pytest
from _forkcli import Forked
from _forkcli import run as forked_run
from _jobs import CountJob, MarkJob, logged, read_log

import parjobs
from parjobs import JobStatus
from parjobs._stores import open_store

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # tests/, for _jobs
#: `parjobs worker` (the CLI's main), with the tests' job types importable.
_MAIN = (
    "import sys; sys.path.insert(0, sys.argv.pop(1)); import _jobs; "
    "from parjobs.cli import main; sys.exit(main(sys.argv[1:]))"
)


def _worker(url: str, *args: str) -> Forked:
    return Forked([TESTS, "worker", "--store", url, *args], code=_MAIN)


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return forked_run([TESTS, *args], code=_MAIN, timeout=120, env=env)


def _write_tree(src: pathlib.Path, files: int, size: int) -> None:
    """Four directories of ``files`` random files of ``size`` bytes and a little more."""
    for d in range(4):
        (src / f"d{d}").mkdir(parents=True)
        for f in range(files):
            (src / f"d{d}" / f"f{f}").write_bytes(os.urandom(size + f))


def _until_checkpointed(url: str, job_id: str, items: int, worker: Forked) -> None:
    """Wait until the store shows ``items`` of the job done, while ``worker`` runs it."""
    deadline = time.monotonic() + 120
    store = open_store(url)
    try:
        while store.get(job_id).done_items < items:
            assert worker.poll() is None, "the worker ended before the job could be stopped"
            assert time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        store.close()


async def _completes_in_a_second_run(url: str, job_id: str, worker: Forked) -> None:
    """``worker`` (``--until-idle``) exits 0 having completed the job: resumed, not started
    over."""
    _, err = worker.communicate(timeout=300)
    assert worker.returncode == 0, err
    async with parjobs.open_manager(url) as manager:
        final = await manager.get(job_id)
    assert final.status is JobStatus.COMPLETED, final.error
    assert final.runs == 2


@pytest.mark.both_stores
async def test_four_workers_run_100_jobs_each_once_within_capacities(store_path, tmp_path):
    log = str(tmp_path / "log")
    names = [f"j{i}" for i in range(100)]
    async with parjobs.open_manager(store_path) as manager:
        for i, name in enumerate(names):
            queue = "compute" if i % 10 == 0 else "default"  # compute: capacity 1
            job = MarkJob(name=name, log=log, seconds=0.05 if queue == "compute" else 0.0)
            await manager.submit(job, queue=queue, detach=True)
        assert {i.status for i in await manager.list_jobs()} == {JobStatus.QUEUED}
    workers = [_worker(store_path, "--until-idle", "--jobs", "3") for _ in range(4)]
    for w in workers:
        _, err = w.communicate(timeout=300)
        assert w.returncode == 0, err
    with open(log) as f:
        lines = [line.split() for line in f.read().splitlines()]
    starts = [n for kind, n, _ in lines if kind == "start"]
    assert sorted(starts) == sorted(names)  # each exactly once
    assert len({pid for *_, pid in lines}) >= 2  # the work was shared
    running = {"compute": 0, "default": 0}
    peak = {"compute": 0, "default": 0}
    for kind, name, _ in lines:
        queue = "compute" if int(name[1:]) % 10 == 0 else "default"
        running[queue] += 1 if kind == "start" else -1
        peak[queue] = max(peak[queue], running[queue])
    assert peak["compute"] == 1  # capacity 1 held across the four workers
    async with parjobs.open_manager(store_path) as manager:
        infos = await manager.list_jobs()
    assert {i.status for i in infos} == {JobStatus.COMPLETED}
    assert {i.runs for i in infos} == {1}


@pytest.mark.both_stores
async def test_a_killed_workers_copy_is_resumed_by_another_byte_identical(store_path, tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    _write_tree(src, 250, 2048)
    dst.mkdir()  # an existing directory: the copy goes into it (dst/src), as cp -r does
    queued = _run(
        "copy", str(src), str(dst), "--verify", "-w", "1", "--detach", "--store", store_path
    )
    assert queued.returncode == 0, queued.stderr
    job_id = queued.stdout.strip()
    # 5 ms a file: the 850 files left take >= 4 s, so the kill lands mid-copy however late
    # (at full speed a loaded machine copied them all before the kill: COMPLETED).
    first = _slow_worker(store_path, "--until-idle", "-w", "1")
    _until_checkpointed(store_path, job_id, 150, first)  # well before the end
    first.send_signal(signal.SIGKILL)
    first.wait()
    async with parjobs.open_manager(store_path) as manager:
        interrupted = await manager.get(job_id)
    assert interrupted.status is JobStatus.INTERRUPTED  # recovered: its manager is dead
    assert interrupted.done_items > 0  # checkpointed before the kill
    await _completes_in_a_second_run(store_path, job_id, _worker(store_path, "--until-idle"))
    compare = filecmp.dircmp(src, dst / "src")
    assert not compare.left_only and not compare.right_only
    for d in range(4):
        match, mismatch, errors = filecmp.cmpfiles(
            src / f"d{d}", dst / "src" / f"d{d}", [f"f{f}" for f in range(250)], shallow=False
        )
        assert len(match) == 250 and not mismatch and not errors


@pytest.mark.both_stores
async def test_a_pause_through_one_process_stops_the_job_a_worker_runs(store_path, tmp_path):
    log = str(tmp_path / "log")
    async with parjobs.open_manager(store_path) as manager:
        handle = await manager.submit(CountJob(n=20_000, log=log, sleep=0.002), detach=True)
    worker = _worker(store_path, "--until-idle", "-w", "2")
    try:
        deadline = time.monotonic() + 60
        while logged(log) < 50:
            assert time.monotonic() < deadline and worker.poll() is None
            time.sleep(0.02)
        asked = time.monotonic()
        paused = _run("pause", handle.id, "--store", store_path)
        took = time.monotonic() - asked
        assert paused.returncode == 0, paused.stderr
        _, err = worker.communicate(timeout=60)  # nothing left for it: it exits
        assert worker.returncode == 0, err
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    async with parjobs.open_manager(store_path) as manager:
        info = await manager.get(handle.id)
    assert info.status is JobStatus.PAUSED
    assert 0 < info.done_items < 20_000
    assert took < 20  # the CLI's start-up included; the request itself lands in < 1 s


def _stderr_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


def test_unusable_postgresql_stores_are_clear_errors_with_nothing_touched(pg_server, tmp_path):
    env = {**os.environ, "PARJOBS_JOB_FILES": str(tmp_path / "files")}
    (tmp_path / "files").mkdir()
    good = pg_server.url(pg_server.create_db())
    assert _run("jobs", "--store", good, env=env).returncode == 0
    stopped = f"postgresql://parjobs:{pg_server.port}@127.0.0.1:1/db"
    cases = {
        "postgresql://parjobs@127.0.0.1:notaport/db": "invalid PostgreSQL store URL",
        f"postgresql://parjobs@127.0.0.1:{pg_server.port}": "names no database",
        stopped: "Connection refused",
        good.replace(":pj-secret@", ":wrong@"): "password authentication failed",
        pg_server.url("missing_db"): 'database "missing_db" does not exist',
    }
    for url, reason in cases.items():
        line = _stderr_line(_run("jobs", "--store", url, env=env))
        assert reason in line, line
        assert "wrong" not in line and str(pg_server.port) + "@" not in line  # no password
    # a database whose "parjobs" schema belongs to another application
    foreign = pg_server.create_db()
    pg_server.sql("CREATE SCHEMA parjobs; CREATE TABLE parjobs.invoices(n int)", db=foreign)
    line = _stderr_line(_run("worker", "--store", pg_server.url(foreign), env=env))
    assert "not a parjobs store" in line
    # a store written by a newer parjobs
    newer = pg_server.create_db()
    assert _run("jobs", "--store", pg_server.url(newer), env=env).returncode == 0
    pg_server.sql("UPDATE parjobs.meta SET value='99' WHERE key='schema_version'", db=newer)
    line = _stderr_line(
        _run(
            "copy",
            str(tmp_path / "files"),
            str(tmp_path / "x"),
            "--detach",
            "--store",
            pg_server.url(newer),
            env=env,
        )
    )
    assert "newer parjobs" in line
    with psycopg.connect(pg_server.url(foreign)) as conn:
        tables = conn.execute(
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_schema NOT IN ('pg_catalog', 'information_schema')"
        ).fetchall()
    assert tables == [("parjobs", "invoices")]  # nothing created beside it
    with psycopg.connect(pg_server.url(newer)) as conn:
        assert conn.execute("SELECT count(*) FROM parjobs.jobs").fetchone() == (0,)
        assert conn.execute(
            "SELECT value FROM parjobs.meta WHERE key='schema_version'"
        ).fetchone() == ("99",)
    assert not os.path.exists(tmp_path / "x")


@pytest.mark.both_stores
async def test_a_stopped_worker_hands_its_job_to_another(store_path, tmp_path):
    log = str(tmp_path / "log")
    async with parjobs.open_manager(store_path) as manager:
        handle = await manager.submit(CountJob(n=1000, log=log, sleep=0.002), detach=True)
    first = _worker(store_path, "-w", "2")
    deadline = time.monotonic() + 60
    while logged(log) < 100:
        assert time.monotonic() < deadline and first.poll() is None
        time.sleep(0.02)
    first.send_signal(signal.SIGTERM)  # a worker taken down for maintenance
    _, err = first.communicate(timeout=60)
    assert first.returncode == 0, err
    async with parjobs.open_manager(store_path) as manager:
        handed = await manager.get(handle.id)
    assert handed.status is JobStatus.INTERRUPTED and handed.lease is None
    assert 0 < handed.done_items < 1000
    second = _worker(store_path, "--until-idle", "-w", "2")
    _, err = second.communicate(timeout=300)
    assert second.returncode == 0, err
    async with parjobs.open_manager(store_path) as manager:
        final = await manager.get(handle.id)
    assert final.status is JobStatus.COMPLETED and final.runs == 2
    ran = read_log(log)
    assert sorted(ran) == list(range(1000))  # a clean stop checkpoints all: nothing redone


#: `parjobs worker` whose copies wait PARJOBS_TEST_COPY_LATENCY seconds per file (see
#: tests/server/_slow_copy.py), so a copy of a few hundred files can be paused midway.
_SLOW_MAIN = (
    "import sys; sys.path[:0] = sys.argv[1:3]; del sys.argv[1:3]; import _jobs, _slow_copy; "
    "from parjobs.cli import main; sys.exit(main(sys.argv[1:]))"
)


def _slow_worker(url: str, *args: str) -> Forked:
    server_tests = os.path.join(TESTS, "server")
    return Forked(
        [TESTS, server_tests, "worker", "--store", url, *args],
        code=_SLOW_MAIN,
        env={**os.environ, "PARJOBS_TEST_COPY_LATENCY": "0.005"},
    )


@pytest.mark.both_stores
async def test_resume_detach_queues_a_paused_copy_for_a_worker_nothing_redone(store_path, tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    names = [f"f{f}" for f in range(100)]
    _write_tree(src, 100, 1024)
    queued = _run("copy", str(src), str(dst), "-w", "1", "--detach", "--store", store_path)
    assert queued.returncode == 0, queued.stderr
    job_id = queued.stdout.strip()
    first = _slow_worker(store_path, "--until-idle", "-w", "1")
    _until_checkpointed(store_path, job_id, 40, first)
    store = open_store(store_path)
    try:
        assert store.request(job_id, "pause")  # as `parjobs pause` does, from here
    finally:
        store.close()
    _, err = first.communicate(timeout=60)  # nothing left for it: it exits
    assert first.returncode == 0, err
    # The files in place when it paused, by identity: a file copied again gets a new inode.
    before = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in dst.rglob("f*")}
    assert 0 < len(before) < 400
    resumed = _run("resume", job_id[:6], "--detach", "--store", store_path)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout == f"{job_id}\n"  # the whole id, and nothing ran here
    async with parjobs.open_manager(store_path) as manager:
        waiting = await manager.get(job_id)
    assert waiting.status is JobStatus.QUEUED and waiting.lease is None
    assert waiting.done_items >= len(before)  # its checkpoint kept
    second = _slow_worker(store_path, "--until-idle")
    await _completes_in_a_second_run(store_path, job_id, second)
    for path, identity in before.items():
        assert (path.stat().st_ino, path.stat().st_mtime_ns) == identity, path
    for d in range(4):
        match, mismatch, errors = filecmp.cmpfiles(
            src / f"d{d}", dst / f"d{d}", names, shallow=False
        )
        assert len(match) == 100 and not mismatch and not errors
