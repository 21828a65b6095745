"""``cutover stats`` and ``cutover check``: a migration's health over a window, and its gate."""

from __future__ import annotations

import click
from rich.table import Table

from cutover import operations
from cutover.cli._app import (
    Session,
    cli,
    console,
    json_option,
    millis,
    pass_session,
    print_json,
    ratio,
    span,
    when,
    window_option,
)
from cutover.durations import format_duration
from cutover.stats import WINDOW_SECONDS, MigrationStats, check


@cli.command()
@click.argument("name")
@window_option()
@click.option(
    "--by",
    type=click.Choice(["route"]),
    default=None,
    help="One row per route of a service behind `cutover proxy`.",
)
@json_option
@pass_session
def stats(
    session: Session,
    name: str,
    window: str,
    since: str | None,
    until: str | None,
    by: str | None,
    as_json: bool,
) -> None:
    """Calls, errors, latency percentiles of both arms, and the drift rate over a window."""
    now = session.now()
    covered, end = span(window, since, until, now)
    if by == "route":
        routes = operations.route_stats(session.store, name, covered, now, end)
        if as_json:
            print_json({"migration": name, "routes": [row.to_json() for row in routes]})
            return
        render_routes(name, routes)
        return
    report = operations.stats(session.store, name, covered, now, end)
    if as_json:
        print_json(report.to_json())
        return
    render(report)


def render_routes(name: str, routes: list[operations.RouteStats]) -> None:
    if not routes:
        console.print(
            f"{name}: no counts per route in that span (they come from `cutover proxy`).",
            markup=False,
        )
        return
    table = Table(title=f"{name} · per route", title_justify="left")
    for column in ("route", "arm", "calls", "errors", "error rate", "timeouts", "fallbacks",
                   "p50 ms", "p95 ms", "p99 ms"):  # fmt: skip
        table.add_column(column, justify="left" if column in ("route", "arm") else "right")
    for row in routes:
        for label, arm in (("legacy", row.legacy), ("new", row.new)):
            if not arm.calls:
                continue
            table.add_row(
                row.route,
                label,
                str(arm.calls),
                str(arm.errors),
                ratio(arm.error_rate),
                str(arm.timeouts),
                str(arm.fallbacks) if label == "new" else "-",
                millis(arm.p50_ms),
                millis(arm.p95_ms),
                millis(arm.p99_ms),
            )
    console.print(table)


def _widened_much(report: MigrationStats) -> bool:
    """Whether whole windows added more than a tenth to the span asked for: worth a line."""
    assert report.requested is not None
    asked = report.requested[1] - report.requested[0]
    return (report.until - report.since) - asked > asked / 10


def render(report: MigrationStats) -> None:
    """The human table of ``cutover stats`` (also printed by the demo)."""
    title = (
        f"{report.migration} · {report.mode.value} {report.percent:g}% ·"
        f" {format_duration(report.window_seconds)} from {when(report.since)}"
        f" to {when(report.until)}"
    )
    table = Table(title=title, title_justify="left")
    for column in (
        "arm",
        "calls",
        "served",
        "errors",
        "error rate",
        "expected",
        "timeouts",
        "fallbacks",
        "p50 ms",
        "p95 ms",
        "p99 ms",
    ):
        table.add_column(column, justify="left" if column == "arm" else "right")
    for label, arm in (("legacy", report.legacy), ("new", report.new)):
        table.add_row(
            label,
            str(arm.calls),
            str(arm.served),
            str(arm.errors),
            ratio(arm.error_rate),
            str(arm.expected),
            str(arm.timeouts) if label == "new" else "-",
            str(arm.fallbacks) if label == "new" else "-",
            millis(arm.p50_ms),
            millis(arm.p95_ms),
            millis(arm.p99_ms),
        )
    console.print(table)
    if report.requested is not None and _widened_much(report):
        asked_since, asked_until = report.requested
        console.print(
            f"  widened to whole {WINDOW_SECONDS} s windows: asked for {when(asked_since)}"
            f" to {when(asked_until)}; stored windows are never split",
            markup=False,
        )
    exposures = report.legacy.exposures + report.new.exposures
    if not (report.legacy.calls or report.new.calls or exposures):
        console.print(
            f"  nothing was counted from {when(report.since)} to {when(report.until)} (UTC):"
            " pick another span with --window, or --since and --until",
            markup=False,
        )
    console.print(
        f"  comparisons {report.comparisons}  drifts {report.drifts}"
        f"  drift rate {ratio(report.drift_rate)}  off-path dropped {report.offpath_dropped}"
        f"  comparator errors {report.comparator_errors}  hook errors {report.hook_errors}",
        markup=False,
    )
    if exposures:  # flag evaluations: cutover.choose, OpenFeature, OFREP
        console.print(
            f"  exposures legacy {report.legacy.exposures}  new {report.new.exposures}"
            f"  new share {ratio(report.new.exposures / exposures)}",
            markup=False,
        )


