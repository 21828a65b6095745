"""The latency histogram: buckets tile the line, merge exactly, and quantiles stay within 6.25%."""

from __future__ import annotations

import math
import random

from hypothesis import given
from hypothesis import strategies as st

from cutover.telemetry.histogram import SIZE, Histogram, bounds, index_of, midpoint


@given(st.integers(0, 2**63 - 1))
def test_every_duration_falls_in_its_bucket(ns: int) -> None:
    index = index_of(ns)
    assert 0 <= index < SIZE
    low, high = bounds(index)
    assert low <= ns < high
    assert high - low <= max(1, low / 8)


def test_buckets_tile_the_line_without_gaps() -> None:
    for index in range(SIZE - 1):
        assert bounds(index)[1] == bounds(index + 1)[0]


@given(
    st.lists(st.integers(0, 10**12), max_size=200), st.lists(st.integers(0, 10**12), max_size=200)
)
def test_merging_equals_recording_everything_in_one(a: list[int], b: list[int]) -> None:
    left, right, together = Histogram(), Histogram(), Histogram()
    for ns in a:
        left.record(ns)
        together.record(ns)
    for ns in b:
        right.record(ns)
        together.record(ns)
    assert left.merge(right) == together
    assert together.count == len(a) + len(b)


def test_quantiles_are_within_a_sixteenth_of_the_truth() -> None:
    rng = random.Random(7)
    values = sorted(int(rng.lognormvariate(13, 1.2)) for _ in range(50_000))
    hist = Histogram()
    for ns in values:
        hist.record(ns)
    for q in (0.5, 0.95, 0.99, 0.999):
        truth = values[int(q * len(values)) - 1]
        estimate = hist.quantile(q)
        assert estimate is not None
        assert abs(estimate - truth) / truth <= 0.0625 + 1e-9


def test_empty_histogram_has_no_quantiles() -> None:
    assert Histogram().quantile(0.99) is None
    assert Histogram().quantile_ms(0.5) is None


def test_cumulative_buckets_for_prometheus_are_monotone_and_conservative() -> None:
    hist = Histogram()
    for ns in (500_000, 900_000, 1_500_000, 20_000_000):
        hist.record(ns)
    cumulative = hist.cumulative([0.001, 0.01, 0.1])
    assert cumulative == [2, 3, 4]


@given(
    st.dictionaries(st.integers(0, 300), st.integers(1, 50), min_size=1, max_size=40),
    st.lists(st.floats(0.001, 1.0), min_size=1, max_size=5),
)
def test_quantiles_in_one_pass_are_the_nearest_ranks(
    counts: dict[int, int], qs: list[float]
) -> None:
    histogram = Histogram(counts)
    values = sorted(index for index, count in counts.items() for _ in range(count))
    expected = [midpoint(values[max(1, math.ceil(q * len(values))) - 1]) for q in sorted(qs)]
    assert histogram.quantiles(tuple(sorted(qs))) == expected
    assert histogram.quantiles_ms(tuple(sorted(qs))) == [round(v / 1e6, 6) for v in expected]
