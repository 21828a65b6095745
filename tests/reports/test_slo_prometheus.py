"""An SLO whose events Prometheus counts, read from a real Prometheus scraping an application."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml

from cutover.telemetry.prometheus_api import query

from ..helpers import cutover_cli
from ..prometheus_server import need_prometheus, running_prometheus, serving_gauge

pytestmark = pytest.mark.slow

EVENTS = 'max_over_time(test_slo_events{job="app"}[$window])'


def test_the_budget_from_prometheus_good_and_total(tmp_path: Path, sqlite_url: str) -> None:
    need_prometheus()
    slos = {
        "migration": "transport",
        "slos": [
            {
                "name": "delivery",
                # 20,000 events, of which one in 2,000 is bad: the runbook's 0.05% of 0.1%.
                "indicator": {"bad": f"{EVENTS} / 2000", "total": EVENTS},
                "objective": "99.9%",
            }
        ],
    }
    path = tmp_path / "slos.yaml"
    path.write_text(yaml.safe_dump(slos))
    with (
        serving_gauge("test_slo_events", 20_000) as (_, target),
        running_prometheus([target]) as url,
    ):
        deadline = time.monotonic() + 30
        while not query(url, 'test_slo_events{job="app"}'):
            assert time.monotonic() < deadline, "Prometheus never scraped the application"
            time.sleep(0.2)
        shown = cutover_cli(
            "--store", sqlite_url, "slo", "transport", "--file", str(path),
            "--prometheus", url, "--json",
        )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    (delivery,) = json.loads(shown.stdout)["slos"]
    assert (delivery["good"], delivery["total"]) == (19_990, 20_000)
    assert delivery["remaining"] == pytest.approx(0.5)
    assert delivery["burn_rates"]["1h"] == pytest.approx(0.5)


def test_without_a_server_the_slo_says_where_to_give_one(tmp_path: Path, sqlite_url: str) -> None:
    path = tmp_path / "slos.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "migration": "transport",
                "slos": [
                    {"name": "d", "indicator": {"good": "x", "total": "y"}, "objective": 0.99}
                ],
            }
        )
    )
    shown = cutover_cli(
        "--store", sqlite_url, "slo", "transport", "--file", str(path),
        env={"CUTOVER_PROMETHEUS_URL": None},
    )  # fmt: skip
    assert shown.returncode == 2 and "give --prometheus URL" in shown.stderr
