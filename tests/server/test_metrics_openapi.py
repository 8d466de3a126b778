"""/metrics parses as Prometheus text and matches the jobs; the OpenAPI document lists
exactly the routes the app serves."""

from __future__ import annotations

import os
from typing import Any

import _jobs  # noqa: F401  (registers test-count)
import pytest
import trio
from _server import Server
from prometheus_client.parser import text_string_to_metric_families

from parjobs.server import ENDPOINTS


async def scrape(server: Server) -> dict[str, list]:
    async with server.client() as c:
        r = await c.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return {f.name: f.samples for f in text_string_to_metric_families(r.text)}


def value(samples, name, **labels) -> float:
    found = [s.value for s in samples if s.name == name and labels.items() <= s.labels.items()]
    assert len(found) == 1, (name, labels, samples)
    return found[0]


@pytest.mark.both_stores
async def test_metrics_match_the_job(server: Server, tmp_path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    os.makedirs(src)
    sizes = [1000 * (i + 1) for i in range(12)]
    for i, size in enumerate(sizes):
        (src / f"f{i}").write_bytes(os.urandom(size))
    before = await scrape(server)
    job = await server.submit(
        {"type": "copy", "spec": {"sources": [str(src)], "destination": str(dst)}}
    )
    done = await server.wait_status(job["id"], "completed")
    metrics = await scrape(server)
    # Task and checkpoint durations: this process's histograms grew by this job's share
    # (its directory, its files in bundles of a few each, its finishing step: 3 tasks at least).
    for name, least in (("parjobs_task_seconds", 3), ("parjobs_checkpoint_seconds", 1)):
        grew = value(metrics[name], f"{name}_count") - value(before[name], f"{name}_count")
        assert grew >= least, (name, grew)
        assert value(metrics[name], f"{name}_bucket", le="+Inf") == value(
            metrics[name], f"{name}_count"
        )
    assert value(metrics["parjobs_jobs"], "parjobs_jobs", type="copy", status="completed") == 1
    tasks = value(metrics["parjobs_tasks_done"], "parjobs_tasks_done_total", type="copy")
    assert tasks == done["done_items"] >= len(sizes)
    nbytes = value(metrics["parjobs_bytes_done"], "parjobs_bytes_done_total", type="copy")
    assert nbytes == done["done_bytes"] == sum(sizes)
    assert value(metrics["parjobs_items_failed"], "parjobs_items_failed_total", type="copy") == 0
    assert value(metrics["parjobs_workers_busy"], "parjobs_workers_busy", lane="io") == 0
    assert value(metrics["parjobs_managers"], "parjobs_managers", alive="true") == 1
    # This manager's counters move when the run has wound down, and the duration histogram
    # when the event hub has seen the job end: both follow the store within a moment.
    p = done["progress"]
    finished = p["items_done"] + p["items_skipped"] + p["items_failed"]
    seen: tuple[float, float] = (-1, -1)
    with trio.move_on_after(5):
        while seen != (1, finished):
            metrics = await scrape(server)
            ran = value(metrics["parjobs_job_run_seconds"], "parjobs_job_run_seconds_count")
            count = metrics["parjobs_manager_tasks_finished"]
            seen = (ran, value(count, "parjobs_manager_tasks_finished_total"))
            await trio.sleep(0.05)
    assert seen == (1, finished), "(jobs timed, tasks finished) after 5 s"


async def test_metrics_count_failed_items(server: Server, tmp_path) -> None:
    spec = {"n": 20, "log": str(tmp_path / "l"), "fail_every": 5}
    job = await server.submit({"type": "test-count", "spec": spec})
    await server.wait_status(job["id"], "completed_with_errors")
    metrics = await scrape(server)
    failed = metrics["parjobs_items_failed"]
    assert value(failed, "parjobs_items_failed_total", type="test-count") == 4


async def test_openapi_lists_every_route_and_only_those(server: Server) -> None:
    async with server.client() as c:
        doc = (await c.get("/api/openapi.json")).json()
    assert doc["openapi"].startswith("3.1")
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    app = server_app_routes(server)
    assert documented == app
    for path, ops in doc["paths"].items():
        for op in ops.values():
            names = {p["name"] for p in op.get("parameters", ()) if p["in"] == "path"}
            assert names == set(path_params(path)), path
    assert doc["paths"]["/healthz"]["get"]["security"] == []


def server_app_routes(server: Server) -> set[tuple[str, str]]:
    """(method, path) of every API route the Starlette router serves (HEAD aside): all of
    them but the dashboard's pages (`PAGES`), which are not API and not documented."""
    from starlette.applications import Starlette

    from parjobs.server._app import create_app
    from parjobs.server._pages import PAGES

    gate = create_app(server.manager, tokens=[])
    assert isinstance(gate.app, Starlette)
    routes: list[Any] = gate.app.routes  # Route and Mount: both have .path and .methods here
    served = {
        (method, route.path) for route in routes for method in route.methods if method != "HEAD"
    }
    assert set(PAGES) <= served
    return served - set(PAGES)


def path_params(path: str) -> list[str]:
    import re

    return re.findall(r"{(\w+)}", path)


def test_endpoints_table_is_unique() -> None:
    keys = [(e.method, e.path) for e in ENDPOINTS]
    assert len(keys) == len(set(keys))


def test_docs_endpoint_table_is_the_route_table() -> None:
    docs = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "serve.md")
    with open(docs) as f:
        text = f.read()
    table = text.split("<!-- endpoints-table")[1].split("\n\n")[0]
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    expected = [f"| `{e.method} {e.path}` | {e.summary} |" for e in ENDPOINTS]
    assert rows == expected


def test_serve_help_shows_an_example(capsys) -> None:
    from parjobs.cli import main

    assert main(["serve", "--help"]) == 0
    out = capsys.readouterr().out
    assert "example:" in out and "parjobs serve" in out and "--token-file" in out


def test_openapi_record_schemas_have_the_views_keys() -> None:
    """Progress and ItemError's schemas are built from the records: they list exactly the
    keys the API writes for them, typed (a field added to a record is documented)."""
    from parjobs import ItemError, Progress
    from parjobs.server._openapi import COMPONENTS
    from parjobs.server._views import progress_view

    error = ItemError(index=3, label="a", error="OSError", message="no", stage="copy")
    snap = Progress(job_id="j", items_total=4, recent_errors=(error,), partial=(("s", 1, 9),))
    data = progress_view(snap)
    schema = COMPONENTS["Progress"]["properties"]
    assert list(schema) == list(data)
    assert schema["items_total"] == {"type": ["integer", "null"]}
    assert schema["current"] == {"type": "array", "items": {"type": "string"}}
    assert schema["recent_errors"]["items"] == {"$ref": "#/components/schemas/ItemError"}
    assert list(COMPONENTS["ItemError"]["properties"]) == list(data["recent_errors"][0])
