"""The optional JSON Lines event log (``CUTOVER_EVENTS=path``): one line per comparison."""

from __future__ import annotations

import collections
import json
import logging
import os
import threading
from typing import Any

log = logging.getLogger("cutover")


def _describe(value: Any) -> str:
    try:
        return repr(value)
    except Exception:  # noqa: BLE001 - a broken __repr__ still gets a description
        return object.__repr__(value)


class EventLog:
    """Events are queued in memory by whoever produces them and written by the flusher thread,
    so no file I/O ever happens on the caller's path. Past ``capacity`` the oldest are dropped."""

    def __init__(self, path: str | os.PathLike[str], capacity: int = 100_000) -> None:
        self.path = os.fspath(path)
        self._queue: collections.deque[dict[str, Any]] = collections.deque(maxlen=capacity)
        self._lock = threading.Lock()
        self.dropped = 0
        self._failed = False

    def emit(self, event: dict[str, Any]) -> None:
        if len(self._queue) == self._queue.maxlen:
            self.dropped += 1
        self._queue.append(event)

    def drain(self) -> int:
        """Write what is queued; returns the number of lines written. Never raises."""
        with self._lock:
            lines = []
            while self._queue:
                event = self._queue.popleft()
                try:
                    lines.append(json.dumps(event, default=_describe, ensure_ascii=False))
                except (TypeError, ValueError):
                    self.dropped += 1  # an event that cannot be written is counted, not fatal
            if not lines:
                return 0
            try:
                with open(self.path, "a", encoding="utf-8", errors="backslashreplace") as handle:
                    handle.write("\n".join(lines) + "\n")
            except OSError as error:
                if not self._failed:
                    log.error("cutover cannot write its event log %s: %s", self.path, error)
                self._failed = True
                self.dropped += len(lines)
                return 0
            self._failed = False
            return len(lines)

    def after_fork_in_child(self) -> None:
        self._lock = threading.Lock()
        self._queue.clear()
