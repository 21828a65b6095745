"""Customer messages: a Jinja2 template filled in once per tenant of a cohort."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cutover.errors import InvalidInput
from cutover.store import Cohort, Store


def humane(seconds: float) -> str:
    """A span as a message says it: 2 days, 36 hours, 90 minutes."""
    for unit, size in (("week", 604800), ("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = int(seconds // size)
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds / 3600:g} hours"


@dataclass(frozen=True, slots=True)
class Message:
    """One tenant's filled-in message."""

    tenant: str
    text: str


def variables(
    cohort: Cohort,
    tenant: str,
    known: Mapping[str, Any],
    *,
    date: str | None,
    retirement_window: str | None,
) -> dict[str, Any]:
    """What a template of ``tenant`` may use: the tenant's own fields (``customer_name`` is the
    tenant's id unless they say otherwise), the cohort's, ``date`` and ``retirement_window``."""
    from cutover.reports.render import _date

    when = date or (_date(cohort.promoted_at) if cohort.promoted_at else None)
    return {
        "tenant": tenant,
        "customer_name": tenant,
        "cohort": cohort.name,
        "wave": cohort.wave,
        "status": str(cohort.status),
        **({"date": when} if when else {}),  # unset, a template that needs it says so
        "retirement_window": retirement_window or humane(cohort.window),
        **dict(known),
    }


def render_messages(
    store: Store,
    migration: str,
    cohort_name: str,
    template: str,
    *,
    tenants: Mapping[str, Mapping[str, Any]] | None = None,
    date: str | None = None,
    retirement_window: str | None = None,
    source: str = "the template",
) -> list[Message]:
    """``template`` filled in for each tenant of the cohort, in the cohort's order."""
    import jinja2

    from cutover.reports.render import environment

    cohort = store.cohort(migration, cohort_name)
    if cohort is None:
        raise InvalidInput(
            f"{migration!r} has no cohort {cohort_name!r}; `cutover cohort list {migration}`"
            " shows its cohorts"
        )
    try:
        compiled = environment().from_string(template)
    except jinja2.TemplateSyntaxError as error:
        raise InvalidInput(f"{source}, line {error.lineno}: {error.message}") from None
    out = []
    for tenant in cohort.tenants:
        known = (tenants or {}).get(tenant) or {}
        values = variables(cohort, tenant, known, date=date, retirement_window=retirement_window)
        try:
            out.append(Message(tenant, compiled.render(**values)))
        except jinja2.UndefinedError as error:
            fix = (
                f"cohort {cohort_name!r} is not promoted yet: give --date"
                if "'date'" in str(error.message)
                else "add it to the tenants file"
            )
            raise InvalidInput(
                f"{source}: {error.message} for tenant {tenant!r}; {fix}"
                f" (its fields now: {', '.join(sorted(values))})"
            ) from None
    return out


__all__ = ["Message", "humane", "render_messages", "variables"]
