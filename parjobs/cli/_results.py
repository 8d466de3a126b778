"""What a finished job prints besides its summary, per job type.

*Data* (hash digests, duplicate groups) goes to stdout so it can be redirected; when a job
prints data, its progress display and summary go to stderr instead. *Details* are human lines
added to the summary (e.g. where the thumbnails went).
"""

from __future__ import annotations

import dataclasses
import json
import os
import stat
from collections.abc import Awaitable, Callable
from typing import Any

from .._items import ItemRecord
from .._records import JobInfo
from . import _format as fmt


def prints_data(job_type: str, spec: Any) -> bool:
    """True when the job's result is data for stdout (``hash`` without ``--output``...), or
    the job writes its data to a stream (``hash --output /dev/stdout``, a pipe or a
    terminal): the display then goes to stderr, out of the data's way."""
    if job_type == "hash":
        output = spec.get("output") if isinstance(spec, dict) else None
        return not isinstance(output, str) or not output or _is_stream(output)
    return job_type == "duplicates"


def _is_stream(path: str) -> bool:
    """A character device or FIFO (what ``hash`` writes in place, see `output_target`)."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return False
    return stat.S_ISCHR(mode) or stat.S_ISFIFO(mode)


#: What reads a page of a job's item log: ``JobManager.items`` or the remote client's.
ReadItems = Callable[..., Awaitable[list[ItemRecord]]]


async def hash_digests(read: ReadItems, info: JobInfo) -> dict[bytes, str]:
    """A finished hash job's digests, ``path -> hex`` in walk order and named as the job's
    spec says, from its item log (its result holds counts only)."""
    from ..ops._hash import LOG_PAGE, HashLog

    log, after = HashLog(), 0
    while page := await read(info.id, after=after, limit=LOG_PAGE, action="hashed"):
        log.add(page)
        after = page[-1].seq
    spec = json.loads(info.spec) if isinstance(info.spec, str) else info.spec
    paths, names = spec.get("paths") or [], spec.get("names")
    return {path: digest for path, (digest, _) in log.rows(paths, names).items()}


async def with_digests(read: ReadItems, info: JobInfo) -> JobInfo:
    """``info`` with its result's ``digests`` (``path -> hex``) read back from the item log,
    for a finished hash job without ``--output``: the JSON result line keeps its shape
    while the store keeps the digests once (in the log). Any other job as it is."""
    result = info.result
    if info.type != "hash" or not isinstance(result, dict) or result.get("output"):
        return info
    digests = await hash_digests(read, info)
    table = {os.fsdecode(path): digest for path, digest in digests.items()}
    return dataclasses.replace(info, result={**result, "digests": table})


async def data_lines(read: ReadItems, info: JobInfo) -> list[str]:
    """Lines for stdout: ``<digest>  <path>`` per file (xxhsum format; read from the job's
    item log), or duplicate groups."""
    result = info.result if isinstance(info.result, dict) else {}
    if info.type == "hash":
        if result.get("output"):
            return []  # written to the checksum file
        from ..ops._hash import checksum_line  # the -o formatter: one format, one escaping

        algorithm = str(result.get("algorithm") or "")
        return [
            checksum_line(algorithm, path, digest).decode("utf-8", "surrogateescape").rstrip("\n")
            for path, digest in (await hash_digests(read, info)).items()
        ]
    if info.type == "duplicates":
        return _duplicate_groups(result)
    return []


def _duplicate_groups(result: dict[str, Any]) -> list[str]:
    """A block a group: ``# N copies of SIZE``, its paths, an empty line between blocks;
    a path holding a newline or carriage return (or starting with a backslash) escaped as
    coreutils escapes a checksum line's name (`escaped_path`), so that each line is one
    path: printed raw, ``/t/x<LF>/home/u/cv.odt`` was two lines, and a script deleting
    all but the first path of each group deleted ``/home/u/cv.odt``, in no group.
    ``fmt.size`` once a size (its float formatting is most of a line's cost: ~5,000
    instructions; the benchmark's 6,775 groups have 5,171 sizes). In C where `_fastscan`
    is built (`group_lines`: the same lines, its sizes the same text; ~14.5 -> ~4 ms of
    CPU for the benchmark's groups), for a result of the usual shape; its lines are looked
    over in the joined text (~0.8 ms there), and made again, escaped, in the rare report
    that needs it (or holds a backslash)."""
    groups = result.get("groups") or []
    lines = _group_lines(groups)
    text = "\n".join(lines)
    if "\r" not in text and "\\" not in text and text.count("\n") == len(lines) - 1:
        return lines  # (a backslash anywhere: each path looked at)
    return _group_lines([_escaped_group(g) for g in groups])


def _escaped_group(group: Any) -> Any:
    """A group (a dict with ``paths``, or a bare list of paths) with its paths escaped."""

    def escaped(paths: list[Any]) -> list[Any]:
        return [escaped_path(p) if isinstance(p, str) else p for p in paths]

    if isinstance(group, dict) and isinstance(group.get("paths"), list):
        return {**group, "paths": escaped(group["paths"])}
    return escaped(group) if isinstance(group, list) else group


def escaped_path(path: str) -> str:
    """``path`` as one line of a list of paths: as it is, unless it holds a newline or
    carriage return or starts with a backslash; then ``\\`` followed by it with ``\\``,
    newline and carriage return written ``\\\\``, ``\\n``, ``\\r`` (the GNU coreutils
    convention for checksum lines, which `checksum_line` follows). An absolute path never
    starts with a backslash, so the first character tells the two apart."""
    if "\n" not in path and "\r" not in path and not path.startswith("\\"):
        return path
    escaped = path.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
    return "\\" + escaped


def _group_lines(groups: Any) -> list[str]:
    from ..ops._hashing import fastscan  # (loaded already by a dupes job run here)

    if fastscan is not None and isinstance(groups, list):
        made: list[str] | None = fastscan.group_lines(groups, fmt.size)
        if made is not None:
            return made
    return _group_lines_in_python(groups, fmt.size)


def _group_lines_in_python(groups: list[Any], size_of: Callable[[int], str]) -> list[str]:
    """`_duplicate_groups` without `_fastscan` (or for a result of an unusual shape): what
    its C must answer, byte for byte (tests/ops/test_duplicates_report.py)."""
    lines: list[str] = []
    sizes: dict[int, str] = {}
    for group in groups:
        if isinstance(group, dict):
            paths = group.get("paths") or []
            size = group.get("size")
        else:
            paths, size = group, None
        if lines:
            lines.append("")
        if isinstance(size, int):
            text = sizes.get(size)
            if text is None:
                text = sizes[size] = size_of(size)
            lines.append(f"# {len(paths)} copies of {text}")
        lines += paths  # str already: the job decodes them (one list, not one str() a path)
    return lines


def details(info: JobInfo) -> list[str]:
    """Extra summary lines: where the output went."""
    result = info.result if isinstance(info.result, dict) else {}
    out: list[str] = []
    if info.type == "hash" and result.get("output"):
        out.append(f"  digests written to {result['output']}")
    reasons = result.get("skipped_reasons")
    if isinstance(reasons, dict) and reasons:
        out.append("  skipped: " + ", ".join(f"{n} {why}" for why, n in reasons.items()))
    if info.type == "delete" and result.get("trashed"):
        out.append(f"  {result['trashed']} moved to the trash (restore them from there)")
    if info.type == "thumbnails":
        where = result.get("out_dir") or result.get("directory")
        if isinstance(where, str):
            out.append(f"  thumbnails in {where}")
    if info.type == "duplicates" and isinstance(result.get("duplicate_files"), int):
        wasted = result.get("reclaimable_bytes")
        extra = f", {fmt.size(wasted)} reclaimable" if isinstance(wasted, int) else ""
        out.append(f"  {result['duplicate_files']} duplicate files{extra}")
    return out
