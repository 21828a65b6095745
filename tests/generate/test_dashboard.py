"""The generated Grafana dashboard: its layout, and every PromQL expression parsed by promtool."""

from __future__ import annotations

import json
from pathlib import Path

from cutover.generate.dashboard import SCHEMA_VERSION, dashboard, expressions
from cutover.generate.rules import to_yaml
from cutover.reports.slo import SLO

from .promtool import check_rules

SUCCESS = SLO.model_validate(
    {"name": "success", "indicator": {"metric": "errors"}, "objective": "99.9%"}
)


def test_one_row_per_migration_with_the_runbook_panels() -> None:
    board = dashboard(["codec", "transport"], [("transport", SUCCESS)])
    assert board["schemaVersion"] == SCHEMA_VERSION and board["title"] == "Cutover Health"
    rows = [p for p in board["panels"] if p["type"] == "row"]
    assert [r["title"] for r in rows] == ["codec", "transport"]
    titles = [p["title"] for p in board["panels"] if p["type"] != "row"]
    per_row = [
        "Mode",
        "Share on new",
        "Parity rate",
        "Latency of both arms",
        "Comparisons by result",
        "Fallback rate",
        "Error rate of both arms",
    ]
    assert titles == ["Drift rate by migration", *per_row, *per_row, "SLO error budget remaining"]
    ids = [p["id"] for p in board["panels"]]
    assert len(set(ids)) == len(ids)
    latency = next(p for p in board["panels"] if p["title"] == "Latency of both arms")
    assert [t["legendFormat"] for t in latency["targets"]] == [
        "{{arm}} p50",
        "{{arm}} p95",
        "{{arm}} p99",
    ]
    # Panels never overlap within the 24 columns.
    cells = set()
    for panel in board["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells
                cells.add((x, y))
    json.dumps(board)  # plain JSON throughout


def test_every_expression_parses_in_promtool(tmp_path: Path) -> None:
    board = dashboard(["codec", "tenants.v2"], [("codec", SUCCESS)])
    found = list(expressions(board))
    assert len(found) == 1 + 2 * 9 + 1
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:expression_{n}", "expr": expr}
                    for n, expr in enumerate(found)
                ],
            }
        ]
    }
    result = check_rules(to_yaml(rules), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(found)} rules found" in result.stdout
