"""The controller on a simulated clock: whole rollouts walked, caught, held and resumed."""

from __future__ import annotations

import itertools
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from cutover._yaml import parse_yaml
from cutover.clock import ManualClock
from cutover.control.controller import Controller
from cutover.control.plan import Plan, parse_plan
from cutover.model import Decision, Mode, RolloutStatus, State
from cutover.store import MIN_LEASE, Store, open_store

from .traffic import Traffic

PLAN = """
migration: codec
steps:
  - {mode: shadow, hold: 10m, min_comparisons: 5000}
  - {mode: canary, percent: 5, hold: 10m, sample: 0.5}
  - {mode: canary, percent: 25, hold: 10m}
  - {mode: canary, percent: 50, hold: 10m}
  - {mode: canary, percent: 100, hold: 10m, approval: true}
  - {mode: new, hold: 5m, approval: true}
checks:
  - {name: parity, metric: drift_rate, max: 0.001, window: 10m}
  - {name: new-errors, metric: error_rate, arm: new, max: 0.05, window: 5m}
  - {name: latency, metric: p99_ms, arm: new, max_ratio_to: legacy, max: 2.0, window: 10m}
  - {name: errors-warn, metric: error_rate, arm: new, max: 0.02, window: 5m, severity: warning}
"""


def plan(text: str = PLAN, **changes: object) -> Plan:
    data = parse_yaml(text, "plan.yaml")
    data.update(changes)
    return parse_plan(data)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return open_store(f"sqlite:///{tmp_path / 'rollout.db'}")


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


def canary_above(percent: float, value: float) -> Callable[[State], float]:
    return lambda state: value if state.mode is Mode.CANARY and state.percent > percent else 0.0


def drive(
    controller: Controller,
    traffic: Traffic | None,
    minutes: int,
    *,
    approver: str | None = None,
    until: Callable[[list[Decision]], bool] = lambda _: False,
) -> list[Decision]:
    """Minutes of traffic with a controller pass after each; approves what asks for it."""
    taken: list[Decision] = []
    for _ in range(minutes):
        if traffic is None:
            controller.clock.advance(60)  # type: ignore[attr-defined]
        else:
            traffic.minute()
        for decision in controller.tick():
            taken.append(decision)
            if decision.kind == "approval_needed" and approver:
                taken.append(
                    controller.approve(decision.migration, by=approver, reason="change board ok")
                )
        if until(taken):
            break
    return taken


def kinds(decisions: list[Decision]) -> list[str]:
    return [d.kind for d in decisions]


def test_a_clean_new_arm_walks_the_plan_to_the_end(store: Store, clock: ManualClock) -> None:
    controller = Controller(store, clock=clock)
    controller.start(plan(), actor="alice", source="plan.yaml")
    traffic = Traffic(store, "codec", clock)
    taken = drive(controller, traffic, 120, approver="cab")
    assert kinds(taken) == [
        "promote",
        "promote",
        "promote",
        "approval_needed",
        "approve",
        "promote",
        "approval_needed",
        "approve",
        "promote",
        "complete",
    ]
    rollout = store.rollout("codec")
    assert rollout is not None and rollout.status is RolloutStatus.COMPLETED
    state = store.state("codec")
    assert state is not None and state.mode is Mode.NEW
    promotions = [d for d in taken if d.kind == "promote"]
    # Each step held its 10 minutes (counted from whole windows after the step began).
    starts = [d.at for d in store.decisions("codec") if d.kind in ("start", "promote")]
    assert all(later - earlier >= 600 for earlier, later in itertools.pairwise(starts))
    # Identical latency distributions are never mistaken for a regression by the rank test.
    for decision in promotions:
        latency = next(c for c in decision.evidence["checks"] if c["name"] == "latency")
        assert latency["outcome"] in ("pass", "skipped"), latency
    assert "approved by cab" in promotions[-1].reason


def test_drift_above_25_percent_is_caught_and_rolled_back_within_the_window(
    store: Store, clock: ManualClock
) -> None:
    controller = Controller(store, clock=clock)
    controller.start(plan(), actor="alice")
    traffic = Traffic(store, "codec", clock, drift=canary_above(25, 0.01))
    taken = drive(controller, traffic, 120, until=lambda t: "rollback" in kinds(t))
    assert kinds(taken) == ["promote", "promote", "promote", "rollback"]
    to_50, rollback = taken[-2], taken[-1]
    assert to_50.new.percent == 50
    assert rollback.at - to_50.at <= 600, "caught within the parity check's 10-minute window"
    assert rollback.new.mode is Mode.CANARY and rollback.new.percent == 25
    assert rollback.actor == "controller"
    parity = next(c for c in rollback.evidence["checks"] if c["name"] == "parity")
    assert parity["outcome"] == "fail" and parity["interval"][0] > 0.001
    assert "parity failed" in rollback.reason and "drift rate" in rollback.reason
    rollout = store.rollout("codec")
    assert rollout is not None and rollout.status is RolloutStatus.ROLLED_BACK
    # Rolled back, it is guarded but not promoted again until an operator says so.
    assert drive(controller, traffic, 40) == []
    retried = controller.retry("codec", actor="ops", reason="fixed the rounding")
    assert retried.kind == "retry" and store.rollout("codec").status is RolloutStatus.RUNNING  # type: ignore[union-attr]


