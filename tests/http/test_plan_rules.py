"""The API and the plan's newer rules: a retry inside the cooldown is a 409 saying when it
becomes possible, and a step that asks for roles takes approvals from tokens of those roles."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from cutover.clock import ManualClock
from cutover.control.calendar import format_utc
from cutover.control.controller import Controller
from cutover.control.plan import parse_plan
from cutover.store import open_store

from .conftest import Server
from .test_api import call, rollout_version

ROLES_PLAN = """\
migration: pay
steps:
  - mode: shadow
  - mode: canary
    percent: 5
    approval: {roles: [sre, product, support]}
"""


@pytest.fixture
def server(serve: Callable[..., Server], pg_url: str, tmp_path: Path) -> Server:
    folder = tmp_path / "plans"
    folder.mkdir()
    (folder / "pay.yaml").write_text(ROLES_PLAN)
    return serve(pg_url, "--plans", str(folder))


def test_an_early_retry_is_a_409_with_the_time_it_becomes_possible(server: Server) -> None:
    store = open_store(server.store_url)
    clock = ManualClock(start=time.time())
    controller = Controller(store, clock=clock)
    plan = {
        "migration": "pay",
        "steps": [{"mode": "shadow"}, {"mode": "canary", "percent": 5}],
        "on_critical": "legacy",
        "retry_after": "7d",
    }
    controller.start(parse_plan(plan), actor="ana", reason="test")
    # The rollback as the controller records it on a critical failure, a minute ago.
    rollout = store.rollout("pay")
    assert rollout is not None
    at = time.time() - 60
    store.commit(
        "pay",
        kind="abort",
        actor="controller",
        reason="returned to legacy: errors failed",
        at=at,
        rollout=rollout.evolve(status="aborted", notes={"rolled_back": {"at": at, "step": 0}}),
        expected_rollout=rollout.version,
    )
    body = {"reason": "fixed", "expected_version": rollout_version(server)}
    refused = call(server, "operator", "POST", "/api/v1/migrations/pay/rollout/retry", body)
    assert refused.status_code == 409
    answer = refused.json()
    assert answer["possible_at"] == pytest.approx(at + 7 * 86400)
    assert answer["error"].endswith(f"retry is possible from {format_utc(at + 7 * 86400)}")
    status = call(server, "viewer", "GET", "/api/v1/migrations/pay/rollout").json()
    assert status["retry_possible_at"] == pytest.approx(at + 7 * 86400)


def test_roles_come_from_the_approving_token(server: Server) -> None:
    started = call(server, "operator", "POST", "/api/v1/rollouts", {"plan": "pay.yaml"})
    assert started.status_code == 200, started.text
    url = "/api/v1/migrations/pay/rollout/approve"
    whoami = call(server, "pia", "GET", "/api/v1/whoami").json()
    assert whoami["approval_roles"] == ["product", "support"]

    body = {"reason": "on call ready", "expected_version": rollout_version(server)}
    assert call(server, "sam", "POST", url, body).status_code == 200  # sre, its only role
    body["expected_version"] = rollout_version(server)
    refused = call(server, "olga", "POST", url, {**body, "role": "product"})
    assert refused.status_code == 422
    assert "the token of olga has no 'product' role" in refused.json()["error"]
    unsure = call(server, "pia", "POST", url, body)
    assert unsure.status_code == 422 and "say which role" in unsure.json()["error"]
    given = call(server, "pia", "POST", url, {**body, "role": "product"})
    assert given.status_code == 200
    assert "as product (from the token)" in given.json()["decision"]["reason"]
    status = call(server, "viewer", "GET", "/api/v1/migrations/pay/rollout").json()
    assert status["steps"][1]["roles_missing"] == ["support"]
    assert status["blockers"][-1].endswith("from support")
