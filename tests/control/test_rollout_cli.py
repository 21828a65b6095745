"""The real ``cutover rollout`` commands, run as subprocesses against real stores."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ..test_cli import run

PLAN = """
migration: codec
steps:
  - {mode: shadow, hold: 1h, min_comparisons: 100}
  - {mode: canary, percent: 10, hold: 1h}
  - {mode: new, approval: true}
checks:
  - {name: parity, metric: drift_rate, max: 0.01, window: 10m}
"""


@pytest.fixture
def plan_file(tmp_path: Path) -> str:
    path = tmp_path / "plan.yaml"
    path.write_text(PLAN)
    return str(path)


def test_an_operator_steers_a_rollout_from_the_shell(store_url: str, plan_file: str) -> None:
    started = run(store_url, "rollout", "start", plan_file, "--json")
    assert started.returncode == 0, started.stderr
    decision = json.loads(started.stdout)["decision"]
    assert decision["kind"] == "start" and decision["actor"] == "ops@test"
    assert decision["new"]["mode"] == "shadow"

    status = json.loads(run(store_url, "rollout", "status", "codec", "--json").stdout)
    assert status["status"] == "running" and status["step"] == 0
    assert "0 of 100 required comparisons" in status["blockers"]
    assert status["checks"][0]["outcome"] == "inconclusive"

    refused = run(store_url, "rollout", "promote", "codec", "--reason", "go")
    assert refused.returncode == 2
    assert "parity is inconclusive" in refused.stderr and "--force" in refused.stderr
    forced = run(store_url, "rollout", "promote", "codec", "--reason", "go", "--force")
    assert forced.returncode == 0 and "canary 10%" in forced.stdout

    early = run(store_url, "rollout", "promote", "codec", "--reason", "go", "--force")
    assert early.returncode == 2 and "needs an approval first" in early.stderr
    approved = run(store_url, "rollout", "approve", "codec", "--by", "cab", "--reason", "CAB-7")
    assert approved.returncode == 0 and "cab approved step 3/3 (new)" in approved.stdout

    for command in (["pause", "codec", "--reason", "look"], ["resume", "codec"]):
        assert run(store_url, "rollout", *command).returncode == 0
    aborted = run(store_url, "rollout", "abort", "codec", "--reason", "pager", "--json")
    assert json.loads(aborted.stdout)["decision"]["new"]["mode"] == "legacy"
    again = run(store_url, "rollout", "abort", "codec", "--reason", "twice")
    assert again.returncode == 2 and "already aborted; `retry`" in again.stderr
    assert run(store_url, "rollout", "retry", "codec").returncode == 0

    history = json.loads(run(store_url, "history", "codec", "--json").stdout)["decisions"]
    kinds = [d["kind"] for d in history]
    assert kinds == ["start", "promote", "approve", "pause", "resume", "abort", "retry"]
    assert all(d["reason"] and d["actor"] for d in history)
    assert history[2]["changed_state"] is False and history[2]["actor"] == "cab"
    table = run(store_url, "history", "codec").stdout
    assert "approve" in table and "(unchanged)" in table


def test_tick_and_dry_run_from_the_shell(sqlite_url: str, plan_file: str) -> None:
    assert run(sqlite_url, "rollout", "start", plan_file).returncode == 0
    dry = run(sqlite_url, "rollout", "tick", "--dry-run", "--json")
    assert dry.returncode == 0 and json.loads(dry.stdout) == {"dry_run": True, "decisions": []}
    assert "nothing to do" in run(sqlite_url, "rollout", "tick").stdout
    listing = run(sqlite_url, "rollout", "status")
    assert "codec" in listing.stdout and "running" in listing.stdout


def test_bad_input_exits_2_with_one_sentence(sqlite_url: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(PLAN.replace("percent: 10", "percent: 150"))
    result = run(sqlite_url, "rollout", "start", str(bad))
    assert result.returncode == 2
    assert result.stderr.startswith(f"cutover: {bad}: steps[1]: percent must be from 0 to 100")
    assert "Traceback" not in result.stderr
    missing = run(sqlite_url, "rollout", "status", "nothing")
    assert missing.returncode == 2 and "no migration named 'nothing'" in missing.stderr
    assert run(sqlite_url, "rollout", "validate", str(bad)).returncode == 2
    no_plan = run(sqlite_url, "rollout", "pause", "ghost", "--reason", "x")
    assert no_plan.returncode == 2


def test_an_audit_report_is_given_from_the_shell(sqlite_url: str, tmp_path: Path) -> None:
    assert run(sqlite_url, "set", "orders", "--mode", "legacy", "--reason", "begin").returncode == 0
    added = run(
        sqlite_url,
        "cohort",
        "add",
        "wave-1",
        "--migration",
        "orders",
        "--tenants",
        "acme",
        "--wave",
        "1",
    )
    assert added.returncode == 0, added.stderr
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        "migration: orders\nsteps:\n  - {mode: canary, percent: 0, hold: 1h}\n"
        "  - {mode: canary, percent: 0, cohort: wave-1, audit: {max_drift: 0}}\n"
    )
    assert run(sqlite_url, "rollout", "start", str(plan)).returncode == 0
    status = run(sqlite_url, "rollout", "status", "orders")
    assert "[cohort wave-1] [audit]" in status.stdout
    assert "waiting for an audit of cohort wave-1" in status.stdout

    report = tmp_path / "audit.json"
    tenants: dict[str, object] = {"acme": {"changed": 1}}
    report.write_text(
        json.dumps({"format": "cutover-audit/1", "tenant_column": "t", "tenants": tenants})
    )
    refused = run(sqlite_url, "rollout", "audit", "orders", str(report), "--by", "dana")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "tenant 'acme' of cohort 'wave-1' has 1 rows of drift" in refused.stderr
    missing = run(sqlite_url, "rollout", "audit", "orders", str(tmp_path / "none.json"))
    assert missing.returncode == 2 and "no audit report at" in missing.stderr

    tenants["acme"] = {"pending": 3}
    report.write_text(
        json.dumps({"format": "cutover-audit/1", "tenant_column": "t", "tenants": tenants})
    )
    given = run(sqlite_url, "rollout", "audit", "orders", str(report), "--by", "dana", "--json")
    assert given.returncode == 0, given.stderr
    evidence = json.loads(given.stdout)["decision"]["evidence"]["audit"]
    assert evidence["file"] == str(report) and evidence["tenants"]["acme"]["pending"] == 3
    assert "[audited by dana]" in run(sqlite_url, "rollout", "status", "orders").stdout
