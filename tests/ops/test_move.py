"""MoveJob end to end: renames on one filesystem, copy-verify-unlink across two, kill -9."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
import signal
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import trio
import xxhash
from _forkcli import Forked
from _trees import (
    SPECIAL_KINDS,
    identity,
    kill_while_linking_then_resume,
    make_special,
    names_tree,
    pause_at,
    reached_in_small_steps,
    run_job,
    run_pausing_before_links,
    save_in_place,
    swap_after_listing,
    user_file_at_first,
    walk_recorded,
)

import parjobs
from parjobs import JobStatus
from parjobs.ops import _move as move_mod
from parjobs.ops import _smallfiles as smallfiles_mod
from parjobs.ops import _transfer as transfer_mod
from parjobs.ops._copyfile import copy_file
from parjobs.ops._errors import MOVE_MOUNT_POINT
from parjobs.ops._move import MoveItem, MoveJob
from parjobs.ops._partials import find_partials
from parjobs.testing import read, snapshot, write

MIB = 1 << 20


def digests(root: Path) -> dict[str, str]:
    """Relative path -> xxh3 of every regular file, symlink target of every link."""
    out = {}
    for d, _, files in os.walk(root):
        for name in files:
            path = os.path.join(d, name)
            rel = os.path.relpath(path, root)
            if os.path.islink(path):
                out[rel] = "-> " + os.readlink(path)
            elif stat.S_ISREG(os.lstat(path).st_mode):  # never open a FIFO
                out[rel] = xxhash.xxh3_128_hexdigest(read(Path(path)))
    return out


def make_tree(root: Path, *, small: int = 40, big: int = 0) -> None:
    rng = random.Random(11)
    (root / "empty").mkdir(parents=True)
    for i in range(small):
        d = root / f"d{i % 5}" / ("deep" if i % 4 == 0 else "")
        d.mkdir(parents=True, exist_ok=True)
        write(d / f"f{i:03}", rng.randbytes(rng.randint(0, 40_000)))
    for i in range(big):
        write(root / f"big{i}", rng.randbytes(3 * MIB + i))
    os.symlink("d0/f000", root / "link")
    os.chmod(root / "d1", 0o750)


# -- same filesystem -----------------------------------------------------------------------


async def test_same_filesystem_moves_each_root_with_one_rename(
    store_path: str, tmp_path: Path
) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_tree(src)
    write(tmp_path / "file.txt", b"file")
    before, ino = digests(src), os.stat(src).st_ino
    job = MoveJob(into=True, sources=[str(src), str(tmp_path / "file.txt")], destination=str(dst))
    result, info, _ = await run_job(store_path, job)
    assert info.status is JobStatus.COMPLETED
    assert not src.exists() and not (tmp_path / "file.txt").exists()
    assert os.stat(dst / "src").st_ino == ino  # renamed, not copied
    assert digests(dst / "src") == before
    assert (result["moved"], result["renamed"], result["copied"], result["bytes"]) == (2, 2, 0, 0)


async def test_a_directory_onto_a_directory_merges_file_by_file(
    store_path: str, tmp_path: Path
) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_tree(src)
    (dst / "src" / "d2").mkdir(parents=True)
    write(dst / "src" / "d2" / "f002", b"already there")
    write(dst / "src" / "kept", b"unrelated")
    before = digests(src)
    result, info, errors = await run_job(
        store_path, MoveJob(into=True, sources=[str(src)], destination=str(dst))
    )
    assert info.status is JobStatus.COMPLETED_WITH_ERRORS  # on_conflict="fail"
    assert [e.label for e in errors] == [str(src / "d2" / "f002")]
    assert "destination exists" in errors[0].message
    assert read(dst / "src" / "d2" / "f002") == b"already there"
    assert read(dst / "src" / "kept") == b"unrelated"
    # everything else moved by rename; the conflicting file and its directories stay
    assert sorted(str(p.relative_to(src)) for p in src.rglob("*")) == ["d2", "d2/f002"]
    moved = {k: v for k, v in before.items() if k != "d2/f002"}
    assert {k: v for k, v in digests(dst / "src").items() if k in moved} == moved
    assert result["renamed"] == len(moved) and result["failed"] == 1
    assert result["source_dirs_removed"] >= 5
    assert stat.S_IMODE(os.stat(dst / "src" / "d1").st_mode) == 0o750


async def test_overwriting_another_hard_link_of_the_source_fails_and_keeps_both(
    store_path: str, tmp_path: Path
) -> None:
    """Merged with ``overwrite`` onto a name that is another hard link of the source's file
    (a ``cp -al`` snapshot): rename(2) between two names of one file does nothing and
    succeeds, so the move reported the file moved while its source stayed; it now fails that
    item, as ``mv`` does ("are the same file"), and moves the rest."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    (dst / "src").mkdir(parents=True)
    write(src / "linked", b"one file, two names")
    os.link(src / "linked", dst / "src" / "linked")
    write(src / "other", b"other")
    job = MoveJob(into=True, sources=[str(src)], destination=str(dst), on_conflict="overwrite")
    result, info, errors = await run_job(store_path, job)
    assert info.status is JobStatus.COMPLETED_WITH_ERRORS
    assert [(e.label, e.error) for e in errors] == [(str(src / "linked"), "FileExistsError")]
    assert "same file" in errors[0].message
    assert os.listdir(src) == ["linked"] and read(src / "linked") == b"one file, two names"
    assert os.stat(src / "linked").st_ino == os.stat(dst / "src" / "linked").st_ino
    assert read(dst / "src" / "other") == b"other"
    assert (result["renamed"], result["failed"]) == (1, 1)


@pytest.mark.parametrize("policy", ["skip", "overwrite", "rename", "update", "fail"])
async def test_conflict_policies_for_a_file(store_path: str, tmp_path: Path, policy: str) -> None:
    src, dst = tmp_path / "new.txt", tmp_path / "dst"
    dst.mkdir()
    write(src, b"new")
    write(dst / "new.txt", b"old")
    os.utime(dst / "new.txt", (1_000_000_000, 1_000_000_000))  # older: "update" replaces
    job = MoveJob(into=True, sources=[str(src)], destination=str(dst), on_conflict=policy)  # type: ignore[arg-type]
    result, info, errors = await run_job(store_path, job)
    files = {n: read(dst / n) for n in os.listdir(dst)}
    failed = policy == "fail"
    assert info.status is (JobStatus.COMPLETED_WITH_ERRORS if failed else JobStatus.COMPLETED)
    assert [e.label for e in errors] == ([str(src)] if failed else [])
    if policy in ("skip", "fail"):
        assert files == {"new.txt": b"old"} and read(src) == b"new"
        assert (result["skipped"], result["failed"]) == ((0, 1) if failed else (1, 0))
    elif policy == "rename":
        assert files == {"new.txt": b"old", "new (1).txt": b"new"} and not src.exists()
    else:  # overwrite; update (the source is newer)
        assert files == {"new.txt": b"new"} and not src.exists()


# -- across filesystems --------------------------------------------------------------------


async def test_across_filesystems_copies_verifies_then_unlinks(
    store_path: str, tmp_path: Path, other_fs: Path
) -> None:
    src = tmp_path / "src"
    make_tree(src, big=1)
    os.mkfifo(src / "d3" / "pipe")
    before = digests(src)
    job = MoveJob(into=True, sources=[str(src)], destination=str(other_fs / "dst"))
    result, info, _ = await run_job(store_path, job)
    assert info.status is JobStatus.COMPLETED
    assert digests(other_fs / "dst" / "src") == before
    # only the FIFO (skipped: never opened) and the directories holding it stay behind
    assert sorted(str(p.relative_to(src)) for p in src.rglob("*")) == ["d3", "d3/pipe"]
    assert result["skipped_reasons"] == {"FIFO not moved across filesystems": 1}
    assert result["copied"] == result["moved"] == len(before)
    assert stat.S_IMODE(os.stat(other_fs / "dst" / "src" / "d1").st_mode) == 0o750
    assert find_partials(other_fs) == []


