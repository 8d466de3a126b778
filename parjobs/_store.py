"""The embedded SQLite job store (WAL): jobs, leases, completed task ranges, errors, results.

All methods are blocking and must be called from one thread at a time; the manager serializes
them through a single worker thread. Several processes may open the same store: SQLite's locks
and ``BEGIN IMMEDIATE`` transactions make every status change and lease claim atomic.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from ._exceptions import JobNotFoundError, StoreError, StoreFormatError
from ._progress import ItemError, Progress
from ._status import JobStatus, check_transition

#: PRAGMA application_id of a parjobs store: b"pjob".
APPLICATION_ID = 0x706A6F62
SCHEMA_VERSION = 1
#: Rows of completed ranges per (job, stage) beyond which a checkpoint compacts them.
COMPACT_ROWS = 256
#: A manager whose heartbeat is older than this is dead even if its pid exists elsewhere.
LEASE_TIMEOUT = 30.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS managers (
    id TEXT PRIMARY KEY, pid INTEGER NOT NULL, host TEXT NOT NULL,
    started REAL NOT NULL, heartbeat REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    type TEXT NOT NULL, version INTEGER NOT NULL, spec TEXT NOT NULL,
    status TEXT NOT NULL, priority INTEGER NOT NULL DEFAULT 0,
    queue TEXT NOT NULL DEFAULT 'default',
    lease TEXT,                 -- manager holding the lease while the job runs
    request TEXT,               -- 'pause' or 'cancel' asked through the store
    owner TEXT,                 -- free-form owner/tenant, for filtering
    after TEXT,                 -- JSON list of prerequisite job ids
    dep_policy TEXT NOT NULL DEFAULT 'skip',  -- 'skip' or 'run' when a prerequisite fails
    timeout REAL,               -- seconds a run may take before it ends timed_out
    created REAL NOT NULL, started REAL, finished REAL, updated REAL NOT NULL,
    run_time REAL NOT NULL DEFAULT 0,         -- seconds spent running, all runs
    runs INTEGER NOT NULL DEFAULT 0,
    done_items INTEGER NOT NULL DEFAULT 0,    -- checkpointed completions (all stages)
    skipped_items INTEGER NOT NULL DEFAULT 0, -- of which skipped by the task itself
    done_bytes INTEGER NOT NULL DEFAULT 0,    -- bytes of checkpointed completions
    progress TEXT, state TEXT, result TEXT, error TEXT,
    idempotency_key TEXT UNIQUE
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status);
CREATE INDEX IF NOT EXISTS jobs_owner ON jobs(owner);
CREATE TABLE IF NOT EXISTS completed (
    job_id TEXT NOT NULL, stage TEXT NOT NULL, start INTEGER NOT NULL, stop INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS completed_job ON completed(job_id, stage);
CREATE TABLE IF NOT EXISTS task_results (
    job_id TEXT NOT NULL, stage TEXT NOT NULL, idx INTEGER NOT NULL, value TEXT NOT NULL,
    PRIMARY KEY (job_id, stage, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS task_errors (
    job_id TEXT NOT NULL, stage TEXT NOT NULL, idx INTEGER NOT NULL,
    label TEXT NOT NULL, error TEXT NOT NULL, message TEXT NOT NULL, at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS task_errors_job ON task_errors(job_id);
"""


@dataclasses.dataclass(frozen=True, slots=True)
class JobInfo:
    """What the store knows about a job: a read-only record for lists and ``show``."""

    id: str
    type: str
    version: int
    spec: str
    status: JobStatus
    priority: int
    queue: str
    lease: str | None
    request: str | None
    owner: str | None
    after: tuple[str, ...]
    dep_policy: str
    timeout: float | None
    created: float
    started: float | None
    finished: float | None
    updated: float
    run_time: float
    runs: int
    done_items: int
    skipped_items: int
    done_bytes: int
    progress: Progress
    state: dict[str, Any]
    result: Any
    error: str | None

    @property
    def attempts(self) -> int:
        """How many times the job was started (runs, including retries and resumes)."""
        return self.runs

    @property
    def queue_time(self) -> float | None:
        """Seconds between submission and the first start (None if never started)."""
        return None if self.started is None else self.started - self.created

    @property
    def spec_data(self) -> Any:
        """The stored spec parsed as JSON (None if corrupt)."""
        try:
            return json.loads(self.spec)
        except ValueError:
            return None


