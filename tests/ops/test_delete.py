"""DeleteJob through a real manager: trees, symlinks, trash, crash and resume, bad input."""

from __future__ import annotations

import datetime
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import trio

import parjobs
from parjobs import JobStatus
from parjobs.ops import _delete as delete_mod
from parjobs.ops import _walk as walk_mod
from parjobs.ops._delete import DeleteJob, remove_entry
from parjobs.ops._errors import MOUNT_POINT
from parjobs.ops._fs import MountsBelow
from parjobs.ops._trash import read_trashinfo, trash_path


@pytest.fixture(autouse=True)
def private_home(tmp_path, monkeypatch):
    """HOME and XDG_DATA_HOME inside tmp_path: nothing can reach the real home or trash."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    return home


def _tree(root, *, dirs: int = 3, files: int = 4) -> int:
    """A nested tree; returns the number of entries in it (root included)."""
    count = 1
    for d in range(dirs):
        sub = root / f"d{d}" / "inner"
        sub.mkdir(parents=True)
        count += 2
        for f in range(files):
            (sub / f"f{f}").write_bytes(b"x" * f)
            (root / f"d{d}" / f"g{f}").write_bytes(b"y")
            count += 2
    return count


def _count(root) -> int:
    """Entries below ``root`` (symlinks not followed)."""
    return sum(len(ds) + len(fs) for _, ds, fs in os.walk(root))


async def test_delete_tree_never_follows_symlinks(store_path, tmp_path):
    root = tmp_path / "t"
    root.mkdir()
    entries = _tree(root)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("precious")
    os.symlink(outside, root / "d0" / "inner" / "dirlink")
    os.symlink(outside / "keep.txt", root / "filelink")
    os.mkfifo(root / "d1" / "fifo")
    single = tmp_path / "single.txt"
    single.write_text("bye")
    async with parjobs.open_manager(store_path) as manager:
        handle = await manager.submit(DeleteJob(paths=[str(root), str(single)]))
        result = await handle.result()
        info = await handle.info()
    assert not root.exists() and not single.exists()
    assert (outside / "keep.txt").read_text() == "precious"
    assert result == {
        "removed": entries + 3 + 1,
        "trashed": 0,
        "failed": 0,
        "skipped": 0,
        "trashed_items": [],
    }
    assert info.status is JobStatus.COMPLETED
    assert info.progress.items_done == entries + 4


async def test_delete_never_deletes_through_a_mount_point(store_path, tmp_path, bind_mount):
    """A directory bind-mounted inside the tree (a home directory in a chroot, on the same
    filesystem): its files are another place's, never deleted through the mount (they were:
    the job deleted them, then failed on the busy mount point); the mount point fails with
    the reason, what is below it is skipped, the rest of the tree goes."""
    home, root = tmp_path / "home", tmp_path / "chroot"
    (home / "docs").mkdir(parents=True)
    (home / "docs" / "thesis.tex").write_text("years of work")
    (root / "home").mkdir(parents=True)
    (root / "etc").mkdir()
    (root / "etc" / "passwd").write_text("x")
    bind_mount(home, root / "home")
    async with parjobs.open_manager(store_path) as manager:
        handle = await manager.submit(DeleteJob(paths=[str(root)]))
        assert await handle.wait() is JobStatus.COMPLETED_WITH_ERRORS
        errors = {e.label: e.message for e in await manager.errors(handle.id)}
        result = (await handle.info()).result
    assert (home / "docs" / "thesis.tex").read_text() == "years of work"
    assert MOUNT_POINT in errors[str(root / "home")]
    assert "not empty" in errors[str(root)]
    assert sorted(os.listdir(root)) == ["home"]  # the rest of the tree is gone
    assert (result["removed"], result["failed"], result["skipped"]) == (2, 2, 2)


async def test_delete_mount_points_with_awkward_names(store_path, tmp_path, bind_mount):
    """Mount points whose names hold a space, a newline (both escaped in mountinfo) or a
    carriage return (written raw there: a line split on it read a mount point ``cr`` that
    is not one, and missed the real one, whose files were deleted through it)."""
    home, root = tmp_path / "home", tmp_path / "chroot"
    home.mkdir(exist_ok=True)
    (home / "keep").write_text("mine")
    names = ["a b", "nl\nx", "cr\rx"]
    for name in names:
        (root / name).mkdir(parents=True)
        bind_mount(home, root / name)
    (root / "cr").mkdir()
    (root / "cr" / "gone").write_text("x")
    async with parjobs.open_manager(store_path) as manager:
        handle = await manager.submit(DeleteJob(paths=[str(root)]))
        assert await handle.wait() is JobStatus.COMPLETED_WITH_ERRORS
        errors = {e.label: e.message for e in await manager.errors(handle.id)}
    assert (home / "keep").read_text() == "mine"
    for name in names:
        assert MOUNT_POINT in errors[str(root / name)]
    assert sorted(os.listdir(root)) == sorted(names)  # "cr" is no mount point: deleted


async def test_delete_never_follows_a_directory_swapped_for_a_symlink_mid_walk(
    store_path, tmp_path, monkeypatch, scan_path
):
    """A directory of the tree replaced by a symlink to another tree after its parent was
    listed, before it was itself (another user racing ``rm -r`` by root, as in fileutils'
    old bug): the walk listed the other tree as if it were in this one, and its files one
    level down, recorded with the other tree's directory identities, were deleted. The walk
    now lists a directory only while it is the one its parent's listing saw."""
    root, outside = tmp_path / "t", tmp_path / "outside"
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "sub" / "deeper" / "x").write_text("tree")
    (outside / "deeper").mkdir(parents=True)
    (outside / "deeper" / "precious").write_text("precious")
    swapped = os.fsencode(root / "sub")

    def before(real):
        def swapping(path, follow, *rest):
            if path == swapped:  # between the listing of t and that of t/sub
                os.rename(path, path + b".kept")
                os.symlink(outside, path)
            return real(path, follow, *rest)

        return swapping

    monkeypatch.setattr(walk_mod, "_scan", before(walk_mod._scan))
    if walk_mod._walk_dir is not None:  # a first walk lists in `_fastscan.walk_dir`
        monkeypatch.setattr(walk_mod, "_walk_dir", before(walk_mod._walk_dir))
    async with parjobs.open_manager(store_path) as manager:
        handle = await manager.submit(DeleteJob(paths=[str(root)]))
        assert await handle.wait() is JobStatus.COMPLETED_WITH_ERRORS
        errors = [(e.label, e.message) for e in await manager.errors(handle.id)]
    assert (outside / "deeper" / "precious").read_text() == "precious"
    assert any(label == str(root / "sub") and walk_mod.REPLACED in m for label, m in errors)
    assert (root / "sub.kept" / "deeper" / "x").read_text() == "tree"  # not walked: kept


