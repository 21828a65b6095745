"""Cooldown after a rollback (``retry_after``) and a shorter hold on a retried step
(``hold_on_retry``): refused before its time by the library and the CLI, counted from the
rollback's recorded time, so a restarted controller keeps it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from cutover.clock import ManualClock
from cutover.control.calendar import format_utc
from cutover.control.controller import Controller
from cutover.control.plan import parse_plan
from cutover.errors import InvalidInput, NotYet
from cutover.model import RolloutStatus
from cutover.store import Store, open_store

from ..test_cli import run
from .traffic import Traffic

WEEK = 7 * 86400


def _plan(**extra: Any) -> dict[str, Any]:
    return {
        "migration": "m",
        "steps": [
            {"mode": "canary", "percent": 10, "sample": 1.0, "hold": "1h"},
            {"mode": "canary", "percent": 50, "hold": "1h"},
        ],
        "checks": [
            {
                "name": "errors",
                "metric": "error_rate",
                "max": 0.05,
                "method": "fixed",
                "window": "1m",
            }
        ],
        "retry_after": "7d",
        **extra,
    }


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return open_store(f"sqlite:///{tmp_path / 's.db'}")


def _rolled_back(store: Store, clock: ManualClock, **extra: Any) -> float:
    """Start, move to 50% and let new fail there: the time of the rollback."""
    controller = Controller(store, clock=clock)
    controller.start(parse_plan(_plan(**extra)), actor="ana", reason="test")
    controller.promote("m", actor="ana", reason="on", force=True)
    traffic = Traffic(store, "m", clock, new_errors=lambda state: 0.5 if state.percent == 50 else 0)
    traffic.minute()
    traffic.minute()
    decisions = controller.tick()
    assert [d.kind for d in decisions] == ["rollback"]
    return decisions[0].at


def test_retry_is_refused_until_the_cooldown_has_passed(store: Store) -> None:
    clock = ManualClock(start=6000.0)
    at = _rolled_back(store, clock)
    controller = Controller(store, clock=clock)
    clock.advance(WEEK - 61 - (clock() - at))
    with pytest.raises(NotYet) as refused:
        controller.retry("m", actor="ana", reason="fixed")
    assert refused.value.possible_at == at + WEEK
    assert str(refused.value) == (
        "the plan of 'm' waits 1m1s more after its rollback before it is tried again"
        f" (retry_after): retry is possible from {format_utc(at + WEEK)}"
    )
    # resume and promote of a rolled-back rollout are attempts too.
    with pytest.raises(NotYet):
        controller.resume("m", actor="ana", reason="fixed")
    with pytest.raises(NotYet):
        controller.promote("m", actor="ana", reason="fixed", force=True)
    assert (
        controller.evaluate("m")
        .blockers[0]
        .endswith(f"`retry` possible from {format_utc(at + WEEK)} (retry_after)")
    )
    clock.advance(61)
    assert controller.retry("m", actor="ana", reason="fixed").kind == "retry"


def test_the_cooldown_survives_a_controller_restart(store: Store, tmp_path: Path) -> None:
    clock = ManualClock(start=6000.0)
    at = _rolled_back(store, clock)
    # A new process: another store connection, another controller, a later time.
    clock.advance(3 * 86400)
    again = Controller(open_store(f"sqlite:///{tmp_path / 's.db'}"), clock=clock)
    with pytest.raises(NotYet) as refused:
        again.retry("m", actor="ana", reason="fixed")
    assert refused.value.possible_at == at + WEEK


def test_the_controller_never_restarts_a_rollout_by_itself(store: Store) -> None:
    clock = ManualClock(start=6000.0)
    _rolled_back(store, clock)
    controller = Controller(store, clock=clock)
    before = len(store.decisions("m"))
    for _ in range(10):  # past the cooldown: still nothing without a person
        clock.advance(86400)
        assert controller.tick() == []
    assert len(store.decisions("m")) == before
    rollout = store.rollout("m")
    assert rollout is not None and rollout.status is RolloutStatus.ROLLED_BACK


def test_an_abort_by_on_critical_starts_the_cooldown_too(store: Store) -> None:
    clock = ManualClock(start=6000.0)
    controller = Controller(store, clock=clock)
    controller.start(parse_plan(_plan(on_critical="legacy")), actor="ana", reason="test")
    traffic = Traffic(store, "m", clock, new_errors=lambda state: 0.5)
    traffic.minute()
    traffic.minute()
    assert [d.kind for d in controller.tick()] == ["abort"]
    with pytest.raises(NotYet):
        controller.retry("m", actor="ana", reason="fixed")
    assert "`retry` possible from" in controller.evaluate("m").blockers[0]


def test_an_operator_abort_starts_no_cooldown(store: Store) -> None:
    clock = ManualClock(start=6000.0)
    controller = Controller(store, clock=clock)
    controller.start(parse_plan(_plan()), actor="ana", reason="test")
    controller.abort("m", actor="ana", reason="release train cancelled")
    assert controller.retry("m", actor="ana", reason="next train").kind == "retry"


def test_a_step_sets_its_own_cooldown(store: Store) -> None:
    clock = ManualClock(start=6000.0)
    steps = _plan()["steps"]
    steps[1]["retry_after"] = "1d"
    at = _rolled_back(store, clock, steps=steps)
    controller = Controller(store, clock=clock)
    with pytest.raises(NotYet) as refused:
        controller.retry("m", actor="ana", reason="fixed")
    assert refused.value.possible_at == at + 86400


def test_a_retried_step_holds_for_its_hold_on_retry(store: Store) -> None:
    clock = ManualClock(start=6000.0)
    plan = _plan(retry_after=None, on_critical="legacy")
    plan["steps"][0].update(hold="14d", hold_on_retry="48h")
    controller = Controller(store, clock=clock)
    controller.start(parse_plan(plan), actor="ana", reason="test")
    assert controller.evaluate("m").progress.hold_left == 14 * 86400
    controller.abort("m", actor="ana", reason="drift")
    controller.retry("m", actor="ana", reason="fixed", step=1)
    evaluation = controller.evaluate("m")
    assert evaluation.progress.hold_left == 48 * 3600
    assert "hold: 2d of 2d left" in evaluation.blockers
    # Entered again by a promotion rather than a retry, a step holds its full hold.
    controller.promote("m", actor="ana", reason="on", force=True)
    controller.abort("m", actor="ana", reason="again")
    controller.retry("m", actor="ana", reason="from the top", step=2)
    assert controller.evaluate("m").progress.hold_left == 3600


def test_bad_cooldowns_are_one_sentence() -> None:
    with pytest.raises(InvalidInput, match="retry_after"):
        parse_plan(_plan(retry_after="a week"))
    with pytest.raises(InvalidInput, match=r"steps\[0\].hold_on_retry"):
        parse_plan({"migration": "m", "steps": [{"mode": "shadow", "hold_on_retry": "-1h"}]})


def test_the_cli_refuses_an_early_retry_naming_the_time(store_url: str) -> None:
    store = open_store(store_url)
    clock = ManualClock(start=time.time() // 60 * 60)  # the CLI reads the system clock
    at = _rolled_back(store, clock)
    refused = run(store_url, "rollout", "retry", "m", "--reason", "fixed")
    assert refused.returncode == 2
    assert refused.stderr.strip() == (
        "cutover: the plan of 'm' waits"
        + refused.stderr.split("waits", 1)[1].split("more", 1)[0]
        + f"more after its rollback before it is tried again (retry_after): retry is possible"
        f" from {format_utc(at + WEEK)}"
    )
    assert "Traceback" not in refused.stderr
