"""Path patterns for ignore and unordered: ``$.meta.at``, ``$.items[*].id``, ``$..token``."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from cutover.compare._diff import Token
from cutover.errors import InvalidInput

# Pattern steps: ("key", name) | ("index", n) | ("any", None) | ("deep", None)
Step = tuple[str, str | int | None]

_STEP = re.compile(
    r"""
    \.\.(?P<dkey>[A-Za-z_][A-Za-z0-9_-]*)   # recursive descent to a key
  | \.\.\*                                 # recursive descent to anything
  | \.\.(?=\[)                            # recursive descent to a bracket step
  | \.(?P<key>[A-Za-z_][A-Za-z0-9_-]*)
  | \.\*
  | \[\*\]
  | \[(?P<index>\d+)\]
  | \[(?P<quote>['"])(?P<qkey>(?:\\.|(?!(?P=quote)).)*)(?P=quote)\]
    """,
    re.VERBOSE,
)


def parse_pattern(pattern: str) -> tuple[Step, ...]:
    text = pattern.strip()
    if not text.startswith("$"):
        raise InvalidInput(
            f"path pattern {pattern!r} must start with '$', like '$.meta.generated_at'"
            " or '$.items[*].id'"
        )
    steps: list[Step] = []
    position = 1
    while position < len(text):
        match = _STEP.match(text, position)
        if match is None:
            raise InvalidInput(
                f"path pattern {pattern!r} is not understood at {text[position:]!r};"
                " use .key, ['key'], [3], [*], .* or ..key"
            )
        raw = match.group(0)
        if raw.startswith(".."):
            steps.append(("deep", None))
            if match.group("dkey") is not None:
                steps.append(("key", match.group("dkey")))
            elif raw == "..*":
                steps.append(("any", None))
        elif match.group("key") is not None:
            steps.append(("key", match.group("key")))
        elif raw in (".*", "[*]"):
            steps.append(("any", None))
        elif match.group("index") is not None:
            steps.append(("index", int(match.group("index"))))
        else:
            steps.append(("key", re.sub(r"\\(.)", r"\1", match.group("qkey"))))
        position = match.end()
    if steps and steps[-1][0] == "deep":
        raise InvalidInput(f"path pattern {pattern!r} ends with '..'; name what to match after it")
    return tuple(steps)


def _matches(steps: Sequence[Step], path: Sequence[Token]) -> bool:
    if not steps:
        return not path
    kind, value = steps[0]
    if kind == "deep":
        rest = steps[1:]
        return any(_matches(rest, path[start:]) for start in range(len(path)))
    if not path:
        return False
    token = path[0]
    if kind == "any":
        ok = True
    elif kind == "index":
        ok = isinstance(token, int) and not isinstance(token, bool) and token == value
    else:
        ok = isinstance(token, str) and token == value
    return ok and _matches(steps[1:], path[1:])


class PathSet:
    """A set of path patterns; ``path in patterns`` tests a path given as tokens."""

    __slots__ = ("_patterns", "source")

    def __init__(self, patterns: Iterable[str] = ()) -> None:
        self.source = tuple(patterns)
        self._patterns = tuple(parse_pattern(p) for p in self.source)

    def __bool__(self) -> bool:
        return bool(self._patterns)

    def __contains__(self, path: Sequence[Token]) -> bool:
        return any(_matches(steps, path) for steps in self._patterns)
