"""Security: symlinks planted in a destination mid-job, planted partials and temporaries,
unpredictable temporary names. (Stored specs as untrusted input: test_rel_inputs.py.)"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio
from rel_helpers import MIB, photo, read, resume_to_end, snapshot, temp_names, write

import parjobs
from parjobs import JobStatus
from parjobs.ops import _smallfiles as smallfiles_mod
from parjobs.ops import _transfer as transfer_mod
from parjobs.ops._copy import CopyJob
from parjobs.ops._copyfile import CopyOptions, copy_file
from parjobs.ops._hash import HashJob, output_tmp
from parjobs.ops._imaging import cache_thumbnail_path
from parjobs.ops._move import MoveJob
from parjobs.ops._partials import partial_names
from parjobs.ops._thumbnail import ThumbnailJob, thumbnail_id


@pytest.fixture
def shm(other_fs: Path) -> Path:
    """A directory on another filesystem than tmp_path (/dev/shm)."""
    return other_fs


def tree(root: Path, dirs: int = 4, files: int = 30) -> None:
    rng = random.Random(4)
    for d in range(dirs):
        (root / f"d{d}" / "sub").mkdir(parents=True)
        for f in range(files):
            write(root / f"d{d}" / f"f{f:02}", rng.randbytes(rng.randint(0, 20_000)))
            write(root / f"d{d}" / "sub" / f"g{f:02}", rng.randbytes(rng.randint(0, 2_000)))


@pytest.mark.parametrize("kind", ["copy", "copy-in-groups", "move-across-filesystems"])
async def test_symlink_planted_in_the_destination_mid_job_is_never_followed(
    tmp_path: Path, shm: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """After the first files are written, a symlink to an outside directory is planted where
    the job will create a destination subdirectory (d3/sub, reached last by the depth-first
    walk). The job goes on, then is resumed: nothing ever appears outside; the items that met
    the symlink fail, by name; for a move they stay whole at the source."""
    src, outside = tmp_path / "src", tmp_path / "outside"
    tree(src)
    outside.mkdir()
    dst = (shm if kind.startswith("move") else tmp_path) / "dst"
    expected = snapshot(src)
    seam = "copy_small_files" if kind == "copy-in-groups" else "copy_file"
    if seam == "copy_file":
        monkeypatch.setattr(smallfiles_mod, "fastcopy", None)
    owner = smallfiles_mod if seam == "copy_small_files" else transfer_mod  # where it is looked up
    real = getattr(owner, seam)
    calls = [0]

    def planting(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] == (1 if seam == "copy_small_files" else 5):
            (dst / "src" / "d3").mkdir(parents=True, exist_ok=True)
            os.symlink(outside, dst / "src" / "d3" / "sub")
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, seam, planting)
    store = str(tmp_path / "jobs.sqlite")
    cls = MoveJob if kind.startswith("move") else CopyJob
    async with parjobs.open_manager(store, workers=1) as m:
        handle = await m.submit(cls(into=True, sources=[str(src)], destination=str(dst)))
        with trio.fail_after(30):
            status = await handle.wait()
        errors = await m.errors(handle.id)
    assert os.listdir(outside) == []
    assert status is JobStatus.COMPLETED_WITH_ERRORS
    assert {e.label for e in errors} >= {str(src / "d3" / "sub" / "g00")}
    assert all("not a directory" in e.message for e in errors), errors
    info = await resume_to_end(store)  # the symlink is still there
    assert info.status is JobStatus.COMPLETED_WITH_ERRORS
    assert os.listdir(outside) == []
    if kind.startswith("move"):  # what could not be moved stayed at the source, whole
        left = snapshot(src / "d3" / "sub")
        assert len(left) == 30
        assert all(v == expected[b"d3/sub/" + k] for k, v in left.items())
    assert temp_names(dst) == []


async def test_symlink_planted_in_the_thumbnail_cache_is_never_followed(tmp_path: Path) -> None:
    src, out, outside = tmp_path / "src", tmp_path / "thumbs", tmp_path / "outside"
    src.mkdir()
    outside.mkdir()
    photo((320, 240), 1).save(src / "a.jpg")
    shard = Path(cache_thumbnail_path(out, thumbnail_id(str(src / "a.jpg")), 128, "webp")).parent
    shard.parent.mkdir(parents=True)
    os.symlink(outside, shard)
    async with parjobs.open_manager(str(tmp_path / "jobs.sqlite")) as m:
        handle = await m.submit(ThumbnailJob(paths=[str(src)], out_dir=str(out), size=128))
        with trio.fail_after(30):
            await handle.wait()
    assert os.listdir(outside) == []


async def test_hash_output_temporary_planted_as_a_hard_link_is_not_written_through(
    tmp_path: Path,
) -> None:
    """A file planted at a name like the checksum file's temporary (a hard link to a victim,
    named with the job's id and with a plausible token) is neither written through nor
    removed: temporaries are random, created O_EXCL, and cleanup removes only names carrying
    the job's own token."""
    src = tmp_path / "src"
    tree(src, dirs=1, files=3)
    victim = tmp_path / "victim"
    write(victim, b"precious")
    output = tmp_path / "sums.xxh"
    store = str(tmp_path / "jobs.sqlite")
    async with parjobs.open_manager(store) as m:
        handle = await m.submit(HashJob(paths=[str(src)], output=str(output)), start=False)
        planted = [
            str(output) + f".parjobs-{handle.id}.tmp",  # the old, predictable name
            os.fsdecode(output_tmp(str(output), "0123456789abcdef")),
        ]
        for name in planted:
            os.link(victim, name)
        await m.resume(handle.id)
        assert await handle.wait() is JobStatus.COMPLETED
    assert read(victim) == b"precious"
    assert all(os.path.samefile(name, victim) for name in planted)
    assert read(output).count(b"\n") == 6


