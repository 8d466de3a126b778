"""The item log's cost: store size and insert time of N item records (1,000,000 in a full run).

A copy of N files checkpoints N completions; with the item log each checkpoint also carries
one record per file (source, destination, bytes, the written file's size/mtime/inode). Both
are written here exactly as a job's checkpoints write them (`JobStore.checkpoint`, batches of
`BATCH` items, about what a 0.5 s checkpoint of a fast small-file copy holds), into two fresh
stores: the baseline without records, then the same completions with them. Reported: the
time per record added, the store's growth per record (after a WAL checkpoint, so the main
file holds everything), and reading a page far in (``items(after=...)``) and a count.
"""

from __future__ import annotations

import os
import sqlite3
import time
from typing import Any

from parjobs import ItemRecord, Written
from parjobs._items import ItemRow, item_row
from parjobs._records import CheckpointBatch
from parjobs._store import JobStore

from ._common import load_average, log, temp_dir
from ._session import Session

#: Records per checkpoint.
BATCH = 1000
SIZES = {"full": 1_000_000, "quick": 100_000, "tiny": 10_000}


def _records(start: int, n: int) -> list[ItemRow]:
    """Copy records with realistic paths: 1,000 files per directory, 60-byte paths."""
    out = []
    for i in range(start, start + n):
        rel = f"Photos/2024/album-{i // 1000:04}/IMG_{i:07}.jpg"
        size = 150_000 + i % 7919
        written = Written(size, 1_717_171_717_000_000_000 + i, 4_000_000 + i)
        record = ItemRecord(
            "copied", "/home/someone/" + rel, "/media/backup/" + rel, size, written=written, index=i
        )
        out.append(item_row(record))
    return out


def _fill(path: str, n: int, *, items: bool) -> dict[str, float]:
    store = JobStore.open(path)
    try:
        store.insert_job("job", "copy", 1, "{}")
        spent = 0.0
        for start in range(0, n, BATCH):
            size = min(BATCH, n - start)
            batch = CheckpointBatch(ranges={"default": [(start, start + size)]}, done_items=size)
            if items:
                batch.items = _records(start, size)  # built outside the timer: a job has them
            t0 = time.perf_counter()
            store.checkpoint("job", batch)
            spent += time.perf_counter() - t0
        t0 = time.perf_counter()
        far = store.items("job", after=max(0, n - 100), limit=100)
        page_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        count = store.item_count("job")
        count_s = time.perf_counter() - t0
    finally:
        store.close()
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert count == (n if items else 0) and len(far) == (min(100, n) if items else 0)
    return {
        "checkpoint_s": round(spent, 3),
        "store_bytes": os.path.getsize(path),
        "page_s": round(page_s, 6),
        "count_s": round(count_s, 4),
    }


def run(session: Session) -> dict[str, Any]:
    n = SIZES[session.mode]
    load0 = load_average()
    with temp_dir(dir=session.scratch) as tmp:
        log(f"[items] {n:,} completions without records (baseline)")
        base = _fill(str(tmp / "base.sqlite"), n, items=False)
        log(f"[items] {n:,} completions with their item records")
        with_items = _fill(str(tmp / "items.sqlite"), n, items=True)
    added_s = with_items["checkpoint_s"] - base["checkpoint_s"]
    added_bytes = with_items["store_bytes"] - base["store_bytes"]
    result = {
        "n": n,
        "batch": BATCH,
        "baseline": base,
        "with_items": with_items,
        "us_per_record": round(added_s / n * 1e6, 2),
        "bytes_per_record": round(added_bytes / n, 1),
        "store_mb": round(with_items["store_bytes"] / 1e6, 1),
        "ratio_to_baseline": round(with_items["checkpoint_s"] / max(base["checkpoint_s"], 1e-9), 1),
        "loadavg_before": load0,
        "loadavg_after": load_average(),
    }
    log(
        f"[items] {result['us_per_record']} us and {result['bytes_per_record']} bytes per record; "
        f"store {result['store_mb']} MB; a page at the end in {with_items['page_s'] * 1e3:.2f} ms"
    )
    return result
