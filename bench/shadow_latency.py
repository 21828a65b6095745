"""Caller latency in shadow mode (legacy 1 ms, new 10 ms, sample 1) beside laboratory.

laboratory runs the candidate on the caller's thread; cutover runs it off the caller's path.
Every shadow run must end either compared or counted as dropped.

    python bench/shadow_latency.py [--calls 2000]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import laboratory

import cutover
from _harness import emit, fresh_runtime, percentile, summary, timings_ms
from cutover import operations


def legacy(x: int) -> int:
    time.sleep(0.001)
    return x


def new(x: int) -> int:
    time.sleep(0.010)
    return x


@laboratory.Experiment.decorator(candidate=new)
def laboratory_shadow(x: int) -> int:
    return legacy(x)


def cutover_shadow(calls: int, workers: int, rounds: int = 20) -> dict[str, Any]:
    """Alternate blocks of legacy-alone calls and shadowed calls, so that the machine's own
    noise (other processes, the scheduler) falls on both distributions alike."""
    alone: list[float] = []
    shadowed: list[float] = []
    with fresh_runtime(flush_interval=3600, refresh_interval=3600, offpath_workers=workers) as rt:
        operations.set_state(
            rt.store,
            "shadow-bench",
            operations.Change(mode=cutover.Mode.SHADOW, sample=1.0),
            reason="bench",
            actor="bench",
            clock=rt.clock,
        )
        rt.refresh()
        wrapped = cutover.Migration("shadow-bench", legacy, new)
        for _ in range(rounds):
            alone += timings_ms(legacy, calls // rounds)
            shadowed += timings_ms(wrapped, calls // rounds)
        rt.flush(drain_timeout=60)
        report = operations.stats(rt.store, "shadow-bench", 86400, rt.clock())
    return {
        "offpath_workers": workers,
        "legacy_alone": summary(alone),
        "shadow": summary(shadowed),
        "p99_ratio_to_legacy": round(percentile(shadowed, 0.99) / percentile(alone, 0.99), 3),
        "compared": report.comparisons,
        "dropped": report.offpath_dropped,
        "accounted": report.comparisons + report.offpath_dropped == len(shadowed),
    }


def run(calls: int) -> dict[str, Any]:
    alone: list[float] = []
    lab: list[float] = []
    for _ in range(5):
        alone += timings_ms(legacy, calls // 25)
        lab += timings_ms(laboratory_shadow, calls // 25)
    saturated = cutover_shadow(calls, workers=2)
    default = cutover_shadow(calls, workers=4)
    wide = cutover_shadow(calls, workers=16)
    return {
        "laboratory": {
            "legacy_alone": summary(alone),
            "shadow": summary(lab),
            "p99_ratio_to_legacy": round(percentile(lab, 0.99) / percentile(alone, 0.99), 2),
        },
        "cutover_2_workers_saturated": saturated,
        "cutover_default_pool": default,
        "cutover_16_workers": wide,
        "targets": {"p99_ratio_to_legacy_max": 1.10},
        "within_targets": all(
            r["p99_ratio_to_legacy"] <= 1.10 and r["accounted"] for r in (saturated, default, wide)
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=5000)
    emit("shadow_latency", run(parser.parse_args().calls))


if __name__ == "__main__":
    main()
