"""Checks judged with confidence: pass, fail or inconclusive, each with the evidence behind it."""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cutover.control.plan import Check, Method, Metric, Plan
from cutover.control.sequential import (
    REFERENCE,
    sequential_quantile_interval,
    sequential_rate_interval,
)
from cutover.control.statistics import (
    exact_rate_interval,
    growth_interval,
    quantile_interval,
    rank_test,
    ratio_interval,
)
from cutover.durations import format_duration
from cutover.model import Arm, Mode
from cutover.reports.slo import SLO, Budget
from cutover.telemetry import windows as w
from cutover.telemetry.histogram import Histogram
from cutover.telemetry.windows import ArmCounts


class Outcome(enum.StrEnum):
    PASS = "pass"
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"
    SKIPPED = "skipped"  # the check does not apply in the current mode


@dataclass(frozen=True, slots=True)
class CheckResult:
    """What one check found: the outcome, one sentence why, and the numbers behind it."""

    name: str
    severity: str
    outcome: Outcome
    rule: str
    reason: str
    value: float | None = None
    threshold: float | None = None
    sample: int | None = None
    interval: tuple[float, float] | None = None
    since: float | None = None
    until: float | None = None
    rank: Mapping[str, Any] | None = None
    method: Method | None = None  # how the interval was built; None when there is none
    bound: str | None = None  # the interval's construction, named for the evidence

    @property
    def failed(self) -> bool:
        return self.outcome is Outcome.FAIL

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "severity": self.severity,
            "outcome": self.outcome.value,
            "rule": self.rule,
            "reason": self.reason,
            "value": _finite(self.value),
            "threshold": self.threshold,
            "sample": self.sample,
            "interval": None if self.interval is None else [_finite(x) for x in self.interval],
            "window": None if self.since is None else {"since": self.since, "until": self.until},
            "rank_test": dict(self.rank) if self.rank else None,
            "method": None if self.method is None else self.method.value,
            "bound": self.bound,
        }


def _finite(value: float | None) -> float | str | None:
    """JSON has no infinity: an unbounded interval end is written as "inf"."""
    if value is None or math.isfinite(value):
        return value
    return "inf" if value > 0 else "-inf"


class Telemetry:
    """One migration's windows, read once per tick and summed for each check's span.

    ``before`` holds the step's totals up to the first window of ``series`` (the controller
    keeps them between passes), so a sequential check sees the whole step without the whole
    step being read again on every pass.

    Each sum is made once per span and shared by every check that reads it: what
    :meth:`total` and :meth:`step_total` return is not to be changed.
    """

    def __init__(
        self,
        series: Mapping[int, Mapping[Arm, ArmCounts]],
        before: Mapping[Arm, ArmCounts] | None = None,
    ) -> None:
        self._series = series
        self._before = before
        self._totals: dict[float, dict[Arm, ArmCounts]] = {}
        self._step_totals: dict[float, dict[Arm, ArmCounts]] = {}

    def step_total(self, step_started_at: float) -> dict[Arm, ArmCounts]:
        """Everything counted since the step began."""
        out = self._step_totals.get(step_started_at)
        if out is None:  # the kept totals first: the largest histogram is copied, not merged
            out = self._step_totals[step_started_at] = self._sum(step_started_at, self._before)
        return out

    def total(self, since: float) -> dict[Arm, ArmCounts]:
        out = self._totals.get(since)
        if out is None:
            out = self._totals[since] = self._sum(since)
        return out

    def counters(self, since: float) -> dict[Arm, list[int]]:
        """The counters of :meth:`total` alone: the histograms are the costly part to sum."""
        out = {Arm.LEGACY: [0] * w.NC, Arm.NEW: [0] * w.NC}
        for start, arms in self._series.items():
            if start >= since:
                for arm, counts in arms.items():
                    mine = out[arm]
                    for position, value in enumerate(counts.counts):
                        mine[position] += value
        return out

    def _sum(
        self, since: float, first: Mapping[Arm, ArmCounts] | None = None
    ) -> dict[Arm, ArmCounts]:
        out = {Arm.LEGACY: ArmCounts(), Arm.NEW: ArmCounts()}
        for arm, counts in (first or {}).items():
            out[arm].add(counts)
        for start, arms in self._series.items():
            if start >= since:
                for arm, counts in arms.items():
                    out[arm].add(counts)
        return out


