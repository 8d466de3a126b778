"""A worker's claim of the next job nobody holds (`JobStore.claim_next`), on both stores:
priority, queue capacities counted across managers, prerequisites, dead managers' jobs;
and PostgreSQL's wake-ups (LISTEN/NOTIFY) on status changes, never on checkpoints."""

from __future__ import annotations

import itertools
import os
import select
import signal
import socket
import subprocess
import sys
import time

import psycopg
import pytest
import trio
from _jobs import MarkJob

import parjobs
import parjobs._housekeeping
import parjobs._scheduler
from parjobs import JobStatus
from parjobs._pgstore import PgListener, PostgresStore
from parjobs._records import CheckpointBatch
from parjobs._status import STORE_PAUSED
from parjobs._stores import open_store

CAPS = {"default": 2, "compute": 1}


DIES = """
from parjobs._pgstore import PostgresStore
from parjobs._records import CheckpointBatch
from parjobs._status import STORE_PAUSED
from parjobs._stores import open_store
store = open_store({store!r})
store.register_manager("live")
assert store.claim_next("live", {{"default": 1}}).id == "j"
store.checkpoint("j", CheckpointBatch(ranges={{"s": [(0, 40)]}}, done_items=40), "live")
"""


@pytest.mark.both_stores
def test_claim_next_honours_priority_capacities_and_prerequisites(store_path):
    store = open_store(store_path)
    try:
        for m in ("m1", "m2"):
            store.register_manager(m)
        add = store.insert_job
        add("bad", "t", 1, "{}")
        assert store.claim_next("m1", CAPS).id == "bad"  # type: ignore[union-attr]
        store.transition("bad", JobStatus.FAILED, holder="m1", lease=None)
        add("low", "t", 1, "{}", priority=0)
        add("c1", "t", 1, "{}", priority=5, queue="compute")
        add("c2", "t", 1, "{}", priority=5, queue="compute")
        add("after-low", "t", 1, "{}", priority=9, after=["low"])
        add("after-bad", "t", 1, "{}", priority=8, after=["bad"])
        add("after-bad-run", "t", 1, "{}", priority=7, after=["bad"], dep_policy="run")
        add("mine", "t", 1, "{}", priority=10, lease="m2")  # held: never claimed by others
        add("elsewhere", "t", 1, "{}", priority=10, queue="unknown-here")

        def claim(manager: str) -> str | None:
            info = store.claim_next(manager, CAPS)
            assert info is None or (info.status is JobStatus.RUNNING and info.lease == manager)
            return None if info is None else info.id

        # after-low waits for low; after-bad is skipped on the way; run-anyway goes first
        assert claim("m1") == "after-bad-run"
        assert store.get("after-bad").status is JobStatus.SKIPPED
        assert "prerequisite job bad is failed" in (store.get("after-bad").error or "")
        assert claim("m2") == "c1"  # compute: capacity 1, now full across the managers
        assert claim("m1") == "low"  # default: 2 (after-bad-run and low), now full
        assert claim("m2") is None  # c2: compute is full; after-low: low not done
        store.transition("after-bad-run", JobStatus.COMPLETED, holder="m1", lease=None)
        store.transition("low", JobStatus.COMPLETED, holder="m1", lease=None)
        store.transition("c1", JobStatus.COMPLETED, holder="m2", lease=None)
        assert {claim("m2"), claim("m1")} == {"after-low", "c2"}
        assert store.get("after-low").runs == 1
        assert store.get("mine").status is JobStatus.QUEUED
        assert store.get("elsewhere").status is JobStatus.QUEUED
    finally:
        store.close()


