"""Commands that look at and steer stored jobs: ``jobs``, ``show``, ``pause``, ``cancel``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import textwrap
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import trio

from .._exceptions import InvalidTransitionError, JobNotFoundError
from .._items import DIRECTORY
from .._jsonout import dumps
from .._status import UNCLEANED, JobStatus
from . import _format as fmt
from ._errors import EXIT_ERRORS, EXIT_OK, CliError
from ._render import ERRORS_SHOWN, describe, failures, percent, stats
from ._session import Store, import_job_types, manager_for

if TYPE_CHECKING:  # the core loads when a manager opens (`parjobs jobs` on no store: never)
    from .._items import ItemRecord
    from .._manager import JobManager
    from .._records import JobInfo

#: How long ``pause`` and ``cancel`` wait for the job to come to rest.
WAIT_LIMIT = 30.0


def existing_store(args: argparse.Namespace, job: str | None) -> Store:
    """The store of the command; an error naming ``job`` if there is no store at all."""
    store = Store.choose(args.store)
    if not store.exists and job is not None:
        raise JobNotFoundError(f"no job with id {job!r} (no store at {store.path})")
    return store


async def _one_job(
    args: argparse.Namespace, act: Callable[[JobManager, str], Awaitable[int]]
) -> int:
    store = existing_store(args, args.job)
    async with manager_for(store) as manager:
        return await act(manager, await manager.resolve(args.job))


async def pause(args: argparse.Namespace) -> int:
    store = Store.choose(args.store)

    async def act(manager: JobManager, job_id: str) -> int:
        info = await manager.get(job_id)
        if info.status not in (JobStatus.PAUSED, JobStatus.INTERRUPTED):
            await manager.pause(job_id)
            info = await _settle(manager, job_id, args.no_wait)
        if info.status in (JobStatus.PAUSED, JobStatus.INTERRUPTED):
            resume = store.resume_command(job_id)
            _said(args, info, f"job {job_id} is {info.status.value}; resume with: {resume}")
            return EXIT_OK
        if info.status.is_active:  # asked: the process running it pauses it
            _said(args, info, f"job {job_id} is pausing (at its next chunk boundary)")
            return EXIT_OK
        _said(args, info, f"job {job_id} is {info.status.value}: it ended before pausing")
        return EXIT_ERRORS

    return await _one_job(args, act)


async def cancel(args: argparse.Namespace) -> int:
    import_job_types()  # cancelling a resting job runs its cleanup

    async def act(manager: JobManager, job_id: str) -> int:
        await manager.cancel(job_id)
        info = await _settle(manager, job_id, args.no_wait)
        if info.status.is_active:  # the process running it has not stopped it yet
            text = (
                f"job {job_id} is {info.status.value}: cancel requested, the process "
                "running it stops it at its next chunk boundary"
            )
        elif _uncleaned(info):  # its cleanup could not run here: what may remain
            text = f"job {job_id} is {fmt.printable(info.error or '')}"
        else:
            text = f"job {job_id} is {info.status.value}"
        _said(args, info, text)
        return EXIT_OK

    return await _one_job(args, act)


async def _settle(manager: JobManager, job_id: str, no_wait: bool) -> JobInfo:
    if not no_wait:
        with trio.move_on_after(WAIT_LIMIT):
            await manager.wait(job_id)
    return await manager.get(job_id)


def _uncleaned(info: JobInfo) -> bool:
    """Whether ``info``'s job was cancelled without its cleanup (its type not loadable)."""
    return info.status is JobStatus.CANCELLED and (info.error or "").startswith(UNCLEANED)


def _said(args: argparse.Namespace, info: JobInfo, text: str) -> None:
    if args.json:
        data = {"job_id": info.id, "status": info.status.value}
        if _uncleaned(info):
            data["error"] = info.error or ""
        print(dumps(data), flush=True)
    else:
        print(text, flush=True)


def job_json(info: JobInfo) -> dict[str, Any]:
    """A stored job as plain data (``jobs --json`` and ``show --json``)."""
    return {
        "id": info.id,
        "type": info.type,
        "version": info.version,
        "status": info.status.value,
        "spec": info.spec_data,
        "created": info.created,
        "started": info.started,
        "finished": info.finished,
        "updated": info.updated,
        "runs": info.runs,
        "progress": info.progress.to_json(),
        "error": info.error,
    }