Query = Callable[..., list[float]]
"""Reads an external check's values (one per series) over a window of seconds:
``query(check, plan, seconds)``, or as they were at a past time with ``at=`` (a baseline)."""

RangeQuery = Callable[[Check, Plan, float, float], list[Sequence[tuple[float, float]]]]
"""Reads an external check's series, as (time, value) points, from ``since`` to ``until``."""

Budgets = Callable[[SLO, float, float], Budget]
"""Reads an SLO's error budget over [since, until)."""


def evaluate(
    check: Check,
    plan: Plan,
    mode: Mode,
    telemetry: Telemetry,
    *,
    now: float,
    step_started_at: float,
    external: Query | None = None,
    external_range: RangeQuery | None = None,
    baselines: Mapping[str, Mapping[str, Any]] | None = None,
    budgets: Budgets | None = None,
) -> CheckResult:
    """Judge ``check`` over its window, counted only from the start of the current step (an
    SLO's error budget and burn rate over their own spans: a budget is not reset by a step)."""
    method = check.method_in(plan)
    sequential = method is Method.SEQUENTIAL
    # A confidence sequence is valid over the whole step at once, not over a sliding window:
    # a window read anew on every pass is a fresh sample each time, and would bring the
    # repeated looks back.
    since = step_started_at if sequential else max(now - check.window, step_started_at)
    rule = check.describe(method)
    base: dict[str, Any] = {"name": check.name, "severity": check.severity.value, "rule": rule}
    why_not = check.applies_to(mode)
    if why_not is not None:
        return CheckResult(outcome=Outcome.SKIPPED, reason=why_not, **base)
    span = {"since": since, "until": now}
    if check.source == "prometheus":
        if check.max_growth is not None:
            return _growth(check, plan, external_range, base, span)
        return _external(check, plan, external, base, span, (baselines or {}).get(check.name))
    if check.metric is not None and check.metric.is_budget:
        return _budget(check, plan, budgets, base, now)
    confidence = check.confidence or plan.confidence
    arms = telemetry.step_total(since) if sequential else telemetry.total(since)
    assert check.metric is not None
    if check.metric.is_count:
        return _count(check, arms, confidence, base, span)
    if method is None:
        return _calls(check, arms[check.measured_arm], base, span)
    interval = _Interval(method, confidence)
    base.update(method=method, bound=interval.bound)
    if check.metric.quantile is not None:
        return _latency(check, arms, interval, base, span)
    return _rate(check, arms, interval, base, span)


RATIO_CENTRE = 0.01
"""Where the mixture of each arm of a rate ratio is centred: a ratio has no rate of its own to
centre on, and 1% sits between the rare errors and the common drifts cutover measures."""


@dataclass(frozen=True, slots=True)
class _Interval:
    """The intervals one check is judged with: fixed-sample, or confidence sequences."""

    method: Method
    confidence: float

    @property
    def sequential(self) -> bool:
        return self.method is Method.SEQUENTIAL

    @property
    def words(self) -> str:
        kind = "confidence sequence" if self.sequential else "interval"
        return f"{self.confidence:.0%} {kind}"

    @property
    def bound(self) -> str:
        if self.sequential:
            return f"{REFERENCE}, since the step began"
        return "fixed-sample interval over the window (Clopper-Pearson, Katz, order statistics)"

    @property
    def each_of_two(self) -> float:
        """The confidence of each arm's interval when two make a ratio: a sequence splits
        α between them so the ratio keeps the whole confidence (the fixed method has always
        used each arm's interval at the full level)."""
        return 1 - (1 - self.confidence) / 2 if self.sequential else self.confidence

    def rate(
        self, events: int, trials: int, centre: float, confidence: float | None = None
    ) -> tuple[float, float] | None:
        level = self.confidence if confidence is None else confidence
        if self.sequential:
            return sequential_rate_interval(events, trials, level, centre)
        return exact_rate_interval(events, trials, level)

    def quantile(
        self, histogram: Histogram, q: float, confidence: float | None = None
    ) -> tuple[float, float] | None:
        level = self.confidence if confidence is None else confidence
        if self.sequential:
            return sequential_quantile_interval(histogram, q, level)
        return quantile_interval(histogram, q, level)

    def quantile_ratio(self, mine: Histogram, theirs: Histogram, q: float) -> tuple[float, float]:
        """The interval of ``mine``'s q-quantile over ``theirs``' (neither empty): the lowest
        plausible ratio and the highest, from each arm's interval (a union bound: sequentially
        each at half the error, so both hold at once with the whole confidence). Each arm's
        ends take whole buckets, so the bucketing error is inside the interval."""
        my_low, my_high = _ms(self.quantile(mine, q, self.each_of_two))
        their_low, their_high = _ms(self.quantile(theirs, q, self.each_of_two))
        low = my_low / their_high if their_high else 0.0
        high = my_high / their_low if their_low else math.inf
        return low, high


