"""Approvals by roles: one approval from each role a step names, each from a different
person and none from the starter; roles from the API token, or claimed on the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cutover.clock import ManualClock
from cutover.control.controller import Controller
from cutover.control.plan import parse_plan
from cutover.errors import InvalidInput
from cutover.store import Store, open_store

from ..test_cli import run

ROLES = ["engineering", "sre", "product", "support"]
PLAN = {
    "migration": "m",
    "steps": [
        {"mode": "shadow"},
        {"mode": "canary", "percent": 5, "approval": {"roles": ROLES}},
    ],
}


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return open_store(f"sqlite:///{tmp_path / 's.db'}")


def _started(store: Store) -> tuple[Controller, ManualClock]:
    clock = ManualClock(start=6000.0)
    controller = Controller(store, clock=clock)
    controller.start(parse_plan(PLAN), actor="ana", reason="test")
    return controller, clock


def test_a_step_waits_for_one_approval_from_each_role(store: Store) -> None:
    controller, _ = _started(store)
    kinds = [d.kind for d in controller.tick()]
    assert kinds == ["approval_needed"]
    assert controller.evaluate("m").blockers == (
        "approval needed to enter step 2/2 (canary 5%) from engineering, sre, product, support",
    )
    people = {"engineering": "eve", "sre": "sam", "product": "pia"}
    for role, person in people.items():
        controller.approve("m", by=person, reason="ok", role=role, token_roles=[role])
        assert controller.tick() == []
    status = controller.evaluate("m").to_json()
    assert status["steps"][1]["roles_missing"] == ["support"]
    assert status["blockers"] == ["approval needed to enter step 2/2 (canary 5%) from support"]
    last = controller.approve("m", by="sue", reason="tickets ready", token_roles=["support"])
    assert last.reason == (
        "sue approved step 2/2 (canary 5%) as support (from the token): tickets ready;"
        " every role has approved"
    )
    promoted = controller.tick()
    assert [d.kind for d in promoted] == ["promote"]
    assert "approved by eve (engineering), sam (sre), pia (product), sue (support)" in (
        promoted[0].reason
    )


def test_the_starter_and_a_person_twice_are_refused(store: Store) -> None:
    controller, _ = _started(store)
    with pytest.raises(InvalidInput, match="someone other than ana, who started the rollout"):
        controller.approve("m", by="ana", reason="mine", role="sre")
    controller.approve("m", by="sam", reason="ok", role="sre")
    with pytest.raises(InvalidInput, match=r"sam already approved .* as sre; each role's"):
        controller.approve("m", by="sam", reason="again", role="product")
    with pytest.raises(InvalidInput, match="already has its sre approval"):
        controller.approve("m", by="sid", reason="me too", role="sre")


def test_a_token_approves_only_in_its_own_roles(store: Store) -> None:
    controller, _ = _started(store)
    with pytest.raises(InvalidInput, match="the token of sam has no 'product' role"):
        controller.approve("m", by="sam", reason="ok", role="product", token_roles=["sre"])
    with pytest.raises(InvalidInput, match="say which role this approval is for"):
        controller.approve("m", by="sam", reason="ok", token_roles=["sre", "product"])
    with pytest.raises(InvalidInput, match="say which role"):
        controller.approve("m", by="sam", reason="ok", token_roles=[])
    with pytest.raises(InvalidInput, match="not 'qa'; give one of those roles"):
        controller.approve("m", by="sam", reason="ok", role="qa")


def test_a_plain_approval_still_works_and_takes_no_role(store: Store) -> None:
    clock = ManualClock(start=6000.0)
    controller = Controller(store, clock=clock)
    plan = {"migration": "m", "steps": [{"mode": "shadow"}, {"mode": "new", "approval": True}]}
    controller.start(parse_plan(plan), actor="ana", reason="test")
    with pytest.raises(InvalidInput, match="asks for no roles"):
        controller.approve("m", by="lee", reason="CAB", role="sre")
    controller.approve("m", by="lee", reason="CAB")
    assert [d.kind for d in controller.tick()] == ["promote"]


def test_bad_roles_in_a_plan_are_one_sentence() -> None:
    bad = {**PLAN, "steps": [{"mode": "shadow", "approval": {"roles": ["SRE"]}}]}
    with pytest.raises(InvalidInput, match=r"steps\[0\].approval.roles: role 'SRE' must be"):
        parse_plan(bad)
    twice = {**PLAN, "steps": [{"mode": "shadow", "approval": {"roles": ["sre", "sre"]}}]}
    with pytest.raises(InvalidInput, match="a role is named twice"):
        parse_plan(twice)


def test_the_cli_records_a_claimed_role(store_url: str, tmp_path: Path) -> None:
    path = tmp_path / "plan.yaml"
    path.write_text(json.dumps(PLAN))
    assert run(store_url, "rollout", "start", str(path)).returncode == 0
    given = run(
        store_url, "rollout", "approve", "m", "--by", "sam", "--role", "sre", "--reason", "ok"
    )
    assert given.returncode == 0, given.stderr
    assert "sam approved step 2/2 (canary 5%) as sre (as claimed by the approver): ok" in (
        given.stdout
    )
    status = run(store_url, "rollout", "status", "m")
    assert "[approval: engineering, product, support missing]" in status.stdout
    unnamed = run(store_url, "rollout", "approve", "m", "--by", "pia", "--reason", "ok")
    assert unnamed.returncode == 2
    assert "say which role this approval is for (--role ROLE" in unnamed.stderr
    stored = open_store(store_url).rollout("m")
    assert stored is not None
    assert stored.approval(1)["roles"]["sre"]["claimed"] is True  # type: ignore[index]
