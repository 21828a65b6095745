"""A log-linear latency histogram whose fixed buckets merge exactly across threads and instances.

Durations are counted in nanoseconds. Below 128 ns every value has its own bucket; above,
each power of two is split into 64 equal buckets, so a bucket is at most 1/64 (1.6%) wide and a
quantile read at the bucket's midpoint is within 0.8% of the truth. Every instance uses the
same buckets, so histograms from many threads, processes and machines add up exactly. Only
the buckets that counted something are kept, in memory and in the store, so the fine
resolution costs what the latencies actually spread over, not the whole 64-bit range.

Stores written before schema 7 hold coarser histograms: 8 buckets per power of two (12.5%
wide). Each coarse bucket is the union of eight fine ones, so a fine histogram coarsens
exactly, and adding a coarse histogram to a fine one gives the coarse sum: nothing read is
ever made to look finer than it was counted.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Iterable, Iterator, Mapping

SUB_BITS = 6
"""log2 of the buckets per power of two of the histograms counted now (64)."""
COARSE_BITS = 3
"""log2 of the buckets per power of two of the histograms stored before schema 7 (8)."""


def index_of(ns: int, bits: int = SUB_BITS) -> int:
    """The bucket of a duration in nanoseconds (the caller's path inlines this)."""
    ns = max(ns, 0)
    length = ns.bit_length()
    if length <= bits + 1:
        return ns
    shift = length - bits - 1
    return (shift << bits) + (ns >> shift)


def bounds(index: int, bits: int = SUB_BITS) -> tuple[int, int]:
    """The half-open range of nanoseconds [low, high) that a bucket counts."""
    if index < 2 << bits:
        return index, index + 1
    shift = (index >> bits) - 1
    mantissa = (index & ((1 << bits) - 1)) + (1 << bits)
    return mantissa << shift, (mantissa + 1) << shift


def midpoint(index: int, bits: int = SUB_BITS) -> float:
    low, high = bounds(index, bits)
    return low if high - low == 1 else (low + high) / 2


def coarsen(index: int, bits: int, to_bits: int) -> int:
    """The bucket at ``to_bits`` (<= ``bits``) that holds the whole of bucket ``index``."""
    return index_of(bounds(index, bits)[0], to_bits)


def edges(bits: int, low_ns: int, high_ns: int) -> list[int]:
    """The upper edges, in nanoseconds, of the buckets at resolution ``bits`` from the one
    holding ``low_ns`` to the one holding ``high_ns``: each edge is an edge of the buckets at
    every finer resolution too, so counts cut at these edges are sums of whole buckets."""
    return [bounds(i, bits)[1] for i in range(index_of(low_ns, bits), index_of(high_ns, bits) + 1)]


class Histogram:
    """Sparse bucket counts; adding two histograms adds their counts, nothing is approximated.

    ``bits`` is the resolution its buckets are numbered in: :data:`SUB_BITS` for everything
    counted now, :data:`COARSE_BITS` for windows stored before schema 7.
    """

    __slots__ = ("_counts", "_ordered", "bits")

    def __init__(
        self,
        counts: Mapping[int, int] | Iterable[tuple[int, int]] = (),
        bits: int = SUB_BITS,
    ) -> None:
        self._counts: dict[int, int] = {}
        self._ordered: list[tuple[int, int]] | None = None
        self.bits = bits
        items = counts.items() if isinstance(counts, Mapping) else counts
        for index, count in items:
            self.add(int(index), int(count))

    @classmethod
    def of_counts(cls, counts: dict[int, int], bits: int = SUB_BITS) -> Histogram:
        """A histogram that takes ``counts`` (bucket -> count, as stored) as its own."""
        histogram = cls.__new__(cls)
        histogram._counts = {index: count for index, count in counts.items() if count}
        histogram._ordered = None
        histogram.bits = bits
        return histogram

    def add(self, index: int, count: int = 1) -> None:
        if count:
            self._counts[index] = self._counts.get(index, 0) + count
            self._ordered = None

    def record(self, ns: int) -> None:
        self.add(index_of(ns, self.bits))

    def coarsened(self, bits: int) -> Histogram:
        """This histogram at the coarser resolution ``bits`` (itself when already there)."""
        if bits >= self.bits:
            return self
        out: dict[int, int] = {}
        for index, count in self._counts.items():
            wider = coarsen(index, self.bits, bits)
            out[wider] = out.get(wider, 0) + count
        return Histogram.of_counts(out, bits)

    def merge(self, other: Histogram) -> Histogram:
        """Add ``other``'s counts to this one, at the coarser of the two resolutions."""
        if not other._counts:
            return self
        self._ordered = None
        if not self._counts and other.bits <= self.bits:  # the first of a sum: a copy, in C
            self._counts = dict(other._counts)
            self.bits = other.bits
            return self
        if other.bits < self.bits:
            self._counts = self.coarsened(other.bits)._counts
            self.bits = other.bits
        elif other.bits > self.bits:
            other = other.coarsened(self.bits)
        counts = self._counts
        for index, count in other._counts.items():
            counts[index] = counts.get(index, 0) + count
        return self

    @property
    def count(self) -> int:
        return sum(self._counts.values())

    @property
    def buckets(self) -> int:
        """How many buckets counted something."""
        return len(self._counts)

    def items(self) -> Iterator[tuple[int, int]]:
        """(bucket, count) pairs in bucket order."""
        return iter(self._in_order())

    def _in_order(self) -> list[tuple[int, int]]:
        """The buckets sorted once until the next change: a check reads the same summed
        histogram's quantiles, intervals and ranks several times over."""
        if self._ordered is None:
            self._ordered = sorted(self._counts.items())
        return self._ordered

    def bounds(self, index: int) -> tuple[int, int]:
        """The range of nanoseconds one of this histogram's buckets counts."""
        return bounds(index, self.bits)

    def midpoint(self, index: int) -> float:
        return midpoint(index, self.bits)

    @property
    def width(self) -> float:
        """The widest a bucket is, relative to its lower edge: 1/64 now, 1/8 before schema 7."""
        return 1.0 / (1 << self.bits)

    def quantiles(self, qs: tuple[float, ...]) -> list[float | None]:
        """The q-quantiles (``qs`` ascending) in nanoseconds by nearest rank, in one pass over
        the buckets; None when empty."""
        total = sum(self._counts.values())
        if total == 0:
            return [None] * len(qs)
        ranks = [max(1, math.ceil(q * total)) for q in qs]
        out: list[float | None] = []
        seen = 0
        for index, count in self._in_order():
            seen += count
            while len(out) < len(ranks) and seen >= ranks[len(out)]:
                out.append(midpoint(index, self.bits))
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
        """Counts at or below each bound (ascending), for Prometheus' ``le`` buckets.

        A bucket straddling a bound is counted above it, so the figures err on the slow side
        by at most one bucket width; on the bounds of :func:`edges` no bucket straddles.
        """
        limits = [bound * 1e9 + 1 for bound in upper_bounds_seconds]
        first = [0] * (len(limits) + 1)  # counts whose first bound at or above is each limit
        for index, count in self._counts.items():
            first[bisect.bisect_left(limits, bounds(index, self.bits)[1])] += count
        return list(itertools.accumulate(first[:-1]))

    def sum_ns(self) -> float:
        """An estimate of the total time observed (midpoints times counts)."""
        return sum(midpoint(index, self.bits) * count for index, count in self._counts.items())

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Histogram)
            and self.bits == other.bits
            and self._counts == other._counts
        )

    __hash__ = None  # type: ignore[assignment] - mutable

    def __repr__(self) -> str:
        return f"Histogram(count={self.count}, p50={self.quantile(0.5)}, p99={self.quantile(0.99)})"
