"""``cutover gc`` and ``cutover bucket``: retention, and where a unit lands."""

from __future__ import annotations

import click

from cutover.cli._app import Session, cli, console, json_option, pass_session, print_json, seconds
from cutover.model import Mode, State, check_percent
from cutover.routing import bucket as bucket_of
from cutover.routing import compile_route, serving_arm


@cli.command()
@click.option("--older-than", required=True, metavar="DURATION", help="e.g. 30d.")
@json_option
@pass_session
def gc(session: Session, older_than: str, as_json: bool) -> None:
    """Delete windows and drift samples older than a duration; decisions are kept forever."""
    before = session.now() - seconds(older_than, "--older-than")
    removed = session.store.gc(before)
    if as_json:
        print_json({"before": before, "removed": removed})
        return
    summary = ", ".join(f"{count} {label.replace('_', ' ')}" for label, count in removed.items())
    console.print(f"removed {summary}; decisions are never removed.", markup=False)


@cli.command()
@click.argument("name")
@click.argument("units", nargs=-1, required=True)
@click.option("--percent", default=None, metavar="P", help="Route as a canary at this percent.")
@json_option
@pass_session
def bucket(
    session: Session, name: str, units: tuple[str, ...], percent: str | None, as_json: bool
) -> None:
    """The sticky bucket (0-9999) of units, and which arm serves them now (or at --percent)."""
    state = session.store.state(name) or State()
    if percent is not None:
        state = state.evolve(mode=Mode.CANARY, percent=check_percent(percent, "--percent"))
    route = compile_route(state)
    rows = []
    for unit in units:
        pinned = unit in state.pins_new or unit in state.pins_legacy
        rows.append(
            {
                "unit": unit,
                "bucket": bucket_of(name, unit),
                "arm": serving_arm(name, route, unit).value,
                "pinned": pinned,
                "mode": state.mode.value,
                "percent": state.effective_percent,
            }
        )
    if as_json:
        print_json({"migration": name, "units": rows})
        return
    for row in rows:
        how = "pinned" if row["pinned"] else f"{row['mode']} {row['percent']:g}%"
        console.print(
            f"{name}:{row['unit']}  bucket {row['bucket']:>4}  -> {row['arm']} ({how})",
            markup=False,
        )
