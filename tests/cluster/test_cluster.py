"""The cluster lane on a real Dask `LocalCluster` (2 worker processes): results equal local
runs, copies are byte-identical, lost workers and a killed manager lose nothing, pause,
resume and cancel behave as locally, and progress is monotone and exact."""

from __future__ import annotations

import filecmp
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import trio
from cluster_jobs import WhereJob, read_runs
from PIL import Image

import parjobs
from parjobs import JobStatus
from parjobs.ops import CopyJob, DuplicatesJob, HashJob, ThumbnailJob
from parjobs.ops._probe import PROBE_NAME

#: The module's tests run on one xdist worker (``--dist loadgroup``, pyproject.toml): one
#: Dask cluster for the suite (4-5 s to start, more to close), not one on each worker.
pytestmark = pytest.mark.xdist_group("dask")

HERE = os.path.dirname(__file__)
ROOT = os.path.dirname(os.path.dirname(HERE))


def make_tree(root: Path, files: int = 40) -> Path:
    """Files of varied sizes (one of 3 MiB: several chunks) in a few directories."""
    src = root / "src"
    for i in range(files):
        d = src / f"d{i % 4}" / ("deep" if i % 3 == 0 else "")
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i}.bin").write_bytes(os.urandom(1 + i * 997))
    (src / "big.bin").write_bytes(os.urandom(3 << 20))
    return src


def leftovers(root: Path) -> list[str]:
    return [p.name for p in root.rglob("*") if ".parjobs" in p.name]


def probes(root: Path) -> list[str]:
    """The probes (`parjobs.ops._probe`) in directory ``root``."""
    return [n for n in os.listdir(root) if PROBE_NAME.fullmatch(os.fsencode(n))]


async def test_hash_on_the_cluster_equals_a_local_run(tmp_path: Path, dask_client: Any) -> None:
    src = make_tree(tmp_path)
    async with parjobs.open_manager(tmp_path / "local.sqlite") as manager:
        local = await (await manager.submit(HashJob(paths=[str(src)]))).result()
    async with parjobs.open_manager(tmp_path / "c.sqlite", cluster=dask_client) as manager:
        remote = await (await manager.submit(HashJob(paths=[str(src)]))).result()
    assert remote == local
    assert remote["files"] == 41 and remote["failed"] == 0


async def test_a_hash_begun_by_the_command_line_is_left_here_on_the_cluster(
    tmp_path: Path, dask_client: Any
) -> None:
    """The CLI's `Prehash` (a thread of this process) does not go to the workers with the
    tasks: the job drops it and the cluster reads every file."""
    from parjobs.ops._prehash import Prehash

    src = make_tree(tmp_path, files=8)
    time.sleep(0.05)  # (the files' ctimes before the thread's start)
    prehash = Prehash.start([str(src)])
    assert prehash is not None
    prehash._thread.join()
    async with parjobs.open_manager(tmp_path / "local.sqlite") as manager:
        local = await (await manager.submit(HashJob(paths=[str(src)]))).result()
    async with parjobs.open_manager(tmp_path / "c.sqlite", cluster=dask_client) as manager:
        job = HashJob(paths=[str(src)], prehash=prehash)
        remote = await (await manager.submit(job)).result()
    assert remote == local and remote["files"] == 9 and remote["failed"] == 0
    assert prehash._stop[0] == 1  # dropped


async def test_workers_see_paths_through_the_path_map(tmp_path: Path, dask_client: Any) -> None:
    """Workers read under THERE what this host lists under HERE (a different tree here, to
    tell them apart); results name this host's paths."""
    here, there = tmp_path / "here", tmp_path / "there"
    for root, data in ((here, b"as seen here"), (there, b"as seen by the workers")):
        (root / "sub").mkdir(parents=True)
        (root / "sub" / "f").write_bytes(data)
    async with parjobs.open_manager(tmp_path / "local.sqlite") as manager:
        handle = await manager.submit(HashJob(paths=[str(there)]))
        await handle.result()
        expected = {r.source: r.detail for r in await manager.items(handle.id, action="hashed")}
    async with parjobs.open_manager(
        tmp_path / "c.sqlite", cluster=dask_client, cluster_path_map={str(here): str(there)}
    ) as manager:
        handle = await manager.submit(HashJob(paths=[str(here)]))
        await handle.result()
        got = {r.source: r.detail for r in await manager.items(handle.id, action="hashed")}
    assert got == {str(here / "sub" / "f"): expected[str(there / "sub" / "f")]}


