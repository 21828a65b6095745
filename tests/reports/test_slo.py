"""SLOs as data and their error budgets, against figures computed by hand."""

from __future__ import annotations

import pytest

from cutover.control.checks import Outcome, Telemetry, evaluate
from cutover.control.plan import parse_plan
from cutover.errors import InvalidInput
from cutover.model import Arm, Mode
from cutover.reports.slo import SLO, Budget, Reader, budget, parse_slos, status
from cutover.store import FlushBatch, open_store
from cutover.telemetry import windows as w
from cutover.telemetry.histogram import index_of
from cutover.telemetry.windows import ArmCounts, WindowDelta

DAY = 86400.0
NOW = 100 * DAY  # a multiple of a minute: the rolling window's edge falls on a stored window


def arms(calls: int = 0, errors: int = 0, timeouts: int = 0, slow: int = 0) -> dict[Arm, ArmCounts]:
    """New's counts: ``slow`` of the calls took 2 s, the others 10 ms."""
    new = ArmCounts()
    new.counts[w.CALLS], new.counts[w.ERRORS], new.counts[w.TIMEOUTS] = calls, errors, timeouts
    new.histogram.add(index_of(10_000_000), calls - slow)
    new.histogram.add(index_of(2_000_000_000), slow)
    return {Arm.LEGACY: ArmCounts(), Arm.NEW: new}


class Windows:
    """A store written window by window, as instances flush."""

    def __init__(self, url: str) -> None:
        self.store = open_store(url)
        self.sequence = 0

    def add(self, start: float, **counts: int) -> None:
        self.sequence += 1
        delta = WindowDelta("transport", arms(**counts))
        batch = FlushBatch("i", self.sequence, start + 60, windows=[(int(start), delta)], run="r")
        self.store.write_flush(batch)


@pytest.fixture
def windows(sqlite_url: str) -> Windows:
    return Windows(sqlite_url)


SUCCESS = SLO.model_validate(
    {"name": "toggle-success", "indicator": {"metric": "errors"}, "objective": "99.9%"}
)


def test_the_runbook_figures_allowed_consumed_remaining() -> None:
    # 20,000 events, 10 bad: 0.05% consumed of the 0.1% a 99.9% SLO allows, half left.
    figures = Budget(0.999, good=19_990, total=20_000)
    assert figures.allowed == pytest.approx(0.001)
    assert figures.consumed == pytest.approx(0.0005)
    assert figures.remaining == pytest.approx(0.5)
    assert figures.actual == pytest.approx(0.9995)
    assert figures.burn_rate == pytest.approx(0.5)
    assert (figures.status, figures.budget_status) == ("pass", "healthy")
    spent = Budget(0.999, good=9_970, total=10_000)  # 0.3% failed: three budgets' worth
    assert spent.remaining == pytest.approx(-2.0) and spent.burn_rate == pytest.approx(3.0)
    assert (spent.status, spent.budget_status) == ("fail", "exhausted")


def test_no_traffic_spends_nothing_and_has_no_burn_rate() -> None:
    idle = Budget(0.999, good=0, total=0)
    assert idle.consumed == 0 and idle.remaining == 1.0
    assert idle.actual is None and idle.burn_rate is None and idle.status == "no data"


def test_the_budget_is_weighted_by_traffic_not_a_mean_of_ratios(windows: Windows) -> None:
    # A quiet window failing half its calls beside a busy clean one: 5 bad in 10,010 calls,
    # not a mean ratio of 25%.
    windows.add(NOW - 3600, calls=10, errors=5)
    windows.add(NOW - 1800, calls=10_000)
    figures = status(SUCCESS, "transport", Reader(windows.store), NOW).budget
    assert (figures.bad, figures.total) == (5, 10_010)
    assert figures.remaining == pytest.approx(1 - (5 / 10_010) / 0.001)


def test_the_rolling_edge_drops_a_window_once_it_is_older_than_the_slo(windows: Windows) -> None:
    windows.add(NOW - 30 * DAY - 60, calls=1000, errors=1000)  # just before the edge
    windows.add(NOW - 30 * DAY, calls=1000, errors=1)  # the first window inside it
    windows.add(NOW - 60, calls=1000, errors=0, timeouts=1)  # a timeout fails too
    reader = Reader(windows.store)
    now = status(SUCCESS, "transport", reader, NOW)
    assert (now.budget.bad, now.budget.total) == (2, 2000)
    assert now.since == NOW - 30 * DAY
    # Half a minute later the window holding the edge still counts whole, as in cutover stats;
    # a minute later it has left.
    assert status(SUCCESS, "transport", reader, NOW + 30).budget.bad == 2
    assert status(SUCCESS, "transport", reader, NOW + 60).budget.bad == 1
    rates = dict(now.burn_rates)
    assert rates[300.0] == pytest.approx((1 / 1000) / 0.001)  # only the last minute's calls
    assert rates[3 * DAY] == pytest.approx(1.0)


