"""IndexSet: the completed-index bitmap and its range codec, against Python sets."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parjobs._indexset import IndexSet, to_ranges

#: Properties, not timings: on a loaded 2-core machine (load 20+) Hypothesis' deadline and
#: too-slow health check failed these tests, which say nothing about speed.
untimed = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


@untimed
@given(st.lists(st.integers(min_value=0, max_value=5000), max_size=300))
def test_indexset_matches_a_python_set(indices):
    s = IndexSet()
    for i in indices:
        s.add(i)
    assert len(s) == len(set(indices))
    assert all(i in s for i in indices)
    assert list(s.ranges()) == to_ranges(indices)
    assert IndexSet(s.ranges()).ranges().__next__ if indices else True
    missing = list(s.missing(5001))
    assert missing == sorted(set(range(5001)) - set(indices))


@untimed
@given(st.lists(st.tuples(st.integers(0, 3000), st.integers(0, 200)), max_size=30))
def test_indexset_add_range(pairs):
    s, ref = IndexSet(), set[int]()
    for start, length in pairs:
        s.add_range(start, start + length)
        ref.update(range(start, start + length))
    assert len(s) == len(ref)
    assert list(s.ranges()) == to_ranges(ref)


def test_a_million_indices_are_compact():
    s = IndexSet([(0, 1_000_000)])
    assert len(s) == 1_000_000
    assert len(s._bits) <= 200_000
    assert list(s.ranges()) == [(0, 1_000_000)]
    assert list(s.missing(1_000_010)) == list(range(1_000_000, 1_000_010))


@untimed
@given(st.lists(st.integers(min_value=0, max_value=5000), max_size=300), st.integers(0, 60))
def test_add_each_is_add_for_many_and_returns_the_new_ones(indices, before):
    """`add_each` (a bundle's tasks booked in one call) leaves the set as `add` one by one
    would and returns the indices that were new, in order, each once."""
    s, ref = IndexSet([(0, before)]), IndexSet([(0, before)])
    new = s.add_each(indices)
    assert new == [i for i in dict.fromkeys(indices) if ref.add(i)]
    assert len(s) == len(ref) and list(s.ranges()) == list(ref.ranges())


def test_add_each_refuses_a_negative_index_and_keeps_its_count():
    s = IndexSet()
    try:
        s.add_each([3, 9, -1, 12])
    except ValueError:
        pass
    else:
        raise AssertionError("a negative index was taken")
    assert len(s) == 2 and list(s.ranges()) == [(3, 4), (9, 10)]
