"""The JSON API under ``/api/v1``: reads for viewers, actions for operators and admins."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
)

from cutover import operations
from cutover.control.controller import Controller
from cutover.control.plan import Plan, load_plan, parse_plan
from cutover.durations import parse_duration
from cutover.errors import InvalidInput
from cutover.http._auth import Role
from cutover.http._deps import (
    ApiError,
    Operator,
    Settings,
    Viewer,
    controller_of,
    settings_of,
)
from cutover.http._names import Name
from cutover.http._reads import Answer, answer, reads_of, state_json
from cutover.model import Decision, Mode
from cutover.text import check_text

# -- shapes ---------------------------------------------------------------------------------


class ErrorOut(BaseModel):
    """Every refusal: one sentence saying what is wrong and how to fix it."""

    error: str
    fields: list[dict[str, Any]] | None = None
    current: dict[str, Any] | None = None
    possible_at: float | None = None


ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "No valid token"},
    403: {"model": ErrorOut, "description": "The token's role is too weak"},
    404: {"model": ErrorOut, "description": "No such migration"},
    413: {"model": ErrorOut, "description": "The body is too large"},
    422: {"model": ErrorOut, "description": "A field is invalid; the message names it"},
    503: {"model": ErrorOut, "description": "The store is unavailable"},
}
CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {
        "model": ErrorOut,
        "description": "The expected version is stale (`current` holds the state and rollout),"
        " or the plan's retry_after has not passed (`possible_at` says when, Unix seconds)",
    }
}

router = APIRouter(prefix="/api/v1", responses=ERRORS)

DURATION = r"^(?:[1-9][0-9]{0,3}(?:ms|s|m|h|d)){1,3}$|^[1-9][0-9]{0,8}$"
"""Durations the API takes: up to three parts like 1h30m, or seconds; never zero, never more
than a lifetime (each part under 10,000 units)."""

Window = Annotated[
    str,
    Query(pattern=DURATION, description="How far back: 30s, 5m, 1h, 14d", examples=["1h"]),
]
Until = Annotated[
    float | None,
    Query(ge=0, le=4102444800, description="End of the span, Unix seconds (default: now)"),
]
Limit = Annotated[int, Query(ge=1, le=1000, description="At most this many")]
IfNoneMatch = Annotated[
    str | None,
    Header(description="An ETag this endpoint sent: 304 without a body while it still holds"),
]
CACHED: dict[int | str, dict[str, Any]] = {
    200: {
        "headers": {
            "ETag": {"schema": {"type": "string"}, "description": "Changes with the body"},
            "Cutover-Stale": {
                "schema": {"type": "string"},
                "description": "Only while the store cannot be read: the answer is the last"
                " known one, this many seconds old",
            },
        }
    },
    304: {"description": "Unchanged since the ETag sent in If-None-Match"},
}


def _storable(text: str | None) -> str | None:
    """Text a store can be asked about (no NUL, which PostgreSQL refuses outright)."""
    if text is None:
        return None
    try:
        return check_text(text, "the value")
    except InvalidInput as error:
        raise ValueError(str(error)) from None


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(
        min_length=1, max_length=2000, description="Why: recorded in the decision log"
    )


class Versioned(_Body):
    expected_version: StrictInt = Field(
        ge=0,
        le=10**15,
        description="The rollout version you acted on; a stale one gets 409 with the current",
    )


class SetState(_Body):
    """A state change; fields left out keep their value."""

    expected_version: StrictInt = Field(
        ge=0, le=10**15, description="The state version you read (0 for a migration not stored)"
    )
    mode: Mode | None = None
    percent: StrictFloat | None = Field(None, ge=0, le=100)
    percent_delta: StrictFloat | None = Field(
        None, ge=-100, le=100, description="Relative change of percent: +5 or -10"
    )
    sample: StrictFloat | None = Field(None, ge=0, le=1)
    fallback: StrictBool | None = None
    pin_new: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(
        default_factory=list, max_length=1000
    )
    pin_legacy: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(
        default_factory=list, max_length=1000
    )
    unpin: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(
        default_factory=list, max_length=1000
    )


class NoiseChange(_Body):
    """A path prefix whose differences never count as drift."""

    prefix: str = Field(min_length=1, max_length=1000, description="A path like $.body.request_id")


class StartRollout(_Body):
    """Start a plan: by file name from the server's plans directory, or (admins) inline."""

    reason: str = Field("", max_length=2000, description="Why (default: the plan's source)")
    plan: str | None = Field(
        None, min_length=1, max_length=200, description="A file name `GET /plans` lists"
    )
    definition: dict[str, Any] | None = Field(None, description="A whole plan (admin only)")
    replace: StrictBool = Field(False, description="Replace an active rollout (admin only)")
    expected_version: StrictInt | None = Field(
        None,
        ge=0,
        le=10**15,
        description="The version of the rollout record this replaces or restarts (0 for none);"
        " left out, it is not checked",
    )


