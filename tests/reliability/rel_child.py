"""Child process of the reliability suite: run (or resume) one job, optionally dying on purpose.

Usage: ``python rel_child.py CONFIG.json``. The config (written by `rel_helpers.spawn`) says::

    store        the job store
    action       "submit" (the job below) or "resume" (the one resting job of the store)
    job          {"type": registered job type name, "spec": its spec}
    workers      worker tasks per job; lanes: thread limits per lane
    task_sleep   seconds slept before every sync task (spreads a run over time)
    check_sleep  seconds slept in every TaskContext.check() (slows chunked copies)
    chunk_size   CopyJob/MoveJob chunk size (files larger than it leave resumable partials)
    group_size   CopyItem.group_size and MoveItem.group_size: files per call into the C
                 group path
    store_timeout  SQLite busy timeout of the store (seconds)
    user         run as this uid (and gid) from the start of the job on: the interpreter
                 starts as root (its binary may live where other users cannot read it), then
                 drops its privileges before any job file is touched
    hook         {"kind": ..., "n": N, "under": path}: SIGKILL this process on the Nth call of
                 a chosen function (see `_install_hook`), reached without editing parjobs

It prints ``READY <job id>`` once the job is submitted or resumed, and ``STATUS <status>``
when the job rests. Nothing here is imported by the product.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from typing import Any

import trio

import parjobs
import parjobs._executor as executor_mod
import parjobs._store as store_mod
import parjobs._task as task_mod
import parjobs.ops  # registers the job types
import parjobs.ops._copy as copy_mod
import parjobs.ops._copyfile as copyfile_mod
import parjobs.ops._fs as fs_mod
import parjobs.ops._move as move_mod
import parjobs.ops._smallfiles as smallfiles_mod
import parjobs.ops._transfer as transfer_mod


def _at(path: Any, dir_fd: int | None) -> bytes:
    """The path ``path`` names, relative to ``dir_fd`` (a job reaches its sources and
    destinations through directory fds): resolved through /proc."""
    path = os.fsencode(path)
    if dir_fd is None:
        return path
    return os.path.join(os.fsencode(os.readlink(f"/proc/self/fd/{dir_fd}")), path)


def die() -> None:
    """What a kill -9 does: no finally blocks, no flush, no atexit."""
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(60)  # pragma: no cover - never reached


class _Counter:
    def __init__(self, n: int) -> None:
        self.n = n
        self.calls = 0

    def hit(self) -> bool:
        self.calls += 1
        return self.calls == self.n


class _KillingConnection:
    """Forwards to a sqlite3 connection; dies after ``after`` statements (mid-transaction)."""

    def __init__(self, conn: Any, after: int) -> None:
        self._conn = conn
        self._left = after

    def _tick(self) -> None:
        self._left -= 1
        if self._left <= 0:
            die()

    def execute(self, *args: Any) -> Any:
        result = self._conn.execute(*args)
        self._tick()
        return result

    def executemany(self, *args: Any) -> Any:
        result = self._conn.executemany(*args)
        self._tick()
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


def _install_hook(hook: dict[str, Any]) -> None:
    kind, counter = hook["kind"], _Counter(int(hook["n"]))
    under = os.fsencode(hook.get("under") or "/")

    if kind == "checkpoint":
        # The Nth checkpoint that records completions (of ``stage``, if given) dies after
        # BEGIN IMMEDIATE and the first INSERT of its transaction: nothing of it may count.
        real_checkpoint = store_mod.JobStore.checkpoint

        stage = hook.get("stage")

        def checkpoint(self: Any, job_id: str, batch: Any, holder: str | None = None) -> None:
            wanted = stage in batch.ranges if stage else bool(batch.ranges)
            if wanted and counter.hit():
                self._conn = _KillingConnection(self._conn, 2)
            real_checkpoint(self, job_id, batch, holder)

        store_mod.JobStore.checkpoint = checkpoint  # type: ignore[method-assign]
    elif kind in ("group-after", "group-mid"):
        # The C group path: die once the Nth call put its files in place (none of them is
        # checkpointed yet), or between two files of that call.
        real_group = smallfiles_mod.copy_small_files

        def group(items: Any, **kwargs: Any) -> Any:
            if not counter.hit():
                return real_group(items, **kwargs)
            if kind == "group-mid" and len(items) > 1:
                real_group(items[: len(items) // 2], **kwargs)
                die()
            real_group(items, **kwargs)
            die()

        smallfiles_mod.copy_small_files = group  # where copy_group looks it up
    elif kind in ("rename-before", "rename-after"):
        # copy_file's final step: temporary (written, closed) -> real name. Files go through
        # copy_file only: the C group path, which renames in C, is off.
        smallfiles_mod.fastcopy = None
        real_rename = fs_mod.rename_noreplace

        def rename(*args: Any, **kwargs: Any) -> None:
            hit = counter.hit()
            if hit and kind == "rename-before":
                die()
            real_rename(*args, **kwargs)
            if hit:
                die()

        copyfile_mod.rename_noreplace = rename  # type: ignore[attr-defined]  # where _copyfile looks it up
    elif kind in ("os-rename-before", "os-rename-after", "replace-before", "replace-after"):
        name = "rename" if kind.startswith("os-rename") else "replace"
        real = getattr(os, name)

        def renamer(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
            hit = _at(src, kwargs.get("src_dir_fd")).startswith(under) and counter.hit()
            if hit and kind.endswith("before"):
                die()
            real(src, dst, *args, **kwargs)
            if hit:
                die()

        setattr(os, name, renamer)
    elif kind in ("unlink-before", "unlink-after"):
        # A move's removal of a source file, after its copy is in place.
        real_unlink = os.unlink

        def unlink(path: Any, *args: Any, **kwargs: Any) -> None:
            hit = not args and _at(path, kwargs.get("dir_fd")).startswith(under) and counter.hit()
            if hit and kind == "unlink-before":
                die()
            real_unlink(path, *args, **kwargs)
            if hit:
                die()

        os.unlink = unlink
        real_unlink_files = smallfiles_mod.unlink_files

        def unlink_files(sources: list[smallfiles_mod.Source]) -> list[int]:
            """The move's group path removes its sources in one call into C: the same kill
            points, before or after the Nth source removed."""
            for k, (path, *rest) in enumerate(sources):
                src_dir_fd: Any = rest[7] if len(rest) > 7 else None  # the source's directory
                if _at(path, src_dir_fd).startswith(under) and counter.hit():
                    real_unlink_files(sources[: k + (kind == "unlink-after")])
                    die()
            return real_unlink_files(sources)

        smallfiles_mod.unlink_files = unlink_files  # where the move's group path looks it up
    elif kind == "job-dir-removal":
        # The Nth removal of a job's private directory: the job's final status (and final
        # progress) is in the store, its manifest still on disk.
        import parjobs._runner as runner_mod

        real_remove = runner_mod._remove_tree

        def remove_tree(path: str) -> None:
            if counter.hit():
                die()
            real_remove(path)

        runner_mod._remove_tree = remove_tree
    elif kind == "requeue":
        # A bundle past `BUNDLE_MAX_SECONDS` while tasks wait hands its rest back as one
        # bundle: die as the Nth such bundle starts (the bundle before it booked, perhaps
        # checkpointed), its files not copied yet. The group path's files are slowed (10 ms
        # each) so that bundles outlast 50 ms.
        real_run = task_mod.Bundle.run
        real_copy = smallfiles_mod.copy_small_files

        def bundle_run(self: Any, tc: Any) -> Any:
            if getattr(self, "requeued", False) and counter.hit():
                die()
            done = real_run(self, tc)
            for task in done.left:
                if isinstance(task, task_mod.Bundle):
                    task.requeued = True  # type: ignore[attr-defined]
            return done

        def slow_copy(items: Any, **kwargs: Any) -> Any:
            time.sleep(0.01 * len(items))
            return real_copy(items, **kwargs)

        task_mod.Bundle.run = bundle_run  # type: ignore[method-assign]
        smallfiles_mod.copy_small_files = slow_copy
    elif kind == "task":
        # Dies as the Nth task starts (whatever the operation).
        real_run_one = executor_mod._run_one

        def run_one(work: Any, interrupter: Any) -> Any:
            for _ in _members(work):  # (a bundle's tasks count too)
                if counter.hit():
                    die()
            return real_run_one(work, interrupter)

        executor_mod._run_one = run_one
        real_run_group = executor_mod._run_group

        def run_group(group: Any, interrupter: Any) -> Any:  # tasks run in groups count too
            for _ in group:
                if counter.hit():
                    die()
            return real_run_group(group, interrupter)

        executor_mod._run_group = run_group
    else:
        raise SystemExit(f"unknown hook {kind!r}")


def _members(work: Any) -> list[Any]:
    """The tasks ``work`` runs: a `Bundle`'s, else its own."""
    task = work.task
    return list(task.tasks) if isinstance(task, task_mod.Bundle) else [task]


