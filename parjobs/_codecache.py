"""A cache, across processes, of the code the imports generate and compile as text.

`dataclasses` and ``attrs`` write the source of each class's methods (``__init__``,
``__repr__``, ``__eq__``...) and compile it when the class is made, at import; `typing`
compiles each string annotation it resolves (a TypedDict's, under ``from __future__ import
annotations``) and `collections` each named tuple's ``__new__``. A ``parjobs copy`` of one
file compiles 140 snippets for parjobs' dataclasses, 98 scripts for ``attrs`` classes
(trio's and attrs' own; 37 with a ``__hash__``), 81 annotations and 20 named tuples: with
this cache warm the command takes 555 M instructions, without it 749 M (``import trio``
alone 529 M; measured 2026-12-04). A code object depends only on its source, its file name,
the mode, the compiler's flags and the interpreter, so, as a ``.pyc`` does for a module, a
file keyed by those serves the next process. Reading it costs ~1.5 M instructions (270
snippets); a snippet is unmarshalled only when the command uses it.

`install` (the program only: `parjobs.cli.main` without arguments) makes the four modules
compile through the cache, from when they are imported (before their own code runs: their
own classes too); the cache is read on the first look-up and written at exit when a snippet
was compiled (`atexit`). The file lives in ``$XDG_CACHE_HOME/parjobs`` (by default
``~/.cache/parjobs``), one per interpreter version, 0600 in a 0700 directory; a file that is
not the user's, is writable by others, or does not read back whole (checksum) is ignored
and replaced. Any error leaves the libraries compiling as they do without the cache.

It is written even with ``PYTHONDONTWRITEBYTECODE`` (``python -B``) set: that asks the
import system not to write ``.pyc`` files next to the modules' sources (often set in
containers and development trees); this file is the program's own, in the user's cache
directory, and without it each command would compile every snippet again (~190 M
instructions, seven times what parjobs adds to ``import trio`` with it).
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

#: A snippet: its source, file name, mode (``"exec"`` or ``"eval"``) and compiler flags.
Key = tuple[str, str, str, int]

#: Kept at most; above, a save keeps only what this process used (sources of old versions go).
MAX_ENTRIES = 4096

#: The layout of the data (the keys' shape); a file of another layout is not read.
_FORMAT = 2

#: Before the data: the interpreter's bytecode magic, the optimization level, `_FORMAT`, a CRC-32.
_HEADER = len(MAGIC_NUMBER) + 2 + 4


class CodeCache:
    """Compiled snippets by `Key`, read from ``path`` on first use, written by `save`."""

    def __init__(self, path: str) -> None:
        self.path = path
        # Each snippet's code, or until it is looked up its marshalled bytes: a command
        # unmarshals only the snippets it uses. None: the file is not read yet.
        self._codes: dict[Key, CodeType | bytes] | None = None
        self._used: set[Key] = set()
        self._added = False
        self._stamp = MAGIC_NUMBER + bytes([sys.flags.optimize & 0xFF, _FORMAT])

    def compile(self, source: str, filename: str, flags: int, mode: str = "exec") -> CodeType:
        """``compile(source, filename, mode, flags, dont_inherit=True)``, from the cache."""
        codes = self._codes
        if codes is None:
            codes = self._codes = self._load()
        key = (source, filename, mode, flags)
        code = codes.get(key)
        if type(code) is bytes:
            try:
                code = marshal.loads(code)
            except (ValueError, EOFError, TypeError):
                code = None
        if not isinstance(code, CodeType):
            code = compile(source, filename, mode, flags, dont_inherit=True)
            self._added = True
        codes[key] = code
        self._used.add(key)
        return code

    def _load(self) -> dict[Key, CodeType | bytes]:
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
        payload = marshal.dumps(
            {
                key: code if type(code) is bytes else marshal.dumps(code)
                for key, code in codes.items()
            }
        )
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
    ``compile``, ``exec`` and ``eval`` pass on to the code they compile."""
    flags = 0
    for value in namespace.values():
        if isinstance(value, __future__._Feature):
            flags |= value.compiler_flag
    return flags


class _Flags:
    """A module's `_future_flags`, found on the first call: a module is patched before it
    runs (so that the classes it makes itself compile through the cache too), and its
    ``from __future__`` imports, which must come first, are in place by its first call."""

    def __init__(self, module: ModuleType) -> None:
        self._module = module
        self._flags: int | None = None

    def __call__(self) -> int:
        if self._flags is None:
            self._flags = _future_flags(vars(self._module))
        return self._flags


def _patch_dataclasses(module: ModuleType, cache: CodeCache) -> None:
    """`dataclasses` execs each method's source text (``exec(txt, globals, ns)``): a name
    ``exec`` in its globals, ahead of the builtin, compiles the text through the cache."""
    flags = _Flags(module)

    def cached_exec(source: Any, globals: Any = None, locals: Any = None) -> None:
        if isinstance(source, str) and globals is not None:
            source = cache.compile(source, "<string>", flags())
        exec(source, globals, locals)

    module.exec = cached_exec  # type: ignore[attr-defined]


