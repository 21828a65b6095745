"""A tick reads every rollout's telemetry at once and keeps step totals between passes: what it
judges must be what one migration read alone, by a controller that just started, judges."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest

from cutover.clock import ManualClock
from cutover.control.controller import Controller
from cutover.control.plan import Plan, parse_plan
from cutover.model import Arm
from cutover.store import FlushBatch, Store
from cutover.telemetry import windows as w
from cutover.telemetry.histogram import index_of
from cutover.telemetry.windows import ArmCounts, WindowDelta

from .traffic import Traffic

CHECKS = [
    {"name": "parity", "metric": "drift_rate", "max": 0.01},
    {"name": "errors", "metric": "error_rate", "arm": "new", "max": 0.05, "window": "2m"},
    {
        "name": "latency",
        "metric": "p99_ms",
        "arm": "new",
        "max_ratio_to": "legacy",
        "max": 2.0,
        "window": "10m",
        "method": "fixed",
    },
]


def _plan(name: str, checks: list[dict[str, Any]] = CHECKS) -> Plan:
    return parse_plan(
        {
            "migration": name,
            "steps": [
                {"mode": "shadow", "hold": "1h"},
                {"mode": "canary", "percent": 20, "hold": "1h"},
                {"mode": "new"},
            ],
            "checks": checks,
        }
    )


def _minute(traffic: Iterable[Traffic], clock: ManualClock) -> None:
    """A minute of every migration's traffic, then the clock a minute on."""
    for each in traffic:
        each.clock = ManualClock(clock())
        each.minute()
    clock.advance(60)


def _every_way(store: Store, controller: Controller, clock: ManualClock) -> dict[str, Any]:
    """Each active rollout's evaluation as the tick reads it (all at once, with the totals the
    controller kept), after checking it equals the one read alone by a fresh controller."""
    rollouts = {name: r for name, r in store.rollouts().items() if r.status.active}
    states = store.states()
    gathered = controller._gather(controller._plans_of(rollouts), clock())
    out = {}
    for name, rollout in rollouts.items():
        batched = controller.evaluate(
            name, rollout=rollout, state=states.get(name), gathered=gathered.get(name)
        ).to_json()
        alone = Controller(store, clock=clock, dry_run=True).evaluate(name).to_json()
        assert batched == alone, name
        assert batched["progress"]["comparisons"] > 0
        out[name] = batched
    return out


def _running(store: Store, name: str, minutes: int) -> tuple[ManualClock, Controller]:
    """A rollout of ``name`` after ``minutes`` minutes of traffic, a pass of its controller
    after each."""
    clock = ManualClock(1_800_000_000)
    controller = Controller(store, clock=clock)
    controller.start(_plan(name), actor="ops", reason="test")
    traffic = Traffic(store, name, clock, calls=600)
    for _ in range(minutes):
        traffic.minute()
        controller.tick()
    return clock, controller


def test_a_tick_judges_every_rollout_as_one_read_alone(store: Store) -> None:
    clock = ManualClock(1_800_000_000)
    controller = Controller(store, clock=clock)
    traffic = {}
    for name in ("a", "b", "c"):  # steps begun at different times: spans of their own
        controller.start(_plan(name), actor="ops", reason="test")
        traffic[name] = Traffic(store, name, clock, calls=600, seed=len(name))
        for _ in range(4):
            _minute(traffic.values(), clock)
            controller.tick()
    for _ in range(12):
        _minute(traffic.values(), clock)
        controller.tick()
    first = _every_way(store, controller, clock)
    assert {e["checks"][0]["name"] for e in first.values()} == {"parity"}

    # A step change: the kept totals of the old step are not the new step's.
    controller.promote("a", actor="ops", reason="test", force=True)
    # A new plan for the same migration: judged by it, not by the plan parsed before.
    changed = [{**CHECKS[1], "name": "new-errors", "window": "3m"}]
    controller.start(_plan("b", changed), actor="ops", reason="test", replace=True)
    for _ in range(8):
        _minute(traffic.values(), clock)
        controller.tick()
    after = _every_way(store, controller, clock)
    assert after["a"]["step"] == 1 and after["a"]["progress"]["held_seconds"] == 8 * 60
    assert [check["name"] for check in after["b"]["checks"]] == ["new-errors"]


