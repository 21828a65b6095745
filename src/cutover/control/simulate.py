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
import os
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cutover.clock import ManualClock
from cutover.control.controller import Controller, step_label
from cutover.control.notify import Notifier
from cutover.control.plan import Plan, parse_plan
from cutover.durations import format_duration
from cutover.errors import InvalidInput
from cutover.model import Arm, Decision, Mode, RolloutStatus, State
from cutover.store import (
    DEFAULT_STORE,
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
APPROVER = "backtest-approver"  # not the starter, so a four-eyes step can be approved too


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
    windows: int  # windows copied from the source
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


def replayable(plan: Plan) -> tuple[Plan, tuple[str, ...]]:
    """``plan`` as the simulation runs it, and the names of the checks it leaves out.

    Prometheus checks are left out (their history is not cutover's to replay, and an instant
    query answers for now, not for last month), and so is ``notify``: a simulation sends no
    webhooks. A step's override of a check left out goes with it.
    """
    data = plan.to_json()
    skipped = [c["name"] for c in data.get("checks", ()) if c.get("source") == "prometheus"]
    data["checks"] = [c for c in data.get("checks", ()) if c["name"] not in skipped]
    for step in data["steps"]:
        own = [c for c in step.get("checks", ()) if c.get("source") == "prometheus"]
        skipped += [c["name"] for c in own if c["name"] not in skipped]
        step["checks"] = [
            c for c in step.get("checks", ()) if c not in own and c["name"] not in skipped
        ]
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
    runnable, skipped = replayable(plan)
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
        from cutover.store.sql import SqlStore

        scratch = SqlStore(f"sqlite:///{Path(scratch_dir) / 'simulation.db'}")
        controller = Controller(scratch, clock=clock, notifier=Notifier())
        try:
            keep(controller.start(runnable, actor=STARTER, reason="backtest", source=plan_source))
            pending = _windows(source, name, start, until)
            waiting: tuple[int, dict[Arm, ArmCounts]] | None = next(pending, None)
            copied = passes = 0
            held_noted: float | None = None
            while clock() + step <= until:
                now = clock.advance(step)
                batch = FlushBatch("backtest", passes + 1, now, run="backtest")
                while waiting is not None and waiting[0] + WINDOW <= now:
                    batch.add_window(waiting[0], WindowDelta(runnable.migration, waiting[1]))
                    copied += 1
                    waiting = next(pending, None)
                if not batch.empty:
                    scratch.write_flush(batch)
                passes += 1
                taken = controller.tick()
                for decision in taken:
                    keep(decision)
                    if decision.kind == "approval_needed" and approvals is Approvals.AUTO:
                        keep(_approve(controller, runnable.migration))
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
    if skipped:
        notes.append(
            f"not replayed: the Prometheus checks {', '.join(skipped)} (judged as if absent)"
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


def _approve(controller: Controller, name: str) -> Decision:
    return controller.approve(
        name, by=APPROVER, reason="approved by the simulation as soon as asked (--approve auto)"
    )


__all__ = [
    "Approvals",
    "SimulatedDecision",
    "Simulation",
    "open_source",
    "replayable",
    "simulate",
]
