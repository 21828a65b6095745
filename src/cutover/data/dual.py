"""Dual write and read: one keyed table kept in step across a legacy and a new store, per tenant.

A :class:`DualStore` wraps two repositories (anything with ``get``, ``put`` and ``delete``) and
is itself a migration: its state (``cutover set NAME --mode shadow``, canary percents, pins, the
rollout controller) decides per tenant how writes reach the two sides and which side reads
are served from, and its calls, errors, comparisons and drifts are counted like any
migration's, so they show in ``cutover status``, ``cutover stats``, ``cutover drifts`` and the
dashboard.

The state table (``strategies_for``), per tenant (the routing unit)::

    state for this tenant                                    write           read
    pinned legacy (any mode)                                 legacy-only     legacy
    mode legacy (not pinned new)                             legacy-only     legacy
    mode shadow (not pinned)                                 legacy-primary  compare
    mode canary, tenant routed to legacy                     mirror          compare
    canary routed to new; pinned new in legacy/shadow/canary mirror          prefer-new
    mode new, fallback on                                    new-primary     prefer-new
    mode new, fallback off                                   new-only        new

Failure semantics: the truth side (legacy for legacy-only, legacy-primary and mirror; new for
new-primary and new-only) is written first, and if that write fails the caller gets the
exception. Every failure that may leave the two sides different is put in the outbox (in
memory, and in a JSON Lines journal when one is given); :meth:`DualStore.replay` copies the
truth side's current row, or its absence, to the other side.
"""

from __future__ import annotations

import collections
import contextlib
import datetime
import decimal
import enum
import functools
import itertools
import json
import logging
import os
import random
import threading
import time
import uuid
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol, TypeVar, runtime_checkable

import sqlalchemy as sa
from sqlalchemy.dialects import mysql as mysql_dialect
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect

from cutover.compare import Comparator, exact, exceptions, judge
from cutover.data._files import replace_durably
from cutover.errors import CutoverError, InvalidInput
from cutover.migration import ReportedMigration
from cutover.model import Arm, Mode, Observation, State, Verdict, check_share
from cutover.routing import bucket, threshold
from cutover.runtime import limited
from cutover.store import redact_url
from cutover.telemetry.drift import Redactor
from cutover.telemetry.windows import (
    DROPPED,
    ERRORS,
    FALLBACKS,
    OFFPATH,
)
from cutover.urls import scrub

log = logging.getLogger("cutover")

_now = time.perf_counter_ns
_random = random.random

Row = dict[str, Any]
TenantOf = Callable[[Any, Mapping[str, Any] | None], object]
"""``tenant(key, row) -> tenant`` (``row`` is None for get and delete); None: no tenant."""


class GuardrailError(CutoverError):
    """A prefer-new read was refused: the tenant drifted more than its tolerance allows."""

    def __init__(self, name: str, tenant: str | None, rate: float, tolerance: float) -> None:
        who = "reads without a tenant" if tenant is None else f"tenant {tenant!r}"
        super().__init__(
            f"prefer-new reads of {name!r} are refused for {who}: {rate:.2%} of its compared"
            f" operations drifted, above its tolerance of {tolerance:.2%}; replay or reconcile"
            " the drifts and call reset_drift(), or raise the tolerance"
        )
        self.name = name
        self.tenant = tenant
        self.rate = rate
        self.tolerance = tolerance


# -- strategies ----------------------------------------------------------------------------


class WriteStrategy(enum.StrEnum):
    """How a write reaches the two sides."""

    LEGACY_ONLY = "legacy-only"  # legacy alone
    LEGACY_PRIMARY = "legacy-primary"  # legacy, then new; new's failure is recorded, not raised
    MIRROR = "mirror"  # legacy, then new; new's failure undoes legacy's write and is raised
    NEW_PRIMARY = "new-primary"  # new, then legacy; legacy's failure is recorded, not raised
    NEW_ONLY = "new-only"  # new alone

    @property
    def truth(self) -> Arm:
        """The side written first, whose failure the caller gets, and that replays copy from."""
        if self in (WriteStrategy.NEW_PRIMARY, WriteStrategy.NEW_ONLY):
            return Arm.NEW
        return Arm.LEGACY

    @property
    def follower(self) -> Arm | None:
        """The side kept in step after the truth side, or None when only one side is written."""
        if self in (WriteStrategy.LEGACY_ONLY, WriteStrategy.NEW_ONLY):
            return None
        return self.truth.other

    @classmethod
    def parse(cls, value: WriteStrategy | str) -> WriteStrategy:
        return _parse(cls, value, "write strategy")


class ReadStrategy(enum.StrEnum):
    """Which side a read is served from."""

    LEGACY = "legacy"  # legacy alone
    COMPARE = "compare"  # legacy serves; new is read off the caller's path and compared
    PREFER_NEW = "prefer-new"  # new serves; legacy when new lacks the row or fails
    NEW = "new"  # new alone

    @classmethod
    def parse(cls, value: ReadStrategy | str) -> ReadStrategy:
        return _parse(cls, value, "read strategy")


_E = TypeVar("_E", WriteStrategy, ReadStrategy)


def _parse(kind: type[_E], value: _E | str, what: str) -> _E:
    if isinstance(value, kind):
        return value
    text = str(value).strip().lower().replace("_", "-")
    try:
        return kind(text)
    except ValueError:
        names = ", ".join(member.value for member in kind)
        raise InvalidInput(f"unknown {what} {value!r}; use one of {names}") from None


@dataclass(frozen=True, slots=True)
class Strategies:
    """The write and read strategy of one tenant; unpacks as ``write, read = ...``."""

    write: WriteStrategy
    read: ReadStrategy

    def __iter__(self) -> Iterator[WriteStrategy | ReadStrategy]:
        yield self.write
        yield self.read

    def to_dict(self) -> dict[str, str]:
        return {"write": self.write.value, "read": self.read.value}


_LEGACY = Strategies(WriteStrategy.LEGACY_ONLY, ReadStrategy.LEGACY)
_SHADOW = Strategies(WriteStrategy.LEGACY_PRIMARY, ReadStrategy.COMPARE)
_DUAL = Strategies(WriteStrategy.MIRROR, ReadStrategy.COMPARE)
_PREFER_NEW = Strategies(WriteStrategy.MIRROR, ReadStrategy.PREFER_NEW)
_NEW_FIRST = Strategies(WriteStrategy.NEW_PRIMARY, ReadStrategy.PREFER_NEW)
_NEW = Strategies(WriteStrategy.NEW_ONLY, ReadStrategy.NEW)


