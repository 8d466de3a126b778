"""Server-Sent Events through a real socket: replay, coalescing, slow clients, shutdown."""

from __future__ import annotations

import functools
import socket

import _jobs  # noqa: F401  (registers test-count)
import httpx
import pytest
import trio
from _server import ADMIN, ALICE, Server, sse_events, write_tokens

import parjobs
from parjobs._events import EventKind, JobEvent
from parjobs.server import serve


async def collect(server: Server, path: str, until, *, headers=None, token=ADMIN, limit=10.0):
    """Events of ``path`` until ``until(events)`` is true."""
    events = []
    async with server.client(token) as c, c.stream("GET", path, headers=headers or {}) as r:
        assert r.status_code == 200
        with trio.fail_after(limit):
            async for event in sse_events(r):
                events.append(event)
                if until(events):
                    break
    return events


def statuses(events, job_id=None):
    return [
        e.data["status"]
        for e in events
        if e.kind == "status" and (job_id is None or e.data["id"] == job_id)
    ]


@pytest.mark.both_stores
async def test_all_events_stream_and_last_event_id_replay(server: Server, tmp_path) -> None:
    # Connect first, so the stream sees the job from its submission on.
    async with trio.open_nursery() as nursery:
        got: list = []

        async def follow() -> None:
            got.extend(await collect(server, "/api/events", lambda ev: "completed" in statuses(ev)))

        nursery.start_soon(follow)
        await trio.sleep(0.2)
        job = await server.submit(
            {"type": "test-count", "spec": {"n": 40, "log": str(tmp_path / "l"), "sleep": 0.005}}
        )
    seen = statuses(got, job["id"])
    assert seen[0] in ("queued", "running") and seen[-1] == "completed"
    assert any(e.kind == "progress" and e.data["job_id"] == job["id"] for e in got)
    ids = [e.id for e in got if e.id is not None]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    # Reconnect as if the connection dropped after the first status event: the missed
    # status changes are replayed, in order, before anything else.
    first = next(e for e in got if e.kind == "status")
    replay = await collect(
        server,
        "/api/events",
        lambda ev: "completed" in statuses(ev),
        headers={"last-event-id": str(first.id)},
    )
    assert statuses(replay, job["id"]) == seen[1:]
    # An id older than the ring holds is told to reload.
    server.hub.ring.clear()
    reset = await collect(server, "/api/events", lambda ev: True, headers={"last-event-id": "0"})
    assert reset[0].kind == "reset"


async def test_progress_is_coalesced(server: Server, tmp_path) -> None:
    spec = {"n": 300, "log": str(tmp_path / "l"), "sleep": 0.004}
    job = await server.submit({"type": "test-count", "spec": spec})
    start = trio.current_time()
    events = await collect(server, f"/api/jobs/{job['id']}/events", lambda ev: ev[-1].kind == "end")
    elapsed = trio.current_time() - start
    progress = [e for e in events if e.kind == "progress"]
    assert progress, "no progress event"
    assert len(progress) <= elapsed * 10 + 3  # about 10 per second at most
    done = [e.data["items_done"] for e in progress]
    assert done == sorted(done)


async def test_owner_bound_stream_sees_only_its_jobs(server: Server, tmp_path) -> None:
    async with trio.open_nursery() as nursery:
        got: list = []

        async def follow() -> None:
            got.extend(
                await collect(
                    server, "/api/events", lambda ev: "completed" in statuses(ev), token=ALICE
                )
            )

        nursery.start_soon(follow)
        await trio.sleep(0.2)
        other = await server.submit({"type": "test-count", "spec": {"n": 2, "log": "/dev/null"}})
        await server.wait_status(other["id"], "completed")
        await server.submit(
            {"type": "test-count", "spec": {"n": 2, "log": "/dev/null"}}, token=ALICE
        )
    assert {e.data["owner"] for e in got if e.kind == "status"} == {"alice"}


async def test_a_client_that_never_reads_does_not_slow_a_job(server: Server, tmp_path) -> None:
    spec = {"n": 200, "log": str(tmp_path / "l"), "sleep": 0.002}

    async def run_job() -> float:
        start = trio.current_time()
        job = await server.submit(
            {"type": "test-count", "spec": dict(spec, log=str(tmp_path / str(start)))}
        )
        await server.wait_status(job["id"], "completed", timeout=20)
        return trio.current_time() - start

    baseline = await run_job()
    # A raw socket that asks for the event stream, then never reads a byte.
    stuck = trio.socket.socket()
    await stuck.connect(("127.0.0.1", server.info.port))
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    request = (
        f"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1:{server.info.port}\r\n"
        f"Authorization: Bearer {ADMIN}\r\n\r\n"
    )
    await stuck.send(request.encode())
    with trio.fail_after(5):
        while not server.hub.subscriptions:
            await trio.sleep(0.01)
    # Flood it: far more events than its buffer holds.
    for i in range(2000):
        server.hub.publish(
            "status", f"x{i}", None, {"id": f"x{i}", "status": "queued", "pad": "x" * 200}
        )
    with_stuck = await run_job()
    assert with_stuck < baseline * 3 + 1.0  # generous: the machine is shared
    assert server.hub.dropped_total > 0
    stuck.close()


