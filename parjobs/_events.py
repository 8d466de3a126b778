"""The manager-wide event stream: frozen `JobEvent` records (status changes, coalesced progress,
item errors, per-item records) fanned out to any number of subscribers, each with a bounded
buffer, so a slow subscriber loses events (and is told how many) but never slows a job."""

from __future__ import annotations

import collections
import dataclasses
import enum
import itertools
import typing
from collections.abc import Awaitable, Callable
from typing import Any, Self

import trio

from ._items import ItemRecord
from ._output import OutputLine
from ._progress import ItemError, Progress
from ._records import JobInfo
from ._status import JobStatus
from ._util import NoPublicConstructor

#: Events a subscriber may have waiting before further ones are dropped (progress snapshots
#: of one job take one place however many arrive: only the newest is kept).
DEFAULT_BUFFER = 1000


class EventKind(enum.StrEnum):
    """What a `JobEvent` reports."""

    #: The job's status changed (``status``, ``info``, and ``progress``: its snapshot then).
    #: Published as this manager makes each transition (none is missed, however short);
    #: other processes' transitions are read from the store (a short one may be missed).
    STATUS = "status"
    #: A progress snapshot (``progress``); coalesced per job for each subscriber.
    PROGRESS = "progress"
    #: One item of the job failed (``error``), as recorded by its checkpoint.
    ITEM_ERROR = "item_error"
    #: A record of the job's item log (``record``, an `ItemRecord`), as checkpointed.
    ITEM = "item"
    #: A line a process task's program wrote (``output``: a `parjobs.process.OutputLine`),
    #: of the jobs run here.
    OUTPUT = "output"
    #: The job was deleted (by this manager, or purged by retention).
    DELETED = "deleted"


@typing.final
@dataclasses.dataclass(frozen=True, slots=True)
class JobEvent:
    """One event of a manager's stream (see `JobManager.events`).

    ``seq`` increases by one per event the manager publishes; ``dropped`` counts the events
    this subscriber lost just before this one because its buffer was full (progress is
    coalesced, not queued: a subscriber always gets a job's newest snapshot)."""

    kind: EventKind
    job_id: str
    seq: int
    status: JobStatus | None = None
    info: JobInfo | None = None
    progress: Progress | None = None
    error: ItemError | None = None
    record: ItemRecord | None = None
    dropped: int = 0
    output: OutputLine | None = None


