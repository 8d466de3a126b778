"""HashJob through a real manager and store: digests, resume, checksum files, failures."""

from __future__ import annotations

import collections
import os
import shutil
import subprocess
import threading
import time

import pytest
import trio
import xxhash

import parjobs
from parjobs import JobStatus
from parjobs.ops import hash as hash_mod
from parjobs.ops.hash import HashJob, checksum_line

HASHERS = {"xxh3_128": xxhash.xxh3_128, "xxh3_64": xxhash.xxh3_64, "xxh64": xxhash.xxh64}


def _tree(root) -> dict[str, bytes]:
    """A small tree: nested files, an empty one, a multi-chunk one, a symlink and a FIFO."""
    files = {
        "top.txt": b"top\n",
        "empty": b"",
        "a/one.bin": os.urandom(70_000),
        "a/b/c/deep.txt": b"deep " * 1000,
        "a/b/big.bin": os.urandom(9 << 20),  # three 4 MiB reads
        "z/name with spaces": b"spaces",
    }
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    os.symlink(root / "top.txt", root / "a" / "link")
    os.mkfifo(root / "z" / "fifo")
    return {str(root / rel): data for rel, data in files.items()}


@pytest.mark.parametrize("algorithm", ["xxh3_128", "xxh3_64", "xxh64"])
async def test_digests_equal_xxhash_for_every_algorithm(store_path, tmp_path, algorithm):
    files = _tree(tmp_path / "t")
    async with parjobs.open_manager(store_path) as manager:
        handle = await manager.submit(HashJob(paths=[str(tmp_path / "t")], algorithm=algorithm))
        result = await handle.result()
        info = await handle.info()
    expected = {p: HASHERS[algorithm](d).hexdigest() for p, d in files.items()}
    assert result["digests"] == expected
    total = sum(len(d) for d in files.values())
    assert result["files"] == len(files) and result["bytes"] == total
    assert (result["skipped"], result["failed"], result["algorithm"]) == (2, 0, algorithm)
    assert info.status is JobStatus.COMPLETED
    assert info.progress.bytes_done == info.progress.bytes_total == total


async def test_symlinks_and_special_files_are_reported_as_skipped(store_path, tmp_path):
    _tree(tmp_path / "t")
    link = str(tmp_path / "t" / "a" / "link")
    async with parjobs.open_manager(store_path) as manager:
        # a symlink given directly is not followed either
        handle = await manager.submit(HashJob(paths=[str(tmp_path / "t"), link]))
        result = await handle.result()
        info = await handle.info()
    assert link not in result["digests"]
    assert result["skipped"] == 3
    assert info.progress.items_skipped == 3


async def test_pause_mid_way_then_resume_hashes_each_file_once(store_path, tmp_path, monkeypatch):
    root = tmp_path / "t"
    root.mkdir()
    n = 60
    for i in range(n):
        (root / f"f{i:02}").write_bytes(os.urandom(64 * 1024 + i))
    completed: collections.Counter[str] = collections.Counter()
    lock = threading.Lock()
    real = hash_mod.hash_file

    def slow_hash(path, **kwargs):
        time.sleep(0.01)
        digest = real(path, **kwargs)  # raises PauseRequested at its first check when pausing
        with lock:
            completed[os.fsdecode(path)] += 1
        return digest

    monkeypatch.setattr(hash_mod, "hash_file", slow_hash)
    async with parjobs.open_manager(store_path, workers=2) as manager:
        handle = await manager.submit(HashJob(paths=[str(root)]))
        with trio.fail_after(10):
            while sum(completed.values()) < n // 4:
                await trio.sleep(0.005)
        await manager.pause(handle.id)
        assert await handle.wait() is JobStatus.PAUSED
        paused = await handle.info()
        assert 0 < paused.done_items < n
        assert paused.done_bytes == sum(os.path.getsize(p) for p in completed), (
            "every finished file is checkpointed"
        )

        await manager.resume(handle.id)
        snaps = [s async for s in handle.progress()]
        result = await handle.result()
    total = sum(os.path.getsize(root / f"f{i:02}") for i in range(n))
    expected = {
        str(root / f"f{i:02}"): xxhash.xxh3_128((root / f"f{i:02}").read_bytes()).hexdigest()
        for i in range(n)
    }
    assert result["digests"] == expected, "digests of the first run come back on resume"
    assert (result["files"], result["bytes"]) == (n, total)
    assert set(completed.values()) == {1} and len(completed) == n, "each file hashed once"
    assert snaps[0].bytes_done >= paused.done_bytes
    assert snaps[-1].bytes_done == total and snaps[-1].items_done == n


