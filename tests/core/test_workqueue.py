"""The pool's work queue: priority order, backpressure, what worker threads may take, and
the one grouping rule."""

from __future__ import annotations

from typing import Any

import pytest
import trio

import parjobs
from parjobs._indexset import IndexSet
from parjobs._stage import Stage
from parjobs._task import Interrupter, TaskContext
from parjobs._workqueue import GROUP_MAX_BYTES, HEAVY_BYTES, WorkItem, WorkQueue, groupable


class Small(parjobs.Task[None]):
    group_size = 8

    def __init__(self, index: int, size: int = 0, priority: int = 0) -> None:
        self.index, self.size, self.priority = index, size, priority

    @property
    def weight(self) -> int:
        return self.size


class Other(Small):
    pass


class Single(Small):
    group_size = 1


class Later(parjobs.AsyncTask[None]):
    def __init__(self, index: int) -> None:
        self.index = index


async def _no_results() -> dict[int, str]:
    return {}


STAGE = Stage("default", IndexSet(), False, _no_results)


def item(task: parjobs.Task[Any]) -> WorkItem:
    return WorkItem(
        task, TaskContext._create(task.index, "", Interrupter()), STAGE, lambda _o, _e, _tc: None
    )


def indices(items: list[WorkItem]) -> list[int]:
    return [w.task.index for w in items]


@pytest.mark.parametrize(
    ("task", "expected"),
    [
        (Small(0), True),
        (Small(0, HEAVY_BYTES - 1), True),
        (Small(0, HEAVY_BYTES), False),
        (Single(0), False),
        (parjobs.FunctionTask(0, print), False),
    ],
)
def test_groupable_means_a_grouping_class_and_not_heavy(
    task: parjobs.Task[Any], expected: bool
) -> None:
    assert groupable(task) is expected


async def test_higher_priority_first_then_first_in_first_out() -> None:
    queue = WorkQueue(10)
    for i, priority in enumerate([0, 5, 0, 5, 1]):
        await queue.put(item(Small(i, priority=priority)))
    assert [queue.get_nowait().task.index for _ in range(5)] == [1, 3, 4, 0, 2]
    with pytest.raises(trio.WouldBlock):
        queue.get_nowait()


async def test_a_full_queue_pushes_back_unless_forced() -> None:
    queue = WorkQueue(2)
    queue.put_nowait(item(Small(0)))
    queue.put_nowait(item(Small(1)))
    with pytest.raises(trio.WouldBlock):
        queue.put_nowait(item(Small(2)))
    queue.put_nowait(item(Small(3)), force=True)  # a retry is never refused
    assert (len(queue), queue.put_count) == (3, 3)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(queue.put, item(Small(4)))
        await trio.testing.wait_all_tasks_blocked()
        assert len(queue) == 3  # the putter waits for room
        queue.get_nowait()
        queue.get_nowait()
    assert len(queue) == 2


async def test_a_chunk_goes_in_as_far_as_there_is_room_in_priority_order() -> None:
    started: list[int] = []
    queue = WorkQueue(4, started.append)
    chunk = [item(Small(i, priority=i % 2)) for i in range(6)]
    assert queue.put_many(chunk) == 4  # the rest waits for room (the caller's to put)
    assert queue.put_count == 4 and started == [4]  # no getter waited: 4 workers may start
    assert queue.put_many(chunk[4:]) == 0
    assert [queue.get_nowait().task.index for _ in range(4)] == [1, 3, 0, 2]
    async with trio.open_nursery() as nursery:
        got: list[int] = []

        async def get() -> None:
            got.append((await queue.get()).task.index)

        nursery.start_soon(get)
        nursery.start_soon(get)
        await trio.testing.wait_all_tasks_blocked()
        assert queue.put_many(chunk[4:]) == 2
    assert sorted(got) == [4, 5] and started == [4]  # both went to the waiting getters
    queue.close()
    with pytest.raises(trio.ClosedResourceError):
        queue.put_many(chunk)


async def test_threads_take_only_sync_tasks_of_their_lane() -> None:
    queue = WorkQueue(10)
    queue.put_nowait(item(Later(0)))
    assert queue.take("io") is None  # an async task is left for a trio worker
    queue.get_nowait()
    queue.put_nowait(item(Small(1)))
    assert queue.take("cpu") is None
    taken = queue.take("io")
    assert taken is not None and taken.task.index == 1
    assert queue.take("io") is None


@pytest.mark.parametrize(
    ("queued", "size", "expected"),
    [
        ([Small(i) for i in range(1, 12)], 8, [0, 1, 2, 3, 4, 5, 6, 7]),
        ([Small(1), Other(2), Small(3)], 8, [0, 1]),  # another class ends the group
        ([Small(1), Single(2), Small(3)], 8, [0, 1]),  # so does a task that opted out
        ([Small(1), Small(2, HEAVY_BYTES)], 8, [0, 1]),  # and a heavy one
        ([Small(i, GROUP_MAX_BYTES // 4 - 1) for i in range(1, 6)], 8, [0, 1, 2, 3]),  # bytes
        ([Small(i) for i in range(1, 5)], 1, [0]),
    ],
)
async def test_a_group_takes_the_like_tasks_at_the_head(
    queued: list[Small], size: int, expected: list[int]
) -> None:
    queue = WorkQueue(20)
    for task in queued:
        queue.put_nowait(item(task))
    group = queue.take_group(item(Small(0, queued[0].size)), size)
    assert indices(group) == expected


async def test_a_closed_queue_refuses_puts_and_ends_gets_once_empty() -> None:
    queue = WorkQueue(4)
    queue.put_nowait(item(Small(0)))
    queue.close()
    with pytest.raises(trio.ClosedResourceError):
        queue.put_nowait(item(Small(1)))
    assert queue.get_nowait().task.index == 0
    with pytest.raises(trio.EndOfChannel):
        await queue.get()
