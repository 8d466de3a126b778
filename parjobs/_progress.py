"""Progress: immutable snapshots, and the tracker that aggregates parallel tasks into them.

Tasks report into one `ProgressTracker` per job (counts from the trio side, bytes from worker
threads through their own counters, so no lock is needed on the hot path). Subscribers pull
coalesced snapshots at about 10 per second; a slow or stuck subscriber never blocks the job,
it only sees fewer, newer snapshots.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import time
import typing
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from typing import Any, Protocol

import trio

#: How many recent item errors a snapshot carries (the store keeps all of them).
RECENT_ERRORS = 20
#: How many in-flight item labels a snapshot carries.
CURRENT_ITEMS = 10
#: Moving-average window for rates, in seconds.
RATE_WINDOW = 5.0
#: Minimum interval between snapshots delivered to one subscriber.
UPDATE_INTERVAL = 0.1


@typing.final
@dataclasses.dataclass(frozen=True, slots=True)
class ItemError:
    """One failed item: which task, on which item, and why. ``traceback`` is the failure's
    Python traceback (the store keeps it; snapshots leave it out to stay small)."""

    index: int
    label: str
    error: str  # exception type name
    message: str
    stage: str = "default"
    traceback: str = ""

    def __str__(self) -> str:
        return f"{self.label}: {self.message}"


@typing.final
@dataclasses.dataclass(frozen=True, slots=True)
class Progress:
    """A frozen picture of a job's progress.

    ``items_total``/``bytes_total`` are None while unknown; while a tree is still being walked
    they grow and ``totals_final`` is False. ``eta`` and `fraction` are None until totals are
    final (and, for ``eta``, a rate is known). Totals are never below what is done
    (``bytes_done + bytes_skipped <= bytes_total``, ``items_finished <= items_total``).

    ``bytes_done`` counts finished items' bytes, the bytes of items in flight, and those of
    items begun but stopped by a pause or waiting for a retry (``partial``, by stage and
    index: kept across pause and resume, and taken over by the item's own count when it runs
    again), so it does not drop when a job pauses or a task is retried.
    """

    job_id: str = ""
    status: str = "queued"
    items_done: int = 0
    items_failed: int = 0
    items_skipped: int = 0
    items_total: int | None = None
    bytes_done: int = 0
    bytes_total: int | None = None
    totals_final: bool = False
    rate_items: float = 0.0
    rate_bytes: float = 0.0
    eta: float | None = None
    in_flight: int = 0
    current: tuple[str, ...] = ()
    elapsed: float = 0.0
    recent_errors: tuple[ItemError, ...] = ()
    message: str = ""
    #: Bytes of items that finished without work (skipped: the destination exists, is up
    #: to date...): not in ``bytes_done``, but finished for `fraction`.
    bytes_skipped: int = 0
    #: ``(stage, index, bytes)`` of items begun, then stopped before they finished (a pause,
    #: a retry): counted in ``bytes_done`` until they run again.
    partial: tuple[tuple[str, int, int], ...] = ()

    @property
    def items_finished(self) -> int:
        """Items that need no more work: done, failed or skipped."""
        return self.items_done + self.items_failed + self.items_skipped

    @property
    def fraction(self) -> float | None:
        """Share finished in [0, 1] by bytes when bytes are known, else by items; None while
        the totals may still grow (a share of a growing total would go backwards). Once every
        item is finished it is 1: a failed item's bytes are neither done nor skipped, and a
        job that ended with failures would otherwise stop short of its total."""
        if not self.totals_final:
            return None
        if self.items_total and self.items_finished >= self.items_total:
            return 1.0
        if self.bytes_total:
            return min(1.0, (self.bytes_done + self.bytes_skipped) / self.bytes_total)
        if self.items_total:
            return min(1.0, self.items_finished / self.items_total)
        return None

    def to_json(self) -> dict[str, Any]:
        """Plain data for storing or for ``--json`` output. Field by field, not
        `dataclasses.asdict` (which deep-copies every value): every checkpoint write stores
        one, and asdict was 40 % of gathering a checkpoint's batch."""
        data = {name: getattr(self, name) for name in _PROGRESS_FIELDS}
        data["current"] = list(self.current)
        data["recent_errors"] = [
            {name: getattr(e, name) for name in _ERROR_FIELDS} for e in self.recent_errors
        ]
        data["partial"] = [list(p) for p in self.partial]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Progress:
        """Inverse of `to_json`; unknown keys are ignored (forward compatible)."""
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in names}
        kwargs["current"] = tuple(kwargs.get("current", ()))
        kwargs["recent_errors"] = tuple(ItemError(**e) for e in kwargs.get("recent_errors", ()))
        kwargs["partial"] = tuple(
            (str(stage), int(index), int(nbytes))
            for stage, index, nbytes in kwargs.get("partial", ())
        )
        return cls(**kwargs)


