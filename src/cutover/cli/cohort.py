"""``cutover cohort``: plan tenant cohorts and move them to new in waves, or back to legacy."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table
from rich.text import Text

from cutover import operations
from cutover.cli._app import Session, cli, console, json_option, pass_session, print_json, when
from cutover.data import cohorts as library
from cutover.data.cohorts import CohortChange
from cutover.durations import format_duration, parse_duration
from cutover.errors import InvalidInput
from cutover.model import State
from cutover.store import Cohort, CohortStatus


@cli.group()
def cohort() -> None:
    """Move tenants to new in waves of named cohorts, each rolled back within its window."""


migration_option = click.option(
    "--migration", "migration", required=True, metavar="M", help="The migration the cohort is of."
)
actor_option = click.option(
    "--actor", default=None, help="Who (default: $CUTOVER_ACTOR, else user@host)."
)
reason_option = click.option("--reason", required=True, help="Why: recorded in the decision log.")
expect_option = click.option(
    "--expect-version",
    type=int,
    default=None,
    help="Fail unless the migration's stored state version is this one (compare-and-set).",
)


def _actor(actor: str | None) -> str:
    return actor or operations.default_actor()


@cohort.command()
@click.argument("name")
@migration_option
@click.option("--tenants", default="", metavar="A,B,C", help="The cohort's tenants, by comma.")
@click.option(
    "--tenants-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="A file of tenants, one per line (# starts a comment); adds to --tenants.",
)
@click.option("--wave", required=True, type=int, help="The wave: 1 moves first, then 2, ...")
@click.option(
    "--window",
    default="48h",
    show_default=True,
    metavar="DURATION",
    help="How long after its promotion the cohort may be rolled back without --force.",
)
@click.option("--reason", default="", help="Why: recorded in the decision log.")
@actor_option
@json_option
@pass_session
def add(
    session: Session,
    name: str,
    migration: str,
    tenants: str,
    tenants_file: Path | None,
    wave: int,
    window: str,
    reason: str,
    actor: str | None,
    as_json: bool,
) -> None:
    """Plan cohort NAME of a migration; its tenants move when it is promoted."""
    members = tenants.split(",")
    if tenants_file is not None:
        members.extend(_read_tenants(tenants_file))
    change = library.add(
        session.store,
        migration,
        name,
        tenants=members,
        wave=wave,
        window=parse_duration(window, "--window"),
        reason=reason,
        actor=_actor(actor),
        clock=session.clock,
    )
    _done(change, as_json)


def _read_tenants(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise InvalidInput(
            f"cannot read --tenants-file {str(path)!r} ({error}); give a text file of tenants,"
            " one per line"
        ) from None
    return [line.split("#", 1)[0] for line in text.splitlines()]


@cohort.command(name="list")
@migration_option
@json_option
@pass_session
def list_command(session: Session, migration: str, as_json: bool) -> None:
    """The cohorts of a migration by wave: status, tenants, rollback window."""
    found = library.cohorts(session.store, migration)
    if as_json:
        print_json({"migration": migration, "cohorts": [library.to_json(c) for c in found]})
        return
    if not found:
        console.print(
            f"{migration}: no cohorts yet; plan one with `cutover cohort add NAME --migration"
            f" {migration} --tenants A,B --wave 1`",
            markup=False,
        )
        return
    table = Table(title=f"cohorts · {migration}", title_justify="left")
    for column in ("wave", "cohort", "status", "tenants", "promoted", "rollback until"):
        table.add_column(column, overflow="fold")
    for c in found:
        table.add_row(
            str(c.wave),
            c.name,
            _STATUS[c.status],
            Text(_sample(c.tenants)),
            when(c.promoted_at),
            _until(c, session.now()),
        )
    console.print(table)


_STATUS = {
    CohortStatus.PLANNED: "planned",
    CohortStatus.PROMOTED: "[green]promoted[/]",
    CohortStatus.ROLLED_BACK: "[yellow]rolled-back[/]",
}


def _sample(tenants: tuple[str, ...], shown: int = 3) -> str:
    text = ", ".join(tenants[:shown])
    rest = len(tenants) - shown
    return f"{len(tenants)}: {text}" + (f", +{rest}" if rest > 0 else "")


def _until(c: Cohort, now: float) -> str:
    closes = c.rollback_until
    if closes is None:
        return "-"
    return when(closes) + (" (closed)" if now > closes else "")


@cohort.command()
@click.argument("name")
@migration_option
@json_option
@pass_session
def show(session: Session, name: str, migration: str, as_json: bool) -> None:
    """One cohort: its status, times, window, and where each of its tenants is pinned now."""
    found = library.get(session.store, migration, name)
    state = session.store.state(migration)
    if as_json:
        print_json({**library.to_json(found), "pins": _pins(found, state)})
        return
    now = session.now()
    console.print(
        Text.assemble(
            (migration, "bold"),
            f" · cohort {found.name} · wave {found.wave} · ",
            Text.from_markup(_STATUS[found.status]),
        )
    )
    console.print(
        f"planned {when(found.created_at)} by {found.created_by} · rollback window"
        f" {format_duration(found.window)} · cohort version {found.version}",
        markup=False,
    )
    if found.promoted_at is not None:
        until = f" · rollback until {_until(found, now)}" if found.rollback_until else ""
        console.print(f"promoted {when(found.promoted_at)}{until}", markup=False)
    if found.rolled_back_at is not None:
        console.print(f"rolled back {when(found.rolled_back_at)}", markup=False)
    table = Table(title=f"tenants ({len(found.tenants)})", title_justify="left")
    table.add_column("tenant", overflow="fold")
    table.add_column("pinned now")
    for tenant, pin in _pins(found, state).items():
        table.add_row(Text(tenant), pin or "-")
    console.print(table)


def _pins(found: Cohort, state: State | None) -> dict[str, str | None]:
    """Where each tenant is pinned in the migration's state now (None: not pinned)."""
    pins_new = state.pins_new if state else frozenset()
    pins_legacy = state.pins_legacy if state else frozenset()
    return {
        t: "new" if t in pins_new else "legacy" if t in pins_legacy else None for t in found.tenants
    }


