"""The ``cutover`` command group, its shared options, and how errors leave the process."""

from __future__ import annotations

import importlib
import json
import os
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar

import click
from rich.console import Console

from cutover._version import __version__
from cutover.clock import Clock, configured_clock
from cutover.data._files import replace_durably
from cutover.durations import parse_duration
from cutover.errors import CutoverError, InvalidInput, UnknownMigration

if TYPE_CHECKING:
    from cutover.store import Store

# Piped output is not cut to 80 columns: tables keep their full width.
console = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
errors = Console(stderr=True, highlight=False, soft_wrap=True)


@dataclass
class Session:
    """What every command shares: the store it talks to, opened on first use."""

    store_url: str | None = field(repr=False)  # may hold a password
    telemetry_url: str | None = field(default=None, repr=False)
    _store: Store | None = field(default=None, repr=False)
    _clock: Clock | None = field(default=None, repr=False)

    @property
    def store(self) -> Store:
        if self._store is None:
            from cutover.store import open_store

            self._store = open_store(self.store_url, telemetry_url=self.telemetry_url)
        return self._store

    @property
    def clock(self) -> Clock:
        """The system clock, or the one ``$CUTOVER_CLOCK`` names."""
        if self._clock is None:
            self._clock = configured_clock()
        return self._clock

    def now(self) -> float:
        return self.clock()


pass_session = click.make_pass_decorator(Session)


class _Commands(click.Group):
    """The command group; each command's module is imported when the command is used, so
    ``cutover audit`` does not load the server, nor ``cutover set`` the audit."""

    modules: ClassVar[dict[str, str]] = {
        "audit": "audit",
        "bucket": "maintenance",
        "check": "stats",
        "cohort": "cohort",
        "drifts": "drifts",
        "gc": "maintenance",
        "generate": "generate",
        "golden": "golden",
        "history": "state",
        "instances": "instances",
        "noise": "drifts",
        "notify": "notify",
        "proxy": "proxy",
        "report": "report",
        "reconcile": "reconcile",
        "replay": "replay",
        "rollout": "rollout",
        "serve": "serve",
        "slo": "slo",
        "set": "state",
        "stats": "stats",
        "status": "status",
        "strategies": "strategies",
        "token": "serve",
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self.modules))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in self.modules:
            importlib.import_module(f"cutover.cli.{self.modules[cmd_name]}")
        return super().get_command(ctx, cmd_name)


