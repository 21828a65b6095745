"""Properties of reconcile: for any rows of every type the audit reads, on PostgreSQL, SQLite and
MariaDB, reconciling (inserts, updates and deletes) leaves the sides equal, and the undo script
puts the written side back bit for bit, whether cutover applied the plan or the database ran
the dry run's SQL itself."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cutover.data import reconcile as rec
from cutover.data.audit import AuditSpec, audit

Row = dict[str, Any]

PROPERTY = settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


# Values: each engine's types, with the values at their ends ----------------------------------

# Text with every kind of character a literal must carry: quotes, backslashes, percent signs,
# line breaks and other controls, line separators, and characters outside the BMP.
awkward = st.sampled_from(["'", '"', "\\", "%", "%s", "\n", "\r", "\t", "\x1b", "\x7f", "\u2028"])
plain = st.characters(exclude_categories=("Cs",), exclude_characters="\x00")


def texts(nul: bool) -> st.SearchStrategy[str]:
    chars = plain | st.just("\x00") if nul else plain
    return st.lists(chars | awkward, max_size=12).map("".join)


floats64 = st.floats()
int64 = st.integers(-(2**63), 2**63 - 1)
offsets = st.integers(-15 * 60 - 59, 15 * 60 + 59).map(lambda m: timezone(timedelta(minutes=m)))
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | texts(nul=False),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(texts(nul=False), inner, max_size=3)
    ),
    max_leaves=6,
)


@st.composite
def json_text(draw: st.DrawFn) -> str:
    """A JSON document as someone may have written it: any spacing, any indentation."""
    value = draw(json_values)
    indent = draw(st.sampled_from([None, 0, 2]))
    separators = draw(st.sampled_from([(",", ":"), (", ", ": "), (" ,", " : ")]))
    return json.dumps(value, indent=indent, separators=separators, ensure_ascii=draw(st.booleans()))


def pg_float(value: float) -> str:
    return {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}.get(repr(value), repr(value))


def pg_decimal(digits: int, exponent: int) -> str:
    return str(Decimal(f"{digits}E{exponent}"))  # every digit: no rounding to a context


@dataclass(frozen=True)
class Engine:
    """One engine: its columns (name, SQL type) and a strategy for each column's values."""

    name: str
    columns: dict[str, str]
    values: dict[str, st.SearchStrategy[Any]]


POSTGRES = Engine(
    "postgresql",
    {
        "i": "bigint",
        "n": "numeric",
        "f": "float8",
        "r": "real",
        "b": "boolean",
        "t": "text",
        "v": "varchar(20)",
        "by": "bytea",
        "ts": "timestamp",
        "tz": "timestamptz",
        "d": "date",
        "tm": "time",
        "ttz": "timetz",
        "span": "interval",
        "u": "uuid",
        "j": "json",
        "jb": "jsonb",
    },
    {
        "i": int64,
        "n": st.builds(pg_decimal, st.integers(-(10**40), 10**40), st.integers(-60, 60))
        | st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400", "-1e-400", "0.000"]),
        "f": floats64.map(pg_float),
        "r": st.floats(width=32).map(pg_float),
        "b": st.booleans(),
        "t": texts(nul=False),
        "v": texts(nul=False).map(lambda t: t[:20]),
        "by": st.binary(max_size=12),
        "ts": st.datetimes().map(lambda d: d.isoformat(" "))
        | st.sampled_from(
            ["infinity", "-infinity", "4713-01-01 00:00:00 BC", "294276-12-31 23:59:59.999999"]
        ),
        "tz": st.builds(
            lambda d, z: d.replace(tzinfo=z).isoformat(" "),
            st.datetimes(min_value=datetime(2, 1, 1), max_value=datetime(9998, 12, 31)),
            offsets,
        )
        | st.sampled_from(["infinity", "-infinity", "10000-01-01 00:00:00+00"]),
        "d": st.dates().map(date.isoformat)
        | st.sampled_from(["infinity", "-infinity", "4713-01-01 BC", "5874897-12-31"]),
        "tm": st.times().map(time.isoformat) | st.just("24:00:00"),
        "ttz": st.builds(lambda t, z: t.replace(tzinfo=z).isoformat(), st.times(), offsets),
        "span": st.builds(
            lambda months, days, micros: f"{months} mons {days} days {micros} microseconds",
            st.integers(-(10**6), 10**6),
            st.integers(-(10**6), 10**6),
            st.integers(-(10**15), 10**15),
        ),
        "u": st.uuids().map(str),
        "j": json_text() | st.just('"\\u0000"'),
        "jb": json_text(),
    },
)

