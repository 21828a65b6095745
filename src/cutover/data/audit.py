"""An exact audit of one table in two databases: every missing, extra and changed row.

How it works, for a user who wants to trust it:

1. The key range is cut into chunks from the source's key distribution (arithmetic for dense
   integer keys, one ordered pass otherwise), so gaps, text and UUID keys cost nothing extra.
   The first and last chunks are open-ended, so target rows outside the source's range count.
2. For each chunk both databases, in parallel, return a row count and the sum of a 64-bit
   hash of every row's unambiguous encoding, computed inside the server (PostgreSQL, MySQL,
   MariaDB). A sum, unlike XOR, cannot cancel out pairs of changes. SQLite, and two
   different engines, are compared here row by row instead.
3. A chunk whose sums differ is narrowed down: sums per bucket of a few keys from both
   sides, then the keys and row hashes of the differing buckets, merged by key; only rows
   whose hashes differ are read in full and compared value by value, each column's kind
   deciding equality (see :mod:`cutover.data._encoding`). Once most chunks differ, the first
   sums are skipped.
4. Rows missing on one side and extra on the other across chunks are matched by key (two
   engines may order text differently), then every difference is read again: a row that
   changed while the audit ran is reported as ``pending``, never as drift.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from cutover.data._dialects import (
    BUCKET_WIDTH,
    Hashed,
    PostgresPushdown,
    Pushdown,
    bytewise_text,
    column_name,
    connect,
    first_line,
    identifier,
    pushdown,
    qualified,
    raw_type,
    reflect,
    stored,
)
from cutover.data._encoding import (
    Kind,
    canonical,
    common_kind,
    equal,
    from_json,
    kind_of,
    to_param,
)
from cutover.data._encoding import to_json as value_json
from cutover.errors import InvalidInput
from cutover.urls import redact_url

FORMAT = "cutover-audit/1"
"""The report's format; readers refuse others."""

KINDS = ("missing", "extra", "changed", "pending")
"""What a difference can be; ``pending`` rows changed during the audit and are not drift."""

NULL_TENANT = "(null)"
"""Where per-tenant counts put rows whose tenant column is NULL."""

_MASK = (1 << 64) - 1
_RECHECKS = 3
_ARRAY_KEYS = 20_000  # keys a query reads rows of, given as one array parameter


