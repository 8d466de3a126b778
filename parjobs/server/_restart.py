"""The jobs a server's shutdown paused, remembered in a file so its next start resumes them.

A SIGTERM (a restart, a reboot, ``systemctl stop``) must not leave work waiting for a person:
the jobs the server was running or had queued are paused (running ones with a checkpoint) or
released as ``interrupted`` when its manager closes, and the next ``parjobs serve`` on the same
store resumes exactly those. A job a user paused stays paused: only the jobs this manager held
when it stopped are written down, each with its number of runs, and a job is resumed only if
it still rests as ``paused`` or ``interrupted`` with that number (resumed and paused again by
anyone meanwhile, it has one more run and is left alone).

The file (``<store>.serve-paused``, JSON ``{"jobs": {id: runs}}``) is the server's own: the
store's schema does not change. It is read and removed on start.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable

import trio

from .. import JobManager, JobNotFoundError, JobStatus, ParjobsError

#: The statuses a job the server's shutdown touched rests in.
_RESTING = (JobStatus.PAUSED, JobStatus.INTERRUPTED)


def marker_path(store_path: str) -> str:
    """Where a server on ``store_path`` remembers the jobs its shutdown paused."""
    return f"{store_path}.serve-paused"


async def held_jobs(manager: JobManager) -> dict[str, int]:
    """This manager's running and queued jobs (id -> runs): those its closing is about to
    pause or release. A job pausing or cancelling is on its way to a user's choice: not ours."""
    infos = await manager.list_jobs([JobStatus.QUEUED, JobStatus.RUNNING])
    return {info.id: info.attempts for info in infos if info.lease == manager.id}


def remember(path: str, jobs: dict[str, int]) -> None:
    """Add ``jobs`` to the file (atomically: a crash leaves the old file or the new one)."""
    if not jobs:
        return
    merged = {**_read(path), **jobs}
    temporary = f"{path}.tmp{os.getpid()}"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"jobs": merged}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)


def _read(path: str) -> dict[str, int]:
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        return {}  # unreadable or damaged: nothing is resumed, nothing is lost
    jobs = data.get("jobs") if isinstance(data, dict) else None
    if not isinstance(jobs, dict):
        return {}
    return {k: v for k, v in jobs.items() if isinstance(k, str) and isinstance(v, int)}


async def resume_remembered(
    manager: JobManager, path: str, warn: Callable[[str], None]
) -> list[str]:
    """Resume the jobs the previous server's shutdown paused and that nobody touched since;
    forget the file. Returns their ids; ``warn`` gets a line for each one that cannot run."""
    jobs = await trio.to_thread.run_sync(_read, path)
    with contextlib.suppress(FileNotFoundError):
        await trio.to_thread.run_sync(os.unlink, path)
    resumed = []
    for job_id, runs in jobs.items():
        try:
            info = await manager.get(job_id)
            if info.status not in _RESTING or info.attempts != runs:
                continue  # finished, deleted, or resumed and paused by someone since
            await manager.resume(job_id)
        except JobNotFoundError:
            continue
        except (ParjobsError, ValueError) as exc:  # run elsewhere, type missing...
            warn(f"job {job_id} paused by the last shutdown cannot resume: {exc}")
            continue
        resumed.append(job_id)
    return resumed
