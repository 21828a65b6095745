"""Reports the API and dashboard show: time series folded into buckets, health at a glance, and
the overview of every migration in a few statements."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cutover import operations
from cutover.errors import InvalidInput
from cutover.model import Arm, Mode, Rollout, RolloutStatus, State
from cutover.stats import MigrationStats, series, summarize
from cutover.store import FlushBatch, open_store
from cutover.telemetry import windows as w
from cutover.telemetry.histogram import index_of
from cutover.telemetry.windows import ArmCounts, WindowDelta


def arms(
    calls: int = 0, errors: int = 0, comparisons: int = 0, drifts: int = 0, new_calls: int = 0
) -> dict[Arm, ArmCounts]:
    legacy, new = ArmCounts(), ArmCounts()
    legacy.counts[w.CALLS], legacy.counts[w.COMPARISONS] = calls, comparisons
    legacy.counts[w.DRIFTS] = drifts
    legacy.histogram.add(index_of(2_000_000), calls)
    new.counts[w.CALLS], new.counts[w.ERRORS] = new_calls, errors
    return {Arm.LEGACY: legacy, Arm.NEW: new}


def report(
    *, calls: int, errors: int = 0, base_errors: int = 0, new_calls: int, drifts: int = 0
) -> MigrationStats:
    counts = arms(calls, 0, comparisons=calls, drifts=drifts, new_calls=new_calls)
    counts[Arm.NEW].counts[w.ERRORS] = errors
    counts[Arm.LEGACY].counts[w.ERRORS] = base_errors
    return summarize("codec", State(mode=Mode.CANARY, percent=5), counts, since=0, until=300)


def rollout(status: RolloutStatus) -> Rollout:
    return Rollout("codec", {"steps": [{}]}, "p.yaml", status, 0, 0.0, 0.0, "ana", reason="why")


def test_windows_fold_into_buckets_and_empty_buckets_remain() -> None:
    windows = {
        600: arms(calls=10, comparisons=10, drifts=1),
        660: arms(calls=30, comparisons=30),
        1200: arms(calls=5, comparisons=0),
    }
    points = series(windows, since=610, until=1500, step=300)
    assert [p.start for p in points] == [600, 900, 1200]  # aligned down to the step
    assert [p.legacy.calls for p in points] == [40, 0, 5]
    assert points[0].drifts == 1 and points[0].parity_rate == pytest.approx(1 - 1 / 40)
    assert points[1].parity_rate is None and points[1].legacy.p50_ms is None
    assert points[0].legacy.p50_ms == pytest.approx(2.0, rel=0.13)
    assert points[0].to_json()["new"]["calls"] == 0


@given(
    st.dictionaries(st.integers(0, 200).map(lambda m: m * 60), st.integers(0, 1000), max_size=50),
    st.sampled_from([60, 120, 300, 900, 3600]),
)
def test_folding_keeps_every_call_in_the_span(calls: dict[int, int], step: int) -> None:
    windows = {start: arms(calls=n) for start, n in calls.items()}
    points = series(windows, since=0, until=201 * 60, step=step)
    assert sum(p.legacy.calls for p in points) == sum(calls.values())
    assert all(b.start - a.start == step for a, b in itertools.pairwise(points))


def test_health_levels_and_reasons() -> None:
    quiet = report(calls=0, new_calls=0)
    assert operations.health(quiet, None).level is operations.Level.IDLE
    clean = report(calls=7308, new_calls=3961)
    assert operations.health(clean, None).to_json() == {"level": "ok", "reasons": []}
    drifting = operations.health(report(calls=1000, new_calls=50, drifts=1), None)
    assert drifting.level is operations.Level.WARNING
    assert drifting.reasons == ("1 drift in 1000 comparisons",)
    paused = operations.health(clean, rollout(RolloutStatus.PAUSED))
    assert paused.level is operations.Level.WARNING and paused.reasons == ("rollout paused: why",)
    back = operations.health(clean, rollout(RolloutStatus.ROLLED_BACK))
    assert back.level is operations.Level.CRITICAL


def test_a_few_errors_in_a_young_canary_are_not_a_warning() -> None:
    # 3 errors in 3,961 calls beside a clean legacy is within noise; 40 in 1,000 is not.
    noise = report(calls=7308, new_calls=3961, errors=3)
    assert operations.health(noise, None).level is operations.Level.OK
    clear = report(calls=7308, new_calls=1000, errors=40, base_errors=7)
    assert operations.health(clear, None).reasons == ("new fails 4.00% of its calls, legacy 0.10%",)
    # Without legacy calls there is nothing to compare with.
    alone = report(calls=0, new_calls=1000, errors=40)
    assert operations.health(alone, None).level is operations.Level.OK


def test_the_overview_covers_states_rollouts_and_telemetry(tmp_path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'o.db'}")
    store.write_state(
        "codec", State(mode=Mode.SHADOW), expected_version=0, actor="a", reason="r", at=1
    )
    delta = WindowDelta("search", arms(calls=12, comparisons=12, drifts=2))
    store.write_flush(FlushBatch("i", 1, 1000, windows=[(960, delta)], run="r"))
    old = WindowDelta("archive", arms(calls=5))
    store.write_flush(FlushBatch("i", 2, 10, windows=[(0, old)], run="r"))
    rows = {row.name: row for row in operations.overview(store, now=1000, window_seconds=300)}
    assert sorted(rows) == ["archive", "codec", "search"]
    assert (
        rows["codec"].to_json()["state"]["mode"] == "shadow" and rows["codec"].to_json()["stored"]
    )
    assert rows["search"].health.level is operations.Level.WARNING
    assert rows["search"].stats.comparisons == 12
    assert rows["archive"].health.level is operations.Level.IDLE  # telemetry, but not recent
    assert not rows["archive"].to_json()["stored"]


def test_a_series_refuses_more_points_than_it_may_hold(tmp_path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 's.db'}")
    store.write_state("codec", State(), expected_version=0, actor="a", reason="r", at=1)
    with pytest.raises(InvalidInput, match="at most 1440 points"):
        operations.time_series(store, "codec", since=0, until=86400 * 2, step=60)
    assert len(operations.time_series(store, "codec", since=0, until=86400, step=60)) == 1440
