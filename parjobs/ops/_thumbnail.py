"""ThumbnailJob: thumbnails of every image under some paths, parallel and resumable.

The job walks its paths (`parjobs.ops._walk`: stable task indices across resumes) and fans
out one `ThumbnailTask` per file whose extension names a format Pillow may open here
(`INPUT_FORMATS`). Other entries never reach a decoder: non-image files, symlinks (never
followed, not even as a root, as in the other jobs) and special files are reported as
skipped, unreadable directories as failed; the thumbnails, fail markers and temporaries the
layouts write in the output directory (when it is inside a walked path) are left out entirely.

Thumbnail tasks run on the ``cpu`` lane, one thread per core: Pillow releases the GIL while it
decodes, resizes and encodes, so the cores work in parallel (an image takes milliseconds, so
the pool's tiny-task governor never holds them to fewer threads).

Two layouts:

* ``cache``: ``<out_dir>/<size>/<id[:2]>/<id>.<ext>`` keyed by `thumbnail_id`, the XXH3-128
  of the source's every byte. Ids derive from the content, so an existing (non-empty)
  thumbnail is up to date (another ``quality`` does not redo it). Until session 23 the key
  was the sampled `content_id` (six 8 KiB blocks of a file over 100 KiB): two scanned pages
  of one size whose text fell between the blocks, or a photo retouched in place in an
  uncompressed format, shared one thumbnail, the second shown as the first, "made" or "up
  to date". A run that finds its thumbnails made thus reads each image whole once more
  (what `hash` reads), not 48 KiB of it.
* ``freedesktop``: the freedesktop.org Thumbnail Managing Standard, shared with desktop file
  managers: PNG only, ``size`` 128/256/512/1024 (normal, large, x-large, xx-large), under
  ``$XDG_CACHE_HOME/thumbnails`` (or ``out_dir``, which must then be named ``thumbnails``).
  Up to date means ``Thumb::URI`` and ``Thumb::MTime`` match the source. An image that cannot
  be thumbnailed gets the standard's fail marker; a stale marker goes once it succeeds.

Thumbnails are a cache that a later run rebuilds, so they are not fsynced (that costs about a
fifth of a thumbnail's time): a power loss may leave an empty one, which the up-to-date checks
treat as missing. Crashes (``kill -9``) lose nothing: data already written stays.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import re
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from typing import Any, ClassVar, Literal, TypeGuard

import trio
from PIL import Image

from .._context import JobContext
from .._exceptions import JobSpecError, Skip
from .._job import Job, job_type, validating_stored
from .._task import Task, TaskContext
from .._util import kernel_abspath
from . import _probe
from ._entries import EntryTask
from ._errors import ImageError, SourceChangedError
from ._fs import absolute_root, ctime_change, display, noop, root_path
from ._hashing import hash_file
from ._imaging import (
    FORMATS,
    SIZES,
    app_id,
    cache_home_dir,
    cache_thumbnail_path,
    freedesktop_fail_path,
    freedesktop_is_up_to_date,
    freedesktop_thumbnail_path,
    input_formats,
    make_freedesktop_thumbnail,
    make_thumbnail,
    write_fail_marker,
)
from ._names import job_token, stored_token
from ._partials import remove_own_temps
from ._paths import absolute_paths, check_creatable_dir, keep_dir_identity
from ._walk import Entry, Totals, check_roots, walk_ahead

__all__ = ["MAX_SIZE", "ThumbnailJob", "ThumbnailTask", "image_extensions"]

Format = Literal["webp", "jpeg", "png"]
Layout = Literal["cache", "freedesktop"]

MAX_SIZE = 4096
"""The largest thumbnail box edge, in pixels."""
#: Freedesktop size names by box edge (128 -> "normal" ...).
_SIZE_NAMES = {edge: name for name, edge in SIZES.items()}
#: A task weighs at least this much, so at most a few small images share one thread call.
_MIN_WEIGHT = 256 * 1024


@functools.cache
def image_extensions() -> frozenset[bytes]:
    """Lower-case file extensions (``b".jpg"``) of the formats a source may be in."""
    formats = set(input_formats())
    return frozenset(
        ext.lower().encode() for ext, fmt in Image.registered_extensions().items() if fmt in formats
    )


def _is_image_name(path: bytes) -> bool:
    return os.path.splitext(path)[1].lower() in image_extensions()


@dataclasses.dataclass(frozen=True, slots=True)
class _Settings:
    """What every task of one job shares."""

    layout: str
    size: int
    fmt: str
    quality: int
    max_pixels: int
    out_dir: str  # the cache directory, or the freedesktop ``thumbnails`` directory
    token: bytes | None = None  # the job's name token: its temporaries carry it
    #: The manager put the job's probe in ``out_dir`` (a cluster run): a task checks it
    #: there before it writes (`parjobs.ops._probe`).
    probe: bool = False

    @property
    def cache_home(self) -> str:
        """The directory holding freedesktop's ``thumbnails/`` (what the primitives take)."""
        return os.path.dirname(self.out_dir)


