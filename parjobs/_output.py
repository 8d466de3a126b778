"""The lines process tasks write, as the manager's event stream carries them: `OutputLine`,
and `OUTPUT_SINK`, where the current run sends them. Apart from `parjobs._process` so the
manager and its event stream name them without loading process tasks (a command that runs
none does not pay for their module)."""

from __future__ import annotations

import contextvars
import dataclasses
from collections.abc import Callable


@dataclasses.dataclass(frozen=True, slots=True)
class OutputLine:
    """One line a process task's program wrote (``text``: without its newline, decoded as
    UTF-8 with undecodable bytes escaped), as published on the manager's event stream
    (``EventKind.OUTPUT``): which task (``index``, ``label``) and which stream."""

    index: int
    label: str
    stream: str
    text: str


#: Where the process tasks of the current run send their lines: the manager sets it for
#: each run of a job (its event stream); unset, lines go nowhere.
OUTPUT_SINK: contextvars.ContextVar[Callable[[OutputLine], None] | None] = contextvars.ContextVar(
    "parjobs_output_sink", default=None
)
