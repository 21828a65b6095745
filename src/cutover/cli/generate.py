"""``cutover generate``: Prometheus rules and a Grafana dashboard, written from one source."""

from __future__ import annotations

import click

from cutover.cli._app import Session, cli, pass_session, read_file, write_file
from cutover.reports import objectives


@cli.group()
def generate() -> None:
    """Alerts and dashboards as code, from cutover's metric names and the plans' SLOs."""


files_option = click.option(
    "--file",
    "paths",
    multiple=True,
    metavar="FILE",
    help="A plan or a file of SLOs whose SLOs to include (repeatable); the stored rollouts'"
    " plans count too.",
)
output_option = click.option(
    "--output", "-o", default=None, metavar="FILE", help="Write here instead of to stdout."
)


def _slos(session: Session, names: tuple[str, ...], paths: tuple[str, ...]) -> list:
    files = [(path, read_file(path, "--file")) for path in paths]
    return objectives.declared(session.store, names, files)


def _emit(text: str, output: str | None) -> None:
    if output is None:
        click.echo(text, nl=False)
    else:
        write_file(output, text, "--output")


@generate.command("prometheus-rules")
@click.argument("names", nargs=-1, metavar="[NAME...]")
@files_option
@output_option
@click.option(
    "--runbook-url",
    default=None,
    metavar="URL",
    help="The page the alerts' runbook_url links to, each alert at its own anchor.",
)
@click.option(
    "--interval", default=None, metavar="DURATION", help="Evaluation interval of the groups."
)
@click.option(
    "--for",
    "waits",
    multiple=True,
    metavar="ALERT=DURATION",
    help="How long an alert's condition must hold, instead of its default (repeatable).",
)
@click.option("--max-fallback-rate", type=float, default=0.01, show_default=True)
@pass_session
def prometheus_rules(
    session: Session,
    names: tuple[str, ...],
    paths: tuple[str, ...],
    output: str | None,
    runbook_url: str | None,
    interval: str | None,
    waits: tuple[str, ...],
    max_fallback_rate: float,
) -> None:
    """Recording and alerting rules: parity drift, fallbacks, new against legacy, and every
    SLO's multi-window multi-burn-rate alerts (all migrations unless NAMEs are given)."""
    from cutover.errors import InvalidInput
    from cutover.generate import rules

    if not 0 <= max_fallback_rate < 1:
        raise InvalidInput("--max-fallback-rate is a share from 0 to 1; write 1% as 0.01")
    options = rules.Options(
        max_fallback_rate=max_fallback_rate,
        runbook_url=runbook_url or rules.DEFAULT_RUNBOOK,
        interval=None if interval is None else rules.prometheus_duration(interval, "--interval"),
        for_=rules.parse_for(waits),
    )
    declared = _slos(session, names, paths)
    _emit(rules.to_yaml(rules.rules(names, declared, options)), output)


@generate.command("grafana-dashboard")
@click.argument("names", nargs=-1, metavar="[NAME...]")
@files_option
@output_option
@click.option("--title", default="Cutover Health", show_default=True)
@pass_session
def grafana_dashboard(
    session: Session,
    names: tuple[str, ...],
    paths: tuple[str, ...],
    output: str | None,
    title: str,
) -> None:
    """A Grafana dashboard: one row per migration with mode and percent, parity, both arms'
    p50/p95/p99, drift by group, fallbacks and SLO budgets."""
    import json

    from cutover.generate import dashboard

    migrations = list(names) or session.store.migrations()
    board = dashboard.dashboard(migrations, _slos(session, names, paths), title=title)
    _emit(json.dumps(board, indent=2) + "\n", output)
