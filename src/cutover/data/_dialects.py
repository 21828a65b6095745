"""Connecting to the databases a data migration spans, and the SQL each one hashes rows with.

PostgreSQL 14 and later hash rows as typed values with the types' own 64-bit hashes; MySQL,
MariaDB and older PostgreSQL hash an unambiguous text encoding with MD5; SQLite rows are
compared in Python. Every audit connection is read-only and speaks UTC, and every value is
read as the database stored it (:func:`stored`).
"""

from __future__ import annotations

import abc
import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from cutover.data._encoding import Kind
from cutover.errors import InvalidInput
from cutover.urls import as_url, redact_url, scrub

_DRIVERS = {
    "postgresql": "postgresql+psycopg",
    "postgres": "postgresql+psycopg",
    "postgresql+psycopg": "postgresql+psycopg",
    "postgresql+psycopg2": "postgresql+psycopg2",
    "mysql": "mysql+pymysql",
    "mysql+pymysql": "mysql+pymysql",
    "mariadb": "mariadb+pymysql",
    "mariadb+pymysql": "mariadb+pymysql",
    "sqlite": "sqlite",
    "sqlite+pysqlite": "sqlite",
}


def database_url(url: str | os.PathLike[str], role: str = "database") -> str:
    """The SQLAlchemy URL for what a user wrote: a URL of a supported engine or an SQLite path."""
    text = os.fspath(url).strip()
    if not text:
        raise InvalidInput(f"the {role} URL is empty; give postgresql://, mysql:// or sqlite:///")
    text = as_url(text, f"the {role} URL")  # a libpq keyword string is PostgreSQL
    scheme, sep, rest = text.partition("://")
    if not sep:
        return "sqlite:///" + text
    driver = _DRIVERS.get(scheme.lower())
    if driver is None:
        raise InvalidInput(
            f"unsupported {role} URL scheme {scheme!r}; use postgresql://, mysql://,"
            " mariadb:// or sqlite:///"
        )
    return f"{driver}://{rest}"


POSTGRES_SESSION = (
    "SET TIME ZONE 'UTC'",
    "SET DateStyle = 'ISO, YMD'",
    "SET IntervalStyle = 'postgres'",
)
"""How a PostgreSQL session reads and writes times and intervals as text: cutover's own, and
those of the scripts it writes, so that a value read in one is the same value in the other."""

MYSQL_SESSION = ("SET time_zone = '+00:00'", "SET NAMES utf8mb4")
"""The same for MySQL and MariaDB."""


def _on_connect(dialect: str, read_only: bool) -> list[str]:
    if dialect == "postgresql":
        statements = [*POSTGRES_SESSION, "SET extra_float_digits = 1"]
        if read_only:
            statements.append("SET default_transaction_read_only = on")
        return statements
    if dialect in ("mysql", "mariadb"):
        statements = [MYSQL_SESSION[0]]
        if read_only:
            statements.append("SET SESSION TRANSACTION READ ONLY")
        return statements
    return ["PRAGMA query_only = ON"] if read_only else []


