"""Small helpers the tests share: set a state as an operator would, read what the store counted,
run the real command line."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from cutover import operations
from cutover.model import State
from cutover.runtime import Runtime
from cutover.stats import MigrationStats


def put(runtime: Runtime, name: str, **fields: Any) -> State:
    """Store a state for ``name`` by compare-and-set and make the runtime pick it up now."""
    current = runtime.store.state(name)
    state = (current or State()).evolve(**fields)
    decision = runtime.store.write_state(
        name,
        state,
        expected_version=current.version if current else 0,
        actor="tests",
        reason="test setup",
        at=runtime.clock(),
    )
    runtime.refresh()
    return decision.new


def stored(runtime: Runtime, name: str) -> MigrationStats:
    """Flush (draining off-path work) and report everything the store holds for ``name``."""
    assert runtime.flush(drain_timeout=10), "flush must reach the store"
    now = runtime.clock()
    return operations.stats(runtime.store, name, 10 * 365 * 86400, now + 3600)


def quiet(url: str, **options: Any) -> Runtime:
    """cutover configured on ``url`` with background refresh and flush effectively off: tests
    refresh and flush when they mean to (``options`` override)."""
    import cutover

    settings = {"flush_interval": 3600, "refresh_interval": 3600, "wait": 0, **options}
    return cutover.configure(url, **settings)


def waits_for(gate: threading.Event) -> Callable[[Any], Any]:
    """A new arm that hangs until ``gate`` is set (ten seconds at most), then echoes its input."""

    def new(x: Any) -> Any:
        gate.wait(10)
        return x

    return new


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def eventually(condition: Callable[[], Any], seconds: float = 10.0) -> bool:
    """Poll ``condition`` until it holds or ``seconds`` pass; whether it held. For waiting on
    background threads, never for asserting how fast they are."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.005)
    return bool(condition())


def cutover_cli(
    *args: str,
    env: Mapping[str, str | None] | None = None,
    cwd: Path | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """The real ``cutover`` command in a process of its own, as an operator runs it (actor
    ``ops@test``); ``env`` sets variables, or removes those given as None."""
    environment = {**os.environ, "CUTOVER_ACTOR": "ops@test"}
    for key, value in (env or {}).items():
        if value is None:
            environment.pop(key, None)
        else:
            environment[key] = value
    return subprocess.run(
        [sys.executable, "-m", "cutover", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=cwd,
        env=environment,
    )
