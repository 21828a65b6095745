"""Tenant cohorts: named groups of tenants that move to new in waves, and back within a window.

A cohort belongs to one migration. ``promote`` pins its tenants to new and ``rollback`` pins
them to legacy, each in one compare-and-set change of the migration's state recorded as a
decision together with the cohort's new status; ``add`` and ``remove`` are decisions that
change no state. A tenant belongs to at most one cohort of a migration.
"""

from __future__ import annotations

import math
import os
import random
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cutover.clock import Clock
from cutover.data.audit import check_report, load_report
from cutover.durations import MAX_SECONDS, format_duration
from cutover.errors import ConflictError, InvalidInput
from cutover.model import Decision, State, pin_changes
from cutover.operations import RELATIVE_RETRIES, require_known
from cutover.store import DEFAULT_COHORT_WINDOW, Cohort, CohortStatus, Store

DEFAULT_WINDOW = DEFAULT_COHORT_WINDOW
"""Seconds after its promotion during which a cohort rolls back without forcing: 48 hours."""

MAX_TENANTS = 10_000
"""Tenants one cohort may hold: each becomes a pin in the migration's state, which every app
process holds in memory and reads on every call."""


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
_TENANT_CHARS = 400
_DRIFT_KINDS = ("missing", "extra", "changed")
_NAMED = 5  # tenants a drift refusal names, the rest counted


@dataclass(frozen=True, slots=True)
class CohortChange:
    """What one cohort action did: the cohort as it now stands (None once removed) and the
    decision recorded for it."""

    cohort: Cohort | None
    decision: Decision

    def to_json(self) -> dict[str, Any]:
        return {
            "cohort": None if self.cohort is None else to_json(self.cohort),
            "decision": self.decision.to_dict(),
        }


def to_json(cohort: Cohort) -> dict[str, Any]:
    """A cohort as JSON: its stored fields and when its rollback window closes."""
    return {**cohort.to_dict(), "rollback_until": cohort.rollback_until}


# -- reading -------------------------------------------------------------------------------


def cohorts(store: Store, migration: str) -> list[Cohort]:
    """The cohorts of ``migration`` by wave and name; UnknownMigration for an unknown name."""
    require_known(store, migration)
    return store.cohorts(migration)


def get(store: Store, migration: str, name: str) -> Cohort:
    """The cohort ``name`` of ``migration``; InvalidInput naming the fix when there is none."""
    require_known(store, migration)
    return _existing(store, migration, name)


def _existing(store: Store, migration: str, name: str) -> Cohort:
    found = store.cohort(migration, name)
    if found is None:
        raise InvalidInput(
            f"no cohort named {name!r} in {migration!r}; list them with"
            f" `cutover cohort list --migration {migration}`"
        )
    return found


# -- decisions that change no state --------------------------------------------------------


def add(
    store: Store,
    migration: str,
    name: str,
    *,
    tenants: Iterable[str],
    wave: int,
    actor: str,
    clock: Clock,
    reason: str = "",
    window: float = DEFAULT_WINDOW,
) -> CohortChange:
    """Plan a cohort of ``tenants`` in ``wave`` (1 is the first) with a rollback ``window`` in
    seconds; recorded as a ``cohort-add`` decision that changes no state."""
    why = (reason or "").strip()
    check_name(name)
    members = check_tenants(tenants)
    wave = check_wave(wave)
    window = check_window(window)
    require_known(store, migration)
    if store.cohort(migration, name) is not None:
        raise InvalidInput(
            f"cohort {name!r} of {migration!r} already exists; choose another name, or remove"
            " it first if it is still planned"
        )
    now = clock()
    cohort = Cohort(
        migration=migration,
        name=name,
        wave=wave,
        tenants=members,
        window=window,
        created_at=now,
        created_by=actor,
    )
    return _commit(
        store,
        cohort,
        0,
        kind="cohort-add",
        reason=f"cohort {name} planned in wave {wave} ({_tenants(cohort)})"
        + (f": {why}" if why else ""),
        actor=actor,
        at=now,
        evidence={"cohort": to_json(_stored(cohort, 0, now, actor))},
    )


def remove(
    store: Store, migration: str, name: str, *, reason: str, actor: str, clock: Clock
) -> CohortChange:
    """Forget a planned (or rolled-back) cohort, so its tenants may join another; recorded as
    a ``cohort-remove`` decision that changes no state. A promoted cohort is rolled back
    first: removing it would leave its tenants on new with no cohort to roll them back."""
    why = _need_reason(reason)
    require_known(store, migration)
    cohort = _existing(store, migration, name)
    if cohort.status is CohortStatus.PROMOTED:
        raise InvalidInput(
            f"cohort {name!r} is promoted; roll it back first"
            f" (cutover cohort rollback {name} --migration {migration} --reason ...)"
        )
    now = clock()
    decision = store.commit(
        migration,
        kind="cohort-remove",
        actor=actor,
        reason=f"cohort {name} removed: {why}",
        at=now,
        evidence={"cohort": to_json(cohort)},
        cohort=cohort,
        expected_cohort=cohort.version,
        remove_cohort=True,
    )
    return CohortChange(None, decision)


