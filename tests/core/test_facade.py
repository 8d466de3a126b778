"""The blocking facade (`BlockingManager`) driven from plain threads; trio as a guest of
asyncio is `test_guest.py`.

Every test here is a plain ``def``: the code under test runs its own trio loop on a thread of
the facade, never the test's.
"""

from __future__ import annotations

import itertools
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from _jobs import CountJob, logged, read_log

import parjobs
from parjobs import JobStatus, ManagerClosedError, Progress
from parjobs.blocking import BlockingManager


def run_threads(*targets: Callable[[], Any], timeout: float = 10) -> list[Any]:
    """Run each target in its own thread at once; return their results, re-raise errors."""
    results: list[Any] = [None] * len(targets)
    errors: list[BaseException] = []

    def runner(i: int, target: Callable[[], Any]) -> None:
        try:
            results[i] = target()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=runner, args=(i, t)) for i, t in enumerate(targets)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
        assert not t.is_alive(), "a thread hung"
    if errors:
        raise errors[0]
    return results


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


def drain(q: queue.Queue[Progress | None], timeout: float = 5.0) -> list[Progress | None]:
    """Everything the queue receives up to and including the None sentinel."""
    items: list[Progress | None] = []
    while not items or items[-1] is not None:
        items.append(q.get(timeout=timeout))
    return items


def assert_monotone(snaps: list[Progress]) -> None:
    for a, b in itertools.pairwise(snaps):
        assert b.items_done >= a.items_done
        assert b.bytes_done >= a.bytes_done
        assert b.elapsed >= a.elapsed


# -- threads -----------------------------------------------------------------------------


def test_submit_and_wait_from_four_threads_runs_every_task_once(store_path, tmp_path):
    logs = [str(tmp_path / f"log{i}") for i in range(4)]
    with BlockingManager(store_path, workers=4) as jobs:

        def submit_and_wait(log: str) -> tuple[str, JobStatus, Any]:
            job_id = jobs.submit(CountJob(n=50, log=log, sleep=0.001))
            return job_id, jobs.wait(job_id, timeout=5), jobs.result(job_id)

        results = run_threads(*(lambda log=log: submit_and_wait(log) for log in logs))
        listed = {info.id: info.status for info in jobs.list_jobs()}
    assert len({job_id for job_id, _, _ in results}) == 4
    for job_id, status, result in results:
        assert status is JobStatus.COMPLETED
        assert listed[job_id] is JobStatus.COMPLETED
        assert result == {"done_this_run": 50, "runs": 1}
    for log in logs:
        assert sorted(read_log(log)) == list(range(50))


def test_submit_takes_owner_queue_after_and_timeout_like_the_trio_api(store_path, tmp_path):
    """The facade's submit had only priority, idempotency_key and start."""
    log = str(tmp_path / "log")
    with BlockingManager(store_path, workers=2, queues={"slow": 1}) as jobs:
        first = jobs.submit(CountJob(n=3, log=log), owner="alice", queue="slow")
        second = jobs.submit(
            CountJob(n=2, log=log), after=iter([first]), timeout=60, on_dependency_failure="run"
        )
        assert jobs.wait(second, timeout=10) is JobStatus.COMPLETED
        a, b = jobs.info(first), jobs.info(second)
        assert (a.owner, a.queue) == ("alice", "slow")
        assert (b.after, b.timeout, b.dep_policy) == ((first,), 60, "run")
        assert b.started is not None and a.finished is not None and b.started >= a.finished
        with pytest.raises(ValueError, match="unknown queue 'nope'"):
            jobs.submit(CountJob(n=1, log=log), queue="nope")
        with pytest.raises(parjobs.JobNotFoundError):
            jobs.submit(CountJob(n=1, log=log), after=["ffffffffffff"])
        assert len(jobs.list_jobs()) == 2  # the refused ones stored nothing


def test_pause_and_resume_from_threads_other_than_the_submitter(store_path, tmp_path):
    log = str(tmp_path / "log")
    n = 150
    with BlockingManager(store_path, workers=2) as jobs:
        job_id = jobs.submit(CountJob(n=n, log=log, sleep=0.01, chunks=5))
        wait_for(lambda: logged(log) >= 5)

        def pause_then_wait() -> JobStatus:
            jobs.pause(job_id)
            return jobs.wait(job_id, timeout=2)

        (paused,) = run_threads(pause_then_wait)
        assert paused is JobStatus.PAUSED
        assert jobs.status(job_id) is JobStatus.PAUSED
        done_at_pause = len(read_log(log))
        assert 0 < done_at_pause < n
        time.sleep(0.1)
        assert len(read_log(log)) == done_at_pause, "a paused job kept running"

        run_threads(lambda: jobs.resume(job_id))
        assert jobs.status(job_id) in (JobStatus.QUEUED, JobStatus.RUNNING)
        jobs.call(lambda m: m.handle(job_id).wait())  # the escape hatch to the trio API
        assert jobs.wait(job_id) is JobStatus.COMPLETED
    assert sorted(read_log(log)) == list(range(n))


