"""What two databases' values mean: column kinds, equality across engines, and JSON forms.

Every value the audit compares goes through :func:`canonical` for its column's kind, so that
engines agree on what "equal" is: numerics by value whatever their scale, timestamps with a
zone in UTC, timestamps without one as written (an offset in stored text included), text and
bytes exactly (never by collation), NULL apart from the empty string.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import math
import uuid
from collections.abc import Callable
from decimal import Context, Decimal, InvalidOperation
from typing import Any

import sqlalchemy as sa


class Kind(enum.StrEnum):
    INTEGER = "integer"
    NUMERIC = "numeric"
    FLOAT = "float"
    BOOLEAN = "boolean"
    TEXT = "text"
    BYTES = "bytes"
    TIMESTAMP = "timestamp"
    TIMESTAMPTZ = "timestamptz"
    DATE = "date"
    TIME = "time"
    UUID = "uuid"
    JSON = "json"


def kind_of(column_type: sa.types.TypeEngine[Any]) -> Kind:
    """The kind of a reflected column type; unknown types compare as their text."""
    if isinstance(column_type, sa.types.TypeDecorator):
        column_type = column_type.impl_instance
        if isinstance(column_type, sa.types.TypeDecorator):  # a type wrapped to read it raw
            column_type = column_type.impl_instance
    name = type(column_type).__name__.upper()
    if isinstance(column_type, sa.Boolean) or name == "BOOLEAN":
        return Kind.BOOLEAN
    if name == "TINYINT" and getattr(column_type, "display_width", None) == 1:
        return Kind.BOOLEAN  # MySQL's BOOL
    if isinstance(column_type, sa.Integer):
        return Kind.INTEGER
    if isinstance(column_type, sa.Float) or name in ("DOUBLE", "REAL", "DOUBLE_PRECISION"):
        return Kind.FLOAT
    if isinstance(column_type, sa.Numeric):
        return Kind.NUMERIC
    if isinstance(column_type, sa.DateTime):
        return Kind.TIMESTAMPTZ if getattr(column_type, "timezone", False) else Kind.TIMESTAMP
    if isinstance(column_type, sa.Date):
        return Kind.DATE
    if isinstance(column_type, sa.Time):
        # A time with an offset compares as written: '10:00+02' is not '10:00+05'.
        return Kind.TEXT if getattr(column_type, "timezone", False) else Kind.TIME
    if isinstance(column_type, sa.Uuid) or name == "UUID":
        return Kind.UUID
    if isinstance(column_type, sa.JSON) or name in ("JSON", "JSONB"):
        return Kind.JSON
    if isinstance(column_type, sa.LargeBinary | sa.types._Binary) or name in ("BYTEA", "BLOB"):
        return Kind.BYTES
    return Kind.TEXT


_WIDER = {
    frozenset((Kind.INTEGER, Kind.NUMERIC)): Kind.NUMERIC,
    frozenset((Kind.INTEGER, Kind.FLOAT)): Kind.FLOAT,
    frozenset((Kind.NUMERIC, Kind.FLOAT)): Kind.FLOAT,
    frozenset((Kind.INTEGER, Kind.BOOLEAN)): Kind.BOOLEAN,
    frozenset((Kind.TEXT, Kind.UUID)): Kind.UUID,
    frozenset((Kind.TEXT, Kind.JSON)): Kind.JSON,
    frozenset((Kind.TIMESTAMP, Kind.TIMESTAMPTZ)): Kind.TIMESTAMPTZ,
    frozenset((Kind.TEXT, Kind.TIMESTAMP)): Kind.TIMESTAMP,
    frozenset((Kind.TEXT, Kind.TIMESTAMPTZ)): Kind.TIMESTAMPTZ,
    frozenset((Kind.TEXT, Kind.DATE)): Kind.DATE,
    frozenset((Kind.TEXT, Kind.TIME)): Kind.TIME,
    frozenset((Kind.TEXT, Kind.NUMERIC)): Kind.NUMERIC,
    frozenset((Kind.TEXT, Kind.INTEGER)): Kind.INTEGER,
    frozenset((Kind.TEXT, Kind.FLOAT)): Kind.FLOAT,
}


def common_kind(source: Kind, target: Kind) -> Kind:
    """The kind both sides are compared as (SQLite declares little, so text yields)."""
    if source is target:
        return source
    return _WIDER.get(frozenset((source, target)), Kind.TEXT)


def _decimal(value: Any) -> Decimal:
    if isinstance(value, Decimal):
        return value
    if isinstance(value, float):
        return Decimal(repr(value))
    return Decimal(str(value).strip())


def _datetime(value: Any) -> dt.datetime:
    if isinstance(value, str):
        return dt.datetime.fromisoformat(value.strip().replace(" ", "T", 1))
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return dt.datetime(value.year, value.month, value.day)
    if not isinstance(value, dt.datetime):
        raise TypeError(value)
    return value


def _timestamp(value: Any) -> dt.datetime:
    """A time with a zone as the instant it is, in UTC (naive times count as UTC)."""
    value = _datetime(value)
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value


def _wall_clock(value: Any) -> dt.datetime | str:
    """A time without a zone as written: its date and time, and the offset that text stored in
    such a column may carry, as part of the value ('12:00+02:00' is neither '10:00' nor
    '10:00+00:00'), in ISO form then."""
    value = _datetime(value)
    return value if value.tzinfo is None else value.isoformat()


def _boolean(value: Any) -> bool:
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("t", "true", "1", "y", "yes"):
            return True
        if text in ("f", "false", "0", "n", "no"):
            return False
        raise ValueError(value)
    if value in (0, 1):  # True, False, 0, 1; a 2 in a MySQL BOOL is no boolean
        return bool(value)
    raise ValueError(value)


def _integer(value: Any) -> int:
    """Integers only losslessly: SQLite keeps 1.5 in an INTEGER column, and 1.5 is not 1."""
    if isinstance(value, int):
        return value
    number = _decimal(value)
    if number != number.to_integral_value():
        raise ValueError(value)
    return int(number)


def _bytes(value: Any) -> bytes:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    raise ValueError(value)  # SQLite keeps text or numbers in a BLOB column as they are


def _text(value: Any) -> str:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "surrogateescape")
    return str(value)


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str | bytes) else value


def _date(value: Any) -> dt.date:
    if isinstance(value, str):
        return dt.date.fromisoformat(value.strip()[:10])
    if isinstance(value, dt.datetime):
        return value.date()
    return value


def _time(value: Any) -> dt.timedelta:
    """A time of day as the duration since midnight: MySQL's TIME is a duration that can be
    negative or longer than a day, and '25:00' must not equal '01:00'."""
    if isinstance(value, dt.timedelta):
        return value
    if isinstance(value, str):  # [-]HH:MM:SS[.ffffff], hours beyond 23 allowed
        text = value.strip()
        sign = -1 if text.startswith("-") else 1
        hours, minutes, seconds = text.lstrip("-").split(":")
        return sign * dt.timedelta(hours=int(hours), minutes=int(minutes), seconds=float(seconds))
    return dt.timedelta(
        hours=value.hour, minutes=value.minute, seconds=value.second, microseconds=value.microsecond
    )


def _float(value: Any) -> float:
    return float(value)


def _uuid(value: Any) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(_text(value).strip())


_CANONICAL: dict[Kind, Callable[[Any], Any]] = {
    Kind.INTEGER: _integer,
    Kind.NUMERIC: _decimal,
    Kind.FLOAT: _float,
    Kind.BOOLEAN: _boolean,
    Kind.TEXT: _text,
    Kind.BYTES: _bytes,
    Kind.TIMESTAMP: _wall_clock,
    Kind.TIMESTAMPTZ: _timestamp,
    Kind.DATE: _date,
    Kind.TIME: _time,
    Kind.UUID: _uuid,
    Kind.JSON: _json,
}


class Unreadable:
    """A value that could not be read as its column's kind: equal only to the same raw value."""

    __slots__ = ("raw",)

    def __init__(self, raw: Any) -> None:
        self.raw = raw

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Unreadable) and other.raw == self.raw

    def __hash__(self) -> int:
        return hash(repr(self.raw))

    def __repr__(self) -> str:
        return f"Unreadable({self.raw!r})"


