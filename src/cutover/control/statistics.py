"""Confidence intervals and a rank test that let rollout checks pass or fail only when confident.

A check compares a measured rate, ratio or latency with a threshold. A point estimate alone
would let "0 drifts in 40 comparisons" pass ``max: 0.001``; the intervals here say how far the
truth could plausibly be from what was counted, so the controller passes a check only when the
whole interval is within the threshold, fails it only when the whole interval is beyond, and
calls it inconclusive otherwise.

Latencies arrive as :class:`~cutover.telemetry.histogram.Histogram` bucket counts, never as raw
samples, so every function here works on grouped counts in time proportional to the number of
buckets, not the number of calls.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from cutover.errors import InvalidInput
from cutover.telemetry.histogram import Histogram

__all__ = [
    "RankTest",
    "Trend",
    "exact_rate_interval",
    "growth_interval",
    "order_statistic_ranks",
    "quantile_interval",
    "rank_test",
    "rate_interval",
    "ratio_interval",
    "sample_quantile_interval",
]


_NO_SCIPY = "judging rollout checks needs SciPy: pip install 'cutover[rollout]'"


def _scipy_special() -> Any:
    """scipy.special, imported on first use: the always-valid bounds, the exact interval and
    the rank test need its functions alone, which load in a third of scipy.stats' second (a
    `cutover rollout tick` from cron pays the import on every run)."""
    try:
        import scipy.special
    except ImportError:
        raise InvalidInput(_NO_SCIPY) from None
    return scipy.special


def _scipy_stats() -> Any:
    """scipy.stats, imported on first use (about a second to load) by the methods that need
    its distributions: the fixed-horizon intervals, order statistics and trends. Commands
    that judge no check (pause, approve, abort) never wait for it."""
    try:
        import scipy.stats
    except ImportError:
        raise InvalidInput(_NO_SCIPY) from None
    return scipy.stats


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be strictly between 0 and 1, got {confidence!r}")


def _two_sided_z(confidence: float) -> float:
    """The standard normal quantile that leaves (1 - confidence) / 2 in each tail."""
    _check_confidence(confidence)
    return float(_scipy_stats().norm.ppf(0.5 + 0.5 * confidence))


def _check_counts(events: int, trials: int) -> None:
    if trials < 0 or not 0 <= events <= trials:
        raise ValueError(f"need 0 <= events <= trials, got {events} of {trials}")


def exact_rate_interval(
    events: int, trials: int, confidence: float = 0.95
) -> tuple[float, float] | None:
    """Two-sided exact (Clopper-Pearson) interval for events / trials, or None if no trials.

    What a check decides on: its coverage is at least ``confidence`` for every true rate, so a
    healthy arm is not failed on one or two events in a short window (Wilson's lower end is
    too high there: 1 event in 176 gives 0.00100, where the exact bound is 0.00014).
    """
    _check_counts(events, trials)
    _check_confidence(confidence)
    if trials == 0:
        return None
    # beta.ppf(q, a, b) is betaincinv(a, b, q) for 0 < q < 1 and a, b > 0, as here, without
    # the argument checks that cost 50 times the computation on a single value.
    betaincinv = _scipy_special().betaincinv

    alpha = 1 - confidence
    low = 0.0 if events == 0 else float(betaincinv(events, trials - events + 1, alpha / 2))
    high = (
        1.0 if events == trials else float(betaincinv(events + 1, trials - events, 1 - alpha / 2))
    )
    return low, high


def rate_interval(events: int, trials: int, confidence: float = 0.95) -> tuple[float, float] | None:
    """Two-sided Wilson score interval for the proportion events / trials, or None if no trials.

    Wilson rather than the textbook normal (Wald) interval because Wald collapses to [0, 0]
    when no events were seen, which is exactly the case a ``max:`` threshold must not pass on
    a handful of trials. The formula and its exact endpoints at 0 and ``trials`` events are
    those of ``scipy.stats.binomtest(k, n).proportion_ci(method="wilson")``; it is written out
    here because binomtest also computes a p-value the controller has no use for.
    """
    _check_counts(events, trials)
    z = _two_sided_z(confidence)
    if trials == 0:
        return None
    n = trials
    p = events / n
    denom = 2 * (n + z * z)
    center = (2 * n * p + z * z) / denom
    delta = z / denom * math.sqrt(4 * n * p * (1 - p) + z * z)
    # The algebra gives exactly 0 and 1 at the extremes; pin them so rounding cannot produce
    # a bound just outside [0, 1] or a lower bound a hair above an observed rate of zero.
    low = 0.0 if events == 0 else max(0.0, center - delta)
    high = 1.0 if events == trials else min(1.0, center + delta)
    return low, high


def ratio_interval(
    events_a: int,
    trials_a: int,
    events_b: int,
    trials_b: int,
    confidence: float = 0.95,
) -> tuple[float, float] | None:
    """Interval for the ratio of proportions (events_a / trials_a) / (events_b / trials_b).

    Method: Katz's log interval. The log of the ratio of two independent binomial proportions
    is approximately normal with variance ``1/a - 1/n_a + 1/b - 1/n_b`` (a, b events; n_a, n_b
    trials), so the interval is ``exp(log(ratio) ± z * sqrt(variance))``.

    Zero events in either arm would make the log and the variance infinite. In that case 0.5 is
    added to every cell of the 2×2 table (Haldane-Anscombe): events become ``a + 0.5`` and
    ``b + 0.5``, trials ``n_a + 1`` and ``n_b + 1``. Adding to both arms keeps the adjustment
    symmetric, so "0 errors in new versus 0 in legacy" gives a finite interval around 1 whose
    width reflects how few trials there were, and "0 versus 30" an upper bound well below 1.

    Returns None when either arm has no trials.
    """
    _check_counts(events_a, trials_a)
    _check_counts(events_b, trials_b)
    z = _two_sided_z(confidence)
    if trials_a == 0 or trials_b == 0:
        return None
    a, n_a, b, n_b = float(events_a), float(trials_a), float(events_b), float(trials_b)
    if events_a == 0 or events_b == 0:
        a, n_a, b, n_b = a + 0.5, n_a + 1.0, b + 0.5, n_b + 1.0
    log_ratio = math.log((a / n_a) / (b / n_b))
    # max(0, ...) only guards rounding: each term is non-negative since events <= trials.
    se = math.sqrt(max(0.0, 1.0 / a - 1.0 / n_a + 1.0 / b - 1.0 / n_b))
    return math.exp(log_ratio - z * se), math.exp(log_ratio + z * se)


def _bucket_of_rank(histogram: Histogram, rank: int) -> int:
    """The bucket holding the order statistic of 1-based ``rank`` (1 <= rank <= count)."""
    seen = 0
    for index, count in histogram.items():
        seen += count
        if seen >= rank:
            return index
    raise ValueError(f"rank {rank} exceeds the {seen} calls counted")


def quantile_interval(
    histogram: Histogram, q: float, confidence: float = 0.95
) -> tuple[float, float] | None:
    """Distribution-free interval, in nanoseconds, for the q-quantile of the latencies counted.

    With n calls, the number of calls below the true q-quantile is binomial(n, q), so the order
    statistics at ranks ``l = binom.ppf(α/2, n, q)`` and ``u = binom.ppf(1 - α/2, n, q) + 1``
    (α = 1 - confidence, ranks from 1) bracket it with probability at least ``confidence``
    whatever the latency distribution. The histogram knows each order statistic only to its
    bucket, so the interval runs from the lower bound of rank l's bucket to the upper bound of
    rank u's bucket: conservative by up to a bucket width on each side, never optimistic.

    Too few calls for the quantile (u > n, e.g. p99 of 50 calls) gives an upper end of
    ``math.inf``: nothing observed bounds it. l < 1 gives a lower end of 0. Returns None when
    the histogram is empty.
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q must be within [0, 1], got {q!r}")
    _check_confidence(confidence)
    n = histogram.count
    if n == 0:
        return None
    return bucketed_order_statistics(histogram, *order_statistic_ranks(n, q, confidence))


