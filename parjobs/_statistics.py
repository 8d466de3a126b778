"""The statistics records of the pool's layers and the manager (like trio's ``statistics()``):
`ThrottleStatistics`, `PoolStatistics`, `DispatcherStatistics`, `ManagerStatistics`.

Apart from the classes they describe so that a command which never asks for them does not
build them: each is a frozen dataclass, whose generated methods ``dataclasses`` compiles when
its module is imported (these four: ~18 M instructions, ~2 % of a one-file copy's command).
Their ``statistics()`` methods import this module when first called.
"""

from __future__ import annotations

import dataclasses
import typing


@dataclasses.dataclass(frozen=True, slots=True)
class ThrottleStatistics:
    """A snapshot of a `TinyTaskThrottle` and the threads it governs.

    Attributes:
        limited: True while tiny tasks are held to ``cap`` streaming threads.
        cap: the most threads streaming light single tasks while limited.
        group_cap: the same for tasks run in groups (`Task.run_group`).
        streaming: thread calls started by a light task, running now.
        group_task_seconds: the measured time per grouped task, which sizes the next group.
        stalled: streaming calls whose current task has run so long (a slow or hung task)
            that they no longer count against the caps.
        abandoned: thread calls given up on so far (a task stuck past its timeout, or the
            job stopped while a thread was stuck): never waited for, never reused.
        stuck: abandoned threads still running (each keeps its lane's thread token).
    """

    limited: bool
    cap: int
    group_cap: int
    streaming: int
    group_task_seconds: float
    stalled: int = 0
    abandoned: int = 0
    stuck: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class PoolStatistics:
    """A snapshot of a `WorkerPool`.

    Attributes:
        workers: the most worker tasks the pool may start.
        workers_started: worker tasks started so far (they start as tasks arrive).
        queued: tasks waiting in the queue.
        running: tasks taken off the queue whose outcome is not booked yet.
        done: outcomes booked (delivered or sent to retry) in this run.
        threads: the local thread executor's throttle.
    """

    workers: int
    workers_started: int
    queued: int
    running: int
    done: int
    threads: ThrottleStatistics


@dataclasses.dataclass(frozen=True, slots=True)
class DispatcherStatistics:
    """A snapshot of a `TaskDispatcher` and the job's pool behind it (like trio's
    ``statistics()`` records).

    Attributes:
        stage: the dispatcher's stage.
        completed: tasks of this stage recorded as finished (this run and earlier ones).
        workers: the most worker tasks the pool may start.
        queued: tasks of the job waiting in the pool's queue (every stage).
        running: tasks of the job taken off the queue, outcome not booked yet.
        done: outcomes the pool booked in this run (every stage).
        threads: the thread throttle (`ThrottleStatistics`): whether tiny
            tasks are held to few threads now, the caps, and the threads streaming.
    """

    stage: str
    completed: int
    workers: int
    queued: int
    running: int
    done: int
    threads: ThrottleStatistics


@typing.final
@dataclasses.dataclass(frozen=True, slots=True)
class ManagerStatistics:
    """A snapshot of a manager's load and throughput (see `JobManager.statistics`)."""

    running: int
    queued: int
    queues: dict[str, tuple[int, int]]  # name -> (running, capacity)
    tasks_per_second: float
    bytes_per_second: float
    tasks_finished: int  # by runs that ended in this manager since it opened
    bytes_processed: int


__all__ = ["DispatcherStatistics", "ManagerStatistics", "PoolStatistics", "ThrottleStatistics"]
