"""The docs stay true: ```python blocks run, the statuses table matches the code, the README
opens with the house's two commands, and every command docs/cli.md names exists."""

from __future__ import annotations

import pathlib
import re

import pytest
from _forkcli import run as forked_run

import parjobs

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
SH_FENCE = re.compile(r"^```sh\n(.*?)^```", re.S | re.M)
#: Commands that take a subcommand of their own (``parjobs jobs prune``, ``trash list``).
WITH_SUBCOMMANDS = ("jobs", "trash")


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


def test_readme_opens_with_install_and_demo_then_the_test_suite() -> None:
    """The house rules: the README's first command installs and runs the demo, its second
    installs the test dependencies and runs the suite, and CI runs exactly that one."""
    first, second = (
        block.strip() for block in SH_FENCE.findall((ROOT / "README.md").read_text())[:2]
    )
    assert first == "python3 -m pip install -e . && python3 -m parjobs demo"
    assert second == "python3 -m pip install -q -e '.[test]' && python3 -m pytest -q -n 2"
    assert (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1] == second


def _cli_commands_named(text: str) -> set[tuple[str, str]]:
    """``(command, word after it)`` of every ``parjobs COMMAND ...`` in code (inline or sh)."""
    spans = re.findall(r"`([^`\n]+)`", text)
    spans += [line for block in SH_FENCE.findall(text) for line in block.splitlines()]
    return {
        (m.group(1), m.group(2) or "")
        for span in spans
        for m in re.finditer(r"(?<![\w/.-])parjobs ([a-z]+)(?: ([a-z]+)\b)?", span)
    }


def test_every_command_in_cli_md_exists_and_every_command_is_there(capsys) -> None:
    from parjobs.cli import main
    from parjobs.cli._app import COMMANDS

    named = _cli_commands_named((DOCS / "cli.md").read_text())
    assert {command for command, _ in named} == set(COMMANDS)
    for command, word in sorted(named):
        argv = [command, word] if command in WITH_SUBCOMMANDS and word else [command]
        assert main([*argv, "--help"]) == 0, argv
        assert f"usage: parjobs {' '.join(argv)}" in capsys.readouterr().out


@pytest.mark.parametrize(
    "page", [*sorted(DOCS.glob("*.md")), ROOT / "README.md"], ids=lambda p: p.name
)
def test_code_fences_close_and_hold_no_heading(page) -> None:
    """Every ``` fence is closed, and no ``## `` heading sits inside one (a section pasted
    into the errors' tree block rendered as code)."""
    inside = None
    for number, line in enumerate(page.read_text().splitlines(), 1):
        if line.startswith("```"):
            inside = None if inside else number
        elif inside and line.startswith("## "):
            raise AssertionError(f"{page.name}:{number}: heading inside the fence of line {inside}")
    assert inside is None, f"{page.name}: the fence of line {inside} is never closed"
