"""The tests' own layout: pytest imports test files by their bare name (no packages under
tests/), so two files of one name in different folders stop the whole run at collection."""

from __future__ import annotations

import ast
import collections
from pathlib import Path


def test_test_file_names_are_unique() -> None:
    names = collections.Counter(p.name for p in Path(__file__).parent.rglob("test_*.py"))
    assert [name for name, n in names.items() if n > 1] == []


def test_no_test_imports_a_conftest_by_name() -> None:
    """Helpers are imported by bare name too, so ``from conftest import ADMIN`` found
    whichever conftest.py was imported first: ``pytest tests/server/... tests/cli/...`` stopped
    at collection. Shared helpers live in uniquely named modules (``tests/server/_server.py``,
    ``_trees``, ``_jobs``...), and so do file names other than conftest.py and test files."""
    here = Path(__file__).parent
    importers = [
        str(p.relative_to(here))
        for p in here.rglob("*.py")
        if any(
            line.startswith(("from conftest import", "import conftest"))
            for line in p.read_text().splitlines()
        )
    ]
    assert importers == []
    helpers = collections.Counter(
        p.name for p in here.rglob("*.py") if not p.name.startswith("test_")
    )
    assert [
        n for n, k in helpers.items() if k > 1 and n not in ("conftest.py", "__init__.py")
    ] == []


# -- tests that mirror the modules (#13 item 7) ---------------------------------------------

#: Where the unit tests of each package's modules live: a module ``parjobs/ops/_walk.py`` is
#: tested in ``tests/ops/test_walk.py``, and may spread over ``test_walk_<aspect>.py`` files
#: too (``tests/core/test_executor_runs.py``: the executor's runs of tiny tasks). The cluster
#: lane's modules are tested where a cluster is set up, ``tests/cluster/``. ``parjobs/cli`` and
#: ``parjobs/server`` are tested end to end (a real CLI process, a real HTTP server) in
#: ``tests/cli`` and ``tests/server``, by behaviour, and are not held to this; nor are
#: ``tests/reliability`` (the crash and fault matrix of whole jobs) and the whole-package
#: files at the top of ``tests/`` (the layers, the public surfaces, the docs, the benchmarks).
AREAS = {"parjobs": ("core", "cluster"), "parjobs.ops": ("ops",)}

#: The modules without a test file of their own, each with the reason. A module that gains a
#: file must leave this list (checked), so the list only shrinks.
EXEMPT = {
    "parjobs.__init__": "re-exports only; its __all__ is pinned by tests/test_exports.py",
    "parjobs.__main__": "hands `python -m parjobs` to the CLI (tests/ops/test_copy.py runs it)",
    "parjobs.blocking": "re-exports BlockingManager and run_trio_guest (test_facade, test_guest)",
    "parjobs.testing": "the public test helpers; every test uses them, test_exports pins them",
    "parjobs._stores": "chooses a store by URL; every store_path test goes through it",
    "parjobs._output": "a record and a sink name; streamed lines are tested in test_process",
    "parjobs._functask": "FunctionTask's few lines; it runs in test_executor*, test_dispatch",
    "parjobs._jsonout": "the --json rule for names (shared by the CLI and the server); tested "
    "through both, tests/cli (--json) and tests/server/test_items_api.py",
    "parjobs._util": "small shared helpers, tested through their callers (manager, facade, CLI)",
    "parjobs._sqlite_watch": "SQLite wake-ups, tested through claims and events of two managers",
    "parjobs._statistics": "frozen records only; their values are checked in test_dispatch",
    "parjobs._records": "frozen records only, exchanged by every store and manager test",
    "parjobs._exceptions": "the error tree; tests/test_exports.py checks its classes and roots",
    "parjobs._status": "the transition table; tests/test_docs.py checks it against the docs",
    "parjobs._housekeeping": "heartbeat, leases, pause requests: through test_manager's runs; "
    "resuming the jobs a failing store paused: the store outages of test_rel_faults and "
    "test_rel_store_heal",
    "parjobs._manager_core": "the state a manager's parts share; tested through test_manager",
    "parjobs._pgschema": "PostgreSQL's schema: every both_stores test runs on it, and its "
    "upgrades of old stores are in test_itemlog",
    "parjobs._pgstore": "the PostgreSQL store: every both_stores test runs on it (tests/conftest)",
    "parjobs._task": "Task, Outcome and TaskContext: what every dispatch, pool, stage, "
    "executor and job test runs; no test of its own",
    "parjobs._cluster_remote": "the Dask worker's side; tests/cluster/test_cluster_parts.py",
    "parjobs.ops.__init__": "the lazy exports; tests/test_ops_exports.py pins and loads them",
    "parjobs.ops._finish": "the last task of a copy or move; through test_copy and test_move",
    "parjobs.ops._sequential": "the reference duplicate finder; tested in test_hashing (with "
    "the helpers it shares) and the oracle of test_duplicates",
    "parjobs.ops._names": "temporary-name tokens; through test_trash, test_undo, test_smallfiles",
    "parjobs.ops._entries": "the hash task over walked entries; through test_hash, test_duplicates",
    "parjobs.ops._desttree": "the destination fd cache of copy and move; through their tests",
    "parjobs.ops._partials": "temporaries' names and removal; through test_copyfile, test_trash",
    "parjobs.ops._transfer": "what copy and move share, tested through both jobs (test_copy, "
    "test_move, test_smallfiles); no unit test of its own",
}