def connect(
    url: str | os.PathLike[str], role: str, *, pool_size: int = 4, read_only: bool = True
) -> sa.Engine:
    """An engine on ``url`` whose connections speak UTC and, by default, cannot write.

    A missing driver or an unreachable server is bad input naming the ``role`` (source or
    target) and how to fix it."""
    full = database_url(url, role)
    if full.startswith("sqlite"):
        path = sa.engine.make_url(full).database
        if path and path != ":memory:" and not os.path.exists(path):
            raise InvalidInput(f"the {role} database file {path} does not exist; check --{role}")
    options: dict[str, Any] = {"pool_pre_ping": True}
    if not full.startswith("sqlite"):
        options.update(pool_size=pool_size, max_overflow=pool_size)
    try:
        engine = sa.create_engine(full, **options)
    except ImportError as error:
        extra = "postgres" if full.startswith("postgresql") else "mysql"
        raise InvalidInput(
            f"the {role} database needs its driver ({error.name}): pip install 'cutover[{extra}]'"
        ) from None
    except (sa.exc.ArgumentError, ValueError) as error:  # ValueError: a port not a number
        raise InvalidInput(f"the {role} URL is not valid: {scrub(str(error), full)}") from None
    statements = _on_connect(engine.dialect.name, read_only)
    exact = engine.dialect.driver == "psycopg"

    @sa.event.listens_for(engine, "connect")
    def _session(dbapi_connection: Any, _record: Any) -> None:
        if exact:
            for name, loader in _psycopg_loaders().items():
                dbapi_connection.adapters.register_loader(name, loader)
        cursor = dbapi_connection.cursor()
        for statement in statements:
            cursor.execute(statement)
        cursor.close()
        if engine.dialect.name == "postgresql":
            dbapi_connection.commit()

    try:
        with engine.connect() as conn:
            if engine.dialect.name == "sqlite":  # a file that is no database fails on a read
                conn.exec_driver_sql("SELECT count(*) FROM sqlite_master")
    except sa.exc.DBAPIError as error:
        engine.dispose()
        raise InvalidInput(
            f"cannot connect to the {role} database at {redact_url(full)}:"
            f" {scrub(first_line(error), full)}; check --{role}"
        ) from None
    return engine


@functools.cache
def _psycopg_loaders() -> dict[str, type]:
    """Loaders that read dates and times Python cannot hold (infinity, years before 1 or after
    9999, '24:00:00') as PostgreSQL's text instead of failing; every other value as usual."""
    import psycopg
    from psycopg.adapt import Loader
    from psycopg.pq import Format

    def or_text(name: str) -> type:
        oid = psycopg.adapters.types[name].oid
        typed = psycopg.adapters.get_loader(oid, Format.TEXT)
        assert typed is not None

        class OrText(Loader):
            def __init__(self, oid: int, context: Any = None) -> None:
                super().__init__(oid, context)
                self._typed = typed(oid, context)

            def load(self, data: Any) -> Any:
                try:
                    return self._typed.load(data)
                except psycopg.DataError:
                    return bytes(data).decode()

        return OrText

    return {name: or_text(name) for name in ("date", "time", "timestamp", "timestamptz")}


def identifier(dialect: sa.Dialect, name: str) -> str:
    """``name`` as an identifier in SQL text of ``dialect``: always quoted, so that no column
    name is read as a keyword or folded to lower case."""
    preparer = dialect.identifier_preparer
    end = preparer.final_quote
    return preparer.initial_quote + name.replace(end, end + end) + end


@dataclass(frozen=True, slots=True)
class Hashed:
    """A column as the row hash sees it: its SQL, its compared kind and tolerance."""

    sql: str
    kind: Kind
    tolerance: float | None = None
    own_kind: Kind | None = None  # the column's own kind on this side, when it differs
    nullable: bool = True
    infinite: bool = True  # a numeric column either side lets hold ±Infinity


BUCKET_WIDTH = 16
"""Keys per bucket when a differing chunk is narrowed down before its rows are read."""

_GRID = 1e15
"""Tolerance grids cover values up to this many tolerances from zero (exact in a float)."""


class Pushdown(abc.ABC):
    """SQL that hashes rows inside one engine; subclasses say how."""

    null = "'\\N'"

    @abc.abstractmethod
    def field(self, column: Hashed) -> str:
        """One column as text for the row's encoding, NULL as its own token."""

    @abc.abstractmethod
    def row_hash(self, columns: Sequence[Hashed]) -> str:
        """A 64-bit hash of the row's columns."""

    @abc.abstractmethod
    def binary(self, column_sql: str) -> str:
        """The column compared by its bytes, whatever its collation."""

    @abc.abstractmethod
    def bucket(self, key: Sequence[Hashed], buckets: int) -> str:
        """A small number that depends on the key alone: runs of ``BUCKET_WIDTH`` consecutive
        integer keys, else a hash of the key modulo ``buckets``."""


