"""Run the parjobs benchmarks: ``python -m benchmarks [--quick | --tiny] [--only copy,hash]``
(``--cases dupes``: some cases of a scenario).

Scenarios (run in this order): copy, hash, thumbnails, slow_storage, dispatch, resume, items,
cli (the command line end to end; not in a ``--tiny`` run unless named); and ``stores``
(PostgreSQL against SQLite) when named in ``--only``. Data
sets are generated once per profile (seeded) and cached under ``--data-dir``. Results merge
per scenario into ``<results-dir>/<date>-<host>[-quick|-tiny].json``; charts go to the results
directory and, for a full run into the default results directory, to ``docs/images/``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import _common, _data
from ._common import Stopwatch, log, machine_info, write_results
from ._session import Session
from ._tools import cold_cache_support, prepare_scratch

SCENARIOS = ("copy", "hash", "thumbnails", "slow_storage", "dispatch", "resume", "items", "cli")
#: Run only when named in ``--only``: ``stores`` needs a PostgreSQL server (bench_stores).
OPT_IN = ("stores",)
#: Scenarios that need no generated data set.
NO_DATA = frozenset({"dispatch", "items", "stores"})
#: No-op tasks per overhead round of the dispatch scenario in a full run.
DISPATCH_OVERHEAD_N = 50_000
#: (rounds, warmup rounds) per mode.
ROUNDS = {"full": (3, 1), "quick": (2, 1), "tiny": (1, 0)}


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description="parjobs benchmarks")
    p.add_argument("--quick", action="store_true", help="scaled-down data, 2 rounds (~1 min)")
    p.add_argument("--tiny", action="store_true", help="smoke-test sizes, 1 round (seconds)")
    p.add_argument("--only", metavar="SCENARIO[,..]", help=f"subset of {', '.join(SCENARIOS)}")
    p.add_argument("--data-dir", type=Path, help=f"data cache (default {_data.DEFAULT_ROOT})")
    p.add_argument("--results-dir", type=Path, help="where JSON and charts go")
    p.add_argument(
        "--cases",
        metavar="CASE[,..]",
        help="only these cases of the scenarios (cli: startup, small, large, big, move-tmpfs, "
        "hash, thumbnails, dupes)",
    )
    p.add_argument("--rounds", type=int, help="measured rounds per case (default by mode)")
    p.add_argument("--workers", default="8,16", help="parallel worker counts (default 8,16)")
    cold = p.add_mutually_exclusive_group()
    cold.add_argument("--cold", action="store_true", help="cold-ish variants in quick mode too")
    cold.add_argument("--no-cold", action="store_true", help="skip the cold-ish cache variants")
    charts = p.add_mutually_exclusive_group()
    charts.add_argument("--no-charts", action="store_true", help="JSON only")
    charts.add_argument(
        "--charts", metavar="SCENARIO[,..]", help="draw only these scenarios' charts"
    )
    args = p.parse_args(argv)
    # cli starts ~20 processes per round: too slow for the smoke test's --tiny run of all.
    default = [s for s in SCENARIOS if not (args.tiny and s == "cli")]
    only = args.only.split(",") if args.only else default
    known = SCENARIOS + OPT_IN
    unknown = [s for s in only if s not in known]
    if unknown:
        p.error(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(known)}")
    args.only = [s for s in known if s in only]
    args.charts = frozenset(args.charts.split(",")) if args.charts else None
    try:
        args.workers = sorted({int(w) for w in args.workers.split(",")})
    except ValueError:
        p.error(f"--workers wants numbers like 8,16, got {args.workers!r}")
    if any(w < 2 for w in args.workers):
        p.error("--workers: parallel counts must be >= 2 (1 worker is always measured)")
    return args


def _run_dispatch(session: Session) -> dict[str, Any]:
    from . import bench_dispatch

    # The full overhead phase (200,000 tasks, 4 rounds of 6 contenders) alone takes minutes:
    # the suite runs it with fewer tasks; ``python -m benchmarks.bench_dispatch`` does it all.
    data = bench_dispatch.run(
        session.quick,
        write=session.charts,
        tiny=session.mode == "tiny",
        overhead_n=DISPATCH_OVERHEAD_N if session.mode == "full" else None,
    )
    session.shared["dispatch"] = data
    return data


def _data_json(data: _data.DataSets) -> dict[str, Any]:
    keys = ("version", "profile", "seed", "generated_in_s")
    return {"dir": str(data.root), **{k: data.info.get(k) for k in keys}}


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    mode = "tiny" if args.tiny else "quick" if args.quick else "full"
    default_dir = args.results_dir is None
    _common.configure_output(
        args.results_dir,
        images=default_dir and mode == "full" and not args.no_charts,
        tag="" if mode == "full" else mode,
    )
    rounds, warmup = ROUNDS[mode]
    if args.rounds:
        rounds = args.rounds
    total = Stopwatch()
    log(f"parjobs benchmarks, {mode} mode: {', '.join(args.only)}")
    needs_data = [s for s in args.only if s not in NO_DATA]
    data = _data.ensure(mode, args.data_dir) if needs_data else None
    # Dropping the page cache also serves cached rounds (see _tools.refresh_metadata).
    can_drop, reason = (False, "not run in tiny mode (add --cold)")
    if mode != "tiny" or args.cold:
        can_drop, reason = cold_cache_support()
    cold = can_drop and not args.no_cold and (mode == "full" or args.cold)
    if args.no_cold:
        reason = "disabled with --no-cold"
    elif can_drop and not cold:
        reason = f"not run in {mode} mode (add --cold)"
    if not cold:
        log(f"cold-ish cache variants skipped: {reason}")
    scratch_parent = data.root.parent if data is not None else None
    with tempfile.TemporaryDirectory(prefix="parjobs-bench-", dir=scratch_parent) as scratch:
        scratch_info = prepare_scratch(Path(scratch))
        log(f"scratch {scratch}: {scratch_info['create_us_per_file']} us per file create")
        session = Session(
            mode=mode,
            data=data,  # type: ignore[arg-type]  # only NO_DATA scenarios run without it
            rounds=rounds,
            warmup=warmup,
            workers=args.workers,
            cold=cold,
            cold_reason=reason,
            can_drop_caches=can_drop,
            scratch=Path(scratch),
            charts=not args.no_charts,
            cases=frozenset(args.cases.split(",")) if args.cases else None,
        )
        for name in args.only:
            sw = Stopwatch()
            session.charts = not args.no_charts and (args.charts is None or name in args.charts)
            runner: Callable[[Session], dict[str, Any]]
            if name == "dispatch":
                runner = _run_dispatch
            else:
                runner = importlib.import_module(f".bench_{name}", __package__).run
            result = runner(session)
            result = {
                "mode": mode,
                "data": None if data is None else _data_json(data),
                "scratch": scratch_info,
                **result,
                "scenario_s": round(sw.stop().wall, 1),
            }
            path = write_results(name, result)
            log(f"[{name}] done in {result['scenario_s']} s -> {path}")
    log(f"all done in {total.stop().wall:.0f} s")
    print(json.dumps({"results": str(_common.results_path()), "machine": machine_info()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
