"""The ASGI app of `parjobs serve`: REST endpoints, event streams, metrics, from one route table.

`create_app` builds a Starlette app around a running `JobManager`; it does not care which ASGI
server hosts it, as long as that server runs on trio (the manager does). Every endpoint is
declared once in `ENDPOINTS` with its method, path and description: the router and the
OpenAPI document (``/api/openapi.json``) are both built from that table, so they cannot
disagree.

Errors are JSON objects ``{"error": message}``: 404 for an unknown job (or one of another
owner), 409 for a transition the job's status does not allow (with the reason), 413 for a
request body over `MAX_BODY`, 422 for a bad request body or spec (the message the CLI prints
for the same mistake).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any

import trio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from .. import (
    IdempotencyConflictError,
    InvalidTransitionError,
    Job,
    JobInfo,
    JobManager,
    JobNotFoundError,
    JobSpecError,
    JobStatus,
    LeaseError,
    OwnerView,
    StoreError,
    __version__,
    registered_job_types,
)
from .._jsonout import dumps
from . import _metrics
from ._auth import PRINCIPAL_KEY, AuthGate, Principal
from ._endpoint import Endpoint, Handler
from ._events import EventHub
from ._openapi import openapi_document
from ._pages import page_routes
from ._reader import StoreReader
from ._schema import spec_schema
from ._views import JSONResponse, error_view, job_view

#: Largest page a list endpoint returns.
MAX_PAGE = 1000
DEFAULT_PAGE = 100


class ApiError(Exception):
    """Ends a request with ``status`` and ``{"error": message}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclasses.dataclass
class ServerState:
    """What the endpoints share: the manager, the event hub, the store reader."""

    manager: JobManager
    hub: EventHub
    reader: StoreReader


def _state(request: Request) -> ServerState:
    state: ServerState = request.app.state.parjobs
    return state


def _principal(request: Request) -> Principal:
    principal: Principal = request.scope[PRINCIPAL_KEY]
    return principal


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _int_param(request: Request, name: str, default: int, *, low: int, high: int) -> int:
    text = request.query_params.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise ApiError(422, f"{name}: expected an integer, got {text!r}") from None
    if not low <= value <= high:
        raise ApiError(422, f"{name}: must be between {low} and {high}, got {value}")
    return value


def _flag(request: Request, name: str) -> bool:
    """A yes/no query parameter: ``1``/``true``/``yes`` (any case), else ``0``/``false``/``no``
    or absent."""
    text = (request.query_params.get(name) or "0").lower()
    if text in ("1", "true", "yes"):
        return True
    if text in ("0", "false", "no", ""):
        return False
    raise ApiError(422, f"{name}: expected 1 or 0, got {text!r}")


def _jobs(request: Request) -> JobManager | OwnerView:
    """The manager as the caller may use it: all of it for an operator's token, the scoped
    view of its owner's jobs for an owner-bound token (other jobs do not exist there)."""
    manager = _state(request).manager
    owner = _principal(request).owner
    return manager if owner is None else manager.for_owner(owner)


async def _visible_job(request: Request) -> JobInfo:
    """The job named in the path (full id or unique prefix), if the caller may see it."""
    jobs = _jobs(request)
    try:
        return await jobs.get(await jobs.resolve(request.path_params["job_id"]))
    except JobNotFoundError as exc:
        raise ApiError(404, str(exc)) from None


#: The largest request body read (bytes): a spec naming 100,000 sources is about 10 MB; a body
#: of any size was read whole into memory (72 MB of sources held the server for 30 s).
MAX_BODY = 32 << 20


async def _body(request: Request) -> bytes:
    """The request's body, at most `MAX_BODY` bytes: a longer one is refused (413) as soon as
    its ``Content-Length`` says so, or once that much of it has arrived."""
    limit = f"{MAX_BODY >> 20} MiB" if MAX_BODY >= 1 << 20 else f"{MAX_BODY} bytes"
    too_long = ApiError(413, f"the request body is larger than {limit}")
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > MAX_BODY:
        raise too_long
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise too_long
        chunks.append(chunk)
    return b"".join(chunks)


async def _json_body(request: Request) -> dict[str, Any]:
    try:
        data = json.loads(await _body(request))
    except (ValueError, UnicodeDecodeError):
        raise ApiError(422, "the request body is not JSON") from None
    except RecursionError:  # (``[[[[...``: it was a 500 with a traceback in the log)
        raise ApiError(422, "the request body is nested too deeply") from None
    if not isinstance(data, dict):
        raise ApiError(422, "the request body must be a JSON object")
    return data


