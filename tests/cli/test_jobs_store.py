"""Where the store lives, listing jobs, and forgetting them (jobs prune, retention)."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import stat
import time
from pathlib import Path

import trio
from _cli import RESUME, run
from _jobs import CountJob, KeepsPartialJob

import parjobs
from parjobs import JobStatus

# -- store location ------------------------------------------------------------------------


def test_store_from_xdg_state_home_then_parjobs_store(small: Path, tmp_path: Path, env) -> None:
    dst = f"{tmp_path / 'dst'}/"
    assert run("copy", str(small), str(dst), env=env).returncode == 0
    default = tmp_path / "state" / "parjobs" / "jobs.sqlite"
    assert default.exists()
    # private to the user, as the XDG base directory spec asks (the WAL files follow)
    assert stat.S_IMODE(default.parent.stat().st_mode) == 0o700
    for name in ("jobs.sqlite", "jobs.sqlite-wal", "jobs.sqlite-shm"):
        if (default.parent / name).exists():
            assert stat.S_IMODE((default.parent / name).stat().st_mode) == 0o600, name
    retry = run("--json", "copy", str(small), str(dst), env=env)  # conflicts: exit 1
    assert retry.returncode == 1, retry.stderr
    line = RESUME.search(json.loads(retry.stdout.splitlines()[-1])["resume_command"])
    assert line and "--store" not in line.group(0)

    env = {**env, "PARJOBS_STORE": str(tmp_path / "env.sqlite")}
    assert run("hash", str(small), env=env).returncode == 0
    assert (tmp_path / "env.sqlite").exists()
    assert "hash" in run("jobs", env=env).stdout
    assert "copy" not in run("jobs", env=env).stdout


def test_the_command_exits_without_checkpointing_and_the_store_keeps_everything(
    tmp_path: Path, env, store
) -> None:
    """The program leaves its store connection to ``os._exit`` (no WAL checkpoint, no fsync
    at close): the WAL outlives the process, 0600 as the store, and what the commands wrote
    is all there, for a connection that stayed open meanwhile (another process's, unharmed:
    it reads and writes) and for one opened afterwards, when the WAL is read back."""
    from parjobs._store import SQLiteJobStore

    src = tmp_path / "src"
    src.mkdir()
    for i in range(5):
        (src / f"f{i}").write_bytes(b"x" * i)
    first = run("copy", str(src / "f0"), str(tmp_path / "one"), env=env, store=store)
    assert first.returncode == 0, first.stderr
    wal = Path(store + "-wal")
    assert wal.stat().st_size > 0  # left for the next opener: not checkpointed at close
    for path in (store, store + "-wal", store + "-shm"):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path
    other = SQLiteJobStore.open(store)  # open while the next command runs and exits
    try:
        copied = run("copy", str(src), str(tmp_path / "dst"), env=env, store=store)
        assert copied.returncode == 0, copied.stderr
        jobs = other.list_jobs()
        assert [j.status.value for j in jobs] == ["completed", "completed"]
        assert all(j.lease is None for j in jobs)
        other.register_manager("test-writer")  # still writable
    finally:
        other.close()  # the last connection here: checkpointed
    with sqlite3.connect(store) as c:
        assert c.execute("SELECT count(*) FROM managers").fetchone() == (1,)
    job_id = re.search(r"copy ([0-9a-f]{12}):", copied.stdout)
    assert job_id
    shown = run("show", job_id[1], "--items", "--json", env=env, store=store)
    items = [json.loads(line) for line in shown.stdout.splitlines()]
    assert sorted(i["source"] for i in items) == [str(src)] + [str(src / f"f{i}") for i in range(5)]


def test_jobs_shows_items_of_a_job_that_stopped_short(tmp_path: Path, env, store) -> None:
    """#19: a copy that did 2 small files of 3 and failed on the big one said a bare
    '0%' in ``jobs``; it says the items done beside the percent (100 %: its failed item is
    finished too, session 17)."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    (src / "a").write_text("a")
    (src / "b").write_text("b")
    with open(src / "c", "wb") as f:
        f.truncate(200 * 1024 * 1024)  # sparse: the bytes are all in the item left undone
    (dst / "src").mkdir(parents=True)
    (dst / "src" / "c").write_text("theirs")  # a conflict: c fails, nothing is overwritten
    assert run("copy", str(src), str(dst), "--plain", env=env, store=store).returncode == 1
    assert (dst / "src" / "c").read_text() == "theirs"
    out = run("jobs", env=env, store=store)
    assert out.returncode == 0, out.stderr
    row = out.stdout.splitlines()[1]
    assert "completed_with_errors" in row
    assert re.search(r"\b100% \(\d+/\d+ items\)", row), row