def _slow_down(task_sleep: float, check_sleep: float) -> None:
    if task_sleep:
        real_run_one = executor_mod._run_one

        def run_one(work: Any, interrupter: Any) -> Any:
            time.sleep(task_sleep * len(_members(work)))  # (per task of a bundle)
            return real_run_one(work, interrupter)

        executor_mod._run_one = run_one
        real_run_group = executor_mod._run_group

        def run_group(group: Any, interrupter: Any) -> Any:
            time.sleep(task_sleep * len(group))
            return real_run_group(group, interrupter)

        executor_mod._run_group = run_group
    if check_sleep:
        real_check = task_mod.TaskContext.check

        def check(self: Any) -> None:
            time.sleep(check_sleep)
            real_check(self)

        task_mod.TaskContext.check = check  # type: ignore[method-assign]


async def main(config: dict[str, Any]) -> None:
    kwargs: dict[str, Any] = {"workers": config.get("workers", 4)}
    if config.get("lanes"):
        kwargs["lanes"] = config["lanes"]
    async with parjobs.open_manager(config["store"], **kwargs) as manager:
        if config["action"] == "submit":
            cls = parjobs.registered_job_types()[config["job"]["type"]]
            handle = await manager.submit(cls.from_spec(config["job"]["spec"]))
        else:
            resting = [
                parjobs.JobStatus.INTERRUPTED,
                parjobs.JobStatus.PAUSED,
                parjobs.JobStatus.COMPLETED_WITH_ERRORS,
                parjobs.JobStatus.FAILED,
            ]
            (info,) = await manager.list_jobs(resting)
            handle = await manager.resume(info.id)
        print("READY", handle.id, flush=True)
        status = await handle.wait()
        print("STATUS", status.value, flush=True)


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        cfg = json.load(f)
    if cfg.get("chunk_size"):
        transfer_mod.CHUNK_SIZE = int(cfg["chunk_size"])
    if cfg.get("group_size"):
        copy_mod.CopyItem.group_size = int(cfg["group_size"])
        move_mod.MoveItem.group_size = int(cfg["group_size"])
    if cfg.get("store_timeout"):
        real_open = store_mod.JobStore.open.__func__  # type: ignore[attr-defined]
        timeout = float(cfg["store_timeout"])
        store_mod.JobStore.open = classmethod(  # type: ignore[method-assign,assignment]
            lambda cls, path, timeout=timeout: real_open(cls, path, timeout=timeout)
        )
    _slow_down(float(cfg.get("task_sleep", 0)), float(cfg.get("check_sleep", 0)))
    if cfg.get("hook"):
        _install_hook(cfg["hook"])
    if cfg.get("user") is not None:
        # Modules imported lazily later must be loaded while the interpreter's own files are
        # still readable.
        import encodings.ascii
        import encodings.latin_1
        import encodings.utf_8
        import importlib.metadata  # parjobs loads it only to read entry points
        import shutil
        import traceback

        del encodings, importlib, shutil, traceback
        os.setgroups([])
        os.setgid(int(cfg["user"]))
        os.setuid(int(cfg["user"]))
    trio.run(main, cfg)
