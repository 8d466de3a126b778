"""The pool's work queue: a bounded priority queue that trio tasks put into and take from,
and that worker threads take from without waiting.

Also the one rule that decides whether a task is heavy, and whether it may run in a group.
"""

from __future__ import annotations

import dataclasses
import heapq
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import trio

from ._task import AsyncTask, Outcome, RetryPolicy, Task, TaskContext

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
    worker threads `take` without waiting. A lock guards the heap; parking lots are touched
    only from trio, so a thread's take leaves waking blocked putters to `wake_putters`.
    """

    def __init__(self, capacity: int, on_unclaimed: Callable[[int], None] | None = None) -> None:
        self.capacity = capacity
        #: Called (from trio) with how many items a put left to no waiting getter: the pool
        #: may start that many workers (None once it has started them all).
        self.on_unclaimed = on_unclaimed
        self._heap: list[tuple[int, int, WorkItem]] = []
        self._seq = 0
        self._closed = False
        #: The pool sends ``cluster`` tasks to a cluster: worker threads leave them queued.
        self.remote = False
        self._lock = threading.Lock()
        self._getters = trio.lowlevel.ParkingLot()
        self._putters = trio.lowlevel.ParkingLot()

    def __len__(self) -> int:
        return len(self._heap)

    @property
    def put_count(self) -> int:
        """How many items were ever put (retries included)."""
        return self._seq

    def put_nowait(self, work: WorkItem, *, force: bool = False) -> None:
        if self._closed:
            raise trio.ClosedResourceError("the worker pool is closed")
        with self._lock:
            if len(self._heap) >= self.capacity and not force:
                raise trio.WouldBlock
            self._seq += 1
            heapq.heappush(self._heap, (-work.task.priority, self._seq, work))
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
            heap = self._heap
            room = self.capacity - len(heap)
            if room <= 0:
                return 0
            taken = works if len(works) <= room else works[:room]
            seq = self._seq
            push = heapq.heappush
            for work in taken:
                seq += 1
                push(heap, (-work.task.priority, seq, work))
            self._seq = seq
        count = len(taken)
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
            if not self._heap:
                raise trio.EndOfChannel if self._closed else trio.WouldBlock
            work = heapq.heappop(self._heap)[2]
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
            heap = self._heap
            if not heap:
                return None
            task = heap[0][2].task
            if task.lane != lane or isinstance(task, AsyncTask) or (self.remote and task.cluster):
                return None
            return heapq.heappop(heap)[2]

    def take_run(self, first: WorkItem, size: int) -> list[WorkItem]:
        """From a worker thread: ``first`` and the queued light sync tasks of its lane that
        follow it at the head and are neither grouped nor heavy, up to ``size`` tasks: one
        lock for a run of tiny tasks the thread then runs one after the other."""
        lane = first.task.lane
        run = [first]
        with self._lock:
            heap = self._heap
            while heap and len(run) < size:
                task = heap[0][2].task
                if (
                    task.lane != lane
                    or task.group_size > 1
                    or task.weight >= HEAVY_BYTES
                    or isinstance(task, AsyncTask)
                    or (self.remote and task.cluster)
                ):
                    break
                run.append(heapq.heappop(heap)[2])
        return run

    def take_remote(self, limit: int) -> list[WorkItem]:
        """Pop up to ``limit`` queued sync tasks that may run on a cluster (``cluster``),
        from the head on (another task at the head ends the run)."""
        taken: list[WorkItem] = []
        with self._lock:
            heap = self._heap
            while heap and len(taken) < limit:
                task = heap[0][2].task
                if not task.cluster or isinstance(task, AsyncTask):
                    break
                taken.append(heapq.heappop(heap)[2])
        if taken:
            self.wake_putters()
        return taken

    def take_group(self, first: WorkItem, size: int) -> list[WorkItem]:
        """From a worker thread: ``first`` and the queued `groupable` tasks of its class that
        follow it at the head, up to ``size`` tasks and `GROUP_MAX_BYTES` in all."""
        cls = type(first.task)
        group, total = [first], first.task.weight
        with self._lock:
            heap = self._heap
            while heap and len(group) < size:
                task = heap[0][2].task
                if type(task) is not cls or not groupable(task) or (self.remote and task.cluster):
                    break
                total += task.weight
                if total >= GROUP_MAX_BYTES:
                    break
                group.append(heapq.heappop(heap)[2])
        return group

    def wake_putters(self) -> None:
        """From trio: let a blocked `put` retry once there is room."""
        if self._putters and len(self._heap) < self.capacity:
            self._putters.unpark()

    def close(self) -> None:
        self._closed = True
        self._getters.unpark_all()
        self._putters.unpark_all()
