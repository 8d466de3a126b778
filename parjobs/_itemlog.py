"""The item log's stored form: a checkpoint's item rows packed into one value (a *chunk*),
so a store writes one row per checkpoint instead of one per record, and unpacks records
only when somebody reads them.

A chunk is zlib-compressed JSON of columns: ``[FORMAT, seqs, action, source, destination,
bytes, detail, error, size, mtime_ns, inode, stage, index]``. ``seqs`` is the first record's
``seq`` (the rest follow one by one) or the list of every ``seq`` (a chunk that lost its
failed records); each other column is a list of one value per record, or a single value
that every record shares (a copy's chunk has one action and one stage). JSON escapes the
lone surrogates that stand for undecodable bytes in a name, so every path comes back
exactly. Data only, no I/O: the SQLite and PostgreSQL stores share it, and their migrations from
schema 1's one row per record (`repack`).
"""

from __future__ import annotations

import json
import os
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, cast

from ._items import ItemRow

#: The packing's version, first in every chunk.
FORMAT = 1


def pack(rows: Sequence[ItemRow], seqs: int | list[int]) -> tuple[bytes, dict[str, int]]:
    """``rows`` as one chunk, numbered from ``seqs`` (an int) or by it (a list); and how
    many records of each action it holds (the store keeps that beside it, to count and
    filter without unpacking)."""
    n = len(rows)
    columns: list[Any] = [FORMAT, n, seqs]
    for column in zip(*rows, strict=True):
        first = column[0]
        columns.append(first if column.count(first) == n else column)
    if n == 0:  # (a chunk whose records were all dropped: it keeps its numbers)
        counts = {}
    elif isinstance(columns[3], tuple):
        counts = dict(Counter(columns[3]))
    else:
        counts = {columns[3]: n}
    return zlib.compress(_dumps(columns).encode("ascii"), 1), counts


#: The bytes JSON text escapes (``json.dumps``: controls, quote, backslash, DEL); a column of
#: paths with none of them, and all ASCII, is joined as text (`_dumps`).
_ESCAPED = bytes(range(32)) + b'"\\\x7f'


def _dumps(columns: list[Any]) -> str:
    """``json.dumps(columns, separators=(",", ":"))`` (ASCII: surrogates escaped), byte for
    byte, with each column of text that needs no escaping (a copy's source and destination
    paths, nearly always) joined as it is rather than encoded string by string: ~1.5 k
    instructions a path less, two paths a copied file."""
    dumps = json.dumps
    parts: list[str] = []
    for column in columns:
        if type(column) is tuple and type(column[0]) is str:
            try:
                raw = "".join(column).encode("ascii")
            except (TypeError, UnicodeEncodeError):  # None among them, or non-ASCII text
                pass
            else:
                if len(raw.translate(None, _ESCAPED)) == len(raw):
                    parts.append('["' + '","'.join(column) + '"]')
                    continue
        parts.append(dumps(column, separators=(",", ":")))
    return "[" + ",".join(parts) + "]"


def unpack(data: bytes) -> Iterator[tuple[int, ItemRow]]:
    """The (seq, row) pairs of a chunk `pack` made, in order."""
    columns = json.loads(zlib.decompress(data))
    if not isinstance(columns, list) or not columns or columns[0] != FORMAT:
        raise ValueError("an item log chunk of an unknown format")
    n, seqs = columns[1], columns[2]
    numbers = seqs if isinstance(seqs, list) else range(seqs, seqs + n)
    full = [c if isinstance(c, list) else [c] * n for c in columns[3:]]
    return zip(numbers, cast(Iterator[ItemRow], zip(*full, strict=True)), strict=True)


#: Records per chunk at most: a reader unpacks a whole chunk to reach one of its records,
#: so a checkpoint with more (a slow store's backlog) is stored as several.
CHUNK = 1000

#: A chunk as both stores keep it: ``(job_id, first_seq, last_seq, records, failed,
#: actions, data)``; ``actions`` is the JSON of `pack`'s counts, ``failed`` its "failed".
Chunk = tuple[str, int, int, int, int, str, bytes]


#: Appends a `Chunk` to a job's item log (``?`` placeholders: the stores translate).
INSERT_CHUNK = (
    "INSERT INTO item_log(job_id, first_seq, last_seq, records, failed, actions, data) "
    "VALUES (?,?,?,?,?,?,?)"
)


def chunk(job_id: str, rows: Sequence[ItemRow], seqs: int | list[int]) -> Chunk:
    """The stored form of ``rows`` (one at least) numbered from or by ``seqs``."""
    data, counts = pack(rows, seqs)
    first, last = (seqs, seqs + len(rows) - 1) if isinstance(seqs, int) else (seqs[0], seqs[-1])
    return (job_id, first, last, len(rows), counts.get("failed", 0), json.dumps(counts), data)


def repack(old: Iterable[Sequence[Any]]) -> Iterator[Chunk]:
    """Chunks of `CHUNK` records of the rows of schema 1's ``items`` table, read ordered by
    job and ``seq`` as ``(job_id, seq, stage, idx, action, source, destination, bytes,
    detail, error, size, mtime_ns, inode)`` with the paths as bytes (a store migrating)."""
    job: str | None = None
    seqs: list[int] = []
    rows: list[ItemRow] = []
    for job_id, seq, stage, idx, action, source, dest, nbytes, *rest in old:
        if (job_id != job or len(rows) == CHUNK) and rows:
            yield _chunk_of(cast(str, job), rows, seqs)
            seqs, rows = [], []
        job = job_id
        seqs.append(seq)
        detail, error, size, mtime_ns, inode = rest
        destination = None if dest is None else _old_path(dest)
        source = _old_path(source)
        written = (size, mtime_ns, inode)
        rows.append((str(action), source, destination, nbytes, detail, error, *written, stage, idx))
    if rows:
        yield _chunk_of(cast(str, job), rows, seqs)


def _old_path(value: Any) -> str:
    """A path of schema 1's table: bytes (PostgreSQL's may come as a memoryview), or text
    in a row some other tool wrote."""
    return value if isinstance(value, str) else os.fsdecode(bytes(value))


def _chunk_of(job_id: str, rows: list[ItemRow], seqs: list[int]) -> Chunk:
    """`chunk`, its ``seqs`` as the first alone when they run on one by one."""
    return chunk(job_id, rows, seqs[0] if seqs[-1] - seqs[0] == len(seqs) - 1 else seqs)
