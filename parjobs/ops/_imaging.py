"""Blocking thumbnail primitives: decode small, orient, resize, write atomically.

Everything here is synchronous and meant for a worker thread on the ``cpu`` lane (Pillow
releases the GIL while decoding, resizing and encoding); trio jobs call it through
``trio.to_thread``. Long operations take a ``check`` callable, called between stages, that
raises to interrupt (pause/cancel).

The pipeline of `make_thumbnail`:

1. Open the source with ``O_NOFOLLOW`` (regular files only: `parjobs.ops._fs.open_regular`) and
   let Pillow identify it among `INPUT_FORMATS` only (no Ghostscript, no exotic parsers).
2. Refuse images whose header claims more than ``max_pixels`` before decoding a byte, and wait
   for the decode's share of the process's memory budget (`parjobs.ops._decodebudget`: big
   decodes take turns).
3. JPEG: ``draft()`` asks libjpeg for a DCT-domain 1/2, 1/4 or 1/8 scale decode that is still at
   least ``_DRAFT_GAP`` times the final size -- the key speed trick (no full-size decode,
   no full-size resize) while the final Lanczos step keeps the result close to fair resampling.
4. Resize with Lanczos to fit the box (never enlarging), then apply the EXIF orientation to the
   small image, which is cheaper than rotating the decoded one.
5. Convert to a mode the output format can store and write to an unpredictable temporary name
   in the destination directory, flush (and fsync), then ``os.replace`` into place. No partial
   output is ever left behind, whatever fails.

Bad images raise `ImageError` (with `UnsupportedImageError` and `ImageTooLargeError` below it)
naming the file and the reason; ordinary I/O errors stay ``OSError``.

The freedesktop.org Thumbnail Managing Standard helpers (`file_uri`,
`freedesktop_thumbnail_path`, `make_freedesktop_thumbnail`, `freedesktop_is_up_to_date`,
`write_fail_marker`) share thumbnails with desktop file managers; `cache_thumbnail_path` is the
content-id keyed layout for parjobs' own cache.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.metadata
import math
import os
import re
import struct
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import IO, Any, Final
from urllib.parse import quote

from PIL import ExifTags, Image, PngImagePlugin, UnidentifiedImageError

from ._decodebudget import decoded_bytes, reserve
from ._errors import ImageError, ImageTooLargeError, UnsupportedImageError
from ._fs import DIR_FLAGS, FilePath, check_unchanged, noop, open_dir_nofollow, open_regular
from ._partials import tmp_name

__all__ = [
    "FORMATS",
    "INPUT_FORMATS",
    "SIZES",
    "ThumbResult",
    "cache_thumbnail_path",
    "file_uri",
    "freedesktop_fail_path",
    "freedesktop_is_up_to_date",
    "freedesktop_thumbnail_path",
    "make_freedesktop_thumbnail",
    "make_thumbnail",
    "write_fail_marker",
]

SIZES: Final[Mapping[str, int]] = MappingProxyType(
    {"normal": 128, "large": 256, "x-large": 512, "xx-large": 1024}
)
"""freedesktop.org thumbnail size names and their box edge in pixels."""

FORMATS: Final = ("webp", "jpeg", "png")
"""Output formats `make_thumbnail` can write."""

INPUT_FORMATS: Final = (
    "JPEG", "MPO", "PNG", "GIF", "WEBP", "AVIF", "HEIF", "TIFF", "BMP", "ICO", "PPM", "QOI",
)  # fmt: skip
"""Pillow formats a source may be in; others are refused as unsupported (those missing from
this Pillow build are skipped). Keeps e.g. EPS (which runs Ghostscript) off untrusted trees."""

_PIL_FORMAT: Final = {"webp": "WEBP", "jpeg": "JPEG", "png": "PNG"}
_EXTENSION: Final = {"webp": "webp", "jpeg": "jpg", "png": "png"}
_RESAMPLE: Final = Image.Resampling.LANCZOS
_REDUCING_GAP: Final = 2.0
#: JPEG drafts decode at the smallest DCT scale that is still at least this times the final
#: size. 1.0 picks 1/8 scale for 256 px from 12 MP: 12-25% less CPU than 2.0, at 44-46 dB
#: PSNR against a full-decode Lanczos reference, invisible at thumbnail size.
_DRAFT_GAP: Final = 1.0
"""Decode (JPEG draft) and pre-reduce to no less than this multiple of the final size."""
_ORIENTATION: Final = ExifTags.Base.Orientation
# EXIF orientation -> transpose that displays it upright (the table of ImageOps.exif_transpose).
_TRANSPOSE: Final = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# Exceptions Pillow raises for malformed data (beside OSError without an errno).
_DECODE_ERRORS: Final = (SyntaxError, ValueError, EOFError, IndexError, struct.error, zlib.error)
# RFC 3986 path characters left unescaped; the same set as GLib's g_filename_to_uri(), so the
# md5 of the URI (the thumbnail's name) matches what GNOME and friends compute.
_URI_SAFE: Final = "/!$&'()*+,:=@"
_CONTENT_ID: Final = re.compile(r"[0-9A-Za-z][0-9A-Za-z_-]+")
_TEMP_FLAGS: Final = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True, slots=True)
class ThumbResult:
    """A thumbnail written to ``dst``; source sizes are as displayed (EXIF-oriented)."""

    dst: str
    width: int
    height: int
    source_width: int
    source_height: int


@dataclass(frozen=True, slots=True)
class _Decoded:
    """A loaded source image, possibly decoded at reduced scale, plus what resizing needs."""

    image: Image.Image  # stored orientation; mode normalized for resampling
    crop: tuple[float, float, float, float] | None  # source region in `image` coordinates
    target: tuple[int, int]  # final size, stored orientation
    orientation: int  # EXIF orientation, 1 when absent or invalid
    source_size: tuple[int, int]  # as displayed


# -- validation -------------------------------------------------------------------------------


def _box_size(box: int | tuple[int, int]) -> tuple[int, int]:
    """Return ``box`` as (width, height), raising ValueError for non-positive sizes."""
    size = (box, box) if isinstance(box, int) else tuple(box)
    if len(size) != 2 or not all(isinstance(n, int) and n > 0 for n in size):
        raise ValueError(f"box must be a positive int or (width, height), not {box!r}")
    return size[0], size[1]


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ValueError(f"unknown thumbnail format {fmt!r}; expected one of {FORMATS}")


def _check_options(fmt: str, quality: int, metadata: Mapping[str, str] | None) -> None:
    """Reject bad arguments before any file is touched."""
    _check_format(fmt)
    if not 1 <= quality <= 100:
        raise ValueError(f"quality must be within 1..100, not {quality!r}")
    if metadata and fmt != "png":
        raise ValueError(f"metadata (PNG text chunks) needs fmt='png', not {fmt!r}")
    for key in metadata or ():
        if not 0 < len(key) < 80:
            raise ValueError(f"PNG text keys must be 1..79 characters, not {key!r}")


# -- decoding ---------------------------------------------------------------------------------


@functools.cache
def input_formats() -> tuple[str, ...]:
    """`INPUT_FORMATS` this Pillow can open (``Image.open`` fails on unregistered names)."""
    Image.init()
    return tuple(f for f in INPUT_FORMATS if f in Image.OPEN)


def _fit(size: tuple[int, int], box: tuple[int, int]) -> tuple[int, int]:
    """Largest size within ``box`` with the aspect ratio of ``size``; never enlarges."""
    (w, h), (bw, bh) = size, box
    if w <= bw and h <= bh:
        return size
    if w * bh >= h * bw:  # width is the limiting side
        return bw, max(1, round(h * bw / w))
    return max(1, round(w * bh / h)), bh


def _orientation(im: Image.Image) -> int:
    """EXIF orientation 1..8; 1 when absent, nonsense or unparsable (the pixels may be fine)."""
    try:
        value = im.getexif().get(_ORIENTATION, 1)
    except _DECODE_ERRORS:
        return 1
    return value if value in _TRANSPOSE else 1


def _resampleable(im: Image.Image) -> Image.Image:
    """Convert to L, LA, RGB, RGBA or CMYK before resizing.

    Pillow resizes P and 1 images with nearest neighbour only, and ``convert("L")`` clips
    16-bit values instead of scaling them.
    """
    mode = im.mode
    if mode in ("L", "RGB") and im.has_transparency_data:
        return im.convert(mode + "A")  # a tRNS colour key
    if mode in ("L", "LA", "RGB", "RGBA", "CMYK"):
        return im
    if mode == "I" or mode.startswith("I;16"):
        # 16 bits -> 8 bits, scaled not clipped (point() ignores a mode argument for I).
        return im.convert("I").point(lambda v: v * (1 / 256)).convert("L")
    if mode in ("1", "F"):
        return im.convert("L")
    return im.convert("RGBA" if im.has_transparency_data else "RGB")  # P, PA, La, YCbCr, ...


def _decode(
    fp: IO[bytes],
    path: str,
    box: tuple[int, int],
    max_pixels: int,
    check: Callable[[], object],
    hold: contextlib.ExitStack,
) -> _Decoded:
    """Identify, size-check and load the first frame of ``fp``, as small as resizing allows.

    The decode waits for its share of the process's memory budget (`parjobs.ops._decodebudget`)
    and enters it into ``hold``, which keeps it as long as the image is needed."""
    try:
        im = Image.open(fp, formats=input_formats())  # not closed: that would free the pixels
        w, h = im.size
        if w * h > max_pixels:
            raise ImageTooLargeError(
                path, f"{w}x{h} is {w * h} pixels, more than the limit of {max_pixels}"
            )
        check()
        jpeg = im.format in ("JPEG", "MPO")
        crop = None
        if jpeg:  # its EXIF is read without decoding, and the draft shrinks what is decoded
            orientation, target = _orient(im, box)
            if target != (w, h):
                request = (math.ceil(target[0] * _DRAFT_GAP), math.ceil(target[1] * _DRAFT_GAP))
                drafted = im.draft("RGB", request)
                if drafted is not None:
                    crop = drafted[1]
        hold.enter_context(reserve(decoded_bytes(im), check))
        im.load()  # decode errors surface here, not inside getexif() (PNG loads for it)
        if not jpeg:
            orientation, target = _orient(im, box)
        swap = orientation >= 5  # 5..8 turn the image by 90 degrees
        return _Decoded(_resampleable(im), crop, target, orientation, (h, w) if swap else (w, h))
    except UnidentifiedImageError as exc:  # its text names the file object: not for people
        raise UnsupportedImageError(path, "not an image in a supported format") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLargeError(path, _text(exc, fp)) from exc
    except OSError as exc:
        if exc.errno is not None:
            raise  # a real I/O error, not bad image data
        raise ImageError(path, f"corrupt or truncated image ({_text(exc, fp)})") from exc
    except _DECODE_ERRORS as exc:
        raise ImageError(path, f"corrupt image ({type(exc).__name__}: {_text(exc, fp)})") from exc


def _orient(im: Image.Image, box: tuple[int, int]) -> tuple[int, tuple[int, int]]:
    """The EXIF orientation of ``im`` and its final size (stored orientation) in ``box``."""
    orientation = _orientation(im)
    swap = orientation >= 5  # 5..8 turn the image by 90 degrees
    return orientation, _fit(im.size, (box[1], box[0]) if swap else box)


def _text(exc: BaseException, fp: IO[bytes]) -> str:
    """Pillow's message without the file object's repr (``<_io.BufferedReader name=13>``):
    the error already names the path."""
    return str(exc).replace(f" {fp!r}", "").replace(repr(fp), "the file")


def _shrink(decoded: _Decoded) -> Image.Image:
    """Resize to the target size and turn upright."""
    im = decoded.image
    if im.size != decoded.target or decoded.crop is not None:
        im = im.resize(decoded.target, _RESAMPLE, box=decoded.crop, reducing_gap=_REDUCING_GAP)
    if decoded.orientation != 1:
        im = im.transpose(_TRANSPOSE[decoded.orientation])
    return im


def _load_thumbnail(
    path: str,
    box: tuple[int, int],
    max_pixels: int,
    check: Callable[[], object],
    hold: contextlib.ExitStack,
) -> tuple[Image.Image, _Decoded, os.stat_result]:
    """Open ``path`` safely and return the upright resized image and the source's fstat;
    ``hold`` keeps the decode's share of the memory budget until it is closed."""
    fd, st = open_regular(path)
    with os.fdopen(fd, "rb") as fp:
        decoded = _decode(fp, path, box, max_pixels, check, hold)
        check_unchanged(path, st, os.fstat(fd))
    check()
    return _shrink(decoded), decoded, st


