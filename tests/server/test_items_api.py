"""The item log and undo over the REST API (#14.2): paged records, a filter, owners, undo."""

from __future__ import annotations

import base64
import json
import os

import _jobs  # noqa: F401  (registers test-count)
import pytest
import trio
from _server import ALICE, BOB, Server, sse_events
from _trees import write


@pytest.mark.both_stores
async def test_items_paged_filtered_and_undone(server: Server, tmp_path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()  # an existing directory: the copy goes into it (dst/src), as cp -r does
    for i in range(7):
        write(src / f"f{i}", os.urandom(10 + i))
    job = await server.submit(
        {"type": "copy", "spec": {"sources": [str(src)], "destination": str(dst)}}, token=ALICE
    )
    await server.wait_status(job["id"], "completed")
    async with server.client(ALICE) as c:
        seen: list[dict] = []
        after = 0
        with trio.fail_after(10):
            while True:
                r = await c.get(f"/api/jobs/{job['id']}/items", params={"limit": 3, "after": after})
                assert r.status_code == 200, r.text
                page = r.json()
                assert page["total"] == 8  # 7 files and the directory
                seen += page["items"]
                if page["next_after"] is None:
                    break
                after = page["next_after"]
        assert [i["seq"] for i in seen] == list(range(1, 9))
        files = {i["source"]: i for i in seen if i["source"] != str(src)}
        assert set(files) == {str(src / f"f{i}") for i in range(7)}
        f3 = files[str(src / "f3")]
        assert f3["action"] == "copied" and f3["destination"] == str(dst / "src" / "f3")
        assert f3["bytes"] == 13 and f3["written"]["size"] == 13
        r = await c.get(f"/api/jobs/{job['id']}/items", params={"action": "moved"})
        assert r.json() == {"items": [], "total": 0, "next_after": None}
        r = await c.get(f"/api/jobs/{job['id']}/items", params={"limit": 0})
        assert r.status_code == 422 and "limit" in r.json()["error"]
        r = await c.post(f"/api/jobs/{job['id']}/undo")
        assert r.status_code == 201, r.text
        undo = r.json()
        assert undo["type"] == "undo" and undo["owner"] == "alice"
        await server.wait_status(undo["id"], "completed", timeout=20)
        again = await c.post(f"/api/jobs/{job['id']}/undo")
        assert again.json()["id"] == undo["id"]  # once per job
    assert sorted(os.listdir(dst)) == []  # what the copy made is gone
    assert len(os.listdir(src)) == 7  # the sources untouched
    async with server.client(BOB) as c:  # another owner sees neither the log nor undo
        assert (await c.get(f"/api/jobs/{job['id']}/items")).status_code == 404
        assert (await c.post(f"/api/jobs/{job['id']}/undo")).status_code == 404


async def test_undo_of_a_running_job_is_a_conflict(server: Server, tmp_path) -> None:
    spec = {"n": 400, "log": str(tmp_path / "log"), "sleep": 0.01}
    job = await server.submit({"type": "test-count", "spec": spec})
    await server.wait_status(job["id"], "running")
    async with server.client() as c:
        r = await c.post(f"/api/jobs/{job['id']}/undo")
        assert r.status_code == 409 and "pause or cancel it first" in r.json()["error"]
        await c.post(f"/api/jobs/{job['id']}/cancel")
    await server.wait_status(job["id"], "cancelled")


#: Files of the copy whose item records stream (2,000 took 3.9 s at load 6, 12 s at load 20).
FILES = 600


async def test_item_records_stream_as_batched_item_events(server: Server, tmp_path) -> None:
    """A client following with ``items=1`` gets every item record of a 600-file copy as
    ``item`` events, a list per checkpoint (far fewer events than records), all before the
    job's final status, equal to the stored log; a client without it gets none (#14)."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    for i in range(FILES):
        write(src / f"f{i:04}", b"x" * (i % 7))
    with_items: list = []
    without: list = []

    def completed(events: list) -> bool:
        return any(e.kind == "status" and e.data["status"] == "completed" for e in events)

    async def follow(path: str, into: list) -> None:
        async with server.client() as c, c.stream("GET", path) as r:
            assert r.status_code == 200
            with trio.fail_after(60):
                async for event in sse_events(r):
                    into.append(event)
                    if completed(into):
                        return

    async with trio.open_nursery() as nursery:
        nursery.start_soon(follow, "/api/events?items=1", with_items)
        nursery.start_soon(follow, "/api/events", without)
        with trio.fail_after(5):
            while len(server.hub.subscriptions) < 2:  # both connected before the submit
                await trio.sleep(0.01)
        spec = {"sources": [str(src)], "destination": str(dst)}
        job = await server.submit({"type": "copy", "spec": spec})
    batches = [e for e in with_items if e.kind == "item"]
    streamed = [record for e in batches for record in e.data["items"]]
    assert all(e.data["job_id"] == job["id"] and e.id is None for e in batches)
    assert [r["seq"] for r in streamed] == list(range(1, FILES + 2))  # the files + the directory
    assert len(batches) <= (FILES + 1) / 10, len(batches)  # one per checkpoint, not per file
    last = max(i for i, e in enumerate(with_items) if e.kind == "item")
    final = next(i for i, e in enumerate(with_items) if completed(with_items[: i + 1]))
    assert last < final  # every record before the final status
    stored: list[dict] = []
    async with server.client() as c:  # the catch-up path: pages after a seq
        while len(stored) < len(streamed):
            params = {"limit": 1000, "after": len(stored)}
            stored += (await c.get(f"/api/jobs/{job['id']}/items", params=params)).json()["items"]
    assert stored == streamed
    assert not [e for e in without if e.kind == "item"]
    assert not server.manager._events.listening_items  # nobody asks now: none are built
    async with server.client() as c:
        r = await c.get("/api/events", params={"items": "maybe"})
    assert r.status_code == 422


async def test_a_name_that_is_not_utf8_is_strict_json_in_responses_and_events(
    server: Server, tmp_path
) -> None:
    """The CLI's ``--json`` rule over a real socket: a job, its items and its event stream
    write a bad byte of a name as ``\\xNN``, the name's bytes (base64) in ``names_bytes``
    (a lone surrogate failed the response with a 500, or was no Unicode in an event)."""
    bad = os.fsencode(tmp_path) + b"/bad-\xff"
    write(os.fsdecode(bad), b"b")
    (tmp_path / "dst").mkdir()
    spec = {"sources": [os.fsdecode(bad)], "destination": str(tmp_path / "dst")}
    shown = str(tmp_path) + "/bad-\\xff"
    async with server.client() as c:
        body = json.dumps({"type": "copy", "spec": spec})  # the name as "\\udcff", as Python's
        r = await c.post("/api/jobs", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 201, r.text
        r.content.decode("ascii")  # nothing a strict parser refuses
        job = r.json()
        assert job["spec"]["sources"] == [shown]
        assert base64.b64decode(job["names_bytes"][shown]) == bad
        await server.wait_status(job["id"], "completed")
        r = await c.get(f"/api/jobs/{job['id']}/items")
        assert r.status_code == 200, r.text
        page = r.json()  # names_bytes: in the response's object, as in a --json line
        (item,) = page["items"]
        assert item["source"] == shown and item["destination"].endswith("/dst/bad-\\xff")
        assert base64.b64decode(page["names_bytes"][shown]) == bad
        async with c.stream("GET", f"/api/jobs/{job['id']}/events") as stream:
            async for event in sse_events(stream):
                assert event.kind == "snapshot"
                assert event.data["spec"]["sources"] == [shown]
                break
