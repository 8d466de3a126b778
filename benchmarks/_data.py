"""Deterministic benchmark data sets, generated once and cached by version and profile.

A profile (``full``, ``quick``, ``tiny``) fixes the sizes; every file's content derives from
a fixed seed, so two machines benchmark the same bytes. Sets live in
``<root>/v<DATASET_VERSION>-<profile>/<set>/``; ``dataset.json`` is written last and marks a
complete, reusable copy (a half-built one is built again). Generation runs in worker
processes (numpy, Pillow); the benchmark process itself imports neither for it.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ._common import Stopwatch, log

#: Bump when a generator changes: cached copies of older versions are then ignored.
DATASET_VERSION = 1
SEED = 20_261_122
KIB, MIB = 1024, 1024 * 1024
DEFAULT_ROOT = Path(tempfile.gettempdir()) / "parjobs-bench-data"


@dataclasses.dataclass(frozen=True)
class Profile:
    """The sizes of one profile's sets."""

    small_files: int  # 1-64 KiB each, spread over `small_dirs` directories
    small_dirs: int
    medium_files: int  # of `medium_size` bytes
    medium_size: int
    large_files: int  # of `large_size` bytes
    large_size: int
    photos: int  # JPEG, quality 90, `photo_size` pixels
    photo_size: tuple[int, int]
    pngs: int  # PNG, `png_size` pixels
    png_size: tuple[int, int]
    slow_files: int  # 1-64 KiB each, one directory: the slow-storage copy


PROFILES = {
    # small files, dirs; medium n, size; large n, size; photos n, px; pngs n, px; slow files
    "full": Profile(10_000, 100, 100, 10 * MIB, 4, 256 * MIB, 200, (3000, 2000), 50, (1600, 1200), 100),  # noqa: E501
    "quick": Profile(1_000, 10, 10, 10 * MIB, 2, 64 * MIB, 20, (3000, 2000), 5, (1600, 1200), 100),
    "tiny": Profile(50, 5, 2, 1 * MIB, 1, 2 * MIB, 3, (1200, 800), 1, (800, 600), 20),
}  # fmt: skip


@dataclasses.dataclass(frozen=True)
class DataSets:
    """Paths of a profile's generated sets and their description (``describe``)."""

    root: Path
    profile: str
    info: dict[str, Any]

    def path(self, name: str) -> Path:
        return self.root / name

    def files(self, name: str) -> list[Path]:
        """The regular files of a set, sorted (what external tools get as arguments)."""
        return sorted(p for p in self.path(name).rglob("*") if p.is_file())

    def describe(self, *names: str) -> dict[str, Any]:
        """The description of some sets, for results JSON."""
        return {n: self.info["sets"][n] for n in names}

    def label(self, name: str) -> str:
        """A short human description of one set: ``"10,000 files, 1-64 KiB (323 MiB)"``."""
        return self.info["sets"][name]["label"]


def ensure(profile: str, root: Path | None = None) -> DataSets:
    """The data sets of ``profile`` under ``root``, generated unless a complete copy exists."""
    base = Path(root or DEFAULT_ROOT).absolute() / f"v{DATASET_VERSION}-{profile}"
    marker = base / "dataset.json"
    try:
        info = json.loads(marker.read_text())
    except (OSError, ValueError):
        info = None
    if info is not None and info.get("version") == DATASET_VERSION:
        log(f"[data] reusing {base}")
        return DataSets(base, profile, info)
    if base.exists():
        shutil.rmtree(base)
    sw = Stopwatch()
    log(f"[data] generating the {profile} data sets into {base} (once; cached)")
    info = _generate(PROFILES[profile], base)
    info.update(version=DATASET_VERSION, profile=profile, seed=SEED)
    info["generated_in_s"] = round(sw.stop().wall, 1)
    marker.write_text(json.dumps(info, indent=2) + "\n")
    log(f"[data] generated in {info['generated_in_s']} s")
    return DataSets(base, profile, info)


def blobs(data: DataSets, count: int, size: int) -> tuple[Path, dict[str, Any]]:
    """A set of ``count`` files of ``size`` seeded random bytes (``b<i>.bin``) beside the
    profile's sets, for cases that need other sizes than the profile has (the command line's
    big-file cases); generated on first use, in worker processes, and cached like the sets:
    a marker written last (beside the set, so that copies of the set do not carry it) marks
    a complete copy. Returns the set's directory and its description."""
    name = f"blobs-{count}x{size}"
    root, marker = data.root / name, data.root / f"{name}.json"
    info = {"label": f"{count} files of {_size(size)}", "files": count, "bytes": count * size}
    if marker.exists():
        return root, info
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    sw = Stopwatch()
    log(f"[data] generating {info['label']} into {root} (once; cached)")
    paths = [root / f"b{i:02}.bin" for i in range(count)]
    seeds = [SEED + 50_000 + count * 1_000 + i for i in range(count)]
    workers = max(1, min(count, len(os.sched_getaffinity(0))))
    with concurrent.futures.ProcessPoolExecutor(workers) as pool:
        list(pool.map(_blob, paths, [size] * count, seeds))
    marker.write_text(json.dumps(info) + "\n")
    log(f"[data] generated in {sw.stop().wall:.1f} s")
    return root, info


# -- generation (in worker processes) ---------------------------------------------------------


