"""``parjobs show ID --items [--json]``, ``parjobs undo ID`` and ``parjobs trash list|restore``
through real subprocesses (#14.2)."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

from _cli import run


def _job_id(store: str, env: dict[str, str]) -> str:
    out = run("jobs", "--json", env=env, store=store)
    return str(json.loads(out.stdout.splitlines()[0])["id"])


def test_show_items_json_undo_and_plain(tmp_path: Path, env: dict[str, str], store: str) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_bytes(b"aaa")
    (src / os.fsdecode(b"odd-\xff")).write_bytes(b"o")
    dst = tmp_path / "dst"
    dst.mkdir()  # an existing directory: the copy goes into it (dst/src), as cp -r does
    assert run("copy", str(src), str(dst), "--plain", env=env, store=store).returncode == 0
    job = _job_id(store, env)
    shown = run("show", job[:6], "--items", "--json", env=env, store=store)
    assert shown.returncode == 0, shown.stderr
    records = [json.loads(line) for line in shown.stdout.splitlines()]
    assert [r["seq"] for r in records] == [1, 2, 3]
    by_source = {r["source"]: r for r in records}
    odd_source, odd_destination = (
        os.fsencode(src) + b"/odd-\xff",
        os.fsencode(dst) + b"/src/odd-\xff",
    )
    a = by_source[str(src / "a")]
    assert a["action"] == "copied" and a["destination"] == str(dst / "src" / "a")
    assert a["bytes"] == 3 and a["written"]["size"] == 3
    odd = by_source[str(src) + "/odd-\\xff"]  # strict JSON: the bad byte as \xNN text...
    assert odd["destination"] == str(dst) + "/src/odd-\\xff"
    exact = {base64.b64decode(v) for v in odd["names_bytes"].values()}  # ... and its bytes
    assert exact == {odd_source, odd_destination}
    plain = run("show", job, "--items", "--action", "copied", env=env, store=store)
    lines = plain.stdout.splitlines()
    assert len(lines) == 3 and all(line.startswith("copied") for line in lines)
    assert any("odd-\\xff" in line for line in lines)  # printable, not an encoding error
    undone = run("undo", job, "--plain", env=env, store=store)
    assert undone.returncode == 0, undone.stderr
    assert os.listdir(dst) == []
    assert sorted(os.listdir(src)) == sorted(["a", os.fsdecode(b"odd-\xff")])


def test_undo_of_an_unknown_job_is_a_usage_error(env: dict[str, str], store: str) -> None:
    assert run("jobs", env=env, store=store).returncode == 0
    out = run("undo", "ffff", env=env, store=store)
    assert out.returncode == 2 and "no job" in out.stderr


def test_trash_list_and_restore(tmp_path: Path, env: dict[str, str], store: str) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"v")
    assert run("delete", str(victim), "--trash", env=env, store=store).returncode == 0
    assert not victim.exists()
    listed = run("trash", "list", "--json", env=env)
    (entry,) = [json.loads(line) for line in listed.stdout.splitlines()]
    assert entry["original_path"] == str(victim)
    assert entry["trashed_path"].startswith(str(tmp_path / "data" / "Trash" / "files"))
    victim.write_bytes(b"new")  # the name is taken: nothing replaced, exit 1
    refused = run("trash", "restore", str(victim), env=env)
    assert refused.returncode == 1 and "not restored" in refused.stderr
    assert victim.read_bytes() == b"new"
    victim.unlink()
    restored = run("trash", "restore", entry["trashed_path"], env=env)
    assert restored.returncode == 0, restored.stderr
    assert victim.read_bytes() == b"v"
    assert run("trash", "list", env=env).stdout == ""
    missing = run("trash", "restore", str(tmp_path / "never"), env=env)
    assert missing.returncode == 1 and "not in the trash" in missing.stderr


def test_show_and_jobs_print_a_name_that_is_not_utf8_readably(
    tmp_path: Path, env: dict[str, str], store: str
) -> None:
    """``show`` (what, spec, result) and ``jobs`` print a bad byte of a name as ``\\xNN``, as
    ``ls -b`` does: not the raw byte (garbage on a terminal) nor JSON's ``\\udcff``."""
    bad = tmp_path / os.fsdecode(b"bad-\xff")
    bad.write_bytes(b"b")
    (tmp_path / "dst").mkdir()
    copied = run("copy", str(bad), str(tmp_path / "dst"), "--plain", env=env, store=store)
    assert copied.returncode == 0, copied.stderr
    shown = run("show", _job_id(store, env), env=env, store=store)
    assert shown.returncode == 0, shown.stderr
    shown.stdout.encode("utf-8")  # no lone surrogate
    (what,) = [line for line in shown.stdout.splitlines() if line.startswith("what")]
    assert what.split()[1] == str(tmp_path) + "/bad-\\xff"
    assert f'"{tmp_path}/bad-\\xff"' in shown.stdout  # the spec's sources
    assert "udcff" not in shown.stdout
    listed = run("jobs", env=env, store=store)
    assert str(tmp_path) + "/bad-\\xff" in listed.stdout
