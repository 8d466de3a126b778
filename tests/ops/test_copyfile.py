"""Tests for the blocking copy primitives, on real files under tmp_path."""

from __future__ import annotations

import errno
import os
import shutil
import stat
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import xxhash
from _trees import run_job, save_in_place, write

from parjobs import JobStatus
from parjobs.ops import CopyError, SourceChangedError, SpecialFileError, VerifyError
from parjobs.ops import _smallfiles as smallfiles_mod
from parjobs.ops import _transfer as transfer_mod
from parjobs.ops._copy import CopyJob
from parjobs.ops._copyfile import CopyOptions, CopyResult, Method, copy_file, copy_symlink
from parjobs.ops._fs import open_dir_nofollow, same_size_mtime
from parjobs.ops._kernel import NO_RANGE, PREALLOCATE_ON, fs_type
from parjobs.ops._move import MoveJob
from parjobs.ops._partials import (
    find_partials,
    owner_token,
    partial_names,
    remove_own_temps,
    tmp_name,
)
from parjobs.testing import read

KIB = 1024
MIB = 1 << 20


def make(path: Path | bytes, size: int, seed: int = 1) -> bytes:
    data = (bytes(range(seed % 251, 256)) + bytes(range(seed % 251))) * (size // 256 + 1)
    data = data[:size]
    with open(path, "wb") as f:
        f.write(data)
    return data


class Interrupt(Exception):
    pass


def interrupt_after(calls: int) -> tuple[list[int], Callable[[], None]]:
    count = [0]

    def check() -> None:
        count[0] += 1
        if count[0] > calls:
            raise Interrupt

    return count, check


@pytest.mark.parametrize("method", ["copy_file_range", "sendfile", "readwrite"])
@pytest.mark.parametrize("hashing", [False, True])
def test_each_method_copies_and_hashes(tmp_path: Path, method: Method, hashing: bool) -> None:
    src, dst = tmp_path / "src.bin", tmp_path / "dst.bin"
    data = make(src, 300 * KIB + 7)
    seen: list[int] = []
    result = copy_file(
        src,
        dst,
        CopyOptions(chunk_size=64 * KIB, hash_source=hashing, verify=hashing),
        on_bytes=seen.append,
        _methods=(method,),
    )
    assert result.method == method
    assert read(dst) == data
    assert sum(seen) == len(data) and max(seen) <= 64 * KIB
    assert result.bytes_copied == len(data) and result.bytes_reused == 0
    if hashing:
        assert result.src_digest == result.dst_digest == xxhash.xxh3_128_hexdigest(data)
    else:
        assert result.src_digest is None and result.dst_digest is None
    assert find_partials(tmp_path) == []


@pytest.mark.parametrize("hashing", [False, True])
def test_reflink_falls_back_cleanly(tmp_path: Path, hashing: bool) -> None:
    src, dst = tmp_path / "src.bin", tmp_path / "dst.bin"
    data = make(src, 200 * KIB)
    seen: list[int] = []
    result = copy_file(
        src,
        dst,
        CopyOptions(chunk_size=64 * KIB, hash_source=hashing, verify=hashing),
        on_bytes=seen.append,
        _methods=("reflink",),
    )
    assert result.method in ("reflink", "readwrite")
    assert read(dst) == data and sum(seen) == len(data)
    if hashing:
        assert result.src_digest == xxhash.xxh3_128_hexdigest(data)


def test_default_chain_and_result_type(tmp_path: Path) -> None:
    src = tmp_path / "a"
    data = make(src, 50 * KIB)
    result = copy_file(src, tmp_path / "b")
    assert isinstance(result, CopyResult)
    assert result.method in ("reflink", "copy_file_range", "sendfile", "readwrite")
    assert read(tmp_path / "b") == data


def test_on_bytes_totals_exact_with_chunks(tmp_path: Path) -> None:
    src = tmp_path / "a"
    make(src, 10 * 4096 + 1)
    seen: list[int] = []
    copy_file(
        src,
        tmp_path / "b",
        CopyOptions(chunk_size=4096),
        on_bytes=seen.append,
        _methods=("readwrite",),
    )
    assert seen == [4096] * 10 + [1]


def test_interrupt_leaves_partial_that_resumes(tmp_path: Path) -> None:
    src, dst = tmp_path / "src.bin", tmp_path / "dst.bin"
    data = make(src, 1024 * KIB + 5)
    _, check = interrupt_after(4)
    with pytest.raises(Interrupt):
        copy_file(src, dst, CopyOptions(chunk_size=64 * KIB), check=check, _methods=("readwrite",))
    assert not dst.exists()
    partial, meta = partial_names("dst.bin")
    assert (tmp_path / os.fsdecode(partial)).stat().st_size == 4 * 64 * KIB
    assert (tmp_path / os.fsdecode(meta)).exists()
    assert len(find_partials(tmp_path)) == 2

    seen: list[int] = []
    result = copy_file(
        src, dst, CopyOptions(chunk_size=64 * KIB, hash_source=True), on_bytes=seen.append
    )
    assert result.bytes_reused == 4 * 64 * KIB
    assert result.bytes_copied == len(data) - result.bytes_reused
    assert sum(seen) == len(data)
    assert result.src_digest == xxhash.xxh3_128_hexdigest(data)
    assert read(dst) == data
    assert find_partials(tmp_path) == []


@pytest.mark.skipif(fs_type("/tmp") not in PREALLOCATE_ON, reason="/tmp is not ext4")
def test_big_file_preallocated_and_its_partial_still_resumes(tmp_path: Path) -> None:
    """Past one chunk the blocks are reserved up front, the size kept: an interrupted
    partial's length is what was written, and the resume reuses exactly that."""
    src, dst = tmp_path / "src.bin", tmp_path / "dst.bin"
    data = make(src, 1024 * KIB)
    _, check = interrupt_after(2)
    with pytest.raises(Interrupt):
        copy_file(src, dst, CopyOptions(chunk_size=64 * KIB), check=check)
    partial, _ = partial_names("dst.bin")
    st = (tmp_path / os.fsdecode(partial)).stat()
    assert st.st_size == 2 * 64 * KIB and st.st_blocks * 512 >= len(data)
    result = copy_file(src, dst, CopyOptions(chunk_size=64 * KIB, verify=True))
    assert result.bytes_reused == 2 * 64 * KIB and read(dst) == data
    assert dst.stat().st_blocks * 512 == len(data)


@pytest.mark.parametrize("method", ["copy_file_range", "sendfile"])
def test_interrupt_and_resume_with_kernel_paths(tmp_path: Path, method: Method) -> None:
    src, dst = tmp_path / "s", tmp_path / "d"
    data = make(src, 512 * KIB)
    _, check = interrupt_after(3)
    with pytest.raises(Interrupt):
        copy_file(src, dst, CopyOptions(chunk_size=64 * KIB), check=check, _methods=(method,))
    result = copy_file(src, dst, CopyOptions(chunk_size=64 * KIB, verify=True), _methods=(method,))
    assert result.bytes_reused == 3 * 64 * KIB and result.method == method
    assert read(dst) == data


def interrupted_partial(tmp_path: Path) -> tuple[Path, Path, bytes]:
    src, dst = tmp_path / "src.bin", tmp_path / "dst.bin"
    data = make(src, 512 * KIB)
    _, check = interrupt_after(2)
    with pytest.raises(Interrupt):
        copy_file(src, dst, CopyOptions(chunk_size=64 * KIB), check=check)
    return src, dst, data


def test_partial_discarded_when_source_mtime_changes(tmp_path: Path) -> None:
    src, dst, data = interrupted_partial(tmp_path)
    st = src.stat()
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    result = copy_file(src, dst, CopyOptions(chunk_size=64 * KIB))
    assert result.bytes_reused == 0 and read(dst) == data
    assert find_partials(tmp_path) == []


def test_partial_discarded_when_source_size_changes(tmp_path: Path) -> None:
    src, dst, _ = interrupted_partial(tmp_path)
    st = src.stat()
    with open(src, "ab") as f:
        f.write(b"more")
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns))  # same mtime, only the size differs
    result = copy_file(src, dst, CopyOptions(chunk_size=64 * KIB))
    assert result.bytes_reused == 0 and read(dst) == read(src)