def quantile_ratio_interval(
    mine: Histogram, theirs: Histogram, q: float, confidence: float, method: Method
) -> tuple[float, float]:
    """The interval a latency ratio check judges, for benchmarks and reports."""
    return _Interval(method, confidence).quantile_ratio(mine, theirs, q)


def _verdict(low: float, high: float, check: Check) -> tuple[Outcome, float]:
    """Pass when the whole interval is within the bounds, fail when it is wholly beyond one;
    with the bound that decides: the one crossed or still in reach, else max."""
    top, bottom = check.max, check.min
    if bottom is not None and high < bottom:
        return Outcome.FAIL, bottom
    if top is not None and low > top:
        return Outcome.FAIL, top
    within = (top is None or high <= top) and (bottom is None or low >= bottom)
    outcome = Outcome.PASS if within else Outcome.INCONCLUSIVE
    if bottom is not None and (top is None or low < bottom):
        return outcome, bottom
    assert top is not None  # a check has max, min or both
    return outcome, top


def _rate_of(metric: Metric, arms: Mapping[Arm, ArmCounts], arm: Arm) -> tuple[int, int, str]:
    """(events, trials, what the trials are) of a rate metric."""
    counts = arms[arm].counts
    if metric is Metric.DRIFT_RATE:
        both = [arms[Arm.LEGACY].counts, arms[Arm.NEW].counts]
        return sum(c[w.DRIFTS] for c in both), sum(c[w.COMPARISONS] for c in both), "comparisons"
    if metric is Metric.FALLBACK_RATE:
        served = counts[w.CALLS] - counts[w.OFFPATH]  # includes the runs that fell back
        return counts[w.FALLBACKS], max(served, counts[w.FALLBACKS]), f"calls served by {arm}"
    index = w.ERRORS if metric is Metric.ERROR_RATE else w.TIMEOUTS
    return counts[index], counts[w.CALLS], f"calls on {arm}"


def _too_few(trials: int, check: Check, what: str) -> str | None:
    needed = max(check.min_samples, 1)
    if trials >= needed:
        return None
    if trials == 0:
        return f"no {what} in the window"
    return f"{trials} of {needed} required {what}"