@cli.command(name="check")
@click.argument("name")
@click.option(
    "--max-drift-rate",
    type=float,
    default=None,
    metavar="R",
    help="Fail when drifts/comparisons exceeds R (0.001 = 0.1%).",
)
@click.option(
    "--max-error-rate",
    type=float,
    default=None,
    metavar="R",
    help="Fail when the new arm's error rate exceeds R.",
)
@click.option(
    "--max-fallback-rate",
    type=float,
    default=None,
    metavar="R",
    help="Fail when the share of new-routed calls that fell back exceeds R.",
)
@click.option(
    "--max-timeout-rate",
    type=float,
    default=None,
    metavar="R",
    help="Fail when the new arm's timeout rate exceeds R.",
)
@click.option(
    "--min-comparisons",
    type=click.IntRange(0),
    default=None,
    metavar="N",
    help="Fail when fewer than N comparisons were made (too little evidence).",
)
@window_option()
@json_option
@pass_session
@click.pass_context
def check_command(
    ctx: click.Context,
    session: Session,
    name: str,
    max_drift_rate: float | None,
    max_error_rate: float | None,
    max_fallback_rate: float | None,
    max_timeout_rate: float | None,
    min_comparisons: int | None,
    window: str,
    since: str | None,
    until: str | None,
    as_json: bool,
) -> None:
    """Exit 0 when every threshold holds over the window, 1 when one is breached (for cron/CI)."""
    given = {
        "--max-drift-rate": max_drift_rate,
        "--max-error-rate": max_error_rate,
        "--max-fallback-rate": max_fallback_rate,
        "--max-timeout-rate": max_timeout_rate,
    }
    for flag, value in given.items():
        if value is not None and not 0 <= value <= 1:
            raise click.BadParameter(f"must be a share from 0 to 1, got {value}", param_hint=flag)
    if all(value is None for value in given.values()) and min_comparisons is None:
        raise click.UsageError(
            "give at least one threshold, e.g. --max-drift-rate 0.001 or --max-error-rate 0.05"
        )
    now = session.now()
    covered, end = span(window, since, until, now)
    report = operations.stats(session.store, name, covered, now, end)
    limits = check(
        report,
        max_drift_rate=max_drift_rate,
        max_error_rate=max_error_rate,
        max_fallback_rate=max_fallback_rate,
        max_timeout_rate=max_timeout_rate,
        min_comparisons=min_comparisons,
    )
    breached = [limit for limit in limits if limit.breached]
    if as_json:
        print_json(
            {
                "migration": name,
                "window_seconds": report.window_seconds,
                "ok": not breached,
                "checks": [limit.to_json() for limit in limits],
            }
        )
    else:
        for limit in limits:
            mark = "BREACHED" if limit.breached else "ok"
            console.print(f"{mark:>8}  {limit.describe()}", markup=False)
        if breached:
            console.print(
                f"{name}: {len(breached)} of {len(limits)} thresholds breached over"
                f" {format_duration(report.window_seconds)} from {when(report.since)}"
                f" to {when(report.until)}",
                markup=False,
            )
    ctx.exit(1 if breached else 0)
