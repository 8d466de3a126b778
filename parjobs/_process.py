"""Process tasks: run an external program as a task, streaming its output to subscribers.

The program is an argument list, never a shell string. Output is read by trio and fanned out to
any number of subscribers, each choosing its streams and holding a bounded buffer: a slow
subscriber loses its oldest chunks (and is told how many with a `Lost` marker) but never
blocks the process or the other subscribers. Run by a manager, its output also goes out line
by line (`OutputLine`) on the manager's event stream, so whoever follows the job (its event
subscribers, ``parjobs serve``'s clients) can follow the program without the task object.
Pause or cancel of the job terminates the program
(SIGTERM, then SIGKILL after a grace period) and always reaps it, so no zombie is left.
"""

from __future__ import annotations

import collections
import dataclasses
import subprocess
from collections.abc import AsyncIterator, Callable, Sequence

import trio

from ._exceptions import ProcessFailedError
from ._output import OUTPUT_SINK, OutputLine
from ._task import AsyncTask, TaskContext

STREAMS = ("stdout", "stderr")
#: A line longer than this (characters, no newline yet) goes out in pieces of this size.
MAX_LINE = 65_536


@dataclasses.dataclass(frozen=True, slots=True)
class Chunk:
    """Bytes a program wrote to one of its streams."""

    stream: str
    data: bytes


@dataclasses.dataclass(frozen=True, slots=True)
class Lost:
    """Marks that this subscriber's buffer overflowed and ``chunks`` older chunks were
    dropped."""

    chunks: int


class _Subscriber:
    def __init__(self, streams: frozenset[str], max_chunks: int) -> None:
        self.streams = streams
        self.buffer: collections.deque[Chunk] = collections.deque()
        self.max_chunks = max_chunks
        self.lost = 0
        self.event = trio.Event()

    def push(self, chunk: Chunk) -> None:
        if chunk.stream not in self.streams:
            return
        if len(self.buffer) >= self.max_chunks:
            self.buffer.popleft()
            self.lost += 1
        self.buffer.append(chunk)
        self.event.set()


