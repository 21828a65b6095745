"""Hung arms: a run past its timeout is counted then, abandoned, and never starves the others."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from prometheus_client import REGISTRY, generate_latest

import cutover
from cutover.offpath import WorkerPool

from .helpers import eventually, put, quiet, stored


def hangs_on(gate: threading.Event) -> Callable[[Any], Any]:
    """A new arm that hangs until ``gate`` is set (a minute at most, far longer than any wait
    here), then echoes its input."""

    def new(x: Any) -> Any:
        gate.wait(60)
        return x

    return new


def threads_named(name: str) -> int:
    return sum(1 for thread in threading.enumerate() if thread.name == name)


def timeouts(migration: cutover.Migration) -> int:
    """Timeouts of new counted in process so far (flushed or not)."""
    return migration._telemetry.totals()[cutover.Arm.NEW]["timeouts"]


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    """What hung arms wait on; set at the end so their threads go home."""
    event = threading.Event()
    yield event
    event.set()


def test_a_hung_shadow_arm_leaves_the_other_migrations_their_workers(
    runtime: Any, gate: threading.Event
) -> None:
    hung = cutover.Migration("hung", lambda x: x, hangs_on(gate), timeout=0.1)
    healthy = cutover.Migration("healthy", lambda x: x, lambda x: x)
    put(runtime, "hung", mode="shadow")
    put(runtime, "healthy", mode="shadow")
    for i in range(10):
        assert hung(i) == i
    # The four workers took four hung runs; at the deadline they are abandoned and replaced.
    assert eventually(lambda: timeouts(hung) == 4)
    assert eventually(lambda: runtime.pool.abandoned() == {"hung": 4})
    for i in range(1000):
        assert healthy(i) == i
    healthy_stats = stored(runtime, "healthy")
    assert (healthy_stats.comparisons, healthy_stats.offpath_dropped) == (1000, 0)
    hung_stats = stored(runtime, "hung")
    # Counted when they expired, while the arm still hangs; the six queued behind were refused.
    assert (hung_stats.new.timeouts, hung_stats.offpath_dropped) == (4, 6)
    assert hung_stats.comparisons == 0
    assert threads_named("cutover-offpath") <= 4 + 4
    gate.set()  # the hung arms return at last: too late, their results are discarded
    assert eventually(lambda: runtime.pool.abandoned() == {})
    hung_stats = stored(runtime, "hung")
    assert (hung_stats.new.timeouts, hung_stats.comparisons, hung_stats.new.calls) == (4, 0, 4)
    assert eventually(lambda: threads_named("cutover-offpath") == 4), "no thread is left over"
    assert hung(11) == 11  # the migration runs again once its threads are back
    assert stored(runtime, "hung").comparisons == 1


def test_a_timeout_is_counted_when_it_expires_not_when_the_arm_returns(
    runtime: Any, gate: threading.Event
) -> None:
    hung = cutover.Migration("hung", lambda x: x, hangs_on(gate), timeout=0.05)
    put(runtime, "hung", mode="shadow")
    for i in range(3):
        hung(i)
    assert eventually(lambda: timeouts(hung) == 3)
    stats = stored(runtime, "hung")
    assert (stats.new.calls, stats.new.timeouts, stats.new.served) == (3, 3, 0)
    text = generate_latest(REGISTRY).decode()
    assert 'cutover_calls_total{arm="new",migration="hung",outcome="timeout"} 3.0' in text
    assert 'cutover_abandoned_runs{migration="hung"} 3.0' in text


def test_a_migration_holds_at_most_its_share_of_abandoned_threads(
    sqlite_url: str, clock: cutover.ManualClock, gate: threading.Event
) -> None:
    runtime = quiet(sqlite_url, clock=clock, abandoned_per_migration=2)
    hung = cutover.Migration("hung", lambda x: x, hangs_on(gate), timeout=0.05)
    put(runtime, "hung", mode="shadow")
    for held in (1, 2):
        hung(held)
        assert eventually(lambda: runtime.pool.abandoned() == {"hung": held})  # noqa: B023
    for i in range(50):
        assert hung(i) == i  # refused at once: never queued, never waited for
    stats = stored(runtime, "hung")
    assert (stats.new.timeouts, stats.offpath_dropped) == (2, 50)
    assert threads_named("cutover-offpath") == 4 + 2


def test_a_burst_of_hung_runs_never_makes_more_threads_than_the_share(
    sqlite_url: str, clock: cutover.ManualClock, gate: threading.Event
) -> None:
    runtime = quiet(sqlite_url, clock=clock, abandoned_per_migration=2)
    hung = cutover.Migration("hung", lambda x: x, hangs_on(gate), timeout=0.05)
    put(runtime, "hung", mode="shadow")
    for i in range(50):
        assert hung(i) == i
    # Four workers took four runs at once: two hung threads are replaced, the other two keep
    # their workers' places; everything queued behind is refused.
    assert eventually(lambda: runtime.pool.abandoned() == {"hung": 4})
    assert threads_named("cutover-offpath") == 4 + 2
    stats = stored(runtime, "hung")
    assert (stats.new.timeouts, stats.offpath_dropped) == (4, 46)


def test_the_pool_replaces_at_most_abandoned_total_threads(
    sqlite_url: str, clock: cutover.ManualClock, gate: threading.Event
) -> None:
    runtime = quiet(sqlite_url, clock=clock, abandoned_total=3)
    names = [f"hung-{n}" for n in range(6)]
    migrations = [cutover.Migration(n, lambda x: x, hangs_on(gate), timeout=0.05) for n in names]
    for name in names:
        put(runtime, name, mode="shadow")
    for migration in migrations:
        migration(1)
    # Three hung threads are replaced; the next ones keep their workers, so the pool ends up
    # with every worker hung rather than with more threads.
    assert eventually(lambda: sum(runtime.pool.abandoned().values()) == 6)
    assert threads_named("cutover-offpath") == 4 + 3
    timeouts = sum(stored(runtime, name).new.timeouts for name in names)
    dropped = sum(stored(runtime, name).offpath_dropped for name in names)
    assert (timeouts, dropped) == (6, 0)
    gate.set()
    assert eventually(lambda: threads_named("cutover-offpath") == 4)


def test_a_hung_serving_arm_does_not_make_other_migrations_fall_back(
    sqlite_url: str, clock: cutover.ManualClock, gate: threading.Event
) -> None:
    runtime = quiet(sqlite_url, clock=clock, serving_workers=2)
    hung = cutover.Migration("hung", lambda x: "legacy", hangs_on(gate), timeout=0.05)
    healthy = cutover.Migration("healthy", lambda: "legacy", lambda: "new", timeout=5)
    put(runtime, "hung", mode="canary", percent=100, sample=0)
    put(runtime, "healthy", mode="canary", percent=100, sample=0)
    assert [hung(None) for _ in range(10)] == ["legacy"] * 10
    assert eventually(lambda: threads_named("cutover-serving") == 2 + 4)
    assert runtime.serving_pool.abandoned() == {"hung": 4}
    assert [healthy() for _ in range(20)] == ["new"] * 20
    assert stored(runtime, "healthy").new.fallbacks == 0
    hung_stats = stored(runtime, "hung")
    assert (hung_stats.new.fallbacks, hung_stats.new.timeouts) == (10, 10)
    assert threads_named("cutover-serving") <= 2 + 4


def test_an_async_arm_that_ignores_cancellation_is_abandoned_and_counted(
    sqlite_url: str, clock: cutover.ManualClock
) -> None:
    runtime = quiet(sqlite_url, clock=clock, offpath_tasks=4, abandoned_per_migration=3)

    async def legacy(x: int) -> int:
        return x

    async def stubborn(x: int) -> int:
        while True:
            try:
                await release.wait()
                return x
            except asyncio.CancelledError:
                continue  # ignores cancellation: only the release ends it

    async def new(x: int) -> int:
        return x

    hung = cutover.Migration("hung", legacy, stubborn, timeout=0.05)
    healthy = cutover.Migration("healthy", legacy, new)
    put(runtime, "hung", mode="shadow")
    put(runtime, "healthy", mode="shadow")

    async def scenario() -> None:
        for i in range(3):
            await hung(i)
        for _ in range(500):
            if timeouts(hung) == 3:
                break
            await asyncio.sleep(0.01)
        assert timeouts(hung) == 3, "counted at the deadline though the tasks go on"
        assert runtime.tasks.abandoned() == {"hung": 3}
        await hung(4)  # the migration's share is held: dropped, not started
        for i in range(8):  # the abandoned tasks gave their places back to the others
            await healthy(i)
            await asyncio.sleep(0)
        assert await cutover.aflush()  # waits for the healthy runs, not for the abandoned
        release.set()
        for _ in range(200):
            if not runtime.tasks.abandoned():
                break
            await asyncio.sleep(0.01)

    release = asyncio.Event()
    asyncio.run(scenario())
    hung_stats = stored(runtime, "hung")
    assert (hung_stats.new.timeouts, hung_stats.offpath_dropped) == (3, 1)
    assert hung_stats.comparisons == 0, "late results are discarded"
    assert stored(runtime, "healthy").comparisons == 8


def test_an_async_migrations_hung_sync_arm_gives_its_thread_back(
    runtime: Any, gate: threading.Event
) -> None:
    async def legacy(x: int) -> int:
        return x

    hung = cutover.Migration("hung", legacy, hangs_on(gate), timeout=0.05)
    healthy = cutover.Migration("healthy", legacy, lambda x: x)
    put(runtime, "hung", mode="shadow")
    put(runtime, "healthy", mode="shadow")

    async def scenario() -> None:
        for i in range(6):
            await hung(i)
        while timeouts(hung) < 6:
            await asyncio.sleep(0.01)
        for i in range(5):
            await healthy(i)
        await cutover.aflush(timeout=2)

    asyncio.run(scenario())
    assert stored(runtime, "healthy").comparisons == 5, "the hung threads were replaced"
    assert runtime.pool.abandoned() == {"hung": 4}
    stats = stored(runtime, "hung")
    assert (stats.new.timeouts, stats.comparisons) == (6, 0)
    assert threads_named("cutover-offpath") == 4 + 4


class Recorded:
    """A pool job that records what the pool told it."""

    def __init__(self, lane: str | None, timeout: float | None, gate: threading.Event) -> None:
        self.lane = lane
        self.timeout = timeout
        self.gate = gate
        self.events: list[str] = []

    def run(self) -> str:
        self.gate.wait(10)
        return "late"

    def then(self, outcome: Any) -> None:
        self.events.append(f"then {outcome}")

    def expired(self, elapsed_ns: int) -> None:
        self.events.append("expired")

    def refused(self) -> None:
        self.events.append("refused")


def test_the_pool_tells_each_job_exactly_one_ending(gate: threading.Event) -> None:
    pool = WorkerPool(1, 10, name="test-pool", lane_limit=1)
    slow = Recorded("a", 0.05, gate)
    queued = Recorded("a", 0.05, gate)
    other = Recorded("b", None, threading.Event())
    other.gate.set()
    assert pool.start(slow) and pool.start(queued) and pool.start(other)
    assert eventually(lambda: other.events == ["then late"])
    assert pool.drain(5), "a drain does not wait for an abandoned run"
    assert not pool.start(Recorded("a", 0.05, gate)), "lane a is full: refused at once"
    gate.set()
    assert eventually(lambda: pool.abandoned() == {})
    assert (slow.events, queued.events) == (["expired"], ["refused"])
    pool.close()
