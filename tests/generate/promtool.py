"""Debian's real promtool for tests: check rule files and run their unit tests."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from ..conftest import need

PROMTOOL = Path("/usr/bin/promtool")


def need_promtool() -> None:
    """Skip the test when promtool is missing, or fail it when services are required."""
    if not (PROMTOOL.is_file() and os.access(PROMTOOL, os.X_OK)):
        need(
            f"promtool is not installed ({PROMTOOL} is missing;"
            " apt-get install -y --no-install-recommends prometheus)"
        )


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    need_promtool()
    return subprocess.run(
        [str(PROMTOOL), *args], capture_output=True, text=True, cwd=cwd, check=False, timeout=120
    )


def check_rules(text: str, folder: Path) -> subprocess.CompletedProcess[str]:
    (folder / "rules.yaml").write_text(text)
    return promtool("check", "rules", "rules.yaml", cwd=folder)


def test_rules(rules: str, tests: list[dict[str, Any]], folder: Path) -> str:
    """Run ``tests`` (promtool's unit tests) against ``rules``; promtool's output on failure."""
    (folder / "rules.yaml").write_text(rules)
    unit = {"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": tests}
    (folder / "tests.yaml").write_text(json.dumps(unit, indent=2))  # JSON is YAML
    result = promtool("test", "rules", "tests.yaml", cwd=folder)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout
