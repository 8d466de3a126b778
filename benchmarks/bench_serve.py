"""`parjobs serve` under load: ``python -m benchmarks.bench_serve [--quick]``.

1. **SSE clients cost the jobs nothing**: a copy of 10,000 small files (1-8 KiB, 100
   folders, seeded) submitted over REST to a server in this process, timed from the submit
   to ``completed``, with 50 clients following ``GET /api/events`` against the same copy with
   none. The clients live in a child process (as browsers would), all connected before the
   copy starts and reading everything; the two contenders alternate round by round (the
   order rotating), so machine load drifts hit both alike. Target: at most 5 % slower.
2. **Event latency**: a job of 100 tasks, one at a time, 50 ms apart, each recording the
   instant it finishes (``time.monotonic``, which is system-wide on Linux); a client on
   loopback (in a child process) records when the progress event that first counts each
   task arrives. Latency = arrival - finish. Target: median < 200 ms. Measured twice: one
   client (a browser), and one among 50 (the server then sends each client progress less
   often, `PROGRESS_BUDGET` in parjobs/server/_events.py, so 50 clients cost the jobs little).

The copy's source and every round's destination live on a tmpfs (``/dev/shm`` when there is
one; ``--on-disk`` to keep them in the temporary directory): creating and deleting 10,000
files per round on this VM's journal-less ext4 slows later rounds by up to several times
(docs/benchmarks.md, Method), which drowned the clients' cost in filesystem noise. The job
store stays on disk, as in real use.

Results go to ``benchmarks/results/<date>-<host>.json`` (scenario ``serve``) and a chart to
``docs/images/serve.png``.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import random
import statistics
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import httpx
import trio

import parjobs
from parjobs.server import serve

from ._common import (
    Measurement,
    Rounds,
    fs_type,
    load_average,
    log,
    machine_note,
    panel_chart,
    temp_dir,
    write_results,
)

FILES, FOLDERS = 10_000, 100
CLIENTS = 50
TASKS, SPACING = 100, 0.050
TOKEN = "bench-token-0123456789abcdef"
NONE, WITH = "no SSE clients", f"{CLIENTS} SSE clients"

#: The clients' process: CLIENTS streams of /api/events; prints "ready" once all are
#: connected, then, on stdin closing, one JSON line: events read, and for the latency job
#: the arrival time of the first progress event counting each task.
CLIENT_CODE = r"""
import json, sys, time
import httpx, trio

url, token, n, job = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
seen = {}
counts = [0] * n

async def follow(i, client, connected):
    async with client.stream("GET", "/api/events") as r:
        connected()
        kind = None
        async for line in r.aiter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                counts[i] += 1
                if i == 0 and kind == "progress" and job in line:
                    done = json.loads(line[6:])["items_done"]
                    now = time.monotonic()
                    for k in range(1, done + 1):
                        seen.setdefault(k, now)

