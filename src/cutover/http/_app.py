"""The FastAPI application: mounts the routers, guards requests, maps errors, health and metrics."""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from cutover._version import __version__
from cutover.control.controller import CONTROLLER, Controller
from cutover.errors import (
    ConflictError,
    CutoverError,
    InvalidInput,
    NotYet,
    StoreError,
    UnknownMigration,
)
from cutover.http import _api, _dashboard, _ofrep
from cutover.http._deps import (
    LOOPBACK_HOSTS,
    SAFE_METHODS,
    ApiError,
    Settings,
    Viewer,
    error_body,
    settings_of,
)
from cutover.http._names import routable_path
from cutover.http._ratelimit import RateLimiter
from cutover.http._reads import Reads
from cutover.model import Mode
from cutover.runtime import configured
from cutover.store import Store
from cutover.telemetry.prometheus import install_collector

log = logging.getLogger("cutover.http")


MAX_BODY = 256 * 1024

SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),  # a real Origin on our own form posts
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
        b" connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self';"
        b" frame-ancestors 'none'",
    ),
]


def _conflict(request: Request, error: Exception) -> JSONResponse:
    """409 with what is current now. A plain function: Starlette runs it on a worker thread, so
    reading the store never blocks the event loop."""
    assert isinstance(error, ConflictError)
    store = settings_of(request).store
    try:
        state = store.state(error.name)
        rollout = store.rollout(error.name)
    except StoreError:
        return _unavailable()
    return JSONResponse(
        error_body(
            str(error),
            current={
                "state": state.to_dict() if state else None,
                "rollout": rollout.to_dict() if rollout else None,
            },
        ),
        status_code=409,
    )


PATTERN_HINTS = {
    "window": "is not a duration; write it like 30s, 5m, 1h30m or 14d",
    "step": "is not a duration; write it like 1m, 5m or 1h",
}
"""What a parameter that fails its pattern should look like, said to people."""


def _unavailable() -> JSONResponse:
    return JSONResponse(
        error_body("the store is unavailable; try again shortly"),
        status_code=503,
        headers={"Retry-After": "5"},
    )


def _validation(_request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    problems = []
    for item in error.errors():
        where = ".".join(str(part) for part in item.get("loc", ()) if part != "body") or "body"
        message = str(item.get("msg", "invalid")).removeprefix("Value error, ")
        field_name = where.rsplit(".", 1)[-1]
        if item.get("type") == "string_pattern_mismatch" and field_name in PATTERN_HINTS:
            message = f"{item.get('input')!r} {PATTERN_HINTS[field_name]}"
        problems.append(
            {
                "field": field_name if where.startswith(("query.", "path.")) else where,
                "message": message,
            }
        )
    first = problems[0] if problems else {"field": "body", "message": "invalid"}
    return JSONResponse(
        error_body(f"{first['field']}: {first['message']}", fields=problems), status_code=422
    )


def _install_errors(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_request: Request, error: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else None
        return JSONResponse(
            error_body(error.message, **error.details), status_code=error.status, headers=headers
        )

    app.add_exception_handler(RequestValidationError, _validation)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        message = error.detail if isinstance(error.detail, str) else "request refused"
        code = error.status_code
        headers = error.headers
        if code == 404 and message == "Not Found":
            message = "no such endpoint; the API is described at /openapi.json"
        elif code == 405:
            message = "this endpoint does not take that method; see /openapi.json"
            headers = {"Allow": ", ".join(allowed_methods(request))}
        elif code == 400:  # a body FastAPI could not decode at all
            code, message = 422, "body: not valid JSON; send a JSON object encoded as UTF-8"
        return JSONResponse(error_body(message), status_code=code, headers=headers)

    @app.exception_handler(UnknownMigration)
    async def unknown(_request: Request, error: UnknownMigration) -> JSONResponse:
        return JSONResponse(
            error_body(f"no migration named {error.name!r} in the store"), status_code=404
        )

    app.add_exception_handler(ConflictError, _conflict)

    @app.exception_handler(NotYet)
    async def not_yet(_request: Request, error: NotYet) -> JSONResponse:
        return JSONResponse(error_body(str(error), possible_at=error.possible_at), status_code=409)

    @app.exception_handler(InvalidInput)
    async def invalid(_request: Request, error: InvalidInput) -> JSONResponse:
        return JSONResponse(error_body(str(error)), status_code=422)

    @app.exception_handler(StoreError)
    async def store_down(_request: Request, error: StoreError) -> JSONResponse:
        log.warning("cutover server: %s", error)
        return _unavailable()

    @app.exception_handler(CutoverError)
    async def refused(_request: Request, error: CutoverError) -> JSONResponse:
        return JSONResponse(error_body(str(error)), status_code=422)


METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def allowed_methods(request: Request) -> list[str]:
    """Every method some route takes at the request's path, asked of the router itself (routes
    may sit in included routers), so that a 405's Allow header lists them all."""
    routes = request.app.router.routes
    return [
        method
        for method in METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] is Match.FULL for route in routes
        )
    ]


