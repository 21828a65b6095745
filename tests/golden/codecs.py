"""A small payment-frame codec and its port: the in-process functions the golden vector tests
record, verify and shadow. ``drifting_decode`` is the port with a planted bug."""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
from collections.abc import Iterator

from cutover.testing import call


class Kind(enum.Enum):
    PAYMENT = "P"
    REFUND = "R"


@dataclasses.dataclass(frozen=True)
class Frame:
    kind: Kind
    amount: decimal.Decimal
    currency: str
    at: dt.datetime
    tags: tuple[str, ...] = ()


def legacy_decode(data: bytes, *, strict: bool = True) -> dict[str, object]:
    """``b"P|EUR|12.50|2026-01-02T03:04:00+01:00|a,b"`` -> its fields."""
    parts = data.decode("ascii").split("|")
    if len(parts) != 5:
        raise ValueError(f"a frame has 5 fields, this one {len(parts)}")
    kind, currency, amount, at, tags = parts
    if strict and len(currency) != 3:
        raise ValueError(f"currency {currency!r} is not 3 letters")
    return {
        "kind": Kind(kind),
        "currency": currency,
        "amount": decimal.Decimal(amount),
        "at": dt.datetime.fromisoformat(at),
        "tags": tuple(tags.split(",")) if tags else (),
        "raw": data,
    }


def new_decode(data: bytes, *, strict: bool = True) -> dict[str, object]:
    """The port: the same answers, written another way."""
    kind, currency, amount, at, tags, *rest = data.decode("ascii").split("|")
    if rest:
        raise ValueError("too many fields")
    if strict and len(currency) != 3:
        raise ValueError("bad currency")
    return {
        "kind": Kind(kind),
        "currency": currency,
        "amount": decimal.Decimal(amount),
        "at": dt.datetime.fromisoformat(at),
        "tags": tuple(t for t in tags.split(",") if t),
        "raw": bytes(data),
    }


def drifting_decode(data: bytes, *, strict: bool = True) -> dict[str, object]:
    """The port with a planted bug: amounts of 1000 and more lose their cents."""
    fields = new_decode(data, strict=strict)
    amount = fields["amount"]
    assert isinstance(amount, decimal.Decimal)
    if amount >= 1000:
        fields["amount"] = amount.quantize(decimal.Decimal(1))
    return fields


def encode(frame: Frame) -> bytes:
    return "|".join(
        [
            frame.kind.value,
            frame.currency,
            str(frame.amount),
            frame.at.isoformat(),
            ",".join(frame.tags),
        ]
    ).encode("ascii")


PARIS = dt.timezone(dt.timedelta(hours=1))


def frames() -> Iterator[object]:
    """Inputs for ``golden record --inputs``: frames, one of them refused by legacy."""
    at = dt.datetime(2026, 1, 2, 3, 4, tzinfo=PARIS)
    yield encode(Frame(Kind.PAYMENT, decimal.Decimal("12.50"), "EUR", at, ("a", "b")))
    yield encode(Frame(Kind.REFUND, decimal.Decimal("999.99"), "USD", at))
    yield encode(Frame(Kind.PAYMENT, decimal.Decimal("1234.56"), "GBP", at, ("vip",)))
    yield call(b"P|EURO|1.00|2026-01-02T03:04:00|", strict=False)
    yield b"P|EURO|1.00|2026-01-02T03:04:00|"  # legacy raises ValueError
    yield b"not a frame"


def legacy_fee(cents: int) -> int:
    """3% of an amount in cents, rounded down."""
    return cents * 3 // 100


def new_fee(cents: int) -> int:
    """The port with an off-by-one at the 1000-cent boundary."""
    return (cents * 3 + (100 if cents >= 1000 else 0)) // 100


def unencodable_inputs() -> list[object]:
    return [b"P|EUR|1|2026-01-02T03:04:00|", object()]
