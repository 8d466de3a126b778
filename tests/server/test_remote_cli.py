"""``parjobs --server URL ...``: the CLI as a client of a real ``parjobs serve`` (port 0), both
as child processes; its output and exit codes are compared with the local CLI's on the same
store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest
import trio
import xxhash
from _forkcli import Forked
from _forkcli import run as forked_run
from _server import ADMIN, write_tokens
from test_serve_cli import HERE, LINE, RUN_SLOW, TESTS, start

import parjobs
from parjobs.cli._client import open_remote
from parjobs.cli._remote import Server
from parjobs.ops import CopyJob


def _tree(root, n: int) -> None:
    root.mkdir()
    for i in range(n):
        sub = root / f"d{i % 5}"
        sub.mkdir(exist_ok=True)
        (sub / f"f{i:04d}.txt").write_bytes(os.urandom(32 + i % 300))


def _files(root) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


class Served:
    """A ``parjobs serve`` child on a temporary store, and ways to run the CLI against it."""

    def __init__(self, tmp_path, latency: float) -> None:
        self.tmp = tmp_path
        self.store = str(tmp_path / "jobs.sqlite")
        tokens = write_tokens(str(tmp_path / "tokens"))
        env = {"PARJOBS_TEST_COPY_LATENCY": str(latency)}
        self.proc = start(tmp_path, "--token-file", tokens, "-w", "2", run=RUN_SLOW, env_extra=env)
        match = LINE.fullmatch(self.proc.stdout.readline())
        assert match, self.proc.stderr.read()
        self.url = match.group(1)
        self.api = httpx.Client(base_url=self.url, headers={"authorization": f"Bearer {ADMIN}"})
        self.env = {
            **os.environ,
            "XDG_STATE_HOME": str(tmp_path / "client-state"),  # no default token file
            "PARJOBS_TOKEN": ADMIN,
            "COLUMNS": "200",
        }
        self.env.pop("PARJOBS_SERVER", None)

    def remote(self, *args: str, **kwargs) -> subprocess.CompletedProcess[str]:
        return self.run("--server", self.url, *args, **kwargs)

    def local(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.run(*args, "--store", self.store)

    def run(self, *args: str, env=None) -> subprocess.CompletedProcess[str]:
        return forked_run(list(args), module="parjobs", env=env or self.env)

    def popen(self, *args: str) -> Forked:
        return Forked(["--server", self.url, *args], module="parjobs", env=self.env)

    def wait_running(self, job_id: str | None = None) -> dict:
        for _ in range(1000):
            jobs = self.api.get("/api/jobs", params={"status": "running"}).json()["jobs"]
            jobs = [j for j in jobs if job_id in (None, j["id"]) and j["progress"]["items_done"]]
            if jobs:
                return jobs[0]
            time.sleep(0.01)
        raise AssertionError("no job ran")

    def close(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        assert self.proc.wait(timeout=20) == 0


@pytest.fixture
def served(tmp_path, request):
    server = Served(tmp_path, getattr(request, "param", 0.0))
    try:
        yield server
    finally:
        if server.proc.poll() is None:
            server.close()


def test_copy_to_completion_then_jobs_and_show_as_printed_locally(served, tmp_path) -> None:
    _tree(tmp_path / "src", 120)
    done = served.remote("--plain", "copy", str(tmp_path / "src"), str(tmp_path / "dst"))
    assert done.returncode == 0, done.stderr
    head, *_, summary, counts = done.stdout.splitlines()
    job_id = head.split()[1].rstrip(":")
    assert head == f"copy {job_id}: {tmp_path / 'src'} → {tmp_path / 'dst'}"
    assert summary == f"copy {job_id}: completed" and counts.startswith(
        "  120 files, 6 directories copied"
    )
    assert _files(tmp_path / "dst") == _files(tmp_path / "src")  # the copy itself
    # The same lines as the local CLI reading the same store.
    for command in (["jobs"], ["show", job_id[:6]], ["jobs", "--json"], ["show", job_id, "--json"]):
        remote, local = served.remote(*command), served.local(*command)
        assert remote.returncode == local.returncode == 0, remote.stderr
        if "--json" in command:
            assert json.loads(remote.stdout) == json.loads(local.stdout)
        else:
            assert remote.stdout == local.stdout
    # --json follows the job as JSON lines, as locally.
    lines = served.remote("--json", "copy", str(tmp_path / "src"), str(tmp_path / "dst2"))
    events = [json.loads(line)["event"] for line in lines.stdout.splitlines()]
    assert events[0] == "job" and events[-1] == "result"


@pytest.mark.parametrize("served", [0.02], indirect=True)
def test_ctrl_c_pauses_through_the_api_then_resume_pause_cancel(served, tmp_path) -> None:
    _tree(tmp_path / "src", 400)
    client = served.popen("--plain", "copy", str(tmp_path / "src"), str(tmp_path / "dst"))
    job_id = served.wait_running()["id"]
    client.send_signal(signal.SIGINT)  # Ctrl-C: the job pauses on the server
    out, err = client.communicate(timeout=30)
    resume = f"parjobs --server {served.url} resume {job_id}"
    assert client.returncode == 3, err
    assert f"copy {job_id}: paused" in out and f"resume with: {resume}" in out
    assert served.api.get(f"/api/jobs/{job_id}").json()["status"] == "paused"

    client = served.popen("--plain", "resume", job_id)
    served.wait_running(job_id)
    paused = served.remote("pause", job_id)
    assert paused.returncode == 0, paused.stderr
    assert paused.stdout == f"job {job_id} is paused; resume with: {resume}\n"
    out, err = client.communicate(timeout=30)
    assert client.returncode == 3 and f"copy {job_id}: paused" in out, err

    cancelled = served.remote("cancel", job_id)
    assert (cancelled.returncode, cancelled.stdout) == (0, f"job {job_id} is cancelled\n")
    # Refusals: the local CLI's message and exit code (2).
    for command in (["resume", job_id], ["pause", job_id], ["cancel", job_id], ["show", "zz"]):
        remote, local = served.remote(*command), served.local(*command)
        assert remote.returncode == local.returncode == 2
        assert remote.stderr == local.stderr and remote.stderr.startswith("parjobs: error: ")


#: The CLI (copies slowed, see _slow_copy.py) pressing Ctrl-C on itself the moment a job's
#: submission returns, locally or to the server: before it followed the job, that press
#: ended it with "parjobs: interrupted" (130) and left the job running on the server.
CTRL_C_ON_SUBMIT = f"""
import os, signal, sys
sys.path[:0] = [{TESTS!r}, {HERE!r}]
import _slow_copy
from parjobs import JobManager
from parjobs.cli import _client, main