def _modules() -> dict[str, str]:
    """Each module of the mirrored packages, by dotted name, with the stem its tests take."""
    root = Path(__file__).parents[1] / "parjobs"
    found = {}
    for package in AREAS:
        folder = root.joinpath(*package.split(".")[1:])
        for path in sorted(folder.glob("*.py")):
            found[f"{package}.{path.stem}"] = path.stem.lstrip("_")
    return found


def _test_stems(package: str) -> list[str]:
    here = Path(__file__).parent
    return [p.stem[5:] for area in AREAS[package] for p in (here / area).glob("test_*.py")]


def _covers(stem: str, module_stem: str) -> bool:
    return stem == module_stem or stem.startswith(module_stem + "_")


def test_every_module_has_its_test_file_or_a_reason() -> None:
    modules = _modules()
    untested = {
        name
        for name, stem in modules.items()
        if not any(_covers(t, stem) for t in _test_stems(name.rpartition(".")[0]))
    }
    assert sorted(untested - EXEMPT.keys()) == [], "add test_<module>.py or an EXEMPT reason"
    assert sorted(EXEMPT.keys() - untested) == [], "has a test file now (or is gone): unlist it"


def test_every_test_file_is_named_after_a_module() -> None:
    """``tests/core`` and ``tests/ops`` hold unit tests only: each file is named for the module
    it tests, so nobody has to guess where a module's tests are (``test_claim.py`` was the job
    store's, ``test_runs.py`` the executor's)."""
    modules = _modules()
    for package, areas in AREAS.items():
        stems = [s for n, s in modules.items() if n.rpartition(".")[0] == package]
        here = Path(__file__).parent
        for area in areas:
            orphans = [
                p.name
                for p in (here / area).glob("test_*.py")
                if not any(_covers(p.stem[5:], s) for s in stems)
            ]
            assert orphans == [], f"tests/{area}: not named after a module of {package}"


def test_the_tests_run_first_are_still_there() -> None:
    """conftest's ``FIRST`` names the longest tests by path: a file renamed or split left a
    name that matched nothing, and that test ran last again, alone on one worker."""
    here = Path(__file__).parent
    tree = ast.parse((here / "conftest.py").read_text())
    (first,) = [
        ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == "FIRST"
    ]
    missing = []
    for nodeid in first:
        path, _, name = nodeid.partition("::")
        file = here.parent / path
        if not file.exists() or f"def {name}(" not in file.read_text():
            missing.append(nodeid)
    assert missing == []