class PostgresPushdown(Pushdown):
    def field(self, column: Hashed) -> str:
        c, kind, tolerance = column.sql, column.kind, column.tolerance
        if tolerance is not None and kind in (Kind.NUMERIC, Kind.FLOAT, Kind.INTEGER):
            # The value's cell on a grid as wide as the tolerance: values further apart than
            # the tolerance never share a cell. Huge values hash as themselves instead.
            cast = "float8" if kind is Kind.FLOAT else "numeric"
            text = (
                f"CASE WHEN abs({c}) < {tolerance * _GRID!r}"
                f" THEN round(({c})::{cast} / {tolerance!r})::bigint::text"
                f" ELSE 'H' || ({c})::text END"
            )
        elif kind is Kind.NUMERIC:
            raw = f"(({c})::numeric)::text"
            text = (
                f"CASE WHEN strpos({raw}, '.') > 0"
                f" THEN rtrim(rtrim({raw}, '0'), '.') ELSE {raw} END"
            )
        elif kind is Kind.FLOAT:
            text = f"({c})::float8::text"
        elif kind is Kind.BOOLEAN:
            text = f"(({c})::int)::text"
        elif kind is Kind.TEXT:
            text = f"'T' || length({c})::text || ':' || ({c})::text"
        elif kind is Kind.BYTES:
            text = f"encode({c}, 'hex')"
        elif kind is Kind.TIMESTAMPTZ and column.own_kind is not Kind.TIMESTAMP:
            text = f"({c} AT TIME ZONE 'UTC')::text"  # naive timestamps count as UTC
        else:
            text = f"({c})::text"
        return f"coalesce({text}, {self.null})"

    def row_hash(self, columns: Sequence[Hashed]) -> str:
        encoded = " || '|' || ".join(self.field(column) for column in columns) or "''"
        return f"('x' || substr(md5({encoded}), 1, 16))::bit(64)::bigint"

    def binary(self, column_sql: str) -> str:
        return f'{column_sql} COLLATE "C"'

    def bucket(self, key: Sequence[Hashed], buckets: int) -> str:
        if len(key) == 1 and key[0].kind is Kind.INTEGER:
            return f"(({key[0].sql})::bigint / {BUCKET_WIDTH})"
        encoded = " || '|' || ".join(self.field(column) for column in key)
        return f"mod(('x' || substr(md5({encoded}), 1, 7))::bit(28)::int, {buckets})"


