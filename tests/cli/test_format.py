"""The human formats of `parjobs.cli._format`."""

from __future__ import annotations

import math
import os

import pytest

from parjobs.cli import _format as fmt


def _by_logarithm(n: float) -> str:
    """The formula `fmt.size` replaced (a logarithm picks the unit): the reference."""
    if n < 1000:
        return f"{int(n)} B"
    units = ("B", "kB", "MB", "GB", "TB", "PB")
    exp = min(int(math.log(n, 1000)), len(units) - 1)
    value = n / 1000**exp
    if value >= 999.5 and exp < len(units) - 1:
        exp, value = exp + 1, value / 1000
    digits = 0 if value >= 100 else 1 if value >= 10 else 2
    return f"{value:.{digits}f} {units[exp]}"


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0 B"),
        (999, "999 B"),
        (1000, "1.00 kB"),
        (12_345, "12.3 kB"),
        (999_499, "999 kB"),
        (999_500, "1.00 MB"),
        (1_240_000, "1.24 MB"),
        (10**15, "1.00 PB"),
        (10**18, "1000 PB"),
    ],
)
def test_size(n: int, text: str) -> None:
    assert fmt.size(n) == text


def test_size_is_the_logarithm_formula_at_every_unit_boundary() -> None:
    for e in range(3, 19):
        for base in (1, 9.995, 10, 99.95, 100, 999.5, 999.4999):
            for d in (-1, 0, 1):
                n = int(base * 10**e) + d
                assert fmt.size(n) == _by_logarithm(n), n
                assert fmt.size(n + 0.5) == _by_logarithm(n + 0.5), n


def test_printable_escapes_control_characters() -> None:
    """Control characters of a name are shown escaped (a terminal would act on them);
    ``keep_newlines`` keeps the lines of a text of several (``show``'s indented JSON)."""
    assert fmt.printable("a\x1b[2Kb\tc\rd\ne\x7f\x9b") == "a\\x1b[2Kb\\tc\\rd\\ne\\x7f\\u009b"
    assert fmt.printable("bad-" + os.fsdecode(b"\xff") + "\x07") == "bad-\\xff\\x07"
    assert fmt.printable("x\n\x1b\ny", keep_newlines=True) == "x\n\\x1b\ny"
    assert fmt.printable("plain é") == "plain é"


def test_printable_escapes_bidirectional_controls() -> None:
    """A right-to-left override shows a name's end reversed on a terminal that orders text
    both ways (``cv<RLO>gpj.exe`` as ``cvexe.jpg``): escaped, as the other controls. Letters
    of right-to-left scripts are names, shown as they are."""
    assert fmt.printable("cv\u202egpj.exe") == "cv\\u202egpj.exe"
    hidden = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u2066\u2067\u2068\u2069"
    assert fmt.printable(hidden) == "".join(f"\\u{ord(c):04x}" for c in hidden)
    assert fmt.printable("שלום سلام") == "שלום سلام"