# -- endpoints ----------------------------------------------------------------------------


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


_SUBMIT_FIELDS: dict[str, type | tuple[type, ...]] = {
    "type": str,
    "spec": dict,
    "priority": int,
    "queue": str,
    "after": list,
    "idempotency_key": str,
    "owner": str,
    "start": bool,
    "detach": bool,
    "timeout": (int, float),
    "on_dependency_failure": str,
}


async def submit_job(request: Request) -> Response:
    state = _state(request)
    body = await _json_body(request)
    unknown = sorted(set(body) - set(_SUBMIT_FIELDS))
    if unknown:
        raise ApiError(422, f"unknown field(s) {', '.join(unknown)}")
    for name, kind in _SUBMIT_FIELDS.items():
        value = body.get(name)
        if value is not None and (
            not isinstance(value, kind) or (isinstance(value, bool) and kind in (int, (int, float)))
        ):
            raise ApiError(422, f"{name}: wrong type {type(value).__name__}")
    if "type" not in body:
        raise ApiError(422, "missing field 'type'")
    types = _job_types()
    cls = types.get(body["type"])
    if cls is None:
        known = ", ".join(sorted(types))
        raise ApiError(422, f"unknown job type {body['type']!r} (registered: {known})")
    principal = _principal(request)
    owner = body.get("owner")
    if principal.owner is not None and owner is not None and owner != principal.owner:
        raise ApiError(403, "this token submits jobs of its own owner only")
    after = body.get("after") or []
    if not all(isinstance(a, str) for a in after):
        raise ApiError(422, "after: expected a list of job ids")
    jobs = _jobs(request)
    for dep in after:
        try:
            await jobs.get(dep)
        except JobNotFoundError:
            raise ApiError(422, f"after: no job with id {dep!r}") from None
    options: dict[str, Any] = {
        "priority": body.get("priority"),
        "queue": body.get("queue"),
        "idempotency_key": body.get("idempotency_key"),
        "after": after,
        "start": body.get("start", True),
        "detach": body.get("detach", False),
        "timeout": body.get("timeout"),
        "on_dependency_failure": body.get("on_dependency_failure") or "skip",
    }
    try:
        # Field types here (nothing touched); validate() once, in submit's worker thread.
        job = cls.from_spec(body.get("spec") or {}, validate=False)
        if isinstance(jobs, OwnerView):  # the view gives the job its owner
            handle = await jobs.submit(job, **options)
        else:
            handle = await jobs.submit(job, owner=owner, **options)
    except (JobSpecError, ValueError) as exc:
        raise ApiError(422, str(exc)) from None
    except IdempotencyConflictError as exc:
        raise ApiError(409, str(exc)) from None
    info = await state.manager.get(handle.id)
    return JSONResponse(
        job_view(info), status_code=201, headers={"location": f"/api/jobs/{info.id}"}
    )


async def list_jobs(request: Request) -> Response:
    state = _state(request)
    statuses: list[JobStatus] | None = None
    text = request.query_params.get("status")
    if text:
        try:
            statuses = [JobStatus(w.strip()) for w in text.split(",") if w.strip()]
        except ValueError:
            choices = ", ".join(s.value for s in JobStatus)
            raise ApiError(422, f"status: expected some of {choices}, got {text!r}") from None
    owner = request.query_params.get("owner")
    limit = _int_param(request, "limit", DEFAULT_PAGE, low=1, high=MAX_PAGE)
    offset = _int_param(request, "offset", 0, low=0, high=2**62)
    order = request.query_params.get("order", "created")
    event_id = state.hub.last_id  # before reading: events after it are not in the page
    try:
        jobs = await _jobs(request).list_jobs(
            statuses,
            type=request.query_params.get("type") or None,
            owner=owner,
            order=order,
            limit=limit + 1,
            offset=offset,
        )
    except ValueError as exc:
        raise ApiError(422, str(exc)) from None
    more = len(jobs) > limit
    return JSONResponse(
        {
            "jobs": [job_view(info) for info in jobs[:limit]],
            "next_offset": offset + limit if more else None,
            "event_id": event_id,
        }
    )


async def get_job(request: Request) -> Response:
    return JSONResponse(job_view(await _visible_job(request)))


