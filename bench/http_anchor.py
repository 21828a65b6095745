"""The admin API a team would otherwise write by hand: the anchor of ``bench/http_api.py``.

Two read endpoints over cutover's tables, with the responses of ``cutover serve``:

    GET /api/v1/migrations/{name}/state
    GET /api/v1/migrations/{name}/series?window=1h[&until=UNIX]

FastAPI and uvicorn as ``cutover serve`` runs them (one process, the same thread pool for
plain ``def`` endpoints), one shared token compared with ``==``, raw psycopg on a small pool
of autocommit connections (2 opened at start, at most 6, as many as cutover's engine may open),
the state read with one SELECT, and the series with the same two per-minute aggregates
cutover's store runs, folded and turned into percentiles in Python. No roles, no token
hashing, no per-transaction timeouts, no connection checks, no metrics, no security headers.

    ANCHOR_DATABASE=postgresql://... ANCHOR_TOKEN=... python bench/http_anchor.py --port 8081
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import queue
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import uvicorn
from fastapi import FastAPI, HTTPException, Request

COUNTERS = (
    "calls",
    "errors",
    "expected",
    "exposures",
    "timeouts",
    "fallbacks",
    "comparisons",
    "drifts",
)
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class Pool:
    """At most ``max_size`` connections, ``min_size`` of them opened up front, each kept open
    once made (what psycopg_pool would do with the same sizes)."""

    def __init__(self, conninfo: str, min_size: int = 2, max_size: int = 6) -> None:
        self.conninfo = conninfo
        self.idle: queue.LifoQueue[psycopg.Connection[Any]] = queue.LifoQueue()
        self.slots = threading.BoundedSemaphore(max_size)
        for _ in range(min_size):
            self.idle.put(self.open())

    def open(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.conninfo, autocommit=True)

    @contextlib.contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        with self.slots:
            try:
                conn = self.idle.get_nowait()
            except queue.Empty:
                conn = self.open()
            try:
                yield conn
            except BaseException:
                conn.close()
                raise
            self.idle.put(conn)


def midpoint_ms(bucket: int) -> float:
    """The middle of a cutover histogram bucket (64 log-linear buckets per power of two of
    nanoseconds, exact below 128 ns), in milliseconds."""
    if bucket < 128:
        return round(bucket / 1e6, 6)
    shift = (bucket >> 6) - 1
    mantissa = (bucket & 63) + 64
    return round(((mantissa << shift) + ((mantissa + 1) << shift)) / 2 / 1e6, 6)


def percentiles(buckets: dict[int, int]) -> list[float | None]:
    """p50, p95 and p99 by nearest rank over the buckets, at their midpoints."""
    total = sum(buckets.values())
    if not total:
        return [None, None, None]
    ordered = sorted(buckets.items())
    out = []
    for q in (0.50, 0.95, 0.99):
        rank = max(1, math.ceil(q * total))
        seen = 0
        for bucket, count in ordered:
            seen += count
            if seen >= rank:
                out.append(midpoint_ms(bucket))
                break
    return out


def arm_json(counts: dict[str, int], buckets: dict[int, int]) -> dict[str, Any]:
    p50, p95, p99 = percentiles(buckets)
    calls = counts.get("calls", 0)
    errors = counts.get("errors", 0)
    return {
        "calls": calls,
        "errors": errors,
        "error_rate": errors / calls if calls else None,
        "expected": counts.get("expected", 0),
        "exposures": counts.get("exposures", 0),
        "p50_ms": p50,
        "p95_ms": p95,
        "p99_ms": p99,
        "timeouts": counts.get("timeouts", 0),
        "fallbacks": counts.get("fallbacks", 0),
    }


def seconds(text: str) -> float:
    match = re.fullmatch(r"(\d+)([smhd])", text)
    if not match:
        raise HTTPException(422, "window: write it like 30s, 5m, 1h or 14d")
    return int(match.group(1)) * UNITS[match.group(2)]


def create_app(conninfo: str, token: str) -> FastAPI:
    app = FastAPI()
    pool = Pool(conninfo)
    expected = f"Bearer {token}"

    def authorize(request: Request) -> None:
        if request.headers.get("authorization") != expected:
            raise HTTPException(401, "bad token")

    def state_row(conn: psycopg.Connection[Any], name: str) -> tuple[Any, ...]:
        row = conn.execute(
            "SELECT mode, percent, sample, fallback, pins, version, updated_at, updated_by"
            " FROM cutover_states WHERE name = %s",
            (name,),
        ).fetchone()
        if row is None:
            raise HTTPException(404, f"no migration named {name!r}")
        return row

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/api/v1/migrations/{name}/state")
    def state(name: str, request: Request) -> dict[str, Any]:
        authorize(request)
        with pool.connection() as conn:
            mode, percent, sample, fallback, pins, version, at, by = state_row(conn, name)
        effective = percent if mode == "canary" else 100.0 if mode == "new" else 0.0
        return {
            "name": name,
            "stored": True,
            "mode": mode,
            "percent": percent,
            "sample": sample,
            "fallback": fallback,
            "pins": {"new": sorted(pins.get("new", [])), "legacy": sorted(pins.get("legacy", []))},
            "version": version,
            "updated_at": at,
            "updated_by": by,
            "effective_percent": effective,
        }

    @app.get("/api/v1/migrations/{name}/series")
    def series(
        name: str, request: Request, window: str = "1h", until: float | None = None
    ) -> dict[str, Any]:
        authorize(request)
        end = time.time() if until is None else until
        since = end - seconds(window)
        step = max(60.0, (end - since) / 60)
        first = since // step * step
        sums = ", ".join(f"sum({counter})" for counter in COUNTERS)
        span = "migration = %s AND arm IN ('legacy', 'new') AND start >= %s AND start < %s"
        bounds = (name, int(first), int(end))
        with pool.connection() as conn:
            state_row(conn, name)
            windows = conn.execute(
                f"SELECT start, arm, {sums} FROM cutover_windows WHERE {span}"
                " GROUP BY start, arm ORDER BY start",
                bounds,
            ).fetchall()
            buckets = conn.execute(
                "SELECT start, arm, bucket, sum(count) FROM cutover_latency"
                f" WHERE {span} GROUP BY start, arm, bucket",
                bounds,
            ).fetchall()
        count = max(1, math.ceil((end - first) / step))
        counts = [{"legacy": {}, "new": {}} for _ in range(count)]
        hists: list[dict[str, dict[int, int]]] = [{"legacy": {}, "new": {}} for _ in range(count)]
        for start, arm, *values in windows:
            slot = counts[int((start - first) // step)][arm]
            for counter, value in zip(COUNTERS, values, strict=True):
                slot[counter] = slot.get(counter, 0) + int(value)
        for start, arm, bucket, total in buckets:
            slot = hists[int((start - first) // step)][arm]
            slot[bucket] = slot.get(bucket, 0) + int(total)
        points = []
        for index in range(count):
            legacy, new = counts[index]["legacy"], counts[index]["new"]
            comparisons = legacy.get("comparisons", 0) + new.get("comparisons", 0)
            drifts = legacy.get("drifts", 0) + new.get("drifts", 0)
            points.append(
                {
                    "start": first + index * step,
                    "legacy": arm_json(legacy, hists[index]["legacy"]),
                    "new": arm_json(new, hists[index]["new"]),
                    "comparisons": comparisons,
                    "drifts": drifts,
                    "parity_rate": 1 - drifts / comparisons if comparisons else None,
                }
            )
        return {
            "migration": name,
            "since": first,  # the first bucket's start, as cutover reports it
            "until": end,
            "step_seconds": step,
            "points": points,
        }

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    options = parser.parse_args()
    app = create_app(os.environ["ANCHOR_DATABASE"], os.environ["ANCHOR_TOKEN"])
    uvicorn.run(app, host=options.host, port=options.port, log_level="warning", server_header=False)


if __name__ == "__main__":
    main()