def test_a_stable_latency_regression_below_the_ratio_is_caught_by_the_rank_test(
    store: Store, clock: ManualClock
) -> None:
    controller = Controller(store, clock=clock)
    canary_only = plan(
        steps=[{"mode": "canary", "percent": 50, "hold": "1h"}, {"mode": "new"}],
        on_critical="pause",
    )
    controller.start(canary_only, actor="alice")
    traffic = Traffic(store, "codec", clock, new_ms=lambda state: 3.0)  # 1.5x legacy's 2 ms
    taken = drive(controller, traffic, 30, until=bool)
    assert kinds(taken) == ["pause"]
    latency = next(c for c in taken[0].evidence["checks"] if c["name"] == "latency")
    assert latency["outcome"] == "fail"
    assert latency["value"] < 2.0, "the fixed 2x ratio alone would not have caught it"
    assert latency["rank_test"]["shifted"] is True
    assert latency["rank_test"]["p_value"] < 0.001
    assert "rank test" in taken[0].reason
    assert store.rollout("codec").status is RolloutStatus.PAUSED  # type: ignore[union-attr]


def test_an_idle_migration_stays_inconclusive(store: Store, clock: ManualClock) -> None:
    controller = Controller(store, clock=clock)
    controller.start(plan(), actor="alice")
    taken = []
    for _ in range(72):  # three days without a single call
        clock.advance(3600)
        taken += controller.tick()
    assert taken == [], "neither promoted nor rolled back"
    evaluation = controller.evaluate("codec")
    assert evaluation.rollout.step == 0 and evaluation.rollout.status is RolloutStatus.RUNNING
    assert "0 of 5000 required comparisons" in evaluation.blockers
    outcomes = {c.name: c.outcome.value for c in evaluation.checks}
    assert outcomes == {
        "parity": "inconclusive",
        "new-errors": "inconclusive",
        "latency": "inconclusive",
        "errors-warn": "inconclusive",
    }
    assert any("no comparisons in the window" in b for b in evaluation.blockers)


def test_few_clean_comparisons_do_not_promote_past_a_strict_parity_limit(
    store: Store, clock: ManualClock
) -> None:
    controller = Controller(store, clock=clock)
    controller.start(plan(steps=[{"mode": "shadow", "hold": "5m"}, {"mode": "new"}]), actor="a")
    traffic = Traffic(store, "codec", clock, calls=4)  # 40 comparisons in ten minutes
    assert drive(controller, traffic, 10) == []
    parity = next(c for c in controller.evaluate("codec").checks if c.name == "parity")
    assert parity.outcome.value == "inconclusive"
    assert parity.value == 0.0 and parity.interval is not None and parity.interval[1] > 0.001


def test_an_approval_step_waits_until_approved(store: Store, clock: ManualClock) -> None:
    controller = Controller(store, clock=clock)
    controller.start(plan(), actor="alice")
    traffic = Traffic(store, "codec", clock)
    taken = drive(controller, traffic, 120)  # nobody approves
    assert kinds(taken) == ["promote", "promote", "promote", "approval_needed"]
    assert store.state("codec").percent == 50  # type: ignore[union-attr]
    waiting = controller.evaluate("codec")
    assert waiting.blockers == ("approval needed to enter step 5/6 (canary 100%)",)
    approved = controller.approve("codec", by="bob", reason="change board 4711")
    assert approved.actor == "bob" and not approved.changed
    following = drive(controller, traffic, 1)
    assert kinds(following) == ["promote"] and following[0].new.percent == 100
    assert "approved by bob" in following[0].reason


def test_a_controller_that_crashes_mid_step_resumes_where_it_was(
    tmp_path: Path, clock: ManualClock
) -> None:
    url = f"sqlite:///{tmp_path / 'rollout.db'}"
    first = Controller(open_store(url), clock=clock, lease=MIN_LEASE)
    first.start(plan(), actor="alice")
    traffic = Traffic(first.store, "codec", clock)
    taken = drive(first, traffic, 30, until=bool)
    assert kinds(taken) == ["promote"]
    promoted_at = taken[0].at
    drive(first, traffic, 4)
    del first  # the process dies mid-step: nothing but the store survives
    second = Controller(open_store(url), clock=clock)
    traffic.store = second.store
    deadline = time.monotonic() + 60
    while second.tick() == [] and second.standby and time.monotonic() < deadline:
        time.sleep(0.1)  # the dead controller's lease runs out (real time, not the clock's)
    resumed = drive(second, traffic, 30, until=bool)
    assert kinds(resumed) == ["promote"]
    assert resumed[0].new.percent == 25
    assert resumed[0].at - promoted_at < 14 * 60, "the hold counted from the stored step start"


