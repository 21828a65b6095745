"""Telemetry is exact: stored counts equal what happened, in every thread, and Prometheus agrees."""

from __future__ import annotations

import contextlib
import gc
import importlib
import json
import threading
import weakref
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY, generate_latest

import cutover
from cutover.runtime import Runtime
from cutover.telemetry.histogram import index_of
from cutover.telemetry.windows import LEGACY_HIST, NEW_HIST

from .helpers import eventually, put, quiet, stored

# ``cutover.migration`` is the decorator; the module is reached by its full name.
migration_module = importlib.import_module("cutover.migration")


def test_counts_are_exact_across_threads(runtime: Runtime) -> None:
    def fail_sometimes(x: int) -> int:
        if x % 97 == 0:
            raise ValueError(x)
        return x

    codec = cutover.Migration("codec", fail_sometimes, fail_sometimes, unit=str)
    put(runtime, "codec", mode="canary", percent=30, sample=0)
    served = {"legacy": 0, "new": 0}
    lock = threading.Lock()

    def worker(offset: int) -> None:
        mine = {"legacy": 0, "new": 0}
        for i in range(offset, offset + 5000):
            mine[codec.serving_arm(str(i)).value] += 1
            with contextlib.suppress(ValueError):
                codec(i)
        with lock:
            for arm, count in mine.items():
                served[arm] += count

    threads = [threading.Thread(target=worker, args=(n * 5000,)) for n in range(8)]
    for thread in threads:
        thread.start()
    # Flush while traffic runs: nothing may be lost or counted twice between flushes.
    while any(thread.is_alive() for thread in threads):
        runtime.flush(drain_timeout=0)
    for thread in threads:
        thread.join()
    stats = stored(runtime, "codec")
    failing = [i for i in range(40_000) if i % 97 == 0]
    fell_back = sum(1 for i in failing if codec.serving_arm(str(i)).value == "new")
    assert stats.new.fallbacks == fell_back > 0
    # A call that fell back was served by legacy (which then failed too).
    assert stats.legacy.served == served["legacy"] + fell_back
    assert stats.new.served == served["new"] - fell_back
    assert stats.legacy.calls + stats.new.calls == 40_000 + fell_back
    assert stats.legacy.errors + stats.new.errors == len(failing) + fell_back


