"""The second-runner matrix: a job runs in one place at a time, whatever other processes do.

For each operation (copy, move, trash, hash, dupes, thumbnails), with real ``parjobs``
processes (`rel_cli.py`: the command line, slowed down, logging every task it runs):

(a) a second ``parjobs resume ID`` while the first process runs the job is refused (exit 2);
(c) the runner stopped (SIGSTOP) past the lease timeout (``PARJOBS_LEASE_TIMEOUT``, made
    small here) is not declared dead: a resume is refused, the stopped process keeps the job,
    and after SIGCONT it goes on;
(b) two simultaneous resumes of the paused job: exactly one runs it (exit 0), the other is
    refused (exit 2) and runs nothing; the job completes, each task done once;
(d) ``parjobs cancel ID`` from another process while the job runs: the runner stops, the final
    status is cancelled, and no task finishes after the cancel command returned.

Every scenario checks exit codes, the stored status, that the failures counted in the result
are the ones listed, and from the task log that no task was done twice. The operations run in
parallel (one thread each), so the default matrix takes ~15 s; ``slow`` runs bigger trees.
"""

from __future__ import annotations

import collections
import concurrent.futures
import json
import os
import signal
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio
from _forkcli import Forked
from rel_helpers import HERE, photo, snapshot, write

import parjobs
import parjobs.ops  # registers the job types

CLI = HERE / "rel_cli.py"
OPS = ("copy", "move", "trash", "hash", "dupes", "thumbnails")
#: Lease timeout of every process of the matrix (seconds): small, so that a runner stopped
#: for longer would be declared dead by a store that trusted heartbeats alone.
LEASE = 0.5