@click.group(
    cls=_Commands,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.option(
    "--store",
    envvar="CUTOVER_STORE",
    metavar="URL",
    help="sqlite:///path.db or postgresql://user@host/db"
    " (default: $CUTOVER_STORE, else ./cutover.db).",
)
@click.option(
    "--telemetry-url",
    envvar="CUTOVER_TELEMETRY_URL",
    metavar="URL",
    help="Read windows from this Prometheus (http://127.0.0.1:9090), which scrapes every"
    " instance's /metrics, instead of the store (default: $CUTOVER_TELEMETRY_URL).",
)
@click.version_option(__version__, prog_name="cutover")
@click.pass_context
def cli(ctx: click.Context, store: str | None, telemetry_url: str | None) -> None:
    """Replace a legacy implementation with a new one without behaviour drift."""
    ctx.obj = Session(store, telemetry_url)


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


def window_option(default: str = "1h") -> Any:
    """``--window`` and ``--since``/``--until``: the span a report covers."""

    def decorate(command: Any) -> Any:
        command = click.option(
            "--until",
            default=None,
            metavar="WHEN",
            help="End of the span: 2026-11-22T10:00Z, or a duration ago (2h). Default: now.",
        )(command)
        command = click.option(
            "--since",
            default=None,
            metavar="WHEN",
            help="Start of the span (like --until); overrides --window.",
        )(command)
        return click.option(
            "--window",
            default=default,
            show_default=True,
            metavar="DURATION",
            help="How far back to look: 30s, 5m, 1h, 14d.",
        )(command)

    return decorate


def span(
    window: str, since: str | None, until: str | None, now: float
) -> tuple[float, float | None]:
    """(seconds covered, end or None for now) from --window, --since and --until."""
    end = None if until is None else moment(until, now, "--until")
    if since is None:
        return seconds(window, "--window"), end
    start = moment(since, now, "--since")
    if start >= (now if end is None else end):
        raise InvalidInput("--since must be before --until (or before now)")
    return (now if end is None else end) - start, end


EARLIEST = 0.0
"""1970-01-01T00:00Z: nothing cutover keeps is older."""
LATEST = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp()
"""The last second a report can name (a span reaches at most 100 years before its end, so
its start can always be printed too)."""


def moment(text: str, now: float, what: str) -> float:
    """A point in time: ``now``, an ISO-8601 time with a date (UTC unless it says otherwise),
    or a duration ago (``2h``, or a bare number of seconds); from 1970 to 9999."""
    raw = text.strip()
    if raw.lower() == "now":
        return now
    value = None
    if "-" in raw[1:]:  # a date: 2026-11-22, 2026-11-22T10:00Z
        try:
            parsed = datetime.fromisoformat(raw.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            pass
        else:
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=UTC)
            value = parsed.timestamp()
    if value is None:
        try:
            value = now - parse_duration(raw, what)
        except InvalidInput:
            raise InvalidInput(
                f"{what} {text!r} is neither a time (2026-11-22T10:00Z) nor a duration ago (2h)"
            ) from None
    if not EARLIEST <= value <= LATEST:
        raise InvalidInput(
            f"{what} {text!r} is outside 1970-01-01 to 9999-12-31; give a time in between"
        )
    return value


def seconds(text: str, what: str) -> float:
    return parse_duration(text, what)


def writable(path: str | os.PathLike[str], what: str) -> str:
    """``path`` (given as ``what``), once it is known that a file can be written there: it is
    a regular file or nothing yet, in a folder that exists. Checked before long work starts."""
    name = os.fspath(path)
    if os.path.exists(name) and not os.path.isfile(name):
        raise InvalidInput(f"{what} {name} is not a regular file; give the path of a file")
    folder = os.path.dirname(os.path.abspath(name))
    if not os.path.isdir(folder):
        raise InvalidInput(f"{what} {name}: folder {folder} does not exist; create it first")
    return name


def write_file(
    path: str | os.PathLike[str], text: str, what: str, *, private: bool = False
) -> None:
    """Replace the file at ``path`` (given as ``what``, e.g. ``--json``) with ``text``, whole and
    on disk when this returns; ``private`` makes it readable by its owner alone. A path that
    cannot take it (a folder, a device, a folder that does not exist, no permission) is bad
    input naming ``what``, and leaves whatever is there as it was."""
    name = writable(path, what)
    try:
        replace_durably(name, text, mode=0o600 if private else None)
    except OSError as error:
        raise InvalidInput(
            f"cannot write {what} {name}: {error.strerror or error}; give a path you can write to"
        ) from None


def read_file(path: str | os.PathLike[str], what: str) -> str:
    """The UTF-8 text of the file at ``path`` (given as ``what``); a path that is not a readable
    text file is bad input naming ``what``."""
    name = os.fspath(path)
    if os.path.exists(name) and not os.path.isfile(name):
        raise InvalidInput(f"{what} {name} is not a regular file; give the path of a file")
    try:
        with open(name, encoding="utf-8") as handle:
            return handle.read()
    except UnicodeDecodeError:
        raise InvalidInput(f"{what} {name} is not UTF-8 text; give a text file") from None
    except OSError as error:
        raise InvalidInput(f"cannot read {what} {name}: {error.strerror or error}") from None


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False, default=str))


def clip(text: str, width: int, whole: str = "--json shows it whole") -> str:
    """``text`` cut to about ``width`` characters, saying how much was cut and how to see it
    all: a changed value may be megabytes, and a terminal is no place for it."""
    if len(text) <= width:
        return text
    return f"{text[:width]}… ({len(text) - width:,} more characters; {whole})"


def when(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def ratio(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value * 100:.{digits}g}%"


def millis(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def main(argv: list[str] | None = None) -> None:
    """Entry point: usage errors and bad input exit 2 with one sentence, failures exit 1."""
    try:
        code = cli.main(args=argv, prog_name="cutover", standalone_mode=False)
    except click.exceptions.UsageError as error:
        error.show()
        sys.exit(2)
    except click.exceptions.ClickException as error:
        error.show()
        sys.exit(error.exit_code)
    except click.exceptions.Abort:
        errors.print("cutover: aborted")
        sys.exit(1)
    except (InvalidInput, UnknownMigration) as error:
        errors.print(f"cutover: {error}", markup=False)
        sys.exit(2)
    except CutoverError as error:
        errors.print(f"cutover: {error}", markup=False)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)