def _generate(p: Profile, base: Path) -> dict[str, Any]:
    jobs: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []
    for d in range(p.small_dirs):
        mine = range(d, p.small_files, p.small_dirs)
        jobs.append((_small_files, (base / "small" / f"d{d:03}", list(mine), SEED + 1)))
    jobs.append((_small_files, (base / "slow", list(range(p.slow_files)), SEED + 2)))
    for i in range(p.medium_files):
        jobs.append((_blob, (base / "medium" / f"m{i:03}.bin", p.medium_size, SEED + 10_000 + i)))
    for i in range(p.large_files):
        jobs.append((_blob, (base / "large" / f"l{i:02}.bin", p.large_size, SEED + 20_000 + i)))
    for i in range(p.photos):
        path = base / "photos" / f"IMG_{i:04}.jpg"
        jobs.append((_photo, (path, p.photo_size, SEED + 30_000 + i, "JPEG")))
    for i in range(p.pngs):
        path = base / "png" / f"image_{i:03}.png"
        jobs.append((_photo, (path, p.png_size, SEED + 40_000 + i, "PNG")))
    # Big items first, so the pool does not end on one long photo.
    jobs.sort(key=lambda j: j[0] is _small_files)
    for name in ("small", "medium", "large", "photos", "png", "slow"):
        (base / name).mkdir(parents=True, exist_ok=True)
    workers = max(1, len(os.sched_getaffinity(0)))
    with concurrent.futures.ProcessPoolExecutor(workers) as pool:
        for fut in [pool.submit(fn, *args) for fn, args in jobs]:
            fut.result()
    sets = {name: _measure(base / name) for name in ("small", "medium", "large", "photos", "png")}
    sets["slow"] = _measure(base / "slow")
    sets["small"]["label"] = f"{p.small_files:,} files of 1-64 KiB in {p.small_dirs} dirs"
    sets["slow"]["label"] = f"{p.slow_files} files of 1-64 KiB"
    sets["medium"]["label"] = f"{p.medium_files} files of {p.medium_size // MIB} MiB"
    sets["large"]["label"] = f"{p.large_files} file(s) of {p.large_size // MIB} MiB"
    w, h = p.photo_size
    sets["photos"]["label"] = f"{p.photos} JPEG photos {w}x{h}, quality 90"
    w, h = p.png_size
    sets["png"]["label"] = f"{p.pngs} PNG images {w}x{h}"
    for s in sets.values():
        s["label"] += f" ({_size(s['bytes'])})"
    return {"sets": sets, "profile_sizes": dataclasses.asdict(p)}


def _measure(root: Path) -> dict[str, Any]:
    files = dirs = 0
    for _, dirnames, filenames in os.walk(root):
        dirs += len(dirnames)
        files += len(filenames)
    size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    return {"files": files, "dirs": dirs, "bytes": size, "label": ""}


def _size(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / MIB:,.0f} MiB"


def _small_files(folder: Path, indices: list[int], seed: int) -> None:
    """Files ``f<index>.bin`` of 1-64 KiB, sizes and contents from ``seed`` and the index."""
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    for i in indices:
        rng = np.random.default_rng([seed, i])
        size = int(rng.integers(KIB, 64 * KIB + 1))
        (folder / f"f{i:05}.bin").write_bytes(rng.bytes(size))


def _blob(path: Path, size: int, seed: int) -> None:
    """``size`` seeded random bytes, written in 16 MiB pieces."""
    import numpy as np

    rng = np.random.default_rng(seed)
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 16 * MIB)
            f.write(rng.bytes(n))
            left -= n


def _photo(path: Path, size: tuple[int, int], seed: int, fmt: str) -> None:
    """A photo-like image: a two-colour gradient, low-frequency blotches, 40 filled shapes
    (ellipses, rectangles, polygons) and per-pixel noise; JPEG at quality 90 or PNG."""
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    w, h = size
    y = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    x = np.linspace(0, 1, w, dtype=np.float32)[None, :, None]
    c0, c1, c2 = (rng.uniform(0, 255, 3).astype(np.float32) for _ in range(3))
    img = c0 + (c1 - c0) * y + (c2 - c0) * 0.5 * x
    coarse = rng.integers(0, 256, (max(2, h // 100), max(2, w // 100), 3), dtype=np.uint8)
    blotches = Image.fromarray(coarse).resize((w, h), Image.Resampling.BICUBIC)
    img += (np.asarray(blotches, dtype=np.float32) - 128) * 0.3
    im = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(im)
    for _ in range(40):
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        x1, y1 = x0 + int(rng.integers(w // 60, w // 3)), y0 + int(rng.integers(h // 60, h // 3))
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        kind = int(rng.integers(3))
        if kind == 0:
            draw.ellipse([x0, y0, x1, y1], fill=colour)
        elif kind == 1:
            draw.rectangle([x0, y0, x1, y1], fill=colour)
        else:
            points = list(
                zip(rng.integers(0, w, 5).tolist(), rng.integers(0, h, 5).tolist(), strict=True)
            )
            draw.polygon(points, fill=colour)
    arr = np.asarray(im, dtype=np.int16)
    spread = 16 if fmt == "JPEG" else 4
    arr += rng.integers(-spread, spread + 1, arr.shape, dtype=np.int16)
    out = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    if fmt == "JPEG":
        out.save(path, "JPEG", quality=90)
    else:
        out.save(path, "PNG")
