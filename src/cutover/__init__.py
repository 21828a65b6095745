"""cutover: replace a legacy implementation with a new one without behaviour drift."""

from cutover import compare, errors
from cutover.clock import FileClock, ManualClock
from cutover.flags import Call, achoose, choose, flag, observe
from cutover.migration import AsyncMigration, Migration, migration, unit_scope
from cutover.model import Arm, Comparison, Decision, Mode, Observation, State, Verdict
from cutover.routing import bucket
from cutover.runtime import __version__, aflush, configure, current, flush


def __getattr__(name: str) -> object:
    # The controller needs the `rollout` extra (SciPy, httpx, PyYAML): imported on first use.
    if name in ("Controller", "Plan", "load_plan", "parse_plan"):
        from cutover.control import controller, plan

        return {
            "Controller": controller.Controller,
            "Plan": plan.Plan,
            "load_plan": plan.load_plan,
            "parse_plan": plan.parse_plan,
        }[name]
    raise AttributeError(f"module 'cutover' has no attribute {name!r}")


__all__ = [
    "Arm",
    "AsyncMigration",
    "Call",
    "Comparison",
    "Controller",
    "Decision",
    "FileClock",
    "ManualClock",
    "Migration",
    "Mode",
    "Observation",
    "Plan",
    "State",
    "Verdict",
    "__version__",
    "achoose",
    "aflush",
    "bucket",
    "choose",
    "compare",
    "configure",
    "current",
    "errors",
    "flag",
    "flush",
    "load_plan",
    "migration",
    "observe",
    "parse_plan",
    "unit_scope",
]
