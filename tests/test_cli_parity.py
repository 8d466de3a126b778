"""The command line against the tools people compare it with: ``xxhsum -c`` reading a
relative checksum file from another directory, and ``cp -a`` copying the same awkward tree."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CLI = [sys.executable, "-m", "parjobs.cli"]


def _parjobs(*args: str, cwd: Path, store: Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [*CLI, *args, "--store", str(store)], cwd=cwd, capture_output=True, timeout=120
    )


def _hash_tree(root: Path) -> None:
    (root / "sub" / "deep").mkdir(parents=True)
    (root / "top.txt").write_bytes(b"top")
    (root / "sub" / "with space.bin").write_bytes(os.urandom(5000))
    (root / "sub" / "deep" / "caf\u00e9").write_bytes(b"unicode")


@pytest.mark.skipif(shutil.which("xxhsum") is None, reason="xxhsum is not installed")
def test_hash_of_dot_writes_relative_names_that_verify_a_copy_elsewhere(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    _hash_tree(tree)
    store = tmp_path / "jobs.sqlite"
    shown = _parjobs("hash", ".", cwd=tree, store=store)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert sorted(line.split(b"  ", 1)[1] for line in lines) == sorted(
        [b"./top.txt", b"./sub/with space.bin", "./sub/deep/caf\u00e9".encode()]
    )
    written = _parjobs("hash", "sub/", "top.txt", "-o", "../sums", cwd=tree, store=store)
    assert written.returncode == 0, written.stderr
    names = sorted(
        line.split(b"  ", 1)[1] for line in (tmp_path / "sums").read_bytes().splitlines()
    )
    assert names == sorted([b"sub/with space.bin", "sub/deep/caf\u00e9".encode(), b"top.txt"])
    elsewhere = tmp_path / "kept" / "elsewhere"
    shutil.copytree(tree, elsewhere)
    (tmp_path / "stdout.xxh").write_bytes(shown.stdout)
    for sums in (tmp_path / "stdout.xxh", tmp_path / "sums"):
        check = subprocess.run(
            ["xxhsum", "-c", str(sums)], cwd=elsewhere, capture_output=True, timeout=60
        )
        assert check.returncode == 0, check.stdout + check.stderr
        assert check.stdout.count(b": OK") == 3
    (elsewhere / "top.txt").write_bytes(b"changed")  # the check can fail: it reads the copy
    check = subprocess.run(
        ["xxhsum", "-c", str(tmp_path / "sums")], cwd=elsewhere, capture_output=True, timeout=60
    )
    assert check.returncode != 0 and b"FAILED" in check.stdout


def test_hash_absolute_argument_stays_absolute(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    _hash_tree(tree)
    shown = _parjobs("hash", str(tree / "sub"), cwd=tmp_path, store=tmp_path / "s.sqlite")
    assert shown.returncode == 0, shown.stderr
    names = {line.split(b"  ", 1)[1] for line in shown.stdout.splitlines()}
    assert names == {
        os.fsencode(tree / "sub" / "with space.bin"),
        os.fsencode(tree / "sub" / "deep" / "caf\u00e9"),
    }
