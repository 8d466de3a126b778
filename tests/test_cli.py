"""The command line, through real subprocesses: exit codes, output modes, Ctrl-C, other
processes steering a running job, the store location, and the demo."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import xxhash

from parjobs.cli import main

CLI = [sys.executable, "-m", "parjobs.cli"]
RESUME = re.compile(r"parjobs resume [0-9a-f]+(?: --store \S+)?")


# -- helpers -------------------------------------------------------------------------------


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """An environment whose default store, trash and caches live in tmp_path."""
    out = dict(os.environ)
    out.pop("PARJOBS_STORE", None)
    out.update(
        XDG_STATE_HOME=str(tmp_path / "state"),
        XDG_DATA_HOME=str(tmp_path / "data"),
        XDG_CACHE_HOME=str(tmp_path / "cache"),
    )
    return out


@pytest.fixture
def store(tmp_path: Path) -> str:
    return str(tmp_path / "jobs.sqlite")


def run(
    *args: str, env: dict[str, str], store: str | None = None
) -> subprocess.CompletedProcess[str]:
    extra = ["--store", store] if store else []
    return subprocess.run(
        [*CLI, *args, *extra], capture_output=True, text=True, env=env, timeout=60
    )


_STARTED: list[subprocess.Popen[str]] = []


def start(*args: str, env: dict[str, str], store: str) -> subprocess.Popen[str]:
    """A CLI process in the background (killed after the test if it is still running)."""
    proc = subprocess.Popen(
        [*CLI, "--store", store, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    _STARTED.append(proc)
    return proc


@pytest.fixture(autouse=True)
def _no_leftover_processes():
    yield
    while _STARTED:
        proc = _STARTED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def run_command_line(line: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run a printed ``parjobs ...`` command line with this interpreter."""
    words = shlex.split(line)
    assert words[0] == "parjobs"
    return subprocess.run([*CLI, *words[1:]], capture_output=True, text=True, env=env, timeout=60)


def digests(root: Path) -> dict[str, str]:
    """Relative path -> content digest ("dir" for directories) of everything under root."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            out[os.path.relpath(os.path.join(dirpath, name), root)] = "dir"
        for name in filenames:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = xxhash.xxh3_128_hexdigest(f.read())
    return out


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("parjobs: error: "), proc.stderr
    return lines[0]


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("small") / "tree"
    for d in ("a", "a/b", "c"):
        (root / d).mkdir(parents=True)
    for i in range(12):
        (root / ("a/b", "a", "c")[i % 3] / f"f{i}.txt").write_bytes(os.urandom(100 + i * 500))
    return root


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Large enough that a verified, durable, one-worker copy takes a good second."""
    root = tmp_path_factory.mktemp("big") / "tree"
    for d in range(4):
        sub = root / f"d{d}"
        sub.mkdir(parents=True)
        for i in range(40):
            (sub / f"small{i}.bin").write_bytes(os.urandom(2000 + i))
        for i in range(6):
            (sub / f"large{i}.bin").write_bytes(os.urandom(3 * 1024 * 1024))
    return root


