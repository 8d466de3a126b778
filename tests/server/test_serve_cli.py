"""``parjobs serve`` as a subprocess: the first stdout line, SIGTERM with a job running,
refusals at startup."""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import re
import signal
import sqlite3
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from _forkcli import Forked
from _forkcli import run as forked_run
from _server import ADMIN, write_tokens

from parjobs.server._restart import marker_path

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The CLI, with the test job types registered (as a user's plugin module would be).
RUN = (
    f"import sys; sys.path.insert(0, {TESTS!r}); import _jobs; "
    "from parjobs.cli import main; sys.exit(main(sys.argv[1:]))"
)
# The same with every copied file slowed down (see _slow_copy.py), so a copy can be stopped.
HERE = os.path.dirname(os.path.abspath(__file__))
RUN_SLOW = (
    f"import sys; sys.path[:0] = [{TESTS!r}, {HERE!r}]; import _jobs, _slow_copy; "
    "from parjobs.cli import main; sys.exit(main(sys.argv[1:]))"
)
# The CLI whose jobs pause after 0.2 s of failed checkpoint writes, each waiting 50 ms for
# the store's lock, and are resumed an hour after their store paused them (not before the
# test stops the server).
RUN_STORE_PAUSES = (
    f"import sys; sys.path.insert(0, {TESTS!r}); import _jobs, parjobs._store; "
    "import parjobs._context as c, parjobs._housekeeping as h; "
    "c.PAUSE_AFTER_FAILING, h.HEAL_AFTER = 0.2, 3600.0; "
    "S = parjobs._store.JobStore; o = S.open.__func__; "
    "S.open = classmethod(lambda cls, p, timeout=0.05: o(cls, p, timeout=timeout)); "
    "from parjobs.cli import main; sys.exit(main(sys.argv[1:]))"
)
LINE = re.compile(r"parjobs serve: (http://127\.0\.0\.1:(\d+))/\?token=(\S+)\n")


def start(tmp_path, *args: str, env_extra=None, run: str = RUN, store: str | None = None) -> Forked:
    """``parjobs serve`` on ``store`` (default ``tmp_path/jobs.sqlite``), its state (tokens,
    restart notes) under ``tmp_path/state``."""
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state"), **(env_extra or {})}
    return Forked(
        ["serve", "--port", "0", "--store", store or str(tmp_path / "jobs.sqlite"), *args],
        code=run,
        env=env,
    )


def _serving(proc: Forked) -> re.Match[str]:
    """The "parjobs serve: <url>/?token=<token>" line the server prints first."""
    assert proc.stdout is not None  # start() pipes it
    match = LINE.fullmatch(proc.stdout.readline())
    assert match
    return match


def _stderr(proc: Forked) -> str:
    assert proc.stderr is not None  # start() pipes it
    return proc.stderr.read()


@contextlib.contextmanager
def _admin(tmp_path, tokens: str) -> Iterator[tuple[Forked, httpx.Client]]:
    """A `start`ed server on ``tokens`` and an admin's client of it; killed if it still
    runs when the block ends."""
    proc = start(tmp_path, "--token-file", tokens)
    try:
        base = _serving(proc).group(1)
        yield proc, httpx.Client(base_url=base, headers={"authorization": f"Bearer {ADMIN}"})
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _count_job(client: httpx.Client, tmp_path) -> dict[str, Any]:
    """A 25 s counting job (test-count) submitted through ``client``, logging to tmp_path/log."""
    count = {"n": 5000, "log": str(tmp_path / "log"), "sleep": 0.005}
    job: dict[str, Any] = client.post(
        "/api/jobs", json={"type": "test-count", "spec": count}
    ).json()
    return job


def _tree(root, n: int) -> None:
    root.mkdir()
    for i in range(n):
        sub = root / f"d{i % 7}"
        sub.mkdir(exist_ok=True)
        (sub / f"f{i:04d}.bin").write_bytes(os.urandom(64 + i % 512))


def _files(root) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.mark.both_stores
def test_sigterm_pauses_and_the_restart_resumes_only_what_the_shutdown_paused(
    tmp_path, store_path, monkeypatch
) -> None:
    tokens = write_tokens(str(tmp_path / "tokens"))
    _tree(tmp_path / "src", 400)
    env = {"PARJOBS_TEST_COPY_LATENCY": "0.02"}
    proc = start(
        tmp_path, "--token-file", tokens, "-w", "2", run=RUN_SLOW, env_extra=env, store=store_path
    )
    try:
        base = _serving(proc).group(1)
        client = httpx.Client(base_url=base, headers={"authorization": f"Bearer {ADMIN}"})
        spec = {"sources": [str(tmp_path / "src")], "destination": str(tmp_path / "dst")}
        copy = client.post("/api/jobs", json={"type": "copy", "spec": spec}).json()
        # A job the user paused: the restart must leave it paused.
        count = {"n": 2000, "log": str(tmp_path / "log"), "sleep": 0.005}
        user = client.post("/api/jobs", json={"type": "test-count", "spec": count}).json()
        assert client.post(f"/api/jobs/{user['id']}/pause").status_code == 200
        for _ in range(1000):
            shown = client.get(f"/api/jobs/{copy['id']}").json()
            if shown["status"] == "running" and shown["progress"]["items_done"] > 0:
                break
            time.sleep(0.01)
        else:
            raise AssertionError(shown)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0, _stderr(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))  # the server's
    marker = pathlib.Path(marker_path(store_path))
    if store_path.startswith("postgresql:"):  # this host's, not next to a file
        assert marker.parent == tmp_path / "state" / "parjobs" / "serve-paused"
        assert marker.stat().st_mode & 0o777 == 0o600
    else:
        assert marker == tmp_path / "jobs.sqlite.serve-paused"
    assert json.loads(marker.read_text())["jobs"].keys() == {copy["id"]}
    # Paused with its progress checkpointed, nothing half-written under a final name.
    proc = start(tmp_path, "--token-file", tokens, run=RUN_SLOW, env_extra=env, store=store_path)
    try:
        base = _serving(proc).group(1)
        client = httpx.Client(base_url=base, headers={"authorization": f"Bearer {ADMIN}"})
        for _ in range(2000):  # the restart resumes the copy by itself
            shown = client.get(f"/api/jobs/{copy['id']}").json()
            if shown["status"] not in ("paused", "queued", "running"):
                break
            time.sleep(0.02)
        assert shown["status"] == "completed", shown
        assert shown["attempts"] == 2
        assert client.get(f"/api/jobs/{user['id']}").json()["status"] == "paused"
        assert not marker.exists()
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 0
    assert _files(tmp_path / "dst") == _files(tmp_path / "src")  # dst did not exist: the copy
    # Stopped with nothing running: nothing is remembered, the user's job still rests.
    assert not marker.exists()


