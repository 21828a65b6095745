"""``cutover strategies``: the write and read strategy each tenant of a data migration gets."""

from __future__ import annotations

import click
from rich.table import Table

from cutover.cli._app import Session, cli, console, json_option, pass_session, print_json
from cutover.errors import UnknownMigration
from cutover.model import Mode, State
from cutover.routing import env_override


def _default_line(name: str, state: State) -> str:
    """What a tenant that is neither pinned nor named gets."""
    from cutover.data.dual import strategies_for

    mode = env_override(name) or state.mode
    if mode is Mode.CANARY:
        return (
            "other tenants: mirror / compare, or mirror / prefer-new for the"
            f" {state.percent:g}% routed to new"
        )
    unpinned = state.evolve(pins_new=frozenset(), pins_legacy=frozenset())
    write, read = strategies_for(name, unpinned, "any", override=env_override(name))
    return f"other tenants: {write} / {read}"


@cli.command()
@click.argument("name")
@click.option("--tenant", "tenants", multiple=True, metavar="T", help="A tenant to show (repeat).")
@json_option
@pass_session
def strategies(session: Session, name: str, tenants: tuple[str, ...], as_json: bool) -> None:
    """Each tenant's write and read strategy now: the named ones, the pinned ones and every
    cohort's, as the stored state and cohorts give them (the data migration's flag matrix)."""
    from cutover.data.dual import strategies_for

    store = session.store
    state = store.state(name)
    if state is None:
        raise UnknownMigration(name)
    cohort_of: dict[str, tuple[str, int, str]] = {}
    for cohort in store.cohorts(name):
        for tenant in cohort.tenants:
            cohort_of[tenant] = (cohort.name, cohort.wave, str(cohort.status))
    shown = list(
        dict.fromkeys([*tenants, *sorted(cohort_of), *sorted(state.pins_new | state.pins_legacy)])
    )
    override = env_override(name)
    rows = []
    for tenant in shown:
        write, read = strategies_for(name, state, tenant, override=override)
        cohort = cohort_of.get(tenant)
        pin = "new" if tenant in state.pins_new else "legacy" if tenant in state.pins_legacy else ""
        rows.append(
            {
                "tenant": tenant,
                "cohort": None if cohort is None else cohort[0],
                "wave": None if cohort is None else cohort[1],
                "cohort_status": None if cohort is None else cohort[2],
                "pinned": pin or None,
                "write": str(write),
                "read": str(read),
            }
        )
    default = _default_line(name, state)
    if as_json:
        print_json(
            {
                "migration": name,
                "mode": state.mode.value,
                "percent": state.percent,
                "fallback": state.fallback,
                "version": state.version,
                "override": None if override is None else override.value,
                "tenants": rows,
                "others": default,
            }
        )
        return
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