# -- decisions that move tenants -----------------------------------------------------------


def promote(
    store: Store,
    migration: str,
    name: str,
    *,
    reason: str,
    actor: str,
    clock: Clock,
    audit: Mapping[str, Any] | str | os.PathLike[str] | None = None,
    max_drift: int = 0,
    force: bool = False,
    expected_version: int | None = None,
) -> CohortChange:
    """Pin the cohort's tenants to new in one compare-and-set change of the migration's state,
    recorded as a ``cohort-promote`` decision, and mark the cohort promoted.

    Refused while a cohort of an earlier wave is not promoted, unless ``force``. Given an
    ``audit`` report (its JSON, or the path of the file ``cutover audit --json`` wrote),
    refused when a tenant of the cohort has more than ``max_drift`` rows of drift (missing,
    extra and changed); ``force`` does not lift that. Like a relative ``set``, a change that
    loses a race is re-read and retried, unless ``expected_version`` names the state version
    it must be based on.
    """
    why = _need_reason(reason)
    tolerance = check_max_drift(max_drift)
    report, source = (None, None) if audit is None else load_audit(audit)

    def plan(state: State | None, cohort: Cohort, now: float) -> _Planned:
        if cohort.status is CohortStatus.PROMOTED:
            raise InvalidInput(
                f"cohort {name!r} is already promoted (since {_iso(cohort.promoted_at)});"
                " nothing to do"
            )
        waiting = [
            other
            for other in store.cohorts(migration)
            if other.wave < cohort.wave and other.status is not CohortStatus.PROMOTED
        ]
        if waiting and not force:
            first = waiting[0]
            raise InvalidInput(
                f"wave {first.wave} is not promoted yet (cohort {first.name!r} is"
                f" {first.status.value}); promote it first, or promote {name!r} ahead of it"
                " with --force"
            )
        evidence: dict[str, Any] = {
            "from": cohort.status.value,
            "pinned": "new",
            "forced": bool(waiting),
            "earlier_waves_not_promoted": [other.name for other in waiting],
            "audit": None,
        }
        if report is not None:
            evidence["audit"] = judge_drift(report, cohort, tolerance, source)
        base = state or State()
        pins_new, pins_legacy = pin_changes(base, pin_new=cohort.tenants)
        after = cohort.evolve(status=CohortStatus.PROMOTED, promoted_at=now, rolled_back_at=None)
        return _Planned(base.evolve(pins_new=pins_new, pins_legacy=pins_legacy), after, evidence)

    return _move(
        store,
        migration,
        name,
        "cohort-promote",
        plan,
        why=why,
        actor=actor,
        clock=clock,
        expected_version=expected_version,
    )


def rollback(
    store: Store,
    migration: str,
    name: str,
    *,
    reason: str,
    actor: str,
    clock: Clock,
    force: bool = False,
    expected_version: int | None = None,
) -> CohortChange:
    """Pin a promoted cohort's tenants to legacy (legacy-only writes, legacy reads) in one
    compare-and-set change, recorded as a ``cohort-rollback`` decision. Refused once the
    cohort's rollback window after its promotion has closed, unless ``force``: by then the new
    side has taken writes that legacy may not hold."""
    why = _need_reason(reason)

    def plan(state: State | None, cohort: Cohort, now: float) -> _Planned:
        if cohort.status is CohortStatus.ROLLED_BACK:
            raise InvalidInput(
                f"cohort {name!r} was already rolled back at {_iso(cohort.rolled_back_at)};"
                " there is nothing to roll back"
            )
        if cohort.status is not CohortStatus.PROMOTED:
            raise InvalidInput(
                f"cohort {name!r} is {cohort.status.value}, not promoted; there is nothing to"
                " roll back"
            )
        closes = cohort.rollback_until
        late = closes is not None and now > closes
        if late and not force:
            raise InvalidInput(
                f"the rollback window of cohort {name!r} closed at {_iso(closes)}"
                f" ({format_duration(cohort.window)} after its promotion); roll back anyway"
                " with --force once legacy is known to hold the writes made since"
            )
        evidence = {
            "from": cohort.status.value,
            "pinned": "legacy",
            "forced": late,
            "promoted_at": cohort.promoted_at,
            "rollback_until": closes,
        }
        base = state or State()
        pins_new, pins_legacy = pin_changes(base, pin_legacy=cohort.tenants)
        after = cohort.evolve(status=CohortStatus.ROLLED_BACK, rolled_back_at=now)
        return _Planned(base.evolve(pins_new=pins_new, pins_legacy=pins_legacy), after, evidence)

    return _move(
        store,
        migration,
        name,
        "cohort-rollback",
        plan,
        why=why,
        actor=actor,
        clock=clock,
        expected_version=expected_version,
    )


