"""Diffs: the paths where two outputs differ, with both values, and a fingerprint to group them."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_INDEX = re.compile(r"\[\d+\]")


class _Missing:
    """Marks a side where the path does not exist."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<missing>"

    def __reduce__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()

Token = str | int
"""A path step: a mapping key (str) or a sequence index (int)."""


def format_path(tokens: tuple[Token, ...] | list[Token]) -> str:
    """``('items', 3, 'price')`` -> ``$.items[3].price``; odd keys are quoted: ``$['a b']``."""
    out = ["$"]
    for token in tokens:
        if isinstance(token, int) and not isinstance(token, bool):
            out.append(f"[{token}]")
        elif isinstance(token, str) and _IDENTIFIER.match(token):
            out.append(f".{token}")
        else:
            text = str(token).replace("\\", "\\\\").replace("'", "\\'")
            out.append(f"['{text}']")
    return "".join(out)


@dataclass(frozen=True, slots=True)
class Difference:
    """One path where the two arms disagree. ``MISSING`` marks a side without that path."""

    path: str
    legacy: Any
    new: Any
    note: str = ""  # e.g. "new raised ValueError"; part of the fingerprint
    scope: str = ""  # where it was found, e.g. an HTTP route "GET /users/{id}"; fingerprinted

    @property
    def kind(self) -> str:
        if self.legacy is MISSING:
            return "missing_in_legacy"
        if self.new is MISSING:
            return "missing_in_new"
        return "raised" if self.note else "changed"

    @property
    def pattern(self) -> str:
        """The path with its indices as ``[*]``: the field, whichever element it was."""
        return _INDEX.sub("[*]", self.path)

    @property
    def shape(self) -> str:
        """The pattern plus the note and scope: what this difference has in common with
        others of one root cause."""
        shape = self.pattern
        if self.note:
            shape = f"{shape} ({self.note})"
        return f"{self.scope} {shape}" if self.scope else shape


@dataclass(frozen=True, slots=True)
class Diff:
    """The differences between two outputs; empty means they match."""

    differences: tuple[Difference, ...] = ()
    truncated: bool = False  # more differences existed than were kept
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    def __bool__(self) -> bool:
        return bool(self.differences)

    def __len__(self) -> int:
        return len(self.differences)

    @property
    def fingerprint(self) -> str:
        """The sorted set of differing paths with indices dropped: drifts with one root cause
        share it, so ``cutover drifts --group`` counts causes rather than samples."""
        return " | ".join(sorted({difference.shape for difference in self.differences}))

    def paths(self) -> list[str]:
        return [difference.path for difference in self.differences]


def single(legacy: Any, new: Any, note: str = "") -> Diff:
    """A diff with one difference at the root."""
    return Diff((Difference("$", legacy, new, note),))
