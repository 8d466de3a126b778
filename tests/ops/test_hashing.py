"""Tests for parjobs.ops._hashing: digests, content ids and duplicate finding on real files."""

from __future__ import annotations

import itertools
import os
import random
from pathlib import Path

import pytest
import xxhash
from _trees import save_in_place

from parjobs._exceptions import ParjobsError
from parjobs.ops import SourceChangedError, SpecialFileError, _hashing, _sequential
from parjobs.ops._fs import FilePath
from parjobs.ops._hashing import (
    ALGORITHMS,
    CONTENT_ID_BLOCK,
    CONTENT_ID_SAMPLES,
    CONTENT_ID_SMALL_LIMIT,
    content_id,
    content_ids,
    full_hashes,
    group_by,
    hash_file,
    new_hasher,
)
from parjobs.ops._sequential import DuplicateGroup, DuplicateReport, find_duplicates_sequential

MiB = 1 << 20


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _data(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


# --- new_hasher / hash_file -------------------------------------------------------------------


def test_new_hasher_known_and_unknown() -> None:
    for name in ALGORITHMS:
        hasher = new_hasher(name)
        hasher.update(b"abc")
        assert hasher.hexdigest() == getattr(xxhash, f"{name}_hexdigest")(b"abc")
    with pytest.raises(ValueError, match=r"'md5'; expected one of xxh3_128, xxh3_64, xxh64"):
        new_hasher("md5")


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_hash_file_matches_xxhash(tmp_path: Path, algorithm: str) -> None:
    data = _data(3 * MiB + 17)
    path = _write(tmp_path / "f", data)
    expected = {
        "xxh3_128": xxhash.xxh3_128_hexdigest,
        "xxh3_64": xxhash.xxh3_64_hexdigest,
        "xxh64": xxhash.xxh64_hexdigest,
    }[algorithm](data)
    assert hash_file(path, algorithm=algorithm, chunk_size=MiB) == expected
    assert hash_file(str(path), algorithm=algorithm) == expected


def test_hash_file_reads_into_a_given_buffer_in_its_length(tmp_path: Path) -> None:
    """One buffer serves many files (a dupes hash run): its length is the chunk size, and
    the digests are those of a fresh buffer per file; a buffer below `MIN_CHUNK_SIZE` is
    refused."""
    small, large = _data(MiB // 3), _data(2 * MiB + 5)
    buffer = bytearray(MiB)
    for data, name in ((large, "large"), (small, "small"), (large, "again")):
        path = _write(tmp_path / name, data)
        read: list[int] = []
        assert hash_file(path, buffer=buffer, on_bytes=read.append) == hash_file(path)
        assert read == ([MiB, MiB, 5] if len(data) > MiB else [len(data)])
    with pytest.raises(ValueError, match="chunk_size"):
        hash_file(path, buffer=bytearray(64 * 1024))


def test_hash_file_empty_and_bytes_path(tmp_path: Path) -> None:
    name = os.path.join(os.fsencode(tmp_path), b"caf\xe9-\xff.bin")  # not valid UTF-8
    with open(name, "wb"):
        pass
    assert hash_file(name) == xxhash.xxh3_128_hexdigest(b"")


def test_hash_file_unknown_algorithm_touches_nothing(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown hash algorithm"):
        hash_file(tmp_path / "missing", algorithm="sha1")


def test_hash_file_rejects_small_chunks(tmp_path: Path) -> None:
    path = _write(tmp_path / "f", b"x")
    with pytest.raises(ValueError, match="chunk_size"):
        hash_file(path, chunk_size=64 * 1024)


def test_hash_file_calls_check_between_chunks_and_reports_bytes(tmp_path: Path) -> None:
    path = _write(tmp_path / "f", _data(3 * MiB + MiB // 2))
    events: list[object] = []
    hash_file(path, chunk_size=MiB, check=lambda: events.append("check"), on_bytes=events.append)
    # check before each read, on_bytes after each; reading stops at the size seen at open.
    assert events == ["check", MiB, "check", MiB, "check", MiB, "check", MiB // 2]


def test_hash_file_check_raising_stops(tmp_path: Path) -> None:
    path = _write(tmp_path / "f", _data(4 * MiB))
    read: list[int] = []
    calls = 0

    def check() -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise KeyboardInterrupt  # any exception: a stand-in for a pause request

    with pytest.raises(KeyboardInterrupt):
        hash_file(path, chunk_size=MiB, check=check, on_bytes=read.append)
    assert read == [MiB, MiB]


def test_hash_file_detects_growth(tmp_path: Path) -> None:
    path = _write(tmp_path / "f", _data(2 * MiB))

    def grow(_: int) -> None:  # appends on every chunk: must still terminate
        with open(path, "ab") as f:
            f.write(b"more")

    with pytest.raises(SourceChangedError, match="changed while it was read") as info:
        hash_file(path, chunk_size=MiB, on_bytes=grow)
    assert info.value.filename == os.fspath(path)
    assert isinstance(info.value, OSError)
    assert isinstance(info.value, ParjobsError)


def test_hash_file_detects_mtime_change(tmp_path: Path) -> None:
    path = _write(tmp_path / "f", _data(2 * MiB))
    with pytest.raises(SourceChangedError, match="mtime"):
        hash_file(path, chunk_size=MiB, on_bytes=lambda _: os.utime(path, ns=(1, 1)))


def test_hash_file_detects_a_save_in_place_with_its_mtime_put_back(tmp_path: Path) -> None:
    """Written in place between chunks, its mtime put back: the digest would be of the old
    first chunk and the new second one, a file that never existed; its ctime moved."""
    path = _write(tmp_path / "f", _data(2 * MiB))
    with pytest.raises(SourceChangedError, match="ctime_ns"):
        hash_file(path, chunk_size=MiB, on_bytes=lambda _: save_in_place(path, b"N" * MiB))


def test_hash_file_refuses_symlink(tmp_path: Path) -> None:
    target = _write(tmp_path / "target", b"data")
    link = tmp_path / "link"
    link.symlink_to(target)
    with pytest.raises(SpecialFileError, match="symbolic link") as info:
        hash_file(link)
    assert str(info.value) == (
        f"refusing to read {str(link)!r}: it is a symbolic link (not followed), not a regular file"
    )
    assert info.value.filename == str(link)


def test_hash_file_refuses_directory_fifo_and_device(tmp_path: Path) -> None:
    with pytest.raises(SpecialFileError, match="directory"):
        hash_file(tmp_path)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(SpecialFileError, match="FIFO"):  # must not block on open
        hash_file(fifo)
    with pytest.raises(SpecialFileError, match="character device"):
        hash_file("/dev/null")
    with pytest.raises(SpecialFileError, match="FIFO"):
        content_id(fifo)


def test_hash_file_missing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        hash_file(tmp_path / "missing")


# --- content_id -------------------------------------------------------------------------------


def _reference_content_id(data: bytes) -> str:
    """Recompute a content id from the layout documented in the module docstring only."""
    size = len(data)
    stream = size.to_bytes(8, "little")
    if size <= 102_400:
        stream += data
    else:
        stream += data[0:8192]
        for k in (1, 2, 3, 4):
            o_k = (size * k // 5) // 4096 * 4096
            stream += data[o_k : o_k + 8192]
        stream += data[size - 8192 : size]
        assert len(stream) == 8 + 6 * 8192
    return xxhash.xxh3_128(stream).hexdigest()


def test_content_id_constants() -> None:
    assert CONTENT_ID_SMALL_LIMIT == 102_400
    assert CONTENT_ID_BLOCK == 8192
    assert CONTENT_ID_SAMPLES == 4


@pytest.mark.parametrize(
    "size", [0, 1, 8191, 8192, 102_399, 102_400, 102_401, 123_457, MiB, 5 * MiB + 4097]
)
def test_content_id_matches_documented_layout(tmp_path: Path, size: int) -> None:
    data = _data(size, seed=size)
    path = _write(tmp_path / "f", data)
    cid = content_id(path)
    assert cid == _reference_content_id(data)
    assert len(cid) == 32
    assert content_id(os.fsencode(path), size=size) == cid


def test_content_id_regions_never_overlap() -> None:
    for size in [102_401, 102_402, 200_000, MiB, 10**12 + 7]:
        regions = _hashing.content_id_regions(size)
        assert len(regions) == 2 + CONTENT_ID_SAMPLES
        assert regions[0] == (0, 8192)
        assert regions[-1] == (size - 8192, 8192)
        assert all(offset % 4096 == 0 for offset, _ in regions[1:-1])
        for (offset, length), (next_offset, _) in itertools.pairwise(regions):
            assert length == 8192
            assert offset + length <= next_offset


def test_content_id_small_file_covers_every_byte(tmp_path: Path) -> None:
    data = bytearray(_data(CONTENT_ID_SMALL_LIMIT))
    a = content_id(_write(tmp_path / "a", bytes(data)))
    data[50_000] ^= 1
    assert content_id(_write(tmp_path / "b", bytes(data))) != a


def test_content_id_size_mismatch(tmp_path: Path) -> None:
    path = _write(tmp_path / "f", b"abc")
    with pytest.raises(SourceChangedError, match="expected 4"):
        content_id(path, size=4)


def _files_and_unreadable(
    tmp_path: Path, sizes: list[int]
) -> tuple[list[tuple[bytes, int]], list[tuple[bytes, int]]]:
    """``(path, size)`` of a file of each size (``_data(size, seed=size)``), and of what no
    read of a regular file may open: a symlink, a FIFO, a directory, a device, a missing
    file."""
    items: list[tuple[bytes, int]] = []
    for size in sizes:
        path = _write(tmp_path / f"f{size}", _data(size, seed=size))
        items.append((os.fsencode(path), size))
    os.symlink(tmp_path / "f1", tmp_path / "link")
    os.mkfifo(tmp_path / "fifo")
    unreadable = [
        (os.fsencode(tmp_path / "link"), 1),
        (os.fsencode(tmp_path / "fifo"), 0),
        (os.fsencode(tmp_path), 0),
        (b"/dev/null", 0),
        (os.fsencode(tmp_path / "missing"), 3),
    ]
    return items, unreadable


def test_content_ids_are_content_id_and_fail_where_it_fails(tmp_path: Path, scan_path: str) -> None:
    """`content_ids` (in C with the GIL released, or in Python) gives `content_id`'s ids, and
    None wherever `content_id` raises: a symlink, a FIFO (never blocking), a directory, a
    device, a missing file, a file no longer of its listed size."""
    items, bad = _files_and_unreadable(tmp_path, [0, 1, 8191, 102_400, 102_401, 123_457, MiB + 3])
    bad += [(items[1][0], 2), (items[-1][0], MiB + 2)]
    calls = 0

    def check() -> None:
        nonlocal calls
        calls += 1

    got = content_ids(items + bad, check=check)
    assert got[: len(items)] == [_reference_content_id(_data(s, seed=s)) for _, s in items]
    assert got[len(items) :] == [None] * len(bad)
    for failing, size in bad:
        with pytest.raises(OSError):
            content_id(failing, size=size)
    assert calls == (1 if scan_path == "c" else len(items) + len(bad))
    many = (items + bad) * 10  # 140: three calls into C, a check before each
    calls = 0
    assert content_ids(many, check=check) == got * 10
    assert calls == (3 if scan_path == "c" else len(many))


def test_full_hashes_are_hash_file_and_fail_where_it_fails(tmp_path: Path, scan_path: str) -> None:
    """`full_hashes` (in one call into C with the GIL released, or in Python) gives
    `hash_file`'s digests, across the C reads' chunk edges, and None wherever `hash_file`
    raises (a symlink, a FIFO, never blocking, a directory, a device, a missing file) or the
    file is not of its listed size."""
    chunk = 256 * 1024  # (the C reads' chunk)
    sizes = [0, 1, chunk - 1, chunk, chunk + 1, 4 * chunk, 2 * MiB + 5]
    items, raising = _files_and_unreadable(tmp_path, sizes)
    other_size = [(items[1][0], 2), (items[-1][0], 2 * MiB + 4), (items[3][0], chunk + 1)]
    got = full_hashes(items + raising + other_size)
    assert got[: len(items)] == [xxhash.xxh3_128(_data(s, seed=s)).hexdigest() for _, s in items]
    assert got[: len(items)] == [hash_file(path) for path, _ in items]
    assert got[len(items) :] == [None] * (len(raising) + len(other_size))
    for failing, _ in raising:
        with pytest.raises(OSError):
            hash_file(failing)
    assert full_hashes([]) == []


def test_the_c_full_hashes_stop_on_a_flag_and_check_their_items(tmp_path: Path) -> None:
    """``_fastscan.full_hashes``' ``stop`` (read before each chunk) answers ``STOPPED``; its
    items are checked as ``content_ids``' (the same code): (path, exact int) tuples, no NUL
    in a path."""
    fastscan = _hashing.fastscan
    if fastscan is None:
        pytest.skip("the C extension _fastscan is not built")
    path = os.fsencode(_write(tmp_path / "f", _data(MiB, seed=1)))
    digest = xxhash.xxh3_128(_data(MiB, seed=1)).hexdigest()
    assert fastscan.full_hashes([(path, MiB)], bytearray(1)) == [digest]
    assert fastscan.full_hashes([(path, MiB)] * 2, bytearray(b"\1")) == [fastscan.STOPPED] * 2
    assert fastscan.full_hashes([(path, MiB + 1)]) == [fastscan.CHANGED]

    class Size(int):
        pass

    for bad, error in [
        ([(path, Size(MiB))], TypeError),
        ([(path, MiB, 0)], TypeError),
        ([path], TypeError),
        ([(b"a\0b", 1)], ValueError),
        ([(path, 1 << 64)], OverflowError),
    ]:
        with pytest.raises(error):
            fastscan.full_hashes(bad)
    with pytest.raises(TypeError):
        fastscan.full_hashes([(path, MiB)], b"\1")


# --- group_by and the report records ----------------------------------------------------------


def test_group_by_keeps_only_groups_of_two_or_more_in_order() -> None:
    words = ["apple", "bob", "avocado", "cat", "bee", "dog", "ant"]
    assert group_by(words, lambda w: w[0]) == {
        "a": ["apple", "avocado", "ant"],
        "b": ["bob", "bee"],
    }
    assert group_by([], len) == {}


def test_report_arithmetic() -> None:
    report = DuplicateReport(
        (
            DuplicateGroup(100, "d1", ("a", "b", "c")),
            DuplicateGroup(7, "d2", ("x", "y")),
            DuplicateGroup(0, "d3", ("e1", "e2")),
        )
    )
    assert report.groups[0].reclaimable == 200
    assert report.reclaimable_bytes == 207
    assert report.duplicate_files == 4
    with pytest.raises(AttributeError):
        report.groups[0].size = 1  # type: ignore[misc]


# --- find_duplicates_sequential on a constructed tree -----------------------------------------


def test_find_duplicates_on_constructed_tree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    big = _data(MiB, seed=1)
    size = len(big)
    sampled = (size * 2 // 5) // 4096 * 4096 + 100  # inside sample 2
    unsampled = 100_000  # between the header and sample 1: content ids cannot see it

    def flip(offset: int) -> bytes:
        changed = bytearray(big)
        changed[offset] ^= 0xFF
        return bytes(changed)

    d = tmp_path
    files = {
        # identical large files (3 copies) + a hard link to one of them
        "big1": big,
        "sub/big2": big,
        "sub/deeper/big3": big,
        # same size and header, different middle: one seen by content_id, one only by hash
        "big_sampled_diff": flip(sampled),
        "big_unsampled_diff": flip(unsampled),
        # same size, different content (small)
        "small_a": b"a" * 1000,
        "small_b": b"b" * 1000,
        "small_a_copy": b"a" * 1000,
        # unique size: never opened
        "lonely": b"z" * 1234,
        # empty files
        "empty1": b"",
        "sub/empty2": b"",
        # an identical pair that are hard links only: not a duplicate
        "solo": b"s" * 5000,
    }
    for rel, data in files.items():
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        (d / rel).write_bytes(data)
    os.link(d / "big1", d / "big1_hardlink")
    os.link(d / "solo", d / "solo_hardlink")
    (d / "big_symlink").symlink_to(d / "big1")  # not a regular file: ignored
    non_utf8 = os.path.join(os.fsencode(d), b"\xff-copy")
    with open(non_utf8, "wb") as f:
        f.write(b"a" * 1000)

    assert content_id(d / "big_unsampled_diff") == content_id(d / "big1")
    assert content_id(d / "big_sampled_diff") != content_id(d / "big1")

    opened: list[str] = []
    hashed: list[str] = []
    real_content_id, real_hash_file = _hashing.content_id, _hashing.hash_file

    def spy_content_id(path: FilePath, *, size: int | None = None) -> str:
        opened.append(os.fsdecode(path))
        return real_content_id(path, size=size)

    def spy_hash_file(path: FilePath) -> str:
        hashed.append(os.fsdecode(path))
        return real_hash_file(path)

    monkeypatch.setattr(_sequential, "content_id", spy_content_id)
    monkeypatch.setattr(_sequential, "hash_file", spy_hash_file)

    paths: list[str | bytes] = [str(d / rel) for rel in files]
    paths += [str(d / "big1_hardlink"), str(d / "solo_hardlink"), str(d / "big_symlink")]
    paths.append(non_utf8)
    paths.append(str(d / "big1"))  # the same path twice counts once
    report = find_duplicates_sequential(paths)

    big_digest = xxhash.xxh3_128_hexdigest(big)
    assert report.groups == (
        DuplicateGroup(
            size, big_digest, (str(d / "big1"), str(d / "sub/big2"), str(d / "sub/deeper/big3"))
        ),
        DuplicateGroup(
            1000,
            _reference_content_id(b"a" * 1000),
            (str(d / "small_a"), str(d / "small_a_copy"), non_utf8),
        ),
        DuplicateGroup(
            0, xxhash.xxh3_128_hexdigest(b""), (str(d / "empty1"), str(d / "sub/empty2"))
        ),
    )
    assert report.reclaimable_bytes == 2 * size + 2 * 1000
    assert report.duplicate_files == 2 + 2 + 1

    # Staging: unique sizes, empty files and lone inodes are never opened; small files are
    # never fully hashed; only content-id-equal large files are.
    for never in ("lonely", "empty1", "sub/empty2", "solo", "solo_hardlink", "big1_hardlink"):
        assert str(d / never) not in opened
    assert sorted(hashed) == sorted(
        str(d / rel) for rel in ("big1", "sub/big2", "sub/deeper/big3", "big_unsampled_diff")
    )


def test_find_duplicates_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        find_duplicates_sequential([tmp_path / "missing"])
