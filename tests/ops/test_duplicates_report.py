"""The dupes report in C (`_fastscan.report_groups`, `group_lines`) against the Python it
replaced (b92361e^), kept as the fallback where `_fastscan` is not built (or a result has an
unusual shape) and the reference here: random groups of awkward names and sizes,
the same dicts, JSON text and printed lines; then the CLI on a real tree of such names."""

from __future__ import annotations

import base64
import contextlib
import gc
import json
import os
import re
import subprocess
import sys
import tracemalloc
from operator import itemgetter
from typing import Any

import pytest
from _forkcli import run
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parjobs.cli import _format as cli_format
from parjobs.cli import _results as cli_results
from parjobs.ops import _duplicates as dup_mod
from parjobs.ops import _hashing

if _hashing.fastscan is None:
    pytest.skip("the C extension _fastscan is not built", allow_module_level=True)
fastscan = _hashing.fastscan

# -- the reference: the Python each C call stands in for (b92361e^'s, kept as the fallback) --


def _old_report(files: list[Any], found: list[Any]) -> tuple[list[dict[str, Any]], str | None]:
    found.sort(key=itemgetter(1))
    found.sort(key=itemgetter(0), reverse=True)
    return dup_mod._report_in_python(files, found)


def _old_lines(result: dict[str, Any], size_of: Any = cli_format.size) -> list[str]:
    return cli_results._group_lines_in_python(result.get("groups") or [], size_of)


# -- random inputs ---------------------------------------------------------------------------

#: Bytes a name is made of, weighted to the awkward ones (no NUL: no path holds one, and the
#: reference uses it as its separator): control characters, quotes, backslashes, DEL,
#: undecodable bytes, and the UTF-8 of U+2028/2029, an é and an astral character.
_PIECES = st.one_of(
    st.binary(min_size=1, max_size=4).filter(lambda b: b"\0" not in b),
    st.sampled_from(
        [
            b"/",
            b"a",
            b"Z",
            b" ",
            b'"',
            b"\\",
            b"\n",
            b"\t",
            b"\x01",
            b"\x1f",
            b"\x7f",
            b"\x80",
            b"\xff",
            b"\xc3",
            b"\xc3\xa9",
            "\u2028".encode(),
            "\u2029".encode(),
            "\U0001f600".encode(),
            b"\xed\xa0\x80",
            b"~",
            b",",
            b"[]{}:",
        ]
    ),
)
_NAMES = st.one_of(
    st.lists(_PIECES, max_size=12).map(b"".join),
    st.integers(1000, 5000).map(lambda n: b"/long/" + b"x" * n),
    st.just(b""),
)
_SIZES = st.one_of(
    st.sampled_from([0, 1, 999, 1000, 1023, 1024, 999_500, 10**15, 2**53, 2**63 - 1]),
    st.integers(0, 2**64),
)
_DIGESTS = st.one_of(
    st.sampled_from(["0123abcd" * 4, "ffff" * 8, "00" * 16, ""]),
    st.text(st.characters(blacklist_characters="\0"), max_size=8),
)


@st.composite
def _report_input(draw: st.DrawFn) -> tuple[list[tuple[int, bytes, int]], list[Any]]:
    names = draw(st.lists(_NAMES, min_size=1, max_size=20))
    if draw(st.booleans()):  # hard links: two numbers of one name
        names += names[: draw(st.integers(1, len(names)))]
    files = [(i, name, 7) for i, name in enumerate(names)]
    members = st.lists(st.integers(0, len(files) - 1), min_size=2, max_size=8)
    found = draw(st.lists(st.tuples(_SIZES, _DIGESTS, members), max_size=12))
    return files, [(s, d, list(m)) for s, d, m in found]


_FEW = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_FEW
@given(_report_input())
def test_the_reports_groups_and_text_are_the_old_pythons(given_input):
    files, found = given_input
    groups, text = _old_report(files, [(s, d, m[:]) for s, d, m in found])
    report = dup_mod._report(files, [(s, d, m[:]) for s, d, m in found])
    assert report.groups == groups
    assert [list(g) for g in report.groups] == [["size", "digest", "paths"]] * len(groups)
    assert [type(p) for g in report.groups for p in g["paths"]] == [
        str for g in groups for _ in g["paths"]
    ]
    assert report.text == text
    if text is not None:
        assert text == json.dumps(groups)[1:-1]
    # And the stored result is json.dumps' text whichever way it was made.
    result = {"groups": report.groups, "failed": 0}
    job = dup_mod.DuplicatesJob.__new__(dup_mod.DuplicatesJob)
    job._last_report = report
    made = job.result_json(result)
    assert made is None or made == json.dumps(result)


