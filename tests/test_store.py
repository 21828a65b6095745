"""The store on SQLite and the real PostgreSQL: compare-and-set, decisions, idempotent windows."""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa

from cutover.errors import ConflictError, InvalidInput, StoreError
from cutover.model import Arm, Mode, State
from cutover.store import FlushBatch, InstanceInfo, normalize_url, open_store, redact_url
from cutover.store.sql import _FOLD_KEY, SqlStore
from cutover.telemetry.drift import DriftSample
from cutover.telemetry.histogram import Histogram
from cutover.telemetry.windows import COUNTERS, ArmCounts, WindowDelta

NOW = 1_750_000_000.0


def delta(name: str, calls: int, drifts: int = 0, latencies: tuple[int, ...] = ()) -> WindowDelta:
    legacy = ArmCounts()
    legacy.counts[COUNTERS.index("calls")] = calls
    new = ArmCounts()
    new.counts[COUNTERS.index("calls")] = calls
    new.counts[COUNTERS.index("comparisons")] = calls
    new.counts[COUNTERS.index("drifts")] = drifts
    for ns in latencies:
        legacy.histogram.record(ns)
    return WindowDelta(name, {Arm.LEGACY: legacy, Arm.NEW: new})


def test_compare_and_set_and_one_decision_per_change(store_url: str) -> None:
    store = open_store(store_url)
    first = store.write_state(
        "codec", State(mode=Mode.SHADOW), expected_version=0, actor="ana", reason="start", at=NOW
    )
    assert first.new.version == 1 and first.old is None
    with pytest.raises(ConflictError, match=r"'codec' is at version 1 \(written by ana\), not 0"):
        store.write_state("codec", State(), expected_version=0, actor="bo", reason="x", at=NOW)
    second = store.write_state(
        "codec",
        first.new.evolve(mode=Mode.CANARY, percent=5, pins_new=frozenset({"staff"})),
        expected_version=1,
        actor="bo",
        reason="5% canary",
        evidence={"drift_rate": 0.0},
        at=NOW + 10,
    )
    assert second.old == first.new
    state = store.state("codec")
    assert state is not None
    assert (state.mode, state.percent, state.version, state.updated_by) == (
        Mode.CANARY,
        5.0,
        2,
        "bo",
    )
    assert state.pins_new == frozenset({"staff"})
    history = store.decisions("codec")
    assert [(d.actor, d.reason, d.new.version) for d in history] == [
        ("ana", "start", 1),
        ("bo", "5% canary", 2),
    ]
    assert history[1].evidence == {"drift_rate": 0.0}
    assert store.states() == {"codec": state}
    store.close()


def test_fifty_concurrent_writers_lose_no_update(store_url: str) -> None:
    store = open_store(store_url)
    store.write_state("race", State(), expected_version=0, actor="init", reason="init", at=NOW)
    accepted: list[int] = []
    conflicts: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(50)

    def writer(number: int) -> None:
        start.wait()
        for _ in range(4):
            while True:
                current = store.state("race")
                assert current is not None
                bumped = current.evolve(percent=round(current.percent + 0.01, 2))
                try:
                    decision = store.write_state(
                        "race",
                        bumped,
                        expected_version=current.version,
                        actor=f"writer-{number}",
                        reason="bump",
                        at=NOW,
                    )
                except ConflictError as error:
                    with lock:
                        conflicts.append(str(error))
                    continue
                with lock:
                    accepted.append(decision.new.version)
                break

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    final = store.state("race")
    assert final is not None
    assert final.version == 201 and final.percent == pytest.approx(2.0)
    assert sorted(accepted) == list(range(2, 202)), "every accepted change has its own version"
    decisions = store.decisions("race", limit=1000)
    assert [d.new.version for d in decisions] == list(range(1, 202)), "one decision per change"
    assert all(
        d.old is not None and d.new.percent == round(d.old.percent + 0.01, 2) for d in decisions[1:]
    ), "no update was lost: each builds on the one before"
    assert conflicts and all("written by writer-" in c for c in conflicts)
    store.close()


