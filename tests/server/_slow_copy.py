"""Imported by the `parjobs serve` child process of the dashboard tests: every file that
`CopyJob` copies first waits `LATENCY` seconds in its worker thread, as a slow network share
would (the same injection as benchmarks/bench_slow_storage.py), so a copy of a few hundred
small files runs long enough to be watched, paused and resumed from a browser."""

from __future__ import annotations

import functools
import os
import time
from typing import Any

import parjobs.ops._copy

# Where CopyJob finds its one-file copy: parjobs.ops._transfer since the ops redesign (#13),
# parjobs.ops._copy before it.
_FILE_HOME: Any = getattr(parjobs.ops, "_transfer", None) or parjobs.ops._copy
if not hasattr(_FILE_HOME, "copy_file"):
    import parjobs.ops._transfer as _FILE_HOME

LATENCY = float(os.environ.get("PARJOBS_TEST_COPY_LATENCY", "0.05"))

_real_file = _FILE_HOME.copy_file
_real_group = parjobs.ops._smallfiles.copy_small_files


@functools.wraps(_real_file)
def _slow_file(*args: Any, **kwargs: Any) -> Any:
    time.sleep(LATENCY)
    return _real_file(*args, **kwargs)


@functools.wraps(_real_group)
def _slow_group(items: Any, **kwargs: Any) -> Any:
    time.sleep(LATENCY * len(items))
    return _real_group(items, **kwargs)


_FILE_HOME.copy_file = _slow_file
parjobs.ops._smallfiles.copy_small_files = _slow_group  # where copy_group looks it up
