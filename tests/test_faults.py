"""The store goes away and comes back: callers never notice, and every call is counted once."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import pytest

import cutover
from cutover import operations
from cutover.errors import StoreError
from cutover.store import open_store

from .helpers import put, quiet, stored
from .tcpproxy import TcpProxy


def wait_for(condition: Any, seconds: float = 10.0) -> bool:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return bool(condition())


def test_an_unreachable_store_at_start_serves_defaults_without_blocking(
    pg_proxy: tuple[TcpProxy, str], pg_url: str
) -> None:
    proxy, through = pg_proxy
    proxy.cut()
    started = time.perf_counter()
    runtime = cutover.configure(through, refresh_interval=0.1, flush_interval=0.1, wait=1.0)
    assert time.perf_counter() - started < 2.0
    codec = cutover.Migration("codec", lambda: "legacy", lambda: "new", default="shadow")
    assert codec() == "legacy" and codec.mode is cutover.Mode.SHADOW
    assert runtime.health().reachable is False
    operations.set_state(
        open_store(pg_url),
        "codec",
        operations.Change(mode=cutover.Mode.NEW),
        reason="store is fine, the app's link is not",
        actor="t",
        clock=time.time,
    )
    proxy.restore()
    assert wait_for(lambda: codec() == "new")
    assert runtime.health().reachable is True


def test_a_store_lost_mid_traffic_costs_no_call_and_loses_no_count(
    pg_proxy: tuple[TcpProxy, str], pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    proxy, through = pg_proxy
    caplog.set_level(logging.WARNING, logger="cutover")
    runtime = cutover.configure(through, refresh_interval=0.1, flush_interval=0.1, wait=5)
    codec = cutover.Migration("codec", lambda u: "legacy", lambda u: "new", unit=lambda u: u)
    put(runtime, "codec", mode="canary", percent=50, sample=0)
    served = {"legacy": 0, "new": 0}
    failures: list[BaseException] = []
    stop = threading.Event()

    def traffic() -> None:
        number = 0
        while not stop.is_set():
            number += 1
            try:
                served[codec(f"user-{number}")] += 1
            except Exception as error:
                failures.append(error)
            time.sleep(0.0005)

    worker = threading.Thread(target=traffic)
    worker.start()
    time.sleep(1.0)
    proxy.cut()
    assert wait_for(lambda: runtime.health().reachable is False, 5)
    time.sleep(2.0)  # traffic goes on while the store is away
    during = dict(served)
    proxy.restore()
    assert wait_for(lambda: runtime.health().reachable is True, 10)
    time.sleep(0.5)
    stop.set()
    worker.join()
    assert failures == [], "no caller may notice the store going away"
    assert wait_for(lambda: runtime.flush(drain_timeout=0), 10)
    direct = open_store(pg_url)
    report = operations.stats(direct, "codec", 3600, time.time() + 60)
    assert (report.legacy.served, report.new.served) == (served["legacy"], served["new"])
    assert during["new"] > 0 and during["legacy"] > 0, "the last known state kept serving"
    assert runtime._store_errors > 0
    outages = [r for r in caplog.records if "store unreachable" in r.getMessage()]
    recoveries = [r for r in caplog.records if "reachable again" in r.getMessage()]
    assert (len(outages), len(recoveries)) == (1, 1), "one log line per outage, not per call"
    direct.close()


def test_a_flush_whose_acknowledgement_was_lost_is_not_counted_twice(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = quiet(store_url)
    codec = cutover.Migration("codec", abs, abs)
    for i in range(7):
        codec(-i)
    real = runtime.store.write_flush
    lost = {"once": True}

    def commit_then_lose_the_answer(batch: Any) -> bool:
        applied = real(batch)
        if lost["once"] and batch.windows:
            lost["once"] = False
            raise StoreError("connection closed before the commit was acknowledged")
        return applied

    monkeypatch.setattr(runtime.store, "write_flush", commit_then_lose_the_answer)
    assert runtime.flush() is False
    codec(-8)
    assert runtime.flush() is True  # retries the first batch as is, then the new one
    assert stored(runtime, "codec").legacy.calls == 8


def test_while_the_store_is_away_memory_is_bounded_and_losses_are_counted(
    sqlite_url: str, clock: cutover.ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = quiet(sqlite_url, clock=clock, buffer_limit=5)
    codec = cutover.Migration("codec", abs, abs)
    real = runtime.store.write_flush

    def away(batch: Any) -> bool:
        raise StoreError("store away")

    monkeypatch.setattr(runtime.store, "write_flush", away)
    for minute in range(10):
        for i in range(minute + 1):  # minute m makes m + 1 calls
            codec(-i)
        for _ in range(12):  # a flush every five seconds, all failing
            runtime.flush(drain_timeout=0)
            clock.advance(5)
    health = runtime.health()
    assert health.buffered_windows == 5 and health.dropped_windows == 5
    assert len(runtime._pending) <= 2, "flushes merged while the store was away"
    monkeypatch.setattr(runtime.store, "write_flush", real)
    assert runtime.flush() is True
    # The five most recent minutes survived: 6 + 7 + 8 + 9 + 10 calls.
    assert stored(runtime, "codec").legacy.calls == 40


def test_a_long_outage_is_written_in_batches_of_bounded_size(
    sqlite_url: str, clock: cutover.ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cutover.runtime import MERGE_STARTS

    runtime = quiet(sqlite_url, clock=clock)
    codec = cutover.Migration("codec", abs, abs)
    real = runtime.store.write_flush
    written: list[int] = []

    def away(batch: Any) -> bool:
        raise StoreError("store away")

    monkeypatch.setattr(runtime.store, "write_flush", away)
    for _minute in range(150):
        codec(-1)
        runtime.flush(drain_timeout=0)
        clock.advance(60)

    def recording(batch: Any) -> bool:
        written.append(len(batch.starts()))
        return real(batch)

    monkeypatch.setattr(runtime.store, "write_flush", recording)
    assert runtime.flush() is True
    assert max(written) <= MERGE_STARTS and sum(written) >= 150
    assert stored(runtime, "codec").legacy.calls == 150


def test_a_refused_flush_keeps_its_counters_and_drops_only_its_samples(
    runtime: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    codec = cutover.Migration("codec", lambda x: x, lambda x: -x)
    put(runtime, "codec", mode="shadow")
    for i in range(1, 6):
        codec(i)
    real = runtime.store.write_flush

    def refuse_texts(batch: Any) -> bool:
        if batch.samples or batch.fingerprints:
            raise StoreError("invalid byte sequence for encoding", transient=False)
        return real(batch)

    monkeypatch.setattr(runtime.store, "write_flush", refuse_texts)
    assert runtime.flush() is True
    stats = stored(runtime, "codec")
    assert (stats.comparisons, stats.drifts) == (5, 5)
    assert runtime.health().rejected_flushes == 0


def test_failing_writes_and_working_reads_are_reported_apart(
    runtime: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="cutover")
    codec = cutover.Migration("codec", abs, abs)

    def read_only(batch: Any) -> bool:
        raise StoreError("cannot execute INSERT in a read-only transaction")

    monkeypatch.setattr(runtime.store, "write_flush", read_only)
    for _ in range(5):
        codec(-1)
        assert runtime.refresh() is True
        assert runtime.flush(drain_timeout=0) is False
    messages = [record.getMessage() for record in caplog.records]
    assert sum("cannot write to its store" in m for m in messages) == 1
    assert not any("unreachable" in m for m in messages)


def test_a_store_whose_tables_vanished_gets_them_back(sqlite_url: str) -> None:
    import sqlalchemy as sa

    runtime = quiet(sqlite_url)
    codec = cutover.Migration("codec", abs, abs)
    codec(-1)
    assert runtime.flush()
    with runtime.store.engine.begin() as conn:  # type: ignore[attr-defined]
        for table in ("cutover_windows", "cutover_histograms", "cutover_flushes"):
            conn.execute(sa.text(f"DROP TABLE {table}"))
    codec(-2)
    assert runtime.flush() is False  # the tables are missing: recreated for the next attempt
    assert runtime.flush() is True
    assert stored(runtime, "codec").legacy.calls == 1


def test_read_only_and_pooler_errors_are_transient() -> None:
    import psycopg
    import sqlalchemy as sa

    from cutover.store.sql import _is_transient

    for error in (
        psycopg.errors.ReadOnlySqlTransaction("read-only"),
        psycopg.errors.InvalidSqlStatementName("no prepared statement"),
        psycopg.errors.QueryCanceled("statement timeout"),
        psycopg.errors.AdminShutdown("terminating"),
    ):
        assert _is_transient(sa.exc.DBAPIError("SELECT 1", {}, error)), error
    for error in (
        psycopg.errors.CharacterNotInRepertoire("bad text"),
        psycopg.errors.CardinalityViolation("twice"),
    ):
        assert not _is_transient(sa.exc.DBAPIError("SELECT 1", {}, error)), error
