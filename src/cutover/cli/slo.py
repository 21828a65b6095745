"""``cutover slo``: each SLO's target, actual, status, error budget and burn rates now."""

from __future__ import annotations

import dataclasses

import click
from rich.table import Table

from cutover.cli._app import (
    Session,
    cli,
    console,
    json_option,
    pass_session,
    print_json,
    ratio,
    read_file,
    when,
)
from cutover.durations import format_duration
from cutover.reports import slo as slos
from cutover.reports.objectives import Objectives, objectives, statuses


def slo_file_option(command: object) -> object:
    return click.option(
        "--file",
        "path",
        default=None,
        metavar="FILE",
        help="A plan or a file of SLOs (default: the plan of the migration's rollout).",
    )(command)


def prometheus_option(command: object) -> object:
    return click.option(
        "--prometheus",
        "prometheus_url",
        default=None,
        metavar="URL",
        help="The Prometheus server of SLOs with good/total queries (default: the plan's,"
        " else $CUTOVER_PROMETHEUS_URL).",
    )(command)


def read_objectives(
    session: Session, name: str, path: str | None, prometheus_url: str | None
) -> Objectives:
    """The SLOs of ``name`` as the options give them."""
    text = None if path is None else read_file(path, "--file")
    found = objectives(session.store, name, text, path or "")
    if prometheus_url:
        found = dataclasses.replace(found, prometheus_url=prometheus_url)
    return found


@cli.command()
@click.argument("name")
@click.argument("slo_names", nargs=-1, metavar="[SLO...]")
@slo_file_option
@prometheus_option
@json_option
@pass_session
def slo(
    session: Session,
    name: str,
    slo_names: tuple[str, ...],
    path: str | None,
    prometheus_url: str | None,
    as_json: bool,
) -> None:
    """Each SLO of a migration: target, actual, status, error budget and burn rates."""
    found = read_objectives(session, name, path, prometheus_url)
    now = session.now()
    shown = statuses(session.store, found, now, slo_names)
    rows: list[slos.Status] = shown["slos"]
    if as_json:
        print_json({**shown, "slos": [row.to_json() for row in rows]})
        return
    table = Table(title=f"{found.migration} · SLOs at {when(now)}", title_justify="left")
    for column in ("SLO", "target", "actual", "status", "window", "remaining", "budget"):
        table.add_column(column, justify="left" if column in ("SLO", "status") else "right")
    spans = [format_duration(s) for s in slos.BURN_WINDOWS]
    for span in spans:
        table.add_column(f"burn {span}", justify="right")
    for row in rows:
        budget = row.budget
        rates = {format_duration(s): rate for s, rate in row.burn_rates}
        table.add_row(
            row.slo.name,
            ratio(row.slo.objective, 6),
            ratio(budget.actual, 6),
            budget.status,
            format_duration(row.slo.window),
            f"{budget.remaining:.1%}",
            budget.budget_status,
            *("-" if rates.get(s) is None else f"{rates[s]:.3g}x" for s in spans),
        )
    console.print(table)
