"""Connections to an upstream: kept alive and reused, one exchange at a time, callbacks only.

The proxy's speed comes from doing no more per request than parsing and copying bytes: no
coroutine, future or task per request. A :class:`Connection` sends a request head and body and
hands the response, as it is parsed, to a :class:`Receiver`; a :class:`Pool` keeps idle
connections to one upstream and opens new ones as needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable
from typing import Protocol

import httptools

from cutover.proxy._config import Upstream
from cutover.proxy._http import Headers

IDLE_LIMIT = 256
"""Idle connections kept per upstream per process; more are closed when they come back."""

SWEEP_INTERVAL = 0.05
"""Seconds between checks of the answers due: a timeout fires at most this much late."""


class UpstreamError(Exception):
    """An upstream did not answer: refused, reset, timed out or sent what is not HTTP.

    ``sent`` says whether any byte of the request may have reached it: a request that provably
    never did may be sent elsewhere whatever its method."""

    def __init__(self, message: str, *, sent: bool, timeout: bool = False) -> None:
        super().__init__(message)
        self.sent = sent
        self.timeout = timeout


class Receiver(Protocol):
    """What an upstream's response is handed to, piece by piece, on the event loop."""

    def head(self, status: int, reason: bytes, headers: Headers, keep_alive: bool) -> None: ...

    def body(self, data: bytes) -> None: ...

    def done(self) -> None: ...

    def failed(self, error: UpstreamError) -> None: ...

    def writable(self, ready: bool) -> None:
        """The upstream's socket can (True) or cannot (False) take more of the request body."""

    def flush(self) -> None:
        """The bytes received so far are parsed: pass on what was held back for more."""


class Connection(asyncio.Protocol):
    """One keep-alive connection to an upstream."""

    __slots__ = (
        "_closed",
        "_deadline",
        "_head_only",
        "_headers",
        "_loop",
        "_parser",
        "_reason",
        "_received",
        "_status",
        "_timeout",
        "_until_close",
        "pool",
        "receiver",
        "reused",
        "transport",
        "upgraded",
    )

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.receiver: Receiver | None = None
        self.reused = False
        self._parser = httptools.HttpResponseParser(self)
        self._headers: Headers = []
        self._status = 0
        self._reason = b""
        self._head_only = False
        self._received = False
        self._deadline = 0.0  # loop time by which the answer's head must be in; 0: none due
        self._timeout = 0.0
        self._closed = False
        self._until_close = False  # no length and no chunks: the answer ends with the connection
        # Looked up once: asyncio.get_running_loop() asks the kernel for the process id on
        # every call (to notice a fork), a system call per request otherwise.
        self._loop = asyncio.get_running_loop()
        self.upgraded = False  # a 101 answer: raw bytes from here on, for the receiver

    # -- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        receiver = self.receiver
        if receiver is None:
            self.close()  # bytes nobody asked for: the upstream is confused, start afresh
            return
        if self.upgraded:
            receiver.body(data)
            return
        self._received = True
        try:
            self._parser.feed_data(data)
            if self.receiver is receiver:  # still answering: what it holds goes out now
                receiver.flush()
        except httptools.HttpParserUpgrade as upgrade:
            offset = upgrade.args[0] if upgrade.args else len(data)
            if self.receiver is not None and offset < len(data):
                self.receiver.body(data[offset:])  # what followed the 101 head
        except httptools.HttpParserError as error:
            self._fail(UpstreamError(f"the upstream sent what is not HTTP ({error})", sent=True))

    def eof_received(self) -> bool | None:
        return None  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self.pool.forget(self)
        if self.receiver is not None:
            if self._until_close and self._status:
                self._complete(False)  # a body the connection's end delimits is complete
            elif self.upgraded:
                receiver, self.receiver = self.receiver, None
                receiver.done()
            elif self.receiver is not None:
                self._fail(
                    UpstreamError(
                        "the upstream closed the connection before answering"
                        if not self._received
                        else "the upstream closed the connection mid-answer",
                        sent=True,
                    )
                )

    def pause_writing(self) -> None:
        if self.receiver is not None:
            self.receiver.writable(False)

    def resume_writing(self) -> None:
        if self.receiver is not None:
            self.receiver.writable(True)

    # -- httptools callbacks ---------------------------------------------------------------

    def on_status(self, status: bytes) -> None:
        self._reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            self._headers = []  # an interim answer (100 Continue): the final one follows
            self._reason = b""
            return
        self._cancel_timer()
        receiver = self.receiver
        assert receiver is not None
        keep_alive = self._parser.should_keep_alive()
        headers, self._headers = self._headers, []
        reason, self._reason = self._reason, b""
        self._status = status
        if status == 101:
            self.upgraded = True  # no longer HTTP: the receiver pipes the bytes
            receiver.head(status, reason, headers, False)
            return
        receiver.head(status, reason, headers, keep_alive)
        self._until_close = not keep_alive and not any(
            name.lower() in (b"content-length", b"transfer-encoding") for name, _ in headers
        )
        if self._head_only or status in (204, 304):
            # No body follows, whatever Content-Length says.
            self._parser = httptools.HttpResponseParser(self)
            self._complete(keep_alive)

    def on_body(self, data: bytes) -> None:
        if self.receiver is not None:
            self.receiver.body(data)

    def on_message_complete(self) -> None:
        if self.receiver is not None and self._status and not self.upgraded:
            self._complete(self._parser.should_keep_alive())

    # -- the exchange ----------------------------------------------------------------------

    def send(self, receiver: Receiver, head: bytes, *, head_only: bool, timeout: float) -> None:
        """Start an exchange: write the request head; the body follows with :meth:`write`."""
        self.receiver = receiver
        self._head_only = head_only
        self._status = 0
        self._until_close = False
        self._received = False
        self._timeout = timeout
        self._deadline = self._loop.time() + timeout
        self.pool.watch(self)
        assert self.transport is not None
        self.transport.write(head)

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self._closed:
            self.transport.write(data)

    def pause_reading(self) -> None:
        if self.transport is not None and not self._closed:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self._closed:
            self.transport.resume_reading()

    def abandon(self) -> None:
        """The exchange is of no more interest (a shadow that ran late, a client gone): close
        the connection, since its answer may still be on the way."""
        self.receiver = None
        self._cancel_timer()
        self.close()

    def close(self) -> None:
        if self.transport is not None and not self._closed:
            self._closed = True
            self.transport.close()

    def _complete(self, keep_alive: bool) -> None:
        receiver, self.receiver = self.receiver, None
        self._cancel_timer()
        if keep_alive and not self._closed:
            self.pool.release(self)
        else:
            self.close()
        if receiver is not None:
            receiver.done()

    def _timed_out(self, timeout: float) -> None:
        self._deadline = 0.0
        self._fail(
            UpstreamError(
                f"the upstream did not answer within {timeout:g}s", sent=True, timeout=True
            )
        )

    def _fail(self, error: UpstreamError) -> None:
        receiver, self.receiver = self.receiver, None
        self._cancel_timer()
        self.close()
        if receiver is not None:
            receiver.failed(error)

    def _cancel_timer(self) -> None:
        if self._deadline:
            self._deadline = 0.0
            self.pool.unwatch(self)


