"""Stress: 50 jobs at once under a storm of seeded random pause/resume/cancel requests.

Checks: no deadlock (everything under trio.fail_after), no task runs after its job rests,
no leaked threads (beyond trio's idle worker-thread cache) or file descriptors once the
manager is closed, and a consistent store: every job resting, its checkpointed indices all
among the task side effects in its log, its done_items equal to them, every completed job's
tasks run exactly once.
"""

from __future__ import annotations

import os
import random
import sqlite3
import sys
import threading
from pathlib import Path

import pytest
import trio
import trio._core._thread_cache as thread_cache
from rel_helpers import open_fds

import parjobs
from parjobs import InvalidTransitionError, JobStatus

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import contextlib

from _jobs import CountJob, read_log

JOBS = 50
TASKS = 120
#: A task's sleep and the longest pause between two requests (seconds).
SLEEP, PACE = 0.01, 0.025


def busy_threads() -> int:
    """Threads alive that are not idle in trio's worker-thread cache (it keeps idle workers
    for a while, by design)."""
    return threading.active_count() - len(thread_cache.THREAD_CACHE._idle_workers)


def completed_indices(store: str) -> dict[str, set[int]]:
    con = sqlite3.connect(store)
    out: dict[str, set[int]] = {}
    for job_id, a, b in con.execute("SELECT job_id, start, stop FROM completed"):
        out.setdefault(job_id, set()).update(range(a, b))
    con.close()
    return out


async def settle(m: parjobs.JobManager, job_id: str) -> parjobs.JobInfo:
    """Resume the job until it ends; its status as the store has it (see
    test_wait_reports_the_status_of_a_job_cancelled_while_resting for why not wait())."""
    while True:
        info = await m.get(job_id)
        if info.status in (JobStatus.PAUSED, JobStatus.INTERRUPTED):
            with contextlib.suppress(InvalidTransitionError):
                await m.resume(job_id)
        elif info.status.is_final:
            return info
        await trio.sleep(0.05)


async def storm(tmp_path: Path, seconds: float, seed: int, least: dict[str, int]) -> dict[str, int]:
    """Requests for ``seconds``, and on (up to three times as long) while fewer than
    ``least`` of an action took effect: a loaded machine answers them slower."""
    store = str(tmp_path / "jobs.sqlite")
    rng = random.Random(seed)
    threads_before, fds_before = busy_threads(), open_fds()
    logs: dict[str, str] = {}
    counts = {"pause": 0, "resume": 0, "cancel": 0, "refused": 0}
    frozen: dict[str, int] = {}  # cancelled job -> its log length once it rested
    # The last 16 tasks of every job wait for ``go``, made once the storm is over:
    # with all jobs ended there is nothing to pause or resume, and on a slow machine they
    # ended before the storm had made 15 resumes (8, at ~80 ms a request; session 13).
    go = tmp_path / "go"
    with trio.fail_after(4 * seconds + 90):
        async with parjobs.open_manager(store, workers=4, max_running=8) as m:
            for i in range(JOBS):
                log = str(tmp_path / f"log{i}")
                job = CountJob(
                    n=TASKS, log=log, sleep=SLEEP, chunks=2, hold=str(go), hold_from=TASKS - 16
                )
                handle = await m.submit(job)
                logs[handle.id] = log
            ids = list(logs)
            deadline = trio.current_time() + seconds
            while trio.current_time() < deadline or (
                any(counts[action] < n for action, n in least.items())
                and trio.current_time() < deadline + 3 * seconds
            ):
                await trio.sleep(rng.uniform(0.0, PACE))
                job_id = rng.choice(ids)
                action = rng.choices(["pause", "resume", "cancel"], weights=[5, 5, 1])[0]
                try:
                    await getattr(m, action)(job_id)
                    counts[action] += 1
                except InvalidTransitionError:
                    counts["refused"] += 1  # e.g. resume a running job, cancel a cancelled one
            go.touch()
            for job_id in ids:  # all at once: one by one, `settle` would run them in turn
                with contextlib.suppress(InvalidTransitionError):
                    await m.resume(job_id)
            statuses = {}
            for job_id in ids:  # let every job come to an end
                statuses[job_id] = info = await settle(m, job_id)
                if info.status is JobStatus.CANCELLED:
                    frozen[job_id] = len(read_log(logs[job_id]))
        await trio.sleep(0.3)  # anything still running would show in a log now
    # -- nothing left behind -----------------------------------------------------------
    assert busy_threads() <= threads_before, threading.enumerate()
    assert open_fds() - fds_before == set()
    # -- the store against the side effects ----------------------------------------------
    done = completed_indices(store)
    for job_id, info in statuses.items():
        assert info.status in (JobStatus.COMPLETED, JobStatus.CANCELLED), info.status
        ran = read_log(logs[job_id])
        assert len(ran) == len(set(ran)), f"{job_id}: a task ran twice"
        assert done.get(job_id, set()) <= set(ran), f"{job_id}: recorded but never ran"
        assert info.done_items == len(done.get(job_id, ())), job_id
        if info.status is JobStatus.COMPLETED:
            assert sorted(ran) == list(range(TASKS))
        else:
            assert len(ran) == frozen[job_id], f"{job_id}: a task ran after the cancel"
    counts["cancelled"] = sum(i.status is JobStatus.CANCELLED for i in statuses.values())
    return counts


