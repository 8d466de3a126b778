"""Fixtures shared by the operations' tests."""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from parjobs.ops import _hashing, _walk


@pytest.fixture(params=["c", "python"])
def scan_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test on the C path of `_fastscan` (directory listing, content ids) and on the
    Python fallback that does the same without it: both must give the same results."""
    if request.param == "python":
        monkeypatch.setattr(_hashing, "fastscan", None)
        monkeypatch.setattr(_walk, "_scan", _walk.scan_dir)
        monkeypatch.setattr(_walk, "_walk_dir", None)
    elif _hashing.fastscan is None:
        pytest.skip("the C extension _fastscan is not built")
    return str(request.param)


@pytest.fixture
def private_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """HOME and XDG_DATA_HOME inside tmp_path: nothing can reach the real home or trash."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / "data"))
    return home


@pytest.fixture
def bind_mount(tmp_path: Path) -> Iterator[Callable[[Path, Path], None]]:
    """``mount(src, dst)``: bind-mount directory ``src`` on ``dst`` (both in tmp_path: one
    filesystem, as a home directory bound into a chroot), unmounted after the test; skips
    where mounting is not permitted."""
    made: list[str] = []

    def mount(src: Path, dst: Path) -> None:
        proc = subprocess.run(["mount", "--bind", str(src), str(dst)], capture_output=True)
        if proc.returncode:
            pytest.skip(f"cannot bind-mount here: {proc.stderr.decode().strip()}")
        made.append(str(dst))

    yield mount
    for path in reversed(made):
        subprocess.run(["umount", "-l", path], capture_output=True)


@pytest.fixture
def mount_fs() -> Iterator[Callable[..., Path]]:
    """``mount(fstype, *options)``: a new filesystem (a small tmpfs, a ramfs) mounted on a
    directory of its own, unmounted and removed after the test; skips when not root or
    where mounting is not permitted."""
    made: list[str] = []

    def mount(fstype: str, *options: str) -> Path:
        if os.geteuid() != 0:
            pytest.skip(f"mounting a {fstype} needs root")
        mnt = tempfile.mkdtemp(prefix=f"parjobs-{fstype}-")
        proc = subprocess.run(["mount", "-t", fstype, *options, fstype, mnt], capture_output=True)
        if proc.returncode:
            os.rmdir(mnt)
            pytest.skip(f"cannot mount a {fstype} here: {proc.stderr.decode().strip()}")
        made.append(mnt)
        return Path(mnt)

    yield mount
    for mnt in reversed(made):
        subprocess.run(["umount", "-l", mnt], check=True)
        os.rmdir(mnt)
