"""The admin API under load: ``cutover serve`` beside a hand-written FastAPI app, on PostgreSQL.

A scratch schema gets 1,000 migrations, each with a stored state and per-minute telemetry for
the hour before the run and the minutes it lasts (so every series request finds a full hour):
counters for both arms shaped like shadow traffic at 300 to 3,000 calls a minute, and a
latency histogram of 18 to 22 non-empty buckets per arm and minute (the store merges every
instance's flushes into one row per migration, arm, minute and bucket, so how many instances
wrote them does not change what a read finds). Rows are loaded with ``INSERT ... SELECT
generate_series`` in time order, minute after minute, and indexed afterwards.

Two servers then run as processes of their own on loopback: ``python -m cutover serve`` with
a viewer token in a tokens file, and the anchor of ``bench/http_anchor.py`` (FastAPI and
uvicorn, one shared token, raw psycopg, the same SELECTs): one uvicorn process each, at most
6 database connections each. The responses of both are checked to be equal before the load.
Then ``wrk`` loads each endpoint of each server in turn with the same command, every thread
walking round-robin over all 1,000 names from its own offset (a Lua script):

    GET /api/v1/migrations/{name}/state             what scripts poll
    GET /api/v1/migrations/{name}/series?window=1h  the dashboard's chart: 61 points, both arms

Each endpoint gets a warm-up run on both servers, then ``--rounds`` alternating runs (cutover,
anchor, cutover, ...); each figure is the median over the rounds, and the ratios are taken
between those medians. The machine has few cores and wrk, the server and PostgreSQL share
them: the CPU each took during a run is reported beside the figures (server CPU per request
depends least on the sharing), and so are the PostgreSQL sessions opened during the runs
(database-wide: on a quiet machine, the server's new connections).

    python bench/http_api.py [--server postgresql://postgres@127.0.0.1:5432/test]
                             [--migrations 1000] [--duration 10] [--rounds 3]
                             [--threads 2] [--connections 16] [--quick]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import math
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg

from _harness import (
    WRK_REPORT,
    emit,
    medians,
    running,
    scratch_schema,
    wrk_run,
)
from _harness import wrk_argv as shared_wrk_argv
from controller_tick import conninfo, fill
from cutover.http import hash_token, new_token
from cutover.store.sql import SqlStore
from cutover.telemetry.windows import COUNTERS

HERE = Path(__file__).resolve().parent
MINUTE = 60
ENDPOINTS = {
    "state": "/api/v1/migrations/%s/state",
    "series_1h": "/api/v1/migrations/%s/series?window=1h",
}

# -- loading ---------------------------------------------------------------------------------

STATES_SQL = """
INSERT INTO cutover_states (name, mode, percent, sample, fallback, pins, version, updated_at,
                            updated_by)
SELECT 'migration-' || lpad(m::text, %(width)s, '0'),
       CASE WHEN m %% 3 = 0 THEN 'canary' ELSE 'shadow' END,
       CASE WHEN m %% 3 = 0 THEN (m %% 4 + 1) * 5 ELSE 0 END,
       CASE WHEN m %% 3 = 0 THEN 1.0 ELSE 0.25 END,
       true,
       (CASE WHEN m %% 10 = 0 THEN '{"new": ["tenant-7", "tenant-42"], "legacy": []}'
             ELSE '{"new": [], "legacy": []}' END)::json,
       1 + m %% 17,
       %(now)s - m * 61,
       'alice'
FROM generate_series(0, %(migrations)s - 1) AS m
"""

LOADED = 10
"""The counters the load writes, calls to hook_errors; the later ones keep their default, 0, so
a counter added to the store does not break the load."""

# i runs over minutes x migrations x arms, in time order (as instances write them).
WINDOWS_SQL = """
INSERT INTO cutover_windows (migration, arm, start, {counters})
SELECT 'migration-' || lpad(m::text, %(width)s, '0'),
       CASE WHEN a = 0 THEN 'legacy' ELSE 'new' END,
       start,
       calls,
       floor(calls * CASE WHEN a = 0 THEN 0.002 ELSE 0.003 END * (0.5 + random()) + random()),
       floor(calls * 0.0005 * (0.5 + random()) + random()),
       CASE WHEN a = 0 THEN 0 ELSE calls END,
       0,
       CASE WHEN a = 0 THEN 0 ELSE calls - floor(random() * 3) END,
       CASE WHEN a = 0 THEN 0 ELSE floor(calls * 0.0002 * (0.5 + random()) + random()) END,
       0, 0, 0
