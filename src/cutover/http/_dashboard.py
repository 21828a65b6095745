"""The live dashboard: server-rendered pages and fragments over the library calls the API makes."""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

from fastapi import APIRouter, FastAPI, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import escape

from cutover import operations
from cutover._version import __version__
from cutover.control.controller import step_label
from cutover.control.plan import load_plan, parse_plan
from cutover.durations import format_duration, parse_duration
from cutover.errors import CutoverError, InvalidInput, StoreError, UnknownMigration
from cutover.http._api import migration_detail, plan_files
from cutover.http._auth import Principal, Role
from cutover.http._deps import COOKIE, CSRF_HEADER, Settings, settings_of
from cutover.http._names import Segment, segment
from cutover.model import Mode, Rollout, RolloutStatus

HERE = Path(__file__).parent
STATIC = HERE / "static"

OVERVIEW_WINDOWS = ("5m", "15m", "1h", "6h", "1d")
CHART_WINDOWS = ("15m", "1h", "6h", "1d")
STATS_WINDOW = "5m"  # the summary of one migration, as `GET /api/v1/migrations/{name}` has it
DRIFT_WINDOW = 7 * 86400.0
DRIFT_GROUPS = 10
DECISIONS = 50

router = APIRouter(include_in_schema=False)


# -- rendering --------------------------------------------------------------------------------


def _when(at: float | None) -> str:
    if at is None:
        return "never"
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _ago(at: float | None, now: float) -> str:
    """How long ago, coarse enough not to change on every refresh: 45s, 20m, 3h10m, 2d4h."""
    if at is None:
        return "never"
    seconds = int(max(0.0, now - at))
    if seconds < 5:
        return "just now"
    if seconds < 60:
        return f"{seconds}s ago"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes}m ago"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes}m ago" if minutes else f"{hours}h ago"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours}h ago" if hours else f"{days}d ago"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    return format_duration(round(seconds)) if seconds >= 1 else format_duration(seconds)


def _rate(value: Any) -> str:
    """A share as a percentage with enough digits to tell 0.01% from 0.1%."""
    if value is None:
        return "–"
    if isinstance(value, str):  # "inf" from an unbounded interval
        return value
    percent = value * 100
    if percent == 0:
        return "0%"
    digits = 2 if percent >= 1 else max(2, 1 - math.floor(math.log10(percent)))
    return f"{percent:.{min(digits, 4)}f}%"


def _number(value: Any) -> str:
    """A measured value: four significant digits, or the text JSON gave it ("inf")."""
    if value is None:
        return "–"
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return f"{value:.4g}"


def _ms(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.3g} ms" if value < 100 else f"{value:,.0f} ms"


def _count(value: int | None) -> str:
    return "–" if value is None else f"{value:,}"


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{value:g}%"


def _state_text(state: Mapping[str, Any] | None) -> str:
    """A state in a few words: the mode, the canary's percent, the sample where it matters."""
    if not state:
        return "none"
    mode = state.get("mode", "legacy")
    if mode == Mode.CANARY.value:
        return f"canary {state.get('percent', 0):g}%"
    if mode == Mode.SHADOW.value:
        return f"shadow (sample {state.get('sample', 1):g})"
    return str(mode)


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=str)


TEMPLATES = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(["html"]),
    undefined=StrictUndefined,  # a misspelt name fails the test suite, not a page in production
    trim_blocks=True,
    lstrip_blocks=True,
)
TEMPLATES.filters.update(
    when=_when,
    duration=_duration,
    rate=_rate,
    number=_number,
    ms=_ms,
    count=_count,
    percent=_percent,
    state_text=_state_text,
    pretty=_pretty,
    segment=segment,  # a migration's name in a link: team/codec -> team%2Fcodec
)


def _render(
    request: Request,
    template: str,
    who: Principal | None,
    *,
    status: int = 200,
    **context: Any,
) -> HTMLResponse:
    settings = settings_of(request)
    now = settings.clock()
    html = TEMPLATES.get_template(template).render(
        who=who,
        signed_in=_signed_in(request),
        is_admin=who is not None and who.role >= Role.ADMIN,
        public_read=settings.public_read,
        refresh_seconds=settings.refresh_seconds,
        csrf_header=CSRF_HEADER,
        version=__version__,
        now=now,
        ago=lambda at: _ago(at, now),
        **context,
    )
    # Pages hold live data for one person: never cached, never shared by a proxy.
    return HTMLResponse(
        html, status_code=status, headers={"cache-control": "no-store", "vary": "cookie"}
    )


def _error(
    request: Request, who: Principal | None, status: int, title: str, message: str
) -> HTMLResponse:
    return _render(
        request,
        "error.html",
        who,
        status=status,
        title=title,
        message=message,
    )


