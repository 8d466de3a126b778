"""Ctrl-C, other processes steering a running job, and --on-conflict ask."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

from _cli import (
    CLI,
    RESUME,
    SLOW_COPY,
    STARTED,
    digests,
    one_error_line,
    run,
    run_command_line,
    start,
)

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
    STARTED.append(proc)
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
