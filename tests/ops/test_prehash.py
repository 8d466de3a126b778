"""Prehash: a hash job's files hashed before the job runs, each digest taken by its task once,
and only for the file the thread read, unchanged since."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import pytest

import parjobs
from parjobs.cli import main
from parjobs.ops import _entries, _hashing
from parjobs.ops import _prehash as prehash_mod
from parjobs.ops._hash import HashJob
from parjobs.ops._hashing import hash_file
from parjobs.ops._prehash import Prehash

pytestmark = pytest.mark.skipif(
    not _hashing.full_hashes_in_c(), reason="_fastscan.full_hashes is not built"
)
FASTSCAN: Any = _hashing.fastscan


def _tree(root) -> None:
    for rel, data in (
        ("a/one", b"one\n" * 1000),
        ("a/empty", b""),
        ("a/deep/two", b"two\n" * 3),
        ("b/three", b"3" * (3 << 20)),
        ("top", b"top\n"),
    ):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    (root / "link").symlink_to("top")
    _settle()


def _settle() -> None:
    """Let the clock the thread starts from pass the files' ctimes: a file changed within a
    clock tick before it began may carry a finer ctime past that start, and is read again."""
    time.sleep(0.05)


def _finished(prehash: Prehash | None) -> Prehash:
    assert prehash is not None
    prehash._thread.join()  # every file read before the tree changes below
    return prehash


@pytest.fixture
def reads(monkeypatch) -> list[bytes]:
    """The paths the job's tasks read themselves (`hash_file`)."""
    out: list[bytes] = []

    def counting(path, **kwargs):
        out.append(os.fsencode(path))
        return hash_file(path, **kwargs)

    monkeypatch.setattr(_entries, "hash_file", counting)
    return out


async def _digests(store_path: str, paths: list[str], prehash: Prehash | None = None) -> dict:
    async with parjobs.open_manager(store_path) as manager:
        handle = await manager.submit(HashJob(paths=paths, prehash=prehash))
        result = await handle.result()
        items = await manager.items(handle.id, action="hashed")
    assert result["failed"] == 0
    return {item.source: item.detail for item in items}


async def test_the_tasks_take_the_digests_and_read_no_file_again(store_path, tmp_path, reads):
    """Every regular file under the paths (a file root too) is hashed by the thread; the
    job's records are a plain job's, and no task reads a file."""
    root = tmp_path / "t"
    _tree(root)
    (tmp_path / "single").write_bytes(b"alone\n")
    _settle()
    paths = [str(root) + os.sep, str(tmp_path / "single")]
    prehash = _finished(Prehash.start(paths))
    got = await _digests(store_path, paths, prehash)
    assert reads == []
    plain = await _digests(str(tmp_path / "plain.sqlite"), paths)
    assert got == plain and len(got) == 6
    assert reads  # (the plain job read them)