def pressed(submit):
    async def submitted(*args, **kwargs):
        handle = await submit(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGINT)
        return handle
    return submitted

JobManager.submit = pressed(JobManager.submit)
_client.RemoteManager.submit = pressed(_client.RemoteManager.submit)
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("served", [0.02], indirect=True)
def test_ctrl_c_as_the_job_is_submitted_pauses_it_as_locally(served, tmp_path) -> None:
    """The flaky run of 16:12 (2026-12-04): the press came between the server's answer and
    the client's following; now the receiver is open before the submission. The server
    copies at 20 ms a file: at full speed its 100 files were done (exit 0) before the
    pause reached it (a clean-clone CI run, session 15)."""
    _tree(tmp_path / "src", 100)
    local = ["--store", str(tmp_path / "local.sqlite")]
    for name, where, store in (("remote", ["--server", served.url], []), ("local", [], local)):
        copy = ["--plain", "copy", str(tmp_path / "src"), str(tmp_path / name), *store]
        done = forked_run([*where, *copy], code=CTRL_C_ON_SUBMIT, env=served.env)
        assert done.returncode == 3, (name, done.stderr)
        job_id = done.stdout.splitlines()[0].split()[1].rstrip(":")
        assert f"copy {job_id}: paused" in done.stdout, name
        shown = served.run(*where, "show", job_id, "--json", *store)
        assert json.loads(shown.stdout)["status"] == "paused", name


def test_a_bad_spec_is_refused_with_the_local_message(served, tmp_path) -> None:
    (tmp_path / "src").mkdir()
    args = ("copy", str(tmp_path / "src"), str(tmp_path / "src" / "inside"))
    remote, local = served.remote(*args), served.local(*args)
    assert remote.returncode == local.returncode == 2
    assert remote.stderr == local.stderr
    assert "is inside source" in remote.stderr
    assert served.api.get("/api/jobs").json()["jobs"] == []


