"""The HTTP client of ``parjobs --server URL ...``: the `JobManager` methods the commands use,
answered by a running ``parjobs serve`` (httpx; the ``[server]`` extra).

`RemoteManager` rebuilds the core's records (`JobInfo`, `Progress`, `ItemError`) from the
API's JSON, so the commands and their renderers work on it unchanged: ``jobs`` and ``show``
print the same lines, a followed job is drawn from its Server-Sent Events stream with the
same renderer, and Ctrl-C pauses it through the API. The server's refusals come back as the
core's exceptions (404 `JobNotFoundError`, 409 `InvalidTransitionError`, 422
`JobSpecError`, 503 `StoreError`), so they are reported, and exit, as the local ones do; an
unreachable server or a refused token is a one-line `CliError` (exit 2).
"""

from __future__ import annotations

import email.utils
import json
import time
import urllib.parse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import trio

from .. import (
    InvalidTransitionError,
    ItemError,
    Job,
    JobInfo,
    JobNotFoundError,
    JobSpecError,
    JobStatus,
    Progress,
    StoreError,
)
from .._items import ItemRecord, record_from_json
from .._job import DumpedJob
from ._errors import CliError
from ._remote import Server

#: Page size when reading every job or every item error.
PAGE = 1000
#: Seconds to wait for an answer (event streams wait as long as the job runs).
TIMEOUT = 30.0
#: Seconds between two attempts to follow a job whose event stream ended early.
RECONNECT_DELAY = 0.5

_ERRORS: dict[int, type[Exception]] = {
    404: JobNotFoundError,
    409: InvalidTransitionError,
    422: JobSpecError,
    503: StoreError,
}


class RemoteHandle:
    """What `RemoteManager.submit` returns: the new job's id, as a `JobHandle` has."""

    def __init__(self, job_id: str) -> None:
        self.id = job_id


