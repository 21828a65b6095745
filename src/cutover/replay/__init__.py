"""Replaying recorded inputs through an implementation and judging what it answers: golden
vectors for in-process functions."""

from cutover.replay._golden import (
    NOTHING,
    Call,
    Golden,
    Outcome,
    Vector,
    call,
)

__all__ = ["NOTHING", "Call", "Golden", "Outcome", "Vector", "call"]
