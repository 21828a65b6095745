"""Schemathesis against the running server's /openapi.json, with an admin token and with none:
no 5xx, and every response matches the schema (status, content type, headers, body)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from cutover.clock import system_clock
from cutover.control.controller import Controller
from cutover.control.plan import load_plan
from cutover.model import Mode
from cutover.operations import Change, set_state
from cutover.store import open_store

from .conftest import Server

ROOT = Path(__file__).resolve().parents[2]

# A refusal that follows from the store's contents rather than the request's shape (a plan file
# the server does not have, percent and percent_delta together, resuming a running rollout) is
# a 422 by design; schemathesis' "positive data acceptance" would call those failures.
CHECKS = ["--checks", "all", "--exclude-checks", "positive_data_acceptance"]


def schemathesis(server: Server, out: Path, *headers: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    if binary is None:
        pytest.fail("schemathesis is not installed: pip install -e '.[dev]'")
    args = [binary, "run", f"{server.url}/openapi.json", *CHECKS]
    for header in headers:
        args += ["--header", header]
    args += [
        "--max-examples",
        "15",
        "--seed",
        "7",
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--no-color",
        "--generation-database",
        "none",
        "--report",
        "junit",
        "--report-dir",
        str(out),
    ]
    return subprocess.run(args, check=False, capture_output=True, text=True, timeout=300, cwd=out)


@pytest.fixture
def seeded(serve: Callable[..., Server], pg_url: str, tmp_path: Path) -> Server:
    """A server whose store has the schema's example migration, with a rollout and a decision."""
    store = open_store(pg_url)
    set_state(
        store, "payments", Change(mode=Mode.SHADOW), reason="seed", actor="seed", clock=system_clock
    )
    plan = load_plan(ROOT / "examples" / "plans" / "quickstart.yaml")
    controller = Controller(store, clock=system_clock)
    controller.start(plan, actor="seed", reason="seed")
    controller.close()
    store.close()
    # A rate limit that the run outgrows, so OFREP's 429s are checked against the schema too.
    return serve(pg_url, "--plans", str(ROOT / "examples" / "plans"), "--ofrep-rate", "5:30")


@pytest.mark.slow
@pytest.mark.parametrize("who", ["admin", None])
def test_the_api_honours_its_schema(seeded: Server, who: str | None, tmp_path: Path) -> None:
    headers = [f"Authorization: Bearer {seeded.tokens[who]}"] if who else []
    result = schemathesis(seeded, tmp_path, *headers)
    report = result.stdout[-6000:]
    assert result.returncode == 0, report
    assert "SUMMARY" in result.stdout and "passed" in result.stdout.split("SUMMARY")[-1], report
    assert "Traceback" not in seeded.log.read_text()
    covered = "".join(report.read_text() for report in tmp_path.rglob("*.xml"))
    for operation in (
        "POST /ofrep/v1/evaluate/flags/{key}",
        "POST /ofrep/v1/evaluate/flags",
        "GET /ofrep/v1/configuration",
    ):
        assert operation in covered, f"schemathesis did not exercise {operation}"