def test_partial_discarded_when_prefix_differs(tmp_path: Path) -> None:
    src, dst, data = interrupted_partial(tmp_path)
    partial = tmp_path / os.fsdecode(partial_names("dst.bin")[0])
    with open(partial, "r+b") as f:
        f.seek(100 * KIB)
        f.write(b"\xff\x00garbage")
    result = copy_file(src, dst, CopyOptions(chunk_size=64 * KIB))
    assert result.bytes_reused == 0 and read(dst) == data


def test_partial_discarded_when_meta_missing_or_corrupt(tmp_path: Path) -> None:
    src, dst, data = interrupted_partial(tmp_path)
    meta = tmp_path / os.fsdecode(partial_names("dst.bin")[1])
    meta.write_bytes(b"{not json")
    result = copy_file(src, dst, CopyOptions(chunk_size=64 * KIB))
    assert result.bytes_reused == 0 and read(dst) == data


def test_resume_disabled_uses_unpredictable_temp_and_cleans_up(tmp_path: Path) -> None:
    src, dst = tmp_path / "s", tmp_path / "d"
    make(src, 256 * KIB)
    _, check = interrupt_after(1)
    with pytest.raises(Interrupt):
        copy_file(src, dst, CopyOptions(chunk_size=64 * KIB, resume_partial=False), check=check)
    assert find_partials(tmp_path) == [] and not dst.exists()


