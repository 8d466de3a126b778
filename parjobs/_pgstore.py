"""`PostgresStore`: the job store that managers on several hosts share, on PostgreSQL
through psycopg 3 (sync, on the manager's store thread like SQLite's connection).

It is the SQLite store's logic on another connection: the same statements (translated:
``?`` placeholders, ``INSERT OR REPLACE``, ``LIMIT -1``), the same compare-and-set
transitions and compact checkpoints, so both stores keep one behaviour. What differs is
locking. SQLite's ``BEGIN IMMEDIATE`` serializes every write; here a job row read in a
transaction is locked (``SELECT ... FOR UPDATE``) until it commits, so a read-check-write on
one job is atomic, while checkpoints of different jobs go on side by side. Claims and the
recovery of dead managers' jobs also take one advisory lock, so the running jobs counted
against queue capacities cannot change under a claim; the claim's candidate rows are read
``FOR UPDATE SKIP LOCKED``. A deadlock or a race on an idempotency key retries the call. A
status change sends ``NOTIFY parjobs`` (never a checkpoint: a NOTIFY takes a global lock at
commit), which `listener` turns into wake-ups. Every driver error leaves as `StoreError`.
"""

from __future__ import annotations

import functools
import os
import re
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar, cast

import psycopg
import psycopg.errors
from psycopg.adapt import Loader

from ._environ import positive_or
from ._exceptions import StoreError
from ._pgschema import (
    LOCK_CLAIM,
    LOCK_SPACE,
    NAMESPACE,
    check_url,
    init_schema,
    one_line,
    redact,
)
from ._records import JobInfo
from ._store import _COLUMNS, SQLiteJobStore, _row_to_info
from ._util import state_dir

R = TypeVar("R")

