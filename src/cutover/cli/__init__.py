"""The ``cutover`` command line: thin commands that parse, call the library and print."""

from cutover.cli import drifts, maintenance, state, stats, status  # noqa: F401 - registers commands
from cutover.cli._app import cli, main

__all__ = ["cli", "main"]
