"""Replaying recorded inputs against a new implementation and judging what it answers: HTTP
exchanges against a new service (and a legacy one, or its recorded answers), golden vectors
through an in-process function, and the verdict both share: counts, deltas, latency targets.

See docs/replay.md and docs/golden.md.
"""

from cutover.replay._golden import Call, Golden, Outcome, Vector, call
from cutover.replay._verdict import NOTHING, Check, Gates, GroupReport, Tally, Targets, Verdict

__all__ = [
    "NOTHING",
    "Call",
    "Check",
    "Gates",
    "Golden",
    "GroupReport",
    "Outcome",
    "Tally",
    "Targets",
    "Vector",
    "Verdict",
    "call",
]
