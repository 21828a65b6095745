"""A real Prometheus, scraping a running application, evaluates the generated rules: the
ParityDrift alert becomes pending, then firing."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from cutover.generate.rules import Options, rules, to_yaml
from cutover.model import Mode, State
from cutover.store import open_store

from ..prometheus_server import need_prometheus, running_prometheus

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def alert_states(url: str, name: str) -> set[str]:
    with _DIRECT.open(f"{url}/api/v1/alerts", timeout=5) as response:
        alerts = json.load(response)["data"]["alerts"]
    return {a["state"] for a in alerts if a["labels"].get("alertname") == name}


def test_parity_drift_goes_pending_then_firing(tmp_path: Path) -> None:
    need_prometheus()
    store_url = f"sqlite:///{tmp_path / 'cutover.db'}"
    store = open_store(store_url)
    store.write_state(
        "codec", State(mode=Mode.SHADOW, sample=1.0), expected_version=0, actor="test",
        reason="compare every call", at=time.time(),
    )  # fmt: skip
    port_file = tmp_path / "port"
    app = subprocess.Popen(
        [sys.executable, "-m", "tests.generate.drifting_app", store_url, str(port_file)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 20
        while not port_file.exists() or not port_file.read_text():
            assert app.poll() is None, app.stderr.read().decode() if app.stderr else ""
            assert time.monotonic() < deadline, "the application never started serving"
            time.sleep(0.1)
        target = f"127.0.0.1:{port_file.read_text()}"
        # Short waits: the condition must hold for 4 seconds of one-second evaluations.
        text = to_yaml(rules(("codec",), [], Options(interval="1s", for_={"ParityDrift": "4s"})))
        with running_prometheus([target], rules=text) as url:
            seen: list[str] = []
            deadline = time.monotonic() + 60
            while "firing" not in seen:
                assert time.monotonic() < deadline, f"ParityDrift went through {seen} in 60s"
                states = alert_states(url, "ParityDrift")
                for state in sorted(states):
                    if not seen or seen[-1] != state:
                        seen.append(state)
                time.sleep(0.2)
            assert seen[0] == "pending" and seen[-1] == "firing"
    finally:
        app.terminate()
        app.wait(10)