@pytest.fixture(scope="module")
def sparse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A file of 8 GiB taking no disk space: hashing it reads zeros for seconds, so another
    process has time to start and steer the job."""
    path = tmp_path_factory.mktemp("sparse") / "zeros.img"
    with open(path, "wb") as f:
        f.truncate(8 * 1024**3)
    if path.stat().st_blocks * 512 > 1024**2:
        path.unlink()
        pytest.skip("this file system does not support sparse files")
    return path


@pytest.fixture(scope="module")
def store_with_a_job(small: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = str(tmp_path_factory.mktemp("store") / "jobs.sqlite")
    env = {**os.environ, "XDG_STATE_HOME": os.path.dirname(path)}
    assert run("hash", str(small / "c"), env=env, store=path).returncode == 0
    return path


SLOW_COPY = ("--workers", "1", "--durable", "--verify")


# -- parser --------------------------------------------------------------------------------

COMMANDS = ["copy", "move", "delete", "hash", "dupes", "thumbnails"]
COMMANDS += ["jobs", "show", "pause", "resume", "cancel", "demo"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_help_shows_an_example(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert "example:" in out and f"parjobs {command}" in out


def test_thumbnails_help_shows_the_default_size(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["thumbnails", "--help"]) == 0
    assert "(default: 256)" in " ".join(capsys.readouterr().out.split())


def test_top_level_help_lists_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "exit codes" in capsys.readouterr().out


# -- exit codes ----------------------------------------------------------------------------


def test_copy_done_exit_0_tree_identical(small: Path, tmp_path: Path, env, store) -> None:
    dst = tmp_path / "dst"
    proc = run("copy", str(small), str(dst), "--verify", env=env, store=store)
    assert proc.returncode == 0, proc.stderr
    assert digests(dst) == digests(small)  # dst did not exist: it is the copy (cp -r)
    assert re.search(r"copy [0-9a-f]{12}: completed", proc.stdout)
    assert "12 copied" not in proc.stdout or "failed" not in proc.stdout


def test_one_file_to_a_new_name_like_cp(tmp_path: Path, env, store) -> None:
    """``parjobs copy a.txt b.txt`` makes the file b.txt, and says "1 file copied"."""
    (tmp_path / "a.txt").write_bytes(b"abc")
    proc = run("copy", str(tmp_path / "a.txt"), str(tmp_path / "b.txt"), env=env, store=store)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "b.txt").read_bytes() == b"abc"  # a file, not b.txt/a.txt
    assert "  1 file copied (3 B)" in proc.stdout, proc.stdout
    proc = run("move", str(tmp_path / "b.txt"), str(tmp_path / "c.txt"), env=env, store=store)
    assert proc.returncode == 0 and (tmp_path / "c.txt").read_bytes() == b"abc"
    assert not (tmp_path / "b.txt").exists()


def test_hash_to_stdout_escapes_a_name_with_a_newline_as_output_does(
    tmp_path: Path, env, store
) -> None:
    """One formatter for stdout and ``-o``: the coreutils escaping (a leading backslash)."""
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a\nb").write_bytes(b"x")
    shown = run("hash", str(tmp_path / "d"), env=env, store=store)
    assert shown.returncode == 0, shown.stderr
    written = run("hash", "-o", str(tmp_path / "sums"), str(tmp_path / "d"), env=env, store=store)
    assert written.returncode == 0, written.stderr
    (line,) = shown.stdout.splitlines()
    assert line.startswith("\\") and line.endswith("/d/a\\nb")
    assert (tmp_path / "sums").read_text() == line + "\n"


def test_json_lines_progress_and_result(small: Path, tmp_path: Path, env, store) -> None:
    proc = run("--json", "copy", str(small), str(tmp_path / "dst"), env=env, store=store)
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    assert events[0]["event"] == "job" and events[0]["type"] == "copy"
    progress = [e for e in events if e["event"] == "progress"]
    assert progress and {"items_done", "bytes_done", "eta", "current"} <= set(progress[-1])
    result = events[-1]
    assert result["event"] == "result" and result["status"] == "completed"
    assert result["exit_code"] == 0 and result["errors"] == []
    assert result["result"]["copied"] == 12
    assert result["job_id"] == events[0]["job_id"]


def test_conflicts_exit_1_with_reasons(small: Path, tmp_path: Path, env, store) -> None:
    dst = f"{tmp_path / 'dst'}/"  # into dst, made by the first copy
    assert run("copy", str(small), str(dst), env=env, store=store).returncode == 0
    proc = run("copy", str(small), str(dst), env=env, store=store)  # on_conflict=fail
    assert proc.returncode == 1, proc.stderr
    assert "completed with errors" in proc.stdout
    assert "failed items (12)" in proc.stdout and "destination exists" in proc.stdout
    # a resume would meet the same destinations: the way out is a policy
    assert "12 destinations exist: run the copy again with --on-conflict" in proc.stdout
    assert not RESUME.search(proc.stdout)
    proc = run("--json", "copy", str(small), str(dst), env=env, store=store)
    result = json.loads(proc.stdout.splitlines()[-1])
    assert proc.returncode == 1 and result["status"] == "completed_with_errors"
    assert len(result["errors"]) == 12
    assert all("destination exists" in e["message"] and e["label"] for e in result["errors"])
    proc = run("copy", "--on-conflict", "skip", str(small), str(dst), env=env, store=store)
    assert proc.returncode == 0 and "12 skipped" in proc.stdout


def test_unreadable_file_exit_1(tmp_path: Path, env, store) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "ok.txt").write_text("fine")
    secret = src / "secret.txt"
    secret.write_text("no")
    secret.chmod(0)
    try:
        with open(secret):
            pytest.skip("running as root: permissions do not block reads")
    except PermissionError:
        pass
    try:
        proc = run("copy", str(src), str(tmp_path / "dst"), env=env, store=store)
    finally:
        secret.chmod(0o644)
    assert proc.returncode == 1
    assert "secret.txt" in proc.stdout and "ermission denied" in proc.stdout
    assert (tmp_path / "dst" / "ok.txt").read_text() == "fine"


def test_failed_job_exit_1_with_the_reason(small: Path, tmp_path: Path, env, store) -> None:
    import parjobs
    from parjobs.ops._copy import CopyJob

    src = tmp_path / "src"
    shutil.copytree(small, src)
    with parjobs.BlockingManager(store) as jobs:  # stored paused, as if Ctrl-C'd
        job = CopyJob(sources=[str(src)], destination=str(tmp_path / "dst"))
        job_id = jobs.submit(job, start=False)
    shutil.rmtree(src)  # now the stored job cannot run
    proc = run("resume", job_id[:4], env=env, store=store)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert re.search(rf"copy {job_id}: failed: .*does not exist", proc.stdout)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["copy", "{src}/missing", "{dst}"], "missing"),
        (["copy", "{src}", "{src}/a/inside"], "inside"),
        (["copy", "--workers", "0", "{src}", "{dst}"], "--workers"),
        (["copy", "--on-conflict", "sometimes", "{src}", "{dst}"], "--on-conflict"),
        (["copy", "{src}"], "DST"),
        (["hash", "{src}", "--output", "{dst}/x/sums"], "output"),
        (["thumbnails", "{src}", "--freedesktop", "--size", "300"], "size"),
        (["dupes", "--min-size", "lots", "{src}"], "--min-size"),
        (["show", "abc123"], "abc123"),
        (["pause", "abc123"], "abc123"),
        (["cancel", "abc123"], "abc123"),
        (["resume"], "--all"),
        (["frobnicate"], "frobnicate"),
        ([], "command"),
    ],
)
def test_bad_input_exit_2_one_line_nothing_touched(
    args: list[str], needle: str, small: Path, tmp_path: Path, env, store_with_a_job
) -> None:
    before = digests(small)
    dst = tmp_path / "dst"
    argv = [a.format(src=small, dst=dst) for a in args]
    line = one_error_line(run(*argv, env=env, store=store_with_a_job))
    assert needle in line
    assert not dst.exists()
    assert digests(small) == before


def test_corrupt_or_foreign_store_exit_2(tmp_path: Path, env) -> None:
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"this is not a database at all" * 10)
    assert "not a parjobs store" in one_error_line(run("jobs", env=env, store=str(garbage)))
    foreign = tmp_path / "foreign.sqlite"
    with sqlite3.connect(foreign) as db:
        db.execute("CREATE TABLE songs (title TEXT)")
    line = one_error_line(run("hash", str(tmp_path), env=env, store=str(foreign)))
    assert "another application" in line


# -- Ctrl-C and other processes -----------------------------------------------------------


def test_ctrl_c_pauses_and_printed_resume_command_finishes(big: Path, tmp_path: Path, env, store):
    dst = tmp_path / "dst"
    proc = start("copy", str(big), str(dst), *SLOW_COPY, env=env, store=store)
    assert proc.stdout is not None
    assert proc.stdout.readline().startswith("copy ")  # the job runs
    time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 3, (out, err)
    assert "paused" in out and "pausing" in err
    resume = RESUME.search(out)
    assert resume and f"--store {store}" in resume.group(0)
    listed = run("jobs", "--status", "paused", env=env, store=store)
    assert listed.stdout.count(" paused ") == 1
    done = run_command_line(resume.group(0), env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert digests(dst) == digests(big)


def test_second_ctrl_c_quits_at_once_still_resumable(big: Path, tmp_path: Path, env, store):
    dst = tmp_path / "dst"
    proc = start("copy", str(big), str(dst), *SLOW_COPY, env=env, store=store)
    assert proc.stdout is not None
    proc.stdout.readline()
    time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.05)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 3 and time.monotonic() - t0 < 2.0
    # Says how to resume: the quick quit on stderr, or, when the pause finished before the
    # second press (which the exiting process then ignores), the summary on stdout.
    assert RESUME.search(err) or RESUME.search(out), out + err
    resumed = run("resume", "--all", env=env, store=store)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert digests(dst) == digests(big)


def test_pause_show_jobs_cancel_from_other_processes(sparse: Path, env, store):
    proc = start("--json", "hash", str(sparse), env=env, store=store)
    assert proc.stdout is not None
    job_id = json.loads(proc.stdout.readline())["job_id"]
    paused = run("pause", job_id[:5], env=env, store=store)
    assert paused.returncode == 0 and "paused" in paused.stdout
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 3
    result = json.loads(out.splitlines()[-1])
    assert result["status"] == "paused" and result["resume_command"].startswith("parjobs resume")
    assert job_id in err  # the resume command, for people

    shown = run("show", job_id[:6], env=env, store=store)
    assert shown.returncode == 0
    assert re.search(r"status\s+paused", shown.stdout) and "parjobs resume" in shown.stdout
    assert re.search(r"^finished\s+-$", shown.stdout, re.M)  # paused: not finished
    assert '"algorithm": "xxh3_128"' in shown.stdout  # the spec
    listed = run("--json", "jobs", "--status", "paused,interrupted", env=env, store=store)
    (entry,) = [json.loads(line) for line in listed.stdout.splitlines()]
    assert entry["id"] == job_id and entry["type"] == "hash"
    assert entry["spec"]["paths"] == [str(sparse)]

    cancelled = run("cancel", job_id[:5], env=env, store=store)
    assert cancelled.returncode == 0 and "cancelled" in cancelled.stdout
    assert "it is cancelled" in one_error_line(run("resume", job_id, env=env, store=store))


def test_show_errors_verbose_prints_each_failed_items_traceback(small: Path, tmp_path, env, store):
    dst = f"{tmp_path / 'dst'}/"  # into dst, made by the first copy
    assert run("copy", str(small), str(dst), env=env, store=store).returncode == 0
    again = run("--json", "copy", str(small), str(dst), env=env, store=store)
    assert again.returncode == 1  # every file conflicts
    job_id = json.loads(again.stdout.splitlines()[0])["job_id"]
    plain = run("show", job_id, "--errors", env=env, store=store)
    assert plain.returncode == 0 and "errors" in plain.stdout
    assert "Traceback" not in plain.stdout
    verbose = run("show", job_id, "--errors", "--verbose", env=env, store=store)
    assert verbose.returncode == 0
    shown = json.loads(run("--json", "show", job_id, env=env, store=store).stdout)
    assert shown["errors"] and all(e["traceback"].startswith("Traceback") for e in shown["errors"])
    tracebacks = verbose.stdout.count("    | Traceback (most recent call last):")
    assert tracebacks >= len(shown["errors"])  # chained exceptions print one each
    for e in shown["errors"]:  # each under its own item, ending with its message
        last = e["traceback"].rstrip().splitlines()[-1]
        assert f"{e['label']}: {e['message']}\n" in verbose.stdout
        assert f"    | {last}\n" in verbose.stdout


def ask_tree(tmp_path: Path) -> tuple[Path, Path]:
    """Four conflicts (the destination holds older files of the same names), one new file."""
    src, dst = tmp_path / "src" / "t", tmp_path / "dst" / "t"
    src.mkdir(parents=True)
    dst.mkdir(parents=True)
    for i in range(4):
        (src / f"f{i}.txt").write_bytes(b"new")
        (dst / f"f{i}.txt").write_bytes(b"old")
    (src / "fresh.txt").write_bytes(b"fresh")
    return src, dst


def copy_asking(src: Path, dst: Path, answers: str, env, store) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            *CLI,
            "--plain",
            "copy",
            "--on-conflict",
            "ask",
            str(src),
            str(dst.parent),
            "--store",
            store,
        ],
        input=answers,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_on_conflict_ask_prompts_on_stdin_and_same_for_all(tmp_path: Path, env, store):
    """There was no ``--on-conflict ask`` in the CLI. A bad answer is asked again; "o"
    overwrites one file; "S" skips it and every later conflict without asking."""
    src, dst = ask_tree(tmp_path)
    proc = copy_asking(src, dst, "maybe\no\nS\n", env, store)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stderr.count("exists: ") == 2  # two questions, the rest settled by "S"
    assert proc.stderr.count("[o]verwrite, [s]kip, [r]ename") == 3  # one asked again
    contents = sorted((dst / f"f{i}.txt").read_bytes() for i in range(4))
    assert contents == [b"new", b"old", b"old", b"old"]
    assert (dst / "fresh.txt").read_bytes() == b"fresh"
    assert sorted(os.listdir(dst)) == ["f0.txt", "f1.txt", "f2.txt", "f3.txt", "fresh.txt"]


def test_on_conflict_ask_at_the_end_of_input_skips_and_overwrites_nothing(
    tmp_path: Path, env, store
):
    src, dst = ask_tree(tmp_path)
    proc = copy_asking(src, dst, "r\n", env, store)  # one renamed, then nobody answers
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "no answer (end of input)" in proc.stderr
    assert all((dst / f"f{i}.txt").read_bytes() == b"old" for i in range(4))
    renamed = [n for n in os.listdir(dst) if n.endswith(" (1).txt")]
    assert len(renamed) == 1 and (dst / renamed[0]).read_bytes() == b"new"


def test_on_conflict_ask_beside_the_live_view_on_a_terminal(tmp_path: Path, env, store):
    """On a real pty (the rich live view): the view stops for the question, takes the
    answer typed on the terminal, and the job ends with its summary."""
    import pty

    src, dst = ask_tree(tmp_path)
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [*CLI, "copy", "--on-conflict", "ask", str(src), str(dst.parent), "--store", store],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env={**env, "TERM": "xterm", "COLUMNS": "100"},
        close_fds=True,
    )
    os.close(slave)
    _STARTED.append(proc)  # type: ignore[arg-type]
    seen = b""

    def read_until(marker: bytes) -> None:
        nonlocal seen
        deadline = time.monotonic() + 30
        while marker not in seen:
            assert time.monotonic() < deadline, seen.decode(errors="replace")
            try:
                seen += os.read(master, 4096)
            except OSError:  # the child closed the terminal
                break

    try:
        read_until(b"[o]verwrite")
        os.write(master, b"O\n")  # overwrite this one and every later one
        read_until(b"completed")
        assert proc.wait(timeout=30) == 0, seen.decode(errors="replace")
    finally:
        os.close(master)
    assert seen.count(b"exists: ") == 1
    assert b"Ctrl-C pauses" in seen  # the live view drew (before or after the question)
    assert all((dst / f"f{i}.txt").read_bytes() == b"new" for i in range(4))


def test_parse_conflict_answers():
    from parjobs.cli._ask import parse_answer
    from parjobs.ops import Answer

    assert [parse_answer(t) for t in ("o", " skip\n", "rename", "r")] == [
        "overwrite",
        "skip",
        "rename",
        "rename",
    ]
    for text in ("O", "overwrite all", "s all", "Skip"):
        answer = parse_answer(text)
        assert isinstance(answer, Answer) and answer.for_all, text
    for text in ("", "x", "ok", "skip some", "o all now", "sk"):
        assert parse_answer(text) is None, text


def test_cancel_from_another_process_exit_4(sparse: Path, env, store):
    proc = start("--json", "hash", str(sparse), env=env, store=store)
    assert proc.stdout is not None
    job_id = json.loads(proc.stdout.readline())["job_id"]
    assert run("cancel", job_id, env=env, store=store).returncode == 0
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 4
    assert json.loads(out.splitlines()[-1])["status"] == "cancelled"


# -- store location ------------------------------------------------------------------------


def test_store_from_xdg_state_home_then_parjobs_store(small: Path, tmp_path: Path, env) -> None:
    dst = f"{tmp_path / 'dst'}/"
    assert run("copy", str(small), str(dst), env=env).returncode == 0
    default = tmp_path / "state" / "parjobs" / "jobs.sqlite"
    assert default.exists()
    # private to the user, as the XDG base directory spec asks (the WAL files follow)
    assert stat.S_IMODE(default.parent.stat().st_mode) == 0o700
    for name in ("jobs.sqlite", "jobs.sqlite-wal", "jobs.sqlite-shm"):
        if (default.parent / name).exists():
            assert stat.S_IMODE((default.parent / name).stat().st_mode) == 0o600, name
    retry = run("copy", str(small), str(dst), env=env)  # conflicts: exit 1
    job_id = re.search(r"copy ([0-9a-f]{12}):", retry.stdout)
    assert retry.returncode == 1 and job_id
    line = RESUME.search(run("show", job_id.group(1), env=env).stdout)
    assert line and "--store" not in line.group(0)

    env = {**env, "PARJOBS_STORE": str(tmp_path / "env.sqlite")}
    assert run("hash", str(small), env=env).returncode == 0
    assert (tmp_path / "env.sqlite").exists()
    assert "hash" in run("jobs", env=env).stdout
    assert "copy" not in run("jobs", env=env).stdout


# -- the other operations ------------------------------------------------------------------


def test_hash_prints_digests_on_stdout(small: Path, env, store) -> None:
    proc = run("hash", str(small), env=env, store=store)
    assert proc.returncode == 0
    lines = proc.stdout.splitlines()
    assert len(lines) == 12 and "completed" in proc.stderr
    digest, path = lines[0].split("  ", 1)
    assert digest == xxhash.xxh3_128_hexdigest(Path(path).read_bytes())


def test_delete_dupes_thumbnails(tmp_path: Path, env, store) -> None:
    from PIL import Image

    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        Image.new("RGB", (300, 200), (i * 80, 100, 200)).save(photos / f"p{i}.jpg")
    (photos / "copy.jpg").write_bytes((photos / "p0.jpg").read_bytes())
    dupes = run("dupes", str(photos), env=env, store=store)
    assert dupes.returncode == 0
    assert {str(photos / "p0.jpg"), str(photos / "copy.jpg")} <= set(dupes.stdout.splitlines())
    thumbs = run(
        "thumbnails",
        str(photos),
        "--size",
        "64",
        "--out",
        str(tmp_path / "t"),
        env=env,
        store=store,
    )
    assert thumbs.returncode == 0, thumbs.stdout + thumbs.stderr
    assert len(list((tmp_path / "t").rglob("*.webp"))) == 3  # the copy shares its thumbnail
    trashed = run("delete", "--trash", str(photos / "copy.jpg"), env=env, store=store)
    assert trashed.returncode == 0 and not (photos / "copy.jpg").exists()
    assert (tmp_path / "data" / "Trash" / "files" / "copy.jpg").exists()
    gone = run("delete", str(photos), env=env, store=store)
    assert gone.returncode == 0 and not photos.exists()


def test_demo_runs(tmp_path: Path, env) -> None:
    proc = subprocess.run(
        [*CLI, "demo", "--dir", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "the copy is identical" in proc.stdout and "paused" in proc.stdout
    assert list((tmp_path / "demo" / "thumbnails").rglob("*.webp"))
    assert (tmp_path / "demo" / "jobs.sqlite").exists()
    assert not (tmp_path / "state").exists()  # its own store, not the default one


# -- delete: what the user typed ------------------------------------------------------------


@pytest.fixture
def nest(tmp_path: Path) -> Path:
    """tmp_path/area/top/mid/low with a file at each level; HOME is tmp_path/area/home."""
    low = tmp_path / "area" / "top" / "mid" / "low"
    low.mkdir(parents=True)
    (tmp_path / "area" / "home").mkdir()
    for d in (low.parent.parent, low.parent, low):
        (d / "keep.txt").write_bytes(os.urandom(50))
    return low


def run_in(cwd: Path, *args: str, env: dict[str, str], store: str):
    """The CLI run as a subprocess in ``cwd``, with HOME inside tmp_path (see `nest`)."""
    home = str(cwd).split("/area/")[0] + "/area/home"
    return subprocess.run(
        [*CLI, *args, "--store", store],
        capture_output=True,
        text=True,
        env={**env, "HOME": home},
        cwd=cwd,
        timeout=60,
    )


@pytest.mark.parametrize("trash", [False, True])
@pytest.mark.parametrize("typed", [".", "..", "./", "../", "mid/..", "x/.", "../.", ".//", ""])
def test_delete_refuses_dot_and_dot_dot_as_typed_nothing_deleted(
    nest: Path, tmp_path: Path, env, store, typed: str, trash: bool
) -> None:
    (nest / "x").mkdir()
    area = tmp_path / "area"
    before = digests(area)
    cwd = nest if typed != "mid/.." else nest.parent.parent
    args = ["delete", *(["--trash"] if trash else []), typed]
    line = one_error_line(run_in(cwd, *args, env=env, store=store))
    assert "name the directory itself" in line or "an empty path" in line, line
    assert digests(area) == before
    assert not (tmp_path / "data" / "Trash").exists()


@pytest.mark.parametrize("typed", ["{top}", "{mid}/", "../../mid", "{low}", "../low", "../../.."])
def test_delete_refuses_the_current_directory_and_its_ancestors_unless_forced(
    nest: Path, tmp_path: Path, env, store, typed: str
) -> None:
    area = tmp_path / "area"
    before = digests(area)
    names = {"top": nest.parent.parent, "mid": nest.parent, "low": nest}
    path = typed.format(**names)
    if typed == "../../..":  # ends in '..': refused even with --force-ancestor
        proc = run_in(nest, "delete", "--force-ancestor", path, env=env, store=store)
        line = one_error_line(proc)
        assert "'.' or '..'" in line
        assert digests(area) == before
        return
    line = one_error_line(run_in(nest, "delete", path, env=env, store=store))
    assert "current directory" in line and "--force-ancestor" in line, line
    assert digests(area) == before
    forced = run_in(nest, "delete", "--force-ancestor", path, env=env, store=store)
    assert forced.returncode == 0, forced.stderr
    gone = names[typed.strip("{}/").rsplit("/", 1)[-1]]
    assert not gone.exists() and area.is_dir() and (area / "home").is_dir()


@pytest.mark.parametrize("typed", ["~", "~/", "{area}", "{home}"])
def test_delete_refuses_home_and_its_ancestors_even_when_forced(
    nest: Path, tmp_path: Path, env, store, typed: str
) -> None:
    area = tmp_path / "area"
    before = digests(area)
    path = typed.format(area=area, home=area / "home")
    for extra in ([], ["--force-ancestor"], ["--trash", "--force-ancestor"]):
        line = one_error_line(run_in(nest, "delete", *extra, path, env=env, store=store))
        assert "home directory" in line, line
        assert digests(area) == before


def test_delete_resolves_a_symlinked_parent_as_the_kernel_does(
    nest: Path, tmp_path: Path, env, store
) -> None:
    """``link/../x`` is x next to the link's target, not x in the current directory."""
    other = tmp_path / "area" / "other"
    (other / "sub").mkdir(parents=True)
    (other / "x").write_bytes(b"the x named")
    (nest / "x").write_bytes(b"an unrelated x")
    os.symlink(other / "sub", nest / "link")
    proc = run_in(nest, "delete", "link/../x", env=env, store=store)
    assert proc.returncode == 0, proc.stderr
    assert not (other / "x").exists()
    assert (nest / "x").read_bytes() == b"an unrelated x"