@_FEW
@given(
    st.lists(
        st.tuples(
            st.one_of(_SIZES, st.integers(-(2**70), 2**70)),
            st.lists(_NAMES.map(os.fsdecode), max_size=6),
        ),
        max_size=12,
    )
)
def test_the_printed_lines_are_the_old_pythons(groups_in):
    groups = [{"size": s, "digest": "d", "paths": p} for s, p in groups_in]
    expected = _old_lines({"groups": groups})
    assert fastscan.group_lines(groups, cli_format.size) == expected
    # Printed, a path that would not be one line of its own is escaped.
    escaped = [{**g, "paths": [cli_results.escaped_path(p) for p in g["paths"]]} for g in groups]
    assert cli_results._duplicate_groups({"groups": groups}) == _old_lines({"groups": escaped})


def _mutating_size(groups: list[Any], paths: list[str]) -> Any:
    """A size function (called for sizes from 2**53 on) that, on its first call, empties
    ``paths`` and drops every group after the first, as any Python code may."""

    def size_of(n: int) -> str:
        if groups[1:]:
            paths.clear()
            del groups[1:]
        return cli_format.size(n)

    return size_of


def test_a_size_function_that_changes_the_groups_changes_the_lines_as_in_python():
    """``size`` is Python code: what it changes is seen as the Python loop sees it (the
    paths as they are after it, no group it removed), not read through stale pointers
    (b92361e: a segfault, the emptied list's items read at NULL)."""

    def groups_and_size() -> tuple[list[Any], Any]:
        paths = ["/t/a", "/t/b"]
        groups: list[Any] = [{"size": 2**60, "digest": "d", "paths": paths}]
        groups += [{"size": 5, "digest": "e", "paths": ["/t/c", "/t/d"]}]
        return groups, _mutating_size(groups, paths)

    groups, size_of = groups_and_size()
    expected = _old_lines({"groups": groups}, size_of)
    assert expected == [f"# 0 copies of {cli_format.size(2**60)}"]
    groups, size_of = groups_and_size()
    assert fastscan.group_lines(groups, size_of) == expected


def test_a_size_function_that_returns_no_str_leaves_the_lines_to_python():
    groups = [{"size": 2**60, "digest": "d", "paths": ["/t/a", "/t/b"]}]
    assert fastscan.group_lines(groups, lambda n: 7) is None
    with pytest.raises(ZeroDivisionError):
        fastscan.group_lines(groups, lambda n: 1 // 0)


def _held_here() -> int:
    """Bytes tracemalloc traces to this file's lines: what the C calls made from here
    allocated and still hold. Not the process's whole count: other threads of the test
    process (a PostgreSQL listener's, a thread pool's, left by earlier tests) allocate
    meanwhile (+39 kB once, in a clean-clone CI run)."""
    snapshot = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(True, __file__)])
    return sum(stat.size for stat in snapshot.statistics("filename"))


def test_wrong_input_is_an_exception_and_nothing_leaks():
    """Each refusal is a Python exception, and 250 calls of each (made, refused, left to
    Python) leave no memory behind (tracemalloc: what Python allocates, the C's objects;
    10,000 of each by hand, and RSS, in review 16: nothing)."""
    files = [(0, b"/t/a\xff", 3), (1, b"/t/b", 3), (2, b'/t/"q"', 3)]
    found = [(3, "d" * 32, [0, 1, 2]), (5, "e" * 32, [1, 2])]
    calls = [
        lambda: fastscan.report_groups(files, [(s, d, m[:]) for s, d, m in found]),
        lambda: fastscan.report_groups(files[1:2], [(3, "d", [0, 0])]),
        lambda: fastscan.group_lines([{"size": 2**60, "paths": ["/t/a"]}], cli_format.size),
        lambda: fastscan.group_lines([{"size": 3, "paths": ["/t/a", 7]}], cli_format.size),
    ]
    refused = [
        (IndexError, lambda: fastscan.report_groups(files, [(3, "d", [0, 9])])),
        (IndexError, lambda: fastscan.report_groups(files, [(3, "d", [0, -1])])),
        (OverflowError, lambda: fastscan.report_groups(files, [(3, "d", [0, 2**64])])),
        (TypeError, lambda: fastscan.report_groups(files, [(3, "d", [0, "1"])])),
        (TypeError, lambda: fastscan.report_groups(files, [(3, b"d", [0, 1])])),
        (TypeError, lambda: fastscan.report_groups(files, [(3.0, "d", [0, 1])])),
        (TypeError, lambda: fastscan.report_groups(files, [[3, "d", [0, 1]]])),
        (TypeError, lambda: fastscan.report_groups([(0, "/t/a", 3)], [(3, "d", [0])])),
        (TypeError, lambda: fastscan.report_groups([(0,)], [(3, "d", [0])])),
        (TypeError, lambda: fastscan.report_groups(tuple(files), found)),
        (TypeError, lambda: fastscan.group_lines(({"size": 1, "paths": []},), str)),
        (ValueError, lambda: fastscan.report_groups(files, [(10**5000, "d", [1, 1])])),
    ]
    for error, call in refused:
        with pytest.raises(error):
            call()
    gc.collect()
    # The test process's older objects (the whole suite's, in a full run) out of the
    # collections below, which then look only at what the calls made: each full collection
    # of a worker's heap took ~0.1 s, 32 of them most of this test's 3-8 s.
    gc.freeze()
    tracemalloc.start()
    try:
        for call in [*calls, *[c for _, c in refused]]:
            for _ in range(50):  # (warm: caches, interned keys, free lists)
                with contextlib.suppress(Exception):
                    call()
            gc.collect()
            before = _held_here()
            for _ in range(250):
                with contextlib.suppress(Exception):
                    call()
            gc.collect()
            assert _held_here() - before < 8_000
    finally:
        tracemalloc.stop()
        gc.unfreeze()


