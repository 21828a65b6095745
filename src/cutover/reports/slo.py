"""SLOs as data and their error budgets: allowed, consumed and remaining over a rolling window."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from cutover.durations import format_duration, parse_duration
from cutover.errors import InvalidInput
from cutover.model import Arm
from cutover.stats import WINDOW_SECONDS, whole_windows
from cutover.telemetry import windows as w
from cutover.telemetry.windows import ArmCounts

BURN_WINDOWS = (300.0, 3600.0, 6 * 3600.0, 86400.0, 3 * 86400.0)
"""The spans ``cutover slo`` shows a burn rate over: the windows of the burn-rate alerts."""


def _seconds(value: Any) -> float:
    try:
        return parse_duration(value)
    except InvalidInput as error:
        raise ValueError(str(error)) from None


def _objective(value: Any) -> float:
    """99.9% or 0.999 -> 0.999; a target of 100% leaves no budget to compute."""
    if isinstance(value, str):
        text = value.strip()
        try:
            # Through Decimal, so that 99.9% is 0.999 and not 0.9990000000000001.
            number = float(Decimal(text.removesuffix("%")) / (100 if text.endswith("%") else 1))
        except (ArithmeticError, ValueError):
            raise ValueError(f"objective {value!r} is not a number; write 99.9% or 0.999") from None
    elif isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
    else:
        raise ValueError(f"objective {value!r} is not a number; write 99.9% or 0.999")
    if number > 1 and number < 100:
        raise ValueError(f"objective {value!r} reads as a percentage; write it as {number:g}%")
    if not 0 < number < 1:
        raise ValueError(
            f"objective {value!r} must be above 0% and below 100% (100% leaves no error budget)"
        )
    return number


Seconds = Annotated[float, BeforeValidator(_seconds)]
Objective = Annotated[float, BeforeValidator(_objective)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Indicator(_Strict):
    """What counts as a good event: one of cutover's own (an arm's runs without error, or
    under a latency threshold), or a Prometheus query of good (or bad) and total events."""

    metric: Literal["errors", "latency"] | None = None
    arm: Arm = Arm.NEW
    threshold_ms: float | None = Field(None, gt=0)
    good: str | None = None
    bad: str | None = None
    total: str | None = None

    @model_validator(mode="after")
    def _coherent(self) -> Indicator:
        queries = self.good is not None or self.bad is not None or self.total is not None
        if queries:
            if self.metric is not None or self.threshold_ms is not None:
                raise ValueError(
                    "give either metric: (cutover's own) or good:/bad: and total: (Prometheus)"
                )
            if self.total is None or (self.good is None) == (self.bad is None):
                raise ValueError("a Prometheus indicator needs total: and one of good: or bad:")
            return self
        if self.metric is None:
            raise ValueError(
                "name the indicator: metric: errors, metric: latency with threshold_ms:, or"
                " good: and total: Prometheus queries"
            )
        if self.metric == "latency" and self.threshold_ms is None:
            raise ValueError("a latency indicator needs threshold_ms:, e.g. threshold_ms: 1500")
        if self.metric == "errors" and self.threshold_ms is not None:
            raise ValueError("threshold_ms applies to metric: latency; remove it")
        return self

    @property
    def external(self) -> bool:
        return self.total is not None

    def describe(self) -> str:
        if self.external:
            return f"Prometheus: {'good' if self.good else 'bad'} / total events"
        if self.metric == "latency":
            return f"runs of {self.arm.value} within {self.threshold_ms:g} ms"
        return f"runs of {self.arm.value} without an error or a timeout"


class SLO(_Strict):
    """A service level objective, after OpenSLO: an indicator, a target share of good events
    and the rolling window it holds over."""

    name: str = Field(min_length=1, max_length=100)
    description: str | None = None
    migration: str | None = None  # the plan's migration when the SLO is in a plan
    indicator: Indicator
    objective: Objective
    window: Seconds = 30 * 86400.0

    @model_validator(mode="after")
    def _long_enough(self) -> SLO:
        if self.window < WINDOW_SECONDS:
            raise ValueError(f"window must be at least {WINDOW_SECONDS}s, one stored window")
        return self

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


class SLOFile(_Strict):
    """A file of SLOs of its own: ``migration:`` for all of them, and ``slos:``."""

    migration: str | None = None
    slos: tuple[SLO, ...] = Field(min_length=1)


def check_unique(slos: Sequence[SLO]) -> None:
    """Refuse two SLOs of one name (raised as ValueError, for a pydantic validator)."""
    seen: set[str] = set()
    for slo in slos:
        if slo.name in seen:
            raise ValueError(f"two SLOs are named {slo.name!r}; give each its own name")
        seen.add(slo.name)


def allowed(objective: float) -> float:
    """1 - objective, as written: 0.001 for 99.9%, not 0.0010000000000000009."""
    return float(f"{1 - objective:.12g}")


@dataclass(frozen=True, slots=True)
class Budget:
    """An SLO's error budget over one span: events, the share allowed to fail, and how much of
    it the span's failures used. Weighted by traffic: bad events over all events of the span,
    never a mean of per-window ratios."""

    objective: float
    good: int
    total: int

    @property
    def bad(self) -> int:
        return self.total - self.good

    @property
    def allowed(self) -> float:
        """The share of events allowed to fail: 1 - objective (0.1% of a 99.9% SLO)."""
        return allowed(self.objective)

    @property
    def actual(self) -> float | None:
        """The share of good events; None without traffic."""
        return self.good / self.total if self.total else None

    @property
    def consumed(self) -> float:
        """The share of events that failed (0 without traffic: nothing was spent)."""
        return self.bad / self.total if self.total else 0.0

    @property
    def remaining(self) -> float:
        """The share of the budget left: 1 untouched, 0 exhausted, below 0 overspent."""
        return 1 - self.consumed / self.allowed

    @property
    def burn_rate(self) -> float | None:
        """How fast the budget burns: 1 spends it exactly over the SLO's window; None without
        traffic."""
        return None if not self.total else self.consumed / self.allowed

    @property
    def met(self) -> bool | None:
        return None if self.actual is None else self.actual >= self.objective

    @property
    def status(self) -> str:
        return {None: "no data", True: "pass", False: "fail"}[self.met]

    @property
    def budget_status(self) -> str:
        return "healthy" if self.remaining > 0 else "exhausted"

    def to_json(self) -> dict[str, Any]:
        return {
            "good": self.good,
            "bad": self.bad,
            "total": self.total,
            "actual": self.actual,
            "status": self.status,
            "allowed": self.allowed,
            "consumed": self.consumed,
            "remaining": self.remaining,
            "budget_status": self.budget_status,
            "burn_rate": self.burn_rate,
        }


def events(indicator: Indicator, arms: Mapping[Arm, ArmCounts]) -> tuple[int, int]:
    """(good, total) events of a cutover indicator in summed windows."""
    arm = arms[indicator.arm]
    if indicator.metric == "latency":
        assert indicator.threshold_ms is not None
        total = arm.histogram.count
        # A histogram bucket straddling the threshold counts as above it: the figure errs on
        # the side of a spent budget, as Prometheus' le buckets cutover exports do.
        good = arm.histogram.cumulative([indicator.threshold_ms / 1000])[0]
        return good, total
    total = arm.counts[w.CALLS]
    bad = arm.counts[w.ERRORS] + arm.counts[w.TIMEOUTS]
    return max(0, total - bad), total


@dataclass(frozen=True, slots=True)
class Status:
    """One SLO now: its budget over its window and the burn rate over shorter spans."""

    slo: SLO
    migration: str
    now: float
    since: float  # the start of the rolling window, widened to a whole stored window
    budget: Budget
    burn_rates: tuple[tuple[float, float | None], ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.slo.name,
            "migration": self.migration,
            "indicator": self.slo.indicator.describe(),
            "objective": self.slo.objective,
            "window": format_duration(self.slo.window),
            "since": self.since,
            "until": self.now,
            **self.budget.to_json(),
            "burn_rates": {format_duration(s): rate for s, rate in self.burn_rates},
        }


class Reader:
    """Reads an SLO's events over a span: from the store's windows, or from Prometheus."""

    def __init__(self, store: Any, *, prometheus_url: str | None = None, timeout: float = 5.0):
        self.store = store
        self.prometheus_url = prometheus_url
        self.timeout = timeout

    def events(self, slo: SLO, migration: str, since: float, until: float) -> tuple[int, int]:
        if slo.indicator.external:
            return self._prometheus(slo, until - since)
        arms = self.store.windows(
            migration, since, until, histograms=slo.indicator.metric == "latency"
        )
        return events(slo.indicator, arms)

    def _prometheus(self, slo: SLO, seconds: float) -> tuple[int, int]:
        from cutover.telemetry import prometheus_api as prometheus

        if not self.prometheus_url:
            raise InvalidInput(
                f"SLO {slo.name!r} reads Prometheus: give --prometheus URL, add prometheus:"
                " {url: ...} to the plan, or set CUTOVER_PROMETHEUS_URL"
            )
        indicator = slo.indicator

        def value(promql: str) -> float:
            samples = prometheus.query(
                self.prometheus_url or "", prometheus.render(promql, seconds), timeout=self.timeout
            )
            total = sum(s.value for s in samples if not math.isnan(s.value))
            return total

        total = value(indicator.total or "")
        if indicator.good is not None:
            good = value(indicator.good)
        else:
            good = total - value(indicator.bad or "")
        # increase() extrapolates, so counts are fractional: round to whole events.
        return max(0, round(good)), max(0, round(total))


def budget(reader: Reader, slo: SLO, migration: str, since: float, until: float) -> Budget:
    """``slo``'s budget over [since, until), the stored window holding ``since`` whole."""
    start, _ = whole_windows(since, None)
    return Budget(slo.objective, *reader.events(slo, migration, start, until))


