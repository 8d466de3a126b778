"""The tiny-task throttle (pure): when it holds tiny tasks to few threads, when it lets go,
and when it measures again."""

from __future__ import annotations

import pytest

from parjobs._throttle import PROBE_INTERVAL, TinyTaskThrottle


def test_throttle_lifts_the_limit_for_slow_tasks_then_probes_again() -> None:
    throttle = TinyTaskThrottle(workers=8, cpus=2)
    assert (throttle.cap, throttle.limited) == (1, True)
    for _ in range(64):
        throttle.observe(0.0002)
    assert throttle.review(now=100.0) is None and throttle.limited  # tiny: stays limited
    throttle.observe(0.02)  # one task waiting 20 ms is proof enough
    assert throttle.review(now=100.0) is True and not throttle.limited
    assert throttle.review(now=100.0 + PROBE_INTERVAL / 2) is None
    assert throttle.review(now=100.0 + PROBE_INTERVAL) is False and throttle.limited


def test_throttle_ignores_a_lone_hiccup_among_tiny_tasks() -> None:
    throttle = TinyTaskThrottle(workers=8, cpus=2)
    throttle.observe(0.005)  # a GIL wait or page fault
    for _ in range(20):
        throttle.observe(0.0002)
    assert throttle.review(now=1.0) is None and throttle.limited


@pytest.mark.parametrize(("workers", "cpus"), [(1, 2), (2, 4), (4, 64)])
def test_throttle_does_nothing_when_there_is_nothing_to_limit(workers: int, cpus: int) -> None:
    throttle = TinyTaskThrottle(workers=workers, cpus=cpus)
    assert not throttle.limited
    assert throttle.review(now=1e6) is None and not throttle.limited


@pytest.mark.parametrize(
    ("workers", "cpus", "cap", "group_cap"),
    [(8, 2, 1, 2), (8, 4, 2, 4), (1, 2, 1, 1), (3, 8, 3, 3)],
)
def test_throttle_lets_groups_use_every_core(
    workers: int, cpus: int, cap: int, group_cap: int
) -> None:
    throttle = TinyTaskThrottle(workers, cpus)
    assert (throttle.cap, throttle.group_cap) == (cap, group_cap)