class Promote(Versioned):
    force: StrictBool = Field(False, description="Override failing checks (admin only)")


class Resume(Versioned):
    reason: str = Field("", max_length=2000, description="Why (optional)")


class Approve(Versioned):
    step: StrictInt | None = Field(None, ge=1, le=1000, description="1-based step (default: next)")
    role: str | None = Field(
        None,
        max_length=40,
        description="For a step that asks for roles: the role this approval is for, one of the"
        " token's approval_roles (default: the only one of them still missing)",
    )


class GiveAudit(Versioned):
    reason: str = Field("", max_length=2000, description="Why (optional)")
    report: dict[str, Any] = Field(
        description="The audit report as `cutover audit --json` wrote it, with counts per tenant"
    )
    step: StrictInt | None = Field(
        None, ge=1, le=1000, description="1-based step (default: the next waiting for an audit)"
    )


class Retry(Versioned):
    reason: str = Field("", max_length=2000, description="Why (optional)")
    step: StrictInt | None = Field(None, ge=1, le=1000, description="1-based step to retry from")


class DecisionOut(BaseModel):
    decision: dict[str, Any] | None = Field(
        description="The decision recorded; null when the state already had these settings"
    )


class WhoAmI(BaseModel):
    name: str
    role: Literal["viewer", "operator", "admin"]
    approval_roles: list[str] = Field(
        default_factory=list, description="The plan roles this token approves steps as"
    )


class StateOut(BaseModel):
    name: str
    stored: bool
    mode: Literal["legacy", "shadow", "canary", "new"]
    percent: float
    effective_percent: float
    sample: float
    fallback: bool
    pins: dict[str, list[str]]
    version: int
    updated_at: float | None
    updated_by: str | None


# -- reads ----------------------------------------------------------------------------------


def _seconds(text: str, field: str) -> float:
    try:
        return parse_duration(text, field)
    except InvalidInput as error:
        raise ApiError(422, f"{field}: {error}") from None


@router.get("/whoami", response_model=WhoAmI, tags=["read"], summary="Who the token is")
def whoami(who: Viewer) -> dict[str, Any]:
    return {"name": who.name, "role": who.role.label, "approval_roles": sorted(who.approval_roles)}


@router.get("/migrations", tags=["read"], summary="Every migration at a glance", responses=CACHED)
async def migrations(
    request: Request, _who: Viewer, window: Window = "5m", if_none_match: IfNoneMatch = None
) -> Response:
    settings = settings_of(request)
    reads = reads_of(request)
    span = _seconds(window, "window")
    key = ("migrations", span)
    found = reads.cached(key, with_states=True)
    if found is None:
        basis = reads.snapshot()

        def overview() -> dict[str, Any]:
            now = settings.clock()
            rows = operations.overview(settings.store, now, span)
            return {
                "at": now,
                "window_seconds": span,
                "migrations": [row.to_json() for row in rows],
            }

        found = reads.keep(
            key,
            await run_in_threadpool(overview),
            seconds=settings.refresh_seconds,
            with_states=True,
            states=basis,
        )
    return found.response(if_none_match)


@router.get("/migrations/{name}", tags=["read"], summary="One migration: state, rollout, stats")
def migration(request: Request, name: Name, _who: Viewer, window: Window = "5m") -> dict[str, Any]:
    return migration_detail(request, name, _seconds(window, "window"))


def migration_detail(request: Request, name: str, window_seconds: float) -> dict[str, Any]:
    """One migration as `cutover status --json` has it, its stats and health over the window,
    and its rollout as the controller evaluates it now."""
    settings = settings_of(request)
    store = settings.store
    now = settings.clock()
    state = operations.require_known(store, name)
    report = operations.stats(store, name, window_seconds, now)
    rollout = store.rollout(name)
    evaluation = None
    if rollout is not None:
        evaluation = controller_of(request).evaluate(name, rollout=rollout, state=state).to_json()
    return {
        "name": name,
        "state": operations.status_of(store, name, state, now).to_json(),
        "stats": report.to_json(),
        "health": operations.health(report, rollout).to_json(),
        "rollout": evaluation,
    }


