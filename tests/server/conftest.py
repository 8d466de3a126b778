"""A real `parjobs serve` on a real socket (port 0) inside the test's trio run: the
``server`` fixture (the helpers the tests import are in `_server`)."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator

import pytest
import trio
from _server import Server, write_tokens

import parjobs
from parjobs.server import EventHub, HubLimits, serve


@pytest.fixture
async def server(tmp_path, store_path) -> AsyncIterator[Server]:
    """A server on a SQLite store; on PostgreSQL too for tests marked ``both_stores``."""
    tokens = write_tokens(str(tmp_path / "tokens"))
    async with parjobs.open_manager(store_path, workers=4) as manager:
        hub = EventHub(manager, HubLimits(heartbeat=0.3, client_buffer=50))
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            info = await nursery.start(
                functools.partial(
                    serve,
                    manager,
                    port=0,
                    token_file=tokens,
                    hub=hub,
                    shutdown_trigger=stop.wait,
                    graceful_timeout=2,
                )
            )
            yield Server(info, manager, hub, tmp_path)
            stop.set()
