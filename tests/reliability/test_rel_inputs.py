"""Bad inputs through the API and the CLI: a clear error naming the problem, nothing touched.

API: the exception type and message; CLI (``python -m parjobs.cli``): exit code 2 and one line
on stderr. In both, the directory tree is snapshotted before and after: identical. Inputs that
are not errors of the request but of one item (a FIFO among the sources, a symlink loop, a
corrupt image) are reported on that item, as the design says, and never block the job.
"""

from __future__ import annotations

import io
import json
import os
import socket
import sqlite3
import stat
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import pytest
import trio
from _forkcli import run as forked_run
from PIL import Image
from rel_helpers import MIB, photo, read, resume_to_end, snapshot, temp_names, write

import parjobs
from parjobs import JobStatus
from parjobs.ops import _transfer as transfer_mod
from parjobs.ops._copy import CopyJob
from parjobs.ops._delete import DeleteJob
from parjobs.ops._duplicates import DuplicatesJob
from parjobs.ops._hash import HashJob
from parjobs.ops._move import MoveJob
from parjobs.ops._thumbnail import ThumbnailJob

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _jobs import CountJob


@pytest.fixture
def area(tmp_path: Path) -> Path:
    """src/ (a file, a subdirectory) and a plain file, inside tmp_path/area."""
    root = tmp_path / "area"
    (root / "src" / "inner").mkdir(parents=True)
    write(root / "src" / "a.txt", b"a")
    write(root / "src" / "inner" / "b.txt", b"b")
    write(root / "file.txt", b"a file")
    return root


def cases(root: Path) -> dict[str, tuple[list[str], str, str]]:
    """name -> (sources, destination, expected message) for copy and move."""
    src = str(root / "src")
    return {
        "missing-source": ([str(root / "nope")], str(root / "dst"), "does not exist"),
        "dest-inside-source": ([src], str(root / "src" / "inner"), "is inside source"),
        "source-is-dest": ([src], src, "is the destination"),
        "dest-is-a-file": ([src], str(root / "file.txt"), "exists and is not a directory"),
        "no-sources": ([], str(root / "dst"), "no sources given"),
        "dest-parent-missing": ([src], str(root / "x" / "y"), "parent directory"),
        "same-name-twice": ([src, str(root / "src" / "inner" / ".." / ".." / "src")], "", ""),
    }


@pytest.mark.parametrize("kind", ["copy", "move"])
@pytest.mark.parametrize(
    "case",
    [
        "missing-source",
        "dest-inside-source",
        "source-is-dest",
        "dest-is-a-file",
        "no-sources",
        "dest-parent-missing",
    ],
)
async def test_api_refuses_bad_paths_and_touches_nothing(
    area: Path, tmp_path: Path, kind: str, case: str
) -> None:
    sources, dest, message = cases(area)[case]
    before = snapshot(area)
    cls = CopyJob if kind == "copy" else MoveJob
    async with parjobs.open_manager(str(tmp_path / "jobs.sqlite")) as m:
        with pytest.raises(parjobs.JobSpecError, match=message) as caught:
            await m.submit(cls(into=True, sources=sources, destination=dest))
        assert await m.list_jobs() == []
    assert str(caught.value).startswith(f"{kind}: ")
    assert snapshot(area) == before


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"priority": 2**63}, "priority must fit in 64 bits"),
        ({"priority": -(2**70)}, "priority must fit in 64 bits"),
        ({"timeout": float("nan")}, "timeout must be > 0 seconds, got nan"),
        ({"timeout": -1.0}, "timeout must be > 0 seconds"),
    ],
)
async def test_api_refuses_priorities_and_timeouts_out_of_range(
    tmp_path: Path, options: dict[str, Any], message: str
) -> None:
    """A clear ValueError, not SQLite's OverflowError or a NaN timer; nothing stored."""
    log = tmp_path / "log"
    async with parjobs.open_manager(str(tmp_path / "jobs.sqlite")) as m:
        with pytest.raises(ValueError, match=message):
            await m.submit(CountJob(n=1, log=str(log)), **options)
        assert await m.list_jobs() == []
        if "priority" in options:
            handle = await m.submit(CountJob(n=1, log=str(log)), start=False)
            with pytest.raises(ValueError, match=message):
                await m.set_priority(handle.id, options["priority"])
    assert not log.exists()


