"""Comparators and diffs: exact, numeric, structural for nested data, and raised exceptions.

A comparator is any callable ``(legacy_value, new_value)`` returning True/False or a
:class:`Diff`. The built-in ones return a Diff naming every differing path with both values;
its ``fingerprint`` groups drifts that share a root cause.
"""

from cutover.compare._diff import MISSING, Diff, Difference, format_path
from cutover.compare._judge import Comparator, Exceptions, exceptions, judge
from cutover.compare._structural import Structural, exact, numeric, structural

__all__ = [
    "MISSING",
    "Comparator",
    "Diff",
    "Difference",
    "Exceptions",
    "Structural",
    "exact",
    "exceptions",
    "format_path",
    "judge",
    "numeric",
    "structural",
]