def _fragment_error(status: int, message: str) -> HTMLResponse:
    """What a refresh gets instead of panels: the script shows the sentence and keeps polling."""
    return HTMLResponse(
        f'<p class="problem" data-problem="{status}">{escape(message)}</p>',
        status_code=status,
        headers={"cache-control": "no-store"},
    )


# -- who is signed in -------------------------------------------------------------------------


def _token(request: Request) -> str | None:
    """The cookie's token, else a bearer token (pages can be fetched with curl too)."""
    cookie = request.cookies.get(COOKIE)
    if cookie:
        return cookie
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return None


def _who(request: Request) -> Principal | None:
    """The person reading: by token, or the anonymous reader of a public server; None when they
    must sign in (no token, or one no longer valid)."""
    settings = settings_of(request)
    token = _token(request)
    if token:
        return settings.tokens.check(token)
    if settings.public_read:
        return Principal("anonymous", Role.VIEWER)
    return None


def _signed_in(request: Request) -> bool:
    token = _token(request)
    return token is not None and settings_of(request).tokens.check(token) is not None


def _to_login(request: Request) -> RedirectResponse:
    path = request.url.path  # as routed: a slash inside a name is still %2F
    target = "/login" if path == "/" else f"/login?next={quote(path, safe='/%')}"
    return RedirectResponse(target, status_code=303, headers={"cache-control": "no-store"})


