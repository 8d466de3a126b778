"""parjobs benchmarks: scenario modules (``bench_*.py``) with ``run(quick) -> dict``.

Each scenario measures its contenders alternately in one process, writes its figures under its
own key of ``benchmarks/results/<date>-<host>.json`` and renders PNG charts into
``benchmarks/results/`` and ``docs/images/``. Shared helpers live in `benchmarks._common`.
"""
