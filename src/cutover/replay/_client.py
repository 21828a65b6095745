"""Sending a request to an upstream and capturing its answer, over the proxy's upstream client.

The proxy's :class:`~cutover.proxy._upstream.Pool` (keep-alive connections, httptools parsing,
callbacks on the event loop) is the fastest client measured for this work (see
docs/performance.md); a replay needs one future per request on top of it, nothing more.
"""

from __future__ import annotations

import asyncio
import time

from cutover.proxy._compare import Answer, Capture
from cutover.proxy._config import Upstream
from cutover.proxy._http import Headers, request_head
from cutover.proxy._upstream import Connection, Pool, UpstreamError
from cutover.replay._input import Request

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


class Client:
    """Requests to one upstream: ``await client.send(request)`` -> (answer, nanoseconds)."""

    def __init__(
        self,
        upstream: Upstream,
        *,
        timeout: float = 30.0,
        connect_timeout: float = 5.0,
        limit: int = 1 << 20,
    ) -> None:
        self.upstream = upstream
        self.pool = Pool(upstream, connect_timeout)
        self.timeout = timeout
        self.limit = limit  # of each body, kept to compare; the rest by digest
        self._host = upstream.host_header.encode()
        self._base = upstream.base_path.encode()
        self._replaced = {name.lower() for name, _ in upstream.headers}

    def send(
        self, request: Request, limit: int | None = None
    ) -> asyncio.Future[tuple[Answer, int]]:
        """Send ``request``; the future holds the answer and how long it took, or raises
        :class:`UpstreamError`. ``limit`` caps the body kept (a recorded answer's prefix)."""
        loop = asyncio.get_running_loop()
        fetch = _Fetch(self, request, loop.create_future(), self.limit if limit is None else limit)
        self.pool.acquire(fetch.connected)
        return fetch.future

    def head(self, request: Request) -> bytes:
        headers: Headers = request.headers
        if self._replaced:
            headers = [h for h in headers if h[0].lower() not in self._replaced]
            headers += [(name, value) for name, value in self.upstream.headers if value]
        if request.body or request.method in _BODY_METHODS:
            headers = [*headers, (b"Content-Length", str(len(request.body)).encode())]
        return request_head(
            request.method.encode(), self._base + request.target.encode(), self._host, headers
        )

    def close(self) -> None:
        self.pool.close()


class _Fetch(Capture):
    """One request in flight: the Receiver the connection hands the answer to."""

    __slots__ = (
        "answer",
        "client",
        "connection",
        "future",
        "limit",
        "request",
        "retried",
        "started",
    )

    def __init__(
        self,
        client: Client,
        request: Request,
        future: asyncio.Future[tuple[Answer, int]],
        limit: int,
    ) -> None:
        self.client = client
        self.request = request
        self.future = future
        self.limit = limit
        self.answer = Answer(limit=limit)
        self.connection: Connection | None = None
        self.retried = False
        self.started = time.perf_counter_ns()

    def connected(self, connection: Connection | None, error: UpstreamError | None) -> None:
        if connection is None:
            assert error is not None
            self._fail(error)
            return
        if self.future.done():  # cancelled while connecting
            self.client.pool.release(connection)
            return
        self.connection = connection
        connection.send(
            self,
            self.client.head(self.request),
            head_only=self.request.method == "HEAD",
            timeout=self.client.timeout,
        )
        if self.request.body:
            connection.write(self.request.body)

    # -- Receiver (head and body: Capture) -------------------------------------------------

    def done(self) -> None:
        if not self.future.done():
            self.future.set_result((self.answer, time.perf_counter_ns() - self.started))

    def failed(self, error: UpstreamError) -> None:
        connection = self.connection
        if (
            connection is not None
            and connection.reused
            and not self.answer.status
            and not error.timeout
            and not self.retried
        ):
            # A kept-alive connection the upstream had closed meanwhile: the request never
            # reached it, so it goes again on a fresh connection, as browsers do.
            self.retried = True
            self.connection = None
            self.answer = Answer(limit=self.limit)
            self.client.pool.acquire(self.connected)
            return
        self._fail(error)

    def writable(self, ready: bool) -> None:
        """The body is written whole at once: the transport buffers what the socket cannot
        take yet, bounded by the body's size."""

    def _fail(self, error: UpstreamError) -> None:
        if not self.future.done():
            self.future.set_exception(error)
