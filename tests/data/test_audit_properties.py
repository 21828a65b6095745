"""Properties of the audit: for any table and any edits it reports exactly the edited keys with
the right kinds and columns, and the same values written to two engines compare equal."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cutover.data.audit import AuditSpec, audit

from .audit_seed import Col, changed, create, extra, found, missing, show

COLUMNS = ("t", "n", "f")
COLS = [
    Col("id", sa.BigInteger(), key=True),
    Col("t", sa.Text()),
    Col("n", sa.BigInteger()),
    Col("f", sa.Double()),
]
INT64 = (-(2**63), 2**63 - 1)

texts = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=12)
ints = st.integers(*INT64)
floats = st.floats(allow_nan=False, width=64)
VALUES = {"t": st.none() | texts, "n": st.none() | ints, "f": st.none() | floats}
row_values = st.fixed_dictionaries(VALUES)

Row = dict[str, Any]


def same(a: Any, b: Any) -> bool:
    """Equality as the audit defines it for these columns: by value, NULL only equals NULL."""
    if a is None or b is None:
        return a is None and b is None
    return bool(a == b)


@st.composite
def keys(draw: st.DrawFn) -> list[int]:
    """Dense, sparse or scattered unique keys, some around the ends of a 64-bit integer."""
    n = draw(st.integers(0, 160))
    layout = draw(st.sampled_from(["dense", "sparse", "scattered"]))
    if layout == "dense":
        start = draw(st.integers(-1000, 1000))
        return list(range(start, start + n))
    if layout == "sparse":
        start, step = draw(st.integers(-(10**12), 10**12)), draw(st.integers(2, 10**6))
        return [start + i * step for i in range(n)]
    return sorted(draw(st.sets(st.integers(*INT64), max_size=n)))


@st.composite
def edited(draw: st.DrawFn) -> tuple[dict[int, Row], dict[int, Row]]:
    """A table and a copy of it with random deletes, inserts and changes on either side."""
    base = {k: draw(row_values) for k in draw(keys())}
    source = {k: dict(v) for k, v in base.items()}
    target = {k: dict(v) for k, v in base.items()}
    for _ in range(draw(st.integers(0, 12))):
        action = draw(st.sampled_from(["delete", "insert", "change one", "change several"]))
        side = draw(st.sampled_from([source, target, target]))
        if action == "insert":
            key = draw(st.integers(*INT64))
            if key not in source and key not in target:
                side[key] = draw(row_values)
            continue
        if not side:
            continue
        key = draw(st.sampled_from(sorted(side)))
        if action == "delete":
            del side[key]
            continue
        count = 1 if action == "change one" else draw(st.integers(2, 3))
        for column in draw(st.permutations(COLUMNS))[:count]:
            side[key][column] = draw(VALUES[column])
    return source, target


def expected_between(source: dict[int, Row], target: dict[int, Row]) -> set[Any]:
    expected = {missing(k) for k in source.keys() - target.keys()}
    expected |= {extra(k) for k in target.keys() - source.keys()}
    for k in source.keys() & target.keys():
        columns = [c for c in COLUMNS if not same(source[k][c], target[k][c])]
        if columns:
            expected.add(changed(k, *columns))
    return expected


def rows(table: dict[int, Row]) -> list[Row]:
    return [{"id": k, **v} for k, v in sorted(table.items())]


# The pause before a difference is read again lets a live database settle; these are still.
STILL = {"recheck_delay": 0}

PROPERTY = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def replace(engine: sa.Engine, table: sa.Table, content: list[Row]) -> None:
    """Empty ``table`` and write ``content`` into it, in one transaction."""
    with engine.begin() as conn:
        conn.execute(table.delete())
        if content:
            conn.execute(table.insert(), content)


@contextmanager
def edits_on(
    source_url: str, target_url: str
) -> Iterator[Callable[[tuple[dict[int, Row], dict[int, Row]], int], None]]:
    """A property over (source, target, chunk_rows) on these two databases: the tables are
    made once and emptied for every example."""
    left = create(source_url, "props", COLS)
    right = create(target_url, "props_target", COLS)
    writers = sa.create_engine(source_url), sa.create_engine(target_url)

    def check(tables: tuple[dict[int, Row], dict[int, Row]], chunk_rows: int) -> None:
        source, target = tables
        replace(writers[0], left, rows(source))
        replace(writers[1], right, rows(target))
        report = audit(
            AuditSpec(
                source=source_url,
                target=target_url,
                table="props",
                target_table="props_target",
                chunk_rows=chunk_rows,
                max_diffs=10_000,
                **STILL,
            )
        )
        expected = expected_between(source, target)
        got = found(report)
        assert got == expected, show(got, expected)
        assert report.counts["pending"] == 0

    try:
        yield check
    finally:
        for engine in writers:
            engine.dispose()


def test_sqlite_reports_exactly_the_edited_keys(tmp_path: Path) -> None:
    with edits_on(f"sqlite:///{tmp_path / 's.db'}", f"sqlite:///{tmp_path / 't.db'}") as check:

        @PROPERTY
        @given(edited(), st.sampled_from([100, 10_000]))
        def prop(tables: tuple[dict[int, Row], dict[int, Row]], chunk_rows: int) -> None:
            check(tables, chunk_rows)

        prop()


def test_postgresql_reports_exactly_the_edited_keys(fresh_pg: Callable[[], str]) -> None:
    url = fresh_pg()
    with edits_on(url, url) as check:

        @settings(PROPERTY, max_examples=25)
        @given(edited(), st.sampled_from([100, 10_000]))
        def prop(tables: tuple[dict[int, Row], dict[int, Row]], chunk_rows: int) -> None:
            check(tables, chunk_rows)

        prop()


# The same values on SQLite and PostgreSQL ---------------------------------------------------

EVERY_TYPE = [
    Col("id", sa.Integer(), key=True),
    Col("i", sa.BigInteger()),
    Col("t", sa.Text()),
    Col("v", sa.String(40)),
    Col("n", sa.Numeric(18, 4)),
    Col("f", sa.Double()),
    Col("b", sa.Boolean()),
    Col("d", sa.Date()),
    Col("ts", sa.DateTime()),
    Col("tm", sa.Time()),
    Col("by", sa.LargeBinary()),
    Col("u", sa.Uuid()),
    Col("j", sa.JSON()),
]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**31), 2**31) | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=6,
)

every_value = st.fixed_dictionaries(
    {
        "i": st.none() | ints,
        "t": st.none() | texts,
        "v": st.none()
        | st.text(
            st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=40
        ),
        # SQLite keeps a numeric as a double: fifteen significant digits survive.
        "n": st.none()
        | st.decimals(min_value=-(10**10) + 1, max_value=10**10 - 1, places=4, allow_nan=False),
        "f": st.none() | floats,
        "b": st.none() | st.booleans(),
        "d": st.none() | st.dates(min_value=date(1, 1, 1)),
        "ts": st.none() | st.datetimes(min_value=datetime(1, 1, 1)),
        "tm": st.none() | st.times(),
        "by": st.none() | st.binary(max_size=16),
        "u": st.none() | st.uuids(),
        "j": json_values,
    }
)


def test_the_same_values_on_sqlite_and_postgresql_are_equal(
    tmp_path: Path, fresh_pg: Callable[[], str]
) -> None:
    lite, pg = f"sqlite:///{tmp_path / 'every.db'}", fresh_pg()
    left, right = create(lite, "every", EVERY_TYPE), create(pg, "every", EVERY_TYPE)
    writers = sa.create_engine(lite), sa.create_engine(pg)

    @settings(PROPERTY, max_examples=20)
    @given(st.lists(every_value, min_size=1, max_size=25))
    def prop(values: list[Row]) -> None:
        table = [{"id": i, **v} for i, v in enumerate(values)]
        replace(writers[0], left, table)
        replace(writers[1], right, table)
        for source, target in ((lite, pg), (pg, lite)):
            report = audit(AuditSpec(source=source, target=target, table="every", **STILL))
            got = found(report)
            assert got == set(), f"{source.split(':')[0]} -> {target.split(':')[0]}: {got}"
            assert report.to_json()["source"]["rows"] == len(table)

    try:
        prop()
    finally:
        for engine in writers:
            engine.dispose()


def test_float_edge_values_compare_by_value(tmp_path: Path, fresh_pg: Callable[[], str]) -> None:
    """Infinities, the largest and smallest doubles, and both zeros: equal to themselves on every
    engine, and a change of one unit in the last place is a change."""
    pg = fresh_pg()
    lite = f"sqlite:///{tmp_path / 'f.db'}"
    specials = [math.inf, -math.inf, 1.7976931348623157e308, 5e-324, -0.0, 0.0, 0.1, 1 / 3]
    cols = [Col("id", sa.Integer(), key=True), Col("f", sa.Double())]
    rows_ = [{"id": i, "f": v} for i, v in enumerate(specials)]
    create(lite, "floats", cols, rows_)
    create(pg, "floats", cols, rows_)
    assert found(audit(AuditSpec(source=lite, target=pg, table="floats"))) == set()
    nudged = [
        {"id": i, "f": math.nextafter(v, math.inf) if i >= 6 else v} for i, v in enumerate(specials)
    ]
    create(pg, "floats", cols, nudged)
    got = found(audit(AuditSpec(source=lite, target=pg, table="floats")))
    assert got == {changed(6, "f"), changed(7, "f")}, got
