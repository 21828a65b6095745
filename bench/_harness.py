"""Shared helpers for the benchmarks: a throwaway store, timing loops, percentiles, JSON output."""

from __future__ import annotations

import contextlib
import json
import platform
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cutover
from cutover import runtime as rt


@contextlib.contextmanager
def fresh_runtime(store: str | None = None, **options: Any) -> Iterator[rt.Runtime]:
    """cutover configured on a new SQLite file (or a scratch schema of ``store`` when it is a
    PostgreSQL URL); shut down and cleaned up afterwards."""
    with contextlib.ExitStack() as stack:
        if store is None:
            folder = stack.enter_context(tempfile.TemporaryDirectory())
            url = f"sqlite:///{Path(folder) / 'bench.db'}"
        else:
            url = stack.enter_context(scratch_schema(store))
        runtime = cutover.configure(url, wait=2, **options)
        try:
            yield runtime
        finally:
            rt.shutdown()


@contextlib.contextmanager
def scratch_schema(server: str) -> Iterator[str]:
    """A store URL in a new schema of the PostgreSQL at ``server``, dropped afterwards."""
    import secrets

    import psycopg

    schema = f"cutover_bench_{secrets.token_hex(4)}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        joiner = "&" if "?" in server else "?"
        yield f"{server}{joiner}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def per_call_ns(loop: Callable[[int], None], calls: int, repeats: int = 7) -> float:
    """Nanoseconds per call: the fastest of ``repeats`` runs of ``loop(calls)``."""
    loop(min(calls, 10_000))  # warm up
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter_ns()
        loop(calls)
        best = min(best, (time.perf_counter_ns() - started) / calls)
    return best


def in_threads(work: Callable[[int], None], count: int) -> float:
    """Run ``work(0)`` .. ``work(count - 1)`` on threads of their own; the seconds it took."""
    threads = [threading.Thread(target=work, args=(n,)) for n in range(count)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - began


def throughput(latencies: list[float], rows: int, elapsed: float) -> dict[str, float]:
    """Writes a second, rows a second and the write latency of a saturated writer."""
    return {
        "flushes_per_second": round(len(latencies) / elapsed, 1),
        "rows_per_second": round(rows / elapsed),
        "flush_p50_ms": round(percentile(latencies, 0.5) * 1000, 2),
        "flush_p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q * len(ordered)) - 1))
    return ordered[rank]


def timings_ms(call: Callable[[int], Any], count: int) -> list[float]:
    """Milliseconds each of ``count`` sequential calls took."""
    samples = []
    for i in range(count):
        started = time.perf_counter_ns()
        call(i)
        samples.append((time.perf_counter_ns() - started) / 1e6)
    return samples


def summary(samples: list[float]) -> dict[str, float]:
    return {
        "calls": len(samples),
        "p50_ms": round(percentile(samples, 0.50), 4),
        "p99_ms": round(percentile(samples, 0.99), 4),
        "mean_ms": round(sum(samples) / len(samples), 4),
    }


def latencies_ms(call: Callable[[int], Any], count: int) -> dict[str, float]:
    return summary(timings_ms(call, count))


def machine() -> dict[str, Any]:
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": __import__("os").cpu_count(),
        "cutover": cutover.__version__,
    }


def emit(name: str, results: dict[str, Any]) -> dict[str, Any]:
    document = {"benchmark": name, "machine": machine(), **results}
    print(json.dumps(document, indent=2))
    return document