@dataclasses.dataclass(slots=True)
class ThumbnailTask(Task[str]):
    """Make the thumbnail of one image file; the value is the thumbnail's path.

    Raises `Skip` when the thumbnail is up to date and `ImageError` (a clear reason) for a
    corrupt, truncated or oversized image.
    """

    lane: ClassVar[str] = "cpu"
    cluster = True  # writes through a temporary; an up-to-date thumbnail is not made again

    index: int
    path: bytes
    file_size: int
    settings: _Settings

    @property
    def weight(self) -> int:
        return max(self.file_size, _MIN_WEIGHT)

    def label(self) -> str:
        return display(self.path)

    def run(self, tc: TaskContext) -> str:
        tc.check()
        settings = self.settings
        if settings.probe:  # (by path, as the thumbnail is written: per task)
            assert settings.token is not None
            _probe.check_path(settings.out_dir, settings.token)
        try:
            if self.settings.layout == "freedesktop":
                dst = self._freedesktop(tc)
            else:
                dst = self._cache(tc)
        finally:
            tc.add_bytes(self.file_size)
        tc.record("thumbnailed", self.path, dst, bytes=self.file_size)
        return dst

    def _cache(self, tc: TaskContext) -> str:
        s = self.settings
        before = os.stat(self.path, follow_symlinks=False)
        dst = cache_thumbnail_path(s.out_dir, thumbnail_id(self.path, tc.check), s.size, s.fmt)
        with contextlib.suppress(FileNotFoundError):
            if os.stat(dst).st_size > 0:
                return _up_to_date(tc, dst)
        make_thumbnail(
            self.path,
            dst,
            box=s.size,
            fmt=s.fmt,
            quality=s.quality,
            check=tc.check,
            max_pixels=s.max_pixels,
            durable=False,
            root=s.out_dir,
            owner=s.token,
        )
        after = os.stat(self.path, follow_symlinks=False)
        if _identity(before) != _identity(after) or ctime_change(
            before.st_ctime_ns, before.st_nlink, after
        ):
            # The thumbnail may show other content than the id it is filed under: the
            # ctime tells a save in place with its size and mtime put back (`ctime_change`)
            # between the key's read and the decode, which each check only while they read.
            with contextlib.suppress(FileNotFoundError):
                os.unlink(dst)
            name = self.label()
            exc = SourceChangedError(f"file changed while it was thumbnailed: {name!r}")
            exc.filename = name
            raise exc
        return dst

    def _freedesktop(self, tc: TaskContext) -> str:
        s = self.settings
        size_name = _SIZE_NAMES[s.size]
        dst = freedesktop_thumbnail_path(self.path, size_name, s.cache_home)
        if freedesktop_is_up_to_date(dst, self.path):
            return _up_to_date(tc, dst)
        try:
            make_freedesktop_thumbnail(
                self.path,
                size_name,
                cache_home=s.cache_home,
                check=tc.check,
                max_pixels=s.max_pixels,
                durable=False,
                owner=s.token,
            )
        except ImageError:
            with contextlib.suppress(OSError):  # the image's own error is the one to report
                write_fail_marker(self.path, cache_home=s.cache_home, durable=False, owner=s.token)
            raise
        with contextlib.suppress(FileNotFoundError):  # it used to fail; no longer
            os.unlink(freedesktop_fail_path(self.path, s.cache_home))
        return dst


def thumbnail_id(path: str | bytes, check: Callable[[], None] = noop) -> str:
    """The key of ``path``'s thumbnail in the ``cache`` layout: the XXH3-128 of all its
    bytes (`hash_file`), so that two images share a thumbnail only if they are one image."""
    return hash_file(path, check=check)


