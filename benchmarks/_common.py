"""Shared benchmark helpers: interleaved rounds, machine description, results JSON, charts.

Contenders are plain callables. `run_rounds` calls them alternately (one call each per round,
rotating the order), so drift in machine load hits every contender alike. A contender may time
only its own region by returning a `Timing`; otherwise the whole call is timed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import fcntl
import gc
import json
import os
import platform
import resource
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "benchmarks" / "results"
IMAGES_DIR: Path | None = ROOT / "docs" / "images"
#: Appended to the results file name (``<date>-<host>-<tag>.json``); see `configure_output`.
RESULTS_TAG = ""
TIMES = "\u00d7"  # the multiplication sign, for ratio labels


# -- timing ---------------------------------------------------------------------------------

#: A round stalled outside the contender's work (`Measurement.stalled`): its wall time is over
#: this many times the contender's median, and at least `STALL_MIN` seconds over it, while
#: its user time is not over this many times its median.
STALL = 2.0
STALL_MIN = 0.5


@dataclasses.dataclass(frozen=True, slots=True)
class Timing:
    """Wall and CPU seconds of one measured region (CPU covers every thread of the process).

    ``peak_rss`` (bytes) is set by contenders that run elsewhere (a child process): it then
    replaces this process' peak in the measurement. ``sys``: the system part of ``cpu``, when
    known (a child process): the rest is user time, which a stalled round did not spend
    (`Measurement.stalled`)."""

    wall: float
    cpu: float
    peak_rss: int | None = None
    sys: float | None = None


class Stopwatch:
    """Measure a region: ``sw = Stopwatch()`` ... ``timing = sw.stop()``."""

    __slots__ = ("_cpu0", "_wall0")

    def __init__(self) -> None:
        self._wall0 = time.perf_counter()
        self._cpu0 = time.process_time()

    def stop(self) -> Timing:
        return Timing(time.perf_counter() - self._wall0, time.process_time() - self._cpu0)


@dataclasses.dataclass
class Measurement:
    """One contender's rounds: wall and CPU seconds per round (and system seconds, when the
    contender is a child process), the process' peak RSS after them, and ``items`` per round
    for per-item figures."""

    name: str
    wall: list[float] = dataclasses.field(default_factory=list)
    cpu: list[float] = dataclasses.field(default_factory=list)
    sys: list[float] = dataclasses.field(default_factory=list)
    peak_rss: int = 0  # bytes; highest RSS during its calls (see `reset_peak_rss`)
    rss_growth: int = 0  # bytes; most any one call grew RSS above the RSS it started with
    items: int = 1
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)
    child: bool = False  # ran as a child process: the RSS figures are the child's own peak

    @property
    def median(self) -> float:
        return statistics.median(self.wall)

    @property
    def min(self) -> float:
        return min(self.wall)

    @property
    def max(self) -> float:
        return max(self.wall)

    @property
    def cpu_median(self) -> float:
        return statistics.median(self.cpu)

    def per_item_us(self, seconds: float) -> float:
        return seconds / self.items * 1e6

    def stalled(self) -> list[int]:
        """The rounds (0-based) that stalled outside the contender's own work: wall time past
        `STALL` times this contender's median and at least `STALL_MIN` seconds above it,
        while its user time is not (within `STALL` of its median). The time went to the
        kernel (system time) or to waiting for the disk: on the benchmark VM the disk under
        ``/tmp`` now and then holds a call for seconds, whichever contender runs. Only known
        for child processes (their system time is measured apart)."""
        if len(self.sys) != len(self.wall) or len(self.wall) < 3:
            return []
        user = [c - s for c, s in zip(self.cpu, self.sys, strict=True)]
        wall, usual_user = statistics.median(self.wall), statistics.median(user)
        limit = max(wall * STALL, wall + STALL_MIN)
        return [
            i
            for i, (w, u) in enumerate(zip(self.wall, user, strict=True))
            if w > limit and u <= usual_user * STALL
        ]

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "rounds_wall_s": [round(w, 6) for w in self.wall],
            "rounds_cpu_s": [round(c, 6) for c in self.cpu],
            "median_s": round(self.median, 6),
            "min_s": round(self.min, 6),
            "max_s": round(self.max, 6),
            "cpu_median_s": round(self.cpu_median, 6),
        }
        if self.sys and len(self.sys) == len(self.wall):
            data["rounds_sys_s"] = [round(s, 6) for s in self.sys]
            stalled = self.stalled()
            if stalled:  # flagged, not dropped: the medians above keep every round
                data["stalled_rounds"] = [i + 1 for i in stalled]
                rest = [w for i, w in enumerate(self.wall) if i not in stalled]
                data["median_s_unstalled"] = round(statistics.median(rest), 6)
        data |= {
            "peak_rss_mb": round(self.peak_rss / 2**20, 1),
            "rss_growth_mb": round(self.rss_growth / 2**20, 1),
            "rss_of": "child process" if self.child else "this process",
        }
        if self.items != 1:
            data["items"] = self.items
            data["median_us_per_item"] = round(self.per_item_us(self.median), 3)
            data["min_us_per_item"] = round(self.per_item_us(self.min), 3)
            data["max_us_per_item"] = round(self.per_item_us(self.max), 3)
            data["cpu_us_per_item"] = round(self.per_item_us(self.cpu_median), 3)
        data.update(self.extra)
        return data


class Rounds(dict[str, Measurement]):
    """The measurements of one `run_rounds` call, by contender name (in the given order)."""

    def ratio_to(self, baseline: str) -> dict[str, float]:
        """Median wall time of every contender divided by the baseline's."""
        base = self[baseline].median
        return {name: m.median / base for name, m in self.items()}

    def to_json(self, **baselines: str) -> dict[str, Any]:
        """Every measurement as JSON, with ``ratio_to_<key>`` for each ``key=baseline``."""
        ratios = {key: self.ratio_to(name) for key, name in baselines.items()}
        out = {}
        for name, m in self.items():
            data = m.to_json()
            for key, by_name in ratios.items():
                data[f"ratio_to_{key}"] = round(by_name[name], 3)
            out[name] = data
        return out


