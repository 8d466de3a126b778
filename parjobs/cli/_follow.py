"""Following jobs in the foreground: progress to a renderer, Ctrl-C to pause, exit codes.

The first SIGINT (or SIGTERM) asks the manager to pause the followed jobs: they checkpoint and
rest as ``paused``, the summary prints the command that resumes them, and the process exits
with `EXIT_PAUSED`. A second one exits at once; the next manager that opens the store finds
the job ``interrupted``, and ``parjobs resume`` continues it from its last checkpoint.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractContextManager
from types import FrameType
from typing import NoReturn

import trio

from .._exceptions import InvalidTransitionError, JobNotFoundError
from .._manager import JobManager
from .._progress import Progress
from .._status import JobStatus
from . import _format as fmt
from . import _results
from ._errors import EXIT_CANCELLED, EXIT_ERRORS, EXIT_OK, EXIT_PAUSED
from ._render import ERRORS_SHOWN, JsonRenderer, Renderer, Report, failures
from ._session import Store

_EXIT = {
    JobStatus.COMPLETED: EXIT_OK,
    JobStatus.COMPLETED_WITH_ERRORS: EXIT_ERRORS,
    JobStatus.FAILED: EXIT_ERRORS,
    JobStatus.PAUSED: EXIT_PAUSED,
    JobStatus.INTERRUPTED: EXIT_PAUSED,
    JobStatus.CANCELLED: EXIT_CANCELLED,
}


def exit_code(status: JobStatus) -> int:
    return _EXIT.get(status, EXIT_ERRORS)


def combine(codes: list[int]) -> int:
    """One exit code for several jobs: paused beats cancelled beats errors beats success."""
    for code in (EXIT_PAUSED, EXIT_CANCELLED, EXIT_ERRORS):
        if code in codes:
            return code
    return EXIT_OK


def signal_receiver() -> AbstractContextManager[AsyncIterator[int]]:
    """Catch SIGINT and SIGTERM (install before the jobs start, so none is missed)."""
    return trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM)


async def follow_jobs(
    manager: JobManager,
    start: Callable[[], Awaitable[list[str]]],
    *,
    store: Store,
    renderer: Renderer,
    title: str | None = None,
) -> int:
    """Start jobs with ``start`` (it submits or resumes them and returns their ids), then show
    them one after the other until each rests; return the combined exit code.

    SIGINT and SIGTERM are caught from before ``start``: a press while a job is submitted is
    held until its id is known, then pauses it (exit 3). Caught only after, it raised
    KeyboardInterrupt (exit 130) and left the job running, on the server with ``--server``,
    where nobody followed it any more. Outside, Ctrl-C raises KeyboardInterrupt as usual (so
    it can still end a manager that hangs while shutting down). Once a first one paused the
    jobs, a second Ctrl-C quits at once (exit 3, resumable) until the process ends: the
    pause may finish, and the manager close, between the two presses.
    """
    codes: list[int] = []
    job_ids: list[str] = []
    pausing = trio.Event()

    def outside(signum: int, frame: FrameType | None) -> None:
        """SIGINT while the receiver below is not listening: Ctrl-C as usual, or the quick
        quit once the jobs are pausing. Installed before the receiver, because closing it
        hands a press it had not read yet to the handler it found."""
        if pausing.is_set():
            _quit(job_ids, store, renderer)
        signal.default_int_handler(signum, frame)

    previous = signal.signal(signal.SIGINT, outside)
    with signal_receiver() as signals:
        job_ids += await start()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_on_signals, manager, job_ids, store, renderer, signals, pausing)
            for job_id in job_ids:
                codes.append(await follow(manager, job_id, store, renderer, title))
            nursery.cancel_scope.cancel()
    if pausing.is_set():
        # Interpreter shutdown puts a Python-level handler back to the default, and a press
        # then would kill the process by SIGINT; by then it exits 3 anyway: ignore presses.
        atexit.register(signal.signal, signal.SIGINT, signal.SIG_IGN)
    else:
        signal.signal(signal.SIGINT, previous)
    return combine(codes)


async def follow(
    manager: JobManager,
    job_id: str,
    store: Store,
    renderer: Renderer,
    title: str | None = None,
    on_progress: Callable[[Progress], Awaitable[None]] | None = None,
    data: bool = True,
) -> int:
    """Render one job until it rests, then its summary; return its exit code.

    ``on_progress`` sees every snapshot too (the demo pauses the copy with it);
    ``data=False`` leaves out what the job prints to stdout (digests...).
    """
    info = await manager.get(job_id)
    renderer.begin(info, title or info.type)
    async for snap in manager.watch(job_id):
        renderer.progress(snap)
        if on_progress is not None:
            await on_progress(snap)
    status = await manager.wait(job_id)
    info = await manager.get_rested(job_id, status)
    limit = -1 if isinstance(renderer, JsonRenderer) else ERRORS_SHOWN
    errors = await manager.errors(job_id, limit=limit)
    facts = await failures(manager.errors, job_id, errors, info.progress.items_failed)
    code = exit_code(status)
    finished = status in (JobStatus.COMPLETED, JobStatus.COMPLETED_WITH_ERRORS)
    if data and finished and isinstance(renderer, JsonRenderer):  # the digests in its result
        info = await _results.with_digests(manager.items, info)
    renderer.finish(
        Report(
            info=info,
            errors=errors,
            exit_code=code,
            resume_command=store.resume_command(job_id) if status.can_resume else None,
            details=_results.details(info) if finished else [],
            show_command=store.command("show", job_id, "--errors"),
            failures=facts,
        )
    )
    if data and finished and not isinstance(renderer, JsonRenderer):
        lines = await _results.data_lines(manager.items, info)
        if lines:  # one write: a dupes report is tens of thousands of lines
            _write_names("\n".join(lines) + "\n")
        sys.stdout.flush()
    return code


def _write_names(text: str) -> None:
    """Write lines that carry file names to stdout as the names' own bytes (as ``xxhsum``,
    ``jdupes`` and ``ls`` do, and ``-o`` files are written): a name that is not UTF-8 holds
    surrogates here (``surrogateescape``), which a UTF-8 locale's strict stdout refuses
    (the job done, its output lost to a traceback).

    On a terminal, as ``ls`` there, control characters and bytes that are not UTF-8 are
    shown escaped (`fmt.printable`: ``\\x1b``, ``\\xff``): written raw, a name holding
    ``ESC [ 2 K`` and a carriage return showed as another path, one of no group (a person
    then deletes what they read). Redirected, the bytes are the names' own."""
    if _on_terminal(sys.stdout):
        text = fmt.printable(text, keep_newlines=True)
    buffer = getattr(sys.stdout, "buffer", None)
    if buffer is None:  # (a text-only stream put in its place by a caller)
        sys.stdout.write(text)
        return
    sys.stdout.flush()
    buffer.write(text.encode("utf-8", "surrogateescape"))


def _on_terminal(stream: object) -> bool:
    try:
        return bool(stream.isatty())  # type: ignore[attr-defined]
    except (AttributeError, ValueError, OSError):  # (a closed or text-only stream)
        return False


async def _on_signals(
    manager: JobManager,
    job_ids: list[str],
    store: Store,
    renderer: Renderer,
    signals: AsyncIterator[int],
    pausing: trio.Event,
) -> None:
    async with trio.open_nursery() as nursery:
        async for _ in signals:
            if not pausing.is_set():
                pausing.set()
                renderer.note("pausing (press Ctrl-C again to quit at once, still resumable)")
                nursery.start_soon(_pause_all, manager, job_ids)
                continue
            _quit(job_ids, store, renderer)


def _quit(job_ids: list[str], store: Store, renderer: Renderer) -> NoReturn:
    """The second Ctrl-C: stop drawing, say how to resume, exit 3 at once."""
    renderer.abort()
    commands = " ; ".join(store.resume_command(job_id) for job_id in job_ids)
    print(f"parjobs: quit; resume with: {commands}", file=sys.stderr, flush=True)
    os._exit(EXIT_PAUSED)


async def _pause_all(manager: JobManager, job_ids: list[str]) -> None:
    for job_id in job_ids:
        # A job that finished before the pause arrived refuses it: nothing to do.
        with contextlib.suppress(InvalidTransitionError, JobNotFoundError):
            await manager.pause(job_id)
