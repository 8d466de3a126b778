"""A cluster worker whose destination is not the manager's (a share not mounted on its host:
an empty local directory at that path; a path map pointing elsewhere) fails each item,
naming its directory, and writes nothing there: the manager's probe (`parjobs.ops._probe`)
is missing there. It used to write the files there, and the job completed."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import trio
from PIL import Image

import parjobs
from parjobs import JobStatus
from parjobs.ops import CopyJob, ThumbnailJob
from parjobs.ops._probe import PROBE_NAME, place, probe_name

pytestmark = pytest.mark.xdist_group("dask")  # (the one Dask cluster: tests/cluster/conftest)

OTHER = b"0123456789abcdef"  # another job's name token


def probes(root: Path) -> list[str]:
    """Every probe (any job's) below ``root``, relative."""
    return sorted(
        str(p.relative_to(root))
        for p in root.rglob("*")
        if PROBE_NAME.fullmatch(os.fsencode(p.name))
    )


def tree_of(root: Path) -> dict[str, bytes | None]:
    return {
        str(p.relative_to(root)): p.read_bytes() if p.is_file() else None
        for p in sorted(root.rglob("*"))
    }


def make_src(tmp_path: Path, files: int = 6) -> Path:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    for i in range(files):
        (src / ("sub" if i % 2 else "") / f"f{i}").write_bytes(b"x" * (i + 1))
    return src


async def test_a_copy_whose_worker_destination_is_elsewhere_fails_each_item(
    tmp_path: Path, dask_client: Any
) -> None:
    """Mapped to an empty directory of the workers' (as an unmounted share leaves): every
    item fails naming it, nothing is written there, the job ends completed with errors;
    resumed once the share is mounted there (a symlink to the manager's directory, in place
    of the workers' own), it completes, and no probe is left. (The local run of the same
    job makes no probe.)"""
    src = make_src(tmp_path)
    dst, elsewhere = tmp_path / "dst", tmp_path / "elsewhere"
    dst.mkdir()
    elsewhere.mkdir()
    store = tmp_path / "c.sqlite"
    paths = {str(dst): str(elsewhere)}
    async with parjobs.open_manager(store, cluster=dask_client, cluster_path_map=paths) as manager:
        handle = await manager.submit(CopyJob(sources=[str(src)], destination=str(dst)))
        with trio.fail_after(60):
            status = await handle.wait()
        errors = await manager.errors(handle.id)
        result = await handle.result()
    assert os.listdir(elsewhere) == []  # nothing written where the workers saw dst
    assert status is JobStatus.COMPLETED_WITH_ERRORS
    assert result["failed"] == 8 and result["copied"] == 0  # 6 files, 2 directories
    assert {e.error for e in errors} == {"ForeignDirError"}
    assert all(str(elsewhere) in e.message and "not the manager's" in e.message for e in errors)
    assert probes(dst) == []  # removed at the job's end
    # The share mounted: the workers' path is the manager's directory now. (Their trees
    # of the old directory were not kept: it would have failed again.)
    elsewhere.rename(tmp_path / "hidden")
    elsewhere.symlink_to(dst)
    async with parjobs.open_manager(store, cluster=dask_client, cluster_path_map=paths) as manager:
        handle = await manager.resume(handle.id)
        with trio.fail_after(60):
            assert await handle.wait() is JobStatus.COMPLETED
    assert tree_of(dst / "src") == tree_of(src)
    assert probes(dst) == [] and os.listdir(tmp_path / "hidden") == []
    async with parjobs.open_manager(tmp_path / "local.sqlite") as manager:  # no cluster
        job = CopyJob(sources=[str(src)], destination=str(tmp_path / "local"))
        assert await (await manager.submit(job)).wait() is JobStatus.COMPLETED
    assert probes(tmp_path / "local") == [] and tree_of(tmp_path / "local") == tree_of(src)


async def test_thumbnails_whose_worker_output_is_elsewhere_fail_each_image(
    tmp_path: Path, dask_client: Any
) -> None:
    """A thumbnail job's output directory has the same check (each task, before it writes:
    thumbnails are written by path); resumed with the path map fixed, it completes."""
    src = tmp_path / "photos"
    src.mkdir()
    for i in range(3):
        Image.new("RGB", (40 + i, 30), (i * 60, 90, 200)).save(src / f"p{i}.png")
    out, elsewhere = tmp_path / "thumbs", tmp_path / "elsewhere"
    elsewhere.mkdir()
    store = tmp_path / "c.sqlite"
    paths = {str(out): str(elsewhere)}
    async with parjobs.open_manager(store, cluster=dask_client, cluster_path_map=paths) as manager:
        job = ThumbnailJob(paths=[str(src)], out_dir=str(out), size=32, format="png")
        handle = await manager.submit(job)
        with trio.fail_after(60):
            status = await handle.wait()
        errors = await manager.errors(handle.id)
    assert os.listdir(elsewhere) == []
    assert status is JobStatus.COMPLETED_WITH_ERRORS and len(errors) == 3
    assert all(e.error == "ForeignDirError" and str(elsewhere) in e.message for e in errors)
    assert probes(out) == []
    async with parjobs.open_manager(store, cluster=dask_client) as manager:
        handle = await manager.resume(handle.id)
        with trio.fail_after(60):
            assert await handle.wait() is JobStatus.COMPLETED
        assert (await handle.result())["made"] == 3
    assert len(list(out.rglob("*.png"))) == 3 and probes(out) == []


async def _paused_at_start(manager: Any, job: Any, root: Path) -> tuple[Any, list[str]]:
    """``job`` submitted and paused as soon as a new probe is in ``root`` (its run began);
    with the probes there then."""
    before = probes(root)
    handle = await manager.submit(job)
    with trio.fail_after(60):
        while probes(root) == before:
            await trio.sleep(0.005)
    await handle.pause()
    with trio.fail_after(60):
        assert await handle.wait() is JobStatus.PAUSED
    return handle, probes(root)


async def test_a_cancel_and_an_undo_remove_the_probe_and_only_it(
    tmp_path: Path, dask_client: Any
) -> None:
    """A paused job keeps its probe (its workers check it when it resumes); a cancel and
    an undo end the job and remove it. Another job's probe and a user's files named like
    one are never touched. (A copy into a new directory is planned from its parent, the
    workers' root: the probe is there.)"""
    src = make_src(tmp_path, files=200)
    dst = tmp_path / "dst"
    dst.mkdir()
    theirs = [
        dst / os.fsdecode(probe_name(OTHER)),  # another job's (running elsewhere)
        dst / "notes.parjobs-probe",
        dst / ".parjobs.probe",
    ]
    place(dst, OTHER)
    for path in theirs[1:]:
        path.write_bytes(b"the user's")
    before = {p.name: p.read_bytes() for p in theirs}
    async with parjobs.open_manager(tmp_path / "c.sqlite", cluster=dask_client) as manager:
        for end in ("cancel", "undo"):
            job = CopyJob(sources=[str(src)], destination=str(dst / end))
            handle, paused = await _paused_at_start(manager, job, dst)
            assert len(paused) == 2  # theirs, and the job's, kept while paused
            if end == "cancel":
                await handle.cancel()
            else:
                undo = await manager.undo(handle.id)
                with trio.fail_after(60):
                    assert await undo.wait() is JobStatus.COMPLETED
            with trio.fail_after(60):
                assert await handle.wait() is JobStatus.CANCELLED
            assert probes(dst) == [theirs[0].name]
    assert {p.name: p.read_bytes() for p in theirs} == before
