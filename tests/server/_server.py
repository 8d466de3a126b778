"""What the server tests share (imported by this unique name, never as ``conftest``: with
``tests/cli`` on the same command line that name is the other directory's): tokens, the
`Server` under test and its clients (httpx for REST, a small parser for Server-Sent Events)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import AsyncIterator
from typing import Any

import httpx
import trio

import parjobs
from parjobs.cli._client import _events
from parjobs.server import EventHub, ServerInfo

ADMIN = "admin-token-0123456789abcdef"
ALICE = "alice-token-0123456789abcdef"
BOB = "bob-token-0123456789abcdefgh"


def write_tokens(path: str) -> str:
    with open(path, "w") as f:
        f.write(f"# test tokens\n{ADMIN}\n{ALICE} owner=alice\n{BOB} owner=bob\n")
    os.chmod(path, 0o600)
    return path


@dataclasses.dataclass
class Server:
    info: ServerInfo
    manager: parjobs.JobManager
    hub: EventHub
    tmp: Any

    @property
    def url(self) -> str:
        return self.info.base_url

    def client(self, token: str | None = ADMIN, **kwargs: Any) -> httpx.AsyncClient:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        headers.update(kwargs.pop("headers", {}))
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=10, **kwargs)

    async def submit(self, body: dict[str, Any], token: str = ADMIN) -> dict[str, Any]:
        async with self.client(token) as c:
            r = await c.post("/api/jobs", json=body)
        assert r.status_code == 201, r.text
        data: dict[str, Any] = r.json()
        return data

    async def wait_status(self, job_id: str, *statuses: str, timeout: float = 10) -> dict:
        async with self.client() as c:
            with trio.fail_after(timeout):
                while True:
                    job = (await c.get(f"/api/jobs/{job_id}")).json()
                    if job["status"] in statuses:
                        return job
                    await trio.sleep(0.02)


@dataclasses.dataclass
class SseEvent:
    kind: str
    data: Any
    id: int | None


async def sse_events(response: httpx.Response) -> AsyncIterator[SseEvent]:
    """The events of a text/event-stream response (comments skipped), parsed as the CLI's
    remote client parses them."""
    async for kind, event_id, data in _events(response):
        yield SseEvent(kind, data, None if event_id is None else int(event_id))
