"""Reading and restoring the freedesktop trash (`parjobs.ops._trashcan`), whoever trashed the
items: entries made by hand as another tool would, listed and restored, never over a file
that is there, never from outside a trash; per-volume trashes listed too."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from _trees import read, write

import parjobs
from parjobs.ops import _trashcan
from parjobs.ops._fs import mount_points
from parjobs.ops._trashcan import info_of, list_trash, restore, trash_dirs

pytestmark = pytest.mark.usefixtures("private_home")  # tests/ops/conftest.py


def _by_hand(trash: Path, name: str, original: str, content: bytes) -> Path:
    """A trash entry as the spec says, made without parjobs (as another tool would)."""
    (trash / "files").mkdir(parents=True, exist_ok=True)
    (trash / "info").mkdir(parents=True, exist_ok=True)
    write(trash / "files" / name, content)
    quoted = original.replace(" ", "%20")
    (trash / "info" / f"{name}.trashinfo").write_text(
        f"[Trash Info]\nPath={quoted}\nDeletionDate=2024-05-06T07:08:09\n"
    )
    return trash / "files" / name


def test_trash_list_and_restore_an_entry_made_by_hand(tmp_path: Path, private_home: Path) -> None:
    trash = private_home / "data" / "Trash"
    original = tmp_path / "docs" / "my file.txt"
    item = _by_hand(trash, "my file.txt", str(original), b"hello")
    _by_hand(trash, "orphan", str(tmp_path / "o"), b"o")
    os.unlink(trash / "files" / "orphan")  # an info file without its item: not listed
    assert os.fsencode(trash) in trash_dirs()
    (entry,) = list_trash()
    assert entry.original_path == os.fsencode(original)
    assert entry.trashed_path == os.fsencode(item)
    assert entry.deletion_date is not None and entry.deletion_date.year == 2024
    assert restore(entry.trashed_path) == os.fsencode(original)  # parent re-created
    assert read(original) == b"hello"
    assert not item.exists() and not (trash / "info" / "my file.txt.trashinfo").exists()


def test_an_info_file_whose_path_holds_a_nul_byte_is_never_restored(
    tmp_path: Path, private_home: Path
) -> None:
    """``Path=.../docs%00x`` decodes to a NUL byte, at which the no-replace rename (renameat2
    through ctypes) cut the name: the item was restored as ``docs`` and reported restored as
    ``docs x``. Such an info file is not valid now: the item is not listed, not restored."""
    trash = private_home / "data" / "Trash"
    item = _by_hand(trash, "nul", f"{tmp_path}/docs%00x", b"mine")
    assert list_trash() == []
    with pytest.raises(ValueError, match="NUL"):
        restore(os.fsencode(item))
    assert os.listdir(tmp_path) == ["home"] and read(item) == b"mine"


def test_trash_restore_never_replaces(tmp_path: Path, private_home: Path) -> None:
    trash = private_home / "data" / "Trash"
    target = tmp_path / "x"
    item = _by_hand(trash, "x", str(target), b"trashed")
    write(target, b"present")
    with pytest.raises(FileExistsError, match="not restored"):
        restore(os.fsencode(item))
    assert read(target) == b"present" and read(item) == b"trashed"
    assert os.path.exists(info_of(os.fsencode(item)))


def test_trash_restore_refuses_a_path_outside_a_trash(tmp_path: Path) -> None:
    write(tmp_path / "plain", b"p")
    with pytest.raises(parjobs.ops.TrashError, match="not an item in a trash"):
        restore(os.fsencode(tmp_path / "plain"))
    assert read(tmp_path / "plain") == b"p"


def test_per_volume_trash_is_listed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:

    top = tmp_path / "vol"
    trash = top / f".Trash-{os.getuid()}"
    _by_hand(trash, "v", "sub/v", b"v")  # relative to the volume's top directory
    monkeypatch.setattr(_trashcan, "mount_points", lambda: [os.fsencode(top)])
    entries = [e for e in list_trash() if e.trash_dir == os.fsencode(trash)]
    assert [e.original_path for e in entries] == [os.fsencode(top / "sub" / "v")]


def test_mount_points_with_awkward_names_are_found(tmp_path: Path, bind_mount: Any) -> None:
    """Volumes mounted on names holding a space, a newline (escaped in the mount table) or a
    carriage return (written raw there: lines split on it read a mount point ``cr`` that is
    not one and missed the real one, whose ``.Trash`` was then never looked at)."""
    volume = tmp_path / "volume"
    volume.mkdir()
    names = ["a b", "nl\nx", "cr\rx"]
    for name in names:
        (tmp_path / name).mkdir()
        bind_mount(volume, tmp_path / name)
    found = set(mount_points())  # the table trash_dirs looks for volumes in
    for name in names:
        assert os.fsencode(tmp_path / name) in found
    assert os.fsencode(tmp_path / "cr") not in found
