"""``parjobs serve`` as a subprocess: the first stdout line, SIGTERM with a job running,
refusals at startup."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import httpx
import pytest
from conftest import ADMIN, write_tokens

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The CLI, with the test job types registered (as a user's plugin module would be).
RUN = (
    f"import sys; sys.path.insert(0, {TESTS!r}); import _jobs; "
    "from parjobs.cli import main; sys.exit(main(sys.argv[1:]))"
)
LINE = re.compile(r"parjobs serve: (http://127\.0\.0\.1:(\d+))/\?token=(\S+)\n")


def start(tmp_path, *args: str, env_extra=None) -> subprocess.Popen[str]:
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state"), **(env_extra or {})}
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            RUN,
            "serve",
            "--port",
            "0",
            "--store",
            str(tmp_path / "jobs.sqlite"),
            *args,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def test_sigterm_pauses_the_running_job_and_exits_0(tmp_path) -> None:
    tokens = write_tokens(str(tmp_path / "tokens"))
    proc = start(tmp_path, "--token-file", tokens)
    try:
        line = proc.stdout.readline()
        match = LINE.fullmatch(line)
        assert match, line
        base, token = match.group(1), match.group(3)
        assert token == ADMIN
        client = httpx.Client(base_url=base, headers={"authorization": f"Bearer {token}"})
        spec = {"n": 2000, "log": str(tmp_path / "log"), "sleep": 0.005}
        job = client.post("/api/jobs", json={"type": "test-count", "spec": spec}).json()
        for _ in range(500):
            shown = client.get(f"/api/jobs/{job['id']}").json()
            if shown["status"] == "running" and shown["progress"]["items_done"] > 0:
                break
        else:
            raise AssertionError(shown)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
    # Paused, with its progress checkpointed; a new server resumes it to the end.
    proc = start(tmp_path, "--token-file", tokens)
    try:
        base = LINE.fullmatch(proc.stdout.readline()).group(1)
        client = httpx.Client(base_url=base, headers={"authorization": f"Bearer {ADMIN}"})
        shown = client.get(f"/api/jobs/{job['id']}").json()
        assert shown["status"] == "paused" and 0 < shown["done_items"] < 2000
        assert client.post(f"/api/jobs/{job['id']}/resume").status_code == 200
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 0


def test_default_token_file_is_private_and_stable(tmp_path) -> None:
    tokens = []
    for _ in range(2):
        proc = start(tmp_path)
        try:
            match = LINE.fullmatch(proc.stdout.readline())
            assert match
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
        cmd = [
            sys.executable,
            "-c",
            RUN,
            "serve",
            "--port",
            port,
            "--store",
            str(tmp_path / "s.sqlite"),
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=15)
    assert done.returncode == 2 and "cannot serve on 127.0.0.1" in done.stderr
