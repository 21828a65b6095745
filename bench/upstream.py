"""A small, fast HTTP upstream for the proxy benchmark: a 60-byte JSON, optionally late, or a
large streamed body.

Every request is answered with the same 60-byte JSON (so a legacy and a new instance answer
byte for byte alike, and every comparison is a match), ``--delay`` seconds after its head
arrived (new "20 ms slower than legacy"). ``GET /bytes/N`` streams N bytes instead, as fast as
the reader takes them (the peak-memory test). One process, uvloop and httptools: cheap enough
that the proxy, not the upstream, is what a load run measures.

    python bench/upstream.py --port 8000 [--delay 0.02]
"""

from __future__ import annotations

import argparse
import asyncio
import socket

import httptools
import uvloop

BODY = b'{"id": 42, "name": "Ada Lovelace", "plan": "pro", "ok": 100}'
assert len(BODY) == 60
HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
ANSWER = HEAD % len(BODY) + BODY
PIECE = b"x" * (256 << 10)


class Upstream(asyncio.Protocol):
    """One client connection: requests answered in order, kept alive."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.streaming = 0  # bytes of a large body still to write
        self.paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_message_complete(self) -> None:
        url, self.url = self.url, b""
        if url.startswith(b"/bytes/"):
            self.stream(int(url.removeprefix(b"/bytes/")))
        elif self.delay:
            asyncio.get_running_loop().call_later(self.delay, self.answer)
        else:
            self.answer()

    def answer(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(ANSWER)

    def stream(self, size: int) -> None:
        assert self.transport is not None
        self.transport.write(HEAD.replace(b"application/json", b"application/octet-stream") % size)
        self.streaming = size
        self.pump()

    def pump(self) -> None:
        while self.streaming and not self.paused and self.transport is not None:
            piece = PIECE if self.streaming >= len(PIECE) else PIECE[: self.streaming]
            self.streaming -= len(piece)
            self.transport.write(piece)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self.pump()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


async def serve(port: int, delay: float) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Upstream(delay), "127.0.0.1", port, backlog=2048)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before answering")
    options = parser.parse_args()
    uvloop.run(serve(options.port, options.delay))


if __name__ == "__main__":
    main()