async def test_output_file_is_xxhsum_format_and_replaces_digests(store_path, tmp_path):
    files = _tree(tmp_path / "t")
    odd = tmp_path / "t" / "new\nline"
    odd.write_bytes(b"odd")
    out = tmp_path / "out" / "sums.xxh128"
    out.parent.mkdir()
    out.write_text("old content\n")
    async with parjobs.open_manager(store_path) as manager:
        handle = await manager.submit(HashJob(paths=[str(tmp_path / "t")], output=str(out)))
        result = await handle.result()
    assert "digests" not in result and result["output"] == str(out)
    lines = out.read_bytes().splitlines(keepends=True)
    assert len(lines) == len(files) + 1
    assert os.listdir(out.parent) == ["sums.xxh128"], "no temporary file is left behind"
    for path, data in files.items():
        assert f"{xxhash.xxh3_128(data).hexdigest()}  {path}\n".encode() in lines
    escaped = str(tmp_path / "t").encode() + b"/new\\nline"
    assert b"\\" + xxhash.xxh3_128(b"odd").hexdigest().encode() + b"  " + escaped + b"\n" in lines
    # walk order: the files of a directory come before those of its subdirectories
    order = [line.split(b"  ", 1)[1].rstrip(b"\n") for line in lines]
    assert order.index(str(tmp_path / "t/top.txt").encode()) < order.index(
        str(tmp_path / "t/a/one.bin").encode()
    )


def test_checksum_line_formats():
    assert checksum_line("xxh3_128", b"a b", "00ff") == b"00ff  a b\n"
    assert checksum_line("xxh64", b"x", "12") == b"12  x\n"
    assert checksum_line("xxh3_64", b"x", "12") == b"XXH3 (x) = 12\n"
    assert checksum_line("xxh3_128", b"a\\b\nc", "0f") == b"\\0f  a\\\\b\\nc\n"


@pytest.mark.skipif(shutil.which("xxhsum") is None, reason="xxhsum is not installed")
@pytest.mark.parametrize("algorithm", ["xxh3_128", "xxh3_64", "xxh64"])
async def test_output_file_checks_with_xxhsum(store_path, tmp_path, algorithm):
    _tree(tmp_path / "t")
    out = tmp_path / "sums"
    async with parjobs.open_manager(store_path) as manager:
        handle = await manager.submit(
            HashJob(paths=[str(tmp_path / "t")], algorithm=algorithm, output=str(out))
        )
        await handle.result()
    check = subprocess.run(["xxhsum", "-c", str(out)], capture_output=True, timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.count(b": OK") == 6


async def test_vanished_file_fails_alone_with_a_clear_reason(store_path, tmp_path, monkeypatch):
    files = _tree(tmp_path / "t")
    victim = str(tmp_path / "t" / "a" / "one.bin")
    real = hash_mod.hash_file

    def vanishing(path, **kwargs):
        if os.fsdecode(path) == victim:
            os.unlink(path)  # deleted between the walk and the hash
        return real(path, **kwargs)

    monkeypatch.setattr(hash_mod, "hash_file", vanishing)
    missing = str(tmp_path / "not-there")
    async with parjobs.open_manager(store_path) as manager:
        handle = await manager.submit(HashJob(paths=[str(tmp_path / "t"), missing]))
        result = await handle.result()
        info = await handle.info()
        errors = sorted(await manager.errors(handle.id), key=lambda e: e.label)
    assert info.status is JobStatus.COMPLETED_WITH_ERRORS
    assert result["failed"] == 2
    assert sorted(result["digests"]) == sorted(p for p in files if p != victim)
    assert [e.label for e in errors] == sorted([victim, missing])
    assert all("No such file or directory" in e.message for e in errors)
    assert {e.error for e in errors} == {"FileNotFoundError", "OSError"}


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ({"paths": []}, "no paths"),
        ({"paths": ["x"], "algorithm": "md5"}, "md5"),
        ({"paths": ["x"], "output": "."}, "is a directory"),
        ({"paths": ["x"], "output": "/no/such/dir/sums"}, "does not exist"),
    ],
)
async def test_bad_specs_are_refused_on_submit(store_path, spec, match):
    async with parjobs.open_manager(store_path) as manager:
        with pytest.raises(parjobs.JobSpecError, match=match):
            await manager.submit(HashJob(**spec))
        assert await manager.list_jobs() == []
