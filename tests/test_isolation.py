"""The caller's promise: in legacy and shadow it gets exactly what legacy gave, whatever breaks."""

from __future__ import annotations

import threading
import time
import traceback
from typing import Any

import pytest

import cutover
from cutover.runtime import Runtime

from .helpers import put, quiet, stored, waits_for


class LegacyError(Exception):
    pass


def legacy_value(x: int) -> dict[str, int]:
    return {"x": x}


def test_new_raising_never_reaches_the_caller(runtime: Runtime) -> None:
    def new(x: int) -> Any:
        raise ZeroDivisionError("new is broken")

    codec = cutover.Migration("codec", legacy_value, new)
    put(runtime, "codec", mode="shadow")
    assert [codec(i) for i in range(20)] == [{"x": i} for i in range(20)]
    stats = stored(runtime, "codec")
    assert stats.new.errors == 20 and stats.drifts == 20
    groups = runtime.store.drift_groups("codec")
    assert groups[0].fingerprint == "$ (new raised ZeroDivisionError)"


def test_legacy_exception_reaches_the_caller_as_is_with_its_traceback(runtime: Runtime) -> None:
    def legacy(x: int) -> int:
        raise LegacyError(f"legacy says no to {x}")

    codec = cutover.Migration("codec", legacy, lambda x: x)
    for mode in ("legacy", "shadow", "canary"):
        put(runtime, "codec", mode=mode, percent=0)
        with pytest.raises(LegacyError, match="legacy says no to 7") as caught:
            codec(7)
        frames = [frame.name for frame in traceback.extract_tb(caught.value.__traceback__)]
        assert frames[-1] == "legacy"
    stats = stored(runtime, "codec")
    assert stats.legacy.errors == 3
    # In shadow and canary the exception was compared with new's value: a drift each.
    assert stats.drifts == 2


def test_keyboard_interrupt_in_legacy_propagates_untouched_and_uncounted(runtime: Runtime) -> None:
    interrupt = KeyboardInterrupt()

    def legacy(x: int) -> int:
        raise interrupt

    codec = cutover.Migration("codec", legacy, lambda x: x)
    for mode in ("legacy", "shadow"):
        put(runtime, "codec", mode=mode)
        with pytest.raises(KeyboardInterrupt) as caught:
            codec(1)
        assert caught.value is interrupt
    stats = stored(runtime, "codec")
    assert stats.legacy.errors == 0 and stats.new.calls == 0


def test_base_exception_in_the_off_path_arm_does_not_kill_the_pool(runtime: Runtime) -> None:
    ran: list[int] = []

    def new(x: int) -> int:
        if x == 0:
            raise SystemExit("new called sys.exit")
        ran.append(x)
        return x

    codec = cutover.Migration("codec", lambda x: x, new)
    put(runtime, "codec", mode="shadow")
    previous_hook = threading.excepthook
    threading.excepthook = lambda args: None  # the dying worker thread reports; keep output clean
    try:
        codec(0)
        time.sleep(0.2)
        for i in range(1, 50):
            assert codec(i) == i
        stats = stored(runtime, "codec")
    finally:
        threading.excepthook = previous_hook
    assert sorted(ran) == list(range(1, 50))
    assert stats.comparisons == 49


def test_a_hanging_new_arm_neither_blocks_nor_slows_the_caller(runtime: Runtime) -> None:
    release = threading.Event()

    def new(x: int) -> dict[str, int]:
        release.wait(10)
        return {"x": x}

    codec = cutover.Migration("codec", legacy_value, new, timeout=0.05)
    put(runtime, "codec", mode="shadow")
    started = time.perf_counter()
    for i in range(2000):
        assert codec(i) == {"x": i}
    elapsed = time.perf_counter() - started
    assert elapsed < 2.0, f"2000 shadow calls took {elapsed:.2f}s with a hung new arm"
    time.sleep(0.2)  # the four runs in progress are now past their timeout
    release.set()
    stats = stored(runtime, "codec")
    # The four runs in progress were abandoned at their timeout, which holds the migration's
    # share of abandoned threads: every other run was dropped and counted, never waited for.
    assert stats.new.timeouts + stats.comparisons + stats.offpath_dropped == 2000
    assert (stats.new.timeouts, stats.comparisons) == (4, 0)


