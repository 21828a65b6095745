"""Cohort steps: entering one pins its cohort's tenants to new, and a rollback or an abort of
that step pins exactly that wave to legacy, in the same transaction as the decision, the
state and the rollout; other waves stay where they are."""

from __future__ import annotations

from typing import Any

import pytest

from cutover.clock import ManualClock
from cutover.control.controller import Controller
from cutover.control.plan import parse_plan
from cutover.data import cohorts
from cutover.errors import InvalidInput
from cutover.model import Mode, State
from cutover.store import CohortStatus, Store

from .traffic import Traffic

PLAN: dict[str, Any] = {
    "migration": "orders",
    "steps": [
        {"name": "dual write", "mode": "canary", "percent": 0, "sample": 1.0, "hold": "1h"},
        {"mode": "canary", "percent": 0, "cohort": "wave-1", "hold": "48h"},
        {"mode": "canary", "percent": 0, "cohort": "wave-2", "hold": "24h"},
        {"mode": "new", "hold": "1d"},
    ],
    "checks": [
        {
            "name": "errors",
            "metric": "error_rate",
            "max": 0.05,
            "method": "fixed",
            "window": "1m",
            "during": "canary",
        }
    ],
}


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start=6000.0)


def _waves(store: Store, clock: ManualClock) -> None:
    store.write_state(
        "orders", State(mode=Mode.LEGACY), expected_version=0, actor="ops", reason="r", at=clock()
    )
    for wave, tenants in ((1, ["acme", "globex"]), (2, ["initech", "umbrella"])):
        cohorts.add(
            store, "orders", f"wave-{wave}", tenants=tenants, wave=wave, actor="ana", clock=clock
        )


def _status(store: Store, name: str) -> CohortStatus:
    cohort = store.cohort("orders", name)
    assert cohort is not None
    return cohort.status


def test_entering_a_cohort_step_pins_its_tenants_in_one_decision(
    store: Store, clock: ManualClock
) -> None:
    _waves(store, clock)
    controller = Controller(store, clock=clock)
    controller.start(parse_plan(PLAN), actor="ana", reason="tenant move")
    before = store.cohort("orders", "wave-1")
    assert before is not None
    decision = controller.promote("orders", actor="ana", reason="CAB-1", force=True)
    assert decision.reason.endswith("; cohort wave-1 (2 tenants) pinned to new")
    assert decision.evidence["cohort"] == {
        "name": "wave-1",
        "wave": 1,
        "tenants": ["acme", "globex"],
        "status": "promoted",
    }
    state = store.state("orders")
    assert state is not None and state.pins_new == {"acme", "globex"}
    assert decision.new.version == state.version
    after = store.cohort("orders", "wave-1")
    assert after is not None and after.status is CohortStatus.PROMOTED
    assert after.version == before.version + 1 and after.promoted_at == decision.at
    assert after.window == 48 * 3600  # the step's hold is the wave's rollback window
    assert _status(store, "wave-2") is CohortStatus.PLANNED


def test_a_rollback_pins_exactly_its_wave_to_legacy(store: Store, clock: ManualClock) -> None:
    _waves(store, clock)
    controller = Controller(store, clock=clock)
    controller.start(parse_plan(PLAN), actor="ana", reason="tenant move")
    controller.promote("orders", actor="ana", reason="wave 1", force=True)
    controller.promote("orders", actor="ana", reason="wave 2", force=True)
    state = store.state("orders")
    assert state is not None and state.pins_new == {"acme", "globex", "initech", "umbrella"}

    traffic = Traffic(store, "orders", clock, new_errors=lambda state: 0.5)
    traffic.minute()
    traffic.minute()
    decisions = controller.tick()
    assert [d.kind for d in decisions] == ["rollback"]
    assert decisions[0].reason.endswith("; cohort wave-2 (2 tenants) pinned to legacy")
    state = store.state("orders")
    assert state is not None
    assert state.pins_new == {"acme", "globex"}  # wave 1 stays on new
    assert state.pins_legacy == {"initech", "umbrella"}
    assert _status(store, "wave-1") is CohortStatus.PROMOTED
    assert _status(store, "wave-2") is CohortStatus.ROLLED_BACK
    rollout = store.rollout("orders")
    assert rollout is not None and rollout.step == 1  # back on wave 1's step

    # Fixed: the retry holds wave 1 again, and promoting moves wave 2 to new once more.
    traffic.new_errors = lambda state: 0.0
    controller.retry("orders", actor="ana", reason="fixed")
    controller.promote("orders", actor="ana", reason="wave 2 again", force=True)
    state = store.state("orders")
    assert state is not None
    assert state.pins_new == {"acme", "globex", "initech", "umbrella"} and not state.pins_legacy
    assert _status(store, "wave-2") is CohortStatus.PROMOTED


def test_an_abort_at_a_cohort_step_sends_that_wave_back(store: Store, clock: ManualClock) -> None:
    _waves(store, clock)
    controller = Controller(store, clock=clock)
    controller.start(parse_plan(PLAN), actor="ana", reason="tenant move")
    controller.promote("orders", actor="ana", reason="wave 1", force=True)
    aborted = controller.abort("orders", actor="ana", reason="CAB says stop")
    assert aborted.reason.endswith("; cohort wave-1 (2 tenants) pinned to legacy")
    state = store.state("orders")
    assert state is not None and state.mode is Mode.LEGACY
    assert state.pins_legacy == {"acme", "globex"} and not state.pins_new


def test_a_plan_naming_a_missing_cohort_does_not_start(store: Store, clock: ManualClock) -> None:
    _waves(store, clock)
    plan = {**PLAN, "steps": [*PLAN["steps"][:2], {"mode": "new", "cohort": "wave-9"}]}
    with pytest.raises(InvalidInput) as refused:
        Controller(store, clock=clock).start(parse_plan(plan), actor="ana", source="p.yaml")
    assert str(refused.value) == (
        "p.yaml: steps[2].cohort: 'orders' has no cohort 'wave-9'; add it first with"
        " `cutover cohort add wave-9 --migration orders --tenants ... --wave N`"
    )
    assert store.rollout("orders") is None


def test_a_cohort_is_moved_by_one_step_only() -> None:
    twice = {**PLAN, "steps": [*PLAN["steps"], {"mode": "new", "cohort": "wave-1"}]}
    with pytest.raises(InvalidInput, match="cohort 'wave-1' is named by two steps"):
        parse_plan(twice)
    with pytest.raises(InvalidInput, match=r"steps\[0\].cohort: cohort name 'wave 1'"):
        parse_plan({"migration": "m", "steps": [{"mode": "shadow", "cohort": "wave 1"}]})
