"""A cache, across processes, of the code `dataclasses` and ``attrs`` generate for classes.

Both write the source of each class's methods (``__init__``, ``__repr__``, ``__eq__``...)
and compile it when the class is made, at import: a ``parjobs copy`` of one file compiled
140 snippets for parjobs' dataclasses and 51 for trio's ``attrs`` classes, ~45 ms of the
command's ~250 ms of CPU (measured 2026-12-04). A code object depends only on its source,
its file name, the compiler's flags and the interpreter, so, as a ``.pyc`` does for a module,
a file keyed by those serves the next process: reading it back costs ~1 ms.

`install` (the program only: `parjobs.cli.main` without arguments) makes both libraries
compile through the cache, from when they are imported; the cache is read on the first
look-up and written at exit when a snippet was compiled (`atexit`). The file lives in
``$XDG_CACHE_HOME/parjobs`` (by default ``~/.cache/parjobs``), one per interpreter version,
0600 in a 0700 directory; a file that is not the user's, is writable by others, or does not
read back whole (checksum) is ignored and replaced. Any error leaves the libraries compiling
as they do without the cache.
"""

from __future__ import annotations
import __future__

import atexit
import contextlib
import marshal
import os
import sys
import zlib
from collections.abc import Callable
from importlib.util import MAGIC_NUMBER
from types import CodeType, ModuleType
from typing import Any

#: A snippet: its source, file name and compiler flags.
Key = tuple[str, str, int]

#: Kept at most; above, a save keeps only what this process used (sources of old versions go).
MAX_ENTRIES = 4096

#: Before the data: the interpreter's bytecode magic, the optimization level, a CRC-32.
_HEADER = len(MAGIC_NUMBER) + 1 + 4


class CodeCache:
    """Compiled snippets by `Key`, read from ``path`` on first use, written by `save`."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._codes: dict[Key, CodeType] | None = None  # None: not read yet
        self._used: set[Key] = set()
        self._added = False
        self._stamp = MAGIC_NUMBER + bytes([sys.flags.optimize & 0xFF])

    def compile(self, source: str, filename: str, flags: int) -> CodeType:
        """``compile(source, filename, "exec", flags, dont_inherit=True)``, from the cache."""
        codes = self._codes
        if codes is None:
            codes = self._codes = self._load()
        key = (source, filename, flags)
        code = codes.get(key)
        if code is None:
            code = compile(source, filename, "exec", flags, dont_inherit=True)
            codes[key] = code
            self._added = True
        self._used.add(key)
        return code

    def _load(self) -> dict[Key, CodeType]:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return {}
        try:
            st = os.fstat(fd)
            if st.st_uid != os.getuid() or st.st_mode & 0o022:
                return {}  # not ours alone: it would run code someone else wrote
            with open(fd, "rb", closefd=False) as f:
                data = f.read()
        except OSError:
            return {}
        finally:
            os.close(fd)
        stamp, crc, payload = data[: _HEADER - 4], data[_HEADER - 4 : _HEADER], data[_HEADER:]
        if stamp != self._stamp or int.from_bytes(crc, "little") != zlib.crc32(payload):
            return {}
        try:
            codes = marshal.loads(payload)
        except (ValueError, EOFError, TypeError):
            return {}
        return codes if isinstance(codes, dict) else {}

    def save(self) -> None:
        """Write the cache if this process compiled a snippet it did not hold (atomically:
        a temporary file renamed over the old one; a concurrent writer's file may win)."""
        if not self._added or self._codes is None:
            return
        codes = self._codes
        if len(codes) > MAX_ENTRIES:
            codes = {key: code for key, code in codes.items() if key in self._used}
        payload = marshal.dumps(codes)
        data = self._stamp + zlib.crc32(payload).to_bytes(4, "little") + payload
        tmp = f"{self.path}.{os.getpid()}.tmp"
        try:
            os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            try:
                with open(fd, "wb", closefd=False) as f:
                    f.write(data)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            return
        self._added = False


def cache_path() -> str | None:
    """``$XDG_CACHE_HOME/parjobs/generated-<interpreter>.bin`` (``~/.cache`` without an
    absolute ``$XDG_CACHE_HOME``); None if the interpreter has no cache tag."""
    tag: str | None = getattr(sys.implementation, "cache_tag", None)  # None: no caching
    if tag is None:
        return None
    base = os.environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(base):
        base = os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "parjobs", f"generated-{tag}.bin")


