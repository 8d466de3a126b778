"""Where a job may write: checks of destination directories made before a job exists, and
the identity of a destination kept across runs.

* `existing_prefix` and `parjobs.ops._fs.ancestor_ids` compare directories by device and
  inode, as ``cp`` does, so a destination reached through a bind mount, a symlink or a
  relative path is still seen to be inside a source.
* `check_writable_dir` refuses, at validate time, a place no job could write to: not a
  directory, not writable, or on a kernel pseudo-filesystem (``/proc``, ``/sys``...), where
  creating files fails in odd ways (ENOENT in ``/proc``) only once the job runs.
* `dir_identity` is the (device, inode) of a destination directory, recorded in the job's
  state on its first run and compared on every later run (`check_identity`,
  `keep_dir_identity`): a destination swapped for a symlink (or another directory) between a
  kill and ``resume`` is refused, never written into.
"""

from __future__ import annotations

import os
import stat
from typing import Any

import trio

from .._context import JobContext
from .._exceptions import JobSpecError
from .._job import validating_stored
from ._errors import DestinationChangedError
from ._fs import DIR_FLAGS
from ._kernel import fs_type

#: statfs(2) ``f_type`` of kernel pseudo-filesystems: nothing a job writes belongs there.
PSEUDO_FILESYSTEMS = {
    0x9FA0: "proc",
    0x62656572: "sysfs",
    0x64626720: "debugfs",
    0x74726163: "tracefs",
    0x73636673: "securityfs",
    0x27E0EB: "cgroup",
    0x63677270: "cgroup2",
    0xCAFE4A11: "bpf",
    0x6165676C: "pstore",
    0x62656570: "configfs",
    0x1CD1: "devpts",
    0xDE5E81E4: "efivarfs",
    0xF97CFF8C: "selinuxfs",
    0x65735543: "fusectl",
    0x42494E4D: "binfmt_misc",
    0x19800202: "mqueue",
}


def absolute_paths(kind: str, paths: list[str]) -> list[str]:
    """``paths`` as a job stores them: each relative one joined to the submitter's working
    directory (on submission: `validating_stored` false), nothing else changed (no ``..``
    resolved, a trailing ``/`` kept), so it means what it meant to the submitter. A job may
    run in another process and directory (a resume, a worker, a server): a delete of ``x``
    submitted in ``/a`` and resumed in ``/b`` deleted ``/b/x``. A stored relative path
    (a spec stored so by parjobs before session 23, or edited) is refused, `JobSpecError`:
    which directory it was meant from is not known. (A server's request is submitted
    there: a relative path in it is taken from the server's directory, as before.)"""
    if validating_stored():
        for path in paths:
            if isinstance(path, str) and path and not os.path.isabs(path):
                raise JobSpecError(
                    f"{kind}: stored path {path!r} is relative: which directory it meant is "
                    "not known, so the job is not run (submit it again with absolute paths)"
                )
        return paths
    relative = [isinstance(path, str) and path and not os.path.isabs(path) for path in paths]
    if not any(relative):
        return paths  # (no getcwd: the working directory may be gone)
    cwd = os.getcwd()
    return [os.path.join(cwd, p) if rel else p for p, rel in zip(paths, relative, strict=True)]


def existing_prefix(path: str) -> tuple[str, os.stat_result]:
    """The longest existing prefix of the absolute ``path`` and its stat (symlinks
    followed, as a job opening the path would): where the job's writes would land."""
    here = os.path.abspath(path)
    while True:
        try:
            return here, os.stat(here)
        except (FileNotFoundError, NotADirectoryError):
            parent = os.path.dirname(here)
            if parent == here:
                raise
            here = parent


def check_writable_dir(kind: str, what: str, path: str, st: os.stat_result) -> None:
    """Raise `JobSpecError` unless the existing ``path`` (stat ``st``) is a directory this
    process may create entries in, on a real filesystem. ``what`` names it for the message."""
    shown = path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    if not stat.S_ISDIR(st.st_mode):
        raise JobSpecError(f"{kind}: {what} {shown!r} is not a directory")
    pseudo = PSEUDO_FILESYSTEMS.get(fs_type(path) or 0)
    if pseudo is not None:
        raise JobSpecError(
            f"{kind}: {what} {shown!r} is on the kernel's {pseudo} filesystem, not a place "
            "for files"
        )
    if not os.access(path, os.W_OK | os.X_OK):
        raise JobSpecError(f"{kind}: {what} {shown!r} is not writable")


def check_creatable_dir(kind: str, what: str, path: str) -> None:
    """Raise `JobSpecError` unless directory ``path`` exists, or can be created (with its
    missing parents), as a writable directory on a real filesystem (`check_writable_dir`
    on the nearest existing directory)."""
    try:
        prefix, st = existing_prefix(path)
    except OSError as exc:
        raise JobSpecError(f"{kind}: cannot use {what} {path!r}: {exc.strerror}") from None
    if prefix != os.path.abspath(path):
        what = f"the nearest existing parent of {what} {path!r},"
    check_writable_dir(kind, what, prefix, st)


def dir_identity(fd: int) -> list[int]:
    """What `check_identity` compares: [device, inode] of the directory open at ``fd``."""
    st = os.fstat(fd)
    return [st.st_dev, st.st_ino]


def check_identity(kind: str, path: str | bytes, fd: int, recorded: Any) -> None:
    """Raise `DestinationChangedError` when the directory open at ``fd`` (``path``) is not
    the one ``recorded`` by an earlier run (`dir_identity`); nothing recorded passes."""
    if recorded is None:
        return
    if dir_identity(fd) != list(recorded):
        shown = os.fsencode(path).decode("utf-8", "backslashreplace")
        raise DestinationChangedError(
            f"{kind}: destination {shown!r} is not the directory earlier runs of this job "
            "wrote into (replaced, or now a symlink elsewhere); nothing was written. Check "
            "it, then start a new job"
        )


def _checked_identity(kind: str, path: str, recorded: Any, create: bool) -> list[int]:
    """The identity of directory ``path`` (created first when ``create`` and missing: a
    directory made now is new, whatever was recorded), checked against ``recorded``."""
    made = False
    if create and not os.path.lexists(path):
        os.makedirs(path, exist_ok=True)
        made = True
    fd = os.open(path, DIR_FLAGS)  # a user's symlink is ok
    try:
        if not made:
            check_identity(kind, path, fd, recorded)
        return dir_identity(fd)
    finally:
        os.close(fd)


async def keep_dir_identity(
    ctx: JobContext,
    key: str,
    kind: str,
    path: str,
    *,
    create: bool = False,
    checkpoint: bool = True,
) -> bool:
    """At the start of every run of a job writing into directory ``path``: refuse
    (`DestinationChangedError`) a directory that is not the one recorded under
    ``ctx.state[key]`` by an earlier run, else record it, durably (unless ``checkpoint`` is
    False: the caller then checkpoints before writing anything), before anything is
    written. Returns whether the record changed."""
    recorded = ctx.state.get(key)
    ident = await trio.to_thread.run_sync(_checked_identity, kind, path, recorded, create)
    if ident == recorded:
        return False
    ctx.state[key] = ident
    if checkpoint:
        await ctx.checkpoint(force=True)
    return True