def test_a_job_resumed_and_paused_since_the_shutdown_stays_paused(tmp_path) -> None:
    tokens = write_tokens(str(tmp_path / "tokens"))
    with _admin(tmp_path, tokens) as (proc, client):
        job = _count_job(client, tmp_path)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    marker = tmp_path / "jobs.sqlite.serve-paused"
    assert job["id"] in json.loads(marker.read_text())["jobs"]
    # Meanwhile a user resumes it here and pauses it (Ctrl-C): its run count moves on.
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")}
    local = Forked(
        ["resume", job["id"], "--store", str(tmp_path / "jobs.sqlite")], code=RUN, env=env
    )
    log = tmp_path / "log"
    ran = log.stat().st_size if log.exists() else 0
    for _ in range(3000):  # its run is under way (a fixed wait lost to a loaded machine)
        if log.exists() and log.stat().st_size > ran:
            break
        assert local.poll() is None, _stderr(local)
        time.sleep(0.02)
    time.sleep(0.2)
    local.send_signal(signal.SIGINT)
    assert local.wait(timeout=20) == 3, _stderr(local)
    with _admin(tmp_path, tokens) as (proc, client):
        time.sleep(0.5)
        assert client.get(f"/api/jobs/{job['id']}").json()["status"] == "paused"
        assert not marker.exists()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 0


