"""The JSON shapes of the API: a job, an item error, a progress snapshot.

One place for them, so the REST responses and the events of the live streams carry the very
same records (a dashboard row is rebuilt from either).

Every JSON body and event the server writes goes through `parjobs._jsonout.dumps`, the rule of
the CLI's ``--json``: a file name that is not UTF-8 is written with its bad bytes as ``\\xNN``
and its own bytes (base64) in the object's ``names_bytes``. Starlette's own `JSONResponse`
encodes a lone surrogate (``os.fsdecode(b"bad-\\xff")``) to UTF-8 and failed the request
with a 500.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from starlette import responses

from .. import ItemError, JobInfo, Progress
from .._jsonout import dumps


class JSONResponse(responses.JSONResponse):
    """A JSON response in the CLI's strict rule (module docstring): ASCII, no lone surrogate."""

    def render(self, content: Any) -> bytes:
        return dumps(content).encode("ascii")


def job_view(info: JobInfo) -> dict[str, Any]:
    """A job as the API shows it: spec, status, priority, timings, attempts, progress, result."""
    return {
        "id": info.id,
        "type": info.type,
        "version": info.version,
        "spec": info.spec_data,
        "status": info.status.value,
        "priority": info.priority,
        "queue": info.queue,
        "owner": info.owner,
        "after": list(info.after),
        "on_dependency_failure": info.dep_policy,
        "timeout": info.timeout,
        "request": info.request,
        "created": info.created,
        "started": info.started,
        "finished": info.finished,
        "updated": info.updated,
        "queue_time": info.queue_time,
        "run_time": info.run_time,
        "attempts": info.attempts,
        "done_items": info.done_items,
        "skipped_items": info.skipped_items,
        "done_bytes": info.done_bytes,
        "progress": progress_view(info.progress),
        "result": info.result,
        "error": info.error,
        "can_resume": info.can_resume,
    }


def progress_view(snap: Progress) -> dict[str, Any]:
    """A progress snapshot (`Progress.to_json`) plus the fraction finished."""
    data = snap.to_json()
    data["fraction"] = snap.fraction
    return data


def error_view(error: ItemError, *, traceback: bool = True) -> dict[str, Any]:
    """One failed item: stage, index, label (usually the path), exception type and message,
    and its traceback unless ``traceback`` is false (the event stream leaves it out)."""
    data = dataclasses.asdict(error)
    if not traceback:
        del data["traceback"]
    return data
