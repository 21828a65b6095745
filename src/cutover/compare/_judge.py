"""Turning two observations into a verdict: match, drift (with a diff) or comparator error."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from cutover.compare._diff import Diff, Difference, single
from cutover.model import Arm, Observation, Verdict

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
    try:
        message = str(error)
    except Exception:  # noqa: BLE001 - an exception whose __str__ fails still gets described
        message = object.__repr__(error)
    return f"<raised {type(error).__name__}: {message}>"


def _one_raised(error: BaseException, value: Any, raised_by: Arm) -> Diff:
    """One arm raised, the other returned: a drift at the root noting who raised what."""
    note = f"{raised_by.value} raised {type(error).__name__}"
    if raised_by is Arm.LEGACY:
        return single(describe_exception(error), value, note)
    return single(value, describe_exception(error), note)


def judge(
    compare: Comparator, compare_exceptions: Comparator, legacy: Observation, new: Observation
) -> tuple[Verdict, Diff | None, BaseException | None]:
    """The verdict on one call. A comparator that raises yields ERROR, never an exception."""
    try:
        if legacy.exception is not None and new.exception is None:
            return Verdict.DRIFT, _one_raised(legacy.exception, new.value, Arm.LEGACY), None
        if new.exception is not None and legacy.exception is None:
            return Verdict.DRIFT, _one_raised(new.exception, legacy.value, Arm.NEW), None
        if legacy.exception is not None and new.exception is not None:
            outcome = compare_exceptions(legacy.exception, new.exception)
            left, right = legacy.exception, new.exception
        else:
            outcome = compare(legacy.value, new.value)
            left, right = legacy.value, new.value
        if isinstance(outcome, Diff):
            diff = outcome
        elif outcome:
            diff = Diff()
        else:
            diff = single(left, right)
    except Exception as error:  # noqa: BLE001 - a broken comparator is counted, not raised
        return Verdict.ERROR, None, error
    return (Verdict.DRIFT, diff, None) if diff else (Verdict.MATCH, None, None)
