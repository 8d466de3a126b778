"""Live events for the API's Server-Sent Event streams, built on the manager's public API.

The manager offers per-job progress (`JobManager.watch`) but no stream of every job's status
changes, so the `EventHub` makes one: it polls the store for jobs changed since its last look
(newest ``updated`` first, stopping at the previous high-water mark: the cost follows what
changed, not how many jobs exist), turns every status change into an event, and watches the
progress of each running job (one subscription per job, however many clients). A manager-wide
event stream in the core would replace the polling; see docs/serve.md.

Events with an ``id`` (status changes, item errors, deletions) are kept in a bounded ring, so a
client reconnecting with ``Last-Event-ID`` is sent what it missed; one that was away for longer
than the ring covers is told to reload (``reset``). Progress is not queued at all: each client
keeps only the newest snapshot per job and is sent them at most every `PROGRESS_INTERVAL`.
Every client has a bounded queue: a client that does not read fills it, further events are
dropped and counted, and it is told so (``dropped``) once it reads again. Publishing never
waits for a client, so no client can slow a job.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import json
import math
from collections.abc import AsyncIterator, Iterable
from typing import Any

import trio

from .. import ItemError, JobInfo, JobManager, JobNotFoundError, JobStatus, Progress, StoreError
from ._views import error_view, job_view, progress_view

#: Seconds between looks at the store for status changes (also woken by the API's actions).
POLL_INTERVAL = 0.25
#: Events with ids kept for ``Last-Event-ID`` replay.
RING_SIZE = 2000
#: Events queued per client before further ones are dropped (and the client told).
CLIENT_BUFFER = 500
#: At most one batch of progress snapshots per client per this many seconds (~10/s).
PROGRESS_INTERVAL = 0.1
#: Seconds of silence after which a comment line is sent, so dead connections are noticed.
HEARTBEAT = 15.0
#: Seconds of ``updated`` re-read before the high-water mark (clocks of other processes).
SLACK = 2.0
#: Page size of the change poll.
PAGE = 200

_ACTIVE = (JobStatus.RUNNING, JobStatus.PAUSING, JobStatus.CANCELLING)
#: Buckets (seconds) of the duration histograms kept for /metrics.
DURATION_BUCKETS = (0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600, math.inf)


@dataclasses.dataclass(frozen=True)
class Event:
    """One event: ``kind`` is the SSE event name; ``id`` None for progress (never replayed)."""

    id: int | None
    kind: str
    job_id: str
    owner: str | None
    data: dict[str, Any]

    @functools.cached_property
    def text(self) -> str:
        """The event in the SSE wire format, encoded once for every client."""
        head = f"id: {self.id}\n" if self.id is not None else ""
        return f"{head}event: {self.kind}\ndata: {json.dumps(self.data, default=repr)}\n\n"


class Histogram:
    """Cumulative bucket counts and a sum, as a Prometheus histogram wants them."""

    def __init__(self, buckets: Iterable[float] = DURATION_BUCKETS) -> None:
        self.bounds = tuple(buckets)
        self.counts = [0] * len(self.bounds)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.sum += value
        for i, bound in enumerate(self.bounds):
            if value <= bound:
                self.counts[i] += 1

    @property
    def count(self) -> int:
        return self.counts[-1]


class Subscription:
    """One client's view of the hub: a bounded queue of events, the newest progress per job,
    and what it has missed. Filters: ``owner`` (None: every owner), ``job_id`` (one job)."""

    def __init__(self, hub: EventHub, *, owner: str | None, job_id: str | None) -> None:
        self.hub = hub
        self.owner = owner
        self.job_id = job_id
        self.queue: collections.deque[Event] = collections.deque()
        self.progress: dict[str, Event] = {}
        self.dropped = 0
        self.reset = False
        self.wake = trio.Event()

    def accepts(self, event: Event) -> bool:
        if self.job_id is not None and event.job_id != self.job_id:
            return False
        return self.owner is None or event.owner == self.owner

    def push(self, event: Event) -> None:
        if not self.accepts(event):
            return
        if event.id is None:
            waiting = bool(self.progress)
            self.progress[event.job_id] = event  # only the newest snapshot matters
            if waiting:  # the stream is already due to send progress at its next tick:
                return  # waking it per snapshot would cost every client every task
        elif len(self.queue) >= self.hub.client_buffer:
            self.dropped += 1
            self.hub.dropped_total += 1
        else:
            self.queue.append(event)
        self.wake.set()


class EventHub:
    """Turns the manager's jobs into events for any number of SSE clients (module docstring).

    Run `run` in a nursery for as long as the app serves; `close` ends every stream (server
    shutdown) and makes `run` return.
    """

    def __init__(
        self,
        manager: JobManager,
        *,
        poll_interval: float = POLL_INTERVAL,
        ring_size: int = RING_SIZE,
        client_buffer: int = CLIENT_BUFFER,
        progress_interval: float = PROGRESS_INTERVAL,
        heartbeat: float = HEARTBEAT,
    ) -> None:
        self.manager = manager
        self.poll_interval = poll_interval
        self.client_buffer = client_buffer
        self.progress_interval = progress_interval
        self.heartbeat = heartbeat
        self.ring: collections.deque[Event] = collections.deque(maxlen=ring_size)
        self.subscriptions: set[Subscription] = set()
        self.dropped_total = 0
        self.job_seconds = Histogram()
        self.queue_wait_seconds = Histogram()
        self._seq = 0
        self._status: dict[str, JobStatus] = {}
        self._owner: dict[str, str | None] = {}
        self._started: dict[str, float | None] = {}
        self._watched: dict[str, trio.CancelScope] = {}
        self._errors_seen: dict[str, tuple[frozenset[tuple[str, int]], int]] = {}
        self._mark = -math.inf
        self._primed = False
        self._nudge = trio.Event()
        self._closed = trio.Event()
        self._nursery: trio.Nursery | None = None

    @property
    def last_id(self) -> int:
        """The id of the newest event with an id (0 before any)."""
        return self._seq

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def nudge(self) -> None:
        """Look at the store now (after an API action), not at the next poll."""
        self._nudge.set()

    def close(self) -> None:
        """End every stream and stop the hub (server shutdown)."""
        self._closed.set()
        for sub in list(self.subscriptions):
            sub.wake.set()
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    # -- producing events ----------------------------------------------------------------

    async def run(self) -> None:
        """Poll for changes and watch running jobs until `close`."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            if self.closed:
                nursery.cancel_scope.cancel()
            while not self.closed:
                self._nudge = trio.Event()
                with contextlib.suppress(StoreError):  # busy store: try again next round
                    await self.poll()
                with trio.move_on_after(self.poll_interval):
                    await self._nudge.wait()

    async def poll(self) -> None:
        """One look at the store: an event per status change since the last look."""
        changed: list[JobInfo] = []
        offset = 0
        while True:
            page = await self.manager.list_jobs(order="-updated", limit=PAGE, offset=offset)
            fresh = [info for info in page if info.updated >= self._mark - SLACK]
            changed += fresh
            if len(fresh) < PAGE:
                break
            offset += PAGE
        for info in reversed(changed):  # oldest change first
            self._mark = max(self._mark, info.updated)
            self._observe(info)
        self._primed = True

    def _observe(self, info: JobInfo) -> None:
        before = self._status.get(info.id)
        self._owner[info.id] = info.owner
        if before is not info.status:
            self._status[info.id] = info.status
            if self._primed:  # the first look only learns what exists
                self.publish("status", info.id, info.owner, job_view(info))
                # A job that came and went between two looks (before is None) ran too.
                self._account(before, info)
        if info.status in _ACTIVE and info.id not in self._watched and self._nursery:
            scope = trio.CancelScope()
            self._watched[info.id] = scope
            self._nursery.start_soon(self._watch, info.id, info.owner, scope)

    def _account(self, before: JobStatus | None, info: JobInfo) -> None:
        """Feed the duration histograms from the transitions seen (no per-task cost).
        ``before`` is None for a job first seen after it had already started or ended."""
        waited = info.queue_time
        if waited is not None and info.runs == 1 and before in (None, JobStatus.QUEUED):
            self.queue_wait_seconds.observe(max(0.0, waited))  # first seen started
        # A run that ended since the last look, whatever it went through unseen in between
        # (queued -> running -> completed can all happen between two looks).
        if info.status.is_ended and info.runs and (before is None or not before.is_ended):
            self.job_seconds.observe(info.run_time)

    async def _watch(self, job_id: str, owner: str | None, scope: trio.CancelScope) -> None:
        """Follow one running job's progress until it rests, then look at the store at once."""
        try:
            with scope:
                async for snap in self.manager.watch(job_id):
                    self._progress(job_id, owner, snap)
        except (JobNotFoundError, StoreError):
            pass
        finally:
            self._watched.pop(job_id, None)
            self._errors_seen.pop(job_id, None)
            self.nudge()

    def _progress(self, job_id: str, owner: str | None, snap: Progress) -> None:
        seen, failed = self._errors_seen.get(job_id, (frozenset(), snap.items_failed))
        keys = frozenset((e.stage, e.index) for e in snap.recent_errors)
        new = [e for e in snap.recent_errors if (e.stage, e.index) not in seen]
        missed = max(0, snap.items_failed - failed - len(new))
        self._errors_seen[job_id] = (keys, snap.items_failed)
        for i, error in enumerate(new):
            self._item_error(job_id, owner, error, missed if i == len(new) - 1 else 0)
        data = {"job_id": job_id, **progress_view(snap)}
        event = Event(None, "progress", job_id, owner, data)
        for sub in list(self.subscriptions):
            sub.push(event)

    def _item_error(self, job_id: str, owner: str | None, error: ItemError, missed: int) -> None:
        data = {"job_id": job_id, **error_view(error)}
        if missed:
            data["missed"] = missed  # failed items that went by between two snapshots
        self.publish("item-error", job_id, owner, data)

    def publish(self, kind: str, job_id: str, owner: str | None, data: dict[str, Any]) -> Event:
        """Record an event with the next id and hand it to every subscription (never waits)."""
        self._seq += 1
        event = Event(self._seq, kind, job_id, owner, data)
        self.ring.append(event)
        for sub in list(self.subscriptions):
            sub.push(event)
        return event

    def forget(self, job_id: str, owner: str | None) -> None:
        """A job was deleted through the API: tell the clients."""
        self._status.pop(job_id, None)
        self.publish("deleted", job_id, owner, {"job_id": job_id})

    # -- consuming events ----------------------------------------------------------------

    def subscribe(
        self, *, owner: str | None, job_id: str | None, last_id: int | None
    ) -> Subscription:
        """A new subscription, with the ring's events after ``last_id`` already queued
        (atomically: nothing published in between is lost or doubled)."""
        sub = Subscription(self, owner=owner, job_id=job_id)
        if last_id is not None:
            oldest = self.ring[0].id if self.ring else self._seq + 1
            assert oldest is not None
            if last_id + 1 < oldest or last_id > self._seq:
                sub.reset = True  # the ring no longer holds all it missed (or a stale id)
            for event in self.ring:
                assert event.id is not None
                if event.id > last_id:
                    sub.push(event)
        self.subscriptions.add(sub)
        return sub

    async def stream(
        self, sub: Subscription, *, first: Iterable[str] = (), end_when_final: bool = False
    ) -> AsyncIterator[str]:
        """The SSE text of one subscription: ``first`` chunks, then its events, progress at
        most every `progress_interval`, heartbeats, until the hub closes (or, with
        ``end_when_final``, the job reached a final status)."""
        try:
            yield "retry: 1000\n\n"
            for chunk in first:
                yield chunk
            if sub.reset:
                yield 'event: reset\ndata: {"reason": "events were missed; reload"}\n\n'
            last_write = trio.current_time()
            next_progress = trio.current_time()
            while not self.closed:
                out: list[str] = []
                final = False
                while sub.queue:
                    event = sub.queue.popleft()
                    out.append(event.text)
                    status = event.data.get("status") if event.kind == "status" else None
                    if status is not None and JobStatus(status).is_final:
                        final = True
                if sub.dropped:
                    out.append(f'event: dropped\ndata: {{"count": {sub.dropped}}}\n\n')
                    sub.dropped = 0
                now = trio.current_time()
                if sub.progress and now >= next_progress:
                    out += [event.text for event in sub.progress.values()]
                    sub.progress.clear()
                    next_progress = now + self.progress_interval
                if out:
                    yield "".join(out)
                    last_write = trio.current_time()
                    if final and end_when_final:
                        yield 'event: end\ndata: {"reason": "the job is final"}\n\n'
                        return
                    continue
                if now - last_write >= self.heartbeat:
                    yield ": keep-alive\n\n"
                    last_write = trio.current_time()
                    continue
                deadline = last_write + self.heartbeat
                if sub.progress:
                    deadline = min(deadline, next_progress)
                sub.wake = trio.Event()
                if sub.queue or sub.dropped or self.closed:
                    continue
                with trio.move_on_at(deadline):
                    await sub.wake.wait()
        finally:
            self.subscriptions.discard(sub)