@pytest.mark.parametrize("change", ["rewritten", "replaced", "swapped"])
async def test_a_file_changed_since_the_thread_read_it_is_read_again(
    store_path, tmp_path, reads, change
):
    """The same size and mtime do not hide a change made after the thread began: the file
    rewritten in place (its ctime moves), another file renamed over it (so does that one's),
    or its directory swapped for another holding a file of that size, mtime and an older
    ctime (another inode): the task reads it and records what it holds now."""
    root = tmp_path / "t"
    _tree(root)
    target = root / "a/one"
    before = target.stat()
    new = b"ONE\n" * 1000
    if change == "swapped":
        (root / "a2").mkdir()
        (root / "a2/one").write_bytes(new)
        os.utime(root / "a2/one", ns=(before.st_atime_ns, before.st_mtime_ns))
        _settle()
    prehash = _finished(Prehash.start([str(root)]))
    if change == "rewritten":
        target.write_bytes(new)
    elif change == "replaced":
        (root / "new").write_bytes(new)
        os.rename(root / "new", target)
    else:
        os.rename(root / "a", root / "a_old")
        os.rename(root / "a2", root / "a")
    if change != "swapped":  # (the swapped-in file has them, and its ctime stays older)
        os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    now = target.stat()
    assert (now.st_size, now.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    got = await _digests(store_path, [str(root)], prehash)
    assert got[str(target)] == "xxh3_128:" + hash_file(target)
    assert hash_file(target) != hash_file(root / ("a_old/one" if change == "swapped" else "top"))
    assert os.fsencode(target) in reads
    if change != "swapped":
        assert reads == [os.fsencode(target)] and len(got) == 5


async def test_a_file_changed_before_the_thread_began_is_taken(store_path, tmp_path, reads):
    """What matters is a change after the thread began: a file written just before it is
    read by the thread, after that write, and taken."""
    root = tmp_path / "t"
    _tree(root)
    (root / "a/one").write_bytes(b"fresh\n")
    _settle()
    prehash = _finished(Prehash.start([str(root)]))
    got = await _digests(store_path, [str(root)], prehash)
    assert reads == [] and got[str(root / "a/one")] == "xxh3_128:" + hash_file(root / "a/one")


def test_a_file_a_task_took_first_is_left_to_it(tmp_path, monkeypatch):
    """A task that asks before the thread reached its file gets nothing, and the thread then
    does not read it; asked again, it still gets nothing (a digest is handed out once)."""
    root = tmp_path / "t"
    _tree(root)
    read: list[bytes] = []
    real = FASTSCAN.full_hashes

    def counting(items, stop=None):
        read.extend(path for path, _ in items)
        return real(items, stop)

    monkeypatch.setattr(FASTSCAN, "full_hashes", counting)
    prehash = Prehash([str(root)])  # (not started: the task comes first)
    one = os.fsencode(root / "a/one")
    assert prehash.take(one, lambda: None) is None
    prehash._run()
    assert one not in read and len(read) == 4
    three = os.fsencode(root / "b/three")
    assert prehash.take(three, lambda: None) == (hash_file(three), 3 << 20)
    assert prehash.take(three, lambda: None) is None  # once


def test_a_task_waits_for_the_read_of_its_file_and_gets_its_digest(tmp_path, monkeypatch):
    """A task whose file the thread is reading waits for that read and gets its digest (no
    second read of the file), asking its ``check`` meanwhile: an interrupt stops the wait."""
    root = tmp_path / "t"
    _tree(root)
    release = threading.Event()
    real = FASTSCAN.full_hashes

    def slow(items, stop=None):
        release.wait(10)
        return real(items, stop)

    monkeypatch.setattr(FASTSCAN, "full_hashes", slow)
    monkeypatch.setattr(prehash_mod, "GROUP_FILES", 1)
    prehash = Prehash.start([str(root)])
    assert prehash is not None
    one = os.fsencode(root / "top")  # (the walk's first file: the root's, then a/, b/)
    while not isinstance(prehash._files.get(one), prehash_mod._Reading):
        threading.Event().wait(0.001)
    asked = []

    class Paused(Exception):
        pass

    def check() -> None:
        asked.append(1)
        if len(asked) == 3:
            raise Paused

    with pytest.raises(Paused):
        prehash.take(one, check)
    got: list[object] = []
    waiter = threading.Thread(target=lambda: got.append(prehash.take(one, lambda: None)))
    waiter.start()
    threading.Event().wait(0.05)
    assert waiter.is_alive() and not got
    release.set()
    waiter.join(10)
    # (A stopped wait takes nothing: the task's run asks again.)
    assert got == [(hash_file(one), 4)]
    prehash.drop()
    prehash._thread.join(10)
    assert not prehash._thread.is_alive()


async def test_files_the_thread_could_not_read_are_the_tasks(
    store_path, tmp_path, reads, monkeypatch
):
    """A C call that fails (memory) answers none of its files: the tasks read them all."""
    root = tmp_path / "t"
    _tree(root)

    def failing(items, stop=None):
        raise MemoryError

    real = FASTSCAN.full_hashes
    monkeypatch.setattr(FASTSCAN, "full_hashes", failing)
    prehash = _finished(Prehash.start([str(root)]))
    monkeypatch.setattr(FASTSCAN, "full_hashes", real)
    got = await _digests(store_path, [str(root)], prehash)
    assert len(reads) == len(got) == 5


@pytest.mark.parametrize(("options", "started"), [([], True), (["--algorithm", "xxh64"], False)])
def test_the_command_hashes_from_its_start_for_xxh3_128_only(
    tmp_path, monkeypatch, capfdbinary, options, started
):
    """``parjobs hash`` starts the thread as soon as its command line is parsed (XXH3-128,
    what it computes; not for a job left to a worker); its lines are a plain run's."""
    root = tmp_path / "t"
    _tree(root)
    begun: list[Prehash | None] = []
    real = Prehash.start.__func__  # type: ignore[attr-defined]

    def start(cls, paths):
        begun.append(real(cls, paths))
        return begun[-1]

    monkeypatch.setattr(Prehash, "start", classmethod(start))
    store = str(tmp_path / "s.sqlite")
    code = main(["--store", store, "hash", *options, str(root)])
    out = capfdbinary.readouterr().out
    assert code == 0
    assert bool(begun) == started
    if started:
        lines = sorted(out.splitlines())
        assert lines == sorted(
            f"{hash_file(p)}  {p}".encode()
            for p in (
                root / "a/one",
                root / "a/empty",
                root / "a/deep/two",
                root / "b/three",
                root / "top",
            )
        )
