"""``cutover golden``: record golden vectors of an in-process function, and verify an
implementation against them with the migration's comparator, reported like ``cutover replay``."""

from __future__ import annotations

import dataclasses
import itertools
import os
from typing import Any

import click

from cutover.cli._app import (
    Session,
    cli,
    console,
    pass_session,
    print_json,
    seconds,
    writable,
)
from cutover.cli._verdict import Reporting, finish, verdict_options
from cutover.errors import InvalidInput
from cutover.replay import _golden as golden
from cutover.replay._verdict import Tally

SHOWN_FAILURES = 10
"""Failing vectors printed with their diff before the verdict (``--json`` lists them all)."""


@cli.group("golden")
def golden_group() -> None:
    """Golden vectors: legacy's answers to recorded inputs, replayed through an implementation."""


@golden_group.command("record")
@click.argument("name")
@click.option(
    "--from",
    "legacy_spec",
    required=True,
    metavar="MODULE:FUNCTION",
    help="The legacy function (or the migration, for its legacy arm) whose answers to record.",
)
@click.option(
    "--inputs",
    "generator",
    metavar="MODULE:GENERATOR",
    default=None,
    help="A generator function (or list) of inputs: each a value, or cutover.testing.call(...).",
)
@click.option(
    "--inputs-file",
    metavar="FILE",
    default=None,
    help="JSON Lines of inputs in typed JSON: one argument a line, or {args, kwargs}.",
)
@click.option(
    "--from-drifts",
    is_flag=True,
    help="The inputs of NAME's stored drift samples (redacted as they were kept).",
)
@click.option("--limit", default=1000, show_default=True, type=click.IntRange(1, 1_000_000))
@click.option("--since", default=None, metavar="DURATION", help="With --from-drifts: this recent.")
@click.option(
    "-o", "--output", required=True, metavar="FILE", help="The golden file (JSON Lines) to write."
)
@click.option("--group", default=None, help="The vectors' group (default: the function's name).")
@click.option("--append", is_flag=True, help="Keep the vectors already in FILE; add new inputs.")
@pass_session
def record(
    session: Session,
    name: str,
    legacy_spec: str,
    generator: str | None,
    inputs_file: str | None,
    from_drifts: bool,
    limit: int,
    since: str | None,
    output: str,
    group: str | None,
    append: bool,
) -> None:
    """Record legacy's answers to inputs as golden vectors of migration NAME."""
    sources = [flag for flag, given in (("--inputs", generator), ("--inputs-file", inputs_file),
                                        ("--from-drifts", from_drifts)) if given]  # fmt: skip
    if len(sources) != 1:
        raise InvalidInput(
            "give the inputs one way: --inputs MODULE:GENERATOR, --inputs-file FILE or"
            f" --from-drifts (got {', '.join(sources) or 'none'})"
        )
    writable(output, "--output")
    legacy = golden.callable_at(legacy_spec, "--from")
    label = group or getattr(legacy, "__name__", "vectors")
    if from_drifts:
        samples = _samples(session, name, limit, since)
        vectors, skipped = golden.sample_vectors(samples, legacy)
        _say_skipped(skipped)
    else:
        inputs: Any = (
            golden.generated_inputs(generator)
            if generator is not None
            else golden.read_inputs(inputs_file or "")
        )
        vectors = golden.record(legacy, itertools.islice(inputs, limit), group=label)
    compare = golden.comparators(name)
    if append and os.path.exists(output):
        content = golden.read(output).merged(vectors)
    else:
        content = golden.golden(
            vectors,
            migration=name,
            legacy=legacy_spec,
            compare=repr(compare.values),
            clock=session.clock,
        )
    content.write(output)
    console.print(
        f"{name}: {len(content.vectors)} golden vectors in {output}"
        f" (compared by {compare.source}: {compare.values!r})",
        markup=False,
    )


def _samples(session: Session, name: str, limit: int, since: str | None) -> list[Any]:
    from cutover import operations

    operations.require_known(session.store, name)
    start = None if since is None else session.now() - seconds(since, "--since")
    return session.store.drift_samples(name, limit, start, None)


def _say_skipped(skipped: list[golden.Skipped]) -> None:
    for item in skipped:
        console.print(f"  skipped drift sample {item.sample_id}: {item.reason}", markup=False)


@golden_group.command("verify")
@click.argument("file")
@click.option(
    "--target",
    required=True,
    metavar="MODULE:FUNCTION",
    help="The implementation to replay the vectors through.",
)
@click.option(
    "--compare",
    "compare_spec",
    default=None,
    metavar="MODULE:ATTRIBUTE",
    help="A comparator to use instead of the migration's (default: the migration named in"
    " FILE, if importing the target declares it, else exact comparison).",
)
@verdict_options
def verify(file: str, target: str, compare_spec: str | None, reporting: Reporting) -> int:
    """Replay the vectors of FILE through --target and judge each against legacy's answer."""
    content = golden.read(file)
    function = golden.callable_at(target, "--target")
    given = None if compare_spec is None else golden.resolve(compare_spec, "--compare")
    if given is not None and not callable(given):
        raise InvalidInput(f"--compare {compare_spec!r} is not callable; name a comparator")
    compare = golden.comparators(content.header.migration, given, content.header.legacy)
    tally = Tally()
    ignored = golden.ignored_paths(compare)
    failures = []
    for outcome in golden.verify(content, function, compare):
        tally.add(
            outcome.vector.group or "vectors",
            outcome.comparison,
            legacy=golden.measured(outcome.vector.output),
            new=golden.measured(outcome.new_value),
            new_ms=outcome.new_ms,
            ignore=ignored,
        )
        if not outcome.matched:
            failures.append(outcome)
    verdict = tally.verdict(reporting.gates, reporting.targets)
    title = f"golden verify {os.path.basename(file)}"
    if reporting.as_json:
        # The verdict as replay gives it, plus which vectors differ and how.
        report = verdict.as_json()
        report["golden"] = {
            "file": file,
            "vectors": len(content.vectors),
            "compared_by": f"{compare.source}: {compare.values!r}",
            "differing": [_failure_json(outcome) for outcome in failures],
        }
        with console.capture():  # finish writes the files and gives the code; we print
            code = finish(verdict, dataclasses.replace(reporting, as_json=False), title)
        print_json(report)
        return code
    console.print(
        f"{file}: {len(content.vectors)} vectors through {target},"
        f" compared by {compare.source}: {compare.values!r}",
        markup=False,
    )
    for outcome in failures[:SHOWN_FAILURES]:
        console.print(f"[bold]{outcome.vector.label}[/bold]")
        console.print(f"  {outcome.message()}".replace("\n", "\n  "), markup=False)
    if len(failures) > SHOWN_FAILURES:
        console.print(f"… {len(failures) - SHOWN_FAILURES} more differing vectors (--json)")
    return finish(verdict, reporting, title)


def _failure_json(outcome: golden.Outcome) -> dict[str, Any]:
    diff = outcome.comparison.diff
    return {
        "id": outcome.vector.id,
        "group": outcome.vector.group,
        "input": outcome.vector.call.show(200),
        "fingerprint": diff.fingerprint if diff else None,
        "diff": golden.describe(diff) if diff else [outcome.message()],
    }
