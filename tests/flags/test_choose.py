"""The flag-style API: choose and observe route like a wrapped call and count into its windows."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

import cutover
from cutover import compare
from cutover.errors import InvalidInput
from cutover.flags import _core
from cutover.model import Arm, Verdict
from cutover.routing import bucket, threshold
from cutover.runtime import Runtime, configured
from cutover.telemetry.prometheus import CutoverCollector

from ..helpers import put, stored

VECTORS = json.loads(
    (Path(__file__).resolve().parents[2] / "docs" / "routing-vectors.json").read_text()
)["vectors"]


def test_choose_gives_each_vector_its_arm_at_every_percent(runtime: Runtime) -> None:
    names = sorted({v["migration"] for v in VECTORS})
    percents = sorted({p for v in VECTORS for p in v["arm_at_percent"]}, key=float)
    for percent in percents:
        for name in names:
            put(runtime, name, mode="canary", percent=float(percent), sample=0)
        for vector in VECTORS:
            arm = cutover.choose(vector["migration"], unit=vector["unit"])
            assert arm.value == vector["arm_at_percent"][percent], (vector, percent)


def test_choose_agrees_with_a_wrapped_call_and_counts_exposures(runtime: Runtime) -> None:
    served: list[str] = []
    codec = cutover.Migration(
        "codec",
        lambda u: served.append("legacy"),
        lambda u: served.append("new"),
        unit=str,
    )
    put(runtime, "codec", mode="canary", percent=30, sample=0)
    units = [f"user-{i}" for i in range(3000)]
    chosen = [cutover.choose("codec", unit=u).value for u in units]
    for unit in units:
        codec(unit)
    assert chosen == served
    expected = ["new" if bucket("codec", u) < threshold(30) else "legacy" for u in units]
    assert chosen == expected
    stats = stored(runtime, "codec")
    assert stats.new.exposures == expected.count("new")
    assert stats.legacy.exposures == expected.count("legacy")
    assert stats.to_json()["new"]["exposures"] == expected.count("new")


def test_pins_and_modes_decide_before_the_percent(runtime: Runtime) -> None:
    put(runtime, "pricing", mode="canary", percent=0, pins_new=frozenset({"staff"}))
    assert cutover.choose("pricing", unit="staff") is Arm.NEW
    assert cutover.choose("pricing", unit="customer") is Arm.LEGACY
    put(runtime, "pricing", mode="new")
    assert cutover.choose("pricing", unit="customer") is Arm.NEW
    put(runtime, "pricing", mode="legacy")
    assert cutover.choose("pricing", unit="staff") is Arm.LEGACY


def test_the_kill_switch_forces_the_arm(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    put(runtime, "pricing", mode="new")
    assert cutover.choose("pricing", unit="u") is Arm.NEW
    monkeypatch.setenv("CUTOVER_FORCE_PRICING", "legacy")
    runtime.refresh()
    assert cutover.choose("pricing", unit="u") is Arm.LEGACY
    evaluation = cutover.flags.evaluate("pricing", "u")
    assert (evaluation.reason, evaluation.metadata["forced"]) == ("DISABLED", True)


def test_without_a_unit_the_unit_scope_routes(runtime: Runtime) -> None:
    put(runtime, "pricing", mode="canary", percent=50)
    units = [f"u{i}" for i in range(200)]
    for unit in units:
        with cutover.unit_scope(unit):
            assert cutover.choose("pricing") is cutover.choose("pricing", unit=unit)


def test_without_any_unit_each_call_is_routed_in_proportion(runtime: Runtime) -> None:
    put(runtime, "pricing", mode="canary", percent=20)
    arms = [cutover.choose("pricing") for _ in range(5000)]
    assert 800 <= arms.count(Arm.NEW) <= 1200


def test_achoose_is_choose(runtime: Runtime) -> None:
    put(runtime, "pricing", mode="canary", percent=50)

    async def both() -> list[bool]:
        return [
            await cutover.achoose("pricing", unit=f"u{i}") is cutover.choose("pricing", f"u{i}")
            for i in range(100)
        ]

    assert all(asyncio.run(both()))


def test_a_bad_name_is_one_sentence(runtime: Runtime) -> None:
    with pytest.raises(InvalidInput, match="name"):
        cutover.choose("", unit="u")


def test_observe_records_the_arm_its_latency_and_its_errors(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    put(runtime, "pricing", mode="canary", percent=50)
    ticks = iter(range(0, 10**12, 3_000_000))  # every block takes 3 ms
    monkeypatch.setattr(_core, "_now", lambda: next(ticks))
    ran = {Arm.LEGACY: 0, Arm.NEW: 0}
    for i in range(400):
        try:
            with cutover.observe("pricing", unit=f"user-{i}") as call:
                ran[call.arm] += 1
                if call.new and i % 4 == 0:
                    raise ValueError("new is broken for this one")
        except ValueError:
            pass
    stats = stored(runtime, "pricing")
    assert (stats.legacy.calls, stats.new.calls) == (ran[Arm.LEGACY], ran[Arm.NEW])
    assert (stats.legacy.exposures, stats.new.exposures) == (ran[Arm.LEGACY], ran[Arm.NEW])
    failed = sum(1 for i in range(0, 400, 4) if bucket("pricing", f"user-{i}") < threshold(50))
    assert failed > 0 and stats.new.errors == failed and stats.legacy.errors == 0
    assert stats.new.p50_ms == pytest.approx(3.0, rel=0.15)
    assert stats.new.served == ran[Arm.NEW]


def test_observe_leaves_the_exception_to_the_caller_and_expected_ones_are_answers(
    runtime: Runtime,
) -> None:
    cutover.flag("parse", expected_exceptions=KeyError)
    put(runtime, "parse", mode="new")
    with pytest.raises(KeyError), cutover.observe("parse", unit="u"):
        raise KeyError("missing")
    stats = stored(runtime, "parse")
    assert (stats.new.calls, stats.new.errors, stats.new.expected) == (1, 0, 1)


def test_observe_works_with_async_with(runtime: Runtime) -> None:
    put(runtime, "pricing", mode="new")

    async def run() -> Arm:
        async with cutover.observe("pricing", unit="u") as call:
            await asyncio.sleep(0)
        return call.arm

    assert asyncio.run(run()) is Arm.NEW
    assert stored(runtime, "pricing").new.calls == 1


def test_compare_goes_through_the_declared_comparator(runtime: Runtime) -> None:
    cutover.flag("totals", compare=compare.numeric(rel=0.01))
    put(runtime, "totals", mode="shadow")
    verdicts = []
    for legacy, new in ((100.0, 100.5), (100.0, 150.0), (1.0, 1.0)):
        with cutover.observe("totals", unit="u") as call:
            verdicts.append(call.compare(legacy, new))
    assert verdicts == [Verdict.MATCH, Verdict.DRIFT, Verdict.MATCH]
    with cutover.observe("totals", unit="u") as call:
        assert call.compare(1.0, new_error=ValueError("no")) is Verdict.DRIFT
    stats = stored(runtime, "totals")
    assert (stats.comparisons, stats.drifts) == (4, 2)
    assert [g.count for g in runtime.store.drift_groups("totals")] == [1, 1]


def test_compare_uses_a_wrapped_migration_of_the_same_name(runtime: Runtime) -> None:
    wrapped = cutover.Migration("totals", abs, abs, compare=compare.numeric(abs=1))
    put(runtime, "totals", mode="shadow")
    with cutover.observe("totals", unit="u") as call:
        assert call.compare(10, 10.5) is Verdict.MATCH
        assert call.compare(10, 12) is Verdict.DRIFT
    assert _core.migration_for("totals") is wrapped


def test_a_flag_is_declared_once(runtime: Runtime) -> None:
    cutover.flag("once")
    with pytest.raises(InvalidInput, match="already declared"):
        cutover.flag("once")


def test_exposures_reach_prometheus(runtime: Runtime) -> None:
    put(runtime, "pricing", mode="new")
    for _ in range(7):
        cutover.choose("pricing", unit="u")
    families = {f.name: f for f in CutoverCollector(configured).collect()}
    samples = {
        tuple(s.labels.values()): s.value
        for s in families["cutover_exposures"].samples
        if s.name.endswith("_total")
    }
    assert samples[("pricing", "new")] == 7


def test_cutover_stats_shows_exposures(runtime: Runtime, sqlite_url: str) -> None:
    from click.testing import CliRunner

    from cutover.cli import cli

    put(runtime, "pricing", mode="new")
    for _ in range(4):
        cutover.choose("pricing", unit="u")
    assert runtime.flush()
    day = time.strftime("%Y-%m-%dT00:00Z", time.gmtime(runtime.clock()))
    span = ["--since", day, "--until", "1s"]  # the manual clock is in the past
    result = CliRunner().invoke(cli, ["--store", sqlite_url, "stats", "pricing", *span])
    assert result.exit_code == 0, result.output
    assert "exposures legacy 0  new 4  new share 100" in result.output