def _rate(
    check: Check,
    arms: Mapping[Arm, ArmCounts],
    intervals: _Interval,
    base: dict[str, Any],
    span: dict[str, float],
) -> CheckResult:
    assert check.metric is not None
    arm = check.measured_arm
    events, trials, what = _rate_of(check.metric, arms, arm)
    name = check.metric.value.replace("_", " ")
    level = intervals.words
    short = _too_few(trials, check, what)
    if check.max_ratio_to is None:
        if short:
            return CheckResult(
                outcome=Outcome.INCONCLUSIVE, reason=short, sample=trials, **base, **span
            )
        centre = check.max if check.max is not None else check.min
        assert centre is not None
        interval = intervals.rate(events, trials, centre)
        assert interval is not None
        value = events / trials
        outcome, bound = _verdict(*interval, check)
        reason = (
            f"{name} {value:.4g} ({events} of {trials} {what}; {level}"
            f" {interval[0]:.4g} to {interval[1]:.4g}) {_relation(outcome)} {bound:g}"
        )
        return CheckResult(
            outcome=outcome,
            reason=reason,
            value=value,
            threshold=bound,
            sample=trials,
            interval=interval,
            **base,
            **span,
        )
    other = check.max_ratio_to
    other_events, other_trials, other_what = _rate_of(check.metric, arms, other)
    short = short or _too_few(other_trials, check, other_what)
    if short:
        return CheckResult(
            outcome=Outcome.INCONCLUSIVE, reason=short, sample=trials, **base, **span
        )
    each = intervals.each_of_two
    mine, theirs = (
        intervals.rate(events, trials, RATIO_CENTRE, each),
        intervals.rate(other_events, other_trials, RATIO_CENTRE, each),
    )
    assert mine is not None and theirs is not None and check.max is not None
    if intervals.sequential:
        # Both arms' sequences hold at once with the whole confidence, so the ratio lies
        # between the extreme ratios of their ends.
        interval = (
            mine[0] / theirs[1],
            mine[1] / theirs[0] if theirs[0] > 0 else math.inf,
        )
    else:
        found = ratio_interval(events, trials, other_events, other_trials, intervals.confidence)
        assert found is not None
        interval = found
    outcome, _bound = _verdict(*interval, check)
    if outcome is Outcome.INCONCLUSIVE and events == 0 and mine[1] <= check.max * theirs[1]:
        # No event at all on the measured arm, so no ratio to measure: pass when even its
        # highest plausible rate is within max times the other arm's.
        outcome = Outcome.PASS
    value = (events / trials) / (other_events / other_trials) if other_events else None
    shown = "n/a" if value is None else f"{value:.3g}"
    reason = (
        f"{name} {arm}/{other} ratio {shown} ({events}/{trials} vs {other_events}/{other_trials};"
        f" {level} {interval[0]:.3g} to {_fmt(interval[1], '.3g')}) {_relation(outcome)}"
        f" {check.max:g}"
    )
    return CheckResult(
        outcome=outcome,
        reason=reason,
        value=value,
        threshold=check.max,
        sample=min(trials, other_trials),
        interval=interval,
        **base,
        **span,
    )


def _relation(outcome: Outcome) -> str:
    return {
        Outcome.PASS: "is within",
        Outcome.FAIL: "is beyond",
        Outcome.INCONCLUSIVE: "may be beyond",
    }[outcome]


def _calls(
    check: Check, counts: ArmCounts, base: dict[str, Any], span: dict[str, float]
) -> CheckResult:
    calls = counts.counts[w.CALLS]
    arm = check.measured_arm
    if check.max is not None and calls > check.max:
        outcome, reason = Outcome.FAIL, f"{calls} calls on {arm} exceed {check.max:g}"
    elif check.min is not None and calls < check.min:
        # Too little traffic is a reason to wait, never to roll back.
        outcome, reason = Outcome.INCONCLUSIVE, f"{calls} of {check.min:g} required calls on {arm}"
    else:
        outcome, reason = Outcome.PASS, f"{calls} calls on {arm}"
    return CheckResult(
        outcome=outcome,
        reason=reason,
        value=float(calls),
        threshold=check.max if check.max is not None else check.min,
        sample=calls,
        **base,
        **span,
    )


def _events_of(check: Check, arms: Mapping[Arm, ArmCounts]) -> tuple[int, int, str]:
    """(events, trials, what the trials are) of a count metric."""
    assert check.metric is not None
    rate = check.metric.rate
    if rate is not None:
        return _rate_of(rate, arms, check.measured_arm)
    calls = [arms[arm].counts[w.CALLS] for arm in (Arm.LEGACY, Arm.NEW)]
    gone = arms[Arm.LEGACY].counts[w.GONE]  # 410 answers on retired routes: legacy never ran
    events = gone if check.metric is Metric.GONE_CALLS else calls[0] - gone
    return events, sum(calls), "calls on either arm"