def test_mount_point_below_a_root_in_the_filesystem_root():
    """A root directly in ``/`` (base ``/``): its mount points are found (the path was
    built as ``//srv/...`` and matched none)."""
    mounts = MountsBelow(["/srv"])
    mounts.points = frozenset({b"/srv/home"})
    assert mounts.meet(0, b"srv/home") == "point"
    assert mounts.meet(0, b"srv/home/x") == "inside"
    assert mounts.meet(0, b"srv/other") is None


def test_removal_refuses_a_parent_swapped_for_another_directory(tmp_path):
    tree = tmp_path / "t"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "victim").write_text("v")
    st = os.lstat(tree / "sub")
    listed = (st.st_dev, st.st_ino)
    # after the walk, sub is replaced by a symlink to a directory holding a same-named file
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "victim").write_text("must survive")
    os.rename(tree / "sub", tmp_path / "moved-away")
    os.symlink(elsewhere, tree / "sub")
    path = os.fsencode(tree / "sub" / "victim")
    with pytest.raises(OSError, match="moved or replaced"):
        remove_entry(path, listed)
    # a real directory in its place, not the one listed: refused too
    os.unlink(tree / "sub")
    (tree / "sub").mkdir()
    (tree / "sub" / "victim").write_text("new")
    with pytest.raises(OSError, match="moved or replaced"):
        remove_entry(path, listed)
    assert (elsewhere / "victim").read_text() == "must survive"
    assert remove_entry(os.fsencode(tree / "gone"), None) is False


