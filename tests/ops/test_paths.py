"""Where jobs may write, across operations (issue 12): a destination on a kernel
pseudo-filesystem is refused before any job exists, and a destination directory swapped for
a symlink between two runs of a job is refused on resume, nothing written there.

Copy and move have their own tests in test_copy.py (bind mounts, kill -9 then swap); these
are the siblings: thumbnails' ``out_dir`` and the directory of hash's ``--output``.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import trio
from _forkcli import run as forked_run
from _trees import snapshot, write
from PIL import Image

import parjobs
from parjobs import JobStatus
from parjobs.ops._hash import HashJob
from parjobs.ops._thumbnail import ThumbnailJob


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return forked_run(list(args), module="parjobs", cwd=cwd)


def test_outputs_on_pseudo_filesystems_are_refused_up_front(tmp_path: Path) -> None:
    """``thumbnails --out`` and ``hash -o`` under /proc or /sys: exit 2, one line, no job
    (they used to create a job whose every item failed)."""
    (tmp_path / "src").mkdir()
    Image.new("RGB", (32, 32)).save(tmp_path / "src" / "a.jpg")
    store = str(tmp_path / "jobs.sqlite")
    cases = [
        ["thumbnails", "src", "--out", "/proc/nope"],
        ["thumbnails", "src", "--out", "/proc/self/x"],
        ["thumbnails", "src", "--out", "/sys/x"],
        ["thumbnails", "src", "--out", "src/a.jpg/x"],
        ["hash", "src", "-o", "/proc/self/x"],
        ["hash", "src", "-o", "/sys/x"],
    ]
    for args in cases:
        proc = cli("--store", store, *args, "--plain", cwd=tmp_path)
        assert proc.returncode == 2, (args, proc.stdout + proc.stderr)
        assert proc.stderr.startswith("parjobs: error: ") and proc.stderr.count("\n") == 1
    assert cli("--store", store, "jobs", cwd=tmp_path).stdout.strip() == "no jobs"


def swap_for_symlink(directory: Path, elsewhere: Path) -> None:
    os.rename(directory, directory.with_name(directory.name + "-old"))
    os.symlink(elsewhere, directory)


async def test_thumbnails_refuse_an_out_dir_swapped_for_a_symlink(
    store_path: str, tmp_path: Path
) -> None:
    src, out, etc = tmp_path / "src", tmp_path / "thumbs", tmp_path / "etc"
    src.mkdir()
    for i in range(3):
        Image.new("RGB", (64, 64), (i * 40, 0, 0)).save(src / f"p{i}.jpg")
    write(src / "broken.jpg", (src / "p0.jpg").read_bytes()[:100])  # fails: resumable
    etc.mkdir()
    write(etc / "passwd", b"root:x:0:0")
    job = ThumbnailJob(paths=[str(src)], out_dir=str(out), size=32)
    await resume_refuses_a_swapped_directory(store_path, job, out, etc)


async def test_hash_refuses_an_output_directory_swapped_for_a_symlink(
    store_path: str, tmp_path: Path
) -> None:
    src, outdir, etc = tmp_path / "src", tmp_path / "sums", tmp_path / "etc"
    src.mkdir()
    write(src / "a.txt", b"a")
    outdir.mkdir()
    etc.mkdir()
    write(etc / "passwd", b"root:x:0:0")
    job = HashJob(paths=[str(src), str(tmp_path / "missing")], output=str(outdir / "SUMS"))
    await resume_refuses_a_swapped_directory(store_path, job, outdir, etc)


async def resume_refuses_a_swapped_directory(
    store_path: str, job: parjobs.Job, directory: Path, etc: Path
) -> None:
    """Run ``job`` (it must end with a failed item, so it can be resumed), swap ``directory``
    for a symlink to ``etc``, resume: the job fails naming the swap, ``etc`` is untouched."""
    async with parjobs.open_manager(store_path) as m:
        handle = await m.submit(job)
        assert await handle.wait() is JobStatus.COMPLETED_WITH_ERRORS
        swap_for_symlink(directory, etc)
        before = snapshot(etc)
        await m.resume(handle.id)
        with trio.fail_after(30):
            assert await handle.wait() is JobStatus.FAILED
        error = (await m.get(handle.id)).error or ""
    assert "not the directory earlier runs of this job wrote into" in error
    assert snapshot(etc) == before
