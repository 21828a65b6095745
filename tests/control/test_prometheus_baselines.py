"""Baselines and growth checks against a real Prometheus scraping a real gauge."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cutover.clock import ManualClock
from cutover.control.checks import Outcome, Telemetry, evaluate
from cutover.control.controller import Controller, _prometheus_range
from cutover.control.statistics import growth_interval
from cutover.model import Mode
from cutover.store import open_store
from cutover.telemetry.prometheus_api import query, query_range

from ..prometheus_server import need_prometheus, running_prometheus, serving_gauge
from .test_prometheus_server import Setup, eventually
from .test_scenarios import plan

pytestmark = pytest.mark.slow

RSS = 'max(test_app_rss_bytes{job="app"})'


@pytest.fixture(scope="module")
def setup() -> Iterator[Setup]:
    need_prometheus()
    with (
        serving_gauge("test_app_rss_bytes", 1.0e9) as (gauge, target),
        running_prometheus([target]) as url,
    ):
        yield Setup(url, gauge)


def test_a_baseline_from_before_the_rollout_and_a_growth_rate(setup: Setup, tmp_path: Path) -> None:
    eventually(lambda: query(setup.url, RSS), lambda samples: len(samples) == 1)
    time.sleep(2.5)  # a few scrapes at 1e9 before the rollout starts
    started = time.time()
    # Memory climbs by a tenth of its start value every half second, to 2.6e9: more than
    # twice what it was when the rollout began.
    for step in range(1, 17):
        setup.gauge.set(1.0e9 * (1 + 0.1 * step))
        time.sleep(0.5)
    eventually(lambda: query(setup.url, RSS), lambda samples: samples[0].value == 2.6e9)

    clock = ManualClock(started)
    store = open_store(f"sqlite:///{tmp_path / 'r.db'}")
    memory = {
        "name": "memory",
        "source": "prometheus",
        "query": 'max(max_over_time(test_app_rss_bytes{job="app"}[$window]))',
        "url": setup.url,
        "baseline": "rollout_start",
        "max_ratio_to_baseline": 2,
        "window": "1m",
    }
    controller = Controller(store, clock=clock)
    controller.start(plan(checks=[memory], on_critical="pause"), actor="ops")
    clock.advance(120)  # the current value is the server's now; the clock only spans the step
    [result] = controller.evaluate("codec").checks
    assert result.outcome is Outcome.FAIL, result.reason
    assert result.value == pytest.approx(2.6)
    assert "is 2.6x the baseline 1e+09 measured before the rollout began" in result.reason
    [decision] = controller.tick()
    assert decision.kind == "pause"
    assert store.rollout("codec").notes["baselines"]["memory"]["value"] == 1.0e9  # type: ignore[union-attr]

    # The same climb, fitted: far above 10%/1h, with the real server's range query.
    now = time.time()
    [series] = query_range(setup.url, RSS, start=started, end=now, step=0.5)
    rising = [(t, v) for t, v in series.points if v > 1.0e9]
    trend = growth_interval(rising, per=3600)
    assert trend is not None and trend.low > 100  # over 10,000% an hour
    growth = {
        "name": "growth",
        "source": "prometheus",
        "query": RSS,
        "url": setup.url,
        "max_growth": "10%/1h",
        "window": "1m",
    }
    rules = plan(checks=[growth])
    judged = evaluate(
        rules.checks[0],
        rules,
        Mode.SHADOW,
        Telemetry({}),
        now=now,
        step_started_at=now - 3600,
        external_range=_prometheus_range,
    )
    assert judged.outcome is Outcome.FAIL, judged.reason
    assert "is beyond 10.000%/1h" in judged.reason
