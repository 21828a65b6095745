"""What the client gets through `cutover proxy` is the upstream's answer byte for byte, and a
shadow copy goes out only once the client has the first bytes of its answer."""

from __future__ import annotations

import contextlib
import socket
import socketserver
import struct
import threading
from collections.abc import Callable, Iterator
from email.utils import parsedate_to_datetime
from typing import Any

import httptools
import pytest

from .conftest import Proxy, wait_until

LARGE = bytes(range(256)) * (12 << 10)  # 3 MiB: many reads and writes on the way
JSON = b'{"id": 7, "items": [1, 2, 3], "name": "\xc3\xa9t\xc3\xa9"}'


def canned(path: str, role: str) -> list[bytes]:
    """The raw answer to ``path``, as the pieces the upstream writes one after the other."""
    if path == "/small":
        return [
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Odd-Case: two  spaces\r\n"
            b"Set-Cookie: a=1\r\nSet-Cookie: b=2\r\nContent-Length: %d\r\n\r\n%s"
            % (len(JSON), JSON)
        ]
    if path == "/status":
        return [b"HTTP/1.1 418 I'm a teapot\r\nContent-Length: 3\r\nX-Why: tea\r\n\r\nno!"]
    if path == "/large":
        head = b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
        head += b"Content-Length: %d\r\n\r\n" % len(LARGE)
        return [head, *(LARGE[i : i + 100_000] for i in range(0, len(LARGE), 100_000))]
    if path == "/chunked":
        return [
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"5\r\nhello\r\n",
            b"1\r\n \r\n",
            b"%x\r\n%s\r\n" % (len(LARGE), LARGE),
            b"0\r\n\r\n",
        ]
    if path == "/until-close":  # neither a length nor chunks: the connection's end ends it
        return [b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n", LARGE]
    if path == "/differs":
        body = b'{"total": %d}' % (10 if role == "legacy" else 11)
        head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
        return [head % len(body) + body]
    return [b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"]


class Upstream(socketserver.ThreadingTCPServer):
    """A raw HTTP/1.1 upstream: canned answers, written exactly as given, and a record of the
    paths it was asked for. ``before_answer`` may hold an answer back (the ordering tests)."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, role: str) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.role = role
        self.asked: list[str] = []
        self.heads: dict[str, list[bytes]] = {}  # the header lines of the last request per path
        self.arrived = threading.Condition()
        self.before_answer: Callable[[str], None] = lambda path: None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def saw(self, path: str) -> bool:
        with self.arrived:
            return path in self.asked


class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        server: Upstream = self.server  # type: ignore[assignment]
        buffer = b""
        while True:
            while b"\r\n\r\n" not in buffer:
                data = self.request.recv(65536)
                if not data:
                    return
                buffer += data
            head, buffer = buffer.split(b"\r\n\r\n", 1)
            path = head.split(b" ", 2)[1].decode()
            with server.arrived:
                server.heads[path] = head.split(b"\r\n")[1:]
                server.asked.append(path)
                server.arrived.notify_all()
            server.before_answer(path)
            for piece in canned(path, server.role):
                self.request.sendall(piece)
            if path == "/until-close":
                return


@contextlib.contextmanager
def upstream(role: str) -> Iterator[Upstream]:
    server = Upstream(role)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def upstreams() -> Iterator[tuple[Upstream, Upstream]]:
    with upstream("legacy") as legacy, upstream("new") as new:
        yield legacy, new


@pytest.fixture
def shadowing(
    upstreams: tuple[Upstream, Upstream], start_proxy: Any
) -> tuple[Upstream, Upstream, Proxy]:
    """Legacy, new, and a proxy in front of them copying every request to new."""
    legacy, new = upstreams
    proxy: Proxy = start_proxy(legacy.url, new.url)
    proxy.set(mode="shadow", sample=1.0)
    return legacy, new, proxy


class Response:
    """One raw answer read off a socket: its head's bytes, its headers, its body decoded."""

    def __init__(self) -> None:
        self.raw = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = b""
        self.status = 0
        self.complete = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_body(self, data: bytes) -> None:
        self.body += data

    def on_message_complete(self) -> None:
        self.complete = True


def fetch(url: str, path: str) -> Response:
    """GET ``path`` on a connection of its own; the answer as it came."""
    host, port = url.removeprefix("http://").split(":")
    response = Response()
    parser = httptools.HttpResponseParser(response)
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(b"GET %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (path.encode(), host.encode()))
        while not response.complete:
            data = sock.recv(1 << 20)
            assert data, f"the connection closed before the answer to {path} was complete"
            response.raw += data
            parser.feed_data(data)
        response.status = parser.get_status_code()
    return response


def without_date(raw: bytes) -> bytes:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = [line for line in head.split(b"\r\n") if not line.lower().startswith(b"date:")]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def date_lines(raw: bytes) -> list[bytes]:
    head = raw.partition(b"\r\n\r\n")[0]
    return [line for line in head.split(b"\r\n") if line.lower().startswith(b"date:")]


@pytest.mark.parametrize("mode", ["legacy", "shadow"])
def test_answers_pass_byte_for_byte(
    mode: str, upstreams: tuple[Upstream, Upstream], start_proxy: Any
) -> None:
    legacy, new = upstreams
    proxy: Proxy = start_proxy(legacy.url, new.url)
    if mode == "shadow":
        proxy.set(mode="shadow", sample=1.0)
    for path in ("/small", "/status", "/large", "/small"):  # the last on a warm pool
        direct, through = fetch(legacy.url, path), fetch(proxy.url, path)
        # The whole answer, status line, headers in their order and spelling, and body, as
        # legacy wrote it; only a Date is added.
        assert without_date(through.raw) == direct.raw, path
        (date,) = date_lines(through.raw)
        assert parsedate_to_datetime(date.split(b":", 1)[1].strip().decode()).tzinfo is not None
    # An answer without a length is re-framed in chunks: the same headers but the framing,
    # and the same body bytes.
    direct, through = fetch(legacy.url, "/chunked"), fetch(proxy.url, "/chunked")
    framing = {b"transfer-encoding", b"date"}
    assert [h for h in through.headers if h[0].lower() not in framing] == [
        h for h in direct.headers if h[0].lower() not in framing
    ]
    assert (b"Transfer-Encoding", b"chunked") in through.headers
    assert through.body == direct.body == b"hello " + LARGE
    # An answer that the upstream ends by closing the connection is whole, and re-framed.
    through = fetch(proxy.url, "/until-close")
    assert (through.status, through.body) == (200, LARGE)
    assert (b"Transfer-Encoding", b"chunked") in through.headers
    if mode == "shadow":
        # Every copy compared; byte-identical answers are matches, and a real difference
        # is still a drift.
        fetch(proxy.url, "/differs")
        found = proxy.counted(lambda s: s["comparisons"] >= 7, "the comparisons")
        assert (found["comparisons"], found["drifts"]) == (7, 1)


def test_the_copy_goes_out_after_the_client_has_its_first_bytes(
    shadowing: tuple[Upstream, Upstream, Proxy],
) -> None:
    legacy, new, proxy = shadowing
    copy_first: list[bool] = []

    def hold(path: str) -> None:
        # Legacy holds its answer a while: a copy sent beside the request would reach new
        # meanwhile; one sent after the client's first bytes cannot.
        if path == "/small":
            with new.arrived:
                copy_first.append(new.arrived.wait_for(lambda: "/small" in new.asked, 1.0))

    legacy.before_answer = hold
    through = fetch(proxy.url, "/small")
    assert through.status == 200 and through.body == JSON
    assert copy_first == [False]
    wait_until(lambda: new.saw("/small"), "the copy to reach new")
    # Each arm gets its own Host; both the same forwarded headers; only the copy is marked.
    for server, marked in ((legacy, False), (new, True)):
        lines = server.heads["/small"]
        assert b"Host: " + server.url.removeprefix("http://").encode() in lines
        assert b"X-Forwarded-For: 127.0.0.1" in lines
        assert b"X-Forwarded-Host: 127.0.0.1" in lines  # the client's Host
        assert (b"X-Cutover-Shadow: 1" in lines) is marked
    proxy.counted(lambda s: s["comparisons"] == 1 and s["drifts"] == 0, "the comparison")


def test_a_copy_whose_client_left_before_its_answer_is_dropped(
    shadowing: tuple[Upstream, Upstream, Proxy],
) -> None:
    legacy, new, proxy = shadowing
    arrived = threading.Event()
    released = threading.Event()

    def hold(path: str) -> None:
        if path == "/status":
            arrived.set()
            released.wait(30)  # until the client is gone

    legacy.before_answer = hold
    host, port = proxy.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
        assert arrived.wait(30), "the request did not reach legacy"
        # Gone, not half-closed (a half-closed client still gets its answer): a reset.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    found = proxy.counted(lambda s: s["offpath_dropped"] >= 1, "the dropped copy")
    released.set()
    assert found["offpath_dropped"] == 1 and found["comparisons"] == 0
    assert not new.saw("/status")
