"""The proxy's event loop side: client connections, and one exchange per request.

A request is routed as an in-process call is: the route's migration gives the stored state,
the unit gives the sticky bucket (the one routing rule, with pins), ``sample`` decides whether
the other arm gets a copy. The serving arm's answer streams to the client as it arrives; a
copy for the other arm (a shadow) runs beside it, never waited for, bounded, with a timeout;
once both answers are in, they are compared and counted like any migration's.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import json
import logging
import random
import socket
import threading
import time
import urllib.parse
from dataclasses import dataclass
from http.cookies import CookieError, SimpleCookie
from typing import Any

import httptools

from cutover import runtime as rt
from cutover.compare import Diff, Difference
from cutover.compare._noise import NoiseModel, declared_noise
from cutover.errors import InvalidInput
from cutover.migration import ReportedMigration
from cutover.model import Arm, Mode, Observation
from cutover.proxy._compare import Answer, AnswerComparator, Capture
from cutover.proxy._config import SAFE_METHODS, Route, Routes, UnitSource, Upstream
from cutover.proxy._http import (
    LAST_CHUNK,
    RESERVED_PREFIX,
    SECRET_HEADERS,
    SHADOW_HEADER,
    Headers,
    chunk,
    date_value,
    end_to_end,
    forwarded,
    header,
    problem,
    request_head,
    response_head,
)
from cutover.proxy._record import Recorder, answer_entry, failure_entry, request_entry
from cutover.proxy._upstream import Connection, Pool, UpstreamError
from cutover.routing import LEGACY_ONLY, NEW_ONLY
from cutover.store import RouteWindow
from cutover.telemetry.histogram import Histogram, index_of
from cutover.telemetry.windows import DROPPED, ERRORS, FALLBACKS, GONE, OFFPATH, TIMEOUTS

log = logging.getLogger("cutover.proxy")

_now = time.perf_counter_ns


@dataclass(frozen=True, slots=True)
class Limits:
    """What the proxy accepts and how long it waits."""

    timeout: float = 30.0  # seconds for new to start answering (legacy gets legacy_timeout)
    legacy_timeout: float = 60.0
    shadow_timeout: float = 10.0
    connect_timeout: float = 5.0
    max_shadows: int = 256  # shadow copies in flight per process; more are dropped, counted
    compare_bytes: int = 1 << 20  # of each body, compared in full; the rest by digest
    replay_bytes: int = 1 << 20  # request body kept for a shadow copy or a fallback
    max_header_bytes: int = 64 << 10
    max_body_bytes: int = 1 << 30
    compare_inline_bytes: int = 64 << 10  # larger comparisons go to the off-path pool
    coalesce_bytes: int = 64 << 10  # an answer's head and body up to this go in one write
    noise_relative: float = 0.20  # raw differences must exceed noise by this share of them
    noise_absolute: float = 0.0003  # ... and by this share of the route's requests


class HttpMigration(ReportedMigration):
    """A migration served by the proxy: its arms are the two upstreams."""

    def __new__(cls, name: str) -> HttpMigration:
        return object.__new__(cls)

    def __init__(self, name: str) -> None:
        super().__init__(name, _upstream_arm, _upstream_arm, default=Mode.LEGACY)


def _upstream_arm(*_: Any, **__: Any) -> Any:
    raise InvalidInput("this migration's arms are HTTP services behind `cutover proxy`")


class Proxy:
    """What one worker process shares: upstreams, routes, migrations, limits and counters."""

    def __init__(
        self,
        legacy: Upstream,
        new: Upstream,
        routes: Routes,
        limits: Limits | None = None,
        secondary: Upstream | None = None,
    ) -> None:
        self.limits = limits or Limits()
        self.upstreams = {Arm.LEGACY: legacy, Arm.NEW: new}
        self.pools = {
            Arm.LEGACY: Pool(legacy, self.limits.connect_timeout),
            Arm.NEW: Pool(new, self.limits.connect_timeout),
        }
        # A second legacy instance: copies there teach which fields differ between two
        # legacy answers to one request (noise, not drift).
        self.secondary = None if secondary is None else Pool(secondary, self.limits.connect_timeout)
        self.noise: dict[str, NoiseModel] = {}
        self.recorder: Recorder | None = None  # --record DIR
        self.routes_tally = RouteTally()
        # One sync with the store at a time: the last, at shutdown, may start while a
        # cancelled periodic one is still writing, and an older count written last would win.
        self.syncing = threading.Lock()
        self.rules: dict[str, tuple[str, ...]] = {}  # declared noise prefixes per migration
        self.migrations: dict[str, HttpMigration] = {}
        self.comparators: dict[int, AnswerComparator] = {}
        self.routes = routes
        self.use(routes)
        self.clients: set[Client] = set()
        self.shadows = 0
        self.draining = False
        self.requests = 0
        self.without_unit = 0
        self.gone = 0

    def use(self, routes: Routes) -> None:
        """Serve by ``routes`` from the next request on (a reload)."""
        for name in routes.migrations:
            if name not in self.migrations:
                self.migrations[name] = HttpMigration(name)
        self.comparators = {
            id(route.compare): AnswerComparator(route.compare)
            for route in (*routes.routes, routes.fallback)
        }
        self.routes = routes

    def noise_model(self, migration: str) -> NoiseModel:
        model = self.noise.get(migration)
        if model is None:
            limits = self.limits
            model = self.noise[migration] = NoiseModel(limits.noise_relative, limits.noise_absolute)
        return model

    def comparator(self, route: Route) -> AnswerComparator:
        found = self.comparators.get(id(route.compare))
        if found is None:
            found = self.comparators[id(route.compare)] = AnswerComparator(route.compare)
        return found

    def state_of(self, name: str) -> dict[str, Any]:
        migration = self.migrations[name]
        route = migration.route
        return {
            "mode": route.mode.value,
            "percent": route.effective_percent,
            "sample": route.sample,
            "version": route.state.version,
            "forced": route.override.value if route.override else None,
            "noise": list(self.rules.get(name, ())),
        }


_RouteKey = tuple[str, str, Arm, int]
"""A route's window: its migration, route, arm and start."""


