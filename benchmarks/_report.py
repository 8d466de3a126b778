"""Print a results file as Markdown tables: ``python -m benchmarks._report [--ratios] [FILE]``.

One table per measured case: median wall time, min-max, CPU, peak RSS and the ratio to the
case's baseline; with ``--ratios``, one table per scenario with a column per case (median and
ratio). Used to write ``docs/benchmarks.md`` from a full run.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from ._common import results_path


def _fmt_s(seconds: float) -> str:
    return f"{seconds * 1e3:,.0f} ms" if seconds < 10 else f"{seconds:,.1f} s"


def _memory(c: dict[str, Any]) -> str:
    """A child's own peak RSS, or how much this process' peak rose during an in-process call
    (its absolute peak includes the harness: interpreter, Pillow, earlier cases)."""
    child = c.get("rss_of", "child process" if c["peak_rss_mb"] == c["rss_growth_mb"] else "")
    if child == "child process":
        return f"{c['peak_rss_mb']:,.0f} MB"
    return f"+{c['rss_growth_mb']:,.1f} MB"


def case_table(case: dict[str, Any]) -> list[str]:
    rows = [
        "| contender | median | min-max | CPU | memory | ratio |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, c in case["contenders"].items():
        bold = "**" if name == case["baseline"] else ""
        stalled = c.get("stalled_rounds")  # (flagged, still in the median: `Measurement.stalled`)
        note = (
            f" (stalled: round{'s' if len(stalled) > 1 else ''} {', '.join(map(str, stalled))}; "
            f"{_fmt_s(c['median_s_unstalled'])} without)"
            if stalled
            else ""
        )
        rows.append(
            f"| {bold}{name}{bold} | {_fmt_s(c['median_s'])}{note} | "
            f"{_fmt_s(c['min_s'])}-{_fmt_s(c['max_s'])} | {_fmt_s(c['cpu_median_s'])} | "
            f"{_memory(c)} | {c['ratio_to_baseline']:.2f}{chr(215)} |"
        )
    for name, why in case.get("skipped", {}).items():
        rows.append(f"| {name} | skipped: {why} | | | | |")
    return rows


def report(doc: dict[str, Any]) -> str:
    out = []
    for scenario, data in doc["scenarios"].items():
        for key, case in data.get("cases", {}).items():
            sets = ", ".join(s["label"] for s in case["data_set"].values())
            out.append(f"### {scenario}: {key} ({sets})\n")
            out.extend(case_table(case))
            out.append("")
    return "\n".join(out)


def ratio_tables(doc: dict[str, Any]) -> str:
    out = []
    for scenario, data in doc["scenarios"].items():
        cases = data.get("cases", {})
        if not cases:
            continue
        names: list[str] = []
        for case in cases.values():
            names += [n for n in case["contenders"] if n not in names]
        out.append(f"### {scenario}\n")
        out.append("| contender | " + " | ".join(cases) + " |")
        out.append("| --- |" + " ---: |" * len(cases))
        for name in names:
            cells = []
            for case in cases.values():
                c = case["contenders"].get(name)
                if c is None:
                    cells.append("-")
                    continue
                cell = f"{_fmt_s(c['median_s'])} ({c['ratio_to_baseline']:.2f}{chr(215)})"
                cells.append(f"**{cell}**" if name == case["baseline"] else cell)
            out.append(f"| {name} | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def main() -> None:
    args = sys.argv[1:]
    ratios = "--ratios" in args
    args = [a for a in args if a != "--ratios"]
    path = Path(args[0]) if args else results_path()
    doc = json.loads(path.read_text())
    print(ratio_tables(doc) if ratios else report(doc))


if __name__ == "__main__":
    main()
