"""What the command-line tests share: the CLI run as a real process (forked from a warm
interpreter: `_forkcli`), and checks of its output."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import xxhash
from _forkcli import Forked
from _forkcli import run as forked_run

CLI = [sys.executable, "-m", "parjobs.cli"]
RESUME = re.compile(r"parjobs resume [0-9a-f]+(?: --store \S+)?")


def run(
    *args: str, env: dict[str, str], store: str | None = None
) -> subprocess.CompletedProcess[str]:
    extra = ["--store", store] if store else []
    return forked_run([*args, *extra], env=env)


STARTED: list[Forked] = []


def start(*args: str, env: dict[str, str], store: str) -> Forked:
    """A CLI process in the background (killed after the test if it is still running)."""
    proc = Forked(["--store", store, *args], env=env)
    STARTED.append(proc)
    return proc


def run_command_line(line: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run a printed ``parjobs ...`` command line with this interpreter."""
    words = shlex.split(line)
    assert words[0] == "parjobs"
    return forked_run(words[1:], env=env)


def digests(root: Path) -> dict[str, str]:
    """Relative path -> content digest ("dir" for directories) of everything under root."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            out[os.path.relpath(os.path.join(dirpath, name), root)] = "dir"
        for name in filenames:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = xxhash.xxh3_128_hexdigest(f.read())
    return out


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("parjobs: error: "), proc.stderr
    return lines[0]


SLOW_COPY = ("--workers", "1", "--durable", "--verify")
