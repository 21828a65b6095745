"""Audit gates: a cohort step with ``audit`` is entered only once an audit report judges its
cohort's data within the drift allowed, a report that is kept across controller restarts and
stops counting when the cohort is rolled back."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from cutover.clock import ManualClock
from cutover.control.controller import Controller
from cutover.control.plan import parse_plan
from cutover.data import cohorts
from cutover.errors import InvalidInput
from cutover.model import Mode, State
from cutover.store import CohortStatus, Store

WAIT = "waiting for an audit of cohort wave-1: cutover rollout audit orders FILE --by WHO"


def _plan(**gate: Any) -> dict[str, Any]:
    return {
        "migration": "orders",
        "steps": [
            {"name": "dual write", "mode": "canary", "percent": 0, "sample": 1.0, "hold": "1h"},
            {
                "name": "wave 1",
                "mode": "canary",
                "percent": 0,
                "cohort": "wave-1",
                "hold": "24h",
                "audit": {"max_drift": 1},
                **gate,
            },
            {"mode": "new", "hold": "1d"},
        ],
    }


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start=1_780_000_000.0)


def _started(store: Store, clock: ManualClock, **gate: Any) -> Controller:
    store.write_state(
        "orders", State(mode=Mode.LEGACY), expected_version=0, actor="ops", reason="r", at=clock()
    )
    cohorts.add(
        store, "orders", "wave-1", tenants=["acme", "globex"], wave=1, actor="ana", clock=clock
    )
    controller = Controller(store, clock=clock)
    controller.start(parse_plan(_plan(**gate)), actor="ana", reason="tenant move")
    return controller


def _report(at: float, **drift: dict[str, int]) -> dict[str, Any]:
    """An audit report as `cutover audit --json --tenant-column tenant` writes it."""
    return {
        "format": "cutover-audit/1",
        "source": {"table": "orders"},
        "target": {"table": "orders"},
        "tenant_column": "tenant",
        "finished_at": datetime.fromtimestamp(at, UTC).isoformat().replace("+00:00", "Z"),
        "tenants": {"hooli": {"changed": 40}, **drift},
    }


def _step(store: Store) -> int:
    rollout = store.rollout("orders")
    assert rollout is not None
    return rollout.step


def test_a_cohort_step_waits_for_its_audit_and_refuses_drift(
    store: Store, clock: ManualClock
) -> None:
    controller = _started(store, clock)
    clock.advance(3600)
    assert controller.tick() == []
    assert controller.evaluate("orders").blockers == (WAIT,)
    with pytest.raises(InvalidInput) as refused:
        controller.promote("orders", actor="ana", reason="now", force=True)
    assert str(refused.value) == f"step 2/3 (wave 1) is {WAIT}"

    drifted = _report(clock(), acme={"missing": 1, "changed": 1}, globex={"extra": 3})
    with pytest.raises(InvalidInput) as refused:
        controller.audit("orders", drifted, by="dana")
    assert str(refused.value) == (
        "tenants 'acme' (2: 1 missing, 0 extra, 1 changed) and 'globex' (3: 0 missing, 3 extra,"
        " 0 changed) of cohort 'wave-1' have more rows of drift than the 1 allowed; reconcile"
        " and audit again, or allow more in steps[1].audit.max_drift of the plan"
    )
    assert controller.tick() == [] and _step(store) == 0


def test_a_clean_audit_lets_the_next_pass_pin_the_cohort_even_after_a_restart(
    store: Store, clock: ManualClock, tmp_path: Path
) -> None:
    controller = _started(store, clock)
    clock.advance(3600)
    path = tmp_path / "wave-1.json"
    path.write_text(json.dumps(_report(clock() - 60, acme={"changed": 1})))
    given = controller.audit("orders", str(path), by="dana", reason="nightly audit")
    assert given.kind == "audit"
    assert given.reason == (
        "dana gave the audit of cohort wave-1 for step 2/3 (wave 1): 2 tenants, at most 1 rows"
        " of drift each (1 allowed): nightly audit"
    )
    evidence = given.evidence["audit"]
    assert evidence["file"] == str(path) and evidence["cohort"] == "wave-1"
    assert evidence["tenants"] == {
        "acme": {"missing": 0, "extra": 0, "changed": 1, "pending": 0, "drift": 1},
        "globex": {"missing": 0, "extra": 0, "changed": 0, "pending": 0, "drift": 0},
    }
    assert evidence["audited_at"] == clock() - 60
    assert _step(store) == 0  # an audit moves nothing by itself

    restarted = Controller(store, clock=clock)  # the audit is kept with the rollout
    status = restarted.evaluate("orders").to_json()
    assert status["steps"][1]["audit"] == {"max_drift": 1}
    assert status["steps"][1]["audited"]["by"] == "dana"
    [promoted] = restarted.tick()
    assert promoted.kind == "promote" and promoted.reason.endswith(
        "; cohort wave-1 (2 tenants) pinned to new"
    )
    state = store.state("orders")
    assert state is not None and state.pins_new == {"acme", "globex"}
    with pytest.raises(InvalidInput, match="no step of the plan for 'orders' waits for an audit"):
        restarted.audit("orders", _report(clock()), by="dana")


def test_role_approvals_and_the_audit_are_both_needed(store: Store, clock: ManualClock) -> None:
    controller = _started(store, clock, approval={"roles": ["cab", "data"]})
    clock.advance(3600)
    [asked] = controller.tick()
    assert asked.kind == "approval_needed"
    assert controller.evaluate("orders").blockers == (
        "approval needed to enter step 2/3 (wave 1) from cab, data",
        WAIT,
    )
    controller.audit("orders", _report(clock()), by="dana")
    controller.approve("orders", by="carl", reason="CAB-7", role="cab")
    assert controller.tick() == []
    assert controller.evaluate("orders").blockers == (
        "approval needed to enter step 2/3 (wave 1) from data",
    )
    controller.approve("orders", by="dana", reason="parity signed", role="data")
    [promoted] = controller.tick()
    assert promoted.kind == "promote" and _step(store) == 1


def test_an_audit_taken_before_the_cohorts_rollback_does_not_count(
    store: Store, clock: ManualClock
) -> None:
    controller = _started(store, clock)
    clock.advance(3600)
    early = _report(clock())
    controller.audit("orders", early, by="dana")
    controller.tick()
    clock.advance(600)
    controller.abort("orders", actor="ana", reason="billing totals differ")
    cohort = store.cohort("orders", "wave-1")
    assert cohort is not None and cohort.status is CohortStatus.ROLLED_BACK
    rolled_back = "2026-05-28 21:36:40 UTC"

    with pytest.raises(InvalidInput) as refused:
        controller.retry("orders", actor="ana", reason="fixed", step=2)
    assert str(refused.value) == (
        "step 2/3 (wave 1) is waiting for an audit of cohort wave-1 taken after its rollback"
        f" at {rolled_back}: cutover rollout audit orders FILE --by WHO"
    )
    with pytest.raises(InvalidInput) as refused:
        controller.audit("orders", early, by="dana")
    assert str(refused.value) == (
        "the audit report finished at 2026-05-28 21:26:40 UTC, before cohort 'wave-1' was"
        f" rolled back at {rolled_back}; audit the cohort's data again and give the new report"
    )
    clock.advance(3600)
    controller.audit("orders", _report(clock() - 60), by="dana")
    retried = controller.retry("orders", actor="ana", reason="fixed", step=2)
    assert retried.reason.endswith("; cohort wave-1 (2 tenants) pinned to new")


def test_a_first_step_with_an_audit_waits_before_it_is_entered(
    store: Store, clock: ManualClock
) -> None:
    plan = _plan()
    plan["steps"] = plan["steps"][1:]
    store.write_state(
        "orders", State(mode=Mode.LEGACY), expected_version=0, actor="ops", reason="r", at=clock()
    )
    cohorts.add(store, "orders", "wave-1", tenants=["acme"], wave=1, actor="ana", clock=clock)
    controller = Controller(store, clock=clock)
    started = controller.start(parse_plan(plan), actor="ana", reason="move")
    assert started.reason == "move; wave 1 waits for an audit of cohort wave-1"
    assert _step(store) == -1 and controller.tick() == []
    controller.audit("orders", _report(clock()), by="dana")
    [entered] = controller.tick()
    assert entered.kind == "promote" and _step(store) == 0


def test_an_audit_needs_the_step_to_name_a_cohort() -> None:
    plan = {"migration": "m", "steps": [{"mode": "shadow", "audit": {"max_drift": 0}}]}
    with pytest.raises(InvalidInput, match=r"steps\[0\]: .*an audit judges the data of the step"):
        parse_plan(plan)
    plan["steps"][0]["audit"] = {"max_drift": -1}
    with pytest.raises(InvalidInput, match=r"steps\[0\].audit.max_drift"):
        parse_plan(plan)
