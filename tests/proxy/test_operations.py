"""The proxy as an operator runs it: streaming, limits, signals, workers, outages."""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from ..helpers import free_port
from .conftest import Proxy, Service, wait_until


def raw(proxy: Proxy, data: bytes) -> bytes:
    """Send ``data`` as is and read the answer until the proxy closes or stays quiet."""
    host, port = proxy.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(data)
        out = b""
        try:
            while chunk := sock.recv(65536):
                out += chunk
        except TimeoutError:
            pass
    return out


def test_answers_stream_to_the_client_as_they_come(
    legacy: Service, new: Service, start_proxy: Any
) -> None:
    proxy: Proxy = start_proxy(legacy.url, new.url)
    with proxy.client() as client, client.stream("GET", "/stream?n=5") as events:
        assert events.headers["content-type"].startswith("text/event-stream")
        started = time.monotonic()
        arrivals = [
            time.monotonic() - started for line in events.iter_lines() if line.startswith("data:")
        ]
        assert len(arrivals) == 5
    # Each event passes on as it is produced (200 ms apart), not when the answer ends.
    assert arrivals[0] < arrivals[-1] - 0.4
    total = 0
    with proxy.client() as client, client.stream("GET", "/big?mb=64") as big:
        for part in big.iter_bytes():
            total += len(part)
    assert total == 64 << 20


