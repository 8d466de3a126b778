"""``parjobs serve``: the store's jobs over HTTP until SIGINT or SIGTERM.

Runs a manager on the store and the server (`parjobs.server.serve`) inside it, in one trio
run. The first line on stdout is exactly ``parjobs serve: http://HOST:PORT/?token=TOKEN``
(the real port, also with ``--port 0``), flushed at once so a supervisor or a test can read
it. SIGINT or SIGTERM stops serving; leaving the manager then pauses the running jobs with a
checkpoint (resumable), and the command exits 0. The jobs paused (or released from the queue)
that way are remembered, and the next start on the same store resumes them
(`parjobs.server._restart`); a job a user paused stays paused.
"""

from __future__ import annotations

import argparse
import functools
import signal
import sys

import trio

from .._pgschema import redact
from ._errors import EXIT_OK, CliError
from ._session import Store, cluster_config, import_job_types, manager_for


async def serve(args: argparse.Namespace) -> int:
    try:
        from ..server import ServeError, TokenFileError, resolve_tokens
        from ..server import serve as run_server
        from ..server._restart import held_jobs, marker_path, remember, resume_remembered
    except ModuleNotFoundError as exc:
        raise CliError(
            f"'serve' needs the server extra ({exc.name} is missing): pip install 'parjobs[server]'"
        ) from None
    try:  # refusals before the store is opened: nothing is touched
        resolve_tokens(args.host, args.token_file)
    except (ServeError, TokenFileError) as exc:
        raise CliError(str(exc)) from None
    store = Store.choose(args.store)
    import_job_types()
    paused_file = marker_path(store.path)
    # Signals are caught from here on: a SIGTERM during startup stops it cleanly, too.
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:

        async def until_signal() -> None:
            async for _ in signals:
                return

        try:
            async with manager_for(store, cluster_config(args), workers=args.workers) as manager:
                async with trio.open_nursery() as nursery:
                    info = await nursery.start(
                        functools.partial(
                            run_server,
                            manager,
                            host=args.host,
                            port=args.port,
                            token_file=args.token_file,
                            shutdown_trigger=until_signal,
                        )
                    )
                    print(f"parjobs serve: {info.url}", flush=True)
                    _say(
                        f"store {redact(store.path)}, tokens {info.token_file}; Ctrl-C pauses "
                        "running jobs and stops (the next start resumes them)"
                    )
                    # Serving (the port was free): the last shutdown's jobs continue.
                    for job_id in await resume_remembered(manager, paused_file, _say):
                        _say(f"job {job_id}, paused when the server last stopped, resumed")
                # No more requests: what this manager holds now, its exit pauses or releases.
                held = await held_jobs(manager)
                try:
                    remember(paused_file, held)
                except OSError as exc:
                    _say(f"cannot write {paused_file} ({exc.strerror}): resume by hand")
        except* ServeError as group:  # e.g. the port is taken
            raise CliError(str(group.exceptions[0])) from None
    return EXIT_OK


def _say(text: str) -> None:
    print(f"parjobs serve: {text}", file=sys.stderr, flush=True)
