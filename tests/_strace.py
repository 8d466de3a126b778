"""Run a real process under ``strace`` and read which system calls it made."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import parjobs


def traced(
    tmp_path: Path, args: list[str], calls: str, *, paths: bool = False, cwd: Path | None = None
) -> list[str]:
    """The lines ``strace -f`` printed for the ``calls`` (``-e trace=``) of ``python3 ARGS``
    (this tree's parjobs), every process and thread, in order; ``paths``: each descriptor
    named by its path (``-y``). Skips where strace is missing or cannot trace; fails the
    test when the process fails."""
    if shutil.which("strace") is None:
        pytest.skip("strace is not installed")
    trace = tmp_path / "trace"
    strace = ["strace", "-f", *(["-y"] if paths else []), "-qq", "-o", str(trace)]
    env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(parjobs.__file__))}
    proc = subprocess.run(
        [*strace, "-e", f"trace={calls}", sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=cwd,
    )
    if proc.returncode != 0 and "ptrace" in proc.stderr:
        pytest.skip(f"strace cannot trace here: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return trace.read_text().splitlines()
