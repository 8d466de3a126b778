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


def _awkward_tree(root: Path) -> None:
    """Odd modes, file and directory mtimes, symlinks (one dangling), odd names, empty dirs,
    hard links (in one directory and across directories)."""
    root.mkdir()
    names = ["plain.txt", "with space", "new\nline", "caf\u00e9 \u65e5\u672c", "-dash", "tab\there"]
    for i, name in enumerate(names):
        (root / name).write_bytes(name.encode() * (i + 1))
    (root / "nested" / "deeper" / "deepest").mkdir(parents=True)
    (root / "nested" / "deeper" / "deepest" / "leaf.bin").write_bytes(os.urandom(200_000))
    (root / "nested" / "big.bin").write_bytes(os.urandom(3 << 20))
    (root / "empty dir").mkdir()
    (root / "nested" / "empty").mkdir()
    (root / "empty file").write_bytes(b"")
    modes = {"plain.txt": 0o600, "with space": 0o751, "-dash": 0o444, "tab\there": 0o000}
    for name, mode in modes.items():
        os.chmod(root / name, mode)
    os.symlink("plain.txt", root / "link to file")
    os.symlink("nested/deeper", root / "link to dir")
    os.symlink("no such target", root / "dangling")
    os.symlink("/abs/\nodd target", root / "nested" / "odd link")
    (root / "sticky").mkdir()
    (root / "sticky" / "in.txt").write_bytes(b"in")
    os.chmod(root / "sticky", 0o1777)
    os.chmod(root / "nested" / "empty", 0o700)
    os.link(root / "with space", root / "hard link")
    os.link(root / "with space", root / "nested" / "deeper" / "hard link")
    for depth, path in enumerate(sorted(root.rglob("*"), key=lambda p: -len(p.parts))):
        when = 1_500_000_000_123_456_789 + depth * 86_400_000_000_007
        os.utime(path, ns=(when, when), follow_symlinks=False)
    os.utime(root, ns=(1_400_000_000_000_000_001,) * 2)
    os.chmod(root / "nested" / "deeper", 0o555)  # read-only, after its contents are in place


def _describe(root: Path) -> dict[str, tuple[object, ...]]:
    """Each entry (and the root, as ".") by its path in the tree: what `cp -a` keeps, a
    file's hard links in the tree included (the paths of its inode)."""
    out: dict[str, tuple[object, ...]] = {}
    names: dict[int, list[str]] = {}
    inodes: dict[str, int] = {}
    for top, dirs, files in os.walk(root):
        for name in [".", *dirs, *files] if top == str(root) else [*dirs, *files]:
            path = os.path.normpath(os.path.join(top, name))
            st = os.lstat(path)
            rel = os.path.relpath(path, root)
            kind = "link" if os.path.islink(path) else "dir" if os.path.isdir(path) else "file"
            extra: object = None
            if kind == "link":
                extra = os.readlink(path)
            elif kind == "file":
                with open(path, "rb") as f:
                    extra = f.read()
            mode = None if kind == "link" else st.st_mode
            mtime = None if kind == "link" else st.st_mtime_ns
            out[rel] = (kind, mode, st.st_size, st.st_nlink, mtime, extra)
            if kind == "file":
                inodes[rel] = st.st_ino
                names.setdefault(st.st_ino, []).append(rel)
        dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(top, d))]
    for rel, ino in inodes.items():  # which names are one file
        out[rel] = (*out[rel], tuple(sorted(names[ino])))
    return out


@pytest.mark.skipif(shutil.which("cp") is None, reason="cp is not installed")
def test_copy_matches_cp_a_on_an_awkward_tree(tmp_path: Path) -> None:
    src = tmp_path / "src"
    _awkward_tree(src)
    before = _describe(src)
    by_cp, by_us = tmp_path / "by cp", tmp_path / "by parjobs"
    cp = subprocess.run(["cp", "-a", str(src), str(by_cp)], capture_output=True, timeout=120)
    assert cp.returncode == 0, cp.stderr
    ours = _parjobs("copy", "src", "by parjobs", cwd=tmp_path, store=tmp_path / "s.sqlite")
    assert ours.returncode == 0, ours.stderr
    expected = _describe(by_cp)
    assert len(expected) == 23 and expected == before, "cp -a copies the tree as it is"
    assert expected["hard link"][3] == 3, "the tree has a file with three names"
    got = _describe(by_us)
    differing = {
        k: (expected.get(k), got.get(k))
        for k in expected.keys() | got.keys()
        if expected.get(k) != got.get(k)
    }
    assert not differing
    assert _describe(src) == before, "the source is left as it was"


@pytest.mark.skipif(shutil.which("rsync") is None, reason="rsync is not installed")
def test_rsync_finds_nothing_to_do_after_a_copy(tmp_path: Path) -> None:
    """``rsync -anciH`` (checksums, hard links) compares the copy with its source: no line."""
    src, by_us = tmp_path / "src", tmp_path / "by parjobs"
    _awkward_tree(src)
    ours = _parjobs("copy", "src", "by parjobs", cwd=tmp_path, store=tmp_path / "s.sqlite")
    assert ours.returncode == 0, ours.stderr
    rsync = subprocess.run(
        ["rsync", "-anciH", f"{src}/", f"{by_us}/"], capture_output=True, timeout=120
    )
    assert rsync.returncode == 0, rsync.stderr
    assert rsync.stdout == b"", "rsync -aH finds nothing left to change"