def test_malformed_and_oversize_requests_are_refused(
    legacy: Service, new: Service, start_proxy: Any
) -> None:
    proxy: Proxy = start_proxy(legacy.url, new.url, "--max-body", "1KiB")
    both = raw(
        proxy,
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    )
    assert both.startswith(b"HTTP/1.1 400 ") and b"application/problem+json" in both
    assert raw(proxy, b"NOT HTTP AT ALL\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    huge = b"GET /echo HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (70 << 10) + b"\r\n\r\n"
    assert raw(proxy, huge).startswith(b"HTTP/1.1 431 ")
    large = httpx.post(proxy.url + "/echo", content=b"x" * 2048)
    assert large.status_code == 413
    fine = httpx.post(proxy.url + "/echo", content=b"x" * 1000)
    assert fine.status_code == 200 and len(fine.json()["body"]) == 1000
    chunked = httpx.post(proxy.url + "/echo", content=iter([b"ab", b"cd"]))
    assert chunked.json()["body"] == "abcd"


def test_sigterm_lets_requests_in_flight_finish(
    legacy: Service, new: Service, start_proxy: Any
) -> None:
    proxy: Proxy = start_proxy(legacy.url, new.url)
    results: dict[str, Any] = {}

    def slow() -> None:
        results["slow"] = proxy.get("/slow?ms=1500")

    worker = threading.Thread(target=slow)
    worker.start()
    time.sleep(0.5)  # the request is in flight
    proxy.process.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    with pytest.raises(httpx.TransportError):
        httpx.get(proxy.url + "/users/1", timeout=2)  # no longer accepting
    worker.join(10)
    assert results["slow"].status_code == 200 and results["slow"].json() == {"slept": True}
    assert proxy.process.wait(10) == 0


def test_sighup_reloads_the_routes_and_keeps_them_on_a_mistake(
    legacy: Service, new: Service, start_proxy: Any, tmp_path: Path
) -> None:
    routes = tmp_path / "routes.yaml"
    routes.write_text("routes: []\n")
    proxy: Proxy = start_proxy(legacy.url, new.url, "--routes", str(routes))
    proxy.set(mode="new")
    with proxy.client() as client:  # one connection, kept open across the reloads
        assert client.get("/echo/old/x").status_code == 200
        routes.write_text("routes:\n  - {path: '/echo/old/{rest*}', gone: {}}\n")
        proxy.process.send_signal(signal.SIGHUP)
        wait_until(lambda: client.get("/echo/old/x").status_code == 410, "the reload")
        routes.write_text("routes:\n  - {path: no-slash}\n")
        proxy.process.send_signal(signal.SIGHUP)
        wait_until(lambda: "kept its routes" in proxy.log.read_text(), "the refusal")
        assert client.get("/echo/old/x").status_code == 410, "the routes in use stay"
    assert "routes.yaml, line 2: routes.0.path a route's path starts with /" in (
        proxy.log.read_text()
    )


def test_a_websocket_passes_through_to_the_serving_arm(
    legacy: Service, new: Service, start_proxy: Any
) -> None:
    from websockets.sync import client as websockets  # uvicorn[standard] brings it

    proxy: Proxy = start_proxy(legacy.url, new.url)
    proxy.set(mode="shadow", sample=1.0)  # upgrades are never copied
    with websockets.connect(proxy.url.replace("http", "ws") + "/ws") as socket_:
        socket_.send("hello")
        assert socket_.recv(timeout=5) == "legacy: hello"
        socket_.send("again")
        assert socket_.recv(timeout=5) == "legacy: again"


def test_workers_share_one_port(legacy: Service, new: Service, start_proxy: Any) -> None:
    proxy: Proxy = start_proxy(legacy.url, new.url, "--workers", "2")
    pids = set()
    deadline = time.monotonic() + 30
    while len(pids) < 2 and time.monotonic() < deadline:
        with proxy.client() as client:  # a new connection each time: any worker may take it
            pids.add(client.get("/-/cutover/health").json()["pid"])
    assert len(pids) == 2, "both workers answered"
    assert proxy.stop() == 0


def test_the_store_can_vanish_and_return(
    legacy: Service, new: Service, start_proxy: Any, pg_proxy: Any
) -> None:
    cut, store_url = pg_proxy
    proxy: Proxy = start_proxy(legacy.url, new.url, store=store_url)
    proxy.set(mode="canary", percent=100, sample=0.0)
    cut.cut()
    for _ in range(5):
        assert proxy.get("/echo").json()["arm"] == "new", "the last known state routes"
    cut.restore()
    stats = proxy.counted(lambda s: s["new"]["calls"] >= 5, "the counts once the store is back")
    assert stats["new"]["errors"] == 0


def test_bad_command_lines_are_one_sentence(tmp_path: Path) -> None:
    from ..helpers import cutover_cli

    port = free_port()
    cases = [
        (["--legacy", "ftp://x", "--new", "http://127.0.0.1:1"], "--legacy 'ftp://x' is not"),
        (["--legacy", "http://127.0.0.1:1", "--new", "http://x:y"], "port that is not a number"),
        (["--unit", "body:x"], "is not a unit source"),
        (["--listen", "nowhere"], "--listen 'nowhere' must be HOST:PORT"),
        (["--routes", str(tmp_path / "missing.yaml")], "cannot read the routes file"),
    ]
    base = ["--legacy", "http://127.0.0.1:1", "--new", "http://127.0.0.1:2"]
    for extra, message in cases:
        args = ["proxy", "api", "--listen", f"127.0.0.1:{port}", *base, *extra]
        done = cutover_cli("--store", f"sqlite:///{tmp_path / 's.db'}", *args)
        assert done.returncode == 2, (extra, done.stderr)
        assert message in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_recording_keeps_both_answers_and_no_secret(
    legacy: Service, new: Service, start_proxy: Any, tmp_path: Path
) -> None:
    folder = tmp_path / "recorded"
    proxy: Proxy = start_proxy(legacy.url, new.url, "--record", str(folder), "--record-sample", "1")
    proxy.set(mode="shadow", sample=1.0)
    with proxy.client() as client:
        client.get("/users/7?token=abc&page=2", headers={"Authorization": "Bearer s3cret"})
        client.get("/users/8")
    proxy.set(mode="legacy")
    proxy.get("/users/9")
    assert proxy.stop() == 0
    lines = [
        line
        for path in sorted(folder.glob("api-*.jsonl"))
        for line in path.read_text().splitlines()
    ]
    entries = [json.loads(line) for line in lines]
    text = "\n".join(lines)
    assert "s3cret" not in text and "abc" not in text
    by_path = {entry["request"]["path"]: entry for entry in entries}
    seven = by_path["/users/7"]
    assert seven["route"] == "*" and seven["served_by"] == "legacy"
    headers = {name.lower(): value for name, value in seven["request"]["headers"]}
    assert headers["authorization"] == "<redacted>"
    assert (
        "token=%3Credacted%3E" in seven["request"]["query"]
        and "page=2" in seven["request"]["query"]
    )
    assert json.loads(seven["legacy"]["body"]["text"])["total"] == 10.5
    assert json.loads(seven["new"]["body"]["text"])["total"] == 11
    assert seven["legacy"]["status"] == seven["new"]["status"] == 200
    nine = by_path["/users/9"]
    assert nine["new"] is None and nine["legacy"]["status"] == 200
