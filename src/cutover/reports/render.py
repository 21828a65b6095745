"""Reports rendered as Markdown through Jinja2 templates that users can replace, or as JSON."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cutover.durations import format_duration
from cutover.errors import InvalidInput

TEMPLATES = Path(__file__).parent / "templates"
KINDS = ("slo", "weekly", "cab", "history", "closure", "monthly")


def _percent(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value * 100:.{digits}g}%"


def _date(at: float | None) -> str:
    return "-" if at is None else datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d")


def _when(at: float | None) -> str:
    return "-" if at is None else datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%MZ")


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g} ms"


def _duration(seconds: float | None) -> str:
    return "-" if not seconds else format_duration(seconds)


def _cell(value: Any) -> str:
    """Text safe inside a Markdown table cell: one line, pipes escaped."""
    return " ".join(str(value).split()).replace("|", "\\|")


def environment() -> Any:
    try:
        import jinja2
    except ImportError:
        raise InvalidInput("reports need Jinja2: pip install 'cutover[reports]'") from None
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # Markdown, not HTML
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        percent=_percent, date=_date, when=_when, ms=_ms, duration=_duration, cell=_cell
    )
    return env


def markdown(data: dict[str, Any], template: str | None = None, source: str = "") -> str:
    """``data`` (a report of one of KINDS) as Markdown: with the shipped template of its kind,
    or with ``template``, the text of one a user wrote (read from ``source``)."""
    import jinja2

    env = environment()
    try:
        if template is None:
            compiled = env.get_template(f"{data['kind']}.md.j2")
        else:
            compiled = env.from_string(template)
        return compiled.render(**data)
    except jinja2.TemplateSyntaxError as error:
        where = source or "the template"
        raise InvalidInput(
            f"{where}, line {error.lineno}: {error.message}; fix the template"
        ) from None
    except jinja2.UndefinedError as error:
        where = source or "the template"
        raise InvalidInput(
            f"{where}: {error.message}; the report's fields are {', '.join(sorted(data))}"
        ) from None


def as_json(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, default=str) + "\n"


__all__ = ["KINDS", "TEMPLATES", "as_json", "environment", "markdown"]
