"""The C group path for small files: `copy_small_files` (parjobs/ops/_fastcopy.c) on its own,
and the groups of a copy and a move (`run_group`) inside their jobs, compared with the Python
path."""

from __future__ import annotations

import errno
import os
import stat
import sys
import threading
import types
from pathlib import Path
from typing import Any

import pytest
import trio
from _trees import read, snapshot, write

import parjobs
from parjobs import JobStatus
from parjobs import _task as task_mod
from parjobs._dispatch import TaskDispatcher
from parjobs._items import Identity, Written, fingerprint
from parjobs._stage import Stage
from parjobs._task import TaskContext
from parjobs.ops import _copy as copy_mod
from parjobs.ops import _hashing as hashing_mod
from parjobs.ops import _kernel
from parjobs.ops import _move as move_mod
from parjobs.ops import _smallfiles as smallfiles_mod
from parjobs.ops import _transfer as transfer_mod
from parjobs.ops._copy import CopyJob
from parjobs.ops._copyfile import CopyOptions, copy_file
from parjobs.ops._fs import noop
from parjobs.ops._move import MoveJob
from parjobs.ops._names import TMP_SUFFIX
from parjobs.ops._smallfiles import copy_small_files, unlink_files
from parjobs.ops._transfer import same_content
from parjobs.ops._walk import Entry, Kind

pytestmark = pytest.mark.skipif(
    smallfiles_mod.fastcopy is None, reason="the C extension was not built (no C compiler)"
)


def temporaries(root: Path) -> list[str]:
    return [
        os.path.join(d, n)
        for d, _, names in os.walk(root)
        for n in names
        if n.endswith(os.fsdecode(TMP_SUFFIX))
    ]


@pytest.fixture
def dst_fd(tmp_path: Path) -> Any:
    (tmp_path / "dst").mkdir()
    fd = os.open(tmp_path / "dst", os.O_RDONLY | os.O_DIRECTORY)
    yield fd
    os.close(fd)


def group(
    tmp_path: Path, dst_fd: int, names: list[bytes], src_lstat: bool = False
) -> tuple[list[int], list[Identity | None]]:
    src = os.fsencode(tmp_path / "src")
    items = [(src + b"/" + n, dst_fd, n) for n in names]
    done = copy_small_files(
        items, src_dev=os.stat(src).st_dev, dst_dev=os.fstat(dst_fd).st_dev, src_lstat=src_lstat
    )
    assert done is not None
    return done


# -- copy_small_files ------------------------------------------------------------------------


def test_copies_contents_mode_and_times_exactly(tmp_path: Path, dst_fd: int) -> None:
    src = tmp_path / "src"
    src.mkdir()
    names = [b"empty", b"one", b"big", "ünï ✓".encode(), b"caf\xe9", b"n" * 255]
    for i, name in enumerate(names):
        path = os.fsencode(src) + b"/" + name
        write(path, os.urandom([0, 1, 3 << 20, 5000, 10, 7][i]))
        os.chmod(path, [0o600, 0o640, 0o755, 0o444, 0o4755, 0o600][i])
        os.utime(path, ns=(1_000_000_123 + i, 1_500_000_000_456_789_012 + i))
    results, written = group(tmp_path, dst_fd, names)
    assert results == [0] * len(names)
    for name, w in zip(names, written, strict=True):
        s = os.stat(os.fsencode(src) + b"/" + name)
        d = os.stat(os.fsencode(tmp_path) + b"/dst/" + name)
        assert read(os.fsencode(tmp_path) + b"/dst/" + name) == read(os.fsencode(src) + b"/" + name)
        assert w is not None  # the identity in place, read back in C (inode and all)
        assert Written(*w) == fingerprint(d) and w[0] == s.st_size
        assert stat.S_IMODE(d.st_mode) == stat.S_IMODE(s.st_mode)
        i = names.index(name)  # (copying read the source: its atime may have moved since)
        assert (d.st_atime_ns, d.st_mtime_ns) == (1_000_000_123 + i, s.st_mtime_ns)
    assert temporaries(tmp_path / "dst") == []


def test_a_durable_group_lands_every_file_in_batches(tmp_path: Path, dst_fd: int) -> None:
    """``durable``: files are written, then fsynced and renamed, a batch of open temporaries
    at a time (more files than a batch here, one of them failing in the middle): each lands
    as without ``durable``, nothing else is left behind."""
    src = tmp_path / "src"
    src.mkdir()
    names = [b"f%02d" % i for i in range(70)]
    for i, name in enumerate(names):
        write(src / os.fsdecode(name), os.urandom(i * 97))
    write(tmp_path / "dst" / "f40", b"the user's file")
    items = [(os.fsencode(src / os.fsdecode(n)), dst_fd, n) for n in names]
    done = copy_small_files(items, src_dev=0, dst_dev=0, durable=True)
    assert done is not None
    results, written = done
    assert results == [errno.EEXIST if n == b"f40" else 0 for n in names]
    assert read(tmp_path / "dst" / "f40") == b"the user's file"
    for name, w in zip(names, written, strict=True):
        if name != b"f40":
            path = tmp_path / "dst" / os.fsdecode(name)
            assert read(path) == read(src / os.fsdecode(name))
            assert w is not None and Written(*w) == fingerprint(os.stat(path))
    assert temporaries(tmp_path / "dst") == []


def test_an_existing_destination_is_left_alone_and_reported(tmp_path: Path, dst_fd: int) -> None:
    (tmp_path / "src").mkdir()
    write(tmp_path / "src" / "a", b"new")
    write(tmp_path / "src" / "b", b"new")
    write(tmp_path / "dst" / "a", b"the user's file")
    os.symlink(tmp_path / "elsewhere", tmp_path / "dst" / "b")  # never followed
    results, _ = group(tmp_path, dst_fd, [b"a", b"b"])
    assert results == [errno.EEXIST, errno.EEXIST]
    assert read(tmp_path / "dst" / "a") == b"the user's file"
    assert os.readlink(tmp_path / "dst" / "b") == str(tmp_path / "elsewhere")
    assert not (tmp_path / "elsewhere").exists()
    assert temporaries(tmp_path / "dst") == []


