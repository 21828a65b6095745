"""Replaying recorded HTTP exchanges against a new service (and a legacy one, or its recorded
answers), and the verdict shared with golden-vector checks: counts, deltas, latency targets.

See docs/replay.md.
"""

from cutover.replay._verdict import NOTHING, Check, Gates, GroupReport, Tally, Targets, Verdict

__all__ = ["NOTHING", "Check", "Gates", "GroupReport", "Tally", "Targets", "Verdict"]
