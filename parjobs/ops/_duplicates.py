"""DuplicatesJob: find files with identical content, in stages of rising cost.

The stages are those of `parjobs.ops._hashing` (see its docstring for the rules), each with
its own dispatcher so a resumed job skips what every stage finished:

1. walk: group regular files by size (hard links to one inode count once, first in walk
   order; files below ``min_size`` are left out; empty files form one group, never opened);
2. ``content-ids``: `content_id` of every file sharing its size with another, in runs
   (`IdRunTask`: whole size groups packed up to `RUN_FILES` files, one task each), so the job
   books and checkpoints one task per run, not per file; ``content-id`` then retries file by
   file (`ContentIdTask`) the few a run could not read, to report each with its reason;
3. ``full-hash``: the full XXH3-128 digest of files sharing a content id, only for files larger
   than `CONTENT_ID_SMALL_LIMIT` (smaller ones are covered entirely by their content id).

A task's index is its entry's index in the walk manifest (a run's: its first file's), which
is stable across resumes, so the tasks of a stage never shift when the candidate list is
rebuilt: a resumed job skips the runs and files it finished and reads every run again that it
had not (they only read). The content ids are intermediate: only the full hashes are in the
item log (``hashed``). The
report is exactly what `find_duplicates_sequential` returns for the walked files.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence
from contextlib import aclosing
from operator import itemgetter
from typing import Any, TypeVar

from .._context import JobContext
from .._exceptions import JobSpecError
from .._job import Job, job_type
from .._task import OutcomeStatus, Task, TaskContext
from ._entries import EntryTask, HashTask, entry_report
from ._fs import display
from ._hashing import (
    CONTENT_ID_BLOCK,
    CONTENT_ID_SAMPLES,
    CONTENT_ID_SMALL_LIMIT,
    content_id,
    content_ids,
    group_by,
    new_hasher,
)
from ._walk import check_roots, walk_batches

T = TypeVar("T")

_EMPTY_DIGEST = new_hasher("xxh3_128").hexdigest()


def content_id_cost(size: int) -> int:
    """Bytes `content_id` reads from a file of ``size`` bytes."""
    if size <= CONTENT_ID_SMALL_LIMIT:
        return size
    return CONTENT_ID_BLOCK * (CONTENT_ID_SAMPLES + 2)


@dataclasses.dataclass(slots=True)
class ContentIdTask(Task[str]):
    """The content id of one file, which must still have the size it was listed with: for a
    file the `IdRunTask` that held it could not read, so the failure is reported (or a
    passing one overcome) file by file."""

    cluster = True  # reads only

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
        cid = content_id(self.path, size=self.size)
        tc.add_bytes(content_id_cost(self.size))
        return cid


#: A piece of a size group in an `IdRunTask`: ``(size, [(index, path)], whole)``; ``whole``
#: is False where a size group larger than `RUN_FILES` was split over several runs.
Piece = tuple[int, list[tuple[int, bytes]], bool]

#: Files per `IdRunTask` (whole size groups are packed until this many; a bigger size group
#: is split): few tasks for the job to book, yet enough to keep every worker busy, and
#: little to redo after a crash. A run reads through C (`content_ids`) at ~9 us a cached
#: small file: 512 make ~5 ms, well above the pool's 1 ms "tiny task" mark, so runs spread
#: over the cores (runs of 128 took ~1 ms, which the pool may hold to one thread on two
#: cores).
RUN_FILES = 512
#: ... or until the run reads this many bytes (`content_id_cost`): 341 large files.
RUN_BYTES = 16 << 20


@dataclasses.dataclass(slots=True)
class IdRunTask(Task[dict[str, list[Any]]]):
    """The content ids of a run of candidates (whole size groups, or pieces of a big one),
    in one task and one worker-thread call: one booking and one checkpoint row for up to
    `RUN_FILES` files instead of one each.

    The value (JSON) is ``{"ids": [[cid, [index, ...]], ...], "failed": [index, ...]}``: of a
    whole size group only the ids two or more files share (a file with a unique id has no
    duplicate), of a split or partly failed group every id (other runs or the file-by-file
    retry of ``failed`` may hold its match). It reads only, so a run interrupted or killed
    is simply run again whole on resume.
    """

    cluster = True  # reads only

    index: int  # the smallest walk index of its files: stable across resumes
    pieces: list[Piece]
    cost: int  # bytes `content_id` reads from its files
    items: int  # its files: progress counts files, not runs

    @property
    def weight(self) -> int:
        return self.cost

    def label(self) -> str:
        return display(self.pieces[0][1][0][1])

    def run(self, tc: TaskContext) -> dict[str, list[Any]]:
        cids = content_ids(
            [(path, size) for size, files, _ in self.pieces for _, path in files], check=tc.check
        )
        ids: list[list[Any]] = []
        failed: list[int] = []
        at = 0
        for size, files, whole in self.pieces:
            same: dict[str, list[int]] = {}
            lost = 0
            for (index, _), cid in zip(files, cids[at : at + len(files)], strict=True):
                if cid is None:  # left to a ContentIdTask, which reports why
                    failed.append(index)
                    lost += 1
                else:
                    same.setdefault(cid, []).append(index)
            at += len(files)
            tc.add_bytes(content_id_cost(size) * (len(files) - lost))
            every = lost or not whole
            ids.extend([cid, members] for cid, members in same.items() if every or members[1:])
        return {"ids": ids, "failed": failed}


#: A candidate: ``(walk index, path, size)``. A plain tuple: ~15,000 of them for a big tree,
#: cheaper to build than any class, and untracked by the garbage collector (whose passes
#: over a job's long-lived objects were a tenth of its CPU).
_File = tuple[int, bytes, int]

_FS_CODEC = (sys.getfilesystemencoding(), sys.getfilesystemencodeerrors())


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

        by_size = group_by(files, itemgetter(2))
        groups: list[tuple[int, str, list[str]]] = []  # (size, digest, paths)
        empty = by_size.pop(0, None)
        if empty:
            groups.append((0, _EMPTY_DIGEST, _paths(empty)))
        same_id, n = await _content_ids(ctx, by_size)
        failed += n

        to_hash: list[list[_File]] = []
        for (size, cid), members in same_id.items():
            if len(members) < 2:
                continue
            if size <= CONTENT_ID_SMALL_LIMIT:  # the id covered every byte
                groups.append((size, cid, _paths(members)))
            else:
                to_hash.append(members)

        ctx.progress.finalize_totals()
        digests, n = await _stage(
            ctx,
            "full-hash",
            [HashTask(index, path, size, exact=True) for fs in to_hash for index, path, size in fs],
            "full hashes",
        )
        failed += n
        for members in to_hash:
            hashed = [(f, digests[f[0]][0]) for f in members if f[0] in digests]
            for digest, same in group_by(hashed, itemgetter(1)).items():
                groups.append((same[0][0][2], digest, _paths([f for f, _ in same])))

        groups.sort(key=lambda g: (-g[0], g[1]))  # largest first, then by digest
        return {
            "groups": [{"size": size, "digest": d, "paths": paths} for size, d, paths in groups],
            "duplicate_files": sum(len(paths) - 1 for _, _, paths in groups),
            "reclaimable_bytes": sum(size * (len(paths) - 1) for size, _, paths in groups),
            "files_scanned": scanned,
            "failed": failed,
        }

    async def _scan(self, ctx: JobContext) -> tuple[list[_File], list[EntryTask], int]:
        """Walk: candidate files (one per inode, size >= min_size) in walk order, error
        reports, and the number of regular files found."""
        files: list[_File] = []
        errors: list[EntryTask] = []
        inodes: set[tuple[int, int]] = set()  # of files with other names (as `HardLinks`)
        scanned = 0
        min_size = self.min_size
        async with aclosing(walk_batches(ctx, self.paths)) as batches:
            async for batch in batches:
                for entry in batch:
                    kind = entry.kind
                    if kind == "file":
                        scanned += 1
                        if entry.nlink > 1:
                            inode = (entry.dev, entry.ino)
                            if inode in inodes:  # another link to a file already listed
                                continue
                            inodes.add(inode)
                        if entry.size >= min_size:
                            files.append((entry.index, entry.path, entry.size))
                    elif kind == "error":
                        errors.append(entry_report(entry, "scanned"))
        return files, errors, scanned


async def _content_ids(
    ctx: JobContext, by_size: dict[int, list[_File]]
) -> tuple[dict[tuple[int, str], list[_File]], int]:
    """``({(size, content id): files}, failures)`` for the files of ``by_size`` that may
    have a duplicate (a file whose id no other file of its size shares may be left out):
    runs of whole size groups first, then file by file what a run could not read, so each
    failure is reported with its own path and reason."""
    runs = _runs(by_size)
    values, _ = await _stage(ctx, "content-ids", runs, "content ids")
    by_index = {f[0]: f for same in by_size.values() for f in same}
    same_id: dict[tuple[int, str], list[_File]] = {}
    again: list[int] = []
    for run in runs:
        value = values.get(run.index)
        if value is None:  # the run failed whole (a timeout, say): its files one by one
            again.extend(index for _, files, _ in run.pieces for index, _ in files)
            continue
        for cid, members in value["ids"]:  # the members of one entry share their size
            files = [by_index[index] for index in members]
            same_id.setdefault((files[0][2], cid), []).extend(files)
        again.extend(value["failed"])
    if not again:
        return same_id, 0
    singles, failed = await _stage(
        ctx,
        "content-id",
        [ContentIdTask(i, by_index[i][1], by_index[i][2]) for i in sorted(again)],
        "content ids",
    )
    for index, cid in singles.items():
        f = by_index[index]
        same_id.setdefault((f[2], cid), []).append(f)
    return same_id, failed


def _runs(by_size: dict[int, list[_File]]) -> list[IdRunTask]:
    """The `IdRunTask` s of the content-id stage: size groups in ``by_size`` order packed
    into runs of up to `RUN_FILES` files and `RUN_BYTES` read, a bigger size group split.
    The same candidates always give the same runs (and indices), so a resumed job finds
    the runs it finished."""
    runs: list[IdRunTask] = []
    pieces: list[Piece] = []
    files = cost = 0
    for size, same in by_size.items():
        whole = len(same) <= RUN_FILES
        each = content_id_cost(size)
        for start in range(0, len(same), RUN_FILES):
            part = same[start : start + RUN_FILES]
            if pieces and (files + len(part) > RUN_FILES or cost + each * len(part) > RUN_BYTES):
                runs.append(_run(pieces, cost))
                pieces, files, cost = [], 0, 0
            pieces.append((size, [(index, path) for index, path, _ in part], whole))
            files += len(part)
            cost += each * len(part)
    if pieces:
        runs.append(_run(pieces, cost))
    return runs


def _run(pieces: list[Piece], cost: int) -> IdRunTask:
    indices = [index for _, files, _ in pieces for index, _ in files]
    return IdRunTask(min(indices), pieces, cost, len(indices))


def _paths(files: Sequence[_File]) -> list[str]:
    """The report's paths: decoded as `os.fsdecode` does, sorted."""
    return sorted([path.decode(*_FS_CODEC) for _, path, _ in files])


async def _stage(
    ctx: JobContext, name: str, tasks: Sequence[Task[T]], message: str
) -> tuple[dict[int, T], int]:
    """Run one stage: ``({index: value}, failures)``; values of tasks finished by an earlier
    run come back from the store."""
    dispatcher = ctx.task_dispatcher(name, keep_results=True)
    if tasks:
        ctx.progress.set_message(message)
        ctx.progress.add_total(
            items=sum(t.items for t in tasks), bytes=sum(t.weight for t in tasks)
        )
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


__all__ = ["ContentIdTask", "DuplicatesJob", "IdRunTask", "content_id_cost"]