FROM (
    SELECT m, a, start,
           floor((300 + (m * 7919) %% 2701) * (0.8 + 0.4 * random()))::bigint AS calls
    FROM (
        SELECT %(first)s + (i / (2 * %(migrations)s)) * 60 AS start,
               ((i / 2) %% %(migrations)s)::int AS m,
               (i %% 2)::int AS a
        FROM generate_series(%(begin)s::bigint, %(end)s::bigint - 1) AS i
    ) AS k
) AS t
"""

# Buckets (64 per power of two) from about 1 ms (bucket 954) up; new sits 16 buckets (about
# 25%) above legacy.
HISTOGRAMS_SQL = """
INSERT INTO cutover_latency (migration, arm, start, bucket, count)
SELECT 'migration-' || lpad(m::text, %(width)s, '0'),
       CASE WHEN a = 0 THEN 'legacy' ELSE 'new' END,
       start,
       954 + (m %% 24) * 8 + 16 * a + b,
       greatest(1, floor(calls * (CASE WHEN b < peak THEN (b + 1.0) / (peak + 1)
                                       ELSE (k - b)::numeric / (k - peak) END)
                         / (0.5 * k) + random()))::bigint
FROM (
    SELECT m, a, start, k, (k * 0.35)::int AS peak,
           floor((300 + (m * 7919) %% 2701) * (0.8 + 0.4 * random()))::bigint AS calls
    FROM (
        SELECT %(first)s + (i / (2 * %(migrations)s)) * 60 AS start,
               ((i / 2) %% %(migrations)s)::int AS m,
               (i %% 2)::int AS a,
               18 + ((i * 7 + i / 2 * 13) %% 5)::int AS k
        FROM generate_series(%(begin)s::bigint, %(end)s::bigint - 1) AS i
    ) AS r
) AS t, generate_series(0, k - 1) AS b
"""


def width_of(migrations: int) -> int:
    return max(3, len(str(migrations - 1)))


def load(url: str, migrations: int, first: int, minutes: int) -> dict[str, Any]:
    """States, then windows and histograms (each table on a connection of its own)."""
    began = time.perf_counter()
    _create_tables(url)
    parameters = {"migrations": migrations, "first": first, "width": width_of(migrations)}
    with psycopg.connect(conninfo(url), autocommit=True) as conn:
        conn.execute(STATES_SQL, {**parameters, "now": time.time()})
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        windows = pool.submit(
            fill,
            url,
            "cutover_windows",
            WINDOWS_SQL.format(counters=", ".join(COUNTERS[:LOADED])),
            parameters,
            range(minutes),
        )
        histograms = pool.submit(
            fill, url, "cutover_latency", HISTOGRAMS_SQL, parameters, range(minutes)
        )
        timings: dict[str, Any] = {
            "cutover_windows": windows.result(),
            "cutover_latency": histograms.result(),
        }
    with psycopg.connect(conninfo(url), autocommit=True) as conn:
        for table in ("cutover_states", "cutover_windows", "cutover_latency"):
            conn.execute(f"VACUUM ANALYZE {table}")
        rows = {
            table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # type: ignore[index]
            for table in ("cutover_states", "cutover_windows", "cutover_latency")
        }
    timings["load_s"] = round(time.perf_counter() - began, 1)
    return {"rows": rows, "timings": timings}


def _create_tables(url: str) -> None:
    store = SqlStore(url)
    try:
        store.states()  # creates the schema
    finally:
        store.close()


# -- load ------------------------------------------------------------------------------------

LUA = (
    r"""
-- Every thread walks round-robin over migration-000 .. from its own offset, with the token
-- of $BENCH_TOKEN.
local names, template, counter, threads = {}, nil, 0, 0

function setup(thread)
  thread:set("offset", threads * 397)
  threads = threads + 1
end

function init(args)
  template = args[1]
  local count, width = tonumber(args[2]), tonumber(args[3])
  for i = 0, count - 1 do
    names[i + 1] = string.format("migration-%0" .. width .. "d", i)
  end
  counter = (offset or 0) % count
  wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN")
end

function request()
  counter = counter % #names + 1
  return wrk.format("GET", string.format(template, names[counter]))
end

