"""Memory per migration name: what declaring and calling many distinct migrations costs, and
what is given back once they are gone.

Declares ``--names`` migrations (``--mode legacy``: called on the caller's thread only;
``shadow``: each call also runs new off-path on the worker pool), calls each ``--calls`` times,
flushes (twice: the second finds nothing new), then drops every migration and flushes again,
then does it all once more with as many other names (a process whose names come and go).
Reports the resident set size (from /proc, in a run without tracing) and the bytes Python
allocated (tracemalloc, in a second run) per name, the largest allocation sites by file and
line, how long the flushes took, and checks that the store holds every call.

    python bench/memory_per_name.py [--names 10000] [--calls 3] [--mode legacy|shadow]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
import tracemalloc
from typing import Any

import cutover
from _harness import emit, fresh_runtime
from cutover import operations
from cutover import runtime as rt


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def identity(x: int) -> int:
    return x


def measure(names: int, calls: int, mode: str, trace: bool) -> dict[str, Any]:
    """One run: declare, call and flush ``names`` migrations, then drop them and flush."""
    with fresh_runtime(flush_interval=3600, refresh_interval=3600) as runtime:
        warm = cutover.Migration("warm-up", identity, identity, default=mode)
        warm(0)
        runtime.flush(drain_timeout=10)
        gc.collect()
        if trace:
            tracemalloc.start(1)
        start_rss = rss_bytes()
        start_snapshot = tracemalloc.take_snapshot() if trace else None
        migrations = [
            cutover.Migration(f"name-{n}", identity, identity, default=mode) for n in range(names)
        ]
        for migration in migrations:
            for i in range(calls):
                migration(i)
        runtime.pool.drain(60)
        began = time.perf_counter()
        assert runtime.flush(drain_timeout=60), "the flush must reach the store"
        flush_counted = time.perf_counter() - began
        began = time.perf_counter()
        assert runtime.flush(drain_timeout=60), "the flush must reach the store"
        flush_idle = time.perf_counter() - began
        gc.collect()
        held_rss = rss_bytes()
        held_snapshot = tracemalloc.take_snapshot() if trace else None
        sample_name = migrations[-1].name
        del migrations, migration
        gc.collect()
        assert runtime.flush(drain_timeout=60), "the flush must reach the store"
        gc.collect()
        released_rss = rss_bytes()
        released_snapshot = tracemalloc.take_snapshot() if trace else None
        # As many other names again: what was given back is used again, not added to.
        others = [
            cutover.Migration(f"other-{n}", identity, identity, default=mode) for n in range(names)
        ]
        for migration in others:
            migration(0)
        assert runtime.flush(drain_timeout=60), "the flush must reach the store"
        second_rss = rss_bytes()
        del others, migration
        gc.collect()
        assert runtime.flush(drain_timeout=60), "the flush must reach the store"
        report = operations.stats(runtime.store, sample_name, 86400, runtime.clock() + 60)
        stored_calls = report.legacy.calls + report.new.calls
        out: dict[str, Any] = {
            "telemetry_entries_after_release": len(runtime.telemetry),
            "stored_calls_of_last_name": stored_calls,
            "expected_calls_of_last_name": calls * (2 if mode == "shadow" else 1),
            "flush_ms": {
                "after_the_calls": round(flush_counted * 1000, 1),
                "nothing_new": round(flush_idle * 1000, 1),
            },
        }
        if not trace:
            out.update(
                rss_mb={
                    "before": round(start_rss / 2**20, 1),
                    "with_migrations": round(held_rss / 2**20, 1),
                    "after_release": round(released_rss / 2**20, 1),
                    "with_as_many_other_names": round(second_rss / 2**20, 1),
                },
                rss_kb_per_name=round((held_rss - start_rss) / names / 1024, 2),
            )
            return out
        assert start_snapshot and held_snapshot and released_snapshot
        tracemalloc.stop()
        filters = [tracemalloc.Filter(False, tracemalloc.__file__)]
        start_snapshot = start_snapshot.filter_traces(filters)
        held = held_snapshot.filter_traces(filters).compare_to(start_snapshot, "lineno")
        released = released_snapshot.filter_traces(filters).compare_to(start_snapshot, "lineno")
        out.update(
            traced_bytes_per_name=round(sum(s.size_diff for s in held) / names),
            retained_bytes_per_name_after_release=round(sum(s.size_diff for s in released) / names),
            top_sites_per_name={
                _site(stat): round(stat.size_diff / names)
                for stat in sorted(held, key=lambda s: -s.size_diff)[:8]
            },
        )
        return out


def _site(stat: tracemalloc.StatisticDiff) -> str:
    frame = stat.traceback[0]
    parts = frame.filename.split(os.sep)
    short = os.sep.join(parts[parts.index("cutover") :]) if "cutover" in parts else parts[-1]
    return f"{short}:{frame.lineno}"


def run(names: int, calls: int, mode: str) -> dict[str, Any]:
    """Both runs, each in a fresh interpreter so the first cannot lend the second its memory."""
    results: dict[str, Any] = {"names": names, "calls_per_name": calls, "mode": mode}
    for trace in (False, True):
        started = time.perf_counter()
        command = [
            sys.executable,
            __file__,
            "--names",
            str(names),
            "--calls",
            str(calls),
            "--mode",
            mode,
            "--single",
        ]
        if trace:
            command.append("--trace")
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        results["traced" if trace else "untraced"] = {
            **json.loads(output),
            "seconds": round(time.perf_counter() - started, 1),
        }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--names", type=int, default=10_000)
    parser.add_argument("--calls", type=int, default=3)
    parser.add_argument("--mode", choices=("legacy", "shadow"), default="legacy")
    parser.add_argument("--single", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.single:
        print(json.dumps(measure(options.names, options.calls, options.mode, options.trace)))
        rt.shutdown()
        return
    emit("memory_per_name", run(options.names, options.calls, options.mode))


if __name__ == "__main__":
    main()
