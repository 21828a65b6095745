"""Drift samples: a bounded number of redacted, size-capped examples of each migration's drifts."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import reprlib
import threading
from collections.abc import Callable, Mapping, Sequence, Set
from dataclasses import dataclass
from typing import Any

from cutover import typedjson
from cutover.compare import MISSING, Diff
from cutover.model import Comparison

Redactor = Callable[[str, Any], Any]
"""``redact(kind, value) -> value`` with kind ``"input"`` (the call's arguments) or
``"output"`` (each arm's value and every value in the diff). Return a safe stand-in."""

_REPR = reprlib.Repr()
_REPR.maxstring = 200
_REPR.maxother = 200
_REPR.maxlevel = 4


@dataclass(frozen=True, slots=True)
class DriftSample:
    """A kept example of a drift: redacted input, both outputs, the diff, its fingerprint."""

    migration: str
    at: float
    unit: str | None
    fingerprint: str
    input: Any
    legacy: Any
    new: Any
    diff: list[dict[str, Any]]
    truncated: bool = False
    id: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "migration": self.migration,
            "at": self.at,
            "unit": self.unit,
            "fingerprint": self.fingerprint,
            "input": self.input,
            "legacy": self.legacy,
            "new": self.new,
            "diff": self.diff,
            "truncated": self.truncated,
        }


def clean_text(text: str, limit: int = 4096) -> str:
    """``text`` as every store accepts it: at most ``limit`` characters, lone surrogates and NUL
    (which PostgreSQL refuses in text) replaced."""
    if len(text) > limit:
        text = text[:limit] + "…"
    if text.isascii():
        return text.replace("\x00", "\\0") if "\x00" in text else text
    return text.encode("utf-8", "replace").decode("utf-8").replace("\x00", "\\0")


def jsonable(value: Any, depth: int = 0, items: int = 50) -> Any:
    """A JSON-safe copy of ``value`` that cannot grow without bound: deep or wide values are cut."""
    if isinstance(value, str):
        return clean_text(value)
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if value is MISSING:
        return "<missing>"
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value[:256])
        return {"bytes": raw.hex(), "length": len(value)}
    if depth >= 8:
        return _REPR.repr(value)
    if isinstance(value, Mapping):
        out = {}
        for position, (key, item) in enumerate(value.items()):
            if position >= items:
                out["…"] = f"{len(value) - items} more"
                break
            name = clean_text(key if isinstance(key, str) else _REPR.repr(key), 200)
            out[name] = jsonable(item, depth + 1, items)
        return out
    if isinstance(value, Sequence | Set) and not isinstance(value, str):
        listed = list(itertools.islice(value, items))
        out_list = [jsonable(item, depth + 1, items) for item in listed]
        if len(value) > items:
            out_list.append(f"… {len(value) - items} more")
        return out_list
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        return {"__type__": type(value).__name__, **jsonable(fields, depth + 1, items)}
    return clean_text(_safe_repr(value))


def _safe_repr(value: Any) -> str:
    try:
        return _REPR.repr(value)
    except Exception:  # noqa: BLE001 - a broken __repr__ still gets a description
        return object.__repr__(value)


def capped(value: Any, limit: int) -> tuple[Any, bool]:
    """``value`` if its JSON fits in ``limit`` characters, else a preview; and if it was cut."""
    text = json.dumps(value, ensure_ascii=False, default=repr)
    if len(text) <= limit:
        return value, False
    return {"truncated": True, "preview": text[:limit]}, True


def kept_value(value: Any) -> tuple[Any, bool]:
    """``value`` in typed JSON when it can be written so, since it then reads back as the same
    value, types included, and a golden vector can replay it; else its JSON-safe description.
    And whether it was kept exactly."""
    if isinstance(value, BaseException):
        return jsonable(value), True  # its type name is what exception comparison needs
    try:
        encoded = typedjson.encode(value)
    except (typedjson.Unencodable, RecursionError):  # deeper than Python recurses: described
        return jsonable(value), False
    if not _storable(json.dumps(encoded, ensure_ascii=False)):
        return jsonable(value), False
    return encoded, True


def _storable(text: str) -> bool:
    """Whether every store takes ``text``: PostgreSQL refuses NUL, UTF-8 a lone surrogate."""
    if "\\u0000" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


MAX_FINGERPRINTS = 200
"""Distinct fingerprints counted apart per migration per flush (and per window while the store
is away); more are counted together under OTHER_FINGERPRINTS."""

EXPOSED_FINGERPRINTS = 20
"""Distinct fingerprints per migration a process exposes to Prometheus as series of their own,
the first seen; later ones are counted under OTHER_FINGERPRINTS (bounded cardinality)."""

OTHER_FINGERPRINTS = "(other fingerprints)"
"""Where drifts are counted once a migration has shown too many distinct fingerprints in one
flush (a diff keyed by user ids, say): the count stays exact, only the split is cut."""