def test_progress_callback_gets_monotone_snapshots_ending_with_the_final_one(store_path, tmp_path):
    snaps: list[Progress] = []
    threads: set[str] = set()
    rested = threading.Event()

    def on_progress(snap: Progress) -> None:
        threads.add(threading.current_thread().name)
        snaps.append(snap)
        if JobStatus(snap.status).is_resting:
            rested.set()

    with BlockingManager(store_path, workers=3) as jobs:
        job_id = jobs.submit(CountJob(n=200, log=str(tmp_path / "log"), sleep=0.002))
        jobs.subscribe(job_id, on_progress)
        assert jobs.wait(job_id, timeout=5) is JobStatus.COMPLETED
        assert rested.wait(2)
    assert threads == {"parjobs-manager"}, "callbacks run on the manager's thread"
    assert_monotone(snaps)
    final = snaps[-1]
    assert final.status == "completed" and final.job_id == job_id
    assert (final.items_done, final.items_total, final.in_flight) == (200, 200, 0)
    assert [s.status for s in snaps].count("completed") == 1


def test_progress_queue_gets_monotone_snapshots_then_final_then_none(store_path, tmp_path):
    with BlockingManager(store_path, workers=3) as jobs:
        job_id = jobs.submit(CountJob(n=200, log=str(tmp_path / "log"), sleep=0.002))
        q = jobs.progress_queue(job_id, maxsize=100)
        items = drain(q)
        assert jobs.wait(job_id, timeout=1) is JobStatus.COMPLETED
    *snaps, sentinel = items
    assert sentinel is None and len(snaps) >= 2
    assert all(isinstance(s, Progress) for s in snaps)
    shown = [s for s in snaps if s is not None]  # all of them (asserted above)
    assert_monotone(shown)
    assert shown[-1].status == "completed" and shown[-1].items_done == 200


def test_a_stuck_queue_reader_neither_slows_the_job_nor_piles_up(store_path, tmp_path):
    log = str(tmp_path / "log")
    with BlockingManager(store_path) as jobs:
        job_id = jobs.submit(CountJob(n=2000, log=log, sleep=0.0005))
        stuck = jobs.progress_queue(job_id, maxsize=1)  # never read until the end
        t0 = time.monotonic()
        assert jobs.wait(job_id, timeout=3) is JobStatus.COMPLETED
        elapsed = time.monotonic() - t0
        wait_for(lambda: stuck.qsize() == 2 and stuck.queue[-1] is None, timeout=1)
    final, sentinel = stuck.get_nowait(), stuck.get_nowait()
    assert sentinel is None
    assert isinstance(final, Progress) and final.status == "completed"
    assert final.items_done == 2000
    assert elapsed < 3
    assert len(read_log(log)) == 2000


def test_unsubscribe_stops_callbacks_and_a_raising_callback_is_dropped(
    store_path, tmp_path, caplog
):
    quiet: list[Progress] = []
    raised: list[Progress] = []

    def bad(snap: Progress) -> None:
        raised.append(snap)
        raise ValueError("boom")

    with BlockingManager(store_path, workers=1) as jobs:
        job_id = jobs.submit(CountJob(n=100, log=str(tmp_path / "log"), sleep=0.005))
        with caplog.at_level(logging.ERROR, logger="parjobs._facade"):
            jobs.subscribe(job_id, bad)
            unsubscribe = jobs.subscribe(job_id, quiet.append)
            unsubscribe()
            unsubscribe()  # idempotent
            seen = len(quiet)
            assert jobs.wait(job_id, timeout=5) is JobStatus.COMPLETED
            time.sleep(0.2)
    assert len(quiet) == seen <= 1
    assert len(raised) == 1
    assert "progress callback" in caplog.text and "ValueError: boom" in caplog.text