#: Names a dupes report must carry through as they are: not UTF-8, a newline, quotes,
#: backslashes, control characters, DEL, U+2028/2029, astral and non-ASCII characters.
_AWKWARD = [
    b"bad-\xff",
    b"new\nline",
    b'say "hi"',
    b"back\\slash",
    b"tab\t",
    b"del\x7f",
    b"bell\x07",
    "caf\u00e9".encode(),
    "line\u2028sep".encode(),
    "para\u2029sep".encode(),
    "smile\U0001f600".encode(),
    b"plain",
    b"x" * 200,
]


def test_the_command_prints_and_stores_awkward_names_as_the_old_python(tmp_path):
    """``parjobs dupes`` on a real tree of such names, through C: its stdout is the old
    Python's lines as the names' own bytes, and ``--json``'s result (strict JSON, names
    that are not UTF-8 given back in ``names_bytes``) names the same groups, largest first."""
    root = tmp_path / "t"
    groups: dict[bytes, list[bytes]] = {}
    for k, name in enumerate(_AWKWARD):
        content = b"%d" % (k % 4) * [1, 1023, 1024, 5000][k % 4]
        for where in (b"a", b"b"):
            path = os.fsencode(root) + b"/" + where + b"/" + name
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(content)
            groups.setdefault(content, []).append(path)
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")}
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    cli = [sys.executable, "-m", "parjobs.cli", "--store", str(tmp_path / "jobs.sqlite")]
    printed = subprocess.run([*cli, "dupes", str(root)], env=env, capture_output=True)
    assert printed.returncode == 0, printed.stderr
    as_json = subprocess.run([*cli, "--json", "dupes", str(root)], env=env, capture_output=True)
    assert as_json.returncode == 0, as_json.stderr
    line = json.loads(as_json.stdout.decode("utf-8").splitlines()[-1])
    table = line.get("names_bytes", {})
    result = line["result"]
    named = [
        [os.fsdecode(base64.b64decode(table[p])) if p in table else p for p in g["paths"]]
        for g in result["groups"]
    ]
    assert sorted(sorted(map(os.fsencode, g)) for g in named) == sorted(
        sorted(g) for g in groups.values()
    )
    assert all(paths == sorted(paths) for paths in named)  # (as str: the old sort)
    assert [g["size"] for g in result["groups"]] == sorted([len(c) for c in groups], reverse=True)
    old = _old_lines(
        {
            "groups": [
                {**g, "paths": [cli_results.escaped_path(n) for n in p]}
                for g, p in zip(result["groups"], named, strict=True)
            ]
        }
    )
    assert printed.stdout == ("\n".join(old) + "\n").encode("utf-8", "surrogateescape")


def test_a_name_with_a_newline_cannot_put_another_files_path_on_a_line_of_its_own(tmp_path):
    """``parjobs dupes`` prints one path a line: a name holding a newline (or a carriage
    return, a line break to Python's ``splitlines``) is escaped as coreutils escapes a
    checksum line's name. Printed raw, ``t/dup<LF>/.../keep/cv.odt`` put the path of
    ``cv.odt``, a file in no group, on a line of its own in the group of ``t/a``: a
    script keeping each group's first path and deleting the others deleted it (~0.3 s)."""
    t = tmp_path / "t"
    cv = t / "keep" / "cv.odt"
    cv.parent.mkdir(parents=True)
    cv.write_bytes(b"the only copy")
    (t / "a").write_bytes(b"same")
    planted = f"{t}/dup\n{cv}"
    cr = f"{t}/cr\r{t}/a"
    for path in (planted, cr):
        os.makedirs(os.path.dirname(path))
        with open(path, "wb") as f:
            f.write(b"same")
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")}
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    printed = run(["--store", str(tmp_path / "jobs.sqlite"), "dupes", str(t)], env=env)
    assert printed.returncode == 0, printed.stderr
    lines = printed.stdout.split("\n")
    assert str(cv) not in lines
    assert lines == [
        "# 3 copies of 4 B",
        str(t / "a"),
        "\\" + cr.replace("\r", "\\r"),
        "\\" + planted.replace("\n", "\\n"),
        "",
    ]
    # What a script reading the list gets back, line by line: exactly the group's files.
    assert all(os.path.isfile(_unescaped(line)) for line in lines[1:-1])


def _unescaped(line: str) -> str:
    if not line.startswith("\\"):
        return line
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "r": "\r"}.get(m[1], m[1]), line[1:])
