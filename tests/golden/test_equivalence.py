"""assert_equivalent: Hypothesis finds a planted difference, shrinks it to the boundary, reports
it with the diff, and keeps it as a golden vector."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import strategies as st

from cutover.compare import exceptions
from cutover.replay import _golden as golden
from cutover.testing import assert_equivalent, call, calls

from . import codecs


def test_an_off_by_one_shrinks_to_the_boundary_and_joins_the_golden_file(tmp_path: Path) -> None:
    path = tmp_path / "fees.jsonl"
    with pytest.raises(AssertionError) as caught:
        assert_equivalent(
            codecs.legacy_fee,
            codecs.new_fee,
            st.integers(min_value=0, max_value=1_000_000),
            max_examples=500,
            golden=path,
        )
    message = str(caught.value)
    assert message.startswith("legacy and new differ on (1000):")
    assert "$: legacy 30, new 31" in message
    [vector] = golden.read(path).vectors
    assert vector.args == (1000,) and vector.output == 30 and vector.kwargs == {}
    assert vector.note == "found by assert_equivalent"
    assert "added as golden vector legacy_fee-" in "\n".join(caught.value.__notes__)
    assert golden.read(path).header.legacy == "tests.golden.codecs:legacy_fee"


def test_equivalent_implementations_pass_including_matching_exceptions() -> None:
    frames = st.sampled_from([f for f in codecs.frames() if isinstance(f, bytes)])
    assert_equivalent(codecs.legacy_decode, codecs.new_decode, frames, max_examples=50)
    assert_equivalent(
        codecs.legacy_decode,
        codecs.new_decode,
        calls(frames, strict=st.booleans()),
        max_examples=50,
    )


def test_one_side_raising_is_a_difference_and_messages_can_count() -> None:
    def strict(x: int) -> int:
        if x > 5:
            raise ValueError(f"{x} is too big")
        return x

    def lenient(x: int) -> int:
        return x

    with pytest.raises(AssertionError, match=r"on \(6\):\n  \$: legacy '<raised ValueError"):
        assert_equivalent(strict, lenient, st.integers(0, 100))

    def worded(x: int) -> int:
        raise ValueError("other words")

    def plain(x: int) -> int:
        raise ValueError("words")

    assert_equivalent(plain, worded, st.integers())  # same type: equivalent by default
    with pytest.raises(AssertionError, match=r"\$.exception.message: legacy 'words'"):
        assert_equivalent(plain, worded, st.integers(), compare_exceptions=exceptions(True))


def test_calls_pass_keyword_arguments() -> None:
    seen = []

    def legacy(a: int, *, b: str) -> str:
        seen.append((a, b))
        return f"{a}{b}"

    assert_equivalent(legacy, legacy, calls(st.just(1), b=st.just("x")), max_examples=1)
    assert seen == [(1, "x"), (1, "x")]
    assert call(1, b="x").show() == "(1, b='x')"