"""
    + WRK_REPORT
)


def wrk_argv(
    base: str, endpoint: str, script: Path, options: argparse.Namespace, seconds: float
) -> list[str]:
    return shared_wrk_argv(
        base,
        script,
        options.threads,
        options.connections,
        seconds,
        ENDPOINTS[endpoint],
        str(options.migrations),
        str(width_of(options.migrations)),
    )


def sessions(monitor: psycopg.Connection[Any]) -> int:
    """PostgreSQL sessions opened on the database so far, by any client (a backend reports
    its own start within a second): on a quiet machine, the connections the server opened."""
    row = monitor.execute(
        "SELECT sessions FROM pg_stat_database WHERE datname = current_database()"
    ).fetchone()
    assert row is not None
    return int(row[0])


def load_run(
    url: str,
    pid: int,
    endpoint: str,
    script: Path,
    token: str,
    options: argparse.Namespace,
    monitor: psycopg.Connection[Any],
) -> dict[str, Any]:
    """One wrk run against one server: its figures, the CPU each party took and how many
    database connections the server opened meanwhile."""
    opened = sessions(monitor)
    figures = wrk_run(
        wrk_argv(url, endpoint, script, options, options.duration),
        pid,
        {**os.environ, "BENCH_TOKEN": token},
    )
    time.sleep(1.2)  # a backend reports its own start within a second
    figures["database_sessions_opened"] = sessions(monitor) - opened
    # other_cpu_ms_per_request: PostgreSQL, and whatever else ran on the machine meanwhile
    return figures


def warm(url: str, endpoint: str, script: Path, token: str, options: argparse.Namespace) -> None:
    env = {**os.environ, "BENCH_TOKEN": token}
    argv = wrk_argv(url, endpoint, script, options, options.warmup)
    subprocess.run(argv, env=env, capture_output=True, check=True)


# -- checks ----------------------------------------------------------------------------------


def same_responses(
    servers: dict[str, tuple[str, str]], names: list[str], until: float
) -> dict[str, Any]:
    """Both servers answer both endpoints alike for a few names (series at a fixed end)."""
    compared = 0
    for name in names:
        for endpoint, template in ENDPOINTS.items():
            path = template % name + (f"&until={until}" if endpoint != "state" else "")
            bodies = []
            for url, token in servers.values():
                response = httpx.get(
                    url + path, headers={"Authorization": f"Bearer {token}"}, timeout=30
                )
                response.raise_for_status()
                bodies.append(response.json())
            if bodies[0] != bodies[1]:
                raise AssertionError(f"the servers answer {path} differently")
            compared += 1
    sample = bodies[0]
    return {
        "identical_responses": compared,
        "series_points": len(sample["points"]),
        "series_bytes": len(json.dumps(sample)),
    }


# -- the run ---------------------------------------------------------------------------------


SUMMARY = (
    "requests_per_s",
    "p50_ms",
    "p99_ms",
    "server_cpu_ms_per_request",
    "other_cpu_ms_per_request",
    "wrk_cpu_s",
    "machine_busy_share",
)
PER_RUN = ("requests_per_s", "p50_ms", "p99_ms", "max_ms", "server_cpu_ms_per_request")


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median of each figure over the rounds, and each round's main figures."""
    out = medians(runs, SUMMARY)
    out["requests"] = sum(run["requests"] for run in runs)
    out["database_sessions_opened"] = sum(run["database_sessions_opened"] for run in runs)
    out["runs"] = [{key: run[key] for key in PER_RUN} for run in runs]
    return out


