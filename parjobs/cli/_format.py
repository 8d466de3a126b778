"""Human formatting of sizes, rates, durations and paths."""

from __future__ import annotations

import re
import time

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


#: Control characters (C0, DEL, C1): a terminal acts on them (``ESC [ 1 A`` moves the
#: cursor up, ``CR`` back to the line's start), so a file name holding them could redraw,
#: hide or fake the lines around it. And the bidirectional controls (U+061C, U+200E/F,
#: U+202A-202E, U+2066-2069): a terminal that orders text both ways (Konsole, mlterm)
#: shows ``cv\u202egpj.exe`` as ``cvexe.jpg``.
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escaped(match: re.Match[str]) -> str:
    c = match.group()
    return _NAMED.get(c) or (f"\\x{ord(c):02x}" if c < "\x80" else f"\\u{ord(c):04x}")


def printable(text: str, *, keep_newlines: bool = False) -> str:
    """``text`` with each byte of a file name that is not UTF-8 as ``\\xNN``, as ``ls -b``,
    and each control character escaped (``\\n``, ``\\r``, ``\\t``, ``\\x1b``; C1 and
    bidirectional controls as ``\\u009b``, ``\\u202e``), newlines too unless
    ``keep_newlines`` (text of several lines).

    A name that is not UTF-8 is a ``str`` holding surrogate escapes (`os.fsdecode`): printed
    as it is, it writes the raw byte (garbage on a terminal) or fails on a strict stream. Any
    other lone surrogate (no name's) is shown as ``\\udNNN``. A name with control characters
    printed raw acts on the terminal: ``ESC [ 1 A ESC [ 2 K`` erased the failure line before
    it from a job's summary."""
    if not text.isascii():
        try:
            text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        except UnicodeEncodeError:
            text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    if keep_newlines:
        return "\n".join(_CONTROLS.sub(_escaped, line) for line in text.split("\n"))
    return _CONTROLS.sub(_escaped, text)


def tail(text: str, width: int) -> str:
    """``text`` cut from the left to ``width`` characters (the end of a path matters most)."""
    if width <= 1 or len(text) <= width:
        return text if len(text) <= max(width, 1) else text[-max(width, 1) :]
    return "…" + text[-(width - 1) :]
