"""The documents the runbooks end in, as data: the 30-day SLO report, the weekly report, the
change board's pack and its decision log; rendered by :mod:`cutover.reports.render`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from cutover import operations
from cutover.model import Decision, Mode, State
from cutover.reports.slo import SLO, Reader, budget
from cutover.stats import whole_windows
from cutover.store import Store

INCIDENTS = ("rollback", "abort", "failing")
"""Decisions that open an incident: cutover went back, stopped, or a critical check failed."""
RECOVERIES = ("recovered", "promote", "resume", "retry", "complete", "set")
"""Decisions after which an open incident counts as mitigated: the controller's, or a person
setting the state again."""
ISSUES = (*INCIDENTS, "warning", "pause")
"""Decisions a weekly report lists among the issues encountered."""


def describe_state(state: State | None) -> str:
    if state is None:
        return "legacy (no stored state)"
    if state.mode is Mode.CANARY:
        return f"canary {state.percent:g}%"
    return state.mode.value


def _decision(decision: Decision) -> dict[str, Any]:
    return {
        "id": decision.id,
        "at": decision.at,
        "actor": decision.actor,
        "kind": decision.kind,
        "reason": decision.reason,
        "from": describe_state(decision.old) if decision.old else None,
        "to": describe_state(decision.new),
        "changed": decision.changed,
        "evidence": dict(decision.evidence),
        "audit": _audit_of(decision),
    }


def _audit_of(decision: Decision) -> str | None:
    """The audit report a decision rests on, when its evidence names one."""
    audit = decision.evidence.get("audit")
    if isinstance(audit, dict):
        source = audit.get("file")
        return source if isinstance(source, str) else None
    return audit if isinstance(audit, str) else None


def latest_audit(decisions: Sequence[Decision]) -> str | None:
    """The audit report the latest of ``decisions`` that rests on one names."""
    linked = [audit for audit in map(_audit_of, decisions) if audit]
    return linked[-1] if linked else None


def decisions_between(store: Store, name: str, since: float, until: float) -> list[Decision]:
    """``name``'s decisions in [since, until), oldest first."""
    found = [d for d in store.decisions(name, 100_000) if since <= d.at < until]
    return sorted(found, key=lambda d: (d.at, d.id))


def first_decision(store: Store, name: str) -> float | None:
    """When ``name``'s first decision was recorded: where its whole story starts."""
    return min((d.at for d in store.decisions(name, 100_000)), default=None)


def incidents(decisions: Sequence[Decision]) -> dict[str, Any]:
    """The incidents among ``decisions``: each opened by a rollback, abort or failing check and
    mitigated by the next recovery, promotion or resumption; with the mean time to mitigate."""
    found: list[dict[str, Any]] = []
    open_at: dict[str, Any] | None = None
    for decision in decisions:
        if decision.kind in INCIDENTS:
            if open_at is None:
                open_at = {**_decision(decision), "mitigated_at": None, "minutes": None}
                found.append(open_at)
        elif decision.kind in RECOVERIES and open_at is not None:
            open_at["mitigated_at"] = decision.at
            open_at["minutes"] = (decision.at - open_at["at"]) / 60
            open_at = None
    times = [i["minutes"] for i in found if i["minutes"] is not None]
    return {
        "total": len(found),
        "open": sum(1 for i in found if i["mitigated_at"] is None),
        "mttr_minutes": sum(times) / len(times) if times else None,
        "list": found,
    }


def slo_report(
    store: Store,
    name: str,
    slos: Sequence[SLO],
    *,
    since: float,
    until: float,
    prometheus_url: str | None = None,
) -> dict[str, Any]:
    """The transport runbook's SLO compliance report over [since, until): per SLO its target,
    actual and status, its error budget over the period, the incidents, and what to do."""
    reader = Reader(store, prometheus_url=prometheus_url)
    start, _ = whole_windows(since, None)
    rows = []
    for slo in slos:
        figures = budget(reader, slo, name, start, until)
        rows.append(
            {
                "name": slo.name,
                "description": slo.description,
                "indicator": slo.indicator.describe(),
                "objective": slo.objective,
                **figures.to_json(),
            }
        )
    found = incidents(decisions_between(store, name, since, until))
    return {
        "kind": "slo",
        "migration": name,
        "since": start,
        "until": until,
        "days": (until - start) / 86400,
        "slos": rows,
        "incidents": found,
        "recommendations": _recommendations(rows, found),
    }


