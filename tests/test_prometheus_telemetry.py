"""Windows read from Prometheus: the exposition rebuilds every counter and the store's coarse
histogram, and a real Prometheus scraping two instances gives the checks the same verdicts
as the store those instances also flushed to."""

from __future__ import annotations

import itertools
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import cutover
from cutover import operations
from cutover import runtime as rt
from cutover.control.controller import Controller
from cutover.control.plan import parse_plan
from cutover.errors import InvalidInput
from cutover.model import Arm
from cutover.runtime import Runtime
from cutover.stats import check
from cutover.store import FlushBatch, open_store
from cutover.telemetry import source as s
from cutover.telemetry import windows
from cutover.telemetry.histogram import COARSE_BITS, Histogram
from cutover.telemetry.prometheus import DURATION_BUCKETS
from cutover.telemetry.windows import ArmCounts, WindowDelta

from .helpers import cutover_cli, put, quiet
from .prometheus_server import running_prometheus

ROOT = Path(__file__).resolve().parents[1]
INSTANCES = 2
CALLS = 300  # of each migration, per instance
SCRAPE = 0.25  # seconds between scrapes


def exposed(name: str) -> list[tuple[dict[str, str], float]]:
    """What /metrics shows of ``name``, as the reader's query answers it: summed over
    instances (one here) and tagged with the family each sample belongs to."""
    families = {metric: family for family, metric, _ in s._FAMILIES}
    families["cutover_duration_seconds_bucket"] = "duration"
    out = []
    for family in text_string_to_metric_families(generate_latest(REGISTRY).decode()):
        for sample in family.samples:
            if sample.labels.get("migration") == name and sample.name in families:
                labels = {k: v for k, v in sample.labels.items() if k != "migration"}
                out.append(({**labels, "family": families[sample.name]}, sample.value))
    return out


def test_the_exposition_rebuilds_every_counter_of_a_window(runtime: Runtime) -> None:
    def new(x: int) -> int:
        if x % 4 == 0:
            raise ValueError("new fails on multiples of four")
        return x + (x % 3 == 0)

    codec = cutover.Migration("sourced", lambda x: x, new, unit=str)
    put(runtime, "sourced", mode="canary", percent=50, sample=1.0, fallback=True)
    for i in range(40):
        codec(i)
    runtime.pool.drain(5)
    counted = runtime.telemetry["sourced"].totals()
    rebuilt = s.PrometheusTelemetry._arms(exposed("sourced"))[""]
    for arm in Arm:
        assert rebuilt[arm].counts == counted[arm].counts, arm
        assert rebuilt[arm].histogram == counted[arm].histogram.coarsened(COARSE_BITS)
    assert counted[Arm.NEW].counts[cutover.telemetry.windows.FALLBACKS] > 0


@given(st.lists(st.integers(130, 17_000_000_000), min_size=1, max_size=200))
def test_the_exposed_buckets_are_the_store_coarse_buckets(durations: list[int]) -> None:
    fine = Histogram()
    for ns in durations:
        fine.record(ns)
    cumulative = fine.cumulative(DURATION_BUCKETS)
    le = {repr(b): float(n) for b, n in zip(DURATION_BUCKETS, cumulative, strict=True)}
    le["+Inf"] = float(fine.count)
    assert s._histogram(le) == fine.coarsened(COARSE_BITS)


def test_instances_with_telemetry_in_prometheus_write_no_windows(
    sqlite_url: str, clock: cutover.ManualClock
) -> None:
    runtime = quiet(sqlite_url, clock=clock, telemetry_url="http://127.0.0.1:9")
    try:
        codec = cutover.Migration("unwindowed", lambda x: x, lambda x: -x, unit=str)
        put(runtime, "unwindowed", mode="shadow", sample=1.0)
        for i in range(1, 6):
            codec(i)
        assert runtime.flush()
    finally:
        rt.shutdown()
    store = open_store(sqlite_url)
    try:
        assert store.totals(0) == {}
        assert [group.count for group in store.drift_groups("unwindowed")] == [5]
        assert store.drift_samples("unwindowed")
        assert [info.instance for info in store.instances()] == [runtime.instance]
    finally:
        store.close()


