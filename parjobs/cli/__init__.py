"""The ``parjobs`` command line: run file operations as resumable jobs, list and steer them.

``main(argv)`` returns the exit code: 0 done, 1 completed with errors or failed, 2 usage or
input error, 3 paused or interrupted (resumable), 4 cancelled.
"""

from __future__ import annotations

import atexit
import gc
import os
import sys
import threading
from typing import NoReturn

from .._util import exception_leaves
from ._errors import EXIT_ERRORS, EXIT_SIGINT, EXIT_USAGE, CliError, user_error

#: True when the command line runs as the program (`run`, which ends the process with
#: `os._exit` once the command is done): the SQLite store's connection is then left to that
#: exit, not closed (`parjobs._store.leave_open_for_exit`: no WAL checkpoint at close). Here,
#: not in `_session`, so that ``parjobs --help`` does not load what opening a store needs.
EXIT_FOLLOWS = False

#: Net allocations between two collections of the youngest generation in the program (700 by
#: default): cyclic garbage waits at most this many objects (a few MB) for the collector.
YOUNG_THRESHOLD = 50_000


def main(argv: list[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``); return the exit code.

    Without ``argv`` this is the program (the ``parjobs`` script, ``python -m parjobs``): then
    the objects made by the imports that start the command are frozen (`gc.freeze`) before
    it runs. They live until the process exits; the collector walking them again in each full
    collection, and in the interpreter's final collections at exit, cost ~35 ms of CPU a
    command (``python -c "import trio"`` alone spends 30-40 ms of its ~110 ms exiting). And
    the youngest generation is collected every `YOUNG_THRESHOLD` allocations instead of 700:
    a job's per-file objects mostly die young by reference counting, yet at 700 a copy of
    10,000 small files ran ~90 young and ~8 middle collections, 40 ms of CPU on the GIL.
    The methods `dataclasses` and ``attrs`` generate for the classes the imports make are
    compiled once and kept for the next command (`parjobs._codecache`).
    """
    if argv is None:
        gc.disable()  # until the start-up's objects are frozen, below
        from .._codecache import install

        install()
    from ._app import handler, parse, prepare

    try:
        args = parse(argv)
        from ._remote import SERVER, server_from

        server = server_from(args)
        if server is None:  # (a job the server runs is listed there)
            prepare(args)
        from ._trio import import_trio

        import_trio()  # after parsing: --help and usage errors stay quick
        import trio

        command = handler(args.command)
        SERVER.set(server)  # --server: the commands talk to that server
        if argv is None:
            gc.freeze()
            gc.set_threshold(YOUNG_THRESHOLD, *gc.get_threshold()[1:])
            gc.enable()
        return trio.run(command, args)
    except SystemExit as exc:  # --help, --version
        return exc.code if isinstance(exc.code, int) else 0
    except BaseException as exc:
        error = user_error(exc)
        if error is not None:
            print(f"parjobs: error: {error}", file=sys.stderr, flush=True)
            return EXIT_USAGE
        if any(isinstance(e, KeyboardInterrupt) for e in exception_leaves(exc)):
            print("parjobs: interrupted", file=sys.stderr, flush=True)
            return EXIT_SIGINT
        if any(isinstance(e, BrokenPipeError) for e in exception_leaves(exc)):
            # The reader went away (``parjobs jobs | head``): say nothing more.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return EXIT_ERRORS
        raise
    finally:
        if argv is None:
            gc.enable()  # (on a way out before the job ran)


def run() -> NoReturn:
    """The program (the ``parjobs`` script, ``python -m parjobs``): `main`, then exit.

    The exit skips the interpreter's teardown, which frees every module and object the
    command made one by one (~10 ms of CPU a command, more than the whole of a one-file
    copy's job) though the process ends anyway. Only what the normal exit does for others
    is done first: the `atexit` handlers run and stdout and stderr are flushed. When that
    cannot be done the same way (a thread that is not a daemon still runs, and the
    interpreter would wait for it; a flush fails, e.g. a closed pipe), the normal exit does
    it as usual. By then `main` has closed every file the job opened, and the manager its
    SQLite store, but for the connection: its close would checkpoint the WAL (fsyncs), and the
    exit drops it safely without (`parjobs._store.leave_open_for_exit`).
    """
    global EXIT_FOLLOWS
    EXIT_FOLLOWS = True  # the store's connection is left to this exit (no checkpoint)
    code = main()
    main_thread = threading.main_thread()
    if any(t is not main_thread and not t.daemon for t in threading.enumerate()):
        sys.exit(code)
    atexit._run_exitfuncs()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):  # (ValueError: a stream closed meanwhile)
        sys.exit(code)
    os._exit(code)


__all__ = ["CliError", "main", "run"]
