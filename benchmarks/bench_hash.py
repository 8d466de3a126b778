"""Hash large files: parjobs `HashJob` (xxh3-128; 1 and N workers) against ``xxhsum -H2``
(the same digest), ``b3sum`` (BLAKE3, multi-threaded) and a plain Python loop over
``xxhash.xxh3_128`` with 4 MiB reads. The data: the 10 MiB and the 256 MiB sets together.

Baseline: ``xxhsum -H2`` when installed, else the Python loop. Every call hashes every file;
parjobs' digests are checked against the Python loop's once.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import xxhash

import parjobs
from parjobs.ops._hash import HashJob, HashLog

from ._common import Timing, load_average, log, panel_chart, run_rounds
from ._session import Session
from ._tools import CACHED, describe_tools, drop_caches, in_process, run_job, run_tool, warm, which

SETS = ("medium", "large")
PY_LOOP = "Python loop, xxh3_128"
XXHSUM = "xxhsum -H2"
READ_SIZE = 4 << 20


def python_loop(files: list[Path]) -> dict[str, str]:
    """xxh3-128 of each file, read sequentially into one reused 4 MiB buffer."""
    buf = bytearray(READ_SIZE)
    view = memoryview(buf)
    out = {}
    for path in files:
        h = xxhash.xxh3_128()
        with open(path, "rb", buffering=0) as f:
            while n := f.readinto(buf):
                h.update(view[:n])
        out[str(path)] = h.hexdigest()
    return out


def _parjobs(session: Session, roots: list[Path], workers: int, expect: dict[str, str]) -> Timing:
    job = HashJob(paths=[str(r) for r in roots], algorithm="xxh3_128")

    async def digests(manager: parjobs.JobManager, job_id: str) -> dict[str, str]:
        """The digests, from the job's item log (its result holds counts only)."""
        log = HashLog()
        log.add(await manager.items(job_id, action="hashed"))
        return {os.fsdecode(p): d for p, (d, _) in log.rows(job.paths, job.names).items()}

    got, timing = run_job(job, workers=workers, store_dir=session.scratch, finish=digests)
    if got != expect:
        raise RuntimeError("parjobs hash: digests differ from the Python loop's")
    return timing


def contenders(
    session: Session, roots: list[Path], files: list[Path], expect: dict[str, str]
) -> tuple[dict[str, Callable[[], Timing]], dict[str, str], str]:
    """Hash functions by name, the skipped ones with reasons, and the baseline's name."""
    out: dict[str, Callable[[], Timing]] = {}
    skipped: dict[str, str] = {}
    for n in [1, *session.workers]:
        name = f"parjobs {n} worker" + ("s" if n > 1 else "")
        out[name] = lambda n=n: _parjobs(session, roots, n, expect)
    args = [str(f) for f in files]
    if which("xxhsum"):
        out[XXHSUM] = lambda: run_tool(["xxhsum", "-H2", *args])
    else:
        skipped[XXHSUM] = "xxhsum is not installed (apt-get install xxhash)"
    if which("b3sum"):
        out["b3sum"] = lambda: run_tool(["b3sum", *args])
    else:
        skipped["b3sum"] = "b3sum is not installed"
    out[PY_LOOP] = lambda: in_process(lambda: python_loop(files))
    return out, skipped, XXHSUM if XXHSUM in out else PY_LOOP


def _cold(fn: Callable[[], Timing]) -> Callable[[], Timing]:
    def contender() -> Timing:
        drop_caches()
        return fn()

    return contender


def run(session: Session) -> dict[str, Any]:
    data = session.data
    roots = [data.path(s) for s in SETS]
    files = sorted(f for r in roots for f in data.files(r.name))
    info = data.describe(*SETS)
    total = sum(s["bytes"] for s in info.values())
    expect = python_loop(files)
    tools = describe_tools([("xxhsum", ["xxhsum", "--version"]), ("b3sum", ["b3sum", "--version"])])
    label = " + ".join(data.label(s) for s in SETS)
    out: dict[str, Any] = {
        "what": f"hash {len(files)} files, {total / 2**30:.2f} GiB: {label}",
        "timed": "the whole call (parjobs: store open, job, manager close; tools: the process)",
        "tools": tools,
        "cold_available": session.cold,
        "cold_skipped_reason": session.cold_reason or None,
        "cases": {},
    }
    panels = []
    for cache in session.cache_states:
        hashes, skipped, baseline = contenders(session, roots, files, expect)
        if cache != CACHED:
            hashes = {n: _cold(fn) for n, fn in hashes.items()}
        else:
            warm(roots)
        log(f"[hash] {label}, {cache}, {session.rounds} rounds")
        load0 = load_average()
        warmup = session.warmup if cache == CACHED else 0
        rounds = run_rounds(hashes, session.rounds, warmup)
        case = session.case(
            rounds,
            baseline,
            data_set=info,
            cache=cache,
            skipped=skipped,
            loadavg_before=load0,
            warmup_rounds=warmup,
        )
        for name, m in rounds.items():
            case["contenders"][name]["gib_per_s"] = round(total / 2**30 / m.median, 2)
        out["cases"][cache] = case
        panels.append((f"{label}, page cache {cache}", rounds, baseline))
    out["baseline"] = panels[0][2]
    if session.charts:
        panel_chart(
            panels,
            filename="hash.png",
            title=f"Hash {total / 2**30:.2f} GiB (lower is better; ratio to {out['baseline']})",
            note=session.note(),
        )
    return out
