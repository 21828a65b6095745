"""Operator actions and reports, shared by the CLI and the HTTP API (which hold no logic)."""

from __future__ import annotations

import enum
import getpass
import math
import os
import random
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from cutover.clock import Clock
from cutover.errors import ConflictError, InvalidInput, UnknownMigration
from cutover.model import (
    Arm,
    Decision,
    Mode,
    Rollout,
    RolloutStatus,
    State,
    check_percent,
    check_share,
    pin_changes,
)
from cutover.routing import env_override
from cutover.stats import ArmStats, MigrationStats, Point, series, summarize, whole_windows
from cutover.store import InstanceInfo, NoiseRule, Store
from cutover.telemetry.windows import ArmCounts
from cutover.text import check_name, check_text

LIVE_SECONDS = 60.0
"""An instance that reported within this many seconds (or three of its flush intervals, if
longer) counts as live in ``status`` and ``instances``."""


def is_live(instance: InstanceInfo, now: float) -> bool:
    interval = float(instance.info.get("flush_interval") or 0)
    return now - instance.last_seen <= max(LIVE_SECONDS, 3 * interval)


RELATIVE_RETRIES = 20
"""How often a relative change is re-read and retried after losing a race, with a growing,
randomized pause between attempts so that racing writers spread out."""


def default_actor() -> str:
    """Who is acting: ``$CUTOVER_ACTOR``, else user@host."""
    explicit = os.environ.get("CUTOVER_ACTOR", "").strip()
    if explicit:
        return explicit
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def require_known(store: Store, name: str) -> State | None:
    """The stored state of ``name`` (None if it only has telemetry or a rollout waiting for its
    first approval); UnknownMigration if it has none of these, InvalidInput if ``name`` is not
    a migration name at all."""
    state = store.state(check_name(name))
    if state is None and store.rollout(name) is None and name not in store.migrations():
        raise UnknownMigration(name)
    return state


@dataclass(frozen=True, slots=True)
class RouteStats:
    """One route of an HTTP migration over a window: both arms."""

    route: str
    legacy: ArmStats
    new: ArmStats

    def to_json(self) -> dict[str, Any]:
        return {"route": self.route, "legacy": self.legacy.to_json(), "new": self.new.to_json()}


def route_stats(
    store: Store, name: str, window_seconds: float, now: float, until: float | None = None
) -> list[RouteStats]:
    """Per route of a migration served by `cutover proxy`, over the same whole windows as
    :func:`stats`, busiest first."""
    require_known(store, name)
    end = now if until is None else until
    since, widened_end = whole_windows(end - window_seconds, until)
    routes = store.route_windows(name, since, widened_end)
    rows = [
        RouteStats(route, ArmStats.of(arms[Arm.LEGACY]), ArmStats.of(arms[Arm.NEW]))
        for route, arms in routes.items()
    ]
    return sorted(rows, key=lambda row: (-(row.legacy.calls + row.new.calls), row.route))


def noise_rule(
    store: Store,
    name: str,
    prefix: str,
    *,
    remove: bool = False,
    actor: str,
    reason: str,
    clock: Clock,
    evidence: dict[str, Any] | None = None,
) -> Decision:
    """Declare (or, with ``remove``, drop) a path prefix as noise for ``name``: differences
    under it never count as drift. Recorded as a decision, like any change."""
    require_known(store, name)
    path = prefix.strip()
    if not path.startswith("$") or len(path) > 1000:
        raise InvalidInput(
            f"noise prefix {prefix!r} must be a path like $.body.request_id (at most 1000"
            " characters)"
        )
    check_text(path, "the noise prefix")
    if not reason.strip():
        raise InvalidInput("give a reason: it goes into the decision log")
    at = clock()
    return store.commit(
        name,
        kind="noise-remove" if remove else "noise-add",
        actor=actor,
        reason=reason.strip(),
        at=at,
        evidence={"prefix": path, **(evidence or {})},
        noise_rule=NoiseRule(name, path, reason.strip(), actor, at),
        remove_noise_rule=remove,
    )