async def main():
    headers = {"authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=n + 1)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=None, limits=limits) as c:
        ready = trio.Event()
        left = [n]
        def connected():
            left[0] -= 1
            if not left[0]:
                ready.set()
        async with trio.open_nursery() as nursery:
            for i in range(n):
                nursery.start_soon(follow, i, c, connected)
            await ready.wait()
            print("ready", flush=True)
            await trio.to_thread.run_sync(sys.stdin.read)
            nursery.cancel_scope.cancel()
    print(json.dumps({"events": sum(counts), "seen": seen, "cpu": time.process_time()}), flush=True)

trio.run(main)
"""


@dataclasses.dataclass
class Finish(parjobs.Task[None]):
    """Sleeps, then records when it finished (in this process: the server's)."""

    index: int
    sleep: float

    def run(self, tc: parjobs.TaskContext) -> None:
        time.sleep(self.sleep)
        FINISHED[self.index] = time.monotonic()


FINISHED: dict[int, float] = {}


@parjobs.job_type("bench-latency", version=1)
class LatencyJob(parjobs.Job):
    """``n`` tasks one after the other, each ``sleep`` seconds long."""

    n: int
    sleep: float

    async def run(self, ctx: parjobs.JobContext) -> None:
        ctx.progress.set_total(items=self.n)
        async for _ in ctx.task_dispatcher().dispatch_many(
            Finish(i + 1, self.sleep) for i in range(self.n)
        ):
            pass


def make_tree(root: Path, files: int, folders: int) -> dict[str, Any]:
    rng = random.Random(15)
    total = 0
    for i in range(files):
        folder = root / f"d{i % folders:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        size = rng.randint(1024, 8192)
        (folder / f"f{i:05d}.bin").write_bytes(rng.randbytes(size))
        total += size
    return {"files": files, "folders": folders, "bytes": total, "sizes": "1-8 KiB", "seed": 15}


class Clients:
    """The child process holding CLIENTS event streams open."""

    def __init__(self, url: str, job: str = "-", n: int = CLIENTS) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CLIENT_CODE, url, TOKEN, str(n), job],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(f"the clients did not connect: {line!r}")

    def close(self) -> dict[str, Any]:
        out, _ = self.proc.communicate("", timeout=60)
        data: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        return data


async def run_copy(api: httpx.AsyncClient, manager: parjobs.JobManager, src: Path, dst: Path):
    """Submit the copy over REST; seconds until it completed."""
    t0 = time.perf_counter()
    spec = {"sources": [str(src)], "destination": str(dst)}
    r = await api.post("/api/jobs", json={"type": "copy", "spec": spec})
    r.raise_for_status()
    status = await manager.wait(r.json()["id"])
    wall = time.perf_counter() - t0
    assert status is parjobs.JobStatus.COMPLETED, status
    return wall


async def bench(quick: bool, rounds: int, work: Path, data: Path) -> dict[str, Any]:
    files = 2_000 if quick else FILES
    log(f"making {files} files in {data} ...")
    data_set = make_tree(data / "src", files, FOLDERS)
    data_set["filesystem"] = fs_type(str(data))
    tokens = work / "tokens"
    tokens.write_text(TOKEN + "\n")
    tokens.chmod(0o600)
    result = Rounds((name, Measurement(name, items=files)) for name in (NONE, WITH))
    events: list[int] = []
    client_cpu: list[float] = []
    async with (
        parjobs.open_manager(work / "jobs.sqlite") as manager,
        trio.open_nursery() as nursery,
    ):
        stop = trio.Event()
        start = functools.partial(
            serve, manager, port=0, token_file=str(tokens), shutdown_trigger=stop.wait
        )
        info = await nursery.start(start)
        headers = {"authorization": f"Bearer {TOKEN}"}
        async with httpx.AsyncClient(base_url=info.base_url, headers=headers) as api:
            n = 0
            for r in range(1 + rounds):  # one warm-up round
                order = [NONE, WITH] if r % 2 == 0 else [WITH, NONE]
                for name in order:
                    n += 1
                    clients = (
                        await trio.to_thread.run_sync(Clients, info.base_url)
                        if name == WITH
                        else None
                    )
                    cpu0 = time.process_time()
                    wall = await run_copy(api, manager, data / "src", data / f"dst{n}")
                    cpu = time.process_time() - cpu0  # the server's process
                    if clients is not None:
                        out = await trio.to_thread.run_sync(clients.close)
                        events.append(out["events"])
                        client_cpu.append(out["cpu"])
                    await trio.to_thread.run_sync(_remove, data / f"dst{n}")
                    tag = "warm-up" if r == 0 else f"round {r}/{rounds}"
                    log(f"  {tag:>11}  {name:<16} {wall:7.2f} s")
                    if r:
                        result[name].wall.append(wall)
                        result[name].cpu.append(cpu)
            latency = await measure_latency(api, manager, info.base_url, 1)
            latency_many = await measure_latency(api, manager, info.base_url, CLIENTS)
        stop.set()
    ratio = result[WITH].median / result[NONE].median
    return {
        "data_set": data_set,
        "rounds": rounds,
        "copy": result.to_json(none=NONE),
        "slowdown_with_clients": round(ratio - 1, 4),
        "events_per_client_round": [round(e / CLIENTS) for e in events],
        "clients_process_cpu_s": [round(c, 3) for c in client_cpu],
        "target_slowdown": 0.05,
        "latency": latency,
        "latency_with_all_clients": latency_many,
        "loadavg": load_average(),
        "rounds_obj": result,
    }


async def measure_latency(
    api: httpx.AsyncClient, manager: parjobs.JobManager, url: str, n: int
) -> dict[str, Any]:
    """Task finished -> the first of ``n`` connected clients saw it counted."""
    FINISHED.clear()
    spec = {"n": TASKS, "sleep": SPACING}
    body = {"type": "bench-latency", "spec": spec, "start": False}  # until the clients are in
    r = await api.post("/api/jobs", json=body)
    r.raise_for_status()
    job_id = r.json()["id"]
    clients = await trio.to_thread.run_sync(functools.partial(Clients, url, job_id, n))
    await manager.resume(job_id)
    await manager.wait(job_id)
    await trio.sleep(0.5)
    seen = (await trio.to_thread.run_sync(clients.close))["seen"]
    lat = sorted((seen[str(k)] - t) * 1e3 for k, t in FINISHED.items() if str(k) in seen)
    return {
        "tasks": TASKS,
        "spacing_ms": SPACING * 1e3,
        "clients_connected": n,
        "tasks_seen": len(lat),
        "median_ms": round(statistics.median(lat), 1),
        "p90_ms": round(lat[int(len(lat) * 0.9)], 1),
        "max_ms": round(lat[-1], 1),
        "min_ms": round(lat[0], 1),
        "target_median_ms": 200,
        "samples_ms": [round(x, 1) for x in lat],
    }


def _remove(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def chart(data: dict[str, Any]) -> None:
    rounds: Rounds = data.pop("rounds_obj")
    lat = data["latency"]
    panel_chart(
        [(f"copy of {data['data_set']['files']:,} small files, submitted over REST", rounds, NONE)],
        filename="serve.png",
        title=(
            f"parjobs serve: {CLIENTS} SSE clients slow the copy by "
            f"{data['slowdown_with_clients'] * 100:+.1f} % (target ≤ 5 %); event latency "
            f"median {lat['median_ms']:.0f} ms, p90 {lat['p90_ms']:.0f} ms (target < 200 ms); "
            f"with {CLIENTS} clients median {data['latency_with_all_clients']['median_ms']:.0f} ms"
        ),
        note=machine_note(),
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_serve")
    p.add_argument("--quick", action="store_true", help="2,000 files, 2 rounds")
    p.add_argument("--rounds", type=int, help="measured rounds (default 5; quick 2)")
    p.add_argument("--on-disk", action="store_true", help="copy on disk rather than on a tmpfs")
    args = p.parse_args(argv)
    rounds = args.rounds or (2 if args.quick else 5)
    shm = Path("/dev/shm")
    on_tmpfs = not args.on_disk and shm.is_dir() and os.access(shm, os.W_OK)
    with temp_dir() as work, temp_dir(dir=shm) if on_tmpfs else nullcontext(work) as files:
        data = trio.run(bench, args.quick, rounds, work, files)
    if not args.quick:
        chart(data)
        write_results("serve", data)
    else:
        data.pop("rounds_obj")
    log(json.dumps({k: v for k, v in data.items() if k != "copy"}, indent=1)[:3000])
    return 0


if __name__ == "__main__":
    sys.exit(main())
