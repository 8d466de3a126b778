"""Choosing a job store by name: a ``postgresql://`` URL opens `PostgresStore` (the
``[postgres]`` extra), anything else is the path of a SQLite store file. The one place
`open_manager`, the blocking facade and the CLI turn a name into a store."""

from __future__ import annotations

import os

from ._exceptions import StoreError
from ._jobstore import JobStore
from ._pgschema import is_url
from ._store import SQLiteJobStore


def open_store(target: str | os.PathLike[str]) -> JobStore:
    """Open (creating if needed) the store ``target`` names; `StoreError` (or
    `StoreFormatError`) when it cannot be used, with nothing written."""
    name = os.fspath(target)
    if is_url(name):
        try:
            from ._pgstore import PostgresStore
        except ImportError:
            raise StoreError(
                "a PostgreSQL job store needs psycopg 3: pip install 'parjobs[postgres]'"
            ) from None
        return PostgresStore.open(name)
    return SQLiteJobStore.open(name)
