"""A store written by an earlier release is upgraded in place, its decisions kept."""

from __future__ import annotations

import sqlalchemy as sa

from cutover.clock import ManualClock
from cutover.control.statistics import quantile_interval
from cutover.data import cohorts
from cutover.model import Arm, Mode, Rollout, RolloutStatus, State
from cutover.store import FlushBatch, normalize_url, open_store
from cutover.store import schema as t
from cutover.telemetry.histogram import COARSE_BITS, Histogram, index_of
from cutover.telemetry.windows import COUNTERS, ArmCounts, WindowDelta

V1_DECISIONS = """
CREATE TABLE cutover_decisions (
    id {id} PRIMARY KEY,
    migration VARCHAR(200) NOT NULL,
    version BIGINT NOT NULL,
    at FLOAT NOT NULL,
    actor VARCHAR(200) NOT NULL,
    reason TEXT NOT NULL,
    old_state {json},
    new_state {json} NOT NULL,
    evidence {json} NOT NULL,
    CONSTRAINT cutover_decisions_one_per_version UNIQUE (migration, version)
)
"""


def test_a_first_release_store_is_upgraded_and_keeps_its_decisions(store_url: str) -> None:
    engine = sa.create_engine(normalize_url(store_url))
    postgres = engine.dialect.name == "postgresql"
    with engine.begin() as conn:
        ddl = V1_DECISIONS.format(
            id="BIGSERIAL" if postgres else "INTEGER", json="JSON" if postgres else "TEXT"
        )
        conn.exec_driver_sql(ddl)
        conn.exec_driver_sql(
            "CREATE INDEX cutover_decisions_by_migration ON cutover_decisions (migration, id)"
        )
        conn.exec_driver_sql(
            "CREATE TABLE cutover_meta (key VARCHAR(64) PRIMARY KEY, value VARCHAR(255) NOT NULL)"
        )
        conn.exec_driver_sql("INSERT INTO cutover_meta VALUES ('schema_version', '1')")
        conn.exec_driver_sql(
            "INSERT INTO cutover_decisions (migration, version, at, actor, reason, new_state,"
            " evidence) VALUES ('codec', 1, 1.0, 'ops', 'before the upgrade',"
            """ '{"mode": "shadow", "version": 1}', '{}')"""
        )
    engine.dispose()

    store = open_store(store_url)
    [old] = store.decisions("codec")
    assert (old.kind, old.reason, old.changed, old.new.mode.value) == (
        "set",
        "before the upgrade",
        True,
        "shadow",
    )
    rollout = Rollout("codec", {}, "plan.yaml", RolloutStatus.PAUSED, 0, 2.0, 2.0, "ops")
    paused = store.commit(
        "codec",
        kind="pause",
        actor="ops",
        reason="after",
        at=2.0,
        rollout=rollout,
        expected_rollout=0,
    )
    assert not paused.changed and store.decisions("codec")[-1].kind == "pause"
    assert store.write_state("other", State(), expected_version=0, actor="o", reason="r", at=3)
    assert schema_version(store) == str(t.SCHEMA_VERSION)


ADDED_IN = {
    "cutover_cohorts": 3,
    "cutover_leases": 4,
    "cutover_noise_counts": 6,
    "cutover_noise_rules": 6,
    "cutover_route_windows": 6,
    "cutover_latency": 7,
}
COLUMNS_ADDED_IN = {
    ("cutover_windows", "expected"): 5,
    ("cutover_windows", "gone"): 7,
    ("cutover_windows", "exposures"): 7,
}


def tables_of(version: int) -> list[sa.Table]:
    """Today's tables as a store of schema ``version`` has them: the tables and columns added
    since left out."""
    older = sa.MetaData()
    out = []
    for table in t.metadata.sorted_tables:
        if ADDED_IN.get(table.name, 0) > version:
            continue
        columns = [
            column._copy()
            for column in table.columns
            if COLUMNS_ADDED_IN.get((table.name, column.name), 0) <= version
        ]
        out.append(sa.Table(table.name, older, *columns))
    return out


def create_tables(conn: sa.Connection, version: int) -> None:
    for table in tables_of(version):
        table.create(conn)


def schema_version(store: object) -> str:
    with store.engine.connect() as conn:  # type: ignore[attr-defined]
        return str(
            conn.exec_driver_sql(
                "SELECT value FROM cutover_meta WHERE key = 'schema_version'"
            ).scalar()
        )


