"""cutover: replace a legacy implementation with a new one without behaviour drift.

The package loads what a name needs on first use: ``import cutover`` costs almost nothing, so
a command that needs none of the runtime (``cutover audit``, ``cutover --help``) does not pay
for it, and ``cutover.migration(...)`` loads the runtime the first time it is called.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # what the names below are, for type checkers and editors
    from cutover import compare, errors
    from cutover._version import __version__
    from cutover.clock import FileClock, ManualClock
    from cutover.control.controller import Controller
    from cutover.control.plan import Plan, load_plan, parse_plan
    from cutover.flags import Call, achoose, choose, flag, observe
    from cutover.migration import AsyncMigration, Migration, migration, unit_scope
    from cutover.model import Arm, Comparison, Decision, Mode, Observation, State, Verdict
    from cutover.routing import bucket
    from cutover.runtime import aflush, configure, current, flush

_FROM = {
    "cutover._version": ("__version__",),
    "cutover.clock": ("FileClock", "ManualClock"),
    "cutover.control.controller": ("Controller",),  # the `rollout` extra (SciPy, httpx, ...)
    "cutover.control.plan": ("Plan", "load_plan", "parse_plan"),
    "cutover.flags": ("Call", "achoose", "choose", "flag", "observe"),
    "cutover.migration": ("AsyncMigration", "Migration", "migration", "unit_scope"),
    "cutover.model": ("Arm", "Comparison", "Decision", "Mode", "Observation", "State", "Verdict"),
    "cutover.routing": ("bucket",),
    "cutover.runtime": ("aflush", "configure", "current", "flush"),
}
"""The public names each module gives the package (as the block above imports them)."""

_HOMES = {name: module for module, names in _FROM.items() for name in names}


def __getattr__(name: str) -> object:
    home = _HOMES.get(name)
    if home is None:  # a submodule: `cutover.compare`, or `cutover.runtime` after `import cutover`
        if name.startswith("_") or importlib.util.find_spec(f"{__name__}.{name}") is None:
            raise AttributeError(f"module 'cutover' has no attribute {name!r}")
        return importlib.import_module(f"{__name__}.{name}")
    value = globals()[name] = getattr(importlib.import_module(home), name)
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES, "compare", "errors"})


class _Package(types.ModuleType):
    """``cutover.migration`` is the decorator, and also the name of the submodule defining it.
    Importing a submodule sets it as an attribute of its package; for that one name the
    decorator is kept (the submodule is ``sys.modules["cutover.migration"]``)."""

    def __setattr__(self, name: str, value: object) -> None:
        if name == "migration" and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

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
