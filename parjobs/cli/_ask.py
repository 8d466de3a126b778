"""``--on-conflict ask``: a question on the terminal, beside the live view, for each
destination file that exists: overwrite, skip or rename it, or the same for every later one.

The live view stops drawing while a question is open and takes over again after the answer.
Answers are read from standard input (a terminal, or a pipe: a script can answer too); at the
end of input, this conflict and every later one are skipped (nothing is overwritten that
nobody agreed to).
"""

from __future__ import annotations

import sys
from typing import TextIO

import trio

from ..ops._transfer import Answer, Choice, Conflict
from . import _format as fmt
from ._render import Renderer

_CHOICES: dict[str, Choice] = {"o": "overwrite", "s": "skip", "r": "rename"}
HELP = "[o]verwrite, [s]kip, [r]ename; a capital letter (O, S, R): the same for all"


def parse_answer(text: str) -> Choice | Answer | None:
    """``o``/``s``/``r`` (or the words) for this conflict; a capital letter, or the word
    followed by ``all`` (``skip all``), for every later one too; None for anything else."""
    words = text.split()
    if not 1 <= len(words) <= 2 or words[1:] not in ([], ["all"]):
        return None
    word = words[0]
    choice = _CHOICES.get(word[0].lower())
    if choice is None or word.lower() not in (word[0].lower(), choice):
        return None
    if word[0].isupper() or len(words) == 2:
        return Answer(choice, for_all=True)
    return choice


class ConflictPrompt:
    """The ``ask`` callback of a copy run from the command line (see the module docstring)."""

    def __init__(
        self, renderer: Renderer, *, stdin: TextIO | None = None, out: TextIO | None = None
    ) -> None:
        self.renderer = renderer
        self.stdin = stdin or sys.stdin
        self.out = out or sys.stderr

    def question(self, conflict: Conflict) -> str:
        c = conflict
        return (
            f"exists: {c.destination} ({fmt.size(c.destination_size)}, "
            f"{fmt.timestamp(c.destination_mtime)})\n"
            f"  from: {c.source} ({fmt.size(c.source_size)}, {fmt.timestamp(c.source_mtime)})\n"
            f"  {HELP}? "
        )

    async def __call__(self, conflict: Conflict) -> Choice | Answer:
        with self.renderer.suspended():
            text = self.question(conflict)
            while True:
                self.out.write(text)
                self.out.flush()
                line = await trio.to_thread.run_sync(self.stdin.readline, abandon_on_cancel=True)
                if not line:  # end of input: nobody will answer
                    self.out.write(
                        "\nno answer (end of input): skipping this and every later one\n"
                    )
                    self.out.flush()
                    return Answer("skip", for_all=True)
                answer = parse_answer(line)
                if answer is not None:
                    return answer
                text = f"  {HELP}? "
