"""``cutover serve`` (the admin API and dashboard) and ``cutover token`` (who may use them)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import click

from cutover.cli._app import (
    Session,
    cli,
    console,
    errors,
    pass_session,
    read_file,
    seconds,
    write_file,
)
from cutover.durations import format_duration
from cutover.errors import InvalidInput
from cutover.store import DEFAULT_LEASE, redact_url

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _server_extra() -> None:
    try:
        import fastapi  # noqa: F401
        import jinja2  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise InvalidInput("the server needs its extra: pip install 'cutover[server]'") from None


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--plans",
    "plans_dir",
    default=None,
    type=click.Path(file_okay=False, exists=True),
    help="Directory of plan files the API may start by name.",
)
@click.option(
    "--tokens",
    "tokens_file",
    envvar="CUTOVER_TOKENS_FILE",
    default=None,
    type=click.Path(dir_okay=False),
    help="YAML file of hashed tokens (default: $CUTOVER_TOKENS_FILE); $CUTOVER_TOKENS adds more.",
)
@click.option("--public-read", is_flag=True, help="Let anyone read; actions still need a token.")
@click.option(
    "--four-eyes",
    is_flag=True,
    help="Every approval must come from someone other than the rollout's starter.",
)
@click.option(
    "--controller/--no-controller",
    "run_controller",
    default=False,
    help="Also run the rollout controller in this process.",
)
@click.option("--interval", default="10s", show_default=True, help="Controller tick interval.")
@click.option(
    "--lease",
    default=format_duration(DEFAULT_LEASE),
    show_default=True,
    help="How long the controller's leadership lasts without a renewal (at least 1s).",
)
@click.option("--refresh", default="5s", show_default=True, help="Dashboard refresh interval.")
@click.option(
    "--read-cache",
    default="5m",
    show_default=True,
    help="How long a live series keeps its older buckets (its newest is computed again after"
    " --refresh): they change only when instances write what they buffered through an outage.",
)
@click.option("--secure-cookie", is_flag=True, help="Mark the sign-in cookie Secure (HTTPS).")
@click.option(
    "--allowed-host",
    "allowed_hosts",
    multiple=True,
    metavar="HOST[:PORT]",
    help="A Host header to answer (repeatable; '*' answers any). Default: the listen address,"
    " localhost, 127.0.0.1 and [::1], with the port.",
)
@click.option(
    "--ofrep-rate",
    envvar="CUTOVER_OFREP_RATE",
    default="off",
    metavar="RATE[:BURST]",
    help="OFREP evaluations per second each token (each address, without a token) may ask for,"
    " in bursts of BURST (default: one second's worth); past it, 429 with Retry-After."
    " Default: $CUTOVER_OFREP_RATE, else off.",
)
@pass_session
def serve(
    session: Session,
    host: str,
    port: int,
    plans_dir: str | None,
    tokens_file: str | None,
    public_read: bool,
    four_eyes: bool,
    run_controller: bool,
    interval: str,
    lease: str,
    refresh: str,
    read_cache: str,
    secure_cookie: bool,
    allowed_hosts: tuple[str, ...],
    ofrep_rate: str,
) -> None:
    """Serve the admin API (/api/v1, /openapi.json), the dashboard (/), /metrics and /healthz."""
    _server_extra()
    import uvicorn

    from cutover.http import Settings, Tokens, create_app
    from cutover.http._app import default_hosts
    from cutover.http._ratelimit import Rate
    from cutover.runtime import configure

    every = seconds(interval, "--interval")
    tokens = Tokens.load(tokens_file)
    rate = Rate.parse(ofrep_rate, "--ofrep-rate")
    settings = Settings(
        store=session.store,
        tokens=tokens,
        public_read=public_read,
        plans_dir=Path(plans_dir) if plans_dir else None,
        four_eyes=four_eyes,
        refresh_seconds=seconds(refresh, "--refresh"),
        read_cache_seconds=seconds(read_cache, "--read-cache"),
        run_controller=run_controller,
        controller_interval=every,
        controller_lease=seconds(lease, "--lease"),
        secure_cookie=secure_cookie,
        allowed_hosts=allowed_hosts or default_hosts(host, port),
        ofrep_rate=rate,
    )
    app = create_app(settings)
    # OFREP answers from the states a runtime keeps in memory: one on the served store, which
    # also flushes the exposures it counts (to the store, or leaves them on /metrics).
    configure(session.store.url, instance="cutover-serve", telemetry_url=session.telemetry_url)
    if not len(tokens):
        errors.print(
            "cutover serve: no tokens configured, so every action is refused"
            f"{'' if public_read else ' and so is every read'}; mint one with"
            " `cutover token create NAME --role operator --file tokens.yaml`",
            markup=False,
        )
    if not allowed_hosts and host not in LOOPBACK:
        errors.print(
            f"cutover serve: answering only requests addressed to {host}:{port} or this"
            " machine's loopback names; name the others clients use with --allowed-host",
            markup=False,
        )
    if public_read and host not in LOOPBACK:
        errors.print(
            f"cutover serve: --public-read on {host} lets anyone who reaches it read every"
            " migration",
            markup=False,
        )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    console.print(
        f"cutover serving {redact_url(session.store.url)} on http://{host}:{port}"
        f" ({len(tokens)} tokens{', public read' if public_read else ''}"
        f"{f', controller every {format_duration(every)}' if run_controller else ''}"
        f"{f', OFREP limit {rate} per token' if rate else ''})",
        markup=False,
    )
    uvicorn.run(app, host=host, port=port, log_level="warning", server_header=False)


@cli.group()
def token() -> None:
    """Mint tokens for the admin API and dashboard (only their hashes are stored)."""


def _append_token(path: Path, name: str, role: str, digest: str, roles: str) -> None:
    """Add an entry to the file's `tokens:` list. The file is replaced whole (readable by its
    owner alone), and only once the new text is known to hold the new token, so a failure
    leaves it as it was."""
    import tempfile

    from cutover.http import Tokens

    text = read_file(path, "--file") if path.exists() else ""
    if text.strip() and name in Tokens.load(path, env="").names():
        raise InvalidInput(f"{path} already has a token named {name!r}; pick another name")
    if not text.strip():
        text = "tokens:\n"
    elif not text.endswith("\n"):
        text += "\n"
    text += _yaml_entry(name, role, digest, roles)
    with tempfile.TemporaryDirectory(prefix="cutover-") as folder:  # created with mode 0700
        trial = os.path.join(folder, "tokens.yaml")
        with open(trial, "w", encoding="utf-8") as out:
            out.write(text)
        try:
            added = name in Tokens.load(trial, env="").names()
        except InvalidInput:
            added = False
    if not added:
        raise InvalidInput(
            f"{path}: cannot append to its `tokens:` list (it must be the last block of the"
            " file, written as a block list, not `tokens: []`); edit it or use a new file"
        )
    write_file(path, text, "--file", private=True)


def _yaml_entry(name: str, role: str, digest: str, roles: str) -> str:
    """One token's entry in a tokens file; ``roles`` joined by +."""
    # JSON strings are YAML strings: a name like 2024 or on stays a name.
    entry = f"  - name: {json.dumps(name)}\n    role: {role}\n    sha256: {digest}\n"
    if roles:
        entry += f"    approval_roles: [{', '.join(roles.split('+'))}]\n"
    return entry


