"""Prometheus metrics, read at scrape time from the same counters the store receives.

Nothing is updated per call: a collector turns the in-process cumulative counters into
``cutover_calls_total``, ``cutover_comparisons_total``, ``cutover_fallbacks_total``,
``cutover_offpath_dropped_total``, ``cutover_offpath_runs_total``, ``cutover_hook_errors_total``,
``cutover_gone_total``, ``cutover_drifts_total``, ``cutover_duration_seconds``,
``cutover_percent``, ``cutover_abandoned_runs`` and ``cutover_store_errors_total`` whenever
Prometheus scrapes: every counter of a stored window, so a reader can rebuild windows from them.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from cutover.model import Arm, Mode
from cutover.telemetry import windows as w
from cutover.telemetry.histogram import COARSE_BITS, edges

if TYPE_CHECKING:
    from cutover.runtime import Runtime

DURATION_EDGES_NS = tuple(edges(COARSE_BITS, (1 << 7) - 1, (1 << 34) - 1))
"""The ``le`` bounds of ``cutover_duration_seconds`` in nanoseconds: the edges of the store's
coarse buckets (8 per power of two, 12.5% wide) from 128ns to 17.2s, 217 bounds. Every fine
bucket falls wholly under one of them, so the exposed counts are exact sums of the store's
buckets and a reader rebuilds the store's coarse histogram from them (cutover.telemetry.source)."""

DURATION_BUCKETS = tuple(edge / 1e9 for edge in DURATION_EDGES_NS)
"""The same bounds in seconds, as the ``le`` labels spell them (``repr``)."""


class CutoverCollector(Collector):
    """Exposes the telemetry of the runtime ``current()`` answers at each scrape (none: the
    families without samples); registered once per registry. The runtime hands itself in
    (``cutover.runtime.configured``), so this module never imports the runtime."""

    def __init__(self, current: Callable[[], Runtime | None]) -> None:
        self._current = current

    def describe(self) -> Iterator[Metric]:
        return iter(self._families())

    def collect(self) -> Iterator[Metric]:
        runtime = self._current()
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
            offpath,
            hook_errors,
            gone,
            drifts,
        ) = families
        if runtime is None:
            return iter(families)
        with runtime._registry_lock:
            telemetries = dict(runtime.telemetry)
        migrations = runtime.migrations
        for name, telemetry in sorted(telemetries.items()):
            totals = telemetry.totals()
            for arm, counts in totals.items():
                c = counts.counts
                ok = c[w.CALLS] - c[w.ERRORS] - c[w.EXPECTED] - c[w.TIMEOUTS]
                labels = [name, arm.value]
                calls.add_metric([*labels, "ok"], ok)
                calls.add_metric([*labels, "error"], c[w.ERRORS])
                calls.add_metric([*labels, "expected"], c[w.EXPECTED])
                calls.add_metric([*labels, "timeout"], c[w.TIMEOUTS])
                exposures.add_metric(labels, c[w.EXPOSURES])
                offpath.add_metric(labels, c[w.OFFPATH])
                hook_errors.add_metric(labels, c[w.HOOK_ERRORS])
                dropped.add_metric(labels, c[w.DROPPED])
                comparisons.add_metric([*labels, "match"], c[w.COMPARISONS] - c[w.DRIFTS])
                comparisons.add_metric([*labels, "drift"], c[w.DRIFTS])
                comparisons.add_metric([*labels, "error"], c[w.COMPARATOR_ERRORS])
                hist = counts.histogram
                cumulative = hist.cumulative(DURATION_BUCKETS)
                buckets = [(repr(b), n) for b, n in zip(DURATION_BUCKETS, cumulative, strict=True)]
                buckets.append(("+Inf", hist.count))
                duration.add_metric(labels, buckets, hist.sum_ns() / 1e9)
            fallbacks.add_metric([name], totals[Arm.NEW].counts[w.FALLBACKS])
            gone.add_metric([name], totals[Arm.LEGACY].counts[w.GONE])
        for name, counts in sorted(runtime.sampler.exposed().items()):
            for fingerprint, count in sorted(counts.items()):
                drifts.add_metric([name, fingerprint], count)
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
                "Comparisons of the two arms by result (match, drift, error), by the arm that"
                " ran off-path.",
                labels=["migration", "arm", "result"],
            ),
            CounterMetricFamily(
                "cutover_fallbacks",
                "Calls where new failed and legacy served instead.",
                labels=["migration"],
            ),
            CounterMetricFamily(
                "cutover_offpath_dropped",
                "Off-path runs of each arm skipped because the off-path queue was full.",
                labels=["migration", "arm"],
            ),
            CounterMetricFamily(
                "cutover_exposures",
                "Flag evaluations that chose each arm (choose, OpenFeature, OFREP).",
                labels=["migration", "arm"],
            ),
            HistogramMetricFamily(
                "cutover_duration_seconds",
                "Duration of each arm's runs, on the edges of the store's coarse buckets.",
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
            CounterMetricFamily(
                "cutover_offpath_runs",
                "Runs of each arm off the caller's path (to compare).",
                labels=["migration", "arm"],
            ),
            CounterMetricFamily(
                "cutover_hook_errors",
                "Unit extractors, redactors and publishers that raised (caught, counted).",
                labels=["migration", "arm"],
            ),
            CounterMetricFamily(
                "cutover_gone",
                "Requests on legacy routes the HTTP proxy answered 410 itself.",
                labels=["migration"],
            ),
            CounterMetricFamily(
                "cutover_drifts",
                "Drifts by fingerprint (root cause): the first 20 of each migration apart,"
                " the rest under '(other fingerprints)'.",
                labels=["migration", "fingerprint"],
            ),
        ]


_installed: set[int] = set()
_lock = threading.Lock()


def _after_fork_in_child() -> None:
    global _lock
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def install_collector(
    current: Callable[[], Runtime | None], registry: CollectorRegistry = REGISTRY
) -> None:
    """Register cutover's collector of the runtime ``current()`` answers in ``registry`` (the
    default one unless told otherwise); once per registry."""
    with _lock:
        if id(registry) in _installed:
            return
        registry.register(CutoverCollector(current))
        _installed.add(id(registry))
