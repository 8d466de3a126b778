"""Fixtures of the command-line tests: a private environment and store per test, small,
big and sparse trees, and no CLI process left running after a test."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(__file__))  # _cli, by bare name

from _cli import STARTED, run


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """An environment whose default store, trash and caches live in tmp_path."""
    out = dict(os.environ)
    out.pop("PARJOBS_STORE", None)
    out.update(
        XDG_STATE_HOME=str(tmp_path / "state"),
        XDG_DATA_HOME=str(tmp_path / "data"),
        XDG_CACHE_HOME=str(tmp_path / "cache"),
    )
    return out


@pytest.fixture
def store(tmp_path: Path) -> str:
    return str(tmp_path / "jobs.sqlite")


@pytest.fixture(autouse=True)
def _no_leftover_processes():
    yield
    while STARTED:
        proc = STARTED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("small") / "tree"
    for d in ("a", "a/b", "c"):
        (root / d).mkdir(parents=True)
    for i in range(12):
        (root / ("a/b", "a", "c")[i % 3] / f"f{i}.txt").write_bytes(os.urandom(100 + i * 500))
    return root


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Large enough that a verified, durable, one-worker copy takes a good second."""
    root = tmp_path_factory.mktemp("big") / "tree"
    for d in range(4):
        sub = root / f"d{d}"
        sub.mkdir(parents=True)
        for i in range(40):
            (sub / f"small{i}.bin").write_bytes(os.urandom(2000 + i))
        for i in range(6):
            (sub / f"large{i}.bin").write_bytes(os.urandom(3 * 1024 * 1024))
    return root


@pytest.fixture(scope="module")
def sparse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A file of 8 GiB taking no disk space: hashing it reads zeros for seconds, so another
    process has time to start and steer the job."""
    path = tmp_path_factory.mktemp("sparse") / "zeros.img"
    with open(path, "wb") as f:
        f.truncate(8 * 1024**3)
    if path.stat().st_blocks * 512 > 1024**2:
        path.unlink()
        pytest.skip("this file system does not support sparse files")
    return path


@pytest.fixture(scope="module")
def store_with_a_job(small: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = str(tmp_path_factory.mktemp("store") / "jobs.sqlite")
    env = {**os.environ, "XDG_STATE_HOME": os.path.dirname(path)}
    assert run("hash", str(small / "c"), env=env, store=path).returncode == 0
    return path
