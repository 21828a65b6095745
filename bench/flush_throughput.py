"""Flush throughput into PostgreSQL with 50 simulated app instances writing at once.

Each instance is a thread with its own run id and its own store (its own connection, as each
process has), flushing batches shaped like a real process's: 10 migrations x 2 arms of
counters, about 20 latency buckets per arm, a few drift fingerprints, all in the same minute.
Two methods alternate in rounds of the same run, each round in a fresh schema: ``staged``
(each flush claims its (run, seq) and appends one row; whoever gets the fold lock sums every
staged row into the window tables) and ``upsert`` (each flush upserts its rows into the
window tables itself, the method before staging). After every round each instance's last
flush is retried and must add nothing, and the stored calls must equal the calls written.
The reference in the same run is the database's raw speed for as many rows: COPY into an
unlogged table with no keys. A last phase paces every instance at one flush per 5 s, as in
production, and reports the flush latency of both methods.

    python bench/flush_throughput.py [--server postgresql://postgres@127.0.0.1/test]
                                     [--instances 50] [--seconds 10] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import random
import secrets
import threading
import time
from typing import Any

import psycopg

from _harness import emit, in_threads, percentile, scratch_schema, throughput
from cutover.model import Arm
from cutover.store import FlushBatch
from cutover.store.sql import SqlStore
from cutover.telemetry.histogram import Histogram
from cutover.telemetry.windows import COUNTERS, ArmCounts, WindowDelta

MIGRATIONS = 10


def batch(instance: int, seq: int, run: str, start: int, rng: random.Random) -> FlushBatch:
    windows = []
    fingerprints = []
    for number in range(MIGRATIONS):
        arms = {}
        for arm in (Arm.LEGACY, Arm.NEW):
            counts = ArmCounts([rng.randrange(0, 5000) for _ in COUNTERS], Histogram())
            for _ in range(20):
                counts.histogram.add(rng.randrange(100, 300), rng.randrange(1, 500))
            arms[arm] = counts
        windows.append((start, WindowDelta(f"migration-{number}", arms)))
        fingerprints.append((start, f"migration-{number}", f"$.field{rng.randrange(3)}", 3))
    return FlushBatch(
        f"bench-{instance}", seq, time.time(), windows, run=run, fingerprints=fingerprints
    )


def rows_in(flush: FlushBatch) -> int:
    return sum(
        1 + counts.histogram.items().__length_hint__()
        for delta in flush.windows.values()
        for counts in delta.arms.values()
    ) + len(flush.fingerprints)


def stores_for(url: str, instances: int, staged: bool) -> list[SqlStore]:
    """A store (its own connections) for each instance, as each process has, opened before
    the clock starts."""
    stores = []
    for _ in range(instances):
        store = SqlStore(url)
        store.stage_flushes = staged
        store.states()
        stores.append(store)
    return stores


def cutover_flushes(url: str, instances: int, seconds: float, staged: bool) -> dict[str, Any]:
    stores = stores_for(url, instances, staged)
    latencies: list[float] = []
    rows = 0
    calls = 0
    last: dict[int, FlushBatch] = {}
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def instance(number: int) -> None:
        nonlocal rows, calls
        store = stores[number]
        rng = random.Random(number)
        run = secrets.token_hex(8)
        seq = 0
        while time.monotonic() < stop:
            seq += 1
            start = int(time.time()) // 60 * 60
            flush = batch(number, seq, run, start, rng)
            began = time.perf_counter()
            assert store.write_flush(flush)
            took = time.perf_counter() - began
            last[number] = flush
            with lock:
                latencies.append(took)
                rows += rows_in(flush)
                calls += sum(
                    counts.counts[0]
                    for _, delta in flush.windows.items()
                    for counts in delta.arms.values()
                )

    elapsed = in_threads(instance, instances)
    for number, flush in last.items():  # retried after the clock, as after a lost answer
        assert not stores[number].write_flush(flush), "a retried flush was applied twice"
    stored = sum(arms[arm]["calls"] for arms in stores[0].totals(0).values() for arm in arms)
    for store in stores:
        store.close()
    if stored != calls:
        raise SystemExit(f"stored {stored} calls for {calls} written: the flush path is wrong")
    return {**throughput(latencies, rows, elapsed), "flushes": len(latencies)}


def raw_copies(url: str, instances: int, seconds: float) -> dict[str, Any]:
    """The same number of rows per flush, written the fastest way PostgreSQL has: COPY into an
    unlogged table with no keys (no upsert, no idempotency, no merging)."""
    conninfo = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("CREATE UNLOGGED TABLE raw_rows (a text, b text, c bigint, d bigint)")
    per_flush = rows_in(batch(0, 1, "x", 0, random.Random(0)))
    latencies: list[float] = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def instance(number: int) -> None:
        with psycopg.connect(conninfo) as conn:
            rows = [(f"m{number}", "arm", i, i) for i in range(per_flush)]
            while time.monotonic() < stop:
                began = time.perf_counter()
                with conn.cursor() as cursor, cursor.copy("COPY raw_rows FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
                conn.commit()
                with lock:
                    latencies.append(time.perf_counter() - began)

    elapsed = in_threads(instance, instances)
    return {
        **throughput(latencies, len(latencies) * per_flush, elapsed),
        "rows_per_flush": per_flush,
    }


def paced(
    url: str, instances: int, seconds: float, interval: float, staged: bool
) -> dict[str, Any]:
    """Latency of flushes when every instance flushes once per ``interval``, as in production."""
    stores = stores_for(url, instances, staged)
    latencies: list[float] = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def instance(number: int) -> None:
        store = stores[number]
        rng = random.Random(1000 + number)
        run = secrets.token_hex(8)
        seq = 0
        time.sleep(rng.uniform(0, interval))  # instances do not start in step
        while time.monotonic() < stop:
            seq += 1
            flush = batch(number, seq, run, int(time.time()) // 60 * 60, rng)
            began = time.perf_counter()
            assert store.write_flush(flush)
            took = time.perf_counter() - began
            with lock:
                latencies.append(took)
            time.sleep(max(0.0, interval - took))

    in_threads(instance, instances)
    for store in stores:
        store.close()
    return {
        "interval_s": interval,
        "flushes": len(latencies),
        "flush_p50_ms": round(percentile(latencies, 0.5) * 1000, 2),
        "flush_p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
        "flush_max_ms": round(max(latencies) * 1000, 2),
    }


def run(server: str, instances: int, seconds: float, rounds: int) -> dict[str, Any]:
    saturated: dict[str, list[dict[str, Any]]] = {"upsert": [], "staged": []}
    for _ in range(rounds):  # alternating, so both methods share the machine's load
        for method, results in saturated.items():
            with scratch_schema(server) as url:
                results.append(cutover_flushes(url, instances, seconds, method == "staged"))
    with scratch_schema(server) as url:
        raw = raw_copies(url, instances, seconds)
    production = {}
    for method in saturated:
        with scratch_schema(server) as url:
            production[method] = paced(url, instances, max(seconds, 20.0), 5.0, method == "staged")
    best = {
        method: max(results, key=lambda r: r["flushes_per_second"])
        for method, results in saturated.items()
    }
    ratios = [
        round(new["flushes_per_second"] / old["flushes_per_second"], 2)
        for old, new in zip(saturated["upsert"], saturated["staged"], strict=True)
    ]
    return {
        "instances": instances,
        "migrations_per_flush": MIGRATIONS,
        "saturated": saturated,
        "staged_to_upsert_flushes_per_second_per_round": ratios,
        "raw_copy_reference": raw,
        "ratio_rows_per_second_to_raw_copy": {
            method: round(result["rows_per_second"] / raw["rows_per_second"], 3)
            for method, result in best.items()
        },
        "instances_sustainable_at_5s": {
            method: int(result["flushes_per_second"] * 5) for method, result in best.items()
        },
        "paced_every_5s": production,
        "load_average": [round(value, 2) for value in os.getloadavg()],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--server", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--instances", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=2)
    arguments = parser.parse_args()
    emit(
        "flush_throughput",
        run(arguments.server, arguments.instances, arguments.seconds, arguments.rounds),
    )


if __name__ == "__main__":
    main()
