"""Calendar windows on steps: the controller enters a step only while the local wall clock
reads inside the window, across midnight and the changes of daylight saving time."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from cutover.clock import ManualClock
from cutover.control.calendar import Calendar, format_utc
from cutover.control.controller import Controller
from cutover.control.plan import parse_plan
from cutover.errors import InvalidInput
from cutover.store import Store, open_store


def utc(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


BERLIN_NIGHTS = Calendar.parse("Mon-Fri", "02:00-05:00", "Europe/Berlin")


def test_a_window_opens_on_its_days_and_local_hours() -> None:
    # Friday 2026-01-09, winter: Berlin is UTC+1, so 02:00-05:00 is 01:00-04:00 UTC.
    assert BERLIN_NIGHTS.contains(utc("2026-01-09T01:00:00"))
    assert BERLIN_NIGHTS.contains(utc("2026-01-09T03:59:59"))
    assert not BERLIN_NIGHTS.contains(utc("2026-01-09T04:00:00"))
    assert not BERLIN_NIGHTS.contains(utc("2026-01-09T00:59:59"))
    # Saturday: closed; the next opening is Monday 02:00 Berlin.
    assert not BERLIN_NIGHTS.contains(utc("2026-01-10T02:00:00"))
    assert BERLIN_NIGHTS.next_open(utc("2026-01-09T04:00:00")) == utc("2026-01-12T01:00:00")
    assert BERLIN_NIGHTS.next_open(utc("2026-01-09T02:00:00")) == utc("2026-01-09T02:00:00")


def test_a_window_across_the_spring_change_opens_when_the_clocks_land() -> None:
    # Sunday 2026-03-29 at 02:00 CET the clocks jump to 03:00 CEST (01:00 UTC).
    sundays = Calendar.parse("Sun", "02:00-05:00", "Europe/Berlin")
    opens = sundays.next_open(utc("2026-03-28T12:00:00"))
    assert opens == utc("2026-03-29T01:00:00")  # 03:00 CEST: two hours of window that night
    assert sundays.contains(utc("2026-03-29T02:59:59"))
    assert not sundays.contains(utc("2026-03-29T03:00:00"))  # 05:00 CEST
    # A start the clocks skip opens at the jump, not half an hour later.
    late = Calendar.parse("Sun", "02:30-05:00", "Europe/Berlin")
    assert late.next_open(utc("2026-03-28T12:00:00")) == utc("2026-03-29T01:00:00")
    # A window wholly inside the skipped hour does not open that night at all.
    skipped = Calendar.parse("Sun", "02:10-02:50", "Europe/Berlin")
    assert skipped.next_open(utc("2026-03-28T12:00:00")) == utc("2026-04-05T00:10:00")


def test_a_window_across_the_autumn_change_lasts_the_extra_hour() -> None:
    # Sunday 2026-10-25 at 03:00 CEST the clocks go back to 02:00 CET (01:00 UTC).
    sundays = Calendar.parse("Sun", "02:00-05:00", "Europe/Berlin")
    assert sundays.next_open(utc("2026-10-24T12:00:00")) == utc("2026-10-25T00:00:00")
    assert sundays.contains(utc("2026-10-25T00:00:00"))  # 02:00 CEST
    assert sundays.contains(utc("2026-10-25T01:30:00"))  # 02:30 CET, the second time
    assert sundays.contains(utc("2026-10-25T03:59:59"))  # 04:59:59 CET
    assert not sundays.contains(utc("2026-10-25T04:00:00"))  # four hours of window that night


def test_a_window_may_cross_midnight() -> None:
    # Friday 22:00 to Saturday 02:00 UTC; a Saturday night does not open.
    nights = Calendar.parse("Fri", "22:00-02:00", "UTC")
    assert nights.contains(utc("2026-01-09T23:00:00"))
    assert nights.contains(utc("2026-01-10T01:59:00"))  # Saturday morning, Friday's window
    assert not nights.contains(utc("2026-01-10T02:00:00"))
    assert not nights.contains(utc("2026-01-10T23:00:00"))  # Saturday night
    assert not nights.contains(utc("2026-01-09T01:00:00"))  # Friday morning: Thursday's night
    assert nights.next_open(utc("2026-01-10T02:00:00")) == utc("2026-01-16T22:00:00")


def test_days_read_like_people_write_them() -> None:
    assert Calendar.parse("Fri-Mon", "00:00-24:00", "UTC").days == {4, 5, 6, 0}
    assert Calendar.parse(["Sat", "sunday"], "00:00-24:00", "UTC").days == {5, 6}
    assert Calendar.parse("Mon,Wed", "00:00-24:00", "UTC").describe() == ("Mon,Wed 00:00-24:00 UTC")


@pytest.mark.parametrize(
    ("window", "message"),
    [
        ({"days": "Mon-Fry"}, "steps[1].window: 'Fry' is not a day; write days like Mon-Fri"),
        ({"hours": "2-5"}, "hours '2-5' must read like 02:00-05:00"),
        ({"hours": "02:00-25:00"}, "a time runs from 00:00 to 23:59 (24:00 as an end)"),
        ({"hours": "02:00-02:00"}, "for the whole day write 00:00-24:00"),
        ({"tz": "Europe/Berlyn"}, "tz 'Europe/Berlyn' is not a time zone; give an IANA name"),
        ({"day": "Mon"}, "steps[1].window.day: unknown field; the fields are days, hours, tz"),
    ],
)
def test_a_bad_window_is_one_sentence_naming_the_field(
    window: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidInput) as refused:
        parse_plan(_plan(window))
    assert message in str(refused.value)


def _plan(window: dict[str, Any]) -> dict[str, Any]:
    return {
        "migration": "m",
        "steps": [
            {"mode": "shadow", "hold": "1h"},
            {"mode": "canary", "percent": 5, "hold": "1h", "window": window},
        ],
    }


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return open_store(f"sqlite:///{tmp_path / 's.db'}")


def test_the_controller_waits_for_the_window_and_logs_nothing_meanwhile(store: Store) -> None:
    # Friday 2026-03-27, 12:00 UTC: the hold ends at 13:00, the window opens on Monday.
    clock = ManualClock(start=utc("2026-03-27T12:00:00"))
    controller = Controller(store, clock=clock)
    window = {"days": "Mon-Fri", "hours": "02:00-05:00", "tz": "Europe/Berlin"}
    controller.start(parse_plan(_plan(window)), actor="ana", reason="test")
    before = len(store.decisions("m"))
    monday = utc("2026-03-30T00:00:00")  # 02:00 CEST: summer time since Sunday
    while clock() < monday - 1800:
        clock.advance(1800)
        assert controller.tick() == []
    assert len(store.decisions("m")) == before
    evaluation = controller.evaluate("m")
    assert evaluation.blockers == (
        "waiting for window (Mon,Tue,Wed,Thu,Fri 02:00-05:00 Europe/Berlin) to enter step 2/2"
        f" (canary 5%), opens at {format_utc(monday)}",
    )
    assert evaluation.to_json()["steps"][1]["window"] == (
        "Mon,Tue,Wed,Thu,Fri 02:00-05:00 Europe/Berlin"
    )
    clock.advance(1800)
    promoted = controller.tick()
    assert [d.kind for d in promoted] == ["promote"]
    assert promoted[0].at == monday


def test_an_operator_promotes_outside_the_window_only_by_force(store: Store) -> None:
    clock = ManualClock(start=utc("2026-03-28T12:00:00"))  # a Saturday
    controller = Controller(store, clock=clock)
    controller.start(parse_plan(_plan({"days": "Mon-Fri"})), actor="ana", reason="test")
    with pytest.raises(InvalidInput, match=r"waiting for window .* opens at 2026-03-30 00:00:00"):
        controller.promote("m", actor="ana", reason="now")
    forced = controller.promote("m", actor="ana", reason="now", force=True)
    assert "forced past: window" in forced.reason and forced.evidence["forced"] is True


def test_a_first_step_with_a_window_waits_for_it_from_the_start(store: Store) -> None:
    clock = ManualClock(start=utc("2026-03-28T12:00:00"))  # a Saturday
    controller = Controller(store, clock=clock)
    plan = {"migration": "m", "steps": [{"mode": "shadow", "window": {"days": "Mon"}}]}
    started = controller.start(parse_plan(plan), actor="ana", reason="test")
    assert "waiting for window (Mon 00:00-24:00 UTC)" in started.reason
    assert store.state("m") is None or store.state("m").mode.value == "legacy"
    clock.advance(86400)  # Sunday: still nothing
    assert controller.tick() == []
    clock.advance(43200)  # Monday noon
    assert [d.kind for d in controller.tick()] == ["promote"]