@pytest.mark.both_stores
def test_claim_next_takes_over_a_dead_managers_job_and_keeps_its_checkpoint(store_path):
    store = open_store(store_path)
    try:
        store.insert_job("j", "t", 1, "{}")
        # another process claims it, checkpoints some of it and dies (no goodbye)
        subprocess.run([sys.executable, "-c", DIES.format(store=store_path)], check=True)
        assert store.get("j").status is JobStatus.RUNNING
        store.register_manager("heir")
        info = store.claim_next("heir", CAPS)
        assert info is not None and info.id == "j" and info.lease == "heir" and info.runs == 2
        assert store.completed_ranges("j") == {"s": [(0, 40)]}  # resumed, not restarted
        assert [m["id"] for m in store.managers()] == ["heir"]
        # a job left interrupted with a cancel pending is nobody's to run
        store.transition("j", JobStatus.INTERRUPTED, holder="heir", lease=None, request="cancel")
        assert store.claim_next("heir", CAPS) is None
    finally:
        store.close()


#: A manager claims the job, its failing store pauses it (recorded as `_finish` does: the
#: lease kept, its reservation to resume the job), and it dies before resuming it.
STORE_PAUSES_AND_DIES = """
from parjobs._status import JobStatus, STORE_PAUSED
from parjobs._stores import open_store
store = open_store({store!r})
store.register_manager("dying")
assert store.claim_next("dying", {{"default": 1}}).id == {job!r}
store.transition({job!r}, JobStatus.PAUSED, holder="dying", error=STORE_PAUSED + " (full)")
"""


@pytest.mark.both_stores
def test_claim_next_takes_a_store_paused_job_once_its_manager_is_gone(store_path):
    """A job resting paused by its failing store is its pausing manager's to resume while
    that manager lives (its lease); once it is gone (dead, or closed) the job is recovered
    as interrupted and a worker claims it, from its checkpoint. A person's pause meanwhile
    (it replaces the store's error) wins: that job is never claimed."""
    store = open_store(store_path)
    try:
        for job in ("live", "person"):
            store.insert_job(job, "t", 1, "{}")
        store.register_manager("healer")
        for job in ("live", "person"):
            assert store.claim_next("healer", CAPS).id == job  # type: ignore[union-attr]
            store.checkpoint(job, CheckpointBatch(ranges={"s": [(0, 5)]}, done_items=5), "healer")
            info = store.transition(
                job, JobStatus.PAUSED, holder="healer", error=f"{STORE_PAUSED} (busy)"
            )
            assert info.lease == "healer"
        # a person pauses one (from another process: the reservation is no bar)
        store.transition(
            "person",
            JobStatus.PAUSED,
            expect=JobStatus.PAUSED,
            manager="cli",
            lease=None,
            request=None,
            error=None,
        )
        store.register_manager("worker")
        assert store.claim_next("worker", CAPS) is None  # its manager lives: it resumes it
        store.insert_job("dead", "t", 1, "{}")
        code = STORE_PAUSES_AND_DIES.format(store=store_path, job="dead")
        subprocess.run([sys.executable, "-c", code], check=True)
        claimed = store.claim_next("worker", CAPS)
        assert claimed is not None and claimed.error is None
        assert (claimed.id, claimed.lease, claimed.runs) == ("dead", "worker", 2)
        store.unregister_manager("healer")  # closed before its resume
        assert store.recover() == ["live"]
        assert store.get("live").status is JobStatus.INTERRUPTED
        claimed = store.claim_next("worker", CAPS)
        assert claimed is not None and (claimed.id, claimed.runs) == ("live", 2)
        assert store.completed_ranges("live") == {"s": [(0, 5)]}  # resumed, not restarted
        assert store.claim_next("worker", {"default": 5}) is None
        person = store.get("person")
        assert (person.status, person.lease, person.error) == (JobStatus.PAUSED, None, None)
    finally:
        store.close()


