"""Source trees of parjobs, the same jobs, alternating rounds: did a change make the
library slower?

Each round runs every scenario once per tree, in a fresh interpreter with that tree first on
``sys.path`` (so each tree uses its own code and C extension), in alternating order. The
scenarios use only the API both trees share (``open_manager``, ``parjobs.ops.CopyJob`` and
``HashJob``, ``Task`` + ``dispatch_many``), in process, after the manager is open:

- ``copy-small``: 10,000 files of 1-8 KiB in 50 directories, tmpfs to tmpfs;
- ``copy-big``: 4 x 128 MiB, tmpfs to tmpfs;
- ``hash``: the same 4 x 128 MiB with xxh3-128, digests to a file;
- ``dispatch``: 100,000 no-op tasks through ``dispatch_many`` (8 workers);
- ``resume``: the copy-small copy paused half-way, then resumed. The pause is tied to a file,
  not to a time: the destination holds the first file of the middle directory beforehand,
  the copy asks about it (``on_conflict="ask"``), and the ``ask`` callback pauses the job
  and answers "skip". The directories from the middle on exist beforehand too (empty), so
  the first run copies their files one at a time and stops within a few files of the
  middle; in new directories it copied whole groups after the pause, up to 3,000 files
  more in one tree than another, and the resume's work differed by as much. The items the
  first run did (``done``) and the resume did (``left``) are reported.

Wall time of the job (submit to end; for ``resume``, resume to end) and the process's CPU
time over the same span.

Run: ``python -m benchmarks.bench_trees BASE_TREE [TREE ...] [--rounds N] [--only S,..]``;
the ratios are against BASE_TREE, and TREE defaults to this checkout. E.g. the redesign
(#13) against the tree before it: ``git worktree add --detach /work/wt-pre 5ffd245^``.
Build each tree's C extension first (``python3 setup.py build_ext --inplace`` in it): an
old build is ignored and every small file then takes the slower Python path. Results go
to ``benchmarks/results/trees-<date>.json`` (``--results-dir``).
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
SCENARIOS = ("copy-small", "copy-big", "hash", "dispatch", "resume")

#: What a child runs: one scenario against the tree at sys.path[0]; prints wall and CPU.
CHILD = r"""
import dataclasses, json, os, sys, time
import trio
import parjobs
from parjobs.ops import CopyJob, HashJob

scenario, data, work, files, big_mib = sys.argv[1:6]


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