class Guard:
    """Pure ASGI middleware: refuses foreign Host headers and oversized bodies, routes names
    with encoded slashes whole, sets security headers, counts requests. An unexpected error
    becomes a 500 without its traceback (which goes to the log)."""

    def __init__(
        self,
        app: Any,
        requests: Counter,
        latency: Histogram,
        hosts: HostRule,
    ) -> None:
        self.app = app
        self.requests = requests
        self.latency = latency
        self.hosts = hosts

    async def __call__(
        self,
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[MutableMapping[str, Any]]],
        send: Callable[[MutableMapping[str, Any]], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = {"code": 500, "sent": False}
        host = _header(scope, b"host")
        if not self.hosts.allows(host):
            await _send_json(
                send,
                421,
                error_body(
                    f"this server does not answer to the host {host!r}; reach it by a name it"
                    " serves, or start it with --allowed-host for this one"
                ),
            )
            self._count(scope, 421, started)
            return
        scope["path"] = routable_path(scope)
        declared = _content_length(scope)
        if declared is not None and declared > MAX_BODY:
            await _refuse_body(send)
            self._count(scope, 413, started)
            return
        if declared is None and scope.get("method") not in SAFE_METHODS:
            # A body without a declared length is read here, so its size is known before
            # the application sees any of it.
            body = bytearray()
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    return  # the client went away
                body += message.get("body", b"")
                if len(body) > MAX_BODY:
                    await _refuse_body(send)
                    self._count(scope, 413, started)
                    return
                if not message.get("more_body", False):
                    break
            receive = _replay(bytes(body), receive)

        async def guarded(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status.update(code=message["status"], sent=True)
                headers = list(message.get("headers", ()))
                headers.extend(SECURITY_HEADERS)
                if scope["path"].startswith("/api/"):
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, guarded)
        except Exception:
            log.exception("cutover server: %s %s failed", scope.get("method"), scope.get("path"))
            if not status["sent"]:
                await _send_json(send, 500, error_body("internal error; the server log has it"))
                status.update(code=500, sent=True)
        self._count(scope, status["code"], started)

    def _count(self, scope: MutableMapping[str, Any], code: int, started: float) -> None:
        route = scope.get("route")
        path = getattr(route, "path", None) or "unmatched"
        method = scope.get("method", "")
        self.requests.labels(method, path, str(code)).inc()
        self.latency.labels(method, path).observe(time.perf_counter() - started)


def _replay(
    body: bytes, receive: Callable[[], Awaitable[MutableMapping[str, Any]]]
) -> Callable[[], Awaitable[MutableMapping[str, Any]]]:
    """A receive that hands over ``body`` whole, then waits on the client as before."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replayed() -> MutableMapping[str, Any]:
        return pending.pop() if pending else await receive()

    return replayed


def _content_length(scope: MutableMapping[str, Any]) -> int | None:
    value = _header(scope, b"content-length")
    try:
        return None if value is None else int(value)
    except ValueError:
        return None


def _header(scope: MutableMapping[str, Any], wanted: bytes) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == wanted:
            return value.decode("latin-1")
    return None


_HOST = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?::[0-9]{1,5})?\Z")


def default_hosts(host: str, port: int) -> tuple[str, ...]:
    """The Host headers a server listening on ``host:port`` answers unless told otherwise: its
    listen address and this machine's loopback names, with the port (and without it on 80)."""
    listen = f"[{host}]" if ":" in host and not host.startswith("[") else host
    names = tuple(dict.fromkeys((listen.lower(), *LOOPBACK_HOSTS)))
    if port == 0:  # a port the system picks: any
        return names
    return (*(f"{name}:{port}" for name in names), *(names if port == 80 else ()))


class HostRule:
    """Which Host headers a server answers: ``host`` entries on any port, ``host:port`` entries
    on that port only, "*" any host at all. Names compare without case."""

    def __init__(self, allowed: tuple[str, ...]) -> None:
        for entry in allowed:
            if entry != "*" and not _HOST.match(entry):
                raise InvalidInput(
                    f"allowed host {entry!r} is not a host name or address, optionally with"
                    " :port, like example.com, example.com:8080 or [::1]:8080"
                )
        self.any = "*" in allowed
        self.exact = {entry.lower() for entry in allowed if _split_host(entry)[1] is not None}
        self.anyport = {entry.lower() for entry in allowed if _split_host(entry)[1] is None}

    def allows(self, host: str | None) -> bool:
        if self.any:
            return True
        if not host:
            return False
        host = host.strip().lower()
        return host in self.exact or _split_host(host)[0] in self.anyport


def _split_host(text: str) -> tuple[str, str | None]:
    """``("example.com", "8080")`` from ``example.com:8080``; ``[::1]:80`` keeps its brackets."""
    if text.startswith("["):
        end = text.find("]")
        if end != -1:
            rest = text[end + 1 :]
            return text[: end + 1], rest[1:] if rest.startswith(":") else None
    name, colon, port = text.rpartition(":")
    if colon and port.isdigit() and ":" not in name:
        return name, port
    return text, None


async def _refuse_body(send: Callable[[MutableMapping[str, Any]], Awaitable[None]]) -> None:
    await _send_json(
        send, 413, error_body(f"the request body is larger than {MAX_BODY // 1024} KiB")
    )


async def _send_json(
    send: Callable[[MutableMapping[str, Any]], Awaitable[None]], code: int, body: dict[str, Any]
) -> None:
    response = JSONResponse(body, status_code=code)
    await send(
        {
            "type": "http.response.start",
            "status": code,
            "headers": [*response.raw_headers, *SECURITY_HEADERS],
        }
    )
    await send({"type": "http.response.body", "body": response.body})


class StoreCollector(Collector):
    """Each migration's stored state and rollout, read from the store at scrape time."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def collect(self) -> Iterator[Metric]:
        store = self.settings.store
        percent = _gauge("cutover_state_percent", "Share of units new serves", "migration")
        mode = _gauge("cutover_state_mode", "1 for each stored mode", "migration", "mode")
        version = _gauge("cutover_state_version", "Version of the stored state", "migration")
        step = _gauge(
            "cutover_rollout_step", "Step of the rollout (1-based, 0 before the first)", "migration"
        )
        status = _gauge(
            "cutover_rollout_status", "1 for the status of each rollout", "migration", "status"
        )
        lag = _gauge("cutover_controller_lag_seconds", "Seconds since a controller last ticked")
        up = _gauge("cutover_store_up", "1 when the store answered this scrape")
        try:
            states = store.states()
            rollouts = store.rollouts()
            seen, _ = controller_lag(store, self.settings.clock())
        except StoreError:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        for name, state in sorted(states.items()):
            percent.add_metric([name], state.effective_percent)
            version.add_metric([name], state.version)
            for candidate in Mode:
                mode.add_metric([name, candidate.value], float(candidate is state.mode))
        for name, rollout in sorted(rollouts.items()):
            step.add_metric([name], rollout.step + 1)
            status.add_metric([name, rollout.status.value], 1)
        if seen is not None:
            lag.add_metric([], seen)
        yield from (up, percent, mode, version, step, status, lag)


def _gauge(name: str, documentation: str, *labels: str) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, labels=list(labels))


def controller_lag(store: Store, now: float) -> tuple[float | None, float | None]:
    """Seconds since the most recent tick of any controller on ``store`` (None if none ever
    ticked), and the interval that controller said it ticks at (None if it did not say)."""
    latest = None
    for instance in store.instances():
        if instance.info.get("role") != CONTROLLER:
            continue
        at = float(instance.info.get("ticked_at") or instance.last_seen)
        if latest is None or at > latest[0]:
            latest = (at, instance.info.get("interval"))
    if latest is None:
        return None, None
    interval = latest[1]
    return max(0.0, now - latest[0]), None if interval is None else float(interval)


def create_app(settings: Settings) -> FastAPI:
    """The admin API and dashboard over ``settings.store``."""
    hosts = HostRule(settings.allowed_hosts)  # a malformed entry is refused now, not later
    registry = CollectorRegistry(auto_describe=False)
    requests = Counter(
        "cutover_http_requests_total",
        "HTTP requests answered",
        ["method", "route", "status"],
        registry=registry,
    )
    latency = Histogram(
        "cutover_http_request_duration_seconds",
        "Time to answer an HTTP request",
        ["method", "route"],
        registry=registry,
    )
    registry.register(StoreCollector(settings))
    # This process's own telemetry: the exposures its OFREP answers counted, among others.
    install_collector(configured, registry)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        # The in-process controller lives exactly as long as the server: it stops, and
        # delivers its pending notifications, before the process exits.
        stop = threading.Event()
        worker = None
        if settings.run_controller:
            ticking = Controller(
                settings.store,
                clock=settings.clock,
                four_eyes=settings.four_eyes,
                lease=settings.controller_lease,
            )
            worker = threading.Thread(
                target=ticking.run,
                args=(settings.controller_interval, stop),
                name="cutover-controller",
                daemon=True,
            )
            worker.start()
        yield
        stop.set()
        if worker is not None:
            await asyncio.to_thread(worker.join, 15)
        app.state.controller.close()

    app = FastAPI(
        title="cutover",
        version=__version__,
        description="Admin API of cutover: migrations, their states, stats, drifts, decisions"
        " and rollouts. Every action takes a reason and the version it expects, and records a"
        " decision with the caller's identity.",
        lifespan=lifespan,
        # The interactive pages load scripts from a CDN, which the strict CSP and an offline
        # machine both refuse; /openapi.json serves any OpenAPI tool instead.
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.ofrep_limiter = RateLimiter(settings.ofrep_rate) if settings.ofrep_rate else None
    app.state.reads = Reads(settings)
    app.state.controller = Controller(  # for operator actions: it never takes the lease
        settings.store,
        clock=settings.clock,
        four_eyes=settings.four_eyes,
        lease=settings.controller_lease,
    )
    _install_errors(app)
    app.include_router(_api.router)
    app.include_router(_ofrep.router)
    app.include_router(_dashboard.router)
    _dashboard.mount_static(app)

    @app.get("/healthz", tags=["service"], summary="Store reachable, controller lag")
    def healthz() -> JSONResponse:
        now = settings.clock()
        try:
            rollouts = settings.store.rollouts()
            lag, interval = controller_lag(settings.store, now)
        except StoreError:
            return JSONResponse(
                {"status": "down", "store": "unreachable", "controller_lag_seconds": None},
                status_code=503,
            )
        active = any(rollout.status.active for rollout in rollouts.values())
        # Three of the ticking controller's own intervals (else this server's --interval).
        late = max(60.0, 3 * (interval or settings.controller_interval))
        status = "ok"
        if active and (lag is None or lag > late):
            status = "degraded"  # rollouts wait on a controller that is not ticking
        return JSONResponse(
            {
                "status": status,
                "store": "reachable",
                "controller_lag_seconds": lag,
                "active_rollouts": sum(r.status.active for r in rollouts.values()),
            }
        )

    @app.get(
        "/metrics",
        tags=["service"],
        summary="Prometheus metrics",
        response_class=PlainTextResponse,
        responses={
            200: {"content": {"text/plain": {"schema": {"type": "string"}}}},
            401: {"description": "No valid token (unless --public-read)"},
            403: {"description": "The token's role is too weak"},
        },
    )
    def metrics(_who: Viewer) -> Response:
        return Response(generate_latest(registry), media_type="text/plain; version=0.0.4")

    app.add_middleware(Guard, requests=requests, latency=latency, hosts=hosts)
    return app