def whole_partial(tmp_path: Path) -> tuple[Path, Path, bytes]:
    """A 100 KiB file (one chunk of 64 KiB and a shorter piece) interrupted after its last
    byte was written: its partial holds all of it."""
    src, dst = tmp_path / "s", tmp_path / "d"
    data = make(src, 100 * KIB)

    def stop(_fd: int) -> None:
        raise Interrupt

    with pytest.raises(Interrupt):
        copy_file(src, dst, CopyOptions(chunk_size=64 * KIB), _after_write=stop)
    return src, dst, data


def test_interrupted_after_last_byte_resumes_whole_file(tmp_path: Path) -> None:
    src, dst, data = whole_partial(tmp_path)
    result = copy_file(src, dst, CopyOptions(chunk_size=64 * KIB, verify=True))
    assert (result.bytes_reused, result.bytes_copied) == (len(data), 0)
    assert result.src_digest == xxhash.xxh3_128_hexdigest(data) and read(dst) == data


def test_partial_discarded_when_its_short_last_piece_differs(tmp_path: Path) -> None:
    """The check compares whole chunks and the shorter last piece alike (byte for byte)."""
    src, dst, data = whole_partial(tmp_path)
    partial = tmp_path / os.fsdecode(partial_names("d")[0])
    with open(partial, "r+b") as f:
        f.seek(100 * KIB - 1)
        f.write(bytes([data[-1] ^ 1]))
    result = copy_file(src, dst, CopyOptions(chunk_size=64 * KIB))
    assert result.bytes_reused == 0 and read(dst) == data


def test_cross_filesystem_copy(tmp_path: Path, other_fs: Path) -> None:
    src, dst = tmp_path / "s", other_fs / "d"
    data = make(src, 300 * KIB)
    result = copy_file(src, dst, CopyOptions(chunk_size=64 * KIB, hash_source=True))
    assert read(dst) == data and result.src_digest == xxhash.xxh3_128_hexdigest(data)


def test_single_chunk_files_are_not_left_partial(tmp_path: Path) -> None:
    src, dst = tmp_path / "s", tmp_path / "d"
    make(src, 64 * KIB)
    _, check = interrupt_after(0)
    with pytest.raises(Interrupt):
        copy_file(src, dst, CopyOptions(chunk_size=64 * KIB), check=check)
    assert find_partials(tmp_path) == [] and not dst.exists()


def test_remove_own_temps_removes_an_interrupted_partial(tmp_path: Path) -> None:
    interrupted_partial(tmp_path)
    assert remove_own_temps(tmp_path, owner_token(None)) == 2  # the partial and its meta
    assert find_partials(tmp_path) == []
    assert remove_own_temps(tmp_path, owner_token(None)) == 0


def test_remove_own_temps_removes_a_symlinks_temporary_and_nothing_else(tmp_path: Path) -> None:
    """A copy killed between making a symlink's temporary and renaming it leaves a symlink
    under the job's name: the resumed job's sweep removes it (not what it points to), and
    leaves another job's, and a user's link named like one, alone."""
    mine, theirs = "0123456789abcdef", "fedcba9876543210"
    target = tmp_path / "big"
    target.write_bytes(b"data")
    own = tmp_path / os.fsdecode(tmp_name(b"link-to-big", mine))
    other = tmp_path / os.fsdecode(tmp_name(b"link-to-big", theirs))
    own.symlink_to(target)
    other.symlink_to(target)
    assert remove_own_temps(tmp_path, mine) == 1
    assert not os.path.lexists(own) and other.is_symlink() and target.read_bytes() == b"data"


def test_verify_catches_corrupted_destination(tmp_path: Path) -> None:
    src, dst = tmp_path / "s", tmp_path / "d"
    make(src, 100 * KIB)

    def corrupt(fd: int) -> None:
        os.pwrite(fd, b"\x00\x01\x02", 5000)

    with pytest.raises(VerifyError) as info:
        copy_file(src, dst, CopyOptions(verify=True), _after_write=corrupt)
    assert str(info.value).startswith("verification failed for 'd'")
    assert isinstance(info.value, CopyError) and info.value.filename == "d"
    assert info.value.expected != info.value.actual
    assert not dst.exists() and find_partials(tmp_path) == []


def test_verify_catches_truncated_destination(tmp_path: Path) -> None:
    src, dst = tmp_path / "s", tmp_path / "d"
    make(src, 100 * KIB)
    with pytest.raises(VerifyError):
        copy_file(
            src,
            dst,
            CopyOptions(verify=True, durable=True),
            _after_write=lambda fd: os.ftruncate(fd, 10),
        )
    assert not dst.exists() and find_partials(tmp_path) == []


def test_fifo_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    start = time.monotonic()
    with pytest.raises(SpecialFileError, match="FIFO"):
        copy_file(fifo, tmp_path / "out")
    assert time.monotonic() - start < 1
    assert not (tmp_path / "out").exists() and find_partials(tmp_path) == []