async def test_a_file_a_workers_run_could_not_read_counts_once(
    tmp_path: Path, dask_client: Any
) -> None:
    """A duplicates run on a worker counts as done only the files it read, as it does here
    (`Task.items`, set by its run on the worker, comes back with its outcome): a file the
    workers cannot find (missing under THERE) is one failed item, not one more (4 done and
    1 failed of 4 items for 4 files without it)."""
    here, there = tmp_path / "here", tmp_path / "there"
    data = os.urandom(1000)  # (small: its content id is the whole file, no full hash)
    for root, names in ((here, "abcd"), (there, "abd")):
        root.mkdir()
        for name in names:
            (root / name).write_bytes(data)
    async with parjobs.open_manager(
        tmp_path / "c.sqlite", cluster=dask_client, cluster_path_map={str(here): str(there)}
    ) as manager:
        handle = await manager.submit(DuplicatesJob(paths=[str(here)]))
        result = await handle.result()
        (error,) = await manager.errors(handle.id)
        p = (await manager.get(handle.id)).progress
    assert error.label == str(here / "c") and result["failed"] == 1
    assert [g["paths"] for g in result["groups"]] == [[str(here / n) for n in "abd"]]
    assert (p.items_done, p.items_failed, p.items_total) == (3, 1, 4)


def tree_of(root: Path) -> dict[str, bytes | None]:
    return {
        str(p.relative_to(root)): p.read_bytes() if p.is_file() else None
        for p in sorted(root.rglob("*"))
    }


async def test_the_path_map_applies_to_directories_below_the_destination_root(
    tmp_path: Path, dask_client: Any
) -> None:
    """A copy into a directory that does not exist yet is planned from its parent, and a
    copy into an existing one reaches its subdirectories by relative names: a map naming
    such a directory applies all the same (it used to be ignored, the files written here,
    the job completed). The manager makes that directory and puts its probe there
    (`parjobs.ops._probe`): where the workers' directory is another one (``there/new``,
    ``there2/sub``), every item fails naming it and nothing is written there (it used to
    take the files, the job completed); where it is the manager's (``link``, a symlink to
    it), the copy lands. Component boundaries: ``new2`` is not under ``new``."""
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a").write_bytes(b"a")
    (src / "sub" / "b").write_bytes(b"b")
    (tmp_path / "there").mkdir()
    (tmp_path / "into").mkdir()
    (tmp_path / "there2").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "same")
    os.utime(src, ns=(946_684_800 * 10**9, 946_684_800 * 10**9))
    paths = {
        str(tmp_path / "new"): str(tmp_path / "there" / "new"),
        str(tmp_path / "into" / "src" / "sub"): str(tmp_path / "there2" / "sub"),
        str(tmp_path / "same"): str(tmp_path / "link"),
    }
    foreign = {"new": tmp_path / "there" / "new", "into": tmp_path / "there2" / "sub"}
    async with parjobs.open_manager(
        tmp_path / "c.sqlite", cluster=dask_client, cluster_path_map=paths
    ) as manager:
        for dest in ("new", "new2", "into", "same"):
            job = CopyJob(sources=[str(src)], destination=str(tmp_path / dest))
            handle = await manager.submit(job)
            status = await handle.wait()
            result = await handle.result()
            if dest in foreign:
                errors = await manager.errors(handle.id)
                assert status == JobStatus.COMPLETED_WITH_ERRORS
                assert result["copied"] == 0 and result["failed"] == len(errors) == 4
                assert all(str(foreign[dest]) in e.message for e in errors)
            else:
                assert status == JobStatus.COMPLETED and result["copied"] == 2
    expected = tree_of(src)
    assert tree_of(tmp_path / "new") == {}  # made here for the probe; nothing in it
    assert tree_of(tmp_path / "there") == {}  # nor in the workers' `there/new`
    assert tree_of(tmp_path / "new2") == expected  # not mapped
    assert tree_of(tmp_path / "into") == {"src": None, "src/sub": None}
    assert tree_of(tmp_path / "there2") == {}
    assert tree_of(tmp_path / "same") == expected
    # (its probe removed at the job's end, it keeps the source's mtime the copy gave it)
    assert os.stat(tmp_path / "same").st_mtime_ns == os.stat(src).st_mtime_ns