def noise(store: Store, name: str) -> dict[str, Any]:
    """What is noise for ``name``: the declared prefixes and what instances learned."""
    require_known(store, name)
    return {
        "migration": name,
        "rules": [rule.to_json() for rule in store.noise_rules(name)],
        "learned": [count.to_json() for count in store.noise(name)],
    }


def stats(
    store: Store, name: str, window_seconds: float, now: float, until: float | None = None
) -> MigrationStats:
    """The report over the ``window_seconds`` before ``until`` (default: ``now``), summed over
    every instance's windows, widened to whole windows (the report says so)."""
    state = require_known(store, name)
    end = now if until is None else until
    since, widened_end = whole_windows(end - window_seconds, until)
    windows = store.windows(name, since, widened_end)
    covered = end if widened_end is None else widened_end
    return summarize(
        name, state, windows, since=since, until=covered, requested=(end - window_seconds, end)
    )


@dataclass(frozen=True, slots=True)
class Change:
    """What an operator asked to change; fields left None keep their current value."""

    mode: Mode | None = None
    percent: float | None = None
    percent_delta: float | None = None  # relative: "+5" or "-10"
    sample: float | None = None
    fallback: bool | None = None
    pin_new: tuple[str, ...] = ()
    pin_legacy: tuple[str, ...] = ()
    unpin: tuple[str, ...] = ()

    @property
    def relative(self) -> bool:
        return self.percent_delta is not None

    @property
    def empty(self) -> bool:
        return (
            self.mode is None
            and self.percent is None
            and self.percent_delta is None
            and self.sample is None
            and self.fallback is None
            and not (self.pin_new or self.pin_legacy or self.unpin)
        )

    def apply(self, state: State) -> State:
        percent = state.percent
        if self.percent is not None:
            percent = check_percent(self.percent)
        if self.percent_delta is not None:
            moved = round(state.percent + self.percent_delta, 2)
            percent = check_percent(min(100.0, max(0.0, moved)))
        pins_new, pins_legacy = pin_changes(
            state, pin_new=self.pin_new, pin_legacy=self.pin_legacy, unpin=self.unpin
        )
        return state.evolve(
            mode=self.mode or state.mode,
            percent=percent,
            sample=state.sample if self.sample is None else check_share(self.sample),
            fallback=state.fallback if self.fallback is None else self.fallback,
            pins_new=pins_new,
            pins_legacy=pins_legacy,
        )


def parse_percent(text: str) -> tuple[float | None, float | None]:
    """``"25"`` -> (25, None); ``"+5"`` / ``"-10"`` -> (None, +5 / -10): a relative change."""
    raw = text.strip()
    if raw[:1] in "+-" and len(raw) > 1:
        try:
            delta = float(raw)
        except ValueError:
            raise InvalidInput(f"--percent {text!r} is not a number; write 25, +5 or -10") from None
        check_percent(abs(delta), "--percent change")
        return None, delta
    return check_percent(raw, "--percent"), None


def set_state(
    store: Store,
    name: str,
    change: Change,
    *,
    reason: str,
    actor: str,
    clock: Clock,
    expected_version: int | None = None,
    evidence: dict[str, Any] | None = None,
) -> Decision | None:
    """Apply ``change`` by compare-and-set and record the decision; None when nothing changes.

    An absolute change is written against the version read (or ``expected_version``) and a
    concurrent writer makes it fail with ConflictError. A relative percent change is re-read
    and retried, since "+5" still means what the operator meant on the newer state.
    """
    check_name(name)
    if not reason or not reason.strip():
        raise InvalidInput('a reason is required: say why with --reason "..."')
    if change.empty:
        raise InvalidInput(
            "nothing to change: give --mode, --percent, --sample, --fallback/--no-fallback,"
            " --pin-new, --pin-legacy or --unpin"
        )
    attempts = RELATIVE_RETRIES if change.relative and expected_version is None else 1
    for attempt in range(attempts):
        current = store.state(name)
        base = current or State()
        version = base.version
        if expected_version is not None and expected_version != version:
            raise ConflictError(name, expected_version, version, base.updated_by)
        proposed = change.apply(base)
        if current is not None and proposed.same_settings(current):
            return None
        try:
            return store.write_state(
                name,
                proposed,
                expected_version=version,
                actor=actor,
                reason=reason.strip(),
                evidence=evidence or {},
                at=clock(),
            )
        except ConflictError:
            if attempt == attempts - 1:
                raise
            time.sleep(random.uniform(0, 0.005 * (attempt + 1)))
    raise AssertionError("unreachable")