def test_blocking_call_from_a_callback_raises_instead_of_deadlocking(store_path, tmp_path):
    seen: list[BaseException] = []

    def reentrant(snap: Progress) -> None:
        try:
            jobs.status(snap.job_id)
        except RuntimeError as exc:
            seen.append(exc)

    with BlockingManager(store_path) as jobs:
        job_id = jobs.submit(CountJob(n=5, log=str(tmp_path / "log")))
        jobs.subscribe(job_id, reentrant)
        jobs.wait(job_id, timeout=5)
    assert seen and "deadlock" in str(seen[0])


# -- errors and lifecycle ----------------------------------------------------------------


def test_errors_reach_the_calling_thread_with_their_own_type(store_path, tmp_path):
    with BlockingManager(store_path) as jobs:
        with pytest.raises(parjobs.JobNotFoundError):
            jobs.info("no-such-job")
        with pytest.raises(parjobs.JobNotFoundError):
            jobs.progress_queue("no-such-job")
        with pytest.raises(parjobs.JobSpecError, match="log: expected a string, got object"):
            jobs.submit(CountJob(n=3, log=object()))
        job_id = jobs.submit(CountJob(n=3, log=str(tmp_path / "log")))
        jobs.wait(job_id)
        with pytest.raises(parjobs.InvalidTransitionError, match="it is completed"):
            jobs.resume(job_id)
        slow = jobs.submit(CountJob(n=10_000, log=str(tmp_path / "slow"), sleep=0.01))
        with pytest.raises(TimeoutError, match="still runs"):
            jobs.wait(slow, timeout=0.05)
        with pytest.raises(TimeoutError):
            jobs.result(slow, timeout=0.05)
        jobs.cancel(slow)
        assert jobs.wait(slow, timeout=2) is JobStatus.CANCELLED
        with pytest.raises(parjobs.JobCancelledError):
            jobs.result(slow)
        assert jobs.errors(job_id) == []


def test_close_while_running_leaves_the_job_paused_for_the_next_manager(store_path, tmp_path):
    log = str(tmp_path / "log")
    n = 100
    jobs = BlockingManager(store_path, workers=1).start()
    job_id = jobs.submit(CountJob(n=n, log=log, sleep=0.01, chunks=5))
    q = jobs.progress_queue(job_id)
    waited = []
    waiter = threading.Thread(target=lambda: waited.append(jobs.wait(job_id)))
    waiter.start()
    wait_for(lambda: logged(log) >= 5)
    t0 = time.monotonic()
    jobs.close(grace=30)
    assert time.monotonic() - t0 < 10  # paused at once, not after the grace (2.6 s at load 18)
    waiter.join(1)
    assert waited == [JobStatus.PAUSED], "a thread blocked in wait() sees the job rest"
    *_, final, sentinel = drain(q)
    assert sentinel is None and final is not None and final.status == "paused"
    done_at_close = len(read_log(log))
    assert 0 < done_at_close < n

    with BlockingManager(store_path, workers=8) as again:
        assert again.status(job_id) is JobStatus.PAUSED
        assert again.info(job_id).done_items == done_at_close
        again.resume(job_id)
        assert again.wait(job_id, timeout=5) is JobStatus.COMPLETED
    assert sorted(read_log(log)) == list(range(n)), "every task ran exactly once"


def test_close_is_idempotent_and_calls_after_close_fail_clearly(store_path, tmp_path):
    unused = BlockingManager(store_path)
    unused.close()  # never started: nothing to do
    unused.close()
    with BlockingManager(store_path) as jobs:
        assert jobs.running
        job_id = jobs.submit(CountJob(n=3, log=str(tmp_path / "log")))
        jobs.wait(job_id)
        jobs.close()
        jobs.close()
        assert not jobs.running
    jobs.close()
    for call in (
        lambda: jobs.submit(CountJob(n=3, log=str(tmp_path / "log"))),
        lambda: jobs.status(job_id),
        lambda: jobs.subscribe(job_id, print),
    ):
        with pytest.raises(ManagerClosedError, match="closed"):
            call()
    assert issubclass(ManagerClosedError, RuntimeError)
    assert issubclass(ManagerClosedError, parjobs.ParjobsError)
    assert not issubclass(ManagerClosedError, parjobs.StoreError)  # the store may be fine
    with pytest.raises(ManagerClosedError, match="create a new one"):
        jobs.start()
    with pytest.raises(RuntimeError, match="not started"):
        BlockingManager(store_path).info(job_id)


