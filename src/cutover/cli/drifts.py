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
    writable,
)
from cutover.cli._app import when as at
from cutover.errors import InvalidInput
from cutover.telemetry.drift import DriftSample


@cli.command()
@click.argument("name")
@click.option("--group", is_flag=True, help="Count drifts per fingerprint (root cause).")
@click.option("--limit", default=10, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--since", default=None, metavar="DURATION", help="Only drifts this recent (1h, 7d).")
@click.option("--fingerprint", default=None, help="Only samples with this fingerprint.")
@click.option(
    "--noise", "show_noise", is_flag=True, help="The fields counted as noise, learned and declared."
)
@click.option(
    "--export-golden",
    metavar="FILE",
    default=None,
    help="Add the samples' inputs to this golden file as regression vectors.",
)
@click.option(
    "--from",
    "legacy_spec",
    metavar="MODULE:FUNCTION",
    default=None,
    help="With --export-golden: legacy, to record its answers now (default: the answers the"
    " samples kept, as redacted).",
)
@json_option
@pass_session
def drifts(
    session: Session,
    name: str,
    group: bool,
    limit: int,
    since: str | None,
    fingerprint: str | None,
    show_noise: bool,
    export_golden: str | None,
    legacy_spec: str | None,
    as_json: bool,
) -> None:
    """Recent drift samples of a migration with their diffs, or (--group) counts per cause,
    or (--noise) what does not count as drift, or (--export-golden) golden vectors of them."""
    store = session.store
    if show_noise:
        _print_noise(operations.noise(store, name), as_json)
        return
    if legacy_spec is not None and export_golden is None:
        raise InvalidInput("--from goes with --export-golden FILE; add it, or drop --from")
    operations.require_known(store, name)
    start = None if since is None else session.now() - seconds(since, "--since")
    if export_golden is not None:
        _export(session, name, export_golden, legacy_spec, limit, start, fingerprint, as_json)
        return
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


def _export(
    session: Session,
    name: str,
    path: str,
    legacy_spec: str | None,
    limit: int,
    start: float | None,
    fingerprint: str | None,
    as_json: bool,
) -> None:
    from cutover.replay import _golden as golden

    writable(path, "--export-golden")
    legacy = None if legacy_spec is None else golden.callable_at(legacy_spec, "--from")
    samples = session.store.drift_samples(name, limit, start, fingerprint)
    vectors, skipped = golden.sample_vectors(samples, legacy)
    written = golden.append(
        path,
        vectors,
        migration=name,
        legacy=legacy_spec or f"drift samples of {name}",
        compare=repr(golden.comparators(name).values),
    )
    if as_json:
        print_json(
            {
                "migration": name,
                "file": path,
                "exported": [vector.id for vector in vectors],
                "vectors": len(written.vectors),
                "skipped": [{"sample": s.sample_id, "reason": s.reason} for s in skipped],
            }
        )
        return
    console.print(
        f"{name}: {len(vectors)} of {len(samples)} drift samples exported to {path}"
        f" ({len(written.vectors)} vectors in the file)",
        markup=False,
    )
    for item in skipped:
        console.print(f"  skipped drift sample {item.sample_id}: {item.reason}", markup=False)


def _example(sample: DriftSample | None) -> str:
    if sample is None or not sample.diff:
        return "-"
    first = sample.diff[0]
    if "path" not in first:  # cut to the size cap
        return _short(first.get("preview"))
    return f"{_short(first.get('legacy'))} -> {_short(first.get('new'))}"


def _short(value: object, width: int = 60) -> str:
    return clip(json.dumps(value, ensure_ascii=False, default=str), width)


def _print_noise(report: dict[str, object], as_json: bool) -> None:
    if as_json:
        print_json(report)
        return
    name = report["migration"]
    rules = report["rules"]
    learned = report["learned"]
    assert isinstance(rules, list) and isinstance(learned, list)
    if rules:
        table = Table(title=f"declared noise · {name}", title_justify="left")
        for column in ("prefix", "reason", "by", "since"):
            table.add_column(column)
        for rule in rules:
            table.add_row(rule["prefix"], rule["reason"], rule["added_by"], at(rule["added_at"]))
        console.print(table)
    else:
        console.print(f"{name}: no declared noise (add some with `cutover noise add`).")
    if not learned:
        console.print(
            f"{name}: nothing learned: noise is learned from a second legacy instance"
            " (`cutover proxy --legacy-secondary URL`)."
        )
        return
    table = Table(title=f"learned noise · {name}", title_justify="left")
    for column in ("route", "field", "new differs", "legacy differs", "requests", "counts as"):
        table.add_column(
            column, justify="right" if column[0] in "nlr" and column != "route" else "left"
        )
    for count in learned:
        table.add_row(
            count["route"],
            count["path"],
            str(count["raw"]),
            str(count["noise"]),
            str(count["requests"]),
            "noise" if count["is_noise"] else "drift",
        )
    console.print(table)


@cli.group()
def noise() -> None:
    """Declare fields whose differences are noise, never drift (e.g. a random request id)."""


@noise.command("add")
@click.argument("name")
@click.argument("prefix")
@click.option("--reason", required=True, help="Why: recorded in the decision log.")
@click.option("--actor", default=None, help="Who (default $CUTOVER_ACTOR, else user@host).")
@pass_session
def noise_add(session: Session, name: str, prefix: str, reason: str, actor: str | None) -> None:
    """Differences at PREFIX (a path like $.body.request_id) and under it never count."""
    _noise_change(session, name, prefix, reason, actor, remove=False)


@noise.command("remove")
@click.argument("name")
@click.argument("prefix")
@click.option("--reason", required=True, help="Why: recorded in the decision log.")
@click.option("--actor", default=None, help="Who (default $CUTOVER_ACTOR, else user@host).")
@pass_session
def noise_remove(session: Session, name: str, prefix: str, reason: str, actor: str | None) -> None:
    """Differences at PREFIX count again."""
    _noise_change(session, name, prefix, reason, actor, remove=True)


@noise.command("list")
@click.argument("name")
@json_option
@pass_session
def noise_list(session: Session, name: str, as_json: bool) -> None:
    """The declared noise prefixes and the noise learned (the same as `drifts NAME --noise`)."""
    _print_noise(operations.noise(session.store, name), as_json)


def _noise_change(
    session: Session, name: str, prefix: str, reason: str, actor: str | None, *, remove: bool
) -> None:
    decision = operations.noise_rule(
        session.store,
        name,
        prefix,
        remove=remove,
        actor=actor or operations.default_actor(),
        reason=reason,
        clock=session.clock,
    )
    verb = "no longer noise" if remove else "noise from now on"
    console.print(
        f"{name}: {prefix} is {verb} (decision {decision.id} by {decision.actor})", markup=False
    )
