"""`may_pass`: which failed items a resume may finish, from what a store keeps of their error
(its type's name and message), so the CLI suggests ``parjobs resume`` only for those."""

from __future__ import annotations

import errno
import os

import pytest

from parjobs.ops._errors import (
    MOUNT_POINT,
    DirConflictError,
    ForeignDirError,
    SourceChangedError,
    SpecialFileError,
    TrashError,
    may_pass,
)


def stored(exc: BaseException) -> tuple[str, str]:
    """An error as a store keeps it: its type's name and its message."""
    return type(exc).__name__, str(exc)


@pytest.mark.parametrize(
    "exc",
    [
        OSError(errno.EIO, os.strerror(errno.EIO), "/a/f"),
        PermissionError(errno.EACCES, os.strerror(errno.EACCES), "/a/f"),
        OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/b/f"),
        OSError(None, "Permission denied", "/a/d"),  # a walk's unreadable directory
        RuntimeError("unexpected"),  # unknown: resume stays suggested
        ForeignDirError("/mnt/nas on this cluster worker is not the manager's directory"),
    ],
)
def test_causes_that_may_pass(exc: BaseException) -> None:
    assert may_pass(*stored(exc))


@pytest.mark.parametrize(
    "exc",
    [
        TrashError(None, "is in the trash already; it cannot be trashed again", "/t/files/x"),
        TrashError(None, "is a mount point; it cannot be trashed", "/mnt/x"),
        TrashError(errno.EXDEV, "cannot move into the trash without copying", "/mnt/x"),
        OSError(None, MOUNT_POINT, "/srv/chroot/home"),  # a delete's mount point
        FileExistsError(errno.EEXIST, "destination is the same file as the source", "/b/f"),
        FileExistsError(errno.EEXIST, "destination exists", "/b/f"),
        SourceChangedError("source changed while being copied: '/a/f' (size)"),
        SpecialFileError("destination is a fifo, not replaced: '/b/f'"),
        DirConflictError("not a directory: '/b/d'"),
    ],
)
def test_refusals_do_not_pass(exc: BaseException) -> None:
    assert not may_pass(*stored(exc))
