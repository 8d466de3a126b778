"""Who counts as alive (`parjobs._leases`): the liveness rule for the managers that share a
store, checked against real processes (stopped, reused pids, zombies) and other hosts."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time

import pytest
from _pg import store_sql as _sql


def test_a_manager_is_dead_only_when_its_process_is(store_path, monkeypatch):
    """On this host a manager is alive exactly while its process is: a stale heartbeat (a
    process stopped with Ctrl-Z) does not make it dead, a pid now used by another process
    (another start time) does. On another host, a stale heartbeat does."""
    from parjobs import _leases
    from parjobs._store import SQLiteJobStore

    monkeypatch.setenv("PARJOBS_LEASE_TIMEOUT", "0.5")
    store = SQLiteJobStore.open(store_path)
    zombie = subprocess.Popen(["sleep", "60"])
    try:
        for name in ("stopped", "reused", "remote", "remote-fresh", "zombie"):
            store.register_manager(name)
        zombie.kill()  # killed, not yet reaped: a zombie whose pid still answers kill(0)
        while (_leases._proc_stat(zombie.pid) or [b""])[0] != b"Z":
            time.sleep(0.01)
        conn = sqlite3.connect(store_path)
        conn.execute("UPDATE managers SET pid=? WHERE id='zombie'", (zombie.pid,))
        old = time.time() - 3600
        conn.execute("UPDATE managers SET heartbeat=?", (old,))
        reused = f"{_leases.boot_id()}:1"  # this boot, another start time: a reused pid
        conn.execute("UPDATE managers SET pid_start=? WHERE id='reused'", (reused,))
        conn.execute("UPDATE managers SET host='elsewhere' WHERE id LIKE 'remote%'")
        conn.execute("UPDATE managers SET heartbeat=? WHERE id='remote-fresh'", (time.time(),))
        conn.commit()
        conn.close()
        with store._tx() as c:
            dead = _leases.dead_managers(c)
        assert dead == {"reused", "remote", "zombie"}
    finally:
        zombie.wait()
        store.close()


#: A manager of another host, set up by ``{patch}``: it registers, claims job "j" and dies
#: (no unregister), as a host that loses its power would.
OTHER_HOST = """
import os, socket, time
import parjobs._store
{patch}
from parjobs._stores import open_store
store = open_store({url!r})
store.register_manager("farm-2")
store.heartbeat("farm-2")
assert store.claim_next("farm-2", {{"default": 1}}).id == "j"
os._exit(0)
"""


def past_a_short_lease_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the lease timeout 0.2 s (from the test's 2 s or more) and wait past it. The
    checks before it that a live manager keeps its jobs ran with the longer one, so that a
    slow child's fresh heartbeat was not taken for stale; the takeover needs only a
    heartbeat older than the timeout, and `lease_timeout` reads the setting at each
    judgement: 0.3 s here, not 2.5 s."""
    monkeypatch.setenv("PARJOBS_LEASE_TIMEOUT", "0.2")
    time.sleep(0.3)


