"""The pool's work queue: a bounded priority queue that trio tasks put into and take from,
and that worker threads take from without waiting.

Also the one rule that decides whether a task is heavy, and whether it may run in a group.
"""

from __future__ import annotations

import bisect
import collections
import dataclasses
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import trio

from ._task import AsyncTask, Bundle, Outcome, RetryPolicy, Task, TaskContext

if TYPE_CHECKING:
    from ._progress import ItemError
    from ._stage import Ended, Stage

#: Where a finished task's outcome (and, for a failure, its item error) goes.
Deliver = Callable[[Outcome[Any], "ItemError | None", TaskContext], None]
#: Where a task group's outcomes go together, when the dispatcher takes them so (see
#: `WorkItem.deliver_group`).
DeliverGroup = Callable[[list["Ended"]], None]

#: A task estimated to touch at least this many bytes (`Task.weight`) is "heavy": it may take
#: a while, is never throttled or grouped, and its thread hands finished outcomes over first.
HEAVY_BYTES = 1 << 20
#: A group (see `Task.run_group`) takes queued tasks while their sizes add up to less.
GROUP_MAX_BYTES = 4 << 20


def groupable(task: Task[Any]) -> bool:
    """Whether ``task`` may run in a group: its class groups (``group_size > 1``, which a task
    may set to 1 on itself) and it is not heavy. The pool's only grouping decision."""
    return task.group_size > 1 and task.weight < HEAVY_BYTES


@dataclasses.dataclass(slots=True, eq=False)
class WorkItem:
    """One task on its way through the pool: the task, its context, where its outcome goes
    (``deliver``, which books it in ``stage`` once the job has it), the stage, and its retry
    policy and timeout. ``deliver_group``, when set, takes the outcomes of a task group
    together (the same callable for every item of the group): one hand-over and one
    booking per group instead of per task."""

    task: Task[Any]
    tc: TaskContext
    stage: Stage
    deliver: Deliver
    retry: RetryPolicy | None = None
    timeout: float | None = None
    deliver_group: DeliverGroup | None = None


