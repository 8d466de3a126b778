"""Who owns a name: user files named like parjobs temporaries, and two jobs writing one name.

* **Name ownership**, for every op (copy, move, delete, trash, hash -o, dupes, thumbnails):
  trees seeded with files named like every temporary and partial pattern parjobs uses (all
  suffixes; no token, a plausible token, the old formats, the job's own id) survive the op,
  a kill -9 plus resume, a cancel and a run with a failed item: same bytes, same inode.
  Seeded files inside a source are copied/moved like any other file.
* **A second parjobs writing the same destination names at once** (copy, move, thumbnails,
  hash -o): nothing of another job's is published, each job ends with a true status, and no
  temporary of either is left. The copy/move race is made deterministic with SIGSTOP/SIGCONT:
  A is stopped mid-file, B writes its own partial and is stopped, A finishes, B finishes.
* `--on-conflict update` (copy and move) and sparse files (holes kept) at the job level.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import trio
from _forkcli import Forked
from rel_helpers import MIB, photo, read, resume_to_end, run_child, spawn, write

import parjobs
from parjobs import JobStatus
from parjobs.ops import CopyJob, MoveJob
from parjobs.ops._partials import find_partials


def put(path: Path, data: bytes) -> None:
    """Write a file, making its parent directories."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write(path, data)


TOK = "0123456789abcdef"  # a plausible token: not any job's
RAND = "fedcba9876543210"


def seed_names(job_id: str = "abcdef012345") -> list[str]:
    """Names like every temporary/partial pattern parjobs uses or used, with and without a
    plausible token (and with a job id, as the checksum temporary used to carry)."""
    return [
        "plain.parjobs-tmp",
        ".plain.parjobs-tmp",
        "a.bin.parjobs-partial",
        ".a.bin.parjobs-partial",
        ".a.bin.parjobs-partial.meta",
        f".a.bin.{TOK}.parjobs-partial",
        f".a.bin.{TOK}.parjobs-partial.meta",
        f".a.bin.{TOK}.{RAND}.parjobs-tmp",
        f".a.bin.{RAND}.parjobs-tmp",
        f".parjobs.{TOK}.{RAND}.parjobs-tmp",
        f".parjobs-{TOK}.parjobs-partial",
        ".parjobs-0123456789abcdef.tmp",
        f"sums.txt.parjobs-{job_id}.tmp",
        f".trashinfo.{TOK}.{RAND}.parjobs-tmp",
        f".x.png.{TOK}.{RAND}.parjobs-tmp",
    ]


Seeded = dict[str, tuple[int, bytes]]


def seed(directory: Path, job_id: str = "abcdef012345") -> Seeded:
    """Write the seed files (old mtimes, so "stale temporary" logic would pick them)."""
    directory.mkdir(parents=True, exist_ok=True)
    out: Seeded = {}
    for name in seed_names(job_id):
        path = directory / name
        data = b"user data: " + name.encode()
        put(path, data)
        os.utime(path, (1_000_000_000, 1_000_000_000))
        out[str(path)] = (os.lstat(path).st_ino, data)
    return out


def assert_untouched(seeded: Seeded, where: str) -> None:
    bad = []
    for path, (ino, data) in seeded.items():
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            bad.append(f"{path}: removed")
            continue
        if st.st_ino != ino or read(path) != data:
            bad.append(f"{path}: changed")
    assert not bad, f"{where}: user files named like temporaries were touched: {bad}"


def source_tree(src: Path) -> dict[str, bytes]:
    """Small files, two files larger than the child's chunk (partials), seeded names."""
    files: dict[str, bytes] = {}
    for i in range(40):
        files[f"d{i % 4}/f{i:02}.dat"] = os.urandom(1000 + 37 * i)
    files["a.bin"] = os.urandom(600_000)
    files["d1/b.bin"] = os.urandom(500_000)
    for name in seed_names():
        files[f"seeded/{name}"] = b"source file named like a temporary: " + name.encode()
    for rel, data in files.items():
        put(src / rel, data)
    return files


def child_config(store: str, job_type: str, spec: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "store": store,
        "action": "submit",
        "job": {"type": job_type, "spec": spec},
        "workers": 2,
        "chunk_size": 64 * 1024,
        "group_size": 4,
        **extra,
    }


