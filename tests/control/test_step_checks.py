"""Per-step checks: a step adds checks, overrides the plan's bounds, and reacts its own way."""

from __future__ import annotations

from pathlib import Path

import pytest

from cutover.clock import ManualClock
from cutover.control.controller import Controller
from cutover.control.plan import OnCritical, Severity, parse_plan
from cutover.errors import InvalidInput
from cutover.model import Mode, RolloutStatus
from cutover.store import open_store

from ..test_cli import run
from .traffic import Traffic

PHASES = {
    "migration": "m",
    "steps": [
        {
            "mode": "canary",
            "percent": 5,
            "sample": 1.0,
            "hold": "30m",
            "on_critical": "rollback",
            "checks": [{"name": "errors", "max": 0.001}],
        },
        {
            "mode": "canary",
            "percent": 25,
            "hold": "30m",
            "checks": [
                {"name": "errors", "max": 0.005, "severity": "warning"},
                {"name": "timeouts", "metric": "timeout_rate", "max": 0.01},
            ],
        },
        {"mode": "canary", "percent": 100, "hold": "30m", "on_critical": "none"},
    ],
    "checks": [{"name": "errors", "metric": "error_rate", "max": 0.01, "window": "10m"}],
    "on_critical": "previous_step",
}


def test_each_step_has_its_own_checks_and_reaction() -> None:
    plan = parse_plan(PHASES)
    first, second, third = (plan.checks_for(i) for i in range(3))
    assert [(c.name, c.max, c.window) for c in first] == [("errors", 0.001, 600.0)]
    assert [(c.name, c.max, c.severity) for c in second] == [
        ("errors", 0.005, Severity.WARNING),
        ("timeouts", 0.01, Severity.CRITICAL),
    ]
    assert third == plan.checks  # no overrides: the plan's
    assert [plan.on_critical_for(i) for i in range(3)] == [
        OnCritical.ROLLBACK,
        OnCritical.PREVIOUS_STEP,
        OnCritical.NONE,
    ]
    assert plan.checks_for(-1) == plan.checks  # before the first step


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"max": 0.1}, r"steps\[0\]\.checks\[0\]: name the check"),
        (
            {"name": "errors", "metric": "drift_rate"},
            r"steps\[0\]\.checks\[0\]: metric cannot be overridden for 'errors'",
        ),
        (
            {"name": "errors", "min": 0.5},
            r"steps\[0\]\.checks\[0\]: min 0.5 is above max 0.01; swap them",
        ),
        ({"name": "new-one", "max": 0.1}, r"steps\[0\]\.checks\[0\]: name the metric"),
        (
            {"name": "new-one", "metric": "error_rate", "max": 1, "colour": 1},
            r"steps\[0\]\.checks\[0\]\.colour: unknown field; the fields are name, source",
        ),
        ({"name": "errors", "window": "soon"}, r"steps\[0\]\.checks\[0\]\.window: "),
    ],
)
def test_a_step_check_that_does_not_resolve_is_one_sentence(
    entry: dict[str, object], message: str
) -> None:
    data = {**PHASES, "steps": [{"mode": "shadow", "checks": [entry]}]}
    with pytest.raises(InvalidInput, match=message):
        parse_plan(data, "plan.yaml")


def test_a_step_cannot_name_two_checks_alike() -> None:
    twice = [{"name": "errors", "max": 0.1}, {"name": "errors", "max": 0.2}]
    data = {**PHASES, "steps": [{"mode": "shadow", "checks": twice}]}
    with pytest.raises(InvalidInput, match=r"steps\[0\]\.checks\[1\]: the step names 'errors'"):
        parse_plan(data)


def _walk(tmp_path: Path, errors: float) -> tuple[Controller, Traffic]:
    store = open_store(f"sqlite:///{tmp_path / 's.db'}")
    clock = ManualClock()
    controller = Controller(store, clock=clock)
    controller.start(parse_plan(PHASES), actor="ops", reason="test")
    traffic = Traffic(store, "m", clock, calls=4000, new_errors=lambda state: errors)
    return controller, traffic


def test_the_first_step_goes_back_to_legacy_at_once_on_its_stricter_bound(tmp_path: Path) -> None:
    # 0.5% errors: within the plan's 1%, beyond the first step's 0.1%.
    controller, traffic = _walk(tmp_path, 0.005)
    decisions = []
    for _ in range(30):
        traffic.minute()
        decisions += controller.tick()
        if decisions:
            break
    assert [d.kind for d in decisions] == ["abort"]
    assert "errors failed" in decisions[0].reason
    state = controller.store.state("m")
    assert state is not None and state.mode is Mode.LEGACY


def test_a_manual_decision_step_holds_and_records_instead_of_acting(tmp_path: Path) -> None:
    controller, traffic = _walk(tmp_path, 0.0)
    controller.promote("m", actor="ops", reason="skip ahead", force=True)
    controller.promote("m", actor="ops", reason="skip ahead", force=True)
    traffic.new_errors = lambda state: 0.05  # beyond every bound, at the manual step
    kinds = []
    for _ in range(15):
        traffic.minute()
        kinds += [d.kind for d in controller.tick()]
    assert kinds == ["warning"]  # recorded once, nothing rolled back
    rollout = controller.store.rollout("m")
    assert rollout is not None and rollout.status is RolloutStatus.RUNNING and rollout.step == 2
    evaluation = controller.evaluate("m")
    assert evaluation.action is None
    assert any("errors fails" in b for b in evaluation.blockers)
    last = controller.store.decisions("m")[-1]
    assert "a manual decision" in last.reason


def test_validate_shows_every_steps_checks(tmp_path: Path, store_url: str) -> None:
    import yaml

    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(PHASES))
    shown = run(store_url, "rollout", "validate", str(path))
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert "     check errors (critical): new error_rate <= 0.001 since the step began" in lines
    assert "     check errors (warning): new error_rate <= 0.005 since the step began" in lines
    assert "     check timeouts (critical): new timeout_rate <= 0.01 since the step began" in lines
    assert lines.count("     on a critical failure: none") == 1
    assert lines.count("     on a critical failure: rollback") == 1
