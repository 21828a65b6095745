"""Recording exchanges: a sampled share of requests with what each arm answered, as JSON Lines.

Each line is one request: the route, the unit, the request (method, target, headers, body), the
answer of legacy and of new where there is one (status, headers, body, latency), and which arm
served. Secret headers are redacted, as are query parameters whose names say they hold a
secret; bodies are kept up to the compared prefix (text as text, anything else in base64).
Files rotate by size, a few are kept, and writing happens on a thread of its own: the event
loop only queues a line, and a full queue drops it (counted).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import queue
import threading
import urllib.parse
from pathlib import Path
from typing import Any

from cutover.proxy._compare import Answer
from cutover.proxy._http import SECRET_HEADERS, Headers
from cutover.urls import is_secret

log = logging.getLogger("cutover.proxy")

_STOP = object()


class Recorder:
    """Writes recorded exchanges to ``folder/NAME-PID-N.jsonl``, rotating at ``max_bytes``."""

    def __init__(
        self,
        folder: Path,
        name: str,
        share: float,
        *,
        max_bytes: int = 64 << 20,
        keep: int = 10,
        capacity: int = 10_000,
    ) -> None:
        self.folder = folder
        self.name = name
        self.share = share
        self.max_bytes = max_bytes
        self.keep = keep
        self.dropped = 0
        self.written = 0
        self._queue: queue.Queue[Any] = queue.Queue(capacity)
        self._number = 0
        self._file: Any = None
        self._size = 0
        folder.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._write, name="cutover-record", daemon=True)
        self._thread.start()

    def add(self, entry: dict[str, Any]) -> None:
        """Queue one exchange; never blocks (a full queue drops it, counted)."""
        try:
            self._queue.put_nowait(entry)
        except queue.Full:
            self.dropped += 1

    def close(self, timeout: float = 5.0) -> None:
        try:
            self._queue.put(_STOP, timeout=timeout)
        except queue.Full:
            return
        self._thread.join(timeout)

    def _write(self) -> None:
        while True:
            entry = self._queue.get()
            if entry is _STOP:
                break
            try:
                line = (json.dumps(entry, separators=(",", ":")) + "\n").encode()
                if self._file is None or self._size + len(line) > self.max_bytes:
                    self._rotate()
                self._file.write(line)
                self._file.flush()
                self._size += len(line)
                self.written += 1
            except (OSError, TypeError, ValueError) as error:
                self.dropped += 1
                log.warning("cutover proxy cannot record an exchange: %s", error)
        if self._file is not None:
            self._file.close()

    def _rotate(self) -> None:
        if self._file is not None:
            self._file.close()
        self._number += 1
        path = self.folder / f"{self.name}-{os.getpid()}-{self._number:06d}.jsonl"
        self._file = path.open("ab")
        self._size = path.stat().st_size
        mine = sorted(self.folder.glob(f"{self.name}-{os.getpid()}-*.jsonl"))
        for old in mine[: max(0, len(mine) - self.keep)]:
            old.unlink(missing_ok=True)


def request_entry(
    method: bytes, target: bytes, headers: Headers, body: list[bytes], kept: bool
) -> dict[str, Any]:
    data = b"".join(body)
    path, _, query = target.decode("latin-1").partition("?")
    return {
        "method": method.decode(),
        "path": path,
        "query": _redacted_query(query),
        "headers": _redacted_headers(headers),
        "body": _body(data) if kept else None,
        "body_bytes": len(data),
    }


def answer_entry(answer: Answer | None, latency_ns: int) -> dict[str, Any] | None:
    if answer is None:
        return None
    return {
        "status": answer.status,
        "headers": _redacted_headers(answer.headers),
        "body": _body(bytes(answer.prefix)),
        "body_bytes": answer.length,
        "sha256": answer.digest,
        "latency_ms": round(latency_ns / 1e6, 3),
    }


def failure_entry(error: BaseException, latency_ns: int) -> dict[str, Any]:
    return {"error": str(error), "latency_ms": round(latency_ns / 1e6, 3)}


def _redacted_headers(headers: Headers) -> list[list[str]]:
    return [
        [
            name.decode("latin-1"),
            "<redacted>" if name.lower() in SECRET_HEADERS else value.decode("latin-1"),
        ]
        for name, value in headers
    ]


def _redacted_query(query: str) -> str:
    if not query:
        return ""
    pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
    return urllib.parse.urlencode(
        [(key, "<redacted>" if is_secret(key) else value) for key, value in pairs]
    )


def _body(data: bytes) -> Any:
    if not data:
        return None
    try:
        return {"text": data.decode()}
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(data).decode()}
