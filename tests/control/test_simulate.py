"""Backtesting: a plan replayed over a month of stored telemetry by the real controller."""

from __future__ import annotations

import copy
import json
import shutil
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cutover.clock import ManualClock
from cutover.control.plan import parse_plan
from cutover.control.simulate import Approvals, Simulation, replayable, simulate
from cutover.errors import InvalidInput
from cutover.model import Arm, Mode, State
from cutover.store import FlushBatch, Store, open_store
from cutover.telemetry import windows as w
from cutover.telemetry.histogram import Histogram, index_of
from cutover.telemetry.windows import ArmCounts, WindowDelta

from ..helpers import cutover_cli

DAY = 86_400
T0 = 1_750_032_000  # a midnight, UTC
MONTH = 30 * DAY
REGRESSION = T0 + 11 * DAY  # the start of day 12

PLAN = {
    "migration": "pricing",
    "steps": [
        {"mode": "shadow", "hold": "1d"},
        {"mode": "canary", "percent": 50, "hold": "2d", "approval": True},
        {"mode": "new", "hold": "20d"},
    ],
    "checks": [
        {"name": "drift", "metric": "drift_rate", "max": 0.001, "during": "shadow"},
        {"name": "errors", "metric": "error_rate", "max": 0.01, "method": "fixed", "window": "1h"},
        {"name": "latency", "metric": "p95_ms", "max": 500, "severity": "warning"},
        {
            "name": "cpu",
            "source": "prometheus",
            "url": "http://prometheus.invalid:9090",
            "query": "max(rate(process_cpu_seconds_total[$window]))",
            "max": 0.8,
        },
    ],
    "notify": [{"webhook": "http://127.0.0.1:9/never-called"}],
}


def arm(calls: int, offpath: int, errors: int, ms: float) -> ArmCounts:
    counts = ArmCounts()
    counts.counts[w.CALLS] = calls
    counts.counts[w.OFFPATH] = offpath
    counts.counts[w.COMPARISONS] = offpath
    counts.counts[w.ERRORS] = errors
    counts.histogram = Histogram([(index_of(int(ms * 1e6)), calls)])
    return counts


def month_of_telemetry(store: Store, new_errors: Callable[[int, int], int]) -> None:
    """A month of minutes recorded at canary 10% with sample 0.1: 92 runs of legacy (2 to
    compare) and 20 of new (10 to compare) a minute; ``new_errors(start, calls)`` errors on new."""
    store.write_state(
        "pricing",
        State(mode=Mode.CANARY, percent=10, sample=0.1),
        expected_version=0,
        actor="ops",
        reason="canary 10% by hand",
        at=T0 - 60,
    )
    for day in range(30):
        batch = FlushBatch("app-1", day + 1, T0 + (day + 1) * DAY, run="fixture")
        for start in range(T0 + day * DAY, T0 + (day + 1) * DAY, 60):
            arms = {
                Arm.LEGACY: arm(92, 2, 0, 2.0),
                Arm.NEW: arm(20, 10, new_errors(start, 20), 1.8),
            }
            batch.add_window(start, WindowDelta("pricing", arms))
        store.write_flush(batch)


def healthy(start: int, calls: int) -> int:
    return 1 if start % (500 * 60) == 0 else 0  # one error in 10,000 calls


def regressed(start: int, calls: int) -> int:
    return calls // 5 if start >= REGRESSION else healthy(start, calls)  # 20% from day 12


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = {}
    for name, errors in (("healthy", healthy), ("regressed", regressed)):
        path = tmp_path_factory.mktemp(name) / "source.db"
        store = open_store(f"sqlite:///{path}")
        month_of_telemetry(store, errors)
        store.close()
        out[name] = path
    return out


def replay(path: Path, **options: object) -> Simulation:
    """The plan over the month in ``path``, a pass an hour (a pass a minute, the default, is
    sixty times as many passes for the same decisions an hour apart at most)."""
    store = open_store(f"sqlite:///{path}")
    try:
        return simulate(
            parse_plan(options.pop("plan", PLAN)),
            store,
            **{"since": T0, "until": T0 + MONTH, "step": 3600.0, **options},  # type: ignore[arg-type]
        )
    finally:
        store.close()


def dump(path: Path) -> list[str]:
    with sqlite3.connect(path) as conn:
        return list(conn.iterdump())


