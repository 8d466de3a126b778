"""A read-only connection of the server's own to the job store.

The API's heavier reads (workers, paged item errors, the /metrics sums) go through a second
SQLite connection in a thread of their own, so a dashboard or a Prometheus scrape never waits
behind the manager's checkpoints, and the manager never waits behind them (WAL lets readers
and the writer work at once). Jobs themselves are read through the manager's public API.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import trio

from .._store import JobStore

R = TypeVar("R")


class StoreReader:
    """Opens the store at ``path`` on first use; `call` runs a `JobStore` method in its thread."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._store: JobStore | None = None
        self._limiter = trio.CapacityLimiter(1)

    def _open(self) -> JobStore:
        if self._store is None:
            self._store = JobStore.open(self.path)
        return self._store

    async def call(self, method: Callable[..., R], *args: Any, **kwargs: Any) -> R:
        """``method`` (an unbound `JobStore` method, e.g. ``JobStore.errors``) on this
        connection, in the reader's single thread."""

        def run() -> R:
            return method(self._open(), *args, **kwargs)

        return await trio.to_thread.run_sync(functools.partial(run), limiter=self._limiter)

    async def aclose(self) -> None:
        store, self._store = self._store, None
        if store is not None:
            await trio.to_thread.run_sync(store.close, limiter=self._limiter)
