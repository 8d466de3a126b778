"""Screenshots of the dashboard for docs/serve.md: ``python -m benchmarks.dashboard_screenshot``.

Serves a fresh store with real jobs in this process (copies on slowed storage, as in
bench_slow_storage, so they are caught running; a paused move; finished hash, duplicates and
thumbnails jobs; a cancelled copy) and photographs the page in Debian's headless chromium
through Playwright: docs/images/dashboard.png (the list) and docs/images/dashboard-job.png
(a running copy's panel with its throughput chart).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import trio
from PIL import Image

import parjobs
from parjobs.ops._copy import CopyJob
from parjobs.ops._duplicates import DuplicatesJob
from parjobs.ops._hash import HashJob
from parjobs.ops._move import MoveJob
from parjobs.ops._thumbnail import ThumbnailJob
from parjobs.server import EventHub, serve

from .bench_slow_storage import injected_latency

CHROMIUM = os.environ.get("PARJOBS_CHROMIUM", "/usr/bin/chromium")
IMAGES = Path(__file__).resolve().parent.parent / "docs" / "images"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync"]


def make_tree(root: Path, dirs: int, files: int, size: int, name: str = "IMG_{:04}.jpg") -> Path:
    n = 0
    for d in range(dirs):
        folder = root / f"{2019 + d}"
        folder.mkdir(parents=True, exist_ok=True)
        for _ in range(files):
            (folder / name.format(n)).write_bytes(os.urandom(size))
            n += 1
    return root


def make_images(root: Path, count: int) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.new("RGB", (640, 480), (40 + i * 7 % 200, 90, 160)).save(root / f"shot_{i:03}.png")
    return root


def photograph(url: str, running_copy: str, out: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1440, "height": 760})
        page.emulate_media(color_scheme="light", reduced_motion="reduce")
        page.goto(url)
        page.wait_for_function("() => document.querySelectorAll('tr.row').length >= 8")
        time.sleep(3)  # rates and ETAs settle
        page.screenshot(path=str(out / "dashboard.png"))
        page.evaluate("id => { location.hash = `#/job/${id}`; }", running_copy)
        page.wait_for_selector("#detail:not([hidden])")
        time.sleep(8)  # the chart fills
        page.screenshot(path=str(out / "dashboard-job.png"))
        browser.close()


async def scene(home: Path, out: Path) -> None:
    pictures = make_tree(home / "Pictures", 6, 400, 24_000)
    music = make_tree(home / "Music", 4, 500, 40_000, "track_{:04}.flac")
    projects = make_tree(home / "Projects" / "website", 3, 600, 6_000, "page_{:04}.html")
    docs = make_tree(home / "Documents", 3, 60, 30_000, "report_{:03}.pdf")
    shots = make_images(home / "Screenshots", 40)
    backup = home / "mnt" / "backup"
    backup.mkdir(parents=True)
    tokens = home / "tokens"
    tokens.write_text("demo-token-0123456789abcdef\n")
    tokens.chmod(0o600)
    async with parjobs.open_manager(home / "jobs.sqlite", workers=8, max_running=4) as manager:
        for job in (
            HashJob(paths=[str(docs)], output=str(home / "Documents.xxh")),
            DuplicatesJob(paths=[str(pictures)]),
            ThumbnailJob(paths=[str(shots)], out_dir=str(home / ".cache" / "thumbs")),
        ):
            await (await manager.submit(job)).wait()
        cancelled = await manager.submit(
            CopyJob(sources=[str(projects)], destination=str(backup / "old"), verify=True)
        )
        await trio.sleep(0.5)
        await manager.cancel(cancelled.id)
        await manager.submit(
            MoveJob(sources=[str(home / "Screenshots")], destination=str(home / "Archive")),
            start=False,
        )
        running = []
        for src, prio in ((pictures, 5), (music, 0), (projects, 0)):
            spec = CopyJob(sources=[str(src)], destination=str(backup / "ana"), verify=True)
            running.append((await manager.submit(spec, priority=prio)).id)
        await manager.submit(
            HashJob(paths=[str(backup / "ana")], output=str(home / "backup.xxh")), after=running
        )
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            info = await nursery.start(
                functools.partial(
                    serve,
                    manager,
                    port=0,
                    token_file=str(tokens),
                    hub=EventHub(manager),
                    shutdown_trigger=stop.wait,
                )
            )
            await trio.to_thread.run_sync(photograph, info.url, running[0], out)
            for job_id in running:
                with contextlib.suppress(parjobs.InvalidTransitionError):  # it finished
                    await manager.cancel(job_id)
            stop.set()


def main(argv: Any = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=IMAGES)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="parjobs-demo-") as tmp, injected_latency(0.04):
        home = Path(tmp) / "home" / "ana"
        trio.run(scene, home, args.out)
    print(f"wrote {args.out / 'dashboard.png'} and {args.out / 'dashboard-job.png'}")


if __name__ == "__main__":
    main()
