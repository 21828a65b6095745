"""The PromQL of cutover's exported metrics, shared by the generated rules and dashboard."""

from __future__ import annotations

from collections.abc import Sequence

from cutover.reports.slo import SLO
from cutover.telemetry.prometheus import DURATION_BUCKETS

FAILED = 'outcome=~"error|timeout"'
"""The outcomes of ``cutover_calls_total`` that spend an SLO's budget."""


def matcher(migrations: Sequence[str]) -> str:
    """A label matcher for ``migrations`` (all of them when none is named), with its comma."""
    if not migrations:
        return ""
    names = "|".join(_escape_regex(name) for name in migrations)
    return f'migration=~"{names}",'


def _escape_regex(name: str) -> str:
    # Migration names are letters, digits and _ . : / - (see cutover.text.check_name): only the
    # dot means something in a regular expression.
    return name.replace(".", "\\\\.")


def quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def latency_bucket(threshold_ms: float) -> str:
    """A matcher of the ``le`` of the largest exported bucket at or under ``threshold_ms``: a
    threshold between two buckets is judged by the lower one, never counting a slower call as
    good. cutover writes ``le="1.0"``, and Prometheus 3 stores it as ``le="1"``: both match."""
    seconds = threshold_ms / 1000
    under = [bound for bound in DURATION_BUCKETS if bound <= seconds * (1 + 1e-9)]
    written = repr(under[-1] if under else DURATION_BUCKETS[0])
    spellings = dict.fromkeys((written, written.removesuffix(".0")))
    return "|".join(s.replace(".", "\\\\.") for s in spellings)


def selector(metric: str, *matchers: str) -> str:
    """``metric{a,b}``, or the bare metric without matchers."""
    inside = ",".join(m.rstrip(",") for m in matchers if m)
    return f"{metric}{{{inside}}}" if inside else metric


def slo_events(slo: SLO, migration: str, window: str) -> tuple[str, str]:
    """(bad events, all events) of ``slo`` per second over ``window``, each one sum. Their
    ratio weighs every minute of the window by its traffic, as pyrra's does: rate over 30d is
    the increase over 30d divided by the same span for both."""
    indicator = slo.indicator
    if indicator.external:
        from cutover.durations import parse_duration
        from cutover.telemetry.prometheus_api import render

        def fill(query: str) -> str:
            return render(query, parse_duration(window))

        total = f"sum({fill(indicator.total or '')})"
        if indicator.bad is not None:
            return f"sum({fill(indicator.bad)})", total
        return f"({total} - sum({fill(indicator.good or '')}))", total
    arm = f'migration="{quote(migration)}",arm="{indicator.arm.value}"'
    if indicator.metric == "latency":
        assert indicator.threshold_ms is not None
        le = latency_bucket(indicator.threshold_ms)
        total = f"sum(rate(cutover_duration_seconds_count{{{arm}}}[{window}]))"
        good = f'sum(rate(cutover_duration_seconds_bucket{{{arm},le=~"{le}"}}[{window}]))'
        return f"({total} - {good})", total
    total = f"sum(rate(cutover_calls_total{{{arm}}}[{window}]))"
    return f"sum(rate(cutover_calls_total{{{arm},{FAILED}}}[{window}]))", total