def test_a_flush_is_applied_once_even_when_retried(store_url: str) -> None:
    store = open_store(store_url)
    batch = FlushBatch("host:1:aa", 1, NOW, [(1_749_999_960, delta("codec", 10, 2))])
    assert store.write_flush(batch) is True
    assert store.write_flush(batch) is False  # the retry after an unknown outcome
    totals = store.windows("codec", 0)
    assert totals[Arm.LEGACY]["calls"] == 10 and totals[Arm.NEW]["drifts"] == 2
    store.close()


def test_a_flush_staged_during_anothers_fold_is_seen_by_the_next_read(pg_url: str) -> None:
    store = SqlStore(pg_url)
    store.states()
    folding = store.engine.connect()
    folding.begin()
    folding.execute(sa.text(f"SELECT pg_advisory_xact_lock({_FOLD_KEY})"))  # a fold under way
    assert store.write_flush(FlushBatch("host:1", 1, NOW, [(1_749_999_960, delta("codec", 4))]))
    staged = folding.execute(sa.text("SELECT count(*) FROM cutover_staged")).scalar()
    assert staged == 1, "the writer left it staged, not waiting for the fold lock"
    threading.Timer(0.2, folding.rollback).start()
    assert store.windows("codec", 0)[Arm.LEGACY]["calls"] == 4  # the read waited, then folded
    with store.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM cutover_staged")).scalar() == 0
    folding.close()
    store.close()