def _held_then_taken_over(url: str, patch: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A job claimed by a manager of another host (``patch`` makes it one) stays with it
    while its heartbeat is fresh (the lease timeout is 2 s), and is taken over once it is
    older than the lease timeout (`past_a_short_lease_timeout`)."""
    from parjobs._stores import open_store

    store = open_store(url)
    try:
        store.register_manager("here")
        store.insert_job("j", "t", 1, "{}")
        code = OTHER_HOST.format(patch=patch, url=url)
        subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
        # Just now, farm-2's heartbeat is fresh: its job stays with it.
        (farm,) = [m for m in store.managers() if m["id"] == "farm-2"]
        assert farm["alive"] and farm["heartbeat_age"] < 2
        assert store.claim_next("here", {"default": 1}) is None
        assert store.get("j").lease == "farm-2"
        past_a_short_lease_timeout(monkeypatch)  # farm-2 is dead, its job taken over
        taken = store.claim_next("here", {"default": 1})
        assert taken is not None and taken.id == "j" and taken.lease == "here"
    finally:
        store.close()


@pytest.mark.parametrize("skew", [-120.0, 3600.0])
def test_heartbeats_on_postgresql_are_judged_by_the_databases_clock(pg_url, monkeypatch, skew):
    """Managers on several hosts judge each other's heartbeats: by one clock, the
    database's. A host whose clock was two minutes behind had its jobs taken while it ran
    them (its fresh heartbeat looked 120 s old: a job run in two places); one an hour ahead
    that died kept its jobs for an hour (its last heartbeat looked fresh till then)."""
    monkeypatch.setenv("PARJOBS_LEASE_TIMEOUT", "2")
    patch = f"real = time.time\ntime.time = lambda: real() + {skew}\n"
    _held_then_taken_over(pg_url, patch + 'socket.gethostname = lambda: "farm-2"', monkeypatch)


@pytest.mark.parametrize("where", ["finished behind", "retained ahead"])
async def test_the_retention_reckons_by_the_databases_clock(pg_url, monkeypatch, where):
    """The retention (7 days here) compared a job's end, written by the clock of the host
    that ended it, with the clock of the host that swept: on PostgreSQL, hosts whose
    clocks disagree by 10 days deleted a job that had just ended (a completed copy's record,
    which its undo needs; a failed one's partials, by its cleanup). Both are the database
    server's clock now (`JobStore.now`). The hosts are this process, its ``time.time``
    10 days off while it plays one."""
    import parjobs
    from parjobs import JobStatus
    from parjobs._stores import open_store

    real = time.time
    ten_days = 10 * 86400
    finish, retain = (-ten_days, 0) if where == "finished behind" else (0, ten_days)
    store = open_store(pg_url)
    try:
        store.insert_job("j", "t", 1, "{}")
        monkeypatch.setattr(time, "time", lambda: real() + finish)
        store.register_manager("farm-2")
        claimed = store.claim_next("farm-2", {"default": 1})
        assert claimed is not None and claimed.id == "j"
        store.transition("j", JobStatus.COMPLETED, holder="farm-2")
        store.unregister_manager("farm-2")
    finally:
        monkeypatch.setattr(time, "time", real)
        store.close()
    monkeypatch.setattr(time, "time", lambda: real() + retain)
    async with parjobs.open_manager(pg_url, retention=7 * 86400) as m:
        kept = [info.id for info in await m.list_jobs()]
        purged = await m.purge_expired()
    monkeypatch.setattr(time, "time", real)
    assert (kept, purged) == (["j"], [])


@pytest.mark.both_stores
def test_a_host_of_the_same_name_is_judged_by_its_heartbeat(store_path, monkeypatch):
    """Two machines with one hostname (cloned VMs, a default name): a manager of the other
    was taken for one of this machine, whose pid was not running here, and its jobs taken
    while it ran them. The boot id recorded with its pid tells the machines apart: a
    manager booted elsewhere is judged by its heartbeat, as another host's."""
    monkeypatch.setenv("PARJOBS_LEASE_TIMEOUT", "2")
    patch = 'parjobs._store.process_start = lambda pid: "0f0f0f0f-another-machine:4242"'
    _held_then_taken_over(store_path, patch, monkeypatch)


#: A manager in its own pid namespace (``unshare --pid``) on this host: it registers, claims
#: job "j", leaves job "h" to the test's live manager, and runs (heartbeating) until its stdin
#: closes.
IN_NAMESPACE = """
import sys, time, threading
from parjobs._stores import open_store
store = open_store(sys.argv[1])
store.register_manager("in-ns")
first = store.claim_next("in-ns", {"default": 5})
second = store.claim_next("in-ns", {"default": 5})
print(first and first.id, second and second.id, flush=True)
threading.Thread(target=sys.stdin.read, daemon=True).start()
while threading.active_count() > 1:
    store.heartbeat("in-ns")
    time.sleep(0.1)
"""


@pytest.mark.both_stores
def test_a_manager_in_another_pid_namespace_is_judged_by_its_heartbeat(store_path, monkeypatch):
    """Two managers of one host (hostname and boot id) in different pid namespaces (a
    container that shares the host's name, ``unshare --pid``): each judged the other by a
    pid that is not its own namespace's, found it dead at once and took its jobs while it
    ran them. The pid namespace recorded at registration tells them apart: a manager of
    another namespace is judged by its heartbeat, as another host's."""
    from parjobs import LeaseError
    from parjobs._stores import open_store

    unshare = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"]
    try:
        subprocess.run([*unshare, "true"], check=True, capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"cannot make a pid namespace here (unshare --pid): {exc}")
    # Long enough for the live checks under load: "here" never heartbeats, and a child
    # started slowly (load 20: over 2 s) took it for dead by its heartbeat and "h" with it.
    monkeypatch.setenv("PARJOBS_LEASE_TIMEOUT", "30")
    store = open_store(store_path)
    child = None
    try:
        store.register_manager("here")
        store.insert_job("h", "t", 1, "{}")
        claimed = store.claim_next("here", {"default": 5})
        assert claimed is not None and claimed.id == "h"
        store.insert_job("j", "t", 1, "{}")
        child = subprocess.Popen(
            [*unshare, sys.executable, "-c", IN_NAMESPACE, store_path],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None and child.stdin is not None
        # In its namespace, "here" (this process) is alive: it took "j" only, not "h".
        assert child.stdout.readline().split() == ["j", "None"]
        # Here, "in-ns" is alive while it runs, though its pid is not this namespace's.
        (in_ns,) = [m for m in store.managers() if m["id"] == "in-ns"]
        assert in_ns["alive"]
        assert store.claim_next("here", {"default": 5}) is None
        assert store.get("j").lease == "in-ns"
        with pytest.raises(LeaseError, match=r"\(pid \d+ in another pid namespace\)"):
            store.requeue("j", "here")
        child.stdin.close()
        assert child.wait(timeout=60) == 0
        past_a_short_lease_timeout(monkeypatch)  # "in-ns" is dead, its job taken over
        taken = store.claim_next("here", {"default": 5})
        assert taken is not None and taken.id == "j" and taken.lease == "here"
    finally:
        if child is not None and child.poll() is None:
            child.kill()
            child.wait()
        store.close()


@pytest.mark.both_stores
def test_a_store_from_before_pid_namespaces_gains_the_column(store_path, monkeypatch):
    """A store an older parjobs made has no ``pid_ns``: opening it adds the column without a
    new schema version (one would have the older parjobs refuse the store it shares), and a
    manager that parjobs registered (no namespace recorded) is judged by its pid, as before:
    alive while its process is, however old its heartbeat."""
    from parjobs._leases import pid_namespace
    from parjobs._stores import open_store

    monkeypatch.setenv("PARJOBS_LEASE_TIMEOUT", "0.5")
    pg = store_path.startswith("postgresql://")
    version = "SELECT value FROM meta WHERE key='schema_version'" if pg else "PRAGMA user_version"
    store = open_store(store_path)
    store.register_manager("old")
    store.close()
    _sql(store_path, "ALTER TABLE managers DROP COLUMN pid_ns")  # as an older parjobs left it
    _sql(store_path, "UPDATE managers SET heartbeat=0")
    (before,) = _sql(store_path, version)
    store = open_store(store_path)
    try:
        store.register_manager("new")
        rows = _sql(store_path, "SELECT id, pid_ns FROM managers ORDER BY id")
        assert rows == [("new", pid_namespace()), ("old", None)] and pid_namespace()
        assert [(m["id"], m["alive"]) for m in store.managers()] == [("old", True), ("new", True)]
        assert _sql(store_path, version) == [before]
    finally:
        store.close()
