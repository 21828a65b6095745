"""What the proxy is told: upstreams, limits, and the routes file, validated with pydantic.

A routes file maps request templates to migrations::

    migration: api-v2                # routes that name none use this one (default: the CLI's)
    unit: header:X-User-Id           # how a request names its unit (default: none)
    compare:                         # how answers are compared (defaults below)
      headers: [content-type]
      ignore: ["$.body.meta.generated_at"]
    routes:
      - path: /api/v1/users/{id}
        methods: [GET]
      - path: /api/v1/predict
        methods: [POST]
        shadow_unsafe: true          # pure: new may see a copy
      - path: /api/v1/reports/{rest*}
        gone: {sunset: 2027-03-01, link: https://example.com/migrate}

Every mistake is one sentence naming the file, the line and the fix.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from cutover.errors import InvalidInput
from cutover.text import check_name

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
METHODS = frozenset({"GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE", "TRACE"})
UNIT_SOURCES = ("header", "cookie", "query", "jwt", "ip")


@dataclass(frozen=True, slots=True)
class Upstream:
    """One service the proxy forwards to: where it listens and what it is called."""

    scheme: str
    host: str
    port: int
    base_path: str  # prefixed to every forwarded path ("" for none)
    url: str
    # Headers set on every request to this upstream, replacing the client's (an empty value
    # removes the header): each service its own credentials, not the client's.
    headers: tuple[tuple[bytes, bytes], ...] = ()

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        return self.host if self.port == default else f"{self.host}:{self.port}"


def parse_upstream(text: str, what: str) -> Upstream:
    """``http://127.0.0.1:8000`` (a base path is allowed) as an Upstream."""
    parts = urllib.parse.urlsplit(text.strip())
    if parts.scheme != "http" or not parts.hostname:
        raise InvalidInput(
            f"{what} {text!r} is not an http:// URL; give one like http://127.0.0.1:8000"
            " (https upstreams are not supported: terminate TLS in front of them)"
        )
    if parts.query or parts.fragment or parts.username or parts.password:
        raise InvalidInput(f"{what} {text!r} may hold a host, a port and a path, nothing else")
    try:
        port = parts.port or 80
    except ValueError:
        raise InvalidInput(f"{what} {text!r} has a port that is not a number") from None
    return Upstream("http", parts.hostname, port, parts.path.rstrip("/"), text.strip())


def parse_header(text: str, what: str) -> tuple[bytes, bytes]:
    """``Name: value`` as a header pair; ``Name:`` removes the header."""
    name, sep, value = text.partition(":")
    name = name.strip()
    if not sep or not name or not all(c.isalnum() or c in "-_!#$%&'*+.^`|~" for c in name):
        raise InvalidInput(f"{what} {text!r} must be 'Name: value' (or 'Name:' to drop it)")
    try:
        return name.encode("ascii"), value.strip().encode("latin-1")
    except UnicodeEncodeError:
        raise InvalidInput(f"{what} {text!r} holds characters a header cannot carry") from None


def parse_listen(text: str) -> tuple[str, int]:
    """``127.0.0.1:8080`` or ``:8080`` (every address) as (host, port)."""
    host, sep, port = text.strip().rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise InvalidInput(f"--listen {text!r} must be HOST:PORT, e.g. 127.0.0.1:8080")
    return host.strip("[]") or "0.0.0.0", int(port)


@dataclass(frozen=True, slots=True)
class UnitSource:
    """Where a request's unit comes from: ``header:X-User-Id``, ``cookie:session``,
    ``query:user``, ``jwt:sub`` (a claim of the bearer token, read without verifying it: for
    routing only), or ``ip`` (the client's address)."""

    kind: str
    name: str = ""

    def __str__(self) -> str:
        return self.kind if self.kind == "ip" else f"{self.kind}:{self.name}"


def parse_unit(text: str, where: str = "--unit") -> UnitSource:
    kind, _, name = text.strip().partition(":")
    kind = kind.lower()
    if kind == "ip" and not name:
        return UnitSource("ip")
    if kind not in UNIT_SOURCES or not name.strip():
        raise InvalidInput(
            f"{where} {text!r} is not a unit source; give header:NAME, cookie:NAME, query:NAME,"
            " jwt:CLAIM or ip"
        )
    name = name.strip()
    return UnitSource(kind, name.lower() if kind == "header" else name)


