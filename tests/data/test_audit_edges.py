"""The audit on the edges: column names that its own queries could collide with, and values at
the ends of every type, read, compared and reported without a crash."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from cutover.data import reconcile as rec
from cutover.data.audit import AuditSpec, audit

from .audit_seed import Col, changed, create, execute, extra, found, make_url, missing, show

SAME = ["sqlite", "postgresql", "mariadb"]


def run(source: str, target: str, **options: Any) -> Any:
    return audit(AuditSpec(source, target, "t", recheck_delay=0, **options))


# Names --------------------------------------------------------------------------------------

# Every name the audit's and reconcile's queries give (or gave) to what they compute, the names
# SQLAlchemy gives unnamed ones, names that are SQL keywords or functions, mixed case, spaces,
# quotes and what a driver's parameter syntax uses.
NAMES = [
    "b",
    "n",
    "key_0",
    "position",
    "count_1",
    "cutover_in_scope",
    "select",
    "count",
    "sum",
    "row",
    "Mixed Case",
    "UPPER",
    "with space",
    'dq"uote',
    "sq'uote",
    "back`tick",
    "per%cent",
    "colon:x",
    "dot.ted",
    "anon_1",
    "param_1",
]


def named_table(key: str, key_type: Any) -> sa.Table:
    """Table t with ``key`` as its primary key and a text column for each other of NAMES."""
    return sa.Table(
        "t",
        sa.MetaData(),
        sa.Column(key, key_type, primary_key=True, autoincrement=False),
        *(sa.Column(name, sa.String(40)) for name in NAMES if name != key),
    )


@pytest.mark.parametrize("engine", SAME)
@pytest.mark.parametrize(("key", "key_type"), [("n", sa.String(20)), ("b", sa.Integer())])
def test_column_names_never_collide_with_the_queries_own(
    request: pytest.FixtureRequest, tmp_path: Path, engine: str, key: str, key_type: Any
) -> None:
    source = make_url(request, tmp_path, engine, "source")
    target = make_url(request, tmp_path, engine, "target")
    table = named_table(key, key_type)
    others = [name for name in NAMES if name != key]

    def key_of(i: int) -> Any:
        return i if isinstance(key_type, sa.Integer) else f"k{i:05d}"

    rows = [{key: key_of(i), **{n: f"v{j}-{i}" for j, n in enumerate(others)}} for i in range(350)]
    for url in (source, target):
        create(url, "t", [Col(c.name, c.type, key=c.primary_key) for c in table.c], rows)
    k = table.c[key]
    expected = {missing(key_of(5)), extra(key_of(1000))}
    statements: list[Any] = [
        table.delete().where(k == key_of(5)),
        table.insert().values({key: key_of(1000)}),
    ]
    for i, name in enumerate(others):
        row = 20 + 13 * i
        statements.append(table.update().where(k == key_of(row)).values({name: "changed"}))
        expected.add(changed(key_of(row), name))
    execute(target, *statements)

    report = run(source, target, chunk_rows=100)

    got = found(report)
    assert got == expected, show(got, expected)
    planned = rec.plan(report.to_json(), allow_delete=True)
    rec.apply(planned, undo_path=tmp_path / "undo.sql")
    assert run(source, target, chunk_rows=100).clean


# Values at the ends of every PostgreSQL type --------------------------------------------------

PG_TYPES = {
    "ts": "timestamp",
    "tz": "timestamptz",
    "day": "date",
    "n": "numeric",
    "f": "float8",
    "r": "real",
    "by": "bytea",
    "tx": "text",
    "span": "interval",
    "doc": "json",
    "docb": "jsonb",
    "u": "uuid",
    "ok": "boolean",
    "tm": "time",
    "ttz": "timetz",
    "big": "numeric(1000, 500)",
}
# Each row holds edge values everywhere and differs (on the target) in the column named last.
PG_EDGE_ROWS: list[tuple[dict[str, str], str, str]] = [
    (
        {
            "ts": "'infinity'",
            "tz": "'-infinity'",
            "day": "'infinity'",
            "n": "'NaN'",
            "f": "'NaN'",
            "r": "'-0'",
            "by": "'\\x00'",
            "tx": "''",
            "span": "'1 mon'",
            "doc": "'{\"a\": 1.0}'",
            "docb": "'[1.00]'",
            "u": "'00000000-0000-0000-0000-000000000000'",
            "ok": "false",
            "tm": "'24:00:00'",
            "ttz": "'00:00:00+15:59'",
            "big": "'NaN'",
        },
        "tx",
        "NULL",
    ),
    (
        {
            "ts": "'-infinity'",
            "tz": "'infinity'",
            "day": "'-infinity'",
            "n": "'Infinity'",
            "f": "'-0'",
            "r": "'Infinity'",
            "by": "'\\x0000ff00'",
            "tx": "NULL",
            "span": "'-178000000 years'",
            "doc": "'\"\\u0000\"'",
            "docb": "'{}'",
            "u": "'ffffffff-ffff-ffff-ffff-ffffffffffff'",
            "ok": "true",
            "tm": "'00:00:00'",
            "ttz": "'24:00:00-15:59'",
            "big": "-9" + "9" * 499 + ".5",
        },
        "ts",
        "'294276-12-31 23:59:59.999999'",
    ),
    (
        {
            "ts": "'4713-01-01 00:00:00 BC'",
            "tz": "'294276-12-31 23:59:59+00'",
            "day": "'0001-01-01 BC'",
            "n": "'-Infinity'",
            "f": "'Infinity'",
            "r": "'NaN'",
            "by": "''",
            "tx": "'x'",
            "span": "'1 day -1 second'",
            "doc": "'null'",
            "docb": "'null'",
            "u": "NULL",
            "ok": "NULL",
            "tm": "'23:59:59.999999'",
            "ttz": "NULL",
            "big": "1e-500",
        },
        "day",
        "'10000-01-01'",
    ),
    (
        {
            "ts": "'2024-01-01'",
            "tz": "'2024-01-01 00:00+14'",
            "day": "'5874897-12-31'",
            "n": "1" + "0" * 1000,
            "f": "'-Infinity'",
            "r": "1e-45",
            "by": "NULL",
            "tx": "'é'",
            "span": "'0'",
            "doc": "'[]'",
            "docb": "'[]'",
            "u": "'00000000-0000-0000-0000-000000000001'",
            "ok": "false",
            "tm": "NULL",
            "ttz": "'12:00+00'",
            "big": "0",
        },
        "n",
        "'NaN'",
    ),
]


def test_postgresql_edge_values_of_every_type_are_read_compared_and_reconciled(
    fresh_pg: Callable[[], str], tmp_path: Path
) -> None:
    source, target = fresh_pg(), fresh_pg()
    names = list(PG_TYPES)
    create = (
        f"CREATE TABLE t (id int PRIMARY KEY, {', '.join(f'{n} {t}' for n, t in PG_TYPES.items())})"
    )
    expected = set()
    for url in (source, target):
        execute(url, create)
    for i, (values, column, other) in enumerate(PG_EDGE_ROWS, 1):
        row = [values[n] for n in names]
        execute(source, f"INSERT INTO t VALUES ({i}, {', '.join(row)})")
        row[names.index(column)] = other
        execute(target, f"INSERT INTO t VALUES ({i}, {', '.join(row)})")
        expected.add(changed(i, column))
    # The same rows once more, equal on both sides: no difference.
    for i, (values, _, _) in enumerate(PG_EDGE_ROWS, 11):
        for url in (source, target):
            execute(url, f"INSERT INTO t VALUES ({i}, {', '.join(values[n] for n in names)})")

    report = run(source, target)

    got = found(report)
    assert got == expected, show(got, expected)
    planned = rec.plan(report.to_json())
    rec.apply(planned, undo_path=tmp_path / "undo.sql")
    assert run(source, target).clean


def test_a_timestamp_infinity_in_a_differing_row(fresh_pg: Callable[[], str]) -> None:
    source, target = fresh_pg(), fresh_pg()
    for url, note in ((source, "a"), (target, "b")):
        execute(
            url,
            "CREATE TABLE t (id int PRIMARY KEY, at timestamp, note text)",
            f"INSERT INTO t VALUES (1, 'infinity', '{note}'), (2, '-infinity', 'same')",
        )

    report = run(source, target)

    assert found(report) == {changed(1, "note")}
    assert report.to_json()["diffs"][0]["source"]["at"] == "infinity"


def test_numeric_nan_on_both_sides_is_equal(fresh_pg: Callable[[], str], tmp_path: Path) -> None:
    source = fresh_pg()
    target = f"sqlite:///{tmp_path / 't.db'}"
    execute(source, "CREATE TABLE t (id int PRIMARY KEY, n numeric, note text)")
    execute(source, "INSERT INTO t VALUES (1, 'NaN', 'a'), (2, 'NaN', 'same')")
    execute(target, "CREATE TABLE t (id INTEGER PRIMARY KEY, n NUMERIC, note TEXT)")
    execute(target, "INSERT INTO t VALUES (1, 'NaN', 'b'), (2, 'NaN', 'same')")

    assert found(run(source, target)) == {changed(1, "note")}


def test_numeric_nan_and_infinities_are_told_apart_by_the_server_hash(
    fresh_pg: Callable[[], str],
) -> None:
    # PostgreSQL's numeric hash gives NaN, Infinity and -Infinity one hash: a row whose number
    # turned from one into another must still make its chunk's sum differ.
    source, target = fresh_pg(), fresh_pg()
    rows = [(1, "NaN", "Infinity"), (2, "Infinity", "-Infinity"), (3, "-Infinity", "NaN")]
    rows += [(4, "0", "0"), (5, "NaN", "NaN")]
    for url, side in ((source, 1), (target, 2)):
        values = ", ".join(f"({row[0]}, '{row[side]}')" for row in rows)
        execute(
            url, "CREATE TABLE t (id int PRIMARY KEY, n numeric)", f"INSERT INTO t VALUES {values}"
        )

    assert found(run(source, target)) == {changed(1, "n"), changed(2, "n"), changed(3, "n")}


def test_timestamp_keys_at_infinity_across_chunks(
    fresh_pg: Callable[[], str], tmp_path: Path
) -> None:
    source, target = fresh_pg(), fresh_pg()
    rows = (
        "SELECT '2024-01-01'::timestamp + g * interval '1 hour', 'v' FROM generate_series(1, 300) g"
    )
    for url in (source, target):
        execute(
            url,
            "CREATE TABLE t (at timestamp PRIMARY KEY, note text)",
            f"INSERT INTO t {rows}",
            "INSERT INTO t VALUES ('-infinity', 'low'), ('infinity', 'high')",
        )
    execute(target, "UPDATE t SET note = 'HIGH' WHERE at = 'infinity'")
    execute(target, "DELETE FROM t WHERE at = '-infinity'")

    report = run(source, target, chunk_rows=100)

    assert found(report) == {changed("infinity", "note"), missing("-infinity")}
    rec.apply(rec.plan(report.to_json()), undo_path=tmp_path / "undo.sql")
    assert run(source, target, chunk_rows=100).clean


def test_numeric_keys_beyond_28_digits_round_trip_through_the_report(
    fresh_pg: Callable[[], str], tmp_path: Path
) -> None:
    source, target = fresh_pg(), fresh_pg()
    big = "1" + "0" * 39
    for url in (source, target):
        execute(
            url,
            "CREATE TABLE t (n numeric PRIMARY KEY, note text)",
            f"INSERT INTO t VALUES ({big}1, 'a'), ({big}2, 'b'), (0.{'0' * 40}1, 'c')",
        )
    execute(target, "UPDATE t SET note = 'x'")

    report = run(source, target)

    assert sorted(d["key"][0] for d in report.to_json()["diffs"]) == sorted(
        [f"{big}1", f"{big}2", f"0.{'0' * 40}1"]
    )
    planned = rec.plan(report.to_json())
    assert planned.counts.update == 3
    rec.apply(planned, undo_path=tmp_path / "undo.sql")
    assert run(source, target).clean


def test_a_naive_timestamp_and_a_timestamptz_compare_as_the_same_instant(
    fresh_pg: Callable[[], str],
) -> None:
    # The server hash takes an instant as its distance from 2000-01-01 UTC on both sides;
    # ±infinity, which cannot be subtracted, hash as their text.
    source, target = fresh_pg(), fresh_pg()
    rows = [
        (1, "2024-03-31 01:30:00", "2024-03-31 03:30:00+02", True),
        (2, "1970-01-01 00:00:00", "1970-01-01 00:00:00.000001+00", False),
        (3, "infinity", "infinity", True),
        (4, "infinity", "-infinity", False),
        (5, "-infinity", "-infinity", True),
        (6, "4713-01-01 00:00:00 BC", "4713-01-01 00:00:00+00 BC", True),
        (7, "294276-12-31 23:59:59", "294276-12-31 23:59:59+00", True),
        (8, None, None, True),
        (9, "2000-01-01 00:00:00", None, False),
        (10, "2000-01-01 00:00:00", "2000-01-01 00:00:00+00", True),
    ]
    for url, kind, side in ((source, "timestamp", 1), (target, "timestamptz", 2)):
        values = ", ".join(
            f"({row[0]}, {'NULL' if row[side] is None else repr(row[side])})" for row in rows
        )
        execute(url, f"CREATE TABLE t (id int PRIMARY KEY, at {kind})")
        execute(url, f"INSERT INTO t VALUES {values}")

    expected = {changed(key, "at") for key, _, _, same in rows if not same}
    got = found(run(source, target))
    assert got == expected, show(got, expected)


@pytest.mark.parametrize("target_type", ["numeric(12, 2)", "numeric"])
def test_numbers_with_a_precision_hash_nan_apart_from_every_number(
    fresh_pg: Callable[[], str], target_type: str
) -> None:
    # Without a precision on either side no Infinity can be stored; with one side unconstrained
    # both sides hash NaN and the infinities as text, so NaN is told from them too.
    source, target = fresh_pg(), fresh_pg()
    rows = [(1, "NaN", "NaN"), (2, "NaN", "0"), (3, "1.10", "1.1"), (4, "0", "NaN")]
    expected = {changed(2, "n"), changed(4, "n")}
    if target_type == "numeric":
        rows += [(5, "NaN", "Infinity"), (6, "NaN", "-Infinity")]
        expected |= {changed(5, "n"), changed(6, "n")}
    for url, kind, side in ((source, "numeric(12, 2)", 1), (target, target_type, 2)):
        values = ", ".join(f"({row[0]}, '{row[side]}')" for row in rows)
        execute(url, f"CREATE TABLE t (id int PRIMARY KEY, n {kind})")
        execute(url, f"INSERT INTO t VALUES {values}")

    assert found(run(source, target)) == expected


def test_changes_that_move_a_hash_by_a_few_bits_do_not_cancel_out(
    fresh_pg: Callable[[], str],
) -> None:
    # PostgreSQL's own hashes are not mixed enough to be XORed raw: the numeric hash gives NaN
    # the seed and zero the seed minus one, and XORs a number's weight in (1 and 10000 differ
    # in low bits); the bigint hash folds 64 bits to 32 (1 and 2^32 hash alike). Changes of
    # that kind in two columns of a row, or in neighbouring keys, must still change the sums.
    source, target = fresh_pg(), fresh_pg()
    left = [(1, "NaN", "NaN", 1), (2, "NaN", "7", 5), (3, "NaN", "7", 6), (4, "1", "2", 1)]
    left += [(5, "3", "3", 1)]
    right = [(1, "0", "0", 1), (2, "0", "7", 5), (3, "0", "7", 6), (4, "10000", "20000", 1)]
    right += [(5, "3", "3", 2**32)]
    for url, rows in ((source, left), (target, right)):
        values = ", ".join(f"({k}, '{a}', '{b}', {n})" for k, a, b, n in rows)
        execute(
            url,
            "CREATE TABLE t (id int PRIMARY KEY, a numeric(12, 2) NOT NULL,"
            " b numeric(12, 2) NOT NULL, n bigint NOT NULL)",
            f"INSERT INTO t VALUES {values}",
        )

    got = found(run(source, target))
    expected = {changed(1, "a", "b"), changed(2, "a"), changed(3, "a"), changed(4, "a", "b")}
    expected.add(changed(5, "n"))
    assert got == expected, show(got, expected)


def test_integer_values_swapped_within_and_between_rows(fresh_pg: Callable[[], str]) -> None:
    source, target = fresh_pg(), fresh_pg()
    left = "(1, 2, 3), (2, 1, 3), (3, 3, 4), (4, 5, 6)"
    right = "(1, 1, 3), (2, 2, 3), (3, 4, 3), (4, 5, 6)"
    for url, kind, values in ((source, "int", left), (target, "bigint", right)):
        execute(url, f"CREATE TABLE t (id {kind} PRIMARY KEY, a int NOT NULL, b int NOT NULL)")
        execute(url, f"INSERT INTO t VALUES {values}")

    got = found(run(source, target))
    expected = {changed(1, "a"), changed(2, "a"), changed(3, "a", "b")}
    assert got == expected, show(got, expected)
