"""A log-linear latency histogram whose fixed buckets merge exactly across threads and instances.

Durations are counted in nanoseconds. Below 16 ns every value has its own bucket; above,
each power of two is split into 8 equal buckets, so a bucket is at most 12.5% wide and a
quantile read at the bucket's midpoint is within 6.25% of the truth. Every instance uses
the same buckets, so histograms from many threads, processes and machines add up exactly.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping

SUB_BITS = 3
SUB_BUCKETS = 1 << SUB_BITS  # 8 buckets per power of two
_EXACT = SUB_BUCKETS * 2  # values below 16 ns are exact
SIZE = (64 - SUB_BITS) * SUB_BUCKETS + _EXACT  # enough for any 64-bit duration
"""Number of buckets; the caller's path keeps one flat list of this length per arm."""


def index_of(ns: int) -> int:
    """The bucket of a duration in nanoseconds (the caller's path inlines this)."""
    ns = max(ns, 0)
    bits = ns.bit_length()
    if bits <= SUB_BITS + 1:
        return ns
    shift = bits - SUB_BITS - 1
    return (shift << SUB_BITS) + (ns >> shift)


def bounds(index: int) -> tuple[int, int]:
    """The half-open range of nanoseconds [low, high) that a bucket counts."""
    if index < _EXACT:
        return index, index + 1
    shift = (index >> SUB_BITS) - 1
    mantissa = (index & (SUB_BUCKETS - 1)) + SUB_BUCKETS
    return mantissa << shift, (mantissa + 1) << shift


def midpoint(index: int) -> float:
    low, high = bounds(index)
    return low if high - low == 1 else (low + high) / 2


class Histogram:
    """Sparse bucket counts; adding two histograms adds their counts, nothing is approximated."""

    __slots__ = ("_counts",)

    def __init__(self, counts: Mapping[int, int] | Iterable[tuple[int, int]] = ()) -> None:
        self._counts: dict[int, int] = {}
        items = counts.items() if isinstance(counts, Mapping) else counts
        for index, count in items:
            self.add(int(index), int(count))

    @classmethod
    def of_counts(cls, counts: dict[int, int]) -> Histogram:
        """A histogram that takes ``counts`` (bucket -> count, as stored) as its own."""
        histogram = cls.__new__(cls)
        histogram._counts = {index: count for index, count in counts.items() if count}
        return histogram

    def add(self, index: int, count: int = 1) -> None:
        if count:
            self._counts[index] = self._counts.get(index, 0) + count

    def record(self, ns: int) -> None:
        self.add(index_of(ns))

    def merge(self, other: Histogram) -> Histogram:
        counts = self._counts
        for index, count in other._counts.items():
            counts[index] = counts.get(index, 0) + count
        return self

    @property
    def count(self) -> int:
        return sum(self._counts.values())

    def items(self) -> Iterator[tuple[int, int]]:
        """(bucket, count) pairs in bucket order."""
        return iter(sorted(self._counts.items()))

    def quantiles(self, qs: tuple[float, ...]) -> list[float | None]:
        """The q-quantiles (``qs`` ascending) in nanoseconds by nearest rank, in one pass over
        the buckets; None when empty."""
        total = sum(self._counts.values())
        if total == 0:
            return [None] * len(qs)
        ranks = [max(1, math.ceil(q * total)) for q in qs]
        out: list[float | None] = []
        seen = 0
        for index, count in sorted(self._counts.items()):
            seen += count
            while len(out) < len(ranks) and seen >= ranks[len(out)]:
                out.append(midpoint(index))
            if len(out) == len(ranks):
                return out
        raise AssertionError("unreachable: every rank is at most the total")

    def quantile(self, q: float) -> float | None:
        return self.quantiles((q,))[0]

    def quantiles_ms(self, qs: tuple[float, ...]) -> list[float | None]:
        return [None if ns is None else round(ns / 1e6, 6) for ns in self.quantiles(qs)]

    def quantile_ms(self, q: float) -> float | None:
        return self.quantiles_ms((q,))[0]

    def cumulative(self, upper_bounds_seconds: Iterable[float]) -> list[int]:
        """Counts at or below each bound, for Prometheus' ``le`` buckets.

        A bucket straddling a bound is counted above it, so the figures err on the slow side
        by at most one bucket width (12.5%).
        """
        limits = [bound * 1e9 for bound in upper_bounds_seconds]
        out = [0] * len(limits)
        for index, count in self._counts.items():
            high = bounds(index)[1]
            for position, limit in enumerate(limits):
                if high <= limit + 1:
                    out[position] += count
        return out

    def sum_ns(self) -> float:
        """An estimate of the total time observed (midpoints times counts)."""
        return sum(midpoint(index) * count for index, count in self._counts.items())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Histogram) and self._counts == other._counts

    __hash__ = None  # type: ignore[assignment] - mutable

    def __repr__(self) -> str:
        return f"Histogram(count={self.count}, p50={self.quantile(0.5)}, p99={self.quantile(0.99)})"
