"""Per-call overhead of cutover over a direct call, beside laboratory's control-only experiment.

python bench/overhead.py [--calls 300000]
"""

from __future__ import annotations

import argparse
from typing import Any

import laboratory

import cutover
from _harness import emit, fresh_runtime, per_call_ns
from cutover.operations import Change, set_state


def identity(x: int) -> int:
    return x


def loop_of(function: Any) -> Any:
    def loop(calls: int) -> None:
        for i in range(calls):
            function(i)

    return loop


def laboratory_control_only(x: int) -> int:
    experiment = laboratory.Experiment()
    experiment.control(identity, args=[x])
    return experiment.conduct()


def run(calls: int, store: str | None = None, background: bool = False) -> dict[str, Any]:
    direct = per_call_ns(loop_of(identity), calls)
    lab = per_call_ns(loop_of(laboratory_control_only), max(calls // 10, 20_000)) - direct
    results: dict[str, Any] = {}
    intervals = {} if background else {"flush_interval": 3600, "refresh_interval": 3600}
    with fresh_runtime(store, **intervals) as runtime:

        def put(name: str, **change: Any) -> None:
            set_state(
                runtime.store,
                name,
                Change(**change),
                reason="bench",
                actor="bench",
                clock=runtime.clock,
            )
            runtime.refresh()

        legacy = cutover.Migration("bench-legacy", identity, identity)
        put("bench-legacy", mode=cutover.Mode.LEGACY)
        canary = cutover.Migration("bench-canary", identity, identity, unit=lambda x: x)
        put("bench-canary", mode=cutover.Mode.CANARY, percent=50, sample=0)
        scoped = cutover.Migration("bench-scoped", identity, identity)
        put("bench-scoped", mode=cutover.Mode.CANARY, percent=50, sample=0)
        new = cutover.Migration("bench-new", identity, identity)
        put("bench-new", mode=cutover.Mode.NEW)

        def scoped_loop(calls: int) -> None:
            with cutover.unit_scope("user-42"):
                for i in range(calls):
                    scoped(i)

        measured = {
            "legacy": per_call_ns(loop_of(legacy), calls) - direct,
            "canary_unit_extractor": per_call_ns(loop_of(canary), calls) - direct,
            "canary_unit_scope": per_call_ns(scoped_loop, calls) - direct,
            "new": per_call_ns(loop_of(new), calls) - direct,
        }
        assert runtime.flush(), "the benchmark's calls must reach the store"
    for mode, overhead in measured.items():
        results[mode] = {
            "overhead_ns": round(overhead, 1),
            "ratio_to_laboratory": round(overhead / lab, 3),
        }
    return {
        "direct_call_ns": round(direct, 1),
        "laboratory_control_only_overhead_ns": round(lab, 1),
        "cutover_overhead": results,
        "targets": {"overhead_ns_max": 1500, "ratio_to_laboratory_max": 0.25},
        "within_targets": all(
            r["overhead_ns"] <= 1500 and r["ratio_to_laboratory"] <= 0.25 for r in results.values()
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=300_000)
    parser.add_argument("--store", default=None, help="a store URL (default: a new SQLite file)")
    parser.add_argument(
        "--background",
        action="store_true",
        help="refresh every second and flush every 5 s while timing, as in production",
    )
    arguments = parser.parse_args()
    results = run(arguments.calls, arguments.store, arguments.background)
    where = {"store": arguments.store or "sqlite", "background": arguments.background}
    emit("overhead", {**where, **results})


if __name__ == "__main__":
    main()