def test_jobs_lists_without_reading_the_jobs_results(tmp_path: Path, env, store) -> None:
    """``jobs`` read every job's result, which it never shows: a duplicates job's is the
    groups (10 MB of JSON for 300,000 files), and 31 of them took 28-33 s and 900 MB to
    list (1.8 s and 38 MB now). Shown here by a result that cannot be read (a BLOB, as a
    damaged store holds): a listing that read it left the job out with a warning."""
    job_id = _copied(tmp_path, "a", env, store)
    with sqlite3.connect(store) as db:
        db.execute("UPDATE jobs SET result = x'00ff' WHERE id = ?", (job_id,))
    for args in (("jobs",), ("jobs", "--json")):
        out = run(*args, env=env, store=store)
        assert out.returncode == 0 and job_id in out.stdout, (out.stdout, out.stderr)
        assert "not listed" not in out.stderr


def _finished_days_ago(store: str, job_id: str, days: float) -> None:
    """Age a finished job in the real store, as if it ended ``days`` ago."""
    with sqlite3.connect(store) as db:
        db.execute(
            "UPDATE jobs SET finished = ? WHERE id = ?", (time.time() - days * 86400, job_id)
        )


def _job_ids(env: dict[str, str], store: str) -> list[str]:
    out = run("jobs", "--json", env=env, store=store)
    assert out.returncode == 0, out.stderr
    return [json.loads(line)["id"] for line in out.stdout.splitlines()]


def _copied(tmp_path: Path, name: str, env: dict[str, str], store: str) -> str:
    """A finished copy job (its id); the copy lands in tmp_path/out-NAME."""
    src = tmp_path / name
    src.mkdir()
    (src / "f").write_text(name)
    out = run("copy", str(src), str(tmp_path / f"out-{name}"), "--json", env=env, store=store)
    assert out.returncode == 0, out.stderr
    return str(json.loads(out.stdout.splitlines()[-1])["job_id"])


def test_jobs_prune_by_age_and_by_id(tmp_path: Path, env, store) -> None:
    """#19: ``jobs prune`` forgets finished jobs older than an age (``--dry-run`` only
    says) or named by id, with their private files; the copies they made stay."""
    old, new = _copied(tmp_path, "old", env, store), _copied(tmp_path, "new", env, store)
    _finished_days_ago(store, old, 10)
    os.makedirs(f"{store}.d/{old}", exist_ok=True)
    (Path(f"{store}.d/{old}") / "walk.manifest").write_text("x")

    out = run("jobs", "prune", "--older-than", "7d", "--dry-run", env=env, store=store)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"would delete {old}  copy  completed")
    assert new not in out.stdout and _job_ids(env, store) == [old, new]

    out = run("jobs", "prune", "--older-than", "7d", env=env, store=store)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"deleted {old}  copy  completed")
    assert _job_ids(env, store) == [new]
    assert not os.path.exists(f"{store}.d/{old}")
    assert (tmp_path / "out-old" / "f").read_text() == "old"

    out = run("jobs", "prune", "--older-than", "7d", env=env, store=store)
    assert out.stdout == "no finished jobs to delete\n"
    out = run("jobs", "prune", new[:6], "--json", env=env, store=store)
    assert json.loads(out.stdout) == {"job_id": new, "status": "completed", "deleted": True}
    assert _job_ids(env, store) == []
    assert (tmp_path / "out-new" / "f").read_text() == "new"