def test_reads_of_adjacent_spans_cover_each_window_once() -> None:
    # The controller extends a step's totals by the few seconds each tick leaves behind: those
    # reads must add up to whole windows, never to slivers of increase() between scrapes.
    source = s.PrometheusTelemetry("http://127.0.0.1:9", clock=lambda: 1000.0)
    cuts = [100, 105, 130, 179, 180, 181, 300, 990]
    spans = [source._whole(a, b) for a, b in itertools.pairwise(cuts)]
    assert [(a, b) for a, b in spans if b > a] == [(120, 180), (180, 240), (240, 300), (300, 1000)]
    assert source._whole(990, None) == (1020, 1000.0)  # nothing has started since 990


def test_a_telemetry_url_that_is_not_http_is_refused_with_the_fix(sqlite_url: str) -> None:
    with pytest.raises(InvalidInput, match="write it like http://prometheus:9090"):
        open_store(sqlite_url, telemetry_url="prometheus:9090")
    done = cutover_cli("--store", sqlite_url, "--telemetry-url", "ftp://x", "stats", "codec")
    assert done.returncode == 2, done.stderr
    assert "is not a Prometheus HTTP URL" in done.stderr
    assert "Traceback" not in done.stderr


def plan(name: str) -> dict[str, Any]:
    return {
        "migration": name,
        "steps": [{"mode": "shadow", "hold": "1h"}],
        "checks": [
            {"name": "drift", "metric": "drift_rate", "max": 0.05, "window": "10m"},
            {"name": "errors", "metric": "error_rate", "max": 0.05, "window": "10m"},
        ],
    }


def test_every_read_of_windows_is_answered_by_the_source() -> None:
    # The combined store forwards what it does not define to the store under it, which holds
    # no windows: a read of windows it did not define would quietly read nothing.
    reads = {name for name in vars(s.TelemetrySource) if not name.startswith("_")}
    assert reads >= {"windows", "windows_of", "series", "series_of", "totals"}
    assert reads <= set(vars(s.PrometheusTelemetryStore)), reads - set(
        vars(s.PrometheusTelemetryStore)
    )
    assert reads <= set(vars(s.PrometheusTelemetry)), reads - set(vars(s.PrometheusTelemetry))


def test_a_tick_judges_the_windows_of_the_source(tmp_path: Path) -> None:
    """The controller reads every rollout's windows at once (``series_of``, ``windows_of``):
    those reads too must reach the telemetry source. A store stands in for Prometheus here,
    holding the windows the store of states and rollouts does not."""
    states = open_store(f"sqlite:///{tmp_path / 'states.db'}")
    source = open_store(f"sqlite:///{tmp_path / 'windows.db'}")
    combined = s.PrometheusTelemetryStore(states, source)
    clock = cutover.ManualClock(1_800_000_000)
    try:
        controller = Controller(combined, clock=clock)
        controller.start(parse_plan(plan("sourced")), actor="test", reason="r")
        for minute in range(3):  # new errs and drifts on half its calls
            counts = {arm: [0] * windows.NC for arm in Arm}
            for row in counts.values():
                row[windows.CALLS] = 1_000
            new = counts[Arm.NEW]
            new[windows.ERRORS] = new[windows.COMPARISONS] = 500
            new[windows.DRIFTS] = 500
            start = int(clock()) // 60 * 60
            delta = WindowDelta("sourced", {arm: ArmCounts(row) for arm, row in counts.items()})
            assert source.write_flush(FlushBatch("app", minute + 1, start + 30, [(start, delta)]))
            clock.advance(60)
        assert states.windows("sourced", 0)[Arm.NEW].counts[windows.CALLS] == 0
        taken = controller.tick()  # the first step fails: back to legacy
        assert [decision.kind for decision in taken] == ["abort"], taken
        assert "error rate" in taken[0].reason
    finally:
        states.close()
        source.close()


