"""The REST API through a real socket: submit, list, show, steer, errors; auth and safety."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import AsyncIterator

import _jobs  # noqa: F401  (registers test-count and test-validated)
import pytest
import trio
from _server import ADMIN, ALICE, BOB, Server, sse_events
from _trees import snapshot, write

import parjobs
from parjobs.server import _auth as auth


def make_tree(root) -> None:
    os.makedirs(root / "sub" / "deeper")
    for i in range(30):
        write(root / ("sub" if i % 2 else "sub/deeper") / f"f{i}.bin", os.urandom(100 + i * 37))
    write(root / "top.txt", b"hello")


@pytest.mark.both_stores
async def test_copy_over_rest_followed_by_sse(server: Server, tmp_path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_tree(src)
    job = await server.submit(
        {"type": "copy", "spec": {"sources": [str(src)], "destination": str(dst)}}
    )
    assert job["type"] == "copy" and job["spec"]["destination"] == str(dst)
    statuses = []
    async with server.client() as c, c.stream("GET", f"/api/jobs/{job['id']}/events") as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        with trio.fail_after(10):
            async for event in sse_events(r):
                if event.kind in ("status", "snapshot"):
                    statuses.append(event.data["status"])
                if event.kind == "end":
                    break
    assert statuses[-1] == "completed"
    assert snapshot(src) == snapshot(dst)  # dst did not exist: it is the copy (cp -r)
    async with server.client() as c:
        shown = (await c.get(f"/api/jobs/{job['id'][:6]}")).json()  # a prefix works too
        assert shown["status"] == "completed" and shown["id"] == job["id"]
        listed = (await c.get("/api/jobs", params={"status": "completed"})).json()
        assert [j["id"] for j in listed["jobs"]] == [job["id"]]


@pytest.mark.both_stores
async def test_pause_resume_cancel(server: Server, tmp_path) -> None:
    log = str(tmp_path / "log")
    spec = {"n": 400, "log": log, "sleep": 0.01}
    job = await server.submit({"type": "test-count", "spec": spec})
    await server.wait_status(job["id"], "running")
    async with server.client() as c:
        r = await c.post(f"/api/jobs/{job['id']}/pause")
        assert r.status_code == 200 and r.json()["status"] in ("pausing", "paused")
        await server.wait_status(job["id"], "paused")
        assert (await c.post(f"/api/jobs/{job['id']}/pause")).status_code == 200  # no-op
        r = await c.post(f"/api/jobs/{job['id']}/resume")
        assert r.status_code == 200, r.text
        await server.wait_status(job["id"], "running")
        r = await c.post(f"/api/jobs/{job['id']}/cancel")
        assert r.status_code == 200
        await server.wait_status(job["id"], "cancelled")
        # 409 with the reason: a cancelled job cannot be resumed, nor cancelled again.
        r = await c.post(f"/api/jobs/{job['id']}/resume")
        assert r.status_code == 409
        assert r.json() == {"error": f"cannot resume job {job['id']}: it is cancelled"}
        r = await c.post(f"/api/jobs/{job['id']}/cancel")
        assert r.status_code == 409 and "cancelled" in r.json()["error"]
        assert (await c.delete(f"/api/jobs/{job['id']}")).status_code == 204
        assert (await c.get(f"/api/jobs/{job['id']}")).status_code == 404


async def test_priority_delete_and_404(server: Server, tmp_path) -> None:
    job = await server.submit(
        {"type": "test-count", "spec": {"n": 3, "log": str(tmp_path / "l")}, "start": False}
    )
    async with server.client() as c:
        r = await c.patch(f"/api/jobs/{job['id']}", json={"priority": 7})
        assert r.status_code == 200 and r.json()["priority"] == 7
        r = await c.patch(f"/api/jobs/{job['id']}", json={"priority": "high"})
        assert r.status_code == 422
        assert (await c.get("/api/jobs/ffffffffffff")).status_code == 404
        assert (await c.post("/api/jobs/ffffffffffff/pause")).status_code == 404
        assert (await c.delete(f"/api/jobs/{job['id']}")).status_code == 204


async def test_a_trailing_dot_means_what_it_means_on_the_cli(server: Server, tmp_path) -> None:
    """A file manager sends absolute paths: ``/a/x/.`` (the CLI's ``x/.``) copies what x
    holds into the destination, as ``cp -a x/. D`` (it made D/x), and a move of it is
    refused (422), as ``mv`` refuses it."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_tree(src)
    dst.mkdir()
    async with server.client() as c:
        body = {"type": "move", "spec": {"sources": [f"{src}/."], "destination": str(dst)}}
        r = await c.post("/api/jobs", json=body)
        assert r.status_code == 422 and "like mv" in r.json()["error"]
    job = await server.submit(
        {"type": "copy", "spec": {"sources": [f"{src}/."], "destination": str(dst)}}
    )
    assert (await server.wait_status(job["id"], "completed", "failed"))["status"] == "completed"
    assert snapshot(dst) == snapshot(src)


async def test_overlapping_sources_are_422_naming_both(server: Server, tmp_path) -> None:
    """A move of ``x`` and ``x/sub`` (a file manager's selection across folders) is refused
    (422) with the CLI's message, and nothing moves."""
    (tmp_path / "x" / "sub").mkdir(parents=True)
    (tmp_path / "D").mkdir()
    x, sub = tmp_path / "x", tmp_path / "x" / "sub"
    async with server.client() as c:
        body = {
            "type": "move",
            "spec": {"sources": [str(x), str(sub)], "destination": str(tmp_path / "D")},
        }
        r = await c.post("/api/jobs", json=body)
    assert r.status_code == 422
    assert r.json()["error"].startswith(f"move: '{sub}' is inside '{x}', also given")
    assert sub.is_dir() and not os.listdir(tmp_path / "D")


async def test_422_bodies_match_the_cli(server: Server, tmp_path) -> None:
    dst = tmp_path / "dst"
    async with server.client() as c:
        r = await c.post(
            "/api/jobs",
            json={"type": "copy", "spec": {"sources": [str(tmp_path)], "destination": str(dst)}},
        )
        assert r.status_code == 422
        from parjobs import JobSpecError
        from parjobs.ops import CopyJob

        try:
            CopyJob(sources=[str(tmp_path)], destination=str(dst)).validate()
        except JobSpecError as exc:
            expected = str(exc)
        assert r.json() == {"error": expected}
        r = await c.post("/api/jobs", json={"type": "copy", "spec": {"sources": 3}})
        assert r.status_code == 422 and "copy.sources" in r.json()["error"]
        r = await c.post("/api/jobs", json={"type": "nope", "spec": {}})
        assert r.status_code == 422 and "unknown job type 'nope'" in r.json()["error"]
        r = await c.post("/api/jobs", content=b"{not json")
        assert r.status_code == 422
        assert (await c.get("/api/jobs")).json()["jobs"] == []  # nothing stored
    assert not dst.exists()  # nothing touched


async def test_a_body_nested_too_deeply_is_422(server: Server) -> None:
    # Found by the third hunt (session 18): json.loads raised RecursionError, answered 500.
    deep = b"[" * 100_000 + b"]" * 100_000
    async with server.client() as c:
        r = await c.post("/api/jobs", content=deep)
        assert r.status_code == 422, r.text
        assert r.json() == {"error": "the request body is nested too deeply"}
        assert (await c.get("/api/jobs")).json()["jobs"] == []


async def test_a_body_over_the_limit_is_413_declared_or_streamed(
    server: Server, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A body longer than MAX_BODY is refused, whether its Content-Length says so (not read)
    or it arrives chunked (read up to the limit): it was read whole into memory (72 MB of
    sources held the server for 30 s). One just under the limit is read as before."""
    from parjobs.server import _app

    monkeypatch.setattr(_app, "MAX_BODY", 4096)
    spec = {"sources": [str(tmp_path / f"missing-{i:05}") for i in range(200)]}
    big = json.dumps({"type": "copy", "spec": {**spec, "destination": str(tmp_path / "d")}})
    assert len(big) > 4096

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(big), 1000):
            yield big[i : i + 1000].encode()

    async with server.client() as c:
        r = await c.post("/api/jobs", content=big.encode())
        assert r.status_code == 413, r.text
        assert r.json() == {"error": "the request body is larger than 4096 bytes"}
        r = await c.post("/api/jobs", content=chunks())
        assert r.status_code == 413, r.text
        small = {"type": "copy", "spec": {"sources": [str(tmp_path / "x")], "destination": "/d"}}
        r = await c.post("/api/jobs", json=small)  # under it: read, and refused for its spec
        assert r.status_code == 422 and "x" in r.json()["error"], r.text
        assert (await c.get("/api/jobs")).json()["jobs"] == []
    assert not (tmp_path / "d").exists()


@pytest.mark.both_stores
async def test_errors_paged(server: Server, tmp_path) -> None:
    spec = {"n": 30, "log": str(tmp_path / "l"), "fail_every": 3}
    job = await server.submit({"type": "test-count", "spec": spec})
    await server.wait_status(job["id"], "completed_with_errors")
    async with server.client() as c:
        first = (await c.get(f"/api/jobs/{job['id']}/errors", params={"limit": 6})).json()
        assert first["total"] == 10 and len(first["errors"]) == 6
        assert first["next_offset"] == 6
        rest = (await c.get(f"/api/jobs/{job['id']}/errors", params={"offset": 6})).json()
        assert len(rest["errors"]) == 4 and rest["next_offset"] is None
        indices = sorted(e["index"] for e in first["errors"] + rest["errors"])
        assert indices == list(range(0, 30, 3))
        assert rest["errors"][0]["message"].startswith("item ")


@pytest.mark.both_stores
@pytest.mark.parametrize("by", ["the server", "another manager"])
async def test_a_job_an_undo_took_shows_it_and_cannot_be_resumed(
    server: Server, tmp_path, store_path: str, by: str
) -> None:
    """A job completed with errors that an undo took (through the API, or another process
    on the store) rests so with ``request`` "undo": the job view says so and that it
    cannot be resumed, and a status event says it though its status is the same (it said
    ``can_resume`` true, and the dashboard offered Resume, a 409 when clicked)."""
    spec = {"n": 10, "log": str(tmp_path / "l"), "fail_every": 3}
    job = await server.submit({"type": "test-count", "spec": spec})
    await server.wait_status(job["id"], "completed_with_errors")
    async with server.client() as c, c.stream("GET", "/api/events") as events:
        view = (await c.get(f"/api/jobs/{job['id']}")).json()
        assert (view["request"], view["can_resume"]) == (None, True)
        if by == "the server":
            r = await c.post(f"/api/jobs/{job['id']}/undo")
            assert r.status_code == 201, r.text
            undo_id = r.json()["id"]
        else:
            async with parjobs.open_manager(store_path) as other:
                undo = await other.undo(job["id"])
                assert await undo.wait() is parjobs.JobStatus.COMPLETED
                undo_id = undo.id
        with trio.fail_after(10):
            async for event in sse_events(events):
                if event.kind == "status" and event.data["id"] == job["id"]:
                    assert event.data["can_resume"] is False, event.data
                    assert event.data["result"] == view["result"]
                    break
        view = (await c.get(f"/api/jobs/{job['id']}")).json()
        assert (view["status"], view["request"]) == ("completed_with_errors", "undo")
        assert view["can_resume"] is False
        listed = (await c.get("/api/jobs", params={"type": "test-count"})).json()["jobs"]
        assert [(j["request"], j["can_resume"]) for j in listed] == [("undo", False)]
        r = await c.post(f"/api/jobs/{job['id']}/resume")
        assert r.status_code == 409 and f"undone by job {undo_id}" in r.json()["error"]


async def test_auth_401_and_nothing_else(server: Server) -> None:
    async with server.client(token=None) as c:
        for method, path in [
            ("GET", "/api/jobs"),
            ("GET", "/nope"),
            ("POST", "/api/jobs"),
            ("GET", "/metrics"),
            ("GET", "/api/openapi.json"),
        ]:
            r = await c.request(method, path)
            assert r.status_code == 401 and r.json() == {"error": "unauthorized"}, path
        assert (await c.get("/healthz")).json() == {"status": "ok"}
    async with server.client(token="wrong-token-0123456789abcdef") as c:
        assert (await c.get("/api/jobs")).status_code == 401
    async with server.client(token=None) as c:  # the query token is for pages, not the API
        assert (await c.get("/api/jobs", params={"token": ADMIN})).status_code == 401


async def test_a_token_taken_out_of_the_file_is_refused_at_the_next_look(
    server: Server, caplog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tokens were read once, at start: a token removed from the file (a person who
    should no longer see the jobs) kept working, cookie and all, until the next restart.
    The gate looks at the file every `TOKEN_FILE_FRESH` (1 s; 0.05 s here, its bound is
    tests/server/test_auth_gate.py's)."""
    monkeypatch.setattr(auth, "TOKEN_FILE_FRESH", 0.05)
    path = server.tmp / "tokens"

    async def status(token: str) -> int:
        async with server.client(token) as c:
            return (await c.get("/api/jobs")).status_code

    assert await status(BOB) == 200
    new = server.tmp / "tokens.new"
    new.write_text(f"{ADMIN}\n{ALICE} owner=alice\n")
    os.chmod(new, 0o600)
    os.replace(new, path)  # as an editor saves it
    await trio.sleep(0.1)
    assert (await status(BOB), await status(ALICE), await status(ADMIN)) == (401, 200, 200)
    with open(path, "a") as f:  # written in place: the same inode, a new size and mtime
        f.write(f"{BOB} owner=bob\n")
    await trio.sleep(0.1)
    assert await status(BOB) == 200
    os.chmod(path, 0o644)  # readable by others: exposed, no token is trusted
    await trio.sleep(0.1)
    assert (await status(ADMIN), await status(BOB)) == (401, 401)
    assert "accessible by other users" in caplog.text
    os.chmod(path, 0o600)
    await trio.sleep(0.1)
    assert await status(ADMIN) == 200


async def test_a_token_file_that_hangs_holds_up_only_the_requests_that_need_it(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gate stat'ed (and on a change read) the token file on the event loop: a file
    that hangs (a home on an unreachable NFS server) stalled the whole server, its jobs,
    ``/healthz`` and every open stream. A FIFO stands for it here (opening it waits for a
    writer; a timer thread opens it after 8 s, else the old gate blocked this test for
    good). The look runs in a thread now: the request waits for it, at most
    `TOKEN_FILE_WAIT` (1 s here), then is answered 503; the loop goes on meanwhile."""
    monkeypatch.setattr(auth, "TOKEN_FILE_FRESH", 0.05)
    monkeypatch.setattr(auth, "TOKEN_FILE_WAIT", 1.0)
    path = server.tmp / "tokens"
    saved = path.read_bytes()
    os.mkfifo(server.tmp / "tokens.fifo", 0o600)
    os.replace(server.tmp / "tokens.fifo", path)

    def answer() -> None:  # a writer opens the FIFO: the look's open returns
        os.close(os.open(path, os.O_RDWR | os.O_NONBLOCK))

    timer = threading.Timer(8, answer)
    timer.start()
    statuses: list[int] = []

    async def ask() -> None:
        async with server.client(ADMIN) as c:
            statuses.append((await c.get("/api/jobs")).status_code)

    try:
        await trio.sleep(0.1)
        t0 = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask)
            await trio.sleep(0.5)
            async with server.client(None) as c:
                assert (await c.get("/healthz")).status_code == 200
            assert trio.current_time() - t0 < 4  # the old gate: 8 s, the loop blocked
            assert statuses == []  # still waiting for the file
        assert statuses == [503]  # the file did not answer within 1 s
        assert trio.current_time() - t0 < 4
        monkeypatch.setattr(auth, "TOKEN_FILE_WAIT", 10.0)  # (answered meanwhile, below)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask)  # waits for the look left hanging, then looks again
            with trio.fail_after(10):
                while len(statuses) < 2:
                    answer()
                    await trio.sleep(0.05)
        assert statuses == [503, 401]  # the file answers: a FIFO is no token file
    finally:
        timer.cancel()
    new = server.tmp / "tokens.new"
    new.write_bytes(saved)
    os.chmod(new, 0o600)
    os.replace(new, path)
    await trio.sleep(0.1)
    async with server.client(ADMIN) as c:
        assert (await c.get("/api/jobs")).status_code == 200


async def test_an_open_event_stream_ends_once_its_token_is_taken_out(
    server: Server, tmp_path
) -> None:
    """A token removed from the file was refused from the next request on (3777d92), but
    an event stream it had opened (the dashboard's) kept showing the owner's jobs' events
    for as long as it stayed open. It ends at its next chunk now; another token's goes on."""
    src = tmp_path / "src"
    src.mkdir()
    write(src / "a", b"a")
    async with (
        server.client(ALICE) as alice,
        alice.stream("GET", "/api/events") as revoked,
        server.client(ADMIN) as admin,
        admin.stream("GET", "/api/events") as kept,
    ):
        assert (revoked.status_code, kept.status_code) == (200, 200)
        new = server.tmp / "tokens.new"
        new.write_text(f"{ADMIN}\n")
        os.chmod(new, 0o600)
        os.replace(new, server.tmp / "tokens")
        with trio.fail_after(10):  # the next chunk (an event, or a heartbeat: 0.3 s here)
            seen = [event.kind async for event in sse_events(revoked)]
        assert "status" not in seen
        job = await server.submit({"type": "hash", "spec": {"paths": [str(src)]}})
        with trio.fail_after(10):
            async for event in sse_events(kept):
                if event.kind == "status" and event.data.get("id") == job["id"]:
                    break


async def test_query_token_becomes_a_cookie(server: Server) -> None:
    async with server.client(token=None) as c:
        r = await c.get("/", params={"token": ADMIN, "x": "1"})
        assert r.status_code == 303 and r.headers["location"] == "/?x=1"
        cookie = r.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        assert cookie.startswith(f"parjobs_token_{server.info.port}=")
        assert (await c.get("/api/jobs")).status_code == 200  # the cookie now authenticates


async def test_host_and_origin_checks(server: Server) -> None:
    async with server.client(headers={"host": "evil.example:80"}) as c:
        assert (await c.get("/api/jobs")).status_code == 403
    async with server.client(headers={"host": f"localhost:{server.info.port}"}) as c:
        assert (await c.get("/api/jobs")).status_code == 200
    async with server.client(headers={"origin": "http://evil.example"}) as c:
        r = await c.post("/api/jobs", json={"type": "copy", "spec": {}})
        assert r.status_code == 403
        assert (await c.get("/api/jobs")).status_code == 200  # reads are not CSRF
    async with server.client(headers={"origin": server.url}) as c:
        r = await c.post("/api/jobs", json={"type": "nope", "spec": {}})
        assert r.status_code == 422  # same origin: it got through to validation


async def test_owner_isolation(server: Server, tmp_path) -> None:
    mine = await server.submit(
        {"type": "test-count", "spec": {"n": 2, "log": str(tmp_path / "a")}}, token=ALICE
    )
    assert mine["owner"] == "alice"
    theirs = await server.submit(
        {"type": "test-count", "spec": {"n": 2, "log": str(tmp_path / "b")}}, token=BOB
    )
    await server.wait_status(theirs["id"], "completed")
    async with server.client(ALICE) as c:
        listed = (await c.get("/api/jobs")).json()["jobs"]
        assert [j["id"] for j in listed] == [mine["id"]]
        assert (await c.get(f"/api/jobs/{theirs['id']}")).status_code == 404
        assert (await c.post(f"/api/jobs/{theirs['id']}/cancel")).status_code == 404
        assert (await c.delete(f"/api/jobs/{theirs['id']}")).status_code == 404
        assert (await c.get("/metrics")).status_code == 403
        assert (await c.get("/api/workers")).status_code == 403
        r = await c.post(
            "/api/jobs",
            json={"type": "test-count", "spec": {"n": 1, "log": "x"}, "owner": "bob"},
        )
        assert r.status_code == 403
    async with server.client(ADMIN) as c:
        assert len((await c.get("/api/jobs")).json()["jobs"]) == 2
        assert len((await c.get("/api/jobs", params={"owner": "bob"})).json()["jobs"]) == 1


@pytest.mark.both_stores
async def test_job_types_and_workers(server: Server) -> None:
    async with server.client() as c:
        types = {t["name"]: t for t in (await c.get("/api/job-types")).json()["types"]}
        assert {"copy", "move", "delete", "hash", "duplicates", "thumbnails"} <= set(types)
        schema = types["copy"]["schema"]
        assert schema["properties"]["sources"] == {"type": "array", "items": {"type": "string"}}
        assert "destination" in schema["required"]
        assert "fail" in schema["properties"]["on_conflict"]["enum"]
        assert types["test-count"]["schema"]["properties"]["sleep"] == {
            "type": "number",
            "default": 0.0,
        }
        workers = (await c.get("/api/workers")).json()["workers"]
        here = [w for w in workers if w["this"]]
        assert len(here) == 1 and here[0]["pid"] == os.getpid() and here[0]["alive"]
        assert here[0]["lanes"]["io"]["capacity"] >= 1
        assert here[0]["heartbeat_age"] < 30


async def test_a_submitted_spec_is_validated_once_off_the_event_loop(
    server: Server, tmp_path
) -> None:
    """The handler validated it on the event loop (``from_spec``), then the manager's submit
    again in a worker thread; only the latter now (the handler checks the field types)."""
    log = tmp_path / "log"
    job = await server.submit({"type": "test-validated", "spec": {"log": str(log)}})
    await server.wait_status(job["id"], "completed")
    assert log.read_text().splitlines() == ["validate thread", "run"]


async def test_idempotency_key_reused_for_another_spec_is_409(server: Server, tmp_path) -> None:
    body = {"type": "test-count", "spec": {"n": 1, "log": str(tmp_path / "l")}, "start": False}
    first = await server.submit({**body, "idempotency_key": "nightly"})
    again = await server.submit({**body, "idempotency_key": "nightly"})
    assert again["id"] == first["id"]
    async with server.client() as c:
        other = {**body, "spec": {"n": 2, "log": str(tmp_path / "l")}, "idempotency_key": "nightly"}
        r = await c.post("/api/jobs", json=other)
        assert r.status_code == 409 and "'nightly'" in r.json()["error"]
        assert [j["id"] for j in (await c.get("/api/jobs")).json()["jobs"]] == [first["id"]]


async def test_owner_tokens_use_the_scoped_view_id_prefixes_included(server: Server) -> None:
    """An owner-bound token resolved a prefix across every owner: a prefix shared with
    another owner's job was "ambiguous" (telling that it exists), now it is the token's."""
    store = server.manager.store
    for job_id, owner in (("abc111111111", "alice"), ("abc222222222", "bob")):
        store.insert_job(job_id, "test-count", 1, '{"n": 1, "log": "x"}', owner=owner)
    async with server.client(ALICE) as c:
        r = await c.get("/api/jobs/abc")
        assert r.status_code == 200 and r.json()["id"] == "abc111111111"
        r = await c.post("/api/jobs/abc2/cancel")
        assert r.status_code == 404 and r.json() == {"error": "no job with id 'abc2'"}
    async with server.client(ADMIN) as c:
        assert (await c.get("/api/jobs/abc")).status_code == 404  # ambiguous for the operator
        assert (await c.get("/api/jobs/abc2")).json()["status"] == "queued"
