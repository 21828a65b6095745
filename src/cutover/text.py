"""What people may write where cutover keeps it: the one rule for migration names, and free text
(reasons, actors, filters) that every store can hold."""

from __future__ import annotations

import re
from typing import Any

from cutover.errors import InvalidInput

NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.:/-]{0,199}"
"""A migration's name: 1 to 200 ASCII letters, digits or ``_ . : / -``, starting with a letter
or a digit. The library, the CLI, the API, the dashboard, plans and cohorts all hold names to
this rule, so a name one of them accepts works in every other (the API and the dashboard send
``/`` as ``%2F`` in their URLs)."""

_NAME = re.compile(NAME_PATTERN + r"\Z")


def check_name(name: Any) -> str:
    """``name`` if it is a valid migration name, else InvalidInput saying what a name may be."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidInput(
            f"migration name {shown(name)} must be 1 to 200 letters, digits or _ . : / -,"
            " starting with a letter or digit"
        )
    return name


def check_text(text: str, what: str, *, max_length: int | None = None) -> str:
    """``text`` if a store can keep it: no NUL character (PostgreSQL refuses it, SQLite would
    keep it as given), and at most ``max_length`` characters where the store limits it."""
    if "\x00" in text:
        raise InvalidInput(f"{what} contains a NUL character (\\x00); remove it")
    if max_length is not None and len(text) > max_length:
        raise InvalidInput(
            f"{what} is {len(text):,} characters long; keep it to {max_length:,} or fewer"
        )
    return text


def shown(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to about ``limit`` characters, for a message that must stay one line
    (repr escapes control and direction-changing characters, so the line reads as written)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
