"""``cutover rollout``: start a plan, follow it, and steer it (promote, pause, approve, audit,
abort)."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click
from rich.table import Table

from cutover import operations
from cutover.cli._app import Session, cli, console, json_option, pass_session, print_json, when
from cutover.durations import format_duration
from cutover.model import Decision
from cutover.store import DEFAULT_LEASE, redact_url


@cli.group()
def rollout() -> None:
    """Carry out a rollout plan: steps, holds, checks, approvals, promotion and rollback."""


@contextmanager
def _controller(
    session: Session, *, dry_run: bool = False, lease: float = DEFAULT_LEASE
) -> Iterator[Any]:
    """A controller on the session's store; its lease is released and pending notifications go
    out before the command ends."""
    from cutover.control.controller import Controller

    controller = Controller(session.store, clock=session.clock, dry_run=dry_run, lease=lease)
    try:
        yield controller
    finally:
        controller.close()


def _actor(actor: str | None) -> str:
    return actor or operations.default_actor()


actor_option = click.option(
    "--actor", default=None, help="Who (default: $CUTOVER_ACTOR, else user@host)."
)
reason_option = click.option("--reason", required=True, help="Why: recorded in the decision log.")


def _steer_with(session: Session, as_json: bool, action: Callable[[Any], Decision]) -> None:
    """Run one steering action on a controller and print the decision it recorded."""
    with _controller(session) as controller:
        decision = action(controller)
    _done(decision, as_json)


def _done(decision: Decision, as_json: bool) -> None:
    if as_json:
        print_json({"decision": decision.to_dict()})
        return
    version = f", state version {decision.new.version}" if decision.changed else ""
    console.print(
        f"{decision.migration}: {decision.kind}: {decision.reason}"
        f"  (decision {decision.id}{version})",
        markup=False,
    )


@rollout.command()
@click.argument("plan_file", metavar="PLAN", type=click.Path(dir_okay=False))
@click.option("--reason", default="", help="Why (default: 'rollout started from PLAN').")
@click.option("--replace", is_flag=True, help="Replace an active rollout of the same migration.")
@actor_option
@json_option
@pass_session
def start(
    session: Session,
    plan_file: str,
    reason: str,
    replace: bool,
    actor: str | None,
    as_json: bool,
) -> None:
    """Validate PLAN (YAML) and start it: the first step is applied now."""
    from cutover.control.plan import load_plan

    plan = load_plan(plan_file)
    _steer_with(
        session,
        as_json,
        lambda c: c.start(
            plan, actor=_actor(actor), reason=reason, source=plan_file, replace=replace
        ),
    )


@rollout.command()
@click.argument("plan_file", metavar="PLAN", type=click.Path(dir_okay=False))
@json_option
def validate(plan_file: str, as_json: bool) -> None:
    """Check PLAN without starting it; prints the plan as cutover reads it."""
    from cutover.control.plan import load_plan

    plan = load_plan(plan_file)
    if as_json:
        print_json(plan.to_json())
        return
    console.print(f"{plan_file}: a valid plan for {plan.migration!r}", markup=False)
    for number, step in enumerate(plan.steps, 1):
        extra = []
        if step.hold:
            extra.append(f"hold {format_duration(step.hold)}")
        if step.hold_on_retry is not None:
            extra.append(f"hold {format_duration(step.hold_on_retry)} when retried")
        if step.min_comparisons:
            extra.append(f"at least {step.min_comparisons} comparisons")
        if step.min_calls:
            extra.append(f"at least {step.min_calls} calls on new")
        if step.needs_approval:
            roles = step.approval_rule.roles
            extra.append(
                f"approval from {', '.join(roles)} to enter" if roles else "approval to enter"
            )
        if step.window is not None:
            extra.append(f"entered only {step.window.calendar.describe()}")
        if step.cohort is not None:
            extra.append(f"pins cohort {step.cohort} to new")
        if step.audit is not None:
            extra.append(
                f"after an audit with at most {step.audit.max_drift} rows of drift a tenant"
            )
        console.print(f"  {number}. {step.label}  {', '.join(extra)}", markup=False)
        # The checks in force at each step, the plan's with this step's overrides and
        # additions, so a reviewer reads what will be judged where.
        for check in plan.checks_for(number - 1):
            console.print(
                f"     check {check.name} ({check.severity}):"
                f" {check.describe(check.method_in(plan))}",
                markup=False,
            )
        cooldown = plan.retry_after_for(number - 1)
        console.print(
            f"     on a critical failure: {plan.on_critical_for(number - 1).value}"
            + (f", then no retry for {format_duration(cooldown)}" if cooldown else ""),
            markup=False,
        )


@rollout.command()
@click.argument("name", required=False)
@json_option
@pass_session
def status(session: Session, name: str | None, as_json: bool) -> None:
    """Where NAME's rollout stands: step, hold, checks with their evidence, what blocks it.
    Without NAME, one line per rollout."""
    with _controller(session, dry_run=True) as controller:
        if name is None:
            rollouts = session.store.rollouts()
            evaluations = [controller.evaluate(n) for n in rollouts]
            if as_json:
                print_json({"rollouts": [e.to_json() for e in evaluations]})
                return
            _table(evaluations)
            return
        if session.store.rollout(name) is None:
            operations.require_known(session.store, name)  # unknown name: say so
        evaluation = controller.evaluate(name)
    if as_json:
        print_json(evaluation.to_json())
        return
    render(evaluation)


def _table(evaluations: list[Any]) -> None:
    if not evaluations:
        console.print("No rollouts yet: start one with `cutover rollout start PLAN`.")
        return
    table = Table(title="rollouts", title_justify="left")
    for column in ("migration", "status", "step", "since", "next"):
        table.add_column(column)
    from cutover.control.controller import step_label

    for e in evaluations:
        table.add_row(
            e.rollout.migration,
            e.rollout.status.value,
            step_label(e.plan, e.rollout.step),
            when(e.rollout.step_started_at),
            e.action or (e.blockers[0] if e.blockers else "-"),
        )
    console.print(table)


_MARK = {
    "pass": "[green]pass[/]",
    "fail": "[red]FAIL[/]",
    "inconclusive": "[yellow]inconclusive[/]",
}


def render(e: Any) -> None:
    """A rollout's evaluation as `cutover rollout status NAME` prints it."""
    from cutover.control.audits import given as given_audit
    from cutover.control.controller import missing_roles, step_hold, step_label

    r = e.rollout
    console.print(
        f"[bold]{r.migration}[/bold] · {r.status.value} · {step_label(e.plan, r.step)}"
        f" since {when(r.step_started_at)}"
    )
    console.print(
        f"plan {r.source} · started {when(r.started_at)} by {r.started_by} · rollout version"
        f" {r.version}",
        markup=False,
    )
    if r.reason:
        console.print(f"why: {r.reason}", markup=False)
    steps = []
    for index, step in enumerate(e.plan.steps):
        mark = "✓" if index < r.step else ("▶" if index == r.step else "·")
        gate = ""
        missing = missing_roles(step, r, index)
        if step.approval_rule.roles and step.needs_approval:
            gate = f" [approval: {', '.join(missing)} missing]" if missing else " [approved]"
        elif step.needs_approval:
            given = r.approval(index)
            gate = f" [approved by {given['by']}]" if given else " [approval]"
        if step.window is not None:
            gate += f" [window {step.window.calendar.describe()}]"
        if step.cohort is not None:
            gate += f" [cohort {step.cohort}]"
        if step.audit is not None:
            audited = given_audit(r, index)
            gate += f" [audited by {audited['by']}]" if audited else " [audit]"
        steps.append(f"{mark} {step.label}{gate}")
    console.print("steps: " + "  ".join(steps), markup=False)
    p = e.progress
    if e.step is not None:
        console.print(
            f"held {format_duration(max(1, round(p.held)))}"
            + (f" of {format_duration(hold)}" if (hold := step_hold(e.step, r)) else "")
            + f" · {p.comparisons} comparisons · {p.new_calls} calls on new",
            markup=False,
        )
    if e.checks:
        table = Table(title="checks", title_justify="left")
        for column in ("check", "severity", "outcome", "evidence"):
            table.add_column(column, overflow="fold")
        for result in e.checks:
            table.add_row(
                result.name,
                result.severity,
                _MARK.get(result.outcome.value, result.outcome.value),
                result.reason,
            )
        console.print(table)
    for blocker in e.blockers:
        console.print(f"waiting: {blocker}", markup=False)
    if e.action:
        console.print(f"next: {e.action}: {e.reason}", markup=False)


