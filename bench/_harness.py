"""Shared helpers for the benchmarks: a throwaway store, timing loops, percentiles, JSON output."""

from __future__ import annotations

import contextlib
import json
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cutover
from cutover import runtime as rt


@contextlib.contextmanager
def fresh_runtime(**options: Any) -> Iterator[rt.Runtime]:
    """cutover configured on a new SQLite file; shut down afterwards."""
    with tempfile.TemporaryDirectory() as folder:
        runtime = cutover.configure(f"sqlite:///{Path(folder) / 'bench.db'}", wait=2, **options)
        try:
            yield runtime
        finally:
            rt.shutdown()


def per_call_ns(loop: Callable[[int], None], calls: int, repeats: int = 7) -> float:
    """Nanoseconds per call: the fastest of ``repeats`` runs of ``loop(calls)``."""
    loop(min(calls, 10_000))  # warm up
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter_ns()
        loop(calls)
        best = min(best, (time.perf_counter_ns() - started) / calls)
    return best


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q * len(ordered)) - 1))
    return ordered[rank]


def latencies_ms(call: Callable[[int], Any], count: int) -> dict[str, float]:
    samples = []
    for i in range(count):
        started = time.perf_counter_ns()
        call(i)
        samples.append((time.perf_counter_ns() - started) / 1e6)
    return {
        "calls": count,
        "p50_ms": round(percentile(samples, 0.50), 4),
        "p99_ms": round(percentile(samples, 0.99), 4),
        "mean_ms": round(sum(samples) / count, 4),
    }


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
