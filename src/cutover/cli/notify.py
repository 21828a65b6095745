"""``cutover notify render``: customer messages filled in per tenant of a cohort."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

import click

from cutover.cli._app import Session, cli, pass_session, read_file, write_file
from cutover.errors import InvalidInput


@cli.group()
def notify() -> None:
    """Messages to the people a migration touches (sending stays yours: webhooks exist)."""


@notify.command("render")
@click.argument("template", metavar="TEMPLATE")
@click.option("--migration", required=True, metavar="NAME", help="The data migration.")
@click.option("--cohort", "cohort", required=True, metavar="NAME", help="Its cohort.")
@click.option(
    "--tenants",
    "tenants_path",
    default=None,
    metavar="FILE",
    help="YAML: tenant -> fields (customer_name, ...), each a template variable.",
)
@click.option("--date", default=None, help="{{date}} (default: the day the cohort was promoted).")
@click.option(
    "--retirement-window",
    default=None,
    help="{{retirement_window}} (default: the cohort's rollback window).",
)
@click.option("--output-dir", default=None, metavar="DIR",
              help="Write one file per tenant here (TENANT.txt) instead of to stdout.")  # fmt: skip
@pass_session
def render(
    session: Session,
    template: str,
    migration: str,
    cohort: str,
    tenants_path: str | None,
    date: str | None,
    retirement_window: str | None,
    output_dir: str | None,
) -> None:
    """Fill the Jinja2 TEMPLATE in for every tenant of a cohort."""
    from cutover.reports.messages import render_messages

    tenants: Mapping[str, Mapping[str, object]] | None = None
    if tenants_path is not None:
        from cutover._yaml import parse_yaml

        data = parse_yaml(read_file(tenants_path, "--tenants"), tenants_path)
        if not isinstance(data, Mapping) or not all(isinstance(v, Mapping) for v in data.values()):
            raise InvalidInput(
                f"{tenants_path}: give a mapping of tenant to fields, like"
                " 'acme: {customer_name: Acme Corporation}'"
            )
        tenants = {str(k): v for k, v in data.items()}
    messages = render_messages(
        session.store, migration, cohort, read_file(template, "TEMPLATE"),
        tenants=tenants, date=date, retirement_window=retirement_window, source=template,
    )  # fmt: skip
    if output_dir is None:
        for number, message in enumerate(messages):
            if number:
                click.echo(f"\n{'-' * 72}\n")
            click.echo(message.text, nl=False)
        return
    if not os.path.isdir(output_dir):
        raise InvalidInput(f"--output-dir {output_dir} is not a folder; create it first")
    for message in messages:
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", message.tenant).lstrip(".") or "_"
        path = os.path.join(output_dir, f"{safe}.txt")
        write_file(path, message.text, "--output-dir")
        click.echo(path)
