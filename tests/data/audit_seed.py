"""Seeding helpers the audit tests share: tables made with SQLAlchemy Core on SQLite, PostgreSQL
and MariaDB, the same logical rows written to each, and what an audit found as a set."""

from __future__ import annotations

import urllib.parse
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import mysql

Found = tuple[str, tuple[Any, ...], tuple[str, ...]]

# Types that mean the same thing on every engine (MariaDB's plain DATETIME drops microseconds).
DATETIME6 = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
TEXT = sa.String(200)


class MariaUUID(sa.types.UserDefinedType[str]):
    """MariaDB's native UUID column type (10.7+), which SQLAlchemy does not name."""

    cache_ok = True

    def get_col_spec(self, **_: Any) -> str:
        return "UUID"


@dataclass(frozen=True, slots=True)
class Col:
    """One column of a seeded table: name, SQLAlchemy type, part of the primary key or not."""

    name: str
    type: Any
    key: bool = False


@contextmanager
def connect(url: str) -> Iterator[sa.Connection]:
    """A transaction on ``url`` that commits on leaving; the engine is disposed afterwards."""
    engine = sa.create_engine(url)
    try:
        with warnings.catch_warnings():
            # SQLite stores Decimal as REAL; the warning says so for every row written.
            warnings.simplefilter("ignore", sa.exc.SAWarning)
            with engine.begin() as conn:
                yield conn
    finally:
        engine.dispose()


def dialect(url: str) -> str:
    return sa.make_url(url).get_backend_name()


def create(
    url: str, name: str, cols: Sequence[Col], rows: Iterable[Mapping[str, Any]] = ()
) -> sa.Table:
    """Create table ``name`` on ``url`` (dropping one left over) and write ``rows`` into it."""
    table = sa.Table(
        name,
        sa.MetaData(),
        *(sa.Column(c.name, c.type, primary_key=c.key, autoincrement=False) for c in cols),
    )
    with connect(url) as conn:
        table.drop(conn, checkfirst=True)
        table.create(conn)
        batch = [dict(row) for row in rows]
        if batch:
            conn.execute(table.insert(), batch)
    return table


def execute(url: str, *statements: Any) -> None:
    """Run Core statements (or raw SQL strings) on ``url`` in one transaction."""
    with connect(url) as conn:
        for statement in statements:
            if isinstance(statement, str):
                conn.exec_driver_sql(statement)
            else:
                conn.execute(statement)


def insert(url: str, table: sa.Table, rows: Iterable[Mapping[str, Any]]) -> None:
    batch = [dict(row) for row in rows]
    if batch:
        with connect(url) as conn:
            conn.execute(table.insert(), batch)


def delete(url: str, table: sa.Table, column: str, keys: Iterable[Any]) -> None:
    keys = list(keys)
    if keys:
        execute(url, table.delete().where(table.c[column].in_(keys)))


def update(
    url: str, table: sa.Table, changes: Mapping[Any, Mapping[str, Any]], key: str = "id"
) -> None:
    """Apply ``{key value: {column: new value}}`` to ``table``."""
    with connect(url) as conn:
        for value, values in changes.items():
            conn.execute(table.update().where(table.c[key] == value).values(**values))


def truncate(url: str, *tables: sa.Table) -> None:
    execute(url, *(table.delete() for table in tables))


# What an audit found, and what a test expects -------------------------------------------------