def strategies_for(
    migration: str, state: State, unit: object, *, override: Mode | None = None
) -> Strategies:
    """The write and read strategies of ``unit`` (a tenant) under ``state``, by the state table.

    ``override`` is a ``CUTOVER_FORCE_<NAME>`` kill switch: it replaces the stored mode and,
    as for every migration, makes pins irrelevant. Canary routes a unit to new exactly as
    :func:`cutover.routing.serving_arm` does (the same bucket, the same percent).
    """
    mode = override or state.mode
    key = f"{unit}"
    pinned = override is None
    if pinned and key in state.pins_legacy:
        return _LEGACY
    if mode is Mode.NEW:
        return _NEW_FIRST if state.fallback else _NEW
    if pinned and key in state.pins_new:
        return _PREFER_NEW
    if mode is Mode.LEGACY:
        return _LEGACY
    if mode is Mode.SHADOW:
        return _SHADOW
    routed_new = bucket(migration, key) < threshold(state.percent)
    return _PREFER_NEW if routed_new else _DUAL


# -- repositories --------------------------------------------------------------------------


@runtime_checkable
class Repository(Protocol):
    """A keyed table: ``get`` returns the row or None, ``put`` upserts, ``delete`` removes."""

    def get(self, key: Any) -> Mapping[str, Any] | None: ...

    def put(self, key: Any, row: Mapping[str, Any]) -> None: ...

    def delete(self, key: Any) -> None: ...


class MemoryRepository:
    """A repository in a dict (thread-safe): for examples, tests and small caches."""

    def __init__(self, rows: Mapping[Any, Mapping[str, Any]] | None = None) -> None:
        self._rows: dict[Any, Row] = {k: dict(v) for k, v in (rows or {}).items()}
        self._lock = threading.Lock()

    def get(self, key: Any) -> Row | None:
        with self._lock:
            row = self._rows.get(key)
        return None if row is None else dict(row)

    def put(self, key: Any, row: Mapping[str, Any]) -> None:
        with self._lock:
            self._rows[key] = dict(row)

    def delete(self, key: Any) -> None:
        with self._lock:
            self._rows.pop(key, None)

    def rows(self) -> dict[Any, Row]:
        """A copy of every row by key."""
        with self._lock:
            return {key: dict(row) for key, row in self._rows.items()}


class TableRepository:
    """A SQLAlchemy Core table as a repository: rows are dicts of column values, and the key is
    the key column's value (a tuple of values for a key of several columns).

    ``put`` is an upsert in one transaction (``ON CONFLICT`` on SQLite and PostgreSQL,
    ``ON DUPLICATE KEY`` on MySQL and MariaDB, else update-then-insert); it writes the columns
    the row names, and the key columns from ``key``.
    """

    def __init__(
        self,
        engine: sa.Engine | str,
        table: sa.Table | str,
        *,
        key: str | Sequence[str] | None = None,
    ) -> None:
        self._owned = isinstance(engine, str)
        if isinstance(engine, str):
            try:
                engine = sa.create_engine(engine)
            except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, ValueError) as error:
                raise InvalidInput(
                    f"cannot use the database URL {redact_url(engine)!r}:"
                    f" {scrub(str(error), engine)}; give a"
                    " SQLAlchemy URL such as sqlite:///app.db or postgresql+psycopg://host/db"
                ) from None
        if not isinstance(engine, sa.Engine):
            raise InvalidInput(f"engine must be a SQLAlchemy Engine or URL, got {engine!r}")
        self.engine = engine
        if isinstance(table, str):
            schema, _, name = table.rpartition(".")
            try:
                table = sa.Table(name, sa.MetaData(), schema=schema or None, autoload_with=engine)
            except sa.exc.NoSuchTableError:
                raise InvalidInput(
                    f"table {table!r} does not exist in {redact_url(str(engine.url))};"
                    " create it or fix the name"
                ) from None
        if not isinstance(table, sa.Table):
            raise InvalidInput(f"table must be a SQLAlchemy Table or a name, got {table!r}")
        self.table = table
        names = (key,) if isinstance(key, str) else tuple(key or ())
        if not names:
            names = tuple(column.name for column in table.primary_key.columns)
        if not names:
            raise InvalidInput(
                f"table {table.fullname!r} has no primary key; name its key columns with key="
            )
        unknown = [name for name in names if name not in table.c]
        if unknown:
            raise InvalidInput(
                f"key column {unknown[0]!r} is not a column of {table.fullname!r}; the columns"
                f" are {', '.join(table.c.keys())}"
            )
        self.key = names
        self._key_columns = [table.c[name] for name in names]
        dialect = engine.dialect.name
        unique = _unique_column_sets(table)
        self._upsert: Callable[[dict[str, Any]], sa.Executable] | None = None
        if frozenset(names) in unique:
            if dialect in ("sqlite", "postgresql"):
                self._upsert = self._on_conflict
            elif dialect in ("mysql", "mariadb") and len(unique) == 1:
                # ON DUPLICATE KEY fires on any unique key: safe when the key is the only one.
                self._upsert = self._on_duplicate_key

    def __repr__(self) -> str:
        return f"<TableRepository {self.table.fullname!r} on {redact_url(str(self.engine.url))}>"

    def _where(self, key: Any) -> list[sa.ColumnElement[bool]]:
        if len(self._key_columns) == 1:
            if isinstance(key, tuple | list) and len(key) == 1:
                key = key[0]
            return [self._key_columns[0] == key]
        if not isinstance(key, tuple | list) or len(key) != len(self._key_columns):
            raise InvalidInput(
                f"the key of {self.table.fullname!r} is ({', '.join(self.key)}); give a tuple of"
                f" {len(self.key)} values, got {key!r}"
            )
        return [column == value for column, value in zip(self._key_columns, key, strict=True)]

    def _key_values(self, key: Any) -> dict[str, Any]:
        if len(self.key) == 1:
            if isinstance(key, tuple | list) and len(key) == 1:
                key = key[0]
            return {self.key[0]: key}
        self._where(key)  # validates the shape
        return dict(zip(self.key, key, strict=True))

    def get(self, key: Any) -> Row | None:
        with self.engine.connect() as conn:
            found = conn.execute(sa.select(self.table).where(*self._where(key))).mappings().first()
        return None if found is None else dict(found)

    def put(self, key: Any, row: Mapping[str, Any]) -> None:
        values = dict(row)
        unknown = [name for name in values if name not in self.table.c]
        if unknown:
            raise InvalidInput(
                f"column {unknown[0]!r} is not a column of {self.table.fullname!r}; the columns"
                f" are {', '.join(self.table.c.keys())}"
            )
        for name, value in self._key_values(key).items():
            if name in values and values[name] != value:
                raise InvalidInput(
                    f"the row's {name}={values[name]!r} disagrees with its key {key!r};"
                    " leave the key columns out of the row or make them agree"
                )
            values[name] = value
        if self._upsert is not None:
            with self.engine.begin() as conn:
                conn.execute(self._upsert(values))
            return
        try:
            self._update_or_insert(values)
        except sa.exc.IntegrityError:
            self._update_or_insert(values)  # another writer inserted the key meanwhile

    def delete(self, key: Any) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.delete(self.table).where(*self._where(key)))

    def rows(self) -> dict[Any, Row]:
        """Every row by key (a whole-table read: for tests and small tables)."""
        with self.engine.connect() as conn:
            found = conn.execute(sa.select(self.table)).mappings().all()
        out = {}
        for row in found:
            key = tuple(row[name] for name in self.key)
            out[key[0] if len(key) == 1 else key] = dict(row)
        return out

    def close(self) -> None:
        """Release the connections of an engine this repository created from a URL."""
        if self._owned:
            self.engine.dispose()

    def _on_conflict(self, values: dict[str, Any]) -> sa.Executable:
        module = sqlite_dialect if self.engine.dialect.name == "sqlite" else pg_dialect
        statement = module.insert(self.table).values(values)
        changes = {n: statement.excluded[n] for n in values if n not in self.key}
        if not changes:
            return statement.on_conflict_do_nothing(index_elements=self._key_columns)
        return statement.on_conflict_do_update(index_elements=self._key_columns, set_=changes)

    def _on_duplicate_key(self, values: dict[str, Any]) -> sa.Executable:
        statement = mysql_dialect.insert(self.table).values(values)
        names = [n for n in values if n not in self.key] or [self.key[0]]
        return statement.on_duplicate_key_update({n: statement.inserted[n] for n in names})

    def _update_or_insert(self, values: dict[str, Any]) -> None:
        where = [column == values[column.name] for column in self._key_columns]
        changes = {n: v for n, v in values.items() if n not in self.key}
        with self.engine.begin() as conn:
            if changes:
                found = conn.execute(sa.update(self.table).where(*where).values(changes)).rowcount
            else:
                found = conn.execute(
                    sa.select(sa.literal(1)).select_from(self.table).where(*where)
                ).first()
            if not found:
                conn.execute(sa.insert(self.table).values(values))


