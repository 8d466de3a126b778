"""The shared file-system helpers (parjobs.ops._fs)."""

from __future__ import annotations

import ctypes
import errno
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from _strace import traced

import parjobs
from parjobs.ops import CopyJob, _fs, _smallfiles
from parjobs.ops._fs import open_dir_nofollow, rename_noreplace, same_size_mtime, unique_name


def test_open_dir_nofollow_create(tmp_path: Path) -> None:
    fd = open_dir_nofollow(tmp_path, ["x", b"y\xff"], create=True)
    try:
        assert stat.S_ISDIR(os.fstat(fd).st_mode)
    finally:
        os.close(fd)
    assert os.path.isdir(os.fsencode(tmp_path) + b"/x/y\xff")


def test_same_size_mtime() -> None:
    def st(size: int, mtime_ns: int) -> os.stat_result:
        return os.stat_result(
            (0o100644, 0, 0, 1, 0, 0, size, 0, 0, 0, 0.0, 0.0, 0.0, 0, mtime_ns, 0)
        )

    s = 1_700_000_000
    assert same_size_mtime(st(5, s * 10**9 + 123), st(5, s * 10**9 + 123))
    assert not same_size_mtime(st(5, s * 10**9 + 123), st(5, s * 10**9 + 124))
    assert same_size_mtime(st(5, s * 10**9 + 123), st(5, s * 10**9))  # 1 s filesystem
    assert not same_size_mtime(st(5, s * 10**9), st(5, (s + 1) * 10**9))
    assert not same_size_mtime(st(5, s * 10**9), st(6, s * 10**9))


def test_unique_name(tmp_path: Path) -> None:
    (tmp_path / "archive.tar.gz").touch()
    assert unique_name(tmp_path / "archive.tar.gz") == str(tmp_path / "archive (1).tar.gz")
    (tmp_path / "archive (1).tar.gz").touch()
    assert unique_name(str(tmp_path / "archive.tar.gz")) == str(tmp_path / "archive (2).tar.gz")
    assert unique_name(tmp_path / "free.txt") == str(tmp_path / "free.txt")
    (tmp_path / ".bashrc").touch()
    assert unique_name(tmp_path / ".bashrc") == str(tmp_path / ".bashrc (1)")
    (tmp_path / "photo.jpg").symlink_to("dangling")
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert unique_name("photo.jpg", dst_dir_fd=fd) == "photo (1).jpg"
        os.close(os.open(b"b\xff.dat", os.O_CREAT | os.O_WRONLY, dir_fd=fd))
        assert unique_name(b"b\xff.dat", dst_dir_fd=fd) == b"b\xff (1).dat"
    finally:
        os.close(fd)


def test_unique_name_respects_255_bytes(tmp_path: Path) -> None:
    name = "é" * 123 + "ab.jpg"  # 246 + 8 = 254 bytes
    (tmp_path / name).touch()
    new = os.path.basename(unique_name(tmp_path / name))
    assert len(new.encode()) <= 255 and new.endswith(" (1).jpg")
    new.encode("utf-8")  # no split character
    (tmp_path / new).touch()
    assert os.path.basename(unique_name(tmp_path / name)).endswith(" (2).jpg")


# -- no renameat2 (NFS): the link+unlink fallback ------------------------------------------


