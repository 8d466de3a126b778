"""Tests for parjobs.ops._trash: freedesktop.org trash and symlink-safe deletion, on real files.

Every test trashes into a temporary ``XDG_DATA_HOME``; the real home is never touched.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from parjobs.ops import _trash
from parjobs.ops._trash import (
    TrashDir,
    TrashError,
    delete_path,
    find_topdir,
    home_trash_dir,
    read_trashinfo,
    select_trash_dir,
    trash_path,
)

NOW = datetime(2024, 5, 6, 7, 8, 9)
UID = os.getuid()


@pytest.fixture
def xdg(private_home: Path, tmp_path: Path) -> str:
    """A private XDG_DATA_HOME; HOME too (`private_home`, tests/ops/conftest.py), so a bug
    cannot reach the real trash."""
    return str(tmp_path / "xdg")


@pytest.fixture
def items(tmp_path: Path) -> Path:
    path = tmp_path / "items"
    path.mkdir()
    return path


def _mode(path: str | bytes | Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def _open_fds() -> int:
    """This process's open fds (a count: see `_fds_into` for a leak check)."""
    return len(os.listdir("/proc/self/fd"))


def _fds_into(root: Path) -> list[str]:
    """What this process holds open in ``root`` (a directory deleted since included): the
    leak check. Counting every fd was not one: a thread an earlier test left in this xdist
    worker may open or close one of its own meanwhile (a clean-clone CI run saw 67 after
    66, and the full suite at load 14 77 after 78)."""
    held = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # (closed meanwhile)
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target == str(root) or target.startswith(f"{root}/"):
                held.append(target)
    return held


# --- trash_path in the home trash ---------------------------------------------------------------


def test_trash_file(xdg: str, items: Path) -> None:
    item = items / "report.txt"
    item.write_text("hello")
    result = trash_path(str(item), now=NOW, xdg_data_home=xdg)

    trash = os.path.join(xdg, "Trash")
    assert result.trash_dir == trash
    assert result.trashed_path == os.path.join(trash, "files", "report.txt")
    assert result.info_path == os.path.join(trash, "info", "report.txt.trashinfo")
    assert not item.exists()
    assert Path(result.trashed_path).read_text() == "hello"
    assert Path(result.info_path).read_bytes() == (
        f"[Trash Info]\nPath={item}\nDeletionDate=2024-05-06T07:08:09\n".encode()
    )
    for directory in (trash, os.path.join(trash, "files"), os.path.join(trash, "info")):
        assert _mode(directory) == 0o700
    assert read_trashinfo(result.info_path) == (str(item), NOW)


def test_trash_pathlike_default_date_and_env(items: Path, xdg: str) -> None:
    item = items / "f"
    item.write_text("x")
    before = datetime.now().replace(microsecond=0)
    result = trash_path(item)  # $XDG_DATA_HOME from the fixture's environment
    after = datetime.now()
    assert result.trash_dir == os.path.join(os.environ["XDG_DATA_HOME"], "Trash")
    original, deleted = read_trashinfo(result.info_path)
    assert original == str(item)
    assert deleted is not None and before <= deleted <= after


def test_home_trash_dir_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_DATA_HOME", "relative/ignored")
    assert home_trash_dir() == os.fsencode(tmp_path / ".local/share/Trash")
    monkeypatch.delenv("XDG_DATA_HOME")
    assert home_trash_dir() == os.fsencode(tmp_path / ".local/share/Trash")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "d"))
    assert home_trash_dir() == os.fsencode(tmp_path / "d/Trash")
    assert home_trash_dir(b"/x") == b"/x/Trash"


def test_trash_directory_tree(xdg: str, items: Path) -> None:
    tree = items / "tree"
    (tree / "a" / "b").mkdir(parents=True)
    (tree / "a" / "b" / "deep.txt").write_text("deep")
    (tree / "top.txt").write_text("top")
    result = trash_path(str(tree), now=NOW, xdg_data_home=xdg)
    assert not tree.exists()
    moved = Path(result.trashed_path)
    assert (moved / "a" / "b" / "deep.txt").read_text() == "deep"
    assert (moved / "top.txt").read_text() == "top"
    assert read_trashinfo(result.info_path).original_path == str(tree)


