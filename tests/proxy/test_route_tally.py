"""The proxy's counts per route: every call counted reaches the store, even one counted
while its window was being written."""

from __future__ import annotations

import cutover
from cutover.model import Arm
from cutover.proxy._server import RouteTally
from cutover.runtime import Runtime


def written(tally: RouteTally) -> dict[tuple[str, Arm, int], int]:
    """Take the tally as a flush does, 'write' it, settle it; the calls of each window taken."""
    windows, taken = tally.take()
    tally.settle(taken)
    return {(row.route, row.arm, row.start): row.calls for rows in windows.values() for row in rows}


def test_a_call_counted_during_a_write_is_written_next_time(
    runtime: Runtime, clock: cutover.ManualClock
) -> None:
    tally = RouteTally()
    start = runtime.window_start(clock())
    tally.count("api", "*", Arm.LEGACY, 1_000_000, ())
    windows, taken = tally.take()
    tally.count("api", "*", Arm.LEGACY, 1_000_000, ())  # lands while the first is written
    tally.settle(taken)
    assert windows["api"][0].calls == 1
    assert written(tally) == {("*", Arm.LEGACY, start): 2}
    assert written(tally) == {}  # nothing new: nothing to write


def test_a_finished_window_is_written_once_more_before_it_is_forgotten(
    runtime: Runtime, clock: cutover.ManualClock
) -> None:
    tally = RouteTally()
    start = runtime.window_start(clock())
    tally.count("api", "*", Arm.NEW, 1_000_000, ())
    _, taken = tally.take()
    tally.count("api", "*", Arm.NEW, 1_000_000, ())
    clock.advance(120)  # the window is over before its first write settles
    tally.settle(taken)
    assert written(tally) == {("*", Arm.NEW, start): 2}
    assert written(tally) == {}