async def job_errors(request: Request) -> Response:
    info = await _visible_job(request)
    reader = _state(request).reader
    limit = _int_param(request, "limit", DEFAULT_PAGE, low=1, high=MAX_PAGE)
    offset = _int_param(request, "offset", 0, low=0, high=2**62)
    errors = await reader.call(lambda s: s.errors(info.id, limit=limit + 1, offset=offset))
    total = await reader.call(lambda s: s.error_count(info.id))
    more = len(errors) > limit
    return JSONResponse(
        {
            "errors": [error_view(e) for e in errors[:limit]],
            "total": total,
            "next_offset": offset + limit if more else None,
        }
    )


async def job_items(request: Request) -> Response:
    info = await _visible_job(request)
    reader = _state(request).reader
    limit = _int_param(request, "limit", DEFAULT_PAGE, low=1, high=MAX_PAGE)
    offset = _int_param(request, "offset", 0, low=0, high=2**62)
    after = _int_param(request, "after", 0, low=0, high=2**62)
    action = request.query_params.get("action") or None
    items = await reader.call(
        lambda s: s.items(info.id, limit=limit + 1, offset=offset, action=action, after=after)
    )
    total = await reader.call(lambda s: s.item_count(info.id, action=action))
    more = len(items) > limit
    page = items[:limit]
    return JSONResponse(
        {
            "items": [r.to_json() for r in page],
            "total": total,
            "next_after": page[-1].seq if more else None,
        }
    )


async def undo_job(request: Request) -> Response:
    info = await _visible_job(request)
    manager = _state(request).manager
    try:
        handle = await manager.undo(info.id, owner=info.owner)
    except (InvalidTransitionError, LeaseError) as exc:
        raise ApiError(409, str(exc)) from None
    return JSONResponse(job_view(await manager.get(handle.id)), status_code=201)


async def pause_job(request: Request) -> Response:
    info = await _visible_job(request)
    if info.status not in (JobStatus.PAUSED, JobStatus.PAUSING):  # pausing twice: a no-op
        await _act(request, _jobs(request).pause, info.id)
    return await _after_action(request, info.id)


async def resume_job(request: Request) -> Response:
    info = await _visible_job(request)
    await _act(request, _jobs(request).resume, info.id)
    return await _after_action(request, info.id)


async def cancel_job(request: Request) -> Response:
    info = await _visible_job(request)
    await _act(request, _jobs(request).cancel, info.id)
    return await _after_action(request, info.id)


async def patch_job(request: Request) -> Response:
    info = await _visible_job(request)
    body = await _json_body(request)
    if set(body) != {"priority"}:
        raise ApiError(422, 'expected {"priority": INTEGER}: only the priority can change')
    priority = body["priority"]
    if not isinstance(priority, int) or isinstance(priority, bool):
        raise ApiError(422, f"priority: expected an integer, got {priority!r}")
    await _act(request, _jobs(request).set_priority, info.id, priority)
    return await _after_action(request, info.id)


async def delete_job(request: Request) -> Response:
    info = await _visible_job(request)
    _state(request).hub.note_owner(info.id, info.owner)  # the manager's event has no owner
    await _act(request, _jobs(request).delete, info.id)
    return Response(status_code=204)


async def _act(request: Request, action: Callable[..., Awaitable[Any]], *args: Any) -> None:
    """Run a manager action, mapping an illegal transition to 409 with its reason."""
    try:
        await action(*args)
    except (InvalidTransitionError, LeaseError) as exc:
        raise ApiError(409, str(exc)) from None


async def _after_action(request: Request, job_id: str) -> Response:
    return JSONResponse(job_view(await _jobs(request).get(job_id)))


async def job_types(request: Request) -> Response:
    out = []
    for name, cls in sorted(_job_types().items()):
        out.append(
            {
                "name": name,
                "version": cls.job_type_version,
                "queue": cls.queue,
                "priority": cls.priority,
                "schema": spec_schema(cls),
            }
        )
    return JSONResponse({"types": out})


async def workers(request: Request) -> Response:
    state = _state(request)
    rows = await state.reader.call(lambda s: s.managers())
    manager = state.manager
    out = []
    for row in rows:
        entry = {**row, "this": False}
        entry.update(lanes=None, max_running=None, queues=None)
        if row["id"] == manager.id:
            stats = manager.statistics()
            entry.update(
                this=True,
                lanes={
                    lane: {"busy": lim.borrowed_tokens, "capacity": lim.total_tokens}
                    for lane, lim in manager.lanes.items()
                },
                max_running=manager.max_running,
                queues={q: {"running": r, "capacity": c} for q, (r, c) in stats.queues.items()},
            )
        out.append(entry)
    return JSONResponse({"workers": out})


