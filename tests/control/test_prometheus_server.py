"""The Prometheus query client against a real Prometheus scraping a real metrics endpoint."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from prometheus_client import Gauge

from cutover.telemetry.prometheus_api import PrometheusError, Sample, query, render

from ..prometheus_server import need_prometheus, running_prometheus, serving_gauge

pytestmark = pytest.mark.slow

MEMORY = 'max(test_app_memory_bytes{job="app"})'


@dataclass
class Setup:
    url: str
    gauge: Gauge


@pytest.fixture(scope="module")
def setup() -> Iterator[Setup]:
    """An app exposing one gauge, and a Prometheus scraping it every second."""
    need_prometheus()
    with (
        serving_gauge("test_app_memory_bytes", 1.5e9) as (gauge, target),
        running_prometheus([target]) as url,
    ):
        yield Setup(url, gauge)


def eventually(probe: Callable[[], list[Sample]], until: Callable[[list[Sample]], bool]) -> Sample:
    """Poll ``probe`` until ``until`` holds of its samples, for 20s at most.

    Prometheus hands new targets to its scrapers at most every 5s, so the first sample takes
    that long on top of the scrape interval; later changes show within a scrape or two.
    """
    deadline = time.monotonic() + 20
    while True:
        samples = probe()
        if until(samples):
            return samples[0]
        if time.monotonic() > deadline:
            raise AssertionError(f"Prometheus still answers {samples} after 20s")
        time.sleep(0.2)


def test_reads_the_gauge_and_follows_it(setup: Setup) -> None:
    first = eventually(lambda: query(setup.url, MEMORY), lambda samples: len(samples) == 1)
    assert first == Sample(labels={}, value=1.5e9)

    setup.gauge.set(2.5e9)
    second = eventually(lambda: query(setup.url, MEMORY), lambda samples: samples[0].value != 1.5e9)
    assert second.value == 2.5e9


def test_series_carry_their_labels(setup: Setup) -> None:
    sample = eventually(lambda: query(setup.url, 'test_app_memory_bytes{job="app"}'), bool)
    assert sample.labels["__name__"] == "test_app_memory_bytes"
    assert sample.labels["job"] == "app"
    assert sample.labels["instance"].startswith("127.0.0.1:")


def test_windowed_query(setup: Setup) -> None:
    promql = render('max_over_time(test_app_memory_bytes{job="app"}[$window])', 60)
    assert promql.endswith("[1m])")
    eventually(lambda: query(setup.url, MEMORY), bool)
    setup.gauge.set(3.0e9)
    eventually(lambda: query(setup.url, MEMORY), lambda samples: samples[0].value == 3.0e9)
    setup.gauge.set(1.0e9)
    eventually(lambda: query(setup.url, MEMORY), lambda samples: samples[0].value == 1.0e9)
    # The gauge is back down, but the window still holds its peak.
    [peak] = query(setup.url, promql)
    assert peak.value == 3.0e9


def test_scalar_and_evaluation_time(setup: Setup) -> None:
    [now] = query(setup.url, "time()", at=1_700_000_000.5)
    assert now == Sample(labels={}, value=1_700_000_000.5)
    [nothing] = query(setup.url, "scalar(vector(0) / 0)")
    assert math.isnan(nothing.value)


def test_no_series_is_an_empty_list(setup: Setup) -> None:
    assert query(setup.url, 'max(test_app_memory_bytes{job="nope"})') == []


def test_invalid_promql_reports_the_parse_error(setup: Setup) -> None:
    with pytest.raises(PrometheusError, match=r"HTTP 400 \(bad_data: .*parse error") as caught:
        query(setup.url, "max(test_app_memory_bytes")
    assert str(caught.value).endswith("correct the PromQL")


def test_range_vector_is_refused(setup: Setup) -> None:
    with pytest.raises(PrometheusError, match="returns a range vector"):
        query(setup.url, "test_app_memory_bytes[1m]")


def test_trailing_slash_on_the_real_server(setup: Setup) -> None:
    assert query(setup.url + "/", "vector(2)") == [Sample(labels={}, value=2.0)]
