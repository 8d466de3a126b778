"""A dispatcher stage's completion book: which task indices are done, and what is new since
the last checkpoint.

It sits below the dispatcher (which records an outcome once the job has taken it, see
`parjobs._dispatch`) and the job context (whose checkpoint writer drains it), so neither has
to know the other.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, cast

from ._indexset import IndexSet, merged, to_ranges
from ._items import Identity, ItemRow
from ._progress import ItemError
from ._task import Outcome, OutcomeStatus, TaskContext

#: A finished task as the pool hands it on: its outcome, a failure's item error, its context.
Ended = tuple[Outcome[Any], ItemError | None, TaskContext]


class CheckpointSink(Protocol):
    """The part of a checkpoint batch a stage fills (the store's ``CheckpointBatch``)."""

    ranges: dict[str, list[tuple[int, int]]]
    results: list[tuple[str, int, str]]
    errors: list[ItemError]
    items: list[ItemRow]
    done_items: int
    skipped_items: int
    done_bytes: int


class Stage:
    """Completion bookkeeping of one dispatcher stage: the durable set plus what is new.

    ``completed`` holds every finished index (earlier runs' and this run's); the ``new_*``
    fields hold what `drain` has not yet handed to a checkpoint. With ``keep_results``, each
    done task's value is kept (as JSON) and resumed outcomes get it back from the store.
    ``notify`` wakes the context's checkpoint writer: called by a `record` that finds nothing
    new since the last `drain` (after it the writer is awake already, and its drain takes
    all that comes meanwhile: one call per checkpoint, not per task) and by every failure.
    """

    def __init__(
        self,
        name: str,
        completed: IndexSet,
        keep_results: bool,
        load_results: Callable[[], Awaitable[dict[int, str]]],
        notify: Callable[[], None] | None = None,
    ) -> None:
        self.name = name
        self.completed = completed
        self.keep_results = keep_results
        self.new: list[int] = []
        #: A `Bundle`'s tasks booked as one run of indices (`IndexSet.add_run`), new too.
        self.new_runs: list[tuple[int, int]] = []
        self.new_results: list[tuple[int, str]] = []
        self.new_errors: list[ItemError] = []
        self.new_items: list[ItemRow] = []
        self.new_done = 0
        self.new_skipped = 0
        self.new_bytes = 0
        self._load_results = load_results
        self._notify = notify
        self._stored: dict[int, str] | None = None
        #: Tasks whose written identity the job keeps (`TaskDispatcher.keep_written`), and
        #: that of each one's last record drained here: index -> (size, mtime_ns, inode).
        self.watched: set[int] = set()
        self.written: dict[int, Identity] = {}

    def record(
        self, outcome: Outcome[Any], error: ItemError | None, tc: TaskContext | None = None
    ) -> None:
        """Book one finished task: done and skipped ones become completed, with the item
        records its task noted (``tc.items``; a skip that noted none gets a "skipped" record);
        a failure's ``error`` is kept for the store, with a "failed" item record."""
        status = outcome.status
        name = self.name
        # Nothing new since the last drain: the writer is not woken yet.
        first = not self.new and not self.new_runs
        if status is OutcomeStatus.DONE or status is OutcomeStatus.SKIPPED:
            task = outcome.task
            index = task.index
            covers = tc.covers if tc is not None else None
            if covers is not None:  # a `Bundle`: the tasks it finished, booked together
                self._record_covered(covers, task.items, outcome.bytes, tc)
            elif self.completed.add(index):
                self.new.append(index)
                # As many items as the progress tracker counts for the task (`Task.items`):
                # a resumed run starts its counts from these.
                n = task.items
                self.new_done += n
                self.new_bytes += outcome.bytes
                items = tc.items if tc is not None else None
                if status is OutcomeStatus.SKIPPED:
                    self.new_skipped += n
                    if items is None and tc is not None:
                        items = [_row("skipped", tc.label, outcome.reason, None, 0, name, index)]
                if items:
                    if len(items) == 1:  # the usual case: no generator per task
                        r = items[0]
                        self.new_items.append(r if r[9] == name else _restaged(r, name))
                    else:
                        self.new_items.extend(
                            r if r[9] == name else _restaged(r, name) for r in items
                        )
                if self.keep_results and status is OutcomeStatus.DONE:
                    self.new_results.append((index, json.dumps(outcome.value)))
        elif error is not None:
            self.new_errors.append(error)
            self.new_items.append(
                _row(
                    "failed",
                    error.label,
                    None,
                    error.message,
                    outcome.bytes,
                    error.stage,
                    error.index,
                )
            )
            first = True
        if first and self._notify is not None:
            self._notify()

    def _record_covered(
        self, covers: list[int], items: int, nbytes: int, tc: TaskContext | None
    ) -> None:
        """Book the tasks a `Bundle` finished (``covers``, ``items`` items, ``nbytes``)
        as completed, with their item records (``tc.items``, each stamped with its task's
        index): one call for the bundle. Its indices are mostly one run (its files, walked
        one after another), booked at once; any others one by one."""
        if covers:
            start, stop = covers[0], covers[-1] + 1
            if (
                stop - start == len(covers)
                and covers == list(range(start, stop))
                and self.completed.add_run(start, stop)
            ):
                self.new_runs.append((start, stop))
            else:
                self.new.extend(self.completed.add_each(covers))
        self.new_done += items
        self.new_bytes += nbytes
        rows = tc.items if tc is not None else None
        if rows:
            name = self.name
            self.new_items.extend(r if r[9] == name else _restaged(r, name) for r in rows)

    async def load_results(self) -> None:
        """Fetch the values stored by earlier runs (once), for resumed outcomes."""
        if self.keep_results and self._stored is None:
            self._stored = await self._load_results()

    def stored_result(self, index: int) -> Any:
        text = self._stored.get(index) if self._stored is not None else None
        return None if text is None else json.loads(text)

    def drain(self, batch: CheckpointSink) -> None:
        """Move what is new into ``batch`` (one checkpoint) and start over. A batch a failed
        write kept may be drained into again: it then holds both."""
        if self.new_runs:
            ranges = merged([*to_ranges(self.new), *self.new_runs])
            batch.ranges.setdefault(self.name, []).extend(ranges)
            self.new, self.new_runs = [], []
        elif self.new:
            batch.ranges.setdefault(self.name, []).extend(to_ranges(self.new))
            self.new = []
        batch.results.extend((self.name, i, v) for i, v in self.new_results)
        batch.errors.extend(self.new_errors)
        if self.watched:
            watched, written = self.watched, self.written
            for r in self.new_items:
                if r[6] is not None and r[10] in watched:
                    written[r[10]] = cast(Identity, r[6:9])
        batch.items.extend(self.new_items)
        batch.done_items += self.new_done
        batch.skipped_items += self.new_skipped
        batch.done_bytes += self.new_bytes
        self.new_results, self.new_errors, self.new_items = [], [], []
        self.new_done = self.new_skipped = self.new_bytes = 0


def _row(
    action: str,
    source: str,
    detail: str | None,
    error: str | None,
    nbytes: int,
    stage: str,
    index: int,
) -> ItemRow:
    """The row of a record the stage notes itself: a skip or a failure, nothing written."""
    return (action, source, None, nbytes, detail, error, None, None, None, stage, index)


def _restaged(row: ItemRow, stage: str) -> ItemRow:
    """``row`` under ``stage`` (a row a remote task noted under another name)."""
    return (*row[:9], stage, row[10])