def _unique_column_sets(table: sa.Table) -> set[frozenset[str]]:
    sets = {frozenset(column.name for column in table.primary_key.columns)}
    for constraint in table.constraints:
        if isinstance(constraint, sa.UniqueConstraint):
            sets.add(frozenset(column.name for column in constraint.columns))
    for index in table.indexes:
        if index.unique:
            sets.add(frozenset(getattr(column, "name", str(column)) for column in index.columns))
    sets.discard(frozenset())
    return sets


# -- values --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """A key whose two sides may differ after a failed write. Replaying it copies the ``truth``
    side's current row (or its absence) to the other side. Immutable."""

    id: int
    key: Any
    tenant: str | None
    truth: Arm
    operation: str  # "put" or "delete": the write that failed
    reason: str
    error: str | None
    at: float
    drift: bool  # the sides are known to differ (counted as a drift); else they may differ

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "key": _encode_key(self.key),
            "tenant": self.tenant,
            "truth": self.truth.value,
            "operation": self.operation,
            "reason": self.reason,
            "error": self.error,
            "at": self.at,
            "drift": self.drift,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OutboxEntry:
        return cls(
            id=int(data["id"]),
            key=_decode_key(data["key"]),
            tenant=data.get("tenant"),
            truth=Arm(data["truth"]),
            operation=str(data.get("operation", "put")),
            reason=str(data.get("reason", "")),
            error=data.get("error"),
            at=float(data.get("at", 0.0)),
            drift=bool(data.get("drift", True)),
        )


@dataclass(frozen=True, slots=True)
class ReplayResult:
    """What a replay or reconcile did: the keys made equal, the keys that failed (with why),
    and how many outbox entries remain."""

    repaired: tuple[Any, ...]
    failed: tuple[tuple[Any, str], ...]
    remaining: int

    @property
    def clean(self) -> bool:
        return not self.failed and not self.remaining


@dataclass(frozen=True, slots=True)
class GuardrailEvent:
    """The guardrail of one tenant tripped (``downgrade`` or ``raise``) or cleared."""

    migration: str
    tenant: str | None
    at: float
    action: str  # "downgrade", "raise" or "clear"
    drift_rate: float
    tolerance: float
    compared: int
    drifted: int


@dataclass(frozen=True, slots=True)
class _Write:
    """One write on its way: the key as given and as a dict key, the row (None: delete)."""

    key: Any
    hashable: Hashable
    row: Row | None
    tenant: str | None
    operation: str  # "put" or "delete"


@dataclass(frozen=True, slots=True)
class _Standing:
    """A tenant's drift against its tolerance."""

    rate: float
    tolerance: float
    compared: int
    drifted: int

    @property
    def over(self) -> bool:
        return self.rate > self.tolerance


# -- the dual store ------------------------------------------------------------------------

_STRIPES = 64
"""Writes (and replays) of one key are serialized in process through one of these locks."""

_GUARDRAILS = ("downgrade", "raise")


def _reader(repository: Repository) -> Callable[..., Any]:
    def read(key: Any, **_: Any) -> Any:
        return repository.get(key)

    return read