def test_directory_and_device_refused(tmp_path: Path) -> None:
    with pytest.raises(SpecialFileError, match="directory"):
        copy_file(tmp_path, tmp_path / "out")
    with pytest.raises(SpecialFileError, match="character device"):
        copy_file("/dev/null", tmp_path / "out")


def test_symlink_source_refused_and_copied_as_link(tmp_path: Path) -> None:
    target = tmp_path / "target"
    make(target, 10)
    link = tmp_path / "link"
    link.symlink_to("target")
    os.utime(link, ns=(1_000_000_000, 1_500_000_000_123), follow_symlinks=False)
    with pytest.raises(SpecialFileError, match="symbolic link"):
        copy_file(link, tmp_path / "out")
    out = tmp_path / "sub"
    out.mkdir()
    copy_symlink(link, out / "link")
    assert os.readlink(out / "link") == "target"
    assert os.lstat(out / "link").st_mtime_ns == 1_500_000_000_123
    with pytest.raises(FileExistsError):
        copy_symlink(link, out / "link", overwrite=False)
    copy_symlink(link, out / "link", overwrite=True, durable=True)
    with pytest.raises(SpecialFileError):
        copy_symlink(target, out / "x")
    assert find_partials(tmp_path) == []


def test_copy_symlink_into_dir_fd_with_bytes(tmp_path: Path) -> None:
    root = os.fsencode(tmp_path)
    os.symlink(b"\xff-target", root + b"/l\xfe")
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        copy_symlink(root + b"/l\xfe", b"copy\xfe", dst_dir_fd=fd)
    finally:
        os.close(fd)
    assert os.readlink(root + b"/copy\xfe") == b"\xff-target"


def test_bytes_non_utf8_names(tmp_path: Path) -> None:
    root = os.fsencode(tmp_path)
    src, dst = root + b"/caf\xe9", root + b"/d\xff\xfe"
    data = make(src, 70 * KIB)
    _, check = interrupt_after(1)
    with pytest.raises(Interrupt):
        copy_file(src, dst, CopyOptions(chunk_size=32 * KIB), check=check)
    leftovers = find_partials(root)
    assert leftovers and all(isinstance(p, bytes) for p in leftovers)
    result = copy_file(src, dst, CopyOptions(chunk_size=32 * KIB))
    assert result.bytes_reused == 32 * KIB and read(dst) == data
    assert find_partials(root) == []


def test_255_byte_names_use_hashed_partial(tmp_path: Path) -> None:
    name = "é" * 125 + "x.bin"  # 250 + 5 = 255 bytes
    assert len(name.encode()) == 255
    src, dst = tmp_path / "src", tmp_path / name
    data = make(src, 200 * KIB)
    partial, meta = partial_names(name)
    assert len(meta) <= 255 and partial.startswith(b".parjobs.")
    _, check = interrupt_after(1)
    with pytest.raises(Interrupt):
        copy_file(src, dst, CopyOptions(chunk_size=64 * KIB), check=check)
    assert (tmp_path / os.fsdecode(partial)).exists()
    assert copy_file(src, dst, CopyOptions(chunk_size=64 * KIB)).bytes_reused == 64 * KIB
    assert read(dst) == data
    copy_file(src, dst, CopyOptions(resume_partial=False))  # unpredictable temp name must fit too
    assert read(dst) == data and find_partials(tmp_path) == []


def test_empty_file(tmp_path: Path) -> None:
    src = tmp_path / "empty"
    src.touch()
    seen: list[int] = []
    result = copy_file(src, tmp_path / "out", CopyOptions(verify=True), on_bytes=seen.append)
    assert read(tmp_path / "out") == b"" and sum(seen) == 0
    assert result.bytes_copied == 0 and result.src_digest == xxhash.xxh3_128_hexdigest(b"")


@pytest.mark.parametrize("method", ["copy_file_range", "sendfile", "readwrite"])
def test_sparse_file(tmp_path: Path, method: Method) -> None:
    src = tmp_path / "sparse"
    with open(src, "wb") as f:
        f.write(b"head")
        f.seek(5 * 1024 * KIB)
        f.write(b"tail")
    result = copy_file(
        src, tmp_path / "out", CopyOptions(chunk_size=1024 * KIB, verify=True), _methods=(method,)
    )
    assert read(tmp_path / "out") == read(src) and result.method == method


def _chars_read() -> int:
    """The bytes this process has read by read(2) and its kin so far (``rchar``)."""
    with open("/proc/self/io") as f:
        return int(next(line for line in f if line.startswith("rchar:")).split()[1])


def _sparse(path: Path, middle: int, size: int) -> Path:
    """A sparse file at ``path``: 4000 bytes, a hole, 6 at ``middle``, a hole to ``size``."""
    with open(path, "wb") as f:
        f.write(b"head" * 1000)
        f.seek(middle)
        f.write(b"middle")
        f.truncate(size)  # (ends in a hole)
    return path