def test_a_version_2_store_gains_cohorts_and_keeps_its_states(store_url: str) -> None:
    engine = sa.create_engine(normalize_url(store_url))
    version_2 = tables_of(2)
    stored = State(mode=Mode.CANARY, version=1, updated_at=1.0, updated_by="ops")
    with engine.begin() as conn:  # version 2 is today's schema without the tables added since
        for table in version_2:
            table.create(conn)
        conn.execute(sa.insert(t.meta).values(key="schema_version", value="2"))
        conn.execute(sa.insert(t.states).values(name="orders", **stored.to_dict()))
    engine.dispose()

    store = open_store(store_url)
    assert store.state("orders") == stored
    assert schema_version(store) == str(t.SCHEMA_VERSION)
    clock = ManualClock()
    cohorts.add(store, "orders", "wave-1", tenants=["acme"], wave=1, actor="ops", clock=clock)
    promoted = cohorts.promote(store, "orders", "wave-1", reason="after", actor="ops", clock=clock)
    assert promoted.decision.new.pins_new == {"acme"} and promoted.decision.new.version == 2
    assert [d.kind for d in store.decisions("orders")] == ["cohort-add", "cohort-promote"]
    assert [c.name for c in store.cohorts()] == ["wave-1"]
    store.close()


def test_a_version_3_store_gains_leases_and_a_controller_leads_it(store_url: str) -> None:
    engine = sa.create_engine(normalize_url(store_url))
    stored = State(mode=Mode.SHADOW, version=1, updated_at=1.0, updated_by="ops")
    with engine.begin() as conn:  # version 3 is today's schema without cutover_leases
        create_tables(conn, 3)
        conn.execute(sa.insert(t.meta).values(key="schema_version", value="3"))
        conn.execute(sa.insert(t.states).values(name="orders", **stored.to_dict()))
    engine.dispose()

    store = open_store(store_url)
    assert store.state("orders") == stored
    assert schema_version(store) == str(t.SCHEMA_VERSION)
    lease = store.leadership(duration=60)
    assert lease.held()
    fence = lease.fence()
    assert fence is not None and fence.term == 1
    canary = stored.evolve(mode=Mode.CANARY, percent=5)
    written = store.write_state(
        "orders", canary, expected_version=1, actor="controller", reason="r", at=2.0, fence=fence
    )
    assert written.new.version == 2
    lease.release()
    store.close()


def test_a_version_4_store_keeps_its_windows_and_counts_expected_exceptions(
    store_url: str,
) -> None:
    engine = sa.create_engine(normalize_url(store_url))
    with engine.begin() as conn:  # version 4: windows without a count of expected exceptions
        create_tables(conn, 4)
        conn.execute(sa.insert(t.meta).values(key="schema_version", value="4"))
        conn.exec_driver_sql(
            "INSERT INTO cutover_windows (migration, arm, start, calls, errors, timeouts, offpath,"
            " fallbacks, comparisons, drifts, comparator_errors, offpath_dropped, hook_errors)"
            " VALUES ('parse', 'legacy', 60, 10, 3, 0, 0, 0, 0, 0, 0, 0, 0)"
        )
    engine.dispose()

    store = open_store(store_url)
    legacy = store.windows("parse", 0)[Arm.LEGACY]
    assert (legacy["calls"], legacy["errors"], legacy["expected"]) == (10, 3, 0)
    delta = WindowDelta("parse", {Arm.LEGACY: ArmCounts(), Arm.NEW: ArmCounts()})
    delta.arms[Arm.LEGACY].counts[COUNTERS.index("calls")] = 5
    delta.arms[Arm.LEGACY].counts[COUNTERS.index("expected")] = 2
    assert store.write_flush(FlushBatch("svc:1", 1, 61.0, [(60, delta)], run="r"))
    legacy = store.windows("parse", 0)[Arm.LEGACY]
    assert (legacy["calls"], legacy["errors"], legacy["expected"]) == (15, 3, 2)
    assert schema_version(store) == str(t.SCHEMA_VERSION)
    store.close()


def test_a_version_6_store_keeps_its_coarse_latency_and_adds_fine_windows_to_it(
    store_url: str,
) -> None:
    coarse = Histogram(bits=COARSE_BITS)
    for ns in (1_000_000, 1_100_000, 1_300_000, 2_000_000):
        coarse.record(ns)
    engine = sa.create_engine(normalize_url(store_url))
    with engine.begin() as conn:  # version 6: buckets of 8 per power of two
        create_tables(conn, 6)
        conn.execute(sa.insert(t.meta).values(key="schema_version", value="6"))
        for bucket, count in coarse.items():
            conn.execute(
                sa.insert(t.histograms).values(
                    migration="parse", arm="new", start=60, bucket=bucket, count=count
                )
            )
        conn.execute(
            sa.insert(t.route_windows).values(
                migration="parse",
                instance="proxy:1",
                route="GET /a",
                arm="new",
                start=60,
                calls=4,
                errors=0,
                timeouts=0,
                fallbacks=0,
                offpath=0,
                histogram=[list(pair) for pair in coarse.items()],
            )
        )
    engine.dispose()

    store = open_store(store_url)
    old = store.windows("parse", 0)[Arm.NEW].histogram
    assert schema_version(store) == str(t.SCHEMA_VERSION)
    assert old == coarse and old.bits == COARSE_BITS
    assert store.route_windows("parse", 0)["GET /a"][Arm.NEW].histogram == coarse
    # An old window is judged at its own resolution: its interval takes whole coarse buckets.
    low, high = quantile_interval(old, 0.5, 0.5)
    assert (low, high) == (old.bounds(index_of(1_000_000, COARSE_BITS))[0], 2_097_152)

    delta = WindowDelta("parse", {Arm.LEGACY: ArmCounts(), Arm.NEW: ArmCounts()})
    delta.arms[Arm.NEW].counts[COUNTERS.index("calls")] = 2
    delta.arms[Arm.NEW].histogram.record(1_000_000)
    delta.arms[Arm.NEW].histogram.record(1_010_000)
    assert store.write_flush(FlushBatch("svc:1", 1, 121.0, [(120, delta)], run="r"))
    fine = store.windows("parse", 120)[Arm.NEW].histogram
    assert fine == delta.arms[Arm.NEW].histogram and fine.buckets == 2
    # Both together: the fine window coarsens into the old buckets, nothing looks finer.
    both = store.windows("parse", 0)[Arm.NEW].histogram
    assert both.bits == COARSE_BITS and both.count == 6
    assert both == Histogram(bits=COARSE_BITS).merge(coarse).merge(fine)
    series = store.series("parse", 0, histograms_since=0)
    assert series[60][Arm.NEW].histogram == coarse
    assert series[120][Arm.NEW].histogram == fine
    store.close()


