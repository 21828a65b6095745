"""The latency histogram: buckets tile the line, merge exactly, and quantiles stay within 0.8%."""

from __future__ import annotations

import math
import random

from hypothesis import given
from hypothesis import strategies as st

from cutover.telemetry.histogram import (
    COARSE_BITS,
    SUB_BITS,
    Histogram,
    bounds,
    coarsen,
    index_of,
    midpoint,
)


@given(st.integers(0, 2**63 - 1), st.sampled_from([SUB_BITS, COARSE_BITS]))
def test_every_duration_falls_in_its_bucket_at_most_a_bucket_width_wide(ns: int, bits: int) -> None:
    index = index_of(ns, bits)
    low, high = bounds(index, bits)
    assert low <= ns < high
    assert high - low <= max(1, low >> bits)
    # The midpoint a quantile reports is within half a bucket width of every value it holds.
    assert abs(midpoint(index, bits) - ns) <= max(0.5, ns / (2 << bits))


@given(st.integers(0, 2**62), st.integers(0, 2**62))
def test_bucket_index_is_monotone_in_the_duration(a: int, b: int) -> None:
    low, high = sorted((a, b))
    assert index_of(low) <= index_of(high)
    assert index_of(low, COARSE_BITS) <= index_of(high, COARSE_BITS)


def test_buckets_tile_the_line_without_gaps() -> None:
    for bits in (SUB_BITS, COARSE_BITS):
        last = index_of(2**63 - 1, bits)
        for index in range(last):
            assert bounds(index, bits)[1] == bounds(index + 1, bits)[0]


@given(st.integers(0, 2**62))
def test_a_fine_bucket_lies_wholly_inside_its_coarse_bucket(ns: int) -> None:
    fine = index_of(ns)
    wide = coarsen(fine, SUB_BITS, COARSE_BITS)
    assert wide == index_of(ns, COARSE_BITS)
    low, high = bounds(fine)
    wide_low, wide_high = bounds(wide, COARSE_BITS)
    assert wide_low <= low < high <= wide_high


@given(
    st.lists(st.integers(0, 10**12), max_size=100), st.lists(st.integers(0, 10**12), max_size=100)
)
def test_a_coarse_histogram_merged_with_a_fine_one_is_the_coarse_sum(
    coarse_values: list[int], fine_values: list[int]
) -> None:
    coarse, fine, expected = Histogram(bits=COARSE_BITS), Histogram(), Histogram(bits=COARSE_BITS)
    for ns in coarse_values:
        coarse.record(ns)
        expected.record(ns)
    for ns in fine_values:
        fine.record(ns)
        expected.record(ns)
    either_way = Histogram(bits=COARSE_BITS).merge(coarse).merge(fine)
    other_way = Histogram().merge(fine).merge(coarse)
    if coarse_values:
        assert other_way == expected
    assert either_way == expected


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


def test_quantiles_are_within_a_bucket_half_width_of_the_truth() -> None:
    rng = random.Random(7)
    values = sorted(int(rng.lognormvariate(13, 1.2)) for _ in range(50_000))
    hist = Histogram()
    for ns in values:
        hist.record(ns)
    for q in (0.5, 0.95, 0.99, 0.999):
        truth = values[int(q * len(values)) - 1]
        estimate = hist.quantile(q)
        assert estimate is not None
        assert abs(estimate - truth) / truth <= 1 / 128 + 1e-9


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


@given(
    st.lists(
        st.tuples(st.sampled_from(["add", "merge", "read"]), st.integers(0, 10**9)),
        max_size=40,
    )
)
def test_reads_between_changes_see_every_change(steps: list[tuple[str, int]]) -> None:
    # The buckets are sorted once and kept until the next change: no read may see a stale order.
    kept, fresh = Histogram(), []
    for step, ns in steps:
        if step == "add":
            kept.record(ns)
            fresh.append(ns)
        elif step == "merge":
            other = Histogram()
            other.record(ns)
            other.record(ns // 3)
            kept.merge(other)
            fresh += [ns, ns // 3]
        else:
            rebuilt = Histogram()
            for value in fresh:
                rebuilt.record(value)
            assert list(kept.items()) == list(rebuilt.items())
            assert kept.quantiles((0.5, 0.99)) == rebuilt.quantiles((0.5, 0.99))
