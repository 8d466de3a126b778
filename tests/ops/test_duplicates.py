"""DuplicatesJob through a real manager: exact agreement with the sequential reference."""

from __future__ import annotations

import collections
import contextlib
import errno
import json
import os
import random
import shutil
import sqlite3
import stat
import threading
import time

import pytest
import trio
from _strace import traced

import parjobs
from parjobs import JobStatus
from parjobs._exceptions import JobLoadError
from parjobs._job import load_job
from parjobs._stores import open_store
from parjobs.cli import _format as cli_format
from parjobs.cli import _results as cli_results
from parjobs.ops import _duplicates as dup_mod
from parjobs.ops import _entries as entries_mod
from parjobs.ops import _hashing
from parjobs.ops import _walk as walk_mod
from parjobs.ops._duplicates import DuplicatesJob
from parjobs.ops._hashing import (
    CONTENT_ID_SMALL_LIMIT,
    content_id,
    content_ids,
    full_hashes,
    hash_file,
)
from parjobs.ops._prescan import clock_ns
from parjobs.ops._sequential import find_duplicates_sequential


def _write(path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _tree(root) -> None:
    """Every case the stages must tell apart (and a group whose walk order, a directory's
    files before its subdirectories', is not its sorted order: s/z-last before s/x/hello2)."""
    big = os.urandom(200 * 1024)
    for rel in ("a/big1", "b/big2", "c/d/big3"):  # identical large files
        _write(root / rel, big)
    os.link(root / "a/big1", root / "a/big1-hardlink")  # same inode: counted once
    _write(root / "b/big-other1", os.urandom(200 * 1024))  # same size, different content
    _write(root / "b/big-other2", os.urandom(200 * 1024))
    # same header, samples and footer, different middle: same content id, different hash
    base = bytearray(os.urandom(300 * 1024))
    changed = bytearray(base)
    changed[100_000] ^= 0xFF
    _write(root / "m/mid1", bytes(base))
    _write(root / "m/mid2", bytes(changed))
    _write(root / "m/mid3-copy-of-1", bytes(base))
    assert content_id(root / "m/mid1") == content_id(root / "m/mid2")
    for rel in ("s/hello1", "s/x/hello2", "hello3", "s/z-last"):  # identical small files
        _write(root / rel, b"hello world\n")
    _write(root / "s/hellp", b"hellp world\n")  # same size, different small content
    _write(root / "h/lonely", b"only two links to me")  # two links, no copy: no group
    os.link(root / "h/lonely", root / "h/lonely2")
    _write(root / "e/empty1", b"")
    _write(root / "e/empty2", b"")
    _write(root / "u/unique", b"unique")
    os.symlink(root / "a/big1", root / "a/symlink-to-big1")  # ignored
    os.mkfifo(root / "e/fifo")


def _walk_order(root) -> list[str]:
    """Regular files and links in the job's walk order (names sorted, a directory's own
    entries before its subdirectories')."""
    out: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        out.extend(os.path.join(dirpath, f) for f in sorted(filenames))
    return out


def _expected(root, min_size: int) -> dict:
    report = find_duplicates_sequential(_walk_order(root))
    groups = [g for g in report.groups if g.size >= min_size]
    return {
        "groups": [{"size": g.size, "digest": g.digest, "paths": sorted(g.paths)} for g in groups],
        "duplicate_files": sum(len(g.paths) - 1 for g in groups),
        "reclaimable_bytes": sum(g.reclaimable for g in groups),
    }


def _vanishing(monkeypatch, victim: str) -> None:
    """From now on, reading ``victim``'s content id finds it gone (unlinked just before),
    in a run (`content_ids`) or alone (`content_id`)."""
    real, real_many = content_id, content_ids

    def unlink(path) -> None:
        if os.fsdecode(path) == victim and os.path.exists(path):
            os.unlink(path)

    def vanishing(path, **kwargs):
        unlink(path)
        return real(path, **kwargs)

    def vanishing_many(items, **kwargs):
        for path, _ in items:
            unlink(path)
        return real_many(items, **kwargs)

    monkeypatch.setattr(dup_mod, "content_id", vanishing)
    monkeypatch.setattr(dup_mod, "content_ids", vanishing_many)


async def _run_losing(store_path, root, monkeypatch, victim: str) -> dict:
    """The job's result on ``root`` with ``victim`` gone when read: reported once, alone."""
    _vanishing(monkeypatch, victim)
    async with parjobs.open_manager(store_path) as manager:
        handle = await manager.submit(DuplicatesJob(paths=[str(root)]))
        result = await handle.result()
        (error,) = await manager.errors(handle.id)
    assert (error.label, error.stage) == (victim, "id-files")
    assert "No such file or directory" in error.message
    assert result["failed"] == 1
    return result


@pytest.mark.parametrize("min_size", [1, 0, 250 * 1024])
async def test_report_equals_the_sequential_reference(store_path, tmp_path, min_size, scan_path):
    root = tmp_path / "t"
    _tree(root)
    async with parjobs.open_manager(store_path) as manager:
        handle = await manager.submit(DuplicatesJob(paths=[str(root)], min_size=min_size))
        result = await handle.result()
        assert (await handle.info()).status is JobStatus.COMPLETED
    expected = _expected(root, min_size)
    assert {k: result[k] for k in expected} == expected
    assert result["files_scanned"] == 19 and result["failed"] == 0
    sizes = [g["size"] for g in result["groups"]]
    if min_size == 1:
        assert sizes == [300 * 1024, 200 * 1024, 12]
        assert result["groups"][1]["paths"] == [
            str(root / p) for p in ("a/big1", "b/big2", "c/d/big3")
        ]
        assert result["groups"][0]["paths"] == [
            str(root / "m/mid1"),
            str(root / "m/mid3-copy-of-1"),
        ]
    elif min_size == 0:
        assert sizes[-1] == 0 and result["groups"][-1]["paths"] == [
            str(root / "e/empty1"),
            str(root / "e/empty2"),
        ]
    else:
        assert sizes == [300 * 1024]


async def test_pause_between_stages_then_resume_gives_the_same_report(
    store_path, tmp_path, monkeypatch
):
    """Paused in the full-hash stage and resumed: nothing finished is read again, and the
    resumed run takes the files from the scan the first run saved (names with a newline
    and bytes that are not UTF-8 included), not from a new walk: a file made meanwhile is
    not looked at, and the report is the tree's as it was at the start."""
    root = tmp_path / "t"
    _tree(root)
    for i in range(30):  # more candidates, so the content-id stage has real work
        _write(root / "n" / f"n{i:02}", os.urandom(50_000 + i % 3))
    for k in (1, 2):
        _write(root / os.fsdecode(b"odd/a\nname \xff-%d" % k), b"odd names")
    expected = _expected(root, 1)
    scans: list[tuple[object, ...]] = []
    real_scan = dup_mod._scan_tree

    def listing(*args):
        scans.append(args)
        return real_scan(*args)

    monkeypatch.setattr(dup_mod, "_scan_tree", listing)
    ids: collections.Counter[str] = collections.Counter()
    hashed: collections.Counter[str] = collections.Counter()
    in_full_hash = threading.Event()
    lock = threading.Lock()
    real_cids, real_hash, real_hashes = content_ids, hash_file, full_hashes

    def counting_cids(items, **kwargs):
        with lock:
            ids.update(os.fsdecode(path) for path, _ in items)
        return real_cids(items, **kwargs)

    def slow_hash(path, size=None, each=None, **kwargs):
        in_full_hash.set()
        time.sleep(0.05)
        digest = each([(path, size)])[0] if each else real_hash(path, **kwargs)
        with lock:
            hashed[os.fsdecode(path)] += 1
        return digest

    def slow_hashes(items):  # the runs' calls into C (one file at a time here)
        return [slow_hash(path, size=size, each=real_hashes) for path, size in items]

    monkeypatch.setattr(dup_mod, "content_ids", counting_cids)
    monkeypatch.setattr(dup_mod, "hash_file", slow_hash)  # the runs' in Python
    monkeypatch.setattr(dup_mod, "full_hashes", slow_hashes)
    # The 200 KiB files in C (one a call), the 300 KiB ones in Python, where C is built.
    monkeypatch.setattr(dup_mod, "HASH_CALL_BYTES", 250 * 1024)
    monkeypatch.setattr(entries_mod, "hash_file", slow_hash)  # file by file, after the pause
    async with parjobs.open_manager(store_path, workers=2) as manager:
        handle = await manager.submit(DuplicatesJob(paths=[str(root)]))
        with trio.fail_after(10):
            while not in_full_hash.is_set():
                await trio.sleep(0.002)
        await manager.pause(handle.id)
        assert await handle.wait() is JobStatus.PAUSED
        first_ids = sum(ids.values())
        assert first_ids == 30 + 5 + 3 + 5 + 2, "the content-id stage finished"
        assert len(hashed) < 6, "paused inside the full-hash stage"
        job_dir = manager.job_dir(handle.id)
        assert os.listdir(job_dir).count(dup_mod.SCAN_FILE) == 1
        assert not [n for n in os.listdir(job_dir) if n.endswith(".tmp")], "no temporary left"
        assert stat.S_IMODE(os.stat(os.path.join(job_dir, dup_mod.SCAN_FILE)).st_mode) == 0o600

        _write(root / "s/hello4-made-meanwhile", b"hello world\n")
        await manager.resume(handle.id)
        result = await handle.result()
    assert len(scans) == 1, "the resumed run read the saved scan"
    assert sum(ids.values()) == first_ids, "finished content ids are not computed again"
    assert set(hashed.values()) == {1}, "no file is fully hashed twice"
    large = [p for p in _walk_order(root) if os.lstat(p).st_size > CONTENT_ID_SMALL_LIMIT]
    assert sorted(hashed) == sorted(
        set(large)
        - {str(root / "a/big1-hardlink")}
        - {str(root / "b/big-other1"), str(root / "b/big-other2")}
    )
    assert {k: result[k] for k in expected} == expected


def _pairs_and_twins(root) -> None:
    """Six pairs of large identical files (full hashes), ``p{k}a`` and ``p{k}b``, and two
    small identical ones (the content id is the answer), ``s1`` and ``s2``."""
    for k in range(6):
        data = os.urandom(150 * 1024)
        _write(root / f"p{k}a", data)
        _write(root / f"p{k}b", data)
    _write(root / "s1", b"small twin\n")
    _write(root / "s2", b"small twin\n")


class _Hashed(collections.Counter[str]):
    """The counts of the files hashed, by path; while ``hold`` is set, a hash begun once that
    many files are hashed waits for ``released`` (`_pause_after`: the pause is asked for
    before more is hashed, however late a loaded machine lets the test ask)."""

    hold: int | None = None
    released = threading.Event()


def _slow_hashing(monkeypatch) -> _Hashed:
    """Every full hash (in a run, in C or Python, or alone) takes 50 ms, one file a call:
    the counts of the files hashed, by path."""
    hashed = _Hashed()
    hashed.released = threading.Event()
    lock = threading.Lock()
    real_hash, real_hashes = hash_file, full_hashes

    def slow_hash(path, size=None, each=None, **kwargs):
        hold = hashed.hold
        if hold is not None and sum(hashed.values()) >= hold:
            hashed.released.wait(10)
        time.sleep(0.05)
        digest = each([(path, size)])[0] if each else real_hash(path, **kwargs)
        with lock:
            hashed[os.fsdecode(path)] += 1
        return digest

    def slow_hashes(items):
        return [slow_hash(path, size=size, each=real_hashes) for path, size in items]

    monkeypatch.setattr(dup_mod, "hash_file", slow_hash)
    monkeypatch.setattr(dup_mod, "full_hashes", slow_hashes)
    monkeypatch.setattr(dup_mod, "HASH_CALL_BYTES", 150 * 1024)
    monkeypatch.setattr(entries_mod, "hash_file", slow_hash)
    return hashed


@contextlib.asynccontextmanager
async def _paused(store_path, tmp_path, monkeypatch, n: int, workers: int = 2):
    """A job on `_pairs_and_twins` with `_slow_hashing`, paused once ``n`` files are hashed:
    ``(manager, handle, root, hashed)``."""
    root = tmp_path / "t"
    _pairs_and_twins(root)
    # The job's first run must begin a tick after the last write: else a resumed run takes
    # the files written in its start's tick as changed since (rightly: it cannot tell) and
    # reads them again.
    _tick(root / "s2")
    hashed = _slow_hashing(monkeypatch)
    async with parjobs.open_manager(store_path, workers=workers) as manager:
        handle = await manager.submit(DuplicatesJob(paths=[str(root)]))
        await _pause_after(manager, handle, hashed, n)
        yield manager, handle, root, hashed


async def _pause_after(manager, handle, hashed: _Hashed, n: int) -> None:
    """Pause the job once ``n`` files are hashed (in all), and wait until it rests. Hashes
    begun meanwhile wait until the pause is asked for (those in flight then end)."""
    hashed.hold = n
    try:
        with trio.fail_after(10):
            while sum(hashed.values()) < n:
                await trio.sleep(0.002)
        await manager.pause(handle.id)
    finally:
        hashed.released.set()
    assert await handle.wait() is JobStatus.PAUSED
    hashed.hold = None
    hashed.released.clear()


def _flip(path, at: int) -> None:
    """Rewrite ``path`` with its byte ``at`` changed (the same size)."""
    data = bytearray(path.read_bytes())
    data[at] ^= 0xFF
    _write(path, bytes(data))


async def _fresh_counts(store_path, root) -> tuple[int, int, int, int]:
    """``(items done, items total, bytes done, bytes total)`` of an uninterrupted run on
    ``root`` as it is now."""
    async with parjobs.open_manager(store_path) as manager:
        handle = await manager.submit(DuplicatesJob(paths=[str(root)]))
        await handle.result()
        return _counts(await handle.info())


def _counts(info) -> tuple[int, int, int, int]:
    p = info.progress
    assert info.done_items == p.items_done and info.done_bytes == p.bytes_done
    return (p.items_done, p.items_total, p.bytes_done, p.bytes_total)


async def test_a_resume_that_cannot_find_its_scan_fails_rather_than_renumber_files(
    store_path, tmp_path, monkeypatch
):
    """The job's saved scan gone (its store opened by another path: its private directory
    elsewhere), the resumed run scanned anew and numbered the files otherwise (files added
    since, sorting first): the digests checkpointed by index then stood for other files.
    It fails now, saying so."""
    async with _paused(store_path, tmp_path, monkeypatch, 8) as (manager, handle, root, _):
        shutil.rmtree(manager.job_dir(handle.id))
        for k in range(3):
            _write(root / f"a{k}", os.urandom(150 * 1024))
        await manager.resume(handle.id)
        with trio.fail_after(30):
            assert await handle.wait() is JobStatus.FAILED
        assert "the record of its scan" in ((await handle.info()).error or "")


async def test_a_job_begun_before_its_scan_was_recorded_is_recorded_on_its_next_run(
    tmp_path, monkeypatch
):
    """A job begun before ef856be has no record of its saved scan in its state. Resumed by
    this version it loaded the scan and recorded nothing, so resumed later where its
    private directory is not, it scanned anew and renumbered the files. A loaded scan is
    recorded too: that later resume fails, saying so."""
    db = str(tmp_path / "jobs.sqlite")
    async with _paused(db, tmp_path, monkeypatch, 6) as (_, handle, root, hashed):
        pass
    with contextlib.closing(sqlite3.connect(db)) as c, c:
        (text,) = c.execute("SELECT state FROM jobs WHERE id = ?", (handle.id,)).fetchone()
        state = json.loads(text)
        del state[walk_mod.WALKS]  # as the code before ef856be left it
        c.execute("UPDATE jobs SET state = ? WHERE id = ?", (json.dumps(state), handle.id))
    async with parjobs.open_manager(db, workers=1) as manager:
        await manager.resume(handle.id)
        await _pause_after(manager, manager.handle(handle.id), hashed, sum(hashed.values()) + 1)
        shutil.rmtree(manager.job_dir(handle.id))
        for k in range(3):
            _write(root / f"a{k}", os.urandom(150 * 1024))
        await manager.resume(handle.id)
        with trio.fail_after(30):
            assert await manager.wait(handle.id) is JobStatus.FAILED
        assert "the record of its scan" in ((await manager.get(handle.id)).error or "")


async def test_a_file_changed_during_a_pause_is_read_again_on_resume(
    store_path, tmp_path, monkeypatch
):
    """Paused after some hashes (and every content id) were checkpointed, then files of
    finished groups rewritten with the same size and content id (one with its mtime set
    back: its ctime still moves), and a small one: the resumed run reads those again, so
    no stale hash or id groups them with their old twins, and hashes no unchanged file
    twice; its progress counts each file once, as an uninterrupted run's does."""
    async with _paused(store_path, tmp_path, monkeypatch, 8) as (manager, handle, root, hashed):
        first = dict(hashed)
        pairs = [k for k in range(6) if f"{root}/p{k}a" in first and f"{root}/p{k}b" in first]
        assert len(pairs) >= 2, "two groups hashed whole before the pause"
        assert len(first) < 12, "paused inside the full-hash stage"
        rewritten, set_back = root / f"p{pairs[0]}b", root / f"p{pairs[1]}b"
        old = os.lstat(set_back)
        for path in (rewritten, set_back):  # one byte the content id does not sample
            cid = content_id(path)
            _flip(path, 100_000)
            assert content_id(path) == cid, "only its full hash tells it from its old twin"
        os.utime(set_back, ns=(old.st_atime_ns, old.st_mtime_ns))
        assert os.lstat(set_back).st_mtime_ns == old.st_mtime_ns
        _write(root / "s2", b"small twix\n")
        expected = _expected(root, 1)
        await manager.resume(handle.id)
        result = await handle.result()
        counts = _counts(await handle.info())
    assert {k: result[k] for k in expected} == expected
    grouped = {p for g in result["groups"] for p in g["paths"]}
    assert not grouped & {str(rewritten), str(set_back), str(root / "s1"), str(root / "s2")}
    again = {p for p, n in hashed.items() if n > 1}
    assert again == {str(rewritten), str(set_back)}, "only the changed files are read again"
    assert counts == await _fresh_counts(store_path, root)
    assert counts[0] == counts[1] == 14 + 12 and counts[2] == counts[3]


async def test_two_pauses_with_files_changed_during_each_report_the_tree_as_it_is(
    store_path, tmp_path, monkeypatch
):
    """Paused twice, files changed during each pause (the second undoing some of the first:
    a file made a copy again, a small file its twin again, while another group is split):
    the report is a fresh run's on the tree as it is at the end, and progress counts each
    file once."""
    async with _paused(store_path, tmp_path, monkeypatch, 6) as (manager, handle, root, hashed):
        first = set(hashed)
        assert len(first) < 12, "paused inside the full-hash stage"
        done = sorted(k for k in range(6) if f"{root}/p{k}b" in first)
        assert done, "a pair's second file hashed before the first pause"
        _flip(root / f"p{done[0]}b", 100_000)  # a hashed file: no longer a copy
        _write(root / "s2", b"small twix\n")  # no longer a twin
        await manager.resume(handle.id)
        await _pause_after(manager, handle, hashed, sum(hashed.values()) + 3)
        _flip(root / f"p{done[0]}b", 100_000)  # a copy again
        _write(root / "s2", b"small twin\n")  # a twin again
        later = sorted(k for k in range(6) if k != done[0] and f"{root}/p{k}b" in hashed)
        _flip(root / f"p{later[-1]}a", 120_000)  # hashed before the second pause: split
        expected = _expected(root, 1)
        await manager.resume(handle.id)
        result = await handle.result()
        counts = _counts(await handle.info())
    assert {k: result[k] for k in expected} == expected
    assert len(result["groups"]) == 6  # five pairs and the small twins
    assert counts == await _fresh_counts(store_path, root)


def _tick(path) -> None:
    """Wait until the clock runs past ``path``'s ctime: a run begun in the same tick of the
    kernel's coarse clock would take the file as changed since it began (and read it)."""
    ctime = os.lstat(path).st_ctime_ns
    while clock_ns() <= ctime:
        time.sleep(0.001)


def _completed(manager, handle, stage: str) -> set[int]:
    """The task indices ``stage`` recorded as finished (a file's number, in a recheck)."""
    ranges = manager.store.completed_ranges(handle.id).get(stage, [])
    return {i for a, z in ranges for i in range(a, z)}


async def _hashed_in(manager, handle, stage: str) -> set[str]:
    """The files whose full hash ``stage`` recorded (the item log)."""
    return {r.source for r in await manager.items(handle.id, action="hashed") if r.stage == stage}


async def test_a_later_resume_reuses_what_an_earlier_one_read_again(
    store_path, tmp_path, monkeypatch
):
    """Paused in the full hashes, files changed (hashed ones, the same content id; a small
    one, so its content-id run is read again whole), resumed, paused while the changed files
    are hashed again, one of those and the small file changed once more, resumed: the third
    run reads again only what changed during the second pause (the content ids of those two
    only, no hash the second run took again but the file changed twice), which is grouped
    by its latest content; the report is a fresh run's, its counts too."""
    async with _paused(store_path, tmp_path, monkeypatch, 8, workers=1) as paused:
        manager, handle, root, hashed = paused
        first = [p for p, n in hashed.items() if n == 1 and "/p" in p and p.endswith("b")]
        assert len(first) >= 3, "three second files of pairs hashed before the first pause"
        for path in first:  # no longer copies
            _flip(root / os.path.basename(path), 100_000)
        _write(root / "s2", b"small twix\n")
        _tick(root / "s2")
        await manager.resume(handle.id)
        with trio.fail_after(10):  # the first hashed again (alone): pause
            while sum(hashed[p] for p in first) <= len(first):
                await trio.sleep(0.002)
        await manager.pause(handle.id)
        assert await handle.wait() is JobStatus.PAUSED
        names = sorted(os.listdir(root))  # the candidates, numbered in walk order
        assert _completed(manager, handle, "id-recheck-2") == set(range(len(names)))
        again = await _hashed_in(manager, handle, "hash-recheck-2")
        assert again and again < set(first), "paused while they are hashed again"
        twice = sorted(again)[0]
        _flip(root / os.path.basename(twice), 100_000)  # a copy again
        _write(root / "s2", b"small twin\n")  # a twin again
        expected = _expected(root, 1)
        await manager.resume(handle.id)
        result = await handle.result()
        counts = _counts(await handle.info())
        changed_twice = {names.index("s2"), names.index(os.path.basename(twice))}
        assert _completed(manager, handle, "id-recheck-3") == changed_twice
        third = await _hashed_in(manager, handle, "hash-recheck-3")
    assert third == set(first) - again | {twice}
    assert {k: result[k] for k in expected} == expected
    grouped = {p for g in result["groups"] for p in g["paths"]}
    assert twice in grouped and str(root / "s2") in grouped
    assert not grouped & (set(first) - {twice})
    assert counts == await _fresh_counts(store_path, root)


async def test_progress_never_counts_more_than_its_totals_after_files_changed(
    store_path, tmp_path, monkeypatch
):
    """Paused with pairs hashed whole (a hash run a pair), then one of those deleted and
    another's grown: the resumed run no longer hashes their pairs (nothing shares their
    content id), yet what the first run counted for them stays counted, so the totals keep
    it too: paused again, the job shows the work left (it showed as much done as its
    totals, all of it, with hashes still to do); at the end done is the total."""
    monkeypatch.setattr(dup_mod, "HASH_RUN_FILES", 2)  # each pair its own hash run
    async with _paused(store_path, tmp_path, monkeypatch, 6, workers=1) as paused:
        manager, handle, root, hashed = paused
        pairs = [k for k in range(6) if f"{root}/p{k}a" in hashed and f"{root}/p{k}b" in hashed]
        assert len(pairs) >= 2 and len(hashed) < 8, "two pairs hashed, two runs not begun"
        os.unlink(root / f"p{pairs[0]}b")
        with open(root / f"p{pairs[1]}b", "ab") as f:
            f.write(b"grown")
        await manager.resume(handle.id)
        await _pause_after(manager, handle, hashed, sum(hashed.values()) + 1)
        p = (await handle.info()).progress
        assert p.items_finished < p.items_total, "hashes left to do"
        assert p.bytes_done < p.bytes_total
        paused_total = p.items_total
        await manager.resume(handle.id)
        result = await handle.result()
        p = (await handle.info()).progress
    assert result["failed"] == 2  # the file gone and the one grown
    assert p.items_finished == p.items_total == paused_total == 14 + 12
    assert p.bytes_done == p.bytes_total


async def test_bytes_a_paused_hash_counted_do_not_stay_counted_once_it_is_not_needed(
    store_path, tmp_path, monkeypatch
):
    """A large file left by a paused hash run, begun alone on resume (its bytes counted as
    read), paused again, then its twin deleted: the last run does not hash it (no twin to
    compare), and the bytes it had counted are no longer shown as done (they were, to the
    end, above every count the store kept)."""
    root = tmp_path / "t"
    for k in range(2):
        data = os.urandom(6 << 20)
        _write(root / f"p{k}a", data)
        _write(root / f"p{k}b", data)
    monkeypatch.setattr(dup_mod, "HASH_CALL_BYTES", 6 << 20)  # a call a file
    calls: list[str] = []
    asked = threading.Event()
    real_hashes = full_hashes

    def first_waits(items):  # the first call ends once the pause is asked for
        out = real_hashes(items)
        calls.append("run")
        if len(calls) == 1:
            asked.wait(5)
        return out

    def begun(path, check=None, on_bytes=None, **kwargs):  # reads a little, then waits
        on_bytes(1000)
        calls.append("alone")
        while True:
            check()
            time.sleep(0.005)

    monkeypatch.setattr(dup_mod, "full_hashes", first_waits)
    async with parjobs.open_manager(store_path, workers=1) as manager:
        handle = await manager.submit(DuplicatesJob(paths=[str(root)]))
        with trio.fail_after(10):
            while not calls:
                await trio.sleep(0.001)
        await manager.pause(handle.id)
        asked.set()
        assert await handle.wait() is JobStatus.PAUSED
        monkeypatch.setattr(entries_mod, "hash_file", begun)
        await manager.resume(handle.id)
        with trio.fail_after(10):
            while "alone" not in calls:
                await trio.sleep(0.001)
        await manager.pause(handle.id)
        assert await handle.wait() is JobStatus.PAUSED
        assert (await handle.info()).progress.partial == (("hash-files", 1, 1000),)
        monkeypatch.setattr(entries_mod, "hash_file", hash_file)
        os.unlink(root / "p0a")
        await manager.resume(handle.id)
        result = await handle.result()
        info = await handle.info()
    assert [g["paths"] for g in result["groups"]] == [[str(root / "p1a"), str(root / "p1b")]]
    p = info.progress
    assert not p.partial and p.bytes_done == info.done_bytes == p.bytes_total


async def test_stages_are_planned_while_the_scan_is_saved_and_run_after(
    store_path, tmp_path, monkeypatch
):
    """The scan's record is saved (two fsyncs) while the content-id runs are planned, and
    no task runs before it is durable (a checkpoint must never name numbers a power cut
    could take away); a save that fails fails the job with its own error, nothing run."""
    root = tmp_path / "t"
    _tree(root)
    events: list[str] = []
    real_save, real_runs, real_id_run = dup_mod.Scan.save, dup_mod._runs, dup_mod.IdRunTask.run

    def slow_save(self, path):
        time.sleep(0.2)  # (the planning takes well under that)
        real_save(self, path)
        events.append("saved")

    def planning(by_size):
        events.append("planned")
        return real_runs(by_size)

    def id_run(self, tc):
        events.append("id-run")
        return real_id_run(self, tc)

    monkeypatch.setattr(dup_mod.Scan, "save", slow_save)
    monkeypatch.setattr(dup_mod, "_runs", planning)
    monkeypatch.setattr(dup_mod.IdRunTask, "run", id_run)
    async with parjobs.open_manager(store_path, workers=2) as manager:
        result = await (await manager.submit(DuplicatesJob(paths=[str(root)]))).result()
    assert result["groups"]
    assert events[:2] == ["planned", "saved"], "planned during the save"
    assert set(events[2:]) == {"id-run"}, "no run before the save"

    def failing_save(self, path):
        time.sleep(0.1)
        raise OSError(28, "No space left on device")

    events.clear()
    monkeypatch.setattr(dup_mod.Scan, "save", failing_save)
    async with parjobs.open_manager(store_path, workers=2) as manager:
        handle = await manager.submit(DuplicatesJob(paths=[str(root)]))
        assert await handle.wait() is JobStatus.FAILED
        info = await manager.get(handle.id)
    assert "No space left on device" in (info.error or "")
    assert "ExceptionGroup" not in (info.error or "")
    assert events == ["planned"]


def test_the_saved_scan_is_fsynced_with_the_directories_that_name_it(tmp_path):
    """The scan's record, fsynced before any task runs, was named by the job directory and
    ``<store>.d``, made with it, but only the job directory was synced: a power cut could
    lose the record with ``<store>.d``'s own name (the store's first job makes it), and the
    resume failed (ManifestLostError). Seen by ``strace -f -y`` of a real ``parjobs dupes``
    whose store is the first in its directory: the job directory, ``<store>.d`` and the
    store's directory are each fsynced."""
    root, state = tmp_path / "t", tmp_path / "state"
    for name in ("a", "b"):
        _write(root / name, b"same bytes")
    state.mkdir()
    store = state / "jobs.sqlite"
    argv = ["-m", "parjobs", "--store", str(store), "dupes", str(root)]
    calls = [line for line in traced(tmp_path, argv, "fsync", paths=True) if "fsync(" in line]
    scans = [line for line in calls if f"/{dup_mod.SCAN_FILE}" in line]
    assert scans, calls
    job_dir = scans[0].split("<", 1)[1].split(f"/{dup_mod.SCAN_FILE}")[0]
    assert os.path.dirname(job_dir) == f"{store}.d", scans
    for directory in (job_dir, f"{store}.d", str(state)):
        assert any(f"<{directory}>)" in line for line in calls), (directory, calls)


async def test_unreadable_candidate_is_reported_and_left_out(
    store_path, tmp_path, monkeypatch, scan_path
):
    root = tmp_path / "t"
    _tree(root)
    result = await _run_losing(store_path, root, monkeypatch, str(root / "b/big2"))
    big = next(g for g in result["groups"] if g["size"] == 200 * 1024)
    assert big["paths"] == [str(root / "a/big1"), str(root / "c/d/big3")]


@pytest.mark.parametrize(
    ("spec", "match"), [({"paths": []}, "no paths"), ({"paths": ["x"], "min_size": -1}, ">= 0")]
)
async def test_bad_specs_are_refused(store_path, spec, match):
    async with parjobs.open_manager(store_path) as manager:
        with pytest.raises(parjobs.JobSpecError, match=match):
            await manager.submit(DuplicatesJob(**spec))


async def test_small_files_go_in_runs_and_a_failure_in_a_run_is_reported_once(
    store_path, tmp_path, monkeypatch, scan_path
):
    """Content ids run in runs of many files (one task each) and so do full hashes; a file
    is read on its own (`run`) only when its run could not read it, here one file that
    vanished, which is reported once; no byte is counted twice, and progress counts the
    files of a run."""
    root = tmp_path / "t"
    for i in range(200):
        data = os.urandom(100 + i)
        _write(root / "a" / f"{i:03}", data)
        _write(root / "b" / f"{i:03}", data)
    big = os.urandom(200 * 1024)  # full-hashed, in one run
    for i in range(20):
        _write(root / "c" / f"big{i:02}", big)
    victim = str(root / "b" / "007")
    _vanishing(monkeypatch, victim)
    alone: collections.Counter[str] = collections.Counter()
    real_cid_run, real_hash_run = dup_mod.ContentIdTask.run, entries_mod.HashTask.run
    real_hash_runs = dup_mod.HashRunTask.run

    def cid_run(self, tc):
        alone["id-files"] += 1
        return real_cid_run(self, tc)

    def hash_run(self, tc):
        alone["hash-files"] += 1
        return real_hash_run(self, tc)

    def hash_runs(self, tc):
        alone["hash-runs"] += 1
        return real_hash_runs(self, tc)

    monkeypatch.setattr(dup_mod.ContentIdTask, "run", cid_run)
    monkeypatch.setattr(entries_mod.HashTask, "run", hash_run)
    monkeypatch.setattr(dup_mod.HashRunTask, "run", hash_runs)
    async with parjobs.open_manager(store_path) as manager:
        handle = await manager.submit(DuplicatesJob(paths=[str(root)]))
        result = await handle.result()
        (error,) = await manager.errors(handle.id)
        info = await handle.info()
    assert (error.label, error.stage) == (victim, "id-files")
    assert result["failed"] == 1 and len(result["groups"]) == 200
    assert alone["id-files"] < 20 and alone["hash-runs"] == 1 and not alone["hash-files"], alone
    ids = sum(100 + i for i in range(200)) * 2 - (100 + 7) + 20 * dup_mod.content_id_cost(len(big))
    assert info.progress.bytes_done == ids + 20 * len(big), "every byte counted once"
    # Progress counts files, not runs: 420 content ids + 20 hashes, each once (the file read
    # again alone is one failed item, not one more: 441 items for 440 files before).
    p = info.progress
    assert (p.items_done, p.items_failed, p.items_total) == (439, 1, 440)


async def _pause_when(manager, handle, entered: threading.Event, released: threading.Event):
    """Pause the job once a worker thread it holds sets ``entered``, then let that thread go
    on (``released``), and wait until the job rests."""
    try:
        with trio.fail_after(10):
            while not entered.is_set():
                await trio.sleep(0.002)
        await manager.pause(handle.id)
    finally:
        released.set()
    assert await handle.wait() is JobStatus.PAUSED


async def _resumed_to_its_end(manager, handle):
    """Resume the job and follow it to its end: ``(snapshots, result, info, errors)``."""
    await manager.resume(handle.id)
    seen = [snapshot async for snapshot in manager.watch(handle.id)]
    result = await handle.result()
    return seen, result, await handle.info(), await manager.errors(handle.id)


def _unreadable(real, victim: str):
    """``real`` (a read of the file its first argument names) failing with an I/O error for
    ``victim``, every time."""

    def reading(path, **kwargs):
        if os.fsdecode(path) == victim:
            raise OSError(errno.EIO, os.strerror(errno.EIO), victim)
        return real(path, **kwargs)

    return reading


def _hashed_then_held(monkeypatch, last: str, entered, released) -> None:
    """Hold a dupes job's hash run (its one call into C, or its ``last`` file in Python)
    until ``released``, having set ``entered``; then it hashes every file, paused or not."""
    real_hash, real_hashes = hash_file, full_hashes

    def held(path, **kwargs):
        if os.fsdecode(path) == last and not released.is_set():
            entered.set()
            released.wait(10)
            kwargs["check"] = lambda: None  # (paused meanwhile: hashed whole all the same)
        return real_hash(path, **kwargs)

    def held_many(items):
        if not released.is_set():
            entered.set()
            released.wait(10)
        return real_hashes(items)

    monkeypatch.setattr(dup_mod, "hash_file", held)
    monkeypatch.setattr(dup_mod, "full_hashes", held_many)


def _four_same(tmp_path):
    """``(root, victim)``: four files ``a`` ... ``d`` of the same 200 KiB (full-hashed, in
    one run), the victim ``c``."""
    root = tmp_path / "t"
    big = os.urandom(200 * 1024)
    for name in ("a", "b", "c", "d"):
        _write(root / name, big)
    return root, str(root / "c")


def _each_file_once(seen: list, files: int, failed: int) -> None:
    """The snapshots ``seen`` count each of ``files`` items once: a total declared final
    never changes, what is finished never exceeds the total, and the last counts ``failed``
    of them failed, the rest done."""
    final = [p.items_total for p in seen if p.totals_final]
    assert final and set(final) == {files}, [(p.items_total, p.totals_final) for p in seen]
    for p in seen:
        assert p.items_done + p.items_failed + p.items_skipped <= (p.items_total or 0), p
    last = seen[-1]
    assert (last.items_done, last.items_failed, last.items_total) == (files - failed, failed, files)


@pytest.mark.parametrize(
    ("change", "reason"), [("vanish", "No such file or directory"), ("grow", "changed")]
)
async def test_a_file_a_hash_run_could_not_read_is_hashed_alone_and_reported(
    store_path, tmp_path, monkeypatch, change, reason, scan_path
):
    """A file gone or grown between its content id and its full hash is left out by its
    hash run and hashed again alone (``hash-files``), which reports it once, with its path
    and reason; the run's other files are hashed and recorded once each, the others of its
    group still found. Each file is one item, the failed one too: the totals, final once the
    hashes begin, never grow (they went 8 -> 9, final, with 8 done and 1 failed)."""
    root, victim = _four_same(tmp_path)
    real_hash, real_hashes = hash_file, full_hashes

    def meddle(path) -> None:
        if os.fsdecode(path) == victim:
            if change == "vanish":
                os.unlink(path)
            else:
                with open(path, "ab") as f:
                    f.write(b"more")

    def meddling(path, **kwargs):
        meddle(path)
        return real_hash(path, **kwargs)

    def meddling_many(items):  # (in C, where it is built: all four files in one call)
        for path, _ in items:
            meddle(path)
        return real_hashes(items)

    monkeypatch.setattr(dup_mod, "hash_file", meddling)
    monkeypatch.setattr(dup_mod, "full_hashes", meddling_many)
    seen: list = []
    async with parjobs.open_manager(store_path) as manager:
        handle = await manager.submit(DuplicatesJob(paths=[str(root)]))
        async for snapshot in manager.watch(handle.id):
            seen.append(snapshot)
        result = await handle.result()
        (error,) = await manager.errors(handle.id)
        hashed = await manager.items(handle.id, action="hashed")
        p = (await handle.info()).progress
    assert (error.label, error.stage) == (victim, "hash-files")
    _each_file_once(seen, 8, 1)  # 4 content ids, 4 hashes
    assert (p.items_done, p.items_failed, p.items_total) == (7, 1, 8)
    # Each file counted once, the grown one no more than its listed size (its run's share).
    assert p.bytes_total == 4 * (dup_mod.content_id_cost(200 * 1024) + 200 * 1024) >= p.bytes_done
    assert reason in error.message
    assert result["failed"] == 1
    assert [g["paths"] for g in result["groups"]] == [[str(root / n) for n in ("a", "b", "d")]]
    assert sorted(r.source for r in hashed) == [str(root / n) for n in ("a", "b", "d")]


async def test_a_file_a_hash_run_could_not_read_is_one_failed_item_after_a_resume(
    store_path, tmp_path, monkeypatch, scan_path
):
    """A job paused after its hash run left a file it could not read (an I/O error, every
    time: the file itself unchanged, so not read again for its content id) to ``hash-files``
    and before that file was read alone counts it once when resumed: the run's checkpoint
    holds the files it hashed, and the file is one failed item, with its reason (resumed, it
    was 8 done + 1 failed of 9 for 8 files)."""
    root, victim = _four_same(tmp_path)
    real_hashes = full_hashes
    entered, released = threading.Event(), threading.Event()
    failing = _unreadable(hash_file, victim)

    def failing_many(items):  # (in C: None for a file it could not read)
        digests = real_hashes(items)
        failed = [os.fsdecode(p) == victim for p, _ in items]
        return [None if bad else d for bad, d in zip(failed, digests, strict=True)]

    def held(path, **kwargs):  # the file alone: waits for the pause the first time
        if os.fsdecode(path) == victim and not released.is_set():
            entered.set()
            released.wait(10)
            kwargs["check"]()  # (paused: raises)
        return failing(path, **kwargs)

    monkeypatch.setattr(dup_mod, "hash_file", failing)
    monkeypatch.setattr(dup_mod, "full_hashes", failing_many)
    monkeypatch.setattr(entries_mod, "hash_file", held)
    seen: list = []
    async with parjobs.open_manager(store_path) as manager:
        handle = await manager.submit(DuplicatesJob(paths=[str(root)]))
        await _pause_when(manager, handle, entered, released)
        p = (await handle.info()).progress
        assert p.items_done + p.items_failed <= (p.items_total or 0) <= 8, p
        await manager.resume(handle.id)
        async for snapshot in manager.watch(handle.id):
            seen.append(snapshot)
        result = await handle.result()
        (error,) = await manager.errors(handle.id)
    assert (error.label, error.stage) == (victim, "hash-files")
    assert "Input/output error" in error.message and result["failed"] == 1
    _each_file_once(seen, 8, 1)
    assert [g["paths"] for g in result["groups"]] == [[str(root / n) for n in ("a", "b", "d")]]


def test_the_scan_in_c_equals_the_python_scan(tmp_path):
    """`_fastscan.scan_tree` (the scan in one C call) finds what the Python scan finds
    (`list_files` then `_candidates`): the same candidates numbered in walk order (a
    directory's files before its subdirectories', one name per inode, the first; none below
    ``min_size``; only shared sizes), the same errors and the same count of files, with
    names that are not UTF-8, roots that are a file, a symlink or missing; and None once
    ``stopped()``."""
    if _hashing.fastscan is None:
        pytest.skip("the C extension _fastscan is not built")
    root = tmp_path / "t"
    _tree(root)
    _write(root / "s" / "z-after-dirs", b"hello world\n")  # named after s/x/: listed before it
    for k in (1, 2):
        _write(root / os.fsdecode(b"odd/a\nname \xff-%d" % k), b"odd names")
    os.link(root / "a/big1", root / "0-first-name-of-big1")  # the first name walked
    os.symlink(root / "a", root / "link-to-a")
    roots = [str(root), str(tmp_path / "missing"), str(root / "s/hellp"), str(root / "link-to-a")]
    for min_size in (0, 1, 13, 250 * 1024):
        found = walk_mod.list_files(roots, lambda: False)
        assert found is not None
        files, errors = found
        python = (dup_mod._candidates(files, min_size), errors, len(files))
        in_c = _hashing.fastscan.scan_tree(
            [os.fsencode(os.path.normpath(r)) for r in roots], min_size, lambda: False
        )
        assert in_c == python
    assert in_c[1] == [(os.fsencode(tmp_path / "missing"), "No such file or directory")]
    assert in_c[0] == [  # min_size 250 KiB
        (i, os.fsencode(root / p), 300 * 1024)
        for i, p in enumerate(("m/mid1", "m/mid2", "m/mid3-copy-of-1"))
    ]
    assert _hashing.fastscan.scan_tree([os.fsencode(root)], 1, lambda: True) is None


def test_hash_runs_are_planned_from_the_scan_alone(monkeypatch):
    """The hash runs come from the scan (files over `CONTENT_ID_SMALL_LIMIT`, in scan order,
    packed by bytes and count), whatever the content ids then keep: a resumed job plans the
    same indices, and a run that keeps no file is not dispatched."""
    monkeypatch.setattr(dup_mod, "HASH_RUN_FILES", 3)
    big = CONTENT_ID_SMALL_LIMIT + 1
    monkeypatch.setattr(dup_mod, "HASH_RUN_BYTES", 5 * big)
    sizes = [big, 10, big, big, big, 3 * big, big, 10, 4 * big]
    files = [(i, b"f%d" % i, size) for i, size in enumerate(sizes)]
    runs = dup_mod._hash_plan(files)
    assert [[f[0] for f in r.files] for r in runs] == [[0, 2, 3], [4, 5, 6], [8]]
    assert [r.index for r in runs] == [0, 4, 8]
    kept = [r for r in runs if dup_mod._fill(r, {2, 5, 6})]
    assert [(r.index, [f[0] for f in r.files], r.cost, r.items) for r in kept] == [
        (0, [2], big, 1),
        (4, [5, 6], 4 * big, 2),
    ]


async def test_a_size_group_split_over_runs_is_grouped_whole(
    store_path, tmp_path, monkeypatch, scan_path
):
    """A size group bigger than `RUN_FILES` is split over several runs: its ids are matched
    across them (a copy whose twin went to another run is still found), and a file no run
    could read is retried and reported on its own, with its path and stage."""
    monkeypatch.setattr(dup_mod, "RUN_FILES", 4)
    root = tmp_path / "t"
    contents = [os.urandom(64) for _ in range(5)]
    for i in range(10):  # one size group of 10: three runs; copies 0+5, 1+6, ... far apart
        _write(root / f"f{i:02}", contents[i % 5])
    _write(root / "g/x", b"other size")
    _write(root / "g/y", b"other size")
    result = await _run_losing(store_path, root, monkeypatch, str(root / "f03"))
    assert sorted(g["paths"] for g in result["groups"]) == [
        [str(root / "f00"), str(root / "f05")],
        [str(root / "f01"), str(root / "f06")],
        [str(root / "f02"), str(root / "f07")],
        [str(root / "f04"), str(root / "f09")],
        [str(root / "g/x"), str(root / "g/y")],
    ]


def test_runs_pack_whole_size_groups_and_split_big_ones(monkeypatch):
    """Runs are built the same way every time (their indices are how a resumed job knows
    what it finished): whole size groups packed up to `RUN_FILES`, a bigger one split."""
    monkeypatch.setattr(dup_mod, "RUN_FILES", 4)
    files = [(i, b"f%d" % i, size) for i, size in enumerate([5, 5, 7, 7, 7, 9, 9])]
    files += [(7 + i, b"g%d" % i, 11) for i in range(6)]
    by_size: dict[int, list[dup_mod._File]] = {}
    for f in files:
        by_size.setdefault(f[2], []).append(f)
    runs = dup_mod._runs(by_size)
    assert [([f[0] for f in r.files], r.split) for r in runs] == [
        ([0, 1], []),
        ([2, 3, 4], []),
        ([5, 6], []),
        ([7, 8, 9, 10], [11]),
        ([11, 12], [11]),
    ]
    assert [r.index for r in runs] == [0, 2, 5, 7, 11]
    assert [r.weight for r in runs] == [2 * 5, 3 * 7, 2 * 9, 4 * 11, 2 * 11]  # bytes read
    assert [r.index for r in dup_mod._runs(by_size)] == [r.index for r in runs]


@pytest.mark.parametrize("odd", [None, 'caf\u00e9 "q"', "bad-\udcff"])
async def test_the_stored_result_is_the_generic_encoders_text(store_path, tmp_path, odd, scan_path):
    """The result's JSON, built by `_result_json` (for a tree of plain names, and with a
    copy under a name JSON escapes), is byte for byte what ``json.dumps`` writes, in the
    store as in the result read back."""
    root = tmp_path / "t"
    _tree(root)
    if odd is not None:
        _write(root / odd, b"hello world\n")
    async with parjobs.open_manager(store_path) as manager:
        handle = await manager.submit(DuplicatesJob(paths=[str(root)]))
        result = await handle.result()
    assert dup_mod._result_json(result) == json.dumps(result)
    with contextlib.closing(sqlite3.connect(store_path)) as db:
        (text,) = db.execute("SELECT result FROM jobs").fetchone()
    assert text == json.dumps(result)


async def test_the_reports_own_json_text_is_stored(store_path, tmp_path, monkeypatch, scan_path):
    """The report makes its groups' JSON text as it makes them (plain names): the stored
    result is that text, ``json.dumps``' byte for byte, not the result encoded again."""
    root = tmp_path / "t"
    _tree(root)
    _write(root / "q/sp ace,[]{}:", b"hello world\n")  # JSON-plain, if not shell-plain

    def encoded_again(result):
        raise AssertionError("the result was encoded again")

    monkeypatch.setattr(dup_mod, "_result_json", encoded_again)
    async with parjobs.open_manager(store_path) as manager:
        result = await (await manager.submit(DuplicatesJob(paths=[str(root)]))).result()
    with contextlib.closing(sqlite3.connect(store_path)) as db:
        (text,) = db.execute("SELECT result FROM jobs").fetchone()
    assert text == json.dumps(result)
    assert result == {**_expected(root, 1), "files_scanned": 20, "failed": 0}


_ODD_NAMES = [b'say "hi"', b"back\\slash", b"new\nline", b"tab\t", b"del\x7f", b"b\xff"]


@pytest.mark.parametrize("odd", [None, *_ODD_NAMES, "caf\u00e9".encode(), b"\x80"])
def test_the_reports_groups_and_text_in_c_are_the_pythons(odd, monkeypatch):
    """`_fastscan.report_groups` makes `_report`'s groups (the same dicts, keys in the same
    order, paths decoded as ``os.fsdecode`` does and sorted as str, not as bytes: an
    undecodable byte sorts after ``é`` though its byte is smaller) and their JSON text,
    ``json.dumps``' byte for byte, or None where a string would be escaped."""
    if _hashing.fastscan is None:
        pytest.skip("the C extension _fastscan is not built")
    names = [b"/t/a", b"/t/b c", b"/t/sp ace,[]{}:", b"/t/z", b"/t/~"]
    if odd is not None:  # (and an é, which b"\x80", decoded, sorts before)
        names += [b"/t/" + odd, b"/t/d/" + odd, b"/t/\xc3\xa9"]
    files = [(i, name, 1 << 40) for i, name in enumerate(names)]
    n = len(files)
    found = [
        (1 << 40, "0123abcd" * 4, list(range(n))[::-1]),
        (5, "ffff" * 8, [n - 1, 0, 2]),
        (7, "00" * 16, [1, 4]),
    ]
    c_report = dup_mod._report(files, [(s, d, m[:]) for s, d, m in found])
    monkeypatch.setattr(_hashing, "fastscan", None)
    py_report = dup_mod._report(files, [(s, d, m[:]) for s, d, m in found])
    assert c_report == py_report
    assert [list(g) for g in c_report.groups] == [["size", "digest", "paths"]] * 3
    assert c_report.groups[0]["paths"] == sorted(map(os.fsdecode, names))
    if odd is None:
        assert c_report.text == json.dumps(c_report.groups)[1:-1]
    else:
        assert c_report.text is None


@pytest.mark.parametrize("in_c", [True, False])
@pytest.mark.parametrize("odd", [None, b"new\nline", b"b\xff"])
def test_a_report_joined_from_the_hashed_and_the_settled_groups_is_the_whole_one(
    in_c, odd, monkeypatch
):
    """The job reports the groups its content ids settled (sizes up to
    ``CONTENT_ID_SMALL_LIMIT``) while the larger ones are hashed, then joins the two reports
    (`_joined`): the same groups, order, counts and JSON text as one report of them all,
    whichever part holds a name that needs escaping (then no text), or is empty."""
    if in_c and _hashing.fastscan is None:
        pytest.skip("the C extension _fastscan is not built")
    if not in_c:
        monkeypatch.setattr(_hashing, "fastscan", None)
    limit = CONTENT_ID_SMALL_LIMIT
    names = [b"/t/a", b"/t/b", b"/t/c", b"/t/d", b"/t/e", b"/t/f"]
    if odd is not None:
        names[4] = b"/t/" + odd
    files = [(i, name, 0) for i, name in enumerate(names)]
    big = [(limit + 1, "ff" * 16, [1, 0]), (1 << 40, "00" * 16, [2, 3])]
    small = [(limit, "ab" * 16, [4, 5]), (0, "ee" * 16, [3, 1, 2]), (limit, "aa" * 16, [0, 5])]
    for hashed, settled in [(big, small), (big, []), ([], small), (big[:1], small[:1])]:
        whole = dup_mod._report(files, [(s, d, m[:]) for s, d, m in hashed + settled])
        joined = dup_mod._joined(
            dup_mod._report(files, [(s, d, m[:]) for s, d, m in hashed]),
            dup_mod._report(files, [(s, d, m[:]) for s, d, m in settled]),
        )
        assert joined == whole
        assert [g["size"] for g in joined.groups] == sorted(
            [g["size"] for g in joined.groups], reverse=True
        )
        if joined.text is not None:
            assert joined.text == json.dumps(joined.groups)[1:-1]
        else:
            assert odd is not None and 4 in [i for _, _, m in hashed + settled for i in m]


def test_the_reports_groups_in_c_refuse_what_is_not_a_scan():
    """Wrong input is an exception, not a crash or a wrong report."""
    if _hashing.fastscan is None:
        pytest.skip("the C extension _fastscan is not built")
    report = _hashing.fastscan.report_groups
    files = [(0, b"/t/a", 3), (1, b"/t/b", 3)]
    assert report(files, []) == ([], "")
    with pytest.raises(IndexError):
        report(files, [(3, "d", [0, 2])])
    with pytest.raises(TypeError):
        report(files, [(3, "d")])
    with pytest.raises(TypeError):
        report([(0, "/t/a", 3)], [(3, "d", [0])])  # a path as str


def _lines_in_python(result, monkeypatch):
    with monkeypatch.context() as patch:
        patch.setattr(_hashing, "fastscan", None)
        return cli_results._duplicate_groups(result)


def test_the_printed_groups_in_c_are_the_pythons(monkeypatch):
    """`_fastscan.group_lines` makes the lines ``parjobs dupes`` prints as the Python loop
    does: each size as `fmt.size` writes it (its own float formatting below 2**53, `size`
    itself above), the paths as they are (non-ASCII and surrogate-escaped too)."""
    fastscan = _hashing.fastscan
    if fastscan is None:
        pytest.skip("the C extension _fastscan is not built")
    edges = [0, 1, 999, 1000, 1004, 1005, 9994, 9995, 9999, 10_000, 99_949, 99_950, 99_999]
    edges += [999_499, 999_500, 10**6, 999_499_999, 999_500_000, 10**15 - 1, 10**17]
    edges += [2**53 - 1, 2**53, 2**53 + 1, 2**63 - 1, 2**63, 10**21]
    rng = random.Random(16)
    sizes = edges + [rng.randrange(1, 10**k) for k in range(2, 17) for _ in range(300)]
    paths = ["/t/a", "/t/caf\u00e9", "/t/bad-\udcff", "/t/\u4e2d", "/t/x y"]
    groups = [{"size": n, "digest": "d", "paths": paths[: 2 + k % 4]} for k, n in enumerate(sizes)]
    result = {"groups": groups, "failed": 0}
    made = fastscan.group_lines(groups, cli_format.size)
    assert made is not None
    assert made == _lines_in_python(result, monkeypatch) == cli_results._duplicate_groups(result)
    heads = [line for line in made if line.startswith("# ")]
    assert heads == [f"# {2 + k % 4} copies of {cli_format.size(n)}" for k, n in enumerate(sizes)]
    assert fastscan.group_lines([], cli_format.size) == []


@pytest.mark.parametrize(
    "odd",
    [
        {"size": True, "paths": ["/t/a"]},
        {"size": "3", "paths": ["/t/a"]},
        {"size": 3},
        {"size": 3, "paths": ["/t/a", 7]},
        {"size": 3, "paths": ("/t/a",)},
        ["/t/a", "/t/b"],
    ],
)
def test_groups_of_another_shape_are_printed_by_the_python_loop(odd, monkeypatch):
    """A group that is not a dict with an int size and a list of str paths (a result read
    from elsewhere) is left to the Python loop, which prints what it always printed."""
    fastscan = _hashing.fastscan
    if fastscan is None:
        pytest.skip("the C extension _fastscan is not built")
    groups = [{"size": 5, "digest": "d", "paths": ["/t/x", "/t/y"]}, odd]
    assert fastscan.group_lines(groups, cli_format.size) is None
    result = {"groups": groups}
    try:
        expected = _lines_in_python(result, monkeypatch)
    except TypeError:  # (a path that is no str: the loop's own failure, as before)
        return
    assert cli_results._duplicate_groups(result) == expected


@pytest.mark.parametrize(
    "name", ['say "hi"', "back\\slash", "new\nline", "tab\t", "del\x7f", "caf\u00e9", "b\udcff"]
)
def test_a_name_json_escapes_is_escaped_alone_as_the_generic_encoder_does(name):
    """A name (or digest) that JSON escapes is escaped where it is, the rest of the result
    still built from its strings: the text is ``json.dumps``' all the same."""
    plain = {"size": 3, "digest": "0123abcd", "paths": ["/t/a", "/t/b c"]}
    result = {"groups": [plain], "duplicate_files": 1, "failed": 0}
    assert dup_mod._result_json(result) == json.dumps(result)
    odd = {"groups": [plain, {**plain, "paths": ["/t/x", f"/t/{name}"]}], "failed": 0}
    assert dup_mod._result_json(odd) == json.dumps(odd)
    odd_digest = {"groups": [{**plain, "digest": name}, plain, {**plain, "paths": [name] * 3}]}
    assert dup_mod._result_json(odd_digest) == json.dumps(odd_digest)


def test_a_result_of_mostly_escaped_names_is_left_to_the_generic_encoder():
    """Escaping string by string pays only for a few such names: past one in eight (and
    64) the result goes to ``json.dumps`` whole."""
    groups = [
        {"size": 3, "digest": f"{k:032x}", "paths": [f"/t/\u00e9{k}", "/t/b"]} for k in range(100)
    ]
    few = {"groups": [*groups[:10], *[{**g, "paths": ["/t/a", "/t/b"]} for g in groups[10:]]]}
    assert dup_mod._result_json(few) == json.dumps(few)
    assert dup_mod._result_json({"groups": groups}) is None
    assert dup_mod._result_json({"groups": [], "failed": 0}) is None


async def test_a_job_stored_now_is_refused_by_the_code_that_misread_its_state(
    store_path, tmp_path, monkeypatch
):
    """A ``hash-runs`` value names the files its run did not hash (``[index, None]``, since
    da8c0b6); parjobs before that took None for their digest: a dupes job paused by this
    code and resumed by bb7f9b7 reported a group without one of its files, or failed. The
    job is stored as version 2 of its type, which that code (version 1) refuses, saying so
    (its `job_class` check, run here with the version it knew); a job stored as version 1
    still loads."""
    root = tmp_path / "t"
    _tree(root)
    async with parjobs.open_manager(store_path) as manager:
        await (await manager.submit(DuplicatesJob(paths=[str(root)]))).result()
    with contextlib.closing(sqlite3.connect(store_path)) as db:
        version, spec = db.execute("SELECT version, spec FROM jobs").fetchone()
    with monkeypatch.context() as m:
        m.setattr(DuplicatesJob, "job_type_version", 1)  # the code before da8c0b6
        with pytest.raises(JobLoadError, match="newer than this code's version 1; upgrade"):
            load_job("duplicates", version, spec)
    assert load_job("duplicates", 1, spec) == DuplicatesJob(paths=[str(root)])


@pytest.mark.both_stores
async def test_a_job_an_older_version_stored_is_refused_by_it_once_this_code_ran_it(
    store_path, tmp_path, monkeypatch
):
    """A dupes job begun by bb7f9b7 (version 1 of its type) and resumed here kept version
    1, so once this code had written its state (``hash-runs`` values naming the files a run
    did not hash) and paused it, that code resumed it again and misread them. The first
    run here stores it as version 2: that code refuses it (its `job_class` check, run here
    with the version it knew), this code still loads it."""
    async with _paused(store_path, tmp_path, monkeypatch, 6) as (_, handle, root, hashed):
        pass
    store = open_store(store_path)
    try:
        # (both stores have `_tx`; the `JobStore` protocol does not name it)
        with store._tx() as c:  # type: ignore[attr-defined]  # as bb7f9b7 stored it
            c.execute("UPDATE jobs SET version = 1 WHERE id = ?", (handle.id,))
    finally:
        store.close()
    async with parjobs.open_manager(store_path, workers=2) as manager:
        assert (await manager.get(handle.id)).version == 1
        await manager.resume(handle.id)
        await _pause_after(manager, manager.handle(handle.id), hashed, sum(hashed.values()) + 1)
        info = await manager.get(handle.id)
    assert info.version == 2
    with monkeypatch.context() as m:
        m.setattr(DuplicatesJob, "job_type_version", 1)
        with pytest.raises(JobLoadError, match="newer than this code's version 1; upgrade"):
            load_job(info.type, info.version, info.spec)
    assert load_job(info.type, info.version, info.spec) == DuplicatesJob(paths=[str(root)])


async def test_a_file_reached_through_two_roots_is_not_its_own_duplicate(
    store_path, tmp_path, monkeypatch, scan_path
):
    """Roots that overlap (the same directory written twice, ``./x``, a directory inside
    another, a symlink to it written ``link/``, a file inside another root) listed a file
    once per root: it was reported as a duplicate of itself (``x/a`` twice, its bytes
    "reclaimable"), and deleting "the other copy" deletes the only one. Each file is listed
    once; a real copy is still found."""
    x = tmp_path / "x"
    (x / "sub").mkdir(parents=True)
    _write(x / "a", b"only one" * 100)
    _write(x / "sub" / "b", b"alone too" * 100)
    _write(x / "sub" / "c", b"a real pair" * 100)
    _write(tmp_path / "c-copy", b"a real pair" * 100)
    os.symlink("x", tmp_path / "link")
    monkeypatch.chdir(tmp_path)
    paths = ["x", "./x", f"{x}/sub", "link/", "x/a", "c-copy", f"{x}/."]
    async with parjobs.open_manager(store_path) as manager:
        handle = await manager.submit(DuplicatesJob(paths=paths))
        result = await handle.result()
    groups = [sorted(g["paths"]) for g in result["groups"]]
    # (as the first root names it, made absolute when the job was submitted)
    assert groups == [[str(tmp_path / "c-copy"), str(x / "sub" / "c")]], result["groups"]
    assert result["duplicate_files"] == 1 and result["files_scanned"] == 4


@pytest.mark.both_stores
@pytest.mark.parametrize("mended", [False, True])
@pytest.mark.parametrize("kind", ["id", "hash"])
async def test_a_file_read_again_on_resume_that_fails_moves_from_done_to_failed(
    store_path, tmp_path, monkeypatch, scan_path, kind, mended
):
    """Paused once every file is hashed, the victim then deleted (its content id read again
    fails, ``id-recheck-2``) or touched with another file and unreadable (ids the same: its
    hash read again fails with an I/O error, ``hash-recheck-2``), resumed, paused again
    while the other changed file is read again, resumed: the failed re-read is one failed
    item, the file no longer counted done, in progress and in the store's done count, on
    both resumes (it counted 8 done, 0 failed of 8, the result saying ``failed: 1``, and the
    job completed without errors); the totals, final, do not move. ``mended``: the victim
    readable again (written back, or no I/O error) before the second resume, it is one item
    done again, as in an uninterrupted run."""
    root, victim = _four_same(tmp_path)
    other = str(root / "d")
    real_hash, real_id = hash_file, content_id
    first, again, first_done, again_held, broken = (threading.Event() for _ in range(5))
    broken.set()

    def hold(event: threading.Event, done: threading.Event) -> None:
        event.set()
        done.wait(10)

    def read_again(real):  # the other changed file, read again: held while the victim fails
        def reading(path, **kwargs):
            name = os.fsdecode(path)
            if name == victim and kind == "hash" and broken.is_set():
                raise OSError(errno.EIO, os.strerror(errno.EIO), victim)
            if name == other and not again_held.is_set():
                hold(again, again_held)
            return real(path, **kwargs)

        return reading

    _hashed_then_held(monkeypatch, other, first, first_done)
    if kind == "id":
        monkeypatch.setattr(dup_mod, "content_id", read_again(real_id))
    else:
        monkeypatch.setattr(entries_mod, "hash_file", read_again(real_hash))
    async with parjobs.open_manager(store_path) as manager:
        handle = await manager.submit(DuplicatesJob(paths=[str(root)]))
        await _pause_when(manager, handle, first, first_done)
        assert _counts(await handle.info())[:2] == (8, 8)
        if kind == "id":
            os.unlink(victim)
        else:
            for path in (victim, other):
                os.chmod(path, 0o640)  # (a new ctime, the same content)
        _tick(other)
        await manager.resume(handle.id)
        try:
            with trio.fail_after(10):  # the victim failed, the other file held
                while not (again.is_set() and await manager.errors(handle.id)):
                    await trio.sleep(0.002)
            await manager.pause(handle.id)
        finally:
            again_held.set()
        assert await handle.wait() is JobStatus.PAUSED
        info = await handle.info()
        p = info.progress
        assert (info.done_items, p.items_done, p.items_failed, p.items_total) == (7, 7, 1, 8)
        if mended:
            broken.clear()
            if kind == "id":
                shutil.copyfile(other, victim)
        seen, result, info, errors = await _resumed_to_its_end(manager, handle)
    failed = 0 if mended else 1
    assert info.status is JobStatus.COMPLETED_WITH_ERRORS if failed else JobStatus.COMPLETED
    assert [(e.label, e.stage) for e in errors] == [(victim, f"{kind}-recheck-3")] * failed
    assert result["failed"] == failed
    _each_file_once(seen, 8, failed)
    assert info.done_items == info.progress.items_done == 8 - failed
    grouped = sorted(p for g in result["groups"] for p in g["paths"])
    assert grouped == sorted(str(root / n) for n in "abcd" if mended or n != "c")


async def test_a_file_no_run_could_read_is_one_item_when_its_run_is_read_again(
    store_path, tmp_path, monkeypatch, scan_path
):
    """A file its content-id run could not read, nor ``id-files`` after it (an I/O error,
    every time), is counted failed, not done; paused in the hashes, another file of its run
    touched, resumed: the run is read again file by file (``id-recheck-2``), where the file
    fails again and is one failed item still, in the totals (it was counted nowhere: 6 done,
    0 failed of 6 for its 7 items), not one taken from those done."""
    root, victim = _four_same(tmp_path)
    other = str(root / "d")
    real_ids = content_ids
    entered, released = threading.Event(), threading.Event()

    def failing_ids(items, **kwargs):  # (the run: None for a file it could not read)
        ids = real_ids(items, **kwargs)
        return [
            None if os.fsdecode(p) == victim else i for (p, _), i in zip(items, ids, strict=True)
        ]

    _hashed_then_held(monkeypatch, other, entered, released)
    monkeypatch.setattr(dup_mod, "content_id", _unreadable(content_id, victim))
    monkeypatch.setattr(dup_mod, "content_ids", failing_ids)
    async with parjobs.open_manager(store_path) as manager:
        handle = await manager.submit(DuplicatesJob(paths=[str(root)]))
        await _pause_when(manager, handle, entered, released)
        p = (await handle.info()).progress
        assert (p.items_done, p.items_failed, p.items_total) == (6, 1, 7)
        os.chmod(other, 0o640)  # (a new ctime, the same content)
        _tick(other)
        seen, result, info, errors = await _resumed_to_its_end(manager, handle)
    assert [(e.label, e.stage) for e in errors] == [(victim, "id-recheck-2")]
    assert result["failed"] == 1
    _each_file_once(seen, 7, 1)
    assert info.done_items == info.progress.items_done == 6


async def test_a_file_no_run_could_read_counts_once_when_its_run_is_read_again_twice(
    store_path, tmp_path, monkeypatch, scan_path
):
    """As above, but the file reads on the second run (``id-recheck-2`` counts it done, one
    item of its own), which pauses in the hashes; the file changed during that pause (the
    run is read again once more, the file too): the third run's re-read is no item, the
    second counted it (728798c counted it again: 9 final items for 8)."""
    root, victim = _four_same(tmp_path)
    other = str(root / "d")
    real_ids = content_ids
    entered, released = threading.Event(), threading.Event()
    broken = threading.Event()
    broken.set()

    def failing_ids(items, **kwargs):  # (the run: None for a file it could not read)
        ids = real_ids(items, **kwargs)
        return [
            None if broken.is_set() and os.fsdecode(p) == victim else i
            for (p, _), i in zip(items, ids, strict=True)
        ]

    def reading(path, **kwargs):
        if broken.is_set() and os.fsdecode(path) == victim:
            raise OSError(errno.EIO, os.strerror(errno.EIO), victim)
        return content_id(path, **kwargs)

    _hashed_then_held(monkeypatch, other, entered, released)
    monkeypatch.setattr(dup_mod, "content_id", reading)
    monkeypatch.setattr(dup_mod, "content_ids", failing_ids)
    async with parjobs.open_manager(store_path) as manager:
        handle = await manager.submit(DuplicatesJob(paths=[str(root)]))
        await _pause_when(manager, handle, entered, released)
        os.chmod(other, 0o640)  # (a new ctime, the same content)
        _tick(other)
        broken.clear()  # (the file reads now)
        entered, released = threading.Event(), threading.Event()
        _hashed_then_held(monkeypatch, victim, entered, released)  # (hashed now: alone)
        # (the one _hashed_then_held put in _duplicates: held there; not exported, so vars)
        monkeypatch.setattr(entries_mod, "hash_file", vars(dup_mod)["hash_file"])
        await manager.resume(handle.id)
        await _pause_when(manager, handle, entered, released)
        assert _completed(manager, handle, "id-recheck-2") == {0, 1, 2, 3}
        os.chmod(victim, 0o640)  # (changed again: read again by the third run)
        _tick(victim)
        seen, result, info, errors = await _resumed_to_its_end(manager, handle)
    assert errors == []
    assert result["failed"] == 0 and len(result["groups"]) == 1
    _each_file_once(seen, 8, 0)
    assert info.done_items == info.progress.items_done == 8
