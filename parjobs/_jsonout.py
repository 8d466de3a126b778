"""The lines ``--json`` prints: strict JSON in UTF-8, whatever the file names.

A file name that is not UTF-8 (``b"bad-\\xff"``) is a ``str`` holding surrogate escapes in
Python (`os.fsdecode`), which `json.dumps` writes as a lone surrogate (``"bad-\\udcff"``):
Python's own json reads it back, but it is no Unicode text, and strict parsers (and any
UTF-8 encoder) refuse it. So in every line the command line prints with ``--json`` (the
``job``/``progress``/``result`` events of ``hash``, ``dupes`` and the other commands, ``jobs``,
``show``, ``show --items``, ``trash list``...), such a string is written with each byte that is
not UTF-8 as the four characters ``\\xNN`` (``bad-\\xff``: as the text displays show it), and
the line's object gets a field `NAMES_FIELD` that maps each string so written to the name's
own bytes, base64-encoded: a consumer that needs the exact name looks its string up there
(a string that is not there is the name itself, UTF-8). A line with no such name has no
such field and is what `json.dumps` writes.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

#: The field that maps each name written with ``\\xNN`` escapes to its bytes (base64).
NAMES_FIELD = "names_bytes"


def dumps(data: dict[str, Any], *, default: Callable[[Any], Any] | None = None) -> str:
    """``json.dumps(data, default=default)``, with every string holding surrogate escapes
    written as described in the module docstring, and their bytes in `NAMES_FIELD`.

    Checked on the text first: ``json.dumps`` writes every surrogate as ``\\udcXX`` or
    ``\\ud8XX``.. (ASCII output), so a line without ``\\ud`` is written as it is (a dupes
    result is megabytes: one search, not a walk). A character beyond the BMP (an emoji) is
    written as such a pair too; the walk then finds nothing to change."""
    text = json.dumps(data, default=default)
    if "\\ud" not in text:
        return text
    names: dict[str, str] = {}
    fixed = _strict(data, names, default)
    if names and isinstance(fixed, dict):
        fixed[NAMES_FIELD] = names
    return json.dumps(fixed, default=default)


def _strict(obj: Any, names: dict[str, str], default: Callable[[Any], Any] | None) -> Any:
    """``obj`` with its strings (dict keys too) made strict by `_name`."""
    if isinstance(obj, str):
        return _name(obj, names)
    if isinstance(obj, dict):
        return {
            _name(k, names) if isinstance(k, str) else k: _strict(v, names, default)
            for k, v in obj.items()
        }
    if isinstance(obj, list | tuple):
        return [_strict(v, names, default) for v in obj]
    if obj is None or isinstance(obj, int | float):
        return obj
    if default is not None:  # what json.dumps would write for it, made strict too
        return _strict(default(obj), names, None)
    return obj


def _name(text: str, names: dict[str, str]) -> str:
    """``text`` itself when it is Unicode text; a name's surrogate escapes as ``\\xNN``
    (its bytes recorded in ``names``); any other lone surrogate as ``\\udNNN``."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate no undecodable byte gives: no name's
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    shown = raw.decode("utf-8", "backslashreplace")
    names[shown] = base64.b64encode(raw).decode("ascii")
    return shown


__all__ = ["NAMES_FIELD", "dumps"]
