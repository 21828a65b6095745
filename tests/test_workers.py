"""Pre-forking servers, for real: each gunicorn worker reports as an instance of its own, and a
master that preloaded the app but serves nothing is not listed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from .conftest import need
from .helpers import cutover_cli, free_port

APP = """\
import os
import time

import cutover

cutover.configure(os.environ["CUTOVER_STORE"], instance="svc", flush_interval=0.2)
parse = cutover.Migration("parse", lambda text: text.upper(), lambda text: text.upper())


def app(environ, start_response):
    time.sleep(0.05)  # slow enough that concurrent requests keep both workers busy
    body = f"{parse(environ['PATH_INFO'])} {os.getpid()}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"""

REQUESTS = 40


def gunicorn() -> str:
    binary = shutil.which("gunicorn", path=str(Path(sys.executable).parent))
    need(None if binary else "gunicorn is not installed (pip install -e '.[dev]')")
    assert binary is not None
    return binary


@contextmanager
def serving(folder: Path, store: str, *flags: str) -> Iterator[tuple[str, int]]:
    """gunicorn with two sync workers on the app in ``folder``: its URL and the master's pid."""
    (folder / "service.py").write_text(APP)
    port = free_port()
    process = subprocess.Popen(
        [gunicorn(), "-w", "2", "-b", f"127.0.0.1:{port}", "--chdir", str(folder), *flags],
        env={**os.environ, "CUTOVER_STORE": store},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
            try:
                httpx.get(url + "/warm", timeout=5)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "gunicorn did not answer"
                time.sleep(0.1)
        yield url, process.pid
    finally:
        process.terminate()  # gunicorn's graceful stop: workers exit and flush
        process.wait(timeout=30)


def instances(store: str) -> list[dict[str, object]]:
    shown = cutover_cli("--store", store, "instances", "--json")
    assert shown.returncode == 0, shown.stderr
    return json.loads(shown.stdout)["instances"]


@pytest.mark.parametrize("preload", [False, True], ids=["imported-per-worker", "preload"])
def test_two_workers_are_two_instances_and_a_master_none(tmp_path: Path, preload: bool) -> None:
    store = f"sqlite:///{tmp_path / 'cutover.db'}"
    with serving(tmp_path, store, *(["--preload"] if preload else []), "service:app") as (
        url,
        master,
    ):
        with ThreadPoolExecutor(REQUESTS) as pool:
            bodies = list(
                pool.map(lambda i: httpx.get(f"{url}/x{i}", timeout=30).text, range(REQUESTS))
            )
        workers = {int(body.split()[1]) for body in bodies}
        assert len(workers) == 2, "both workers served"
        deadline = time.monotonic() + 30
        while {row["pid"] for row in instances(store)} != workers:
            assert time.monotonic() < deadline, instances(store)
            time.sleep(0.2)
    listed = instances(store)
    assert sorted(row["instance"] for row in listed) == sorted(f"svc:{pid}" for pid in workers)
    assert master not in {row["pid"] for row in listed}
    stats = cutover_cli("--store", store, "stats", "parse", "--json")
    assert json.loads(stats.stdout)["legacy"]["calls"] == REQUESTS + 1  # and the warm-up
