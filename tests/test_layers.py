"""The layers of `parjobs` as they really are: every import of every module, counted.

Walks the source of `parjobs/` with `ast` and collects each module's imports of other
`parjobs` modules, wherever they stand: at the top, under ``TYPE_CHECKING``, inside a function,
or as a string given to ``importlib.import_module``. Then it checks the rules that
docs/architecture.md draws:

* no cycle, type-only and lazy imports included;
* no upward import: every module has a floor (`FLOORS`), and imports only modules on lower
  floors (a new module must be given its floor here, where a reviewer sees it);
* the core never names the operations, the server or the CLI; the operations never name
  the server or the CLI;
* the public operation modules never import each other (shared pieces live in private
  helpers).
"""

from __future__ import annotations

import ast
import functools
import itertools
from pathlib import Path

import pytest

import parjobs

ROOT = Path(parjobs.__file__).parent

#: Each module's floor: a module imports only modules on lower floors. Packages' ``__init__``
#: modules sit above what they re-export. Read top-down, this is the drawing of
#: docs/architecture.md.
FLOORS: dict[str, int] = {
    # core: records and rules with no I/O
    "parjobs._exceptions": 0,
    "parjobs._util": 1,
    "parjobs._environ": 1,
    "parjobs._histogram": 1,
    "parjobs._statistics": 1,
    "parjobs._status": 1,
    "parjobs._indexset": 1,
    "parjobs._progress": 1,
    "parjobs._items": 1,
    "parjobs._records": 2,
    "parjobs._itemlog": 2,
    "parjobs._task": 2,
    "parjobs._functask": 3,
    "parjobs._output": 2,
    "parjobs._guest": 1,
    "parjobs._jsonout": 1,
    "parjobs._codecache": 1,
    # core: the pool below the job context
    "parjobs._stage": 3,
    "parjobs._throttle": 3,
    "parjobs._workqueue": 4,
    "parjobs._process": 3,
    "parjobs._executor": 5,
    "parjobs._pool": 6,
    "parjobs._cluster_remote": 6,
    "parjobs._cluster": 7,
    "parjobs._dispatch": 7,
    # core: the store
    "parjobs._jobstore": 3,
    "parjobs._leases": 3,
    "parjobs._store_schema": 3,
    "parjobs._sqlite_watch": 3,
    "parjobs._store": 4,
    "parjobs._pgschema": 3,
    "parjobs._pgstore": 5,
    "parjobs._stores": 6,
    # core: jobs, their context, the manager
    "parjobs._config": 8,
    "parjobs._events": 8,
    "parjobs._context": 9,
    "parjobs._job": 10,
    "parjobs._manager_core": 11,
    "parjobs._runner": 12,
    "parjobs._scheduler": 13,
    "parjobs._housekeeping": 14,
    "parjobs._manager": 15,
    "parjobs._facade": 16,
    # the public namespaces
    "parjobs.blocking": 17,
    "parjobs.process": 17,
    "parjobs.testing": 17,
    "parjobs": 18,
    # the operations: primitives, shared helpers, jobs, the package
    "parjobs.ops._errors": 20,
    "parjobs.ops._fs": 21,
    "parjobs.ops._names": 21,
    "parjobs.ops._kernel": 20,
    "parjobs.ops._partials": 22,
    "parjobs.ops._metadata": 22,
    "parjobs.ops._hashing": 22,
    "parjobs.ops._decodebudget": 22,
    "parjobs.ops._probe": 22,
    "parjobs.ops._sequential": 23,
    "parjobs.ops._dirmeta": 23,
    "parjobs.ops._prescan": 23,
    "parjobs.ops._trash": 23,
    "parjobs.ops._imaging": 23,
    "parjobs.ops._smallfiles": 23,
    "parjobs.ops._prehash": 24,
    "parjobs.ops._copyfile": 24,
    "parjobs.ops._paths": 24,
    "parjobs.ops._trashcan": 24,
    "parjobs.ops._walk": 24,
    "parjobs.ops._desttree": 25,
    "parjobs.ops._srctree": 26,
    "parjobs.ops._entries": 25,
    "parjobs.ops._transfer": 27,
    "parjobs.ops._finish": 28,
    "parjobs.ops._copy": 30,
    "parjobs.ops._move": 30,
    "parjobs.ops._hash": 30,
    "parjobs.ops._delete": 30,
    "parjobs.ops._duplicates": 30,
    "parjobs.ops._thumbnail": 30,
    "parjobs.ops._undo": 30,
    "parjobs.ops": 31,
}
#: Floors of whole packages (their modules' order within is checked by cycles only).
PACKAGE_FLOORS = {"parjobs.server": 40, "parjobs.cli": 50, "parjobs.__main__": 60}
OPS_JOBS = {m for m, f in FLOORS.items() if f == 30}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def resolve(current: str, is_package: bool, level: int, name: str | None) -> str:
    """The absolute module a ``from .x import y`` names."""
    if level == 0:
        return name or ""
    base = current.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join([*base, name] if name else base)


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Every parjobs module ``name`` imports, however (top, TYPE_CHECKING, lazy, importlib)."""
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"
    found: set[str] = set()

    def add(target: str) -> None:
        # ``from pkg import mod`` imports the module pkg.mod; otherwise the longest known prefix
        while target and target not in known:
            target = target.rpartition(".")[0]
        if target and target != name:
            found.add(target)

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = resolve(name, is_package, node.level, node.module)
            for alias in node.names:
                full = f"{base}.{alias.name}"
                add(full if full in known else base)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            add(node.args[0].value)
    return {m for m in found if m.startswith("parjobs")}


def extensions() -> set[str]:
    """Compiled modules (the optional C extension): imported, but importing nothing."""
    return {module_name(p.with_suffix(".py")) for p in ROOT.rglob("*.pyi")}


@functools.cache
def graph() -> dict[str, frozenset[str]]:
    """Each module's imports of other parjobs modules. Parsed once per test process (about
    0.3 s of CPU a walk here) and shared by the tests, which only read it."""
    mods = modules()
    known = set(mods) | extensions()
    compiled = extensions()
    return {
        name: frozenset(imports_of(name, path, known) - compiled) for name, path in mods.items()
    }


def floor(name: str) -> int:
    if name in FLOORS:
        return FLOORS[name]
    for package, value in PACKAGE_FLOORS.items():
        if name == package or name.startswith(package + "."):
            return value
    raise KeyError(name)


def test_every_module_has_a_floor() -> None:
    missing = []
    for name in graph():
        try:
            floor(name)
        except KeyError:
            missing.append(name)
    assert missing == [], "give these modules a floor in FLOORS (docs/architecture.md too)"
    stale = sorted(set(FLOORS) - set(graph()))
    assert stale == [], "modules named in FLOORS that no longer exist"


def test_no_upward_import() -> None:
    upward = [
        f"{source} (floor {floor(source)}) imports {target} (floor {floor(target)})"
        for source, targets in graph().items()
        for target in sorted(targets)
        if floor(target) > floor(source)
        or (floor(target) == floor(source) and source in FLOORS and target in FLOORS)
    ]
    assert upward == []


def test_no_cycle() -> None:
    edges = graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for target in sorted(edges.get(node, ())):
            if state.get(target) == 1:
                cycles.append([*stack[stack.index(target) :], target])
            elif target not in state:
                visit(target)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
    assert cycles == []


@pytest.mark.parametrize(
    ("layer", "forbidden"),
    [
        ("core", ("parjobs.ops", "parjobs.server", "parjobs.cli")),
        ("ops", ("parjobs.server", "parjobs.cli")),
    ],
)
def test_lower_layers_never_name_higher_ones(layer: str, forbidden: tuple[str, ...]) -> None:
    def in_layer(name: str) -> bool:
        if layer == "ops":
            return name.startswith("parjobs.ops")
        core = name.startswith("parjobs._") and "." not in name[8:] and name != "parjobs.__main__"
        return name == "parjobs" or core

    wrong = [
        (source, target)
        for source, targets in graph().items()
        if in_layer(source)
        for target in targets
        if target.startswith(forbidden)
    ]
    assert wrong == []


def test_operation_modules_never_import_each_other() -> None:
    edges = graph()
    pairs = [(a, b) for a, b in itertools.permutations(sorted(OPS_JOBS), 2) if b in edges[a]]
    assert pairs == []


def test_the_walker_sees_hidden_imports(tmp_path: Path) -> None:
    """The check counts what an eye would miss: TYPE_CHECKING, lazy and importlib imports."""
    src = tmp_path / "m.py"
    src.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from . import _context\n"
        "def f():\n    from ._manager import JobManager\n"
        "    import importlib\n    importlib.import_module('parjobs.ops')\n"
    )
    known = {"parjobs._context", "parjobs._manager", "parjobs.ops", "parjobs._dispatch"}
    found = imports_of("parjobs._dispatch", src, known)
    assert found == {"parjobs._context", "parjobs._manager", "parjobs.ops"}
