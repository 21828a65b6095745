"""The audit engine on real SQLite, PostgreSQL and MariaDB: it finds exactly the seeded
differences, no more and no less, within one engine and across engines."""

from __future__ import annotations

import itertools
import json
import math
import random
import uuid
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql

from cutover.data.audit import AuditSpec, audit
from cutover.errors import InvalidInput

from .audit_seed import (
    TEXT,
    Col,
    MariaUUID,
    changed,
    connect,
    create,
    delete,
    dialect,
    diff_for,
    execute,
    extra,
    found,
    insert,
    make_url,
    missing,
    orders_cols,
    pair,
    pg_schema_of,
    pg_with_timezone,
    seeded_orders,
    show,
    update,
)

SAME = ["sqlite-sqlite", "postgresql-postgresql", "mariadb-mariadb"]
CROSS = ["postgresql-mariadb", "sqlite-postgresql", "mariadb-sqlite"]


def run(source: str, target: str, table: str = "orders", **options: Any) -> Any:
    return audit(AuditSpec(source=source, target=target, table=table, **options))


def seed_orders(source: str, target: str, target_table: str = "orders") -> Any:
    """The standard table on both sides; the target's numeric column has a wider scale."""
    seeded, noise = seeded_orders()
    create(source, "orders", orders_cols(scale=2), seeded.source)
    create(target, target_table, orders_cols(scale=4), seeded.target)
    return seeded, noise


# Every kind of difference, within and across engines ----------------------------------------


@pytest.mark.parametrize(
    ("engines", "chunk_rows"),
    [*((e, 100) for e in SAME + CROSS), *((e, 10_000) for e in SAME)],
)
def test_finds_exactly_every_seeded_difference(
    request: pytest.FixtureRequest, tmp_path: Path, engines: str, chunk_rows: int
) -> None:
    source, target = pair(request, tmp_path, engines)
    seeded, _ = seed_orders(source, target)
    report = run(source, target, tolerance={"score": 1e-9}, chunk_rows=chunk_rows)
    got = found(report)
    assert got == seeded.expected, show(got, seeded.expected)
    data = report.to_json()
    assert data["counts"]["pending"] == 0
    assert (data["counts"]["missing"], data["counts"]["extra"]) == (2, 4)
    assert data["source"]["rows"] == len(seeded.source)
    assert data["target"]["rows"] == len(seeded.target)
    assert report.clean is False


@pytest.mark.parametrize("engines", [*SAME, "postgresql-mariadb"])
def test_float_noise_without_a_tolerance_is_a_difference(
    request: pytest.FixtureRequest, tmp_path: Path, engines: str
) -> None:
    source, target = pair(request, tmp_path, engines)
    seeded, noise = seed_orders(source, target)
    got = found(run(source, target))
    assert got == seeded.expected | noise, show(got, seeded.expected | noise)


@pytest.mark.parametrize("engines", [*SAME, "postgresql-mariadb"])
def test_a_tolerance_is_inclusive_and_applies_to_numerics(
    request: pytest.FixtureRequest, tmp_path: Path, engines: str
) -> None:
    source, target = pair(request, tmp_path, engines)
    cols = [
        Col("id", sa.Integer(), key=True),
        Col("x", sa.Double()),
        Col("y", sa.Double()),
        Col("m", sa.Numeric(12, 3)),
    ]
    # (id, x, y, m) on each side; x has a tolerance of 0.25, y of 1e-9, m of 0.005.
    left = [
        (1, 1.0, 0.0, "2.500"),
        (2, 1.0, 0.0, "2.500"),
        (3, 1.0, 0.0, "2.500"),
        (4, -1.0, 0.0, "-2.500"),
        (7, 0.0, 0.3, "0"),
        (8, 0.0, 1.0, "0"),
    ]
    right = [
        (1, 1.25, 0.0, "2.505"),  # both exactly at the tolerance: equal
        (2, 1.2501, 0.0, "2.506"),
        (3, 0.75, 0.0, "2.495"),
        (4, -1.3, 0.0, "-2.400"),
        (7, 0.0, 0.1 + 0.2, "0"),
        (8, 0.0, 1.00000001, "0"),
    ]

    def content(values: list[tuple[int, float, float, str]]) -> list[dict[str, Any]]:
        return [{"id": i, "x": x, "y": y, "m": Decimal(m)} for i, x, y, m in values]

    create(source, "t", cols, content(left))
    create(target, "t", cols, content(right))
    report = run(source, target, "t", tolerance={"x": 0.25, "y": 1e-9, "m": 0.005})
    expected = {changed(2, "m", "x"), changed(4, "m", "x"), changed(8, "y")}
    got = found(report)
    assert got == expected, show(got, expected)
    tolerances = {c["source"]: c.get("tolerance") for c in report.to_json()["columns"]}
    assert tolerances == {"x": 0.25, "y": 1e-9, "m": 0.005}


@pytest.mark.parametrize("engines", [*SAME, "postgresql-mariadb"])
def test_a_tolerance_next_to_huge_values(
    request: pytest.FixtureRequest, tmp_path: Path, engines: str
) -> None:
    """A tolerance far smaller than the values (1e300 against 1e-9), and values whose quotient
    by the tolerance has more digits than any decimal type holds (1e70 / 0.005)."""
    source, target = pair(request, tmp_path, engines)
    cols = [Col("id", sa.Integer(), key=True), Col("x", sa.Double()), Col("y", sa.Double())]
    left = [(1, 1e300, 1.0), (2, 1.0, 1e70), (3, -1e300, 1e300)]
    right = [(1, 1e300, 1.0), (2, 1.0, 2e70), (3, -1e300, 1e300)]
    create(source, "t", cols, [{"id": i, "x": x, "y": y} for i, x, y in left])
    create(target, "t", cols, [{"id": i, "x": x, "y": y} for i, x, y in right])
    got = found(run(source, target, "t", tolerance={"x": 1e-9, "y": 0.005}))
    assert got == {changed(2, "y")}, got


