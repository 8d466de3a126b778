"""A file too big for the destination's disk fails alone: the files copied beside it land."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from _trees import run_job, write

from parjobs import JobStatus
from parjobs.ops import _smallfiles as smallfiles_mod
from parjobs.ops import _transfer as transfer_mod
from parjobs.ops._copy import CopyJob
from parjobs.ops._copyfile import CopyOptions, copy_file
from parjobs.ops._move import MoveJob
from parjobs.ops._partials import find_partials

MIB = 1 << 20


@pytest.fixture
def small_disk(mount_fs: Callable[..., Path]) -> Path:
    """A 16 MiB tmpfs, or skip (needs root)."""
    return mount_fs("tmpfs", "-o", "size=16m")


@pytest.mark.parametrize("kind", ["copy", "move"])
async def test_a_file_too_big_for_the_disk_fails_alone(
    store_path: str, tmp_path: Path, small_disk: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """A 20 MiB file onto a 16 MiB disk filled it before failing, and a 3 MiB file copied
    meanwhile failed too ("No space left on device"), on every resume again. The big one is
    refused before a byte is written now: the 3 MiB file and the small ones land, the big
    one fails alone, no temporary left, its source kept. (Deterministic: the 3 MiB copy
    starts once the big one has written 14 MiB, which waits for it.)"""
    src = tmp_path / "src"
    src.mkdir()
    write(src / "big", b"b" * 20 * MIB)
    write(src / "mid", b"m" * 3 * MIB)
    for i in range(10):
        write(src / f"s{i}", b"s" * 1000)
    monkeypatch.setattr(transfer_mod, "CHUNK_SIZE", MIB)
    monkeypatch.setattr(smallfiles_mod, "fastcopy", None)
    full, big_done, mid_done = threading.Event(), threading.Event(), threading.Event()

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        name = os.path.basename(os.fsdecode(args[0]))
        if name == "big":
            written = [0]
            on_bytes = kwargs.get("on_bytes")

            def counted(n: int) -> None:
                written[0] += n
                if on_bytes is not None:
                    on_bytes(n)
                if written[0] >= 14 * MIB and not full.is_set():
                    full.set()
                    mid_done.wait(10)

            kwargs["on_bytes"] = counted
            try:
                return copy_file(*args, **kwargs)
            finally:
                big_done.set()
        if name == "mid":
            deadline = time.monotonic() + 10
            while not (full.is_set() or big_done.is_set()) and time.monotonic() < deadline:
                time.sleep(0.002)
            try:
                return copy_file(*args, **kwargs)
            finally:
                mid_done.set()
        return copy_file(*args, **kwargs)

    monkeypatch.setattr(transfer_mod, "copy_file", wrapped)
    dst = small_disk / "dst"
    job = (CopyJob if kind == "copy" else MoveJob)(sources=[str(src)], destination=str(dst))
    _, info, errors = await run_job(store_path, job, workers=4)
    assert info.status is JobStatus.COMPLETED_WITH_ERRORS
    assert [(e.label, "No space left on device" in e.message) for e in errors] == [
        (str(src / "big"), True)
    ], errors
    assert sorted(os.listdir(dst)) == ["mid"] + [f"s{i}" for i in range(10)]
    assert os.path.getsize(dst / "mid") == 3 * MIB
    assert find_partials(small_disk) == []
    assert os.path.getsize(src / "big") == 20 * MIB
    assert sorted(os.listdir(src)) == (
        ["big"] if kind == "move" else ["big", "mid"] + [f"s{i}" for i in range(10)]
    )


def test_a_partial_that_meets_a_full_disk_is_removed(small_disk: Path, tmp_path: Path) -> None:
    """A file that fits the free space when it starts, the disk filled by another writer
    while it is copied: `copy_file` kept its partial (to resume), holding the space the
    other files need. It is removed now, the error "No space left on device"."""
    write(tmp_path / "f", b"f" * 10 * MIB)
    filler = small_disk / "filler"

    def fill(n: int) -> None:
        if not filler.exists():
            write(filler, b"x" * 8 * MIB)

    with pytest.raises(OSError, match="No space left on device"):
        copy_file(tmp_path / "f", small_disk / "f", CopyOptions(chunk_size=MIB), on_bytes=fill)
    assert sorted(os.listdir(small_disk)) == ["filler"]
