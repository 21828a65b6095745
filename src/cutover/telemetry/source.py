"""Where the readers of windows get them: the store, or Prometheus scraping every instance.

A :class:`TelemetrySource` answers the store's telemetry reads (``windows``, ``series``,
``totals``, ``migrations``) with the same values: per arm, the counters of
:data:`cutover.telemetry.windows.COUNTERS` and a latency histogram. Every store is one.
:class:`PrometheusTelemetry` is the other: it rebuilds the same values from the families
each instance exposes on ``/metrics`` (see :mod:`cutover.telemetry.prometheus`) with
``increase(...)`` over the span asked, summed over every instance Prometheus scrapes. Its
counts are Prometheus' estimates (extrapolated to the span's edges, rounded to whole calls),
and its histograms have the store's coarse resolution (8 buckets per power of two).

:class:`PrometheusTelemetryStore` puts the two halves together: states, rollouts, decisions,
drift samples and heartbeats stay in the store, windows are neither written there nor read
from there. ``open_store(url, telemetry_url=...)`` (or ``$CUTOVER_TELEMETRY_URL``) opens one.
"""

from __future__ import annotations

import math
import time
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from cutover.errors import InvalidInput
from cutover.model import Arm
from cutover.telemetry import windows as w
from cutover.telemetry.histogram import COARSE_BITS, Histogram, index_of
from cutover.telemetry.prometheus import DURATION_BUCKETS, DURATION_EDGES_NS
from cutover.telemetry.prometheus_api import query, query_range, render
from cutover.telemetry.windows import ArmCounts, TelemetrySource
from cutover.urls import redact_url

__all__ = ["PrometheusTelemetry", "PrometheusTelemetryStore", "TelemetrySource"]


# The counters (besides calls) each outcome of cutover_calls_total adds to, and each result
# of cutover_comparisons_total: the inverse of what CutoverCollector exposes.
_OUTCOMES = {"error": (w.ERRORS,), "expected": (w.EXPECTED,), "timeout": (w.TIMEOUTS,), "ok": ()}
_RESULTS = {
    "match": (w.COMPARISONS,),
    "drift": (w.COMPARISONS, w.DRIFTS),
    "error": (w.COMPARATOR_ERRORS,),
}
# (the family label a query tags its part with, the metric, the labels it is summed by)
_FAMILIES = (
    ("calls", "cutover_calls_total", ("arm", "outcome")),
    ("comparisons", "cutover_comparisons_total", ("arm", "result")),
    ("fallbacks", "cutover_fallbacks_total", ()),
    ("dropped", "cutover_offpath_dropped_total", ("arm",)),
    ("exposures", "cutover_exposures_total", ("arm",)),
    ("offpath", "cutover_offpath_runs_total", ("arm",)),
    ("hook_errors", "cutover_hook_errors_total", ("arm",)),
    ("gone", "cutover_gone_total", ()),
)
# The families that are one counter of one arm.
_SINGLE = {
    "dropped": w.DROPPED,
    "exposures": w.EXPOSURES,
    "offpath": w.OFFPATH,
    "hook_errors": w.HOOK_ERRORS,
}


def telemetry_url(url: str) -> str:
    """The Prometheus base URL windows are read from, checked; InvalidInput saying how to
    write it otherwise."""
    text = url.strip()
    scheme, sep, rest = text.partition("://")
    if not sep or scheme.lower() not in ("http", "https") or not rest.strip("/"):
        raise InvalidInput(
            f"the telemetry URL {redact_url(text)!r} is not a Prometheus HTTP URL;"
            " write it like http://prometheus:9090 (with a path prefix if the server has one)"
        )
    return text.rstrip("/")