def test_a_latency_slo_counts_calls_under_its_threshold(windows: Windows) -> None:
    windows.add(NOW - 600, calls=1000, slow=3)
    slo = SLO.model_validate(
        {
            "name": "toggle-latency",
            "indicator": {"metric": "latency", "threshold_ms": 1500},
            "objective": "99%",
            "window": "7d",
        }
    )
    figures = budget(Reader(windows.store), slo, "transport", NOW - slo.window, NOW)
    assert (figures.good, figures.total) == (997, 1000)
    assert figures.remaining == pytest.approx(1 - 0.003 / 0.01)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"objective": "100%"}, "below 100%"),
        ({"objective": 99.9}, "write it as 99.9%"),
        ({"objective": "high"}, "not a number"),
        ({"indicator": {"metric": "latency"}}, "threshold_ms"),
        ({"indicator": {"good": "sum(up)"}}, "needs total"),
        ({"window": "30s"}, "at least 60s"),
        ({"colour": "red"}, "unknown field"),
    ],
)
def test_a_bad_slo_is_one_sentence_naming_the_field(entry: dict, message: str) -> None:
    slo = {"name": "s", "indicator": {"metric": "errors"}, "objective": "99.9%", **entry}
    with pytest.raises(InvalidInput, match=message):
        parse_slos({"migration": "transport", "slos": [slo]}, "slos.yaml")


def plan_with_budget_checks() -> dict:
    return {
        "migration": "transport",
        "slos": [{"name": "success", "indicator": {"metric": "errors"}, "objective": "99.9%"}],
        "checks": [
            {"name": "budget", "metric": "error_budget_remaining", "min": 0.3, "slo": "success"},
            {"name": "burn", "metric": "burn_rate", "max": 2, "window": "1h"},
        ],
        "steps": [
            {"mode": "canary", "percent": 75, "hold": "3d"},
            {"mode": "canary", "percent": 90, "checks": [{"name": "budget", "min": 0.2}]},
        ],
    }


def test_plans_say_the_budget_each_step_needs(windows: Windows) -> None:
    plan = parse_plan(plan_with_budget_checks())
    # 0.025% of calls failed over the month: a quarter of the budget spent, 75% left. The last
    # hour alone failed 0.25%: a burn rate of 2.5.
    windows.add(NOW - 10 * DAY, calls=36_000)
    windows.add(NOW - 1800, calls=4_000, errors=10)
    reader = Reader(windows.store)

    def judged(step: int) -> dict[str, tuple[Outcome, float | None]]:
        out = {}
        for check in plan.checks_for(step):
            result = evaluate(
                check,
                plan,
                Mode.CANARY,
                Telemetry({}),
                now=NOW,
                step_started_at=NOW - 60,
                budgets=lambda slo, since, until: budget(reader, slo, "transport", since, until),
            )
            out[check.name] = (result.outcome, result.value)
        return out

    first = judged(0)
    assert first["budget"][0] is Outcome.PASS
    assert first["budget"][1] == pytest.approx(1 - (10 / 40_000) / 0.001)
    assert first["burn"][0] is Outcome.FAIL and first["burn"][1] == pytest.approx(2.5)
    assert [c.min for c in plan.checks_for(1) if c.name == "budget"] == [0.2]
    # The step has not started a budget anew: a step's start does not shorten the SLO window.
    assert judged(1)["budget"][1] == first["budget"][1]


def test_a_budget_check_without_its_slo_is_refused() -> None:
    data = plan_with_budget_checks()
    data["checks"][0]["slo"] = "latency"
    with pytest.raises(InvalidInput, match="no SLO named 'latency'"):
        parse_plan(data)
    data["slos"] = []
    del data["checks"][0]["slo"]
    with pytest.raises(InvalidInput, match="name the SLO"):
        parse_plan(data)
    data = plan_with_budget_checks()
    data["checks"][0]["arm"] = "new"
    with pytest.raises(InvalidInput, match="arm does not apply"):
        parse_plan(data)


def test_without_traffic_a_burn_rate_check_waits(windows: Windows) -> None:
    plan = parse_plan(plan_with_budget_checks())
    reader = Reader(windows.store)
    burn = next(c for c in plan.checks if c.name == "burn")
    result = evaluate(
        burn,
        plan,
        Mode.CANARY,
        Telemetry({}),
        now=NOW,
        step_started_at=NOW,
        budgets=lambda slo, since, until: budget(reader, slo, "transport", since, until),
    )
    assert result.outcome is Outcome.INCONCLUSIVE and "no events" in result.reason