def test_a_store_paused_jobs_reservation_yields_to_a_person(tmp_path):
    """The lease its pausing manager keeps on a job its failing store paused is only a
    reservation: another process's resume or cancel goes through (its cancel's lease then
    is a real one); a delete too."""
    store = open_store(tmp_path / "jobs.sqlite")
    try:
        store.register_manager("healer")
        for job in ("resumed", "cancelled", "deleted"):
            store.insert_job(job, "t", 1, "{}")
            store.claim_next("healer", CAPS)
            store.transition(job, JobStatus.PAUSED, holder="healer", error=f"{STORE_PAUSED} (x)")
        store.register_manager("cli")
        assert store.requeue("resumed", "cli").lease == "cli"
        taken = store.take("cancelled", "cli", JobStatus.PAUSED)
        assert (taken.lease, taken.error) == ("cli", None)  # no longer resumed by itself
        with pytest.raises(parjobs.LeaseError):  # the healer cannot take it back
            store.transition("cancelled", JobStatus.QUEUED, holder="healer")
        with pytest.raises(parjobs.LeaseError):
            store.take("cancelled", "healer", JobStatus.PAUSED)
        store.delete("deleted")
        assert [j.id for j in store.list_jobs()] == ["resumed", "cancelled"]
    finally:
        store.close()


def _drain(listener, timeout: float = 10.0) -> list[str]:
    got: list[str] = []
    while True:
        ready, _, _ = select.select([listener.fileno()], [], [], timeout)
        if not ready:
            return got
        got += listener.drain()
        timeout = 0.3  # then whatever else arrives promptly


def test_postgresql_wakes_listeners_on_status_changes_only(pg_url, tmp_path, monkeypatch):
    monkeypatch.setenv("PARJOBS_JOB_FILES", str(tmp_path))
    store, other = open_store(pg_url), open_store(pg_url)
    listener = store.listener()
    assert listener is not None
    try:
        other.register_manager("m")
        other.insert_job("j", "t", 1, "{}")
        assert _drain(listener) == ["j"]
        other.claim_next("m", CAPS)
        assert _drain(listener) == ["j"]
        for n in range(5):  # checkpoints: never a NOTIFY (it takes a global lock at commit)
            other.checkpoint("j", CheckpointBatch(ranges={"s": [(n, n + 1)]}, done_items=1), "m")
        assert _drain(listener, timeout=1.0) == []
        assert other.request("j", "pause") is True
        assert _drain(listener) == ["j"]
    finally:
        listener.close()
        store.close()
        other.close()


def test_sqlite_wakes_listeners_on_status_changes_only(tmp_path):
    store, other = open_store(tmp_path / "jobs.sqlite"), open_store(tmp_path / "jobs.sqlite")
    listener = store.listener()
    assert listener is not None  # a look at PRAGMA data_version every 50 ms
    try:
        other.register_manager("m")
        assert _drain(listener, timeout=0.5) == []  # a manager's row: no status changed
        other.insert_job("j", "t", 1, "{}")
        assert _drain(listener) == [""]  # SQLite does not say which job
        other.claim_next("m", CAPS)
        assert _drain(listener) == [""]
        for n in range(5):  # checkpoints commit too, but wake nobody
            other.checkpoint("j", CheckpointBatch(ranges={"s": [(n, n + 1)]}, done_items=1), "m")
        assert _drain(listener, timeout=0.5) == []
        other.transition("j", JobStatus.COMPLETED, holder="m", lease=None)
        assert _drain(listener) == [""]
    finally:
        listener.close()
        store.close()
        other.close()


async def _starts_at_once(store: str, log: str, listeners: list[int] | None = None) -> None:
    """Another manager queues a job for the workers: one of them starts it at once. The
    server pid of that manager's own LISTEN session (PostgreSQL) is added to ``listeners``."""
    async with parjobs.open_manager(store) as submitter:
        if listeners is not None:
            listeners.append(submitter._listener._raw.info.backend_pid)  # type: ignore[union-attr]
        handle = await submitter.submit(MarkJob(name="a", log=log), detach=True)
        with trio.fail_after(10):
            assert await submitter.wait(handle.id) is JobStatus.COMPLETED
        info = await submitter.get(handle.id)
    assert info.started is not None and info.started - info.created < 5


