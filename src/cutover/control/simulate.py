"""Backtesting: a plan replayed over a migration's stored telemetry, judged pass by pass by the
real controller on a scratch store and a manual clock, never writing to the source store.

The simulation keeps one judging code path: it copies the source's windows into a temporary
SQLite store as simulated time passes (a window once the minute it counts has ended), and calls
:meth:`Controller.tick` every ``step`` seconds of simulated time, exactly as ``cutover rollout
run --interval`` would have. What it cannot replay is said in :attr:`Simulation.notes`.
"""

from __future__ import annotations

import bisect
import enum
import math
import os
import tempfile
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cutover.clock import ManualClock
from cutover.control.controller import Controller, missing_roles, step_label
from cutover.control.plan import Check, Plan, parse_plan
from cutover.durations import format_duration
from cutover.errors import InvalidInput
from cutover.model import Arm, Decision, Mode, RolloutStatus, State
from cutover.store import (
    DEFAULT_STORE,
    Cohort,
    FlushBatch,
    Store,
    normalize_url,
    open_store,
    redact_url,
)
from cutover.telemetry.windows import ArmCounts, WindowDelta

WINDOW = 60
"""Seconds one stored window counts: a window is copied once its minute has ended."""

READ_AHEAD = 86_400.0
"""Seconds of source windows read at a time: a month is read in thirty queries."""

STARTER = "backtest"
APPROVER = "backtest-approver"  # not the starter, so a four-eyes step can be approved too;
# a step that asks for roles gets one approver per role, "backtest-approver-ROLE"


class Approvals(enum.StrEnum):
    """What the simulation does when the plan waits for an approval."""

    AUTO = "auto"  # approve at once, as an approver who answers the moment they are asked
    NEVER = "never"  # nobody approves: the rollout waits there until the end


@dataclass(frozen=True, slots=True)
class SimulatedDecision:
    """One decision the plan would have taken, when, and under which recorded routing."""

    at: float
    kind: str
    actor: str
    step: str  # where the rollout stood after the decision
    reason: str
    recorded: str  # the routing the telemetry of that moment was recorded under
    checks: tuple[Mapping[str, Any], ...] = ()  # the checks that failed, with their evidence

    def to_json(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "kind": self.kind,
            "actor": self.actor,
            "step": self.step,
            "reason": self.reason,
            "recorded_under": self.recorded,
            "failed_checks": [dict(check) for check in self.checks],
        }


@dataclass(frozen=True, slots=True)
class Simulation:
    """What replaying a plan over a span of stored telemetry found."""

    migration: str  # the plan's
    telemetry: str  # the migration whose stored windows were replayed
    source: str  # the store read, its password hidden
    plan: str  # where the plan came from
    since: float
    until: float
    step: float
    approvals: Approvals
    passes: int
    windows: int  # windows copied from the source as simulated time passed
    earlier: int  # windows from before the start, copied first for the SLO budgets to read
    decisions: tuple[SimulatedDecision, ...]
    status: str
    where: str  # the step the rollout ended on
    ended_at: float
    waiting: tuple[str, ...]  # what held the rollout when the simulation ended
    skipped: tuple[str, ...]  # checks not replayed
    notes: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "migration": self.migration,
            "telemetry": self.telemetry,
            "store": self.source,
            "plan": self.plan,
            "since": self.since,
            "until": self.until,
            "step_seconds": self.step,
            "approve": self.approvals.value,
            "passes": self.passes,
            "windows": self.windows,
            "windows_before_start": self.earlier,
            "decisions": [decision.to_json() for decision in self.decisions],
            "outcome": {
                "status": self.status,
                "step": self.where,
                "at": self.ended_at,
                "waiting": list(self.waiting),
            },
            "skipped_checks": list(self.skipped),
            "notes": list(self.notes),
        }