def test_a_warning_holds_promotion_until_it_clears(store: Store, clock: ManualClock) -> None:
    controller = Controller(store, clock=clock)
    controller.start(plan(), actor="alice")
    errors = {"rate": 0.0}
    traffic = Traffic(
        store, "codec", clock, new_errors=lambda s: errors["rate"] if s.percent == 25 else 0.0
    )
    drive(controller, traffic, 60, until=lambda t: bool(t) and t[-1].new.percent == 25)
    errors["rate"] = 0.035  # over the 2% warning, under the 5% critical limit
    held = drive(controller, traffic, 30)
    assert kinds(held) == ["warning"]
    assert "errors-warn" in held[0].reason and store.state("codec").percent == 25  # type: ignore[union-attr]
    errors["rate"] = 0.0
    cleared = drive(controller, traffic, 30, until=lambda t: "promote" in kinds(t))
    assert kinds(cleared) == ["warning_cleared", "promote"]


def test_a_state_changed_by_hand_pauses_the_rollout_and_resume_restores_it(
    store: Store, clock: ManualClock
) -> None:
    from cutover import operations

    controller = Controller(store, clock=clock)
    controller.start(plan(), actor="alice")
    operations.set_state(
        store,
        "codec",
        operations.Change(mode=Mode.LEGACY),
        reason="pager: turn it off",
        actor="oncall",
        clock=clock,
    )
    taken = drive(controller, Traffic(store, "codec", clock), 2)
    assert kinds(taken) == ["pause"] and "by oncall" in taken[0].reason
    resumed = controller.resume("codec", actor="alice", reason="false alarm")
    assert resumed.changed and resumed.new.mode is Mode.SHADOW


def test_a_critical_failure_on_the_first_step_returns_to_legacy(
    store: Store, clock: ManualClock
) -> None:
    controller = Controller(store, clock=clock)
    controller.start(plan(), actor="alice")
    traffic = Traffic(store, "codec", clock, drift=lambda s: 0.05)
    taken = drive(controller, traffic, 15, until=bool)
    assert kinds(taken) == ["abort"]
    assert taken[0].new.mode is Mode.LEGACY
    rollout = store.rollout("codec")
    assert rollout is not None and rollout.status is RolloutStatus.ABORTED
    again = controller.retry("codec", actor="alice", reason="fixed")
    assert again.new.mode is Mode.SHADOW and store.rollout("codec").step == 0  # type: ignore[union-attr]


def test_dry_run_decides_without_writing(store: Store, clock: ManualClock) -> None:
    Controller(store, clock=clock).start(plan(), actor="alice")
    traffic = Traffic(store, "codec", clock)
    for _ in range(12):
        traffic.minute()
    before = (store.state("codec"), store.rollout("codec"), len(store.decisions("codec")))
    would = Controller(store, clock=clock, dry_run=True).tick()
    assert kinds(would) == ["promote"] and would[0].id == 0 and would[0].new.percent == 5
    assert (store.state("codec"), store.rollout("codec"), len(store.decisions("codec"))) == before


def test_retry_asks_again_for_the_approvals_ahead(store: Store, clock: ManualClock) -> None:
    controller = Controller(store, clock=clock)
    controller.start(plan(), actor="alice")
    controller.approve("codec", by="cab", reason="early", step=5)
    controller.abort("codec", actor="ops", reason="pager")
    controller.retry("codec", actor="ops", reason="again")
    evaluation = controller.evaluate("codec")
    assert evaluation.rollout.approval(4) is None
    assert evaluation.to_json()["steps"][4]["approved"] is None


def test_passes_with_the_default_methods_load_scipy_special_not_scipy_stats(
    tmp_path: Path,
) -> None:
    """The always-valid bounds and the rank test need SciPy's special functions alone: a
    `cutover rollout tick` from cron does not load scipy.stats (about a second) on every run."""
    code = f"""
import sys
from cutover.clock import ManualClock
from cutover.control.controller import Controller
from cutover.store import open_store
from tests.control.test_scenarios import drive, kinds, plan
from tests.control.traffic import Traffic
clock = ManualClock()
controller = Controller(open_store({f"sqlite:///{tmp_path / 'r.db'}"!r}), clock=clock)
controller.start(plan(), actor="alice")
taken = kinds(drive(controller, Traffic(controller.store, "codec", clock), 25))
print(taken.count("promote"), "scipy.special" in sys.modules, "scipy.stats" in sys.modules)
"""
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["2", "True", "False"]
