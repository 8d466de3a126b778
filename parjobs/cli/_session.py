"""Where the job store lives, opening a manager on it, and how to name a job to resume."""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Unpack, cast

from .. import _environ
from .._pgschema import is_url
from .._util import state_dir
from ._app import parse_age
from ._errors import CliError
from ._remote import SERVER, Server

if TYPE_CHECKING:  # the core loads when a command opens a manager, not to parse the command
    from .._config import ConfigOptions, ManagerConfig
    from .._manager import JobManager


def default_store() -> str:
    """``$XDG_STATE_HOME/parjobs/jobs.sqlite`` (``~/.local/state/parjobs/jobs.sqlite``)."""
    return os.path.join(state_dir(), "jobs.sqlite")


@dataclasses.dataclass(frozen=True)
class Store:
    """The store a command uses; ``explicit`` when it is not the default one. With
    ``--server`` it is that server (``path`` its URL): the commands go through it."""

    path: str
    explicit: bool
    server: Server | None = None

    @classmethod
    def choose(cls, option: str | None) -> Store:
        """The server of ``--server`` (see `_remote`), else ``--store``, then
        ``$PARJOBS_STORE``, then `default_store`: a file path, or a ``postgresql://`` URL
        (kept as given)."""
        server = SERVER.get()
        if server is not None:
            return cls(server.url, explicit=server.explicit, server=server)
        given = option or os.environ.get("PARJOBS_STORE") or None
        default = default_store()
        if given is None:
            return cls(default, explicit=False)
        if is_url(given):  # a PostgreSQL store (docs/stores.md)
            return cls(given, explicit=True)
        path = os.path.abspath(os.path.expanduser(given))
        return cls(path, explicit=path != default)

    @property
    def exists(self) -> bool:
        return self.server is not None or is_url(self.path) or os.path.exists(self.path)

    def command(self, *words: str) -> str:
        """A shell command line for this store, e.g. ``parjobs resume ID --store X``."""
        if self.server is not None:
            given = ("--server", self.path) if self.explicit else ()
            return shlex.join(["parjobs", *given, *words])
        line = shlex.join(["parjobs", *words])
        return f"{line} --store {shlex.quote(self.path)}" if self.explicit else line

    def resume_command(self, job_id: str) -> str:
        return self.command("resume", job_id)


def import_job_types() -> None:
    """Register every job type installed (the ``parjobs.job_types`` entry points), so stored
    jobs can be loaded, listed and resumed."""
    from .._job import load_job_types

    load_job_types()


def cluster_config(args: argparse.Namespace) -> ManagerConfig | None:
    """The manager's configuration with ``--cluster`` and ``--cluster-path-map`` (else
    ``$PARJOBS_CLUSTER`` and ``$PARJOBS_CLUSTER_PATH_MAP``); None without a cluster. Bad
    values are a `CliError`."""
    cluster = getattr(args, "cluster", None) or os.environ.get("PARJOBS_CLUSTER") or None
    if cluster is None:
        return None
    text = getattr(args, "cluster_path_map", None) or os.environ.get("PARJOBS_CLUSTER_PATH_MAP")
    from .._cluster_remote import parse_path_map
    from .._config import ManagerConfig

    try:
        return ManagerConfig(cluster=cluster, cluster_path_map=parse_path_map(text or ""))
    except ValueError as exc:
        raise CliError(str(exc)) from None


#: How long the CLI keeps finished jobs (completed, cancelled, ...) by default.
DEFAULT_RETENTION = "30d"


def retention() -> float | None:
    """Seconds after which the CLI's managers delete finished jobs: ``$PARJOBS_RETENTION``
    (an age; ``0`` keeps them forever), else `DEFAULT_RETENTION`. A bad value is a
    `CliError`."""
    text = os.environ.get("PARJOBS_RETENTION") or DEFAULT_RETENTION
    try:
        seconds = parse_age(text)
    except ValueError as exc:
        raise CliError(f"PARJOBS_RETENTION: {exc}") from None
    return seconds or None


@asynccontextmanager
async def manager_for(
    store: Store, config: ManagerConfig | None = None, **options: Unpack[ConfigOptions]
) -> AsyncIterator[JobManager]:
    """A manager on ``store``, creating its directory first; for a server, its client.
    Finished jobs older than `retention` are deleted as it opens (and hourly while it
    runs), unless ``options`` say otherwise."""
    if store.server is not None:
        from ._client import open_remote  # httpx: only loaded with --server

        async with open_remote(store.server) as remote:
            # The client answers the part of JobManager's API that the commands use.
            yield cast("JobManager", remote)
        return
    directory = os.path.dirname(store.path)
    try:
        if not is_url(store.path):
            os.makedirs(directory, mode=0o700, exist_ok=True)  # private, as XDG asks
    except OSError as exc:
        raise CliError(f"cannot create the store directory {directory}: {exc.strerror}") from None
    options.setdefault("retention", retention())
    try:
        _environ.check()
    except ValueError as exc:
        raise CliError(str(exc)) from None
    from .._manager import open_manager
    from . import EXIT_FOLLOWS

    if EXIT_FOLLOWS and not is_url(store.path):
        from .._store import leave_open_for_exit

        leave_open_for_exit()

    async with open_manager(store.path, config, **options) as manager:
        yield manager