def replayable(plan: Plan, cohorts: Collection[str] = ()) -> tuple[Plan, tuple[str, ...]]:
    """``plan`` as the simulation runs it, and the names of the checks it leaves out.

    Prometheus checks are left out (their history is not cutover's to replay, and an instant
    query answers for now, not for last month), and so are budget checks of an SLO measured by
    Prometheus, and ``notify``: a simulation sends no webhooks. A step's override of a check
    left out goes with it. A step's cohort that is not one of ``cohorts`` (the source's) is
    left out too: its pins change no telemetry already recorded. Audit gates are left out:
    an audit judges the data of its day, which no recorded telemetry holds.
    """

    def external(check: Check) -> bool:
        if check.source == "prometheus":
            return True
        return bool(check.metric and check.metric.is_budget) and (
            plan.slo_for(check).indicator.external
        )

    everywhere = [c for index in range(len(plan.steps)) for c in plan.checks_for(index)]
    skipped = sorted({c.name for c in (*plan.checks, *everywhere) if external(c)})
    data = plan.to_json()
    data["checks"] = [c for c in data.get("checks", ()) if c["name"] not in skipped]
    for step in data["steps"]:
        step["checks"] = [c for c in step.get("checks", ()) if c["name"] not in skipped]
        step.pop("audit", None)
        if step.get("cohort") not in cohorts:
            step.pop("cohort", None)
    data.pop("notify", None)
    return parse_plan(data, f"the plan of {plan.migration!r}"), tuple(skipped)


class _History:
    """The routing the source recorded over time, from its decision log: what each replayed
    window was recorded under."""

    def __init__(self, source: Store, name: str) -> None:
        decisions = [d for d in source.decisions(name, limit=1_000_000) if d.new is not None]
        decisions.sort(key=lambda d: d.at)
        self._times = [d.at for d in decisions]
        self._states = [d.new for d in decisions]

    def at(self, when: float) -> str:
        index = bisect.bisect_right(self._times, when) - 1
        return routing(self._states[index] if index >= 0 else State())


def routing(state: State) -> str:
    """A state's routing in a few words: the mode, and the share of a canary."""
    if state.mode is Mode.CANARY:
        return f"canary {state.percent:g}%"
    return state.mode.value


def _windows(
    source: Store, name: str, since: float, until: float
) -> Iterator[tuple[int, dict[Arm, ArmCounts]]]:
    """The source's windows of ``name`` that start in [since, until), oldest first, read a day
    at a time."""
    begin = since
    while begin < until:
        end = min(begin + READ_AHEAD, until)
        yield from source.series(name, begin, end, histograms_since=begin).items()
        begin = end


def _lookback(plan: Plan) -> float:
    """How far before the rollout's start the plan's checks read: an SLO's budget reads its
    whole window, the rest never reads before the step began."""
    budgets = [
        plan.slo_for(check).window
        for index in range(len(plan.steps))
        for check in plan.checks_for(index)
        if check.metric is not None and check.metric.is_budget
    ]
    return max(budgets, default=0.0)


def _copy(
    scratch: Store,
    migration: str,
    windows: Iterable[tuple[int, dict[Arm, ArmCounts]]],
    seq: int,
    at: float,
) -> int:
    """Write ``windows`` to the scratch store as one flush numbered ``seq``; how many."""
    batch = FlushBatch("backtest", seq, at, run="backtest")
    for start, arms in windows:
        batch.add_window(start, WindowDelta(migration, arms))
    if not batch.empty:
        scratch.write_flush(batch)
    return len(batch.windows)