def test_a_late_flush_into_a_folded_minute_waits_for_the_step_or_a_restart(store: Store) -> None:
    """Minutes older than the span a pass reads are folded into the step's totals once; a flush
    into one of them afterwards (an instance back from a long store outage) is in the checks'
    fixed windows while they cover it, and in the step totals (the sequential checks, the
    step's minimums) of a controller that starts afresh, not of the one already running."""
    clock, controller = _running(store, "m", minutes=15)
    running = controller.evaluate("m")
    minute = int(clock()) // 60 * 60

    def late(minutes_ago: int, seq: int) -> None:
        extra = ArmCounts()
        extra.counts[w.CALLS] = extra.counts[w.OFFPATH] = extra.counts[w.COMPARISONS] = 500
        windows = [(minute - minutes_ago * 60, WindowDelta("m", {Arm.NEW: extra}))]
        store.write_flush(FlushBatch("late", seq, clock(), windows, run="late"))

    # The plan's longest fixed window is 10 minutes: a pass reads them afresh.
    late(8, 1)
    again = controller.evaluate("m")
    assert again.progress.comparisons == running.progress.comparisons + 500
    # Folded 14 minutes ago: this controller's totals stay as they were summed.
    late(14, 2)
    again = controller.evaluate("m")
    restarted = Controller(store, clock=clock, dry_run=True).evaluate("m")
    assert again.progress.comparisons == running.progress.comparisons + 500
    assert restarted.progress.comparisons == running.progress.comparisons + 1000
    parity = next(c for c in again.checks if c.name == "parity")  # sequential: the whole step
    assert parity.sample == next(c for c in restarted.checks if c.name == "parity").sample - 500


def test_histograms_are_read_again_where_counters_changed_and_a_late_one_is_seen(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pass reads latency histograms only for the windows whose counters changed since it
    last read them, and for the last two minutes; a late flush into an older minute of the
    latency check's window changes that minute's counters, so the next pass sees it as a
    fresh read does."""
    clock, controller = _running(store, "h", minutes=12)
    before = _every_way(store, controller, clock)["h"]
    reads: list[dict[str, float | None]] = []
    series_of = store.series_of

    def counted(spans: Any) -> Any:
        reads.append({name: span[2] for name, span in spans.items()})
        return series_of(spans)

    monkeypatch.setattr(store, "series_of", counted)
    clock.advance(180)  # no traffic since: every window is older than two minutes
    controller.tick()
    assert reads == [{"h": None}]  # the counters alone

    minute = int(clock()) // 60 * 60
    slow = ArmCounts()
    slow.counts[w.CALLS] = slow.counts[w.OFFPATH] = 400
    slow.histogram.add(index_of(80_000_000), 400)  # 80 ms, against about 2 ms
    late = [(minute - 7 * 60, WindowDelta("h", {Arm.NEW: slow}))]
    assert store.write_flush(FlushBatch("late", 1, clock(), late, run="late"))
    reads.clear()
    after = _every_way(store, controller, clock)["h"]
    assert reads[:2] == [{"h": None}, {"h": minute - 7 * 60}]  # from the late minute on

    def latency(evaluation: dict[str, Any]) -> Any:
        return next(c["value"] for c in evaluation["checks"] if c["name"] == "latency")

    assert latency(after) > latency(before)


def test_the_batched_reads_sum_what_the_windows_hold(store: Store) -> None:
    """``windows_of`` (a span's totals, histograms summed by the server) and ``series_of``
    (window by window) of several migrations at once agree with each other, whatever span."""
    clock = ManualClock(1_800_000_000)
    names = ("x", "y", "z")
    controller = Controller(store, clock=clock)
    for name in names:  # in shadow: both arms run every call
        controller.start(_plan(name), actor="ops", reason="test")
    traffic = [
        Traffic(store, name, clock, calls=300 + 100 * i, seed=i, new_ms=lambda _, i=i: 2.0 + i)
        for i, name in enumerate(names)
    ]
    begin = clock()
    for _ in range(6):
        _minute(traffic, clock)
    spans = {"x": (begin, None), "y": (begin + 120, None), "z": (begin + 60, begin + 240)}
    summed = store.windows_of(spans, histograms=["x", "y"])
    series = store.series_of({n: (a, b, a) for n, (a, b) in spans.items()})
    for name in names:
        by_window = {arm: ArmCounts() for arm in Arm}
        for arms in series[name].values():
            for arm, counts in arms.items():
                by_window[arm].add(counts)
        for arm in Arm:
            assert summed[name][arm].counts == by_window[arm].counts, (name, arm)
            assert by_window[arm].histogram.count > 0
            if name != "z":  # histograms were asked of x and y only
                assert summed[name][arm].histogram == by_window[arm].histogram, (name, arm)
            else:
                assert summed[name][arm].histogram.count == 0