class Pool:
    """Idle keep-alive connections to one upstream, most recently used first; and the ones
    waiting for an answer, checked against their deadlines a few times a second.

    One sweep for all waiting connections instead of a timer per request: arming and
    cancelling a timer for every exchange costs more than the rest of sending it, and a
    timeout of seconds does not need to fire to the millisecond."""

    def __init__(self, upstream: Upstream, connect_timeout: float = 5.0) -> None:
        self.upstream = upstream
        self.connect_timeout = connect_timeout
        self._idle: list[Connection] = []
        self._waiting: set[Connection] = set()
        self._sweeper: asyncio.TimerHandle | None = None
        self.opened = 0

    def watch(self, connection: Connection) -> None:
        self._waiting.add(connection)
        if self._sweeper is None:
            loop = connection._loop
            self._sweeper = loop.call_at(loop.time() + SWEEP_INTERVAL, self._sweep, loop)

    def unwatch(self, connection: Connection) -> None:
        self._waiting.discard(connection)

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        for connection in [c for c in self._waiting if c._deadline and c._deadline <= now]:
            self._waiting.discard(connection)
            connection._timed_out(connection._timeout)
        self._sweeper = (
            loop.call_at(now + SWEEP_INTERVAL, self._sweep, loop) if self._waiting else None
        )

    def acquire(self, then: Callable[[Connection | None, UpstreamError | None], None]) -> None:
        """Call ``then(connection, None)`` with an idle or a new connection, or
        ``then(None, error)`` when none can be opened. An idle one is handed over at once."""
        idle = self._idle
        while idle:
            connection = idle.pop()
            if not connection._closed:
                connection.reused = True
                then(connection, None)
                return
        asyncio.get_running_loop().create_task(self._open(then))

    async def _open(self, then: Callable[[Connection | None, UpstreamError | None], None]) -> None:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, connection = await loop.create_connection(
                    lambda: Connection(self), self.upstream.host, self.upstream.port
                )
        except TimeoutError:
            then(
                None,
                UpstreamError(
                    f"cannot connect to {self.upstream.url} within {self.connect_timeout:g}s",
                    sent=False,
                    timeout=True,
                ),
            )
            return
        except OSError as error:
            reason = error.strerror or type(error).__name__
            then(
                None, UpstreamError(f"cannot connect to {self.upstream.url}: {reason}", sent=False)
            )
            return
        self.opened += 1
        then(connection, None)

    def release(self, connection: Connection) -> None:
        if len(self._idle) < IDLE_LIMIT:
            self._idle.append(connection)
        else:
            connection.close()

    def forget(self, connection: Connection) -> None:
        with contextlib.suppress(ValueError):
            self._idle.remove(connection)

    def close(self) -> None:
        for connection in self._idle:
            connection.close()
        self._idle.clear()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
