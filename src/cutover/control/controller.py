"""The rollout controller: walks each migration through its plan, judging checks as it goes,
and records every action it and its operators take as a decision with the evidence."""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from cutover.clock import Clock
from cutover.control import audits
from cutover.control.calendar import format_utc
from cutover.control.checks import (
    CheckResult,
    Outcome,
    RangeQuery,
    Span,
    Telemetry,
    evaluate,
    window_span,
)
from cutover.control.notify import Notifier
from cutover.control.plan import Check, OnCritical, Plan, Severity, Step, parse_plan
from cutover.durations import format_duration
from cutover.errors import (
    ConflictError,
    CutoverError,
    InvalidInput,
    LeaseLost,
    NotYet,
    StoreError,
    UnknownMigration,
)
from cutover.model import Arm, Decision, Mode, Rollout, RolloutStatus, State, pin_changes
from cutover.reports.slo import SLO, Budget
from cutover.store import DEFAULT_LEASE, Cohort, CohortStatus, Fence, InstanceInfo, Store
from cutover.telemetry import windows as w
from cutover.telemetry.histogram import Histogram

log = logging.getLogger("cutover.controller")

CONTROLLER = "controller"
BEFORE_FIRST = -1  # a rollout whose first step waits for its approval


_Gathered = tuple[Telemetry, int, int]
"""A migration's telemetry for one pass, with its step's comparisons and calls on new."""


@dataclass(frozen=True, slots=True)
class Progress:
    """What the current step has gathered since it began."""

    comparisons: int
    new_calls: int
    held: float  # seconds since the step began
    hold_left: float


@dataclass(frozen=True, slots=True)
class Evaluation:
    """Where one rollout stands, what its checks found, and what the controller would do."""

    rollout: Rollout
    plan: Plan
    state: State | None
    now: float
    checks: tuple[CheckResult, ...]
    progress: Progress
    blockers: tuple[str, ...] = ()  # why it is not promoted now
    planned: _Planned | None = None  # the decision the controller would take now, if any
    measured: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """Baselines measured on this pass, not yet kept in the rollout's notes."""

    @property
    def action(self) -> str | None:
        return self.planned.kind if self.planned else None

    @property
    def reason(self) -> str:
        """Why that action, or why none."""
        if self.planned:
            return self.planned.reason
        return "; ".join(self.blockers) or "nothing to do"

    @property
    def step(self) -> Step | None:
        index = self.rollout.step
        return self.plan.steps[index] if 0 <= index < len(self.plan.steps) else None

    @property
    def next_step(self) -> Step | None:
        index = self.rollout.step + 1
        return self.plan.steps[index] if index < len(self.plan.steps) else None

    def to_json(self) -> dict[str, Any]:
        rollout = self.rollout
        return {
            "migration": rollout.migration,
            "status": rollout.status.value,
            "reason": rollout.reason,
            "step": rollout.step,
            "step_label": step_label(self.plan, rollout.step),
            "steps": [
                {
                    "index": index,
                    "label": step.label,
                    "mode": step.mode.value,
                    "percent": step.percent,
                    "hold_seconds": step.hold,
                    "approval": step.needs_approval,
                    "approved": _approval_json(rollout, index),
                    "roles": list(step.approval_rule.roles) if step.needs_approval else [],
                    "roles_missing": missing_roles(step, rollout, index),
                    "window": step.window.calendar.describe() if step.window else None,
                    "cohort": step.cohort,
                    "audit": step.audit.model_dump() if step.audit else None,
                    "audited": audits.given(rollout, index),
                }
                for index, step in enumerate(self.plan.steps)
            ],
            "step_started_at": rollout.step_started_at,
            "started_at": rollout.started_at,
            "started_by": rollout.started_by,
            "source": rollout.source,
            "version": rollout.version,
            "state": self.state.to_dict() if self.state else None,
            "progress": {
                "comparisons": self.progress.comparisons,
                "new_calls": self.progress.new_calls,
                "held_seconds": self.progress.held,
                "hold_left_seconds": self.progress.hold_left,
            },
            "checks": [result.to_json() for result in self.checks],
            "blockers": list(self.blockers),
            "next_action": self.action,
            "next_action_reason": self.reason,
            "evaluated_at": self.now,
            "retry_possible_at": retry_possible_at(self.plan, rollout),
        }


def _approval_json(rollout: Rollout, index: int) -> dict[str, Any] | None:
    given = rollout.approval(index)
    return dict(given) if given else None


def missing_roles(step: Step, rollout: Rollout, index: int) -> list[str]:
    """The roles whose approval entering step ``index`` still waits for."""
    given = rollout.approval(index) or {}
    roles = given.get("roles") or {}
    return [role for role in step.approval_rule.roles if role not in roles]


def approved(step: Step, rollout: Rollout, index: int) -> bool:
    """Whether step ``index`` may be entered as far as approvals go."""
    if not step.needs_approval:
        return True
    if step.approval_rule.roles:
        return not missing_roles(step, rollout, index)
    return rollout.approval(index) is not None


def retry_possible_at(plan: Plan, rollout: Rollout) -> float | None:
    """When a retry becomes possible after the rollout's last rollback, if the plan sets a
    cooldown; counted from the rollback's recorded time, so it outlives any controller."""
    last = rollout.notes.get("rolled_back")
    if not isinstance(last, dict):
        return None
    after = plan.retry_after_for(int(last.get("step", -1)))
    return None if after is None else float(last["at"]) + after


def _from_roles(plan: Plan, rollout: Rollout, index: int) -> str:
    missing = missing_roles(plan.steps[index], rollout, index)
    return f" from {', '.join(missing)}" if missing else ""


def _waiting_for_approval(plan: Plan, rollout: Rollout, index: int) -> str:
    step = plan.steps[index]
    missing = missing_roles(step, rollout, index)
    if missing:
        return f"approval needed to enter {step_label(plan, index)} from {', '.join(missing)}"
    return f"approval needed to enter {step_label(plan, index)}"


def step_label(plan: Plan, index: int) -> str:
    if index == BEFORE_FIRST:
        return "before the first step"
    return f"step {index + 1}/{len(plan.steps)} ({plan.steps[index].label})"


@dataclass
class _Planned:
    """A decision the controller is about to record."""

    kind: str
    reason: str
    rollout: Rollout  # the rollout record as the decision leaves it
    state: State | None = None  # the new state, when the decision changes it
    evidence: dict[str, Any] = field(default_factory=dict)
    cohort: Cohort | None = None  # the cohort a cohort step promotes or rolls back


def describe(decision: Decision, dry_run: bool = False) -> str:
    """A decision in one line: the migration, what was done (or would be), and why."""
    return f"{decision.migration}: {'would ' if dry_run else ''}{decision.kind}: {decision.reason}"


