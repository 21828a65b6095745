"""Where states, windows, drift samples and decisions live: the Store protocol and its records."""

from __future__ import annotations

import enum
import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from cutover.compare._noise import NoiseCount
from cutover.errors import InvalidInput
from cutover.model import Arm, Decision, Rollout, State
from cutover.telemetry.drift import MAX_FINGERPRINTS, OTHER_FINGERPRINTS, DriftSample
from cutover.telemetry.histogram import Histogram
from cutover.telemetry.windows import ArmCounts, TelemetrySource, WindowDelta
from cutover.urls import as_url, redact_url

DEFAULT_STORE = "sqlite:///cutover.db"


@dataclass(frozen=True, slots=True)
class InstanceInfo:
    """What one app process last reported: who it is, which states it holds, what it overrides."""

    instance: str
    host: str
    pid: int
    started_at: float
    last_seen: float
    info: Mapping[str, Any] = field(default_factory=dict)


class FlushBatch:
    """An instance's telemetry since its previous flush: counters per window and migration,
    drift counts per fingerprint, drift samples, and the instance's heartbeat.

    ``(run, seq)`` makes it idempotent: ``run`` is random per process (and per fork), ``seq``
    counts its flushes, so a retried flush is recognised and two processes never collide even
    when they share an instance name. While the store is away, later flushes merge into the
    last batch that was never attempted (:meth:`absorb`), adding counts exactly.
    """

    __slots__ = (
        "_distinct",
        "_starts",
        "at",
        "attempted",
        "fingerprints",
        "heartbeat",
        "instance",
        "run",
        "samples",
        "seq",
        "windows",
    )

    def __init__(
        self,
        instance: str,
        seq: int,
        at: float,
        windows: Iterable[tuple[int, WindowDelta]] = (),
        samples: Iterable[DriftSample] = (),
        heartbeat: InstanceInfo | None = None,
        run: str = "",
        fingerprints: Iterable[tuple[int, str, str, int]] = (),
    ) -> None:
        self.instance = instance
        self.seq = seq
        self.at = at
        self.heartbeat = heartbeat
        self.run = run
        self.attempted = False  # a write was tried: its outcome may be unknown, never merge
        self.windows: dict[tuple[int, str], WindowDelta] = {}
        self.fingerprints: dict[tuple[int, str, str], int] = {}
        self.samples: list[DriftSample] = list(samples)
        self._starts: set[int] = set()
        self._distinct: dict[tuple[int, str], int] = {}
        for start, delta in windows:
            self.add_window(start, delta)
        for start, migration, fingerprint, count in fingerprints:
            self.add_drifts(start, migration, fingerprint, count)

    @property
    def empty(self) -> bool:
        return not (self.windows or self.samples or self.fingerprints)

    def starts(self) -> set[int]:
        """The window starts this batch holds counts for."""
        return self._starts

    def add_window(self, start: int, delta: WindowDelta) -> None:
        mine = self.windows.get((start, delta.migration))
        if mine is None:
            self.windows[(start, delta.migration)] = delta
        else:
            for arm, counts in delta.arms.items():
                mine.arms[arm].add(counts)
        self._starts.add(start)

    def add_drifts(self, start: int, migration: str, fingerprint: str, count: int) -> None:
        key = (start, migration, fingerprint)
        if key not in self.fingerprints:
            seen = self._distinct.get((start, migration), 0)
            if seen >= MAX_FINGERPRINTS:
                key = (start, migration, OTHER_FINGERPRINTS)
            else:
                self._distinct[(start, migration)] = seen + 1
        self.fingerprints[key] = self.fingerprints.get(key, 0) + count
        self._starts.add(start)

    def absorb(self, later: FlushBatch, max_samples: int = 1000) -> int:
        """Add a later batch's content to this one (never attempted, so still free to change):
        counts for the same window and migration add up exactly. Costs the size of ``later``,
        not of this batch. Returns how many samples were dropped to stay within ``max_samples``."""
        for (start, _migration), delta in later.windows.items():
            self.add_window(start, delta)
        for (start, migration, fingerprint), count in later.fingerprints.items():
            self.add_drifts(start, migration, fingerprint, count)
        self.samples.extend(later.samples)
        dropped = max(0, len(self.samples) - max_samples)
        if dropped:
            del self.samples[:dropped]
        self.at = later.at
        return dropped

    def drop_oldest(self) -> int:
        """Forget the oldest window start (memory is bounded); returns the window entries lost."""
        oldest = min(self._starts)
        lost = [key for key in self.windows if key[0] == oldest]
        for key in lost:
            del self.windows[key]
        for key in [key for key in self.fingerprints if key[0] == oldest]:
            del self.fingerprints[key]
        self._distinct = {key: n for key, n in self._distinct.items() if key[0] != oldest}
        self._starts.discard(oldest)
        return len(lost)


