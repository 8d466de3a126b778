"""The jobs a server's shutdown paused, remembered in a file so its next start resumes them.

A SIGTERM (a restart, a reboot, ``systemctl stop``) must not leave work waiting for a person:
the jobs the server was running or had queued are paused (running ones with a checkpoint) or
released as ``interrupted`` when its manager closes, and the next ``parjobs serve`` on the same
store resumes exactly those. A job a user paused stays paused: only the jobs this manager held
when it stopped are written down (with those resting paused by their failing store, which
it was about to resume), each with its number of runs, and a job is resumed only if
it still rests as ``paused`` or ``interrupted`` with that number (resumed and paused again by
anyone meanwhile, it has one more run and is left alone).

The file (JSON ``{"jobs": {id: runs}}``, ``0600``) is the server's own: the store's schema
does not change. It is read and removed on start. For a SQLite store it is
``<store>.serve-paused``, next to the file; for a PostgreSQL store, which servers on several
hosts may share, it is this host's: ``$XDG_STATE_HOME/parjobs/serve-paused/<hash>.json``, the
hash of the store's URL without its password, so the restart of a server resumes the jobs
*its* shutdown paused, never those another host's server paused (docs/serve.md).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable

import trio

from .. import JobManager, JobNotFoundError, JobStatus, ParjobsError
from .._pgschema import is_url, redact
from .._status import paused_by_store
from .._util import state_dir

#: The statuses a job the server's shutdown touched rests in.
_RESTING = (JobStatus.PAUSED, JobStatus.INTERRUPTED)


def marker_path(store_name: str) -> str:
    """Where a server on the store ``store_name`` (a path or a URL) remembers the jobs its
    shutdown paused."""
    if not is_url(store_name):
        return f"{store_name}.serve-paused"
    key = hashlib.sha256(redact(store_name).encode()).hexdigest()[:24]
    return os.path.join(state_dir(), "serve-paused", f"{key}.json")


async def held_jobs(manager: JobManager) -> dict[str, int]:
    """This manager's running and queued jobs (id -> runs): those its closing is about to
    pause or release; and those resting paused by their failing store that it was to resume
    (it keeps their lease meanwhile; its closing leaves them ``interrupted``). A job pausing
    or cancelling, or paused by a person, is on its way to a user's choice: not ours."""
    infos = await manager.list_jobs([JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.PAUSED])
    return {
        info.id: info.attempts
        for info in infos
        if info.lease == manager.id
        and (info.status is not JobStatus.PAUSED or paused_by_store(info.error))
    }


def remember(path: str, jobs: dict[str, int]) -> None:
    """Add ``jobs`` to the file (atomically: a crash leaves the old file or the new one)."""
    if not jobs:
        return
    merged = {**_read(path), **jobs}
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
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