@router.get(
    "/migrations/{name}/state",
    response_model=StateOut,
    responses=CACHED,
    tags=["read"],
    summary="The stored state: mode, percent, sample, fallback, pins, version",
)
async def state(
    request: Request, name: Name, _who: Viewer, if_none_match: IfNoneMatch = None
) -> Response:
    found = reads_of(request).state(name)
    if found is None:  # not in memory: only telemetry or a rollout, unknown, or no runtime here
        found = await run_in_threadpool(_stored_state, request, name)
    return found.response(if_none_match)


def _stored_state(request: Request, name: str) -> Answer:
    return answer(state_json(name, operations.require_known(settings_of(request).store, name)))


@router.get("/migrations/{name}/stats", tags=["read"], summary="Both arms over a window")
def stats(
    request: Request, name: Name, _who: Viewer, window: Window = "1h", until: Until = None
) -> dict[str, Any]:
    settings = settings_of(request)
    span = _seconds(window, "window")
    report = operations.stats(settings.store, name, span, settings.clock(), until)
    return report.to_json()


@router.get(
    "/migrations/{name}/slos",
    tags=["read"],
    summary="Each SLO of the rollout's plan: target, actual, error budget, burn rates",
)
def slos(request: Request, name: Name, _who: Viewer) -> dict[str, Any]:
    from cutover.reports.objectives import objectives, statuses

    settings = settings_of(request)
    operations.require_known(settings.store, name)
    shown = statuses(settings.store, objectives(settings.store, name), settings.clock())
    return {**shown, "slos": [row.to_json() for row in shown["slos"]]}


@router.get("/migrations/{name}/routes", tags=["read"], summary="Per route of a proxied service")
def route_stats(
    request: Request, name: Name, _who: Viewer, window: Window = "1h", until: Until = None
) -> dict[str, Any]:
    settings = settings_of(request)
    span = _seconds(window, "window")
    rows = operations.route_stats(settings.store, name, span, settings.clock(), until)
    return {"migration": name, "routes": [row.to_json() for row in rows]}


@router.get(
    "/migrations/{name}/series", tags=["read"], summary="Both arms over time", responses=CACHED
)
async def series(
    request: Request,
    name: Name,
    _who: Viewer,
    window: Window = "1h",
    step: Annotated[
        str | None,
        Query(
            pattern=DURATION,
            description="Bucket width (default: window / 60, at least 1m); widened to keep"
            f" at most {operations.MAX_POINTS} points",
        ),
    ] = None,
    until: Until = None,
    if_none_match: IfNoneMatch = None,
) -> Response:
    settings = settings_of(request)
    reads = reads_of(request)
    span = _seconds(window, "window")
    # One bucket more than span / step when the first is aligned down: leave room for it.
    width = max(
        _seconds(step, "step") if step else max(60.0, span / 60),
        float(math.ceil(span / (operations.MAX_POINTS - 1))),  # whole seconds: readable starts
    )
    known = reads.known(name)

    def points(since: float, end: float) -> list[dict[str, Any]]:
        found = operations.time_series(
            settings.store, name, since=since, until=end, step=width, known=known
        )
        return [point.to_json() for point in found]

    if until is None:
        end = settings.clock()
        key: tuple[Any, ...] = ("series", name, span, width)
        found = await run_in_threadpool(
            reads.live_series, key, name, end=end, span=span, width=width, points=points
        )
    else:
        key = ("series", name, span, width, until)
        found = reads.cached(key)
        if found is None:
            shown = await run_in_threadpool(points, until - span, until)
            body = {"migration": name, "since": shown[0]["start"], "until": until}
            found = reads.keep(
                key,
                {**body, "step_seconds": width, "points": shown},
                seconds=settings.refresh_seconds,
            )
    return found.response(if_none_match)


@router.get("/migrations/{name}/drifts", tags=["read"], summary="Drifts grouped by root cause")
def drifts(
    request: Request, name: Name, _who: Viewer, window: Window = "7d", limit: Limit = 20
) -> dict[str, Any]:
    settings = settings_of(request)
    operations.require_known(settings.store, name)
    since = settings.clock() - _seconds(window, "window")
    groups = settings.store.drift_groups(name, since)[:limit]
    return {"migration": name, "groups": [group.to_json() for group in groups]}


@router.get("/migrations/{name}/drift-samples", tags=["read"], summary="Recent drift samples")
def drift_samples(
    request: Request,
    name: Name,
    _who: Viewer,
    window: Window = "7d",
    limit: Limit = 20,
    fingerprint: Annotated[str | None, AfterValidator(_storable), Query(max_length=200)] = None,
) -> dict[str, Any]:
    settings = settings_of(request)
    operations.require_known(settings.store, name)
    since = settings.clock() - _seconds(window, "window")
    samples = settings.store.drift_samples(name, limit, since, fingerprint)
    return {"migration": name, "samples": [sample.to_dict() for sample in samples]}


