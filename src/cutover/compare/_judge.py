"""Turning two observations into a verdict: match, drift (with a diff) or comparator error."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from cutover.compare._diff import Diff, Difference, single
from cutover.model import Observation, Verdict

Comparator = Callable[[Any, Any], Any]
"""Any callable ``(legacy_value, new_value) -> bool | Diff``: True or an empty Diff is a match."""


def _type_name(error: BaseException | type[BaseException] | str) -> str:
    if isinstance(error, str):
        return error
    kind = error if isinstance(error, type) else type(error)
    return kind.__name__


@dataclass(frozen=True, slots=True)
class Exceptions:
    """Compares two raised exceptions by type name and, with ``message=True``, by message.

    Names, not classes, are compared so that ``legacy.DecodeError`` and a Rust extension's
    ``DecodeError`` agree; ``equivalent`` pairs further names that mean the same failure.
    """

    message: bool = False
    equivalent: tuple[tuple[str, str], ...] = ()

    def __call__(self, legacy: BaseException, new: BaseException) -> Diff:
        legacy_name, new_name = _type_name(legacy), _type_name(new)
        same_type = legacy_name == new_name or (legacy_name, new_name) in self.equivalent
        differences = []
        if not same_type:
            differences.append(Difference("$.exception.type", legacy_name, new_name))
        if self.message and str(legacy) != str(new):
            differences.append(Difference("$.exception.message", str(legacy), str(new)))
        return Diff(tuple(differences))


def exceptions(
    message: bool = False,
    equivalent: Iterable[tuple[type[BaseException] | str, type[BaseException] | str]] = (),
) -> Exceptions:
    """How raised exceptions are compared: by type name, and optionally by message."""
    pairs = tuple((_type_name(a), _type_name(b)) for a, b in equivalent)
    return Exceptions(message=message, equivalent=pairs + tuple((b, a) for a, b in pairs))


def describe_exception(error: BaseException) -> str:
    return f"<raised {type(error).__name__}: {error}>"


def judge(
    compare: Comparator, compare_exceptions: Comparator, legacy: Observation, new: Observation
) -> tuple[Verdict, Diff | None, BaseException | None]:
    """The verdict on one call. A comparator that raises yields ERROR, never an exception."""
    if legacy.exception is not None or new.exception is not None:
        if legacy.exception is None:
            assert new.exception is not None
            diff = single(
                legacy.value,
                describe_exception(new.exception),
                f"new raised {type(new.exception).__name__}",
            )
            return Verdict.DRIFT, diff, None
        if new.exception is None:
            diff = single(
                describe_exception(legacy.exception),
                new.value,
                f"legacy raised {type(legacy.exception).__name__}",
            )
            return Verdict.DRIFT, diff, None
        comparator, left, right = compare_exceptions, legacy.exception, new.exception
    else:
        comparator, left, right = compare, legacy.value, new.value
    try:
        outcome = comparator(left, right)
        if isinstance(outcome, Diff):
            diff = outcome
        elif outcome:
            diff = Diff()
        else:
            diff = single(left, right)
    except Exception as error:  # noqa: BLE001 - a broken comparator is counted, not raised
        return Verdict.ERROR, None, error
    return (Verdict.DRIFT, diff, None) if diff else (Verdict.MATCH, None, None)
