"""Typed JSON: every value a codec meets reads back as the same value of the same types."""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import json
import math
import typing
import zoneinfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cutover.typedjson import Undecodable, Unencodable, decode, dumps, encode, loads


class Color(enum.Enum):
    RED = "red"
    GREEN = 2


@dataclasses.dataclass(frozen=True)
class Point:
    x: int
    y: typing.Any = None
    label: str = dataclasses.field(default="", init=False)


class Pair(typing.NamedTuple):
    left: typing.Any
    right: typing.Any


def _key(value: object) -> str:
    """Canonical text of a value: equal values of equal types, NaN included, give equal text."""
    return json.dumps(encode(value), sort_keys=True)


def _same(a: object, b: object) -> bool:
    """Equal and of the same types all the way down (NaN equal to NaN, -0.0 apart from 0.0)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or (a == b and str(a) == str(b))
    if isinstance(a, decimal.Decimal):
        return str(a) == str(b)
    if isinstance(a, dt.datetime | dt.time):
        return a == b and a.utcoffset() == b.utcoffset() and str(a) == str(b)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(map(_key, a)) == list(map(_key, b)) and all(
            _same(x, y) for x, y in zip(a.values(), b.values(), strict=True)
        )
    if isinstance(a, set | frozenset):
        return sorted(map(_key, a)) == sorted(map(_key, b))
    if dataclasses.is_dataclass(a):
        return all(_same(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a))
    return a == b


_zones = st.sampled_from([None, dt.UTC, dt.timezone(dt.timedelta(hours=5, minutes=30))])
_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(),
    st.binary(),
    st.binary().map(bytearray),
    st.decimals(allow_nan=True, allow_infinity=True),
    st.datetimes(timezones=_zones),
    st.datetimes(timezones=st.just(zoneinfo.ZoneInfo("Europe/Paris"))),
    st.dates(),
    st.times(timezones=_zones),
    st.times(timezones=st.just(zoneinfo.ZoneInfo("Europe/Paris"))),
    st.timedeltas(),
    st.uuids(),
    st.sampled_from(Color),
)
_hashable = st.one_of(st.integers(), st.text(), st.binary(), st.uuids(), st.dates())
_values = st.recursive(
    _leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(inner, max_size=4).map(tuple),
        st.dictionaries(st.text(), inner, max_size=4),
        st.dictionaries(_hashable, inner, max_size=4),
        st.sets(_hashable, max_size=4),
        st.frozensets(_hashable, max_size=4),
        st.builds(Point, st.integers(), inner),
        st.builds(Pair, inner, inner),
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(_values)
def test_round_trip(value: object) -> None:
    line = dumps(value)
    assert "\n" not in line
    back = loads(line)
    assert _same(back, value), (value, back)
    assert dumps(back) == line


def test_aware_datetimes_keep_their_offset_and_zone() -> None:
    fixed = dt.datetime(2026, 3, 29, 1, 30, tzinfo=dt.timezone(dt.timedelta(hours=-3)))
    assert loads(dumps(fixed)).utcoffset() == dt.timedelta(hours=-3)
    paris = dt.datetime(2026, 10, 25, 2, 30, fold=1, tzinfo=zoneinfo.ZoneInfo("Europe/Paris"))
    back = loads(dumps(paris))
    assert back.tzinfo == zoneinfo.ZoneInfo("Europe/Paris")
    assert back.utcoffset() == paris.utcoffset() == dt.timedelta(hours=1)
    gap = dt.datetime(2000, 3, 26, 2, 0, tzinfo=zoneinfo.ZoneInfo("Europe/Paris"))  # no such time
    assert str(loads(dumps(gap))) == str(gap) == "2000-03-26 02:00:00+01:00"
    first = paris.replace(fold=0)
    assert loads(dumps(first)).utcoffset() == dt.timedelta(hours=2)
    alarm = dt.time(7, 30, tzinfo=zoneinfo.ZoneInfo("Europe/Paris"))
    assert loads(dumps(alarm)).tzinfo == alarm.tzinfo
    naive = dt.datetime(2026, 1, 1, 12)
    assert loads(dumps(naive)).tzinfo is None


def test_plain_json_reads_as_itself_and_dollar_keys_are_escaped() -> None:
    assert encode({"a": [1, 2.5, "x", None, True]}) == {"a": [1, 2.5, "x", None, True]}
    tricky = {"$bytes": "not bytes"}
    assert encode(tricky) == {"$dict": [["$bytes", "not bytes"]]}
    assert loads(dumps(tricky)) == tricky
    assert str(loads(dumps(-0.0))) == "-0.0"
    assert loads(dumps((1, [2]))) == (1, [2])


def test_frozen_dataclass_fields_outside_init_come_back() -> None:
    point = Point(1, (2, 3))
    object.__setattr__(point, "label", "origin")
    back = loads(dumps(point))
    assert back == point and back.label == "origin" and back.y == (2, 3)


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ({"a": [1, object()]}, "type builtins.object at $.a[1]"),
        ({"f": len}, "a function of type builtins.builtin_function_or_method at $.f"),
        ((i for i in ()), "type builtins.generator at $"),
    ],
)
def test_refuses_what_it_cannot_write_naming_type_and_path(value: object, words: str) -> None:
    with pytest.raises(Unencodable, match="cannot encode") as caught:
        encode(value)
    assert words in str(caught.value)


def test_refuses_local_classes() -> None:
    @dataclasses.dataclass
    class Local:
        x: int

    with pytest.raises(Unencodable, match=r"defined inside a function.*define it at module"):
        encode([Local(1)])


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('{"$nope": 1}', "unknown type tag '$nope'"),
        ('{"$float": "1.5"}', "expected nan, inf or -inf"),
        ('{"$dataclass": ["no_such_module_x:Thing", {}]}', "cannot be imported"),
        ('{"$bytes": "%%%"}', "$bytes holds"),
        ("{nope", "not JSON"),
    ],
)
def test_bad_text_is_one_clear_error(text: str, words: str) -> None:
    with pytest.raises(Undecodable) as caught:
        loads(text)
    assert words in str(caught.value)


def test_decode_leaves_plain_data_alone() -> None:
    assert decode({"args": [1], "kwargs": {}}) == {"args": [1], "kwargs": {}}


def test_drift_samples_keep_values_exactly_when_every_store_can_hold_them() -> None:
    from cutover.telemetry.drift import kept_value

    assert kept_value((1, b"\x00")) == ({"$tuple": [1, {"$bytes": "AA=="}]}, True)
    assert kept_value("😀") == ("😀", True)
    assert kept_value("a\x00b") == ("a\\0b", False)  # PostgreSQL refuses NUL in text
    assert kept_value("\ud800")[1] is False  # a lone surrogate is no UTF-8
    assert kept_value(object())[1] is False
    deep: list[object] = []
    tip = deep
    for _ in range(5000):  # deeper than Python recurses: described, never raised
        tip.append([])
        tip = tip[0]  # type: ignore[assignment]
    assert kept_value(deep)[1] is False
