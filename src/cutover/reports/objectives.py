"""Where a migration's SLOs are declared: a plan, a file of SLOs of their own, or the plan of
its stored rollout. Above :mod:`cutover.control.plan` (plans hold SLOs), while the SLOs
themselves and their budgets (:mod:`cutover.reports.slo`) sit below the controller's checks."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cutover._yaml import parse_yaml
from cutover.control.plan import parse_plan
from cutover.errors import InvalidInput
from cutover.reports.slo import SLO, Reader, parse_slos, status

__all__ = ["Objectives", "declared", "objectives", "statuses"]


@dataclass(frozen=True, slots=True)
class Objectives:
    """A migration's SLOs, where they were read from, and the Prometheus server they may ask."""

    migration: str
    slos: tuple[SLO, ...]
    source: str
    prometheus_url: str | None = None

    def named(self, names: Sequence[str]) -> tuple[SLO, ...]:
        """The SLOs named (all when none is); an unknown name is bad input."""
        if not names:
            return self.slos
        known = {slo.name: slo for slo in self.slos}
        for name in names:
            if name not in known:
                raise InvalidInput(
                    f"{self.source} has no SLO named {name!r}; its SLOs are {', '.join(known)}"
                )
        return tuple(known[name] for name in names)


def objectives(store: Any, name: str, text: str | None = None, path: str = "") -> Objectives:
    """``name``'s SLOs from ``text``, read from ``path`` (a plan, or a file of SLOs of its
    own), else from the plan of its stored rollout."""
    env_url = os.environ.get("CUTOVER_PROMETHEUS_URL") or None
    if text is not None:
        migration, slos, url = _read(text, path)
        mine = tuple(slo for slo in slos if (slo.migration or migration or name) == name)
        if slos and not mine:
            raise InvalidInput(f"{path} declares no SLOs of {name!r}; check the migration's name")
        found = Objectives(name, mine, path, url or env_url)
    else:
        rollout = store.rollout(name)
        if rollout is None:
            raise InvalidInput(
                f"{name!r} has no rollout whose plan holds its SLOs; give --file with the plan"
                " or a file of SLOs"
            )
        plan = parse_plan(rollout.plan, f"the stored plan of {name!r}")
        found = Objectives(name, plan.slos, f"the plan of {name!r}", _url(plan) or env_url)
    if not found.slos:
        raise InvalidInput(f"{found.source} declares no SLOs; add slos: to it")
    return found


def declared(
    store: Any, names: Sequence[str], files: Sequence[tuple[str, str]] = ()
) -> list[tuple[str, SLO]]:
    """(migration, SLO) of every SLO the ``files`` (path, text) declare, and of the stored
    rollouts of ``names`` (every stored rollout when no name is given)."""
    found: list[tuple[str, SLO]] = []
    for path, text in files:
        migration, slos, _ = _read(text, path)
        for slo in slos:
            owner = slo.migration or migration
            if owner is None:
                raise InvalidInput(f"{path}: SLO {slo.name!r}: name its migration:")
            found.append((owner, slo))
    rollouts = store.rollouts()
    for name in names or sorted(rollouts):
        rollout = rollouts.get(name)
        if rollout is not None:
            plan = parse_plan(rollout.plan, f"the stored plan of {name!r}")
            found += [(name, slo) for slo in plan.slos]
    seen: set[tuple[str, str]] = set()
    out = []
    for migration, slo in found:
        if (migration, slo.name) not in seen:  # a file and the stored plan may repeat one
            seen.add((migration, slo.name))
            out.append((migration, slo))
    return out


def _read(text: str, path: str) -> tuple[str | None, tuple[SLO, ...], str | None]:
    """(migration, SLOs, Prometheus URL) of a plan or a file of SLOs of its own."""
    data = parse_yaml(text, path)
    if isinstance(data, Mapping) and "steps" in data:
        plan = parse_plan(data, path)
        return plan.migration, plan.slos, _url(plan)
    migration, slos = parse_slos(data, path)
    return migration, slos, None


def _url(plan: Any) -> str | None:
    return plan.prometheus.url if plan.prometheus else None


def statuses(
    store: Any, found: Objectives, now: float, names: Sequence[str] = ()
) -> dict[str, Any]:
    """What ``cutover slo NAME --json`` and the API show: each SLO named (all when none is)."""
    reader = Reader(store, prometheus_url=found.prometheus_url)
    return {
        "migration": found.migration,
        "slos": [status(slo, found.migration, reader, now) for slo in found.named(names)],
    }