class Controller:
    """Carries out rollouts on one store.

    ``tick()`` makes one pass over every active rollout and returns the decisions it took;
    ``run()`` ticks in a loop. The operator actions (``start``, ``promote``, ``pause``,
    ``resume``, ``approve``, ``abort``, ``retry``) are methods too, shared by the CLI and the
    HTTP API. Every write is a compare-and-set of both the state and the rollout, so two
    controllers, or a controller and an operator, never act twice on what they both read.

    Only the holder of the store's controller lease ticks; the others stand by. The lease lasts
    ``lease`` seconds after each renewal, by the database's clock, and every write a tick makes
    is fenced by the lease's term: once another controller has taken over, a controller that
    was frozen past its lease cannot write when it wakes, and stands by. Operator actions are
    not fenced (they are not the controller's acts), only compare-and-set.
    """

    def __init__(
        self,
        store: Store | None = None,
        *,
        clock: Clock | None = None,
        actor: str = CONTROLLER,
        dry_run: bool = False,
        notifier: Notifier | None = None,
        external: Callable[..., list[float]] | None = None,
        external_range: RangeQuery | None = None,
        four_eyes: bool = False,
        lease: float = DEFAULT_LEASE,
    ) -> None:
        if store is None or clock is None:
            from cutover.runtime import current

            runtime = current()
            store = store or runtime.store
            clock = clock or runtime.clock
        self.store = store
        self.clock = clock
        self.actor = actor
        self.dry_run = dry_run
        self.notifier = notifier if notifier is not None else Notifier()
        self.external = external if external is not None else _prometheus_values
        self.external_range = external_range if external_range is not None else _prometheus_range
        # Every approval must come from someone other than the rollout's starter, whatever
        # the plan says.
        self.four_eyes = four_eyes
        self._lease = store.leadership(CONTROLLER, duration=lease)
        self._fence: Fence | None = None  # the term this controller acts under, while leading
        # When the lease was last renewed, by this host's monotonic clock: the lease runs on
        # real time (the database's), whatever clock the controller's decisions use.
        self._renewed = -math.inf
        self._instance = f"{CONTROLLER}:{socket.gethostname()}:{os.getpid()}"
        self._started_at = clock()
        # Per migration: (its step's start, with histograms), counted up to, the totals.
        self._totals: dict[str, tuple[tuple[float, bool], float, dict[Arm, w.ArmCounts]]] = {}
        self._plans: dict[str, tuple[Mapping[str, Any], Plan]] = {}  # the stored plan, parsed
        # Per migration: the latency histograms of the windows its checks read, each with the
        # counters it was read with (see _series).
        self._histograms: dict[str, dict[int, tuple[_Key, dict[Arm, Histogram]]]] = {}
        self.standby = False  # the last tick found another controller holding the lease
        self.interval: float | None = None  # seconds between ticks, while run() loops
        self.queries = 0  # store reads made by ticks, for benchmarks

    # -- evaluation ----------------------------------------------------------------------

    def evaluate(
        self,
        name: str,
        *,
        rollout: Rollout | None = None,
        state: State | None = None,
        gathered: _Gathered | None = None,
    ) -> Evaluation:
        """Where ``name``'s rollout stands and what the controller would do now. ``gathered``
        is its telemetry as :meth:`_gather` read it for a whole tick; without, it is read here
        the same way, for this migration alone."""
        if rollout is None:
            rollout = self.store.rollout(name)
            if rollout is None:
                raise InvalidInput(
                    f"no rollout for {name!r}; start one with `cutover rollout start PLAN`"
                )
            state = self.store.state(name)
        plan = self._plan(rollout)
        now = self.clock()
        if gathered is None and rollout.step >= 0:
            gathered = self._gather({name: (rollout, plan)}, now)[name]
        step = plan.steps[rollout.step] if rollout.step >= 0 else None
        checks: tuple[CheckResult, ...] = ()
        comparisons = new_calls = 0
        measured: dict[str, dict[str, Any]] = {}
        if step is not None:
            assert gathered is not None
            in_force = plan.checks_for(rollout.step)
            telemetry, comparisons, new_calls = gathered
            mode = (state or State()).mode
            kept = rollout.notes.get("baselines", {})
            tried: dict[str, dict[str, Any]] = {}
            for check in in_force:
                if check.baseline is not None and check.name not in kept:
                    tried[check.name] = self._baseline(check, plan, rollout)
            measured = {k: v for k, v in tried.items() if "value" in v}
            checks = tuple(
                evaluate(
                    check,
                    plan,
                    mode,
                    telemetry,
                    now=now,
                    step_started_at=rollout.step_started_at,
                    external=self.external,
                    external_range=self.external_range,
                    baselines={**kept, **tried},
                    budgets=_budget_reader(self.store, name, plan),
                )
                for check in in_force
            )
        held = max(0.0, now - rollout.step_started_at)
        hold_left = max(0.0, (step_hold(step, rollout) if step else 0.0) - held)
        progress = Progress(comparisons, new_calls, held, hold_left)
        evaluation = Evaluation(rollout, plan, state, now, checks, progress, measured=measured)
        planned, blockers = self._decide(evaluation)
        if measured and rollout.status.active:
            planned = self._keep_baselines(evaluation, planned)
        return replace(evaluation, blockers=tuple(blockers), planned=planned)

    def _baseline(self, check: Check, plan: Plan, rollout: Rollout) -> dict[str, Any]:
        """The check's query as it stood when the rollout began, over the check's window:
        ``{"value": ...}`` with where it came from, or ``{"error": why}``."""
        from cutover.telemetry.prometheus_api import PrometheusError

        try:
            values = [
                v
                for v in self.external(check, plan, check.window, at=rollout.started_at)
                if not math.isnan(v)
            ]
        except PrometheusError as error:
            return {"error": f"measuring it failed ({error}); it is measured again next pass"}
        if not values:
            return {
                "error": f"the query returned no series at the rollout's start"
                f" ({rollout.started_at:.0f}); check that the metric existed then"
            }
        return {
            "value": max(values),
            "series": len(values),
            "at": rollout.started_at,
            "window": check.window,
            "measured_at": self.clock(),
        }

    def _keep_baselines(self, e: Evaluation, planned: _Planned | None) -> _Planned:
        """Write the baselines measured on this pass into the rollout's notes: with the
        decision this pass takes anyway, or with a ``baseline`` decision of their own, so a
        restarted controller compares with the same values."""
        measured = e.measured
        if planned is None:
            what = "; ".join(
                f"{name}: {found['value']:.6g} over {format_duration(found['window'])} before"
                " the rollout began"
                + (f" (max of {found['series']} series)" if found["series"] > 1 else "")
                for name, found in sorted(measured.items())
            )
            planned = _Planned("baseline", f"baselines measured: {what}", rollout=e.rollout)
        rollout = planned.rollout
        baselines = {**rollout.notes.get("baselines", {}), **measured}
        return replace(
            planned,
            rollout=rollout.evolve(notes={**rollout.notes, "baselines": baselines}),
            evidence={**planned.evidence, "baselines": dict(measured)},
        )

    def _plan(self, rollout: Rollout) -> Plan:
        """The rollout's stored plan, parsed once for as long as it stays the same."""
        kept = self._plans.get(rollout.migration)
        if kept is not None and kept[0] == rollout.plan:
            return kept[1]
        plan = parse_plan(rollout.plan, f"the stored plan of {rollout.migration!r}")
        self._plans[rollout.migration] = (rollout.plan, plan)
        return plan

    def _plans_of(self, rollouts: Mapping[str, Rollout]) -> dict[str, tuple[Rollout, Plan]]:
        """The rollouts whose stored plan parses, with it: the others fail on evaluation,
        one at a time, with the reason logged, and do not stop the others."""
        out = {}
        for name, rollout in rollouts.items():
            try:
                out[name] = (rollout, self._plan(rollout))
            except Exception:  # noqa: BLE001 - reported by the rollout's own evaluation
                continue
        return out

    def _gather(
        self, rollouts: Mapping[str, tuple[Rollout, Plan]], now: float
    ) -> dict[str, _Gathered]:
        """For every rollout on a step: the windows its checks read, and the step's totals of
        comparisons and new calls. Read for all of them at once, in a few statements however
        many there are: the windows of each one's span in one, the step totals' catching up
        in another (see :meth:`_earlier`).

        Windows are read from the span's start as of ``now``; a rollout evaluated a moment
        later judges from its own ``now``, whose spans start no earlier, so what it reads is
        the same as if it had read alone."""
        reads: dict[str, tuple[float, float, Span]] = {}
        for name, (rollout, plan) in rollouts.items():
            if rollout.step < 0:
                continue
            span = window_span(plan, plan.checks_for(rollout.step))
            start = rollout.step_started_at
            reads[name] = (start, max(start, now - span.longest), span)
        if not reads:
            return {}
        series = self._series(
            now,
            {
                name: (since, None if span.latency is None else max(start, now - span.latency))
                for name, (start, since, span) in reads.items()
            },
        )
        earlier = self._earlier(
            {
                name: (start, since, span.step_histograms)
                for name, (start, since, span) in reads.items()
                if since > start
            }
        )
        out = {}
        for name, (start, _, span) in reads.items():
            before = earlier.get(name)
            telemetry = Telemetry(series[name], before if span.step else None)
            recent = telemetry.counters(start)
            prior = {arm: counts.counts for arm, counts in (before or {}).items()}
            comparisons = sum(
                counts[w.COMPARISONS] for part in (recent, prior) for counts in part.values()
            )
            new_calls = recent[Arm.NEW][w.CALLS] + (prior[Arm.NEW][w.CALLS] if prior else 0)
            out[name] = (telemetry, comparisons, new_calls)
        return out

    def _series(
        self, now: float, spans: Mapping[str, tuple[float, float | None]]
    ) -> dict[str, dict[int, dict[Arm, w.ArmCounts]]]:
        """``store.series_of`` of every migration of ``spans`` (since, histograms_since), up to
        now, with the histograms read again only for the windows whose counters changed since
        the last pass, or that began less than two minutes ago.

        Histograms are most of what a pass reads, and a window's histogram changes only with
        its counters: every latency an instance records comes with a call it counts. Not
        always in the same flush: the flusher may read a thread's counters between the call's
        count and its latency, and the latency follows in the next flush, a flush interval
        later; so the last two minutes are read whole on every pass. The counters of every
        window are read (one statement per span, as before), and histograms only from the
        oldest window whose counters are not those its kept histogram was read with. A flush
        arriving late into an older minute (an instance back from a store outage) changes that
        minute's counters and has it read again."""
        counted = self.store.series_of(
            {name: (since, None, None) for name, (since, _) in spans.items()}
        )
        self.queries += 1
        stale: dict[str, float] = {}
        for name, (_, later) in spans.items():
            if later is None:
                self._histograms.pop(name, None)
                continue
            kept = self._histograms.get(name, {})
            changed = [
                start
                for start, arms in counted[name].items()
                if start >= later
                and (start >= now - RECENT or start not in kept or kept[start][0] != _key(arms))
            ]
            if changed:
                stale[name] = min(changed)
        fresh = {}
        if stale:
            fresh = self.store.series_of({name: (f, None, f) for name, f in stale.items()})
            self.queries += 1
        out = {}
        for name, (_, later) in spans.items():
            windows = counted[name]
            if later is None:
                out[name] = windows
                continue
            first = stale.get(name, math.inf)
            kept = self._histograms.get(name, {})
            merged: dict[int, dict[Arm, w.ArmCounts]] = {}
            for start, arms in windows.items():
                if start >= first:
                    continue  # read again, below
                if start >= later:
                    histograms = kept[start][1]
                    merged[start] = {
                        arm: w.ArmCounts(c.counts, histograms[arm]) for arm, c in arms.items()
                    }
                else:
                    merged[start] = arms
            merged.update((fresh.get(name) or {}).items())
            out[name] = dict(sorted(merged.items()))
            self._histograms[name] = {
                start: (_key(arms), {arm: c.histogram for arm, c in arms.items()})
                for start, arms in out[name].items()
                if start >= later
            }
        return out

    def _earlier(
        self, spans: Mapping[str, tuple[float, float, bool]]
    ) -> dict[str, dict[Arm, w.ArmCounts]]:
        """Each migration's totals per arm from its step's start to its ``until``, ``spans``
        giving (step start, until, with histograms). Summed once per step and then extended
        by what the checks' windows have left behind since the last tick, so a 14-day step
        costs one long read, not one per tick; and every migration's extension is read in
        one statement (two with histograms).

        A minute already folded is not read again: telemetry flushed into it later (an
        instance flushing after a long store outage, more than the checks' span late) is not
        in these totals until the step changes or the controller restarts."""
        out: dict[str, dict[Arm, w.ArmCounts]] = {}
        wanted: dict[str, tuple[float, float | None]] = {}
        base: dict[str, dict[Arm, w.ArmCounts]] = {}
        for name, (start, until, histograms) in spans.items():
            kept = self._totals.get(name)
            if kept is None or kept[0] != (start, histograms):
                kept = ((start, histograms), start, {arm: w.ArmCounts() for arm in Arm})
            if until > kept[1]:
                wanted[name] = (kept[1], until)
                base[name] = kept[2]
            else:
                out[name] = kept[2]
        if wanted:
            more = self.store.windows_of(
                wanted, histograms=[name for name in wanted if spans[name][2]]
            )
            self.queries += 1
            for name in wanted:
                start, until, histograms = spans[name]
                arms = {arm: _sum(base[name][arm], more[name][arm]) for arm in Arm}
                self._totals[name] = ((start, histograms), until, arms)
                out[name] = arms
        return out

    def _decide(self, e: Evaluation) -> tuple[_Planned | None, list[str]]:
        """The decision to take now (if any) and what stands in the way of promotion."""
        rollout, plan = e.rollout, e.plan
        status = rollout.status
        if not status.active:
            return None, [f"the rollout is {status.value}" + self._cooldown_note(e)]
        if status is RolloutStatus.PAUSED:
            return None, [f"paused: {rollout.reason}" if rollout.reason else "paused"]
        step = e.step
        state = e.state or State()
        if step is not None and not step.holds(state):
            who = f" by {state.updated_by}" if state.updated_by else ""
            why = (
                f"the state was changed outside the plan (version {state.version}{who});"
                f" the controller stands back: `resume` re-applies {step.label},"
                " `abort` returns to legacy"
            )
            return (
                _Planned(
                    "pause", why, rollout=rollout.evolve(status=RolloutStatus.PAUSED, reason=why)
                ),
                ["the state was changed outside the plan"],
            )
        # With on_critical: none a failed critical check is a manual decision: it is recorded
        # and holds promotion like a warning (see _warnings), and nothing else happens.
        manual = plan.on_critical_for(rollout.step) is OnCritical.NONE
        acting, changed = self._sustained(e)
        critical = [r for r in acting if r.severity == Severity.CRITICAL]
        if critical and not manual:
            return self._react(e, critical), ["a critical check failed"]
        if changed is not None:
            return changed, []
        planned = self._warnings(e, acting)
        if planned is not None:
            return planned, []
        if status is RolloutStatus.ROLLED_BACK:
            cooldown = self._cooldown_note(e)
            return None, [
                f"rolled back: {rollout.reason}; "
                + (
                    cooldown.removeprefix("; ")
                    if cooldown
                    else "`retry` resumes promotion, `promote` moves on now"
                )
            ]
        blockers = self._gate(e)
        following = e.next_step
        index = rollout.step + 1
        approval_missing = following is not None and not approved(following, rollout, index)
        closed = self._window_closed(e, index)
        unaudited = self._unaudited(e, index)
        if blockers:
            return None, blockers + (
                [_waiting_for_approval(plan, rollout, index)] if approval_missing else []
            ) + unaudited + ([closed] if closed else [])
        if approval_missing:
            assert following is not None
            notes = dict(rollout.notes)
            waiting = _waiting_for_approval(plan, rollout, index)
            if notes.get("approval_requested") == index:
                return None, [waiting, *unaudited]
            notes["approval_requested"] = index
            return (
                _Planned(
                    "approval_needed",
                    f"{step_label(plan, rollout.step)} passed its gate; {waiting}:"
                    f" cutover rollout approve {rollout.migration} --by WHO --reason ...",
                    rollout=rollout.evolve(notes=notes),
                ),
                [waiting, *unaudited],
            )
        if unaudited:
            return None, unaudited  # the audit is given by a command, like an approval
        if closed:
            return None, [closed]  # nothing is recorded while the window is closed
        if following is None:
            return (
                _Planned(
                    "complete",
                    f"{step_label(plan, rollout.step)} held"
                    f" {format_duration(max(round(e.progress.held), 1))}"
                    " with every check passing: the rollout is complete",
                    rollout=rollout.evolve(status=RolloutStatus.COMPLETED, reason="completed"),
                ),
                [],
            )
        return self._enter(e, index, "promote", self._promotion_reason(e, following)), []

    def _cooldown_note(self, e: Evaluation) -> str:
        """ "; `retry` possible from ..." while a plan's cooldown runs after a rollback."""
        possible = retry_possible_at(e.plan, e.rollout)
        if possible is None or e.now >= possible:
            return ""
        return f"; `retry` possible from {format_utc(possible)} (retry_after)"

    def _refuse_in_cooldown(self, e: Evaluation, verb: str) -> None:
        possible = retry_possible_at(e.plan, e.rollout)
        if possible is not None and e.now < possible:
            raise NotYet(
                f"the plan of {e.rollout.migration!r} waits"
                f" {format_duration(math.ceil(possible - e.now))}"
                f" more after its rollback before it is tried again (retry_after): {verb}"
                f" is possible from {format_utc(possible)}",
                possible,
            )

    def _window_closed(self, e: Evaluation, index: int) -> str | None:
        """Why step ``index`` cannot be entered now for its calendar window, or None."""
        if not 0 <= index < len(e.plan.steps) or e.plan.steps[index].window is None:
            return None
        window = e.plan.steps[index].window
        assert window is not None
        calendar = window.calendar
        opens = calendar.next_open(e.now)
        if opens <= e.now:
            return None
        return (
            f"waiting for window ({calendar.describe()}) to enter {step_label(e.plan, index)},"
            f" opens at {format_utc(opens)}"
        )

    def _gate(self, e: Evaluation) -> list[str]:
        """Everything the current step still lacks: hold, minimums, passing checks."""
        step = e.step
        if step is None:
            return []
        blockers = []
        if e.progress.hold_left > 0:
            blockers.append(
                f"hold: {format_duration(math.ceil(e.progress.hold_left))} of"
                f" {format_duration(step_hold(step, e.rollout))} left"
            )
        if e.progress.comparisons < step.min_comparisons:
            blockers.append(
                f"{e.progress.comparisons} of {step.min_comparisons} required comparisons"
            )
        if e.progress.new_calls < step.min_calls:
            blockers.append(f"{e.progress.new_calls} of {step.min_calls} required calls on new")
        for result in e.checks:
            if result.outcome is Outcome.FAIL:
                blockers.append(f"warning {result.name} fails: {result.reason}")
            elif result.outcome is Outcome.INCONCLUSIVE:
                blockers.append(f"{result.name} is inconclusive: {result.reason}")
        return blockers

    def _promotion_reason(self, e: Evaluation, following: Step) -> str:
        progress = e.progress
        done = [f"held {format_duration(max(1, round(progress.held)))}"] if e.step else []
        if progress.comparisons:
            done.append(f"{progress.comparisons} comparisons")
        passed = [r.name for r in e.checks if r.outcome is Outcome.PASS]
        if passed:
            done.append(f"{', '.join(passed)} passed")
        approval = e.rollout.approval(e.rollout.step + 1)
        if approval and approval.get("roles"):
            done.append(
                "approved by "
                + ", ".join(f"{g.get('by')} ({role})" for role, g in approval["roles"].items())
            )
        elif approval:
            done.append(f"approved by {approval.get('by')}")
        origin = e.step.label if e.step else "the start"
        return f"promoted from {origin} to {following.label}: {', '.join(done) or 'no gate'}"

    def _enter(
        self,
        e: Evaluation,
        index: int,
        kind: str,
        reason: str,
        *,
        pin_cohort: bool = True,
        **changes: Any,
    ) -> _Planned:
        """Move to step ``index``: its state, a fresh hold, and its cohort's tenants pinned to
        new when it names one (unless ``pin_cohort`` is false)."""
        step = e.plan.steps[index]
        current = e.state or State()
        notes = {
            k: v
            for k, v in e.rollout.notes.items()
            if k not in ("approval_requested", "warnings", "failing", "retried_step")
        }
        state = None if step.holds(current) and e.state is not None else step.state_from(current)
        cohort = None
        if step.cohort is not None and pin_cohort:
            cohort = self._cohort(e, step.cohort)
            if cohort.status is not CohortStatus.PROMOTED or not set(cohort.tenants) <= set(
                current.pins_new
            ):
                base = state or current
                pins_new, pins_legacy = pin_changes(base, pin_new=cohort.tenants)
                state = base.evolve(pins_new=pins_new, pins_legacy=pins_legacy)
                cohort = cohort.evolve(
                    status=CohortStatus.PROMOTED,
                    promoted_at=e.now,
                    rolled_back_at=None,
                    window=step.hold or cohort.window,  # the hold is the rollback window
                )
                reason += f"; cohort {cohort.name} ({_tenants(cohort)}) pinned to new"
            else:
                cohort = None  # already promoted and pinned: nothing to change
        return _Planned(
            kind,
            reason,
            state=state,
            cohort=cohort,
            rollout=e.rollout.evolve(
                step=index,
                step_started_at=e.now,
                status=changes.pop("status", RolloutStatus.RUNNING),
                reason=changes.pop("status_reason", reason),
                notes=changes.pop("notes", notes),
                **changes,
            ),
        )

    def _react(self, e: Evaluation, failed: Sequence[CheckResult]) -> _Planned:
        """What on_critical says to do about failed critical checks."""
        rollout, plan = e.rollout, e.plan
        why = "; ".join(f"{r.name} failed: {r.reason}" for r in failed)
        where = step_label(plan, rollout.step)
        reaction = plan.on_critical_for(rollout.step)
        if reaction is OnCritical.PAUSE:
            return _Planned(
                "pause",
                f"paused at {where}: {why}",
                rollout=rollout.evolve(status=RolloutStatus.PAUSED, reason=f"paused: {why}"),
            )
        # The plan's cooldown (retry_after) counts from this moment, kept with the rollout.
        notes = {**rollout.notes, "rolled_back": {"at": e.now, "step": rollout.step}}
        if reaction is OnCritical.PREVIOUS_STEP and rollout.step >= 1:
            back = rollout.step - 1
            planned = self._enter(
                e,
                back,
                "rollback",
                f"rolled back from {plan.steps[rollout.step].label} to {plan.steps[back].label}:"
                f" {why}",
                pin_cohort=False,  # the wave before stays as it is; this one leaves
                status=RolloutStatus.ROLLED_BACK,
                status_reason=f"{', '.join(r.name for r in failed)} failed at"
                f" {plan.steps[rollout.step].label}",
                # The failed step must be approved again before it is entered again.
                approvals=_approvals_up_to(rollout, back),
            )
            planned.rollout = planned.rollout.evolve(
                notes={**planned.rollout.notes, "rolled_back": notes["rolled_back"]}
            )
            return self._leave_cohort(e, planned)
        planned = self._to_legacy(e, "abort", f"returned to legacy from {where}: {why}")
        planned.rollout = planned.rollout.evolve(notes=notes)
        return planned

    def _unaudited(self, e: Evaluation, index: int) -> list[str]:
        """What entering step ``index`` waits for as far as its cohort's audit goes."""
        if not 0 <= index < len(e.plan.steps) or e.plan.steps[index].audit is None:
            return []
        cohort = self._cohort(e, e.plan.steps[index].cohort or "")
        waiting = audits.waiting(e.plan, e.rollout, index, cohort)
        return [waiting] if waiting else []

    def _cohort(self, e: Evaluation, name: str) -> Cohort:
        found = self.store.cohort(e.rollout.migration, name)
        if found is None:
            raise InvalidInput(
                f"the plan of {e.rollout.migration!r} names cohort {name!r}, which is not in the"
                f" store; add it with `cutover cohort add {name} --migration"
                f" {e.rollout.migration} --tenants ... --wave N`"
            )
        return found

    def _leave_cohort(self, e: Evaluation, planned: _Planned) -> _Planned:
        """Pin the current step's cohort to legacy as the rollout leaves the step backwards
        (rollback or abort); every other wave stays where it is."""
        step = e.step
        if step is None or step.cohort is None:
            return planned
        cohort = self._cohort(e, step.cohort)
        if cohort.status is not CohortStatus.PROMOTED:
            return planned
        base = planned.state or e.state or State()
        pins_new, pins_legacy = pin_changes(base, pin_legacy=cohort.tenants)
        planned.state = base.evolve(pins_new=pins_new, pins_legacy=pins_legacy)
        planned.cohort = cohort.evolve(status=CohortStatus.ROLLED_BACK, rolled_back_at=e.now)
        planned.reason += f"; cohort {cohort.name} ({_tenants(cohort)}) pinned to legacy"
        return planned

    def _to_legacy(self, e: Evaluation, kind: str, reason: str) -> _Planned:
        current = e.state or State()
        return self._leave_cohort(
            e,
            _Planned(
                kind,
                reason,
                state=None if current.mode is Mode.LEGACY else current.evolve(mode=Mode.LEGACY),
                rollout=e.rollout.evolve(
                    status=RolloutStatus.ABORTED,
                    reason=reason,
                ),
            ),
        )

    def _sustained(self, e: Evaluation) -> tuple[list[CheckResult], _Planned | None]:
        """The failures to act on, and the decision recording a sustained condition that began
        or ended on this pass, if any.

        A check with ``for`` acts once it has failed on every pass since a first failing pass
        at least that long ago. When that first failure was is kept in the rollout's notes,
        written by a ``failing`` decision, so a restarted controller goes on counting; a pass
        that finds the check anything but failing ends the condition (``recovered``).
        """
        since: dict[str, float] = dict(e.rollout.notes.get("failing", {}))
        sustained = {c.name: c.sustained for c in e.plan.checks_for(e.rollout.step)}
        acting: list[CheckResult] = []
        began: list[str] = []
        ended: list[str] = []
        for result in e.checks:
            duration = sustained.get(result.name)
            if not duration:
                if result.failed:
                    acting.append(result)
                continue
            if not result.failed:
                if result.name in since:
                    ended.append(result.name)
                    del since[result.name]
                continue
            if result.name not in since:
                began.append(
                    f"{result.name} fails: {result.reason}; acts if it fails on every pass for"
                    f" {format_duration(duration)}"
                )
                since[result.name] = e.now
            elif e.now - since[result.name] >= duration:
                acting.append(result)
        if not began and not ended:
            return acting, None
        notes = {**e.rollout.notes, "failing": since}
        where = step_label(e.plan, e.rollout.step)
        if began:
            kind = "failing"
            reason = f"at {where}: {'; '.join(began)}"
            if ended:
                reason += f"; no longer failing: {', '.join(ended)}"
        else:
            kind = "recovered"
            reason = f"at {where}: {', '.join(ended)} no longer failing; the count starts over"
        return acting, _Planned(kind, reason, rollout=e.rollout.evolve(notes=notes))

    def _warnings(self, e: Evaluation, acting: Sequence[CheckResult]) -> _Planned | None:
        """A decision when the set of failing warnings changes (promotion holds while any do)."""
        known = set(e.rollout.notes.get("warnings", []))
        manual = e.plan.on_critical_for(e.rollout.step) is OnCritical.NONE
        warnings = [r for r in e.checks if manual or r.severity == Severity.WARNING]
        failing = {r.name for r in acting}
        started = [r for r in warnings if r.name in failing and r.name not in known]
        # Cleared only by passing: a warning that turns inconclusive is still held, so a value
        # hovering at its bound does not flood the log with warnings and clearances.
        cleared = [
            r.name
            for r in warnings
            if r.name in known and r.outcome in (Outcome.PASS, Outcome.SKIPPED)
        ]
        where = step_label(e.plan, e.rollout.step)
        if started:
            notes = {**e.rollout.notes, "warnings": sorted(known | {r.name for r in started})}
            what = "; ".join(f"{r.name}: {r.reason}" for r in started)
            if any(r.severity == Severity.CRITICAL for r in started):
                what += (
                    "; on_critical is none here: a manual decision (`promote`, `pause` or `abort`)"
                )
            return _Planned(
                "warning",
                f"promotion held at {where}: {what}",
                rollout=e.rollout.evolve(notes=notes),
            )
        if cleared:
            notes = {**e.rollout.notes, "warnings": sorted(known - set(cleared))}
            return _Planned(
                "warning_cleared",
                f"warnings cleared at {where}: {', '.join(sorted(cleared))}",
                rollout=e.rollout.evolve(notes=notes),
            )
        return None

    # -- the loop --------------------------------------------------------------------------

    def tick(self, names: Iterable[str] | None = None) -> list[Decision]:
        """One pass over every active rollout (or those named): the decisions taken. Only the
        holder of the lease acts (it is renewed, or taken when free, first); the others do
        nothing and are ``standby``. With ``dry_run`` nothing is written, no lease is taken,
        and the decisions returned have id 0."""
        if not self.dry_run and not self._lead():
            return []
        wanted = None if names is None else set(names)
        if not self.dry_run:
            self._beat()
        rollouts = self.store.rollouts()
        states = self.store.states()
        self.queries += 2
        active = {
            name: rollout
            for name, rollout in rollouts.items()
            if (wanted is None or name in wanted) and rollout.status.active
        }
        gathered = self._gather(self._plans_of(active), self.clock())
        if wanted is None:  # the totals of rollouts no longer active are not needed again
            self._totals = {name: kept for name, kept in self._totals.items() if name in active}
            self._histograms = {n: kept for n, kept in self._histograms.items() if n in active}
        taken = []
        for name, rollout in active.items():
            if not self.dry_run and self._renewal_due() and not self._lead():
                break  # a pass longer than a third of the lease lost it: act no further
            try:
                evaluation = self.evaluate(
                    name, rollout=rollout, state=states.get(name), gathered=gathered.get(name)
                )
                if evaluation.planned is not None:
                    taken.append(
                        self._record(evaluation, evaluation.planned, self.actor, self._fence)
                    )
            except LeaseLost as error:
                self._stand_by(error)
                break
            except ConflictError as error:
                log.info(
                    "cutover: %s changed while the controller decided; next tick: %s", name, error
                )
            except StoreError:
                raise
            except CutoverError as error:
                log.warning("cutover cannot carry out the rollout of %s: %s", name, error)
            except Exception:  # one broken rollout must not stop the others
                log.exception("cutover: the rollout of %s failed unexpectedly", name)
        return taken

    def _lead(self) -> bool:
        """Renew the lease, or take it when it is free: whether this controller leads now. Logs
        when it starts or stops leading; StoreError when the store cannot tell."""
        was = self._fence
        if self._lease.held():
            self._renewed = time.monotonic()
            self._fence = self._lease.fence()
            assert self._fence is not None
            if was is None or was.term != self._fence.term:
                log.info(
                    "cutover controller %s took the lease on this store (term %d, lasting %s);"
                    " acting",
                    self._lease.holder,
                    self._fence.term,
                    format_duration(self._lease.duration),
                )
            self.standby = False
            return True
        self._fence = None
        seen = self._lease.seen
        other = f" ({seen[0]}, term {seen[1]})" if seen else ""
        if was is not None:
            log.warning(
                "cutover controller %s lost the lease of term %d to another controller%s;"
                " standing by",
                self._lease.holder,
                was.term,
                other,
            )
        elif not self.standby:
            log.info("another controller holds the lease on this store%s; standing by", other)
        self.standby = True
        return False

    def _renewal_due(self) -> bool:
        return time.monotonic() - self._renewed >= self._lease.duration / 3

    def _stand_by(self, lost: LeaseLost) -> None:
        """A write was refused because this controller's term is over: stop acting now."""
        log.warning("cutover controller %s: %s", self._lease.holder, lost)
        self._fence = None
        self.standby = True

    def _beat(self) -> None:
        """Tell the store this controller is ticking: ``/healthz`` reports the lag from it."""
        now = self.clock()
        self.store.heartbeat(
            InstanceInfo(
                instance=self._instance,
                host=socket.gethostname(),
                pid=os.getpid(),
                started_at=self._started_at,
                last_seen=now,
                info={"role": CONTROLLER, "ticked_at": now, "interval": self.interval},
            )
        )

    def run(
        self,
        interval: float = 10.0,
        stop: threading.Event | None = None,
        on_tick: Callable[[list[Decision]], None] | None = None,
        sleep: Callable[[float], Any] | None = None,
    ) -> None:
        """Tick every ``interval`` seconds until ``stop`` is set, renewing the lease (or,
        standing by, trying to take it) every third of its duration in between. A store that
        fails is retried with a growing pause; the loop itself never ends on an error. The
        lease is released on the way out, so another controller takes over at once."""
        stop = stop or threading.Event()
        wait = sleep or stop.wait
        self.interval = interval
        backoff = interval
        try:
            while not stop.is_set():
                try:
                    decisions = self.tick()
                    backoff = interval
                    if on_tick is not None:
                        on_tick(decisions)
                    self._between_ticks(interval, stop, wait)
                except StoreError as error:
                    log.warning("cutover controller: %s; retrying in %gs", error, backoff)
                    wait(backoff)
                    backoff = min(backoff * 2, max(interval, 60.0))
        finally:
            self.close()

    def _between_ticks(
        self, interval: float, stop: threading.Event, wait: Callable[[float], Any]
    ) -> None:
        """Wait ``interval``, renewing the lease every third of its duration (so an interval
        longer than the lease keeps it), or trying to take it while standing by; a change of
        leader ends the wait, so a controller that takes over acts at once."""
        every = interval if self.dry_run else self._lease.duration / 3
        left = interval
        while left > 0 and not stop.is_set():
            pause = min(left, every)
            wait(pause)
            left -= pause
            if left <= 0 or stop.is_set():
                return
            leading = not self.standby
            if self._lead() is not leading:
                return

    def close(self, timeout: float = 10.0) -> None:
        """Release the lease and deliver pending notifications (waiting at most ``timeout``)."""
        if self._fence is not None:
            log.info(
                "cutover controller %s releases the lease (term %d)",
                self._lease.holder,
                self._fence.term,
            )
        self._fence = None
        self._lease.release()
        self.notifier.close(timeout)

    def _record(
        self, e: Evaluation, planned: _Planned, actor: str, fence: Fence | None = None
    ) -> Decision:
        """Write the decision, the state and the rollout in one transaction; with ``fence``
        (the controller's own decisions), only while its lease term holds."""
        rollout, after = e.rollout, planned.rollout
        evidence = {
            "rollout": {
                "plan": rollout.source,
                "from": {"status": rollout.status.value, "step": rollout.step},
                "to": {"status": after.status.value, "step": after.step},
                "step_label": step_label(e.plan, after.step),
            },
            "progress": {
                "comparisons": e.progress.comparisons,
                "new_calls": e.progress.new_calls,
                "held_seconds": e.progress.held,
            },
            "checks": [r.to_json() for r in e.checks],
            **planned.evidence,
        }
        if planned.cohort is not None:
            evidence["cohort"] = {
                "name": planned.cohort.name,
                "wave": planned.cohort.wave,
                "tenants": list(planned.cohort.tenants),
                "status": planned.cohort.status.value,
            }
        if fence is not None:  # which controller decided, under which term
            evidence["lease"] = {"holder": fence.holder, "term": fence.term}
        if self.dry_run:
            old = e.state
            decision = Decision(
                0,
                rollout.migration,
                e.now,
                actor,
                planned.reason,
                old,
                planned.state or old or State(),
                evidence,
                planned.kind,
                planned.state is not None,
            )
            log.info("cutover controller: %s", describe(decision, dry_run=True))
            return decision
        decision = self.store.commit(
            rollout.migration,
            kind=planned.kind,
            actor=actor,
            reason=planned.reason,
            at=e.now,
            evidence=evidence,
            state=planned.state,
            # Always the version read: a decision that writes no state still rests on it.
            expected_version=e.state.version if e.state else 0,
            rollout=after,
            expected_rollout=rollout.version,
            cohort=planned.cohort,
            expected_cohort=planned.cohort.version if planned.cohort else None,
            fence=fence,
        )
        # Every decision, the controller's own and operators' through it, wherever it runs
        # (`rollout run`, `cutover serve --controller`, the API's actions).
        log.info("cutover controller: %s", describe(decision))
        self._notify(e.plan, decision, after)
        return decision

    def _notify(self, plan: Plan, decision: Decision, rollout: Rollout) -> None:
        if not plan.notify:
            return
        self.notifier.send(
            plan.notify,
            {
                "event": decision.kind,
                "migration": decision.migration,
                "at": decision.at,
                "actor": decision.actor,
                "reason": decision.reason,
                "status": rollout.status.value,
                "step": rollout.step,
                "step_label": step_label(plan, rollout.step),
                "decision": decision.to_dict(),
            },
        )

    # -- operator actions ----------------------------------------------------------------

    def start(
        self,
        plan: Plan,
        *,
        actor: str,
        reason: str = "",
        source: str = "",
        replace: bool = False,
        expected_version: int | None = None,
    ) -> Decision:
        """Begin carrying out ``plan``: the first step's state is applied at once (unless it
        waits for an approval). An active rollout is replaced only with ``replace``;
        ``expected_version`` is the version of the rollout record it replaces (0 for none)."""
        plan.require_servers(source or "the plan")
        name = plan.migration
        existing = self.store.rollout(name)
        if expected_version is not None and expected_version != (
            existing.version if existing else 0
        ):
            raise ConflictError(
                name, expected_version, existing.version if existing else 0, what="rollout"
            )
        if existing is not None and existing.status.active and not replace:
            raise InvalidInput(
                f"{name!r} already has a {existing.status.value} rollout"
                f" ({step_label(parse_plan(existing.plan), existing.step)}); abort it first or"
                " replace it"
            )
        now = self.clock()
        state = self.store.state(name)
        rollout = Rollout(
            migration=name,
            plan=plan.to_json(),
            source=source or "(inline)",
            status=RolloutStatus.RUNNING,
            step=BEFORE_FIRST,
            step_started_at=now,
            started_at=now,
            started_by=actor,
            reason="started",
            version=existing.version if existing else 0,
        )
        e = Evaluation(rollout, plan, state, now, (), Progress(0, 0, 0.0, 0.0))
        for number, step in enumerate(plan.steps):
            if step.cohort is not None and self.store.cohort(name, step.cohort) is None:
                raise InvalidInput(
                    f"{source or 'the plan'}: steps[{number}].cohort: {name!r} has no cohort"
                    f" {step.cohort!r}; add it first with `cutover cohort add {step.cohort}"
                    f" --migration {name} --tenants ... --wave N`"
                )
        first = plan.steps[0]
        why = reason.strip() or f"rollout started from {rollout.source}"
        closed = self._window_closed(e, 0)
        if first.needs_approval or first.audit is not None:
            wait = "an approval" if first.needs_approval else f"an audit of cohort {first.cohort}"
            planned = _Planned(
                "start",
                f"{why}; {first.label} waits for {wait}",
                rollout=rollout.evolve(
                    notes={"approval_requested": 0} if first.needs_approval else {}
                ),
            )
        elif closed:
            planned = _Planned("start", f"{why}; {closed}", rollout=rollout)
        else:
            planned = self._enter(e, 0, "start", f"{why}; entering {first.label}")
        planned.evidence["plan"] = plan.to_json()
        return self._record(e, planned, actor)

    def _operator(
        self, name: str, verb: str, *, judge: bool = False, expected_version: int | None = None
    ) -> Evaluation:
        rollout = self.store.rollout(name)
        if rollout is None:
            if self.store.state(name) is None and name not in self.store.migrations():
                raise UnknownMigration(name)
            raise InvalidInput(
                f"{name!r} has no rollout to {verb}; start one with `cutover rollout start PLAN`"
            )
        _expect(rollout, expected_version)
        state = self.store.state(name)
        if judge:
            return self.evaluate(name, rollout=rollout, state=state)
        # Steering needs the rollout and the state only: no check is judged, so an abort
        # never waits on a slow Prometheus.
        plan = parse_plan(rollout.plan, f"the stored plan of {name!r}")
        now = self.clock()
        held = max(0.0, now - rollout.step_started_at)
        progress = Progress(0, 0, held, 0.0)
        return Evaluation(rollout, plan, state, now, (), progress)

    def promote(
        self,
        name: str,
        *,
        actor: str,
        reason: str,
        force: bool = False,
        expected_version: int | None = None,
    ) -> Decision:
        """Move to the next step now, without waiting out the hold or the minimum samples.
        Refused while a check fails or is inconclusive, unless ``force``; an approval the next
        step needs is never skipped."""
        e = self._operator(name, "promote", judge=True, expected_version=expected_version)
        rollout, plan = e.rollout, e.plan
        _need_reason(reason)
        if not rollout.status.active:
            raise InvalidInput(
                f"the rollout of {name!r} is {rollout.status.value}; `retry` walks the plan again"
            )
        index = rollout.step + 1
        unsure = [r for r in e.checks if r.outcome in (Outcome.FAIL, Outcome.INCONCLUSIVE)]
        if index >= len(plan.steps):
            if not force:
                raise InvalidInput(
                    f"{name!r} is on its last step; a forced promotion (--force, or force in the"
                    " API) marks the rollout complete now"
                )
            planned = _Planned(
                "complete",
                f"completed by {actor} at {step_label(plan, rollout.step)}: {reason.strip()}",
                rollout=rollout.evolve(status=RolloutStatus.COMPLETED, reason="completed"),
            )
            planned.evidence["forced"] = bool(unsure)
            return self._record(e, planned, actor)
        following = plan.steps[index]
        if rollout.status is RolloutStatus.ROLLED_BACK:
            self._refuse_in_cooldown(e, "promote")
        if not approved(following, rollout, index):
            raise InvalidInput(
                f"{step_label(plan, index)} needs an approval{_from_roles(plan, rollout, index)}"
                " first:"
                f" cutover rollout approve {name} --by WHO --reason ..."
            )
        if unaudited := self._unaudited(e, index):  # not even forced: it judges the data
            raise InvalidInput(f"{step_label(plan, index)} is {unaudited[0]}")
        closed = self._window_closed(e, index)
        if closed and not force:
            raise InvalidInput(
                f"{closed}; wait, or promote outside the window (--force, or force in the API)"
            )
        if unsure and not force:
            first = unsure[0]
            raise InvalidInput(
                f"{first.name} is {first.outcome.value} ({first.reason}); wait, or force the"
                " promotion past the checks (--force, or force in the API)"
            )
        past = [r.name for r in unsure] + (["window"] if closed else [])
        forced = " (forced past: " + "; ".join(past) + ")" if past else ""
        planned = self._enter(
            e,
            index,
            "promote",
            f"promoted by {actor} from {e.step.label if e.step else 'the start'} to"
            f" {following.label}: {reason.strip()}{forced}",
        )
        planned.evidence["forced"] = bool(past)
        return self._record(e, planned, actor)

    def pause(
        self, name: str, *, actor: str, reason: str, expected_version: int | None = None
    ) -> Decision:
        e = self._operator(name, "pause", expected_version=expected_version)
        _need_reason(reason)
        if (
            e.rollout.status is not RolloutStatus.RUNNING
            and e.rollout.status is not RolloutStatus.ROLLED_BACK
        ):
            raise InvalidInput(f"the rollout of {name!r} is {e.rollout.status.value}, not running")
        text = f"paused by {actor}: {reason.strip()}"
        planned = _Planned(
            "pause", text, rollout=e.rollout.evolve(status=RolloutStatus.PAUSED, reason=text)
        )
        return self._record(e, planned, actor)

    def resume(
        self, name: str, *, actor: str, reason: str = "", expected_version: int | None = None
    ) -> Decision:
        """Hand a paused or rolled-back rollout back to the controller; the step's state is
        re-applied if someone changed it meanwhile."""
        e = self._operator(name, "resume", expected_version=expected_version)
        status = e.rollout.status
        if status not in (RolloutStatus.PAUSED, RolloutStatus.ROLLED_BACK):
            raise InvalidInput(
                f"the rollout of {name!r} is {status.value};"
                " only a paused or rolled-back one resumes"
            )
        if status is RolloutStatus.ROLLED_BACK:
            self._refuse_in_cooldown(e, "resume")
        why = reason.strip() or "resumed"
        text = f"resumed by {actor}: {why}"
        step = e.step
        current = e.state or State()
        state = None
        if step is not None and not step.holds(current):
            state = step.state_from(current)
            text += f"; {step.label} re-applied"
        planned = _Planned(
            "resume",
            text,
            state=state,
            rollout=e.rollout.evolve(
                status=RolloutStatus.RUNNING,
                reason=text,
                # A rolled-back step is held afresh before the failed one is tried again.
                step_started_at=e.now
                if status is RolloutStatus.ROLLED_BACK or state
                else e.rollout.step_started_at,
                # No pass judged anything while paused: sustained conditions count afresh.
                notes={k: v for k, v in e.rollout.notes.items() if k != "failing"},
            ),
        )
        return self._record(e, planned, actor)

    def approve(
        self,
        name: str,
        *,
        by: str,
        reason: str,
        step: int | None = None,
        role: str | None = None,
        token_roles: Iterable[str] | None = None,
        expected_version: int | None = None,
    ) -> Decision:
        """Approve entering a step that asks for it (the next one waiting, unless ``step``, a
        1-based step number, says which); the controller promotes once the gate passes.

        A step that asks for roles takes one approval per role: ``role`` names it. With
        ``token_roles`` (the roles of the API token that approves) the role must be one of
        them, and may be left out when only one of them is still missing; without, the role
        is as the approver claims, and the decision says so."""
        e = self._operator(name, "approve", expected_version=expected_version)
        rollout, plan = e.rollout, e.plan
        _need_reason(reason)
        if not by.strip():
            raise InvalidInput("say who approves with --by NAME")
        if rollout.status is RolloutStatus.COMPLETED:
            raise InvalidInput(f"the rollout of {name!r} is completed; nothing to approve")
        # An aborted rollout is retried from its start: any of its steps may be approved ahead.
        after = BEFORE_FIRST if rollout.status is RolloutStatus.ABORTED else rollout.step
        waiting = [
            index
            for index, candidate in enumerate(plan.steps)
            if index > after and not approved(candidate, rollout, index)
        ]
        index = _waiting_step(e, waiting, step, "an approval")
        rule = plan.steps[index].approval_rule
        if (
            rule.distinct_from_starter or rule.roles or self.four_eyes
        ) and by.strip() == rollout.started_by:
            raise InvalidInput(
                f"{step_label(plan, index)} must be approved by someone other than"
                f" {rollout.started_by}, who started the rollout"
            )
        given: dict[str, Any] = {"by": by.strip(), "reason": reason.strip(), "at": e.now}
        text = f"{by.strip()} approved {step_label(plan, index)}: {reason.strip()}"
        if rule.roles:
            given, text = self._role_approval(
                plan, rollout, index, given, role, None if token_roles is None else token_roles
            )
        elif role is not None:
            raise InvalidInput(
                f"{step_label(plan, index)} asks for no roles; approve it without a role"
            )
        approvals = {**rollout.approvals, str(index): given}
        planned = _Planned("approve", text, rollout=rollout.evolve(approvals=approvals))
        return self._record(e, planned, by.strip())

    def _role_approval(
        self,
        plan: Plan,
        rollout: Rollout,
        index: int,
        given: dict[str, Any],
        role: str | None,
        token_roles: Iterable[str] | None,
    ) -> tuple[dict[str, Any], str]:
        """The step's approvals with one more role given, and the decision's reason."""
        step = plan.steps[index]
        where = step_label(plan, index)
        missing = missing_roles(step, rollout, index)
        held = None if token_roles is None else set(token_roles)
        if role is None:
            mine = [r for r in missing if held is not None and r in held]
            if len(mine) != 1:
                raise InvalidInput(
                    f"{where} waits for an approval from {', '.join(missing)}; say which role"
                    " this approval is for (--role ROLE, or role in the API)"
                )
            role = mine[0]
        if role not in step.approval_rule.roles:
            raise InvalidInput(
                f"{where} asks for approvals from {', '.join(step.approval_rule.roles)}, not"
                f" {role!r}; give one of those roles"
            )
        if role not in missing:
            raise InvalidInput(f"{where} already has its {role} approval; nothing to add")
        if held is not None and role not in held:
            raise InvalidInput(
                f"the token of {given['by']} has no {role!r} role"
                f" (its roles: {', '.join(sorted(held)) or 'none'}); approve with a token of"
                " that role"
            )
        roles = dict((rollout.approval(index) or {}).get("roles") or {})
        twice = [r for r, g in roles.items() if g.get("by") == given["by"]]
        if twice:
            raise InvalidInput(
                f"{given['by']} already approved {where} as {twice[0]}; each role's approval"
                " comes from a different person"
            )
        claimed = held is None
        roles[role] = {**given, "claimed": claimed}
        left = [r for r in missing if r != role]
        how = "as claimed by the approver" if claimed else "from the token"
        text = f"{given['by']} approved {where} as {role} ({how}): {given['reason']}; " + (
            f"still waiting for {', '.join(left)}" if left else "every role has approved"
        )
        return {**given, "role": role, "roles": roles}, text

    def audit(
        self,
        name: str,
        report: Mapping[str, Any] | str | os.PathLike[str],
        *,
        by: str,
        reason: str = "",
        step: int | None = None,
        expected_version: int | None = None,
    ) -> Decision:
        """Give the audit report (its JSON, or the path of the file ``cutover audit --json``
        wrote) that a cohort step waits for: the next one waiting, unless ``step`` (1-based)
        says which. Refused when a tenant of the step's cohort has more drift than its
        ``audit.max_drift``; a report that passes is kept with the rollout, counts per tenant
        and all, and holds until the cohort is rolled back."""
        e = self._operator(name, "audit", expected_version=expected_version)
        rollout, plan = e.rollout, e.plan
        if not by.strip():
            raise InvalidInput("say who gives the audit with --by NAME")
        if rollout.status is RolloutStatus.COMPLETED:
            raise InvalidInput(f"the rollout of {name!r} is completed; no step waits for an audit")
        after = BEFORE_FIRST if rollout.status is RolloutStatus.ABORTED else rollout.step
        waiting = [i for i in range(after + 1, len(plan.steps)) if self._unaudited(e, i)]
        index = _waiting_step(e, waiting, step, "an audit")
        cohort = self._cohort(e, plan.steps[index].cohort or "")
        evidence = audits.judge(plan, index, cohort, report, e.now)
        accepted = {**evidence, "by": by.strip(), "reason": reason.strip(), "at": e.now}
        kept = {**(rollout.notes.get(audits.NOTE) or {}), str(index): accepted}
        worst = max((row["drift"] for row in evidence["tenants"].values()), default=0)
        text = (
            f"{by.strip()} gave the audit of cohort {cohort.name} for {step_label(plan, index)}:"
            f" {_tenants(cohort)}, at most {worst} rows of drift each"
            f" ({evidence['max_drift']} allowed)"
        ) + (f": {reason.strip()}" if reason.strip() else "")
        planned = _Planned(
            "audit", text, rollout=rollout.evolve(notes={**rollout.notes, audits.NOTE: kept})
        )
        planned.evidence["audit"] = accepted
        return self._record(e, planned, by.strip())

    def abort(
        self, name: str, *, actor: str, reason: str, expected_version: int | None = None
    ) -> Decision:
        """Return to legacy now and stop the rollout (any status but aborted)."""
        e = self._operator(name, "abort", expected_version=expected_version)
        _need_reason(reason)
        if e.rollout.status is RolloutStatus.ABORTED:
            raise InvalidInput(
                f"the rollout of {name!r} is already aborted; `retry` starts it again"
            )
        return self._record(
            e, self._to_legacy(e, "abort", f"aborted by {actor}: {reason.strip()}"), actor
        )

    def retry(
        self,
        name: str,
        *,
        actor: str,
        reason: str = "",
        step: int | None = None,
        expected_version: int | None = None,
    ) -> Decision:
        """Walk the plan again: an aborted rollout from its first step (or ``step``, 1-based);
        a rolled-back or paused one from the step it is on, with a fresh hold."""
        e = self._operator(name, "retry", expected_version=expected_version)
        rollout, plan = e.rollout, e.plan
        if rollout.status is RolloutStatus.RUNNING or rollout.status is RolloutStatus.COMPLETED:
            raise InvalidInput(
                f"the rollout of {name!r} is {rollout.status.value}; retry applies to aborted,"
                " rolled-back and paused rollouts"
            )
        if step is not None and not 1 <= step <= len(plan.steps):
            raise InvalidInput(f"step must be from 1 to {len(plan.steps)}, got {step}")
        self._refuse_in_cooldown(e, "retry")
        if step is not None:
            index = step - 1
        elif rollout.status is RolloutStatus.ABORTED:
            index = 0
        else:
            index = max(rollout.step, 0)
        target = plan.steps[index]
        if not approved(target, rollout, index) and index != rollout.step:
            raise InvalidInput(
                f"{step_label(plan, index)} needs an approval{_from_roles(plan, rollout, index)}"
                " first:"
                f" cutover rollout approve {name} --step {index + 1} --by WHO --reason ..."
            )
        if unaudited := self._unaudited(e, index):
            raise InvalidInput(f"{step_label(plan, index)} is {unaudited[0]}")
        why = reason.strip() or "retry"
        planned = self._enter(
            e,
            index,
            "retry",
            f"retried by {actor} at {target.label}: {why}",
            # Baselines describe the time before the rollout began, which a retry leaves as it
            # was; the step it enters holds its hold_on_retry.
            notes={
                **{k: v for k, v in rollout.notes.items() if k in ("baselines", audits.NOTE)},
                "retried_step": index,
            },
            approvals=_approvals_up_to(rollout, index),  # the steps ahead are approved again
        )
        return self._record(e, planned, actor)


