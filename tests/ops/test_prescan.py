"""Prescan: a duplicates job's scan begun before the job runs, taken by the job once."""

from __future__ import annotations

import os
import threading
import time

import pytest
import trio

import parjobs
from parjobs import JobStatus
from parjobs.cli import main
from parjobs.ops import _duplicates as dup_mod
from parjobs.ops import _hashing
from parjobs.ops import _prescan as prescan_mod
from parjobs.ops._duplicates import DuplicatesJob
from parjobs.ops._hashing import content_ids, full_hashes
from parjobs.ops._prescan import Prescan

pytestmark = pytest.mark.skipif(_hashing.fastscan is None, reason="_fastscan is not built")


def _tree(root) -> None:
    for rel in ("a/one", "b/one", "c/two"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"same bytes\n" if rel.endswith("one") else b"other\n")


def _finished(prescan: Prescan | None) -> Prescan:
    assert prescan is not None
    prescan._thread.join()  # its listing done before the tree changes below
    return prescan


async def test_the_job_takes_the_scan_of_its_paths_begun_before_it(store_path, tmp_path):
    """The job's groups are those of the tree when the prescan listed it: a copy made
    after that is not looked at (the job did not list the tree again)."""
    root = tmp_path / "t"
    _tree(root)
    # Spelled as the CLI gives both (a trailing "/" kept: `link/` is the directory it names).
    prescan = _finished(Prescan.start([str(root) + os.sep], 1))
    (root / "c/one-later").write_bytes(b"same bytes\n")
    async with parjobs.open_manager(store_path) as manager:
        job = DuplicatesJob(paths=[str(root) + os.sep], prescan=prescan)
        result = await (await manager.submit(job)).result()
    assert [g["paths"] for g in result["groups"]] == [[str(root / "a/one"), str(root / "b/one")]]
    assert result["files_scanned"] == 3 and job.prescan is None
    assert not prescan.matches(prescan.roots, 1)  # taken: never handed out twice