def bucketed_order_statistics(
    histogram: Histogram, lower_rank: int, upper_rank: int
) -> tuple[float, float]:
    """From the lower edge of the bucket of the order statistic of rank ``lower_rank`` to the
    upper edge of that of ``upper_rank``: the histogram knows each call only to its bucket,
    so the interval takes both whole buckets (up to 1/64 wider at each end, 1/8 for windows
    stored before schema 7), and is never narrower than the one the raw values would give.
    ``0.0`` below rank 1 and ``math.inf`` beyond the count: nothing observed bounds that end."""
    n = histogram.count
    low = (
        float(histogram.bounds(_bucket_of_rank(histogram, lower_rank))[0])
        if lower_rank >= 1
        else 0.0
    )
    high = (
        float(histogram.bounds(_bucket_of_rank(histogram, upper_rank))[1])
        if upper_rank <= n
        else math.inf
    )
    return low, high


def order_statistic_ranks(n: int, q: float, confidence: float = 0.95) -> tuple[int, int]:
    """The 1-based ranks (l, u) of the order statistics that bracket the q-quantile of ``n``
    draws with probability at least ``confidence``, whatever the distribution: the number of
    draws below the true quantile is binomial(n, q), so ``l = binom.ppf(α/2, n, q)`` and
    ``u = binom.ppf(1 - α/2, n, q) + 1``. ``l < 1`` means nothing observed bounds the quantile
    from below, ``u > n`` that nothing does from above."""
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q must be within [0, 1], got {q!r}")
    _check_confidence(confidence)
    alpha = 1.0 - confidence
    binom = _scipy_stats().binom
    return int(binom.ppf(alpha / 2, n, q)), int(binom.ppf(1 - alpha / 2, n, q)) + 1


