"""Rollout statistics: intervals cover what they claim, and the rank test matches SciPy exactly."""

from __future__ import annotations

import math
import sys
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import special, stats

from cutover.control.statistics import (
    RankTest,
    exact_rate_interval,
    order_statistic_ranks,
    quantile_interval,
    rank_test,
    rate_interval,
    ratio_interval,
)
from cutover.errors import InvalidInput
from cutover.telemetry.histogram import Histogram, bounds, index_of


def histogram_of(latencies_ns: np.ndarray) -> Histogram:
    histogram = Histogram()
    for ns in latencies_ns:
        histogram.record(int(ns))
    return histogram


def expanded(histogram: Histogram) -> np.ndarray:
    """One element per call: the call's bucket index, which is all SciPy needs to rank it."""
    pairs = list(histogram.items())
    return np.repeat([index for index, _ in pairs], [count for _, count in pairs])


def lognormal_ns(rng: np.random.Generator, median_ns: float, sigma: float, n: int) -> np.ndarray:
    return np.rint(rng.lognormal(math.log(median_ns), sigma, n)).astype(np.int64)


def assert_matches_scipy(new: Histogram, legacy: Histogram) -> RankTest:
    result = rank_test(new, legacy)
    assert result is not None
    reference = stats.mannwhitneyu(
        expanded(new),
        expanded(legacy),
        alternative="greater",
        method="asymptotic",
        use_continuity=True,
    )
    assert result.u == pytest.approx(float(reference.statistic), rel=1e-12)
    if math.isnan(reference.pvalue):  # every call in one bucket: SciPy has no variance to use
        assert result.effect == 0.5
        assert result.p_value == 1.0
    else:
        assert math.isclose(result.p_value, float(reference.pvalue), rel_tol=1e-9, abs_tol=1e-300)
    assert result.effect == pytest.approx(result.u / (result.n_new * result.n_legacy))
    return result


# --- rate_interval ---------------------------------------------------------------------------


@pytest.mark.parametrize("confidence", [0.8, 0.9, 0.95, 0.99, 0.999])
@pytest.mark.parametrize(
    ("events", "trials"), [(0, 1), (1, 1), (0, 40), (3, 40), (40, 40), (17, 1000), (5, 10**6)]
)
def test_wilson_agrees_with_scipy(events: int, trials: int, confidence: float) -> None:
    expected = stats.binomtest(events, trials).proportion_ci(
        confidence_level=confidence, method="wilson"
    )
    interval = rate_interval(events, trials, confidence)
    assert interval is not None
    assert interval[0] == pytest.approx(expected.low, rel=1e-12, abs=1e-15)
    assert interval[1] == pytest.approx(expected.high, rel=1e-12, abs=1e-15)


def test_no_events_in_few_trials_is_not_confidently_below_a_small_threshold() -> None:
    interval = rate_interval(0, 40)
    assert interval is not None
    low, high = interval
    assert low == 0.0
    assert high > 0.05  # so "0 drifts in 40" cannot pass max: 0.001


def test_no_events_in_many_trials_is_confidently_below_a_small_threshold() -> None:
    interval = rate_interval(0, 10_000)
    assert interval is not None
    assert interval[1] < 0.001


@pytest.mark.parametrize(
    ("events", "trials", "low", "high"),
    [
        # Newcombe (1998), "Two-sided confidence intervals for the single proportion",
        # Table I, method 3 (Wilson score without continuity correction).
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0, 0.1611),
        (1, 29, 0.0061, 0.1718),
    ],
)
def test_wilson_textbook_values(events: int, trials: int, low: float, high: float) -> None:
    interval = rate_interval(events, trials)
    assert interval is not None
    assert interval[0] == pytest.approx(low, abs=5e-5)
    assert interval[1] == pytest.approx(high, abs=5e-5)


def test_rate_interval_without_trials_is_none() -> None:
    assert rate_interval(0, 0) is None


@pytest.mark.parametrize(
    ("events", "trials", "confidence"), [(-1, 10, 0.95), (11, 10, 0.95), (1, 10, 1.0)]
)
def test_rate_interval_rejects_impossible_input(
    events: int, trials: int, confidence: float
) -> None:
    with pytest.raises(ValueError):
        rate_interval(events, trials, confidence)


@settings(deadline=None)
@given(
    st.integers(1, 10**7).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))),
    st.floats(0.5, 0.9999),
)
def test_rate_interval_contains_the_observed_rate(
    counts: tuple[int, int], confidence: float
) -> None:
    events, trials = counts
    interval = rate_interval(events, trials, confidence)
    assert interval is not None
    low, high = interval
    assert 0.0 <= low <= events / trials <= high <= 1.0