async def test_the_path_map_applies_to_directories_below_a_source_root(
    tmp_path: Path, dask_client: Any
) -> None:
    """A worker reaches a source from its root by relative names: a map naming a directory
    below the root applies to what lies below it (it used to be reached from a root cut from
    the mapped path: each file there failed, 'No such file or directory: .../o')."""
    src = tmp_path / "src"
    (src / "sub" / "d").mkdir(parents=True)
    (src / "a").write_bytes(b"a")
    for name in ("sub/b", "sub/d/c"):
        (src / name).write_bytes(b"as seen here")
    other = tmp_path / "other"
    (other / "d").mkdir(parents=True)
    for name in ("b", "d/c"):
        (other / name).write_bytes(b"as seen by the workers")
    paths = {str(src / "sub"): str(other)}
    async with parjobs.open_manager(
        tmp_path / "c.sqlite", cluster=dask_client, cluster_path_map=paths
    ) as manager:
        handle = await manager.submit(
            CopyJob(sources=[str(src)], destination=str(tmp_path / "dst"))
        )
        assert await handle.wait() == JobStatus.COMPLETED
        assert (await handle.result())["copied"] == 3
    seen = b"as seen by the workers"
    assert tree_of(tmp_path / "dst") == {
        "a": b"a",
        "sub": None,
        "sub/b": seen,
        "sub/d": None,
        "sub/d/c": seen,
    }


async def test_tasks_run_on_the_workers(tmp_path: Path, dask_client: Any) -> None:
    log = str(tmp_path / "log")
    worker_pids = set(dask_client.run(os.getpid).values())
    async with parjobs.open_manager(tmp_path / "s.sqlite", cluster=dask_client) as manager:
        result = await (await manager.submit(WhereJob(n=30, log=log))).result()
    assert set(result["pids"]) <= worker_pids
    runs = read_runs(log)
    assert sorted(i for i, _, _ in runs) == list(range(30))
    assert os.getpid() not in {pid for _, pid, _ in runs}