@dataclass(frozen=True, slots=True)
class _Planned:
    state: State
    cohort: Cohort
    evidence: dict[str, Any]


def _move(
    store: Store,
    migration: str,
    name: str,
    kind: str,
    plan: Callable[[State | None, Cohort, float], _Planned],
    *,
    why: str,
    actor: str,
    clock: Clock,
    expected_version: int | None,
) -> CohortChange:
    """Read, plan and commit a cohort's move; pins are relative to the state, so a lost race
    is re-read, re-judged and retried unless ``expected_version`` pins the base version."""
    attempts = RELATIVE_RETRIES if expected_version is None else 1
    for attempt in range(attempts):
        state = require_known(store, migration)
        version = state.version if state else 0
        if expected_version is not None and expected_version != version:
            raise ConflictError(
                migration, expected_version, version, state.updated_by if state else None
            )
        cohort = _existing(store, migration, name)
        now = clock()
        planned = plan(state, cohort, now)
        unchanged = state is not None and planned.state.same_settings(state)
        verb = "pinned to new" if kind == "cohort-promote" else "pinned to legacy"
        try:
            return _commit(
                store,
                planned.cohort,
                cohort.version,
                kind=kind,
                reason=f"cohort {name} (wave {cohort.wave}, {_tenants(cohort)}) {verb}: {why}",
                actor=actor,
                at=now,
                evidence={
                    "cohort": to_json(_stored(planned.cohort, cohort.version, now, actor)),
                    **planned.evidence,
                },
                state=None if unchanged else planned.state,
                expected_version=version,
            )
        except ConflictError:
            if attempt == attempts - 1:
                raise
            time.sleep(random.uniform(0, 0.005 * (attempt + 1)))
    raise AssertionError("unreachable")


def _commit(
    store: Store,
    cohort: Cohort,
    expected_cohort: int,
    *,
    kind: str,
    reason: str,
    actor: str,
    at: float,
    evidence: dict[str, Any],
    expected_version: int | None = None,
    state: State | None = None,
) -> CohortChange:
    decision = store.commit(
        cohort.migration,
        kind=kind,
        actor=actor,
        reason=reason,
        at=at,
        evidence=evidence,
        state=state,
        expected_version=expected_version,
        cohort=cohort,
        expected_cohort=expected_cohort,
    )
    return CohortChange(_stored(cohort, expected_cohort, at, actor), decision)


def _stored(cohort: Cohort, expected: int, at: float, actor: str) -> Cohort:
    """The cohort as the store writes it (the store sets the same fields the same way)."""
    return cohort.evolve(version=expected + 1, updated_at=at, updated_by=actor)


# -- audit reports -------------------------------------------------------------------------


def load_audit(
    audit: Mapping[str, Any] | str | os.PathLike[str],
) -> tuple[Mapping[str, Any], str | None]:
    """An audit report (``cutover audit --json``) and the file it came from, checked to be one
    that counts drift per tenant."""
    source: str | None = None
    report: Any = audit
    if isinstance(audit, str | os.PathLike):
        source = os.fspath(audit)
        report = load_report(source)
    where = f"the audit report {source!r}" if source else "the audit report"
    check_report(report, source or "the report")
    tenants = report.get("tenants")
    if not report.get("tenant_column") or not isinstance(tenants, Mapping):
        raise InvalidInput(
            f"{where} has no counts per tenant; audit again with --tenant-column so each"
            " tenant of the cohort can be judged"
        )
    for tenant, counts in tenants.items():
        if not isinstance(counts, Mapping) or not all(
            _count(counts.get(kind, 0)) for kind in (*_DRIFT_KINDS, "pending")
        ):
            raise InvalidInput(
                f"{where} has unreadable counts for tenant {tenant!r}; give the file"
                " `cutover audit --json FILE` wrote"
            )
    return report, source


