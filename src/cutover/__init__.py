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

_HOMES = {
    "compare": "cutover.compare",
    "errors": "cutover.errors",
    "FileClock": "cutover.clock",
    "ManualClock": "cutover.clock",
    "Controller": "cutover.control.controller",  # the `rollout` extra (SciPy, httpx, PyYAML)
    "Plan": "cutover.control.plan",
    "load_plan": "cutover.control.plan",
    "parse_plan": "cutover.control.plan",
    "Call": "cutover.flags",
    "achoose": "cutover.flags",
    "choose": "cutover.flags",
    "flag": "cutover.flags",
    "observe": "cutover.flags",
    "AsyncMigration": "cutover.migration",
    "Migration": "cutover.migration",
    "migration": "cutover.migration",
    "unit_scope": "cutover.migration",
    "Arm": "cutover.model",
    "Comparison": "cutover.model",
    "Decision": "cutover.model",
    "Mode": "cutover.model",
    "Observation": "cutover.model",
    "State": "cutover.model",
    "Verdict": "cutover.model",
    "bucket": "cutover.routing",
    "__version__": "cutover._version",
    "aflush": "cutover.runtime",
    "configure": "cutover.runtime",
    "current": "cutover.runtime",
    "flush": "cutover.runtime",
}
"""Each public name and the module it comes from (a module's own name: the module itself).
Any other submodule is reached as an attribute too, loaded on first use."""


def __getattr__(name: str) -> object:
    home = _HOMES.get(name)
    if home is None:  # a submodule, such as `cutover.runtime` after a bare `import cutover`
        if name.startswith("_") or importlib.util.find_spec(f"{__name__}.{name}") is None:
            raise AttributeError(f"module 'cutover' has no attribute {name!r}")
        return importlib.import_module(f"{__name__}.{name}")
    module = importlib.import_module(home)
    value = (
        module if home == f"{__name__}.{name}" and name != "migration" else getattr(module, name)
    )
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})


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