def _quote(value: str) -> str:
    """A PromQL string literal."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _duration(seconds: float) -> str:
    return render("$window", seconds)


class PrometheusTelemetry:
    """Windows rebuilt from the ``cutover_*`` families in a Prometheus server's HTTP API.

    ``url`` is the server's base URL (with its path prefix, if any); ``window_seconds`` is the
    span of one window, as the instances are configured (``window_seconds``, 60 by default):
    :meth:`series` answers one point per window start, like the store. ``clock`` is the
    time "now" stands for when a read has no end (the system's: Prometheus keeps real time).
    """

    def __init__(
        self,
        url: str,
        *,
        window_seconds: int = 60,
        timeout: float = 5.0,
        headers: Mapping[str, str] | None = None,
        clock: Any = time.time,
    ) -> None:
        self.url = telemetry_url(url)
        self.window_seconds = window_seconds
        self.timeout = timeout
        self.headers = dict(headers or {})
        self.clock = clock
        self.queries = 0  # HTTP queries made, for benchmarks

    # -- the reads ----------------------------------------------------------------------

    def windows(
        self, name: str, since: float, until: float | None = None, *, histograms: bool = True
    ) -> dict[Arm, ArmCounts]:
        """Every instance's counts of ``name`` in the windows that start in [since, until),
        summed per arm: one ``increase()`` from the first such window's start to the last
        one's end (or now), evaluated there."""
        first, end = self._whole(since, until)
        if end - first < 1:
            return _empty_arms()
        promql = self._promql(f"migration={_quote(name)}", end - first, histograms, by=())
        return self._arms(self._instant(promql, end)).get("", _empty_arms())

    def totals(self, since: float, until: float | None = None) -> dict[str, dict[Arm, ArmCounts]]:
        """Every migration's counts in the windows that start in [since, until), summed per
        arm (no histograms)."""
        first, end = self._whole(since, until)
        if end - first < 1:
            return {}
        promql = self._promql("", end - first, False, by=("migration",))
        found = self._arms(self._instant(promql, end), key="migration")
        return {name: arms for name, arms in found.items() if not _idle(arms)}

    def series(
        self,
        name: str,
        since: float,
        until: float | None = None,
        *,
        histograms_since: float | None = None,
    ) -> dict[int, dict[Arm, ArmCounts]]:
        """Per window start in [since, until) with any count, each arm's counts over that
        window: one range query whose step is the window, each point the ``increase()`` over
        the window before it. Histograms only from ``histograms_since`` on, as the store."""
        width = self.window_seconds
        end = self._end(until)
        first = math.ceil(since / width) * width
        last = math.ceil(end / width) * width - width
        if last < first:
            return {}
        selector = f"migration={_quote(name)}"
        wanted = histograms_since is not None and histograms_since < last + width
        promql = self._promql(selector, width, wanted, by=())
        self.queries += 1
        found = query_range(
            self.url,
            promql,
            start=first + width,
            end=last + width,
            step=width,
            timeout=self.timeout,
            headers=self.headers,
        )
        points: dict[int, list[tuple[Mapping[str, str], float]]] = {}
        for one in found:
            for at, value in one.points:
                points.setdefault(round(at) - width, []).append((one.labels, value))
        out: dict[int, dict[Arm, ArmCounts]] = {}
        for start in sorted(points):
            arms = self._arms(points[start]).get("", _empty_arms())
            if histograms_since is None or start < histograms_since:
                for counts in arms.values():
                    counts.histogram = Histogram()
            if not _idle(arms):
                out[start] = arms
        return out

    def windows_of(
        self,
        spans: Mapping[str, tuple[float, float | None]],
        *,
        histograms: Collection[str] = (),
    ) -> dict[str, dict[Arm, ArmCounts]]:
        """:meth:`windows` of many migrations, ``spans`` giving each its (since, until), with
        histograms for those named in ``histograms``: what the controller reads for every
        rollout in one pass. One query per migration."""
        wanted = set(histograms)
        return {
            name: self.windows(name, since, until, histograms=name in wanted)
            for name, (since, until) in spans.items()
        }

    def series_of(
        self, spans: Mapping[str, tuple[float, float | None, float | None]]
    ) -> dict[str, dict[int, dict[Arm, ArmCounts]]]:
        """:meth:`series` of many migrations, ``spans`` giving each its (since, until,
        histograms_since). One range query per migration."""
        return {
            name: self.series(name, since, until, histograms_since=later)
            for name, (since, until, later) in spans.items()
        }

    def migrations(self) -> list[str]:
        """The names any scraped instance exposes counts for."""
        samples = self._instant("count by (migration) (cutover_calls_total)", None)
        return sorted({labels["migration"] for labels, _ in samples if labels.get("migration")})

    # -- queries ------------------------------------------------------------------------

    def _end(self, until: float | None) -> float:
        now = float(self.clock())
        return now if until is None else min(float(until), now)

    def _whole(self, since: float, until: float | None) -> tuple[float, float]:
        """The span of the windows that start in [since, until), up to now: as the store
        counts whole windows, so that reads of adjacent spans (the controller extends a
        step's totals tick by tick) add up without a gap or an overlap."""
        width = self.window_seconds
        first = math.ceil(since / width) * width
        return first, self._end(None if until is None else math.ceil(until / width) * width)

    def _promql(self, selector: str, span: float, histograms: bool, by: tuple[str, ...]) -> str:
        """One query for every family, each tagged with a ``family`` label: a single
        evaluation answers a whole read."""
        window = _duration(span)
        parts = []
        for family, metric, labels in _FAMILIES:
            grouping = ", ".join((*by, *labels))
            parts.append(
                f"label_replace(sum by ({grouping}) (increase({metric}{{{selector}}}[{window}])),"
                f' "family", "{family}", "__name__", ".*")'
            )
        if histograms:
            grouping = ", ".join((*by, "arm", "le"))
            parts.append(
                f"label_replace(sum by ({grouping}) (increase(cutover_duration_seconds_bucket"
                f'{{{selector}}}[{window}])), "family", "duration", "__name__", ".*")'
            )
        return " or ".join(parts)

    def _instant(self, promql: str, at: float | None) -> list[tuple[Mapping[str, str], float]]:
        self.queries += 1
        samples = query(self.url, promql, timeout=self.timeout, headers=self.headers, at=at)
        return [(sample.labels, sample.value) for sample in samples]

    @staticmethod
    def _arms(
        samples: Iterable[tuple[Mapping[str, str], float]], key: str = ""
    ) -> dict[str, dict[Arm, ArmCounts]]:
        """Per value of the ``key`` label (all under "" without one), each arm's counts."""
        counters: dict[str, dict[Arm, list[float]]] = {}
        buckets: dict[str, dict[Arm, dict[str, float]]] = {}
        for labels, value in samples:
            if math.isnan(value):
                continue
            group = labels.get(key, "") if key else ""
            family = labels.get("family", "")
            arms = counters.setdefault(group, {arm: [0.0] * w.NC for arm in Arm})
            if family == "duration":
                arm = Arm(labels["arm"])
                le = labels.get("le", "")
                per_arm = buckets.setdefault(group, {}).setdefault(arm, {})
                per_arm[le] = per_arm.get(le, 0.0) + value
                continue
            if family == "fallbacks":
                arms[Arm.NEW][w.FALLBACKS] += value
            elif family == "gone":
                arms[Arm.LEGACY][w.GONE] += value
            elif labels.get("arm") not in ("legacy", "new"):
                continue
            elif family == "calls":
                row = arms[Arm(labels["arm"])]
                row[w.CALLS] += value
                for counter in _OUTCOMES.get(labels.get("outcome", ""), ()):
                    row[counter] += value
            elif family == "comparisons":
                for counter in _RESULTS.get(labels.get("result", ""), ()):
                    arms[Arm(labels["arm"])][counter] += value
            elif family in _SINGLE:
                arms[Arm(labels["arm"])][_SINGLE[family]] += value
        out = {}
        for group, arms in counters.items():
            histograms = buckets.get(group, {})
            out[group] = {
                arm: ArmCounts(
                    [round(value) for value in values], _histogram(histograms.get(arm, {}))
                )
                for arm, values in arms.items()
            }
        return out


def _histogram(cumulative: Mapping[str, float]) -> Histogram:
    """The store's coarse histogram from the summed ``le`` buckets of one arm.

    Counts at or below the first edge go in the bucket under it, counts above the last in the
    bucket over it; ``le`` values of other bounds (an instance of another version) are left
    out, their counts fall in the next known bound."""
    if not cumulative:
        return Histogram(bits=COARSE_BITS)
    counts: dict[int, int] = {}
    seen = 0
    for bound, edge in zip(DURATION_BUCKETS, DURATION_EDGES_NS, strict=True):
        total = max(seen, round(cumulative.get(repr(bound), seen)))
        if total > seen:
            index = index_of(edge - 1, COARSE_BITS)
            counts[index] = counts.get(index, 0) + total - seen
            seen = total
    everything = max(seen, round(cumulative.get("+Inf", seen)))
    if everything > seen:
        counts[index_of(DURATION_EDGES_NS[-1], COARSE_BITS)] = everything - seen
    return Histogram.of_counts(counts, COARSE_BITS)


def _empty_arms() -> dict[Arm, ArmCounts]:
    return {arm: ArmCounts() for arm in Arm}


def _idle(arms: Mapping[Arm, ArmCounts]) -> bool:
    return all(counts.empty for counts in arms.values())


class PrometheusTelemetryStore:
    """A store whose windows live in Prometheus: every read and write goes to ``store``,
    except that flushes leave their windows out and the reads of windows go to ``source``."""

    def __init__(self, store: Any, source: PrometheusTelemetry) -> None:
        self._store = store
        self.telemetry = source

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def write_flush(self, batch: Any) -> bool:
        """Write the batch's drift samples and counts by fingerprint, and the heartbeat; the
        windows are in the instances' /metrics."""
        batch.windows = {}
        return bool(self._store.write_flush(batch))

    def windows(
        self, name: str, since: float, until: float | None = None, *, histograms: bool = True
    ) -> dict[Arm, ArmCounts]:
        return self.telemetry.windows(name, since, until, histograms=histograms)

    def totals(self, since: float, until: float | None = None) -> dict[str, dict[Arm, ArmCounts]]:
        return self.telemetry.totals(since, until)

    def series(
        self,
        name: str,
        since: float,
        until: float | None = None,
        *,
        histograms_since: float | None = None,
    ) -> dict[int, dict[Arm, ArmCounts]]:
        return self.telemetry.series(name, since, until, histograms_since=histograms_since)

    def windows_of(
        self,
        spans: Mapping[str, tuple[float, float | None]],
        *,
        histograms: Collection[str] = (),
    ) -> dict[str, dict[Arm, ArmCounts]]:
        return self.telemetry.windows_of(spans, histograms=histograms)

    def series_of(
        self, spans: Mapping[str, tuple[float, float | None, float | None]]
    ) -> dict[str, dict[int, dict[Arm, ArmCounts]]]:
        return self.telemetry.series_of(spans)

    def migrations(self) -> list[str]:
        """Names with a stored state, or counted by an instance Prometheus scrapes."""
        return sorted(set(self._store.migrations()) | set(self.telemetry.migrations()))