def found(report: Any) -> set[Found]:
    """The set of (kind, key, columns) an audit reported, read from its JSON form, after checking
    that the report agrees with itself (counts, kinds, truncation, the objects and the JSON)."""
    data = report.to_json()
    diffs = data["diffs"]
    counts = data["counts"]
    assert data["truncated"] is False, "the test expects every difference to be listed"
    by_kind = {
        kind: sum(1 for d in diffs if d["kind"] == kind) for kind in counts if kind != "drift"
    }
    assert by_kind == {k: v for k, v in counts.items() if k != "drift"}, (by_kind, counts)
    assert counts["drift"] == counts["missing"] + counts["extra"] + counts["changed"], counts
    assert data["clean"] is (counts["drift"] == 0) is report.clean
    assert len(report.diffs) == len(diffs)
    assert [d.kind for d in report.diffs] == [d["kind"] for d in diffs]
    result: set[Found] = set()
    for d in diffs:
        entry = (d["kind"], tuple(d["key"]), tuple(sorted(d["columns"])))
        assert entry not in result, f"reported twice: {entry}"
        result.add(entry)
        if d["kind"] == "missing":
            assert d["columns"] == [] and d["target"] is None and isinstance(d["source"], dict)
        elif d["kind"] == "extra":
            assert d["columns"] == [] and d["source"] is None and isinstance(d["target"], dict)
        elif d["kind"] == "changed":
            assert d["columns"], d
            assert isinstance(d["source"], dict) and isinstance(d["target"], dict)
    return result


def missing(*key: Any) -> Found:
    return ("missing", key, ())


def extra(*key: Any) -> Found:
    return ("extra", key, ())


def changed(key: Any, *columns: str) -> Found:
    return ("changed", key if isinstance(key, tuple) else (key,), tuple(sorted(columns)))


def show(got: set[Found], expected: set[Found]) -> str:
    """The difference between what was reported and what was seeded, for an assertion message."""
    return (
        f"reported but not seeded: {sorted(got - expected, key=repr)}; "
        f"seeded but not reported: {sorted(expected - got, key=repr)}"
    )


def diff_for(report: Any, kind: str, key: Sequence[Any]) -> dict[str, Any]:
    """The JSON entry of the one difference of ``kind`` at ``key``."""
    [entry] = [d for d in report.to_json()["diffs"] if d["kind"] == kind and d["key"] == list(key)]
    return entry


# The standard table: every common type, dense keys with a far gap ----------------------------

GAP = 1_000_000_000
KEYS = [*range(1, 401), GAP, GAP + 1]


def orders_cols(scale: int = 2) -> list[Col]:
    return [
        Col("id", sa.Integer(), key=True),
        Col("name", TEXT),
        Col("note", TEXT),
        Col("amount", sa.Numeric(14, scale)),
        Col("score", sa.Double()),
        Col("flag", sa.Boolean()),
        Col("data", sa.LargeBinary()),
        Col("day", sa.Date()),
        Col("at", DATETIME6),
    ]


def order(i: int) -> dict[str, Any]:
    """The row with key ``i`` as written to both sides before differences are seeded."""
    return {
        "id": i,
        "name": f"name-{i}",
        "note": f"note {i}" if i % 5 else None,
        "amount": Decimal(i % 997) + Decimal(i % 100) / 100,
        "score": i / 7,
        "flag": i % 2 == 0,
        "data": (i % 65536).to_bytes(2, "big") + b"\x00\xff",
        "day": date(2020, 1, 1) + timedelta(days=i % 1000),
        "at": datetime(2024, 1, 1, 12, 0, 0, (i * 7919) % 1_000_000) + timedelta(seconds=i % 86400),
    }


@dataclass(frozen=True, slots=True)
class Seeded:
    """Rows for both sides and what an audit must find between them."""

    source: list[dict[str, Any]]
    target: list[dict[str, Any]]
    expected: set[Found] = field(default_factory=set)


