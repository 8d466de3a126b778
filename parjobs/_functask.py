"""`FunctionTask`: a plain blocking function as a task. Apart from `_task` so that a command,
whose jobs define their own tasks, does not build this dataclass's methods at start-up
(``parjobs.FunctionTask`` loads it on first use)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from ._task import Task, TaskContext


@dataclasses.dataclass(slots=True)
class FunctionTask(Task[Any]):
    """Adapt a plain blocking function into a task: ``FunctionTask(i, fn, args)``.

    ``fn`` receives the `TaskContext` as keyword ``tc`` when ``pass_context`` is true.
    """

    index: int
    fn: Callable[..., Any]
    args: tuple[Any, ...] = ()
    name: str = ""
    cost: int = 0
    pass_context: bool = False

    @property
    def weight(self) -> int:
        return self.cost

    def label(self) -> str:
        return self.name or f"task {self.index}"

    def run(self, tc: TaskContext) -> Any:
        if self.pass_context:
            return self.fn(*self.args, tc=tc)
        return self.fn(*self.args)
