"""Human formatting of sizes, rates, durations and paths."""

from __future__ import annotations

import math
import time

_UNITS = ("B", "kB", "MB", "GB", "TB", "PB")


def size(n: float) -> str:
    """Decimal units, three significant digits: ``532 B``, ``1.24 MB``."""
    if n < 1000:
        return f"{int(n)} B"
    exp = min(int(math.log(n, 1000)), len(_UNITS) - 1)
    value = n / 1000**exp
    if value >= 999.5 and exp < len(_UNITS) - 1:
        exp, value = exp + 1, value / 1000
    digits = 0 if value >= 100 else 1 if value >= 10 else 2
    return f"{value:.{digits}f} {_UNITS[exp]}"


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
