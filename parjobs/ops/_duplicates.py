"""DuplicatesJob: find files with identical content, in stages of rising cost.

The stages are those of `parjobs.ops._hashing` (see its docstring for the rules), each with
its own dispatcher so a resumed job skips what every stage finished:

1. scan: list the tree (`_scan_tree`: in one C call where `_fastscan` is built, no object
   made for a file not kept) and keep the files that share their size with another (hard
   links to one inode count once, first in walk order; files below ``min_size`` are left
   out; empty files form one group, never opened), numbered in walk order and saved in the
   job's directory (`Scan`) before any task runs; ``scan`` reports what could not be listed;
2. ``id-runs``: `content_id` of every candidate, in runs (`IdRunTask`: whole size groups
   packed up to `RUN_FILES` files, one task each), so the job books and checkpoints one
   task per run, not per file; ``id-files`` then retries file by file (`ContentIdTask`) the
   few a run could not read, to report each with its reason. A run whose every id the
   `Prescan` computed before the job ran is answered from them, no task (`_answered`);
3. ``hash-runs``: the full XXH3-128 digest of files sharing a content id, only for files
   larger than `CONTENT_ID_SMALL_LIMIT` (smaller ones are covered entirely by their content
   id), in runs (`HashRunTask`, one task each, each file still recorded on its own; its
   files read in calls into C of up to `HASH_CALL_BYTES`, where it is built);
   ``hash-files`` then hashes file by file (`HashTask`) what a run did not, to report each
   failure with its reason.

A task's index is its file's number in the saved scan (a run's: its first file's), which a
resumed job reads back instead of walking again, so the tasks of a stage never shift: a
resumed job skips the runs and files it finished and reads every content-id run again that
it had not (they only read). A hash run is planned from the scan alone (`_hash_plan`), so
its index and the files it may hold do not depend on content ids (a file whose id failed in
the first run may have one on resume); its value names the files it hashed, and a file of a
run that it does not name goes to ``hash-files``, so no file is hashed (and recorded) twice.
A value an earlier run checkpointed is reused only for a file unchanged since the first run
that recorded a value began (`_since`, `_Changed`: its ctime before that start, kept in the
job's state, and its size the scan's); a content-id run holding a changed file is read again
file by file, and a changed file's hash again alone, in stages of the run's own
(``id-recheck-N``, ``hash-recheck-N``, N the run's number), so a file rewritten during a
pause is never grouped by what it held before. A later run takes such a file's value from
the newest of those stages whose run began after the file's ctime (`_recheck`: each run's
start kept in the job's state, saved with its stage's first checkpoint), so a file changed
during one pause is read again once, not at every later resume, and again only if it
changed again. Progress counts each file once a stage, as an uninterrupted run does: what
is read again counts neither as an item nor in bytes (the run that read it first counted
both), but a re-read that fails moves its file from done to failed (`_Uncounted`, which
a later run counts as an item again), and a file a run could not read is counted by the
file-by-file stage that reads it again (one item, done or failed), not by the run, whose
total holds it. A resumed run's totals are what earlier runs counted (the store's counts)
plus what is left to do (`_stage`), not what its own plan would count for the tasks they
finished: a file deleted, grown or rewritten since leaves a finished hash run fewer files
to hash now, and done would pass the totals.
(The stages were ``walk``, ``content-ids``, ``content-id`` and ``full-hash`` while the
indices were those of the walk's manifest, then ``hashes`` with one task a file: renamed,
so a job begun that way and resumed now starts those stages afresh rather than misread
their records.) The content ids are intermediate: only the full hashes are in the item log
(``hashed``). The report has the groups `find_duplicates_sequential` finds for the walked
files, each group's paths sorted.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import json
import os
import stat
import sys
from bisect import bisect_right
from collections.abc import Callable, Collection, Sequence
from itertools import accumulate
from json.encoder import encode_basestring_ascii
from operator import itemgetter
from typing import Any, NamedTuple, TypeVar

import trio
from outcome import Outcome, acapture

from .._context import JobContext
from .._exceptions import Interrupted, JobSpecError
from .._job import Job, job_type, runtime_field
from .._task import OutcomeStatus, Task, TaskContext
from . import _hashing
from ._entries import EntryTask, HashTask
from ._fs import display
from ._hashing import (
    CONTENT_ID_BLOCK,
    CONTENT_ID_SAMPLES,
    CONTENT_ID_SMALL_LIMIT,
    DEFAULT_CHUNK_SIZE,
    content_id,
    content_ids,
    full_hashes,
    full_hashes_in_c,
    group_by,
    hash_file,
    new_hasher,
)
from ._paths import absolute_paths
from ._prescan import Prescan, Scanned, clock_ns, scan_roots
from ._walk import WALKS, Listed, ManifestLostError, check_roots, list_files, sync_job_file_dirs

T = TypeVar("T")

_EMPTY_DIGEST = new_hasher("xxh3_128").hexdigest()


def content_id_cost(size: int) -> int:
    """Bytes `content_id` reads from a file of ``size`` bytes."""
    if size <= CONTENT_ID_SMALL_LIMIT:
        return size
    return CONTENT_ID_BLOCK * (CONTENT_ID_SAMPLES + 2)


#: A candidate: ``(walk index, path, size)``. A plain tuple: ~15,000 of them for a big tree,
#: cheaper to build than any class, and untracked by the garbage collector (whose passes
#: over a job's long-lived objects were a tenth of its CPU).
_File = tuple[int, bytes, int]


@dataclasses.dataclass(slots=True)
class ContentIdTask(Task[str]):
    """The content id of one file, which must still have the size it was listed with: for a
    file the `IdRunTask` that held it could not read, so the failure is reported (or a
    passing one overcome) file by file, or for one read again on resume (``id-recheck-N``).

    Progress counts each file once: a file its run could not read is counted here, not by
    the run (`IdRunTask` counts only the ids it found); ``items`` is 0 for a file read again
    on resume (an earlier run counted it; a failure moves it from done to failed, and one
    whose re-read failed before, or no read counted, is an item again: `_recheck`), and
    ``counted_bytes`` says its read's bytes are counted too (a file read again because it
    changed since an earlier run read it), so a re-read is not counted twice."""

    cluster = True  # reads only

    index: int
    path: bytes
    size: int
    items: int = dataclasses.field(default=1, kw_only=True)
    counted_bytes: bool = dataclasses.field(default=False, kw_only=True)

    @property
    def weight(self) -> int:
        return content_id_cost(self.size)

    def label(self) -> str:
        return display(self.path)

    def run(self, tc: TaskContext) -> str:
        tc.check()
        cid = content_id(self.path, size=self.size)
        if not self.counted_bytes:
            tc.add_bytes(content_id_cost(self.size))
        return cid


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
class _FileRun(Task[T]):
    """A task over a run of candidates, one after the other in one worker-thread call: one
    booking and one checkpoint row for many files."""

    cluster = True  # reads only

    index: int  # its first file's number: stable across resumes
    files: list[_File]
    cost: int  # bytes it reads from its files
    items: int  # its files: progress counts files, not runs

    @property
    def weight(self) -> int:
        return self.cost

    def label(self) -> str:
        return display(self.files[0][1])


@dataclasses.dataclass(slots=True)
class IdRunTask(_FileRun[dict[str, list[Any]]]):
    """The content ids of a run of candidates (whole size groups, or parts of a big one), in
    one task and one worker-thread call: one booking and one checkpoint row for up to
    `RUN_FILES` files instead of one each.

    The value (JSON) is ``{"ids": [[cid, [index, ...]], ...], "failed": [index, ...]}``: of a
    whole size group only the ids two or more files share (a file with a unique id has no
    duplicate), of a split (``split``) or partly failed group every id (other runs or the
    file-by-file retry of ``failed`` may hold its match). It reads only, so a run
    interrupted or killed is simply run again whole on resume. Its ``files`` are its size
    groups one after the other, in `_runs` order. It counts as done only the files it found
    an id for (``items``): ``id-files`` counts each failed one, done or failed, once.
    """

    #: The sizes of its groups that are split over several runs.
    split: list[int] = dataclasses.field(kw_only=True)
    #: Its files' content ids computed before the job ran (`Prescan.known`); it reads the
    #: files that have none (None, or an errno: a file the prescan could not read); None: all.
    known: list[str | int | None] | None = dataclasses.field(default=None, kw_only=True)

    def run(self, tc: TaskContext) -> dict[str, list[Any]]:
        self.items = 0  # (if it fails whole: its files are read alone, and counted there)
        cids: list[str | None]
        if self.known is None:
            cids = content_ids([(path, size) for _, path, size in self.files], check=tc.check)
        else:
            pairs = zip(self.files, self.known, strict=True)
            unknown = [(f[1], f[2]) for f, cid in pairs if not isinstance(cid, str)]
            read = iter(content_ids(unknown, check=tc.check))
            cids = [cid if isinstance(cid, str) else next(read) for cid in self.known]
        same: dict[tuple[int, str], list[int]] = {}
        failed: list[int] = []
        every = set(self.split)  # sizes whose every id goes in the value
        missed = 0  # bytes not read after all
        for (index, _, size), cid in zip(self.files, cids, strict=True):
            if cid is None:  # left to a ContentIdTask, which reports why
                failed.append(index)
                every.add(size)
                missed += content_id_cost(size)
            else:
                same.setdefault((size, cid), []).append(index)
        tc.add_bytes(self.cost - missed)
        self.items = len(self.files) - len(failed)  # ``id-files`` counts the failed ones
        ids = [[cid, m] for (size, cid), m in same.items() if m[1:] or size in every]
        return {"ids": ids, "failed": failed}


#: Bytes a `HashRunTask` may hash, by the plan (`_hash_plan`): few tasks to book (a run of
#: cached files hashes in a few ms), yet enough of them to keep every worker busy, and little
#: to redo after a crash; a bigger file is a run of its own.
HASH_RUN_BYTES = 16 << 20
#: ... and files it may hold.
HASH_RUN_FILES = 256


@dataclasses.dataclass(slots=True)
class HashRunTask(_FileRun[list[list[Any]]]):
    """The full hashes of a run of files, one after the other in one task and one
    worker-thread call: one booking and one checkpoint row for many files, each still
    recorded on its own (``hashed``, as `HashTask` records it).

    The value (JSON) is ``[[index, digest], ...]`` for the files it hashed: a file that
    could not be read, or changed since it was listed, is left out (``hash-files`` hashes
    it again alone and reports why); a pause or cancel ends the run early with what it
    finished (recorded, never hashed again) and ``[index, None]`` for each file it did not
    reach (``hash-files`` hashes those too). It counts as done only the files it hashed
    (``items``): ``hash-files`` counts each other one, done or failed, once. Its
    index is its plan's first file's (`_hash_plan`), its ``files`` those of the plan that
    share a content id with another (`_fill`).
    """

    def run(self, tc: TaskContext) -> list[list[Any]]:
        self.items = 0  # (if it fails whole: its files are hashed alone, and counted there)
        done: list[list[Any]] = []
        limit = HASH_CALL_BYTES if full_hashes_in_c() else 0
        buffer: bytearray | None = None  # one for the run's reads in Python
        reached = 0  # files of the run read (or tried)
        for part in _hash_calls(self.files, limit):
            try:
                tc.check()
            except Interrupted:
                break
            if limit and part[0][2] <= limit:  # in one call into C
                digests = full_hashes([(path, size) for _, path, size in part])
                for (index, path, size), digest in zip(part, digests, strict=True):
                    if digest is not None:  # (else left to a HashTask, which says why)
                        _hashed(tc, done, index, path, size, digest)
                reached += len(part)
                continue
            ((index, path, size),) = part  # a big file, or no C: checked between chunks
            if buffer is None:
                buffer = bytearray(DEFAULT_CHUNK_SIZE)
            chunks: list[int] = []
            one: str | None
            try:
                one = hash_file(path, check=tc.check, on_bytes=chunks.append, buffer=buffer)
            except Interrupted:
                break
            except OSError:  # (a timeout too) left to a HashTask, which reports it
                one = None
            reached += 1
            # (Read, not the size listed: changed since, which the HashTask reports.)
            if one is not None and sum(chunks) == size:
                _hashed(tc, done, index, path, size, one)
        self.items = len(done)  # ``hash-files`` counts the others
        done += [[index, None] for index, _, _ in self.files[reached:]]
        return done


#: Bytes a `HashRunTask` hashes in one call into C (`_fastscan.full_hashes`), its files one
#: after the other: the GIL released once for them, where ``hash_file`` releases and takes
#: it again for each syscall and chunk (the benchmark's 508 files, 184 MB, on the pool's 8
#: threads and 2 cores: ~43 ms of the threads' CPU instead of ~100, the stage ~38 ms instead
#: of ~90). A pause waits for this much to be read at most (~1 ms cached); a bigger file is
#: hashed in Python, checked between its chunks.
HASH_CALL_BYTES = 4 << 20


def _hash_calls(files: list[_File], limit: int) -> list[list[_File]]:
    """``files`` in order, cut into parts of up to ``limit`` bytes (a bigger file alone)."""
    parts: list[list[_File]] = []
    part: list[_File] = []
    cost = 0
    for f in files:
        if part and cost + f[2] > limit:
            parts.append(part)
            part, cost = [], 0
        part.append(f)
        cost += f[2]
    if part:
        parts.append(part)
    return parts


def _hashed(
    tc: TaskContext, done: list[list[Any]], index: int, path: bytes, size: int, digest: str
) -> None:
    """A file a `HashRunTask` hashed, whole and unchanged: counted, recorded and kept."""
    tc.add_bytes(size)
    tc.record("hashed", path, bytes=size, detail=f"xxh3_128:{digest}")
    done.append([index, digest])


@dataclasses.dataclass(slots=True)
class _HashAgain(HashTask):
    """A `HashTask` for a file changed since an earlier run hashed it (``hash-recheck-N``):
    hashed again, but counted neither as an item nor in bytes (the earlier run counted
    both), so each file counts once in the totals (a failure moves it from done to failed:
    `_recheck`). Alone, never in a group (whose path
    counts bytes)."""

    items = 0
    group_size = 1

    def run(self, tc: TaskContext) -> list[Any]:
        return self._uncounted(tc)


_FS_CODEC = (sys.getfilesystemencoding(), sys.getfilesystemencodeerrors())


# Version 2: the spec is version 1's, the state is not: a ``hash-runs`` value names the files
# its run did not hash (``[index, None]``, since da8c0b6), which parjobs before that read as
# their digest (a dupes job paused here and resumed by bb7f9b7 lost a file of a group, or
# failed). Stored as 2, such a job is refused there: "stored by version 2, newer than this
# code's version 1; upgrade parjobs". A job stored as 1 loads unchanged (`Job.upgrade_spec`).
@job_type("duplicates", version=2)
class DuplicatesJob(Job):
    """Find duplicate files under ``paths`` (files or directories, walked recursively).

    Result: ``{"groups": [{"size", "digest", "paths"}], "duplicate_files",
    "reclaimable_bytes", "files_scanned", "failed"}`` — groups largest first, then by digest;
    each group's paths sorted (as str); ``files_scanned`` counts every regular file the walk
    found (hard links and files below ``min_size`` included); ``failed`` counts files that
    could not be read (they are in no group; ``manager.errors`` says why).
    """

    paths: list[str]
    min_size: int = 1
    #: The report of the run that just ended here, for `result_json` (not in the spec).
    _last_report: _Report | None = runtime_field()
    #: A scan of ``paths`` begun before the job ran (`Prescan`: the CLI starts it while it
    #: starts up), which the first run takes instead of scanning itself (not in the spec).
    prescan: Prescan | None = runtime_field()

    def validate(self) -> None:
        check_roots("duplicates", self.paths)
        self.paths = absolute_paths("duplicates", self.paths)
        if self.min_size < 0:
            raise JobSpecError(f"duplicates: min_size must be >= 0, got {self.min_size}")

    async def run(self, ctx: JobContext) -> dict[str, Any]:
        ctx.progress.set_message("scanning")
        prescan, self.prescan = self.prescan, None  # (once: a retry scans again)
        # When the first run that recorded a value began (its prescan, if any): a value an
        # earlier run checkpointed is reused only for a file unchanged since (`_Changed`).
        began = prescan.began_ns if prescan is not None else clock_ns()
        since = _since(ctx, began)
        changed = _Changed(since, began) if since is not None else None
        if ctx.resumed:  # what earlier runs counted: the stages add only what is left to do
            p = ctx.progress
            p.add_total(items=p.items_done + p.items_skipped, bytes=p.bytes_done + p.bytes_skipped)
        scan, save = await _scanned(ctx, self.paths, self.min_size, prescan)
        taken = prescan if prescan is not None and prescan.taken else None
        known = taken.known if taken is not None else None
        if prescan is not None:
            prescan.drop()  # (its ids, if the job did not take its scan)
        files = scan.files
        saved: list[Outcome[None]] = []
        async with trio.open_nursery() as nursery:
            # Made durable before any stage runs. (Its thread begins once the planning below
            # is done: planned in a thread beside it, the save's syscalls each waited for the
            # GIL the planning held, ~25-28 ms for both either way: docs/benchmarks.md.)
            if save is not None:
                nursery.start_soon(_in_thread, saved, save)
            # Each candidate shares its size with another. (Grouped so by the prescan already.)
            by_size = taken.by_size if taken is not None else None
            if by_size is None:
                by_size = {}
                for f in files:
                    by_size.setdefault(f[2], []).append(f)
            empty = by_size.pop(0, None)
            runs, answered = _answered(_runs(by_size), known or {})
        for done in saved:
            done.unwrap()  # (here: a failure as it is, not in the nursery's exception group)
        if save is not None:  # saved, before any stage runs: every checkpoint carries it
            ctx.state.setdefault(WALKS, {}).setdefault(SCAN_FILE, ctx.job_dir)
        errors = [EntryTask(i, path, reason, skip=False) for i, path, reason in scan.errors]
        _, failed = await _stage(ctx, "scan", errors, "scanning")
        same_id, n = await _content_ids(ctx, files, runs, answered, changed)
        failed += n

        found: list[tuple[int, str, list[int]]] = []  # (size, digest, indices)
        if empty:
            found.append((0, _EMPTY_DIGEST, [f[0] for f in empty]))
        to_hash: list[list[int]] = []
        for (size, cid), members in same_id.items():
            if len(members) < 2:
                continue
            if size <= CONTENT_ID_SMALL_LIMIT:  # the id covered every byte
                found.append((size, cid, members))
            else:
                to_hash.append(members)

        # The groups settled so far (every size up to CONTENT_ID_SMALL_LIMIT) are reported
        # in a worker thread while the full hashes run: the report's ~15 ms of C then uses
        # what the hash threads leave of the two cores instead of following them alone. The
        # groups hashed are larger, so theirs come first, then these (`_joined`).
        # (The stage's outcome is taken as it is, so that a pause or a failure leaves the
        # nursery as itself, not in an exception group, once the report's thread is done.)
        settled: list[Outcome[_Report]] = []
        async with trio.open_nursery() as nursery:
            if found and to_hash:
                nursery.start_soon(_in_thread, settled, functools.partial(_report, files, found))
                found = []
            hashes = await acapture(_full_hashes, ctx, files, to_hash, changed)
        digests, n = hashes.unwrap()  # (the totals are final there)
        failed += n
        for members in to_hash:
            size = files[members[0]][2]
            hashed = [(i, digests[i]) for i in members if i in digests]
            for digest, same in group_by(hashed, itemgetter(1)).items():
                found.append((size, digest, [i for i, _ in same]))

        report = _report(files, found)
        for small in settled:
            report = _joined(report, small.unwrap())
        self._last_report = report
        return {
            "groups": report.groups,
            "duplicate_files": report.copies,
            "reclaimable_bytes": report.reclaimable,
            "files_scanned": scan.scanned,
            "failed": failed,
        }

    def result_json(self, result: Any) -> str | None:
        """The result as ``json.dumps`` writes it: with the groups' text `_report` made for
        them if it could (no string to escape), else built from its paths and digests
        (`_result_json`)."""
        report, self._last_report = self._last_report, None
        if report is None or report.text is None or result.get("groups") is not report.groups:
            return _result_json(result)
        return _joined_json(report.text, result)


#: The ASCII characters ``json.dumps`` escapes in a string (it escapes every other one too).
_ESCAPED = "".join([chr(c) for c in range(0x20)]) + '"\\\x7f'
#: Escaped strings beyond this share of a result's strings (a tree of non-Latin names, say)
#: leave it to ``json.dumps``: one search and one lookup a string would cost more than its
#: single pass.
_ESCAPED_SHARE = 8


def _result_json(result: dict[str, Any]) -> str | None:
    """``json.dumps(result)`` for a `DuplicatesJob` result, built by joining its strings (the
    generic encoder escapes every string character by character, and every group's keys
    again: 58 M instructions for the result of two copies of ``/usr/share/doc``, 3,988
    groups and 9,428 paths; this builds the same text in ~27 M). Its check is a ``memchr``
    over all the strings for each character that would be escaped; if one is found, only the
    strings holding one are escaped (by ``json``'s own escaper: `_escaped`), so one odd name
    does not send the whole result to ``json.dumps``. None (``json.dumps`` then writes it)
    for a result of another shape, or one where most strings need escaping.
    """
    groups = result.get("groups")
    if not groups or next(iter(result)) != "groups":
        return None
    if {type(g["size"]) for g in groups} != {int}:  # (a bool would print as True)
        return None
    digests = [g["digest"] for g in groups]
    texts = digests[:]
    for g in groups:
        texts += g["paths"]
    try:
        joined = "".join(texts)
    except TypeError:  # not all str
        return None
    paths = [g["paths"] for g in groups]
    present = [c for c in _ESCAPED if c in joined]
    if present or not joined.isascii():
        escaped = _escaped(texts, joined, present)
        if escaped is None:
            return None
        n = len(groups)
        ends = list(accumulate([len(names) for names in paths]))
        copied: set[int] = set()
        for k, text in escaped.items():
            if k < n:
                digests[k] = text
                continue
            at = k - n  # in the groups' paths, one after the other
            g = bisect_right(ends, at)
            if g not in copied:  # the result's own list stays as it is
                paths[g] = paths[g][:]
                copied.add(g)
            paths[g][at - (ends[g - 1] if g else 0)] = text
    sep = '", "'
    body = ", ".join(
        [
            f'{{"size": {g["size"]}, "digest": "{digest}", "paths": ["{sep.join(names)}"]}}'
            for g, digest, names in zip(groups, digests, paths, strict=True)
        ]
    )
    return _joined_json(body, result)


def _joined_json(body: str, result: dict[str, Any]) -> str:
    """``json.dumps(result)``, ``body`` being the JSON text of ``result["groups"]`` (the
    first key) without its brackets."""
    rest = json.dumps({k: v for k, v in result.items() if k != "groups"})
    return '{"groups": [' + body + (("], " + rest[1:]) if rest != "{}" else "]}")


def _needs_escaping(text: str) -> bool:
    """Whether ``json.dumps`` would escape a character of ``text`` but a NUL (which no path
    or digest holds: `_report` uses it as its separator)."""
    return not text.isascii() or any(c in text for c in _ESCAPED[1:])


def _escaped(texts: list[str], joined: str, present: list[str]) -> dict[int, str] | None:
    """``{k: text}`` for each string of ``texts`` (``joined`` is their concatenation, and
    ``present`` the ASCII characters of `_ESCAPED` it holds) with a character JSON escapes:
    its escaped text without the quotes, as ``json.dumps`` writes it; None if more than one
    in `_ESCAPED_SHARE` (and 64) would be. Found without a pass in Python over their
    characters: a string knows whether it is ASCII, and each ASCII character to escape is
    looked for with ``str.find`` (``memchr``), its string then by bisection."""
    limit = max(64, len(texts) // _ESCAPED_SHARE)
    odd: set[int] = set()
    if not joined.isascii():
        odd = {k for k, plain in enumerate(map(str.isascii, texts)) if not plain}
    if present and len(odd) <= limit:
        ends = list(accumulate([len(t) for t in texts]))
        for c in present:
            at = joined.find(c)
            while at >= 0 and len(odd) <= limit:
                k = bisect_right(ends, at)  # the string it is in; on after that string
                odd.add(k)
                at = joined.find(c, ends[k])
    if len(odd) > limit:
        return None
    return {k: encode_basestring_ascii(texts[k])[1:-1] for k in odd}


#: The job's record of its scan, in its job directory (see `Scan`).
SCAN_FILE = "dupes.scan"


@dataclasses.dataclass(slots=True)
class Scan:
    """What the scan found, as the job keeps it: ``files``, the candidates (regular files of
    at least ``min_size`` bytes, one name per inode: the first in walk order, sharing their
    size with another) as `_File` s numbered in walk order; ``errors``, ``(index, path,
    reason)`` of what could not be listed; ``scanned``, every regular file found (hard
    links and small files included).

    Written once, before any task of the job runs, and read back on resume instead of
    walking again: the numbers are the task indices of every stage, so they must not move
    (new files since the first run are not looked at, as a resumed walk's manifest would
    keep gone ones). Layout: one line of JSON (``scanned``, the sizes, the errors with
    surrogate-escaped paths), then the candidates' paths as bytes, NUL-separated.
    """

    files: list[_File]
    errors: list[tuple[int, bytes, str]]
    scanned: int

    def save(self, path: str) -> None:
        """Write to a temporary name (private to the user), sync it, rename it, sync the
        directories up to the store's (`sync_job_file_dirs`): the record is whole or absent,
        and durable before any checkpoint can name its numbers (a power loss must not leave
        checkpoints without their scan)."""
        head = {
            "scanned": self.scanned,
            "sizes": [size for _, _, size in self.files],
            "errors": [[os.fsdecode(p), reason] for _, p, reason in self.errors],
        }
        temporary = path + ".tmp"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(json.dumps(head, separators=(",", ":")).encode() + b"\n")
            f.write(b"\0".join([p for _, p, _ in self.files]))
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)  # the job's private directory: nobody else writes it
        sync_job_file_dirs(path)

    @classmethod
    def load(cls, path: str) -> Scan | None:
        """The record an earlier run saved, or None if there is none."""
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return None
        line, _, body = data.partition(b"\n")
        head = json.loads(line)
        sizes: list[int] = head["sizes"]
        paths = body.split(b"\0") if sizes else []
        if len(paths) != len(sizes):
            raise ValueError(f"{path}: {len(paths)} paths for {len(sizes)} sizes (damaged)")
        errors = [(i, os.fsencode(p), reason) for i, (p, reason) in enumerate(head["errors"])]
        files = [(i, p, size) for i, (p, size) in enumerate(zip(paths, sizes, strict=True))]
        return cls(files, errors, head["scanned"])


async def _scanned(
    ctx: JobContext, roots: list[str], min_size: int, prescan: Prescan | None = None
) -> tuple[Scan, Callable[[], None] | None]:
    """The job's `Scan` and what saves it: the one an earlier run saved (nothing to save),
    else a walk of ``roots`` (in one worker-thread call, stopped by a pause or cancel; the
    ``prescan``'s if it is of these roots) and its `Scan.save`, which the caller must see
    done before any stage runs (it plans the stages meanwhile: the save is mostly two
    ``fsync`` s)."""
    path = os.path.join(ctx.job_dir, SCAN_FILE)
    scan = await trio.to_thread.run_sync(Scan.load, path)
    walked = ctx.state.setdefault(WALKS, {}).get(SCAN_FILE)
    if scan is not None:
        # (Recorded here too for a job begun before the record was: its next run's check.)
        ctx.state[WALKS].setdefault(SCAN_FILE, ctx.job_dir)
        return scan, None
    if walked is not None:  # a new scan would number the files otherwise (see WALKS)
        raise ManifestLostError(
            f"the record of its scan ({path}) is gone, so a resume cannot tell which "
            f"files are done (it was in {walked}: the store opened by another path, "
            "through a symlink or moved, or on a host whose $PARJOBS_JOB_FILES is "
            "elsewhere?); resume it where that is, or cancel it and start anew"
        )
    found = await trio.to_thread.run_sync(
        _scan_tree, roots, min_size, lambda: ctx.interrupt_reason is not None, prescan
    )
    if found is None:  # stopped: raises the pause or cancel
        await ctx.check_interrupt()
    assert found is not None
    files, errors, scanned = found
    scan = Scan(files, [(i, *e) for i, e in enumerate(errors)], scanned)
    return scan, functools.partial(scan.save, path)


async def _in_thread(into: list[Outcome[T]], fn: Callable[[], T]) -> None:
    """``fn()`` in a worker thread, its outcome (value or exception) appended to ``into``."""
    into.append(await acapture(trio.to_thread.run_sync, fn))


def _scan_tree(
    roots: list[str], min_size: int, stopped: Callable[[], bool], prescan: Prescan | None = None
) -> Scanned | None:
    """The scan's ``(candidates, errors, regular files found)`` (see `Scan`), None as soon as
    ``stopped()``: in one C call (`_fastscan.scan_tree`, the GIL released while it lists,
    no object made for a file that is no candidate) where the extension is built (the
    ``prescan``'s call, begun earlier, when it is this call), else `list_files` then
    `_candidates`, with the same result."""
    if _hashing.fastscan is not None:
        normalized = scan_roots(roots)
        if prescan is not None and prescan.matches(normalized, min_size):
            return prescan.take(stopped)
        scanned: Scanned | None = _hashing.fastscan.scan_tree(normalized, min_size, stopped)
        return scanned
    found = list_files([os.fsdecode(root) for root in scan_roots(roots)], stopped)
    if found is None:
        return None
    files, errors = found
    return _candidates(files, min_size), errors, len(files)


def _candidates(files: list[Listed], min_size: int) -> list[_File]:
    """The files that may have a duplicate, numbered: one name per inode (the first in walk
    order: as `HardLinks`), at least ``min_size`` bytes, sharing their size with another."""
    inodes: set[tuple[int, int]] = set()  # of files with other names
    kept: list[Listed] = []
    for f in files:
        if f[4] > 1:
            inode = (f[2], f[3])
            if inode in inodes:  # another link to a file already listed
                continue
            inodes.add(inode)
        if f[1] >= min_size:
            kept.append(f)
    counts = collections.Counter([f[1] for f in kept])
    shared = [f for f in kept if counts[f[1]] > 1]
    return [(i, f[0], f[1]) for i, f in enumerate(shared)]


class _Answered(NamedTuple):
    """What the prescan's ids answered (`_answered`): ``{(size, content id): [index, ...]}``
    of the runs' files, and the files and bytes those runs would have read."""

    same_id: dict[tuple[int, str], list[int]]
    items: int
    cost: int


def _answered(
    runs: list[IdRunTask], known: dict[int, str | int]
) -> tuple[list[IdRunTask], _Answered]:
    """The runs left to read, each with the ids ``known`` holds for its files (`Prescan.known`:
    it reads the others), and what the runs whose every id is known answer: those are no
    task, so nothing is booked, read or checkpointed for them (the content-id stage's ~30
    runs cost ~35 ms of the main thread's bookkeeping when every id was known). Their ids
    are in no checkpoint: a resumed run, with no prescan, reads them again, as it reads any
    run that had not finished (they only read). Every id of theirs is kept, shared or not
    (a split size group's other part may be in a run left to read)."""
    same_id: dict[tuple[int, str], list[int]] = {}
    if not known:
        return runs, _Answered(same_id, 0, 0)
    left: list[IdRunTask] = []
    items = cost = 0
    for run in runs:
        ids = [known.get(f[0]) for f in run.files]
        cids = [cid for cid in ids if isinstance(cid, str)]
        if len(cids) < len(ids):  # (None, or an errno: to read)
            run.known = ids
            left.append(run)
            continue
        for f, cid in zip(run.files, cids, strict=True):
            same_id.setdefault((f[2], cid), []).append(f[0])
        items += run.items
        cost += run.cost
    return left, _Answered(same_id, items, cost)


async def _content_ids(
    ctx: JobContext,
    files: list[_File],
    runs: list[IdRunTask],
    answered: _Answered,
    changed: _Changed | None = None,
) -> tuple[dict[tuple[int, str], list[int]], int]:
    """``({(size, content id): [index, ...]}, failures)`` for the candidates ``answered``
    holds and those in ``runs`` (`_runs`; each ``files[index]``) that may have a duplicate
    (a file whose id no other file of its size shares may be left out): the runs first,
    then file by file what a run could not read, so each failure is reported with its own
    path and reason. On resume (``changed``), a run an earlier run finished that holds a
    file changed since is read again, file by file (its value may leave out an id the
    file now shares), and so is a changed file whose id an earlier run found alone."""
    same_id = answered.same_id
    if answered.items:  # counted as the runs would have counted them
        ctx.progress.set_message("content ids")
        ctx.progress.add_total(items=answered.items, bytes=answered.cost)
        ctx.progress.add_done(answered.items, answered.cost)
    resumed: set[int] = set()
    values, _ = await _stage(ctx, "id-runs", runs, "content ids", resumed=resumed)
    recheck: list[int] = []  # files of this run's own stage (see below)
    redo: set[int] = set()  # the runs they are in
    unread: set[int] = set()  # ... files of theirs no earlier run counted done
    here = _counted_here(runs, resumed)
    if changed is not None and resumed:
        reused = [f[0] for run in runs if run.index in resumed for f in run.files]
        stale = await changed.among(files, reused)
        # What counted a file the run could not read: ``id-files``, or an earlier run's
        # recheck (one read again there counted as an item, or it was counted before).
        read = [ctx.task_dispatcher("id-files", keep_results=True)] + [
            ctx.task_dispatcher(f"id-recheck-{n}", keep_results=True)
            for n in ctx.state.get(_RECHECKS_KEY, {})
        ]
        for run in runs:
            if run.index in resumed and not stale.isdisjoint([f[0] for f in run.files]):
                recheck.extend([f[0] for f in run.files])
                redo.add(run.index)
                # (A file the run could not read, nor any read after it: an item.)
                failures = values[run.index]["failed"]
                unread.update(i for i in failures if not any(d.is_completed(i) for d in read))
    again: list[int] = []
    for run in runs:
        value = values.get(run.index)
        if value is None:  # the run failed whole (a timeout, say): its files one by one
            again.extend([f[0] for f in run.files])
            continue
        if run.index in redo:
            continue
        for cid, members in value["ids"]:  # the members of one entry share their size
            key = (files[members[0]][2], cid)
            known = same_id.get(key)
            if known is None:  # (most: an id shared only within its run) the value's list
                same_id[key] = members
            else:
                known.extend(members)
        again.extend(value["failed"])
    failed = 0
    if again:
        resumed = set()
        singles, failed = await _stage(
            ctx,
            "id-files",
            [ContentIdTask(i, files[i][1], files[i][2]) for i in sorted(again)],
            "content ids",
            counted=here,
            resumed=resumed,
        )
        if changed is not None and resumed:
            stale = await changed.among(files, resumed)
            recheck.extend(stale)
            singles = {i: cid for i, cid in singles.items() if i not in stale}
        for index, cid in singles.items():
            same_id.setdefault((files[index][2], cid), []).append(index)
    if recheck:
        assert changed is not None
        singles, n = await _recheck(
            ctx,
            "id",
            [
                ContentIdTask(
                    i, files[i][1], files[i][2], items=int(i in unread), counted_bytes=True
                )
                for i in sorted(recheck)
            ],
            changed,
            "content ids",
        )
        failed += n
        for index, cid in singles.items():
            same_id.setdefault((files[index][2], cid), []).append(index)
    return same_id, failed


def _runs(by_size: dict[int, list[_File]]) -> list[IdRunTask]:
    """The `IdRunTask` s of the content-id stage: size groups in ``by_size`` order packed
    into runs of up to `RUN_FILES` files and `RUN_BYTES` read, a bigger size group split.
    The same candidates always give the same runs (and indices), so a resumed job finds
    the runs it finished."""
    runs: list[IdRunTask] = []
    run: list[_File] = []
    split: list[int] = []
    cost = 0
    for size, same in by_size.items():
        each = content_id_cost(size)
        whole = len(same) <= RUN_FILES
        for part in [same] if whole else _slices(same, RUN_FILES):
            n = len(part)
            if run and (len(run) + n > RUN_FILES or cost + each * n > RUN_BYTES):
                runs.append(IdRunTask(run[0][0], run, cost, len(run), split=split))
                run, split, cost = [], [], 0
            run += part
            cost += each * n
            if not whole:
                split.append(size)
    if run:
        runs.append(IdRunTask(run[0][0], run, cost, len(run), split=split))
    return runs


async def _full_hashes(
    ctx: JobContext, files: list[_File], to_hash: list[list[int]], changed: _Changed | None = None
) -> tuple[dict[int, str], int]:
    """``({index: digest}, failures)`` for the candidates in ``to_hash``: runs first, then
    file by file what the runs did not hash (failures, and what a pause left), so each
    failure is reported with its own path and reason. On resume (``changed``), a file
    changed since an earlier run hashed it is hashed again, alone.

    The totals are final once the runs are counted: each file a run leaves to ``hash-files``
    is in them already, as an item of its run's (a run of this run) or of its own (counted
    here first: a run an earlier run finished, `_left_alone`)."""
    wanted = {i for members in to_hash for i in members}
    runs = [run for run in _hash_plan(files) if _fill(run, wanted)]
    if ctx.resumed:
        await _left_alone(ctx, runs)
    resumed: set[int] = set()
    values, _ = await _stage(ctx, "hash-runs", runs, "full hashes", resumed=resumed, finalize=True)
    digests: dict[int, str] = {}
    for value in values.values():
        for index, digest in value:
            if digest is not None:  # (None: a file a paused run did not reach)
                digests[index] = digest
    stale: set[int] = set()
    if changed is not None and resumed:
        reused = [i for k in resumed if k in values for i, d in values[k] if d and i in wanted]
        stale = await changed.among(files, reused)
    again = [
        HashTask(i, path, size, exact=True)
        for run in runs
        for i, path, size in run.files
        if i not in digests
    ]
    # A file an earlier run began to hash alone, then paused, and that is not hashed now
    # (it changed since: no longer a candidate) keeps no bytes counted.
    ctx.progress.forget_partial("hash-files", keep={t.index for t in again})
    failed = 0
    if again:
        resumed = set()
        singles, failed = await _stage(
            ctx,
            "hash-files",
            again,  # (a failure alone counts as a failed item, as a content id's does)
            "full hashes",
            counted=True,
            resumed=resumed,
        )
        if changed is not None and resumed:
            stale |= await changed.among(files, resumed)
        for index, (digest, _) in singles.items():
            digests[index] = digest
    if stale:
        assert changed is not None
        for index in stale:
            digests.pop(index, None)
        singles, n = await _recheck(
            ctx,
            "hash",
            [_HashAgain(i, files[i][1], files[i][2], exact=True) for i in sorted(stale)],
            changed,
            "full hashes",
            counted=True,  # (`_left_alone`: before the totals were final)
        )
        failed += n
        for index, (digest, _) in singles.items():
            digests[index] = digest
    return digests, failed


async def _left_alone(ctx: JobContext, runs: list[HashRunTask]) -> None:
    """Count in the totals the files that ``runs`` finished by an earlier run left to
    ``hash-files`` (a file it could not read, or did not reach before a pause) and that no
    earlier run hashed alone: their run counted only the files it hashed, and a resumed run
    counts each of them once, as an item of its own, before its totals are final. So too
    each file hashed whose hash an earlier run's ``hash-recheck-N`` could not take again
    (`_Uncounted`: no longer counted done; it changed since, so it is hashed again)."""
    done = ctx.task_dispatcher("hash-runs", keep_results=True)
    if not done.completed_count:
        return
    alone = ctx.task_dispatcher("hash-files", keep_results=True)
    uncounted = _Uncounted(ctx, "hash").indices
    items = nbytes = 0
    for run in runs:
        if not done.is_completed(run.index):
            continue
        value = await done.stored_value(run.index)
        hashed = {i for i, digest in value or () if digest is not None}
        for i, _, size in run.files:
            if i in hashed or alone.is_completed(i):
                items += i in uncounted  # (its bytes are counted still)
            else:
                items += 1
                nbytes += size
    if items:
        ctx.progress.add_total(items=items, bytes=nbytes)


def _hash_plan(files: list[_File]) -> list[HashRunTask]:
    """The `HashRunTask` s the scan allows, empty: every candidate larger than
    `CONTENT_ID_SMALL_LIMIT` (which may need a full hash), in scan order, packed up to
    `HASH_RUN_BYTES` and `HASH_RUN_FILES`. From the scan alone, so a resumed job plans the
    same runs (indices) whatever its content ids say; `_fill` keeps a run's files that
    do need their hash."""
    runs: list[HashRunTask] = []
    run: list[_File] = []
    cost = 0
    for f in files:
        size = f[2]
        if size <= CONTENT_ID_SMALL_LIMIT:
            continue
        if run and (len(run) >= HASH_RUN_FILES or cost + size > HASH_RUN_BYTES):
            runs.append(HashRunTask(run[0][0], run, cost, len(run)))
            run, cost = [], 0
        run.append(f)
        cost += size
    if run:
        runs.append(HashRunTask(run[0][0], run, cost, len(run)))
    return runs


def _fill(run: HashRunTask, wanted: set[int]) -> bool:
    """Keep the files of the planned ``run`` whose index is in ``wanted`` (and their bytes
    and count); whether any is left."""
    run.files = [f for f in run.files if f[0] in wanted]
    run.cost = sum([f[2] for f in run.files])
    run.items = len(run.files)
    return bool(run.files)


#: Where the job keeps, in its state, when its first run that recorded a value began
#: (`clock_ns`).
_SINCE_KEY = "began_ns"
#: The stages whose values a later run reuses first (a recheck stage's: see `_recheck`).
_REUSED_STAGES = ("id-runs", "id-files", "hash-runs", "hash-files")
#: Where the job keeps, in its state, ``{run number: when it began}`` of the runs that had
#: recheck stages (``id-recheck-N``, ``hash-recheck-N``), for `_recheck`.
_RECHECKS_KEY = "rechecks_began_ns"


def _since(ctx: JobContext, began: int) -> int | None:
    """When the earliest run whose values this run may reuse began, None if there is none
    (a first run, or one after runs that recorded none: killed before their first
    checkpoint), this run's start ``began`` then kept in the job's state (saved with its
    first checkpoint, so with the first value). 0 for a job whose earlier runs recorded
    values but not their start (begun before it was kept): every reused value is checked."""
    recorded = ctx.resumed and any(
        # (keep_results as `_stage` asks for it: the stage is made by the first ask)
        ctx.task_dispatcher(stage, keep_results=True).completed_count
        for stage in _REUSED_STAGES
    )
    if not recorded:
        ctx.state[_SINCE_KEY] = began
        return None
    since: int = ctx.state.get(_SINCE_KEY, 0)
    return since


class _Changed:
    """Which candidates changed since ``since`` (ns, `_since`), for a resumed run that
    began at ``began``: a file whose ctime is at or after it (a write sets it, and ``touch``
    or ``os.utime`` cannot set it back), whose size is not the scan's, or that is no longer
    a regular file (or is gone), so that a content id or hash an earlier run checkpointed
    is not reused for content it no longer has. Each file is looked at once (``lstat``)."""

    def __init__(self, since: int, began: int) -> None:
        self.since = since
        self.began = began
        #: Each file looked at: its ctime, None if it is no longer what the scan listed.
        self._seen: dict[int, int | None] = {}

    async def among(self, files: list[_File], indices: Collection[int]) -> set[int]:
        """Those of ``indices`` (into ``files``) that changed."""
        todo = [files[i] for i in indices if i not in self._seen]
        if todo:
            found = await trio.to_thread.run_sync(_ctimes, todo)
            self._seen.update(zip([f[0] for f in todo], found, strict=True))
        since = self.since
        return {i for i in indices if (ctime := self._seen[i]) is None or ctime >= since}

    def unchanged_since(self, index: int, began: int) -> bool:
        """Whether the file (looked at by `among`) has not changed since ``began``."""
        ctime = self._seen.get(index)
        return ctime is not None and ctime < began


def _ctimes(files: list[_File]) -> list[int | None]:
    """For each file, its ctime, None if it is gone, not a regular file, or its size is not
    the scan's (see `_Changed`)."""
    out: list[int | None] = []
    for _, path, size in files:
        try:
            st = os.lstat(path)
        except OSError:  # (read again: the read says why it fails)
            out.append(None)
            continue
        out.append(st.st_ctime_ns if st.st_size == size and stat.S_ISREG(st.st_mode) else None)
    return out


#: Where the job keeps, in its state, ``{kind: [index, ...]}`` of the files `_Uncounted`
#: holds.
_UNCOUNTED_KEY = "rechecks_uncounted"


class _Uncounted:
    """The files of one kind of recheck (``id``, ``hash``: see `_recheck`) that the store's
    count no longer holds: an earlier run counted each done, then a later one read it again
    (it changed since) and failed, so that run counted it failed instead
    (`JobContext.count_done_as_failed`: progress and the store's done count), as an
    uninterrupted run would have. A resumed run retries such a file, as any failed item,
    and counts it as an item of its own (in the totals, done or failed), where the re-read
    of a file still counted done is no item. Kept in the job's state, changed in the step
    that books the outcome, so saved with the checkpoint that changes the store's count."""

    def __init__(self, ctx: JobContext, kind: str) -> None:
        self._ctx = ctx
        self._kind = kind
        self.indices: set[int] = set(ctx.state.get(_UNCOUNTED_KEY, {}).get(kind, ()))

    def booked(self, task: Task[Any], failed: bool) -> None:
        """A read again of this run ended: ``failed`` or done."""
        index = task.index
        if failed and task.items == 0:  # counted done by an earlier run: failed now
            self._ctx.count_done_as_failed(1)
            self.indices.add(index)
        elif not failed and index in self.indices:  # its own item, done: counted again
            self.indices.discard(index)
        else:
            return
        every = dict(self._ctx.state.get(_UNCOUNTED_KEY, {}))
        every[self._kind] = sorted(self.indices)
        self._ctx.state[_UNCOUNTED_KEY] = every


async def _recheck(
    ctx: JobContext,
    kind: str,
    tasks: list[Task[T]],
    changed: _Changed,
    message: str,
    *,
    counted: bool = False,
) -> tuple[dict[int, T], int]:
    """``({index: value}, failures)`` for ``tasks``, a file each, read again because what an
    earlier run's ``id-runs`` ... ``hash-files`` recorded may be stale: for a file an earlier
    run's own recheck stage (``{kind}-recheck-M``) read and that has not changed since that
    run began, the newest such value; the others are read in this run's own stage
    (``{kind}-recheck-N``), its start kept in the job's state first (saved with the stage's
    first checkpoint). So a file changed during one pause is read once, by the next run,
    not by every later one, and one changed again is read again.

    Each file counts once, as an uninterrupted run counts it: a re-read is no item (an
    earlier run counted the file done), but one that fails moves the file from done to
    failed, and a file an earlier re-read failed (`_Uncounted`) is an item again, added to
    the totals here (``counted``: they hold it already, a hash's: `_left_alone`)."""
    uncounted = _Uncounted(ctx, kind)
    for task in tasks:
        if task.index in uncounted.indices:
            task.items = 1
    values: dict[int, T] = {}
    left = tasks
    earlier: dict[str, int] = ctx.state.get(_RECHECKS_KEY, {})
    for run in sorted(earlier, key=int, reverse=True):
        began = earlier[run]
        name = f"{kind}-recheck-{run}"
        dispatcher = ctx.task_dispatcher(name, keep_results=True)
        if not dispatcher.completed_count:
            continue
        kept = [
            t
            for t in left
            if changed.unchanged_since(t.index, began) and dispatcher.is_completed(t.index)
        ]
        if kept:  # (all finished: their values come back from the store, nothing read)
            found, _ = await _stage(ctx, name, kept, message, counted=True)
            values.update(found)
            left = [t for t in left if t.index not in found]
    failed = 0
    if left:
        own = str(ctx.run_number)
        if own not in earlier:
            ctx.state[_RECHECKS_KEY] = {**earlier, own: changed.began}
        if not counted:
            ctx.progress.add_total(items=sum([t.items for t in left]))
        found, failed = await _stage(
            ctx, f"{kind}-recheck-{own}", left, message, counted=True, booked=uncounted.booked
        )
        values.update(found)
    return values, failed


def _counted_here(runs: Sequence[_FileRun[Any]], resumed: Collection[int]) -> bool | set[int]:
    """The files whose run's total this run holds (those of the runs an earlier run did not
    finish, ``resumed`` their indices; every file on a first run): a file of theirs read
    alone has its bytes and its item in that total (`_stage`'s ``counted``)."""
    if not resumed:
        return True
    return {f[0] for run in runs if run.index not in resumed for f in run.files}


def _slices(items: list[T], n: int) -> list[list[T]]:
    return [items[k : k + n] for k in range(0, len(items), n)]


class _Report(NamedTuple):
    """The report's groups (`_report`), with their duplicates (every name of a group but
    one) and the bytes those hold, and the groups' JSON text as ``json.dumps`` writes it
    (without the list's brackets), None where a string would need escaping."""

    groups: list[dict[str, Any]]
    copies: int
    reclaimable: int
    text: str | None


def _report(files: list[_File], found: list[tuple[int, str, list[int]]]) -> _Report:
    """The report for ``found`` (``(size, digest, [index, ...])``, sorted here): groups
    largest first, then by digest; each group's paths decoded as `os.fsdecode` does and
    sorted. The paths of every group are decoded in one call (one call a group cost ~1.5 us
    a group more), and only theirs: the candidates without a duplicate are never decoded.
    The groups' JSON text is made in the same pass, as `_result_json` would make it from
    the groups (each dict read again: ~7 ms of the benchmark's ~45 for both), when no
    string needs escaping.

    The order comes from two sorts on one key each (digests, then sizes, largest first: a
    stable sort keeps the digest order among equal sizes), each comparing plain ints or
    plain strings, not a tuple ``(-size, digest)`` per group built by a Python key function
    (the benchmark's 6,779 groups: the whole report 98 -> 82 M instructions, cachegrind).

    Where `_fastscan` is built, the groups and their text come from one C call
    (`report_groups`: each path decoded and each group's list sorted as here, the text
    written once into one buffer, no intermediate joined, split or sliced copies): the
    benchmark's 6,775 groups in 16-18 ms of CPU instead of 31-34 (in process, alternated),
    the same dicts and text."""
    found.sort(key=itemgetter(1))
    found.sort(key=itemgetter(0), reverse=True)
    copies = sum([len(members) for _, _, members in found]) - len(found)
    reclaimable = sum([size * (len(members) - 1) for size, _, members in found])
    if _hashing.fastscan is not None:  # the same groups and text, in C (see the docstring)
        made, text = _hashing.fastscan.report_groups(files, found)
    else:
        made, text = _report_in_python(files, found)
    return _Report(made, copies, reclaimable, text)


def _joined(first: _Report, then: _Report) -> _Report:
    """One report of ``first``'s groups, then ``then``'s (each group of ``first`` larger than
    every group of ``then``, so in `_report`'s order): what `_report` makes of both."""
    text = None
    if first.text is not None and then.text is not None:
        text = ", ".join([t for t in (first.text, then.text) if t])
    return _Report(
        first.groups + then.groups,
        first.copies + then.copies,
        first.reclaimable + then.reclaimable,
        text,
    )


def _report_in_python(
    files: list[_File], found: list[tuple[int, str, list[int]]]
) -> tuple[list[dict[str, Any]], str | None]:
    """`_report`'s groups and text without `_fastscan` (``found`` sorted already): what
    its C must answer, byte for byte (tests/ops/test_duplicates_report.py)."""
    joined = b"\0".join([files[i][1] for _, _, members in found for i in members])
    decoded = joined.decode(*_FS_CODEC)
    names = decoded.split("\0") if found else []
    plain = not _needs_escaping(decoded) and not _needs_escaping("".join([g[1] for g in found]))
    groups: list[dict[str, Any]] = []
    texts: list[str] = []
    sep = '", "'
    end = 0
    for size, digest, members in found:
        start, end = end, end + len(members)
        paths = names[start:end]
        paths.sort()
        groups.append({"size": size, "digest": digest, "paths": paths})
        if plain:
            texts.append(
                f'{{"size": {size}, "digest": "{digest}", "paths": ["{sep.join(paths)}"]}}'
            )
    return groups, ", ".join(texts) if plain else None


async def _stage(
    ctx: JobContext,
    name: str,
    tasks: Sequence[Task[T]],
    message: str,
    *,
    counted: bool | Collection[int] = False,
    resumed: set[int] | None = None,
    finalize: bool = False,
    booked: Callable[[Task[T], bool], None] | None = None,
) -> tuple[dict[int, T], int]:
    """Run one stage: ``({index: value}, failures)``; values of tasks finished by an earlier
    run come back from the store (their indices added to ``resumed``). ``counted``: the
    tasks (True: all; else those of these indices) are in the totals already, items and
    bytes (files a run of this run counted and left to them: the run counts as done only
    the files it finished, so each file is one item, done or failed, once). ``finalize``:
    the totals are final once this stage's are added. ``booked(task, failed)``: each task of
    this run that ended, done or failed, once its outcome is booked (before the next
    checkpoint is written).

    The totals grow by what is left to do: a task an earlier run finished counted then, and
    the totals hold what the store counted (`DuplicatesJob.run`), whatever this run plans.
    So the items and bytes done never exceed the totals, though a task may plan fewer files
    now (a file changed since: a hash run keeps only those that still share a content id)."""
    dispatcher = ctx.task_dispatcher(name, keep_results=True)
    left = tasks
    if tasks and dispatcher.completed_count:
        left = [t for t in tasks if not dispatcher.is_completed(t.index)]
    if left:
        ctx.progress.set_message(message)
        if counted is not True:
            new = left if counted is False else [t for t in left if t.index not in counted]
            ctx.progress.add_total(
                items=sum(t.items for t in new), bytes=sum(t.weight for t in new)
            )
    if finalize:
        ctx.progress.finalize_totals()
    values: dict[int, T] = {}
    failed = 0
    async for outcome in dispatcher.dispatch_many(tasks, include_resumed=True):
        if outcome.ok or (outcome.resumed and outcome.value is not None):
            assert outcome.value is not None
            values[outcome.index] = outcome.value
            if outcome.resumed and resumed is not None:
                resumed.add(outcome.index)
            elif booked is not None and not outcome.resumed:
                booked(outcome.task, False)
        elif outcome.status is OutcomeStatus.FAILED:
            failed += 1
            if booked is not None:
                booked(outcome.task, True)
        await ctx.checkpoint()
    return values, failed


__all__ = ["ContentIdTask", "DuplicatesJob", "HashRunTask", "IdRunTask", "content_id_cost"]