class RemoteManager:
    """The part of `JobManager` the CLI's commands use, over the server's REST API."""

    def __init__(self, server: Server, client: httpx.AsyncClient) -> None:
        self.server = server
        self._client = client

    async def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = await self._client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from None
        if response.status_code < 300:
            return response.json() if response.content else None
        raise self._refusal(response)

    def _unreachable(self, exc: Exception) -> CliError:
        reason = str(exc) or type(exc).__name__
        return CliError(f"cannot reach the server at {self.server.url}: {reason}")

    def _refusal(self, response: httpx.Response) -> Exception:
        try:
            message = str(response.json()["error"])
        except (ValueError, KeyError, TypeError):
            message = response.text.strip() or response.reason_phrase
        if response.status_code == 401:
            return CliError(
                f"the server at {self.server.url} refused the token (401): give the right "
                "--token-file or $PARJOBS_TOKEN"
            )
        error = _ERRORS.get(response.status_code)
        if error is not None:
            return error(message)
        return CliError(
            f"the server at {self.server.url} answered {response.status_code}: {message}"
        )

    # -- reading -------------------------------------------------------------------------

    async def get(self, job_id: str) -> JobInfo:
        return job_info(await self._request("GET", f"/api/jobs/{_quote(job_id)}"))

    async def get_rested(self, job_id: str, status: JobStatus) -> JobInfo:
        """`JobManager.get_rested`: the server ran the job, so its record as stored."""
        return await self.get(job_id)

    async def resolve(self, id_prefix: str) -> str:
        return (await self.get(id_prefix)).id

    async def store_now(self) -> float:
        """`JobManager.store_now` as near as the API tells it: the server's clock, from the
        ``Date`` of its ``/healthz`` answer (its manager writes the jobs' ends), so a
        client whose clock is ahead does not prune early. The ``Date`` is to the second:
        this host's clock when it falls within that second (``--older-than 0`` then
        prunes a job that ended a moment ago), else the nearer end of it; this host's
        clock when the answer has no date."""
        try:
            response = await self._client.get("/healthz")
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from None
        here = time.time()
        try:
            date = email.utils.parsedate_to_datetime(response.headers["date"]).timestamp()
        except (KeyError, TypeError, ValueError):
            return here
        return min(max(here, date), date + 1)

    async def list_jobs(
        self,
        status: JobStatus | list[JobStatus] | None = None,
        *,
        order: str = "created",
        damaged: list[tuple[str, str]] | None = None,
        results: bool = True,
    ) -> list[JobInfo]:
        """Every job (oldest first, or by ``order`` as `JobManager.list_jobs` takes it), in
        pages. The server leaves damaged rows out, and sends the results whatever
        ``results`` says (its job views carry them)."""
        params: dict[str, Any] = {"limit": PAGE, "offset": 0, "order": order}
        if status is not None:
            statuses = [status] if isinstance(status, JobStatus) else status
            params["status"] = ",".join(s.value for s in statuses)
        out: list[JobInfo] = []
        while True:
            page = await self._request("GET", "/api/jobs", params=params)
            out += [job_info(data) for data in page["jobs"]]
            if page["next_offset"] is None:
                return out
            params["offset"] = page["next_offset"]

    async def errors(self, job_id: str, *, limit: int = -1, offset: int = 0) -> list[ItemError]:
        out: list[ItemError] = []
        at: int | None = offset
        while at is not None and (limit < 0 or len(out) < limit):
            size = PAGE if limit < 0 else min(PAGE, limit - len(out))
            page = await self._request(
                "GET",
                f"/api/jobs/{_quote(job_id)}/errors",
                params={"limit": size, "offset": at},
            )
            out += [ItemError(**e) for e in page["errors"]]
            at = page["next_offset"]
        return out

    async def items(
        self, job_id: str, *, limit: int = PAGE, after: int = 0, action: str | None = None
    ) -> list[ItemRecord]:
        """One page of the job's item log (at most `PAGE` records past ``after``)."""
        params: dict[str, Any] = {"limit": min(PAGE, limit) if limit > 0 else PAGE}
        params["after"] = after
        if action is not None:
            params["action"] = action
        page = await self._request("GET", f"/api/jobs/{_quote(job_id)}/items", params=params)
        return [record_from_json(r) for r in page["items"]]

    async def item_count(self, job_id: str, *, action: str | None = None) -> int:
        params: dict[str, Any] = {"limit": 1}
        if action is not None:
            params["action"] = action
        page = await self._request("GET", f"/api/jobs/{_quote(job_id)}/items", params=params)
        return int(page["total"])

    # -- steering ------------------------------------------------------------------------

    async def undo(self, job_id: str) -> RemoteHandle:
        job = await self._request("POST", f"/api/jobs/{_quote(job_id)}/undo")
        return RemoteHandle(job_info(job).id)

    async def submit(self, job: Job | DumpedJob) -> RemoteHandle:
        """Submit ``job`` (or the job the CLI checked); the server validates it, there."""
        job = job.job if isinstance(job, DumpedJob) else job
        body = {"type": type(job).job_type_name, "spec": job.to_spec()}
        # ASCII JSON: a name that is not UTF-8 goes as Python's "\udcff" escape, which the
        # server reads back to the same name (httpx's json= encodes UTF-8 and fails on it)
        content = json.dumps(body)
        headers = {"content-type": "application/json"}
        job_view = await self._request("POST", "/api/jobs", content=content, headers=headers)
        return RemoteHandle(job_info(job_view).id)

    async def pause(self, job_id: str) -> None:
        await self._request("POST", f"/api/jobs/{_quote(job_id)}/pause")

    async def resume(self, job_id: str) -> RemoteHandle:
        await self._request("POST", f"/api/jobs/{_quote(job_id)}/resume")
        return RemoteHandle(job_id)

    async def cancel(self, job_id: str) -> None:
        await self._request("POST", f"/api/jobs/{_quote(job_id)}/cancel")

    async def delete(self, job_id: str) -> None:
        """Forget a resting job (``jobs prune``), as `JobManager.delete` does, in the server."""
        await self._request("DELETE", f"/api/jobs/{_quote(job_id)}")

    # -- following -----------------------------------------------------------------------

    async def wait(self, job_id: str) -> JobStatus:
        """Wait until the job rests (nothing runs until somebody acts); its status."""
        async for _ in self.watch(job_id):
            pass
        return (await self.get(job_id)).status

    async def watch(self, job_id: str) -> AsyncIterator[Progress]:
        """The job's progress snapshots from its event stream, until it rests."""
        last_id: str | None = None
        while True:
            headers = {} if last_id is None else {"last-event-id": last_id}
            try:
                async with self._client.stream(
                    "GET",
                    f"/api/jobs/{_quote(job_id)}/events",
                    headers=headers,
                    timeout=httpx.Timeout(TIMEOUT, read=None),
                ) as response:
                    if response.status_code >= 300:
                        await response.aread()
                        raise self._refusal(response)
                    async for kind, event_id, data in _events(response):
                        last_id = event_id or last_id
                        if kind == "progress":
                            yield Progress.from_json(data)
                        elif kind in ("snapshot", "status"):
                            info = job_info(data)
                            yield info.progress
                            if info.status.is_resting:
                                return
                        elif kind == "end" or (
                            # Events missed: a status may have gone by.
                            kind in ("dropped", "reset")
                            and (await self.get(job_id)).status.is_resting
                        ):
                            return
            except httpx.HTTPError as exc:
                raise self._unreachable(exc) from None
            # The stream ended early (the server restarted?): look, then follow again.
            if (await self.get(job_id)).status.is_resting:
                return
            await trio.sleep(RECONNECT_DELAY)


