"""Process tasks (`parjobs.process.ProcessTask`): output streamed to subscribers and to the
job's event stream, a slow subscriber's lost chunks marked, cancel kills and reaps, and no
shell strings."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest
import trio
from _jobs import PrintLines

import parjobs
import parjobs.process
from parjobs import JobStatus

pytestmark = pytest.mark.both_stores  # the same suite on SQLite and PostgreSQL


async def test_process_task_streams_to_two_subscribers(store_path):
    script = (
        "import sys\n"
        "for i in range(200):\n"
        "    print('out', i, flush=True)\n"
        "    print('err', i, file=sys.stderr, flush=True)\n"
    )
    task = parjobs.process.ProcessTask(0, [sys.executable, "-c", script])
    both: list[Any] = []
    only_err: list[Any] = []

    async def collect(into, streams, max_chunks):
        async for item in task.subscribe(streams, max_chunks=max_chunks):
            into.append(item)

    @parjobs.job_type("test-process-one", version=1)
    class RunOne(parjobs.Job):
        async def run(self, ctx):
            handle = await ctx.task_dispatcher().dispatch(task)
            return (await handle.outcome()).value

    async with parjobs.open_manager(store_path) as manager, trio.open_nursery() as nursery:
        nursery.start_soon(collect, both, ("stdout", "stderr"), 10_000)
        nursery.start_soon(collect, only_err, ("stderr",), 10_000)
        await trio.sleep(0.01)
        handle = await manager.submit(RunOne())
        assert await handle.result() == 0
    out = b"".join(c.data for c in both if c.stream == "stdout").decode()
    err = b"".join(c.data for c in only_err).decode()
    assert out.splitlines() == [f"out {i}" for i in range(200)]
    assert err.splitlines() == [f"err {i}" for i in range(200)]
    assert all(c.stream == "stderr" for c in only_err)
    assert task.state == "exited(0)"


async def test_process_output_lines_reach_the_jobs_event_subscribers(store_path):
    """Output could only be read by holding the task object: the job's event subscribers
    get it now, line by line, without subscribing to the task."""
    async with parjobs.open_manager(store_path) as manager:
        with manager.events() as events:
            handle = await manager.submit(PrintLines())
            assert await handle.result() == 0
            lines: list[parjobs.process.OutputLine] = []
            with trio.fail_after(10):
                async for event in events:
                    if event.kind is parjobs.EventKind.OUTPUT:
                        assert event.job_id == handle.id and event.output is not None
                        lines.append(event.output)
                    if event.status is JobStatus.COMPLETED:
                        break
    assert {(line.index, line.label) for line in lines} == {(7, "printer")}
    assert [x.text for x in lines if x.stream == "stdout"] == [
        "hello",
        "world",
        "caf\\xe9",
        "no newline at the end",
    ]
    assert [x.text for x in lines if x.stream == "stderr"] == ["oops"]


async def test_process_slow_subscriber_loses_old_chunks_with_marker():
    task = parjobs.process.ProcessTask(0, [sys.executable, "-c", "print('x' * 10)"])
    sub = task.subscribe(("stdout",), max_chunks=2)
    first = trio.Event()

    async def read_first():
        first.set()
        return await sub.__anext__()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read_first)
        await first.wait()
        await trio.sleep(0.01)  # the subscriber is registered and waiting
        task._publish(parjobs.process.Chunk("stdout", b"first"))
    # Now the subscriber does not read while five chunks arrive.
    for i in range(5):
        task._publish(parjobs.process.Chunk("stdout", b"%d" % i))
    task._publish(parjobs.process.Chunk("stderr", b"not subscribed"))
    task._close()
    got = [item async for item in sub]
    assert got == [
        parjobs.process.Lost(3),
        parjobs.process.Chunk("stdout", b"3"),
        parjobs.process.Chunk("stdout", b"4"),
    ]


async def test_process_cancel_kills_and_reaps(store_path):
    task = parjobs.process.ProcessTask(
        0,
        [sys.executable, "-c", "import time\nwhile True: time.sleep(0.05)"],
        terminate_grace=0.5,
    )

    @parjobs.job_type("test-process-kill", version=1)
    class RunForever(parjobs.Job):
        async def run(self, ctx):
            async for outcome in ctx.task_dispatcher().dispatch_many([task]):
                return outcome.status.value
            return None

    async with parjobs.open_manager(store_path) as manager:
        before = _children()  # a PostgreSQL fixture's server may be a child of this process
        handle = await manager.submit(RunForever())
        while task.state != "running":
            await trio.sleep(0.01)
        assert set(_children()) - set(before)  # the program runs as a child of this process
        await manager.cancel(handle.id)
        assert await handle.wait() is JobStatus.CANCELLED
    assert task.state == "killed"
    assert set(_children()) == set(before)  # killed and reaped: no zombie, no child left


def _children() -> dict[int, str]:
    """This process's children: pid -> state (a zombie stays listed until reaped)."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue  # gone meanwhile
            state, ppid = stat.rpartition(")")[2].split()[:2]
            if int(ppid) == os.getpid():
                children[int(entry)] = state
    return children


def test_process_task_refuses_shell_strings():
    with pytest.raises(TypeError, match="never a shell string"):
        parjobs.process.ProcessTask(0, "rm -rf /")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        parjobs.process.ProcessTask(0, [])
