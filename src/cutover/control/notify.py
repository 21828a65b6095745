"""Webhook notifications of decisions: JSON POSTs, retried a few times, never blocking the loop."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from cutover.control.plan import Webhook

log = logging.getLogger("cutover.notify")

ATTEMPTS = 4
BACKOFF = 0.5  # seconds before the second attempt, doubling after each failure


class Notifier:
    """Delivers notifications on a thread of its own: :meth:`send` only queues, so a slow or
    dead receiver never delays a decision. A full queue drops the notification and logs it."""

    def __init__(
        self,
        *,
        timeout: float = 5.0,
        attempts: int = ATTEMPTS,
        backoff: float = BACKOFF,
        queue_size: int = 1000,
    ) -> None:
        self._timeout = timeout
        self._attempts = attempts
        self._backoff = backoff
        self._queue: queue.Queue[tuple[Webhook, dict[str, Any]] | None] = queue.Queue(queue_size)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.delivered = 0
        self.failed = 0
        self.dropped = 0

    def send(self, hooks: Sequence[Webhook], payload: Mapping[str, Any]) -> None:
        event = str(payload.get("event", ""))
        for hook in hooks:
            if hook.events is not None and event not in hook.events:
                continue
            self._start()
            try:
                self._queue.put_nowait((hook, dict(payload)))
            except queue.Full:
                self.dropped += 1
                log.warning(
                    "cutover dropped a %s notification to %s: queue full", event, hook.webhook
                )

    def close(self, timeout: float = 10.0) -> bool:
        """Deliver what is queued, waiting at most ``timeout`` seconds; True when all went."""
        thread = self._thread
        if thread is None or not thread.is_alive():
            return True
        deadline = time.monotonic() + timeout
        try:  # behind everything already queued: the thread delivers it all, then ends
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            return False
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            return False
        self._thread = None
        return True

    def _start(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._deliver_all, name="cutover-notify", daemon=True
                )
                self._thread.start()

    def _deliver_all(self) -> None:
        import httpx

        with httpx.Client(timeout=self._timeout) as client:
            while True:
                item = self._queue.get()
                try:
                    if item is None:
                        return
                    hook, payload = item
                    try:
                        delivered = self._deliver(client, hook, payload)
                    except Exception as error:  # noqa: BLE001 - one bad payload or header must not end the thread
                        log.warning(
                            "cutover could not send the %s notification to %s: %s",
                            payload.get("event"),
                            hook.webhook,
                            error,
                        )
                        delivered = False
                    if delivered:
                        self.delivered += 1
                    else:
                        self.failed += 1
                finally:
                    self._queue.task_done()

    def _deliver(self, client: Any, hook: Webhook, payload: dict[str, Any]) -> bool:
        import httpx

        pause = self._backoff
        problem = ""
        for attempt in range(self._attempts):
            if attempt:
                time.sleep(pause)
                pause *= 2
            try:
                response = client.post(
                    hook.webhook,
                    json=payload,
                    headers={"User-Agent": "cutover", **hook.headers},
                )
            except httpx.HTTPError as error:
                problem = f"{type(error).__name__}: {error}"
                continue
            if response.is_success:
                return True
            problem = f"HTTP {response.status_code}"
            if response.status_code < 500 and response.status_code not in (408, 429):
                break  # the receiver refuses this payload: sending it again changes nothing
        log.warning(
            "cutover could not deliver the %s notification to %s (%s)",
            payload.get("event"),
            hook.webhook,
            problem,
        )
        return False