@pytest.mark.parametrize("src_lstat", [False, True])
def test_missing_special_and_symlinked_sources_are_handed_back(
    tmp_path: Path, dst_fd: int, src_lstat: bool
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    os.mkfifo(src / "fifo")  # must not block: opened O_NONBLOCK, then refused
    os.symlink("/etc/hostname", src / "link")
    write(src / "ok", b"fine")
    results, written = group(tmp_path, dst_fd, [b"gone", b"fifo", b"link", b"ok"], src_lstat)
    assert results[0] == errno.ENOENT
    assert results[1] == results[2] == smallfiles_mod.fastcopy.NOT_REGULAR  # type: ignore[union-attr]
    assert results[3] == 0
    assert written[:3] == [None, None, None] and written[3] is not None
    assert sorted(os.listdir(tmp_path / "dst")) == ["ok"]


def test_a_source_grown_past_max_size_is_handed_back(tmp_path: Path, dst_fd: int) -> None:
    (tmp_path / "src").mkdir()
    write(tmp_path / "src" / "small", b"s" * 100)
    write(tmp_path / "src" / "grown", b"g" * 5000)
    src = os.fsencode(tmp_path / "src")
    items = [(src + b"/small", dst_fd, b"small"), (src + b"/grown", dst_fd, b"grown")]
    done = copy_small_files(items, src_dev=0, dst_dev=0, max_size=1000)
    assert done is not None
    assert done[0] == [0, smallfiles_mod.fastcopy.TOO_BIG]  # type: ignore[union-attr]
    assert sorted(os.listdir(tmp_path / "dst")) == ["small"]


def test_writes_through_the_directory_fd_never_a_path(tmp_path: Path, dst_fd: int) -> None:
    """The destination directory is swapped for a symlink after its fd was opened: the files
    land in the real directory (moved away), nothing in the link's target."""
    (tmp_path / "src").mkdir()
    write(tmp_path / "src" / "f", b"data")
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "dst").rename(tmp_path / "moved")
    os.symlink(outside, tmp_path / "dst")
    results, _ = group(tmp_path, dst_fd, [b"f"])
    assert results == [0]
    assert read(tmp_path / "moved" / "f") == b"data"
    assert os.listdir(outside) == []


def test_bad_items_copy_nothing(tmp_path: Path, dst_fd: int) -> None:
    (tmp_path / "src").mkdir()
    write(tmp_path / "src" / "a", b"a")
    src = os.fsencode(tmp_path / "src")
    fc = smallfiles_mod.fastcopy
    assert fc is not None
    for bad in ([(src + b"/a", dst_fd, b"x/y")], [(src + b"/a", dst_fd, b"")]):
        with pytest.raises(ValueError, match="bad path or name"):
            fc.copy_many(bad, fc.MODE, 1 << 20, b"0123456789abcdef")
    with pytest.raises(TypeError):
        fc.copy_many([(str(tmp_path / "src" / "a"), dst_fd, b"a")], fc.MODE, 1 << 20)
    # A NUL byte: the Python wrapper answers "copy them the other way".
    items = [(src + b"/a", dst_fd, b"a"), (src + b"/a\0", dst_fd, b"b")]
    assert copy_small_files(items, src_dev=0, dst_dev=0) is None
    assert os.listdir(tmp_path / "dst") == []


