"""``parjobs worker``: a headless manager that claims and runs the store's queued jobs
until stopped (or, with ``--until-idle``, until none is left for it), for the hosts of a
farm sharing one PostgreSQL store; and ``--detach``, which only queues a job for them."""

from __future__ import annotations

import argparse
import sys
import time

import trio

from .._job import DumpedJob
from .._jsonout import dumps
from .._manager import JobManager
from ._errors import EXIT_OK, CliError
from ._follow import signal_receiver
from ._session import Store, cluster_config, manager_for


async def submit_detached(args: argparse.Namespace, store: Store, job: DumpedJob) -> int:
    """Queue ``job`` (checked) for the workers of ``store`` and print its id (a JSON line with
    ``--json``); nothing runs here."""
    if store.server is not None:
        raise CliError("--detach queues in a store; it does not go through --server")
    async with manager_for(store, workers=args.workers) as manager:
        handle = await manager.submit(job, detach=True)
    if args.json:
        print(dumps({"event": "queued", "job_id": handle.id}), flush=True)
    else:
        print(handle.id, flush=True)
    return EXIT_OK


async def resume_detached(args: argparse.Namespace, manager: JobManager, ids: list[str]) -> int:
    """Queue the resting jobs ``ids`` again for the store's workers (their checkpoints
    kept: a worker resumes each where it stopped) and print their ids, as `submit_detached`
    does; nothing runs here."""
    for job_id in ids:
        await manager.resume(job_id, detach=True)
        if args.json:
            print(dumps({"event": "queued", "job_id": job_id}), flush=True)
        else:
            print(job_id, flush=True)
    return EXIT_OK


async def worker(args: argparse.Namespace) -> int:
    """Run jobs from the store until SIGINT/SIGTERM (its running jobs are then handed back,
    interrupted, for another worker) or, with ``--until-idle``, until idle."""
    store = Store.choose(args.store)
    started = time.monotonic()
    with signal_receiver() as signals:
        config = cluster_config(args)  # $PARJOBS_CLUSTER: a worker may use a cluster lane
        async with manager_for(
            store, config, workers=args.workers, max_running=args.jobs
        ) as manager:
            _say(args, "started", f"worker {manager.id} on {_shown(store)}: claiming jobs")
            async with trio.open_nursery() as nursery:

                async def stop_on_signal() -> None:
                    async for _ in signals:
                        nursery.cancel_scope.cancel()
                        return

                async def work() -> None:
                    await manager.work(until_idle=args.until_idle)
                    nursery.cancel_scope.cancel()

                nursery.start_soon(stop_on_signal)
                nursery.start_soon(work)
            # Leaving the manager pauses what still runs and hands it back (interrupted).
    _say(args, "stopped", f"worker stopped after {time.monotonic() - started:.1f} s")
    return EXIT_OK


def _shown(store: Store) -> str:
    from .._pgschema import redact

    return redact(store.path)


def _say(args: argparse.Namespace, event: str, text: str) -> None:
    if args.json:
        print(dumps({"event": event, "message": text}), flush=True)
    else:
        print(f"parjobs: {text}", file=sys.stderr, flush=True)