class RouteTally:
    """This process's counts per migration, route, arm and window: `stats --by route` reads
    them from the store, where they are written whole while their window lasts."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._windows: dict[_RouteKey, list[Any]] = {}
        self._touched: set[_RouteKey] = set()

    def count(
        self, migration: str, route: str, arm: Arm, elapsed: int, counters: tuple[int, ...]
    ) -> None:
        start = rt.current().window_start(rt.current().clock())
        key = (migration, route, arm, start)
        with self._lock:
            found = self._windows.get(key)
            if found is None:
                found = self._windows[key] = [0, 0, 0, 0, 0, Histogram()]
            found[0] += 1
            for counter in counters:
                position = _TALLIED.get(counter)
                if position is not None:
                    found[position] += 1
            found[5].add(index_of(elapsed))
            self._touched.add(key)

    def take(self) -> tuple[dict[str, list[RouteWindow]], dict[_RouteKey, int]]:
        """The windows counted into since they were last settled, per migration, and the
        calls each held, to :meth:`settle` once written."""
        out: dict[str, list[RouteWindow]] = {}
        taken: dict[_RouteKey, int] = {}
        with self._lock:
            for key in self._touched:
                migration, route, arm, start = key
                calls, errors, timeouts, fallbacks, offpath, histogram = self._windows[key]
                row = RouteWindow(
                    route, arm, start, calls, errors, timeouts, fallbacks, offpath,
                    Histogram(histogram.items()),
                )  # fmt: skip
                out.setdefault(migration, []).append(row)
                taken[key] = calls
        return out, taken

    def settle(self, taken: dict[_RouteKey, int]) -> None:
        """The windows ``taken`` are written: forget those not counted into since (a call
        counted while they were being written keeps its window to write again), and forget
        windows that are no longer current (their counts are final and written)."""
        current = rt.current().window_start(rt.current().clock())
        with self._lock:
            for key, calls in taken.items():
                if self._windows[key][0] == calls:
                    self._touched.discard(key)
            for key in [k for k in self._windows if k[3] < current and k not in self._touched]:
                del self._windows[key]


_TALLIED = {ERRORS: 1, TIMEOUTS: 2, FALLBACKS: 3, OFFPATH: 4}


class Request:
    """A client's request as parsed: method, target, headers, and its body as it arrives."""

    __slots__ = (
        "_path",
        "body",
        "body_bytes",
        "chunked",
        "complete",
        "header_bytes",
        "headers",
        "keep_alive",
        "kept",
        "length",
        "method",
        "target",
        "upgrade",
        "version",
    )

    def __init__(self) -> None:
        self.method = b""
        self.target = b""
        self.headers: Headers = []
        self.version = "1.1"
        self.keep_alive = True
        self.upgrade = False
        self.header_bytes = 0
        self.body: list[bytes] = []  # kept for a shadow copy or a fallback, up to replay_bytes
        self.body_bytes = 0
        self.kept = True  # every byte of the body is in ``body``
        self.complete = False
        self.chunked = False
        self.length: bytes | None = None
        self._path: str | None = None

    @property
    def path(self) -> str:
        path = self._path
        if path is None:  # asked for by routing, the unit and the comparison: decoded once
            raw = self.target.split(b"?", 1)[0]
            path = self._path = urllib.parse.unquote(raw.decode("latin-1"))
        return path

    def framing(self) -> Headers:
        """How the body is framed upstream: the client's length, else chunks, else none."""
        if self.length is not None:
            return [(b"Content-Length", self.length)]
        if self.chunked:
            return [(b"Transfer-Encoding", b"chunked")]
        return []

    def encode(self, data: bytes) -> bytes:
        return chunk(data) if self.chunked else data

    def ending(self) -> bytes:
        return LAST_CHUNK if self.chunked else b""