#: The notification channel of job status changes.
CHANNEL = "parjobs"
#: TCP keepalives of the connection that waits for notifications (seconds, libpq's
#: parameters; the server's ``tcp_keepalives_*`` the same): it only ever reads, so a server
#: gone without a word (a network black hole, a host powered off) would leave it waiting for
#: good. After ``idle`` seconds of silence the kernel probes the server every ``interval``
#: seconds, and after ``count`` probes unanswered (25 s in all) the connection fails and the
#: manager opens another one. The server's side ends the session of a listener gone so,
#: whose unread notifications would otherwise pile up in its queue.
KEEPALIVES = {"keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3}
#: Conflict keys of the tables SQLite writes with ``INSERT OR REPLACE``.
_KEYS = {"task_results": ("job_id", "stage", "idx")}
_REPLACE = re.compile(r"INSERT OR REPLACE INTO (\w+)\s*\(([^)]*)\)(.*)", re.DOTALL)
#: Errors after which the whole call is run again (its transaction was rolled back).
_RETRY = (
    psycopg.errors.DeadlockDetected,
    psycopg.errors.SerializationFailure,
    psycopg.errors.UniqueViolation,
)
#: Store calls that change a job's status: each sends one NOTIFY.
_NOTIFYING = frozenset(
    {"insert_job", "claim", "claim_next", "requeue", "transition", "request", "recover"}
    | {"set_priority"}
)


class _Row(tuple[Any, ...]):
    """A result row indexed by position or by column name (as ``sqlite3.Row``)."""

    _names: dict[str, int] = {}

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return tuple.__getitem__(self, self._names[key])
        return tuple.__getitem__(self, key)


def _row_factory(cursor: psycopg.Cursor[Any]) -> Callable[[Sequence[Any]], _Row]:
    names = {d.name: i for i, d in enumerate(cursor.description or ())}
    cls = type("Row", (_Row,), {"_names": names})
    return lambda values: cls(values)


class _NumericLoader(Loader):
    """``SUM`` of BIGINT columns is NUMERIC: load whole numbers as int, as SQLite gives."""

    def load(self, data: Any) -> int | float:
        text = bytes(data).decode()
        try:
            return int(text)
        except ValueError:
            return float(text)


def _translate(sql: str) -> tuple[str, tuple[int, ...]]:
    """A SQLite statement of `SQLiteJobStore` in PostgreSQL's dialect, and the positions
    of its ``LIMIT`` parameters (SQLite's -1, no limit, is PostgreSQL's NULL)."""
    match = _REPLACE.fullmatch(sql.strip())
    if match is not None:
        table, columns, rest = match[1], match[2], match[3]
        keys = _KEYS[table]
        names = [c.strip() for c in columns.split(",")]
        sets = ", ".join(f"{n}=EXCLUDED.{n}" for n in names if n not in keys)
        sql = (
            f"INSERT INTO {table}({columns}){rest} "
            f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {sets}"
        )
    pieces = sql.split("?")
    limits = tuple(
        i for i, piece in enumerate(pieces[:-1]) if piece.rstrip().upper().endswith("LIMIT")
    )
    return "%s".join(p.replace("%", "%%") for p in pieces), limits


class _Connection:
    """The part of ``sqlite3.Connection`` that `SQLiteJobStore` uses, on psycopg."""

    def __init__(self, raw: psycopg.Connection[Any]) -> None:
        self.raw = raw
        self._sql: dict[str, tuple[str, tuple[int, ...]]] = {}

    def _prepare(self, sql: str, params: Sequence[Any]) -> tuple[str, Sequence[Any]]:
        known = self._sql.get(sql)
        if known is None:
            known = self._sql[sql] = _translate(sql)
        text, limits = known
        if limits:
            params = list(params)
            for i in limits:
                if params[i] is not None and params[i] < 0:
                    params[i] = None
        return text, params

    def execute(self, sql: str, params: Sequence[Any] = ()) -> psycopg.Cursor[Any]:
        text, params = self._prepare(sql, params)
        return self.raw.execute(text, params)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> psycopg.Cursor[Any]:
        text, _ = self._prepare(sql, ())
        cur = self.raw.cursor()
        cur.executemany(text, rows)
        return cur

    def close(self) -> None:
        self.raw.close()


def _connect(url: str, *, listening: bool = False) -> psycopg.Connection[Any]:
    """A connection to the store at ``url`` whose unqualified names are parjobs' tables;
    `StoreError` naming the store (without its password) when it cannot be made.
    ``listening``: the connection that waits for notifications, with TCP keepalives
    (`KEEPALIVES`) on both its ends."""
    check_url(url)
    options = f"-c search_path={NAMESPACE}"
    keepalives: dict[str, Any] = {}
    if listening:
        keepalives = {"keepalives": 1, **KEEPALIVES}
        options += "".join(f" -c tcp_{name}={value}" for name, value in KEEPALIVES.items())
    try:
        raw = psycopg.connect(
            url,
            autocommit=True,
            connect_timeout=int(positive_or("PARJOBS_PG_CONNECT_TIMEOUT", True, 10)),
            options=options,
            application_name="parjobs",
            row_factory=_row_factory,
            **keepalives,
        )
    except psycopg.Error as exc:
        raise StoreError(f"cannot connect to job store {redact(url)}: {one_line(exc)}") from None
    raw.adapters.register_loader("numeric", _NumericLoader)
    return raw


def files_dir(url: str) -> str:
    """Where the jobs of the store at ``url`` keep their private files (manifests):
    ``$PARJOBS_JOB_FILES`` (a directory on storage all the hosts share, for a farm), else
    ``$XDG_STATE_HOME/parjobs/postgres/<host>-<port>-<database>``."""
    base = os.environ.get("PARJOBS_JOB_FILES", "")
    if not os.path.isabs(base):
        parts = urllib.parse.urlsplit(url)
        name = f"{parts.hostname or 'local'}-{parts.port or 5432}-{parts.path.strip('/')}"
        base = os.path.join(state_dir(), "postgres", re.sub(r"[^\w.-]", "_", name))
    return os.path.join(base, "jobs")


class PostgresStore(SQLiteJobStore):
    """A parjobs store in a PostgreSQL database. Open with `PostgresStore.open(url)`.

    ``path`` is where its jobs' private files go (``<path>.d/<job id>/``, see `files_dir`);
    ``url`` the database, without its password."""

    _SKIP_LOCKED = " FOR UPDATE SKIP LOCKED"

    def __init__(self, url: str, raw: psycopg.Connection[Any]) -> None:
        super().__init__(files_dir(url), cast(Any, _Connection(raw)))
        self.url = redact(url)
        self._url = url
        self._raw = raw
        self._in_tx = False
        self._identity: str | None = None

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, timeout: float = 10.0) -> PostgresStore:
        """Connect to the database at the URL ``path`` and check (creating or migrating)
        its schema. `StoreError` for a bad URL, a server that does not answer, a refused
        login; `StoreFormatError` for a ``parjobs`` schema that is not a parjobs store or
        is newer than this parjobs. Nothing is written in those cases."""
        url = os.fspath(path)
        raw = _connect(url)
        try:
            init_schema(raw, redact(url))
        except StoreError:
            raw.close()
            raise
        except psycopg.Error as exc:
            raw.close()
            raise StoreError(f"cannot use job store {redact(url)}: {one_line(exc)}") from None
        return cls(url, raw)

    def close(self) -> None:
        self._raw.close()

    def reopen(self) -> PostgresStore:
        """Another connection to this database (the URL with its password is ours only)."""
        return PostgresStore.open(self._url)

    @contextmanager
    def _tx(self) -> Iterator[Any]:
        with self._raw.transaction():
            self._in_tx = True
            try:
                yield self._conn
            finally:
                self._in_tx = False

    def _get(self, c: Any, job_id: str, *, result: bool = True) -> JobInfo:
        """The job's record; inside a transaction its row stays locked until commit."""
        from ._exceptions import JobNotFoundError

        lock = " FOR UPDATE" if self._in_tx else ""
        row = c.execute(f"SELECT {_COLUMNS} FROM jobs WHERE id=?{lock}", (job_id,)).fetchone()
        if row is None:
            raise JobNotFoundError(f"no job with id {job_id!r}")
        return _row_to_info(row, result=result)

    def _clock(self, c: Any) -> float:
        """The database server's clock: managers on hosts whose clocks disagree write and
        judge heartbeats by one clock (a host minutes behind looked dead while it ran its
        jobs; one ahead that died kept them as long)."""
        return float(c.execute("SELECT EXTRACT(EPOCH FROM clock_timestamp())").fetchone()[0])

    def _claim_lock(self, c: Any) -> None:
        c.execute("SELECT pg_advisory_xact_lock(?, ?)", (LOCK_SPACE, LOCK_CLAIM))

    def _recover(self, c: Any) -> list[str]:
        self._claim_lock(c)  # two recoveries must not both rest (and requeue) one job
        return super()._recover(c)

    def identity(self) -> str | None:
        """The random id parjobs gave the store when it created it: None once the schema is
        gone (dropped, or the database replaced by one without it); the last one known
        while the server cannot be reached (that is not "gone")."""
        try:
            if self._raw.closed:
                self._reconnect()
            row = self._conn.execute("SELECT value FROM meta WHERE key='store_id'").fetchone()
        except psycopg.errors.UndefinedTable:
            return None
        except (psycopg.Error, StoreError):
            return self._identity
        self._identity = None if row is None else str(row[0])
        return self._identity

    def listener(self) -> PgListener:
        """A dedicated connection listening on the ``parjobs`` channel."""
        raw = _connect(self._url, listening=True)
        try:
            raw.execute(f"LISTEN {CHANNEL}")
        except psycopg.Error as exc:
            raw.close()
            raise StoreError(f"cannot listen on job store {self.url}: {one_line(exc)}") from None
        return PgListener(raw, self.url)

    def _reconnect(self) -> None:
        """Open a new connection after the server dropped the old one (a restart)."""
        self._raw = _connect(self._url)
        self._conn = cast(Any, _Connection(self._raw))

    def _notify(self, payload: str) -> None:
        self._raw.execute("SELECT pg_notify(%s, %s)", (CHANNEL, payload))


