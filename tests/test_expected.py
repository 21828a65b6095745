"""Expected exceptions are answers, not errors; and a fallback is evidence, not a blind spot."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

import cutover
from cutover.errors import InvalidInput
from cutover.runtime import Runtime
from cutover.stats import check

from .helpers import put, stored


def parse_legacy(text: str) -> int:
    if not text.isdigit():
        raise ValueError(f"not a number: {text!r}")
    return int(text)


def parse_new(text: str) -> int:
    if not text.isdigit() or text == "7":  # new wrongly refuses 7
        raise ValueError(f"not a number: {text!r}")
    return int(text)


INPUTS = [str(i) if i % 4 else f"x{i}" for i in range(100)]  # a quarter is bad input


def test_expected_exceptions_are_compared_but_not_errors(runtime: Runtime) -> None:
    parse = cutover.Migration("parse", parse_legacy, parse_new, expected_exceptions=ValueError)
    put(runtime, "parse", mode="shadow", sample=1.0)
    for text in INPUTS:
        if text.isdigit():
            assert parse(text) == int(text)
        else:
            with pytest.raises(ValueError):
                parse(text)
    stats = stored(runtime, "parse")
    assert (stats.legacy.calls, stats.legacy.errors, stats.legacy.expected) == (100, 0, 25)
    assert (stats.new.calls, stats.new.errors, stats.new.expected) == (100, 0, 26)
    assert stats.legacy.error_rate == 0 and stats.new.error_rate == 0
    # Both raising ValueError on bad input is a match; refusing a good "7" is the one drift.
    assert (stats.comparisons, stats.drifts) == (100, 1)
    [group] = runtime.store.drift_groups("parse")
    assert group.example is not None and "new raised ValueError" in str(group.example.diff)


def test_without_a_declaration_they_stay_errors(runtime: Runtime) -> None:
    parse = cutover.Migration("parse", parse_legacy, parse_new)
    put(runtime, "parse", mode="shadow", sample=1.0)
    for text in INPUTS:
        with contextlib.suppress(ValueError):
            parse(text)
    stats = stored(runtime, "parse")
    assert (stats.legacy.errors, stats.legacy.expected, stats.legacy.error_rate) == (25, 0, 0.25)


def test_an_expected_exception_of_new_is_its_answer_in_canary(runtime: Runtime) -> None:
    parse = cutover.Migration(
        "parse",
        parse_legacy,
        parse_new,
        expected_exceptions=lambda error: isinstance(error, ValueError),
        unit=str,
    )
    put(runtime, "parse", mode="canary", percent=100, sample=0)
    with pytest.raises(ValueError, match="not a number: 'x0'"):
        parse("x0")
    with pytest.raises(ValueError, match="not a number: '7'"):
        parse("7")  # new's answer reaches the caller: no fallback for an answer
    assert parse("8") == 8
    stats = stored(runtime, "parse")
    assert (stats.new.expected, stats.new.errors, stats.new.fallbacks) == (2, 0, 0)


def test_a_predicate_that_raises_expects_nothing(runtime: Runtime) -> None:
    def broken(error: Exception) -> bool:
        raise RuntimeError("predicate bug")

    parse = cutover.Migration("parse", parse_legacy, parse_new, expected_exceptions=broken)
    with pytest.raises(ValueError):
        parse("x")
    stats = stored(runtime, "parse")
    assert (stats.legacy.errors, stats.legacy.expected) == (1, 0)


@pytest.mark.parametrize(
    "given", [42, "ValueError", (ValueError, "KeyError"), (), KeyboardInterrupt]
)
def test_a_bad_declaration_is_one_sentence(runtime: Runtime, given: object) -> None:
    with pytest.raises(InvalidInput, match="expected_exceptions of migration 'parse' must be"):
        cutover.Migration("parse", parse_legacy, parse_new, expected_exceptions=given)  # type: ignore[arg-type]


def failing_on_a_tenth(text: str) -> int:
    if int(text) % 10 == 3:
        raise RuntimeError("new crashed")
    return int(text)


def test_a_canary_fallback_is_a_drift_in_the_evidence(runtime: Runtime) -> None:
    numbers = cutover.Migration("numbers", int, failing_on_a_tenth, unit=str)
    put(runtime, "numbers", mode="canary", percent=100, sample=1.0)
    assert [numbers(str(i)) for i in range(100)] == list(range(100))  # legacy answers for new
    stats = stored(runtime, "numbers")
    assert (stats.new.errors, stats.new.fallbacks) == (10, 10)
    assert (stats.comparisons, stats.drifts) == (100, 10)
    assert stats.drift_rate == pytest.approx(0.10)
    [parity] = check(stats, max_drift_rate=0.05)
    assert parity.breached, "failing must not pass a parity check"
    [group] = runtime.store.drift_groups("numbers")
    assert group.count == 10 and "new raised RuntimeError" in str(group.example.diff)  # type: ignore[union-attr]


def test_a_fallback_where_legacy_fails_alike_is_a_match(runtime: Runtime) -> None:
    def both_fail(text: str) -> int:
        raise KeyError(text)

    lookup = cutover.Migration("lookup", both_fail, both_fail, unit=str)
    put(runtime, "lookup", mode="canary", percent=100, sample=1.0)
    for i in range(5):
        with pytest.raises(KeyError):
            lookup(str(i))
    stats = stored(runtime, "lookup")
    assert (stats.new.fallbacks, stats.legacy.errors) == (5, 5)
    assert (stats.comparisons, stats.drifts) == (5, 0)


def test_an_unsampled_fallback_is_counted_not_compared(runtime: Runtime) -> None:
    numbers = cutover.Migration("numbers", int, failing_on_a_tenth, unit=str)
    put(runtime, "numbers", mode="canary", percent=100, sample=0)
    assert [numbers(str(i)) for i in range(100)] == list(range(100))
    stats = stored(runtime, "numbers")
    assert (stats.new.fallbacks, stats.comparisons, stats.drifts) == (10, 0, 0)


def test_async_expected_exceptions_and_fallback_evidence(runtime: Runtime) -> None:
    async def legacy(text: str) -> int:
        return parse_legacy(text)

    async def new(text: str) -> int:
        if text == "13":
            raise RuntimeError("new crashed")
        return parse_new(text)

    parse = cutover.Migration("parse", legacy, new, expected_exceptions=ValueError, unit=str)

    async def scenario() -> list[object]:
        put(runtime, "parse", mode="canary", percent=100, sample=1.0)
        out: list[object] = []
        for text in ("1", "x", "13", "7"):
            try:
                out.append(await parse(text))
            except ValueError as error:
                out.append(type(error).__name__)
        await cutover.aflush()
        return out

    assert asyncio.run(scenario()) == [1, "ValueError", 13, "ValueError"]
    stats = stored(runtime, "parse")
    assert (stats.new.expected, stats.new.errors, stats.new.fallbacks) == (2, 1, 1)
    # "13" fell back (new crashed, legacy answered) and "7" was refused by new only: 2 drifts.
    assert (stats.comparisons, stats.drifts) == (4, 2)