class TypedPostgresPushdown(PostgresPushdown):
    """PostgreSQL 14 and later: the row hashed as typed values, each by its type's own 64-bit
    hash (the functions hash partitioning relies on), with no text rendering at all.

    Each type's hash agrees with its equality: 1.0 and 1.00, or 0.0 and -0.0, hash alike;
    text hashes by its bytes (the default collation is deterministic); NULL is its own value.
    Several times cheaper than MD5 over the row's text, and as exact."""

    def value(self, column: Hashed) -> str:
        c, kind, tolerance = column.sql, column.kind, column.tolerance
        if tolerance is not None and kind in (Kind.NUMERIC, Kind.FLOAT, Kind.INTEGER):
            return super().field(column)  # the grid cell, as text
        if kind is Kind.TIMESTAMPTZ and column.own_kind is Kind.TIMESTAMP:
            return f"({c} AT TIME ZONE 'UTC')"  # naive timestamps count as UTC
        if kind is Kind.BOOLEAN:
            return f"(({c})::int)::bigint"  # true and 1 alike; 2 is not a boolean
        if kind is Kind.TEXT:  # by bytes even under a case-insensitive collation
            return f'(({c})::text COLLATE "C")'
        return f"({c})::{_PG_TYPES.get(kind, 'text')}"

    def column_hash(self, column: Hashed, seed: int) -> str:
        """The column's value hashed by its type's hash function, called directly (a ROW
        built and taken apart again for every row costs more than all the hashing)."""
        c, kind = column.sql, column.kind
        if column.tolerance is not None and kind in (Kind.NUMERIC, Kind.FLOAT, Kind.INTEGER):
            return f"hashtextextended({self.value(column)}, {seed})"
        if kind is Kind.TIMESTAMPTZ:
            # The instant as the UTC wall clock (audit sessions speak UTC, see ``connect``):
            # timestamptz hashes with timestamp's function, which SQL only calls on a timestamp.
            instant = f"({c})" if column.own_kind is Kind.TIMESTAMP else f"(({c})::timestamptz)"
            return f"timestamp_hash_extended({instant}::timestamp, {seed})"
        if kind is Kind.NUMERIC:
            # hash_numeric_extended is not mixed enough to be XORed with other columns: it
            # gives NaN, Infinity and -Infinity the seed and zero the seed minus one, and XORs
            # the weight into a hash of the digits (1 and 10000 differ in a few low bits). Its
            # result is mixed once more, as a seed. NaN, Infinity and -Infinity, whose scale is
            # NULL, hash as their text where either side can hold an infinity.
            v = self.value(column)
            numeric = f"hash_numeric_extended({v}, {seed})"
            if column.infinite:
                numeric = (
                    f"CASE WHEN scale({v}) IS NULL THEN hashtextextended(({v})::text, {seed})"
                    f" ELSE {numeric} END"
                )
            return f"hashint8extended(0, {numeric})"
        if kind in (Kind.INTEGER, Kind.BOOLEAN):
            # The value as the seed of a hash of 0, which mixes all 64 bits: hashint8extended
            # folds its first argument to 32, so 1 and 4294967296 would hash alike.
            return f"hashint8extended(0, {self.value(column)} # {seed})"
        function = _PG_HASHES.get(_PG_TYPES.get(kind, "text"))
        if function is None:  # no hash function SQL can call with this type: a ROW of one
            return f"hash_record_extended(ROW({self.value(column)}), {seed})"
        return f"{function}({self.value(column)}, {seed})"

    def row_hash(self, columns: Sequence[Hashed]) -> str:
        # Each column hashed with a seed of its own (its position), NULL as a token of its own
        # (hash functions give NULL for NULL), the columns' hashes combined by XOR and the
        # result mixed once more, given as the seed of a hash of 0: a seed enters whole, where
        # hashint8extended folds its first argument to 32 bits. So a chunk's sum changes with
        # any change of any row, values swapped between rows included.
        parts = [
            f"coalesce({self.column_hash(column, _seed(2 * i + 1))}, {_seed(2 * i + 2)})"
            for i, column in enumerate(columns)
        ]
        return f"hashint8extended(0, {' # '.join(parts) or '0'})"

    def bucket(self, key: Sequence[Hashed], buckets: int) -> str:
        if len(key) == 1 and key[0].kind is Kind.INTEGER:
            return super().bucket(key, buckets)
        values = ", ".join(self.value(column) for column in key)
        return f"mod(hash_record_extended(ROW({values}), 1), {buckets})"


def _seed(n: int) -> int:
    """The ``n``-th of a sequence of well spread signed 64-bit numbers (a Weyl sequence)."""
    value = (n * 0x9E3779B97F4A7C15) & ((1 << 64) - 1)
    return value - (1 << 64) if value >= 1 << 63 else value


_PG_HASHES = {
    "float8": "hashfloat8extended",
    "text": "hashtextextended",
    "timestamp": "timestamp_hash_extended",
    "time": "time_hash_extended",
    "uuid": "uuid_hash_extended",
}
"""The extended hash function of each type a value is cast to that SQL can call (date's takes
an integer, bytea's an internal)."""


_PG_TYPES = {
    Kind.INTEGER: "bigint",
    Kind.NUMERIC: "numeric",
    Kind.FLOAT: "float8",
    Kind.TEXT: "text",
    Kind.BYTES: "bytea",
    Kind.TIMESTAMPTZ: "timestamptz",
    Kind.TIMESTAMP: "timestamp",
    Kind.DATE: "date",
    Kind.TIME: "time",
    Kind.UUID: "uuid",
    Kind.JSON: "text",  # as written: jsonb cannot hold all that json can ("\\u0000")
}


