"""``python -m benchmarks --quick --tiny`` runs every scenario and writes well-formed results.

No timing assertions: only that every case measured its contenders and reports medians,
min/max, CPU, memory and ratios to a baseline that is one of them.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import pathlib
import subprocess
import sys
import types
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCENARIOS = {"copy", "hash", "thumbnails", "slow_storage", "dispatch", "resume", "items"}
MEASURE_KEYS = {
    "rounds_wall_s",
    "rounds_cpu_s",
    "median_s",
    "min_s",
    "max_s",
    "cpu_median_s",
    "peak_rss_mb",
    "ratio_to_baseline",
}


def _number(x: object) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _check_case(where: str, case: dict) -> None:
    assert case["data_set"], where
    contenders = case["contenders"]
    assert case["baseline"] in contenders, where
    assert contenders[case["baseline"]]["ratio_to_baseline"] == 1.0, where
    assert len(contenders) >= 3, where
    for name, c in contenders.items():
        missing = MEASURE_KEYS - c.keys()
        assert not missing, f"{where} / {name}: missing {missing}"
        for key in MEASURE_KEYS - {"rounds_wall_s", "rounds_cpu_s"}:
            assert _number(c[key]), f"{where} / {name}: {key}={c[key]!r}"
        assert c["rounds_wall_s"] and all(_number(w) and w > 0 for w in c["rounds_wall_s"])
        assert c["min_s"] <= c["median_s"] <= c["max_s"], f"{where} / {name}"
    for name, why in case["skipped"].items():
        assert name not in contenders and why, where


def test_tiny_run_writes_results(tmp_path):
    results = tmp_path / "results"
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "--quick",
            "--tiny",
            "--no-cold",
            # Every chart is drawn by `panel_chart` or `bar_chart`: one scenario of each
            # proves them (all six took ~5 s of the run's 17, half its CPU).
            "--charts",
            "hash,dispatch",
            "--results-dir",
            str(results),
            "--data-dir",
            str(tmp_path / "data"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,  # ~7 s of CPU; at load 25-35 it took 145 s of wall
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    (path,) = results.glob("*-tiny.json")
    assert json.loads(proc.stdout.strip().splitlines()[-1])["results"] == str(path)
    doc = json.loads(path.read_text())

    machine = doc["machine"]
    for key in ("cpu", "cores", "ram_gb", "os", "python", "loadavg", "tmp_fs"):
        assert key in machine
    assert set(doc["scenarios"]) == SCENARIOS

    for name, scenario in doc["scenarios"].items():
        assert scenario["mode"] == "tiny", name
        if name in ("dispatch", "items"):  # no data set
            continue
        assert scenario["data"]["version"] >= 1, name
        for key, case in scenario.get("cases", {}).items():
            _check_case(f"{name}/{key}", case)

    assert set(doc["scenarios"]["copy"]["cases"]) >= {"small/cached", "medium/cached"}
    assert "cached" in doc["scenarios"]["hash"]["cases"]
    assert "photos" in doc["scenarios"]["thumbnails"]["cases"]
    slow = doc["scenarios"]["slow_storage"]
    assert _number(slow["target"]["best"])
    assert _number(slow["cases"]["latency-20ms"]["contenders"]["parjobs 8 workers"]["speedup"])
    dispatch = doc["scenarios"]["dispatch"]
    assert _number(dispatch["overhead"]["target"]["ratio"])
    resume = doc["scenarios"]["resume"]
    assert _number(resume["resume"]["variants"]["dispatch_range"]["median_s"])
    assert _number(resume["checkpoint_overhead"]["median_store_share"])
    verdict = resume["verdict"]  # the two #14 figures against their targets
    assert _number(verdict["checkpoint_cost"]["wall_pct"])
    assert _number(verdict["checkpoint_cost"]["cpu_per_write_ms"])
    assert isinstance(verdict["checkpoint_cost"]["met"], bool)
    assert verdict["reruns_after_kill"]["reruns"] and verdict["reruns_after_kill"]["allowed"]
    items = doc["scenarios"]["items"]
    assert _number(items["us_per_record"]) and _number(items["bytes_per_record"])
    charts = {p.name for p in results.glob("*.png")}
    assert charts == {"hash.png", "dispatch_overhead.png"}, charts


def test_bench_trees_runs_each_scenario_per_tree_and_reports_medians(
    tmp_path: pathlib.Path,
) -> None:
    """``python -m benchmarks.bench_trees``: every scenario once per tree and round (here
    this checkout against itself), each job completed, medians and ratios written."""
    results = tmp_path / "results"
    args = ["--rounds", "1", "--files", "30", "--big-mib", "1", "--only", "copy-small,hash,resume"]
    args += ["--data-dir", str(tmp_path / "data"), "--results-dir", str(results)]
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_trees", str(ROOT), str(ROOT), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("round 1 ") == 6
    (written,) = results.glob("trees-*.json")
    summary = json.loads(written.read_text())["summary"]
    assert set(summary) == {"copy-small", "hash", "resume"}
    assert all(_number(row["other_ratio_wall"]) for row in summary.values())
    assert not list((tmp_path / "data").glob("bench-trees-*"))  # each run's files removed


def test_cases_option_picks_cases_and_families(tmp_path: pathlib.Path) -> None:
    """``--cases dupes,big`` runs the dupes case and every ``big-*`` set, nothing else."""
    # (imported by name: mypy checks parjobs and tests, not the benchmarks behind them)
    session_type = importlib.import_module("benchmarks._session").Session

    def session(cases: frozenset[str] | None) -> Any:
        return session_type("tiny", None, 1, 0, [2], False, "", tmp_path, cases=cases)

    picked = session(frozenset({"dupes", "big"}))
    names = ("startup", "dupes", "big-4x1MiB", "hash", "move-tmpfs")
    assert [name for name in names if picked.wants(name)] == ["dupes", "big-4x1MiB"]
    assert session(None).wants("startup")


def test_a_round_stalled_outside_its_work_is_flagged_not_dropped() -> None:
    """A child's round far slower than its others while its user time is not (the VM's disk
    holding the call, in the kernel or waiting) is named in ``stalled_rounds``, with the
    median of the rest beside the median of all rounds, which stays as it was; a round
    slower because it did more work itself is not."""
    from benchmarks._common import Measurement

    m = Measurement("mv")
    m.wall = [0.70, 0.71, 8.8, 0.72, 0.60]
    m.sys = [0.28, 0.29, 0.34, 0.30, 0.27]
    m.cpu = [s + 0.02 for s in m.sys]
    out = m.to_json()
    assert out["rounds_sys_s"] == m.sys
    assert out["stalled_rounds"] == [3]
    assert out["median_s"] == 0.71
    assert out["median_s_unstalled"] == 0.705
    m.cpu[2] = 8.0  # its own work: not a stall
    assert "stalled_rounds" not in m.to_json()


def test_cli_copy_contenders_of_a_tree_of_big_files_all_run(tmp_path: pathlib.Path) -> None:
    """The cli scenario's ``large`` case (files above the C group calls' 8 MiB) ran the
    small-file floor too, which the C call hands such files back from (-3): every
    ``python -m benchmarks --only cli`` failed there. Each copy contender of such a tree now
    runs and copies it all; the floor is left to the small-file cases."""
    bench_cli: Any = importlib.import_module("benchmarks.bench_cli")  # not type-checked
    src = tmp_path / "large"
    src.mkdir()
    with open(src / "big.bin", "wb") as f:
        f.truncate(bench_cli.FLOOR_MAX_SIZE + 1)
    (tmp_path / "scratch").mkdir()
    calls = bench_cli._Calls(types.SimpleNamespace(scratch=tmp_path / "scratch"))
    contenders = bench_cli._copies(calls, src, verify=False)
    assert {"cp -r", "parjobs copy"} <= contenders.keys()
    for name, call in contenders.items():
        assert call().wall > 0, name


def test_the_floors_run_against_this_builds_c_calls(tmp_path: pathlib.Path) -> None:
    """The small-file and move floors (`SMALL_FLOOR`, `MOVE_FLOOR`) call the C group
    functions without parjobs' Python side, so a change of their calling convention left
    them broken unseen (6346ab7's six-field source identities: `unlink_many` refused the
    move floor's items and every benchmark run of `move-tmpfs` failed). Each runs here on a
    small tree: the copy lands whole, the move leaves no source behind."""
    bench_cli: Any = importlib.import_module("benchmarks.bench_cli")  # (not type-checked)

    def tree(root: pathlib.Path) -> dict[str, bytes]:
        files = {f"d{i}/f{k}": bytes([k]) * (k * 100) for i in range(3) for k in range(5)}
        for rel, data in files.items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(data)
        return files

    for name, script in (("copy", bench_cli.SMALL_FLOOR), ("move", bench_cli.MOVE_FLOOR)):
        src, dst = tmp_path / name / "src", tmp_path / name / "dst"
        files = tree(src)
        dst.mkdir()
        subprocess.run(
            [sys.executable, "-c", script, str(src), str(dst), str(bench_cli.OPS)],
            check=True,
            capture_output=True,
            timeout=60,
        )
        for rel, data in files.items():
            assert (dst / "src" / rel).read_bytes() == data
        assert src.exists() is (name == "copy")
