"""The parser: every command's help, its examples, defaults and exit codes."""

from __future__ import annotations

import pytest

from parjobs.cli import main
from parjobs.cli._app import parse

# -- parser --------------------------------------------------------------------------------

COMMANDS = ["copy", "move", "delete", "hash", "dupes", "thumbnails"]
COMMANDS += ["jobs", "show", "pause", "resume", "cancel", "demo"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_help_shows_an_example(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert "example:" in out and f"parjobs {command}" in out


def test_thumbnails_help_shows_the_default_size(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["thumbnails", "--help"]) == 0
    assert "(default: 256)" in " ".join(capsys.readouterr().out.split())


def test_top_level_help_lists_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "exit codes" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [
        ["trash", "list", "--store", "s.sqlite", "--json"],
        ["trash", "restore", "x", "--store", "s.sqlite"],
        ["jobs", "prune", "--store", "s.sqlite", "--json"],
        ["--store", "s.sqlite", "trash", "list"],
    ],
)
def test_global_options_are_taken_after_a_subcommands_own_subcommand(argv: list[str]) -> None:
    """Global options are accepted before or after the command (docs/cli.md): ``jobs prune``
    took them, ``trash list`` and ``trash restore`` refused them ("unrecognized
    arguments", exit 2)."""
    assert parse(argv).store == "s.sqlite"


def test_jobs_prune_takes_server_options_after_its_subcommand_too() -> None:
    """``jobs prune`` goes through a server like ``jobs``; ``--server`` and ``--token-file``
    after ``prune`` were refused ("unrecognized arguments", exit 2) while ``--store`` was
    taken there."""
    args = parse(["jobs", "prune", "--older-than", "7d", "--server", "u:1", "--token-file", "t"])
    assert (args.server, args.token_file, args.older_than) == ("u:1", "t", 7 * 86400)
