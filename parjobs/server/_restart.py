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
import secrets
import stat
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
    """Add ``jobs`` to the file (atomically: a crash leaves the old file or the new one). The
    temporary has a random name and is created anew (``O_EXCL | O_NOFOLLOW``): beside a
    store in a shared directory, a symlink or hard link planted at a predictable name would
    have had its target truncated and overwritten."""
    if not jobs:
        return
    merged = {**_read(path)[0], **jobs}
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    temporary = f"{path}.{secrets.token_hex(8)}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(temporary, flags, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump({"jobs": merged}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def _read(path: str) -> tuple[dict[str, int], str | None]:
    """The jobs the file names, and why it was not read (None when it was read, is absent or
    damaged: a damaged one of ours names no job, and is replaced or removed as usual).
    Only a regular file of this user's is read: opened without following a symlink or
    waiting on a FIFO (one planted beside a store in a shared directory held the server's
    start, and its SIGTERM, for ever), and a file another user wrote could make the server
    resume jobs its users paused."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        return {}, None
    except OSError as exc:
        return {}, f"cannot be opened: {exc.strerror}"  # a symlink (ELOOP), no permission...
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            return {}, "not a regular file"
        if info.st_uid != os.geteuid():
            return {}, f"owned by another user (uid {info.st_uid})"
        try:
            data = json.loads(f.read())
        except (OSError, ValueError):
            return {}, None  # unreadable or damaged: nothing is resumed, nothing is lost
    jobs = data.get("jobs") if isinstance(data, dict) else None
    if not isinstance(jobs, dict):
        return {}, None
    return {k: v for k, v in jobs.items() if isinstance(k, str) and isinstance(v, int)}, None


async def resume_remembered(
    manager: JobManager, path: str, warn: Callable[[str], None]
) -> list[str]:
    """Resume the jobs the previous server's shutdown paused and that nobody touched since;
    forget the file. Returns their ids; ``warn`` gets a line for each one that cannot run."""
    jobs, refused = await trio.to_thread.run_sync(_read, path)
    if refused is not None:  # left as it is: it may not be ours to remove
        warn(f"{path} ignored ({refused}): no job resumed by it, the file left as it is")
        return []
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