def _recommendations(rows: Sequence[dict[str, Any]], found: dict[str, Any]) -> list[str]:
    out = []
    for row in rows:
        if row["budget_status"] == "exhausted":
            out.append(
                f"Roll back or freeze changes: SLO {row['name']} has exhausted its error budget"
            )
        elif row["status"] == "fail":
            out.append(f"Hold the rollout: SLO {row['name']} missed its target")
        elif row["status"] == "no data":
            out.append(f"Check the telemetry of SLO {row['name']}: it saw no events")
        elif row["remaining"] < 0.1:
            out.append(f"Hold promotions: SLO {row['name']} has under 10% of its budget left")
    if found["open"]:
        out.append(f"Close the {found['open']} open incident(s) before the next step")
    return out or ["Continue current configuration", "No immediate actions required"]


def weekly_report(store: Store, name: str, *, since: float, until: float) -> dict[str, Any]:
    """The codec runbook's weekly report: traffic share and its history, cumulative parity,
    performance of both arms, drifts by group, the week's decisions, and the plan's next step."""
    week = operations.stats(store, name, until - since, until, until)
    total = operations.stats(store, name, until, until, until)  # since the first window
    decisions = decisions_between(store, name, since, until)
    before = [d for d in store.decisions(name, 100_000) if d.at < since and d.changed]
    share = [
        {"at": d.at, "state": describe_state(d.new), "actor": d.actor, "reason": d.reason}
        for d in decisions
        if d.changed
    ]
    start_state = max(before, key=lambda d: (d.at, d.id)).new if before else None
    legacy, new = week.legacy, week.new
    improvement = (
        None
        if legacy.p95_ms is None or new.p95_ms is None or not legacy.p95_ms
        else (legacy.p95_ms - new.p95_ms) / legacy.p95_ms
    )
    groups = [
        {
            "fingerprint": g.fingerprint,
            "drifts": g.count,
            "first_at": g.first_at,
            "last_at": g.last_at,
        }
        for g in store.drift_groups(name, since)
    ]
    return {
        "kind": "weekly",
        "migration": name,
        "since": week.since,
        "until": until,
        "state": describe_state(store.state(name)),
        "state_at_start": describe_state(start_state),
        "share_history": share,
        "week": week.to_json(),
        "cumulative": total.to_json(),
        "p95_improvement": improvement,
        "drift_groups": groups,
        "issues": [_decision(d) for d in decisions if d.kind in ISSUES],
        "decisions": [_decision(d) for d in decisions],
        "next": next_step(store, name),
    }


def next_step(store: Store, name: str) -> dict[str, Any] | None:
    """What the migration's rollout does next: its step now, the next one and the hold left."""
    from cutover.control.plan import parse_plan

    rollout = store.rollout(name)
    if rollout is None:
        return None
    plan = parse_plan(rollout.plan, f"the stored plan of {name!r}")
    step = plan.steps[rollout.step] if 0 <= rollout.step < len(plan.steps) else None
    following = plan.steps[rollout.step + 1] if rollout.step + 1 < len(plan.steps) else None
    return {
        "status": rollout.status.value,
        "step": rollout.step + 1,
        "steps": len(plan.steps),
        "current": step.label if step else None,
        "hold_seconds": step.hold if step else None,
        "step_started_at": rollout.step_started_at,
        "next": following.label if following else None,
        "approval": bool(following and following.needs_approval),
        "checks": [c.describe(c.method_in(plan)) for c in plan.checks_for(rollout.step + 1)]
        if following
        else [],
    }