# Copy small to out, paused at the middle directory's first file: the resume's wall and CPU
# time, the items the first run had done and those the resume did.
async def resume(m, small, out):
    dirs = sorted(os.listdir(small))
    middle = dirs[len(dirs) // 2]
    name = sorted(os.listdir(os.path.join(small, middle)))[0]
    for d in dirs[len(dirs) // 2 :]:  # out exists: cp -r's rule
        os.makedirs(os.path.join(out, os.path.basename(small), d))
    with open(os.path.join(out, os.path.basename(small), middle, name), "wb"):
        pass
    asked, submitted, job_ids = trio.Event(), trio.Event(), []

    async def ask(conflict):
        if not asked.is_set():  # the first run stops at this file
            asked.set()
            await submitted.wait()
            await m.pause(job_ids[0])  # returns at once: the run stops as it reads the answer
        return "skip"

    job = CopyJob(sources=[small], destination=out, on_conflict="ask", ask=ask)
    handle = await m.submit(job)
    job_ids.append(handle.id)
    submitted.set()
    assert (await handle.wait()).value == "paused", await m.get(handle.id)
    done = (await m.get(handle.id)).done_items  # files and directories
    wall, cpu = time.perf_counter(), time.process_time()
    await m.resume(handle.id)
    await m.wait(handle.id)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    info = await m.get(handle.id)
    assert info.status.value == "completed", info
    return {"wall": wall, "cpu": cpu, "done": done, "left": info.done_items - done}


async def main():
    small, big = os.path.join(data, f"small-{files}"), os.path.join(data, f"big-{big_mib}")
    if scenario == "resume":
        async with parjobs.open_manager(os.path.join(work, "jobs.sqlite"), workers=8) as m:
            print(json.dumps(await resume(m, small, os.path.join(work, "out"))))
        return
    if scenario == "copy-small":
        job = CopyJob(sources=[small], destination=os.path.join(work, "out"))
    elif scenario == "copy-big":
        job = CopyJob(sources=[big], destination=os.path.join(work, "out"))
    elif scenario == "hash":
        job = HashJob(paths=[big], output=os.path.join(work, "sums"))
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


def make_data(root: Path, files: int = 10_000, big_mib: int = 128) -> None:
    """The trees the scenarios read, made once (seeded, so every tree sees the same bytes)."""
    rng = random.Random(13)
    small = root / f"small-{files}"
    if not small.exists():
        for i in range(files):
            sub = small / f"d{i % 50:02}"
            sub.mkdir(parents=True, exist_ok=True)
            (sub / f"f{i:05}.bin").write_bytes(rng.randbytes(rng.randint(1024, 8192)))
    big = root / f"big-{big_mib}"
    if not big.exists():
        big.mkdir()
        block = rng.randbytes(1 << 20)
        for i in range(4):
            with open(big / f"big{i}.bin", "wb") as f:
                for _ in range(big_mib):
                    f.write(block)


def run_one(tree: str, scenario: str, data: Path, files: int, big_mib: int) -> dict[str, float]:
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
                str(files),
                str(big_mib),
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
    parser.add_argument("others", nargs="*", metavar="tree", help="default: this checkout")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", default=",".join(SCENARIOS))
    parser.add_argument("--files", type=int, default=10_000, help="files of copy-small")
    parser.add_argument("--big-mib", type=int, default=128, help="MiB of each big file")
    parser.add_argument("--data-dir", default="/dev/shm/parjobs-bench-trees")
    parser.add_argument("--results-dir", default=str(HERE / "results"))
    args = parser.parse_args(argv)
    data = Path(args.data_dir)
    data.mkdir(parents=True, exist_ok=True)
    make_data(data, args.files, args.big_mib)
    trees = {"base": os.path.abspath(args.base)}
    others = args.others or [str(HERE.parent)]
    for i, tree in enumerate(others, 1):
        trees["other" if len(others) == 1 else f"tree{i}"] = os.path.abspath(tree)
    runs: dict[str, dict[str, list[dict[str, float]]]] = {}
    for r in range(args.rounds):
        order = list(trees.items()) if r % 2 == 0 else list(trees.items())[::-1]
        for scenario in args.only.split(","):
            for name, tree in order:
                result = run_one(tree, scenario, data, args.files, args.big_mib)
                runs.setdefault(scenario, {}).setdefault(name, []).append(result)
                done = ""
                if "left" in result:
                    done = f"  ({result['left']:.0f} items after {result['done']:.0f})"
                print(
                    f"round {r + 1} {scenario:<10} {name:<5} wall {result['wall']:.3f} s"
                    f"  cpu {result['cpu']:.3f} s{done}",
                    flush=True,
                )
    summary: dict[str, dict[str, float]] = {}
    for scenario, by_tree in runs.items():
        row = {}
        for name, results in by_tree.items():
            row[f"{name}_wall"] = statistics.median(x["wall"] for x in results)
            row[f"{name}_cpu"] = statistics.median(x["cpu"] for x in results)
            if all("left" in x for x in results):  # resume: also per item it did
                per_item = (1e6 * x["cpu"] / max(1.0, x["left"]) for x in results)
                row[f"{name}_cpu_us_per_item"] = statistics.median(per_item)
        summary[scenario] = row
        for name in by_tree:
            ratio = row[f"{name}_wall"] / row["base_wall"]
            cpu_ratio = row[f"{name}_cpu"] / row["base_cpu"]
            if name != "base":
                row[f"{name}_ratio_wall"] = ratio
                row[f"{name}_ratio_cpu"] = cpu_ratio
            per_item = row.get(f"{name}_cpu_us_per_item")
            print(
                f"{scenario:<10} {name:<6} median wall {row[f'{name}_wall']:.3f} s, "
                f"cpu {row[f'{name}_cpu']:.3f} s ({ratio:.2f}x base, cpu {cpu_ratio:.2f}x)"
                + ("" if per_item is None else f", cpu {per_item:.0f} us an item")
            )
    out = Path(args.results_dir) / f"trees-{datetime.date.today().isoformat()}.json"
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
