"""The ``cutover`` command line: thin commands that parse, call the library and print.

Each command's module is imported when the command runs (see ``_app._Commands``).
"""

from cutover.cli._app import cli, main

__all__ = ["cli", "main"]
