"""Prometheus recording and alerting rules for migrations and their SLOs, as sloth and pyrra
write them for an SLO, and as the runbooks' ParityDrift and HighFallbackRate alerts ask."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cutover.durations import format_duration, parse_duration
from cutover.errors import InvalidInput
from cutover.generate.promql import matcher, selector, slo_events
from cutover.reports.slo import SLO
from cutover.reports.slo import allowed as allowed_share

BURN_ALERTS = (
    # (alert, severity, percent of the budget, long window, short window), after the SRE
    # workbook and sloth: a page when 2% of the budget goes in an hour or 5% in six, a ticket
    # when 10% goes in a day or in three.
    ("CutoverSLOBurnRatePage", "critical", 2, "1h", "5m"),
    ("CutoverSLOBurnRatePage", "critical", 5, "6h", "30m"),
    ("CutoverSLOBurnRateTicket", "warning", 10, "1d", "2h"),
    ("CutoverSLOBurnRateTicket", "warning", 10, "3d", "6h"),
)
"""The multi-window multi-burn-rate alerts of every SLO, by the share of budget each stands for."""

PAGE = "CutoverSLOBurnRatePage"


def burn_factor(percent: int, window: float, long: str) -> float:
    """How many times the allowed error ratio spends ``percent`` of a ``window``'s budget in the
    ``long`` alert window: 14.4, 6, 3 and 1 for 30 days, 13.44, 5.6, 2.8 and 0.933 for 28."""
    # Integers first and one division last, so that 30 days gives 14.4 and 6 exactly.
    return percent * window / (100 * parse_duration(long, "alert window"))


def burn_factors(slo: SLO) -> list[tuple[str, str, float, str, str]]:
    """(alert, severity, factor, long, short) of each burn-rate alert of ``slo``. A window under
    five days is bad input: a page would fire at less than the allowed rate, while the budget
    lasts the window. Tickets may go below 1 (0.933 for 28 days, as sloth writes them): they
    stand for 10% of the budget in a day or three, which a slow burn still spends."""
    out = []
    for alert, severity, percent, long, short in BURN_ALERTS:
        factor = burn_factor(percent, slo.window, long)
        if alert == PAGE and factor < 1:
            raise InvalidInput(
                f"SLO {slo.name}: over a window of {format_duration(slo.window)} the page for"
                f" {percent}% of the budget in {long} would fire at {factor:.3g} times the"
                " allowed error rate, while the budget lasts the window; give at least 5d"
            )
        out.append((alert, severity, factor, long, short))
    return out


RATIO_WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")
"""The spans each SLO's error ratio is recorded over, for its burn-rate alerts."""

ALERTS = (
    "ParityDrift",
    "HighFallbackRate",
    "NewErrorRateAboveLegacy",
    "NewLatencyAboveLegacy",
    "CutoverSLOBurnRatePage",
    "CutoverSLOBurnRateTicket",
    "CutoverSLOAbsent",
)
"""Every alert the rules hold, by name: what ``--for`` may shorten."""

DEFAULT_RUNBOOK = "docs/observability.md"
"""Where the alerts' runbook links point unless ``--runbook-url`` says: cutover's own page of
them, as a path; give the address where your team publishes it."""


@dataclass(frozen=True, slots=True)
class Options:
    """How the rules are written: thresholds, the runbook's address, and overrides of the
    alerts' ``for:`` and the groups' evaluation interval (short ones for tests and demos)."""

    max_drift_rate: float = 0.0
    max_fallback_rate: float = 0.01
    max_error_ratio: float = 2.0  # new's error rate against legacy's
    max_latency_ratio: float = 1.2  # new's p95 against legacy's
    runbook_url: str = DEFAULT_RUNBOOK
    interval: str | None = None
    for_: Mapping[str, str] = field(default_factory=dict)


def parse_for(entries: Sequence[str]) -> dict[str, str]:
    """``["ParityDrift=10s", ...]`` as {alert: Prometheus duration}; bad input is one sentence."""
    out = {}
    for entry in entries:
        alert, _, duration = entry.partition("=")
        if alert not in ALERTS:
            raise InvalidInput(
                f"--for {entry!r}: name one of the alerts {', '.join(ALERTS)}, like ParityDrift=10s"
            )
        out[alert] = prometheus_duration(duration, f"--for {alert}")
    return out


