"""Who counts as alive (`parjobs._leases`): the liveness rule for the managers that share a
store, checked against real processes (stopped, reused pids, zombies) and other hosts."""

from __future__ import annotations

import sqlite3
import subprocess
import time


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
        conn.execute("UPDATE managers SET pid_start='other-boot:1' WHERE id='reused'")
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