@dataclass
class Area:
    """One operation's scenario: its directory, store, task log and environment."""

    op: str
    root: Path
    files: int
    sleep: float

    @property
    def store(self) -> Path:
        return self.root / "jobs.sqlite"

    @property
    def log(self) -> Path:
        return self.root / "tasks.log"

    @property
    def hold(self) -> Path:
        return self.root / "hold"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            PARJOBS_LEASE_TIMEOUT=str(LEASE),
            REL_TASK_LOG=str(self.log),
            REL_TASK_SLEEP=str(self.sleep),
            REL_TASK_HOLD=str(self.hold),
            REL_DUPES_RUN_FILES="2",  # dupes: a task per pair of files, as for the others
            XDG_DATA_HOME=str(self.root / "xdg"),
            PYTHONPATH=os.pathsep.join(
                [str(HERE), str(HERE.parent), *filter(None, [os.environ.get("PYTHONPATH")])]
            ),
        )
        return env

    def tree(self, name: str) -> Path:
        """A small source tree for this operation (photos for thumbnails, pairs of equal
        files for dupes)."""
        src = self.root / name
        src.mkdir()
        for i in range(self.files):
            d = src / f"d{i % 3}"
            d.mkdir(exist_ok=True)
            if self.op == "thumbnails":
                photo((160, 120), i).save(d / f"p{i:03}.jpg", quality=80)
            else:
                body = (f"file {i // 2 if self.op == 'dupes' else i} " * 60).encode()
                write(d / f"f{i:03}.txt", body)
        return src

    def command(self, src: Path, tag: str) -> list[str]:
        """The parjobs command of this operation on ``src``."""
        out = self.root / f"out-{tag}"
        files = sorted(str(p) for p in src.rglob("*") if p.is_file())
        if self.op == "copy":
            return ["copy", str(src), f"{out}/"]  # into out (made): out/<src name>
        if self.op == "move":  # file by file: a tree on one file system moves in one rename
            out.mkdir()
            return ["move", *files, str(out)]
        if self.op == "trash":
            return ["delete", "--trash", *files]
        if self.op == "hash":
            return ["hash", "--output", str(out), str(src)]
        if self.op == "dupes":
            return ["dupes", str(src)]
        return ["thumbnails", "--out", str(out), str(src)]

    # -- processes ---------------------------------------------------------------------

    def start(self, *args: str) -> Forked:
        n = len(list(self.root.glob("proc-*.out")))
        out = open(self.root / f"proc-{n}.out", "wb")  # noqa: SIM115 - closed by the child
        err = open(self.root / f"proc-{n}.err", "wb")  # noqa: SIM115
        proc = Forked(
            [*args, "--store", str(self.store), "--json", "-w", "1"]
            if args[0] not in ("resume", "cancel")
            else [*args, "--store", str(self.store)] + (["-w", "1"] if args[0] == "resume" else []),
            module=str(CLI),
            stdout=out,
            stderr=err,
            env=self.env(),
            cwd=self.root,
        )
        out.close()
        err.close()
        proc.out_path = out.name
        proc.err_path = err.name
        return proc

    def run(self, *args: str, timeout: float = 60) -> tuple[int, str, str]:
        proc = self.start(*args)
        rc = proc.wait(timeout=timeout)
        return rc, output(proc), errors(proc)

    def job_id(self, proc: Forked, timeout: float = 20) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in output(proc).splitlines():
                event = json.loads(line)
                if event.get("event") == "job":
                    return str(event["job_id"])
            assert proc.poll() is None, f"{self.op}: runner ended early: {errors(proc)}"
            time.sleep(0.02)
        raise AssertionError(f"{self.op}: no job id from the runner")

    def tasks(self) -> list[tuple[int, float, str, int, str]]:
        """The task log: (pid, time, stage, index, outcome) per finished task."""
        if not self.log.exists():
            return []
        rows = []
        for line in self.log.read_text().splitlines():
            pid, at, stage, index, outcome = line.split()
            rows.append((int(pid), float(at), stage, int(index), outcome))
        return rows

    def wait_tasks(self, pid: int, count: int, timeout: float = 20) -> None:
        """Until ``pid`` finished ``count`` tasks (done) in all."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if sum(1 for t in self.tasks() if t[0] == pid and t[4] == "DONE") >= count:
                return
            time.sleep(0.02)
        raise AssertionError(f"{self.op}: process {pid} did not get going")

    def row(self, job_id: str) -> dict[str, Any]:
        con = sqlite3.connect(self.store)
        try:
            con.row_factory = sqlite3.Row
            row = con.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
            errors = con.execute(
                "SELECT COUNT(*) FROM task_errors WHERE job_id=?", (job_id,)
            ).fetchone()[0]
            managers = {r[0] for r in con.execute("SELECT id FROM managers")}
        finally:
            con.close()
        data = dict(row)
        data["errors"] = errors
        data["managers"] = managers
        return data


def output(proc: Forked) -> str:
    return Path(proc.out_path).read_text(errors="replace")


def errors(proc: Forked) -> str:
    return Path(proc.err_path).read_text(errors="replace")


def done_twice(area: Area) -> dict[tuple[str, int], int]:
    """Tasks done more than once (by any process): must be none."""
    counts = collections.Counter((t[2], t[3]) for t in area.tasks() if t[4] == "DONE")
    return {key: n for key, n in counts.items() if n > 1}


def check_true_result(area: Area, job_id: str, status: str) -> None:
    """The stored status is ``status``, and the failures the result counts are listed."""
    row = area.row(job_id)
    assert row["status"] == status, (area.op, row["status"], row["error"])
    assert row["lease"] is None, (area.op, row)
    result = json.loads(row["result"]) if row["result"] else None
    if isinstance(result, dict) and "failed" in result:
        assert result["failed"] == row["errors"], (area.op, result, row["errors"])
    if status == "completed":
        assert row["errors"] == 0, (area.op, row["errors"])


def check_outcome(area: Area, src: Path, before: dict[bytes, Any]) -> None:
    """What the completed job left is right for its operation."""
    out = area.root / "out-1"
    if area.op == "copy":
        assert snapshot(out / src.name) == before, area.op
    elif area.op == "move":
        moved = {os.path.basename(k): v for k, v in before.items() if v[0] == "file"}
        assert snapshot(out) == moved, area.op
        assert not [p for p in src.rglob("*") if p.is_file()], area.op
    elif area.op == "trash":
        assert not [p for p in src.rglob("*") if p.is_file()], area.op
        trashed = list((area.root / "xdg" / "Trash" / "files").iterdir())
        assert len(trashed) == area.files, (area.op, len(trashed))
    elif area.op == "hash":
        assert len(out.read_text().splitlines()) == area.files, area.op
    elif area.op == "thumbnails":
        assert len([p for p in out.rglob("*") if p.is_file()]) == area.files, area.op


def paused_copy_of(area: Area, job_id: str, src: Path, src2: Path) -> str:
    """Store a second job like ``job_id`` on ``src2`` (its output ``out-2``), paused."""
    row = area.row(job_id)
    spec = row["spec"].replace(str(src), str(src2)).replace("out-1", "out-2")

    async def submit() -> str:
        async with parjobs.open_manager(str(area.store)) as manager:
            job = parjobs.registered_job_types()[row["type"]].from_spec(json.loads(spec))
            return (await manager.submit(job, start=False)).id

    if area.op == "move":
        (area.root / "out-2").mkdir()
    return trio.run(submit)


def scenario(area: Area) -> None:
    """(a) and (c) on one job, which then completes; (b) and (d) on a second one. While
    ``hold`` exists, the runners' tasks wait before they start: the job is running (tasks in
    flight) but cannot end before the test is done with it, however slow the machine."""
    src = area.tree("src1")
    before = snapshot(src)
    runner = area.start(*area.command(src, "1"))
    job_id = area.job_id(runner)
    area.wait_tasks(runner.pid, 2)
    area.hold.touch()

    # (a) a second resume while the first process runs the job: refused, nothing run.
    rc, _, err = area.run("resume", job_id)
    assert rc == 2, (area.op, rc, err)
    assert "in another parjobs process" in err and err.count("\n") == 1, (area.op, err)
    assert runner.poll() is None, (area.op, errors(runner))

    # (c) stopped past the lease timeout: still the job's owner; a resume is refused; after
    # SIGCONT the job finishes, once and right.
    stop_outside_a_write(runner.pid, area.store)
    try:
        time.sleep(LEASE * 2)
        rc, _, err = area.run("resume", job_id)
        assert rc == 2 and "in another parjobs process" in err, (area.op, rc, err)
        row = area.row(job_id)
        assert row["status"] == "running" and row["lease"] in row["managers"], (area.op, row)
    finally:
        os.kill(runner.pid, signal.SIGCONT)
    area.hold.unlink()
    assert runner.wait(timeout=60) == 0, (area.op, errors(runner))
    assert done_twice(area) == {}, (area.op, done_twice(area))
    check_true_result(area, job_id, "completed")
    check_outcome(area, src, before)
    area.log.rename(area.root / "tasks-1.log")  # task indices are per job: a log per job

    # (b) two resumes at once of a paused job: exactly one runs it.
    src2 = area.tree("src2")
    job2 = paused_copy_of(area, job_id, src, src2)
    area.hold.touch()
    first, second = area.start("resume", job2), area.start("resume", job2)
    deadline = time.monotonic() + 30
    while first.poll() is None and second.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    winner, loser = (second, first) if first.poll() is not None else (first, second)
    assert loser.poll() == 2, (area.op, loser.poll(), errors(loser))
    assert "in another parjobs process" in errors(loser), (area.op, errors(loser))
    assert winner.poll() is None, (area.op, errors(winner))

    # (d) cancel from another process while the job runs: the runner stops, nothing is
    # written after the cancel returns, the job is cancelled.
    area.hold.unlink()
    area.wait_tasks(winner.pid, 2)
    area.hold.touch()
    rc, out, err = area.run("cancel", job2)
    returned = time.time()
    assert rc == 0 and f"job {job2} is cancelled" in out, (area.op, rc, out, err)
    assert winner.wait(timeout=30) == 4, (area.op, errors(winner))
    late = [t for t in area.tasks() if t[0] == winner.pid and t[1] > returned and t[4] == "DONE"]
    assert not late, (area.op, "tasks ended after the cancel returned", late)
    assert not [t for t in area.tasks() if t[0] == loser.pid], area.op
    assert done_twice(area) == {}, (area.op, done_twice(area))
    check_true_result(area, job2, "cancelled")


def run_matrix(tmp_path: Path, ops: tuple[str, ...], files: int, sleep: float) -> None:
    areas = []
    for op in ops:
        root = tmp_path / op
        root.mkdir()
        areas.append(Area(op, root, files, sleep))
    with concurrent.futures.ThreadPoolExecutor(len(areas)) as pool:
        futures = {pool.submit(scenario, area): area.op for area in areas}
        failures = []
        for future in concurrent.futures.as_completed(futures):
            try:
                future.result()
            except Exception as exc:
                failures.append(f"{futures[future]}: {exc!r}")
    assert not failures, "\n".join(failures)


def test_second_runner_matrix(tmp_path: Path) -> None:
    run_matrix(tmp_path, OPS, files=16, sleep=0.05)


@pytest.mark.slow
def test_second_runner_matrix_bigger(tmp_path: Path) -> None:
    run_matrix(tmp_path, OPS, files=120, sleep=0.03)


def stop_outside_a_write(pid: int, store: Path) -> None:
    """SIGSTOP the runner at a moment it holds no write lock on the store (retrying until it
    does not): stopped inside a checkpoint's transaction it would keep every other process
    out of the store ("database is locked"), which is SQLite's rule, not what these tests
    are about."""
    for _ in range(200):
        os.kill(pid, signal.SIGSTOP)
        while not _stopped(pid):
            time.sleep(0.001)
        con = sqlite3.connect(store, timeout=0)
        try:
            con.execute("BEGIN IMMEDIATE")
            con.rollback()
            return
        except sqlite3.OperationalError:  # stopped inside a write: let it finish, try again
            os.kill(pid, signal.SIGCONT)
            time.sleep(0.005)
        finally:
            con.close()
    raise AssertionError("the runner kept the store locked")


def _stopped(pid: int) -> bool:
    """Whether every thread of ``pid`` is stopped (state ``T`` in ``/proc``)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            if (task / "stat").read_text().rsplit(")", 1)[1].split()[0] != "T":
                return False
        except FileNotFoundError:  # a thread that ended meanwhile
            pass
    return True