@dataclass(frozen=True, slots=True)
class Override:
    instance: str
    mode: str
    variable: str


@dataclass(frozen=True, slots=True)
class MigrationStatus:
    """One line of ``cutover status``: the stored state and what live instances report."""

    name: str
    state: State | None
    instances: int = 0  # live instances running this migration
    versions: tuple[int, ...] = ()  # the state versions those instances hold
    oldest_state_age: float | None = None  # seconds since the stalest instance refreshed
    overrides: tuple[Override, ...] = ()
    local_override: Mode | None = None  # CUTOVER_FORCE_<NAME> in this shell's environment
    stale: tuple[str, ...] = field(default_factory=tuple)  # instances holding an older version

    def to_json(self) -> dict[str, Any]:
        state = self.state
        return {
            "name": self.name,
            "stored": state is not None,
            **(state or State()).to_dict(),
            "effective_percent": (state or State()).effective_percent,
            "instances": self.instances,
            "instance_versions": list(self.versions),
            "oldest_state_age_seconds": self.oldest_state_age,
            "overrides": [
                {"instance": o.instance, "mode": o.mode, "variable": o.variable}
                for o in self.overrides
            ],
            "local_override": self.local_override.value if self.local_override else None,
            "stale_instances": list(self.stale),
        }


def status(store: Store, now: float) -> list[MigrationStatus]:
    states = store.states()
    names = sorted(set(states) | set(store.migrations()))
    live = [i for i in store.instances() if is_live(i, now)]
    return [_status_of(name, states.get(name), live, now) for name in names]


def status_of(store: Store, name: str, state: State | None, now: float) -> MigrationStatus:
    """The ``status`` line of one migration."""
    live = [i for i in store.instances() if is_live(i, now)]
    return _status_of(name, state, live, now)


def _status_of(
    name: str, state: State | None, live: Iterable[InstanceInfo], now: float
) -> MigrationStatus:
    versions = []
    ages = []
    overrides = []
    stale = []
    count = 0
    for instance in live:
        held = (instance.info.get("versions") or {}).get(name)
        if held is None:
            continue
        count += 1
        versions.append(int(held))
        loaded = instance.info.get("states_loaded_at")
        ages.append(None if loaded is None else max(0.0, now - float(loaded)))
        if state is not None and int(held) < state.version:
            stale.append(instance.instance)
        forced = (instance.info.get("overrides") or {}).get(name)
        if forced:
            overrides.append(Override(instance.instance, forced["mode"], forced["variable"]))
    try:
        local = env_override(name)
    except InvalidInput:
        local = None
    known_ages = [age for age in ages if age is not None]
    return MigrationStatus(
        name=name,
        state=state,
        instances=count,
        versions=tuple(sorted(set(versions))),
        oldest_state_age=max(known_ages) if known_ages else None,
        overrides=tuple(overrides),
        local_override=local,
        stale=tuple(stale),
    )


def time_series(
    store: Store, name: str, *, since: float, until: float, step: float, known: bool = False
) -> list[Point]:
    """Both arms of ``name`` per bucket of ``step`` seconds over [since, until), the first
    bucket aligned down to a multiple of ``step``, with latency percentiles: what the dashboard
    charts. ``known``: the caller knows the migration exists (the store is not asked)."""
    if not known:
        require_known(store, name)
    if step <= 0:
        raise InvalidInput("the step of a series must be a positive duration, like 1m")
    first = since // step * step
    if math.ceil((until - first) / step - 1e-9) > MAX_POINTS:
        raise InvalidInput(
            f"a series holds at most {MAX_POINTS} points; choose a step of at least"
            f" {math.ceil((until - since) / (MAX_POINTS - 1))}s for this span"
        )
    windows = store.series(name, first, until, histograms_since=first)
    return series(windows, since=since, until=until, step=step)  # aligns as above


MAX_POINTS = 1440
"""The most buckets one series may hold: a day of minutes."""