def test_a_fold_that_fails_leaves_the_flush_applied_for_the_next_fold(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cutover.store import sql

    store = SqlStore(pg_url)
    fold = sql._fold_statement
    monkeypatch.setattr(sql, "_fold_statement", lambda: "SELECT 1 / 0")
    assert store.write_flush(FlushBatch("host:1", 1, NOW, [(1_749_999_960, delta("codec", 5))]))
    assert not store.write_flush(FlushBatch("host:1", 1, NOW, [(1_749_999_960, delta("codec", 5))]))
    monkeypatch.setattr(sql, "_fold_statement", fold)
    assert store.windows("codec", 0)[Arm.LEGACY]["calls"] == 5
    store.close()


def test_a_name_too_long_to_fold_is_refused_when_staged_and_folds_go_on(pg_url: str) -> None:
    store = SqlStore(pg_url)
    with pytest.raises(StoreError, match="refused the operation"):
        store.write_flush(FlushBatch("host:1", 1, NOW, [(1_749_999_960, delta("x" * 201, 1))]))
    assert store.write_flush(FlushBatch("host:1", 2, NOW, [(1_749_999_960, delta("codec", 3))]))
    assert store.windows("codec", 0)[Arm.NEW]["calls"] == 3
    store.close()


def test_windows_from_many_instances_sum_and_histograms_merge_exactly(store_url: str) -> None:
    store = open_store(store_url)
    expected = Histogram()
    for instance in range(5):
        latencies = tuple(1000 * (instance + 1) + n for n in range(50))
        for seq, start in enumerate((1_749_999_940, 1_750_000_000), start=1):
            for ns in latencies:
                expected.record(ns)
            store.write_flush(
                FlushBatch(f"host:{instance}", seq, NOW, [(start, delta("codec", 7, 1, latencies))])
            )
    both = store.windows("codec", 0)
    assert both[Arm.LEGACY]["calls"] == 5 * 2 * 7
    assert both[Arm.NEW]["drifts"] == 10
    assert both[Arm.LEGACY].histogram == expected
    recent = store.windows("codec", 1_750_000_000)
    assert recent[Arm.LEGACY]["calls"] == 35
    older = store.windows("codec", 0, until=1_750_000_000)
    assert older[Arm.LEGACY]["calls"] == 35
    assert store.migrations() == ["codec"]
    store.close()


def test_drift_samples_groups_instances_and_gc(store_url: str) -> None:
    store = open_store(store_url)

    def sample(at: float, fingerprint: str, unit: str) -> DriftSample:
        return DriftSample(
            "codec",
            at,
            unit,
            fingerprint,
            {"args": [1]},
            {"v": 1},
            {"v": 2},
            [{"path": "$.v", "kind": "changed", "legacy": 1, "new": 2}],
        )

    heartbeat = InstanceInfo("host:1:aa", "host", 1, NOW - 100, NOW, {"versions": {"codec": 3}})
    for seq, start in ((2, 1_749_999_900), (3, 1_749_999_960)):  # counts from another run
        store.write_flush(
            FlushBatch(
                "host:2:bb", seq, NOW, run="other", fingerprints=[(start, "codec", "$.v", 40)]
            )
        )
    store.write_flush(
        FlushBatch(
            "host:1:aa",
            1,
            NOW,
            [(1_749_999_000, delta("codec", 1))],
            [
                sample(NOW - 50, "$.v", "u1"),
                sample(NOW - 40, "$.v", "u2"),
                sample(NOW - 30, "$.w", "u3"),
            ],
            heartbeat,
            run="one",
            fingerprints=[(1_749_999_960, "codec", "$.v", 2), (1_749_999_960, "codec", "$.w", 1)],
        )
    )
    store.write_state("codec", State(), expected_version=0, actor="a", reason="r", at=NOW)
    groups = store.drift_groups("codec")
    assert [(g.fingerprint, g.count, g.samples) for g in groups] == [("$.v", 82, 2), ("$.w", 1, 1)]
    assert groups[0].example is not None and groups[0].example.unit == "u2"
    assert [(g.fingerprint, g.count) for g in store.drift_groups("codec", since=1_749_999_960)] == [
        ("$.v", 42),
        ("$.w", 1),
    ]
    assert [s.unit for s in store.drift_samples("codec", limit=2)] == ["u3", "u2"]
    assert [s.unit for s in store.drift_samples("codec", fingerprint="$.w")] == ["u3"]
    assert store.drift_samples("codec", since=NOW - 35)[0].unit == "u3"
    [instance] = store.instances()
    assert instance.info["versions"] == {"codec": 3}
    removed = store.gc(NOW - 35)
    assert removed["windows"] == 2 and removed["drift_samples"] == 2
    assert removed["drift_counts"] == 3
    assert [s.unit for s in store.drift_samples("codec")] == ["u3"]
    assert len(store.decisions("codec")) == 1, "decisions are never collected"
    store.close()


def test_two_store_objects_share_one_schema(store_url: str) -> None:
    first, second = open_store(store_url), open_store(store_url)
    first.write_state("a", State(), expected_version=0, actor="x", reason="r", at=NOW)
    assert second.state("a") is not None
    first.close()
    second.close()


def test_a_newer_schema_is_refused_with_a_fix(sqlite_url: str) -> None:
    store = SqlStore(sqlite_url)
    store.states()
    with store.engine.begin() as conn:
        conn.execute(sa.text("UPDATE cutover_meta SET value = '99' WHERE key = 'schema_version'"))
    store.close()
    with pytest.raises(StoreError, match="schema version 99, newer than this cutover"):
        SqlStore(sqlite_url).states()


def test_urls_as_users_write_them() -> None:
    assert normalize_url("cutover.db") == "sqlite:///cutover.db"
    assert normalize_url("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"
    assert normalize_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalize_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    assert redact_url("postgresql://u:secret@h/db") == "postgresql://u:***@h/db"
    with pytest.raises(InvalidInput, match="unsupported store URL scheme 'mysql'"):
        normalize_url("mysql://h/db")
    with pytest.raises(InvalidInput, match="in-memory SQLite store is not shared"):
        normalize_url("sqlite://")


def test_an_unreachable_store_is_one_sentence() -> None:
    store = SqlStore("postgresql://postgres@127.0.0.1:1/none", connect_timeout=1)
    with pytest.raises(
        StoreError, match=r"cannot open the store at postgresql://postgres@127\.0\.0\.1:1/none"
    ):
        store.states()


def test_fingerprints_that_differ_only_in_lone_surrogates_stay_apart(store_url: str) -> None:
    store = open_store(store_url)
    a, b = (
        b"caf\xe9".decode("utf-8", "surrogateescape"),
        b"caf\xe8".decode("utf-8", "surrogateescape"),
    )
    batch = FlushBatch(
        "h",
        1,
        NOW,
        run="r",
        fingerprints=[(1_749_999_960, "codec", f"$.{a}", 2), (1_749_999_960, "codec", f"$.{b}", 3)],
    )
    assert store.write_flush(batch)
    assert sorted(g.count for g in store.drift_groups("codec")) == [2, 3]
    store.close()
