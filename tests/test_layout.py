"""The tests' own layout: pytest imports test files by their bare name (no packages under
tests/), so two files of one name in different folders stop the whole run at collection."""

from __future__ import annotations

import collections
from pathlib import Path


def test_test_file_names_are_unique() -> None:
    names = collections.Counter(p.name for p in Path(__file__).parent.rglob("test_*.py"))
    assert [name for name, n in names.items() if n > 1] == []