def decision_log(decisions: Sequence[Decision], name: str) -> dict[str, Any]:
    """``decisions``, oldest first, each with its evidence and the audit it rests on."""
    ordered = sorted(decisions, key=lambda d: (d.at, d.id))
    return {"kind": "history", "migration": name, "decisions": [_decision(d) for d in ordered]}


def flag_matrix(store: Store, name: str, tenants: Sequence[str] = ()) -> dict[str, Any]:
    """Each tenant's write and read strategy now: the named ones, every cohort's and the pinned
    ones, as the stored state and cohorts give them (the data migration's flag matrix)."""
    from cutover.data.dual import strategies_for
    from cutover.errors import UnknownMigration
    from cutover.routing import env_override

    state = store.state(name)
    if state is None:
        raise UnknownMigration(name)
    cohort_of: dict[str, tuple[str, int, str]] = {}
    for cohort in store.cohorts(name):
        for tenant in cohort.tenants:
            cohort_of[tenant] = (cohort.name, cohort.wave, str(cohort.status))
    shown = list(
        dict.fromkeys([*tenants, *sorted(cohort_of), *sorted(state.pins_new | state.pins_legacy)])
    )
    override = env_override(name)
    rows = []
    for tenant in shown:
        write, read = strategies_for(name, state, tenant, override=override)
        cohort = cohort_of.get(tenant)
        pin = "new" if tenant in state.pins_new else "legacy" if tenant in state.pins_legacy else ""
        rows.append(
            {
                "tenant": tenant,
                "cohort": None if cohort is None else cohort[0],
                "wave": None if cohort is None else cohort[1],
                "cohort_status": None if cohort is None else cohort[2],
                "pinned": pin or None,
                "write": str(write),
                "read": str(read),
            }
        )
    return {
        "migration": name,
        "mode": state.mode.value,
        "percent": state.percent,
        "fallback": state.fallback,
        "version": state.version,
        "override": None if override is None else override.value,
        "tenants": rows,
        "others": _others(name, state),
    }


def _others(name: str, state: State) -> str:
    """What a tenant that is neither pinned nor named gets."""
    from cutover.data.dual import strategies_for
    from cutover.routing import env_override

    mode = env_override(name) or state.mode
    if mode is Mode.CANARY:
        return (
            "other tenants: mirror / compare, or mirror / prefer-new for the"
            f" {state.percent:g}% routed to new"
        )
    unpinned = state.evolve(pins_new=frozenset(), pins_legacy=frozenset())
    write, read = strategies_for(name, unpinned, "any", override=env_override(name))
    return f"other tenants: {write} / {read}"


def cohort_rows(store: Store, name: str, until: float) -> list[dict[str, Any]]:
    """``name``'s cohorts by wave: tenants, status, dates, and whether each promoted one's
    rollback window has closed by ``until``."""
    return [
        {
            "name": c.name,
            "wave": c.wave,
            "status": str(c.status),
            "tenants": list(c.tenants),
            "promoted_at": c.promoted_at,
            "rolled_back_at": c.rolled_back_at,
            "window_seconds": c.window,
            "rollback_until": c.rollback_until,
            "window_closed": c.rollback_until is not None and c.rollback_until <= until,
        }
        for c in sorted(store.cohorts(name), key=lambda c: (c.wave, c.name))
    ]


def audit_summary(audit: Mapping[str, Any], audit_file: str | None) -> dict[str, Any]:
    """What a change board reads of an audit report: its file, result, counts and tenants."""
    tenants = audit.get("tenants") or {}
    return {
        "file": audit_file,
        "clean": audit.get("clean"),
        "counts": dict(audit.get("counts") or {}),
        "finished_at": audit.get("finished_at"),
        "tables": [
            (audit.get("source") or {}).get("table"),
            (audit.get("target") or {}).get("table"),
        ],
        "tenants_with_drift": sorted(
            t for t, c in tenants.items() if any(c.get(k) for k in ("missing", "extra", "changed"))
        ),
    }


