"""The real ``cutover audit`` command, run as a subprocess: exit codes, the JSON report, bad input
in one sentence, truncation, and resuming from a checkpoint after the process was killed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from .audit_seed import (
    TEXT,
    Col,
    changed,
    create,
    delete,
    extra,
    insert,
    missing,
    orders_cols,
    seeded_orders,
    show,
    update,
)

COMMAND = [sys.executable, "-m", "cutover", "audit"]


def cutover_audit(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*COMMAND, *args], capture_output=True, text=True, timeout=60, check=False
    )


def found_in(data: dict[str, Any]) -> set[Any]:
    return {(d["kind"], tuple(d["key"]), tuple(sorted(d["columns"]))) for d in data["diffs"]}


def sqlite_pair(tmp_path: Path) -> tuple[str, str]:
    return f"sqlite:///{tmp_path / 'source.db'}", f"sqlite:///{tmp_path / 'target.db'}"


def simple(source: str, target: str, rows: int = 300) -> sa.Table:
    """``items(id, tenant, v, amount)`` alike on both sides; returns the target's table."""
    cols = [
        Col("id", sa.Integer(), key=True),
        Col("tenant", TEXT),
        Col("v", TEXT),
        Col("amount", sa.Double()),
    ]
    content = [
        {"id": i, "tenant": ("acme", "globex")[i % 2], "v": f"v{i}", "amount": i / 8}
        for i in range(1, rows + 1)
    ]
    create(source, "items", cols, content)
    return create(target, "items", cols, content)