@router.get(
    "/migrations/{name}/noise", tags=["read"], summary="What counts as noise: declared, learned"
)
def noise(request: Request, name: Name, _who: Viewer) -> dict[str, Any]:
    return operations.noise(settings_of(request).store, name)


def _noise_change(request: Request, name: str, body: NoiseChange, who: Any, remove: bool) -> Any:
    settings = settings_of(request)
    decision = operations.noise_rule(
        settings.store,
        name,
        body.prefix,
        remove=remove,
        actor=who.name,
        reason=body.reason,
        clock=settings.clock,
        evidence={"via": "api", "role": who.role.label},
    )
    return _decided(request, decision)


@router.post(
    "/migrations/{name}/noise",
    response_model=DecisionOut,
    tags=["act"],
    summary="Declare a noise prefix (operator)",
)
def add_noise(request: Request, name: Name, body: NoiseChange, who: Operator) -> dict[str, Any]:
    return _noise_change(request, name, body, who, remove=False)


@router.post(
    "/migrations/{name}/noise/remove",
    response_model=DecisionOut,
    tags=["act"],
    summary="Drop a noise prefix (operator)",
)
def remove_noise(request: Request, name: Name, body: NoiseChange, who: Operator) -> dict[str, Any]:
    return _noise_change(request, name, body, who, remove=True)


@router.get("/migrations/{name}/decisions", tags=["read"], summary="The decision log, newest first")
def migration_decisions(
    request: Request, name: Name, _who: Viewer, limit: Limit = 100
) -> dict[str, Any]:
    store = settings_of(request).store
    operations.require_known(store, name)
    return {"decisions": [d.to_dict() for d in reversed(store.decisions(name, limit))]}


@router.get(
    "/decisions", tags=["read"], summary="The decision log of every migration, newest first"
)
def decisions(request: Request, _who: Viewer, limit: Limit = 100) -> dict[str, Any]:
    store = settings_of(request).store
    return {"decisions": [d.to_dict() for d in reversed(store.decisions(None, limit))]}


@router.get(
    "/migrations/{name}/rollout",
    tags=["read"],
    summary="The rollout: plan, step, checks with their evidence, next action",
)
def rollout(request: Request, name: Name, _who: Viewer) -> dict[str, Any]:
    store = settings_of(request).store
    state = operations.require_known(store, name)
    current = store.rollout(name)
    if current is None:
        raise ApiError(404, f"{name!r} has no rollout; start one with POST /api/v1/rollouts")
    return controller_of(request).evaluate(name, rollout=current, state=state).to_json()


@router.get("/plans", tags=["read"], summary="The plans this server may start")
def plans(request: Request, _who: Viewer) -> dict[str, Any]:
    settings = settings_of(request)
    out = []
    for path in plan_files(settings):
        try:
            plan = load_plan(path)
        except InvalidInput as error:
            out.append({"file": path.name, "valid": False, "error": str(error)})
            continue
        out.append(
            {
                "file": path.name,
                "valid": True,
                "migration": plan.migration,
                "description": plan.description,
                "steps": [step.label for step in plan.steps],
            }
        )
    return {"plans": out}


def plan_files(settings: Settings) -> list[Path]:
    if settings.plans_dir is None:
        return []
    return sorted(
        path
        for path in settings.plans_dir.iterdir()
        if path.is_file() and path.suffix in (".yaml", ".yml", ".json")
    )


# -- actions --------------------------------------------------------------------------------


def _decided(request: Request, decision: Decision | None) -> dict[str, Any]:
    """The answer to a write, once this server's reads show it (read-your-writes)."""
    reads_of(request).wrote()
    return {"decision": None if decision is None else decision.to_dict()}


@router.post(
    "/migrations/{name}/state",
    response_model=DecisionOut,
    responses=CONFLICT,
    tags=["act"],
    summary="Set the state (operator)",
)
def set_state(request: Request, name: Name, body: SetState, who: Operator) -> dict[str, Any]:
    settings = settings_of(request)
    if body.percent is not None and body.percent_delta is not None:
        raise ApiError(422, "percent and percent_delta: give one of them, not both")
    change = operations.Change(
        mode=body.mode,
        percent=body.percent,
        percent_delta=body.percent_delta,
        sample=body.sample,
        fallback=body.fallback,
        pin_new=tuple(body.pin_new),
        pin_legacy=tuple(body.pin_legacy),
        unpin=tuple(body.unpin),
    )
    if change.empty:
        raise ApiError(
            422,
            "nothing to change: give mode, percent, percent_delta, sample, fallback, pin_new,"
            " pin_legacy or unpin",
        )
    decision = operations.set_state(
        settings.store,
        name,
        change,
        reason=body.reason,
        actor=who.name,
        clock=settings.clock,
        expected_version=body.expected_version,
        evidence={"via": "api", "role": who.role.label},
    )
    return _decided(request, decision)


