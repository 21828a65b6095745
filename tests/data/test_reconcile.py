"""Reconcile from an audit report on real SQLite, PostgreSQL and MariaDB: the dry run writes
nothing and prints SQL that does the job, --apply makes the sides equal, and the undo script puts
back what was there."""

from __future__ import annotations

import json
import sqlite3
import urllib.parse
import uuid
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from cutover.cli import main
from cutover.data import reconcile as rec
from cutover.errors import CutoverError, InvalidInput

ENGINES = ["sqlite", "postgresql", "mariadb"]
DATETIME6 = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
T0 = datetime(2026, 1, 2, 3, 4, 5, 123456)

# (region, id) -> (tenant, note, amount, placed_at): the source ("orders") and the target
# ("orders_v2", where amount is called total) as seeded.
SOURCE = {
    ("eu", 1): ("acme", "same", "1.50", T0),
    ("eu", 2): ("acme", "héllo ✓ 日本", "2.00", T0),
    ("eu", 3): ("acme", "two\nlines \\ 'quoted'\r\n", "5.50", T0),
    ("us", 1): ("globex", None, "3.25", T0),
    ("us", 2): ("globex", "it's", "4.00", T0),
}
TARGET = {
    ("eu", 1): ("acme", "same", "1.50", T0),
    ("us", 1): ("globex", "", "3.25", T0),
    ("us", 2): ("globex", "it's", "4.01", T0 + timedelta(seconds=1)),
    ("us", 9): ("globex", "extra", "9.99", T0),
}
# What an audit of the seeded tables reports, written by hand.
DIFFS = [
    ("missing", ["eu", 2], "acme", []),
    ("missing", ["eu", 3], "acme", []),
    ("extra", ["us", 9], "globex", []),
    ("changed", ["us", 1], "globex", ["note"]),
    ("changed", ["us", 2], "globex", ["amount", "placed_at"]),
]


# Databases, tables and reports ----------------------------------------------------------------