def seeded_orders() -> tuple[Seeded, set[Found]]:
    """The standard table with one seeded difference of every kind; also the differences a run
    without a float tolerance finds on top of the expected set."""
    source = {i: order(i) for i in KEYS}
    target = {i: order(i) for i in KEYS}
    expected: set[Found] = set()

    def differ(i: int, column: str, left: Any, right: Any, *, drift: bool = True) -> None:
        source[i][column] = left
        target[i][column] = right
        if drift:
            expected.add(changed(i, column))

    differ(1, "name", "first", "First")  # first row
    for i in (5, GAP + 1):  # missing, also at the far end of the gap
        del target[i]
        expected.add(missing(i))
    differ(7, "name", "alice", "alicE")
    differ(8, "note", None, "")  # NULL is not ''
    differ(9, "note", "", None)
    differ(10, "score", 0.3, 0.1 + 0.2, drift=False)  # float noise inside the tolerance
    differ(11, "score", 1.0, 1.5)  # outside it
    differ(12, "amount", Decimal("2.50"), Decimal("2.51"))
    differ(13, "flag", True, False)
    differ(14, "data", b"\x00\x01", b"\x00\x02")
    differ(15, "data", b"ab", b"ab\x00")  # a trailing zero byte is a byte
    differ(16, "name", "x", "x ")  # no trimming (MariaDB's PAD SPACE compares these equal)
    differ(17, "name", "caf\u00e9", "cafe\u0301")  # precomposed vs decomposed
    differ(18, "name", "a", "A")  # equal under a case-insensitive collation
    differ(19, "name", "e", "\u00e9")  # equal under an accent-insensitive collation
    differ(20, "name", "日本語 🎉 ß", "日本語 🎉 ß", drift=False)  # equal
    differ(21, "name", "straße", "strasse")
    differ(22, "day", date(2021, 3, 4), date(2021, 3, 5))
    differ(23, "at", datetime(2024, 5, 6, 7, 8, 9, 1), datetime(2024, 5, 6, 7, 8, 9, 2))
    source[24].update(name="several", amount=Decimal("3.00"), flag=True)
    target[24].update(name="Several", amount=Decimal("3.01"), flag=False)
    expected.add(changed(24, "amount", "flag", "name"))
    differ(25, "amount", Decimal("1.0"), Decimal("1.00"), drift=False)  # numeric scale
    differ(26, "note", None, None, drift=False)
    differ(27, "score", 1e-12, 2e-12, drift=False)  # tiny floats: inside the tolerance
    differ(28, "data", b"", None)  # empty bytes are not NULL
    differ(29, "score", None, 0.0)
    differ(30, "amount", None, Decimal("0"))
    for i in (100, 101, 200, 201, 300):  # where chunks of 100 rows start and end
        differ(i, "name", f"edge {i}", f"edge {i}!")
    differ(400, "amount", Decimal("9.99"), Decimal("19.99"))  # last row of the dense run
    differ(GAP, "name", "far", "Far")  # the far side of the gap
    for i in (-5, 0, 450, 2_000_000_000):  # below the source's minimum, in the gap, above its max
        target[i] = order(i)
        expected.add(extra(i))
    noise = {changed(10, "score"), changed(27, "score")}
    return (
        Seeded(
            sorted(source.values(), key=lambda r: r["id"]),
            sorted(target.values(), key=lambda r: r["id"]),
            expected,
        ),
        noise,
    )


# Where the databases live ------------------------------------------------------------------


def sqlite_file(tmp_path: Path, name: str) -> str:
    return f"sqlite:///{tmp_path / name}"


def pg_schema_of(url: str) -> str:
    """The schema a ``fresh_pg`` URL puts first on the search path."""
    options = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)["options"][0]
    return options.split("search_path=", 1)[1].split()[0]


def pg_with_timezone(url: str, zone: str) -> str:
    """``url`` with the session TimeZone set to ``zone`` on every connection."""
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qs(parts.query)
    query["options"] = [f"{query['options'][0]} -cTimeZone={zone}"]
    return parts._replace(query=urllib.parse.urlencode(query, doseq=True)).geturl()


def make_url(request: pytest.FixtureRequest, tmp_path: Path, engine: str, name: str) -> str:
    """A URL to a new empty database of kind ``engine`` (sqlite, postgresql, mariadb)."""
    if engine == "sqlite":
        return sqlite_file(tmp_path, f"{name}.db")
    if engine == "postgresql":
        factory: Callable[[], str] = request.getfixturevalue("fresh_pg")
        return factory()
    if engine == "mariadb":
        factory = request.getfixturevalue("fresh_mariadb")
        return factory()
    raise AssertionError(engine)


def pair(request: pytest.FixtureRequest, tmp_path: Path, engines: str) -> tuple[str, str]:
    """(source URL, target URL) for ``engines`` written as ``"postgresql-mariadb"``."""
    left, right = engines.split("-")
    return make_url(request, tmp_path, left, "source"), make_url(request, tmp_path, right, "target")