@pytest.fixture
def no_renameat2(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """renameat2(RENAME_NOREPLACE) answers EINVAL, as over NFS; counts the calls. The C
    path is off too (it would make the same call; the plan turns it off on EINVAL)."""
    calls: list[int] = []

    def refused(*args: object) -> int:
        calls.append(1)
        ctypes.set_errno(errno.EINVAL)
        return -1

    monkeypatch.setattr(_fs, "_renameat2", lambda: refused)
    monkeypatch.setattr(_smallfiles, "fastcopy", None)
    return calls


def test_no_replace_rename_refuses_a_nul_byte_as_os_does(tmp_path: Path) -> None:
    """renameat2 is called through ctypes, which passed ``b"a\\0b"`` as ``a``: the file got
    another name than the one asked for (a trash item restored beside its reported path)."""
    d = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        (tmp_path / "src").write_bytes(b"x")
        for src, name in ((b"src", b"a\0b"), (b"src\0junk", b"a")):
            with pytest.raises(ValueError, match="null byte"):
                rename_noreplace(src, name, src_dir_fd=d, dst_dir_fd=d, overwrite=False)
    finally:
        os.close(d)
    assert os.listdir(tmp_path) == ["src"]


def test_no_replace_rename_without_renameat2_links(tmp_path: Path, no_renameat2: list[int]) -> None:
    d = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        (tmp_path / "tmp1").write_bytes(b"new")
        rename_noreplace(b"tmp1", b"final", src_dir_fd=d, dst_dir_fd=d, overwrite=False)
        assert (tmp_path / "final").read_bytes() == b"new"
        assert not (tmp_path / "tmp1").exists()
        (tmp_path / "tmp2").write_bytes(b"other")
        with pytest.raises(FileExistsError):
            rename_noreplace(b"tmp2", b"final", src_dir_fd=d, dst_dir_fd=d, overwrite=False)
        assert (tmp_path / "final").read_bytes() == b"new"  # nothing replaced or lost
        assert (tmp_path / "tmp2").read_bytes() == b"other"
    finally:
        os.close(d)
    assert len(no_renameat2) == 2


def test_a_link_made_but_answered_eexist_is_not_a_conflict(
    tmp_path: Path, no_renameat2: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """NFS resends a link whose reply was lost and gets EEXIST for the name it made."""
    real_link = os.link

    def lost_reply(*args: Any, **kwargs: Any) -> None:
        real_link(*args, **kwargs)
        raise FileExistsError(errno.EEXIST, "File exists")

    monkeypatch.setattr(os, "link", lost_reply)
    d = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        (tmp_path / "tmp").write_bytes(b"data")
        rename_noreplace(b"tmp", b"final", src_dir_fd=d, dst_dir_fd=d, overwrite=False)
        assert (tmp_path / "final").read_bytes() == b"data"
        assert not (tmp_path / "tmp").exists()
        (tmp_path / "tmp").write_bytes(b"more")  # a real conflict is still one
        with pytest.raises(FileExistsError):
            rename_noreplace(b"tmp", b"final", src_dir_fd=d, dst_dir_fd=d, overwrite=False)
        assert (tmp_path / "final").read_bytes() == b"data"
    finally:
        os.close(d)


async def test_a_copy_without_renameat2_is_complete_and_clean(
    tmp_path: Path, no_renameat2: list[int]
) -> None:
    src = tmp_path / "src"
    for i in range(30):
        (src / f"d{i % 3}").mkdir(parents=True, exist_ok=True)
        (src / f"d{i % 3}" / f"f{i}").write_bytes(os.urandom(100 + i * 4000))
    (src / "link").symlink_to("d0/f0")
    dst = tmp_path / "dst"
    async with parjobs.open_manager(tmp_path / "s.sqlite") as manager:
        handle = await manager.submit(CopyJob(sources=[str(src)], destination=f"{dst}/"))
        result = await handle.result()
        assert result["failed"] == 0 and result["copied"] == 31
        # Again, on top: every file exists, each one is refused, nothing is replaced.
        again = await manager.submit(CopyJob(sources=[str(src)], destination=str(dst)))
        assert (await again.wait()) is parjobs.JobStatus.COMPLETED_WITH_ERRORS
        assert (await again.result())["failed"] == 31
    for path in src.rglob("f*"):
        assert (dst / "src" / path.relative_to(src)).read_bytes() == path.read_bytes()
    assert os.readlink(dst / "src" / "link") == "d0/f0"
    assert [p for p in dst.rglob("*") if ".parjobs" in p.name] == []
    assert len(no_renameat2) >= 31


def test_check_overlap_looks_up_each_directory_once(tmp_path: Path) -> None:
    """``check_overlap`` (move, delete, trash) stat'ed each path's directory and every one
    above it, through ``..`` and as written, once per path: a file manager's selection of
    10,000 files of one directory took 0.2-0.7 s before the job began. Each directory is
    looked up once now; a path costs its own ``lstat``. Counted by ``strace`` (the stat
    calls of a real process between two markers): 300 files of one directory make at
    most 330 (they made 17 a file)."""
    sel = tmp_path / "deep" / "er" / "sel"
    sel.mkdir(parents=True)
    for i in range(300):
        (sel / f"f{i}").touch()
    script = (
        "import os, sys; from parjobs.ops._fs import check_overlap\n"
        "paths = [os.path.join(sys.argv[1], f'f{i}') for i in range(300)]\n"
        "os.access('/loose22-start', 0); check_overlap('move', paths)\n"
        "os.access('/loose22-end', 0)\n"
    )
    calls = "stat,lstat,newfstatat,statx,access,faccessat2"
    lines = traced(tmp_path, ["-c", script, str(sel)], calls)
    start = next(i for i, line in enumerate(lines) if "/loose22-start" in line)
    end = next(i for i, line in enumerate(lines) if "/loose22-end" in line)
    stats = [line for line in lines[start + 1 : end] if "stat" in line]
    assert 300 <= len(stats) <= 330, len(stats)
