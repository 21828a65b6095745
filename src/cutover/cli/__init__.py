"""The ``cutover`` command line: thin commands that parse, call the library and print."""

from cutover.cli import (  # noqa: F401 - importing registers the commands
    audit,
    cohort,
    drifts,
    instances,
    maintenance,
    reconcile,
    rollout,
    serve,
    state,
    stats,
    status,
    strategies,
)
from cutover.cli._app import cli, main

__all__ = ["cli", "main"]
