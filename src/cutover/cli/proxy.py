"""``cutover proxy``: a reverse proxy that shadows and canaries a whole HTTP service."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import click

from cutover.cli._app import Session, cli, console, pass_session
from cutover.durations import parse_duration
from cutover.errors import InvalidInput

if TYPE_CHECKING:
    from cutover.proxy._config import Upstream
from cutover.store import redact_url

SIZES = {
    "": 1,
    "b": 1,
    "k": 1 << 10,
    "kib": 1 << 10,
    "m": 1 << 20,
    "mib": 1 << 20,
    "g": 1 << 30,
    "gib": 1 << 30,
}


def parse_size(text: str, what: str) -> int:
    """``1MiB``, ``64k``, ``512`` (bytes) as a number of bytes."""
    raw = text.strip().lower()
    number = raw.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = raw[len(number) :]
    if not number.isdigit() or unit not in SIZES:
        raise InvalidInput(f"{what} {text!r} is not a size; give bytes like 512, 64KiB or 1MiB")
    return int(number) * SIZES[unit]


def with_headers(upstream: Upstream, given: tuple[str, ...], what: str) -> Upstream:
    from dataclasses import replace

    from cutover.proxy._config import parse_header

    return replace(upstream, headers=tuple(parse_header(text, what) for text in given))


@cli.command()
@click.argument("name")
@click.option("--listen", default="127.0.0.1:8080", show_default=True, metavar="HOST:PORT")
@click.option("--legacy", required=True, metavar="URL", help="The legacy service: http://host:port")
@click.option("--new", "new_url", required=True, metavar="URL", help="The new service.")
@click.option(
    "--legacy-secondary",
    default=None,
    metavar="URL",
    help="A second legacy instance: fields two legacy answers disagree on are learned as noise.",
)
@click.option(
    "--legacy-header",
    multiple=True,
    metavar="'NAME: VALUE'",
    help="Set a header on every request to legacy (repeatable; 'NAME:' drops it).",
)
@click.option("--new-header", multiple=True, metavar="'NAME: VALUE'", help="The same for new.")
@click.option("--noise-relative", type=click.FloatRange(0, 1), default=0.2, show_default=True)
@click.option("--noise-absolute", type=click.FloatRange(0, 1), default=0.0003, show_default=True)
@click.option(
    "--routes",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="A routes file: templates, migrations, units, comparison (docs/proxy.md).",
)
@click.option(
    "--unit",
    default=None,
    metavar="SOURCE",
    help="Where a request's unit comes from: header:NAME, cookie:NAME, query:NAME, jwt:CLAIM, ip.",
)
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True)
@click.option(
    "--record",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write a sampled share of exchanges to this folder as JSON Lines (redacted).",
)
@click.option(
    "--record-sample", type=click.FloatRange(0, 1), default=0.01, show_default=True, metavar="S"
)
@click.option(
    "--timeout", default="30s", show_default=True, help="How long new may take to answer."
)
@click.option("--legacy-timeout", default="60s", show_default=True)
@click.option("--shadow-timeout", default="10s", show_default=True, help="For copies off-path.")
@click.option("--max-shadows", type=click.IntRange(0), default=256, show_default=True)
@click.option("--compare-bytes", default="1MiB", show_default=True, help="Of each body.")
@click.option("--max-body", default="1GiB", show_default=True, help="Largest request body.")
@click.option("--drain", default="30s", show_default=True, help="SIGTERM waits this long.")
@click.option(
    "--flush-interval", default="5s", show_default=True, help="How often counts reach the store."
)
@pass_session
def proxy(
    session: Session,
    name: str,
    listen: str,
    legacy: str,
    new_url: str,
    legacy_secondary: str | None,
    legacy_header: tuple[str, ...],
    new_header: tuple[str, ...],
    noise_relative: float,
    noise_absolute: float,
    routes: Path | None,
    unit: str | None,
    workers: int,
    record: Path | None,
    record_sample: float,
    timeout: str,
    legacy_timeout: str,
    shadow_timeout: str,
    max_shadows: int,
    compare_bytes: str,
    max_body: str,
    drain: str,
    flush_interval: str,
) -> None:
    """Serve NAME's HTTP traffic: legacy, shadow, canary or new, as its stored state says."""
    try:
        import httptools  # noqa: F401
        import uvloop  # noqa: F401
    except ImportError:
        raise InvalidInput("cutover proxy needs its extra: pip install 'cutover[proxy]'") from None
    from cutover.proxy import Limits, ProxyOptions, run
    from cutover.proxy._config import parse_listen, parse_unit, parse_upstream
    from cutover.text import check_name

    check_name(name)
    host, port = parse_listen(listen)
    if unit is not None:
        parse_unit(unit)
    options = ProxyOptions(
        name=name,
        host=host,
        port=port,
        legacy=with_headers(parse_upstream(legacy, "--legacy"), legacy_header, "--legacy-header"),
        new=with_headers(parse_upstream(new_url, "--new"), new_header, "--new-header"),
        secondary=None
        if legacy_secondary is None
        else with_headers(
            parse_upstream(legacy_secondary, "--legacy-secondary"), legacy_header, "--legacy-header"
        ),
        store=session.store_url,
        routes_file=routes,
        unit=unit,
        workers=workers,
        record=record,
        record_sample=record_sample,
        drain=parse_duration(drain, "--drain"),
        flush_interval=parse_duration(flush_interval, "--flush-interval"),
        limits=Limits(
            timeout=parse_duration(timeout, "--timeout"),
            legacy_timeout=parse_duration(legacy_timeout, "--legacy-timeout"),
            shadow_timeout=parse_duration(shadow_timeout, "--shadow-timeout"),
            max_shadows=max_shadows,
            compare_bytes=parse_size(compare_bytes, "--compare-bytes"),
            max_body_bytes=parse_size(max_body, "--max-body"),
            noise_relative=noise_relative,
            noise_absolute=noise_absolute,
        ),
    )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    console.print(
        f"cutover proxy {name} on http://{host}:{port} ({workers} worker"
        f"{'s' if workers != 1 else ''}): legacy {options.legacy.url}, new {options.new.url},"
        f" store {redact_url(session.store_url or 'sqlite:///cutover.db')}",
        markup=False,
    )
    run(options)