def test_measured_durations_land_in_their_histogram_buckets(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    ticks = iter([0, 1_500_000, 10_000_000, 10_000_300, 20_000_000, 20_000_007])
    monkeypatch.setattr(migration_module, "_now", lambda: next(ticks))
    legacy_only = cutover.Migration("timed", lambda: 1, lambda: 1)
    legacy_only()
    put(runtime, "timed", mode="new")
    legacy_only()
    legacy_only()
    block = legacy_only._telemetry.block()
    # Only the buckets that counted something are kept.
    assert block[LEGACY_HIST] == {index_of(1_500_000): 1}
    assert block[NEW_HIST] == {index_of(300): 1, index_of(7): 1}


def test_prometheus_metrics_match_the_counts(runtime: Runtime) -> None:
    codec = cutover.Migration("promcodec", lambda x: x, lambda x: x if x else -1, unit=str)
    put(runtime, "promcodec", mode="canary", percent=100, sample=1.0)
    for i in range(10):
        codec(i)
    runtime.flush()
    text = generate_latest(REGISTRY).decode()
    lines = {
        line for line in text.splitlines() if line.startswith("cutover_") and "promcodec" in line
    }
    assert 'cutover_calls_total{arm="new",migration="promcodec",outcome="ok"} 10.0' in lines
    assert 'cutover_calls_total{arm="legacy",migration="promcodec",outcome="ok"} 10.0' in lines
    # new serves every unit, so legacy is the arm that ran off-path and was compared
    compared = 'cutover_comparisons_total{arm="legacy",migration="promcodec",result='
    assert compared + '"drift"} 1.0' in lines
    assert compared + '"match"} 9.0' in lines
    assert 'cutover_offpath_runs_total{arm="legacy",migration="promcodec"} 10.0' in lines
    assert 'cutover_offpath_runs_total{arm="new",migration="promcodec"} 0.0' in lines
    drifted = [line for line in lines if line.startswith("cutover_drifts_total{")]
    assert len(drifted) == 1 and drifted[0].endswith(" 1.0")
    assert 'cutover_percent{migration="promcodec"} 100.0' in lines
    assert 'cutover_mode{migration="promcodec",mode="canary"} 1.0' in lines
    assert 'cutover_mode{migration="promcodec",mode="shadow"} 0.0' in lines
    assert 'cutover_fallbacks_total{migration="promcodec"} 0.0' in lines
    assert 'cutover_offpath_dropped_total{arm="new",migration="promcodec"} 0.0' in lines
    assert any(
        line.startswith('cutover_duration_seconds_count{arm="new",migration="promcodec"} 10.0')
        for line in lines
    )
    assert "cutover_store_errors_total 0.0" in text


def test_event_log_gets_one_line_per_comparison_and_fallback(
    sqlite_url: str, tmp_path: Path, clock: cutover.ManualClock
) -> None:
    events = tmp_path / "events.jsonl"
    runtime = quiet(sqlite_url, clock=clock, events=str(events))

    def new(x: int) -> int:
        if x == 3:
            raise RuntimeError("new failed")
        return x + (x == 2)

    codec = cutover.Migration("codec", lambda x: x, new, unit=str)
    put(runtime, "codec", mode="shadow")
    for i in range(3):
        codec(i)
    put(runtime, "codec", mode="canary", percent=100, sample=0)
    codec(3)
    runtime.flush()
    lines = [json.loads(line) for line in events.read_text().splitlines()]
    comparisons = [e for e in lines if e["event"] == "comparison"]
    assert [e["result"] for e in comparisons] == ["match", "match", "drift"]
    assert comparisons[2]["fingerprint"] == "$" and comparisons[2]["migration"] == "codec"
    fallbacks = [e for e in lines if e["event"] == "fallback"]
    assert fallbacks == [
        {
            "at": clock(),
            "migration": "codec",
            "event": "fallback",
            "unit": "3",
            "reason": "RuntimeError",
        }
    ]


def test_drift_samples_are_capped_per_minute_and_redacted(
    sqlite_url: str, clock: cutover.ManualClock
) -> None:
    def redact(kind: str, value: Any) -> Any:
        if kind == "input":
            return {"args": ["<redacted>"], "kwargs": {}}
        if isinstance(value, dict) and "email" in value:
            return {**value, "email": "<email>"}
        return value

    runtime = quiet(sqlite_url, clock=clock, drift_samples_per_minute=3)
    codec = cutover.Migration(
        "codec",
        lambda user: {"email": user, "n": 1},
        lambda user: {"email": user, "n": 2},
        redact=redact,
    )
    put(runtime, "codec", mode="shadow")
    for i in range(10):
        codec(f"person{i}@example.com")
    clock.advance(60)
    for i in range(10):
        codec(f"late{i}@example.com")
    stats = stored(runtime, "codec")
    assert stats.drifts == 20
    samples = runtime.store.drift_samples("codec", limit=100)
    assert len(samples) == 6
    text = json.dumps([s.to_dict() for s in samples])
    assert "example.com" not in text
    assert samples[0].input == {"args": ["<redacted>"], "kwargs": {}}
    assert samples[0].legacy == {"email": "<email>", "n": 1}
    assert samples[0].diff == [{"path": "$.n", "kind": "changed", "legacy": 1, "new": 2}]


def test_migrations_that_are_gone_release_their_state_once_flushed(runtime: Runtime) -> None:
    def legacy(x: int) -> dict[str, int]:
        return {"x": x}

    def new(x: int) -> dict[str, int]:
        return {"x": x + 1}  # every call drifts: samples, fingerprints and their limits

    kept = cutover.Migration("kept", legacy, new, default="shadow", timeout=5)
    migrations = [
        cutover.Migration(f"gone-{n}", legacy, new, default="shadow", timeout=5) for n in range(300)
    ]
    for migration in migrations:
        for i in range(3):
            migration(i)
    kept(1)
    telemetries = [weakref.ref(migration._telemetry) for migration in migrations]
    assert runtime.pool.drain(10)
    del migrations, migration

    def released() -> bool:
        gc.collect()  # a pool worker may hold its last job a moment after the drain
        return runtime.flush() and set(runtime.telemetry) == {"kept"}

    assert eventually(released)
    assert all(ref() is None for ref in telemetries), "no per-name counters are left behind"
    sampler = runtime.sampler
    assert set(sampler._minute) == set(sampler._taken) == {"kept"}
    assert {name for name, _ in sampler._taken_by_cause} == {"kept"}
    assert runtime.abandoned_runs() == {}
    text = generate_latest(REGISTRY).decode()
    assert 'migration="gone-' not in text and 'migration="kept"' in text
    # Nothing counted was lost on the way out, and a name declared again counts afresh.
    stats = stored(runtime, "gone-299")
    assert (stats.legacy.calls, stats.new.calls, stats.drifts) == (3, 3, 3)
    again = cutover.Migration("gone-299", legacy, new, default="shadow", timeout=5)
    again(7)
    assert stored(runtime, "gone-299").legacy.calls == 4


def test_the_error_log_limiter_forgets_keys_that_hold_nothing_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from cutover import runtime as rt

    now = [1000.0]
    logged: list[str] = []
    monkeypatch.setattr(rt.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(rt.log, "error", lambda message, *args, **kwargs: logged.append(message))
    limiter = rt._Limited()
    for n in range(3000):  # a key per migration, as migrations come and go: 300 s of them
        limiter.error(f"compare:gone-{n}", "cutover: the comparator of %r raised", n)
        now[0] += 0.1
    assert len(logged) == 3000
    assert len(limiter._last) < 1500, "keys older than a minute are forgotten, not all kept"
    # The last minute's keys are all kept: each still holds its next message back.
    assert all(f"compare:gone-{n}" in limiter._last for n in range(2400, 3000))
    limiter.error("compare:gone-2999", "again")
    assert len(logged) == 3000
