"""Prometheus metrics, read at scrape time from the same counters the store receives.

Nothing is updated per call: a collector turns the in-process cumulative counters into
``cutover_calls_total``, ``cutover_comparisons_total``, ``cutover_fallbacks_total``,
``cutover_offpath_dropped_total``, ``cutover_duration_seconds``, ``cutover_percent``,
``cutover_abandoned_runs`` and ``cutover_store_errors_total`` whenever Prometheus scrapes.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from cutover.model import Mode
from cutover.telemetry import windows as w

DURATION_BUCKETS = (
    0.00001,
    0.000025,
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


class CutoverCollector(Collector):
    """Exposes the configured runtime's telemetry; registered once per registry."""

    def describe(self) -> Iterator[Metric]:
        return iter(self._families())

    def collect(self) -> Iterator[Metric]:
        from cutover import runtime as rt

        runtime = rt._runtime
        families = self._families()
        (
            calls,
            comparisons,
            fallbacks,
            dropped,
            exposures,
            duration,
            percent,
            store_errors,
            buffered,
            dropped_windows,
            abandoned,
            modes,
        ) = families
        if runtime is None:
            return iter(families)
        with runtime._registry_lock:
            telemetries = dict(runtime.telemetry)
        migrations = runtime.migrations
        for name, telemetry in sorted(telemetries.items()):
            totals = telemetry.totals()
            compared = 0
            drifts = 0
            broken = 0
            for arm, counts in totals.items():
                c = counts.counts
                ok = c[w.CALLS] - c[w.ERRORS] - c[w.EXPECTED] - c[w.TIMEOUTS]
                calls.add_metric([name, arm.value, "ok"], ok)
                calls.add_metric([name, arm.value, "error"], c[w.ERRORS])
                calls.add_metric([name, arm.value, "expected"], c[w.EXPECTED])
                calls.add_metric([name, arm.value, "timeout"], c[w.TIMEOUTS])
                exposures.add_metric([name, arm.value], c[w.EXPOSURES])
                compared += c[w.COMPARISONS]
                drifts += c[w.DRIFTS]
                broken += c[w.COMPARATOR_ERRORS]
                hist = counts.histogram
                cumulative = hist.cumulative(DURATION_BUCKETS)
                buckets = [(repr(b), n) for b, n in zip(DURATION_BUCKETS, cumulative, strict=True)]
                buckets.append(("+Inf", hist.count))
                duration.add_metric([name, arm.value], buckets, hist.sum_ns() / 1e9)
            comparisons.add_metric([name, "match"], compared - drifts)
            comparisons.add_metric([name, "drift"], drifts)
            comparisons.add_metric([name, "error"], broken)
            fallbacks.add_metric([name], totals[w.Arm.NEW].counts[w.FALLBACKS])
            dropped.add_metric([name], sum(counts.counts[w.DROPPED] for counts in totals.values()))
        seen = set()
        for migration in migrations:
            if migration.name not in seen:
                seen.add(migration.name)
                percent.add_metric([migration.name], migration.route.effective_percent)
                current = migration.route.mode
                for mode in Mode:
                    modes.add_metric([migration.name, mode.value], float(mode is current))
        for name, count in sorted(runtime.abandoned_runs().items()):
            abandoned.add_metric([name], count)
        store_errors.add_metric([], runtime._store_errors)
        health = runtime.health()
        buffered.add_metric([], health.buffered_windows)
        dropped_windows.add_metric([], health.dropped_windows)
        return iter(families)

    @staticmethod
    def _families() -> list[Metric]:
        return [
            CounterMetricFamily(
                "cutover_calls",
                "Runs of each arm by outcome (ok, error, expected, timeout), serving or off-path.",
                labels=["migration", "arm", "outcome"],
            ),
            CounterMetricFamily(
                "cutover_comparisons",
                "Comparisons of the two arms by result (match, drift, error).",
                labels=["migration", "result"],
            ),
            CounterMetricFamily(
                "cutover_fallbacks",
                "Calls where new failed and legacy served instead.",
                labels=["migration"],
            ),
            CounterMetricFamily(
                "cutover_offpath_dropped",
                "Off-path runs skipped because the off-path queue was full.",
                labels=["migration"],
            ),
            CounterMetricFamily(
                "cutover_exposures",
                "Flag evaluations that chose each arm (choose, OpenFeature, OFREP).",
                labels=["migration", "arm"],
            ),
            HistogramMetricFamily(
                "cutover_duration_seconds",
                "Duration of each arm's runs (from cutover's log-linear histogram).",
                labels=["migration", "arm"],
            ),
            GaugeMetricFamily(
                "cutover_percent",
                "Share of units the new arm serves in this process, 0 to 100.",
                labels=["migration"],
            ),
            CounterMetricFamily(
                "cutover_store_errors",
                "Failed reads and writes of the cutover store.",
                labels=[],
            ),
            GaugeMetricFamily(
                "cutover_buffered_windows",
                "Windows of telemetry waiting in memory for the store to come back.",
                labels=[],
            ),
            CounterMetricFamily(
                "cutover_dropped_windows",
                "Windows of telemetry lost because the store was away longer than buffer_limit.",
                labels=[],
            ),
            GaugeMetricFamily(
                "cutover_abandoned_runs",
                "Runs past their timeout still holding a thread (or a task ignoring its"
                " cancellation); their timeouts are counted, their results will be discarded.",
                labels=["migration"],
            ),
            GaugeMetricFamily(
                "cutover_mode",
                "1 for the mode each migration routes with in this process, 0 for the others.",
                labels=["migration", "mode"],
            ),
        ]


_installed: set[int] = set()
_lock = threading.Lock()


def _after_fork_in_child() -> None:
    global _lock
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def install_collector(registry: CollectorRegistry = REGISTRY) -> None:
    """Register cutover's collector in ``registry`` (the default one unless told otherwise)."""
    with _lock:
        if id(registry) in _installed:
            return
        registry.register(CutoverCollector())
        _installed.add(id(registry))
