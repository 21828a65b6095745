"""One controller tick over many migrations with weeks of per-minute windows, on PostgreSQL.

Every migration has an active rollout of the same plan (shadow for 14 days, canary 5/25/50/100,
then new), spread over its steps and over step start times from minutes to days ago, so some
step totals come from the last hour of windows and others need the aggregate over days. The
windows are loaded straight into the store's tables with ``INSERT ... SELECT generate_series``
in time order, minute after minute for every migration, as app instances write them (a
migration's rows are spread over the whole table, not clustered). Counters are shaped like
shadow traffic (both arms run every call) at 300 to 3,000 calls a minute with a daily swing;
latency histograms have 60 to 100 non-empty buckets (of 64 per power of two) per arm and minute.

Histograms are loaded for the last ``--histogram-hours`` only (default 24): the controller
reads histograms only within its latency checks' windows (10 minutes in this plan), and 30 days
of them for 200 migrations would be about 500 million rows (tens of GB; hours to load). Older
histogram rows should only add table size; on the current key (migration, arm, start, bucket)
they also lengthen the 10-minute read, which walks every retained entry of the migration, so
this default understates that read for a store that keeps 30 days (docs/performance.md).

Each of ``--ticks`` ticks is timed after one minute of fresh telemetry for every migration is
written through ``write_flush``; the clock then moves one minute on. Statements are counted
with a ``before_cursor_execute`` event on the store's engine, the renewal of the controller's
lease and the term check of each decision among them. The anchor is what a hand-written cron
job would do: per migration, one aggregate over each check's window (``store.windows``),
without the step totals, the statistics or any decision.

With ``--anchor-src DIR`` (a source tree of an earlier cutover, e.g. ``git archive COMMIT |
tar -x -C DIR``), the ticks end with ``--rounds`` alternating dry-run ticks of this cutover
and of that one (in a process of its own) on the same windows at the same clock: their
medians, the ratio, and whether both would take the same decisions to the last byte of their
evidence.

    python bench/controller_tick.py [--server postgresql://postgres@127.0.0.1/test]
                                    [--migrations 200] [--days 30] [--histogram-hours 24]
                                    [--ticks 5] [--anchor-src DIR] [--rounds 5]
                                    [--profile FILE]
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import contextlib
import cProfile
import hashlib
import json
import math
import os
import random
import secrets
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import event

import cutover
from _harness import emit, scratch_schema
from cutover.clock import ManualClock
from cutover.control.controller import Controller
from cutover.control.plan import Metric, Plan, parse_plan
from cutover.model import Arm, State
from cutover.store import FlushBatch
from cutover.store.sql import SqlStore
from cutover.telemetry.histogram import Histogram
from cutover.telemetry.windows import COUNTERS, ArmCounts, WindowDelta

MINUTE = 60
HOUR = 3600
DAY = 86400

STEPS = [
    {"mode": "shadow", "hold": "14d", "min_comparisons": 10000},
    {"mode": "canary", "percent": 5, "hold": "1h"},
    {"mode": "canary", "percent": 25, "hold": "4h"},
    {"mode": "canary", "percent": 50, "hold": "8h"},
    {"mode": "canary", "percent": 100, "hold": "14d", "approval": True},
    {"mode": "new", "approval": True},
]
CHECKS = [
    {"name": "parity", "metric": "drift_rate", "max": 0.001, "window": "1h"},
    {"name": "new-errors", "metric": "error_rate", "arm": "new", "max": 0.05, "window": "5m"},
    {
        "name": "latency",
        "metric": "p99_ms",
        "arm": "new",
        "max_ratio_to": "legacy",
        "max": 2.0,
        "window": "10m",
    },
    {
        "name": "errors-warn",
        "metric": "error_rate",
        "arm": "new",
        "max": 0.02,
        "window": "30m",
        "severity": "warning",
    },
]

# Where the rollouts stand: (step index, share of migrations, oldest step start in seconds).
# Step start times are drawn log-uniformly from 2 minutes to the oldest, so every step has
# rollouts that began minutes ago and others that began hours or days ago (a canary 50% step
# past its 8 h hold waits for the approval of 100%).
PLACEMENT = [(0, 0.35, 13.5 * DAY), (1, 0.10, 70 * MINUTE), (2, 0.10, 4.5 * HOUR)]
PLACEMENT += [(3, 0.15, 3 * DAY), (4, 0.30, 13.5 * DAY)]

LEGACY_ERRORS, NEW_ERRORS, BAD_NEW_ERRORS = 0.002, 0.003, 0.03
TIMEOUT_RATE, DRIFT_RATE = 0.0005, 0.0002
BASE_BUCKET = 768  # 0.13 ms; each migration's latencies start 0 to 39 eighths of an octave higher
SLOW_SHIFT = 80  # buckets (64 a power of two): new about 2.4 times slower on the slow migrations


def plan_for(name: str) -> Plan:
    return parse_plan({"migration": name, "steps": STEPS, "checks": CHECKS})


def names(migrations: int) -> list[str]:
    width = max(3, len(str(migrations - 1)))
    return [f"migration-{m:0{width}d}" for m in range(migrations)]


def rate(m: int) -> int:
    """Calls a minute of migration ``m`` on average."""
    return 300 + (m * 7919) % 2701


def troubled(migrations: int) -> tuple[list[int], list[int]]:
    """Migrations whose new arm is too slow (critical), and those with new erring at 3%
    (a warning): one in 50 of each."""
    slow = [m for m in range(migrations) if m % 50 == 7]
    erring = [m for m in range(migrations) if m % 50 == 23]
    return slow, erring


# -- loading ---------------------------------------------------------------------------------

LOADED = 10
"""The counters the load writes, calls to hook_errors; the later ones keep their default, 0, so
a counter added to the store does not break the load."""

WINDOWS_SQL = """
INSERT INTO cutover_windows (migration, arm, start, {counters})
SELECT 'migration-' || lpad(m::text, %(width)s, '0'),
       CASE WHEN a = 0 THEN 'legacy' ELSE 'new' END,
       start,
       calls,
       floor(calls * CASE WHEN a = 0 THEN %(legacy_errors)s
                          WHEN m = ANY(%(erring)s) THEN %(bad_errors)s
                          ELSE %(new_errors)s END * (0.5 + random()) + random()),
       floor(calls * %(timeouts)s * (0.5 + random()) + random()),
       CASE WHEN a = 0 THEN 0 ELSE calls END,
       0,
       CASE WHEN a = 0 THEN 0 ELSE calls - floor(random() * 3) END,
       CASE WHEN a = 0 THEN 0 ELSE floor(calls * %(drift)s * (0.5 + random()) + random()) END,
       0, 0, 0