@pytest.mark.parametrize("engines", ["postgresql-mariadb", "sqlite-sqlite"])
def test_report_values_are_encoded_as_documented(
    request: pytest.FixtureRequest, tmp_path: Path, engines: str
) -> None:
    source, target = pair(request, tmp_path, engines)
    seed_orders(source, target)
    report = run(source, target, tolerance={"score": 1e-9})
    json.dumps(report.to_json())  # plain JSON, nothing needs a default encoder
    compared = {"name", "note", "amount", "score", "flag", "data", "day", "at"}

    gone = diff_for(report, "missing", [5])
    assert set(gone["source"]) == compared
    assert gone["source"]["name"] == "name-5" and gone["source"]["note"] is None
    added = diff_for(report, "extra", [2_000_000_000])
    assert set(added["target"]) == compared

    data = diff_for(report, "changed", [14])
    assert (data["source"]["data"], data["target"]["data"]) == ("0001", "0002")
    zero = diff_for(report, "changed", [15])
    assert (zero["source"]["data"], zero["target"]["data"]) == ("6162", "616200")
    amount = diff_for(report, "changed", [12])
    assert isinstance(amount["source"]["amount"], str) and isinstance(
        amount["target"]["amount"], str
    )
    assert Decimal(amount["source"]["amount"]) == Decimal("2.50")
    assert Decimal(amount["target"]["amount"]) == Decimal("2.51")
    flag = diff_for(report, "changed", [13])
    assert flag["source"]["flag"] is True and flag["target"]["flag"] is False
    score = diff_for(report, "changed", [11])
    assert (score["source"]["score"], score["target"]["score"]) == (1.0, 1.5)
    day = diff_for(report, "changed", [22])
    assert (day["source"]["day"], day["target"]["day"]) == ("2021-03-04", "2021-03-05")
    at = diff_for(report, "changed", [23])
    assert datetime.fromisoformat(at["source"]["at"]) == datetime(2024, 5, 6, 7, 8, 9, 1)
    assert datetime.fromisoformat(at["target"]["at"]) == datetime(2024, 5, 6, 7, 8, 9, 2)
    empty = diff_for(report, "changed", [8])
    assert (empty["source"]["note"], empty["target"]["note"]) == (None, "")
    composed = diff_for(report, "changed", [17])
    assert composed["source"]["name"] == "caf\u00e9"
    assert composed["target"]["name"] == "cafe\u0301"  # as stored: no normalization
    several = diff_for(report, "changed", [24])
    assert sorted(several["columns"]) == ["amount", "flag", "name"]
    assert several["tenant"] is None


# Timestamps with a zone --------------------------------------------------------------------

PLUS2 = timezone(timedelta(hours=2))
MINUS5 = timezone(timedelta(hours=-5))
INSTANTS: list[tuple[int, datetime | None, datetime | None, bool]] = [
    (1, datetime(2024, 6, 1, 12, tzinfo=PLUS2), datetime(2024, 6, 1, 10, tzinfo=UTC), True),
    (2, datetime(2024, 6, 1, 12, tzinfo=PLUS2), datetime(2024, 6, 1, 12, tzinfo=UTC), False),
    (
        3,
        datetime(2024, 12, 31, 23, 30, tzinfo=MINUS5),
        datetime(2025, 1, 1, 4, 30, tzinfo=UTC),
        True,
    ),
    (
        4,
        datetime(2024, 6, 1, 10, 0, 0, 1, tzinfo=UTC),
        datetime(2024, 6, 1, 10, 0, 0, 2, tzinfo=UTC),
        False,
    ),
    (5, None, None, True),
    (6, datetime(2024, 3, 31, 3, 30, tzinfo=PLUS2), datetime(2024, 3, 31, 1, 30, tzinfo=UTC), True),
    (7, datetime(2024, 1, 1, tzinfo=UTC), None, False),
]


def write_instants(url: str, rows: list[tuple[int, datetime | None]]) -> None:
    """A table ``events(id, at)`` whose ``at`` is each engine's timestamp with a zone, written in
    the zone each value carries: PostgreSQL timestamptz; MariaDB TIMESTAMP written in a session
    of that zone; SQLite text with the offset."""
    kind = dialect(url)
    if kind == "postgresql":
        at: Any = postgresql.TIMESTAMP(timezone=True)
    elif kind == "mysql":
        at = mysql.TIMESTAMP(fsp=6)
    else:
        at = sa.TIMESTAMP()
    table = create(url, "events", [Col("id", sa.Integer(), key=True), Col("at", at)])
    with connect(url) as conn:
        for key, value in rows:
            if kind == "postgresql" or value is None:
                conn.execute(table.insert(), {"id": key, "at": value})
            elif kind == "mysql":
                offset = value.strftime("%z")
                conn.exec_driver_sql(f"SET time_zone = '{offset[:3]}:{offset[3:]}'")
                conn.execute(table.insert(), {"id": key, "at": value.replace(tzinfo=None)})
                conn.exec_driver_sql("SET time_zone = '+00:00'")
            else:
                conn.exec_driver_sql(
                    "INSERT INTO events (id, at) VALUES (?, ?)", (key, value.isoformat(sep=" "))
                )


@pytest.mark.parametrize(
    "engines",
    [
        "postgresql-postgresql",
        "mariadb-mariadb",
        "sqlite-sqlite",
        "postgresql-mariadb",
        "sqlite-postgresql",
    ],
)
def test_timestamps_with_a_zone_compare_as_instants(
    request: pytest.FixtureRequest, tmp_path: Path, engines: str
) -> None:
    source, target = pair(request, tmp_path, engines)
    write_instants(source, [(key, left) for key, left, _, _ in INSTANTS])
    write_instants(target, [(key, right) for key, _, right, _ in INSTANTS])
    if dialect(source) == "postgresql":  # the audit's sessions are in different zones too
        source = pg_with_timezone(source, "Asia/Tokyo")
    if dialect(target) == "postgresql":
        target = pg_with_timezone(target, "America/New_York")
    expected = {changed(key, "at") for key, _, _, same in INSTANTS if not same}
    if engines == "sqlite-sqlite":
        # Neither side declares a zone: the stored text compares as written, offset included,
        # so the same instant written with another offset is a change.
        expected |= {changed(key, "at") for key, left, right, _ in INSTANTS if left and right}
    got = found(run(source, target, "events"))
    assert got == expected, show(got, expected)


# Composite keys and tenants -----------------------------------------------------------------

TENANTS = ["acme", "globex", "initech", "ünïcode"]


