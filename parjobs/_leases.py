"""Who is alive: the liveness rule for the managers that share a store (process identity
for those of this host, boot and pid namespace; heartbeat age for the others), on which
leases and recovery rest."""

from __future__ import annotations

import functools
import os
import socket
import sqlite3
import time
from collections.abc import Iterable

from ._environ import positive_or

#: A manager on another host (or boot, or pid namespace) whose heartbeat is older than this
#: (seconds) is dead. On this host a manager is alive exactly while its process is (pid and
#: start time), however old its heartbeat: a process stopped with Ctrl-Z keeps its jobs.
#: ``$PARJOBS_LEASE_TIMEOUT`` overrides it (tests make it small).
LEASE_TIMEOUT = 30.0
#: Managers of this process that closed without unregistering (their store failed as they
#: closed): gone, though their process lives, to every recovery this process makes. Other
#: processes recover their jobs once this one has exited (or their heartbeat aged, from
#: another host).
CLOSED: set[str] = set()


def lease_timeout() -> float:
    """`LEASE_TIMEOUT`, or ``$PARJOBS_LEASE_TIMEOUT`` when set to a positive number."""
    return positive_or("PARJOBS_LEASE_TIMEOUT", False, LEASE_TIMEOUT)


def dead_managers(c: sqlite3.Connection, now: float | None = None) -> set[str]:
    """Managers of a store that are certainly gone (see `dead_among`), judged at ``now``
    (the clock the heartbeats were written with: the store's `_clock`; this host's by
    default)."""
    rows = c.execute("SELECT id, pid, host, heartbeat, pid_start, pid_ns FROM managers")
    return dead_among(
        ((r[0], r[1], r[2], r[3], r[4], r[5]) for r in rows), time.time() if now is None else now
    )


def dead_among(
    rows: Iterable[tuple[str, int, str, float, str | None, str | None]], now: float
) -> set[str]:
    """The ids of the managers among ``rows`` (id, pid, host, heartbeat, pid start, pid
    namespace) that are certainly gone. On this host: the process is gone (its pid is free,
    or taken by a process started at another time). On another host: its heartbeat is
    older than `lease_timeout` at ``now`` (the clock the heartbeats were written with). A
    stale heartbeat alone never condemns a process of this host: a stopped one (Ctrl-Z,
    SIGSTOP) still owns its jobs. "This host" is this hostname, this boot *and* this pid
    namespace: a manager of the same name booted elsewhere is another machine's (cloned
    VMs, a default hostname), or of this one before a reboot; one in another pid namespace
    (a container sharing the host's name, ``unshare --pid``) has a pid that names another
    process here, or none. Either is judged by its heartbeat (by its pid, it was taken for
    dead and its jobs taken while it ran them)."""
    host, timeout, namespace = socket.gethostname(), lease_timeout(), pid_namespace()
    dead = set()
    for manager_id, pid, where, heartbeat, pid_start, pid_ns in rows:
        if manager_id in CLOSED:
            alive = False
        elif where == host and booted_here(pid_start) and same_namespace(pid_ns, namespace):
            alive = pid_alive(pid) and same_process(pid, pid_start)
        else:
            alive = now - heartbeat < timeout
        if not alive:
            dead.add(manager_id)
    return dead


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _proc_stat(pid: int) -> list[bytes] | None:
    """The fields of /proc/<pid>/stat after the process name (None where /proc does not
    say): [0] is the state, [19] the start time in clock ticks since boot."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat.rpartition(b")")[2].split()  # the name in parentheses may hold anything
    return fields if len(fields) >= 20 else None


@functools.cache
def boot_id() -> str | None:
    """This machine's boot id (random at each boot; None where /proc does not say)."""
    try:
        with open("/proc/sys/kernel/random/boot_id", "rb") as f:
            return f.read().strip().decode("ascii", "replace")
    except OSError:
        return None


def booted_here(recorded: str | None) -> bool:
    """Whether a process start ``recorded`` (`process_start`) was taken in this boot of
    this machine (True when either side cannot say: then the pid must do, as before)."""
    boot = boot_id()
    if recorded is None or boot is None:
        return True
    return recorded.partition(":")[0] == boot


def pid_namespace() -> str | None:
    """This process's pid namespace, as device and inode of ``/proc/self/ns/pid`` (one
    namespace, one inode, while it exists; None where /proc does not say). Not cached: a
    process forked after ``unshare(CLONE_NEWPID)`` is in the new namespace."""
    try:
        st = os.stat("/proc/self/ns/pid")
    except OSError:
        return None
    return f"{st.st_dev}:{st.st_ino}"


def same_namespace(recorded: str | None, namespace: str | None) -> bool:
    """Whether a manager registered with pid namespace ``recorded`` (`pid_namespace`) is in
    ``namespace``, this process's (True when either side cannot say, as a manager
    registered by a parjobs that did not record it: then the pid must do, as before)."""
    return recorded is None or namespace is None or recorded == namespace


def process_start(pid: int) -> str | None:
    """The boot id and start time of process ``pid``: with the pid, they name one process
    for good (a pid is reused, its start time is not). None where /proc does not say."""
    fields = _proc_stat(pid)
    boot = boot_id()
    if fields is None or boot is None:
        return None
    return f"{boot}:{fields[19].decode('ascii', 'replace')}"


def same_process(pid: int, recorded: str | None) -> bool:
    """Whether ``pid`` is still the live process that registered with start ``recorded``
    (a zombie, killed but not yet reaped by its parent, is not)."""
    fields = _proc_stat(pid)
    if fields is not None and fields[0] in (b"Z", b"X"):
        return False
    if recorded is None:
        return True  # registered by a parjobs that did not record it: the pid must do
    now = process_start(pid)
    return now is None or now == recorded
