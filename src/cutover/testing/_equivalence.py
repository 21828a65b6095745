"""Differential testing with Hypothesis: legacy and new run on generated inputs, and a
difference is shrunk to a minimal input, reported with its diff and kept as a golden vector."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from cutover.compare import Comparator, exceptions, structural
from cutover.model import Arm, Verdict
from cutover.replay import _golden
from cutover.replay._golden import Call, Comparators, as_call


def calls(*args: Any, **kwargs: Any) -> Any:
    """A Hypothesis strategy of calls: ``calls(st.integers(), mode=st.sampled_from(["a"]))``
    draws each argument from its strategy."""
    from hypothesis import strategies as st

    return st.builds(
        lambda drawn, named: Call(tuple(drawn), named),
        st.tuples(*args),
        st.fixed_dictionaries(kwargs),
    )


def assert_equivalent(
    legacy: Callable[..., Any],
    new: Callable[..., Any],
    strategy: Any,
    *,
    compare: Comparator | None = None,
    compare_exceptions: Comparator | None = None,
    max_examples: int = 200,
    golden: str | os.PathLike[str] | None = None,
    settings: Any = None,
) -> None:
    """Check that ``new`` answers as ``legacy`` does on inputs drawn from ``strategy`` (each a
    value, passed as the one argument, or a :class:`Call`).

    A difference is shrunk by Hypothesis to a minimal input and raised as AssertionError with
    the input and the diff path by path; with ``golden=PATH`` that input and legacy's answer
    are added to the golden file, so the case stays tested after the fix. Both raising counts
    as equivalent when ``compare_exceptions`` (default: same exception type name, see
    :func:`cutover.compare.exceptions`) says so; one raising and the other not is a
    difference. ``compare`` defaults to structural comparison.
    """
    from hypothesis import HealthCheck, Phase, given
    from hypothesis import settings as Settings

    comparators = Comparators(
        compare or structural(), compare_exceptions or exceptions(), "assert_equivalent"
    )
    name = getattr(legacy, "__name__", "legacy")
    differing: list[tuple[Call, Any]] = []  # the last one is the shrunk, final example

    def equivalent(value: Any) -> None:
        one = as_call(value)
        legacy_did, _ = _golden.observe(legacy, one, Arm.LEGACY)
        new_did, _ = _golden.observe(new, one)
        comparison = _golden.compared(name, one, legacy_did, new_did, comparators)
        if comparison.verdict is not Verdict.MATCH:
            differing.append((one, legacy_did))
            raise AssertionError(_golden.explain(comparison, one))

    chosen = settings or Settings(
        max_examples=max_examples,
        deadline=None,
        database=None,  # the golden file, not a hidden folder, is where found cases are kept
        report_multiple_bugs=False,
        phases=[p for p in Phase if p is not Phase.explain],  # the diff explains; less noise
        suppress_health_check=[HealthCheck.too_slow],
    )
    run = chosen(given(strategy)(equivalent))
    try:
        run()
    except AssertionError as error:
        if golden is not None and differing:
            one, legacy_did = differing[-1]
            found = _golden.vector_of(one, legacy_did, name, "found by assert_equivalent")
            _golden.append(
                golden,
                [found],
                legacy=_golden.function_path(legacy),
                compare=repr(comparators.values),
            )
            error.add_note(f"cutover: added as golden vector {found.label} to {os.fspath(golden)}")
        raise
