import math

import pytest

from parjobs._histogram import Histogram


def test_counts_are_cumulative_per_bound_and_the_sum_adds_up() -> None:
    h = Histogram((0.01, 0.1, 1, math.inf))
    for value in (0.005, 0.01, 0.05, 0.5, 2, 100):
        h.observe(value)
    assert h.counts == [2, 3, 4, 6]  # a value on a bound counts in that bucket (le)
    assert h.count == 6 and h.sum == pytest.approx(102.565)


def test_the_last_bound_must_be_infinity() -> None:
    with pytest.raises(ValueError, match="infinity"):
        Histogram((1, 2))