async def test_a_sqlite_worker_claims_a_job_another_connection_queued_at_once(
    tmp_path, monkeypatch
):
    """The poll a worker falls back on is made a minute long: only the wake-up can start
    the job in time."""
    monkeypatch.setattr(parjobs._scheduler, "DEPENDENCY_POLL", 60.0)
    store = str(tmp_path / "jobs.sqlite")
    log = str(tmp_path / "log")
    async with parjobs.open_manager(store) as worker, trio.open_nursery() as nursery:
        nursery.start_soon(worker.work)
        await trio.sleep(0.3)  # idle: its first look found nothing
        await _starts_at_once(store, log)
        nursery.cancel_scope.cancel()


@pytest.mark.both_stores
def test_claim_next_looks_past_a_long_run_of_blocked_jobs(store_path):
    store = open_store(store_path)
    try:
        store.register_manager("m")
        store.insert_job("first", "t", 1, "{}", priority=0)
        for n in range(250):  # waiting for "first": more than one page of candidates
            store.insert_job(f"w{n}", "t", 1, "{}", priority=5, after=["first"])
        info = store.claim_next("m", CAPS)
        assert info is not None and info.id == "first"
    finally:
        store.close()


def _listening(server, db: str) -> list[int]:
    """The pids of the sessions of database ``db`` that listen for the store's wake-ups."""
    import psycopg

    with psycopg.connect(server.url(), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND query = 'LISTEN parjobs'",
            (db,),
        ).fetchall()
    return [row[0] for row in rows]


async def test_a_postgresql_worker_listens_again_once_the_database_is_back(
    pg_server, tmp_path, monkeypatch
):
    """The worker's wake-up session (LISTEN) is ended and the database refuses connections:
    the worker tries again after 0.1 s (here), then twice as long each time (a few tries,
    not a busy loop), and listens again once it may. A job another process queues then
    starts at once, though the poll the worker falls back on is a minute long. Closing
    leaves no session behind. (Only lower bounds on time: a loaded machine makes each try
    slower, never sooner.)"""
    monkeypatch.setenv("PARJOBS_JOB_FILES", str(tmp_path / "job-files"))
    monkeypatch.setattr(parjobs._scheduler, "DEPENDENCY_POLL", 60.0)
    monkeypatch.setattr(parjobs._housekeeping, "LISTEN_RETRY", 0.1)
    tries: list[float] = []  # when each listener was asked for (in a thread: real time)
    real = PostgresStore.listener

    def counted(self: PostgresStore) -> object:
        tries.append(time.monotonic())
        return real(self)

    monkeypatch.setattr(PostgresStore, "listener", counted)
    db = pg_server.create_db()
    url, log = pg_server.url(db), str(tmp_path / "log")
    async with parjobs.open_manager(url) as worker, trio.open_nursery() as nursery:
        nursery.start_soon(worker.work)
        (first,) = await trio.to_thread.run_sync(_listening, pg_server, db)
        pg_server.sql(f"ALTER DATABASE {db} ALLOW_CONNECTIONS false")
        pg_server.sql(f"SELECT pg_terminate_backend({first})")
        with trio.fail_after(30):  # tries at ~0.1, 0.3, 0.7, 1.5 s after the loss
            while len(tries) < 5:
                await trio.sleep(0.05)
        gaps = [b - a for a, b in itertools.pairwise(tries[1:5])]
        assert all(gap >= 0.1 * 2 ** (k + 1) * 0.9 for k, gap in enumerate(gaps)), gaps
        # A session ends after its client is told (a terminated one, a closed one): wait
        # for the terminated one to be gone; then none listens (connections are refused).
        with trio.fail_after(20):
            while first in await trio.to_thread.run_sync(_listening, pg_server, db):
                await trio.sleep(0.05)
        assert await trio.to_thread.run_sync(_listening, pg_server, db) == []
        pg_server.sql(f"ALTER DATABASE {db} ALLOW_CONNECTIONS true")
        with trio.fail_after(20):
            while not await trio.to_thread.run_sync(_listening, pg_server, db):
                await trio.sleep(0.05)
        await _starts_at_once(url, log)
        nursery.cancel_scope.cancel()
    with trio.fail_after(20):  # the closed listener's session ends (under load: not at once)
        while await trio.to_thread.run_sync(_listening, pg_server, db):
            await trio.sleep(0.05)