async def _events(response: httpx.Response) -> AsyncIterator[tuple[str, str | None, Any]]:
    """(event name, id, parsed data) of a text/event-stream response; comments skipped."""
    kind, event_id, data = "message", None, list[str]()
    async for line in response.aiter_lines():
        if line == "":
            if data:
                yield kind, event_id, json.loads("\n".join(data))
            kind, event_id, data = "message", None, list[str]()
        elif not line.startswith(":"):
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                kind = value
            elif field == "data":
                data.append(value)
            elif field == "id":
                event_id = value


def _quote(job_id: str) -> str:
    """A job id (or what the user typed for one) as one path segment. ``""`` names no job,
    as in the store (`SQLiteJobStore.resolve_id`): as a segment it made ``/api/jobs/``, the
    list, and the command failed on the server's redirect ("answered 307")."""
    if not job_id:
        raise JobNotFoundError("no job with id ''")
    return urllib.parse.quote(job_id, safe="")


def job_info(data: dict[str, Any]) -> JobInfo:
    """A `JobInfo` from the API's JSON view of a job (what the renderers and ``show`` read).
    The lease and the job's private state are not served: None and empty."""
    return JobInfo(
        id=data["id"],
        type=data["type"],
        version=data["version"],
        spec=json.dumps(data["spec"]),
        status=JobStatus(data["status"]),
        priority=data["priority"],
        queue=data["queue"],
        lease=None,
        request=data.get("request"),
        owner=data.get("owner"),
        after=tuple(data.get("after") or ()),
        dep_policy=data.get("on_dependency_failure") or "skip",
        timeout=data.get("timeout"),
        created=data["created"],
        started=data.get("started"),
        finished=data.get("finished"),
        updated=data["updated"],
        run_time=data.get("run_time") or 0.0,
        runs=data.get("attempts") or 0,
        done_items=data.get("done_items") or 0,
        skipped_items=data.get("skipped_items") or 0,
        done_bytes=data.get("done_bytes") or 0,
        progress=Progress.from_json(data.get("progress") or {}),
        state={},
        result=data.get("result"),
        error=data.get("error"),
    )


@asynccontextmanager
async def open_remote(server: Server) -> AsyncIterator[RemoteManager]:
    """A `RemoteManager` on ``server`` for the length of the block."""
    headers = {"authorization": f"Bearer {server.token}"}
    async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=TIMEOUT) as client:
        yield RemoteManager(server, client)
