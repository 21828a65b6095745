"""Code that test processes run (importable, so multiprocessing can spawn it)."""

from __future__ import annotations

import os
import time
from multiprocessing.queues import Queue
from typing import Any


def serve_until_new(
    url: str, name: str, ready: Queue[Any], results: Queue[Any], refresh_interval: float
) -> None:
    """An app process: serve calls until the migration switches to new, report when, flush."""
    import cutover

    runtime = cutover.configure(url, refresh_interval=refresh_interval, flush_interval=0.5, wait=5)
    switch = cutover.Migration(name, lambda: "legacy", lambda: "new")
    deadline = time.time() + 20
    while runtime.store.notifies and not runtime.health().listening and time.time() < deadline:
        time.sleep(0.01)
    ready.put(os.getpid())
    calls = 0
    seen = None
    while time.time() < deadline:
        calls += 1
        if switch() == "new":
            seen = time.time()
            break
        time.sleep(0.001)
    assert cutover.flush(timeout=5)
    results.put((os.getpid(), seen, calls))


def hammer_sqlite(url: str, name: str, calls: int, results: Queue[Any]) -> None:
    """One of several processes on one SQLite file: calls, frequent flushes, relative sets."""
    import cutover
    from cutover import operations
    from cutover.errors import CutoverError

    runtime = cutover.configure(url, refresh_interval=0.05, flush_interval=0.05, wait=5)
    counted = cutover.Migration(name, abs, abs, unit=str)
    errors = []
    for i in range(calls):
        counted(-i)
        if i % 200 == 0:
            try:
                operations.set_state(
                    runtime.store,
                    name,
                    operations.Change(percent_delta=1),
                    reason="load",
                    actor=f"pid-{os.getpid()}",
                    clock=time.time,
                )
            except CutoverError as error:
                errors.append(str(error))
    flushed = cutover.flush(timeout=10)
    results.put((os.getpid(), flushed, errors))