@token.command("create")
@click.argument("name")
@click.option(
    "--role",
    type=click.Choice(["viewer", "operator", "admin"]),
    default="viewer",
    show_default=True,
)
@click.option(
    "--file",
    "tokens_file",
    default=None,
    type=click.Path(dir_okay=False),
    help="Append the hashed entry to this tokens file (created with mode 0600).",
)
@click.option(
    "--approval-role",
    "approval_roles",
    multiple=True,
    help="A plan role this token approves steps as (approval: {roles: [...]}); repeat it.",
)
def create(name: str, role: str, tokens_file: str | None, approval_roles: tuple[str, ...]) -> None:
    """Mint a token for NAME; it is printed once, and only its hash is kept."""
    from cutover.control.plan import check_role
    from cutover.http import hash_token, new_token
    from cutover.http._auth import check_name

    check_name(name, "NAME")
    try:
        roles = "+".join(check_role(r) for r in approval_roles)
    except ValueError as error:
        raise InvalidInput(f"--approval-role: {error}") from None
    secret = new_token()
    digest = hash_token(secret)
    if tokens_file is not None:
        path = Path(tokens_file)
        _append_token(path, name, role, digest, roles)
        console.print(f"added {name} ({role}) to {path}", markup=False)
    else:
        console.print(
            "add this to the tokens file:\n"
            + _yaml_entry(name, role, digest, roles)
            + f"or to the environment: CUTOVER_TOKENS={name}:{role}:{digest}"
            + (f":{roles}" if roles else ""),
            markup=False,
        )
    console.print(f"token (shown once): {secret}", markup=False)
