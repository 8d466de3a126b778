"""parjobs benchmarks: ``python -m benchmarks [--quick]`` runs every scenario (`__main__`).

Scenario modules (``bench_*.py``) each have ``run(session) -> dict`` (`bench_dispatch`:
``run(quick)``, also runnable alone). Every scenario measures its contenders alternately in one
process; its figures merge under its own key into ``benchmarks/results/<date>-<host>.json``
and its PNG charts go to ``benchmarks/results/`` and ``docs/images/``. Shared helpers:
`_common` (rounds, results, charts), `_data` (seeded data sets), `_tools` (external tools,
page cache, jobs), `_session`, `_report` (results as Markdown tables).
"""
