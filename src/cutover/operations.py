"""Operator actions and reports, shared by the CLI and the HTTP API (which hold no logic)."""

from __future__ import annotations

import getpass
import os
import random
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from cutover.clock import Clock
from cutover.errors import ConflictError, InvalidInput, UnknownMigration
from cutover.model import Decision, Mode, State, check_percent, check_share, pin_changes
from cutover.routing import env_override
from cutover.stats import MigrationStats, summarize
from cutover.store import InstanceInfo, Store

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
    """The stored state of ``name`` (None if it only has telemetry); UnknownMigration if neither."""
    state = store.state(name)
    if state is None and name not in store.migrations():
        raise UnknownMigration(name)
    return state


def stats(
    store: Store, name: str, window_seconds: float, now: float, until: float | None = None
) -> MigrationStats:
    """The report over the ``window_seconds`` before ``until`` (default: ``now``), summed over
    every instance's windows."""
    state = require_known(store, name)
    end = now if until is None else until
    since = end - window_seconds
    windows = store.windows(name, since, None if until is None else until)
    return summarize(name, state, windows, since=since, until=end)


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
