"""Customer messages: the runbook's three e-mails filled in per tenant of a cohort."""

from __future__ import annotations

from pathlib import Path

import pytest

from ..helpers import cutover_cli
from .fixture import build

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "notify"


@pytest.fixture
def store_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.chdir(tmp_path)
    build(tmp_path)
    return f"sqlite:///{tmp_path / 'reports.db'}"


def notify(store_url: str, *args: str):
    return cutover_cli("--store", store_url, "notify", "render", *args)


def test_the_completion_notice_for_each_tenant_of_a_promoted_cohort(
    store_url: str, tmp_path: Path
) -> None:
    out = tmp_path / "mail"
    out.mkdir()
    result = notify(
        store_url, str(EXAMPLES / "complete.txt.j2"), "--migration", "orders",
        "--cohort", "wave-1", "--tenants", str(EXAMPLES / "customers.yaml"),
        "--output-dir", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["acme.txt", "initech.txt"]
    acme = (out / "acme.txt").read_text()
    assert acme.startswith("Subject: LegacyCoinTrader migration complete\n\nHi Acme Corporation,")
    assert "will be retired after 2 days." in acme  # the cohort's rollback window


def test_the_heads_up_needs_a_date_before_promotion(store_url: str) -> None:
    template = str(EXAMPLES / "heads-up.txt.j2")
    missing = notify(store_url, template, "--migration", "orders", "--cohort", "wave-2")
    assert missing.returncode == 2 and "give --date" in missing.stderr
    dated = notify(
        store_url, template, "--migration", "orders", "--cohort", "wave-2",
        "--date", "2026-12-07",
    )  # fmt: skip
    assert dated.returncode == 0, dated.stderr
    assert "Hi globex," in dated.stdout and "during the week of 2026-12-07." in dated.stdout


def test_the_failback_notice_and_bad_input(store_url: str, tmp_path: Path) -> None:
    failback = notify(
        store_url, str(EXAMPLES / "failback.txt.j2"), "--migration", "orders",
        "--cohort", "wave-1", "--tenants", str(EXAMPLES / "customers.yaml"),
    )  # fmt: skip
    assert failback.returncode == 0, failback.stderr
    assert failback.stdout.count("Subject: Temporary failback to LegacyCoinTrader 1.0") == 2
    assert "Hi Initech," in failback.stdout
    unknown = notify(store_url, str(EXAMPLES / "failback.txt.j2"), "--migration", "orders",
                     "--cohort", "wave-9")  # fmt: skip
    assert unknown.returncode == 2 and "no cohort 'wave-9'" in unknown.stderr
    odd = tmp_path / "odd.j2"
    odd.write_text("Dear {{ account_manager }}\n")
    undefined = notify(store_url, str(odd), "--migration", "orders", "--cohort", "wave-1")
    assert undefined.returncode == 2 and "add it to the tenants file" in undefined.stderr
