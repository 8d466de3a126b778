"""The tree walker and its manifest: stable indices across resumes, on real trees."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

import parjobs
from parjobs import JobStatus
from parjobs._items import ItemRecord, Written
from parjobs.ops import _hashing, _undo, _walk
from parjobs.ops._delete import DeleteJob, remove_entry
from parjobs.ops._errors import SourceChangedError
from parjobs.ops._fs import check_same_file
from parjobs.ops._hash import HashJob
from parjobs.ops._walk import (
    Entry,
    HardLinks,
    Kind,
    Manifest,
    Stat,
    count_tree,
    list_files,
    scan_dir,
    walk_batches,
)


class FakeContext:
    """What `walk_batches` uses of a JobContext: a job directory, its state, an interrupt
    check and the end of what earlier runs recorded done (``recorded``: none)."""

    def __init__(self, job_dir: Path) -> None:
        job_dir.mkdir(exist_ok=True)
        self.job_dir = str(job_dir)
        self.state: dict[str, object] = {}
        self.checks = 0
        self.recorded = 0

    async def check_interrupt(self) -> None:
        self.checks += 1

    def recorded_end(self, stages: object) -> int:
        return self.recorded


async def collect(ctx: FakeContext, roots: list[str], **kwargs: bool) -> list[Entry]:
    batches = walk_batches(ctx, roots, **kwargs)  # type: ignore[arg-type]
    return [e async for batch in batches for e in batch]


def by_rel(entries: list[Entry]) -> dict[bytes, Entry]:
    return {e.rel: e for e in entries}


def build(root: Path) -> None:
    (root / "b" / "deep").mkdir(parents=True)
    (root / "a").mkdir()
    (root / "a" / "one.txt").write_text("1")
    (root / "b" / "two.txt").write_text("22")
    (root / "b" / "deep" / "three.txt").write_text("333")
    (root / "empty").mkdir()
    os.symlink("a/one.txt", root / "link")
    os.mkfifo(root / "fifo")


def built_with_files(src: Path, n: int) -> Path:
    """`build` at ``src`` (made), then ``n`` plain files of 0 to n-1 bytes in its ``a``,
    named ``f00`` ... (as many digits as n-1 has)."""
    src.mkdir()
    build(src)
    width = len(str(n - 1))
    for i in range(n):
        (src / "a" / f"f{i:0{width}d}").write_bytes(b"x" * i)
    return src


async def test_walk_yields_parents_first_with_kinds_and_dense_indices(
    tmp_path: Path, scan_path: str
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    build(src)
    entries = await collect(FakeContext(tmp_path / "job"), [str(src)])
    assert [e.index for e in entries] == list(range(len(entries)))
    rels = [e.rel for e in entries]
    assert rels[0] == b"src"
    for e in entries[1:]:  # every parent directory comes before its children
        assert rels.index(e.rel.rpartition(b"/")[0]) < rels.index(e.rel)
    kinds = {e.rel: e.kind for e in entries}
    assert kinds[b"src/a"] == kinds[b"src/b/deep"] == kinds[b"src/empty"] == "dir"
    assert kinds[b"src/b/deep/three.txt"] == "file"
    assert kinds[b"src/link"] == "symlink"
    assert kinds[b"src/fifo"] == "special"
    assert by_rel(entries)[b"src/b/deep/three.txt"].size == 3
    assert by_rel(entries)[b"src/b/two.txt"].path == os.fsencode(src / "b" / "two.txt")


async def test_resume_replays_the_manifest_and_new_files_get_new_indices(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    build(src)
    first = await collect(FakeContext(tmp_path / "job"), [str(src)])
    (src / "a" / "zzz-new.txt").write_text("new")
    (src / "b" / "two.txt").unlink()  # gone since: still replayed with its old index
    second = await collect(FakeContext(tmp_path / "job"), [str(src)])
    assert [(e.index, e.rel) for e in second[: len(first)]] == [(e.index, e.rel) for e in first]
    new = second[len(first) :]
    assert [(e.index, e.rel) for e in new] == [(len(first), b"src/a/zzz-new.txt")]
    third = await collect(FakeContext(tmp_path / "job"), [str(src)])
    assert [(e.index, e.rel) for e in third] == [(e.index, e.rel) for e in second]
    # every index is its manifest position, so a later resume maps checkpoints to the same paths
    assert Manifest(str(tmp_path / "job" / "walk.manifest")).load() == second


async def walk_src(tmp_path: Path) -> list[Entry]:
    """Walk ``tmp_path/src`` (built by `build` on the first call) with the job directory
    ``tmp_path/job``, whose manifest is ``walk.manifest``."""
    src = tmp_path / "src"
    if not src.exists():
        src.mkdir()
        build(src)
    return await collect(FakeContext(tmp_path / "job"), [str(src)])


async def test_a_torn_last_line_is_dropped_and_its_entry_walked_again(tmp_path: Path) -> None:
    first = await walk_src(tmp_path)
    manifest = tmp_path / "job" / "walk.manifest"
    data = manifest.read_bytes()
    lines = data.splitlines(keepends=True)
    manifest.write_bytes(b"".join(lines[:-1]) + lines[-1][:7])  # killed mid-write
    again = await walk_src(tmp_path)
    assert [(e.index, e.rel) for e in again] == [(e.index, e.rel) for e in first]
    assert manifest.read_bytes() == data  # truncated, then the lost entry appended again


async def test_non_utf8_and_long_names_survive_the_manifest(tmp_path: Path, scan_path: str) -> None:
    src = os.fsencode(tmp_path / "src")
    os.mkdir(src)
    odd = b"caf\xe9-\xff.bin"  # latin-1 bytes: not UTF-8
    longest = b"n" * 251 + b".txt"
    for name in (odd, longest, "ünïcødé ✓.txt".encode()):
        with open(src + b"/" + name, "wb") as f:
            f.write(name)
    first = await collect(FakeContext(tmp_path / "job"), [os.fsdecode(src)])
    manifest = Manifest(str(tmp_path / "job" / "walk.manifest"))
    assert manifest.load() == first
    paths = {e.path for e in first}
    assert src + b"/" + odd in paths and src + b"/" + longest in paths
    assert by_rel(first)[b"src/" + odd].display.endswith("caf\\xe9-\\xff.bin")


def test_manifest_lines_are_json_whatever_the_names(tmp_path: Path) -> None:
    """A batch of plain names is formatted without the JSON encoder: its line is what
    ``json.dumps`` writes; a name JSON must escape (quote, backslash, control, DEL, not
    ASCII, not UTF-8) sends its batch through the encoder; both read back as written."""
    manifest = Manifest(str(tmp_path / "walk.manifest"))

    def entry(i: int, name: bytes, kind: Kind = "file", error: str = "") -> Entry:
        rel = b"src/" + name
        return Entry(
            i,
            kind,
            0,
            rel,
            b"/data/" + rel,
            10 + i,
            1733300000123456789,
            0o100644,
            2049,
            77,
            error,
            2,
        )

    plain = [entry(0, b"a b.txt"), entry(1, b"d", "dir"), entry(2, b"e/", "error", 'no "x" \u00e9')]
    manifest.append(plain)
    text = (tmp_path / "walk.manifest").read_text()
    assert text == json.dumps(json.loads(text), separators=(",", ":")) + "\n"
    assert manifest.load() == plain
    odd = [
        entry(3 + i, name)
        for i, name in enumerate([b'q"', b"b\\", b"c\x01", b"d\x7f", b"\xe9", "ü".encode()])
    ]
    for e in odd:
        manifest.append([entry(9, b"plain"), e])
    read = manifest.load()
    assert [e.path for e in read] == [e.path for e in plain] + [
        p for e in odd for p in (b"/data/src/plain", e.path)
    ]
    assert read[:3] == plain


async def test_following_symlinks_reports_loops_and_keeps_broken_links(
    tmp_path: Path, scan_path: str
) -> None:
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "f").write_text("x")
    os.symlink("..", src / "d" / "up")  # a loop once followed
    os.symlink("d", src / "alias")
    os.symlink("missing", src / "broken")
    entries = by_rel(await collect(FakeContext(tmp_path / "job"), [str(src)], follow_symlinks=True))
    assert entries[b"src/d/up"].kind == "error"
    assert entries[b"src/d/up"].error == "symlink loop"
    assert entries[b"src/alias"].kind == "dir"
    assert entries[b"src/alias/f"].kind == "file"
    assert entries[b"src/broken"].kind == "symlink"


@pytest.mark.skipif(_hashing.fastscan is None, reason="the C extension _fastscan is not built")
@pytest.mark.parametrize("follow", [False, True])
def test_a_directory_is_listed_alike_in_c_and_in_python(tmp_path: Path, follow: bool) -> None:
    """`_fastscan.scan_dir` lists what `scan_dir` does: names as bytes in byte order, the
    same stat fields (following or not; a broken or looping link as the link), the same
    errors for what is not a readable directory."""
    src = tmp_path / "src"
    src.mkdir()
    build(src)
    os.symlink("nowhere", src / "broken")
    os.symlink("loop", src / "loop")
    os.symlink("a", src / "alias")
    with open(os.fsencode(src) + b"/caf\xe9-\xff", "wb") as f:
        f.write(b"odd")
    for name in ("B", "a.txt", "a-", "\u00e9"):
        (src / name).write_text(name)
    os.link(src / "a" / "one.txt", src / "hard")
    assert _hashing.fastscan is not None
    native = _hashing.fastscan.scan_dir
    for where in (src, src / "a", src / "empty"):
        listed = native(os.fsencode(where), follow)
        assert listed == scan_dir(os.fsencode(where), follow)
    assert [n for n, _, _ in native(os.fsencode(src), follow)][:4] == [b"B", b"a", b"a-", b"a.txt"]
    for bad, error in ((src / "nope", FileNotFoundError), (src / "fifo", NotADirectoryError)):
        with pytest.raises(error) as c_error:
            native(os.fsencode(bad), follow)
        with pytest.raises(error) as py_error:
            scan_dir(os.fsencode(bad), follow)
        assert (c_error.value.strerror, c_error.value.filename) == (
            py_error.value.strerror,
            py_error.value.filename,
        )


async def test_a_root_that_is_a_broken_symlink_is_kept_as_a_link(tmp_path: Path) -> None:
    os.symlink("nowhere", tmp_path / "dangling")
    for follow in (False, True):
        ctx = FakeContext(tmp_path / f"job{follow}")
        (entry,) = await collect(ctx, [str(tmp_path / "dangling")], follow_symlinks=follow)
        assert (entry.kind, entry.rel) == ("symlink", b"dangling")


async def test_a_missing_root_is_an_error_entry(tmp_path: Path, scan_path: str) -> None:
    (entry,) = await collect(FakeContext(tmp_path / "job"), [str(tmp_path / "nope")])
    assert entry.kind == "error" and "No such file" in entry.error


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any directory")
async def test_an_unreadable_directory_is_an_error_entry(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "locked").mkdir(parents=True)
    (src / "locked").chmod(0)
    try:
        entries = await collect(FakeContext(tmp_path / "job"), [str(src)])
    finally:
        (src / "locked").chmod(0o755)
    errors = [e for e in entries if e.kind == "error"]
    assert len(errors) == 1 and "Permission denied" in errors[0].error


async def test_a_manifest_with_one_entry_per_line_is_still_read(tmp_path: Path) -> None:
    first = await walk_src(tmp_path)
    manifest = tmp_path / "job" / "walk.manifest"
    rows = [row for line in manifest.read_text().splitlines() for row in json.loads(line)]
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows))  # the older layout
    again = await walk_src(tmp_path)
    assert again == first


async def test_an_entry_that_failed_is_walked_again_on_resume_under_its_index(
    tmp_path: Path,
) -> None:
    """An error entry of an earlier run is not replayed as is: the re-walk looks again. Still
    failing, it comes again (same index, today's reason); readable now, it comes as what it
    is, under the same index, with its contents as new entries (issue 12, item 10)."""
    src, other = tmp_path / "src", tmp_path / "other"
    other.mkdir()
    (other / "o.txt").write_text("o")
    first = await collect(FakeContext(tmp_path / "job"), [str(other), str(src)])
    assert [(e.kind, e.rel) for e in first][-1] == ("error", b"src")
    index = first[-1].index
    again = await collect(FakeContext(tmp_path / "job"), [str(other), str(src)])
    assert [(e.index, e.kind) for e in again if e.rel == b"src"] == [(index, "error")]
    src.mkdir()
    build(src)
    resumed = await collect(FakeContext(tmp_path / "job"), [str(other), str(src)])
    got = by_rel(resumed)
    assert got[b"src"].kind == "dir" and got[b"src"].index == index
    assert got[b"src/b/deep/three.txt"].kind == "file"
    assert not [e for e in resumed if e.kind == "error"]
    assert sorted(e.index for e in resumed) == list(range(len(resumed)))


async def test_a_manifest_of_error_entries_only_is_no_lost_manifest(tmp_path: Path) -> None:
    """Every root failed (gone when the job ran): the manifest holds error entries only,
    which the replay holds back for the re-walk. The walk that resumes it (the job's state
    says it has a manifest, e7e04f3) took that for a manifest gone and raised
    `ManifestLostError`: such a job, completed with errors, could never be retried."""
    src = tmp_path / "src"
    ctx = FakeContext(tmp_path / "job")
    (first,) = await collect(ctx, [str(src)])
    assert first.kind == "error" and "walk" in ctx.state[_walk.WALKS]  # type: ignore[operator]
    src.mkdir()
    build(src)
    again = by_rel(await collect(ctx, [str(src)]))
    assert again[b"src"].kind == "dir" and again[b"src"].index == first.index
    assert again[b"src/b/deep/three.txt"].kind == "file"


@pytest.mark.parametrize("kind", ["hash", "delete"])
async def test_a_job_whose_every_root_failed_is_retried_once_they_are_back(
    store_path: str, tmp_path: Path, kind: str
) -> None:
    """A hash or delete whose root was gone when it ran completes with errors; resumed once
    the root is back (a mount come back), it retries it. It failed instead, 'the record of
    its walk ... is gone', the manifest in its place, and so on every resume."""
    src = tmp_path / "src"
    build(src)
    job = HashJob(paths=[str(src)]) if kind == "hash" else DeleteJob(paths=[str(src)])
    async with parjobs.open_manager(store_path) as manager:
        handle = await manager.submit(job, start=False)
        os.rename(src, tmp_path / "away")
        await manager.resume(handle.id)
        with trio.fail_after(30):
            assert await handle.wait() is JobStatus.COMPLETED_WITH_ERRORS
        os.rename(tmp_path / "away", src)
        await manager.resume(handle.id)
        with trio.fail_after(30):
            assert await handle.wait() is JobStatus.COMPLETED, (await handle.info()).error
    assert src.exists() is (kind == "hash")


async def test_many_directories_share_worker_calls_and_manifest_writes(tmp_path: Path) -> None:
    """A tree of many small directories is listed several directories per worker-thread
    call, with one manifest line per call (it was one of each per directory), in the same
    depth-first order and with the same indices as a directory-at-a-time walk."""
    src = tmp_path / "src"
    for i in range(40):
        for j in range(5):
            (src / f"d{i:02d}" / f"s{j}").mkdir(parents=True)
            (src / f"d{i:02d}" / f"s{j}" / "f.txt").write_text(str(i * j))
    ctx = FakeContext(tmp_path / "job")
    entries = await collect(ctx, [str(src)])
    expected = [b"src"]  # a directory-at-a-time walk: list one, then its first subdirectory
    stack = [b"src"]
    while stack:
        rel = stack.pop()
        names = sorted(os.listdir(tmp_path / os.fsdecode(rel)))
        expected += [rel + b"/" + os.fsencode(n) for n in names]
        stack += [rel + b"/" + os.fsencode(n) for n in reversed(names) if not n.endswith(".txt")]
    assert [e.rel for e in entries] == expected
    assert [e.index for e in entries] == list(range(len(expected)))
    *lines, end = (tmp_path / "job" / "walk.manifest").read_text().splitlines()
    assert end == "[]"  # the walk went to its end
    assert 2 <= len(lines) <= 40, len(lines)  # 241 directories: 242 lines before
    assert ctx.checks == len(lines) - 1  # an interrupt check before each call still
    again = await collect(FakeContext(tmp_path / "job"), [str(src)])  # replayed as it was
    assert [(e.index, e.rel) for e in again] == [(e.index, e.rel) for e in entries]


@pytest.mark.parametrize("follow", [False, True])
async def test_the_quick_count_agrees_with_the_walk(
    tmp_path: Path, follow: bool, scan_path: str
) -> None:
    """In C (`_fastscan.scan_dir`) and in Python alike."""
    root = tmp_path / "tree"
    build(root)
    os.symlink(".", root / "b" / "loop")  # followed: a loop, one (error) entry
    (root / "size.bin").write_bytes(b"x" * 1000)
    roots = [str(root), str(root / "size.bin"), str(tmp_path / "missing")]
    walked = await collect(FakeContext(tmp_path / "job"), roots, follow_symlinks=follow)
    counts = count_tree(roots, follow, lambda: False)
    assert counts is not None
    assert sum(c.entries for c in counts) == len(walked)
    assert sum(c.others for c in counts) == sum(e.kind != "dir" for e in walked)
    assert sum(c.file_bytes for c in counts) == sum(e.size for e in walked if e.kind == "file")
    assert [c.entries for c in counts][1:] == [1, 1]
    assert count_tree(roots, follow, lambda: True) is None  # stopped: no partial figures


async def test_link_counts_are_walked_and_kept_and_hard_links_find_the_first_name(
    tmp_path: Path,
) -> None:
    """A file's link count is in its entry and the manifest (a manifest written before it
    was recorded reads as 1); `HardLinks` names the first walked name of a linked file."""
    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    (src / "b").mkdir()
    (src / "b" / "f").write_text("f")
    os.link(src / "b" / "f", src / "a" / "g")  # walked first: a/ comes before b/
    (src / "single").write_text("1")
    ctx = FakeContext(tmp_path / "job")
    entries = by_rel(await collect(ctx, [str(src)]))
    assert entries[b"src/a/g"].nlink == entries[b"src/b/f"].nlink == 2
    assert entries[b"src/single"].nlink == 1 and entries[b"src/a"].nlink == 1
    manifest = Manifest(str(tmp_path / "job" / "walk.manifest"))
    assert by_rel(manifest.load())[b"src/b/f"].nlink == 2
    links = HardLinks()
    firsts = {e.rel: links.first_of(e) for e in await collect(ctx, [str(src)])}  # replayed
    first = firsts[b"src/b/f"]
    assert first is not None and first.rel == b"src/a/g"
    assert firsts[b"src/a/g"] is None and firsts[b"src/single"] is None
    old = [
        [row[:10] for row in json.loads(line)]  # as written before link counts were
        for line in (tmp_path / "job" / "walk.manifest").read_text().splitlines()
    ]
    (tmp_path / "job" / "walk.manifest").write_text("".join(json.dumps(r) + "\n" for r in old))
    assert {e.nlink for e in manifest.load()} == {1}


async def test_list_files_finds_the_walks_files_in_its_order_and_its_errors(
    tmp_path: Path, scan_path: str
) -> None:
    """`list_files` (the duplicates job's scan) gives the regular files the walk finds, in the
    walk's order with its sizes and inodes, and an error where the walk has an error entry
    (a root that is gone); symlinks and special files are left out. A root that is a file
    is listed itself; ``stopped()`` ends it with None."""
    src = tmp_path / "src"
    build(src)
    (src / "b" / "deep" / "more").mkdir()
    (src / "b" / "deep" / "more" / "four.txt").write_text("4444")
    os.link(src / "a" / "one.txt", src / "b" / "deep" / "one-again.txt")
    roots = [str(src), str(tmp_path / "missing"), str(src / "b" / "two.txt")]
    walked = await collect(FakeContext(tmp_path / "job"), roots)
    found = list_files(roots, lambda: False)
    assert found is not None
    files, errors = found
    expected = [(e.path, e.size, e.dev, e.ino, e.nlink) for e in walked if e.kind == "file"]
    assert files == expected and len(files) == 6
    assert errors == [(e.path, e.error) for e in walked if e.kind == "error"]
    assert errors == [(os.fsencode(tmp_path / "missing"), "No such file or directory")]
    assert list_files(roots, lambda: True) is None


async def test_a_first_walk_builds_plain_files_in_its_listing_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first walk (nothing replayed) numbers plain files in `_Walker._list` itself, not
    through `_add` per file (three calls a file fewer on the walk's thread): the entries are
    the same, and `_add` is left to directories, links, specials and errors. A resumed
    walk still goes through `_add` (it skips what the manifest holds)."""
    src = built_with_files(tmp_path / "src", 20)
    adds: list[bytes] = []
    real = _walk._Walker._add

    def counted(self: _walk._Walker, batch: list[Entry], root: int, rel: bytes, *a: object) -> None:
        adds.append(rel)
        real(self, batch, root, rel, *a)  # type: ignore[arg-type]

    monkeypatch.setattr(_walk._Walker, "_add", counted)
    entries = await collect(FakeContext(tmp_path / "job"), [str(src)])
    files = [e for e in entries if e.kind == "file"]
    assert len(files) == 23
    assert not [rel for rel in adds if by_rel(entries)[rel].kind == "file"]
    f07 = by_rel(entries)[b"src/a/f07"]
    st = os.lstat(src / "a" / "f07")
    assert (f07.size, f07.mtime_ns, f07.mode, f07.dev, f07.ino, f07.nlink, f07.error) == (
        7, st.st_mtime_ns, st.st_mode, st.st_dev, st.st_ino, 1, ""
    )  # fmt: skip
    assert [e.index for e in entries] == list(range(len(entries)))
    (src / "a" / "new").write_bytes(b"n")
    adds.clear()
    again = await collect(FakeContext(tmp_path / "job"), [str(src)])
    assert by_rel(again)[b"src/a/new"].index == len(entries)
    assert b"src/a/new" in adds and b"src/a/f07" in adds  # a resumed walk: through `_add`


#: Names whose manifest text takes every branch of `_fastscan.walk_dir`'s JSON: quote,
#: backslash, the short and long escapes of controls, DEL, 2-, 3- and 4-byte UTF-8, and the
#: bytes UTF-8 cannot decode (truncated, overlong, an encoded surrogate, past U+10FFFF).
ODD_NAMES = [
    b'q"b\\s',
    b"nl\nt\tr\rb\bf\f\x01\x1f\x7f",
    "caf\u00e9-\u20ac-\U0001f600".encode(),
    b"bad-\xff\xfe-\xe2\x82-\xc0\xaf-\xed\xa0\x80-\xf4\x90\x80\x80-\xf0\x9f\x98",
    b"x" * 255,
]


def odd_tree(src: Path, seed: int = 22) -> None:
    """`build`, the `ODD_NAMES`, 120 random names of any byte but NUL and ``/``, hard links,
    a broken symlink and one to an ancestor (a loop when following)."""
    import random

    build(src)
    rnd = random.Random(seed)
    names = set(ODD_NAMES)
    alphabet = [b for b in range(1, 256) if b != ord("/")]
    while len(names) < len(ODD_NAMES) + 120:
        names.add(bytes(rnd.choice(alphabet) for _ in range(rnd.randint(1, 12))))
    base = os.fsencode(src / "b")
    for i, name in enumerate(sorted(names)):
        if name in (b".", b".."):
            continue
        with open(base + b"/" + name, "wb") as f:
            f.write(b"y" * i)
    os.link(src / "a" / "one.txt", src / "b" / "hard")
    os.symlink("nowhere", src / "broken")
    os.symlink("..", src / "a" / "up")


@pytest.mark.skipif(_hashing.fastscan is None, reason="the C extension _fastscan is not built")
@pytest.mark.parametrize("follow", [False, True], ids=["lstat", "follow"])
async def test_a_first_walk_in_c_writes_the_manifest_python_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, follow: bool
) -> None:
    """A first walk builds each directory's entries and formats their manifest rows in C
    (`_fastscan.walk_dir`): the same entries as the Python walk (`scan_dir`, `Entry`, the
    JSON encoder), and the manifest the same bytes (so either reads the other's, and a job
    paused by the one resumes with the other), whatever the names: non-UTF-8, controls,
    quotes, 255 bytes, random bytes; symlinks, a FIFO, hard links, a loop (following). Then
    with a filesystem encoding other than UTF-8: C leaves a directory of non-ASCII names to
    Python (no row of its own), the manifest still the same."""
    src = tmp_path / "src"
    src.mkdir()
    odd_tree(src)
    monkeypatch.setattr(_walk, "FIRST_SLICE_SECONDS", 60.0)  # lines by entries, not time
    monkeypatch.setattr(_walk, "SLICE_SECONDS", 60.0)
    in_python: list[int] = []  # the batches whose rows Python formats
    real_append = Manifest.append

    def append(self: Manifest, batch: list[Entry]) -> None:
        in_python.append(len(batch))
        real_append(self, batch)

    monkeypatch.setattr(Manifest, "append", append)
    walked = await collect(FakeContext(tmp_path / "c"), [str(src)], follow_symlinks=follow)
    assert in_python == [1]  # the root
    with monkeypatch.context() as python:
        python.setattr(_walk, "_walk_dir", None)
        python.setattr(_walk, "_scan", scan_dir)
        expected = await collect(FakeContext(tmp_path / "py"), [str(src)], follow_symlinks=follow)
    assert walked == expected
    assert len(walked) > 120 and {e.kind for e in walked} >= {"file", "dir", "symlink", "special"}
    if follow:
        assert by_rel(walked)[b"src/a/up"].error == "symlink loop"
    manifest = (tmp_path / "c" / "walk.manifest").read_bytes()
    assert manifest == (tmp_path / "py" / "walk.manifest").read_bytes()
    assert b"\\udcff" in manifest and b"\\ud83d\\ude00" in manifest  # (escaped as JSON does)
    monkeypatch.setattr(_walk, "_UTF8", False)
    in_python.clear()
    again = await collect(FakeContext(tmp_path / "c2"), [str(src)], follow_symlinks=follow)
    assert again == expected and len(in_python) == 2  # the root, the slice with b's names
    assert (tmp_path / "c2" / "walk.manifest").read_bytes() == manifest


@pytest.mark.skipif(_hashing.fastscan is None, reason="the C extension _fastscan is not built")
async def test_a_first_walk_makes_no_entry_or_manifest_row_in_python(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The walk's Python per entry (3.4 us an entry: an `Entry` built by its ``__init__``, a
    manifest row formatted, while the walk holds the GIL the first copies wait for) is gone
    from a first walk: its directories' entries are built and their rows formatted in C,
    the roots' alone in Python. A resumed walk (entries to skip) keeps the Python path."""
    src = built_with_files(tmp_path / "src", 200)
    inits: list[bytes] = []
    real_init = Entry.__init__

    def counted(self: Entry, *args: object, **kwargs: object) -> None:
        inits.append(args[3])  # type: ignore[arg-type]
        real_init(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Entry, "__init__", counted)
    lines: list[int] = []
    real_line = _walk._plain_line

    def plain_line(batch: list[Entry]) -> bytes | None:
        lines.append(len(batch))
        return real_line(batch)

    monkeypatch.setattr(_walk, "_plain_line", plain_line)
    entries = await collect(FakeContext(tmp_path / "job"), [str(src)])
    assert len(entries) == 210 and [e.index for e in entries] == list(range(210))
    assert inits == [b"src"] and lines == [1]  # the root's
    (src / "a" / "new").write_bytes(b"n")
    again = await collect(FakeContext(tmp_path / "job"), [str(src)])
    assert by_rel(again)[b"src/a/new"].index == 210 and b"src/a/new" in inits


#: A time in 2400 (ext4 keeps times to 2446): past 2262, its nanoseconds since 1970 do not
#: fit 64 bits.
PAST_2262_NS = ((2400 - 1970) * 31_556_952 + 123) * 1_000_000_000 + 456_789


@pytest.mark.skipif(_hashing.fastscan is None, reason="the C extension _fastscan is not built")
async def test_the_c_walk_keeps_mtimes_past_2262(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`_fastscan.walk_dir` and `scan_dir` computed an mtime past 2262 modulo 2^64 (a
    negative number, a date in 1800) into the walk's entries and manifest, and into the
    quick checks' listings: a move across filesystems gave such a directory that date. They
    now hold its exact nanoseconds, as the Python walk (the C walk leaves such a
    directory's rows to Python), and the manifest is the same bytes."""
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "f").write_bytes(b"x")
    (src / "g").write_bytes(b"y")
    os.symlink("g", src / "l")
    for path in (src / "d" / "f", src / "g", src / "l", src / "d"):
        os.utime(path, ns=(PAST_2262_NS, PAST_2262_NS), follow_symlinks=False)
    if os.stat(src / "g").st_mtime_ns != PAST_2262_NS:
        pytest.skip("this filesystem does not keep times past 2262")
    assert _hashing.fastscan is not None
    for where in (src, src / "d"):
        assert _hashing.fastscan.scan_dir(os.fsencode(where), False) == scan_dir(
            os.fsencode(where), False
        )
    walked = await collect(FakeContext(tmp_path / "c"), [str(src)])
    assert {e.rel: e.mtime_ns for e in walked if e.rel != b"src"} == dict.fromkeys(
        [b"src/d", b"src/g", b"src/l", b"src/d/f"], PAST_2262_NS
    )
    with monkeypatch.context() as python:
        python.setattr(_walk, "_walk_dir", None)
        python.setattr(_walk, "_scan", scan_dir)
        expected = await collect(FakeContext(tmp_path / "py"), [str(src)])
    assert walked == expected
    manifest = (tmp_path / "c" / "walk.manifest").read_bytes()
    assert manifest == (tmp_path / "py" / "walk.manifest").read_bytes()


@pytest.mark.skipif(_hashing.fastscan is None, reason="the C extension _fastscan is not built")
def test_the_c_walk_fills_entrys_fields_and_refuses_another_class() -> None:
    """`_fastscan.walk_dir` fills `Entry`'s slots in `ENTRY_FIELDS`' order, which must be
    its fields'; `entry_class` refuses a class whose fields are not slots of its own."""
    import dataclasses

    assert tuple(f.name for f in dataclasses.fields(Entry)) == _walk.ENTRY_FIELDS
    assert _hashing.fastscan is not None
    with pytest.raises(TypeError, match="slots"):
        _hashing.fastscan.entry_class(FakeContext, _walk.ENTRY_FIELDS)
    with pytest.raises(TypeError, match="not a slot"):
        _hashing.fastscan.entry_class(Entry, (*_walk.ENTRY_FIELDS[:-1], "other"))
    _hashing.fastscan.entry_class(Entry, _walk.ENTRY_FIELDS)  # (as the module left it)


@pytest.fixture
def overlay(tmp_path: Path) -> Iterator[Path]:
    """An overlayfs whose lower and upper layers are two tmpfs (different filesystems, no
    xino: its directory inode numbers are not persistent), mounted at ``tmp_path/merged``
    over a lower layer holding ``t/a/b/f``; skips where mounting is not permitted."""
    lower, upper, merged = tmp_path / "lower", tmp_path / "upper", tmp_path / "merged"
    mounted: list[Path] = []
    try:
        for layer in (lower, upper, merged):
            layer.mkdir()
        for layer in (lower, upper):
            if subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(layer)]).returncode:
                pytest.skip("cannot mount a tmpfs here")
            mounted.append(layer)
        (lower / "t" / "a" / "b").mkdir(parents=True)
        (lower / "t" / "a" / "b" / "f").write_text("f")
        (upper / "up").mkdir()
        (upper / "work").mkdir()
        options = f"lowerdir={lower},upperdir={upper / 'up'},workdir={upper / 'work'},xino=off"
        overlayfs = ["mount", "-t", "overlay", "overlay", "-o", options, str(merged)]
        if subprocess.run(overlayfs).returncode:
            pytest.skip("cannot mount an overlayfs here")
        mounted.append(merged)
        yield merged
    finally:
        for path in reversed(mounted):
            subprocess.run(["umount", "-l", str(path)])


def drop_inode_cache(path: Path, ino: int) -> None:
    """Evict unused inodes (root only), so ``path`` is looked up anew; skips unless its inode
    number changed (what an inode leaving the cache under memory pressure does on such an
    overlayfs)."""
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("2")
    except OSError:
        pytest.skip("cannot drop the inode cache here")
    if os.lstat(path).st_ino == ino:
        pytest.skip("the directory kept its inode number")


def test_a_directory_renumbered_by_an_overlayfs_is_still_walked_and_deleted_from(
    overlay: Path, scan_path: str
) -> None:
    """On an overlayfs of layers on different filesystems (and FUSE without use_ino, as
    sshfs), a directory gets a new inode number once its inode left the cache: the walk's
    check that a directory is the one its parent's listing saw (a830892) found most of a big
    tree "replaced" under memory pressure (a copy of 3,000 directories copied nothing). There
    the device is compared, not the inode number; a symlink swapped in is still refused."""
    t = os.fsencode(overlay / "t")
    a = next(st for name, st, _ in _walk._scan(t, False) if name == b"a")
    assert a is not None
    key = (a[3], a[4])
    drop_inode_cache(overlay / "t" / "a", a[4])
    assert [name for name, _, _ in _walk._scan(t + b"/a", False, key)] == [b"b"]
    assert remove_entry(t + b"/a/b/f", key_of(_walk._scan(t + b"/a", False, key), b"b"))
    (overlay / "t" / "c").mkdir()  # (in the upper layer: a lower one cannot be renamed)
    key = key_of(_walk._scan(t, False), b"c")
    os.rename(overlay / "t" / "c", overlay / "t" / "c.kept")
    os.symlink(overlay / "t" / "a", overlay / "t" / "c")
    with pytest.raises(OSError, match=_walk.REPLACED):
        _walk._scan(t + b"/c", False, key)


def test_a_delete_on_such_a_filesystem_never_follows_a_directory_swapped_above_the_parent(
    overlay: Path,
) -> None:
    """There a delete's parent check compares the device only, and the parent was opened
    by its path: a directory *above* it swapped for a symlink to another tree of the same
    filesystem (a container's root is an overlayfs) sent the unlink into that tree, whose
    file of the same name went (its parent there passed as "renumbered"). Where the inode
    number differs, the parent is now reached again from the root without following a
    symlink and must be the directory opened."""
    u = overlay / "u"  # (in the upper layer: a lower directory cannot be renamed)
    (u / "a" / "b").mkdir(parents=True)
    (u / "a" / "b" / "f").write_text("tree")
    (overlay / "other" / "b").mkdir(parents=True)
    (overlay / "other" / "b" / "f").write_text("OTHER")
    key = key_of(_walk._scan(os.fsencode(u / "a"), False), b"b")
    os.rename(u / "a", u / "a.kept")
    os.symlink(overlay / "other", u / "a")
    with pytest.raises(OSError, match="moved or replaced since it was listed"):
        remove_entry(os.fsencode(u / "a" / "b" / "f"), key, below=2)
    assert (overlay / "other" / "b" / "f").read_text() == "OTHER"
    # The tree as walked (renumbered or not) is still deleted from.
    os.remove(u / "a")
    os.rename(u / "a.kept", u / "a")
    assert remove_entry(os.fsencode(u / "a" / "b" / "f"), key, below=2)


def test_undo_and_a_moves_unlink_keep_comparing_inode_numbers_there(overlay: Path) -> None:
    """Outside the walk an inode number is compared as it is, even where it changes (not
    `_kernel.same_inode`): undo reaches its items by path, through directories nobody
    checks again, and a move unlinks a source only while it is the file it copied; there
    the number is the guard (against an ancestor swapped for a symlink to another tree of
    the same filesystem, and a file replaced by a rename with its size and mtime). A
    renumbered item is kept, never another taken."""
    a = overlay / "t" / "a"
    before = os.lstat(a)
    drop_inode_cache(a, before.st_ino)
    now = os.lstat(a)
    moved = ItemRecord("moved", "/elsewhere", str(a), written=Written(0, 0, before.st_ino))
    assert not _undo.unchanged(now, moved)
    assert not _undo._same_trashed(now, Written(0, before.st_mtime_ns, before.st_ino))
    with pytest.raises(SourceChangedError, match="replaced by another file"):
        check_same_file(a, before, now)


def test_a_proc_sys_directory_renumbered_is_still_walked(scan_path: str) -> None:
    """procfs numbers ``/proc/sys``' directories anew each time their inode is made: once the
    inode cache was dropped (by any process: another test here does), ``/proc/sys/kernel/
    random`` was "replaced since it was listed" and a copy of it copied nothing (the pseudo
    files test failed so, once, in a full run)."""
    kernel = b"/proc/sys/kernel"
    if not os.path.isdir(kernel + b"/random"):
        pytest.skip("no /proc/sys/kernel/random here")
    key = key_of(_walk._scan(kernel, False), b"random")
    for _ in range(5):  # (the kernel may keep it a while: a dentry still referenced)
        with contextlib.suppress(pytest.skip.Exception):
            drop_inode_cache(Path("/proc/sys/kernel/random"), key[1])
            break
        time.sleep(0.05)
    else:
        pytest.skip("/proc/sys/kernel/random kept its inode number")
    assert b"poolsize" in [name for name, _, _ in _walk._scan(kernel + b"/random", False, key)]


def key_of(listing: list[tuple[bytes, Stat | None, str]], name: bytes) -> tuple[int, int]:
    st = next(st for n, st, _ in listing if n == name)
    assert st is not None
    return (st[3], st[4])


def test_a_directory_renamed_into_its_place_is_not_walked(tmp_path: Path, scan_path: str) -> None:
    """Elsewhere (here tmp_path's filesystem) the inode number is compared still: another
    directory renamed into a listed one's place is not walked."""
    (tmp_path / "t" / "a").mkdir(parents=True)
    (tmp_path / "other" / "secret").mkdir(parents=True)
    t = os.fsencode(tmp_path / "t")
    key = key_of(_walk._scan(t, False), b"a")
    os.rename(tmp_path / "t" / "a", tmp_path / "a.kept")
    os.rename(tmp_path / "other", tmp_path / "t" / "a")
    with pytest.raises(OSError, match=_walk.REPLACED):
        _walk._scan(t + b"/a", False, key)


async def test_the_first_slice_is_short_so_work_starts_sooner(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The walk's first call lists for `FIRST_SLICE_SECONDS` only (its directories, then
    it yields): the first files reach the workers while the rest is walked. A first
    slice as long as every other (10 ms) held the first copies of 3,000 small files back
    11-13 ms. Later calls list for `SLICE_SECONDS` as before."""
    from parjobs.ops import _walk as walk_mod

    monkeypatch.setattr(walk_mod, "FIRST_SLICE_SECONDS", 0.0, raising=False)
    monkeypatch.setattr(walk_mod, "SLICE_SECONDS", 60.0)
    src = tmp_path / "src"
    for d in ("a", "b", "c"):
        (src / d).mkdir(parents=True)
        (src / d / "f").write_text(d)
    ctx = FakeContext(tmp_path / "job")
    batches = [
        [e.rel for e in batch]
        async for batch in walk_batches(ctx, [str(src)])  # type: ignore[arg-type]
    ]
    assert batches == [
        [b"src"],
        [b"src/a", b"src/b", b"src/c"],  # the first call: the root's listing, then out
        [b"src/a/f", b"src/b/f", b"src/c/f"],  # the next: up to 60 s, all the rest
    ]