FROM (
    SELECT m, a, start,
           floor((300 + (m * 7919) %% 2701)
                 * (1 + 0.4 * sin(2 * pi() * (start %% 86400) / 86400.0))
                 * (0.8 + 0.4 * random()))::bigint AS calls
    FROM (
        SELECT %(first)s + (i / (2 * %(migrations)s)) * 60 AS start,
               ((i / 2) %% %(migrations)s)::int AS m,
               (i %% 2)::int AS a
        FROM generate_series(%(begin)s::bigint, %(end)s::bigint - 1) AS i
    ) AS k
) AS t
"""

HISTOGRAMS_SQL = """
INSERT INTO cutover_latency (migration, arm, start, bucket, count)
SELECT 'migration-' || lpad(m::text, %(width)s, '0'),
       CASE WHEN a = 0 THEN 'legacy' ELSE 'new' END,
       start,
       %(base)s + (m %% 40) * 8 + b
           + CASE WHEN a = 1 AND m = ANY(%(slow)s) THEN %(shift)s ELSE 0 END,
       greatest(1, floor(calls * (CASE WHEN b < peak THEN (b + 1.0) / (peak + 1)
                                       ELSE (k - b)::numeric / (k - peak) END)
                         / (0.5 * k) + random()))::bigint
FROM (
    SELECT m, a, start, k, (k * 0.35)::int AS peak,
           floor((300 + (m * 7919) %% 2701)
                 * (1 + 0.4 * sin(2 * pi() * (start %% 86400) / 86400.0))
                 * (0.8 + 0.4 * random()))::bigint AS calls
    FROM (
        SELECT %(first)s + (i / (2 * %(migrations)s)) * 60 AS start,
               ((i / 2) %% %(migrations)s)::int AS m,
               (i %% 2)::int AS a,
               60 + ((i * 7 + i / 2 * 13) %% 41)::int AS k
        FROM generate_series(%(begin)s::bigint, %(end)s::bigint - 1) AS i
    ) AS r
) AS t, generate_series(0, k - 1) AS b
"""

CHUNK_MINUTES = 1440  # one statement per day of minutes, so no statement runs for long


def conninfo(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


@contextlib.contextmanager
def indexes_dropped(conn: psycopg.Connection[Any], table: str) -> Iterator[None]:
    """Drop the table's keys and indexes for the load and build them again after it (the usual
    bulk-load order: one sort per index instead of millions of insertions into it)."""
    constraints = conn.execute(
        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint"
        " WHERE conrelid = %s::regclass AND contype IN ('p', 'u')",
        (table,),
    ).fetchall()
    indexes = conn.execute(
        "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema()"
        " AND tablename = %s AND indexname NOT IN"
        " (SELECT conname FROM pg_constraint WHERE conrelid = %s::regclass)",
        (table, table),
    ).fetchall()
    for name, _ in constraints:
        conn.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
    for name, _ in indexes:
        conn.execute(f'DROP INDEX "{name}"')
    yield
    for name, definition in constraints:
        conn.execute(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}')
    for _, definition in indexes:
        conn.execute(definition)


def fill(url: str, table: str, sql: str, parameters: dict[str, Any], minutes: range) -> dict:
    """Run ``sql`` for every chunk of ``minutes`` (minute indexes from the first loaded) with
    ``table``'s indexes dropped, then index it again. Returns the seconds each part took."""
    per_minute = 2 * parameters["migrations"]
    with psycopg.connect(conninfo(url), autocommit=True) as conn:
        conn.execute("SET synchronous_commit = off")
        conn.execute("SET maintenance_work_mem = '1GB'")
        conn.execute("SELECT setseed(%s)", (len(table) / 100,))
        began = time.perf_counter()
        with indexes_dropped(conn, table):
            for first in range(minutes.start, minutes.stop, CHUNK_MINUTES):
                last = min(first + CHUNK_MINUTES, minutes.stop)
                conn.execute(
                    sql,
                    {**parameters, "begin": first * per_minute, "end": last * per_minute},
                    prepare=False,
                )
            inserted = time.perf_counter()
        return {
            "insert_s": round(inserted - began, 1),
            "index_s": round(time.perf_counter() - inserted, 1),
        }


