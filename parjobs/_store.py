"""The embedded SQLite job store (WAL), the default `JobStore`: jobs, leases, completed
task ranges, errors, results.

All methods are blocking and must be called from one thread at a time; the manager serializes
them through a single worker thread. Several processes may open the same store: SQLite's locks
and ``BEGIN IMMEDIATE`` transactions make every status change and lease claim atomic. A
SQLite error leaves every public method as a `StoreError` that explains it.
"""

from __future__ import annotations

import functools
import json
import os
import socket
import sqlite3
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar, Unpack

from ._exceptions import (
    InvalidTransitionError,
    JobNotFoundError,
    LeaseError,
    StoreError,
    StoreFormatError,
)
from ._itemlog import CHUNK, INSERT_CHUNK, chunk, pack, unpack
from ._items import ItemRecord, ItemRow, row_record
from ._jobstore import NewJobFields, StoreJobQuery, StoreListener
from ._leases import dead_managers, pid_namespace, process_start, same_namespace
from ._progress import ItemError, Progress
from ._records import UNDO_REQUEST, CheckpointBatch, ItemQuery, JobInfo
from ._sqlite_watch import SQLiteListener
from ._status import STORE_PAUSED, JobStatus, check_transition, dependency_state, paused_by_store
from ._store_schema import (
    Undecodable,
    check_header,
    decode_text,
    explain,
    init_schema,
    is_locked,
)

R = TypeVar("R")

#: Rows of completed ranges per (job, stage) beyond which a checkpoint compacts them.
COMPACT_ROWS = 256
_COLUMNS = (
    "id, type, version, spec, status, priority, queue, lease, request, owner, after, "
    "dep_policy, timeout, created, started, finished, updated, run_time, runs, done_items, "
    "skipped_items, done_bytes, progress, state, result, error"
)
#: `_COLUMNS` without reading the result (``results=False``): a duplicates job's is
#: megabytes of JSON, read from the file (and then left undecoded) for every such job a
#: ``parjobs jobs`` listed (31 of a 300,000-file tree: 330 MB, 15 s).
_COLUMNS_NO_RESULT = _COLUMNS.replace("result, error", "NULL AS result, error")


#: The type each column of a job row must have (a damaged row is reported, not trusted).
_COLUMN_TYPES: dict[str, tuple[type, ...]] = {
    **dict.fromkeys(("id", "type", "spec", "status", "queue", "dep_policy"), (str,)),
    **dict.fromkeys(("version", "priority", "runs", "done_items"), (int,)),
    **dict.fromkeys(("skipped_items", "done_bytes"), (int,)),
    **dict.fromkeys(("created", "updated", "run_time"), (int, float)),
    **dict.fromkeys(("timeout", "started", "finished"), (int, float, type(None))),
    **dict.fromkeys(("lease", "request", "owner", "after"), (str, type(None))),
    **dict.fromkeys(("progress", "state", "result", "error"), (str, type(None))),
}


#: The error of a job its failing store paused, recovered as ``interrupted`` because the
#: manager that was to resume it is gone.
ORPHANED = (
    "interrupted: its store failed and paused it, and the process that was to resume it "
    "once the store took writes again is gone"
)


def _reserved(info: JobInfo) -> bool:
    """Whether the job rests paused by its failing store, its lease only the reservation of
    the manager that paused it (to resume it): no bar to anyone's pause, resume or cancel."""
    return info.status is JobStatus.PAUSED and paused_by_store(info.error)


def _check_row(row: sqlite3.Row) -> None:
    """Raise `StoreFormatError` naming the job and column when a stored value is not of its
    column's type (binary junk, text where a number belongs)."""
    for column, types in _COLUMN_TYPES.items():
        value = row[column]
        if isinstance(value, Undecodable) or type(value) not in types:
            what = (
                "not UTF-8 text" if isinstance(value, (bytes, Undecodable)) else "of the wrong type"
            )
            job = _text(str(row["id"])) if isinstance(row["id"], str) else repr(row["id"])
            raise StoreFormatError(f"job {job} is damaged in the store: its {column} is {what}")


def _row_to_info(row: sqlite3.Row, *, result: bool = True) -> JobInfo:
    """The `JobInfo` of a stored row; `StoreFormatError` (naming the job) if it is damaged.
    ``result=False`` leaves the result undecoded (None): see `SQLiteJobStore.transition`."""
    _check_row(row)

    def loads(text: str | None, default: Any) -> Any:
        if text is None:
            return default
        try:
            return json.loads(text)
        except ValueError:
            return default

    progress_data = loads(row["progress"], None)
    try:
        progress = Progress.from_json(progress_data) if progress_data else Progress()
    except (TypeError, ValueError):
        progress = Progress()
    try:
        status = JobStatus(row["status"])
    except ValueError:
        raise StoreFormatError(
            f"job {row['id']} is damaged in the store: unknown status {row['status']!r}"
        ) from None
    after = loads(row["after"], ())
    if not isinstance(after, (list, tuple)) or not all(isinstance(a, str) for a in after):
        raise StoreFormatError(
            f"job {row['id']} is damaged in the store: its prerequisites are not a list of ids"
        )
    return JobInfo(
        id=row["id"],
        type=row["type"],
        version=row["version"],
        spec=row["spec"],
        status=status,
        priority=row["priority"],
        queue=row["queue"],
        lease=row["lease"],
        request=row["request"],
        owner=row["owner"],
        after=tuple(after),
        dep_policy=row["dep_policy"],
        timeout=row["timeout"],
        created=row["created"],
        started=row["started"],
        finished=row["finished"],
        updated=row["updated"],
        run_time=row["run_time"],
        runs=row["runs"],
        done_items=row["done_items"],
        skipped_items=row["skipped_items"],
        done_bytes=row["done_bytes"],
        progress=progress,
        state=loads(row["state"], {}),
        result=loads(row["result"], None) if result else None,
        error=row["error"],
    )


#: The connections `SQLiteJobStore.close` left open, once `leave_open_for_exit` was called.
_left_for_exit: list[sqlite3.Connection] | None = None