# -- encoding ---------------------------------------------------------------------------------


def _flatten(im: Image.Image) -> Image.Image:
    """Composite an LA/RGBA image onto white (JPEG has no alpha)."""
    base = "L" if im.mode == "LA" else "RGB"
    out = Image.new(base, im.size, 255 if base == "L" else (255, 255, 255))
    out.paste(im.convert(base), mask=im.getchannel("A"))
    return out


def _for_output(im: Image.Image, fmt: str) -> Image.Image:
    """Convert ``im`` (L, LA, RGB, RGBA or CMYK) to a mode ``fmt`` stores."""
    if im.mode == "CMYK":
        im = im.convert("RGB")
    if fmt == "jpeg" and im.mode in ("LA", "RGBA"):
        return _flatten(im)
    if fmt == "webp" and im.mode in ("L", "LA"):
        return im.convert("RGBA" if im.mode == "LA" else "RGB")
    return im


def _pnginfo(metadata: Mapping[str, str]) -> PngImagePlugin.PngInfo:
    info = PngImagePlugin.PngInfo()
    for key, value in metadata.items():
        info.add_text(key, value)  # tEXt, or iTXt when not Latin-1
    return info


def _save_params(
    source: Image.Image, out: Image.Image, fmt: str, quality: int, metadata: Mapping[str, str]
) -> dict[str, Any]:
    """Encoder options: quality, PNG text chunks, and the ICC profile when still valid."""
    params: dict[str, Any] = {} if fmt == "png" else {"quality": quality}
    if fmt == "webp":
        # Encoder effort 2 of 6: ~3x faster than Pillow's default 4 for a few % larger files,
        # which is the right trade for a rebuildable thumbnail cache.
        params["method"] = 2
    if metadata:
        params["pnginfo"] = _pnginfo(metadata)
    icc = source.info.get("icc_profile")
    gray = ("L", "LA")
    if icc and source.mode != "CMYK" and (source.mode in gray) == (out.mode in gray):
        params["icc_profile"] = icc  # colour managed viewers keep e.g. Display P3 colours
    return params


