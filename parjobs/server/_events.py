"""Live events for the API's Server-Sent Event streams, built on the manager's event stream.

The `EventHub` holds ONE subscription to `JobManager.events` (every job's status changes,
progress, item errors and deletions, in order) and turns it into SSE events for any number of
clients: status changes become ``status`` (with the job's stored record), item errors
``item-error``, deletions ``deleted``, progress ``progress``, and, for clients that ask
(``items``), the item log's records ``item``. The manager reports the item
errors of the jobs it runs exactly, as they are checkpointed; of a job run by another process
it only has the stored progress snapshot, so for those the hub still reads the snapshot's
recent errors and says how many went by unseen (``missed``). When the manager's stream drops
events (the hub fell behind its buffer), every client is told to reload (``reset``).

Events with an ``id`` (status changes, item errors, deletions) are kept in a bounded ring, so a
client reconnecting with ``Last-Event-ID`` is sent what it missed; one that was away for longer
than the ring covers is told to reload (``reset``). Progress is not queued at all: each client
keeps only the newest snapshot per job and is sent them at most every `PROGRESS_INTERVAL`, or
less often when many clients follow: every write to a socket costs the server's event loop
(the one the jobs' tasks are dispatched from) a system call and a pass through the HTTP
stack, so progress writes to all clients together are held to `PROGRESS_BUDGET` a second.
Every client has a bounded queue: a client that does not read fills it, further events are
dropped and counted, and it is told so (``dropped``) once it reads again. Publishing never
waits for a client, so no client can slow a job.

Item records (what each item did, `ItemRecord`) come from the manager one per item once their
checkpoint committed, and only while somebody asked for them (the hub's subscription asks
only while a client with ``items`` is connected: building them costs every task). The hub
batches them: the records of one job that arrive together (one checkpoint's, up to
`ITEM_BATCH`) become ONE ``item`` event with a list, encoded once, so a 10,000-file copy costs
each client a write per checkpoint (at most ~20 a second), not one per file. They are sent
before any later event of the job (its final status comes after its last records). They are
live only: no id, not in the replay ring (they would push status changes out of it); each
record carries its ``seq`` in the job's log, and ``GET /api/jobs/{id}/items?after=SEQ`` is the
catch-up after a reconnect, a ``dropped`` or a ``reset``.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
from collections.abc import AsyncIterator, Iterable
from typing import Any

import trio

from .. import ItemError, ItemRecord, JobInfo, JobManager, JobStatus, Progress
from .._events import EventKind, EventSubscription, JobEvent
from .._histogram import Histogram
from .._jsonout import dumps
from ..process import OutputLine
from ._views import error_view, job_view, progress_view

#: A progress batch goes to each client at most every ``HubLimits.progress_interval`` seconds,
#: and never less often than this, however many clients share the budget.
MAX_PROGRESS_INTERVAL = 1.0


@dataclasses.dataclass(frozen=True, slots=True)
class HubLimits:
    """The hub's sizes and pacing (`parjobs serve` uses the defaults; tests shrink them)."""

    #: Events with ids kept for ``Last-Event-ID`` replay.
    ring_size: int = 2000
    #: Events queued per client before further ones are dropped (and the client told).
    client_buffer: int = 500
    #: At most one batch of progress snapshots per client per this many seconds (~10/s).
    progress_interval: float = 0.1
    #: Progress writes per second to all clients together: past ``progress_budget *
    #: progress_interval`` clients (20), each is sent progress less often, never less than
    #: once every MAX_PROGRESS_INTERVAL. Status changes and item errors are never held back.
    progress_budget: float = 200.0
    #: Seconds of silence after which a comment line is sent, so dead connections are noticed.
    heartbeat: float = 15.0
    #: Events the hub's subscription to the manager may hold before the manager drops some.
    core_buffer: int = 10_000


#: Item records of one job per ``item`` event at most.
ITEM_BATCH = 1000


@dataclasses.dataclass(frozen=True)
class Event:
    """One event: ``kind`` is the SSE event name; ``id`` None for progress and process output
    (never replayed)."""

    id: int | None
    kind: str
    job_id: str
    owner: str | None
    data: dict[str, Any]

    @functools.cached_property
    def text(self) -> str:
        """The event in the SSE wire format, encoded once for every client."""
        head = f"id: {self.id}\n" if self.id is not None else ""
        return f"{head}event: {self.kind}\ndata: {dumps(self.data, default=repr)}\n\n"


