"""DuplicatesJob finds the same groups as fdupes and jdupes, the tools a person would compare
it with (each test is skipped, saying why, where its tool is not installed)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

import parjobs
from parjobs.ops._duplicates import DuplicatesJob

DOCS = Path("/usr/share/doc")


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _tree(root: Path) -> None:
    """Cases both tools and the job treat alike: no hard links, empty or special files (there
    the tools' defaults differ from each other), many small files in groups, large files that
    differ only between the sampled blocks, and, where present, real documentation twice."""
    big = os.urandom(300 * 1024)
    changed = bytearray(big)
    changed[150_000] ^= 0xFF  # same content id as big, different full hash
    for rel in ("a/big", "b/big", "c/d/big"):
        _write(root / rel, big)
    _write(root / "c/changed", bytes(changed))
    for i in range(150):  # enough small candidates for several groups of tasks
        data = os.urandom(1 + i * 37)
        _write(root / f"s/{i:03}", data)
        if i % 3:
            _write(root / f"t/{i:03}-copy", data)
        if i % 7 == 0:
            _write(root / f"t/u/{i:03}-copy2", data)
        _write(root / f"v/{i:03}-same-size", os.urandom(1 + i * 37))
    _write(root / "x/text1", b"hello world\n")
    _write(root / "x/text2", b"hello world\n")
    os.symlink(root / "a/big", root / "a/link-to-big")  # never followed by anyone
    if DOCS.is_dir():
        packages = sorted(p for p in DOCS.iterdir() if p.is_dir() and not p.is_symlink())[:40]
        for copy in ("doc1", "doc2"):
            for package in packages:
                shutil.copytree(package, root / copy / package.name, symlinks=True)


def _tool_groups(tool: str, root: Path) -> set[frozenset[str]]:
    # Empty files: the job leaves them out (min_size 1), as jdupes does; fdupes needs -n.
    flags = ["-rqn"] if tool == "fdupes" else ["-rq"]
    out = subprocess.run(
        [tool, *flags, str(root)], check=True, capture_output=True, timeout=600
    ).stdout
    groups = set()
    for block in os.fsdecode(out).split("\n\n"):
        paths = [line for line in block.splitlines() if line]
        if paths:
            groups.add(frozenset(paths))
    return groups


# Each tool checks one path of the walk and the content ids: C (`_fastscan`) or Python.
@pytest.mark.parametrize(
    ("tool", "scan_path"), [("fdupes", "python"), ("jdupes", "c")], indirect=["scan_path"]
)
async def test_same_groups_as_the_tool(store_path, tmp_path, tool, scan_path):
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed (apt-get install {tool}): nothing to compare with")
    root = tmp_path / "t"
    _tree(root)
    async with parjobs.open_manager(store_path) as manager:
        handle = await manager.submit(DuplicatesJob(paths=[str(root)]))
        result = await handle.result()
    ours = {frozenset(g["paths"]) for g in result["groups"]}
    theirs = _tool_groups(tool, root)
    assert len(ours) > 100 and result["failed"] == 0
    assert ours == theirs, (
        sorted(map(sorted, ours - theirs))[:5],
        sorted(map(sorted, theirs - ours))[:5],
    )
    assert frozenset(str(root / p) for p in ("a/big", "b/big", "c/d/big")) in ours
    assert not any(str(root / "c/changed") in g for g in ours)