async def test_trash_moves_each_path_to_the_xdg_trash(store_path, tmp_path):
    root = tmp_path / "t"
    root.mkdir()
    _tree(root)
    single = tmp_path / "note.txt"
    single.write_text("note")
    before = datetime.datetime.now().replace(microsecond=0)
    async with parjobs.open_manager(store_path) as manager:
        handle = await manager.submit(DeleteJob(paths=[str(root), str(single)], trash=True))
        result = await handle.result()
    trash = tmp_path / "xdg" / "Trash"
    assert not root.exists() and not single.exists()
    assert (result["trashed"], result["removed"], result["failed"]) == (2, 0, 0)
    assert result["trashed_items"] == [
        [str(root), str(trash / "files" / "t")],
        [str(single), str(trash / "files" / "note.txt")],
    ]
    assert (trash / "files" / "t" / "d2" / "inner" / "f3").read_bytes() == b"xxx"
    for original, name in ((root, "t"), (single, "note.txt")):
        info = read_trashinfo(str(trash / "info" / f"{name}.trashinfo"))
        assert info.original_path == str(original)
        assert info.deletion_date is not None
        assert before <= info.deletion_date <= datetime.datetime.now()


async def test_trash_pause_and_resume_keeps_the_pairs_of_the_first_run(
    store_path, tmp_path, monkeypatch
):
    items = []
    for i in range(20):
        p = tmp_path / f"item{i:02}"
        p.write_text(str(i))
        items.append(str(p))
    real = trash_path

    def slow_trash(path, **kwargs):
        time.sleep(0.02)
        return real(path, **kwargs)

    monkeypatch.setattr(delete_mod, "trash_path", slow_trash)
    async with parjobs.open_manager(store_path, workers=1) as manager:
        handle = await manager.submit(DeleteJob(paths=items, trash=True))
        with trio.fail_after(10):
            while sum(os.path.exists(p) for p in items) > 15:
                await trio.sleep(0.005)
        await manager.pause(handle.id)
        assert await handle.wait() is JobStatus.PAUSED
        assert 0 < sum(os.path.exists(p) for p in items) < 20
        await manager.resume(handle.id)  # validate() again: some paths are gone, that is fine
        result = await handle.result()
    assert not any(os.path.exists(p) for p in items)
    assert result["trashed"] == 20 and [o for o, _ in result["trashed_items"]] == items


async def test_kill_mid_delete_then_resume_finishes(store_path, tmp_path):
    root = tmp_path / "t"
    root.mkdir()
    entries = _tree(root, dirs=10, files=30)
    code = textwrap.dedent(
        f"""
        import time, trio, parjobs
        from parjobs.ops import _delete as delete
        real = delete.remove_entry
        def slow(*args, **kwargs):
            time.sleep(0.003)
            return real(*args, **kwargs)
        delete.remove_entry = slow
        async def main():
            async with parjobs.open_manager({store_path!r}, workers=2) as m:
                h = await m.submit(delete.DeleteJob(paths=[{str(root)!r}]))
                await h.wait()
        trio.run(main)
        """
    )
    child = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE)
    try:
        with trio.fail_after(20):
            while _count(root) > entries - 300:
                assert child.poll() is None, child.stderr.read() if child.stderr else ""
                await trio.sleep(0.01)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait()
        if child.stderr:
            child.stderr.close()
    left = _count(root)
    assert 0 < left < entries - 1
    async with parjobs.open_manager(store_path) as manager:
        (info,) = await manager.list_jobs()
        assert info.status is JobStatus.INTERRUPTED
        assert 0 < info.done_items <= entries - 1 - left
        handle = await manager.resume(info.id)
        result = await handle.result()
        final = await handle.info()
    assert not root.exists()
    assert result["removed"] == entries and result["failed"] == 0
    assert final.status is JobStatus.COMPLETED


