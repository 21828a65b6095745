"""Shared helpers for the benchmarks: a throwaway store, timing loops, percentiles, JSON output."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cutover
from cutover import runtime as rt


@contextlib.contextmanager
def fresh_runtime(store: str | None = None, **options: Any) -> Iterator[rt.Runtime]:
    """cutover configured on a new SQLite file (or a scratch schema of ``store`` when it is a
    PostgreSQL URL); shut down and cleaned up afterwards."""
    with contextlib.ExitStack() as stack:
        if store is None:
            folder = stack.enter_context(tempfile.TemporaryDirectory())
            url = f"sqlite:///{Path(folder) / 'bench.db'}"
        else:
            url = stack.enter_context(scratch_schema(store))
        runtime = cutover.configure(url, wait=2, **options)
        try:
            yield runtime
        finally:
            rt.shutdown()


@contextlib.contextmanager
def scratch_schema(server: str) -> Iterator[str]:
    """A store URL in a new schema of the PostgreSQL at ``server``, dropped afterwards."""
    import secrets

    import psycopg

    schema = f"cutover_bench_{secrets.token_hex(4)}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        joiner = "&" if "?" in server else "?"
        yield f"{server}{joiner}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def per_call_ns(loop: Callable[[int], None], calls: int, repeats: int = 7) -> float:
    """Nanoseconds per call: the fastest of ``repeats`` runs of ``loop(calls)``."""
    loop(min(calls, 10_000))  # warm up
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter_ns()
        loop(calls)
        best = min(best, (time.perf_counter_ns() - started) / calls)
    return best


def in_threads(work: Callable[[int], None], count: int) -> float:
    """Run ``work(0)`` .. ``work(count - 1)`` on threads of their own; the seconds it took."""
    threads = [threading.Thread(target=work, args=(n,)) for n in range(count)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - began


def throughput(latencies: list[float], rows: int, elapsed: float) -> dict[str, float]:
    """Writes a second, rows a second and the write latency of a saturated writer."""
    return {
        "flushes_per_second": round(len(latencies) / elapsed, 1),
        "rows_per_second": round(rows / elapsed),
        "flush_p50_ms": round(percentile(latencies, 0.5) * 1000, 2),
        "flush_p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q * len(ordered)) - 1))
    return ordered[rank]


def timings_ms(call: Callable[[int], Any], count: int) -> list[float]:
    """Milliseconds each of ``count`` sequential calls took."""
    samples = []
    for i in range(count):
        started = time.perf_counter_ns()
        call(i)
        samples.append((time.perf_counter_ns() - started) / 1e6)
    return samples


def summary(samples: list[float]) -> dict[str, float]:
    return {
        "calls": len(samples),
        "p50_ms": round(percentile(samples, 0.50), 4),
        "p99_ms": round(percentile(samples, 0.99), 4),
        "mean_ms": round(sum(samples) / len(samples), 4),
    }


def latencies_ms(call: Callable[[int], Any], count: int) -> dict[str, float]:
    return summary(timings_ms(call, count))


def machine() -> dict[str, Any]:
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "cutover": cutover.__version__,
    }


def emit(name: str, results: dict[str, Any]) -> dict[str, Any]:
    document = {"benchmark": name, "machine": machine(), **results}
    print(json.dumps(document, indent=2))
    return document


# -- servers and wrk, shared by the HTTP benchmarks ------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def running(
    argv: list[str], env: dict[str, str] | None, log: Path, ready: str = "/healthz"
) -> Iterator[tuple[str, int]]:
    """A server process started with ``argv`` (``{port}`` filled in); its URL and pid, once
    ``ready`` answers 200. Stopped afterwards."""
    import httpx

    port = free_port()
    argv = [part.format(port=port) for part in argv]
    with log.open("w") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    what = " ".join(argv[:3])
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{what} exited: {log.read_text()}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}{ready}", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not answer: {log.read_text()}")
            time.sleep(0.1)
        yield url, process.pid
    finally:
        stop(process)


def stop(process: subprocess.Popen[Any]) -> None:
    """SIGTERM, then SIGKILL if it has not ended within 15 s."""
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


WRK_REPORT = r"""
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests": %d, "duration_us": %d, "connect_errors": %d, "read_errors": %d,'
      .. ' "write_errors": %d, "non_2xx": %d, "timeouts": %d, "mean_us": %.1f,'
      .. ' "p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max))
end
"""
"""A wrk script's ``done()`` that prints the run's figures as one JSON line (``BENCH {...}``)."""


def wrk_argv(
    url: str, script: Path, threads: int, connections: int, seconds: float, *args: str
) -> list[str]:
    """The wrk command the benchmarks share: latency percentiles, 10 s timeouts, a script
    (ending in :data:`WRK_REPORT`), and ``args`` for it after ``--``."""
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "--latency"]
    argv += ["--timeout", "10s", "-s", str(script), url]
    return [*argv, "--", *args] if args else argv


def clock_ticks_of(pid: int) -> int:
    """User and system CPU of a process, all its threads, in clock ticks."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def machine_ticks() -> tuple[int, int]:
    """(busy, total) CPU clock ticks of the whole machine."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values[:8]) - idle, sum(values[:8])


def wrk_run(argv: list[str], pid: int, env: dict[str, str] | None = None) -> dict[str, Any]:
    """One wrk run (its script ending in :data:`WRK_REPORT`) against the server process
    ``pid``: requests a second, latencies, errors, and the CPU the server, wrk and the rest of
    the machine took meanwhile."""
    import resource

    hz = os.sysconf("SC_CLK_TCK")
    before_children = resource.getrusage(resource.RUSAGE_CHILDREN)
    server_before = clock_ticks_of(pid)
    busy_before, total_before = machine_ticks()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
    busy_after, total_after = machine_ticks()
    server_s = (clock_ticks_of(pid) - server_before) / hz
    after_children = resource.getrusage(resource.RUSAGE_CHILDREN)
    wrk_s = (after_children.ru_utime + after_children.ru_stime) - (
        before_children.ru_utime + before_children.ru_stime
    )
    line = next(x for x in done.stdout.splitlines() if x.startswith("BENCH "))
    raw = json.loads(line.removeprefix("BENCH "))
    others_s = max(0.0, (busy_after - busy_before) / hz - server_s - wrk_s)
    requests = raw["requests"]
    errors = sum(raw[k] for k in ("connect_errors", "read_errors", "write_errors", "timeouts"))
    return {
        "requests_per_s": round(requests / (raw["duration_us"] / 1e6), 1),
        "p50_ms": round(raw["p50_us"] / 1000, 2),
        "p90_ms": round(raw["p90_us"] / 1000, 2),
        "p99_ms": round(raw["p99_us"] / 1000, 2),
        "max_ms": round(raw["max_us"] / 1000, 2),
        "requests": requests,
        "non_2xx": raw["non_2xx"],
        "socket_errors": errors,
        "server_cpu_ms_per_request": round(server_s * 1000 / max(1, requests), 3),
        "other_cpu_ms_per_request": round(others_s * 1000 / max(1, requests), 3),
        "wrk_cpu_s": round(wrk_s, 2),
        "machine_busy_share": round(
            (busy_after - busy_before) / max(1, total_after - total_before), 3
        ),
    }


def medians(runs: list[dict[str, Any]], keys: tuple[str, ...]) -> dict[str, Any]:
    """The median of each of ``keys`` over the rounds ``runs``."""
    return {key: round(statistics.median(run[key] for run in runs), 3) for key in keys}
