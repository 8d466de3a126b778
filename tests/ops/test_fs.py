"""The shared file-system helpers (parjobs.ops._fs)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from parjobs.ops._fs import open_dir_nofollow, same_size_mtime, unique_name


def test_open_dir_nofollow_create(tmp_path: Path) -> None:
    fd = open_dir_nofollow(tmp_path, ["x", b"y\xff"], create=True)
    try:
        assert stat.S_ISDIR(os.fstat(fd).st_mode)
    finally:
        os.close(fd)
    assert os.path.isdir(os.fsencode(tmp_path) + b"/x/y\xff")


def test_same_size_mtime() -> None:
    def st(size: int, mtime_ns: int) -> os.stat_result:
        return os.stat_result(
            (0o100644, 0, 0, 1, 0, 0, size, 0, 0, 0, 0.0, 0.0, 0.0, 0, mtime_ns, 0)
        )

    s = 1_700_000_000
    assert same_size_mtime(st(5, s * 10**9 + 123), st(5, s * 10**9 + 123))
    assert not same_size_mtime(st(5, s * 10**9 + 123), st(5, s * 10**9 + 124))
    assert same_size_mtime(st(5, s * 10**9 + 123), st(5, s * 10**9))  # 1 s filesystem
    assert not same_size_mtime(st(5, s * 10**9), st(5, (s + 1) * 10**9))
    assert not same_size_mtime(st(5, s * 10**9), st(6, s * 10**9))


def test_unique_name(tmp_path: Path) -> None:
    (tmp_path / "archive.tar.gz").touch()
    assert unique_name(tmp_path / "archive.tar.gz") == str(tmp_path / "archive (1).tar.gz")
    (tmp_path / "archive (1).tar.gz").touch()
    assert unique_name(str(tmp_path / "archive.tar.gz")) == str(tmp_path / "archive (2).tar.gz")
    assert unique_name(tmp_path / "free.txt") == str(tmp_path / "free.txt")
    (tmp_path / ".bashrc").touch()
    assert unique_name(tmp_path / ".bashrc") == str(tmp_path / ".bashrc (1)")
    (tmp_path / "photo.jpg").symlink_to("dangling")
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert unique_name("photo.jpg", dst_dir_fd=fd) == "photo (1).jpg"
        os.close(os.open(b"b\xff.dat", os.O_CREAT | os.O_WRONLY, dir_fd=fd))
        assert unique_name(b"b\xff.dat", dst_dir_fd=fd) == b"b\xff (1).dat"
    finally:
        os.close(fd)


def test_unique_name_respects_255_bytes(tmp_path: Path) -> None:
    name = "é" * 123 + "ab.jpg"  # 246 + 8 = 254 bytes
    (tmp_path / name).touch()
    new = os.path.basename(unique_name(tmp_path / name))
    assert len(new.encode()) <= 255 and new.endswith(" (1).jpg")
    new.encode("utf-8")  # no split character
    (tmp_path / new).touch()
    assert os.path.basename(unique_name(tmp_path / name)).endswith(" (2).jpg")