@pytest.mark.parametrize("workers", [0, -1])
async def test_api_refuses_worker_counts_below_one(tmp_path: Path, workers: int) -> None:
    with pytest.raises(ValueError, match=f"workers must be >= 1, got {workers}"):
        async with parjobs.open_manager(str(tmp_path / "jobs.sqlite"), workers=workers):
            pass
    with pytest.raises(ValueError, match="at least 1 thread"):
        async with parjobs.open_manager(str(tmp_path / "jobs.sqlite"), lanes={"io": workers}):
            pass


async def test_special_files_as_sources_are_skipped_never_opened(tmp_path: Path) -> None:
    """A FIFO (opening it would block), a socket and /dev/null named as sources: accepted,
    each skipped with a reason naming its kind, nothing created for them, no hang."""
    fifo, sock_path = tmp_path / "fifo", tmp_path / "sock"
    os.mkfifo(fifo)
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(sock_path))
    try:
        dst = tmp_path / "dst"
        sources = [str(fifo), str(sock_path), "/dev/null"]
        async with parjobs.open_manager(str(tmp_path / "jobs.sqlite")) as m:
            handle = await m.submit(CopyJob(into=True, sources=sources, destination=str(dst)))
            with trio.fail_after(10):
                result = await handle.result()
            hashed = await m.submit(HashJob(paths=sources))
            with trio.fail_after(10):
                hash_result = await hashed.result()
        assert result["skipped_reasons"] == {
            "FIFO not copied": 1,
            "socket not copied": 1,
            "character device not copied": 1,
        }
        assert (result["copied"], result["failed"]) == (0, 0)
        assert os.listdir(dst) == []
        assert (hash_result["files"], hash_result["skipped"]) == (0, 3)
    finally:
        sock.close()


async def test_symlink_loop_and_broken_symlink(tmp_path: Path) -> None:
    """Not followed (default): copied as links. Followed (-L): a directory loop is one failed
    item with a reason, unresolvable links are copied as links; the job never spins."""
    src = tmp_path / "src"
    src.mkdir()
    os.symlink("b", src / "a")
    os.symlink("a", src / "b")
    os.symlink("nowhere", src / "broken")
    (src / "dir").mkdir()
    os.symlink("..", src / "dir" / "up")
    write(src / "file", b"x")
    store = str(tmp_path / "jobs.sqlite")
    async with parjobs.open_manager(store) as m:
        handle = await m.submit(
            CopyJob(into=True, sources=[str(src)], destination=str(tmp_path / "d1"))
        )
        with trio.fail_after(10):
            assert (await handle.result())["failed"] == 0
        assert snapshot(tmp_path / "d1" / "src") == snapshot(src)
        followed = CopyJob(into=True, sources=[str(src)], destination=str(tmp_path / "d2"))
        followed.follow_symlinks = True
        handle = await m.submit(followed)
        with trio.fail_after(10):
            assert await handle.wait() is JobStatus.COMPLETED_WITH_ERRORS
        errors = {e.label: e.message for e in await m.errors(handle.id)}
    # a directory loop is one failed item; links that cannot be resolved (a <-> b, broken)
    # are kept as links, as a broken link is
    assert errors == {str(src / "dir" / "up"): "cannot read: symlink loop"}
    assert os.readlink(tmp_path / "d2" / "src" / "broken") == "nowhere"
    assert os.readlink(tmp_path / "d2" / "src" / "a") == "b"