class Subscription:
    """One client's view of the hub: a bounded queue of events, the newest progress per job,
    and what it has missed. Filters: ``owner`` (None: every owner), ``job_id`` (one job);
    ``items``: also the item log's records (``item`` events)."""

    def __init__(
        self, hub: EventHub, *, owner: str | None, job_id: str | None, items: bool = False
    ) -> None:
        self.hub = hub
        self.owner = owner
        self.job_id = job_id
        self.items = items
        self.queue: collections.deque[Event] = collections.deque()
        self.progress: dict[str, Event] = {}
        self.dropped = 0
        self.reset = False
        self.wake = trio.Event()

    def accepts(self, event: Event) -> bool:
        if self.job_id is not None and event.job_id != self.job_id:
            return False
        if event.kind == "item" and not self.items:
            return False
        return self.owner is None or event.owner == self.owner

    def push(self, event: Event) -> None:
        if not self.accepts(event):
            return
        if event.kind == "progress":
            waiting = bool(self.progress)
            self.progress[event.job_id] = event  # only the newest snapshot matters
            if waiting:  # the stream is already due to send progress at its next tick:
                return  # waking it per snapshot would cost every client every task
        elif len(self.queue) >= self.hub.limits.client_buffer:
            self.dropped += 1
            self.hub.dropped_total += 1
        else:
            self.queue.append(event)
        self.wake.set()


