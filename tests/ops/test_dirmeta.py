"""An undo of a move gives the source directories it puts back the metadata the move found:
mode, owner, times, extended attributes and ACLs (found by loose23, session 23: they came
back dated the undo's time, with default modes). Real trees, moved within one filesystem
(a merge: entry by entry) and across (to /dev/shm, a tmpfs)."""

from __future__ import annotations

import os
import struct
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import trio
from _trees import pause_at, read, write

import parjobs
from parjobs import JobStatus
from parjobs._task import TaskContext
from parjobs.cli._manage import item_line
from parjobs.ops import CopyJob, MoveJob
from parjobs.ops import _move as move_mod
from parjobs.ops import _undo as undo_mod

pytestmark = pytest.mark.usefixtures("private_home")  # tests/ops/conftest.py

ACL_ACCESS, ACL_DEFAULT = "system.posix_acl_access", "system.posix_acl_default"
_NONE = 0xFFFFFFFF  # ACL_UNDEFINED_ID
# user::rwx user:4321:rwx group::r-x mask::rwx other::---
DIR_ACL = struct.pack("<I", 2) + b"".join(
    struct.pack("<HHI", *entry)
    for entry in [(1, 7, _NONE), (2, 7, 4321), (4, 5, _NONE), (0x10, 7, _NONE), (0x20, 0, _NONE)]
)
#: The actions an undo before session 23 (09539d0) acts on: given a move's directory record
#: as "moved" (13c05a8), it counted each one skipped and took the destination directory
#: aside (a file going back out of it then found it gone, and stayed).
OLD_UNDO_ACTS_ON = {"copied", "renamed-as", "linked", "moved", "trashed", "present"}
#: The directories of `dir_tree` ("" its root).
DIRS = ["", "a", "a/b", "a/b/c", "empty"]


def dir_tree(src: Path) -> dict[str, tuple[Any, ...] | None]:
    """A tree whose directories each have their own mode, times (an atime an hour ahead:
    listing the directory leaves it so), and, as root, owner; ``a`` an extended attribute and
    ACLs; ``a/b`` read-only with a file; ``empty`` empty. Returns `meta` of each."""
    (src / "a" / "b" / "c").mkdir(parents=True)
    (src / "empty").mkdir()
    write(src / "top.txt", b"top")
    write(src / "a" / "f.txt", b"f")
    write(src / "a" / "b" / "g.txt", b"g")
    write(src / "a" / "b" / "c" / "h.txt", b"h")
    modes = {"": 0o711, "a": 0o750, "a/b": 0o555, "a/b/c": 0o700, "empty": 0o701}
    ahead = time.time_ns() + 3600 * 10**9
    for i, rel in enumerate(reversed(DIRS)):  # (deepest first: a chmod leaves times)
        path = src / rel
        if os.geteuid() == 0:
            os.chown(path, 1000 + i, 2000 + i)
        os.chmod(path, modes[rel])
        if rel == "a":
            os.setxattr(path, "user.tag", b"kept")
            try:
                os.setxattr(path, ACL_ACCESS, DIR_ACL)
                os.setxattr(path, ACL_DEFAULT, DIR_ACL)
            except OSError:
                pass  # no ACLs here: the rest still counts
        os.utime(path, ns=(ahead + i, 1_500_000_000_000_000_000 + i * 1_000_001))
    return {rel: meta(src / rel) for rel in DIRS}


def meta(path: Path) -> tuple[Any, ...] | None:
    """A directory's mode, owner, atime, mtime and extended attributes (read without
    listing it: that would set its atime); None when it is missing."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    attrs = {name: os.getxattr(path, name) for name in sorted(os.listxattr(path))}
    return (oct(st.st_mode), st.st_uid, st.st_gid, st.st_atime_ns, st.st_mtime_ns, attrs)


@pytest.fixture(params=["merge", "other_fs"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """Where the move goes: a directory ``src`` already there (same filesystem: a merge,
    entry by entry, the source directories removed), or another filesystem."""
    if request.param == "merge":
        (tmp_path / "dst" / "src").mkdir(parents=True)
        return tmp_path / "dst"
    other: Path = request.getfixturevalue("other_fs")
    return other


async def test_an_undone_move_puts_its_directories_back_as_they_were(
    tmp_path: Path, store_path: str, target: Path
) -> None:
    src = tmp_path / "src"
    before = dir_tree(src)
    async with parjobs.open_manager(store_path) as m:
        h = await m.submit(MoveJob(sources=[str(src)], destination=str(target)))
        assert (await h.result())["failed"] == 0
        assert not src.exists()
        records = await m.items(h.id)
        dirs = [r for r in records if r.detail and r.detail.startswith("directory")]
        assert not {r.action for r in dirs} & OLD_UNDO_ACTS_ON
        assert len([r for r in records if r.action == "moved"]) == 4  # (the files alone)
        u = await m.undo(h.id)
        result = await u.result()
        progress = (await u.info()).progress
    assert result["failed"] == 0 and result["restored"] == 4 and result["kept"] == 0
    # Its progress counts the entries put back, as its result does: no directory.
    assert (progress.items_done, progress.items_total) == (4, 4)
    assert read(src / "a" / "b" / "c" / "h.txt") == b"h"
    assert {rel: meta(src / rel) for rel in DIRS} == before
    assert sorted(r.source for r in dirs) == sorted(str(src / rel).rstrip("/") for rel in DIRS)
    assert item_line(dirs[0]).endswith("(directory)")  # (its metadata: in --json)


async def test_an_undone_move_gives_a_directory_it_kept_its_times_not_its_old_mode(
    tmp_path: Path, store_path: str
) -> None:
    """A source directory the move kept (it holds a file skipped) is the user's still: the
    undo puts its times back (the move's and the undo's renames changed them), not the mode
    it had, which the user changed since."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    before = dir_tree(src)
    (dst / "src").mkdir(parents=True)
    write(dst / "src" / "top.txt", b"theirs")  # a merge; top.txt skipped: src stays
    async with parjobs.open_manager(store_path) as m:
        h = await m.submit(MoveJob(sources=[str(src)], destination=str(dst), on_conflict="skip"))
        assert (await h.result())["skipped"] == 1
        assert sorted(os.listdir(src)) == ["top.txt"]
        os.chmod(src, 0o700)  # the user's, since
        u = await m.undo(h.id)
        assert (await u.result())["failed"] == 0
    now = meta(src)
    assert now is not None and before[""] is not None
    assert now[0] == oct(0o40700) and now[3:5] == before[""][3:5]
    assert {rel: meta(src / rel) for rel in DIRS[1:]} == {r: before[r] for r in DIRS[1:]}


