"""Two implementations of a payment-message codec: the legacy one, and a port with subtle bugs.

The port ("new") is what a team would get from a rewrite in another language: faster, and
identical on almost every input. Two inputs in a few hundred differ:

* amounts with a half cent in the third decimal are rounded through binary floats
  (12.345 -> "12.34") where legacy rounds half up in decimal (12.345 -> "12.35");
* memos with leading spaces are stripped on both sides, where legacy strips the right only.

:class:`FixedPort` is the port once both are fixed, with a third bug that only load shows.
"""

from __future__ import annotations

import unicodedata
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

CENT = Decimal("0.01")


def legacy_encode(message: dict[str, Any]) -> dict[str, Any]:
    amount = Decimal(str(message["amount"])).quantize(CENT, rounding=ROUND_HALF_UP)
    return {
        "id": message["id"],
        "user": message["user"],
        "amount": f"{amount}",
        "currency": message["currency"].upper(),
        "memo": unicodedata.normalize("NFC", message.get("memo", "")).rstrip(),
        "lines": [
            {"sku": sku, "qty": qty} for sku, qty in sorted(message.get("lines", {}).items())
        ],
    }


def new_encode(message: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": message["id"],
        "user": message["user"],
        "amount": f"{float(message['amount']):.2f}",  # the bug: binary floats round differently
        "currency": message["currency"].upper(),
        "memo": unicodedata.normalize("NFC", message.get("memo", "")).strip(),  # and this one
        "lines": [
            {"sku": sku, "qty": qty} for sku, qty in sorted(message.get("lines", {}).items())
        ],
    }


class FixedPort:
    """The port after shadow mode found its two bugs, with one left that only load reveals.

    It encodes through a buffer pool sized for ``capacity`` messages a minute. Past that, it
    falls back to its first formatter, which the fix missed and which still drops the memo's
    leading spaces and rounds half cents through binary floats. Shadowing a fifth of the calls
    stays well within the pool; serving half the traffic does not.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0

    def next_minute(self) -> None:
        self.used = 0

    def __call__(self, message: dict[str, Any]) -> dict[str, Any]:
        self.used += 1
        if self.used > self.capacity:
            return new_encode(message)  # the overflow path
        return fixed_encode(message)


def fixed_encode(message: dict[str, Any]) -> dict[str, Any]:
    """The port with both fixes: decimal rounding, and memos stripped on the right only."""
    return {
        **new_encode(message),
        "amount": f"{Decimal(str(message['amount'])).quantize(CENT, rounding=ROUND_HALF_UP)}",
        "memo": unicodedata.normalize("NFC", message.get("memo", "")).rstrip(),
    }
