"""The commands that run jobs: build one from the options (or resume stored ones) and follow
it. Commands that look at or steer stored jobs are in `_manage`."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import trio

from .._job import Job, dump_job, lookup_job_type
from .._status import JobStatus
from .._util import names_contents
from . import _manage
from ._app import expand_tilde
from ._app import operand_path as _path
from ._errors import EXIT_OK, CliError
from ._follow import follow_jobs
from ._render import Renderer, make_renderer
from ._results import prints_data
from ._session import Store, cluster_config, manager_for
from ._worker import resume_detached, submit_detached

if TYPE_CHECKING:
    from ..ops._thumbnail import Layout


def _existing(paths: list[str]) -> list[str]:
    out = []
    for text in paths:
        path = _path(text)
        try:
            os.lstat(path)
        except NotADirectoryError:  # ``file/``, ``file/.``: a directory, as for ``rm``, ``cp``
            written = "'/.'" if names_contents(text) else "'/'"
            raise CliError(f"not a directory (a trailing {written} names one): {text!r}") from None
        except OSError:
            raise CliError(f"no such file or directory: {text!r}") from None
        out.append(path)
    return out


async def _submit(
    args: argparse.Namespace, job: Job, with_renderer: Callable[[Renderer], None] | None = None
) -> int:
    """Validate ``job`` (once, in a worker thread, before the store is even opened: a wrong
    spec creates none), run it here and follow it. ``with_renderer`` gets the display
    before the job is submitted (to ask beside it)."""
    dumped = await trio.to_thread.run_sync(dump_job, job)
    store = Store.choose(args.store)
    renderer = _renderer(args, [(dumped.type_name, job.to_spec())])
    if args.detach:
        return await submit_detached(args, store, dumped)
    if with_renderer is not None:
        with_renderer(renderer)
    async with manager_for(store, cluster_config(args), workers=args.workers) as manager:

        async def start() -> list[str]:
            return [(await manager.submit(dumped)).id]

        return await follow_jobs(manager, start, store=store, renderer=renderer)


def _renderer(args: argparse.Namespace, jobs: list[tuple[str, Any]]) -> Renderer:
    """The display; on stderr when a job prints data (digests...) to stdout."""
    data = any(prints_data(job_type, spec) for job_type, spec in jobs)
    stream = sys.stderr if data else sys.stdout
    return make_renderer(json_mode=args.json, plain=args.plain, stream=stream)


def _transfer(args: argparse.Namespace, *options: str) -> dict[str, Any]:
    """A copy's or move's spec fields: its operands, checked, and the ``options`` whose
    command-line names are the spec's field names, passed through as parsed."""
    fields = {name: getattr(args, name) for name in ("on_conflict", "verify", "durable", *options)}
    return dict(sources=_existing(args.sources), destination=_path(args.destination), **fields)


async def copy(args: argparse.Namespace) -> int:
    from ..ops import CopyJob  # only the op this command runs

    job = CopyJob(
        **_transfer(args, "follow_symlinks", "preserve_xattrs", "preserve_owner", "hard_links")
    )
    if args.on_conflict != "ask":
        return await _submit(args, job)
    if args.detach:
        raise CliError("--on-conflict ask asks here: it cannot be used with --detach")
    from ._ask import ConflictPrompt

    def ask_beside(renderer: Renderer) -> None:
        job.ask = ConflictPrompt(renderer)

    return await _submit(args, job, ask_beside)


async def move(args: argparse.Namespace) -> int:
    from ..ops import MoveJob

    for text in args.sources:  # (as the job refuses it, but named as typed)
        if names_contents(text):
            raise CliError(
                f"move: refusing {text!r}: like mv, parjobs does not move a path ending in "
                "'.' or '..'; name the directory itself"
            )
    job = MoveJob(**_transfer(args))
    return await _submit(args, job)


async def delete(args: argparse.Namespace) -> int:
    from ..ops import DeleteJob

    paths = _existing([_delete_target(text) for text in args.paths])
    job = DeleteJob(paths=paths, trash=args.trash, allow_cwd_ancestor=args.force_ancestor)
    return await _submit(args, job)