@pytest.mark.parametrize(
    ("paths", "match"),
    [
        ([], "no paths"),
        (["{tmp}/missing"], "does not exist"),
        (["/"], "root directory"),
        (["//"], "root directory"),
        (["t/../../x"], r"contains '\.\.'"),
        (["../t"], r"contains '\.\.'"),
        (["."], "current directory"),
        (["./"], "current directory"),
        (["{tmp}/t/d0/.."], r"contains '\.\.'"),
        (["{tmp}/t/d0/inner/../.."], r"contains '\.\.'"),
        (["{tmp}/t/d0/inner/../../"], r"contains '\.\.'"),
        (["{tmp}/t/."], r"ends in '\.'"),
        (["{tmp}/t/./"], r"ends in '\.'"),
        (["{tmp}/home/.."], r"contains '\.\.'"),
        (["{tmp}/home"], "the home directory"),
        (["{tmp}/home/"], "the home directory"),
        (["{tmp}"], "ancestor of the home directory"),
        (["{tmp}/t", ""], "invalid path"),
    ],
)
async def test_bad_paths_are_refused_and_nothing_is_touched(store_path, tmp_path, paths, match):
    root = tmp_path / "t"
    root.mkdir()
    entries = _tree(root)
    paths = [p.format(tmp=tmp_path) for p in paths]
    async with parjobs.open_manager(store_path) as manager:
        for trash in (False, True):
            with pytest.raises(parjobs.JobSpecError, match=match):
                await manager.submit(DeleteJob(paths=paths, trash=trash))
        assert await manager.list_jobs() == []
    assert _count(root) == entries - 1


def test_existence_is_checked_on_submit_not_when_a_stored_job_loads(tmp_path):
    missing = str(tmp_path / "gone")
    with pytest.raises(parjobs.JobSpecError, match="does not exist"):
        DeleteJob(paths=[missing]).validate()
    job = DeleteJob.from_spec({"paths": [missing]})  # a resumed job: already deleted
    job.validate()
    with pytest.raises(parjobs.JobSpecError, match="root directory"):
        DeleteJob.from_spec({"paths": ["/"]})


@pytest.mark.parametrize("allowed", [False, True])
async def test_the_current_directory_and_its_ancestors_are_refused_unless_allowed(
    store_path, tmp_path, monkeypatch, allowed
):
    root = tmp_path / "t"
    root.mkdir()
    entries = _tree(root)
    inner = root / "d1" / "inner"
    monkeypatch.chdir(inner)
    async with parjobs.open_manager(store_path) as manager:
        for path in (inner, root / "d1", root):
            with pytest.raises(parjobs.JobSpecError, match=r"current directory.*force-ancestor"):
                await manager.submit(DeleteJob(paths=[str(path)]))
        assert await manager.list_jobs() == []
        assert _count(root) == entries - 1
        job = DeleteJob(paths=[str(root / "d1")], allow_cwd_ancestor=True)
        result = await (await manager.submit(job)).result()
    assert result["failed"] == 0 and not (root / "d1").exists()


def test_root_and_home_are_refused_even_with_allow_cwd_ancestor(private_home, monkeypatch):
    monkeypatch.chdir(private_home)
    for path in ("/", "//", str(private_home), str(private_home.parent)):
        with pytest.raises(parjobs.JobSpecError, match=r"root directory|home directory"):
            DeleteJob(paths=[path], allow_cwd_ancestor=True).validate()


def test_a_resumed_job_is_not_checked_against_the_runners_current_directory(tmp_path, monkeypatch):
    target = tmp_path / "t"
    target.mkdir()
    job = DeleteJob(paths=[str(target)])
    job.validate()  # on submit: accepted
    monkeypatch.chdir(target)  # the runner of a resumed job may be anywhere
    DeleteJob.from_spec(job.to_spec()).validate()