def judge_drift(
    report: Mapping[str, Any],
    cohort: Cohort,
    max_drift: int,
    source: str | None = None,
    *,
    allow: str = "with --max-drift",
) -> dict[str, Any]:
    """The audit evidence for promoting ``cohort``: each of its tenants' counts. InvalidInput
    naming the first tenant whose drift (missing + extra + changed rows) exceeds
    ``max_drift``; ``allow`` says where more is allowed. A tenant the report does not list
    had no differences."""
    listed: Mapping[str, Any] = report["tenants"]
    counts = {}
    for tenant in cohort.tenants:
        found = listed.get(tenant) or {}
        row = {kind: int(found.get(kind, 0)) for kind in (*_DRIFT_KINDS, "pending")}
        row["drift"] = sum(row[kind] for kind in _DRIFT_KINDS)
        counts[tenant] = row
    worst = [tenant for tenant in cohort.tenants if counts[tenant]["drift"] > max_drift]
    if len(worst) == 1:
        tenant, row = worst[0], counts[worst[0]]
        raise InvalidInput(
            f"tenant {tenant!r} of cohort {cohort.name!r} has {row['drift']} rows of drift"
            f" ({row['missing']} missing, {row['extra']} extra, {row['changed']} changed),"
            f" more than the {max_drift} allowed; reconcile and audit again, or allow more"
            f" {allow}"
        )
    if worst:
        named = [
            f"{tenant!r} ({row['drift']}: {row['missing']} missing, {row['extra']} extra,"
            f" {row['changed']} changed)"
            for tenant, row in ((t, counts[t]) for t in worst[:_NAMED])
        ]
        more = len(worst) - len(named)
        listing = ", ".join(named[:-1]) + f" and {named[-1]}" if not more else ", ".join(named)
        raise InvalidInput(
            f"tenants {listing}{f' and {more} more' if more else ''} of cohort {cohort.name!r}"
            f" have more rows of drift than the {max_drift} allowed; reconcile and audit again,"
            f" or allow more {allow}"
        )
    side = report.get("source") or {}
    target = report.get("target") or {}
    return {
        "file": source,
        "format": report.get("format"),
        "source_table": side.get("table") if isinstance(side, Mapping) else None,
        "target_table": target.get("table") if isinstance(target, Mapping) else None,
        "tenant_column": report.get("tenant_column"),
        "finished_at": report.get("finished_at"),
        "max_drift": max_drift,
        "tenants": counts,
    }


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


# -- validation ----------------------------------------------------------------------------


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidInput(
            f"cohort name {name!r} is not valid; use up to 64 letters, digits, '.', '_' or '-',"
            " starting with a letter or digit, like wave-1"
        )
    return name


def check_tenants(tenants: Iterable[str] | str) -> tuple[str, ...]:
    """The tenants given, stripped, without blanks or repeats, in the order given."""
    if isinstance(tenants, str):
        tenants = tenants.split(",")
    members: dict[str, None] = {}
    for raw in tenants:
        tenant = str(raw).strip()
        if not tenant:
            continue
        if len(tenant) > _TENANT_CHARS:
            raise InvalidInput(
                f"tenant {tenant[:40]!r}... is longer than {_TENANT_CHARS} characters; give the"
                " tenant's key as the app routes by it"
            )
        members[tenant] = None
    if not members:
        raise InvalidInput("a cohort needs at least one tenant: --tenants acme,globex")
    if len(members) > MAX_TENANTS:
        raise InvalidInput(
            f"a cohort holds at most {MAX_TENANTS} tenants, got {len(members)}; split them into"
            " several cohorts"
        )
    return tuple(members)


def check_wave(wave: Any) -> int:
    if isinstance(wave, bool) or not isinstance(wave, int) or wave < 1:
        raise InvalidInput(f"--wave must be a whole number from 1 (the first wave), got {wave!r}")
    return wave


def check_window(window: Any) -> float:
    try:
        seconds = float(window)
    except (TypeError, ValueError):
        seconds = math.nan
    if isinstance(window, bool) or not 0 < seconds < MAX_SECONDS:
        raise InvalidInput(f"--window must be a positive duration like 48h or 7d, got {window!r}")
    return seconds


def check_max_drift(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInput(f"--max-drift must be a whole number of rows from 0, got {value!r}")
    return value


def _need_reason(reason: str) -> str:
    if not reason or not reason.strip():
        raise InvalidInput('a reason is required: say why with --reason "..."')
    return reason.strip()


def _tenants(cohort: Cohort) -> str:
    count = len(cohort.tenants)
    return f"{count} tenant" if count == 1 else f"{count} tenants"


def _iso(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


__all__ = [
    "DEFAULT_WINDOW",
    "MAX_TENANTS",
    "Cohort",
    "CohortChange",
    "CohortStatus",
    "add",
    "check_max_drift",
    "check_name",
    "check_tenants",
    "check_wave",
    "check_window",
    "cohorts",
    "get",
    "judge_drift",
    "load_audit",
    "promote",
    "remove",
    "rollback",
    "to_json",
]
