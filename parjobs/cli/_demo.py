"""``parjobs demo``: generate a sample tree, copy it (verified) with one pause and resume,
hash both trees, make thumbnails, and report what happened.

It uses a store of its own inside the working directory (unless ``--store`` is given), so it
leaves nothing behind but what ``--keep`` or ``--dir`` asks to keep.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import tempfile
import time
from typing import Any

import trio

from .._exceptions import InvalidTransitionError
from .._manager import JobManager
from .._progress import Progress
from .._status import JobStatus
from ..ops import CopyJob, HashJob, ThumbnailJob
from . import _format as fmt
from ._errors import EXIT_OK, CliError
from ._follow import combine, follow
from ._render import Renderer, make_renderer
from ._results import hash_digests
from ._sample import YEARS, make_sample, photo_dir
from ._session import Store, cluster_config, manager_for

#: The copy is paused at its first progress snapshot that shows bytes copied (about ten a
#: second): waiting for half of them missed the pause on a fast machine, where the sample's
#: copy takes ~0.2 s and its progress came in only after its last file.


@dataclasses.dataclass
class Step:
    name: str
    items: int
    bytes: int
    seconds: float
    note: str = ""


def _workdir(args: argparse.Namespace) -> tuple[str, bool]:
    """The directory to work in, and whether to keep it."""
    if args.dir is None:
        return tempfile.mkdtemp(prefix="parjobs-demo-"), bool(args.keep)
    base = os.path.abspath(os.path.expanduser(args.dir))
    if os.path.exists(base) and (not os.path.isdir(base) or os.listdir(base)):
        raise CliError(f"--dir {args.dir} must be an empty or new directory")
    os.makedirs(base, exist_ok=True)
    return base, True


async def run_demo(args: argparse.Namespace) -> int:
    base, keep = _workdir(args)
    store = (
        Store.choose(args.store) if args.store else Store(os.path.join(base, "jobs.sqlite"), True)
    )
    out = make_renderer(json_mode=args.json, plain=args.plain)
    src, dst = os.path.join(base, "sample"), os.path.join(base, "copy")
    thumbs = os.path.join(base, "thumbnails")
    started = time.monotonic()
    try:
        out.say(f"parjobs demo: working in {base}", "bold")
        t0 = time.monotonic()
        sample = await trio.to_thread.run_sync(make_sample, src)
        gen = Step("generate", sample.files, sample.bytes, time.monotonic() - t0)
        out.say(
            f"1. generated {sample.files} files ({fmt.size(sample.bytes)}, {sample.photos} photos)"
            f" in {fmt.duration(gen.seconds)}: {src}"
        )
        async with manager_for(store, cluster_config(args), workers=args.workers) as manager:
            copy = CopyJob(sources=[src], destination=dst, verify=True, durable=True)
            copy_step, codes = await _copy(manager, copy, sample.bytes, out, store)
            out.say("3. hashing the sample and the copy")
            hashes: list[dict[bytes, str]] = []
            hash_step = Step("hash (both trees)", 0, 0, 0.0)
            for tree in (src, dst):
                job_id = (await manager.submit(HashJob(paths=[tree]))).id
                codes.append(await follow(manager, job_id, store, out, title="hash", data=False))
                info = await manager.get(job_id)
                hashes.append(await hash_digests(manager.items, info))  # from its item log
                _add(hash_step, info.progress)
            same = _same_digests(hashes, src, dst)
            out.say(
                f"   the copy is identical: {same} of {sample.files} digests match"
                if same == sample.files
                else f"   MISMATCH: only {same} of {sample.files} digests match",
                "green" if same == sample.files else "bold red",
            )
            out.say("4. making thumbnails of the photos")
            photos = [photo_dir(dst, year) for year in YEARS]  # dst is the copy (cp -r)
            job_id = (await manager.submit(ThumbnailJob(paths=photos, out_dir=thumbs))).id
            codes.append(await follow(manager, job_id, store, out, title="thumbnails"))
            thumb_step = _add(Step("thumbnails", 0, 0, 0.0), (await manager.get(job_id)).progress)
        _report(out, [gen, copy_step, hash_step, thumb_step], time.monotonic() - started)
        _where(out, keep, base, src, dst, thumbs, store)
        code = combine(codes)
        if same != sample.files and code == EXIT_OK:
            code = 1
        return code
    finally:
        if not keep:
            await trio.to_thread.run_sync(shutil.rmtree, base, True)


async def _copy(
    manager: JobManager, job: Any, total: int, out: Renderer, store: Store
) -> tuple[Step, list[int]]:
    """Copy, pausing once under way (its first snapshot with bytes copied), then resume to
    the end."""
    out.say(
        "2. copying (verified, durable); the demo asks it to pause once under way "
        "(the files under way finish first)"
    )
    job_id = (await manager.submit(job)).id
    asked = False

    async def pause_under_way(snap: Progress) -> None:
        nonlocal asked
        if not asked and 0 < snap.bytes_done < total:
            asked = True
            await pause_unless_ended(manager, job_id)

    codes = [await follow(manager, job_id, store, out, title="copy", on_progress=pause_under_way)]
    info = await manager.get(job_id)
    note = ""
    if info.status is JobStatus.PAUSED:
        codes.clear()
        checkpointed = info.done_items
        out.say(
            f"   paused: {checkpointed} items are checkpointed and nothing runs until it is "
            "resumed; the demo resumes it now",
            "cyan",
        )
        await manager.resume(job_id)
        codes.append(await follow(manager, job_id, store, out, title="copy (resumed)"))
        info = await manager.get(job_id)
        note = f"paused once, {checkpointed} items kept"
    else:
        note = "finished before it could be paused"
        out.say(f"   (the copy {note})")
    step = _add(Step("copy + verify", 0, 0, 0.0, note), info.progress)
    result = info.result if isinstance(info.result, dict) else {}
    if isinstance(result.get("files"), int):  # files, as the generate row counts them
        step.items = result["files"]
        step.note = f"and {result.get('dirs', 0)} directories; {note}"
    return step, codes


async def pause_unless_ended(manager: JobManager, job_id: str) -> bool:
    """Ask for a pause; False when the job ended first. A progress event can arrive after the
    last file is in place (a loaded machine, a small sample), and a pause that loses that race
    is the demo's "finished before it could be paused", not an error."""
    try:
        await manager.pause(job_id)
    except InvalidTransitionError:
        if (await manager.get(job_id)).status.is_active:
            raise
        return False
    return True