def run(
    server: str,
    migrations: int = 1000,
    duration: float = 10.0,
    warmup: float = 3.0,
    rounds: int = 3,
    threads: int = 2,
    connections: int = 16,
) -> dict[str, Any]:
    options = argparse.Namespace(
        migrations=migrations,
        duration=duration,
        warmup=warmup,
        rounds=rounds,
        threads=threads,
        connections=connections,
    )
    per_endpoint = 2 * options.warmup + 2 * options.rounds * options.duration
    run_seconds = len(ENDPOINTS) * (per_endpoint + 4)
    now = int(time.time())
    first = (now - 3600) // MINUTE * MINUTE - 2 * MINUTE
    last = now + 600 + int(run_seconds)  # loading, starting, the runs
    minutes = math.ceil((last - first) / MINUTE)
    names = [f"migration-{m:0{width_of(options.migrations)}d}" for m in range(options.migrations)]
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(scratch_schema(server))
        loaded = load(url, options.migrations, first, minutes)
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        script = folder / "names.lua"
        script.write_text(LUA)
        viewer = new_token()
        (folder / "tokens.yaml").write_text(
            f"tokens:\n  - name: bench\n    role: viewer\n    sha256: {hash_token(viewer)}\n"
        )
        shared = new_token()
        env = {k: v for k, v in os.environ.items() if k != "CUTOVER_TOKENS"}
        cutover_argv = [sys.executable, "-m", "cutover", "serve", "--port", "{port}"]
        cutover_argv += ["--tokens", str(folder / "tokens.yaml")]
        anchor_argv = [sys.executable, str(HERE / "http_anchor.py"), "--port", "{port}"]
        cutover_url, cutover_pid = stack.enter_context(
            running(cutover_argv, {**env, "CUTOVER_STORE": url}, folder / "cutover.log")
        )
        anchor_url, anchor_pid = stack.enter_context(
            running(
                anchor_argv,
                {**env, "ANCHOR_DATABASE": conninfo(url), "ANCHOR_TOKEN": shared},
                folder / "anchor.log",
            )
        )
        servers = {
            "cutover": (cutover_url, viewer, cutover_pid),
            "anchor": (anchor_url, shared, anchor_pid),
        }
        checked = same_responses(
            {k: (u, t) for k, (u, t, _) in servers.items()},
            [names[0], names[len(names) // 2], names[-1]],
            float(now - 30),
        )
        monitor = stack.enter_context(psycopg.connect(conninfo(url), autocommit=True))
        load_average = [round(x, 2) for x in os.getloadavg()]
        results: dict[str, Any] = {}
        for endpoint in ENDPOINTS:
            runs: dict[str, list[dict[str, Any]]] = {"cutover": [], "anchor": []}
            for base, token, _ in servers.values():
                warm(base, endpoint, script, token, options)
            for _ in range(options.rounds):
                for who, (base, token, pid) in servers.items():
                    runs[who].append(load_run(base, pid, endpoint, script, token, options, monitor))
            for who, found in runs.items():
                if any(r["non_2xx"] or r["socket_errors"] for r in found):
                    raise AssertionError(f"{who} {endpoint}: errors under load: {found}")
            mine, theirs = summarize(runs["cutover"]), summarize(runs["anchor"])
            results[endpoint] = {
                "cutover": mine,
                "anchor": theirs,
                "ratio": {
                    "requests_per_s": round(mine["requests_per_s"] / theirs["requests_per_s"], 2),
                    "p99": round(mine["p99_ms"] / theirs["p99_ms"], 2),
                    "server_cpu_per_request": round(
                        mine["server_cpu_ms_per_request"] / theirs["server_cpu_ms_per_request"], 2
                    ),
                },
            }
    template = wrk_argv(
        "http://127.0.0.1:PORT", "state", Path("names.lua"), options, options.duration
    )
    template[-3] = "PATH"
    return {
        "parameters": {
            "migrations": options.migrations,
            "window_minutes_loaded": minutes,
            "duration_s": options.duration,
            "warmup_s": options.warmup,
            "rounds": options.rounds,
            "threads": options.threads,
            "connections": options.connections,
            "server_processes": 1,
            "database_connections_at_most": 6,
            "note": f"wrk, the server and PostgreSQL share the machine's {os.cpu_count()} CPUs",
            "load_average_before": load_average,
        },
        "load": loaded,
        "check": checked,
        **results,
        "command": shlex.join(
            [
                "python",
                "bench/http_api.py",
                f"--server={server}",
                f"--migrations={options.migrations}",
                f"--duration={options.duration:g}",
                f"--warmup={options.warmup:g}",
                f"--rounds={options.rounds}",
                f"--threads={options.threads}",
                f"--connections={options.connections}",
            ]
        ),
        "wrk_command": "BENCH_TOKEN=... " + shlex.join(template),
        "wrk_paths": {endpoint: path % "<name>" for endpoint, path in ENDPOINTS.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--server", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--migrations", type=int, default=1000)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of warm-up per server")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--quick", action="store_true", help="3 s runs, one round")
    options = parser.parse_args()
    if options.quick:
        options.duration, options.warmup, options.rounds = 3.0, 1.0, 1
    emit(
        "http_api",
        run(
            options.server,
            options.migrations,
            options.duration,
            options.warmup,
            options.rounds,
            options.threads,
            options.connections,
        ),
    )


if __name__ == "__main__":
    main()