def simulate(
    plan: Plan,
    source: Store,
    *,
    since: float,
    until: float,
    telemetry: str | None = None,
    step: float = 60.0,
    approvals: Approvals = Approvals.AUTO,
    plan_source: str = "",
) -> Simulation:
    """Replay the stored telemetry of ``telemetry`` (the plan's migration by default) from
    ``since`` to ``until`` through ``plan``: the decisions the controller would have taken,
    passing every ``step`` seconds. Reads ``source`` only."""
    name = telemetry or plan.migration
    if until <= since:
        raise InvalidInput("the end of the simulation must come after its start; move --until")
    if not 1 <= step <= until - since:
        raise InvalidInput(
            f"--step must be from 1s to the simulated span ({format_duration(until - since)});"
            f" got {format_duration(step)}"
        )
    if name not in source.migrations():
        raise InvalidInput(
            f"{redact_url(source.url)} holds no telemetry of {name!r}; name a migration it"
            " holds with --telemetry (see `cutover stats`)"
        )
    held = {cohort.name for cohort in source.cohorts(name)}
    runnable, skipped = replayable(plan, held)
    missing = sorted({s.cohort for s in plan.steps if s.cohort and s.cohort not in held})
    history = _History(source, name)
    start = since // WINDOW * WINDOW  # passes fall on the minute, as windows do
    clock = ManualClock(start)
    decisions: list[SimulatedDecision] = []

    def keep(decision: Decision) -> None:
        failed = tuple(
            {k: check[k] for k in ("name", "severity", "reason", "value", "interval", "sample")}
            for check in decision.evidence.get("checks", ())
            if check.get("outcome") == "fail"
        )
        after = decision.evidence.get("rollout", {}).get("to", {})
        decisions.append(
            SimulatedDecision(
                at=decision.at,
                kind=decision.kind,
                actor=decision.actor,
                step=_where(runnable, after.get("step"), after.get("status")),
                reason=decision.reason,
                recorded=history.at(decision.at),
                checks=failed,
            )
        )

    with tempfile.TemporaryDirectory(prefix="cutover-simulate-", dir=_memory()) as scratch_dir:
        scratch = open_store(f"sqlite:///{Path(scratch_dir) / 'simulation.db'}")
        controller = Controller(scratch, clock=clock)  # the plan's webhooks are left out
        try:
            _copy_cohorts(source, name, scratch, runnable.migration, start)
            # What an SLO's budget reads from before the rollout began, as a live store has it.
            lookback = _lookback(runnable)
            seq = before = 0
            for day in range(math.ceil(lookback / READ_AHEAD)):
                begin = start - lookback + day * READ_AHEAD
                end = min(begin + READ_AHEAD, start)
                seq += 1
                found = _windows(source, name, begin, end)
                before += _copy(scratch, runnable.migration, found, seq, start)
            keep(controller.start(runnable, actor=STARTER, reason="backtest", source=plan_source))
            pending = _windows(source, name, start, until)
            waiting: tuple[int, dict[Arm, ArmCounts]] | None = next(pending, None)
            copied = passes = 0
            held_noted: float | None = None
            while clock() + step <= until:
                now = clock.advance(step)
                ended = []
                while waiting is not None and waiting[0] + WINDOW <= now:
                    ended.append(waiting)
                    waiting = next(pending, None)
                seq += 1
                copied += _copy(scratch, runnable.migration, ended, seq, now)
                passes += 1
                taken = controller.tick()
                for decision in taken:
                    keep(decision)
                    if decision.kind == "approval_needed" and approvals is Approvals.AUTO:
                        for given in _approve(controller, runnable):
                            keep(given)
                rollout = scratch.rollout(runnable.migration)
                assert rollout is not None
                if not rollout.status.active:
                    break
                current = runnable.steps[rollout.step] if rollout.step >= 0 else None
                hold_over = current is not None and now >= rollout.step_started_at + current.hold
                if not taken and hold_over and held_noted != rollout.step_started_at:
                    # The hold is over and nothing moved: say once per step what held it.
                    held_noted = rollout.step_started_at
                    evaluation = controller.evaluate(runnable.migration)
                    # An approval the controller asked for has its own decision already.
                    blockers = [b for b in evaluation.blockers if not b.startswith("approval")]
                    if blockers and rollout.status is RolloutStatus.RUNNING:
                        decisions.append(
                            SimulatedDecision(
                                at=now,
                                kind="held",
                                actor="simulation",
                                step=step_label(runnable, rollout.step),
                                reason="the hold is over; promotion waits: " + "; ".join(blockers),
                                recorded=history.at(now),
                            )
                        )
            final = controller.evaluate(runnable.migration)
        finally:
            controller.close()
            scratch.close()
    notes = [
        "telemetry is replayed as it was recorded: each window's calls per arm are those of the"
        " routing at the time (shown as recorded under), whatever the simulated step sets."
        " Rates and latencies carry over from one routing to another; volumes do not: the calls"
        " and comparisons a step gathers, and so how soon its checks become confident, follow"
        " the recorded traffic",
        f"a pass every {format_duration(step)} of simulated time; a window is seen once the"
        " minute it counts has ended",
        {
            Approvals.AUTO: "approvals are given as soon as the controller asks for them"
            " (--approve auto); the promotion follows on the next pass",
            Approvals.NEVER: "nobody approves (--approve never): a step that needs an approval"
            " is never entered",
        }[approvals],
        "no webhook is sent; a rolled-back rollout is not retried",
    ]
    if before:
        notes.append(
            f"the SLO budgets also read the {before} windows of the"
            f" {format_duration(lookback)} before the start, as a live store has them"
        )
    if missing:
        notes.append(
            f"the store holds no cohort {', '.join(missing)} of {name!r}: the steps naming"
            " them run without their cohort (its pins would change no recorded telemetry)"
        )
    if any(s.audit is not None for s in plan.steps):
        notes.append(
            "audit gates are not replayed: a cohort step is entered as if its audit had passed"
        )
    if skipped:
        notes.append(
            f"not replayed: the checks {', '.join(skipped)}, which read Prometheus (judged as if"
            " absent)"
        )
    return Simulation(
        migration=runnable.migration,
        telemetry=name,
        source=redact_url(source.url),
        plan=plan_source,
        since=start,
        until=until,
        step=step,
        approvals=approvals,
        passes=passes,
        windows=copied,
        earlier=before,
        decisions=tuple(decisions),
        status=final.rollout.status.value,
        where=(
            "legacy"
            if final.rollout.status is RolloutStatus.ABORTED
            else step_label(runnable, final.rollout.step)
        ),
        ended_at=clock(),
        waiting=tuple(final.blockers),
        skipped=skipped,
        notes=tuple(notes),
    )