def _add(step: Step, snap: Progress) -> Step:
    step.items += snap.items_done
    step.bytes += snap.bytes_done
    step.seconds += snap.elapsed
    return step


def _same_digests(digests: list[dict[bytes, str]], src: str, dst: str) -> int:
    """How many files of the sample have the same digest in the copy."""
    if len(digests) != 2:
        return 0

    def relative(table: dict[bytes, str], root: str) -> dict[bytes, str]:
        base = os.fsencode(root)
        return {os.path.relpath(path, base): digest for path, digest in table.items()}

    a, b = relative(digests[0], src), relative(digests[1], dst)
    return sum(1 for path, digest in a.items() if b.get(path) == digest)


def _report(out: Renderer, steps: list[Step], total: float) -> None:
    out.say("")
    out.say(f"{'step':<18} {'items':>6} {'bytes':>9} {'time':>9} {'throughput':>11}", "bold")
    for s in steps:
        speed = fmt.rate(s.bytes / s.seconds) if s.seconds > 0 else "-"
        line = f"{s.name:<18} {s.items:>6} {fmt.size(s.bytes):>9} {fmt.duration(s.seconds):>9}"
        out.say(f"{line} {speed:>11}" + (f"  ({s.note})" if s.note else ""))
    out.say(f"total {fmt.duration(total)}", "bold")


def _where(
    out: Renderer, keep: bool, base: str, src: str, dst: str, thumbs: str, store: Store
) -> None:
    if keep:
        out.say(f"sample: {src}\ncopy: {dst}\nthumbnails: {thumbs}\nstore: {store.path}")
        out.say(f"look at the jobs: {store.command('jobs')}")
    else:
        out.say(f"removed {base} (keep it with: parjobs demo --keep)")
