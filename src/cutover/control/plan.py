"""Rollout plans: the steps, holds, checks and reactions a team declares in YAML, validated."""

from __future__ import annotations

import enum
import math
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from cutover.control.calendar import Calendar
from cutover.durations import format_duration, parse_duration
from cutover.errors import InvalidInput
from cutover.model import Arm, Mode, State, check_percent
from cutover.reports.slo import SLO, check_unique
from cutover.text import check_name


def _seconds(value: Any) -> float:
    try:
        return parse_duration(value)
    except InvalidInput as error:
        raise ValueError(str(error)) from None


def _mode(value: Any) -> Mode:
    try:
        return Mode.parse(value)
    except InvalidInput as error:
        raise ValueError(str(error)) from None


Duration = Annotated[float, BeforeValidator(_seconds)]
"""Seconds, written as people write durations: 90s, 5m, 1h30m, 14d."""

PlanMode = Annotated[Mode, BeforeValidator(_mode)]


class Growth(BaseModel):
    """A relative rate of growth: ``10%/1h`` is a tenth of the level per hour."""

    model_config = ConfigDict(frozen=True)

    fraction: float
    per: float  # seconds

    def __str__(self) -> str:
        return f"{self.fraction * 100:g}%/{format_duration(self.per)}"

    def per_second(self) -> float:
        return self.fraction / self.per


def _growth(value: Any) -> Any:
    if isinstance(value, Growth | Mapping):
        return value
    text = str(value).replace(" ", "")
    share, slash, period = text.partition("/")
    fix = "write the largest growth as a percentage per duration, like 10%/1h"
    if not slash or not share.endswith("%"):
        raise ValueError(f"max_growth {value!r} is not a growth rate; {fix}")
    try:
        fraction = float(share[:-1]) / 100
    except ValueError:
        raise ValueError(f"max_growth {value!r} does not start with a number; {fix}") from None
    if not (math.isfinite(fraction) and fraction > 0):
        raise ValueError(f"max_growth {value!r} must be a positive percentage; {fix}")
    return Growth(fraction=fraction, per=_seconds(period))


class Metric(enum.StrEnum):
    """What a check measures from cutover's own windows."""

    CALLS = "calls"
    ERROR_RATE = "error_rate"
    TIMEOUT_RATE = "timeout_rate"
    FALLBACK_RATE = "fallback_rate"
    DRIFT_RATE = "drift_rate"
    P50_MS = "p50_ms"
    P95_MS = "p95_ms"
    P99_MS = "p99_ms"
    DRIFTS = "drifts"
    ERRORS = "errors"
    TIMEOUTS = "timeouts"
    FALLBACKS = "fallbacks"
    LEGACY_CALLS = "legacy_calls"
    GONE_CALLS = "gone_calls"
    ERROR_BUDGET_REMAINING = "error_budget_remaining"
    BURN_RATE = "burn_rate"

    @property
    def is_rate(self) -> bool:
        return self.value.endswith("_rate") and not self.is_budget

    @property
    def is_budget(self) -> bool:
        """A figure of one of the plan's SLOs (``slo:``), not of the step's windows."""
        return self in (Metric.ERROR_BUDGET_REMAINING, Metric.BURN_RATE)

    @property
    def is_count(self) -> bool:
        """A count of events over the window, judged against max, with the rate it proves."""
        return self in _COUNTS

    @property
    def rate(self) -> Metric | None:
        """The rate whose events a count counts (None for legacy_calls and gone_calls, shares of
        all calls)."""
        return _COUNTS.get(self)

    @property
    def quantile(self) -> float | None:
        """0.5, 0.95 or 0.99 for a latency metric, else None."""
        return {"p50_ms": 0.50, "p95_ms": 0.95, "p99_ms": 0.99}.get(self.value)


_COUNTS: dict[Metric, Metric | None] = {
    Metric.DRIFTS: Metric.DRIFT_RATE,
    Metric.ERRORS: Metric.ERROR_RATE,
    Metric.TIMEOUTS: Metric.TIMEOUT_RATE,
    Metric.FALLBACKS: Metric.FALLBACK_RATE,
    Metric.LEGACY_CALLS: None,
    Metric.GONE_CALLS: None,
}