async def test_thumbnails_on_the_cluster_equal_a_local_run(
    tmp_path: Path, dask_client: Any
) -> None:
    src = tmp_path / "photos"
    src.mkdir()
    for i in range(6):
        Image.new("RGB", (64 + i * 8, 48), (i * 40, 255 - i * 40, 90)).save(src / f"p{i}.png")
    (src / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    (src / "notes.txt").write_text("not an image")
    outputs = {}
    for name, cluster in (("local", None), ("cluster", dask_client)):
        out = tmp_path / f"thumbs-{name}"
        async with parjobs.open_manager(tmp_path / f"{name}.sqlite", cluster=cluster) as manager:
            job = ThumbnailJob(paths=[str(src)], out_dir=str(out), size=32, format="png")
            handle = await manager.submit(job)
            result = await handle.result()
        files = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
        del result["out_dir"]
        outputs[name] = (result, files)
    assert outputs["cluster"][0]["made"] == 6 and outputs["cluster"][0]["failed"] == 1
    assert outputs["cluster"][1] == outputs["local"][1]
    assert outputs["cluster"][0] == outputs["local"][0]


async def test_copy_on_the_cluster_is_byte_identical_and_progress_exact(
    tmp_path: Path, dask_client: Any
) -> None:
    src = make_tree(tmp_path)
    dst = tmp_path / "dst"
    total = sum(p.stat().st_size for p in src.rglob("*") if p.is_file())
    # The user's own copy of one file is there already: it is not this job's output, so it
    # is reported as existing (skipped), never counted as done.
    (dst / "src" / "d1").mkdir(parents=True)
    (dst / "src" / "d1" / "f1.bin").write_bytes((src / "d1" / "f1.bin").read_bytes())
    seen: list[tuple[int, int]] = []
    async with parjobs.open_manager(
        tmp_path / "s.sqlite", cluster=dask_client, workers=4
    ) as manager:
        job = CopyJob(sources=[str(src)], destination=str(dst), on_conflict="skip")
        handle = await manager.submit(job)
        async for progress in handle.progress():
            seen.append((progress.items_done, progress.bytes_done))
        result = await handle.result()
        info = await manager.get(handle.id)
        copied = await manager.items(handle.id, action="copied")
    assert result["failed"] == 0 and result["copied"] == 40
    assert result["skipped_reasons"] == {"destination exists": 1}
    # The item records made on the workers came back with their outcomes (paths mapped).
    files = {str(p) for p in src.rglob("*") if p.is_file()} - {str(src / "d1" / "f1.bin")}
    assert {r.source for r in copied if r.detail != "directory"} == files
    assert all(r.destination and os.path.lexists(r.destination) for r in copied)
    cmp = filecmp.dircmp(src, dst / "src")
    assert not cmp.diff_files and not cmp.left_only and not cmp.right_only
    for path in src.rglob("*"):
        if path.is_file():
            assert (dst / "src" / path.relative_to(src)).read_bytes() == path.read_bytes()
    assert leftovers(dst) == []
    assert seen == sorted(seen)  # items and bytes never go back
    done = info.progress.bytes_done + info.progress.bytes_skipped
    assert done == total == info.progress.bytes_total


async def _all_running(manager: Any, job_id: str, n: int) -> None:
    """Wait until the workers report ``n`` tasks of the job running."""
    with trio.fail_after(60):
        while (await manager.get(job_id)).progress.in_flight < n:
            await trio.sleep(0.05)


async def test_pause_and_resume_on_the_cluster(tmp_path: Path, dask_client: Any) -> None:
    log = str(tmp_path / "log")
    async with parjobs.open_manager(tmp_path / "s.sqlite", cluster=dask_client) as manager:
        # 4 tasks of 3 s on the 4 worker threads, checking for interrupts every 0.1 s.
        handle = await manager.submit(WhereJob(n=4, log=log, sleep=3.0, chunks=30))
        await _all_running(manager, handle.id, 4)
        started = time.monotonic()
        await handle.pause()
        assert await handle.wait() is JobStatus.PAUSED
        assert time.monotonic() - started < 1.5  # stopped at their next check, not at the end
        info = await manager.get(handle.id)
        assert info.progress.in_flight == 0 and info.progress.items_done == 0
        await trio.sleep(0.5)
        assert read_runs(log) == []  # nothing ran on after "paused"
        await handle.resume()
        assert await handle.wait() is JobStatus.COMPLETED
        info = await manager.get(handle.id)
    assert sorted(i for i, _, _ in read_runs(log)) == list(range(4))
    assert info.progress.items_done == 4 and info.progress.bytes_done == 4 * 10 * 30


async def test_cancel_on_the_cluster(tmp_path: Path, dask_client: Any) -> None:
    log = str(tmp_path / "log")
    async with parjobs.open_manager(tmp_path / "s.sqlite", cluster=dask_client) as manager:
        handle = await manager.submit(WhereJob(n=40, log=log, sleep=3.0, chunks=30))
        await _all_running(manager, handle.id, 4)
        started = time.monotonic()
        await handle.cancel()
        assert await handle.wait() is JobStatus.CANCELLED
        # Pending groups cancelled, running tasks stopped at their next check.
        assert time.monotonic() - started < 1.5
    await trio.sleep(0.5)
    assert read_runs(log) == []


async def test_a_killed_worker_loses_nothing(tmp_path: Path, dask_client: Any) -> None:
    log = str(tmp_path / "log")
    n = 60
    async with parjobs.open_manager(tmp_path / "s.sqlite", cluster=dask_client) as manager:
        handle = await manager.submit(WhereJob(n=n, log=log, sleep=0.15, chunks=3))
        with trio.fail_after(60):
            while len(read_runs(log)) < 6:
                await trio.sleep(0.02)
        victim = read_runs(log)[-1][1]  # a worker process running tasks right now
        os.kill(victim, signal.SIGKILL)
        with trio.fail_after(120):
            assert await handle.wait() is JobStatus.COMPLETED
        info = await manager.get(handle.id)
    assert info.progress.items_done == n and info.progress.items_failed == 0
    runs = read_runs(log)
    assert sorted({i for i, _, _ in runs}) == list(range(n))
    # At most the killed worker's groups ran again: never more than two of them at once
    # (2 threads), each of at most a fair share of the queue.
    assert len(runs) - n <= n // 2
    # Wait for the nanny to bring the worker back, for the tests after this one.
    with trio.fail_after(60):
        while len(dask_client.scheduler_info()["workers"]) < 2:
            await trio.sleep(0.2)


CHILD = textwrap.dedent(
    """
    import sys, trio, parjobs
    from parjobs.ops import CopyJob

    async def main(store, address, src, dst):
        async with parjobs.open_manager(store, cluster=address, workers=2) as manager:
            handle = await manager.submit(CopyJob(sources=[src], destination=dst))
            print(handle.id, flush=True)
            await handle.wait()

    if __name__ == "__main__":
        trio.run(main, *sys.argv[1:])
    """
)


async def test_a_killed_manager_resumes_from_its_checkpoint(
    tmp_path: Path, dask_client: Any
) -> None:
    src = tmp_path / "src"
    for i in range(300):
        (src / f"d{i % 5}").mkdir(parents=True, exist_ok=True)
        (src / f"d{i % 5}" / f"f{i}").write_bytes(os.urandom(20_000 + i))
    dst = tmp_path / "dst"
    store = str(tmp_path / "s.sqlite")
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, HERE])}
    address = dask_client.scheduler.address
    child = subprocess.Popen(
        [sys.executable, str(script), store, address, str(src), str(dst)],
        stdout=subprocess.PIPE,
        env=env,
    )
    try:
        assert child.stdout is not None
        job_id = child.stdout.readline().decode().strip()
        with trio.fail_after(60):  # kill it once some files are in place
            while len(list(dst.rglob("f*"))) < 20:
                await trio.sleep(0.01)
    finally:
        child.kill()
        child.wait()
    assert len(probes(tmp_path)) == 1  # left by the kill (the copy's root: dst's parent)
    async with parjobs.open_manager(store, cluster=dask_client) as manager:
        handle = await manager.resume(job_id)
        with trio.fail_after(120):
            assert await handle.wait() is JobStatus.COMPLETED
        result = await handle.result()
    assert result["failed"] == 0
    for i in range(300):
        rel = Path(f"d{i % 5}") / f"f{i}"
        assert (dst / rel).read_bytes() == (src / rel).read_bytes()  # dst is the copy
    assert leftovers(dst) == [] and probes(tmp_path) == []  # removed at the end


