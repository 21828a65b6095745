"""Reconcile carries every value exactly: what it writes, what its dry run prints and what its
undo script restores are the values as the database stored them, run by cutover itself or by
the database's own command-line client (``psql``, ``sqlite3``)."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from cutover.cli import main
from cutover.data import reconcile as rec
from cutover.data.audit import AuditSpec, audit

from ..conftest import need
from .audit_seed import execute


def audited(source: str, target: str, table: str = "t", **options: Any) -> dict[str, Any]:
    return audit(AuditSpec(source, target, table, recheck_delay=0, **options)).to_json()


def cli(capsys: pytest.CaptureFixture[str], *args: Any) -> str:
    """``cutover ARGS`` in this process; fails the test unless it exits 0; its output."""
    with pytest.raises(SystemExit) as exited:
        main([*map(str, args)])
    out, err = capsys.readouterr()
    assert exited.value.code in (0, None), err
    return out


def libpq(url: str) -> str:
    """A ``fresh_pg`` URL as ``psql`` takes it (the schema stays first on the search path)."""
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def client(name: str) -> None:
    """Skip (or fail, where services are required) without the database's own client."""
    need(None if shutil.which(name) else f"the {name} command-line client is not installed")


def psql(url: str, script: Path) -> None:
    """Run ``script`` with the real ``psql``, stopping at the first error."""
    client("psql")
    done = subprocess.run(
        ["psql", libpq(url), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", str(script)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def sqlite3_cli(url: str, script: Path) -> None:
    """Run ``script`` with the real ``sqlite3`` shell, stopping at the first error."""
    client("sqlite3")
    database = sa.make_url(url).database
    with open(script, "rb") as handle:
        done = subprocess.run(
            ["sqlite3", "-bail", str(database)], stdin=handle, capture_output=True, check=False
        )
    assert done.returncode == 0 and not done.stderr, done.stderr.decode(errors="replace")


def pg_rows(url: str, table: str = "t") -> list[str]:
    """Every row as PostgreSQL prints it: each type's own exact text, -0 and NaN included."""
    with sa.create_engine(url).connect() as conn:
        return [r[0] for r in conn.exec_driver_sql(f"SELECT {table}::text FROM {table} ORDER BY 1")]


def sqlite_rows(url: str, table: str = "t") -> list[tuple[Any, ...]]:
    """Every row as SQLite stores it: each value with its storage class."""
    with sqlite3.connect(str(sa.make_url(url).database)) as conn:
        rows = conn.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()
    return [
        tuple((type(v).__name__, v.hex() if isinstance(v, float) else v) for v in r) for r in rows
    ]


# PostgreSQL: NaN, the infinities and a negative zero come back from the undo script --------


PG_EDGES = (
    "CREATE TABLE t (id int PRIMARY KEY, n numeric, f float8, r real, at timestamp,"
    " day date, span interval, doc jsonb, raw json)"
)
PG_VALUES = [
    "(1, 'NaN', '-0', '-0', 'infinity', '-infinity', '1 mon -2 days 00:00:00.5',"
    ' \'{"a": 1.50}\', E\'{"a":\\n 1.50, "a": 2}\')',
    "(2, 'Infinity', 'NaN', 'Infinity', '-infinity', 'infinity', '-1 year',"
    " '[1.0, \"a\\nb\"]', E'\\t[]')",
    "(3, '-Infinity', '-Infinity', '1.1', '2024-02-29 23:59:59.999999', '0044-03-15 BC',"
    " '00:00:00', 'null', 'null')",
    "(4, 1e400, 5e-324, 1e-45, '294276-12-31 23:59:59', '5874897-12-31', '178000000 years',"
    " '\"x\"', ' \"x\" ')",
]
ZEROS = "0, 0, 0, now(), now(), '1 day', '{}', '{}'"
ONES = "1, 1, 1, now(), now(), '1 day', '{}', '{}'"  # -0 equals 0: ones differ from both


def test_postgresql_undo_restores_nan_infinities_and_negative_zero_with_psql(
    fresh_pg: Callable[[], str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, target = fresh_pg(), fresh_pg()
    execute(source, PG_EDGES, f"INSERT INTO t VALUES {PG_VALUES[2]}")
    execute(target, PG_EDGES, f"INSERT INTO t VALUES {', '.join(PG_VALUES)}")
    execute(target, PG_EDGES.replace(" t ", " t_before "), "INSERT INTO t_before SELECT * FROM t")
    execute(source, f"INSERT INTO t SELECT 1, {ZEROS}")
    before = pg_rows(target)
    report = tmp_path / "audit.json"
    report.write_text(json.dumps(audited(source, target)))

    out = cli(capsys, "reconcile", report, "--apply", "--allow-delete")

    assert "1 updated, 2 deleted" in out
    assert audited(source, target)["clean"] is True
    psql(target, Path(rec.default_undo_path(report)))
    assert pg_rows(target) == before
    assert audited(target, target, target_table="t_before")["clean"] is True


def test_postgresql_dry_run_run_by_psql_makes_the_sides_equal(
    fresh_pg: Callable[[], str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, target = fresh_pg(), fresh_pg()
    execute(source, PG_EDGES, f"INSERT INTO t VALUES {', '.join(PG_VALUES)}")
    execute(target, PG_EDGES, f"INSERT INTO t SELECT 1, {ONES}")
    execute(target, f"INSERT INTO t SELECT 9, {ONES}")
    report = tmp_path / "audit.json"
    report.write_text(json.dumps(audited(source, target)))

    script = tmp_path / "fix.sql"
    script.write_text(cli(capsys, "reconcile", report, "--allow-delete"), encoding="utf-8")
    psql(target, script)

    assert pg_rows(target) == pg_rows(source)
    assert audited(source, target)["clean"] is True


# SQLite: NUL in text, offsets in timestamps, floats the shell's parser would round ---------


SQLITE_EDGES = "CREATE TABLE t (id INTEGER PRIMARY KEY, note TEXT, at DATETIME, f REAL, b BLOB)"
SQLITE_ROWS = [
    (1, "a\x00b", "2024-06-01 12:00:00+02:00", 1.0400435887452719e-305, b"\x00'\n"),
    (2, "\x00", "2024-06-01T12:00:00Z", -3.440206382050071e-304, b""),
    (3, "two\r\nlines\t'q' \\ \x7f\x1b", "2024-06-01 12:00", 0.30000000000000004, None),
    (4, "", "infinity", 1.7976931348623157e308, b"\xff"),
]


def sqlite_table(url: str, rows: list[tuple[Any, ...]]) -> None:
    with sqlite3.connect(str(sa.make_url(url).database)) as conn:
        conn.execute(SQLITE_EDGES)
        conn.executemany("INSERT INTO t VALUES (?, ?, ?, ?, ?)", rows)


def test_sqlite_undo_restores_nul_text_and_exact_floats_with_the_sqlite3_shell(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, target = f"sqlite:///{tmp_path / 's.db'}", f"sqlite:///{tmp_path / 't.db'}"
    sqlite_table(source, [(1, "x", "2024-01-01 00:00:00", 0.5, b"x")])
    sqlite_table(target, SQLITE_ROWS)
    execute(
        target, SQLITE_EDGES.replace(" t ", " t_before "), "INSERT INTO t_before SELECT * FROM t"
    )
    before = sqlite_rows(target)
    report = tmp_path / "audit.json"
    report.write_text(json.dumps(audited(source, target)))

    cli(capsys, "reconcile", report, "--apply", "--allow-delete")

    assert sqlite_rows(target) == sqlite_rows(source)
    sqlite3_cli(target, Path(rec.default_undo_path(report)))
    assert sqlite_rows(target) == before
    assert audited(target, target, target_table="t_before")["clean"] is True


def test_sqlite_dry_run_run_by_the_sqlite3_shell_writes_values_as_stored(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, target = f"sqlite:///{tmp_path / 's.db'}", f"sqlite:///{tmp_path / 't.db'}"
    sqlite_table(source, SQLITE_ROWS)
    sqlite_table(target, [(1, "x", "2024-06-01 10:00:00.000000", 0.5, b"x")])
    report = tmp_path / "audit.json"
    report.write_text(json.dumps(audited(source, target)))

    script = tmp_path / "fix.sql"
    script.write_bytes(cli(capsys, "reconcile", report).encode())
    sqlite3_cli(target, script)

    assert sqlite_rows(target) == sqlite_rows(source)
    assert audited(source, target)["clean"] is True


def test_sqlite_timestamps_are_written_as_the_source_stored_them(tmp_path: Path) -> None:
    source, target = f"sqlite:///{tmp_path / 's.db'}", f"sqlite:///{tmp_path / 't.db'}"
    sqlite_table(source, SQLITE_ROWS)
    sqlite_table(target, [])

    rec.apply(rec.plan(audited(source, target)), undo_path=None)

    with sqlite3.connect(str(tmp_path / "t.db")) as conn:
        stored = [r[0] for r in conn.execute("SELECT at FROM t ORDER BY id")]
    assert stored == [row[2] for row in SQLITE_ROWS]
    assert sqlite_rows(target) == sqlite_rows(source)


def test_the_audit_sees_a_rewritten_timestamp_as_a_difference(tmp_path: Path) -> None:
    source, target = f"sqlite:///{tmp_path / 's.db'}", f"sqlite:///{tmp_path / 't.db'}"
    sqlite_table(source, [(1, "", "2024-06-01 12:00:00+02:00", 0.0, None)])
    sqlite_table(target, [(1, "", "2024-06-01 10:00:00.000000", 0.0, None)])

    report = audited(source, target)

    assert [(d["kind"], d["key"], d["columns"]) for d in report["diffs"]] == [
        ("changed", [1], ["at"])
    ]
    assert report["diffs"][0]["source"]["at"] == "2024-06-01T12:00:00+02:00"
    assert report["diffs"][0]["target"]["at"] == "2024-06-01T10:00:00"
