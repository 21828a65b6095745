"""Plain immutable values: modes, arms, states, observations, comparisons and decisions."""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from cutover.errors import InvalidInput


class Arm(enum.StrEnum):
    """One side of a migration."""

    LEGACY = "legacy"
    NEW = "new"

    @property
    def other(self) -> Arm:
        return Arm.NEW if self is Arm.LEGACY else Arm.LEGACY


class Mode(enum.StrEnum):
    """How a migration routes calls: who serves, and whether the other arm runs to compare."""

    LEGACY = "legacy"
    SHADOW = "shadow"
    CANARY = "canary"
    NEW = "new"

    @classmethod
    def parse(cls, text: str | Mode) -> Mode:
        if isinstance(text, Mode):
            return text
        key = str(text).strip().lower()
        mode = _MODE_NAMES.get(key)
        if mode is None:
            raise InvalidInput(
                f"unknown mode {text!r}; use one of legacy, shadow, canary, new"
                " (or the aliases legacy_only, refactored_primary, refactored_only)"
            )
        return mode


_MODE_NAMES: dict[str, Mode] = {
    "legacy": Mode.LEGACY,
    "legacy_only": Mode.LEGACY,
    "legacy-only": Mode.LEGACY,
    "shadow": Mode.SHADOW,
    "canary": Mode.CANARY,
    "refactored_primary": Mode.CANARY,
    "refactored-primary": Mode.CANARY,
    "new": Mode.NEW,
    "refactored_only": Mode.NEW,
    "refactored-only": Mode.NEW,
}


def check_percent(value: float, what: str = "percent") -> float:
    """A canary percent: 0 to 100 in steps of 0.01 (the bucket resolution)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidInput(f"{what} must be a number from 0 to 100, got {value!r}") from None
    if not math.isfinite(number) or not 0 <= number <= 100:
        raise InvalidInput(f"{what} must be from 0 to 100, got {value!r}")
    basis_points = round(number * 100)
    if abs(basis_points - number * 100) > 1e-6:
        raise InvalidInput(
            f"{what} has at most two decimals (steps of 0.01), got {value!r};"
            f" use {basis_points / 100:g}"
        )
    return basis_points / 100


def check_share(value: float, what: str = "sample") -> float:
    """A share of calls from 0 to 1."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidInput(f"{what} must be a number from 0 to 1, got {value!r}") from None
    if not math.isfinite(number) or not 0 <= number <= 1:
        raise InvalidInput(f"{what} must be from 0 to 1 (a share of calls), got {value!r}")
    return number


@dataclass(frozen=True, slots=True)
class State:
    """Where a migration stands: its mode, canary percent, sample, fallback and pins.

    ``version`` increases by one with every accepted change (compare-and-set); a state
    that was never stored has version 0.
    """

    mode: Mode = Mode.LEGACY
    percent: float = 0.0
    sample: float = 1.0
    fallback: bool = True
    pins_new: frozenset[str] = frozenset()
    pins_legacy: frozenset[str] = frozenset()
    version: int = 0
    updated_at: float | None = None
    updated_by: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", Mode.parse(self.mode))
        object.__setattr__(self, "percent", check_percent(self.percent))
        object.__setattr__(self, "sample", check_share(self.sample))
        object.__setattr__(self, "fallback", bool(self.fallback))
        pins_new = frozenset(str(unit) for unit in self.pins_new)
        pins_legacy = frozenset(str(unit) for unit in self.pins_legacy)
        both = pins_new & pins_legacy
        if both:
            raise InvalidInput(
                f"unit {sorted(both)[0]!r} is pinned to both new and legacy; unpin one of them"
            )
        object.__setattr__(self, "pins_new", pins_new)
        object.__setattr__(self, "pins_legacy", pins_legacy)

    @property
    def effective_percent(self) -> float:
        """The share of units that `new` serves in this mode, ignoring pins."""
        if self.mode is Mode.CANARY:
            return self.percent
        return 100.0 if self.mode is Mode.NEW else 0.0

    def evolve(self, **changes: Any) -> State:
        return replace(self, **changes)

    def same_settings(self, other: State) -> bool:
        """True when both route identically (version and authorship aside)."""
        return self.to_dict(meta=False) == other.to_dict(meta=False)

    def to_dict(self, *, meta: bool = True) -> dict[str, Any]:
        data: dict[str, Any] = {
            "mode": self.mode.value,
            "percent": self.percent,
            "sample": self.sample,
            "fallback": self.fallback,
            "pins": {"new": sorted(self.pins_new), "legacy": sorted(self.pins_legacy)},
        }
        if meta:
            data["version"] = self.version
            data["updated_at"] = self.updated_at
            data["updated_by"] = self.updated_by
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> State:
        pins = data.get("pins") or {}
        return cls(
            mode=Mode.parse(data.get("mode", "legacy")),
            percent=data.get("percent", 0.0),
            sample=data.get("sample", 1.0),
            fallback=data.get("fallback", True),
            pins_new=frozenset(pins.get("new", ())),
            pins_legacy=frozenset(pins.get("legacy", ())),
            version=int(data.get("version", 0)),
            updated_at=data.get("updated_at"),
            updated_by=data.get("updated_by"),
        )


