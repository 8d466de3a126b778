"""The PostgreSQL side of a job store: store URLs (recognized, checked, shown without their
password), the versioned schema parjobs creates and migrates in the database's ``parjobs``
schema, and the format guards that refuse a foreign or newer one. psycopg is imported only
here and in `_pgstore`, and only when a PostgreSQL store is opened (the ``[postgres]``
extra)."""

from __future__ import annotations

import secrets
import urllib.parse
from typing import TYPE_CHECKING

from ._exceptions import StoreError, StoreFormatError
from ._itemlog import INSERT_CHUNK, repack

if TYPE_CHECKING:
    import psycopg

#: The URL schemes that name a PostgreSQL store (anything else is a SQLite file path).
SCHEMES = ("postgresql://", "postgres://")
#: The PostgreSQL schema (namespace) holding parjobs' tables.
NAMESPACE = "parjobs"
#: What ``meta.application`` holds in a parjobs store.
APPLICATION = "parjobs"
SCHEMA_VERSION = 3
#: Nullable columns added after their table's migration, when a store lacks them (table,
#: column, type): without a new version, since an older parjobs names the columns it reads
#: and writes and works on with them, where a new version would have it refuse the store.
#: ``pid_ns``: managers of other pid namespaces told apart.
LATER_COLUMNS = (("managers", "pid_ns", "TEXT"),)
#: Indexes added after their table's migration, made when a store lacks them (name, table,
#: column), without a new version for the same reason. ``jobs_type``: a job's undos found
#: without reading every job (`JobManager.delete`, once per job ``jobs prune`` deletes).
LATER_INDEXES = (("jobs_type", "jobs", "type"),)
#: Advisory lock keys (two int4s: "pjob", then which lock).
LOCK_SPACE = 0x706A6F62
LOCK_SCHEMA = 1  # creating or migrating the schema
LOCK_CLAIM = 2  # claims and recovery: running counts and dead managers' jobs stay put

#: Migrations: the statements that take a store from version ``n - 1`` to ``n``.
MIGRATIONS: dict[int, str] = {
    1: """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE managers (
    id TEXT PRIMARY KEY, pid BIGINT NOT NULL, host TEXT NOT NULL,
    started DOUBLE PRECISION NOT NULL, heartbeat DOUBLE PRECISION NOT NULL,
    pid_start TEXT
);
CREATE TABLE jobs (
    rowid BIGINT GENERATED ALWAYS AS IDENTITY,  -- insertion order, as SQLite's rowid
    id TEXT PRIMARY KEY,
    type TEXT NOT NULL, version BIGINT NOT NULL, spec TEXT NOT NULL,
    status TEXT NOT NULL, priority BIGINT NOT NULL DEFAULT 0,
    queue TEXT NOT NULL DEFAULT 'default',
    lease TEXT, request TEXT, owner TEXT, after TEXT,
    dep_policy TEXT NOT NULL DEFAULT 'skip',
    timeout DOUBLE PRECISION,
    created DOUBLE PRECISION NOT NULL, started DOUBLE PRECISION,
    finished DOUBLE PRECISION, updated DOUBLE PRECISION NOT NULL,
    run_time DOUBLE PRECISION NOT NULL DEFAULT 0,
    runs BIGINT NOT NULL DEFAULT 0,
    done_items BIGINT NOT NULL DEFAULT 0,
    skipped_items BIGINT NOT NULL DEFAULT 0,
    done_bytes BIGINT NOT NULL DEFAULT 0,
    progress TEXT, state TEXT, result TEXT, error TEXT,
    idempotency_key TEXT UNIQUE
);
CREATE INDEX jobs_status ON jobs(status);
CREATE INDEX jobs_owner ON jobs(owner);
CREATE INDEX jobs_lease ON jobs(lease);
CREATE INDEX jobs_next ON jobs(priority DESC, created, id)
    WHERE lease IS NULL AND status IN ('queued', 'interrupted');
CREATE TABLE completed (
    job_id TEXT NOT NULL, stage TEXT NOT NULL, start BIGINT NOT NULL, stop BIGINT NOT NULL
);
CREATE INDEX completed_job ON completed(job_id, stage);
CREATE TABLE task_results (
    job_id TEXT NOT NULL, stage TEXT NOT NULL, idx BIGINT NOT NULL, value TEXT NOT NULL,
    PRIMARY KEY (job_id, stage, idx)
);
CREATE TABLE task_errors (
    rowid BIGINT GENERATED ALWAYS AS IDENTITY,
    job_id TEXT NOT NULL, stage TEXT NOT NULL, idx BIGINT NOT NULL,
    label TEXT NOT NULL, error TEXT NOT NULL, message TEXT NOT NULL,
    at DOUBLE PRECISION NOT NULL,
    traceback TEXT
);
CREATE INDEX task_errors_job ON task_errors(job_id);
""",
    2: """
CREATE TABLE items (
    job_id TEXT NOT NULL, seq BIGINT NOT NULL,
    stage TEXT NOT NULL, idx BIGINT NOT NULL, action TEXT NOT NULL,
    source BYTEA NOT NULL, destination BYTEA,
    bytes BIGINT NOT NULL, detail TEXT, error TEXT,
    size BIGINT, mtime_ns BIGINT, inode BIGINT,
    PRIMARY KEY (job_id, seq)
);
""",
    # The item log packed, one row per checkpoint; version 2's rows move over (`_pack_items`).
    3: """
CREATE TABLE item_log (
    job_id TEXT NOT NULL,
    first_seq BIGINT NOT NULL, last_seq BIGINT NOT NULL,
    records BIGINT NOT NULL, failed BIGINT NOT NULL,
    actions TEXT NOT NULL,
    data BYTEA NOT NULL,
    PRIMARY KEY (job_id, first_seq)
);
""",
}


