"""IndexSet: the completed-index bitmap and its range codec, against Python sets."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parjobs._indexset import IndexSet, merged, to_ranges

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


@untimed
@given(
    st.lists(st.integers(min_value=0, max_value=300), max_size=40),
    st.integers(0, 280),
    st.integers(1, 80),
)
def test_add_run_adds_a_run_only_when_none_of_it_is_there(members, start, length):
    """`add_run` (a bundle's booking of its one run of indices) adds the whole run, as
    `add_range` would, when none of it is a member, and nothing otherwise; the count holds."""
    s, ref = IndexSet(), IndexSet()
    s.add_each(members)
    ref.add_each(members)
    stop = start + length
    fresh = not any(i in ref for i in range(start, stop))
    assert s.add_run(start, stop) is fresh
    if fresh:
        ref.add_range(start, stop)
    assert len(s) == len(ref) and list(s.ranges()) == list(ref.ranges())


def test_add_run_refuses_an_empty_or_negative_run():
    s = IndexSet()
    for start, stop in ((5, 5), (-1, 3), (4, 2)):
        try:
            s.add_run(start, stop)
        except ValueError:
            continue
        raise AssertionError(f"[{start}, {stop}) was taken")
    assert len(s) == 0


@untimed
@given(st.lists(st.integers(min_value=0, max_value=500), max_size=100, unique=True))
def test_merged_coalesces_disjoint_ranges(indices):
    """`merged` of disjoint ranges in any order is the maximal ranges of their indices."""
    pieces = [(i, i + 1) for i in reversed(indices)]
    assert merged(pieces) == to_ranges(indices)
