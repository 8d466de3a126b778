"""Thumbnails: parjobs `ThumbnailJob` (256 px WebP, quality 80; 1 and N workers) against a
naive sequential Pillow loop (the baseline), the same loop without JPEG draft decoding, and
``vipsthumbnail``. On the JPEG photos and, separately, the PNG images.

The naive loop is what one writes first: ``Image.open``, ``thumbnail((256, 256))``, ``save``.
Note that Pillow's ``thumbnail`` already asks the JPEG decoder for a reduced scale
(``reducing_gap=2.0`` calls ``draft``); "full decode" passes ``reducing_gap=None`` and decodes
every pixel. parjobs also hashes a sample of each source (its cache key), applies EXIF
orientation and writes to a temporary name that it renames into place.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image

from parjobs.ops._thumbnail import ThumbnailJob

from ._common import Timing, load_average, log, panel_chart, run_rounds
from ._session import Session
from ._tools import (
    describe_tools,
    fresh_dir,
    in_process,
    remove,
    run_job,
    run_tool,
    warm,
    which,
)

SIZE = 256
QUALITY = 80
BASELINE = "Pillow loop"
SETS = {"photos": "JPEG photos", "png": "PNG images"}
#: No warm-up round: the files are read into the page cache first, and a round of the full
#: set takes about a minute.
WARMUP = 0


def pillow_loop(files: list[Path], out: Path, *, reducing_gap: float | None = 2.0) -> None:
    """The naive sequential loop (``reducing_gap`` as in ``Image.thumbnail``)."""
    out.mkdir(parents=True, exist_ok=True)
    for path in files:
        with Image.open(path) as im:
            im.thumbnail((SIZE, SIZE), reducing_gap=reducing_gap)
            im.save(out / (path.stem + ".webp"), "WEBP", quality=QUALITY)


def _parjobs(session: Session, src: Path, out: Path, workers: int, files: int) -> Timing:
    job = ThumbnailJob(
        paths=[str(src)], size=SIZE, format="webp", out_dir=str(out), quality=QUALITY
    )
    result, timing = run_job(job, workers=workers, store_dir=session.scratch)
    if result["made"] != files or result["failed"]:
        raise RuntimeError(f"parjobs thumbnails: unexpected result {result}")
    return timing


Make = Callable[[Path], Timing]


def contenders(
    session: Session, src: Path, files: list[Path]
) -> tuple[dict[str, Make], dict[str, str]]:
    """Functions making the thumbnails of ``files`` in an empty ``out`` directory, by name,
    and the skipped ones with reasons."""
    made: dict[str, Make] = {}
    skipped: dict[str, str] = {}
    for n in [1, session.workers[0]]:  # the cpu lane has one thread per core anyway
        name = f"parjobs {n} worker" + ("s" if n > 1 else "")
        made[name] = lambda out, n=n: _parjobs(session, src, out, n, len(files))
    made[BASELINE] = lambda out: in_process(lambda: pillow_loop(files, out))
    made["Pillow loop, full decode"] = lambda out: in_process(
        lambda: pillow_loop(files, out, reducing_gap=None)
    )
    if which("vipsthumbnail"):
        made["vipsthumbnail"] = lambda out: run_tool(
            ["vipsthumbnail", "-s", str(SIZE), "-o", f"{out}/%s.webp[Q={QUALITY}]"]
            + [str(f) for f in files]
        )
    else:
        skipped["vipsthumbnail"] = "vipsthumbnail is not installed (apt-get install libvips-tools)"
    return made, skipped


def _checked(make: Make, name: str, scratch: Path, n: int) -> Callable[[], Timing]:
    """Around one contender: a new empty output directory before; after, check that it holds
    ``n`` thumbnails, then remove it."""

    def contender() -> Timing:
        out = fresh_dir(scratch, "thumbs")
        timing = make(out)
        got = sum(1 for p in out.rglob("*.webp"))
        if got != n:
            raise RuntimeError(f"{name}: made {got} thumbnails, expected {n}")
        remove(out)
        return timing

    return contender


def run(session: Session) -> dict[str, Any]:
    data = session.data
    tools = describe_tools([("vipsthumbnail", ["vipsthumbnail", "--vips-version"])])
    out: dict[str, Any] = {
        "what": f"{SIZE} px WebP thumbnails (quality {QUALITY}) of every image",
        "timed": "the whole call (parjobs: store open, job, manager close; tools: the process)",
        "baseline": BASELINE,
        "cache": "cached",
        "tools": tools,
        "pillow": Image.__version__,
        "cases": {},
    }
    panels = []
    for set_name in SETS:
        src = data.path(set_name)
        files = data.files(set_name)
        if not files:
            continue
        made, skipped = contenders(session, src, files)
        log(f"[thumbnails] {data.label(set_name)}, {session.rounds} rounds")
        warm([src])
        load0 = load_average()
        rounds = run_rounds(
            {n: _checked(fn, n, session.scratch, len(files)) for n, fn in made.items()},
            session.rounds,
            WARMUP,
        )
        case = session.case(
            rounds,
            BASELINE,
            data_set=data.describe(set_name),
            cache="cached",
            skipped=skipped,
            loadavg_before=load0,
            warmup_rounds=WARMUP,
        )
        for name, m in rounds.items():
            case["contenders"][name]["ms_per_image"] = round(m.median / len(files) * 1e3, 2)
        out["cases"][set_name] = case
        panels.append((data.label(set_name), rounds, BASELINE))
    if session.charts and panels:
        panel_chart(
            panels,
            filename="thumbnails.png",
            title=f"{SIZE} px WebP thumbnails (lower is better; ratio to a naive Pillow loop)",
            note=session.note(),
        )
    return out
