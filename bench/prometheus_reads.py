"""The controller's and ``cutover stats``' reads of windows from Prometheus, beside the same
reads from PostgreSQL, for many instances and migrations.

One process counts calls of ``--migrations`` migrations and exposes cutover's /metrics on
``--instances`` ports, so a real Prometheus (scraping every 2 s) holds the series of that
many instances. PostgreSQL holds the same instances' windows (each writes every minute of the
span). Rounds alternate: the read of a migration's totals over 10 minutes (``cutover stats``,
``cutover check``) and of its per-minute series with histograms (the controller, the dashboard),
once from each source.

    python bench/prometheus_reads.py [--instances 50] [--migrations 10] [--scrape 65]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import threading
import time
from pathlib import Path

from prometheus_client import start_http_server

import cutover
from _harness import emit, percentile, running, scratch_schema
from cutover import runtime as rt
from cutover.model import Mode, State
from cutover.store import FlushBatch
from cutover.telemetry.source import PrometheusTelemetry
from cutover.telemetry.windows import WindowDelta

SPAN = 600.0  # the span each read covers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--server", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--instances", type=int, default=50)
    parser.add_argument("--migrations", type=int, default=10)
    parser.add_argument("--scrape", type=float, default=65.0, help="seconds of scrapes first")
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    names = [f"bench{i}" for i in range(args.migrations)]
    with scratch_schema(args.server) as url, tempfile.TemporaryDirectory() as folder:
        runtime = cutover.configure(url, wait=2, flush_interval=3600, refresh_interval=3600)
        try:
            store = runtime.store
            for name in names:
                state = State(mode=Mode.SHADOW, sample=1.0)
                store.write_state(
                    name, state, expected_version=0, actor="bench", reason="b", at=time.time()
                )
            runtime.refresh()
            migrations = [
                cutover.Migration(name, legacy=_slow, new=_slow, unit=str) for name in names
            ]
            stop = threading.Event()

            def traffic() -> None:
                while not stop.is_set():
                    for migration in migrations:
                        migration(random.randrange(1000))
                    time.sleep(0.01)

            thread = threading.Thread(target=traffic, daemon=True)
            thread.start()
            ports = [
                start_http_server(0, addr="127.0.0.1")[0].server_port for _ in range(args.instances)
            ]
            targets = [f"127.0.0.1:{port}" for port in ports]
            config = Path(folder) / "prometheus.yml"
            config.write_text(
                json.dumps(
                    {
                        "global": {"scrape_interval": "2s", "scrape_timeout": "2s"},
                        "scrape_configs": [
                            {"job_name": "app", "static_configs": [{"targets": targets}]}
                        ],
                    }
                )
            )
            argv = [
                "prometheus",
                f"--config.file={config}",
                f"--storage.tsdb.path={Path(folder) / 'data'}",
                "--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ]
            with running(argv, None, Path(folder) / "prometheus.log", ready="/-/ready") as (
                prom,
                _,
            ):
                time.sleep(args.scrape)
                _store_windows(store, runtime, names, args.instances)
                source = PrometheusTelemetry(prom)
                results = _rounds(store, source, names, args.rounds)
                stop.set()
                thread.join()
                series = source._instant("count({__name__=~'cutover_.*'})", None)
                results["prometheus_series"] = int(series[0][1]) if series else 0
        finally:
            rt.shutdown()
    emit(
        "prometheus_reads",
        {
            "instances": args.instances,
            "migrations": args.migrations,
            "load_average": os.getloadavg(),
            **results,
        },
    )


def _slow(x: int) -> int:
    time.sleep(0)
    return x


def _store_windows(store, runtime, names, instances) -> None:  # type: ignore[no-untyped-def]
    """Every instance's windows of the span, as flushes would have written them."""
    totals = {name: runtime.telemetry[name].totals() for name in names}
    now = time.time()
    starts = [int(now // 60 * 60) - 60 * k for k in range(int(SPAN // 60) + 1)]
    for instance in range(instances):
        windows = [(start, WindowDelta(name, totals[name])) for start in starts for name in names]
        store.write_flush(FlushBatch(f"i{instance}", 1, now, windows, run=f"run{instance}"))


def _rounds(store, source, names, rounds):  # type: ignore[no-untyped-def]
    timings: dict[str, list[float]] = {}
    for round_ in range(rounds):
        name = names[round_ % len(names)]
        now = time.time()
        since = now - SPAN
        for label, reader in (("postgresql", store), ("prometheus", source)):
            began = time.perf_counter()
            reader.windows(name, since, now)
            timings.setdefault(f"{label}_totals_ms", []).append(
                (time.perf_counter() - began) * 1000
            )
            began = time.perf_counter()
            reader.series(name, since, now, histograms_since=since)
            timings.setdefault(f"{label}_series_ms", []).append(
                (time.perf_counter() - began) * 1000
            )
    out = {key: round(percentile(values, 0.5), 2) for key, values in sorted(timings.items())}
    for read in ("totals", "series"):
        out[f"{read}_ratio"] = round(out[f"prometheus_{read}_ms"] / out[f"postgresql_{read}_ms"], 2)
    return out


if __name__ == "__main__":
    main()