async def run_in_process(store: str, job: parjobs.Job, *, cancel: bool = False) -> JobStatus:
    async with parjobs.open_manager(store, workers=2) as m:
        handle = await m.submit(job)
        if cancel:  # right away: mid-run (or, on a fast machine, after the end)
            with contextlib.suppress(parjobs.InvalidTransitionError):
                await m.cancel(handle.id)
        with trio.fail_after(60):
            return await handle.wait()


# -- name ownership: copy and move ------------------------------------------------------------

SCENARIOS = ["kill-resume", "cancel", "failed-item", "plain"]


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("op", ["copy", "move"])
async def test_copy_and_move_never_touch_files_named_like_temporaries(
    tmp_path: Path, op: str, scenario: str
) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    files = source_tree(src)
    seeded = seed(dst) | seed(dst / "src" / "pre") | seed(dst / "src" / "seeded" / "deeper")
    if scenario == "failed-item":  # a conflict under the "fail" policy: one failed item
        put(dst / "src" / "d0" / "f00.dat", b"already there")
    store = str(tmp_path / "jobs.sqlite")
    spec: dict[str, Any] = {"sources": [str(src)], "destination": str(dst), "into": True}
    job_cls = CopyJob if op == "copy" else MoveJob
    if scenario == "kill-resume":
        cfg = child_config(store, op, spec, hook={"kind": "task", "n": 20})
        run = await trio.to_thread.run_sync(lambda: run_child(cfg, tmp_path))
        assert run.killed
        assert_untouched(seeded, "after the kill")
        info = await resume_to_end(store)
        status = info.status
    else:
        status = await run_in_process(store, job_cls(**spec), cancel=scenario == "cancel")
    assert_untouched(seeded, f"{op} {scenario}")
    if scenario == "failed-item":
        assert status is JobStatus.COMPLETED_WITH_ERRORS
    elif scenario != "cancel":
        assert status is JobStatus.COMPLETED
    if scenario != "cancel":
        for rel, data in files.items():  # seeded sources arrived like any other file
            if scenario == "failed-item" and rel == "d0/f00.dat":
                continue
            assert read(dst / "src" / rel) == data, rel
    # nothing named like a temporary but the seeds and the copied seeds
    expected = set(seeded) | {str(dst / "src" / r) for r in files if r.startswith("seeded/")}
    leftovers = {os.fsdecode(p) for p in find_partials(str(dst))} - expected
    if op == "move" or scenario != "cancel":
        leftovers -= {str(src / r) for r in files}
    assert not leftovers, leftovers


# -- name ownership: delete, trash, hash -o, dupes, thumbnails ---------------------------------


@pytest.mark.parametrize("scenario", ["kill-resume", "plain"])
async def test_delete_never_touches_files_named_like_temporaries_beside_it(
    tmp_path: Path, scenario: str
) -> None:
    victims = tmp_path / "area"
    for i in range(30):
        put(victims / f"gone{i:02}.txt", b"x" * i)
    seeded = seed(victims / "keep") | seed(tmp_path / "beside")
    paths = [str(victims / f"gone{i:02}.txt") for i in range(30)]
    store = str(tmp_path / "jobs.sqlite")
    if scenario == "kill-resume":
        cfg = child_config(store, "delete", {"paths": paths}, hook={"kind": "task", "n": 10})
        assert (await trio.to_thread.run_sync(lambda: run_child(cfg, tmp_path))).killed
        status = (await resume_to_end(store)).status
    else:
        status = await run_in_process(store, parjobs.registered_job_types()["delete"](paths=paths))  # type: ignore[call-arg]  # type[Job]
    assert status is JobStatus.COMPLETED
    assert_untouched(seeded, f"delete {scenario}")


