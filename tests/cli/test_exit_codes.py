"""Exit codes and output modes of a job command, through real subprocesses."""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from _cli import RESUME, digests, one_error_line, run

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


def test_names_that_are_not_utf8_print_as_their_bytes_under_a_strict_utf8_stdout(
    tmp_path: Path, env, store
) -> None:
    """A UTF-8 locale's stdout refuses the surrogates such a name holds in Python; the hash
    and dupes lines carry the name's own bytes (as xxhsum and jdupes print it), not a
    traceback after the job is done. A real interpreter: its stdout is set up at start."""
    d = tmp_path / "d"
    d.mkdir()
    for name in (b"bad-\xff", b"bad-\xfe"):
        (d / os.fsdecode(name)).write_bytes(b"the same bytes")
    strict = {**env, "PYTHONIOENCODING": "utf-8:strict"}
    for command in ("hash", "dupes"):
        proc = subprocess.run(
            [sys.executable, "-m", "parjobs", "--store", store, command, str(d)],
            capture_output=True,
            env=strict,
            timeout=120,
            check=False,
        )
        assert proc.returncode == 0 and b"Traceback" not in proc.stderr, proc.stderr
        for name in (b"bad-\xff", b"bad-\xfe"):
            assert os.fsencode(d) + b"/" + name + b"\n" in proc.stdout, (command, proc.stdout)
    assert sorted(os.listdir(d)) == sorted(os.fsdecode(n) for n in (b"bad-\xfe", b"bad-\xff"))


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


def test_more_conflicts_than_listed_are_all_counted_and_show_offers_no_retry(
    tmp_path: Path, env, store
) -> None:
    """30 destinations exist, 20 failures listed: the summary says 30 (it said 20, the
    listed ones), and ``show`` offers no ``resume`` for a job whose failures all meet the
    same refusal again (it did: every completed-with-errors job got one)."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(30):
        (src / f"f{i:02}.txt").write_text(str(i))
    dst = f"{tmp_path / 'dst'}/"
    assert run("copy", str(src), dst, env=env, store=store).returncode == 0
    proc = run("--plain", "copy", str(src), dst, env=env, store=store)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "failed items (30)" in proc.stdout and "… and 10 more" in proc.stdout
    assert "30 destinations exist: run the copy again" in proc.stdout, proc.stdout
    assert not RESUME.search(proc.stdout), proc.stdout
    job = re.search(r"copy ([0-9a-f]{12}): completed with errors", proc.stdout)
    assert job, proc.stdout
    shown = run("show", job[1], env=env, store=store)
    assert shown.returncode == 0 and "errors    30" in shown.stdout, shown.stdout
    assert not re.search(r"^resume ", shown.stdout, re.M), shown.stdout
    assert sorted(p.name for p in (tmp_path / "dst" / "src").iterdir()) == sorted(
        p.name for p in src.iterdir()
    )
    one = run("--plain", "copy", str(src / "f00.txt"), dst + "src/", env=env, store=store)
    assert "  1 destination exists: run the copy again" in one.stdout, one.stdout
    assert (tmp_path / "dst" / "src" / "f00.txt").read_text() == "0"


async def test_failures_reads_past_the_listed_ones_only_when_there_are_more() -> None:
    """A retry worth offering, or a conflict, after the listed failures is found; nothing is
    read past the listed ones when they are all there are."""
    from parjobs import ItemError
    from parjobs.cli._render import failures

    def error(i: int, kind: str) -> ItemError:
        if kind == "exists":
            return ItemError(i, f"f{i}", "FileExistsError", f"destination exists: f{i}")
        return ItemError(i, f"f{i}", "OSError", "[Errno 5] Input/output error")

    stored = [error(i, "exists") for i in range(1500)] + [error(1500, "io")]
    reads: list[tuple[int, int]] = []

    async def read(job_id: str, *, limit: int = -1, offset: int = 0) -> list[ItemError]:
        reads.append((limit, offset))
        return stored[offset : offset + limit if limit >= 0 else None]

    facts = await failures(read, "j", stored[:20], len(stored))
    assert (facts.conflicts, facts.may_pass) == (1500, True)
    assert reads == [(1000, 20), (1000, 1020)]
    reads.clear()
    facts = await failures(read, "j", stored[:20], 20)
    assert (facts.conflicts, facts.may_pass, reads) == (20, False, [])


def test_a_refused_trash_item_does_not_suggest_resume(tmp_path: Path, env, store) -> None:
    """An item in the trash already is refused again on every retry: the closing lines list
    it, and say nothing of ``parjobs resume`` (which would only meet the same refusal)."""
    trashed = tmp_path / "data" / "Trash" / "files"
    trashed.mkdir(parents=True)
    (trashed / "old.txt").write_text("gone")
    proc = run("--plain", "delete", "--trash", str(trashed / "old.txt"), env=env, store=store)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "is in the trash already" in proc.stdout
    assert not RESUME.search(proc.stdout), proc.stdout
    assert (trashed / "old.txt").read_text() == "gone"


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