async def test_a_kept_directory_whose_times_cannot_be_set_fails_nothing(
    tmp_path: Path, store_path: str
) -> None:
    """A source directory the move kept that this process may not change (another user's,
    or immutable: ``chattr +i``, refused to root too) keeps its times: every entry is back,
    so the undo ends without a failure (it failed the directory's task, EPERM)."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "k").mkdir(parents=True)
    (dst / "src" / "k").mkdir(parents=True)
    write(src / "top.txt", b"top")
    write(src / "k" / "skip.txt", b"mine")
    write(dst / "src" / "k" / "skip.txt", b"theirs")  # a merge; k/skip.txt skipped: k stays
    async with parjobs.open_manager(store_path) as m:
        h = await m.submit(MoveJob(sources=[str(src)], destination=str(dst), on_conflict="skip"))
        assert (await h.result())["skipped"] == 1
        assert sorted(os.listdir(src / "k")) == ["skip.txt"]
        os.utime(src / "k", ns=(10**18, 10**18))  # (the undo would set the move's own)
        if subprocess.run(["chattr", "+i", str(src / "k")], capture_output=True).returncode:
            pytest.skip("chattr +i is not available here")
        try:
            u = await m.undo(h.id)
            result = await u.result()
            errors = await m.errors(u.id)
        finally:
            subprocess.run(["chattr", "-i", str(src / "k")])
    assert result["failed"] == 0 and result["restored"] == 1, (result, errors)
    assert os.lstat(src / "k").st_mtime_ns == 10**18  # left as it was
    assert read(src / "top.txt") == b"top", sorted(os.listdir(src))


async def test_a_paused_move_and_a_paused_undo_still_put_the_directories_back(
    tmp_path: Path, store_path: str, other_fs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A move paused before it reached a directory, resumed; its undo paused as it gave a
    directory its metadata, resumed: each directory as it was."""
    src = tmp_path / "src"
    before = dir_tree(src)
    async with parjobs.open_manager(store_path, workers=1) as m:
        job = MoveJob(sources=[str(src)], destination=str(other_fs))
        h = await pause_at(m, job, move_mod.MoveItem, b"c", monkeypatch)
        await m.resume(h.id)
        assert (await h.result())["failed"] == 0
        real = undo_mod.DirTask.run
        handles: list[parjobs.JobHandle] = []
        paused: list[str] = []

        def run(self: Any, tc: TaskContext) -> str:
            if not paused:
                paused.append(self.record.source)
                trio.from_thread.run(m.pause, handles[0].id)
                tc.check()  # raises: never booked
            return real(self, tc)

        monkeypatch.setattr(undo_mod.DirTask, "run", run)
        handles.append(await m.undo(h.id))
        with trio.fail_after(30):
            assert await handles[0].wait() is JobStatus.PAUSED
        monkeypatch.setattr(undo_mod.DirTask, "run", real)
        assert paused == [str(src / "a" / "b" / "c")]  # (deepest first)
        await m.resume(handles[0].id)
        result = await handles[0].result()
    assert result["failed"] == 0 and result["restored"] == 4
    assert {rel: meta(src / rel) for rel in DIRS} == before


async def test_an_undone_copy_still_removes_the_directories_it_made(
    tmp_path: Path, store_path: str
) -> None:
    """A copy records no directory metadata: its undo removes what it made, as before."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    before = dir_tree(src)
    async with parjobs.open_manager(store_path) as m:
        h = await m.submit(CopyJob(sources=[str(src)], destination=str(dst)))
        await h.result()
        assert not [r for r in await m.items(h.id) if r.action == "moved"]
        u = await m.undo(h.id)
        result = await u.result()
    assert result["failed"] == 0 and result["kept"] == 0
    assert not (dst / "src").exists()
    assert {rel: meta(src / rel) for rel in DIRS} == before  # (the source untouched)