def step_hold(step: Step, rollout: Rollout) -> float:
    """The current step's hold: ``hold_on_retry`` when a retry entered it."""
    return step.hold_for(rollout.notes.get("retried_step") == rollout.step)


def _tenants(cohort: Cohort) -> str:
    count = len(cohort.tenants)
    return f"{count} tenant{'' if count == 1 else 's'}"


_Key = tuple[tuple[int, ...], ...]
RECENT = 120.0
"""Seconds: the windows that began this recently have their histograms read on every pass."""


def _key(arms: Mapping[Arm, w.ArmCounts]) -> _Key:
    """A window's counters, both arms: equal keys, equal histograms (see Controller._series)."""
    return tuple(tuple(arms[arm].counts) if arm in arms else () for arm in Arm)


def _sum(first: w.ArmCounts, second: w.ArmCounts) -> w.ArmCounts:
    """A new total of two spans: the cached one is shared with evaluations already returned."""
    total = w.ArmCounts()
    total.add(first)
    total.add(second)
    return total


def _waiting_step(e: Evaluation, waiting: list[int], step: int | None, what: str) -> int:
    """The index of the step an approval or audit is for: ``step`` (1-based) when given, which
    must be one of ``waiting``, else the first of them."""
    plan = e.plan
    if step is None:
        if not waiting:
            raise InvalidInput(f"no step of the plan for {e.rollout.migration!r} waits for {what}")
        return waiting[0]
    index = step - 1
    if not 0 <= index < len(plan.steps):
        raise InvalidInput(f"step must be from 1 to {len(plan.steps)}, got {step}")
    if index not in waiting:
        raise InvalidInput(
            f"{step_label(plan, index)} does not wait for {what}"
            f" (steps waiting: {', '.join(str(i + 1) for i in waiting) or 'none'})"
        )
    return index