_ANY_ARM = (Metric.DRIFT_RATE, Metric.DRIFTS, Metric.LEGACY_CALLS, Metric.GONE_CALLS)
"""Metrics of the migration as a whole, measured on no one arm."""

_EVERY_MODE = (Metric.LEGACY_CALLS, Metric.GONE_CALLS)
"""Counts judged in every mode: legacy usage matters most where none is expected, in new."""


class Severity(enum.StrEnum):
    CRITICAL = "critical"  # acts at once, per the plan's on_critical
    WARNING = "warning"  # holds promotion until it clears


class OnCritical(enum.StrEnum):
    PREVIOUS_STEP = "previous_step"
    LEGACY = "legacy"
    ROLLBACK = "rollback"  # the runbooks' word for going back to legacy at once
    PAUSE = "pause"
    NONE = "none"  # a manual decision: the failure holds promotion and is recorded, no more


class Method(enum.StrEnum):
    """How a check's interval is built."""

    SEQUENTIAL = "sequential"  # a confidence sequence over the whole step: valid at every look
    FIXED = "fixed"  # a fixed-sample interval over the window: valid for one look only


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class RankTest(_Strict):
    """Mann-Whitney U over the two arms' latency histograms: flags a real shift of the whole
    distribution even when the fixed ratio is not crossed."""

    alpha: float = Field(0.001, gt=0, lt=0.5, description="significance level, one-sided")
    max_effect: float = Field(
        0.6,
        gt=0.5,
        le=1.0,
        description="largest tolerated probability that a call on new is slower than one on"
        " legacy (0.5: no difference); below it a significant shift is too small to matter",
    )
    min_samples: int = Field(50, ge=1, description="calls needed on each arm")


