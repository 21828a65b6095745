"""The pytest plugin, run in a pytest of its own: one test per golden vector with a readable,
stable id, and a failing vector's structural diff in its failure message."""

from __future__ import annotations

import decimal
import importlib
from pathlib import Path

import pytest

from cutover.replay import _golden as golden

from . import codecs

pytest_plugins = ["pytester"]

CODEC = Path(codecs.__file__).read_text()


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    """A project with the codec module and a golden file of three frames of its legacy."""
    pytester.makepyfile(paycodec=CODEC)
    pytester.syspathinsert()
    module = importlib.import_module("paycodec")
    frames = [f for f in module.frames() if isinstance(f, bytes)][:3]
    vectors = golden.record(module.legacy_decode, frames, group="decode")
    golden.golden(
        vectors, migration=None, legacy="paycodec:legacy_decode", compare="exact()"
    ).write(pytester.path / "vectors.jsonl")
    return pytester


def test_command_line_runs_one_test_per_vector(project: pytest.Pytester) -> None:
    passed = project.runpytest("--cutover-golden", "vectors.jsonl",
                               "--cutover-target", "paycodec:new_decode", "-v")  # fmt: skip
    passed.assert_outcomes(passed=3)
    ids = sorted(v.label for v in golden.read(project.path / "vectors.jsonl").vectors)
    for label in ids:
        passed.stdout.fnmatch_lines([f"vectors.jsonl::{label} PASSED*"])

    failed = project.runpytest("--cutover-golden", "vectors.jsonl",
                               "--cutover-target", "paycodec:drifting_decode")  # fmt: skip
    failed.assert_outcomes(passed=2, failed=1)
    failed.stdout.fnmatch_lines(
        [
            "*golden vector decode-* of *vectors.jsonl: legacy and new differ on (b'P|GBP|1234.56*",
            "  $.amount: legacy Decimal('1234.56'), new Decimal('1235')",
        ]
    )


def test_marker_and_fixture_parametrize_a_test(project: pytest.Pytester) -> None:
    project.makepyfile(
        test_codec="""
        import pytest
        import paycodec
        from cutover.testing import golden_cases

        @pytest.mark.cutover_golden("vectors.jsonl", target=paycodec.drifting_decode)
        def test_decode(golden_vector):
            golden_vector.check()

        @pytest.mark.cutover_golden("vectors.jsonl")
        def test_explicit(golden_vector):
            assert golden_vector.args and golden_vector.expected["currency"]
            golden_vector.check(paycodec.new_decode)

        def test_unmarked(golden_vector):
            pass

        @pytest.mark.parametrize("case", golden_cases("vectors.jsonl", "paycodec:new_decode"))
        def test_helper(case):
            case.check()
        """
    )
    result = project.runpytest("-v")
    result.assert_outcomes(passed=8, failed=1, errors=1)
    for line in (
        "*test_codec.py::test_decode[[]decode-*[]] PASSED*",
        "*test_codec.py::test_explicit[[]decode-*[]] PASSED*",
        "*test_codec.py::test_helper[[]decode-*[]] PASSED*",
        "*test_codec.py::test_decode[[]decode-*[]] FAILED*",
        "E*GoldenMismatch: golden vector decode-* of *vectors.jsonl: legacy and new differ on*",
        "E*$.amount: legacy Decimal('1234.56'), new Decimal('1235')",
        "*test_unmarked uses golden_vector without a golden file; mark it with*",
    ):
        result.stdout.fnmatch_lines([line])
    result.stdout.no_fnmatch_line("*_cases.py*")  # the diff, not cutover's code


def test_without_a_target_is_a_usage_error(project: pytest.Pytester) -> None:
    result = project.runpytest("--cutover-golden", "vectors.jsonl")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--cutover-golden needs --cutover-target module:function*"])


def test_the_codec_is_what_the_plugin_tests_see() -> None:
    assert codecs.legacy_decode(b"P|EUR|1.5|2026-01-01T00:00:00|")["amount"] == decimal.Decimal(
        "1.5"
    )


def test_a_session_without_golden_vectors_never_imports_cutover(
    pytester: pytest.Pytester,
) -> None:
    """pytest loads the plugin wherever cutover is installed: a session that asks for no golden
    vector must not pay for importing cutover."""
    pytester.makepyfile(
        test_plain="""
        import sys

        def test_plain():
            assert "cutover" not in sys.modules
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