async def test_jobs_prune_keeps_a_job_whose_undo_is_not_over(tmp_path: Path, env, store) -> None:
    """An undo reads its job's item log on every run: ``jobs prune`` keeps (by age) or
    refuses (by id) a job whose undo is not over, which once resumed into an empty log and
    completed having undone nothing more."""
    from parjobs.ops import UndoJob

    old = _copied(tmp_path, "old", env, store)
    _finished_days_ago(store, old, 10)
    async with parjobs.open_manager(store) as manager:
        undo = (await manager.submit(UndoJob(job=old), start=False)).id  # stored paused
    out = await trio.to_thread.run_sync(
        lambda: run("jobs", "prune", "--older-than", "7d", env=env, store=store)
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(
        f"kept {old}  copy  completed: cannot delete job {old}: its undo, job {undo}, is paused"
    ), out.stdout
    out = await trio.to_thread.run_sync(lambda: run("jobs", "prune", old, env=env, store=store))
    assert out.returncode == 2 and f"its undo, job {undo}, is paused" in out.stderr
    assert _job_ids(env, store) == [old, undo]


def test_an_empty_id_names_no_job(tmp_path: Path, env, store) -> None:
    """``parjobs undo "$ID"`` with ``$ID`` empty undid the store's only job ("" is a prefix
    of every id); ``jobs prune ''`` deleted it."""
    only = _copied(tmp_path, "only", env, store)
    for argv in (["undo", ""], ["jobs", "prune", ""], ["cancel", ""], ["show", ""]):
        out = run(*argv, env=env, store=store)
        assert out.returncode == 2 and "no job with id ''" in out.stderr, (argv, out)
    assert _job_ids(env, store) == [only]
    assert (tmp_path / "out-only" / "f").read_text() == "only"


def test_jobs_prune_refuses_bad_input_and_unfinished_jobs(tmp_path: Path, env, store) -> None:
    done = _copied(tmp_path, "a", env, store)
    (tmp_path / "b").mkdir()
    out = run(
        "copy", str(tmp_path / "b"), str(tmp_path / "out-b"), "--detach", env=env, store=store
    )
    assert out.returncode == 0, out.stderr
    queued = next(i for i in _job_ids(env, store) if i != done)
    cases = [
        (["jobs", "prune"], "give job ids or --older-than"),
        (["jobs", "prune", "--older-than", "3x"], "expected an age such as 30d"),
        (["jobs", "prune", done, queued], f"job {queued} is queued, not finished: nothing deleted"),
        (["jobs", "prune", "ffffffff"], "no job"),
    ]
    for argv, message in cases:
        out = run(*argv, env=env, store=store)
        assert out.returncode == 2, (argv, out)
        assert message in out.stderr, (argv, out.stderr)
        assert _job_ids(env, store) == [done, queued]


def test_finished_jobs_are_kept_30_days_by_default(tmp_path: Path, env, store) -> None:
    """#19: the store no longer grows forever: finished jobs older than 30 days (or
    $PARJOBS_RETENTION; 0 keeps them) are deleted when parjobs opens it."""
    old, new = _copied(tmp_path, "old", env, store), _copied(tmp_path, "new", env, store)
    _finished_days_ago(store, old, 31)
    _finished_days_ago(store, new, 29)
    assert _job_ids({**env, "PARJOBS_RETENTION": "0"}, store) == [old, new]
    out = run("jobs", env={**env, "PARJOBS_RETENTION": "soon"}, store=store)
    assert out.returncode == 2 and "PARJOBS_RETENTION: expected an age" in out.stderr
    assert _job_ids(env, store) == [new]
    assert _job_ids({**env, "PARJOBS_RETENTION": "28d"}, store) == []


def test_a_bad_numeric_setting_is_refused_before_anything_runs(
    small: Path, tmp_path: Path, env, store
) -> None:
    """$PARJOBS_LEASE_TIMEOUT, $PARJOBS_PG_CONNECT_TIMEOUT and $PARJOBS_DECODE_MEMORY that are
    not positive numbers were taken for their defaults without a word (the library still
    does: `parjobs._environ`); the CLI refuses them as it does $PARJOBS_RETENTION: exit 2,
    one line naming the variable, no store made, nothing copied."""
    dst = tmp_path / "dst"
    for name, bad in (
        ("PARJOBS_LEASE_TIMEOUT", "soon"),
        ("PARJOBS_LEASE_TIMEOUT", "-1"),
        ("PARJOBS_PG_CONNECT_TIMEOUT", "2.5"),
        ("PARJOBS_DECODE_MEMORY", "1GB"),
        ("PARJOBS_DECODE_MEMORY", "0"),
    ):
        out = run("copy", str(small), str(dst), env={**env, name: bad}, store=store)
        assert out.returncode == 2, (name, bad, out)
        assert out.stderr.strip().splitlines() == [
            f"parjobs: error: {name}: expected a positive "
            f"{'number' if name == 'PARJOBS_LEASE_TIMEOUT' else 'integer'}, got {bad!r}"
        ], out.stderr
        assert not dst.exists() and not os.path.exists(store)
    good = {**env, "PARJOBS_LEASE_TIMEOUT": "0.5", "PARJOBS_DECODE_MEMORY": " 12345 "}
    assert run("copy", str(small), str(dst), env=good, store=store).returncode == 0
    assert sorted(p.name for p in dst.iterdir()) == sorted(p.name for p in small.iterdir())


async def test_the_retention_keeps_a_resumable_job_whose_type_it_cannot_load(
    tmp_path: Path, env, store
) -> None:
    """A failed job past the retention whose job type this parjobs cannot load (a plug-in
    uninstalled; here a type only the tests register) is kept, and the command says so on
    stderr, since its cleanup cannot run: it was deleted uncleaned, its partial left for
    good. A process that loads the type (the built-in ones by their entry points) cancels
    and forgets it."""
    partial = tmp_path / "big.part"
    async with parjobs.open_manager(store) as manager:
        handle = await manager.submit(KeepsPartialJob(partial=str(partial)))
        assert await handle.wait() is JobStatus.FAILED
    _finished_days_ago(store, handle.id, 31)
    for _ in range(2):
        out = run("jobs", "--json", env=env, store=store)
        assert out.returncode == 0, out.stderr
        assert [json.loads(line)["id"] for line in out.stdout.splitlines()] == [handle.id]
        assert f"job {handle.id} (failed) is past the retention but kept" in out.stderr
        assert "unknown job type 'test-keeps-partial'" in out.stderr
        assert partial.exists()
    async with parjobs.open_manager(store, retention=86400) as manager:
        assert await manager.list_jobs() == []
    assert not partial.exists()


async def test_show_offers_no_resume_for_a_job_an_undo_took(tmp_path: Path, env, store) -> None:
    """A job completed with errors (one a retry may pass) is offered a resume by ``show``
    until an undo takes it; then not (``resume`` refuses it: undone)."""
    async with parjobs.open_manager(store) as manager:
        handle = await manager.submit(CountJob(n=10, log=str(tmp_path / "l"), fail_every=3))
        assert await handle.wait() is JobStatus.COMPLETED_WITH_ERRORS
        shown = run("show", handle.id, env=env, store=store)
        assert re.search(r"^resume ", shown.stdout, re.M), shown.stdout + shown.stderr
        undo = await manager.undo(handle.id)
        assert await undo.wait() is JobStatus.COMPLETED
    shown = run("show", handle.id, env=env, store=store)
    assert shown.returncode == 0, shown.stderr
    assert "completed_with_errors" in shown.stdout
    assert not re.search(r"^resume ", shown.stdout, re.M), shown.stdout


async def test_jobs_prune_keeps_a_resumable_job_whose_type_it_cannot_load(
    tmp_path: Path, env, store
) -> None:
    """A failed job whose job type this parjobs cannot load (a plug-in uninstalled; here a
    type only the tests register): ``jobs prune`` cancelled it without its cleanup, which
    it could not run, and forgot it, its partial left for good. It refuses it now, named
    (exit 2, nothing deleted) or by age (a ``kept`` line); its private directory stays with
    it. A process that loads the type deletes it, cleaned up."""
    partial = tmp_path / "big.part"
    async with parjobs.open_manager(store) as manager:
        handle = await manager.submit(KeepsPartialJob(partial=str(partial)))
        assert await handle.wait() is JobStatus.FAILED
        private = Path(manager.job_dir(handle.id))
    private.mkdir(parents=True, exist_ok=True)
    (private / "manifest").write_bytes(b"what it walked")
    out = run("jobs", "prune", handle.id, env=env, store=store)
    assert out.returncode == 2, out.stdout + out.stderr
    assert f"cannot delete job {handle.id}: it is failed, and its cleanup" in out.stderr
    assert "unknown job type 'test-keeps-partial'" in out.stderr
    _finished_days_ago(store, handle.id, 10)
    out = run("jobs", "prune", "--older-than", "7d", env=env, store=store)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"kept {handle.id}  test-keeps-partial  failed: cannot delete")
    assert _job_ids(env, store) == [handle.id]
    assert partial.exists() and (private / "manifest").exists()
    async with parjobs.open_manager(store) as manager:
        await manager.delete(handle.id)
        assert await manager.list_jobs() == []
    assert not partial.exists() and not private.exists()