def pin_changes(
    state: State,
    *,
    pin_new: Iterable[str] = (),
    pin_legacy: Iterable[str] = (),
    unpin: Iterable[str] = (),
) -> tuple[frozenset[str], frozenset[str]]:
    """New pin sets after pinning and unpinning units; a unit moves if pinned to the other arm."""
    to_new = {str(u) for u in pin_new}
    to_legacy = {str(u) for u in pin_legacy}
    both = to_new & to_legacy
    if both:
        raise InvalidInput(
            f"unit {sorted(both)[0]!r} is given to both --pin-new and --pin-legacy; choose one"
        )
    removed = {str(u) for u in unpin}
    pins_new = (state.pins_new - removed - to_legacy) | to_new
    pins_legacy = (state.pins_legacy - removed - to_new) | to_legacy
    return frozenset(pins_new), frozenset(pins_legacy)


@dataclass(frozen=True, slots=True)
class Observation:
    """What one arm did on one call: its value or exception, and how long it took. Immutable."""

    arm: Arm
    value: Any = None
    exception: BaseException | None = None
    duration_ns: int = 0
    timed_out: bool = False


class Verdict(enum.StrEnum):
    MATCH = "match"
    DRIFT = "drift"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class Comparison:
    """The verdict on the two observations of one call, with the diff when they drift."""

    migration: str
    verdict: Verdict
    legacy: Observation
    new: Observation
    unit: str | None = None
    diff: Any = None  # cutover.compare.Diff when verdict is DRIFT
    error: BaseException | None = None  # the comparator's exception when verdict is ERROR
    at: float = 0.0
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    @property
    def matched(self) -> bool:
        return self.verdict is Verdict.MATCH


@dataclass(frozen=True, slots=True)
class Decision:
    """One recorded decision about a migration: who, when, why, from what state to what.

    ``kind`` says what was decided: ``set`` for a state an operator wrote, or a rollout's
    ``start``, ``promote``, ``rollback``, ``pause``, ``approve`` ... Decisions that change no
    state (a pause, an approval) carry the state as it stood in both ``old`` and ``new``.
    """

    id: int
    migration: str
    at: float
    actor: str
    reason: str
    old: State | None
    new: State
    evidence: Mapping[str, Any] = field(default_factory=dict)
    kind: str = "set"
    changed: bool = True  # whether this decision wrote a new state version

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "migration": self.migration,
            "kind": self.kind,
            "at": self.at,
            "actor": self.actor,
            "reason": self.reason,
            "changed_state": self.changed,
            "old": self.old.to_dict() if self.old else None,
            "new": self.new.to_dict(),
            "evidence": dict(self.evidence),
        }


class RolloutStatus(enum.StrEnum):
    """Where a rollout stands; every status has a command that leaves it."""

    RUNNING = "running"  # the controller promotes when the gate passes and guards the checks
    PAUSED = "paused"  # hands off: nothing automatic until `resume`, `promote` or `abort`
    ROLLED_BACK = "rolled_back"  # stepped back after a failure; guarded, not promoted: `retry`
    COMPLETED = "completed"  # the last step held; `abort` returns to legacy, `start` begins anew
    ABORTED = "aborted"  # back on legacy; `retry` walks the plan again

    @property
    def active(self) -> bool:
        return self in (RolloutStatus.RUNNING, RolloutStatus.PAUSED, RolloutStatus.ROLLED_BACK)


@dataclass(frozen=True, slots=True)
class Rollout:
    """A plan being carried out for one migration: which step it is on, since when, in what
    status, and the approvals given. ``version`` increases with every change (compare-and-set)."""

    migration: str
    plan: Mapping[str, Any]  # the validated plan, as JSON
    source: str  # where the plan came from, for people reading the status
    status: RolloutStatus
    step: int
    step_started_at: float
    started_at: float
    started_by: str
    reason: str = ""  # why the status is what it is
    approvals: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # step -> who, why
    notes: Mapping[str, Any] = field(default_factory=dict)  # the controller's edge markers
    version: int = 0
    updated_at: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", RolloutStatus(self.status))

    def evolve(self, **changes: Any) -> Rollout:
        return replace(self, **changes)

    def approval(self, step: int) -> Mapping[str, Any] | None:
        return self.approvals.get(str(step))

    def to_dict(self) -> dict[str, Any]:
        return {
            "migration": self.migration,
            "plan": dict(self.plan),
            "source": self.source,
            "status": self.status.value,
            "step": self.step,
            "step_started_at": self.step_started_at,
            "started_at": self.started_at,
            "started_by": self.started_by,
            "reason": self.reason,
            "approvals": {step: dict(given) for step, given in self.approvals.items()},
            "notes": dict(self.notes),
            "version": self.version,
            "updated_at": self.updated_at,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Rollout:
        return cls(
            migration=data["migration"],
            plan=data.get("plan") or {},
            source=data.get("source") or "",
            status=RolloutStatus(data["status"]),
            step=int(data["step"]),
            step_started_at=float(data["step_started_at"]),
            started_at=float(data["started_at"]),
            started_by=data.get("started_by") or "",
            reason=data.get("reason") or "",
            approvals=data.get("approvals") or {},
            notes=data.get("notes") or {},
            version=int(data.get("version", 0)),
            updated_at=data.get("updated_at"),
        )