def _makedirs(directory: str) -> None:
    os.makedirs(directory, exist_ok=True)


@dataclass(frozen=True, slots=True)
class _Target:
    """How a thumbnail file is written: its ``mode``; ``durable``: fsynced before the rename;
    ``check``: called before the rename, may raise to interrupt; ``make_dirs(directory)``:
    runs only when the directory is missing; ``root``: a trusted directory holding the file,
    below which directories are opened one by one without following symlinks (so a symlink
    planted in a cache never redirects the write); ``owner``: the token the temporary's name
    carries (`parjobs.ops._names`; default this process's), so only its owner's cleanup ever
    removes it."""

    mode: int
    durable: bool
    check: Callable[[], object] = noop
    make_dirs: Callable[[str], None] = _makedirs
    root: str | None = None
    owner: str | bytes | None = None


def _write_atomic(
    im: Image.Image, dst: str, fmt: str, params: Mapping[str, Any], target: _Target
) -> None:
    """Encode ``im`` to an unpredictable temporary name beside ``dst``, then rename it over;
    the temporary file is removed on any failure, including ``target.check`` raising."""
    root, make_dirs = target.root, target.make_dirs
    directory = os.path.dirname(dst) or "."
    if root is not None:
        rel = os.path.relpath(directory, root)
        parts = [] if rel == "." else rel.split(os.sep)
        if ".." in parts:
            raise ValueError(f"{dst!r} is not inside {root!r}")
        os.makedirs(root, exist_ok=True)  # the root itself is trusted
        dir_fd = open_dir_nofollow(root, parts, create=True)
    else:
        if not os.path.isdir(directory):
            make_dirs(directory)
        dir_fd = os.open(directory, DIR_FLAGS)
    try:
        leaf = os.path.basename(dst)
        _encode_into(im, dir_fd, leaf, fmt, params, target)
    finally:
        os.close(dir_fd)