@dataclasses.dataclass(slots=True)
class CheckpointBatch:
    """What completed since the last checkpoint, written in one transaction."""

    ranges: dict[str, list[tuple[int, int]]] = dataclasses.field(default_factory=dict)
    results: list[tuple[str, int, str]] = dataclasses.field(default_factory=list)
    errors: list[ItemError] = dataclasses.field(default_factory=list)
    done_items: int = 0
    skipped_items: int = 0
    done_bytes: int = 0
    state: str | None = None  # JSON, only when it changed
    progress: str | None = None  # JSON snapshot

    def __bool__(self) -> bool:
        return bool(
            self.ranges
            or self.results
            or self.errors
            or self.state is not None
            or self.progress is not None
        )


_COLUMNS = (
    "id, type, version, spec, status, priority, queue, lease, request, owner, after, "
    "dep_policy, timeout, created, started, finished, updated, run_time, runs, done_items, "
    "skipped_items, done_bytes, progress, state, result, error"
)


def _row_to_info(row: sqlite3.Row) -> JobInfo:
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
        raise StoreFormatError(f"job {row['id']} has unknown status {row['status']!r}") from None
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
        after=tuple(loads(row["after"], ())),
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
        result=loads(row["result"], None),
        error=row["error"],
    )


class JobStore:
    """A parjobs store file. Open with `JobStore.open`; close with `close`."""

    def __init__(self, path: str, conn: sqlite3.Connection) -> None:
        self.path = path
        self._conn = conn
        # Rows of completed ranges per (job, stage), and their count after the last compaction.
        self._rows: dict[tuple[str, str], int] = {}
        self._compacted: dict[tuple[str, str], int] = {}

    # -- opening -------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, timeout: float = 10.0) -> JobStore:
        """Open (creating if needed) the store at ``path``.

        Raises `StoreFormatError` for a file that is not a parjobs store and `StoreError`
        when the store cannot be opened (permissions, locked for longer than ``timeout``).
        """
        path = os.fspath(path)
        _check_header(path)
        try:
            conn = sqlite3.connect(
                path, timeout=timeout, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open job store {path}: {exc}") from exc
        conn.row_factory = sqlite3.Row
        store = cls(path, conn)
        try:
            store._init_schema()
        except StoreError:
            conn.close()
            raise
        except sqlite3.OperationalError as exc:
            conn.close()
            if "locked" in str(exc) or "busy" in str(exc):
                raise StoreError(f"job store {path} is locked by another process") from exc
            raise StoreError(f"cannot use job store {path}: {exc}") from exc
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise StoreFormatError(f"{path} is not a usable parjobs store: {exc}") from exc
        return store

    def _init_schema(self) -> None:
        c = self._conn
        app_id = c.execute("PRAGMA application_id").fetchone()[0]
        version = c.execute("PRAGMA user_version").fetchone()[0]
        tables = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if app_id != APPLICATION_ID and (app_id != 0 or tables):
            raise StoreFormatError(
                f"{self.path} is a SQLite database of another application, not a parjobs store"
            )
        if version > SCHEMA_VERSION:
            raise StoreFormatError(
                f"{self.path} was written by a newer parjobs (schema {version} > "
                f"{SCHEMA_VERSION}); upgrade parjobs"
            )
        c.execute("PRAGMA journal_mode=WAL")
        c.execute("PRAGMA synchronous=NORMAL")
        c.execute("PRAGMA foreign_keys=ON")
        if app_id == 0:
            with self._tx():
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        c.execute(statement)
                c.execute(f"PRAGMA application_id={APPLICATION_ID}")
                c.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        (check,) = c.execute("PRAGMA quick_check(1)").fetchone()
        if check != "ok":
            detail = " ".join(str(check).split())  # one line, for the CLI
            raise StoreFormatError(f"{self.path} is a damaged parjobs store: {detail}")

    def close(self) -> None:
        self._conn.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """An immediate (write-locking) transaction, so read-check-write is atomic across
        processes."""
        try:
            self._conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise StoreError(f"job store {self.path} is locked by another process: {exc}") from exc
        try:
            yield self._conn
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        else:
            self._conn.execute("COMMIT")

    # -- managers and leases -------------------------------------------------------------

    def register_manager(self, manager_id: str) -> None:
        now = time.time()
        with self._tx() as c:
            c.execute(
                "INSERT INTO managers(id, pid, host, started, heartbeat) VALUES (?,?,?,?,?)",
                (manager_id, os.getpid(), socket.gethostname(), now, now),
            )

    def heartbeat(self, manager_id: str) -> None:
        with self._tx() as c:
            c.execute("UPDATE managers SET heartbeat=? WHERE id=?", (time.time(), manager_id))

    def unregister_manager(self, manager_id: str) -> None:
        with self._tx() as c:
            c.execute("UPDATE jobs SET lease=NULL WHERE lease=?", (manager_id,))
            c.execute("DELETE FROM managers WHERE id=?", (manager_id,))

    def _dead_managers(self, c: sqlite3.Connection) -> set[str]:
        host, now = socket.gethostname(), time.time()
        dead = set()
        for row in c.execute("SELECT id, pid, host, heartbeat FROM managers"):
            fresh = now - row["heartbeat"] < LEASE_TIMEOUT
            if not fresh or (row["host"] == host and not _pid_alive(row["pid"])):
                dead.add(row["id"])
        return dead

    def recover(self) -> list[str]:
        """Release leases of dead managers. Their active jobs become interrupted (resumable);
        a pending pause request is honoured (paused), a cancel request stays pending.
        Returns the ids of the jobs recovered."""
        recovered: list[str] = []
        now = time.time()
        with self._tx() as c:
            dead = self._dead_managers(c)
            live = {r[0] for r in c.execute("SELECT id FROM managers")} - dead
            rows = c.execute(
                "SELECT id, status, lease, request FROM jobs WHERE status IN (?,?,?,?)",
                ("queued", "running", "pausing", "cancelling"),
            ).fetchall()
            for row in rows:
                if row["lease"] in live:
                    continue
                status = JobStatus(row["status"])
                if status is JobStatus.QUEUED and row["lease"] is None:
                    continue  # waiting for any manager to pick it up
                new = JobStatus.PAUSED if status is JobStatus.PAUSING else JobStatus.INTERRUPTED
                request = "cancel" if status is JobStatus.CANCELLING else None
                c.execute(
                    "UPDATE jobs SET status=?, lease=NULL, request=?, updated=? WHERE id=?",
                    (new.value, request, now, row["id"]),
                )
                recovered.append(row["id"])
            for manager_id in dead:
                c.execute("DELETE FROM managers WHERE id=?", (manager_id,))
        return recovered

    def claim(self, job_id: str, manager_id: str) -> JobInfo:
        """Take the lease of a queued job and mark it running. Raises `LeaseError` if another
        live manager holds it, `InvalidTransitionError` if it is not queued."""
        from ._exceptions import LeaseError

        now = time.time()
        with self._tx() as c:
            info = self._get(c, job_id)
            if info.lease not in (None, manager_id) and info.lease not in self._dead_managers(c):
                raise LeaseError(f"job {job_id} is being run by another process")
            check_transition(job_id, info.status, JobStatus.RUNNING)
            c.execute(
                "UPDATE jobs SET status='running', lease=?, request=NULL, started=COALESCE("
                "started, ?), updated=?, runs=runs+1, error=NULL WHERE id=?",
                (manager_id, now, now, job_id),
            )
            c.execute("DELETE FROM task_errors WHERE job_id=?", (job_id,))
            return self._get(c, job_id)

    # -- jobs ----------------------------------------------------------------------------

    def insert_job(
        self,
        job_id: str,
        type_name: str,
        version: int,
        spec: str,
        *,
        priority: int = 0,
        queue: str = "default",
        lease: str | None = None,
        idempotency_key: str | None = None,
        owner: str | None = None,
        after: Iterable[str] = (),
        dep_policy: str = "skip",
        timeout: float | None = None,
    ) -> tuple[JobInfo, bool]:
        """Insert a queued job; with an idempotency key that exists, return the existing job
        instead. Returns (info, created). Prerequisites (``after``) must exist."""
        now = time.time()
        after = list(after)
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
                    priority,
                    queue,
                    lease,
                    now,
                    now,
                    idempotency_key,
                    owner,
                    json.dumps(after) if after else None,
                    dep_policy,
                    timeout,
                ),
            )
            return self._get(c, job_id), True

    def _get(self, c: sqlite3.Connection, job_id: str) -> JobInfo:
        row = c.execute(f"SELECT {_COLUMNS} FROM jobs WHERE id=?", (job_id,)).fetchone()
        if row is None:
            raise JobNotFoundError(f"no job with id {job_id!r}")
        return _row_to_info(row)

    def get(self, job_id: str) -> JobInfo:
        return self._get(self._conn, job_id)

    def resolve_id(self, prefix: str) -> str:
        """The full id of the one job whose id starts with ``prefix``."""
        rows = self._conn.execute(
            "SELECT id FROM jobs WHERE id >= ? AND id < ? LIMIT 2", (prefix, prefix + "\uffff")
        ).fetchall()
        if not rows:
            raise JobNotFoundError(f"no job with id {prefix!r}")
        if len(rows) > 1:
            raise JobNotFoundError(f"job id prefix {prefix!r} is ambiguous")
        return str(rows[0][0])

    def list_jobs(
        self,
        statuses: Iterable[JobStatus] | None = None,
        *,
        type: str | None = None,
        owner: str | None = None,
        order: str = "created",
        limit: int = -1,
        offset: int = 0,
    ) -> list[JobInfo]:
        """Jobs filtered by status, type and owner; ordered by ``created``, ``finished``,
        ``priority`` or ``run_time`` (prefix ``-`` for descending); paged."""
        where: list[str] = []
        params: list[Any] = []
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
        sql = f"SELECT {_COLUMNS} FROM jobs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY {column} {direction}, rowid {direction} LIMIT ? OFFSET ?"
        params += [limit, offset]
        return [_row_to_info(r) for r in self._conn.execute(sql, params)]

    def status_counts(self) -> dict[str, int]:
        rows = self._conn.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status")
        return {r[0]: r[1] for r in rows}

    def statuses(self, job_ids: Iterable[str]) -> dict[str, JobStatus]:
        ids = list(job_ids)
        if not ids:
            return {}
        rows = self._conn.execute(
            f"SELECT id, status FROM jobs WHERE id IN ({','.join('?' * len(ids))})", ids
        )
        return {r[0]: JobStatus(r[1]) for r in rows}

    def set_priority(self, job_id: str, priority: int) -> JobInfo:
        """Change the priority of a queued (or resting) job; running jobs keep theirs."""
        with self._tx() as c:
            info = self._get(c, job_id)
            if info.status not in (JobStatus.QUEUED, JobStatus.PAUSED, JobStatus.INTERRUPTED):
                from ._exceptions import InvalidTransitionError

                raise InvalidTransitionError(
                    f"cannot change the priority of job {job_id}: it is {info.status.value}"
                )
            c.execute(
                "UPDATE jobs SET priority=?, updated=? WHERE id=?", (priority, time.time(), job_id)
            )
            return self._get(c, job_id)

    def purge(self, older_than: float, statuses: Iterable[JobStatus]) -> list[str]:
        """Delete jobs in ``statuses`` that finished before ``older_than`` (epoch seconds)."""
        values = [JobStatus(s).value for s in statuses]
        rows = self._conn.execute(
            f"SELECT id FROM jobs WHERE status IN ({','.join('?' * len(values))}) "
            "AND finished IS NOT NULL AND finished < ?",
            (*values, older_than),
        ).fetchall()
        ids = [r[0] for r in rows]
        for job_id in ids:
            self.delete(job_id)
        return ids

    def transition(
        self,
        job_id: str,
        new: JobStatus,
        *,
        expect: JobStatus | None = None,
        **fields: Any,
    ) -> JobInfo:
        """Atomically move a job to ``new`` (checking the transition), updating ``fields``
        (result, error, progress, lease, request, finished, run_time). With ``expect``, a
        compare-and-set: fail unless the job is still in that status."""
        now = time.time()
        with self._tx() as c:
            info = self._get(c, job_id)
            if expect is not None and info.status is not expect:
                from ._exceptions import InvalidTransitionError

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
            return self._get(c, job_id)

    def request(self, job_id: str, request: str) -> None:
        """Ask the process running ``job_id`` to pause or cancel it."""
        with self._tx() as c:
            c.execute(
                "UPDATE jobs SET request=?, updated=? WHERE id=?", (request, time.time(), job_id)
            )

    def requests_for(self, manager_id: str) -> list[tuple[str, str]]:
        rows = self._conn.execute(
            "SELECT id, request FROM jobs WHERE lease=? AND request IS NOT NULL", (manager_id,)
        )
        return [(r[0], r[1]) for r in rows]

    def delete(self, job_id: str) -> None:
        for key in [k for k in self._rows if k[0] == job_id]:
            self._rows.pop(key, None)
            self._compacted.pop(key, None)
        with self._tx() as c:
            for table in ("completed", "task_results", "task_errors"):
                c.execute(f"DELETE FROM {table} WHERE job_id=?", (job_id,))
            c.execute("DELETE FROM jobs WHERE id=?", (job_id,))

    # -- checkpoints ---------------------------------------------------------------------

    def checkpoint(self, job_id: str, batch: CheckpointBatch) -> None:
        """Record one batch of completions atomically (only what is new since the last)."""
        if not batch:
            return
        with self._tx() as c:
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
                    "INSERT INTO task_errors(job_id, stage, idx, label, error, message, at) "
                    "VALUES (?,?,?,?,?,?,?)",
                    [
                        (job_id, e.stage, e.index, e.label, e.error, e.message, now)
                        for e in batch.errors
                    ],
                )
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
            c.execute(f"UPDATE jobs SET {', '.join(sets)} WHERE id=?", (*params, job_id))

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
            "SELECT stage, idx, label, error, message FROM task_errors WHERE job_id=? "
            "ORDER BY rowid LIMIT ? OFFSET ?",
            (job_id, limit, offset),
        )
        return [
            ItemError(index=r[1], label=r[2], error=r[3], message=r[4], stage=r[0]) for r in rows
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
        seconds), whether it is alive (the rule recovery uses) and how many jobs it runs.
        Read-only: an operator's view of the hosts, not a lease operation."""
        c = self._conn
        dead = self._dead_managers(c)
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


def _check_header(path: str) -> None:
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except FileNotFoundError:
        return
    except IsADirectoryError:
        raise StoreFormatError(f"{path} is a directory, not a parjobs store") from None
    except OSError as exc:
        raise StoreError(f"cannot read job store {path}: {exc.strerror}") from exc
    if head and head != b"SQLite format 3\x00":
        raise StoreFormatError(f"{path} is not a parjobs store (not a SQLite database)")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
