"""Reads from memory: a change made elsewhere reaches the API within the propagation bound, a
write through the API is read back at once, ETags change exactly with the body, 304s, and the
dashboard's series is answered again until its newest bucket turns."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from cutover import operations
from cutover.clock import FileClock
from cutover.model import Arm
from cutover.store import FlushBatch, open_store
from cutover.telemetry.histogram import index_of
from cutover.telemetry.windows import COUNTERS, ArmCounts, WindowDelta

from .conftest import Server

REFRESH_INTERVAL = 1.0
"""The runtime's default refresh interval: the bound without LISTEN/NOTIFY (SQLite)."""

ALLOWANCE = 4.0
"""Room for one reload of the states on a machine that other work shares."""


def get(server: Server, path: str, etag: str | None = None) -> httpx.Response:
    headers = {"If-None-Match": etag} if etag else {}
    with server.client("viewer") as client:
        return client.get(path, headers=headers)


def set_state(server: Server, version: int, **change: Any) -> httpx.Response:
    body = {"reason": "test", "expected_version": version, **change}
    with server.client("operator") as client:
        return client.post("/api/v1/migrations/pay/state", json=body)


def write_elsewhere(url: str, **change: Any) -> int:
    """Change the state on a store connection of this process (not the server's); its version."""
    store = open_store(url)
    try:
        decision = operations.set_state(
            store,
            "pay",
            operations.Change(**change),
            reason="elsewhere",
            actor="bob",
            clock=time.time,
        )
    finally:
        store.close()
    assert decision is not None
    return decision.new.version


def flush_elsewhere(url: str, *, start: int, calls: int) -> None:
    """An instance's flush of ``calls`` legacy calls to ``pay`` in the window at ``start``."""
    legacy = ArmCounts()
    legacy.counts[COUNTERS.index("calls")] = calls
    legacy.histogram.add(index_of(2_000_000), calls)
    delta = WindowDelta("pay", {Arm.LEGACY: legacy, Arm.NEW: ArmCounts()})
    store = open_store(url)
    try:
        assert store.write_flush(
            FlushBatch("elsewhere", 1, start, windows=[(start, delta)], run="r")
        )
    finally:
        store.close()


@pytest.fixture(params=["postgresql", "sqlite"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'cutover.db'}"
    return request.getfixturevalue("pg_url")


def test_a_change_made_elsewhere_reaches_the_api_within_the_bound(
    serve: Callable[..., Server], store_url: str
) -> None:
    server = serve(store_url)
    assert set_state(server, 0, mode="shadow").is_success
    for percent in (5.0, 25.0):
        version = write_elsewhere(store_url, mode="canary", percent=percent)
        written = time.monotonic()
        while (seen := get(server, "/api/v1/migrations/pay/state").json())["version"] != version:
            assert time.monotonic() - written < REFRESH_INTERVAL + ALLOWANCE, seen
            time.sleep(0.02)
        assert seen["mode"] == "canary" and seen["percent"] == percent


def test_a_write_through_the_api_is_read_back_at_once_with_a_new_etag(
    serve: Callable[..., Server], pg_url: str
) -> None:
    server = serve(pg_url)
    assert set_state(server, 0, mode="shadow").is_success
    first = get(server, "/api/v1/migrations/pay/state")
    etag = first.headers["etag"]
    assert get(server, "/api/v1/migrations/pay/state").headers["etag"] == etag
    unchanged = get(server, "/api/v1/migrations/pay/state", etag)
    assert unchanged.status_code == 304 and unchanged.content == b""
    assert unchanged.headers["etag"] == etag
    # Settings the state already has: no decision, no new version, the same ETag.
    assert set_state(server, 1, mode="shadow").json() == {"decision": None}
    assert get(server, "/api/v1/migrations/pay/state", etag).status_code == 304
    # A change: the very next read shows it, under another ETag.
    assert set_state(server, 1, mode="canary", percent=5.0).is_success
    changed = get(server, "/api/v1/migrations/pay/state", etag)
    assert changed.status_code == 200
    assert changed.json()["version"] == 2 and changed.json()["percent"] == 5.0
    assert changed.headers["etag"] != etag
    assert get(server, "/api/v1/migrations/pay/state", "*").status_code == 304


def test_the_list_shows_a_write_through_the_api_at_once(
    serve: Callable[..., Server], pg_url: str
) -> None:
    server = serve(pg_url)
    assert set_state(server, 0, mode="shadow").is_success
    listed = get(server, "/api/v1/migrations")
    assert get(server, "/api/v1/migrations", listed.headers["etag"]).status_code == 304
    assert set_state(server, 1, mode="new").is_success
    again = get(server, "/api/v1/migrations", listed.headers["etag"])
    assert again.status_code == 200
    assert [row["state"]["mode"] for row in again.json()["migrations"]] == ["new"]


def test_a_name_nothing_knows_is_404(serve: Callable[..., Server], pg_url: str) -> None:
    server = serve(pg_url)
    assert get(server, "/api/v1/migrations/nobody/state").status_code == 404


def test_a_live_series_is_answered_again_until_its_newest_bucket_is_a_poll_old(
    serve: Callable[..., Server], pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FileClock(tmp_path / "clock")
    clock.set(1_749_999_990.0)  # half a minute into a one-minute bucket
    monkeypatch.setenv("CUTOVER_CLOCK", f"file:{tmp_path / 'clock'}")
    server = serve(pg_url, "--refresh", "5s")
    assert set_state(server, 0, mode="shadow").is_success
    path = "/api/v1/migrations/pay/series?window=1h"
    first = get(server, path)
    assert first.status_code == 200 and first.json()["until"] == 1_749_999_990.0
    clock.advance(3)  # younger than a poll: the answer computed before
    polled = get(server, path)
    assert polled.json() == first.json() and polled.headers["etag"] == first.headers["etag"]
    assert get(server, path, first.headers["etag"]).status_code == 304
    clock.advance(3)  # a poll old: its newest bucket is computed again
    again = get(server, path, first.headers["etag"])
    assert again.status_code == 200 and again.json()["until"] == 1_749_999_996.0
    assert again.json()["points"] == first.json()["points"]
    # An instance flushes into the newest bucket: the next poll a refresh later shows it.
    flush_elsewhere(pg_url, start=1_749_999_960, calls=7)
    clock.advance(6)
    flushed = get(server, path).json()["points"]
    assert flushed[-1]["legacy"]["calls"] == 7 and flushed[:-1] == first.json()["points"][:-1]
    clock.advance(28)  # a new bucket: the span moves on by one
    turned = get(server, path).json()
    assert turned["until"] == 1_750_000_030.0 and len(turned["points"]) == 61
    assert turned["points"][:-1] == flushed[1:]
    assert turned["since"] == first.json()["since"] + 60
    assert get(server, "/api/v1/migrations/nobody/series").status_code == 404
