"""Comparators: what matches, what drifts, and the diffs and fingerprints they produce."""

from __future__ import annotations

import dataclasses
import math
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cutover import compare
from cutover.compare import MISSING, Diff
from cutover.errors import InvalidInput
from cutover.model import Arm, Observation, Verdict

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=20,
)


def paths(diff: Diff) -> list[str]:
    return sorted(diff.paths())


def test_exact_matches_equal_values_and_names_differing_paths() -> None:
    exact = compare.exact()
    assert not exact({"a": [1, 2]}, {"a": [1, 2]})
    diff = exact({"a": [1, 2], "b": "x"}, {"a": [1, 3], "b": "x", "c": None})
    assert paths(diff) == ["$.a[1]", "$.c"]
    assert diff.differences[1].legacy is MISSING and diff.differences[1].kind == "missing_in_legacy"
    assert exact(1, 1.0), "exact compares types"
    assert exact(True, 1)
    assert paths(exact({"a": 1}, {"a": 1.0})) == ["$.a"], "also inside containers"
    assert paths(exact([True, 2], [1, 2])) == ["$[0]"]
    nan = float("nan")
    assert exact(nan, nan) and exact([nan], [nan]), "NaN differs from NaN, even itself"


def test_numeric_tolerances() -> None:
    assert not compare.numeric(rel=1e-9)(100.0, 100.0 + 1e-8)
    assert compare.numeric(rel=1e-9)(100.0, 100.1)
    assert not compare.numeric(abs=0.01)(1.0, 1.005)
    assert not compare.numeric()(float("nan"), float("nan"))
    assert compare.numeric(nan_equal=False)(float("nan"), float("nan"))
    assert not compare.numeric(rel=1e-6)([1.0, 2.0], [1.0000001, 2.0])
    assert not compare.numeric()(Decimal("1.10"), Decimal("1.1"))
    assert not compare.numeric(abs=0.001)(Decimal("1.1000"), 1.1004)
    with pytest.raises(InvalidInput, match="rel must be zero or a positive number"):
        compare.numeric(rel=-1)


def test_structural_ignore_unordered_rename_and_tolerance() -> None:
    legacy = {
        "meta": {"generated_at": "2026-01-01", "version": 1},
        "items": [{"id": 1, "price": 10.0}, {"id": 2, "price": 20.0}],
        "tags": ["a", "b", "c"],
        "legacy_key": 5,
    }
    new = {
        "meta": {"generated_at": "2026-05-05", "version": 1},
        "items": [{"id": 91, "price": 10.0000001}, {"id": 92, "price": 20.0}],
        "tags": ["c", "a", "b"],
        "new_key": 5,
    }
    comparator = compare.structural(
        ignore=["$.meta.generated_at", "$.items[*].id"],
        rel=1e-6,
        unordered=["$.tags"],
        rename={"legacy_key": "new_key"},
    )
    assert not comparator(legacy, new)
    new["tags"] = ["c", "a", "z"]
    new["items"][1]["price"] = 21.0
    diff = comparator(legacy, new)
    assert paths(diff) == ["$.items[1].price", "$.tags[1]", "$.tags[2]"]
    assert diff.fingerprint == "$.items[*].price | $.tags[*]"


def test_ignore_applies_inside_unordered_lists() -> None:
    comparator = compare.structural(ignore=["$.items[*].ts"], unordered=["$.items"])
    legacy = {"items": [{"id": 1, "ts": 10}, {"id": 2, "ts": 20}]}
    new = {"items": [{"id": 2, "ts": 99}, {"id": 1, "ts": 98}]}
    assert not comparator(legacy, new)
    new["items"][0]["id"] = 3
    assert paths(comparator(legacy, new)) == ["$.items[0]", "$.items[1]"]


def test_recursive_descent_and_quoted_keys() -> None:
    comparator = compare.structural(ignore=["$..trace_id", "$['odd key']"])
    a = {"x": {"trace_id": 1, "deep": [{"trace_id": 2, "v": 1}]}, "odd key": 1}
    b = {"x": {"trace_id": 9, "deep": [{"trace_id": 8, "v": 1}]}, "odd key": 2}
    assert not comparator(a, b)
    diff = compare.exact()({"odd key": 1}, {"odd key": 2})
    assert diff.paths() == ["$['odd key']"]


def test_bad_patterns_are_named() -> None:
    with pytest.raises(InvalidInput, match=r"ignore: path pattern 'meta.at' must start with '\$'"):
        compare.structural(ignore=["meta.at"])
    with pytest.raises(InvalidInput, match="not understood at '!x'"):
        compare.structural(unordered=["$.a!x"])


def test_dataclasses_and_sets_are_compared_structurally() -> None:
    @dataclasses.dataclass
    class Point:
        x: float
        y: float

    assert not compare.numeric(abs=0.1)(Point(1, 2), Point(1.05, 2))
    assert paths(compare.exact()(Point(1, 2), Point(1, 3))) == ["$.y"]
    assert not compare.exact()({1, 2, 3}, {3, 2, 1})
    assert compare.exact()({1, 2}, {1, 3})


