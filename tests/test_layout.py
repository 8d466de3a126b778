"""The tests' own layout: pytest imports test files by their bare name (no packages under
tests/), so two files of one name in different folders stop the whole run at collection."""

from __future__ import annotations

import collections
from pathlib import Path


def test_test_file_names_are_unique() -> None:
    names = collections.Counter(p.name for p in Path(__file__).parent.rglob("test_*.py"))
    assert [name for name, n in names.items() if n > 1] == []


def test_no_test_imports_a_conftest_by_name() -> None:
    """Helpers are imported by bare name too, so ``from conftest import ADMIN`` found
    whichever conftest.py was imported first: ``pytest tests/server/... tests/cli/...`` stopped
    at collection. Shared helpers live in uniquely named modules (``tests/server/_server.py``,
    ``_trees``, ``_jobs``...), and so do file names other than conftest.py and test files."""
    here = Path(__file__).parent
    importers = [
        str(p.relative_to(here))
        for p in here.rglob("*.py")
        if any(
            line.startswith(("from conftest import", "import conftest"))
            for line in p.read_text().splitlines()
        )
    ]
    assert importers == []
    helpers = collections.Counter(
        p.name for p in here.rglob("*.py") if not p.name.startswith("test_")
    )
    assert [
        n for n, k in helpers.items() if k > 1 and n not in ("conftest.py", "__init__.py")
    ] == []