def _count(
    check: Check,
    arms: Mapping[Arm, ArmCounts],
    confidence: float,
    base: dict[str, Any],
    span: dict[str, float],
) -> CheckResult:
    """A count of events over the window against ``max``. Above it fails at once (a count is
    exact, there is nothing to be confident about). With ``max: 0`` and ``max_rate``, zero
    events pass only once there were enough trials to prove the rate under ``max_rate``:
    with no event in n trials, the exact one-sided upper bound at confidence c is
    1 - (1 - c)^(1/n), about -ln(1 - c) / n (3 / n at 95%: the rule of three)."""
    assert check.metric is not None and check.max is not None
    events, trials, what = _events_of(check, arms)
    name = check.metric.value.replace("_", " ")
    limit = check.max
    if events > limit:
        return CheckResult(
            outcome=Outcome.FAIL,
            reason=f"{events} {name} in {trials} {what} exceed {limit:g}",
            value=float(events),
            threshold=limit,
            sample=trials,
            **base,
            **span,
        )
    counted = f"{events} {name} in {trials} {what}"
    if check.max_rate is None:
        outcome, reason = Outcome.PASS, f"{counted}, within {limit:g}"
        short = _too_few(trials, check, what) if check.min_samples else None
        if short:
            outcome, reason = Outcome.INCONCLUSIVE, f"{counted}; {short}"
        return CheckResult(
            outcome=outcome,
            reason=reason,
            value=float(events),
            threshold=limit,
            sample=trials,
            **base,
            **span,
        )
    # No event (max is 0 here): how high could the rate still be?
    high = 1.0 if trials == 0 else -math.expm1(math.log1p(-confidence) / trials)
    needed = math.ceil(math.log1p(-confidence) / math.log1p(-check.max_rate))
    proven = high <= check.max_rate
    bound = (
        f"{confidence:.0%} exact bound: the rate is under {high:.3g} (rule of three: 3/n ="
        f" {3 / trials:.3g})"
        if trials
        else "no trials, no bound"
    )
    reason = f"{counted}; {bound}, {'within' if proven else 'not yet under'} {check.max_rate:g}" + (
        "" if proven else f": {needed} clean {what} needed"
    )
    return CheckResult(
        outcome=Outcome.PASS if proven else Outcome.INCONCLUSIVE,
        reason=reason,
        value=0.0,
        threshold=check.max_rate,
        sample=trials,
        interval=(0.0, high),
        bound="exact one-sided binomial bound on zero events (Clopper-Pearson)",
        **base,
        **span,
    )


