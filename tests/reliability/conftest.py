"""Reliability suite settings: ``slow`` tests run only with PARJOBS_SLOW=1 (or ``-m slow``).

``pytest_addoption`` works only in the rootdir conftest or plugins, so the switch is an
environment variable: ``PARJOBS_SLOW=1 pytest tests/reliability``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from rel_helpers import clone_tree, mixed_tree


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