@router.post(
    "/rollouts",
    response_model=DecisionOut,
    responses=CONFLICT,
    tags=["act"],
    summary="Start a rollout plan (operator; inline plans and replace: admin)",
)
def start(request: Request, body: StartRollout, who: Operator) -> dict[str, Any]:
    settings = settings_of(request)
    if (body.plan is None) == (body.definition is None):
        raise ApiError(422, "plan or definition: give exactly one of them")
    if (body.definition is not None or body.replace) and who.role < Role.ADMIN:
        what = "an inline plan" if body.definition is not None else "replace"
        raise ApiError(403, f"{what} needs the admin role; the token of {who.name} has operator")
    plan: Plan
    if body.definition is not None:
        plan = parse_plan(body.definition, "definition")
        source = f"inline plan from {who.name}"
    else:
        found = {path.name: path for path in plan_files(settings)}
        if body.plan not in found:
            known = ", ".join(sorted(found)) or "none; start the server with --plans DIR"
            raise ApiError(422, f"plan: no plan file named {body.plan!r} (known: {known})")
        plan = load_plan(found[body.plan])
        source = body.plan or ""
    decision = controller_of(request).start(
        plan,
        actor=who.name,
        reason=body.reason,
        source=source,
        replace=body.replace,
        expected_version=body.expected_version,
    )
    return _decided(request, decision)


Steering = Annotated[Controller, Depends(controller_of)]


def _action(path: str, summary: str) -> Any:
    return router.post(
        f"/migrations/{{name}}/rollout/{path}",
        response_model=DecisionOut,
        responses=CONFLICT,
        tags=["act"],
        summary=summary,
    )


def _steer(
    request: Request, action: Any, name: str, body: Versioned, **arguments: Any
) -> dict[str, Any]:
    """Run one controller action with the body's reason and expected version."""
    decision = action(name, reason=body.reason, expected_version=body.expected_version, **arguments)
    return _decided(request, decision)


@_action("promote", "Move to the next step now (operator; force: admin)")
def promote(
    request: Request, name: Name, body: Promote, who: Operator, controller: Steering
) -> dict[str, Any]:
    if body.force and who.role < Role.ADMIN:
        raise ApiError(403, f"force needs the admin role; the token of {who.name} has operator")
    return _steer(request, controller.promote, name, body, actor=who.name, force=body.force)


@_action("pause", "Hand the rollout to people: nothing automatic until resumed (operator)")
def pause(
    request: Request, name: Name, body: Versioned, who: Operator, controller: Steering
) -> dict[str, Any]:
    return _steer(request, controller.pause, name, body, actor=who.name)


@_action("resume", "Hand a paused or rolled-back rollout back to the controller (operator)")
def resume(
    request: Request, name: Name, body: Resume, who: Operator, controller: Steering
) -> dict[str, Any]:
    return _steer(request, controller.resume, name, body, actor=who.name)


@_action("approve", "Approve entering a step that asks for it (operator; four-eyes)")
def approve(
    request: Request, name: Name, body: Approve, who: Operator, controller: Steering
) -> dict[str, Any]:
    return _steer(
        request,
        controller.approve,
        name,
        body,
        by=who.name,
        step=body.step,
        role=body.role,
        token_roles=who.approval_roles,
    )


@_action("audit", "Give the audit report a cohort step waits for (operator)")
def give_audit(
    request: Request, name: Name, body: GiveAudit, who: Operator, controller: Steering
) -> dict[str, Any]:
    return _steer(
        request, controller.audit, name, body, report=body.report, by=who.name, step=body.step
    )


@_action("abort", "Return to legacy now and stop the rollout (operator)")
def abort(
    request: Request, name: Name, body: Versioned, who: Operator, controller: Steering
) -> dict[str, Any]:
    return _steer(request, controller.abort, name, body, actor=who.name)


@_action("retry", "Walk the plan again from a step (operator)")
def retry(
    request: Request, name: Name, body: Retry, who: Operator, controller: Steering
) -> dict[str, Any]:
    return _steer(request, controller.retry, name, body, actor=who.name, step=body.step)