def _latency(
    check: Check,
    arms: Mapping[Arm, ArmCounts],
    intervals: _Interval,
    base: dict[str, Any],
    span: dict[str, float],
) -> CheckResult:
    assert check.metric is not None and check.metric.quantile is not None
    q = check.metric.quantile
    arm = check.measured_arm
    mine = arms[arm].histogram
    label = check.metric.value.removesuffix("_ms")
    short = _too_few(mine.count, check, f"calls on {arm}")
    if check.max_ratio_to is None:
        if short:
            return CheckResult(
                outcome=Outcome.INCONCLUSIVE, reason=short, sample=mine.count, **base, **span
            )
        low, high = _ms(intervals.quantile(mine, q))
        value = mine.quantile(q) / 1e6  # type: ignore[operator]
        outcome, bound = _verdict(low, high, check)
        reason = (
            f"{arm} {label} {value:.4g} ms ({intervals.words} {low:.4g} to"
            f" {_fmt(high)} ms over {mine.count} calls) {_relation(outcome)} {bound:g} ms"
        )
        if outcome is Outcome.INCONCLUSIVE and math.isinf(high):
            reason = f"{mine.count} calls on {arm} are too few to bound its {label}"
        return CheckResult(
            outcome=outcome,
            reason=reason,
            value=value,
            threshold=bound,
            sample=mine.count,
            interval=(low, high),
            **base,
            **span,
        )
    other = check.max_ratio_to
    theirs = arms[other].histogram
    short = short or _too_few(theirs.count, check, f"calls on {other}")
    if short:
        return CheckResult(
            outcome=Outcome.INCONCLUSIVE, reason=short, sample=mine.count, **base, **span
        )
    low, high = intervals.quantile_ratio(mine, theirs, q)
    mine_q, theirs_q = mine.quantile(q), theirs.quantile(q)
    assert mine_q is not None and theirs_q is not None
    value = mine_q / theirs_q if theirs_q else math.inf
    outcome, _bound = _verdict(low, high, check)
    reason = (
        f"{label} {arm}/{other} {value:.3g} ({mine_q / 1e6:.4g} vs {theirs_q / 1e6:.4g} ms;"
        f" {intervals.words} {low:.3g} to {_fmt(high)}) {_relation(outcome)}"
        f" {check.max:g}x"
    )
    if outcome is Outcome.INCONCLUSIVE and math.isinf(high):
        reason = (
            f"too few calls to bound the {label} ratio"
            f" ({mine.count} on {arm}, {theirs.count} on {other})"
        )
    rank_json = None
    settings = check.rank
    if settings is not None:
        test = None
        if min(mine.count, theirs.count) >= settings.min_samples:
            test = rank_test(mine, theirs)  # one-sided: is the measured arm slower?
        if test is None:
            rank_json = {"ran": False, "why": f"fewer than {settings.min_samples} calls on an arm"}
            if outcome is Outcome.PASS:
                outcome = Outcome.INCONCLUSIVE
                reason += f"; the rank test needs {settings.min_samples} calls on each arm"
        else:
            effect = test.effect
            shifted = test.p_value < settings.alpha and effect > settings.max_effect
            rank_json = {"ran": True, "shifted": shifted, **test.to_json()}
            ratio = test.median_ratio
            medians = "" if ratio is None else f", medians x{ratio:.3g}"
            if shifted:
                outcome = Outcome.FAIL
                reason = (
                    f"rank test: {arm} is slower than {other} (p={test.p_value:.2g} <"
                    f" {settings.alpha:g}; a call on {arm} is slower {effect:.0%} of the time,"
                    f" over {settings.max_effect:.0%}{medians}); {reason}"
                )
            else:
                reason += (
                    f"; rank test finds no shift that matters (p={test.p_value:.2g},"
                    f" slower {effect:.0%} of the time{medians})"
                )
    return CheckResult(
        outcome=outcome,
        reason=reason,
        value=value,
        threshold=check.max,
        sample=min(mine.count, theirs.count),
        interval=(low, high),
        rank=rank_json,
        **base,
        **span,
    )


def _ms(interval: tuple[float, float] | None) -> tuple[float, float]:
    assert interval is not None
    return interval[0] / 1e6, interval[1] / 1e6


def _fmt(value: float, spec: str = ".4g") -> str:
    return "unbounded" if math.isinf(value) else format(value, spec)


def _external(
    check: Check,
    plan: Plan,
    external: Query | None,
    base: dict[str, Any],
    span: dict[str, float],
    baseline: Mapping[str, Any] | None,
) -> CheckResult:
    from cutover.telemetry.prometheus_api import PrometheusError

    if external is None:
        return CheckResult(
            outcome=Outcome.INCONCLUSIVE, reason="external sources are not read here", **base
        )
    try:
        # Like cutover's own windows, the query looks no further back than the step's start,
        # so a spike before a rollback cannot fail the step it led to.
        seconds = span["until"] - span["since"]
        if seconds < 60:
            return CheckResult(
                outcome=Outcome.INCONCLUSIVE,
                reason=f"the step began {seconds:.0f}s ago; a query needs a minute of it",
                **base,
                **span,
            )
        values = [v for v in external(check, plan, seconds) if not math.isnan(v)]
    except PrometheusError as error:
        # An unreachable source is a reason to wait, never to roll back.
        return CheckResult(outcome=Outcome.INCONCLUSIVE, reason=str(error), **base, **span)
    if not values:
        return CheckResult(
            outcome=Outcome.INCONCLUSIVE, reason="the query returned no series", **base, **span
        )
    if check.max_ratio_to_baseline is not None:
        return _to_baseline(check, values, baseline, base, span)
    value = max(values) if check.max is not None else min(values)
    over = check.max is not None and max(values) > check.max
    under = check.min is not None and min(values) < check.min
    outcome = Outcome.FAIL if over or under else Outcome.PASS
    bound = check.max if over or check.min is None else check.min
    if under:
        value = min(values)
    series = f" (worst of {len(values)} series)" if len(values) > 1 else ""
    reason = (
        f"{value:.6g}{series} {'is beyond' if outcome is Outcome.FAIL else 'is within'} {bound:g}"
    )
    return CheckResult(
        outcome=outcome,
        reason=reason,
        value=value,
        threshold=bound,
        sample=len(values),
        **base,
        **span,
    )


