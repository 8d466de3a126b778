"""Showing a running job: a rich live display on a terminal, plain lines otherwise, or JSON.

Every renderer gets the same calls: `Renderer.begin` once per job, `Renderer.progress` for each
snapshot (about ten a second; each renderer throttles as it likes), `Renderer.note` for
messages such as "pausing", and `Renderer.finish` with the job's `Report`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, TextIO

from .._status import JobStatus

if TYPE_CHECKING:  # rich is imported only to draw on a terminal (start-up time)
    from rich.console import Console, RenderableType
    from rich.live import Live

    from .._progress import ItemError, Progress
    from .._records import JobInfo
from .._jsonout import dumps
from . import _format as fmt

#: Failed items listed in a summary before "and N more".
ERRORS_SHOWN = 20
#: In-flight items shown by the live display.
CURRENT_SHOWN = 6
#: Seconds between two lines of plain or JSON progress.
LINE_INTERVAL = 1.0

#: What a job type does to an item, for summaries ("512 copied").
VERBS = {
    "copy": "copied",
    "move": "moved",
    "delete": "deleted",
    "hash": "hashed",
    "duplicates": "scanned",
    "thumbnails": "made",
}

_STATUS_STYLE = {
    JobStatus.COMPLETED: "bold green",
    JobStatus.COMPLETED_WITH_ERRORS: "bold yellow",
    JobStatus.FAILED: "bold red",
    JobStatus.PAUSED: "bold cyan",
    JobStatus.INTERRUPTED: "bold cyan",
    JobStatus.CANCELLED: "bold magenta",
}


#: How a conflict failure's message starts (`parjobs.ops._transfer.EXISTS`; the CLI reads
#: stored messages and does not import the operations for it).
CONFLICT = "destination exists"


@dataclasses.dataclass(frozen=True)
class Failures:
    """What a job's failed items say, all of them: how many met an existing destination
    (`CONFLICT`), and whether a retry may finish one (`ops._errors.may_pass`)."""

    conflicts: int = 0
    may_pass: bool = False

    def add(self, errors: Iterable[ItemError]) -> Failures:
        errors = list(errors)
        if not errors:  # `jobs` and the commands that print no failure load no operation
            return self
        from ..ops._errors import may_pass

        conflicts, passes = self.conflicts, self.may_pass
        for e in errors:
            conflicts += e.message.startswith(CONFLICT)
            passes = passes or may_pass(e.error, e.message)
        return Failures(conflicts, passes)


#: Reads a page of a job's failed items: ``JobManager.errors`` or the remote client's.
ReadErrors = Callable[..., Awaitable[list["ItemError"]]]

#: How many failed items `failures` reads at a time.
FAILURES_PAGE = 1000


async def failures(read: ReadErrors, job_id: str, shown: list[ItemError], failed: int) -> Failures:
    """`Failures` of the job's ``failed`` items, of which ``shown`` are the first: read page
    by page past them only when there are more (a summary must not say "20 destinations
    exist" of 1,000, nor leave out a retry that could finish one of the others)."""
    facts = Failures().add(shown)
    offset = len(shown)
    while offset < failed:
        page = await read(job_id, limit=FAILURES_PAGE, offset=offset)
        if not page:
            break
        facts = facts.add(page)
        offset += len(page)
    return facts


@dataclasses.dataclass(frozen=True)
class Report:
    """How a followed job ended, for the summary and the exit code."""

    info: JobInfo
    errors: list[ItemError]
    exit_code: int
    resume_command: str | None
    details: list[str] = dataclasses.field(default_factory=list)
    show_command: str = ""
    #: What all the failed items say; ``errors`` may hold only the first of them.
    failures: Failures | None = None

    @property
    def status(self) -> JobStatus:
        return self.info.status

    @property
    def progress(self) -> Progress:
        return self.info.progress


def verb(job_type: str) -> str:
    return VERBS.get(job_type, "done")


def describe(info: JobInfo) -> str:
    """A short description of a stored job from its spec: what it works on, where to."""
    spec = info.spec_data
    if not isinstance(spec, dict):
        return ""
    words: list[str] = []
    paths = spec.get("sources") or spec.get("paths")
    if isinstance(paths, list) and paths:
        more = f" (+{len(paths) - 1} more)" if len(paths) > 1 else ""
        words.append(f"{paths[0]}{more}")
    target = spec.get("destination") or spec.get("out_dir") or spec.get("output")
    if isinstance(target, str):
        words.append(f"→ {target}")
    return fmt.printable(" ".join(words))


def percent(snap: Progress) -> str:
    """``62%`` once the totals are final (while a tree is still walked they only grow)."""
    return fmt.percent(snap.fraction) if snap.totals_final else ""


def stats(snap: Progress) -> list[str]:
    """The figures of a snapshot: bytes, items, speed, ETA, failures, phase. A total that
    may still grow (the walk goes on) has a ``+``."""
    more = "" if snap.totals_final else "+"
    parts: list[str] = []
    if snap.bytes_total:
        parts.append(f"{fmt.size(snap.bytes_done)} / {fmt.size(snap.bytes_total)}{more}")
    elif snap.bytes_done:
        parts.append(fmt.size(snap.bytes_done))
    total = "" if not snap.items_total else f"/{snap.items_total}{more}"
    parts.append(f"{snap.items_finished}{total} items")
    if snap.rate_bytes > 0:
        parts.append(fmt.rate(snap.rate_bytes))
    elif snap.rate_items > 0:
        parts.append(f"{snap.rate_items:.0f} items/s")
    if snap.eta is not None:
        parts.append(f"ETA {fmt.duration(snap.eta)}")
    if snap.items_failed:
        parts.append(f"{snap.items_failed} failed")
    if snap.message and snap.status in _MOVING:
        parts.append(snap.message)
    return parts


def summary(report: Report) -> list[tuple[str, str]]:
    """The end-of-job summary as (style, text) lines."""
    info, snap = report.info, report.progress
    head = f"{info.type} {info.id}: {report.status.value.replace('_', ' ')}"
    lines: list[tuple[str, str]] = []
    if report.status in (JobStatus.PAUSED, JobStatus.INTERRUPTED):
        at = percent(snap)
        head += f" at {at}" if at else ""
    if report.status is JobStatus.FAILED and info.error:
        head += f": {fmt.printable(info.error)}"
    lines.append((_STATUS_STYLE.get(report.status, "bold"), head))
    lines.append(("", "  " + _counts(info.type, snap, info.result)))
    if report.errors or snap.items_failed:
        total = max(snap.items_failed, len(report.errors))
        lines.append(("red", f"  failed items ({total}):"))
        lines += [
            ("red", f"    {fmt.printable(e.label)}: {fmt.printable(e.message)}")
            for e in report.errors[:ERRORS_SHOWN]
        ]
        shown = min(len(report.errors), ERRORS_SHOWN)
        if total > shown:
            more = f" ({report.show_command})" if report.show_command else ""
            lines.append(("red", f"    … and {total - shown} more{more}"))
    paused = report.status in (JobStatus.PAUSED, JobStatus.INTERRUPTED)
    facts = report.failures or Failures().add(report.errors)
    conflicts = facts.conflicts
    if conflicts and not paused:  # a resume would meet the same destinations again
        lines.append(
            (
                "bold",
                f"  {conflicts} destination{' exists' if conflicts == 1 else 's exist'}: "
                f"run the {info.type} again with "
                "--on-conflict skip, overwrite, rename or update",
            )
        )
    # A resume retries the failed items: worth saying when one of them may pass.
    if report.resume_command and (paused or facts.may_pass):
        what = "resume with" if paused else "retry with"
        lines.append(("bold", f"  {what}: {report.resume_command}"))
    lines += [("", line) for line in report.details]
    return lines


def _done_words(job_type: str, snap: Progress, result: object) -> str:
    """ "1 file copied", "315 files, 86 directories, 2 symlinks copied": files, directories
    and symlinks apart where the result counts them (a copy; "4 files (2 hard links)" when
    some files were made as links), a move's files moved, a trash job's items trashed, else
    the items done."""
    if isinstance(result, dict) and isinstance(result.get("files"), int):
        kinds = [("files", "file", "files"), ("dirs", "directory", "directories")]
        kinds.append(("symlinks", "symlink", "symlinks"))
        parts = [
            f"{result[key]} {one if result[key] == 1 else many}"
            for key, one, many in kinds
            if isinstance(result.get(key), int) and result[key]
        ]
        linked = result.get("linked")
        if isinstance(linked, int) and linked and parts:
            parts[0] += f" ({linked} hard link{'' if linked == 1 else 's'})"
        return f"{', '.join(parts) or '0 files'} {verb(job_type)}"
    if isinstance(result, dict):
        # Where the items done count more than the job did to the user's files: a move's
        # roots, directories and finishing step; a trash job deleted nothing.
        if job_type == "move" and isinstance(result.get("moved"), int):
            return f"{result['moved']} {verb(job_type)}"
        if job_type == "delete" and isinstance(result.get("trashed"), int) and result["trashed"]:
            return f"{result['trashed']} trashed"
    return f"{snap.items_done} {verb(job_type)}"


def _counts(job_type: str, snap: Progress, result: object = None) -> str:
    words = [_done_words(job_type, snap, result)]
    if snap.bytes_done:
        words[0] += f" ({fmt.size(snap.bytes_done)})"
    if snap.items_skipped:
        words.append(f"{snap.items_skipped} skipped")
    if snap.items_failed:
        words.append(f"{snap.items_failed} failed")
    text = ", ".join(words) + f" in {fmt.duration(snap.elapsed)}"
    if snap.bytes_done and snap.elapsed > 0:
        text += f", {fmt.rate(snap.bytes_done / snap.elapsed)}"
    return text


class Renderer:
    """Base renderer: notes and narration are printed, job progress is ignored."""

    #: True while `suspended`: progress is not drawn.
    held = False

    @contextlib.contextmanager
    def suspended(self) -> Iterator[None]:
        """Draw nothing meanwhile (a question is asked on the terminal), then go on."""
        self.held = True
        self._stop_drawing()
        try:
            yield
        finally:
            self.held = False
            self._start_drawing()

    def _stop_drawing(self) -> None:
        pass

    def _start_drawing(self) -> None:
        pass

    def begin(self, info: JobInfo, title: str) -> None:
        pass

    def progress(self, snap: Progress) -> None:
        pass

    def note(self, text: str) -> None:
        print(f"parjobs: {text}", file=sys.stderr, flush=True)

    def say(self, text: str, style: str = "") -> None:
        """A line of narration (the demo's)."""
        print(text, flush=True)

    def finish(self, report: Report) -> None:
        pass

    def abort(self) -> None:
        """Stop drawing at once (the process is about to exit)."""


class PlainRenderer(Renderer):
    """A line of figures about every second: for logs, pipes and dumb terminals."""

    def __init__(self, out: TextIO | None = None, interval: float = LINE_INTERVAL) -> None:
        self.out = out or sys.stdout
        self.interval = interval
        self._last = 0.0
        self._prefix = ""

    def _print(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def say(self, text: str, style: str = "") -> None:
        self._print(text)

    def begin(self, info: JobInfo, title: str) -> None:
        self._prefix = f"{info.type} {info.id}"
        self._last = 0.0
        self._print(f"{title} {info.id}: {describe(info)}".rstrip(": "))

    def progress(self, snap: Progress) -> None:
        now = time.monotonic()
        if self.held or snap.status not in _MOVING or now - self._last < self.interval:
            return
        self._last = now
        pct = percent(snap)
        head = f"{self._prefix} {snap.status}" + (f" {pct}" if pct else "")
        self._print(f"{head}: " + ", ".join(stats(snap)))

    def finish(self, report: Report) -> None:
        for _, line in summary(report):
            self._print(line)


class JsonRenderer(Renderer):
    """JSON lines: ``job``, then ``progress`` events, then one ``result`` event per job."""

    def __init__(self, out: TextIO | None = None, interval: float = LINE_INTERVAL) -> None:
        self.out = out or sys.stdout
        self.interval = interval
        self._last = 0.0

    def emit(self, event: str, **data: Any) -> None:
        print(dumps({"event": event, **data}, default=str), file=self.out, flush=True)

    def say(self, text: str, style: str = "") -> None:
        self.emit("message", text=text)

    def begin(self, info: JobInfo, title: str) -> None:
        self._last = 0.0
        self.emit(
            "job", job_id=info.id, type=info.type, status=info.status.value, spec=info.spec_data
        )

    def progress(self, snap: Progress) -> None:
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            self.emit("progress", **snap.to_json())

    def finish(self, report: Report) -> None:
        info = report.info
        self.emit("progress", **report.progress.to_json())
        self.emit(
            "result",
            job_id=info.id,
            type=info.type,
            status=info.status.value,
            exit_code=report.exit_code,
            result=info.result,
            error=info.error,
            errors=[dataclasses.asdict(e) for e in report.errors],
            resume_command=report.resume_command,
        )
        if report.exit_code == 3 and report.resume_command:
            self.note(f"job {info.id} is {info.status.value}; resume with: {report.resume_command}")


class LiveRenderer(Renderer):
    """A rich live display: bar, figures, files in flight, error count; then the summary."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._live: Live | None = None
        self._title = ""
        self._id = ""

    def begin(self, info: JobInfo, title: str) -> None:
        from rich.live import Live

        self._title, self._id = title, info.id
        self._live = Live(
            self._view(info.progress),
            console=self.console,
            auto_refresh=False,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self._live.start(refresh=True)

    def progress(self, snap: Progress) -> None:
        if self._live is not None and not self.held:
            self._live.update(self._view(snap), refresh=True)

    def _stop_drawing(self) -> None:
        if self._live is not None:
            self._live.stop()

    def _start_drawing(self) -> None:
        if self._live is not None:
            self._live.start(refresh=True)

    def note(self, text: str) -> None:
        from rich.text import Text

        self.console.print(Text(text, style="yellow"))

    def say(self, text: str, style: str = "") -> None:
        from rich.text import Text

        self.console.print(Text(text, style=style), soft_wrap=True)

    def finish(self, report: Report) -> None:
        from rich.text import Text

        if self._live is not None:
            self._live.update(self._view(report.progress, final=True), refresh=True)
            self._live.stop()
            self._live = None
        for style, line in summary(report):  # soft-wrapped: commands stay copyable
            self.console.print(Text(line, style=style), soft_wrap=True)

    def abort(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def _view(self, snap: Progress, *, final: bool = False) -> RenderableType:
        from rich.console import Group
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        width = self.console.width
        head = Text.assemble(
            (self._title, "bold"), " ", (self._id, "dim"), " ", (snap.status, _style(snap.status))
        )
        fraction = snap.fraction
        bar = ProgressBar(
            total=100.0 if fraction is not None else None,
            completed=(fraction or 0.0) * 100,
            width=max(10, min(60, width - 8)),
            pulse=fraction is None and not final,
            complete_style="cyan",
            finished_style="green",
        )
        row = Table.grid(padding=(0, 1))
        row.add_row(bar, Text(percent(snap), style="bold"))
        figures = Text(" · ".join(stats(snap)))
        if snap.items_failed:
            figures.highlight_words([f"{snap.items_failed} failed"], "bold red")
        parts: list[RenderableType] = [head, row, figures]
        if not final:
            for label in snap.current[:CURRENT_SHOWN]:
                shown = fmt.tail(fmt.printable(label), width - 4)
                parts.append(Text("  " + shown, style="dim", no_wrap=True))
            if snap.in_flight > CURRENT_SHOWN:
                parts.append(Text(f"  … {snap.in_flight - CURRENT_SHOWN} more", style="dim"))
            parts.append(Text("Ctrl-C pauses (resumable)", style="dim italic"))
        return Group(*parts)


_MOVING = ("running", "pausing", "cancelling")


def _style(status: str) -> str:
    try:
        return _STATUS_STYLE.get(JobStatus(status), "bold blue")
    except ValueError:
        return "bold"


def make_renderer(*, json_mode: bool, plain: bool, stream: TextIO | None = None) -> Renderer:
    """JSON (on stdout) when asked; else on ``stream`` (stdout by default): a live display
    when it is a capable terminal, plain lines otherwise."""
    if json_mode:
        return JsonRenderer()
    stream = stream or sys.stdout
    if plain or not _may_be_terminal(stream):
        return PlainRenderer(stream)  # without importing rich (a tenth of start-up)
    from rich.console import Console

    console = Console(file=stream, highlight=False)
    if console.is_terminal and not console.is_dumb_terminal:
        return LiveRenderer(console)
    return PlainRenderer(stream)


def _may_be_terminal(stream: TextIO) -> bool:
    """False when rich would surely say "not a terminal": ``stream`` is no tty and none of
    the variables that make rich treat it as one (``FORCE_COLOR``, ``TTY_COMPATIBLE``) is set."""
    if "FORCE_COLOR" in os.environ or "TTY_COMPATIBLE" in os.environ:
        return True
    try:
        return stream.isatty()
    except (AttributeError, ValueError, OSError):  # no isatty, or a closed stream
        return False
