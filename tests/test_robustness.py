"""Faults inside cutover's own machinery: none may reach the caller or stop the runtime."""

from __future__ import annotations

import asyncio
import copy
import threading
import time
from typing import Any

import pytest
import sqlalchemy as sa

import cutover
from cutover import runtime as rt
from cutover.errors import StoreError
from cutover.runtime import Runtime

from .helpers import put, quiet, stored


def test_a_bad_stored_state_does_not_stop_the_others_from_refreshing(runtime: Runtime) -> None:
    good = cutover.Migration("good", lambda: "legacy", lambda: "new")
    put(runtime, "bad", mode="shadow")
    with runtime.store.engine.begin() as conn:  # type: ignore[attr-defined]
        conn.execute(sa.text("UPDATE cutover_states SET mode = 'ramp' WHERE name = 'bad'"))
    put(runtime, "good", mode="new")
    assert good() == "new"
    assert "bad" not in runtime.states


def test_units_the_store_cannot_hold_are_cleaned_not_fatal(store_url: str) -> None:
    runtime = quiet(store_url)
    codec = cutover.Migration("codec", lambda u: 1, lambda u: 2, unit=lambda u: u)
    put(runtime, "codec", mode="shadow")
    for unit in ("user-\udc80", "nul\x00byte", "plain"):
        codec(unit)
    stats = stored(runtime, "codec")
    assert stats.drifts == 3
    units = sorted(s.unit for s in runtime.store.drift_samples("codec"))
    assert units == ["nul\\0byte", "plain", "user-?"]


