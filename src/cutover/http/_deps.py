"""What the application and its routers share: settings, the caller, refusals.

The routers (``_api``, ``_dashboard``, ``_ofrep``) and the application that mounts them
(``_app``) both import this module, and it imports neither, so each layer imports only
downward.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from cutover.clock import Clock, configured_clock
from cutover.control.controller import Controller
from cutover.http._auth import Principal, Role, Tokens
from cutover.http._ratelimit import Rate
from cutover.store import DEFAULT_LEASE, Store

COOKIE = "cutover_token"
"""The dashboard keeps the signed-in token in this HttpOnly, SameSite=Strict cookie."""

CSRF_HEADER = "x-cutover-request"
"""A write authenticated by the cookie must carry this header: a form or link on another site
cannot set it, and a script on another site would need CORS, which this server never grants."""

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")
"""The names of this machine that no other site can take, on any port."""


@dataclass
class Settings:
    """How one server runs: its store, who may do what, and where plans come from."""

    store: Store
    tokens: Tokens = field(default_factory=Tokens)
    public_read: bool = False  # read endpoints and the dashboard need no token
    plans_dir: Path | None = None  # plans that `POST /api/v1/rollouts` may start by name
    four_eyes: bool = False  # every approval from someone other than the rollout's starter
    refresh_seconds: float = 5.0  # how often the dashboard polls
    run_controller: bool = False  # also run the rollout controller in this process
    controller_interval: float = 10.0  # its tick interval; also the expected one for health
    controller_lease: float = DEFAULT_LEASE  # how long its leadership lasts without a renewal
    clock: Clock = field(default_factory=configured_clock)
    secure_cookie: bool = False  # mark the dashboard cookie Secure (behind HTTPS)
    # Host headers answered (``host`` or ``host:port``; "*" answers any): a page on another
    # site whose name an attacker points at this server (DNS rebinding) sends its own name.
    allowed_hosts: tuple[str, ...] = LOOPBACK_HOSTS
    # How long a live series keeps its older buckets; its newest, the list and a series with
    # an end are computed again after refresh_seconds.
    read_cache_seconds: float = 300.0
    # OFREP evaluations one token (one address, for callers without a token) may ask for.
    ofrep_rate: Rate | None = None


class ApiError(Exception):
    """An HTTP error with a one-sentence message (and optional details) as its JSON body."""

    def __init__(self, status: int, message: str, **details: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = details


bearer = HTTPBearer(auto_error=False, description="A token `cutover token create` minted.")
api_key = APIKeyHeader(
    name="X-API-Key",
    auto_error=False,
    description="The same token, in the header OFREP clients may send instead of a bearer.",
)

ANONYMOUS = Principal("anonymous", Role.VIEWER)
"""Who reads without a token under ``--public-read``."""


def settings_of(request: Request) -> Settings:
    return request.app.state.settings


def controller_of(request: Request) -> Controller:
    return request.app.state.controller


def identify(
    request: Request, credentials: HTTPAuthorizationCredentials | None, key: str | None = None
) -> Principal:
    """The caller, from a bearer token, an ``X-API-Key`` header or the dashboard's cookie; 401
    without a valid one."""
    settings = settings_of(request)
    token = None
    if credentials is not None and key and key != credentials.credentials:
        raise ApiError(401, "Authorization and X-API-Key hold different tokens; send one of them")
    if credentials is not None:
        token = credentials.credentials
    elif key:
        token = key
    elif COOKIE in request.cookies:
        token = request.cookies[COOKIE]
        if request.method not in SAFE_METHODS and CSRF_HEADER not in request.headers:
            raise ApiError(403, f"a write signed in by cookie must send the {CSRF_HEADER} header")
    if not token:
        raise ApiError(
            401, "this needs a token: send Authorization: Bearer <token> or X-API-Key: <token>"
        )
    principal = settings.tokens.check(token)
    if principal is None:
        raise ApiError(401, "the token is not valid; ask an admin for one (cutover token create)")
    return principal


def requires(role: Role) -> Callable[..., Principal]:
    """A dependency that admits callers with at least ``role``."""

    async def dependency(  # no I/O: runs on the event loop, not on a worker thread
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
        key: Annotated[str | None, Depends(api_key)],
    ) -> Principal:
        settings = settings_of(request)
        if (
            role is Role.VIEWER
            and settings.public_read
            and credentials is None
            and not key
            and COOKIE not in request.cookies
        ):
            return ANONYMOUS
        principal = identify(request, credentials, key)
        if principal.role < role:
            raise ApiError(
                403,
                f"this needs the {role.label} role; the token of {principal.name} has"
                f" {principal.role.label}",
            )
        return principal

    return dependency


Viewer = Annotated[Principal, Depends(requires(Role.VIEWER))]
Operator = Annotated[Principal, Depends(requires(Role.OPERATOR))]
Admin = Annotated[Principal, Depends(requires(Role.ADMIN))]


def error_body(message: str, **details: Any) -> dict[str, Any]:
    return {"error": message, **details}
