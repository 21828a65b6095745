"""Flag-style use of migrations: choose an arm, observe a hand-branched call, evaluate with a
reason. The OpenFeature provider is :mod:`cutover.flags.openfeature` (``cutover[openfeature]``)."""

from cutover.flags._core import (
    Call,
    Evaluation,
    FlagMigration,
    achoose,
    choose,
    count_exposure,
    evaluate,
    flag,
    known_here,
    migration_for,
    observe,
)

__all__ = [
    "Call",
    "Evaluation",
    "FlagMigration",
    "achoose",
    "choose",
    "count_exposure",
    "evaluate",
    "flag",
    "known_here",
    "migration_for",
    "observe",
]