def tenant_rows() -> list[dict[str, Any]]:
    return [
        {"tenant": t, "id": i, "value": f"{t}/{i}", "n": i * 10}
        for t in TENANTS
        for i in range(1, 61)
    ]


@pytest.mark.parametrize("engines", [*SAME, "postgresql-mariadb"])
def test_composite_keys_and_counts_per_tenant(
    request: pytest.FixtureRequest, tmp_path: Path, engines: str
) -> None:
    source, target = pair(request, tmp_path, engines)
    cols = [
        Col("tenant", TEXT, key=True),
        Col("id", sa.Integer(), key=True),
        Col("value", TEXT),
        Col("n", sa.Integer()),
    ]
    create(source, "accounts", cols, tenant_rows())
    table = create(target, "accounts", cols, tenant_rows())
    with connect(target) as conn:
        conn.execute(table.delete().where(table.c.tenant == "acme", table.c.id == 3))
        conn.execute(
            table.update().where(table.c.tenant == "acme", table.c.id == 4).values(value="x")
        )
        conn.execute(table.update().where(table.c.tenant == "acme", table.c.id == 60).values(n=0))
        conn.execute(table.insert(), {"tenant": "globex", "id": 99, "value": "new", "n": 1})
        conn.execute(table.insert(), {"tenant": "zeta", "id": 1, "value": "new", "n": 1})
        conn.execute(
            table.update()
            .where(table.c.tenant == "ünïcode", table.c.id == 1)
            .values(value="other", n=-1)
        )
    report = run(source, target, "accounts", tenant_column="tenant", chunk_rows=100)
    expected = {
        missing("acme", 3),
        changed(("acme", 4), "value"),
        changed(("acme", 60), "n"),
        extra("globex", 99),
        extra("zeta", 1),
        changed(("ünïcode", 1), "n", "value"),
    }
    got = found(report)
    assert got == expected, show(got, expected)
    data = report.to_json()
    assert data["key"] == ["tenant", "id"]
    assert data["tenant_column"] == "tenant"
    for entry in data["diffs"]:
        assert entry["tenant"] == entry["key"][0]
    drifting = {t: c for t, c in data["tenants"].items() if any(c.values())}
    zero = {"missing": 0, "extra": 0, "changed": 0, "pending": 0}
    assert drifting == {
        "acme": {**zero, "missing": 1, "changed": 2},
        "globex": {**zero, "extra": 1},
        "zeta": {**zero, "extra": 1},
        "ünïcode": {**zero, "changed": 1},
    }


# Text, UUID and date keys in engines that order them differently ----------------------------

PREFIXES = [
    "a",
    "B",
    "c",
    "Z",
    "_",
    "é",
    "Ä",
    "z",
    "0",
    "x-",
    "x y",
    "中",
    "Ω",
    "ǅ",
    "ſ",
    "🎉",
    "É",
    "~",
]


def text_keys() -> list[str]:
    return [f"{PREFIXES[n % len(PREFIXES)]}{n:03d}" for n in range(600)]


@pytest.mark.parametrize(
    "engines",
    ["postgresql-postgresql", "postgresql-mariadb", "mariadb-sqlite", "sqlite-postgresql"],
)
def test_text_keys_whose_order_differs_between_collations(
    request: pytest.FixtureRequest, tmp_path: Path, engines: str
) -> None:
    source, target = pair(request, tmp_path, engines)
    collations = {
        "postgresql-postgresql": ("und-x-icu", "C"),
        "sqlite-postgresql": (None, "en-US-x-icu"),
    }
    left, right = collations.get(engines, (None, None))

    def cols(collation: str | None) -> list[Col]:
        return [Col("code", sa.String(200, collation=collation), key=True), Col("v", TEXT)]

    keys = text_keys()
    rows = {k: {"code": k, "v": f"value of {k}"} for k in [*keys, "q500"]}
    src, dst = dict(rows), dict(rows)
    expected = set()
    for k in (keys[3], keys[300], keys[599]):
        del dst[k]
        expected.add(missing(k))
    for k in ("A-first", "zz-extra", "~~~", "\u00e9t\u00e9", "Ω-extra"):
        dst[k] = {"code": k, "v": "extra"}
        expected.add(extra(k))
    for k in (keys[0], keys[177], keys[598]):
        dst[k] = {"code": k, "v": "changed"}
        expected.add(changed(k, "v"))
    src["pad "] = {"code": "pad ", "v": "padded"}  # equal to "pad" where trailing spaces pad
    dst["pad"] = {"code": "pad", "v": "padded"}
    expected |= {missing("pad "), extra("pad")}
    # A key differing from another only in case: a case-insensitive MariaDB cannot hold both, so
    # it goes to whichever side is not MariaDB.
    if dialect(source) != "mysql":
        src["Q500"] = {"code": "Q500", "v": "twin"}
        expected.add(missing("Q500"))
    else:
        dst["Q500"] = {"code": "Q500", "v": "twin"}
        expected.add(extra("Q500"))
    create(source, "codes", cols(left), src.values())
    create(target, "codes", cols(right), dst.values())
    got = found(run(source, target, "codes", chunk_rows=100))
    assert got == expected, show(got, expected)


def uuid_keys() -> list[str]:
    chance = random.Random(6)
    v4 = [str(uuid.UUID(int=chance.getrandbits(128), version=4)) for _ in range(300)]
    v1 = [
        str(
            uuid.UUID(
                fields=(chance.getrandbits(32), i, 0x1000 | i, 0x80, 0, chance.getrandbits(48))
            )
        )
        for i in range(200)
    ]
    return v4 + v1


@pytest.mark.parametrize(
    "engines", ["postgresql-postgresql", "postgresql-mariadb", "mariadb-mariadb"]
)
def test_uuid_keys(request: pytest.FixtureRequest, tmp_path: Path, engines: str) -> None:
    source, target = pair(request, tmp_path, engines)

    def cols(url: str) -> list[Col]:
        kind = postgresql.UUID(as_uuid=False) if dialect(url) == "postgresql" else MariaUUID()
        return [Col("id", kind, key=True), Col("v", TEXT)]

    keys = uuid_keys()
    src = {k: {"id": k, "v": k[:8]} for k in keys}
    dst = dict(src)
    expected = set()
    for k in (keys[0], keys[299], keys[499]):
        del dst[k]
        expected.add(missing(k))
    for k in ("00000000-0000-0000-0000-000000000000", "ffffffff-ffff-ffff-ffff-ffffffffffff"):
        dst[k] = {"id": k, "v": "extra"}
        expected.add(extra(k))
    for k in (keys[1], keys[300], keys[498]):
        dst[k] = {"id": k, "v": "changed"}
        expected.add(changed(k, "v"))
    create(source, "things", cols(source), src.values())
    create(target, "things", cols(target), dst.values())
    report = run(source, target, "things", chunk_rows=100)
    got = found(report)
    assert got == expected, show(got, expected)


