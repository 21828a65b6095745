"""The one injectable clock: wall time in seconds since the epoch, real or simulated."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

Clock = Callable[[], float]
"""Anything that returns the current time as seconds since the epoch, like ``time.time``."""

system_clock: Clock = time.time


class ManualClock:
    """A clock that moves only when told to, so a 14-day hold runs in a test in a second."""

    def __init__(self, start: float = 1_750_000_000.0) -> None:
        self._now = float(start)
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self._now

    def advance(self, seconds: float) -> float:
        if seconds < 0:
            raise ValueError("a clock only moves forward; give a positive number of seconds")
        with self._lock:
            self._now += seconds
            return self._now

    def set(self, now: float) -> None:
        with self._lock:
            if now < self._now:
                raise ValueError("a clock only moves forward; give a later time")
            self._now = float(now)