def test_a_forked_child_is_refused_at_once_and_leaves_the_parents_manager_working(
    store_path, tmp_path
):
    """A child made by fork has no manager thread: a call there used to wait for ever (the
    request went to the parent's loop, the answer never came back)."""
    import os
    import signal

    with BlockingManager(store_path) as jobs:
        job_id = jobs.submit(CountJob(n=3, log=str(tmp_path / "log")))
        assert jobs.wait(job_id, timeout=10) is JobStatus.COMPLETED
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: report what each call did, never run the test further
            code = 0
            try:
                signal.alarm(10)  # a hang ends the child (and fails the test below)
                outcome = []
                for call in (lambda: jobs.status(job_id), jobs.close, jobs.close):
                    try:
                        call()
                        outcome.append("ok")
                    except RuntimeError as exc:
                        outcome.append("forked child" if "forked child" in str(exc) else repr(exc))
                os.write(write, ",".join(outcome).encode())
            except BaseException:
                code = 1
            finally:
                os._exit(code)
        os.close(write)
        try:
            deadline = time.monotonic() + 20
            while os.waitpid(pid, os.WNOHANG) == (0, 0):
                assert time.monotonic() < deadline, "the child hangs"
                time.sleep(0.05)
            pid = 0
            with os.fdopen(read, "rb") as f:
                said = f.read().decode()
        finally:
            if pid:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
        assert said == "forked child,ok,ok"  # calls refused, close left to the parent
        assert jobs.running
        again = jobs.submit(CountJob(n=3, log=str(tmp_path / "log2")))
        assert jobs.wait(again, timeout=10) is JobStatus.COMPLETED


def _foreign_sqlite(path: str) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE photos (id INTEGER)")
    conn.close()


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda p: p.mkdir(), parjobs.StoreFormatError, "is a directory"),
        (lambda p: p.write_bytes(b"no database here" * 8), parjobs.StoreFormatError, "not a"),
        (lambda p: _foreign_sqlite(str(p)), parjobs.StoreFormatError, "another application"),
    ],
    ids=["directory", "not-sqlite", "foreign-sqlite"],
)
def test_a_bad_store_fails_start_in_the_calling_thread(tmp_path, make, error, match):
    path = tmp_path / "store"
    make(path)
    jobs = BlockingManager(path)
    with pytest.raises(error, match=match):
        jobs.start()
    with pytest.raises(error), BlockingManager(path):
        pass
    assert not jobs.running
    manager_threads = [t for t in threading.enumerate() if t.name == "parjobs-manager"]
    assert manager_threads == [], "the manager thread was left behind"
    with pytest.raises(ManagerClosedError):
        jobs.start()


def test_one_progress_queue_and_one_callback_live_through_pause_and_resume(store_path, tmp_path):
    """Subscriptions ended at every pause: a GUI had to subscribe again after each resume."""
    log, hold = str(tmp_path / "log"), tmp_path / "go"
    with BlockingManager(store_path, workers=1) as jobs:
        # Held after 5 tasks: with 0.35 s of work left, a pause from this thread once came
        # after the job had ended (the demo's race).
        job_id = jobs.submit(CountJob(n=40, log=log, sleep=0.01, hold=str(hold), hold_from=5))
        q = jobs.progress_queue(job_id, maxsize=1000)
        called: list[Progress] = []
        jobs.subscribe(job_id, called.append)
        wait_for(lambda: len(read_log(log)) >= 5, timeout=30)
        jobs.pause(job_id)
        assert jobs.wait(job_id, timeout=30) is JobStatus.PAUSED
        hold.touch()
        jobs.resume(job_id)
        assert jobs.wait(job_id, timeout=30) is JobStatus.COMPLETED
        items = drain(q, timeout=30)
    *snaps, sentinel = items
    assert sentinel is None
    got = [s for s in snaps if s is not None]
    statuses = [s.status for s in got]
    assert "paused" in statuses and statuses[-1] == "completed"
    assert statuses.index("paused") < len(statuses) - 1
    assert_monotone(got)
    assert [s.status for s in called][-1] == "completed" and "paused" in [s.status for s in called]


def test_closing_unregisters_the_manager_once(tmp_path, monkeypatch):
    """The facade shuts its manager down before `open_manager` closes it: the second
    shutdown finds it done, and the store is not asked to unregister it again."""
    from parjobs._store import SQLiteJobStore

    calls: list[str] = []
    unregister = SQLiteJobStore.unregister_manager

    def counted(self: SQLiteJobStore, manager_id: str) -> None:
        calls.append(manager_id)
        unregister(self, manager_id)

    monkeypatch.setattr(SQLiteJobStore, "unregister_manager", counted)
    with BlockingManager(str(tmp_path / "jobs.sqlite")) as jobs:
        jobs.wait(jobs.submit(CountJob(n=3, log=str(tmp_path / "log"))))
    assert len(calls) == 1