def test_a_job_its_failing_store_paused_is_resumed_by_the_restart(tmp_path) -> None:
    """The store takes no writes for a while (another connection holds its lock): the job
    pauses itself and rests paused by its store once the lock goes; the server stops before
    resuming it. Its restart resumes it (as it does what its shutdown paused), and it
    completes, every task once."""
    tokens = write_tokens(str(tmp_path / "tokens"))
    store, log, flag = tmp_path / "jobs.sqlite", tmp_path / "log", tmp_path / "flag"
    proc = start(tmp_path, "--token-file", tokens, "-w", "2", run=RUN_STORE_PAUSES)
    try:
        base = _serving(proc).group(1)
        client = httpx.Client(base_url=base, headers={"authorization": f"Bearer {ADMIN}"})
        count = {"n": 200, "log": str(log), "hold": str(flag), "hold_from": 100}
        job = client.post("/api/jobs", json={"type": "test-count", "spec": count}).json()
        for _ in range(3000):  # its first 100 tasks ran, the others wait for the flag
            if log.exists() and len(log.read_text().split()) >= 100:
                break
            time.sleep(0.01)
        lock = sqlite3.connect(store, isolation_level=None)
        lock.execute("BEGIN EXCLUSIVE")
        time.sleep(3)  # the job pauses 0.2 s into the outage (three failed writes at least)
        lock.execute("ROLLBACK")
        lock.close()
        for _ in range(1000):
            shown = client.get(f"/api/jobs/{job['id']}").json()
            if shown["status"] == "paused":
                break
            time.sleep(0.01)
        assert shown["error"].startswith("paused: its progress cannot be recorded"), shown
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0, _stderr(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    marker = tmp_path / "jobs.sqlite.serve-paused"
    assert json.loads(marker.read_text())["jobs"] == {job["id"]: 1}
    flag.touch()
    proc = start(tmp_path, "--token-file", tokens)
    try:
        base = _serving(proc).group(1)
        client = httpx.Client(base_url=base, headers={"authorization": f"Bearer {ADMIN}"})
        for _ in range(2000):
            shown = client.get(f"/api/jobs/{job['id']}").json()
            if shown["status"] == "completed":
                break
            time.sleep(0.02)
        assert (shown["status"], shown["attempts"], shown["error"]) == ("completed", 2, None)
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 0
    assert sorted(map(int, log.read_text().split())) == list(range(200))


def test_a_fifo_at_the_restart_note_neither_holds_the_start_nor_the_sigterm(tmp_path) -> None:
    """A FIFO (or another user's file) planted where the server keeps its restart note,
    beside a store in a shared directory: reading it held the server's start for ever, and
    its SIGTERM with it (the read ran in a thread nothing could cancel)."""
    tokens = write_tokens(str(tmp_path / "tokens"))
    marker = tmp_path / "jobs.sqlite.serve-paused"
    os.mkfifo(marker)
    proc = start(tmp_path, "--token-file", tokens)
    try:
        _serving(proc)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "serve-paused ignored (not a regular file)" in _stderr(proc)
    assert marker.is_fifo()  # not the server's to remove


@pytest.mark.skipif(os.geteuid() != 0, reason="needs a file of another user (root)")
def test_a_restart_note_of_another_user_resumes_nothing(tmp_path) -> None:
    tokens = write_tokens(str(tmp_path / "tokens"))
    with _admin(tmp_path, tokens) as (proc, client):
        job = _count_job(client, tmp_path)
        assert client.post(f"/api/jobs/{job['id']}/pause").status_code == 200
        for _ in range(1000):
            if client.get(f"/api/jobs/{job['id']}").json()["status"] == "paused":
                break
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    marker = tmp_path / "jobs.sqlite.serve-paused"
    assert not marker.exists()  # the user paused it: nothing to remember
    marker.write_text(json.dumps({"jobs": {job["id"]: 1}}))  # as the shutdown writes it
    os.chown(marker, 65534, 65534)  # ... but by another user
    with _admin(tmp_path, tokens) as (proc, client):
        time.sleep(0.5)
        assert client.get(f"/api/jobs/{job['id']}").json()["status"] == "paused"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 0
    assert "owned by another user (uid 65534)" in _stderr(proc)
    assert marker.stat().st_uid == 65534


def test_the_restart_note_is_never_written_through_a_planted_link(tmp_path) -> None:
    """Its temporary had a predictable name (``<note>.tmp<pid>``) and was opened with
    ``O_TRUNC`` following links: a symlink planted there had its target overwritten."""
    tokens = write_tokens(str(tmp_path / "tokens"))
    victim = tmp_path / "victim.txt"
    victim.write_text("the user's file\n")
    marker = tmp_path / "jobs.sqlite.serve-paused"
    with _admin(tmp_path, tokens) as (proc, client):
        job = _count_job(client, tmp_path)
        os.symlink(victim, f"{marker}.tmp{proc.pid}")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0, _stderr(proc)
    assert victim.read_text() == "the user's file\n"
    assert not marker.is_symlink()
    assert json.loads(marker.read_text())["jobs"].keys() == {job["id"]}
    assert sorted(p.name for p in tmp_path.glob("jobs.sqlite.serve-paused*")) == [
        marker.name,
        f"{marker.name}.tmp{proc.pid}",  # the planted link, left alone
    ]


def test_default_token_file_is_private_and_stable(tmp_path) -> None:
    tokens = []
    for _ in range(2):
        proc = start(tmp_path)
        try:
            match = _serving(proc)
            tokens.append(match.group(3))
        finally:
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=15) == 0
    assert tokens[0] == tokens[1]  # the bookmark keeps working across restarts
    path = tmp_path / "state" / "parjobs" / "serve-tokens"
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert os.stat(path.parent).st_mode & 0o777 == 0o700


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--host", "0.0.0.0"], "without --token-file"),
        (["--token-file", "/nonexistent/tokens"], "does not exist"),
    ],
)
def test_refusals(tmp_path, args, message) -> None:
    proc = start(tmp_path, *args)
    out, err = proc.communicate(timeout=15)
    assert proc.returncode == 2 and out == ""
    assert err.startswith("parjobs: error: ") and message in err


