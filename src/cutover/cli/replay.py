"""``cutover replay``: recorded requests sent to new and legacy, compared, and judged by gates."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from cutover.cli._app import cli, errors
from cutover.cli._verdict import Reporting, finish, verdict_options
from cutover.errors import InvalidInput

if TYPE_CHECKING:
    from cutover.replay import Tally
    from cutover.replay._input import Request
    from cutover.replay._run import ReplayOptions


@cli.command()
@click.argument("files", nargs=-1, required=True, metavar="FILE...")
@click.option("--new", "new_url", required=True, metavar="URL", help="The new service.")
@click.option(
    "--legacy",
    "legacy_url",
    default=None,
    metavar="URL",
    help="The legacy service, live; without it, new is compared with legacy's recorded answers.",
)
@click.option(
    "--routes",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The proxy's routes file: route templates and each one's comparison options.",
)
@click.option(
    "--concurrency",
    type=click.IntRange(1, 10_000),
    default=32,
    show_default=True,
    help="Requests in flight at once.",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    metavar="PER_SECOND",
    help="At most this many requests a second (default: as fast as the services answer).",
)
@click.option("--timeout", default="30s", show_default=True, help="For each answer.")
@click.option(
    "--header",
    multiple=True,
    metavar="'NAME: VALUE'",
    help="Set a header on every request to both services (repeatable; 'NAME:' drops it).",
)
@click.option("--legacy-header", multiple=True, metavar="'NAME: VALUE'", help="For legacy only.")
@click.option("--new-header", multiple=True, metavar="'NAME: VALUE'", help="For new only.")
@click.option(
    "--compare-bytes",
    default="1MiB",
    show_default=True,
    help="Of each body, compared in full; the rest by digest.",
)
@verdict_options
def replay(
    files: tuple[str, ...],
    new_url: str,
    legacy_url: str | None,
    routes: Path | None,
    concurrency: int,
    rate: float | None,
    timeout: str,
    header: tuple[str, ...],
    legacy_header: tuple[str, ...],
    new_header: tuple[str, ...],
    compare_bytes: str,
    reporting: Reporting,
) -> int:
    """Send the requests in FILE... (recordings of `cutover proxy --record`, HAR files, or JSON
    Lines of requests) to new and to legacy (or compare with legacy's recorded answers), and
    judge the run: counts, drifts by cause, numeric deltas, categorical matches and latency per
    route. Exits 1 when a gate or a latency target fails."""
    try:
        import httptools  # noqa: F401
    except ImportError:
        raise InvalidInput("cutover replay needs its extra: pip install 'cutover[proxy]'") from None
    from cutover.cli.proxy import parse_size, with_headers
    from cutover.durations import parse_duration
    from cutover.proxy._config import load_routes, parse_upstream
    from cutover.replay._input import read_requests
    from cutover.replay._run import MIGRATION, ReplayOptions, retired

    both = (*header,)
    options = ReplayOptions(
        new=with_headers(parse_upstream(new_url, "--new"), both + new_header, "--new-header"),
        legacy=None
        if legacy_url is None
        else with_headers(
            parse_upstream(legacy_url, "--legacy"), both + legacy_header, "--legacy-header"
        ),
        routes=None if routes is None else load_routes(routes, MIGRATION, None),
        concurrency=concurrency,
        rate=rate,
        timeout=parse_duration(timeout, "--timeout"),
        compare_bytes=parse_size(compare_bytes, "--compare-bytes"),
    )
    requests = [request for name in files for request in read_requests(name)]
    if not requests:
        raise InvalidInput(f"{', '.join(files)} holds no request; give a file with some")
    requests, left_out = retired(requests, options.routes)
    if left_out:
        errors.print(f"cutover replay: left out {left_out} requests on routes marked gone")
    tally = _run_with_progress(requests, options, show=not reporting.quiet)
    return finish(tally.verdict(reporting.gates, reporting.targets), reporting, "cutover replay")


def _run_with_progress(requests: list[Request], options: ReplayOptions, *, show: bool) -> Tally:
    """The replay, with a progress bar on a terminal (not when piped, nor with --json)."""
    from cutover.replay._run import run

    if not show or not errors.is_terminal:
        return run(requests, options)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    with Progress(
        "replaying",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=errors,
        transient=True,
    ) as bar:
        task = bar.add_task("replay", total=len(requests))
        return run(requests, options, lambda done: bar.update(task, completed=done))