def _steer(command: Any) -> Any:
    """The argument and options every steering command shares."""
    return click.argument("name")(actor_option(json_option(command)))


@rollout.command()
@_steer
@reason_option
@click.option("--force", is_flag=True, help="Promote even though checks fail or are inconclusive.")
@pass_session
def promote(
    session: Session, name: str, actor: str | None, as_json: bool, reason: str, force: bool
) -> None:
    """Move to the next step now, skipping the rest of the hold."""
    _steer_with(
        session, as_json, lambda c: c.promote(name, actor=_actor(actor), reason=reason, force=force)
    )


@rollout.command()
@_steer
@reason_option
@pass_session
def pause(session: Session, name: str, actor: str | None, as_json: bool, reason: str) -> None:
    """Stop the controller acting on NAME (no promotion, no rollback) until `resume`."""
    _steer_with(session, as_json, lambda c: c.pause(name, actor=_actor(actor), reason=reason))


@rollout.command()
@_steer
@click.option("--reason", default="", help="Why: recorded in the decision log.")
@pass_session
def resume(session: Session, name: str, actor: str | None, as_json: bool, reason: str) -> None:
    """Hand a paused or rolled-back rollout back to the controller."""
    _steer_with(session, as_json, lambda c: c.resume(name, actor=_actor(actor), reason=reason))


