"""A generated sample tree for ``parjobs demo``: documents, videos and photos per year.

Deterministic (seeded), a few seconds at most to write: ~300 small files in nested
directories, a few multi-megabyte files, and a dozen JPEG photos drawn with Pillow (sky,
sun, mountain ridges, film grain, EXIF camera data, some taken "sideways").
"""

from __future__ import annotations

import dataclasses
import os
import random

from PIL import Image, ImageDraw, ImageOps

WORDS = [
    "parallel",
    "resumable",
    "job",
    "copy",
    "file",
    "tree",
    "checkpoint",
    "progress",
    "worker",
    "thread",
    "chunk",
    "verify",
    "digest",
    "thumbnail",
    "photo",
    "mountain",
    "river",
    "archive",
    "backup",
    "folder",
    "report",
    "invoice",
    "draft",
    "note",
]

#: One folder per year, each with documents, a video and photos (so the big files are spread
#: over the walk, as in a real home folder).
YEARS = (2022, 2023, 2024)
#: Sizes of the videos, in MiB, one per year.
LARGE_MIB = (6, 10, 16)
#: Photos drawn (pixels: 1440 x 960).
PHOTOS = 12
PHOTO_SIZE = (1440, 960)


@dataclasses.dataclass
class SampleStats:
    files: int = 0
    bytes: int = 0
    photos: int = 0


def _write(path: str, data: bytes, stats: SampleStats) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    stats.files += 1
    stats.bytes += len(data)


def _corpus(rng: random.Random, size: int) -> bytes:
    lines: list[str] = []
    length = 0
    while length < size:
        line = " ".join(rng.choices(WORDS, k=rng.randint(4, 14))).capitalize() + "."
        lines.append(line)
        length += len(line) + 1
    return "\n".join(lines).encode()


def _documents(root: str, rng: random.Random, stats: SampleStats) -> None:
    corpus = _corpus(rng, 64 * 1024)
    for year in YEARS:
        for project in ("alpha", "beta", "gamma", "delta"):
            for month in range(1, 6):
                folder = os.path.join(root, str(year), "documents", project, f"{month:02d}")
                for n in range(5):
                    size = int(rng.paretovariate(1.2) * 1500) % 60_000 + 100
                    if rng.random() < 0.7:
                        start = rng.randrange(len(corpus))
                        text = (corpus[start:] + corpus)[: min(size, len(corpus))]
                        _write(os.path.join(folder, f"note-{n}.txt"), text, stats)
                    else:
                        _write(os.path.join(folder, f"data-{n}.bin"), rng.randbytes(size), stats)


def _large(root: str, rng: random.Random, stats: SampleStats) -> None:
    mib = 1024 * 1024
    block = rng.randbytes(mib)
    for i, (year, size) in enumerate(zip(YEARS, LARGE_MIB, strict=True)):
        # Every MiB a different rotation of one random block: distinct content, cheap to make.
        chunks = (block[k:] + block[:k] for k in rng.sample(range(mib), size))
        path = os.path.join(root, str(year), "videos", f"clip-{i + 1}.mkv")
        _write(path, b"".join(chunks), stats)


def _photo(rng: random.Random, grain: Image.Image) -> Image.Image:
    """Drawn at half size, then enlarged (which softens the edges like a lens would)."""
    w, h = PHOTO_SIZE[0] // 2, PHOTO_SIZE[1] // 2
    top = (rng.randint(20, 90), rng.randint(60, 140), rng.randint(150, 230))
    bottom = (rng.randint(200, 255), rng.randint(150, 210), rng.randint(100, 180))
    sky = ImageOps.colorize(Image.linear_gradient("L").resize((w, h)), top, bottom)
    draw = ImageDraw.Draw(sky)
    sx, sy, r = rng.randint(100, w - 100), rng.randint(80, h // 2), rng.randint(30, 80)
    draw.ellipse((sx - r, sy - r, sx + r, sy + r), fill=(255, 240, 200))
    for layer in range(3):  # ridges, farther ones paler
        base = h // 2 + layer * h // 8
        x, y, points = 0, base, [(0, h)]
        while x < w:
            points.append((x, y))
            x += rng.randint(20, 90)
            y = max(h // 4, min(h - 40, y + rng.randint(-60, 60)))
        points += [(w, y), (w, h)]
        shade = 40 + (2 - layer) * 45
        draw.polygon(points, fill=(shade // 2, shade, shade // 2 + 10))
    photo = sky.resize(PHOTO_SIZE, Image.Resampling.BICUBIC)
    return Image.blend(photo, grain, 0.06)


def _photos(root: str, rng: random.Random, stats: SampleStats) -> None:
    tile = Image.effect_noise((240, 240), 18).convert("RGB")
    grain = Image.new("RGB", PHOTO_SIZE)
    for x in range(0, PHOTO_SIZE[0], 240):
        for y in range(0, PHOTO_SIZE[1], 240):
            grain.paste(tile, (x, y))
    for i in range(PHOTOS):
        image = _photo(rng, grain)
        exif = Image.Exif()
        exif[0x010F] = "parjobs"  # Make
        exif[0x0110] = "Demo Camera"  # Model
        if i % 4 == 3:  # taken sideways: stored rotated, EXIF says how to turn it
            image = image.transpose(Image.Transpose.ROTATE_90)
            exif[0x0112] = 8
        folder = photo_dir(root, YEARS[i * len(YEARS) // PHOTOS])
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, f"IMG_{1000 + i}.jpg")
        image.save(path, "JPEG", quality=85, exif=exif)
        stats.files += 1
        stats.photos += 1
        stats.bytes += os.path.getsize(path)


def photo_dir(root: str, year: int) -> str:
    return os.path.join(root, str(year), "photos")


def make_sample(root: str, seed: int = 2024) -> SampleStats:
    """Write the sample tree under ``root`` (blocking; run it in a thread)."""
    rng = random.Random(seed)
    stats = SampleStats()
    _documents(root, rng, stats)
    _large(root, rng, stats)
    _photos(root, rng, stats)
    return stats
