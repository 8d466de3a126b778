"""The numeric ``$PARJOBS_*`` settings the library reads, parsed one way.

The library reads each where it is used, leniently: a value that is not a positive number
means the default there, as a manager running for hours must not fail on it. The CLI checks
them all before it opens a store (`check`), and refuses a bad one as it does a bad option
(exit 2, one line naming it) instead of running silently with the default.
"""

from __future__ import annotations

import math
import os

__all__ = ["NUMBERS", "check", "positive", "positive_or"]

#: The numeric settings: name, and whether it must be an integer (lease and connect
#: timeouts in seconds, the decode memory in bytes).
NUMBERS: tuple[tuple[str, bool], ...] = (
    ("PARJOBS_LEASE_TIMEOUT", False),
    ("PARJOBS_PG_CONNECT_TIMEOUT", True),
    ("PARJOBS_DECODE_MEMORY", True),
)


def positive(name: str, integer: bool) -> float | None:
    """``$name`` as a positive number (an integer if ``integer``), None when unset or empty;
    a `ValueError` naming the variable and its value otherwise."""
    text = os.environ.get(name, "").strip()
    if not text:
        return None
    try:
        value: float = int(text) if integer else float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        kind = "a positive integer" if integer else "a positive number"
        raise ValueError(f"{name}: expected {kind}, got {text[:40]!r}")
    return value


def positive_or(name: str, integer: bool, default: float) -> float:
    """``$name`` as `positive` reads it, or ``default`` when it is unset or bad."""
    try:
        value = positive(name, integer)
    except ValueError:
        return default
    return default if value is None else value


def check() -> None:
    """Raise the `ValueError` of the first bad numeric setting (`NUMBERS`), if any."""
    for name, integer in NUMBERS:
        positive(name, integer)
