"""``cutover generate``: rules and a dashboard written by the real command, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from ..helpers import cutover_cli
from .promtool import check_rules

SLOS = {
    "migration": "transport",
    "slos": [{"name": "success", "indicator": {"metric": "errors"}, "objective": "99.9%"}],
}


def test_rules_and_dashboard_from_a_file_of_slos(sqlite_url: str, tmp_path: Path) -> None:
    slos = tmp_path / "slos.yaml"
    slos.write_text(yaml.safe_dump(SLOS))
    out = tmp_path / "rules.yaml"
    made = cutover_cli(
        "--store", sqlite_url, "generate", "prometheus-rules", "transport",
        "--file", str(slos), "--output", str(out), "--for", "ParityDrift=30s",
        "--runbook-url", "https://wiki.example/cutover",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    data = yaml.safe_load(out.read_text())
    assert [g["name"] for g in data["groups"]] == [
        "cutover-migrations",
        "cutover-slo-transport-success",
    ]
    parity = next(r for r in data["groups"][0]["rules"] if r.get("alert") == "ParityDrift")
    assert parity["for"] == "30s"
    assert parity["annotations"]["runbook_url"] == "https://wiki.example/cutover#paritydrift"
    checked = check_rules(out.read_text(), tmp_path)
    assert checked.returncode == 0, checked.stdout
    board = cutover_cli(
        "--store", sqlite_url, "generate", "grafana-dashboard", "transport", "--file", str(slos)
    )
    assert board.returncode == 0, board.stderr
    panels = json.loads(board.stdout)["panels"]
    assert [p["title"] for p in panels if p["type"] == "row"] == ["transport"]


def test_bad_input_is_one_sentence(sqlite_url: str, tmp_path: Path) -> None:
    bad_for = cutover_cli("--store", sqlite_url, "generate", "prometheus-rules", "--for", "X=1m")
    assert bad_for.returncode == 2 and "name one of the alerts" in bad_for.stderr
    missing = cutover_cli(
        "--store", sqlite_url, "generate", "prometheus-rules", "--file", str(tmp_path / "no")
    )
    assert missing.returncode == 2 and "--file" in missing.stderr
    orphan = tmp_path / "orphan.yaml"
    orphan.write_text(yaml.safe_dump({"slos": SLOS["slos"]}))
    unowned = cutover_cli(
        "--store", sqlite_url, "generate", "prometheus-rules", "--file", str(orphan)
    )
    assert unowned.returncode == 2 and "name its migration" in unowned.stderr
    short = tmp_path / "short.yaml"
    short.write_text(yaml.safe_dump({**SLOS, "slos": [{**SLOS["slos"][0], "window": "4d"}]}))
    too_short = cutover_cli(
        "--store", sqlite_url, "generate", "prometheus-rules", "--file", str(short)
    )
    assert too_short.returncode == 2 and "give at least 5d" in too_short.stderr
    assert "Traceback" not in too_short.stderr
