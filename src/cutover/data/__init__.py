"""Data migrations: dual write and read, the audit between two databases, reconcile, cohorts.

- :class:`DualStore` writes and reads two repositories by the strategies the migration's state
  gives each tenant (``cutover set``, pins, cohorts and the rollout controller drive them);
- :func:`audit` finds every missing, extra and changed row of a table in two databases;
- :mod:`cutover.data.reconcile` turns an audit report into SQL that makes them equal again;
- :mod:`cutover.data.cohorts` moves tenants in waves, each promotion and rollback a decision.

Names load on first use, so ``cutover audit`` does not load the dual store's machinery.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "AuditReport": "cutover.data.audit",
    "AuditSpec": "cutover.data.audit",
    "Diff": "cutover.data.audit",
    "audit": "cutover.data.audit",
    "DualStore": "cutover.data.dual",
    "GuardrailError": "cutover.data.dual",
    "MemoryRepository": "cutover.data.dual",
    "ReadStrategy": "cutover.data.dual",
    "Repository": "cutover.data.dual",
    "Strategies": "cutover.data.dual",
    "TableRepository": "cutover.data.dual",
    "WriteStrategy": "cutover.data.dual",
    "strategies_for": "cutover.data.dual",
}

__all__ = [
    "AuditReport",
    "AuditSpec",
    "Diff",
    "DualStore",
    "GuardrailError",
    "MemoryRepository",
    "ReadStrategy",
    "Repository",
    "Strategies",
    "TableRepository",
    "WriteStrategy",
    "audit",
    "strategies_for",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'cutover.data' has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