def test_pool_saturation_drops_and_counts_every_off_path_run(
    sqlite_url: str, clock: cutover.ManualClock
) -> None:
    runtime = quiet(sqlite_url, clock=clock, offpath_workers=1, offpath_queue=5)
    gate = threading.Event()
    codec = cutover.Migration("codec", lambda x: x, waits_for(gate))
    put(runtime, "codec", mode="shadow")
    for i in range(100):
        codec(i)
    gate.set()
    stats = stored(runtime, "codec")
    assert stats.comparisons + stats.offpath_dropped == 100
    assert stats.comparisons <= 6 and stats.offpath_dropped >= 94


def test_unpicklable_and_huge_values_are_handled_off_path(runtime: Runtime) -> None:
    lock = threading.Lock()
    huge = "x" * 5_000_000

    def legacy(kind: str) -> Any:
        return {"lock": lock, "gen": None, "blob": huge} if kind == "odd" else [1] * 200_000

    def new(kind: str) -> Any:
        return (
            {"lock": threading.Lock(), "gen": (i for i in range(3)), "blob": huge + "y"}
            if (kind == "odd")
            else [1] * 199_999 + [2]
        )

    codec = cutover.Migration("codec", legacy, new)
    put(runtime, "codec", mode="shadow")
    assert codec("odd")["blob"] is huge
    assert len(codec("big")) == 200_000
    stats = stored(runtime, "codec")
    assert stats.drifts == 2
    samples = runtime.store.drift_samples("codec")
    assert len(samples) == 2
    for sample in samples:
        assert len(repr(sample.legacy)) < 20_000 and len(repr(sample.new)) < 20_000
    assert any(sample.truncated for sample in samples)


def test_broken_comparator_redactor_and_publisher_are_counted_not_raised(
    runtime: Runtime,
) -> None:
    def comparator(a: Any, b: Any) -> bool:
        raise RuntimeError("comparator bug")

    def redactor(kind: str, value: Any) -> Any:
        raise RuntimeError("redactor bug")

    def publisher(comparison: cutover.Comparison) -> None:
        raise RuntimeError("publisher bug")

    broken_compare = cutover.Migration("cmp", legacy_value, legacy_value, compare=comparator)
    broken_redact = cutover.Migration(
        "redact", legacy_value, lambda x: {"x": -x}, redact=redactor, publish=publisher
    )
    put(runtime, "cmp", mode="shadow")
    put(runtime, "redact", mode="shadow")
    for i in range(10):
        assert broken_compare(i) == {"x": i}
        assert broken_redact(i) == {"x": i}
    cmp_stats = stored(runtime, "cmp")
    assert cmp_stats.comparator_errors == 10 and cmp_stats.comparisons == 0
    redact_stats = stored(runtime, "redact")
    assert redact_stats.drifts == 9  # 0 == -0
    # Each drift's sample failed to redact (dropped, never stored raw) and every publish failed.
    assert redact_stats.hook_errors == 9 + 10
    assert runtime.store.drift_samples("redact") == []


def test_a_broken_unit_extractor_serves_legacy(runtime: Runtime) -> None:
    def unit(x: int) -> str:
        raise AttributeError("no user on this payload")

    codec = cutover.Migration("codec", lambda x: "legacy", lambda x: "new", unit=unit)
    put(runtime, "codec", mode="canary", percent=100, sample=0)
    assert [codec(i) for i in range(5)] == ["legacy"] * 5
    assert stored(runtime, "codec").hook_errors == 5


def test_shadow_adds_almost_nothing_to_the_caller_when_new_is_slow(runtime: Runtime) -> None:
    def legacy(x: int) -> int:
        return x

    def new(x: int) -> int:
        time.sleep(0.01)
        return x

    codec = cutover.Migration("codec", legacy, new)
    put(runtime, "codec", mode="shadow")
    started = time.perf_counter()
    for i in range(200):
        codec(i)
    # Serially, 200 calls of a 10 ms candidate would take 2 s on the caller's thread.
    assert time.perf_counter() - started < 0.5
    stats = stored(runtime, "codec")
    assert stats.comparisons + stats.offpath_dropped == 200
