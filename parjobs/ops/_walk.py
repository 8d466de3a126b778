"""Lazy tree walking with a durable manifest, so task indices stay stable across resumes.

A walked entry's task index is its line number in the job's manifest (``ctx.job_dir``). The
first run appends every entry to the manifest *before* yielding it (so no checkpoint can ever
name an index the manifest does not hold). A resumed run replays the manifest first — same
index, same path — then walks the tree again and appends only entries it has not seen, so files
created since the interruption get new indices and nothing is ever mistaken for done.

Directories are scanned with ``os.scandir`` in a worker thread, one thread call per directory
(amortizing the ~100 us hop over its entries), depth first with names sorted, never following
symlinks unless asked. Errors (unreadable directory, symlink loop) become ``error`` entries.
"""

from __future__ import annotations

import dataclasses
import json
import os
import stat
from collections.abc import AsyncGenerator, Sequence
from typing import Literal

import trio

from .._context import JobContext

Kind = Literal["file", "dir", "symlink", "special", "error"]


@dataclasses.dataclass(frozen=True, slots=True)
class Entry:
    """One walked item. ``path`` and ``rel`` are bytes so non-UTF-8 names survive.

    ``rel`` is relative to the root's parent directory: it starts with the root's own name
    (``cp -r src dst`` puts ``src/a`` at ``dst/src/a``). ``root`` indexes the job's roots.
    """

    index: int
    kind: Kind
    root: int
    rel: bytes
    path: bytes
    size: int = 0
    mtime_ns: int = 0
    mode: int = 0
    dev: int = 0
    ino: int = 0
    error: str = ""

    @property
    def display(self) -> str:
        """The path for people: undecodable bytes shown as backslash escapes."""
        return self.path.decode("utf-8", "backslashreplace")

    @property
    def parts(self) -> list[bytes]:
        return self.rel.split(b"/")


def _kind_of(mode: int) -> Kind:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISLNK(mode):
        return "symlink"
    return "special"


def _entry(index: int, root: int, rel: bytes, path: bytes, st: os.stat_result) -> Entry:
    kind = _kind_of(st.st_mode)
    return Entry(
        index=index,
        kind=kind,
        root=root,
        rel=rel,
        path=path,
        size=st.st_size if kind == "file" else 0,
        mtime_ns=st.st_mtime_ns,
        mode=st.st_mode,
        dev=st.st_dev,
        ino=st.st_ino,
    )


def _stat(path: bytes, follow: bool) -> os.stat_result:
    """Stat a root; when following, a broken symlink is kept as the link (as in `_scan`)."""
    try:
        return os.stat(path, follow_symlinks=follow)
    except FileNotFoundError:
        if not follow:
            raise
        return os.stat(path, follow_symlinks=False)


def _scan(path: bytes, follow: bool) -> list[tuple[bytes, os.stat_result | None, str]]:
    """List one directory: (name, stat or None, error), sorted by name."""
    out: list[tuple[bytes, os.stat_result | None, str]] = []
    with os.scandir(path) as it:
        for de in it:
            try:
                st = de.stat(follow_symlinks=follow)
            except OSError as exc:
                if follow:  # a broken symlink when following: keep the link itself
                    try:
                        st = de.stat(follow_symlinks=False)
                    except OSError as exc2:
                        out.append((de.name, None, exc2.strerror or str(exc2)))
                        continue
                else:
                    out.append((de.name, None, exc.strerror or str(exc)))
                    continue
            out.append((de.name, st, ""))
    out.sort(key=lambda t: t[0])
    return out