@dataclass(frozen=True, slots=True)
class DriftGroup:
    """The drifts of one root cause (fingerprint): an exact count and the latest sample."""

    fingerprint: str
    count: int  # every drift with this fingerprint, not just the sampled ones
    samples: int  # of those, how many were kept as samples
    first_at: float
    last_at: float
    example: DriftSample | None

    def to_json(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint,
            "drifts": self.count,
            "samples": self.samples,
            "first_at": self.first_at,
            "last_at": self.last_at,
            "example": self.example.to_dict() if self.example else None,
        }


DEFAULT_COHORT_WINDOW = 48 * 3600.0
"""How long after its promotion a cohort may be rolled back without forcing: two days."""


class CohortStatus(enum.StrEnum):
    """Where a cohort stands; every status has a command that leaves it."""

    PLANNED = "planned"  # its tenants follow the migration's state; `promote` pins them to new
    PROMOTED = "promoted"  # pinned to new; `rollback` pins them to legacy within the window
    ROLLED_BACK = "rolled-back"  # pinned to legacy; `promote` again once the cause is fixed


@dataclass(frozen=True, slots=True)
class Cohort:
    """A named group of tenants of one migration that moves to new together, in a wave.

    ``window`` is how many seconds after its promotion a rollback needs no force. ``version``
    increases with every change (compare-and-set); a cohort that was never stored has 0.
    """

    migration: str
    name: str
    wave: int
    tenants: tuple[str, ...]
    status: CohortStatus = CohortStatus.PLANNED
    window: float = DEFAULT_COHORT_WINDOW
    created_at: float = 0.0
    created_by: str = ""
    promoted_at: float | None = None
    rolled_back_at: float | None = None
    version: int = 0
    updated_at: float | None = None
    updated_by: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", CohortStatus(self.status))
        object.__setattr__(self, "tenants", tuple(str(tenant) for tenant in self.tenants))

    @property
    def rollback_until(self) -> float | None:
        """When the rollback window of a promoted cohort closes; None for any other status."""
        if self.status is not CohortStatus.PROMOTED or self.promoted_at is None:
            return None
        return self.promoted_at + self.window

    def evolve(self, **changes: Any) -> Cohort:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """As JSON, and as the columns of ``cutover_cohorts``."""
        return {
            "migration": self.migration,
            "name": self.name,
            "wave": self.wave,
            "tenants": list(self.tenants),
            "status": self.status.value,
            "window_seconds": self.window,
            "created_at": self.created_at,
            "created_by": self.created_by,
            "promoted_at": self.promoted_at,
            "rolled_back_at": self.rolled_back_at,
            "version": self.version,
            "updated_at": self.updated_at,
            "updated_by": self.updated_by,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Cohort:
        return cls(
            migration=data["migration"],
            name=data["name"],
            wave=int(data["wave"]),
            tenants=tuple(data.get("tenants") or ()),
            status=CohortStatus(data.get("status", "planned")),
            window=float(data.get("window_seconds", DEFAULT_COHORT_WINDOW)),
            created_at=float(data.get("created_at") or 0.0),
            created_by=data.get("created_by") or "",
            promoted_at=data.get("promoted_at"),
            rolled_back_at=data.get("rolled_back_at"),
            version=int(data.get("version", 0)),
            updated_at=data.get("updated_at"),
            updated_by=data.get("updated_by"),
        )


DEFAULT_LEASE = 15.0
"""How long a lease lasts after its holder last renewed it: a frozen leader is replaced within
about this much plus a third of it."""

MIN_LEASE = 1.0
"""The shortest lease: its holder renews it every third of its duration, each a write."""


@dataclass(frozen=True, slots=True)
class Fence:
    """The lease term a write is made under. The store checks it in the write's own
    transaction and refuses the write (with :class:`cutover.errors.LeaseLost`, writing nothing)
    once that term is over, so a holder that was frozen past its lease cannot act on waking."""

    role: str
    holder: str
    term: int
    duration: float  # the lease's duration: how long a write may stall inside its transaction


@dataclass(frozen=True, slots=True)
class NoiseRule:
    """A path prefix whose differences never count as drift for a migration (declared noise)."""

    migration: str
    prefix: str
    reason: str
    added_by: str
    added_at: float

    def to_json(self) -> dict[str, Any]:
        return {
            "prefix": self.prefix,
            "reason": self.reason,
            "added_by": self.added_by,
            "added_at": self.added_at,
        }


@dataclass(frozen=True, slots=True)
class RouteWindow:
    """An HTTP proxy's counts of one route and arm over one window, in one process."""

    route: str
    arm: Arm
    start: int
    calls: int = 0
    errors: int = 0
    timeouts: int = 0
    fallbacks: int = 0
    offpath: int = 0
    histogram: Histogram = field(default_factory=Histogram)


class Lease(Protocol):
    """A role held by at most one process at a time, for ``duration`` seconds after its last
    renewal by the database's clock (see :meth:`Store.leadership`)."""

    holder: str  # who this lease object is, as the lease row names it: host, pid, a suffix
    duration: float
    seen: tuple[str, int] | None  # the (holder, term) the last try found holding the lease

    def held(self) -> bool:
        """Renew the lease when this process holds it, else take it when it is free (never
        taken, released, or expired): True while this process leads. Every new holding
        starts a new, higher term."""
        ...

    def fence(self) -> Fence | None:
        """The fence for writes under the term held now; None while not holding."""
        ...

    def release(self) -> None:
        """Give the lease up now (harmless when not holding), so another takes it at once."""
        ...


class Store(TelemetrySource, Protocol):
    """What cutover needs from a store; :class:`cutover.store.sql.SqlStore` implements it."""

    url: str

    def states(self) -> dict[str, State]: ...

    def state(self, name: str) -> State | None: ...

    def write_state(
        self,
        name: str,
        state: State,
        *,
        expected_version: int,
        actor: str,
        reason: str,
        evidence: Mapping[str, Any] | None = None,
        at: float,
        fence: Fence | None = None,
    ) -> Decision: ...

    def commit(
        self,
        name: str,
        *,
        kind: str,
        actor: str,
        reason: str,
        at: float,
        evidence: Mapping[str, Any] | None = None,
        state: State | None = None,
        expected_version: int | None = None,
        rollout: Rollout | None = None,
        expected_rollout: int | None = None,
        cohort: Cohort | None = None,
        expected_cohort: int | None = None,
        remove_cohort: bool = False,
        fence: Fence | None = None,
    ) -> Decision:
        """Record one decision, and what it changes, in one transaction: each of ``state``,
        ``rollout`` and ``cohort`` by compare-and-set against its own expected version (0 when
        none is stored yet); ``remove_cohort`` deletes ``cohort`` instead of writing it. A
        cohort that would share a tenant with another cohort of the migration raises
        InvalidInput; a lost compare-and-set raises ConflictError; a ``fence`` whose term is
        over raises LeaseLost; each writes nothing."""
        ...

    def cohorts(self, name: str | None = None) -> list[Cohort]:
        """The cohorts of migration ``name`` (of every migration when None), by wave and name."""
        ...

    def cohort(self, name: str, cohort: str) -> Cohort | None: ...

    def decisions(self, name: str | None = None, limit: int = 100) -> list[Decision]: ...

    def rollout(self, name: str) -> Rollout | None: ...

    def rollouts(self) -> dict[str, Rollout]: ...

    def leadership(self, role: str = "controller", *, duration: float = DEFAULT_LEASE) -> Lease:
        """A lease on ``role`` that at most one process holds at a time: ``duration`` seconds
        after each renewal, by the database's clock; at least :data:`MIN_LEASE`."""
        ...

    def write_flush(self, batch: FlushBatch) -> bool: ...

    def migrations(self) -> list[str]: ...

    def drift_samples(
        self, name: str, limit: int = 20, since: float | None = None, fingerprint: str | None = None
    ) -> list[DriftSample]: ...

    def drift_groups(self, name: str, since: float | None = None) -> list[DriftGroup]: ...

    def write_noise(
        self, migration: str, instance: str, counts: Iterable[NoiseCount], at: float
    ) -> None: ...

    def noise(self, migration: str) -> list[NoiseCount]: ...

    def noise_rules(self, migration: str) -> list[NoiseRule]: ...

    def write_route_windows(
        self, migration: str, instance: str, rows: Iterable[RouteWindow]
    ) -> None: ...

    def route_windows(
        self, migration: str, since: float, until: float | None = None
    ) -> dict[str, dict[Arm, ArmCounts]]: ...

    def instances(self) -> list[InstanceInfo]: ...

    def heartbeat(self, info: InstanceInfo) -> None: ...

    def gc(self, before: float) -> dict[str, int]: ...

    @property
    def notifies(self) -> bool:
        """True when the store announces state changes and :meth:`listen` hears them."""
        ...

    def listen(
        self,
        changed: Callable[[], None],
        stop: threading.Event,
        connected: Callable[[bool], None] = ...,
    ) -> None: ...

    def after_fork_in_child(self) -> None: ...

    def close(self) -> None: ...


def normalize_url(url: str | os.PathLike[str]) -> str:
    """The SQLAlchemy URL for what a user wrote: a path or ``sqlite:///``, ``postgresql://``,
    or a libpq keyword string (``host=db dbname=app``), which is PostgreSQL."""
    text = os.fspath(url).strip()
    if not text:
        raise InvalidInput("the store URL is empty; give sqlite:///path.db or postgresql://...")
    text = as_url(text, "the store URL")
    scheme, sep, rest = text.partition("://")
    if not sep:
        if text == ":memory:":
            raise InvalidInput(
                "an in-memory store is not shared between threads; give a file like sqlite:///cutover.db"
            )
        return "sqlite:///" + text  # a plain path is an SQLite file
    scheme = scheme.lower()
    if scheme in ("sqlite", "sqlite+pysqlite"):
        if rest in ("", "/", "/:memory:"):
            raise InvalidInput(
                "an in-memory SQLite store is not shared between threads and processes;"
                " give a file like sqlite:///cutover.db"
            )
        return "sqlite:///" + rest[1:] if rest.startswith("/") else text
    if scheme in ("postgresql", "postgres", "postgresql+psycopg", "postgresql+psycopg2"):
        try:
            import psycopg  # noqa: F401
        except ImportError:
            raise InvalidInput(
                "a PostgreSQL store needs the driver: pip install 'cutover[postgres]'"
            ) from None
        return "postgresql+psycopg://" + rest
    raise InvalidInput(
        f"unsupported store URL scheme {scheme!r}; use sqlite:///path.db or postgresql://user@host/db"
    )


def open_store(
    url: str | os.PathLike[str] | None = None,
    *,
    telemetry_url: str | None = None,
    window_seconds: int = 60,
) -> Store:
    """The store at ``url``, else ``$CUTOVER_STORE``, else ``./cutover.db``; the schema is created
    on first use. With ``telemetry_url`` (else ``$CUTOVER_TELEMETRY_URL``), a Prometheus server
    scraping every instance, windows are read from it and never written to the store
    (see :mod:`cutover.telemetry.source`); ``window_seconds`` is the instances' window."""
    from cutover.store.sql import SqlStore

    chosen = url if url is not None else os.environ.get("CUTOVER_STORE") or DEFAULT_STORE
    prometheus = telemetry_url or os.environ.get("CUTOVER_TELEMETRY_URL") or ""
    if not prometheus.strip():
        return SqlStore(os.fspath(chosen))
    from cutover.telemetry.source import PrometheusTelemetry, PrometheusTelemetryStore

    source = PrometheusTelemetry(prometheus, window_seconds=window_seconds)
    return PrometheusTelemetryStore(SqlStore(os.fspath(chosen)), source)  # type: ignore[return-value]


__all__: Sequence[str] = [
    "DEFAULT_COHORT_WINDOW",
    "DEFAULT_LEASE",
    "DEFAULT_STORE",
    "MIN_LEASE",
    "Cohort",
    "CohortStatus",
    "DriftGroup",
    "Fence",
    "FlushBatch",
    "InstanceInfo",
    "Lease",
    "NoiseRule",
    "RouteWindow",
    "Store",
    "normalize_url",
    "open_store",
    "redact_url",
]
