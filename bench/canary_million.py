"""A million canary calls from four threads: the store's counts must equal the calls made.

python bench/canary_million.py [--calls 1000000] [--threads 4]
"""

from __future__ import annotations

import argparse
from typing import Any

import cutover
from _harness import emit, fresh_runtime, in_threads
from cutover import operations


def identity(x: int) -> int:
    return x


def run(calls: int, threads: int) -> dict[str, Any]:
    with fresh_runtime(flush_interval=1.0, refresh_interval=1.0) as rt:
        operations.set_state(
            rt.store,
            "million",
            operations.Change(mode=cutover.Mode.CANARY, percent=25, sample=0),
            reason="bench",
            actor="bench",
            clock=rt.clock,
        )
        rt.refresh()
        wrapped = cutover.Migration("million", identity, identity, unit=lambda x: x)
        share = calls // threads
        routed_new = [0] * threads

        def worker(number: int) -> None:
            start = number * share
            for i in range(start, start + share):
                wrapped(i)
            routed_new[number] = sum(
                wrapped.serving_arm(i) is cutover.Arm.NEW for i in range(start, start + share)
            )

        elapsed = in_threads(worker, threads)
        rt.flush()
        report = operations.stats(rt.store, "million", 86400, rt.clock() + 60)
    made = share * threads
    stored = report.legacy.served + report.new.served
    return {
        "calls_made": made,
        "threads": threads,
        "seconds_with_routing_check": round(elapsed, 2),
        "stored_calls": stored,
        "stored_new": report.new.served,
        "expected_new": sum(routed_new),
        "exact": stored == made and report.new.served == sum(routed_new),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--threads", type=int, default=4)
    arguments = parser.parse_args()
    emit("canary_million", run(arguments.calls, arguments.threads))


if __name__ == "__main__":
    main()