async def test_a_job_whose_type_cannot_load_is_given_up_by_a_cancel_then_pruned(
    tmp_path: Path, env, store
) -> None:
    """The way out for a job whose plug-in is gone for good, as ``jobs prune`` says when it
    refuses it: ``cancel`` gives it up (its partial stays: no cleanup can run), then
    ``jobs prune`` deletes it and its private directory."""
    partial = tmp_path / "big.part"
    async with parjobs.open_manager(store) as manager:
        handle = await manager.submit(KeepsPartialJob(partial=str(partial)))
        assert await handle.wait() is JobStatus.FAILED
        private = Path(manager.job_dir(handle.id))
    out = run("jobs", "prune", handle.id, env=env, store=store)
    assert out.returncode == 2 and "or cancel it first to give it up" in out.stderr, out.stderr
    assert run("cancel", handle.id, env=env, store=store).returncode == 0
    private.mkdir(parents=True, exist_ok=True)
    (private / "manifest").write_bytes(b"what it walked")
    out = run("jobs", "prune", handle.id, env=env, store=store)
    assert out.returncode == 0, out.stderr
    assert _job_ids(env, store) == [] and partial.exists() and not private.exists()


async def test_a_cancel_whose_cleanup_cannot_run_says_so(tmp_path: Path, env, store) -> None:
    """A paused job whose job type this parjobs cannot load (a plug-in uninstalled; here a
    type only the tests register), cancelled: its cleanup cannot run, and the record said
    only ``cancelled``, the partial it kept for its resume left unsaid. The record's error
    (``show``, ``show --json``, so the API and the dashboard) and the cancel's own line say
    that it was cancelled without its cleanup, why, and what may remain; exit 0 as before."""
    partial = tmp_path / "big.part"
    async with parjobs.open_manager(store) as manager:
        handle = await manager.submit(KeepsPartialJob(partial=str(partial), hang=True))
        with trio.fail_after(30):
            while not partial.exists():
                await trio.sleep(0.01)
        await manager.pause(handle.id)
        assert await handle.wait() is JobStatus.PAUSED
    said = (
        "cancelled without its cleanup, which cannot run here: unknown job type "
        "'test-keeps-partial'"
    )
    out = run("cancel", handle.id, env=env, store=store)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"job {handle.id} is {said}"), out.stdout
    assert "files it kept for a resume may remain" in out.stdout
    shown = json.loads(run("show", "--json", handle.id, env=env, store=store).stdout)
    assert shown["status"] == "cancelled" and shown["error"].startswith(said), shown
    assert partial.exists()


async def test_a_cancel_whose_cleanup_cannot_run_keeps_the_failure(
    tmp_path: Path, env, store
) -> None:
    """A failed job cancelled so: its error says the cleanup did not run, then the failure
    it had (``--json`` carries it too). One whose cleanup runs records no such error."""
    partial = tmp_path / "big.part"
    async with parjobs.open_manager(store) as manager:
        handle = await manager.submit(KeepsPartialJob(partial=str(partial)))
        assert await handle.wait() is JobStatus.FAILED
        other = await manager.submit(KeepsPartialJob(partial=str(tmp_path / "other.part")))
        assert await other.wait() is JobStatus.FAILED
        await manager.cancel(other.id)
        assert (await manager.get(other.id)).error == "OSError: [Errno 28] No space left on device"
    out = run("--json", "cancel", handle.id, env=env, store=store)
    assert out.returncode == 0, out.stderr
    said = json.loads(out.stdout)
    assert said["status"] == "cancelled", said
    assert said["error"].startswith("cancelled without its cleanup, which cannot run here")
    assert said["error"].endswith("; its error before: OSError: [Errno 28] No space left on device")
    assert partial.exists() and not (tmp_path / "other.part").exists()