_PROGRESS_FIELDS = tuple(f.name for f in dataclasses.fields(Progress))
#: What a snapshot keeps of an item error (the traceback stays in the store's error rows).
_ERROR_FIELDS = tuple(f.name for f in dataclasses.fields(ItemError) if f.name != "traceback")


class _Stored(Protocol):
    @property
    def progress(self) -> Progress: ...
    @property
    def done_items(self) -> int: ...
    @property
    def skipped_items(self) -> int: ...
    @property
    def done_bytes(self) -> int: ...


class _InFlight(Protocol):
    @property
    def label(self) -> str: ...
    @property
    def bytes_done(self) -> int: ...
    @property
    def index(self) -> int: ...
    @property
    def stage(self) -> str: ...


class ProgressTracker:
    """Mutable aggregation of one job's progress; `snapshot` freezes it.

    Job code uses `add_total`, `set_total`, `add_bytes` and `set_message`; the dispatcher
    reports item outcomes. Bytes of tasks still running are read from their own counters.

    In flight counts what really runs: the tasks one executor call runs one after the other
    (a group of small files copied by one C call, `started_group`) count once.
    """

    def __init__(self, job_id: str, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.job_id = job_id
        self.status = "queued"
        self._clock = clock
        self.items_done = 0
        self.items_failed = 0
        self.items_skipped = 0
        self.items_total: int | None = None
        self.bytes_done = 0
        self.bytes_skipped = 0
        self.bytes_total: int | None = None
        self.totals_final = False
        self.message = ""
        self._errors: collections.deque[ItemError] = collections.deque(maxlen=RECENT_ERRORS)
        self._in_flight: dict[int, _InFlight] = {}
        self._group_of: dict[int, int] = {}  # in-flight key -> its group's first key
        self._ended: set[int] = set()  # in-flight keys whose task ended, not booked yet
        #: (stage, index) -> bytes an item counted before it stopped unfinished (paused,
        #: retrying): shown until its own counter passes them or it finishes.
        self._carried: dict[tuple[str, int], int] = {}
        self._elapsed_before = 0.0
        self._run_started: float | None = None
        self._samples: collections.deque[tuple[float, int, int]] = collections.deque()
        self._version = 0
        self._changed = trio.Event()
        self._closed = False
        #: Ends the pause between two snapshots: set for good at close (the final snapshot
        #: at once), and set then replaced when the totals become final (the first ETA).
        self._prompt = trio.Event()

    # -- job-facing API ------------------------------------------------------------------

    def add_total(self, items: int = 0, bytes: int = 0) -> None:
        """Grow the known totals, e.g. for every file a tree walk discovers."""
        self.items_total = (self.items_total or 0) + items
        if bytes or self.bytes_total is not None:
            self.bytes_total = (self.bytes_total or 0) + bytes
        self._bump()

    def set_total(
        self, items: int | None = None, bytes: int | None = None, *, final: bool = True
    ) -> None:
        """Set totals outright; ``final=True`` says they will not grow any more."""
        if items is not None:
            self.items_total = items
        if bytes is not None:
            self.bytes_total = bytes
        self._set_final(final)

    def finalize_totals(self) -> None:
        """Declare the totals known (the walk is over), enabling an ETA."""
        self._set_final(True)

    def _set_final(self, final: bool) -> None:
        """Totals final or not; becoming final is shown at once, not at the next tick."""
        hurry = final and not self.totals_final
        self.totals_final = final
        self._bump()
        if hurry and not self._closed:
            self._prompt.set()
            self._prompt = trio.Event()

    def add_bytes(self, n: int) -> None:
        """Count bytes of work done by the job itself (tasks count their own)."""
        self.bytes_done += n
        self._bump()

    def add_done(self, items: int, bytes: int = 0) -> None:
        """Count items (and their bytes) the job finished without tasks, e.g. answered from
        work done before it ran; they are in no checkpoint, so a resumed run does them again
        and counts them then."""
        self.items_done += items
        self.bytes_done += bytes
        self._bump()

    def count_done_as_failed(self, items: int) -> None:
        """Count as failed ``items`` counted done before (an earlier run finished them, and
        this one, doing them again, failed): each item still counts once, where it ended."""
        moved = min(items, self.items_done)
        self.items_done -= moved
        self.items_failed += moved
        self._bump()

    def forget_partial(self, stage: str, keep: Collection[int] = ()) -> None:
        """Stop counting the bytes items of ``stage`` counted before they stopped unfinished
        (``partial``), but those of ``keep``: the job will not run the others again (a file
        it no longer needs), so their bytes would stay counted in no total."""
        carried = self._carried
        if any(s == stage and i not in keep for s, i in carried):
            self._carried = {k: n for k, n in carried.items() if k[0] != stage or k[1] in keep}
            self._bump()

    def set_message(self, message: str) -> None:
        """A short phase description, e.g. "scanning" or "verifying"."""
        self.message = message
        self._bump()

    # -- dispatcher-facing API -----------------------------------------------------------

    def started(self, key: int, item: _InFlight) -> None:
        """An item starts running (any thread)."""
        self._in_flight[key] = item

    def started_group(self, members: Sequence[tuple[int, _InFlight]]) -> None:
        """Items that one call runs one after the other start (any thread): they count as
        one in flight, shown by the first one's label."""
        if not members:
            return
        first = members[0][0]
        for key, item in members:
            self._group_of[key] = first
            self._in_flight[key] = item

    def ended(self, key: int) -> None:
        """An item's task ended (any thread): it no longer runs, though its outcome waits to
        be booked (`finished`), its bytes still counted meanwhile."""
        self._ended.add(key)

    def finished(
        self,
        key: int,
        outcome: str,
        nbytes: int,
        error: ItemError | None,
        *,
        bump: bool = True,
        items: int = 1,
    ) -> None:
        """An item's outcome is booked (trio): it leaves the in-flight set and counts as
        ``items`` done, failed or skipped ("retrying" and "cancelled": not finished, it runs
        again). ``bump=False`` leaves waking the subscribers to a `changed` call after a
        batch."""
        item = self._in_flight.pop(key, None)
        self._group_of.pop(key, None)
        self._ended.discard(key)
        if item is not None:
            name = (item.stage, item.index)
            if outcome in ("retrying", "cancelled"):  # unfinished: its bytes stay shown
                begun = max(item.bytes_done, self._carried.get(name, 0))
                if begun > 0:
                    self._carried[name] = begun
            else:
                self._carried.pop(name, None)
        if outcome in ("retrying", "cancelled"):  # not finished: it will run again
            if bump:
                self._bump()
            return
        if outcome == "done":
            self.items_done += items
            self.bytes_done += nbytes
        elif outcome == "failed":
            self.items_failed += items
            self.bytes_done += nbytes
            if error is not None:
                self._errors.append(error)
        elif outcome == "skipped":  # its bytes (if it counts any) finished without work
            self.items_skipped += items
            self.bytes_skipped += nbytes
        if bump:
            self._bump()

    def finished_done(self, members: Sequence[tuple[int, int, int]]) -> None:
        """`finished` (``"done"``, ``bump=False``) for several items at once, each given as
        (key, bytes, items): a task group's or run's outcomes, booked in one pass."""
        in_flight, group_of, ended, carried = (
            self._in_flight,
            self._group_of,
            self._ended,
            self._carried,
        )
        items_done = bytes_done = 0
        for key, nbytes, items in members:
            item = in_flight.pop(key, None)
            group_of.pop(key, None)
            ended.discard(key)
            if carried and item is not None:
                carried.pop((item.stage, item.index), None)
            items_done += items
            bytes_done += nbytes
        self.items_done += items_done
        self.bytes_done += bytes_done

    def changed(self) -> None:
        """Wake the subscribers once for a batch of ``finished(..., bump=False)``."""
        self._bump()

    def restore(self, info: _Stored) -> None:
        """Continue from the stored record on resume: finished work comes from the
        checkpointed counters, totals and elapsed time from the last snapshot."""
        saved = info.progress
        self.items_done = info.done_items - info.skipped_items
        self.items_skipped = info.skipped_items
        # The stored counter holds skipped items' bytes too; the snapshot saved with it
        # says how many of them were skipped ones.
        self.bytes_skipped = min(max(saved.bytes_skipped, 0), info.done_bytes)
        self.bytes_done = info.done_bytes - self.bytes_skipped
        self.items_failed = 0
        self.items_total = saved.items_total
        self.bytes_total = saved.bytes_total
        self.totals_final = False
        self._carried = {(stage, index): n for stage, index, n in saved.partial if n > 0}
        self._elapsed_before = saved.elapsed
        self._bump()

    def run_started(self) -> None:
        """A run begins: the job reports its totals afresh (a resumed walk re-counts)."""
        self._run_started = self._clock()
        self._samples.clear()
        self.items_total = self.bytes_total = None
        self.totals_final = False

    def run_stopped(self) -> None:
        if self._run_started is not None:
            self._elapsed_before += self._clock() - self._run_started
            self._run_started = None

    def set_status(self, status: str) -> None:
        self.status = status
        self._bump()

    def close(self) -> None:
        """No more changes will come; wakes every subscriber for its final snapshot."""
        self._closed = True
        self._prompt.set()
        self._bump()

    # -- snapshots and subscriptions ----------------------------------------------------

    def _bump(self) -> None:
        self._version += 1
        self._changed.set()

    def snapshot(self) -> Progress:
        """Freeze the current state (rates are a moving average over a few seconds)."""
        now = self._clock()
        started = self._run_started
        running = started is not None
        elapsed = self._elapsed_before + (now - started if started is not None else 0.0)
        # Threads add to the dict meanwhile: copy it in one C call that runs no Python, then
        # iterate the copy (iterating the live dict makes pairs, and an allocation may start
        # a collection whose finalizers let a thread in: "changed size during iteration").
        flying = self._in_flight.copy().items()
        carried = dict(self._carried)
        bytes_done = self.bytes_done
        for _, t in flying:  # a resumed item's own count takes over from what it carried
            bytes_done += max(t.bytes_done, carried.pop((t.stage, t.index), 0))
        bytes_done += sum(carried.values())
        finished = self.items_done + self.items_failed + self.items_skipped
        # Totals never read below what is done (a resumed walk still re-counting, a file
        # that grew while being copied).
        items_total = self.items_total
        if items_total is not None:
            items_total = max(items_total, finished)
        bytes_total = self.bytes_total
        if bytes_total is not None:
            bytes_total = max(bytes_total, bytes_done + self.bytes_skipped)
        rate_items, rate_bytes = self._rates(now, finished, bytes_done) if running else (0.0, 0.0)
        eta: float | None = None
        if self.totals_final and running:
            left = None if bytes_total is None else bytes_total - self.bytes_skipped
            eta = _eta(left, bytes_done, rate_bytes)
            if eta is None:
                eta = _eta(items_total, finished, rate_items)
        # What really runs: single tasks, and each group once.
        group_of, groups, ended = self._group_of, set(), self._ended
        running_now: list[_InFlight] = []
        for key, t in flying:
            if key in ended:
                continue
            group = group_of.get(key)
            if group is None or group not in groups:
                running_now.append(t)
                if group is not None:
                    groups.add(group)
        snap = Progress(
            job_id=self.job_id,
            status=self.status,
            items_done=self.items_done,
            items_failed=self.items_failed,
            items_skipped=self.items_skipped,
            items_total=items_total,
            bytes_done=bytes_done,
            bytes_total=bytes_total,
            totals_final=self.totals_final,
            rate_items=rate_items,
            rate_bytes=rate_bytes,
            eta=eta,
            in_flight=len(running_now),
            current=tuple(t.label for t in running_now[:CURRENT_ITEMS]),
            elapsed=elapsed,
            recent_errors=tuple(self._errors),
            message=self.message,
            bytes_skipped=self.bytes_skipped,
            partial=tuple(sorted((s, i, n) for (s, i), n in self._carried.items())),
        )
        return snap

    def _rates(self, now: float, items: int, nbytes: int) -> tuple[float, float]:
        samples = self._samples
        if not samples or now - samples[-1][0] >= UPDATE_INTERVAL / 2:
            samples.append((now, items, nbytes))
        while len(samples) > 2 and now - samples[1][0] > RATE_WINDOW:
            samples.popleft()
        t0, i0, b0 = samples[0]
        span = now - t0
        if span <= 0.05:
            return 0.0, 0.0
        return (items - i0) / span, (nbytes - b0) / span

    async def subscribe(self) -> AsyncIterator[Progress]:
        """Yield snapshots as things change, at most ~10 per second, then the final one.

        Each subscriber pulls at its own pace, so a slow one only skips snapshots.
        """
        last_version = -1
        while True:
            closed = self._closed
            if self._version != last_version or closed:
                last_version = self._version
                yield self.snapshot()
                if closed:
                    return
                # Pace the snapshots, but deliver the final one at once (a fixed sleep
                # here made every short command wait ~0.1 s on its way out), and the first
                # with final totals too.
                with trio.move_on_after(UPDATE_INTERVAL):
                    await self._prompt.wait()
            if self._version == last_version and not self._closed:
                self._changed = trio.Event() if self._changed.is_set() else self._changed
                changed = self._changed
                # Bytes reported from worker threads do not bump the version: poll for them.
                with trio.move_on_after(UPDATE_INTERVAL * 5 if not self._in_flight else 0.1):
                    await changed.wait()
                if self._in_flight and self._version == last_version:
                    last_version = -1  # in-flight bytes may have moved; refresh anyway


def _eta(total: int | None, done: int, rate: float) -> float | None:
    if total is None or rate <= 0 or not math.isfinite(rate):
        return None
    return max(0.0, (total - done) / rate)