def _to_baseline(
    check: Check,
    values: list[float],
    baseline: Mapping[str, Any] | None,
    base: dict[str, Any],
    span: dict[str, float],
) -> CheckResult:
    """The worst series now against ``max_ratio_to_baseline`` times the value measured over the
    window before the rollout began (kept in the rollout's notes)."""
    assert check.max_ratio_to_baseline is not None
    limit = check.max_ratio_to_baseline
    worst = max(values)
    if baseline is None or "value" not in baseline:
        why = (baseline or {}).get("error") or "it has not been measured yet"
        return CheckResult(
            outcome=Outcome.INCONCLUSIVE,
            reason=f"no baseline from before the rollout: {why}",
            value=worst,
            **base,
            **span,
        )
    before = float(baseline["value"])
    if not before > 0:
        return CheckResult(
            outcome=Outcome.INCONCLUSIVE,
            reason=f"the baseline {before:.6g} is not positive, so no ratio to it means anything;"
            " use max instead",
            value=worst,
            **base,
            **span,
        )
    ratio = worst / before
    outcome = Outcome.FAIL if ratio > limit else Outcome.PASS
    series = f" (worst of {len(values)} series)" if len(values) > 1 else ""
    return CheckResult(
        outcome=outcome,
        reason=(
            f"{worst:.6g}{series} is {ratio:.3g}x the baseline {before:.6g} measured before the"
            f" rollout began; {_relation(outcome)} {limit:g}x"
        ),
        value=ratio,
        threshold=limit,
        sample=len(values),
        **base,
        **span,
    )


def _growth(
    check: Check,
    plan: Plan,
    external_range: RangeQuery | None,
    base: dict[str, Any],
    span: dict[str, float],
) -> CheckResult:
    """The least-squares trend of each series over the window, with its interval, against
    ``max_growth``: fail when some series surely grows faster, pass when every one surely
    does not, inconclusive otherwise."""
    from cutover.telemetry.prometheus_api import PrometheusError

    assert check.max_growth is not None
    limit = check.max_growth.fraction
    per = check.max_growth.per
    if external_range is None:
        return CheckResult(
            outcome=Outcome.INCONCLUSIVE, reason="external sources are not read here", **base
        )
    if span["until"] - span["since"] < 60:
        return CheckResult(
            outcome=Outcome.INCONCLUSIVE,
            reason=f"the step began {span['until'] - span['since']:.0f}s ago; a trend needs a"
            " minute of it",
            **base,
            **span,
        )
    try:
        series = external_range(check, plan, span["since"], span["until"])
    except PrometheusError as error:
        return CheckResult(outcome=Outcome.INCONCLUSIVE, reason=str(error), **base, **span)
    confidence = check.confidence or plan.confidence
    trends = [t for t in (growth_interval(points, per, confidence) for points in series) if t]
    if not trends:
        return CheckResult(
            outcome=Outcome.INCONCLUSIVE,
            reason="no series with three points and a positive level to fit a trend to",
            **base,
            **span,
        )
    worst = max(trends, key=lambda t: t.low)
    if worst.low > limit:
        outcome = Outcome.FAIL
    elif all(t.high <= limit for t in trends):
        outcome = Outcome.PASS
        worst = max(trends, key=lambda t: t.high)
    else:
        outcome = Outcome.INCONCLUSIVE
        worst = max(trends, key=lambda t: t.high)
    period = format_duration(per)
    several = f" (worst of {len(trends)} series)" if len(trends) > 1 else ""
    return CheckResult(
        outcome=outcome,
        reason=(
            f"growing {worst.estimate:+.3%}/{period}{several} ({confidence:.0%} interval"
            f" {worst.low:+.3%} to {worst.high:+.3%}, least squares over {worst.points} points"
            f" around {worst.level:.6g}) {_relation(outcome)} {limit:.3%}/{period}"
        ),
        value=worst.estimate,
        threshold=limit,
        sample=worst.points,
        interval=(worst.low, worst.high),
        bound="least-squares slope, Student t interval",
        **base,
        **span,
    )


