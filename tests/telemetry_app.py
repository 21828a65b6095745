"""An instance for the Prometheus telemetry tests: two migrations, one sound and one that
errs and drifts, counted into the store and exposed on /metrics.

Run as ``python -m tests.telemetry_app STORE_URL DIRECTORY CALLS``: it writes the port of its
/metrics endpoint to DIRECTORY/port-PID, writes DIRECTORY/ready-PID once both migrations are
in shadow, makes CALLS calls of each once DIRECTORY/go exists, flushes, writes
DIRECTORY/done-PID, and serves /metrics until it is stopped.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from prometheus_client import start_http_server

import cutover
from cutover import runtime as rt
from cutover.model import Mode


def flawed(x: int) -> int:
    if x % 5 == 0:
        raise ValueError("new fails on multiples of five")
    return x + 1 if x % 3 == 0 else x


def wait_for(condition: object, what: str) -> None:
    deadline = time.monotonic() + 30
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise SystemExit(f"gave up waiting for {what}")
        time.sleep(0.02)


def main() -> None:
    store, directory, calls = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    pid = os.getpid()
    cutover.configure(store, refresh_interval=0.1, flush_interval=0.5, wait=0)
    sound = cutover.Migration("tsound", legacy=lambda x: x, new=lambda x: x)
    broken = cutover.Migration("tbroken", legacy=lambda x: x, new=flawed)
    server, _ = start_http_server(0, addr="127.0.0.1")
    (directory / f"port-{pid}").write_text(str(server.server_port))
    runtime = rt.current()

    def shadowed() -> bool:
        states = runtime.states
        return all(
            name in states and states[name].mode is Mode.SHADOW for name in ("tsound", "tbroken")
        )

    wait_for(shadowed, "both migrations in shadow")
    (directory / f"ready-{pid}").write_text("")
    wait_for((directory / "go").exists, "the go file")
    for x in range(calls):
        sound(x)
        broken(x)
    cutover.flush()
    (directory / f"done-{pid}").write_text("")
    while True:
        time.sleep(1)


if __name__ == "__main__":
    main()