@pytest.mark.parametrize("scenario", ["kill-resume", "cancel"])
async def test_trash_never_touches_files_named_like_temporaries_in_the_trash(
    tmp_path: Path, scenario: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    xdg = tmp_path / "xdg"
    monkeypatch.setenv("XDG_DATA_HOME", str(xdg))
    paths = []
    for i in range(30):
        put(tmp_path / "area" / f"t{i:02}.txt", b"y" * i)
        paths.append(str(tmp_path / "area" / f"t{i:02}.txt"))
    trash = xdg / "Trash"
    (trash / "files").mkdir(parents=True)
    seeded = seed(trash / "info") | seed(tmp_path / "area" / "keep")
    store = str(tmp_path / "jobs.sqlite")
    spec = {"paths": paths, "trash": True}
    if scenario == "kill-resume":
        cfg = child_config(store, "delete", spec, hook={"kind": "task", "n": 12})
        env = {"XDG_DATA_HOME": str(xdg)}
        assert (await trio.to_thread.run_sync(lambda: run_child(cfg, tmp_path, env=env))).killed
        assert (await resume_to_end(store)).status is JobStatus.COMPLETED
    else:
        job = parjobs.registered_job_types()["delete"](**spec)
        await run_in_process(store, job, cancel=True)
    assert_untouched(seeded, f"trash {scenario}")


async def test_hash_output_never_touches_files_named_like_its_temporaries(
    tmp_path: Path,
) -> None:
    """Killed mid-run, then files named like the checksum temporary (the job's own id in the
    old format, plausible tokens in the new) are planted beside the output; the resumed run
    writes the output and removes none of them."""
    src = tmp_path / "src"
    source_tree(src)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    output = out_dir / "sums.txt"
    store = str(tmp_path / "jobs.sqlite")
    spec = {"paths": [str(src)], "output": str(output)}
    cfg = child_config(store, "hash", spec, hook={"kind": "task", "n": 15})
    run = await trio.to_thread.run_sync(lambda: run_child(cfg, tmp_path))
    assert run.killed and run.job_id is not None
    seeded = seed(out_dir, job_id=run.job_id) | seed(src / "seeded" / "more", job_id=run.job_id)
    assert (await resume_to_end(store)).status is JobStatus.COMPLETED
    assert_untouched(seeded, "hash -o, kill and resume")
    assert read(output).count(b"\n") > 40
    assert {p for p in os.listdir(out_dir) if p.endswith((".tmp", ".parjobs-tmp"))} <= {
        os.path.basename(p) for p in seeded
    }


async def test_dupes_and_thumbnails_never_touch_files_named_like_temporaries(
    tmp_path: Path,
) -> None:
    src = tmp_path / "src"
    source_tree(src)
    for i in range(6):
        photo((320, 240), i).save(src / f"p{i}.jpg")
    out = tmp_path / "thumbs"
    shard = out / "256" / "ab"  # a shard directory of the cache, where temporaries go
    seeded = seed(shard) | seed(out) | seed(src / "seeded2")
    store = str(tmp_path / "jobs.sqlite")
    types = parjobs.registered_job_types()
    job = types["duplicates"](paths=[str(src)])  # type: ignore[call-arg]  # registry: type[Job]
    assert await run_in_process(store, job) in (
        JobStatus.COMPLETED,
        JobStatus.COMPLETED_WITH_ERRORS,
    )
    assert_untouched(seeded, "dupes")
    spec = {"paths": [str(src)], "out_dir": str(out), "size": 256}
    cfg = child_config(store + "2", "thumbnails", spec, hook={"kind": "task", "n": 30})
    assert (await trio.to_thread.run_sync(lambda: run_child(cfg, tmp_path))).killed
    assert (await resume_to_end(store + "2")).status is JobStatus.COMPLETED
    assert_untouched(seeded, "thumbnails, kill and resume")
    await run_in_process(store + "3", types["thumbnails"](**spec), cancel=True)
    assert_untouched(seeded, "thumbnails, cancel")


# -- two jobs writing the same destination names at once ---------------------------------------


def _partials(root: Path) -> list[tuple[int, int]]:
    """(inode, size) of every partial under ``root``."""
    out = []
    for d, _, names in os.walk(root):
        for n in names:
            if n.endswith(".parjobs-partial"):
                with_path = os.path.join(d, n)
                try:
                    st = os.lstat(with_path)
                except FileNotFoundError:
                    continue
                out.append((st.st_ino, st.st_size))
    return out


def _wait_for(
    cond: Any, child: Forked | subprocess.Popen[str], what: str, timeout: float = 30
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        assert child.poll() is None, f"child ended before {what}: {child.stderr.read()}"  # type: ignore[union-attr]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.003)


def _finish(child: Forked | subprocess.Popen[str]) -> str | None:
    out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    return next((ln.split()[1] for ln in out.splitlines() if ln.startswith("STATUS")), None)


def _race(tmp_path: Path, op: str, sources: list[Path], dst: Path) -> list[str | None]:
    """Two children (two stores) ``op`` a 20 MiB ``DCIM/big.bin`` each into ``dst`` at once:
    A is stopped with its partial half written, B starts and is stopped with its own partial
    under way, A is continued to its end, then B."""
    children = []
    cfgs = [
        child_config(
            str(tmp_path / f"jobs{i}.sqlite"),
            op,
            {"sources": [str(s)], "destination": str(dst), "into": True},
            chunk_size=MIB,
            check_sleep=0.02,
            workers=1,
        )
        for i, s in enumerate(sources)
    ]
    a = spawn(cfgs[0], tmp_path)
    children.append(a)
    try:
        first = _wait_for(lambda: [p for p in _partials(dst) if p[1] >= 4 * MIB], a, "A's partial")[
            0
        ]
        os.kill(a.pid, signal.SIGSTOP)
        b = spawn(cfgs[1], tmp_path)
        children.append(b)
        _wait_for(
            lambda: (
                [p for p in _partials(dst) if p[0] != first[0] and p[1] >= 2 * MIB]
                or (first not in _partials(dst) and _partials(dst))
            ),
            b,
            "B's partial",
        )
        os.kill(b.pid, signal.SIGSTOP)
        os.kill(a.pid, signal.SIGCONT)
        status_a = _finish(a)
        os.kill(b.pid, signal.SIGCONT)
        status_b = _finish(b)
    finally:
        for c in children:
            if c.poll() is None:
                os.kill(c.pid, signal.SIGCONT)
                c.kill()
                c.wait()
    return [status_a, status_b]


@pytest.mark.parametrize("op", ["copy", "move"])
def test_two_jobs_writing_one_big_file_name_never_publish_each_others_bytes(
    tmp_path: Path, op: str
) -> None:
    """Two cameras' DCIM/ into one backup at once (item 3). Before the fix, B removed A's
    partial (one fixed name) and A renamed B's unfinished file into place, exit 0."""
    base = tmp_path
    other_fs = os.path.isdir("/dev/shm") and os.stat("/dev/shm").st_dev != os.stat(base).st_dev
    if op == "move" and not other_fs:  # across filesystems the move copies, through partials
        pytest.skip("needs /dev/shm on another filesystem for a copying move")
    datas = [os.urandom(20 * MIB), os.urandom(20 * MIB)]
    sources = []
    roots = []
    for i, data in enumerate(datas):
        shm = Path(f"/dev/shm/relnames-{os.getpid()}-{i}")
        root = tmp_path / f"cam{i}" if op == "copy" else shm
        roots.append(root)
        put(root / "DCIM" / "big.bin", data)
        sources.append(root / "DCIM")
    dst = tmp_path / "backup"
    try:
        statuses = _race(tmp_path, op, sources, dst)
    finally:
        if op == "move":
            import shutil

            for root in roots:
                shutil.rmtree(root, ignore_errors=True)
    final = read(dst / "DCIM" / "big.bin")
    digest = hashlib.sha256(final).hexdigest()
    assert digest in {hashlib.sha256(d).hexdigest() for d in datas}, "a mix was published"
    assert final == datas[0]  # A finished first: its file is the one in place
    assert statuses == ["completed", "completed_with_errors"]  # B reports the conflict
    assert find_partials(dst) == []  # no temporary of either is left


def test_two_thumbnail_jobs_and_two_hash_outputs_at_once(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(12):
        photo((640, 480), i).save(src / f"p{i:02}.jpg")
    out = tmp_path / "thumbs"
    output = tmp_path / "sums.txt"
    for kind, spec in (
        ("thumbnails", {"paths": [str(src)], "out_dir": str(out), "size": 128}),
        ("hash", {"paths": [str(src)], "output": str(output)}),
    ):
        cfgs = [
            child_config(str(tmp_path / f"{kind}{i}.sqlite"), kind, spec, task_sleep=0.01)
            for i in range(2)
        ]
        children = [spawn(c, tmp_path) for c in cfgs]
        statuses = [_finish(c) for c in children]
        assert statuses == ["completed", "completed"], (kind, statuses)
    thumbs = [p for p in out.rglob("*") if p.is_file()]
    assert len(thumbs) == 12 and all(p.suffix == ".webp" for p in thumbs)
    lines = read(output).splitlines()
    assert len(lines) == 12 and all(b"p" in ln for ln in lines)
    assert find_partials(str(out)) == [] and find_partials(str(tmp_path)) == []


# -- update policy and sparse files at the job level -------------------------------------------


@pytest.mark.parametrize("op", ["copy", "move"])
async def test_update_replaces_only_an_older_destination(tmp_path: Path, op: str) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    put(src / "newer-dst.txt", b"old source")
    put(src / "older-dst.txt", b"new source")
    put(src / "same-time.txt", b"source, same mtime")
    put(dst / "src" / "newer-dst.txt", b"newer destination")
    put(dst / "src" / "older-dst.txt", b"older destination")
    put(dst / "src" / "same-time.txt", b"destination, same mtime")
    os.utime(src / "newer-dst.txt", (1_000_000_000, 1_000_000_000))
    os.utime(dst / "src" / "newer-dst.txt", (1_500_000_000, 1_500_000_000))
    os.utime(src / "older-dst.txt", (1_500_000_000, 1_500_000_000))
    os.utime(dst / "src" / "older-dst.txt", (1_000_000_000, 1_000_000_000))
    os.utime(src / "same-time.txt", (1_200_000_000, 1_200_000_000))
    os.utime(dst / "src" / "same-time.txt", (1_200_000_000, 1_200_000_000))
    job_cls = CopyJob if op == "copy" else MoveJob
    job = job_cls(into=True, sources=[str(src)], destination=str(dst), on_conflict="update")
    status = await run_in_process(str(tmp_path / "jobs.sqlite"), job)
    assert status is JobStatus.COMPLETED
    assert read(dst / "src" / "newer-dst.txt") == b"newer destination"
    assert read(dst / "src" / "same-time.txt") == b"destination, same mtime"
    assert read(dst / "src" / "older-dst.txt") == b"new source"
    if op == "move":  # a skipped file stays at the source
        assert read(src / "newer-dst.txt") == b"old source"
        assert read(src / "same-time.txt") == b"source, same mtime"
        assert not (src / "older-dst.txt").exists()


@pytest.mark.parametrize("apparent", [1 << 30, 6 * MIB])  # the chunked path; the group path
async def test_sparse_files_keep_their_holes(tmp_path: Path, apparent: int) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    path = src / "sparse.img"
    chunks = {0: os.urandom(4096), apparent // 2: os.urandom(4096)}
    chunks[apparent - 4096] = os.urandom(4096)
    with open(path, "wb") as f:
        f.truncate(apparent)
        for off, data in chunks.items():
            f.seek(off)
            f.write(data)
    st = os.stat(path)
    if st.st_blocks * 512 >= apparent:
        pytest.skip("this filesystem does not make sparse files")
    status = await run_in_process(
        str(tmp_path / "jobs.sqlite"), CopyJob(into=True, sources=[str(src)], destination=str(dst))
    )
    assert status is JobStatus.COMPLETED
    out = dst / "src" / "sparse.img"
    ost = os.stat(out)
    assert ost.st_size == apparent
    assert ost.st_blocks * 512 <= 4 * st.st_blocks * 512 + 64 * 1024, "holes were filled"
    # Byte for byte where either file has data; both read as zeros everywhere else (holes).
    # Reading the whole GiB of both, zeros included, took 12-17 s.
    with open(path, "rb") as a, open(out, "rb") as b:
        for start, stop in data_extents(a.fileno()) + data_extents(b.fileno()):
            for at in range(start, stop, 8 * MIB):
                n = min(8 * MIB, stop - at)
                assert os.pread(a.fileno(), n, at) == os.pread(b.fileno(), n, at), at


def data_extents(fd: int) -> list[tuple[int, int]]:
    """The (start, stop) byte ranges of the file that hold data, found with SEEK_DATA and
    SEEK_HOLE: all of it where the filesystem does not report holes."""
    extents, end, at = [], os.fstat(fd).st_size, 0
    while at < end:
        try:
            start = os.lseek(fd, at, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # nothing but a hole to the end
                break
            raise
        at = os.lseek(fd, start, os.SEEK_HOLE)
        extents.append((start, at))
    return extents
