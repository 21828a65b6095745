"""The real ``cutover`` command, run as a subprocess against real stores."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

import cutover
from cutover.runtime import Runtime

from .helpers import cutover_cli, put, quiet


def run(
    store: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return cutover_cli("--store", store, *args, env=env)


def test_set_status_history_round_trip(store_url: str) -> None:
    created = run(
        store_url,
        "set",
        "codec",
        "--mode",
        "shadow",
        "--sample",
        "0.5",
        "--reason",
        "start shadowing",
    )
    assert created.returncode == 0, created.stderr
    assert "codec: (none) -> shadow sample 0.5  (version 1" in created.stdout
    canary = run(
        store_url,
        "set",
        "codec",
        "--mode",
        "refactored_primary",
        "--percent",
        "25",
        "--pin-new",
        "staff-1",
        "--reason",
        "canary 25%",
        "--json",
    )
    decision = json.loads(canary.stdout)["decision"]
    assert decision["new"]["mode"] == "canary" and decision["new"]["percent"] == 25
    assert decision["new"]["pins"] == {"new": ["staff-1"], "legacy": []}
    assert decision["actor"] == "ops@test"
    relative = run(store_url, "set", "codec", "--percent", "+5", "--reason", "more", "--json")
    assert json.loads(relative.stdout)["decision"]["new"]["percent"] == 30
    same = run(store_url, "set", "codec", "--percent", "30", "--reason", "again")
    assert same.returncode == 0 and "already so; nothing recorded" in same.stdout

    status = json.loads(run(store_url, "status", "--json").stdout)
    [row] = status["migrations"]
    assert (row["name"], row["mode"], row["percent"], row["version"]) == ("codec", "canary", 30, 3)
    table = run(store_url, "status").stdout
    assert "codec" in table and "canary" in table and "30%" in table

    history = json.loads(run(store_url, "history", "codec", "--json").stdout)["decisions"]
    assert [d["reason"] for d in history] == ["start shadowing", "canary 25%", "more"]
    assert history[0]["old"] is None and history[2]["old"]["percent"] == 25
    human = run(store_url, "history", "codec").stdout
    assert "canary 25%" in human and "ops@test" in human


def test_stale_expected_version_is_a_conflict(sqlite_url: str) -> None:
    run(sqlite_url, "set", "codec", "--mode", "shadow", "--reason", "a")
    result = run(
        sqlite_url, "set", "codec", "--mode", "legacy", "--expect-version", "0", "--reason", "b"
    )
    assert result.returncode == 1
    assert "'codec' is at version 1 (written by ops@test), not 0" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["set", "codec", "--mode", "blue", "--reason", "x"], "unknown mode 'blue'"),
        (["set", "codec", "--percent", "150", "--reason", "x"], "--percent must be from 0 to 100"),
        (["set", "codec", "--sample", "2", "--reason", "x"], "--sample must be from 0 to 1"),
        (["set", "codec", "--mode", "shadow"], "Missing option '--reason'"),
        (["set", "codec", "--reason", "x"], "nothing to change"),
        (["set", "codec", "--pin-new", "u", "--pin-legacy", "u", "--reason", "x"], "choose one"),
        (["stats", "nope"], "no migration named 'nope'"),
        (["stats", "codec", "--window", "soon"], "--window 'soon' is not a duration"),
        (["check", "codec"], "give at least one threshold"),
        (["check", "codec", "--max-drift-rate", "5"], "must be a share from 0 to 1"),
        (["drifts", "nope"], "no migration named 'nope'"),
        (["gc", "--older-than", "-3d"], "is not a duration"),
        (["stats", "codec", "--window", "9" * 400], "is too long"),
        (["check", "codec", "--max-drift-rate", "0.1", "--window", "10" * 12 + "w"], "too long"),
    ],
)
def test_bad_input_exits_2_with_one_sentence(
    sqlite_url: str, args: list[str], message: str
) -> None:
    run(sqlite_url, "set", "codec", "--mode", "shadow", "--reason", "exists")
    result = run(sqlite_url, *args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len([line for line in result.stderr.splitlines() if line.strip()]) <= 3


def test_a_bad_store_url_and_an_unreachable_store() -> None:
    bad = run("mysql://nowhere/db", "status")
    assert bad.returncode == 2 and "unsupported store URL scheme 'mysql'" in bad.stderr
    port = run("postgresql://u@h:notaport/db", "status")
    assert port.returncode == 2 and "is malformed" in port.stderr
    assert "Traceback" not in port.stderr
    down = run("postgresql://postgres@127.0.0.1:1/none", "status")
    assert down.returncode == 1 and "cannot open the store" in down.stderr
    assert "Traceback" not in down.stderr


@pytest.fixture
def traffic(runtime: Runtime) -> Runtime:
    """A store with a shadow migration that drifted on some inputs, at the real time."""
    return runtime


def make_traffic(store: str) -> None:
    runtime = quiet(store)
    codec = cutover.Migration(
        "codec",
        lambda x: {"n": x, "tag": "a"},
        lambda x: {"n": x if x % 10 else -x, "tag": "a" if x % 25 else "b"},
        compare=cutover.compare.structural(),
    )
    put(runtime, "codec", mode="shadow", sample=1.0)
    for i in range(1, 201):
        codec(i)
    assert runtime.flush()


def test_stats_json_has_exactly_the_documented_shape(sqlite_url: str) -> None:
    make_traffic(sqlite_url)
    result = run(sqlite_url, "stats", "codec", "--window", "1h", "--json")
    assert result.returncode == 0, result.stderr
    stats = json.loads(result.stdout)
    assert list(stats) == [
        "migration",
        "mode",
        "percent",
        "window_seconds",
        "since",
        "until",
        "widened",
        "legacy",
        "new",
        "comparisons",
        "drifts",
        "drift_rate",
        "offpath_dropped",
    ]
    assert list(stats["legacy"]) == [
        "calls",
        "errors",
        "error_rate",
        "expected",
        "exposures",
        "p50_ms",
        "p95_ms",
        "p99_ms",
    ]
    assert list(stats["new"]) == [
        "calls",
        "errors",
        "error_rate",
        "expected",
        "exposures",
        "p50_ms",
        "p95_ms",
        "p99_ms",
        "timeouts",
        "fallbacks",
    ]
    assert (stats["mode"], stats["window_seconds"]) == ("shadow", 3600)
    assert (stats["comparisons"], stats["drifts"]) == (200, 24)
    assert stats["drift_rate"] == pytest.approx(0.12)
    assert stats["legacy"]["calls"] == 200 and stats["legacy"]["p99_ms"] > 0
    human = run(sqlite_url, "stats", "codec").stdout
    assert "comparisons 200  drifts 24  drift rate 12%" in human
    earlier = json.loads(run(sqlite_url, "stats", "codec", "--until", "1h", "--json").stdout)
    assert earlier["comparisons"] == 0 and earlier["window_seconds"] == 3600
    ranged = run(sqlite_url, "stats", "codec", "--since", "2000-01-01T00:00Z", "--json")
    assert json.loads(ranged.stdout)["comparisons"] == 200
    bad = run(sqlite_url, "stats", "codec", "--since", "yesterday")
    assert bad.returncode == 2 and "neither a time" in bad.stderr
    seconds_ago = run(
        sqlite_url, "stats", "codec", "--since", "20261122", "--until", "now", "--json"
    )
    assert json.loads(seconds_ago.stdout)["window_seconds"] == 20261122


def test_a_span_shorter_than_a_window_is_widened_never_zero(sqlite_url: str) -> None:
    make_traffic(sqlite_url)  # 200 calls just now, in the current minute's window
    short = run(sqlite_url, "stats", "codec", "--since", "30s", "--json")
    assert short.returncode == 0, short.stderr
    report = json.loads(short.stdout)
    assert report["legacy"]["calls"] == 200 and report["comparisons"] == 200
    assert report["widened"] is True and report["since"] % 60 == 0
    assert report["window_seconds"] == pytest.approx(30, abs=1)
    human = run(sqlite_url, "stats", "codec", "--window", "5s").stdout
    assert "widened to whole 60 s windows" in human
    assert "comparisons 200" in human
    gate = run(sqlite_url, "check", "codec", "--window", "10s", "--min-comparisons", "200")
    assert gate.returncode == 0, gate.stdout
    empty = run(sqlite_url, "stats", "codec", "--until", "1d").stdout
    assert "nothing was counted from" in empty


def test_check_exit_codes_for_cron(sqlite_url: str) -> None:
    make_traffic(sqlite_url)
    breached = run(sqlite_url, "check", "codec", "--max-drift-rate", "0.001")
    assert breached.returncode == 1
    assert "drift_rate 0.12 exceeds 0.001 by 0.119 (120x, over 200 samples)" in breached.stdout
    holds = run(sqlite_url, "check", "codec", "--max-drift-rate", "0.2", "--max-error-rate", "0")
    assert holds.returncode == 0, holds.stdout
    thin = run(
        sqlite_url,
        "check",
        "codec",
        "--max-drift-rate",
        "0.2",
        "--min-comparisons",
        "1000",
        "--json",
    )
    assert thin.returncode == 1
    report = json.loads(thin.stdout)
    assert report["ok"] is False
    assert [c["name"] for c in report["checks"] if c["breached"]] == ["min_comparisons"]


def test_drifts_and_groups(sqlite_url: str) -> None:
    make_traffic(sqlite_url)
    groups = json.loads(run(sqlite_url, "drifts", "codec", "--group", "--json").stdout)["groups"]
    # n drifts for multiples of 10, tag for multiples of 25, both for multiples of 50.
    by_fingerprint = {g["fingerprint"]: (g["drifts"], g["samples"]) for g in groups}
    assert by_fingerprint == {"$.n": (16, 10), "$.tag": (4, 4), "$.n | $.tag": (4, 4)}
    assert all(g["example"]["fingerprint"] == g["fingerprint"] for g in groups)
    human = run(sqlite_url, "drifts", "codec", "--limit", "2").stdout
    assert "$.n: legacy" in human and "fingerprint" in human
    table = run(sqlite_url, "drifts", "codec", "--group").stdout
    assert "$.n | $.tag" in table


def test_gc_and_bucket(sqlite_url: str) -> None:
    make_traffic(sqlite_url)
    kept = json.loads(run(sqlite_url, "gc", "--older-than", "30d", "--json").stdout)
    assert kept["removed"]["windows"] == 0
    time.sleep(1.1)
    gone = json.loads(run(sqlite_url, "gc", "--older-than", "1s", "--json").stdout)
    assert gone["removed"]["windows"] >= 2 and gone["removed"]["drift_samples"] == 18
    assert gone["removed"]["drift_counts"] == 3
    assert json.loads(run(sqlite_url, "history", "codec", "--json").stdout)["decisions"]
    result = json.loads(
        run(sqlite_url, "bucket", "codec", "user-42", "--percent", "25", "--json").stdout
    )
    [row] = result["units"]
    assert row["bucket"] == cutover.bucket("codec", "user-42")
    assert row["arm"] == ("new" if row["bucket"] < 2500 else "legacy")


def test_status_shows_instances_and_kill_switches(sqlite_url: str) -> None:
    script = (
        "import cutover, os\n"
        f"cutover.configure({sqlite_url!r}, wait=2)\n"
        "m = cutover.Migration('codec', abs, abs)\n"
        "m(-1)\n"
        "assert cutover.flush()\n"
    )
    run(sqlite_url, "set", "codec", "--mode", "canary", "--percent", "10", "--reason", "r")
    app = subprocess.run(
        [sys.executable, "-c", script],
        env={**__import__("os").environ, "CUTOVER_FORCE_CODEC": "legacy"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert app.returncode == 0, app.stderr
    row = json.loads(run(sqlite_url, "status", "--json").stdout)["migrations"][0]
    assert row["instances"] == 1 and row["instance_versions"] == [1]
    assert [o["mode"] for o in row["overrides"]] == ["legacy"]
    assert row["overrides"][0]["variable"] == "CUTOVER_FORCE_CODEC"
    table = run(sqlite_url, "status").stdout
    assert "forced to legacy by CUTOVER_FORCE_CODEC" in table
    [instance] = json.loads(run(sqlite_url, "instances", "--json").stdout)["instances"]
    assert instance["live"] and instance["migrations"] == {"codec": 1}
    assert instance["overrides"] == ["codec"] and instance["store_errors"] == 0
    assert instance["state_age_seconds"] is not None and instance["state_age_seconds"] < 60