async def test_awkward_names_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Non-UTF-8 bytes, a newline, and names of exactly 255 bytes (a large one too, whose
    resumable partial needs a shortened name): copied byte-identical, across a pause."""
    monkeypatch.setattr(transfer_mod, "CHUNK_SIZE", 256 * 1024)
    src = tmp_path / "src"
    src.mkdir()
    raw = os.fsencode(src)
    write(raw + b"/caf\xe9\xff.bin", b"latin-1")
    write(raw + b"/two\nlines.txt", b"newline")
    write(raw + b"/" + b"l" * 255, b"long")
    write(raw + b"/" + "é".encode() * 127 + b"x", os.urandom(3 * MIB))  # 255 bytes
    store, dst = str(tmp_path / "jobs.sqlite"), tmp_path / "dst"
    async with parjobs.open_manager(store, workers=1) as m:
        handle = await m.submit(CopyJob(into=True, sources=[str(src)], destination=str(dst)))
        await m.pause(handle.id)
        await handle.wait()
    final = await resume_to_end(store)
    assert final.status is JobStatus.COMPLETED
    assert snapshot(dst / "src") == snapshot(src)
    assert temp_names(dst) == []


# -- stored jobs are untrusted -----------------------------------------------------------


async def stored_job(tmp_path: Path) -> tuple[str, str, Path]:
    """A copy job paused before it ran, plus a tree it would copy."""
    src = tmp_path / "src"
    (src / "inner").mkdir(parents=True)
    write(src / "a.txt", b"a")
    store = str(tmp_path / "jobs.sqlite")
    async with parjobs.open_manager(store) as m:
        job = CopyJob(into=True, sources=[str(src)], destination=str(tmp_path / "dst"))
        handle = await m.submit(job, start=False)
    return store, handle.id, src


def edit(store: str, job_id: str, **columns: Any) -> None:
    con = sqlite3.connect(store)
    with con:
        for column, value in columns.items():
            con.execute(f"UPDATE jobs SET {column}=? WHERE id=?", (value, job_id))
    con.close()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"type": "no-such-type"}, "unknown job type 'no-such-type'"),
        ({"version": 99}, "stored by version 99, newer than"),
        ({"spec": "{not json"}, "corrupt JSON"),
        ({"spec": "[1, 2]"}, "spec must be an object"),
        ({"spec": '{"sources": "abc", "destination": "d"}'}, "copy.sources: expected a list"),
        ({"spec": '{"sources": ["{src}"], "destination": 42}'}, "copy.destination: expected a"),
        ({"spec": '{"sources": ["{src}"], "destination": "{src}2", "rm": 1}'}, "unknown field"),
        (
            {"spec": '{"sources": ["{src}"], "destination": "{src}/inner"}'},
            "is inside source",
        ),
        ({"spec": '{"sources": ["{src}"], "destination": "/no/such/dir/d"}'}, "parent dir"),
        (
            {"spec": '{"sources": ["{src}"], "destination": "{src}2", "on_conflict": "nuke"}'},
            "one of",
        ),
        ({"spec": '{"sources": ["src"], "destination": "{src}2"}'}, "'src' is relative"),
    ],
    ids=[
        "unknown-type",
        "newer-version",
        "corrupt-json",
        "not-an-object",
        "wrong-type-list",
        "wrong-type-str",
        "unknown-field",
        "points-inside-source",
        "points-nowhere",
        "bad-literal",
        "relative-path",
    ],
)
async def test_edited_stored_spec_fails_that_job_alone(
    tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    """The stored job is validated before it runs: it fails alone with a message naming the
    problem; nothing is touched; another job of the same manager completes."""
    store, job_id, src = await stored_job(tmp_path)
    change = {
        k: v.replace("{src}", str(src)) if isinstance(v, str) else v for k, v in change.items()
    }
    edit(store, job_id, **change)
    before = snapshot(tmp_path / "src")
    async with parjobs.open_manager(store) as m:
        other = await m.submit(CountJob(n=20, log=str(tmp_path / "log")))
        await m.resume(job_id)
        with trio.fail_after(10):
            assert await m.wait(job_id) is JobStatus.FAILED
            assert await other.wait() is JobStatus.COMPLETED
        info = await m.get(job_id)
    assert message in (info.error or ""), info.error
    assert snapshot(tmp_path / "src") == before
    assert not (tmp_path / "dst").exists() and not (src / "inner" / "src").exists()


@pytest.mark.parametrize("trash", [False, True])
async def test_relative_paths_are_stored_absolute_and_a_resume_elsewhere_keeps_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, trash: bool
) -> None:
    """A delete of ``x`` submitted through the API in ``a/`` and resumed in ``b/`` (a resume
    from another shell, a worker or a server with another working directory): it stored
    ``x`` as given, so the resume deleted ``b/x``, a tree nobody named, and left ``a/x``.
    Paths are stored absolute now, as meant by the submitter; copy, move, hash and dupes
    store theirs so too (a hash's lines keep the names as given)."""
    for side in ("a", "b"):
        (tmp_path / side / "x").mkdir(parents=True)
        write(tmp_path / side / "x" / "f", side.encode())
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))  # (the trash: tmp_path's)
    store = str(tmp_path / "jobs.sqlite")
    monkeypatch.chdir(tmp_path / "a")
    async with parjobs.open_manager(store) as m:
        handle = await m.submit(DeleteJob(paths=["x"], trash=trash), start=False)
        hashed = await m.submit(HashJob(paths=["x"], output="sums"))
        assert await hashed.wait() is JobStatus.COMPLETED
    assert (tmp_path / "a" / "sums").read_bytes().endswith(b"  x/f\n")
    monkeypatch.chdir(tmp_path / "b")
    async with parjobs.open_manager(store) as m:
        await m.resume(handle.id)
        with trio.fail_after(10):
            assert await m.wait(handle.id) is JobStatus.COMPLETED
    assert read(tmp_path / "b" / "x" / "f") == b"b"
    assert not (tmp_path / "a" / "x").exists()