def _patch_eval(module: ModuleType, cache: CodeCache) -> None:
    """`collections` evals the source of each named tuple's ``__new__`` (``eval(code,
    namespace)``): a name ``eval`` in its globals compiles the text through the cache. (Not a
    text with leading blanks, which ``eval`` strips and ``compile`` refuses, nor one without
    globals, which ``eval`` takes from its caller's frame.)"""
    flags = _Flags(module)

    def cached_eval(source: Any, globals: Any = None, locals: Any = None) -> Any:
        if isinstance(source, str) and globals is not None and not source.startswith((" ", "\t")):
            source = cache.compile(source, "<string>", flags(), "eval")
        return eval(source, globals, locals)

    module.eval = cached_eval  # type: ignore[attr-defined]


def _patch_compile(module: ModuleType, cache: CodeCache) -> None:
    """``attr._make`` compiles each class's script (``compile(script, filename, "exec")``)
    and `typing` each string annotation it resolves (``compile(text, "<string>", "eval")``):
    a name ``compile`` in their globals, ahead of the builtin, looks it up in the cache.
    ``attrs``' scripts with a ``__hash__`` hash a number drawn from the process's string
    hashing (``PYTHONHASHSEED``), a new source each process: they are cached with a mark in
    its place (`_unsalt`), and the number is put back into the code (`_resalt`)."""
    flags = _Flags(module)

    def cached_compile(source: Any, filename: Any, mode: str, *args: Any, **kwargs: Any) -> Any:
        if (
            isinstance(source, str)
            and isinstance(filename, str)
            and mode in ("exec", "eval")
            and not args
            and not kwargs
        ):
            if "def __hash__(" not in source:
                return cache.compile(source, filename, flags(), mode)
            unsalted = _unsalt(source)
            if unsalted is not None:
                marked = cache.compile(unsalted[0], filename, flags(), mode)
                code, found = _resalt(marked, unsalted[1])
                if found == 1:
                    return code
        return compile(source, filename, mode, *args, **kwargs)

    module.compile = cached_compile  # type: ignore[attr-defined]


#: ``attrs``' hash scripts: the number follows this, alone on its line (then ``,``).
_SALT_BEFORE = "hash((\n"

#: Stands for that number in the cached source: above any hash value (a C ``Py_ssize_t``),
#: so never the number itself.
_SALT_MARK = 2**64 + 1


def _unsalt(source: str) -> tuple[str, int] | None:
    """``source`` with its one hashed number replaced by `_SALT_MARK`, and the number;
    None if it is not of that form."""
    at = source.find(_SALT_BEFORE)
    if at < 0 or source.find(_SALT_BEFORE, at + 1) >= 0 or str(_SALT_MARK) in source:
        return None
    end = source.find(",\n", at)
    if end < 0:
        return None
    number = source[at + len(_SALT_BEFORE) : end].lstrip(" ")
    try:
        salt = int(number)
    except ValueError:
        return None
    if str(salt) != number:  # (int() also takes "+1", "1_0", blanks)
        return None
    start = end - len(number)
    return source[:start] + str(_SALT_MARK) + source[end:], salt


def _resalt(code: CodeType, salt: int) -> tuple[CodeType, int]:
    """``code`` with `_SALT_MARK` among its (and its functions') constants replaced by
    ``salt``, and how many were replaced."""
    consts, found = _replace_mark(code.co_consts, salt)
    return (code.replace(co_consts=consts) if found else code), found


def _replace_mark(values: tuple[Any, ...], salt: int) -> tuple[tuple[Any, ...], int]:
    """``values`` with `_SALT_MARK` replaced by ``salt``, in nested code and tuples too (a
    class without fields hashes the constant tuple ``(number,)``)."""
    found = 0
    out = []
    for value in values:
        if type(value) is int and value == _SALT_MARK:
            value, count = salt, 1
        elif isinstance(value, CodeType):
            value, count = _resalt(value, salt)
        elif type(value) is tuple:
            value, count = _replace_mark(value, salt)
        else:
            count = 0
        found += count
        out.append(value)
    return (tuple(out) if found else values), found


_PATCHES: dict[str, Callable[[ModuleType, CodeCache], None]] = {
    "dataclasses": _patch_dataclasses,
    "attr._make": _patch_compile,
    "typing": _patch_compile,
    "collections": _patch_eval,
}


class _PatchingLoader:
    """Patches a module, then runs its own loader (its spec keeps the real loader)."""

    def __init__(self, loader: Any, patch: Callable[[ModuleType], None]) -> None:
        self._loader = loader
        self._patch = patch

    def create_module(self, spec: Any) -> ModuleType | None:
        module: ModuleType | None = self._loader.create_module(spec)
        return module

    def exec_module(self, module: ModuleType) -> None:
        module.__loader__ = module.__spec__.loader = self._loader  # type: ignore[union-attr]
        self._patch(module)  # first: the module's own classes compile through the cache too
        self._loader.exec_module(module)


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