def _budget(
    check: Check, plan: Plan, budgets: Budgets | None, base: dict[str, Any], now: float
) -> CheckResult:
    from cutover.errors import InvalidInput
    from cutover.telemetry.prometheus_api import PrometheusError

    if budgets is None:
        return CheckResult(
            outcome=Outcome.INCONCLUSIVE, reason="SLO budgets are not read here", **base
        )
    remaining = check.metric is Metric.ERROR_BUDGET_REMAINING
    try:
        slo = plan.slo_for(check)
        span = {"since": now - (slo.window if remaining else check.window), "until": now}
        budget = budgets(slo, span["since"], now)
    except (PrometheusError, InvalidInput) as error:
        return CheckResult(outcome=Outcome.INCONCLUSIVE, reason=str(error), **base)
    value = budget.remaining if remaining else budget.burn_rate
    what = "budget remaining" if remaining else "burn rate"
    if value is None:
        return CheckResult(
            outcome=Outcome.INCONCLUSIVE,
            reason=f"no events of SLO {slo.name!r} in the window: no {what} to judge",
            sample=0,
            **base,
            **span,
        )
    over = check.max is not None and value > check.max
    under = check.min is not None and value < check.min
    bound = check.max if over or check.min is None else check.min
    assert bound is not None
    outcome = Outcome.FAIL if over or under else Outcome.PASS
    shown = f"{value:.1%}" if remaining else f"{value:.3g}x"
    limit = f"{bound:.1%}" if remaining else f"{bound:g}x"
    verdict = ("below" if under else "above") if outcome is Outcome.FAIL else "within"
    reason = (
        f"SLO {slo.name!r} {what} {shown} is {verdict} {limit}"
        f" ({budget.bad} bad of {budget.total} events)"
    )
    return CheckResult(
        outcome=outcome,
        reason=reason,
        value=value,
        threshold=bound,
        sample=budget.total,
        **base,
        **span,
    )


SETTLED = 300.0
"""Seconds after which a minute's telemetry is taken as complete: the step's totals a sequential
check adds to what each pass reads stop this far back, so minutes still being flushed into are
read afresh on every pass."""


@dataclass(frozen=True, slots=True)
class Span:
    """How far back a pass reads telemetry for a plan's checks."""

    longest: float  # seconds of windows read on every pass
    latency: float | None  # seconds of histograms read on every pass (None: no latency check)
    step: bool  # some check is sequential: the step's totals before that are needed too
    step_histograms: bool  # ... with their histograms (a sequential latency check)


def window_span(plan: Plan, checks: Sequence[Check]) -> Span:
    """What ``checks`` read: a fixed check its window; a sequential one the whole step, of
    which only the last SETTLED seconds are read on every pass."""
    longest = 0.0
    latency: float | None = None
    step = step_histograms = False
    for check in checks:
        method = check.method_in(plan)
        if check.source != "cutover" or (check.metric is not None and check.metric.is_budget):
            continue
        sequential = method is Method.SEQUENTIAL
        seconds = SETTLED if sequential else check.window
        longest = max(longest, seconds)
        assert check.metric is not None
        if check.metric.quantile is not None:
            latency = max(latency or 0.0, seconds)
            step_histograms = step_histograms or sequential
        step = step or sequential
    return Span(longest, latency, step, step_histograms)


__all__ = ["CheckResult", "Outcome", "Span", "Telemetry", "evaluate", "window_span"]