@pytest.mark.parametrize(
    "engines", ["postgresql-postgresql", "sqlite-postgresql", "postgresql-mariadb"]
)
def test_date_and_numeric_keys_are_encoded_as_text(
    request: pytest.FixtureRequest, tmp_path: Path, engines: str
) -> None:
    source, target = pair(request, tmp_path, engines)
    cols = [
        Col("day", sa.Date(), key=True),
        Col("code", sa.Numeric(6, 2), key=True),
        Col("v", sa.Integer()),
    ]
    rows = [
        {"day": date(2024, 1, 1) + timedelta(days=d), "code": Decimal(c) / 4, "v": d * c}
        for d in range(100)
        for c in range(1, 6)
    ]
    create(source, "daily", cols, rows)
    table = create(target, "daily", cols, rows)
    with connect(target) as conn:
        conn.execute(
            table.delete().where(table.c.day == date(2024, 1, 1), table.c.code == Decimal("0.25"))
        )
        conn.execute(
            table.update()
            .where(table.c.day == date(2024, 1, 10), table.c.code == Decimal("1.25"))
            .values(v=-1)
        )
    got = found(run(source, target, "daily", chunk_rows=100))
    # Keys as they appear in the report: a date as ISO 8601, a numeric as its decimal string.
    normalized = {
        (kind, (key[0], str(Decimal(key[1]).normalize())), cols_) for kind, key, cols_ in got
    }
    expected = {
        ("missing", ("2024-01-01", "0.25"), ()),
        ("changed", ("2024-01-10", "1.25"), ("v",)),
    }
    assert normalized == expected, show(normalized, expected)
    for _, key, _ in got:
        assert isinstance(key[0], str) and isinstance(key[1], str)


# Duplicate keys and missing keys ------------------------------------------------------------


@pytest.mark.parametrize("side", ["source", "target"])
@pytest.mark.parametrize("engine", ["sqlite", "postgresql", "mariadb"])
def test_duplicate_keys_are_refused_naming_the_table(
    request: pytest.FixtureRequest, tmp_path: Path, engine: str, side: str
) -> None:
    source = make_url(request, tmp_path, engine, "source")
    target = make_url(request, tmp_path, engine, "target")
    cols = [Col("id", sa.Integer()), Col("v", TEXT)]
    rows = [{"id": i, "v": str(i)} for i in range(1, 251)]
    create(source, "ledger", cols, rows + ([{"id": 42, "v": "again"}] if side == "source" else []))
    create(target, "ledger", cols, rows + ([{"id": 42, "v": "again"}] if side == "target" else []))
    with pytest.raises(InvalidInput) as raised:
        run(source, target, "ledger", key=("id",), chunk_rows=100)
    message = str(raised.value)
    assert "ledger" in message and "42" in message, message
    assert "\n" not in message


@pytest.mark.parametrize("engine", ["sqlite", "postgresql", "mariadb"])
def test_a_table_without_a_primary_key_needs_a_key(
    request: pytest.FixtureRequest, tmp_path: Path, engine: str
) -> None:
    source = make_url(request, tmp_path, engine, "source")
    target = make_url(request, tmp_path, engine, "target")
    cols = [Col("id", sa.Integer()), Col("v", TEXT)]
    rows = [{"id": i, "v": str(i)} for i in range(1, 11)]
    create(source, "ledger", cols, rows)
    create(target, "ledger", cols, [*rows[:-1], {"id": 10, "v": "ten"}])
    with pytest.raises(InvalidInput) as raised:
        run(source, target, "ledger")
    message = str(raised.value)
    assert "ledger" in message and "key" in message.lower(), message
    assert found(run(source, target, "ledger", key=("id",))) == {changed(10, "v")}


@pytest.mark.parametrize("engine", ["sqlite", "postgresql", "mariadb"])
def test_a_null_key_is_never_reported_clean(
    request: pytest.FixtureRequest, tmp_path: Path, engine: str
) -> None:
    """A key column without a constraint can hold NULL; such a row cannot be matched by key, so
    the audit refuses it, naming the table, rather than ever calling the tables equal."""
    source = make_url(request, tmp_path, engine, "source")
    target = make_url(request, tmp_path, engine, "target")
    cols = [Col("id", sa.Integer()), Col("v", TEXT)]
    create(source, "ledger", cols, [{"id": 1, "v": "a"}, {"id": None, "v": "x"}])
    create(target, "ledger", cols, [{"id": 1, "v": "a"}, {"id": None, "v": "y"}])
    with pytest.raises(InvalidInput, match=r"ledger.*NULL"):
        run(source, target, "ledger", key=("id",))


# Restricting and renaming -------------------------------------------------------------------


@pytest.mark.parametrize("engines", ["postgresql-mariadb", "sqlite-sqlite"])
def test_where_restricts_both_sides(
    request: pytest.FixtureRequest, tmp_path: Path, engines: str
) -> None:
    source, target = pair(request, tmp_path, engines)
    cols = [
        Col("tenant", TEXT),
        Col("id", sa.Integer(), key=True),
        Col("v", TEXT),
    ]
    rows = [{"tenant": ("acme", "globex")[i % 2], "id": i, "v": str(i)} for i in range(1, 301)]
    create(source, "items", cols, rows)
    table = create(target, "items", cols, rows)
    # acme has the even ids. Inside the condition: 20 missing, 40 changed, 302 extra, and 11,
    # which is globex in the source but acme in the target: on both sides, so changed.
    # Outside: 2 and 3 changed, 4 missing, 303 extra.
    delete(target, table, "id", [20, 4])
    update(target, table, {40: {"v": "x"}, 2: {"v": "x"}, 3: {"v": "x"}, 11: {"tenant": "acme"}})
    insert(
        target,
        table,
        [{"tenant": "acme", "id": 302, "v": "new"}, {"tenant": "globex", "id": 303, "v": "new"}],
    )
    report = run(
        source,
        target,
        "items",
        where="tenant = 'acme' AND id >= 10",
        tenant_column="tenant",
        chunk_rows=100,
    )
    expected = {missing(20), changed(40, "v"), extra(302), changed(11, "tenant")}
    got = found(report)
    assert got == expected, show(got, expected)
    data = report.to_json()
    assert data["where"] == "tenant = 'acme' AND id >= 10"
    assert data["source"]["rows"] == len(
        [r for r in rows if r["tenant"] == "acme" and r["id"] >= 10]
    )