def test_a_healthy_month_completes_the_plan(stores: dict[str, Path]) -> None:
    result = replay(stores["healthy"])
    kinds = [d.kind for d in result.decisions]
    assert kinds == ["start", "approval_needed", "approve", "promote", "promote", "complete"]
    start, asked, approved, to_canary, to_new, done = result.decisions
    assert start.at == T0 and start.step == "step 1/3 (shadow)"
    assert start.recorded == "canary 10%", "the routing the telemetry was recorded under"
    assert asked.at == approved.at == T0 + DAY, "the shadow's gate passed when its hold ended"
    assert approved.actor == "backtest-approver"
    assert to_canary.at == T0 + DAY + 3600 and to_canary.step == "step 2/3 (canary 50%)"
    assert to_new.at == to_canary.at + 2 * DAY and done.at == to_new.at + 20 * DAY
    assert done.step == "step 3/3 (new), completed"
    assert result.status == "completed" and result.ended_at == done.at
    assert result.windows == (done.at - T0) // 60, "every minute that had ended by then"
    assert result.skipped == ("cpu",)
    assert any("the checks cpu, which read Prometheus" in note for note in result.notes)


def test_a_regression_on_day_12_rolls_back_at_the_right_time_and_names_the_check(
    stores: dict[str, Path],
) -> None:
    before = dump(stores["regressed"])
    result = replay(stores["regressed"])
    assert dump(stores["regressed"]) == before, "the source store is never written"
    rollback = next(d for d in result.decisions if d.kind == "rollback")
    # The first pass after the regression began: its hour of telemetry is all regressed.
    assert rollback.at == REGRESSION + 3600
    assert rollback.step == "step 2/3 (canary 50%), rolled back"
    assert rollback.recorded == "canary 10%"
    assert [check["name"] for check in rollback.checks] == ["errors"]
    assert rollback.checks[0]["reason"].startswith("error rate 0.2 (240 of 1200 calls on new")
    assert rollback.checks[0]["reason"].endswith("is beyond 0.01")
    assert rollback.reason.startswith("rolled back from new to canary 50%: errors failed")
    # Still failing, it goes on stepping back until legacy, and the simulation ends there.
    assert [d.kind for d in result.decisions][-3:] == ["rollback", "rollback", "abort"]
    assert result.decisions[-1].step == "legacy (aborted)"
    assert (result.status, result.where) == ("aborted", "legacy")
    assert result.ended_at == REGRESSION + 3 * 3600


def test_without_approvals_the_plan_waits_at_the_gate(stores: dict[str, Path]) -> None:
    result = replay(stores["healthy"], approvals=Approvals.NEVER, until=T0 + 2 * DAY)
    assert [d.kind for d in result.decisions] == ["start", "approval_needed"]
    assert result.status == "running" and result.where == "step 1/3 (shadow)"
    assert result.waiting == ("approval needed to enter step 2/3 (canary 50%)",)
    assert any("nobody approves (--approve never)" in note for note in result.notes)


