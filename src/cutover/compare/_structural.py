"""Comparators for values: exact, numeric with tolerances, and structural for nested data."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence, Set
from decimal import Decimal
from numbers import Real
from typing import Any

from cutover.compare._diff import MISSING, Diff, Difference, Token, format_path
from cutover.compare._paths import PathSet
from cutover.errors import InvalidInput

_SCALARS = (str, bytes, bytearray, bool, type(None))


def _is_number(value: Any) -> bool:
    return isinstance(value, Real | Decimal) and not isinstance(value, bool)


def _as_mapping(value: Any) -> Mapping[Any, Any] | None:
    if isinstance(value, Mapping):
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    dump = getattr(value, "model_dump", None)  # pydantic models
    if callable(dump) and not isinstance(value, type):
        try:
            result = dump()
        except Exception:  # noqa: BLE001 - an odd model is compared by == instead
            return None
        return result if isinstance(result, Mapping) else None
    return None


def _is_sequence(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, _SCALARS)


class _Walker:
    __slots__ = (
        "abs",
        "ignore",
        "limit",
        "nan_equal",
        "out",
        "rel",
        "rename",
        "strict",
        "truncated",
        "unordered",
    )

    def __init__(self, spec: Structural) -> None:
        self.rel = spec.rel
        self.abs = spec.abs
        self.nan_equal = spec.nan_equal
        self.strict = spec.strict_types
        self.ignore = spec.ignore
        self.unordered = spec.unordered
        self.rename = spec.rename
        self.limit = spec.max_differences
        self.out: list[Difference] = []
        self.truncated = False

    def add(self, path: list[Token], legacy: Any, new: Any) -> None:
        if len(self.out) >= self.limit:
            self.truncated = True
            return
        self.out.append(Difference(format_path(path), legacy, new))

    def numbers_equal(self, a: Any, b: Any) -> bool:
        if self.strict and type(a) is not type(b):
            return False
        try:
            if a == b:
                return not (self.strict and _zero_signs_differ(a, b))
            x, y = float(a), float(b)
        except (TypeError, ValueError, OverflowError, ArithmeticError):
            return False
        if math.isnan(x) or math.isnan(y):
            return self.nan_equal and math.isnan(x) and math.isnan(y)
        if not self.rel and not self.abs:
            return False
        return math.isclose(x, y, rel_tol=self.rel, abs_tol=self.abs)

    def equal(self, a: Any, b: Any, path: list[Token]) -> bool:
        """Whether two values at ``path`` match under the rules, without recording anything."""
        probe = _Walker.__new__(_Walker)
        for slot in _Walker.__slots__:
            setattr(probe, slot, getattr(self, slot))
        probe.out = []
        probe.limit = 1
        probe.truncated = False
        probe.walk(a, b, list(path))
        return not probe.out and not probe.truncated

    def walk(self, a: Any, b: Any, path: list[Token]) -> None:
        if self.ignore and path in self.ignore:
            return
        if len(self.out) >= self.limit:
            self.truncated = True
            return
        if _is_number(a) and _is_number(b):
            if not self.numbers_equal(a, b):
                self.add(path, a, b)
            return
        if isinstance(a, _SCALARS) or isinstance(b, _SCALARS):
            if type(a) is not type(b) or a != b:
                self.add(path, a, b)
            return
        mapping_a, mapping_b = _as_mapping(a), _as_mapping(b)
        if mapping_a is not None and mapping_b is not None:
            if self.strict and type(a) is not type(b):
                self.add(path, a, b)
                return
            self.walk_mappings(mapping_a, mapping_b, path)
            return
        set_like = isinstance(a, Set) and isinstance(b, Set)
        if set_like or (_is_sequence(a) and _is_sequence(b)):
            if self.strict and type(a) is not type(b):
                self.add(path, a, b)
            elif set_like or (self.unordered and path in self.unordered):
                self.walk_unordered(list(a), list(b), path)
            else:
                self.walk_sequences(a, b, path)
            return
        try:
            same = type(a) is type(b) and bool(a == b)
        except Exception:  # noqa: BLE001 - an __eq__ that raises means "not equal"
            same = False
        if not same:
            self.add(path, a, b)

    def walk_mappings(self, a: Mapping[Any, Any], b: Mapping[Any, Any], path: list[Token]) -> None:
        if self.rename:
            a = {self.rename.get(key, key): value for key, value in a.items()}
        for key, value in a.items():
            path.append(key)
            if key in b:
                self.walk(value, b[key], path)
            elif not (self.ignore and path in self.ignore):
                self.add(path, value, MISSING)
            path.pop()
        for key, value in b.items():
            if key not in a:
                path.append(key)
                if not (self.ignore and path in self.ignore):
                    self.add(path, MISSING, value)
                path.pop()

    def walk_sequences(self, a: Sequence[Any], b: Sequence[Any], path: list[Token]) -> None:
        for index in range(max(len(a), len(b))):
            path.append(index)
            if index >= len(a):
                self.add(path, MISSING, b[index])
            elif index >= len(b):
                self.add(path, a[index], MISSING)
            else:
                self.walk(a[index], b[index], path)
            path.pop()

    def walk_unordered(self, a: list[Any], b: list[Any], path: list[Token]) -> None:
        """Match elements as a multiset; report what is left on each side."""
        remaining = list(range(len(b)))
        unmatched_a = []
        for index_a, value in enumerate(a):
            # Ignore patterns like $.items[*].ts apply inside the elements too.
            at = [*path, index_a]
            for position, index_b in enumerate(remaining):
                if self.equal(value, b[index_b], at):
                    del remaining[position]
                    break
            else:
                unmatched_a.append(index_a)
        for index_a in unmatched_a:
            path.append(index_a)
            self.add(path, a[index_a], MISSING)
            path.pop()
        for index_b in remaining:
            path.append(index_b)
            self.add(path, MISSING, b[index_b])
            path.pop()


@dataclasses.dataclass(frozen=True, slots=True, eq=False)
class Structural:
    """Compare nested dicts, lists, tuples, sets, dataclasses and numbers, path by path.

    ``ignore``     path patterns whose values never count (``$.meta.generated_at``,
                   ``$.items[*].id``, ``$..trace_id``)
    ``rel/abs``    tolerances for numbers (as in ``math.isclose``)
    ``unordered``  path patterns of lists compared as multisets (``$.tags``)
    ``rename``     legacy key -> new key, for fields the new arm renamed
    ``strict_types``  1 and 1.0, a list and a tuple, or 0.0 and -0.0 differ
    """

    ignore: PathSet = dataclasses.field(default_factory=PathSet)
    rel: float = 0.0
    abs: float = 0.0
    unordered: PathSet = dataclasses.field(default_factory=PathSet)
    rename: Mapping[Any, Any] = dataclasses.field(default_factory=dict)
    nan_equal: bool = True
    strict_types: bool = False
    max_differences: int = 50

    def __call__(self, legacy: Any, new: Any) -> Diff:
        if not self.rename and _fast_equal(legacy, new, self.strict_types):
            return Diff()
        walker = _Walker(self)
        walker.walk(legacy, new, [])
        return Diff(tuple(walker.out), walker.truncated)

    def __repr__(self) -> str:
        options = []
        if self.ignore:
            options.append(f"ignore={list(self.ignore.source)!r}")
        if self.unordered:
            options.append(f"unordered={list(self.unordered.source)!r}")
        if self.rel or self.abs:
            options.append(f"rel={self.rel!r}, abs={self.abs!r}")
        if self.rename:
            options.append(f"rename={dict(self.rename)!r}")
        return f"structural({', '.join(options)})"


_FLAT = (str, bytes, bytearray, int, float, bool, type(None))


def _zero_signs_differ(a: Any, b: Any) -> bool:
    """0.0 and -0.0: equal by ``==``, yet not the same float (``1 / x``, ``str(x)`` and
    ``math.copysign`` tell them apart), so exact comparison tells them apart too."""
    return (
        isinstance(a, float)
        and isinstance(b, float)
        and a == 0.0
        and math.copysign(1.0, a) != math.copysign(1.0, b)
    )


def _fast_equal(a: Any, b: Any, strict: bool) -> bool:
    """``==`` decides most matches in C, so only a mismatch pays for the walk.

    Under strict types ``==`` is trusted only for flat values: ``{"a": 1} == {"a": 1.0}`` is
    True in Python, but the types inside differ, so equal containers are walked too.
    """
    if strict and (type(a) is not type(b) or type(a) not in _FLAT):
        return False
    try:
        return bool(a == b) and not (strict and _zero_signs_differ(a, b))
    except Exception:  # noqa: BLE001 - fall back to the walk
        return False


def _tolerance(value: float, name: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidInput(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(number) or number < 0:
        raise InvalidInput(f"{name} must be zero or a positive number, got {value!r}")
    return number


def _paths(value: Iterable[str] | str | None, name: str) -> PathSet:
    if value is None:
        return PathSet()
    if isinstance(value, str):
        value = [value]
    try:
        return PathSet(value)
    except InvalidInput as error:
        raise InvalidInput(f"{name}: {error}") from None


def exact() -> Structural:
    """Equal by ``==`` with the same types, floats as the same value: 0.0 and -0.0 differ, and
    NaN differs from everything, itself included. Diffs name the paths."""
    return Structural(strict_types=True, nan_equal=False)


def numeric(rel: float = 0.0, abs: float = 0.0, nan_equal: bool = True) -> Structural:
    """Numbers equal within ``rel`` (relative) or ``abs`` (absolute), also inside lists: 0.0
    equals -0.0 at any tolerance, and NaN equals NaN unless ``nan_equal=False``."""
    return Structural(rel=_tolerance(rel, "rel"), abs=_tolerance(abs, "abs"), nan_equal=nan_equal)


def structural(
    ignore: Iterable[str] | str | None = None,
    rel: float = 0.0,
    abs: float = 0.0,
    unordered: Iterable[str] | str | None = None,
    rename: Mapping[str, str] | None = None,
    nan_equal: bool = True,
    max_differences: int = 50,
) -> Structural:
    """Nested data (JSON, dicts, lists, dataclasses) compared path by path with the options."""
    if max_differences < 1:
        raise InvalidInput(f"max_differences must be at least 1, got {max_differences!r}")
    return Structural(
        ignore=_paths(ignore, "ignore"),
        rel=_tolerance(rel, "rel"),
        abs=_tolerance(abs, "abs"),
        unordered=_paths(unordered, "unordered"),
        rename=dict(rename or {}),
        nan_equal=nan_equal,
        max_differences=max_differences,
    )
