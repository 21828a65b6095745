"""Prometheus checks against the value before the rollout began, and against a growth rate."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import stats

from cutover.clock import ManualClock
from cutover.control.checks import Outcome, Telemetry, evaluate
from cutover.control.controller import Controller
from cutover.control.plan import Check, Plan, parse_plan
from cutover.control.statistics import growth_interval
from cutover.errors import InvalidInput
from cutover.model import Mode
from cutover.store import open_store
from cutover.telemetry.prometheus_api import PrometheusError

from .test_scenarios import plan

MEMORY = {
    "name": "memory",
    "source": "prometheus",
    "query": "max(process_resident_memory_bytes)",
    "url": "http://prometheus:9090",
    "baseline": "rollout_start",
    "max_ratio_to_baseline": 2,
    "window": "10m",
}
GROWTH = {
    "name": "memory-growth",
    "source": "prometheus",
    "query": "max(process_resident_memory_bytes)",
    "url": "http://prometheus:9090",
    "max_growth": "10%/1h",
    "window": "1h",
}


class Source:
    """A Prometheus stand-in: the value now, and the value at given past times."""

    def __init__(self, now: float, before: dict[float, list[float]] | None = None) -> None:
        self.now = now
        self.before = before or {}
        self.asked: list[tuple[str, float, float | None]] = []

    def __call__(
        self, check: Check, plan: Plan, window: float, at: float | None = None
    ) -> list[float]:
        self.asked.append((check.name, window, at))
        if at is None:
            return [self.now]
        if at not in self.before:
            raise PrometheusError("cannot connect to Prometheus at http://prometheus:9090")
        return self.before[at]


def test_plans_refuse_baselines_and_growth_that_cannot_be_judged() -> None:
    cases = {
        "max_ratio_to_baseline and baseline go together": {**MEMORY, "baseline": None},
        "baseline applies to source: prometheus": {
            "name": "b",
            "metric": "error_rate",
            "max": 0.1,
            "baseline": "rollout_start",
        },
        "is not a growth rate; write the largest growth as a percentage per duration": {
            **GROWTH,
            "max_growth": "10/1h",
        },
        "must be a positive percentage": {**GROWTH, "max_growth": "-5%/1h"},
        "a max_growth check judges the trend only": {**GROWTH, "max": 3e9},
        "a baseline check's bound is max_ratio_to_baseline": {**MEMORY, "max": 3e9},
    }
    for message, check in cases.items():
        with pytest.raises(InvalidInput, match=message):
            plan(checks=[check])
    parsed = plan(checks=[GROWTH]).checks[0]
    assert parsed.max_growth is not None
    assert (parsed.max_growth.fraction, parsed.max_growth.per) == (0.1, 3600)
    assert "grows at most 10%/1h over 1h" in parsed.describe()


def test_the_baseline_is_measured_once_at_the_rollouts_start_and_kept(tmp_path: Path) -> None:
    clock = ManualClock(1_000_000.0)
    store = open_store(f"sqlite:///{tmp_path / 'r.db'}")
    source = Source(now=2.5e9, before={1_000_000.0: [1.0e9, 1.2e9]})
    controller = Controller(store, clock=clock, external=source)
    controller.start(plan(checks=[MEMORY], on_critical="pause"), actor="ops")
    clock.advance(120)
    evaluation = controller.evaluate("codec")
    [result] = evaluation.checks
    # Measured at the rollout's start over the check's window: the worst series, 1.2e9.
    assert ("memory", 600.0, 1_000_000.0) in source.asked
    assert result.outcome is Outcome.FAIL and result.value == pytest.approx(2.5 / 1.2)
    assert "is 2.08x the baseline 1.2e+09 measured before the rollout began" in result.reason
    [decision] = controller.tick()
    assert decision.kind == "pause"  # the decision taken anyway carries the baseline
    kept = store.rollout("codec").notes["baselines"]["memory"]  # type: ignore[union-attr]
    assert (kept["value"], kept["series"], kept["at"]) == (1.2e9, 2, 1_000_000.0)
    assert decision.evidence["baselines"]["memory"]["value"] == 1.2e9

    # A new controller (a restart) whose Prometheus has lost the old data still compares with
    # the kept value, and never asks for it again.
    restarted = Source(now=2.0e9)
    again = Controller(store, clock=clock, external=restarted)
    again.resume("codec", actor="ops", reason="fixed the leak")
    clock.advance(120)
    [result] = again.evaluate("codec").checks
    assert result.outcome is Outcome.PASS and "1.67x the baseline" in result.reason
    assert all(at is None for _, _, at in restarted.asked)


def test_a_baseline_measured_on_a_quiet_pass_is_recorded_on_its_own(tmp_path: Path) -> None:
    clock = ManualClock(5_000.0)
    store = open_store(f"sqlite:///{tmp_path / 'r.db'}")
    source = Source(now=1.1e9, before={5_000.0: [1.0e9]})
    controller = Controller(store, clock=clock, external=source)
    controller.start(plan(steps=[{"mode": "shadow", "hold": "1d"}], checks=[MEMORY]), actor="o")
    clock.advance(120)
    [decision] = controller.tick()
    assert decision.kind == "baseline"
    assert decision.reason == (
        "baselines measured: memory: 1e+09 over 10m before the rollout began"
    )
    clock.advance(60)
    assert controller.tick() == []  # measured once: nothing more to record
    assert [at for _, _, at in source.asked].count(5_000.0) == 1


def test_a_missing_baseline_is_inconclusive_with_the_reason(tmp_path: Path) -> None:
    clock = ManualClock(5_000.0)
    store = open_store(f"sqlite:///{tmp_path / 'r.db'}")
    controller = Controller(store, clock=clock, external=Source(now=9e9, before={5_000.0: []}))
    controller.start(plan(checks=[MEMORY]), actor="ops")
    clock.advance(120)
    [result] = controller.evaluate("codec").checks
    assert result.outcome is Outcome.INCONCLUSIVE
    assert result.reason.startswith(
        "no baseline from before the rollout: the query returned no series at the rollout's"
        " start (5000)"
    )
    assert controller.tick() == []
    assert "baselines" not in store.rollout("codec").notes  # type: ignore[union-attr]

    unreachable = Controller(store, clock=clock, external=Source(now=9e9))
    [result] = unreachable.evaluate("codec").checks
    assert result.outcome is Outcome.INCONCLUSIVE
    assert "measuring it failed (cannot connect to Prometheus" in result.reason
    assert result.reason.endswith("it is measured again next pass")


def line(slope: float, level: float, seconds: float, noise: float, seed: int) -> list[Any]:
    rng = np.random.default_rng(seed)
    times = np.arange(0.0, seconds, 30.0)
    values = level + slope * times + rng.normal(0.0, noise, times.size)
    return list(zip(times.tolist(), values.tolist(), strict=True))


def test_growth_is_the_least_squares_slope_over_the_mean_level_with_its_t_interval() -> None:
    points = line(slope=100.0 / 3600, level=1000.0, seconds=3600, noise=5.0, seed=1)
    found = growth_interval(points, per=3600, confidence=0.95)
    assert found is not None
    times, values = zip(*points, strict=True)
    fit = stats.linregress(times, values)
    level = float(np.mean(values))
    reach = stats.t.ppf(0.975, len(points) - 2) * fit.stderr
    assert found.estimate == pytest.approx(fit.slope * 3600 / level)
    assert (found.low, found.high) == pytest.approx(
        ((fit.slope - reach) * 3600 / level, (fit.slope + reach) * 3600 / level)
    )
    assert found.low < 100 / level < found.high  # covers the true growth, about 9.5%/h
    exact = growth_interval([(0, 100.0), (1800, 105.0), (3600, 110.0)], per=3600)
    assert exact is not None and exact.low == exact.high == pytest.approx(10 / 105)
    assert growth_interval([(0, 1.0), (60, 1.0)], per=3600) is None  # two points fit any line
    assert growth_interval([(0, 0.0), (60, 0.0), (120, 0.0)], per=3600) is None  # no level


def test_the_covering_rate_of_the_growth_interval_is_what_it_says() -> None:
    covered = 0
    for seed in range(400):
        points = line(slope=50.0 / 3600, level=1000.0, seconds=3600, noise=20.0, seed=seed)
        found = growth_interval([(t, v - 0) for t, v in points], per=3600, confidence=0.9)
        assert found is not None
        truth = 50.0 / found.level
        covered += found.low <= truth <= found.high
    assert 0.86 <= covered / 400 <= 0.94


def judge_growth(series: Sequence[Sequence[tuple[float, float]]], now: float = 3600.0) -> Any:
    rules = parse_plan({"migration": "m", "steps": [{"mode": "shadow"}], "checks": [GROWTH]})
    asked: list[tuple[float, float]] = []

    def ranges(check: Check, plan: Plan, since: float, until: float) -> list[Any]:
        asked.append((since, until))
        return list(series)

    result = evaluate(
        rules.checks[0],
        rules,
        Mode.CANARY,
        Telemetry({}),
        now=now,
        step_started_at=0,
        external_range=ranges,
    )
    return result, asked


def test_a_growth_check_fails_passes_or_waits_by_where_the_interval_lies() -> None:
    leaking = line(slope=300.0 / 3600, level=1000.0, seconds=3600, noise=5.0, seed=2)
    flat = line(slope=0.0, level=1000.0, seconds=3600, noise=5.0, seed=3)
    near = line(slope=100.0 / 3600, level=1000.0, seconds=3600, noise=60.0, seed=4)
    result, asked = judge_growth([leaking])
    assert asked == [(0.0, 3600.0)]  # the window, cut at the step's start
    assert result.outcome is Outcome.FAIL and result.threshold == 0.1
    assert result.reason.startswith("growing +2") and "is beyond 10.000%/1h" in result.reason
    assert judge_growth([flat])[0].outcome is Outcome.PASS
    straddling, _ = judge_growth([near])
    assert straddling.interval[0] < 0.1 < straddling.interval[1]
    assert straddling.outcome is Outcome.INCONCLUSIVE
    both, _ = judge_growth([flat, leaking])
    assert both.outcome is Outcome.FAIL and "(worst of 2 series)" in both.reason
    empty, _ = judge_growth([[(0.0, 1.0)]])
    assert empty.outcome is Outcome.INCONCLUSIVE and "three points" in empty.reason
    early, asked = judge_growth([leaking], now=30.0)
    assert early.outcome is Outcome.INCONCLUSIVE and asked == []


def test_a_retry_keeps_the_baseline_of_the_rollouts_start(tmp_path: Path) -> None:
    clock = ManualClock(2_000.0)
    store = open_store(f"sqlite:///{tmp_path / 'r.db'}")
    source = Source(now=3.0e9, before={2_000.0: [1.0e9]})
    controller = Controller(store, clock=clock, external=source)
    controller.start(plan(checks=[MEMORY]), actor="ops")
    clock.advance(120)
    [decision] = controller.tick()
    assert decision.kind == "abort"  # a failure on the first step goes back to legacy
    controller.retry("codec", actor="ops", reason="fixed the leak")
    rollout = store.rollout("codec")
    assert rollout is not None and rollout.started_at == 2_000.0
    assert rollout.notes["baselines"]["memory"]["value"] == 1.0e9
    clock.advance(120)
    [result] = controller.evaluate("codec").checks
    assert "3x the baseline 1e+09" in result.reason
    assert [at for _, _, at in source.asked].count(2_000.0) == 1
