"""HTTP/1.1 on the wire for the proxy: which headers go on, request heads, problem answers.

Headers are kept as a list of (name, value) byte pairs in the order they came, with names as
the client wrote them, so what reaches an upstream is what the client sent but for the
hop-by-hop headers (RFC 9110, section 7.6.1), the framing the proxy re-does, ``Host`` (each
upstream gets its own) and the forwarding headers the proxy adds.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from email.utils import formatdate
from typing import Any

Headers = list[tuple[bytes, bytes]]

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
"""Headers that describe one connection, never forwarded (RFC 9110 7.6.1)."""

SECRET_HEADERS = frozenset({b"authorization", b"cookie", b"set-cookie", b"proxy-authorization"})
"""Headers whose values are never stored in a drift sample or a recording."""

SHADOW_HEADER = b"X-Cutover-Shadow"
RESERVED_PREFIX = "/-/cutover/"

REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    410: "Gone",
    413: "Content Too Large",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


def connection_tokens(headers: Headers) -> set[bytes]:
    """The header names a ``Connection`` header lists: hop-by-hop for this message only."""
    out = set()
    for name, value in headers:
        if name.lower() == b"connection":
            out.update(token.strip().lower() for token in value.split(b",") if token.strip())
    return out


def end_to_end(headers: Headers, *drop: bytes) -> Headers:
    """``headers`` without the hop-by-hop ones, those ``Connection`` names, and ``drop``."""
    excluded = HOP_BY_HOP | connection_tokens(headers) | set(drop)
    return [(name, value) for name, value in headers if name.lower() not in excluded]


def header(headers: Headers, name: bytes) -> bytes | None:
    """The first value of header ``name`` (lower case), or None."""
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


def forwarded(headers: Headers, client_ip: str, host: bytes | None, scheme: bytes) -> Headers:
    """The X-Forwarded-* headers the proxy adds (or extends): who asked, for which host."""
    prior = header(headers, b"x-forwarded-for")
    chain = prior + b", " + client_ip.encode() if prior else client_ip.encode()
    out = [h for h in headers if h[0].lower() not in (b"x-forwarded-for",)]
    out.append((b"X-Forwarded-For", chain))
    if header(headers, b"x-forwarded-proto") is None:
        out.append((b"X-Forwarded-Proto", scheme))
    if host is not None and header(headers, b"x-forwarded-host") is None:
        out.append((b"X-Forwarded-Host", host))
    return out


def request_head(
    method: bytes, target: bytes, host: bytes, headers: Iterable[tuple[bytes, bytes]]
) -> bytes:
    """The request line and headers as sent upstream, ending in the blank line."""
    lines = [method + b" " + target + b" HTTP/1.1", b"Host: " + host]
    lines.extend(name + b": " + value for name, value in headers)
    return b"\r\n".join(lines) + b"\r\n\r\n"


def response_head(status: int, reason: bytes, headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    lines = [b"HTTP/1.1 %d %s" % (status, reason or REASONS.get(status, "").encode())]
    lines.extend(name + b": " + value for name, value in headers)
    return b"\r\n".join(lines) + b"\r\n\r\n"


def problem(
    status: int,
    title: str,
    detail: str,
    *,
    extra: Sequence[tuple[bytes, bytes]] = (),
    close: bool = False,
    fields: dict[str, object] | None = None,
) -> bytes:
    """A whole response with an RFC 9457 problem body: what went wrong, in one sentence."""
    body = json.dumps(
        {
            "type": "about:blank",
            "title": title,
            "status": status,
            "detail": detail,
            **(fields or {}),
        }
    ).encode()
    headers = [
        (b"Content-Type", b"application/problem+json"),
        (b"Content-Length", str(len(body)).encode()),
        (b"Date", date_value()),
        *extra,
    ]
    if close:
        headers.append((b"Connection", b"close"))
    return response_head(status, REASONS.get(status, "").encode(), headers) + body


def http_date(at: float | None = None) -> str:
    return formatdate(time.time() if at is None else at, usegmt=True)


_date: list[Any] = [0, b""]  # the second and its Date value, formatted once a second


def date_value() -> bytes:
    """The ``Date`` header's value for now: formatting a date on every answer costs more than
    the rest of the head together, and its resolution is a second anyway."""
    now = int(time.time())
    if now != _date[0]:
        _date[0], _date[1] = now, formatdate(now, usegmt=True).encode()
    return _date[1]


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body."""
    return b"%x\r\n%s\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"