def _delete_target(text: str) -> str:
    """What the user typed, checked before it becomes absolute, then made absolute with its
    parent resolved physically (``link/../x`` is where the kernel finds it, not ``x``).

    Like ``rm``, refuses a last component ``.`` or ``..`` (``.``, ``./``, ``x/..``): made
    absolute, those would name an ordinary-looking directory the job would then delete. An
    empty argument would mean the current directory too. The job's own checks (root, home,
    ancestors of the current directory) then run on the result.
    """
    if not text:
        raise CliError("delete: refusing '': an empty path")
    expanded = expand_tilde(text)
    stripped = expanded.rstrip(os.sep)
    head, _, last = stripped.rpartition(os.sep)
    if last in (".", ".."):
        raise CliError(
            f"delete: refusing {text!r}: like rm, parjobs does not delete a path ending "
            "in '.' or '..'; name the directory itself"
        )
    if not stripped:  # "/" or "//": the job refuses the root
        return os.sep
    if head:
        parent = head
    elif stripped.startswith(os.sep):
        parent = os.sep
    else:
        parent = os.curdir
    path = os.path.join(os.path.realpath(parent), last)
    return path + os.sep if text.endswith(os.sep) else path


async def hash_(args: argparse.Namespace) -> int:
    from ..ops import HashJob

    output = _path(args.output) if args.output else None
    # Lines name files as typed (relative for a relative argument), as xxhsum does.
    names = [expand_tilde(text) for text in args.paths]
    job = HashJob(
        paths=_existing(args.paths),
        algorithm=args.algorithm,
        output=output,
        names=names,
        prehash=args.prehash,
    )
    return await _submit(args, job)


async def dupes(args: argparse.Namespace) -> int:
    from ..ops import DuplicatesJob

    job = DuplicatesJob(paths=_existing(args.paths), min_size=args.min_size, prescan=args.prescan)
    return await _submit(args, job)


async def thumbnails(args: argparse.Namespace) -> int:
    from ..ops import ThumbnailJob  # Pillow: only for this command

    layout: Layout
    if args.freedesktop:
        layout, out_dir = "freedesktop", None
    else:
        layout = "cache"
        out_dir = _path(args.out) if args.out else _default_thumbnails()
    job = ThumbnailJob(
        paths=_existing(args.paths),
        size=args.size,
        format=args.format,  # argparse's choices are the formats; None: the layout's
        layout=layout,
        out_dir=out_dir,
        quality=args.quality,
    )
    return await _submit(args, job)


def _default_thumbnails() -> str:
    cache = os.environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(cache):
        cache = os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "parjobs", "thumbnails")


async def resume(args: argparse.Namespace) -> int:
    if bool(args.job) == bool(args.all):
        raise CliError("give either a job ID or --all")
    store = _manage.existing_store(args, args.job)
    if args.detach and store.server is not None:
        raise CliError("--detach queues in a store; it does not go through --server")
    if not store.exists:
        print("nothing to resume", flush=True)
        return EXIT_OK
    async with manager_for(
        store, cluster_config(args), workers=args.workers, max_running=1
    ) as manager:
        if args.all:
            ids = [i.id for i in await manager.list_jobs([JobStatus.PAUSED, JobStatus.INTERRUPTED])]
        else:
            ids = [await manager.resolve(args.job)]
        if not ids:
            print("nothing to resume", flush=True)
            return EXIT_OK
        if args.detach:  # a worker runs it, with job types of its own: none is checked here
            return await resume_detached(args, manager, ids)
        infos = [await manager.get(job_id) for job_id in ids]
        for info in infos:
            # Only the job types resumed are imported (not Pillow for a copy, say).
            if lookup_job_type(info.type) is None:
                raise CliError(
                    f"job {info.id} is a {info.type!r} job, which this parjobs cannot run"
                )
        renderer = _renderer(args, [(info.type, info.spec_data) for info in infos])

        async def start() -> list[str]:
            for job_id in ids:
                await manager.resume(job_id)
            return ids

        return await follow_jobs(manager, start, store=store, renderer=renderer)
