"""ThumbnailJob through a real manager and store, on real images generated with Pillow."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import sqlite3
import struct
import subprocess
import sys
import textwrap
import time
import zlib
from pathlib import Path
from typing import Any, Literal

import pytest
import trio
from _forkcli import Forked
from _images import BLUE, GREEN, RED, YELLOW, quadrants
from _trees import save_in_place
from PIL import Image, PngImagePlugin

import parjobs
from parjobs import JobSpecError, JobStatus
from parjobs.ops import _thumbnail
from parjobs.ops._imaging import (
    cache_thumbnail_path,
    freedesktop_fail_path,
    freedesktop_is_up_to_date,
    freedesktop_thumbnail_path,
)
from parjobs.ops._prescan import clock_ns
from parjobs.ops._thumbnail import ThumbnailJob, thumbnail_id

# -- inputs -------------------------------------------------------------------------------------


def photo(size: tuple[int, int], seed: int = 0) -> Image.Image:
    """Gradients and noise, plus a box that makes every seed's content distinct."""
    red = Image.linear_gradient("L").resize(size)
    green = Image.linear_gradient("L").rotate(90).resize(size)
    im = Image.merge("RGB", (red, green, Image.effect_noise(size, 40)))
    w, h = size
    x, y = (seed * 37) % (w - 20), (seed * 23) % (h - 20)
    im.paste((seed * 7 % 256, 255 - seed % 256, 128), (x, y, x + 20, y + 20))
    return im


def make_images(root: Path) -> dict[Path, tuple[int, int]]:
    """One image per input format (nested, one of them animated) and a text file.

    Returns each image's path and its size as displayed.
    """
    (root / "sub" / "deeper").mkdir(parents=True)
    images = {
        root / "photo.jpg": (600, 400),
        root / "alpha.png": (300, 500),
        root / "sub" / "pic.webp": (200, 200),
        root / "sub" / "deeper" / "anim.gif": (500, 250),
        root / "small.png": (60, 40),  # smaller than the box: never enlarged
    }
    for i, (path, size) in enumerate(images.items()):
        im = photo(size, i)
        if path.suffix == ".png":
            im.putalpha(Image.linear_gradient("L").resize(size))
        if path.suffix == ".gif":
            frames = [im.convert("P"), photo(size, 99).convert("P")]
            frames[0].save(path, save_all=True, append_images=frames[1:], duration=100)
        else:
            im.save(path, quality=90)
    (root / "notes.txt").write_text("not an image")
    return images


def fit(size: tuple[int, int], box: int) -> tuple[int, int]:
    w, h = size
    if w <= box and h <= box:
        return size
    if w >= h:
        return box, max(1, round(h * box / w))
    return max(1, round(w * box / h)), box


def temp_files(*roots: Path) -> list[str]:
    """Temporary files the thumbnail writer may leave beside its output."""
    return [
        os.path.join(d, n)
        for root in roots
        for d, _, names in os.walk(root)
        for n in names
        if n.endswith(".parjobs-tmp")
    ]


async def run_job(store_path: str, job: ThumbnailJob) -> tuple[dict[str, Any], Any, list[Any]]:
    """Submit ``job``, wait for its end; return (result, info, errors)."""
    async with parjobs.open_manager(store_path) as manager:
        handle = await manager.submit(job)
        result = await handle.result()
        return result, await handle.info(), await manager.errors(handle.id)


def freedesktop(src: Path, cache_home: Path, size_name: str = "large") -> Path:
    return Path(freedesktop_thumbnail_path(src, size_name, cache_home))


def cached(src: Path, out: Path, size: int, fmt: str) -> Path:
    return Path(cache_thumbnail_path(out, thumbnail_id(str(src)), size, fmt))


