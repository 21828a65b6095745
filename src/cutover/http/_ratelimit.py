"""Token buckets per client: how many OFREP evaluations one caller of `cutover serve` may ask for.

Each client (a token's name, or an address when no token is needed) has a bucket that holds up
to ``burst`` requests and refills at ``per_second``. A request spends one; an empty bucket says
how long until the next one is there, which becomes the 429's ``Retry-After``.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from cutover.errors import InvalidInput

_RATE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(?::\s*([0-9]+)\s*)?$")

MAX_CLIENTS = 10_000
"""Buckets kept at most; past that the least recently seen client's is dropped."""


@dataclass(frozen=True, slots=True)
class Rate:
    """A sustained rate in requests per second and the burst a client may spend at once."""

    per_second: float
    burst: int

    def __post_init__(self) -> None:
        if not self.per_second > 0 or not math.isfinite(self.per_second):
            raise InvalidInput(f"a rate must be above 0 requests per second, not {self.per_second}")
        if self.burst < 1:
            raise InvalidInput(f"a burst must be at least 1 request, not {self.burst}")

    @classmethod
    def parse(cls, text: str, where: str) -> Rate | None:
        """``RATE`` or ``RATE:BURST`` (requests per second, requests); ``off`` is no limit.
        The burst defaults to one second's worth, and at least one request."""
        if text.strip().lower() in ("", "off"):
            return None
        match = _RATE.match(text)
        per_second = float(match.group(1)) if match else 0.0
        if match is None or per_second == 0:
            raise InvalidInput(
                f"{where} {text!r} must be requests per second above 0, optionally with :burst,"
                " like 50 or 50:200 (or off for no limit)"
            )
        burst = int(match.group(2)) if match.group(2) else max(1, math.ceil(per_second))
        if burst < 1:
            raise InvalidInput(f"{where} {text!r}: the burst must be at least 1 request")
        return cls(per_second, burst)

    def __str__(self) -> str:
        return f"{self.per_second:g}/s in bursts of {self.burst}"


@dataclass(slots=True)
class _Bucket:
    tokens: float  # requests it holds now
    at: float  # when ``tokens`` was last brought up to date


class RateLimiter:
    """A token bucket per client, thread safe, O(1) per request. Buckets are kept in the order
    their clients were last seen; one idle long enough to be full again is dropped (it would be
    made anew just as it was), and past ``max_clients`` the least recently seen is dropped."""

    def __init__(
        self,
        rate: Rate,
        *,
        now: Callable[[], float] = time.monotonic,
        max_clients: int = MAX_CLIENTS,
    ) -> None:
        self.rate = rate
        self._now = now
        self._max = max_clients
        self._refill = rate.burst / rate.per_second  # seconds an empty bucket takes to fill
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, client: str) -> float:
        """Spend one request of ``client``'s bucket: 0 when it may pass, else the seconds until
        the bucket holds one again (a refused request spends nothing)."""
        with self._lock:
            now = self._now()
            bucket = self._buckets.get(client)
            if bucket is None:
                bucket = self._buckets[client] = _Bucket(float(self.rate.burst), now)
            else:
                self._buckets.move_to_end(client)
                elapsed = max(0.0, now - bucket.at)
                bucket.tokens = min(self.rate.burst, bucket.tokens + elapsed * self.rate.per_second)
                bucket.at = now
            self._evict(now)
            if bucket.tokens >= 1:
                bucket.tokens -= 1
                return 0.0
            return (1 - bucket.tokens) / self.rate.per_second

    def _evict(self, now: float) -> None:
        # Amortised O(1): each bucket is dropped at most once for each time it was made.
        buckets = self._buckets
        while len(buckets) > 1:
            oldest = next(iter(buckets.values()))
            if len(buckets) <= self._max and now - oldest.at < self._refill:
                return
            buckets.popitem(last=False)


def retry_after(wait: float) -> str:
    """``Retry-After`` in whole seconds: never before the bucket holds a request again."""
    return str(max(1, math.ceil(wait)))