async def test_a_failing_bridge_fails_the_tasks_instead_of_hanging(
    tmp_path: Path, dask_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import parjobs._cluster

    def broken(*args: Any, **kwargs: Any) -> bytes:
        raise RuntimeError("cannot pickle this")

    monkeypatch.setattr(parjobs._cluster, "dumps", broken)
    log = str(tmp_path / "log")
    async with parjobs.open_manager(tmp_path / "s.sqlite", cluster=dask_client) as manager:
        handle = await manager.submit(WhereJob(n=3, log=log))
        with trio.fail_after(60):
            assert await handle.wait() is JobStatus.COMPLETED_WITH_ERRORS
        errors = await manager.errors(handle.id)
    assert len(errors) == 3
    assert all("cluster bridge failed" in e.message for e in errors)
    assert read_runs(log) == []


class _Scheduler:
    """A Dask scheduler and one worker process of its own on a fixed port (the suite's
    `LocalCluster` keeps its scheduler in this process, where it cannot be killed)."""

    def __init__(self, tmp_path: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.env = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, HERE])}
        self.logs = tmp_path
        self.procs: list[subprocess.Popen[bytes]] = []
        self.scheduler: subprocess.Popen[bytes] | None = None

    def _start(self, module: str, *args: str) -> subprocess.Popen[bytes]:
        name = module.rpartition(".")[2]
        with open(self.logs / f"{name}-{len(self.procs)}.log", "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", module, *args, "--dashboard-address", ":0"],
                env=self.env,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        self.procs.append(proc)
        return proc

    def start(self) -> None:
        """The scheduler and a worker (with no nanny: it is started again by hand here)."""
        self.scheduler = self._start(
            "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", str(self.port)
        )
        self._start("distributed.cli.dask_worker", self.address, "--nthreads", "2", "--no-nanny")
        deadline = time.monotonic() + 60
        while True:  # until the scheduler listens
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def kill(self) -> None:
        for proc in self.procs:
            proc.kill()
            proc.wait()
        self.procs.clear()


