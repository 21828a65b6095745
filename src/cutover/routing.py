"""Which arm serves a unit: the sticky bucket formula, pins, and environment overrides.

The formula, reproducible in any language::

    bucket = murmur3_x86_32(utf8(f"{migration}:{unit}"), seed=0) as unsigned 32-bit % 10000
    new serves the unit  iff  bucket < round(percent * 100)

Pins are consulted first; ``CUTOVER_FORCE_<NAME>=legacy|new`` overrides the stored mode.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

import mmh3

from cutover.errors import InvalidInput
from cutover.model import Arm, Mode, State

BUCKETS = 10_000
"""Units fall into 10,000 buckets, so a percent has a resolution of 0.01."""


LEGACY_ONLY, NEW_ONLY, MIXED = 0, 1, 2
"""Route kinds: the caller's path branches on these small integers."""

_mmh3 = mmh3.hash
_LEGACY, _NEW = Arm.LEGACY, Arm.NEW  # an Enum member lookup costs as much as the hash


def unit_hash(key: str) -> int:
    """MurmurHash3 (seed 0, unsigned) of ``key``'s UTF-8 bytes. A lone surrogate (a unit
    decoded from bad bytes with ``surrogateescape``) is encoded as its own three bytes: mmh3 5.3
    crashes the process on such a string. ``isascii`` reads a flag, so most units pay nothing
    for the check."""
    if key.isascii():
        return _mmh3(key, 0, False)
    return _mmh3(key.encode("utf-8", "surrogatepass"), 0, False)


def bucket(migration: str, unit: object) -> int:
    """The unit's bucket in 0..9999 for this migration; the same everywhere, forever."""
    return unit_hash(f"{migration}:{unit}") % BUCKETS


def threshold(percent: float) -> int:
    """Buckets below this number are served by `new`."""
    return round(percent * 100)


def override_variable(migration: str) -> str:
    """The environment variable that forces this migration's mode in one process."""
    return "CUTOVER_FORCE_" + re.sub(r"[^A-Z0-9]", "_", migration.upper())


def env_override(migration: str, environ: Mapping[str, str] | None = None) -> Mode | None:
    """The mode forced by ``CUTOVER_FORCE_<NAME>``, or None when it is unset or empty."""
    variable = override_variable(migration)
    raw = (os.environ if environ is None else environ).get(variable, "").strip()
    if not raw:
        return None
    try:
        mode = Mode.parse(raw)
    except InvalidInput:
        mode = None
    if mode not in (Mode.LEGACY, Mode.NEW):
        raise InvalidInput(
            f"{variable}={raw!r} is not a kill switch value; set it to legacy or new"
        )
    return mode


@dataclass(frozen=True, slots=True)
class Route:
    """A state compiled for the caller's path: everything a call needs, precomputed."""

    kind: int
    threshold: int
    sample: float
    fallback: bool
    pins: Mapping[str, bool] | None  # unit -> True when pinned to new
    state: State
    override: Mode | None

    @property
    def mode(self) -> Mode:
        return self.override or self.state.mode

    @property
    def effective_percent(self) -> float:
        if self.override is not None:
            return 100.0 if self.override is Mode.NEW else 0.0
        return self.state.effective_percent


def compile_route(state: State, override: Mode | None = None) -> Route:
    mode = override or state.mode
    if mode is Mode.LEGACY:
        return Route(LEGACY_ONLY, 0, 0.0, False, None, state, override)
    if mode is Mode.NEW:
        return Route(NEW_ONLY, BUCKETS, 0.0, False, None, state, override)
    pins: dict[str, bool] = {unit: True for unit in state.pins_new}
    pins.update({unit: False for unit in state.pins_legacy})
    limit = threshold(state.percent) if mode is Mode.CANARY else 0
    return Route(MIXED, limit, state.sample, state.fallback, pins or None, state, override)


def serving_arm(migration: str, route: Route, unit: object) -> Arm:
    """The arm that serves ``unit`` under ``route`` (the same rule the caller's path applies)."""
    if route.kind == LEGACY_ONLY:
        return _LEGACY
    if route.kind == NEW_ONLY:
        return _NEW
    key = f"{unit}"
    if route.pins is not None and key in route.pins:
        return _NEW if route.pins[key] else _LEGACY
    return _NEW if unit_hash(f"{migration}:{key}") % BUCKETS < route.threshold else _LEGACY