async def test_fifty_jobs_under_random_requests(tmp_path: Path) -> None:
    counts = await storm(tmp_path, 2.5, seed=7, least={"pause": 15, "resume": 15, "cancel": 1})
    print(counts)
    assert counts["pause"] >= 15 and counts["resume"] >= 15 and counts["cancelled"] >= 1


@pytest.mark.slow
async def test_fifty_jobs_under_random_requests_slow(tmp_path: Path) -> None:
    counts = await storm(tmp_path, 30.0, seed=8, least={"pause": 30, "resume": 25})
    assert counts["pause"] >= 30 and counts["resume"] >= 25


async def test_many_managers_on_one_store_never_run_a_job_twice(tmp_path: Path) -> None:
    """Three managers of this process share a store, each resuming the others' paused jobs:
    leases keep every job to one runner; every task runs once."""
    store = str(tmp_path / "jobs.sqlite")
    logs: dict[str, str] = {}
    with trio.fail_after(60):
        async with (
            parjobs.open_manager(store, workers=2) as a,
            parjobs.open_manager(store, workers=2) as b,
            parjobs.open_manager(store, workers=2) as c,
        ):
            managers = [a, b, c]
            for i in range(12):
                log = str(tmp_path / f"log{i}")
                handle = await managers[i % 3].submit(CountJob(n=200, log=log, sleep=0.002))
                logs[handle.id] = log
            rng = random.Random(3)
            for _ in range(40):
                await trio.sleep(0.03)
                job_id = rng.choice(list(logs))
                owner = managers[list(logs).index(job_id) % 3]
                try:
                    if (await owner.get(job_id)).status is JobStatus.RUNNING:
                        await owner.pause(job_id)
                        await owner.wait(job_id)
                        await rng.choice(managers).resume(job_id)
                except InvalidTransitionError:
                    pass
            for job_id in logs:
                assert (await settle(a, job_id)).status is JobStatus.COMPLETED
    for log in logs.values():
        assert sorted(read_log(log)) == list(range(200))
    assert os.path.exists(store)


async def test_wait_reports_the_status_of_a_job_cancelled_while_resting(tmp_path: Path) -> None:
    async with parjobs.open_manager(str(tmp_path / "jobs.sqlite")) as m:
        handle = await m.submit(CountJob(n=10_000, log=str(tmp_path / "log"), sleep=0.001))
        await m.pause(handle.id)
        assert await handle.wait() is JobStatus.PAUSED
        await m.cancel(handle.id)
        assert (await m.get(handle.id)).status is JobStatus.CANCELLED
        with trio.fail_after(5):
            assert await handle.wait() is JobStatus.CANCELLED
