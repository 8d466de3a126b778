"""Human formatting of sizes, rates, durations and paths."""

from __future__ import annotations

import time

from .._util import printable as printable  # (shared with the ops: a checksum file on a tty)

_UNITS = ("B", "kB", "MB", "GB", "TB", "PB")


#: From ``_LIMITS[k]`` on, a size in unit ``k`` would round to 1000: the next unit is used
#: (999,500 bytes is ``1.00 MB``, not ``1000 kB``).
_LIMITS = [999.5 * 1000**k for k in range(len(_UNITS))]


def size(n: float) -> str:
    """Decimal units, three significant digits: ``532 B``, ``1.24 MB``.

    The unit by comparisons and one format per precision, not a logarithm and a nested
    format spec: 8x cheaper, and a dupes report writes one per group (6,779 for the
    benchmark's tree: ~8 ms of the command's output path before)."""
    if n < 1000:
        return f"{int(n)} B"
    exp = 1
    while exp < len(_UNITS) - 1 and n >= _LIMITS[exp]:
        exp += 1
    value = n / 1000**exp
    if value >= 100:
        return f"{value:.0f} {_UNITS[exp]}"
    if value >= 10:
        return f"{value:.1f} {_UNITS[exp]}"
    return f"{value:.2f} {_UNITS[exp]}"


def rate(bytes_per_second: float) -> str:
    return f"{size(bytes_per_second)}/s"


def duration(seconds: float) -> str:
    """``420 ms``, ``4.2 s``, ``12 s``, ``3 min 05 s``, ``2 h 07 min``."""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 10:
        return f"{seconds:.1f} s"
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def percent(fraction: float | None) -> str:
    return "" if fraction is None else f"{fraction * 100:.0f}%"


def timestamp(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


def tail(text: str, width: int) -> str:
    """``text`` cut from the left to ``width`` characters (the end of a path matters most)."""
    if width <= 1 or len(text) <= width:
        return text if len(text) <= max(width, 1) else text[-max(width, 1) :]
    return "…" + text[-(width - 1) :]