def prometheus_duration(text: str, what: str) -> str:
    """``text`` as a Prometheus duration of whole seconds (90s -> 1m30s); else bad input."""
    seconds = parse_duration(text, what)
    if seconds != int(seconds):
        raise InvalidInput(f"{what} {text!r}: give whole seconds, Prometheus' finest unit here")
    return format_duration(seconds)


def _alert(
    name: str,
    expr: str,
    wait: str | None,
    severity: str,
    summary: str,
    description: str,
    options: Options,
    labels: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    wait = options.for_.get(name, wait)
    return {
        "alert": name,
        "expr": expr,
        **({"for": wait} if wait else {}),
        "labels": {"severity": severity, **(labels or {})},
        "annotations": {
            "summary": summary,
            "description": description,
            "runbook_url": f"{options.runbook_url}#{name.lower()}",
        },
    }


def migration_rules(migrations: Sequence[str], options: Options) -> dict[str, Any]:
    """The group of every migration (or those named): ratios recorded, the runbooks' alerts."""
    only = matcher(migrations)
    by = "sum by (migration)"
    calls, comparisons = "cutover_calls_total", "cutover_comparisons_total"
    drifts = selector(comparisons, only, 'result="drift"')
    decided = selector(comparisons, only, 'result=~"match|drift"')
    fallbacks = selector("cutover_fallbacks_total", only)
    on_new = selector(calls, only, 'arm="new"')
    failed = selector(calls, only, 'outcome=~"error|timeout"')
    rules: list[dict[str, Any]] = [
        {
            "record": "cutover:drift_ratio:rate5m",
            "expr": f"{by} (rate({drifts}[5m])) / {by} (rate({decided}[5m]))",
        },
        {
            "record": "cutover:fallback_ratio:rate10m",
            "expr": f"{by} (rate({fallbacks}[10m])) / {by} (rate({on_new}[10m]))",
        },
        {
            "record": "cutover:error_ratio:rate5m",
            "expr": f"sum by (migration, arm) (rate({failed}[5m]))"
            f" / sum by (migration, arm) (rate({selector(calls, only)}[5m]))",
        },
    ]
    rules += [
        {
            "record": f"cutover:latency_seconds:p{percentile}_5m",
            "expr": f"histogram_quantile({percentile / 100:g}, sum by (migration, arm, le)"
            f" (rate({selector('cutover_duration_seconds_bucket', only)}[5m])))",
        }
        for percentile in (50, 95, 99)
    ]
    rules += [
        _alert(
            "ParityDrift",
            f"cutover:drift_ratio:rate5m > {options.max_drift_rate:g}",
            "5m",
            "critical",
            "Parity drift detected between legacy and new",
            "Migration {{ $labels.migration }} drifts on {{ $value | humanizePercentage }}"
            " of its comparisons",
            options,
        ),
        _alert(
            "HighFallbackRate",
            f"cutover:fallback_ratio:rate10m > {options.max_fallback_rate:g}",
            "10m",
            "warning",
            "New falls back to legacy too often",
            "Fallback rate of {{ $labels.migration }}: {{ $value | humanizePercentage }}",
            options,
        ),
        _alert(
            "NewErrorRateAboveLegacy",
            'cutover:error_ratio:rate5m{arm="new"} > on (migration)'
            f' ({options.max_error_ratio:g} * cutover:error_ratio:rate5m{{arm="legacy"}})'
            ' and on (migration) cutover:error_ratio:rate5m{arm="new"} > 0.001',
            "10m",
            "warning",
            "New fails more often than legacy",
            "New's error rate of {{ $labels.migration }} is {{ $value | humanizePercentage }},"
            f" over {options.max_error_ratio:g} times legacy's",
            options,
        ),
        _alert(
            "NewLatencyAboveLegacy",
            'cutover:latency_seconds:p95_5m{arm="new"} > on (migration)'
            f' ({options.max_latency_ratio:g} * cutover:latency_seconds:p95_5m{{arm="legacy"}})',
            "10m",
            "warning",
            "New is slower than legacy",
            "New's p95 of {{ $labels.migration }} is {{ $value | humanizeDuration }},"
            f" over {options.max_latency_ratio:g} times legacy's",
            options,
        ),
    ]
    group: dict[str, Any] = {"name": "cutover-migrations", "rules": rules}
    if options.interval:
        group["interval"] = options.interval
    return group


def slo_rules(migration: str, slo: SLO, options: Options) -> dict[str, Any]:
    """One SLO's group: its error ratio over each alert span and its whole window, the budget
    left weighted by traffic, the burn-rate alerts, and an alert when the SLI has no data."""
    labels = {"migration": migration, "slo": slo.name}
    window = format_duration(slo.window)
    allowed = allowed_share(slo.objective)
    rules: list[dict[str, Any]] = []
    for span in (*RATIO_WINDOWS, window) if window not in RATIO_WINDOWS else RATIO_WINDOWS:
        bad, total = slo_events(slo, migration, span)
        rules.append(
            {
                "record": f"cutover:slo_error_ratio:rate{span}",
                "expr": f"{bad} / {total}",
                "labels": dict(labels),
            }
        )
    selector = f'{{migration="{migration}",slo="{slo.name}"}}'
    rules += [
        {
            "record": "cutover:slo_objective",
            "expr": f"vector({slo.objective!r})",
            "labels": dict(labels),
        },
        {
            # Bad events over all events of the whole window, not a mean of short ratios.
            "record": "cutover:slo_error_budget_remaining",
            "expr": f"1 - cutover:slo_error_ratio:rate{window}{selector} / {allowed!r}",
            "labels": dict(labels),
        },
    ]
    by_alert: dict[str, list[tuple[str, float, str, str]]] = {}
    for name, severity, factor, long, short in burn_factors(slo):
        by_alert.setdefault(name, []).append((severity, factor, long, short))
    for name, pairs in by_alert.items():
        expr = " or ".join(
            f"(cutover:slo_error_ratio:rate{long}{selector} > ({factor:g} * {allowed!r})"
            f" and cutover:slo_error_ratio:rate{short}{selector} > ({factor:g} * {allowed!r}))"
            for _, factor, long, short in pairs
        )
        rules.append(
            _alert(
                name,
                expr,
                None,  # the short window already ends the alert soon after the burn stops
                pairs[0][0],
                f"SLO {slo.name} of {migration} burns its error budget fast",
                f"{{{{ $value | humanizePercentage }}}} of events fail; the SLO allows"
                f" {allowed * 100:.4g}% over {window}",
                options,
                labels,
            )
        )
    _, total = slo_events(slo, migration, "5m")
    rules.append(
        _alert(
            "CutoverSLOAbsent",
            f"absent({total})",
            "10m",
            "warning",
            f"SLO {slo.name} of {migration} has no data",
            f"No events of the SLI of {slo.name} for 10 minutes: the metric is not scraped, or"
            " the migration takes no traffic",
            options,
            labels,
        )
    )
    group: dict[str, Any] = {"name": f"cutover-slo-{migration}-{slo.name}", "rules": rules}
    if options.interval:
        group["interval"] = options.interval
    return group


def rules(
    migrations: Sequence[str],
    slos: Sequence[tuple[str, SLO]],
    options: Options | None = None,
) -> dict[str, Any]:
    """A Prometheus rule file: the migrations' group and one group per SLO."""
    options = options or Options()
    return {
        "groups": [
            migration_rules(migrations, options),
            *(slo_rules(migration, slo, options) for migration, slo in slos),
        ]
    }


def to_yaml(data: Mapping[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(dict(data), sort_keys=False, width=100, allow_unicode=True)


__all__ = [
    "ALERTS",
    "BURN_ALERTS",
    "Options",
    "burn_factor",
    "burn_factors",
    "parse_for",
    "prometheus_duration",
    "rules",
    "slo_rules",
    "to_yaml",
]