SQLITE = Engine(
    "sqlite",
    {
        "i": "INTEGER",
        "n": "NUMERIC",
        "f": "REAL",
        "b": "BOOLEAN",
        "t": "TEXT",
        "by": "BLOB",
        "ts": "DATETIME",
        "d": "DATE",
        "tm": "TIME",
        "j": "JSON",
        "u": "CHAR(32)",
        "any": "",
    },
    {
        "i": int64,
        "n": int64 | st.floats(allow_nan=False) | st.sampled_from(["1.50", "NaN", "abc", "1e999"]),
        "f": st.floats(allow_nan=False),
        "b": st.sampled_from([0, 1, 2, "t", "yes"]),
        "t": texts(nul=True),
        "by": st.binary(max_size=12),
        "ts": st.datetimes().map(lambda d: d.isoformat(" "))
        | st.builds(lambda d, z: d.replace(tzinfo=z).isoformat(" "), st.datetimes(), offsets)
        | st.sampled_from(["2024-06-01 12:00", "2024-06-01T12:00:00Z", "infinity", "", " "])
        | int64,
        "d": st.dates().map(date.isoformat) | st.sampled_from(["2024-06-01 00:00:00", "x"]),
        "tm": st.times().map(time.isoformat) | st.just("25:00:00"),
        "j": json_text(),
        "u": st.uuids().map(lambda u: u.hex),
        "any": int64 | st.floats(allow_nan=False) | texts(nul=True) | st.binary(),
    },
)

MARIADB = Engine(
    "mariadb",
    {
        "i": "BIGINT",
        "n": "DECIMAL(40, 10)",
        "f": "DOUBLE",
        "fl": "FLOAT",
        "b": "BOOL",
        "t": "TEXT",
        "by": "BLOB",
        "ts": "DATETIME(6)",
        "d": "DATE",
        "tm": "TIME(6)",
        "j": "LONGTEXT",
    },
    {
        "i": int64,
        "n": st.decimals(min_value=-(10**30) + 1, max_value=10**30 - 1, places=10, allow_nan=False),
        "f": st.floats(allow_nan=False, allow_infinity=False),
        "fl": st.floats(width=32, allow_nan=False, allow_infinity=False),
        "b": st.integers(-128, 127),
        "t": texts(nul=True),
        "by": st.binary(max_size=12),
        "ts": st.datetimes(min_value=datetime(1000, 1, 1)),
        "d": st.dates(min_value=date(1000, 1, 1)),
        "tm": st.timedeltas(
            min_value=-timedelta(hours=838, minutes=59, seconds=59, microseconds=999999),
            max_value=timedelta(hours=838, minutes=59, seconds=59, microseconds=999999),
        ),
        "j": json_text(),
    },
)


def row_of(engine: Engine) -> st.SearchStrategy[Row]:
    return st.fixed_dictionaries({name: st.none() | s for name, s in engine.values.items()})


@st.composite
def tables(draw: st.DrawFn, engine: Engine) -> tuple[dict[int, Row], dict[int, Row]]:
    """A source table and a target that lacks some of its rows, changes some of their columns
    and holds rows of its own."""
    rows = row_of(engine)
    source = {key: draw(rows) for key in range(draw(st.integers(1, 6)))}
    target: dict[int, Row] = {}
    for key, row in source.items():
        action = draw(st.sampled_from(["same", "missing", "changed"]))
        if action == "same":
            target[key] = dict(row)
        elif action == "changed":
            changed = draw(st.lists(st.sampled_from(list(engine.columns)), min_size=1, max_size=4))
            target[key] = {**row, **{c: draw(st.none() | engine.values[c]) for c in changed}}
    for key in range(100, 100 + draw(st.integers(0, 3))):
        target[key] = draw(rows)
    return source, target


# Each engine's tables, rows as stored, and scripts run as its own client would --------------


def pg_connect(url: str) -> Any:
    import psycopg

    return psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True)


def mariadb_connect(url: str) -> Any:
    import pymysql
    from pymysql.constants import CLIENT

    parsed = sa.make_url(url)
    return pymysql.connect(
        host=parsed.host,
        port=parsed.port or 3306,
        user=parsed.username,
        password=parsed.password or "",
        database=parsed.database,
        charset="utf8mb4",
        client_flag=CLIENT.MULTI_STATEMENTS,
        autocommit=True,
    )


@contextmanager
def cursor(engine: Engine, url: str) -> Iterator[Any]:
    if engine.name == "sqlite":
        conn = sqlite3.connect(str(sa.make_url(url).database), isolation_level=None)
    elif engine.name == "postgresql":
        conn = pg_connect(url)
    else:
        conn = mariadb_connect(url)
    try:
        yield conn.cursor()
    finally:
        conn.close()


def quoted(engine: Engine, name: str) -> str:
    return f"`{name}`" if engine.name == "mariadb" else f'"{name}"'


def create(engine: Engine, url: str, *tables: str) -> None:
    columns = ", ".join(f"{quoted(engine, c)} {t}" for c, t in engine.columns.items())
    with cursor(engine, url) as cur:
        for table in tables:
            cur.execute(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, {columns})")


