"""A real Prometheus server for tests: Debian's /usr/bin/prometheus on a free loopback port."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .conftest import need
from .helpers import free_port

PROMETHEUS = Path("/usr/bin/prometheus")
READY_WITHIN = 30.0
_INSTALL = "apt-get install -y --no-install-recommends prometheus"
# Loopback only: a proxy configured in the environment must not stand in between.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def prometheus_reason() -> str | None:
    """Why a real Prometheus cannot be started here, or None when it can."""
    if not PROMETHEUS.is_file():
        return f"Prometheus is not installed ({PROMETHEUS} is missing; {_INSTALL})"
    if not os.access(PROMETHEUS, os.X_OK):
        return f"{PROMETHEUS} is not executable; reinstall it with {_INSTALL}"
    return None


def need_prometheus() -> None:
    """Skip the test when Prometheus is missing, or fail it when services are required."""
    need(prometheus_reason())


@contextlib.contextmanager
def running_prometheus(
    targets: list[str], scrape_interval: str = "1s", *, job: str = "app", rules: str | None = None
) -> Iterator[str]:
    """Run Prometheus scraping ``targets`` (host:port) as ``job``, evaluating the rule file
    text ``rules`` when given; yield its base URL.

    Its configuration and storage live in a temporary directory removed afterwards, and the
    process is stopped on the way out whatever happens inside the block.
    """
    need_prometheus()
    config = {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
        "scrape_configs": [
            {
                "job_name": job,
                "scrape_interval": scrape_interval,
                "scrape_timeout": scrape_interval,
                "static_configs": [{"targets": list(targets)}],
            }
        ],
    }
    with tempfile.TemporaryDirectory(prefix="cutover-prometheus-") as tmp:
        directory = Path(tmp)
        if rules is not None:
            (directory / "rules.yml").write_text(rules)
            config["rule_files"] = [str(directory / "rules.yml")]
        config_file = directory / "prometheus.yml"
        # JSON is YAML, and writing it needs no YAML library.
        config_file.write_text(json.dumps(config, indent=2))
        log_file = directory / "prometheus.log"
        # The port is only probed free, so another process may take it before Prometheus
        # binds it: start again on a new port when that happens.
        for attempt in range(3):
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            with log_file.open("wb") as log:
                process = subprocess.Popen(
                    [
                        str(PROMETHEUS),
                        f"--config.file={config_file}",
                        f"--storage.tsdb.path={directory / 'data'}",
                        f"--web.listen-address=127.0.0.1:{port}",
                        "--log.level=warn",
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=directory,
                )
            try:
                if _wait_ready(url, process):
                    yield url
                    return
                output = log_file.read_text(errors="replace")
                if "address already in use" in output and attempt < 2:
                    continue
                tail = "\n".join(output.strip().splitlines()[-15:])
                state = (
                    f"exited with status {process.returncode}"
                    if process.poll() is not None
                    else f"was not ready within {READY_WITHIN:g}s"
                )
                raise RuntimeError(f"Prometheus at {url} {state}; its log ends with:\n{tail}")
            finally:
                _stop(process)
        raise AssertionError("unreachable: the last attempt returns or raises")


def _wait_ready(url: str, process: subprocess.Popen[bytes]) -> bool:
    deadline = time.monotonic() + READY_WITHIN
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            with _DIRECT.open(f"{url}/-/ready", timeout=2) as response:
                if response.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    return False


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@contextlib.contextmanager
def serving_gauge(name: str, value: float) -> Iterator[tuple[Any, str]]:
    """An app exposing one gauge set to ``value`` on a free loopback port: (gauge, target)."""
    from prometheus_client import CollectorRegistry, Gauge, start_http_server

    registry = CollectorRegistry()
    gauge = Gauge(name, "A gauge of the test app.", registry=registry)
    gauge.set(value)
    app, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        yield gauge, f"127.0.0.1:{app.server_port}"
    finally:
        app.shutdown()
        app.server_close()
        thread.join(5)