async def test_streams_end_on_shutdown(tmp_path) -> None:
    tokens = write_tokens(str(tmp_path / "tokens"))
    async with parjobs.open_manager(tmp_path / "s.sqlite") as manager:
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            info = await nursery.start(
                functools.partial(
                    serve, manager, port=0, token_file=tokens, shutdown_trigger=stop.wait
                )
            )
            async with (
                httpx.AsyncClient(
                    base_url=info.base_url, headers={"authorization": f"Bearer {ADMIN}"}
                ) as c,
                c.stream("GET", "/api/events") as r,
            ):
                assert r.status_code == 200
                stop.set()
                with trio.fail_after(3):  # the stream ends cleanly, promptly
                    async for _ in r.aiter_lines():
                        pass


async def test_stream_of_a_final_job_ends_at_once(server: Server, tmp_path) -> None:
    job = await server.submit({"type": "test-count", "spec": {"n": 2, "log": "/dev/null"}})
    await server.wait_status(job["id"], "completed")
    for headers in ({}, {"last-event-id": "0"}):
        events = await collect(
            server, f"/api/jobs/{job['id']}/events", lambda ev: False, headers=headers, limit=3
        )
        assert [e.kind for e in events] == ["snapshot", "end"]
        assert events[0].data["status"] == "completed"


async def test_a_quick_job_is_seen_start_to_end_and_timed(server: Server, tmp_path) -> None:
    # A job that went queued -> completed between two looks of the old poller was never
    # timed. On the manager's event stream the hub sees each status change the manager
    # reads from the store, in order: the manager reads on every status change here, but a
    # change superseded before its read (queued, when the scheduler claims the job at once)
    # arrives as the newer status only. Whatever arrives, the run is timed exactly once.
    async with trio.open_nursery() as nursery:
        got: list = []

        async def follow() -> None:
            got.extend(await collect(server, "/api/events", lambda ev: "completed" in statuses(ev)))

        nursery.start_soon(follow)
        with trio.fail_after(5):
            while not server.hub.subscriptions:  # connected before the submit
                await trio.sleep(0.01)
        spec = {"n": 2, "log": str(tmp_path / "l")}
        job = await server.submit({"type": "test-count", "spec": spec})
    seen = statuses(got, job["id"])
    order = ["queued", "running", "completed"]
    assert seen[-1] == "completed", seen
    assert seen == [s for s in order if s in seen], seen  # in order, each once
    async with server.client() as c:
        metrics = (await c.get("/metrics")).text.splitlines()
    assert "parjobs_job_run_seconds_count 1.0" in metrics
    assert "parjobs_job_queue_wait_seconds_count 1.0" in metrics


async def test_events_dropped_by_the_manager_make_clients_reload(server: Server) -> None:
    hub = server.hub
    before = hub.last_id
    live = hub.subscribe(owner=None, job_id=None, last_id=None)
    try:
        hub.handle(JobEvent(EventKind.DELETED, "0123456789ab", 1, dropped=3))
        assert live.reset  # told to reload at its next write
        assert [e.kind for e in live.queue] == ["deleted"]
        # One reconnecting from before the gap is told to reload; one from after it is not.
        assert hub.subscribe(owner=None, job_id=None, last_id=before).reset
        assert not hub.subscribe(owner=None, job_id=None, last_id=hub.last_id).reset
    finally:
        hub.subscriptions.clear()


async def test_progress_writes_to_many_clients_share_a_budget(server: Server) -> None:
    """Each progress write costs the event loop the jobs run on: past 20 clients each is sent
    progress less often, so all of them together get at most ~200 writes a second."""
    hub = server.hub
    assert hub.client_progress_interval == pytest.approx(0.1)
    subs = [hub.subscribe(owner=None, job_id=None, last_id=None) for _ in range(50)]
    try:
        assert hub.client_progress_interval == pytest.approx(0.25)
        assert len(subs) / hub.client_progress_interval <= hub.limits.progress_budget
        subs += [hub.subscribe(owner=None, job_id=None, last_id=None) for _ in range(950)]
        assert hub.client_progress_interval == pytest.approx(1.0)  # never rarer than 1/s
    finally:
        hub.subscriptions.clear()


async def test_a_process_tasks_output_lines_reach_the_event_stream(server: Server) -> None:
    """A job's program output reaches the job's SSE stream as ``output`` events (without ids:
    they are not replayed)."""
    job = await server.submit({"type": "test-process-lines", "spec": {}, "start": False}, ALICE)
    lines: list[tuple[str, str]] = []
    async with server.client(ALICE) as c, c.stream("GET", f"/api/jobs/{job['id']}/events") as r:
        with trio.fail_after(15):
            async for event in sse_events(r):
                if event.kind == "snapshot":  # subscribed: now let it run
                    async with server.client(ALICE) as steer:
                        resumed = await steer.post(f"/api/jobs/{job['id']}/resume")
                        assert resumed.status_code == 200
                if event.kind == "output":
                    assert event.id is None and event.data["job_id"] == job["id"]
                    assert (event.data["index"], event.data["label"]) == (7, "printer")
                    lines.append((event.data["stream"], event.data["text"]))
                if event.kind == "end":
                    break
    assert [text for stream, text in lines if stream == "stdout"] == [
        "hello",
        "world",
        "caf\\xe9",
        "no newline at the end",
    ]
    assert [text for stream, text in lines if stream == "stderr"] == ["oops"]
