"""The cluster lane: a job's cluster-capable tasks run on a Dask cluster (issue #17).

Dask's async client speaks asyncio only, so a `ClusterBridge` owns a *synchronous*
``distributed.Client`` on a thread of its own: every call to the client is made there, from
a command queue. Per job run, a `ClusterExecutor` plugs into the pool's executor seam
(`parjobs._executor`): each ``run`` call takes a *group* of queued ``cluster`` tasks, sized to
about `GROUP_SECONDS` of work by the time per task measured so far, and sends it as one
Dask task (`parjobs._cluster_remote.run_group`); Dask costs milliseconds a task, a group
spreads that over many. The answer comes back through the bridge thread, which posts each
task's outcome to the pool (``port.post``) and releases the Dask future at once (a kept
result would be recomputed when its worker dies).

Same semantics as a local run:

- the manager stays the only writer of checkpoints and progress: the pool books every
  outcome as if a local thread had posted it (retries by the task's `RetryPolicy`);
- workers report which tasks started and their bytes (worker events, ``log_event``), copied
  into the local `TaskContext` the progress tracker reads (never decreasing);
- pause or cancel: the bridge broadcasts the flag to every worker (``Client.run``: running
  tasks stop at their next ``check()``) and cancels the groups no worker has started;
- a lost worker is an infrastructure fault: Dask runs the group again elsewhere, and when it
  gives up (``KilledWorker``) or the scheduler forgets the group, the bridge sends it again
  (up to `INFRA_ATTEMPTS` times), never counting it as an item failure. A group run again
  tells its tasks (``TaskContext.rerun``): their own outputs count as done.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import queue
import re
import secrets
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import trio

from ._cluster_remote import check_path_map, dumps, loads, request, run_group
from ._exceptions import ClusterError
from ._executor import PoolPort
from ._task import Outcome, OutcomeStatus
from ._workqueue import WorkItem

_log = logging.getLogger("parjobs.cluster")

#: A group is sized to take about this long (seconds) on a worker, by the time per task
#: measured in earlier groups (Dask's overhead is a few milliseconds a task).
GROUP_SECONDS = 1.0
#: Tasks in the first groups, before any time was measured.
FIRST_GROUP = 4
#: How long a short group waits for the job to queue more tasks (seconds, once).
GATHER = 0.01
#: The most tasks in one group.
MAX_GROUP = 1024
#: How often the bridge thread looks at the jobs' interrupters (seconds).
POLL = 0.05
#: A group lost to the cluster (worker or scheduler gone) is sent this many times in all.
INFRA_ATTEMPTS = 4
#: Seconds to reach the scheduler before giving up.
CONNECT_TIMEOUT = 10.0
#: A client that closed (its scheduler gone for longer than `CONNECT_TIMEOUT`) is replaced
#: by a new one when a group is sent, at most this often (seconds): each attempt may hold
#: the bridge thread for the connect timeout.
RECONNECT_EVERY = 5.0
#: ``local:N`` or ``local:NxT``: a LocalCluster of N worker processes (T threads each).
_LOCAL = re.compile(r"local:(\d+)(?:x(\d+))?")


def check_cluster(cluster: object) -> object:
    """``cluster`` if it is None, an address (``tcp://host:8786``, ``host:8786``, ``local:N``,
    ``local:NxT``) or a ``distributed.Client``; else `ValueError`/`TypeError` saying why."""
    if cluster is None:
        return None
    if isinstance(cluster, str):
        text = cluster.strip()
        if text.startswith("local"):
            m = _LOCAL.fullmatch(text)
            if not m or int(m.group(1)) < 1 or (m.group(2) is not None and int(m.group(2)) < 1):
                raise ValueError(f"a local cluster is 'local:N' or 'local:NxT', got {cluster!r}")
            return text
        if not text or any(c.isspace() for c in text) or ":" not in text:
            raise ValueError(
                f"a cluster is a scheduler address like tcp://host:8786, got {cluster!r}"
            )
        return text
    if any(
        c.__name__ == "Client" and c.__module__.startswith("distributed")
        for c in type(cluster).__mro__
    ):
        return cluster
    raise TypeError(f"cluster must be an address or a distributed.Client, got {type(cluster)}")


class _Group:
    """One Dask task: a few queued work items, and where their answer goes."""

    __slots__ = (
        "abandoned",
        "attempts",
        "cancelled",
        "done",
        "executor",
        "future",
        "items",
        "key",
        "lock",
        "posted",
        "started",
    )

    def __init__(self, executor: ClusterExecutor, items: list[WorkItem]) -> None:
        self.executor = executor
        self.items = items
        self.key = ""
        self.attempts = 0
        self.future: Any = None
        self.started = 0  # tasks a worker reported started (in order)
        self.posted = False  # outcomes handed to the pool (or given up: `abandoned`)
        self.abandoned = False  # the trio side stopped waiting (its scope was cancelled)
        self.cancelled = False  # cancelled by a pause or cancel: its tasks end cancelled
        self.lock = threading.Lock()
        self.done = trio.Event()


class ClusterBridge:
    """A Dask client on one thread, shared by the jobs of a manager.

    Build it with `open` (blocking: connects, or starts a local cluster) and end it with
    `close`; `executor` gives a job run's pool its `ClusterExecutor`.
    """

    def __init__(self, cluster: object, path_map: object = ()) -> None:
        self.target = check_cluster(cluster)
        self.path_map = check_path_map(path_map)
        self.topic = f"parjobs-{secrets.token_hex(6)}"
        self.threads = 1  # worker threads in the cluster (refreshed as groups are sent)
        self._commands: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._groups: dict[str, _Group] = {}
        self._groups_lock = threading.Lock()
        self._executors: weakref.WeakSet[ClusterExecutor] = weakref.WeakSet()
        self._seq = 0
        self._stopped: set[str] = set()  # job runs whose workers hold a stop flag
        self._client: Any = None
        self._local: Any = None  # the LocalCluster we started, if any
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._threads_at = 0.0
        self._reconnect_at = 0.0  # (monotonic) when a closed client was last replaced

    # -- life -----------------------------------------------------------------------------

    @classmethod
    def open(cls, cluster: object, path_map: object = ()) -> ClusterBridge:
        """Connect (blocking); raises `ClusterError` when the cluster cannot be used."""
        bridge = cls(cluster, path_map)
        bridge._thread = threading.Thread(target=bridge._main, name="parjobs-dask", daemon=True)
        bridge._thread.start()
        bridge._ready.wait()
        if bridge._error is not None:
            bridge._thread.join()
            raise bridge._error
        return bridge

    def close(self) -> None:
        """Stop the bridge thread; close the client and local cluster it made (blocking)."""
        if self._thread is not None:
            self._commands.put(("stop", None))
            self._thread.join()
            self._thread = None

    def _connect(self) -> None:
        try:
            import distributed as dask_distributed
        except ImportError:
            raise ClusterError(
                "a cluster needs Dask: pip install 'parjobs[dask]' (distributed)"
            ) from None
        distributed: Any = dask_distributed
        target = self.target
        if not isinstance(target, str):
            self._client = target  # the caller's: used here, closed by the caller
        else:
            m = _LOCAL.fullmatch(target)
            try:
                if m is not None and self._local is None:
                    n = int(m.group(1))
                    threads = int(m.group(2) or max(1, (os.cpu_count() or 2) // n))
                    self._local = distributed.LocalCluster(
                        n_workers=n,
                        threads_per_worker=threads,
                        processes=True,
                        dashboard_address=":0",  # no fixed port (8787 may be taken)
                    )
                if self._local is not None:
                    target = self._local.scheduler_address
                self._client = distributed.Client(
                    target, timeout=CONNECT_TIMEOUT, set_as_default=False
                )
            except (OSError, TimeoutError) as exc:
                if self._local is not None and self._client is None:
                    self._local.close()
                raise ClusterError(f"cannot reach the Dask scheduler at {target}: {exc}") from None
        self._client.subscribe_topic(self.topic, self._on_event)
        self._refresh_threads(force=True)

    def _reconnect(self) -> None:
        """Replace a client that closed itself: it does once its scheduler has been gone
        for `CONNECT_TIMEOUT` (a restart, a crash), and every group sent through it then
        failed at once, for the life of this manager (a `parjobs worker` failed every item
        of every job it claimed after, until restarted). A new one is made, at most every
        `RECONNECT_EVERY` seconds, when a group is to be sent; `ClusterError` while the
        scheduler does not answer. A caller's own client is left to the caller."""
        if not isinstance(self.target, str) or self._client.status not in ("closing", "closed"):
            return
        if time.monotonic() - self._reconnect_at < RECONNECT_EVERY:
            raise ClusterError("the Dask scheduler is gone (its client closed)")
        try:
            self._disconnect(keep_local=True)
            self._connect()
        finally:  # (from the attempt's end: it may take the whole connect timeout)
            self._reconnect_at = time.monotonic()
        _log.warning("parjobs cluster: connected again to the Dask scheduler at %s", self.target)

    def _disconnect(self, keep_local: bool = False) -> None:
        client = self._client
        with contextlib.suppress(Exception):
            client.unsubscribe_topic(self.topic)
        if isinstance(self.target, str):
            with contextlib.suppress(Exception):
                client.close()
            if self._local is not None and not keep_local:
                with contextlib.suppress(Exception):
                    self._local.close()

    def _refresh_threads(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._threads_at > 5.0:
            self._threads_at = now
            with contextlib.suppress(Exception):
                workers = self._client.scheduler_info(n_workers=-1)["workers"]
                self.threads = max(1, sum(w.get("nthreads", 1) for w in workers.values()))

    # -- the bridge thread ----------------------------------------------------------------

    def _main(self) -> None:
        try:
            self._connect()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        reasons: dict[ClusterExecutor, str | None] = {}
        try:
            while True:
                try:
                    command, arg = self._commands.get(timeout=POLL)
                except queue.Empty:
                    command, arg = "poll", None
                if command == "stop":
                    return
                try:
                    self._handle(command, arg, reasons)
                except Exception as exc:
                    # A bug here must not leave a job waiting forever: fail the group's
                    # tasks with the reason (they are retried on resume).
                    _log.exception("parjobs cluster bridge: %s failed", command)
                    group = arg if command == "submit" else arg[0] if command == "done" else None
                    if isinstance(group, _Group):
                        error = ClusterError(f"the cluster bridge failed: {exc!r}")
                        self._post(group, [self._failed(error)] * len(group.items))
        finally:
            self._disconnect()

    def _handle(self, command: str, arg: Any, reasons: dict[ClusterExecutor, str | None]) -> None:
        if command == "submit":
            self._submit(arg)
        elif command == "done":
            self._collect(*arg)
        elif command == "cancel":
            self._cancel([arg])
        elif command == "forget" and arg in self._stopped:
            self._stopped.discard(arg)
            with contextlib.suppress(Exception):
                self._client.run(request, arg, None, on_error="ignore")
        for executor in list(self._executors):
            reason = executor.port.interrupter.reason
            if reasons.get(executor) != reason:
                reasons[executor] = reason
                if reason is not None:
                    self._interrupt(executor, reason)

    def _submit(self, group: _Group) -> None:
        executor = group.executor
        with group.lock:
            if group.abandoned or group.cancelled:
                return
        group.attempts += 1
        self._seq += 1
        group.key = f"parjobs-{executor.tag}-{self._seq}"
        group.started = 0
        items = [(w.task, w.tc.attempt, w.timeout) for w in group.items]
        payload = dumps(
            {
                "tag": executor.tag,
                "key": group.key,
                "topic": self.topic,
                "paths": json.dumps(self.path_map),  # (a string the path map leaves alone)
                "rerun": group.attempts > 1,
                "items": items,
            },
            self.path_map,
        )
        with self._groups_lock:
            self._groups[group.key] = group
        try:
            self._reconnect()
            future = self._client.submit(run_group, payload, key=group.key, pure=False)
        except Exception as exc:  # the client is closed or broken: fail the group's tasks
            self._post(group, [self._failed(exc)] * len(group.items))
            return
        group.future = future
        # The answer is fetched on the client's event loop, where fetches overlap; this
        # thread gets it ready to book and never waits for the network per group.
        self._client.loop.add_callback(self._fetch, group, future)
        self._refresh_threads()

    async def _fetch(self, group: _Group, future: Any) -> None:
        """(The client's event loop) Wait for a group's future and fetch its answer."""
        try:
            answer: tuple[bool, Any] = (True, await future._result())
        except BaseException as exc:  # an error, a cancel, or the answer's worker gone
            answer = (False, exc)
        self._commands.put(("done", (group, future, answer)))

    @staticmethod
    def _failed(exc: BaseException) -> tuple[str, Any, BaseException, str, int, Any]:
        return (OutcomeStatus.FAILED.value, None, exc, "", 0, None)

    def _collect(self, group: _Group, future: Any, answer: tuple[bool, Any]) -> None:
        """A group's future ended: post its outcomes, or send it again after a lost worker."""
        import distributed as dask_distributed

        distributed: Any = dask_distributed
        if group.future is future:
            group.future = None
        with self._groups_lock:
            self._groups.pop(group.key, None)
        status = future.status
        ok, value = answer
        results: list[tuple[str, Any, BaseException | None, str, int, Any]] | None = None
        lost: BaseException | None = None
        if ok:
            data = loads(value)
            results = data["results"]
            # (A worker's task counted what it finished: `Task.items`, set by its run.)
            for work, n in zip(group.items, data.get("items", ()), strict=False):
                if work.task.items != n:
                    work.task.items = n
            group.executor.measured(data["seconds"], len(group.items))
        elif status == "error" and not isinstance(value, distributed.KilledWorker):
            # run_group itself failed (e.g. parjobs is not installed on the worker)
            results = [self._failed(value)] * len(group.items)
        elif status == "cancelled" and group.cancelled:
            results = [
                (OutcomeStatus.CANCELLED.value, None, None, "job interrupted", 0, None)
            ] * len(group.items)
        else:  # a lost worker, the answer's worker gone, the scheduler forgot it
            lost = value
        future.release()
        # Forget the claim flag of `run_group` (without waiting for the scheduler).
        key = f"parjobs-claim-{group.key}"
        with contextlib.suppress(Exception):
            self._client.loop.add_callback(_clear_claim, self._client, key)
        if results is None:
            if group.attempts < INFRA_ATTEMPTS and not group.cancelled:
                self._submit(group)  # an infrastructure fault: the whole group again
                return
            error = ClusterError(f"the cluster lost this task {group.attempts} times: {lost}")
            results = [self._failed(error)] * len(group.items)
        self._post(group, results)

    def _post(self, group: _Group, results: Sequence[tuple[str, Any, Any, str, int, Any]]) -> None:
        executor = group.executor
        port = executor.port
        with group.lock:
            if group.posted or group.abandoned:
                return
            group.posted = True
            last = len(group.items) - 1
            for pos, (work, (status, value, error, reason, nbytes, records)) in enumerate(
                zip(group.items, results, strict=True)
            ):
                if pos >= group.started:
                    port.progress.started(id(work), work.tc)
                work.tc.bytes_done = max(work.tc.bytes_done, nbytes)
                work.tc.items = records  # the item records the remote task noted
                outcome = Outcome(
                    work.task,
                    OutcomeStatus(status),
                    value=value,
                    error=error,
                    reason=reason,
                    bytes=nbytes,
                )
                port.post(work, outcome, pos == last)
        executor.token.run_sync_soon(group.done.set)

    def _interrupt(self, executor: ClusterExecutor, reason: str) -> None:
        """Pause or cancel a job run: tell every worker, cancel the groups none started."""
        self._stopped.add(executor.tag)
        with contextlib.suppress(Exception):  # (waits: the flag is up before groups go)
            self._client.run(request, executor.tag, reason, on_error="ignore")
        with self._groups_lock:
            pending = [
                g for g in self._groups.values() if g.executor is executor and g.started == 0
            ]
        self._cancel(pending)

    def _cancel(self, groups: list[_Group]) -> None:
        futures = []
        for group in groups:
            group.cancelled = True
            if group.future is not None:
                futures.append(group.future)
        if futures:
            with contextlib.suppress(Exception):
                self._client.cancel(futures)

    def _on_event(self, event: tuple[float, Any]) -> None:
        """(Dask's event loop thread) A worker's progress report: [key, started, moved]."""
        try:
            key, started, moved = event[1]
        except (TypeError, ValueError):
            return
        with self._groups_lock:
            group = self._groups.get(key)
        if group is None:
            return
        port = group.executor.port
        with group.lock:
            if group.posted or group.abandoned:
                return
            items = group.items
            for pos in range(group.started, min(started, len(items))):
                port.progress.started(id(items[pos]), items[pos].tc)
            group.started = max(group.started, started)
            for pos, nbytes in moved:
                if 0 <= pos < len(items):
                    tc = items[pos].tc
                    tc.bytes_done = max(tc.bytes_done, nbytes)  # monotone over re-runs

    # -- from trio ------------------------------------------------------------------------

    def executor(self, job_id: str) -> Callable[[PoolPort], ClusterExecutor]:
        """The executor factory of one run of job ``job_id`` (for `WorkerPool`)."""

        def make(port: PoolPort) -> ClusterExecutor:
            executor = ClusterExecutor(self, port, f"{job_id}-{secrets.token_hex(4)}")
            self._executors.add(executor)
            weakref.finalize(executor, self._commands.put, ("forget", executor.tag))
            return executor

        return make

    def send(self, command: str, arg: object) -> None:
        self._commands.put((command, arg))


async def _clear_claim(client: Any, key: str) -> None:
    """(The client's event loop) Clear a group's claim flag on the scheduler. A scheduler
    that is gone forgot it already: its error is no news (left to the loop, it was a
    traceback on stderr for every group answered while the scheduler was away)."""
    with contextlib.suppress(Exception):
        await client.scheduler.event_clear(name=key)


class ClusterExecutor:
    """The executor of a job run's cluster-capable tasks (see the module docstring)."""

    def __init__(self, bridge: ClusterBridge, port: PoolPort, tag: str) -> None:
        self.bridge = bridge
        self.port = port
        self.tag = tag
        self.token = trio.lowlevel.current_trio_token()
        self._per_task: float | None = None  # seconds a task, measured on the workers
        self._largest = 0  # the largest group answered so far

    def measured(self, seconds: float, count: int) -> None:
        """(Bridge thread) A group of ``count`` tasks took ``seconds`` on its worker."""
        per_task = max(1e-6, seconds / max(1, count))
        old = self._per_task
        self._per_task = per_task if old is None else (old + per_task) / 2
        self._largest = max(self._largest, count)

    def group_size(self, have: int = 0) -> int:
        """Tasks for a group holding ``have`` already: about `GROUP_SECONDS` of work, and,
        past a tenth of that, no more than a fair share of the queue over the cluster's
        threads (so a short queue of slow tasks still spreads; tiny tasks go in bulk).
        Groups grow to at most 4x the largest one answered (a slow start): the time per
        task is an average over unlike tasks (a directory, then a large file), and a
        group sized on a wrong guess would hold a thread for far longer than meant."""
        per_task = self._per_task
        if per_task is None:
            by_time, bulk = FIRST_GROUP, 1
        else:
            by_time, bulk = int(GROUP_SECONDS / per_task), int(GROUP_SECONDS / 10 / per_task)
        share = math.ceil((len(self.port.queue) + have) / self.bridge.threads)
        grown = max(FIRST_GROUP, 4 * self._largest)
        return max(1, min(MAX_GROUP, grown, by_time, max(share, bulk)))

    async def _gather(self, first: WorkItem) -> list[WorkItem]:
        """``first`` and more queued cluster tasks for its group. A trio worker takes a task
        the moment the job queues it, so the queue is nearly empty then: when the group is
        short of its size by time, wait `GATHER` once for the job to queue more."""
        take = self.port.queue.take_remote
        items = [first, *take(self.group_size(1) - 1)]
        per_task = self._per_task
        wanted = FIRST_GROUP if per_task is None else int(GROUP_SECONDS / per_task)
        if len(items) < min(MAX_GROUP, wanted, max(FIRST_GROUP, 4 * self._largest)):
            try:
                await trio.sleep(GATHER)
            except BaseException:
                for work in items:  # taken, never sent
                    self.port.progress.finished(id(work), "cancelled", 0, None)
                raise
            items += take(self.group_size(len(items)) - len(items))
        return items

    def collected(self) -> None:
        pass

    async def run(self, first: WorkItem) -> None:
        port = self.port
        items = await self._gather(first)
        group = _Group(self, items)
        if port.interrupter.reason is not None:
            # Interrupted already: end the tasks cancelled without a trip to the cluster.
            for work in items:
                port.progress.started(id(work), work.tc)
                reason = f"job {port.interrupter.reason}d"
                port.post(work, Outcome(work.task, OutcomeStatus.CANCELLED, reason=reason), True)
            return
        self.bridge.send("submit", group)
        try:
            await group.done.wait()
        except BaseException:
            with group.lock:
                if not group.posted:
                    group.abandoned = True
                    for pos, work in enumerate(items):
                        if pos < group.started:
                            port.progress.finished(id(work), "cancelled", 0, None)
            if group.abandoned:
                self.bridge.send("cancel", group)
            raise


__all__ = ["ClusterBridge", "ClusterExecutor", "check_cluster"]
