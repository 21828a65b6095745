"""``cutover status``: every migration's state, and what the live instances hold and override."""

from __future__ import annotations

from rich.table import Table

from cutover import operations
from cutover.cli._app import Session, cli, console, json_option, pass_session, print_json, when
from cutover.durations import format_duration
from cutover.store import redact_url


@cli.command()
@json_option
@pass_session
def status(session: Session, as_json: bool) -> None:
    """Every migration: mode, percent, sample, fallback, pins, overrides, version."""
    rows = operations.status(session.store, session.now())
    if as_json:
        print_json(
            {"store": redact_url(session.store.url), "migrations": [r.to_json() for r in rows]}
        )
        return
    if not rows:
        console.print(
            f"No migrations in {redact_url(session.store.url)} yet: declare one in code"
            " or create one with `cutover set NAME --mode shadow --reason ...`."
        )
        return
    table = Table(title=f"cutover status · {redact_url(session.store.url)}", title_justify="left")
    for column in (
        "migration",
        "mode",
        "percent",
        "sample",
        "fallback",
        "pins",
        "version",
        "updated",
        "instances",
    ):
        table.add_column(column, justify="right" if column in ("percent", "sample") else "left")
    notes = []
    for row in rows:
        state = row.state
        if state is None:
            table.add_row(row.name, "legacy*", "-", "-", "-", "-", "-", "-", _instances(row))
            notes.append(f"{row.name}: no stored state; processes run their code default (*)")
        else:
            pins = f"new:{len(state.pins_new)} legacy:{len(state.pins_legacy)}"
            table.add_row(
                row.name,
                state.mode.value,
                f"{state.effective_percent:g}%",
                f"{state.sample:g}",
                "on" if state.fallback else "off",
                pins if state.pins_new or state.pins_legacy else "-",
                str(state.version),
                f"{when(state.updated_at)} by {state.updated_by}",
                _instances(row),
            )
        notes.extend(
            f"{row.name}: forced to {forced.mode} by {forced.variable} on {forced.instance}"
            for forced in row.overrides
        )
        if row.local_override is not None:
            notes.append(
                f"{row.name}: forced to {row.local_override.value} in this shell's environment"
            )
        if row.stale:
            notes.append(f"{row.name}: {len(row.stale)} instance(s) still hold an older version")
    console.print(table)
    for note in notes:
        console.print(f"  {note}", markup=False)


def _instances(row: operations.MigrationStatus) -> str:
    if not row.instances:
        return "-"
    age = row.oldest_state_age
    fresh = "" if age is None else f", state age ≤ {format_duration(max(1, round(age)))}"
    return f"{row.instances}{fresh}"
