"""``cutover report``: the SLO, weekly and monthly reports, the change board's pack and its
closure report."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import click

from cutover.cli._app import Session, cli, moment, pass_session, read_file, write_file
from cutover.cli.slo import prometheus_option, slo_file_option
from cutover.errors import InvalidInput


@dataclass(frozen=True, slots=True)
class Output:
    """What every report's options ask for: the period, the form and where it goes."""

    days: float | None  # None: from the ``first`` given to period()
    since: str | None
    until: str | None
    form: str
    template: str | None
    output: str | None

    def period(self, session: Session, first: float | None = None) -> tuple[float, float]:
        """[since, until) from --days, --since and --until (until defaults to now); without
        --days or --since, from ``first`` when a report starts at the migration's beginning."""
        now = session.now()
        end = now if self.until is None else moment(self.until, now, "--until")
        if self.since is not None:
            start = moment(self.since, now, "--since")
        elif self.days is None and first is not None:
            start = first
        else:
            start = end - (self.days or 30) * 86400  # 30 days when nothing was ever decided
        if start >= end:
            raise InvalidInput("--since must be before --until (or before now)")
        return start, end

    def emit(self, data: dict[str, Any]) -> None:
        """The report as the options ask: Markdown (shipped or own template) or JSON."""
        from cutover.reports import render

        if self.form == "json":
            if self.template is not None:
                raise InvalidInput("--template shapes Markdown; remove it or drop --format json")
            text = render.as_json(data)
        else:
            own = None if self.template is None else read_file(self.template, "--template")
            text = render.markdown(data, own, self.template or "")
        if self.output is None:
            click.echo(text, nl=False)
        else:
            write_file(self.output, text, "--output")


def report_options(days: int | None) -> Callable[[Any], Any]:
    """--days, --since, --until, --format, --template and --output, given to the command as one
    ``out`` argument; ``days`` None starts the period where the command says."""

    def decorate(command: Any) -> Any:
        @functools.wraps(command)
        def gathered(*args: Any, **kwargs: Any) -> Any:
            fields = {name: kwargs.pop(name) for name in Output.__slots__}
            return command(*args, out=Output(**fields), **kwargs)

        for option in reversed(
            [
                click.option("--days", type=click.FloatRange(min=0, min_open=True), default=days,
                             show_default=days is not None,
                             help="The period: this many days to --until."),
                click.option("--since", default=None, metavar="WHEN",
                             help="Start of the period (2026-11-01, or 10d); overrides --days."),
                click.option("--until", default=None, metavar="WHEN",
                             help="End of the period (default: now)."),
                click.option("--format", "form", type=click.Choice(["markdown", "json"]),
                             default="markdown", show_default=True),
                click.option("--template", default=None, metavar="FILE",
                             help="A Jinja2 template of your own instead of the shipped one."),
                click.option("--output", "-o", default=None, metavar="FILE",
                             help="Write here instead of to stdout."),
            ]
        ):  # fmt: skip
            gathered = option(gathered)
        return gathered

    return decorate


@cli.group()
def report() -> None:
    """Reports people sign, from stored telemetry, decisions, audits and cohorts."""


@report.command("slo")
@click.argument("name")
@report_options(30)
@slo_file_option
@prometheus_option
@pass_session
def slo_report(
    session: Session, name: str, out: Output, path: str | None, prometheus_url: str | None
) -> None:
    """The SLO compliance report: each SLO's target, actual and status, its error budget over
    the period, the incidents and recommendations."""
    from cutover.cli.slo import read_objectives
    from cutover.reports.documents import slo_report as build

    found = read_objectives(session, name, path, prometheus_url)
    start, end = out.period(session)
    data = build(
        session.store, found.migration, found.slos, since=start, until=end,
        prometheus_url=found.prometheus_url,
    )  # fmt: skip
    out.emit(data)


@report.command("weekly")
@click.argument("name")
@report_options(7)
@pass_session
def weekly(session: Session, name: str, out: Output) -> None:
    """The weekly report: traffic share and its history, cumulative parity, both arms'
    performance, drifts by cause, the decisions, and what the plan does next."""
    from cutover import operations
    from cutover.reports.documents import weekly_report

    operations.require_known(session.store, name)
    start, end = out.period(session)
    out.emit(weekly_report(session.store, name, since=start, until=end))


@report.command("monthly")
@click.argument("name")
@report_options(30)
@pass_session
def monthly(session: Session, name: str, out: Output) -> None:
    """The monthly executive summary: headline status, traffic share and its history, parity,
    performance, incidents and rollbacks, the decisions that changed the state, risks and the
    next step."""
    from cutover import operations
    from cutover.reports.documents import monthly_summary

    operations.require_known(session.store, name)
    start, end = out.period(session)
    out.emit(monthly_summary(session.store, name, since=start, until=end))


@report.command("cab")
@click.argument("name")
@report_options(7)
@click.option("--audit", "audit_path", default=None, metavar="FILE",
              help="The latest `cutover audit --json` report (default: the last one a decision of"
              " the period rests on).")  # fmt: skip
@pass_session
def cab(session: Session, name: str, out: Output, audit_path: str | None) -> None:
    """The change board's pack: tenants by cohort and status, drift, the latest audit's summary
    with a link to its report, and the flag matrix of strategies per tenant."""
    from cutover.reports.documents import cab_pack, decisions_between, latest_audit

    start, end = out.period(session)
    if audit_path is None:
        audit_path = latest_audit(decisions_between(session.store, name, start, end))
    audit = None
    if audit_path is not None:
        from cutover.data.cohorts import load_audit

        audit, _ = load_audit(audit_path)
    out.emit(
        cab_pack(session.store, name, since=start, until=end, audit=audit, audit_file=audit_path)
    )


@report.command("closure")
@click.argument("name")
@report_options(None)
@pass_session
def closure(session: Session, name: str, out: Output) -> None:
    """The change board's closure report: tenants migrated, every audit, drift, incidents and
    decisions, the cohorts' rollback windows, and whether legacy can be decommissioned. The
    period starts at the migration's first decision unless --days or --since says."""
    from cutover import operations
    from cutover.reports.documents import closure_report, first_decision

    operations.require_known(session.store, name)
    start, end = out.period(session, first_decision(session.store, name))
    out.emit(closure_report(session.store, name, since=start, until=end))