@pytest.mark.parametrize("forget", [0, 2])
async def test_the_runs_read_only_the_files_whose_ids_the_prescan_did_not_compute(
    store_path, tmp_path, monkeypatch, forget
):
    """Listed, the prescan computes content ids until the job takes it (here: all, as the
    job comes after); the runs read only the others (``forget``: ids it had not reached),
    and the groups are the same. An empty file is never opened."""
    root = tmp_path / "t"
    _tree(root)
    for k in range(40):  # several size groups, in several runs
        (root / "n" / f"{k:02}").parent.mkdir(exist_ok=True)
        (root / "n" / f"{k:02}").write_bytes(b"x" * (1000 + k // 2))
    (root / "e1").write_bytes(b"")
    (root / "e2").write_bytes(b"")
    monkeypatch.setattr(dup_mod, "RUN_FILES", 8)
    prescan = _finished(Prescan.start([str(root)], 0))
    assert len(prescan.known) == 42  # every candidate but the two empty files
    forgotten = sorted(prescan.known)[5 : 5 + forget]
    for index in forgotten:
        del prescan.known[index]
    read: list[bytes] = []
    real = content_ids

    def counting(items, **kwargs):
        read.extend(path for path, _ in items)
        return real(items, **kwargs)

    monkeypatch.setattr(dup_mod, "content_ids", counting)
    async with parjobs.open_manager(store_path) as manager:
        job = DuplicatesJob(paths=[str(root)], min_size=0, prescan=prescan)
        result = await (await manager.submit(job)).result()
    async with parjobs.open_manager(str(tmp_path / "plain.sqlite")) as manager:
        plain = await (await manager.submit(DuplicatesJob(paths=[str(root)], min_size=0))).result()
    assert result == plain and len(result["groups"]) == 22
    assert len(read) == forget + 42  # (then the plain job read its 42)


def _sizes_interleaved(root) -> None:
    """40 files of 20 sizes, each size's two files far apart in walk order."""
    for k in range(40):
        (root / "n" / f"{k:02}").parent.mkdir(parents=True, exist_ok=True)
        (root / "n" / f"{k:02}").write_bytes(bytes([65 + k % 20]) * (1000 + k % 20))


def test_the_prescan_computes_ids_in_the_order_of_the_jobs_runs(tmp_path):
    """Its content ids go size group by size group, as the job packs its runs (`_runs`), not
    in walk order: stopped part-way, the ids it has answer whole runs."""
    root = tmp_path / "t"
    _sizes_interleaved(root)
    prescan = _finished(Prescan.start([str(root)], 1))
    files = prescan.take(lambda: False)
    assert files is not None
    by_size: dict[int, list] = {}
    for f in files[0]:
        by_size.setdefault(f[2], []).append(f)
    runs = dup_mod._runs(by_size)
    assert list(prescan.known) == [f[0] for run in runs for f in run.files]
    assert [f[0] for f in files[0]] != list(prescan.known)  # (walk order differs)


@pytest.mark.parametrize("forget", [0, 1])
async def test_runs_whose_every_id_the_prescan_computed_are_no_task(
    store_path, tmp_path, monkeypatch, forget
):
    """A content-id run whose files' ids the prescan all computed is answered from them, no
    task (nothing booked, read or checkpointed); the others run, reading only the files the
    prescan did not reach (``forget``: one id of the fourth run's taken away). The groups
    and the progress counted (files, bytes) are a plain job's."""
    root = tmp_path / "t"
    _sizes_interleaved(root)
    monkeypatch.setattr(dup_mod, "RUN_FILES", 8)  # 5 runs
    prescan = _finished(Prescan.start([str(root)], 1))
    if forget:
        del prescan.known[list(prescan.known)[3 * 8 + 2]]
    ran: list[int] = []
    real_run = dup_mod.IdRunTask.run

    def run(self, tc):
        ran.append(self.index)
        return real_run(self, tc)

    monkeypatch.setattr(dup_mod.IdRunTask, "run", run)
    async with parjobs.open_manager(store_path) as manager:
        handle = await manager.submit(DuplicatesJob(paths=[str(root)], prescan=prescan))
        result = await handle.result()
        progress = (await handle.info()).progress
    assert len(ran) == forget
    ran.clear()
    async with parjobs.open_manager(str(tmp_path / "plain.sqlite")) as manager:
        handle = await manager.submit(DuplicatesJob(paths=[str(root)]))
        plain = await handle.result()
        plain_progress = (await handle.info()).progress
    assert len(ran) == 5
    assert result == plain and len(result["groups"]) == 20
    counted = ("items_done", "items_total", "bytes_done", "bytes_total", "items_failed")
    assert [getattr(progress, k) for k in counted] == [getattr(plain_progress, k) for k in counted]


async def test_runs_answered_by_the_prescan_are_read_again_on_resume(
    store_path, tmp_path, monkeypatch
):
    """The runs the prescan answered are in no checkpoint: paused in the full-hash stage and
    resumed (no prescan then), the job reads those ids again and finds the same groups as a
    plain job; no file is fully hashed twice."""
    root = tmp_path / "t"
    _sizes_interleaved(root)
    for k in range(4):  # two groups to hash, each file a hash run of its own
        (root / f"big{k}").write_bytes(bytes([k % 2]) * (200 * 1024))
    monkeypatch.setattr(dup_mod, "HASH_RUN_FILES", 1)
    prescan = _finished(Prescan.start([str(root)], 1))
    ran: list[int] = []
    real_run, real_hashes = dup_mod.IdRunTask.run, full_hashes
    hashed: list[bytes] = []
    hashing = threading.Event()

    def run(self, tc):
        ran.append(self.index)
        return real_run(self, tc)

    def slow_hashes(items):
        hashing.set()
        time.sleep(0.1)
        hashed.extend(path for path, _ in items)
        return real_hashes(items)

    monkeypatch.setattr(dup_mod.IdRunTask, "run", run)
    monkeypatch.setattr(dup_mod, "full_hashes", slow_hashes)
    async with parjobs.open_manager(store_path, workers=1) as manager:
        handle = await manager.submit(DuplicatesJob(paths=[str(root)], prescan=prescan))
        with trio.fail_after(10):
            while not hashing.is_set():
                await trio.sleep(0.002)
        await manager.pause(handle.id)
        assert await handle.wait() is JobStatus.PAUSED
        assert ran == [] and 0 < len(hashed) < 4
        await manager.resume(handle.id)
        result = await handle.result()
    assert len(ran) == 1 and sorted(hashed) == sorted(set(hashed)) and len(hashed) == 4
    async with parjobs.open_manager(str(tmp_path / "plain.sqlite")) as manager:
        plain = await (await manager.submit(DuplicatesJob(paths=[str(root)]))).result()
    assert result == plain and len(result["groups"]) == 22


@pytest.mark.parametrize("other", ["root", "min_size"])
async def test_a_scan_of_other_roots_or_sizes_is_not_taken(store_path, tmp_path, other):
    root = tmp_path / "t"
    _tree(root)
    paths, min_size = ([str(root / "a")], 1) if other == "root" else ([str(root)], 2)
    prescan = _finished(Prescan.start(paths, min_size))
    (root / "c/one-later").write_bytes(b"same bytes\n")
    async with parjobs.open_manager(store_path) as manager:
        job = DuplicatesJob(paths=[str(root)], prescan=prescan)
        result = await (await manager.submit(job)).result()
    assert len(result["groups"][0]["paths"]) == 3  # its own scan, after the copy
    assert not prescan.taken


def test_a_stopped_prescan_gives_none_and_an_error_is_raised_by_take(tmp_path):
    """``take``'s ``stopped`` stops the listing as it stops the job's own scan (None: the
    job then raises its pause), and what the listing raised is raised where it is taken."""
    _tree(tmp_path)
    stopped = Prescan([str(tmp_path)], 1)
    stopped._stop[0] = 1  # (as `take` sets it when its ``stopped`` says so)
    stopped._thread.start()
    assert stopped.take(lambda: True) is None
    broken = Prescan.start([str(tmp_path) + "\0x"], 1)
    assert broken is not None
    with pytest.raises(ValueError, match="NUL"):
        broken.take(lambda: False)


def test_the_c_scan_stops_on_a_flag_it_reads_without_the_gil(tmp_path):
    """``scan_tree``'s ``stopped`` may be a bytearray: its first byte set stops the listing
    (None), unset lets it run, with the same result as a callable that says no."""
    _tree(tmp_path)
    fastscan = _hashing.fastscan
    assert fastscan is not None
    roots = [os.fsencode(tmp_path)]
    assert fastscan.scan_tree(roots, 1, bytearray(b"\1")) is None
    assert fastscan.scan_tree(roots, 1, bytearray(1)) == fastscan.scan_tree(roots, 1, bool)


def test_the_c_content_ids_stop_on_a_flag_they_read_between_files(tmp_path):
    """``content_ids``' ``stop``, a bytearray: its first byte set, the files not yet read
    are answered ``STOPPED``; unset, the ids are those of a call without it."""
    _tree(tmp_path)
    fastscan = _hashing.fastscan
    assert fastscan is not None
    items = [
        (os.fsencode(tmp_path / rel), 11 if rel.endswith("one") else 6)
        for rel in ("a/one", "b/one", "c/two")
    ]
    ids = fastscan.content_ids(items)
    assert all(isinstance(cid, str) for cid in ids)
    assert fastscan.content_ids(items, bytearray(1)) == ids == fastscan.content_ids(items, None)
    assert fastscan.content_ids(items, bytearray(b"\1")) == [fastscan.STOPPED] * 3
    with pytest.raises(TypeError):
        fastscan.content_ids(items, b"\1")  # (bytes cannot be set: not a flag)


def _many_files(root, n: int = 400) -> list[tuple[bytes, int]]:
    root.mkdir(exist_ok=True)
    items = []
    for i in range(n):
        (root / f"f{i}").write_bytes(b"%d" % i * (1 + i % 7))
        items.append((os.fsencode(root / f"f{i}"), len(b"%d" % i) * (1 + i % 7)))
    return items


def _in_thread_while(call, act):
    """``call()``'s result, ``act()`` repeated in a thread meanwhile (begun before the
    call); and what it raised."""
    done, acting = threading.Event(), threading.Event()
    raised: list[BaseException] = []

    def keep_acting() -> None:
        while not done.is_set():
            try:
                act()
            except Exception as e:  # (kept for the test to look at)
                raised.append(e)
            acting.set()
            time.sleep(0)

    thread = threading.Thread(target=keep_acting)
    thread.start()
    acting.wait()
    try:
        return call(), raised
    finally:
        done.set()
        thread.join()


def test_the_c_content_ids_stopped_mid_call_keep_the_ids_read_before(tmp_path):
    """Stopped while it runs (from another thread, as `take` does), the call answers a prefix
    of the files with the ids of an unstopped call, every file after it ``STOPPED``: no id
    for a file it did not read whole, none lost for one it did. Set after the call, the flag
    changes nothing."""
    fastscan = _hashing.fastscan
    assert fastscan is not None
    items = _many_files(tmp_path)
    ids = fastscan.content_ids(items)
    assert all(isinstance(cid, str) for cid in ids)
    for _ in range(5):
        stop = bytearray(1)
        timer = threading.Timer(0.0005, stop.__setitem__, (0, 1))
        timer.start()
        got = fastscan.content_ids(items, stop)
        timer.join()
        read = len(got) - got.count(fastscan.STOPPED)
        assert got == ids[:read] + [fastscan.STOPPED] * (len(items) - read)
    stop = bytearray(1)
    assert fastscan.content_ids(items, stop) == ids
    stop[0] = 1
    assert ids and fastscan.content_ids(items, stop) == [fastscan.STOPPED] * len(items)


def test_the_c_content_ids_stop_cannot_be_resized_under_the_call(tmp_path):
    """The flag is read without the GIL: resizing the bytearray meanwhile (which may move or
    free its bytes) is refused (BufferError) while the call runs (b92361e read the old
    buffer: use after free), and allowed again after it."""
    fastscan = _hashing.fastscan
    assert fastscan is not None
    items = _many_files(tmp_path)
    stop = bytearray(1)

    def resize() -> None:
        stop.extend(bytes(4096))
        del stop[1:]

    ids = fastscan.content_ids(items)
    for _ in range(20):  # (until the thread has run during a call: the first, as a rule)
        got, raised = _in_thread_while(lambda: fastscan.content_ids(items * 4, stop), resize)
        assert all(isinstance(e, BufferError) for e in raised)
        assert got == ids * 4 and stop == bytearray(1)
        if raised:
            break
    assert raised
    resize()


def test_the_c_content_ids_take_only_exact_int_sizes(tmp_path):
    """A size's ``__index__`` is Python code that could change the list being read: such a
    size is refused (b92361e called it, then read the emptied list: a segfault)."""
    fastscan = _hashing.fastscan
    assert fastscan is not None
    items = _many_files(tmp_path, 3)

    class Size:
        def __index__(self) -> int:
            listed.clear()
            return 1

    listed = [items[0], (items[1][0], Size()), items[2]]
    with pytest.raises(TypeError):
        fastscan.content_ids(listed)
    with pytest.raises(TypeError):
        fastscan.content_ids([(items[0][0], 1, 2)])


async def test_a_prescan_taken_before_its_content_ids_leaves_them_to_the_runs(store_path, tmp_path):
    """`take` stops the content ids at once (the next file): a prescan taken before it
    read any keeps no id (not a ``STOPPED`` code), and the job's runs read every file, to
    the same groups."""
    root = tmp_path / "t"
    _tree(root)
    prescan = Prescan([str(root)], 1)
    prescan._ids_stop[0] = 1  # (as `take` sets it, here before the thread starts)
    prescan._thread.start()
    _finished(prescan)
    assert prescan.known == {}
    async with parjobs.open_manager(store_path) as manager:
        job = DuplicatesJob(paths=[str(root)], prescan=prescan)
        result = await (await manager.submit(job)).result()
    assert [g["paths"] for g in result["groups"]] == [[str(root / "a/one"), str(root / "b/one")]]
    assert prescan.taken and prescan._ids_stop[0] == 1


def test_no_prescan_without_the_c_scan(tmp_path, monkeypatch):
    """Where the job scans in Python (no `_fastscan`), nothing is begun early: that walk
    holds the GIL, which start-up needs."""
    monkeypatch.setattr(_hashing, "fastscan", None)
    assert Prescan.start([str(tmp_path)], 1) is None


def test_the_command_line_hands_its_scan_to_the_job(tmp_path, monkeypatch, capsys):
    """``parjobs dupes`` (here a relative path, made absolute as the job's) begins the scan
    right after parsing and the job takes it; ``--detach`` (a worker runs the job) does not
    begin one."""
    _tree(tmp_path / "t")
    taken: list[list[bytes]] = []
    real_take = Prescan.take

    def take(self, stopped):
        taken.append(self.roots)
        return real_take(self, stopped)

    monkeypatch.setattr(prescan_mod.Prescan, "take", take)
    monkeypatch.chdir(tmp_path)
    store = str(tmp_path / "jobs.sqlite")
    assert main(["--store", store, "dupes", "t"]) == 0
    assert taken == [[os.fsencode(tmp_path / "t")]]
    lines = capsys.readouterr().out.splitlines()
    assert lines == ["# 2 copies of 11 B", str(tmp_path / "t/a/one"), str(tmp_path / "t/b/one")]
    started: list[object] = []
    monkeypatch.setattr(prescan_mod.Prescan, "start", lambda *a: started.append(a))
    assert main(["--store", store, "dupes", "--detach", "t"]) == 0
    assert started == []