class EventHub:
    """Turns the manager's event stream into events for any number of SSE clients (module
    docstring).

    `listen` subscribes to the manager (call it before serving, so nothing is missed; `run`
    calls it too); run `run` in a nursery for as long as the app serves; `close` ends every
    stream (server shutdown) and makes `run` return.
    """

    def __init__(self, manager: JobManager, limits: HubLimits = HubLimits()) -> None:
        self.manager = manager
        self.limits = limits
        self.ring: collections.deque[Event] = collections.deque(maxlen=limits.ring_size)
        self.subscriptions: set[Subscription] = set()
        self.dropped_total = 0
        self.job_seconds = Histogram()
        self.queue_wait_seconds = Histogram()
        self._seq = 0
        self._gap: int | None = None  # the last id published before the manager dropped events
        self._status: dict[str, JobStatus] = {}
        self._owner: dict[str, str | None] = {}
        self._remote: set[str] = set()  # active jobs run by another process
        self._errors_seen: dict[str, tuple[frozenset[tuple[str, int]], int]] = {}
        self._items: dict[str, list[dict[str, Any]]] = {}  # records not yet sent, by job
        self._events: EventSubscription | None = None
        self._closed = trio.Event()
        self._nursery: trio.Nursery | None = None

    @property
    def client_progress_interval(self) -> float:
        """Seconds between two progress writes to one client: `progress_interval`, stretched
        so that all clients together get at most `progress_budget` writes a second."""
        shared = len(self.subscriptions) / self.limits.progress_budget
        return min(max(self.limits.progress_interval, shared), MAX_PROGRESS_INTERVAL)

    @property
    def last_id(self) -> int:
        """The id of the newest event with an id (0 before any)."""
        return self._seq

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def close(self) -> None:
        """End every stream and stop the hub (server shutdown)."""
        self._closed.set()
        for sub in list(self.subscriptions):
            sub.wake.set()
        if self._events is not None:
            self._events.close()
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    def note_owner(self, job_id: str, owner: str | None) -> None:
        """Remember whose a job is (the API calls it before deleting one, so the deletion
        reaches the owner's clients even if the hub never saw the job change)."""
        self._owner[job_id] = owner

    # -- producing events ----------------------------------------------------------------

    def listen(self) -> EventSubscription:
        """Subscribe to the manager's events (once): everything from now on is seen."""
        if self._events is None:
            self._events = self.manager.events(buffer=self.limits.core_buffer)
            self._events.items = any(sub.items for sub in self.subscriptions)
            if self.closed:
                self._events.close()
        return self._events

    async def run(self) -> None:
        """Turn the manager's events into the clients' until `close`."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            if self.closed:
                nursery.cancel_scope.cancel()
            with self.listen() as events:
                async for event in events:
                    self.handle(event)
                    if self._items and not events.waiting:
                        self.flush_items()  # the rest of the burst is sent together

    def handle(self, event: JobEvent) -> None:
        """One event of the manager's stream (never waits). Item records are held to be sent
        in batches (`flush_items`); any other event sends them first, keeping the order."""
        if event.dropped:
            self._lost()
        if event.kind is EventKind.ITEM:
            if event.record is not None:
                self._item(event.job_id, event.record)
            return
        if self._items:
            self.flush_items()
        if event.kind is EventKind.STATUS and event.info is not None:
            self._observe(event.info)
        elif event.kind is EventKind.PROGRESS and event.progress is not None:
            self._progress(event.job_id, event.progress)
        elif event.kind is EventKind.ITEM_ERROR and event.error is not None:
            self._item_error(event.job_id, event.error, 0)
        elif event.kind is EventKind.OUTPUT and event.output is not None:
            self._output(event.job_id, event.output)
        elif event.kind is EventKind.DELETED:
            self._status.pop(event.job_id, None)
            self._remote.discard(event.job_id)
            self._errors_seen.pop(event.job_id, None)
            owner = self._owner.pop(event.job_id, None)
            self.publish("deleted", event.job_id, owner, {"job_id": event.job_id})

    def _lost(self) -> None:
        """The manager dropped events for the hub: every client reloads, and so does one
        reconnecting with an id from before the gap."""
        self._gap = self._seq
        for sub in list(self.subscriptions):
            sub.reset = True
            sub.wake.set()

    def _observe(self, info: JobInfo) -> None:
        before = self._status.get(info.id)
        self._owner[info.id] = info.owner
        self._status[info.id] = info.status
        if info.status.is_active and info.lease is not None:
            if info.lease == self.manager.id:
                self._remote.discard(info.id)
            else:
                self._remote.add(info.id)
        elif not info.status.is_active:
            self._remote.discard(info.id)
            self._errors_seen.pop(info.id, None)
        self.publish("status", info.id, info.owner, job_view(info))
        self._account(before, info)

    def _account(self, before: JobStatus | None, info: JobInfo) -> None:
        """Feed the duration histograms from the transitions (no per-task cost). ``before``
        is None for a job first seen now (it changed before the hub listened, or anew)."""
        waited = info.queue_time
        if waited is not None and info.runs == 1 and before in (None, JobStatus.QUEUED):
            self.queue_wait_seconds.observe(max(0.0, waited))  # first seen started
        # A run that ended, whatever the store went through between two of the manager's
        # looks (another process's queued -> running -> completed can fall between them).
        if info.status.is_ended and info.runs and (before is None or not before.is_ended):
            self.job_seconds.observe(info.run_time)

    def _progress(self, job_id: str, snap: Progress) -> None:
        owner = self._owner.get(job_id)
        if job_id in self._remote:
            # Run elsewhere: the manager has no item errors of it, only the stored snapshot's
            # recent ones (and the count of all): say how many went by unseen.
            seen, failed = self._errors_seen.get(job_id, (frozenset(), snap.items_failed))
            keys = frozenset((e.stage, e.index) for e in snap.recent_errors)
            new = [e for e in snap.recent_errors if (e.stage, e.index) not in seen]
            missed = max(0, snap.items_failed - failed - len(new))
            self._errors_seen[job_id] = (keys, snap.items_failed)
            for i, error in enumerate(new):
                self._item_error(job_id, error, missed if i == len(new) - 1 else 0)
        data = {"job_id": job_id, **progress_view(snap)}
        event = Event(None, "progress", job_id, owner, data)
        for sub in list(self.subscriptions):
            sub.push(event)

    def _item(self, job_id: str, record: ItemRecord) -> None:
        held = self._items.setdefault(job_id, [])
        held.append(record.to_json())
        if len(held) >= ITEM_BATCH:
            self._send_items(job_id, self._items.pop(job_id))

    def flush_items(self) -> None:
        """Send the item records held: one ``item`` event per job."""
        held, self._items = self._items, {}
        for job_id, records in held.items():
            self._send_items(job_id, records)

    def _send_items(self, job_id: str, records: list[dict[str, Any]]) -> None:
        data = {"job_id": job_id, "items": records}
        event = Event(None, "item", job_id, self._owner.get(job_id), data)
        for sub in list(self.subscriptions):
            sub.push(event)

    def _item_error(self, job_id: str, error: ItemError, missed: int) -> None:
        data = {"job_id": job_id, **error_view(error, traceback=False)}
        if missed:
            data["missed"] = missed  # failed items of a remote run only in /errors
        self.publish("item-error", job_id, self._owner.get(job_id), data)

    def _output(self, job_id: str, line: OutputLine) -> None:
        """A process task's line: queued for the clients like any event, but without an id
        (a chatty program must not push status changes out of the replay ring)."""
        data = {"job_id": job_id, **dataclasses.asdict(line)}
        event = Event(None, "output", job_id, self._owner.get(job_id), data)
        for sub in list(self.subscriptions):
            sub.push(event)

    def publish(self, kind: str, job_id: str, owner: str | None, data: dict[str, Any]) -> Event:
        """Record an event with the next id and hand it to every subscription (never waits)."""
        self._seq += 1
        event = Event(self._seq, kind, job_id, owner, data)
        self.ring.append(event)
        for sub in list(self.subscriptions):
            sub.push(event)
        return event

    # -- consuming events ----------------------------------------------------------------

    def subscribe(
        self, *, owner: str | None, job_id: str | None, last_id: int | None, items: bool = False
    ) -> Subscription:
        """A new subscription, with the ring's events after ``last_id`` already queued
        (atomically: nothing published in between is lost or doubled); ``items``: with the
        item log's records from now on (live only, see the module docstring)."""
        sub = Subscription(self, owner=owner, job_id=job_id, items=items)
        if items and self._events is not None:
            self._events.items = True  # the manager builds item records from now on
        if last_id is not None:
            oldest = self.ring[0].id if self.ring else self._seq + 1
            assert oldest is not None
            if last_id + 1 < oldest or last_id > self._seq:
                sub.reset = True  # the ring no longer holds all it missed (or a stale id)
            elif self._gap is not None and last_id <= self._gap:
                sub.reset = True  # what it missed spans events the manager dropped
            for event in self.ring:
                assert event.id is not None
                if event.id > last_id:
                    sub.push(event)
        self.subscriptions.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        """Forget a client; the manager stops building item records once none wants them."""
        self.subscriptions.discard(sub)
        if sub.items and self._events is not None:
            self._events.items = any(other.items for other in self.subscriptions)

    async def stream(
        self, sub: Subscription, *, first: Iterable[str] = (), end_when_final: bool = False
    ) -> AsyncIterator[str]:
        """The SSE text of one subscription: ``first`` chunks, then its events, progress at
        most every `client_progress_interval`, heartbeats, until the hub closes (or, with
        ``end_when_final``, the job reached a final status)."""
        try:
            yield "retry: 1000\n\n"
            for chunk in first:
                yield chunk
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
                if sub.reset:
                    out.append(_RESET)
                    sub.reset = False
                if sub.dropped:
                    out.append(f'event: dropped\ndata: {{"count": {sub.dropped}}}\n\n')
                    sub.dropped = 0
                now = trio.current_time()
                if sub.progress and now >= next_progress:
                    out += [event.text for event in sub.progress.values()]
                    sub.progress.clear()
                    next_progress = now + self.client_progress_interval
                if out:
                    yield "".join(out)
                    last_write = trio.current_time()
                    if final and end_when_final:
                        yield 'event: end\ndata: {"reason": "the job is final"}\n\n'
                        return
                    continue
                if now - last_write >= self.limits.heartbeat:
                    yield ": keep-alive\n\n"
                    last_write = trio.current_time()
                    continue
                deadline = last_write + self.limits.heartbeat
                if sub.progress:
                    deadline = min(deadline, next_progress)
                sub.wake = trio.Event()
                if sub.queue or sub.dropped or sub.reset or self.closed:
                    continue
                with trio.move_on_at(deadline):
                    await sub.wake.wait()
        finally:
            self.unsubscribe(sub)


_RESET = 'event: reset\ndata: {"reason": "events were missed; reload"}\n\n'
