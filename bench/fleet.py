"""A fleet's telemetry against one PostgreSQL, and the Prometheus exposition of one instance.

Flush path: ``--instances`` steps (500 to 10,000 simulated app instances), each instance
flushing once per ``--interval`` seconds (5 s, cutover's default) at a random phase, every
flush shaped like bench/flush_throughput.py's (10 migrations, ~413 rows, all in the same
minute). Instances are lightweight: a scheduler hands each due flush to a pool of writer
threads sharing ``--stores`` stores (6 connections each), as many machines' flushers would
reach one server. Flushes still waiting for a writer when a step ends are counted, not
written (a saturated step would otherwise drain its backlog for minutes). Per step: offered
and achieved flushes a second, the flush's own time (p50, p99) and its lag (from when it was
due to when it committed: waiting for a writer, a connection or the server). The path
saturates where achieved falls short of offered and the lag grows with the step instead of
staying near the flush's own time.

Exposition: one process holding N migrations in shadow (both arms counted), the bytes and the
time of rendering its /metrics (``prometheus_client.generate_latest``), and its series.

    python bench/fleet.py [--server postgresql://postgres@127.0.0.1/test]
                          [--instances 500,1000,2000,5000,10000] [--interval 5] [--seconds 15]
                          [--writers 48] [--stores 8] [--method staged|upsert]
                          [--migrations 1,10,100,1000]
"""

from __future__ import annotations

import argparse
import heapq
import os
import queue
import random
import secrets
import statistics
import threading
import time
from typing import Any

import cutover
from _harness import emit, fresh_runtime, percentile, scratch_schema
from cutover.errors import StoreError
from cutover.store import FlushBatch
from cutover.store.sql import SqlStore
from flush_throughput import batch

TEMPLATES = 32  # distinct flush contents, reused: generating 2,000 a second would take the CPU


def flush_step(
    instances: int, interval: float, seconds: float, writers: int, stores: list[SqlStore]
) -> dict[str, Any]:
    rng = random.Random(instances)
    start = int(time.time()) // 60 * 60
    templates = [batch(n, 1, "t", start, rng) for n in range(TEMPLATES)]
    runs = [secrets.token_hex(8) for _ in range(instances)]
    due: queue.SimpleQueue[tuple[float, int, int] | None] = queue.SimpleQueue()
    lock = threading.Lock()
    took: list[float] = []
    lags: list[float] = []
    failed = 0
    unwritten = 0
    stop = time.monotonic() + seconds

    def writer(number: int) -> None:
        nonlocal failed, unwritten
        store = stores[number % len(stores)]
        while (item := due.get()) is not None:
            at, instance, seq = item
            if time.monotonic() >= stop:  # past the step: the backlog is counted, not written
                with lock:
                    unwritten += 1
                continue
            template = templates[instance % TEMPLATES]
            flush = FlushBatch(
                f"fleet-{instance}",
                seq,
                at,
                [(begin, delta) for (begin, _), delta in template.windows.items()],
                run=runs[instance],
                fingerprints=[(s, m, f, c) for (s, m, f), c in template.fingerprints.items()],
            )
            began = time.monotonic()
            try:
                store.write_flush(flush)
            except StoreError:
                with lock:
                    failed += 1
                continue
            done = time.monotonic()
            with lock:
                took.append(done - began)
                lags.append(done - at)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(writers)]
    for thread in threads:
        thread.start()
    began = stop - seconds
    schedule = [(began + rng.uniform(0, interval), instance, 1) for instance in range(instances)]
    heapq.heapify(schedule)
    offered = 0
    while schedule[0][0] < stop:
        at, instance, seq = heapq.heappop(schedule)
        wait = at - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        due.put((at, instance, seq))
        offered += 1
        heapq.heappush(schedule, (at + interval, instance, seq + 1))
    for _ in threads:
        due.put(None)
    for thread in threads:
        thread.join()
    elapsed = seconds
    return {
        "instances": instances,
        "offered_flushes_per_second": round(instances / interval, 1),
        "achieved_flushes_per_second": round(len(took) / elapsed, 1),
        "completed_of_offered": round(len(took) / offered, 3),
        "failed": failed,
        "unwritten_at_the_end": unwritten,
        "flush_p50_ms": round(percentile(took, 0.5) * 1000, 1),
        "flush_p99_ms": round(percentile(took, 0.99) * 1000, 1),
        "lag_p50_ms": round(percentile(lags, 0.5) * 1000, 1),
        "lag_p99_ms": round(percentile(lags, 0.99) * 1000, 1),
        "lag_max_ms": round(max(lags) * 1000, 1),
        "rows_per_second": round(len(took) * 413 / elapsed),
    }


def exposition(migrations: int) -> dict[str, Any]:
    from prometheus_client import REGISTRY, generate_latest

    with fresh_runtime(flush_interval=3600, refresh_interval=3600) as runtime:
        names = [cutover.Migration(f"m-{n}", abs, abs, default="shadow") for n in range(migrations)]
        for migration in names:
            for i in range(20):
                migration(-i)
        runtime.pool.drain(60)
        generate_latest(REGISTRY)  # warm
        times = []
        for _ in range(5):
            began = time.perf_counter()
            text = generate_latest(REGISTRY)
            times.append(time.perf_counter() - began)
        series = [
            line
            for line in text.decode().splitlines()
            if line.startswith("cutover_") and not line.startswith("#")
        ]
        per_migration = sum(1 for line in series if 'migration="m-0"' in line)
        return {
            "migrations": migrations,
            "bytes": len(text),
            "cutover_series": len(series),
            "series_per_migration": per_migration,
            "render_ms_median": round(statistics.median(times) * 1000, 2),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--server", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--instances", default="500,1000,2000,5000,10000")
    parser.add_argument("--interval", type=float, default=5.0)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--writers", type=int, default=48)
    parser.add_argument("--stores", type=int, default=8)
    parser.add_argument("--method", choices=("staged", "upsert"), default="staged")
    parser.add_argument("--migrations", default="1,10,100,1000")
    arguments = parser.parse_args()
    steps = []
    with scratch_schema(arguments.server) as url:
        stores = [SqlStore(url) for _ in range(arguments.stores)]
        for store in stores:
            store.stage_flushes = arguments.method == "staged"
            store.states()
        for instances in (int(n) for n in arguments.instances.split(",")):
            steps.append(
                flush_step(
                    instances,
                    arguments.interval,
                    arguments.seconds,
                    arguments.writers,
                    stores,
                )
            )
            print(steps[-1], flush=True)
        for store in stores:
            store.close()
    rendered = [exposition(int(n)) for n in arguments.migrations.split(",")]
    emit(
        "fleet",
        {
            "method": arguments.method,
            "interval_s": arguments.interval,
            "writers": arguments.writers,
            "connections": 6 * arguments.stores,
            "flush_path": steps,
            "exposition": rendered,
            "load_average": [round(value, 2) for value in os.getloadavg()],
        },
    )


if __name__ == "__main__":
    main()
