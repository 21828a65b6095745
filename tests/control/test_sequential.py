"""Confidence sequences: exact where they claim, valid at every look, and what checks report."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import optimize, special, stats

from cutover.clock import ManualClock
from cutover.control.checks import Outcome, Telemetry, evaluate, window_span
from cutover.control.controller import Controller
from cutover.control.plan import Method, parse_plan
from cutover.control.sequential import (
    mixture_prior,
    rank_bounds,
    rate_bounds,
    sequential_quantile_interval,
    sequential_rate_interval,
)
from cutover.errors import InvalidInput
from cutover.model import Arm, Mode
from cutover.store import open_store
from cutover.telemetry import windows as w
from cutover.telemetry.histogram import Histogram, index_of

from .test_rules import counts
from .traffic import Traffic


def _reference(events: int, trials: int, confidence: float, centre: float) -> tuple[float, float]:
    """The sequence's ends found by SciPy's root finder on the defining equation."""
    a, b = mixture_prior(centre)
    level = special.betaln(a + events, b + trials - events) - special.betaln(a, b)
    level += np.log(1 - confidence)

    def gap(p: float) -> float:
        return float(special.xlogy(events, p) + special.xlog1py(trials - events, -p) - level)

    p_hat = events / trials
    low = 0.0 if events == 0 else optimize.brentq(gap, 1e-300, p_hat, xtol=1e-300, rtol=1e-14)
    high = (
        1.0 if events == trials else optimize.brentq(gap, p_hat, 1 - 1e-16, xtol=1e-300, rtol=1e-14)
    )
    return low, high


def test_the_sequence_ends_are_the_roots_of_its_defining_equation() -> None:
    rng = np.random.default_rng(7)
    for _ in range(200):
        trials = int(rng.integers(1, 10**7))
        events = int(rng.binomial(trials, 10 ** rng.uniform(-6, -0.05)))
        centre = float(10 ** rng.uniform(-5, -0.5))
        got = sequential_rate_interval(events, trials, 0.95, centre)
        assert got == pytest.approx(_reference(events, trials, 0.95, centre), rel=1e-9, abs=1e-300)


def test_the_vectorised_form_equals_the_scalar_one() -> None:
    events = np.array([0, 1, 5, 999, 1000, 0])
    trials = np.array([10, 100, 1000, 1000, 1000, 0])
    low, high = rate_bounds(events, trials, 0.9, 0.02)
    for i in range(5):
        scalar = sequential_rate_interval(int(events[i]), int(trials[i]), 0.9, 0.02)
        assert (low[i], high[i]) == pytest.approx(scalar, rel=1e-12)
    assert (low[5], high[5]) == (0.0, 1.0)  # no trials: nothing is known
    assert sequential_rate_interval(0, 0) is None
    with pytest.raises(ValueError, match="events <= trials"):
        sequential_rate_interval(5, 3)


def test_one_rate_is_bounded_to_the_last_bit_as_the_vectorised_form_does() -> None:
    """The controller's single rates take a plain-float path: it must not move a decision."""
    rng = np.random.default_rng(7)
    sizes = [1, 2, 3, 57, 1000, 4105, 3_000_000, 10**9, 2**60]
    for _ in range(400):
        trials = int(rng.choice(sizes))
        events = int(
            rng.choice([0, 1, trials - 1, trials, rng.integers(0, trials + 1), trials // 1000])
        )
        events = min(max(events, 0), trials)
        confidence = float(rng.choice([0.9, 0.95, 0.975, 0.9995]))
        centre = float(rng.choice([1e-12, 0.001, 0.01, 0.5, 0.999]))
        low, high = rate_bounds(events, trials, confidence, centre)
        assert sequential_rate_interval(events, trials, confidence, centre) == (
            float(low),
            float(high),
        ), (events, trials, confidence, centre)


def test_a_sequence_is_wider_than_the_fixed_interval_but_not_by_much() -> None:
    fixed = stats.binomtest(50, 10_000).proportion_ci(0.95, method="exact")
    low, high = sequential_rate_interval(50, 10_000, 0.95, 0.005)  # type: ignore[misc]
    assert low < fixed.low < fixed.high < high
    assert high - low < 2 * (fixed.high - fixed.low)


def test_looking_at_every_trial_keeps_the_stated_error_rate() -> None:
    """The point of it all: read after every 10th trial of 6,000, with the truth exactly on
    the bound, a 95% sequence leaves the truth on at most 5% of runs; the fixed-sample
    interval, read as often, leaves it on many times more."""
    rng = np.random.default_rng(11)
    runs, looks, every, p = 400, 600, 10, 0.02
    trials = np.arange(1, looks + 1) * every
    events = rng.binomial(every, p, size=(runs, looks)).cumsum(axis=1)
    low, high = rate_bounds(events, np.broadcast_to(trials, events.shape), 0.95, p)
    strayed = ((low > p) | (high < p)).any(axis=1).mean()
    fixed_low = stats.beta.ppf(0.025, events, trials - events + 1)
    fixed_high = stats.beta.ppf(0.975, events + 1, trials - events)
    fixed_strayed = ((np.nan_to_num(fixed_low) > p) | (fixed_high < p)).any(axis=1).mean()
    assert strayed <= 0.05
    assert fixed_strayed > 3 * max(strayed, 0.02)


def test_rank_bounds_hold_at_every_sample_size() -> None:
    rng = np.random.default_rng(5)
    q, runs, n = 0.95, 300, 2000
    below = (rng.random((runs, n)) <= q).cumsum(axis=1)  # calls at or below the true quantile
    sizes = range(20, n + 1, 20)
    table = {m: rank_bounds(m, q, 0.95) for m in sizes}
    missed = np.zeros(runs, dtype=bool)
    for m in sizes:
        first, last = table[m]
        count = below[:, m - 1]
        missed |= (count < first) | (count > last)
    assert missed.mean() <= 0.05
    first, last = rank_bounds(10_000, 0.5, 0.95)
    assert first < 5000 < last
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        rank_bounds(10, 1.0, 0.95)


def test_a_quantile_sequence_brackets_the_quantile_and_needs_more_calls() -> None:
    rng = np.random.default_rng(3)
    latencies = rng.lognormal(np.log(2e6), 0.3, 5000)
    histogram = Histogram()
    for value in latencies:
        histogram.add(index_of(int(value)))
    low, high = sequential_quantile_interval(histogram, 0.95)  # type: ignore[misc]
    assert low <= np.quantile(latencies, 0.95) <= high
    few = Histogram()
    for value in latencies[:60]:
        few.add(index_of(int(value)))
    assert sequential_quantile_interval(few, 0.95)[1] == float("inf")  # type: ignore[index]
    assert sequential_quantile_interval(Histogram(), 0.5) is None


def _plan(check: dict[str, object], **plan: object) -> object:
    return parse_plan(
        {"migration": "m", "steps": [{"mode": "canary", "percent": 50}], "checks": [check], **plan}
    )


def test_a_rate_check_states_its_method_and_bound_in_the_evidence() -> None:
    check = {"name": "errors", "metric": "error_rate", "max": 0.001}
    new = counts(calls=4150)
    telemetry = Telemetry({540: {Arm.LEGACY: counts(calls=100), Arm.NEW: new}})
    plan = _plan(check)
    result = evaluate(plan.checks[0], plan, Mode.CANARY, telemetry, now=600, step_started_at=0)  # type: ignore[attr-defined]
    assert result.outcome is Outcome.PASS
    evidence = result.to_json()
    assert evidence["method"] == "sequential"
    assert "beta-binomial mixture" in evidence["bound"]
    assert "95% confidence sequence 0 to 0.00099" in evidence["reason"]
    assert evidence["rule"] == "new error_rate <= 0.001 since the step began"
    fixed = _plan(check, method="fixed")
    result = evaluate(fixed.checks[0], fixed, Mode.CANARY, telemetry, now=600, step_started_at=0)  # type: ignore[attr-defined]
    assert result.outcome is Outcome.PASS
    assert result.to_json()["method"] == "fixed"
    assert "95% interval 0 to 0.000888" in result.reason
    # 4,000 clean calls pass the fixed interval but not yet the sequence.
    short = Telemetry({540: {Arm.LEGACY: counts(calls=100), Arm.NEW: counts(calls=4000)}})
    assert (
        evaluate(plan.checks[0], plan, Mode.CANARY, short, now=600, step_started_at=0).outcome  # type: ignore[attr-defined]
        is Outcome.INCONCLUSIVE
    )


def test_a_sequential_check_reads_the_whole_step_and_a_fixed_one_its_window() -> None:
    errors_long_ago = {
        60: {Arm.LEGACY: counts(calls=2000), Arm.NEW: counts(calls=2000, errors=400)}
    }
    quiet_now = {540: {Arm.LEGACY: counts(calls=2000), Arm.NEW: counts(calls=2000)}}
    telemetry = Telemetry({**errors_long_ago, **quiet_now})
    check = {"name": "errors", "metric": "error_rate", "max": 0.05, "window": "5m"}
    for method, outcome in (("sequential", Outcome.FAIL), ("fixed", Outcome.PASS)):
        plan = _plan({**check, "method": method})
        result = evaluate(plan.checks[0], plan, Mode.CANARY, telemetry, now=600, step_started_at=0)  # type: ignore[attr-defined]
        assert result.outcome is outcome, method
    # The step's earlier totals the controller keeps count as if they had been read.
    plan = _plan(check)
    kept = Telemetry(quiet_now, before=errors_long_ago[60])
    result = evaluate(plan.checks[0], plan, Mode.CANARY, kept, now=600, step_started_at=0)  # type: ignore[attr-defined]
    assert result.outcome is Outcome.FAIL and result.sample == 4000


def test_a_sequential_ratio_splits_its_error_between_the_arms() -> None:
    ratio = {"name": "r", "metric": "error_rate", "max_ratio_to": "legacy", "max": 2}
    plan = _plan(ratio)
    same = Telemetry({540: {Arm.LEGACY: counts(calls=50_000), Arm.NEW: counts(calls=50_000)}})
    result = evaluate(plan.checks[0], plan, Mode.CANARY, same, now=600, step_started_at=0)  # type: ignore[attr-defined]
    assert result.outcome is Outcome.PASS  # no event on new, and its highest rate is small
    legacy, new = counts(calls=50_000, errors=250), counts(calls=50_000, errors=1000)
    worse = Telemetry({540: {Arm.LEGACY: legacy, Arm.NEW: new}})
    result = evaluate(plan.checks[0], plan, Mode.CANARY, worse, now=600, step_started_at=0)  # type: ignore[attr-defined]
    assert result.outcome is Outcome.FAIL
    assert result.interval is not None
    mine = sequential_rate_interval(1000, 50_000, 0.975, 0.01)
    theirs = sequential_rate_interval(250, 50_000, 0.975, 0.01)
    assert mine is not None and theirs is not None
    assert result.interval == pytest.approx((mine[0] / theirs[1], mine[1] / theirs[0]))


def test_method_is_refused_where_there_is_no_interval() -> None:
    with pytest.raises(InvalidInput, match=r"checks\[0\]: calls is a count"):
        _plan({"name": "c", "metric": "calls", "min": 10, "method": "fixed"})
    with pytest.raises(InvalidInput, match="method applies to cutover's own metrics"):
        _plan({"name": "p", "source": "prometheus", "query": "up", "min": 1, "method": "fixed"})
    with pytest.raises(InvalidInput, match="method"):
        _plan({"name": "e", "metric": "error_rate", "max": 0.1, "method": "bayes"})
    plan = _plan({"name": "e", "metric": "error_rate", "max": 0.1}, method="fixed")
    assert plan.checks[0].method_in(plan) is Method.FIXED  # type: ignore[attr-defined]


def test_a_sequential_plan_reads_a_settled_span_and_keeps_the_rest(tmp_path: Path) -> None:
    """Over a long step the controller adds what leaves the read span to kept totals: the
    check sees every call of the step, and each pass reads only the last minutes."""
    store = open_store(f"sqlite:///{tmp_path / 's.db'}")
    clock = ManualClock()
    plan = parse_plan(
        {
            "migration": "m",
            "steps": [{"mode": "shadow", "hold": "1h"}, {"mode": "canary", "percent": 50}],
            "checks": [{"name": "errors", "metric": "error_rate", "max": 0.05, "window": "2m"}],
        }
    )
    span = window_span(plan, plan.checks)
    assert (span.longest, span.step, span.step_histograms) == (300.0, True, False)
    controller = Controller(store, clock=clock)
    controller.start(plan, actor="ops", reason="test")
    traffic = Traffic(store, "m", clock, calls=1000)
    for _ in range(30):
        traffic.minute()
        controller.tick()
    result = controller.evaluate("m").checks[0]
    rollout = store.rollout("m")
    assert rollout is not None
    calls = store.windows("m", rollout.step_started_at)[Arm.NEW].counts[w.CALLS]
    assert result.sample == calls > 25_000
    assert result.method is Method.SEQUENTIAL
    # A restarted controller has no kept totals and reads them once: the same evidence.
    again = Controller(store, clock=clock).evaluate("m").checks[0]
    assert again.sample == calls and again.interval == result.interval