class Clock:
    """Real time, except while a rollout starts: then the start of its minute, so the step
    holds every window the instances count in."""

    def __init__(self) -> None:
        self.fixed: float | None = None

    def __call__(self) -> float:
        return time.time() if self.fixed is None else self.fixed


@pytest.fixture
def instances(tmp_path: Path, sqlite_url: str) -> Iterator[list[Any]]:
    apps = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.telemetry_app", sqlite_url, str(tmp_path), str(CALLS)],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for _ in range(INSTANCES)
    ]
    try:
        yield apps
    finally:
        for app in apps:
            app.terminate()
        for app in apps:
            app.wait(10)


def wait_for_files(directory: Path, prefix: str, apps: list[Any], seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while len(list(directory.glob(f"{prefix}-*"))) < len(apps):
        for app in apps:
            assert app.poll() is None, app.stderr.read().decode()
        assert time.monotonic() < deadline, f"the instances never wrote {prefix} files"
        time.sleep(0.05)


@pytest.mark.slow
def test_checks_judge_prometheus_windows_as_they_judge_the_store(
    tmp_path: Path, sqlite_url: str, instances: list[Any]
) -> None:
    wait_for_files(tmp_path, "port", instances)
    targets = [f"127.0.0.1:{port.read_text()}" for port in tmp_path.glob("port-*")]
    with running_prometheus(targets, f"{round(SCRAPE * 1000)}ms") as url:
        sql = open_store(sqlite_url)
        prometheus = open_store(sqlite_url, telemetry_url=url)
        clock = Clock()
        clock.fixed = started = time.time() // 60 * 60
        starter = Controller(sql, clock=clock)
        for name in ("tsound", "tbroken"):
            starter.start(parse_plan(plan(name)), actor="test", reason="compare")
        clock.fixed = None
        wait_for_files(tmp_path, "ready", instances)
        # Every instance's series must be scraped at zero before the calls: increase() counts
        # from a series' first sample. And they must be scraped for a while: increase()
        # extrapolates a series' average rate up to 1.1 scrape intervals past its last sample,
        # so a burst in a series two scrapes old reads up to a third high; after 12 scrapes at
        # zero it reads at most 1.1 / 12 = 9% high (the rate of a long-lived series is that).
        source = prometheus.telemetry  # type: ignore[attr-defined]
        deadline = time.monotonic() + 10
        while len(source._instant("cutover_calls_total{migration='tbroken'}", None)) < (
            INSTANCES * 8
        ):
            assert time.monotonic() < deadline, "Prometheus never scraped every instance"
            time.sleep(0.2)
        time.sleep(12 * SCRAPE)
        (tmp_path / "go").write_text("")
        wait_for_files(tmp_path, "done", instances)
        expected = INSTANCES * CALLS
        deadline = time.monotonic() + 10
        while (
            sum(v for _, v in source._instant("cutover_calls_total{arm='legacy'}", None))
            < 2 * expected
        ):
            assert time.monotonic() < deadline, "Prometheus never scraped the last counts"
            time.sleep(0.2)
        time.sleep(1.2 * SCRAPE)  # one more scrape: the counters are flat at the end of the span

        for name in ("tsound", "tbroken"):
            verdicts = []
            for store in (sql, prometheus):
                evaluation = Controller(store, clock=clock).evaluate(name)
                report = operations.stats(store, name, 600, time.time())
                limits = check(report, max_drift_rate=0.05, max_error_rate=0.05)
                verdicts.append(
                    (
                        [(r.name, r.outcome) for r in evaluation.checks],
                        [limit.breached for limit in limits],
                    )
                )
                assert report.legacy.calls == pytest.approx(expected, rel=0.15), store
                # the dashboard's series: the same calls, per minute
                points = operations.time_series(
                    store, name, since=started, until=time.time(), step=60
                )
                charted = sum(point.legacy.calls for point in points)
                assert charted == pytest.approx(expected, rel=0.15), store
            assert verdicts[0] == verdicts[1], name
            failing = name == "tbroken"
            assert all(breached is failing for breached in verdicts[0][1]), verdicts
        sql.close()
        prometheus.close()
