"""Reports over stored windows: per-arm rates and latency percentiles, and threshold checks."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from cutover.model import Arm, Mode, State
from cutover.telemetry import windows as w

WINDOW_SECONDS = 60
"""The span of one stored window when an application keeps the default ``window_seconds``:
reports over stored windows cover whole windows of this span."""


def whole_windows(
    since: float, until: float | None, width: int = WINDOW_SECONDS
) -> tuple[float, float | None]:
    """``[since, until)`` widened outwards to whole windows: the window that holds ``since``
    counts whole (a report never silently drops a partial first window), and so does the one
    that holds an explicit ``until`` (an open end, None, stays open)."""
    start = math.floor(since / width) * width
    end = None if until is None else math.ceil(until / width) * width
    return start, end


def rate(numerator: int, denominator: int) -> float | None:
    """numerator / denominator, or None when there is nothing to divide by."""
    return numerator / denominator if denominator else None


@dataclass(frozen=True, slots=True)
class ArmStats:
    """One arm over a window: every run of it (serving or off-path), rates and latency."""

    calls: int
    errors: int  # unexpected failures only
    timeouts: int
    served: int
    fallbacks: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    expected: int = 0  # runs that raised an exception the migration expects (bad input)
    exposures: int = 0  # flag evaluations that chose this arm (choose, OpenFeature, OFREP)

    @property
    def error_rate(self) -> float | None:
        """Unexpected failures per call: expected exceptions are answers, not errors."""
        return rate(self.errors, self.calls)

    @property
    def timeout_rate(self) -> float | None:
        return rate(self.timeouts, self.calls)

    @property
    def fallback_rate(self) -> float | None:
        """Of the calls routed to this arm to serve, the share that legacy served instead."""
        return rate(self.fallbacks, self.served + self.fallbacks)

    def to_json(self, *, detail: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "calls": self.calls,
            "errors": self.errors,
            "error_rate": self.error_rate,
            "expected": self.expected,
            "exposures": self.exposures,
            "p50_ms": self.p50_ms,
            "p95_ms": self.p95_ms,
            "p99_ms": self.p99_ms,
        }
        if detail:
            out["timeouts"] = self.timeouts
            out["fallbacks"] = self.fallbacks
        return out

    @classmethod
    def of(cls, counts: w.ArmCounts) -> ArmStats:
        c = counts.counts
        p50, p95, p99 = counts.histogram.quantiles_ms((0.50, 0.95, 0.99))
        return cls(
            calls=c[w.CALLS],
            errors=c[w.ERRORS],
            expected=c[w.EXPECTED],
            exposures=c[w.EXPOSURES],
            timeouts=c[w.TIMEOUTS],
            # Every run served the caller but the off-path ones and new's failed attempts.
            served=c[w.CALLS] - c[w.OFFPATH] - c[w.FALLBACKS],
            fallbacks=c[w.FALLBACKS],
            p50_ms=p50,
            p95_ms=p95,
            p99_ms=p99,
        )


@dataclass(frozen=True, slots=True)
class MigrationStats:
    """What ``cutover stats`` reports for one migration over one window."""

    migration: str
    mode: Mode
    percent: float
    window_seconds: float
    since: float
    until: float
    legacy: ArmStats
    new: ArmStats
    comparisons: int
    drifts: int
    comparator_errors: int
    offpath_dropped: int
    hook_errors: int
    requested: tuple[float, float] | None = None  # the span asked for, when it was widened
    # ``window_seconds`` is the span asked for; ``since`` and ``until`` bound what was counted.

    @property
    def drift_rate(self) -> float | None:
        return rate(self.drifts, self.comparisons)

    def to_json(self) -> dict[str, Any]:
        """The documented shape of ``cutover stats --json``."""
        return {
            "migration": self.migration,
            "mode": self.mode.value,
            "percent": self.percent,
            "window_seconds": self.window_seconds,
            "since": self.since,
            "until": self.until,
            "widened": self.requested is not None,
            "legacy": self.legacy.to_json(detail=False),
            "new": self.new.to_json(),
            "comparisons": self.comparisons,
            "drifts": self.drifts,
            "drift_rate": self.drift_rate,
            "offpath_dropped": self.offpath_dropped,
        }


def summarize(
    name: str,
    state: State | None,
    arms: dict[Arm, w.ArmCounts],
    *,
    since: float,
    until: float,
    requested: tuple[float, float] | None = None,
) -> MigrationStats:
    """Fold per-arm window sums into a report; comparisons count wherever the off-path arm ran.
    ``requested`` is the span asked for when ``since``/``until`` were widened to hold it."""
    legacy, new = arms[Arm.LEGACY], arms[Arm.NEW]
    both = [legacy.counts, new.counts]
    state = state or State()
    return MigrationStats(
        migration=name,
        mode=state.mode,
        percent=state.effective_percent,
        window_seconds=until - since if requested is None else requested[1] - requested[0],
        since=since,
        until=until,
        legacy=ArmStats.of(legacy),
        new=ArmStats.of(new),
        comparisons=sum(c[w.COMPARISONS] for c in both),
        drifts=sum(c[w.DRIFTS] for c in both),
        comparator_errors=sum(c[w.COMPARATOR_ERRORS] for c in both),
        offpath_dropped=sum(c[w.DROPPED] for c in both),
        hook_errors=sum(c[w.HOOK_ERRORS] for c in both),
        requested=None if requested == (since, until) else requested,
    )


@dataclass(frozen=True, slots=True)
class Point:
    """One bucket of a time series: both arms and the comparisons of the windows in it."""

    start: float
    legacy: ArmStats
    new: ArmStats
    comparisons: int
    drifts: int

    @property
    def parity_rate(self) -> float | None:
        """The share of comparisons that matched."""
        return None if not self.comparisons else 1 - self.drifts / self.comparisons

    def to_json(self) -> dict[str, Any]:
        return {
            "start": self.start,
            "legacy": self.legacy.to_json(),
            "new": self.new.to_json(),
            "comparisons": self.comparisons,
            "drifts": self.drifts,
            "parity_rate": self.parity_rate,
        }


def series(
    windows: dict[int, dict[Arm, w.ArmCounts]], *, since: float, until: float, step: float
) -> list[Point]:
    """Stored windows folded into buckets of ``step`` seconds from ``since`` (aligned down to a
    multiple of ``step``) to ``until``; a bucket without windows is present, with zero calls."""
    first = since // step * step
    count = max(1, math.ceil((until - first) / step - 1e-9))
    folded = [{Arm.LEGACY: w.ArmCounts(), Arm.NEW: w.ArmCounts()} for _ in range(count)]
    for start, arms in windows.items():
        index = int((start - first) // step)
        if 0 <= index < count:
            for arm, counts in arms.items():
                folded[index][arm].add(counts)
    points = []
    for index, arms in enumerate(folded):
        both = [arms[Arm.LEGACY].counts, arms[Arm.NEW].counts]
        points.append(
            Point(
                start=first + index * step,
                legacy=ArmStats.of(arms[Arm.LEGACY]),
                new=ArmStats.of(arms[Arm.NEW]),
                comparisons=sum(c[w.COMPARISONS] for c in both),
                drifts=sum(c[w.DRIFTS] for c in both),
            )
        )
    return points


@dataclass(frozen=True, slots=True)
class Limit:
    """One threshold of ``cutover check`` and how the window measured against it."""

    name: str
    limit: float
    value: float | None
    sample: int  # the denominator the value was computed from
    breached: bool

    def describe(self) -> str:
        if self.name.startswith("min_"):
            what = self.name[4:]
            verdict = "below" if self.breached else "at least"
            return f"{what} {self.sample} is {verdict} the minimum {self.limit:g}"
        if self.value is None:
            return f"{self.name}: no data in the window (limit {self.limit:g})"
        if self.breached:
            over = self.value - self.limit
            return (
                f"{self.name} {self.value:.6g} exceeds {self.limit:g} by {over:.6g}"
                f" ({self.value / self.limit:.3g}x, over {self.sample} samples)"
                if self.limit
                else f"{self.name} {self.value:.6g} exceeds 0 (over {self.sample} samples)"
            )
        return f"{self.name} {self.value:.6g} is within {self.limit:g} (over {self.sample} samples)"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "limit": self.limit,
            "value": self.value,
            "sample": self.sample,
            "breached": self.breached,
            "message": self.describe(),
        }


def check(
    stats: MigrationStats,
    *,
    max_drift_rate: float | None = None,
    max_error_rate: float | None = None,
    max_fallback_rate: float | None = None,
    max_timeout_rate: float | None = None,
    min_comparisons: int | None = None,
) -> list[Limit]:
    """Each given threshold against the window. Rates are of the new arm; with no data a rate
    threshold holds (nothing breached it) unless a minimum says the data is required."""
    limits = []

    def over(name: str, limit: float | None, value: float | None, sample: int) -> None:
        if limit is not None:
            limits.append(Limit(name, limit, value, sample, value is not None and value > limit))

    new = stats.new
    over("drift_rate", max_drift_rate, stats.drift_rate, stats.comparisons)
    over("error_rate", max_error_rate, new.error_rate, new.calls)
    over("fallback_rate", max_fallback_rate, new.fallback_rate, new.served + new.fallbacks)
    over("timeout_rate", max_timeout_rate, new.timeout_rate, new.calls)
    if min_comparisons is not None:
        limits.append(
            Limit(
                "min_comparisons",
                min_comparisons,
                stats.comparisons,
                stats.comparisons,
                stats.comparisons < min_comparisons,
            )
        )
    return limits
