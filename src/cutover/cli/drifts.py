"""``cutover drifts``: recent drift samples with their diffs, or counts per fingerprint."""

from __future__ import annotations

import json

import click
from rich.table import Table

from cutover import operations
from cutover.cli._app import (
    Session,
    cli,
    clip,
    console,
    json_option,
    pass_session,
    print_json,
    seconds,
)
from cutover.cli._app import when as at
from cutover.telemetry.drift import DriftSample


@cli.command()
@click.argument("name")
@click.option("--group", is_flag=True, help="Count drifts per fingerprint (root cause).")
@click.option("--limit", default=10, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--since", default=None, metavar="DURATION", help="Only drifts this recent (1h, 7d).")
@click.option("--fingerprint", default=None, help="Only samples with this fingerprint.")
@json_option
@pass_session
def drifts(
    session: Session,
    name: str,
    group: bool,
    limit: int,
    since: str | None,
    fingerprint: str | None,
    as_json: bool,
) -> None:
    """Recent drift samples of a migration with their diffs, or (--group) counts per cause."""
    store = session.store
    operations.require_known(store, name)
    start = None if since is None else session.now() - seconds(since, "--since")
    if group:
        groups = store.drift_groups(name, start)[:limit]
        if as_json:
            print_json({"migration": name, "groups": [g.to_json() for g in groups]})
            return
        if not groups:
            console.print(f"{name}: no drifts{' in that span' if since else ''}.")
            return
        total = sum(g.count for g in groups)
        table = Table(title=f"drifts by root cause · {name}", title_justify="left")
        for column in ("drifts", "share", "fingerprint", "last seen", "example"):
            table.add_column(column, justify="right" if column in ("drifts", "share") else "left")
        for g in groups:
            table.add_row(
                str(g.count),
                f"{g.count / total:.0%}",
                g.fingerprint,
                at(g.last_at),
                _example(g.example),
            )
        console.print(table)
        return
    samples = store.drift_samples(name, limit, start, fingerprint)
    if as_json:
        print_json({"migration": name, "samples": [s.to_dict() for s in samples]})
        return
    if not samples:
        console.print(f"{name}: no drift samples{' in that span' if since else ''}.")
        return
    for sample in samples:
        console.print(
            f"[bold]#{sample.id}[/bold] {at(sample.at)}  unit {sample.unit or '-'}"
            f"  fingerprint {sample.fingerprint}"
        )
        console.print(f"  input   {_short(sample.input, 160)}", markup=False)
        for entry in sample.diff:
            if "path" not in entry:  # the diff itself was cut to the size cap: its preview
                console.print(f"  diff    {_short(entry.get('preview'), 160)}", markup=False)
                continue
            console.print(
                f"  {entry.get('path')}: legacy {_short(entry.get('legacy'))}"
                f"  new {_short(entry.get('new'))}",
                markup=False,
            )
        if sample.truncated:
            console.print("  (values were cut to the size cap)")


def _example(sample: DriftSample | None) -> str:
    if sample is None or not sample.diff:
        return "-"
    first = sample.diff[0]
    if "path" not in first:  # cut to the size cap
        return _short(first.get("preview"))
    return f"{_short(first.get('legacy'))} -> {_short(first.get('new'))}"


def _short(value: object, width: int = 60) -> str:
    return clip(json.dumps(value, ensure_ascii=False, default=str), width)
