"""``cutover audit``: every missing, extra and changed row of a table in two databases."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from cutover.cli._app import cli, clip, console, errors, writable, write_file
from cutover.data.audit import KINDS, AuditReport, AuditSpec, audit
from cutover.errors import InvalidInput


def _names(text: str | None, what: str) -> tuple[str, ...]:
    if text is None:
        return ()
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    if not names:
        raise InvalidInput(f"{what} is empty; give column names separated by commas")
    return names


def _pairs(values: tuple[str, ...], what: str, example: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for value in values:
        for part in value.split(","):
            name, sep, other = part.partition("=")
            if not sep or not name.strip() or not other.strip():
                raise InvalidInput(f"{what} {part!r} is not NAME=VALUE; write it like {example}")
            pairs[name.strip()] = other.strip()
    return pairs


def _tolerances(values: tuple[str, ...]) -> dict[str, float]:
    tolerances: dict[str, float] = {}
    for name, text in _pairs(values, "--tolerance", "--tolerance amount=0.005").items():
        try:
            tolerances[name] = float(text)
        except ValueError:
            raise InvalidInput(
                f"--tolerance {name}={text} is not a number; write it like amount=0.005"
            ) from None
    return tolerances


@cli.command("audit")
@click.option("--source", required=True, metavar="URL", help="The database that holds the truth.")
@click.option("--target", required=True, metavar="URL", help="The database compared with it.")
@click.option("--table", required=True, help="The source table (schema.table allowed).")
@click.option("--target-table", help="The target table when its name differs.")
@click.option("--key", help="Key columns, comma-separated (default: the primary key).")
@click.option("--columns", help="Compared columns, comma-separated (default: all shared).")
@click.option("--map", "maps", multiple=True, metavar="OLD=NEW", help="A renamed column.")
@click.option("--where", help="SQL condition on both sides (source column names).")
@click.option("--target-where", help="SQL condition for the target when it differs.")
@click.option("--tenant-column", help="Count differences per value of this column.")
@click.option(
    "--tolerance", "tolerances", multiple=True, metavar="COL=AMOUNT", help="Absolute tolerance."
)
@click.option("--json", "json_path", metavar="FILE", help="Write the report as JSON ('-': stdout).")
@click.option("--fail-on-drift", is_flag=True, help="Exit 1 when any row drifted.")
@click.option(
    "--max-diffs", default=1000, show_default=True, help="Differences kept in the report."
)
@click.option("--workers", default=2, show_default=True, help="Parallel queries per database.")
@click.option("--chunk-rows", default=10_000, show_default=True, help="Rows per chunk.")
@click.option("--max-rows-per-second", type=float, help="Throttle for a busy live database.")
@click.option("--checkpoint", metavar="FILE", help="Progress file; run again to resume.")
@click.option("--quiet", is_flag=True, help="No progress bar and no summary.")
def audit_command(
    source: str,
    target: str,
    table: str,
    target_table: str | None,
    key: str | None,
    columns: str | None,
    maps: tuple[str, ...],
    where: str | None,
    target_where: str | None,
    tenant_column: str | None,
    tolerances: tuple[str, ...],
    json_path: str | None,
    fail_on_drift: bool,
    max_diffs: int,
    workers: int,
    chunk_rows: int,
    max_rows_per_second: float | None,
    checkpoint: str | None,
    quiet: bool,
) -> int:
    """Compare a table in two databases, row by row and exactly, without writing to either.

    Exit 0 when clean (or drifted without --fail-on-drift), 1 when rows drifted and
    --fail-on-drift is given, 2 on bad input. Rows that change while the audit runs are
    reported as pending, not as drift."""
    spec = AuditSpec(
        source=source,
        target=target,
        table=table,
        target_table=target_table,
        key=_names(key, "--key"),
        columns=_names(columns, "--columns"),
        column_map=_pairs(maps, "--map", "--map old_name=new_name"),
        where=where,
        target_where=target_where,
        tenant_column=tenant_column,
        tolerance=_tolerances(tolerances),
        max_diffs=max_diffs,
        workers=workers,
        chunk_rows=chunk_rows,
        max_rows_per_second=max_rows_per_second,
        checkpoint=checkpoint,
    )
    # Where the audit writes is checked before it runs, not after.
    if json_path and json_path != "-":
        writable(json_path, "--json")
    if checkpoint:
        writable(checkpoint, "--checkpoint")
    report = _run(spec, show=not quiet and errors.is_terminal)
    data = report.to_json()
    if json_path == "-":
        click.echo(json.dumps(data, indent=2))
    elif json_path:
        write_file(json_path, json.dumps(data, indent=2) + "\n", "--json")
    if not quiet and json_path != "-":
        summary(report)
    return 1 if fail_on_drift and not report.clean else 0


def _run(spec: AuditSpec, *, show: bool) -> AuditReport:
    if not show:
        return audit(spec)
    with Progress(
        TextColumn("auditing {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("chunks"),
        TimeElapsedColumn(),
        console=errors,
        transient=True,
    ) as bar:
        task = bar.add_task(spec.table, total=None)
        update: Callable[[int, int], Any] = lambda done, total: bar.update(  # noqa: E731
            task, completed=done, total=total
        )
        return audit(spec, progress=update)


def _value(value: object) -> str:
    return clip(repr(value), 200, "the --json FILE report keeps it whole")


def summary(report: AuditReport) -> None:
    """The human summary: counts, per tenant, a few examples, and the verdict."""
    source, target = report.source, report.target
    console.print(
        f"{source['table']} ({source['dialect']}, {source['rows']} rows) against"
        f" {target['table']} ({target['dialect']}, {target['rows']} rows):"
        f" {report.duration:.2f}s, {report.rows_per_second:,.0f} rows/s,"
        f" {report.chunks['differing']} of {report.chunks['total']} chunks differed"
    )
    table = Table(title_justify="left")
    for column in ("missing", "extra", "changed", "pending", "drift"):
        table.add_column(column, justify="right")
    table.add_row(*(str(report.counts[kind]) for kind in (*KINDS, "drift")))
    console.print(table)
    if report.tenants:
        tenants = Table(title="per tenant", title_justify="left")
        tenants.add_column("tenant")
        for kind in KINDS:
            tenants.add_column(kind, justify="right")
        for tenant, counts in report.tenants.items():
            tenants.add_row(tenant, *(str(counts[kind]) for kind in KINDS))
        console.print(tenants)
    shown = report.diffs[:10]
    for diff in shown:
        key = ", ".join(str(part) for part in diff.to_json()["key"])
        detail = f" ({', '.join(diff.columns)})" if diff.columns else ""
        if diff.kind == "changed" and diff.source and diff.target:
            detail += "".join(
                f"  {c}: {_value(diff.source.get(c))} -> {_value(diff.target.get(c))}"
                for c in diff.columns
            )
        console.print(f"  {diff.kind:8} key {key}{detail}", markup=False)
    more = sum(report.counts[k] for k in KINDS) - len(shown)
    if more:
        console.print(
            f"  … {more} more (the --json report keeps up to --max-diffs {report.max_diffs})",
            markup=False,
        )
    verdict = "clean" if report.clean else f"DRIFT: {report.counts['drift']} rows differ"
    console.print(verdict, style="green" if report.clean else "bold red")
    sys.stdout.flush()
