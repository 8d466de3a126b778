"""One Dask `LocalCluster` of 2 worker processes for the whole session (it takes seconds to
start), and a client on it. Skipped when Dask is not installed."""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Iterator
from typing import Any

import pytest

sys.path.insert(0, os.path.dirname(__file__))  # cluster_jobs, for workers and children too

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="session")
def dask_client() -> Iterator[Any]:
    here = os.path.dirname(__file__)
    root = os.path.dirname(os.path.dirname(here))
    path = os.environ.get("PYTHONPATH", "")
    # Worker processes import parjobs and the test jobs by name.
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (root, here, path) if p)
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=2, processes=True, dashboard_address=":0"
    )
    client = distributed.Client(cluster, set_as_default=False)
    try:
        yield client
    finally:
        # Nothing of a test depends on a graceful end of the workers, which took 1-8 s of
        # the last test's teardown on a loaded machine (each nanny asks its worker to close
        # and waits): kill the worker processes, then close (0.2 s), leaving none behind.
        workers = [p for p in multiprocessing.active_children() if p.name.startswith("Dask")]
        client.close()
        for proc in workers:
            proc.kill()
        cluster.close(timeout=30)