def _encode_into(
    im: Image.Image, dir_fd: int, leaf: str, fmt: str, params: Mapping[str, Any], target: _Target
) -> None:
    """Write ``im`` to a fresh temporary in ``dir_fd`` (named by `tmp_name`, carrying
    ``target.owner``'s token) and rename it to ``leaf``."""
    raw_leaf = os.fsencode(leaf)
    while True:
        tmp = tmp_name(raw_leaf, target.owner)
        try:
            fd = os.open(tmp, _TEMP_FLAGS, target.mode, dir_fd=dir_fd)
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(fd, "wb") as fp:
            im.save(fp, format=_PIL_FORMAT[fmt], **params)
            fp.flush()
            if target.durable:
                os.fsync(fd)
        target.check()
        os.replace(tmp, raw_leaf, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise


def _save_thumbnail(
    thumb: Image.Image,
    decoded: _Decoded,
    dst: str,
    fmt: str,
    quality: int,
    metadata: Mapping[str, str],
    target: _Target,
) -> ThumbResult:
    """Write ``thumb`` (made from ``decoded``) to ``dst`` in a mode ``fmt`` stores, with the
    source's colour profile where still valid; return its sizes."""
    out = _for_output(thumb, fmt)
    params = _save_params(decoded.image, out, fmt, quality, metadata)
    _write_atomic(out, dst, fmt, params, target)
    return ThumbResult(dst, out.width, out.height, *decoded.source_size)


_Save = Callable[[Image.Image, _Decoded, os.stat_result], ThumbResult]


def _within_budget(
    path: str, box: tuple[int, int], max_pixels: int, check: Callable[[], object], save: _Save
) -> ThumbResult:
    """Load the thumbnail of ``path`` and ``save`` it, holding the decode's share of the
    memory budget until the images are freed: they live in `_load_and_save`'s frame only,
    gone when it returns (or cleared by the budget when it raises)."""
    with contextlib.ExitStack() as hold:
        return _load_and_save(path, box, max_pixels, check, save, hold)


def _load_and_save(
    path: str,
    box: tuple[int, int],
    max_pixels: int,
    check: Callable[[], object],
    save: _Save,
    hold: contextlib.ExitStack,
) -> ThumbResult:
    thumb, decoded, st = _load_thumbnail(path, box, max_pixels, check, hold)
    return save(thumb, decoded, st)


# -- public API -------------------------------------------------------------------------------


def make_thumbnail(
    src: FilePath,
    dst: FilePath,
    *,
    box: int | tuple[int, int] = 256,
    fmt: str = "webp",
    quality: int = 80,
    metadata: dict[str, str] | None = None,
    check: Callable[[], object] = noop,
    max_pixels: int = 100_000_000,
    durable: bool = True,
    root: str | None = None,
    owner: str | bytes | None = None,
) -> ThumbResult:
    """Write a thumbnail of ``src`` fitting in ``box`` to ``dst`` as ``fmt``; return its sizes.

    ``root``: a trusted directory holding ``dst`` (a cache); the directories between them are
    created and opened without following symlinks. ``owner``: the name token the temporary
    carries (a job's; see `parjobs.ops._names`).

    Only the first frame of an animation is used; the image is never enlarged. ``metadata``
    becomes PNG text chunks (``fmt="png"`` only). ``check`` is called between stages and may
    raise to interrupt; nothing is left at ``dst`` or beside it then. ``durable`` fsyncs the
    file before the rename, so a recorded thumbnail survives a crash whole.

    ``max_pixels`` is checked against the header before decoding; Pillow's own limit
    (``2 * Image.MAX_IMAGE_PIXELS``, about 179 MP by default) still applies above it.

    Raises `ImageError` (`UnsupportedImageError`, `ImageTooLargeError`) for bad images,
    `parjobs.ops.SpecialFileError` for symlinks and other non-regular files,
    ``OSError`` for I/O failures and ``ValueError`` for bad arguments.
    """
    size = _box_size(box)
    _check_options(fmt, quality, metadata)
    if max_pixels < 1:
        raise ValueError(f"max_pixels must be positive, not {max_pixels!r}")
    src_path, dst_path = os.fsdecode(src), os.fsdecode(dst)
    target = _Target(0o666, durable, check, root=root, owner=owner)

    def save(thumb: Image.Image, decoded: _Decoded, _: os.stat_result) -> ThumbResult:
        return _save_thumbnail(thumb, decoded, dst_path, fmt, quality, metadata or {}, target)

    return _within_budget(src_path, size, max_pixels, check, save)


def cache_thumbnail_path(
    cache_dir: FilePath, content_id: str, box: int | tuple[int, int], fmt: str
) -> str:
    """``<cache_dir>/<box>/<content_id[:2]>/<content_id>.<ext>`` for parjobs' own cache.

    Content ids are derived from the content, so a thumbnail that exists there is up to date.
    ``box`` is ``256`` or ``300x200``; the two-character shard keeps directories small.
    """
    width, height = _box_size(box)
    _check_format(fmt)
    if not _CONTENT_ID.fullmatch(content_id):
        raise ValueError(f"content id must be 2+ letters, digits, '_' or '-', not {content_id!r}")
    label = str(width) if width == height else f"{width}x{height}"
    name = f"{content_id}.{_EXTENSION[fmt]}"
    return os.path.join(os.fsdecode(cache_dir), label, content_id[:2], name)


def file_uri(path: FilePath) -> str:
    """The absolute ``file://`` URI of ``path``, percent-encoding its bytes (RFC 3986).

    Non-UTF-8 names are encoded byte by byte (``caf%E9.jpg``); the escaped set matches GLib's
    ``g_filename_to_uri``, so freedesktop thumbnail names agree with other applications.
    """
    return "file://" + quote(os.path.abspath(os.fsencode(path)), safe=_URI_SAFE)


def cache_home_dir(cache_home: FilePath | None) -> str:
    """``cache_home``, else an absolute ``$XDG_CACHE_HOME``, else ``~/.cache``."""
    if cache_home is not None:
        return os.fsdecode(cache_home)
    env = os.environ.get("XDG_CACHE_HOME", "")
    return env if os.path.isabs(env) else os.path.join(os.path.expanduser("~"), ".cache")


def _uri_md5(path: FilePath) -> str:
    return hashlib.md5(file_uri(path).encode("ascii"), usedforsecurity=False).hexdigest()


def freedesktop_thumbnail_path(
    path: FilePath, size_name: str, cache_home: FilePath | None = None
) -> str:
    """``$XDG_CACHE_HOME/thumbnails/<size_name>/<md5 of file_uri(path)>.png``."""
    if size_name not in SIZES:
        raise ValueError(f"unknown thumbnail size {size_name!r}; expected one of {list(SIZES)}")
    return os.path.join(
        cache_home_dir(cache_home), "thumbnails", size_name, _uri_md5(path) + ".png"
    )


@functools.cache
def app_id() -> str:
    """``parjobs-<version>``: names the fail directory and the ``Software`` chunk."""
    try:
        version = importlib.metadata.version("parjobs")
    except importlib.metadata.PackageNotFoundError:
        version = "dev"
    return f"parjobs-{version}"


def freedesktop_fail_path(path: FilePath, cache_home: FilePath | None = None) -> str:
    """``$XDG_CACHE_HOME/thumbnails/fail/parjobs-<version>/<md5 of file_uri(path)>.png``."""
    name = _uri_md5(path) + ".png"
    return os.path.join(cache_home_dir(cache_home), "thumbnails", "fail", app_id(), name)


def _make_private_dirs(directory: str) -> None:
    """Create a freedesktop ``thumbnails/...`` directory and its missing parents.

    Those from ``thumbnails`` down are 0o700 as the standard asks (``os.makedirs`` would give
    the mode to the leaf only).
    """
    parent = os.path.dirname(directory)
    if os.path.basename(directory) == "thumbnails":
        os.makedirs(parent, exist_ok=True)  # the cache home itself: ordinary permissions
    elif not os.path.isdir(parent):
        _make_private_dirs(parent)
    with contextlib.suppress(FileExistsError):
        os.mkdir(directory, 0o700)


def _mtime(st: os.stat_result) -> int:
    """Whole seconds of the modification time, as ``Thumb::MTime`` stores it."""
    return st.st_mtime_ns // 1_000_000_000


def _freedesktop_metadata(path: str, st: os.stat_result) -> dict[str, str]:
    return {
        "Thumb::URI": file_uri(path),
        "Thumb::MTime": str(_mtime(st)),
        "Thumb::Size": str(st.st_size),
        "Software": app_id(),
    }


def make_freedesktop_thumbnail(
    src: FilePath,
    size_name: str = "large",
    *,
    cache_home: FilePath | None = None,
    check: Callable[[], object] = noop,
    max_pixels: int = 100_000_000,
    durable: bool = True,
    owner: str | bytes | None = None,
) -> ThumbResult:
    """Write the freedesktop.org thumbnail of ``src`` for ``size_name`` (a key of `SIZES`).

    A PNG with ``Thumb::URI``, ``Thumb::MTime`` and ``Thumb::Size`` taken from the very file
    descriptor that was decoded, ``Thumb::Image::Width``/``Height`` and ``Software``;
    directories 0o700 and the file 0o600 as the standard asks. Errors as `make_thumbnail`.
    """
    dst = freedesktop_thumbnail_path(src, size_name, cache_home)
    if max_pixels < 1:
        raise ValueError(f"max_pixels must be positive, not {max_pixels!r}")
    edge = SIZES[size_name]
    src_path = os.fsdecode(src)
    target = _Target(0o600, durable, check, _make_private_dirs, owner=owner)

    def save(thumb: Image.Image, decoded: _Decoded, st: os.stat_result) -> ThumbResult:
        metadata = _freedesktop_metadata(src_path, st)
        metadata["Thumb::Image::Width"] = str(decoded.source_size[0])
        metadata["Thumb::Image::Height"] = str(decoded.source_size[1])
        return _save_thumbnail(thumb, decoded, dst, "png", 0, metadata, target)

    return _within_budget(src_path, (edge, edge), max_pixels, check, save)


def write_fail_marker(
    src: FilePath,
    *,
    cache_home: FilePath | None = None,
    durable: bool = True,
    owner: str | bytes | None = None,
) -> str:
    """Record that ``src`` cannot be thumbnailed; return the marker's path.

    Per the standard, a 1x1 PNG under ``thumbnails/fail/parjobs-<version>/`` carrying
    ``Thumb::URI`` and ``Thumb::MTime``, so `freedesktop_is_up_to_date` on it tells whether to
    skip the file until it changes. The source is stat'ed without following a final symlink.
    """
    src_path = os.fsdecode(src)
    st = os.stat(src_path, follow_symlinks=False)
    dst = freedesktop_fail_path(src_path, cache_home)
    params = {"pnginfo": _pnginfo(_freedesktop_metadata(src_path, st))}
    target = _Target(0o600, durable, make_dirs=_make_private_dirs, owner=owner)
    _write_atomic(Image.new("RGBA", (1, 1)), dst, "png", params, target)
    return dst


def _png_text(thumb_path: str) -> dict[str, str]:
    """Text chunks of a PNG; those after the image data only if needed (it is then decoded)."""
    with Image.open(thumb_path, formats=("PNG",)) as im:
        text = {k: v for k, v in im.info.items() if isinstance(k, str) and isinstance(v, str)}
        if "Thumb::URI" not in text or "Thumb::MTime" not in text:
            text.update(getattr(im, "text", {}))
    return text


def freedesktop_is_up_to_date(thumb_path: FilePath, src_path: FilePath) -> bool:
    """Whether the thumbnail (or fail marker) at ``thumb_path`` still describes ``src_path``.

    True when its ``Thumb::URI`` is ``file_uri(src_path)``, its ``Thumb::MTime`` equals the
    source's mtime in whole seconds and its ``Thumb::Size``, when present, the source's size.
    A missing or unreadable thumbnail or source is simply not up to date.
    """
    try:
        st = os.stat(src_path, follow_symlinks=False)
        text = _png_text(os.fsdecode(thumb_path))
    except (OSError, *_DECODE_ERRORS):
        return False
    try:
        mtime = int(text["Thumb::MTime"])
        size = int(text.get("Thumb::Size", st.st_size))
    except (KeyError, ValueError):
        return False
    return (
        text.get("Thumb::URI") == file_uri(src_path) and mtime == _mtime(st) and size == st.st_size
    )
