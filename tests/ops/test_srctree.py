"""`SourceDirs`: a source reached from its root without following a symlink below it."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from parjobs.ops._srctree import MAX_ROOTS, REPLACED, SourceDirs, lstat_at


def test_a_directory_swapped_for_a_symlink_below_the_root_is_refused(tmp_path: Path) -> None:
    """``root/sub`` replaced by a symlink: ESTALE naming the source, nothing opened
    through it; the root itself, named by the user as a symlink, is followed."""
    real, outside = tmp_path / "real", tmp_path / "outside"
    (real / "sub").mkdir(parents=True)
    (real / "sub" / "a").write_text("tree")
    outside.mkdir()
    (outside / "a").write_text("OUTSIDE")
    (tmp_path / "root").symlink_to(real)  # the root the user named: followed
    path = os.fsencode(tmp_path / "root" / "sub" / "a")
    dirs = SourceDirs(follow=False)
    try:
        with dirs.at(path, b"root/sub/a", "moved") as at:
            assert lstat_at(at, path).st_size == 4
        os.rename(real / "sub", real / "sub.kept")
        (real / "sub").symlink_to(outside)
        dirs.close()  # a later run: nothing cached
        dirs = SourceDirs(follow=False)
        with pytest.raises(OSError) as caught, dirs.at(path, b"root/sub/a", "moved"):
            pass
        assert caught.value.errno == errno.ESTALE
        assert caught.value.strerror == REPLACED.format(verb="moved")
        followed = SourceDirs(follow=True)  # copy -L
        with followed.at(path, b"root/sub/a", "copied") as at:
            assert lstat_at(at, path).st_size == len("OUTSIDE")
        followed.close()
    finally:
        dirs.close()


def test_errors_name_the_source_path(tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    path = os.fsencode(tmp_path / "root" / "gone")
    dirs = SourceDirs(follow=False)
    try:
        with dirs.at(path, b"root/gone", "copied") as at, pytest.raises(FileNotFoundError) as c:
            lstat_at(at, path)
        assert c.value.filename == path
    finally:
        dirs.close()


def test_many_roots_keep_few_descriptors_open(tmp_path: Path) -> None:
    """Each root's cache pins its root's fd: a job of many roots (``move */ dst``) held one
    fd per root, and thousands ran out of them. Only `MAX_ROOTS` stay open. (The fds
    counted are those open on ``tmp_path``'s directories: a thread left by an earlier test
    in this worker process may open or close others meanwhile.)"""
    paths = []
    for i in range(MAX_ROOTS * 4):
        (tmp_path / f"r{i}" / "sub").mkdir(parents=True)
        (tmp_path / f"r{i}" / "sub" / "a").write_text("x")
        paths.append((os.fsencode(tmp_path / f"r{i}" / "sub" / "a"), f"r{i}/sub/a".encode()))
    assert _open_under(tmp_path) == 0
    dirs = SourceDirs(follow=False)
    try:
        with dirs.at(*paths[0], "copied") as held:  # in use while its root is closed
            for path, rel in paths[1:]:
                with dirs.at(path, rel, "copied") as at:
                    assert lstat_at(at, path).st_size == 1
            assert 0 < _open_under(tmp_path) <= 2 * (MAX_ROOTS + 1)
            assert lstat_at(held, paths[0][0]).st_size == 1  # still open: closed once released
    finally:
        dirs.close()
    assert _open_under(tmp_path) == 0


def _open_under(root: Path) -> int:
    """How many of this process's fds are open on ``root`` or below it."""
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # closed meanwhile (the listing's own fd among them)
            continue
        n += target == str(root) or target.startswith(f"{root}/")
    return n
