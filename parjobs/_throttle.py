"""The tiny-task throttle: how many worker threads may stream tiny sync tasks at once.

Pure bookkeeping (no trio, no threads of its own): the local thread executor feeds it task
times and asks it whether to hold threads back.
"""

from __future__ import annotations

#: Sync tasks averaging less than this (seconds, measured alone) are "tiny".
TINY_TASK = 0.001
#: Judge by at least this many tasks' worth of time: one task this slow (a 20 ms network
#: open) lifts the limit at once, while a thread held up by a GIL wait (up to the 5 ms switch
#: interval) or a page fault does not.
TINY_WINDOW = 16
#: How long the throttle leaves concurrency unlimited before measuring again (seconds).
PROBE_INTERVAL = 1.0


class TinyTaskThrottle:
    """Limits how many threads run *tiny* sync tasks at once.

    Each call into CPython releases and retakes the GIL, and a small-file copy makes about
    ten of them in ~150 us: several threads doing that contend for the GIL more than they
    overlap. Threads pay off when tasks wait (a slow disk or network share) or run long
    outside the GIL (big chunks, image decoding), and then tasks are slow.

    Streams of grouped tasks (`Task.run_group`) get `group_cap`, one thread per core: a group
    call spends most of its time outside the GIL.

    A heavy task (see `parjobs._workqueue.HEAVY_BYTES`) is never held back and does not
    count: it cannot be tiny, and it leaves the GIL alone while the kernel copies its chunks.
    Otherwise the pool starts limited to `cap` streaming threads and measures task times
    while at most `cap` threads stream (measurements under contention would be inflated by
    GIL waits). Tasks averaging over `TINY_TASK` (over at least `TINY_WINDOW` tasks' worth of
    time) lift the limit; `PROBE_INTERVAL` later the pool limits itself again to re-measure,
    since a job's work can change (small files, then large ones).
    """

    __slots__ = ("cap", "group_cap", "limited", "n", "since", "total", "useful")

    def __init__(self, workers: int, cpus: int) -> None:
        # (Measured on a 2-core machine: 8 threads copied 10,000 small files 1.6x slower than
        # one; two streams of C group calls copied them 1.3x faster than one.)
        self.cap = max(1, min(workers, cpus // 2))
        self.group_cap = max(1, min(workers, cpus))
        self.useful = self.cap < workers  # else there is nothing to limit
        self.limited = self.useful
        self.n = 0
        self.total = 0.0
        self.since = 0.0

    def observe(self, seconds: float, count: int = 1) -> None:
        """From a worker thread while measuring: the wall time of ``count`` tasks (races
        between threads only blur the statistics)."""
        self.n += count
        self.total += seconds

    def review(self, now: float) -> bool | None:
        """From trio: True when the limit was just lifted (wake the waiting workers), False
        when it was just set again, None when nothing changed."""
        if self.limited:
            n = self.n
            if n and self.total > max(n, TINY_WINDOW) * TINY_TASK:
                self.limited = False
                self.since = now
                return True
            if n >= 64:  # tiny so far: measure a fresh window
                self.n, self.total = 0, 0.0
            return None
        if self.useful and now - self.since >= PROBE_INTERVAL:
            self.limited = True
            self.n, self.total = 0, 0.0
            return False
        return None
