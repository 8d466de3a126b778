"""The docs stay true: ```python blocks run, and the statuses table matches the code."""

from __future__ import annotations

import pathlib
import re

import pytest
from _forkcli import run as forked_run

import parjobs

DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs"
FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def _pages_with_code():
    return sorted(p for p in DOCS.glob("*.md") if FENCE.search(p.read_text()))


@pytest.mark.parametrize("page", _pages_with_code(), ids=lambda p: p.name)
def test_python_blocks_in_docs_run(page, tmp_path):
    """All ```python blocks of a page run in order as one program (```py-fragment blocks are
    excerpts and are not run)."""
    code = "\n\n".join(FENCE.findall(page.read_text()))
    script = tmp_path / f"{page.stem}.py"
    script.write_text(code)
    # `python script.py` in a process of its own, forked from the suite's warm interpreter
    # (tests/_forkcli.py: ~0.5 s of CPU less a page than a fresh interpreter).
    proc = forked_run([], module=str(script), cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, f"{page.name} failed:\n{proc.stdout}\n{proc.stderr}"


def test_transitions_table_matches_code():
    text = (DOCS / "concepts.md").read_text()
    table = text.split("<!-- transitions-table")[1].split("\n\n")[0]
    documented = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 2 and cells[0].startswith("`"):
            targets = set(re.findall(r"`(\w+)`", cells[1]))
            documented[cells[0].strip("`")] = targets
    actual = {s.value: {t.value for t in ts} for s, ts in parjobs.TRANSITIONS.items()}
    assert documented == actual


def test_every_status_is_defined_in_concepts():
    text = (DOCS / "concepts.md").read_text()
    for status in parjobs.JobStatus:
        assert f"| `{status.value}` |" in text
