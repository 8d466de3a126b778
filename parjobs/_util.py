"""Small helpers shared by the manager, the blocking facade and the CLI: exception groups,
public module names, classes without a public constructor, parjobs' state directory; and
`MAX_WORKERS`."""

from __future__ import annotations

import os
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