# --- ratio_interval --------------------------------------------------------------------------


def test_ratio_interval_contains_one_for_equal_rates() -> None:
    interval = ratio_interval(50, 1000, 50, 1000)
    assert interval is not None
    assert interval[0] < 1.0 < interval[1]


def test_ratio_interval_covers_the_true_ratio_about_as_often_as_claimed() -> None:
    rng = np.random.default_rng(7)
    trials, rate_a, rate_b, runs = 2000, 0.02, 0.01, 400
    covered = 0
    for events_a, events_b in zip(
        rng.binomial(trials, rate_a, runs), rng.binomial(trials, rate_b, runs), strict=True
    ):
        interval = ratio_interval(int(events_a), trials, int(events_b), trials)
        assert interval is not None
        covered += interval[0] <= rate_a / rate_b <= interval[1]
    assert 0.92 <= covered / runs <= 0.98


def test_ratio_interval_excludes_one_for_clearly_different_rates() -> None:
    higher = ratio_interval(200, 10_000, 100, 10_000)
    lower = ratio_interval(100, 10_000, 200, 10_000)
    assert higher is not None
    assert lower is not None
    assert higher[0] > 1.0
    assert lower[1] < 1.0


def test_ratio_interval_matches_katz_by_hand() -> None:
    # 10/100 over 20/100: ratio 0.5, log standard error sqrt(1/10 - 1/100 + 1/20 - 1/100).
    se = math.sqrt(0.13)
    z = 1.959963984540054
    interval = ratio_interval(10, 100, 20, 100)
    assert interval is not None
    assert interval[0] == pytest.approx(0.5 * math.exp(-z * se), rel=1e-12)
    assert interval[1] == pytest.approx(0.5 * math.exp(z * se), rel=1e-12)


def test_ratio_interval_stays_finite_and_meaningful_with_zero_events() -> None:
    both_zero = ratio_interval(0, 100, 0, 100)
    assert both_zero is not None
    assert 0.0 < both_zero[0] < 1.0 < both_zero[1] < math.inf
    # No events on either side say nothing about the ratio, however many trials: the interval
    # stays wide (about 1/50 to 50), so a ratio check there is inconclusive, never a pass.
    more = ratio_interval(0, 100_000, 0, 100_000)
    assert more is not None
    assert more[0] < 0.05
    assert more[1] > 20

    none_new = ratio_interval(0, 1000, 30, 1000)
    assert none_new is not None
    assert 0.0 < none_new[0] <= none_new[1] < 1.0

    none_legacy = ratio_interval(30, 1000, 0, 1000)
    assert none_legacy is not None
    assert 1.0 < none_legacy[0] <= none_legacy[1] < math.inf


def test_ratio_interval_without_trials_is_none() -> None:
    assert ratio_interval(0, 0, 1, 10) is None
    assert ratio_interval(1, 10, 0, 0) is None


# --- quantile_interval -----------------------------------------------------------------------


@pytest.mark.parametrize("q", [0.5, 0.9, 0.95, 0.99])
def test_quantile_interval_contains_the_exact_quantile_of_the_data(q: float) -> None:
    rng = np.random.default_rng(11)
    latencies = lognormal_ns(rng, 2e6, 0.6, 5000)
    histogram = histogram_of(latencies)
    interval = quantile_interval(histogram, q)
    assert interval is not None
    low, high = interval
    for method in ("linear", "inverted_cdf", "nearest"):
        assert low <= np.quantile(latencies, q, method=method) <= high
    estimate = histogram.quantile(q)
    assert estimate is not None
    assert low <= estimate <= high
    # Ends fall on bucket boundaries.
    assert bounds(index_of(int(low)))[0] == low
    assert bounds(index_of(int(high) - 1))[1] == high


def test_quantile_interval_covers_the_true_quantile_as_often_as_claimed() -> None:
    rng = np.random.default_rng(3)
    median_ns, sigma, q, runs = 1e6, 0.5, 0.9, 200
    truth = median_ns * math.exp(sigma * stats.norm.ppf(q))
    covered = 0
    for _ in range(runs):
        interval = quantile_interval(histogram_of(lognormal_ns(rng, median_ns, sigma, 300)), q)
        assert interval is not None
        covered += interval[0] <= truth <= interval[1]
    assert covered / runs >= 0.93