def status(slo: SLO, migration: str, reader: Reader, now: float) -> Status:
    """``slo`` over its rolling window ending ``now`` (the stored window holding its start
    counts whole, as in ``cutover stats``), with burn rates over the alerts' spans."""
    since, _ = whole_windows(now - slo.window, None)
    rates = tuple(
        (seconds, budget(reader, slo, migration, now - seconds, now).burn_rate)
        for seconds in BURN_WINDOWS
        if seconds <= slo.window
    )
    return Status(slo, migration, now, since, budget(reader, slo, migration, since, now), rates)


def parse_slos(data: Any, source: str) -> tuple[str | None, tuple[SLO, ...]]:
    """(migration, SLOs) of a parsed file of SLOs; InvalidInput names the field and the fix."""
    from pydantic import ValidationError

    if not isinstance(data, Mapping):
        raise InvalidInput(f"{source}: an SLO file is a mapping with migration: and slos:")
    try:
        parsed = SLOFile.model_validate(dict(data))
        check_unique(parsed.slos)
    except ValidationError as error:
        first = error.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "the file"
        message = first["msg"].removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            message = "unknown field"
        raise InvalidInput(f"{source}: {where}: {message}") from None
    except ValueError as error:
        raise InvalidInput(f"{source}: {error}") from None
    return parsed.migration, parsed.slos


__all__ = [
    "BURN_WINDOWS",
    "SLO",
    "Budget",
    "Indicator",
    "Reader",
    "SLOFile",
    "Status",
    "allowed",
    "budget",
    "check_unique",
    "events",
    "parse_slos",
    "status",
]