@pytest.mark.parametrize("durable", [False, True], ids=["plain", "durable"])
def test_verify_reads_a_sparse_copys_data_not_its_holes(tmp_path: Path, durable: bool) -> None:
    """``--verify`` (a copy's; a move's across filesystems, on by default) re-read the whole
    temporary, holes included, where the copy had read only the data: a 10 GiB file of 100
    KB read 10 GiB (14 s). The verify now reads the temporary's own data extents
    (SEEK_DATA, SEEK_HOLE), its holes hashed as the zeros they read as; the digests agree,
    and a copy that differs still fails (test_verify_catches_*). (~0.1 s each)"""
    src = _sparse(tmp_path / "sparse", 30 * MIB, 64 * MIB)
    before = _chars_read()
    result = copy_file(src, tmp_path / "out", CopyOptions(verify=True, durable=durable))
    read_bytes = _chars_read() - before
    assert result.dst_digest == result.src_digest == xxhash.xxh3_128_hexdigest(read(src))
    assert os.stat(tmp_path / "out").st_blocks * 512 < MIB  # (the copy kept the holes)
    assert read_bytes < 4 * MIB, read_bytes


def _punch_hole(fd: int, offset: int, length: int) -> None:
    """Deallocate ``length`` bytes of ``fd`` at ``offset`` (they read as zeros after)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    keep_size_punch_hole = 0x01 | 0x02  # FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE
    if libc.fallocate(fd, keep_size_punch_hole, ctypes.c_int64(offset), ctypes.c_int64(length)):
        pytest.skip(f"fallocate(PUNCH_HOLE): {os.strerror(ctypes.get_errno())}")


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda fd: os.pwrite(fd, b"x", 10 * MIB),  # data where the source has a hole
        lambda fd: os.pwrite(fd, b"x", 30 * MIB - 1),  # in the hole the copy ends in
        lambda fd: _punch_hole(fd, 0, 4096),  # a hole where the source has data
        lambda fd: os.pwrite(fd, b"M", 20 * MIB),  # other data in the copy's extent
    ],
    ids=["data-in-hole", "data-in-last-hole", "hole-in-data", "data-changed"],
)
def test_verify_of_a_sparse_copy_catches_a_copy_whose_extents_differ(
    tmp_path: Path, corrupt: Callable[[int], object]
) -> None:
    """The verify of a sparse file reads the copy's own data extents and hashes its holes
    as zeros unread (e042f4d): a copy whose holes are not its source's (data written in a
    hole, a hole punched in the data, in the middle or at the end) must still fail it, as
    one with other bytes in its data. (~0.02 s each)"""
    src = _sparse(tmp_path / "sparse", 20 * MIB, 30 * MIB)
    with pytest.raises(VerifyError):
        copy_file(src, tmp_path / "out", CopyOptions(verify=True), _after_write=corrupt)
    assert not (tmp_path / "out").exists() and find_partials(tmp_path) == []


def test_overwrite_false_keeps_existing(tmp_path: Path) -> None:
    src, dst = tmp_path / "s", tmp_path / "d"
    make(src, 10 * KIB)
    dst.write_bytes(b"old")
    with pytest.raises(FileExistsError):
        copy_file(src, dst, overwrite=False)
    assert dst.read_bytes() == b"old" and find_partials(tmp_path) == []
    dangling = tmp_path / "dangling"
    dangling.symlink_to("nowhere")
    with pytest.raises(FileExistsError):
        copy_file(src, dangling, overwrite=False)


def test_overwrite_false_detects_race_at_rename(tmp_path: Path) -> None:
    src, dst = tmp_path / "s", tmp_path / "d"
    make(src, 10 * KIB)
    with pytest.raises(FileExistsError):
        copy_file(src, dst, overwrite=False, _after_write=lambda fd: dst.write_bytes(b"racer"))
    assert dst.read_bytes() == b"racer" and find_partials(tmp_path) == []


def test_overwrite_true_replaces(tmp_path: Path) -> None:
    src, dst = tmp_path / "s", tmp_path / "d"
    data = make(src, 10 * KIB)
    dst.write_bytes(b"old")
    copy_file(src, dst)
    assert read(dst) == data


def test_symlink_planted_in_destination_tree(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_bytes(b"precious")
    root = tmp_path / "dest"
    (root / "a").mkdir(parents=True)
    (root / "a" / "evil").symlink_to(outside)
    with pytest.raises(OSError) as info:
        open_dir_nofollow(root, ["a", "evil"])
    assert info.value.errno in (errno.ELOOP, errno.ENOTDIR)
    with pytest.raises(ValueError):
        open_dir_nofollow(root, ["a", ".."])

    src = tmp_path / "src"
    data = make(src, 10 * KIB)
    fd = open_dir_nofollow(root, ["a"])
    try:
        # a symlink at the leaf is replaced, never written through
        (root / "a" / "victim").symlink_to(outside / "victim")
        copy_file(src, "victim", dst_dir_fd=fd)
        # a symlink planted at the partial's name is not followed either
        partial = os.fsdecode(partial_names("p")[0])
        (root / "a" / partial).symlink_to(outside / "victim")
        copy_file(src, "p", dst_dir_fd=fd)
        with pytest.raises(ValueError):
            copy_file(src, "x/y", dst_dir_fd=fd)
    finally:
        os.close(fd)
    assert (outside / "victim").read_bytes() == b"precious"
    assert not (root / "a" / "victim").is_symlink() and read(root / "a" / "victim") == data
    assert read(root / "a" / "p") == data


def test_durable_copy(tmp_path: Path) -> None:
    src = tmp_path / "s"
    data = make(src, 300 * KIB)
    result = copy_file(src, tmp_path / "d", CopyOptions(durable=True, verify=True))
    assert read(tmp_path / "d") == data and result.dst_digest == result.src_digest


def test_mode_and_times_preserved(tmp_path: Path) -> None:
    src, dst = tmp_path / "s", tmp_path / "d"
    make(src, 5 * KIB)
    os.chmod(src, 0o640)
    os.utime(src, ns=(1_600_000_000_111_111_111, 1_500_000_000_987_654_321))
    copy_file(src, dst)
    st = dst.stat()
    assert stat.S_IMODE(st.st_mode) == 0o640
    assert st.st_mtime_ns == 1_500_000_000_987_654_321
    assert st.st_atime_ns == 1_600_000_000_111_111_111
    assert same_size_mtime(src.stat(), st)


def test_no_preserve_uses_umask_defaults(tmp_path: Path) -> None:
    src, dst = tmp_path / "s", tmp_path / "d"
    make(src, 5 * KIB)
    os.chmod(src, 0o600)
    os.utime(src, ns=(0, 1_000_000_000))
    copy_file(src, dst, CopyOptions(preserve_mode=False, preserve_times=False))
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(dst.stat().st_mode) == 0o666 & ~umask
    assert dst.stat().st_mtime_ns != 1_000_000_000


def test_xattrs_and_owner_preserved(tmp_path: Path) -> None:
    src, dst = tmp_path / "s", tmp_path / "d"
    make(src, 5 * KIB)
    try:
        os.setxattr(src, "user.parjobs", b"value")
    except OSError as exc:
        pytest.skip(f"no user xattrs here: {exc}")
    owner = os.geteuid() == 0
    if owner:
        os.chown(src, 1234, 4321)
    copy_file(src, dst, CopyOptions(preserve_xattrs=True, preserve_owner=True))
    assert os.getxattr(dst, "user.parjobs") == b"value"
    if owner:
        assert (dst.stat().st_uid, dst.stat().st_gid) == (1234, 4321)
    copy_file(src, tmp_path / "plain")
    assert "user.parjobs" not in os.listxattr(tmp_path / "plain")


def test_source_grows_during_copy(tmp_path: Path) -> None:
    src, dst = tmp_path / "s", tmp_path / "d"
    make(src, 100 * KIB)

    def grow(_fd: int) -> None:
        with open(src, "ab") as f:
            f.write(b"late")

    with pytest.raises(SourceChangedError, match="changed while being copied"):
        copy_file(src, dst, _after_write=grow)
    assert not dst.exists() and find_partials(tmp_path) == []


def test_source_mtime_changes_mid_copy(tmp_path: Path) -> None:
    src, dst = tmp_path / "s", tmp_path / "d"
    make(src, 256 * KIB)
    st = src.stat()

    def touch(_n: int) -> None:
        os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))

    with pytest.raises(SourceChangedError):
        copy_file(src, dst, CopyOptions(chunk_size=64 * KIB), on_bytes=touch)
    assert not dst.exists() and find_partials(tmp_path) == []


def test_source_saved_in_place_mid_copy_with_its_mtime_put_back(tmp_path: Path) -> None:
    """A source written in place mid-copy, its mtime put back (``touch -r``, ``rsync
    --inplace``): size and mtime as at the start, the copy torn (old first chunk, new rest)
    and recorded as copied. Its ctime moved: the copy fails, nothing left."""
    src, dst = tmp_path / "s", tmp_path / "d"
    make(src, 256 * KIB)

    def save(_n: int) -> None:
        save_in_place(src, b"N" * (256 * KIB))

    with pytest.raises(SourceChangedError, match="ctime_ns"):
        copy_file(
            src, dst, CopyOptions(chunk_size=64 * KIB), on_bytes=save, _methods=("readwrite",)
        )
    assert not dst.exists() and find_partials(tmp_path) == []


def test_source_shrinks_during_copy(tmp_path: Path) -> None:
    src, dst = tmp_path / "s", tmp_path / "d"
    make(src, 256 * KIB)
    with pytest.raises(SourceChangedError):
        copy_file(
            src,
            dst,
            CopyOptions(chunk_size=64 * KIB),
            on_bytes=lambda n: os.truncate(src, 10),
            _methods=("readwrite",),
        )
    assert find_partials(tmp_path) == []


def test_dst_dir_fd_and_relative_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "s"
    data = make(src, 1000)
    monkeypatch.chdir(tmp_path)
    copy_file("s", "d")
    assert read(tmp_path / "d") == data


def test_bad_arguments(tmp_path: Path) -> None:
    src = tmp_path / "s"
    make(src, 10)
    with pytest.raises(ValueError):
        copy_file(src, tmp_path / "d", CopyOptions(chunk_size=0))
    with pytest.raises(ValueError):
        copy_file(src, str(tmp_path) + "/")
    with pytest.raises(FileNotFoundError):
        copy_file(tmp_path / "missing", tmp_path / "d")


def test_hints_for_new_directories_still_never_replace(tmp_path: Path) -> None:
    # precheck=False skips the up-front lookup; the no-replace rename still refuses, after
    # the copy, and leaves both the existing file and no temporary behind.
    src, dst = tmp_path / "s", tmp_path / "d"
    make(src, 3 * KIB)
    dst.write_bytes(b"keep me")
    with pytest.raises(FileExistsError):
        copy_file(src, dst, overwrite=False, precheck=False, src_lstat=False)
    assert dst.read_bytes() == b"keep me" and find_partials(tmp_path) == []


def test_fifo_refused_without_the_lstat_hint(tmp_path: Path) -> None:
    # src_lstat=False (the caller just walked it): the O_NONBLOCK open and the fstat after it
    # still refuse a FIFO swapped in since, without blocking.
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(SpecialFileError, match="FIFO"):
        copy_file(fifo, tmp_path / "out", src_lstat=False)
    assert not (tmp_path / "out").exists() and find_partials(tmp_path) == []


@pytest.mark.parametrize("size", [0, 1, 64 * KIB])
def test_one_shot_copies_with_a_wrong_device_hint(tmp_path: Path, size: int) -> None:
    src, dst = tmp_path / "s", tmp_path / "d"
    data = make(src, size)
    os.chmod(src, 0o640)
    os.utime(src, ns=(1_000_000_000, 2_000_000_123))
    result = copy_file(src, dst, dst_dev=-1)  # a wrong hint costs speed, never bytes
    st = os.stat(dst)
    assert read(dst) == data and result.bytes_copied == size
    assert stat.S_IMODE(st.st_mode) == 0o640 and st.st_mtime_ns == 2_000_000_123


def test_a_pair_refusing_copy_file_range_is_not_asked_again(
    tmp_path: Path, other_fs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Disk -> tmpfs: copy_file_range answers EXDEV, for every file of the pair. The pair is
    remembered (`NO_RANGE`, as reflink refusals are): of four small files only the first
    asks the kernel (each of them did), and all are copied."""
    pair = (tmp_path.stat().st_dev, other_fs.stat().st_dev)
    NO_RANGE.discard(pair)
    calls: list[int] = []
    real = os.copy_file_range

    def counted(*args: int) -> int:
        calls.append(args[2])
        return real(*args)

    monkeypatch.setattr(os, "copy_file_range", counted)
    try:
        for i in range(4):
            data = make(tmp_path / f"s{i}", 1000 + i, seed=i)
            result = copy_file(tmp_path / f"s{i}", other_fs / f"d{i}", CopyOptions())
            assert read(other_fs / f"d{i}") == data and result.method == "readwrite"
        assert len(calls) == 1 and pair in NO_RANGE
    finally:
        NO_RANGE.discard(pair)