class WorkQueue:
    """A bounded priority queue: higher ``task.priority`` first, FIFO among equals.

    Trio tasks ``put`` (waits while full: backpressure) and ``get`` (waits while empty);
    worker threads `take` without waiting. A lock guards the queue; parking lots are touched
    only from trio, so a thread's take leaves waking blocked putters to `wake_putters`.

    One FIFO per priority present, the levels in order (a job's tasks nearly all share one):
    a put or take is a deque operation, with no heap entry built and ordered per task.
    """

    def __init__(self, capacity: int, on_unclaimed: Callable[[int], None] | None = None) -> None:
        self.capacity = capacity
        #: Called (from trio) with how many items a put left to no waiting getter: the pool
        #: may start that many workers (None once it has started them all).
        self.on_unclaimed = on_unclaimed
        self._levels: dict[int, collections.deque[WorkItem]] = {}  # priority -> its FIFO
        self._keys: list[int] = []  # the negated priorities of ``_levels``, ascending
        self._count = 0
        self._seq = 0
        self._closed = False
        #: The pool sends ``cluster`` tasks to a cluster: worker threads leave them queued.
        self.remote = False
        self._lock = threading.Lock()
        self._getters = trio.lowlevel.ParkingLot()
        self._putters = trio.lowlevel.ParkingLot()

    def __len__(self) -> int:
        return self._count

    @property
    def put_count(self) -> int:
        """How many items were ever put (retries included)."""
        return self._seq

    def _level(self, priority: int) -> collections.deque[WorkItem]:
        """The FIFO of ``priority`` (made, in its place, if none is queued). Under the lock."""
        level = self._levels.get(priority)
        if level is None:
            level = self._levels[priority] = collections.deque()
            bisect.insort(self._keys, -priority)
        return level

    def _head(self) -> collections.deque[WorkItem] | None:
        """The FIFO of the highest priority queued, None when empty. Under the lock."""
        keys = self._keys
        return self._levels[-keys[0]] if keys else None

    def _pop(self, level: collections.deque[WorkItem]) -> WorkItem:
        """Pop the head of ``level``, the head FIFO. Under the lock."""
        work = level.popleft()
        self._count -= 1
        if not level:
            del self._levels[-self._keys.pop(0)]
        return work

    def put_nowait(self, work: WorkItem, *, force: bool = False) -> None:
        if self._closed:
            raise trio.ClosedResourceError("the worker pool is closed")
        with self._lock:
            if self._count >= self.capacity and not force:
                raise trio.WouldBlock
            self._seq += 1
            self._level(work.task.priority).append(work)
            self._count += 1
        if self._getters:
            self._getters.unpark()
        elif self.on_unclaimed is not None:
            self.on_unclaimed(1)

    def put_many(self, works: list[WorkItem]) -> int:
        """Put the head of ``works`` (as many as there is room for) under one lock: a
        dispatcher's chunk of tasks costs one queue operation, not one per task. Returns how
        many were put; waiting getters are woken (and workers started) for them."""
        if self._closed:
            raise trio.ClosedResourceError("the worker pool is closed")
        with self._lock:
            room = self.capacity - self._count
            if room <= 0 or not works:
                return 0
            taken = works if len(works) <= room else works[:room]
            priority = taken[0].task.priority
            level = self._level(priority)
            for work in taken:
                if work.task.priority != priority:
                    priority = work.task.priority
                    level = self._level(priority)
                level.append(work)
            count = len(taken)
            self._count += count
            self._seq += count
        getters = len(self._getters)
        if getters:
            self._getters.unpark(count=min(getters, count))
        if count > getters and self.on_unclaimed is not None:
            self.on_unclaimed(count - getters)
        return count

    async def put(self, work: WorkItem) -> None:
        while True:
            try:
                self.put_nowait(work)
            except trio.WouldBlock:
                await self._putters.park()
            else:
                await trio.lowlevel.checkpoint()
                return

    def get_nowait(self) -> WorkItem:
        with self._lock:
            level = self._head()
            if level is None:
                raise trio.EndOfChannel if self._closed else trio.WouldBlock
            work = self._pop(level)
        self.wake_putters()
        return work

    async def get(self) -> WorkItem:
        while True:
            try:
                work = self.get_nowait()
            except trio.WouldBlock:
                await self._getters.park()
            else:
                await trio.lowlevel.checkpoint()
                return work

    def take(self, lane: str) -> WorkItem | None:
        """From a worker thread: pop the head if it is a sync task of ``lane``, else None
        (an async task or another lane's task is left for a trio worker to pick up)."""
        with self._lock:
            level = self._head()
            if level is None:
                return None
            task = level[0].task
            if task.lane != lane or isinstance(task, AsyncTask) or (self.remote and task.cluster):
                return None
            return self._pop(level)

    def take_run(self, first: WorkItem, size: int) -> list[WorkItem]:
        """From a worker thread: ``first`` and the queued light sync tasks of its lane that
        follow it at the head and are neither grouped nor heavy, up to ``size`` tasks: one
        lock for a run of tiny tasks the thread then runs one after the other."""
        lane = first.task.lane
        remote = self.remote
        return self._take_while(
            [first],
            size,
            lambda task: (
                task.lane == lane
                and task.group_size <= 1
                and task.weight < HEAVY_BYTES
                and not isinstance(task, Bundle)
                and not isinstance(task, AsyncTask)
                and not (remote and task.cluster)
            ),
        )

    def take_remote(self, limit: int) -> list[WorkItem]:
        """Pop up to ``limit`` queued sync tasks that may run on a cluster (``cluster``),
        from the head on (another task at the head ends the run)."""
        taken = self._take_while(
            [], limit, lambda task: task.cluster and not isinstance(task, AsyncTask)
        )
        if taken:
            self.wake_putters()
        return taken

    def take_group(self, first: WorkItem, size: int) -> list[WorkItem]:
        """From a worker thread: ``first`` and the queued `groupable` tasks of its class that
        follow it at the head, up to ``size`` tasks and `GROUP_MAX_BYTES` in all."""
        cls = type(first.task)
        remote = self.remote
        total = first.task.weight

        def fits(task: Task[Any]) -> bool:
            nonlocal total
            if type(task) is not cls or not groupable(task) or (remote and task.cluster):
                return False
            total += task.weight
            return total < GROUP_MAX_BYTES

        return self._take_while([first], size, fits)

    def _take_while(
        self, taken: list[WorkItem], limit: int, fits: Callable[[Task[Any]], bool]
    ) -> list[WorkItem]:
        """Append to ``taken`` the queued items from the head on while ``fits`` takes their
        task (the first it refuses ends the run), until it holds ``limit``: the one loop of
        `take_run`, `take_remote` and `take_group`, under one lock."""
        with self._lock:
            while len(taken) < limit:
                level = self._head()
                if level is None or not fits(level[0].task):
                    break
                taken.append(self._pop(level))
        return taken

    def wake_putters(self) -> None:
        """From trio: let a blocked `put` retry once there is room."""
        if self._putters and self._count < self.capacity:
            self._putters.unpark()

    def close(self) -> None:
        self._closed = True
        self._getters.unpark_all()
        self._putters.unpark_all()