# -- one runner, copy only: what a runner does when asked, stopped, or dispossessed ---------


def copy_area(tmp_path: Path) -> tuple[Area, Path, Forked, str]:
    """A copy job of 16 files, running (two tasks done) in a parjobs process."""
    area = Area("copy", tmp_path, 16, 0.05)
    src = area.tree("src1")
    runner = area.start(*area.command(src, "1"))
    job_id = area.job_id(runner)
    area.wait_tasks(runner.pid, 2)
    return area, src, runner, job_id


def test_cancel_of_a_stopped_runner_is_not_cancelled_until_it_stops(tmp_path: Path) -> None:
    """The runner stopped (Ctrl-Z) past the lease timeout is not declared dead: ``cancel``
    does not say "cancelled" while it cannot stop the job; the request waits in the store.
    After SIGCONT the runner stops at once, cleans up and ends cancelled (exit 4)."""
    area, _, runner, job_id = copy_area(tmp_path)
    stop_outside_a_write(runner.pid, area.store)
    try:
        time.sleep(LEASE * 2)
        rc, out, err = area.run("cancel", job_id, "--no-wait")
        assert rc == 0, (rc, out, err)
        assert "is cancelled" not in out and "cancel requested" in out, out
        row = area.row(job_id)
        assert (row["status"], row["request"]) == ("running", "cancel"), row
        assert row["lease"] in row["managers"], row
    finally:
        os.kill(runner.pid, signal.SIGCONT)
    resumed = time.time()
    assert runner.wait(timeout=30) == 4, errors(runner)
    after = [t for t in area.tasks() if t[0] == runner.pid and t[1] > resumed and t[4] == "DONE"]
    assert len(after) <= 1, after  # the one in flight, at most
    check_true_result(area, job_id, "cancelled")
    assert not list((area.root / "out-1").rglob("*.parjobs*")), "cleanup left temporaries"


