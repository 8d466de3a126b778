"""The small-file copy in process, work tree against work tree (#13, #18 target 2):
``python -m benchmarks.ab_trees TREE [TREE...] [--rounds N] [--files N]``.

Each round copies the same tree of small files (1-8 KiB in 100 folders, seed 15; 10,000
by default) from a tmpfs to a tmpfs inside one process per tree: ``open_manager`` on a fresh
store, a ``CopyJob``, timed from submit to its end, wall and CPU (``time.process_time``,
every thread). The trees take turns round by round, so a drifting machine load hits each
alike; medians are printed per tree. A TREE is a checkout with its C extension built
(``python3 setup.py build_ext --inplace``): an older build is ignored by the code and every
file then takes the Python path. Not part of ``python -m benchmarks``.

E.g. ``git worktree add --detach /work/wt-base c269182`` (build it), then
``python -m benchmarks.ab_trees /work/wt-base /work/main --rounds 5``.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
from pathlib import Path

#: Run inside each tree's own interpreter (its PYTHONPATH): one copy, wall and CPU printed.
ONE_COPY = """
import os, shutil, sys, time, trio, parjobs
from parjobs.ops import CopyJob
src, work = sys.argv[1], sys.argv[2]
os.makedirs(work)
async def main():
    async with parjobs.open_manager(os.path.join(work, "jobs.sqlite")) as m:
        c0, t0 = time.process_time(), time.perf_counter()
        h = await m.submit(CopyJob(sources=[src], destination=os.path.join(work, "dst")))
        status = await h.wait()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    assert status is parjobs.JobStatus.COMPLETED, status
    print(wall, cpu)
trio.run(main)
shutil.rmtree(work)
"""


def make_tree(root: Path, files: int) -> None:
    """The source: ``files`` files of 1-8 KiB in 100 folders (as bench_serve's)."""
    done = root / f".made-{files}"
    if done.exists():
        return
    rng = random.Random(15)
    for i in range(files):
        folder = root / f"d{i % 100:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{i:05d}.bin").write_bytes(rng.randbytes(rng.randint(1024, 8192)))
    done.write_text("")


def one_copy(tree: str, src: Path, work: Path) -> tuple[float, float]:
    env = dict(os.environ, PYTHONPATH=tree)
    out = subprocess.run(
        [sys.executable, "-c", ONE_COPY, str(src), str(work)],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    return float(out[-2]), float(out[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trees", nargs="+")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--tmp", default="/dev/shm" if os.path.isdir("/dev/shm") else "/tmp")
    args = parser.parse_args(argv)
    base = Path(args.tmp) / "parjobs-ab-trees"
    src = base / "src"
    make_tree(src, args.files)
    runs: list[list[tuple[float, float]]] = [[] for _ in args.trees]
    for r in range(1 + args.rounds):  # one warm-up round
        for t, tree in enumerate(args.trees):
            wall, cpu = one_copy(tree, src, base / f"run-{r}-{t}")
            tag = "warm-up" if r == 0 else f"round {r}"
            print(f"{tag}  {tree}  {wall:.3f} s  cpu {cpu:.3f} s", flush=True)
            if r:
                runs[t].append((wall, cpu))
    print(f"load average: {os.getloadavg()[0]:.1f}")
    for tree, got in zip(args.trees, runs, strict=True):
        walls, cpus = [w for w, _ in got], [c for _, c in got]
        print(
            f"{tree}: median {statistics.median(walls):.3f} s"
            f" ({min(walls):.3f}-{max(walls):.3f}), cpu {statistics.median(cpus):.3f} s"
        )


if __name__ == "__main__":
    main()