async def metrics(request: Request) -> Response:
    state = _state(request)
    scrape = await _metrics.gather(state.manager, state.reader, state.hub)
    return Response(_metrics.render(scrape), media_type=_metrics.CONTENT_TYPE)


def _last_event_id(request: Request) -> int | None:
    text = request.headers.get("last-event-id") or request.query_params.get("last_event_id")
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        raise ApiError(422, f"Last-Event-ID: expected an integer, got {text!r}") from None


_SSE_HEADERS = {"cache-control": "no-store", "x-accel-buffering": "no"}


async def all_events(request: Request) -> Response:
    hub = _state(request).hub
    sub = hub.subscribe(
        owner=_principal(request).owner,
        job_id=None,
        last_id=_last_event_id(request),
        items=_flag(request, "items"),
    )
    return StreamingResponse(hub.stream(sub), media_type="text/event-stream", headers=_SSE_HEADERS)


async def job_events(request: Request) -> Response:
    hub = _state(request).hub
    last_id = _last_event_id(request)
    info = await _visible_job(request)
    sub = hub.subscribe(owner=None, job_id=info.id, last_id=last_id, items=_flag(request, "items"))
    info = await _state(request).manager.get(info.id)  # after subscribing: nothing missed
    data = dumps(job_view(info))
    first = [f"event: snapshot\ndata: {data}\n\n"]
    if info.status.is_final:  # the snapshot says all there is: nothing will follow
        hub.unsubscribe(sub)
        first.append('event: end\ndata: {"reason": "the job is final"}\n\n')

        async def done() -> AsyncIterator[str]:
            for chunk in first:
                yield chunk

        return StreamingResponse(done(), media_type="text/event-stream", headers=_SSE_HEADERS)
    return StreamingResponse(
        hub.stream(sub, first=first, end_when_final=True),
        media_type="text/event-stream",
        headers=_SSE_HEADERS,
    )


async def openapi(request: Request) -> Response:
    return JSONResponse(openapi_document(ENDPOINTS, version=__version__))


def _job_types() -> dict[str, type[Job]]:
    """The registered job types: the built-in operations and plug-ins alike, through the
    ``parjobs.job_types`` entry points (one that fails to load is logged and left out)."""
    return registered_job_types()


_JOB = ("job_id", "path", "job id, or a unique prefix of it")
_PAGE = (
    ("limit", "query", f"page size (1-{MAX_PAGE}, default {DEFAULT_PAGE})"),
    ("offset", "query", "items to skip (the previous page's next_offset)"),
)
_LAST = (
    ("Last-Event-ID", "header", "id of the last event seen: the missed ones are sent first"),
    ("last_event_id", "query", "the same, for a first connection (e.g. a list's event_id)"),
)
_ITEMS = ("items", "query", "1: also `item` events, the item log's records (live only)")
_ACTION = {200: "the job after the request", 404: "no such job", 409: "not allowed now"}


