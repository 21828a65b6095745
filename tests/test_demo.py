"""The demo `make demo` runs keeps working: it walks every step and finds both bugs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_demo_walks_the_cutover_and_reveals_both_bugs(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "examples.codec.demo"],
        cwd=ROOT,
        env={**os.environ, "DEMO_CALLS": "1500", "DEMO_DATABASE": str(tmp_path / "demo.db")},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for step in ("legacy", "shadow", "canary 5%", "canary 25%", "canary 50%", "canary 100%", "new"):
        assert f"== step: {step} ==" in out
    assert "drift_rate" in out and "exceeds 0.001" in out
    assert "$.amount" in out and "$.memo" in out
    assert "v7  demo@cutover  new" in out