def _local(target: str | None) -> str:
    """Where to go after signing in: a path on this server, never another site."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return "/"
    return target


def _same_origin(request: Request) -> bool:
    """Whether a form post comes from a page of this server (a sign-in posted from another site
    would sign the victim in as the attacker). Browsers say where a request comes from in
    Sec-Fetch-Site, which every current browser sends; without it, Origin must name this
    server."""
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site in ("same-origin", "none")
    origin = request.headers.get("origin")
    if origin is None:  # not a browser (curl, a script): nothing to forge
        return True
    # "null" comes from sandboxed frames and other opaque origins: not this server's pages.
    return origin != "null" and urlsplit(origin).netloc == request.headers.get("host", "")


# -- sign in and out --------------------------------------------------------------------------


@router.get("/login")
def login_form(
    request: Request, target: Annotated[str, Query(alias="next", max_length=500)] = "/"
) -> HTMLResponse:
    token = _token(request)
    who = settings_of(request).tokens.check(token) if token else None
    response = _render(request, "login.html", who, error=None, next=_local(target))
    if token and who is None and COOKIE in request.cookies:
        response.delete_cookie(COOKIE, path="/")  # revoked or rotated: forget it
    return response


@router.post("/login")
def login(
    request: Request,
    token: Annotated[str, Form(max_length=500)] = "",
    then: Annotated[str, Form(alias="next", max_length=500)] = "/",
) -> Response:
    settings = settings_of(request)
    target = _local(then)
    if not _same_origin(request):
        return _login_refused(request, target, 403, "This sign-in came from another site.")
    token = token.strip()
    if not token:
        return _login_refused(request, target, 401, "Enter a token to sign in.")
    who = settings.tokens.check(token)
    if who is None:
        return _login_refused(
            request,
            target,
            401,
            "That token is not valid; ask an admin for one (cutover token create).",
        )
    response = RedirectResponse(target, status_code=303, headers={"cache-control": "no-store"})
    response.set_cookie(
        COOKIE,
        token,
        httponly=True,
        samesite="strict",
        path="/",
        secure=settings.secure_cookie,
    )
    return response


def _login_refused(request: Request, target: str, status: int, error: str) -> HTMLResponse:
    return _render(request, "login.html", _who(request), status=status, error=error, next=target)


@router.post("/logout")
def logout(request: Request) -> Response:
    if not _same_origin(request):
        return _error(request, None, 403, "Refused", "This sign-out came from another site.")
    response = RedirectResponse("/login", status_code=303, headers={"cache-control": "no-store"})
    response.delete_cookie(
        COOKIE,
        path="/",
        httponly=True,
        samesite="strict",
        secure=settings_of(request).secure_cookie,
    )
    return response


# -- every migration at a glance --------------------------------------------------------------


def _window(text: str, choices: tuple[str, ...]) -> tuple[str, float]:
    if text not in choices:
        raise InvalidInput(f"window: choose one of {', '.join(choices)}, not {text!r}")
    return text, parse_duration(text, "window")


def _rollout_label(rollout: Rollout) -> str:
    try:
        return step_label(parse_plan(rollout.plan), rollout.step)
    except (InvalidInput, IndexError):
        return f"step {rollout.step + 1}"


def _overview(settings: Settings, span: float) -> dict[str, Any]:
    now = settings.clock()
    rows = []
    for row in operations.overview(settings.store, now, span):
        data = row.to_json()
        if row.rollout is not None:
            data["rollout"]["label"] = _rollout_label(row.rollout)
        rows.append(data)
    levels = Counter(row["health"]["level"] for row in rows)
    order = ("critical", "warning", "ok", "idle")
    return {"rows": rows, "levels": [(level, levels[level]) for level in order if levels[level]]}


@router.get("/")
def overview_page(request: Request, window: str = "5m") -> Response:
    who = _who(request)
    if who is None:
        return _to_login(request)
    return _guarded(
        request,
        who,
        lambda: _render(
            request,
            "overview.html",
            who,
            window=window,
            windows=OVERVIEW_WINDOWS,
            **_overview(settings_of(request), _window(window, OVERVIEW_WINDOWS)[1]),
        ),
    )


@router.get("/fragments/overview")
def overview_fragment(request: Request, window: str = "5m") -> Response:
    who = _who(request)
    if who is None:
        return _fragment_error(401, "You are signed out; sign in again to keep this page live.")
    return _guarded_fragment(
        lambda: _render(
            request,
            "_overview.html",
            who,
            window=window,
            **_overview(settings_of(request), _window(window, OVERVIEW_WINDOWS)[1]),
        )
    )


def _guarded(request: Request, who: Principal, render: Callable[[], Response]) -> Response:
    """A page, or an error page saying in one sentence what went wrong."""
    try:
        return render()
    except UnknownMigration as error:
        return _error(
            request,
            who,
            404,
            "Not found",
            f"There is no migration named {error.name!r} in the store.",
        )
    except StoreError:
        return _error(
            request, who, 503, "Store unavailable", "The store is unavailable; try again shortly."
        )
    except CutoverError as error:
        return _error(request, who, 422, "Cannot show this", str(error))


def _guarded_fragment(render: Callable[[], Response]) -> Response:
    try:
        return render()
    except UnknownMigration as error:
        return _fragment_error(404, f"There is no migration named {error.name!r} any more.")
    except StoreError:
        return _fragment_error(503, "The store is unavailable; retrying.")
    except CutoverError as error:
        return _fragment_error(422, str(error))


# -- one migration ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Action:
    """A button: what it does, the version it acts on, and the role it needs."""

    verb: str  # the dialog's kind and the endpoint it posts to
    label: str
    hint: str  # one sentence in the dialog: what pressing it will do
    version: int
    needs: Role = Role.OPERATOR
    danger: bool = False
    step: int | None = None  # 1-based step an approve or retry suggests
    blocked: str = ""  # why the controller would refuse it now, whoever presses it
    forceable: bool = False  # an admin may force it past what blocks it


def _promote(evaluation: Mapping[str, Any], labels: list[str], index: int, version: int) -> Action:
    """The promote button, with what the controller would refuse it for right now: an
    approval the next step lacks (nobody can skip it) or checks that fail or are inconclusive
    (an admin can force past them)."""
    move = f"Move from {labels[index] if index >= 0 else 'the start'} to {labels[index + 1]} now"
    following = evaluation["steps"][index + 1]
    if following["approval"] and (not following["approved"] or following["roles_missing"]):
        blocked = f"{labels[index + 1]} needs an approval first"
        return Action("promote", "Promote…", f"{move}.", version, blocked=blocked)
    unsure = [c for c in evaluation["checks"] if c["outcome"] in ("fail", "inconclusive")]
    if unsure:
        blocked = "; ".join(f"{c['name']} is {c['outcome']}" for c in unsure)
        hint = f"{move}, forced past checks that do not pass: {blocked}."
        return Action("promote", "Promote…", hint, version, blocked=blocked, forceable=True)
    return Action(
        "promote",
        "Promote…",
        f"{move}, without waiting out the hold; every check passes now.",
        version,
    )


def _rollout_actions(evaluation: Mapping[str, Any] | None, has_plans: bool) -> list[Action]:
    """The actions the controller accepts in the rollout's status (it refuses the others)."""
    if evaluation is None:
        if not has_plans:
            return []
        return [
            Action("start", "Start plan…", "Start a plan from the server's plans directory.", 0)
        ]
    status = RolloutStatus(evaluation["status"])
    version = int(evaluation["version"])
    steps = evaluation["steps"]
    index = int(evaluation["step"])
    labels = [step["label"] for step in steps]
    actions = []
    if status.active and index + 1 < len(steps):
        actions.append(_promote(evaluation, labels, index, version))
    after = -1 if status is RolloutStatus.ABORTED else index
    waiting = [
        step["index"]
        for step in steps
        if step["index"] > after
        and step["approval"]
        and (not step["approved"] or step["roles_missing"])
    ]
    if status is not RolloutStatus.COMPLETED and waiting:
        actions.append(
            Action(
                "approve",
                "Approve…",
                f"Approve entering {labels[waiting[0]]} (step {waiting[0] + 1}); the controller"
                " promotes once the gate passes.",
                version,
                step=waiting[0] + 1,
            )
        )
    if status in (RolloutStatus.RUNNING, RolloutStatus.ROLLED_BACK):
        actions.append(
            Action(
                "pause",
                "Pause…",
                "Hand the rollout to people: nothing automatic happens until it is resumed.",
                version,
            )
        )
    if status in (RolloutStatus.PAUSED, RolloutStatus.ROLLED_BACK):
        actions.append(
            Action(
                "resume",
                "Resume…",
                "Hand the rollout back to the controller; the step's state is re-applied if it"
                " was changed meanwhile.",
                version,
            )
        )
    if status in (RolloutStatus.ABORTED, RolloutStatus.ROLLED_BACK, RolloutStatus.PAUSED):
        actions.append(
            Action(
                "retry",
                "Retry…",
                "Walk the plan again from a step, with a fresh hold.",
                version,
                step=1 if status is RolloutStatus.ABORTED else max(index, 0) + 1,
            )
        )
    if status is not RolloutStatus.ABORTED:
        actions.append(
            Action(
                "abort",
                "Abort…",
                "Return to legacy now and stop the rollout.",
                version,
                danger=True,
            )
        )
    if has_plans:
        if status.active:
            actions.append(
                Action(
                    "replace",
                    "Replace plan…",
                    "Replace the active rollout with a plan from the server's plans directory.",
                    version,
                    needs=Role.ADMIN,
                )
            )
        else:
            actions.append(
                Action(
                    "start",
                    "Start plan…",
                    "Start a plan from the server's plans directory.",
                    version,
                )
            )
    return actions