def test_a_batch_the_store_refuses_is_dropped_and_later_ones_still_land(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    codec = cutover.Migration("codec", abs, abs)
    codec(-1)
    real = runtime.store.write_flush
    calls = {"n": 0}

    def refuse_once(batch: Any) -> bool:
        calls["n"] += 1
        if calls["n"] == 1:
            raise StoreError("refused", transient=False)
        return real(batch)

    monkeypatch.setattr(runtime.store, "write_flush", refuse_once)
    assert runtime.flush() is True
    codec(-2)
    assert runtime.flush() is True
    assert stored(runtime, "codec").legacy.calls == 1
    assert runtime.health().rejected_flushes == 1


def test_the_background_threads_outlive_any_error(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken() -> bool:
        raise RuntimeError("a bug in a refresh")

    monkeypatch.setattr(runtime, "refresh", broken)
    thread = runtime._spawn("cutover-test", runtime.refresh, 0.01)
    time.sleep(0.1)
    assert thread.is_alive()
    runtime._stop.set()
    thread.join(1)


class Unprintable:
    def __format__(self, spec: str) -> str:
        raise RuntimeError("no format")


def test_shadow_callers_never_see_cutovers_own_failures(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    def legacy(x: Any) -> str:
        return "legacy"

    lock_arg = cutover.Migration("copying", legacy, legacy, copy_args=True)
    odd_unit = cutover.Migration("units", legacy, legacy, unit=lambda x: Unprintable())
    for name in ("copying", "units"):
        put(runtime, name, mode="shadow")
    assert lock_arg(threading.Lock()) == "legacy"  # cannot be deep-copied
    assert odd_unit(1) == "legacy"  # the unit cannot be formatted
    put(runtime, "units", mode="canary", percent=50, sample=0)
    assert odd_unit(1) == "legacy"

    def failing_legacy(x: Any) -> str:
        raise KeyError("legacy-error")

    clocked = cutover.Migration("clocked", legacy, legacy)
    failing = cutover.Migration("failing", failing_legacy, legacy)
    put(runtime, "clocked", mode="shadow")
    put(runtime, "failing", mode="shadow")

    def broken_clock() -> float:
        raise OSError("clock gone")

    monkeypatch.setattr(runtime, "clock", broken_clock)
    assert clocked(1) == "legacy"
    with pytest.raises(KeyError) as caught:
        failing(1)
    assert caught.value.__context__ is None, "cutover's failure is not chained to legacy's"
    monkeypatch.setattr(runtime, "clock", time.time)
    assert stored(runtime, "copying").hook_errors == 1
    assert stored(runtime, "units").hook_errors == 2
    assert stored(runtime, "clocked").offpath_dropped == 1
    assert stored(runtime, "failing").offpath_dropped == 1


def test_a_pool_that_cannot_start_threads_drops_instead_of_raising(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    codec = cutover.Migration("codec", lambda: 1, lambda: 1)
    put(runtime, "codec", mode="shadow")
    runtime.pool.close(0)
    runtime.pool.after_fork_in_child()  # a fresh pool with no threads yet

    def cannot_start(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", cannot_start)
    assert codec() == 1
    monkeypatch.undo()
    stats = stored(runtime, "codec")
    assert stats.offpath_dropped == 1 and stats.legacy.calls == 1


def test_a_callable_object_keeps_its_attributes_to_itself(runtime: Runtime) -> None:
    class LegacyClient:
        def __init__(self) -> None:
            self.name = "http-client"
            self.timeout = 30.0
            self.legacy = None

        def __call__(self, x: int) -> int:
            return x + 1

    client = cutover.Migration("client", LegacyClient(), lambda x: x + 1)
    assert client.name == "client" and client.timeout is None
    assert client(1) == 2


def test_instances_with_the_same_name_never_drop_each_others_flushes(sqlite_url: str) -> None:
    for calls in (5, 7):
        runtime = quiet(sqlite_url, instance="web-1")
        codec = cutover.Migration("codec", abs, abs)
        for i in range(calls):
            codec(-i)
        assert runtime.flush()
        rt.shutdown()
        rt._declared.clear()
    runtime = cutover.configure(sqlite_url, wait=0)
    assert runtime.store.windows("codec", 0)[cutover.Arm.LEGACY]["calls"] == 12


def test_configure_after_shutdown_takes_over_declared_migrations(
    sqlite_url: str, clock: cutover.ManualClock
) -> None:
    first = quiet(sqlite_url, clock=clock)
    codec = cutover.Migration("codec", lambda: "legacy", lambda: "new")
    put(first, "codec", mode="new")
    rt.shutdown()
    second = quiet(sqlite_url, clock=clock, wait=2)
    assert codec._runtime is second
    assert codec() == "new"
    assert stored(second, "codec").new.calls == 1


def test_async_sync_new_with_a_timeout_does_not_block_the_loop(runtime: Runtime) -> None:
    async def legacy(x: int) -> str:
        return "legacy"

    def slow_new(x: int) -> str:
        time.sleep(0.5)
        return "new"

    codec = cutover.Migration("codec", legacy, slow_new, timeout=0.05, unit=str)

    async def scenario() -> tuple[str, float, float]:
        put(runtime, "codec", mode="canary", percent=100, sample=0)
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        task = asyncio.create_task(ticker())
        started = time.perf_counter()
        result = await codec(1)
        elapsed = time.perf_counter() - started
        task.cancel()
        return result, elapsed, ticks

    result, elapsed, ticks = asyncio.run(scenario())
    assert result == "legacy" and elapsed < 0.3 and ticks >= 2


def test_async_off_path_sync_arms_leave_the_default_executor_alone(runtime: Runtime) -> None:
    release = threading.Event()

    async def legacy(x: int) -> int:
        return x

    def hung_new(x: int) -> int:
        release.wait(5)
        return x

    codec = cutover.Migration("codec", legacy, hung_new)

    async def scenario() -> float:
        put(runtime, "codec", mode="shadow")
        for i in range(64):
            await codec(i)
        started = time.perf_counter()
        await asyncio.to_thread(lambda: None)
        return time.perf_counter() - started

    try:
        assert asyncio.run(scenario()) < 0.5
    finally:
        release.set()


def test_exceptions_of_the_serving_thread_reach_the_caller_as_is(runtime: Runtime) -> None:
    def new(x: int) -> int:
        raise SystemExit("new exited")

    codec = cutover.Migration("codec", lambda x: x, new, timeout=1.0, unit=str)
    put(runtime, "codec", mode="canary", percent=100, sample=0)
    with pytest.raises(SystemExit, match="new exited"):
        codec(1)


def test_deep_copy_is_only_taken_when_asked(runtime: Runtime) -> None:
    copies = []
    real = copy.deepcopy

    class Tracked(list[int]):
        def __deepcopy__(self, memo: dict[int, Any]) -> Tracked:
            copies.append(1)
            return Tracked(real(list(self), memo))

    plain = cutover.Migration("plain", sum, sum)
    put(runtime, "plain", mode="shadow")
    plain(Tracked([1, 2]))
    assert copies == []


def test_system_exit_in_an_async_off_path_sync_arm_stays_in_its_thread(runtime: Runtime) -> None:
    async def legacy(x: int) -> int:
        return x

    def new(x: int) -> int:
        raise SystemExit("new called sys.exit")

    codec = cutover.Migration("codec", legacy, new)

    async def scenario() -> list[int]:
        put(runtime, "codec", mode="shadow")
        results = [await codec(i) for i in range(3)]
        await cutover.aflush()
        return results

    previous = threading.excepthook
    threading.excepthook = lambda args: None
    try:
        assert asyncio.run(scenario()) == [0, 1, 2]
    finally:
        threading.excepthook = previous
    stats = stored(runtime, "codec")
    assert stats.new.errors == 3 and stats.drifts == 3