def test_a_postgresql_listener_keeps_its_connection_alive_on_both_ends(
    pg_url, tmp_path, monkeypatch
):
    """The LISTEN connection asks for TCP keepalives (`KEEPALIVES`): its socket probes a
    silent server after 10 s, every 5 s, 3 times (the system's default waits 2 hours), and
    the server's session probes the listener so too."""
    monkeypatch.setenv("PARJOBS_JOB_FILES", str(tmp_path))
    store = open_store(pg_url)
    listener = store.listener()
    assert listener is not None
    try:
        with socket.socket(fileno=os.dup(listener.fileno())) as sock:
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
            got = [
                sock.getsockopt(socket.IPPROTO_TCP, option)
                for option in (socket.TCP_KEEPIDLE, socket.TCP_KEEPINTVL, socket.TCP_KEEPCNT)
            ]
        assert got == [10, 5, 3]
        shown = [
            listener._raw.execute(f"SHOW tcp_keepalives_{name}").fetchone()[0]  # type: ignore[attr-defined]
            for name in ("idle", "interval", "count")
        ]
        assert shown == ["10", "5", "3"]
    finally:
        listener.close()
        store.close()


def _slow_polled_db(pg_server, tmp_path, monkeypatch) -> tuple[str, str, str]:
    """A new database whose workers fall back on a minute-long poll (only a wake-up starts
    a job in time): its name, its URL, and a log for `_starts_at_once`."""
    monkeypatch.setenv("PARJOBS_JOB_FILES", str(tmp_path / "job-files"))
    monkeypatch.setattr(parjobs._scheduler, "DEPENDENCY_POLL", 60.0)
    db = pg_server.create_db()
    return db, pg_server.url(db), str(tmp_path / "log")


def _postgres_pid(server) -> int:
    with open(os.path.join(server.data, "postmaster.pid")) as f:
        return int(f.readline())


async def test_a_silent_postgresql_listener_is_replaced(pg_server, tmp_path, monkeypatch):
    """The worker's LISTEN session stops answering without closing its connection (its
    server process stopped: what a network black hole looks like from the client): after
    `LISTEN_CHECK` seconds of silence (0.2 s here) the worker asks it for an answer, gives
    up after `LISTEN_ANSWER` (0.3 s) and listens on a new connection: a job another process
    queues then starts at once, though the poll the worker falls back on is a minute
    long."""
    monkeypatch.setattr(parjobs._housekeeping, "LISTEN_RETRY", 0.1)
    monkeypatch.setattr(parjobs._housekeeping, "LISTEN_CHECK", 0.2)
    monkeypatch.setattr(parjobs._housekeeping, "LISTEN_ANSWER", 0.3)
    db, url, log = _slow_polled_db(pg_server, tmp_path, monkeypatch)
    async with parjobs.open_manager(url) as worker, trio.open_nursery() as nursery:
        nursery.start_soon(worker.work)
        await trio.sleep(0.5)  # a few pings answered: it stays
        (first,) = await trio.to_thread.run_sync(_listening, pg_server, db)
        os.kill(first, signal.SIGSTOP)
        try:
            with trio.fail_after(20):
                while await trio.to_thread.run_sync(_listening, pg_server, db) in ([first], []):
                    await trio.sleep(0.05)
            await _starts_at_once(url, log)
        finally:
            os.kill(first, signal.SIGCONT)
        nursery.cancel_scope.cancel()
    with trio.fail_after(20):  # the stopped session, resumed, finds its client gone
        while await trio.to_thread.run_sync(_listening, pg_server, db):
            await trio.sleep(0.05)


