"""Typed JSON: values a codec meets (bytes, Decimal, datetimes, tuples, sets, dataclasses...)
written as JSON and read back as the same values, types included.

Plain JSON values stand for themselves, so a file of strings, numbers, lists and string-keyed
objects reads as it would anywhere. Everything else is a one-key object whose key starts with
``$`` and names the type::

    b"\\x00\\xff"                      {"$bytes": "AP8="}
    Decimal("1.10")                  {"$decimal": "1.10"}
    datetime(2026, 1, 2, 3, 4, tzinfo=+01:00)
                                     {"$datetime": "2026-01-02T03:04:00+01:00"}
    (1, 2)                           {"$tuple": [1, 2]}
    {1: "a"}                         {"$dict": [[1, "a"]]}
    float("nan"), float("inf")       {"$float": "nan"}, {"$float": "inf"}
    Point(x=1, y=2)  (a dataclass)   {"$dataclass": ["geometry:Point", {"x": 1, "y": 2}]}
    Color.RED        (an enum)       {"$enum": ["palette:Color", "RED"]}

A string-keyed object that has a key starting with ``$`` is written as ``$dict`` too, so no
user data is ever read as a tag. Dataclasses, named tuples and enums are found again by their
import path, so they must be importable (not defined inside a function). Anything else (an
arbitrary object, a function, a file, a generator) is refused with :class:`Unencodable`, which
names the value's type and where it sits.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import decimal
import enum
import importlib
import json
import math
import uuid
import zoneinfo
from collections.abc import Callable
from typing import Any

from cutover.compare import format_path
from cutover.errors import InvalidInput

_SUPPORTED = (
    "JSON values, bytes, bytearray, Decimal, datetime, date, time, timedelta, UUID, tuples,"
    " sets, frozensets, dicts with any keys, dataclasses, named tuples and enums"
)


class Unencodable(InvalidInput):
    """A value typed JSON cannot write: the message names its type and its path."""


class Undecodable(InvalidInput):
    """Text that is not typed JSON, or names a type that cannot be found again."""


def type_path(kind: type) -> str:
    """``module:QualName`` of a class, the form ``--from`` and ``$dataclass`` use."""
    return f"{kind.__module__}:{kind.__qualname__}"


def _importable(kind: type, path: list[str | int]) -> str:
    name = type_path(kind)
    if "<locals>" in kind.__qualname__:
        raise Unencodable(
            f"cannot encode the {kind.__qualname__} at {format_path(path)}: it is defined inside"
            " a function, so it cannot be imported back; define it at module level"
        )
    try:
        found = resolve_type(name)
    except Undecodable:
        found = None
    if found is not kind:
        raise Unencodable(
            f"cannot encode the {name} at {format_path(path)}: importing {name} does not give"
            " back this class; define it at module level of an importable module"
        )
    return name


def _float(value: float) -> Any:
    if math.isnan(value):
        return {"$float": "nan"}
    if math.isinf(value):
        return {"$float": "inf" if value > 0 else "-inf"}
    return value


def _datetime(value: dt.datetime) -> Any:
    text = value.isoformat()
    zone = value.tzinfo
    if isinstance(zone, zoneinfo.ZoneInfo) and zone.key:
        return {"$datetime": [text, zone.key]}  # the zone, not only today's offset
    return {"$datetime": text}


def encode(value: Any, path: list[str | int] | None = None) -> Any:
    """``value`` as JSON-ready data that :func:`decode` turns back into an equal value of the
    same types. Raises :class:`Unencodable` for what it cannot write."""
    here: list[str | int] = [] if path is None else path
    kind = type(value)
    if value is None or kind is bool or kind is str or kind is int:
        return value
    if kind is float:
        return _float(value)
    if isinstance(value, enum.Enum):
        return {"$enum": [_importable(kind, here), value.name]}
    if kind is list:
        return [_child(item, here, index) for index, item in enumerate(value)]
    if kind is dict:
        if all(type(key) is str and not key.startswith("$") for key in value):
            return {key: _child(item, here, key) for key, item in value.items()}
        return {"$dict": [[encode(key, [*here, "<key>"]), _child(item, here, key)]
                          for key, item in value.items()]}  # fmt: skip
    if kind is tuple:
        return {"$tuple": [_child(item, here, index) for index, item in enumerate(value)]}
    if isinstance(value, tuple) and hasattr(kind, "_fields"):  # a named tuple
        return {
            "$namedtuple": [
                _importable(kind, here),
                [_child(item, here, index) for index, item in enumerate(value)],
            ]
        }
    if kind is set or kind is frozenset:
        items = [_child(item, here, "<item>") for item in value]
        # Sorted by their JSON so that a file written twice reads the same: diff-friendly.
        items.sort(key=lambda item: json.dumps(item, sort_keys=True))
        return {"$set" if kind is set else "$frozenset": items}
    if kind is bytes:
        return {"$bytes": base64.b64encode(value).decode("ascii")}
    if kind is bytearray:
        return {"$bytearray": base64.b64encode(value).decode("ascii")}
    if kind is decimal.Decimal:
        return {"$decimal": str(value)}
    if kind is dt.datetime:
        return _datetime(value)
    if kind is dt.date:
        return {"$date": value.isoformat()}
    if kind is dt.time:
        if isinstance(value.tzinfo, zoneinfo.ZoneInfo) and value.tzinfo.key:
            return {"$time": [value.replace(tzinfo=None).isoformat(), value.tzinfo.key]}
        return {"$time": value.isoformat()}
    if kind is dt.timedelta:
        return {"$timedelta": [value.days, value.seconds, value.microseconds]}
    if kind is uuid.UUID:
        return {"$uuid": str(value)}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        name = _importable(kind, here)
        fields = {
            field.name: _child(getattr(value, field.name), here, field.name)
            for field in dataclasses.fields(value)
        }
        return {"$dataclass": [name, fields]}
    what = "a function" if callable(value) and not isinstance(value, type) else "a value"
    raise Unencodable(
        f"cannot encode {what} of type {kind.__module__}.{kind.__qualname__} at"
        f" {format_path(here)}: typed JSON holds {_SUPPORTED}; pass one of those instead"
    )


def _child(value: Any, path: list[str | int], step: str | int) -> Any:
    path.append(step)
    try:
        return encode(value, path)
    finally:
        path.pop()


def resolve_type(name: str) -> type:
    """The class at ``module:QualName``; Undecodable when it cannot be found."""
    module_name, _, qualname = name.partition(":")
    if not module_name or not qualname:
        raise Undecodable(f"type {name!r} is not of the form module:QualName")
    try:
        found: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError) as error:
        raise Undecodable(
            f"type {name} cannot be imported ({error}); make its module importable"
            " (is it on the path?)"
        ) from None
    if not isinstance(found, type):
        raise Undecodable(f"{name} is not a class")
    return found


def _decode_datetime(payload: Any) -> dt.datetime:
    if not isinstance(payload, list):
        return dt.datetime.fromisoformat(payload)
    text, zone = payload
    fixed = dt.datetime.fromisoformat(text)
    # The same wall time in the zone, with the fold that gives the recorded offset: this keeps
    # the second 01:30 of an autumn night, and a spring-gap 02:00, as they were.
    wall = fixed.replace(tzinfo=zoneinfo.ZoneInfo(zone))
    for fold in (0, 1):
        if wall.replace(fold=fold).utcoffset() == fixed.utcoffset():
            return wall.replace(fold=fold)
    return fixed.astimezone(zoneinfo.ZoneInfo(zone))  # an offset the zone never had then


def _decode_time(payload: Any) -> dt.time:
    if not isinstance(payload, list):
        return dt.time.fromisoformat(payload)
    text, zone = payload
    return dt.time.fromisoformat(text).replace(tzinfo=zoneinfo.ZoneInfo(zone))


def _decode_float(payload: str) -> float:
    if payload not in ("nan", "inf", "-inf"):
        raise Undecodable(f"$float holds {payload!r}; expected nan, inf or -inf")
    return float(payload)


def _decode_dataclass(payload: Any) -> Any:
    name, fields = payload
    kind = resolve_type(name)
    if not dataclasses.is_dataclass(kind):
        raise Undecodable(f"{name} is no longer a dataclass")
    values = {key: decode(item) for key, item in fields.items()}
    init = {f.name for f in dataclasses.fields(kind) if f.init}
    made = kind(**{key: item for key, item in values.items() if key in init})
    for key, item in values.items():
        if key not in init:  # set after __init__, as the instance had it (frozen ones too)
            object.__setattr__(made, key, item)
    return made


def _decode_enum(payload: Any) -> Any:
    name, member = payload
    kind = resolve_type(name)
    if not issubclass(kind, enum.Enum):
        raise Undecodable(f"{name} is no longer an enum")
    try:
        return kind[member]
    except KeyError:
        raise Undecodable(f"{name} has no member {member!r} any more") from None


def _decode_namedtuple(payload: Any) -> Any:
    name, items = payload
    kind = resolve_type(name)
    return kind(*(decode(item) for item in items))


_TAGS: dict[str, Callable[[Any], Any]] = {
    "$float": _decode_float,
    "$tuple": lambda items: tuple(decode(item) for item in items),
    "$set": lambda items: {decode(item) for item in items},
    "$frozenset": lambda items: frozenset(decode(item) for item in items),
    "$dict": lambda pairs: {decode(key): decode(item) for key, item in pairs},
    "$bytes": lambda text: base64.b64decode(text, validate=True),
    "$bytearray": lambda text: bytearray(base64.b64decode(text, validate=True)),
    "$decimal": decimal.Decimal,
    "$datetime": _decode_datetime,
    "$date": dt.date.fromisoformat,
    "$time": _decode_time,
    "$timedelta": lambda parts: dt.timedelta(*parts),
    "$uuid": uuid.UUID,
    "$dataclass": _decode_dataclass,
    "$enum": _decode_enum,
    "$namedtuple": _decode_namedtuple,
}


def decode(data: Any) -> Any:
    """The value :func:`encode` wrote as ``data``."""
    if isinstance(data, list):
        return [decode(item) for item in data]
    if not isinstance(data, dict):
        return data
    if len(data) == 1:
        (key, payload), *_ = data.items()
        if key.startswith("$"):
            read = _TAGS.get(key)
            if read is None:
                raise Undecodable(f"unknown type tag {key!r}; known ones are {', '.join(_TAGS)}")
            try:
                return read(payload)
            except Undecodable:
                raise
            except (TypeError, ValueError, KeyError, decimal.InvalidOperation) as error:
                raise Undecodable(f"{key} holds {payload!r}, which is not valid: {error}") from None
    return {key: decode(item) for key, item in data.items()}


def dumps(value: Any) -> str:
    """``value`` as one line of typed JSON, keys in the order given (stable and diff-friendly)."""
    return json.dumps(encode(value), ensure_ascii=False, allow_nan=False, separators=(", ", ": "))


def loads(text: str) -> Any:
    """The value one line of typed JSON holds."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise Undecodable(f"not JSON: {error}") from None
    return decode(data)


__all__ = [
    "Undecodable",
    "Unencodable",
    "decode",
    "dumps",
    "encode",
    "loads",
    "resolve_type",
    "type_path",
]
