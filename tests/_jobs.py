"""Jobs used by the core tests (importable by child processes for crash tests)."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio

import parjobs
import parjobs.process
from parjobs._progress import ProgressTracker
from parjobs._records import CheckpointBatch


async def _write_nowhere(batch: CheckpointBatch) -> None:
    pass


async def _no_results(stage: str) -> dict[int, str]:
    return {}


def bare_context(
    nursery: trio.Nursery,
    *,
    workers: int,
    threads: int,
    write: Callable[[CheckpointBatch], Awaitable[None]] = _write_nowhere,
) -> parjobs.JobContext:
    """A job context on its own (no manager, no store), its tasks in ``nursery``: checkpoints
    go to ``write`` (nowhere by default), ``threads`` worker threads in the "io" lane."""
    return parjobs.JobContext._create(
        "job",
        nursery=nursery,
        lanes={"io": trio.CapacityLimiter(threads)},
        workers=workers,
        completed={},
        state={},
        progress=ProgressTracker("job"),
        write=write,
        load_results=_no_results,
    )


@dataclasses.dataclass
class AppendIndex(parjobs.Task[int]):
    """Append the index to a log file: a side effect we can count."""

    index: int
    log: str
    sleep: float = 0.0
    fail: bool = False
    chunks: int = 1
    stamp: bool = False  # log when it ended too (``time.time()``), after the index
    hold: str = ""  # wait (interruptible) until this path exists before anything else

    def run(self, tc: parjobs.TaskContext) -> int:
        while self.hold and not os.path.exists(self.hold):
            tc.check()
            time.sleep(0.005)
        for _ in range(self.chunks):
            tc.check()
            if self.sleep:
                time.sleep(self.sleep / self.chunks)
            tc.add_bytes(10)
        if self.fail:
            raise ValueError(f"item {self.index} is bad")
        fd = os.open(self.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            line = f"{self.index} {time.time():.6f}" if self.stamp else str(self.index)
            os.write(fd, f"{line}\n".encode())
        finally:
            os.close(fd)
        return self.index * 2


@parjobs.job_type("test-count", version=1)
class CountJob(parjobs.Job):
    n: int
    log: str
    sleep: float = 0.0
    fail_every: int = 0
    chunks: int = 1
    stamp: bool = False
    #: Tasks from ``hold_from`` on wait until the path ``hold`` exists (a pause or cancel
    #: stops them meanwhile): a test that steers the job after ``hold_from`` tasks ran finds
    #: it still running however late its request comes, as a loaded machine can make it.
    hold: str = ""
    hold_from: int = 0
    #: Tasks from ``gate_from`` up to ``hold_from`` wait until the path ``gate`` exists: a
    #: test makes them end after something it did (a store outage begun: their completions
    #: are then written into it, not before it).
    gate: str = ""
    gate_from: int = 0

    def _hold(self, i: int) -> str:
        if i >= self.hold_from:
            return self.hold
        return self.gate if self.gate and i >= self.gate_from else ""

    async def run(self, ctx: parjobs.JobContext) -> dict[str, Any]:
        ctx.progress.set_total(items=self.n, bytes=self.n * 10 * self.chunks)
        dispatcher = ctx.task_dispatcher()
        done = 0
        async for outcome in dispatcher.dispatch_many(
            AppendIndex(
                i,
                self.log,
                self.sleep,
                bool(self.fail_every) and i % self.fail_every == 0,
                self.chunks,
                self.stamp,
                self._hold(i),
            )
            for i in range(self.n)
        ):
            if outcome.ok:
                done += 1
            await ctx.checkpoint()
        ctx.state["runs"] = ctx.state.get("runs", 0) + 1
        return {"done_this_run": done, "runs": ctx.state["runs"]}


@parjobs.job_type("test-slow-cleanup", version=1)
class SlowCleanupJob(CountJob):
    """A `CountJob` whose cleanup takes a while: it appends ``begin cancelled`` (or ``begin
    ended``) to the file ``cleaned``, sleeps ``cleanup_seconds`` (trio's clock), waits until
    the path ``cleanup_hold`` exists if one is given, then appends ``end``: a test sees
    what a waiter found done, and can kill a process in the middle of a cleanup."""

    cleaned: str = ""
    cleanup_seconds: float = 0.0
    cleanup_hold: str = ""

    async def cleanup(self, ctx: parjobs.JobContext, *, cancelled: bool) -> None:
        _append(self.cleaned, "begin cancelled\n" if cancelled else "begin ended\n")
        await trio.sleep(self.cleanup_seconds)
        while self.cleanup_hold and not os.path.exists(self.cleanup_hold):
            await trio.sleep(0.01)
        _append(self.cleaned, "end\n")


@parjobs.job_type("test-keeps-partial", version=1)
class KeepsPartialJob(parjobs.Job):
    """Writes ``partial`` (what a copy keeps for its resume), then fails, or times out with
    ``hang``; its cleanup removes the partial only when the job is cancelled, as a
    copy's does."""

    partial: str
    hang: bool = False

    async def run(self, ctx: parjobs.JobContext) -> None:
        with open(self.partial, "wb") as f:
            f.write(b"half a file")
        while self.hang:  # until its timeout stops it (as a pause)
            await ctx.check_interrupt()
            await trio.sleep(0.005)
        raise OSError(28, "No space left on device")

    async def cleanup(self, ctx: parjobs.JobContext, *, cancelled: bool) -> None:
        if cancelled:
            os.unlink(self.partial)


def read_stamped_log(path: str) -> list[tuple[int, float]]:
    """(index, when it ended) per line of a log written with ``stamp``."""
    with open(path) as f:
        return [(int(a), float(b)) for a, b in (line.split() for line in f if line.strip())]


def spawn_count_job(
    store_path: str, log: str, n: int, *, workers: int, sleep: float, forked: bool = False
) -> subprocess.Popen[bytes] | Any:
    """A child process that submits a `CountJob` of ``n`` tasks of ``sleep`` seconds, each
    stamping its end in ``log`` (or resumes the store's job), for kill -9 tests. ``forked``:
    forked from the warm interpreter of `_forkcli` (a real process all the same, with
    ``pid``, ``poll`` and ``wait``), sparing the ~0.5 s of CPU of a fresh one's start-up."""
    code = textwrap.dedent(
        f"""
        import sys, trio
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        import parjobs
        from _jobs import CountJob
        async def main():
            async with parjobs.open_manager({store_path!r}, workers={workers}) as m:
                jobs = await m.list_jobs()
                if jobs:
                    h = await m.resume(jobs[0].id)
                else:
                    h = await m.submit(CountJob(n={n}, log={log!r}, sleep={sleep}, stamp=True))
                print(await h.wait(), flush=True)
        trio.run(main)
        """
    )
    if forked:
        from _forkcli import Forked

        return Forked([], code=code)
    return subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def trim_torn_line(path: str) -> None:
    """After a kill -9 of a process appending to ``path``: drop the last line if the kill
    left it half-written. A write that crosses a page boundary of the file is done a page at
    a time, and SIGKILL can end it between the two (rare: once in the suite's runs under
    load), leaving "1654 17" without its newline; the next run's first line would be glued
    to it and read as task 1654 (its own index lost). The task of a torn line did not
    return, so the store never booked it: it runs again on resume and writes a whole line."""
    with open(path, "r+b") as f:
        data = f.read()
        if data and not data.endswith(b"\n"):
            f.truncate(data.rfind(b"\n") + 1)


def logged(path: str) -> int:
    """How many whole lines ``path`` holds, for polling a log that tasks are still
    appending to: one read, only newlines counted. Iterating the lines of a growing file
    reads on past its end: an append that crosses a page boundary is visible half-written
    for a moment, so one ``readline`` returns "17 1764889123" at the then end of the file
    and the next one the rest, ".358393" (a clean-clone CI run, which `read_log` could not
    parse). Read whole logs with `read_log` only once their writers stopped."""
    try:
        with open(path, "rb") as f:
            return f.read().count(b"\n")
    except FileNotFoundError:
        return 0


def read_log(path: str) -> list[int]:
    try:
        with open(path) as f:
            return [int(line.split()[0]) for line in f if line.strip()]
    except FileNotFoundError:
        return []


# -- scheduling helpers (in-process only) ---------------------------------------------------

EVENTS: list[tuple[str, str]] = []  # (event, name), in order
RUNNING: dict[str, int] = {"now": 0, "max": 0}


@parjobs.job_type("test-sleep", version=1)
class SleepJob(parjobs.Job):
    """Sleeps in trio (virtual time under autojump_clock); records start/end order."""

    name: str
    seconds: float = 1.0
    fail: bool = False

    async def run(self, ctx: parjobs.JobContext) -> str:
        EVENTS.append(("start", self.name))
        RUNNING["now"] += 1
        RUNNING["max"] = max(RUNNING["max"], RUNNING["now"])
        try:
            await trio.sleep(self.seconds)
            if self.fail:
                raise RuntimeError(f"{self.name} failed on purpose")
        finally:
            RUNNING["now"] -= 1
            EVENTS.append(("end", self.name))
        return self.name


@parjobs.job_type("test-compute", version=1)
class ComputeJob(SleepJob):
    queue = "compute"


FLAKY_ATTEMPTS: dict[str, int] = {}


@parjobs.job_type("test-flaky-job", version=1)
class FlakyJob(parjobs.Job):
    """Fails with a transient EIO ``failures`` times, then succeeds."""

    name: str
    failures: int = 1
    errno_: int = 5  # EIO

    retry = parjobs.RetryPolicy(max_attempts=3, initial_delay=0.2, jitter=0.0)

    async def run(self, ctx: parjobs.JobContext) -> int:
        n = FLAKY_ATTEMPTS[self.name] = FLAKY_ATTEMPTS.get(self.name, 0) + 1
        EVENTS.append(("attempt", f"{self.name}@{trio.current_time():.1f}"))
        if n <= self.failures:
            raise OSError(self.errno_, os.strerror(self.errno_))
        return n


@dataclasses.dataclass
class FlakyTask(parjobs.AsyncTask[int]):
    index: int
    failures: int
    errno_: int = 5
    seconds: float = 0.0

    async def arun(self, tc: parjobs.TaskContext) -> int:
        EVENTS.append(("task-attempt", f"{self.index}@{trio.current_time()}"))
        await trio.sleep(self.seconds)
        if tc.attempt <= self.failures:
            raise OSError(self.errno_, os.strerror(self.errno_))
        return tc.attempt


@parjobs.job_type("test-flaky-tasks", version=1)
class FlakyTasksJob(parjobs.Job):
    failures: list[int]
    errno_: int = 5
    seconds: float = 0.0
    task_timeout: float | None = None
    retry_delay: float = 1.0  # before the second attempt (then doubled each time)
    steps: int = 0  # when > 0: job-level steps, checkpointed (for job timeouts)
    step_seconds: float = 1.0

    async def run(self, ctx: parjobs.JobContext) -> dict[str, int]:
        dispatcher = ctx.task_dispatcher(
            retry=parjobs.RetryPolicy(max_attempts=4, initial_delay=self.retry_delay, jitter=0.0),
            timeout=self.task_timeout,
        )
        attempts = {}
        async for outcome in dispatcher.dispatch_many(
            FlakyTask(i, f, self.errno_, self.seconds) for i, f in enumerate(self.failures)
        ):
            attempts[str(outcome.index)] = outcome.attempts
        for step in range(ctx.state.get("step", 0), self.steps):
            await trio.sleep(self.step_seconds)
            ctx.state["step"] = step + 1
            await ctx.checkpoint(force=True)
            await ctx.check_interrupt()
        return attempts


@parjobs.job_type("test-process-lines", version=1)
class PrintLines(parjobs.Job):
    """Runs a program that writes lines (split across writes, on both streams, the last
    without a newline, one not UTF-8)."""

    async def run(self, ctx: parjobs.JobContext) -> int | None:
        script = (
            "import sys, time\n"
            "sys.stdout.write('hello\\nwor'); sys.stdout.flush(); time.sleep(0.05)\n"
            "sys.stdout.write('ld\\n'); sys.stdout.flush()\n"
            "sys.stderr.write('oops\\n'); sys.stderr.flush()\n"
            "sys.stdout.buffer.write(b'caf\\xe9\\nno newline at the end')\n"
        )
        task = parjobs.process.ProcessTask(7, [sys.executable, "-c", script], name="printer")
        handle = await ctx.task_dispatcher().dispatch(task)
        return (await handle.outcome()).value


@parjobs.job_type("test-mark", version=1)
class MarkJob(parjobs.Job):
    """Appends ``start NAME`` and ``end NAME`` lines around a short real sleep to a shared
    log (O_APPEND: the file's order is the real order, across processes)."""

    name: str
    log: str
    seconds: float = 0.0

    async def run(self, ctx: parjobs.JobContext) -> str:
        _append(self.log, f"start {self.name} {os.getpid()}\n")
        await trio.sleep(self.seconds)
        _append(self.log, f"end {self.name} {os.getpid()}\n")
        return self.name


@parjobs.job_type("test-validated", version=1)
class ValidatedJob(parjobs.Job):
    """Logs each `validate` (``validate loop`` on the event loop, ``validate thread``
    elsewhere) and each run (``run``), to count the validations of a submit."""

    log: str

    def validate(self) -> None:
        _append(self.log, "validate loop\n" if trio.lowlevel.in_trio_run() else "validate thread\n")

    async def run(self, ctx: parjobs.JobContext) -> None:
        _append(self.log, "run\n")


def _append(path: str, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