class _DualMigration(ReportedMigration):
    """The migration a DualStore routes and counts by: its state, telemetry and drift samples
    are a migration's, so every command and the dashboard see them."""

    def __init__(
        self,
        name: str,
        legacy: Repository,
        new: Repository,
        compare: Comparator,
        default: Mode | str | State,
        redact: Redactor | None,
    ) -> None:
        super().__init__(
            name, _reader(legacy), _reader(new), compare=compare, default=default, redact=redact
        )

    def compared(
        self,
        ran: Arm,
        legacy: Observation,
        new: Observation,
        key: Any,
        operation: str,
        tenant: str | None,
    ) -> Verdict:
        """Judge and count one comparison at ``ran`` (the side that did not serve), with a
        drift sample naming the key, operation and tenant. Never raises."""
        return self.judge(
            ran, legacy, new, (key,), {"operation": operation, "tenant": tenant}, tenant
        )


class DualStore:
    """One keyed table kept in step across a ``legacy`` and a ``new`` repository, routed per
    tenant by the state of the migration ``name``.

    ``get``, ``put`` and ``delete`` take the key and the tenant (or derive it with the
    ``tenant`` callable). ``write=`` and ``read=`` fix the strategies instead of deriving
    them from the state. ``tolerance`` maps a tenant to the share of its compared operations
    that may drift (``default_tolerance`` for the others) before prefer-new reads are refused
    for it: downgraded to compare (``guardrail="downgrade"``) or refused with
    :class:`GuardrailError` (``guardrail="raise"``). Failures that may leave the sides
    different go to the outbox (and the ``journal`` file); :meth:`replay` repairs them.
    """

    def __init__(
        self,
        name: str,
        legacy: Repository,
        new: Repository,
        *,
        tenant: TenantOf | None = None,
        write: WriteStrategy | str | None = None,
        read: ReadStrategy | str | None = None,
        compare: Comparator | None = None,
        default: Mode | str | State = Mode.LEGACY,
        tolerance: Mapping[str, float] | None = None,
        default_tolerance: float = 0.0,
        guardrail: str = "downgrade",
        journal: str | os.PathLike[str] | None = None,
        recheck: bool = True,
        redact: Redactor | None = None,
    ) -> None:
        for label, repository in (("legacy", legacy), ("new", new)):
            missing = [
                m for m in ("get", "put", "delete") if not callable(getattr(repository, m, None))
            ]
            if missing:
                raise InvalidInput(
                    f"the {label} repository of {name!r} has no {missing[0]}() method; give an"
                    " object with get(key), put(key, row) and delete(key), or a TableRepository"
                )
        if tenant is not None and not callable(tenant):
            raise InvalidInput(f"tenant of {name!r} must be a callable (key, row) -> tenant")
        if guardrail not in _GUARDRAILS:
            raise InvalidInput(
                f"guardrail of {name!r} must be 'downgrade' or 'raise', got {guardrail!r}"
            )
        self.legacy = legacy
        self.new = new
        self._tenant_of = tenant
        self._fixed_write = None if write is None else WriteStrategy.parse(write)
        self._fixed_read = None if read is None else ReadStrategy.parse(read)
        self._compare = compare or exact()
        self._compare_exceptions = exceptions()
        self._default_tolerance = check_share(default_tolerance, f"default_tolerance of {name!r}")
        self._tolerance = {
            str(unit): check_share(share, f"tolerance of tenant {unit!r} in {name!r}")
            for unit, share in (tolerance or {}).items()
        }
        self._guardrail = guardrail
        self._recheck = recheck
        self._lock = threading.Lock()  # tallies, outbox, guardrail events, journal
        self._stripes = tuple(threading.Lock() for _ in range(_STRIPES))
        self._tally: dict[str | None, list[int]] = {}  # tenant -> [compared, drifted]
        self._tripped: set[str | None] = set()
        self._events: collections.deque[GuardrailEvent] = collections.deque(maxlen=1000)
        self._outbox: dict[Hashable, OutboxEntry] = {}
        self._ids = itertools.count(1)
        self._journal = None if journal is None else os.fspath(journal)
        self.journal_errors = 0
        if self._journal is not None:
            self._load_journal()
        # Last: registering the migration makes it visible to every runtime from here on.
        self._migration = _DualMigration(name, legacy, new, self._compare, default, redact)

    # -- state and strategies ------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._migration.name

    @property
    def state(self) -> State:
        """The state this process routes by right now."""
        return self._migration.state

    @property
    def mode(self) -> Mode:
        """The mode in force here, after any ``CUTOVER_FORCE_<NAME>`` override."""
        return self._migration.mode

    def __repr__(self) -> str:
        return f"<DualStore {self.name!r} mode={self.mode.value}>"

    def strategies(self, tenant: object = None, *, key: Any = None) -> Strategies:
        """The strategies a call for ``tenant`` gets here now: fixed ones, else the state
        table's, with prefer-new downgraded to compare while the tenant is past its tolerance
        (``key`` routes operations that have no tenant)."""
        if tenant is None and key is None:
            tenant_text, unit = None, ""
        else:
            tenant_text = None if tenant is None else f"{tenant}"
            unit = tenant_text if tenant_text is not None else _key_text(_hashable(key))
        chosen = self._derive(unit)
        if chosen.read is ReadStrategy.PREFER_NEW and self._standing(tenant_text).over:
            return Strategies(chosen.write, ReadStrategy.COMPARE)
        return chosen

    def _derive(self, unit: str) -> Strategies:
        write, read = self._fixed_write, self._fixed_read
        if write is not None and read is not None:
            return Strategies(write, read)
        route = self._migration.route
        derived = strategies_for(self.name, route.state, unit, override=route.override)
        return Strategies(write or derived.write, read or derived.read)

    def _resolve(
        self, key: Any, row: Mapping[str, Any] | None, tenant: object
    ) -> tuple[Hashable, str | None, str]:
        """The key as a hashable, the tenant as text (or None), and the routing unit."""
        hashable = _hashable(key)
        if tenant is None and self._tenant_of is not None:
            tenant = self._tenant_of(key, row)
        text = None if tenant is None else f"{tenant}"
        return hashable, text, text if text is not None else _key_text(hashable)

    # -- reads ---------------------------------------------------------------------------

    def get(self, key: Any, *, tenant: object = None) -> Row | None:
        """The row of ``key``, from the side the tenant's read strategy names, or None."""
        hashable, text, unit = self._resolve(key, None, tenant)
        read = self._derive(unit).read
        if read is ReadStrategy.PREFER_NEW:
            read = self._guard(text)
        if read is ReadStrategy.LEGACY:
            return self._read(Arm.LEGACY, key)
        if read is ReadStrategy.NEW:
            return self._read(Arm.NEW, key)
        if read is ReadStrategy.COMPARE:
            return self._read_compare(key, hashable, text)
        return self._read_prefer_new(key, hashable, text)

    def _repository(self, arm: Arm) -> Repository:
        return self.new if arm is Arm.NEW else self.legacy

    def _read(self, arm: Arm, key: Any) -> Row | None:
        start = _now()
        try:
            row = self._repository(arm).get(key)
        except Exception:
            self._migration.count(arm, _now() - start, ERRORS)
            raise
        self._migration.count(arm, _now() - start)
        return _as_row(row)

    def _read_compare(self, key: Any, hashable: Hashable, tenant: str | None) -> Row | None:
        start = _now()
        try:
            row = self.legacy.get(key)
        except Exception:
            self._migration.count(Arm.LEGACY, _now() - start, ERRORS)
            raise
        elapsed = _now() - start
        self._migration.count(Arm.LEGACY, elapsed)
        row = _as_row(row)
        self._compare_sampled(key, hashable, tenant, Observation(Arm.LEGACY, row, None, elapsed))
        return row

    def _compare_sampled(
        self, key: Any, hashable: Hashable, tenant: str | None, served: Observation
    ) -> None:
        """On the state's ``sample`` share of reads, read the other side off the caller's path
        and compare; a comparison that cannot start is counted as dropped."""
        share = self._migration.state.sample
        if not (share >= 1.0 or (share > 0.0 and _random() < share)):
            return
        if served.value is not None:
            served = replace(served, value=dict(served.value))  # the caller may change its copy
        job = functools.partial(self._compare_later, key, hashable, tenant, served)
        try:
            started = self._migration.submit(job)
        except Exception:  # noqa: BLE001 - a comparison that cannot start is a drop
            started = False
        if not started:
            self._migration.bump(served.arm.other, DROPPED)

    def _compare_later(
        self, key: Any, hashable: Hashable, tenant: str | None, served: Observation
    ) -> None:
        """Off the caller's path: read the side that did not serve, compare, count. A
        difference is read again once under the key's lock, so that a write caught between
        the two reads is not taken for drift."""
        arm = served.arm.other
        start = _now()
        failure: Exception | None = None
        row: Row | None = None
        try:
            row = _as_row(self._repository(arm).get(key))
        except Exception as error:  # noqa: BLE001 - the other side's failure is data
            failure = error
        elapsed = _now() - start
        self._migration.count(arm, elapsed, OFFPATH, *((ERRORS,) if failure else ()))
        mine = Observation(arm, row, failure, elapsed)
        legacy, new = (served, mine) if arm is Arm.NEW else (mine, served)
        if self._recheck and failure is None and self._differs(legacy, new):
            with contextlib.suppress(Exception), self._stripe(hashable):
                again = _as_row(self.legacy.get(key)), _as_row(self.new.get(key))
                legacy = replace(legacy, value=again[0])
                new = replace(new, value=again[1])
        verdict = self._migration.compared(arm, legacy, new, key, "get", tenant)
        if verdict is not Verdict.ERROR:
            self._tally_one(tenant, verdict is Verdict.DRIFT)

    def _differs(self, legacy: Observation, new: Observation) -> bool:
        verdict, _, _ = judge(self._compare, self._compare_exceptions, legacy, new)
        return verdict is not Verdict.MATCH

    def _read_prefer_new(self, key: Any, hashable: Hashable, tenant: str | None) -> Row | None:
        """New serves; legacy when new fails or lacks the row. A row new served is compared
        with legacy off the caller's path, as compare reads are."""
        migration = self._migration
        start = _now()
        failure: Exception | None = None
        row: Row | None = None
        try:
            row = _as_row(self.new.get(key))
        except Exception as error:  # noqa: BLE001 - legacy serves instead, below
            failure = error
        new_ns = _now() - start
        if failure is None and row is not None:
            migration.count(Arm.NEW, new_ns)
            self._compare_sampled(key, hashable, tenant, Observation(Arm.NEW, row, None, new_ns))
            return row
        start = _now()
        try:
            old = _as_row(self.legacy.get(key))
        except Exception:
            legacy_ns = _now() - start
            if failure is not None:  # neither side answered
                migration.count(Arm.NEW, new_ns, ERRORS, FALLBACKS)
                migration.count(Arm.LEGACY, legacy_ns, ERRORS)
                raise
            migration.count(Arm.NEW, new_ns)  # new's answer (no row) stands, unchecked
            migration.count(Arm.LEGACY, legacy_ns, ERRORS, OFFPATH)
            return None
        legacy_ns = _now() - start
        legacy = Observation(Arm.LEGACY, old, None, legacy_ns)
        new = Observation(Arm.NEW, None, failure, new_ns)
        if failure is None and old is None:  # both agree there is no row
            migration.count(Arm.NEW, new_ns)
            migration.count(Arm.LEGACY, legacy_ns, OFFPATH)
            verdict = migration.compared(Arm.LEGACY, legacy, new, key, "get", tenant)
        else:  # legacy serves: new failed, or lacks a row legacy has
            migration.count(Arm.NEW, new_ns, FALLBACKS, *((ERRORS,) if failure else ()))
            migration.count(Arm.LEGACY, legacy_ns)
            migration.emit(
                {
                    "event": "fallback",
                    "unit": tenant,
                    "reason": "missing" if failure is None else type(failure).__name__,
                }
            )
            verdict = migration.compared(Arm.NEW, legacy, new, key, "get", tenant)
        if verdict is not Verdict.ERROR:
            self._tally_one(tenant, verdict is Verdict.DRIFT)
        return old

    # -- writes --------------------------------------------------------------------------

    def put(self, key: Any, row: Mapping[str, Any], *, tenant: object = None) -> None:
        """Write ``row`` (an upsert) under ``key`` by the tenant's write strategy."""
        if not isinstance(row, Mapping):
            raise InvalidInput(f"the row of a put in {self.name!r} must be a mapping, got {row!r}")
        self._write_one(key, dict(row), tenant, "put")

    def delete(self, key: Any, *, tenant: object = None) -> None:
        """Remove the row of ``key`` by the tenant's write strategy."""
        self._write_one(key, None, tenant, "delete")

    def _write_one(self, key: Any, row: Row | None, tenant: object, operation: str) -> None:
        hashable, text, unit = self._resolve(key, row, tenant)
        write = self._derive(unit).write
        op = _Write(key, hashable, row, text, operation)
        with self._stripe(hashable):
            if write is WriteStrategy.MIRROR:
                self._mirror(op)
            else:
                self._primary_then_follower(write, op)
            self._acknowledged(hashable, write.truth)

    def _apply(self, arm: Arm, key: Any, row: Row | None) -> None:
        repository = self._repository(arm)
        if row is None:
            repository.delete(key)
        else:
            repository.put(key, row)

    def _compared(self, op: _Write, ran: Arm, legacy: Observation, new: Observation) -> None:
        """Count a write that reached, or failed to reach, the follower as a comparison."""
        self._migration.compared(ran, legacy, new, op.key, op.operation, op.tenant)
        self._tally_one(op.tenant, legacy.exception is not None or new.exception is not None)

    def _primary_then_follower(self, write: WriteStrategy, op: _Write) -> None:
        """The truth side, then the follower; the follower's failure is recorded, not raised."""
        migration = self._migration
        truth, follower = write.truth, write.follower
        start = _now()
        try:
            self._apply(truth, op.key, op.row)
        except Exception as error:
            migration.count(truth, _now() - start, ERRORS)
            if follower is not None:  # a failed commit may have applied all the same: check
                reason = f"{truth} {op.operation} failed; {follower} was not written"
                self._enqueue(op, truth, error, reason, drift=False)
            raise
        truth_ns = _now() - start
        migration.count(truth, truth_ns)
        if follower is None:
            return
        start = _now()
        failure: Exception | None = None
        try:
            self._apply(follower, op.key, op.row)
        except Exception as error:  # noqa: BLE001 - recorded for replay, never raised
            failure = error
        follower_ns = _now() - start
        migration.count(follower, follower_ns, OFFPATH, *((ERRORS,) if failure else ()))
        written = Observation(truth, op.row, None, truth_ns)
        followed = Observation(follower, None if failure else op.row, failure, follower_ns)
        if truth is Arm.LEGACY:
            self._compared(op, follower, written, followed)
        else:
            self._compared(op, follower, followed, written)
        if failure is not None:
            reason = f"{follower} {op.operation} failed after {truth} succeeded"
            self._enqueue(op, truth, failure, reason, drift=True)

    def _mirror(self, op: _Write) -> None:
        """Legacy, then new; when new fails, legacy's previous row is put back and new's error
        raised, so the write happened on neither side."""
        migration = self._migration
        previous = _as_row(self.legacy.get(op.key))  # raises before anything is written
        start = _now()
        try:
            self._apply(Arm.LEGACY, op.key, op.row)
        except Exception as error:
            migration.count(Arm.LEGACY, _now() - start, ERRORS)
            reason = f"legacy {op.operation} failed; new was not written"
            self._enqueue(op, Arm.LEGACY, error, reason, drift=False)
            raise
        legacy_ns = _now() - start
        migration.count(Arm.LEGACY, legacy_ns)
        written = Observation(Arm.LEGACY, op.row, None, legacy_ns)
        start = _now()
        try:
            self._apply(Arm.NEW, op.key, op.row)
        except Exception as error:  # noqa: BLE001 - compensated below, then raised
            failure = error
        else:
            new_ns = _now() - start
            migration.count(Arm.NEW, new_ns, OFFPATH)
            self._compared(op, Arm.NEW, written, Observation(Arm.NEW, op.row, None, new_ns))
            return
        migration.count(Arm.NEW, _now() - start, OFFPATH, ERRORS)
        start = _now()
        try:
            self._apply(Arm.LEGACY, op.key, previous)
        except Exception as undo:  # noqa: BLE001 - recorded, then new's error is raised
            migration.count(Arm.LEGACY, _now() - start, OFFPATH, ERRORS)
            self._compared(op, Arm.NEW, written, Observation(Arm.NEW, None, failure))
            reason = f"new {op.operation} failed and restoring legacy failed too ({undo!r})"
            self._enqueue(op, Arm.LEGACY, failure, reason, drift=True)
            failure.add_note(
                f"cutover: legacy kept this {op.operation}, as restoring it failed;"
                " the key is in the outbox for replay"
            )
            raise failure from None
        migration.count(Arm.LEGACY, _now() - start, OFFPATH)
        # New's failure may have applied all the same (a lost commit acknowledgement): check.
        try:
            now_new = _as_row(self.new.get(op.key))
            same = not self._differs(
                Observation(Arm.LEGACY, previous), Observation(Arm.NEW, now_new)
            )
        except Exception:  # noqa: BLE001 - unknown, so the replay makes sure
            same = False
        if not same:
            reason = f"new {op.operation} failed; legacy was restored but new may differ"
            self._enqueue(op, Arm.LEGACY, failure, reason, drift=False)
        failure.add_note(
            f"cutover: legacy was restored; this {op.operation} happened on neither side"
        )
        raise failure

    # -- drift tally and the guardrail ---------------------------------------------------

    def _tally_one(self, tenant: str | None, drifted: bool) -> None:
        with self._lock:
            tally = self._tally.get(tenant)
            if tally is None:
                tally = self._tally[tenant] = [0, 0]
            tally[0] += 1
            if drifted:
                tally[1] += 1

    def drift_rate(self, tenant: object = None) -> float:
        """The share of this tenant's compared operations (dual writes, compared reads, reads
        where legacy was consulted) that drifted, counted in this process; 0.0 before any."""
        key = None if tenant is None else f"{tenant}"
        with self._lock:
            compared, drifted = self._tally.get(key, (0, 0))
        return drifted / compared if compared else 0.0

    def tolerance(self, tenant: object = None) -> float:
        """The share of drifted operations this tenant may have before prefer-new is refused."""
        if tenant is None:
            return self._default_tolerance
        return self._tolerance.get(f"{tenant}", self._default_tolerance)

    def reset_drift(self, tenant: object = None, *, every: bool = False) -> None:
        """Forget the drift tally of ``tenant`` (of every tenant with ``every=True``), e.g.
        after the drifts were reconciled, so prefer-new reads resume."""
        with self._lock:
            if every:
                self._tally.clear()
            else:
                self._tally.pop(None if tenant is None else f"{tenant}", None)

    def guardrail_events(self) -> tuple[GuardrailEvent, ...]:
        """The most recent guardrail trips and clears, oldest first (at most 1000)."""
        with self._lock:
            return tuple(self._events)

    def _standing(self, tenant: str | None) -> _Standing:
        tolerance = self.tolerance(tenant)
        with self._lock:
            compared, drifted = self._tally.get(tenant, (0, 0))
        return _Standing(drifted / compared if compared else 0.0, tolerance, compared, drifted)

    def _guard(self, tenant: str | None) -> ReadStrategy:
        """Prefer-new, unless the tenant is past its tolerance: then compare, or raise."""
        standing = self._standing(tenant)
        if not standing.over:
            if tenant in self._tripped:
                self._trip(tenant, "clear", standing)
            return ReadStrategy.PREFER_NEW
        if tenant not in self._tripped:
            self._trip(tenant, self._guardrail, standing)
        if self._guardrail == "raise":
            raise GuardrailError(self.name, tenant, standing.rate, standing.tolerance)
        return ReadStrategy.COMPARE

    def _trip(self, tenant: str | None, action: str, standing: _Standing) -> None:
        rate, tolerance = standing.rate, standing.tolerance
        with self._lock:
            if action == "clear":
                if tenant not in self._tripped:
                    return
                self._tripped.discard(tenant)
            else:
                if tenant in self._tripped:
                    return
                self._tripped.add(tenant)
            event = GuardrailEvent(
                self.name,
                tenant,
                self._migration.clock(),
                action,
                rate,
                tolerance,
                standing.compared,
                standing.drifted,
            )
            self._events.append(event)
        if action != "clear":
            log.warning(
                "cutover: %s drifted on %.2f%% of compared operations for tenant %r, above its"
                " tolerance of %.2f%%; prefer-new reads are %s",
                self.name,
                rate * 100,
                tenant,
                tolerance * 100,
                "refused" if action == "raise" else "served by legacy and compared",
            )
        self._migration.emit(
            {
                "event": "guardrail",
                "unit": tenant,
                "action": action,
                "drift_rate": rate,
                "tolerance": tolerance,
            }
        )

    # -- the outbox ----------------------------------------------------------------------

    def pending(self) -> tuple[OutboxEntry, ...]:
        """The keys waiting for a replay, oldest first."""
        with self._lock:
            return tuple(self._outbox.values())

    def _stripe(self, hashable: Hashable) -> threading.Lock:
        return self._stripes[hash(hashable) % _STRIPES]

    def _enqueue(
        self, op: _Write, truth: Arm, error: BaseException, reason: str, *, drift: bool
    ) -> None:
        """Remember that the key's sides may differ (``drift``: they are known to), in memory
        and in the journal. Never raises: the failed operation decides what the caller sees."""
        try:
            with self._lock:
                earlier = self._outbox.get(op.hashable)
                entry = OutboxEntry(
                    id=earlier.id if earlier is not None else next(self._ids),
                    key=op.hashable,
                    tenant=op.tenant,
                    truth=truth,
                    operation=op.operation,
                    reason=reason,
                    error=f"{type(error).__name__}: {error}"[:1000],
                    at=self._migration.clock(),
                    drift=drift or (earlier is not None and earlier.drift),
                )
                self._outbox.pop(op.hashable, None)  # the latest failure goes last
                self._outbox[op.hashable] = entry
                self._journal_pending(entry)
        except Exception:  # an unrecordable entry is logged, never raised
            log.exception("cutover: %s could not record key %r for replay", self.name, op.key)
            return
        limited.error(
            f"outbox:{self.name}",
            "cutover: %s: %s for key %r (tenant %r); recorded for replay",
            self.name,
            reason,
            op.key,
            op.tenant,
        )
        self._migration.emit({"event": "outbox", "unit": op.tenant, "reason": reason})

    def _acknowledged(self, hashable: Hashable, truth: Arm) -> None:
        """A write reached ``truth`` and was acknowledged: a pending entry of this key now
        replays from that side, since it holds the latest acknowledged row."""
        if not self._outbox:  # the common case needs no lock
            return
        with self._lock:
            entry = self._outbox.get(hashable)
            if entry is None or entry.truth is truth:
                return
            entry = replace(entry, truth=truth)
            self._outbox[hashable] = entry
            self._journal_pending(entry)

    def replay(self, limit: int | None = None) -> ReplayResult:
        """Copy the truth side's current row (or its absence) to the other side for every key
        in the outbox (the oldest ``limit`` of them); a key that fails stays for the next
        replay. The journal is compacted to what remains."""
        entries = self.pending()[: None if limit is None else max(0, limit)]
        repaired: list[Any] = []
        failed: list[tuple[Any, str]] = []
        for entry in entries:
            with self._stripe(entry.key):
                with self._lock:
                    current = self._outbox.get(entry.key)
                if current is None:
                    continue  # a reconcile got there first
                try:
                    self._copy(current.key, self._replay_truth(current))
                except Exception as error:  # noqa: BLE001 - reported; the entry stays
                    failed.append((current.key, f"{type(error).__name__}: {error}"))
                    continue
                self._done(current)
                repaired.append(current.key)
        self._compact_journal()
        with self._lock:
            remaining = len(self._outbox)
        return ReplayResult(tuple(repaired), tuple(failed), remaining)

    def reconcile(
        self, keys: Iterable[Any] | None = None, *, tenant: object = None
    ) -> ReplayResult:
        """Make ``keys`` equal on both sides now, copying from the side their tenant's write
        strategy makes the truth (legacy until new-primary). Without ``keys``: :meth:`replay`
        the outbox. A key reconciled here leaves the outbox."""
        if keys is None:
            return self.replay()
        repaired: list[Any] = []
        failed: list[tuple[Any, str]] = []
        for key in keys:
            hashable, _, unit = self._resolve(key, None, tenant)
            truth = self._derive(unit).write.truth
            with self._stripe(hashable):
                try:
                    self._copy(key, truth)
                except Exception as error:  # noqa: BLE001 - reported, the others go on
                    failed.append((hashable, f"{type(error).__name__}: {error}"))
                    continue
                with self._lock:
                    entry = self._outbox.get(hashable)
                if entry is not None:
                    self._done(entry)
                repaired.append(hashable)
        with self._lock:
            remaining = len(self._outbox)
        return ReplayResult(tuple(repaired), tuple(failed), remaining)

    def _replay_truth(self, entry: OutboxEntry) -> Arm:
        """The side a replay copies from: the one that took the key's latest acknowledged write
        here, unless the tenant's strategy now writes one side only, which is then the truth
        (its writes, from any process, are newer than anything the other side holds)."""
        _, _, unit = self._resolve(entry.key, None, entry.tenant)
        write = self._derive(unit).write
        if write.follower is None:
            return write.truth
        return entry.truth

    def _copy(self, key: Any, truth: Arm) -> None:
        row = _as_row(self._repository(truth).get(key))
        self._apply(truth.other, key, row)

    def _done(self, entry: OutboxEntry) -> None:
        """Close the entry (the caller holds the key's lock, so no write changed it since)."""
        with self._lock:
            current = self._outbox.get(entry.key)
            if current is not None and current.id == entry.id:
                del self._outbox[entry.key]
                self._append_journal({"op": "done", "id": entry.id})

    # -- the journal ---------------------------------------------------------------------

    def _journal_pending(self, entry: OutboxEntry) -> None:
        """Journal an entry (called with the lock held); a key JSON cannot hold is logged and
        counted, and the entry stays in memory."""
        if self._journal is None:
            return
        try:
            record = {"op": "pending", **entry.to_dict()}
        except TypeError as error:
            self.journal_errors += 1
            log.error("cutover: %s cannot journal key %r: %s", self.name, entry.key, error)
            return
        self._append_journal(record)

    def _append_journal(self, record: dict[str, Any]) -> None:
        """Append one line and sync it to disk (called with the lock held). A journal that
        cannot be written is logged and counted; the entry stays in memory."""
        if self._journal is None:
            return
        line = json.dumps({"v": 1, **record}, ensure_ascii=False)
        try:
            with open(self._journal, "a", encoding="utf-8") as handle:
                handle.write(line + "\n")
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as error:
            self.journal_errors += 1
            limited.error(
                f"journal:{self._journal}",
                "cutover cannot write its outbox journal %s: %s",
                self._journal,
                error,
            )

    def _load_journal(self) -> None:
        """Take up the entries a previous process left pending (``done`` lines close them)."""
        path = self._journal
        assert path is not None
        try:
            with open(path, encoding="utf-8") as handle:
                lines = handle.readlines()
        except FileNotFoundError:
            return
        except OSError as error:
            raise InvalidInput(f"cannot read the outbox journal {path}: {error}") from None
        entries: dict[int, OutboxEntry] = {}
        top = 0
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                if record.get("op") == "done":
                    entries.pop(int(record["id"]), None)
                    top = max(top, int(record["id"]))
                    continue
                entry = OutboxEntry.from_dict(record)
            except (ValueError, KeyError, TypeError) as error:
                log.error("cutover skips line %d of the outbox journal %s: %s", number, path, error)
                continue
            entries[entry.id] = entry
            top = max(top, entry.id)
        self._ids = itertools.count(top + 1)
        for entry in sorted(entries.values(), key=lambda e: e.id):
            self._outbox.pop(entry.key, None)
            self._outbox[entry.key] = entry

    def _compact_journal(self) -> None:
        """Rewrite the journal with the pending entries alone (atomically)."""
        if self._journal is None:
            return
        with self._lock:
            lines = []
            for entry in self._outbox.values():
                with contextlib.suppress(TypeError, ValueError):
                    lines.append(json.dumps({"v": 1, "op": "pending", **entry.to_dict()}))
            try:
                replace_durably(self._journal, "".join(line + "\n" for line in lines))
            except OSError as error:
                self.journal_errors += 1
                log.error("cutover cannot compact its outbox journal %s: %s", self._journal, error)


