"""The business rules both API versions implement, in Python; v2 has them in TypeScript."""

from __future__ import annotations

import hashlib
import math

VERSION_V1 = "1.9.4"
CATALOG = ("starter-kit", "refill-pack", "gift-card", "premium-plan", "travel-case", "bundle")


def _number(text: str) -> int:
    """A stable number per text (the first four bytes of its SHA-256), the same in v2."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big")


def usage(user: str) -> dict[str, object]:
    number = _number(user)
    return {"user": user, "predictions": number % 500, "segments": number % 40, "plan": "pro"}


def churn_probability(age: int, visits: int) -> float:
    return 1 / (1 + math.exp(0.08 * visits + 0.01 * age - 2))


def segment_of(spend: float, visits: int) -> str:
    if spend >= 500 and visits >= 10:
        return "loyal"
    if visits <= 1:
        return "new"
    return "at-risk" if spend < 50 else "regular"


def recommendations(user: str, limit: int) -> list[str]:
    start = _number(user) % len(CATALOG)
    return [CATALOG[(start + offset) % len(CATALOG)] for offset in range(limit)]
