"""The SQLite side of a store file: its schema and format guards (application id, schema
version, integrity), opening a connection, and SQLite errors explained in plain words."""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Callable
from contextlib import AbstractContextManager

from ._exceptions import StoreError, StoreFormatError
from ._itemlog import INSERT_CHUNK, repack

#: PRAGMA application_id of a parjobs store: b"pjob".
APPLICATION_ID = 0x706A6F62
#: 2: the item log packed, one row per checkpoint (``item_log``), not one per record
#: (schema 1's ``items``, moved over when an older store is opened).
SCHEMA_VERSION = 2

SCHEMA = """
CREATE TABLE IF NOT EXISTS managers (
    id TEXT PRIMARY KEY, pid INTEGER NOT NULL, host TEXT NOT NULL,
    started REAL NOT NULL, heartbeat REAL NOT NULL,
    pid_start TEXT,             -- boot id and start time of the process: guards pid reuse
    pid_ns TEXT                 -- its pid namespace: a pid means something only in it
);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    type TEXT NOT NULL, version INTEGER NOT NULL, spec TEXT NOT NULL,
    status TEXT NOT NULL, priority INTEGER NOT NULL DEFAULT 0,
    queue TEXT NOT NULL DEFAULT 'default',
    lease TEXT,                 -- manager holding the lease while the job runs
    request TEXT,               -- 'pause'/'cancel' asked through the store (on a resting
                                -- job 'cancel' is a cancel pending), 'undo': a job completed
                                -- with errors that an undo took (never resumed)
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
CREATE INDEX IF NOT EXISTS jobs_type ON jobs(type);
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
    label TEXT NOT NULL, error TEXT NOT NULL, message TEXT NOT NULL, at REAL NOT NULL,
    traceback TEXT              -- the failure's Python traceback (NULL: none kept)
);
CREATE INDEX IF NOT EXISTS task_errors_job ON task_errors(job_id);
CREATE TABLE IF NOT EXISTS item_log (
    job_id TEXT NOT NULL,
    first_seq INTEGER NOT NULL, last_seq INTEGER NOT NULL,  -- seq: a record's place in the log
    records INTEGER NOT NULL, failed INTEGER NOT NULL,       -- how many, of which 'failed'
    actions TEXT NOT NULL,      -- JSON: records per action
    data BLOB NOT NULL,         -- a checkpoint's records, packed (parjobs/_itemlog.py)
    PRIMARY KEY (job_id, first_seq)  -- (a rowid table: its rows are kilobytes)
);
"""

#: Tables added after schema 1 was released, created in an older store when it is opened.
LATER_TABLES = ("item_log",)
#: Nullable columns added after schema 1 was released, added to an older store when it is
#: opened (table, column, type): without a new version, since an older parjobs names the
#: columns it reads and writes and works on with them, where a new version would have it
#: refuse the store. ``pid_start``: pid reuse guarded against; ``traceback``: failures'
#: tracebacks kept; ``pid_ns``: managers of other pid namespaces told apart.
LATER_COLUMNS = (
    ("managers", "pid_start", "TEXT"),
    ("task_errors", "traceback", "TEXT"),
    ("managers", "pid_ns", "TEXT"),
)
#: Indexes added after schema 1 was released, made in an older store when it is opened
#: (name, table, column): an older parjobs works on with them. ``jobs_type``: a job's undos
#: are found without reading every job (a ``jobs prune`` of 46,000 jobs read them all once
#: per job deleted, 27 ms each).
LATER_INDEXES = (("jobs_type", "jobs", "type"),)


_NOT_REGULAR = {
    stat.S_IFDIR: "a directory",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
}