def leave_open_for_exit() -> None:
    """From now on, `SQLiteJobStore.close` leaves its connection open for the process's exit
    to drop: for a program that ends with `os._exit` once its manager has closed (the
    ``parjobs`` command line, `parjobs.cli.run`).

    The last connection to close checkpoints the WAL into the store file: the WAL and the
    file fsynced (on ext4 ~10 ms of a one-file copy's wall time, for a few KB of pages),
    the WAL and its index deleted, then made and fsynced again (with the directory) by the
    next command. An exit drops the connection without it, and that is safe in WAL mode:
    every commit has returned by then (the manager closed: no job, task or heartbeat writes
    any more), a committed transaction is in the WAL, which outlives the process (as after a
    ``kill -9``: docs/reliability.md), and the next connection to open reads it back (its
    index is rebuilt from the WAL). Other processes on the store lose nothing: the locks go
    with the process. The -wal and -shm files keep the store file's mode (0600). What a power
    cut may lose is what ``synchronous=NORMAL`` loses anyway, the commits since the last
    checkpoint (redone on resume); only ``durable`` keeps the store from getting ahead of
    the files (docs/reliability.md, "A power cut"). SQLite still
    checkpoints when the WAL reaches 1000 pages (``wal_autocheckpoint``), so it stays below
    ~4 MB across commands. When the program cannot exit at once (`parjobs.cli.run` then
    exits the normal way), the interpreter's teardown closes the connections as usual."""
    global _left_for_exit
    if _left_for_exit is None:
        _left_for_exit = []


class CancelPending(InvalidTransitionError):
    """A resume found the job resting with a cancel pending: a person asked to cancel it
    and its manager died (or closed) before the job was cancelled, perhaps after its
    cleanup ran. The resume finishes the cancel instead (`JobManager.resume`)."""


