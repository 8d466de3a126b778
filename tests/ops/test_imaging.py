"""Tests for the blocking thumbnail primitives, on real images generated with Pillow."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import stat
import struct
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from _images import BLUE, GREEN, RED, YELLOW, quadrants
from PIL import Image, ImageCms, ImageOps

from parjobs.ops import (
    ImageError,
    ImageTooLargeError,
    SpecialFileError,
    UnsupportedImageError,
    _imaging,
)
from parjobs.ops._imaging import (
    FORMATS,
    SIZES,
    ThumbResult,
    cache_thumbnail_path,
    file_uri,
    freedesktop_fail_path,
    freedesktop_is_up_to_date,
    freedesktop_thumbnail_path,
    make_freedesktop_thumbnail,
    make_thumbnail,
    write_fail_marker,
)

WHITE = (255, 255, 255)


# -- image factories ----------------------------------------------------------------------------


def photo(size: tuple[int, int] = (3000, 2000)) -> Image.Image:
    """An RGB image with gradients and noise, so JPEG has real work to do."""
    red = Image.linear_gradient("L").resize(size)
    green = Image.linear_gradient("L").rotate(90).resize(size)
    blue = Image.effect_noise(size, 60)
    return Image.merge("RGB", (red, green, blue))


def save_jpeg(im: Image.Image, path: Path, orientation: int | None = None, **kw: object) -> Path:
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    im.save(path, "JPEG", exif=exif, **kw)
    return path


def pixel(im: Image.Image, xy: tuple[int, int]) -> tuple[int, ...]:
    """The pixel at ``xy`` as a tuple, whatever the mode."""
    value = im.getpixel(xy)
    return value if isinstance(value, tuple) else (int(value or 0),)


def nearest(colour: tuple[int, ...]) -> tuple[int, int, int]:
    palette = (RED, GREEN, BLUE, YELLOW, WHITE)
    return min(palette, key=lambda p: sum((a - b) ** 2 for a, b in zip(p, colour, strict=False)))


def corners(path: Path) -> list[tuple[int, int, int]]:
    """Nearest named colour at 15% inside each corner: top-left, top-right, bottom-left, -right."""
    with Image.open(path) as im:
        rgb = im.convert("RGB")
    w, h = rgb.size
    xs, ys = (w * 15 // 100, w * 85 // 100), (h * 15 // 100, h * 85 // 100)
    return [nearest(pixel(rgb, (x, y))) for y in ys for x in xs]


def with_crc(chunk_type: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(chunk_type + data)
    return struct.pack(">I", len(data)) + chunk_type + data + struct.pack(">I", crc)


def png_claiming(path: Path, width: int, height: int) -> Path:
    """A small valid PNG whose IHDR is patched to claim ``width`` x ``height`` (CRC fixed)."""
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), RED).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[8:33] = with_crc(b"IHDR", ihdr)
    path.write_bytes(bytes(data))
    return path


@pytest.fixture(scope="module")
def big_jpeg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_jpeg(photo(), tmp_path_factory.mktemp("src") / "big.jpg", quality=90)


def listing(directory: Path) -> list[str]:
    return sorted(os.listdir(directory)) if directory.exists() else []


# -- sizes, formats, draft ------------------------------------------------------------------------


def test_constants() -> None:
    assert dict(SIZES) == {"normal": 128, "large": 256, "x-large": 512, "xx-large": 1024}
    assert FORMATS == ("webp", "jpeg", "png")


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("box", [128, 256, (300, 100), (100, 300)])
def test_fits_box_and_keeps_aspect(
    big_jpeg: Path, tmp_path: Path, fmt: str, box: int | tuple[int, int]
) -> None:
    dst = tmp_path / f"t.{fmt}"
    result = make_thumbnail(big_jpeg, dst, box=box, fmt=fmt)
    bw, bh = (box, box) if isinstance(box, int) else box
    assert isinstance(result, ThumbResult)
    assert result.dst == str(dst)
    assert (result.source_width, result.source_height) == (3000, 2000)
    assert result.width <= bw and result.height <= bh
    assert result.width == bw or result.height == bh
    assert abs(result.width / result.height - 1.5) < 1.5 / min(result.width, result.height)
    with Image.open(dst) as out:
        assert out.format == {"webp": "WEBP", "jpeg": "JPEG", "png": "PNG"}[fmt]
        assert out.size == (result.width, result.height)
    assert listing(tmp_path) == [dst.name]  # no temporary file left beside it


def test_small_image_is_not_enlarged(tmp_path: Path) -> None:
    src = tmp_path / "small.png"
    photo((100, 50)).save(src)
    result = make_thumbnail(src, tmp_path / "t.webp", box=256)
    assert (result.width, result.height) == (100, 50)


@pytest.mark.parametrize(
    ("box", "decoded"), [(256, (375, 250)), (128, (375, 250)), (1024, (1500, 1000))]
)
def test_jpeg_draft_decodes_at_reduced_scale(
    big_jpeg: Path, box: int, decoded: tuple[int, int]
) -> None:
    """The JPEG is decoded at the smallest DCT scale (1/2 .. 1/8) still at least the target
    size: 1/8 for 256 and 128 px, 1/2 for 1024 px."""
    with big_jpeg.open("rb") as fp:
        result = _imaging._decode(
            fp, str(big_jpeg), (box, box), 10**9, lambda: None, contextlib.ExitStack()
        )
    tw, th = result.target
    assert (tw, th) == (box, round(box * 2 / 3))
    w, h = result.image.size
    assert w >= tw and h >= th
    assert (w, h) == decoded


def test_png_is_decoded_at_full_size(tmp_path: Path) -> None:
    src = tmp_path / "p.png"
    photo((600, 400)).save(src)
    with src.open("rb") as fp:
        result = _imaging._decode(
            fp, str(src), (64, 64), 10**9, lambda: None, contextlib.ExitStack()
        )
    assert result.image.size == (600, 400)
    assert result.crop is None


# -- orientation, checked by pixel ---------------------------------------------------------------

# Displayed colours of [top-left, top-right, bottom-left, bottom-right] for the stored quadrants
# red, green / blue, yellow.
ORIENTED = {
    1: [RED, GREEN, BLUE, YELLOW],
    3: [YELLOW, BLUE, GREEN, RED],  # turned 180 degrees
    6: [BLUE, RED, YELLOW, GREEN],  # turned 90 degrees clockwise
    8: [GREEN, YELLOW, RED, BLUE],  # turned 90 degrees counter-clockwise
}


@pytest.mark.parametrize("orientation", sorted(ORIENTED))
@pytest.mark.parametrize("fmt", FORMATS)
def test_exif_orientation_by_pixel(tmp_path: Path, orientation: int, fmt: str) -> None:
    src = save_jpeg(quadrants((400, 300)), tmp_path / "q.jpg", orientation, quality=95)
    dst = tmp_path / f"t.{fmt}"
    result = make_thumbnail(src, dst, box=200, fmt=fmt)
    turned = orientation in (6, 8)
    assert (result.width, result.height) == ((150, 200) if turned else (200, 150))
    assert (result.source_width, result.source_height) == ((300, 400) if turned else (400, 300))
    assert corners(dst) == ORIENTED[orientation]
    # Pillow's own exif_transpose agrees with the table above.
    with Image.open(src) as im:
        upright = ImageOps.exif_transpose(im)
        upright.save(tmp_path / "oracle.png")
    assert corners(tmp_path / "oracle.png") == ORIENTED[orientation]


@pytest.mark.parametrize("ext", ["png", "webp", "tiff"])
def test_exif_orientation_of_other_formats(tmp_path: Path, ext: str) -> None:
    exif = Image.Exif()
    exif[0x0112] = 8
    src = tmp_path / f"q.{ext}"
    if ext == "tiff":
        quadrants().save(src, tiffinfo={0x0112: 8})
    else:
        quadrants().save(src, exif=exif, lossless=True)
    result = make_thumbnail(src, tmp_path / "t.png", box=200, fmt="png")
    assert (result.width, result.height) == (150, 200)
    assert corners(tmp_path / "t.png") == ORIENTED[8]


def test_orientation_with_non_square_box(tmp_path: Path) -> None:
    src = save_jpeg(quadrants((1200, 800)), tmp_path / "q.jpg", 6)
    result = make_thumbnail(src, tmp_path / "t.png", box=(300, 100), fmt="png")
    assert (result.width, result.height) == (67, 100)  # displayed 800x1200 fits 300x100
    assert corners(tmp_path / "t.png") == ORIENTED[6]


# -- modes ------------------------------------------------------------------------------------


def rgba_source(tmp_path: Path) -> Path:
    """Left half opaque red, right half fully transparent."""
    im = Image.new("RGBA", (400, 200), (*RED, 255))
    im.paste((0, 0, 0, 0), (200, 0, 400, 200))
    im.save(tmp_path / "a.png")
    return tmp_path / "a.png"


@pytest.mark.parametrize(("fmt", "mode"), [("png", "RGBA"), ("webp", "RGBA"), ("jpeg", "RGB")])
def test_alpha_kept_or_flattened_onto_white(tmp_path: Path, fmt: str, mode: str) -> None:
    dst = tmp_path / f"t.{fmt}"
    make_thumbnail(rgba_source(tmp_path), dst, box=100, fmt=fmt)
    with Image.open(dst) as out:
        assert out.mode == mode
        left, right = pixel(out, (10, 25)), pixel(out, (90, 25))
    assert nearest(left) == RED
    if mode == "RGBA":
        assert left[3] == 255 and right[3] == 0
    else:
        assert nearest(right) == WHITE


@pytest.mark.parametrize("transparent", [True, False])
def test_palette_png(tmp_path: Path, transparent: bool) -> None:
    im = Image.new("P", (300, 300), 1)
    im.putpalette([0, 0, 0, *RED, *GREEN] + [0] * (253 * 3))
    im.paste(0, (0, 0, 150, 300))
    im.paste(2, (150, 0, 300, 150))
    if transparent:
        im.info["transparency"] = 0
    im.save(tmp_path / "p.png")
    make_thumbnail(tmp_path / "p.png", tmp_path / "t.png", box=100, fmt="png")
    with Image.open(tmp_path / "t.png") as out:
        assert out.mode == ("RGBA" if transparent else "RGB")
        assert pixel(out, (80, 20))[:3] == GREEN
        assert pixel(out, (80, 80))[:3] == RED
        if transparent:
            assert pixel(out, (20, 50))[3] == 0
        # Lanczos, not nearest: the red/green edge is blended.
        assert pixel(out, (80, 50))[:3] not in (RED, GREEN)


@pytest.mark.parametrize("fmt", FORMATS)
def test_16_bit_grayscale_png_is_scaled_not_clipped(tmp_path: Path, fmt: str) -> None:
    Image.new("I;16", (300, 200), 32768).save(tmp_path / "g16.png")  # mid grey in 16 bits
    with Image.open(tmp_path / "g16.png") as check:
        assert check.mode == "I;16" and check.getpixel((0, 0)) == 32768
    make_thumbnail(tmp_path / "g16.png", tmp_path / f"t.{fmt}", box=100, fmt=fmt)
    with Image.open(tmp_path / f"t.{fmt}") as out:
        assert out.mode == ("L" if fmt != "webp" else "RGB")  # 8 bits per channel
        (value,) = pixel(out.convert("L"), (50, 30))
    assert 120 <= value <= 136


def test_webp_and_cmyk_sources(tmp_path: Path) -> None:
    quadrants().save(tmp_path / "q.webp", quality=95)
    quadrants().convert("CMYK").save(tmp_path / "c.jpg", quality=95)
    for name in ("q.webp", "c.jpg"):
        result = make_thumbnail(tmp_path / name, tmp_path / f"{name}.png", box=200, fmt="png")
        assert (result.width, result.height) == (200, 150)
        assert corners(tmp_path / f"{name}.png") == ORIENTED[1]


@pytest.mark.parametrize("ext", ["gif", "webp"])
def test_only_the_first_frame_of_an_animation(tmp_path: Path, ext: str) -> None:
    frames = [Image.new("RGB", (200, 100), c) for c in (RED, GREEN, BLUE)]
    frames[0].save(tmp_path / f"anim.{ext}", save_all=True, append_images=frames[1:], duration=50)
    with Image.open(tmp_path / f"anim.{ext}") as check:
        assert getattr(check, "n_frames", 1) == 3
    make_thumbnail(tmp_path / f"anim.{ext}", tmp_path / "t.png", box=64, fmt="png")
    with Image.open(tmp_path / "t.png") as out:
        assert out.size == (64, 32)
        assert nearest(pixel(out.convert("RGB"), (32, 16))) == RED


def test_icc_profile_is_carried_over(tmp_path: Path) -> None:
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    save_jpeg(photo((400, 300)), tmp_path / "s.jpg", icc_profile=icc)
    for fmt in FORMATS:
        make_thumbnail(tmp_path / "s.jpg", tmp_path / f"t.{fmt}", box=64, fmt=fmt)
        with Image.open(tmp_path / f"t.{fmt}") as out:
            assert out.info.get("icc_profile") == icc


# -- bad input --------------------------------------------------------------------------------


def assert_fails_cleanly(
    src: Path, out_dir: Path, error: type[ImageError], words: str, **kw: object
) -> ImageError:
    out_dir.mkdir()
    with pytest.raises(error) as info:
        make_thumbnail(src, out_dir / "t.webp", **kw)  # type: ignore[arg-type]
    message = str(info.value)
    assert repr(str(src)) in message and words in message, message
    assert "<_io." not in message, message  # no file object formatted into it
    assert info.value.path == str(src)
    assert listing(out_dir) == []
    return info.value


def test_random_bytes_are_unsupported(tmp_path: Path) -> None:
    src = tmp_path / "noise.jpg"
    src.write_bytes(b"not an image at all\n" + os.urandom(4096))
    assert_fails_cleanly(src, tmp_path / "out", UnsupportedImageError, "not an image")


def test_truncated_jpeg(big_jpeg: Path, tmp_path: Path) -> None:
    data = big_jpeg.read_bytes()
    src = tmp_path / "half.jpg"
    src.write_bytes(data[: len(data) // 2])
    error = assert_fails_cleanly(src, tmp_path / "out", ImageError, "truncated")
    assert type(error) is ImageError


def test_corrupt_png_data(tmp_path: Path) -> None:
    buf = io.BytesIO()
    photo((200, 200)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    at = data.index(b"IDAT") + 4
    data[at : at + 2] = b"\xff\xff"  # an invalid zlib header
    src = tmp_path / "broken.png"
    src.write_bytes(bytes(data))
    assert_fails_cleanly(src, tmp_path / "out", ImageError, "corrupt")


def test_decompression_bomb_refused_by_pillow(tmp_path: Path) -> None:
    src = png_claiming(tmp_path / "bomb.png", 100_000, 100_000)
    assert_fails_cleanly(src, tmp_path / "out", ImageTooLargeError, "decompression bomb")


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_decompression_bomb_above_max_pixels(tmp_path: Path) -> None:
    src = png_claiming(tmp_path / "bomb.png", 12_000, 12_000)  # Pillow only warns for this
    assert_fails_cleanly(src, tmp_path / "out", ImageTooLargeError, "144000000 pixels")


@pytest.mark.filterwarnings("error::PIL.Image.DecompressionBombWarning")
def test_decompression_bomb_warning_as_error(tmp_path: Path) -> None:
    src = png_claiming(tmp_path / "bomb.png", 12_000, 12_000)
    assert_fails_cleanly(src, tmp_path / "out", ImageTooLargeError, "decompression bomb")


def test_max_pixels_is_checked_before_decoding(big_jpeg: Path, tmp_path: Path) -> None:
    assert_fails_cleanly(
        big_jpeg, tmp_path / "out", ImageTooLargeError, "3000x2000", max_pixels=10**6
    )


def test_symlinks_and_fifos_are_refused(big_jpeg: Path, tmp_path: Path) -> None:
    (tmp_path / "link.jpg").symlink_to(big_jpeg)
    os.mkfifo(tmp_path / "fifo.jpg")
    for name in ("link.jpg", "fifo.jpg"):
        with pytest.raises(SpecialFileError):
            make_thumbnail(tmp_path / name, tmp_path / "t.webp")
    assert not (tmp_path / "t.webp").exists()


@pytest.mark.parametrize(
    "kw",
    [
        {"fmt": "gif"},
        {"quality": 0},
        {"box": 0},
        {"box": (10, -1)},
        {"fmt": "jpeg", "metadata": {"Thumb::URI": "x"}},
        {"fmt": "png", "metadata": {"": "x"}},
        {"max_pixels": 0},
    ],
)
def test_bad_arguments(big_jpeg: Path, tmp_path: Path, kw: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        make_thumbnail(big_jpeg, tmp_path / "t", **kw)  # type: ignore[arg-type]
    assert listing(tmp_path) == []


class Stop(Exception):
    pass


def counting_check(stop_at: int | None) -> tuple[Callable[[], None], list[int]]:
    calls: list[int] = []

    def check() -> None:
        calls.append(1)
        if len(calls) == stop_at:
            raise Stop

    return check, calls


def test_interrupt_at_every_stage_leaves_nothing(big_jpeg: Path, tmp_path: Path) -> None:
    check, calls = counting_check(None)
    make_thumbnail(big_jpeg, tmp_path / "full" / "t.webp", check=check)
    stages = len(calls)
    assert stages >= 3  # after open, after decode, before the rename
    for stop_at in range(1, stages + 1):
        out = tmp_path / f"out{stop_at}"
        out.mkdir()
        check, _ = counting_check(stop_at)
        with pytest.raises(Stop):
            make_thumbnail(big_jpeg, out / "t.webp", check=check)
        assert listing(out) == []


def test_replaces_existing_output_and_creates_directories(big_jpeg: Path, tmp_path: Path) -> None:
    dst = tmp_path / "a" / "b" / "t.jpg"
    make_thumbnail(big_jpeg, dst, box=64, fmt="jpeg")
    make_thumbnail(big_jpeg, dst, box=32, fmt="jpeg", durable=False)
    with Image.open(dst) as out:
        assert out.size == (32, 21)
    assert listing(dst.parent) == ["t.jpg"]


def test_threads(tmp_path: Path) -> None:
    sources = []
    for i in range(8):
        sources.append(save_jpeg(photo((800 + 16 * i, 600)), tmp_path / f"{i}.jpg"))
    with ThreadPoolExecutor(4) as pool:
        results = list(
            pool.map(lambda s: make_thumbnail(s, s.with_suffix(".webp"), box=128), sources)
        )
    assert [r.width for r in results] == [128] * 8
    assert all(r.height == round(128 * 600 / r.source_width) for r in results)


# -- content-id cache layout ------------------------------------------------------------------


def test_cache_thumbnail_path() -> None:
    cid = "0123456789abcdef0123456789abcdef"
    assert cache_thumbnail_path("/c", cid, 256, "webp") == f"/c/256/01/{cid}.webp"
    assert cache_thumbnail_path("/c", cid, (256, 256), "jpeg") == f"/c/256/01/{cid}.jpg"
    assert cache_thumbnail_path(Path("/c"), cid, (300, 200), "png") == f"/c/300x200/01/{cid}.png"
    for bad in ("", "a", "../etc", "ab/cd", ".hidden"):
        with pytest.raises(ValueError):
            cache_thumbnail_path("/c", bad, 256, "webp")
    with pytest.raises(ValueError):
        cache_thumbnail_path("/c", cid, 256, "gif")


# -- freedesktop.org ----------------------------------------------------------------------------


def test_spec_example_path() -> None:
    uri = file_uri("/home/jens/photos/me.png")
    assert uri == "file:///home/jens/photos/me.png"
    assert hashlib.md5(uri.encode()).hexdigest() == "c6ee772d9e49320e97ec29a7eb5b1697"
    path = freedesktop_thumbnail_path("/home/jens/photos/me.png", "normal", "/home/jens/.cache")
    assert path == "/home/jens/.cache/thumbnails/normal/c6ee772d9e49320e97ec29a7eb5b1697.png"
    with pytest.raises(ValueError):
        freedesktop_thumbnail_path("/x.png", "huge", "/c")


def test_cache_home_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", "/xdg")
    assert freedesktop_thumbnail_path("/a.png", "large").startswith("/xdg/thumbnails/large/")
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/is/ignored")
    monkeypatch.setenv("HOME", "/home/u")
    assert freedesktop_thumbnail_path("/a.png", "large").startswith("/home/u/.cache/thumbnails/")


def test_file_uri_escaping(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    raw = b"/tmp/caf\xe9 \xc3\xa9;#?%.jpg"
    expected = "file:///tmp/caf%E9%20%C3%A9%3B%23%3F%25.jpg"
    assert file_uri(raw) == expected
    assert file_uri(os.fsdecode(raw)) == expected  # str with surrogate escapes
    assert file_uri("/a/b&c=d@e:f+g,h$i!'()*~_-.png") == "file:///a/b&c=d@e:f+g,h$i!'()*~_-.png"
    monkeypatch.chdir(tmp_path)
    assert file_uri("x/../y.png") == "file://" + str(tmp_path) + "/y.png"


def read_text(path: str | Path) -> dict[str, str]:
    with Image.open(path) as im:
        return {k: v for k, v in im.info.items() if isinstance(k, str) and isinstance(v, str)}


@pytest.mark.parametrize("name", [b"photo.jpg", b"caf\xe9 \xff.jpg"])
def test_freedesktop_thumbnail(tmp_path: Path, name: bytes) -> None:
    src = os.path.join(os.fsencode(tmp_path), name)
    save_jpeg(quadrants((1200, 800)), Path(os.fsdecode(src)), 6)
    cache = tmp_path / "cache"
    result = make_freedesktop_thumbnail(src, "normal", cache_home=cache)
    assert result.dst == freedesktop_thumbnail_path(src, "normal", cache)
    assert (result.width, result.height) == (85, 128)
    st = os.stat(src)
    text = read_text(result.dst)
    assert text["Thumb::URI"] == file_uri(src)
    assert text["Thumb::URI"].endswith("/caf%E9%20%FF.jpg" if b"\xff" in name else "/photo.jpg")
    assert text["Thumb::MTime"] == str(int(st.st_mtime))
    assert text["Thumb::Size"] == str(st.st_size)
    assert (text["Thumb::Image::Width"], text["Thumb::Image::Height"]) == ("800", "1200")
    assert text["Software"].startswith("parjobs-")
    assert corners(Path(result.dst)) == ORIENTED[6]
    # Permissions per the standard.
    assert stat.S_IMODE(os.stat(result.dst).st_mode) == 0o600
    for directory in (cache / "thumbnails", cache / "thumbnails" / "normal"):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert listing(cache / "thumbnails" / "normal") == [os.path.basename(result.dst)]
    # Up to date until the source's mtime changes.
    assert freedesktop_is_up_to_date(result.dst, src)
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    assert not freedesktop_is_up_to_date(result.dst, src)
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert freedesktop_is_up_to_date(result.dst, src)
    # Another file's thumbnail does not describe this one.
    assert not freedesktop_is_up_to_date(result.dst, tmp_path / "other.jpg")


def test_up_to_date_checks_size_and_tolerates_garbage(big_jpeg: Path, tmp_path: Path) -> None:
    st = big_jpeg.stat()
    metadata = {"Thumb::URI": file_uri(big_jpeg), "Thumb::MTime": str(int(st.st_mtime))}
    make_thumbnail(big_jpeg, tmp_path / "ok.png", fmt="png", metadata=metadata)
    assert freedesktop_is_up_to_date(tmp_path / "ok.png", big_jpeg)  # Thumb::Size optional
    metadata["Thumb::Size"] = str(st.st_size + 1)
    make_thumbnail(big_jpeg, tmp_path / "size.png", fmt="png", metadata=metadata)
    assert not freedesktop_is_up_to_date(tmp_path / "size.png", big_jpeg)
    metadata["Thumb::Size"] = "many"
    make_thumbnail(big_jpeg, tmp_path / "nan.png", fmt="png", metadata=metadata)
    assert not freedesktop_is_up_to_date(tmp_path / "nan.png", big_jpeg)
    (tmp_path / "garbage.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    assert not freedesktop_is_up_to_date(tmp_path / "garbage.png", big_jpeg)
    assert not freedesktop_is_up_to_date(tmp_path / "missing.png", big_jpeg)
    assert not freedesktop_is_up_to_date(tmp_path / "ok.png", tmp_path / "missing.jpg")


def test_fail_marker(tmp_path: Path) -> None:
    src = tmp_path / "bad.jpg"
    src.write_bytes(b"garbage")
    cache = tmp_path / "cache"
    with pytest.raises(UnsupportedImageError):
        make_freedesktop_thumbnail(src, cache_home=cache)
    assert not (cache / "thumbnails").exists()  # failed before creating anything
    marker = write_fail_marker(src, cache_home=cache)
    assert marker == freedesktop_fail_path(src, cache)
    assert Path(marker).parent.name.startswith("parjobs-")
    assert Path(marker).parent.parent == cache / "thumbnails" / "fail"
    assert stat.S_IMODE(os.stat(marker).st_mode) == 0o600
    assert stat.S_IMODE(Path(marker).parent.stat().st_mode) == 0o700
    assert read_text(marker)["Thumb::URI"] == file_uri(src)
    assert freedesktop_is_up_to_date(marker, src)
    src.write_bytes(b"different garbage")
    assert not freedesktop_is_up_to_date(marker, src)
