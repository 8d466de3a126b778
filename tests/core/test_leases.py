"""Who counts as alive (`parjobs._leases`): the liveness rule for the managers that share a
store, checked against real processes (stopped, reused pids, zombies) and other hosts."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time

import pytest


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


def _held_then_taken_over(url: str, patch: str) -> None:
    """A job claimed by a manager of another host (``patch`` makes it one) stays with it
    while its heartbeat is fresh, and is taken over once it is older than the lease
    timeout (2 s here)."""
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
        time.sleep(2.5)  # past the lease timeout: farm-2 is dead, its job taken over
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
    _held_then_taken_over(pg_url, patch + 'socket.gethostname = lambda: "farm-2"')


@pytest.mark.both_stores
def test_a_host_of_the_same_name_is_judged_by_its_heartbeat(store_path, monkeypatch):
    """Two machines with one hostname (cloned VMs, a default name): a manager of the other
    was taken for one of this machine, whose pid was not running here, and its jobs taken
    while it ran them. The boot id recorded with its pid tells the machines apart: a
    manager booted elsewhere is judged by its heartbeat, as another host's."""
    monkeypatch.setenv("PARJOBS_LEASE_TIMEOUT", "2")
    patch = 'parjobs._store.process_start = lambda pid: "0f0f0f0f-another-machine:4242"'
    _held_then_taken_over(store_path, patch)