@rollout.command()
@_steer
@click.option("--by", "by", default=None, help="Who approves (default: the actor).")
@reason_option
@click.option("--step", type=int, default=None, help="The step number to approve (1-based).")
@click.option(
    "--role",
    default=None,
    help="For a step that asks for roles: the role you approve as (recorded as claimed).",
)
@pass_session
def approve(
    session: Session,
    name: str,
    actor: str | None,
    as_json: bool,
    by: str | None,
    reason: str,
    step: int | None,
    role: str | None,
) -> None:
    """Approve entering the next step that asks for an approval."""
    _steer_with(
        session,
        as_json,
        lambda c: c.approve(name, by=by or _actor(actor), reason=reason, step=step, role=role),
    )


@rollout.command()
@_steer
@click.argument("report", metavar="FILE")
@click.option("--by", "by", default=None, help="Who gives the audit (default: the actor).")
@click.option("--reason", default="", help="Why: recorded in the decision log.")
@click.option("--step", type=int, default=None, help="The step number it is for (1-based).")
@pass_session
def audit(
    session: Session,
    name: str,
    actor: str | None,
    as_json: bool,
    report: str,
    by: str | None,
    reason: str,
    step: int | None,
) -> None:
    """Give the audit report (FILE, from `cutover audit --json`) that the next cohort step of
    NAME waits for; refused when a tenant of its cohort has more drift than the step allows."""
    _steer_with(
        session,
        as_json,
        lambda c: c.audit(name, report, by=by or _actor(actor), reason=reason, step=step),
    )


@rollout.command()
@_steer
@reason_option
@pass_session
def abort(session: Session, name: str, actor: str | None, as_json: bool, reason: str) -> None:
    """Return NAME to legacy now and stop its rollout."""
    _steer_with(session, as_json, lambda c: c.abort(name, actor=_actor(actor), reason=reason))


@rollout.command()
@_steer
@click.option("--reason", default="", help="Why: recorded in the decision log.")
@click.option("--step", type=int, default=None, help="Start again at this step (1-based).")
@pass_session
def retry(
    session: Session, name: str, actor: str | None, as_json: bool, reason: str, step: int | None
) -> None:
    """Walk the plan again: an aborted rollout from its first step, a rolled-back or paused one
    from where it stands."""
    _steer_with(
        session, as_json, lambda c: c.retry(name, actor=_actor(actor), reason=reason, step=step)
    )


@rollout.command()
@click.option(
    "--dry-run", is_flag=True, help="Evaluate and print what would be done; change nothing."
)
@json_option
@pass_session
def tick(session: Session, dry_run: bool, as_json: bool) -> None:
    """One pass of the controller over every active rollout (for cron)."""
    with _controller(session, dry_run=dry_run) as controller:
        decisions = controller.tick()
    if as_json:
        print_json({"dry_run": dry_run, "decisions": [d.to_dict() for d in decisions]})
        return
    _print_decisions(decisions, dry_run)
    if controller.standby:
        console.print("another controller holds the lease on this store; nothing done")
    elif not decisions:
        console.print("nothing to do")


def _print_decisions(decisions: list[Decision], dry_run: bool) -> None:
    from cutover.control.controller import describe

    for decision in decisions:
        console.print(f"{when(decision.at)}  {describe(decision, dry_run)}", markup=False)


