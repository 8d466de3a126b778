"""DuplicatesJob: find files with identical content, in stages of rising cost.

The stages are those of `parjobs.ops._hashing` (see its docstring for the rules), each with
its own dispatcher so a resumed job skips what every stage finished:

1. walk: group regular files by size (hard links to one inode count once, first in walk
   order; files below ``min_size`` are left out; empty files form one group, never opened);
2. ``content-id``: `content_id` of every file sharing its size with another;
3. ``full-hash``: the full XXH3-128 digest of files sharing a content id, only for files larger
   than `CONTENT_ID_SMALL_LIMIT` (smaller ones are covered entirely by their content id).

Every task's index is its entry's index in the walk manifest, which is stable across
resumes, so the indices of a stage never shift when the candidate list is rebuilt. The
report is exactly what `find_duplicates_sequential` returns for the walked files.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any, TypeVar, cast

from .._context import JobContext
from .._exceptions import JobSpecError
from .._job import Job, job_type
from .._task import OutcomeStatus, Task, TaskContext
from ._entries import EntryTask, HashTask, entry_report, run_each
from ._fs import display
from ._hashing import (
    CONTENT_ID_BLOCK,
    CONTENT_ID_SAMPLES,
    CONTENT_ID_SMALL_LIMIT,
    DuplicateGroup,
    DuplicateReport,
    content_id,
    group_by,
    new_hasher,
)
from ._walk import Entry, check_roots, walk

T = TypeVar("T")

_EMPTY_DIGEST = new_hasher("xxh3_128").hexdigest()


def content_id_cost(size: int) -> int:
    """Bytes `content_id` reads from a file of ``size`` bytes."""
    if size <= CONTENT_ID_SMALL_LIMIT:
        return size
    return CONTENT_ID_BLOCK * (CONTENT_ID_SAMPLES + 2)


@dataclasses.dataclass(slots=True)
class ContentIdTask(Task[str]):
    """The content id of one file, which must still have the size it was listed with."""

    cluster = True  # reads only
    #: Up to this many ids per worker-thread call (`run_each`): each reads at most 100 KiB.
    group_size = 64

    index: int
    path: bytes
    size: int

    @property
    def weight(self) -> int:
        return content_id_cost(self.size)

    def label(self) -> str:
        return display(self.path)

    def run(self, tc: TaskContext) -> str:
        tc.check()
        return self._value(tc)

    @classmethod
    def run_group(cls, tasks: Sequence[Task[Any]], tcs: Sequence[TaskContext]) -> list[Any]:
        """The group's content ids, one after another in this thread."""
        return run_each(cast(Sequence[ContentIdTask], tasks), tcs, ContentIdTask._value)

    def _value(self, tc: TaskContext) -> str:
        cid = content_id(self.path, size=self.size)
        tc.add_bytes(content_id_cost(self.size))
        tc.record("hashed", self.path, bytes=self.size, detail=f"content-id:{cid}")
        return cid


@dataclasses.dataclass(frozen=True, slots=True, order=True)
class _File:
    index: int
    path: bytes
    size: int


