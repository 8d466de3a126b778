"""Two source trees of parjobs, the same jobs, alternating rounds: did a change make the
library slower?

Each round runs every scenario once per tree, in a fresh interpreter with that tree first on
``sys.path`` (so each tree uses its own code and C extension), in alternating order. The
scenarios use only the API both trees share (``open_manager``, ``parjobs.ops.CopyJob`` and
``HashJob``, ``Task`` + ``dispatch_many``), in process, after the manager is open:

- ``copy-small``: 10,000 files of 1-8 KiB in 50 directories, tmpfs to tmpfs;
- ``copy-big``: 4 x 128 MiB, tmpfs to tmpfs;
- ``hash``: the same 4 x 128 MiB with xxh3-128, digests to a file;
- ``dispatch``: 100,000 no-op tasks through ``dispatch_many`` (8 workers).

Wall time of the job (submit to end) and the process's CPU time over the same span.

Run: ``python -m benchmarks.bench_trees BASE_TREE [OTHER_TREE] [--rounds N]``; OTHER_TREE
defaults to this checkout. Build each tree's C extension first (``python3 setup.py
build_ext --inplace`` in it): an old build is ignored and every small file then takes the
slower Python path. Results go to ``benchmarks/results/trees-<date>.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCENARIOS = ("copy-small", "copy-big", "hash", "dispatch")

#: What a child runs: one scenario against the tree at sys.path[0]; prints wall and CPU.
CHILD = r"""
import dataclasses, json, os, sys, time
import trio
import parjobs
from parjobs.ops import CopyJob, HashJob

scenario, data, work = sys.argv[1], sys.argv[2], sys.argv[3]


@parjobs.job_type("bench-trees-noop")
@dataclasses.dataclass
class NoopJob(parjobs.Job):
    count: int = 100_000

    async def run(self, ctx):
        @dataclasses.dataclass(slots=True)
        class Noop(parjobs.Task[None]):
            index: int

            def run(self, tc):
                return None

        run = ctx.task_dispatcher().dispatch_many(Noop(i) for i in range(self.count))
        if hasattr(run, "__aiter__"):  # older trees: an async iterator of outcomes
            async for _ in run:
                pass
        else:
            await run


async def main():
    if scenario == "copy-small":
        job = CopyJob(sources=[os.path.join(data, "small")], destination=os.path.join(work, "out"))
    elif scenario == "copy-big":
        job = CopyJob(sources=[os.path.join(data, "big")], destination=os.path.join(work, "out"))
    elif scenario == "hash":
        job = HashJob(paths=[os.path.join(data, "big")], output=os.path.join(work, "sums"))
    else:
        job = NoopJob()
    async with parjobs.open_manager(os.path.join(work, "jobs.sqlite"), workers=8) as m:
        wall, cpu = time.perf_counter(), time.process_time()
        handle = await m.submit(job)
        await handle.wait()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        info = await m.get(handle.id)
        assert info.status.value == "completed", info
    print(json.dumps({"wall": wall, "cpu": cpu}))


trio.run(main)
"""


def make_data(root: Path) -> None:
    """The trees the scenarios read, made once (seeded, so both trees see the same bytes)."""
    rng = random.Random(13)
    small = root / "small"
    if not small.exists():
        for d in range(50):
            sub = small / f"d{d:02}"
            sub.mkdir(parents=True)
            for i in range(200):
                (sub / f"f{i:03}.bin").write_bytes(rng.randbytes(rng.randint(1024, 8192)))
    big = root / "big"
    if not big.exists():
        big.mkdir()
        block = rng.randbytes(1 << 20)
        for i in range(4):
            with open(big / f"big{i}.bin", "wb") as f:
                for _ in range(128):
                    f.write(block)


def run_one(tree: str, scenario: str, data: Path) -> dict[str, float]:
    work = Path(tempfile.mkdtemp(prefix="bench-trees-", dir=data))
    try:
        env = {**os.environ, "PYTHONPATH": tree}
        proc = subprocess.run(
            [
                sys.executable,
                "-c",
                f"import sys; sys.path.insert(0, {tree!r})\n{CHILD}",
                scenario,
                str(data),
                str(work),
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
            check=False,
        )
        if proc.returncode != 0:
            raise SystemExit(f"{tree} {scenario} failed:\n{proc.stderr[-2000:]}")
        return dict(json.loads(proc.stdout.strip().splitlines()[-1]))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("base", help="the tree to compare against (a worktree of an older commit)")
    parser.add_argument("other", nargs="?", default=str(HERE.parent), help="default: this checkout")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", default=",".join(SCENARIOS))
    parser.add_argument("--data-dir", default="/dev/shm/parjobs-bench-trees")
    args = parser.parse_args(argv)
    data = Path(args.data_dir)
    data.mkdir(parents=True, exist_ok=True)
    make_data(data)
    trees = {"base": os.path.abspath(args.base), "other": os.path.abspath(args.other)}
    runs: dict[str, dict[str, list[dict[str, float]]]] = {}
    for r in range(args.rounds):
        order = list(trees.items()) if r % 2 == 0 else list(trees.items())[::-1]
        for scenario in args.only.split(","):
            for name, tree in order:
                result = run_one(tree, scenario, data)
                runs.setdefault(scenario, {}).setdefault(name, []).append(result)
                print(
                    f"round {r + 1} {scenario:<10} {name:<5} wall {result['wall']:.3f} s"
                    f"  cpu {result['cpu']:.3f} s",
                    flush=True,
                )
    summary: dict[str, dict[str, float]] = {}
    for scenario, by_tree in runs.items():
        row = {}
        for name, results in by_tree.items():
            row[f"{name}_wall"] = statistics.median(x["wall"] for x in results)
            row[f"{name}_cpu"] = statistics.median(x["cpu"] for x in results)
        row["ratio_wall"] = row["other_wall"] / row["base_wall"]
        summary[scenario] = row
        print(
            f"{scenario:<10} median wall base {row['base_wall']:.3f} s, other "
            f"{row['other_wall']:.3f} s: {row['ratio_wall']:.2f}x"
        )
    out = HERE / "results" / f"trees-{datetime.date.today().isoformat()}.json"
    out.parent.mkdir(exist_ok=True)
    load = os.getloadavg()
    out.write_text(
        json.dumps({"trees": trees, "load": load, "runs": runs, "summary": summary}, indent=2)
        + "\n"
    )
    print(f"wrote {out} (load {load[0]:.1f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