def test_planted_partials_are_never_trusted_or_followed(tmp_path: Path) -> None:
    """At the deterministic partial name of a resumable copy: a symlink to an outside file, a
    hard link to one, and a forged partial (right meta, wrong bytes). None is followed,
    written through or reused; the copy is exact."""
    data = random.Random(9).randbytes(3 * MIB)
    src = tmp_path / "src.bin"
    write(src, data)
    st = os.stat(src)
    partial, meta = partial_names(b"dst.bin")
    for plant in ("symlink", "hardlink", "forged"):
        d = tmp_path / plant
        d.mkdir()
        outside = tmp_path / f"outside-{plant}"
        write(outside, b"keep me")
        if plant == "symlink":
            os.symlink(outside, os.fsencode(d) + b"/" + partial)
        elif plant == "hardlink":
            os.link(outside, os.fsencode(d) + b"/" + partial)
        else:
            write(os.fsencode(d) + b"/" + partial, b"\0" * MIB)
        meta_text = f'{{"v": 1, "size": {st.st_size}, "mtime_ns": {st.st_mtime_ns}}}'
        write(os.fsencode(d) + b"/" + meta, meta_text.encode())
        result = copy_file(
            src,
            d / "dst.bin",
            CopyOptions(chunk_size=MIB),
        )
        assert result.bytes_reused == 0, plant
        assert read(d / "dst.bin") == data
        assert read(outside) == b"keep me"
        assert temp_names(d) == []


TOKENS = """
from parjobs.ops._partials import tmp_name
import os
names = [tmp_name(b"x") for _ in range(3)]
pid = os.fork()
if pid == 0:
    print("child", tmp_name(b"x").decode(), flush=True)
    os._exit(0)
os.waitpid(pid, 0)
print("parent", " ".join(n.decode() for n in names + [tmp_name(b"x")]), flush=True)
"""


def test_one_shot_temporary_names_are_unpredictable() -> None:
    """Names of non-resumable temporaries differ across processes and across a fork (the
    token generator is seeded from os.urandom and reseeded in forked children)."""
    runs = [
        subprocess.run([sys.executable, "-c", TOKENS], capture_output=True, text=True, check=True)
        for _ in range(2)
    ]
    names: list[str] = []
    for run in runs:
        lines = dict(line.split(" ", 1) for line in run.stdout.splitlines())
        names += [*lines["parent"].split(), lines["child"]]
    assert len(set(names)) == len(names) == 10
    for name in names:
        token = name.split(".")[2]
        assert len(token) == 16 and int(token, 16) >= 0