def test_a_hold_that_ends_with_the_gate_closed_is_reported_as_held(
    stores: dict[str, Path],
) -> None:
    strict = {**PLAN, "steps": [{"mode": "shadow", "hold": "1h", "min_comparisons": 100_000}]}
    result = replay(stores["healthy"], plan=strict, until=T0 + DAY)
    held = [d for d in result.decisions if d.kind == "held"]
    assert len(held) == 1 and held[0].at == T0 + 3600, "said once, when the hold ended"
    assert held[0].reason.startswith(
        "the hold is over; promotion waits: 720 of 100000 required comparisons;"
        " drift is inconclusive: drift rate 0 (0 of 720 comparisons;"
    )
    assert result.status == "running" and result.waiting == (
        "17280 of 100000 required comparisons",
    )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"until": T0}, "must come after its start"),
        ({"step": 0.5}, "--step must be from 1s"),
        ({"telemetry": "nope"}, "holds no telemetry of 'nope'"),
    ],
)
def test_bad_input_is_one_sentence(
    stores: dict[str, Path], options: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        replay(stores["healthy"], **{"until": T0 + DAY, **options})


def iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%MZ")


def test_the_cli_prints_the_decisions_and_what_the_replay_cannot_know(
    stores: dict[str, Path], tmp_path: Path
) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text(json.dumps(PLAN))  # JSON is YAML
    span = ("--since", iso(T0), "--until", iso(T0 + 2 * DAY), "--step", "1h")
    source = f"sqlite:///{stores['healthy']}"
    shown = cutover_cli("rollout", "simulate", str(plan), "--store", source, *span, "--json")
    assert shown.returncode == 0, shown.stderr
    found = json.loads(shown.stdout)
    assert [d["kind"] for d in found["decisions"]] == [
        "start",
        "approval_needed",
        "approve",
        "promote",
    ]
    assert found["decisions"][-1]["recorded_under"] == "canary 10%"
    assert found["outcome"]["status"] == "running" and found["skipped_checks"] == ["cpu"]
    table = cutover_cli("--store", source, "rollout", "simulate", str(plan), *span)
    assert table.returncode == 0, table.stderr
    assert "decisions it would have taken" in table.stdout
    assert "note: telemetry is replayed as it was recorded" in " ".join(table.stdout.split())

    missing = cutover_cli(
        "rollout", "simulate", str(plan), "--store", f"sqlite:///{tmp_path / 'no.db'}", *span
    )
    assert missing.returncode == 2 and not (tmp_path / "no.db").exists()
    assert missing.stderr.strip() == (
        f"cutover: there is no store at {tmp_path / 'no.db'}; name the one that holds the"
        " telemetry with --store"
    )
    backwards = cutover_cli(
        "rollout", "simulate", str(plan), "--store", source, "--since", "1d", "--until", "2d"
    )
    assert backwards.returncode == 2
    assert "the end of the simulation must come after its start" in backwards.stderr


def test_prometheus_checks_and_webhooks_are_left_out_of_the_replayed_plan() -> None:
    plan = parse_plan(
        {
            **PLAN,
            "steps": [
                {"mode": "shadow", "checks": [{"name": "cpu", "max": 0.5}]},
                {
                    "mode": "new",
                    "checks": [
                        {"name": "errors", "max": 0.001},
                        {"name": "up", "source": "prometheus", "query": "min(up)", "min": 1},
                    ],
                },
            ],
        }
    )
    runnable, skipped = replayable(plan)
    assert skipped == ("cpu", "up") and runnable.notify == ()
    assert [c.name for c in runnable.checks_for(0)] == ["drift", "errors", "latency"]
    assert [(c.name, c.max) for c in runnable.checks_for(1)][1] == ("errors", 0.001)
    assert all(c.source == "cutover" for step in (0, 1) for c in runnable.checks_for(step))


def test_roles_cohorts_and_slo_budgets_are_simulated_as_a_live_rollout_has_them(
    stores: dict[str, Path], tmp_path: Path
) -> None:
    from cutover.data import cohorts

    copy = tmp_path / "source.db"
    shutil.copy(stores["healthy"], copy)
    store = open_store(f"sqlite:///{copy}")
    clock = ManualClock(T0)
    cohorts.add(
        store, "pricing", "pilot", tenants=["acme", "globex"], wave=1, actor="ops", clock=clock
    )
    store.close()
    plan = {
        "migration": "pricing",
        "steps": [
            {"mode": "shadow", "hold": "1h"},
            {
                "mode": "canary",
                "percent": 0,
                "cohort": "pilot",
                "audit": {"max_drift": 0},  # no report of the time: not replayed
                "hold": "1h",
                "approval": {"roles": ["sre", "product"]},
            },
        ],
        "checks": [{"name": "budget", "metric": "error_budget_remaining", "min": 0.5}],
        "slos": [
            {"name": "ok", "indicator": {"metric": "errors"}, "objective": "99%", "window": "7d"}
        ],
    }
    result = replay(copy, plan=plan, since=T0 + 8 * DAY, until=T0 + 9 * DAY)
    kinds = [d.kind for d in result.decisions]
    assert kinds == ["start", "approval_needed", "approve", "approve", "promote", "complete"]
    approvers = [d.actor for d in result.decisions if d.kind == "approve"]
    assert approvers == ["backtest-approver-sre", "backtest-approver-product"]
    assert result.decisions[4].reason.endswith("; cohort pilot (2 tenants) pinned to new")
    assert result.earlier == 7 * 24 * 60, "the SLO's week before the start, read first"
    assert any(f"read the {7 * 24 * 60} windows of the 7d before" in n for n in result.notes)
    assert "audit gates are not replayed" in " ".join(result.notes)


def test_roles_windows_and_cohorts_replay_too(stores: dict[str, Path]) -> None:
    plan = copy.deepcopy(PLAN)
    # T0 is a Monday: the canary may only begin on a Thursday, after each role has approved.
    plan["steps"][1].update(
        approval={"roles": ["sre", "product"]},
        window={"days": "Thu", "hours": "02:00-04:00", "tz": "UTC"},
        cohort="pilot",  # pins change no recorded telemetry: left out of the replay
        audit={"max_drift": 0},  # goes with its cohort
    )
    result = replay(stores["healthy"], plan=plan, until=T0 + 5 * DAY)
    kinds = [d.kind for d in result.decisions]
    assert kinds == ["start", "approval_needed", "approve", "approve", "held", "promote"]
    approvals = result.decisions[2:4]
    assert "waiting for window (Thu 02:00-04:00 UTC)" in result.decisions[4].reason
    assert [d.actor for d in approvals] == ["backtest-approver-sre", "backtest-approver-product"]
    assert result.decisions[-1].at == T0 + 3 * DAY + 2 * 3600  # Thursday 02:00
    assert any("the store holds no cohort pilot of 'pricing'" in note for note in result.notes)