# -- layouts and formats ------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["webp", "jpeg", "png"])
async def test_cache_layout_thumbnails_every_input_format(store_path, tmp_path, fmt):
    images = make_images(tmp_path / "src")
    out = tmp_path / "cache"
    job = ThumbnailJob(paths=[str(tmp_path / "src")], size=128, format=fmt, out_dir=str(out))
    result, info, errors = await run_job(store_path, job)
    assert result == {
        "made": 5,
        "skipped": 1,
        "up_to_date": 0,
        "not_image": 1,
        "skipped_reasons": {"not an image": 1},
        "failed": 0,
        "out_dir": str(out),
        "layout": "cache",
    }
    assert info.status is JobStatus.COMPLETED and errors == []
    assert info.progress.items_total == 6 and info.progress.totals_final
    assert info.progress.bytes_done == info.progress.bytes_total
    for src, size in images.items():
        with Image.open(cached(src, out, 128, fmt)) as thumb:
            assert thumb.format == {"webp": "WEBP", "jpeg": "JPEG", "png": "PNG"}[fmt]
            assert thumb.size == fit(size, 128), src
            if fmt != "jpeg" and src.suffix == ".png":
                assert "A" in thumb.mode  # transparency kept
    assert temp_files(out) == []


async def test_freedesktop_layout_and_up_to_date_checks(store_path, tmp_path):
    images = make_images(tmp_path / "src")
    home = tmp_path / "home-cache"
    job = ThumbnailJob(
        paths=[str(tmp_path / "src")],
        layout="freedesktop",  # the default format: PNG for this layout (it was refused)
        out_dir=str(home / "thumbnails"),
    )
    assert job.format == "png" and job.to_spec()["format"] == "png"
    assert ThumbnailJob(paths=["x"], out_dir="/o").format == "webp"  # the cache's default
    result, info, _ = await run_job(store_path, job)
    assert (result["made"], result["not_image"], result["failed"]) == (5, 1, 0)
    assert result["out_dir"] == str(home / "thumbnails")
    for src, size in images.items():
        thumb = freedesktop(src, home)
        assert freedesktop_is_up_to_date(thumb, src)
        with Image.open(thumb) as im:
            assert im.size == fit(size, 256)
            assert im.info["Thumb::URI"] == src.as_uri()
        assert thumb.stat().st_mode & 0o777 == 0o600

    # A second run finds everything up to date.
    result, info, _ = await run_job(store_path, job)
    assert (result["made"], result["up_to_date"], result["not_image"]) == (0, 5, 1)
    assert result["skipped_reasons"] == {"up to date": 5, "not an image": 1}
    assert info.status is JobStatus.COMPLETED

    # A touched source (new mtime) is redone, the others still skipped.
    touched = tmp_path / "src" / "photo.jpg"
    before = freedesktop(touched, home).stat().st_mtime_ns
    st = touched.stat()
    os.utime(touched, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    assert not freedesktop_is_up_to_date(freedesktop(touched, home), touched)
    result, _, _ = await run_job(store_path, job)
    assert (result["made"], result["up_to_date"]) == (1, 4)
    assert freedesktop(touched, home).stat().st_mtime_ns != before
    assert freedesktop_is_up_to_date(freedesktop(touched, home), touched)
    assert temp_files(home) == []


async def test_cache_layout_second_run_skips_everything(store_path, tmp_path):
    images = make_images(tmp_path / "src")
    out = tmp_path / "src" / ".thumbs"  # inside the walked tree: never thumbnailed itself
    job = ThumbnailJob(paths=[str(tmp_path / "src")], out_dir=str(out))
    first, _, _ = await run_job(store_path, job)
    made = {p: cached(p, out, 256, "webp").stat().st_mtime_ns for p in images}
    second, info, _ = await run_job(store_path, job)
    assert (first["made"], first["up_to_date"]) == (5, 0)
    assert (second["made"], second["up_to_date"], second["not_image"]) == (0, 5, 1)
    assert info.status is JobStatus.COMPLETED
    assert {p: cached(p, out, 256, "webp").stat().st_mtime_ns for p in images} == made


async def test_two_images_alike_where_a_content_id_samples_get_a_thumbnail_each(
    store_path, tmp_path
):
    """Two scanned pages of one size (uncompressed BMPs, 4 MB) whose paragraphs lie between
    the blocks a sampled content id reads: each gets its own thumbnail, showing its own
    paragraph. Keyed by that id (until session 23), both were filed under one name, the
    second page shown as the first, and a second run called the other "up to date"."""
    src, out = tmp_path / "src", tmp_path / "thumbs"
    src.mkdir()
    for name, top in (("page0.bmp", 100), ("page1.bmp", 500)):
        page = Image.new("L", (2000, 2000), 255)
        page.paste(0, (100, top, 1900, top + 100))  # rows no sampled block of the file holds
        page.save(src / name)
    job = ThumbnailJob(paths=[str(src)], out_dir=str(out), size=200, format="png")
    first, _, errors = await run_job(store_path, job)
    assert (first["made"], errors) == (2, [])
    for name, top in (("page0.bmp", 10), ("page1.bmp", 50)):  # (2000 px -> 200)
        with Image.open(cached(src / name, out, 200, "png")) as thumb:
            gray = thumb.convert("L")
            column = [gray.getpixel((100, y)) for y in range(gray.height)]
        dark = [y for y, v in enumerate(column) if isinstance(v, int) and v < 128]
        assert dark and top - 1 <= min(dark) and max(dark) <= top + 10, (name, dark)
    assert len(list(out.rglob("*.png"))) == 2
    second, _, _ = await run_job(store_path, job)
    assert (second["made"], second["up_to_date"]) == (0, 2)


async def test_an_image_saved_in_place_between_its_key_and_its_decode_is_not_filed(
    store_path, tmp_path, monkeypatch
):
    """A scanned page rewritten in place with the next page's bytes (one size) and its mtime
    put back (``touch -r``, a tagger keeping the date) after its key was read and before it
    was decoded: the thumbnail of page 1 was filed under page 0's key (size, mtime and inode
    the same), and a run again called it up to date. Its ctime moved: the image fails,
    named, and nothing is filed under the old key."""
    src, out = tmp_path / "src", tmp_path / "thumbs"
    src.mkdir()
    pages = []
    for top in (100, 500):
        page = Image.new("L", (400, 400), 255)
        page.paste(0, (20, top // 5, 380, top // 5 + 20))
        buf = io.BytesIO()
        page.save(buf, "BMP")
        pages.append(buf.getvalue())
    image = src / "page.bmp"
    image.write_bytes(pages[0])
    key = thumbnail_id(str(image))
    real = _thumbnail.thumbnail_id

    def then_saved_in_place(path: str | bytes, check: Any = None) -> str:
        value = real(path, check) if check is not None else real(path)
        ctime = os.lstat(path).st_ctime_ns
        while clock_ns() <= ctime:  # (a new tick of the kernel's coarse clock: a new ctime)
            time.sleep(0.001)
        save_in_place(image, pages[1])
        return value

    monkeypatch.setattr(_thumbnail, "thumbnail_id", then_saved_in_place)
    job = ThumbnailJob(paths=[str(src)], out_dir=str(out), size=100, format="png")
    result, _, errors = await run_job(store_path, job)
    assert (result["made"], result["failed"]) == (0, 1), errors
    assert errors[0].error == "SourceChangedError" and "page.bmp" in errors[0].message
    assert not Path(cache_thumbnail_path(out, key, 100, "png")).exists()
    assert [p for p in out.rglob("*") if p.is_file()] == [], temp_files(out)


@pytest.mark.parametrize("out_rel", [".", "sub"])
async def test_images_in_the_output_directory_itself_are_thumbnailed(store_path, tmp_path, out_rel):
    """``--out`` the photos' own directory (or one of its subdirectories): the user's images
    there are thumbnailed (one in a directory named like a size, too), only the thumbnails
    are left out. They were all left out silently: "completed, 0 made", exit 0."""
    src = tmp_path / "src"
    images = [*make_images(src), src / out_rel / "2023" / "year.png"]
    out = src / out_rel
    (out / "2023").mkdir()
    photo((300, 200), 7).save(out / "2023" / "year.png")
    job = ThumbnailJob(paths=[str(src)], out_dir=str(out))
    first, info, _ = await run_job(store_path, job)
    assert info.status is JobStatus.COMPLETED
    assert (first["made"], first["not_image"]) == (6, 1)
    assert all(cached(p, out, 256, "webp").stat().st_size for p in images)
    second, _, _ = await run_job(store_path, job)  # its own thumbnails are not walked as images
    assert (second["made"], second["up_to_date"], second["not_image"]) == (0, 6, 1)


@pytest.mark.parametrize("spelling", ["link/", "link/src"])
async def test_own_thumbnails_are_left_out_when_a_root_reaches_them_through_a_symlink(
    store_path, tmp_path, spelling
):
    """The output directory inside the tree, the tree given through a symlink (``link/``,
    walked since 9c3690a, or a path below a symlinked directory) and ``--out`` by its real
    path: each run thumbnailed the thumbnails of the runs before (40 images: 80 files in the
    output after the second run, 120 after the third), as the walk's paths did not start
    with the output's spelling."""
    (tmp_path / "real").mkdir()
    os.symlink("real", tmp_path / "link")
    src = tmp_path / "real" / "src"
    make_images(src)
    out = src / ".thumbs"
    job = ThumbnailJob(paths=[os.path.join(tmp_path, spelling)], out_dir=str(out))
    first, info, _ = await run_job(store_path, job)
    assert info.status is JobStatus.COMPLETED
    made = first["made"]
    assert made > 0
    second, _, _ = await run_job(store_path, job)
    assert (second["made"], second["up_to_date"]) == (0, made)
    assert sum(len(files) for _, _, files in os.walk(out)) == made


async def test_exif_orientation_is_applied_by_pixel(store_path, tmp_path):
    src = tmp_path / "turned.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: display turned 90 degrees clockwise
    quadrants((400, 300)).save(src, "JPEG", exif=exif, quality=95)
    out = tmp_path / "cache"
    result, _, _ = await run_job(
        store_path, ThumbnailJob(paths=[str(src)], size=200, format="png", out_dir=str(out))
    )
    assert result["made"] == 1
    with Image.open(cached(src, out, 200, "png")) as im:
        rgb = im.convert("RGB")
    assert rgb.size == (150, 200)
    w, h = rgb.size
    got = [rgb.getpixel((x, y)) for y in (h // 5, h * 4 // 5) for x in (w // 5, w * 4 // 5)]
    expected = [BLUE, RED, YELLOW, GREEN]  # top-left, top-right, bottom-left, bottom-right
    for pixel, colour in zip(got, expected, strict=True):
        assert isinstance(pixel, tuple)
        assert max(abs(a - b) for a, b in zip(pixel, colour, strict=True)) < 40, (got, expected)


# -- bad images ---------------------------------------------------------------------------------


def png_claiming(path: Path, width: int, height: int) -> Path:
    """A tiny valid PNG whose header claims ``width`` x ``height`` (a decompression bomb)."""
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), RED).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    ihdr = b"IHDR" + struct.pack(">II", width, height) + bytes(data[24:29])
    data[8:33] = struct.pack(">I", 13) + ihdr + struct.pack(">I", zlib.crc32(ihdr))
    path.write_bytes(bytes(data))
    return path


def make_bad_images(root: Path) -> dict[Path, str]:
    """A corrupt file, a truncated JPEG and a decompression bomb, with the reason expected."""
    root.mkdir(parents=True, exist_ok=True)
    corrupt = root / "corrupt.jpg"
    corrupt.write_bytes(os.urandom(5000))
    whole = root / "whole.jpg"
    photo((800, 600), 5).save(whole, quality=90)
    truncated = root / "truncated.jpg"
    truncated.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    whole.unlink()
    bomb = png_claiming(root / "bomb.png", 60_000, 60_000)
    return {corrupt: "not an image", truncated: "truncated", bomb: "pixels"}


@pytest.mark.parametrize("layout", ["cache", "freedesktop"])
async def test_bad_images_fail_alone_with_a_reason(store_path, tmp_path, layout):
    images = make_images(tmp_path / "src")
    bad = make_bad_images(tmp_path / "src" / "bad")
    home = tmp_path / "home-cache"
    out = tmp_path / "cache" if layout == "cache" else home / "thumbnails"
    fmt: Literal["png", "webp"] = "png" if layout == "freedesktop" else "webp"
    job = ThumbnailJob(paths=[str(tmp_path / "src")], layout=layout, format=fmt, out_dir=str(out))
    result, info, errors = await run_job(store_path, job)
    assert info.status is JobStatus.COMPLETED_WITH_ERRORS
    assert (result["made"], result["failed"], result["not_image"]) == (5, 3, 1)
    reasons = {e.label: e.message for e in errors}
    assert set(reasons) == {str(p) for p in bad}
    for path, expected in bad.items():
        assert expected in reasons[str(path)], reasons[str(path)]
    assert {e.error for e in errors} >= {"ImageError", "ImageTooLargeError"}
    for src in images:  # the others were not affected
        if layout == "cache":
            assert cached(src, out, 256, "webp").exists()
        else:
            assert freedesktop(src, home).exists()
    if layout == "freedesktop":  # the standard's fail markers, for other applications
        for path in bad:
            assert freedesktop_is_up_to_date(freedesktop_fail_path(path, home), path)
        assert not Path(freedesktop_fail_path(next(iter(images)), home)).exists()
    assert temp_files(out) == []


async def test_max_pixels_refuses_large_images(store_path, tmp_path):
    src = tmp_path / "big.jpg"
    photo((1200, 800)).save(src, quality=80)
    job = ThumbnailJob(paths=[str(src)], out_dir=str(tmp_path / "c"), max_pixels=500_000)
    result, info, errors = await run_job(store_path, job)
    assert (result["made"], result["failed"]) == (0, 1)
    assert info.status is JobStatus.COMPLETED_WITH_ERRORS
    assert "more than the limit of 500000" in errors[0].message


async def test_label_shows_undecodable_names_and_symlinks_are_skipped(store_path, tmp_path):
    root = tmp_path / "src"
    root.mkdir()
    name = os.fsencode(str(root)) + b"/caf\xe9.jpg"
    with open(name, "wb") as f:
        f.write(b"not a jpeg at all")
    photo((100, 80)).save(root / "ok.png")
    os.symlink(root / "ok.png", root / "link.png")
    job = ThumbnailJob(paths=[str(root)], out_dir=str(tmp_path / "c"))
    result, _, errors = await run_job(store_path, job)
    assert (result["made"], result["not_image"], result["failed"]) == (1, 1, 1)
    assert [e.label for e in errors] == [str(root) + "/caf\\xe9.jpg"]


# -- specs --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ({"paths": []}, "no paths"),
        ({"paths": ["/no/such/dir"]}, "does not exist"),
        ({"size": 0}, "size"),
        ({"size": -5}, "size"),
        ({"size": 4097}, "size"),
        ({"quality": 0}, "quality"),
        ({"quality": 101}, "quality"),
        ({"max_pixels": 0}, "max_pixels"),
        ({"format": "gif"}, "format"),
        ({"layout": "flat"}, "layout"),
        ({"out_dir": None}, "needs out_dir"),
        ({"layout": "freedesktop", "format": "webp"}, "PNG only"),
        ({"layout": "freedesktop", "format": "png", "size": 300}, "128"),
        ({"layout": "freedesktop", "format": "png", "out_dir": "/tmp/x"}, "named 'thumbnails'"),
    ],
)
async def test_bad_specs_are_refused_before_anything_runs(store_path, tmp_path, spec, match):
    (tmp_path / "src").mkdir()
    fields = {"paths": [str(tmp_path / "src")], "out_dir": str(tmp_path / "out"), **spec}
    with pytest.raises(JobSpecError, match=match):
        ThumbnailJob(**fields).validate()
    with pytest.raises(JobSpecError, match=match):
        ThumbnailJob.from_spec(fields)
    async with parjobs.open_manager(store_path) as manager:
        with pytest.raises(JobSpecError, match=match):
            await manager.submit(ThumbnailJob(**fields))
        assert await manager.list_jobs() == []
    assert not (tmp_path / "out").exists()


def test_spec_round_trip_and_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pics").mkdir()
    job = ThumbnailJob(paths=["pics"], out_dir="out")
    job.validate()  # (what a submit does: a loaded spec's relative path is refused there)
    assert job.paths == [str(tmp_path / "pics")]  # resolved once, on submission
    spec = job.to_spec()
    assert spec == {
        "paths": [str(tmp_path / "pics")],
        "size": 256,
        "format": "webp",
        "layout": "cache",
        "out_dir": str(tmp_path / "out"),
        "quality": 80,
        "max_pixels": 100_000_000,
    }
    assert ThumbnailJob.from_spec(spec) == job
    assert parjobs.registered_job_types()["thumbnails"] is ThumbnailJob
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    fd = ThumbnailJob(paths=["pics"], layout="freedesktop", format="png", size=128)
    assert fd.out_dir == str(tmp_path / "xdg" / "thumbnails")
    fd.validate()


# -- cancel, crash and resume -------------------------------------------------------------------


def make_photos(root: Path, n: int) -> None:
    """``n`` distinct 1200x800 JPEG photos."""
    root.mkdir()
    base = photo((1200, 800))
    for i in range(n):
        im = base.copy()
        im.paste((i * 4, 255 - i * 4, 0), (i * 15, i * 10, i * 15 + 60, i * 10 + 60))
        im.save(root / f"img{i:02}.jpg", quality=85)


async def test_cancel_mid_job_leaves_no_temporary_file(store_path, tmp_path):
    src, out = tmp_path / "src", tmp_path / "cache"
    make_photos(src, 30)
    async with parjobs.open_manager(store_path, workers=2, lanes={"cpu": 1}) as manager:
        handle = await manager.submit(ThumbnailJob(paths=[str(src)], out_dir=str(out)))
        with trio.fail_after(30):
            while not list(out.glob("256/*/*.webp")):
                await trio.sleep(0.002)
        await handle.cancel()
        assert await handle.wait() is JobStatus.CANCELLED
    assert 0 < len(list(out.glob("256/*/*.webp"))) < 30
    assert temp_files(out) == []


def checkpointed(store_path: str) -> int:
    """Completions the child has recorded so far (0 while the store is not there yet)."""
    try:
        with contextlib.closing(sqlite3.connect(store_path, timeout=5)) as conn:
            row = conn.execute("SELECT MAX(done_items) FROM jobs").fetchone()
    except sqlite3.OperationalError:
        return 0
    return int(row[0] or 0)


async def test_kill_9_mid_job_then_resume_completes_without_temp_files(store_path, tmp_path):
    src, out = tmp_path / "src", tmp_path / "cache"
    n = 30
    make_photos(src, n)
    code = textwrap.dedent(
        f"""
        import time, trio, parjobs
        import parjobs.ops._thumbnail as thumbnail
        from parjobs.ops._thumbnail import ThumbnailJob
        make = thumbnail.make_thumbnail
        def slow_make(*args, **kwargs):  # 25 ms a thumbnail: the kill lands mid-job
            time.sleep(0.025)
            return make(*args, **kwargs)
        thumbnail.make_thumbnail = slow_make
        async def main():
            lanes = {{"cpu": 1}}
            async with parjobs.open_manager({store_path!r}, workers=1, lanes=lanes) as m:
                job = ThumbnailJob(paths=[{str(src)!r}], out_dir={str(out)!r})
                h = await m.submit(job)
                print(await h.wait(), flush=True)
        trio.run(main)
        """
    )
    child = Forked([], code=code, stdout=subprocess.DEVNULL)  # a real process, started warm
    try:
        with trio.fail_after(60):
            # Kill once some thumbnails are checkpointed and others are still to do.
            while len(list(out.glob("256/*/*.webp"))) < n // 3 or checkpointed(store_path) == 0:
                assert child.poll() is None, child.stderr.read() if child.stderr else ""
                await trio.sleep(0.005)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait()
        if child.stderr:
            child.stderr.close()
    made_before = len(list(out.glob("256/*/*.webp")))
    assert made_before < n, "the child finished before it was killed"
    async with parjobs.open_manager(store_path) as manager:
        (info,) = await manager.list_jobs()
        assert info.status is JobStatus.INTERRUPTED
        # what a kill during a write leaves behind: a temporary carrying the job's token
        shard = next(out.glob("256/*"))
        stray = shard / f".x.webp.{info.state['name_token']}.0123456789abcdef.parjobs-tmp"
        stray.write_bytes(b"partial")
        assert 0 < info.done_items <= made_before  # the resume skips what was recorded
        handle = await manager.resume(info.id)
        result = await handle.result()
        final = await handle.info()
    assert final.status is JobStatus.COMPLETED
    assert result["made"] + result["up_to_date"] == n
    assert (result["failed"], result["not_image"]) == (0, 0)
    for path in sorted(src.iterdir()):
        with Image.open(cached(path, out, 256, "webp")) as im:
            assert im.size == (256, 171)
            im.load()  # whole, not truncated
    assert temp_files(out) == []
    assert not os.path.exists(store_path + ".d" + os.sep + info.id)  # job dir removed


# -- memory ---------------------------------------------------------------------------------------

_THUMBNAIL_CHILD = textwrap.dedent(
    """
    import sys, trio, parjobs
    from parjobs.ops._thumbnail import ThumbnailJob

    async def main(store, out, *paths):
        async with parjobs.open_manager(store, lanes={"cpu": 3}) as manager:
            handle = await manager.submit(ThumbnailJob(paths=list(paths), out_dir=out))
            print((await handle.result())["made"])

    trio.run(main, *sys.argv[1:])
    """
)


def peak_rss_of_thumbnails(tmp_path: Path, name: str, images: list[Path], budget: int) -> int:
    """Peak RSS (bytes) of a child process thumbnailing ``images`` on 3 cpu threads with a
    decode budget of ``budget`` bytes; it must make them all."""
    here = os.path.dirname(os.path.dirname(parjobs.__file__))
    env = {**os.environ, "PARJOBS_DECODE_MEMORY": str(budget), "PYTHONPATH": here}
    store, out = tmp_path / f"{name}.db", tmp_path / f"{name}-out"
    args = [str(store), str(out), *map(str, images)]
    child = subprocess.Popen(
        [sys.executable, "-c", _THUMBNAIL_CHILD, *args], env=env, stdout=subprocess.PIPE
    )
    assert child.stdout is not None
    made = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    assert (child.returncode, made) == (0, f"{len(images)}\n".encode())
    return usage.ru_maxrss * 1024


def test_big_decodes_wait_for_each_other_within_the_memory_budget(tmp_path):
    """Three 20 MP PNGs (80 MB each decoded) on three threads, with a budget of 120 MB:
    one decodes at a time, and the memory each frees is given back before the next starts,
    so the peak is that of a run with one image (it was 130 MB more: all three at once)."""
    big = []
    for i in range(3):
        big.append(tmp_path / f"pano{i}.png")
        padding = PngImagePlugin.PngInfo()  # 2 MB on disk: a task of its own, as a panorama's
        padding.add(b"prVt", os.urandom(2 << 20))
        Image.new("RGB", (5000, 4000), (i, 0, 0)).save(big[-1], compress_level=1, pnginfo=padding)
    budget = 120 * 1024 * 1024
    alone = peak_rss_of_thumbnails(tmp_path, "alone", big[:1], budget)
    together = peak_rss_of_thumbnails(tmp_path, "together", big, budget)
    assert together - alone < 40 * 1024 * 1024, (alone, together)


async def test_a_dot_dot_through_a_symlink_is_the_kernels(store_path, tmp_path, monkeypatch):
    """``link/../img.png`` is, for the kernel (and the CLI), the image next to the link's
    target; the job made its paths absolute lexically and thumbnailed the image beside the
    link, another file, into an ``out_dir`` beside the link. Both are resolved as the kernel
    does when the job is submitted (its paths are absolute from then on)."""
    (tmp_path / "real" / "sub").mkdir(parents=True)
    (tmp_path / "here").mkdir()
    Image.new("RGB", (40, 20), RED).save(tmp_path / "real" / "img.png")
    Image.new("RGB", (20, 40), BLUE).save(tmp_path / "here" / "img.png")
    (tmp_path / "here" / "link").symlink_to("../real/sub")
    monkeypatch.chdir(tmp_path / "here")
    job = ThumbnailJob(paths=["link/../img.png"], size=16, out_dir="link/../cache")
    result, info, errors = await run_job(store_path, job)
    assert info.status is JobStatus.COMPLETED and result["made"] == 1, errors
    out = tmp_path / "real" / "cache"
    assert result["out_dir"] == str(out) and not (tmp_path / "here" / "cache").exists()
    with Image.open(cached(tmp_path / "real" / "img.png", out, 16, "webp")) as thumb:
        assert thumb.size == (16, 8)