class Manifest:
    """The append-only list of entries of one walk (JSON lines, paths as escaped text)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.entries: list[Entry] = []

    def load(self) -> list[Entry]:
        """Read the entries of earlier runs; drop a torn last line (killed mid-write)."""
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n") + 1
        if end != len(data):
            with open(self.path, "r+b") as f:
                f.truncate(end)
        entries = []
        for i, line in enumerate(data[:end].splitlines()):
            kind, root, rel, path, size, mtime, mode, dev, ino, err = json.loads(line)
            entries.append(
                Entry(
                    i,
                    kind,
                    root,
                    os.fsencode(rel),
                    os.fsencode(path),
                    size,
                    mtime,
                    mode,
                    dev,
                    ino,
                    err,
                )
            )
        self.entries = entries
        return entries

    def append(self, batch: Sequence[Entry]) -> None:
        """Durably-ordered append: written and flushed before the entries are dispatched."""
        lines = [
            json.dumps(
                [
                    e.kind,
                    e.root,
                    os.fsdecode(e.rel),
                    os.fsdecode(e.path),
                    e.size,
                    e.mtime_ns,
                    e.mode,
                    e.dev,
                    e.ino,
                    e.error,
                ]
            )
            for e in batch
        ]
        with open(self.path, "a", encoding="ascii") as f:
            f.write("\n".join(lines) + "\n")
        self.entries.extend(batch)


async def walk(
    ctx: JobContext,
    roots: Sequence[str],
    *,
    follow_symlinks: bool = False,
    name: str = "walk",
) -> AsyncGenerator[Entry, None]:
    """Yield every entry under ``roots`` (roots included) with a stable index.

    Parents come before their children. On resume, entries from the manifest come first.
    """
    manifest = Manifest(os.path.join(ctx.job_dir, f"{name}.manifest"))
    seen: set[tuple[int, bytes]] = set()
    for entry in await trio.to_thread.run_sync(manifest.load):
        seen.add((entry.root, entry.rel))
        yield entry
    next_index = len(manifest.entries)

    async def emit(batch: list[Entry]) -> list[Entry]:
        """Record new entries in the manifest before anybody sees them."""
        if batch:
            await trio.to_thread.run_sync(manifest.append, batch)
        return batch

    def add(
        batch: list[Entry],
        root: int,
        rel: bytes,
        path: bytes,
        st: os.stat_result | None,
        err: str,
    ) -> None:
        """Append an entry not seen before to ``batch``, numbered by its manifest line (entries
        replayed from the manifest keep theirs, so a re-walk never shifts an index)."""
        nonlocal next_index
        if (root, rel) in seen:
            return
        seen.add((root, rel))
        if st is None:
            batch.append(Entry(next_index, "error", root, rel, path, error=err))
        else:
            batch.append(_entry(next_index, root, rel, path, st))
        next_index += 1

    for root_no, root in enumerate(roots):
        root_b = os.fsencode(os.path.normpath(root))
        base = os.path.basename(root_b) or root_b
        top: list[Entry] = []
        try:
            root_st = await trio.to_thread.run_sync(_stat, root_b, follow_symlinks)
        except OSError as exc:
            add(top, root_no, base, root_b, None, exc.strerror or str(exc))
            for e in await emit(top):
                yield e
            continue
        add(top, root_no, base, root_b, root_st, "")
        for e in await emit(top):
            yield e
        if not stat.S_ISDIR(root_st.st_mode):
            continue
        # Depth-first; ``ancestors`` holds (dev, ino) of the directories above, for loops.
        stack: list[tuple[bytes, bytes, frozenset[tuple[int, int]]]] = [
            (root_b, base, frozenset({(root_st.st_dev, root_st.st_ino)}))
        ]
        while stack:
            path, rel, ancestors = stack.pop()
            await ctx.check_interrupt()
            batch: list[Entry] = []
            try:
                listing = await trio.to_thread.run_sync(_scan, path, follow_symlinks)
            except OSError as exc:
                add(batch, root_no, rel + b"/", path, None, exc.strerror or str(exc))
                for e in await emit(batch):
                    yield e
                continue
            subdirs: list[tuple[bytes, bytes, frozenset[tuple[int, int]]]] = []
            for nm, st, err_text in listing:
                child_path, child_rel = path + b"/" + nm, rel + b"/" + nm
                if st is not None and stat.S_ISDIR(st.st_mode):
                    key = (st.st_dev, st.st_ino)
                    if key in ancestors:
                        add(batch, root_no, child_rel, child_path, None, "symlink loop")
                        continue
                    subdirs.append((child_path, child_rel, ancestors | {key}))
                add(batch, root_no, child_rel, child_path, st, err_text)
            for e in await emit(batch):
                yield e
            stack.extend(reversed(subdirs))