async def test_a_trailing_slash_names_a_directory_through_the_api(store_path, tmp_path):
    """``file/`` names no directory: every operation refuses it at submission ("Not a
    directory", as rm, mv, cp and trash-put); a move took the file. ``link/`` (a symlink to
    a directory) is that directory: a delete or a move refuses it (it cannot go through the
    link; a delete took the link, a move moved it), a trash takes the link (as trash-put
    and gio trash), a copy copies the directory."""
    from parjobs.ops import CopyJob, MoveJob

    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x").write_text("x")
    (tmp_path / "link").symlink_to("d")
    (tmp_path / "f").write_text("file")
    (tmp_path / "into").mkdir()
    into = str(tmp_path / "into")
    jobs = {
        "delete": lambda p: DeleteJob(paths=[p]),
        "trash": lambda p: DeleteJob(paths=[p], trash=True),
        "move": lambda p: MoveJob(sources=[p], destination=into, into=True),
        "copy": lambda p: CopyJob(sources=[p], destination=into, into=True),
    }
    refused = [(kind, "f/", "Not a directory|is not a directory") for kind in jobs]
    refused += [(kind, "link/", "is a symlink to a directory") for kind in ("delete", "move")]
    async with parjobs.open_manager(store_path) as manager:
        for kind, path, why in refused:
            with pytest.raises(parjobs.JobSpecError, match=why):
                await manager.submit(jobs[kind](f"{tmp_path}/{path}"))
        assert (tmp_path / "f").read_text() == "file" and os.listdir(tmp_path / "into") == []
        assert os.readlink(tmp_path / "link") == "d" and os.listdir(tmp_path / "d") == ["x"]
        handle = await manager.submit(jobs["copy"](f"{tmp_path / 'link'}/"))
        assert await handle.wait() is JobStatus.COMPLETED
        assert (tmp_path / "into" / "link" / "x").read_text() == "x"
        handle = await manager.submit(jobs["trash"](f"{tmp_path / 'link'}/"))
        assert await handle.wait() is JobStatus.COMPLETED
    assert not os.path.lexists(tmp_path / "link") and (tmp_path / "d" / "x").read_text() == "x"


@pytest.mark.parametrize("trash", [False, True], ids=["delete", "trash"])
async def test_a_directory_given_with_a_slash_replaced_by_a_file_before_the_run_is_kept(
    store_path, tmp_path, trash
):
    """``d/`` is checked on submission; a delete that runs later (queued, or submitted with
    its checks done before) found a file put in its place and deleted it, the slash
    dropped with the rest of the normalisation. The root must still be a directory (a
    trash's task looked at ``d/`` itself already: "Not a directory")."""
    (tmp_path / "d").mkdir()
    job = DeleteJob(paths=[f"{tmp_path / 'd'}/"], trash=trash)
    job.validate()  # (submitted now: its checks done, as a queued job's)
    os.rmdir(tmp_path / "d")
    (tmp_path / "d").write_text("a file now")
    async with parjobs.open_manager(store_path) as manager:
        handle = await manager.submit(job)
        assert await handle.wait() is JobStatus.COMPLETED_WITH_ERRORS
        errors = [e.message for e in await manager.errors(handle.id)]
    assert (tmp_path / "d").read_text() == "a file now"
    assert any("not a directory" in e.lower() for e in errors), errors


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (["x", "x/sub"], "'{t}/x/sub' is inside '{t}/x', also given"),
        (["x/sub/b", "link"], None),  # the link itself, not followed: no overlap
        (["link/sub", "x"], "'{t}/link/sub' is inside '{t}/x', also given"),
        (["x", "x"], "'{t}/x' and '{t}/x' are the same; give it once"),
        (["x", "./x"], "'{t}/x' and '{t}/./x' are the same; give it once"),
    ],
)
async def test_overlapping_paths_are_refused_naming_both(store_path, tmp_path, given, message):
    """``rm -r x x/sub`` and ``trash-put x x/sub`` take x, then fail on x/sub; the job's
    tasks took both in any order (a trash put sub in the trash apart from x, a delete of
    x twice counted 7 entries for 5). Refused on submission, by device and inode."""
    t = tmp_path / "t"
    (t / "x" / "sub").mkdir(parents=True)
    (t / "x" / "sub" / "b").write_bytes(b"b")
    (t / "sub").mkdir()
    os.symlink("x", t / "link")
    paths = [f"{t}/{p}" for p in given]
    async with parjobs.open_manager(store_path) as manager:
        for trash in (False, True):
            job = DeleteJob(paths=paths, trash=trash)
            if message is None:
                job.validate()
                continue
            kind = "trash" if trash else "delete"
            with pytest.raises(parjobs.JobSpecError) as caught:
                await manager.submit(job)
            assert str(caught.value).startswith(f"{kind}: " + message.format(t=t))
            DeleteJob.from_spec({"paths": paths, "trash": trash})  # a stored job still loads
        assert await manager.list_jobs() == []
    assert _count(t) == 5