def _identity(st: os.stat_result) -> tuple[int, int, int, int]:
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def _up_to_date(tc: TaskContext, dst: str) -> str:
    """The task's value for a thumbnail ``dst`` already up to date: made by this very task
    before its worker was lost (a cluster re-run: done), else skipped "up to date"."""
    if tc.rerun:
        return dst
    raise Skip("up to date")


@job_type("thumbnails", version=1)
class ThumbnailJob(Job):
    """Make thumbnails of every image under ``paths`` (files or directories, walked
    recursively), fitting in a ``size`` x ``size`` box (never enlarged), EXIF-oriented.

    ``format`` defaults to the layout's: WebP for "cache", PNG for "freedesktop" (which stores
    PNG only). ``layout`` "cache" needs ``out_dir``; "freedesktop" writes PNGs to ``out_dir``
    if given (a directory named ``thumbnails``), else ``$XDG_CACHE_HOME/thumbnails``. ``max_pixels``
    refuses images whose header claims more pixels (decompression bombs). Relative paths are
    made absolute when the job is submitted (a stored relative one fails the job), and the
    default output directory is resolved when it is created, so a job resumed elsewhere
    does the same work.

    Result: ``{"made", "skipped", "up_to_date", "not_image", "skipped_reasons", "failed",
    "out_dir", "layout"}`` where ``skipped = up_to_date + not_image`` (non-image files,
    symlinks, special files), ``skipped_reasons`` gives the same split by reason (non-zero
    only) and counts cover all runs of the job (``failed``: the latest run; the reasons are
    in ``manager.errors(job_id)``).
    """

    paths: list[str]
    size: int = 256
    #: None: the layout's format (PNG for "freedesktop", which stores nothing else; else WebP).
    format: Format | None = None
    layout: Layout = "cache"
    out_dir: str | None = None
    quality: int = 80
    max_pixels: int = 100_000_000

    def __post_init__(self) -> None:
        if self.format is None:
            self.format = "png" if self.layout == "freedesktop" else "webp"
        if self.out_dir is None and self.layout == "freedesktop":
            self.out_dir = os.path.join(cache_home_dir(None), "thumbnails")

    def _absolute(self) -> None:
        """The paths and ``out_dir`` made absolute on submission (their ``..`` as the
        kernel's), so a job resumed elsewhere does the same work; a relative one in a stored
        spec (stored so by an older parjobs, or edited) is refused (`absolute_paths`).
        Not in ``__post_init__``, which runs when a stored spec is loaded too: such a path
        was read, and the thumbnails written, where the loading process stood."""

        def given(path: object) -> TypeGuard[str]:  # (others are check_roots' to refuse)
            return isinstance(path, str) and bool(path) and "\0" not in path

        paths = self.paths if isinstance(self.paths, list) else []
        if validating_stored():
            out = [self.out_dir] if given(self.out_dir) else []
            absolute_paths("thumbnails", [p for p in paths if given(p)] + out)
            return
        if isinstance(self.paths, list):
            self.paths = [absolute_root(p) if given(p) else p for p in paths]
        if isinstance(self.out_dir, str) and given(self.out_dir):
            self.out_dir = kernel_abspath(self.out_dir)

    def validate(self) -> None:
        self._absolute()
        check_roots("thumbnails", self.paths)
        for path in self.paths:
            if not os.path.lexists(path):
                raise JobSpecError(f"thumbnails: path does not exist: {path!r}")
        if not _is_int(self.size) or not 0 < self.size <= MAX_SIZE:
            raise JobSpecError(f"thumbnails: size must be 1..{MAX_SIZE} px, got {self.size!r}")
        if self.format not in FORMATS:
            choices = ", ".join(FORMATS)
            raise JobSpecError(f"thumbnails: format must be one of {choices}, got {self.format!r}")
        if not _is_int(self.quality) or not 1 <= self.quality <= 100:
            raise JobSpecError(f"thumbnails: quality must be 1..100, got {self.quality!r}")
        if not _is_int(self.max_pixels) or self.max_pixels < 1:
            raise JobSpecError(f"thumbnails: max_pixels must be >= 1, got {self.max_pixels!r}")
        if self.layout == "cache":
            if self.out_dir is None:
                raise JobSpecError("thumbnails: layout 'cache' needs out_dir")
        elif self.layout == "freedesktop":
            if self.format != "png":
                raise JobSpecError(
                    f"thumbnails: layout 'freedesktop' stores PNG only, got format {self.format!r}"
                )
            if self.size not in _SIZE_NAMES:
                sizes = ", ".join(f"{e} ({n})" for e, n in _SIZE_NAMES.items())
                raise JobSpecError(
                    f"thumbnails: layout 'freedesktop' needs size {sizes}; got {self.size!r}"
                )
            if isinstance(self.out_dir, str) and os.path.basename(self.out_dir) != "thumbnails":
                raise JobSpecError(
                    "thumbnails: a freedesktop out_dir stands for $XDG_CACHE_HOME/thumbnails "
                    f"and must be named 'thumbnails', got {self.out_dir!r}"
                )
        else:
            raise JobSpecError(
                f"thumbnails: layout must be 'cache' or 'freedesktop', got {self.layout!r}"
            )
        if not isinstance(self.out_dir, str) or not self.out_dir or "\0" in self.out_dir:
            raise JobSpecError(f"thumbnails: invalid out_dir {self.out_dir!r}")
        if os.path.exists(self.out_dir) and not os.path.isdir(self.out_dir):
            raise JobSpecError(f"thumbnails: out_dir {self.out_dir!r} is not a directory")
        check_creatable_dir("thumbnails", "out_dir", self.out_dir)  # not /proc, not read-only

    @property
    def _settings(self) -> _Settings:
        assert self.out_dir is not None and self.format is not None  # validate() saw to it
        return _Settings(
            self.layout, self.size, self.format, self.quality, self.max_pixels, self.out_dir
        )

    async def run(self, ctx: JobContext) -> dict[str, Any]:
        # Not a directory swapped in (a symlink elsewhere) since an earlier run wrote there;
        # recorded with the token (one checkpoint), or alone when the token was already.
        had_token = stored_token(ctx.state) is not None
        assert self.out_dir is not None  # validate() saw to it
        changed = await keep_dir_identity(
            ctx, "out_identity", "thumbnails", self.out_dir, create=True, checkpoint=False
        )
        token = await job_token(ctx)  # checkpointed before any temporary is made
        if changed and had_token:
            await ctx.checkpoint(force=True)
        if ctx.clustered:  # (its tasks go to the cluster's workers)
            await _probe.place_all(ctx, token, [os.fsencode(self.out_dir)])
        settings = dataclasses.replace(self._settings, token=token, probe=ctx.clustered)
        ctx.progress.set_message("making thumbnails")
        counts = _Counts()
        dispatcher = ctx.task_dispatcher()
        async with aclosing(self._tasks(ctx, settings, counts)) as tasks:
            async for _ in dispatcher.dispatch_many(tasks):
                await ctx.checkpoint()
        progress = ctx.progress  # restored from the store on resume: counts cover every run
        up_to_date = progress.items_skipped - counts.not_image
        reasons = {"up to date": up_to_date, "not an image": counts.not_image}
        return {
            "made": progress.items_done,
            "skipped": progress.items_skipped,
            "up_to_date": up_to_date,
            "not_image": counts.not_image,
            "skipped_reasons": {why: n for why, n in reasons.items() if n},
            "failed": progress.items_failed,
            "out_dir": settings.out_dir,
            "layout": settings.layout,
        }

    async def _tasks(
        self, ctx: JobContext, settings: _Settings, counts: _Counts
    ) -> AsyncGenerator[Task[Any], None]:
        """One task per walked non-directory entry; the walk runs ahead, counting totals.

        Totals are set, not added to: a resumed run replays the whole manifest.
        """
        inside_out = _out_spellings(os.fsencode(settings.out_dir), self.paths)

        def item(entry: Entry) -> bool:
            return entry.kind != "dir" and not _own_output(entry.path, inside_out)

        def image(entry: Entry) -> bool:
            return entry.kind == "file" and _is_image_name(entry.path)

        def count(batch: list[Entry]) -> Totals:  # (which files are images: by name)
            items = [e for e in batch if item(e)]
            return len(items), sum(e.size for e in items if image(e))

        async with aclosing(walk_ahead(ctx, self.paths, count)) as batches:
            async for batch in batches:
                for entry in batch:
                    if not item(entry):
                        continue
                    if image(entry):
                        yield ThumbnailTask(entry.index, entry.path, entry.size, settings)
                    else:
                        if entry.kind != "error":
                            counts.not_image += 1
                        yield _report(entry)

    async def cleanup(self, ctx: JobContext, *, cancelled: bool) -> None:
        """Remove the temporaries a killed run of this job left in the output directories:
        only those carrying this job's name token (`parjobs.ops._names`), never a user's
        file or another job's temporary, however old.

        Only a process death leaves them (every other failure removes its own), so a first
        run that was never interrupted has nothing to look for.
        """
        await _probe.remove_all(ctx)  # (a run on a cluster's)
        token = stored_token(ctx.state)
        if not (cancelled or ctx.resumed) or self.out_dir is None or token is None:
            return

        def sweep() -> None:
            for directory in self._temp_dirs():
                remove_own_temps(directory, token, recursive=False)

        await trio.to_thread.run_sync(sweep)

    def _temp_dirs(self) -> list[str]:
        """Directories this job writes thumbnails (and their temporary files) into (blocks)."""
        assert self.out_dir is not None and self.format is not None
        if self.layout == "freedesktop":
            return [
                os.path.join(self.out_dir, _SIZE_NAMES.get(self.size, "large")),
                os.path.join(self.out_dir, "fail", app_id()),
            ]
        # <out_dir>/<size>/<shard>/<id>.<ext>: every shard directory of this size
        size_dir = os.path.dirname(
            os.path.dirname(cache_thumbnail_path(self.out_dir, "00", self.size, self.format))
        )
        try:
            return [os.path.join(size_dir, name) for name in os.listdir(size_dir)]
        except (FileNotFoundError, NotADirectoryError):
            return []