def fill(engine: Engine, url: str, table: str, rows: dict[int, Row]) -> None:
    """Empty ``table`` and write ``rows`` through the driver, values as the strategies made
    them (PostgreSQL parses its text forms into the column types)."""
    names = ["id", *engine.columns]
    mark = "?" if engine.name == "sqlite" else "%s"
    insert = (
        f"INSERT INTO {table} ({', '.join(quoted(engine, n) for n in names)})"
        f" VALUES ({', '.join(mark for _ in names)})"
    )
    with cursor(engine, url) as cur:
        cur.execute(f"DELETE FROM {table}")
        for key, row in rows.items():
            cur.execute(insert, [key, *(row[n] for n in engine.columns)])


def exact(engine: Engine, url: str, table: str = "t") -> dict[int, Any]:
    """Every row of ``table`` by key, bit for bit: PostgreSQL's own text of each value, SQLite's
    and MariaDB's values with their types (floats by their bits, decimals with their digits)."""
    with cursor(engine, url) as cur:
        if engine.name == "postgresql":
            cur.execute(f"SELECT id, {table}::text FROM {table}")
            return dict(cur.fetchall())
        cur.execute(f"SELECT * FROM {table}")
        return {
            row[0]: tuple(
                (type(v).__name__, v.hex() if isinstance(v, float) else str(v)) for v in row
            )
            for row in cur.fetchall()
        }


def run_script(engine: Engine, url: str, script: str) -> None:
    """Run an SQL script as the database's own client would, every statement and comment."""
    if engine.name == "sqlite":
        with sqlite3.connect(str(sa.make_url(url).database)) as conn:
            conn.executescript(script)
        return
    with cursor(engine, url) as cur:
        cur.execute(script)
        while engine.name == "mariadb" and cur.nextset():
            pass


def audited(source: str, target: str, target_table: str = "t") -> Any:
    return audit(AuditSpec(source, target, "t", target_table=target_table, recheck_delay=0))


# The property -------------------------------------------------------------------------------


def check_round_trips(
    engine: Engine, source: str, target: str, folder: Path
) -> Callable[[tuple[dict[int, Row], dict[int, Row]]], None]:
    create(engine, source, "t")
    create(engine, target, "t", "t_before")

    def check(tables: tuple[dict[int, Row], dict[int, Row]]) -> None:
        fill(engine, source, "t", tables[0])
        fill(engine, target, "t", tables[1])
        fill(engine, target, "t_before", tables[1])
        before = exact(engine, target)
        planned = rec.plan(audited(source, target).to_json(), allow_delete=True)
        if planned.empty:
            assert audited(source, target).clean
            return
        undo = folder / "undo.sql"
        undo.unlink(missing_ok=True)

        # Applied by cutover: the sides are equal, rows it inserted are the source's exactly.
        rec.apply(planned, batch_size=3, undo_path=undo)
        after, wanted = exact(engine, target), exact(engine, source)
        inserted = [s.key[0] for s in planned.statements if s.kind == "insert"]
        assert {k: after[k] for k in inserted} == {k: wanted[k] for k in inserted}
        assert audited(source, target).clean
        # Undone by the script: bit for bit as before, and an audit against a copy agrees.
        run_script(engine, target, undo.read_text(encoding="utf-8"))
        assert exact(engine, target) == before
        assert audited(target, target, "t_before").clean

        # The dry run's SQL, run by the database itself, does the same job.
        dry_run = "\n".join([*planned.session, *(s.sql for s in planned.statements)])
        run_script(engine, target, dry_run)
        assert exact(engine, target) == after
        assert audited(source, target).clean
        run_script(engine, target, rec.undo_script(planned))
        assert exact(engine, target) == before

    return check


def test_postgresql_round_trips(fresh_pg: Callable[[], str], tmp_path: Path) -> None:
    check = check_round_trips(POSTGRES, fresh_pg(), fresh_pg(), tmp_path)

    @settings(PROPERTY, max_examples=30)
    @given(tables(POSTGRES))
    def prop(tables: tuple[dict[int, Row], dict[int, Row]]) -> None:
        check(tables)

    prop()


def test_sqlite_round_trips(tmp_path: Path) -> None:
    check = check_round_trips(
        SQLITE, f"sqlite:///{tmp_path / 's.db'}", f"sqlite:///{tmp_path / 't.db'}", tmp_path
    )

    @settings(PROPERTY, max_examples=60)
    @given(tables(SQLITE))
    def prop(tables: tuple[dict[int, Row], dict[int, Row]]) -> None:
        check(tables)

    prop()


def test_mariadb_round_trips(fresh_mariadb: Callable[[], str], tmp_path: Path) -> None:
    check = check_round_trips(MARIADB, fresh_mariadb(), fresh_mariadb(), tmp_path)

    @PROPERTY
    @given(tables(MARIADB))
    def prop(tables: tuple[dict[int, Row], dict[int, Row]]) -> None:
        check(tables)

    prop()