def canonical(kind: Kind, value: Any) -> Any:
    """The value as its kind means it; None stays None (NULL is never equal to '')."""
    if value is None or isinstance(value, Unreadable):
        return value
    try:
        return _CANONICAL[kind](value)
    except (ValueError, TypeError, InvalidOperation, json.JSONDecodeError):
        return Unreadable(value)


def equal(kind: Kind, a: Any, b: Any, tolerance: float | None = None) -> bool:
    """Whether two canonical values are the same (within ``tolerance`` for numbers)."""
    if a is None or b is None:
        return a is b
    if kind is Kind.FLOAT and isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        if tolerance is not None and math.isfinite(a) and math.isfinite(b):
            return abs(a - b) <= tolerance
        return a == b
    if isinstance(a, Decimal) and isinstance(b, Decimal) and (a.is_nan() or b.is_nan()):
        return a.is_nan() and b.is_nan()  # NaN equals NaN, as PostgreSQL's numeric says
    if tolerance is not None and isinstance(a, Decimal | int) and isinstance(b, Decimal | int):
        return abs(_decimal(a) - _decimal(b)) <= _decimal(tolerance)
    return bool(a == b)


def to_json(value: Any) -> Any:
    """A JSON form of a canonical value that a person can read and reconcile can read back."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, Decimal):
        if value.is_finite():
            # Trailing zeros dropped at the value's own precision, never rounded to 28 digits.
            exact = Context(prec=max(1, len(value.as_tuple().digits)))
            text = format(value.normalize(exact), "f")
            return "0" if value == 0 else text
        return str(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):  # a time of day, or MySQL's longer TIME
        sign, rest = ("-", -value) if value < dt.timedelta(0) else ("", value)
        hours, remainder = divmod(rest, dt.timedelta(hours=1))
        text = f"{sign}{hours:02d}:{(dt.datetime.min + remainder).time().isoformat()[3:]}"
        return text
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, Unreadable):
        return to_json(value.raw) if not isinstance(value.raw, Unreadable) else repr(value.raw)
    if isinstance(value, dict | list):
        return value
    return str(value)


def from_json(kind: Kind, value: Any) -> Any:
    """The Python value behind a JSON form written by :func:`to_json` for this kind."""
    if value is None:
        return None
    if kind is Kind.BYTES:
        return bytes.fromhex(value)
    if kind is Kind.JSON:
        return value
    if kind is Kind.TIMESTAMPTZ:
        stamp = canonical(kind, value)
        return stamp.replace(tzinfo=dt.UTC) if isinstance(stamp, dt.datetime) else stamp
    return canonical(kind, value)


def to_param(kind: Kind, value: Any) -> Any:
    """A canonical value as a bound parameter for a column of ``kind`` on some engine."""
    if value is None:
        return None
    if isinstance(value, Unreadable):
        return value.raw  # as stored: 'infinity' in a timestamp column, say
    if kind is Kind.TEXT:
        return _text(value)
    if kind is Kind.UUID and not isinstance(value, uuid.UUID):
        return _uuid(value)
    if kind is Kind.TIMESTAMPTZ and isinstance(value, dt.datetime) and value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value
