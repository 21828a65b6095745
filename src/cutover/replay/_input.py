"""Reading the requests to replay: the proxy's ``--record`` JSON Lines, HAR, or plain JSON Lines.

Three formats, told apart by their content:

- a recording of ``cutover proxy --record``: one exchange a line, with ``request`` and, where
  the proxy had it, ``legacy``'s answer (status, headers, body prefix, digest, latency), so a
  replay can compare new with what legacy answered then;
- a HAR file (browsers' and proxies' "save all as HAR"): ``log.entries[].request`` and, with
  content, ``response``, used as legacy's recorded answer;
- plain JSON Lines of requests written by hand or by a script::

      {"method": "POST", "path": "/api/v1/predict?model=7", "headers": {"X-User-Id": "42"},
       "json": {"features": [1, 2, 3]}}

  (``body`` instead of ``json`` sends text as it is; ``method`` defaults to GET).

Headers the recording redacted (``<redacted>``) are not sent: give credentials with
``--header``. A request whose body was not recorded (larger than the proxy kept) cannot be
replayed faithfully, and is counted as an error naming its line.
"""

from __future__ import annotations

import base64
import json
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cutover.errors import InvalidInput
from cutover.proxy._http import HOP_BY_HOP, Headers

REDACTED = "<redacted>"
_NOT_SENT = HOP_BY_HOP | {b"host", b"content-length", b"expect"}


@dataclass(frozen=True, slots=True)
class Recorded:
    """Legacy's answer as it was recorded: the body may be only a prefix of ``length`` bytes."""

    status: int
    headers: Headers
    body: bytes
    length: int
    sha256: str | None = None
    latency_ms: float | None = None
    error: str | None = None  # legacy did not answer: why


@dataclass(frozen=True, slots=True)
class Request:
    """One request to replay, with where it came from (``source:line``) and what legacy
    answered then, when that was recorded."""

    where: str
    method: str
    target: str  # path and query, as sent
    headers: Headers
    body: bytes
    recorded: Recorded | None = None
    problem: str | None = None  # why it cannot be replayed faithfully (counted as an error)
    route: str | None = None  # the route template the proxy matched when it recorded

    @property
    def path(self) -> str:
        return self.target.partition("?")[0]


def read_requests(path: str | Path) -> Iterator[Request]:
    """The requests in ``path``, in order; a file or line that is not one of the formats is
    one sentence naming the file, the line and the fix."""
    source = Path(path)
    if source.is_dir():
        raise InvalidInput(f"{source} is a folder; give a recording, a HAR file or JSON Lines")
    try:
        handle = source.open("rb")
    except OSError as error:
        raise InvalidInput(
            f"cannot read {source}: {error.strerror or error}; give the path of a recording,"
            " a HAR file or JSON Lines of requests"
        ) from None
    with handle:
        start = handle.read(4096).lstrip()
        handle.seek(0)
        if source.suffix.lower() == ".har" or _looks_like_har(start):
            yield from _har(source, handle.read())
            return
        for number, raw in enumerate(handle, 1):
            line = raw.strip()
            if not line or line.startswith(b"#"):
                continue
            where = f"{source}:{number}"
            try:
                entry = json.loads(line)
            except ValueError as error:
                raise InvalidInput(
                    f"{where}: not a JSON object ({_reason(error)}); each line holds one request"
                ) from None
            if not isinstance(entry, Mapping):
                raise InvalidInput(f"{where}: not a JSON object; each line holds one request")
            yield _recorded(where, entry) if "request" in entry else _plain(where, entry)


def _looks_like_har(start: bytes) -> bool:
    return start.startswith(b"{") and b'"log"' in start and b"\n{" not in start


def _reason(error: ValueError) -> str:
    return str(error).split(":")[0].lower()


def _recorded(where: str, entry: Mapping[str, Any]) -> Request:
    """A line of ``cutover proxy --record``."""
    request = entry["request"]
    if not isinstance(request, Mapping) or "path" not in request:
        raise InvalidInput(f"{where}: 'request' must be an object with a method and a path")
    method = _method(request.get("method", "GET"), where)
    query = request.get("query") or ""
    target = _target(str(request["path"]), where) + (f"?{query}" if query else "")
    headers = _headers(request.get("headers") or [], where)
    body, kept = _body(request.get("body"), where)
    problem = None
    if not kept and int(request.get("body_bytes") or 0) > 0:
        problem = (
            f"{where}: the request body ({request['body_bytes']} bytes) was not recorded (it"
            " was larger than the proxy holds), so the request cannot be replayed"
        )
    legacy = entry.get("legacy")
    recorded = None
    if isinstance(legacy, Mapping):
        if "error" in legacy:
            recorded = Recorded(0, [], b"", 0, None, legacy.get("latency_ms"), str(legacy["error"]))
        else:
            data, _ = _body(legacy.get("body"), where)
            recorded = Recorded(
                int(legacy.get("status") or 0),
                _headers(legacy.get("headers") or [], where, keep_all=True),
                data,
                int(legacy.get("body_bytes", len(data))),
                legacy.get("sha256"),
                legacy.get("latency_ms"),
            )
    route = entry.get("route")
    return Request(where, method, target, headers, body, recorded, problem, route and str(route))


