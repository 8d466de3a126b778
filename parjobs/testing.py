"""Helpers for testing job types: file trees written, read and compared by content, virtual
time that waits for the store's thread, and running one job to its end."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any, Unpack

import trio
import trio.testing
import xxhash

from ._config import ConfigOptions
from ._job import Job
from ._manager import open_manager
from ._records import JobInfo

__all__ = ["mock_clock", "read", "run_to_end", "snapshot", "write"]


def write(path: Path | bytes | str, data: bytes) -> None:
    """Create or replace the file ``path`` with ``data``."""
    with open(path, "wb") as f:
        f.write(data)


def read(path: Path | bytes | str) -> bytes:
    """The bytes of the file ``path``."""
    with open(path, "rb") as f:
        return f.read()


def snapshot(root: Path | str | bytes) -> dict[bytes, tuple[str, str]]:
    """Every entry below ``root``: relative bytes path -> (kind, xxh3 digest / link target),
    so two trees compare equal when their names, kinds and contents are. Special files are
    listed, never opened."""
    top = os.fsencode(root)
    out: dict[bytes, tuple[str, str]] = {}
    for d, dirs, files in os.walk(top):
        for name in dirs + files:
            path = os.path.join(d, name)
            st = os.lstat(path)
            rel = os.path.relpath(path, top)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.fsdecode(os.readlink(path)))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", "")
            elif stat.S_ISREG(st.st_mode):
                out[rel] = ("file", xxhash.xxh3_128_hexdigest(read(path)))
            else:
                out[rel] = ("special", "")
    return out


def mock_clock(autojump_threshold: float = 0.02) -> trio.testing.MockClock:
    """Virtual time that jumps only after ``autojump_threshold`` seconds of real idleness.

    The manager's store calls run in a worker thread; with a zero threshold every such call
    would let virtual time jump to the next deadline, so timers would fire while real work
    is still in progress."""
    return trio.testing.MockClock(autojump_threshold=autojump_threshold)


async def run_to_end(
    store_path: str | os.PathLike[str], job: Job, **options: Unpack[ConfigOptions]
) -> tuple[JobInfo, Any]:
    """Submit ``job`` to a manager on ``store_path``, wait until it rests, and return its
    stored record and the value it returned (None unless it completed)."""
    async with open_manager(store_path, **options) as manager:
        handle = await manager.submit(job)
        status = await handle.wait()
        info = await manager.get(handle.id)
        value = await handle.result() if status.value.startswith("completed") else None
        return info, value
