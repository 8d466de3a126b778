"""BlockingManager: the job manager for programs that are not trio (threads, Qt, GTK, asyncio).

A `BlockingManager` runs `open_manager` inside ``trio.run`` on a background thread of its own
and forwards every call to that loop with ``trio.from_thread.run``. Any thread may call any
method; each blocks until the manager has answered. An exception raised by the manager reaches
the caller with its original type (``JobNotFoundError``, ``InvalidTransitionError``, ...).

Progress leaves the loop in one of two ways, neither of which can slow a job down:

- `BlockingManager.subscribe` calls a function with every snapshot, *on the manager's thread*:
  GUI code must hand the snapshot over to its UI thread (a Qt signal, ``GLib.idle_add``);
- `BlockingManager.progress_queue` fills a thread-safe queue that keeps only the newest
  snapshots (the oldest is dropped when it is full) and ends with ``None``.

Closing pauses (and checkpoints) whatever runs, so a later manager on the same store resumes it.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import math
import os
import queue
import threading
import typing
from collections.abc import Awaitable, Callable, Iterable
from types import TracebackType
from typing import Any, TypeVar, Unpack

import trio

from ._config import ConfigOptions, ManagerConfig, make_config
from ._exceptions import ManagerClosedError
from ._job import Job
from ._manager import JobManager, SubmitOptions, open_manager
from ._progress import ItemError, Progress
from ._records import JobInfo
from ._status import JobStatus
from ._util import unwrap_single

T = TypeVar("T")

logger = logging.getLogger(__name__)

#: Default capacity of `BlockingManager.progress_queue` (snapshots, not counting ``None``).
PROGRESS_QUEUE_SIZE = 16
#: On close, how long subscriptions to this manager's jobs may take to deliver their final
#: snapshot once the jobs rest.
FEED_DRAIN = 1.0


@typing.final
class BlockingManager:
    """A `JobManager` for non-trio code: thread-safe blocking methods, one background loop.

    Use it as a context manager, or call `start` and `close` yourself::

        with parjobs.BlockingManager("jobs.sqlite", workers=4) as jobs:
            job_id = jobs.submit(MyJob(...))
            print(jobs.result(job_id))

    ``config`` and the keyword options are those of `open_manager`; ``shutdown_grace`` is
    the default of `close`. Methods must not be called from the manager's own thread (from a
    progress callback): they would wait for the thread that is waiting for them, so they
    raise `RuntimeError` instead. A manager that is never closed is closed when the interpreter
    exits. It belongs to the process that started it: a child made by ``fork`` (e.g.
    ``multiprocessing``'s default start method on Linux) has no manager thread, so there its
    methods raise `RuntimeError` (open a new `BlockingManager` in the child) and `close` does
    nothing.
    """

    def __init__(
        self,
        store_path: str | os.PathLike[str],
        config: ManagerConfig | None = None,
        **options: Unpack[ConfigOptions],
    ) -> None:
        self._store_path = store_path
        self._config = make_config(config, options)  # bad values raise here, in the caller
        self._lifecycle = threading.Lock()  # serializes start and close
        self._state = "new"  # new -> running -> closed
        self._pid = os.getpid()  # the process whose thread runs the loop (set by start)
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None  # what ended the loop, if not close()
        # Set on the loop thread before `_ready`; only read elsewhere afterwards.
        self._token: trio.lowlevel.TrioToken | None = None
        self._manager: JobManager | None = None
        self._nursery: trio.Nursery | None = None
        self._stop: trio.Event | None = None
        # Loop-thread state.
        self._accepting = False
        self._grace = self._config.shutdown_grace
        self._calls: set[trio.CancelScope] = set()
        self._sinks: set[_Sink] = set()

    def __repr__(self) -> str:
        return f"<BlockingManager {os.fspath(self._store_path)!r} {self._state}>"

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> BlockingManager:
        """Open the store and start the manager's thread; return ``self``.

        Raises what opening raised (`StoreFormatError`, `StoreError`, ...) in the caller, and
        `ManagerClosedError` when this manager was closed already (it is single-use).
        """
        with self._lifecycle:
            if self._state == "running":
                raise RuntimeError("the BlockingManager is already started")
            if self._state == "closed":
                raise ManagerClosedError("the BlockingManager is closed; create a new one")
            self._pid = os.getpid()
            thread = threading.Thread(target=self._thread_main, name="parjobs-manager", daemon=True)
            self._thread = thread
            thread.start()
            self._ready.wait()
            if self._token is None:  # the loop ended before the manager was up
                thread.join()
                self._state = "closed"
                error, self._error = self._error, None
                assert error is not None
                raise unwrap_single(error)
            self._state = "running"
            # Daemon thread: it must not keep the process alive, but it should still pause
            # the jobs it runs rather than vanish with them.
            atexit.register(self.close)
        return self

    def close(self, grace: float | None = None) -> None:
        """Pause running jobs (checkpointed), interrupt queued ones, and stop the thread.

        ``grace`` bounds how long pausing may take before the jobs are stopped outright (still
        checkpointed); it defaults to ``shutdown_grace``. Blocking calls still waiting in other
        threads return (`wait` sees the job paused) or raise `ManagerClosedError`. Idempotent.
        If the loop crashed, the crash is raised here (once) with its original type.
        In a child made by ``fork`` it does nothing: the manager is its parent's.
        """
        if self._forked():
            return  # (its loop is in the parent: waking it from here would hang the child)
        self._refuse_loop_thread("close")
        with self._lifecycle:
            if self._state != "running":
                self._state = "closed"
                return
            self._state = "closed"
            atexit.unregister(self.close)
            assert self._token is not None and self._thread is not None
            grace = self._config.shutdown_grace if grace is None else grace
            with contextlib.suppress(trio.RunFinishedError):  # it crashed: nothing to stop
                self._token.run_sync_soon(self._begin_stop, grace)
            self._thread.join()
            error, self._error = self._error, None
        if error is not None:
            raise unwrap_single(error)

    def __enter__(self) -> BlockingManager:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def running(self) -> bool:
        """True between a successful `start` and `close` (and while the loop is alive)."""
        thread = self._thread
        return self._state == "running" and thread is not None and thread.is_alive()

    # -- jobs ----------------------------------------------------------------------------

    def call(self, fn: Callable[[JobManager], Awaitable[T]]) -> T:
        """Return ``await fn(manager)`` run on the manager's loop.

        The way to reach `JobManager` methods this class does not wrap, e.g.
        ``jobs.call(lambda m: m.delete(job_id))``. ``fn`` runs in trio: it must not block.
        """
        self._refuse_loop_thread("call")
        token = self._token
        if token is None:
            raise RuntimeError("the BlockingManager is not started: use start() or `with`")
        try:
            return trio.from_thread.run(self._forward, fn, trio_token=token)
        except (trio.RunFinishedError, trio.Cancelled):
            raise self._closed_error() from None

    def submit(
        self, job: Job, *, owner: str | None = None, **options: Unpack[SubmitOptions]
    ) -> str:
        """Store ``job`` and queue it; return its id. The options mean what they mean for
        `JobManager.submit`: ``queue`` (named queue), ``owner`` (tenant), ``after`` (ids of
        prerequisites) with ``on_dependency_failure``, ``timeout`` (total run time, s)."""
        options["after"] = list(options.get("after", ()))  # read here, in the caller's thread

        async def submit(m: JobManager) -> str:
            return (await m.submit(job, owner=owner, **options)).id

        return self.call(submit)

    def pause(self, job_id: str) -> None:
        """Ask a job to pause (it keeps its progress); `wait` for it to rest."""
        self.call(lambda m: m.pause(job_id))

    def resume(self, job_id: str, *, timeout: float | None = None) -> None:
        """Queue a paused, interrupted or failed job again; finished tasks are skipped.
        ``timeout``: a new total run time for the job (see `JobManager.resume`)."""

        async def resume(m: JobManager) -> None:
            await m.resume(job_id, timeout=timeout)

        self.call(resume)

    def cancel(self, job_id: str) -> None:
        """Ask a job to cancel; `wait` for it to rest."""
        self.call(lambda m: m.cancel(job_id))

    def wait(self, job_id: str, timeout: float | None = None) -> JobStatus:
        """Block until the job rests and return its status; `TimeoutError` after ``timeout``
        seconds (the job goes on)."""
        return self.call(lambda m: _within(timeout, f"job {job_id} still runs", m.wait, job_id))

    def result(self, job_id: str, timeout: float | None = None) -> Any:
        """Block until the job rests and return its result. Raises like `JobHandle.result`
        (`JobFailedError`, `JobCancelledError`, `JobNotFinishedError`) or `TimeoutError`."""
        return self.call(
            lambda m: _within(timeout, f"job {job_id} still runs", m.handle(job_id).result)
        )

    def status(self, job_id: str) -> JobStatus:
        """The job's status now (this manager's view while it runs the job, else the store's)."""

        async def status(m: JobManager) -> JobStatus:
            status = m.local_status(job_id)
            return status if status is not None else (await m.get(job_id)).status

        return self.call(status)

    def info(self, job_id: str) -> JobInfo:
        """The stored record of a job (raises `JobNotFoundError`)."""
        return self.call(lambda m: m.get(job_id))

    def list_jobs(
        self,
        status: JobStatus | Iterable[JobStatus] | None = None,
        *,
        damaged: list[tuple[str, str]] | None = None,
    ) -> list[JobInfo]:
        """Jobs in the store, oldest first, optionally only those with the given status(es).
        Damaged rows are left out (appended to ``damaged`` as (job id, reason) if given)."""
        statuses = status if status is None or isinstance(status, JobStatus) else list(status)
        return self.call(lambda m: m.list_jobs(statuses, damaged=damaged))

    def errors(self, job_id: str, *, limit: int = -1) -> list[ItemError]:
        """The failed items of the job's latest run, with their reasons."""
        return self.call(lambda m: m.errors(job_id, limit=limit))

    # -- progress ------------------------------------------------------------------------

    def subscribe(self, job_id: str, callback: Callable[[Progress], object]) -> Callable[[], None]:
        """Call ``callback(snapshot)`` with the job's progress (~10/s) until it ends
        (completed, failed, cancelled, timed out, skipped) or this manager closes, ending with
        the final snapshot; return a function that unsubscribes (from any thread). One
        subscription lives through pauses and resumes (snapshots say ``paused``, then
        ``queued`` and ``running`` again).

        The callback runs on the manager's thread: keep it short, do not block and do not
        call this manager from it. GUI toolkits must marshal the snapshot to their UI thread
        (emit a Qt signal, ``GLib.idle_add``, ``loop.call_soon_threadsafe``). A callback that
        raises is logged and unsubscribed.
        """
        sink = _CallbackSink(callback)
        self._watch(job_id, sink)

        def unsubscribe() -> None:
            sink.active = False
            token = self._token
            if token is not None and not self._forked():
                with contextlib.suppress(trio.RunFinishedError):
                    token.run_sync_soon(sink.cancel)

        return unsubscribe

    def progress_queue(
        self, job_id: str, *, maxsize: int = PROGRESS_QUEUE_SIZE
    ) -> queue.Queue[Progress | None]:
        """A queue that receives the job's progress snapshots, then ``None`` when it ends
        or this manager closes (through pauses and resumes, like `subscribe`).

        At most ``maxsize`` snapshots wait in it: when it is full the oldest is dropped, so a
        slow or stuck reader only misses intermediate snapshots and never holds up the job.
        The final snapshot and the ``None`` that follows it are always kept. Poll it from a UI
        timer with ``get_nowait``.
        """
        if maxsize < 1:
            raise ValueError(f"maxsize must be >= 1, got {maxsize}")
        q: queue.Queue[Progress | None] = queue.Queue()
        self._watch(job_id, _QueueSink(q, maxsize))
        return q

    # -- loop thread ---------------------------------------------------------------------

    def _thread_main(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as exc:
            self._error = exc
        finally:
            self._ready.set()  # also when opening failed

    async def _main(self) -> None:
        async with (
            open_manager(self._store_path, self._config) as manager,
            trio.open_nursery() as nursery,
        ):
            self._manager = manager
            self._nursery = nursery
            self._stop = trio.Event()
            self._accepting = True
            self._token = trio.lowlevel.current_trio_token()
            self._ready.set()
            await self._stop.wait()
            # Pause jobs first, so that waits and subscriptions see them rest; then end what
            # still waits. open_manager's own shutdown then finds nothing left to do.
            with trio.CancelScope(shield=True):
                await manager._shutdown(self._grace)
                # Jobs of this manager rest now, and the shutdown ended every event
                # subscription: each feed delivers the snapshots it holds, then ends.
                with trio.move_on_after(FEED_DRAIN):
                    for sink in list(self._sinks):
                        await sink.ended.wait()
            for scope in list(self._calls):
                scope.cancel()
            nursery.cancel_scope.cancel()

    def _begin_stop(self, grace: float) -> None:
        self._accepting = False
        self._grace = grace
        assert self._stop is not None
        self._stop.set()

    async def _forward(self, fn: Callable[[JobManager], Awaitable[T]]) -> T:
        """Run one forwarded call; the manager cancels it if it closes meanwhile."""
        if not self._accepting or self._manager is None:
            raise self._closed_error()
        with trio.CancelScope() as scope:
            self._calls.add(scope)
            try:
                return await fn(self._manager)
            finally:
                self._calls.discard(scope)
        raise ManagerClosedError("the BlockingManager closed while the call was waiting")

    def _watch(self, job_id: str, sink: _Sink) -> None:
        """Start a task feeding ``sink`` (raises here if the job does not exist)."""

        async def start(m: JobManager) -> None:
            assert self._nursery is not None
            await self._nursery.start(_feed, m, job_id, sink, self._sinks)

        self.call(start)

    # -- helpers -------------------------------------------------------------------------

    def _forked(self) -> bool:
        """Whether this is a child made by ``fork`` after `start`, without the loop thread."""
        return self._state == "running" and self._pid != os.getpid()

    def _refuse_loop_thread(self, what: str) -> None:
        if self._forked():
            # A forked child: the loop thread was not copied, a call would wait for ever.
            raise RuntimeError(
                f"BlockingManager.{what}() called in a forked child (pid {os.getpid()}) of "
                f"the process that started it (pid {self._pid}), where its manager thread "
                "does not run; open a new BlockingManager in the child"
            )
        if self._thread is not None and threading.current_thread() is self._thread:
            raise RuntimeError(
                f"BlockingManager.{what}() called from the manager's own thread (a progress "
                "callback?) would deadlock; hand the work to another thread"
            )

    def _closed_error(self) -> ManagerClosedError:
        error = self._error
        if error is not None:
            exc = ManagerClosedError(
                f"the BlockingManager's loop stopped: {unwrap_single(error)!r}"
            )
            exc.__cause__ = error
            return exc
        if self._state == "new":
            return ManagerClosedError("the BlockingManager is not started")
        return ManagerClosedError("the BlockingManager is closed")


async def _within(
    seconds: float | None, what: str, fn: Callable[..., Awaitable[T]], *args: Any
) -> T:
    """``await fn(*args)``, raising the builtin `TimeoutError` after ``seconds`` (None: never);
    trio's own `trio.TooSlowError` would mean nothing to a caller outside trio."""
    with trio.move_on_after(math.inf if seconds is None else seconds):
        return await fn(*args)
    raise TimeoutError(f"{what} after {seconds} s")


class _Sink:
    """Where one subscription's snapshots go; runs on the manager's thread."""

    def __init__(self) -> None:
        self.active = True
        self.scope: trio.CancelScope | None = None
        self.ended = trio.Event()

    def deliver(self, snap: Progress) -> None:
        raise NotImplementedError

    def finish(self) -> None:
        """The subscription ended (the job rested, or it was cancelled)."""

    def cancel(self) -> None:
        self.active = False
        if self.scope is not None:
            self.scope.cancel()


class _CallbackSink(_Sink):
    def __init__(self, callback: Callable[[Progress], object]) -> None:
        super().__init__()
        self.callback = callback

    def deliver(self, snap: Progress) -> None:
        if not self.active:
            return
        try:
            self.callback(snap)
        except Exception:
            logger.exception("progress callback %r failed; unsubscribed", self.callback)
            self.cancel()


class _QueueSink(_Sink):
    def __init__(self, q: queue.Queue[Progress | None], maxsize: int) -> None:
        super().__init__()
        self.queue = q
        self.maxsize = maxsize

    def deliver(self, snap: Progress) -> None:
        # The only producer is this thread, so after dropping there is room: readers only
        # ever shrink the queue. The queue itself is unbounded, so None always fits.
        while self.queue.qsize() >= self.maxsize:
            try:
                self.queue.get_nowait()
            except queue.Empty:
                break
        self.queue.put_nowait(snap)

    def finish(self) -> None:
        self.queue.put_nowait(None)


async def _feed(
    manager: JobManager,
    job_id: str,
    sink: _Sink,
    sinks: set[_Sink],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Pass the job's snapshots (one `JobManager.events` subscription, through pauses) to
    ``sink`` until the job ends, the manager closes or the sink is cancelled."""
    sinks.add(sink)
    try:
        with trio.CancelScope() as scope:
            sink.scope = scope
            snaps = manager.watch(job_id, through_pauses=True)
            async with contextlib.aclosing(snaps):
                first = await anext(snaps)  # JobNotFoundError reaches the subscriber
                task_status.started()
                sink.deliver(first)
                async for snap in snaps:
                    sink.deliver(snap)
    finally:
        sinks.discard(sink)
        sink.ended.set()
        sink.finish()


__all__ = ["PROGRESS_QUEUE_SIZE", "BlockingManager"]