class Level(enum.StrEnum):
    """How a migration looks at a glance, from worst to best."""

    CRITICAL = "critical"  # its rollout rolled back
    WARNING = "warning"  # drifts, new failing clearly more than legacy, fallbacks, or a pause
    OK = "ok"  # traffic and nothing of the above
    IDLE = "idle"  # no calls in the window


@dataclass(frozen=True, slots=True)
class Health:
    level: Level
    reasons: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"level": self.level.value, "reasons": list(self.reasons)}


def health(report: MigrationStats, rollout: Rollout | None) -> Health:
    """A migration's level over ``report``'s window, with the reasons for it."""
    critical = []
    warnings = []
    if rollout is not None:
        if rollout.status is RolloutStatus.ROLLED_BACK:
            critical.append(f"rollout rolled back: {rollout.reason}")
        elif rollout.status is RolloutStatus.PAUSED:
            warnings.append(f"rollout paused: {rollout.reason}")
    if report.drifts:
        warnings.append(
            f"{_count(report.drifts, 'drift')} in {_count(report.comparisons, 'comparison')}"
        )
    legacy, new = report.legacy, report.new
    if _fails_more(new.errors, new.calls, legacy.errors, legacy.calls):
        warnings.append(
            f"new fails {new.error_rate:.2%} of its calls, legacy {legacy.error_rate or 0:.2%}"
        )
    if new.fallbacks:
        warnings.append(f"{_count(new.fallbacks, 'call')} fell back to legacy")
    if critical:
        return Health(Level.CRITICAL, tuple(critical + warnings))
    if warnings:
        return Health(Level.WARNING, tuple(warnings))
    if legacy.calls + new.calls == 0:
        return Health(Level.IDLE, ("no calls in the window",))
    return Health(Level.OK)


ERRORS_Z = 3.0
"""How many standard errors new's error rate must exceed legacy's by before the overview
warns: a handful of errors in a young canary is noise, not news (the rollout's checks judge
with exact intervals; this is only the at-a-glance signal)."""


def _fails_more(errors: int, calls: int, base_errors: int, base_calls: int) -> bool:
    """A one-sided two-proportion z-test: does new fail more often than legacy?"""
    if not errors or not calls or not base_calls:
        return False
    pooled = (errors + base_errors) / (calls + base_calls)
    spread = math.sqrt(pooled * (1 - pooled) * (1 / calls + 1 / base_calls))
    return spread > 0 and (errors / calls - base_errors / base_calls) / spread > ERRORS_Z


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


@dataclass(frozen=True, slots=True)
class Overview:
    """One migration at a glance: state, rollout, recent stats and health."""

    name: str
    state: State | None
    rollout: Rollout | None
    stats: MigrationStats
    health: Health

    def to_json(self) -> dict[str, Any]:
        rollout = self.rollout
        return {
            "name": self.name,
            "state": (self.state or State()).to_dict(),
            "stored": self.state is not None,
            "rollout": None
            if rollout is None
            else {
                "status": rollout.status.value,
                "step": rollout.step,
                "steps": len(rollout.plan.get("steps", ())),
                "reason": rollout.reason,
                "started_by": rollout.started_by,
                "step_started_at": rollout.step_started_at,
                "version": rollout.version,
            },
            "stats": self.stats.to_json(),
            "health": self.health.to_json(),
        }


def overview(store: Store, now: float, window_seconds: float = 300.0) -> list[Overview]:
    """Every migration at a glance over the last ``window_seconds``, in a few statements
    however many migrations there are."""
    asked = (now - window_seconds, now)
    since, _ = whole_windows(asked[0], None)
    states = store.states()
    rollouts = store.rollouts()
    totals = store.totals(since)
    names = sorted(set(states) | set(rollouts) | set(totals) | set(store.migrations()))
    out = []
    for name in names:
        state = states.get(name)
        arms = totals.get(name) or {Arm.LEGACY: ArmCounts(), Arm.NEW: ArmCounts()}
        report = summarize(name, state, arms, since=since, until=now, requested=asked)
        rollout = rollouts.get(name)
        out.append(Overview(name, state, rollout, report, health(report, rollout)))
    return out
