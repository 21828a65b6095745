"""cutover: replace a legacy implementation with a new one without behaviour drift."""

from cutover import compare, errors
from cutover.clock import ManualClock
from cutover.migration import AsyncMigration, Migration, migration, unit_scope
from cutover.model import Arm, Comparison, Decision, Mode, Observation, State, Verdict
from cutover.routing import bucket
from cutover.runtime import __version__, aflush, configure, current, flush

__all__ = [
    "Arm",
    "AsyncMigration",
    "Comparison",
    "Decision",
    "ManualClock",
    "Migration",
    "Mode",
    "Observation",
    "State",
    "Verdict",
    "__version__",
    "aflush",
    "bucket",
    "compare",
    "configure",
    "current",
    "errors",
    "flush",
    "migration",
    "unit_scope",
]