def _plans(settings: Settings, name: str) -> list[dict[str, Any]]:
    """The plan files this server may start for ``name`` (as ``GET /api/v1/plans`` lists them)."""
    out = []
    for path in plan_files(settings):
        try:
            plan = load_plan(path)
        except InvalidInput:
            continue
        if plan.migration == name:
            out.append({"file": path.name, "steps": [step.label for step in plan.steps]})
    return out


def _checks_summary(evaluation: Mapping[str, Any] | None) -> list[tuple[str, int]]:
    if evaluation is None:
        return []
    tally = Counter(check["outcome"] for check in evaluation["checks"])
    return [(o, tally[o]) for o in ("fail", "inconclusive", "pass", "skipped") if tally[o]]


def _migration(request: Request, name: str) -> dict[str, Any]:
    """Everything the page shows but the charts, read as the API reads it."""
    settings = settings_of(request)
    store = settings.store
    now = settings.clock()
    detail = migration_detail(request, name, parse_duration(STATS_WINDOW, "window"))
    evaluation = detail["rollout"]
    plans = _plans(settings, name)
    return {
        **detail,
        "checks_summary": _checks_summary(evaluation),
        "plans": plans,
        "actions": _rollout_actions(evaluation, bool(plans)),
        "state_action": Action(
            "state",
            "Set state…",
            "Change the stored state; every process using the store picks it up within a second.",
            int(detail["state"]["version"]),
        ),
        "drift_groups": [g.to_json() for g in store.drift_groups(name, now - DRIFT_WINDOW)][
            :DRIFT_GROUPS
        ],
        "decisions": [d.to_dict() for d in reversed(store.decisions(name, DECISIONS))],
        "stats_window": STATS_WINDOW,
        "modes": [mode.value for mode in Mode],
    }


@router.get("/migrations/{name}")
def migration_page(request: Request, name: Segment, window: str = "1h") -> Response:
    who = _who(request)
    if who is None:
        return _to_login(request)

    def render() -> Response:
        chart_window = _window(window, CHART_WINDOWS)[0]
        return _render(
            request,
            "migration.html",
            who,
            chart_window=chart_window,
            chart_windows=CHART_WINDOWS,
            **_migration(request, name),
        )

    return _guarded(request, who, render)


@router.get("/fragments/migrations/{name}")
def migration_fragment(request: Request, name: Segment) -> Response:
    who = _who(request)
    if who is None:
        return _fragment_error(401, "You are signed out; sign in again to keep this page live.")
    return _guarded_fragment(
        lambda: _render(request, "_migration.html", who, **_migration(request, name))
    )


def mount_static(app: FastAPI) -> None:
    """Serve the dashboard's static files (its script, styles and the chart library)."""
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