async def jobs(args: argparse.Namespace) -> int:
    if getattr(args, "jobs_command", None) == "prune":
        return await prune(args)
    store = Store.choose(args.store)
    infos: list[JobInfo] = []
    damaged: list[tuple[str, str]] = []
    if store.exists:
        async with manager_for(store) as manager:
            # (no results: the listing shows none, and a duplicates job's is megabytes)
            infos = await manager.list_jobs(args.status or None, damaged=damaged, results=False)
    for _job_id, reason in damaged:  # one bad row must not hide the others
        print(f"parjobs: warning: {reason}; not listed", file=sys.stderr, flush=True)
    if args.json:
        for info in infos:
            print(dumps(job_json(info), default=str))
        return EXIT_OK
    if not infos:
        print("no jobs" if not args.status else "no jobs with that status")
        return EXIT_OK
    rows = [("ID", "TYPE", "STATUS", "DONE", "UPDATED", "WHAT")]
    for info in infos:
        done = done_column(info)
        rows.append(
            (
                info.id,
                info.type,
                info.status.value,
                done,
                fmt.timestamp(info.updated),
                describe(info),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    for row in rows:
        padded = [cell.ljust(w) for cell, w in zip(row, widths, strict=False)]
        print("  ".join([*padded, row[5]]))
    return EXIT_OK


async def prune(args: argparse.Namespace) -> int:
    """``jobs prune``: delete finished jobs older than ``--older-than``, or those named, with
    their private files (`JobManager.delete`); one line per job, ``--dry-run`` only says.
    A named job that is not finished is refused before anything is deleted."""
    if not args.jobs and args.older_than is None:
        raise CliError("jobs prune: give job ids or --older-than AGE (e.g. --older-than 30d)")
    store = Store.choose(args.store)
    if not store.exists:
        if args.jobs:
            raise JobNotFoundError(f"no job with id {args.jobs[0]!r} (no store at {store.path})")
        print("no finished jobs to delete")
        return EXIT_OK
    import_job_types()
    # Keep every finished job while choosing (the retention must not delete them first).
    async with manager_for(store, retention=None) as manager:
        chosen = [await manager.get(await manager.resolve(j)) for j in dict.fromkeys(args.jobs)]
        for info in chosen:
            if not info.status.is_ended:
                raise CliError(
                    f"job {info.id} is {info.status.value}, not finished: nothing deleted "
                    f"(cancel it first: {store.command('cancel', info.id)})"
                )
        named = {info.id for info in chosen}
        if args.older_than is not None:
            cutoff = await manager.store_now() - args.older_than  # (the store's clock)
            ended = [s for s in JobStatus if s.is_ended]
            for info in await manager.list_jobs(ended, order="finished", results=False):
                if info.finished is not None and info.finished < cutoff:
                    chosen.append(info)
        chosen = list({info.id: info for info in chosen}.values())
        for info in chosen:
            if not args.dry_run:
                try:
                    await manager.delete(info.id)
                except InvalidTransitionError as exc:  # an undo still reads it, say
                    if info.id in named:
                        raise
                    _kept(info, str(exc), args.json)
                    continue
            verb = "would delete" if args.dry_run else "deleted"
            if args.json:
                print(
                    dumps(
                        {
                            "job_id": info.id,
                            "status": info.status.value,
                            "deleted": not args.dry_run,
                        }
                    ),
                    flush=True,
                )
            else:
                when = fmt.timestamp(info.finished)
                print(
                    f"{verb} {info.id}  {info.type}  {info.status.value}  {when}  {describe(info)}",
                    flush=True,
                )
    if not chosen and not args.json:
        print("no finished jobs to delete")
    return EXIT_OK


def _kept(info: JobInfo, why: str, as_json: bool) -> None:
    """A line of ``jobs prune`` for a job past the age that may not go now."""
    if as_json:
        print(
            dumps({"job_id": info.id, "status": info.status.value, "deleted": False, "kept": why}),
            flush=True,
        )
    else:
        print(f"kept {info.id}  {info.type}  {info.status.value}: {why}", flush=True)


def done_column(info: JobInfo) -> str:
    """How far a job got, for ``jobs``: the percent, and for a job that stopped short
    (paused, failed, cancelled, ...) its items too, so one that did 2 of 3 items says
    ``0% (2/3 items)`` rather than a bare ``0%`` when the item left was the big one; a
    total that may still grow (stopped during the walk) has a ``+``."""
    snap = info.progress
    total = snap.items_total
    done = snap.items_done + snap.items_skipped  # failed ones are not done
    items = f"{done} items"
    if total:
        items = f"{done}/{total}{'' if snap.totals_final else '+'} items"
    shown = percent(snap)
    if not shown:
        return items
    if info.status is JobStatus.COMPLETED or info.status.is_active or not total:
        return shown
    return f"{shown} ({items})"


#: Records read per call by ``show --items``.
ITEMS_PAGE = 1000


async def show_items(manager: Any, job_id: str, args: argparse.Namespace) -> int:
    """``show ID --items``: the job's item log, page by page (never all in memory): one
    JSON object per line with ``--json``, else one line per item."""
    after = 0
    out = sys.stdout
    while True:
        page = await manager.items(job_id, limit=ITEMS_PAGE, after=after, action=args.action)
        for r in page:
            if args.json:
                out.write(dumps(r.to_json()) + "\n")
            else:
                out.write(item_line(r) + "\n")
        if len(page) < ITEMS_PAGE:
            break
        after = page[-1].seq
    out.flush()
    return EXIT_OK


def item_line(r: ItemRecord) -> str:
    """One record as a line: ``action  source -> destination  (bytes; detail; error)``."""
    text = f"{r.action:<11} {fmt.printable(r.source)}"
    if r.destination is not None:
        text += f" -> {fmt.printable(r.destination)}"
    extra = [fmt.size(r.bytes)] if r.bytes else []
    detail = r.detail
    if detail is not None and detail.startswith(DIRECTORY + " {"):
        detail = DIRECTORY  # a move's directory, its metadata for an undo (`--json`: all of it)
    extra += [x for x in (detail, r.error) if x]
    return text + (f"  ({'; '.join(extra)})" if extra else "")


async def show(args: argparse.Namespace) -> int:
    store = existing_store(args, args.job)
    async with manager_for(store) as manager:
        job_id = await manager.resolve(args.job)
        if args.items:
            return await show_items(manager, job_id, args)
        info = await manager.get(job_id)
        limit = -1 if args.all_errors or args.json else ERRORS_SHOWN
        errors = await manager.errors(job_id, limit=limit)
        resumable = info.can_resume  # (not one an undo took)
        if resumable and info.status is JobStatus.COMPLETED_WITH_ERRORS:  # can a retry pass?
            failed = max(info.progress.items_failed, len(errors))
            resumable = (await failures(manager.errors, job_id, errors, failed)).may_pass
    if args.json:
        data = job_json(info)
        data["result"] = info.result
        data["errors"] = [dataclasses.asdict(e) for e in errors]
        print(dumps(data, default=str))
        return EXIT_OK
    snap = info.progress
    pct = percent(snap)
    lines = [
        ("job", info.id),
        ("type", f"{info.type} (version {info.version})"),
        ("status", info.status.value),
        ("what", describe(info)),
        ("created", fmt.timestamp(info.created)),
        ("started", fmt.timestamp(info.started)),
        # a paused or interrupted job's run stopped, but the job has not finished
        ("finished", fmt.timestamp(info.finished if info.status.is_ended else None)),
        ("runs", str(info.runs)),
        ("progress", (f"{pct} · " if pct else "") + " · ".join(stats(snap))),
        (
            "done",
            f"{snap.items_done} done, {snap.items_skipped} skipped, "
            f"{snap.items_failed} failed in {fmt.duration(snap.elapsed)}",
        ),
    ]
    if info.error:
        lines.append(("error", fmt.printable(info.error)))
    if resumable:
        lines.append(("resume", store.resume_command(info.id)))
    for key, value in lines:
        print(f"{key:<9} {value}")
    # names as the other lines show them (bad bytes as \xNN), not as JSON's "\udcff"
    print("spec     ", _indent(_json_shown(info.spec_data)))
    if info.result is not None:
        text = _json_shown(info.result)
        if len(text) > 4000:
            text = text[:4000] + f"\n… ({len(text)} characters; see parjobs show --json)"
        print("result   ", _indent(text))
    failed = max(snap.items_failed, len(errors))
    if failed:
        print(f"errors    {failed}")
        for e in errors:
            print(f"  {fmt.printable(e.label)}: {fmt.printable(e.message)}")
            if args.verbose and e.traceback:
                print(textwrap.indent(e.traceback.rstrip("\n"), "    | "))
        if failed > len(errors):
            print(f"  … and {failed - len(errors)} more (use --errors)")
    return EXIT_OK


def _json_shown(data: Any) -> str:
    """``data`` as indented JSON for a reader: every character as itself, but a name's bytes
    that are not UTF-8 as ``\\xNN`` (`fmt.printable`)."""
    return fmt.printable(
        json.dumps(data, indent=2, default=str, ensure_ascii=False), keep_newlines=True
    )


def _indent(text: str) -> str:
    return text.replace("\n", "\n" + " " * 10)
