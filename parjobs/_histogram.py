"""Duration histograms that cost one bisect per observation: how long tasks ran and how long
checkpoint writes took, in this process, for the server's ``/metrics`` (read at scrape time;
nothing is written anywhere per task)."""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable

#: Bounds (seconds) for job-length durations: a job's run, its wait in the queue.
DURATION_BUCKETS = (0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600, math.inf)
#: Bounds (seconds) for task-length durations: one file copied, hashed, thumbnailed...
TASK_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 120, 600, math.inf)
#: Bounds (seconds) for one checkpoint write (a store transaction).
CHECKPOINT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5, math.inf)


class Histogram:
    """Bucket counts and a sum, as a Prometheus histogram wants them (`counts` cumulative:
    ``counts[i]`` observations were at most ``bounds[i]``; the last bound is infinity)."""

    def __init__(self, buckets: Iterable[float] = DURATION_BUCKETS) -> None:
        self.bounds = tuple(buckets)
        if not self.bounds or self.bounds[-1] != math.inf:
            raise ValueError("the last bucket bound must be infinity")
        self._hits = [0] * len(self.bounds)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.sum += value
        self._hits[bisect.bisect_left(self.bounds, value)] += 1

    @property
    def counts(self) -> list[int]:
        out, total = [], 0
        for hits in self._hits:
            total += hits
            out.append(total)
        return out

    @property
    def count(self) -> int:
        return sum(self._hits)


#: How long each task ran (from its start to its outcome), every job of this process.
TASK_SECONDS = Histogram(TASK_BUCKETS)
#: How long each checkpoint write took, every job of this process.
CHECKPOINT_SECONDS = Histogram(CHECKPOINT_BUCKETS)
