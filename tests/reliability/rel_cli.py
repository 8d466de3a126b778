"""The ``parjobs`` command line, slowed down and logging every task it runs (a test child).

Usage: ``python rel_cli.py ARGS...`` runs ``parjobs ARGS...``. From the environment:

    REL_TASK_SLEEP  seconds slept before every sync task (spreads a run over time)
    REL_TASK_LOG    a file: one line ``<pid> <time> <stage> <index> <outcome>`` is appended
                    for every sync task that ended (from its worker thread, one write each)
    REL_TASK_HOLD   a path: while it exists, sync tasks wait before they start (until the
                    job is paused or cancelled): the test decides when the job moves on
    REL_DUPES_RUN_FILES  files per content-id run of dupes (`RUN_FILES`): small, so that a
                    small tree still makes several tasks to interleave; and the command's
                    prescan lists the tree but computes no content id, so every run is a
                    task (a run whose ids it computed is answered without one)

The second-runner matrix (`test_rel_second_runner.py`) counts from the log how many times each
task ran, and in which process. Nothing here is imported by the product.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from rel_child import _slow_down

import parjobs._executor as executor_mod


def _hold(path: str) -> None:
    """Tasks wait while ``path`` exists, unless their job is being interrupted."""
    real_run_one = executor_mod._run_one
    real_run_group = executor_mod._run_group

    def wait(interrupter: Any) -> None:
        while os.path.exists(path) and interrupter.reason is None:
            time.sleep(0.01)

    def run_one(work: Any, interrupter: Any) -> Any:
        wait(interrupter)
        return real_run_one(work, interrupter)

    def run_group(group: Any, interrupter: Any) -> Any:
        wait(interrupter)
        return real_run_group(group, interrupter)

    executor_mod._run_one = run_one
    executor_mod._run_group = run_group


def _log_tasks(path: str) -> None:
    """Append a line per finished sync task to ``path`` (O_APPEND: whole lines, any thread)."""
    pid = os.getpid()

    def note(work: Any, outcome: Any) -> None:
        # A bundle: a line per task it finished (those it left run, and log, on their own).
        covers = work.tc.covers
        indices = [work.tc.index] if covers is None else covers
        now, stage, status = time.time(), work.stage.name, outcome.status.name
        text = "".join(f"{pid} {now:.6f} {stage} {i} {status}\n" for i in indices)
        if not text:
            return
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)

    real_run_one = executor_mod._run_one
    real_run_group = executor_mod._run_group
    grouped = threading.local()  # a group runs some tasks through _run_one: log them once

    def run_one(work: Any, interrupter: Any) -> Any:
        outcome = real_run_one(work, interrupter)
        if not getattr(grouped, "on", False):
            note(work, outcome)
        return outcome

    def run_group(group: Any, interrupter: Any) -> Any:
        grouped.on = True
        try:
            done = real_run_group(group, interrupter)
        finally:
            grouped.on = False
        for work, outcome in done:
            note(work, outcome)
        return done

    executor_mod._run_one = run_one
    executor_mod._run_group = run_group


if __name__ == "__main__":
    if os.environ.get("REL_TASK_LOG"):
        _log_tasks(os.environ["REL_TASK_LOG"])
    _slow_down(float(os.environ.get("REL_TASK_SLEEP", "0") or 0), 0.0)
    if os.environ.get("REL_TASK_HOLD"):
        _hold(os.environ["REL_TASK_HOLD"])
    if os.environ.get("REL_DUPES_RUN_FILES"):
        import parjobs.ops._duplicates as duplicates_mod
        from parjobs.ops._prescan import Prescan

        duplicates_mod.RUN_FILES = int(os.environ["REL_DUPES_RUN_FILES"])
        real_init = Prescan.__init__

        def no_ids(self: Prescan, paths: Sequence[str], min_size: int) -> None:
            real_init(self, paths, min_size)
            self._ids_stop[0] = 1  # (before its thread starts)

        Prescan.__init__ = no_ids  # type: ignore[method-assign]
    from parjobs.cli import main

    sys.argv = ["parjobs", *sys.argv[1:]]
    sys.exit(main())
