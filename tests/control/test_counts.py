"""Counts and zero-event criteria: at most N events a window, and zero only with proof."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from cutover.clock import ManualClock
from cutover.control.checks import CheckResult, Outcome, Telemetry, evaluate
from cutover.control.controller import Controller
from cutover.control.plan import parse_plan
from cutover.errors import InvalidInput
from cutover.model import Arm, Mode, RolloutStatus
from cutover.store import open_store
from cutover.telemetry import windows as w
from cutover.telemetry.windows import ArmCounts

from .test_rules import counts
from .traffic import Traffic


def _judge(check: dict[str, object], legacy: ArmCounts, new: ArmCounts, mode: Mode) -> CheckResult:
    plan = parse_plan(
        {"migration": "m", "steps": [{"mode": "canary", "percent": 50}], "checks": [check]}
    )
    telemetry = Telemetry({540: {Arm.LEGACY: legacy, Arm.NEW: new}})
    return evaluate(plan.checks[0], plan, mode, telemetry, now=600, step_started_at=0)


NO_FALLBACKS = {"name": "fb", "metric": "fallbacks", "max": 0, "max_rate": 0.0001, "window": "48h"}


def test_zero_events_pass_only_once_enough_trials_prove_the_rate() -> None:
    # At 95%, zero events in n trials bound the rate under 1 - 0.05^(1/n): 29,956 are needed
    # to prove it under 0.0001.
    assert math.ceil(math.log(0.05) / math.log1p(-0.0001)) == 29_956
    few = _judge(NO_FALLBACKS, counts(calls=10), counts(calls=29_955), Mode.CANARY)
    assert few.outcome is Outcome.INCONCLUSIVE
    assert "0 fallbacks in 29955 calls served by new" in few.reason
    assert "29956 clean calls served by new needed" in few.reason
    enough = _judge(NO_FALLBACKS, counts(calls=10), counts(calls=29_956), Mode.CANARY)
    assert enough.outcome is Outcome.PASS
    assert "95% exact bound: the rate is under 0.0001 (rule of three: 3/n = 0.0001)" in (
        enough.reason
    )
    evidence = enough.to_json()
    assert evidence["interval"][1] == pytest.approx(1 - 0.05 ** (1 / 29_956))
    assert evidence["bound"].startswith("exact one-sided binomial bound")
    one = _judge(NO_FALLBACKS, counts(calls=10), counts(calls=90_000, fallbacks=1), Mode.CANARY)
    assert one.outcome is Outcome.FAIL and one.reason.startswith("1 fallbacks in 90000 calls")


def test_no_trials_prove_nothing() -> None:
    result = _judge(NO_FALLBACKS, counts(), counts(), Mode.CANARY)
    assert result.outcome is Outcome.INCONCLUSIVE and "no trials, no bound" in result.reason


def test_a_count_fails_above_its_max_per_window_and_passes_at_it() -> None:
    mismatches = {"name": "d", "metric": "drifts", "max": 100, "window": "1h"}
    legacy = counts(calls=50_000, offpath=50_000, comparisons=50_000, drifts=100)
    assert _judge(mismatches, legacy, counts(calls=50_000), Mode.SHADOW).outcome is Outcome.PASS
    legacy.counts[w.DRIFTS] = 101
    failed = _judge(mismatches, legacy, counts(calls=50_000), Mode.SHADOW)
    assert failed.outcome is Outcome.FAIL
    assert failed.reason == "101 drifts in 50000 comparisons exceed 100"


def test_legacy_calls_are_judged_in_new_mode() -> None:
    none_left = {"name": "legacy", "metric": "legacy_calls", "max": 0, "during": "new"}
    forced = _judge(none_left, counts(calls=3), counts(calls=10_000), Mode.NEW)
    assert forced.outcome is Outcome.FAIL
    assert forced.reason == "3 legacy calls in 10003 calls on either arm exceed 0"
    assert _judge(none_left, counts(), counts(calls=10_000), Mode.NEW).outcome is Outcome.PASS
    assert _judge(none_left, counts(calls=5), counts(), Mode.CANARY).outcome is Outcome.SKIPPED


def test_gone_calls_count_the_proxys_410_answers_apart_from_legacy_runs() -> None:
    # Two calls reached a retired route and were answered 410 by the proxy (each a call on the
    # legacy endpoint, counted gone), one more ran on legacy through a forced instance.
    legacy = counts(calls=3, gone=2)
    gone = {"name": "gone", "metric": "gone_calls", "max": 0, "during": "new"}
    found = _judge(gone, legacy, counts(calls=10_000), Mode.NEW)
    assert found.outcome is Outcome.FAIL
    assert found.reason == "2 gone calls in 10003 calls on either arm exceed 0"
    ran = _judge({**gone, "metric": "legacy_calls", "max": 1}, legacy, counts(), Mode.NEW)
    assert ran.outcome is Outcome.PASS and ran.reason.startswith("1 legacy calls in 3 calls")
    clean = _judge(gone, counts(calls=1), counts(calls=10_000), Mode.NEW)
    assert clean.outcome is Outcome.PASS
    assert _judge(gone, legacy, counts(), Mode.CANARY).outcome is Outcome.SKIPPED


@pytest.mark.parametrize(
    ("check", "message"),
    [
        ({"metric": "errors", "min": 1, "max": 5}, "errors is a count: give the most allowed"),
        ({"metric": "errors", "max": -1}, "errors is a count: give the most allowed"),
        ({"metric": "errors", "max": 5, "method": "fixed"}, "judged without a method"),
        ({"metric": "drifts", "max": 5, "arm": "new"}, "drifts counts both arms; remove arm"),
        ({"metric": "gone_calls", "max": 0, "arm": "legacy"}, "gone_calls counts both arms"),
        ({"metric": "errors", "max": 5, "max_ratio_to": "legacy"}, "not a ratio"),
        ({"metric": "errors", "max": 5, "max_rate": 0.01}, "max_rate applies to a count with"),
        ({"metric": "error_rate", "max": 0, "max_rate": 0.01}, "max_rate applies to a count"),
    ],
)
def test_a_count_check_that_makes_no_sense_is_refused(
    check: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        parse_plan(
            {"migration": "m", "steps": [{"mode": "shadow"}], "checks": [{"name": "c", **check}]}
        )


def test_a_count_rolls_back_a_step_on_the_101st_drift(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 's.db'}")
    clock = ManualClock(start=6000.0)
    plan = parse_plan(
        {
            "migration": "m",
            "steps": [{"mode": "shadow"}, {"mode": "canary", "percent": 10, "hold": "1d"}],
            "checks": [{"name": "mismatches", "metric": "drifts", "max": 100, "window": "1h"}],
        }
    )
    controller = Controller(store, clock=clock)
    controller.start(plan, actor="ops", reason="test")
    controller.promote("m", actor="ops", reason="to canary", force=True)
    traffic = Traffic(store, "m", clock, calls=1000, drift=lambda state: 0.01)  # ~10 a minute
    kinds: list[str] = []
    for _ in range(20):
        traffic.minute()
        kinds += [d.kind for d in controller.tick()]
        if kinds:
            break
    assert kinds == ["rollback"]
    decision = store.decisions("m")[-1]
    assert "mismatches failed" in decision.reason and "exceed 100" in decision.reason
    rollout = store.rollout("m")
    assert rollout is not None and rollout.status is RolloutStatus.ROLLED_BACK
