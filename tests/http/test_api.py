"""The admin API through real HTTP against a running server on the real PostgreSQL: roles,
optimistic concurrency, identity in the decision log, bad input, health and metrics."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from cutover.data import cohorts
from cutover.http._app import MAX_BODY
from cutover.http._deps import COOKIE, CSRF_HEADER
from cutover.model import State
from cutover.store import open_store

from .conftest import Server

PLAN = """\
migration: pay
steps:
  - mode: shadow
    hold: 1h
  - mode: canary
    percent: 5
    hold: 1h
  - mode: canary
    percent: 50
    hold: 1h
    approval: true
  - mode: new
    hold: 1d
checks:
  - name: drift
    metric: drift_rate
    max: 0.001
    window: 1h
    during: [canary]
"""

NONE = None
ACTION_HEADERS = {"content-type": "application/json"}


@pytest.fixture
def plans(tmp_path: Path) -> Path:
    folder = tmp_path / "plans"
    folder.mkdir()
    (folder / "pay.yaml").write_text(PLAN)
    (folder / "broken.yaml").write_text("migration: [\n")
    return folder


@pytest.fixture
def server(serve: Callable[..., Server], pg_url: str, plans: Path) -> Server:
    return serve(pg_url, "--plans", str(plans))


def call(
    server: Server, who: str | None, method: str, path: str, body: Any = None
) -> httpx.Response:
    with server.client(who) as client:
        return client.request(method, path, json=body)


def state_version(server: Server, name: str = "pay") -> int:
    return call(server, "viewer", "GET", f"/api/v1/migrations/{name}/state").json()["version"]


def rollout_version(server: Server, name: str = "pay") -> int:
    return call(server, "viewer", "GET", f"/api/v1/migrations/{name}/rollout").json()["version"]


def start(server: Server, who: str = "operator", **extra: Any) -> httpx.Response:
    body = {"plan": "pay.yaml", "reason": "begin the cutover", **extra}
    return call(server, who, "POST", "/api/v1/rollouts", body)


def test_reads_need_a_viewer_token(server: Server) -> None:
    start(server)
    for path in (
        "/api/v1/migrations",
        "/api/v1/migrations/pay",
        "/api/v1/migrations/pay/state",
        "/api/v1/migrations/pay/stats",
        "/api/v1/migrations/pay/series",
        "/api/v1/migrations/pay/drifts",
        "/api/v1/migrations/pay/drift-samples",
        "/api/v1/migrations/pay/decisions",
        "/api/v1/migrations/pay/rollout",
        "/api/v1/decisions",
        "/api/v1/plans",
        "/metrics",
    ):
        refused = call(server, NONE, "GET", path)
        assert refused.status_code == 401, path
        assert refused.headers["www-authenticate"] == "Bearer"
        assert "token" in refused.json()["error"]
        wrong = httpx.get(server.url + path, headers={"Authorization": "Bearer cut_not-a-token"})
        assert wrong.status_code == 401, path
        for who in ("viewer", "operator", "admin"):
            assert call(server, who, "GET", path).status_code == 200, (who, path)


def test_each_role_may_do_what_its_role_allows_and_no_more(server: Server) -> None:
    # Starting a plan by name: operators and admins; an inline plan or replace: admins only.
    assert start(server, "viewer").status_code == 403
    assert start(server, "operator").status_code == 200
    inline = {"definition": {"migration": "inline", "steps": [{"mode": "shadow"}]}, "reason": "r"}
    refused = call(server, "operator", "POST", "/api/v1/rollouts", inline)
    assert refused.status_code == 403
    assert "admin" in refused.json()["error"]
    assert call(server, "admin", "POST", "/api/v1/rollouts", inline).status_code == 200
    replace = {"replace": True, "expected_version": rollout_version(server)}
    assert start(server, "operator", **replace).status_code == 403
    assert start(server, "admin", **replace).status_code == 200

    # Steering: viewers are refused every action, operators may steer.
    version = rollout_version(server)
    body = {"reason": "looks good", "expected_version": version}
    for action in ("promote", "pause", "resume", "approve", "abort", "retry"):
        refused = call(server, "viewer", "POST", f"/api/v1/migrations/pay/rollout/{action}", body)
        assert refused.status_code == 403, action
        assert refused.json()["error"] == (
            "this needs the operator role; the token of viewer has viewer"
        )
    promoted = call(server, "operator", "POST", "/api/v1/migrations/pay/rollout/promote", body)
    assert promoted.status_code == 200, promoted.text
    assert promoted.json()["decision"]["new"]["mode"] == "canary"

    # A forced promotion is an admin's call.
    forced = {"reason": "ship it", "expected_version": rollout_version(server), "force": True}
    path = "/api/v1/migrations/pay/rollout/promote"
    assert call(server, "operator", "POST", path, forced).status_code == 403
    for action, who in (("pause", "operator"), ("resume", "operator"), ("abort", "operator")):
        body = {"reason": f"{action} it", "expected_version": rollout_version(server)}
        answer = call(server, who, "POST", f"/api/v1/migrations/pay/rollout/{action}", body)
        assert answer.status_code == 200, (action, answer.text)
    body = {"reason": "again", "expected_version": rollout_version(server)}
    retried = call(server, "operator", "POST", "/api/v1/migrations/pay/rollout/retry", body)
    assert retried.status_code == 200
    assert retried.json()["decision"]["new"]["mode"] == "shadow"

    # Setting a state: operators, not viewers.
    change = {"reason": "hold", "expected_version": state_version(server), "mode": "legacy"}
    assert call(server, "viewer", "POST", "/api/v1/migrations/pay/state", change).status_code == 403
    assert (
        call(server, "operator", "POST", "/api/v1/migrations/pay/state", change).status_code == 200
    )


def test_a_stale_version_gets_409_with_the_current_state(server: Server) -> None:
    first = {"reason": "shadow first", "expected_version": 0, "mode": "shadow"}
    created = call(server, "operator", "POST", "/api/v1/migrations/fresh/state", first)
    assert created.status_code == 200
    assert created.json()["decision"]["new"]["version"] == 1
    stale = call(
        server, "admin", "POST", "/api/v1/migrations/fresh/state", {**first, "mode": "new"}
    )
    assert stale.status_code == 409
    body = stale.json()
    assert "version 1" in body["error"] and "not 0" in body["error"]
    assert body["current"]["state"]["mode"] == "shadow"
    assert body["current"]["state"]["updated_by"] == "operator"
    assert open_store(server.store_url).state("fresh").mode.value == "shadow"  # nothing lost

    start(server)
    version = rollout_version(server)
    pause = {"reason": "wait", "expected_version": version}
    assert call(
        server, "operator", "POST", "/api/v1/migrations/pay/rollout/pause", pause
    ).is_success
    again = call(server, "olga", "POST", "/api/v1/migrations/pay/rollout/abort", pause)
    assert again.status_code == 409
    assert again.json()["current"]["rollout"]["status"] == "paused"
    assert again.json()["current"]["rollout"]["version"] == version + 1


def test_decisions_record_who_acted_through_the_api(server: Server) -> None:
    start(server, "operator")
    call(
        server,
        "olga",
        "POST",
        "/api/v1/migrations/pay/state",
        {"reason": "try a canary", "expected_version": state_version(server), "percent": 1},
    )
    log = call(server, "viewer", "GET", "/api/v1/migrations/pay/decisions").json()["decisions"]
    assert [(d["kind"], d["actor"]) for d in log] == [("set", "olga"), ("start", "operator")]
    assert log[0]["reason"] == "try a canary"
    assert log[0]["evidence"]["via"] == "api"
    assert log[0]["evidence"]["role"] == "operator"
    everywhere = call(server, "viewer", "GET", "/api/v1/decisions?limit=1").json()["decisions"]
    assert [d["actor"] for d in everywhere] == ["olga"]
    # The same log, read by the library, holds the same identities.
    stored = open_store(server.store_url).decisions("pay")
    assert [d.actor for d in stored] == ["operator", "olga"]  # oldest first


def test_four_eyes_refuses_the_starter_as_approver(
    serve: Callable[..., Server], pg_url: str, plans: Path
) -> None:
    server = serve(pg_url, "--plans", str(plans), "--four-eyes")
    start(server, "operator")
    body = {"reason": "promote", "expected_version": rollout_version(server)}
    assert call(server, "olga", "POST", "/api/v1/migrations/pay/rollout/promote", body).is_success
    approve = {"reason": "I started it", "expected_version": rollout_version(server)}
    refused = call(server, "operator", "POST", "/api/v1/migrations/pay/rollout/approve", approve)
    assert refused.status_code == 422
    assert "someone other than operator" in refused.json()["error"]
    given = call(server, "olga", "POST", "/api/v1/migrations/pay/rollout/approve", approve)
    assert given.status_code == 200
    rollout = call(server, "viewer", "GET", "/api/v1/migrations/pay/rollout").json()
    assert rollout["steps"][2]["approved"]["by"] == "olga"


def test_bad_input_gets_one_sentence_and_loses_nothing(server: Server) -> None:
    start(server)
    missing = call(server, "viewer", "GET", "/api/v1/migrations/nope")
    assert missing.status_code == 404
    assert missing.json() == {"error": "no migration named 'nope' in the store"}
    assert call(server, "viewer", "GET", "/api/v1/migrations/nope/series").status_code == 404

    invalid = call(
        server,
        "operator",
        "POST",
        "/api/v1/migrations/pay/state",
        {"reason": "x", "expected_version": 1, "percent": 250},
    )
    assert invalid.status_code == 422
    assert invalid.json()["error"].startswith("percent: ")
    assert invalid.json()["fields"][0]["field"] == "percent"

    no_reason = call(
        server, "operator", "POST", "/api/v1/migrations/pay/rollout/pause", {"expected_version": 1}
    )
    assert no_reason.status_code == 422
    assert no_reason.json()["error"].startswith("reason: ")

    unknown_field = call(
        server,
        "operator",
        "POST",
        "/api/v1/migrations/pay/state",
        {"reason": "x", "expected_version": 1, "mood": "happy"},
    )
    assert unknown_field.status_code == 422
    assert unknown_field.json()["fields"][0]["field"] == "mood"

    with server.client("operator") as client:
        broken = client.post(
            "/api/v1/migrations/pay/state", content=b"{not json", headers=ACTION_HEADERS
        )
        assert broken.status_code == 422
        assert "error" in broken.json()
        huge = client.post(
            "/api/v1/migrations/pay/state",
            content=json.dumps({"reason": "x" * (MAX_BODY + 1)}),
            headers=ACTION_HEADERS,
        )
        assert huge.status_code == 413
        assert "larger than" in huge.json()["error"]

        def chunks():  # no Content-Length: the limit still holds while reading
            for _ in range(MAX_BODY // 1024 + 2):
                yield b" " * 1024

        streamed = client.post(
            "/api/v1/migrations/pay/state", content=chunks(), headers=ACTION_HEADERS
        )
        assert streamed.status_code == 413

    bad_window = call(server, "viewer", "GET", "/api/v1/migrations/pay/stats?window=soon")
    assert bad_window.status_code == 422
    assert bad_window.json()["error"].startswith("window: ")
    wrong_plan = start(server, plan="nope.yaml")
    assert wrong_plan.status_code == 422
    assert "pay.yaml" in wrong_plan.json()["error"]
    not_now = call(
        server,
        "operator",
        "POST",
        "/api/v1/migrations/pay/rollout/resume",
        {"reason": "go", "expected_version": rollout_version(server)},
    )
    assert not_now.status_code == 422
    assert "only a paused or rolled-back one resumes" in not_now.json()["error"]

    nowhere = call(server, "viewer", "GET", "/api/v1/nowhere")
    assert nowhere.status_code == 404 and "openapi.json" in nowhere.json()["error"]
    # Nothing above changed the state or the rollout.
    assert state_version(server) == 1
    assert [
        d["kind"] for d in call(server, "viewer", "GET", "/api/v1/decisions").json()["decisions"]
    ] == ["start"]
    assert "Traceback" not in server.log.read_text()


def test_every_response_carries_the_security_headers(server: Server) -> None:
    for who, path in (
        (NONE, "/api/v1/migrations"),
        ("viewer", "/api/v1/plans"),
        (NONE, "/healthz"),
    ):
        answer = call(server, who, "GET", path)
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["x-frame-options"] == "DENY"
        assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]
        assert answer.headers["referrer-policy"] == "same-origin"
    assert call(server, "viewer", "GET", "/api/v1/plans").headers["cache-control"] == "no-store"
    assert "server" not in {name.lower() for name in call(server, NONE, "GET", "/healthz").headers}


def test_the_plans_listing_names_valid_and_broken_files(server: Server) -> None:
    listed = {p["file"]: p for p in call(server, "viewer", "GET", "/api/v1/plans").json()["plans"]}
    assert listed["pay.yaml"]["valid"] and listed["pay.yaml"]["migration"] == "pay"
    assert listed["pay.yaml"]["steps"] == ["shadow", "canary 5%", "canary 50%", "new"]
    assert not listed["broken.yaml"]["valid"]
    assert "broken.yaml" in listed["broken.yaml"]["error"]


def test_the_dashboard_cookie_needs_the_csrf_header_to_write(server: Server) -> None:
    cookie = {COOKIE: server.tokens["operator"]}
    body = {"reason": "shadow", "expected_version": 0, "mode": "shadow"}
    with httpx.Client(base_url=server.url, cookies=cookie) as client:
        assert client.get("/api/v1/whoami").json() == {
            "name": "operator",
            "role": "operator",
            "approval_roles": [],
        }
        refused = client.post("/api/v1/migrations/cookie/state", json=body)
        assert refused.status_code == 403
        assert CSRF_HEADER in refused.json()["error"]
        allowed = client.post(
            "/api/v1/migrations/cookie/state", json=body, headers={CSRF_HEADER: "1"}
        )
        assert allowed.status_code == 200


def test_public_read_opens_reads_only(serve: Callable[..., Server], pg_url: str) -> None:
    server = serve(pg_url, "--public-read")
    body = {"reason": "shadow", "expected_version": 0, "mode": "shadow"}
    assert call(server, "operator", "POST", "/api/v1/migrations/pay/state", body).is_success
    assert call(server, NONE, "GET", "/api/v1/migrations/pay/state").json()["mode"] == "shadow"
    assert call(server, NONE, "GET", "/api/v1/whoami").json() == {
        "name": "anonymous",
        "role": "viewer",
        "approval_roles": [],
    }
    assert call(server, NONE, "POST", "/api/v1/migrations/pay/state", body).status_code == 401
    # A token that is wrong is refused even where reading is public: it is a mistake to report.
    bad = httpx.get(
        server.url + "/api/v1/migrations", headers={"Authorization": "Bearer cut_wrong"}
    )
    assert bad.status_code == 401


def test_health_and_metrics_report_store_controller_and_requests(
    serve: Callable[..., Server], pg_url: str, plans: Path
) -> None:
    server = serve(pg_url, "--plans", str(plans), "--controller", "--interval", "1s")
    assert start(server).is_success
    health = call(server, NONE, "GET", "/healthz").json()
    assert health["status"] == "ok" and health["store"] == "reachable"
    assert health["active_rollouts"] == 1
    assert health["controller_lag_seconds"] is not None and health["controller_lag_seconds"] < 30
    text = call(server, "viewer", "GET", "/metrics").text
    assert 'cutover_state_mode{migration="pay",mode="shadow"} 1.0' in text
    assert 'cutover_rollout_status{migration="pay",status="running"} 1.0' in text
    assert 'cutover_rollout_step{migration="pay"} 1.0' in text
    assert "cutover_store_up 1.0" in text
    assert (
        'cutover_http_requests_total{method="POST",route="/api/v1/rollouts",status="200"} 1.0'
        in text
    )


def test_the_servers_controller_logs_every_decision(
    serve: Callable[..., Server], pg_url: str, plans: Path
) -> None:
    (plans / "quick.yaml").write_text(
        "migration: quick\nsteps:\n  - {mode: shadow, hold: 1s}\n  - {mode: canary, percent: 5}\n"
    )
    server = serve(pg_url, "--plans", str(plans), "--controller", "--interval", "1s")
    body = {"plan": "quick.yaml", "reason": "go"}
    assert call(server, "operator", "POST", "/api/v1/rollouts", body).is_success
    promoted = "cutover controller: quick: promote: promoted from shadow to canary 5%"
    deadline = time.monotonic() + 60
    while promoted not in server.log.read_text() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert promoted in server.log.read_text(), server.log.read_text()
    assert call(server, "viewer", "GET", "/api/v1/migrations/quick/state").json()["percent"] == 5


def test_health_says_degraded_when_no_controller_ticks(server: Server) -> None:
    start(server)
    health = call(server, NONE, "GET", "/healthz")
    assert health.status_code == 200
    assert health.json()["status"] == "degraded"
    assert health.json()["controller_lag_seconds"] is None


def test_a_store_outage_serves_the_last_known_state_and_the_server_recovers(
    serve: Callable[..., Server], pg_proxy: Any
) -> None:
    proxy, url = pg_proxy
    server = serve(url)
    body = {"reason": "shadow", "expected_version": 0, "mode": "shadow"}
    assert call(server, "operator", "POST", "/api/v1/migrations/pay/state", body).is_success
    proxy.cut()
    # The state read answers from memory: once the server has failed to reload its states,
    # it says so, with the age of what it serves.
    deadline = time.monotonic() + 30
    while True:
        down = call(server, "viewer", "GET", "/api/v1/migrations/pay/state")
        assert down.status_code == 200 and down.json()["version"] == 1
        if "cutover-stale" in down.headers or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert float(down.headers["cutover-stale"]) >= 0
    # A read that needs the store refuses clearly.
    detail = call(server, "viewer", "GET", "/api/v1/migrations/pay")
    assert detail.status_code == 503
    assert detail.json() == {"error": "the store is unavailable; try again shortly"}
    assert detail.headers["retry-after"] == "5"
    assert call(server, NONE, "GET", "/healthz").status_code == 503
    proxy.restore()
    deadline = time.monotonic() + 30
    while (
        "cutover-stale"
        in (up := call(server, "viewer", "GET", "/api/v1/migrations/pay/state")).headers
    ):
        assert time.monotonic() < deadline, "the server never noticed the store was back"
        time.sleep(0.2)
    assert up.json()["version"] == 1


def test_a_rollout_waiting_for_its_first_approval_is_known(server: Server, plans: Path) -> None:
    (plans / "gated.yaml").write_text(
        "migration: gated\nsteps:\n  - {mode: shadow, approval: true}\n  - {mode: new}\n"
    )
    assert start(server, plan="gated.yaml").is_success
    rollout = call(server, "viewer", "GET", "/api/v1/migrations/gated/rollout")
    assert rollout.status_code == 200 and rollout.json()["step"] == -1
    assert call(server, "viewer", "GET", "/api/v1/migrations/gated").status_code == 200
    approve = {"reason": "CAB-1", "expected_version": rollout.json()["version"]}
    given = call(server, "olga", "POST", "/api/v1/migrations/gated/rollout/approve", approve)
    assert given.status_code == 200, given.text


def test_an_audit_report_is_judged_and_a_bad_one_is_refused(server: Server, plans: Path) -> None:
    store = open_store(server.store_url)
    store.write_state("moved", State(), expected_version=0, actor="ops", reason="r", at=time.time())
    cohorts.add(store, "moved", "wave-1", tenants=["acme"], wave=1, actor="ana", clock=time.time)
    store.close()
    (plans / "moved.yaml").write_text(
        "migration: moved\nsteps:\n  - {mode: shadow}\n"
        "  - {mode: new, cohort: wave-1, audit: {max_drift: 0}}\n"
    )
    assert start(server, plan="moved.yaml").is_success
    path = "/api/v1/migrations/moved/rollout/audit"
    report = {"format": "cutover-audit/1", "tenant_column": "tenant", "tenants": {}}
    body = {"reason": "nightly", "expected_version": rollout_version(server, "moved")}

    flat = call(server, "operator", "POST", path, {**body, "report": {"format": "x"}})
    assert flat.status_code == 422
    assert flat.json()["error"] == (
        "the report is not an audit report (format 'x'); give the file that `cutover audit"
        " --json` wrote"
    )
    drifted = {**report, "tenants": {"acme": {"missing": 2}}}
    refused = call(server, "operator", "POST", path, {**body, "report": drifted})
    assert refused.status_code == 422
    assert refused.json()["error"].startswith("tenant 'acme' of cohort 'wave-1' has 2 rows")
    assert call(server, "viewer", "POST", path, {**body, "report": report}).status_code == 403

    given = call(server, "operator", "POST", path, {**body, "report": report})
    assert given.status_code == 200, given.text
    decision = given.json()["decision"]
    assert decision["kind"] == "audit"
    assert decision["evidence"]["audit"]["tenants"]["acme"]["drift"] == 0
    rollout = call(server, "viewer", "GET", "/api/v1/migrations/moved/rollout").json()
    assert rollout["steps"][1]["audited"]["by"] == "operator"


def test_a_plan_starts_again_after_an_abort(server: Server) -> None:
    assert start(server).is_success
    abort = {"reason": "stop", "expected_version": rollout_version(server)}
    assert call(
        server, "operator", "POST", "/api/v1/migrations/pay/rollout/abort", abort
    ).is_success
    again = start(server)
    assert again.status_code == 200, again.text
    assert start(server, expected_version=0).status_code == 409  # a record exists: not 0


def test_a_series_never_holds_more_than_1440_points(server: Server) -> None:
    call(
        server,
        "operator",
        "POST",
        "/api/v1/migrations/pay/state",
        {"reason": "r", "expected_version": 0, "mode": "shadow"},
    )
    for query in ("window=1474s&step=1s", "window=1h&step=1s", "window=1d&step=1m"):
        answer = call(server, "viewer", "GET", f"/api/v1/migrations/pay/series?{query}")
        assert answer.status_code == 200, (query, answer.text)
        body = answer.json()
        assert len(body["points"]) <= 1440, query
        assert body["since"] == body["points"][0]["start"]


def test_noise_is_declared_and_listed_through_the_api(server: Server) -> None:
    start(server)
    body = {"prefix": "$.body.request_id", "reason": "a random id"}
    refused = call(server, "viewer", "POST", "/api/v1/migrations/pay/noise", body)
    assert refused.status_code == 403
    added = call(server, "operator", "POST", "/api/v1/migrations/pay/noise", body)
    assert added.status_code == 200, added.text
    assert added.json()["decision"]["kind"] == "noise-add"
    listed = call(server, "viewer", "GET", "/api/v1/migrations/pay/noise").json()
    assert [r["prefix"] for r in listed["rules"]] == ["$.body.request_id"]
    assert listed["rules"][0]["added_by"] == "operator" and listed["learned"] == []
    bad = call(server, "operator", "POST", "/api/v1/migrations/pay/noise", {**body, "prefix": "x"})
    assert bad.status_code == 422 and "must be a path like" in bad.json()["error"]
    gone = call(server, "operator", "POST", "/api/v1/migrations/pay/noise/remove", body)
    assert gone.status_code == 200 and gone.json()["decision"]["kind"] == "noise-remove"
    again = call(server, "operator", "POST", "/api/v1/migrations/pay/noise/remove", body)
    assert again.status_code == 422 and "has no noise rule" in again.json()["error"]


def test_slos_of_the_rollout_plan(server: Server, plans: Path) -> None:
    (plans / "budget.yaml").write_text(
        PLAN.replace("migration: pay", "migration: budget")
        + "slos:\n  - {name: success, indicator: {metric: errors}, objective: 99.9%}\n"
    )
    started = call(server, "operator", "POST", "/api/v1/rollouts",
                   {"plan": "budget.yaml", "reason": "begin"})  # fmt: skip
    assert started.status_code in (200, 201), started.text
    shown = call(server, "viewer", "GET", "/api/v1/migrations/budget/slos")
    assert shown.status_code == 200, shown.text
    (success,) = shown.json()["slos"]
    assert (success["name"], success["objective"], success["status"]) == (
        "success",
        0.999,
        "no data",
    )
    assert success["remaining"] == 1.0 and set(success["burn_rates"]) == {
        "5m",
        "1h",
        "6h",
        "1d",
        "3d",
    }
    start(server)
    none = call(server, "viewer", "GET", "/api/v1/migrations/pay/slos")
    assert none.status_code == 422 and "declares no SLOs" in none.json()["error"]
    assert call(server, NONE, "GET", "/api/v1/migrations/budget/slos").status_code == 401