class SQLiteJobStore:
    """A parjobs store file. Open with `SQLiteJobStore.open`; close with `close`."""

    def __init__(self, path: str, conn: sqlite3.Connection) -> None:
        self.path = path
        self._conn = conn
        # Rows of completed ranges per (job, stage), and their count after the last compaction.
        self._rows: dict[tuple[str, str], int] = {}
        self._compacted: dict[tuple[str, str], int] = {}

    # -- opening -------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, timeout: float = 10.0) -> SQLiteJobStore:
        """Open (creating if needed) the store at ``path``.

        Raises `StoreFormatError` for a file that is not a parjobs store and `StoreError`
        when the store cannot be opened (permissions, locked for longer than ``timeout``).
        """
        path = os.fspath(path)
        check_header(path)
        new = _create_private(path)
        try:
            conn = sqlite3.connect(
                path, timeout=timeout, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open job store {path}: {exc}") from exc
        conn.row_factory = sqlite3.Row
        conn.text_factory = decode_text  # a damaged row must not break every read
        store = cls(path, conn)
        try:
            init_schema(conn, path, store._tx, new=new)
        except StoreError:
            conn.close()
            raise
        except sqlite3.OperationalError as exc:
            conn.close()
            if is_locked(exc):
                raise StoreError(f"job store {path} is locked by another process") from exc
            raise StoreError(f"cannot use job store {path}: {explain(exc, path)}") from exc
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise StoreFormatError(f"{path} is not a usable parjobs store: {exc}") from exc
        return store

    def close(self) -> None:
        """Close the connection; after `leave_open_for_exit`, leave it to the process's exit."""
        if _left_for_exit is not None:
            _left_for_exit.append(self._conn)
        else:
            self._conn.close()

    def reopen(self) -> SQLiteJobStore:
        """Another connection to this file (WAL: its reads and our writes go side by side)."""
        return SQLiteJobStore.open(self.path)

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """An immediate (write-locking) transaction, so read-check-write is atomic across
        processes."""
        try:
            self._conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if is_locked(exc):
                raise StoreError(
                    f"job store {self.path} is locked by another process: {exc}"
                ) from exc
            raise StoreError(
                f"cannot write job store {self.path}: {explain(exc, self.path)}"
            ) from exc
        try:
            yield self._conn
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        else:
            self._conn.execute("COMMIT")

    # -- managers and leases -------------------------------------------------------------

    def _clock(self, c: sqlite3.Connection) -> float:
        """Now, by the clock every manager of the store writes and judges heartbeats with
        (seconds since the epoch). SQLite serves one machine: its clock. PostgreSQL
        serves several hosts, whose clocks may disagree: the database's."""
        return time.time()

    def now(self) -> float:
        return self._clock(self._conn)

    def _dead(self, c: sqlite3.Connection) -> set[str]:
        """The managers of the store that are certainly gone (`dead_managers`, now)."""
        return dead_managers(c, self._clock(c))

    def register_manager(self, manager_id: str) -> None:
        """Record this process as a live manager (pid, host, process start time, pid
        namespace: what `dead_managers` judges it by)."""
        pid = os.getpid()
        host, start, namespace = socket.gethostname(), process_start(pid), pid_namespace()
        with self._tx() as c:
            now = self._clock(c)
            c.execute(
                "INSERT INTO managers(id, pid, host, started, heartbeat, pid_start, pid_ns) "
                "VALUES (?,?,?,?,?,?,?)",
                (manager_id, pid, host, now, now, start, namespace),
            )

    def heartbeat(self, manager_id: str) -> bool:
        """Renew the manager's lease. False when its row is gone: another process declared
        it dead and may run its jobs, so it must stop them at once."""
        with self._tx() as c:
            cur = c.execute(
                "UPDATE managers SET heartbeat=? WHERE id=?", (self._clock(c), manager_id)
            )
            return cur.rowcount == 1

    def unregister_manager(self, manager_id: str) -> None:
        with self._tx() as c:
            c.execute("UPDATE jobs SET lease=NULL WHERE lease=?", (manager_id,))
            c.execute("DELETE FROM managers WHERE id=?", (manager_id,))

    def _owner(self, c: sqlite3.Connection, lease: str | None) -> str | None:
        """A description of the live manager ``lease`` names (None if free or dead)."""
        if lease is None:
            return None
        row = c.execute("SELECT pid, host, pid_ns FROM managers WHERE id=?", (lease,)).fetchone()
        if row is None or lease in self._dead(c):
            return None
        if row["host"] != socket.gethostname():
            where = f" on {row['host']}"
        elif not same_namespace(row["pid_ns"], pid_namespace()):
            where = " in another pid namespace"  # its pid is not this namespace's
        else:
            where = ""
        return f"parjobs process (pid {row['pid']}{where})"

    def _check_owner(self, c: sqlite3.Connection, info: JobInfo, manager_id: str | None) -> None:
        """Raise `LeaseError` when a live manager other than ``manager_id`` holds the job.
        The lease of a job resting paused by its failing store is only its manager's
        reservation to resume it: anyone may act on the job (`_reserved`)."""
        if info.lease is None or info.lease == manager_id or _reserved(info):
            return
        owner = self._owner(c, info.lease)
        if owner is not None:
            raise LeaseError(
                f"job {info.id} is {info.status.value} in another {owner}; "
                "it runs in one place at a time"
            )

    def recover(self) -> list[str]:
        """Release leases of dead managers. Their active jobs become interrupted (resumable);
        a pending pause request is honoured (paused), a cancel request stays pending. A job
        its failing store paused becomes interrupted too once the manager that was to resume
        it is gone (closed, or dead). Returns the ids of the jobs recovered."""
        with self._tx() as c:
            return self._recover(c)

    def _recover(self, c: sqlite3.Connection) -> list[str]:
        recovered: list[str] = []
        now = time.time()
        dead = self._dead(c)
        live = {r[0] for r in c.execute("SELECT id FROM managers")} - dead
        rows = c.execute(
            "SELECT id, status, lease, request FROM jobs WHERE status IN (?,?,?,?)",
            ("queued", "running", "pausing", "cancelling"),
        ).fetchall()
        self._recover_store_paused(c, live, now, recovered)
        for row in rows:
            if row["lease"] in live:
                continue
            status = JobStatus(row["status"])
            if status is JobStatus.QUEUED and row["lease"] is None:
                continue  # waiting for any manager to pick it up
            pausing = status is JobStatus.PAUSING or row["request"] == "pause"
            new = JobStatus.PAUSED if pausing else JobStatus.INTERRUPTED
            cancel = status is JobStatus.CANCELLING or row["request"] == "cancel"
            request = "cancel" if cancel else None
            c.execute(
                "UPDATE jobs SET status=?, lease=NULL, request=?, updated=? WHERE id=?",
                (new.value, request, now, row["id"]),
            )
            recovered.append(row["id"])
        for manager_id in dead:
            c.execute("DELETE FROM managers WHERE id=?", (manager_id,))
        return recovered

    def _recover_store_paused(
        self, c: sqlite3.Connection, live: set[str], now: float, recovered: list[str]
    ) -> None:
        """The jobs resting paused by their failing store whose manager, which was to resume
        them, is gone (closed or dead: its reservation released or void) rest interrupted,
        like the jobs of dead managers: any worker, or a manager opened with
        ``resume_interrupted``, takes them over."""
        rows = c.execute(
            "SELECT id, lease FROM jobs WHERE status='paused' "
            f"AND substr(error, 1, {len(STORE_PAUSED)})=?",
            (STORE_PAUSED,),
        ).fetchall()
        for row in rows:
            if row["lease"] in live:
                continue
            c.execute(
                "UPDATE jobs SET status='interrupted', lease=NULL, request=NULL, error=?, "
                "updated=? WHERE id=? AND status='paused'",
                (ORPHANED, now, row["id"]),
            )
            recovered.append(row["id"])

    def requeue(self, job_id: str, manager_id: str) -> JobInfo:
        """Resume: take a resting job for ``manager_id`` (queued, leased to it), in one
        transaction. Raises `LeaseError` if a live manager holds it (it runs elsewhere),
        `InvalidTransitionError` if its status forbids a resume, `CancelPending` if it
        rests with a cancel its manager did not finish (recovered so: `_recover`)."""
        now = time.time()
        with self._tx() as c:
            info = self._get(c, job_id)
            self._check_owner(c, info, manager_id)
            if info.status.is_active:
                if info.lease == manager_id:
                    raise InvalidTransitionError(
                        f"cannot resume job {job_id}: it is {info.status.value}"
                    )
                self._recover(c)  # its manager is dead: it rests as interrupted (or paused)
                info = self._get(c, job_id)
            if info.request == "cancel":  # its manager died (or closed) cancelling it
                raise CancelPending(f"cannot resume job {job_id}: its cancel is pending")
            if info.request == UNDO_REQUEST:
                raise InvalidTransitionError(f"cannot resume job {job_id}: it is undone")
            check_transition(job_id, info.status, JobStatus.QUEUED)
            c.execute(
                "UPDATE jobs SET status='queued', lease=?, request=NULL, finished=NULL, "
                "updated=? WHERE id=?",
                (manager_id, now, job_id),
            )
            return self._get(c, job_id)

    def claim(self, job_id: str, manager_id: str) -> JobInfo:
        """Take the lease of a queued job and mark it running: a compare-and-set on its
        status and lease in one transaction. Raises `LeaseError` if another live manager
        holds it, `InvalidTransitionError` if it is not queued. A pending request (pause or
        cancel sent while it waited) stays for the run to honour."""
        now = time.time()
        with self._tx() as c:
            info = self._get(c, job_id)
            self._check_owner(c, info, manager_id)
            check_transition(job_id, info.status, JobStatus.RUNNING)
            c.execute(
                "UPDATE jobs SET status='running', lease=?, started=COALESCE("
                "started, ?), updated=?, runs=runs+1, error=NULL WHERE id=?",
                (manager_id, now, now, job_id),
            )
            c.execute("DELETE FROM task_errors WHERE job_id=?", (job_id,))
            # Failed items are retried by this run: their records go with their errors.
            self._drop_failed_items(c, job_id)
            return self._get(c, job_id)

    #: Appended to the candidate query of `claim_next` (PostgreSQL: ``FOR UPDATE SKIP
    #: LOCKED``, so a row another transaction holds is passed over, not waited for).
    _SKIP_LOCKED = ""

    def _claim_lock(self, c: sqlite3.Connection) -> None:
        """Serialize the claims of all managers (SQLite: ``BEGIN IMMEDIATE`` already does),
        so the running jobs they count against queue capacities cannot change meanwhile."""

    def claim_next(self, manager_id: str, capacities: Mapping[str, int]) -> JobInfo | None:
        """Claim the next job nobody holds, for a worker (`JobManager.work`), in one
        transaction: first the jobs of dead managers are recovered (see `recover`: also
        those their failing store paused, whose manager is gone, rest interrupted); then,
        highest priority first (oldest among equals), a queued or interrupted job without a
        lease or pending request, in a queue of ``capacities`` that runs fewer jobs in the
        whole store than its capacity, whose prerequisites completed, is marked running and
        leased to ``manager_id`` like `claim`. A job whose prerequisite failed (policy
        ``skip``) is skipped on the way. None when no job can start now."""
        with self._tx() as c:
            self._claim_lock(c)
            self._recover(c)
            running = dict(
                c.execute(
                    "SELECT queue, COUNT(*) FROM jobs WHERE status IN "
                    "('running', 'pausing', 'cancelling') GROUP BY queue"
                ).fetchall()
            )
            free = [q for q, cap in capacities.items() if running.get(q, 0) < cap]
            if not free:
                return None
            for row in self._candidates(c, free):
                after = json.loads(row[1]) if row[1] else []
                blocked, failed = dependency_state(after, self._statuses(c, after))
                now = time.time()  # read now: a claim never starts before the job was queued
                if failed is not None and row[2] == "skip":
                    c.execute(
                        "UPDATE jobs SET status='skipped', error=?, finished=?, updated=? "
                        "WHERE id=?",
                        (f"prerequisite job {failed}", now, now, row[0]),
                    )
                    continue
                if blocked:
                    continue
                c.execute(
                    "UPDATE jobs SET status='running', lease=?, started=COALESCE(started, ?), "
                    "finished=NULL, updated=?, runs=runs+1, error=NULL WHERE id=?",
                    (manager_id, now, now, row[0]),
                )
                c.execute("DELETE FROM task_errors WHERE job_id=?", (row[0],))
                return self._get(c, row[0])
            return None

    def _candidates(self, c: sqlite3.Connection, queues: list[str]) -> Iterator[sqlite3.Row]:
        """The claimable jobs of ``queues`` in claim order, a page of 100 at a time (a long
        queue costs a claim only as many rows as it passes over)."""
        offset = 0
        while True:
            rows = c.execute(
                "SELECT id, after, dep_policy FROM jobs WHERE lease IS NULL AND ("
                "status='queued' OR (status='interrupted' AND request IS NULL)) "
                f"AND queue IN ({','.join('?' * len(queues))}) "
                "ORDER BY priority DESC, created, id LIMIT 100 OFFSET ?"
                f"{self._SKIP_LOCKED}",
                (*queues, offset),
            ).fetchall()
            yield from rows
            if len(rows) < 100:
                return
            offset += len(rows)

    def listener(self) -> StoreListener | None:
        """Wake-ups when another connection changed a job's status (`SQLiteListener`: a
        look at ``PRAGMA data_version`` every 50 ms); None if it cannot watch (the poll
        alone then)."""
        try:
            return SQLiteListener(self.path)
        except (sqlite3.Error, OSError):
            return None

    def take(self, job_id: str, manager_id: str, expect: JobStatus) -> JobInfo:
        """Lease a resting job to ``manager_id`` for its cancel, without changing its
        status: no other process resumes it while its cleanup runs, and its cancel is
        pending (``request``) until it is recorded cancelled, so a resume after the
        canceller died finishes the cancel (`CancelPending`) rather than run the job."""
        with self._tx() as c:
            info = self._get(c, job_id)
            self._check_owner(c, info, manager_id)
            if info.status is not expect:
                raise InvalidTransitionError(
                    f"job {job_id} changed meanwhile: it is {info.status.value}, not {expect.value}"
                )
            # Taken from its store's reservation: it is no longer resumed by itself (and
            # its new lease is a real one, that nobody else overrides).
            error = None if _reserved(info) else info.error
            c.execute(
                "UPDATE jobs SET lease=?, error=?, request='cancel' WHERE id=?",
                (manager_id, error, job_id),
            )
            return self._get(c, job_id)

    def lease_state(self, manager_id: str) -> tuple[bool, dict[str, str | None]]:
        """(this manager is still registered, {job id: pending request} of the jobs whose
        lease it holds). A running job missing from the map was taken from it."""
        c = self._conn
        registered = (
            c.execute("SELECT 1 FROM managers WHERE id=?", (manager_id,)).fetchone() is not None
        )
        rows = c.execute("SELECT id, request FROM jobs WHERE lease=?", (manager_id,))
        return registered, {r[0]: r[1] for r in rows}

    def identity(self) -> object | None:
        """(device, inode) of the store file now, None if it is gone."""
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_dev, st.st_ino

    # -- jobs ----------------------------------------------------------------------------

    def insert_job(
        self, job_id: str, type_name: str, version: int, spec: str, **fields: Unpack[NewJobFields]
    ) -> tuple[JobInfo, bool]:
        """Insert a queued job; with an idempotency key that exists, return the existing job
        instead. Returns (info, created). Prerequisites (``after``) must exist."""
        now = time.time()
        after = list(fields.get("after", ()))
        idempotency_key = fields.get("idempotency_key")
        with self._tx() as c:
            if idempotency_key is not None:
                row = c.execute(
                    f"SELECT {_COLUMNS} FROM jobs WHERE idempotency_key=?", (idempotency_key,)
                ).fetchone()
                if row is not None:
                    return _row_to_info(row), False
            for dep in after:
                self._get(c, dep)
            c.execute(
                "INSERT INTO jobs(id, type, version, spec, status, priority, queue, lease, "
                "created, updated, idempotency_key, owner, after, dep_policy, timeout) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    job_id,
                    type_name,
                    version,
                    spec,
                    "queued",
                    fields.get("priority", 0),
                    fields.get("queue", "default"),
                    fields.get("lease"),
                    now,
                    now,
                    idempotency_key,
                    fields.get("owner"),
                    json.dumps(after) if after else None,
                    fields.get("dep_policy", "skip"),
                    fields.get("timeout"),
                ),
            )
            return self._get(c, job_id), True

    def _get(self, c: sqlite3.Connection, job_id: str, *, result: bool = True) -> JobInfo:
        row = c.execute(f"SELECT {_COLUMNS} FROM jobs WHERE id=?", (job_id,)).fetchone()
        if row is None:
            raise JobNotFoundError(f"no job with id {job_id!r}")
        return _row_to_info(row, result=result)

    def get(self, job_id: str) -> JobInfo:
        return self._get(self._conn, job_id)

    def resolve_id(self, prefix: str) -> str:
        """The full id of the one job whose id starts with ``prefix`` (not empty: that is a
        prefix of every id, and named the store's only job)."""
        if not prefix:
            raise JobNotFoundError("no job with id ''")
        rows = self._conn.execute(
            "SELECT id FROM jobs WHERE id >= ? AND id < ? LIMIT 2", (prefix, prefix + "\uffff")
        ).fetchall()
        if not rows:
            raise JobNotFoundError(f"no job with id {prefix!r}")
        if len(rows) > 1:
            raise JobNotFoundError(f"job id prefix {prefix!r} is ambiguous")
        return str(rows[0][0])

    def list_jobs(
        self, statuses: Iterable[JobStatus] | None = None, **query: Unpack[StoreJobQuery]
    ) -> list[JobInfo]:
        """Jobs filtered by status, type, owner and last change, ordered and paged (see
        `JobQuery`, `StoreJobQuery`)."""
        type, owner = query.get("type"), query.get("owner")
        order, updated_since = query.get("order", "created"), query.get("updated_since")
        damaged = query.get("damaged")
        where: list[str] = []
        params: list[Any] = []
        if updated_since is not None:
            where.append("updated>=?")
            params.append(updated_since)
        if statuses is not None:
            values = [JobStatus(s).value for s in statuses]
            where.append(f"status IN ({','.join('?' * len(values))})")
            params += values
        if type is not None:
            where.append("type=?")
            params.append(type)
        if owner is not None:
            where.append("owner=?")
            params.append(owner)
        column = order.lstrip("-")
        if column not in ("created", "finished", "priority", "run_time", "updated"):
            raise ValueError(f"cannot order jobs by {order!r}")
        direction = "DESC" if order.startswith("-") else "ASC"
        results = query.get("results", True)
        sql = f"SELECT {_COLUMNS if results else _COLUMNS_NO_RESULT} FROM jobs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY {column} {direction}, rowid {direction} LIMIT ? OFFSET ?"
        params += [query.get("limit", -1), query.get("offset", 0)]
        infos: list[JobInfo] = []
        for row in self._conn.execute(sql, params):
            try:
                infos.append(_row_to_info(row, result=results))
            except StoreFormatError as exc:
                if damaged is not None:
                    damaged.append((_text(str(row["id"])), str(exc)))
        return infos

    def status_counts(self) -> dict[str, int]:
        rows = self._conn.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status")
        return {r[0]: r[1] for r in rows}

    def statuses(self, job_ids: Iterable[str]) -> dict[str, JobStatus]:
        return self._statuses(self._conn, job_ids)

    def _statuses(self, c: sqlite3.Connection, job_ids: Iterable[str]) -> dict[str, JobStatus]:
        ids = list(job_ids)
        if not ids:
            return {}
        rows = c.execute(
            f"SELECT id, status FROM jobs WHERE id IN ({','.join('?' * len(ids))})", ids
        )
        out: dict[str, JobStatus] = {}
        for job_id, status in rows:
            try:
                out[job_id] = JobStatus(status)
            except ValueError:
                out[job_id] = JobStatus.FAILED  # a damaged row: nothing may wait on it
        return out

    def raise_version(self, job_id: str, version: int, spec: str, holder: str) -> None:
        """Store ``job_id`` as ``version`` of its type with ``spec`` (its spec in that
        version's shape), while ``holder`` holds its lease (else `LeaseError`, nothing
        written); a job stored by that version or a later one is left as it is. For a job an
        older version stored, run by this code: its runs may write state that code would
        misread, so from then on that code refuses it ("newer than this code's version")."""
        with self._tx() as c:
            info = self._get(c, job_id)
            if info.lease != holder:
                raise LeaseError(f"job {job_id} is no longer leased to this process")
            if info.version < version:
                c.execute(
                    "UPDATE jobs SET version=?, spec=?, updated=? WHERE id=?",
                    (version, spec, time.time(), job_id),
                )

    def set_priority(self, job_id: str, priority: int) -> JobInfo:
        """Change the priority of a queued (or resting) job; running jobs keep theirs."""
        with self._tx() as c:
            info = self._get(c, job_id)
            if info.status not in (JobStatus.QUEUED, JobStatus.PAUSED, JobStatus.INTERRUPTED):
                raise InvalidTransitionError(
                    f"cannot change the priority of job {job_id}: it is {info.status.value}"
                )
            c.execute(
                "UPDATE jobs SET priority=?, updated=? WHERE id=?", (priority, time.time(), job_id)
            )
            return self._get(c, job_id)

    def purge(
        self, older_than: float, statuses: Iterable[JobStatus], keep: Collection[str] = ()
    ) -> list[str]:
        """Delete jobs in ``statuses`` that finished before ``older_than`` (epoch seconds),
        but those in ``keep``."""
        values = [JobStatus(s).value for s in statuses]
        rows = self._conn.execute(
            f"SELECT id FROM jobs WHERE status IN ({','.join('?' * len(values))}) "
            "AND finished IS NOT NULL AND finished < ?",
            (*values, older_than),
        ).fetchall()
        ids = [r[0] for r in rows if r[0] not in keep]
        for job_id in ids:
            self.delete(job_id)
        return ids

    def transition(
        self,
        job_id: str,
        new: JobStatus,
        *,
        expect: JobStatus | None = None,
        manager: str | None = None,
        holder: str | None = None,
        keep_cancel: bool = False,
        keep_request: bool = False,
        **fields: Any,
    ) -> JobInfo:
        """Atomically move a job to ``new`` (checking the transition), updating ``fields``
        (result, error, progress, lease, request, finished, run_time). With ``expect``, a
        compare-and-set: fail unless the job is still in that status. With ``manager``, fail
        (`LeaseError`) if another live manager holds the job; with ``holder``, unless that
        manager holds it (a runner never writes over the status of a job taken from it).

        For a rest its holder writes that leaves the job resumable, nothing cleaned up
        (``paused``, ``interrupted``), a request another process sent meanwhile (``request``)
        is not lost: with ``keep_cancel`` a cancel makes the job ``cancelling`` instead, its
        lease and request kept, for the caller to finish the cancel; with ``keep_request``
        a cancel stays pending on the resting job (a resume finishes it: `CancelPending`),
        a pause rests an ``interrupted`` job ``paused``, and a job its failing store paused
        (``error`` `STORE_PAUSED`) paused by the person (no store error, no lease). The
        times (``updated``, ``finished``) are the store's (`now`): a retention judges them."""
        with self._tx() as c:
            now = self._clock(c)
            info = self._get(c, job_id)
            if holder is not None and info.lease != holder:
                raise LeaseError(f"job {job_id} is no longer leased to this process")
            if keep_cancel and info.request == "cancel":
                new = JobStatus.CANCELLING
                fields.update(lease=info.lease, request="cancel")
            elif keep_request and info.request == "cancel":
                fields["request"] = "cancel"
            elif keep_request and info.request == "pause" and new is JobStatus.INTERRUPTED:
                new = JobStatus.PAUSED
                fields["request"] = None
            elif keep_request and info.request == "pause" and paused_by_store(fields.get("error")):
                # A person's pause sent as the job's failing store paused it: a person's
                # pause it is (no store error, no reservation), never resumed by itself.
                fields.update(error=None, lease=None, request=None)
            if manager is not None:
                self._check_owner(c, info, manager)
            if expect is not None and info.status is not expect:
                raise InvalidTransitionError(
                    f"job {job_id} changed meanwhile: it is {info.status.value}, not {expect.value}"
                )
            if info.status is not new:
                check_transition(job_id, info.status, new)
            fields["status"] = new.value
            fields["updated"] = now
            if new in (
                JobStatus.COMPLETED,
                JobStatus.COMPLETED_WITH_ERRORS,
                JobStatus.FAILED,
                JobStatus.CANCELLED,
                JobStatus.PAUSED,
                JobStatus.INTERRUPTED,
                JobStatus.TIMED_OUT,
                JobStatus.SKIPPED,
            ):
                fields.setdefault("finished", now)
            elif new is JobStatus.QUEUED:
                fields.setdefault("finished", None)
            sets = ", ".join(f"{k}=?" for k in fields)
            c.execute(f"UPDATE jobs SET {sets} WHERE id=?", (*fields.values(), job_id))
            return self._get(c, job_id, result="result" not in fields)

    def request(self, job_id: str, request: str, manager_id: str | None = None) -> bool:
        """Ask the live process that holds ``job_id`` (not ``manager_id``) to pause or
        cancel it; its status is that process's to change. False (nothing written) when no
        other live process holds the job: the caller acts on it itself."""
        with self._tx() as c:
            info = self._get(c, job_id)
            if info.lease is None or info.lease == manager_id or not info.status.is_active:
                return False
            if self._owner(c, info.lease) is None:
                return False
            if info.request == "cancel" and request == "pause":
                return True  # a cancel asked first wins
            c.execute(
                "UPDATE jobs SET request=?, updated=? WHERE id=?", (request, time.time(), job_id)
            )
            return True

    def delete(self, job_id: str) -> None:
        for key in [k for k in self._rows if k[0] == job_id]:
            self._rows.pop(key, None)
            self._compacted.pop(key, None)
        with self._tx() as c:
            row = c.execute(
                "SELECT status, lease, error FROM jobs WHERE id=?", (job_id,)
            ).fetchone()
            if row is not None and row[0] in _ACTIVE_VALUES:
                raise InvalidTransitionError(f"cannot delete job {job_id}: it is {row[0]}")
            reserved = row is not None and row[0] == "paused" and paused_by_store(row[2])
            owner = self._owner(c, row[1]) if row is not None and not reserved else None
            if owner is not None:  # e.g. cleaning up for its cancel
                raise LeaseError(f"cannot delete job {job_id}: another {owner} holds it")
            for table in ("completed", "task_results", "task_errors", "item_log"):
                c.execute(f"DELETE FROM {table} WHERE job_id=?", (job_id,))
            c.execute("DELETE FROM jobs WHERE id=?", (job_id,))

    # -- checkpoints ---------------------------------------------------------------------

    def checkpoint(self, job_id: str, batch: CheckpointBatch, holder: str | None = None) -> None:
        """Record one batch of completions atomically (only what is new since the last).
        With ``holder``, only while that manager holds the job's lease (else `LeaseError`,
        nothing written): a run that lost its job never records over its new owner's."""
        if not batch:
            return
        try:
            self._checkpoint(job_id, batch, holder)
        except LeaseError:
            for key in [k for k in self._rows if k[0] == job_id]:  # rolled back: recount
                self._rows.pop(key, None)
            raise

    def _checkpoint(self, job_id: str, batch: CheckpointBatch, holder: str | None) -> None:
        with self._tx() as c:
            if batch.retried and self._written(c, job_id, batch.mark):
                return  # its first write committed; only its answer was lost
            for stage, ranges in batch.ranges.items():
                c.executemany(
                    "INSERT INTO completed(job_id, stage, start, stop) VALUES (?,?,?,?)",
                    [(job_id, stage, a, b) for a, b in ranges],
                )
                key = (job_id, stage)
                rows = self._rows.get(key)
                if rows is None:
                    rows = c.execute(
                        "SELECT COUNT(*) FROM completed WHERE job_id=? AND stage=?", key
                    ).fetchone()[0]
                else:
                    rows += len(ranges)
                # Compact when the rows doubled since the last compaction: amortized O(1) per
                # new range even when gaps (failed items) keep ranges from merging.
                if rows > max(COMPACT_ROWS, 2 * self._compacted.get(key, 0)):
                    rows = self._compact(c, job_id, stage)
                    self._compacted[key] = rows
                self._rows[key] = rows
            if batch.results:
                c.executemany(
                    "INSERT OR REPLACE INTO task_results(job_id, stage, idx, value) "
                    "VALUES (?,?,?,?)",
                    [(job_id, s, i, v) for s, i, v in batch.results],
                )
            if batch.errors:
                now = time.time()
                c.executemany(
                    "INSERT INTO task_errors(job_id, stage, idx, label, error, message, at, "
                    "traceback) VALUES (?,?,?,?,?,?,?,?)",
                    [
                        (
                            job_id,
                            e.stage,
                            e.index,
                            e.label,
                            e.error,
                            e.message,
                            now,
                            _text(e.traceback) or None,
                        )
                        for e in batch.errors
                    ],
                )
            if batch.items:
                batch.first_seq = self._insert_items(c, job_id, batch.items)
            sets = [
                "done_items=done_items+?",
                "skipped_items=skipped_items+?",
                "done_bytes=done_bytes+?",
                "updated=?",
            ]
            params: list[Any] = [
                batch.done_items,
                batch.skipped_items,
                batch.done_bytes,
                time.time(),
            ]
            if batch.state is not None:
                sets.append("state=?")
                params.append(batch.state)
            if batch.progress is not None:
                sets.append("progress=?")
                params.append(batch.progress)
            where = "id=?" if holder is None else "id=? AND lease=?"
            params += [job_id] if holder is None else [job_id, holder]
            cur = c.execute(f"UPDATE jobs SET {', '.join(sets)} WHERE {where}", params)
            if holder is not None and cur.rowcount != 1:  # rolls the whole batch back
                raise LeaseError(f"job {job_id} is no longer leased to this process")

    def _written(self, c: sqlite3.Connection, job_id: str, mark: str | None) -> bool:
        """Whether the job's stored progress snapshot is the one of the checkpoint marked
        ``mark`` (`CheckpointBatch.mark`): that checkpoint was written, and nothing since."""
        row = c.execute("SELECT progress FROM jobs WHERE id=?", (job_id,)).fetchone()
        if mark is None or row is None or row[0] is None:
            return False
        try:
            stored = json.loads(row[0])
        except ValueError:
            return False
        return isinstance(stored, dict) and stored.get("checkpoint") == mark

    def _insert_items(self, c: sqlite3.Connection, job_id: str, items: list[ItemRow]) -> int:
        """Append ``items`` to the job's log, numbered on from its last ``seq``; return the
        first one's.

        They go in packed (`parjobs._itemlog`), a row per `CHUNK` records: a statement a
        record made SQLite parse, index and write each (~9 µs a record, with the Python
        side ~12, where a 10,000-file copy's whole job costs ~70 µs a file); packed, a
        record costs ~2 µs, and a store ~21 bytes instead of ~186."""
        row = c.execute(  # the last chunk (by the key's index: chunks never overlap)
            "SELECT last_seq FROM item_log WHERE job_id=? ORDER BY first_seq DESC LIMIT 1",
            (job_id,),
        ).fetchone()
        first: int = (row[0] if row else 0) + 1
        c.executemany(
            INSERT_CHUNK,
            [chunk(job_id, items[k : k + CHUNK], first + k) for k in range(0, len(items), CHUNK)],
        )
        return first

    def items(self, job_id: str, **query: Unpack[ItemQuery]) -> list[ItemRecord]:
        """The job's item log in order, paged (see `ItemQuery`): only the chunks that hold
        a record past ``after`` are read, and only those that reach the page unpacked."""
        action = query.get("action")
        after = query.get("after", 0)
        limit = query.get("limit", -1)
        skip = query.get("offset", 0)
        out: list[ItemRecord] = []
        if limit == 0:
            return out
        start = self._conn.execute(  # the chunk holding ``after`` (found by the key's index)
            "SELECT first_seq FROM item_log WHERE job_id=? AND first_seq<=? "
            "ORDER BY first_seq DESC LIMIT 1",
            (job_id, after),
        ).fetchone()
        chunks = self._conn.execute(
            "SELECT first_seq, records, actions, data FROM item_log "
            "WHERE job_id=? AND first_seq>=? AND last_seq>? ORDER BY first_seq",
            (job_id, start[0] if start else 0, after),
        )
        for first, records, counts, data in chunks:
            if action is not None:
                records = json.loads(counts).get(action, 0)
                if records == 0:
                    continue
            if first > after and skip >= records:  # the whole chunk is before the page
                skip -= records
                continue
            for seq, row in unpack(bytes(data)):
                if seq <= after or (action is not None and row[0] != action):
                    continue
                if skip:
                    skip -= 1
                    continue
                out.append(row_record(row, seq))
                if len(out) == limit:
                    return out
        return out

    def item_count(self, job_id: str, *, action: str | None = None) -> int:
        """How many records `items` pages through (of ``action`` only, if given)."""
        if action is None:
            sql = "SELECT SUM(records) FROM item_log WHERE job_id=?"
            return int(self._conn.execute(sql, (job_id,)).fetchone()[0] or 0)
        rows = self._conn.execute("SELECT actions FROM item_log WHERE job_id=?", (job_id,))
        return sum(int(json.loads(r[0]).get(action, 0)) for r in rows)

    def _drop_failed_items(self, c: sqlite3.Connection, job_id: str) -> None:
        """Take the job's "failed" records out of its item log (a new run retries those
        items): each chunk holding some is packed again without them. The others keep
        their ``seq``, and the chunk its range, even when nothing is left in it: numbers
        are never given twice (a reader paging with ``after`` would miss a reused one)."""
        rows = c.execute(
            "SELECT first_seq, data FROM item_log WHERE job_id=? AND failed>0", (job_id,)
        ).fetchall()
        for first, data in rows:
            kept = [(seq, row) for seq, row in unpack(bytes(data)) if row[0] != "failed"]
            again, counts = pack([row for _, row in kept], [seq for seq, _ in kept])
            c.execute(
                "UPDATE item_log SET records=?, failed=0, actions=?, data=? "
                "WHERE job_id=? AND first_seq=?",
                (len(kept), json.dumps(counts), again, job_id, first),
            )

    def _compact(self, c: sqlite3.Connection, job_id: str, stage: str) -> int:
        rows = c.execute(
            "SELECT start, stop FROM completed WHERE job_id=? AND stage=? ORDER BY start",
            (job_id, stage),
        ).fetchall()
        merged: list[tuple[int, int]] = []
        for a, b in rows:
            if merged and a <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], b))
            else:
                merged.append((a, b))
        c.execute("DELETE FROM completed WHERE job_id=? AND stage=?", (job_id, stage))
        c.executemany(
            "INSERT INTO completed(job_id, stage, start, stop) VALUES (?,?,?,?)",
            [(job_id, stage, a, b) for a, b in merged],
        )
        return len(merged)

    def completed_ranges(self, job_id: str) -> dict[str, list[tuple[int, int]]]:
        out: dict[str, list[tuple[int, int]]] = {}
        for stage, a, b in self._conn.execute(
            "SELECT stage, start, stop FROM completed WHERE job_id=?", (job_id,)
        ):
            out.setdefault(stage, []).append((a, b))
        return out

    def task_results(self, job_id: str, stage: str) -> dict[int, str]:
        rows = self._conn.execute(
            "SELECT idx, value FROM task_results WHERE job_id=? AND stage=?", (job_id, stage)
        )
        return {r[0]: r[1] for r in rows}

    def errors(self, job_id: str, *, limit: int = -1, offset: int = 0) -> list[ItemError]:
        rows = self._conn.execute(
            "SELECT stage, idx, label, error, message, traceback FROM task_errors "
            "WHERE job_id=? ORDER BY rowid LIMIT ? OFFSET ?",
            (job_id, limit, offset),
        )
        return [
            ItemError(
                index=r[1],
                label=r[2],
                error=r[3],
                message=r[4],
                stage=r[0],
                traceback=r[5] if isinstance(r[5], str) else "",
            )
            for r in rows
        ]

    def error_count(self, job_id: str) -> int:
        return int(
            self._conn.execute(
                "SELECT COUNT(*) FROM task_errors WHERE job_id=?", (job_id,)
            ).fetchone()[0]
        )

    # -- read-only views for `parjobs serve` (the HTTP API and /metrics) ---------------------

    def managers(self) -> list[dict[str, Any]]:
        """The managers sharing this store: id, pid, host, started, heartbeat (epoch
        seconds) and its age (by the store's clock, `_clock`), whether it is alive (the rule
        recovery uses) and how many jobs it runs. Read-only: an operator's view of the
        hosts, not a lease operation."""
        c = self._conn
        now = self._clock(c)
        dead = dead_managers(c, now)
        running = dict(
            c.execute(
                "SELECT lease, COUNT(*) FROM jobs WHERE lease IS NOT NULL "
                "AND status IN ('running', 'pausing', 'cancelling') GROUP BY lease"
            ).fetchall()
        )
        rows = c.execute("SELECT id, pid, host, started, heartbeat FROM managers ORDER BY started")
        return [
            {
                "id": r["id"],
                "pid": r["pid"],
                "host": r["host"],
                "started": r["started"],
                "heartbeat": r["heartbeat"],
                "heartbeat_age": max(0.0, now - r["heartbeat"]),
                "alive": r["id"] not in dead,
                "jobs_running": running.get(r["id"], 0),
            }
            for r in rows.fetchall()
        ]

    def job_stats(self) -> list[tuple[str, str, str, int, int, int, int]]:
        """Per (type, queue, status): jobs, checkpointed items done, bytes done and failed
        items, summed in SQL (for /metrics: one query, however many jobs)."""
        rows = self._conn.execute(
            "SELECT j.type, j.queue, j.status, COUNT(*), SUM(j.done_items), SUM(j.done_bytes), "
            "SUM(COALESCE(e.n, 0)) FROM jobs j LEFT JOIN "
            "(SELECT job_id, COUNT(*) AS n FROM task_errors GROUP BY job_id) e "
            "ON e.job_id = j.id GROUP BY j.type, j.queue, j.status"
        )
        return [(r[0], r[1], r[2], r[3], r[4] or 0, r[5] or 0, r[6] or 0) for r in rows]