#: A path below an output directory that a thumbnail layout writes: a cache thumbnail
#: (``<size>/<id[:2]>/<id>.<ext>``), a freedesktop one (``large/<md5>.png``), a fail marker
#: (``fail/<app>/<md5>.png``), a temporary of one, or a cluster run's probe (`_probe`).
_OWN_OUTPUT = re.compile(
    rb"[0-9]+(?:x[0-9]+)?/([0-9a-f]{2})/(?:\1[0-9a-f]{30}\.(?:webp|jpg|png)|\..*\.parjobs-tmp)"
    rb"|(?:normal|large|x-large|xx-large|fail/[^/]+)/(?:[0-9a-f]{32}\.png|\..*\.parjobs-tmp)"
    rb"|\.parjobs\.[0-9a-f]{16}\.parjobs-probe",
    re.DOTALL,
)


def _out_spellings(out: bytes, roots: list[str]) -> tuple[bytes, ...]:
    """The output directory ``out`` as the walk of ``roots`` may spell it, each ending in
    ``/`` (for `_own_output`): as given, its real path, and below each root whose real path
    holds it, that root's spelling joined to the rest. A root ``link/`` (walked through the
    link) or a path through a symlinked directory reaches an output given by its real path
    under another name: its thumbnails were thumbnailed again by every later run."""
    real = os.path.realpath(out)
    found = [out, real]
    for root in roots:
        top = root_path(root)
        rel = os.path.relpath(real, os.path.realpath(top))
        if rel != b".." and not rel.startswith(b"../"):
            found.append(top if rel == b"." else os.path.join(top, rel))
    return tuple(dict.fromkeys(p.rstrip(b"/") + b"/" for p in found))


def _own_output(path: bytes, inside_out: tuple[bytes, ...]) -> bool:
    """Whether ``path``, below the output directory (one of ``inside_out``, each ending in
    ``/``), is a thumbnail, fail marker or temporary a layout writes there: left out of the
    walk. The user's own files in an output directory (``--out`` the photos' own directory,
    ``2023/`` in it too) are thumbnailed: everything below it used to be left out silently,
    the job completed with "0 made"."""
    for prefix in inside_out:
        if path.startswith(prefix):
            return _OWN_OUTPUT.fullmatch(path, len(prefix)) is not None
    return False


@dataclasses.dataclass
class _Counts:
    not_image: int = 0


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _report(entry: Entry) -> EntryTask:
    """The task reporting an entry that is not thumbnailed: skipped, or failed (walk error)."""
    if entry.kind == "error":
        return EntryTask(entry.index, entry.path, entry.error, skip=False)
    if entry.kind == "file":
        reason = "not an image"
    elif entry.kind == "symlink":
        reason = "not an image: a symbolic link (not followed)"
    else:
        reason = "not an image: a special file"
    return EntryTask(entry.index, entry.path, reason, skip=True)