def test_a_destination_fd_that_is_no_directory_reports_the_errno(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    write(tmp_path / "src" / "a", b"a")
    fd = os.open(tmp_path / "src" / "a", os.O_RDONLY)
    try:
        done = copy_small_files(
            [(os.fsencode(tmp_path / "src" / "a"), fd, b"b")], src_dev=0, dst_dev=0
        )
    finally:
        os.close(fd)
    assert done is not None and done[0] == [errno.ENOTDIR]
    assert os.listdir(tmp_path / "src") == ["a"]


def test_copy_with_compare_lands_exact_copies_of_every_size(tmp_path: Path, dst_fd: int) -> None:
    """copy --verify's C path compares each temporary with its source before the rename:
    empty, one chunk exactly, one byte past it and more than two chunks all land intact (a
    false mismatch would hand them back)."""
    chunk = smallfiles_mod.COMPARE_CHUNK
    src = tmp_path / "src"
    src.mkdir()
    sizes = {b"empty": 0, b"one": 1, b"chunk": chunk, b"chunk+1": chunk + 1, b"big": 2 * chunk + 5}
    for name, size in sizes.items():
        write(src / os.fsdecode(name), os.urandom(size))
    items = [(os.fsencode(src) + b"/" + n, dst_fd, n) for n in sizes]
    done = copy_small_files(items, src_dev=0, dst_dev=0, max_size=4 * chunk, compare=True)
    assert done is not None and done[0] == [0] * len(sizes)
    for name in sizes:
        assert read(tmp_path / "dst" / os.fsdecode(name)) == read(src / os.fsdecode(name))
    assert temporaries(tmp_path / "dst") == []


# -- compare (copy --verify, a move's verify) ------------------------------------------------


def test_compare_passes_copies_of_every_size_around_a_chunk(tmp_path: Path, dst_fd: int) -> None:
    """With ``compare`` C reads each copy back against its source before its rename, to the
    known size and one byte past it (no fstat, no second read to find the end): copies of
    0, 1, a chunk less one, a chunk, a chunk and one, two chunks and five bytes pass, as
    `same_content` says, and take their names."""
    chunk = smallfiles_mod.COMPARE_CHUNK
    data = os.urandom(2 * chunk + 5)
    sizes = {b"0": 0, b"1": 1, b"c-1": chunk - 1, b"c": chunk, b"c+1": chunk + 1}
    sizes[b"2c+5"] = 2 * chunk + 5
    src = tmp_path / "src"
    src.mkdir()
    for name, size in sizes.items():
        write(src / os.fsdecode(name), data[:size])
    items = [(os.fsencode(src) + b"/" + n, dst_fd, n) for n in sizes]
    done = copy_small_files(items, src_dev=os.stat(src).st_dev, dst_dev=0, compare=True)
    assert done is not None and done[0] == [0] * len(sizes)
    for (path, fd, name), size in zip(items, sizes.values(), strict=True):
        assert read(tmp_path / "dst" / os.fsdecode(name)) == data[:size]
        assert same_content(path, fd, name, check=noop)
    assert temporaries(tmp_path / "dst") == []


@pytest.mark.parametrize("side", ["destination", "source"])
def test_same_content_never_waits_on_a_fifo_swapped_in(
    tmp_path: Path, dst_fd: int, side: str
) -> None:
    """A resumed run compares a name in the way with its source (`same_content`) after an
    lstat said both are regular files; a FIFO put there meanwhile is not the same content,
    and opening it must not wait for a writer that never comes (the worker would hang)."""
    src = tmp_path / "src"
    write(src, b"x" * 100)
    write(tmp_path / "dst" / "a", b"x" * 100)
    fifo = src if side == "source" else tmp_path / "dst" / "a"
    fifo.unlink()
    os.mkfifo(fifo)
    got: list[bool] = []
    t = threading.Thread(
        target=lambda: got.append(same_content(os.fsencode(src), dst_fd, b"a", check=noop)),
        daemon=True,
    )
    t.start()
    t.join(5)
    if t.is_alive():  # free the thread: a writer that opens and closes at once
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        t.join(5)
        pytest.fail("same_content waited on a FIFO")
    assert got == [False]


# -- unlink_files -----------------------------------------------------------------------------


def copies_of(tmp_path: Path, names: list[str]) -> tuple[int, dict[str, int]]:
    """A directory ``copies`` holding a file for each of ``names``: its fd (the caller
    closes it) and each file's inode."""
    (tmp_path / "copies").mkdir()
    for name in names:
        write(tmp_path / "copies" / name, b"copy")
    fd = os.open(tmp_path / "copies", os.O_RDONLY | os.O_DIRECTORY)
    return fd, {n: os.lstat(tmp_path / "copies" / n).st_ino for n in names}


def source(path: Path, seen: os.stat_result, dir_fd: int, name: str, ino: int) -> Any:
    """`unlink_files`' item: the source at ``path`` as copied (``seen``), its copy
    ``name`` in ``dir_fd`` with inode ``ino``."""
    ids = (seen.st_size, seen.st_mtime_ns, seen.st_dev, seen.st_ino)
    return (os.fsencode(path), *ids, dir_fd, name.encode(), ino)


def test_unlink_files_removes_only_the_files_copied(tmp_path: Path) -> None:
    """A source is unlinked only while it is the regular file of the device, inode, size
    and mtime it was copied with: one rewritten since (another size, or the same size and a
    new mtime, as a program saving a new version leaves it), replaced by a file renamed over
    it with the same size and mtime (``rsync -a``), or by a directory is kept (CHANGED); a
    missing one reports its errno."""
    names = ("a", "grown", "touched", "renamed", "d")
    for name in names[:-1]:
        write(tmp_path / name, b"old")
    (tmp_path / "d").mkdir()
    seen = {n: os.lstat(tmp_path / n) for n in names}
    write(tmp_path / "grown", b"new version")
    os.utime(tmp_path / "touched", ns=(0, seen["touched"].st_mtime_ns + 1))
    write(tmp_path / "new", b"new")
    os.utime(tmp_path / "new", ns=(0, seen["renamed"].st_mtime_ns))
    os.rename(tmp_path / "new", tmp_path / "renamed")
    fd, ino = copies_of(tmp_path, [*names, "missing"])
    try:
        items = [source(tmp_path / n, s, fd, n, ino[n]) for n, s in seen.items()]
        items.append(
            (os.fsencode(tmp_path / "missing"), 3, 0, 0, 0, fd, b"missing", ino["missing"])
        )
        changed = smallfiles_mod.CHANGED
        assert unlink_files(items) == [0, changed, changed, changed, changed, errno.ENOENT]
    finally:
        os.close(fd)
    assert sorted(os.listdir(tmp_path)) == ["copies", "d", "grown", "renamed", "touched"]
    assert read(tmp_path / "grown") == b"new version"
    assert read(tmp_path / "renamed") == b"new"


def test_unlink_files_keeps_a_source_saved_in_place_with_its_mtime_put_back(
    tmp_path: Path,
) -> None:
    """Given each source's ctime and link count as copied (the eleven-field form): one
    written in place since, its mtime put back, is kept (CHANGED); one that only gained a
    name (another hard link: its ctime moved with the count) goes, as does an untouched one."""
    for name in ("a", "saved", "linked"):
        write(tmp_path / name, b"old")
    seen = {n: os.lstat(tmp_path / n) for n in ("a", "saved", "linked")}
    with open(tmp_path / "saved", "r+b") as f:
        f.write(b"new")
    os.utime(tmp_path / "saved", ns=(seen["saved"].st_atime_ns, seen["saved"].st_mtime_ns))
    os.link(tmp_path / "linked", tmp_path / "other-name")
    fd, ino = copies_of(tmp_path, list(seen))
    try:
        items = [
            (*source(tmp_path / n, s, fd, n, ino[n]), -100, s.st_ctime_ns, s.st_nlink)
            for n, s in seen.items()
        ]
        assert unlink_files(items) == [0, smallfiles_mod.CHANGED, 0]
    finally:
        os.close(fd)
    assert sorted(os.listdir(tmp_path)) == ["copies", "other-name", "saved"]
    assert read(tmp_path / "saved") == b"new"


def test_unlink_files_keeps_a_source_whose_copy_lost_its_name(tmp_path: Path) -> None:
    """Before its source goes, each copy's name must still hold the copy written: one
    replaced since by another file renamed over it, or by a symlink to a copy (never
    followed), is not the move's (NOT_OURS), a missing one reports its errno; those sources
    stay, the copies' directory is untouched, and the source whose copy is in place goes."""
    names = ["a", "b", "c", "d"]
    for name in names:
        write(tmp_path / name, b"source")
    seen = {n: os.lstat(tmp_path / n) for n in names}
    fd, ino = copies_of(tmp_path, ["a", "b"])
    copies = tmp_path / "copies"
    write(copies / "b.new", b"copy")
    os.rename(copies / "b.new", copies / "b")  # another file under the copy's name
    os.symlink("a", copies / "d")
    try:
        items = [
            source(tmp_path / n, s, fd, n, ino["a" if n in "cd" else n]) for n, s in seen.items()
        ]
        not_ours = smallfiles_mod.NOT_OURS
        assert unlink_files(items) == [0, not_ours, errno.ENOENT, not_ours]
    finally:
        os.close(fd)
    assert sorted(os.listdir(tmp_path)) == ["b", "c", "copies", "d"]
    assert sorted(os.listdir(copies)) == ["a", "b", "d"]


def test_unlink_files_takes_exact_types_only(tmp_path: Path) -> None:
    """Each item is an exact (bytes, int, int, int, int, int, bytes, int) tuple, read without
    running Python code (an ``__index__`` could drop an earlier item's path while C holds a
    pointer into it); a path with a NUL, a copy's name with a slash or empty, a negative
    directory fd (never the working directory), a negative inode or one past 2**64 is
    refused, nothing unlinked."""
    write(tmp_path / "a", b"a")
    st = os.lstat(tmp_path / "a")
    path = os.fsencode(tmp_path / "a")
    fd, ino = copies_of(tmp_path, ["a"])

    class Index:
        def __index__(self) -> int:
            return st.st_size

    good = (path, st.st_size, st.st_mtime_ns, st.st_dev, st.st_ino, fd, b"a", ino["a"])
    bad: list[tuple[object, type[Exception]]] = [
        ((path, Index(), *good[2:]), TypeError),
        ((bytearray(path), *good[1:]), TypeError),
        ((*good[:6], bytearray(b"a"), good[7]), TypeError),
        (list(good), TypeError),
        (good[:5], TypeError),
        ((*good[:4], -1, *good[5:]), OverflowError),
        ((*good[:3], 1 << 64, *good[4:]), OverflowError),
        ((*good[:7], -1), OverflowError),
        ((path + b"\0x", *good[1:]), ValueError),
        ((*good[:6], b"copies/a", good[7]), ValueError),
        ((*good[:6], b"", good[7]), ValueError),
        ((*good[:5], -100, *good[6:]), ValueError),
    ]
    try:
        for item, error in bad:
            with pytest.raises(error):
                unlink_files([good, item])  # type: ignore[list-item]
        assert os.path.exists(tmp_path / "a")
        assert unlink_files([good]) == [0]
    finally:
        os.close(fd)


# -- inside a CopyJob ----------------------------------------------------------------------


async def copy(store: str, src: Path, dst: Path, **spec: Any) -> tuple[Any, Any, list[Any]]:
    async with parjobs.open_manager(store, workers=4) as m:
        handle = await m.submit(
            CopyJob(into=True, sources=[str(src)], destination=str(dst), **spec)
        )
        with trio.fail_after(30):
            status = await handle.wait()
        info = await handle.info()
        return status, info.result, await m.errors(handle.id)


def as_paths(items: list[Any]) -> list[tuple[bytes, int, bytes]]:
    """A group's items as (source path, destination dir fd, name): a job's name each source
    by its directory's fd and its name (`SourceDirs`), read back here through /proc."""
    return [
        item
        if len(item) == 3
        else (os.fsencode(os.readlink(f"/proc/self/fd/{item[0]}")) + b"/" + item[1], *item[2:])
        for item in items
    ]


def count_groups(monkeypatch: pytest.MonkeyPatch, before: Any = None) -> list[int]:
    """Count the files the job hands to the C path (calling ``before(items)`` first, its
    items as paths: `as_paths`)."""
    sizes: list[int] = []
    real = smallfiles_mod.copy_small_files

    def counted(items: list[Any], **kwargs: Any) -> Any:
        sizes.append(len(items))
        if before is not None:
            before(as_paths(items))
        return real(items, **kwargs)

    monkeypatch.setattr(smallfiles_mod, "copy_small_files", counted)
    return sizes


def count_built(monkeypatch: pytest.MonkeyPatch, item: Any) -> list[Any]:
    """The entries the job builds an ``item`` task for, in order (its constructor spied)."""
    built: list[Any] = []
    init = item.__init__

    def counted_init(self: Any, entry: Any, *args: Any, **kwargs: Any) -> None:
        built.append(entry)
        init(self, entry, *args, **kwargs)

    monkeypatch.setattr(item, "__init__", counted_init)
    return built


def small_tree(root: Path, n: int = 300) -> None:
    for i in range(n):
        d = root / f"d{i % 4}" / ("sub" if i % 3 else "")
        d.mkdir(parents=True, exist_ok=True)
        write(d / f"f{i:03}", os.urandom(i * 13))
        os.utime(d / f"f{i:03}", ns=(i, 1_600_000_000_000_000_000 + i))
    (root / "empty").mkdir()
    os.symlink("d0/f000", root / "link")
    write(root / "big", os.urandom(3 << 20))  # heavy: copied alone, in chunks


async def test_a_job_copies_small_files_in_groups_identically_to_the_python_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "src"
    small_tree(src)
    groups = count_groups(monkeypatch)
    status, result, errors = await copy(str(tmp_path / "a.sqlite"), src, tmp_path / "a")
    assert status is JobStatus.COMPLETED, errors
    assert sum(groups) >= 250 and max(groups) <= copy_mod.CopyItem.group_size
    monkeypatch.setattr(smallfiles_mod, "fastcopy", None)
    status2, result2, _ = await copy(str(tmp_path / "b.sqlite"), src, tmp_path / "b")
    assert status2 is JobStatus.COMPLETED
    assert result == result2
    assert snapshot(tmp_path / "a" / "src") == snapshot(tmp_path / "b" / "src") == snapshot(src)
    for d, _, names in os.walk(src):
        for name in names:
            s = os.lstat(os.path.join(d, name))
            rel = os.path.relpath(os.path.join(d, name), src)
            for out in ("a", "b"):
                o = os.lstat(tmp_path / out / "src" / rel)
                assert (o.st_mode, o.st_mtime_ns) == (s.st_mode, s.st_mtime_ns), rel
    assert temporaries(tmp_path / "a") == []


async def test_a_bundle_is_one_task_and_still_logs_a_record_per_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A group of small files travels from the walk to the checkpoint as one task (a
    `Bundle`: one queue item, one outcome, one booking in the copy's stage covering its
    files), not one per file; each file is still booked exactly once, and the item log
    still says per file what was done, with the identity undo needs (#13, #18)."""
    src = tmp_path / "src"
    small_tree(src, 300)
    groups = count_groups(monkeypatch)
    bookings: list[int] = []  # indices booked in the copy's stage
    calls: list[int] = []  # indices per booking call
    record = Stage.record

    def booked(self: Stage, outcome: Any, error: Any, tc: Any = None) -> None:
        if self.name == "default":
            covers = tc.covers if tc is not None and tc.covers is not None else None
            got = [outcome.index] if covers is None else covers
            bookings.extend(got)
            calls.append(len(got))
        record(self, outcome, error, tc)

    monkeypatch.setattr(Stage, "record", booked)
    async with parjobs.open_manager(str(tmp_path / "j.sqlite"), workers=4) as m:
        handle = await m.submit(
            CopyJob(into=True, sources=[str(src)], destination=str(tmp_path / "dst"))
        )
        with trio.fail_after(30):
            assert await handle.wait() is JobStatus.COMPLETED
        records = await m.items(handle.id)
        info = await m.get(handle.id)
    assert max(groups) > 1, groups
    assert sorted(bookings) == sorted(set(bookings))  # each entry booked once...
    assert len(bookings) == len(snapshot(src)) + 1  # ...every entry and the root
    # A bundle: one booking. (Under load a bundle hands back what it did not reach in
    # time: those go one by one.)
    assert max(calls) > 1 and len(calls) < len(bookings)
    assert info.done_items == len(bookings) + 1  # (and the finishing step)
    files = {os.path.join(d, n) for d, _, names in os.walk(src) for n in names if n != "link"}
    copied = {r.source: r for r in records if r.action == "copied" and r.detail is None}
    assert set(copied) >= files and len(records) == len({r.index for r in records})
    for path in files:
        r = copied[path]
        dest = str(tmp_path / "dst" / "src" / os.path.relpath(path, src))
        assert r.destination == dest and r.written == fingerprint(os.stat(dest))
        assert r.bytes == os.stat(path).st_size and r.stage == "default"


@pytest.mark.parametrize("op", ["copy", "move"])
async def test_a_first_runs_walk_decides_the_group_path_per_batch_and_checks_nothing_done(
    tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, op: str
) -> None:
    """The trio thread's per-file work in a copy's or move's walk (#18): a first run has
    nothing done, so it asks no done-check per entry, and `CopyPlan.groups` (the move's
    ``move_groups``) is read once per walked batch (and once per group the C path runs), not
    once per file; the files still take the group path. (A resumed run's skips:
    `test_a_resumed_job_runs_files_in_directories_made_before_as_plain_tasks`.) The move's
    groups copy across filesystems."""
    src = tmp_path / "src"
    small_tree(src, 300)
    before = snapshot(src)
    dst = (tmp_path if op == "copy" else request.getfixturevalue("other_fs")) / "dst"
    groups = count_groups(monkeypatch)
    reads, checks, runs = [0], [0], [0]
    prop = "groups" if op == "copy" else "move_groups"
    item = copy_mod.CopyItem if op == "copy" else move_mod.MoveItem
    real_groups = getattr(transfer_mod.CopyPlan, prop)
    assert isinstance(real_groups, property) and real_groups.fget is not None
    fget = real_groups.fget

    def counted_groups(plan: transfer_mod.CopyPlan) -> bool:
        reads[0] += 1
        return bool(fget(plan))

    is_completed = TaskDispatcher.is_completed

    def checked(self: TaskDispatcher, index: int) -> bool:
        checks[0] += 1
        return is_completed(self, index)

    run_entries = item.run_entries.__func__  # type: ignore[union-attr]

    def ran(cls: Any, plan: Any, entries: Any, tc: Any) -> Any:  # (bundles', the pool's groups)
        runs[0] += 1
        return run_entries(cls, plan, entries, tc)

    monkeypatch.setattr(transfer_mod.CopyPlan, prop, property(counted_groups))
    monkeypatch.setattr(TaskDispatcher, "is_completed", checked)
    monkeypatch.setattr(item, "run_entries", classmethod(ran))
    job = (CopyJob if op == "copy" else MoveJob)(
        into=True, sources=[str(src)], destination=str(dst)
    )
    async with parjobs.open_manager(str(tmp_path / "j.sqlite"), workers=4) as m:
        handle = await m.submit(job)
        with trio.fail_after(30):
            assert await handle.wait() is JobStatus.COMPLETED, await m.errors(handle.id)
    assert snapshot(dst / "src") == before
    assert sum(groups) >= 250
    assert checks[0] == 0
    assert 1 <= reads[0] - runs[0] <= 20, (reads, runs)  # 300 files: one read a file before


@pytest.mark.parametrize(
    "spec",
    [
        {"preserve_xattrs": True},
        {"preserve_owner": True},
        {"follow_symlinks": True},
        {"on_conflict": "overwrite"},
    ],
)
async def test_options_beyond_mode_and_times_take_the_python_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spec: dict[str, Any]
) -> None:
    src = tmp_path / "src"
    small_tree(src, 20)
    groups = count_groups(monkeypatch)
    status, _, errors = await copy(str(tmp_path / "j.sqlite"), src, tmp_path / "dst", **spec)
    assert status is JobStatus.COMPLETED, errors
    assert groups == []


async def test_a_durable_copy_takes_the_group_path_and_syncs_each_directory_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``durable`` copies small files in groups too: C is asked to fsync every copy before
    its rename (`fastcopy.FSYNC`), and each directory a group copied into is synced by that
    group's thread before it returns (so before anything is recorded), once per group; the
    tree is the one the Python path makes."""
    src = tmp_path / "src"
    small_tree(src, 60)
    fastcopy = smallfiles_mod.fastcopy
    assert fastcopy is not None
    groups = count_groups(monkeypatch)
    real_group, real_many, real_fsync = transfer_mod.copy_group, fastcopy.copy_many, os.fsync
    seen = threading.local()  # inside copy_group: the directories copied into, and synced
    checked: list[int] = []

    def copy_group(plan: Any, entries: Any, **kwargs: Any) -> Any:
        seen.landed, seen.synced = set(), []
        try:
            return real_group(plan, entries, **kwargs)
        finally:
            assert sorted(seen.synced) == sorted(seen.landed)  # each once, before returning
            checked.append(len(seen.landed))
            del seen.landed

    def copy_many(items: Any, how: int, *args: Any) -> Any:
        assert how & fastcopy.FSYNC
        done = real_many(items, how, *args)
        landed = zip(items, done[0], strict=True)
        seen.landed |= {os.fstat(item[-2]).st_ino for item, result in landed if result == 0}
        seen.synced = []  # (a directory made for the group synced its parent before)
        return done

    def fsync(fd: int) -> None:
        st = os.fstat(fd)
        if hasattr(seen, "landed") and stat.S_ISDIR(st.st_mode):
            seen.synced.append(st.st_ino)
        real_fsync(fd)

    monkeypatch.setattr(copy_mod, "copy_group", copy_group)  # where run_group looks it up
    monkeypatch.setattr(fastcopy, "copy_many", copy_many)
    monkeypatch.setattr(os, "fsync", fsync)
    dst = tmp_path / "a"
    status, result, errors = await copy(str(tmp_path / "a.sqlite"), src, dst, durable=True)
    assert status is JobStatus.COMPLETED, errors
    assert sum(groups) >= 50 and sum(checked) >= 5
    monkeypatch.setattr(smallfiles_mod, "fastcopy", None)
    status2, result2, _ = await copy(str(tmp_path / "b.sqlite"), src, tmp_path / "b", durable=True)
    assert status2 is JobStatus.COMPLETED and result2 == result
    assert snapshot(dst / "src") == snapshot(tmp_path / "b" / "src") == snapshot(src)
    assert temporaries(dst) == []


async def test_a_file_the_group_cannot_copy_is_copied_or_reported_by_the_python_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between the walk and the copy one source vanishes and one destination appears: the
    vanished file fails with a reason naming it, the existing destination is a conflict
    settled by the policy, and every other file of their groups is copied."""
    src = tmp_path / "src"
    small_tree(src, 40)
    dst = tmp_path / "dst"
    victims = {b"f005", b"f006"}

    def before(items: list[tuple[bytes, int, bytes]]) -> None:
        for path, dir_fd, name in items:
            if name == b"f005":
                os.unlink(path)
            elif name == b"f006":
                fd = os.open(name, os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=dir_fd)
                os.write(fd, b"someone else's")
                os.close(fd)

    groups = count_groups(monkeypatch, before)
    status, result, errors = await copy(str(tmp_path / "j.sqlite"), src, dst, on_conflict="skip")
    assert groups
    assert status is JobStatus.COMPLETED_WITH_ERRORS
    assert [e.label for e in errors] == [str(src / "d1" / "sub" / "f005")]
    assert "No such file or directory" in errors[0].message
    assert result["skipped_reasons"] == {"destination exists": 1}
    assert read(dst / "src" / "d2" / "f006") == b"someone else's"
    copied = snapshot(dst / "src")
    for rel, entry in snapshot(src).items():
        if os.path.basename(rel) not in victims:
            assert copied[rel] == entry, rel
    assert temporaries(dst) == []


async def test_pause_and_resume_with_groups_in_flight(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "src"
    small_tree(src, 300)
    store = str(tmp_path / "j.sqlite")
    paused = trio.Event()
    token = trio.lowlevel.current_trio_token()

    def before(items: Any) -> None:
        if not paused.is_set():
            token.run_sync_soon(paused.set)

    count_groups(monkeypatch, before)
    monkeypatch.setattr(copy_mod.CopyItem, "group_size", 4)
    async with parjobs.open_manager(store, workers=2) as m:
        handle = await m.submit(
            CopyJob(into=True, sources=[str(src)], destination=str(tmp_path / "dst"))
        )
        await paused.wait()
        await handle.pause()
        with trio.fail_after(30):
            status = await handle.wait()
        assert status is JobStatus.PAUSED
        await m.resume(handle.id)
        with trio.fail_after(30):
            assert await handle.wait() is JobStatus.COMPLETED
        result = (await handle.info()).result
    # Every count as an uninterrupted copy's (a count once came out 377 here, at load 17).
    size = sum(p.stat().st_size for p in src.rglob("*") if p.is_file() and not p.is_symlink())
    counts = [result[k] for k in ("copied", "files", "symlinks", "dirs", "failed", "skipped")]
    assert counts == [302, 301, 1, 10, 0, 0] and result["bytes"] + result["bytes_reused"] == size
    assert snapshot(tmp_path / "dst" / "src") == snapshot(src)
    assert temporaries(tmp_path / "dst") == []


@pytest.mark.parametrize(
    ("side", "name", "changed"),
    [
        (smallfiles_mod, "NAME_MAX", 254),
        (smallfiles_mod, "RENAME_NOREPLACE", 2),
        (smallfiles_mod, "TMP_SUFFIX", b".other-tmp"),
        (smallfiles_mod, "API", 4),
        (hashing_mod, "CONTENT_ID_BLOCK", 1 << 12),
        (hashing_mod, "API", 1),
        (hashing_mod, "UNSTABLE_INODES", (0x794C7630, 0x65735546)),  # (a list of its own)
    ],
)
def test_the_c_extensions_share_their_constants_with_the_python_side(
    side: Any, name: str, changed: object
) -> None:
    """The C extensions export the constants the Python side shares with them (#13: through
    the module, not by comments; `_fastscan`'s filesystems of unstable inode numbers since
    its API 7, `_kernel.UNSTABLE_INODES`), and a build whose constants differ (a stale one) is not
    used: the built one is, and a copy of it with one constant changed is refused."""
    built = side.fastcopy if side is smallfiles_mod else side.fastscan
    assert built is not None  # the tests run with the extensions built
    assert side._agrees(built)
    stale = types.SimpleNamespace(**{k: getattr(built, k) for k in dir(built) if k.isupper()})
    setattr(stale, name, changed)
    assert not side._agrees(stale)


@pytest.mark.parametrize("op", ["copy", "move"])
async def test_a_resumed_job_runs_files_in_directories_made_before_as_plain_tasks(
    tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, op: str
) -> None:
    """A directory an earlier run made is not new to a resumed run, so its files cannot take
    the group path: they go to the pool as plain tasks (kept on fewer threads than groups,
    since a copy alone holds the GIL), not in groups that fall back to copying each alone.
    And the resume builds a task for what is left only, not for every entry of the manifest
    it replays (#13). The move's groups copy across filesystems."""
    src = tmp_path / "src"
    dst = (tmp_path if op == "copy" else request.getfixturevalue("other_fs")) / "dst"
    small_tree(src, 40)
    (dst / "src" / "d0").mkdir(parents=True)
    write(dst / "src" / "d0" / "f000", b"in the way")  # fails in the first run
    grouped: list[bytes] = []
    item = copy_mod.CopyItem if op == "copy" else move_mod.MoveItem
    real = item.run_entries.__func__  # type: ignore[union-attr]

    def run_entries(cls: Any, plan: Any, entries: Any, tc: Any) -> Any:  # (bundles', groups')
        grouped.extend(entry.rel for entry in entries if entry is not None)
        return real(cls, plan, entries, tc)

    monkeypatch.setattr(item, "run_entries", classmethod(run_entries))
    built = count_built(monkeypatch, item)
    job = (CopyJob if op == "copy" else MoveJob)(
        into=True, sources=[str(src)], destination=str(dst)
    )
    before = snapshot(src)
    async with parjobs.open_manager(str(tmp_path / "j.sqlite"), workers=4) as m:
        handle = await m.submit(job)
        with trio.fail_after(30):
            assert await handle.wait() is JobStatus.COMPLETED_WITH_ERRORS
        assert len(grouped) >= 30  # the files of the directories the first run made
        grouped.clear()
        built.clear()
        os.unlink(dst / "src" / "d0" / "f000")
        await m.resume(handle.id)  # does d0/f000 again, in the directory made before
        with trio.fail_after(30):
            assert await handle.wait() is JobStatus.COMPLETED
    assert grouped == []
    assert [entry.rel for entry in built] == [b"src/d0/f000"]
    assert snapshot(dst / "src") == before


async def test_a_filesystem_the_group_path_cannot_serve_turns_it_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A group answered EINVAL for every file (as a filesystem without renameat2 would):
    those files and all later ones go through the Python path, and all are copied."""
    src = tmp_path / "src"
    small_tree(src, 200)
    calls: list[int] = []

    def refusing(items: list[tuple[bytes, int, bytes]], **kwargs: Any) -> Any:
        calls.append(len(items))
        return [errno.EINVAL] * len(items), [None] * len(items)

    monkeypatch.setattr(smallfiles_mod, "copy_small_files", refusing)
    monkeypatch.setattr(copy_mod.CopyItem, "group_size", 8)
    status, result, errors = await copy(str(tmp_path / "j.sqlite"), src, tmp_path / "dst")
    assert status is JobStatus.COMPLETED, errors
    assert result["copied"] == 202
    assert snapshot(tmp_path / "dst" / "src") == snapshot(src)
    assert 1 <= len(calls) <= 8  # the groups already taken when the first one answered


@pytest.mark.parametrize("c_path", [True, False])
async def test_copy_verify_reports_a_copy_spoilt_before_its_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, c_path: bool
) -> None:
    """``verify`` takes the group path, where C compares each copy before its rename: a copy
    that differs is handed back (as C answers it, nothing left behind) and copied alone,
    where it is spoilt again and reported (VerifyError); the Python path (no extension)
    reports the same and lands the same files."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(30):
        write(src / f"f{i:02}", bytes([i + 1]) * (100 + 1000 * i))
    spoilt = b"f07"
    grouped: list[bytes] = []
    real_group = smallfiles_mod.copy_small_files

    def spoiling_group(items: Any, **kwargs: Any) -> Any:
        assert kwargs["compare"], "copy --verify compares in C, before the rename"
        done = real_group([item for item in items if item[-1] != spoilt], **kwargs)
        assert done is not None
        results, written = iter(done[0]), iter(done[1])
        out: tuple[list[int], list[Any]] = ([], [])
        for *_, name in items:
            grouped.append(name)
            if name == spoilt:  # what C answers for a copy that differs from its source
                out[0].append(smallfiles_mod.fastcopy.MISMATCH)  # type: ignore[union-attr]
                out[1].append(None)
            else:
                out[0].append(next(results))
                out[1].append(next(written))
        return out

    real = copy_file

    def spoiling(*args: Any, **kwargs: Any) -> Any:
        if args[1] == spoilt:
            kwargs["_after_write"] = lambda fd: os.pwrite(fd, b"X", 0)
        return real(*args, **kwargs)

    monkeypatch.setattr(smallfiles_mod, "copy_small_files", spoiling_group)
    monkeypatch.setattr(transfer_mod, "copy_file", spoiling)
    if not c_path:
        monkeypatch.setattr(smallfiles_mod, "fastcopy", None)
    status, result, errors = await copy(
        str(tmp_path / "j.sqlite"), src, tmp_path / "dst", verify=True
    )
    assert (len(grouped) >= 25) is c_path and (spoilt in grouped) is c_path
    assert status is JobStatus.COMPLETED_WITH_ERRORS and result["copied"] == 29
    assert [(e.label, e.error) for e in errors] == [(str(src / "f07"), "VerifyError")]
    out = tmp_path / "dst" / "src"
    assert sorted(os.listdir(out)) == sorted(n for n in os.listdir(src) if n != "f07")
    assert all(read(out / n) == read(src / n) for n in os.listdir(out))
    assert temporaries(tmp_path / "dst") == []


def test_a_pair_refusing_copy_file_range_is_not_asked_again_in_c(
    tmp_path: Path, other_fs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Disk -> tmpfs: copy_file_range answers EXDEV for every file (3,000 failing calls for
    3,000 files, by strace). C says so (``range_refused``), the pair is remembered
    (`NO_RANGE`), and the next groups go straight to read/write (no RANGE flag)."""
    fastcopy = smallfiles_mod.fastcopy
    assert fastcopy is not None
    src = tmp_path / "src"
    src.mkdir()
    for i in range(6):
        write(src / f"f{i}", os.urandom(100 + i))
    pair = (src.stat().st_dev, other_fs.stat().st_dev)
    _kernel.NO_RANGE.discard(pair)
    flags: list[int] = []
    real = fastcopy.copy_many

    def copy_many(items: Any, how: int, *args: Any) -> Any:
        flags.append(how)
        return real(items, how, *args)

    monkeypatch.setattr(fastcopy, "copy_many", copy_many)
    fd = os.open(other_fs, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for names in ([b"f0", b"f1", b"f2"], [b"f3", b"f4", b"f5"]):
            items = [(os.fsencode(src) + b"/" + n, fd, n) for n in names]
            done = copy_small_files(items, src_dev=pair[0], dst_dev=pair[1])
            assert done is not None and done[0] == [0, 0, 0]
        assert [bool(how & fastcopy.RANGE) for how in flags] == [True, False]
        assert pair in _kernel.NO_RANGE
        assert snapshot(other_fs) == snapshot(src)
    finally:
        os.close(fd)
        _kernel.NO_RANGE.discard(pair)


@pytest.mark.parametrize("op", ["copy", "move"])
async def test_a_bundles_files_go_as_columns_and_one_failing_midway_is_redone_alone(
    tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, op: str
) -> None:
    """A bundle's small files run without a context or record call a file (its group path
    builds the item rows from the walk's paths and C's identities: `run_members`), and
    reach it as their walked entries: no task is built for a file it finishes
    (`EntryBundle`; the walk built a `CopyItem` or `MoveItem` a file before, ~1.4 us each
    on the trio thread). One that fails in the middle of its group (its source gone
    between the walk and the copy) is handed back as a task of its own and fails alone,
    with its reason; every other file lands with exactly the item record the per-file path
    notes (an undecodable name included); a resume builds and runs only it."""
    src = tmp_path / "src"
    small_tree(src, 60)
    odd = os.fsencode(src / "d1") + b"/caf\xe9"  # not UTF-8: kept as surrogate escapes
    with open(odd, "wb") as f:
        f.write(b"odd")
    victim = os.fsencode(src / "d1" / "sub" / "f005")
    victim_data = read(Path(os.fsdecode(victim)))
    dst = (tmp_path if op == "copy" else request.getfixturevalue("other_fs")) / "dst"

    def before(items: list[tuple[bytes, int, bytes]]) -> None:
        if any(path == victim for path, _, _ in items):
            os.unlink(victim)

    groups = count_groups(monkeypatch, before)
    members = [0]
    member = TaskContext.member

    def counted(self: TaskContext, task: Any) -> TaskContext:
        members[0] += 1
        return member(self, task)

    monkeypatch.setattr(TaskContext, "member", counted)
    # Bundles never hand back files they have not reached (a loaded machine's would).
    monkeypatch.setattr(task_mod, "_hand_back", lambda elapsed, queued: task_mod._KEEP)
    built = count_built(monkeypatch, copy_mod.CopyItem if op == "copy" else move_mod.MoveItem)
    job = (CopyJob if op == "copy" else MoveJob)(
        into=True, sources=[str(src)], destination=str(dst)
    )
    async with parjobs.open_manager(str(tmp_path / "j.sqlite"), workers=4) as m:
        handle = await m.submit(job)
        with trio.fail_after(30):
            assert await handle.wait() is JobStatus.COMPLETED_WITH_ERRORS
        errors = await m.errors(handle.id)
        records = await m.items(handle.id)
        assert [e.label for e in errors] == [os.fsdecode(victim)]
        assert "No such file or directory" in errors[0].message
        assert sum(groups) >= 50 and members[0] == 0
        action = "copied" if op == "copy" else "moved"
        landed = [
            r
            for r in records
            if r.action == action and r.detail is None and r.source.rsplit("/", 1)[1][0] in "fc"
        ]
        assert len(landed) == 60  # the 59 small files and the odd one
        for r in landed:
            path = os.fsencode(r.source)
            rel = path[len(os.fsencode(src)) + 1 :]
            dest = os.fsencode(dst / "src") + b"/" + rel
            assert r.destination == os.fsdecode(dest)
            assert r.written == fingerprint(os.stat(dest)) and r.bytes == r.written.size
            assert r.stage == ("default" if op == "copy" else "move")
            assert r.error is None and r.index > 0
        assert os.fsdecode(odd) in {r.source for r in landed}
        small = [e.path for e in built if e.kind == "file" and e.size < (1 << 20)]
        assert small == [victim]  # (the walk's directories, its link and big file: tasks)
        built.clear()
        os.makedirs(os.path.dirname(victim), exist_ok=True)  # (a move removed it, empty)
        write(Path(os.fsdecode(victim)), victim_data)
        await m.resume(handle.id)
        with trio.fail_after(30):
            assert await handle.wait() is JobStatus.COMPLETED
        again = await m.items(handle.id)
    assert [entry.path for entry in built] == [victim]
    first = [r.source for r in records if r.action == action]
    assert sorted(r.source for r in again if r.action == action) == sorted(
        [*first, os.fsdecode(victim)]
    )
    assert read(dst / "src" / "d1" / "sub" / "f005") == victim_data


def test_a_groups_directory_lookups_follow_its_files_in_any_order(tmp_path: Path) -> None:
    """`copy_group` looks a directory up when the files' directory changes and reuses it for
    the files after it in the same directory (a group's files come a directory at a time):
    whatever the order, each file is copied exactly when its directory is new and its
    source's directory reachable, and the rest (no entry, not a file, a directory made
    before, a source directory gone, a root's own file in a directory made before) are
    handed back untouched, with no temporary left (#18 target 2)."""
    src = tmp_path / "src"
    for rel in ("a/f1", "a/f2", "a/f3", "a/f4", "old/g1", "old/g2", "b/h1"):
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        write(src / rel, rel.encode() * 3)
    write(tmp_path / "top", b"top")
    dst = tmp_path / "dst"
    (dst / "src" / "old").mkdir(parents=True)  # made before this run: looked up alone
    plan = transfer_mod.make_plan(
        [str(src), str(tmp_path / "top")],
        str(dst),
        CopyOptions(),
        policy="fail",
        follow=False,
        resumed=False,
        ask=None,
    )

    def entry(index: int, rel: str, kind: Kind = "file", root: int = 0) -> Entry:
        path = os.fsencode(tmp_path / rel)
        st = os.lstat(path) if os.path.lexists(path) else None
        return Entry(
            index, kind, root, rel.encode(), path, st.st_size if st else 3,
            dev=st.st_dev if st else 0,
        )  # fmt: skip

    entries: list[Entry | None] = [
        entry(0, "src/a/f1"),
        None,
        entry(2, "src/a/f2"),
        entry(3, "src/b", "dir"),
        entry(4, "src/old/g1"),
        entry(5, "src/old/g2"),
        entry(6, "src/a/f3"),
        entry(7, "src/gone/x"),  # its source directory is not there: alone
        entry(8, "src/gone/y"),
        entry(9, "src/b/h1"),
        entry(10, "top", root=1),  # a root's own file, in the destination root made before
        entry(11, "src/a/f4"),
    ]
    try:
        copies = transfer_mod.copy_group(plan, entries)
    finally:
        plan.tree.close()
    landed = [i for i, c in enumerate(copies) if c is not None]
    assert landed == [0, 2, 6, 9, 11]
    for i in landed:
        e = entries[i]
        assert e is not None
        st = os.lstat(dst / os.fsdecode(e.rel))
        assert copies[i] == (st.st_size, st.st_mtime_ns, st.st_ino)
        assert read(dst / os.fsdecode(e.rel)) == read(Path(os.fsdecode(e.path)))
    assert sorted(os.listdir(dst / "src" / "old")) == [] and not (dst / "top").exists()
    assert temporaries(dst) == []


async def test_a_groups_python_calls_do_not_grow_with_its_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A group's item rows (`landed_rows`, on the worker thread) make no Python call a file:
    each `CopyDone` is built without its generated ``__new__``. The job still copies every
    file and records each one's row (#18 target 2)."""
    src = tmp_path / "src"
    for i in range(256):
        (src / f"d{i % 2}").mkdir(parents=True, exist_ok=True)
        write(src / f"d{i % 2}" / f"f{i:03}", os.urandom(i))
    counts: list[tuple[int, int, int]] = []  # (files, Python calls, CopyDone.__new__ calls)
    made = transfer_mod.CopyDone.__new__.__code__
    real = transfer_mod.landed_rows  # (what `_copy` calls, by its own name)

    def landed_rows(*args: Any) -> int:
        calls = [0, 0]

        def profile(frame: Any, event: str, arg: Any) -> None:
            if event == "call":
                calls[0] += 1
                calls[1] += frame.f_code is made

        sys.setprofile(profile)
        try:
            value: int = real(*args)
        finally:
            sys.setprofile(None)
        counts.append((sum(c is not None for c in args[4]), calls[0], calls[1]))
        return value

    monkeypatch.setattr(copy_mod, "landed_rows", landed_rows)
    # Bundles never hand back files they have not reached (profiled, they are slow).
    monkeypatch.setattr(task_mod, "_hand_back", lambda elapsed, queued: task_mod._KEEP)
    status, _, errors = await copy(str(tmp_path / "j.sqlite"), src, tmp_path / "dst")
    assert status is JobStatus.COMPLETED, errors
    assert snapshot(tmp_path / "dst" / "src") == snapshot(src)
    assert sum(n for n, _, _ in counts) == 256 and max(n for n, _, _ in counts) >= 32
    assert [made for _, _, made in counts if made] == []  # (95e872b: one a file)
    # (its other calls are few but not fixed: a process' first group looks its codecs up)
    assert sorted(calls for n, calls, _ in counts if n >= 32)[0] < 8, counts
