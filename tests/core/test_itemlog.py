"""The item log's stored form (`parjobs._itemlog`): a checkpoint's records packed into chunks,
every field back as written on both stores, a page that unpacks one chunk, and the stores of
older schemas (SQLite and PostgreSQL) upgraded to it with every record and number kept."""

from __future__ import annotations

import json
import os
import sqlite3
import zlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import parjobs
from parjobs import ItemRecord, Written
from parjobs import _itemlog as itemlog
from parjobs._items import ItemRow, item_row, row_record
from parjobs._pgschema import MIGRATIONS, SCHEMA_VERSION
from parjobs._store import SQLiteJobStore


async def test_a_store_made_before_the_item_log_gains_its_table(tmp_path: Any) -> None:
    path = str(tmp_path / "old.sqlite")
    SQLiteJobStore.open(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TABLE item_log")
        conn.execute("PRAGMA user_version=1")
    store = SQLiteJobStore.open(path)
    try:
        store.insert_job("a", "t", 1, "{}")
        assert store.items("a") == [] and store.item_count("a") == 0
    finally:
        store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (2,)


#: Schema 1's item log, a row per record: the columns of PostgreSQL schema 2's (SQLite
#: takes its type names; the paths are BLOBs either way).
ITEMS_V1 = MIGRATIONS[2]


#: Rows of schema 1's item log (seq 3 of job "a" gone: a failed record a later run dropped),
#: and the records they must come back as.
OLD_ROWS = [
    ("a", 1, "files", 0, "copied", b"/s/\xff", b"/d/\xff", 5, None, None, 5, 77, 99),
    ("a", 2, "job", -1, "skipped", b"/s/x", None, 0, "exists", None, None, None, None),
    ("a", 4, "files", 2, "failed", b"/s/y", None, 3, None, "disk full", None, None, None),
    ("b", 1, "default", 7, "hashed", b"/h", None, 9, "abc", None, None, None, None),
]


OLD_RECORDS = {
    "a": [
        ItemRecord(
            "copied",
            os.fsdecode(b"/s/\xff"),
            os.fsdecode(b"/d/\xff"),
            5,
            written=Written(5, 77, 99),
            stage="files",
            index=0,
            seq=1,
        ),
        ItemRecord("skipped", "/s/x", detail="exists", stage="job", seq=2),
        ItemRecord("failed", "/s/y", bytes=3, error="disk full", stage="files", index=2, seq=4),
    ],
    "b": [ItemRecord("hashed", "/h", bytes=9, detail="abc", index=7, seq=1)],
}


async def test_an_old_stores_item_log_is_packed_with_every_field_and_seq(tmp_path: Any) -> None:
    path = str(tmp_path / "old.sqlite")
    SQLiteJobStore.open(path).close()
    with sqlite3.connect(path) as conn:  # the store as schema 1 left it
        conn.execute("DROP TABLE item_log")
        conn.execute(ITEMS_V1)
        conn.executemany(f"INSERT INTO items VALUES ({','.join('?' * 13)})", OLD_ROWS)
        conn.execute("PRAGMA user_version=1")
    store = SQLiteJobStore.open(path)
    try:
        for job in ("a", "b"):
            store.insert_job(job, "t", 1, "{}")
            assert store.items(job) == OLD_RECORDS[job]
        assert store.item_count("a", action="failed") == 1
        store.checkpoint("a", parjobs._records.CheckpointBatch(items=[NEW_ROW]))
        assert [r.seq for r in store.items("a", after=2)] == [4, 5]  # numbered on
    finally:
        store.close()
    with sqlite3.connect(path) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        assert "items" not in tables and "item_log" in tables


#: A record with every field set, and one with none of the optional ones.
NEW_ROW = ("made", "/in/é", os.fsdecode(b"/out/\xfe"), 12, "d\u2028", "e", 12, -5, 2**62, "st", 4)


BARE_ROW = ("failed", "/in/x", None, 0, None, None, None, None, None, "default", -1)


@pytest.mark.both_stores
def test_every_field_of_a_record_survives_the_store(store_path: str) -> None:
    """Every field of a record comes back as written, in pages, counts and filters, and a
    new run's drop of the failed records keeps the others' numbers (and never reuses one)."""
    from parjobs._stores import open_store

    store = open_store(store_path)
    try:
        store.insert_job("j", "t", 1, "{}")
        rows = [NEW_ROW, BARE_ROW, NEW_ROW]
        store.checkpoint("j", parjobs._records.CheckpointBatch(items=rows))
        store.checkpoint("j", parjobs._records.CheckpointBatch(items=[BARE_ROW]))
        records = store.items("j")
        assert records == [row_record(r, seq) for seq, r in enumerate([*rows, BARE_ROW], 1)]
        assert records[0].written == Written(12, -5, 2**62)
        assert store.items("j", after=1, limit=2) == records[1:3]
        assert store.items("j", offset=3) == records[3:]
        assert store.items("j", action="failed", offset=1) == [records[3]]
        assert (store.item_count("j"), store.item_count("j", action="failed")) == (4, 2)
        store.register_manager("m")
        store.claim("j", "m")  # a new run: it retries the failed items
        assert store.items("j") == [records[0], records[2]]
        store.checkpoint("j", parjobs._records.CheckpointBatch(items=[NEW_ROW]))
        assert [r.seq for r in store.items("j")] == [1, 3, 5]
    finally:
        store.close()


def test_a_postgresql_store_of_schema_1_gains_the_item_log(pg_url: str) -> None:
    import psycopg

    from parjobs._pgschema import NAMESPACE
    from parjobs._pgstore import PostgresStore

    with psycopg.connect(pg_url, autocommit=True) as conn:  # a store as parjobs 1 made it
        conn.execute(f"CREATE SCHEMA {NAMESPACE}")
        conn.execute(f"SET search_path TO {NAMESPACE}")
        for statement in MIGRATIONS[1].split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute(
            "INSERT INTO meta(key, value) VALUES ('application', 'parjobs'), "
            "('store_id', 'x'), ('schema_version', '1')"
        )
    store = PostgresStore.open(pg_url)
    try:
        store.insert_job("a", "t", 1, "{}")
        batch = parjobs._records.CheckpointBatch(
            items=[item_row(ItemRecord("made", "/x", os.fsdecode(b"/y\xff")))]
        )
        store.checkpoint("a", batch)
        (record,) = store.items("a")
        assert (record.seq, record.destination) == (1, os.fsdecode(b"/y\xff"))
    finally:
        store.close()
    with psycopg.connect(pg_url) as conn:
        version = conn.execute(f"SELECT value FROM {NAMESPACE}.meta WHERE key='schema_version'")
        assert version.fetchone() == (str(SCHEMA_VERSION),)


def test_a_postgresql_store_of_schema_2_keeps_its_items_packed(pg_url: str) -> None:
    import psycopg

    from parjobs._pgschema import NAMESPACE
    from parjobs._pgstore import PostgresStore

    with psycopg.connect(pg_url, autocommit=True) as conn:  # a store as schema 2 left it
        conn.execute(f"CREATE SCHEMA {NAMESPACE}")
        conn.execute(f"SET search_path TO {NAMESPACE}")
        for statement in (MIGRATIONS[1] + MIGRATIONS[2]).split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute(
            "INSERT INTO meta(key, value) VALUES ('application', 'parjobs'), "
            "('store_id', 'x'), ('schema_version', '2')"
        )
        for job in ("a", "b"):
            conn.execute(
                "INSERT INTO jobs(id, type, version, spec, status, created, updated) "
                "VALUES (%s, 't', 1, '{}', 'completed', 0, 0)",
                (job,),
            )
        with conn.cursor() as cur:
            cur.executemany(f"INSERT INTO items VALUES ({','.join(['%s'] * 13)})", OLD_ROWS)
    store = PostgresStore.open(pg_url)
    try:
        assert store.items("a") == OLD_RECORDS["a"] and store.items("b") == OLD_RECORDS["b"]
        store.checkpoint("a", parjobs._records.CheckpointBatch(items=[NEW_ROW]))
        assert [r.seq for r in store.items("a", after=2)] == [4, 5]  # numbered on
    finally:
        store.close()


def test_a_big_checkpoint_is_stored_in_chunks_a_page_reads_one_of(tmp_path: Any) -> None:
    """A checkpoint of more than `CHUNK` records (a slow store's backlog) is split, so a
    page far in unpacks one chunk, not the whole checkpoint."""
    from parjobs._itemlog import CHUNK

    store = SQLiteJobStore.open(str(tmp_path / "s.sqlite"))
    try:
        store.insert_job("j", "t", 1, "{}")
        rows: list[ItemRow] = [(*BARE_ROW[:-1], i) for i in range(2 * CHUNK + 1)]
        store.checkpoint("j", parjobs._records.CheckpointBatch(items=rows))
        chunks = store._conn.execute("SELECT records FROM item_log ORDER BY first_seq")
        assert [r[0] for r in chunks] == [CHUNK, CHUNK, 1]
        page = store.items("j", after=CHUNK + 5, limit=CHUNK)
        assert [r.index for r in page] == list(range(CHUNK + 5, 2 * CHUNK + 1))
        assert [r.seq for r in store.items("j", offset=2 * CHUNK)] == [2 * CHUNK + 1]
    finally:
        store.close()


#: Paths of the characters that decide between the two ways: plain, escaped, non-ASCII, and
#: a lone surrogate (an undecodable byte of a name).
_TEXT = st.text(
    st.sampled_from(["a", "/", " ", "~", '"', "\\", "\x00", "\n", "\x7f", "é", "\udcff"])
)


@settings(max_examples=100, deadline=None)  # (11 characters: 300 took 3.4 s of the suite)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["copied", "linked"]),
            _TEXT,
            st.one_of(st.none(), _TEXT),
            st.integers(0, 2**40),
            st.one_of(st.none(), _TEXT),
        ),
        min_size=1,
        max_size=6,
    )
)
def test_a_chunk_is_the_json_of_its_columns_whatever_the_paths(
    rows: list[tuple[str, str, str | None, int, str | None]],
) -> None:
    """A chunk's text is what ``json.dumps`` writes of its columns, byte for byte, whether
    its paths go through the encoder or are joined as they are (plain ASCII), and unpacks
    to the rows packed."""
    full = [(*r, None, None, None, None, "default", i) for i, r in enumerate(rows)]
    data, _ = itemlog.pack(full, 7)
    n = len(full)
    columns: list[Any] = [itemlog.FORMAT, n, 7]
    for column in zip(*full, strict=True):
        columns.append(column[0] if column.count(column[0]) == n else column)
    assert zlib.decompress(data) == json.dumps(columns, separators=(",", ":")).encode("ascii")
    assert [row for _, row in itemlog.unpack(data)] == [tuple(r) for r in full]
    assert [seq for seq, _ in itemlog.unpack(data)] == list(range(7, 7 + n))