def test_a_row_the_condition_keeps_on_one_side_only_is_changed(tmp_path: Path) -> None:
    source, target = f"sqlite:///{tmp_path / 's.db'}", f"sqlite:///{tmp_path / 't.db'}"
    cols = [Col("id", sa.Integer(), key=True), Col("tenant", TEXT)]
    create(source, "items", cols, [{"id": i, "tenant": "acme"} for i in range(1, 6)])
    create(
        target,
        "items",
        cols,
        [{"id": i, "tenant": "acme" if i != 3 else "globex"} for i in range(1, 6)],
    )
    # Row 3 fails the condition on the target only. It is still there, so it is changed (and
    # reconciling it is an update), not missing (which an insert would fail to fix).
    assert found(run(source, target, "items", where="tenant = 'acme'")) == {changed(3, "tenant")}
    assert found(run(source, target, "items")) == {changed(3, "tenant")}


def mapped_tables(source: str, target: str) -> tuple[sa.Table, sa.Table]:
    source_cols = [
        Col("id", sa.Integer(), key=True),
        Col("name", TEXT),
        Col("amount", sa.Numeric(12, 2)),
        Col("region", TEXT),
    ]
    target_cols = [
        Col("order_id", sa.Integer(), key=True),
        Col("full_name", TEXT),
        Col("amount_v2", sa.Numeric(12, 2)),
        Col("region", TEXT),
        Col("added", TEXT),  # only on the target: not compared
    ]
    rows = [
        {"id": i, "name": f"n{i}", "amount": Decimal(i) / 4, "region": ("eu", "us")[i % 2]}
        for i in range(1, 41)
    ]
    left = create(source, "orders", source_cols, rows)
    right = create(
        target,
        "orders_v2",
        target_cols,
        [
            {
                "order_id": r["id"],
                "full_name": r["name"],
                "amount_v2": r["amount"],
                "region": r["region"],
                "added": str(r["id"]),
            }
            for r in rows
            if r["id"] != 7
        ]
        + [{"order_id": 41, "full_name": "n41", "amount_v2": 1, "region": "eu", "added": "x"}],
    )
    update(
        target,
        right,
        {9: {"full_name": "N9"}, 10: {"amount_v2": Decimal("99")}, 12: {"added": "ignored"}},
        key="order_id",
    )
    return left, right


MAP = {"id": "order_id", "name": "full_name", "amount": "amount_v2"}


@pytest.mark.parametrize("engines", ["sqlite-postgresql", "postgresql-mariadb"])
def test_column_map_and_a_target_table_of_another_name(
    request: pytest.FixtureRequest, tmp_path: Path, engines: str
) -> None:
    source, target = pair(request, tmp_path, engines)
    mapped_tables(source, target)
    report = run(source, target, "orders", target_table="orders_v2", column_map=MAP, chunk_rows=100)
    expected = {missing(7), extra(41), changed(9, "name"), changed(10, "amount")}
    got = found(report)
    assert got == expected, show(got, expected)
    data = report.to_json()
    assert data["target"]["table"] == "orders_v2" and data["source"]["table"] == "orders"
    assert [(k["source"], k["target"]) for k in data["key_columns"]] == [("id", "order_id")]
    assert {(c["source"], c["target"]) for c in data["columns"]} == {
        ("name", "full_name"),
        ("amount", "amount_v2"),
        ("region", "region"),
    }
    renamed = diff_for(report, "changed", [9])
    assert renamed["source"]["name"] == "n9" and renamed["target"]["name"] == "N9"
    assert "full_name" not in renamed["target"]
    assert set(diff_for(report, "extra", [41])["target"]) == {"name", "amount", "region"}


def test_where_names_source_columns_even_when_they_are_renamed(tmp_path: Path) -> None:
    source, target = f"sqlite:///{tmp_path / 's.db'}", f"sqlite:///{tmp_path / 't.db'}"
    _, right = mapped_tables(source, target)
    update(target, right, {8: {"amount_v2": Decimal("5")}}, key="order_id")
    # `name` is `full_name` on the target, `id` is `order_id`: row 8 is left out on both sides.
    report = run(
        source,
        target,
        "orders",
        target_table="orders_v2",
        column_map=MAP,
        where="name <> 'n8' AND id > 7",
    )
    assert found(report) == {extra(41), changed(9, "name"), changed(10, "amount")}


def test_columns_restricts_what_is_compared(tmp_path: Path) -> None:
    source, target = f"sqlite:///{tmp_path / 's.db'}", f"sqlite:///{tmp_path / 't.db'}"
    mapped_tables(source, target)
    report = run(
        source, target, "orders", target_table="orders_v2", column_map=MAP, columns=("name",)
    )
    assert found(report) == {missing(7), extra(41), changed(9, "name")}
    assert [c["source"] for c in report.to_json()["columns"]] == ["name"]