class _Stream:
    """What both kinds of subscription share: a context manager and an async iterator of
    `JobEvent` that `close` ends."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __aiter__(self) -> Self:
        return self

    async def aclose(self) -> None:
        self.close()


@typing.final
class EventSubscription(_Stream, metaclass=NoPublicConstructor):
    """A subscription to a manager's events: an async iterator of `JobEvent`, registered from
    the moment it was made (nothing published after that is missed, except what its full
    buffer drops). Use it as a context manager so it ends with the block::

        with manager.events() as events:
            async for event in events:
                ...

    Its bounded buffer keeps order; a progress event replaces the progress of the same job
    still waiting in the buffer (in place), so progress never fills it."""

    def __init__(self, bus: EventBus, job_id: str | None, buffer: int, items: bool = False) -> None:
        if buffer < 1:
            raise ValueError(f"buffer must be >= 1, got {buffer}")
        self._bus = bus
        self.job_id = job_id
        self.items = items  # wants the item log's records (EventKind.ITEM)
        self.buffer = buffer
        self._queue: collections.deque[JobEvent] = collections.deque()
        self._progress_at: dict[str, JobEvent] = {}  # job id -> its progress event in the queue
        self._dropped = 0
        self._wake = trio.Event()
        self._closed = False

    def __repr__(self) -> str:
        return f"<EventSubscription job={self.job_id} waiting={len(self._queue)}>"

    def push(self, event: JobEvent) -> None:
        """Buffer ``event`` if it concerns this subscription (never blocks)."""
        if self.job_id is not None and event.job_id != self.job_id:
            return
        if event.kind is EventKind.ITEM and not self.items:
            return
        if event.kind is EventKind.PROGRESS:
            waiting = self._progress_at.get(event.job_id)
            if waiting is not None:
                index = self._queue.index(waiting)
                if waiting.dropped:
                    event = dataclasses.replace(event, dropped=waiting.dropped)
                self._queue[index] = event
                self._progress_at[event.job_id] = event
                return
        if len(self._queue) >= self.buffer:
            self._dropped += 1
            return
        if self._dropped:  # the first event after the gap says how long it was
            event = dataclasses.replace(event, dropped=self._dropped)
            self._dropped = 0
        self._queue.append(event)
        if event.kind is EventKind.PROGRESS:
            self._progress_at[event.job_id] = event
        self._wake.set()

    @property
    def waiting(self) -> int:
        """How many events are buffered, not yet received (0: the subscriber caught up)."""
        return len(self._queue)

    def close(self) -> None:
        """Stop receiving events; an iteration in progress ends."""
        self._closed = True
        self._bus._unsubscribe(self)
        self._wake.set()

    async def __anext__(self) -> JobEvent:
        while not self._queue:
            if self._closed:
                raise StopAsyncIteration
            self._wake = trio.Event()
            await self._wake.wait()
        event = self._queue.popleft()
        if self._progress_at.get(event.job_id) is event:
            del self._progress_at[event.job_id]
        return event


@typing.final
class OwnerEvents(_Stream):
    """The events of one owner's jobs only, read from a subscription (see
    `OwnerView.events`): each event's job is looked up once (``owner_of``: its owner, None
    when it is gone) and the others' events are skipped. A deletion is passed on for a job
    seen to be the owner's before. Same use as `EventSubscription`."""

    def __init__(
        self,
        subscription: EventSubscription,
        owner: str,
        owner_of: Callable[[str], Awaitable[str | None]],
    ) -> None:
        self.subscription = subscription
        self.owner = owner
        self._owner_of = owner_of
        self._owners: dict[str, str | None] = {}

    async def __anext__(self) -> JobEvent:
        while True:
            event = await self.subscription.__anext__()
            if event.kind is EventKind.DELETED:
                if self._owners.pop(event.job_id, None) == self.owner:
                    return event
                continue
            if event.info is not None:  # read from the store with the event
                self._owners[event.job_id] = event.info.owner
            elif event.job_id not in self._owners:
                self._owners[event.job_id] = await self._owner_of(event.job_id)
            if self._owners[event.job_id] == self.owner:
                return event

    def close(self) -> None:
        self.subscription.close()


class EventBus:
    """Publishes events to every current subscriber; publishing never waits."""

    def __init__(self) -> None:
        self._subs: set[EventSubscription] = set()
        self._seq = itertools.count(1)
        self.subscribed = trio.Event()  # set while somebody listens
        self.closed = False  # no more events will come (the manager closed)
        self.last_seq = 0  # the ``seq`` of the newest event published

    @property
    def listening(self) -> bool:
        return bool(self._subs)

    @property
    def listening_items(self) -> bool:
        """Whether a subscription asked for the item log's records."""
        return any(sub.items for sub in self._subs)

    def publish(self, kind: EventKind, job_id: str, **fields: Any) -> None:
        if not self._subs:
            return
        event = JobEvent(kind, job_id, next(self._seq), **fields)
        self.last_seq = event.seq
        for sub in list(self._subs):
            sub.push(event)

    def subscribe(
        self, job_id: str | None = None, *, buffer: int = DEFAULT_BUFFER, items: bool = False
    ) -> EventSubscription:
        """A subscription to the events from now on (only ``job_id``'s if given; the item
        log's records only with ``items``)."""
        sub = EventSubscription._create(self, job_id, buffer, items)
        if self.closed:
            sub._closed = True  # ends at once: nothing more will be published
            return sub
        self._subs.add(sub)
        self.subscribed.set()
        return sub

    def close_all(self) -> None:
        """End every subscription (the manager closes): iterations end after what waits."""
        self.closed = True
        for sub in list(self._subs):
            sub.close()

    def _unsubscribe(self, sub: EventSubscription) -> None:
        self._subs.discard(sub)
        if not self._subs:
            self.subscribed = trio.Event()