@job_type("duplicates", version=1)
class DuplicatesJob(Job):
    """Find duplicate files under ``paths`` (files or directories, walked recursively).

    Result: ``{"groups": [{"size", "digest", "paths"}], "duplicate_files",
    "reclaimable_bytes", "files_scanned", "failed"}`` — groups largest first, then by digest;
    paths in walk order; ``files_scanned`` counts every regular file the walk found (hard
    links and files below ``min_size`` included); ``failed`` counts files that could not be
    read (they are in no group; ``manager.errors`` says why).
    """

    paths: list[str]
    min_size: int = 1

    def validate(self) -> None:
        check_roots("duplicates", self.paths)
        if self.min_size < 0:
            raise JobSpecError(f"duplicates: min_size must be >= 0, got {self.min_size}")

    async def run(self, ctx: JobContext) -> dict[str, Any]:
        ctx.progress.set_message("scanning")
        files, errors, scanned = await self._scan(ctx)
        _, failed = await _stage(ctx, "walk", errors, "scanning")

        by_size = group_by(files, lambda f: f.size)
        groups: list[DuplicateGroup[str]] = []
        empty = by_size.pop(0, None)
        if empty:
            groups.append(DuplicateGroup(0, _EMPTY_DIGEST, tuple(_paths(empty))))
        candidates = sorted(f for same_size in by_size.values() for f in same_size)
        ids, n = await _stage(
            ctx,
            "content-id",
            [ContentIdTask(f.index, f.path, f.size) for f in candidates],
            "content ids",
        )
        failed += n

        to_hash: list[list[_File]] = []
        for size, same_size in by_size.items():
            with_id = [(f, ids[f.index]) for f in same_size if f.index in ids]
            for cid, same_id in group_by(with_id, lambda t: t[1]).items():
                members = [f for f, _ in same_id]
                if size <= CONTENT_ID_SMALL_LIMIT:  # the id covered every byte
                    groups.append(DuplicateGroup(size, cid, tuple(_paths(members))))
                else:
                    to_hash.append(members)

        ctx.progress.finalize_totals()
        digests, n = await _stage(
            ctx,
            "full-hash",
            [HashTask(f.index, f.path, f.size, exact=True) for fs in to_hash for f in fs],
            "full hashes",
        )
        failed += n
        for members in to_hash:
            hashed = [(f, digests[f.index][0]) for f in members if f.index in digests]
            for digest, same in group_by(hashed, lambda t: t[1]).items():
                same_files = [f for f, _ in same]
                groups.append(DuplicateGroup(same_files[0].size, digest, tuple(_paths(same_files))))

        groups.sort(key=lambda g: (-g.size, g.digest))
        report = DuplicateReport(tuple(groups))
        return {
            "groups": [
                {"size": g.size, "digest": g.digest, "paths": list(g.paths)} for g in report.groups
            ],
            "duplicate_files": report.duplicate_files,
            "reclaimable_bytes": report.reclaimable_bytes,
            "files_scanned": scanned,
            "failed": failed,
        }

    async def _scan(self, ctx: JobContext) -> tuple[list[_File], list[EntryTask], int]:
        """Walk: candidate files (one per inode, size >= min_size) in walk order, error
        reports, and the number of regular files found."""
        files: list[_File] = []
        errors: list[EntryTask] = []
        inodes: set[tuple[int, int]] = set()
        scanned = 0
        async for entry in walk(ctx, self.paths):
            if entry.kind == "error":
                errors.append(entry_report(entry, "scanned"))
            elif entry.kind == "file":
                scanned += 1
                if _first_link(entry, inodes) and entry.size >= self.min_size:
                    files.append(_File(entry.index, entry.path, entry.size))
        return files, errors, scanned


def _first_link(entry: Entry, inodes: set[tuple[int, int]]) -> bool:
    """True the first time an inode is seen: other hard links to it are left out."""
    key = (entry.dev, entry.ino)
    if key in inodes:
        return False
    inodes.add(key)
    return True


def _paths(files: Sequence[_File]) -> list[str]:
    return sorted(os.fsdecode(f.path) for f in files)


async def _stage(
    ctx: JobContext, name: str, tasks: Sequence[Task[T]], message: str
) -> tuple[dict[int, T], int]:
    """Run one stage: ``({index: value}, failures)``; values of tasks finished by an earlier
    run come back from the store."""
    dispatcher = ctx.task_dispatcher(name, keep_results=True)
    if tasks:
        ctx.progress.set_message(message)
        ctx.progress.add_total(items=len(tasks), bytes=sum(t.weight for t in tasks))
    values: dict[int, T] = {}
    failed = 0
    async for outcome in dispatcher.dispatch_many(tasks, include_resumed=True):
        if outcome.ok or (outcome.resumed and outcome.value is not None):
            assert outcome.value is not None
            values[outcome.index] = outcome.value
        elif outcome.status is OutcomeStatus.FAILED:
            failed += 1
        await ctx.checkpoint()
    return values, failed


__all__ = ["ContentIdTask", "DuplicatesJob", "content_id_cost"]