def test_schema_qualified_table_and_a_plain_sqlite_path(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    scoped = make_url(request, tmp_path, "postgresql", "source")
    schema = pg_schema_of(scoped)
    plain = sa.make_url(scoped).set(query={}).render_as_string(hide_password=False)
    path = tmp_path / "target.db"
    cols = [Col("id", sa.Integer(), key=True), Col("v", TEXT)]
    create(scoped, "things", cols, [{"id": i, "v": str(i)} for i in range(1, 11)])
    create(f"sqlite:///{path}", "things", cols, [{"id": i, "v": str(i)} for i in range(2, 12)])
    report = run(plain, str(path), f"{schema}.things", target_table="things")
    assert found(report) == {missing(1), extra(11)}


# Big tables: many chunks, differences at their edges ---------------------------------------

BIG = 30_000


@pytest.mark.parametrize("engines", ["postgresql-mariadb", "sqlite-sqlite"])
def test_many_chunks_with_differences_at_their_edges(
    request: pytest.FixtureRequest, tmp_path: Path, engines: str
) -> None:
    source, target = pair(request, tmp_path, engines)
    cols = [Col("id", sa.Integer(), key=True), Col("name", TEXT), Col("amount", sa.Numeric(12, 2))]

    def row(i: int) -> dict[str, Any]:
        return {"id": i, "name": f"row {i}", "amount": Decimal(i % 1000) / 100}

    src = {i: row(i) for i in range(1, BIG + 1)}
    dst = {i: row(i) for i in range(1, BIG + 1)}
    expected = set()
    for i in (1, BIG, 999, 1000, 1001, 2000, 2001, 15_000, 29_999):  # first, last, chunk edges
        dst[i] = {**dst[i], "name": "edited"}
        expected.add(changed(i, "name"))
    for i in (3000, 3001, *range(27_000, 27_050)):  # a pair and a run of fifty
        del dst[i]
        expected.add(missing(i))
    del src[20_000]  # a hole in the source
    expected.add(extra(20_000))
    for i in (0, -1, BIG + 1, 10**9):  # below the source's minimum and above its maximum
        dst[i] = row(i)
        expected.add(extra(i))
    create(source, "ledger", cols, src.values())
    create(target, "ledger", cols, dst.values())
    calls: list[tuple[int, int]] = []
    report = audit(
        AuditSpec(
            source=source,
            target=target,
            table="ledger",
            chunk_rows=1000,
            workers=3,
            max_diffs=10_000,
        ),
        progress=lambda done, total: calls.append((done, total)),
    )
    got = found(report)
    assert got == expected, show(got, expected)
    data = report.to_json()
    assert data["chunks"]["total"] >= BIG // 1000
    assert 0 < data["chunks"]["differing"] < data["chunks"]["total"]
    assert (data["source"]["rows"], data["target"]["rows"]) == (len(src), len(dst))
    assert calls, "progress is reported"
    assert all(a[0] <= b[0] for a, b in itertools.pairwise(calls)), calls[:20]
    assert calls[-1][0] == calls[-1][1], calls[-1]


# The report --------------------------------------------------------------------------------


def test_report_json_shape(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    source = make_url(request, tmp_path, "postgresql", "source")
    target = make_url(request, tmp_path, "mariadb", "target")
    secret = sa.make_url(source).set(password="sekret-pw").render_as_string(hide_password=False)
    cols = [
        Col("id", sa.Integer(), key=True),
        Col("shard", sa.Integer()),
        Col("amount", sa.Numeric(12, 2)),
    ]
    rows = [{"id": i, "shard": i % 3, "amount": Decimal(i)} for i in range(1, 301)]
    create(source, "orders", cols, rows)
    table = create(target, "orders", cols, rows)
    update(target, table, {4: {"amount": Decimal("4.01")}})
    delete(target, table, "id", [5])
    report = run(secret, target, tenant_column="shard", tolerance={"amount": 0.005}, chunk_rows=100)
    data = report.to_json()
    text = json.dumps(data)
    assert "sekret-pw" not in text
    assert data["format"] == "cutover-audit/1"
    assert data["source"]["dialect"] == "postgresql"
    assert data["target"]["dialect"] in {"mysql", "mariadb"}
    assert (data["source"]["rows"], data["target"]["rows"]) == (300, 299)
    assert data["key"] == ["id"]
    assert data["key_columns"] == [{"source": "id", "target": "id", "kind": "integer"}]
    columns = {c["source"]: c for c in data["columns"]}
    assert set(columns) == {"shard", "amount"}
    assert columns["amount"]["kind"] == "numeric" and columns["amount"]["tolerance"] == 0.005
    assert columns["shard"]["kind"] == "integer"
    assert data["where"] is None and data["tenant_column"] == "shard"
    assert data["counts"] == {"missing": 1, "extra": 0, "changed": 1, "pending": 0, "drift": 2}
    assert {t for t, c in data["tenants"].items() if any(c.values())} == {"1", "2"}
    assert {(d["kind"], d["tenant"]) for d in data["diffs"]} == {("changed", "1"), ("missing", "2")}
    assert data["truncated"] is False and data["max_diffs"] == 1000
    started = datetime.fromisoformat(data["started_at"].replace("Z", "+00:00"))
    finished = datetime.fromisoformat(data["finished_at"].replace("Z", "+00:00"))
    assert started.tzinfo is not None and started <= finished
    assert data["duration_s"] >= 0 and data["rows_per_second"] >= 0
    assert data["chunks"]["total"] >= 3 and data["chunks"]["differing"] >= 1
    assert data["clean"] is False
    assert report.counts["drift"] == 2
    kinds = sorted((d.kind, d.key, d.tenant, d.columns) for d in report.diffs)
    assert kinds == [("changed", (4,), "1", ("amount",)), ("missing", (5,), "2", ())]


def test_a_clean_audit_and_empty_tables(tmp_path: Path) -> None:
    source, target = f"sqlite:///{tmp_path / 's.db'}", f"sqlite:///{tmp_path / 't.db'}"
    cols = [Col("id", sa.Integer(), key=True), Col("v", TEXT)]
    create(source, "empty", cols)
    create(target, "empty", cols)
    report = run(source, target, "empty")
    assert report.clean and found(report) == set() and report.to_json()["diffs"] == []
    assert report.counts == {"missing": 0, "extra": 0, "changed": 0, "pending": 0, "drift": 0}
    create(target, "empty", cols, [{"id": i, "v": "x"} for i in (1, 2, 3)])
    assert found(run(source, target, "empty", chunk_rows=100)) == {extra(1), extra(2), extra(3)}
    assert found(run(target, source, "empty", chunk_rows=100)) == {
        missing(1),
        missing(2),
        missing(3),
    }
    create(source, "same", cols, [{"id": i, "v": "é" * i} for i in range(1, 251)])
    create(target, "same", cols, [{"id": i, "v": "é" * i} for i in range(1, 251)])
    assert run(source, target, "same", chunk_rows=100).clean


def test_max_diffs_truncates_the_list_not_the_counts(tmp_path: Path) -> None:
    source, target = f"sqlite:///{tmp_path / 's.db'}", f"sqlite:///{tmp_path / 't.db'}"
    cols = [Col("id", sa.Integer(), key=True), Col("v", sa.Integer())]
    create(source, "t", cols, [{"id": i, "v": i} for i in range(1, 201)])
    create(target, "t", cols, [{"id": i, "v": -i} for i in range(1, 151)])
    report = run(source, target, "t", max_diffs=10, chunk_rows=100)
    data = report.to_json()
    assert data["counts"]["changed"] == 150 and data["counts"]["missing"] == 50
    assert data["counts"]["drift"] == 200
    assert len(data["diffs"]) == 10 == len(report.diffs)
    assert data["truncated"] is True and data["max_diffs"] == 10
    none = run(source, target, "t", max_diffs=0).to_json()
    assert none["diffs"] == [] and none["truncated"] is True and none["counts"]["drift"] == 200


def test_a_checkpointed_audit_gives_the_same_report_when_run_again(tmp_path: Path) -> None:
    source, target = f"sqlite:///{tmp_path / 's.db'}", f"sqlite:///{tmp_path / 't.db'}"
    seeded, _ = seed_orders(source, target)
    checkpoint = tmp_path / "audit.checkpoint"
    options = {"tolerance": {"score": 1e-9}, "chunk_rows": 100, "checkpoint": str(checkpoint)}
    first = found(run(source, target, **options))
    assert first == seeded.expected, show(first, seeded.expected)
    again = found(run(source, target, **options))
    assert again == seeded.expected, show(again, seeded.expected)


def test_a_difference_that_heals_before_the_recheck_is_not_drift(tmp_path: Path) -> None:
    """Replication lag: a row that differed while its chunk was read but agrees by the time the
    audit reads its differences again is neither drift nor pending."""
    source, target = f"sqlite:///{tmp_path / 's.db'}", f"sqlite:///{tmp_path / 't.db'}"
    cols = [Col("id", sa.Integer(), key=True), Col("v", TEXT)]
    rows = [{"id": i, "v": f"v{i}"} for i in range(1, 301)]
    create(source, "t", cols, rows)
    table = create(target, "t", cols, rows)
    update(target, table, {5: {"v": "late"}, 250: {"v": "wrong"}})
    delete(target, table, "id", [7])

    def heal(done: int, total: int) -> None:
        if done == total:  # every chunk read: the replica catches up on rows 5 and 7
            update(target, table, {5: {"v": "v5"}})
            insert(target, table, [{"id": 7, "v": "v7"}])

    report = audit(AuditSpec(source=source, target=target, table="t", chunk_rows=100), heal)
    assert found(report) == {changed(250, "v")}
    assert report.counts["pending"] == 0


class Interrupted(Exception):
    """Stands for whatever stops an audit half way: a deploy, a lost connection, Ctrl-C."""


def test_an_interrupted_audit_resumes_where_its_checkpoint_says(tmp_path: Path) -> None:
    source, target = f"sqlite:///{tmp_path / 's.db'}", f"sqlite:///{tmp_path / 't.db'}"
    cols = [Col("id", sa.Integer(), key=True), Col("v", TEXT)]
    rows = [{"id": i, "v": f"v{i}"} for i in range(1, 2001)]
    create(source, "t", cols, rows)
    table = create(target, "t", cols, rows)
    update(target, table, {i: {"v": "changed"} for i in (1, 150, 1999)})
    delete(target, table, "id", [1000])
    insert(target, table, [{"id": 2001, "v": "new"}])
    expected = {changed(1, "v"), changed(150, "v"), changed(1999, "v"), missing(1000), extra(2001)}
    spec = AuditSpec(
        source=source,
        target=target,
        table="t",
        chunk_rows=100,
        workers=1,
        checkpoint=str(tmp_path / "audit.checkpoint"),
    )

    def stop_after_five(done: int, total: int) -> None:
        if done >= 5:
            raise Interrupted

    with pytest.raises(Interrupted):
        audit(spec, progress=stop_after_five)
    # The database lives on meanwhile: rows beyond the old maximum would move freshly planned
    # chunks, so the resumed audit keeps the chunks its checkpoint planned.
    insert(source, table, [{"id": i, "v": f"v{i}"} for i in range(2500, 2801)])
    insert(target, table, [{"id": i, "v": f"v{i}"} for i in range(2500, 2800)])
    expected.add(missing(2800))
    calls: list[tuple[int, int]] = []
    report = audit(spec, progress=lambda done, total: calls.append((done, total)))
    got = found(report)
    assert got == expected, show(got, expected)
    assert calls[0][0] >= 5, f"the second run started from scratch: {calls[:3]}"
    assert calls[-1][0] == calls[-1][1]
    assert (report.to_json()["source"]["rows"], report.to_json()["target"]["rows"]) == (2301, 2300)


# Bad input ---------------------------------------------------------------------------------

BAD: list[tuple[dict[str, Any], str]] = [
    ({"table": "nosuch"}, "nosuch"),
    ({"table": "nowhere.orders"}, "nowhere"),
    ({"target_table": "nosuch_either"}, "nosuch_either"),
    ({"columns": ("nope",)}, "nope"),
    ({"key": ("nokey",)}, "nokey"),
    ({"column_map": {"name": "full_name"}}, "full_name"),
    ({"column_map": {"ghost": "name"}}, "ghost"),
    ({"target_table": "narrow"}, "note"),
    ({"tolerance": {"score": -1.0}}, "score"),
    ({"tolerance": {"score": math.nan}}, "score"),
    ({"tolerance": {"ghost": 0.1}}, "ghost"),
    ({"tenant_column": "ghost"}, "ghost"),
    ({"workers": 0}, "workers"),
    ({"chunk_rows": 0}, "chunk"),
    ({"tolerance": {"score": "x"}}, "score"),
    ({"max_diffs": -1}, "diffs"),
    ({"max_rows_per_second": 0}, "second"),
    ({"where": "this is not ) sql"}, "where"),
    ({"where": "ghost = 1"}, "where"),
    ({"table": "unkeyed"}, "key"),
    ({"source": "oracle://scott@db/orders"}, "oracle"),
    ({"target": "/nonexistent/folder/target.db"}, "target.db"),
    ({"target": "postgresql://postgres@127.0.0.1:1/test"}, "target"),
]


@pytest.fixture(scope="module")
def bad_input_databases(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    folder = tmp_path_factory.mktemp("bad-input")
    source, target = f"sqlite:///{folder / 's.db'}", f"sqlite:///{folder / 't.db'}"
    seed_orders(source, target)
    create(target, "narrow", [Col("id", sa.Integer(), key=True), Col("name", TEXT)])
    unkeyed = [Col("id", sa.Integer()), Col("v", TEXT)]
    create(source, "unkeyed", unkeyed)
    create(target, "unkeyed", unkeyed)
    return source, target


@pytest.mark.parametrize(
    ("change", "named"), BAD, ids=[f"{k}={v!r}" for (c, _) in BAD for k, v in c.items()]
)
def test_bad_input_is_one_sentence_naming_the_problem(
    bad_input_databases: tuple[str, str], change: dict[str, Any], named: str
) -> None:
    source, target = bad_input_databases
    spec = {"source": source, "target": target, "table": "orders", **change}
    with pytest.raises(InvalidInput) as raised:
        audit(AuditSpec(**spec))
    message = str(raised.value)
    assert named.lower() in message.lower(), message
    assert "\n" not in message.strip() and "Traceback" not in message, message


def test_a_case_insensitive_collation_does_not_hide_a_changed_case(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """PostgreSQL hashes text by its collation when asked to; a nondeterministic (ICU
    case-insensitive) column must still be compared by its bytes, keys and values alike."""
    source = make_url(request, tmp_path, "postgresql", "source")
    target = make_url(request, tmp_path, "postgresql", "target")
    for url in (source, target):
        schema = pg_schema_of(url)
        with connect(url) as conn:
            conn.exec_driver_sql(
                f"CREATE COLLATION {schema}.loose"
                " (provider = icu, locale = 'und-u-ks-level2', deterministic = false)"
            )
            conn.exec_driver_sql(
                f"CREATE TABLE {schema}.names (id text COLLATE {schema}.loose PRIMARY KEY,"
                f" v text COLLATE {schema}.loose)"
            )
    rows = [{"id": f"k{i}", "v": f"value {i}"} for i in range(300)]
    execute_rows = "INSERT INTO names VALUES (%(id)s, %(v)s)"
    for url, changes in ((source, {}), (target, {"k7": "VALUE 7", "k200": "Value 200"})):
        with connect(url) as conn:
            conn.exec_driver_sql(
                execute_rows, [{**row, "v": changes.get(row["id"], row["v"])} for row in rows]
            )
            if url == target:
                conn.exec_driver_sql("UPDATE names SET id = 'K9' WHERE id = 'k9'")
    report = run(source, target, "names", chunk_rows=100)
    expected = {changed("k7", "v"), changed("k200", "v"), missing("k9"), extra("K9")}
    assert found(report) == expected, show(found(report), expected)


@pytest.mark.parametrize("engines", SAME)
def test_values_swapped_between_rows_are_found(
    request: pytest.FixtureRequest, tmp_path: Path, engines: str
) -> None:
    """Row hashes are summed per chunk; a sum of hashes that combine fields linearly would not
    see a column's values swapped between rows, nor a value moved into a NULL."""
    source, target = pair(request, tmp_path, engines)
    cols = [Col("id", sa.Integer(), key=True), Col("status", TEXT), Col("amount", sa.Integer())]
    left = [(1, "paid", 10), (2, "refunded", 20), (3, "open", 30), (4, None, 40), (5, "x", None)]
    right = [(1, "refunded", 10), (2, "paid", 30), (3, "open", 20), (4, "x", 40), (5, None, None)]
    create(source, "t", cols, [{"id": i, "status": s, "amount": a} for i, s, a in left])
    create(target, "t", cols, [{"id": i, "status": s, "amount": a} for i, s, a in right])
    expected = {
        changed(1, "status"),
        changed(2, "amount", "status"),
        changed(3, "amount"),
        changed(4, "status"),
        changed(5, "status"),
    }
    got = found(run(source, target, "t"))
    assert got == expected, show(got, expected)


def test_mariadb_single_floats_and_long_times_keep_their_values(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    source = make_url(request, tmp_path, "mariadb", "source")
    target = make_url(request, tmp_path, "mariadb", "target")
    cols = [Col("id", sa.Integer(), key=True), Col("f", mysql.FLOAT()), Col("d", mysql.TIME())]
    for url, f, d in ((source, 1.0000001, "25:00:00"), (target, 1.0000002, "01:00:00")):
        create(url, "t", cols)
        execute(url, f"INSERT INTO t VALUES (1, {f}, '{d}'), (2, 0.5, '-01:30:00')")
    got = found(run(source, target, "t"))
    assert got == {changed(1, "d", "f")}, show(got, {changed(1, "d", "f")})


def test_postgresql_zoned_times_mixed_case_names_and_inet_keys(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    source = make_url(request, tmp_path, "postgresql", "source")
    target = make_url(request, tmp_path, "postgresql", "target")
    for url, at in ((source, "10:00+02"), (target, "10:00+05")):
        execute(
            url,
            'CREATE TABLE "Hosts" (address inet PRIMARY KEY, seen timetz, n int NOT NULL)',
            f"INSERT INTO \"Hosts\" VALUES ('10.0.0.1', '{at}', 1), ('10.0.0.2', '09:00Z', 2)",
        )
    execute(target, 'ALTER TABLE "Hosts" ALTER COLUMN n DROP NOT NULL')  # nullable on one side
    got = found(run(source, target, "Hosts", chunk_rows=100))
    assert got == {changed("10.0.0.1", "seen")}, show(got, {changed("10.0.0.1", "seen")})


def test_sqlite_flexible_values_are_not_rounded_into_equality(tmp_path: Path) -> None:
    source, target = f"sqlite:///{tmp_path / 's.db'}", f"sqlite:///{tmp_path / 't.db'}"
    for url, values in (
        (source, "(1, 1, 1, x'00'), (2, 2, 0, x'01')"),
        (target, "(1, 1.5, 2, 0), (2, 2.0, 0, x'01')"),
    ):
        execute(
            url,
            "CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER, b BOOLEAN, data BLOB)",
            f"INSERT INTO t VALUES {values}",
        )
    expected = {changed(1, "b", "data", "n")}
    got = found(run(source, target, "t"))
    assert got == expected, show(got, expected)
