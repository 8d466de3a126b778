"""setup.py's `BuildExt`: a reinstall reuses the C extensions built next to their sources
when they are newer than every file they are built from, and compiles again when one of
those changed. Built in a copy of the sources, never in the tree under test."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OPS = ROOT / "parjobs" / "ops"


def _copy_sources(dest: Path) -> None:
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, dest / name)
    ops = dest / "parjobs" / "ops"
    shutil.copytree(OPS / "vendor", ops / "vendor")
    for path in [*OPS.glob("*.c"), *OPS.glob("*.h"), *OPS.glob("_fast*.so")]:
        shutil.copy2(path, ops / path.name)


def _build(root: Path) -> str:
    out = root / "out"
    proc = subprocess.run(
        [sys.executable, "setup.py", "build_ext", "-b", str(out), "-t", str(root / "tmp")],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_a_rebuild_reuses_fresh_extensions_and_compiles_a_stale_one(tmp_path: Path) -> None:
    built = {Path(p).name.split(".")[0]: p for p in glob.glob(str(OPS / "_fast*.so"))}
    if set(built) != {"_fastcopy", "_fastscan"}:
        pytest.skip("the C extensions are not built here")
    _copy_sources(tmp_path)
    ops = tmp_path / "parjobs" / "ops"
    # The sources as they are after a `git pull` that changed _fastcopy.c: its build is
    # older than its source, _fastscan's newer than all of its inputs.
    now = os.stat(ops / "_fastcopy.c").st_mtime
    for path in ops.rglob("*"):
        os.utime(path, (now - 100, now - 100))
    for name in ("setup.py", "pyproject.toml", "README.md"):
        os.utime(tmp_path / name, (now - 100, now - 100))
    os.utime(ops / "_fastcopy.c", (now, now))
    (fastscan,) = ops.glob("_fastscan*.so")
    os.utime(fastscan, (now, now))

    log = _build(tmp_path)

    assert f"reusing {fastscan}" in log
    assert "reusing" not in log.replace(f"reusing {fastscan}", "")
    out = tmp_path / "out" / "parjobs" / "ops"
    assert (out / fastscan.name).read_bytes() == fastscan.read_bytes()
    (copy,) = out.glob("_fastcopy*.so")  # compiled again: a new file, importable
    assert copy.stat().st_mtime > now
