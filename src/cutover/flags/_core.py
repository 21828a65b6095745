"""Flags over migrations: which arm serves a unit, for code that branches itself, counted.

``choose`` answers from the route the runtime keeps in memory (no store round trip), through
:func:`cutover.routing.serving_arm`, and counts an exposure of the arm it names. ``observe``
also records the branch's run (arm, latency, raised or not) in the migration's windows, so
error-rate and latency checks, and the controller, judge hand-branched code as they judge a
wrapped call. ``evaluate`` adds what the OpenFeature provider and OFREP report: the reason
and the state behind the answer.
"""

from __future__ import annotations

import random
import threading
import time
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cutover import runtime as rt
from cutover.compare import Comparator
from cutover.errors import InvalidInput, UnknownMigration
from cutover.migration import ExpectedExceptions, Migration, ReportedMigration, _record, _unit
from cutover.model import Arm, Mode, Observation, State, Verdict
from cutover.routing import LEGACY_ONLY, NEW_ONLY, Route, serving_arm
from cutover.telemetry.drift import Redactor
from cutover.telemetry.windows import (
    EXPOSURES,
    LEGACY_BASE,
    NEW_BASE,
    Block,
)
from cutover.text import check_name

_now = time.perf_counter_ns  # tests replace this to control measured durations
_random = random.random
_unit_get = _unit.get

L_EXPOSURES, N_EXPOSURES = LEGACY_BASE + EXPOSURES, NEW_BASE + EXPOSURES
_LEGACY, _NEW = Arm.LEGACY, Arm.NEW  # an Enum member lookup costs as much as the hash

# Reasons, as OpenFeature names them.
STATIC = "STATIC"  # legacy or new mode (and shadow outside the pins): the same arm for everyone
SPLIT = "SPLIT"  # the canary's percentage decided
TARGETING_MATCH = "TARGETING_MATCH"  # a pin decided
DISABLED = "DISABLED"  # CUTOVER_FORCE_<NAME> forces the mode in this process
DEFAULT = "DEFAULT"  # no stored state yet: the code's default


def _hand_branched(*_: Any, **__: Any) -> Any:
    raise InvalidInput(
        "this migration's arms are the caller's own branches: call cutover.choose or"
        " cutover.observe, not the migration"
    )


class FlagMigration(ReportedMigration):
    """A migration whose arms are the caller's own ``if``/``else``: it routes by the stored
    state like any other, and counts what ``choose`` and ``observe`` report."""

    def __new__(cls, name: str, **options: Any) -> FlagMigration:
        return object.__new__(cls)

    def __init__(self, name: str, **options: Any) -> None:
        """``options``: those of :func:`flag`."""
        super().__init__(name, _hand_branched, _hand_branched, **options)


_flags: dict[str, Migration] = {}
_flags_lock = threading.Lock()


def flag(
    name: str,
    *,
    compare: Comparator | None = None,
    compare_exceptions: Comparator | None = None,
    expected_exceptions: ExpectedExceptions = None,
    default: Mode | str | State = Mode.LEGACY,
    redact: Redactor | None = None,
) -> Migration:
    """Declare how ``choose`` and ``observe`` treat migration ``name``: the comparator for
    ``call.compare``, the exceptions that are answers rather than errors, the mode before a
    state is stored. Without it they use exact comparison and start in legacy mode."""
    with _flags_lock:
        if name in _flags:
            raise InvalidInput(
                f"migration {name!r} is already declared in this process; declare it once, before"
                " the first cutover.choose or cutover.observe of it"
            )
        declared = _flags[name] = FlagMigration(
            name,
            compare=compare,
            compare_exceptions=compare_exceptions,
            expected_exceptions=expected_exceptions,
            default=default,
            redact=redact,
        )
    return declared


def migration_for(name: str) -> Migration:
    """The migration ``name`` routes by in this process: one ``flag()`` declared, a wrapped
    migration of that name, or else a flag migration with the defaults (created once)."""
    found = _flags.get(name)
    if found is not None:
        return found
    check_name(name)
    with _flags_lock:
        found = _flags.get(name)
        if found is None:
            wrapped = [m for m in rt.declared() if m.name == name]
            found = _flags[name] = wrapped[0] if wrapped else FlagMigration(name)
    return found


def _block(migration: Migration) -> Block:
    try:
        return migration._local.b
    except AttributeError:
        return migration._telemetry.block()


def _arm(migration: Migration, route: Route, unit: object) -> Arm:
    """The serving arm as a wrapped call finds it: a unit of None routes by ``unit_scope``,
    else at random in proportion."""
    if unit is None:
        unit = _unit_get()
    return _NEW if migration._serves_new(route, None if unit is None else f"{unit}") else _LEGACY


def choose(name: str, unit: object = None) -> Arm:
    """The arm that serves ``unit`` in migration ``name`` right now, per the stored state, its
    pins, ``CUTOVER_FORCE_<NAME>`` and the percentage; counted as an exposure of that arm.

    ``if cutover.choose("pricing", unit=user_id) is cutover.Arm.NEW: ...``
    """
    migration = _flags.get(name) or migration_for(name)
    route = migration._route
    arm = serving_arm(name, route, unit) if unit is not None else _arm(migration, route, unit)
    try:
        block = migration._local.b
    except AttributeError:
        block = migration._telemetry.block()
    block[N_EXPOSURES if arm is _NEW else L_EXPOSURES] += 1
    return arm