def sample_quantile_interval(
    ordered: Sequence[float], q: float, confidence: float = 0.95
) -> tuple[float, float] | None:
    """The distribution-free interval for the q-quantile of raw values sorted ascending: the
    order statistics at :func:`order_statistic_ranks`, exact rather than to a bucket. The lower
    end is ``0.0`` and the upper ``math.inf`` where too few values bound the quantile; None for
    no values."""
    n = len(ordered)
    if n == 0:
        return None
    lower_rank, upper_rank = order_statistic_ranks(n, q, confidence)
    low = float(ordered[lower_rank - 1]) if lower_rank >= 1 else 0.0
    high = float(ordered[upper_rank - 1]) if upper_rank <= n else math.inf
    return low, high


@dataclass(frozen=True, slots=True)
class RankTest:
    """A one-sided Mann-Whitney U test of "new is slower than legacy" over two histograms."""

    n_new: int
    n_legacy: int
    u: float
    """U statistic of new versus legacy: pairs where new is slower, plus half the ties."""
    p_value: float
    """One-sided; the alternative is that new's latencies tend to be larger than legacy's."""
    effect: float
    """Probability of superiority, P(new > legacy) + 0.5 * P(tie) = u / (n_new * n_legacy)."""
    median_ratio: float | None
    """new's median / legacy's median (bucket midpoints); None when either median is 0."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def rank_test(new: Histogram, legacy: Histogram) -> RankTest | None:
    """Mann-Whitney U test that new's latencies are stochastically larger than legacy's.

    Every call in a bucket counts as tied with every other call in that bucket (buckets are up
    to 1.6% wide, 12.5% before schema 7, so finer order is unknown). The statistic, the
    tie-corrected variance and the continuity-corrected normal approximation are computed from
    the grouped counts in one pass over the buckets and match
    ``scipy.stats.mannwhitneyu(new, legacy, alternative="greater", method="asymptotic",
    use_continuity=True)`` on the arrays expanded to one bucket index per call, which would be
    far too large to build for busy windows.

    Returns None when either side is empty. When every call of both arms falls in the same
    bucket the tie-corrected variance is 0 and the normal approximation is undefined (SciPy
    returns NaN); the samples are then indistinguishable, effect is exactly 0.5, and p_value is
    reported as 1.0 (the general rule used is 1.0 when effect <= 0.5, else 0.0).
    """
    n_new, n_legacy = new.count, legacy.count
    if n_new == 0 or n_legacy == 0:
        return None

    merged: dict[int, list[int]] = {}
    for index, count in new.items():
        merged.setdefault(index, [0, 0])[0] += count
    for index, count in legacy.items():
        merged.setdefault(index, [0, 0])[1] += count

    # Python integers keep the sums exact however many calls there are: 2U and the tie term
    # only become floats in the final, correctly rounded divisions.
    twice_u = 0  # each (new, legacy) pair adds 2 if new is in a later bucket, 1 if tied
    tie_term = 0  # Σ (t³ - t) over buckets holding t calls of either arm
    legacy_below = 0
    for index in sorted(merged):
        in_new, in_legacy = merged[index]
        twice_u += in_new * (2 * legacy_below + in_legacy)
        tied = in_new + in_legacy
        tie_term += tied**3 - tied
        legacy_below += in_legacy

    pairs = n_new * n_legacy
    u = twice_u / 2
    effect = twice_u / (2 * pairs)
    n = n_new + n_legacy
    # SciPy's n1*n2/12 * ((n + 1) - tie_term / (n*(n - 1))) over one common denominator.
    variance = pairs * ((n + 1) * n * (n - 1) - tie_term) / (12 * n * (n - 1))
    if variance <= 0:
        p_value = 1.0 if effect <= 0.5 else 0.0
    else:
        # U - mean - 0.5, exactly: subtracting 0.5 always moves towards the larger p-value
        # because the survival function is used, as SciPy does.
        numerator = (twice_u - pairs - 1) / 2
        # norm.sf(z) is ndtr(-z) for a finite z, without the per-call argument handling.
        ndtr = _scipy_special().ndtr

        p_value = float(ndtr(-(numerator / math.sqrt(variance))))
        p_value = min(1.0, max(0.0, p_value))

    median_new, median_legacy = new.quantile(0.5), legacy.quantile(0.5)
    median_ratio = (
        median_new / median_legacy
        if median_new is not None and median_legacy is not None and median_new and median_legacy
        else None
    )
    return RankTest(
        n_new=n_new,
        n_legacy=n_legacy,
        u=u,
        p_value=p_value,
        effect=effect,
        median_ratio=median_ratio,
    )


@dataclass(frozen=True, slots=True)
class Trend:
    """The least-squares trend of one series, relative to its mean level, per ``per`` seconds."""

    estimate: float
    low: float
    high: float
    points: int
    level: float  # the series' mean value, which the slope is relative to


def growth_interval(
    points: Sequence[tuple[float, float]], per: float, confidence: float = 0.95
) -> Trend | None:
    """The ordinary least-squares slope of ``points`` ((time, value) pairs) with its two-sided
    Student t interval at ``confidence``, as a share of the mean value per ``per`` seconds
    (``0.1`` with ``per`` 3600: growing by a tenth of its level an hour).

    The interval assumes independent errors around a straight line; samples of a slowly
    varying gauge are correlated, which makes it narrower than it should be, so judge it
    over a window much longer than the scrape interval. None with fewer than three points, a
    mean level that is not positive, or every point at one time.
    """
    _check_confidence(confidence)
    clean = [(t, v) for t, v in points if math.isfinite(t) and math.isfinite(v)]
    if len(clean) < 3:
        return None
    times = [t for t, _ in clean]
    values = [v for _, v in clean]
    level = sum(values) / len(values)
    if level <= 0 or max(times) == min(times):
        return None
    fit = _scipy_stats().linregress(times, values)
    slope, error = float(fit.slope), float(fit.stderr)
    if not math.isfinite(error):
        error = 0.0
    reach = float(_scipy_stats().t.ppf(1 - (1 - confidence) / 2, len(clean) - 2)) * error
    scale = per / level
    return Trend(
        estimate=slope * scale,
        low=(slope - reach) * scale,
        high=(slope + reach) * scale,
        points=len(clean),
        level=level,
    )
