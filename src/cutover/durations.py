"""Durations as people write them ("90s", "5m", "1h30m", "14d") to and from seconds."""

from __future__ import annotations

import re

from cutover.errors import InvalidInput

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
MAX_SECONDS = 100 * 365 * 86400.0
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")


def parse_duration(text: str | float | int, what: str = "duration") -> float:
    """Seconds in ``text``: a number of seconds, or parts like ``1h30m``, ``14d``, ``250ms``."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        seconds = float(text)
    else:
        raw = str(text).strip().lower().replace(" ", "")
        if re.fullmatch(r"\d+(\.\d+)?", raw):
            seconds = float(raw)
        else:
            parts = _PART.findall(raw)
            if not raw or "".join(n + u for n, u in parts) != raw:
                raise InvalidInput(
                    f"{what} {text!r} is not a duration; write it like 30s, 5m, 1h30m or 14d"
                )
            seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if seconds <= 0:
        raise InvalidInput(f"{what} must be longer than zero, got {text!r}")
    if not seconds < MAX_SECONDS:  # also catches inf and nan
        raise InvalidInput(f"{what} {text!r} is too long; give at most 100 years (36500d)")
    return seconds


def format_duration(seconds: float) -> str:
    """The shortest exact spelling: 3600 -> '1h', 5400 -> '1h30m', 0.25 -> '250ms'."""
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    if seconds != int(seconds):
        return f"{seconds:g}s"
    rest = int(seconds)
    out = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if rest >= size:
            out.append(f"{rest // size}{unit}")
            rest %= size
    return "".join(out)
