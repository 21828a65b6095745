"""The one injectable clock: wall time in seconds since the epoch, real or simulated."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from cutover.errors import InvalidInput

Clock = Callable[[], float]
"""Anything that returns the current time as seconds since the epoch, like ``time.time``."""

system_clock: Clock = time.time

CLOCK_VARIABLE = "CUTOVER_CLOCK"


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


class FileClock:
    """A manual clock that several processes share: the time is the number written in a file.

    Every process given ``CUTOVER_CLOCK=file:PATH`` (a proxy, the controller, the CLI) reads
    the same simulated time, and whoever drives the simulation moves it with :meth:`advance`
    or :meth:`set`, which replace the file whole so a reader never sees half a number. The
    file is read on every call: meant for simulations and tests, not for production.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._last: float | None = None
        self._lock = threading.Lock()

    def __call__(self) -> float:
        try:
            now = float(self.path.read_bytes())
        except (OSError, ValueError) as error:
            if self._last is None:
                raise InvalidInput(
                    f"{CLOCK_VARIABLE} names {self.path}, which holds no time ({error}); write"
                    " the seconds since the epoch in it, e.g. `date +%s > clock`"
                ) from None
            return self._last  # being replaced right now: the time read last still holds
        if self._last is None or now > self._last:
            self._last = now
        return self._last

    def set(self, now: float) -> None:
        with self._lock:
            if self.path.exists() and now < self():
                raise ValueError("a clock only moves forward; give a later time")
            written = self.path.with_name(f".{self.path.name}.{os.getpid()}")
            written.write_text(f"{float(now)!r}\n")
            os.replace(written, self.path)

    def advance(self, seconds: float) -> float:
        if seconds < 0:
            raise ValueError("a clock only moves forward; give a positive number of seconds")
        now = self() + seconds
        self.set(now)
        return now


def configured_clock() -> Clock:
    """The clock ``$CUTOVER_CLOCK`` names: unset or ``system`` is the system clock,
    ``file:PATH`` a :class:`FileClock` shared through PATH."""
    spec = os.environ.get(CLOCK_VARIABLE, "").strip()
    if spec in ("", "system"):
        return system_clock
    kind, _, path = spec.partition(":")
    if kind == "file" and path:
        return FileClock(path)
    raise InvalidInput(
        f"{CLOCK_VARIABLE}={spec!r} is not a clock; write 'system', or 'file:PATH' for the"
        " seconds since the epoch written in PATH"
    )