async def test_closing_a_manager_as_its_listener_reconnects_is_prompt(
    pg_server, tmp_path, monkeypatch
):
    """The manager's LISTEN session ends while the server accepts no new session (its
    postmaster stopped: a connection attempt hangs until the 10 s connect timeout); the
    manager closes as its new listener's connection is being made: it does not wait for
    that attempt, and the connection it makes once the server is back is closed at once
    (no session left)."""
    monkeypatch.setenv("PARJOBS_JOB_FILES", str(tmp_path / "job-files"))
    monkeypatch.setattr(parjobs._housekeeping, "LISTEN_RETRY", 0.1)
    db = pg_server.create_db()
    postmaster = _postgres_pid(pg_server)
    took = 0.0
    with psycopg.connect(pg_server.url(), autocommit=True) as admin:
        try:
            async with parjobs.open_manager(pg_server.url(db)) as m:
                (first,) = await trio.to_thread.run_sync(_listening, pg_server, db)
                os.kill(postmaster, signal.SIGSTOP)
                admin.execute("SELECT pg_terminate_backend(%s)", (first,))
                await trio.sleep(1)  # its new connection is under way (after 0.1 s)
                assert m._listener is None
                began = time.monotonic()
            took = time.monotonic() - began
        finally:
            os.kill(postmaster, signal.SIGCONT)
    assert took < 5, took  # (it waited the 10 s connect timeout)
    with trio.fail_after(20):
        while await trio.to_thread.run_sync(_listening, pg_server, db):
            await trio.sleep(0.05)


def test_a_postgresql_listener_loses_no_notification_to_its_pings(pg_url, tmp_path, monkeypatch):
    """Notifications that arrive while a ping (``LISTEN`` sent again) is in flight, before
    its answer, with it, or after it, are all drained, in order; a ping is sent once until
    answered, its answer read in full (the next ping is sent), and the session still
    listens afterwards."""
    monkeypatch.setenv("PARJOBS_JOB_FILES", str(tmp_path))
    store = open_store(pg_url)
    listener = store.listener()
    assert isinstance(listener, PgListener)
    try:
        with psycopg.connect(pg_url, autocommit=True) as other:

            def notify(*ids: str) -> None:
                for job_id in ids:
                    other.execute("SELECT pg_notify('parjobs', %s)", (job_id,))

            notify("a")
            assert listener.ping() is True
            notify("b", "c")
            assert listener.ping() is True  # in flight: not sent twice
            notify("d")
            assert _drain(listener) == ["a", "b", "c", "d"]
            assert listener._asked is False  # answered, read in full
            got: list[str] = []
            for n in range(30):  # pings and notifications interleaved, drained meanwhile
                listener.ping()
                notify(f"e{n}")
                got += listener.drain()
            deadline = time.monotonic() + 10
            while (len(got) < 30 or listener._asked) and time.monotonic() < deadline:
                select.select([listener.fileno()], [], [], 0.5)
                got += listener.drain()
            assert got == [f"e{n}" for n in range(30)]
            assert listener._asked is False
            notify("z")  # still listening
            assert _drain(listener) == ["z"]
    finally:
        listener.close()
        store.close()


async def test_a_pinged_postgresql_worker_hears_every_wake_up(pg_server, tmp_path, monkeypatch):
    """A worker's listener pinged all the time (a silence check every 10 ms, as a busy one
    is between notifications): jobs another process queues still start at once (the poll it
    falls back on is a minute long), and its session is never replaced."""
    monkeypatch.setattr(parjobs._housekeeping, "LISTEN_CHECK", 0.01)
    db, url, log = _slow_polled_db(pg_server, tmp_path, monkeypatch)
    async with parjobs.open_manager(url) as worker, trio.open_nursery() as nursery:
        nursery.start_soon(worker.work)
        await trio.sleep(0.3)
        first = await trio.to_thread.run_sync(_listening, pg_server, db)
        submitters: list[int] = []
        for _ in range(3):
            await _starts_at_once(url, log, submitters)
        # A closed session is listed until its server process has exited, a moment after
        # its client closed it (later under load: [first, a submitter's] was seen once).
        with trio.fail_after(20):
            while set(submitters) & set(await trio.to_thread.run_sync(_listening, pg_server, db)):
                await trio.sleep(0.05)
        listening = await trio.to_thread.run_sync(_listening, pg_server, db)
        assert listening == first, f"the submitters' were {submitters}"
        nursery.cancel_scope.cancel()
