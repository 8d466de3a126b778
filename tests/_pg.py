"""A throwaway PostgreSQL server for the tests: ``initdb`` + ``pg_ctl`` from the Debian
packages in a temporary directory (in memory, /dev/shm, when it has room), on a free TCP
port, run as an unprivileged user when the tests run as root (CI does; PostgreSQL refuses
to run as root). One per test process."""

from __future__ import annotations

import contextlib
import glob
import os
import secrets
import shutil
import socket
import sqlite3
import subprocess
import tempfile
from collections.abc import Iterator

USER = "parjobs"
PASSWORD = "pj-secret"


def binaries() -> str | None:
    """The newest /usr/lib/postgresql/*/bin holding initdb and pg_ctl (None if absent)."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
        key=lambda p: int(p.split("/")[-3]) if p.split("/")[-3].isdigit() else 0,
    )
    return os.path.dirname(found[-1]) if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """A running cluster: `url(db)` for a database of it, `create_db()` for a fresh one."""

    def __init__(self, bindir: str, root: str, port: int, run_as: list[str]) -> None:
        self.bindir, self.root, self.port, self._run_as = bindir, root, port, run_as
        self.data = os.path.join(root, "data")

    def url(self, db: str = "postgres", *, password: str = PASSWORD) -> str:
        return f"postgresql://{USER}:{password}@127.0.0.1:{self.port}/{db}"

    def _ctl(self, *args: str) -> None:
        subprocess.run(
            [*self._run_as, os.path.join(self.bindir, "pg_ctl"), "-D", self.data, *args],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=120,
        )

    def start(self) -> None:
        opts = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        self._ctl("start", "-w", "-t", "60", "-l", os.path.join(self.root, "log"), "-o", opts)

    def stop(self) -> None:
        self._ctl("stop", "-m", "immediate", "-w")

    def sql(self, statement: str, db: str = "postgres") -> None:
        import psycopg

        with psycopg.connect(self.url(db), autocommit=True) as conn:
            conn.execute(statement)

    def create_db(self) -> str:
        """A new, empty database; its name."""
        name = "t_" + secrets.token_hex(6)
        self.sql(f"CREATE DATABASE {name}")
        return name


@contextlib.contextmanager
def server() -> Iterator[Server]:
    """Start a cluster (initdb in a temporary directory), yield it, stop and remove it."""
    bindir = binaries()
    if bindir is None:
        raise FileNotFoundError("PostgreSQL binaries (initdb, pg_ctl) not found")
    root = tempfile.mkdtemp(prefix="parjobs-pg-", dir=_in_memory())
    run_as: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL never runs as root: use its own system user
        owner = "postgres" if _user_exists("postgres") else "nobody"
        shutil.chown(root, owner)
        os.chmod(root, 0o700)
        run_as = ["runuser", "-u", owner, "--"]
    pwfile = os.path.join(root, "pw")
    with open(pwfile, "w") as f:
        f.write(PASSWORD)
    if run_as:
        shutil.chown(pwfile, run_as[2])
    subprocess.run(
        [
            *run_as,
            os.path.join(bindir, "initdb"),
            "-D",
            os.path.join(root, "data"),
            "-U",
            USER,
            "--pwfile",
            pwfile,
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "-E",
            "UTF8",
            "--no-sync",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        timeout=120,
    )
    srv = Server(bindir, root, _free_port(), run_as)
    srv.start()
    try:
        yield srv
    finally:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            srv.stop()
        shutil.rmtree(root, ignore_errors=True)


#: Free space /dev/shm must have to hold a cluster: a test process's ~50 databases (~8 MB
#: each, a copy of the template) and their WAL take up to ~1 GB.
SHM_NEEDED = 4 * 1024**3


def _in_memory() -> str | None:
    """/dev/shm when it is a writable tmpfs with room (`SHM_NEEDED`), else None (the default
    temporary directory). In memory, a database's creation took 60 ms instead of 125-270 ms
    (the template's copy written to a disk the suite's other writes and fsyncs share), and
    initdb and the removal at the end got quicker too; fsync is off either way. A container's
    default /dev/shm (64 MB) is too small: then the disk."""
    shm = "/dev/shm"
    try:
        stat = os.statvfs(shm)
    except OSError:
        return None
    room = stat.f_bavail * stat.f_frsize
    return shm if room >= SHM_NEEDED and os.access(shm, os.W_OK | os.X_OK) else None


def _user_exists(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def store_sql(target: str, statement: str) -> list[tuple[object, ...]]:
    """Run ``statement`` on the store ``target`` (a SQLite file or a PostgreSQL URL) as a
    program other than parjobs would, and return its rows."""
    if target.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(target, autocommit=True, options="-c search_path=parjobs") as pg:
            cur = pg.execute(statement)
            return list(cur.fetchall()) if cur.description else []
    conn = sqlite3.connect(target)
    try:
        with conn:
            return conn.execute(statement).fetchall()
    finally:
        conn.close()