@pytest.fixture(params=ENGINES)
def sides(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """A source and a target database of the same engine, empty."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'source.db'}", f"sqlite:///{tmp_path / 'target.db'}"
    make: Callable[[], str] = request.getfixturevalue(
        "fresh_pg" if request.param == "postgresql" else "fresh_mariadb"
    )
    return make(), make()


@pytest.fixture
def local(tmp_path: Path) -> tuple[str, str]:
    return f"sqlite:///{tmp_path / 'source.db'}", f"sqlite:///{tmp_path / 'target.db'}"


@contextmanager
def connected(url: str) -> Iterator[sa.Connection]:
    engine = sa.create_engine(url)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", sa.exc.SAWarning)  # SQLite keeps Decimal as REAL
            with engine.begin() as conn:
                yield conn
    finally:
        engine.dispose()


def orders(name: str, amount: str) -> sa.Table:
    return sa.Table(
        name,
        sa.MetaData(),
        sa.Column("region", sa.String(8), primary_key=True),
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("tenant", sa.String(20), nullable=False),
        sa.Column("note", sa.String(200)),
        sa.Column(amount, sa.Numeric(10, 2)),
        sa.Column("placed_at", DATETIME6),
    )


SOURCE_TABLE, TARGET_TABLE = orders("orders", "amount"), orders("orders_v2", "total")


def write(url: str, table: sa.Table, rows: dict[tuple[str, int], tuple[Any, ...]]) -> None:
    amount = table.c.keys()[4]
    with connected(url) as conn:
        table.create(conn)
        conn.execute(
            table.insert(),
            [
                {
                    "region": region,
                    "id": id_,
                    "tenant": tenant,
                    "note": note,
                    amount: Decimal(value),
                    "placed_at": at,
                }
                for (region, id_), (tenant, note, value, at) in rows.items()
            ],
        )


def seed(source: str, target: str) -> None:
    write(source, SOURCE_TABLE, SOURCE)
    write(target, TARGET_TABLE, TARGET)


def execute(url: str, *statements: Any) -> None:
    with connected(url) as conn:
        for statement in statements:
            conn.execute(statement)


def contents(url: str, table: sa.Table) -> list[tuple[Any, ...]]:
    """Every row, ordered by key, with values every engine agrees on."""
    with connected(url) as conn:
        rows = conn.execute(sa.select(table).order_by(table.c.region, table.c.id)).all()
    return [
        (
            region,
            id_,
            tenant,
            note,
            None if value is None else Decimal(value).quantize(Decimal("0.01")),
            at,
        )
        for region, id_, tenant, note, value, at in rows
    ]


def hand_report(source: str, target: str, **fields: Any) -> dict[str, Any]:
    """The report an audit of the seeded tables gives, as `cutover audit --json` writes it."""
    diffs = [
        {
            "kind": kind,
            "key": key,
            "tenant": tenant,
            "columns": columns,
            "source": None,
            "target": None,
        }
        for kind, key, tenant, columns in DIFFS
    ]
    counts = {
        kind: sum(1 for d in diffs if d["kind"] == kind)
        for kind in ("missing", "extra", "changed", "pending")
    }
    return {
        "format": "cutover-audit/1",
        "source": {"url": source, "table": "orders", "dialect": "-", "rows": len(SOURCE)},
        "target": {"url": target, "table": "orders_v2", "dialect": "-", "rows": len(TARGET)},
        "key": ["region", "id"],
        "key_columns": [
            {"source": "region", "target": "region", "kind": "text"},
            {"source": "id", "target": "id", "kind": "integer"},
        ],
        "columns": [
            {"source": "tenant", "target": "tenant", "kind": "text"},
            {"source": "note", "target": "note", "kind": "text"},
            {"source": "amount", "target": "total", "kind": "numeric"},
            {"source": "placed_at", "target": "placed_at", "kind": "timestamp"},
        ],
        "where": None,
        "tenant_column": "tenant",
        "counts": {**counts, "drift": len(diffs) - counts["pending"]},
        "diffs": diffs,
        "truncated": False,
        "max_diffs": 1000,
        "clean": False,
        **fields,
    }


def audited(source: str, target: str, **options: Any) -> dict[str, Any]:
    """The report of a real audit of orders against orders_v2."""
    from cutover.data.audit import AuditSpec, audit

    spec = AuditSpec(
        source=source,
        target=target,
        table="orders",
        target_table="orders_v2",
        column_map={"amount": "total"},
        tenant_column="tenant",
        recheck_delay=0,
        **options,
    )
    return audit(spec).to_json()


def saved(report: dict[str, Any], folder: Path) -> Path:
    path = folder / "report.json"
    path.write_text(json.dumps(report), encoding="utf-8")
    return path


def reconcile(capsys: pytest.CaptureFixture[str], *args: Any) -> tuple[int, str, str]:
    """``cutover reconcile ARGS`` in this process: exit code, standard output and error."""
    with pytest.raises(SystemExit) as exited:
        main(["reconcile", *map(str, args)])
    out, err = capsys.readouterr()
    code = exited.value.code
    return 0 if code is None else int(code), out, err


def run_script(url: str, script: str) -> None:
    """Run an SQL script the way the database's own client would, statements and comments."""
    parsed = sa.make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        with sqlite3.connect(str(parsed.database)) as conn:
            conn.executescript(script)
        return
    if backend == "postgresql":
        import psycopg

        libpq = url.replace("postgresql+psycopg://", "postgresql://", 1)
        with psycopg.connect(libpq, autocommit=True) as conn:
            conn.execute(script)
        return
    import pymysql
    from pymysql.constants import CLIENT

    conn = pymysql.connect(
        host=parsed.host,
        port=parsed.port or 3306,
        user=parsed.username,
        password=parsed.password or "",
        database=parsed.database,
        charset="utf8mb4",
        client_flag=CLIENT.MULTI_STATEMENTS,
        autocommit=True,
    )
    try:
        with conn.cursor() as cursor:
            cursor.execute(script)
            while cursor.nextset():
                pass
    finally:
        conn.close()


def without(rows: list[tuple[Any, ...]], *keys: tuple[str, int]) -> list[tuple[Any, ...]]:
    return [row for row in rows if (row[0], row[1]) not in keys]


# The dry run, --apply and the undo script on every engine -----------------------------------


def test_dry_run_writes_nothing_and_prints_sql_that_does_the_job(
    sides: tuple[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, target = sides
    seed(source, target)
    report = saved(audited(source, target), tmp_path)
    before = contents(target, TARGET_TABLE)

    code, out, err = reconcile(capsys, report, "--allow-delete")

    assert code == 0, err
    assert contents(target, TARGET_TABLE) == before
    assert not Path(rec.default_undo_path(report)).exists()
    lines = [line for line in out.splitlines() if not line.startswith("--")]
    # The session settings come first (zone, text forms of times), then the statements.
    session = list(rec.plan(report, allow_delete=True).session)
    assert lines[: len(session)] == session
    statements = lines[len(session) :]
    assert len(statements) == 5, out
    assert all(line.endswith(";") for line in statements)
    assert sum(line.startswith("INSERT INTO orders_v2") for line in statements) == 2
    assert sum(line.startswith("UPDATE orders_v2 SET") for line in statements) == 2
    assert sum(line.startswith("DELETE FROM orders_v2") for line in statements) == 1
    assert "héllo ✓ 日本" in out
    assert "would run 5 statements on the target: 2 inserts, 2 updates, 1 delete" in out
    assert "add --apply" in out

    # What it printed is the whole job: run by the database's own client, the sides agree.
    run_script(target, out)
    assert contents(target, TARGET_TABLE) == contents(source, SOURCE_TABLE)
    assert audited(source, target)["clean"] is True


def test_apply_makes_the_sides_equal_and_the_undo_script_restores_the_target(
    sides: tuple[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, target = sides
    seed(source, target)
    report = saved(audited(source, target), tmp_path)
    before = contents(target, TARGET_TABLE)

    code, out, err = reconcile(capsys, report, "--apply", "--allow-delete", "--batch-size", 2)

    assert code == 0, err
    assert "applied on the target (orders_v2): 2 inserted, 2 updated, 1 deleted in 3 batches" in out
    assert contents(target, TARGET_TABLE) == contents(source, SOURCE_TABLE)
    assert audited(source, target)["clean"] is True
    undo = Path(rec.default_undo_path(report))
    assert f"undo script: {undo}" in out
    script = undo.read_text(encoding="utf-8")
    assert script.splitlines()[-1] == "COMMIT;"

    run_script(target, script)
    assert contents(target, TARGET_TABLE) == before
    # Undoing twice, or undoing writes that never ran, changes nothing.
    run_script(target, script)
    assert contents(target, TARGET_TABLE) == before


def test_rows_changed_since_the_report_are_reconciled_as_they_are_now(
    sides: tuple[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, target = sides
    seed(source, target)
    report = saved(hand_report(source, target), tmp_path)
    s, t = SOURCE_TABLE, TARGET_TABLE
    execute(
        target,
        # no longer differs: NULL on both sides now
        t.update().where(t.c.region == "us", t.c.id == 1).values(note=None),
        # was missing, now there with another note: an update, not an insert
        t.insert().values(
            region="eu", id=3, tenant="acme", note="late", total=Decimal("5.50"), placed_at=T0
        ),
    )
    execute(
        source,
        # changed again on the source: the new value wins, not the report's
        s.update().where(s.c.region == "us", s.c.id == 2).values(amount=Decimal("4.50")),
        # was missing, now gone from the source too
        s.delete().where(s.c.region == "eu", s.c.id == 2),
    )

    planned = rec.plan(report)

    assert planned.counts == rec.PlanCounts(update=2, unchanged=2, extra_kept=1)
    assert [(st.kind, st.key) for st in planned.statements] == [
        ("update", ("eu", 3)),
        ("update", ("us", 2)),
    ]
    result = rec.apply(planned, undo_path=tmp_path / "undo.sql")
    assert (result.updated, result.inserted, result.deleted) == (2, 0, 0)
    assert without(contents(target, TARGET_TABLE), ("us", 9)) == contents(source, SOURCE_TABLE)
    assert ("us", 2, "globex", "it's", Decimal("4.50"), T0) in contents(target, TARGET_TABLE)


# Keys of every kind ------------------------------------------------------------------------


def events(name: str) -> sa.Table:
    tag = sa.LargeBinary().with_variant(mysql.VARBINARY(16), "mysql", "mariadb")
    return sa.Table(
        name,
        sa.MetaData(),
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("at", DATETIME6, primary_key=True),
        sa.Column("tag", tag, primary_key=True),
        sa.Column("flag", sa.Boolean),
        sa.Column("price", sa.Numeric(12, 4)),
    )


def test_uuid_timestamp_and_bytes_keys_round_trip_through_the_report(
    sides: tuple[str, str], tmp_path: Path
) -> None:
    from cutover.data.audit import AuditSpec, audit

    source, target = sides
    ids = [uuid.UUID(int=n) for n in (1, 2, 3, 4)]
    row = {"at": T0, "tag": b"\x00\xff'", "flag": True, "price": Decimal("1.2345")}
    with connected(source) as conn:
        table = events("events")
        table.create(conn)
        conn.execute(table.insert(), [{**row, "id": ids[0]}, {**row, "id": ids[1]}])
        conn.execute(table.insert(), [{**row, "id": ids[2], "at": T0 + timedelta(days=1)}])
    with connected(target) as conn:
        table.create(conn)
        conn.execute(table.insert(), [{**row, "id": ids[0], "flag": False, "price": 0}])
        conn.execute(table.insert(), [{**row, "id": ids[3]}])
    report = audit(AuditSpec(source, target, "events", recheck_delay=0)).to_json()
    assert report["counts"]["drift"] == 4

    planned = rec.plan(report, allow_delete=True)
    rec.apply(planned, undo_path=tmp_path / "undo.sql")

    assert planned.counts == rec.PlanCounts(insert=2, update=1, delete=1)
    assert audit(AuditSpec(source, target, "events", recheck_delay=0)).clean
    run_script(target, (tmp_path / "undo.sql").read_text(encoding="utf-8"))
    again = audit(AuditSpec(source, target, "events", recheck_delay=0)).to_json()
    assert again["diffs"] == report["diffs"]


def test_from_postgresql_to_mariadb_with_zoned_times_and_uuids_as_text(
    fresh_pg: Callable[[], str], fresh_mariadb: Callable[[], str], tmp_path: Path
) -> None:
    from cutover.data.audit import AuditSpec, audit

    source, target = fresh_pg(), fresh_mariadb()
    east = timezone(timedelta(hours=2))
    ids = [uuid.UUID(int=n) for n in (1, 2, 3, 4)]
    legacy = sa.Table(
        "accounts",
        sa.MetaData(),
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("opened_at", sa.DateTime(timezone=True)),
        sa.Column("active", sa.Boolean),
        sa.Column("balance", sa.Numeric(12, 2)),
    )
    new = sa.Table(
        "accounts",
        sa.MetaData(),
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("opened_at", DATETIME6),
        sa.Column("active", sa.Boolean),
        sa.Column("balance", sa.Numeric(12, 2)),
    )
    at = datetime(2026, 3, 1, 12, 30, 15, 250000, tzinfo=east)
    utc = at.astimezone(UTC).replace(tzinfo=None)
    with connected(source) as conn:
        legacy.create(conn)
        conn.execute(
            legacy.insert(),
            [
                {"id": i, "opened_at": at, "active": True, "balance": Decimal("10.50")}
                for i in ids[:3]
            ],
        )
    with connected(target) as conn:
        new.create(conn)
        conn.execute(
            new.insert(),
            [
                {"id": str(ids[0]), "opened_at": utc, "active": True, "balance": Decimal("10.5")},
                {"id": str(ids[1]), "opened_at": utc, "active": False, "balance": Decimal("10.5")},
                {"id": str(ids[3]), "opened_at": utc, "active": True, "balance": Decimal("1")},
            ],
        )
    report = audit(AuditSpec(source, target, "accounts", recheck_delay=0)).to_json()
    assert report["counts"]["drift"] == 3

    planned = rec.plan(report, allow_delete=True)
    rec.apply(planned, undo_path=tmp_path / "undo.sql")

    assert planned.counts == rec.PlanCounts(insert=1, update=1, delete=1)
    assert audit(AuditSpec(source, target, "accounts", recheck_delay=0)).clean
    with connected(target) as conn:
        inserted = conn.execute(sa.select(new).where(new.c.id == str(ids[2]))).one()
    assert inserted.opened_at == utc and inserted.active is True
    run_script(target, (tmp_path / "undo.sql").read_text(encoding="utf-8"))
    again = audit(AuditSpec(source, target, "accounts", recheck_delay=0)).to_json()
    assert again["diffs"] == report["diffs"]


# --prefer target, --allow-delete, --where --------------------------------------------------


def test_prefer_target_makes_the_source_equal_to_the_target(
    local: tuple[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, target = local
    seed(source, target)
    report = saved(hand_report(source, target), tmp_path)
    before = contents(source, SOURCE_TABLE)

    code, out, _ = reconcile(capsys, report, "--prefer", "target")
    assert code == 0
    assert "would run 3 statements on the source: 1 insert, 2 updates, 0 deletes" in out
    assert "kept 2 rows that only the source holds; add --allow-delete to delete them" in out
    assert "INSERT INTO orders (region, id, tenant, note, amount, placed_at) VALUES" in out

    code, out, err = reconcile(capsys, report, "--prefer", "target", "--allow-delete", "--apply")
    assert code == 0, err
    assert "1 inserted, 2 updated, 2 deleted" in out
    assert contents(source, SOURCE_TABLE) == contents(target, TARGET_TABLE)
    run_script(source, Path(rec.default_undo_path(report)).read_text(encoding="utf-8"))
    assert contents(source, SOURCE_TABLE) == before


def test_extra_rows_are_kept_unless_deleting_is_allowed(local: tuple[str, str]) -> None:
    source, target = local
    seed(source, target)
    report = hand_report(source, target)

    kept = rec.plan(report)
    assert kept.counts.extra_kept == 1 and kept.counts.delete == 0
    assert all(statement.kind != "delete" for statement in kept.statements)

    deleting = rec.plan(report, allow_delete=True)
    assert deleting.counts.extra_kept == 0 and deleting.counts.delete == 1
    assert deleting.statements[0].sql == (
        "DELETE FROM orders_v2 WHERE orders_v2.region = 'us' AND orders_v2.id = 9;"
    )
    assert deleting.statements[0].tenant == "globex"


def test_rows_that_left_the_audited_where_are_skipped(local: tuple[str, str]) -> None:
    source, target = local
    seed(source, target)
    report = hand_report(source, target, where="tenant = 'acme'")
    report["diffs"] = [d for d in report["diffs"] if d["tenant"] == "acme"]
    s = SOURCE_TABLE
    execute(source, s.update().where(s.c.region == "eu", s.c.id == 2).values(tenant="globex"))

    planned = rec.plan(report, allow_delete=True)

    assert planned.counts == rec.PlanCounts(insert=1, out_of_scope=1)
    assert planned.statements[0].key == ("eu", 3)


# What the summary says --------------------------------------------------------------------


def test_pending_diffs_and_a_truncated_report_are_said_so(
    local: tuple[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, target = local
    seed(source, target)
    report = hand_report(source, target, truncated=True)
    report["diffs"].append(
        {"kind": "pending", "key": ["eu", 1], "tenant": "acme", "columns": [], "source": None}
    )
    report["counts"] = {"missing": 20, "extra": 1, "changed": 2, "pending": 1, "drift": 23}

    code, out, _ = reconcile(capsys, saved(report, tmp_path))

    assert code == 0
    assert "-- not reconciled: 1 pending diff" in out
    assert "run the audit again to settle them" in out
    assert "the report is truncated (the audit counted 23 diffs)" in out
    assert "run the audit again to find the rest" in out


def test_json_output_holds_the_statements_and_counts(
    local: tuple[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, target = local
    seed(source, target)
    report = saved(hand_report(source, target), tmp_path)

    code, out, _ = reconcile(capsys, report, "--json", "--apply", "--undo", tmp_path / "u.sql")

    data = json.loads(out)
    assert code == 0
    assert data["applied"] is True and data["side"] == "target" and data["prefer"] == "source"
    assert data["counts"] == {
        "insert": 2,
        "update": 2,
        "delete": 0,
        "unchanged": 0,
        "extra_kept": 1,
        "out_of_scope": 0,
        "pending": 0,
    }
    assert data["tenants"] == {
        "acme": {"insert": 2, "update": 0, "delete": 0},
        "globex": {"insert": 0, "update": 2, "delete": 0},
    }
    assert data["result"]["undo_path"] == str(tmp_path / "u.sql")
    assert {tuple(s["key"]) for s in data["statements"]} == {
        ("eu", 2),
        ("eu", 3),
        ("us", 1),
        ("us", 2),
    }


# Failing safely -----------------------------------------------------------------------------


def test_a_failing_batch_is_rolled_back_and_the_undo_script_covers_the_rest(
    local: tuple[str, str], tmp_path: Path
) -> None:
    source, target = local
    seed(source, target)
    before = contents(target, TARGET_TABLE)
    planned = rec.plan(hand_report(source, target))
    # Someone writes a row the plan inserts last, between planning and applying.
    execute(
        target,
        TARGET_TABLE.insert().values(region="eu", id=3, tenant="acme", note="meanwhile"),
    )
    undo = tmp_path / "undo.sql"

    with pytest.raises(CutoverError, match="batch 4 of 4 failed on the target and was rolled back"):
        rec.apply(planned, batch_size=1, undo_path=undo)

    now = contents(target, TARGET_TABLE)
    assert ("eu", 2, "acme", "héllo ✓ 日本", Decimal("2.00"), T0) in now  # batch 3 committed
    assert ("eu", 3, "acme", "meanwhile", None, None) in now  # batch 4 rolled back
    run_script(target, undo.read_text(encoding="utf-8"))
    # The undo script deletes the rows the plan inserted, whoever wrote them last.
    assert contents(target, TARGET_TABLE) == before


def test_an_undo_script_is_never_overwritten(
    local: tuple[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, target = local
    seed(source, target)
    report = saved(hand_report(source, target), tmp_path)
    Path(rec.default_undo_path(report)).write_text("-- an earlier undo script\n")
    before = contents(target, TARGET_TABLE)

    code, _, err = reconcile(capsys, report, "--apply")

    assert code == 2
    assert "already exists" in err and "--undo" in err
    assert contents(target, TARGET_TABLE) == before


def test_a_redacted_password_needs_the_url_given_again(
    local: tuple[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, target = local
    seed(source, target)
    redacted = "postgresql://app:***@db.internal:5432/shop"
    report = saved(hand_report(source, redacted), tmp_path)

    code, _, err = reconcile(capsys, report)
    assert code == 2
    assert err.count("\n") == 1
    assert "the target database needs its password" in err and "pass --target" in err

    plain_path = sa.make_url(target).database
    code, out, err = reconcile(capsys, report, "--target", plain_path, "--apply")
    assert code == 0, err
    assert "applied on the target (orders_v2): 2 inserted, 2 updated, 0 deleted" in out
    assert f"sqlite3 {plain_path} < " in Path(rec.default_undo_path(report)).read_text()


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (None, "no audit report at"),
        ("{not json", "is not JSON"),
        ('{"rows": []}', "is not an audit report"),
        ('{"format": "cutover-audit/9"}', "format 'cutover-audit/9', which this version"),
        ('{"format": "cutover-audit/1", "source": {}}', "lacks a valid source 'url'"),
    ],
)
def test_a_file_that_is_not_a_report_is_one_sentence(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None, words: str
) -> None:
    path = tmp_path / "report.json"
    if content is not None:
        path.write_text(content)

    code, out, err = reconcile(capsys, path)

    assert code == 2 and out == ""
    assert words in err and err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (
            {"target": {"url": "", "table": "nope"}},
            "table 'nope' does not exist in the target database",
        ),
        (
            {"columns": [{"source": "amount", "target": "amount", "kind": "numeric"}]},
            "has no column 'amount' that the report compares",
        ),
        ({"key_columns": [{"source": "region", "target": "region"}]}, "a key of 1 values"),
        ({"diffs": [{"kind": "gone", "key": ["eu", 1]}]}, "holds a diff that is not one"),
        (
            {"diffs": [{"kind": "missing", "key": ["eu", "one"], "tenant": None}]},
            "does not fit the key column id",
        ),
    ],
)
def test_a_report_that_does_not_fit_the_tables_is_one_sentence(
    local: tuple[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    change: dict[str, Any],
    words: str,
) -> None:
    source, target = local
    seed(source, target)
    report = hand_report(source, target)
    report.update(change)
    if "target" in change:
        report["target"] = {**change["target"], "url": target}

    code, _, err = reconcile(capsys, saved(report, tmp_path))

    assert code == 2
    assert words in err and err.count("\n") == 1


def test_the_library_refuses_a_bad_preference_and_batch_size(local: tuple[str, str]) -> None:
    source, target = local
    seed(source, target)
    with pytest.raises(InvalidInput, match="prefer must be 'source' or 'target'"):
        rec.plan(hand_report(source, target), prefer="legacy")
    planned = rec.plan(hand_report(source, target))
    with pytest.raises(InvalidInput, match="at least 1"):
        rec.apply(planned, batch_size=0, undo_path=None)
    assert "connect_url" not in repr(planned)
    assert urllib.parse.urlsplit(planned.url).scheme == "sqlite"


def test_text_with_line_breaks_stays_on_one_line_and_means_the_same(local: tuple[str, str]) -> None:
    source, target = local
    seed(source, target)
    planned = rec.plan(hand_report(source, target))
    inserted = next(s for s in planned.statements if s.key == ("eu", 3))
    assert "\n" not in inserted.sql and "\r" not in inserted.sql
    assert "char(10)" in inserted.sql and "char(13)" in inserted.sql
    assert "'2026-01-02 03:04:05.123456'" in inserted.sql