async def test_a_manager_sends_again_once_its_dead_scheduler_is_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scheduler killed and started again: Dask's client closes itself once the
    scheduler has been gone for its connect timeout, and every group this manager sent
    after failed at once ("Client is closed"), for as long as it lived: a `parjobs worker`
    or `parjobs serve` failed every item of every later job. A new client is made now:
    a job submitted while the scheduler is gone fails promptly, naming it, and one
    submitted once it is back completes. No traceback is logged for the groups' claims the
    gone scheduler could not clear (one per group answered meanwhile)."""
    import parjobs._cluster

    monkeypatch.setattr(parjobs._cluster, "CONNECT_TIMEOUT", 2.0)
    monkeypatch.setattr(parjobs._cluster, "RECONNECT_EVERY", 0.5)
    loop_errors: list[str] = []
    tornado = logging.getLogger("tornado.application")  # (Dask's: it does not propagate)
    handler = logging.Handler(logging.ERROR)
    handler.emit = lambda record: loop_errors.append(record.getMessage())  # type: ignore[method-assign]
    tornado.addHandler(handler)
    cluster = _Scheduler(tmp_path)
    cluster.start()
    try:
        async with parjobs.open_manager(
            tmp_path / "s.sqlite", cluster=cluster.address, workers=4
        ) as manager:
            log1 = str(tmp_path / "log1")
            first = await manager.submit(WhereJob(n=16, log=log1, sleep=0.6, chunks=3))
            with trio.fail_after(120):  # killed with groups in flight
                while not read_runs(log1):
                    await trio.sleep(0.05)
            cluster.kill()
            with trio.fail_after(60):
                assert await first.wait() is JobStatus.COMPLETED_WITH_ERRORS
            await trio.sleep(3)  # past the client's connect timeout: it closed itself
            # Meanwhile its groups fail at once, saying why: one connect attempt at a time
            # (each up to the connect timeout), not one per group.
            during = await manager.submit(WhereJob(n=32, log=str(tmp_path / "log-during")))
            with trio.fail_after(15):
                assert await during.wait() is JobStatus.COMPLETED_WITH_ERRORS
            errors = await manager.errors(during.id)
            assert len(errors) == 32 and all("scheduler" in e.message for e in errors)
            cluster.start()
            log = str(tmp_path / "log2")
            with trio.fail_after(120):
                while True:  # (until the new worker has joined the new scheduler)
                    second = await manager.submit(WhereJob(n=6, log=log))
                    status = await second.wait()
                    errors = await manager.errors(second.id)
                    if status is JobStatus.COMPLETED or "Client is closed" in str(errors):
                        break
                    await trio.sleep(0.5)
            assert [e.message for e in errors] == []
            assert status is JobStatus.COMPLETED
            assert sorted(i for i, _, _ in read_runs(log))[-6:] == list(range(6))
    finally:
        cluster.kill()
        tornado.removeHandler(handler)
    assert loop_errors == []
