"""ManagerConfig: how a manager runs jobs (workers, limits, queues, retention), validated once."""

from __future__ import annotations

import dataclasses
import os
import typing
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any, TypedDict

#: Default worker tasks per job.
DEFAULT_WORKERS = 8

#: Queue capacities in the spirit of compute=1, maintenance=5, download=10; ``default`` gets
#: ``max_running``. A job type names its queue with the ``queue`` class attribute.
DEFAULT_QUEUES: Mapping[str, int] = MappingProxyType(
    {"compute": 1, "maintenance": 5, "download": 10}
)


def default_lanes(io: int | None = None, cpu: int | None = None) -> dict[str, int]:
    """Thread limits per lane: ``io`` (many; I/O waits) and ``cpu`` (one per core)."""
    cores = os.cpu_count() or 2
    return {"io": io or max(16, 4 * cores), "cpu": cpu or cores}


@typing.final
@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class ManagerConfig:
    """How a manager runs jobs; shared by `open_manager`, `BlockingManager` and the CLI.

    Args:
        workers: worker tasks per job (1 to 1024; started as tasks arrive).
        max_running: how many jobs run at once in this manager (the global limit).
        lanes: thread limits overriding those of `default_lanes` (``io``, ``cpu``, or new
            lanes).
        queues: named queue capacities on top of `DEFAULT_QUEUES` (``default`` is
            ``max_running`` unless given here).
        retention: seconds after which ended jobs are deleted when a manager opens, and
            hourly while it is open (None: kept forever; the CLI keeps them 30 days).
        shutdown_grace: on close, how long pausing may take before jobs are stopped
            outright (still checkpointed).
        resume_interrupted: on open, resume the jobs that dead processes left interrupted.
        cluster: run cluster-capable tasks on a Dask cluster: a scheduler address
            (``tcp://host:8786``), ``local:N`` (a local cluster of N worker processes,
            ``local:NxT`` with T threads each) or a ``distributed.Client`` the caller owns
            (see docs/scale-out.md). None: every task runs here.
        cluster_path_map: with ``cluster``, pairs ``(here, there)``: a path under ``here``
            on this host is ``there`` on the workers (shared storage mounted elsewhere).

    Invalid values raise `ValueError` (`TypeError` for a non-int ``workers``) at once.
    """

    workers: int = DEFAULT_WORKERS
    max_running: int = 4
    lanes: Mapping[str, int] = dataclasses.field(default_factory=lambda: MappingProxyType({}))
    queues: Mapping[str, int] = dataclasses.field(default_factory=lambda: MappingProxyType({}))
    retention: float | None = None
    shutdown_grace: float = 10.0
    resume_interrupted: bool = False
    cluster: Any = None
    #: (kept as a tuple of pairs, validated)
    cluster_path_map: Sequence[tuple[str, str]] | Mapping[str, str] = ()

    def __post_init__(self) -> None:
        from ._dispatch import check_workers

        check_workers(self.workers)  # 1..MAX_WORKERS
        if self.cluster is not None or self.cluster_path_map != ():
            # The cluster lane (and pickle) load only for a configuration that names it.
            from ._cluster import check_cluster
            from ._cluster_remote import check_path_map

            object.__setattr__(self, "cluster", check_cluster(self.cluster))
            object.__setattr__(self, "cluster_path_map", check_path_map(self.cluster_path_map))
        if self.max_running < 1:
            raise ValueError(f"max_running must be >= 1, got {self.max_running}")
        # Frozen copies: the caller's dicts may change afterwards.
        object.__setattr__(self, "lanes", MappingProxyType(dict(self.lanes or {})))
        object.__setattr__(self, "queues", MappingProxyType(dict(self.queues or {})))
        for lane, n in self.lane_limits().items():
            if n < 1:
                raise ValueError(f"lane {lane!r} needs at least 1 thread, got {n}")
        for queue, n in self.queue_capacities().items():
            if n < 1:
                raise ValueError(f"queue {queue!r} needs a capacity of at least 1, got {n}")
        if self.retention is not None and self.retention < 0:
            raise ValueError(f"retention must be >= 0 seconds, got {self.retention}")

    def lane_limits(self) -> dict[str, int]:
        """Thread limit per lane: `default_lanes` with ``lanes`` applied."""
        return {**default_lanes(), **self.lanes}

    def queue_capacities(self) -> dict[str, int]:
        """Capacity per queue: `DEFAULT_QUEUES`, ``default`` = ``max_running``, ``queues``."""
        return {**DEFAULT_QUEUES, "default": self.max_running, **self.queues}

    def replace(self, **changes: object) -> ManagerConfig:
        """A copy with ``changes`` applied (validated again)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


class ConfigOptions(TypedDict, total=False):
    """The fields of `ManagerConfig` as keyword arguments (``open_manager(path, workers=4)``)."""

    workers: int
    max_running: int
    lanes: Mapping[str, int] | None
    queues: Mapping[str, int] | None
    retention: float | None
    shutdown_grace: float
    resume_interrupted: bool
    cluster: Any
    cluster_path_map: Sequence[tuple[str, str]] | Mapping[str, str]


def make_config(config: ManagerConfig | None, options: ConfigOptions) -> ManagerConfig:
    """``config`` (default `ManagerConfig()`) with the keyword ``options`` applied."""
    base = config if config is not None else ManagerConfig()
    if not options:
        return base
    changes = {
        k: (v if v is not None else {}) if k in ("lanes", "queues") else v
        for k, v in options.items()
    }
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]
