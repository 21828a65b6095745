"""The proxy's counts per route: every call counted reaches the store, even one counted
while its window was being written."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace
from typing import Any

import pytest

import cutover
from cutover.model import Arm
from cutover.proxy import _sync_noise
from cutover.proxy._server import RouteTally
from cutover.runtime import Runtime
from cutover.telemetry.windows import CALLS


def written(tally: RouteTally) -> dict[tuple[str, Arm, int], int]:
    """Take the tally as a flush does, 'write' it, settle it; the calls of each window taken."""
    windows, taken = tally.take()
    tally.settle(taken)
    return {(row.route, row.arm, row.start): row.calls for rows in windows.values() for row in rows}


@pytest.mark.parametrize("window_ends", [False, True], ids=["window-current", "window-over"])
def test_a_call_counted_during_a_write_is_written_next_time(
    runtime: Runtime, clock: cutover.ManualClock, window_ends: bool
) -> None:
    """Also when the window is over before the first write settles: it is written once more
    before it is forgotten."""
    tally = RouteTally()
    start = runtime.window_start(clock())
    tally.count("api", "*", Arm.LEGACY, 1_000_000, ())
    windows, taken = tally.take()
    tally.count("api", "*", Arm.LEGACY, 1_000_000, ())  # lands while the first is written
    if window_ends:
        clock.advance(120)
    tally.settle(taken)
    assert windows["api"][0].calls == 1
    assert written(tally) == {("*", Arm.LEGACY, start): 2}
    assert written(tally) == {}  # nothing new: nothing to write


class SlowFirstWrite:
    """The runtime's real store, whose first write of route windows waits to be let go."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.writing, self.go = threading.Event(), threading.Event()

    def write_route_windows(self, *args: Any) -> None:
        if not self.writing.is_set():
            self.writing.set()
            assert self.go.wait(10)
        self.store.write_route_windows(*args)


def test_a_sync_started_while_another_writes_waits_for_it(
    runtime: Runtime, clock: cutover.ManualClock
) -> None:
    """At shutdown the last sync may begin while a cancelled periodic one is still writing:
    the older counts must not be written last."""
    store = SlowFirstWrite(runtime.store)
    proxy = SimpleNamespace(
        routes_tally=RouteTally(), syncing=threading.Lock(), migrations={}, noise={}, rules={}
    )
    on = SimpleNamespace(store=store, instance="proxy-test", clock=clock)
    for _ in range(2):
        proxy.routes_tally.count("api", "*", Arm.LEGACY, 1_000_000, ())
    first = threading.Thread(target=_sync_noise, args=(proxy, on))
    first.start()
    assert store.writing.wait(10)  # the first has taken 2 calls and is writing them
    proxy.routes_tally.count("api", "*", Arm.LEGACY, 1_000_000, ())
    last = threading.Thread(target=_sync_noise, args=(proxy, on))
    last.start()
    time.sleep(0.2)  # time enough for the last sync to write 3 calls, were it let through
    store.go.set()
    first.join(10)
    last.join(10)
    counts = runtime.store.route_windows("api", 0)["*"][Arm.LEGACY]
    assert counts.counts[CALLS] == 3
