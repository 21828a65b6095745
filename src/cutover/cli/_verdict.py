"""Options and output shared by the commands that judge a run (``replay``, ``golden verify``).

``@verdict_options`` adds the gates (``--max-mean-delta 5% --max-delta 10% --min-match 1``, or
``--gates FILE``), the latency targets (``--perf FILE``) and the outputs (``--json``,
``--junit FILE``, ``--markdown FILE``), all checked before the run starts, and hands the
command one :class:`Reporting`; :func:`finish` prints and writes the verdict and gives the exit
code: 0 when every gate passed, 1 when one failed (bad input exits 2 before, as everywhere).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import click

from cutover.cli._app import console, print_json, writable
from cutover.replay._verdict import Gates, Targets, Verdict, share

_GATES = ("max_mean_delta", "max_delta", "min_match", "max_drift_share", "max_error_share")


@dataclass(frozen=True, slots=True)
class Reporting:
    """What a judging command was told about judging and reporting."""

    gates: Gates
    targets: Targets | None
    as_json: bool = False
    junit: str | None = None
    markdown: str | None = None

    @property
    def quiet(self) -> bool:
        """No progress bar: the output is JSON."""
        return self.as_json


class _Share(click.ParamType):
    """A share written ``0.05`` or ``5%``."""

    name = "SHARE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, float):
            return value
        what = f"--{param.name.replace('_', '-')}" if param is not None and param.name else "share"
        return share(value, what)


SHARE = _Share()

_OPTIONS = (
    click.option(
        "--max-mean-delta",
        type=SHARE,
        default=None,
        help="Fail a group whose numeric fields moved by more than this on average"
        " (relative to legacy): 0.05 or 5%.",
    ),
    click.option(
        "--max-delta",
        type=SHARE,
        default=None,
        help="Fail a group where any numeric field moved by more than this: 0.10 or 10%.",
    ),
    click.option(
        "--min-match",
        type=SHARE,
        default=None,
        help="Fail a group whose categorical fields (strings, booleans) agree less often: 1.0"
        " means all of them.",
    ),
    click.option(
        "--max-drift-share",
        type=SHARE,
        default=None,
        help="Fail a group where more calls drifted (by the comparison's rules). Default: 0"
        " when no other comparison gate is given.",
    ),
    click.option(
        "--max-error-share",
        type=SHARE,
        default=None,
        help="Fail a group where more calls could not be compared (default 0).",
    ),
    click.option(
        "--allow-inconclusive",
        is_flag=True,
        default=None,
        help="A latency target whose interval straddles its bound does not fail the run.",
    ),
    click.option(
        "--gates",
        "gates_file",
        metavar="FILE",
        default=None,
        help="Gates from a YAML/JSON file (the flags above override it).",
    ),
    click.option(
        "--perf",
        "perf_file",
        metavar="FILE",
        default=None,
        help="Latency targets per route: quantile bound judged with its confidence interval.",
    ),
    click.option("--json", "as_json", is_flag=True, help="Print the verdict as JSON."),
    click.option("--junit", metavar="FILE", default=None, help="Write a JUnit XML report."),
    click.option("--markdown", metavar="FILE", default=None, help="Write a Markdown report."),
)


def verdict_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add the judging options; the command receives them as ``reporting: Reporting``."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        given = {name: kwargs.pop(name) for name in _GATES}
        allow = kwargs.pop("allow_inconclusive")
        gates_file, perf_file = kwargs.pop("gates_file"), kwargs.pop("perf_file")
        as_json, junit, markdown = (
            kwargs.pop("as_json"),
            kwargs.pop("junit"),
            kwargs.pop("markdown"),
        )
        base = Gates.load(gates_file) if gates_file else None
        gates = Gates.of({**given, "allow_inconclusive": allow or None}, base)
        reporting = Reporting(
            gates,
            Targets.load(perf_file) if perf_file else None,
            as_json,
            writable(junit, "--junit") if junit else None,
            writable(markdown, "--markdown") if markdown else None,
        )
        return command(*args, reporting=reporting, **kwargs)

    for option in reversed(_OPTIONS):
        wrapper = option(wrapper)
    return wrapper


def finish(verdict: Verdict, reporting: Reporting, title: str = "cutover") -> int:
    """Write the reports asked for, print the verdict, and give the exit code (0 passed, 1 a
    gate or target failed, or nothing was judged)."""
    if reporting.junit:
        verdict.write_junit(reporting.junit, title)
    if reporting.markdown:
        verdict.write_markdown(reporting.markdown, title)
    if reporting.as_json:
        print_json(verdict.as_json())
    else:
        verdict.render(console, title)
    return 0 if verdict.passed else 1
