"""Real processes for the proxy's tests: a uvicorn legacy, a Node new, and `cutover proxy`."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from cutover.model import State
from cutover.store import open_store

from ..conftest import need
from ..helpers import cutover_cli, free_port

HERE = Path(__file__).resolve().parent


def wait_until(check: Callable[[], bool], what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def answers(url: str) -> bool:
    try:
        httpx.get(url, timeout=2)
        return True
    except httpx.TransportError:
        return False


@dataclass
class Service:
    """A running upstream: its URL and process."""

    url: str
    process: subprocess.Popen[bytes]
    port: int

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_legacy(port: int | None = None) -> Service:
    port = port or free_port()
    process = subprocess.Popen(
        [sys.executable, str(HERE / "legacy_app.py")],
        env={**os.environ, "PORT": str(port)},
        cwd=HERE,
    )
    service = Service(f"http://127.0.0.1:{port}", process, port)
    wait_until(lambda: answers(service.url + "/pid"), "the legacy service")
    return service


def start_new(port: int | None = None) -> Service:
    node = shutil.which("node")
    need(None if node else "Node.js is not installed (apt-get install nodejs)")
    assert node is not None
    port = port or free_port()
    process = subprocess.Popen(
        [node, str(HERE / "new_service.js"), str(port)], stdout=subprocess.DEVNULL
    )
    service = Service(f"http://127.0.0.1:{port}", process, port)
    wait_until(lambda: answers(service.url + "/pid"), "the new service")
    return service


@pytest.fixture(scope="module")
def legacy() -> Iterator[Service]:
    service = start_legacy()
    yield service
    service.stop()


@pytest.fixture(scope="module")
def new() -> Iterator[Service]:
    service = start_new()
    yield service
    service.stop()


@dataclass
class Proxy:
    """A running `cutover proxy`, the store it routes by, and how to change its state."""

    url: str
    store_url: str
    name: str
    process: subprocess.Popen[bytes]
    log: Path
    version: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def client(self, **options: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **options)

    def get(self, path: str, **options: Any) -> httpx.Response:
        with self.client() as client:
            return client.get(path, **options)

    def set(self, name: str | None = None, **fields: Any) -> None:
        """Store a new state and wait until the proxy routes by it."""
        name = name or self.name
        store = open_store(self.store_url)
        try:
            current = store.state(name)
            state = (current or State()).evolve(**fields)
            written = store.write_state(
                name,
                state,
                expected_version=current.version if current else 0,
                actor="tests",
                reason="test",
                at=time.time(),
            )
        finally:
            store.close()
        version = written.new.version
        wait_until(
            lambda: self.health()["migrations"].get(name, {}).get("version") == version,
            f"the proxy to route {name} by version {version}",
        )

    def health(self) -> dict[str, Any]:
        return self.get("/-/cutover/health").json()

    def stats(self, name: str | None = None) -> dict[str, Any]:
        """What the store holds for the migration (the proxy flushes every 200 ms here)."""
        shown = cutover_cli("--store", self.store_url, "stats", name or self.name, "--json")
        assert shown.returncode == 0, shown.stderr
        return json.loads(shown.stdout)

    def counted(self, check: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
        """Wait until the stored stats satisfy ``check``; they arrive a flush after the calls."""
        found: dict[str, Any] = {}

        def ready() -> bool:
            nonlocal found
            found = self.stats()
            return check(found)

        wait_until(ready, what)
        return found

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                return self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                return self.process.wait()
        return self.process.returncode


@pytest.fixture
def start_proxy(tmp_path: Path) -> Iterator[Callable[..., Proxy]]:
    """``start_proxy(legacy_url, new_url, *flags, name="api")``: a proxy stopped afterwards."""
    started: list[Proxy] = []

    def start(
        legacy_url: str, new_url: str, *flags: str, name: str = "api", store: str | None = None
    ) -> Proxy:
        port = free_port()
        store_url = store or f"sqlite:///{tmp_path / f'store{len(started)}.db'}"
        log = tmp_path / f"proxy{len(started)}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "cutover",
                    "--store",
                    store_url,
                    "proxy",
                    name,
                    "--listen",
                    f"127.0.0.1:{port}",
                    "--legacy",
                    legacy_url,
                    "--new",
                    new_url,
                    "--flush-interval",
                    "200ms",
                    *flags,
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        proxy = Proxy(f"http://127.0.0.1:{port}", store_url, name, process, log)
        started.append(proxy)

        def up() -> bool:
            assert process.poll() is None, log.read_text()
            return answers(proxy.url + "/-/cutover/health")

        wait_until(up, "the proxy")
        return proxy

    yield start
    for proxy in started:
        proxy.stop()