def check_header(path: str) -> None:
    """A store is a regular file or nothing (checked before anything opens it: opening a
    FIFO blocks, and SQLite would put a ``-journal`` beside a device)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return  # a new store (a dangling symlink: SQLite creates its target)
    except OSError as exc:
        raise StoreError(f"cannot read job store {path}: {exc.strerror}") from exc
    if not stat.S_ISREG(mode):
        kind = _NOT_REGULAR.get(stat.S_IFMT(mode), "not a regular file")
        raise StoreFormatError(f"{path} is {kind}, not a parjobs store")
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


def init_schema(
    c: sqlite3.Connection,
    path: str,
    tx: Callable[[], AbstractContextManager[object]],
    *,
    new: bool = False,
) -> None:
    """Check the format, version and integrity of the store ``c`` opens (creating the
    schema in a new file) and set its pragmas; `StoreFormatError` if it is not usable.
    ``tx`` opens a write transaction; ``new``: this process just created the empty file."""
    if new:
        _create(c, tx)
        return
    app_id = c.execute("PRAGMA application_id").fetchone()[0]
    version = c.execute("PRAGMA user_version").fetchone()[0]
    catalog = c.execute("SELECT type, name FROM sqlite_master").fetchall()  # (read once)
    tables = {name for kind, name in catalog if kind == "table"}
    indexes = {name for kind, name in catalog if kind == "index"}
    if app_id != APPLICATION_ID and (app_id != 0 or tables):
        raise StoreFormatError(
            f"{path} is a SQLite database of another application, not a parjobs store"
        )
    if version > SCHEMA_VERSION:
        raise StoreFormatError(
            f"{path} was written by a newer parjobs (schema {version} > "
            f"{SCHEMA_VERSION}); upgrade parjobs"
        )
    c.execute("PRAGMA journal_mode=WAL")
    c.execute("PRAGMA synchronous=NORMAL")
    c.execute("PRAGMA foreign_keys=ON")
    if app_id == 0:
        _write_schema(c, tx)
    for table, column, kind in LATER_COLUMNS:
        if not _has_column(c, table, column):
            with tx():  # (looked at again: another process may have added it meanwhile)
                if not _has_column(c, table, column):
                    c.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
    for name, table, column in LATER_INDEXES:
        if name not in indexes:  # (CREATE ... IF NOT EXISTS: a store _write_schema just made)
            with tx():
                c.execute(f"CREATE INDEX IF NOT EXISTS {name} ON {table}({column})")
    missing = [t for t in LATER_TABLES if t not in tables]
    if app_id != 0 and missing:  # a store made before these tables existed
        with tx():
            for statement in SCHEMA.split(";"):
                if any(f"EXISTS {t} " in statement for t in missing):
                    c.execute(statement)
    if app_id != 0 and version < SCHEMA_VERSION:
        with tx():
            if "items" in tables:
                _pack_items(c)
            c.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    (check,) = c.execute("PRAGMA quick_check(1)").fetchone()
    if check != "ok":
        detail = " ".join(str(check).split())  # one line, for the CLI
        raise StoreFormatError(f"{path} is a damaged parjobs store: {detail}")


def _has_column(c: sqlite3.Connection, table: str, column: str) -> bool:
    return any(r[1] == column for r in c.execute(f"PRAGMA table_info({table})"))


def _pack_items(c: sqlite3.Connection) -> None:
    """Move schema 1's item log (a row per record) into ``item_log`` (packed), every
    record with its ``seq``, and drop the old table."""
    old = c.execute(
        "SELECT job_id, seq, stage, idx, action, source, destination, bytes, detail, error, "
        "size, mtime_ns, inode FROM items ORDER BY job_id, seq"
    )
    c.executemany(INSERT_CHUNK, repack(old))
    c.execute("DROP TABLE items")


def _create(c: sqlite3.Connection, tx: Callable[[], AbstractContextManager[object]]) -> None:
    """Make the schema in a store file this process has just created, empty: nothing in it
    to check, and nothing yet to keep through a power loss. So SQLite does not sync while it
    switches the file to WAL and writes the schema (six fsyncs, of the file, its rollback
    journal, the WAL and the directory, before a command's first job could start); from
    then on it syncs as every store does (``synchronous=NORMAL``: the WAL and the file at
    each checkpoint, the last one when the store closes). A power loss before that first
    checkpoint loses the new store's contents, as ``NORMAL`` loses the commits since the
    last checkpoint: SQLite then finds an empty file or the intact part of the WAL (its
    checksums reject frames that did not reach the disk), and the next open makes the
    schema again. Its statements are idempotent, so a process that opens the file meanwhile
    and makes the schema itself does no harm."""
    c.execute("PRAGMA synchronous=OFF")
    c.execute("PRAGMA journal_mode=WAL")
    _write_schema(c, tx)
    c.execute("PRAGMA synchronous=NORMAL")
    c.execute("PRAGMA foreign_keys=ON")


def _write_schema(c: sqlite3.Connection, tx: Callable[[], AbstractContextManager[object]]) -> None:
    with tx():
        for statement in SCHEMA.split(";"):
            if statement.strip():
                c.execute(statement)
        c.execute(f"PRAGMA application_id={APPLICATION_ID}")
        c.execute(f"PRAGMA user_version={SCHEMA_VERSION}")


class Undecodable(str):
    """Text of a store column that was not valid UTF-8 (shown with backslash escapes)."""

    __slots__ = ()


def decode_text(data: bytes) -> str:
    """The connection's text factory: a damaged TEXT value becomes an `Undecodable`
    instead of an error that fails the whole query (and every later listing)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return Undecodable(data.decode("utf-8", "backslashreplace"))


def is_locked(exc: sqlite3.Error) -> bool:
    text = str(exc)
    return "locked" in text or "busy" in text


def explain(exc: BaseException, path: str) -> str:
    """The reason SQLite gives for ``exc``, with the cause named when it is the file system:
    a read-only file system, or a store file or directory this user may not write (SQLite
    must create ``<store>-wal`` and ``<store>-shm`` next to the store)."""
    text = str(exc)
    if "readonly" not in text and "unable to open" not in text:
        return text
    directory = os.path.dirname(os.path.abspath(path)) or "."
    try:
        if os.statvfs(directory).f_flag & os.ST_RDONLY:
            return f"{text} (read-only file system at {directory})"
    except OSError:
        pass
    if not os.access(directory, os.W_OK | os.X_OK):
        return f"{text} (permission denied: the directory {directory} is read-only to this user)"
    if os.path.exists(path) and not os.access(path, os.W_OK):
        return f"{text} (permission denied: the file {path} is read-only to this user)"
    for suffix in ("-wal", "-shm"):
        side = path + suffix
        if os.path.exists(side) and not os.access(side, os.W_OK):
            return f"{text} (permission denied: {side} is read-only to this user)"
    return text
