"""The operations' item logs and undo (#14.2): what each op records, `manager.undo` of a copy,
a move and a trash; the freedesktop trash read and restored for entries any tool made is
`test_trashcan.py`."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import trio
import xxhash
from _jobs import CountJob
from _trees import read, write

import parjobs
from parjobs import InvalidTransitionError, JobStatus
from parjobs._exceptions import Skip
from parjobs._items import ItemRecord, fingerprint
from parjobs._task import Interrupter, TaskContext
from parjobs.ops import CopyJob, DeleteJob, HashJob, MoveJob, UndoJob
from parjobs.ops import _undo as undo_mod
from parjobs.ops._names import new_token
from parjobs.ops._partials import held_name
from parjobs.ops._trashcan import list_trash
from parjobs.ops._undo import UndoTask

pytestmark = pytest.mark.usefixtures("private_home")  # tests/ops/conftest.py


def tree(root: Path) -> None:
    (root / "sub" / "deeper").mkdir(parents=True)
    for i in range(6):
        write(root / f"f{i}.txt", b"x" * i)
    write(root / "sub" / "g.bin", b"g" * 1000)
    write(root / "sub" / "deeper" / "h", b"h")
    os.symlink("f1.txt", root / "link")


async def test_copy_records_every_item_with_what_it_wrote(tmp_path: Path, store_path: str) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    tree(src)
    (dst / "src").mkdir(parents=True)
    write(dst / "src" / "f1.txt", b"theirs")  # renamed-as
    write(dst / "src" / "f2.txt", b"theirs")  # replaced? no: rename policy
    async with parjobs.open_manager(store_path) as m:
        h = await m.submit(CopyJob(sources=[str(src)], destination=str(dst), on_conflict="rename"))
        await h.result()
        items = await m.items(h.id)
    by_source = {r.source: r for r in items}
    assert len(by_source) == len(items)  # one record per item
    assert by_source[str(src / "f1.txt")].action == "renamed-as"
    assert by_source[str(src / "f1.txt")].destination == str(dst / "src" / "f1 (1).txt")
    assert by_source[str(src / "f0.txt")].action == "copied"
    g = by_source[str(src / "sub" / "g.bin")]
    st = os.lstat(dst / "src" / "sub" / "g.bin")
    assert g.destination == str(dst / "src" / "sub" / "g.bin") and g.bytes == 1000
    assert g.written is not None
    assert (g.written.size, g.written.mtime_ns, g.written.inode) == (
        st.st_size,
        st.st_mtime_ns,
        st.st_ino,
    )
    assert by_source[str(src / "sub")].detail == "directory"
    assert by_source[str(src / "link")].action == "copied"


async def test_copy_over_records_replaced(tmp_path: Path, store_path: str) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    write(src / "a", b"new")
    write(dst / "a", b"old")
    async with parjobs.open_manager(store_path) as m:
        h = await m.submit(
            CopyJob(sources=[str(src / "a")], destination=str(dst), on_conflict="overwrite")
        )
        await h.result()
        (rec,) = await m.items(h.id)
        assert rec.action == "replaced"
        u = await m.undo(h.id)
        result = await u.result()
    assert read(dst / "a") == b"new"  # never removed: the copy did not create it
    assert result["removed"] == 0


async def test_undo_a_copy_removes_only_unchanged_files_it_created(
    tmp_path: Path, store_path: str
) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    tree(src)
    (dst / "src").mkdir(parents=True)
    write(dst / "src" / "f1.txt", b"theirs")
    write(dst / "src" / "f2.txt", b"theirs too")
    async with parjobs.open_manager(store_path) as m:
        h = await m.submit(CopyJob(sources=[str(src)], destination=str(dst), on_conflict="rename"))
        await h.result()
        with open(dst / "src" / "f3.txt", "ab") as f:  # changed since the copy
            f.write(b"mine now")
        os.replace(dst / "src" / "f4.txt", dst / "src" / "f5.txt")  # another file at f5
        u = await m.undo(h.id)
        result = await u.result()
        again = await m.undo(h.id)  # once per job
        assert again.id == u.id
        undo_items = await m.items(u.id)
    left = sorted(p.relative_to(dst).as_posix() for p in dst.rglob("*"))
    assert left == ["src", "src/f1.txt", "src/f2.txt", "src/f3.txt", "src/f5.txt"]
    assert read(dst / "src" / "f1.txt") == b"theirs"  # not the copy's: never removed
    assert read(dst / "src" / "f2.txt") == b"theirs too"
    assert read(dst / "src" / "f3.txt") == b"xxxmine now"
    assert result["kept_reasons"] == {
        "changed since the job wrote it; kept": 2,  # f3 (changed), f5 (another file now)
        "no longer there": 1,  # f4
    }
    assert result["failed"] == 0
    removed = {r.source for r in undo_items if r.action == "removed"}
    assert str(dst / "src" / "f0.txt") in removed
    assert str(dst / "src" / "f1 (1).txt") in removed
    assert str(dst / "src" / "sub" / "deeper") in removed
    assert tree_unchanged(src)


async def test_an_undo_cancelled_is_followed_by_a_new_one(
    tmp_path: Path, store_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An undo cancelled half way: the job it undid is never resumed, so undoing it again
    submits a new undo, which finishes the work (it returned the cancelled one: the copied
    files stayed for good, with no way to remove them)."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    tree(src)
    async with parjobs.open_manager(store_path) as m:
        h = await m.submit(CopyJob(sources=[str(src)], destination=str(dst)))
        await h.result()
        restore = slow_checks(monkeypatch, 0.2)  # the cancel lands before its 10th item
        u = await m.undo(h.id)
        await m.cancel(u.id)
        assert await u.wait() is JobStatus.CANCELLED
        restore()
        again = await m.undo(h.id)
        assert again.id != u.id
        await again.result()
        assert (await m.undo(h.id)).id == again.id  # once per job again
        with pytest.raises(InvalidTransitionError, match="undone by"):
            await m.resume(h.id)
    assert list(dst.rglob("*")) == []
    assert tree_unchanged(src)


async def test_a_job_whose_undo_is_not_over_is_neither_deleted_nor_purged(
    tmp_path: Path, store_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An undo reads the log of the job it undoes on every run: a paused undo whose job was
    deleted (``jobs prune``, the API, the retention sweep) was resumed into an empty log and
    completed, the rest of the copy left in place, "completed" all the same."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    tree(src)
    async with parjobs.open_manager(store_path, workers=1) as m:
        h = await m.submit(CopyJob(sources=[str(src)], destination=str(dst)))
        await h.result()
        restore = slow_checks(monkeypatch, 0.2)  # the pause lands before its 12th item
        u = await m.undo(h.id)
        await m.pause(u.id)
        assert await u.wait() is JobStatus.PAUSED
        with pytest.raises(InvalidTransitionError, match=f"its undo, job {u.id}, is paused"):
            await m.delete(h.id)
    restore()
    async with parjobs.open_manager(store_path, retention=0.0) as m:  # every ended job expired
        assert await m.purge_expired() == []
        assert (await m.get(h.id)).status is JobStatus.COMPLETED  # kept at open and now
        result = await (await m.resume(u.id)).result()
        assert (result["removed"], result["failed"]) == (12, 0), result  # 9 entries, 3 dirs
        await m.delete(h.id)  # its undo is over: it may go
    assert list(dst.rglob("*")) == []
    assert tree_unchanged(src)


def slow_checks(monkeypatch: pytest.MonkeyPatch, seconds: float) -> Callable[[], None]:
    """Every undo's check of an item (`unchanged`) ``seconds`` slower, so a pause, cancel
    or kill lands before its last item; what undoes that."""
    original = undo_mod.unchanged

    def slowly(st: os.stat_result, record: ItemRecord) -> bool:
        time.sleep(seconds)
        return original(st, record)

    monkeypatch.setattr(undo_mod, "unchanged", slowly)
    return lambda: monkeypatch.setattr(undo_mod, "unchanged", original)


def tree_unchanged(src: Path) -> bool:
    return read(src / "sub" / "g.bin") == b"g" * 1000 and read(src / "f5.txt") == b"xxxxx"


async def test_undo_a_move_moves_items_back(tmp_path: Path, store_path: str) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    tree(src)
    dst.mkdir()
    write(tmp_path / "loose.txt", b"loose")
    before = sorted(p.relative_to(tmp_path).as_posix() for p in src.rglob("*"))
    async with parjobs.open_manager(store_path) as m:
        h = await m.submit(
            MoveJob(sources=[str(src), str(tmp_path / "loose.txt")], destination=str(dst))
        )
        await h.result()
        assert not src.exists()
        items = await m.items(h.id)
        assert {r.action for r in items} == {"moved"}
        u = await m.undo(h.id)
        result = await u.result()
    assert result["restored"] == 2 and result["failed"] == 0
    assert sorted(p.relative_to(tmp_path).as_posix() for p in src.rglob("*")) == before
    assert read(tmp_path / "loose.txt") == b"loose"
    assert list(dst.iterdir()) == []


async def test_undo_a_move_across_filesystems_copies_each_item_back(
    tmp_path: Path, store_path: str, other_fs: Path
) -> None:
    # Found by the third hunt (session 18): the move back was a rename, which fails across
    # filesystems ("Invalid cross-device link"), so such a move could never be undone.
    src = tmp_path / "src"
    tree(src)
    write(src / "big.bin", os.urandom(3 * 1024 * 1024))  # chunked, not the one-shot path
    os.chmod(src / "f2.txt", 0o4751)
    os.utime(src / "f3.txt", ns=(1, 1_000_000_123))
    before = {p.relative_to(src).as_posix(): os.lstat(p) for p in src.rglob("*")}
    digests = {
        p.relative_to(src).as_posix(): xxhash.xxh3_128_hexdigest(read(p))
        for p in src.rglob("*")
        if p.is_file() and not p.is_symlink()
    }
    async with parjobs.open_manager(store_path) as m:
        h = await m.submit(MoveJob(sources=[str(src)], destination=str(other_fs)))
        await h.result()
        assert not src.exists()
        u = await m.undo(h.id)
        result = await u.result()
    assert result["failed"] == 0 and result["restored"] == 10
    after = {p.relative_to(src).as_posix(): os.lstat(p) for p in src.rglob("*")}
    assert sorted(after) == sorted(before)
    for rel, st in before.items():
        if not os.path.isdir(src / rel):
            assert (after[rel].st_mode, after[rel].st_mtime_ns) == (st.st_mode, st.st_mtime_ns)
    assert os.readlink(src / "link") == "f1.txt"
    assert {rel: xxhash.xxh3_128_hexdigest(read(src / rel)) for rel in digests} == digests
    assert [p for p in other_fs.rglob("*") if not p.is_dir()] == []  # moved, not copied


async def test_undo_a_merged_move_item_by_item(tmp_path: Path, store_path: str) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    tree(src)
    (dst / "src").mkdir(parents=True)  # a merge: the move goes entry by entry
    write(dst / "src" / "f0.txt", b"theirs")
    async with parjobs.open_manager(store_path) as m:
        h = await m.submit(MoveJob(sources=[str(src)], destination=str(dst), on_conflict="skip"))
        await h.result()
        u = await m.undo(h.id)
        result = await u.result()
    assert read(src / "sub" / "deeper" / "h") == b"h"
    assert read(src / "f0.txt") == b""  # skipped: never moved
    assert read(dst / "src" / "f0.txt") == b"theirs"
    assert result["failed"] == 0 and result["restored"] >= 7


async def test_undo_a_trash_restores_to_the_original_paths(
    tmp_path: Path, store_path: str, private_home: Path
) -> None:
    write(tmp_path / "a.txt", b"a")
    tree(tmp_path / "d")
    async with parjobs.open_manager(store_path) as m:
        h = await m.submit(
            DeleteJob(paths=[str(tmp_path / "a.txt"), str(tmp_path / "d")], trash=True)
        )
        await h.result()
        assert not (tmp_path / "a.txt").exists()
        items = await m.items(h.id)
        assert [r.action for r in items] == ["trashed", "trashed"]
        write(tmp_path / "a.txt", b"new a")  # the name is taken again: left in the trash
        u = await m.undo(h.id)
        result = await u.result()
    assert read(tmp_path / "a.txt") == b"new a"
    assert read(tmp_path / "d" / "sub" / "g.bin") == b"g" * 1000
    assert result["restored"] == 1 and result["kept"] == 1 and result["failed"] == 0
    assert result["kept_reasons"] == {"something is at the original path; left in the trash": 1}
    left = list_trash()
    assert [os.fsdecode(e.original_path) for e in left] == [str(tmp_path / "a.txt")]


async def test_undo_a_trash_never_restores_another_item_given_its_trash_name(
    tmp_path: Path, store_path: str, private_home: Path
) -> None:
    # Found by the third hunt (session 18): once the user emptied the trashed item, the next
    # one trashed with its name took its place (files/notes.txt), and undo moved that one,
    # another file, to the first job's original path, its .trashinfo dropped: "restored".
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    write(tmp_path / "a" / "notes.txt", b"first")
    write(tmp_path / "b" / "notes.txt", b"other")
    async with parjobs.open_manager(store_path) as m:
        h = await m.submit(DeleteJob(paths=[str(tmp_path / "a" / "notes.txt")], trash=True))
        await h.result()
        (entry,) = list_trash()
        os.unlink(entry.trashed_path)  # emptied from the trash for good
        os.unlink(entry.info_path)
        other = await m.submit(DeleteJob(paths=[str(tmp_path / "b" / "notes.txt")], trash=True))
        await other.result()
        assert [e.trashed_path for e in list_trash()] == [entry.trashed_path]  # its name
        u = await m.undo(h.id)
        result = await u.result()
    assert result["restored"] == 0 and result["failed"] == 0
    assert result["kept_reasons"] == {undo_mod.TRASH_REUSED: 1}
    assert not (tmp_path / "a" / "notes.txt").exists()
    (left,) = list_trash()
    assert os.fsdecode(left.original_path) == str(tmp_path / "b" / "notes.txt")
    assert read(Path(os.fsdecode(left.trashed_path))) == b"other"


@pytest.mark.parametrize("later", ["another file", "by another tool"])
async def test_undo_a_trash_never_restores_an_item_trashed_later_from_the_same_path(
    tmp_path: Path, store_path: str, private_home: Path, later: str
) -> None:
    """Found in session 19: undo checked only the original path in the .trashinfo. The user
    emptied the job's item; a new file at the same path, trashed later (``another file``),
    took the same name in the trash, and undo restored that one; so it did for the same
    file put back by hand and trashed again by another tool (``by another tool``: a
    DeletionDate not the job's). It is left in the trash now, kept with the reason."""
    (tmp_path / "a").mkdir()
    path = tmp_path / "a" / "notes.txt"
    write(path, b"first")
    async with parjobs.open_manager(store_path) as m:
        h = await m.submit(DeleteJob(paths=[str(path)], trash=True))
        await h.result()
        (entry,) = list_trash()
        trashed, info = Path(os.fsdecode(entry.trashed_path)), Path(os.fsdecode(entry.info_path))
        if later == "another file":
            write(path, b"second")  # (while the first holds its inode)
            trashed.unlink()  # emptied from the trash for good
            info.unlink()
            other = await m.submit(DeleteJob(paths=[str(path)], trash=True))
            await other.result()
        else:  # put back by hand, then trashed by a tool a minute later
            trashed.rename(path)
            text = info.read_text()
            info.unlink()
            path.rename(trashed)
            date = text.split("DeletionDate=")[1].strip()
            earlier = datetime.fromisoformat(date) - timedelta(minutes=1)
            info.write_text(text.replace(date, earlier.isoformat(timespec="seconds")))
        assert [e.trashed_path for e in list_trash()] == [entry.trashed_path]  # its name
        u = await m.undo(h.id)
        result = await u.result()
    assert result["restored"] == 0 and result["failed"] == 0
    assert result["kept_reasons"] == {undo_mod.TRASH_REUSED: 1}
    assert not path.exists()
    (left,) = list_trash()
    assert os.fsdecode(left.original_path) == str(path)
    assert read(trashed) == (b"second" if later == "another file" else b"first")


async def test_undo_a_trash_restores_its_item_left_in_the_trash(
    tmp_path: Path, store_path: str, private_home: Path
) -> None:
    """The identity undo compares (inode, mtime, DeletionDate) is the item's as the job
    left it: a file and a directory come back, their info files gone."""
    write(tmp_path / "f", b"file")
    (tmp_path / "d").mkdir()
    write(tmp_path / "d" / "x", b"x")
    async with parjobs.open_manager(store_path) as m:
        h = await m.submit(DeleteJob(paths=[str(tmp_path / "f"), str(tmp_path / "d")], trash=True))
        await h.result()
        (d_in_trash,) = [e for e in list_trash() if os.path.isdir(e.trashed_path)]
        write(Path(os.fsdecode(d_in_trash.trashed_path)) / "y", b"")  # (its mtime changes)
        result = await (await m.undo(h.id)).result()
    assert result["restored"] == 2, result
    assert read(tmp_path / "f") == b"file" and sorted(os.listdir(tmp_path / "d")) == ["x", "y"]
    assert list_trash() == []


async def test_undo_of_a_running_job_is_refused(tmp_path: Path, store_path: str) -> None:
    async with parjobs.open_manager(store_path) as m:
        h = await m.submit(CountJob(n=200, log=str(tmp_path / "log"), sleep=0.05))
        while (await m.get(h.id)).status is not JobStatus.RUNNING:
            await trio.sleep(0.01)
        with pytest.raises(InvalidTransitionError, match="pause or cancel it first"):
            await m.undo(h.id)
        # no undo job submitted (ids only: the running job's progress moves between reads)
        assert [j.id for j in await m.list_jobs()] == [h.id]
        await m.cancel(h.id)


async def test_an_undone_job_with_errors_is_never_resumed(tmp_path: Path, store_path: str) -> None:
    """A copy completed with errors, undone, then retried (``parjobs resume``, as its summary
    suggests): the retry is refused. It ran, copied only the failed file and reported the job
    completed, every file copied, while the files the undo removed stayed missing."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    write(src / "a", b"a")
    write(src / "b", b"b")
    (dst / "src").mkdir(parents=True)
    write(dst / "src" / "b", b"the user's b")  # a conflict: the copy ends with errors
    async with parjobs.open_manager(store_path) as m:
        h = await m.submit(CopyJob(sources=[str(src)], destination=str(dst)))
        assert await h.wait() is JobStatus.COMPLETED_WITH_ERRORS
        result = await (await m.undo(h.id)).result()
        assert result["removed"] == 1 and not (dst / "src" / "a").exists()
        os.unlink(dst / "src" / "b")  # the conflict is gone: the retry would succeed
        with pytest.raises(InvalidTransitionError, match="undone by job"):
            await m.resume(h.id)
        assert (await m.get(h.id)).status is JobStatus.COMPLETED_WITH_ERRORS
    assert read(src / "a") == b"a" and sorted(os.listdir(dst / "src")) == []


async def test_an_undone_paused_job_rests_cancelled(tmp_path: Path, store_path: str) -> None:
    """A paused job, undone, is cancelled first: ``parjobs resume`` (all paused jobs) never
    picks it up again to skip what the undo reverted."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    write(src / "a", b"a")
    async with parjobs.open_manager(store_path) as m:
        h = await m.submit(CopyJob(sources=[str(src)], destination=str(dst)), start=False)
        await m.pause(h.id)
        assert await m.wait(h.id) is JobStatus.PAUSED
        await (await m.undo(h.id)).result()
        assert (await m.get(h.id)).status is JobStatus.CANCELLED
        assert await m.list_jobs([JobStatus.PAUSED]) == []
        with pytest.raises(InvalidTransitionError):
            await m.resume(h.id)


async def test_undo_job_spec_is_checked(store_path: str) -> None:
    async with parjobs.open_manager(store_path) as m:
        with pytest.raises(parjobs.JobSpecError, match="no job id"):
            await m.submit(UndoJob(job=" "))
        assert await m.list_jobs() == []


async def test_hash_dupes_delete_and_thumbnails_record_their_items(
    tmp_path: Path, store_path: str
) -> None:
    from PIL import Image

    from parjobs.ops import DuplicatesJob, ThumbnailJob
    from parjobs.ops._hashing import CONTENT_ID_SMALL_LIMIT

    root = tmp_path / "r"
    root.mkdir()
    write(root / "a", b"same content")
    write(root / "b", b"same content")
    write(root / "c", b"other")
    Image.new("RGB", (64, 48), (200, 10, 10)).save(root / "p.png")
    async with parjobs.open_manager(store_path) as m:
        h = await m.submit(HashJob(paths=[str(root)]))
        assert (await h.result())["files"] == 4
        hashed = {r.source: r for r in await m.items(h.id)}
        assert {s: r.detail for s, r in hashed.items()} == {
            str(p): f"xxh3_128:{xxhash.xxh3_128(p.read_bytes()).hexdigest()}"
            for p in root.iterdir()
        }
        assert hashed[str(root / "a")].bytes == 12
        # dupes logs the full hashes of its large candidates; its content ids (which prove
        # small files equal) are not items of its log
        big = tmp_path / "big"
        big.mkdir()
        for name in ("x", "y"):
            write(big / name, b"b" * (CONTENT_ID_SMALL_LIMIT + 1))
        d = await m.submit(DuplicatesJob(paths=[str(root), str(big)]))
        assert len((await d.result())["groups"]) == 2
        dupes = await m.items(d.id)
        digest = xxhash.xxh3_128(b"b" * (CONTENT_ID_SMALL_LIMIT + 1)).hexdigest()
        assert sorted((r.action, r.source, r.detail) for r in dupes) == [
            ("hashed", str(big / name), f"xxh3_128:{digest}") for name in ("x", "y")
        ]
        t = await m.submit(ThumbnailJob(paths=[str(root)], out_dir=str(tmp_path / "thumbs")))
        await t.result()
        (thumb,) = await m.items(t.id, action="thumbnailed")
        assert thumb.source == str(root / "p.png") and thumb.destination is not None
        assert os.path.exists(thumb.destination)
        x = await m.submit(DeleteJob(paths=[str(root / "c"), str(root / "a")]))
        await x.result()
        deleted = await m.items(x.id)
        assert sorted((r.action, r.source) for r in deleted) == [
            ("deleted", str(root / "a")),
            ("deleted", str(root / "c")),
        ]


async def test_an_undo_paused_half_way_resumes_without_redoing(
    tmp_path: Path, store_path: str
) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    for i in range(300):
        write(src / f"f{i:03}", b"x" * i)
    async with parjobs.open_manager(store_path, workers=2) as m:
        h = await m.submit(CopyJob(sources=[str(src)], destination=str(dst)))
        await h.result()
        u = await m.undo(h.id)
        await m.pause(u.id)
        assert await m.wait(u.id) is JobStatus.PAUSED
        await m.resume(u.id)
        result = await u.result()
        items = await m.items(u.id)
    assert result["removed"] == 301 and result["failed"] == 0 and result["kept"] == 0
    removed = [r.source for r in items if r.action == "removed"]
    assert len(removed) == len(set(removed)) == 301  # each once, across both runs
    assert not dst.joinpath("src").exists() and len(list(src.iterdir())) == 300


def swap_after_the_first_check(
    monkeypatch: pytest.MonkeyPatch, target: Path, data: bytes
) -> list[Path]:
    """Make undo's identity check replace ``target`` by another file (``data``) right after
    it passed on the name, i.e. between the check and undo acting on the name: a real file
    put there by a real rename, as another process would. Returns the swaps made."""
    original = undo_mod.unchanged
    swapped: list[Path] = []

    def check_then_swap(st: os.stat_result, record: ItemRecord) -> bool:
        same = original(st, record)
        if record.destination == str(target) and not swapped:
            write(target.with_name("other"), data)
            os.replace(target.with_name("other"), target)
            swapped.append(target)
        return same

    monkeypatch.setattr(undo_mod, "unchanged", check_then_swap)
    return swapped


async def test_undo_never_removes_a_file_replaced_between_the_check_and_the_removal(
    tmp_path: Path, store_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check passes on the copy's file, then another process replaces the name: undo
    takes the replacement aside, sees through its descriptor that it is not the copy's
    file, puts it back and keeps it (#14: it used to unlink by name after checking)."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    tree(src)
    async with parjobs.open_manager(store_path) as m:
        h = await m.submit(CopyJob(sources=[str(src)], destination=str(dst)))
        await h.result()
        swapped = swap_after_the_first_check(monkeypatch, dst / "f2.txt", b"not the copy's")
        u = await m.undo(h.id)
        result = await u.result()
    assert swapped
    assert read(dst / "f2.txt") == b"not the copy's"
    assert sorted(p.name for p in dst.iterdir()) == ["f2.txt"]  # the rest removed, no held name
    assert result["failed"] == 0
    assert result["kept_reasons"] == {undo_mod.CHANGED: 1, undo_mod.NOT_EMPTY: 1}  # dst kept


async def test_undo_of_a_move_never_moves_a_file_replaced_after_the_check(
    tmp_path: Path, store_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    tree(src)
    dst.mkdir()
    async with parjobs.open_manager(store_path) as m:
        h = await m.submit(
            MoveJob(sources=[str(src / "f3.txt"), str(src / "f4.txt")], destination=str(dst))
        )
        await h.result()
        swapped = swap_after_the_first_check(monkeypatch, dst / "f3.txt", b"somebody else's")
        u = await m.undo(h.id)
        result = await u.result()
    assert swapped
    assert read(dst / "f3.txt") == b"somebody else's"  # left where it is
    assert not (src / "f3.txt").exists()  # and not moved to the source path
    assert read(src / "f4.txt") == b"xxxx"
    assert sorted(p.name for p in dst.iterdir()) == ["f3.txt"]
    assert result["restored"] == 1 and result["kept"] == 1


def run_task(task: UndoTask) -> str:
    """Run one undo task in this thread: its value, or the reason it skipped."""
    try:
        return task.run(TaskContext._create(task.index, "t", Interrupter()))
    except Skip as skip:
        return skip.reason


@pytest.mark.parametrize("same", [True, False])
def test_a_held_name_left_by_a_stopped_undo_is_finished_or_put_back(
    tmp_path: Path, same: bool
) -> None:
    """A run stopped between taking a file aside and removing it left the held name: the
    next run (same token) removes it when it is still the copy's file, else renames it
    back, never replacing what took its name meanwhile."""
    token = new_token()
    here = tmp_path / "here"
    here.mkdir()
    target = here / "a.txt"
    write(target, b"copied")
    record = ItemRecord("copied", "/src/a.txt", str(target), written=fingerprint(os.lstat(target)))
    held = here / os.fsdecode(held_name(b"a.txt", token))
    if not same:
        write(target, b"changed since")
    os.rename(target, held)
    write(target, b"a new file at the name")
    outcome = run_task(UndoTask(1, record, token))
    assert not held.exists()
    assert read(target) == b"a new file at the name"
    if same:
        assert outcome == "removed" and os.listdir(here) == ["a.txt"]
    else:
        assert outcome.startswith(undo_mod.CHANGED)
        assert read(here / "a (1).txt") == b"changed since"


def test_a_move_back_interrupted_after_taking_it_aside_resumes(tmp_path: Path) -> None:
    token = new_token()
    (tmp_path / "dst").mkdir()
    moved, source = tmp_path / "dst" / "m", tmp_path / "src" / "m"
    write(moved, b"mine")
    record = ItemRecord("moved", str(source), str(moved), written=fingerprint(os.lstat(moved)))
    os.rename(moved, tmp_path / "dst" / os.fsdecode(held_name(b"m", token)))
    assert run_task(UndoTask(1, record, token)) == "restored"
    assert read(source) == b"mine" and os.listdir(tmp_path / "dst") == []
    # Run again (stopped before its outcome was recorded): it is back, so it counts restored.
    assert run_task(UndoTask(1, record, token)) == "restored"


async def test_a_cancelled_undo_puts_back_what_a_crash_left_held(
    tmp_path: Path, store_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An undo stopped by a crash between taking a file aside and removing it, then
    cancelled instead of resumed: its cleanup renames the held file back to its name."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    for i in range(100):
        write(src / f"f{i:03}", b"x" * i)
    async with parjobs.open_manager(store_path, workers=2) as m:
        h = await m.submit(CopyJob(sources=[str(src)], destination=str(dst)))
        await h.result()
        slow_checks(monkeypatch, 0.005)
        u = await m.undo(h.id)
        with trio.fail_after(30):
            while len(os.listdir(dst)) > 90:  # it runs: its token is stored
                await trio.sleep(0.01)
        await m.pause(u.id)
        assert await m.wait(u.id) is JobStatus.PAUSED
        token = (await m.get(u.id)).state["name_token"]
        left = sorted(os.listdir(dst))
        assert left and len(left) < 100
        victim = dst / left[0]  # as a crash would leave it: taken aside, not yet removed
        os.rename(victim, dst / os.fsdecode(held_name(os.fsencode(victim.name), token)))
        await m.cancel(u.id)
        assert await m.wait(u.id) is JobStatus.CANCELLED
    assert sorted(os.listdir(dst)) == left  # put back; nothing else touched


async def test_undo_a_copy_of_files_dated_past_2262_removes_them(
    tmp_path: Path, store_path: str
) -> None:
    """Mtimes past 2262 do not fit 64-bit nanoseconds (ext4 keeps them to 2446): the C group path
    computed them modulo 2^64 and recorded that, so an undo of a copy of 20 files dated
    2400 kept each, "changed since the job wrote it". They are copied by the Python path
    now (their exact nanoseconds recorded) and removed by the undo."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    mtime_ns = ((2400 - 1970) * 31_556_952 + 123) * 1_000_000_000 + 456_789
    for i in range(20):
        write(src / f"f{i:02d}", b"x" * 100)
        os.utime(src / f"f{i:02d}", ns=(mtime_ns, mtime_ns))
    async with parjobs.open_manager(store_path) as m:
        h = await m.submit(CopyJob(sources=[str(src)], destination=str(dst), into=True))
        await h.result()
        assert {os.stat(p).st_mtime_ns for p in (dst / "src").iterdir()} == {mtime_ns}
        result = await (await m.undo(h.id)).result()
    assert result["kept_reasons"] == {} and result["failed"] == 0, result
    assert not (dst / "src").exists()