async def test_copy_move_hash_and_dupes_given_relative_paths_resume_where_they_were_meant(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """f4935c2 joins copy's, move's, hash's and dupes' relative paths to the submitter's
    directory too, but its test resumed only a delete elsewhere (the hash ran where it was
    submitted): without the join, each of these, submitted in ``a/`` and resumed in ``b/``,
    copied and moved ``b``'s files (a move deleting ``b/m``, a tree nobody named), wrote
    ``b/sums`` of ``b``'s files and grouped ``b``'s files. (~0.2 s)"""
    for side in ("a", "b"):
        (tmp_path / side / "x").mkdir(parents=True)
        write(tmp_path / side / "x" / "f", side.encode() * 10)
        write(tmp_path / side / "x" / "g", side.encode() * 10)
        write(tmp_path / side / "m", side.encode())
    store = str(tmp_path / "jobs.sqlite")
    monkeypatch.chdir(tmp_path / "a")
    jobs: list[parjobs.Job] = [
        CopyJob(sources=["x"], destination="out"),
        MoveJob(sources=["m"], destination="moved"),
        HashJob(paths=["x"], output="sums"),
        DuplicatesJob(paths=["x"], min_size=1),
    ]
    async with parjobs.open_manager(store) as m:
        ids = [(await m.submit(job, start=False)).id for job in jobs]
    monkeypatch.chdir(tmp_path / "b")
    async with parjobs.open_manager(store) as m:
        for job_id in ids:
            await m.resume(job_id)
            with trio.fail_after(10):
                assert await m.wait(job_id) is JobStatus.COMPLETED, (await m.get(job_id)).error
        groups = (await m.get(ids[3])).result["groups"]
        a, b = tmp_path / "a", tmp_path / "b"
        meant = HashJob(paths=[str(a / "x")], names=["x"], output=str(tmp_path / "meant"))
        assert await (await m.submit(meant)).wait() is JobStatus.COMPLETED
    assert read(a / "out" / "f") == b"a" * 10 and not (b / "out").exists()
    assert read(a / "moved") == b"a" and read(b / "m") == b"b" and not (b / "moved").exists()
    assert read(a / "sums") == read(tmp_path / "meant") and not (b / "sums").exists()
    paths = [p for group in groups for p in group["paths"]]
    assert sorted(paths) == [str(a / "x" / "f"), str(a / "x" / "g")]


@pytest.mark.parametrize("relative", ["path", "out_dir"])
async def test_a_stored_relative_thumbnail_path_fails_that_job_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, relative: str
) -> None:
    """A thumbnails spec holding a relative path or ``out_dir`` (stored so by an older
    parjobs, or edited): the job made them absolute whenever it was built, loading too, so
    the resume read the images and wrote the thumbnails where the resuming process stood.
    It fails alone now, naming the path, as the other jobs' (and nothing is written)."""
    for side in ("a", "b"):
        (tmp_path / side / "pics").mkdir(parents=True)
        photo((64, 48), 1).save(tmp_path / side / "pics" / "p.jpg")
    store = str(tmp_path / "jobs.sqlite")
    monkeypatch.chdir(tmp_path / "a")
    async with parjobs.open_manager(store) as m:
        handle = await m.submit(ThumbnailJob(paths=["pics"], out_dir="thumbs"), start=False)
        spec = json.loads((await m.get(handle.id)).spec)
    assert spec["paths"] == [str(tmp_path / "a" / "pics")]  # (absolute on submission)
    assert spec["out_dir"] == str(tmp_path / "a" / "thumbs")
    if relative == "path":
        spec["paths"] = ["pics"]
    else:
        spec["out_dir"] = "thumbs"
    edit(store, handle.id, spec=json.dumps(spec))
    monkeypatch.chdir(tmp_path / "b")
    async with parjobs.open_manager(store) as m:
        await m.resume(handle.id)
        with trio.fail_after(10):
            assert await m.wait(handle.id) is JobStatus.FAILED
        error = (await m.get(handle.id)).error or ""
    name = "pics" if relative == "path" else "thumbs"
    assert f"stored path {name!r} is relative" in error, error
    assert sorted(os.listdir(tmp_path / "b")) == ["pics"]
    assert not (tmp_path / "a" / "thumbs").exists()