def test_token_file_readable_by_others_is_refused(tmp_path) -> None:
    tokens = write_tokens(str(tmp_path / "tokens"))
    os.chmod(tokens, 0o644)
    proc = start(tmp_path, "--token-file", tokens)
    _, err = proc.communicate(timeout=15)
    assert proc.returncode == 2 and "chmod 600" in err


def test_a_taken_port_is_a_usage_error(tmp_path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")}
        cmd = ["serve", "--port", port, "--store", str(tmp_path / "s.sqlite")]
        done = forked_run(cmd, code=RUN, env=env, timeout=15)
    assert done.returncode == 2 and "cannot serve on 127.0.0.1" in done.stderr


def test_serve_on_postgresql_shows_a_job_a_worker_runs(tmp_path, pg_url) -> None:
    """A job submitted through `parjobs serve` on a PostgreSQL store with ``detach`` is run by
    a `parjobs worker` on the same store, and the server shows it running, then its end."""
    tokens = write_tokens(str(tmp_path / "tokens"))
    env = {**os.environ, "PARJOBS_JOB_FILES": str(tmp_path / "files")}
    proc = start(tmp_path, "--token-file", tokens, store=pg_url, env_extra=env)
    worker = None
    try:
        base = _serving(proc).group(1)
        client = httpx.Client(base_url=base, headers={"authorization": f"Bearer {ADMIN}"})
        count = {"n": 400, "log": str(tmp_path / "log"), "sleep": 0.01}
        body = {"type": "test-count", "spec": count, "detach": True}
        job = client.post("/api/jobs", json=body).json()
        time.sleep(0.3)
        assert client.get(f"/api/jobs/{job['id']}").json()["status"] == "queued"  # not ours
        worker = Forked(
            ["worker", "--store", pg_url, "--until-idle", "-w", "2"],
            code=RUN,
            stdout=None,
            env=env,
        )
        seen: list[tuple[str, int]] = []
        managers: list[dict[str, Any]] = []
        for _ in range(3000):
            shown = client.get(f"/api/jobs/{job['id']}").json()
            seen.append((shown["status"], shown["progress"]["items_done"]))
            if shown["status"] == "running" and not managers:  # the worker's row, too
                managers = client.get("/api/workers").json()["workers"]
            if shown["status"] not in ("queued", "running"):
                break
            time.sleep(0.01)
        assert shown["status"] == "completed", shown
        assert any(s == "running" and 0 < done < 400 for s, done in seen), seen  # live
        assert shown["progress"]["items_done"] == 400
        assert worker.wait(timeout=30) == 0
        assert sorted(m["this"] for m in managers) == [False, True], managers
    finally:
        if worker is not None and worker.poll() is None:
            worker.kill()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 0, _stderr(proc)
    assert ":pj-secret@" in pg_url and "pj-secret" not in _stderr(proc)  # never shown
