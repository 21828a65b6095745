"""The ``cutover`` command line: thin commands that parse, call the library and print."""

from cutover.cli import (  # noqa: F401 - importing registers the commands
    drifts,
    instances,
    maintenance,
    rollout,
    serve,
    state,
    stats,
    status,
)
from cutover.cli._app import cli, main

__all__ = ["cli", "main"]
