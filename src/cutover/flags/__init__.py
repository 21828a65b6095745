"""Flag-style use of migrations: choose an arm, observe a hand-branched call, evaluate with a
reason. The OpenFeature provider is :mod:`cutover.flags.openfeature` (``cutover[openfeature]``)."""

from cutover.flags._core import (
    Call,
    Evaluation,
    FlagMigration,
    achoose,
    choose,
    evaluate,
    flag,
    migration_for,
    observe,
)

__all__ = [
    "Call",
    "Evaluation",
    "FlagMigration",
    "achoose",
    "choose",
    "evaluate",
    "flag",
    "migration_for",
    "observe",
]
