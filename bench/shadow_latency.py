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
from _harness import emit, fresh_runtime, latencies_ms
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


def cutover_shadow(calls: int, workers: int) -> dict[str, Any]:
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
        measured = latencies_ms(wrapped, calls)
        rt.flush(drain_timeout=60)
        report = operations.stats(rt.store, "shadow-bench", 86400, rt.clock())
    measured.update(
        offpath_workers=workers,
        compared=report.comparisons,
        dropped=report.offpath_dropped,
        accounted=report.comparisons + report.offpath_dropped == calls,
    )
    return measured


def run(calls: int) -> dict[str, Any]:
    alone = latencies_ms(legacy, calls)
    lab = latencies_ms(laboratory_shadow, max(200, calls // 5))
    default = cutover_shadow(calls, workers=4)
    wide = cutover_shadow(calls, workers=16)
    return {
        "legacy_alone": alone,
        "laboratory": {**lab, "p99_ratio_to_legacy": round(lab["p99_ms"] / alone["p99_ms"], 2)},
        "cutover_default_pool": {
            **default,
            "p99_ratio_to_legacy": round(default["p99_ms"] / alone["p99_ms"], 3),
        },
        "cutover_16_workers": {
            **wide,
            "p99_ratio_to_legacy": round(wide["p99_ms"] / alone["p99_ms"], 3),
        },
        "targets": {"p99_ratio_to_legacy_max": 1.10},
        "within_targets": all(
            r["p99_ms"] / alone["p99_ms"] <= 1.10 and r["accounted"] for r in (default, wide)
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=5000)
    emit("shadow_latency", run(parser.parse_args().calls))


if __name__ == "__main__":
    main()
