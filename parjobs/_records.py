"""Frozen records the manager, the store and callers exchange: what a job is (`JobInfo`),
what a checkpoint writes (`CheckpointBatch`), and the keyword options of the queries every
layer passes down unchanged (`JobQuery`, `ItemQuery`). Data only, no I/O, so every layer may
import them."""

from __future__ import annotations

import dataclasses
import json
import typing
from typing import Any, TypedDict

from ._items import ItemRow
from ._progress import ItemError, Progress
from ._status import JobStatus

#: The ``request`` of a job completed with errors that `JobManager.undo` took (a
#: compare-and-set, before it submits the undo): the store's `requeue` refuses it from then on.
UNDO_REQUEST = "undo"


@typing.final
@dataclasses.dataclass(frozen=True, slots=True)
class JobInfo:
    """What the store knows about a job: a read-only record for lists and ``show``."""

    id: str
    type: str
    version: int
    spec: str
    status: JobStatus
    priority: int
    queue: str
    lease: str | None
    request: str | None
    owner: str | None
    after: tuple[str, ...]
    dep_policy: str
    timeout: float | None
    created: float
    started: float | None
    finished: float | None
    updated: float
    run_time: float
    runs: int
    done_items: int
    skipped_items: int
    done_bytes: int
    progress: Progress
    state: dict[str, Any]
    result: Any
    error: str | None

    @property
    def attempts(self) -> int:
        """How many times the job was started (runs, including retries and resumes)."""
        return self.runs

    @property
    def queue_time(self) -> float | None:
        """Seconds between submission and the first start (None if never started)."""
        return None if self.started is None else self.started - self.created

    @property
    def can_resume(self) -> bool:
        """Whether `JobManager.resume` may take the job as it is recorded: its status allows
        it (`JobStatus.can_resume`) and no undo took it (``request`` `UNDO_REQUEST`)."""
        return self.status.can_resume and self.request != UNDO_REQUEST

    @property
    def spec_data(self) -> Any:
        """The stored spec parsed as JSON (None if corrupt)."""
        try:
            return json.loads(self.spec)
        except ValueError:
            return None


@dataclasses.dataclass(slots=True)
class CheckpointBatch:
    """What completed since the last checkpoint, written in one transaction."""

    ranges: dict[str, list[tuple[int, int]]] = dataclasses.field(default_factory=dict)
    results: list[tuple[str, int, str]] = dataclasses.field(default_factory=list)
    errors: list[ItemError] = dataclasses.field(default_factory=list)
    items: list[ItemRow] = dataclasses.field(default_factory=list)
    done_items: int = 0
    skipped_items: int = 0
    done_bytes: int = 0
    state: str | None = None  # JSON, only when it changed
    first_seq: int = 0  # set by the store: the ``seq`` it gave ``items[0]``
    progress: str | None = None  # JSON snapshot
    #: A random id the job's context gives the batch, stored in its progress snapshot (key
    #: ``checkpoint``): a write tried again after it failed (``retried``) is skipped when
    #: the store finds it there, since it committed then and only its answer was lost.
    mark: str | None = None
    retried: bool = False

    def __bool__(self) -> bool:
        return bool(
            self.ranges
            or self.results
            or self.errors
            or self.items
            or self.state is not None
            or self.progress is not None
        )


class JobQuery(TypedDict, total=False):
    """Which jobs ``list_jobs`` returns (`JobManager.list_jobs`, `JobStore.list_jobs`): one
    set of keywords that every layer passes down as it is, spelled and defaulted once, by
    the store.

    ``type`` and ``owner`` filter (None, the default: any); ``order`` is ``created`` (the
    default), ``finished``, ``priority``, ``run_time`` or ``updated``, with a ``-`` prefix
    for descending; ``limit`` and ``offset`` page (default: every job). Damaged rows are
    left out (one bad row must not hide every job); a list given as ``damaged`` receives
    them as (job id, reason). ``results=False`` leaves every job's result unread (None): a
    duplicates job's is megabytes of JSON, which a listing need not read."""

    type: str | None
    owner: str | None
    order: str
    limit: int
    offset: int
    damaged: list[tuple[str, str]] | None
    results: bool


class ItemQuery(TypedDict, total=False):
    """Which records of a job's item log ``items`` returns (`JobManager.items`,
    `JobStore.items`), passed down as it is and defaulted by the store: ``limit`` and
    ``offset`` page (default: every record), ``after`` keeps only the records past that
    ``seq`` (the cheap way to page far in; default 0), ``action`` only that action's."""

    limit: int
    offset: int
    action: str | None
    after: int