def test_quantile_interval_is_unbounded_above_without_enough_samples() -> None:
    histogram = histogram_of(lognormal_ns(np.random.default_rng(5), 1e6, 0.3, 50))
    interval = quantile_interval(histogram, 0.99)
    assert interval is not None
    assert interval[0] > 0.0
    assert interval[1] == math.inf
    low_tail = quantile_interval(histogram, 0.01)
    assert low_tail is not None
    assert low_tail[0] == 0.0
    assert low_tail[1] < math.inf


def test_quantile_interval_of_an_empty_histogram_is_none() -> None:
    assert quantile_interval(Histogram(), 0.5) is None


def test_quantile_interval_rejects_a_quantile_outside_zero_to_one() -> None:
    with pytest.raises(ValueError):
        quantile_interval(Histogram({100: 5}), 1.5)


@settings(deadline=None)
@given(
    st.dictionaries(st.integers(0, 400), st.integers(1, 1000), min_size=1, max_size=20),
    st.floats(0.0, 1.0),
    st.floats(0.5, 0.999),
)
def test_quantile_interval_is_ordered(counts: dict[int, int], q: float, confidence: float) -> None:
    interval = quantile_interval(Histogram(counts), q, confidence)
    assert interval is not None
    assert 0.0 <= interval[0] <= interval[1]


# --- rank_test -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seed", "n_new", "n_legacy", "spread", "shift"),
    [
        (0, 300, 300, 40, 0),  # many buckets, same distribution
        (1, 1000, 37, 40, 3),  # unequal sizes, new slower
        (2, 25, 900, 40, -5),  # unequal sizes, new faster
        (3, 2000, 1500, 3, 0),  # heavy ties: three buckets
        (4, 2000, 1500, 2, 1),  # heavy ties, new one bucket slower
        (5, 5, 3, 1, 0),  # tiny samples
        (6, 400, 400, 4, 10),  # no overlap at all
    ],
)
def test_rank_test_equals_scipy_on_the_expanded_calls(
    seed: int, n_new: int, n_legacy: int, spread: int, shift: int
) -> None:
    rng = np.random.default_rng(seed)
    base = 160  # a bucket around 100 ns; only the order of buckets matters
    new = Histogram()
    legacy = Histogram()
    for index in base + shift + rng.integers(0, spread, n_new):
        new.add(int(index))
    for index in base + rng.integers(0, spread, n_legacy):
        legacy.add(int(index))
    assert_matches_scipy(new, legacy)


def test_rank_test_detects_a_one_and_a_half_times_slowdown() -> None:
    rng = np.random.default_rng(21)
    legacy = histogram_of(lognormal_ns(rng, 1e6, 0.1, 3000))
    new = histogram_of(lognormal_ns(rng, 1.5e6, 0.1, 3000))
    result = assert_matches_scipy(new, legacy)
    assert result.p_value < 1e-6
    assert result.effect > 0.9
    assert result.median_ratio == pytest.approx(1.5, rel=0.15)
    # The other way round the same data is no evidence that new is slower.
    reverse = rank_test(legacy, new)
    assert reverse is not None
    assert reverse.p_value > 0.99
    assert reverse.effect < 0.1


def test_rank_test_is_calibrated_when_nothing_changed() -> None:
    p_values = []
    effects = []
    for seed in range(200):
        rng = np.random.default_rng(1000 + seed)
        result = rank_test(
            histogram_of(lognormal_ns(rng, 1e6, 0.3, 400)),
            histogram_of(lognormal_ns(rng, 1e6, 0.3, 400)),
        )
        assert result is not None
        p_values.append(result.p_value)
        effects.append(result.effect)
    share_significant = sum(p < 0.01 for p in p_values) / len(p_values)
    assert share_significant < 0.05
    assert 0.3 < float(np.median(p_values)) < 0.7  # roughly uniform, not piled up at either end
    assert sum(p < 0.5 for p in p_values) / len(p_values) == pytest.approx(0.5, abs=0.15)
    assert float(np.mean(effects)) == pytest.approx(0.5, abs=0.01)