@dataclasses.dataclass(eq=False)
class ProcessTask(AsyncTask[int]):
    """Run ``argv`` (a list of strings) as one task; the value is the exit status (0).

    ``state`` is ``pending``, ``running``, ``exited(N)`` or ``killed``. A non-zero exit fails
    the item with `ProcessFailedError`.
    """

    index: int
    argv: list[str]
    cwd: str | None = None
    env: dict[str, str] | None = None
    terminate_grace: float = 5.0
    name: str = ""
    state: str = dataclasses.field(default="pending", init=False)
    returncode: int | None = dataclasses.field(default=None, init=False)

    def __post_init__(self) -> None:
        argv: object = self.argv
        if isinstance(argv, str | bytes) or not self.argv:
            raise TypeError("argv must be a non-empty list of arguments, never a shell string")
        if not all(isinstance(a, str) for a in self.argv):
            raise TypeError("every argument in argv must be a str")
        self._subscribers: list[_Subscriber] = []
        self._closed = False
        self._stderr_tail: collections.deque[bytes] = collections.deque(maxlen=8)
        self._lines: _Lines | None = None

    def label(self) -> str:
        return self.name or " ".join(self.argv)

    async def subscribe(
        self, streams: Sequence[str] = STREAMS, *, max_chunks: int = 256
    ) -> AsyncIterator[Chunk | Lost]:
        """Yield the chosen streams' chunks (and `Lost` markers) until the program ends.
        Subscribe before the task starts to see all of its output."""
        unknown = set(streams) - set(STREAMS)
        if unknown:
            raise ValueError(f"unknown stream(s) {sorted(unknown)}; choose from {STREAMS}")
        if max_chunks < 1:
            raise ValueError("max_chunks must be >= 1")
        sub = _Subscriber(frozenset(streams), max_chunks)
        self._subscribers.append(sub)
        try:
            while True:
                if sub.lost:
                    lost, sub.lost = sub.lost, 0
                    yield Lost(lost)
                if sub.buffer:
                    yield sub.buffer.popleft()
                    continue
                if self._closed:
                    return
                sub.event = trio.Event()
                await sub.event.wait()
        finally:
            self._subscribers.remove(sub)

    def _publish(self, chunk: Chunk) -> None:
        if chunk.stream == "stderr":
            self._stderr_tail.append(chunk.data)
        for sub in self._subscribers:
            sub.push(chunk)
        if self._lines is not None:
            self._lines.feed(chunk)

    def _close(self) -> None:
        if self._lines is not None:
            self._lines.flush()
        self._closed = True
        for sub in self._subscribers:
            sub.event.set()

    async def _pump(self, stream: trio.abc.ReceiveStream, name: str) -> None:
        async for data in stream:
            self._publish(Chunk(name, bytes(data)))

    async def _stop(self, proc: trio.Process) -> None:
        """SIGTERM, then SIGKILL after the grace period; always reap (no zombie)."""
        with trio.CancelScope(shield=True):
            if proc.returncode is None:
                proc.terminate()
                with trio.move_on_after(self.terminate_grace):
                    await proc.wait()
            if proc.returncode is None:
                proc.kill()
                await proc.wait()

    async def arun(self, tc: TaskContext) -> int:
        sink = OUTPUT_SINK.get()
        self._lines = None if sink is None else _Lines(sink, tc.index, tc.label)
        proc = await trio.lowlevel.open_process(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=self.cwd,
            env=self.env,
        )
        self.state = "running"
        interrupted = False
        try:
            async with trio.open_nursery() as nursery:
                assert proc.stdout is not None and proc.stderr is not None
                nursery.start_soon(self._pump, proc.stdout, "stdout")
                nursery.start_soon(self._pump, proc.stderr, "stderr")

                async def watch_interrupts() -> None:
                    nonlocal interrupted
                    while proc.returncode is None:
                        if tc.interrupted:
                            interrupted = True
                            await self._stop(proc)
                            return
                        await trio.sleep(0.05)

                nursery.start_soon(watch_interrupts)
                await proc.wait()
                # Let the pumps drain what is left; a grandchild holding the pipes open
                # must not hold the task forever.
                nursery.cancel_scope.deadline = trio.current_time() + 1.0
        finally:
            await self._stop(proc)
            self.returncode = proc.returncode
            killed = interrupted or (proc.returncode is not None and proc.returncode < 0)
            self.state = "killed" if killed else f"exited({proc.returncode})"
            self._close()
        tc.check()  # an interrupted program ends the task as paused/cancelled
        if proc.returncode:
            tail = b"".join(self._stderr_tail)[-500:].decode("utf-8", "backslashreplace")
            raise ProcessFailedError(self.argv, proc.returncode, tail)
        return 0


class _Lines:
    """Cuts a task's output chunks into `OutputLine`s for ``sink``, per stream (a line split
    across chunks is joined; what is left at the end goes out as a last line)."""

    def __init__(self, sink: Callable[[OutputLine], None], index: int, label: str) -> None:
        self.sink = sink
        self.index = index
        self.label = label
        self.partial = dict.fromkeys(STREAMS, b"")

    def feed(self, chunk: Chunk) -> None:
        data = self.partial[chunk.stream] + chunk.data
        *lines, rest = data.split(b"\n")
        while len(rest) > MAX_LINE:
            lines.append(rest[:MAX_LINE])
            rest = rest[MAX_LINE:]
        self.partial[chunk.stream] = rest
        for line in lines:
            self._send(chunk.stream, line)

    def flush(self) -> None:
        for stream, rest in self.partial.items():
            if rest:
                self._send(stream, rest)
            self.partial[stream] = b""

    def _send(self, stream: str, line: bytes) -> None:
        text = line.removesuffix(b"\r").decode("utf-8", "backslashreplace")
        self.sink(OutputLine(self.index, self.label, stream, text))


__all__ = ["Chunk", "Lost", "OutputLine", "ProcessFailedError", "ProcessTask"]
