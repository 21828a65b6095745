"""`cutover proxy` beside nginx (``proxy_pass`` + ``mirror``) and the direct path, in one run.

Upstreams (``bench/upstream.py``, one process each): legacy answers a 60-byte JSON at once;
new answers the same bytes, either at once or 20 ms later. In front of them, each with one
worker: nginx (one ``worker_processes``; plain ``proxy_pass`` to legacy, and ``proxy_pass`` +
``mirror`` to new, keep-alive upstream connections, X-Forwarded-For set like cutover sets it),
and ``cutover proxy`` in ``legacy`` mode and in ``shadow`` mode with sample 1 (every request
copied to new and compared), on a SQLite store.

1. Throughput, ``wrk`` (closed loop, the same command for each target): requests a second of
   the direct path, nginx, nginx with mirror, cutover legacy and cutover shadow; each target
   warmed up, then ``--rounds`` alternating runs; each figure is the median over the rounds.
   Shadow's comparisons (and copies dropped) are read from the store afterwards.
2. Latency at a fixed rate, new 20 ms slower than legacy: ``bench/open_loop.py`` sends
   ``--rate`` requests a second (open loop: a slow answer never delays the next request) to the
   direct path, nginx with mirror, cutover legacy and cutover shadow, ``--latency-rounds``
   alternating rounds of ``--seconds``; p50/p99 per round, the median of the rounds, and the
   median added over the direct path.
3. Peak resident memory while one client streams a ``--stream`` byte answer (1 GiB) through
   each: the serving process's peak RSS (VmHWM, reset before each stream through
   /proc/PID/clear_refs).

Everything shares the machine's CPUs (wrk or the generator, the proxy, the upstreams): the
load average before the run is reported beside the figures.

    python bench/proxy.py [--duration 10] [--rounds 3] [--rate 500] [--seconds 10]
                          [--latency-rounds 5] [--threads 1] [--connections 32]
                          [--stream 1073741824] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from _harness import WRK_REPORT, emit, free_port, medians, running, stop, wrk_run
from _harness import wrk_argv as shared_wrk_argv

HERE = Path(__file__).resolve().parent
SLOW = 0.020  # new's delay in the latency test, seconds
THROUGHPUT = ("direct", "nginx", "nginx_mirror", "cutover_legacy", "cutover_shadow")
LATENCY = ("direct", "nginx_mirror", "cutover_legacy", "cutover_shadow")
STREAMED = ("nginx", "nginx_mirror", "cutover_legacy", "cutover_shadow")
SUMMARY = ("requests_per_s", "p50_ms", "p99_ms", "server_cpu_ms_per_request", "wrk_cpu_s")
PER_RUN = ("requests_per_s", "p50_ms", "p99_ms", "max_ms")

NGINX_CONF = """
worker_processes 1;
daemon off;
pid {folder}/nginx.pid;
error_log {folder}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {folder}/tmp/body;
  proxy_temp_path {folder}/tmp/proxy;
  fastcgi_temp_path {folder}/tmp/fastcgi;
  uwsgi_temp_path {folder}/tmp/uwsgi;
  scgi_temp_path {folder}/tmp/scgi;
  upstream legacy {{ server 127.0.0.1:{legacy}; keepalive 64; }}
  upstream new_fast {{ server 127.0.0.1:{new_fast}; keepalive 64; }}
  upstream new_slow {{ server 127.0.0.1:{new_slow}; keepalive 64; }}
  proxy_http_version 1.1;
  proxy_set_header Connection "";
  proxy_set_header Host $proxy_host;
  proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
  server {{
    listen 127.0.0.1:{plain};
    location / {{ proxy_pass http://legacy; }}
  }}
  server {{
    listen 127.0.0.1:{mirror_fast};
    location / {{ mirror /-mirror; proxy_pass http://legacy; }}
    location = /-mirror {{ internal; proxy_pass http://new_fast$request_uri; }}
  }}
  server {{
    listen 127.0.0.1:{mirror_slow};
    location / {{ mirror /-mirror; proxy_pass http://legacy; }}
    location = /-mirror {{ internal; proxy_pass http://new_slow$request_uri; }}
  }}
}}
"""

WRK_SCRIPT = "wrk.method = 'GET'\n" + WRK_REPORT


# -- processes -------------------------------------------------------------------------------


def upstream(folder: Path, name: str, delay: float = 0.0) -> contextlib.AbstractContextManager:
    argv = [sys.executable, str(HERE / "upstream.py"), "--port", "{port}", "--delay", str(delay)]
    return running(argv, None, folder / f"{name}.log")


def cutover_proxy(
    folder: Path, store: str, name: str, legacy: str, new: str
) -> contextlib.AbstractContextManager:
    """``cutover proxy`` with one worker, flushing every second (the comparisons are read)."""
    argv = [sys.executable, "-m", "cutover", "--store", store, "proxy", name]
    argv += ["--listen", "127.0.0.1:{port}", "--legacy", legacy, "--new", new]
    argv += ["--flush-interval", "1s", "--shadow-timeout", "60s"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CUTOVER_")}
    return running(argv, env, folder / f"{name}.log", ready="/-/cutover/health")


@contextlib.contextmanager
def nginx(folder: Path, legacy: str, new_fast: str, new_slow: str) -> Iterator[dict[str, Any]]:
    """nginx with one worker: its URLs (plain, mirror to the fast and to the slow new) and the
    worker's pid. Stopped afterwards."""
    ports = {"plain": free_port(), "mirror_fast": free_port(), "mirror_slow": free_port()}
    temp = folder / "tmp"
    temp.mkdir()
    # The worker drops privileges when started as root: it must reach its temp directories.
    for path in (folder, temp):
        path.chmod(0o777)
    conf = folder / "nginx.conf"
    conf.write_text(
        NGINX_CONF.format(
            folder=folder,
            legacy=port_of(legacy),
            new_fast=port_of(new_fast),
            new_slow=port_of(new_slow),
            **ports,
        )
    )
    argv = ["nginx", "-p", str(folder), "-c", str(conf), "-e", str(folder / "nginx-error.log")]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    urls = {key: f"http://127.0.0.1:{port}" for key, port in ports.items()}
    try:
        deadline = time.monotonic() + 30
        for url in urls.values():
            while not answers(url + "/healthz"):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"nginx did not start: {error_log(folder)}")
                time.sleep(0.1)
        children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
        yield {**urls, "worker": int(children[0])}
    finally:
        stop(process)


def error_log(folder: Path) -> str:
    path = folder / "nginx-error.log"
    return path.read_text() if path.exists() else "(no error log)"


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def set_state(store: str, name: str, **fields: str) -> None:
    argv = [sys.executable, "-m", "cutover", "--store", store, "set", name]
    for key, value in fields.items():
        argv += [f"--{key}", value]
    subprocess.run([*argv, "--reason", "proxy benchmark"], check=True, capture_output=True)


def stats(store: str, name: str) -> dict[str, Any]:
    argv = [sys.executable, "-m", "cutover", "--store", store, "stats", name, "--json"]
    done = subprocess.run(argv, check=True, capture_output=True, text=True)
    return json.loads(done.stdout)


# -- measurements ----------------------------------------------------------------------------


def wrk_argv(url: str, script: Path, options: argparse.Namespace, seconds: float) -> list[str]:
    return shared_wrk_argv(url + "/users/42", script, options.threads, options.connections, seconds)


def throughput(
    targets: dict[str, tuple[str, int]],
    script: Path,
    options: argparse.Namespace,
    warmed: Callable[[], None] = lambda: None,
) -> dict[str, Any]:
    """Each target under the same wrk command: warm-up, ``warmed()``, then alternating
    rounds."""
    for url, _ in targets.values():
        subprocess.run(
            wrk_argv(url, script, options, options.warmup), check=True, capture_output=True
        )
    warmed()
    runs: dict[str, list[dict[str, Any]]] = {who: [] for who in targets}
    for _ in range(options.rounds):
        for who, (url, pid) in targets.items():
            runs[who].append(wrk_run(wrk_argv(url, script, options, options.duration), pid))
    out: dict[str, Any] = {}
    for who, found in runs.items():
        if any(run["non_2xx"] or run["socket_errors"] for run in found):
            raise AssertionError(f"{who}: errors under load: {found}")
        out[who] = {
            **medians(found, SUMMARY),
            "requests": sum(run["requests"] for run in found),
            "runs": [{key: run[key] for key in PER_RUN} for run in found],
        }
    return out


def open_loop(url: str, options: argparse.Namespace) -> dict[str, Any]:
    argv = [sys.executable, str(HERE / "open_loop.py"), url + "/users/42"]
    argv += ["--rate", f"{options.rate:g}", "--seconds", f"{options.seconds:g}"]
    done = subprocess.run(argv, check=True, capture_output=True, text=True)
    return json.loads(done.stdout)


def latency(targets: dict[str, str], options: argparse.Namespace) -> dict[str, Any]:
    """Alternating open-loop rounds at ``--rate``; per target the rounds and their medians."""
    for url in targets.values():  # warm-up: connections made, code paths run
        open_loop(url, argparse.Namespace(rate=options.rate, seconds=1.0))
    runs: dict[str, list[dict[str, Any]]] = {who: [] for who in targets}
    for _ in range(options.latency_rounds):
        for who, url in targets.items():
            runs[who].append(open_loop(url, options))
    out: dict[str, Any] = {}
    for who, found in runs.items():
        if any(run["errors"] or run["non_2xx"] for run in found):
            raise AssertionError(f"{who}: errors at {options.rate:g} requests/s: {found}")
        out[who] = {
            **medians(found, ("p50_ms", "p90_ms", "p99_ms", "max_ms", "send_lag_p99_ms")),
            "p99_ms_spread": [min(r["p99_ms"] for r in found), max(r["p99_ms"] for r in found)],
            "p50_ms_spread": [min(r["p50_ms"] for r in found), max(r["p50_ms"] for r in found)],
            "requests": sum(run["requests"] for run in found),
            "rounds": [{k: run[k] for k in ("p50_ms", "p99_ms", "rate")} for run in found],
        }
    direct = out["direct"]["p50_ms"]
    for who in targets:
        if who != "direct":
            out[who]["added_p50_ms"] = round(out[who]["p50_ms"] - direct, 3)
    return out


def peak_rss(pid: int, url: str, size: int) -> dict[str, Any]:
    """Peak resident memory of ``pid`` while one client reads a ``size``-byte answer."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    before = status_kib(pid, "VmRSS")
    began = time.perf_counter()
    done = subprocess.run(
        ["curl", "-s", "-o", "/dev/null", "-w", "%{size_download}", f"{url}/bytes/{size}"],
        check=True,
        capture_output=True,
        text=True,
    )
    elapsed = time.perf_counter() - began
    if int(done.stdout) != size:
        raise AssertionError(f"{url}: streamed {done.stdout} bytes of {size}")
    return {
        "rss_before_mib": round(before / 1024, 1),
        "peak_rss_mib": round(status_kib(pid, "VmHWM") / 1024, 1),
        "seconds": round(elapsed, 2),
        "mib_per_s": round(size / 2**20 / elapsed),
    }


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


# -- the run ---------------------------------------------------------------------------------


def run(
    duration: float = 10.0,
    warmup: float = 3.0,
    rounds: int = 3,
    rate: float = 500.0,
    seconds: float = 10.0,
    latency_rounds: int = 5,
    threads: int = 1,
    connections: int = 32,
    stream: int = 1 << 30,
) -> dict[str, Any]:
    options = argparse.Namespace(
        duration=duration,
        warmup=warmup,
        rounds=rounds,
        rate=rate,
        seconds=seconds,
        latency_rounds=latency_rounds,
        threads=threads,
        connections=connections,
    )
    with contextlib.ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cutover-proxy-")))
        store = f"sqlite:///{folder / 'store.db'}"
        set_state(store, "bench-shadow", mode="shadow", sample="1")
        set_state(store, "bench-shadow-slow", mode="shadow", sample="1")
        legacy, legacy_pid = stack.enter_context(upstream(folder, "legacy"))
        new_fast, _ = stack.enter_context(upstream(folder, "new"))
        new_slow, _ = stack.enter_context(upstream(folder, "new-slow", SLOW))
        web = stack.enter_context(nginx(folder, legacy, new_fast, new_slow))
        proxies = {
            name: stack.enter_context(cutover_proxy(folder, store, name, legacy, new))
            for name, new in (
                ("bench-legacy", new_fast),
                ("bench-shadow", new_fast),
                ("bench-shadow-slow", new_slow),
            )
        }
        for name in ("bench-shadow", "bench-shadow-slow"):
            mode = httpx.get(proxies[name][0] + "/-/cutover/health").json()["migrations"][name]
            assert mode["mode"] == "shadow", mode
        same = {httpx.get(url + "/users/42").content for url in (legacy, new_fast, new_slow)}
        assert len(same) == 1, "legacy and new must answer byte for byte alike"
        load_average = [round(x, 2) for x in os.getloadavg()]
        script = folder / "get.lua"
        script.write_text(WRK_SCRIPT)
        counted: list[dict[str, Any]] = []

        def snapshot() -> None:
            time.sleep(2.5)  # two flushes: every comparison so far is in the store
            counted.append(comparisons(stats(store, "bench-shadow")))

        rps = throughput(
            {
                "direct": (legacy, legacy_pid),  # its "server CPU" is legacy's own
                "nginx": (web["plain"], web["worker"]),
                "nginx_mirror": (web["mirror_fast"], web["worker"]),
                "cutover_legacy": proxies["bench-legacy"],
                "cutover_shadow": proxies["bench-shadow"],
            },
            script,
            options,
            snapshot,
        )
        snapshot()
        fixed = latency(
            {
                "direct": legacy,
                "nginx_mirror": web["mirror_slow"],
                "cutover_legacy": proxies["bench-legacy"][0],
                "cutover_shadow": proxies["bench-shadow-slow"][0],
            },
            options,
        )
        memory = {
            "nginx": peak_rss(web["worker"], web["plain"], stream),
            "nginx_mirror": peak_rss(web["worker"], web["mirror_fast"], stream),
            "cutover_legacy": peak_rss(
                proxies["bench-legacy"][1], proxies["bench-legacy"][0], stream
            ),
            "cutover_shadow": peak_rss(
                proxies["bench-shadow"][1], proxies["bench-shadow"][0], stream
            ),
        }
    mirror = rps["nginx_mirror"]["requests_per_s"]
    return {
        "parameters": {
            "duration_s": duration,
            "warmup_s": warmup,
            "rounds": rounds,
            "threads": threads,
            "connections": connections,
            "rate": rate,
            "seconds": seconds,
            "latency_rounds": latency_rounds,
            "new_delay_ms": SLOW * 1000,
            "stream_bytes": stream,
            "workers": 1,
            "note": f"the load, the proxies and the upstreams share {os.cpu_count()} CPUs",
            "load_average_before": load_average,
        },
        "throughput": rps,
        # during the measured rounds; and during the warm-up, on a cold connection pool
        "shadow_comparisons": {key: counted[1][key] - counted[0][key] for key in counted[1]},
        "shadow_comparisons_warmup": counted[0],
        "ratio": {
            "cutover_legacy_vs_nginx_mirror": round(
                rps["cutover_legacy"]["requests_per_s"] / mirror, 2
            ),
            "cutover_shadow_vs_nginx_mirror": round(
                rps["cutover_shadow"]["requests_per_s"] / mirror, 2
            ),
            "p99_shadow_vs_legacy_mode": round(
                fixed["cutover_shadow"]["p99_ms"] / fixed["cutover_legacy"]["p99_ms"], 2
            ),
            "p99_nginx_mirror_vs_direct": round(
                fixed["nginx_mirror"]["p99_ms"] / fixed["direct"]["p99_ms"], 2
            ),
        },
        "latency": fixed,
        "streaming": memory,
        "command": shlex.join(
            [
                "python",
                "bench/proxy.py",
                f"--duration={duration:g}",
                f"--warmup={warmup:g}",
                f"--rounds={rounds}",
                f"--rate={rate:g}",
                f"--seconds={seconds:g}",
                f"--latency-rounds={latency_rounds}",
                f"--threads={threads}",
                f"--connections={connections}",
                f"--stream={stream}",
            ]
        ),
        "wrk_command": shlex.join(
            wrk_argv("http://127.0.0.1:PORT", Path("get.lua"), options, duration)
        ),
    }


def comparisons(found: dict[str, Any]) -> dict[str, int]:
    """What the store counted for the shadow proxy so far: requests served, copies to new
    (each one compared), drifts, and copies dropped."""
    return {
        "served": found["legacy"]["calls"],
        "copies": found["new"]["calls"],
        "comparisons": found["comparisons"],
        "drifts": found["drifts"],
        "dropped": found["offpath_dropped"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of warm-up per target")
    parser.add_argument("--rounds", type=int, default=3, help="wrk rounds")
    parser.add_argument("--rate", type=float, default=500.0, help="requests a second, fixed")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds per fixed-rate round")
    parser.add_argument("--latency-rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--stream", type=int, default=1 << 30, help="bytes of the streamed answer")
    parser.add_argument(
        "--quick", action="store_true", help="3 s wrk runs, one round; 2 rounds of 3 s; 256 MiB"
    )
    options = parser.parse_args()
    if options.quick:
        options.duration, options.warmup, options.rounds = 3.0, 1.0, 1
        options.seconds, options.latency_rounds, options.stream = 3.0, 2, 1 << 28
    emit(
        "proxy",
        run(
            options.duration,
            options.warmup,
            options.rounds,
            options.rate,
            options.seconds,
            options.latency_rounds,
            options.threads,
            options.connections,
            options.stream,
        ),
    )


if __name__ == "__main__":
    main()
