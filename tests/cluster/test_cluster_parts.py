"""The cluster lane's parts without a cluster: the path map, the configuration, the CLI's
options, an unreachable scheduler, and how a copy task run again on a worker settles the
output it already made."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import parjobs
from parjobs import ClusterError, ManagerConfig
from parjobs import _cluster as cluster_module
from parjobs._cluster_remote import (
    _Reporter,
    dumps,
    loads,
    mapped_below,
    parse_path_map,
    reverse,
    run_tasks,
)
from parjobs._task import Interrupter
from parjobs.ops._copy import CopyItem
from parjobs.ops._copyfile import CopyOptions
from parjobs.ops._transfer import make_plan
from parjobs.ops._walk import Entry

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))


def test_the_path_map_rewrites_paths_under_its_directories_only() -> None:
    pairs = parse_path_map("/mnt/nas=/data/nas, /mnt/nas/photos=/photos")
    obj = {
        "a": "/mnt/nas/x/y.jpg",
        "b": b"/mnt/nas/photos/p.jpg",  # the longest prefix wins
        "c": "/mnt/nas2/z",  # not on a component boundary: untouched
        "d": "/mnt/nas",
        "e": ["relative/mnt/nas", 5, b"/elsewhere"],
    }
    there = loads(dumps(obj, pairs))
    assert there == {
        "a": "/data/nas/x/y.jpg",
        "b": b"/photos/p.jpg",
        "c": "/mnt/nas2/z",
        "d": "/data/nas",
        "e": ["relative/mnt/nas", 5, b"/elsewhere"],
    }
    assert loads(dumps(there, reverse(pairs))) == obj
    assert loads(dumps(obj)) == obj  # no map: plain pickling


def test_a_plan_tells_the_workers_of_the_map_directories_below_its_root() -> None:
    """What `mapped_below` gives a destination tree while pickled: the map's directories
    strictly below the root, by component (``/a/dst2`` is not under ``/a/dst``), mapped."""
    pairs = parse_path_map("/a/dst=/x/new,/a/dst2x=/y,/a=/b,/c/a/dst=/z")

    class Probe:
        def __init__(self, root: bytes) -> None:
            self.root = root

        def __reduce__(self) -> tuple[Any, ...]:
            return (dict, (mapped_below(self.root),))

    seen = loads(dumps([Probe(b"/a"), Probe(b"/a/dst"), Probe(b"/a/dst2"), Probe(b"/")], pairs))
    assert seen == [
        {b"dst": b"/x/new", b"dst2x": b"/y"},  # the longest prefix: not /b/dst
        {},
        {},
        {b"a/dst": b"/x/new", b"a/dst2x": b"/y", b"a": b"/b", b"c/a/dst": b"/z"},
    ]
    assert mapped_below(b"/a") == {}  # outside `dumps`: nothing


@pytest.mark.parametrize(
    "text, words",
    [
        ("/a", "HERE=THERE"),
        ("a=/b", "absolute"),
        ("/a=b", "absolute"),
        ("/a=/b,/a=/c", "twice"),
    ],
)
def test_a_bad_path_map_says_why(text: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        parse_path_map(text)


@pytest.mark.parametrize(
    "cluster, error",
    [
        ("local:0", ValueError),
        ("local:2x0", ValueError),
        ("local", ValueError),
        ("no address", ValueError),
        ("", ValueError),
        (8786, TypeError),
    ],
)
def test_a_bad_cluster_is_refused_by_the_config(cluster: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        ManagerConfig(cluster=cluster)


def test_good_clusters_are_accepted() -> None:
    for text in ("tcp://10.0.0.5:8786", "sched:8786", "local:2", "local:2x4"):
        assert ManagerConfig(cluster=text).cluster == text
    config = ManagerConfig(cluster="local:1", cluster_path_map={"/mnt/a/": "/a"})
    assert config.cluster_path_map == (("/mnt/a", "/a"),)


async def test_an_unreachable_scheduler_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cluster_module, "CONNECT_TIMEOUT", 1.0)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ClusterError, match=f"127.0.0.1:{port}"):
        async with parjobs.open_manager(tmp_path / "s.sqlite", cluster=f"tcp://127.0.0.1:{port}"):
            raise AssertionError("not reached")


@pytest.mark.parametrize(
    "options",
    [["--cluster", "not an address"], ["--cluster", "local:2", "--cluster-path-map", "/a"]],
)
def test_the_cli_refuses_a_bad_cluster_in_one_line(tmp_path: Path, options: list[str]) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"x")
    store = tmp_path / "s.sqlite"
    proc = subprocess.run(
        [sys.executable, "-m", "parjobs", "copy", str(src), str(tmp_path / "dst"), *options],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": ROOT, "PARJOBS_STORE": str(store)},
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "dst").exists() and not store.exists()


def _copy_item(tmp_path: Path) -> tuple[CopyItem, Path]:
    """A copy item of one file, as the copy job builds it, made portable as for a worker."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"0123456789" * 100)
    dst = tmp_path / "dst"
    plan = make_plan(
        [str(src)], str(dst), CopyOptions(), policy="fail", follow=False, resumed=False, ask=None
    )
    st = os.stat(src / "f")
    entry = Entry(
        1, "file", 0, b"src/f", os.fsencode(src / "f"), st.st_size, st.st_mtime_ns, st.st_mode
    )
    item = CopyItem(entry, plan)
    plan.tree.acquire(b"src")
    plan.tree.release(b"src")
    return loads(dumps(item)), dst / "src" / "f"


