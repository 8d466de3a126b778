"""What every file-operation scenario of one ``python -m benchmarks`` run shares."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from ._common import Rounds, load_average, machine_note, pressure
from ._data import DataSets
from ._tools import CACHE_NOTES


@dataclasses.dataclass
class Session:
    """Settings and shared state of one benchmark run.

    ``workers`` are the parallel worker counts to try (``[8, 16]``); ``scratch`` is a
    directory on the data's filesystem for destinations and stores; ``shared`` carries
    figures from one scenario to another (the dispatcher's resume numbers)."""

    mode: str  # "full", "quick" or "tiny"
    data: DataSets
    rounds: int
    warmup: int
    workers: list[int]
    cold: bool
    cold_reason: str
    scratch: Path
    can_drop_caches: bool = False
    charts: bool = True
    #: The cases to run (``--cases``: by name, e.g. the cli scenario's ``dupes``); None: all.
    cases: frozenset[str] | None = None
    shared: dict[str, Any] = dataclasses.field(default_factory=dict)

    def wants(self, case: str) -> bool:
        """Whether to run the case named ``case`` (a family: ``big`` runs every ``big-*``)."""
        return self.cases is None or case in self.cases or case.split("-")[0] in self.cases

    @property
    def quick(self) -> bool:
        return self.mode != "full"

    @property
    def cache_states(self) -> list[str]:
        return ["cached", "cold-ish"] if self.cold else ["cached"]

    def note(self) -> str:
        """A chart footer: the machine and the mode."""
        return f"{machine_note()}; {self.mode} mode, {self.rounds} rounds"

    def case(
        self,
        rounds: Rounds,
        baseline: str,
        *,
        data_set: dict[str, Any],
        cache: str | None = None,
        skipped: dict[str, str] | None = None,
        loadavg_before: list[float] | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """The JSON of one measured case: settings, every contender, ratios to ``baseline``."""
        out: dict[str, Any] = {"data_set": data_set}
        if cache is not None:
            out["cache"] = cache
            out["cache_note"] = CACHE_NOTES[cache]
        out.update(
            rounds=self.rounds,
            warmup_rounds=extra.pop("warmup_rounds", self.warmup),
            baseline=baseline,
            loadavg_before=loadavg_before,
            loadavg_after=load_average(),
            pressure_after=pressure(),
            skipped=skipped or {},
            **extra,
            contenders=rounds.to_json(baseline=baseline),
        )
        return out
