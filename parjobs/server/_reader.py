"""A read-only connection of the server's own to the job store.

The API's heavier reads (workers, paged item errors, the /metrics sums) go through a second
connection to the manager's store (`JobStore.reopen`: another SQLite connection to the file,
or another PostgreSQL session) in a thread of their own, so a dashboard or a Prometheus
scrape never waits behind the manager's checkpoints, and the manager never waits behind
them (SQLite's WAL, PostgreSQL's MVCC: readers and the writer work at once). Jobs themselves
are read through the manager's public API.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import trio

from .._jobstore import JobStore

R = TypeVar("R")


class StoreReader:
    """Opens a second connection to ``store`` on first use; `call` runs a read on it in
    the reader's single thread."""

    def __init__(self, store: JobStore) -> None:
        self._origin = store
        self._store: JobStore | None = None
        self._limiter = trio.CapacityLimiter(1)

    def _open(self) -> JobStore:
        if self._store is None:
            self._store = self._origin.reopen()
        return self._store

    async def call(self, read: Callable[[JobStore], R]) -> R:
        """``read(store)`` (e.g. ``lambda s: s.errors(job_id)``) on this connection, in the
        reader's thread."""
        return await trio.to_thread.run_sync(lambda: read(self._open()), limiter=self._limiter)

    async def aclose(self) -> None:
        store, self._store = self._store, None
        if store is not None:
            await trio.to_thread.run_sync(store.close, limiter=self._limiter)
