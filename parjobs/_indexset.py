"""A compact set of non-negative task indices: one bit per index.

A million completed indices take 125 KB; membership is a byte lookup; the set converts to and
from half-open ranges, which is how the store keeps it (completions arrive mostly in order, so a
million of them usually compact to a handful of rows).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

# Tokens of a bitmap: runs of full bytes, runs of empty bytes, single partial bytes.
_TOKENS = re.compile(rb"\xff+|\x00+|[\x01-\xfe]", re.DOTALL)


class IndexSet:
    """A growable bitmap of ints >= 0 with a maintained count."""

    __slots__ = ("_bits", "_count")

    def __init__(self, ranges: Iterable[tuple[int, int]] = ()) -> None:
        self._bits = bytearray()
        self._count = 0
        for start, stop in ranges:
            self.add_range(start, stop)

    def __len__(self) -> int:
        return self._count

    def __contains__(self, index: object) -> bool:
        if not isinstance(index, int) or index < 0:
            return False
        byte = index >> 3
        return byte < len(self._bits) and bool(self._bits[byte] & (1 << (index & 7)))

    def _grow(self, nbytes: int) -> None:
        if nbytes > len(self._bits):
            self._bits.extend(bytes(max(nbytes - len(self._bits), len(self._bits) // 2)))

    def add(self, index: int) -> bool:
        """Add ``index``; return True if it was not there before."""
        if index < 0:
            raise ValueError(f"task index must be >= 0, got {index}")
        byte, mask = index >> 3, 1 << (index & 7)
        bits = self._bits
        if byte >= len(bits):
            self._grow(byte + 1)
        if bits[byte] & mask:
            return False
        bits[byte] |= mask
        self._count += 1
        return True

    def add_each(self, indices: Iterable[int]) -> list[int]:
        """Add each of ``indices``; return those that were not there before (in order).
        `add` for many at once: a `Bundle`'s tasks are booked with one call, not one each."""
        bits, added = self._bits, []
        try:
            for index in indices:
                if index < 0:
                    raise ValueError(f"task index must be >= 0, got {index}")
                byte, mask = index >> 3, 1 << (index & 7)
                if byte >= len(bits):
                    self._grow(byte + 1)  # (in place: ``bits`` is still the set's)
                if not bits[byte] & mask:
                    bits[byte] |= mask
                    added.append(index)
        finally:
            self._count += len(added)  # (those added before a bad index, too)
        return added

    def add_run(self, start: int, stop: int) -> bool:
        """Add every index in ``range(start, stop)`` if none of them is a member (True);
        otherwise add nothing (False). A `Bundle`'s booking: its tasks' indices are mostly
        one run, none done yet, and set with a few int operations rather than one by one
        (`add_each`, ~0.5 us an index)."""
        if start < 0 or stop <= start:
            raise ValueError(f"bad index run [{start}, {stop})")
        lo, hi = start >> 3, ((stop - 1) >> 3) + 1
        self._grow(hi)
        bits = self._bits
        old = int.from_bytes(bits[lo:hi], "little")
        mask = ((1 << (stop - start)) - 1) << (start & 7)
        if old & mask:
            return False
        bits[lo:hi] = (old | mask).to_bytes(hi - lo, "little")
        self._count += stop - start
        return True

    def add_range(self, start: int, stop: int) -> None:
        """Add every index in ``range(start, stop)``."""
        if start < 0 or stop < start:
            raise ValueError(f"bad index range [{start}, {stop})")
        self._grow((stop + 7) >> 3)
        first_full, last_full = (start + 7) >> 3, stop >> 3
        if first_full >= last_full:
            for i in range(start, stop):
                self.add(i)
            return
        for i in range(start, first_full << 3):
            self.add(i)
        for i in range(last_full << 3, stop):
            self.add(i)
        segment = self._bits[first_full:last_full]
        self._count += (last_full - first_full) * 8 - _popcount(segment)
        self._bits[first_full:last_full] = b"\xff" * (last_full - first_full)

    def ranges(self) -> Iterator[tuple[int, int]]:
        """The members as sorted, maximal half-open ranges."""
        start = -1
        bits = bytes(self._bits)  # a snapshot: the set may grow while this is consumed
        for m in _TOKENS.finditer(bits):
            base = m.start() * 8
            tok = m.group()
            if tok[0] == 0xFF:
                if start < 0:
                    start = base
            elif tok[0] == 0:
                if start >= 0:
                    yield start, base
                    start = -1
            else:
                value = tok[0]
                for bit in range(8):
                    if value & (1 << bit):
                        if start < 0:
                            start = base + bit
                    elif start >= 0:
                        yield start, base + bit
                        start = -1
        if start >= 0:
            yield start, len(bits) * 8

    def missing(self, stop: int) -> Iterator[int]:
        """Indices in ``range(stop)`` that are not members, ascending. Costs O(gaps + ranges),
        so skipping a million members takes milliseconds."""
        pos = 0
        for begin, end in self.ranges():
            if begin >= stop:
                break
            yield from range(pos, begin)
            pos = end
        yield from range(pos, stop)

    def __repr__(self) -> str:
        return f"IndexSet(len={self._count})"


def _popcount(data: bytes | bytearray) -> int:
    return int.from_bytes(data, "little").bit_count()


def merged(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Disjoint half-open ranges, sorted and coalesced where one ends as the next starts."""
    out: list[tuple[int, int]] = []
    for start, stop in sorted(ranges):
        if out and out[-1][1] == start:
            out[-1] = (out[-1][0], stop)
        else:
            out.append((start, stop))
    return out


def to_ranges(indices: Iterable[int]) -> list[tuple[int, int]]:
    """Coalesce arbitrary indices into sorted, maximal half-open ranges."""
    out: list[tuple[int, int]] = []
    for i in sorted(set(indices)):
        if out and out[-1][1] == i:
            out[-1] = (out[-1][0], i + 1)
        else:
            out.append((i, i + 1))
    return out
