"""``parjobs serve``: the store's jobs over HTTP until SIGINT or SIGTERM.

Runs a manager on the store and the server (`parjobs.server.serve`) inside it, in one trio
run. The first line on stdout is exactly ``parjobs serve: http://HOST:PORT/?token=TOKEN``
(the real port, also with ``--port 0``), flushed at once so a supervisor or a test can read
it. SIGINT or SIGTERM stops serving; leaving the manager then pauses the running jobs with a
checkpoint (resumable), and the command exits 0.
"""

from __future__ import annotations

import argparse
import functools
import signal
import sys

import trio

from ._errors import EXIT_OK, CliError
from ._session import Store, import_job_types, manager_for


async def serve(args: argparse.Namespace) -> int:
    try:
        from ..server import ServeError, TokenFileError, resolve_tokens
        from ..server import serve as run_server
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
    # Signals are caught from here on: a SIGTERM during startup stops it cleanly, too.
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:

        async def until_signal() -> None:
            async for _ in signals:
                return

        try:
            async with (
                manager_for(store, workers=args.workers) as manager,
                trio.open_nursery() as nursery,
            ):
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
                print(
                    f"parjobs serve: store {store.path}, tokens {info.token_file}; "
                    "Ctrl-C pauses running jobs and stops",
                    file=sys.stderr,
                    flush=True,
                )
        except* ServeError as group:  # e.g. the port is taken
            raise CliError(str(group.exceptions[0])) from None
    return EXIT_OK
