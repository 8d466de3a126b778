"""Probes: how a cluster worker knows that the directory it is about to write into is the
manager's, not an empty directory of its own at the same path.

A cluster worker knows a copy's destination (or a thumbnail job's output directory) by its
path only, mapped by the path map (`parjobs._cluster_remote`). A share that failed to mount
on the worker's host leaves an empty local directory there, and a wrong path map points
elsewhere: the worker wrote the files there and the job completed, the user believing the
copy was on the share. Device and inode numbers do not tell (they differ across hosts, FUSE
and CIFS make them up), so the manager, when its job runs on a cluster, puts a *probe* in
every directory a worker reaches by a path of its own (the destination's root and the path
map's directories below it: `DestTree.anchors`; a thumbnail job's output directory), and a
worker checks that it is there before it writes (`DestTree.verify`, `check`), failing each
item with `ForeignDirError` naming the directory when it is not.

The probe's name carries the job's name token (`parjobs.ops._names`), so it never is a
user's file, and a job only ever removes its own (`remove`): once the job ends for good, in
its cleanup (a cancel and an undo end it too). A kill -9 leaves it; a resume finds it (same
token: `place` takes it as its own) and removes it at its end. A local run makes none.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
from collections.abc import Sequence

import trio

from .._context import JobContext
from ._errors import ForeignDirError
from ._fs import DIR_FLAGS, display
from ._names import stored_token

_Path = str | bytes | os.PathLike[str]

PROBE_SUFFIX = b".parjobs-probe"
#: Any job's probe (what a thumbnail walk leaves out of an output directory).
PROBE_NAME = re.compile(rb"\.parjobs\.[0-9a-f]{16}" + re.escape(PROBE_SUFFIX))
#: Where a job keeps the directories it put a probe in (``ctx.state``), for its cleanup.
STATE_KEY = "probes"

_TEXT = (
    b"parjobs: a job running on a cluster writes into this directory; its workers check\n"
    b"that they see this file before they write. Removed when the job ends.\n"
)


def probe_name(token: bytes) -> bytes:
    """The probe of the job with name token ``token``: ``.parjobs.<token>.parjobs-probe``."""
    return b".parjobs." + token + PROBE_SUFFIX


def place(directory: _Path, token: bytes) -> None:
    """(Manager) Make the probe of ``token`` in ``directory`` (which exists), without
    replacing anything. One found there already is this job's (its name carries the
    token: an earlier run was killed) and is kept. Anything else by that name (`_is_probe`)
    is left alone and `ForeignDirError` raised: the job cannot be checked."""
    name = probe_name(token)
    fd = os.open(directory, DIR_FLAGS)
    try:
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            file = os.open(name, flags, 0o444, dir_fd=fd)
        except FileExistsError:
            if not _is_probe(fd, name):
                where = display(os.path.join(os.fsencode(directory), name))
                raise ForeignDirError(f"not a probe of this job, left alone: {where}") from None
            return
        try:
            os.write(file, _TEXT)
        finally:
            os.close(file)
    finally:
        os.close(fd)


def _is_probe(dir_fd: int, name: bytes) -> bool:
    """Whether ``name`` in ``dir_fd`` is a probe as `place` writes it: a regular file (never
    followed) holding just its text, or nothing (a run killed before it wrote the text).
    Anything else by that name is somebody else's."""
    try:
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # (never a FIFO's wait)
        fd = os.open(name, flags, dir_fd=dir_fd)
    except OSError:  # none, a symlink (ELOOP), unreadable...
        return False
    try:
        return stat.S_ISREG(os.fstat(fd).st_mode) and os.read(fd, len(_TEXT) + 1) in (b"", _TEXT)
    finally:
        os.close(fd)


def check(dir_fd: int, token: bytes, where: str | bytes) -> None:
    """(Worker) Raise `ForeignDirError` unless directory ``dir_fd`` (``where``, for the
    message) holds the probe of ``token``."""
    try:
        st = os.stat(probe_name(token), dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        pass
    else:
        if stat.S_ISREG(st.st_mode):
            return
    raise missing(where)


def check_path(directory: _Path, token: bytes) -> None:
    """`check` by path (a thumbnail task, which writes by path): `ForeignDirError` also when
    ``directory`` is missing or no directory."""
    where = os.fsencode(directory)
    try:
        fd = os.open(where, DIR_FLAGS)
    except (FileNotFoundError, NotADirectoryError):
        raise missing(where) from None
    try:
        check(fd, token, where)
    finally:
        os.close(fd)


def missing(where: str | bytes) -> ForeignDirError:
    """The error of a worker whose directory ``where`` lacks the manager's probe."""
    err = ForeignDirError(
        f"{display(where)} on this cluster worker is not the manager's directory (the probe "
        "the manager put there is missing: a share not mounted on the worker's host, or a "
        "path map pointing elsewhere); nothing was written there"
    )
    err.filename = display(where)
    return err


def remove(directory: _Path, token: bytes) -> None:
    """(Manager) Remove the probe of ``token`` from ``directory``, if there: only that name,
    never another job's probe or anything else. The directory keeps the times it had: a
    path map's directory below a copy's root is one the copy made and gave its source's
    mtime (as ``cp -a``), which the unlink would have made now, after the copy's last step."""
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        fd = os.open(directory, DIR_FLAGS)
        try:
            name = probe_name(token)
            if _is_probe(fd, name):
                st = os.fstat(fd)
                os.unlink(name, dir_fd=fd)
                with contextlib.suppress(OSError):  # (not the directory's owner: as it is)
                    os.utime(fd, ns=(st.st_atime_ns, st.st_mtime_ns))
        finally:
            os.close(fd)


async def place_all(
    ctx: JobContext, token: bytes, directories: Sequence[bytes], *, make: bool = False
) -> None:
    """(Manager) Put the job's probe in each of ``directories``, recorded in its state and
    checkpointed first (a kill -9 in between leaves nothing its cleanup does not know of);
    ``make``: a missing one is made first (a path map's directory below a destination)."""
    recorded = list(ctx.state.get(STATE_KEY) or ())
    names = [os.fsdecode(d) for d in directories]
    if any(n not in recorded for n in names):
        ctx.state[STATE_KEY] = recorded + [n for n in names if n not in recorded]
        await ctx.checkpoint(force=True)

    def put() -> None:
        for directory in directories:
            if make:
                os.makedirs(directory, exist_ok=True)
            place(directory, token)

    await trio.to_thread.run_sync(put)


async def remove_all(ctx: JobContext) -> None:
    """(Manager) Remove the job's probes from every directory its runs put one in (its
    cleanup: the job ended for good)."""
    token = stored_token(ctx.state)
    recorded = ctx.state.get(STATE_KEY)
    if token is None or not isinstance(recorded, list) or not recorded:
        return

    def sweep() -> None:
        for directory in recorded:
            if isinstance(directory, str):
                remove(os.fsencode(directory), token)

    await trio.to_thread.run_sync(sweep)
    del ctx.state[STATE_KEY]


__all__ = [
    "PROBE_NAME",
    "STATE_KEY",
    "check",
    "check_path",
    "missing",
    "place",
    "place_all",
    "remove",
    "remove_all",
]
