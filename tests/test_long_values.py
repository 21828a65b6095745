"""A changed value may be megabytes: the CLI prints a clip of it, says how much it cut and how to
see all, and its JSON keeps the value whole."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import sqlalchemy as sa

import cutover
from cutover.model import Mode
from cutover.runtime import Runtime

from .helpers import cutover_cli, put, quiet

BIG = 1_000_000


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return cutover_cli(*args, timeout=120)


def test_drifts_clip_long_values_and_say_how_to_see_them(sqlite_url: str) -> None:
    runtime: Runtime = quiet(sqlite_url, drift_sample_chars=10 * BIG)
    try:
        put(runtime, "blob", mode=Mode.SHADOW)
        migration = cutover.Migration(
            "blob", lambda _: {"v": "a" * 4000}, lambda _: {"v": "b" * 4000}
        )
        migration(1)
        assert runtime.flush(drain_timeout=10)
    finally:
        cutover.runtime.shutdown()
    shown = run_cli("--store", sqlite_url, "drifts", "blob")
    assert shown.returncode == 0, shown.stderr
    assert len(shown.stdout) < 1000, len(shown.stdout)
    assert '$.v: legacy "aaaa' in shown.stdout
    assert "(3,942 more characters; --json shows it whole)" in shown.stdout
    grouped = run_cli("--store", sqlite_url, "drifts", "blob", "--group")
    assert "more characters" in grouped.stdout and len(grouped.stdout) < 3000
    whole = json.loads(run_cli("--store", sqlite_url, "drifts", "blob", "--json").stdout)
    assert whole["samples"][0]["diff"][0]["legacy"] == "a" * 4000


def test_an_audit_clips_a_changed_value_of_a_megabyte(tmp_path: Path) -> None:
    urls = []
    for side, letter in (("source", "a"), ("target", "b")):
        url = f"sqlite:///{tmp_path / side}.db"
        engine = sa.create_engine(url)
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT)")
            conn.execute(sa.text("INSERT INTO t VALUES (1, :body)"), {"body": letter * BIG})
        engine.dispose()
        urls.append(url)
    report = tmp_path / "audit.json"
    args = ("audit", "--source", urls[0], "--target", urls[1], "--table", "t")
    result = run_cli(*args, "--json", str(report))
    assert result.returncode == 0, result.stderr
    assert len(result.stdout) < 5000, len(result.stdout)
    printed = result.stdout.replace("\n", "")  # the terminal's width wraps long lines
    assert "body: 'aaaa" in printed and "-> 'bbbb" in printed
    assert f"({BIG + 2 - 200:,} more characters; the --json FILE report keeps it whole)" in (
        printed
    )
    changed = json.loads(report.read_text())["diffs"][0]
    assert changed["source"]["body"] == "a" * BIG and changed["target"]["body"] == "b" * BIG
