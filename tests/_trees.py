"""The file-tree helpers, now public in `parjobs.testing` (kept importable here for the
tests and the crash-test children that import ``_trees``), and special files to plant."""

from __future__ import annotations

import contextlib
import os
import socket
import stat
from pathlib import Path

import pytest

from parjobs.testing import read, snapshot, write

#: The special files a test plants where a regular one is expected, and how errors name them.
SPECIAL_KINDS = {"fifo": "FIFO", "socket": "socket", "chardev": "character device"}


def make_special(path: Path, kind: str) -> tuple[int, int, int]:
    """A FIFO, socket or (root only) character device at ``path``, older than any source
    (so "update" would replace it); returns its (inode, mode, rdev)."""
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "socket":  # bound by a relative name: AF_UNIX paths are short
        with contextlib.chdir(path.parent), socket.socket(socket.AF_UNIX) as sock:
            sock.bind(path.name)
    else:
        if os.geteuid() != 0:
            pytest.skip("mknod of a character device needs root")
        os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 3))
    os.utime(path, (1_000_000_000, 1_000_000_000), follow_symlinks=False)
    return identity(path)


def identity(path: Path) -> tuple[int, int, int]:
    """(inode, mode, rdev) of ``path`` itself: what must not change under a special file."""
    st = os.lstat(path)
    return st.st_ino, st.st_mode, st.st_rdev


__all__ = ["SPECIAL_KINDS", "identity", "make_special", "read", "snapshot", "write"]