# -- keys ----------------------------------------------------------------------------------


def _as_row(row: Mapping[str, Any] | None) -> Row | None:
    return None if row is None else dict(row)


def _hashable(key: Any) -> Hashable:
    """The key as a dict key: lists become tuples; anything else must hash."""
    if isinstance(key, list | tuple):
        key = tuple(_hashable(part) for part in key)
    try:
        hash(key)
    except TypeError:
        raise InvalidInput(
            f"key {key!r} cannot be used: give a scalar (text, number, UUID) or a tuple of them"
        ) from None
    return key  # type: ignore[no-any-return]


def _key_text(key: Hashable) -> str:
    """The routing unit of an operation without a tenant: the key as text (parts joined by /)."""
    if isinstance(key, tuple):
        return "/".join(f"{part}" for part in key)
    return f"{key}"


_TAGS: dict[str, Callable[[str], Any]] = {
    "uuid": uuid.UUID,
    "decimal": decimal.Decimal,
    "datetime": datetime.datetime.fromisoformat,
    "date": datetime.date.fromisoformat,
    "bytes": bytes.fromhex,
}


def _encode_key(key: Any) -> Any:
    """A key as JSON: scalars as themselves, tuples as lists, a few types tagged."""
    if key is None or isinstance(key, str | bool | int | float):
        return key
    if isinstance(key, tuple | list):
        return [_encode_key(part) for part in key]
    if isinstance(key, uuid.UUID):
        return {"$uuid": str(key)}
    if isinstance(key, decimal.Decimal):
        return {"$decimal": str(key)}
    if isinstance(key, datetime.datetime):
        return {"$datetime": key.isoformat()}
    if isinstance(key, datetime.date):
        return {"$date": key.isoformat()}
    if isinstance(key, bytes):
        return {"$bytes": key.hex()}
    raise TypeError(f"a key of type {type(key).__name__} cannot be journaled")


def _decode_key(data: Any) -> Any:
    if isinstance(data, list):
        return tuple(_decode_key(part) for part in data)
    if isinstance(data, dict) and len(data) == 1:
        ((tag, text),) = data.items()
        parse = _TAGS.get(tag.lstrip("$"))
        if parse is not None:
            return parse(text)
    return data


__all__ = [
    "DualStore",
    "GuardrailError",
    "GuardrailEvent",
    "MemoryRepository",
    "OutboxEntry",
    "ReadStrategy",
    "ReplayResult",
    "Repository",
    "Strategies",
    "TableRepository",
    "WriteStrategy",
    "strategies_for",
]
