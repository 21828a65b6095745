"""``cutover strategies``: the write and read strategy each tenant of a data migration gets."""

from __future__ import annotations

import click
from rich.table import Table

from cutover.cli._app import Session, cli, console, json_option, pass_session, print_json
from cutover.model import Mode
from cutover.routing import env_override


@cli.command()
@click.argument("name")
@click.option("--tenant", "tenants", multiple=True, metavar="T", help="A tenant to show (repeat).")
@json_option
@pass_session
def strategies(session: Session, name: str, tenants: tuple[str, ...], as_json: bool) -> None:
    """Each tenant's write and read strategy now: the named ones, the pinned ones and every
    cohort's, as the stored state and cohorts give them (the data migration's flag matrix)."""
    from cutover.reports.documents import flag_matrix

    matrix = flag_matrix(session.store, name, tenants)
    rows, default = matrix["tenants"], matrix["others"]
    if as_json:
        print_json(matrix)
        return
    state = session.store.state(name)
    assert state is not None
    override = env_override(name)
    shown_mode = f"canary {state.percent:g}%" if state.mode is Mode.CANARY else state.mode.value
    title = f"{name} · {shown_mode} · version {state.version}"
    if override is not None:
        title += f" · forced {override.value} by the environment"
    table = Table(title=title, title_justify="left")
    for column in ("tenant", "cohort", "wave", "status", "pinned", "write", "read"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row["tenant"],
            row["cohort"] or "-",
            "-" if row["wave"] is None else str(row["wave"]),
            row["cohort_status"] or "-",
            row["pinned"] or "-",
            row["write"],
            row["read"],
        )
    console.print(table)
    console.print(default, markup=False)