class MysqlPushdown(Pushdown):
    null = "'\\\\N'"

    def field(self, column: Hashed) -> str:
        c, kind, tolerance = column.sql, column.kind, column.tolerance
        if tolerance is not None and kind in (Kind.NUMERIC, Kind.FLOAT, Kind.INTEGER):
            text = (
                f"IF(ABS({c}) < {tolerance * _GRID!r},"
                f" CAST(ROUND({c} / {tolerance!r}) AS SIGNED), CONCAT('H', {c}))"
            )
        elif kind is Kind.NUMERIC:
            raw = f"CAST({c} AS CHAR)"
            text = (
                f"IF(LOCATE('.', {raw}) > 0,"
                f" TRIM(TRAILING '.' FROM TRIM(TRAILING '0' FROM {raw})), {raw})"
            )
        elif kind is Kind.BOOLEAN:
            text = f"CAST({c} AS SIGNED)"
        elif kind is Kind.TEXT:
            text = f"CONCAT('T', CHAR_LENGTH({c}), ':', {c})"
        elif kind is Kind.BYTES:
            text = f"HEX({c})"
        elif kind is Kind.FLOAT:
            text = f"CAST({c} + 0e0 AS CHAR)"  # as a double: FLOAT prints only 6 digits
        else:
            text = f"CAST({c} AS CHAR)"
        return f"COALESCE({text}, {self.null})"

    def row_hash(self, columns: Sequence[Hashed]) -> str:
        fields = ", '|', ".join(self.field(column) for column in columns) or "''"
        return f"CAST(CONV(SUBSTRING(MD5(CONCAT({fields})), 1, 16), 16, 10) AS UNSIGNED)"

    def binary(self, column_sql: str) -> str:
        return f"BINARY {column_sql}"

    def bucket(self, key: Sequence[Hashed], buckets: int) -> str:
        if len(key) == 1 and key[0].kind is Kind.INTEGER:
            return f"({key[0].sql} DIV {BUCKET_WIDTH})"
        fields = ", '|', ".join(self.field(column) for column in key)
        return f"MOD(CONV(SUBSTRING(MD5(CONCAT({fields})), 1, 7), 16, 10), {buckets})"


def pushdown(engine: sa.Engine) -> Pushdown | None:
    """How this engine hashes rows itself, or None when rows are compared in Python."""
    dialect = engine.dialect.name
    if dialect == "postgresql":
        version = engine.dialect.server_version_info or (0,)
        return TypedPostgresPushdown() if version >= (14,) else PostgresPushdown()
    if dialect in ("mysql", "mariadb"):
        return MysqlPushdown()
    return None


class _Raw(sa.types.TypeDecorator[Any]):
    """A column type whose values are read as the driver returns them, unconverted, and
    written as given when the driver takes them as they are (text, bytes and numbers): a
    value read from a table goes back into it exactly as it was stored."""

    impl = sa.types.NullType
    cache_ok = True

    def __init__(self, original: sa.types.TypeEngine[Any]) -> None:
        super().__init__()
        self.impl = original  # what the column is (its kind); only reading and writing change

    def result_processor(self, dialect: sa.Dialect, coltype: Any) -> None:
        return None

    def bind_processor(self, dialect: sa.Dialect) -> Any:
        convert = self.impl_instance.dialect_impl(dialect).bind_processor(dialect)
        if convert is None:
            return None

        def process(value: Any) -> Any:
            return value if value is None or isinstance(value, _AS_IS) else convert(value)

        return process


_AS_IS = (str, bytes, int, float)


def raw_type(column_type: sa.types.TypeEngine[Any]) -> sa.types.TypeEngine[Any]:
    """``column_type`` reading and writing values as stored (see :class:`_Raw`)."""
    return column_type if isinstance(column_type, _Raw) else _Raw(column_type)


def stored(column: sa.Column[Any], dialect: str) -> sa.ColumnElement[Any]:
    """The column in a SELECT list, read exactly as the database stored it: no conversion by
    SQLAlchemy (SQLite's text times keep their offsets, its numerics their digits); MySQL's
    FLOAT as the double it holds (the server sends it rounded to six digits otherwise);
    PostgreSQL's intervals, times with a zone and JSON as their text (a timedelta counts a
    month as 30 days, a time drops its offset's seconds, JSON parsed and printed again is other
    text). Dates and times Python cannot hold come as text too (see ``connect``)."""
    element: sa.ColumnElement[Any] = column
    if single_float(column, dialect):
        element = column + sa.literal_column("0e0")
    elif dialect == "postgresql" and _as_text_on_postgres(column.type):
        element = sa.cast(column, sa.Text())
    return sa.type_coerce(element, raw_type(column.type))


