"""Audit gates of cohort steps: which audit report a step waits for, and whether one counts."""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from cutover.control.calendar import format_utc
from cutover.control.plan import Plan
from cutover.data.cohorts import judge_drift, load_audit
from cutover.errors import InvalidInput
from cutover.model import Rollout
from cutover.store import Cohort

NOTE = "audits"  # the rollout note keeping each step's accepted audit, by step index


def given(rollout: Rollout, index: int) -> Mapping[str, Any] | None:
    """The audit accepted for entering step ``index``, if any."""
    audits = rollout.notes.get(NOTE) or {}
    return audits.get(str(index)) if isinstance(audits, Mapping) else None


def waiting(plan: Plan, rollout: Rollout, index: int, cohort: Cohort | None) -> str | None:
    """What entering step ``index`` still waits for as far as audits go: None when the step
    asks for no audit or has one taken after its cohort's last rollback."""
    step = plan.steps[index]
    if step.audit is None or cohort is None:
        return None
    accepted = given(rollout, index)
    if accepted is not None and _after_rollback(float(accepted["audited_at"]), cohort):
        return None
    command = f"cutover rollout audit {rollout.migration} FILE --by WHO"
    if accepted is not None:
        return (
            f"waiting for an audit of cohort {cohort.name} taken after its rollback at"
            f" {format_utc(cohort.rolled_back_at or 0)}: {command}"
        )
    return f"waiting for an audit of cohort {cohort.name}: {command}"


def judge(
    plan: Plan,
    index: int,
    cohort: Cohort,
    report: Mapping[str, Any] | str | os.PathLike[str],
    now: float,
) -> dict[str, Any]:
    """The evidence of an audit report that lets step ``index`` be entered: its counts per
    tenant of the cohort, judged as `cutover cohort promote --audit` judges them.
    InvalidInput when a tenant has more drift than the step allows, or when the audit ran
    before the cohort's last rollback (the data it judged has been moved back since)."""
    step = plan.steps[index]
    assert step.audit is not None
    loaded, source = load_audit(report)
    evidence = judge_drift(
        loaded,
        cohort,
        step.audit.max_drift,
        source,
        allow=f"in steps[{index}].audit.max_drift of the plan",
    )
    audited_at = _finished(loaded.get("finished_at"), now)
    if not _after_rollback(audited_at, cohort):
        raise InvalidInput(
            f"the audit report finished at {format_utc(audited_at)}, before cohort"
            f" {cohort.name!r} was rolled back at {format_utc(cohort.rolled_back_at or 0)};"
            " audit the cohort's data again and give the new report"
        )
    return {**evidence, "cohort": cohort.name, "audited_at": audited_at}


def _after_rollback(audited_at: float, cohort: Cohort) -> bool:
    return cohort.rolled_back_at is None or audited_at > cohort.rolled_back_at


def _finished(stamp: Any, now: float) -> float:
    """When the audit finished, from the report's ``finished_at``; ``now`` (when it is given)
    for a report without one."""
    if stamp is None:
        return now
    try:
        at = datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(
            f"the audit report's finished_at {stamp!r} is not an ISO 8601 time; give the file"
            " `cutover audit --json` wrote"
        ) from None
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp()