class Client(asyncio.Protocol):
    """One client connection: requests are parsed and answered in order, one at a time."""

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self.parser = httptools.HttpRequestParser(self)
        self.request: Request | None = None  # the one being parsed
        self.exchanges: collections.deque[Exchange] = collections.deque()  # the first answers
        self.closing = False
        self.tunnel: Connection | None = None  # an upgraded connection's upstream
        self.upgrading = False  # an upgrade was asked for: bytes wait for the upstream's 101
        self.writing_paused = False

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if isinstance(peer, tuple) else "unix"
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.proxy.clients.add(self)

    def data_received(self, data: bytes) -> None:
        if self.tunnel is not None:
            self.tunnel.write(data)
            return
        if self.upgrading:
            if self.exchanges:
                self.exchanges[-1].tunneled += data
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            self.upgrading = True
            offset = upgrade.args[0] if upgrade.args else len(data)
            if self.exchanges:
                self.exchanges[-1].tunneled += data[offset:]
        except httptools.HttpParserError as error:
            refused = error.__context__  # raised by one of our callbacks, and wrapped
            if isinstance(refused, _Refused):
                self.refuse(refused.status, refused.title, refused.detail)
            elif not self.closing:
                self.refuse(400, "Bad Request", f"the request is not valid HTTP/1.1 ({error})")

    def eof_received(self) -> bool | None:
        if self.exchanges:
            return True  # half-closed: answer what was asked, then close
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.proxy.clients.discard(self)
        for exchange in list(self.exchanges):
            exchange.client_gone()
        self.exchanges.clear()
        if self.tunnel is not None:
            self.tunnel.close()

    def pause_writing(self) -> None:
        self.writing_paused = True
        if self.exchanges:
            self.exchanges[0].client_writable(False)

    def resume_writing(self) -> None:
        self.writing_paused = False
        if self.exchanges:
            self.exchanges[0].client_writable(True)

    # -- httptools callbacks ---------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.request = Request()

    def on_url(self, url: bytes) -> None:
        request = self.request
        assert request is not None
        request.target += url
        request.header_bytes += len(url)
        if request.header_bytes > self.proxy.limits.max_header_bytes:
            raise _Refused(414 if not request.headers else 431, "Request Header Fields Too Large")

    def on_header(self, name: bytes, value: bytes) -> None:
        request = self.request
        assert request is not None
        request.headers.append((name, value))
        request.header_bytes += len(name) + len(value) + 4
        if request.header_bytes > self.proxy.limits.max_header_bytes:
            raise _Refused(431, "Request Header Fields Too Large")

    def on_headers_complete(self) -> None:
        request = self.request
        assert request is not None
        parser = self.parser
        request.method = parser.get_method()
        request.version = parser.get_http_version()
        request.keep_alive = parser.should_keep_alive()
        request.upgrade = parser.should_upgrade()
        lengths = [v for n, v in request.headers if n.lower() == b"content-length"]
        codings = [v for n, v in request.headers if n.lower() == b"transfer-encoding"]
        if codings and lengths:
            raise _Refused(400, "Bad Request", "both Content-Length and Transfer-Encoding")
        if len(set(lengths)) > 1:
            raise _Refused(400, "Bad Request", "Content-Length given with different values")
        if lengths:
            request.length = lengths[0].strip()
            if int(request.length) > self.proxy.limits.max_body_bytes:
                raise _Refused(413, "Content Too Large")
        request.chunked = bool(codings)
        expect = header(request.headers, b"expect")
        if expect is not None and expect.strip().lower() == b"100-continue":
            self.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # the body may come: it is streamed
        exchange = Exchange(self, request)
        self.exchanges.append(exchange)
        if len(self.exchanges) == 1:
            exchange.start()
        elif self.transport is not None:
            self.transport.pause_reading()  # pipelined: one waits, the rest stay unread

    def on_body(self, data: bytes) -> None:
        request = self.request
        assert request is not None
        request.body_bytes += len(data)
        if request.body_bytes > self.proxy.limits.max_body_bytes:
            raise _Refused(413, "Content Too Large")
        self.exchanges[-1].request_body(data)

    def on_message_complete(self) -> None:
        request = self.request
        assert request is not None
        request.complete = True
        self.exchanges[-1].request_done()
        self.request = None

    # -- answering ---------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.closing:
            self.transport.write(data)

    def finished(self, exchange: Exchange, keep_alive: bool) -> None:
        """``exchange`` has answered in full: start the next, or close."""
        if self.exchanges and self.exchanges[0] is exchange:
            self.exchanges.popleft()
        if not keep_alive or self.proxy.draining:
            self.close()
            return
        if self.exchanges:
            self.exchanges[0].start()
        if self.transport is not None and not self.closing and len(self.exchanges) <= 1:
            self.transport.resume_reading()

    def refuse(self, status: int, title: str, detail: str = "") -> None:
        """Answer a malformed request with ``status`` and close the connection."""
        if not self.closing:
            self.write(problem(status, title, detail or title.lower(), close=True))
        self.close()

    def close(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.close()


class _Refused(Exception):
    def __init__(self, status: int, title: str, detail: str = "") -> None:
        super().__init__(title)
        self.status, self.title, self.detail = status, title, detail or title.lower()


class Exchange:
    """One request: routed, forwarded to the serving arm, answered as it streams back, and
    compared with the other arm's answer when it was sampled."""

    def __init__(self, client: Client, request: Request) -> None:
        self.client = client
        self.proxy = client.proxy
        self.request = request
        self.route: Route = self.proxy.routes.find(request.method.decode(), request.path)
        self.migration = self.proxy.migrations[self.route.migration]
        self.arm = Arm.LEGACY
        self.unit: str | None = None
        self.connection: Connection | None = None
        self.started = 0
        self.answered = False  # the head went to the client
        self.chunked_reply = False
        self.close_after = not request.keep_alive
        self.status = 0  # of the serving answer
        self.answer: Answer | None = None  # the serving answer, captured when compared
        self.shadow: Shadow | None = None
        recorder = self.proxy.recorder
        self.recording = recorder is not None and random.random() < recorder.share
        # New's failure (an exception, or the 5xx answer it gave) once legacy answers instead.
        self.fallback_from: tuple[Answer | UpstreamError, int] | None = None
        self.fallen_back = False
        self.finished = False
        self.discarding = False  # new's 5xx body, read and dropped before legacy answers
        self.tunneled = b""  # bytes the client sent after its upgrade request
        # The answer's head and first body bytes, held until the upstream's bytes at hand are
        # parsed, then written in one go: one write (one system call, one TCP segment) for a
        # small answer instead of three.
        self.pending: list[bytes] | None = None
        self.pending_bytes = 0
        self.client_has_bytes = False  # the first bytes of the answer went to the client
        self.upstream_headers: Headers | None = None  # what every arm gets, built once
        if request.upgrade:
            self.close_after = True  # refused or not, the connection cannot go back to HTTP

    # -- routing ---------------------------------------------------------------------------

    def start(self) -> None:
        proxy, request, route = self.proxy, self.request, self.route
        proxy.requests += 1
        self.started = _now()
        if request.path.startswith(RESERVED_PREFIX):
            self.own_endpoint()
            return
        compiled = self.migration.route
        method = request.method.decode()
        if route.gone is not None and compiled.mode is Mode.NEW:
            self.answer_gone()
            return
        kind = compiled.kind
        if kind == LEGACY_ONLY:
            self.arm = Arm.LEGACY
        elif kind == NEW_ONLY:
            self.arm = Arm.NEW
        else:
            unit = self.unit = self.extract_unit(route.unit)
            if unit is None and route.unit is not None:
                proxy.without_unit += 1  # nothing to stick to: legacy serves it, counted
                self.arm = Arm.LEGACY
            else:
                self.arm = Arm.NEW if self.migration._serves_new(compiled, unit) else Arm.LEGACY
            share = compiled.sample
            copyable = method in SAFE_METHODS or route.shadow_unsafe
            if (
                copyable
                and not request.upgrade
                and share
                and (share >= 1.0 or random.random() < share)
            ):
                self.shadow = Shadow(self, self.arm.other)
        if self.shadow is not None or self.recording:
            self.answer = Answer(limit=proxy.limits.compare_bytes)
        self.forward(self.arm)

    def extract_unit(self, source: UnitSource | None) -> str | None:
        """The request's unit, or None when the source names nothing in it."""
        if source is None:
            return None
        request = self.request
        kind = source.kind
        if kind == "header":
            value = header(request.headers, source.name.encode("latin-1"))
            return value.decode("latin-1").strip() or None if value is not None else None
        if kind == "ip":
            return self.client.peer or None
        if kind == "query":
            query = request.target.partition(b"?")[2].decode("latin-1")
            values = urllib.parse.parse_qs(query).get(source.name)
            return values[0] if values else None
        if kind == "cookie":
            raw = header(request.headers, b"cookie")
            if raw is None:
                return None
            try:
                jar = SimpleCookie(raw.decode("latin-1"))
            except CookieError:
                return None
            morsel = jar.get(source.name)
            return morsel.value or None if morsel is not None else None
        return _jwt_claim(header(request.headers, b"authorization"), source.name)

    # -- forwarding --------------------------------------------------------------------------

    def forward(self, arm: Arm) -> None:
        self.arm = arm
        self.proxy.pools[arm].acquire(self.connected)

    def head_for(
        self, arm: Arm, *, shadow: bool = False, upstream: Upstream | None = None
    ) -> bytes:
        request = self.request
        upstream = upstream or self.proxy.upstreams[arm]
        headers = self.upstream_headers
        if headers is None:  # the same for both arms (and the second legacy): built once
            headers = end_to_end(request.headers, b"host", b"content-length", b"expect")
            if request.upgrade:
                headers += [
                    (b"Connection", b"upgrade"),
                    (b"Upgrade", header(request.headers, b"upgrade") or b""),
                ]
            host = header(request.headers, b"host")
            headers = self.upstream_headers = forwarded(headers, self.client.peer, host, b"http")
        if upstream.headers:
            replaced = {name.lower() for name, _ in upstream.headers}
            headers = [h for h in headers if h[0].lower() not in replaced]
            headers += [(name, value) for name, value in upstream.headers if value]
        headers = headers + request.framing()
        if shadow:
            headers.append((SHADOW_HEADER, b"1"))
        target = request.target
        if upstream.base_path:
            target = upstream.base_path.encode() + target
        return request_head(request.method, target, upstream.host_header.encode(), headers)

    def connected(self, connection: Connection | None, error: UpstreamError | None) -> None:
        if self.finished:
            if connection is not None:
                self.proxy.pools[self.arm].release(connection)
            return
        if connection is None:
            assert error is not None
            self.failed(error)
            return
        self.connection = connection
        request = self.request
        connection.send(
            self,
            self.head_for(self.arm),
            head_only=request.method == b"HEAD",
            timeout=self.proxy.limits.timeout
            if self.arm is Arm.NEW
            else self.proxy.limits.legacy_timeout,
        )
        for piece in request.body:  # what arrived before the connection did
            connection.write(request.encode(piece))
        if not request.kept:
            request.body = []  # streamed from here on; never replayed
            if self.client.transport is not None and not self.client.closing:
                self.client.transport.resume_reading()
        if request.complete:
            connection.write(request.ending())

    def request_body(self, data: bytes) -> None:
        request = self.request
        if request.kept and request.body_bytes > self.proxy.limits.replay_bytes:
            request.kept = False  # too big to copy or to replay: streamed only
            if self.shadow is not None:
                self.shadow.drop()
        if self.connection is not None:
            self.connection.write(request.encode(data))
            if request.kept:
                request.body.append(data)
            return
        request.body.append(data)  # written once connected
        if not request.kept and self.client.transport is not None:
            self.client.transport.pause_reading()  # hold no more until the upstream takes it

    def request_done(self) -> None:
        if self.connection is not None:
            self.connection.write(self.request.ending())
        if self.shadow is not None and self.client_has_bytes:
            self.shadow.start()

    def first_bytes_sent(self) -> None:
        """The client has the first bytes of its answer: only now does the copy go out, once
        the request is whole. Sending it earlier puts the copy's work (connecting, writing,
        reading new's answer) on this event loop exactly while legacy's answer is due, and the
        client's latency pays for it (p99 twice legacy mode's at a fixed rate, with new slower
        than legacy); sent now, it costs the client nothing."""
        self.client_has_bytes = True
        if self.shadow is not None and self.request.complete:
            self.shadow.start()

    def writable(self, ready: bool) -> None:
        """The serving upstream can (not) take more of the request body: follow it."""
        transport = self.client.transport
        if transport is not None and not self.client.closing:
            (transport.resume_reading if ready else transport.pause_reading)()

    def client_writable(self, ready: bool) -> None:
        if self.connection is not None:
            (self.connection.resume_reading if ready else self.connection.pause_reading)()

    # -- the serving answer (Receiver) -------------------------------------------------------

    def head(self, status: int, reason: bytes, headers: Headers, keep_alive: bool) -> None:
        if status >= 500 and self.can_fall_back():
            answer = Answer(status=status, headers=headers, limit=self.proxy.limits.compare_bytes)
            self.fallback_from = (answer, _now() - self.started)
            self.discarding = True
            return
        self.status = status
        if self.answer is not None:
            self.answer.status = status
            self.answer.headers = headers
        out = end_to_end(headers, b"date") if status != 101 else end_to_end(headers)
        out.append((b"Date", date_value()))
        request = self.request
        no_body = request.method == b"HEAD" or status in (204, 304) or 100 <= status < 200
        if status == 101:
            out += [(b"Connection", b"upgrade"), (b"Upgrade", header(headers, b"upgrade") or b"")]
        elif not no_body and header(headers, b"content-length") is None:
            if request.version == "1.1":
                out.append((b"Transfer-Encoding", b"chunked"))
                self.chunked_reply = True
            else:
                self.close_after = True  # an HTTP/1.0 client reads to the end
        if not keep_alive or self.close_after or self.proxy.draining:
            self.close_after = True
            out.append((b"Connection", b"close"))
        self.answered = True
        head = response_head(status, reason, out)
        if status == 101:
            self.client.write(head)
            self.start_tunnel()
            return
        self.pending = [head]
        self.pending_bytes = len(head)

    def body(self, data: bytes) -> None:
        if self.discarding:
            failed = self.fallback_from[0] if self.fallback_from else None
            if isinstance(failed, Answer):
                failed.add(data)
            return
        if self.answer is not None:
            self.answer.add(data)
        piece = chunk(data) if self.chunked_reply else data
        pending = self.pending
        if pending is None:
            self.client.write(piece)
            return
        pending.append(piece)
        self.pending_bytes += len(piece)
        if self.pending_bytes >= self.proxy.limits.coalesce_bytes:
            self.flush()

    def flush(self) -> None:
        """Write what is held for the client: the upstream's bytes at hand are all parsed, or
        enough are held to be worth a write of their own."""
        pending = self.pending
        if pending is None:
            return
        self.pending = None
        self.client.write(pending[0] if len(pending) == 1 else b"".join(pending))
        if not self.client_has_bytes:
            self.first_bytes_sent()

    def done(self) -> None:
        self.connection = None
        if self.discarding:
            self.discarding = False
            self.fall_back()
            return
        if self.chunked_reply:
            if self.pending is not None:
                self.pending.append(LAST_CHUNK)
            else:
                self.client.write(LAST_CHUNK)
        self.flush()
        self.count_served(None)
        self.finish()

    def failed(self, error: UpstreamError) -> None:
        self.connection = None
        if self.finished:
            return
        if self.discarding:  # new's 5xx broke off while it was being discarded: fall back
            self.discarding = False
            self.fall_back()
            return
        if self.answered:
            # Mid-answer: the client has part of a response and no way to be told; close.
            self.flush()
            log.warning("cutover proxy: %s broke off an answer: %s", self.arm.value, error)
            self.count_served(error)
            self.close_after = True
            self.finish()
            return
        if self.can_fall_back(error):
            self.fallback_from = (error, _now() - self.started)
            self.fall_back()
            return
        self.count_served(error)
        status = 504 if error.timeout else 502
        title = "Gateway Timeout" if error.timeout else "Bad Gateway"
        self.client.write(
            problem(status, title, f"{self.arm.value}: {error}", fields={"arm": self.arm.value})
        )
        self.answered = True
        self.first_bytes_sent()
        self.finish()

    def can_fall_back(self, error: UpstreamError | None = None) -> bool:
        """Whether legacy may answer instead of new: in canary with fallback on, for new only,
        once; a request with a body only while it is held whole; and for an unsafe method only
        when the request provably never reached new."""
        if self.arm is not Arm.NEW or self.fallen_back or not self.migration.route.fallback:
            return False
        request = self.request
        if not request.kept or request.upgrade:
            return False
        if request.method.decode() in SAFE_METHODS:
            return True
        return error is not None and not error.sent

    def fall_back(self) -> None:
        """New failed before answering: count it, and let legacy answer the request."""
        assert self.fallback_from is not None
        failed, elapsed = self.fallback_from
        timed_out = isinstance(failed, UpstreamError) and failed.timeout
        self.count(Arm.NEW, elapsed, TIMEOUTS if timed_out else ERRORS, FALLBACKS)
        reason = f"status {failed.status}" if isinstance(failed, Answer) else str(failed)
        self.migration.emit({"event": "fallback", "unit": self.unit, "reason": reason})
        self.fallen_back = True
        if self.shadow is not None:
            # The copy to legacy is no longer needed: legacy now serves, and the comparison is
            # between new's failure and legacy's answer.
            self.shadow.cancel()
            self.shadow = None
            self.answer = Answer(limit=self.proxy.limits.compare_bytes)
        else:
            self.answer = None
        self.started = _now()
        self.forward(Arm.LEGACY)

    def count_served(self, error: UpstreamError | None) -> None:
        """Count the serving arm's run; compare it when the request was sampled."""
        elapsed = _now() - self.started
        counters: tuple[int, ...] = ()
        if error is not None:
            counters = (TIMEOUTS,) if error.timeout else (ERRORS,)
        elif self.status >= 500:
            counters = (ERRORS,)
        self.count(self.arm, elapsed, *counters)
        mine: Answer | UpstreamError | None = self.answer if error is None else error
        if self.recording and self.shadow is None and not self.fallen_back:
            self.record({self.arm: (mine, elapsed)})
        if self.shadow is not None:
            self.shadow.served(mine, elapsed)
        elif self.fallen_back and self.fallback_from is not None and self.answer is not None:
            # A sampled request that fell back: new's failure against legacy's answer, so an
            # arm never passes a parity check by failing.
            failed, new_ns = self.fallback_from
            judge(
                self,
                Arm.LEGACY,
                _observe(Arm.LEGACY, mine, elapsed),
                _observe(Arm.NEW, failed, new_ns),
            )

    def count(self, arm: Arm, elapsed: int, *counters: int) -> None:
        """Count a run of ``arm`` for the migration, and for this route."""
        self.migration.count(arm, elapsed, *counters)
        self.proxy.routes_tally.count(
            self.migration.name, self.route.template, arm, elapsed, counters
        )

    def record(self, outcomes: dict[Arm, tuple[Any, int]]) -> None:
        """Queue this exchange for the recording: the request and each arm's outcome."""
        recorder = self.proxy.recorder
        if recorder is None:
            return
        request = self.request
        entry: dict[str, Any] = {
            "at": time.time(),
            "migration": self.migration.name,
            "route": self.route.template,
            "unit": self.unit,
            "served_by": Arm.LEGACY.value if self.fallen_back else self.arm.value,
            "request": request_entry(
                request.method, request.target, request.headers, request.body, request.kept
            ),
        }
        for arm in Arm:
            outcome, elapsed = outcomes.get(arm, (None, 0))
            if isinstance(outcome, BaseException):
                entry[arm.value] = failure_entry(outcome, elapsed)
            else:
                entry[arm.value] = answer_entry(outcome, elapsed)
        recorder.add(entry)

    def finish(self) -> None:
        self.finished = True
        self.client.finished(self, not self.close_after)

    def client_gone(self) -> None:
        self.finished = True
        self.pending = None
        if self.shadow is not None and not self.client_has_bytes:
            self.shadow.drop()  # never sent: its client left before its answer began
        if self.connection is not None:
            self.connection.abandon()
            self.connection = None

    # -- the proxy's own answers -------------------------------------------------------------

    def answer_gone(self) -> None:
        gone = self.route.gone
        assert gone is not None
        self.proxy.gone += 1
        extra = [(b"Deprecation", b"true")]
        if gone.sunset:
            extra.append((b"Sunset", _sunset(gone.sunset).encode("latin-1")))
        if gone.link:
            extra.append((b"Link", f'<{gone.link}>; rel="sunset"'.encode("latin-1")))
        self.count(Arm.LEGACY, _now() - self.started)  # a call on a legacy endpoint
        self.migration.bump(Arm.LEGACY, GONE)  # ... that legacy never saw: gone_calls
        self.client.write(
            problem(410, "Gone", gone.detail, extra=extra, fields={"route": self.route.template})
        )
        self.answered = True
        self.finish()

    def own_endpoint(self) -> None:
        from cutover.proxy._endpoints import answer

        status, content_type, body = answer(self.proxy, self.request)
        headers = [
            (b"Content-Type", content_type),
            (b"Content-Length", str(len(body)).encode()),
            (b"Cache-Control", b"no-store"),
        ]
        if self.close_after:
            headers.append((b"Connection", b"close"))
        self.client.write(response_head(status, b"", headers) + body)
        self.answered = True
        self.finish()

    # -- upgrades --------------------------------------------------------------------------

    def start_tunnel(self) -> None:
        """A 101 answer: from here the two sockets are piped to each other, unparsed."""
        connection, client = self.connection, self.client
        if connection is None:
            return
        self.connection = None
        connection.receiver = _Pipe(client)
        client.tunnel = connection
        if self.tunneled:
            connection.write(self.tunneled)
        client.upgrading = False
        self.tunneled = b""
        self.count_served(None)
        self.finished = True
        if client.exchanges and client.exchanges[0] is self:
            client.exchanges.popleft()


class _Pipe:
    """Receives an upgraded upstream's raw bytes for the client (a WebSocket, say)."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def head(self, status: int, reason: bytes, headers: Headers, keep_alive: bool) -> None:
        return None

    def body(self, data: bytes) -> None:
        self.client.write(data)

    def done(self) -> None:
        self.client.close()

    def failed(self, error: UpstreamError) -> None:
        self.client.close()

    def writable(self, ready: bool) -> None:
        return None

    def flush(self) -> None:
        return None


class Shadow(Capture):
    """A copy of the request for the arm that does not serve: started once the request is
    whole, never waited for by the client, dropped when too many are in flight, abandoned at
    its timeout, counted as an off-path run of its arm, and compared once the serving answer
    is in too. With a second legacy instance, a copy goes there as well (``secondary``): its
    answer is not counted, only compared with legacy's to learn which fields are noise."""

    def __init__(self, exchange: Exchange, arm: Arm, parent: Shadow | None = None) -> None:
        self.exchange = exchange
        self.arm = arm
        self.parent = parent  # set on the copy to the second legacy instance
        proxy = exchange.proxy
        self.pool = proxy.pools[arm] if parent is None else proxy.secondary
        self.answer = Answer(limit=proxy.limits.compare_bytes)
        self.connection: Connection | None = None
        self.started = 0
        self.outcome: tuple[Answer | UpstreamError, int] | None = None
        self.serving: tuple[Answer | UpstreamError | None, int] | None = None
        self.secondary: Shadow | None = None
        if parent is None and proxy.secondary is not None:
            self.secondary = Shadow(exchange, Arm.LEGACY, self)
        self.dropped = False
        self.cancelled = False
        self.running = False
        self.judged = False

    def start(self) -> None:
        proxy = self.exchange.proxy
        if self.dropped or self.cancelled or self.started or self.pool is None:
            return
        if proxy.shadows >= proxy.limits.max_shadows or not self.exchange.request.kept:
            self.drop()
            return
        proxy.shadows += 1
        self.running = True
        self.started = _now()
        self.pool.acquire(self.connected)
        if self.secondary is not None:
            self.secondary.start()

    def drop(self) -> None:
        if self.dropped or self.running:
            return
        self.dropped = True
        if self.parent is None:
            self.exchange.migration.bump(self.arm, DROPPED)
            if self.secondary is not None:
                self.secondary.drop()
        else:  # compared without the second opinion
            self.outcome = None
            self.parent.compare()

    def cancel(self) -> None:
        self.cancelled = True
        if self.connection is not None:
            self.connection.abandon()
            self.connection = None
        self.end()
        if self.secondary is not None:
            self.secondary.cancel()

    def connected(self, connection: Connection | None, error: UpstreamError | None) -> None:
        if self.cancelled:
            if connection is not None and self.pool is not None:
                self.pool.release(connection)
            return
        if connection is None:
            assert error is not None
            self.failed(error)
            return
        self.connection = connection
        exchange, request = self.exchange, self.exchange.request
        connection.send(
            self,
            exchange.head_for(
                self.arm, shadow=True, upstream=self.pool.upstream if self.pool else None
            ),
            head_only=request.method == b"HEAD",
            timeout=exchange.proxy.limits.shadow_timeout,
        )
        for piece in request.body:
            connection.write(request.encode(piece))
        connection.write(request.ending())

    # Receiver (head and body: Capture)
    def done(self) -> None:
        self.connection = None
        self.finished((self.answer, _now() - self.started))

    def failed(self, error: UpstreamError) -> None:
        self.connection = None
        self.finished((error, _now() - self.started))

    def writable(self, ready: bool) -> None:
        return None

    def finished(self, outcome: tuple[Answer | UpstreamError, int]) -> None:
        """The copy is answered (or failed): count it as an off-path run of its arm now."""
        self.outcome = outcome
        self.end()
        if self.parent is not None:
            self.parent.compare()
            return
        mine, mine_ns = outcome
        exchange = self.exchange
        if isinstance(mine, UpstreamError) and mine.timeout:
            exchange.count(self.arm, mine_ns, OFFPATH, TIMEOUTS)
        else:
            failed = isinstance(mine, UpstreamError) or mine.status >= 500
            exchange.count(self.arm, mine_ns, OFFPATH, *((ERRORS,) if failed else ()))
        self.compare()

    def end(self) -> None:
        if self.running:
            self.running = False
            self.exchange.proxy.shadows -= 1

    def served(self, answer: Answer | UpstreamError | None, elapsed: int) -> None:
        """The serving arm is done: compare if the copies are done too."""
        self.serving = (answer, elapsed)
        self.compare()

    def compare(self) -> None:
        if self.outcome is None or self.serving is None or self.cancelled or self.judged:
            return
        second = self.secondary
        if second is not None and second.running:
            return  # the second opinion is still on its way
        self.judged = True
        mine, mine_ns = self.outcome
        if isinstance(mine, UpstreamError) and mine.timeout:
            return  # counted as a timeout; nothing to compare
        served, served_ns = self.serving
        ours = _observe(self.arm, mine, mine_ns)
        theirs = _observe(self.arm.other, served, served_ns)
        legacy, new = (theirs, ours) if self.arm is Arm.NEW else (ours, theirs)
        other = None
        if second is not None and second.outcome is not None:
            answer = second.outcome[0]
            other = answer if isinstance(answer, Answer) else None
        judge(self.exchange, self.arm, legacy, new, other)


def judge(
    exchange: Exchange,
    ran: Arm,
    legacy: Observation,
    new: Observation,
    secondary: Answer | None = None,
) -> None:
    """Compare two observations of one request (and learn noise from a second legacy answer):
    inline when small, on the off-path pool when large."""
    proxy, route, request = exchange.proxy, exchange.route, exchange.request
    options = route.compare
    migration, unit = exchange.migration, exchange.unit
    if exchange.recording:
        exchange.record(
            {
                Arm.LEGACY: (legacy.exception or legacy.value, legacy.duration_ns),
                Arm.NEW: (new.exception or new.value, new.duration_ns),
            }
        )
    served, copied = legacy.value, new.value
    if (
        secondary is None
        and isinstance(served, Answer)
        and isinstance(copied, Answer)
        and served.same_as(copied, options)
    ):
        # Byte for byte alike (most answers in a healthy shadow): a match, judged here and now
        # (the client has its answer) without parsing either body or describing the request
        # for a drift sample that a match never keeps.
        summary = {"status": served.status, "length": served.length}
        migration.judge(
            ran,
            Observation(Arm.LEGACY, summary, None, legacy.duration_ns),
            Observation(Arm.NEW, summary, None, new.duration_ns),
            (route.template,),
            {"method": request.method.decode(), "path": request.path},
            unit,
            _identical,
        )
        return
    comparator = proxy.comparator(route)
    model = proxy.noise_model(route.migration)
    declared = proxy.rules.get(route.migration, ())

    def values(observation: Observation) -> Observation:
        value = observation.value
        if isinstance(value, Answer):
            return Observation(observation.arm, value.value(options), None, observation.duration_ns)
        return observation

    def compare(legacy_value: Any, new_value: Any) -> Diff:
        found = comparator(legacy_value, new_value)
        if secondary is not None:
            second = comparator(legacy_value, secondary.value(options))
            model.learn(
                route.template,
                (d.pattern for d in found.differences),
                (d.pattern for d in second.differences),
            )
        kept = tuple(
            _in_route(d, route.template)
            for d in found.differences
            if not declared_noise(d.pattern, declared)
            and not declared_noise(d.path, declared)
            and not model.is_noise(route.template, d.pattern)
        )
        return Diff(kept, found.truncated and bool(kept), found.meta)

    args = (route.template,)
    kwargs = {
        "method": request.method.decode(),
        "path": request.path,
        "query": sorted(urllib.parse.parse_qs(request.target.partition(b"?")[2].decode("latin-1"))),
        "headers": _shown_headers(request.headers),
    }

    def run() -> None:
        migration.judge(ran, values(legacy), values(new), args, kwargs, unit, compare)

    size = sum(len(o.value.prefix) for o in (legacy, new) if isinstance(o.value, Answer))
    if size <= proxy.limits.compare_inline_bytes:
        asyncio.get_running_loop().call_soon(run)  # after the client's answer is written
    elif not migration.submit(run):
        migration.bump(ran, DROPPED)


def _identical(legacy: Any, new: Any) -> Diff:
    return Diff()


def _in_route(difference: Difference, template: str) -> Difference:
    return Difference(difference.path, difference.legacy, difference.new, difference.note, template)


def _observe(arm: Arm, outcome: Any, elapsed: int) -> Observation:
    if isinstance(outcome, BaseException):
        return Observation(arm, None, outcome, elapsed, getattr(outcome, "timeout", False))
    return Observation(arm, outcome, None, elapsed)


def _shown_headers(headers: Headers) -> dict[str, str]:
    """The request headers a drift sample keeps: secret ones by name only."""
    out = {}
    for name, value in headers[:50]:
        key = name.decode("latin-1").lower()
        out[key] = "<redacted>" if name.lower() in SECRET_HEADERS else value.decode("latin-1")[:200]
    return out


def _jwt_claim(authorization: bytes | None, claim: str) -> str | None:
    """A claim of a bearer JWT, decoded without checking its signature (routing only)."""
    if authorization is None:
        return None
    scheme, _, token = authorization.decode("latin-1").partition(" ")
    if scheme.lower() != "bearer" or token.count(".") != 2:
        return None
    payload = token.split(".")[1]
    try:
        data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (ValueError, binascii.Error):
        return None
    value = data.get(claim) if isinstance(data, dict) else None
    return None if value is None or isinstance(value, dict | list) else str(value)


def _sunset(text: str) -> str:
    """A Sunset header value (an HTTP date) from an ISO date or an HTTP date."""
    import datetime
    from email.utils import format_datetime

    try:
        day = datetime.datetime.fromisoformat(text)
    except ValueError:
        return text
    if day.tzinfo is None:
        day = day.replace(tzinfo=datetime.UTC)
    return format_datetime(day, usegmt=True)
