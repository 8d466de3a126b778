"""Tests for the kernel helpers of `parjobs.ops._kernel`: filesystem type, preallocation."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from parjobs.ops._kernel import PREALLOCATE_ON, fs_type, preallocate

MIB = 1024 * 1024
TMPFS_MAGIC = 0x01021994


def test_fs_type_of_an_fd_is_that_of_its_path(tmp_path: Path) -> None:
    fd = os.open(tmp_path, os.O_RDONLY)
    try:
        assert fs_type(fd) == fs_type(tmp_path) == fs_type(os.fsencode(tmp_path)) is not None
    finally:
        os.close(fd)
    assert fs_type("/proc") == 0x9FA0
    assert fs_type(tmp_path / "missing") is None


@pytest.mark.skipif(fs_type("/tmp") not in PREALLOCATE_ON, reason="/tmp is not ext4")
def test_preallocate_reserves_blocks_and_keeps_the_size(tmp_path: Path) -> None:
    path = tmp_path / "f"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.write(fd, b"x" * 4096)
        assert preallocate(fd, 4096, MIB)
        st = os.fstat(fd)
        assert st.st_size == 4096 and st.st_blocks * 512 >= 4096 + MIB
        assert not preallocate(fd, 4096, 0)
        with pytest.raises(OSError) as info:  # a real error raises, as the write would
            preallocate(fd, 0, 1 << 50)  # past ext4's largest file
        assert info.value.errno == errno.EFBIG and os.fstat(fd).st_size == 4096
    finally:
        os.close(fd)
    rd = os.open(path, os.O_RDONLY)  # fallocate on a read-only fd: EBADF, "not here"
    try:
        assert not preallocate(rd, 0, MIB)
    finally:
        os.close(rd)


@pytest.mark.skipif(fs_type("/dev/shm") != TMPFS_MAGIC, reason="/dev/shm is not tmpfs")
def test_no_preallocation_on_tmpfs() -> None:
    fd = os.open("/dev/shm", os.O_RDWR | os.O_TMPFILE, 0o600)
    try:
        assert not preallocate(fd, 0, MIB)
        assert os.fstat(fd).st_blocks == 0
    finally:
        os.close(fd)