def _approvals_up_to(rollout: Rollout, index: int) -> dict[str, Any]:
    """The approvals of steps up to ``index``: those ahead of it must be given again."""
    return {step: given for step, given in rollout.approvals.items() if int(step) <= index}


def _expect(rollout: Rollout, expected_version: int | None) -> None:
    """Refuse an action taken on a rollout record older than the stored one."""
    if expected_version is not None and expected_version != rollout.version:
        raise ConflictError(
            rollout.migration,
            expected_version,
            rollout.version,
            what="rollout",
        )


def _need_reason(reason: str) -> None:
    if not reason or not reason.strip():
        raise InvalidInput('a reason is required: say why with --reason "..."')


def _budget_reader(store: Store, name: str, plan: Plan) -> Callable[[SLO, float, float], Budget]:
    """Reads a plan's SLO budgets: from the store's windows, or from the plan's Prometheus."""
    from cutover.reports.slo import Reader, budget

    source = plan.prometheus
    url = (source.url if source else "") or os.environ.get("CUTOVER_PROMETHEUS_URL", "")
    reader = Reader(store, prometheus_url=url or None, timeout=source.timeout if source else 5.0)
    return lambda slo, since, until: budget(reader, slo, name, since, until)


def _prometheus_url(check: Check, plan: Plan) -> str:
    from cutover.telemetry import prometheus_api as prometheus

    url = plan.prometheus_url(check)
    if not url:
        raise prometheus.PrometheusError(
            f"check {check.name!r} has no Prometheus server: add prometheus: {{url: ...}} to the"
            " plan or set CUTOVER_PROMETHEUS_URL"
        )
    return url


def _prometheus_values(
    check: Check, plan: Plan, window: float, at: float | None = None
) -> list[float]:
    from cutover.telemetry import prometheus_api as prometheus

    source = plan.prometheus
    samples = prometheus.query(
        _prometheus_url(check, plan),
        prometheus.render(check.query or "", window),
        timeout=source.timeout if source else 5.0,
        headers=source.headers if source else None,
        at=at,
    )
    return [sample.value for sample in samples]


GROWTH_POINTS = 120
"""How many points a growth check's range query asks for over its window (at least 1s apart)."""


def _prometheus_range(
    check: Check, plan: Plan, since: float, until: float
) -> list[Sequence[tuple[float, float]]]:
    from cutover.telemetry import prometheus_api as prometheus

    source = plan.prometheus
    series = prometheus.query_range(
        _prometheus_url(check, plan),
        prometheus.render(check.query or "", check.window),
        start=since,
        end=until,
        step=max(1.0, (until - since) / GROWTH_POINTS),
        timeout=source.timeout if source else 5.0,
        headers=source.headers if source else None,
    )
    return [s.points for s in series]