def _plain(where: str, entry: Mapping[str, Any]) -> Request:
    """A hand-written request: method, path (with its query), headers, and json or body."""
    if "path" not in entry and "url" not in entry:
        raise InvalidInput(
            f'{where}: a request needs a path, like {{"method": "GET", "path": "/api/v1/users/7"}}'
        )
    method = _method(entry.get("method", "GET"), where)
    target = str(entry.get("path") or "")
    if "url" in entry and not target:
        parts = urllib.parse.urlsplit(str(entry["url"]))
        target = parts.path + (f"?{parts.query}" if parts.query else "")
    headers = _headers(entry.get("headers") or {}, where)
    if "json" in entry:
        body = json.dumps(entry["json"], separators=(",", ":")).encode()
        if not any(name.lower() == b"content-type" for name, _ in headers):
            headers.append((b"Content-Type", b"application/json"))
    elif isinstance(entry.get("body"), str):
        body = entry["body"].encode()
    elif entry.get("body") is None:
        body = b""
    else:
        raise InvalidInput(f"{where}: 'body' must be text; give a JSON value as 'json' instead")
    return Request(where, method, _target(target, where), headers, body)


def _har(source: Path, data: bytes) -> Iterator[Request]:
    try:
        document = json.loads(data)
        entries = document["log"]["entries"]
    except (ValueError, KeyError, TypeError):
        raise InvalidInput(
            f"{source}: not a HAR file (a JSON object with log.entries); export one again"
        ) from None
    if not isinstance(entries, list):
        raise InvalidInput(f"{source}: log.entries must be a list of entries")
    for number, entry in enumerate(entries, 1):
        where = f"{source}: entry {number}"
        try:
            request = entry["request"]
            url = urllib.parse.urlsplit(request["url"])
            method = _method(request.get("method", "GET"), where)
            headers = _headers(
                [[h["name"], h["value"]] for h in request.get("headers") or []], where
            )
            text = (request.get("postData") or {}).get("text") or ""
            recorded = _har_response(entry.get("response"), entry.get("time"), where)
        except (KeyError, TypeError, AttributeError):
            raise InvalidInput(
                f"{where}: not a HAR entry (request.method, request.url, request.headers)"
            ) from None
        target = (url.path or "/") + (f"?{url.query}" if url.query else "")
        yield Request(where, method, target, headers, text.encode(), recorded)


def _har_response(response: Any, elapsed: Any, where: str) -> Recorded | None:
    """A HAR response as legacy's recorded answer: only one with its content (status 0 is a
    request the browser never got an answer to)."""
    if not isinstance(response, Mapping) or not response.get("status"):
        return None
    content = response.get("content") or {}
    if "text" not in content:
        return None
    text = content["text"]
    body = base64.b64decode(text) if content.get("encoding") == "base64" else text.encode()
    headers = _headers(
        [[h["name"], h["value"]] for h in response.get("headers") or []], where, keep_all=True
    )
    latency = float(elapsed) if isinstance(elapsed, int | float) and elapsed >= 0 else None
    return Recorded(int(response["status"]), headers, body, len(body), None, latency)


def _method(value: Any, where: str) -> str:
    from cutover.proxy._config import METHODS

    method = str(value).strip().upper()
    if method not in METHODS:
        raise InvalidInput(
            f"{where}: unknown method {value!r}; use one of {', '.join(sorted(METHODS))}"
        )
    return method


def _target(path: str, where: str) -> str:
    if not path.startswith("/"):
        raise InvalidInput(f"{where}: path {path!r} must start with /, like /api/v1/users/7")
    if any(c in path for c in " \r\n"):
        raise InvalidInput(f"{where}: path {path!r} holds spaces or line breaks; encode them")
    return path


def _headers(value: Any, where: str, *, keep_all: bool = False) -> Headers:
    """Headers as (name, value) byte pairs, from a mapping or a list of pairs; what was redacted
    and what describes a connection (``Host``, framing) is left out of a request."""
    pairs = value.items() if isinstance(value, Mapping) else value
    out: Headers = []
    try:
        for name, text in pairs:
            key = str(name).encode("latin-1")
            if not keep_all and (text == REDACTED or key.lower() in _NOT_SENT):
                continue
            out.append((key, str(text).encode("latin-1")))
    except (TypeError, ValueError, UnicodeEncodeError):
        raise InvalidInput(
            f"{where}: headers must be an object of names and values, or a list of"
            " [name, value] pairs, in Latin-1"
        ) from None
    return out


def _body(value: Any, where: str) -> tuple[bytes, bool]:
    """A recorded body ({"text"} or {"base64"}, or null) and whether it was kept."""
    if value is None:
        return b"", False
    if isinstance(value, Mapping) and isinstance(value.get("text"), str):
        return value["text"].encode(), True
    if isinstance(value, Mapping) and isinstance(value.get("base64"), str):
        try:
            return base64.b64decode(value["base64"], validate=True), True
        except ValueError:
            raise InvalidInput(f"{where}: a body's base64 is not valid") from None
    raise InvalidInput(f"{where}: a recorded body is {{'text': ...}} or {{'base64': ...}}")