lease_option = click.option(
    "--lease",
    default=format_duration(DEFAULT_LEASE),
    show_default=True,
    help="How long leadership lasts without a renewal: a frozen leader is replaced after"
    " about this much and a third (at least 1s).",
)


@rollout.command()
@click.option("--interval", default="10s", show_default=True, help="Time between passes.")
@lease_option
@click.option(
    "--dry-run", is_flag=True, help="Evaluate and print what would be done; change nothing."
)
@pass_session
def run(session: Session, interval: str, lease: str, dry_run: bool) -> None:
    """Run the controller until interrupted. Only the holder of the store's lease acts; the
    others stand by and take over when it stops renewing it, so running several is safe."""
    from cutover.durations import parse_duration

    every = parse_duration(interval, "--interval")
    lasting = parse_duration(lease, "--lease")
    # Decisions are logged by the controller itself, here as inside `cutover serve`.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stdout)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    console.print(
        f"cutover controller on {redact_url(session.store.url)}: a pass every"
        f" {format_duration(every)}{' (dry run)' if dry_run else ''}; Ctrl-C stops it",
        markup=False,
    )
    with _controller(session, dry_run=dry_run, lease=lasting) as controller:
        controller.run(every, stop)


@rollout.command()
@click.argument("plan_file", metavar="PLAN", type=click.Path(dir_okay=False))
@click.option(
    "--telemetry",
    "name",
    default=None,
    metavar="NAME",
    help="The migration whose stored telemetry is replayed (default: the plan's).",
)
@click.option(
    "--since",
    required=True,
    metavar="WHEN",
    help="Start of the replay: a duration ago (30d) or a time (2026-11-01T00:00Z).",
)
@click.option("--until", default=None, metavar="WHEN", help="End of the replay (default: now).")
@click.option(
    "--step", default="1m", show_default=True, help="Simulated time between controller passes."
)
@click.option(
    "--approve",
    type=click.Choice(["auto", "never"]),
    default="auto",
    show_default=True,
    help="auto: every approval is given as soon as it is asked for; never: none is.",
)
@click.option(
    "--store",
    "store_url",
    default=None,
    metavar="URL",
    help="The store holding the telemetry (default: cutover's --store); only read.",
)
@json_option
@pass_session
def simulate(
    session: Session,
    plan_file: str,
    name: str | None,
    since: str,
    until: str | None,
    step: str,
    approve: str,
    store_url: str | None,
    as_json: bool,
) -> None:
    """Backtest PLAN: replay stored telemetry through it and print the decisions it would have
    taken, and when. Nothing is written to the store."""
    from cutover.cli._app import moment, seconds
    from cutover.control.plan import load_plan
    from cutover.control.simulate import Approvals, open_source
    from cutover.control.simulate import simulate as backtest

    plan = load_plan(plan_file, servers=False)  # Prometheus is not asked: no server needed
    now = session.now()
    start = moment(since, now, "--since")
    end = now if until is None else moment(until, now, "--until")
    every = seconds(step, "--step")
    source = open_source(store_url or session.store_url)
    try:
        result = backtest(
            plan,
            source,
            since=start,
            until=end,
            telemetry=name,
            step=every,
            approvals=Approvals(approve),
            plan_source=plan_file,
        )
    finally:
        source.close()
    if as_json:
        print_json(result.to_json())
        return
    _print_simulation(result)


def _print_simulation(result: Any) -> None:
    console.print(
        f"backtest of {result.plan} ({result.migration!r}) on the telemetry of"
        f" {result.telemetry!r} in {result.source}",
        markup=False,
    )
    console.print(
        f"from {when(result.since)} to {when(result.until)}: {result.passes} passes, one every"
        f" {format_duration(result.step)}; {result.windows} windows replayed;"
        f" approvals: {result.approvals.value}",
        markup=False,
    )
    table = Table(title="decisions it would have taken", title_justify="left")
    for column in ("at", "decision", "step after", "recorded under", "why"):
        table.add_column(column, overflow="fold")
    for decision in result.decisions:
        table.add_row(
            when(decision.at), decision.kind, decision.step, decision.recorded, decision.reason
        )
    console.print(table)
    console.print(
        f"outcome: {result.status} at {result.where} when the replay ended,"
        f" {when(result.ended_at)}",
        markup=False,
    )
    for blocker in result.waiting:
        console.print(f"waiting: {blocker}", markup=False)
    for note in result.notes:
        console.print(f"note: {note}", markup=False)