def _as_text_on_postgres(column_type: sa.types.TypeEngine[Any]) -> bool:
    from sqlalchemy.dialects.postgresql import INTERVAL

    return isinstance(column_type, sa.JSON | sa.Interval | INTERVAL) or (
        isinstance(column_type, sa.Time) and bool(column_type.timezone)
    )


def as_stored(column: sa.Column[Any], value: Any) -> sa.BindParameter[Any]:
    """``value`` bound for ``column`` as :func:`stored` read it: written unconverted."""
    return sa.bindparam(None, value, type_=raw_type(column.type))


def first_line(error: BaseException) -> str:
    """The first line of a database error, without SQLAlchemy's wrapping."""
    text = str(getattr(error, "orig", None) or error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def reflect(engine: sa.Engine, name: str, role: str, hint: str) -> sa.Table:
    """The table ``name`` (``schema.table`` allowed) as the database describes it; a table
    that is not there is bad input."""
    schema, _, bare = name.rpartition(".")
    dialect = engine.dialect

    def named(_inspector: Any, _table: sa.Table, column: dict[str, Any]) -> None:
        column["name"] = column_name(dialect, column["name"])

    try:
        table = sa.Table(
            bare,
            sa.MetaData(),
            schema=schema or None,
            autoload_with=engine,
            listeners=[("column_reflect", named)],
        )
    except (sa.exc.NoSuchTableError, sa.exc.OperationalError, sa.exc.ProgrammingError):
        shown = redact_url(engine.url.render_as_string(hide_password=False))
        raise InvalidInput(
            f"table {name!r} does not exist in the {role} database {shown}; {hint}"
        ) from None
    return table


def column_name(dialect: sa.Dialect, reflected: str) -> str:
    """A column's name as SQLAlchemy reflected it, as it is: MySQL's reflection keeps the
    backticks of a name doubled as SHOW CREATE TABLE prints them."""
    return reflected.replace("``", "`") if dialect.name in ("mysql", "mariadb") else reflected


def single_float(column: sa.Column[Any], dialect: str) -> bool:
    """A MySQL FLOAT, which the server sends rounded to six digits unless read as a double."""
    return dialect in ("mysql", "mariadb") and type(column.type).__name__ == "FLOAT"


def qualified(engine: sa.Engine, table: sa.Table) -> str:
    """The table's name as SQL would write it, quoted (for ``regclass``)."""
    name = identifier(engine.dialect, table.name)
    return f"{identifier(engine.dialect, table.schema)}.{name}" if table.schema else name


def bytewise_text(engine: sa.Engine, table: sa.Table, column: str) -> bool:
    """Whether the engine orders this text column by its bytes, so a range can use its index."""
    dialect = engine.dialect.name
    with engine.connect() as conn:
        if dialect == "postgresql":
            collation = conn.execute(
                sa.text(
                    "SELECT coalesce(c.collname, d.datcollate) FROM pg_attribute a"
                    " LEFT JOIN pg_collation c"
                    " ON c.oid = a.attcollation AND c.collname <> 'default'"
                    " CROSS JOIN pg_database d"
                    " WHERE d.datname = current_database() AND a.attrelid = CAST(:t AS regclass)"
                    " AND a.attname = :c"
                ),
                {"t": qualified(engine, table), "c": column},
            ).scalar()
            return collation in ("C", "POSIX", "ucs_basic", "C.UTF-8", "C.utf8", "pg_c_utf8")
        if dialect in ("mysql", "mariadb"):
            collation = conn.execute(
                sa.text(
                    "SELECT COLLATION_NAME FROM information_schema.COLUMNS"
                    " WHERE TABLE_SCHEMA = COALESCE(:s, DATABASE()) AND TABLE_NAME = :t"
                    " AND COLUMN_NAME = :c"
                ),
                {"s": table.schema, "t": table.name, "c": column},
            ).scalar()
            return collation is None or str(collation).endswith("_bin")
    return True  # SQLite compares text with BINARY unless told otherwise