def test_rank_test_handles_tens_of_millions_of_calls_without_expanding_them() -> None:
    per_arm = 10_000_000
    buckets = range(400, 450)  # about a power of two of buckets, ~ 1 ms to 2 ms
    same = Histogram({index: per_arm // len(buckets) for index in buckets})
    slower = Histogram({index + 1: per_arm // len(buckets) for index in buckets})
    started = time.perf_counter()
    unchanged = rank_test(same, Histogram({index: per_arm // len(buckets) for index in buckets}))
    shifted = rank_test(slower, same)
    elapsed = time.perf_counter() - started
    assert elapsed < 0.5
    assert unchanged is not None
    assert shifted is not None
    assert unchanged.n_new == unchanged.n_legacy == per_arm
    assert unchanged.u == per_arm * per_arm / 2  # exact: the sums are kept in integers
    assert unchanged.effect == 0.5
    assert 0.5 < unchanged.p_value < 0.5001  # the continuity correction only nudges it up
    # One bucket slower over 50 equally filled buckets: new is slower when its bucket is at or
    # above legacy's before the shift (0.5 + 0.5/50) and tied in 49 of the 2500 bucket pairs.
    assert shifted.effect == pytest.approx(0.5 + 0.5 / 50 + 0.5 * 49 / 2500, rel=1e-12)
    assert shifted.p_value == 0.0  # twenty million calls make a 2% shift unmistakable


def test_rank_test_with_every_call_in_one_bucket_passes_nothing() -> None:
    result = assert_matches_scipy(Histogram({300: 40}), Histogram({300: 7}))
    assert result.effect == 0.5
    assert result.p_value == 1.0
    assert result.median_ratio == 1.0


def test_rank_test_of_an_empty_side_is_none() -> None:
    assert rank_test(Histogram(), Histogram({300: 5})) is None
    assert rank_test(Histogram({300: 5}), Histogram()) is None


def test_rank_test_median_ratio_and_json() -> None:
    new = Histogram({200: 3})
    legacy = Histogram({192: 3})
    result = rank_test(new, legacy)
    assert result is not None
    low_new, high_new = bounds(200)
    low_legacy, high_legacy = bounds(192)
    assert result.median_ratio == pytest.approx((low_new + high_new) / (low_legacy + high_legacy))
    assert result.to_json() == {
        "n_new": 3,
        "n_legacy": 3,
        "u": 9.0,
        "p_value": result.p_value,
        "effect": 1.0,
        "median_ratio": result.median_ratio,
    }
    # A median in the zero-nanosecond bucket has no meaningful ratio.
    zero = rank_test(Histogram({0: 3}), legacy)
    assert zero is not None
    assert zero.median_ratio is None


@settings(deadline=None, max_examples=150)
@given(
    st.dictionaries(st.integers(0, 30), st.integers(1, 40), min_size=1, max_size=12),
    st.dictionaries(st.integers(0, 30), st.integers(1, 40), min_size=1, max_size=12),
)
def test_rank_test_equals_scipy_for_any_small_histograms(
    new: dict[int, int], legacy: dict[int, int]
) -> None:
    assert_matches_scipy(Histogram(new), Histogram(legacy))


@pytest.mark.parametrize(("events", "trials"), [(0, 40), (1, 176), (3, 30), (40, 40), (7, 5000)])
def test_exact_interval_agrees_with_scipy(events: int, trials: int) -> None:
    from scipy.stats import binomtest

    from cutover.control.statistics import exact_rate_interval

    expected = binomtest(events, trials).proportion_ci(0.95, method="exact")
    low, high = exact_rate_interval(events, trials)  # type: ignore[misc]
    assert low == pytest.approx(expected.low, abs=1e-12)
    assert high == pytest.approx(expected.high, abs=1e-12)


def test_the_exact_interval_and_the_rank_test_are_scipys_to_the_last_bit() -> None:
    """They call SciPy's special functions without its per-call argument handling: a decision
    must not move by a bit for it."""
    from cutover.control.statistics import exact_rate_interval

    rng = np.random.default_rng(11)
    for _ in range(300):
        trials = int(rng.choice([1, 7, 176, 5000, 10**6, 10**9]))
        events = int(rng.choice([0, 1, trials, rng.integers(0, trials + 1)]))
        confidence = float(rng.choice([0.9, 0.95, 0.99]))
        alpha = 1 - confidence
        low = 0.0 if events == 0 else stats.beta.ppf(alpha / 2, events, trials - events + 1)
        high = (
            1.0 if events == trials else stats.beta.ppf(1 - alpha / 2, events + 1, trials - events)
        )
        assert exact_rate_interval(events, trials, confidence) == (float(low), float(high))
    for z in [*rng.normal(0, 3, 300), 0.0, -38.5, 38.5]:
        assert float(special.ndtr(-z)) == float(stats.norm.sf(z))


@pytest.mark.parametrize("module", ["scipy.special", "scipy.stats"])
def test_without_scipy_a_check_says_which_extra_to_install(
    module: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # `import` of it now raises ImportError
    with pytest.raises(InvalidInput, match=r"needs SciPy: pip install 'cutover\[rollout\]'"):
        if module == "scipy.special":
            exact_rate_interval(1, 10)  # the always-valid bounds and the rank test too
        else:
            order_statistic_ranks(10, 0.5)