# -- a file too big for the destination's disk fails alone ---------------------------------


@pytest.fixture
def small_disk(mount_fs: Callable[..., Path]) -> Path:
    """A 16 MiB tmpfs, or skip (needs root)."""
    return mount_fs("tmpfs", "-o", "size=16m")


@pytest.mark.parametrize("kind", ["copy", "move"])
async def test_a_file_too_big_for_the_disk_fails_alone(
    store_path: str, tmp_path: Path, small_disk: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """A 20 MiB file onto a 16 MiB disk filled it before failing, and a 3 MiB file copied
    meanwhile failed too ("No space left on device"), on every resume again. The big one is
    refused before a byte is written now: the 3 MiB file and the small ones land, the big
    one fails alone, no temporary left, its source kept. (Deterministic: the 3 MiB copy
    starts once the big one has written 14 MiB, which waits for it.)"""
    src = tmp_path / "src"
    src.mkdir()
    write(src / "big", b"b" * 20 * MIB)
    write(src / "mid", b"m" * 3 * MIB)
    for i in range(10):
        write(src / f"s{i}", b"s" * 1000)
    monkeypatch.setattr(transfer_mod, "CHUNK_SIZE", MIB)
    monkeypatch.setattr(smallfiles_mod, "fastcopy", None)
    full, big_done, mid_done = threading.Event(), threading.Event(), threading.Event()

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        name = os.path.basename(os.fsdecode(args[0]))
        if name == "big":
            written = [0]
            on_bytes = kwargs.get("on_bytes")

            def counted(n: int) -> None:
                written[0] += n
                if on_bytes is not None:
                    on_bytes(n)
                if written[0] >= 14 * MIB and not full.is_set():
                    full.set()
                    mid_done.wait(10)

            kwargs["on_bytes"] = counted
            try:
                return copy_file(*args, **kwargs)
            finally:
                big_done.set()
        if name == "mid":
            deadline = time.monotonic() + 10
            while not (full.is_set() or big_done.is_set()) and time.monotonic() < deadline:
                time.sleep(0.002)
            try:
                return copy_file(*args, **kwargs)
            finally:
                mid_done.set()
        return copy_file(*args, **kwargs)

    monkeypatch.setattr(transfer_mod, "copy_file", wrapped)
    dst = small_disk / "dst"
    job = (CopyJob if kind == "copy" else MoveJob)(sources=[str(src)], destination=str(dst))
    _, info, errors = await run_job(store_path, job, workers=4)
    assert info.status is JobStatus.COMPLETED_WITH_ERRORS
    assert [(e.label, "No space left on device" in e.message) for e in errors] == [
        (str(src / "big"), True)
    ], errors
    assert sorted(os.listdir(dst)) == ["mid"] + [f"s{i}" for i in range(10)]
    assert os.path.getsize(dst / "mid") == 3 * MIB
    assert find_partials(small_disk) == []
    assert os.path.getsize(src / "big") == 20 * MIB
    assert sorted(os.listdir(src)) == (
        ["big"] if kind == "move" else ["big", "mid"] + [f"s{i}" for i in range(10)]
    )


def test_a_partial_that_meets_a_full_disk_is_removed(small_disk: Path, tmp_path: Path) -> None:
    """A file that fits the free space when it starts, the disk filled by another writer
    while it is copied: `copy_file` kept its partial (to resume), holding the space the
    other files need. It is removed now, the error "No space left on device"."""
    write(tmp_path / "f", b"f" * 10 * MIB)
    filler = small_disk / "filler"

    def fill(n: int) -> None:
        if not filler.exists():
            write(filler, b"x" * 8 * MIB)

    with pytest.raises(OSError, match="No space left on device"):
        copy_file(tmp_path / "f", small_disk / "f", CopyOptions(chunk_size=MIB), on_bytes=fill)
    assert sorted(os.listdir(small_disk)) == ["filler"]


@pytest.fixture
def nearly_full_btrfs(tmp_path: Path) -> Iterator[Path]:
    """A 128 MiB btrfs (reflinks) on a loop device, or skip (needs root, mkfs.btrfs and
    loop devices); unmounted after the test."""
    if os.geteuid() != 0:
        pytest.skip("mounting a btrfs needs root")
    if shutil.which("mkfs.btrfs") is None:
        pytest.skip("mkfs.btrfs is not installed (btrfs-progs)")
    image, mnt = tmp_path / "btrfs.img", tmp_path / "mnt"
    with open(image, "wb") as f:
        f.truncate(128 * MIB)
    mnt.mkdir()
    made = subprocess.run(["mkfs.btrfs", "-q", "--mixed", str(image)], capture_output=True)
    mounted = (
        made.returncode == 0
        and not subprocess.run(
            ["mount", "-o", "loop", str(image), str(mnt)], capture_output=True
        ).returncode
    )
    if not mounted:
        pytest.skip(f"cannot make or mount a btrfs here: {made.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)


@pytest.mark.parametrize("chunk_mib", [32, 8])  # one chunk or less (one shot), and chunked
def test_a_clone_onto_a_nearly_full_disk_is_not_refused(
    nearly_full_btrfs: Path, chunk_mib: int
) -> None:
    """A clone (reflink: btrfs, XFS) shares the source's extents and takes no room, so a copy
    on one such filesystem fits where the free space is less than the file (85f9ba2 refused
    it before a byte was written: "No space left on device"). The room is checked only when
    bytes will be written, after the clone was tried."""
    src = nearly_full_btrfs / "big"
    write(src, os.urandom(20 * MIB))
    filler = nearly_full_btrfs / "filler"
    with open(filler, "wb") as f:
        while True:  # till less than half the file is free (btrfs counts space lazily)
            vfs = os.statvfs(nearly_full_btrfs)
            if vfs.f_bfree * vfs.f_frsize < 10 * MIB:
                break
            f.write(b"\xff" * (2 * MIB))
            f.flush()
            os.fsync(f.fileno())
    result = copy_file(src, nearly_full_btrfs / "copy", CopyOptions(chunk_size=chunk_mib * MIB))
    assert result.method == "reflink"
    assert read(nearly_full_btrfs / "copy") == read(src)