async def test_small_files_move_across_filesystems_in_groups(
    store_path: str, tmp_path: Path, other_fs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Plain small files take the C group path (one call for many), each verified, synced and
    only then unlinked at the source, and recorded as moved with its identity; C hands back
    a file with an extended attribute, and (as root) one of another owner, which are moved
    alone and keep them."""
    if smallfiles_mod.fastcopy is None:
        pytest.skip("built without the C extension")
    src = tmp_path / "src"
    make_tree(src, small=150)
    tagged: Path | None = src / "d1" / "f001"
    try:
        os.setxattr(src / "d1" / "f001", "user.tag", b"kept")
    except OSError:
        tagged = None  # no user attributes on this filesystem: the group part still runs
    foreign: Path | None = src / "d3" / "f003"
    try:
        os.chown(src / "d3" / "f003", 4321, 4321)
    except PermissionError:
        foreign = None  # not root: the owner part is not tried
    before = digests(src)
    calls: list[list[bytes]] = []
    handed_back: list[bytes] = []
    real = smallfiles_mod.copy_small_files

    def counting(items: Any, **kwargs: Any) -> Any:
        calls.append([item[-1] for item in items])
        done = real(items, **kwargs)
        assert done is not None and kwargs["owned"] and smallfiles_mod.fastcopy is not None
        not_plain = smallfiles_mod.fastcopy.NOT_PLAIN
        handed_back.extend(i[-1] for i, r in zip(items, done[0], strict=True) if r == not_plain)
        return done

    monkeypatch.setattr(smallfiles_mod, "copy_small_files", counting)
    job = MoveJob(into=True, sources=[str(src)], destination=str(other_fs / "dst"))
    result, info, errors = await run_job(store_path, job)
    assert info.status is JobStatus.COMPLETED and errors == []
    moved = other_fs / "dst" / "src"
    assert digests(moved) == before and not src.exists()
    grouped = [name for call in calls for name in call]
    assert len(grouped) >= 140 and len(calls) <= len(grouped) // 2, "small files went in groups"
    if tagged is not None:
        assert b"f001" in handed_back and os.getxattr(moved / "d1" / "f001", "user.tag") == b"kept"
    if foreign is not None:
        owner = os.stat(moved / "d3" / "f003")
        assert b"f003" in handed_back and (owner.st_uid, owner.st_gid) == (4321, 4321)
    assert len(handed_back) == (tagged is not None) + (foreign is not None)
    async with parjobs.open_manager(store_path) as m:
        records = await m.items(info.id, action="moved")
    by_source = {r.source: r for r in records}
    some = str(src / "d2" / "f002")
    assert by_source[some].destination == str(moved / "d2" / "f002")
    written = by_source[some].written
    assert written is not None and written.inode == os.stat(moved / "d2" / "f002").st_ino
    assert result["moved"] == result["copied"] == len(before)


@pytest.mark.parametrize("across", [True, False])
async def test_a_destination_that_does_not_exist_becomes_the_moved_item(
    store_path: str, tmp_path: Path, request: pytest.FixtureRequest, across: bool
) -> None:
    """``mv a.txt b.txt`` and ``mv dir newdir``: the one source takes the new name, on one
    filesystem (a rename) and across two (copied, then the source removed)."""
    base = request.getfixturevalue("other_fs") if across else tmp_path
    write(tmp_path / "a.txt", b"a")
    src = tmp_path / "src"
    make_tree(src)
    before = digests(src)
    job = MoveJob(sources=[str(tmp_path / "a.txt")], destination=str(base / "b.txt"))
    _, info, _ = await run_job(store_path, job)
    assert info.status is JobStatus.COMPLETED and info.spec_data["into"] is False
    assert read(base / "b.txt") == b"a" and not (tmp_path / "a.txt").exists()
    _, info, _ = await run_job(
        store_path, MoveJob(sources=[str(src)], destination=str(base / "new"))
    )
    assert info.status is JobStatus.COMPLETED, info.error
    assert digests(base / "new") == before and not src.exists()


@pytest.mark.parametrize("across", [True, False])
async def test_directory_times_survive_the_move(
    store_path: str, tmp_path: Path, request: pytest.FixtureRequest, across: bool
) -> None:
    """Moving the files out of a source directory changes its mtime; the destination
    directories still get the times the sources had (as a copy does), across filesystems
    and when merging file by file on one."""
    base = request.getfixturevalue("other_fs") if across else tmp_path / "dst"
    src = tmp_path / "src"
    make_tree(src)
    if not across:  # a directory meeting a directory: merged by renaming file by file
        (base / "src").mkdir(parents=True)
    dirs = sorted(p for p in [src, *src.rglob("*")] if p.is_dir() and not p.is_symlink())
    for i, d in enumerate(reversed(dirs)):  # deepest first: setting one changes no other
        os.utime(d, ns=(1_000_000_000 * (i + 1), 1_000_000_000 * (i + 7) + 123))
    before = {str(d.relative_to(tmp_path)): d.stat().st_mtime_ns for d in dirs}
    _, info, _ = await run_job(
        store_path, MoveJob(into=True, sources=[str(src)], destination=str(base))
    )
    assert info.status is JobStatus.COMPLETED, info.error
    after = {
        str(d.relative_to(tmp_path)): (base / d.relative_to(tmp_path)).stat().st_mtime_ns
        for d in dirs
    }
    assert after == before
    assert not src.exists()


async def move_keeping(
    store_path: str, src: Path, dst: Path, kept: str, error: str, moved: int
) -> list[parjobs.ItemError]:
    """Move ``src`` into ``dst``: the job completes with errors, ``moved`` items moved and one
    failed, ``kept`` (as ``error``), the only name left at the source. Its errors."""
    job = MoveJob(into=True, sources=[str(src)], destination=str(dst))
    result, info, errors = await run_job(store_path, job)
    assert info.status is JobStatus.COMPLETED_WITH_ERRORS and result["moved"] == moved
    assert [(e.label, e.error) for e in errors] == [(str(src / kept), error)]
    assert os.listdir(src) == [kept]
    return errors


async def test_a_copy_replaced_after_its_rename_keeps_its_source(
    store_path: str, tmp_path: Path, other_fs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between the group's renames and its unlinks, another program renames its own file
    over c's fresh copy: c's source is not the copy's any more to give up. It stays, the
    other program's file stays, and c fails as a conflict."""
    if smallfiles_mod.fastcopy is None:
        pytest.skip("the group path needs the C extension")
    src = tmp_path / "src"
    src.mkdir()
    for name in ("a", "b", "c"):
        write(src / name, name.encode() * 10_000)
    real_group = smallfiles_mod.copy_small_files

    def replacing_group(items: Any, **kwargs: Any) -> Any:
        done = real_group(items, **kwargs)
        for *_, dir_fd, name in items:
            if name == b"c":
                fd = os.open(b"theirs", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=dir_fd)
                os.write(fd, b"their c")
                os.close(fd)
                os.rename(b"theirs", name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        return done

    monkeypatch.setattr(smallfiles_mod, "copy_small_files", replacing_group)
    await move_keeping(store_path, src, other_fs, "c", "FileExistsError", 2)
    assert read(src / "c") == b"c" * 10_000
    assert read(other_fs / "src" / "c") == b"their c"
    assert read(other_fs / "src" / "a") == b"a" * 10_000


async def test_a_failed_verification_keeps_the_source(
    store_path: str, tmp_path: Path, other_fs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name in ("a", "b", "c"):
        write(src / name, name.encode() * 10_000)
    real = copy_file

    def corrupting(*args: Any, **kwargs: Any) -> Any:
        if args[1] == b"b":
            kwargs["_after_write"] = lambda fd: os.pwrite(fd, b"X", 0)
        return real(*args, **kwargs)

    real_group = smallfiles_mod.copy_small_files
    grouped: list[bytes] = []

    def corrupting_group(items: Any, **kwargs: Any) -> Any:
        """The C group path compares each copy before its rename: b's differs (as C answers
        it, nothing left behind), so b is moved alone, where it is spoilt again."""
        assert kwargs["compare"] and kwargs["durable"], "compared and fsynced before the rename"
        done = real_group([item for item in items if item[-1] != b"b"], **kwargs)
        assert done is not None
        results, written = iter(done[0]), iter(done[1])
        sources = kwargs["sources"]
        seen = iter(list(sources))
        sources.clear()
        out: tuple[list[int], list[Any]] = ([], [])
        for *_, name in items:
            grouped.append(name)
            if name == b"b":
                out[0].append(smallfiles_mod.fastcopy.MISMATCH)  # type: ignore[union-attr]
                out[1].append(None)
                sources.append(None)
            else:
                out[0].append(next(results))
                out[1].append(next(written))
                sources.append(next(seen))
        return out

    monkeypatch.setattr(transfer_mod, "copy_file", corrupting)
    monkeypatch.setattr(smallfiles_mod, "copy_small_files", corrupting_group)
    await move_keeping(store_path, src, other_fs, "b", "VerifyError", 2)
    if smallfiles_mod.fastcopy is not None:
        assert b"b" in grouped, "the group path ran"
    assert read(src / "b") == b"b" * 10_000
    assert sorted(os.listdir(other_fs / "src")) == ["a", "c"]
    assert find_partials(other_fs) == []


async def test_a_source_saved_anew_before_its_lone_unlink_is_kept(
    store_path: str, tmp_path: Path, other_fs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same on the one-file path (no C extension): a source rewritten after its copy is
    synced, right before its unlink, is kept and its item fails as changed."""
    monkeypatch.setattr(smallfiles_mod, "fastcopy", None)
    src = tmp_path / "src"
    src.mkdir()
    for name in ("a", "b"):
        write(src / name, name.encode() * 10_000)
    real_sync = move_mod._sync_copy

    def sync_then_save(dir_fd: int, name: bytes) -> None:
        real_sync(dir_fd, name)
        if name == b"b":
            write(src / "b", b"B" * 10_000)

    monkeypatch.setattr(move_mod, "_sync_copy", sync_then_save)
    await move_keeping(store_path, src, other_fs, "b", "SourceChangedError", 1)
    assert read(src / "b") == b"B" * 10_000
    assert read(other_fs / "src" / "b") == b"b" * 10_000


def rename_over(path: Path, data: bytes) -> None:
    """Replace ``path`` as ``rsync -a`` or ``cp -p`` do: a temporary written with ``data``,
    given the old file's times to the nanosecond, renamed over the name (a new inode of the
    same size and mtime when ``data`` is as long as the old contents)."""
    old = os.lstat(path)
    tmp = path.with_name(path.name + ".tmp")
    write(tmp, data)
    os.utime(tmp, ns=(old.st_atime_ns, old.st_mtime_ns))
    os.rename(tmp, path)
    new = os.lstat(path)
    assert (new.st_size, new.st_mtime_ns) == (old.st_size, old.st_mtime_ns)
    assert new.st_ino != old.st_ino


@pytest.mark.parametrize("how", ["saved-anew", "renamed-over"])
async def test_a_source_replaced_after_its_group_copy_is_kept(
    store_path: str, tmp_path: Path, other_fs: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """Small files, moved as a group: after the group copied and verified them, before it
    unlinks their sources, b is replaced: saved anew in place (same size, new mtime), or by
    another file renamed over it with the same size and mtime to the nanosecond. The group
    unlinks a source only while it is the walked inode, size and mtime, so the new b is kept
    (renamed over, it was unlinked: the user's new file lost); its item fails as changed
    (not as a conflict with its own copy), the copy of the old b at the destination, the
    rest moved."""
    if smallfiles_mod.fastcopy is None:
        pytest.skip("built without the C extension")
    src = tmp_path / "src"
    src.mkdir()
    names = [f"f{i:02}" for i in range(20)] + ["b"]
    for name in names:
        write(src / name, name.encode() * 5_000)
    real_unlink = smallfiles_mod.unlink_files
    grouped: list[bytes] = []

    def replacing(sources: Any) -> Any:
        names = [os.path.basename(path) for path, *_ in sources]
        grouped.extend(names)
        if b"b" in names:  # b copied and verified: now replaced
            if how == "saved-anew":
                write(src / "b", b"B" * 5_000)
            else:
                rename_over(src / "b", b"B" * 5_000)
        return real_unlink(sources)

    monkeypatch.setattr(smallfiles_mod, "unlink_files", replacing)
    errors = await move_keeping(store_path, src, other_fs, "b", "SourceChangedError", 20)
    assert b"b" in grouped and len(grouped) > 1, "b went with a group"
    reason = "mtime_ns" if how == "saved-anew" else "replaced by another file"
    assert reason in errors[0].message
    assert read(src / "b") == b"B" * 5_000
    assert read(other_fs / "src" / "b") == b"b" * 5_000
    assert sorted(os.listdir(other_fs / "src")) == sorted(names)


async def test_a_source_renamed_over_before_its_lone_unlink_is_kept(
    store_path: str, tmp_path: Path, other_fs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file over 1 MiB, moved on its own: replaced by another file renamed over it with
    the same size and mtime_ns after its copy is synced, right before its unlink. It is
    kept (it was unlinked: the user's new file lost) and its item fails as replaced."""
    src = tmp_path / "src"
    src.mkdir()
    write(src / "a", b"a" * 1000)
    write(src / "big", b"o" * (2 * MIB))
    real_sync = move_mod._sync_copy

    def sync_then_rename_over(dir_fd: int, name: bytes) -> None:
        real_sync(dir_fd, name)
        if name == b"big":
            rename_over(src / "big", b"N" * (2 * MIB))

    monkeypatch.setattr(move_mod, "_sync_copy", sync_then_rename_over)
    errors = await move_keeping(store_path, src, other_fs, "big", "SourceChangedError", 1)
    assert "replaced by another file" in errors[0].message
    assert read(src / "big") == b"N" * (2 * MIB)
    assert read(other_fs / "src" / "big") == b"o" * (2 * MIB)


@pytest.mark.parametrize("path", ["group", "alone", "big"])
async def test_a_source_saved_in_place_with_its_mtime_put_back_is_kept(
    store_path: str, tmp_path: Path, other_fs: Path, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    """A source written in place after its copy, before its unlink, its mtime put back:
    its size, mtime and inode are as copied, so the move unlinked it and the new bytes were
    lost (the job completed, the destination holding the old ones; ``mv`` and ``rsync
    --remove-source-files`` do the same). Its ctime moved: the source is kept and its item
    fails as changed, on the group path (C), alone, and for a file over 1 MiB."""
    if path == "group" and smallfiles_mod.fastcopy is None:
        pytest.skip("built without the C extension")
    if path == "alone":
        monkeypatch.setattr(smallfiles_mod, "fastcopy", None)
    src = tmp_path / "src"
    src.mkdir()
    size = 2 * MIB if path == "big" else 5_000
    names = [f"f{i:02}" for i in range(20)] + ["b"]
    for name in names:
        write(src / name, name.encode()[:1] * size)
    if path == "group":
        real_unlink = smallfiles_mod.unlink_files

        def saving(sources: Any) -> Any:
            if b"b" in [os.path.basename(path) for path, *_ in sources]:
                save_in_place(src / "b", b"NEW")
            return real_unlink(sources)

        monkeypatch.setattr(smallfiles_mod, "unlink_files", saving)
    else:
        real_sync = move_mod._sync_copy

        def sync_then_save(dir_fd: int, name: bytes) -> None:
            real_sync(dir_fd, name)
            if name == b"b":
                save_in_place(src / "b", b"NEW")

        monkeypatch.setattr(move_mod, "_sync_copy", sync_then_save)
    errors = await move_keeping(store_path, src, other_fs, "b", "SourceChangedError", 20)
    assert "ctime_ns" in errors[0].message
    assert read(src / "b") == b"NEW" + b"b" * (size - 3)
    assert read(other_fs / "src" / "b") == b"b" * size


async def test_entries_added_to_a_source_directory_mid_move_stay_and_are_reported(
    store_path: str, tmp_path: Path, other_fs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file saved into a source directory, and a directory made, after the walk listed
    them, while the move runs: never moved (the walk had passed), they stay at the source,
    their directories with them; the job said "completed", every item moved, as if the tree
    had gone (``mv`` across filesystems removes the tree it copied, new files too). The
    finishing step fails naming them now; the rest is moved, and once they are moved away a
    resume completes."""
    monkeypatch.setattr(smallfiles_mod, "fastcopy", None)
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    for name in ("a", "sub/b", "sub/c"):
        write(src / name, name.encode() * 100)
    real_sync = move_mod._sync_copy

    def sync_then_add(dir_fd: int, name: bytes) -> None:
        real_sync(dir_fd, name)
        if name == b"c":  # the walk has listed everything: another program saves files
            write(src / "sub" / "new", b"new")
            (src / "newdir").mkdir()
            write(src / "newdir" / "x", b"x")

    monkeypatch.setattr(move_mod, "_sync_copy", sync_then_add)
    job = MoveJob(into=True, sources=[str(src)], destination=str(other_fs))
    result, info, errors = await run_job(store_path, job)
    assert info.status is JobStatus.COMPLETED_WITH_ERRORS and result["moved"] == 3
    assert len(errors) == 1 and "added after the move listed them" in errors[0].message
    assert str(src / "sub") in errors[0].message
    assert errors[0].message.startswith("1 source directories")  # not src: sub is below it
    assert sorted(str(p.relative_to(src)) for p in src.rglob("*")) == [
        "newdir",
        "newdir/x",
        "sub",
        "sub/new",
    ]
    for name in ("a", "sub/b", "sub/c"):
        assert read(other_fs / "src" / name) == name.encode() * 100
    monkeypatch.setattr(move_mod, "_sync_copy", real_sync)
    shutil.rmtree(src / "newdir")
    os.unlink(src / "sub" / "new")
    async with parjobs.open_manager(store_path) as manager:
        await manager.resume(info.id)
        assert await manager.wait(info.id) is JobStatus.COMPLETED
    assert not src.exists()


async def test_a_source_directory_kept_as_a_mount_point_is_not_reported_as_added_to(
    store_path: str, tmp_path: Path, other_fs: Path, bind_mount: Any
) -> None:
    """A source tree holding a mount point, moved across filesystems: the mount point
    cannot be removed (busy), so its parents are not empty; that is no entry added after
    the walk, and no such report is made for them (the first form of that report named
    ``src`` so)."""
    src, elsewhere = tmp_path / "src", tmp_path / "elsewhere"
    (src / "m").mkdir(parents=True)
    write(src / "a", b"a")
    elsewhere.mkdir()
    write(elsewhere / "o", b"o")
    bind_mount(elsewhere, src / "m")
    job = MoveJob(into=True, sources=[str(src)], destination=str(other_fs))
    _, _, errors = await run_job(store_path, job)
    assert not [e.message for e in errors if "added after the move listed them" in e.message]
    assert read(other_fs / "src" / "a") == b"a"


async def test_a_move_across_filesystems_does_not_go_through_a_mount_point(
    store_path: str, tmp_path: Path, other_fs: Path, bind_mount: Any
) -> None:
    """``mkdir -p s/m other; mount --bind other s/m; parjobs move s /dev/shm/`` moved
    ``other``'s files out of ``other`` (copied, then removed through the mount; `mv` does
    the same), where a delete refuses mount points. The mount point fails now, with the
    delete's reason, what is below it is skipped: ``other`` keeps its files; the rest of
    the tree moves, and a resume meets the same refusal."""
    src, other = tmp_path / "s", tmp_path / "other"
    (src / "m").mkdir(parents=True)
    write(src / "a", b"a")
    (other / "sub").mkdir(parents=True)
    write(other / "o", b"o")
    write(other / "sub" / "p", b"p")
    bind_mount(other, src / "m")
    job = MoveJob(into=True, sources=[str(src)], destination=str(other_fs))
    result, info, errors = await run_job(store_path, job)
    assert info.status is JobStatus.COMPLETED_WITH_ERRORS
    assert [(e.label, MOVE_MOUNT_POINT in e.message) for e in errors] == [(str(src / "m"), True)]
    assert result["skipped_reasons"] == {move_mod.INSIDE_MOUNT: 3}
    assert read(other / "o") == b"o" and read(other / "sub" / "p") == b"p"
    assert read(other_fs / "s" / "a") == b"a" and not (src / "a").exists()
    assert not (other_fs / "s" / "m").exists()


async def test_a_group_whose_walk_saw_other_device_and_inode_numbers_moves_every_file(
    store_path: str, tmp_path: Path, other_fs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Device numbers are not stable across a remount, nor are a FAT filesystem's inode
    numbers: a move paused, its drive plugged in again, resumes from its walk's manifest,
    whose entries carry the old numbers. The group unlinks a source while it is the file C
    copied (its descriptor's identity), not the one the walk noted: every file moved, no
    error (each source was kept and its item failed as "replaced by another file", then as
    "destination exists" on every retry: the job could not finish)."""
    if smallfiles_mod.fastcopy is None:
        pytest.skip("built without the C extension")
    src = tmp_path / "src"
    src.mkdir()
    names = [f"f{i:02}" for i in range(20)]
    for name in names:
        write(src / name, name.encode() * 5_000)
    real_run_entries = MoveItem.run_entries.__func__  # type: ignore[attr-defined]
    renumbered: list[bytes] = []

    def remounted(cls: Any, plan: Any, walked: Any, tc: Any) -> Any:
        walked = [
            e if e is None else dataclasses.replace(e, dev=e.dev + 1, ino=e.ino + 1000)
            for e in walked
        ]
        renumbered.extend(e.path for e in walked if e is not None)
        return real_run_entries(cls, plan, walked, tc)

    monkeypatch.setattr(MoveItem, "run_entries", classmethod(remounted))
    job = MoveJob(into=True, sources=[str(src)], destination=str(other_fs))
    result, info, errors = await run_job(store_path, job)
    assert len(renumbered) > 1, "the files went as a group"
    assert [e.message for e in errors] == []
    assert info.status is JobStatus.COMPLETED and result["moved"] == 20
    assert not src.exists()
    assert sorted(os.listdir(other_fs / "src")) == names
    for name in names:
        assert read(other_fs / "src" / name) == name.encode() * 5_000


async def test_a_symlink_or_hard_link_changed_before_its_unlink_is_kept(
    store_path: str, tmp_path: Path, other_fs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Symlinks and later names of hard links, moved across filesystems, keep the same rule:
    a source changed between its copy (or link) and its unlink stays, and its item fails."""
    src = tmp_path / "src"
    src.mkdir()
    write(src / "file", b"f" * 1000)
    os.link(src / "file", src / "second-name")
    os.symlink("file", src / "link")
    real_put, real_link_first = transfer_mod.symlink_put, transfer_mod.link_first

    def put_then_remake(*args: Any, **kwargs: Any) -> Any:
        put = real_put(*args, **kwargs)

        def remade(leaf: bytes, overwrite: bool) -> None:
            put(leaf, overwrite)
            os.unlink(src / "link")
            os.symlink("elsewhere", src / "link")  # a new link, another target

        return remade

    def link_then_rewrite(*args: Any, **kwargs: Any) -> Any:
        got = real_link_first(*args, **kwargs)
        write(src / "second-name", b"S" * 2000)  # the user's new content under that name
        return got

    monkeypatch.setattr(move_mod, "symlink_put", put_then_remake)
    monkeypatch.setattr(move_mod, "link_first", link_then_rewrite)
    job = MoveJob(into=True, sources=[str(src)], destination=str(other_fs))
    _, info, errors = await run_job(store_path, job)
    assert info.status is JobStatus.COMPLETED_WITH_ERRORS
    assert sorted((e.label, e.error) for e in errors) == [
        (str(src / "link"), "SourceChangedError"),
        (str(src / "second-name"), "SourceChangedError"),
    ]
    assert os.readlink(src / "link") == "elsewhere"
    assert read(src / "second-name") == b"S" * 2000
    assert os.readlink(other_fs / "src" / "link") == "file"


async def test_a_hard_link_saved_anew_before_its_link_is_moved_with_the_new_content(
    store_path: str, tmp_path: Path, other_fs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file with two names, saved anew through its second name after its first name was
    copied (and unlinked) but before the links stage: the second name is copied with what it
    holds now, never linked to the first name's older copy and then unlinked (which lost the
    user's new content while the move reported success)."""
    src = tmp_path / "src"
    src.mkdir()
    write(src / "a", b"old" * 1000)
    os.link(src / "a", src / "b")
    real_item = move_mod.MoveLinkItem

    def rewrite_then_make(*args: Any) -> Any:  # as the links stage makes its one item
        write(src / "b", b"NEW" * 2000)  # in place: the same file, under its remaining name
        return real_item(*args)

    monkeypatch.setattr(move_mod, "MoveLinkItem", rewrite_then_make)
    job = MoveJob(into=True, sources=[str(src)], destination=str(other_fs))
    _, info, errors = await run_job(store_path, job)
    assert info.status is JobStatus.COMPLETED, errors
    assert read(other_fs / "src" / "b") == b"NEW" * 2000
    assert read(other_fs / "src" / "a") == b"old" * 1000
    assert not src.exists()


CHILD = """
import os, time, trio, parjobs
from parjobs.ops import _smallfiles as smallfiles_mod
from parjobs.ops import _transfer as transfer_mod
# Every file (a chunk of a big one, a small one in a C group) takes {delay} s, and 0.25 s
# once {files} files are at the destination: the parent's kill then lands mid-job even
# when a loaded machine leaves the parent waiting for its turn.
def finished(root):
    ends = (".parjobs-partial", ".parjobs-tmp", ".meta")
    return sum(1 for _, _, fs in os.walk(root) for f in fs if not f.endswith(ends))
def pause(n=1):
    time.sleep({delay} * n if finished({dst!r}) < {files} else 0.25)
real, real_group = transfer_mod.copy_file, smallfiles_mod.copy_small_files
def slowed(*args, check=None, **kwargs):
    def slow_check():
        pause()
        if check is not None:
            check()
    return real(*args, check=slow_check, **kwargs)
def slowed_group(items, **kwargs):
    pause(len(items))
    return real_group(items, **kwargs)
transfer_mod.copy_file = slowed
smallfiles_mod.copy_small_files = slowed_group
transfer_mod.CHUNK_SIZE = 256 * 1024
from parjobs.ops._move import MoveJob
async def main():
    async with parjobs.open_manager({store!r}, workers=4) as m:
        jobs = await m.list_jobs()
        if jobs:
            handle = await m.resume(jobs[0].id)
        else:
            handle = await m.submit(MoveJob(into=True, sources=[{src!r}], destination={dst!r}))
        print(await handle.wait(), flush=True)
trio.run(main)
"""


def finished_files(root: Path) -> int:
    suffixes = (".parjobs-partial", ".parjobs-tmp", ".meta")
    return sum(1 for _, _, fs in os.walk(root) for f in fs if not f.endswith(suffixes))


def run_child_until(store: str, src: Path, dst: Path, files: int) -> None:
    """Start (or resume) the move in a child; SIGKILL it once ``dst`` holds ``files`` files."""
    code = CHILD.format(delay=0.004, files=files, store=store, src=str(src), dst=str(dst))
    child = Forked([], code=code, stdout=subprocess.DEVNULL)  # a real process, started warm
    deadline = time.monotonic() + 60
    try:
        while finished_files(dst) < files:
            assert child.poll() is None, child.stderr.read()
            assert time.monotonic() < deadline, "the move made no progress"
            time.sleep(0.005)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
        child.stderr.close()


def assert_nothing_lost(expected: dict[str, str], src: Path, dst: Path) -> None:
    """Every file exists in full at the source or at the destination."""
    for rel, digest in expected.items():
        here = [p for p in (src / rel, dst / rel) if os.path.lexists(p)]
        assert here, f"{rel} is in neither place"
        assert any(digests_of(p) == digest for p in here), f"{rel} is nowhere complete"


def digests_of(path: Path) -> str:
    if path.is_symlink():
        return "-> " + os.readlink(path)
    return xxhash.xxh3_128_hexdigest(read(path))


async def test_kill_9_at_several_points_never_loses_a_file(
    store_path: str, tmp_path: Path, other_fs: Path
) -> None:
    src, dst = tmp_path / "src", other_fs / "dst"
    make_tree(src, small=160, big=4)
    expected = digests(src)
    for files in (20, 70, 120):
        await trio.to_thread.run_sync(run_child_until, store_path, src, dst, files)
        assert_nothing_lost(expected, src, dst / "src")
        assert finished_files(src) + finished_files(dst) >= len(expected)
    async with parjobs.open_manager(store_path) as m:
        (info,) = await m.list_jobs()
        assert info.status is JobStatus.INTERRUPTED
        handle = await m.resume(info.id)
        with trio.fail_after(60):
            result = await handle.result()
    assert digests(dst / "src") == expected
    assert not src.exists()  # every file moved, every source directory removed
    assert find_partials(other_fs) == []
    assert result["failed"] == 0


# -- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "message"),
    [("missing", "does not exist"), ("inside", "is inside source"), ("same", "is the destination")],
)
async def test_bad_input_is_refused(
    store_path: str, tmp_path: Path, case: str, message: str
) -> None:
    src = tmp_path / "src"
    (src / "inner").mkdir(parents=True)
    sources, destination = {
        "missing": ([tmp_path / "nope"], tmp_path / "d"),
        "inside": ([src], src / "inner"),
        "same": ([src], src),
    }[case]
    async with parjobs.open_manager(store_path) as m:
        with pytest.raises(parjobs.JobSpecError, match=message):
            await m.submit(
                MoveJob(into=True, sources=[str(s) for s in sources], destination=str(destination))
            )
    assert sorted(os.listdir(tmp_path)) == ["jobs.sqlite", "src"] or not (tmp_path / "d").exists()
    assert (src / "inner").is_dir()


async def test_resume_finishes_a_file_found_in_both_places(
    store_path: str, tmp_path: Path, other_fs: Path
) -> None:
    """As after a kill between the copy's rename and the source's unlink."""
    src, dst = tmp_path / "src", other_fs / "dst"
    src.mkdir()
    write(src / "a", b"a" * 1000)
    write(src / "b", b"b" * 1000)
    (dst / "src").mkdir(parents=True)
    write(dst / "src" / "b", b"in the way")
    async with parjobs.open_manager(store_path) as m:
        handle = await m.submit(MoveJob(into=True, sources=[str(src)], destination=str(dst)))
        assert await handle.wait() is JobStatus.COMPLETED_WITH_ERRORS  # b: destination exists
        shutil.copy2(src / "b", dst / "src" / "b")  # now an exact copy, as the job would make
        await m.resume(handle.id)
        result = await handle.result()
    assert not src.exists()
    assert read(dst / "src" / "b") == b"b" * 1000
    assert result["moved"] == 2 and result["failed"] == 0


async def test_resume_refuses_a_destination_swapped_for_a_symlink(
    store_path: str, tmp_path: Path
) -> None:
    """A move that ended with a failed item (a conflict) is resumed after its destination was
    replaced by a symlink to another directory: the job fails, saying why; nothing is moved
    there and the sources stay where they are (issue 12, item 9)."""
    src, dst, etc = tmp_path / "src", tmp_path / "dst", tmp_path / "etc"
    (src / "d").mkdir(parents=True)
    for name in ("a.txt", "b.txt", "d/c.txt"):
        (src / name).write_bytes(name.encode())
    (dst / "src").mkdir(parents=True)
    (dst / "src" / "a.txt").write_bytes(b"in the way")  # fails under on_conflict="fail"
    (etc / "src").mkdir(parents=True)
    (etc / "passwd").write_bytes(b"root:x:0:0")
    async with parjobs.open_manager(store_path) as m:
        handle = await m.submit(MoveJob(into=True, sources=[str(src)], destination=str(dst)))
        assert await handle.wait() is JobStatus.COMPLETED_WITH_ERRORS
        os.rename(dst, tmp_path / "dst-old")
        os.symlink(etc, dst)
        (src / "late.txt").write_bytes(b"arrived after the first run")
        before = sorted(os.walk(etc))
        await m.resume(handle.id)
        with trio.fail_after(30):
            assert await handle.wait() is JobStatus.FAILED
        error = (await m.get(handle.id)).error or ""
    assert "not the directory earlier runs of this job wrote into" in error
    assert sorted(os.walk(etc)) == before
    assert (src / "late.txt").read_bytes() == b"arrived after the first run"
    assert (src / "a.txt").exists()


# -- special files at the destination --------------------------------------------------------


@pytest.mark.parametrize("across", [False, True], ids=["rename", "across-filesystems"])
@pytest.mark.parametrize("policy", ["overwrite", "update"])
@pytest.mark.parametrize("kind", sorted(SPECIAL_KINDS))
async def test_special_file_at_the_destination_is_never_replaced(
    store_path: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    kind: str,
    policy: str,
    across: bool,
) -> None:
    """Moved over a FIFO, socket or device, a file, a symlink or a directory (a source root
    or an entry in one) fails naming the destination; the special file is left as it is
    and stays where it was; the other items move."""
    base = request.getfixturevalue("other_fs") if across else tmp_path
    src, dst = tmp_path / "src", base / "dst"
    (src / "d").mkdir(parents=True)
    write(src / "f", b"source")
    write(src / "d" / "inner", b"inner")
    write(src / "other.txt", b"other")
    os.symlink("other.txt", src / "link")
    (tmp_path / "rootdir").mkdir()  # a source root that is a directory
    write(tmp_path / "rootdir" / "x", b"x")
    (dst / "src").mkdir(parents=True)
    before = {n: make_special(dst / "src" / n, kind) for n in ("f", "link", "d")}
    before["rootdir"] = make_special(dst / "rootdir", kind)
    sources = [str(src), str(tmp_path / "rootdir")]
    job = MoveJob(into=True, sources=sources, destination=str(dst), on_conflict=policy)  # type: ignore[arg-type]
    result, info, errors = await run_job(store_path, job)
    assert info.status is JobStatus.COMPLETED_WITH_ERRORS
    after = {n: identity(dst / "src" / n) for n in ("f", "link", "d")}
    after["rootdir"] = identity(dst / "rootdir")
    assert after == before
    assert read(dst / "src" / "other.txt") == b"other" and not (src / "other.txt").exists()
    assert read(src / "f") == b"source" and os.readlink(src / "link") == "other.txt"
    messages = {os.path.basename(e.label): e.message for e in errors}
    for n in ("f", "link"):
        what = SPECIAL_KINDS[kind]
        assert messages.pop(n) == f"destination is a {what}, not replaced: {str(dst / 'src' / n)!r}"
    assert "rootdir" in messages or "x" in messages
    assert read(tmp_path / "rootdir" / "x") == b"x"
    if policy == "overwrite":
        assert all(m.startswith("destination is a") for m in messages.values()), messages
    assert result["failed"] == len(errors)
    assert find_partials(dst) == []


async def test_hard_links_stay_linked_across_filesystems(
    store_path: str, tmp_path: Path, other_fs: Path
) -> None:
    """As ``mv`` (``cp -a`` then remove): names of one file in the tree are one file at the
    destination; a name linked to a file outside the tree is moved as a copy of its own, and
    the outside file stays."""
    src, dst = tmp_path / "src", other_fs / "dst"
    (src / "a").mkdir(parents=True)
    (src / "b").mkdir()
    write(src / "a" / "f", b"three names")
    os.link(src / "a" / "f", src / "a" / "g")
    os.link(src / "a" / "f", src / "b" / "h")
    write(src / "b" / "big", os.urandom(2 * MIB))
    os.link(src / "b" / "big", src / "a" / "big2")
    write(tmp_path / "outside", b"outside")
    os.link(tmp_path / "outside", src / "b" / "o")
    job = MoveJob(sources=[str(src)], destination=str(dst))
    result, info, errors = await run_job(store_path, job)
    assert info.status is JobStatus.COMPLETED, errors
    st = {rel: os.lstat(dst / rel) for rel in ("a/f", "a/g", "b/h", "b/big", "a/big2", "b/o")}
    assert st["a/f"].st_ino == st["a/g"].st_ino == st["b/h"].st_ino
    assert st["a/f"].st_nlink == 3 and read(dst / "b" / "h") == b"three names"
    assert st["b/big"].st_ino == st["a/big2"].st_ino and st["b/big"].st_nlink == 2
    assert st["b/o"].st_nlink == 1 and read(tmp_path / "outside") == b"outside"
    assert not src.exists()
    assert (result["moved"], result["linked"], result["failed"]) == (6, 3, 0)


@pytest.mark.parametrize("paused", [False, True], ids=["fresh", "resumed"])
@pytest.mark.parametrize("policy", ["rename", "skip", "fail", "update"])
async def test_a_later_name_is_never_linked_to_a_file_the_move_did_not_write(
    store_path: str, tmp_path: Path, other_fs: Path, policy: Any, paused: bool
) -> None:
    """As for a copy: the user's file of the same size and mtime at the first name, kept by
    the policy, got the later name ``b`` linked to it (the user's bytes; the source's
    removed). ``b`` is moved with its own bytes now, the user's file untouched; likewise
    when the run is paused before the links stage and resumed."""
    src, dst = tmp_path / "src", other_fs / "dst"
    user = user_file_at_first(src, dst)
    job = MoveJob(sources=[str(src / "s")], destination=str(dst), on_conflict=policy)
    status = await run_pausing_before_links(store_path, job, paused)
    assert status is (JobStatus.COMPLETED_WITH_ERRORS if policy == "fail" else JobStatus.COMPLETED)
    assert read(dst / "s" / "b") == b"source bytes" and not (src / "s" / "b").exists()
    assert read(dst / "s" / "a") == b"user's bytes"
    assert os.stat(dst / "s" / "a").st_ino == user[0] and os.stat(dst / "s" / "a").st_nlink == 1
    first = dst / "s" / "a (1)" if policy == "rename" else src / "s" / "a"
    assert read(first) == b"source bytes"


@pytest.mark.parametrize("linked", [True, False], ids=["later-link", "file"])
async def test_a_resumed_move_keeps_a_conflict_of_the_sources_size_and_mtime(
    store_path: str, tmp_path: Path, other_fs: Path, linked: bool
) -> None:
    """Across filesystems, the user's file at ``s/b`` has the source's size and mtime, other
    bytes: the first run fails it ("destination exists") and keeps its source. Resumed, a
    later name of a hard link (``b``, linked to ``a``) took the user's file for its own link
    made before a kill: its source was unlinked and the user's file recorded as moved
    (an undo would move it into the source tree). It fails again now, the source kept, and
    undo leaves the user's file; a file moved by copying was always compared."""
    src, dst = tmp_path / "src", other_fs / "dst"
    (src / "s").mkdir(parents=True)
    write(src / "s" / "a", b"source bytes")
    if linked:
        os.link(src / "s" / "a", src / "s" / "b")
    else:
        write(src / "s" / "b", b"source bytes")
    (dst / "s").mkdir(parents=True)
    write(dst / "s" / "b", b"user's bytes")
    st = os.stat(src / "s" / "b")
    os.utime(dst / "s" / "b", ns=(st.st_atime_ns, st.st_mtime_ns))
    user = os.stat(dst / "s" / "b").st_ino
    async with parjobs.open_manager(store_path) as m:
        handle = await m.submit(MoveJob(sources=[str(src / "s")], destination=str(dst)))
        assert await handle.wait() is JobStatus.COMPLETED_WITH_ERRORS
        await m.resume(handle.id)
        with trio.fail_after(30):
            assert await handle.wait() is JobStatus.COMPLETED_WITH_ERRORS
        errors = await m.errors(handle.id)
        undo = await (await m.undo(handle.id)).result()
    assert [e.message for e in errors] == [f"destination exists: {dst / 's' / 'b'}"]
    assert undo["failed"] == 0
    assert read(src / "s" / "b") == read(src / "s" / "a") == b"source bytes"
    assert os.stat(dst / "s" / "b").st_ino == user and read(dst / "s" / "b") == b"user's bytes"


async def test_a_source_gone_past_the_reach_on_resume_is_not_taken_as_moved(
    store_path: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the move is paused, the user removes a source file it has not reached and puts
    a file of their own at its destination name. The resumed move took that file for one it
    had moved before a kill (recorded "moved": its undo moved the user's file into the
    source tree). Past the first run's reach no run moved it: the item fails, as in a fresh
    run, and undo leaves the user's file."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    last = reached_in_small_steps(src / "t", monkeypatch)
    recorded = walk_recorded(last, monkeypatch)  # (else, walked after the pause: not met)
    (dst / "t").mkdir(parents=True)  # merged into: file by file, by rename
    job = MoveJob(sources=[str(src / "t")], destination=str(dst), into=True)
    async with parjobs.open_manager(store_path, workers=1) as m:
        handle = await pause_at(m, job, MoveItem, b"first", monkeypatch, after=recorded)
        reach = (await handle.info()).state.get("reach", -1)
        os.unlink(last)
        (dst / "t" / "d39").mkdir(exist_ok=True)
        write(dst / "t" / "d39" / "f5", b"the user's")
        await m.resume(handle.id)
        with trio.fail_after(30):
            assert await handle.wait() is JobStatus.COMPLETED_WITH_ERRORS
        (rec,) = [r for r in await m.items(handle.id) if r.source == str(last)]
        undo = await (await m.undo(handle.id)).result()
    assert rec.index > reach, "the test needs the name past the first run's reach"
    assert (rec.action, undo["failed"]) == ("failed", 0)
    assert read(dst / "t" / "d39" / "f5") == b"the user's" and not last.exists()


async def test_kill_9_while_linking_across_filesystems_then_resume(
    store_path: str, tmp_path: Path, other_fs: Path
) -> None:
    """Killed in the links stage (each link slowed in the child), the resumed move ends with
    every name linked as in the source (each file at once in full somewhere), the source gone."""
    src, dst = tmp_path / "src", other_fs / "dst"
    names = names_tree(src)
    contents = {i: read(src / three[0]) for i, three in names.items()}
    args = (store_path, "_move", "MoveJob", src, dst, 60, 120)
    result = await kill_while_linking_then_resume(*args)
    assert not src.exists()
    for i, three in names.items():
        st = [os.lstat(dst / n) for n in three]
        assert len({s.st_ino for s in st}) == 1 and st[0].st_nlink == 3, three
        assert read(dst / three[0]) == contents[i]
    # The names linked before the kill but not checkpointed count as linked too.
    assert (result["moved"], result["copied"], result["linked"], result["failed"]) == (
        120,
        40,
        80,
        0,
    )
    assert find_partials(other_fs) == []


@pytest.mark.parametrize("across", [True, False])
async def test_items_found_moved_on_resume_are_counted_as_they_were_moved(
    store_path: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    across: bool,
) -> None:
    """Items a run moved but was stopped before checkpointing (as a kill -9 leaves them:
    here the job is paused right after each move, before its outcome is booked) are found
    moved by the resumed run: on one filesystem a file renamed (into a directory being
    merged), across two a symlink copied and a later hard link name linked. They counted as
    ``moved`` only (``renamed``/``copied``/``linked`` short by one each); now as they were."""
    base = request.getfixturevalue("other_fs") if across else tmp_path / "dst"
    src = tmp_path / "src"
    src.mkdir()
    write(src / "f", b"first")
    os.link(src / "f", src / "h")
    os.symlink("f", src / "l")
    if not across:
        (base / "src").mkdir(parents=True)  # merged: each entry renamed on its own
    stop = {b"src/h", b"src/l"} if across else {b"src/f"}
    handles: list[parjobs.JobHandle] = []
    real = move_mod.MoveItem._move

    def stopping(self: Any, tc: parjobs.TaskContext, dir_fd: int, name: bytes) -> Any:
        done = real(self, tc, dir_fd, name)
        if self.entry.rel in stop:
            stop.discard(self.entry.rel)  # once: the resumed run goes on
            trio.from_thread.run(handles[0].pause)
            tc.check()  # raises: its outcome is never booked
        return done

    monkeypatch.setattr(move_mod.MoveItem, "_move", stopping)
    async with parjobs.open_manager(store_path) as m:
        job = MoveJob(into=True, sources=[str(src)], destination=str(base))
        handles.append(await m.submit(job))
        for _ in range(2 if across else 1):
            assert await handles[0].wait() is JobStatus.PAUSED
            await m.resume(handles[0].id)
        result = await handles[0].result()
    assert not stop and not src.exists()
    assert os.stat(base / "src" / "h").st_nlink == 2
    counts = {k: result[k] for k in ("moved", "renamed", "copied", "linked", "failed")}
    if across:
        assert counts == {"moved": 3, "renamed": 0, "copied": 2, "linked": 1, "failed": 0}
    else:
        assert counts == {"moved": 3, "renamed": 3, "copied": 0, "linked": 0, "failed": 0}


@pytest.mark.parametrize("files", [1, 6])  # alone, and the C group path
async def test_a_source_that_cannot_be_unlinked_fails_with_why_not_as_its_own_copy_in_the_way(
    store_path: str, tmp_path: Path, other_fs: Path, files: int
) -> None:
    """A move across filesystems whose source cannot be unlinked (an append-only directory
    here; elsewhere a directory the user cannot write): the copy was in place, the attempt
    failed, and the retry found the job's own copy at the name and failed as "destination
    exists", advising --on-conflict. Now the retry takes the copy this run landed for its
    own (its bytes compared) and fails with the unlink's error; the copy stays, the source
    too."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(files):
        (src / f"f{i}").write_bytes(b"x" * (i + 1))
    if subprocess.run(["chattr", "+a", str(src)], capture_output=True).returncode:
        pytest.skip("cannot make a directory append-only here (root on ext4, xfs, btrfs)")
    try:
        job = MoveJob(into=True, sources=[str(src)], destination=str(other_fs / "dst"))
        _, info, errors = await run_job(store_path, job)
    finally:
        subprocess.run(["chattr", "-a", str(src)])
    assert info.status is JobStatus.COMPLETED_WITH_ERRORS
    assert len(errors) == files
    assert all("Operation not permitted" in e.message for e in errors), errors
    assert sorted(os.listdir(src)) == sorted(os.listdir(other_fs / "dst" / "src"))


@pytest.mark.parametrize("c_group", [True, False], ids=["c-group", "python"])
async def test_a_move_across_filesystems_into_an_append_only_directory_leaves_no_temporary(
    store_path: str,
    tmp_path: Path,
    other_fs: Path,
    monkeypatch: pytest.MonkeyPatch,
    c_group: bool,
) -> None:
    """A move across filesystems into an append-only directory (`chattr +a`) copied each
    file to a temporary whose rename failed "Operation not permitted" and which stayed
    there for good. Now its files and symlinks fail before anything is written, the reason
    naming the directory, and their sources stay; a directory made in it (adding a name is
    allowed there) takes its files as usual."""
    if not c_group:
        monkeypatch.setattr(smallfiles_mod, "fastcopy", None)
    src, dst = other_fs / "src", tmp_path / "dst"
    (src / "sub").mkdir(parents=True)
    dst.mkdir()
    for i in range(2):
        (src / f"f{i}").write_bytes(b"x" * (i + 1))
        (src / "sub" / f"g{i}").write_bytes(b"y" * (i + 1))
    (src / "link").symlink_to("f0")
    if subprocess.run(["chattr", "+a", str(dst)], capture_output=True).returncode:
        pytest.skip("cannot make a directory append-only here (root on ext4, xfs, btrfs)")
    try:
        names = sorted(os.listdir(src))
        job = MoveJob(into=True, sources=[str(src / n) for n in names], destination=str(dst))
        _, info, errors = await run_job(store_path, job)
        left = sorted(os.listdir(dst))
    finally:
        subprocess.run(["chattr", "-a", str(dst)])
    assert info.status is JobStatus.COMPLETED_WITH_ERRORS
    assert left == ["sub"]  # no temporary
    assert sorted(os.listdir(dst / "sub")) == ["g0", "g1"]
    assert len(errors) == 3
    assert all(e.message.startswith(f"append-only: {dst}") for e in errors), errors
    assert sorted(os.listdir(src)) == ["f0", "f1", "link"]


@pytest.mark.parametrize("policy", ["skip", "update", "rename", "overwrite"])
@pytest.mark.parametrize("flag", ["a", "i"], ids=["append-only", "immutable"])
@pytest.mark.parametrize("op", ["copy", "move"])
async def test_a_name_taken_in_a_sealed_directory_goes_to_its_conflict_policy(
    store_path: str, tmp_path: Path, other_fs: Path, op: str, flag: str, policy: str
) -> None:
    """A file and a symlink whose names are taken in an append-only (``chattr +a``) or
    immutable (``+i``) destination directory: a copy sent them to their conflict policy, a
    move across filesystems failed them "append-only: ..." whatever the policy. Both now
    agree (`DestTree.sealed_first`): skip, and update of an equal item, skip them, nothing
    written; rename and overwrite, which would write a temporary there, fail naming the
    directory. Nothing is left there, the sources stay. (~0.05 s each)"""
    from parjobs.ops import CopyJob

    # (below the destination: an immutable destination is refused as not writable)
    src, dst = other_fs / "d", tmp_path / "dst" / "d"
    for where in (src, dst):
        where.mkdir(parents=True)
        (where / "f").write_bytes(b"abc")
        os.utime(where / "f", ns=(1_600_000_000_000_000_000,) * 2)
        (where / "l").symlink_to("f")
    if subprocess.run(["chattr", f"+{flag}", str(dst)], capture_output=True).returncode:
        pytest.skip("cannot chattr a directory here (root on ext4, xfs, btrfs)")
    kind = "append-only" if flag == "a" else "immutable"
    try:
        cls: Any = CopyJob if op == "copy" else MoveJob
        job = cls(into=True, sources=[str(src)], destination=str(dst.parent), on_conflict=policy)
        result, _, errors = await run_job(store_path, job)
        left = sorted(os.listdir(dst))
    finally:
        subprocess.run(["chattr", f"-{flag}", str(dst)])
    # (the merged directory's times cannot be set there either: the finishing step says so)
    assert [e.stage for e in errors if "could not set mode/times" in e.message] == ["finish"]
    items = [e for e in errors if e.stage != "finish"]
    assert left == ["f", "l"]  # no temporary, no "f (1)"
    assert (dst / "f").read_bytes() == b"abc"
    assert sorted(os.listdir(src)) == ["f", "l"]
    if policy in ("skip", "update"):
        assert not items
        assert result["skipped"] == 2
    else:
        assert len(items) == 2
        assert all(e.message.startswith(f"{kind}: {dst}") for e in items), items


@pytest.mark.parametrize(
    ("across", "c_group"),
    [(False, False), (True, True), (True, False)],
    ids=["rename", "across-c-group", "across-python"],
)
async def test_a_source_directory_swapped_for_a_symlink_after_the_walk_is_never_followed(
    store_path: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: Any,
    across: bool,
    c_group: bool,
) -> None:
    """A directory of the source replaced by a symlink to another tree after the walk
    listed it, before its files are moved: the move renamed (or copied, then unlinked) by
    path, through the symlink, so the other tree's file of the same name left its place
    for the destination, reported moved. The source is now reached from the root without
    following symlinks: the item fails, the other tree keeps its file."""
    src, outside = tmp_path / "src", tmp_path / "outside"
    base = request.getfixturevalue("other_fs") if across else tmp_path
    dst = base / "dst"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "a").write_text("tree")
    (dst / "src").mkdir(parents=True)  # a merging move
    outside.mkdir()
    (outside / "a").write_text("OUTSIDE")
    if not c_group:
        monkeypatch.setattr(smallfiles_mod, "fastcopy", None)
    swap_after_listing(monkeypatch, src / "sub", outside)
    async with parjobs.open_manager(store_path) as manager:
        handle = await manager.submit(MoveJob(sources=[str(src)], destination=str(dst), into=True))
        await handle.wait()
    assert (outside / "a").read_text() == "OUTSIDE"
    assert not (dst / "src" / "sub" / "a").exists()
    assert (src / "sub.kept" / "a").read_text() == "tree"


def _before_finishing(monkeypatch: pytest.MonkeyPatch, change: Any) -> None:
    """Call ``change()`` just before the run's last step (directory modes and times, then
    the emptied source directories removed), after every file was moved or copied."""
    from parjobs.ops._finish import FinishDirs

    real_run = FinishDirs.run

    def run(self: Any, tc: Any) -> Any:
        change()
        return real_run(self, tc)

    monkeypatch.setattr(FinishDirs, "run", run)


@pytest.mark.parametrize("swap", ["symlink-above", "renamed-into-place"])
async def test_the_last_rmdir_removes_only_the_directories_the_walk_listed(
    store_path: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, swap: str
) -> None:
    """A move removes the source directories it emptied, last. By path: a directory above
    one swapped for a symlink to another tree after the walk sent the rmdir there, and
    that tree's empty directory of the same name went; a directory the user renamed into
    the place of the one walked (empty) went too. Now each is removed through its parent's
    fd, never through a symlink, and only while it is the directory the walk listed."""
    src, outside, dst = tmp_path / "src", tmp_path / "outside", tmp_path / "dst"
    (src / "a" / "b").mkdir(parents=True)
    (src / "f").write_text("moved")
    (dst / "src").mkdir(parents=True)  # a merging move: file by file, then the rmdirs
    (outside / "b").mkdir(parents=True)

    def change() -> None:
        if swap == "symlink-above":
            os.rename(src / "a", src / "a.kept")
            os.symlink(outside, src / "a")
        else:
            os.rename(src / "a" / "b", src / "b.kept")
            os.rename(outside / "b", src / "a" / "b")

    _before_finishing(monkeypatch, change)
    job = MoveJob(sources=[str(src)], destination=str(dst), into=True)
    result, _, errors = await run_job(store_path, job)
    assert (dst / "src" / "f").read_text() == "moved"
    if swap == "symlink-above":
        assert (outside / "b").is_dir(), "the other tree's directory was removed"
        assert [e.message for e in errors if "mode/times" not in e.message] == []
    else:
        assert (src / "a" / "b").is_dir(), "a directory the walk never listed was removed"
        assert (src / "b.kept").is_dir()  # (the walked one: no longer where it was)
        assert result["source_dirs_removed"] == 0


async def test_a_resumed_move_removes_its_emptied_directories_after_a_remount(
    store_path: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A move paused, its drive plugged in again, resumes with its walk's manifest, whose
    directories carry the old device number: its last step still removes the source
    directories it emptied (the inode number tells the walked one; the device cannot: a
    directory renamed into place is on its parent's filesystem anyway)."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "a" / "b").mkdir(parents=True)
    (src / "a" / "b" / "f").write_text("moved")
    (dst / "src").mkdir(parents=True)  # a merging move: file by file, then the rmdirs
    real = move_mod._remove_empty_dirs

    def remounted(plan: Any, dirs: Any, removed: Any, all_moved: bool) -> None:
        real(plan, [dataclasses.replace(e, dev=e.dev + 1) for e in dirs], removed, all_moved)

    monkeypatch.setattr(move_mod, "_remove_empty_dirs", remounted)
    job = MoveJob(sources=[str(src)], destination=str(dst), into=True)
    result, _, errors = await run_job(store_path, job)
    assert [e.message for e in errors] == []
    assert (dst / "src" / "a" / "b" / "f").read_text() == "moved"
    assert not src.exists() and result["source_dirs_removed"] == 3


async def test_a_dot_dot_through_a_symlink_is_refused_through_the_api(
    store_path: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``link/../x`` is, for the kernel (``mv``, ``cp``, the CLI), the x next to the link's
    target; the job made it absolute lexically and moved the x beside the link, another
    file. A move or copy whose source or destination has such a ``..`` is refused at
    submission, nothing touched; an ordinary ``../x`` is still taken."""
    from parjobs.ops import CopyJob

    (tmp_path / "real" / "sub").mkdir(parents=True)
    (tmp_path / "real" / "x").write_text("named")
    (tmp_path / "here").mkdir()
    (tmp_path / "here" / "x").write_text("beside the link")
    (tmp_path / "here" / "link").symlink_to("../real/sub")
    (tmp_path / "dst").mkdir()
    monkeypatch.chdir(tmp_path / "here")
    dst = str(tmp_path / "dst")
    async with parjobs.open_manager(store_path) as manager:
        for job in (
            MoveJob(sources=["link/../x"], destination=dst, into=True),
            CopyJob(sources=["link/../x"], destination=dst, into=True),
            MoveJob(sources=["x"], destination="link/../dst", into=True),
        ):
            with pytest.raises(parjobs.JobSpecError, match="follows a symlink"):
                await manager.submit(job)
        assert os.listdir(tmp_path / "dst") == []
        assert (tmp_path / "here" / "x").read_text() == "beside the link"
        assert (tmp_path / "real" / "x").read_text() == "named"
        handle = await manager.submit(MoveJob(sources=["../real/x"], destination=dst, into=True))
        assert await handle.wait() is JobStatus.COMPLETED
    assert (tmp_path / "dst" / "x").read_text() == "named"


async def test_a_trailing_dot_through_the_api_means_what_it_means_on_the_cli(
    store_path: str, tmp_path: Path
) -> None:
    """A file manager sends absolute paths: ``/a/x/.`` is what the CLI's ``x/.`` becomes.
    As ``cp -a x/. D``, a copy of it merges what x holds into D (it made D/x); a move of
    it is refused as ``mv`` refuses it (it moved x to D/x); a copy of it beside other
    sources, or into the destination, is refused, nothing copied."""
    from parjobs.ops import CopyJob

    x = tmp_path / "x"
    (x / "sub").mkdir(parents=True)
    (x / "f").write_text("x's f")
    (x / "sub" / "g").write_text("x's g")
    (tmp_path / "y").mkdir()
    dst = tmp_path / "D"
    dst.mkdir()
    (dst / "keep").write_text("D's own")
    async with parjobs.open_manager(store_path) as manager:
        for job, match in (
            (MoveJob(sources=[f"{x}/."], destination=str(dst)), "like mv"),
            (CopyJob(sources=[f"{x}/.", str(tmp_path / "y")], destination=str(dst)), "only"),
            (CopyJob(sources=[f"{x}/."], destination=str(dst), into=True), "only"),
        ):
            with pytest.raises(parjobs.JobSpecError, match=match):
                await manager.submit(job)
        assert sorted(os.listdir(dst)) == ["keep"]
        handle = await manager.submit(CopyJob(sources=[f"{x}/."], destination=str(dst)))
        assert await handle.wait() is JobStatus.COMPLETED
    assert digests(dst) == {**digests(x), "keep": digests(dst)["keep"]}
    assert (dst / "keep").read_text() == "D's own" and (x / "f").read_text() == "x's f"


async def test_a_copy_of_dot_through_the_api_merges_into_the_directory_a_link_names(
    store_path: str, tmp_path: Path
) -> None:
    """``CopyJob(sources=["/a/x/."], destination="/a/lD")``, lD a symlink to D: the copy
    is stored with D as its destination (the link was taken for a file in the way of the
    directory to make, deleted under ``overwrite``), the link kept; a move of it is
    refused, its destination left as given."""
    from parjobs.ops import CopyJob

    x, dst, link = tmp_path / "x", tmp_path / "D", tmp_path / "lD"
    x.mkdir()
    (x / "f").write_text("x's f")
    dst.mkdir()
    link.symlink_to("D")
    async with parjobs.open_manager(store_path) as manager:
        move = MoveJob(sources=[f"{x}/."], destination=str(link))
        with pytest.raises(parjobs.JobSpecError, match="like mv"):
            await manager.submit(move)
        assert move.destination == str(link)
        copy = CopyJob(sources=[f"{x}/."], destination=str(link), on_conflict="overwrite")
        handle = await manager.submit(copy)
        assert await handle.wait() is JobStatus.COMPLETED
        assert json.loads((await manager.get(handle.id)).spec)["destination"] == str(dst)
    assert os.readlink(link) == "D" and (dst / "f").read_text() == "x's f"


def test_a_stored_copy_of_a_trailing_dot_into_the_destination_keeps_its_meaning(
    tmp_path: Path,
) -> None:
    """A job stored before ``x/.`` meant x's contents (``into`` true: copied as D/x) still
    loads, to resume as it began; only a submission is refused."""
    from parjobs.ops import CopyJob

    (tmp_path / "x").mkdir()
    (tmp_path / "D").mkdir()
    spec = {"sources": [f"{tmp_path}/x/."], "destination": f"{tmp_path}/D", "into": True}
    job = CopyJob.from_spec(spec)
    assert isinstance(job, CopyJob) and job._target().names == [b"x"]
    with pytest.raises(parjobs.JobSpecError, match="only source"):
        job.validate()  # (as a submission validates it)


@pytest.mark.parametrize(
    ("given", "inner", "outer"),
    [
        (["x", "x/sub"], "x/sub", "x"),
        (["x/sub", "x"], "x/sub", "x"),
        (["x", "link/sub"], "link/sub", "x"),  # the same directory through a symlink
        (["link", "link/sub"], "link/sub", "link"),  # a path through the link moved
        (["x", "x/sub/b"], "x/sub/b", "x"),
    ],
)
async def test_overlapping_sources_are_refused_naming_both(
    store_path: str, tmp_path: Path, given: list[str], inner: str, outer: str
) -> None:
    """``mv x x/sub D`` moves x whole, then fails on x/sub; the job's parallel tasks took
    either first (x/sub could land beside x in D) and failed, to resume. Refused on
    submission, by device and inode; nothing is touched."""
    (tmp_path / "x" / "sub").mkdir(parents=True)
    write(tmp_path / "x" / "sub" / "b", b"b")
    os.symlink("x", tmp_path / "link")
    (tmp_path / "D").mkdir()
    before = snapshot(tmp_path)
    job = MoveJob(sources=[str(tmp_path / p) for p in given], destination=str(tmp_path / "D"))
    async with parjobs.open_manager(store_path) as m:
        with pytest.raises(parjobs.JobSpecError) as caught:
            await m.submit(job)
        assert await m.list_jobs() == []
    assert str(caught.value) == (
        f"move: '{tmp_path / inner}' is inside '{tmp_path / outer}', also given (the move of "
        f"'{tmp_path / outer}' takes it); give only '{tmp_path / outer}'"
    )
    after = snapshot(tmp_path)
    assert {k: v for k, v in after.items() if not k.startswith(b"jobs.sqlite")} == before
    # A stored job (submitted before the check) still loads to resume.
    MoveJob.from_spec({"sources": job.sources, "destination": job.destination})


async def test_a_symlink_beside_its_target_is_no_overlap(store_path: str, tmp_path: Path) -> None:
    """``mv x link D`` moves the directory and the link (not followed): both are kept."""
    (tmp_path / "x").mkdir()
    write(tmp_path / "x" / "a", b"a")
    os.symlink("x", tmp_path / "link")
    (tmp_path / "D").mkdir()
    job = MoveJob(
        sources=[str(tmp_path / "x"), str(tmp_path / "link")], destination=str(tmp_path / "D")
    )
    _, info, _ = await run_job(store_path, job)
    assert info.status is JobStatus.COMPLETED
    assert os.readlink(tmp_path / "D" / "link") == "x"
    assert (tmp_path / "D" / "x" / "a").read_bytes() == b"a"


async def test_a_tree_dated_past_2262_keeps_its_times_through_a_move_and_its_undo(
    store_path: str, tmp_path: Path, other_fs: Path
) -> None:
    """A move across filesystems gives a directory the mtime its source had when walked;
    the C walk computed one past 2262 modulo 2^64, so the moved directory was dated 1815.
    Now its times, and its files', are the source's to the nanosecond (the C group path
    hands such files to Python: they do not fit its 64-bit times), and the undo moves the
    files back so. (~0.1 s)"""
    when = ((2400 - 1970) * 31_556_952 + 123) * 1_000_000_000 + 456_789
    src, dst = tmp_path / "src", other_fs / "dst"
    (src / "d").mkdir(parents=True)
    for i in range(3):
        write(src / "d" / f"f{i}", b"x" * (i + 1))
    os.symlink("f0", src / "d" / "l")
    for path in [*(src / "d").iterdir(), src / "d", src]:
        os.utime(path, ns=(when, when), follow_symlinks=False)
    if os.stat(src / "d").st_mtime_ns != when:
        pytest.skip("this filesystem does not keep times past 2262")

    def times(root: Path) -> dict[str, int]:
        return {str(p.relative_to(root)): os.lstat(p).st_mtime_ns for p in [root, *root.rglob("*")]}

    async with parjobs.open_manager(store_path) as m:
        handle = await m.submit(MoveJob(sources=[str(src)], destination=str(dst), into=True))
        assert await handle.wait() is JobStatus.COMPLETED, await m.errors(handle.id)
        assert not src.exists()
        assert times(dst / "src") == dict.fromkeys(times(dst / "src"), when)
        undo = await (await m.undo(handle.id)).result()
    assert undo["failed"] == 0 and not undo.get("kept_reasons"), undo
    moved_back = times(src)
    assert sorted(moved_back) == [".", "d", "d/f0", "d/f1", "d/f2", "d/l"]
    # (the undo makes the directories it moves into anew: their times are the undo's)
    assert {moved_back[f"d/{n}"] for n in ("f0", "f1", "f2", "l")} == {when}