class CompareOptions(BaseModel):
    """How two answers are compared: the status always, these response headers, and the body
    (JSON structurally with these options, anything else by its bytes)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    headers: tuple[str, ...] = ("content-type",)
    ignore: tuple[str, ...] = ()  # body paths never compared: $.body.meta.generated_at
    rel: float = Field(0.0, ge=0)
    abs: float = Field(0.0, ge=0)
    unordered: tuple[str, ...] = ()
    rename: Mapping[str, str] = Field(default_factory=dict)

    @field_validator("headers")
    @classmethod
    def _lower(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(name.strip().lower() for name in value)


class Gone(BaseModel):
    """A legacy-only endpoint: once the migration is in ``new``, it answers 410 Gone."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sunset: str | None = None  # the Sunset header: an HTTP date or an ISO date
    link: str | None = None  # where to read about the replacement
    detail: str = "This endpoint was removed with the move to the new service."


class RouteSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str
    methods: tuple[str, ...] = ()  # empty: every method
    migration: str | None = None
    unit: str | None = None
    compare: CompareOptions | None = None
    shadow_unsafe: bool = False
    gone: Gone | None = None

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("a route's path starts with /, e.g. /api/v1/users/{id}")
        return value

    @field_validator("methods")
    @classmethod
    def _methods(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        methods = tuple(m.strip().upper() for m in value)
        unknown = sorted(set(methods) - METHODS)
        if unknown:
            raise ValueError(f"unknown method {unknown[0]!r}; use {', '.join(sorted(METHODS))}")
        return methods


class RoutesFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    migration: str | None = None
    unit: str | None = None
    compare: CompareOptions = Field(default_factory=CompareOptions)
    routes: tuple[RouteSpec, ...] = ()


@dataclass(frozen=True, slots=True)
class Route:
    """One compiled route: which requests it takes, and what the proxy does with them."""

    template: str  # the label telemetry and drifts carry: never a raw path
    methods: frozenset[str]
    pattern: re.Pattern[str]
    migration: str
    unit: UnitSource | None
    compare: CompareOptions
    shadow_unsafe: bool = False
    gone: Gone | None = None

    def matches(self, method: str, path: str) -> bool:
        return (not self.methods or method in self.methods) and bool(self.pattern.match(path))


@dataclass(frozen=True, slots=True)
class Routes:
    """Every route in order, and the catch-all that takes what none of them matches."""

    routes: tuple[Route, ...]
    fallback: Route
    migrations: tuple[str, ...] = field(default=())

    def find(self, method: str, path: str) -> Route:
        for route in self.routes:
            if route.matches(method, path):
                return route
        return self.fallback


_SEGMENT = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(\*?)\}")


def compile_template(template: str) -> re.Pattern[str]:
    """``/users/{id}`` matches one path segment for ``{id}``; ``{rest*}`` matches the rest."""
    out = []
    position = 0
    for match in _SEGMENT.finditer(template):
        out.append(re.escape(template[position : match.start()]))
        out.append(".*" if match.group(2) else "[^/]+")
        position = match.end()
    out.append(re.escape(template[position:]))
    return re.compile("".join(out) + r"\Z")


def build_routes(
    default_migration: str, default_unit: str | None, spec: RoutesFile | None = None
) -> Routes:
    """The routes of ``spec`` (or none), with the defaults the command line gives."""
    spec = spec or RoutesFile()
    migration = spec.migration or default_migration
    check_name(migration)
    unit_text = spec.unit if spec.unit is not None else default_unit
    unit = parse_unit(unit_text, "unit") if unit_text else None
    compiled = []
    for number, route in enumerate(spec.routes, 1):
        where = f"routes[{number}]"
        name = route.migration or migration
        try:
            check_name(name)
        except InvalidInput as error:
            raise InvalidInput(f"{where}: {error}") from None
        compiled.append(
            Route(
                template=f"{' '.join(route.methods) or '*'} {route.path}",
                methods=frozenset(route.methods),
                pattern=compile_template(route.path),
                migration=name,
                unit=parse_unit(route.unit, f"{where}.unit") if route.unit else unit,
                compare=route.compare or spec.compare,
                shadow_unsafe=route.shadow_unsafe,
                gone=route.gone,
            )
        )
    fallback = Route("*", frozenset(), re.compile(".*"), migration, unit, spec.compare)
    names = tuple(dict.fromkeys([migration, *(route.migration for route in compiled)]))
    return Routes(tuple(compiled), fallback, names)


def load_routes(path: str | Path, default_migration: str, default_unit: str | None) -> Routes:
    """Read and compile a routes file; one sentence naming the file and line on a mistake."""
    from cutover._yaml import load_model

    spec = load_model(path, RoutesFile, "the routes file", "docs/proxy.md")
    try:
        return build_routes(default_migration, default_unit, spec)
    except InvalidInput as error:
        raise InvalidInput(f"{path}: {error}") from None