def test_trash_symlink_trashes_the_link(xdg: str, items: Path) -> None:
    target = items / "target_dir"
    target.mkdir()
    (target / "keep.txt").write_text("keep")
    link = items / "link"
    link.symlink_to(target)
    result = trash_path(str(link) + "/", now=NOW, xdg_data_home=xdg)  # trailing slash ignored
    assert not os.path.lexists(link)
    assert os.path.islink(result.trashed_path)
    assert os.readlink(result.trashed_path) == str(target)
    assert (target / "keep.txt").read_text() == "keep"
    assert result.trashed_path.endswith("/files/link")


def test_trash_broken_symlink(xdg: str, items: Path) -> None:
    link = items / "dangling"
    link.symlink_to(items / "nowhere")
    result = trash_path(str(link), now=NOW, xdg_data_home=xdg)
    assert not os.path.lexists(link)
    assert os.readlink(result.trashed_path) == str(items / "nowhere")


def test_trash_non_utf8_names(xdg: str, items: Path) -> None:
    item = os.path.join(os.fsencode(items), b"caf\xe9 100%.txt")
    with open(item, "wb") as f:
        f.write(b"latin-1")
    result = trash_path(item, now=NOW, xdg_data_home=os.fsencode(xdg))
    assert isinstance(result.trashed_path, bytes)
    assert result.trashed_path.endswith(b"/files/caf\xe9 100%.txt")
    with open(result.info_path, "rb") as f:
        assert b"Path=" + os.fsencode(items) + b"/caf%E9%20100%25.txt\n" in f.read()
    original, _ = read_trashinfo(result.info_path)
    assert original == item
    # The same name as str (surrogate escapes) round-trips too.
    again = os.path.join(os.fsencode(items), b"\xff\xfe")
    open(again, "wb").close()
    result_str = trash_path(os.fsdecode(again), now=NOW, xdg_data_home=xdg)
    assert read_trashinfo(result_str.info_path).original_path == os.fsdecode(again)
    assert os.fsencode(result_str.trashed_path).endswith(b"/files/\xff\xfe")


def test_trash_name_collisions(xdg: str, items: Path) -> None:
    originals = []
    for sub in ("one", "two", "three"):
        (items / sub).mkdir()
        (items / sub / "same.txt").write_text(sub)
        originals.append(str(items / sub / "same.txt"))
    results = [trash_path(p, now=NOW, xdg_data_home=xdg) for p in originals]
    names = [os.path.basename(r.trashed_path) for r in results]
    assert names == ["same.txt", "same.txt.2", "same.txt.3"]
    assert [os.path.basename(r.info_path) for r in results] == [
        "same.txt.trashinfo",
        "same.txt.2.trashinfo",
        "same.txt.3.trashinfo",
    ]
    for result, original, sub in zip(results, originals, ("one", "two", "three"), strict=True):
        assert read_trashinfo(result.info_path).original_path == original
        assert Path(result.trashed_path).read_text() == sub


def test_trash_never_overwrites_an_orphan_in_files(xdg: str, items: Path) -> None:
    files = Path(xdg, "Trash", "files")
    files.mkdir(parents=True)
    (files / "x").write_text("orphan")
    (items / "x").write_text("new")
    result = trash_path(str(items / "x"), now=NOW, xdg_data_home=xdg)
    assert result.trashed_path.endswith("/files/x.2")
    assert (files / "x").read_text() == "orphan"
    assert not Path(xdg, "Trash", "info", "x.trashinfo").exists()


def test_trash_long_name_is_shortened(xdg: str, items: Path) -> None:
    name = "é" * 125  # 250 bytes in UTF-8
    for sub in ("a", "b"):
        (items / sub).mkdir()
        (items / sub / name).write_text(sub)
    first = trash_path(str(items / "a" / name), now=NOW, xdg_data_home=xdg)
    second = trash_path(str(items / "b" / name), now=NOW, xdg_data_home=xdg)
    for result in (first, second):
        info_name = os.path.basename(result.info_path)
        assert len(os.fsencode(info_name)) <= 255
        info_name.encode("utf-8")  # still valid UTF-8: cut at a character boundary
    assert os.path.basename(first.trashed_path) == "é" * 122
    assert os.path.basename(second.trashed_path) == "é" * 121 + ".2"
    assert read_trashinfo(second.info_path).original_path == str(items / "b" / name)