async def test_the_servers_refusal_of_a_spec_is_a_spec_error(server, tmp_path) -> None:
    """The client also maps the server's own 422 (a spec the client did not check)."""
    (tmp_path / "src").mkdir()
    job = CopyJob(sources=[str(tmp_path / "src")], destination=str(tmp_path / "src" / "in"))
    with pytest.raises(parjobs.JobSpecError) as local:
        job.validate()
    async with open_remote(Server(server.url, ADMIN, explicit=True)) as remote:
        with pytest.raises(parjobs.JobSpecError) as refused:
            await remote.submit(job)
        with pytest.raises(parjobs.JobNotFoundError, match="no job with id 'nope'"):
            await remote.get("nope")
    assert str(refused.value) == str(local.value)


async def test_the_client_submits_a_name_that_is_not_utf8(server, tmp_path) -> None:
    """``--server`` with a source named ``bad-\\xff``: the body goes as ASCII JSON (the name as
    ``"\\udcff"``, read back to the same name; httpx's ``json=`` failed to encode it), the
    server copies that very file, and the job comes back with the name as ``\\xff`` text."""
    bad = os.fsencode(tmp_path) + b"/bad-\xff"
    with open(bad, "wb") as f:
        f.write(b"b")
    (tmp_path / "dst").mkdir()
    job = CopyJob(sources=[os.fsdecode(bad)], destination=str(tmp_path / "dst"))
    async with open_remote(Server(server.url, ADMIN, explicit=True)) as remote:
        handle = await remote.submit(job)
        assert await remote.wait(handle.id) is parjobs.JobStatus.COMPLETED
        shown = await remote.get(handle.id)
    assert shown.spec_data["sources"] == [str(tmp_path) + "/bad-\\xff"]
    stored = await server.manager.get(handle.id)
    assert stored.spec_data["sources"] == [os.fsdecode(bad)]  # the exact name
    assert os.listdir(os.fsencode(tmp_path / "dst")) == [b"bad-\xff"]


def test_a_wrong_token_and_a_server_that_is_down(served, tmp_path) -> None:
    wrong = {**served.env, "PARJOBS_TOKEN": "wrong-token-0123456789abcdef"}
    done = served.remote("jobs", env=wrong)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == (
        f"parjobs: error: the server at {served.url} refused the token (401): give the right "
        "--token-file or $PARJOBS_TOKEN\n"
    )
    # The printed URL carries its token; --token-file reads the first token of a file.
    printed = f"{served.url}/?token={ADMIN}"
    no_token = {k: v for k, v in served.env.items() if k != "PARJOBS_TOKEN"}
    assert served.run("--server", printed, "jobs", env=no_token).stdout == "no jobs\n"
    tokens = str(tmp_path / "tokens")
    done = served.run("--server", served.url, "jobs", "--token-file", tokens, env=no_token)
    assert done.stdout == "no jobs\n"
    # $PARJOBS_SERVER works as --server; serve and demo ignore it (they run here).
    env = {**served.env, "PARJOBS_SERVER": served.url}
    assert served.run("jobs", env=env).stdout == "no jobs\n"
    assert served.run("--server", served.url, "demo").stderr == (
        "parjobs: error: --server does not apply to 'demo', which runs here\n"
    )
    served.close()
    down = served.remote("show", "3f2a")
    assert down.returncode == 2 and down.stdout == ""
    assert down.stderr.startswith(f"parjobs: error: cannot reach the server at {served.url}: ")
    assert len(down.stderr.splitlines()) == 1


