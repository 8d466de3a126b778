"""POSIX ACLs are part of a file's mode: a copy or move that keeps the mode keeps them (as
`cp -p`), or narrows the group bits where the destination cannot hold them. Set with
`os.setxattr` (no `setfacl` here)."""

from __future__ import annotations

import os
import stat
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from _trees import run_job, write

from parjobs import JobStatus
from parjobs.ops import _smallfiles as smallfiles_mod
from parjobs.ops import _transfer as transfer_mod
from parjobs.ops._copy import CopyJob
from parjobs.ops._move import MoveJob
from parjobs.ops._partials import find_partials

MIB = 1 << 20
ACL_ACCESS, ACL_DEFAULT = "system.posix_acl_access", "system.posix_acl_default"
_NONE = 0xFFFFFFFF  # ACL_UNDEFINED_ID
# group::r-- with user:4321:rw- (mask rw-): mode rw-rw----, though the owning group may only read
ACL = struct.pack("<I", 2) + b"".join(
    struct.pack("<HHI", *entry)
    for entry in [(1, 6, _NONE), (2, 6, 4321), (4, 4, _NONE), (0x10, 6, _NONE), (0x20, 0, _NONE)]
)
DIR_ACL = struct.pack("<I", 2) + b"".join(
    struct.pack("<HHI", *entry)
    for entry in [(1, 7, _NONE), (2, 7, 4321), (4, 5, _NONE), (0x10, 7, _NONE), (0x20, 0, _NONE)]
)


def _tree(src: Path) -> None:
    """20 small files (the C group path), a 2 MiB one (the per-file path, with CHUNK_SIZE
    1 MiB) and a directory with a file."""
    src.mkdir()
    for i in range(20):
        write(src / f"f{i:02d}", b"x" * 100)
    write(src / "big", b"y" * 2 * MIB)
    (src / "d").mkdir()
    write(src / "d" / "inner", b"z")


def _acl_tree(src: Path) -> list[Path]:
    """`_tree`, f07, big and d with an access ACL, d with a default ACL too."""
    _tree(src)
    tagged = [src / "f07", src / "big", src / "d"]
    try:
        for path in tagged:
            os.setxattr(path, ACL_ACCESS, DIR_ACL if path.is_dir() else ACL)
        os.setxattr(src / "d", ACL_DEFAULT, DIR_ACL)
    except OSError:
        pytest.skip("no POSIX ACLs on this filesystem")
    return tagged


@pytest.fixture
def no_acl_fs(mount_fs: Callable[..., Path]) -> Path:
    """A ramfs (no extended attributes, so no ACLs), or skip."""
    return mount_fs("ramfs")


def _grouped(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The names the C group path was given (checked: f07 goes there)."""
    names: list[bytes] = []
    real = smallfiles_mod.copy_small_files

    def spy(items: Any, **kwargs: Any) -> Any:
        names.extend(bytes(item[-1]) for item in items)
        return real(items, **kwargs)

    monkeypatch.setattr(smallfiles_mod, "copy_small_files", spy)
    monkeypatch.setattr(transfer_mod, "CHUNK_SIZE", MIB)
    return names


async def test_a_copy_keeps_posix_acls_with_the_mode(
    store_path: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --preserve-xattrs a copy dropped the ACL and kept the mode, whose group bits
    are the ACL's mask: rw-rw---- for a file whose group could only read, the whole group
    given write. It keeps the access ACL (C group path and per-file path) and a directory's
    default ACL now, as `cp -p`."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    tagged = _acl_tree(src)
    grouped = _grouped(monkeypatch)
    _, info, errors = await run_job(store_path, CopyJob(sources=[str(src)], destination=str(dst)))
    assert info.status is JobStatus.COMPLETED and errors == []
    if smallfiles_mod.fastcopy is not None:
        assert b"f07" in grouped and b"big" not in grouped
    for path in tagged:
        copy = dst / path.relative_to(src)
        assert os.getxattr(copy, ACL_ACCESS) == os.getxattr(path, ACL_ACCESS), copy
        assert os.stat(copy).st_mode == os.stat(path).st_mode
    assert os.getxattr(dst / "d", ACL_DEFAULT) == DIR_ACL
    assert ACL_ACCESS not in os.listxattr(dst / "f08")


@pytest.mark.parametrize("kind", ["copy", "move"])
async def test_where_acls_cannot_be_kept_the_group_bits_are_narrowed(
    store_path: str,
    tmp_path: Path,
    no_acl_fs: Path,
    monkeypatch: pytest.MonkeyPatch,
    kind: str,
) -> None:
    """Onto a filesystem without ACLs (a ramfs) the copy's mode had the mask as group bits
    (rw-rw----, rwxrwx---): wider than the source allowed the group. Its group bits are now
    group:: & mask (rw-r-----, rwxr-x---); a move across filesystems likewise."""
    src, dst = tmp_path / "src", no_acl_fs / "dst"
    tagged = _acl_tree(src)
    _grouped(monkeypatch)
    modes = {path.relative_to(src): os.stat(path).st_mode for path in tagged}
    assert {stat.S_IMODE(m) for m in modes.values()} == {0o660, 0o770}
    job = (CopyJob if kind == "copy" else MoveJob)(sources=[str(src)], destination=str(dst))
    _, info, errors = await run_job(store_path, job)
    assert info.status is JobStatus.COMPLETED and errors == []
    for rel, mode in modes.items():
        narrowed = 0o640 if stat.S_ISREG(mode) else 0o750
        assert stat.S_IMODE(os.stat(dst / rel).st_mode) == narrowed, rel
    assert find_partials(no_acl_fs) == []
    assert (kind == "copy") == src.exists()


async def test_a_source_without_an_acl_is_copied_without_one(
    store_path: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Into a directory with a default ACL (``user:4321:rwx``), a copy of a source without
    an ACL kept what it inherited there (7554930 kept a source's ACL, never dropped one):
    a file ``rw-r-----`` gave 4321 read, which the source did not, where ``cp -p`` keeps
    the mode alone. The copies (C group path, per-file path, directories) hold no ACL now."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    _tree(src)
    for path in [src, *src.rglob("*")]:
        path.chmod(0o750 if path.is_dir() else 0o640)
    dst.mkdir()
    try:
        os.setxattr(dst, ACL_DEFAULT, DIR_ACL)
    except OSError:
        pytest.skip("no POSIX ACLs on this filesystem")
    grouped = _grouped(monkeypatch)
    job = CopyJob(sources=[str(src)], destination=str(dst), into=True)
    _, info, errors = await run_job(store_path, job)
    assert info.status is JobStatus.COMPLETED and errors == []
    if smallfiles_mod.fastcopy is not None:
        assert b"f07" in grouped and b"big" not in grouped
    for path in [src, *src.rglob("*")]:
        copy = dst / "src" / path.relative_to(src)
        assert [a for a in os.listxattr(copy) if a.startswith("system.posix_acl")] == [], copy
        assert os.stat(copy).st_mode == os.stat(path).st_mode, copy