def test_differences_are_capped() -> None:
    diff = compare.structural(max_differences=3)(list(range(10)), list(range(10, 20)))
    assert len(diff) == 3 and diff.truncated


def test_exceptions_compare_by_type_name_and_optionally_message() -> None:
    by_type = compare.exceptions()
    assert not by_type(ValueError("a"), ValueError("b"))
    assert by_type(ValueError("a"), KeyError("a")).paths() == ["$.exception.type"]
    with_message = compare.exceptions(message=True)
    assert with_message(ValueError("a"), ValueError("b")).paths() == ["$.exception.message"]

    class DecodeError(Exception):
        pass

    class RustDecodeError(Exception):
        pass

    assert not compare.exceptions(equivalent=[(DecodeError, RustDecodeError)])(
        DecodeError(), RustDecodeError()
    )


def observation(arm: Arm, value: object = None, error: Exception | None = None) -> Observation:
    return Observation(arm, value=value, exception=error)


def test_judge_verdicts() -> None:
    exact, errors = compare.exact(), compare.exceptions()
    legacy = observation(Arm.LEGACY, 1)
    assert compare.judge(exact, errors, legacy, observation(Arm.NEW, 1))[0] is Verdict.MATCH
    verdict, diff, _ = compare.judge(exact, errors, legacy, observation(Arm.NEW, 2))
    assert verdict is Verdict.DRIFT and diff.fingerprint == "$"
    verdict, diff, _ = compare.judge(
        exact, errors, legacy, observation(Arm.NEW, error=ValueError("x"))
    )
    assert verdict is Verdict.DRIFT and diff.fingerprint == "$ (new raised ValueError)"

    def broken(a: object, b: object) -> bool:
        raise RuntimeError("comparator bug")

    verdict, diff, problem = compare.judge(broken, errors, legacy, observation(Arm.NEW, 1))
    assert verdict is Verdict.ERROR and isinstance(problem, RuntimeError) and diff is None

    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no str for you")

    verdict, diff, _ = compare.judge(
        exact, errors, legacy, observation(Arm.NEW, error=Unprintable())
    )
    assert verdict is Verdict.DRIFT and diff.fingerprint == "$ (new raised Unprintable)"


def test_custom_comparators_are_plain_callables() -> None:
    errors = compare.exceptions()
    legacy, new = observation(Arm.LEGACY, "ABC"), observation(Arm.NEW, "abc")
    assert compare.judge(str.__eq__, errors, legacy, new)[0] is Verdict.DRIFT
    same = compare.judge(lambda a, b: a.lower() == b.lower(), errors, legacy, new)
    assert same[0] is Verdict.MATCH


@given(json_values)
def test_a_value_always_matches_itself(value: object) -> None:
    assert not compare.structural()(value, value)
    assert not compare.exact()(value, value)


@given(st.dictionaries(st.text(max_size=5), json_values, min_size=1, max_size=6), st.data())
def test_any_changed_key_is_reported_at_its_path(base: dict, data: st.DataObject) -> None:
    key = data.draw(st.sampled_from(sorted(base)))
    changed = dict(base)
    changed[key] = {"changed": base[key]}
    diff = compare.structural()(base, changed)
    where = compare.format_path([key])
    assert diff, "a changed value must drift"
    assert all(
        path == where or path.startswith((where + ".", where + "[")) for path in diff.paths()
    )


@given(st.lists(st.floats(allow_nan=False, allow_infinity=False, width=32), max_size=10))
def test_numeric_tolerance_never_reports_values_within_it(values: list[float]) -> None:
    nudged = [v + abs(v) * 1e-10 for v in values]
    assert not compare.numeric(rel=1e-9)(values, nudged)
    assert all(math.isfinite(v) for v in nudged)


def test_exact_tells_the_sign_of_zero_and_numeric_does_not() -> None:
    exact = compare.exact()
    assert paths(exact(0.0, -0.0)) == ["$"]
    assert paths(exact({"total": [1.5, -0.0]}, {"total": [1.5, 0.0]})) == ["$.total[1]"]
    assert paths(exact((0.0,), (-0.0,))) == ["$[0]"]
    assert not exact(-0.0, -0.0) and not exact([0.0], [0.0])
    assert exact(0, -0.0), "an int is never a float under exact"
    nan = float("nan")
    assert exact(nan, nan) and exact(nan, 0.0)
    for equal in (compare.numeric(), compare.structural(), compare.numeric(abs=0.1)):
        assert not equal(0.0, -0.0) and not equal({"t": [-0.0]}, {"t": [0.0]})
    assert not compare.numeric()(nan, nan) and compare.numeric(nan_equal=False)(nan, nan)


@given(st.floats())
def test_exact_matches_a_float_only_with_the_same_value(value: float) -> None:
    exact = compare.exact()
    for other in (value, -value, 0.0, -0.0):
        same = not math.isnan(value) and math.copysign(1, value) == math.copysign(1, other)
        same = same and value == other
        assert (not exact(value, other)) == same, (value, other)
        assert (not exact([value], [other])) == same, (value, other)
