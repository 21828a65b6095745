"""A fixed store for the reports' golden files: thirty days of two migrations, written with the
manual clock, so every report reads the same numbers on every run."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from cutover.clock import ManualClock
from cutover.data import cohorts
from cutover.data.audit import AuditSpec, audit
from cutover.model import Arm, Mode, State
from cutover.store import FlushBatch, Store, open_store
from cutover.telemetry import windows as w
from cutover.telemetry.histogram import index_of
from cutover.telemetry.windows import ArmCounts, WindowDelta

START = datetime(2026, 11, 1, tzinfo=UTC).timestamp()
DAY = 86400.0
HOUR = 3600.0
END = START + 30 * DAY  # 2026-12-01T00:00Z, "now" for every report

SLOS = {
    "migration": "codec",
    "slos": [
        {
            "name": "codec-success",
            "description": "Calls of the new codec that answer without an error or a timeout.",
            "indicator": {"metric": "errors"},
            "objective": "99.9%",
            "window": "30d",
        },
        {
            "name": "codec-latency",
            "indicator": {"metric": "latency", "threshold_ms": 50},
            "objective": "99%",
            "window": "30d",
        },
    ],
}


def _arms(hour: int) -> dict[Arm, ArmCounts]:
    """One hour of the codec: legacy serves 1,000 calls in about 2 ms; new runs on about 28
    of them (20,000 over 30 days) in about 1.5 ms, failing ten times in all."""
    legacy, new = ArmCounts(), ArmCounts()
    legacy.counts[w.CALLS] = 1000
    legacy.histogram.add(index_of(2_000_000), 1000)
    calls = 28 if hour % 36 else 20  # 20 hours of 20 calls, 700 of 28: 20,000 in all
    new.counts[w.CALLS] = new.counts[w.OFFPATH] = new.counts[w.COMPARISONS] = calls
    new.histogram.add(index_of(1_500_000), calls)
    if hour in (100, 200, 300, 400, 500, 550, 600, 650, 700, 710):
        new.counts[w.ERRORS] = 1
    if hour >= 30 * 24 - 7 * 24 and hour % 12 == 0:  # the last week: a drift every 12 hours
        new.counts[w.DRIFTS] = 1
    return {Arm.LEGACY: legacy, Arm.NEW: new}


def _audit_report(folder: Path) -> Path:
    """A real audit of two SQLite copies of orders: one changed row for tenant globex."""
    rows = [(1, "acme", 100), (2, "globex", 250), (3, "globex", 75), (4, "initech", 10)]
    copied = [*rows[:2], (3, "globex", 76), rows[3]]
    for name, changed in (("legacy.db", rows), ("new.db", copied)):
        with sqlite3.connect(folder / name) as db:
            db.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, tenant TEXT, amount INTEGER)")
            db.executemany("INSERT INTO orders VALUES (?, ?, ?)", changed)
    spec = AuditSpec(
        source=str(folder / "legacy.db"),
        target=str(folder / "new.db"),
        table="orders",
        tenant_column="tenant",
        recheck_delay=0.0,
    )
    report = audit(spec).to_json()
    # The audit ran now; the store's story has it finish on its 26th day.
    report["started_at"] = report["finished_at"] = "2026-11-26T09:00:00Z"
    path = folder / "audit-wave-1.json"
    path.write_text(json.dumps(report, indent=2))
    return Path(path.name)  # as the change board's folder names it: the tests run in it


def build(folder: Path) -> tuple[Store, Path]:
    """The store (SQLite in ``folder``, the working directory) and the audit report its
    decisions refer to, by a path relative to ``folder``."""
    store = open_store(f"sqlite:///{folder / 'reports.db'}")
    clock = ManualClock(START)
    batch = FlushBatch("app-1", 1, END, run="r")
    for hour in range(30 * 24):
        start = int(START + hour * HOUR)
        batch.add_window(start, WindowDelta("codec", _arms(hour)))
        if hour >= 30 * 24 - 7 * 24 and hour % 12 == 0:
            cause = "$.amount" if hour % 24 else "$.currency"
            batch.add_drifts(start, "codec", cause, 1)
    store.write_flush(batch)

    def decide(at: float, kind: str, state: State | None, reason: str, **evidence: object) -> None:
        current = store.state("codec")
        store.commit(
            "codec",
            kind=kind,
            actor="ops@example.com" if kind == "set" else "controller",
            reason=reason,
            at=at,
            evidence=evidence or None,
            state=state,
            expected_version=None if state is None else (current.version if current else 0),
        )

    decide(START, "set", State(mode=Mode.SHADOW, sample=1.0), "shadow the new codec on every call")
    decide(
        START + 10 * DAY,
        "set",
        State(mode=Mode.CANARY, percent=10, sample=1.0),
        "shadow parity 100% over 10 days",
    )
    decide(
        START + 25 * DAY,
        "rollback",
        State(mode=Mode.SHADOW, sample=1.0),
        "drift rate 0.5% exceeds 0.1%",
        check="parity",
        value=0.005,
    )
    decide(
        START + 25 * DAY + 40 * 60,
        "set",
        State(mode=Mode.CANARY, percent=10, sample=1.0),
        "currency rounding fixed in 2.4.1",
    )
    decide(
        START + 27 * DAY,
        "set",
        State(mode=Mode.CANARY, percent=25, sample=1.0),
        "a week of 10% within every check",
    )

    report = _audit_report(folder)
    tenants = "orders"
    store.commit(
        tenants,
        kind="set",
        actor="dba@example.com",
        reason="dual writes on",
        at=START,
        state=State(mode=Mode.SHADOW, sample=1.0),
        expected_version=0,
    )
    waves = (("wave-1", 1, ("acme", "initech")), ("wave-2", 2, ("globex",)))
    for name, wave, members in waves:
        clock.set(START + wave * DAY)
        cohorts.add(
            store,
            tenants,
            name,
            tenants=members,
            wave=wave,
            actor="dba@example.com",
            clock=clock,
            reason=f"wave {wave} of the tenant move",
        )
    clock.set(START + 26 * DAY)
    cohorts.promote(
        store,
        tenants,
        "wave-1",
        reason="CAB approved 2026-11-26",
        actor="cab@example.com",
        clock=clock,
        audit=str(report),
    )
    return store, report
