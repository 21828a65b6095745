"""An open-loop load generator: requests at a fixed rate, whatever the server's pace, and the
latency of each.

wrk (closed loop: each connection waits for its answer before the next request) hides a slow
answer behind the requests it delays, and Debian's wrk has no constant-rate mode (wrk2). Here
request ``i`` is due at ``start + i / rate``; it goes out on an idle kept-alive connection, or
on a new one when all are busy, so a slow answer never holds the next request back (no
coordinated omission). Latency is counted from the request's write to the last byte of its
answer; how late the writes were against their schedule (the event loop's timer resolution is
a millisecond) is reported beside it, and is the same whichever server is measured.

    python bench/open_loop.py http://127.0.0.1:8080/ [--rate 500] [--seconds 10]

prints one JSON line: requests, errors, p50/p90/p99/max in milliseconds and the send lag.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import urllib.parse
from typing import Any

import httptools
import uvloop

from _harness import percentile


class Connection(asyncio.Protocol):
    """One kept-alive connection, one request at a time."""

    def __init__(self, generator: Generator) -> None:
        self.generator = generator
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.sent = 0  # when the request in flight was written (perf_counter_ns)
        self.status = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, request: bytes, sent: int) -> None:
        assert self.transport is not None
        self.sent = sent
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.generator.failed(self)

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()

    def on_message_complete(self) -> None:
        self.generator.answered(self, time.perf_counter_ns() - self.sent, self.status)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.sent:
            self.generator.failed(self)


class Generator:
    """Sends ``rate`` requests a second for ``seconds``, and collects their latencies."""

    def __init__(self, url: str, rate: float, seconds: float) -> None:
        parts = urllib.parse.urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.request = f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\n\r\n".encode()
        self.rate, self.total = rate, int(rate * seconds)
        self.idle: list[Connection] = []
        self.latencies: list[int] = []
        self.lags: list[int] = []
        self.errors = 0
        self.non_2xx = 0
        self.opened = 0
        self.connecting: set[asyncio.Task[None]] = set()
        self.outstanding = 0
        self.sending = True
        self.done = asyncio.get_running_loop().create_future()

    async def run(self) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        # Warm connections up to the concurrency the rate needs, so no request waits for a
        # connection to be made at the start.
        for _ in range(8):
            self.idle.append(await self.connect())
        began = time.perf_counter_ns()
        step = 1e9 / self.rate
        for i in range(self.total):
            due = began + int(i * step)
            wait = (due - time.perf_counter_ns()) / 1e9
            if wait > 0:
                await asyncio.sleep(wait)
            now = time.perf_counter_ns()
            self.lags.append(now - due)
            self.outstanding += 1
            if self.idle:
                self.idle.pop().send(self.request, now)
            else:
                task = loop.create_task(self.send_on_new())
                self.connecting.add(task)  # held until done: the loop keeps weak references
                task.add_done_callback(self.connecting.discard)
        self.sending = False
        if self.outstanding:
            await asyncio.wait_for(self.done, 30)
        elapsed = (time.perf_counter_ns() - began) / 1e9
        ms = [x / 1e6 for x in self.latencies]
        lags = [x / 1e6 for x in self.lags]
        return {
            "requests": len(ms),
            "rate": round(len(ms) / elapsed, 1),
            "errors": self.errors,
            "non_2xx": self.non_2xx,
            "connections": self.opened,
            "p50_ms": round(percentile(ms, 0.50), 3),
            "p90_ms": round(percentile(ms, 0.90), 3),
            "p99_ms": round(percentile(ms, 0.99), 3),
            "max_ms": round(max(ms), 3),
            "send_lag_p99_ms": round(percentile(lags, 0.99), 3),
        }

    async def connect(self) -> Connection:
        loop = asyncio.get_running_loop()
        _, connection = await loop.create_connection(lambda: Connection(self), self.host, self.port)
        self.opened += 1
        return connection

    async def send_on_new(self) -> None:
        try:
            connection = await self.connect()
        except OSError:
            self.errors += 1
            self.settle()
            return
        connection.send(self.request, time.perf_counter_ns())

    def answered(self, connection: Connection, latency: int, status: int) -> None:
        connection.sent = 0
        self.latencies.append(latency)
        if not 200 <= status < 300:
            self.non_2xx += 1
        self.idle.append(connection)
        self.settle()

    def failed(self, connection: Connection) -> None:
        connection.sent = 0
        self.errors += 1
        if connection.transport is not None:
            connection.transport.close()
        self.settle()

    def settle(self) -> None:
        self.outstanding -= 1
        if self.outstanding == 0 and not self.sending and not self.done.done():
            self.done.set_result(None)


async def generate(url: str, rate: float, seconds: float) -> dict[str, Any]:
    return await Generator(url, rate, seconds).run()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("--rate", type=float, default=500.0, help="requests a second")
    parser.add_argument("--seconds", type=float, default=10.0)
    options = parser.parse_args()
    print(json.dumps(uvloop.run(generate(options.url, options.rate, options.seconds))))


if __name__ == "__main__":
    main()
