"""Run every benchmark and print one JSON document (the figures in docs/performance.md).

    make bench            # or: python bench/run.py [--server postgresql://postgres@127.0.0.1/test]

Benchmarks that need PostgreSQL run against ``--server`` and are reported as skipped, with the
reason, when it cannot be reached.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shutil
import subprocess
from typing import Any

import psycopg

import audit
import canary_million
import controller_tick
import flags
import flush_throughput
import http_api
import latency_resolution
import memory_per_name
import overhead
import proxy
import replay
import sequential
import shadow_latency
import tick_cli
from _harness import machine


def quietly(function: Any, *arguments: Any) -> Any:
    with contextlib.redirect_stdout(io.StringIO()):
        return function(*arguments)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--server", default="postgresql://postgres@127.0.0.1:5432/test")
    server = parser.parse_args().server
    results: dict[str, Any] = {"machine": machine()}
    results["overhead"] = quietly(overhead.run, 300_000)
    results["shadow_latency"] = quietly(shadow_latency.run, 5000)
    results["canary_million"] = quietly(canary_million.run, 1_000_000, 4)
    results["memory_per_name"] = quietly(memory_per_name.run, 10_000, 3, "legacy")
    # 100,000 calls and 3-second loads (flags.py's defaults: 200,000 and 5 s).
    results["flags"] = quietly(flags.run, 100_000, 3.0, 20)
    # proxy.py --quick: 3-second wrk runs, one round; two 3-second rounds at 500 requests a
    # second; 256 MiB streamed. The full run is recorded in docs/performance.md.
    missing = [tool for tool in ("wrk", "nginx") if shutil.which(tool) is None]
    if missing:
        results["proxy"] = (
            f"skipped: not installed: {', '.join(missing)} (apt-get install {' '.join(missing)})"
        )
    else:
        results["proxy"] = quietly(proxy.run, 3.0, 1.0, 1, 500.0, 3.0, 2, 1, 32, 1 << 28)
    # 3,000 requests (replay.py's default: 20,000); the full run is in docs/performance.md.
    results["replay"] = quietly(replay.run, 3000, 32)
    # 200 rollouts of one day, 3 of them validated (sequential.py's defaults: 1,000 of three
    # days, 10 validated, about 3 minutes); the full run is recorded in docs/performance.md.
    results["sequential"] = quietly(sequential.run, 200, 1.0, 10.0, 100, 0.01, 3)
    # 50 runs at a log-spread of 0.3 (latency_resolution.py's default: 200 runs, about a
    # minute); the full runs at 0.2, 0.3 and 0.5 are recorded in docs/performance.md.
    results["latency_resolution"] = quietly(latency_resolution.run, 50, 10_000, 500, 0.3)
    # Five cron runs of `cutover rollout tick` on SQLite (tick_cli.py's default: seven, and
    # beside an earlier cutover with --anchor-src, as recorded in docs/performance.md).
    results["tick_cli"] = quietly(tick_cli.run, None, 5, 30)
    try:
        psycopg.connect(server, connect_timeout=3).close()
    except psycopg.OperationalError as error:
        results["postgresql"] = f"skipped: cannot reach {server}: {error}".strip()
    else:
        results["overhead_postgresql_background"] = quietly(overhead.run, 300_000, server, True)
        results["flush_throughput"] = quietly(flush_throughput.run, server, 50, 10.0)
        # Smaller than controller_tick.py's defaults (200 migrations, 30 days: about 4 minutes,
        # mostly loading); the full run is recorded in docs/performance.md.
        results["controller_tick"] = quietly(controller_tick.run, server, 50, 7.0, 6.0, 3)
        # 3-second wrk runs, one round (http_api.py --quick); the full run (10 s, 3 rounds) is
        # recorded in docs/performance.md.
        if shutil.which("wrk") is None:
            results["http_api"] = "skipped: wrk is not installed (apt-get install wrk)"
        else:
            results["http_api"] = quietly(http_api.run, server, 1000, 3.0, 1.0, 1)
        # 200,000 rows and one run of each tool (audit.py's defaults: 1,000,000 rows, the
        # median of 3 runs); reladiff runs from its own virtual environment, made on first use.
        try:
            results["audit"] = quietly(audit.run, server, 200_000, 1)
        except subprocess.CalledProcessError as error:
            results["audit"] = f"skipped: cannot install reladiff: {error}"
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
