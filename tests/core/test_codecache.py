"""The cache of generated methods' code (`parjobs._codecache`): a command's `dataclasses` and
``attrs`` classes are compiled once, and the next command finds every snippet it needs."""

from __future__ import annotations

import importlib.util
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from parjobs._codecache import _SALT_MARK, CodeCache, _patch_dataclasses, _resalt, _unsalt

SOURCE = "def __create_fn__(x):\n def f(self):\n  return x\n return f"


def _run(args: list[str], tmp_path: Path, seed: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "XDG_STATE_HOME": str(tmp_path / "state"),
        "PYTHONHASHSEED": seed,  # a source that changes with the string hashing never hits
    }
    return subprocess.run(
        [sys.executable, "-m", "parjobs", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


def test_the_next_command_finds_every_snippet_and_writes_nothing(tmp_path: Path) -> None:
    _run(["jobs"], tmp_path, "1")
    path = tmp_path / "cache" / "parjobs" / f"generated-{sys.implementation.cache_tag}.bin"
    first = path.stat()
    assert stat.S_IMODE(first.st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert first.st_size > 10_000  # the imports' classes: parjobs' and trio's
    _run(["jobs"], tmp_path, "2")
    again = path.stat()
    assert (again.st_ino, again.st_mtime_ns) == (first.st_ino, first.st_mtime_ns)


def test_a_damaged_cache_is_replaced_and_the_command_runs(tmp_path: Path) -> None:
    path = tmp_path / "cache" / "parjobs" / f"generated-{sys.implementation.cache_tag}.bin"
    path.parent.mkdir(parents=True, mode=0o700)
    path.write_bytes(b"\0" * 64)
    path.chmod(0o600)
    _run(["jobs"], tmp_path, "1")
    cache = CodeCache(str(path))
    cache.compile(SOURCE, "<string>", 0)
    assert cache._codes is not None and len(cache._codes) > 10  # read back whole


def test_cached_code_is_what_compile_makes(tmp_path: Path) -> None:
    path = str(tmp_path / "d" / "cache.bin")
    cache = CodeCache(path)
    code = cache.compile(SOURCE, "<string>", 0)
    assert code == compile(SOURCE, "<string>", "exec", dont_inherit=True)
    cache.save()
    mtime = os.stat(path).st_mtime_ns
    later = CodeCache(path)
    assert later.compile(SOURCE, "<string>", 0) == code
    later.save()  # nothing new: nothing written
    assert os.stat(path).st_mtime_ns == mtime
    # Another file name or other flags are other snippets.
    assert later.compile(SOURCE, "<other>", 0).co_filename == "<other>"


def test_a_cache_others_may_write_is_not_read(tmp_path: Path) -> None:
    path = tmp_path / "cache.bin"
    cache = CodeCache(str(path))
    cache.compile(SOURCE, "<string>", 0)
    cache.save()
    path.chmod(0o666)
    later = CodeCache(str(path))
    later.compile(SOURCE, "<string>", 0)
    assert later._added  # compiled anew: the file was not trusted


def test_dataclasses_patched_make_the_same_classes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A private copy of `dataclasses` (the test process's own is left alone), patched."""
    spec = importlib.util.spec_from_file_location(
        "dataclasses_copy", sys.modules["dataclasses"].__file__
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "dataclasses_copy", module)
    spec.loader.exec_module(module)
    path = str(tmp_path / "cache.bin")
    _patch_dataclasses(module, CodeCache(path))

    def make() -> type:
        @module.dataclass(frozen=True, order=True)
        class Point:
            x: int
            y: int = 2

        return Point

    for _ in range(2):
        cache = CodeCache(path)
        _patch_dataclasses(module, cache)
        point = make()
        assert point(1) == point(1, 2) and point(1) < point(2)
        assert repr(point(1)).endswith("Point(x=1, y=2)")
        assert hash(point(1)) == hash(point(1, 2))
        cache.save()
    assert cache._codes is not None and not cache._added  # the second round found them all


#: A process that makes what the command's imports make, through the cache: ``attrs``
#: classes (with a ``__hash__``: without fields, with fields, caching it), ``attrs``' own
#: classes, string annotations (a TypedDict's), a named tuple, a dataclass. It prints how
#: many snippets it compiled (``compile`` of a text) and the hashes of the ``attrs`` objects.
GENERATE = """
import builtins, sys
compiled = []
real = builtins.compile
def counting(source, filename, mode, *args, **kwargs):
    if isinstance(source, str):
        compiled.append(filename)
    return real(source, filename, mode, *args, **kwargs)
builtins.compile = counting
from parjobs._codecache import install
install()
import collections, dataclasses, typing
import attr

@attr.s(frozen=True)
class Empty:
    pass

@attr.s(frozen=True)
class Pair:
    a = attr.ib()
    b = attr.ib()

@attr.s(frozen=True, cache_hash=True)
class Cached:
    a = attr.ib()

class Row(typing.TypedDict):
    name: "str"
    size: "int | None"

Point = collections.namedtuple("Point", "x y")

@dataclasses.dataclass(frozen=True)
class Item:
    x: int

def salt(cls):
    return hash(f"<attrs generated hash {cls.__module__}.{cls.__qualname__}>")

assert hash(Empty()) == hash((salt(Empty),))
assert hash(Pair(1, "b")) == hash((salt(Pair), 1, "b"))
assert hash(Cached(2)) == hash((salt(Cached), 2)) == hash(Cached(2))
assert Point(1, 2).x == 1 and typing.get_type_hints(Row) == {"name": str, "size": int | None}
assert hash(Item(3)) == hash((3,))
print(len(compiled), sorted(set(compiled))[:5])
"""


def test_hash_scripts_annotations_and_named_tuples_are_cached_across_hash_seeds(
    tmp_path: Path,
) -> None:
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    outputs = []
    for seed in ("1", "2"):  # attrs' __hash__ scripts hash a number that changes with it
        done = subprocess.run(
            [sys.executable, "-c", GENERATE],
            env={**env, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout.split(" ", 1))
    assert int(outputs[0][0]) > 0
    assert outputs[1][0] == "0", outputs[1][1]  # the second process compiled nothing


def test_a_script_not_of_the_hashed_form_is_left_to_compile() -> None:
    good = "def __hash__(self):\n    return hash((\n        -42,\n        self.a,\n    ))"
    unsalted = _unsalt(good)
    assert unsalted is not None and unsalted[1] == -42 and "-42" not in unsalted[0]
    code, found = _resalt(compile(unsalted[0], "<s>", "exec"), unsalted[1])
    assert found == 1
    # The same code but for the constant's end column (the line holds only the number).
    made, want = code.co_consts[0], compile(good, "<s>", "exec").co_consts[0]
    assert (made.co_code, made.co_consts, made.co_names) == (
        want.co_code,
        want.co_consts,
        want.co_names,
    )
    assert list(made.co_lines()) == list(want.co_lines())
    for bad in (
        good.replace("-42", "1_0"),
        good.replace("-42", "x"),
        good.replace("-42,", "-42"),
        good + "\nhash((\n 1,\n))",
        good.replace("self.a", str(_SALT_MARK)),
    ):
        assert _unsalt(bad) is None


def test_the_cache_is_written_even_with_pythondontwritebytecode(tmp_path: Path) -> None:
    """A decision (docs/cli.md): -B is about .pyc files next to the sources, not this one."""
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    subprocess.run(
        [sys.executable, "-m", "parjobs", "--store", str(tmp_path / "s.sqlite"), "jobs"],
        env=env,
        capture_output=True,
        timeout=120,
        check=True,
    )
    assert (
        tmp_path / "cache" / "parjobs" / f"generated-{sys.implementation.cache_tag}.bin"
    ).exists()
