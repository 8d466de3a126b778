"""Reliability suite settings: ``slow`` tests run only with PARJOBS_SLOW=1 (or ``-m slow``).

``pytest_addoption`` works only in the rootdir conftest or plugins, so the switch is an
environment variable: ``PARJOBS_SLOW=1 pytest tests/reliability``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from rel_helpers import Outage, OutageStore, PgOutage, clone_tree, mixed_tree, short_busy_timeout

import parjobs


def _slow_enabled(config: pytest.Config) -> bool:
    if os.environ.get("PARJOBS_SLOW", "") not in ("", "0"):
        return True
    markexpr = config.getoption("markexpr", "") or ""
    return "slow" in markexpr and "not slow" not in markexpr


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _slow_enabled(config):
        return
    skip = pytest.mark.skip(reason="slow: set PARJOBS_SLOW=1 (or -m slow) to run it")
    for item in items:
        if "slow" in item.keywords and "reliability" in str(item.path):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tree_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The mixed tree every crash scenario starts from (built once; clone it to change it)."""
    root = tmp_path_factory.mktemp("template") / "src"
    mixed_tree(root)
    return root


@pytest.fixture
def source_tree(tree_template: Path, tmp_path: Path) -> Path:
    """A private copy of the mixed tree (for jobs that consume their sources)."""
    dest = tmp_path / "src"
    clone_tree(tree_template, dest)
    return dest


@pytest.fixture
def outage_store(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[OutageStore]:
    """A SQLite store whose busy timeout is 50 ms (PostgreSQL with ``"postgresql"`` as the
    param), and jobs that pause after 0.2 s of failed checkpoint writes (real time:
    `_context` measures it so)."""
    monkeypatch.setattr(parjobs._context, "PAUSE_AFTER_FAILING", 0.2)
    log, flag = str(tmp_path / "log"), str(tmp_path / "flag")
    if getattr(request, "param", "sqlite") == "postgresql":
        server = request.getfixturevalue("pg_server")
        monkeypatch.setenv("PARJOBS_JOB_FILES", str(tmp_path / "job-files"))
        db = server.create_db()
        store = OutageStore(server.url(db), log, flag, lambda: PgOutage(server, db))
    else:
        short_busy_timeout(monkeypatch, 0.05)
        path = str(tmp_path / "jobs.sqlite")
        store = OutageStore(path, log, flag, lambda: Outage(path))
    yield store
    for outage in store.outages:
        outage.end()