def cab_pack(
    store: Store,
    name: str,
    *,
    since: float,
    until: float,
    audit: dict[str, Any] | None = None,
    audit_file: str | None = None,
) -> dict[str, Any]:
    """The data move's weekly pack for the change board: tenants by cohort and status, the
    drift of the period, the latest audit's summary with its file, and the flag matrix."""
    week = operations.stats(store, name, until - since, until, until)
    decisions = decisions_between(store, name, since, until)
    cohorts = cohort_rows(store, name, until)
    by_status: dict[str, int] = {}
    for cohort in cohorts:
        by_status[cohort["status"]] = by_status.get(cohort["status"], 0) + len(cohort["tenants"])
    summary = None if audit is None else audit_summary(audit, audit_file)
    return {
        "kind": "cab",
        "migration": name,
        "since": week.since,
        "until": until,
        "state": describe_state(store.state(name)),
        "cohorts": cohorts,
        "tenants_by_status": by_status,
        "tenants_migrated": by_status.get("promoted", 0),
        "drift": {
            "comparisons": week.comparisons,
            "drifts": week.drifts,
            "drift_rate": week.drift_rate,
            "groups": [
                {"fingerprint": g.fingerprint, "drifts": g.count}
                for g in store.drift_groups(name, since)
            ],
        },
        "audit": summary,
        "audit_file": audit_file,
        "matrix": flag_matrix(store, name),
        "decisions": [_decision(d) for d in decisions],
    }


def closure_report(store: Store, name: str, *, since: float, until: float) -> dict[str, Any]:
    """The data move's closure report for the change board: the tenants migrated, every audit
    the period's decisions rest on, the drift, the decisions and incidents, each cohort's
    rollback window, and whether legacy can be decommissioned, criterion by criterion."""
    from cutover.routing import env_override

    state = store.state(name)
    decisions = decisions_between(store, name, since, until)
    rows = cohort_rows(store, name, until)
    migrated = [t for row in rows if row["status"] == "promoted" for t in row["tenants"]]
    waiting = [t for row in rows if row["status"] != "promoted" for t in row["tenants"]]
    audits = [_read_audit(path) for path in dict.fromkeys(filter(None, map(_audit_of, decisions)))]
    period = operations.stats(store, name, until - since, until, until)
    promotions = [row["promoted_at"] for row in rows if row["promoted_at"] is not None]
    settled_since = max(promotions) if promotions else since
    settled = operations.stats(store, name, until - settled_since, until, until)
    found = incidents(decisions)
    override = env_override(name)
    readiness = _readiness(rows, migrated, waiting, audits, settled.drifts, found, state, override)
    return {
        "kind": "closure",
        "migration": name,
        "since": since,
        "until": until,
        "state": describe_state(state),
        "tenants_migrated": migrated,
        "tenants_waiting": waiting,
        "cohorts": rows,
        "audits": audits,
        "drift": {
            "comparisons": period.comparisons,
            "drifts": period.drifts,
            "drift_rate": period.drift_rate,
            "since_last_promotion": {"since": settled_since, "drifts": settled.drifts},
            "groups": [
                {"fingerprint": g.fingerprint, "drifts": g.count}
                for g in store.drift_groups(name, since)
            ],
        },
        "incidents": found,
        "decisions": [_decision(d) for d in decisions],
        "readiness": readiness,
        "ready": all(item["ok"] for item in readiness),
    }


def _read_audit(path: str) -> dict[str, Any]:
    """An audit report a decision names, summarized; one that cannot be read says why."""
    from cutover.data.cohorts import load_audit
    from cutover.errors import InvalidInput

    try:
        audit, _ = load_audit(path)
    except InvalidInput as error:
        return {"file": path, "error": str(error)}
    return {**audit_summary(audit, path), "error": None}


