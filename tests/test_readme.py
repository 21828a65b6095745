"""The README's command blocks run as written, on a fresh copy of what its demos leave behind."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def shell_block(heading: str) -> str:
    """The first ```sh block after ``heading`` in the README."""
    text = (ROOT / "README.md").read_text()
    after = text[text.index(f"\n{heading}\n") :]
    match = re.search(r"```sh\n(.*?)```", after, re.S)
    assert match, f"no sh block after {heading!r}"
    return match.group(1)


def commands(block: str) -> list[tuple[str, int]]:
    """Each command of ``block`` (continuation lines joined) with the exit code its comment
    promises (``# exit 1: ...``), 0 when it promises none."""
    out = []
    for line in block.replace("\\\n", " ").splitlines():
        command, _, comment = line.partition("  #")
        if command.strip():
            promised = re.match(r"\s*exit (\d+)", comment)
            out.append((command.strip(), int(promised.group(1)) if promised else 0))
    return out


def test_the_tenant_tour_runs_after_the_demo(tmp_path: Path) -> None:
    block = commands(shell_block("### A tenant data move"))
    assert block[0][0].startswith("make demo-tenants")
    venv = tmp_path / ".venv" / "bin"  # its `activate` puts this interpreter's scripts first
    venv.mkdir(parents=True)
    (venv / "activate").write_text(f'export PATH="{Path(sys.executable).parent}:$PATH"\n')
    script = [
        # `make demo-tenants` as the Makefile runs it, into the folder the README goes on in
        f'make() {{ [ "$*" = demo-tenants ] || return 2; DEMO_FOLDER="$PWD/cutover-tenants-demo"'
        f' DEMO_REPORTS="$PWD/reports" PYTHONPATH="{ROOT}" "{sys.executable}"'
        " -m examples.tenants.demo > demo.log 2>&1; }"
    ]
    for number, (command, code) in enumerate(block):
        check = f'[ "$rc" = {code} ] || {{ echo "command {number} exited $rc"; exit 1; }}'
        script.append(f"{command}\nrc=$?; {check}")
    result = subprocess.run(
        ["bash", "-c", "\n".join(script)],
        cwd=tmp_path,
        env={key: value for key, value in os.environ.items() if key != "CUTOVER_STORE"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    failed = re.search(r"command (\d+) exited", result.stdout)
    assert result.returncode == 0, (
        f"{block[int(failed.group(1))][0] if failed else 'the block'} failed:\n"
        f"{result.stdout[-3000:]}{result.stderr[-3000:]}"
    )
    out = result.stdout
    assert "pinned to new" in out and "pinned to legacy" in out
    assert (tmp_path / "cutover-tenants-demo" / "tour" / "clean.json").exists()
