"""The names of the temporaries a writer leaves in a destination directory, and their removal.

Every temporary carries its writer's *name token* (a job's, see `parjobs.ops._names`; by default
this process's): ``.<name>.<token>.<random>.parjobs-tmp`` for one-shot writes, and for
resumable copies a partial deterministic per (token, name), ``.<name>.<token>.parjobs-partial``,
plus a ``.meta`` sidecar recording the owner token and the source's identity. Only temporaries
carrying a writer's own token are ever removed by it.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import stat
from collections.abc import Sequence
from typing import overload

import xxhash

from ._fs import DIR_NOFOLLOW, NAME_MAX, FilePath, leaf, unlink_quiet
from ._names import (
    HELD_SUFFIX,
    META_SUFFIX,
    PARTIAL_SUFFIX,
    TMP_SUFFIX,
    check_token,
    is_own_temp,
    new_token,
)

_TOKENS = random.Random()  # seeded from os.urandom, reseeded in forked children
_PROCESS_OWNER = [new_token()]  # the owner of temporaries written without a job's token


def _after_fork() -> None:
    _TOKENS.seed()
    _PROCESS_OWNER[0] = new_token()


os.register_at_fork(after_in_child=_after_fork)


def owner_token(owner: str | bytes | None) -> bytes:
    """The name token temporaries are written under: ``owner``, or this process's."""
    return _PROCESS_OWNER[0] if owner is None else check_token(owner)


def partial_names(name: str | bytes, owner: str | bytes | None = None) -> tuple[bytes, bytes]:
    """Return the (partial, meta) names ``owner`` (a name token) uses for destination ``name``.

    Deterministic per (owner, name), so the owner's next run finds them; another owner's never
    collide. Names too long for ``.<name>.<owner>.parjobs-partial.meta`` to fit in 255 bytes
    fall back to ``.parjobs.<xxh64 of name>.<owner>.parjobs-partial``.
    """
    partial = _tokened(leaf(name), owner_token(owner), PARTIAL_SUFFIX, len(b".meta"))
    return partial, partial + b".meta"


def held_name(name: str | bytes, owner: str | bytes) -> bytes:
    """The name undo (job token ``owner``) gives ``name`` while it checks and removes it:
    ``.<name>.<owner>.parjobs-undo`` (``.parjobs.<xxh64>.…`` when too long). Deterministic per
    (owner, name), so a resumed undo finds what it had taken aside (`parjobs.ops._undo`)."""
    return _tokened(leaf(name), check_token(owner), HELD_SUFFIX, 0)


def _tokened(raw: bytes, token: bytes, suffix: bytes, room: int) -> bytes:
    """``.<raw>.<token><suffix>``, or with ``raw`` hashed when that (plus ``room`` bytes)
    would not fit in `NAME_MAX`."""
    name = b"." + raw + b"." + token + suffix
    if len(name) + room > NAME_MAX:
        name = b".parjobs." + xxhash.xxh64_hexdigest(raw).encode() + b"." + token + suffix
    return name


def tmp_name(raw: bytes, owner: str | bytes | None = None) -> bytes:
    """An unpredictable one-shot temporary name for ``raw``, carrying ``owner``'s token:
    ``.<raw>.<owner>.<16 random hex>.parjobs-tmp`` (``.parjobs.<owner>.…`` when too long).

    The random part only has to avoid collisions (the create is O_EXCL|O_NOFOLLOW, so a
    planted name fails safely), so a urandom-seeded PRNG serves: no getrandom syscall per file.
    """
    tail = b"." + owner_token(owner) + b".%016x" % _TOKENS.getrandbits(64) + TMP_SUFFIX
    tmp = b"." + raw + tail
    return tmp if len(tmp) <= NAME_MAX else b".parjobs" + tail


def meta_record(st: os.stat_result, owner: bytes) -> dict[str, object]:
    """What a partial's ``.meta`` records: its owner's token and the source's identity."""
    return {
        "v": 2,
        "owner": owner.decode(),
        "dev": st.st_dev,
        "ino": st.st_ino,
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
    }


def read_meta(dir_fd: int, meta: bytes) -> object:
    try:
        fd = os.open(meta, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        return None
    try:
        return json.loads(os.read(fd, 4096))
    except ValueError:
        return None
    finally:
        os.close(fd)


def remove_own(dir_fd: int, name: bytes, token: bytes) -> bool:
    """Unlink ``name`` if it is ``token``'s temporary: the name carries the token, it is a
    regular file or a symlink (a copied link's temporary; unlinking it never touches what it
    points to) of ours, and (a partial) its meta, when there, names the same owner."""
    if not is_own_temp(name, token):
        return False
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    kind = stat.S_IFMT(st.st_mode)
    if kind not in (stat.S_IFREG, stat.S_IFLNK) or st.st_uid != os.geteuid():
        return False
    if name.endswith(PARTIAL_SUFFIX):
        meta = read_meta(dir_fd, name + b".meta")
        if isinstance(meta, dict) and meta.get("owner") not in (None, token.decode()):
            return False
    return unlink_quiet(dir_fd, name)


def remove_own_temps(root: FilePath, owner: str | bytes, *, recursive: bool = True) -> int:
    """Remove the temporaries and partials carrying ``owner``'s token under ``root`` (or in
    ``root`` alone); return how many. Nothing else is touched: not a user's file named like
    a temporary, not another job's temporary. Symlinks are never followed."""
    token = check_token(owner)
    removed = 0
    pending = [os.fsencode(root)]
    while pending:
        top = pending.pop()
        try:
            fd = os.open(top, DIR_NOFOLLOW)
        except OSError:
            continue
        try:
            with os.scandir(fd) as entries:
                names = [(e.name, e.is_dir(follow_symlinks=False)) for e in entries]
            for leaf, is_dir in names:
                raw = os.fsencode(leaf)
                if is_dir:
                    if recursive:
                        pending.append(top + b"/" + raw)
                elif remove_own(fd, raw, token):
                    removed += 1
        finally:
            os.close(fd)
    return removed


@overload
def find_partials(root: str | os.PathLike[str]) -> list[str]: ...


@overload
def find_partials(root: bytes | os.PathLike[bytes]) -> list[bytes]: ...


def find_partials(root: FilePath) -> list[str] | list[bytes]:
    """List the files under ``root`` named like parjobs temporaries (partials, their meta,
    one-shot temps), whoever's they are: a diagnostic, never a list of things to remove
    (`remove_own_temps` removes a job's own).

    Symlinked directories are not followed. Paths come back sorted, of the type of ``root``.
    """
    suffixes = (PARTIAL_SUFFIX, META_SUFFIX, TMP_SUFFIX)
    top = os.fspath(root)
    found = sorted(
        os.path.join(d, f)
        for d, _, files in os.walk(os.fsencode(top))
        for f in files
        if f.endswith(suffixes)
    )
    return found if isinstance(top, bytes) else [os.fsdecode(p) for p in found]


def sweep_temporaries(destination: str | bytes, names: Sequence[bytes], token: bytes | None) -> int:
    """Remove the temporaries (partials, their meta, one-shot temps) that the job owning name
    ``token`` may have left copying its sources into ``destination`` under ``names``; return
    how many.

    Only names carrying the job's token are removed (`remove_own_temps`): a user's file named
    like a temporary, or another job's temporary, is never touched. Looks inside each
    ``destination/<name>`` directory, and in ``destination`` itself (top-level files).
    No token: the job never wrote anything, so nothing is its own.
    """
    if token is None:
        return 0
    dest = os.fsencode(os.path.abspath(destination))
    removed = remove_own_temps(dest, token, recursive=False)
    for name in names:
        top = dest + b"/" + name
        with contextlib.suppress(OSError):
            if stat.S_ISDIR(os.lstat(top).st_mode):
                removed += remove_own_temps(top, token)
    return removed