def _text(value: str) -> str:
    """Make text storable: names that are not UTF-8 carry lone surrogates; escape them."""
    return value.encode("utf-8", "backslashreplace").decode("utf-8")


_ACTIVE_VALUES = frozenset(s.value for s in JobStatus if s.is_active)


def _explained(method: Callable[..., R]) -> Callable[..., R]:
    """``method`` raising `StoreError` (explained, naming the store) for a SQLite error,
    e.g. "database or disk is full": no SQLite exception leaves the store."""

    @functools.wraps(method)
    def call(self: SQLiteJobStore, *args: Any, **kwargs: Any) -> R:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as exc:
            raise StoreError(f"job store {self.path} failed: {explain(exc, self.path)}") from None

    return call


for _name, _method in list(vars(SQLiteJobStore).items()):
    if not _name.startswith("_") and callable(_method) and _name != "open":
        setattr(SQLiteJobStore, _name, _explained(_method))
del _name, _method

#: The name the server and the benchmarks still import (the class, not the protocol).
JobStore = SQLiteJobStore


def _create_private(path: str) -> bool:
    """Create a missing store file readable by its user only (0600): SQLite would create it
    with the umask's mode, typically world-readable, and gives its -wal and -shm files the
    main file's mode. An existing file keeps its mode; a failure here is left for SQLite to
    report, with its own explanation. True when this call created the (empty) file."""
    if path == ":memory:" or path.startswith("file:"):
        return False
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        os.close(os.open(path, flags, 0o600))
    except OSError:
        return False
    return True
