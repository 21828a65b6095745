"""The demo `make demo` runs keeps working: the controller walks the plan, finds both bugs in
shadow, and catches the fixed port's overflow drift at 50%."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_controller_walks_the_plan_and_rolls_back_the_drift(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "examples.codec.demo"],
        cwd=ROOT,
        env={**os.environ, "DEMO_DATABASE": str(tmp_path / "demo.db")},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert re.search(r"controller\s+abort\s+returned to legacy from step 1/6 \(shadow\)", out)
    assert "$.amount" in out and "$.memo" in out
    for promotion in (
        "promoted from shadow to canary 5%",
        "promoted from canary 5% to canary 25%",
        "promoted from canary 25% to canary 50%",
    ):
        assert promotion in out
    assert re.search(r"rollback rolled back from canary 50% to canary 25%: parity failed", out)
    assert "now: rolled_back at step 3/6 (canary 25%), canary 25%" in out
    assert "history codec" in out and "team-payments" in out