def load(url: str, migrations: int, days: float, histogram_hours: float, now: int) -> dict:
    """Windows for ``days`` up to ``now`` and histograms for the last ``histogram_hours``, each
    table on a connection of its own so the server loads and indexes both at once."""
    minutes = int(days * DAY) // MINUTE
    slow, erring = troubled(migrations)
    common = {
        "migrations": migrations,
        "first": now - minutes * MINUTE,
        "width": max(3, len(str(migrations - 1))),
    }
    window_parameters = {
        **common,
        "legacy_errors": LEGACY_ERRORS,
        "new_errors": NEW_ERRORS,
        "bad_errors": BAD_NEW_ERRORS,
        "erring": erring,
        "timeouts": TIMEOUT_RATE,
        "drift": DRIFT_RATE,
    }
    histogram_parameters = {**common, "base": BASE_BUCKET, "slow": slow, "shift": SLOW_SHIFT}
    histogram_minutes = min(minutes, int(histogram_hours * HOUR) // MINUTE)
    began = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        windows = pool.submit(
            fill,
            url,
            "cutover_windows",
            WINDOWS_SQL.format(counters=", ".join(COUNTERS[:LOADED])),
            window_parameters,
            range(0, minutes),
        )
        histograms = pool.submit(
            fill,
            url,
            "cutover_latency",
            HISTOGRAMS_SQL,
            histogram_parameters,
            range(minutes - histogram_minutes, minutes),
        )
        timings: dict[str, Any] = {
            "cutover_windows": windows.result(),
            "cutover_latency": histograms.result(),
        }
    timings["load_s"] = round(time.perf_counter() - began, 1)
    began = time.perf_counter()
    with psycopg.connect(conninfo(url), autocommit=True) as conn:
        conn.execute("ANALYZE")
    timings["analyze_s"] = round(time.perf_counter() - began, 1)
    return timings


def table_figures(url: str) -> dict[str, Any]:
    out = {}
    with psycopg.connect(conninfo(url), autocommit=True) as conn:
        for table in ("cutover_windows", "cutover_latency", "cutover_rollouts"):
            rows = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
            sizes = conn.execute(
                "SELECT pg_relation_size(%s), pg_indexes_size(%s)", (table, table)
            ).fetchone()
            assert rows is not None and sizes is not None
            out[table] = {
                "rows": rows[0],
                "table_mb": round(sizes[0] / 2**20),
                "indexes_mb": round(sizes[1] / 2**20),
            }
    return out


# -- rollouts --------------------------------------------------------------------------------


def place_rollouts(store: SqlStore, migrations: list[str], now: int, seed: int) -> dict:
    """Start every rollout with ``Controller.start`` and move it to its step, begun at a time
    drawn per PLACEMENT. Returns how many stand where."""
    rng = random.Random(seed)
    steps: list[tuple[int, float]] = []
    for index, share, oldest in PLACEMENT:
        count = round(share * len(migrations))
        steps += [(index, oldest)] * count
    steps = (steps + [(0, PLACEMENT[0][2])] * len(migrations))[: len(migrations)]
    rng.shuffle(steps)
    clock = {"now": 0.0}
    starter = Controller(store, clock=lambda: clock["now"], actor="bench")
    where: collections.Counter[str] = collections.Counter()
    long_steps = 0
    try:
        for name, (index, oldest) in zip(migrations, steps, strict=True):
            age = math.exp(rng.uniform(math.log(2 * MINUTE), math.log(oldest)))
            step_started = now - age
            plan = plan_for(name)
            started = step_started - sum(step.hold for step in plan.steps[:index])
            clock["now"] = started
            starter.start(plan, actor="bench", source="bench/controller_tick.py")
            if index > 0:
                rollout = store.rollout(name)
                state = store.state(name) or State()
                assert rollout is not None
                approvals = {
                    str(i): {"by": "bench", "reason": "bench", "at": started}
                    for i in range(1, index + 1)
                    if plan.steps[i].needs_approval
                }
                store.commit(
                    name,
                    kind="promote",
                    actor="bench",
                    reason=f"placed at {plan.steps[index].label}",
                    at=step_started,
                    state=plan.steps[index].state_from(state),
                    expected_version=state.version,
                    rollout=rollout.evolve(
                        step=index, step_started_at=step_started, approvals=approvals
                    ),
                    expected_rollout=rollout.version,
                )
            where[plan.steps[index].label] += 1
            longest = max(check.window for check in plan.checks)
            long_steps += step_started < now - longest
    finally:
        starter.close()
    return {"by_step": dict(where), "step_began_before_longest_window": long_steps}


# -- fresh telemetry -------------------------------------------------------------------------


def minute_of(
    m: int, name: str, start: int, rng: random.Random, slow: set[int], erring: set[int]
) -> tuple[int, WindowDelta]:
    """One minute of migration ``m``'s telemetry, shaped like the loaded windows."""
    swing = 1 + 0.4 * math.sin(2 * math.pi * (start % DAY) / DAY)
    arms = {}
    for a, arm in enumerate((Arm.LEGACY, Arm.NEW)):
        calls = int(rate(m) * swing * rng.uniform(0.8, 1.2))
        error_rate = LEGACY_ERRORS if a == 0 else BAD_NEW_ERRORS if m in erring else NEW_ERRORS
        counts = dict.fromkeys(COUNTERS, 0)
        counts["calls"] = calls
        counts["errors"] = int(calls * error_rate * rng.uniform(0.5, 1.5) + rng.random())
        counts["timeouts"] = int(calls * TIMEOUT_RATE * rng.uniform(0.5, 1.5) + rng.random())
        if a == 1:
            counts["offpath"] = calls
            counts["comparisons"] = calls - rng.randrange(3)
            counts["drifts"] = int(calls * DRIFT_RATE * rng.uniform(0.5, 1.5) + rng.random())
        k = rng.randint(60, 100)
        peak = int(k * 0.35)
        base = BASE_BUCKET + (m % 40) * 8 + (SLOW_SHIFT if a == 1 and m in slow else 0)
        histogram = Histogram()
        for b in range(k):
            weight = (b + 1) / (peak + 1) if b < peak else (k - b) / (k - peak)
            histogram.add(base + b, max(1, int(calls * weight / (0.5 * k) + rng.random())))
        arms[arm] = ArmCounts([counts[c] for c in COUNTERS], histogram)
    return start, WindowDelta(name, arms)


def write_minute(store: SqlStore, migrations: list[str], start: int, seq: int, run: str) -> None:
    rng = random.Random(start)
    slow, erring = (set(group) for group in troubled(len(migrations)))
    windows = [minute_of(m, name, start, rng, slow, erring) for m, name in enumerate(migrations)]
    assert store.write_flush(FlushBatch("bench", seq, start + 30, windows, run=run))


# -- measuring -------------------------------------------------------------------------------


KINDS = (
    ("SELECT cutover_windows.migration, cutover_windows.arm,", "step totals: store.windows_of"),
    ("SELECT cutover_latency.migration, cutover_latency.arm,", "step histograms: windows_of"),
    ("SELECT cutover_windows.migration, cutover_windows.start,", "series counters: series_of"),
    ("SELECT cutover_latency.migration, cutover_latency.start,", "series histograms: series_of"),
    ("SELECT cutover_histograms.", "coarse histograms of schema 6"),
    ("SET LOCAL", "per-transaction settings"),
)


def kind_of(statement: str) -> str:
    text = statement.lstrip()
    return next((kind for prefix, kind in KINDS if text.startswith(prefix)), text[:60])


class Statements:
    """Every statement run on the store's engine: how many, and how long each kind took."""

    def __init__(self, store: SqlStore) -> None:
        self.on = True
        self.reset()
        event.listen(store.engine, "before_cursor_execute", self._before)
        event.listen(store.engine, "after_cursor_execute", self._after)

    def reset(self) -> None:
        self.count = 0
        self.transactions = 0
        self.ms = 0.0
        self.times: dict[str, list[float]] = collections.defaultdict(list)
        self.slowest: dict[str, tuple[float, str, Any]] = {}

    def _before(self, conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        self.count += self.on
        conn.info["bench_began"] = time.perf_counter()

    def _after(self, conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        took = (time.perf_counter() - conn.info.pop("bench_began")) * 1000
        if not self.on:
            return
        self.transactions += statement.startswith("SET LOCAL")
        self.ms += took
        kind = kind_of(statement)
        self.times[kind].append(took)
        if took > self.slowest.get(kind, (0.0,))[0]:
            self.slowest[kind] = (took, statement, parameters)

    def top(self, n: int = 4) -> list[dict[str, Any]]:
        ranked = sorted(self.times.items(), key=lambda item: -sum(item[1]))[:n]
        return [
            {
                "statement": kind,
                "count": len(times),
                "total_ms": round(sum(times), 1),
                "median_ms": round(statistics.median(times), 2),
                "max_ms": round(max(times), 2),
            }
            for kind, times in ranked
        ]


def explain(store: SqlStore, statement: str, parameters: Any) -> dict[str, Any]:
    """EXPLAIN ANALYZE of one statement: its plan's nodes, the indexes used, the buffers."""
    with store.engine.connect() as conn:
        raw = conn.exec_driver_sql(
            "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + statement, parameters
        ).scalar_one()
    document = raw if isinstance(raw, list) else json.loads(raw)
    top = document[0]["Plan"]
    nodes: list[str] = []

    def walk(node: dict[str, Any]) -> None:
        label = node["Node Type"]
        if "Index Name" in node:
            label += f" using {node['Index Name']} ({node.get('Index Cond')})"
        if "Filter" in node:
            label += f", filter {node['Filter']}"
        blocks = node.get("Shared Hit Blocks", 0) + node.get("Shared Read Blocks", 0)
        nodes.append(
            f"{label}: {node.get('Actual Rows')} rows, {blocks} blocks,"
            f" {node.get('Actual Total Time')} ms"
        )
        for child in node.get("Plans", []):
            walk(child)

    walk(top)
    return {
        "parameters": {k: v for k, v in dict(parameters).items() if not k.startswith("coalesce")},
        "execution_ms": document[0]["Execution Time"],
        "plan": nodes,
    }


def measure(
    url: str,
    migrations: list[str],
    now: int,
    ticks: int,
    placed: dict[str, Any],
    profile: str | None = None,
) -> dict[str, Any]:
    store = SqlStore(url)
    statements = Statements(store)
    clock = ManualClock(now)
    controller = Controller(store, clock=clock)
    run = secrets.token_hex(8)
    profiler = cProfile.Profile() if profile else None
    try:
        began = time.perf_counter()
        Controller(store, clock=clock, dry_run=True).tick()  # pool and caches, nothing written
        warmup_ms = (time.perf_counter() - began) * 1000
        controller.tick(names=())  # takes the lease, evaluates nothing
        per_tick = []
        kinds: collections.Counter[str] = collections.Counter()
        statements.reset()
        for number in range(ticks):
            statements.on = False
            write_minute(store, migrations, int(clock()) // MINUTE * MINUTE, number + 1, run)
            statements.on = True
            count, transactions, in_sql = statements.count, statements.transactions, statements.ms
            queries = controller.queries
            if profiler is not None and number > 0:  # the first extends every step's totals
                profiler.enable()
            began = time.perf_counter()
            taken = controller.tick()
            took = (time.perf_counter() - began) * 1000
            if profiler is not None:
                profiler.disable()
            kinds.update(decision.kind for decision in taken)
            per_tick.append(
                {
                    "ms": round(took, 1),
                    "in_statements_ms": round(statements.ms - in_sql, 1),
                    "statements": statements.count - count,
                    "transactions": statements.transactions - transactions,
                    "controller_queries": controller.queries - queries,
                    "decisions": len(taken),
                }
            )
            clock.advance(MINUTE)
        if profiler is not None and profile:
            profiler.dump_stats(profile)
        by_kind = statements.top()
        slowest = dict(statements.slowest)
        statements.on = False

        rollouts = store.rollouts()
        longest = max(check.window for check in plan_for("x").checks)
        picks = {
            "step_began_days_ago": [
                n for n, r in rollouts.items() if r.step_started_at < clock() - DAY
            ],
            "step_began_minutes_ago": [
                n for n, r in rollouts.items() if clock() - r.step_started_at < longest / 2
            ],
        }
        evaluate = {}
        for label, candidates in picks.items():
            if not candidates:
                continue
            times = []
            for _ in range(5):
                began = time.perf_counter()
                controller.evaluate(candidates[0])
                times.append((time.perf_counter() - began) * 1000)
            evaluate[label] = {
                "migration": candidates[0],
                "median_ms": round(statistics.median(times), 2),
            }

        naive_ms, naive_statements = [], 0
        for _ in range(3):
            statements.reset()
            statements.on = True
            began = time.perf_counter()
            naive_pass(store, migrations, clock())
            naive_ms.append((time.perf_counter() - began) * 1000)
            naive_statements = statements.count
            statements.on = False
        explained = {
            kind: {"ms_in_tick": round(took, 2), **explain(store, statement, parameters)}
            for kind, (took, statement, parameters) in slowest.items()
            if statement.lstrip().startswith("SELECT") and kind in [k["statement"] for k in by_kind]
        }
    finally:
        controller.close()
        store.close()

    times = [t["ms"] for t in per_tick]
    median_tick = statistics.median(times)
    naive = statistics.median(naive_ms)
    return {
        "rollouts": placed,
        "warmup_dry_run_tick_ms": round(warmup_ms, 1),
        "tick": {
            "median_ms": round(median_tick, 1),
            "max_ms": round(max(times), 1),
            "per_migration_ms": round(median_tick / len(migrations), 2),
            "in_statements_median_ms": statistics.median(t["in_statements_ms"] for t in per_tick),
            "statements_median": statistics.median(t["statements"] for t in per_tick),
            "transactions_median": statistics.median(t["transactions"] for t in per_tick),
            "controller_queries_median": statistics.median(
                t["controller_queries"] for t in per_tick
            ),
            "decisions": sum(t["decisions"] for t in per_tick),
            "decision_kinds": dict(kinds),
            "ticks": per_tick,
        },
        "tick_statements_by_time": by_kind,
        "slowest_of_each_explained": explained,
        "evaluate_one_migration": evaluate,
        "naive_cron": {
            "what": "per migration, store.windows(name, now - window) for each check",
            "median_ms": round(naive, 1),
            "per_migration_ms": round(naive / len(migrations), 2),
            "statements": naive_statements,
            "ratio_to_tick": round(naive / median_tick, 2),
        },
    }


def digest(decisions: list[Any]) -> str:
    """The decisions a tick took, to the last byte of their reasons and evidence."""
    text = json.dumps(
        [[d.migration, d.kind, d.reason, d.evidence] for d in decisions],
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def worker(url: str, now: float) -> None:
    """The anchor's side of the comparison: a dry-run tick at ``now`` for each line read, its
    milliseconds and digest written back."""
    store = SqlStore(url)
    controller = Controller(store, clock=ManualClock(now), dry_run=True)
    controller.tick()  # the step totals' first, long read
    print(json.dumps({"ready": True, "cutover": cutover.__file__}), flush=True)
    for _ in sys.stdin:
        began = time.perf_counter()
        taken = controller.tick()
        took = (time.perf_counter() - began) * 1000
        print(json.dumps({"ms": took, "digest": digest(taken)}), flush=True)
    store.close()


def compare(url: str, now: float, anchor_src: str, rounds: int) -> dict[str, Any]:
    """Alternating dry-run ticks of this cutover and the anchor's on the same store and clock."""
    env = {**os.environ, "PYTHONPATH": f"{anchor_src}/src{os.pathsep}{Path(__file__).parent}"}
    command = [sys.executable, __file__, "--worker", url, str(now)]
    with subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
    ) as anchor:
        assert anchor.stdin is not None and anchor.stdout is not None
        store = SqlStore(url)
        controller = Controller(store, clock=ManualClock(now), dry_run=True)
        controller.tick()
        ready = json.loads(anchor.stdout.readline())
        mine: list[float] = []
        theirs: list[float] = []
        digests: set[tuple[str, str]] = set()
        for number in range(rounds):
            for side in ("anchor", "this") if number % 2 else ("this", "anchor"):
                if side == "this":
                    began = time.perf_counter()
                    taken = controller.tick()
                    mine.append((time.perf_counter() - began) * 1000)
                    ours = digest(taken)
                else:
                    anchor.stdin.write("tick\n")
                    anchor.stdin.flush()
                    answer = json.loads(anchor.stdout.readline())
                    theirs.append(answer["ms"])
            digests.add((ours, answer["digest"]))
        anchor.stdin.close()
        store.close()
    return {
        "anchor_src": anchor_src,
        "anchor_imported": ready["cutover"],
        "rounds": rounds,
        "dry_run_tick_median_ms": round(statistics.median(mine), 1),
        "anchor_dry_run_tick_median_ms": round(statistics.median(theirs), 1),
        "ratio_anchor_to_this": round(statistics.median(theirs) / statistics.median(mine), 2),
        "same_decisions": all(a == b for a, b in digests),
        "load_average": os.getloadavg(),
    }


def naive_pass(store: SqlStore, migrations: list[str], now: float) -> None:
    checks = plan_for("x").checks
    for name in migrations:
        for check in checks:
            latency = check.metric is not None and check.metric in LATENCY
            store.windows(name, now - check.window, histograms=latency)


LATENCY = {Metric.P50_MS, Metric.P95_MS, Metric.P99_MS}


def run(
    server: str,
    migrations: int = 200,
    days: float = 30,
    histogram_hours: float = 24,
    ticks: int = 5,
    anchor_src: str | None = None,
    rounds: int = 5,
    profile: str | None = None,
) -> dict[str, Any]:
    now = int(time.time()) // MINUTE * MINUTE
    named = names(migrations)
    began = time.perf_counter()
    with scratch_schema(server) as url:
        store = SqlStore(url)
        store.states()  # creates the tables
        store.close()
        loading = load(url, migrations, days, histogram_hours, now)
        store = SqlStore(url)
        try:
            placed = place_rollouts(store, named, now, seed=migrations)
        finally:
            store.close()
        tables = table_figures(url)
        loading["setup_s"] = round(time.perf_counter() - began, 1)
        figures = measure(url, named, now, ticks, placed, profile)
        if anchor_src is not None:
            figures["anchor"] = compare(url, now + ticks * MINUTE, anchor_src, rounds)
    slow, erring = troubled(migrations)
    return {
        "parameters": {
            "migrations": migrations,
            "days": days,
            "histogram_hours": histogram_hours,
            "ticks": ticks,
            "checks": [check["name"] for check in CHECKS],
            "slow_new_migrations": len(slow),
            "erring_new_migrations": len(erring),
        },
        "load": loading,
        "tables": tables,
        **figures,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--server", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--migrations", type=int, default=200)
    parser.add_argument("--days", type=float, default=30.0)
    parser.add_argument(
        "--histogram-hours",
        type=float,
        default=24.0,
        help="hours of latency histograms to load (the latency check reads the last 10 minutes)",
    )
    parser.add_argument("--ticks", type=int, default=5)
    parser.add_argument(
        "--anchor-src",
        help="a source tree of an earlier cutover to compare dry-run ticks with, same run",
    )
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds of it")
    parser.add_argument(
        "--profile",
        help="write cProfile statistics of the timed ticks after the first to this file (pstats)",
    )
    if sys.argv[1:2] == ["--worker"]:
        worker(sys.argv[2], float(sys.argv[3]))
        return
    arguments = parser.parse_args()
    emit(
        "controller_tick",
        run(
            arguments.server,
            arguments.migrations,
            arguments.days,
            arguments.histogram_hours,
            arguments.ticks,
            arguments.anchor_src,
            arguments.rounds,
            arguments.profile,
        ),
    )


if __name__ == "__main__":
    main()