@cohort.command()
@click.argument("name")
@migration_option
@click.option(
    "--audit",
    "audit",
    type=click.Path(dir_okay=False),
    default=None,
    metavar="REPORT",
    help="An audit report (cutover audit --json): refuse if a tenant drifts beyond --max-drift.",
)
@click.option(
    "--max-drift",
    type=int,
    default=None,
    metavar="N",
    help="Rows of drift (missing+extra+changed) allowed per tenant with --audit (default 0).",
)
@click.option("--force", is_flag=True, help="Promote ahead of an earlier wave not yet promoted.")
@reason_option
@actor_option
@expect_option
@json_option
@pass_session
def promote(
    session: Session,
    name: str,
    migration: str,
    audit: str | None,
    max_drift: int | None,
    force: bool,
    reason: str,
    actor: str | None,
    expect_version: int | None,
    as_json: bool,
) -> None:
    """Pin the cohort's tenants to new (one compare-and-set change) and mark it promoted."""
    if max_drift is not None and audit is None:
        raise InvalidInput("--max-drift applies to an audit report; give it with --audit FILE")
    change = library.promote(
        session.store,
        migration,
        name,
        reason=reason,
        actor=_actor(actor),
        clock=session.clock,
        audit=audit,
        max_drift=0 if max_drift is None else max_drift,
        force=force,
        expected_version=expect_version,
    )
    _done(change, as_json)


@cohort.command()
@click.argument("name")
@migration_option
@click.option("--force", is_flag=True, help="Roll back although the rollback window has closed.")
@reason_option
@actor_option
@expect_option
@json_option
@pass_session
def rollback(
    session: Session,
    name: str,
    migration: str,
    force: bool,
    reason: str,
    actor: str | None,
    expect_version: int | None,
    as_json: bool,
) -> None:
    """Pin a promoted cohort's tenants to legacy: legacy-only writes, legacy reads."""
    change = library.rollback(
        session.store,
        migration,
        name,
        reason=reason,
        actor=_actor(actor),
        clock=session.clock,
        force=force,
        expected_version=expect_version,
    )
    _done(change, as_json)


@cohort.command()
@click.argument("name")
@migration_option
@reason_option
@actor_option
@json_option
@pass_session
def remove(
    session: Session, name: str, migration: str, reason: str, actor: str | None, as_json: bool
) -> None:
    """Forget a planned or rolled-back cohort; its tenants may then join another."""
    change = library.remove(
        session.store, migration, name, reason=reason, actor=_actor(actor), clock=session.clock
    )
    _done(change, as_json)


def _done(change: CohortChange, as_json: bool) -> None:
    if as_json:
        print_json(change.to_json())
        return
    decision, after = change.decision, change.cohort
    version = f", state version {decision.new.version}" if decision.changed else ""
    console.print(f"{decision.migration}: {decision.kind}: {decision.reason}", markup=False)
    line = f"  decision {decision.id}{version}"
    if after is not None and after.rollback_until is not None:
        line += f"; rollback without --force until {when(after.rollback_until)}"
    console.print(line, markup=False)