class Check(_Strict):
    """One rule of health over a window."""

    name: str = Field(min_length=1, max_length=100)
    source: Literal["cutover", "prometheus"] = "cutover"
    metric: Metric | None = None
    arm: Arm | None = None
    max: float | None = None
    min: float | None = None
    max_ratio_to: Arm | None = None
    window: Duration = 300.0
    severity: Severity = Severity.CRITICAL
    min_samples: int = Field(0, ge=0, description="below this sample size: inconclusive")
    confidence: float | None = Field(None, gt=0.5, lt=1.0)
    rank_test: RankTest | bool | None = None
    method: Method | None = Field(
        None, description="sequential or fixed; the plan's method when absent"
    )
    max_rate: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="with max: 0 on a count, the rate the window's zero events must prove"
        " (exact one-sided bound at the check's confidence) before the check passes",
    )
    sustained: Duration | None = Field(
        None,
        alias="for",
        description="act only once the check has failed on every pass for this long",
    )
    during: tuple[PlanMode, ...] | None = None
    query: str | None = None
    url: str | None = None
    baseline: Literal["rollout_start"] | None = Field(
        None,
        description="rollout_start: the query's value over the window before the rollout"
        " began, measured once and kept with the rollout",
    )
    max_ratio_to_baseline: float | None = Field(
        None, gt=0, description="fail when the query's value exceeds this multiple of baseline"
    )
    max_growth: Annotated[Growth, BeforeValidator(_growth)] | None = Field(
        None,
        description="fail when the query's least-squares growth over the window is surely"
        " above this rate, like 10%/1h",
    )
    slo: str | None = Field(
        None, description="the plan SLO an error_budget_remaining or burn_rate check reads"
    )

    @field_validator("during", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _coherent(self) -> Check:
        external = ("baseline", "max_ratio_to_baseline", "max_growth")
        if self.source != "prometheus":
            for field in external:
                if getattr(self, field) is not None:
                    raise ValueError(f"{field} applies to source: prometheus; add it or remove it")
        if (self.max_ratio_to_baseline is None) != (self.baseline is None):
            raise ValueError(
                "max_ratio_to_baseline and baseline go together: write baseline: rollout_start"
                " and max_ratio_to_baseline: 2 for 'more than twice the value before the rollout'"
            )
        if self.max_growth is not None and (
            self.baseline is not None or self.max is not None or self.min is not None
        ):
            raise ValueError(
                "a max_growth check judges the trend only; put max, min or a baseline on a"
                " check of its own"
            )
        if self.baseline is not None and (self.max is not None or self.min is not None):
            raise ValueError(
                "a baseline check's bound is max_ratio_to_baseline; put max or min on a check"
                " of its own"
            )
        if (
            self.max is None
            and self.min is None
            and self.max_growth is None
            and self.max_ratio_to_baseline is None
        ):
            raise ValueError("give a threshold: max (and/or min)")
        if self.max is not None and self.min is not None and self.min > self.max:
            raise ValueError(f"min {self.min:g} is above max {self.max:g}; swap them")
        if self.source == "prometheus":
            if not self.query:
                raise ValueError("a prometheus check needs a query, e.g. query: 'max(up)'")
            for field in ("metric", "arm", "max_ratio_to", "rank_test", "method", "max_rate"):
                if getattr(self, field) is not None:
                    raise ValueError(f"{field} applies to cutover's own metrics; remove it")
            return self
        if self.query or self.url:
            raise ValueError("query and url belong to source: prometheus; add it or remove them")
        if self.metric is None:
            raise ValueError(f"name the metric: one of {', '.join(m.value for m in Metric)}")
        if self.metric.is_budget or self.slo is not None:
            return self._budget_coherent()
        if (self.metric is Metric.CALLS or self.metric.is_count) and self.method is not None:
            raise ValueError(f"{self.metric.value} is a count judged without a method; remove it")
        if self.metric.is_count:
            if self.min is not None or self.max is None or self.max < 0:
                raise ValueError(
                    f"{self.metric.value} is a count: give the most allowed per window as max"
                    " (0 or more), and no min"
                )
            if self.max_ratio_to is not None:
                raise ValueError(
                    f"{self.metric.value} is a count, not a ratio; remove max_ratio_to"
                )
            if self.metric in _ANY_ARM and self.arm is not None:
                raise ValueError(f"{self.metric.value} counts both arms; remove arm")
        if self.max_rate is not None and not (self.metric.is_count and self.max == 0):
            raise ValueError("max_rate applies to a count with max: 0; remove it")
        if self.metric is Metric.DRIFT_RATE and (self.arm or self.max_ratio_to):
            raise ValueError("drift_rate compares both arms; remove arm and max_ratio_to")
        if self.max_ratio_to is not None:
            if self.metric is Metric.CALLS:
                raise ValueError("calls cannot be a ratio; remove max_ratio_to")
            if self.max_ratio_to is self.measured_arm:
                raise ValueError(
                    f"max_ratio_to must be the other arm ({self.measured_arm.other.value})"
                )
            if self.max is None or self.min is not None:
                raise ValueError("with max_ratio_to, give the largest ratio as max (and no min)")
        if self.rank_test not in (None, False) and (
            self.metric.quantile is None or self.max_ratio_to is None
        ):
            raise ValueError("rank_test applies to a latency metric with max_ratio_to")
        if self.metric.is_rate:
            for bound in (self.max, self.min):
                if bound is not None and bound < 0:
                    raise ValueError("a rate threshold is at least 0")
            if self.max_ratio_to is None and self.max is not None and self.max > 1:
                raise ValueError(
                    f"{self.metric.value} is a share from 0 to 1; write 5% as 0.05, not"
                    f" {self.max:g}"
                )
        return self

    def _budget_coherent(self) -> Check:
        assert self.metric is not None
        if not self.metric.is_budget:
            raise ValueError("slo applies to error_budget_remaining and burn_rate; remove it")
        for field in ("arm", "max_ratio_to", "rank_test", "method", "max_rate"):
            if getattr(self, field) not in (None, False):
                raise ValueError(f"{field} does not apply to an SLO's {self.metric.value}")
        if self.metric is Metric.ERROR_BUDGET_REMAINING and self.max is not None:
            raise ValueError("error_budget_remaining is judged by its min, e.g. min: 0.3")
        return self

    @property
    def measured_arm(self) -> Arm:
        """The arm whose metric is measured (new unless the plan says otherwise)."""
        return self.arm or Arm.NEW

    @property
    def rank(self) -> RankTest | None:
        """The rank test to run: on by default for latency ratios between arms."""
        if self.rank_test is False or self.source != "cutover" or self.metric is None:
            return None
        if self.metric.quantile is None or self.max_ratio_to is None:
            return None
        return self.rank_test if isinstance(self.rank_test, RankTest) else RankTest()

    def method_in(self, plan: Plan) -> Method | None:
        """The method this check is judged with in ``plan``; None for a count or an external
        value, which have no interval."""
        if self.source != "cutover" or self.metric is Metric.CALLS or self.metric.is_count:
            return None
        if self.metric is not None and self.metric.is_budget:
            return None
        return self.method or plan.method

    def applies_to(self, mode: Mode) -> str | None:
        """None when the check applies in ``mode``, else why it does not."""
        if self.during is not None and mode not in self.during:
            return f"only during {', '.join(m.value for m in self.during)}"
        if self.metric is not None and self.metric.is_budget:
            return None  # an SLO reads its own span, whatever serves now
        if self.source == "prometheus" or self.metric in _EVERY_MODE:
            return None
        if self.metric in (Metric.FALLBACK_RATE, Metric.FALLBACKS) and mode is not Mode.CANARY:
            return f"no call served by new can fall back in {mode.value} mode"
        both = self.metric in (Metric.DRIFT_RATE, Metric.DRIFTS)
        arms = set(Arm) if both else {self.measured_arm}
        if self.max_ratio_to is not None:
            arms.add(self.max_ratio_to)
        if mode is Mode.LEGACY and Arm.NEW in arms:
            return "new does not run in legacy mode"
        if mode is Mode.NEW and Arm.LEGACY in arms:
            return "legacy does not run in new mode"
        return None

    def describe(self, method: Method | None = None) -> str:
        """The rule in words, for status output; a sequential check reads the whole step."""
        sustained = "" if not self.sustained else f" for {format_duration(self.sustained)}"
        if self.source == "prometheus":
            what = f"prometheus {self.query}"
            window = format_duration(self.window)
            if self.max_growth is not None:
                return f"{what} grows at most {self.max_growth} over {window}{sustained}"
            if self.max_ratio_to_baseline is not None:
                return (
                    f"{what} <= {self.max_ratio_to_baseline:g} x its value over {window} before"
                    f" the rollout began{sustained}"
                )
        elif self.metric is not None and self.metric.is_budget:
            slo = f"SLO {self.slo}" if self.slo else "the plan's SLO"
            what = f"{self.metric.value} of {slo}"
        else:
            assert self.metric is not None
            what = self.metric.value
            if self.metric not in _ANY_ARM:
                what = f"{self.measured_arm.value} {what}"
            if self.max_ratio_to is not None:
                what += f" / {self.max_ratio_to.value}"
        bounds = []
        if self.min is not None:
            bounds.append(f">= {self.min:g}")
        if self.max is not None:
            bounds.append(f"<= {self.max:g}")
        span = (
            "since the step began"
            if method is Method.SEQUENTIAL
            else "over the SLO's window"
            if self.metric is Metric.ERROR_BUDGET_REMAINING
            else f"over {format_duration(self.window)}"
        )
        if self.max_rate is not None:
            span += f", proving a rate under {self.max_rate:g}"
        return f"{what} {' and '.join(bounds)} {span}{sustained}"


class Approval(_Strict):
    """Who must approve entering a step."""

    required: bool = True
    distinct_from_starter: bool = Field(
        False, description="the approver must not be the person who started the rollout"
    )
    roles: tuple[str, ...] = Field(
        (),
        description="one approval from each of these roles, each by a different person and"
        " none by the starter",
    )

    @field_validator("roles")
    @classmethod
    def _roles(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for role in value:
            check_role(role)
        if len(set(value)) != len(value):
            raise ValueError("a role is named twice; name each role once")
        return value


class Audit(_Strict):
    """The data audit entering a cohort step waits for: a report of `cutover audit --json` in
    which no tenant of the step's cohort has more drift than allowed."""

    max_drift: int = Field(
        0,
        ge=0,
        le=10**12,
        description="the rows of drift (missing, extra and changed) allowed per tenant",
    )


ROLE = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")


def check_role(role: Any) -> str:
    """An approval role as plans and tokens write it: sre, engineering, data-team."""
    if not isinstance(role, str) or not ROLE.match(role):
        raise ValueError(
            f"role {role!r} must be 1 to 40 lower-case letters, digits, _ or -, starting with"
            " a letter (sre, engineering)"
        )
    return role


class Window(_Strict):
    """The days and local hours in which the controller may enter a step."""

    days: str | tuple[str, ...] = "Mon-Sun"
    hours: str = "00:00-24:00"
    tz: str = "UTC"

    @model_validator(mode="after")
    def _parses(self) -> Window:
        self.calendar  # noqa: B018 - raises on bad days, hours or zone
        return self

    @property
    def calendar(self) -> Calendar:
        try:
            return Calendar.parse(self.days, self.hours, self.tz)
        except InvalidInput as error:
            raise ValueError(str(error)) from None


class Step(_Strict):
    """One state to reach, how long to hold it and what it must show before the next."""

    mode: PlanMode
    percent: float | None = None
    sample: float | None = Field(None, ge=0, le=1)
    fallback: bool | None = None
    hold: Duration | Literal[0] = 0
    min_comparisons: int = Field(0, ge=0)
    min_calls: int = Field(0, ge=0, description="calls on new during the step")
    approval: Approval | bool = False
    name: str | None = Field(None, max_length=100)
    checks: tuple[dict[str, Any], ...] = Field(
        (),
        description="checks of this step only, and overrides of the plan's by name (resolved"
        " by the plan, which knows its checks)",
    )
    on_critical: OnCritical | None = None
    window: Window | None = Field(
        None, description="enter this step only when the local time is inside this window"
    )
    hold_on_retry: Duration | None = Field(
        None, description="the hold instead of hold when a retry enters the step"
    )
    retry_after: Duration | None = Field(
        None, description="after a rollback from this step, retry no sooner; the plan's if absent"
    )
    cohort: str | None = Field(
        None,
        description="a cohort of `cutover cohort` whose tenants entering the step pins to new;"
        " leaving it by a rollback or an abort pins them to legacy",
    )
    audit: Audit | None = Field(
        None,
        description="enter the step only once an audit report judges its cohort's data"
        " (`cutover rollout audit`); needs a cohort",
    )

    @field_validator("cohort")
    @classmethod
    def _cohort(cls, value: str | None) -> str | None:
        if value is not None:
            from cutover.data.cohorts import check_name as check_cohort

            try:
                check_cohort(value)
            except InvalidInput as error:
                raise ValueError(str(error)) from None
        return value

    @field_validator("hold", mode="before")
    @classmethod
    def _zero_hold(cls, value: Any) -> Any:
        return 0 if value in (0, "0", None) else value

    @model_validator(mode="after")
    def _coherent(self) -> Step:
        if self.mode is Mode.CANARY:
            if self.percent is None:
                raise ValueError("a canary step needs a percent, e.g. percent: 5")
            try:
                check_percent(self.percent)
            except InvalidInput as error:
                raise ValueError(str(error)) from None
        elif self.percent is not None:
            raise ValueError(f"percent applies to canary steps; remove it from this {self.mode}")
        if self.min_comparisons and self.mode in (Mode.LEGACY, Mode.NEW):
            raise ValueError(
                f"nothing is compared in {self.mode} mode, so min_comparisons could never be"
                " reached; remove it"
            )
        if self.min_calls and self.mode is Mode.LEGACY:
            raise ValueError("new makes no calls in legacy mode; remove min_calls")
        if self.audit is not None and self.cohort is None:
            raise ValueError(
                "an audit judges the data of the step's cohort; name one with cohort: NAME"
                " or remove audit"
            )
        return self

    def hold_for(self, retried: bool) -> float:
        """The hold in seconds, when the step was entered by a retry or otherwise."""
        return self.hold_on_retry if retried and self.hold_on_retry is not None else self.hold

    @property
    def needs_approval(self) -> bool:
        approval = self.approval
        return approval.required if isinstance(approval, Approval) else bool(approval)

    @property
    def approval_rule(self) -> Approval:
        return self.approval if isinstance(self.approval, Approval) else Approval()

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        return f"canary {self.percent:g}%" if self.mode is Mode.CANARY else self.mode.value

    def state_from(self, current: State) -> State:
        """The state this step routes with, starting from ``current`` (pins are kept)."""
        sample = self.sample
        if sample is None:
            sample = 1.0 if self.mode is Mode.SHADOW else current.sample
        return current.evolve(
            mode=self.mode,
            percent=self.percent if self.mode is Mode.CANARY else current.percent,
            sample=sample,
            fallback=current.fallback if self.fallback is None else self.fallback,
        )

    def holds(self, state: State) -> bool:
        """Whether ``state`` is what this step set (a person may have changed it since)."""
        return self.state_from(state).same_settings(state)


EVENTS = (
    "start",
    "promote",
    "rollback",
    "abort",
    "complete",
    "pause",
    "resume",
    "retry",
    "approve",
    "approval_needed",
    "audit",
    "warning",
    "warning_cleared",
    "failing",
    "recovered",
    "baseline",
)
"""The kinds of decision a rollout records, which webhooks may filter on."""


class Webhook(_Strict):
    webhook: str = Field(min_length=1)
    events: tuple[str, ...] | None = None  # decision kinds to send; all when absent
    headers: dict[str, str] = Field(default_factory=dict)

    @field_validator("events")
    @classmethod
    def _known_events(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        unknown = sorted(set(value or ()) - set(EVENTS))
        if unknown:
            raise ValueError(f"unknown event {unknown[0]!r}; the events are {', '.join(EVENTS)}")
        return value

    @field_validator("webhook")
    @classmethod
    def _http(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("a webhook is an http:// or https:// URL")
        return value


class PrometheusSource(_Strict):
    url: str = Field(min_length=1)
    headers: dict[str, str] = Field(default_factory=dict)
    timeout: Duration = 5.0


class Plan(_Strict):
    """A declared rollout for one migration."""

    migration: str  # held to the one name rule below
    description: str | None = None
    steps: tuple[Step, ...] = Field(min_length=1)
    checks: tuple[Check, ...] = ()
    on_critical: OnCritical = OnCritical.PREVIOUS_STEP
    confidence: float = Field(0.95, gt=0.5, lt=1.0)
    method: Method = Method.SEQUENTIAL
    notify: tuple[Webhook, ...] = ()
    prometheus: PrometheusSource | None = None
    retry_after: Duration | None = Field(
        None, description="after a rollback, `retry` is refused until this long has passed"
    )
    slos: tuple[SLO, ...] = ()

    @field_validator("migration")
    @classmethod
    def _name(cls, value: str) -> str:
        try:
            return check_name(value)
        except InvalidInput as error:
            raise ValueError(str(error)) from None

    @model_validator(mode="after")
    def _coherent(self) -> Plan:
        seen: set[str] = set()
        for check in self.checks:
            if check.name in seen:
                raise ValueError(f"two checks are named {check.name!r}; give each its own name")
            seen.add(check.name)
        cohorts = [step.cohort for step in self.steps if step.cohort]
        for cohort in cohorts:
            if cohorts.count(cohort) > 1:
                raise ValueError(
                    f"cohort {cohort!r} is named by two steps; a cohort moves in one step"
                )
        check_unique(self.slos)
        return self

    def retry_after_for(self, index: int) -> float | None:
        """How long after a rollback from step ``index`` a retry must wait, if at all."""
        if 0 <= index < len(self.steps) and self.steps[index].retry_after is not None:
            return self.steps[index].retry_after
        return self.retry_after

    def slo_for(self, check: Check) -> SLO:
        """The SLO an error_budget_remaining or burn_rate check reads: the one it names, or
        the plan's only one."""
        if check.slo is None and len(self.slos) == 1:
            return self.slos[0]
        for slo in self.slos:
            if slo.name == check.slo:
                return slo
        names = ", ".join(repr(s.name) for s in self.slos) or "none: add slos: to the plan"
        if check.slo is None:
            raise InvalidInput(
                f"check {check.name!r}: name the SLO it reads with slo:; the plan's SLOs are"
                f" {names}"
            )
        raise InvalidInput(
            f"check {check.name!r}: no SLO named {check.slo!r}; the plan's SLOs are {names}"
        )

    def checks_for(self, index: int) -> tuple[Check, ...]:
        """The checks in force at step ``index``: the plan's, with the step's overrides applied
        in place, then the step's own. Before the first step, the plan's."""
        if not 0 <= index < len(self.steps):
            return self.checks
        by_name = {check.name: check for check in self.checks}
        added: list[Check] = []
        for entry in self.steps[index].checks:
            check, is_override = _step_check(entry, by_name)
            if is_override:
                by_name[check.name] = check
            else:
                added.append(check)
        return (*by_name.values(), *added)

    def on_critical_for(self, index: int) -> OnCritical:
        """What a failed critical check does at step ``index``."""
        if 0 <= index < len(self.steps) and self.steps[index].on_critical is not None:
            return self.steps[index].on_critical  # type: ignore[return-value]
        return self.on_critical

    def require_servers(self, source: str = "the plan") -> None:
        """Refuse to start a plan whose Prometheus checks have no server to ask. Checked when
        a plan is read from a file, not when a stored one is: a controller without the
        variable judges such a check inconclusive rather than refuse the whole rollout."""
        if self.prometheus is not None or os.environ.get("CUTOVER_PROMETHEUS_URL"):
            return
        everywhere = [(f"checks[{i}]", check) for i, check in enumerate(self.checks)]
        for number in range(len(self.steps)):
            everywhere += [(f"steps[{number}].checks", c) for c in self.checks_for(number)]
        for where, check in everywhere:
            if check.source == "prometheus" and not check.url:
                raise InvalidInput(
                    f"{source}: {where}: a prometheus check needs a server: add"
                    " prometheus: {url: http://host:9090} to the plan, url: to the check,"
                    " or set CUTOVER_PROMETHEUS_URL"
                )

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True, by_alias=True)

    def prometheus_url(self, check: Check) -> str:
        return (
            check.url
            or (self.prometheus.url if self.prometheus else "")
            or os.environ.get("CUTOVER_PROMETHEUS_URL", "")
        )


def parse_plan(data: Any, source: str = "the plan") -> Plan:
    """A validated plan from parsed YAML or JSON; InvalidInput names the field and the fix."""
    if not isinstance(data, Mapping):
        raise InvalidInput(
            f"{source}: a plan is a mapping with migration:, steps: and checks:, not"
            f" {type(data).__name__}"
        )
    _refuse_nul(data, source)
    try:
        plan = Plan.model_validate(dict(data))
    except ValidationError as error:
        where, message = _problem(error, lambda loc: _known_fields(data, loc))
        raise InvalidInput(f"{source}: {where}: {message}") from None
    _resolve_steps(plan, source)
    for number in range(-1, len(plan.steps)):
        for check in plan.checks_for(number):
            if check.metric is not None and check.metric.is_budget:
                try:
                    plan.slo_for(check)
                except InvalidInput as error:
                    raise InvalidInput(f"{source}: {error}") from None
    return plan


def _problem(error: ValidationError, fields: Callable[[tuple[Any, ...]], str]) -> tuple[str, str]:
    """Where the first problem is, and what it is in one sentence; ``fields`` lists the fields
    known where an unknown one was written."""
    problems = error.errors(include_url=False)
    first = problems[0]
    where = _location(first["loc"])
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = f"unknown field; {fields(first['loc'])}"
    elif first["type"] == "missing":
        message = "this field is required"
    elif first["type"] == "too_short":
        message = f"give at least {first['ctx']['min_length']}, not none"
    # A union (rank_test: true or a mapping) reports once per branch: count places instead.
    others = len({_location(p["loc"]) for p in problems} - {where})
    more = f" (and {others} more problem{'s' if others > 1 else ''})" if others else ""
    return where, f"{message}{more}"


OVERRIDABLE = frozenset(
    {"name", "max", "min", "window", "severity", "min_samples", "confidence", "method", "for"}
)
"""What a step may change in one of the plan's checks; anything else is a new check."""


def _step_check(entry: Mapping[str, Any], plan_checks: Mapping[str, Check]) -> tuple[Check, bool]:
    """A step's check entry as a check, and whether it overrides one of the plan's."""
    name = entry.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError("name the check: the name of a plan check to override, or a new one")
    base = plan_checks.get(name)
    if base is None:
        return Check.model_validate(dict(entry)), False
    other = sorted(set(entry) - OVERRIDABLE)
    if other:
        raise ValueError(
            f"{other[0]} cannot be overridden for {name!r}; a step overrides"
            f" {', '.join(sorted(OVERRIDABLE - {'name'}))}, or adds a check under a new name"
        )
    merged = {**base.model_dump(mode="json", exclude_unset=True, by_alias=True), **entry}
    return Check.model_validate(merged), True


def _resolve_steps(plan: Plan, source: str) -> None:
    """Refuse a step check that does not resolve, in one sentence naming the step and entry."""
    for number, step in enumerate(plan.steps):
        seen: set[str] = set()
        by_name = {check.name: check for check in plan.checks}
        for position, entry in enumerate(step.checks):
            where = f"steps[{number}].checks[{position}]"
            try:
                check, _ = _step_check(entry, by_name)
            except ValidationError as error:
                field, message = _problem(error, lambda _: f"the fields are {_field_names(Check)}")
                inside = "" if field == "the plan" else f".{field}"
                raise InvalidInput(f"{source}: {where}{inside}: {message}") from None
            except ValueError as error:
                raise InvalidInput(f"{source}: {where}: {error}") from None
            if check.name in seen:
                raise InvalidInput(
                    f"{source}: {where}: the step names {check.name!r} twice; give each its"
                    " own name"
                )
            seen.add(check.name)


def load_plan(path: str | os.PathLike[str], *, servers: bool = True) -> Plan:
    """Read and validate a YAML (or JSON) plan file; with ``servers``, refuse a Prometheus
    check that has no server to ask (a backtest, which asks none, reads it without)."""
    try:
        from cutover._yaml import parse_yaml
    except ImportError:
        raise InvalidInput("reading plans needs PyYAML: pip install 'cutover[rollout]'") from None
    where = os.fspath(path)
    try:
        text = Path(where).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidInput(f"{where}: no such plan file; check the path") from None
    except (OSError, UnicodeDecodeError) as error:
        raise InvalidInput(f"{where}: cannot read the plan ({error})") from None
    plan = parse_plan(parse_yaml(text, where), where)
    if servers:
        plan.require_servers(where)
    return plan


def _refuse_nul(data: Mapping[str, Any], source: str) -> None:
    """Refuse a NUL character anywhere in the plan: no store keeps one in text, and the plan's
    names end up in decisions and statuses. Walked without recursion: an inline plan from the
    API is as deep as its JSON."""
    pending: list[tuple[tuple[Any, ...], Any]] = [((), data)]
    while pending:
        loc, value = pending.pop()
        if isinstance(value, str):
            if "\x00" in value:
                raise InvalidInput(
                    f"{source}: {_location(loc)}: contains a NUL character (\\x00); remove it"
                )
        elif isinstance(value, Mapping):
            for key, item in value.items():
                if isinstance(key, str) and "\x00" in key:
                    raise InvalidInput(
                        f"{source}: {_location(loc)}: a key contains a NUL character (\\x00);"
                        " remove it"
                    )
                pending.append(((*loc, key), item))
        elif isinstance(value, list | tuple):
            pending.extend(((*loc, index), item) for index, item in enumerate(value))


def _location(loc: tuple[Any, ...]) -> str:
    """("checks", 2, "max") -> "checks[2].max"; pydantic's union branch names are dropped."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in (
            "bool",
            "RankTest",
            "Approval",
            "Window",
            "float",
            "str",
            "tuple[str, ...]",
        ) or str(part).startswith(("function-", "literal[", "constrained-")):
            continue  # the name of a union's branch, not a field
        else:
            out += f".{part}" if out else str(part)
    return out or "the plan"


def _known_fields(data: Any, loc: tuple[Any, ...]) -> str:
    models: dict[str, type[BaseModel]] = {
        "steps": Step,
        "checks": Check,
        "notify": Webhook,
        "prometheus": PrometheusSource,
        "slos": SLO,
    }
    model: type[BaseModel] = models.get(str(loc[0]), Plan) if len(loc) > 1 else Plan
    if len(loc) > 3 and loc[2] == "rank_test":
        model = RankTest
    elif len(loc) > 3 and loc[2] == "approval":
        model = Approval
    elif len(loc) > 3 and loc[2] == "audit":
        model = Audit
    elif len(loc) > 3 and loc[2] == "window":
        model = Window
    return f"the fields are {_field_names(model)}"


def _field_names(model: type[BaseModel]) -> str:
    """The fields as a plan writes them (``for``, not the attribute ``sustained``)."""
    return ", ".join(info.alias or name for name, info in model.model_fields.items())
