"""Golden vectors as test cases: one per vector, with a stable id and a check that fails with
the structural diff."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cutover.replay import _golden as golden
from cutover.replay._golden import Comparators, Vector


class GoldenMismatch(AssertionError):
    """A vector whose replay differs from legacy's recorded answer; the message is the diff."""


@dataclass(frozen=True, slots=True)
class GoldenCase:
    """One vector of a golden file, ready to check an implementation against."""

    vector: Vector
    source: str  # the golden file
    compare: Comparators
    migration: str
    target: Callable[..., Any] | None = None

    @property
    def args(self) -> tuple[Any, ...]:
        return self.vector.args

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.vector.kwargs)

    @property
    def expected(self) -> Any:
        """What legacy returned (``NOTHING`` when it raised: see ``vector.raised``)."""
        return self.vector.output

    @property
    def id(self) -> str:
        return self.vector.label

    def check(self, target: Callable[..., Any] | None = None) -> Any:
        """Run ``target`` (default: the one the marker or ``--cutover-target`` names) on the
        vector's input; GoldenMismatch with the diff unless it answers as legacy did. Returns
        what it answered."""
        __tracebackhide__ = True  # pytest shows the test's line and the diff, not cutover's code
        function = target or self.target
        if function is None:
            raise TypeError(
                "GoldenCase.check needs the implementation to check: pass it, or name it with"
                " target='module:function' in the cutover_golden marker"
            )
        outcome = golden.check(self.vector, function, self.compare, self.migration)
        if not outcome.matched:
            raise GoldenMismatch(f"golden vector {self.id} of {self.source}: {outcome.message()}")
        return outcome.new_value


def cases(
    path: str | os.PathLike[str],
    target: Callable[..., Any] | str | None = None,
    compare: Callable[[Any, Any], Any] | None = None,
) -> list[GoldenCase]:
    """One case per vector of the golden file at ``path``, compared as the file's migration
    compares (``compare`` overrides it) against ``target`` (a function or module:function)."""
    content = golden.read(path)
    function = golden.callable_at(target, "target") if isinstance(target, str) else target
    comparators = golden.comparators(content.header.migration, compare, content.header.legacy)
    name = content.header.migration or "golden"
    return [
        GoldenCase(vector, os.fspath(path), comparators, name, function)
        for vector in content.vectors
    ]


def golden_cases(
    path: str | os.PathLike[str],
    target: Callable[..., Any] | str | None = None,
    *,
    compare: Callable[[Any, Any], Any] | None = None,
) -> list[Any]:
    """``pytest.param`` per vector of the golden file at ``path``, each with the vector's id:
    ``@pytest.mark.parametrize("case", golden_cases("vectors.jsonl", new))`` and then
    ``case.check()`` in the test."""
    import pytest

    return [pytest.param(case, id=case.id) for case in cases(path, target, compare)]
