"""The reports people sign, as golden files rendered from a fixed store: their numbers match
``cutover stats`` and ``cutover slo`` over the same span."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from ..helpers import cutover_cli
from .fixture import DAY, END, SLOS, START, build

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("CUTOVER_UPDATE_GOLDEN") == "1"


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    build(tmp_path)
    (tmp_path / "slos.yaml").write_text(yaml.safe_dump(SLOS))
    (tmp_path / "clock").write_text(repr(END))
    return tmp_path


def cli(folder: Path, *args: str) -> str:
    result = cutover_cli(
        "--store", f"sqlite:///{folder / 'reports.db'}", *args,
        env={"CUTOVER_CLOCK": f"file:{folder / 'clock'}"}, cwd=folder,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout


def golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.write_text(text)
    assert text == path.read_text(), f"{name} changed; CUTOVER_UPDATE_GOLDEN=1 rewrites it"


REPORTS = [
    ("slo-30-day.md", ("report", "slo", "codec", "--days", "30", "--file", "slos.yaml")),
    ("weekly.md", ("report", "weekly", "codec")),
    ("cab.md", ("report", "cab", "orders")),
    ("history.md", ("history", "codec", "--format", "markdown")),
    ("closure.md", ("report", "closure", "orders")),
    ("monthly.md", ("report", "monthly", "codec")),
]


@pytest.mark.parametrize(("name", "args"), REPORTS, ids=[r[0] for r in REPORTS])
def test_each_report_matches_its_golden_file(folder: Path, name: str, args: tuple) -> None:
    golden(name, cli(folder, *args))


def test_the_slo_report_has_the_runbook_figures_and_matches_cutover_slo(folder: Path) -> None:
    data = json.loads(
        cli(folder, "report", "slo", "codec", "--file", "slos.yaml", "--format", "json")
    )
    success = data["slos"][0]
    assert (success["good"], success["total"]) == (19_990, 20_000)
    assert success["allowed"] == pytest.approx(0.001)
    assert success["consumed"] == pytest.approx(0.0005)
    assert success["remaining"] == pytest.approx(0.5)
    now = json.loads(cli(folder, "slo", "codec", "--file", "slos.yaml", "--json"))["slos"][0]
    assert (now["good"], now["total"], now["remaining"]) == (19_990, 20_000, success["remaining"])
    stats = json.loads(cli(folder, "stats", "codec", "--window", "30d", "--json"))
    assert stats["new"]["calls"] == success["total"] and stats["new"]["errors"] == success["bad"]
    incidents = data["incidents"]
    assert (incidents["total"], incidents["open"], incidents["mttr_minutes"]) == (1, 0, 40.0)


def test_the_weekly_report_numbers_are_those_of_cutover_stats(folder: Path) -> None:
    data = json.loads(cli(folder, "report", "weekly", "codec", "--format", "json"))
    stats = json.loads(cli(folder, "stats", "codec", "--window", "7d", "--json"))
    for arm in ("legacy", "new"):
        for field in ("calls", "errors", "p50_ms", "p95_ms", "p99_ms"):
            assert data["week"][arm][field] == stats[arm][field]
    assert (data["week"]["comparisons"], data["week"]["drifts"]) == (
        stats["comparisons"],
        stats["drifts"],
    )
    assert data["week"]["drifts"] == 14
    assert [g["drifts"] for g in data["drift_groups"]] == [7, 7]
    assert data["state"] == "canary 25%" and data["state_at_start"] == "canary 10%"


def test_the_period_and_a_template_of_ones_own(folder: Path) -> None:
    (folder / "mine.md.j2").write_text(
        "{{ migration }}: {{ week.new.calls }} calls on new from {{ since | date }}\n"
    )
    text = cli(folder, "report", "weekly", "codec", "--since", "2026-11-01", "--until",
               "2026-11-02", "--template", "mine.md.j2")  # fmt: skip
    assert text == "codec: 664 calls on new from 2026-11-01\n"  # 20 + 23 x 28
    bad = folder / "bad.md.j2"
    bad.write_text("{{ nothing_here }}\n")
    result = cutover_cli(
        "--store", f"sqlite:///{folder / 'reports.db'}", "report", "weekly", "codec",
        "--template", str(bad), cwd=folder,
    )  # fmt: skip
    assert result.returncode == 2 and "'nothing_here' is undefined" in result.stderr


def test_the_decision_log_of_a_period(folder: Path) -> None:
    text = cli(folder, "history", "codec", "--format", "markdown", "--since", "2026-11-26",
               "--until", "2026-11-27")  # fmt: skip
    rows = [line for line in text.splitlines() if line.startswith("| ") and "2026-" in line]
    assert [row.split(" | ")[0] for row in rows] == ["| 3", "| 4"]


def test_the_closure_report_says_what_stands_between_the_move_and_decommissioning(
    folder: Path,
) -> None:
    data = json.loads(cli(folder, "report", "closure", "orders", "--format", "json"))
    assert (data["tenants_migrated"], data["tenants_waiting"]) == (["acme", "initech"], ["globex"])
    unmet = [item["name"] for item in data["readiness"] if not item["ok"]]
    assert unmet == ["every tenant migrated", "latest audit clean", "new serves alone"]
    assert data["ready"] is False and data["since"] == START

    # The last wave on a clean audit, new alone: ready once its rollback window has closed.
    report = json.loads((folder / "audit-wave-1.json").read_text())
    report["clean"] = True
    report["counts"] = {kind: 0 for kind in report["counts"]}
    report["tenants"] = {tenant: {kind: 0 for kind in c} for tenant, c in report["tenants"].items()}
    (folder / "audit-wave-2.json").write_text(json.dumps(report))
    (folder / "clock").write_text(repr(END + DAY / 24))
    cli(folder, "cohort", "promote", "wave-2", "--migration", "orders",
        "--audit", "audit-wave-2.json", "--reason", "CAB approved wave 2")  # fmt: skip
    cli(folder, "set", "orders", "--mode", "new", "--no-fallback", "--reason", "legacy retired")
    (folder / "clock").write_text(repr(END + DAY / 12))  # the period [since, now) holds them
    data = json.loads(cli(folder, "report", "closure", "orders", "--format", "json"))
    assert [i["name"] for i in data["readiness"] if not i["ok"]] == ["every rollback window closed"]
    (folder / "clock").write_text(repr(END + 3 * DAY))
    data = json.loads(cli(folder, "report", "closure", "orders", "--format", "json"))
    assert data["ready"] is True
    assert [a["file"] for a in data["audits"]] == ["audit-wave-1.json", "audit-wave-2.json"]


def test_the_monthly_summary_has_the_month_of_cutover_stats_and_a_headline(folder: Path) -> None:
    data = json.loads(cli(folder, "report", "monthly", "codec", "--format", "json"))
    stats = json.loads(cli(folder, "stats", "codec", "--window", "30d", "--json"))
    for arm in ("legacy", "new"):
        assert data["month"][arm]["p95_ms"] == stats[arm]["p95_ms"]
    assert (data["month"]["comparisons"], data["month"]["drifts"]) == (20_000, stats["drifts"])
    assert (data["headline"], data["rollbacks"], data["incidents"]["open"]) == ("at risk", 1, 0)
    quiet = json.loads(cli(folder, "report", "monthly", "codec", "--since", "2026-11-02",
                           "--until", "2026-11-04", "--format", "json"))  # fmt: skip
    assert (quiet["headline"], quiet["risks"], quiet["decisions"]) == ("on track", [], [])