def _run(item: CopyItem, rerun: bool) -> tuple[str, Any, BaseException | None, str, int, Any]:
    events: list[Any] = []
    reporter = _Reporter("t", "k", lambda topic, msg: events.append(msg))
    [result] = run_tasks([(item, 1, None)], Interrupter(), reporter, rerun)
    assert events and events[-1][1] == 1  # started, reported
    return result


def test_a_copy_run_again_counts_its_own_output_done(tmp_path: Path) -> None:
    item, out = _copy_item(tmp_path)
    assert not out.exists()
    status, value, error, _, _, records = _run(item, rerun=False)
    assert (status, tuple(value)) == ("done", ("file", 1000, 0)), error
    assert [r[0] for r in records] == ["copied"]  # the item rows (action first) travel back too
    # The worker was lost after the copy: the group runs again and finds the file.
    status, value, error, _, nbytes, records = _run(item, rerun=True)
    assert (status, tuple(value), nbytes) == ("done", ("file", 1000, 0), 1000)  # counted so
    assert [r[0] for r in records] == ["present"]
    # Not a re-run: the same file already there is a conflict (policy "fail"), as locally.
    status, _, error, _, _, _ = _run(item, rerun=False)
    assert status == "failed" and isinstance(error, FileExistsError)


def test_a_copy_run_again_never_takes_a_different_file_for_its_own(tmp_path: Path) -> None:
    item, out = _copy_item(tmp_path)
    out.write_bytes(b"the user's own, different file")
    status, _, error, _, _, _ = _run(item, rerun=True)
    assert status == "failed" and isinstance(error, FileExistsError)
    assert out.read_bytes() == b"the user's own, different file"


def test_the_cli_runs_a_job_on_a_local_cluster_from_the_environment(tmp_path: Path) -> None:
    """``$PARJOBS_CLUSTER=local:1x2``: the CLI starts a LocalCluster of one worker process,
    runs the job's tasks there, and stops it. The workers see ``alt`` where this process
    sees ``src`` (``$PARJOBS_CLUSTER_PATH_MAP``), so the digests tell where they were made."""
    src, alt = tmp_path / "src", tmp_path / "alt"
    src.mkdir()
    alt.mkdir()
    for i in range(5):
        (src / f"f{i}").write_bytes(bytes([i]) * (1000 + i))
        (alt / f"f{i}").write_bytes(bytes([i + 1]) * (1000 + i))
    env = {
        **os.environ,
        "PYTHONPATH": ROOT,
        "PARJOBS_STORE": str(tmp_path / "s.sqlite"),
        "PARJOBS_CLUSTER": "local:1x2",
        "PARJOBS_CLUSTER_PATH_MAP": f"{src}={alt}",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "parjobs", "hash", str(src), "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    local = subprocess.run(
        [sys.executable, "-m", "parjobs", "hash", str(alt), "--json"],
        capture_output=True,
        text=True,
        env={**env, "PARJOBS_CLUSTER": "", "PARJOBS_STORE": str(tmp_path / "l.sqlite")},
        timeout=120,
    )
    assert local.returncode == 0, local.stderr
    digests = _digests(proc.stdout)
    assert sorted(digests) == [str(src / f"f{i}") for i in range(5)]  # this host's paths
    expected = {path.replace(str(alt), str(src)): d for path, d in _digests(local.stdout).items()}
    assert digests == expected  # of alt's content: hashed on the worker


def _digests(stdout: str) -> dict[str, str]:
    """The digests of the result line of ``--json`` output."""
    for line in stdout.splitlines():
        result = json.loads(line).get("result")
        if isinstance(result, dict) and "digests" in result:
            return dict(result["digests"])
    raise AssertionError(f"no result in {stdout!r}")