def test_without_server_no_http_client_is_imported(tmp_path) -> None:
    code = (
        "import sys; from parjobs.cli import main; "
        f"main(['jobs', '--store', {str(tmp_path / 's.sqlite')!r}]); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('httpx', 'httpcore')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.splitlines()[-1] == "[]", done.stderr


async def test_following_a_job_rebuilds_the_renderers_snapshots(server, tmp_path) -> None:
    """The client's watch yields `Progress` snapshots and ends when the job rests."""
    _tree(tmp_path / "src", 50)
    job = CopyJob(sources=[str(tmp_path / "src")], destination=str(tmp_path / "dst"))
    async with open_remote(Server(server.url, ADMIN, explicit=True)) as remote:
        handle = await remote.submit(job)
        with trio.fail_after(20):
            snaps = [snap async for snap in remote.watch(handle.id)]
            assert await remote.wait(handle.id) is parjobs.JobStatus.COMPLETED
    assert all(isinstance(s, parjobs.Progress) for s in snaps)
    assert snaps[-1].items_done == 57


def test_show_items_and_undo_through_the_server_as_locally(served, tmp_path) -> None:
    _tree(tmp_path / "src", 1200)  # more than one page of the client's (1,000 records)
    done = served.remote("--plain", "copy", str(tmp_path / "src"), f"{tmp_path / 'dst'}/")
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.splitlines()[0].split()[1].rstrip(":")
    for command in (
        ["show", job_id, "--items", "--json"],
        ["show", job_id, "--items"],
        ["show", job_id, "--items", "--action", "copied"],
    ):
        remote, local = served.remote(*command), served.local(*command)
        assert remote.returncode == local.returncode == 0, remote.stderr
        assert remote.stdout == local.stdout
    records = [
        json.loads(line)
        for line in served.local("show", job_id, "--items", "--json").stdout.splitlines()
    ]
    assert len(records) == 1206 and [r["seq"] for r in records] == list(range(1, 1207))
    undone = served.remote("--plain", "undo", job_id)
    assert undone.returncode == 0, undone.stderr
    assert list((tmp_path / "dst").iterdir()) == []
    assert len(_files(tmp_path / "src")) == 1200


def test_hash_through_the_server_prints_the_digests_from_the_item_log(served, tmp_path) -> None:
    """The job's result holds counts only; the client reads the digests back from the item
    log, page by page (1,200 files: more than one page), in walk order, as locally."""
    _tree(tmp_path / "src", 1200)
    remote = served.remote("hash", str(tmp_path / "src"))
    assert remote.returncode == 0, remote.stderr
    lines = remote.stdout.splitlines()
    assert (
        len(lines) == 1200
        and lines == served.local("hash", str(tmp_path / "src")).stdout.splitlines()
    )
    digest, path = lines[0].split("  ", 1)
    assert path == str(tmp_path / "src" / "d0" / "f0000.txt")
    assert digest == xxhash.xxh3_128_hexdigest((tmp_path / "src" / "d0" / "f0000.txt").read_bytes())
    job_id = json.loads(served.local("jobs", "--json").stdout.splitlines()[0])["id"]
    stored = json.loads(served.local("show", job_id, "--json").stdout)["result"]
    assert "digests" not in stored and stored["files"] == 1200


def test_jobs_prune_through_the_server(served, tmp_path) -> None:
    """``jobs prune`` with ``--server`` (or ``$PARJOBS_SERVER``) deletes in the server, as
    locally: it used to end in a traceback (the client had no ``order`` and no ``delete``)."""
    _tree(tmp_path / "src", 3)
    ids = []
    for name in ("a", "b"):
        done = served.remote("--json", "copy", str(tmp_path / "src"), str(tmp_path / name))
        assert done.returncode == 0, done.stderr
        ids.append(json.loads(done.stdout.splitlines()[0])["job_id"])
    dry = served.remote("jobs", "prune", ids[0], "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.startswith(f"would delete {ids[0]}  copy  completed")
    named = served.remote("--json", "jobs", "prune", ids[0])
    assert named.returncode == 0, named.stderr
    assert json.loads(named.stdout) == {"job_id": ids[0], "status": "completed", "deleted": True}
    aged = served.remote("jobs", "prune", "--older-than", "0")
    assert aged.returncode == 0, aged.stderr
    assert aged.stdout.startswith(f"deleted {ids[1]}  copy  completed")
    assert served.api.get("/api/jobs").json()["jobs"] == []
    assert (tmp_path / "a").is_dir() and (tmp_path / "b").is_dir()  # what the jobs did stays


def test_an_empty_id_names_no_job_through_the_server(served, tmp_path) -> None:
    """As locally (``test_jobs_store.py::test_an_empty_id_names_no_job``): ``""`` is no job,
    exit 2 and one line; through the server it became ``/api/jobs/``, the list, and the
    command failed on its redirect ("answered 307")."""
    _tree(tmp_path / "src", 3)
    done = served.remote("--json", "copy", str(tmp_path / "src"), str(tmp_path / "a"))
    assert done.returncode == 0, done.stderr
    for argv in (["undo", ""], ["jobs", "prune", ""], ["cancel", ""], ["show", ""]):
        out = served.remote(*argv)
        assert out.returncode == 2 and "no job with id ''" in out.stderr, (argv, out)
    assert len(served.api.get("/api/jobs").json()["jobs"]) == 1
    assert (tmp_path / "a").is_dir()