def _pack_items(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    """Move version 2's item log (a row per record) into ``item_log`` (packed), every
    record with its ``seq``, and drop the old table."""
    with conn.cursor(name="parjobs_old_items") as old:  # a server-side cursor: streamed
        old.execute(
            "SELECT job_id, seq, stage, idx, action, source, destination, bytes, detail, "
            "error, size, mtime_ns, inode FROM items ORDER BY job_id, seq"
        )
        for chunk in repack(old):  # (not executemany over it: that holds the connection)
            conn.execute(INSERT_CHUNK.replace("?", "%s"), chunk)
    conn.execute("DROP TABLE items")


def _add_later_columns(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    """Add the `LATER_COLUMNS` and `LATER_INDEXES` a store lacks (looked up first: an
    ``ALTER TABLE`` or ``CREATE INDEX`` locks its table, even when ``IF NOT EXISTS`` finds
    nothing to do)."""
    present = set(
        conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema=%s",
            (NAMESPACE,),
        )
    )
    for table, column, kind in LATER_COLUMNS:
        if (table, column) not in present:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
    indexes = {
        str(r[0])
        for r in conn.execute("SELECT indexname FROM pg_indexes WHERE schemaname=%s", (NAMESPACE,))
    }
    for name, table, column in LATER_INDEXES:
        if name not in indexes:
            conn.execute(f"CREATE INDEX IF NOT EXISTS {name} ON {table}({column})")


def is_url(target: str) -> bool:
    """Whether ``target`` names a PostgreSQL store rather than a SQLite file."""
    return target.lower().startswith(SCHEMES)


def redact(url: str) -> str:
    """``url`` without its password, for messages and listings."""
    try:
        parts = urllib.parse.urlsplit(url)
        if parts.password is None:
            return url
        user = parts.username or ""
        host = parts.netloc.rpartition("@")[2]
        return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
    except ValueError:
        return "the PostgreSQL store URL"


def check_url(url: str) -> None:
    """`StoreError` (nothing connected) for a URL psycopg would not take."""
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict

    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError as exc:
        raise StoreError(f"invalid PostgreSQL store URL {redact(url)}: {exc}") from None
    if not parts.path.strip("/"):
        raise StoreError(
            f"invalid PostgreSQL store URL {redact(url)}: it names no database "
            "(postgresql://user@host/DATABASE)"
        )
    try:
        conninfo_to_dict(url)
    except ProgrammingError as exc:
        raise StoreError(f"invalid PostgreSQL store URL {redact(url)}: {one_line(exc)}") from None


def one_line(exc: BaseException) -> str:
    """The first line of a driver message (its DETAIL and HINT lines are left out)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def init_schema(conn: psycopg.Connection[tuple[object, ...]], where: str) -> None:
    """Create the schema in a database that has none, migrate an older one, and refuse
    (`StoreFormatError`, nothing written) a ``parjobs`` namespace that is not a parjobs
    store or was written by a newer parjobs. Serialized across processes by an advisory
    lock: several workers may start at once on a new database."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (LOCK_SPACE, LOCK_SCHEMA))
        tables = {
            r[0]
            for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname=%s", (NAMESPACE,)
            )
        }
        version = 0
        if tables:
            if "meta" not in tables:
                raise StoreFormatError(
                    f"{where} is not a parjobs store: its schema {NAMESPACE!r} holds tables "
                    "of another application"
                )
            meta = {str(k): str(v) for k, v in conn.execute("SELECT key, value FROM meta")}
            if meta.get("application") != APPLICATION:
                raise StoreFormatError(
                    f"{where} is not a parjobs store: schema {NAMESPACE!r} belongs to "
                    f"{meta.get('application')!r}"
                )
            try:
                version = int(meta.get("schema_version", ""))
            except ValueError:
                raise StoreFormatError(
                    f"{where} is a damaged parjobs store: no schema version"
                ) from None
            if version > SCHEMA_VERSION:
                raise StoreFormatError(
                    f"{where} was written by a newer parjobs (schema {version} > "
                    f"{SCHEMA_VERSION}); upgrade parjobs"
                )
        else:
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {NAMESPACE}")
        for step in range(version + 1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS[step].split(";"):
                if statement.strip():
                    conn.execute(statement)
            if step == 3:
                _pack_items(conn)
        _add_later_columns(conn)
        if version == 0:
            conn.execute(
                "INSERT INTO meta(key, value) VALUES ('application', %s), ('store_id', %s)",
                (APPLICATION, secrets.token_hex(8)),
            )
        if version < SCHEMA_VERSION:
            conn.execute(
                "INSERT INTO meta(key, value) VALUES ('schema_version', %s) "
                "ON CONFLICT (key) DO UPDATE SET value=EXCLUDED.value",
                (str(SCHEMA_VERSION),),
            )