def test_a_runner_that_lost_its_lease_stops_and_writes_nothing_more(tmp_path: Path) -> None:
    """Another process declared the runner dead (as one on another host would after the
    lease timeout: its manager row deleted, the job recovered as interrupted). The runner
    notices within a poll, stops its tasks, records nothing more and leaves the status to
    the new owner; a resume then finishes the job, each task once beyond the one in flight."""
    area, src, runner, job_id = copy_area(tmp_path)
    con = sqlite3.connect(area.store)
    with con:
        (lease,) = con.execute("SELECT lease FROM jobs WHERE id=?", (job_id,)).fetchone()
        con.execute("DELETE FROM managers WHERE id=?", (lease,))
        con.execute("UPDATE jobs SET status='interrupted', lease=NULL WHERE id=?", (job_id,))
    (taken_done,) = con.execute("SELECT done_items FROM jobs WHERE id=?", (job_id,)).fetchone()
    con.close()
    taken = time.time()
    assert runner.wait(timeout=10) == 3, errors(runner)
    late = [t for t in area.tasks() if t[0] == runner.pid and t[1] > taken + 0.5 and t[4] == "DONE"]
    assert not late, late
    row = area.row(job_id)
    assert (row["status"], row["lease"], row["done_items"]) == ("interrupted", None, taken_done)
    rc, _, err = area.run("resume", job_id)
    assert rc == 0, err
    # Redone: only what the first runner did (not checkpointed) before it stopped, promptly.
    by_runner = {(t[2], t[3]) for t in area.tasks() if t[0] == runner.pid and t[4] == "DONE"}
    assert set(done_twice(area)) <= by_runner, done_twice(area)
    check_true_result(area, job_id, "completed")
    assert snapshot(area.root / "out-1" / src.name) == snapshot(src)


def test_store_deleted_mid_job_stops_the_job_with_one_error(tmp_path: Path) -> None:
    """The store file deleted while a job runs: SQLite would go on writing into the unlinked
    file. The runner notices (the file's identity changed), stops the job, and exits with
    one clear error line (exit 2) instead of copying on or failing items."""
    area, _, runner, _ = copy_area(tmp_path)
    for suffix in ("", "-wal", "-shm"):
        Path(str(area.store) + suffix).unlink(missing_ok=True)
    deleted = time.time()
    assert runner.wait(timeout=10) == 2, errors(runner)
    lines = errors(runner).splitlines()
    assert len(lines) == 1 and "was deleted or replaced" in lines[0], lines
    assert str(area.store) in lines[0], lines
    late = [t for t in area.tasks() if t[0] == runner.pid and t[1] > deleted + 0.5]
    late = [t for t in late if t[4] == "DONE"]
    assert not late, late