class PgListener:
    """Status-change notifications of a PostgreSQL store, read without blocking."""

    def __init__(self, raw: psycopg.Connection[Any], url: str) -> None:
        self._raw = raw
        self._url = url
        self._asked = False  # a ping's answer is awaited

    def fileno(self) -> int:
        return self._raw.fileno()

    def ping(self) -> bool:
        """Ask the server to listen again: a no-op it answers (and the session's last query
        stays ``LISTEN parjobs``), read by `drain`. Sent once until answered."""
        if not self._asked:
            try:
                self._raw.pgconn.send_query(f"LISTEN {CHANNEL}".encode())
            except psycopg.Error as exc:
                raise self._lost(exc) from None
            self._asked = True
        return True

    def drain(self) -> list[str]:
        pg = self._raw.pgconn
        try:
            pg.consume_input()
            while self._asked and not pg.is_busy():  # the ping's answer, read in full
                self._asked = pg.get_result() is not None
        except psycopg.Error as exc:
            raise self._lost(exc) from None
        ids = []
        while (note := pg.notifies()) is not None:
            ids.append(note.extra.decode("utf-8", "replace"))
        return ids

    def _lost(self, exc: psycopg.Error) -> StoreError:
        return StoreError(f"lost the notifications of {self._url}: {one_line(exc)}")

    def close(self) -> None:
        self._raw.close()


def _driver_errors(name: str, method: Callable[..., R]) -> Callable[..., R]:
    """``method`` with psycopg errors turned into `StoreError` (naming the store, never its
    password), retried after a deadlock or a lost race, and followed by a NOTIFY when it
    changed a job's status."""

    @functools.wraps(method)
    def call(self: PostgresStore, *args: Any, **kwargs: Any) -> R:
        for attempt in range(5):
            try:
                if self._raw.closed:
                    self._reconnect()
                result = method(self, *args, **kwargs)
                if name in _NOTIFYING and not (result is None or result is False or result == []):
                    job = getattr(result, "id", None) or (args[0] if args else "")
                    self._notify(job if isinstance(job, str) else "")
                return result
            except _RETRY:
                if attempt == 4:
                    raise StoreError(f"job store {self.url} stayed busy (conflicts)") from None
            except psycopg.Error as exc:
                raise StoreError(f"job store {self.url} failed: {one_line(exc)}") from None
        raise AssertionError("unreachable")

    return call


for _name in [n for n in dir(SQLiteJobStore) if not n.startswith("_")]:
    _method = getattr(PostgresStore, _name)
    if callable(_method) and _name not in ("open", "reopen", "close", "listener", "identity"):
        setattr(PostgresStore, _name, _driver_errors(_name, _method))
del _name, _method
