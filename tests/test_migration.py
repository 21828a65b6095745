"""The migration wrapper: modes, routing of units, fallback, timeouts, the decorator, async."""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import threading
import time
from typing import Any

import pytest

import cutover
from cutover import compare
from cutover.errors import ArmTimeout, InvalidInput
from cutover.model import Arm, Mode, State
from cutover.routing import bucket, threshold
from cutover.runtime import Runtime

from .helpers import put, stored


class Recorder:
    """Two arms that record who ran them and can be told to misbehave."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.lock = threading.Lock()

    def legacy(self, x: Any) -> Any:
        with self.lock:
            self.calls.append(("legacy", x))
        return {"value": x}

    def new(self, x: Any) -> Any:
        with self.lock:
            self.calls.append(("new", x))
        return {"value": x}

    def ran(self, arm: str) -> list[Any]:
        with self.lock:
            return [x for who, x in self.calls if who == arm]


def test_without_a_stored_state_only_legacy_runs(runtime: Runtime) -> None:
    arms = Recorder()
    codec = cutover.Migration("codec", arms.legacy, arms.new)
    assert codec(1) == {"value": 1}
    assert codec.mode is Mode.LEGACY
    stats = stored(runtime, "codec")
    assert arms.ran("new") == []
    assert (stats.legacy.calls, stats.legacy.served, stats.new.calls) == (1, 1, 0)


def test_a_default_in_code_applies_until_a_state_is_stored(runtime: Runtime) -> None:
    arms = Recorder()
    codec = cutover.Migration("codec", arms.legacy, arms.new, default="shadow")
    codec(1)
    runtime.flush()
    assert arms.ran("new") == [1]
    put(runtime, "codec", mode="legacy")
    codec(2)
    runtime.flush()
    assert arms.ran("new") == [1]


def test_shadow_serves_legacy_and_compares_new_off_path(runtime: Runtime) -> None:
    def legacy(x: int) -> int:
        return x * 2

    def new(x: int) -> int:
        return x * 2 if x % 10 else x * 2 + 1  # wrong for multiples of 10

    codec = cutover.Migration("codec", legacy, new)
    put(runtime, "codec", mode="shadow", sample=1.0)
    results = [codec(i) for i in range(100)]
    assert results == [i * 2 for i in range(100)]
    stats = stored(runtime, "codec")
    assert stats.legacy.served == 100 and stats.new.served == 0
    assert stats.new.calls == 100
    assert (stats.comparisons, stats.drifts) == (100, 10)
    assert stats.drift_rate == pytest.approx(0.1)
    groups = runtime.store.drift_groups("codec")
    assert [(g.fingerprint, g.count) for g in groups] == [("$", 10)]
    assert groups[0].example.diff[0]["legacy"] + 1 == groups[0].example.diff[0]["new"]


def test_shadow_sample_runs_new_on_that_share_of_calls(runtime: Runtime) -> None:
    arms = Recorder()
    codec = cutover.Migration("codec", arms.legacy, arms.new)
    put(runtime, "codec", mode="shadow", sample=0.2)
    for i in range(5000):
        codec(i)
    stats = stored(runtime, "codec")
    assert 800 <= stats.comparisons <= 1200
    assert stats.comparisons == len(arms.ran("new"))


def test_canary_routes_units_by_the_bucket_formula(runtime: Runtime) -> None:
    arms = Recorder()
    codec = cutover.Migration("codec", arms.legacy, arms.new, unit=lambda x: f"user-{x}")
    put(runtime, "codec", mode="canary", percent=25, sample=0)
    for i in range(2000):
        codec(i)
    expected_new = [i for i in range(2000) if bucket("codec", f"user-{i}") < threshold(25)]
    assert arms.ran("new") == expected_new
    assert sorted(arms.ran("legacy")) == sorted(set(range(2000)) - set(expected_new))
    stats = stored(runtime, "codec")
    assert stats.new.served == len(expected_new)
    assert stats.comparisons == 0


def test_canary_sample_compares_the_arm_that_did_not_serve(runtime: Runtime) -> None:
    arms = Recorder()
    codec = cutover.Migration("codec", arms.legacy, arms.new, unit=str)
    put(runtime, "codec", mode="canary", percent=50, sample=1.0)
    for i in range(400):
        codec(i)
    stats = stored(runtime, "codec")
    assert stats.legacy.calls == stats.new.calls == 400
    assert stats.comparisons == 400 and stats.drifts == 0
    assert stats.legacy.served + stats.new.served == 400


def test_canary_falls_back_to_legacy_when_new_raises(runtime: Runtime) -> None:
    def new(x: int) -> int:
        raise ValueError("new is broken")

    codec = cutover.Migration("codec", lambda x: x, new, unit=str)
    put(runtime, "codec", mode="canary", percent=100, sample=0)
    assert [codec(i) for i in range(10)] == list(range(10))
    stats = stored(runtime, "codec")
    assert (stats.new.errors, stats.new.fallbacks, stats.legacy.served) == (10, 10, 10)
    assert stats.new.fallback_rate == 1.0
    put(runtime, "codec", fallback=False)
    with pytest.raises(ValueError, match="new is broken"):
        codec(1)


def test_canary_timeout_falls_back_and_no_fallback_raises_arm_timeout(runtime: Runtime) -> None:
    release = threading.Event()

    def slow_new(x: int) -> int:
        release.wait(5)
        return x

    codec = cutover.Migration("codec", lambda x: -x, slow_new, timeout=0.05, unit=str)
    put(runtime, "codec", mode="canary", percent=100, sample=0)
    started = time.perf_counter()
    assert codec(3) == -3
    assert time.perf_counter() - started < 1.0
    put(runtime, "codec", fallback=False)
    with pytest.raises(ArmTimeout, match=r"did not answer within 0\.05s"):
        codec(4)
    release.set()
    stats = stored(runtime, "codec")
    assert stats.new.timeouts == 2 and stats.new.fallbacks == 1


def test_new_mode_runs_only_new_without_fallback(runtime: Runtime) -> None:
    arms = Recorder()
    codec = cutover.Migration("codec", arms.legacy, arms.new)
    put(runtime, "codec", mode="refactored_only")
    assert codec.mode is Mode.NEW
    codec(1)
    assert arms.ran("legacy") == [] and arms.ran("new") == [1]

    def broken(x: int) -> int:
        raise KeyError(x)

    failing = cutover.Migration("failing", arms.legacy, broken)
    put(runtime, "failing", mode="new")
    with pytest.raises(KeyError):
        failing(2)
    assert arms.ran("legacy") == []


def test_pins_route_before_the_percent(runtime: Runtime) -> None:
    arms = Recorder()
    codec = cutover.Migration("codec", arms.legacy, arms.new, unit=lambda x: x)
    put(
        runtime,
        "codec",
        mode="canary",
        percent=0,
        sample=0,
        pins_new=frozenset({"staff"}),
    )
    codec("staff")
    codec("customer")
    assert arms.ran("new") == ["staff"] and arms.ran("legacy") == ["customer"]
    assert codec.serving_arm("staff") is Arm.NEW


def test_kill_switch_in_the_environment_wins(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    arms = Recorder()
    monkeypatch.setenv("CUTOVER_FORCE_CODEC", "legacy")
    codec = cutover.Migration("codec", arms.legacy, arms.new)
    put(runtime, "codec", mode="new")
    codec(1)
    assert arms.ran("new") == [] and codec.mode is Mode.LEGACY
    assert codec.route.override is Mode.LEGACY
    monkeypatch.setenv("CUTOVER_FORCE_CODEC", "new")
    runtime.refresh()
    codec(2)
    assert arms.ran("new") == [2]


def test_a_bad_kill_switch_value_fails_at_declaration(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUTOVER_FORCE_CODEC", "lgacy")
    with pytest.raises(InvalidInput, match=r"CUTOVER_FORCE_CODEC='lgacy'.*set it to legacy or new"):
        cutover.Migration("codec", abs, abs)


def test_unit_comes_from_extractor_then_scope_then_each_call(runtime: Runtime) -> None:
    arms = Recorder()
    scoped = cutover.Migration("scoped", arms.legacy, arms.new)
    put(runtime, "scoped", mode="canary", percent=50, sample=0)
    new_unit = next(f"u{i}" for i in range(100) if bucket("scoped", f"u{i}") < 5000)
    legacy_unit = next(f"u{i}" for i in range(100) if bucket("scoped", f"u{i}") >= 5000)
    with cutover.unit_scope(new_unit):
        for i in range(20):
            scoped(i)
    assert len(arms.ran("new")) == 20
    with cutover.unit_scope(legacy_unit):
        for i in range(20):
            scoped(i)
    assert len(arms.ran("legacy")) == 20
    # Without a unit every call is its own unit: about half go to new.
    for i in range(2000):
        scoped(i)
    assert 850 <= len(arms.ran("new")) - 20 <= 1150


def test_decorator_keeps_the_signature_and_binds_methods(runtime: Runtime) -> None:
    def new_price(order: dict[str, float], discount: float = 0.0) -> float:
        return order["amount"] * (1 - discount)

    @cutover.migration("pricing", new=new_price, compare=compare.numeric(rel=1e-9))
    def price(order: dict[str, float], discount: float = 0.0) -> float:
        """Price an order."""
        return order["amount"] - order["amount"] * discount

    assert price.__name__ == "price" and price.__doc__ == "Price an order."
    assert str(inspect.signature(price)) == str(inspect.signature(new_price))
    assert price({"amount": 10.0}, discount=0.1) == pytest.approx(9.0)

    class Codec:
        def __init__(self, factor: int) -> None:
            self.factor = factor

        def _new(self, x: int) -> int:
            return x * self.factor

        @cutover.migration("method", new=_new)
        def encode(self, x: int) -> int:
            return x * self.factor

    put(runtime, "method", mode="shadow")
    assert Codec(3).encode(2) == 6
    stats = stored(runtime, "method")
    assert stats.comparisons == 1 and stats.drifts == 0


def test_declaration_errors_are_one_clear_sentence(runtime: Runtime) -> None:
    with pytest.raises(InvalidInput, match="migration name 'bad name' must be 1 to 200"):
        cutover.Migration("bad name", abs, abs)
    with pytest.raises(InvalidInput, match="new of migration 'x' must be callable"):
        cutover.Migration("x", abs, 42)  # type: ignore[arg-type]

    async def new(x: int) -> int:
        return x

    with pytest.raises(InvalidInput, match="new is async but legacy is not"):
        cutover.Migration("x", abs, new)
    with pytest.raises(InvalidInput, match="timeout of migration 'x' must be a positive number"):
        cutover.Migration("x", abs, abs, timeout=0)


def test_copy_args_protects_the_off_path_arm_from_later_mutation(runtime: Runtime) -> None:
    seen: list[list[int]] = []
    gate = threading.Event()

    def legacy(items: list[int]) -> int:
        return sum(items)

    def new(items: list[int]) -> int:
        gate.wait(5)
        seen.append(list(items))
        return sum(items)

    guarded = cutover.Migration("guarded", legacy, new, copy_args=True)
    put(runtime, "guarded", mode="shadow")
    payload = [1, 2, 3]
    guarded(payload)
    payload.append(100)  # the caller reuses its list after the call returned
    gate.set()
    assert stored(runtime, "guarded").drifts == 0
    assert seen == [[1, 2, 3]]


def test_publish_receives_every_comparison(runtime: Runtime) -> None:
    received: list[cutover.Comparison] = []
    codec = cutover.Migration("codec", lambda x: x, lambda x: x + (x == 3), publish=received.append)
    put(runtime, "codec", mode="shadow")
    for i in range(5):
        codec(i)
    runtime.flush()
    assert sorted(c.legacy.value for c in received) == [0, 1, 2, 3, 4]
    drifted = [c for c in received if not c.matched]
    assert len(drifted) == 1 and drifted[0].args == (3,)


def test_context_variables_reach_the_off_path_arm(runtime: Runtime) -> None:
    request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
    seen: list[str] = []

    def new(x: int) -> int:
        seen.append(request_id.get())
        return x

    codec = cutover.Migration("codec", lambda x: x, new)
    put(runtime, "codec", mode="shadow")
    request_id.set("req-7")
    codec(1)
    runtime.flush()
    assert seen == ["req-7"]


# -- async ---------------------------------------------------------------------------------


def test_async_migration_modes_and_off_path_tasks(runtime: Runtime) -> None:
    calls: list[str] = []

    async def legacy(x: int) -> int:
        calls.append("legacy")
        return x

    async def new(x: int) -> int:
        calls.append("new")
        await asyncio.sleep(0.01)
        return x if x != 2 else -2

    codec = cutover.Migration("codec", legacy, new)
    assert isinstance(codec, cutover.AsyncMigration)
    assert inspect.iscoroutinefunction(type(codec).__call__)

    async def scenario() -> list[int]:
        put(runtime, "codec", mode="shadow")
        results = [await codec(i) for i in range(4)]
        assert await cutover.aflush()
        return results

    assert asyncio.run(scenario()) == [0, 1, 2, 3]
    stats = stored(runtime, "codec")
    assert (stats.comparisons, stats.drifts, stats.new.calls) == (4, 1, 4)


def test_async_canary_timeout_fallback_and_sync_new_arm(runtime: Runtime) -> None:
    async def legacy(x: int) -> str:
        return "legacy"

    async def slow(x: int) -> str:
        await asyncio.sleep(5)
        return "new"

    thread_names: list[str] = []

    def sync_new(x: int) -> str:
        thread_names.append(threading.current_thread().name)
        return "legacy"

    timed = cutover.Migration("timed", legacy, slow, timeout=0.05, unit=str)
    mixed = cutover.Migration("mixed", legacy, sync_new)

    async def scenario() -> None:
        put(runtime, "timed", mode="canary", percent=100, sample=0)
        started = time.perf_counter()
        assert await timed(1) == "legacy"
        assert time.perf_counter() - started < 1
        put(runtime, "timed", fallback=False)
        with pytest.raises(ArmTimeout):
            await timed(2)
        put(runtime, "mixed", mode="shadow")
        assert await mixed(1) == "legacy"
        await cutover.aflush()

    asyncio.run(scenario())
    assert stored(runtime, "timed").new.timeouts == 2
    stats = stored(runtime, "mixed")
    assert stats.comparisons == 1 and stats.drifts == 0
    assert thread_names and thread_names[0] != threading.main_thread().name


def test_async_fallback_on_error(runtime: Runtime) -> None:
    async def legacy(x: int) -> int:
        return x

    async def new(x: int) -> int:
        raise RuntimeError("boom")

    codec = cutover.Migration("codec", legacy, new, unit=str)

    async def scenario() -> list[int]:
        put(runtime, "codec", mode="canary", percent=100, sample=0)
        return [await codec(i) for i in range(3)]

    assert asyncio.run(scenario()) == [0, 1, 2]
    stats = stored(runtime, "codec")
    assert stats.new.fallbacks == 3 and stats.new.errors == 3


def test_state_in_code_can_be_a_full_state(runtime: Runtime) -> None:
    arms = Recorder()
    codec = cutover.Migration(
        "codec", arms.legacy, arms.new, default=State(mode=Mode.CANARY, percent=100, sample=0)
    )
    codec(5)
    assert arms.ran("new") == [5]


def test_the_callers_path_routes_exactly_like_the_documented_rule(runtime: Runtime) -> None:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from cutover.routing import compile_route, serving_arm

    served: list[str] = []
    codec = cutover.Migration(
        "rule", lambda u: served.append("legacy"), lambda u: served.append("new"), unit=lambda u: u
    )
    units = st.one_of(st.integers(-(10**6), 10**6), st.text(max_size=12))

    @settings(max_examples=60, deadline=None)
    @given(st.lists(units, min_size=1, max_size=30), st.integers(0, 10_000), st.data())
    def check(batch: list[Any], basis_points: int, data: st.DataObject) -> None:
        pinned = data.draw(st.lists(st.sampled_from([f"{u}" for u in batch]), max_size=3))
        state = put(
            runtime,
            "rule",
            mode="canary",
            percent=basis_points / 100,
            sample=0,
            pins_new=frozenset(pinned[:1]),
            pins_legacy=frozenset(pinned[1:]) - frozenset(pinned[:1]),
        )
        route = compile_route(state)
        for unit in batch:
            served.clear()
            codec(unit)
            assert served == [serving_arm("rule", route, unit).value]

    check()