def open_source(url: str | None) -> Store:
    """The store holding the telemetry to replay (``url``, else ``$CUTOVER_STORE``, else
    ``./cutover.db``), refusing an SQLite file that does not exist rather than creating one."""
    chosen = url or os.environ.get("CUTOVER_STORE") or DEFAULT_STORE
    normalized = normalize_url(chosen)
    if normalized.startswith("sqlite:///"):
        path = normalized.removeprefix("sqlite:///").partition("?")[0]
        if not os.path.isfile(path):
            raise InvalidInput(
                f"there is no store at {path}; name the one that holds the telemetry with --store"
            )
    return open_store(chosen)


def _memory() -> str | None:
    """A directory in memory for the scratch store, where the system has one: a pass writes
    a few times, and a month of passes on a disk spends most of its time waiting for it."""
    shm = "/dev/shm"
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else None


def _where(plan: Plan, step: int | None, status: str | None) -> str:
    """Where a decision left the rollout: its step, and its status when not running."""
    if status == RolloutStatus.ABORTED.value:
        return "legacy (aborted)"
    label = "" if step is None else step_label(plan, step)
    if status in (None, RolloutStatus.RUNNING.value):
        return label
    return f"{label}, {status.replace('_', ' ')}"


def _approve(controller: Controller, plan: Plan) -> list[Decision]:
    """Approve the step the controller asked about: once, or once per role it asks for, each
    role by an approver of its own (never the starter)."""
    name = plan.migration
    rollout = controller.store.rollout(name)
    assert rollout is not None
    index = rollout.step + 1
    why = "approved by the simulation as soon as asked (--approve auto)"
    roles = missing_roles(plan.steps[index], rollout, index)
    if not roles:
        return [controller.approve(name, by=APPROVER, reason=why, step=index + 1)]
    return [
        controller.approve(name, by=f"{APPROVER}-{role}", reason=why, step=index + 1, role=role)
        for role in roles
    ]


def _copy_cohorts(source: Store, name: str, scratch: Store, migration: str, at: float) -> None:
    """The source's cohorts of ``name``, planned afresh in the scratch store, so the plan's
    cohort steps find them: the backtest starts the rollout from its beginning."""
    for cohort in source.cohorts(name):
        fresh = Cohort(
            migration=migration,
            name=cohort.name,
            wave=cohort.wave,
            tenants=cohort.tenants,
            window=cohort.window,
            created_at=at,
            created_by=STARTER,
        )
        scratch.commit(
            migration,
            kind="cohort-add",
            actor=STARTER,
            reason=f"cohort {cohort.name} copied from the store replayed",
            at=at,
            cohort=fresh,
            expected_cohort=0,
        )


__all__ = [
    "Approvals",
    "SimulatedDecision",
    "Simulation",
    "open_source",
    "replayable",
    "simulate",
]
