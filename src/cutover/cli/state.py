"""``cutover set`` and ``cutover history``: change a state by compare-and-set, read the log."""

from __future__ import annotations

import math

import click
from rich.table import Table

from cutover import operations
from cutover.cli._app import (
    Session,
    cli,
    console,
    json_option,
    moment,
    pass_session,
    print_json,
    when,
)
from cutover.model import Mode, State, check_share


@cli.command(name="set")
@click.argument("name")
@click.option(
    "--mode",
    help="legacy, shadow, canary or new (aliases: legacy_only, "
    "refactored_primary, refactored_only).",
)
@click.option(
    "--percent",
    metavar="P",
    help="Canary share for new, 0-100 in steps of 0.01; "
    "+5 or -10 change it relative to the stored value.",
)
@click.option(
    "--sample",
    metavar="S",
    help="Share of calls (0-1) on which the other arm runs off-path to compare.",
)
@click.option("--fallback/--no-fallback", default=None, help="Serve legacy when new fails.")
@click.option("--pin-new", multiple=True, metavar="UNIT", help="Always serve this unit with new.")
@click.option("--pin-legacy", multiple=True, metavar="UNIT", help="Always serve it with legacy.")
@click.option("--unpin", multiple=True, metavar="UNIT", help="Remove a pin.")
@click.option("--reason", required=True, help="Why: recorded in the decision log.")
@click.option("--actor", default=None, help="Who (default: $CUTOVER_ACTOR, else user@host).")
@click.option(
    "--expect-version",
    type=int,
    default=None,
    help="Fail unless the stored version is this one (compare-and-set).",
)
@json_option
@pass_session
def set_command(
    session: Session,
    name: str,
    mode: str | None,
    percent: str | None,
    sample: str | None,
    fallback: bool | None,
    pin_new: tuple[str, ...],
    pin_legacy: tuple[str, ...],
    unpin: tuple[str, ...],
    reason: str,
    actor: str | None,
    expect_version: int | None,
    as_json: bool,
) -> None:
    """Change a migration's state (creating it if needed) and record the decision."""
    absolute, delta = operations.parse_percent(percent) if percent is not None else (None, None)
    change = operations.Change(
        mode=Mode.parse(mode) if mode is not None else None,
        percent=absolute,
        percent_delta=delta,
        sample=None if sample is None else _share(sample),
        fallback=fallback,
        pin_new=pin_new,
        pin_legacy=pin_legacy,
        unpin=unpin,
    )
    decision = operations.set_state(
        session.store,
        name,
        change,
        reason=reason,
        actor=actor or operations.default_actor(),
        clock=session.clock,
        expected_version=expect_version,
        evidence={"via": "cli"},
    )
    if decision is None:
        current = session.store.state(name)
        if as_json:
            print_json({"changed": False, "state": current.to_dict() if current else None})
        else:
            console.print(f"{name}: already so; nothing recorded.")
        return
    if as_json:
        print_json({"changed": True, "decision": decision.to_dict()})
        return
    new = decision.new
    console.print(
        f"{name}: {_describe(decision.old)} -> {_describe(new)}  (version {new.version},"
        f" decision {decision.id} by {decision.actor})",
        markup=False,
    )


def _share(text: str) -> float:
    return check_share(text, "--sample")


def _describe(state: State | None) -> str:
    if state is None:
        return "(none)"
    text = state.mode.value
    if state.mode is Mode.CANARY:
        text += f" {state.percent:g}%"
    if state.mode in (Mode.SHADOW, Mode.CANARY):
        text += f" sample {state.sample:g}"
    if not state.fallback:
        text += " no-fallback"
    if state.pins_new:
        text += f" pins {len(state.pins_new)} new"
    if state.pins_legacy:
        text += f" {'' if state.pins_new else 'pins '}{len(state.pins_legacy)} legacy"
    return text


@cli.command()
@click.argument("name")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 100_000))
@click.option(
    "--format",
    "form",
    type=click.Choice(["table", "markdown"]),
    default="table",
    show_default=True,
    help="markdown: the decision log for docs/cab_decision_log.md, each decision linked to its"
    " evidence and audit report.",
)
@click.option("--since", default=None, metavar="WHEN", help="Only decisions from then on.")
@click.option("--until", default=None, metavar="WHEN", help="Only decisions before then.")
@json_option
@pass_session
def history(
    session: Session,
    name: str,
    limit: int,
    form: str,
    since: str | None,
    until: str | None,
    as_json: bool,
) -> None:
    """The decision log of a migration: who changed what, when and why."""
    operations.require_known(session.store, name)
    decisions = session.store.decisions(name, limit)
    if since is not None or until is not None:
        now = session.now()
        start = -math.inf if since is None else moment(since, now, "--since")
        end = math.inf if until is None else moment(until, now, "--until")
        decisions = [d for d in decisions if start <= d.at < end]
    if form == "markdown":
        from cutover.reports.documents import decision_log
        from cutover.reports.render import markdown

        click.echo(markdown(decision_log(decisions, name)), nl=False)
        return
    if as_json:
        print_json({"migration": name, "decisions": [d.to_dict() for d in decisions]})
        return
    if not decisions:
        console.print(f"{name}: no decisions recorded yet.")
        return
    table = Table(title=f"decisions · {name}", title_justify="left")
    for column in ("#", "at", "actor", "kind", "change", "reason"):
        table.add_column(column, overflow="fold")
    for decision in decisions:
        change = (
            f"{_describe(decision.old)} -> {_describe(decision.new)} (v{decision.new.version})"
            if decision.changed
            else f"{_describe(decision.new)} (unchanged)"
        )
        table.add_row(
            str(decision.id),
            when(decision.at),
            decision.actor,
            decision.kind,
            change,
            decision.reason,
        )
    console.print(table)
