"""Noise: fields that differ between two runs of legacy itself, so their drift means nothing.

A random id, a timestamp, a hostname: two legacy instances answering the same request disagree
on them, and so will new. With a second legacy instance beside the primary, cutover counts, per
route and per field (a difference's shape), how often primary and new differ (``raw``) and how
often primary and secondary differ (``noise``) over the route's compared requests. A field is
drift only where the raw differences exceed the noise by both thresholds (Diffy's method):

    (raw - noise) / raw       > relative   (default 0.20)
    (raw - noise) / requests  > absolute   (default 0.0003, i.e. 0.03% of the route's requests)

Fields can also be declared noise by path prefix (``$.body.meta``), with or without a second
legacy instance.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

RELATIVE = 0.20
ABSOLUTE = 0.0003


@dataclass(frozen=True, slots=True)
class NoiseCount:
    """What one route's comparisons say of one field."""

    route: str
    path: str  # a difference's shape: indices as [*], with its note
    raw: int  # requests where primary and new differed here
    noise: int  # requests where primary and secondary differed here
    requests: int  # requests of the route compared with a secondary answer

    def is_noise(self, relative: float = RELATIVE, absolute: float = ABSOLUTE) -> bool:
        """True when the field's raw differences do not exceed its noise by both thresholds."""
        excess = self.raw - self.noise
        if self.raw <= 0 or self.requests <= 0:
            return self.noise > 0
        return not (excess / self.raw > relative and excess / self.requests > absolute)

    def to_json(self) -> dict[str, object]:
        return {
            "route": self.route,
            "path": self.path,
            "raw": self.raw,
            "noise": self.noise,
            "requests": self.requests,
            "is_noise": self.is_noise(),
        }


class NoiseModel:
    """Per-route counts of raw and noise differences, learned as answers come (thread-safe)."""

    def __init__(self, relative: float = RELATIVE, absolute: float = ABSOLUTE) -> None:
        self.relative = relative
        self.absolute = absolute
        self._lock = threading.Lock()
        self._requests: Counter[str] = Counter()
        self._raw: Counter[tuple[str, str]] = Counter()
        self._noise: Counter[tuple[str, str]] = Counter()

    def learn(self, route: str, raw: Iterable[str], noise: Iterable[str]) -> None:
        """One request of ``route`` compared three ways: the shapes where primary and new
        differed, and those where primary and secondary differed."""
        with self._lock:
            self._requests[route] += 1
            for path in set(raw):
                self._raw[(route, path)] += 1
            for path in set(noise):
                self._noise[(route, path)] += 1

    def count(self, route: str, path: str) -> NoiseCount:
        with self._lock:
            return NoiseCount(
                route,
                path,
                self._raw[(route, path)],
                self._noise[(route, path)],
                self._requests[route],
            )

    def is_noise(self, route: str, path: str) -> bool:
        return self.count(route, path).is_noise(self.relative, self.absolute)

    def counts(self) -> list[NoiseCount]:
        """Every field seen to differ, raw or noise, per route."""
        with self._lock:
            keys = set(self._raw) | set(self._noise)
            return [
                NoiseCount(r, p, self._raw[(r, p)], self._noise[(r, p)], self._requests[r])
                for r, p in sorted(keys)
            ]


def declared_noise(path: str, prefixes: Iterable[str]) -> bool:
    """Whether ``path`` lies under one of the declared ``prefixes`` (``$.body.meta`` covers
    ``$.body.meta``, ``$.body.meta.id`` and ``$.body.meta[3]``, not ``$.body.metadata``)."""
    for prefix in prefixes:
        if path == prefix or path.startswith((prefix + ".", prefix + "[")):
            return True
    return False
