"""Two implementations of a payment-message codec: the legacy one, and a port with subtle bugs.

The port ("new") is what a team would get from a rewrite in another language: faster, and
identical on almost every input. Two inputs in a few hundred differ:

* amounts with a half cent in the third decimal are rounded through binary floats
  (12.345 -> "12.34") where legacy rounds half up in decimal (12.345 -> "12.35");
* memos with leading spaces are stripped on both sides, where legacy strips the right only.
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