def _future_flags(namespace: dict[str, Any]) -> int:
    """The compiler flags of a module's ``from __future__`` imports: what its own calls of
    ``compile`` and ``exec`` pass on to the code they compile."""
    flags = 0
    for value in namespace.values():
        if isinstance(value, __future__._Feature):
            flags |= value.compiler_flag
    return flags


def _patch_dataclasses(module: ModuleType, cache: CodeCache) -> None:
    """`dataclasses` execs each method's source text (``exec(txt, globals, ns)``): a name
    ``exec`` in its globals, ahead of the builtin, compiles the text through the cache."""
    flags = _future_flags(vars(module))

    def cached_exec(source: Any, globals: Any = None, locals: Any = None) -> None:
        if isinstance(source, str) and globals is not None:
            source = cache.compile(source, "<string>", flags)
        exec(source, globals, locals)

    module.exec = cached_exec  # type: ignore[attr-defined]


def _patch_attrs(module: ModuleType, cache: CodeCache) -> None:
    """``attr._make`` compiles each script (``compile(script, filename, "exec")``): a name
    ``compile`` in its globals, ahead of the builtin, looks it up in the cache. Not the
    scripts with a ``__hash__``: theirs hashes a number drawn from the process's string
    hashing (``PYTHONHASHSEED``), a new source each process that would never be found."""
    flags = _future_flags(vars(module))

    def cached_compile(source: Any, filename: Any, mode: str, *args: Any, **kwargs: Any) -> Any:
        if (
            isinstance(source, str)
            and isinstance(filename, str)
            and mode == "exec"
            and not args
            and not kwargs
            and "def __hash__(" not in source
        ):
            return cache.compile(source, filename, flags)
        return compile(source, filename, mode, *args, **kwargs)

    module.compile = cached_compile  # type: ignore[attr-defined]


_PATCHES: dict[str, Callable[[ModuleType, CodeCache], None]] = {
    "dataclasses": _patch_dataclasses,
    "attr._make": _patch_attrs,
}


class _PatchingLoader:
    """Runs a module's own loader, then patches the module (its spec keeps the real loader)."""

    def __init__(self, loader: Any, patch: Callable[[ModuleType], None]) -> None:
        self._loader = loader
        self._patch = patch

    def create_module(self, spec: Any) -> ModuleType | None:
        module: ModuleType | None = self._loader.create_module(spec)
        return module

    def exec_module(self, module: ModuleType) -> None:
        module.__loader__ = module.__spec__.loader = self._loader  # type: ignore[union-attr]
        self._loader.exec_module(module)
        self._patch(module)


class _Finder:
    """An import hook for `_PATCHES`' modules: the next finder finds them, this one wraps
    their loader; every other module it leaves to the other finders."""

    def __init__(self, cache: CodeCache) -> None:
        self._cache = cache

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        patch = _PATCHES.get(name)
        if patch is None:
            return None
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            if finder is self or find is None:
                continue
            spec = find(name, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is not None and hasattr(spec.loader, "exec_module"):
            cache = self._cache
            spec.loader = _PatchingLoader(spec.loader, lambda module: patch(module, cache))
        return spec


def install() -> CodeCache | None:
    """Make `dataclasses` and ``attrs`` compile through the cache in this process (those
    already imported now, the others when they are), and save it at exit; None (nothing
    done) when there is no place for it."""
    path = cache_path()
    if path is None:
        return None
    cache = CodeCache(path)
    for name, patch in _PATCHES.items():
        module = sys.modules.get(name)
        if module is not None:
            patch(module, cache)
    sys.meta_path.insert(0, _Finder(cache))
    atexit.register(cache.save)
    return cache