async def achoose(name: str, unit: object = None) -> Arm:
    """:func:`choose` for async code (it never waits: the state is in memory)."""
    return choose(name, unit)


class Call:
    """One hand-branched call of a migration: the arm to run, and what it did once it ran.

    Use it as ``with cutover.observe(name, unit=...) as call:`` and branch on ``call.arm``;
    leaving the block records the run (its duration, and whether it raised) in the
    migration's windows. ``call.compare(legacy_value, new_value)`` records a dual run.
    """

    __slots__ = ("_migration", "_start", "arm", "unit")

    def __init__(self, migration: Migration, arm: Arm, unit: object) -> None:
        self._migration = migration
        self.arm = arm
        self.unit = None if unit is None else f"{unit}"
        self._start = 0

    @property
    def new(self) -> bool:
        """Whether the new arm serves this call."""
        return self.arm is Arm.NEW

    def __enter__(self) -> Call:
        self._start = _now()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: types.TracebackType | None,
    ) -> None:
        elapsed = _now() - self._start
        migration = self._migration
        failed = migration._failed(error) if isinstance(error, Exception) else None
        _record(_block(migration), self.arm, elapsed, failed)

    async def __aenter__(self) -> Call:
        return self.__enter__()

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: types.TracebackType | None,
    ) -> None:
        self.__exit__(kind, error, traceback)

    def compare(
        self,
        legacy: Any = None,
        new: Any = None,
        *,
        legacy_error: BaseException | None = None,
        new_error: BaseException | None = None,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Verdict:
        """Judge what both branches gave (values, or the exceptions they raised) with the
        migration's comparator, and count it: drifts keep a redacted sample of ``args`` and
        ``kwargs``. Never raises."""
        migration = self._migration
        left = Observation(Arm.LEGACY, legacy, legacy_error)
        right = Observation(Arm.NEW, new, new_error)
        # judge() needs only what every Migration has: a wrapped migration of the same name
        # records through its own comparator and telemetry.
        return ReportedMigration.judge(
            migration,  # type: ignore[arg-type]
            self.arm.other,
            left,
            right,
            args,
            kwargs or {},
            self.unit,
        )


def observe(name: str, unit: object = None) -> Call:
    """Choose the arm for ``unit`` (an exposure) and record the run of the block that follows:
    ``with cutover.observe("pricing", unit=user_id) as call: ...``."""
    migration = _flags.get(name) or migration_for(name)
    return Call(migration, choose(name, unit), unit)


@dataclass(frozen=True, slots=True)
class Evaluation:
    """One flag evaluation: the arm, why, and the state it was read from."""

    flag: str
    arm: Arm
    reason: str
    state: State
    override: Mode | None

    @property
    def variant(self) -> str:
        return self.arm.value

    @property
    def metadata(self) -> dict[str, str | int | float | bool]:
        """What OpenFeature calls flag metadata: the mode in force, percent and state version."""
        mode = self.override or self.state.mode
        out: dict[str, str | int | float | bool] = {
            "mode": mode.value,
            "percent": self.state.effective_percent
            if self.override is None
            else (100.0 if self.override is Mode.NEW else 0.0),
            "version": self.state.version,
        }
        if self.override is not None:
            out["forced"] = True
        return out


def known_here(name: str) -> bool:
    """Whether ``name`` has a stored state, or a migration of that name is declared here."""
    return (
        name in rt.current().states or name in _flags or any(m.name == name for m in rt.declared())
    )


def count_exposure(name: str, arm: Arm) -> None:
    """Count one evaluation of migration ``name`` that chose ``arm`` (made elsewhere)."""
    migration = _flags.get(name) or migration_for(name)
    _block(migration)[N_EXPOSURES if arm is _NEW else L_EXPOSURES] += 1


def evaluate(
    name: str,
    unit: object,
    known: Callable[[str], bool] = known_here,
    *,
    count: bool = True,
) -> Evaluation:
    """:func:`choose` with its reason, counted unless ``count`` is false; UnknownMigration when
    ``known`` says ``name`` is not a migration (by default: no stored state and none declared in
    this process)."""
    if not known(name):
        raise UnknownMigration(name)
    runtime = rt.current()
    migration = migration_for(name)
    route = migration._route
    arm = choose(name, unit) if count else _arm(migration, route, unit)
    key = None if unit is None else f"{unit}"
    if route.override is not None:
        reason = DISABLED
    elif route.pins is not None and route.kind not in (LEGACY_ONLY, NEW_ONLY) and key in route.pins:
        reason = TARGETING_MATCH
    elif route.state.mode is Mode.CANARY:
        reason = SPLIT
    elif route.state.version == 0 and name not in runtime.states:
        reason = DEFAULT
    else:
        reason = STATIC
    return Evaluation(name, arm, reason, route.state, route.override)
