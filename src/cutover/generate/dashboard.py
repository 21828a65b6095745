"""A Grafana dashboard of cutover's metrics: one row per migration, as the runbooks draw it."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from cutover.generate.promql import quote
from cutover.reports.slo import SLO

SCHEMA_VERSION = 39
"""The dashboard JSON schema version of Grafana 10.4 and 11."""

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


def _panel(
    kind: str,
    title: str,
    targets: Sequence[tuple[str, str]],
    unit: str,
    position: tuple[int, int, int, int],
    description: str = "",
) -> dict[str, Any]:
    x, y, width, height = position
    panel: dict[str, Any] = {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "gridPos": {"x": x, "y": y, "w": width, "h": height},
        "targets": [
            {
                "refId": chr(ord("A") + i),
                "datasource": DATASOURCE,
                "expr": expr,
                "legendFormat": legend,
            }
            for i, (expr, legend) in enumerate(targets)
        ],
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {},
    }
    if kind == "stat":
        panel["options"] = {
            "reduceOptions": {"calcs": ["lastNotNull"]},
            "colorMode": "value",
            "textMode": "name" if unit == "none" else "auto",
        }
    return panel


def migration_panels(name: str, slos: Sequence[SLO], y: int) -> list[dict[str, Any]]:
    """The panels of one migration's row, from height ``y`` down."""
    m = f'migration="{quote(name)}"'
    rate = f"sum by (arm, le) (rate(cutover_duration_seconds_bucket{{{m}}}[5m]))"
    panels = [
        _panel(
            "stat",
            "Mode",
            [(f"max by (mode) (cutover_mode{{{m}}}) == 1", "{{mode}}")],
            "none",
            (0, y, 4, 4),
            "The mode the application's processes route with (several when they disagree).",
        ),
        _panel(
            "stat",
            "Share on new",
            [(f"max(cutover_percent{{{m}}})", "percent")],
            "percent",
            (0, y + 4, 4, 4),
            "The share of units new serves (canary percent; 100 in new mode, 0 in legacy).",
        ),
        _panel(
            "timeseries",
            "Parity rate",
            [
                (
                    f'sum(rate(cutover_comparisons_total{{{m},result="match"}}[5m]))'
                    f' / sum(rate(cutover_comparisons_total{{{m},result=~"match|drift"}}[5m]))',
                    "parity",
                )
            ],
            "percentunit",
            (4, y, 6, 8),
        ),
        _panel(
            "timeseries",
            "Latency of both arms",
            [
                (f"histogram_quantile({q}, {rate})", f"{{{{arm}}}} p{label}")
                for q, label in (("0.5", "50"), ("0.95", "95"), ("0.99", "99"))
            ],
            "s",
            (10, y, 8, 8),
        ),
        _panel(
            "timeseries",
            "Comparisons by result",
            [
                (
                    f"sum by (result) (rate(cutover_comparisons_total{{{m}}}[5m]))",
                    "{{result}}",
                )
            ],
            "ops",
            (18, y, 6, 8),
            "Drifts, matches and comparator errors per second; `cutover drifts NAME --group`"
            " shows the drifts by cause.",
        ),
        _panel(
            "timeseries",
            "Fallback rate",
            [
                (
                    f"sum(rate(cutover_fallbacks_total{{{m}}}[10m]))"
                    f' / sum(rate(cutover_calls_total{{{m},arm="new"}}[10m]))',
                    "fallbacks",
                )
            ],
            "percentunit",
            (0, y + 8, 8, 8),
        ),
        _panel(
            "timeseries",
            "Error rate of both arms",
            [
                (
                    f'sum by (arm) (rate(cutover_calls_total{{{m},outcome=~"error|timeout"}}[5m]))'
                    f" / sum by (arm) (rate(cutover_calls_total{{{m}}}[5m]))",
                    "{{arm}}",
                )
            ],
            "percentunit",
            (8, y + 8, 8, 8),
        ),
    ]
    if slos:
        panels.append(
            _panel(
                "stat",
                "SLO error budget remaining",
                [(f"cutover:slo_error_budget_remaining{{{m}}}", "{{slo}}")],
                "percentunit",
                (16, y + 8, 8, 8),
                "From the recording rules of `cutover generate prometheus-rules`: the share of"
                " each SLO's budget left over its window, weighted by traffic.",
            )
        )
    return panels


def dashboard(
    migrations: Sequence[str], slos: Sequence[tuple[str, SLO]], *, title: str = "Cutover Health"
) -> dict[str, Any]:
    """The dashboard JSON: drift by migration across all of them, then one row each."""
    panels: list[dict[str, Any]] = [
        _panel(
            "timeseries",
            "Drift rate by migration",
            [
                (
                    "sum by (migration)"
                    ' (rate(cutover_comparisons_total{result="drift"}[1h]))'
                    " / sum by (migration)"
                    ' (rate(cutover_comparisons_total{result=~"match|drift"}[1h]))',
                    "{{migration}}",
                )
            ],
            "percentunit",
            (0, 0, 24, 8),
        )
    ]
    y = 8
    for name in migrations:
        panels.append(
            {
                "type": "row",
                "title": name,
                "collapsed": False,
                "gridPos": {"x": 0, "y": y, "w": 24, "h": 1},
                "panels": [],
            }
        )
        own = [slo for migration, slo in slos if migration == name]
        panels += migration_panels(name, own, y + 1)
        y += 17
    for number, panel in enumerate(panels, start=1):
        panel["id"] = number
    return {
        "uid": "cutover-health",
        "title": title,
        "tags": ["cutover"],
        "timezone": "utc",
        "editable": True,
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "annotations": {"list": []},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                }
            ]
        },
        "panels": panels,
    }


def expressions(board: dict[str, Any]) -> Iterator[str]:
    """Every PromQL expression of the dashboard's panels."""
    for panel in board["panels"]:
        for target in panel.get("targets", ()):
            yield target["expr"]


__all__ = ["SCHEMA_VERSION", "dashboard", "expressions", "migration_panels"]
