"""``cutover reconcile``: make one side of an audit equal to the other, dry run first."""

from __future__ import annotations

import os

import click

from cutover.cli._app import cli, print_json
from cutover.data import reconcile as rec
from cutover.data.audit import load_report


@cli.command()
@click.argument("report", metavar="REPORT.json")
@click.option(
    "--prefer",
    type=click.Choice(rec.SIDES),
    default="source",
    show_default=True,
    help="The side whose rows win; the other side is written.",
)
@click.option("--apply", "do_apply", is_flag=True, help="Write (default: print the SQL only).")
@click.option(
    "--allow-delete",
    is_flag=True,
    help="Delete rows only the written side holds (default: keep them and report them).",
)
@click.option(
    "--batch-size",
    type=click.IntRange(1, 1_000_000),
    default=500,
    show_default=True,
    help="Statements per transaction with --apply.",
)
@click.option(
    "--undo",
    "undo_path",
    metavar="FILE",
    help="Where --apply writes the undo script first (default: REPORT.json.undo.sql).",
)
@click.option("--source", metavar="URL", help="The source URL, instead of the report's.")
@click.option("--target", metavar="URL", help="The target URL, instead of the report's.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of SQL and a summary.")
def reconcile(
    report: str,
    prefer: str,
    do_apply: bool,
    allow_delete: bool,
    batch_size: int,
    undo_path: str | None,
    source: str | None,
    target: str | None,
    as_json: bool,
) -> None:
    """Make the target equal to the source (or the reverse) for every diff of an audit report.

    Rows are re-read by key now, so the report may be old. Without --apply it prints the SQL it
    would run and writes nothing.
    """
    data = load_report(report)
    planned = rec.plan(data, prefer=prefer, allow_delete=allow_delete, source=source, target=target)
    undo = undo_path or rec.default_undo_path(report)
    result = None
    if do_apply:
        result = rec.apply(planned, batch_size=batch_size, undo_path=undo)
    if as_json:
        print_json(
            {
                "applied": do_apply,
                **planned.to_json(),
                "result": None if result is None else result.to_json(),
            }
        )
        return
    if result is None:
        _print_dry_run(planned, undo)
    else:
        _print_applied(planned, result)


def _print_dry_run(planned: rec.ReconcilePlan, undo: str) -> None:
    # Every line that is not a statement is an SQL comment, so the output runs as it is.
    click.echo(
        f"-- reconcile {planned.table} on the {planned.side} ({planned.dialect}, {planned.url})"
        f" to equal the {planned.prefer}: dry run, nothing is written"
    )
    if planned.statements:  # so that the database's own client reads values as cutover does
        for line in planned.session:
            click.echo(line)
    for statement in planned.statements:
        click.echo(statement.sql)
    counts = planned.counts
    click.echo(
        f"-- would run {_counted(counts.writes, 'statement')} on the {planned.side}:"
        f" {_counted(counts.insert, 'insert')}, {_counted(counts.update, 'update')},"
        f" {_counted(counts.delete, 'delete')}"
    )
    for line in _notes(planned):
        click.echo(f"-- {line}")
    if counts.writes and os.path.exists(undo):
        click.echo(f"-- to write: add --apply and --undo with a new file ({undo} exists)")
    elif counts.writes:
        click.echo(f"-- to write: add --apply (the undo script goes to {undo} first)")


def _print_applied(planned: rec.ReconcilePlan, result: rec.ReconcileResult) -> None:
    if planned.empty:
        click.echo(f"nothing to write on the {planned.side} ({planned.table}); no undo script")
    if result.undo_path is not None:
        written = _counted(len(planned.statements), "row")
        click.echo(f"undo script: {result.undo_path} (restores the {written} written)")
    if not planned.empty:
        line = (
            f"applied on the {planned.side} ({planned.table}): {result.inserted} inserted,"
            f" {result.updated} updated, {result.deleted} deleted"
            f" in {_counted(result.batches, 'batch', 'batches')}"
        )
        if result.not_found:
            line += f"; {_counted(result.not_found, 'row')} to update or delete had gone meanwhile"
        click.echo(line)
    for note in _notes(planned):
        click.echo(note)


def _notes(planned: rec.ReconcilePlan) -> list[str]:
    """What the plan leaves out and why, one sentence each."""
    counts = planned.counts
    notes = []
    if planned.report_diffs == 0:
        notes.append("nothing to do: the report holds no diffs")
    if counts.unchanged:
        notes.append(
            f"skipped {_counted(counts.unchanged, 'row')} that no longer"
            f" {'differs' if counts.unchanged == 1 else 'differ'}"
        )
    if counts.extra_kept:
        notes.append(
            f"kept {_counted(counts.extra_kept, 'row')} that only the {planned.side} holds;"
            f" add --allow-delete to delete {'it' if counts.extra_kept == 1 else 'them'}"
        )
    if counts.out_of_scope:
        notes.append(
            f"skipped {_counted(counts.out_of_scope, 'row')} that no longer"
            f" {'matches' if counts.out_of_scope == 1 else 'match'} the audit's where condition"
        )
    if counts.pending:
        notes.append(
            f"not reconciled: {_counted(counts.pending, 'pending diff')} (rows that changed"
            " while the audit ran); run the audit again to settle them"
        )
    if planned.truncated:
        notes.append(
            f"the report is truncated (the audit counted {planned.report_drift} diffs):"
            " after this, run the audit again to find the rest"
        )
    return notes


def _counted(count: int, singular: str, plural: str | None = None) -> str:
    return f"{count} {singular if count == 1 else plural or singular + 's'}"