def in_process(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``cutover audit ARGS`` through the same entry point as the installed command, in this
    process: (exit code, stdout, stderr)."""
    from cutover.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["audit", *args])
    out, err = capsys.readouterr()
    code = exit_.value.code
    return (code if isinstance(code, int) else 1), out, err


# Exit codes and the report file -------------------------------------------------------------


def test_exit_codes_and_the_json_report(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    source, target = sqlite_pair(tmp_path)
    table = simple(source, target)
    report = tmp_path / "report.json"

    code, out, err = in_process(capsys, "--source", source, "--target", target, "--table", "items")
    assert code == 0, err
    assert "clean" in out.lower()
    code, _, err = in_process(
        capsys, "--source", source, "--target", target, "--table", "items", "--fail-on-drift"
    )
    assert code == 0, err

    update(target, table, {7: {"v": "changed"}})
    delete(target, table, "id", [300])
    insert(target, table, [{"id": 301, "tenant": "acme", "v": "new", "amount": 0.0}])
    code, out, err = in_process(
        capsys, "--source", source, "--target", target, "--table", "items", "--json", str(report)
    )
    assert code == 0, err  # drift without --fail-on-drift
    assert "drift" in out.lower()
    data = json.loads(report.read_text())
    assert data["format"] == "cutover-audit/1"
    assert data["counts"] == {"missing": 1, "extra": 1, "changed": 1, "pending": 0, "drift": 3}
    assert found_in(data) == {missing(300), extra(301), changed(7, "v")}
    assert data["clean"] is False and data["truncated"] is False
    assert data["source"]["table"] == "items" and data["source"]["dialect"] == "sqlite"

    report.unlink()
    failing = cutover_audit(
        "--source",
        source,
        "--target",
        target,
        "--table",
        "items",
        "--fail-on-drift",
        "--json",
        str(report),
    )
    assert failing.returncode == 1, failing.stderr
    assert found_in(json.loads(report.read_text())) == {missing(300), extra(301), changed(7, "v")}
    assert "Traceback" not in failing.stderr


def test_every_option_reaches_the_audit(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """--target-table, --key, --columns, --map, --where, --tenant-column, --tolerance,
    --workers, --chunk-rows and --max-rows-per-second, all at once."""
    source, target = sqlite_pair(tmp_path)
    cols = [
        Col("id", sa.Integer()),
        Col("tenant", TEXT),
        Col("v", TEXT),
        Col("amount", sa.Double()),
        Col("ignored", TEXT),
    ]
    target_cols = [
        Col("id", sa.Integer()),
        Col("tenant", TEXT),
        Col("value", TEXT),
        Col("amount", sa.Double()),
        Col("ignored", TEXT),
    ]
    rows = [
        {
            "id": i,
            "tenant": ("acme", "globex")[i % 2],
            "v": f"v{i}",
            "amount": i / 8,
            "ignored": "x",
        }
        for i in range(1, 401)
    ]
    create(source, "items", cols, rows)
    moved = [{**r, "value": r["v"]} for r in rows]
    for r in moved:
        del r["v"]
    table = create(target, "items_v2", target_cols, moved)
    update(
        target,
        table,
        {
            2: {"value": "changed"},  # acme, id < 300: reported
            4: {"amount": 4 / 8 + 1e-9},  # inside the tolerance
            6: {"amount": 6 / 8 + 0.5},  # outside it
            8: {"ignored": "y"},  # not a compared column
            3: {"value": "changed"},  # globex: outside --where
            302: {"value": "changed"},  # id >= 300: outside --where
        },
    )
    delete(target, table, "id", [10])
    report = tmp_path / "r.json"
    code, _, err = in_process(
        capsys,
        "--source",
        source,
        "--target",
        target,
        "--table",
        "items",
        "--target-table",
        "items_v2",
        "--key",
        "id",
        "--columns",
        "v,amount",
        "--map",
        "v=value",
        "--where",
        "tenant = 'acme' AND id < 300",
        "--tenant-column",
        "tenant",
        "--tolerance",
        "amount=0.000001",
        "--workers",
        "3",
        "--chunk-rows",
        "100",
        "--max-rows-per-second",
        "1000000",
        "--json",
        str(report),
    )
    assert code == 0, err
    data = json.loads(report.read_text())
    expected = {changed(2, "v"), changed(6, "amount"), missing(10)}
    assert found_in(data) == expected, show(found_in(data), expected)
    assert data["target"]["table"] == "items_v2"
    assert data["key"] == ["id"]
    assert {(c["source"], c["target"]) for c in data["columns"]} == {
        ("v", "value"),
        ("amount", "amount"),
    }
    assert data["where"] == "tenant = 'acme' AND id < 300"
    assert data["tenant_column"] == "tenant"
    assert {t: c for t, c in data["tenants"].items() if any(c.values())} == {
        "acme": {"missing": 1, "extra": 0, "changed": 2, "pending": 0}
    }
    assert data["source"]["rows"] == 149  # the acme rows below 300


def test_max_diffs_truncates_the_report(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    source, target = sqlite_pair(tmp_path)
    table = simple(source, target)
    update(target, table, {i: {"v": "changed"} for i in range(1, 51)})
    report = tmp_path / "r.json"
    code, out, err = in_process(
        capsys,
        "--source",
        source,
        "--target",
        target,
        "--table",
        "items",
        "--max-diffs",
        "5",
        "--json",
        str(report),
    )
    assert code == 0, err
    data = json.loads(report.read_text())
    assert data["counts"]["changed"] == 50 and data["counts"]["drift"] == 50
    assert len(data["diffs"]) == 5 and data["truncated"] is True and data["max_diffs"] == 5
    # The summary lists what the report holds and says how many more there are.
    assert "45 more" in out, out


def test_postgresql_against_mariadb_with_a_password_in_the_url(
    fresh_pg: Callable[[], str], fresh_mariadb: Callable[[], str], tmp_path: Path
) -> None:
    source, target = fresh_pg(), fresh_mariadb()
    seeded, _ = seeded_orders()
    create(source, "orders", orders_cols(scale=2), seeded.source)
    create(target, "orders", orders_cols(scale=4), seeded.target)
    secret = sa.make_url(source).set(password="sekret-pw").render_as_string(hide_password=False)
    report = tmp_path / "r.json"
    result = cutover_audit(
        "--source",
        secret,
        "--target",
        target,
        "--table",
        "orders",
        "--tolerance",
        "score=1e-9",
        "--chunk-rows",
        "100",
        "--json",
        str(report),
        "--fail-on-drift",
    )
    assert result.returncode == 1, result.stderr
    text = report.read_text()
    assert "sekret-pw" not in text + result.stdout + result.stderr
    data = json.loads(text)
    assert found_in(data) == seeded.expected, show(found_in(data), seeded.expected)
    assert data["counts"]["drift"] == len(seeded.expected)


# Bad input ---------------------------------------------------------------------------------


@pytest.fixture
def databases(tmp_path: Path) -> tuple[str, str]:
    source, target = sqlite_pair(tmp_path)
    simple(source, target)
    create(source, "dups", [Col("id", sa.Integer()), Col("v", TEXT)], [{"id": 1}, {"id": 1}])
    create(target, "dups", [Col("id", sa.Integer()), Col("v", TEXT)], [{"id": 1}])
    return source, target


BAD_FLAGS: list[tuple[list[str], str]] = [
    (["--table", "nosuch"], "nosuch"),
    (["--table", "items", "--columns", "ghost"], "ghost"),
    (["--table", "items", "--key", "ghost"], "ghost"),
    (["--table", "items", "--tolerance", "amount=lots"], "amount"),
    (["--table", "items", "--tolerance", "amount"], "tolerance"),
    (["--table", "items", "--tolerance", "amount=-1"], "amount"),
    (["--table", "items", "--map", "v"], "map"),
    (["--table", "items", "--map", "ghost=v"], "ghost"),
    (["--table", "items", "--tenant-column", "ghost"], "ghost"),
    (["--table", "items", "--chunk-rows", "0"], "chunk"),
    (["--table", "items", "--workers", "0"], "workers"),
    (["--table", "items", "--where", "ghost = 1"], "where"),
    (["--table", "dups", "--key", "id"], "dups"),
    (["--table", "items", "--json", "/nonexistent/folder/r.json"], "/nonexistent/folder"),
]


@pytest.mark.parametrize(("flags", "named"), BAD_FLAGS, ids=[" ".join(f) for f, _ in BAD_FLAGS])
def test_bad_input_exits_2_with_one_sentence(
    capsys: pytest.CaptureFixture[str], databases: tuple[str, str], flags: list[str], named: str
) -> None:
    source, target = databases
    code, out, err = in_process(capsys, "--source", source, "--target", target, *flags)
    assert code == 2, (code, out, err)
    message = err.strip()
    assert message.startswith("cutover: "), message
    assert "\n" not in message and "Traceback" not in message, message
    assert named.lower() in message.lower(), message


def test_bad_databases_exit_2_and_create_nothing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    absent = tmp_path / "absent.db"
    cases = [
        (["--source", str(absent), "--target", str(absent)], "absent.db"),
        (["--source", "oracle://scott@db/x", "--target", str(absent)], "oracle"),
        (
            ["--source", "postgresql://postgres@127.0.0.1:1/test", "--target", str(absent)],
            "source",
        ),
    ]
    for flags, named in cases:
        code, _, err = in_process(capsys, *flags, "--table", "t")
        assert code == 2, (flags, err)
        message = err.strip()
        assert message.startswith("cutover: ") and "\n" not in message, message
        assert named in message, message
    assert not absent.exists(), "an audit must not create a database file"


def test_a_missing_flag_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = in_process(capsys, "--source", "x.db", "--target", "y.db")
    assert code == 2
    assert "--table" in err and "Traceback" not in err


# Checkpoints -------------------------------------------------------------------------------


def checkpoint_rows(path: Path) -> int:
    """How many lines the checkpoint holds (beyond being there at all)."""
    try:
        return len([line for line in path.read_text().splitlines() if line.strip()])
    except FileNotFoundError:
        return 0


def test_a_killed_audit_resumes_from_its_checkpoint(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    source, target = sqlite_pair(tmp_path)
    cols = [Col("id", sa.Integer(), key=True), Col("v", TEXT)]
    rows = [{"id": i, "v": f"v{i}"} for i in range(1, 6001)]
    create(source, "big", cols, rows)
    table = create(target, "big", cols, rows)
    edges = {1, 100, 101, 3000, 5999, 6000}
    update(target, table, {i: {"v": "changed"} for i in edges})
    delete(target, table, "id", [2500])
    insert(target, table, [{"id": 6001, "v": "new"}, {"id": 0, "v": "new"}])
    expected = {changed(i, "v") for i in edges} | {missing(2500), extra(6001), extra(0)}

    checkpoint = tmp_path / "audit.checkpoint"
    report = tmp_path / "r.json"
    common = [
        "--source",
        source,
        "--target",
        target,
        "--table",
        "big",
        "--chunk-rows",
        "100",
        "--workers",
        "1",
        "--checkpoint",
        str(checkpoint),
        "--json",
        str(report),
    ]
    slow = subprocess.Popen(
        [*COMMAND, *common, "--max-rows-per-second", "1500"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while checkpoint_rows(checkpoint) < 4 and slow.poll() is None:
            assert time.monotonic() < deadline, "the checkpoint never recorded progress"
            time.sleep(0.02)
    finally:
        if slow.poll() is None:
            os.kill(slow.pid, signal.SIGKILL)
        slow.wait(10)
    assert slow.returncode == -signal.SIGKILL, "the audit finished before it could be killed"
    assert not report.exists()
    assert checkpoint.exists()

    code, _, err = in_process(capsys, *common, "--fail-on-drift")
    assert code == 1, err
    data = json.loads(report.read_text())
    assert found_in(data) == expected, show(found_in(data), expected)
    assert data["source"]["rows"] == 6000 and data["target"]["rows"] == 6001
    assert data["chunks"]["total"] >= 60


def test_a_checkpoint_of_another_audit_is_not_mixed_in(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    source, target = sqlite_pair(tmp_path)
    table = simple(source, target)
    update(target, table, {5: {"v": "changed"}})
    cols = [Col("id", sa.Integer(), key=True), Col("v", TEXT)]
    create(source, "other", cols, [{"id": i, "v": "x"} for i in range(1, 301)])
    create(target, "other", cols, [{"id": i, "v": "x"} for i in range(2, 301)])
    checkpoint = tmp_path / "audit.checkpoint"
    # A checkpoint of an audit of `items` cut short after its first chunks.
    slow = subprocess.Popen(
        [
            *COMMAND,
            "--source",
            source,
            "--target",
            target,
            "--table",
            "items",
            "--chunk-rows",
            "100",
            "--workers",
            "1",
            "--max-rows-per-second",
            "100",
            "--checkpoint",
            str(checkpoint),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while checkpoint_rows(checkpoint) < 2 and slow.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        if slow.poll() is None:
            os.kill(slow.pid, signal.SIGKILL)
        slow.wait(10)
    assert checkpoint.exists()
    report = tmp_path / "r.json"
    code, _, err = in_process(
        capsys,
        "--source",
        source,
        "--target",
        target,
        "--table",
        "other",
        "--chunk-rows",
        "100",
        "--checkpoint",
        str(checkpoint),
        "--json",
        str(report),
    )
    assert code == 2, err  # refused, saying why, with nothing mixed in or written
    message = err.strip()
    assert "checkpoint" in message and "different audit" in message and "\n" not in message
    assert not report.exists()
