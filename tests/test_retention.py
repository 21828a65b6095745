"""Retention: under continuous traffic and a daily `cutover gc`, the store stays bounded."""

from __future__ import annotations

import sqlalchemy as sa

import cutover
from cutover.store import schema as t

from .helpers import put, quiet

DAY = 86400


def test_a_daily_gc_keeps_the_store_bounded_and_the_decisions_whole(
    sqlite_url: str, clock: cutover.ManualClock
) -> None:
    runtime = quiet(sqlite_url, clock=clock, window_seconds=3600, drift_samples_per_minute=2)
    codec = cutover.Migration("codec", lambda x: x, lambda x: x + (x % 7 == 0))
    put(runtime, "codec", mode="shadow")
    sizes = []
    for day in range(45):
        if day % 10 == 0:
            put(runtime, "codec", pins_new=frozenset({f"staff-{day}"}))  # a decision now and then
        for _hour in range(24):
            for i in range(20):
                codec(i)
            assert runtime.flush()
            clock.advance(3600)
        runtime.store.gc(clock() - 30 * DAY)
        with runtime.store.engine.begin() as conn:  # type: ignore[attr-defined]
            sizes.append(
                {
                    table.name: conn.execute(sa.select(sa.func.count()).select_from(table)).scalar()
                    for table in (t.windows, t.latency, t.drift_samples, t.drift_counts)
                }
            )
    # Without collection, day 45 would hold half again as much as day 31. Histogram rows count
    # the latency buckets real calls landed in, which a loaded machine spreads a little wider.
    for table, slack in (
        ("cutover_windows", 1.05),
        ("cutover_latency", 1.2),
        ("cutover_drift_samples", 1.05),
    ):
        late = [size[table] for size in sizes[35:]]
        assert max(late) <= slack * sizes[31][table], f"{table} keeps growing after thirty days"
    assert max(size["cutover_windows"] for size in sizes) <= 31 * 24 * 2
    assert max(size["cutover_drift_samples"] for size in sizes) <= 31 * 24 * 2
    assert len(runtime.store.decisions("codec", limit=1000)) == 6, "decisions are never collected"
