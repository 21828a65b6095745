"""What the proxy compares of two answers: the status, chosen headers and the body.

An :class:`Answer` is what one arm answered, captured while it streamed: the status, the
headers, the first ``limit`` bytes of the body and a digest of all of it. Two answers are
compared as a value ``{"status", "headers", "body"}``:

- a different status is the one difference reported, with both codes in the note, so "new
  answers 401 where legacy answers 200" is a drift group of its own, whatever the bodies;
- headers: only those the route names (``content-type`` by default); secret ones by digest;
- a JSON body structurally, with the route's ignore paths, tolerances, unordered arrays and
  renames (paths start at ``$.body``); any other body by its bytes, shown as text when it is.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from cutover.compare import Diff, Difference, structural
from cutover.compare._structural import Structural
from cutover.proxy._config import CompareOptions
from cutover.proxy._http import SECRET_HEADERS, Headers

SHOWN_BYTES = 2048
"""Of a body that is not JSON, how much a drift sample shows."""


@dataclass(slots=True)
class Answer:
    """One arm's answer to one request, captured as it streamed past."""

    status: int = 0
    headers: Headers = field(default_factory=list)
    limit: int = 1 << 20
    prefix: bytearray = field(default_factory=bytearray)
    length: int = 0
    # Started only once the body outgrows ``prefix``: most answers are small, and a digest of
    # what ``prefix`` holds whole can be taken when asked for.
    _digest: Any = None

    def add(self, data: bytes) -> None:
        self.length += len(data)
        if self._digest is not None:
            self._digest.update(data)
            return
        room = self.limit - len(self.prefix)
        if len(data) <= room:
            self.prefix += data
            return
        self.prefix += data[:room]
        self._digest = hashlib.sha256(self.prefix)
        self._digest.update(data[room:])

    @property
    def complete(self) -> bool:
        """The whole body is in ``prefix``."""
        return self.length == len(self.prefix)

    @property
    def digest(self) -> str:
        if self._digest is None:
            return hashlib.sha256(self.prefix).hexdigest()
        return self._digest.hexdigest()

    def same_as(self, other: Answer, options: CompareOptions) -> bool:
        """Whether ``other`` is this answer byte for byte, in what is compared: the status,
        the route's headers and the whole body. Then the two match whatever the comparison's
        options (but a rename, which says new's names differ), and nothing needs parsing."""
        if options.rename or self.status != other.status or self.length != other.length:
            return False
        if self.complete and other.complete:
            if self.prefix != other.prefix:
                return False
        elif self.prefix != other.prefix or self.digest != other.digest:
            return False
        return self._compared_headers(options) == other._compared_headers(options)

    def _compared_headers(self, options: CompareOptions) -> list[tuple[bytes, bytes]]:
        wanted = options.headers
        return [(n.lower(), v) for n, v in self.headers if n.lower().decode("latin-1") in wanted]

    def value(self, options: CompareOptions) -> dict[str, Any]:
        """What is compared, and what a drift sample keeps (no secret header in clear)."""
        wanted = set(options.headers)
        headers: dict[str, str] = {}
        for name, raw in self.headers:
            key = name.decode("latin-1").lower()
            if key in wanted:
                text = raw.decode("latin-1")
                if name.lower() in SECRET_HEADERS:
                    text = "sha256:" + hashlib.sha256(raw).hexdigest()[:16]
                headers[key] = text if key not in headers else f"{headers[key]}, {text}"
        return {"status": self.status, "headers": headers, "body": self._body()}

    def _body(self) -> Any:
        if not self.length:
            return None
        if self.complete and _is_json(self.headers):
            try:
                return {"json": json.loads(self.prefix)}
            except ValueError:  # says JSON, is not: compared by its bytes
                pass
        shown = bytes(self.prefix[:SHOWN_BYTES])
        try:
            text: str | None = shown.decode()
        except UnicodeDecodeError:
            text = None
        return {
            "length": self.length,
            "sha256": self.digest,
            "text" if text is not None else "hex": text if text is not None else shown.hex(),
        }


class Capture:
    """The half of an upstream Receiver that captures the answer into ``self.answer``; the
    class that mixes it in says what ``done`` and ``failed`` mean."""

    __slots__ = ()
    answer: Answer

    def head(self, status: int, reason: bytes, headers: Headers, keep_alive: bool) -> None:
        self.answer.status = status
        self.answer.headers = headers

    def body(self, data: bytes) -> None:
        self.answer.add(data)

    def flush(self) -> None:
        """Nothing is held back: the answer is captured, not passed on."""


def _is_json(headers: Headers) -> bool:
    for name, value in headers:
        if name.lower() == b"content-type":
            kind = value.split(b";", 1)[0].strip().lower()
            return kind == b"application/json" or kind.endswith(b"+json")
    return False


class AnswerComparator:
    """Compares two :meth:`Answer.value` dicts as the module describes."""

    def __init__(self, options: CompareOptions) -> None:
        body_paths = tuple(path.replace("$.body", "$.body.json", 1) for path in options.ignore)
        self._json: Structural = structural(
            ignore=body_paths,
            rel=options.rel,
            abs=options.abs,
            unordered=tuple(p.replace("$.body", "$.body.json", 1) for p in options.unordered),
            rename=dict(options.rename),
        )

    def __call__(self, legacy: dict[str, Any], new: dict[str, Any]) -> Diff:
        if legacy["status"] != new["status"]:
            note = f"legacy {legacy['status']}, new {new['status']}"
            return Diff((Difference("$.status", legacy["status"], new["status"], note),))
        found = self._json(
            {"headers": legacy["headers"], "body": legacy["body"]},
            {"headers": new["headers"], "body": new["body"]},
        )
        if isinstance(found, Diff):
            return Diff(
                tuple(_plain_body(d) for d in found.differences), found.truncated, found.meta
            )
        return Diff() if found else Diff((Difference("$", legacy, new),))


def _plain_body(difference: Difference) -> Difference:
    """Paths as users write them: ``$.body.json.total`` reads ``$.body.total``."""
    path = difference.path.replace("$.body.json", "$.body", 1)
    if path.startswith(("$.body.sha256", "$.body.length", "$.body.text", "$.body.hex")):
        path = "$.body"  # bodies that are not JSON differ as a whole
    return Difference(path, difference.legacy, difference.new, difference.note)
