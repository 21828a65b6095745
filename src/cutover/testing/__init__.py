"""Testing a new implementation against legacy: golden vectors under pytest, and differential
testing with Hypothesis (:func:`assert_equivalent`).

The pytest plugin loads itself when cutover is installed: ``pytest --cutover-golden FILE
--cutover-target module:function`` runs one test per vector of FILE, and
``@pytest.mark.cutover_golden("vectors.jsonl")`` parametrizes a test over a file's vectors
through the ``golden_vector`` fixture.
"""

from cutover.replay._golden import NOTHING, Call, call
from cutover.testing._cases import GoldenCase, GoldenMismatch, golden_cases
from cutover.testing._equivalence import assert_equivalent, calls

__all__ = [
    "NOTHING",
    "Call",
    "GoldenCase",
    "GoldenMismatch",
    "assert_equivalent",
    "call",
    "calls",
    "golden_cases",
]
