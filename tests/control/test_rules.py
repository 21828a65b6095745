"""Rules that keep the controller honest: no fail on noise, no pass without evidence, no
decision on a state that changed meanwhile, and every rollout can be finished."""

from __future__ import annotations

from pathlib import Path

import pytest

from cutover.clock import ManualClock
from cutover.control.checks import Outcome, Telemetry, evaluate
from cutover.control.controller import Controller
from cutover.control.plan import parse_plan
from cutover.errors import ConflictError, InvalidInput
from cutover.model import Arm, Mode, RolloutStatus, State
from cutover.store import open_store
from cutover.telemetry import windows as w
from cutover.telemetry.windows import ArmCounts

from .test_scenarios import plan


def counts(**values: int) -> ArmCounts:
    arm = ArmCounts()
    for name, value in values.items():
        arm.counts[w.COUNTERS.index(name)] = value
    return arm


def judge(check: dict[str, object], legacy: ArmCounts, new: ArmCounts) -> Outcome:
    rules = parse_plan({"migration": "m", "steps": [{"mode": "shadow"}], "checks": [check]})
    telemetry = Telemetry({540: {Arm.LEGACY: legacy, Arm.NEW: new}})  # the last minute
    result = evaluate(rules.checks[0], rules, Mode.CANARY, telemetry, now=600, step_started_at=0)
    return result.outcome


def test_one_drift_in_a_short_window_is_not_a_failure() -> None:
    parity = {"name": "p", "metric": "drift_rate", "max": 0.001, "window": "10m"}
    one_in_176 = counts(calls=176, offpath=176, comparisons=176, drifts=1)
    assert judge(parity, counts(calls=176), one_in_176) is Outcome.INCONCLUSIVE
    many = counts(calls=2000, offpath=2000, comparisons=2000, drifts=20)
    assert judge(parity, counts(calls=2000), many) is Outcome.FAIL


def test_a_ratio_never_passes_on_a_handful_of_legacy_calls() -> None:
    ratio = {"name": "r", "metric": "error_rate", "max_ratio_to": "legacy", "max": 2}
    erring_new = counts(calls=10_000, errors=1000)
    assert judge(ratio, counts(calls=10), erring_new) is not Outcome.PASS
    assert judge(ratio, counts(calls=20_000), counts(calls=20_000)) is Outcome.PASS


def test_a_decision_on_a_state_changed_meanwhile_is_refused(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 's.db'}")
    store.write_state("m", State(mode=Mode.NEW), expected_version=0, actor="a", reason="r", at=1)
    store.write_state("m", State(), expected_version=1, actor="ops", reason="pager", at=2)
    with pytest.raises(ConflictError):
        store.commit("m", kind="complete", actor="controller", reason="r", at=3, expected_version=1)
    assert [d.kind for d in store.decisions("m")] == ["set", "set"]


def test_every_rollout_can_be_finished(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="nothing is compared in new mode"):
        plan(steps=[{"mode": "new", "min_comparisons": 10}])
    with pytest.raises(InvalidInput, match=r"min 0\.02 is above max 0\.01"):
        plan(checks=[{"name": "e", "metric": "error_rate", "max": 0.01, "min": 0.02}])
    with pytest.raises(InvalidInput, match=r"checks\[0\]\.max"):
        plan(checks=[{"name": "e", "metric": "p95_ms", "max": float("inf")}])
    controller = Controller(open_store(f"sqlite:///{tmp_path / 'r.db'}"), clock=ManualClock())
    controller.start(plan(steps=[{"mode": "new", "hold": "1d"}]), actor="a")
    with pytest.raises(InvalidInput, match=r"forced promotion .* marks the rollout complete"):
        controller.promote("codec", actor="ops", reason="done")
    assert controller.promote("codec", actor="ops", reason="done", force=True).kind == "complete"
    assert controller.store.rollout("codec").status is RolloutStatus.COMPLETED  # type: ignore[union-attr]


def test_a_stored_plan_does_not_depend_on_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    check = {"name": "mem", "source": "prometheus", "query": "max(up)", "max": 1}
    with pytest.raises(InvalidInput, match="needs a server"):
        Controller(open_store(f"sqlite:///{tmp_path / 'r.db'}"), clock=ManualClock()).start(
            plan(checks=[check]), actor="a"
        )
    monkeypatch.setenv("CUTOVER_PROMETHEUS_URL", "http://127.0.0.1:9")
    clock = ManualClock()
    controller = Controller(open_store(f"sqlite:///{tmp_path / 'r.db'}"), clock=clock)
    controller.start(plan(checks=[check]), actor="a")
    monkeypatch.delenv("CUTOVER_PROMETHEUS_URL")
    clock.advance(120)
    [result] = controller.evaluate("codec").checks
    assert result.outcome is Outcome.INCONCLUSIVE and "no Prometheus server" in result.reason
    assert controller.abort("codec", actor="ops", reason="pager").kind == "abort"


def test_one_broken_rollout_does_not_stop_the_others(tmp_path: Path) -> None:
    def external(check: object, rules: object, window: float) -> list[float]:
        raise RuntimeError("a bug in an external source")

    clock = ManualClock()
    store = open_store(f"sqlite:///{tmp_path / 'r.db'}")
    controller = Controller(store, clock=clock, external=external)
    broken = {
        "name": "mem",
        "source": "prometheus",
        "query": "max(up)",
        "max": 1,
        "url": "http://x",
    }
    controller.start(plan(migration="a", checks=[broken]), actor="ops")
    controller.start(
        plan(migration="b", steps=[{"mode": "shadow"}, {"mode": "new"}], checks=[]), actor="ops"
    )
    clock.advance(120)
    [decision] = controller.tick()
    assert (decision.migration, decision.kind) == ("b", "promote")


def test_a_failure_names_the_bound_it_crossed() -> None:
    rules = parse_plan(
        {
            "migration": "m",
            "steps": [{"mode": "shadow"}],
            "checks": [{"name": "e", "metric": "error_rate", "min": 0.01, "max": 0.2}],
        }
    )
    telemetry = Telemetry({540: {Arm.LEGACY: counts(calls=10), Arm.NEW: counts(calls=5000)}})
    result = evaluate(rules.checks[0], rules, Mode.CANARY, telemetry, now=600, step_started_at=0)
    assert result.outcome is Outcome.FAIL and result.threshold == 0.01
    assert result.reason.endswith("is beyond 0.01")