def _readiness(
    cohorts: Sequence[dict[str, Any]],
    migrated: Sequence[str],
    waiting: Sequence[str],
    audits: Sequence[dict[str, Any]],
    drifts_since_promotion: int,
    found: dict[str, Any],
    state: State | None,
    override: Mode | None,
) -> list[dict[str, Any]]:
    """The runbook's conditions for decommissioning legacy, each with what it found."""
    open_windows = [c for c in cohorts if c["status"] == "promoted" and not c["window_closed"]]
    latest = audits[-1] if audits else None
    new_only = (
        state is not None
        and state.mode is Mode.NEW
        and not state.fallback
        and not state.pins_legacy
        and override is None
    )

    def item(name: str, ok: bool, detail: str) -> dict[str, Any]:
        return {"name": name, "ok": ok, "detail": detail}

    waiting_cohorts = [f"{c['name']} ({c['status']})" for c in cohorts if c["status"] != "promoted"]
    return [
        item(
            "every tenant migrated",
            bool(cohorts) and not waiting,
            f"{len(migrated)} of {len(migrated) + len(waiting)} tenants in promoted cohorts"
            + (f"; not yet: {', '.join(waiting_cohorts)}" if waiting_cohorts else ""),
        ),
        item(
            "every rollback window closed",
            bool(cohorts) and not open_windows,
            "open: " + ", ".join(c["name"] for c in open_windows) if open_windows else "all closed",
        ),
        item(
            "latest audit clean",
            bool(latest and latest["error"] is None and latest["clean"]),
            "no audit report in the period"
            if latest is None
            else latest["error"]
            if latest["error"]
            else f"{latest['file']}: " + ("clean" if latest["clean"] else "drift found"),
        ),
        item(
            "no drift since the last promotion",
            drifts_since_promotion == 0,
            f"{drifts_since_promotion} drifts",
        ),
        item(
            "no open incident",
            not found["open"],
            f"{found['open']} open of {found['total']}",
        ),
        item(
            "new serves alone",
            new_only,
            "mode new without fallback or legacy pins: dual writes can stop"
            if new_only
            else f"state is {describe_state(state)}"
            + (f", forced {override.value} by the environment" if override else "")
            + ": set mode new without fallback, then remove the dual writes",
        ),
    ]


HEADLINES = ("complete", "on track", "at risk", "off track")
"""The monthly summary's one-word status, from best to worst."""


def monthly_summary(store: Store, name: str, *, since: float, until: float) -> dict[str, Any]:
    """The codec runbook's monthly executive summary: a headline status and why, traffic share
    and its history, parity, performance, incidents and rollbacks, the decisions that changed
    the state, the risks and the next step; the weekly report's figures over a month."""
    month = weekly_report(store, name, since=since, until=until)
    found = incidents(decisions_between(store, name, since, until))
    rollbacks = sum(1 for d in month["decisions"] if d["kind"] == "rollback")
    legacy, new = month["week"]["legacy"], month["week"]["new"]
    risks = []
    if found["open"]:
        risks.append(f"{found['open']} incident(s) still open")
    if month["week"]["drifts"]:
        causes = len(month["drift_groups"])
        risks.append(
            f"{month['week']['drifts']} drifts between legacy and new in {causes} cause(s)"
        )
    if (new["error_rate"] or 0) > (legacy["error_rate"] or 0):
        risks.append("new fails more often than legacy")
    if month["p95_improvement"] is not None and month["p95_improvement"] < 0:
        risks.append("new is slower than legacy at p95")
    step = month["next"]
    stuck = step is not None and step["status"] in ("rolled_back", "aborted")
    if stuck:
        risks.append(f"the rollout is {step['status'].replace('_', ' ')}")
    if found["open"] or stuck:
        headline = "off track"
    elif month["state"] == "new":
        headline = "complete"
    elif risks or found["total"]:
        headline = "at risk"
    else:
        headline = "on track"
    return {
        "kind": "monthly",
        "migration": name,
        "since": month["since"],
        "until": until,
        "headline": headline,
        "state": month["state"],
        "state_at_start": month["state_at_start"],
        "share_history": month["share_history"],
        "month": month["week"],
        "cumulative": month["cumulative"],
        "p95_improvement": month["p95_improvement"],
        "incidents": found,
        "rollbacks": rollbacks,
        "decisions": [d for d in month["decisions"] if d["changed"]],
        "decisions_total": len(month["decisions"]),
        "risks": risks,
        "next": step,
    }
