"""Sustained conditions (``for:``): a check acts only after failing on every pass for that long."""

from __future__ import annotations

from pathlib import Path

import pytest

from cutover.clock import ManualClock
from cutover.control.controller import Controller
from cutover.control.plan import parse_plan
from cutover.errors import InvalidInput
from cutover.model import Decision, Mode
from cutover.store import Store, open_store

from .traffic import Traffic


def _plan(**check: object) -> dict[str, object]:
    errors = {
        "name": "errors",
        "metric": "error_rate",
        "max": 0.05,
        "window": "1m",  # each pass sees the last minute only: a minute decides the outcome
        "method": "fixed",
        "for": "5m",
        **check,
    }
    return {
        "migration": "m",
        "steps": [{"mode": "canary", "percent": 50, "sample": 1.0, "hold": "1d"}],
        "checks": [errors],
        "on_critical": "legacy",
    }


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return open_store(f"sqlite:///{tmp_path / 's.db'}")


def _setup(store: Store, **check: object) -> tuple[Controller, Traffic]:
    clock = ManualClock(start=6000.0)  # on a minute, so the step's first minute is counted
    controller = Controller(store, clock=clock)
    controller.start(parse_plan(_plan(**check)), actor="ops", reason="test")
    return controller, Traffic(store, "m", clock, calls=4000)


def _minutes(controller: Controller, traffic: Traffic, rates: list[float]) -> list[list[str]]:
    """One minute of traffic at each error rate, then a pass: the decisions of each pass."""
    kinds = []
    for rate in rates:
        traffic.new_errors = lambda state, rate=rate: rate  # type: ignore[misc]
        traffic.minute()
        kinds.append([d.kind for d in controller.tick()])
    return kinds


def _last(store: Store) -> Decision:
    return store.decisions("m")[-1]


def test_a_critical_check_acts_only_after_failing_for_its_whole_duration(store: Store) -> None:
    controller, traffic = _setup(store)
    kinds = _minutes(controller, traffic, [0.0, 0.2, 0.2, 0.2, 0.2, 0.2])
    assert kinds == [[], ["failing"], [], [], [], []]
    assert "acts if it fails on every pass for 5m" in store.decisions("m")[-1].reason
    evaluation = controller.evaluate("m")
    assert any(b.startswith("warning errors fails") for b in evaluation.blockers)
    # Five minutes after the first failing pass, on the sixth failing pass: legacy.
    assert _minutes(controller, traffic, [0.2]) == [["abort"]]
    state = store.state("m")
    assert state is not None and state.mode is Mode.LEGACY


def test_one_passing_pass_starts_the_count_over(store: Store) -> None:
    controller, traffic = _setup(store)
    kinds = _minutes(controller, traffic, [0.2, 0.2, 0.2, 0.2, 0.0, 0.2, 0.2, 0.2, 0.2, 0.2])
    assert kinds == [["failing"], [], [], [], ["recovered"], ["failing"], [], [], [], []]
    recovered = [d for d in store.decisions("m") if d.kind == "recovered"]
    assert "errors no longer failing; the count starts over" in recovered[0].reason
    assert _minutes(controller, traffic, [0.2]) == [["abort"]]


def test_an_inconclusive_pass_ends_the_condition_too(store: Store) -> None:
    controller, traffic = _setup(store, min_samples=10_000)
    traffic.calls = 20_000
    assert _minutes(controller, traffic, [0.2, 0.2]) == [["failing"], []]
    traffic.calls = 2000  # a quiet minute: too few calls to judge
    assert _minutes(controller, traffic, [0.2]) == [["recovered"]]


def test_a_restarted_controller_counts_from_the_first_failure(store: Store) -> None:
    controller, traffic = _setup(store)
    assert _minutes(controller, traffic, [0.2, 0.2, 0.2]) == [["failing"], [], []]
    began = store.decisions("m")[-1].at
    controller.close()  # gives up the lease, as a stopped process does
    restarted = Controller(store, clock=controller.clock)  # nothing kept in memory
    assert _minutes(restarted, traffic, [0.2, 0.2]) == [[], []]
    assert _minutes(restarted, traffic, [0.2]) == [["abort"]]
    assert _last(store).at - began == 300


def test_a_warning_with_for_is_raised_only_once_sustained(store: Store) -> None:
    controller, traffic = _setup(store, severity="warning", **{"for": "3m"})
    kinds = _minutes(controller, traffic, [0.2, 0.2, 0.2, 0.2, 0.0])
    assert kinds == [["failing"], [], [], ["warning"], ["recovered"]]
    assert _minutes(controller, traffic, [0.0]) == [["warning_cleared"]]


def test_for_is_validated_shown_and_kept_with_the_stored_plan() -> None:
    plan = parse_plan(_plan())
    check = plan.checks[0]
    assert check.sustained == 300
    assert check.describe() == "new error_rate <= 0.05 over 1m for 5m"
    assert plan.to_json()["checks"][0]["for"] == 300  # as a plan writes it, in seconds
    assert parse_plan(plan.to_json()) == plan
    with pytest.raises(InvalidInput, match=r"checks\[0\]\.for: duration must be longer than zero"):
        parse_plan(_plan(**{"for": 0}))
    with pytest.raises(InvalidInput, match=r"checks\[0\]\.for: "):
        parse_plan(_plan(**{"for": "a while"}))
    step = {**_plan()["steps"][0], "checks": [{"name": "errors", "for": "30m"}]}  # type: ignore[index]
    overridden = parse_plan({**_plan(), "steps": [step]})
    assert overridden.checks_for(0)[0].sustained == 1800