def test_hash_output_to_a_link_to_stdout_writes_the_pipe_not_the_link(
    small: Path, tmp_path: Path, env, store
) -> None:
    """``--output /dev/stdout``, with a stand-in link (a regression must not replace the
    machine's /dev/stdout): the digests go down the pipe, the display to stderr, and the
    link stays a link."""
    link = tmp_path / "stdout"
    os.symlink("/proc/self/fd/1", link)
    proc = run("hash", str(small), "--output", str(link), env=env, store=store)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 12, proc.stdout  # the digests only: no progress in the data
    for line in lines:
        digest, path = line.split("  ", 1)
        assert digest == xxhash.xxh3_128_hexdigest(Path(path).read_bytes())
    assert os.readlink(link) == "/proc/self/fd/1"
    assert "completed" in proc.stderr


def test_jobs_shows_items_of_a_job_that_stopped_short(tmp_path: Path, env, store) -> None:
    """#19: a copy that did 2 small files of 3 and failed on the big one said a bare
    '0%' in ``jobs``; it says the items done beside the percent."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    (src / "a").write_text("a")
    (src / "b").write_text("b")
    with open(src / "c", "wb") as f:
        f.truncate(200 * 1024 * 1024)  # sparse: the bytes are all in the item left undone
    (dst / "src").mkdir(parents=True)
    (dst / "src" / "c").write_text("theirs")  # a conflict: c fails, nothing is overwritten
    assert run("copy", str(src), str(dst), "--plain", env=env, store=store).returncode == 1
    assert (dst / "src" / "c").read_text() == "theirs"
    out = run("jobs", env=env, store=store)
    assert out.returncode == 0, out.stderr
    row = out.stdout.splitlines()[1]
    assert "completed_with_errors" in row
    assert re.search(r"\b0% \(\d+/\d+ items\)", row), row


def _finished_days_ago(store: str, job_id: str, days: float) -> None:
    """Age a finished job in the real store, as if it ended ``days`` ago."""
    with sqlite3.connect(store) as db:
        db.execute(
            "UPDATE jobs SET finished = ? WHERE id = ?", (time.time() - days * 86400, job_id)
        )


def _job_ids(env: dict[str, str], store: str) -> list[str]:
    out = run("jobs", "--json", env=env, store=store)
    assert out.returncode == 0, out.stderr
    return [json.loads(line)["id"] for line in out.stdout.splitlines()]


def _copied(tmp_path: Path, name: str, env: dict[str, str], store: str) -> str:
    """A finished copy job (its id); the copy lands in tmp_path/out-NAME."""
    src = tmp_path / name
    src.mkdir()
    (src / "f").write_text(name)
    out = run("copy", str(src), str(tmp_path / f"out-{name}"), "--json", env=env, store=store)
    assert out.returncode == 0, out.stderr
    return str(json.loads(out.stdout.splitlines()[-1])["job_id"])


def test_jobs_prune_by_age_and_by_id(tmp_path: Path, env, store) -> None:
    """#19: ``jobs prune`` forgets finished jobs older than an age (``--dry-run`` only
    says) or named by id, with their private files; the copies they made stay."""
    old, new = _copied(tmp_path, "old", env, store), _copied(tmp_path, "new", env, store)
    _finished_days_ago(store, old, 10)
    os.makedirs(f"{store}.d/{old}", exist_ok=True)
    (Path(f"{store}.d/{old}") / "walk.manifest").write_text("x")

    out = run("jobs", "prune", "--older-than", "7d", "--dry-run", env=env, store=store)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"would delete {old}  copy  completed")
    assert new not in out.stdout and _job_ids(env, store) == [old, new]

    out = run("jobs", "prune", "--older-than", "7d", env=env, store=store)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"deleted {old}  copy  completed")
    assert _job_ids(env, store) == [new]
    assert not os.path.exists(f"{store}.d/{old}")
    assert (tmp_path / "out-old" / "f").read_text() == "old"

    out = run("jobs", "prune", "--older-than", "7d", env=env, store=store)
    assert out.stdout == "no finished jobs to delete\n"
    out = run("jobs", "prune", new[:6], "--json", env=env, store=store)
    assert json.loads(out.stdout) == {"job_id": new, "status": "completed", "deleted": True}
    assert _job_ids(env, store) == []
    assert (tmp_path / "out-new" / "f").read_text() == "new"


def test_jobs_prune_refuses_bad_input_and_unfinished_jobs(tmp_path: Path, env, store) -> None:
    done = _copied(tmp_path, "a", env, store)
    (tmp_path / "b").mkdir()
    out = run(
        "copy", str(tmp_path / "b"), str(tmp_path / "out-b"), "--detach", env=env, store=store
    )
    assert out.returncode == 0, out.stderr
    queued = next(i for i in _job_ids(env, store) if i != done)
    cases = [
        (["jobs", "prune"], "give job ids or --older-than"),
        (["jobs", "prune", "--older-than", "3x"], "expected an age such as 30d"),
        (["jobs", "prune", done, queued], f"job {queued} is queued, not finished: nothing deleted"),
        (["jobs", "prune", "ffffffff"], "no job"),
    ]
    for argv, message in cases:
        out = run(*argv, env=env, store=store)
        assert out.returncode == 2, (argv, out)
        assert message in out.stderr, (argv, out.stderr)
        assert _job_ids(env, store) == [done, queued]


def test_finished_jobs_are_kept_30_days_by_default(tmp_path: Path, env, store) -> None:
    """#19: the store no longer grows forever: finished jobs older than 30 days (or
    $PARJOBS_RETENTION; 0 keeps them) are deleted when parjobs opens it."""
    old, new = _copied(tmp_path, "old", env, store), _copied(tmp_path, "new", env, store)
    _finished_days_ago(store, old, 31)
    _finished_days_ago(store, new, 29)
    assert _job_ids({**env, "PARJOBS_RETENTION": "0"}, store) == [old, new]
    out = run("jobs", env={**env, "PARJOBS_RETENTION": "soon"}, store=store)
    assert out.returncode == 2 and "PARJOBS_RETENTION: expected an age" in out.stderr
    assert _job_ids(env, store) == [new]
    assert _job_ids({**env, "PARJOBS_RETENTION": "28d"}, store) == []
