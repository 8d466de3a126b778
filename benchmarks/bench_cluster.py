"""The cluster lane (issue #17): ``python -m benchmarks.bench_cluster [--quick]``.

1. **Slow storage, local against a cluster.** Copy 2,000 small files (4 KiB, 20 folders,
   seeded) when every file open costs 20 ms (the slow-storage scenario's injected latency,
   `benchmarks.bench_slow_storage.injected_latency`, installed in the Dask worker processes
   too). The baseline runs locally with 16 workers (the ``io`` lane raised to 32 threads);
   the contender sends the same job to a `LocalCluster` of 2 processes x 8 threads
   (``-w 16``: 16 groups in flight). Timed: the whole ``open_manager`` block (the cluster is
   started once, before the rounds; the manager's bridge connects in every round).
2. **Dispatch overhead per item** through the cluster lane: 5,000 no-op cluster tasks
   (1,000 in quick mode) on the same cluster against the local threads. Wall time per item
   is what a task that does nothing costs end to end; *manager CPU per item* is what bounds a
   single manager whatever the number of hosts (docs/scale-out.md).

On one 2-core machine the cluster can only match the local run (the same cores, the same
sleeps): this measures what the lane costs, not what more hosts bring; docs/scale-out.md
derives that from these numbers. Results go to ``benchmarks/results/<date>-<host>.json``
(scenario ``cluster``; ``-quick`` file in quick mode).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

import parjobs
from parjobs.ops._copy import CopyJob

from ._cluster_tasks import NoopJob, install_latency
from ._common import (
    ROOT,
    Stopwatch,
    Timing,
    configure_output,
    load_average,
    log,
    run_rounds,
    temp_dir,
    write_results,
)
from ._tools import checked_copy
from .bench_slow_storage import LANES, LATENCY, injected_latency

FILES, FOLDERS, SIZE = 2000, 20, 4096
NOOPS = 5000
BASELINE = "local, 16 workers"
CLUSTER = "LocalCluster 2 processes x 8 threads, -w 16"


def make_tree(root: Path, files: int) -> dict[str, int]:
    rng = random.Random(17)
    for i in range(files):
        folder = root / f"d{i % FOLDERS:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{i:05d}.bin").write_bytes(rng.randbytes(SIZE))
    return {"files": files, "bytes": files * SIZE, "folders": FOLDERS}


def _run(store: Path, job: parjobs.Job, cluster: Any) -> Timing:
    async def main() -> None:
        async with parjobs.open_manager(store, workers=16, lanes=LANES, cluster=cluster) as manager:
            handle = await manager.submit(job)
            if await handle.wait() is not parjobs.JobStatus.COMPLETED:
                raise RuntimeError(f"{job}: {await manager.errors(handle.id, limit=3)}")

    sw = Stopwatch()
    trio.run(main)
    timing = sw.stop()
    for suffix in ("", "-wal", "-shm"):
        (store.parent / (store.name + suffix)).unlink(missing_ok=True)
    return timing


def bench(quick: bool, rounds: int, work: Path) -> dict[str, Any]:
    import distributed

    files = FILES // 4 if quick else FILES
    noops = NOOPS // 5 if quick else NOOPS
    src = work / "src"
    info = make_tree(src, files)
    # Workers import parjobs and this module by name.
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p
    )
    log("[cluster] starting a LocalCluster of 2 processes x 8 threads")
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=8, processes=True, dashboard_address=":0"
    )
    client = distributed.Client(cluster, set_as_default=False)
    try:
        client.run(install_latency)
        store = work / "bench.sqlite"

        def copy(where: Any, name: str) -> Callable[[], Timing]:
            def run(dst: Path) -> Timing:
                job = CopyJob(sources=[str(src)], destination=str(dst))
                with injected_latency():
                    return _run(store, job, where)

            return checked_copy(run, name, work, (info["files"], info["bytes"]), prefix="dst")

        log(f"[cluster] copy {files} files of {SIZE} B, {LATENCY * 1e3:.0f} ms per file open")
        load0 = load_average()
        copies = run_rounds(
            {BASELINE: copy(None, BASELINE), CLUSTER: copy(client, CLUSTER)},
            rounds,
            warmup=1,
            items=files,
        )
        log(f"[cluster] dispatch overhead: {noops} no-op tasks")
        noop = NoopJob(n=noops)
        overhead = run_rounds(
            {
                "local threads, -w 16": lambda: _run(store, noop, None),
                "cluster lane, -w 16": lambda: _run(store, noop, client),
            },
            rounds,
            warmup=1,
            items=noops,
        )
    finally:
        client.close()
        cluster.close()
    return {
        "what": f"copy {files} files of {SIZE} B with {LATENCY * 1e3:.0f} ms injected per file "
        "open (here and in the Dask workers); no-op tasks for the per-item overhead",
        "timed": "the whole open_manager block (manager CPU only: workers are other processes)",
        "machine_loaded": load_average(),
        "loadavg_before": load0,
        "data_set": info,
        "ideal_s": {
            "one thread": round(files * LATENCY, 3),
            "16 threads": round(files * LATENCY / 16, 3),
        },
        "copy": {"baseline": BASELINE, "contenders": copies.to_json(baseline=BASELINE)},
        "overhead": {
            "baseline": "local threads, -w 16",
            "contenders": overhead.to_json(baseline="local threads, -w 16"),
        },
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_cluster")
    p.add_argument("--quick", action="store_true", help="500 files, 1,000 no-ops, 2 rounds")
    p.add_argument("--rounds", type=int, help="measured rounds (default 3; quick 2)")
    p.add_argument("--results-dir", type=Path, help="where the JSON goes")
    args = p.parse_args(argv)
    rounds = args.rounds or (2 if args.quick else 3)
    configure_output(args.results_dir, images=False, tag="quick" if args.quick else "")
    with temp_dir() as work:
        data = bench(args.quick, rounds, work)
    path = write_results("cluster", data)
    log(json.dumps({k: data[k] for k in ("copy", "overhead")}, indent=1)[:4000])
    log(f"[cluster] -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