def run_rounds(
    contenders: Mapping[str, Callable[[], Timing | None]],
    rounds: int,
    warmup: int = 1,
    *,
    items: int = 1,
    progress: bool = True,
) -> Rounds:
    """Call every contender once per round, alternately, rotating who goes first.

    ``warmup`` rounds run the same way and are discarded. A contender returning a `Timing`
    reports its own region; returning None times the whole call.
    """
    names = list(contenders)
    result = Rounds((name, Measurement(name, items=items)) for name in names)
    for r in range(warmup + rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            # Start each call with no garbage, then freeze what is alive (the harness's own
            # objects: matplotlib's alone are ~60,000), so neither this collection nor those
            # during the call walk them again: after the first chart each collect here took
            # 60-120 ms (a --tiny run: 15.3 s of user CPU instead of 17.7 s).
            gc.collect()
            gc.freeze()
            reset_peak_rss()
            rss0, sw = current_rss_bytes(), Stopwatch()
            timing = contenders[name]() or sw.stop()
            if r >= warmup:
                m = result[name]
                m.wall.append(timing.wall)
                m.cpu.append(timing.cpu)
                if timing.sys is not None:
                    m.sys.append(timing.sys)
                if timing.peak_rss is not None:  # a child process: its own peak is its growth
                    peak = growth = timing.peak_rss
                    m.child = True
                else:
                    peak = peak_rss_bytes()
                    growth = peak - rss0
                m.peak_rss = max(m.peak_rss, peak)
                m.rss_growth = max(m.rss_growth, growth)
            if progress:
                tag = "warmup" if r < warmup else f"round {r - warmup + 1}/{rounds}"
                sys_ms = "" if timing.sys is None else f"  (sys {timing.sys * 1e3:,.0f} ms)"
                log(f"  {tag:>11}  {name:<34} {timing.wall * 1e3:9.1f} ms{sys_ms}")
    return result


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- memory ---------------------------------------------------------------------------------


def peak_rss_bytes() -> int:
    """This process' peak resident set size: VmHWM from /proc/self/status.

    Not ``ru_maxrss``: Linux carries the high-water mark of the pre-exec image over into
    ``ru_maxrss``, so a child started from a big parent reports the parent's peak.
    """
    with contextlib.suppress(OSError), open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return ru_maxrss_bytes()


def reset_peak_rss() -> bool:
    """Reset this process' peak RSS (VmHWM) to its current RSS, so the next `peak_rss_bytes`
    covers only what runs after this call. Linux only; returns False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def ru_maxrss_bytes() -> int:
    """``getrusage(RUSAGE_SELF).ru_maxrss`` in bytes (it is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def current_rss_bytes() -> int:
    """This process' resident set size now."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def children_cpu_seconds() -> float:
    """User + system CPU of waited-for child processes so far."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def children_sys_seconds() -> float:
    """System CPU of waited-for child processes so far."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_stime


def run_python(code: str, *, timeout: float = 600.0) -> tuple[Any, Timing]:
    """Run ``code`` in a fresh ``python -c`` (repo root on the path); return the JSON it
    printed last and the child's wall/CPU time."""
    paths = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(paths))
    cpu0, sw = children_cpu_seconds(), Stopwatch()
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    timing = Timing(sw.stop().wall, children_cpu_seconds() - cpu0)
    if proc.returncode != 0:
        raise RuntimeError(f"child failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1]), timing


@contextlib.contextmanager
def temp_dir(prefix: str = "parjobs-bench-", dir: Path | None = None) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix=prefix, dir=dir) as name:
        yield Path(name)


# -- machine --------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    """CPU, cores, RAM, OS, versions, and the filesystem the temporary stores live on."""
    import trio

    import parjobs

    tmp = tempfile.gettempdir()
    return {
        "host": socket.gethostname(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)),
        "ram_gb": round(_meminfo_kib("MemTotal") / 2**20, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "trio": trio.__version__,
        "parjobs": parjobs.__version__,
        "sqlite": sqlite3.sqlite_version,
        "git": _git_revision(),
        "tmp_dir": tmp,
        "tmp_fs": fs_type(tmp),
        "loadavg": load_average(),
        "pressure": pressure(),
    }


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages: other work on the machine skews timings."""
    return [round(x, 2) for x in os.getloadavg()]


def pressure() -> dict[str, float]:
    """Pressure stall information (Linux PSI, % of the last 10 s some task waited for CPU
    or I/O): other processes competing for the machine while a case ran."""
    out: dict[str, float] = {}
    for res in ("cpu", "io"):
        with contextlib.suppress(OSError, ValueError), open(f"/proc/pressure/{res}") as f:
            for line in f:
                kind, *fields = line.split()
                avg10 = dict(x.split("=") for x in fields)["avg10"]
                out[f"{res}_{kind}_avg10"] = float(avg10)
    return out


def _cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _meminfo_kib(key: str) -> int:
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def fs_type(path: str) -> str:
    """The type of the filesystem holding ``path``: the longest matching /proc/mounts entry."""
    real = os.path.realpath(path)
    best, fstype = "", "unknown"
    with contextlib.suppress(OSError), open("/proc/mounts") as f:
        for line in f:
            fields = line.split()
            if len(fields) < 3:
                continue
            mount = fields[1].replace("\\040", " ")
            inside = real == mount or real.startswith(mount.rstrip("/") + "/")
            if inside and len(mount) >= len(best):
                best, fstype = mount, fields[2]
    return fstype


def _git_revision() -> str | None:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
    except OSError:
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


# -- results --------------------------------------------------------------------------------


def configure_output(
    results_dir: Path | None = None, *, images: bool = True, tag: str = ""
) -> None:
    """Send results JSON and charts to ``results_dir`` (default ``benchmarks/results``);
    without ``images`` charts skip ``docs/images``; ``tag`` names a separate results file
    (quick runs must not replace the full run's figures)."""
    global RESULTS_DIR, IMAGES_DIR, RESULTS_TAG
    RESULTS_DIR = Path(results_dir) if results_dir else ROOT / "benchmarks" / "results"
    IMAGES_DIR = ROOT / "docs" / "images" if images else None
    RESULTS_TAG = tag


def results_path(day: datetime.date | None = None) -> Path:
    day = day or datetime.date.today()
    tag = f"-{RESULTS_TAG}" if RESULTS_TAG else ""
    return RESULTS_DIR / f"{day.isoformat()}-{socket.gethostname()}{tag}.json"


def write_results(scenario: str, data: Mapping[str, Any]) -> Path:
    """Merge ``data`` as ``scenarios[scenario]`` into today's results file for this host.

    The file is read, updated and atomically replaced under a lock, so several scenario
    scripts may add to it (also at the same time).
    """
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = results_path()
    with open(RESULTS_DIR / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        doc: dict[str, Any] = {}
        with contextlib.suppress(FileNotFoundError, ValueError), open(path) as f:
            doc = json.load(f)
        doc["machine"] = machine_info()
        doc.setdefault("scenarios", {})[scenario] = {
            "measured_at": datetime.datetime.now().isoformat(timespec="seconds"),
            **data,
        }
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(doc, indent=2, sort_keys=False) + "\n")
        os.replace(tmp, path)
    return path


# -- charts ---------------------------------------------------------------------------------


def bar_chart(
    rounds: Rounds,
    *,
    baseline: str,
    filename: str,
    title: str,
    per_item: bool = True,
    target: float | None = None,
    note: str = "",
) -> list[Path]:
    """Horizontal bars of median wall time (per item in µs, or seconds) with min/max error
    bars and the ratio to ``baseline``; ``target`` draws a dashed line at that multiple of
    the baseline. Saved into ``benchmarks/results/`` and ``docs/images/``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(rounds)

    def scale(m: Measurement, seconds: float) -> float:
        return m.per_item_us(seconds) if per_item else seconds

    unit = "µs per task (median of rounds)" if per_item else "seconds (median of rounds)"
    med = [scale(rounds[n], rounds[n].median) for n in names]
    lo = [v - scale(rounds[n], rounds[n].min) for n, v in zip(names, med, strict=True)]
    hi = [scale(rounds[n], rounds[n].max) - v for n, v in zip(names, med, strict=True)]
    ratios = rounds.ratio_to(baseline)

    fig, ax = plt.subplots(figsize=(9, 0.6 * len(names) + 1.8), dpi=120)
    colors = ["#4c72b0" if n != baseline else "#8c8c8c" for n in names]
    ypos = list(range(len(names)))[::-1]
    ax.barh(ypos, med, xerr=[lo, hi], color=colors, capsize=4, error_kw={"lw": 1})
    ax.set_yticks(ypos, [n + ("  (baseline)" if n == baseline else "") for n in names])
    ax.set_xlabel(unit)
    ax.set_title(title, fontsize=11)
    right = max(v + h for v, h in zip(med, hi, strict=True))
    if target is not None:
        x = target * med[names.index(baseline)]
        right = max(right, x)
        ax.axvline(x, ls="--", lw=1, color="#c44e52")
        ax.text(x, ypos[0] + 0.5, f" target {target:g}{TIMES}", color="#c44e52", fontsize=8)
    for y, v, h, n in zip(ypos, med, hi, names, strict=True):
        label = f"{v:,.2f}  ({ratios[n]:.2f}{TIMES})"
        ax.text(v + h + right * 0.01, y, label, va="center", fontsize=9)
    ax.set_xlim(0, right * 1.3)
    ax.set_ylim(-0.6, len(names) - 0.2)
    if note:
        fig.text(0.01, 0.01, note, fontsize=7, color="#555555")
    fig.tight_layout(rect=(0, 0.03 if note else 0, 1, 1))
    return save_figure(fig, filename)


def save_figure(fig: Any, filename: str, **savefig: Any) -> list[Path]:
    """Save a matplotlib figure into the results folder (and ``docs/images/``), close it."""
    import matplotlib.pyplot as plt

    paths = []
    for folder in (RESULTS_DIR, IMAGES_DIR):
        if folder is None:
            continue
        folder.mkdir(parents=True, exist_ok=True)
        fig.savefig(folder / filename, **savefig)
        paths.append(folder / filename)
    plt.close(fig)
    return paths


def machine_note() -> str:
    """One line describing the machine, for chart footers."""
    m = machine_info()
    return (
        f"{m['cpu']}, {m['cores_usable']} cores, {m['ram_gb']} GB, {m['python']}, "
        f"trio {m['trio']}, parjobs {m['parjobs']} ({m['git']}), tmp on {m['tmp_fs']}, "
        f"load {m['loadavg'][0]:g}"
    )


def panel_chart(
    panels: Sequence[tuple[str, Rounds, str]],
    *,
    filename: str,
    title: str,
    note: str = "",
) -> list[Path]:
    """One figure, one panel per ``(title, rounds, baseline)``: horizontal bars of median
    wall time with min/max whiskers, labelled with the ratio to the panel's baseline (grey).
    Times below a second are shown in ms. Saved like `bar_chart`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    heights = [0.32 * len(rounds) + 0.9 for _, rounds, _ in panels]
    fig, axes = plt.subplots(
        len(panels),
        1,
        figsize=(9, sum(heights) + 0.9),
        dpi=100,
        gridspec_kw={"height_ratios": heights},
        squeeze=False,
    )
    for ax, (sub, rounds, baseline) in zip(axes[:, 0], panels, strict=True):
        names = list(rounds)
        top = max(rounds[n].max for n in names)
        scale, unit = (1e3, "ms") if top < 1 else (1.0, "s")
        med = [rounds[n].median * scale for n in names]
        lo = [v - rounds[n].min * scale for n, v in zip(names, med, strict=True)]
        hi = [rounds[n].max * scale - v for n, v in zip(names, med, strict=True)]
        ratios = rounds.ratio_to(baseline)
        ypos = list(range(len(names)))[::-1]
        colors = ["#8c8c8c" if n == baseline else "#4c72b0" for n in names]
        ax.barh(ypos, med, xerr=[lo, hi], color=colors, height=0.7, capsize=3, error_kw={"lw": 1})
        ax.set_yticks(ypos, [n + (" (baseline)" if n == baseline else "") for n in names])
        ax.tick_params(axis="y", labelsize=8)
        ax.tick_params(axis="x", labelsize=8)
        ax.set_title(sub, fontsize=9, loc="left")
        ax.set_xlabel(f"wall time, {unit} (median, min-max)", fontsize=8)
        right = max(v + h for v, h in zip(med, hi, strict=True)) or 1.0
        for y, v, h, n in zip(ypos, med, hi, names, strict=True):
            text = f"{v:,.{0 if v >= 100 else 2}f} {unit}  {ratios[n]:.2f}{TIMES}"
            ax.text(v + h + right * 0.01, y, text, va="center", fontsize=7.5)
        ax.set_xlim(0, right * 1.32)
        ax.set_ylim(-0.6, len(names) - 0.4)
    fig.suptitle(title, fontsize=11, x=0.01, ha="left")
    if note:
        fig.text(0.01, 0.005, note, fontsize=6.5, color="#555555")
    fig.tight_layout(rect=(0, 0.02 if note else 0, 1, 1))
    return save_figure(fig, filename)