def test_trash_records_real_parent_and_aware_date(xdg: str, items: Path, tmp_path: Path) -> None:
    (items / "real").mkdir()
    (items / "real" / "f").write_text("x")
    (tmp_path / "alias").symlink_to(items / "real")
    aware = datetime(2024, 1, 1, 12, 0, 0, tzinfo=timezone(timedelta(hours=5)))
    result = trash_path(str(tmp_path / "alias" / "f"), now=aware, xdg_data_home=xdg)
    original, deleted = read_trashinfo(result.info_path)
    assert original == str(items / "real" / "f")
    assert deleted == aware.astimezone().replace(tzinfo=None)
    assert (tmp_path / "alias").is_symlink()


def test_trash_relative_path(xdg: str, items: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(items)
    Path("rel").write_text("x")
    result = trash_path("rel", now=NOW, xdg_data_home=xdg)
    assert read_trashinfo(result.info_path).original_path == str(items / "rel")


def test_trash_refuses_what_is_in_the_trash_already(xdg: str, items: Path, tmp_path: Path) -> None:
    """A trashed file, a file inside a trashed directory, an info file, reached directly or
    through a symlink to the trash: each is refused, left where it is, no info file added
    (it was renamed within the trash, its first .trashinfo left behind naming nothing)."""
    (items / "f").write_text("f")
    (items / "d").mkdir()
    (items / "d" / "inner").write_text("i")
    trashed = [trash_path(str(items / n), now=NOW, xdg_data_home=xdg) for n in ("f", "d")]
    trash = Path(xdg, "Trash")
    (tmp_path / "to-trash").symlink_to(trash)
    infos = sorted(os.listdir(trash / "info"))
    for inside in (
        trashed[0].trashed_path,
        os.path.join(trashed[1].trashed_path, "inner"),
        trashed[0].info_path,
        str(tmp_path / "to-trash" / "files" / "f"),
    ):
        with pytest.raises(TrashError, match="in the trash already"):
            trash_path(inside, now=NOW, xdg_data_home=xdg)
        assert os.path.lexists(inside)
    assert sorted(os.listdir(trash / "info")) == infos
    assert sorted(os.listdir(trash / "files")) == ["d", "f"]


def test_trash_bad_paths(xdg: str, items: Path) -> None:
    for bad in (".", "..", "/", str(items) + "/.."):
        with pytest.raises(ValueError, match="does not name"):
            trash_path(bad, xdg_data_home=xdg)
    with pytest.raises(FileNotFoundError):
        trash_path(str(items / "missing"), xdg_data_home=xdg)
    info = Path(xdg, "Trash", "info")
    assert not info.exists() or not list(info.iterdir())


# --- per-volume trash selection -----------------------------------------------------------------


@pytest.fixture
def topdir(tmp_path: Path) -> Path:
    path = tmp_path / "volume"
    path.mkdir()
    return path


def test_select_same_device_is_home_trash(tmp_path: Path, topdir: Path) -> None:
    home = tmp_path / "xdg" / "Trash"
    chosen = select_trash_dir(5, 5, topdir, home_trash=home)
    assert chosen == TrashDir(os.fsencode(home), None)
    assert _mode(home / "files") == _mode(home / "info") == _mode(home) == 0o700
    assert list(topdir.iterdir()) == []


def test_select_creates_private_volume_trash(tmp_path: Path, topdir: Path) -> None:
    chosen = select_trash_dir(1, 2, str(topdir), home_trash=tmp_path / "home")
    private = topdir / f".Trash-{UID}"
    assert chosen == TrashDir(os.fsencode(private), os.fsencode(topdir))
    for path in (private, private / "files", private / "info"):
        assert _mode(path) == 0o700
    assert not (tmp_path / "home").exists()
    assert select_trash_dir(1, 2, topdir, home_trash=tmp_path / "home") == chosen  # reused


def test_select_uses_valid_shared_trash(tmp_path: Path, topdir: Path) -> None:
    shared = topdir / ".Trash"
    shared.mkdir()
    shared.chmod(0o1777)
    chosen = select_trash_dir(1, 2, topdir, home_trash=tmp_path / "home")
    assert chosen == TrashDir(os.fsencode(shared / str(UID)), os.fsencode(topdir))
    assert _mode(shared / str(UID)) == 0o700
    assert (shared / str(UID) / "files").is_dir() and (shared / str(UID) / "info").is_dir()
    assert not (topdir / f".Trash-{UID}").exists()


def test_select_rejects_shared_trash_without_sticky_bit(tmp_path: Path, topdir: Path) -> None:
    (topdir / ".Trash").mkdir(mode=0o777)
    (topdir / ".Trash").chmod(0o777)
    chosen = select_trash_dir(1, 2, topdir, home_trash=tmp_path / "home")
    assert chosen.path == os.fsencode(topdir / f".Trash-{UID}")
    assert list((topdir / ".Trash").iterdir()) == []


def test_select_rejects_symlinked_shared_trash(tmp_path: Path, topdir: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    elsewhere.chmod(0o1777)
    (topdir / ".Trash").symlink_to(elsewhere)
    chosen = select_trash_dir(1, 2, topdir, home_trash=tmp_path / "home")
    assert chosen.path == os.fsencode(topdir / f".Trash-{UID}")
    assert list(elsewhere.iterdir()) == []


def test_select_rejects_planted_private_trash(tmp_path: Path, topdir: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (topdir / f".Trash-{UID}").symlink_to(elsewhere)
    with pytest.raises(TrashError, match="refusing to use it as a trash"):
        select_trash_dir(1, 2, topdir, home_trash=tmp_path / "home")
    assert list(elsewhere.iterdir()) == []
    # A directory owned by another uid is refused too.
    other = UID + 4242
    (topdir / f".Trash-{other}").mkdir()
    with pytest.raises(TrashError, match=f"owned by uid {other}"):
        select_trash_dir(1, 2, topdir, home_trash=tmp_path / "home", uid=other)


def test_select_requires_topdir_across_devices(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="topdir is required"):
        select_trash_dir(1, 2, None, home_trash=tmp_path / "home")


def test_find_topdir(tmp_path: Path) -> None:
    top = find_topdir(tmp_path)
    dev = os.lstat(tmp_path).st_dev
    assert os.lstat(top).st_dev == dev
    assert top == b"/" or os.lstat(os.path.dirname(top)).st_dev != dev
    assert os.fsencode(tmp_path).startswith(top)


def _other_filesystem_dir() -> Iterator[Path]:
    """Yield a fresh directory on a filesystem other than the temp dir's, if one is writable."""
    tmp_dev = os.stat(tempfile.gettempdir()).st_dev
    for candidate in ("/dev/shm", f"/run/user/{UID}", "/run"):
        try:
            if os.stat(candidate).st_dev == tmp_dev:
                continue
            path = tempfile.mkdtemp(prefix="parjobs-trash-test-", dir=candidate)
        except OSError:
            continue
        try:
            yield Path(path)
        finally:
            delete_path(path)
        return
    pytest.skip("no writable directory on a second filesystem")


@pytest.fixture
def other_fs() -> Iterator[Path]:
    yield from _other_filesystem_dir()


def test_trash_into_per_volume_trash(
    xdg: str, other_fs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Pretend other_fs is the volume's top directory, so nothing is created at the real one.
    monkeypatch.setattr(_trash, "find_topdir", lambda _path: os.fsencode(other_fs))
    (other_fs / "docs").mkdir()
    item = other_fs / "docs" / "f.txt"
    item.write_text("on another volume")
    result = trash_path(str(item), now=NOW, xdg_data_home=xdg)
    private = other_fs / f".Trash-{UID}"
    assert result.trash_dir == str(private)
    assert result.trashed_path == str(private / "files" / "f.txt")
    assert Path(result.info_path).read_text() == (
        "[Trash Info]\nPath=docs/f.txt\nDeletionDate=2024-05-06T07:08:09\n"
    )
    assert read_trashinfo(result.info_path) == (str(item), NOW)
    assert not Path(xdg, "Trash").exists()  # home trash not even created


def test_trash_refuses_to_copy_across_filesystems(
    xdg: str, other_fs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = Path(xdg, "Trash")

    def home_only(*_args: object, **_kwargs: object) -> TrashDir:
        home.mkdir(parents=True, exist_ok=True)
        (home / "files").mkdir(exist_ok=True)
        (home / "info").mkdir(exist_ok=True)
        return TrashDir(os.fsencode(home), None)

    monkeypatch.setattr(_trash, "select_trash_dir", home_only)
    item = other_fs / "stay.txt"
    item.write_text("stay")
    with pytest.raises(TrashError, match="without copying") as info:
        trash_path(str(item), now=NOW, xdg_data_home=xdg)
    assert info.value.filename == str(item)
    assert item.read_text() == "stay"
    assert list((home / "info").iterdir()) == []
    assert list((home / "files").iterdir()) == []


# --- read_trashinfo ---------------------------------------------------------------------------


def test_read_trashinfo_relative_paths_and_tolerance(tmp_path: Path) -> None:
    private_info = tmp_path / "vol" / ".Trash-1000" / "info"
    shared_info = tmp_path / "vol" / ".Trash" / "1000" / "info"
    for info_dir in (private_info, shared_info):
        info_dir.mkdir(parents=True)
        (info_dir / "a.trashinfo").write_text(
            "# comment\n[Other]\nPath=/wrong\n\n[Trash Info]\n"
            "Path=dir/a%20b\nDeletionDate=2020-02-03T04:05:06\nExtra=1\n"
        )
        assert read_trashinfo(str(info_dir / "a.trashinfo")) == (
            str(tmp_path / "vol" / "dir" / "a b"),
            datetime(2020, 2, 3, 4, 5, 6),
        )
    (private_info / "nodate.trashinfo").write_text("[Trash Info]\nPath=/x\nDeletionDate=soon\n")
    assert read_trashinfo(private_info / "nodate.trashinfo") == ("/x", None)
    (private_info / "bad.trashinfo").write_text("[Trash Info]\nDeletionDate=2020-01-01T00:00:00\n")
    with pytest.raises(ValueError, match="no Path key"):
        read_trashinfo(private_info / "bad.trashinfo")


# --- delete_path --------------------------------------------------------------------------------


def _build_tree(root: Path, outside: Path) -> int:
    """Build a nested tree with links pointing outside it; return its entry count."""
    (root / "a" / "b" / "c").mkdir(parents=True)
    (root / "empty").mkdir()
    for i in range(5):
        (root / f"f{i}").write_text("x")
        (root / "a" / "b" / f"g{i}").write_text("y")
    (root / "a" / "b" / "c" / "deep").write_text("z")
    (root / "a" / "link_to_outside").symlink_to(outside)
    (root / "a" / "b" / "link_to_outside_file").symlink_to(outside / "precious.txt")
    (root / "dangling").symlink_to(root / "missing")
    os.mkfifo(root / "fifo")
    with open(os.path.join(os.fsencode(root), b"\xff\xfe-not-utf8"), "wb"):
        pass
    # root, a, a/b, a/b/c, empty; 5 f; 5 g; deep; 3 links; fifo; non-utf8
    return 5 + 5 + 5 + 1 + 3 + 1 + 1


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    path = tmp_path / "outside"
    path.mkdir()
    (path / "precious.txt").write_text("precious")
    return path


def test_delete_tree_never_follows_symlinks(tmp_path: Path, outside: Path) -> None:
    root = tmp_path / "root"
    expected = _build_tree(root, outside)
    checks: list[None] = []
    reported: list[int] = []
    count = delete_path(str(root), check=lambda: checks.append(None), on_removed=reported.append)
    assert count == expected
    assert sum(reported) == expected and len(checks) == expected
    assert not os.path.lexists(root)
    assert (outside / "precious.txt").read_text() == "precious"
    assert _fds_into(root) == []  # nothing left open


def test_delete_single_entries(tmp_path: Path, outside: Path) -> None:
    f = tmp_path / "f"
    f.write_text("x")
    assert delete_path(f) == 1 and not f.exists()
    link = tmp_path / "link"
    link.symlink_to(outside)
    assert delete_path(str(link) + "/") == 1  # the link, not the directory it points to
    assert not os.path.lexists(link)
    assert (outside / "precious.txt").exists()
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nowhere")
    assert delete_path(os.fsencode(dangling)) == 1
    empty = tmp_path / "empty"
    empty.mkdir()
    assert delete_path(empty) == 1 and not empty.exists()


def test_delete_bytes_path_with_non_utf8_names(tmp_path: Path) -> None:
    root = os.path.join(os.fsencode(tmp_path), b"d\xe9")
    os.makedirs(os.path.join(root, b"\xff", b"\xfe"))
    open(os.path.join(root, b"\xff", b"\xfe", b"\x80"), "wb").close()
    assert delete_path(root) == 4
    assert not os.path.lexists(root)


def test_delete_check_raising_stops_midway(tmp_path: Path, outside: Path) -> None:
    root = tmp_path / "root"
    expected = _build_tree(root, outside)
    calls = 0

    class Stop(Exception):
        pass

    def check() -> None:
        nonlocal calls
        calls += 1
        if calls == 8:
            raise Stop

    with pytest.raises(Stop):
        delete_path(root, check=check)
    assert _fds_into(root) == []  # nothing left open
    assert root.is_dir()
    remaining = sum(len(dirs) + len(files) for _, dirs, files in os.walk(root)) + 1
    assert remaining == expected - 7
    assert (outside / "precious.txt").read_text() == "precious"
    assert delete_path(root) == remaining  # finishing later works


def test_delete_deep_tree_without_recursion(tmp_path: Path) -> None:
    path = os.fsencode(tmp_path / "deep")
    os.mkdir(path)
    fd = os.open(path, os.O_RDONLY)
    try:  # build 1050 levels relative to a descriptor (absolute paths would be too long)
        for _ in range(1050):
            os.mkdir("d", dir_fd=fd)
            child = os.open("d", os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = child
    finally:
        os.close(fd)
    baseline = _open_fds()
    peak = 0

    def check() -> None:  # first called before the deepest rmdir, when the most are open
        nonlocal peak
        if not peak:
            peak = _open_fds() - baseline

    assert delete_path(path, check=check) == 1051
    assert 1050 <= peak <= 1051 + 64 + 2  # one descriptor per level, listings only near the leaf


def test_delete_relists_when_entries_appear(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "a").write_text("a")
    created: list[str] = []

    def on_removed(_: int) -> None:
        if not created:
            created.append("late")
            (root / "late").write_text("late")

    assert delete_path(root, on_removed=on_removed) == 3
    assert not root.exists()


def test_delete_refuses_dot_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("keep").write_text("x")
    for bad in (".", "..", "/", "./", "sub/.."):
        with pytest.raises(ValueError, match="does not name"):
            delete_path(bad)
    assert Path("keep").exists()
    with pytest.raises(FileNotFoundError):
        delete_path(tmp_path / "missing")


def test_recover_trash_removes_every_own_temporary_whatever_the_listing_order(
    xdg: str, items: Path
) -> None:
    """Info files of the job's items and its info temporaries, interleaved in one listing:
    every temporary carrying the job's token goes (a regression: the loop once rebound the
    token to an item path after the first info file, so later temporaries stayed)."""
    from parjobs.ops._names import new_token
    from parjobs.ops._partials import tmp_name

    token = new_token()
    since = datetime.now().timestamp() - 1
    paths = []
    for i in range(12):
        item = items / f"f{i}"
        item.write_bytes(b"x")
        trash_path(str(item), xdg_data_home=xdg, owner=token)
        paths.append(os.fsencode(item))
    info_dir = os.path.join(home_trash_dir(xdg), b"info")
    ours = [os.path.join(info_dir, tmp_name(b"trashinfo", token)) for _ in range(12)]
    theirs = os.path.join(info_dir, tmp_name(b"trashinfo", new_token()))
    for path in [*ours, theirs]:
        with open(path, "wb") as f:
            f.write(b"partial")
    found = _trash.recover_trash(paths, since=since, owner=token, xdg_data_home=xdg)
    assert sorted(found) == sorted(paths)
    assert [p for p in ours if os.path.lexists(p)] == []
    assert os.path.exists(theirs)  # another job's temporary is never ours to remove
