"""Small helpers shared by the manager, the blocking facade and the CLI: exception groups,
public module names, classes without a public constructor, parjobs' state directory; and
`MAX_WORKERS`."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

T = TypeVar("T")

#: The most workers a pool may have. Concurrency is bounded by the lanes' threads anyway
#: (``io``: 4 per core, at least 16, by default); past a thousand, more workers only cost
#: memory (the dispatch window grows with them) and scheduling. Here, in the lowest layer,
#: not in `parjobs._pool`: the command line's parser checks ``--workers`` against it
#: without importing trio (which a ``dupes`` scan overlaps, `parjobs.ops._prescan`).
MAX_WORKERS = 1024


class NoPublicConstructor(type):
    """Metaclass of the classes users receive but do not build (as trio's): the package
    makes them with ``Class._create(...)``, because their constructors take private
    collaborators; calling the class raises `TypeError`. Goes with `typing.final`, except
    where the package itself extends the class."""

    def __call__(cls, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError(
            f"{cls.__module__}.{cls.__qualname__} has no public constructor: "
            "the package gives you one (see its documentation)"
        )

    if TYPE_CHECKING:

        def _create(cls: type[T], *args: Any, **kwargs: Any) -> T: ...

    else:
        # The real constructor, bound to the class: no extra Python frame on the paths that
        # build one per task (TaskContext, TaskHandle).
        _create = type.__call__


def state_dir() -> str:
    """parjobs' own directory of state: ``$XDG_STATE_HOME/parjobs`` (by default
    ``~/.local/state/parjobs``): the default store, the server's tokens, its restart notes."""
    state = os.environ.get("XDG_STATE_HOME", "")
    if not os.path.isabs(state):  # the XDG spec says: ignore relative paths
        state = os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(state, "parjobs")


def names_contents(path: str) -> bool:
    """Whether ``path``'s last component (trailing slashes aside) is ``.`` or ``..``: it
    names a directory as seen from inside, which the kernel resolves (``link/.`` is the
    link's target, ``file/.`` is "Not a directory"), and which ``cp -a x/. D`` copies by its
    contents, merged into ``D``, where ``cp -a x D`` makes ``D/x``."""
    return path.rstrip(os.sep).rpartition(os.sep)[2] in (os.curdir, os.pardir)


def kernel_split(path: str) -> tuple[str, str | None]:
    """``path`` as the kernel resolves its ``..``: ``(directory, name)``, the entry ``name``
    of ``directory`` (whose own ``..`` and symlinks the kernel follows; ``name`` is not
    followed, a symlink stays one), or ``(path, None)`` when ``path`` names a directory
    itself (its last component is ``.`` or ``..``). ``abspath`` reads ``..``
    lexically instead: ``link/../x`` is then the ``x`` beside the link, another file than
    the kernel's ``x`` next to the link's target. Trailing slashes are ignored."""
    stripped = path.rstrip(os.sep) or os.sep
    head, sep, last = stripped.rpartition(os.sep)
    if last in (os.curdir, os.pardir):
        return stripped, None
    return (head or os.sep) if sep else os.curdir, last


def kernel_abspath(path: str) -> str:
    """``path`` made absolute with its ``..`` resolved as the kernel does (`kernel_split`):
    the directory physically (``os.path.realpath``), the path's own last name kept (a
    symlink stays one). A path without ``..`` is only made absolute (``abspath``), its
    symlinks kept as written."""
    if os.pardir not in path.split(os.sep):
        return os.path.abspath(path)
    directory, name = kernel_split(path)
    resolved = os.path.realpath(directory)
    return resolved if name is None else os.path.join(resolved, name)


def exception_leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) exception groups, or ``[exc]`` for a plain one."""
    if not isinstance(exc, BaseExceptionGroup):
        return [exc]
    out: list[BaseException] = []
    for inner in exc.exceptions:
        out.extend(exception_leaves(inner))
    return out


def unwrap_single(exc: BaseException) -> BaseException:
    """The single error inside (nested) one-member exception groups, as trio wraps them;
    ``exc`` itself when a group holds more than one."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def fixup_module_metadata(
    module_name: str, names: Iterable[str], namespace: dict[str, object]
) -> None:
    """Set ``__module__`` of the public classes and functions re-exported by ``module_name``
    to that module (as trio does), so reprs, tracebacks and docs show ``parjobs.JobManager``
    rather than ``parjobs._manager.JobManager``. Objects from other packages are left alone."""
    for name in names:
        obj = namespace[name]
        mod = getattr(obj, "__module__", None)
        if (
            isinstance(mod, str)
            and mod.startswith("parjobs.")
            and (isinstance(obj, type) or callable(obj))
        ):
            try:
                obj.__module__ = module_name
            except (AttributeError, TypeError):  # e.g. a builtin-like object
                continue


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