class DriftSampler:
    """Counts every drift by fingerprint, exactly, and keeps a bounded number of samples:
    at most ``per_minute`` per fingerprint per minute of the clock, so a rare root cause is
    sampled even beside a frequent one, and at most ten times that per migration."""

    def __init__(
        self,
        per_minute: int = 10,
        max_chars: int = 8192,
        redact: Redactor | None = None,
        max_fingerprints: int = MAX_FINGERPRINTS,
    ) -> None:
        self.per_minute = per_minute
        self.max_chars = max_chars
        self.redact = redact
        self.max_fingerprints = max_fingerprints
        self._lock = threading.Lock()
        self._minute: dict[str, int] = {}
        self._taken: dict[str, int] = {}
        self._taken_by_cause: dict[tuple[str, str], int] = {}
        self._counts: dict[str, dict[str, int]] = {}
        self._exposed: dict[str, dict[str, int]] = {}

    def count(self, migration: str, fingerprint: str) -> None:
        with self._lock:
            counts = self._counts.setdefault(migration, {})
            flushed = fingerprint
            if flushed not in counts and len(counts) >= self.max_fingerprints:
                flushed = OTHER_FINGERPRINTS
            counts[flushed] = counts.get(flushed, 0) + 1
            exposed = self._exposed.setdefault(migration, {})
            if fingerprint not in exposed and len(exposed) >= EXPOSED_FINGERPRINTS:
                fingerprint = OTHER_FINGERPRINTS
            exposed[fingerprint] = exposed.get(fingerprint, 0) + 1

    def exposed(self) -> dict[str, dict[str, int]]:
        """Drift counts per migration and fingerprint since the process started, for
        Prometheus: the first EXPOSED_FINGERPRINTS fingerprints of each migration apart, the
        rest under OTHER_FINGERPRINTS, so a series once exposed keeps counting."""
        with self._lock:
            return {migration: dict(counts) for migration, counts in self._exposed.items()}

    def take_counts(self) -> dict[str, dict[str, int]]:
        """The drift counts per migration and fingerprint since the previous take."""
        with self._lock:
            counts, self._counts = self._counts, {}
        return counts

    def forget(self, migrations: list[str]) -> None:
        """Drop what the sampler keeps for these migrations (gone from the process), except
        drift counts not yet taken."""
        with self._lock:
            for migration in migrations:
                self._minute.pop(migration, None)
                self._taken.pop(migration, None)
                self._exposed.pop(migration, None)
            gone = set(migrations)
            self._taken_by_cause = {
                key: n for key, n in self._taken_by_cause.items() if key[0] not in gone
            }

    def admit(self, migration: str, fingerprint: str, at: float) -> bool:
        """Whether to keep a sample of this drift."""
        minute = int(at // 60)
        with self._lock:
            if self._minute.get(migration) != minute:
                self._minute[migration] = minute
                self._taken[migration] = 0
                self._taken_by_cause = {
                    key: n for key, n in self._taken_by_cause.items() if key[0] != migration
                }
            cause = (migration, fingerprint)
            taken = self._taken_by_cause.get(cause, 0)
            if taken >= self.per_minute or self._taken[migration] >= 10 * self.per_minute:
                return False
            self._taken_by_cause[cause] = taken + 1
            self._taken[migration] += 1
            return True

    def sample(
        self,
        comparison: Comparison,
        redact: Redactor | None = None,
        fingerprint: str | None = None,
    ) -> DriftSample:
        """Build the sample (``fingerprint``: the diff's, when the caller has it already); a
        redactor that raises propagates so nothing unredacted is kept."""
        redactor = redact or self.redact
        diff: Diff = comparison.diff or Diff()
        legacy_value = (
            comparison.legacy.exception
            if comparison.legacy.exception is not None
            else comparison.legacy.value
        )
        new_value = (
            comparison.new.exception
            if comparison.new.exception is not None
            else comparison.new.value
        )
        call_input: Any = {"args": list(comparison.args), "kwargs": dict(comparison.kwargs)}
        if redactor is not None:
            call_input = redactor("input", call_input)
            legacy_value = redactor("output", legacy_value)
            new_value = redactor("output", new_value)
        entries = []
        for difference in diff.differences:
            left, right = difference.legacy, difference.new
            if redactor is not None:
                left = left if left is MISSING else redactor("output", left)
                right = right if right is MISSING else redactor("output", right)
            entries.append(
                {
                    "path": clean_text(difference.path, 1000),
                    "kind": difference.kind,
                    "legacy": jsonable(left),
                    "new": jsonable(right),
                    **({"note": difference.note} if difference.note else {}),
                    **({"scope": difference.scope} if difference.scope else {}),
                }
            )
        limit = self.max_chars
        cut = diff.truncated
        kept_input, input_exact = kept_value(call_input)
        kept_legacy, legacy_exact = kept_value(legacy_value)
        kept_new, new_exact = kept_value(new_value)
        if isinstance(kept_input, dict) and "args" in kept_input:
            # What a golden vector made from this sample must not trust.
            inexact = [
                part
                for part, exact in (("input", input_exact), ("legacy", legacy_exact),
                                    ("new", new_exact))
                if not exact
            ]  # fmt: skip
            if inexact:
                kept_input = {**kept_input, "inexact": inexact}
        stored_input, was_cut = capped(kept_input, limit)
        cut |= was_cut
        stored_legacy, was_cut = capped(kept_legacy, limit)
        cut |= was_cut
        stored_new, was_cut = capped(kept_new, limit)
        cut |= was_cut
        stored_diff, was_cut = capped(entries, limit)
        cut |= was_cut
        return DriftSample(
            migration=comparison.migration,
            at=comparison.at,
            unit=None if comparison.unit is None else clean_text(comparison.unit, 400),
            fingerprint=clean_text(diff.fingerprint if fingerprint is None else fingerprint, 2000),
            input=stored_input,
            legacy=stored_legacy,
            new=stored_new,
            diff=stored_diff if isinstance(stored_diff, list) else [stored_diff],
            truncated=cut,
        )