async def test_deeply_nested_stored_spec_fails_that_job_alone(tmp_path: Path) -> None:
    store, job_id, _ = await stored_job(tmp_path)
    edit(store, job_id, spec="[" * 100_000 + "]" * 100_000)
    async with parjobs.open_manager(store) as m:
        await m.resume(job_id)
        with trio.fail_after(10):
            assert await m.wait(job_id) is JobStatus.FAILED


async def test_stored_state_of_the_wrong_type_fails_that_job_alone(tmp_path: Path) -> None:
    store, job_id, _ = await stored_job(tmp_path)
    edit(store, job_id, state="[1, 2]")
    async with parjobs.open_manager(store) as m:
        await m.resume(job_id)
        with trio.fail_after(10):
            assert await m.wait(job_id) is JobStatus.FAILED


async def test_stored_completed_ranges_out_of_order_fail_that_job_alone(tmp_path: Path) -> None:
    store, job_id, _ = await stored_job(tmp_path)
    con = sqlite3.connect(store)
    with con:
        con.execute("INSERT INTO completed VALUES (?, 'default', 5, 2)", (job_id,))
    con.close()
    async with parjobs.open_manager(store) as m:
        await m.resume(job_id)
        with trio.fail_after(10):
            assert await m.wait(job_id) is JobStatus.FAILED
        assert "bad index range [5, 2)" in ((await m.get(job_id)).error or "")


# -- images --------------------------------------------------------------------------------


