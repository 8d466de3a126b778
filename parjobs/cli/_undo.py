"""``parjobs undo ID`` (an undo job, followed like any job) and ``parjobs trash list|restore``
(the freedesktop trash of this user, whoever trashed the items; no job, no store)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

from .._job import registered_job_types
from .._jsonout import dumps
from . import _format as fmt
from . import _manage
from ._app import expand_tilde
from ._errors import EXIT_ERRORS, EXIT_OK, CliError
from ._follow import follow_jobs
from ._render import make_renderer
from ._session import import_job_types, manager_for

if TYPE_CHECKING:  # the ops are imported by the command that uses them (start-up time)
    from ..ops._trashcan import TrashEntry


async def undo(args: argparse.Namespace) -> int:
    """Submit the undo job of ``args.job`` (the same one if it was undone before) and follow
    it here."""
    import_job_types()
    if "undo" not in registered_job_types():
        raise CliError("this parjobs has no 'undo' job type installed")
    store = _manage.existing_store(args, args.job)
    renderer = make_renderer(json_mode=args.json, plain=args.plain, stream=sys.stdout)
    async with manager_for(store, workers=args.workers) as manager:
        job_id = await manager.resolve(args.job)

        async def start() -> list[str]:
            return [(await manager.undo(job_id)).id]

        return await follow_jobs(manager, start, store=store, renderer=renderer)


def _shown(path: bytes) -> str:
    return fmt.printable(os.fsdecode(path))


def _entry_json(e: TrashEntry) -> dict[str, object]:
    date = e.deletion_date
    return {
        "original_path": os.fsdecode(e.original_path),
        "trashed_path": os.fsdecode(e.trashed_path),
        "deletion_date": None if date is None else date.isoformat(),
        "trash_dir": os.fsdecode(e.trash_dir),
    }


def _find(entries: list[TrashEntry], text: str) -> TrashEntry | None:
    """The entry at ``text`` in a trash, else the newest trashed from ``text``."""
    path = os.fsencode(os.path.abspath(expand_tilde(text)))
    for e in entries:
        if e.trashed_path == path:
            return e
    return next((e for e in entries if e.original_path == path), None)  # newest first


async def trash(args: argparse.Namespace) -> int:
    from ..ops._trashcan import list_trash, restore

    entries = list_trash()
    if args.trash_command == "list":
        for e in entries:
            if args.json:
                print(dumps(_entry_json(e)))
            else:
                when = e.deletion_date.isoformat(sep=" ") if e.deletion_date else "?"
                print(f"{when}  {_shown(e.original_path)}  ({_shown(e.trashed_path)})")
        return EXIT_OK
    status = EXIT_OK
    for text in args.paths:
        entry = _find(entries, text)
        if entry is None:
            print(f"parjobs: not in the trash: {text}", file=sys.stderr)
            status = EXIT_ERRORS
            continue
        try:
            where = restore(entry.trashed_path)
        except (OSError, ValueError) as exc:
            print(f"parjobs: {_shown(entry.trashed_path)}: {exc}", file=sys.stderr)
            status = EXIT_ERRORS
            continue
        entries.remove(entry)
        print(f"restored {_shown(where)}")
    return status