def test_cutover_slo_prints_each_slo_and_its_budget(windows: Windows, tmp_path) -> None:
    import json

    import yaml

    from ..helpers import cutover_cli

    windows.add(NOW - 10 * DAY, calls=19_000)
    windows.add(NOW - 1800, calls=1_000, errors=10)
    plan = tmp_path / "plan.yaml"
    plan.write_text(yaml.safe_dump(plan_with_budget_checks()))
    clock = tmp_path / "clock"
    clock.write_text(str(NOW))
    env = {"CUTOVER_CLOCK": f"file:{clock}"}
    store = windows.store.url
    shown = cutover_cli(
        "--store", store, "slo", "transport", "--file", str(plan), "--json", env=env
    )
    assert shown.returncode == 0, shown.stderr
    (success,) = json.loads(shown.stdout)["slos"]
    assert success["objective"] == 0.999 and success["status"] == "pass"
    assert success["consumed"] == pytest.approx(0.0005) and success["remaining"] == pytest.approx(
        0.5
    )
    assert success["burn_rates"]["1h"] == pytest.approx(10.0)
    table = cutover_cli("--store", store, "slo", "transport", "--file", str(plan), env=env)
    assert "99.95%" in table.stdout and "50.0%" in table.stdout and "healthy" in table.stdout
    missing = cutover_cli("--store", store, "slo", "transport", env=env)
    assert missing.returncode == 2 and "has no rollout" in missing.stderr
    unknown = cutover_cli("--store", store, "slo", "transport", "latency", "--file", str(plan))
    assert unknown.returncode == 2 and "no SLO named 'latency'" in unknown.stderr


def _controller_walk(tmp_path, new_errors: float) -> list:
    from cutover.clock import ManualClock
    from cutover.control.controller import Controller

    from ..control.traffic import Traffic

    store = open_store(f"sqlite:///{tmp_path / 'walk.db'}")
    clock = ManualClock()
    controller = Controller(store, clock=clock)
    plan = {
        "migration": "m",
        "slos": [
            {"name": "ok", "indicator": {"metric": "errors"}, "objective": "99.9%", "window": "1d"}
        ],
        "steps": [{"mode": "canary", "percent": 50, "hold": "30m"}, {"mode": "new"}],
        "checks": [{"name": "budget", "metric": "error_budget_remaining", "min": 0.5}],
        "on_critical": "legacy",
    }
    controller.start(parse_plan(plan), actor="ops", reason="test")
    traffic = Traffic(store, "m", clock, calls=4000, new_errors=lambda state: new_errors)
    decisions = []
    for _ in range(45):
        traffic.minute()
        decisions += controller.tick()
        if decisions:
            break
    return decisions


def test_the_controller_leaves_a_step_whose_budget_is_spent(tmp_path) -> None:
    # 0.3% of new's calls fail: three budgets' worth, about -200% left.
    [decision] = _controller_walk(tmp_path, 0.003)
    assert decision.kind == "abort" and "budget failed" in decision.reason
    (budget_check,) = [c for c in decision.evidence["checks"] if c["name"] == "budget"]
    assert budget_check["value"] < 0 and budget_check["threshold"] == 0.5
    assert "is below 50.0%" in budget_check["reason"]


def test_the_controller_promotes_while_the_budget_holds(tmp_path) -> None:
    [decision] = _controller_walk(tmp_path, 0.0)
    assert decision.kind == "promote"


def test_a_file_of_slos_for_several_migrations_gives_each_its_own(sqlite_url: str) -> None:
    from cutover.reports.objectives import declared, objectives

    text = yaml_text(
        {
            "slos": [
                {"name": "a", "migration": "codec", **BODY},
                {"name": "b", "migration": "transport", **BODY},
            ]
        }
    )
    store = open_store(sqlite_url)
    assert [s.name for s in objectives(store, "transport", text, "slos.yaml").slos] == ["b"]
    with pytest.raises(InvalidInput, match="declares no SLOs of 'search'"):
        objectives(store, "search", text, "slos.yaml")
    assert [(m, s.name) for m, s in declared(store, (), [("slos.yaml", text)])] == [
        ("codec", "a"),
        ("transport", "b"),
    ]


BODY = {"indicator": {"metric": "errors"}, "objective": "99%"}


def yaml_text(data: dict) -> str:
    import yaml

    return yaml.safe_dump(data)