@dataclass(frozen=True, slots=True)
class AuditSpec:
    """What to compare: one table (or a filtered part of it) in two databases."""

    source: str
    target: str
    table: str
    target_table: str | None = None
    key: tuple[str, ...] = ()
    columns: tuple[str, ...] = ()
    column_map: Mapping[str, str] = field(default_factory=dict)
    where: str | None = None
    target_where: str | None = None
    tenant_column: str | None = None
    tolerance: Mapping[str, float] = field(default_factory=dict)
    max_diffs: int = 1000
    workers: int = 2
    chunk_rows: int = 10_000
    max_rows_per_second: float | None = None
    checkpoint: str | None = None
    recheck_delay: float = 0.2

    def __post_init__(self) -> None:
        for name, low in (("max_diffs", 0), ("workers", 1), ("chunk_rows", 100)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise InvalidInput(
                    f"{name} must be a whole number of at least {low}, got {value!r}"
                )
        limit = self.max_rows_per_second
        if limit is not None and not (isinstance(limit, int | float) and limit > 0):
            raise InvalidInput(f"max_rows_per_second must be a positive number, got {limit!r}")
        for column, tolerance in self.tolerance.items():
            if (
                isinstance(tolerance, bool)
                or not isinstance(tolerance, int | float)
                or not math.isfinite(tolerance)
                or tolerance <= 0
            ):
                raise InvalidInput(
                    f"the tolerance of {column} must be a positive number, got {tolerance!r}"
                )


@dataclass(frozen=True, slots=True)
class Diff:
    """One row that is not the same on both sides."""

    kind: str
    key: tuple[Any, ...]
    tenant: str | None = None
    columns: tuple[str, ...] = ()
    source: Mapping[str, Any] | None = None
    target: Mapping[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "key": [value_json(part) for part in self.key],
            "tenant": self.tenant,
            "columns": list(self.columns),
            "source": None if self.source is None else dict(self.source),
            "target": None if self.target is None else dict(self.target),
        }


@dataclass(frozen=True, slots=True)
class AuditReport:
    """What the audit found, with the evidence a change board asks for."""

    source: Mapping[str, Any]
    target: Mapping[str, Any]
    key: tuple[str, ...]
    key_columns: tuple[Mapping[str, Any], ...]
    columns: tuple[Mapping[str, Any], ...]
    where: str | None
    target_where: str | None
    tenant_column: str | None
    counts: Mapping[str, int]
    tenants: Mapping[str, Mapping[str, int]]
    diffs: tuple[Diff, ...]
    max_diffs: int
    started_at: float
    finished_at: float
    chunks: Mapping[str, int]
    settled: int = 0

    @property
    def drift(self) -> int:
        return self.counts["drift"]

    @property
    def clean(self) -> bool:
        return self.counts["drift"] == 0

    @property
    def truncated(self) -> bool:
        return len(self.diffs) < sum(self.counts[kind] for kind in KINDS)

    @property
    def duration(self) -> float:
        return self.finished_at - self.started_at

    @property
    def rows_per_second(self) -> float:
        rows = max(self.source["rows"], self.target["rows"])
        return rows / self.duration if self.duration > 0 else float(rows)

    def to_json(self) -> dict[str, Any]:
        def stamp(at: float) -> str:
            return datetime.fromtimestamp(at, UTC).isoformat().replace("+00:00", "Z")

        return {
            "format": FORMAT,
            "source": dict(self.source),
            "target": dict(self.target),
            "key": list(self.key),
            "key_columns": [dict(column) for column in self.key_columns],
            "columns": [dict(column) for column in self.columns],
            "where": self.where,
            "target_where": self.target_where,
            "tenant_column": self.tenant_column,
            "counts": dict(self.counts),
            "tenants": {tenant: dict(counts) for tenant, counts in self.tenants.items()},
            "diffs": [diff.to_json() for diff in self.diffs],
            "truncated": self.truncated,
            "max_diffs": self.max_diffs,
            "settled_on_recheck": self.settled,
            "started_at": stamp(self.started_at),
            "finished_at": stamp(self.finished_at),
            "duration_s": round(self.duration, 3),
            "rows_per_second": round(self.rows_per_second, 1),
            "chunks": dict(self.chunks),
            "clean": self.clean,
        }


def renamed(condition: str, column_map: Mapping[str, str]) -> str:
    """A SQL condition written with source column names, with the renamed ones replaced by
    their target names (outside string literals; plain, "quoted" or `quoted` identifiers)."""
    if not column_map:
        return condition
    names = "|".join(re.escape(name) for name in sorted(column_map, key=len, reverse=True))
    word = re.compile(rf'(?<![\w.])(["`]?)({names})\1(?!\w)')
    parts = re.split(r"('(?:[^']|'')*')", condition)
    for index in range(0, len(parts), 2):  # the odd parts are string literals
        parts[index] = word.sub(lambda m: f"{m[1]}{column_map[m[2]]}{m[1]}", parts[index])
    return "".join(parts)


# -- one side -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Column:
    name: str  # the source name, which the report uses
    own: str  # this side's name
    kind: Kind  # the kind both sides compare as
    own_kind: Kind  # this side's kind, for parameters
    tolerance: float | None = None


class _Side:
    """One database and table, reflected, with the SQL that reads and hashes its rows."""

    def __init__(self, role: str, url: str, table: str, where: str | None, pool: int) -> None:
        self.role = role
        self.engine = connect(url, role, pool_size=pool + 1)
        self._local = threading.local()
        self._opened: list[sa.Connection] = []
        self._opened_lock = threading.Lock()
        self.url = redact_url(self.engine.url.render_as_string(hide_password=False))
        try:
            self.table = reflect(
                self.engine,
                table,
                role,
                f"check --{'table' if role == 'source' else 'target-table'}",
            )
        except InvalidInput:
            self.engine.dispose()
            raise
        self.name = table
        self.where = where
        self.dialect = self.engine.dialect.name
        self.pushdown: Pushdown | None = pushdown(self.engine)
        self.rows = 0

    def column(self, name: str) -> sa.Column[Any]:
        try:
            return self.table.c[name]
        except KeyError:
            known = ", ".join(self.table.c.keys())
            hint = "" if self.role == "source" else "; use --map old=new or --columns"
            raise InvalidInput(
                f"column {name!r} is not in the {self.role} table {self.name}"
                f" (it has {known}){hint}"
            ) from None

    def kind(self, name: str) -> Kind:
        return kind_of(self.column(name).type)

    def quoted(self, name: str) -> str:
        return identifier(self.engine.dialect, name)

    def stored(self, name: str) -> sa.ColumnElement[Any]:
        """The column read as stored (see :func:`cutover.data._dialects.stored`)."""
        return stored(self.column(name), self.dialect)

    def primary_on(self, columns: Sequence[str]) -> bool:
        """Whether every column is part of the primary key, so none can be NULL."""
        primary = {c.name for c in self.table.primary_key.columns}
        return bool(primary) and set(columns) <= primary

    def unique_on(self, columns: Sequence[str]) -> bool:
        wanted = set(columns)
        primary = {c.name for c in self.table.primary_key.columns}
        if primary and primary <= wanted:
            return True
        inspector = sa.inspect(self.engine)

        def within(names: Iterable[str | None]) -> bool:
            return {column_name(self.engine.dialect, str(n)) for n in names} <= wanted

        for index in inspector.get_indexes(self.table.name, schema=self.table.schema):
            if index.get("unique") and within(index["column_names"]):
                return True
        for constraint in inspector.get_unique_constraints(
            self.table.name, schema=self.table.schema
        ):
            if within(constraint["column_names"]):
                return True
        return False

    def estimated_rows(self) -> int:
        """The row count from the engine's statistics when there is no filter, else counted."""
        if not self.where and self.dialect == "postgresql":
            estimate = self.run(
                sa.text("SELECT reltuples FROM pg_class WHERE oid = CAST(:t AS regclass)"),
                {"t": qualified(self.engine, self.table)},
            )[0][0]
            if estimate and estimate > 0:
                return int(estimate)
        if not self.where and self.dialect in ("mysql", "mariadb"):
            estimate = self.run(
                sa.text(
                    "SELECT TABLE_ROWS FROM information_schema.TABLES"
                    " WHERE TABLE_SCHEMA = COALESCE(:s, DATABASE()) AND TABLE_NAME = :t"
                ),
                {"s": self.table.schema, "t": self.table.name},
            )[0][0]
            if estimate and estimate > 0:
                return int(estimate)
        return int(
            self.run(self.filtered(sa.select(sa.func.count()).select_from(self.table)))[0][0]
        )

    def filtered(self, query: sa.Select[Any]) -> sa.Select[Any]:
        return query.where(sa.text(self.where)) if self.where else query

    def connection(self) -> sa.Connection:
        """This thread's connection, opened once for the whole audit: a query costs one round
        trip (autocommit: no BEGIN and ROLLBACK around it, no ping before it)."""
        conn: sa.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            self._local.conn = conn
            with self._opened_lock:
                self._opened.append(conn)
        return conn

    def close(self) -> None:
        with self._opened_lock:
            opened, self._opened = self._opened, []
        for conn in opened:
            conn.close()
        self.engine.dispose()

    def run(
        self, query: sa.Executable, params: Mapping[str, Any] | None = None, *, raw: bool = False
    ) -> list[Any]:
        """The query's rows in one fetch; ``raw``, as the driver's tuples (for queries of
        numbers and keys read as stored, which no result processing would change: building
        SQLAlchemy's rows cost more than reading them)."""
        try:
            result = self.connection().execute(query, params or {})
            if raw:
                with result:
                    return list(result.cursor.fetchall())
            return result.fetchall()
        except sa.exc.DBAPIError as error:
            first = first_line(error)
            # With a condition of the user's, any refusal of the database is about it (a
            # second statement in it meets the read-only transaction, say).
            if isinstance(error, sa.exc.DatabaseError) and self.where:
                raise InvalidInput(
                    f"the {self.role} database rejected the query with --where {self.where!r}:"
                    f" {first}"
                ) from None
            raise


def _as_stored(column: sa.Column[Any]) -> sa.ColumnElement[Any]:
    """The column compared with values bound as it stores them."""
    return sa.type_coerce(column, raw_type(column.type))


def _int_array(values: Sequence[int]) -> sa.BindParameter[Any]:
    """Whole numbers bound as one PostgreSQL ``bigint[]``."""
    from sqlalchemy.dialects.postgresql import ARRAY

    return sa.bindparam(None, list(values), ARRAY(sa.BigInteger()))


def _bound_type(column_type: sa.types.TypeEngine[Any]) -> sa.types.TypeEngine[Any]:
    """A key bound's type: text without the column's collation (keys compare by bytes), other
    values written as the column stores them."""
    return sa.String() if isinstance(column_type, sa.String) else raw_type(column_type)


# -- the audit ----------------------------------------------------------------------------


@dataclass
class _Chunk:
    lo: tuple[Any, ...] | None
    hi: tuple[Any, ...] | None


@dataclass
class _Found:
    """Rows one chunk (or the whole audit) could not match: key -> canonical row."""

    missing: dict[tuple[Any, ...], tuple[Any, ...]] = field(default_factory=dict)
    extra: dict[tuple[Any, ...], tuple[Any, ...]] = field(default_factory=dict)
    changed: dict[tuple[Any, ...], tuple[tuple[Any, ...], tuple[Any, ...]]] = field(
        default_factory=dict
    )
    # Keys known from a checkpoint, without their rows: read again at the recheck.
    unread: set[tuple[Any, ...]] = field(default_factory=set)


class _Audit:
    def __init__(self, spec: AuditSpec, progress: Callable[[int, int], None] | None = None) -> None:
        self.spec = spec
        self.progress = progress
        target_where = spec.target_where
        if target_where is None and spec.where:
            target_where = renamed(spec.where, spec.column_map)
        target_table = spec.target_table or spec.table
        # Both sides connect and read their table's definition at once; the source's error,
        # if both fail, is the one raised.
        with ThreadPoolExecutor(1, thread_name_prefix="cutover-audit-target") as pool:
            theirs = pool.submit(
                _Side, "target", spec.target, target_table, target_where, spec.workers
            )
            try:
                self.source = _Side("source", spec.source, spec.table, spec.where, spec.workers)
            except BaseException:
                if theirs.exception() is None:
                    theirs.result().close()
                raise
            try:
                self.target = theirs.result()
            except BaseException:
                self.source.close()
                raise
        self._bytewise = [True, True]
        self._tally = [0, 0]  # chunks finished, chunks that differed
        self._resolve()
        self._row_hash = [
            side.pushdown.row_hash(self._hashed(index, side, self.key + self.columns))
            if side.pushdown is not None and self.pushdown is not None
            else ""
            for index, side in enumerate((self.source, self.target))
        ]

    # -- what is compared --------------------------------------------------------------------

    def _pair(self, name: str, tolerance: float | None = None) -> tuple[_Column, _Column]:
        own = self.spec.column_map.get(name, name)
        source_kind, target_kind = self.source.kind(name), self.target.kind(own)
        kind = common_kind(source_kind, target_kind)
        if tolerance is not None and kind not in (Kind.INTEGER, Kind.NUMERIC, Kind.FLOAT):
            raise InvalidInput(
                f"--tolerance {name}={tolerance} needs a number column, but {name} is {kind}"
            )
        return (
            _Column(name, name, kind, source_kind, tolerance),
            _Column(name, own, kind, target_kind, tolerance),
        )

    def _resolve(self) -> None:
        spec, source = self.spec, self.source
        key = list(spec.key) or [c.name for c in source.table.primary_key.columns]
        if not key:
            raise InvalidInput(
                f"the source table {source.name} has no primary key; pass --key with the"
                " columns that identify a row"
            )
        unknown_map = set(spec.column_map) - set(source.table.c.keys())
        if unknown_map:
            raise InvalidInput(
                f"--map names {sorted(unknown_map)[0]!r}, which is not a column of the source"
                f" table {source.name}"
            )
        unknown = set(spec.tolerance) - set(source.table.c.keys())
        if unknown:
            raise InvalidInput(
                f"--tolerance names {sorted(unknown)[0]!r}, which is not a column of the"
                f" source table {source.name}"
            )
        columns = list(spec.columns) or [c for c in source.table.c.keys() if c not in key]  # noqa: SIM118
        self.key = [self._pair(name) for name in key]
        self.columns = [self._pair(name, spec.tolerance.get(name)) for name in columns]
        self.tenant: tuple[_Column, _Column] | None = None
        if spec.tenant_column:
            self.tenant = self._pair(spec.tenant_column)
        ours, theirs = self.source.pushdown, self.target.pushdown
        both_postgres = isinstance(ours, PostgresPushdown) and isinstance(theirs, PostgresPushdown)
        if both_postgres and type(ours) is not type(theirs):  # PostgreSQL 13 on one side: MD5
            self.source.pushdown = self.target.pushdown = ours = theirs = PostgresPushdown()
        self.pushdown = ours if type(ours) is type(theirs) else None
        for index, side in enumerate((self.source, self.target)):
            names = [pair[index].own for pair in self.key]
            if not side.unique_on(names):
                self._no_duplicates(side, names)
            if not side.primary_on(names):
                self._no_null_keys(side, names)

    def _no_duplicates(self, side: _Side, names: list[str]) -> None:
        columns = [side.column(name) for name in names]
        query = side.filtered(
            sa.select(*columns).group_by(*columns).having(sa.func.count() > 1).limit(1)
        )
        rows = side.run(query)
        if rows:
            self._duplicate(side, tuple(rows[0]))

    def _no_null_keys(self, side: _Side, names: list[str]) -> None:
        nulls = sa.or_(*(side.column(name).is_(None) for name in names))
        if side.run(
            side.filtered(sa.select(sa.literal(1)).select_from(side.table).where(nulls).limit(1))
        ):
            raise InvalidInput(
                f"the {side.role} table {side.name} has a row whose key ({', '.join(names)}) is"
                " NULL, which no other row can be matched with; pass --key with columns that"
                " are never NULL"
            )

    def _own(self, index: int, pairs: Iterable[tuple[_Column, _Column]]) -> list[_Column]:
        return [pair[index] for pair in pairs]

    # -- SQL ---------------------------------------------------------------------------------

    def _key_expressions(self, index: int, side: _Side) -> list[sa.ColumnElement[Any]]:
        expressions: list[sa.ColumnElement[Any]] = []
        for column in self._own(index, self.key):
            element: sa.ColumnElement[Any] = side.column(column.own)
            collatable = isinstance(side.column(column.own).type, sa.String)
            if collatable and side.dialect == "sqlite":
                element = element.collate("BINARY")
            elif collatable and not self._bytewise[index] and side.pushdown is not None:
                element = sa.literal_column(side.pushdown.binary(side.quoted(column.own)))
            expressions.append(element)
        return expressions

    def _range(self, index: int, side: _Side, chunk: _Chunk) -> list[sa.ColumnElement[Any]]:
        keys = self._key_expressions(index, side)
        own = self._own(index, self.key)

        def bound(values: tuple[Any, ...]) -> sa.ColumnElement[Any]:
            params = [
                sa.bindparam(
                    None,
                    to_param(c.own_kind, v),
                    # Text bounds carry no collation: the key is compared by its bytes.
                    type_=_bound_type(side.column(c.own).type),
                )
                for c, v in zip(own, values, strict=True)
            ]
            return sa.tuple_(*params) if len(params) > 1 else params[0]

        target = sa.tuple_(*keys) if len(keys) > 1 else keys[0]
        conditions = []
        if chunk.lo is not None:
            conditions.append(target >= bound(chunk.lo))
        if chunk.hi is not None:
            conditions.append(target < bound(chunk.hi))
        return conditions

    def _hashed(
        self, index: int, side: _Side, pairs: Iterable[tuple[_Column, _Column]]
    ) -> list[Hashed]:
        return [
            Hashed(
                side.quoted(c.own),
                c.kind,
                c.tolerance,
                c.own_kind,
                self._nullable(c.name),
                self._infinite(c.name),
            )
            for c in self._own(index, pairs)
        ]

    def _both(self, name: str) -> tuple[sa.Column[Any], sa.Column[Any]]:
        return self.source.column(name), self.target.column(self.spec.column_map.get(name, name))

    def _nullable(self, name: str) -> bool:
        """Whether either side lets the column be NULL (both sides must hash it alike)."""
        return any(bool(column.nullable) for column in self._both(name))

    def _infinite(self, name: str) -> bool:
        """Whether either side may hold ±Infinity in the column: only a numeric without a
        precision can (and a float, or a type not known here, such as a domain)."""

        def bounded(type_: sa.types.TypeEngine[Any]) -> bool:
            if isinstance(type_, sa.Integer):
                return True
            numeric = isinstance(type_, sa.Numeric) and not isinstance(type_, sa.Float)
            return numeric and type_.precision is not None

        return not all(bounded(column.type) for column in self._both(name))

    def _summary(self, index: int, side: _Side, chunk: _Chunk) -> tuple[int, int]:
        query = side.filtered(
            sa.select(sa.func.count(), sa.literal_column(f"sum({self._row_hash[index]})"))
            .select_from(side.table)
            .where(*self._range(index, side, chunk))
        )
        count, total = side.run(query)[0]
        return int(count), int(total or 0) & _MASK

    def _bucket(self, index: int, side: _Side) -> sa.ColumnElement[Any]:
        assert side.pushdown is not None
        buckets = max(1, self.spec.chunk_rows // BUCKET_WIDTH)
        bucket = side.pushdown.bucket(self._hashed(index, side, self.key), buckets)
        return sa.literal_column(bucket, type_=sa.BigInteger())

    def _buckets(self, index: int, side: _Side, chunk: _Chunk) -> dict[int, tuple[int, int]]:
        """The chunk's rows summed per bucket: bucket -> (rows, sum of row hashes)."""
        # Grouped by the expression itself: a name for it could be a column's name too.
        bucket = self._bucket(index, side)
        query = side.filtered(
            sa.select(bucket, sa.func.count(), sa.literal_column(f"sum({self._row_hash[index]})"))
            .select_from(side.table)
            .where(*self._range(index, side, chunk))
            .group_by(bucket)
        )
        rows = side.run(query, raw=True)
        return {int(b): (int(n), int(total or 0) & _MASK) for b, n, total in rows}

    def _hashes(
        self, index: int, side: _Side, chunk: _Chunk, buckets: Sequence[int] = ()
    ) -> dict[tuple[Any, ...], int]:
        """The chunk's rows (of ``buckets`` only, if given) as key -> 64-bit hash."""
        own = self._own(index, self.key)
        conditions = self._range(index, side, chunk)
        if buckets:  # a list of constants, which PostgreSQL looks up in a hash table
            conditions.append(self._bucket(index, side).in_(buckets))
        query = side.filtered(
            sa.select(*(side.stored(c.own) for c in own), sa.literal_column(self._row_hash[index]))
            .select_from(side.table)
            .where(*conditions)
        )
        rows = side.run(query, raw=True)
        if len(own) == 1 and own[0].kind is Kind.INTEGER:  # the common case, at full speed
            hashes = {(int(key),): value for key, value in rows}
        else:
            kinds = [c.kind for c in own]
            width = len(own)
            hashes = {
                tuple(canonical(kind, v) for kind, v in zip(kinds, row, strict=False)): row[width]
                for row in rows
            }
        if len(hashes) < len(rows):
            seen: set[tuple[Any, ...]] = set()
            for row in rows:
                key = tuple(canonical(c.kind, v) for c, v in zip(own, row, strict=False))
                if key in seen:
                    self._duplicate(side, key)
                seen.add(key)
        return hashes

    def _duplicate(self, side: _Side, key: tuple[Any, ...]) -> None:
        raise InvalidInput(
            f"the {side.role} table {side.name} has more than one row with key"
            f" {[value_json(k) for k in key]}; pass --key with columns that identify one row"
        )

    def _select_rows(self, index: int, side: _Side, *, filtered: bool = True) -> sa.Select[Any]:
        names = [c.own for c in self._own(index, self.key + self.columns)]
        if self.tenant is not None:
            names.append(self.tenant[index].own)
        query = sa.select(*(side.stored(n) for n in names)).select_from(side.table)
        return side.filtered(query) if filtered else query

    def _canonical(self, index: int, raw: Sequence[Any]) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        pairs = self.key + self.columns + ([self.tenant] if self.tenant else [])
        values = tuple(
            canonical(pair[index].kind, value) for pair, value in zip(pairs, raw, strict=True)
        )
        width = len(self.key)
        return values[:width], values[width:]

    def _rows(
        self,
        index: int,
        side: _Side,
        conditions: Sequence[sa.ColumnElement[Any]],
        *,
        filtered: bool = True,
        outside: set[tuple[Any, ...]] | None = None,
    ) -> dict[tuple[Any, ...], tuple[Any, ...]]:
        """Rows as key -> canonical values; unfiltered, ``outside`` gets the keys of the rows
        the side's ``--where`` does not keep."""
        rows: dict[tuple[Any, ...], tuple[Any, ...]] = {}
        query = self._select_rows(index, side, filtered=filtered).where(*conditions)
        scoped = not filtered and side.where and outside is not None
        if scoped:  # which rows the side's condition keeps, read with them
            query = query.add_columns(sa.case((sa.text(f"({side.where})"), 1), else_=0))
        for raw in side.run(query):
            key, values = self._canonical(index, raw[:-1] if scoped else raw)
            if key in rows:
                self._duplicate(side, key)
            rows[key] = values
            if scoped and not raw[-1]:
                outside.add(key)  # type: ignore[union-attr]
        return rows

    def _by_keys(
        self, index: int, side: _Side, keys: Sequence[tuple[Any, ...]]
    ) -> tuple[dict[tuple[Any, ...], tuple[Any, ...]], set[tuple[Any, ...]]]:
        """Rows by key, whatever ``--where`` says, and the keys of those it does not keep."""
        own = self._own(index, self.key)
        columns = [_as_stored(side.column(c.own)) for c in own]
        found: dict[tuple[Any, ...], tuple[Any, ...]] = {}
        outside: set[tuple[Any, ...]] = set()
        if (
            side.dialect == "postgresql"
            and len(own) == 1
            and own[0].own_kind is Kind.INTEGER
            and all(type(k[0]) is int for k in keys)
        ):
            # The common case: the keys as one array, many thousands in a query (a list of
            # parameters costs the client as much to render as the server to read).
            for start in range(0, len(keys), _ARRAY_KEYS):
                batch = [k[0] for k in keys[start : start + _ARRAY_KEYS]]
                condition = side.column(own[0].own) == sa.any_(_int_array(batch))
                found.update(self._rows(index, side, [condition], filtered=False, outside=outside))
            return found, outside
        for start in range(0, len(keys), 500):
            batch = keys[start : start + 500]
            if len(columns) == 1:
                condition = columns[0].in_([to_param(own[0].own_kind, k[0]) for k in batch])
            else:
                condition = sa.tuple_(*columns).in_(
                    [
                        tuple(to_param(c.own_kind, v) for c, v in zip(own, k, strict=True))
                        for k in batch
                    ]
                )
            found.update(self._rows(index, side, [condition], filtered=False, outside=outside))
        return found, outside

    def _read_both(
        self, keys: Sequence[tuple[Any, ...]], pool: ThreadPoolExecutor | None = None
    ) -> tuple[dict[tuple[Any, ...], tuple[Any, ...]], dict[tuple[Any, ...], tuple[Any, ...]]]:
        """Rows by key from both sides, read past ``--where`` so that a row its condition keeps
        on one side only is seen: it is changed when its compared values differ, else missing
        (or extra) as the condition says; a row the condition drops on both sides is not there.
        """
        if pool is None:
            ours, ours_out = self._by_keys(0, self.source, keys)
            theirs, theirs_out = self._by_keys(1, self.target, keys)
        else:
            pending = pool.submit(self._by_keys, 1, self.target, keys)
            ours, ours_out = self._by_keys(0, self.source, keys)
            theirs, theirs_out = pending.result()
        for key in ours_out | theirs_out:
            a, b = ours.get(key), theirs.get(key)
            a_in, b_in = (
                a is not None and key not in ours_out,
                b is not None and key not in theirs_out,
            )
            # The key is outside on at least one side, so at most one side holds it in scope.
            if (a_in or b_in) and a is not None and b is not None and self._changed_columns(a, b):
                continue  # in scope on one side, and different: changed
            if not a_in:
                ours.pop(key, None)
            if not b_in:
                theirs.pop(key, None)
        return ours, theirs

    # -- comparing ----------------------------------------------------------------------------

    def _changed_columns(self, ours: tuple[Any, ...], theirs: tuple[Any, ...]) -> tuple[str, ...]:
        return tuple(
            column.name
            for (column, _), a, b in zip(self.columns, ours, theirs, strict=False)
            if not equal(column.kind, a, b, column.tolerance)
        )

    def _merge(
        self,
        source: dict[tuple[Any, ...], tuple[Any, ...]],
        target: dict[tuple[Any, ...], tuple[Any, ...]],
        found: _Found,
    ) -> None:
        for key, ours in source.items():
            theirs = target.pop(key, None)
            if theirs is None:
                found.missing[key] = ours
            elif ours != theirs and self._changed_columns(ours, theirs):
                found.changed[key] = (ours, theirs)
        found.extra.update(target)

    def _chunk(self, chunk: _Chunk, pool: ThreadPoolExecutor) -> tuple[int, int, _Found, bool]:
        """Counts on each side, what differs, and whether the chunk's hashes differed."""
        found = _Found()
        if self.pushdown is None:
            theirs = pool.submit(self._rows, 1, self.target, self._range(1, self.target, chunk))
            source = self._rows(0, self.source, self._range(0, self.source, chunk))
            target = theirs.result()
            counts = (len(source), len(target))
            self._merge(source, target, found)
            return counts[0], counts[1], found, bool(found.missing or found.extra or found.changed)
        if self._dense():
            return self._stream(chunk, pool, found)
        theirs_summary = pool.submit(self._summary, 1, self.target, chunk)
        ours = self._summary(0, self.source, chunk)
        theirs = theirs_summary.result()
        if ours == theirs:
            return ours[0], theirs[0], found, False
        return self._stream(chunk, pool, found, ours[0], theirs[0])

    def _stream(
        self,
        chunk: _Chunk,
        pool: ThreadPoolExecutor,
        found: _Found,
        *counted: int,
    ) -> tuple[int, int, _Found, bool]:
        """Narrow a differing chunk down: sums per bucket of a few keys from both sides, then
        the keys and row hashes of the differing buckets only (every row's when most differ),
        merged by key; only rows whose hashes differ are read in full and compared."""
        theirs_pending = pool.submit(self._buckets, 1, self.target, chunk)
        our_buckets = self._buckets(0, self.source, chunk)
        their_buckets = theirs_pending.result()
        rows = counted or (
            sum(n for n, _ in our_buckets.values()),
            sum(n for n, _ in their_buckets.values()),
        )
        differing = sorted(
            b
            for b in our_buckets.keys() | their_buckets.keys()
            if our_buckets.get(b) != their_buckets.get(b)
        )
        if not differing:
            return rows[0], rows[1], found, False
        if len(differing) * 2 > len(our_buckets.keys() | their_buckets.keys()):
            differing = []  # most buckets differ: every row, without filtering
        theirs_pending = pool.submit(self._hashes, 1, self.target, chunk, differing)
        ours = self._hashes(0, self.source, chunk, differing)
        theirs = theirs_pending.result()
        suspects = [key for key, value in ours.items() if theirs.get(key) != value]
        suspects.extend(key for key in theirs if key not in ours)
        if suspects:
            self._merge(*self._read_both(suspects, pool), found)
        return rows[0], rows[1], found, True

    def _dense(self) -> bool:
        """Whether most chunks so far differed: then hashing each chunk first only costs."""
        finished, differing = self._tally
        return finished >= 4 and differing * 2 > finished

    # -- planning -----------------------------------------------------------------------------

    def _collations(self) -> None:
        """Which sides order their text keys by bytes, so that key ranges can use an index."""
        for index, side in enumerate((self.source, self.target)):
            for column in self._own(index, self.key):
                collatable = isinstance(side.column(column.own).type, sa.String)
                if collatable and not bytewise_text(side.engine, side.table, column.own):
                    self._bytewise[index] = False

    def _plan(self) -> list[_Chunk]:
        source = self.source
        step = self.spec.chunk_rows
        if not all(self._bytewise):
            # Ranges compared by bytes cannot use an index ordered by a collation: each chunk
            # scans the table, so there are at most 16 of them.
            step = max(step, source.estimated_rows() // 16 + 1)
        own = self._own(0, self.key)
        if any(s.own_kind is not t.own_kind for s, t in self.key):
            # The sides order keys differently (an integer against text, say): one chunk.
            return [_Chunk(None, None)]
        if len(own) == 1 and own[0].kind is Kind.INTEGER and own[0].own_kind is Kind.INTEGER:
            column = source.column(own[0].own)
            low, high = source.run(
                source.filtered(sa.select(sa.func.min(column), sa.func.max(column)))
            )[0]
            count = source.estimated_rows()
            if low is None or count <= step:
                return [_Chunk(None, None)]
            span = int(high) - int(low) + 1
            if count / span >= 0.05:
                pieces = math.ceil(count / step)
                width = math.ceil(span / pieces)
                edges = [(int(low) + width * i,) for i in range(1, pieces)]
                return self._chunks(edges)
        keys = self._key_expressions(0, source)
        # The subquery's columns have names of their own, which no column name can clash with.
        numbered = source.filtered(
            sa.select(
                *(source.stored(c.own).label(f"key_{i}") for i, c in enumerate(own)),
                sa.func.row_number().over(order_by=keys).label("position"),
            ).select_from(source.table)
        ).subquery()
        position = numbered.c.position
        query = sa.select(*(numbered.c[f"key_{i}"] for i in range(len(own))))
        query = query.where(position % step == 1, position > 1).order_by(position)
        edges = [
            tuple(canonical(c.kind, v) for c, v in zip(own, row, strict=True))
            for row in source.run(query)
        ]
        return self._chunks(edges)

    @staticmethod
    def _chunks(edges: list[tuple[Any, ...]]) -> list[_Chunk]:
        bounds: list[tuple[Any, ...] | None] = [None, *edges, None]
        return [_Chunk(bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)]

    # -- checkpoint ----------------------------------------------------------------------------

    def _fingerprint(self) -> str:
        spec = self.spec
        described = {
            "source": self.source.url,
            "target": self.target.url,
            "tables": [self.source.name, self.target.name],
            "key": [c.name for c, _ in self.key],
            "columns": [(c.name, c.tolerance) for c, _ in self.columns],
            "where": [self.source.where, self.target.where],
            "chunk_rows": spec.chunk_rows,
            "tenant": spec.tenant_column,
            "map": dict(spec.column_map),
        }
        return hashlib.sha256(
            json.dumps(described, sort_keys=True, default=str).encode()
        ).hexdigest()

    def _edge_json(self, edge: tuple[Any, ...] | None) -> Any:
        return None if edge is None else [value_json(v) for v in edge]

    def _key_from_json(self, values: list[Any]) -> tuple[Any, ...]:
        return tuple(
            canonical(c.kind, from_json(c.kind, v))
            for (c, _), v in zip(self.key, values, strict=True)
        )

    def _resume(self) -> tuple[list[_Chunk], dict[int, tuple[int, int, bool]], _Found]:
        """The chunks a checkpoint planned (empty when there is none), the ones it finished, and
        the keys they found differing; the chunks are reused as planned, so rows written or
        statistics refreshed since do not move them."""
        done: dict[int, tuple[int, int, bool]] = {}
        found = _Found()
        path = self.spec.checkpoint
        if not path or not os.path.exists(path):
            return [], done, found
        try:
            with open(path, encoding="utf-8") as handle:  # not UTF-8 text: a ValueError
                lines = [line for line in handle if line.strip()]
            header = json.loads(lines[0]) if lines else {}
            if header.get("fingerprint") != self._fingerprint():
                raise InvalidInput(
                    f"checkpoint {path} was written by a different audit (other databases,"
                    " table, columns or options); delete it or give another --checkpoint"
                )
            edges = [self._key_from_json(edge) for edge in header["edges"]]
            for line in lines[1:]:
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    break  # a line cut short by a crash: that chunk runs again
                done[int(entry["chunk"])] = (entry["rows"][0], entry["rows"][1], entry["differed"])
                found.unread.update(self._key_from_json(k) for k in entry["keys"])
        except (KeyError, TypeError, ValueError, IndexError) as error:
            if isinstance(error, InvalidInput):
                raise
            raise InvalidInput(
                f"checkpoint {path} is not an audit checkpoint; delete it or give another"
                " --checkpoint"
            ) from None
        return self._chunks(edges), done, found

    # -- running ------------------------------------------------------------------------------

    def run(self) -> AuditReport:
        started = time.time()
        self._collations()
        chunks, done, found = self._resume()
        fresh = not chunks
        if fresh:
            chunks = self._plan()
        lock = threading.Lock()
        totals = [0, 0]
        for rows_source, rows_target, differed in done.values():
            totals[0] += rows_source
            totals[1] += rows_target
            self._tally = [self._tally[0] + 1, self._tally[1] + int(differed)]
        todo = [i for i in range(len(chunks)) if i not in done]
        if self.progress:
            self.progress(self._tally[0], len(chunks))
        limit = self.spec.max_rows_per_second
        began = time.monotonic()
        workers = self.spec.workers
        checkpoint = self._open_checkpoint(chunks, fresh=fresh)

        def one(index: int) -> None:
            if limit:
                with lock:
                    ahead = sum(totals) / 2 / limit - (time.monotonic() - began)
                if ahead > 0:
                    time.sleep(ahead)
            rows_source, rows_target, part, differed = self._chunk(chunks[index], side_pool)
            with lock:
                totals[0] += rows_source
                totals[1] += rows_target
                self._tally = [self._tally[0] + 1, self._tally[1] + int(differed)]
                found.missing.update(part.missing)
                found.extra.update(part.extra)
                found.changed.update(part.changed)
                if checkpoint is not None:
                    keys = [*part.missing, *part.extra, *part.changed]
                    entry = {
                        "chunk": index,
                        "rows": [rows_source, rows_target],
                        "differed": differed,
                        "keys": [[value_json(v) for v in k] for k in keys],
                    }
                    checkpoint.write(json.dumps(entry) + "\n")
                    checkpoint.flush()
                if self.progress:
                    self.progress(self._tally[0], len(chunks))

        try:
            with (
                ThreadPoolExecutor(workers, thread_name_prefix="cutover-audit") as chunk_pool,
                ThreadPoolExecutor(workers, thread_name_prefix="cutover-audit-target") as side_pool,
            ):
                for future in [chunk_pool.submit(one, i) for i in todo]:
                    future.result()
        finally:
            if checkpoint is not None:
                checkpoint.close()
        self.source.rows, self.target.rows = totals
        diffs, settled = self._recheck(found)
        report = self._report(diffs, settled, started, len(chunks), self._tally[1])
        if self.spec.checkpoint and os.path.exists(self.spec.checkpoint):
            os.remove(self.spec.checkpoint)  # finished: the next audit starts afresh
        return report

    def _open_checkpoint(self, chunks: list[_Chunk], *, fresh: bool) -> Any:
        path = self.spec.checkpoint
        if not path:
            return None
        if fresh:
            header = {
                "format": "cutover-audit-checkpoint/1",
                "fingerprint": self._fingerprint(),
                "edges": [self._edge_json(chunk.lo) for chunk in chunks[1:]],
            }
            handle = open(path, "w", encoding="utf-8")  # noqa: SIM115 - closed by run()
            handle.write(json.dumps(header) + "\n")
            handle.flush()
            return handle
        return open(path, "a", encoding="utf-8")

    def _recheck(self, found: _Found) -> tuple[list[Diff], int]:
        """Match rows across chunks, then read every difference again until it holds still."""
        for key in list(found.missing):
            if key in found.extra:
                ours, theirs = found.missing.pop(key), found.extra.pop(key)
                if ours != theirs and self._changed_columns(ours, theirs):
                    found.changed[key] = (ours, theirs)
        seen: dict[tuple[Any, ...], tuple[tuple[Any, ...] | None, tuple[Any, ...] | None]] = {}
        for key, ours in found.missing.items():
            seen[key] = (ours, None)
        for key, theirs in found.extra.items():
            seen[key] = (None, theirs)
        seen.update(found.changed)
        unread = found.unread - set(seen)
        settled = 0
        confirmed: dict[tuple[Any, ...], tuple[tuple[Any, ...] | None, tuple[Any, ...] | None]] = {}
        pending = list(seen) + list(unread)
        # Both sides read at once: the rows to read again can be a good part of the table.
        with ThreadPoolExecutor(1, thread_name_prefix="cutover-audit-target") as pool:
            for round_ in range(_RECHECKS + 1):
                if not pending:
                    break
                if round_:
                    time.sleep(self.spec.recheck_delay)
                ours_now, theirs_now = self._read_both(pending, pool)
                still: list[tuple[Any, ...]] = []
                for key in pending:
                    now = (ours_now.get(key), theirs_now.get(key))
                    if self._same(now[0], now[1]):
                        settled += 1 if key in seen else 0
                        seen.pop(key, None)
                        continue
                    before = seen.get(key)
                    if before is not None and self._stable(before, now):
                        confirmed[key] = now
                        continue
                    seen[key] = now
                    still.append(key)
                pending = still
        diffs: list[Diff] = []
        for key, (ours, theirs) in confirmed.items():
            diffs.append(self._diff(key, ours, theirs, pending=False))
        for key in pending:  # still moving after every recheck
            ours, theirs = seen[key]
            diffs.append(self._diff(key, ours, theirs, pending=True))
        return diffs, settled

    def _same(self, ours: tuple[Any, ...] | None, theirs: tuple[Any, ...] | None) -> bool:
        if ours is None or theirs is None:
            return ours is theirs
        return ours == theirs or not self._changed_columns(ours, theirs)

    @staticmethod
    def _stable(
        before: tuple[tuple[Any, ...] | None, tuple[Any, ...] | None],
        now: tuple[tuple[Any, ...] | None, tuple[Any, ...] | None],
    ) -> bool:
        def shown(row: tuple[Any, ...] | None) -> Any:
            return None if row is None else [value_json(v) for v in row]

        if before == now:  # the common case; NaN (never equal to itself) takes the long way
            return True
        return all(shown(a) == shown(b) for a, b in zip(before, now, strict=True))

    def _diff(
        self,
        key: tuple[Any, ...],
        ours: tuple[Any, ...] | None,
        theirs: tuple[Any, ...] | None,
        *,
        pending: bool,
    ) -> Diff:
        names = [c.name for c, _ in self.columns]

        def shown(row: tuple[Any, ...] | None) -> dict[str, Any] | None:
            if row is None:
                return None
            return {n: value_json(v) for n, v in zip(names, row, strict=False)}

        tenant = None
        if self.tenant is not None:
            row = ours if ours is not None else theirs
            assert row is not None
            value = row[-1]
            tenant = None if value is None else str(value_json(value))
        if pending:
            kind, columns = "pending", ()
        elif theirs is None:
            kind, columns = "missing", ()
        elif ours is None:
            kind, columns = "extra", ()
        else:
            kind, columns = "changed", self._changed_columns(ours, theirs)
        return Diff(kind, key, tenant, columns, shown(ours), shown(theirs))

    def _report(
        self, diffs: list[Diff], settled: int, started: float, chunks: int, differing: int
    ) -> AuditReport:
        counts = dict.fromkeys(KINDS, 0)
        tenants: dict[str, dict[str, int]] = {}
        for diff in diffs:
            counts[diff.kind] += 1
            if self.tenant is not None:
                tenant = NULL_TENANT if diff.tenant is None else diff.tenant
                per = tenants.setdefault(tenant, dict.fromkeys(KINDS, 0))
                per[diff.kind] += 1
        counts["drift"] = counts["missing"] + counts["extra"] + counts["changed"]
        order = {kind: i for i, kind in enumerate(KINDS)}
        try:  # by kind, then in key order (1, 2, 10), the lowest keys kept by --max-diffs
            diffs.sort(key=lambda d: (order[d.kind], d.key))
        except TypeError:  # keys that do not compare (unreadable values): by their text
            diffs.sort(key=lambda d: (order[d.kind], [str(value_json(v)) for v in d.key]))

        def side(s: _Side) -> dict[str, Any]:
            return {"url": s.url, "table": s.name, "dialect": s.dialect, "rows": s.rows}

        def described(pair: tuple[_Column, _Column]) -> dict[str, Any]:
            described = {"source": pair[0].name, "target": pair[1].own, "kind": pair[0].kind.value}
            if pair[0].tolerance is not None:
                described["tolerance"] = pair[0].tolerance
            return described

        return AuditReport(
            source=side(self.source),
            target=side(self.target),
            key=tuple(c.name for c, _ in self.key),
            key_columns=tuple(described(pair) for pair in self.key),
            columns=tuple(described(pair) for pair in self.columns),
            where=self.source.where,
            target_where=self.target.where,
            tenant_column=self.spec.tenant_column,
            counts=counts,
            tenants=dict(sorted(tenants.items())),
            diffs=tuple(diffs[: self.spec.max_diffs]),
            max_diffs=self.spec.max_diffs,
            started_at=started,
            finished_at=time.time(),
            chunks={"total": chunks, "differing": differing},
            settled=settled,
        )

    def close(self) -> None:
        self.source.close()
        self.target.close()


def load_report(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The audit report JSON in ``path``, checked to be one this module reads."""
    name = os.fspath(path)
    try:
        text = Path(name).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidInput(
            f"no audit report at {name}; write one with `cutover audit ... --json {name}`"
        ) from None
    except UnicodeDecodeError:
        raise InvalidInput(
            f"{name} is not JSON (not even UTF-8 text); give the file that `cutover audit --json`"
            " wrote"
        ) from None
    except OSError as error:
        raise InvalidInput(f"cannot read the audit report {name}: {error.strerror}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise InvalidInput(
            f"{name} is not JSON ({error.msg} at line {error.lineno}); give the file that"
            " `cutover audit --json` wrote"
        ) from None
    check_report(data, name)
    return data


def check_report(data: Any, name: str) -> None:
    """Refuse what is not an audit report of the format this version writes."""
    if not isinstance(data, Mapping) or "format" not in data:
        raise InvalidInput(
            f"{name} is not an audit report (no 'format' field); give the file that"
            " `cutover audit --json` wrote"
        )
    fmt = data["format"]
    if isinstance(fmt, str) and fmt.startswith("cutover-audit/") and fmt != FORMAT:
        raise InvalidInput(
            f"{name} has audit report format {fmt!r}, which this version does not read"
            f" ({FORMAT}); run the audit again with this version of cutover"
        )
    if fmt != FORMAT:
        raise InvalidInput(
            f"{name} is not an audit report (format {fmt!r}); give the file that"
            " `cutover audit --json` wrote"
        )


def audit(spec: AuditSpec, progress: Callable[[int, int], None] | None = None) -> AuditReport:
    """Compare ``spec.table`` in two databases and report every row that differs.

    ``progress(done, total)`` is called as chunks finish. Bad input (an unknown table or
    column, no key, duplicate keys, an unusable checkpoint) raises InvalidInput."""
    job = _Audit(spec, progress)
    try:
        return job.run()
    finally:
        job.close()