def test_a_version_6_store_keeps_its_windows_and_counts_gone_calls(store_url: str) -> None:
    engine = sa.create_engine(normalize_url(store_url))
    with engine.begin() as conn:  # version 6: windows without the proxy's 410 answers
        create_tables(conn, 6)
        conn.execute(sa.insert(t.meta).values(key="schema_version", value="6"))
        conn.execute(
            sa.insert(sa.Table("cutover_windows", sa.MetaData(), autoload_with=conn)).values(
                migration="api", arm="legacy", start=60, calls=10
            )
        )
    engine.dispose()

    store = open_store(store_url)
    assert store.windows("api", 0)[Arm.LEGACY]["gone"] == 0
    delta = WindowDelta("api", {Arm.LEGACY: ArmCounts(), Arm.NEW: ArmCounts()})
    delta.arms[Arm.LEGACY].counts[COUNTERS.index("calls")] = 2
    delta.arms[Arm.LEGACY].counts[COUNTERS.index("gone")] = 2
    assert store.write_flush(FlushBatch("proxy:1", 1, 61.0, [(60, delta)], run="r"))
    legacy = store.windows("api", 0)[Arm.LEGACY]
    assert (legacy["calls"], legacy["gone"]) == (12, 2)
    assert schema_version(store) == str(t.SCHEMA_VERSION)
    store.close()


def test_a_version_6_store_keeps_its_windows_and_counts_exposures(store_url: str) -> None:
    engine = sa.create_engine(normalize_url(store_url))
    with engine.begin() as conn:  # version 6: windows without a count of flag exposures
        create_tables(conn, 6)
        conn.execute(sa.insert(t.meta).values(key="schema_version", value="6"))
        conn.exec_driver_sql(
            "INSERT INTO cutover_windows (migration, arm, start, calls, errors)"
            " VALUES ('parse', 'new', 60, 10, 1)"
        )
    engine.dispose()

    store = open_store(store_url)
    new = store.windows("parse", 0)[Arm.NEW]
    assert (new["calls"], new["errors"], new["exposures"]) == (10, 1, 0)
    delta = WindowDelta("parse", {Arm.LEGACY: ArmCounts(), Arm.NEW: ArmCounts()})
    delta.arms[Arm.NEW].counts[COUNTERS.index("exposures")] = 7
    assert store.write_flush(FlushBatch("svc:1", 1, 61.0, [(60, delta)], run="r"))
    new = store.windows("parse", 0)[Arm.NEW]
    assert (new["calls"], new["exposures"]) == (10, 7)
    assert schema_version(store) == str(t.SCHEMA_VERSION)
    store.close()


def test_a_coarse_window_written_again_keeps_its_latencies(store_url: str) -> None:
    """A backtest copies stored windows into a scratch store: one read from before schema 7
    goes back to the coarse table, never read as fine buckets (which would put its calls at
    other latencies)."""
    coarse = Histogram(bits=COARSE_BITS)
    for ns in (1_000_000, 3_000_000, 9_000_000):
        coarse.record(ns)
    fine = Histogram()
    fine.record(2_000_000)
    store = open_store(store_url)
    for start, histogram in ((60, coarse), (120, fine)):
        delta = WindowDelta("parse", {Arm.LEGACY: ArmCounts(), Arm.NEW: ArmCounts()})
        delta.arms[Arm.NEW].counts[COUNTERS.index("calls")] = histogram.count
        delta.arms[Arm.NEW].histogram = histogram
        assert store.write_flush(FlushBatch("copy", start, start + 1.0, [(start, delta)], run="c"))
    series = store.series("parse", 0, histograms_since=0)
    assert series[60][Arm.NEW].histogram == coarse
    assert series[60][Arm.NEW].histogram.bits == COARSE_BITS
    assert series[120][Arm.NEW].histogram == fine
    store.close()
