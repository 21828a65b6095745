"""The admin API and dashboard under attack, through real HTTP: hostile plan files, NUL bytes,
names with slashes, JSON type confusion, wrong methods and foreign Host headers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from .conftest import Server

PLAN = "migration: pay\nsteps:\n  - mode: shadow\n  - mode: new\n"


def call(
    server: Server, who: str | None, method: str, path: str, body: Any = None
) -> httpx.Response:
    with server.client(who) as client:
        return client.request(method, path, json=body)


def test_hostile_plan_files_are_listed_as_invalid_and_the_rest_still_serve(
    serve: Callable[..., Server], sqlite_url: str, tmp_path: Path
) -> None:
    plans = tmp_path / "plans"
    plans.mkdir()
    (plans / "pay.yaml").write_text(PLAN)
    (plans / "deep.yaml").write_text("migration: " + "[" * 900 + "]" * 900 + "\n")
    (plans / "twice.yaml").write_text(PLAN + "migration: other\n")
    server = serve(sqlite_url, "--plans", str(plans))
    listing = call(server, "viewer", "GET", "/api/v1/plans")
    assert listing.status_code == 200, listing.text
    listed = {plan["file"]: plan for plan in listing.json()["plans"]}
    assert listed["pay.yaml"]["valid"] and listed["pay.yaml"]["steps"] == ["shadow", "new"]
    assert not listed["deep.yaml"]["valid"]
    assert "deep.yaml: line 1" in listed["deep.yaml"]["error"]
    assert "nested deeper than" in listed["deep.yaml"]["error"]
    assert not listed["twice.yaml"]["valid"]
    assert "the key 'migration' is given twice" in listed["twice.yaml"]["error"]

    started = call(server, "operator", "POST", "/api/v1/rollouts", {"plan": "pay.yaml"})
    assert started.status_code == 200, started.text
    refused = call(server, "operator", "POST", "/api/v1/rollouts", {"plan": "deep.yaml"})
    assert refused.status_code == 422 and "deep.yaml" in refused.json()["error"]
    for page in ("/", "/migrations/pay", "/fragments/migrations/pay"):
        shown = call(server, "viewer", "GET", page)
        assert shown.status_code == 200, (page, shown.text)
    assert "pay.yaml" in call(server, "viewer", "GET", "/migrations/pay").text
    assert "Traceback" not in server.log.read_text()


def test_a_nul_is_bad_input_on_postgresql_not_an_outage(
    serve: Callable[..., Server], pg_url: str, tmp_path: Path
) -> None:
    plans = tmp_path / "plans"
    plans.mkdir()
    (plans / "pay.yaml").write_text(PLAN)
    server = serve(pg_url, "--plans", str(plans))
    create = {"reason": "shadow", "expected_version": 0, "mode": "shadow"}
    assert call(server, "operator", "POST", "/api/v1/migrations/pay/state", create).is_success
    create["expected_version"] = 1
    nul = "why\x00not"
    refusals = [
        ("POST", "/api/v1/migrations/pay/state", {**create, "mode": "new", "reason": nul}),
        ("POST", "/api/v1/rollouts", {"plan": "pay.yaml", "reason": nul}),
        (
            "POST",
            "/api/v1/rollouts",
            {"definition": {"migration": "pay", "steps": [{"mode": "shadow", "name": nul}]}},
        ),
        ("GET", "/api/v1/migrations/pay/drift-samples?fingerprint=%00", None),
        ("GET", "/api/v1/migrations/pay%00/state", None),
    ]
    for method, path, body in refusals:
        answer = call(server, "admin", method, path, body)
        assert answer.status_code == 422, (path, answer.status_code, answer.text)
        assert "NUL" in answer.json()["error"] or "migration name" in answer.json()["error"]
    assert call(server, "operator", "POST", "/api/v1/rollouts", {"plan": "pay.yaml"}).is_success
    steer = {"reason": nul, "expected_version": 1}
    for action in ("pause", "abort", "promote"):
        path = f"/api/v1/migrations/pay/rollout/{action}"
        answer = call(server, "operator", "POST", path, steer)
        assert answer.status_code == 422, (action, answer.text)
        assert answer.json()["error"] == "the reason contains a NUL character (\\x00); remove it"
    decisions = call(server, "viewer", "GET", "/api/v1/decisions").json()["decisions"]
    assert [d["kind"] for d in decisions] == ["start", "set"]  # nothing else was written


def test_json_types_are_not_confused(serve: Callable[..., Server], sqlite_url: str) -> None:
    server = serve(sqlite_url)
    path = "/api/v1/migrations/pay/state"
    base = {"reason": "shadow", "expected_version": 0, "mode": "shadow"}
    for field, value in (
        ("expected_version", False),
        ("expected_version", "0"),
        ("expected_version", 0.0),
        ("fallback", 0),
        ("fallback", "false"),
        ("percent", "5"),
        ("sample", True),
    ):
        answer = call(server, "operator", "POST", path, {**base, field: value})
        assert answer.status_code == 422, (field, value, answer.text)
        assert answer.json()["error"].startswith(f"{field}: "), answer.text
    assert call(server, "operator", "POST", path, {**base, "sample": 1}).is_success  # 1 is 1.0
    steer = {"reason": "r", "expected_version": True}
    refused = call(server, "operator", "POST", "/api/v1/migrations/pay/rollout/pause", steer)
    assert refused.status_code == 422 and refused.json()["error"].startswith("expected_version: ")
    forced = {"reason": "r", "expected_version": 1, "force": "yes"}
    refused = call(server, "admin", "POST", "/api/v1/migrations/pay/rollout/promote", forced)
    assert refused.status_code == 422 and refused.json()["error"].startswith("force: ")
    started = {"definition": {"migration": "pay", "steps": [{"mode": "new"}]}, "replace": 1}
    refused = call(server, "admin", "POST", "/api/v1/rollouts", started)
    assert refused.status_code == 422 and refused.json()["error"].startswith("replace: ")


def test_a_405_names_the_methods_the_path_takes(
    serve: Callable[..., Server], sqlite_url: str
) -> None:
    server = serve(sqlite_url)
    for method, path, allowed in (
        ("DELETE", "/api/v1/plans", "GET"),
        ("PUT", "/api/v1/migrations/pay/state", "GET, POST"),
        ("GET", "/api/v1/migrations/team%2Fcodec/rollout/pause", "POST"),
        ("POST", "/api/v1/migrations/pay", "GET"),
        ("DELETE", "/login", "GET, POST"),
    ):
        answer = call(server, "viewer", method, path)
        assert answer.status_code == 405, (method, path)
        assert answer.headers["allow"] == allowed, (method, path)
        assert "openapi.json" in answer.json()["error"]


def test_only_allowed_host_headers_are_answered(
    serve: Callable[..., Server], sqlite_url: str
) -> None:
    server = serve(sqlite_url, "--public-read")
    port = server.url.rsplit(":", 1)[1]
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LOCALHOST:{port}"):
        answer = httpx.get(server.url + "/api/v1/migrations", headers={"host": host})
        assert answer.status_code == 200, host
    for host in (f"attacker.example:{port}", "attacker.example", f"localhost:{int(port) + 1}"):
        for path in ("/api/v1/migrations", "/", "/healthz", "/metrics", "/static/dashboard.js"):
            answer = httpx.get(server.url + path, headers={"host": host})
            assert answer.status_code == 421, (host, path)
            assert host in answer.json()["error"] and "--allowed-host" in answer.json()["error"]
    flags = ("--allowed-host", "cutover.internal", "--allowed-host", "127.0.0.1")
    named = serve(sqlite_url, "--public-read", *flags)
    answer = httpx.get(named.url + "/api/v1/migrations", headers={"host": "cutover.internal:1"})
    assert answer.status_code == 200
    for host in ("localhost", f"localhost:{named.url.rsplit(':', 1)[1]}"):  # not named: refused
        answer = httpx.get(named.url + "/api/v1/migrations", headers={"host": host})
        assert answer.status_code == 421, host


def test_a_malformed_allowed_host_stops_the_server_in_one_sentence(sqlite_url: str) -> None:
    import subprocess
    import sys

    command = [sys.executable, "-m", "cutover", "--store", sqlite_url, "serve"]
    result = subprocess.run(
        [*command, "--allowed-host", "http://cutover.internal/"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr == (
        "cutover: allowed host 'http://cutover.internal/' is not a host name or address,"
        " optionally with :port, like example.com, example.com:8080 or [::1]:8080\n"
    )