def _on_job(
    method: str,
    action: str,
    handler: Handler,
    summary: str,
    responses: dict[int, str],
    *params: tuple[str, str, str],
    body: str | None = None,
) -> Endpoint:
    """An endpoint of one job: ``/api/jobs/{job_id}`` and then ``action``, the job's id its
    first parameter."""
    path = "/api/jobs/{job_id}" + action
    return Endpoint(method, path, handler, summary, responses, params=(_JOB, *params), body=body)


ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("GET", "/healthz", healthz, "Liveness (no token needed)", {200: "ok"}, auth=False),
    Endpoint(
        "POST",
        "/api/jobs",
        submit_job,
        "Submit a job of a registered type",
        {
            201: "the job",
            403: "owner not allowed",
            409: "idempotency key used by another job",
            422: "bad request or spec",
        },
        body="SubmitRequest",
    ),
    Endpoint(
        "GET",
        "/api/jobs",
        list_jobs,
        "List jobs (filtered, paged)",
        {200: "a page of jobs", 422: "bad filter"},
        params=(
            ("status", "query", "comma-separated statuses"),
            ("type", "query", "job type"),
            ("owner", "query", "owner"),
            ("order", "query", "created, finished, priority, run_time or updated; - for desc"),
            *_PAGE,
        ),
    ),
    _on_job("GET", "", get_job, "One job", {200: "the job", 404: "no such job"}),
    _on_job(
        "PATCH",
        "",
        patch_job,
        "Change a job's priority",
        {**_ACTION, 422: "bad body"},
        body="PatchRequest",
    ),
    _on_job(
        "DELETE",
        "",
        delete_job,
        "Forget a resting job",
        {204: "deleted", 404: "no such job", 409: "the job is active"},
    ),
    _on_job(
        "GET",
        "/errors",
        job_errors,
        "Failed items of a job (paged)",
        {200: "a page of item errors", 404: "no such job"},
        *_PAGE,
    ),
    _on_job(
        "GET",
        "/items",
        job_items,
        "The item log of a job: what each item did (paged; kept after cancel)",
        {200: "a page of item records", 404: "no such job", 422: "bad paging"},
        ("limit", "query", "records per page"),
        ("after", "query", "records past this seq (the previous page's next_after)"),
        ("offset", "query", "records to skip"),
        ("action", "query", "only records of this action (copied, moved, trashed...)"),
    ),
    _on_job(
        "POST",
        "/undo",
        undo_job,
        "Submit the job that undoes this one (once per job: the same undo job again)",
        {201: "the undo job", 404: "no such job", 409: "the job is running"},
    ),
    _on_job("POST", "/pause", pause_job, "Pause a job", _ACTION),
    _on_job("POST", "/resume", resume_job, "Resume a job here", _ACTION),
    _on_job("POST", "/cancel", cancel_job, "Cancel a job", _ACTION),
    _on_job(
        "GET",
        "/events",
        job_events,
        "Server-Sent Events of one job, until it is final",
        {200: "text/event-stream", 404: "no such job"},
        *_LAST,
        _ITEMS,
    ),
    Endpoint(
        "GET",
        "/api/events",
        all_events,
        "Server-Sent Events of every visible job",
        {200: "text/event-stream"},
        params=(*_LAST, _ITEMS),
    ),
    Endpoint(
        "GET",
        "/api/job-types",
        job_types,
        "Registered job types with spec schemas",
        {200: "the types"},
    ),
    Endpoint(
        "GET",
        "/api/workers",
        workers,
        "Managers sharing the store",
        {200: "the managers", 403: "owner-bound token"},
        admin=True,
    ),
    Endpoint("GET", "/api/openapi.json", openapi, "This document", {200: "OpenAPI 3.1"}),
    Endpoint(
        "GET",
        "/metrics",
        metrics,
        "Prometheus metrics",
        {200: "text exposition format", 403: "owner-bound token"},
        admin=True,
    ),
)


def _wrap(endpoint: Endpoint) -> Handler:
    """The handler with the admin check and `ApiError`/store failures turned into JSON."""

    async def handle(request: Request) -> Response:
        try:
            if endpoint.admin and not _principal(request).is_admin:
                raise ApiError(403, "this token is bound to an owner")
            return await endpoint.handler(request)
        except ApiError as exc:
            return _error(exc.status, exc.message)
        except StoreError as exc:
            return _error(503, str(exc))

    handle.__name__ = endpoint.handler.__name__
    return handle


def create_app(
    manager: JobManager,
    *,
    tokens: Iterable[Principal],
    allowed_hosts: Iterable[str] = (),
    cookie_name: str = "parjobs_token",
    hub: EventHub | None = None,
    token_file: str | None = None,
) -> AuthGate:
    """The ASGI app serving ``manager``: the API, its event streams and /metrics behind the
    token gate (see `AuthGate`). ``allowed_hosts`` are the ``Host`` values accepted (empty:
    any). The app runs its event hub and store reader for its ASGI lifespan; an ASGI server
    that runs on trio can host it. ``app.state.hub.close()`` ends every event stream
    (call it when shutting down, before the server waits for open requests). With
    ``token_file`` (where ``tokens`` come from) a token removed from it is refused at once."""
    reader = StoreReader(manager.store)
    hub = hub or EventHub(manager)
    state = ServerState(manager=manager, hub=hub, reader=reader)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # Subscribe before the first request, so no job can start and end unseen.
        hub.listen()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(hub.run)
            try:
                yield
            finally:
                hub.close()
                await reader.aclose()

    routes = [Route(e.path, _wrap(e), methods=[e.method]) for e in ENDPOINTS]
    routes += page_routes()  # the dashboard: pages, not API (not in the OpenAPI document)
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.parjobs = state
    public = [e.path for e in ENDPOINTS if not e.auth]
    gate = AuthGate(
        app,
        tokens=tokens,
        allowed_hosts=allowed_hosts,
        cookie_name=cookie_name,
        public_paths=public,
        token_file=token_file,
    )
    gate.state = state  # type: ignore[attr-defined]
    return gate