def png_bomb(path: Path, side: int = 100_000) -> None:
    """A valid tiny PNG whose header claims side x side pixels (10 gigapixels)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * 1000)
    write(
        path,
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""),
    )


async def test_decompression_bomb_and_truncated_jpeg_fail_alone(tmp_path: Path) -> None:
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    png_bomb(src / "bomb.png")
    buf = io.BytesIO()
    photo((400, 300), 1).save(buf, "JPEG", quality=90)
    write(src / "truncated.jpg", buf.getvalue()[: len(buf.getvalue()) // 2])
    photo((400, 300), 2).save(src / "good.jpg", quality=90)
    async with parjobs.open_manager(str(tmp_path / "jobs.sqlite")) as m:
        handle = await m.submit(ThumbnailJob(paths=[str(src)], out_dir=str(out)))
        with trio.fail_after(30):
            assert await handle.wait() is JobStatus.COMPLETED_WITH_ERRORS
        errors = {
            os.path.basename(e.label): (e.error, e.message) for e in await m.errors(handle.id)
        }
        result = (await handle.info()).result
    assert errors["bomb.png"][0] == "ImageTooLargeError"
    assert "bomb.png" in errors["bomb.png"][1] and "pixels" in errors["bomb.png"][1]
    assert errors["truncated.jpg"][0] == "ImageError"
    assert "truncated" in errors["truncated.jpg"][1]
    assert (result["made"], result["failed"]) == (1, 2)
    thumbs = [p for p in out.rglob("*") if p.is_file()]
    assert len(thumbs) == 1 and temp_names(out) == []
    with Image.open(thumbs[0]) as im:
        im.load()


# -- the command line ----------------------------------------------------------------------


def cli(*args: str, store: Path) -> subprocess.CompletedProcess[str]:
    return forked_run([*args, "--store", str(store)])


CLI_CASES = {
    "copy-missing-source": (["copy", "{r}/nope", "{r}/dst"], "no such file or directory"),
    "copy-into-itself": (["copy", "{r}/src", "{r}/src/inner"], "is inside source"),
    "copy-onto-itself": (["copy", "{r}/src", "{r}/src"], "is the destination"),
    "copy-onto-a-file": (["copy", "{r}/src", "{r}/file.txt"], "cannot replace non-directory"),
    "copy-no-sources": (["copy", "{r}/dst"], "required"),
    "copy-zero-workers": (["copy", "-w", "0", "{r}/src", "{r}/dst"], "between 1 and 1024"),
    "copy-negative-workers": (["copy", "-w=-2", "{r}/src", "{r}/dst"], "between 1 and 1024"),
    "copy-huge-workers": (
        ["copy", "-w", "99999999999999999999999", "{r}/src", "{r}/dst"],
        "between 1 and 1024",
    ),
    "hash-1025-workers": (["hash", "-w", "1025", "{r}/src"], "between 1 and 1024"),
    "hash-5000-digit-workers": (["hash", "-w", "9" * 5000, "{r}/src"], "expected an integer"),
    "move-workers-not-a-number": (["move", "-w", "1e3", "{r}/src", "{r}/d"], "expected an int"),
    "delete-workers-float": (["delete", "-w", "2.5", "{r}/src"], "expected an integer"),
    "resume-huge-workers": (["resume", "--all", "-w", "100000"], "between 1 and 1024"),
    "demo-huge-workers": (["demo", "-w", "2000"], "between 1 and 1024"),
    "dupes-min-size-inf": (["dupes", "--min-size", "inf", "{r}/src"], "expected a size"),
    "dupes-min-size-1e400": (["dupes", "--min-size", "1e400", "{r}/src"], "expected a size"),
    "dupes-min-size-nan": (["dupes", "--min-size", "nan", "{r}/src"], "expected a size"),
    "dupes-min-size-negative": (["dupes", "--min-size", "-1", "{r}/src"], "expected a size"),
    "dupes-min-size-exponent": (["dupes", "--min-size", "1e3", "{r}/src"], "expected a size"),
    "dupes-min-size-huge": (["dupes", "--min-size", "9" * 5000, "{r}/src"], "too large"),
    "dupes-min-size-past-off-t": (["dupes", "--min-size", "8GiGi", "{r}/src"], "expected a size"),
    "dupes-min-size-2-63": (["dupes", "--min-size", str(2**63), "{r}/src"], "too large"),
    "thumbnails-quality-0": (["thumbnails", "--quality", "0", "{r}/src"], "between 1 and 100"),
    "thumbnails-quality-101": (["thumbnails", "--quality", "101", "{r}/src"], "between 1 and 100"),
    "thumbnails-quality-nan": (["thumbnails", "--quality", "nan", "{r}/src"], "expected an int"),
    "thumbnails-size-huge": (["thumbnails", "--size", "1" + "0" * 30, "{r}/src"], "1..4096"),
    "move-into-itself": (["move", "{r}/src", "{r}/src/inner"], "is inside source"),
    "move-missing-source": (["move", "{r}/nope", "{r}/dst"], "no such file or directory"),
    "delete-missing": (["delete", "{r}/nope"], "no such file or directory"),
    "delete-root": (["delete", "/"], "root directory"),
    "hash-bad-algorithm": (["hash", "--algorithm", "md5", "{r}/src"], "invalid choice"),
    "thumbnails-size-0": (["thumbnails", "--size", "0", "{r}/src"], "must be at least 1"),
    "thumbnails-bad-out": (["thumbnails", "--out", "{r}/file.txt", "{r}/src"], "not a directory"),
    "resume-unknown-id": (["resume", "ffff"], "no job with id"),
    "unknown-command": (["frobnicate"], "invalid choice"),
    # --store naming a FIFO used to hang; a device got "disk I/O error" and a -journal beside it
    "store-is-a-fifo": (["jobs"], "is a FIFO, not a parjobs store"),
    "store-is-a-char-device": (["copy", "{r}/src", "{r}/dst"], "is a character device, not a"),
}


@pytest.mark.parametrize("case", list(CLI_CASES))
def test_cli_exit_2_one_line_nothing_touched(area: Path, tmp_path: Path, case: str) -> None:
    args, message = CLI_CASES[case]
    store = tmp_path / "state" / "jobs.sqlite"
    if case == "resume-unknown-id":
        store.parent.mkdir()
        sqlite3.connect(store).close()
    if case.startswith("store-is-a-"):  # made in tmp_path, never the real /dev nodes
        store.parent.mkdir()
        if case.endswith("fifo"):
            os.mkfifo(store)
        elif os.geteuid() != 0:
            pytest.skip("mknod of a character device needs root")
        else:
            os.mknod(store, stat.S_IFCHR | 0o600, os.makedev(1, 3))
    before = snapshot(area)
    proc = cli(*[a.replace("{r}", str(area)) for a in args], store=store)
    if case.startswith("store-is-a-"):
        assert os.listdir(store.parent) == [store.name]  # nothing created beside it
        assert not stat.S_ISREG(os.lstat(store).st_mode)
    assert proc.returncode == 2, proc
    assert proc.stderr.startswith("parjobs: error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert len(proc.stderr) < 300, proc.stderr  # a value of 5000 digits is not echoed whole
    assert message in proc.stderr, proc.stderr
    assert snapshot(area) == before


def test_cli_resume_of_a_job_type_it_cannot_run(tmp_path: Path) -> None:
    store = tmp_path / "jobs.sqlite"
    con = sqlite3.connect(store)
    con.close()

    async def make() -> str:
        async with parjobs.open_manager(str(store)) as m:
            handle = await m.submit(CountJob(n=1, log=str(tmp_path / "log")), start=False)
            return handle.id

    job_id = trio.run(make)
    edit(str(store), job_id, type="no-such-type")
    proc = cli("resume", job_id, store=store)
    assert proc.returncode == 2, proc
    assert proc.stderr.count("\n") == 1 and "'no-such-type' job" in proc.stderr, proc.stderr
    con = sqlite3.connect(store)
    assert con.execute("SELECT status FROM jobs").fetchall() == [("paused",)]
    con.close()


def test_cli_error_for_a_name_with_a_newline_is_one_line(area: Path, tmp_path: Path) -> None:
    proc = cli("copy", str(area / "no\nsuch"), str(area / "dst"), store=tmp_path / "j.sqlite")
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1, proc.stderr


def test_cli_copy_of_awkward_names_exit_0(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    write(os.fsencode(src) + b"/caf\xe9.txt", b"x")
    write(os.fsencode(src) + b"/new\nline", b"y")
    proc = cli("copy", "--json", str(src), str(tmp_path / "dst"), store=tmp_path / "j.sqlite")
    assert proc.returncode == 0, proc.stderr
    last = json.loads(proc.stdout.strip().splitlines()[-1])
    assert last["result"]["copied"] == 2 if "result" in last else True
    assert snapshot(tmp_path / "dst") == snapshot(src)  # dst is the copy (cp -r src dst)
    assert read(os.fsencode(tmp_path) + b"/dst/caf\xe9.txt") == b"x"
