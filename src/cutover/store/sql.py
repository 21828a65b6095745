"""The SQL store: SQLite (embedded default) and PostgreSQL through SQLAlchemy Core."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib
import logging
import math
import os
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

from cutover.compare._noise import NoiseCount
from cutover.durations import format_duration
from cutover.errors import ConflictError, InvalidInput, LeaseLost, StoreError
from cutover.model import Arm, Decision, Rollout, State
from cutover.store import (
    DEFAULT_LEASE,
    MIN_LEASE,
    Cohort,
    DriftGroup,
    Fence,
    FlushBatch,
    InstanceInfo,
    NoiseRule,
    RouteWindow,
    normalize_url,
    redact_url,
)
from cutover.store import schema as t
from cutover.telemetry.drift import DriftSample, clean_text
from cutover.telemetry.histogram import COARSE_BITS, SUB_BITS, Histogram
from cutover.telemetry.windows import COUNTERS, ArmCounts
from cutover.text import check_name, check_text
from cutover.urls import scrub

log = logging.getLogger("cutover")

_ROWS_PER_STATEMENT = 20_000  # keeps every statement well inside the statement timeout
_SCHEMA_LOCK_KEY = 0x63757430  # "cut0": serializes schema creation across PostgreSQL clients


@functools.cache
def _unnest_upsert(
    table: sa.Table, columns: tuple[str, ...], keys: tuple[str, ...], counters: tuple[str, ...]
) -> str:
    """``INSERT ... SELECT * FROM unnest(arrays) ON CONFLICT DO UPDATE`` adding ``counters``."""
    arrays = ", ".join(
        f"CAST(:p{i} AS {_array_type(table.c[name])}[])" for i, name in enumerate(columns)
    )
    updates = ", ".join(f"{name} = {table.name}.{name} + excluded.{name}" for name in counters)
    return (
        f"INSERT INTO {table.name} ({', '.join(columns)}) SELECT * FROM unnest({arrays})"
        f" ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {updates}"
    )


def _array_type(column: sa.Column[Any]) -> str:
    """The PostgreSQL array type a column's values are sent as."""
    kinds = {sa.BigInteger: "bigint", sa.Integer: "integer", sa.Float: "double precision"}
    column_type = type(column.type)
    return next((kind for base, kind in kinds.items() if issubclass(column_type, base)), "text")


_FOLD_LOCK = 0x63757431  # "cut1", with the schema's hash: one folder of staged flushes at a time

_FOLD_KEY = f"{_FOLD_LOCK}, hashtext(current_schema())"


@functools.cache
def _stage_statement() -> str:
    """Claim a flush's (run, seq) and stage its rows, in one statement: no row is staged when
    the claim finds the flush applied before, and no row is returned."""
    columns = [column.name for column in t.staged.columns]
    arrays = ", ".join(
        f"CAST(:{name} AS {_array_type(t.STAGED_PREFIXES[name[0]].c[name[2:]])}[])"
        for name in columns
    )
    return (
        "WITH claimed AS (INSERT INTO cutover_flushes (run, seq, instance, at)"
        " VALUES (:run, :seq, :instance, :at) ON CONFLICT (run, seq) DO NOTHING RETURNING 1)"
        f" INSERT INTO {t.staged.name} ({', '.join(columns)}) SELECT {arrays} FROM claimed"
        " RETURNING 1"
    )


@functools.cache
def _fold_statement() -> str:
    """Move every staged row into the window tables, summed per key, in one statement that
    runs only while it holds the fold lock (taken here without waiting; a reader takes it
    first, waiting). Rows are upserted in key order, the order every writer locks them in."""
    keys = {"w": ("migration", "arm", "start"), "l": ("migration", "arm", "start", "bucket")}
    keys["d"] = ("migration", "start", "key")
    parts = [
        f"go AS (SELECT pg_try_advisory_xact_lock({_FOLD_KEY}) AS held)",
        f"taken AS (DELETE FROM {t.staged.name} WHERE (SELECT held FROM go) RETURNING *)",
    ]
    for prefix, table in t.STAGED_PREFIXES.items():
        names = [column.name for column in table.columns]
        counters = [name for name in names if name not in keys[prefix] and name != "fingerprint"]
        chosen = ", ".join(
            name if name in keys[prefix] else f"sum({name})" if name in counters else f"min({name})"
            for name in names
        )
        order = ", ".join(keys[prefix])
        unnested = ", ".join(f"taken.{prefix}_{name}" for name in names)
        updates = ", ".join(f"{name} = {table.name}.{name} + excluded.{name}" for name in counters)
        parts.append(
            f"{prefix} AS (INSERT INTO {table.name} ({', '.join(names)})"
            f" SELECT {chosen} FROM taken, unnest({unnested}) AS u({', '.join(names)})"
            f" GROUP BY {order} ORDER BY {order}"
            f" ON CONFLICT ({order}) DO UPDATE SET {updates})"
        )
    return f"WITH {', '.join(parts)} SELECT count(*) FROM taken"


_LATENCY_TABLES = ((t.latency, SUB_BITS), (t.histograms, COARSE_BITS))
"""Where latency buckets are stored, and their resolution: fine now, coarse before schema 7."""
COARSE_RECHECK = 60.0
"""Seconds between looks for coarse latency rows (see SqlStore._latency_tables)."""


def _route_histogram(stored: Any) -> Histogram:
    """A proxy route's stored histogram: a bare list of coarse buckets before schema 7."""
    if isinstance(stored, dict):
        return Histogram(stored["buckets"], int(stored["bits"]))
    return Histogram(stored or (), COARSE_BITS)


def _by_span(
    spans: Mapping[str, tuple[float, float | None]],
) -> dict[tuple[int, int | None], list[str]]:
    """The migrations of ``spans`` grouped by their [since, until): a tick's spans mostly
    share their bounds (the checks' windows back from now), so one statement reads a group."""
    groups: dict[tuple[int, int | None], list[str]] = {}
    for name, (since, until) in spans.items():
        groups.setdefault((int(since), None if until is None else int(until)), []).append(name)
    return groups


def _span(table: sa.Table, names: Sequence[str], since: int, until: int | None) -> list[Any]:
    """The rows of ``names`` whose window starts in [since, until). ``arm IN ('legacy',
    'new')`` lets the (migration, arm, start) key be read as two bounded ranges of ``start``
    per migration, not as every row the migrations ever stored."""
    conditions = [
        table.c.migration.in_(names),
        table.c.arm.in_([arm.value for arm in Arm]),
        table.c.start >= since,
    ]
    if until is not None:
        conditions.append(table.c.start < until)
    return conditions


_ARMS = {arm.value: arm for arm in Arm}


def _summed(column: Any) -> Any:
    """SUM of an integer column as an integer: PostgreSQL sums bigints as numeric, which the
    driver turns into Decimals, several thousand of them in a controller pass."""
    return sa.cast(sa.func.sum(column), sa.BigInteger)


def _distinct_window_migrations() -> Any:
    """The migrations with windows, one index probe each (a loose index scan over the key's
    leading column): DISTINCT would read every window row, and the overview asks every few
    seconds."""
    c = t.windows.c
    first = sa.select(sa.func.min(c.migration).label("name")).cte("named", recursive=True)
    following = sa.select(
        sa.select(sa.func.min(c.migration)).where(c.migration > first.c.name).scalar_subquery()
    ).where(first.c.name.is_not(None))
    named = first.union_all(following)
    return sa.select(named.c.name).where(named.c.name.is_not(None))


_DISTINCT_WINDOW_MIGRATIONS = _distinct_window_migrations()


def fingerprint_key(fingerprint: str) -> str:
    """A fixed-width key for a fingerprint; distinct texts always get distinct keys (lone
    surrogates are encoded as they are, not replaced)."""
    return hashlib.sha1(fingerprint.encode("utf-8", "surrogatepass")).hexdigest()


def _channel_for(schema: str) -> str:
    """The NOTIFY channel of the store in ``schema``: stores in other schemas stay quiet."""
    name = "cutover_" + re.sub(r"[^a-z0-9_]", "_", schema.lower())
    if len(name) > 63:  # PostgreSQL truncates identifiers to 63 bytes
        name = name[:54] + "_" + hashlib.sha1(schema.encode()).hexdigest()[:8]
    return name


def _state_from_row(row: Any) -> State:
    return State.from_dict(row._mapping)  # the columns are the fields of State.to_dict()


def _decision_from_row(row: Any) -> Decision:
    return Decision(
        id=row.id,
        migration=row.migration,
        at=row.at,
        actor=row.actor,
        reason=row.reason,
        old=State.from_dict(row.old_state) if row.old_state else None,
        new=State.from_dict(row.new_state),
        evidence=row.evidence or {},
        kind=row.kind,
        changed=row.version is not None,
    )


def _sample_from_row(row: Any) -> DriftSample:
    payload = row.payload or {}
    return DriftSample(
        migration=row.migration,
        at=row.at,
        unit=row.unit,
        fingerprint=row.fingerprint,
        input=payload.get("input"),
        legacy=payload.get("legacy"),
        new=payload.get("new"),
        diff=payload.get("diff") or [],
        truncated=bool(payload.get("truncated")),
        id=row.id,
    )


class SqlStore:
    """A :class:`cutover.store.Store` on one SQLAlchemy engine. Thread-safe; fork-aware."""

    stage_flushes = True
    """PostgreSQL: stage each flush and fold staged flushes in batches (see _stage_flush).
    False upserts each flush into the window tables itself, as SQLite always does: the
    method before staging, kept to measure against (bench/flush_throughput.py)."""

    def __init__(self, url: str, *, connect_timeout: float = 5.0) -> None:
        self.url = url
        self._sa_url = normalize_url(url)
        self._connect_timeout = connect_timeout
        self._engine = self._create_engine()
        self._ready = False
        self._ready_lock = threading.Lock()
        self._channel: str | None = None  # the LISTEN/NOTIFY channel, PostgreSQL only
        self._coarse_seen = -math.inf  # when the coarse histograms were last looked for
        self._coarse_any = True

    # -- connection handling -------------------------------------------------------------

    @property
    def dialect(self) -> str:
        return self._engine.dialect.name

    @property
    def engine(self) -> Engine:
        return self._engine

    def _create_engine(self) -> Engine:
        try:
            parsed = sa.engine.make_url(self._sa_url)
            _ = parsed.port  # a port that is not a number raises here, not on first use
        except (sa.exc.ArgumentError, ValueError) as error:
            raise InvalidInput(
                f"the store URL {redact_url(self.url)!r} is malformed"
                f" ({scrub(str(error), self.url, self._sa_url)});"
                " write it like postgresql://user@host:5432/db"
            ) from None
        if parsed.get_backend_name() == "sqlite":
            engine = sa.create_engine(
                parsed,
                connect_args={"timeout": 30, "isolation_level": None, "check_same_thread": False},
                # No idle connections to carry across fork(): a forked child that closed one it
                # inherited would corrupt the parent's WAL index. Opening a file is cheap.
                poolclass=sa.pool.NullPool,
            )
            event.listen(engine, "connect", _sqlite_on_connect)
            event.listen(engine, "close", _sqlite_on_close)
            event.listen(engine, "begin", _sqlite_on_begin)
            return engine
        return sa.create_engine(
            parsed,
            connect_args=self._pg_connect_args(),
            pool_pre_ping=True,
            # Up to 6 connections, each kept once opened: an overflow connection would be
            # closed on return whenever 2 sit idle, and reopened on the next burst.
            pool_size=6,
            max_overflow=0,
            pool_recycle=1800,
        )

    def _pg_connect_args(self) -> dict[str, Any]:
        return {
            "connect_timeout": max(1, round(self._connect_timeout)),
            # A partitioned network must fail a statement, not hang it until TCP gives up.
            "keepalives": 1,
            "keepalives_idle": 10,
            "keepalives_interval": 5,
            "keepalives_count": 3,
            "tcp_user_timeout": 30_000,
            # No server-side prepared statements: they break behind transaction poolers.
            "prepare_threshold": None,
        }

    @contextlib.contextmanager
    def _connect(
        self, *, write: bool = False, stall: float | None = None, many: bool = False
    ) -> Iterator[Connection]:
        """A transaction; errors of the database become StoreError naming the store. On
        PostgreSQL, ``stall`` bounds how long the transaction may sit idle between statements
        before the server ends the session (undoing it and freeing its locks): for writes whose
        client may be frozen (SIGSTOP, a paused VM) while others wait on their row locks.
        ``many`` is for reads of many migrations' windows at once: their estimated cost passes
        the server's JIT threshold, and compiling took longer (up to 0.6 s) than the read; and
        sorting their rows into windows (160,000 histogram rows for 200 migrations) spilled to
        disk at the default work_mem of 4 MB."""
        self._ensure_schema()
        try:
            with self._gate(), self._engine.connect() as conn:
                if write:
                    conn.execution_options(cutover_write=True)
                with conn.begin():
                    if self.dialect == "postgresql":
                        # Per transaction, so a pooler never hands these to another client.
                        timeouts = _PG_TIMEOUTS
                        if stall is not None:
                            timeouts += (
                                "; SET LOCAL idle_in_transaction_session_timeout"
                                f" = {max(1, round(stall * 1000))}"
                            )
                        if many:
                            timeouts += "; SET LOCAL jit = off; SET LOCAL work_mem = '64MB'"
                        conn.exec_driver_sql(timeouts)
                    yield conn
        except (ConflictError, InvalidInput, LeaseLost, _Lost):
            raise
        except Exception as error:
            transient = _is_transient(error)
            if _schema_missing(error):
                self._ready = False  # the tables went away: create them on the next attempt
                transient = True
            verb = "failed" if transient else "refused the operation"
            raise StoreError(
                f"the store at {redact_url(self.url)} {verb}: {self._reason(error)}",
                transient=transient,
            ) from error

    def _gate(self) -> contextlib.AbstractContextManager[None]:
        """Around every connection's life: SQLite's holds fork() back (see _ForkGate)."""
        return _SQLITE_GATE.entered() if self.dialect == "sqlite" else contextlib.nullcontext()

    def _reason(self, error: BaseException) -> str:
        """The first line of a database error, without any credential of this store's URL."""
        return scrub(_short(error), self.url, self._sa_url)

    def _ensure_schema(self) -> None:
        if self._ready:
            return
        with self._ready_lock:
            if self._ready:
                return
            try:
                with self._gate(), self._engine.connect() as conn:
                    conn.execution_options(cutover_write=True)
                    with conn.begin():
                        if conn.dialect.name == "postgresql":
                            conn.execute(
                                sa.text("SELECT pg_advisory_xact_lock(:key)"),
                                {"key": _SCHEMA_LOCK_KEY},
                            )
                        t.metadata.create_all(conn, checkfirst=True)
                        if conn.dialect.name == "postgresql":
                            t.postgres_metadata.create_all(conn, checkfirst=True)
                        found = conn.execute(
                            sa.select(t.meta.c.value).where(t.meta.c.key == "schema_version")
                        ).scalar()
                        if found is None:
                            conn.execute(
                                sa.insert(t.meta).values(
                                    key="schema_version", value=str(t.SCHEMA_VERSION)
                                )
                            )
                        elif int(found) > t.SCHEMA_VERSION:
                            raise StoreError(
                                f"the store at {redact_url(self.url)} has schema version {found},"
                                f" newer than this cutover ({t.SCHEMA_VERSION}); upgrade cutover"
                            )
                        elif int(found) < t.SCHEMA_VERSION:
                            _upgrade(conn, int(found))
                        if conn.dialect.name == "postgresql":
                            schema = conn.execute(sa.text("SELECT current_schema()")).scalar()
                            self._channel = _channel_for(str(schema or "public"))
            except (sa.exc.SQLAlchemyError, OSError) as error:
                raise StoreError(
                    f"cannot open the store at {redact_url(self.url)}: {self._reason(error)}"
                ) from error
            self._ready = True

    def after_fork_in_child(self) -> None:
        # Connections belong to the parent. PostgreSQL ones are dropped without closing the
        # parent's sockets; SQLite ones that were in use at the fork are kept, never closed.
        _INHERITED_SQLITE.extend(_OPEN_SQLITE.values())
        _OPEN_SQLITE.clear()
        self._engine.dispose(close=False)
        self._ready_lock = threading.Lock()

    def close(self) -> None:
        self._engine.dispose()

    # -- change notifications (PostgreSQL) -----------------------------------------------

    @property
    def notifies(self) -> bool:
        """Whether this store announces state changes (PostgreSQL LISTEN/NOTIFY)."""
        return self.dialect == "postgresql"

    def listen(
        self,
        changed: Callable[[], None],
        stop: threading.Event,
        connected: Callable[[bool], None] = lambda _up: None,
    ) -> None:
        """Call ``changed`` whenever a state changes, until ``stop`` is set. Runs in its own
        thread on its own connection; reconnects with backoff after any failure and calls
        ``changed`` once on (re)connecting, since changes may have been missed meanwhile.

        Right after LISTEN it sends itself a probe: if the probe does not come back (a
        transaction-mode pooler swallows notifications), it reports not listening, logs it
        once, and tries again later while polling does the work."""
        import psycopg
        from psycopg import sql

        backoff = 0.5
        warned = False
        while not stop.is_set():
            try:
                self._ensure_schema()
                assert self._channel is not None
                channel = sql.Identifier(self._channel)
                with psycopg.connect(**self._listen_args()) as conn:
                    conn.execute(sql.SQL("LISTEN {}").format(channel))
                    probe = f"probe:{secrets.token_hex(8)}"
                    conn.execute(sql.SQL("NOTIFY {}, {}").format(channel, sql.Literal(probe)))
                    heard_probe = any(n.payload == probe for n in conn.notifies(timeout=2.0))
                    if not heard_probe:
                        if not warned:
                            log.warning(
                                "cutover's change notifications do not arrive (a transaction-"
                                "mode pooler?); processes follow changes by polling instead"
                            )
                            warned = True
                        connected(False)
                        stop.wait(60)
                        continue
                    connected(True)
                    changed()
                    quiet = 0.0
                    while not stop.is_set():
                        heard = False
                        for _notice in conn.notifies(timeout=1.0):
                            heard = True
                            changed()
                        quiet = 0.0 if heard else quiet + 1.0
                        if quiet >= 10:  # a silent link may be a dead one: probe it
                            conn.execute("SELECT 1")
                            quiet = 0.0
                        backoff = 0.5  # this link has worked for a while
            except Exception:  # noqa: BLE001 - the listener must outlive anything; polling covers
                connected(False)
                stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)

    def leadership(
        self, role: str = "controller", *, duration: float = DEFAULT_LEASE
    ) -> Leadership:
        """A lease that at most one process holds at a time for ``role`` on this store, for
        ``duration`` seconds after each renewal by the database's clock."""
        return Leadership(self, role, duration)

    def _listen_args(self) -> dict[str, Any]:
        """psycopg.connect() arguments for the listening connection: the engine's own, so any
        password, host or option works the same."""
        _args, params = self._engine.dialect.create_connect_args(self._engine.url)
        params.update(self._pg_connect_args())
        params["autocommit"] = True
        return params

    def _insert(self, table: sa.Table) -> Any:
        # The dialect's own insert (ON CONFLICT); a SQLite store never loads PostgreSQL's.
        module = importlib.import_module(f"sqlalchemy.dialects.{self.dialect}")
        return module.insert(table)

    # -- states and decisions ------------------------------------------------------------

    def states(self) -> dict[str, State]:
        """Every stored state; a row that does not parse is skipped (and logged), so one bad
        row never keeps the others from being served."""
        with self._connect() as conn:
            rows = conn.execute(sa.select(t.states).order_by(t.states.c.name)).all()
        out = {}
        for row in rows:
            try:
                out[row.name] = _state_from_row(row)
            except (InvalidInput, TypeError, ValueError, AttributeError) as error:
                log.error("cutover skips the unreadable state of %r: %s", row.name, error)
        return out

    def state(self, name: str) -> State | None:
        with self._connect() as conn:
            row = conn.execute(sa.select(t.states).where(t.states.c.name == name)).first()
        return _state_from_row(row) if row else None

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
    ) -> Decision:
        """Compare-and-set: write ``state`` as version ``expected_version + 1`` and its decision,
        in one transaction; ConflictError if the stored version is not ``expected_version``,
        LeaseLost if ``fence``'s term is over."""
        return self.commit(
            name,
            kind="set",
            actor=actor,
            reason=reason,
            evidence=evidence,
            at=at,
            state=state,
            expected_version=expected_version,
            fence=fence,
        )

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
        noise_rule: NoiseRule | None = None,
        remove_noise_rule: bool = False,
        fence: Fence | None = None,
    ) -> Decision:
        """Record one decision in one transaction, with what it changes: a new ``state``
        (compare-and-set against ``expected_version``), a new ``rollout`` record
        (compare-and-set against ``expected_rollout``, 0 when there is none yet) and a new or
        removed ``cohort`` (compare-and-set against ``expected_cohort``). Any may be left out;
        ``expected_version`` without a state still requires the stored state to be at that
        version (a decision taken on a state someone has since changed is refused). A lost
        compare-and-set raises ConflictError and writes nothing; so does a cohort that would
        share a tenant with another cohort of the migration (InvalidInput), and a ``fence``
        whose lease term is over (LeaseLost: checked first, in the same transaction). A
        ``noise_rule`` is added (or, with ``remove_noise_rule``, removed: InvalidInput when
        there is none) in the same transaction."""
        _refuse_unkeepable(name, actor, reason, rollout)
        if state is not None and expected_version is None:
            raise ValueError("a state is written against an expected version")
        if rollout is not None and expected_rollout is None:
            raise ValueError("a rollout is written against an expected rollout version")
        if cohort is not None and (expected_cohort is None or cohort.migration != name):
            raise ValueError("a cohort of this migration is written against its expected version")
        evidence = dict(evidence or {})
        try:
            stall = None if fence is None else _stall_limit(fence.duration)
            with self._connect(write=True, stall=stall) as conn:
                if fence is not None:
                    _check_fence(conn, fence)
                read = sa.select(t.states).where(t.states.c.name == name)
                if self.dialect == "postgresql":  # held to the commit: the version stays read
                    read = read.with_for_update()
                row = conn.execute(read).first()
                old = _state_from_row(row) if row else None
                new = old or State()
                new_version = None
                current = old.version if old else 0
                if expected_version is not None and current != expected_version:
                    raise ConflictError(
                        name, expected_version, current, old.updated_by if old else None
                    )
                if state is not None:
                    assert expected_version is not None
                    new_version = expected_version + 1
                    new = state.evolve(version=new_version, updated_at=at, updated_by=actor)
                    values = {"name": name, **new.to_dict()}
                    _put_versioned(conn, t.states.c.name, name, old, expected_version, values)
                if rollout is not None:
                    assert expected_rollout is not None
                    self._cas_rollout(conn, rollout, expected_rollout, at)
                if cohort is not None:
                    assert expected_cohort is not None
                    self._cas_cohort(conn, cohort, expected_cohort, at, actor, remove_cohort)
                if noise_rule is not None:
                    _put_noise_rule(conn, noise_rule, remove_noise_rule)
                decision_id = conn.execute(
                    sa.insert(t.decisions)
                    .values(
                        migration=name,
                        kind=kind,
                        version=new_version,
                        at=at,
                        actor=actor,
                        reason=reason,
                        old_state=old.to_dict() if old else None,
                        new_state=new.to_dict(),
                        evidence=evidence,
                    )
                    .returning(t.decisions.c.id)
                ).scalar_one()
                if new_version is not None and self._channel is not None:
                    conn.execute(  # delivered to listeners when this commits
                        sa.text("SELECT pg_notify(:channel, :payload)"),
                        {"channel": self._channel, "payload": f"{new_version}:{name}"},
                    )
        except (_Lost, StoreError) as error:
            cause = error.__cause__ if isinstance(error, StoreError) else None
            if isinstance(error, StoreError) and not isinstance(cause, sa.exc.IntegrityError):
                raise
            raise self._lost_race(
                name, state, rollout, expected_version, expected_rollout, cohort, expected_cohort
            ) from None
        return Decision(
            decision_id, name, at, actor, reason, old, new, evidence, kind, new_version is not None
        )

    def _cas_rollout(self, conn: Connection, rollout: Rollout, expected: int, at: float) -> None:
        found = conn.execute(
            sa.select(t.rollouts.c.version, t.rollouts.c.started_by).where(
                t.rollouts.c.migration == rollout.migration
            )
        ).first()
        current = found.version if found else 0
        if current != expected:
            raise ConflictError(
                rollout.migration,
                expected,
                current,
                found.started_by if found else None,
                what="rollout",
            )
        values = rollout.evolve(version=expected + 1, updated_at=at).to_dict()
        _put_versioned(conn, t.rollouts.c.migration, rollout.migration, found, expected, values)

    def _cas_cohort(
        self,
        conn: Connection,
        cohort: Cohort,
        expected: int,
        at: float,
        actor: str,
        remove: bool,
    ) -> None:
        """Write (or delete) ``cohort`` if its stored version is still ``expected``, keeping
        every tenant in at most one cohort of the migration."""
        c = t.cohorts.c
        if self.dialect == "postgresql":
            # Cohort writes of one migration take turns, so two cohorts claiming the same
            # tenant at once cannot both see the other missing. SQLite writers already do.
            digest = hashlib.sha1(f"{self._channel}:cohorts:{cohort.migration}".encode()).digest()
            conn.execute(
                sa.text("SELECT pg_advisory_xact_lock(:key)"),
                {"key": int.from_bytes(digest[:8], "big", signed=True)},
            )
        rows = conn.execute(
            sa.select(c.name, c.tenants, c.version, c.updated_by).where(
                c.migration == cohort.migration
            )
        ).all()
        found = next((row for row in rows if row.name == cohort.name), None)
        current = found.version if found else 0
        if current != expected:
            raise _cohort_conflict(cohort, expected, current, found.updated_by if found else None)
        mine = (c.migration == cohort.migration, c.name == cohort.name, c.version == expected)
        if remove:
            if found is None or conn.execute(sa.delete(t.cohorts).where(*mine)).rowcount != 1:
                raise _Lost()
            return
        claimed = set(cohort.tenants)
        for row in sorted(rows, key=lambda row: row.name):
            shared = sorted(claimed.intersection(row.tenants or ()))
            if row.name != cohort.name and shared:
                raise InvalidInput(
                    f"tenant {shared[0]!r} is already in cohort {row.name!r} of"
                    f" {cohort.migration!r}; a tenant belongs to at most one cohort of a"
                    " migration, so leave it out or remove it from the other cohort first"
                )
        values = cohort.evolve(version=expected + 1, updated_at=at, updated_by=actor).to_dict()
        if found is None:
            conn.execute(sa.insert(t.cohorts).values(**values))
        elif conn.execute(sa.update(t.cohorts).where(*mine).values(**values)).rowcount != 1:
            raise _Lost()

    def cohorts(self, name: str | None = None) -> list[Cohort]:
        c = t.cohorts.c
        query = sa.select(t.cohorts).order_by(c.migration, c.wave, c.name)
        if name is not None:
            query = query.where(c.migration == name)
        with self._connect() as conn:
            rows = conn.execute(query).all()
        return [Cohort.from_dict(row._mapping) for row in rows]

    def cohort(self, name: str, cohort: str) -> Cohort | None:
        c = t.cohorts.c
        query = sa.select(t.cohorts).where(c.migration == name, c.name == cohort)
        with self._connect() as conn:
            row = conn.execute(query).first()
        return Cohort.from_dict(row._mapping) if row else None

    def _lost_race(
        self,
        name: str,
        state: State | None,
        rollout: Rollout | None,
        expected_version: int | None,
        expected_rollout: int | None,
        cohort: Cohort | None = None,
        expected_cohort: int | None = None,
    ) -> ConflictError:
        """Another writer won between our read and our write: report who, and of what."""
        if expected_version is not None:
            latest = self.state(name)
            if latest is None or latest.version != expected_version:
                return ConflictError(
                    name,
                    expected_version,
                    latest.version if latest else 0,
                    latest.updated_by if latest else None,
                )
        if cohort is not None and rollout is None:
            stored = self.cohort(name, cohort.name)
            return _cohort_conflict(
                cohort,
                expected_cohort or 0,
                stored.version if stored else 0,
                stored.updated_by if stored else None,
            )
        found = self.rollout(name)
        return ConflictError(
            name,
            expected_rollout or 0,
            found.version if found else 0,
            found.started_by if found else None,
            what="rollout" if rollout is not None else "state",
        )

    def rollout(self, name: str) -> Rollout | None:
        with self._connect() as conn:
            row = conn.execute(sa.select(t.rollouts).where(t.rollouts.c.migration == name)).first()
        return Rollout.from_dict(row._mapping) if row else None

    def rollouts(self) -> dict[str, Rollout]:
        with self._connect() as conn:
            rows = conn.execute(sa.select(t.rollouts).order_by(t.rollouts.c.migration)).all()
        return {row.migration: Rollout.from_dict(row._mapping) for row in rows}

    def decisions(self, name: str | None = None, limit: int = 100) -> list[Decision]:
        query = sa.select(t.decisions).order_by(t.decisions.c.id.desc()).limit(limit)
        if name is not None:
            query = query.where(t.decisions.c.migration == name)
        with self._connect() as conn:
            rows = conn.execute(query).all()
        return [_decision_from_row(row) for row in reversed(rows)]

    # -- telemetry -----------------------------------------------------------------------

    def write_flush(self, batch: FlushBatch) -> bool:
        """Apply one flush exactly once; False when this (instance, seq) was applied before."""
        window_rows = []
        # Fine buckets, and coarse ones where a window read from before schema 7 is written
        # again (a backtest copies stored windows): each to the table of its resolution.
        histogram_rows: dict[int, list[dict[str, Any]]] = {SUB_BITS: [], COARSE_BITS: []}
        for (start, _migration), delta in batch.windows.items():
            for arm, counts in delta.arms.items():
                if counts.empty:
                    continue
                key = {"migration": delta.migration, "arm": arm.value, "start": start}
                window_rows.append({**key, **dict(zip(COUNTERS, counts.counts, strict=True))})
                histogram_rows[counts.histogram.bits].extend(
                    {**key, "bucket": bucket, "count": count}
                    for bucket, count in counts.histogram.items()
                )
        fingerprint_rows = [
            {
                "migration": migration,
                "start": start,
                "key": fingerprint_key(fingerprint),
                "fingerprint": clean_text(fingerprint, 2000),
                "count": count,
            }
            for (start, migration, fingerprint), count in batch.fingerprints.items()
        ]
        empty = not window_rows and not batch.samples and not fingerprint_rows
        if (
            self.stage_flushes
            and self.dialect == "postgresql"
            and not empty
            and not histogram_rows[COARSE_BITS]  # a backtest's copy of old windows: rare
        ):
            return self._stage_flush(batch, window_rows, histogram_rows[SUB_BITS], fingerprint_rows)
        # A fixed order of row locks keeps concurrent flushes from deadlocking on PostgreSQL.
        window_rows.sort(key=lambda r: (r["migration"], r["arm"], r["start"]))
        for rows in histogram_rows.values():
            rows.sort(key=lambda r: (r["migration"], r["arm"], r["start"], r["bucket"]))
        fingerprint_rows.sort(key=lambda r: (r["migration"], r["start"], r["key"]))
        with self._connect(write=True) as conn:
            if empty:
                self._heartbeat(conn, batch.heartbeat)  # idempotent on its own
                return True
            claimed = conn.execute(
                self._insert(t.flushes)
                .values(
                    run=batch.run or batch.instance,
                    seq=batch.seq,
                    instance=batch.instance,
                    at=batch.at,
                )
                .on_conflict_do_nothing(index_elements=["run", "seq"])
                .returning(t.flushes.c.seq)
            ).first()
            if claimed is None:
                self._heartbeat(conn, batch.heartbeat)
                return False
            self._add(conn, t.windows, ["migration", "arm", "start"], COUNTERS, window_rows)
            if histogram_rows[COARSE_BITS]:
                self._coarse_any = True  # read them back at once, not after the next look
            for table, bits in _LATENCY_TABLES:
                self._add(
                    conn,
                    table,
                    ["migration", "arm", "start", "bucket"],
                    ["count"],
                    histogram_rows[bits],
                )
            self._add(
                conn, t.drift_counts, ["migration", "start", "key"], ["count"], fingerprint_rows
            )
            self._add_samples(conn, batch)
            self._heartbeat(conn, batch.heartbeat)
        return True

    def _stage_flush(
        self,
        batch: FlushBatch,
        window_rows: list[dict[str, Any]],
        latency_rows: list[dict[str, Any]],
        fingerprint_rows: list[dict[str, Any]],
    ) -> bool:
        """PostgreSQL: claim the flush and stage its rows as one append-only row, which waits
        on no other flush's row locks, then fold what is staged unless another process is
        folding already. Every read folds first, so it sees every flush committed before it."""
        staged: dict[str, list[Any]] = {}
        for prefix, rows in (("w", window_rows), ("l", latency_rows), ("d", fingerprint_rows)):
            for column in t.STAGED_PREFIXES[prefix].columns:
                staged[f"{prefix}_{column.name}"] = [row[column.name] for row in rows]
        claim = {
            "run": batch.run or batch.instance,
            "seq": batch.seq,
            "instance": batch.instance,
            "at": batch.at,
        }
        with self._connect(write=True) as conn:
            claimed = conn.execute(sa.text(_stage_statement()), {**claim, **staged}).first()
            if claimed is None:
                self._heartbeat(conn, batch.heartbeat)
                return False
            self._add_samples(conn, batch)
            self._heartbeat(conn, batch.heartbeat)
        # Its own transaction: a fold that fails (a connection lost midway) leaves the flush
        # applied and staged, and the next flush or read folds it.
        try:
            with self._connect(write=True) as conn:
                conn.execute(sa.text(_fold_statement()))
        except StoreError as error:
            log.warning("cutover could not fold staged flushes yet: %s", error)
        return True

    def _settle(self, conn: Connection) -> None:
        """Fold every flush staged before this read, waiting for a fold under way: what a
        read of windows or drift counts does first on PostgreSQL, in the read's transaction."""
        if self.dialect != "postgresql":
            return
        locked = conn.execute(
            sa.text(
                f"SELECT pg_advisory_xact_lock({_FOLD_KEY})"
                f" WHERE EXISTS (SELECT FROM {t.staged.name})"
            )
        ).first()
        if locked is not None:
            conn.execute(sa.text(_fold_statement()))

    def _add_samples(self, conn: Connection, batch: FlushBatch) -> None:
        if not batch.samples:
            return
        conn.execute(
            sa.insert(t.drift_samples),
            [
                {
                    "migration": sample.migration,
                    "at": sample.at,
                    "unit": None if sample.unit is None else sample.unit[:400],
                    "fingerprint": sample.fingerprint,
                    "payload": {
                        "input": sample.input,
                        "legacy": sample.legacy,
                        "new": sample.new,
                        "diff": sample.diff,
                        "truncated": sample.truncated,
                    },
                }
                for sample in batch.samples
            ],
        )

    def _add(
        self,
        conn: Connection,
        table: sa.Table,
        keys: list[str],
        counters: Sequence[str],
        rows: list[dict[str, Any]],
    ) -> None:
        """Insert ``rows``, adding their ``counters`` to rows already there.

        Rows with the same key are summed first (one statement may not touch a row twice).
        PostgreSQL gets one statement per chunk of rows (columns passed as arrays and
        unnested), so a flush costs a handful of round trips; SQLite runs the prepared upsert
        per row in C, which is as fast as it gets there."""
        if not rows:
            return
        merged: dict[tuple[Any, ...], dict[str, Any]] = {}
        for row in rows:
            key = tuple(row[name] for name in keys)
            seen = merged.get(key)
            if seen is None:
                merged[key] = dict(row)
            else:
                for name in counters:
                    seen[name] += row[name]
        unique = list(merged.values())
        if self.dialect != "postgresql":
            stmt = self._insert(table)
            stmt = stmt.on_conflict_do_update(
                index_elements=keys,
                set_={name: table.c[name] + stmt.excluded[name] for name in counters},
            )
            conn.execute(stmt, unique)
            return
        columns = list(unique[0])
        statement = sa.text(_unnest_upsert(table, tuple(columns), tuple(keys), tuple(counters)))
        for begin in range(0, len(unique), _ROWS_PER_STATEMENT):
            chunk = unique[begin : begin + _ROWS_PER_STATEMENT]
            conn.execute(
                statement,
                {f"p{i}": [row[name] for row in chunk] for i, name in enumerate(columns)},
            )

    def heartbeat(self, info: InstanceInfo) -> None:
        """Record that a process (an app instance, a controller) is alive, without telemetry."""
        with self._connect(write=True) as conn:
            self._heartbeat(conn, info)

    def _heartbeat(self, conn: Connection, info: InstanceInfo | None) -> None:
        if info is None:
            return
        stmt = self._insert(t.instances).values(
            instance=info.instance,
            host=info.host,
            pid=info.pid,
            started_at=info.started_at,
            last_seen=info.last_seen,
            info=dict(info.info),
        )
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=["instance"],
                set_={"last_seen": stmt.excluded.last_seen, "info": stmt.excluded.info},
            )
        )

    def windows(
        self, name: str, since: float, until: float | None = None, *, histograms: bool = True
    ) -> dict[Arm, ArmCounts]:
        """Every instance's windows of ``name`` that start in [since, until), summed per arm
        (with their latency histograms unless ``histograms`` is False)."""
        found = self.windows_of({name: (since, until)}, histograms={name} if histograms else ())
        return found[name]

    def windows_of(
        self,
        spans: Mapping[str, tuple[float, float | None]],
        *,
        histograms: Collection[str] = (),
    ) -> dict[str, dict[Arm, ArmCounts]]:
        """For each migration of ``spans``, its windows that start in its [since, until) summed
        per arm, with latency histograms for those named in ``histograms``: one statement for
        the counters and one per latency table for all the migrations of the same span."""
        out = {name: {Arm.LEGACY: ArmCounts(), Arm.NEW: ArmCounts()} for name in spans}
        w = t.windows.c
        wanted = {name: spans[name] for name in histograms if name in spans}
        if not spans:
            return out
        with self._connect(many=True) as conn:
            self._settle(conn)
            for (since, until), names in _by_span(spans).items():
                counters = (
                    sa.select(
                        w.migration,
                        w.arm,
                        *(sa.func.coalesce(_summed(w[n]), 0) for n in COUNTERS),
                    )
                    .where(*_span(t.windows, names, since, until))
                    .group_by(w.migration, w.arm)
                )
                for row in conn.execute(counters).all():
                    out[row[0]][_ARMS[row[1]]].counts = [int(value) for value in row[2:]]
            for table, bits in self._latency_tables(conn) if wanted else ():
                c = table.c
                found: dict[tuple[str, str], dict[int, int]] = {}
                for (since, until), names in _by_span(wanted).items():
                    buckets = (
                        sa.select(c.migration, c.arm, c.bucket, _summed(c.count).label("count"))
                        .where(*_span(table, names, since, until))
                        .group_by(c.migration, c.arm, c.bucket)
                    )
                    if self.dialect == "postgresql":
                        # One row per migration and arm, its buckets and sums as two arrays:
                        # a day of a step's histograms is thousands of rows otherwise.
                        summed = buckets.subquery()
                        s = summed.c
                        per_arm = sa.select(
                            s.migration,
                            s.arm,
                            sa.type_coerce(sa.func.array_agg(s.bucket), sa.types.NullType()),
                            sa.type_coerce(sa.func.array_agg(s["count"]), sa.types.NullType()),
                        ).group_by(s.migration, s.arm)
                        for name, arm, indexes, counts in conn.execute(per_arm).all():
                            found[name, arm] = dict(zip(indexes, counts, strict=True))
                        continue
                    for name, arm, bucket, count in conn.execute(buckets).all():
                        found.setdefault((name, arm), {})[int(bucket)] = int(count)
                for (name, arm), counts in found.items():
                    out[name][_ARMS[arm]].histogram.merge(Histogram.of_counts(counts, bits))
        return out

    def totals(self, since: float, until: float | None = None) -> dict[str, dict[Arm, ArmCounts]]:
        """Every migration's counters over the windows that start in [since, until), summed per
        arm, in one statement (no histograms): what an overview of many migrations needs."""
        c = t.windows.c
        conditions = [c.start >= int(since), c.arm.in_([arm.value for arm in Arm])]
        if until is not None:
            conditions.append(c.start < int(until))
        query = (
            sa.select(c.migration, c.arm, *(_summed(c[n]) for n in COUNTERS))
            .where(*conditions)
            .group_by(c.migration, c.arm)
        )
        out: dict[str, dict[Arm, ArmCounts]] = {}
        with self._connect() as conn:
            self._settle(conn)
            for row in conn.execute(query):
                arms = out.get(row[0])
                if arms is None:
                    arms = out[row[0]] = {Arm.LEGACY: ArmCounts(), Arm.NEW: ArmCounts()}
                arms[Arm(row[1])].counts = [int(value) for value in row[2:]]
        return out

    def series(
        self,
        name: str,
        since: float,
        until: float | None = None,
        *,
        histograms_since: float | None = None,
    ) -> dict[int, dict[Arm, ArmCounts]]:
        """Every instance's windows of ``name`` that start in [since, until), summed per window
        start and arm, oldest first. Latency histograms are read only for the windows from
        ``histograms_since`` on (none when it is None): they are the larger part."""
        return self.series_of({name: (since, until, histograms_since)})[name]

    def series_of(
        self, spans: Mapping[str, tuple[float, float | None, float | None]]
    ) -> dict[str, dict[int, dict[Arm, ArmCounts]]]:
        """:meth:`series` of many migrations at once, ``spans`` giving each its (since, until,
        histograms_since): one statement for the counters and one per latency table for all
        the migrations of the same span."""
        out: dict[str, dict[int, dict[Arm, ArmCounts]]] = {name: {} for name in spans}

        def slot(name: str, start: int) -> dict[Arm, ArmCounts]:
            windows = out[name]
            found = windows.get(start)
            if found is None:
                found = windows[start] = {Arm.LEGACY: ArmCounts(), Arm.NEW: ArmCounts()}
            return found

        w = t.windows.c
        counted = {name: (since, until) for name, (since, until, _) in spans.items()}
        histograms = {
            name: (max(since, later), until)
            for name, (since, until, later) in spans.items()
            if later is not None
        }
        if not spans:
            return out
        with self._connect(many=True) as conn:
            self._settle(conn)
            for (since, until), names in _by_span(counted).items():
                counters = (
                    sa.select(w.migration, w.start, w.arm, *(_summed(w[n]) for n in COUNTERS))
                    .where(*_span(t.windows, names, since, until))
                    .group_by(w.migration, w.start, w.arm)
                )
                for row in conn.execute(counters).all():
                    slot(row[0], int(row[1]))[_ARMS[row[2]]].counts = [int(v) for v in row[3:]]
            for table, bits in self._latency_tables(conn) if histograms else ():
                for (since, until), names in _by_span(histograms).items():
                    per_window = self._buckets_per_window(
                        conn, table, _span(table, names, since, until)
                    )
                    for (name, start, arm), counts in per_window.items():
                        found = slot(name, start)[_ARMS[arm]]
                        if found.histogram.buckets:
                            found.histogram.merge(Histogram.of_counts(counts, bits))
                        else:  # the first table read for this window: nothing to add to
                            found.histogram = Histogram.of_counts(counts, bits)
        return {name: dict(sorted(windows.items())) for name, windows in out.items()}

    def _latency_tables(self, conn: Connection) -> tuple[tuple[sa.Table, int], ...]:
        """Where to read latency from: the coarse table too while it holds any row. Whether it
        does is looked up at most once a minute (an instance of the previous release may still
        write there during an upgrade), so a store without old windows skips it on reading."""
        now = time.monotonic()
        if now - self._coarse_seen >= COARSE_RECHECK:
            found = conn.execute(sa.select(t.histograms.c.start).limit(1)).first()
            self._coarse_any = found is not None
            self._coarse_seen = now
        return _LATENCY_TABLES if self._coarse_any else _LATENCY_TABLES[:1]

    def _buckets_per_window(
        self, conn: Connection, table: sa.Table, conditions: list[Any]
    ) -> dict[tuple[str, int, str], dict[int, int]]:
        """(migration, start, arm) -> bucket -> count of one latency table's rows."""
        h = table.c
        out: dict[tuple[str, int, str], dict[int, int]] = {}
        if self.dialect == "postgresql":
            # The key holds one row per (start, arm, bucket) of a migration: one row per
            # window and arm, with its buckets and counts as two arrays.
            per_window = (
                sa.select(
                    h.migration,
                    h.start,
                    h.arm,
                    # as the driver returns them: lists of ints, no per-item processing
                    sa.type_coerce(sa.func.array_agg(h.bucket), sa.types.NullType()),
                    sa.type_coerce(sa.func.array_agg(h.count), sa.types.NullType()),
                )
                .where(*conditions)
                .group_by(h.migration, h.start, h.arm)
            )
            for name, start, arm, indexes, counts in conn.execute(per_window).all():
                out[name, int(start), arm] = dict(zip(indexes, counts, strict=True))
            return out
        rows = conn.execute(
            sa.select(h.migration, h.start, h.arm, h.bucket, h.count).where(*conditions)
        )
        for name, start, arm, bucket, count in rows.all():
            found = out.get((name, int(start), arm))
            if found is None:
                found = out[name, int(start), arm] = {}
            found[bucket] = count  # the key holds one row per (start, arm, bucket)
        return out

    def migrations(self) -> list[str]:
        """Names with a stored state or any recorded window, sorted."""
        with self._connect() as conn:
            self._settle(conn)
            named = set(conn.execute(sa.select(t.states.c.name)).scalars())
            named.update(conn.execute(_DISTINCT_WINDOW_MIGRATIONS).scalars())
        return sorted(named)

    def drift_samples(
        self, name: str, limit: int = 20, since: float | None = None, fingerprint: str | None = None
    ) -> list[DriftSample]:
        query = (
            sa.select(t.drift_samples)
            .where(t.drift_samples.c.migration == name)
            .order_by(t.drift_samples.c.at.desc(), t.drift_samples.c.id.desc())
            .limit(limit)
        )
        if since is not None:
            query = query.where(t.drift_samples.c.at >= since)
        if fingerprint is not None:
            query = query.where(t.drift_samples.c.fingerprint == fingerprint)
        with self._connect() as conn:
            return [_sample_from_row(row) for row in conn.execute(query)]

    def drift_groups(self, name: str, since: float | None = None) -> list[DriftGroup]:
        """Drifts per fingerprint (exact counts from every instance), most frequent first, each
        with its latest sample when one was kept."""
        counts = t.drift_counts
        samples = t.drift_samples
        count_filter = [counts.c.migration == name]
        sample_filter = [samples.c.migration == name]
        if since is not None:
            count_filter.append(counts.c.start >= int(since))
            sample_filter.append(samples.c.at >= since)
        grouped = (
            sa.select(
                counts.c.key,
                sa.func.min(counts.c.fingerprint),
                sa.func.sum(counts.c.count),
                sa.func.min(counts.c.start),
                sa.func.max(counts.c.start),
            )
            .where(*count_filter)
            .group_by(counts.c.key)
            .order_by(sa.func.sum(counts.c.count).desc(), sa.func.min(counts.c.fingerprint))
        )
        kept = (
            sa.select(samples.c.fingerprint, sa.func.count(), sa.func.max(samples.c.id))
            .where(*sample_filter)
            .group_by(samples.c.fingerprint)
        )
        with self._connect() as conn:
            self._settle(conn)
            rows = conn.execute(grouped).all()
            kept_by_fingerprint = {row[0]: (int(row[1]), row[2]) for row in conn.execute(kept)}
            latest = [example for _, example in kept_by_fingerprint.values()]
            examples = {
                row.id: _sample_from_row(row)
                for row in conn.execute(sa.select(samples).where(samples.c.id.in_(latest)))
            }
        out = []
        for _key, fingerprint, count, first, last in rows:
            sampled, example = kept_by_fingerprint.get(fingerprint, (0, None))
            out.append(
                DriftGroup(
                    fingerprint=fingerprint,
                    count=int(count),
                    samples=sampled,
                    first_at=float(first),
                    last_at=float(last),
                    example=examples.get(example),
                )
            )
        return out

    def instances(self) -> list[InstanceInfo]:
        with self._connect() as conn:
            rows = conn.execute(sa.select(t.instances).order_by(t.instances.c.last_seen.desc()))
            return [
                InstanceInfo(r.instance, r.host, r.pid, r.started_at, r.last_seen, r.info or {})
                for r in rows
            ]

    def write_noise(
        self, migration: str, instance: str, counts: Iterable[NoiseCount], at: float
    ) -> None:
        """Replace what ``instance`` learned of ``migration``'s noise (its counts since it
        started) with ``counts``: written whole each time, so a retry writes nothing twice."""
        rows = [
            {
                "migration": migration,
                "instance": instance,
                "route": clean_text(count.route, 400),
                "path": clean_text(count.path, 1000),
                "raw": count.raw,
                "noise": count.noise,
                "requests": count.requests,
                "at": at,
            }
            for count in counts
        ]
        c = t.noise_counts.c
        with self._connect(write=True) as conn:
            conn.execute(
                sa.delete(t.noise_counts).where(c.migration == migration, c.instance == instance)
            )
            if rows:
                conn.execute(sa.insert(t.noise_counts), rows)

    def noise(self, migration: str) -> list[NoiseCount]:
        """What every instance learned of ``migration``'s noise, summed per route and field."""
        c = t.noise_counts.c
        fields = (
            sa.select(c.route, c.path, sa.func.sum(c.raw), sa.func.sum(c.noise))
            .where(c.migration == migration)
            .group_by(c.route, c.path)
            .order_by(c.route, c.path)
        )
        # Each instance's request count is the same on every row of its route: take it once.
        per_instance = (
            sa.select(c.route, c.instance, sa.func.max(c.requests).label("requests"))
            .where(c.migration == migration)
            .group_by(c.route, c.instance)
            .subquery()
        )
        requests = sa.select(per_instance.c.route, sa.func.sum(per_instance.c.requests)).group_by(
            per_instance.c.route
        )
        with self._connect() as conn:
            totals = {route: int(n) for route, n in conn.execute(requests)}
            return [
                NoiseCount(route, path, int(raw), int(noise), totals.get(route, 0))
                for route, path, raw, noise in conn.execute(fields)
            ]

    def write_route_windows(
        self, migration: str, instance: str, rows: Iterable[RouteWindow]
    ) -> None:
        """Write ``instance``'s counts of these routes' windows whole, replacing what it wrote
        of the same windows before."""
        values = [
            {
                "migration": migration,
                "instance": instance,
                "route": clean_text(row.route, 400),
                "arm": row.arm.value,
                "start": row.start,
                "calls": row.calls,
                "errors": row.errors,
                "timeouts": row.timeouts,
                "fallbacks": row.fallbacks,
                "offpath": row.offpath,
                "histogram": {
                    "bits": row.histogram.bits,
                    "buckets": [list(pair) for pair in row.histogram.items()],
                },
            }
            for row in rows
        ]
        if not values:
            return
        c = t.route_windows.c
        with self._connect(write=True) as conn:
            for value in values:
                conn.execute(
                    sa.delete(t.route_windows).where(
                        c.migration == migration,
                        c.instance == instance,
                        c.route == value["route"],
                        c.arm == value["arm"],
                        c.start == value["start"],
                    )
                )
            conn.execute(sa.insert(t.route_windows), values)

    def route_windows(
        self, migration: str, since: float, until: float | None = None
    ) -> dict[str, dict[Arm, ArmCounts]]:
        """Per route, both arms' counts and latency over the windows that start in
        [since, until), summed over every proxy process."""
        c = t.route_windows.c
        query = sa.select(t.route_windows).where(c.migration == migration, c.start >= int(since))
        if until is not None:
            query = query.where(c.start < int(until))
        out: dict[str, dict[Arm, ArmCounts]] = {}
        with self._connect() as conn:
            for row in conn.execute(query):
                arms = out.setdefault(row.route, {Arm.LEGACY: ArmCounts(), Arm.NEW: ArmCounts()})
                counts = arms[Arm(row.arm)]
                for name in ("calls", "errors", "timeouts", "fallbacks", "offpath"):
                    counts.counts[COUNTERS.index(name)] += int(getattr(row, name))
                counts.histogram.merge(_route_histogram(row.histogram))
        return out

    def noise_rules(self, migration: str) -> list[NoiseRule]:
        c = t.noise_rules.c
        query = sa.select(t.noise_rules).where(c.migration == migration).order_by(c.prefix)
        with self._connect() as conn:
            return [
                NoiseRule(row.migration, row.prefix, row.reason, row.added_by, row.added_at)
                for row in conn.execute(query)
            ]

    def gc(self, before: float) -> dict[str, int]:
        """Delete windows, histograms, drift samples, flush records and silent instances older
        than ``before``. Decisions and states are never deleted."""
        removed = {}
        with self._connect(write=True) as conn:
            self._settle(conn)
            for label, table, column in (
                ("windows", t.windows, t.windows.c.start),
                ("histogram_buckets", t.latency, t.latency.c.start),
                ("coarse_histogram_buckets", t.histograms, t.histograms.c.start),
                ("drift_samples", t.drift_samples, t.drift_samples.c.at),
                ("drift_counts", t.drift_counts, t.drift_counts.c.start),
                ("flushes", t.flushes, t.flushes.c.at),
                ("instances", t.instances, t.instances.c.last_seen),
                ("noise_counts", t.noise_counts, t.noise_counts.c.at),
                ("route_windows", t.route_windows, t.route_windows.c.start),
            ):
                removed[label] = conn.execute(sa.delete(table).where(column < before)).rowcount
        return removed


class _Lost(Exception):
    """The conditional update matched no row: a concurrent writer won."""


# Failures worth retrying: the connection, a timeout, a busy or read-only database. What the
# database says about the data sent (bad value, constraint, syntax) fails the same way again.
_TRANSIENT = (
    sa.exc.OperationalError,
    sa.exc.InterfaceError,
    sa.exc.DisconnectionError,
    sa.exc.TimeoutError,
    OSError,
)
_TRANSIENT_SQLSTATE_CLASSES = ("08", "25", "40", "53", "57", "58")  # connection, read-only,
# serialization, resources, operator intervention (cancel, shutdown), system errors
_TRANSIENT_SQLSTATES = ("26000", "42P05", "55P03")  # poolers' prepared statements, lock wait


class Leadership:
    """A lease on one role, held by at most one process at a time across processes and hosts:
    a row of ``cutover_leases`` naming its holder, its term and when it expires, by the
    database's clock (never a client's: hosts disagree, and cutover's clock may be simulated).

    The holder renews it with :meth:`held` well inside its duration; once it expires, the next
    process to call :meth:`held` takes it with the next term. Writes fenced with :meth:`fence`
    are refused once their term is over, so a holder frozen past its lease (SIGSTOP, a paused
    VM) cannot act when it wakes. The same row works on SQLite and PostgreSQL."""

    def __init__(self, store: SqlStore, role: str, duration: float) -> None:
        if not duration >= MIN_LEASE:  # NaN too
            raise InvalidInput(
                f"a lease must last at least {format_duration(MIN_LEASE)}, got"
                f" {duration!r} seconds; give a longer one, e.g. --lease 15s"
            )
        self._store = store
        self.role = role
        self.duration = float(duration)
        # Unique to this object: two leases in one process are two candidates.
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self._term: int | None = None
        self.seen: tuple[str, int] | None = None  # (holder, term) the last call found leading

    def held(self) -> bool:
        """Renew the lease if this object holds it, else take it if it is free or expired (a
        new term); True while this object holds it. StoreError when the store fails: what
        this object holds is then unknown, and only a fenced write can tell."""
        store = self._store
        c = t.leases.c
        now = _db_now(store.dialect)
        with store._connect(write=True, stall=_stall_limit(self.duration)) as conn:
            if self._term is not None:
                renewed = conn.execute(
                    sa.update(t.leases)
                    .where(
                        c.role == self.role,
                        c.holder == self.holder,
                        c.term == self._term,
                        c.expires_at > now,
                    )
                    .values(renewed_at=now, expires_at=now + self.duration)
                ).rowcount
                if renewed == 1:
                    self.seen = (self.holder, self._term)
                    return True
                self._term = None  # expired, released or taken: a new term, if any
            read = sa.select(c.holder, c.term, c.expires_at).where(c.role == self.role)
            if store.dialect == "postgresql":
                read = read.with_for_update()  # candidates take turns on the row
            row = conn.execute(read).first()
            clock = float(conn.execute(sa.select(now)).scalar_one())  # after the row lock
            values: dict[str, Any] = {"renewed_at": clock, "expires_at": clock + self.duration}
            if row is not None and row.expires_at > clock:
                self.seen = (row.holder, row.term)
                if row.holder != self.holder:
                    return False
                # Taken by this object in a call whose answer was lost (the connection broke
                # at the commit): it is ours, in that term.
                term = row.term
            else:
                term = 1 if row is None else row.term + 1
                values.update(holder=self.holder, term=term, acquired_at=clock)
            if row is None:
                inserted = conn.execute(
                    store._insert(t.leases)
                    .values(role=self.role, **values)
                    .on_conflict_do_nothing(index_elements=["role"])
                    .returning(c.term)
                ).first()
                taken = 0 if inserted is None else 1
            else:
                taken = conn.execute(
                    sa.update(t.leases)
                    .where(c.role == self.role, c.term == row.term)
                    .values(**values)
                ).rowcount
            if taken != 1:
                return False  # another candidate took it first
            self._term = term
            self.seen = (self.holder, term)
            return True

    def fence(self) -> Fence | None:
        if self._term is None:
            return None
        return Fence(self.role, self.holder, self._term, self.duration)

    def release(self) -> None:
        """End this object's term now, so another process takes over on its next try; the row
        stays (its term only grows). A store that fails lets the lease run out instead."""
        term, self._term = self._term, None
        if term is None:
            return
        now = _db_now(self._store.dialect)
        c = t.leases.c
        try:
            with self._store._connect(write=True, stall=_stall_limit(self.duration)) as conn:
                conn.execute(
                    sa.update(t.leases)
                    .where(c.role == self.role, c.holder == self.holder, c.term == term)
                    .values(expires_at=now)
                )
        except StoreError as error:
            log.warning(
                "cutover could not release the %s lease (it expires instead): %s", self.role, error
            )


def _db_now(dialect: str) -> sa.ColumnElement[float]:
    """Now, in seconds since the epoch, by the database's clock (SQLite's is its host's)."""
    if dialect == "postgresql":
        return sa.literal_column(
            "CAST(extract(epoch FROM clock_timestamp()) AS double precision)", sa.Float
        )
    return sa.literal_column("((julianday('now') - 2440587.5) * 86400.0)", sa.Float)


def _stall_limit(duration: float) -> float:
    """How long a lease's transaction may stall: a quarter of the lease, so a frozen holder's
    row locks are freed (by ending its session) before a successor has long to wait for them,
    and at most 5 s, well inside the 10 s the successor waits for a lock."""
    return min(5.0, max(0.25, duration / 4))


def _check_fence(conn: Connection, fence: Fence) -> None:
    """Refuse the write of this transaction (raising LeaseLost) unless ``fence``'s term still
    holds its lease by the database's clock."""
    c = t.leases.c
    now = _db_now(conn.dialect.name)
    current = sa.select(c.term).where(
        c.role == fence.role,
        c.holder == fence.holder,
        c.term == fence.term,
        c.expires_at > now,
    )
    if conn.dialect.name == "postgresql":
        # Held to the commit, so the lease cannot change hands before this write lands. A row
        # changed while this waited is read again, and the condition judged on it anew.
        # SQLite writers already take turns (BEGIN IMMEDIATE).
        current = current.with_for_update(read=True)
    if conn.execute(current).first() is not None:
        return
    row = conn.execute(sa.select(c.holder, c.term).where(c.role == fence.role)).first()
    if row is None:
        why = "no process holds it"
    elif row.term != fence.term:
        why = f"{row.holder} holds term {row.term}"
    else:
        why = "it expired or was released"
    raise LeaseLost(fence.role, fence.term, why)


ACTOR_LENGTH: int = t.decisions.c.actor.type.length
"""The longest actor (and starter, author) a decision can record."""


def _refuse_unkeepable(name: str, actor: str, reason: str, rollout: Rollout | None) -> None:
    """Refuse, on every engine alike, a decision whose text PostgreSQL could not keep (a NUL,
    an actor longer than its column): bad input to name, not a store that failed."""
    check_name(name)
    check_text(actor, "the actor", max_length=ACTOR_LENGTH)
    check_text(reason, "the reason")
    if rollout is not None:
        check_text(rollout.source, "the plan's source")
        check_text(rollout.reason, "the rollout's reason")
        check_text(rollout.started_by, "the rollout's starter", max_length=ACTOR_LENGTH)


def _put_noise_rule(conn: Connection, rule: NoiseRule, remove: bool) -> None:
    c = t.noise_rules.c
    mine = (c.migration == rule.migration, c.prefix == rule.prefix)
    if remove:
        if conn.execute(sa.delete(t.noise_rules).where(*mine)).rowcount != 1:
            raise InvalidInput(
                f"{rule.migration!r} has no noise rule {rule.prefix!r}; see them with"
                f" `cutover noise list {rule.migration}`"
            )
        return
    conn.execute(sa.delete(t.noise_rules).where(*mine))  # declared again: the newest reason
    conn.execute(
        sa.insert(t.noise_rules).values(
            migration=rule.migration,
            prefix=rule.prefix,
            reason=rule.reason,
            added_by=rule.added_by,
            added_at=rule.added_at,
        )
    )


def _put_versioned(
    conn: Connection, key: Any, value: str, found: object, expected: int, values: dict[str, Any]
) -> None:
    """Insert the row keyed ``key == value`` (none was ``found``), or update it only while its
    version is still ``expected``; a writer that got there first raises _Lost."""
    table = key.table
    if found is None:
        conn.execute(sa.insert(table).values(**values))
        return
    result = conn.execute(
        sa.update(table).where(key == value, table.c.version == expected).values(**values)
    )
    if result.rowcount != 1:
        raise _Lost()


def _cohort_conflict(
    cohort: Cohort, expected: int, current: int, updated_by: str | None
) -> ConflictError:
    return ConflictError(
        cohort.migration, expected, current, updated_by, what=f"cohort {cohort.name!r}"
    )


def _upgrade(conn: Connection, found: int) -> None:
    """Bring a store written by an earlier cutover to the current schema, in the caller's
    transaction (which holds the schema lock)."""
    if found < 2:
        # Decisions gained a kind, and a version that is NULL when no state was written.
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql(
                "ALTER TABLE cutover_decisions ADD COLUMN IF NOT EXISTS kind VARCHAR(32)"
                " NOT NULL DEFAULT 'set'"
            )
            conn.exec_driver_sql("ALTER TABLE cutover_decisions ALTER COLUMN version DROP NOT NULL")
        else:  # SQLite cannot relax NOT NULL in place: rebuild the table
            conn.exec_driver_sql("DROP INDEX IF EXISTS cutover_decisions_by_migration")
            conn.exec_driver_sql("ALTER TABLE cutover_decisions RENAME TO cutover_decisions_v1")
            t.decisions.create(conn)  # with its indexes
            columns = "id, migration, version, at, actor, reason, old_state, new_state, evidence"
            conn.exec_driver_sql(
                f"INSERT INTO cutover_decisions ({columns}, kind)"
                f" SELECT {columns}, 'set' FROM cutover_decisions_v1"
            )
            conn.exec_driver_sql("DROP TABLE cutover_decisions_v1")
    if found < 3:
        t.cohorts.create(conn, checkfirst=True)  # a new table: nothing else changed
    if found < 4:
        t.leases.create(conn, checkfirst=True)  # a new table: nothing else changed
    if found < 5:  # a counter of its own for expected exceptions, 0 in every earlier window
        _add_window_counter(conn, "expected")
    if found < 6:  # new tables: nothing else changed
        t.noise_counts.create(conn, checkfirst=True)
        t.noise_rules.create(conn, checkfirst=True)
        t.route_windows.create(conn, checkfirst=True)
    if found < 7:
        # Fine latency buckets go to a table of their own; the coarse rows stay where they
        # are and are read at their own resolution (an instance still running the previous
        # release keeps writing them there, and they still add up).
        t.latency.create(conn, checkfirst=True)
        # The proxy's 410 answers on retired routes, 0 in every earlier window.
        _add_window_counter(conn, "gone")
        # Flag exposures, 0 in every earlier window.
        _add_window_counter(conn, "exposures")
    conn.execute(
        sa.update(t.meta)
        .where(t.meta.c.key == "schema_version")
        .values(value=str(t.SCHEMA_VERSION))
    )
    log.info("cutover upgraded the store's schema from version %d to %d", found, t.SCHEMA_VERSION)


def _add_window_counter(conn: Connection, name: str) -> None:
    """Add counter ``name`` to the stored windows, 0 in those written before; nothing when the
    store has it already (one that gained the whole table in an earlier step of the upgrade)."""
    columns = {column["name"] for column in sa.inspect(conn).get_columns("cutover_windows")}
    if name not in columns:
        conn.exec_driver_sql(
            f"ALTER TABLE cutover_windows ADD COLUMN {name} BIGINT NOT NULL DEFAULT 0"
        )


def _is_transient(error: BaseException) -> bool:
    if isinstance(error, _TRANSIENT):
        return True
    if isinstance(error, sa.exc.DBAPIError) and error.connection_invalidated:
        return True
    state = getattr(getattr(error, "orig", None), "sqlstate", None) or ""
    return state[:2] in _TRANSIENT_SQLSTATE_CLASSES or state in _TRANSIENT_SQLSTATES


def _schema_missing(error: BaseException) -> bool:
    original = getattr(error, "orig", None)
    if getattr(original, "sqlstate", None) == "42P01":  # undefined table
        return True
    return "no such table" in str(original or error)


def _short(error: BaseException) -> str:
    """The first line of a database error, without SQLAlchemy's boilerplate."""
    original = getattr(error, "orig", None) or error
    text = str(original).strip().splitlines()
    return text[0] if text else type(original).__name__


class _ForkGate:
    """Holds ``fork()`` back while any thread of this process is using an SQLite connection.

    SQLite keeps mutexes shared by the whole process (its list of open files, each file's lock
    state) that a thread holds for a moment while it opens, locks, unlocks or closes a database
    file. A child forked at that moment inherits them locked, and its first open of the same
    file waits forever: a pre-forking server whose workers hang at start. So each SQLite
    connection's life is spent inside the gate, and ``fork()`` waits (a few milliseconds,
    ``FORK_WAIT`` at most) until no thread is inside; threads that arrive meanwhile wait for
    the fork to be done."""

    FORK_WAIT = 10.0

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._cond = threading.Condition(threading.Lock())
        self._inside = 0
        self._forking = False

    @contextlib.contextmanager
    def entered(self) -> Iterator[None]:
        if self._pid != os.getpid():
            # A forked child's hooks may run before ours: the gate belongs to the parent.
            self._reset()
        cond = self._cond
        with cond:
            while self._forking:
                cond.wait()
            self._inside += 1
        try:
            yield
        finally:
            with cond:
                self._inside -= 1
                if not self._inside:
                    cond.notify_all()

    def before_fork(self) -> None:
        if self._pid != os.getpid():
            self._reset()
        self._cond.acquire()  # held through the fork: nobody enters or leaves meanwhile
        self._forking = True
        self._cond.wait_for(lambda: not self._inside, timeout=self.FORK_WAIT)

    def after_fork_in_parent(self) -> None:
        self._forking = False
        self._cond.notify_all()
        self._cond.release()


_SQLITE_GATE = _ForkGate()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_SQLITE_GATE.before_fork,
        after_in_parent=_SQLITE_GATE.after_fork_in_parent,
        after_in_child=_SQLITE_GATE._reset,
    )


# SQLite connections open in this process, and those a forked child inherited: held forever,
# since closing an inherited connection would write to the parent's shared WAL index.
_OPEN_SQLITE: dict[int, Any] = {}
_INHERITED_SQLITE: list[Any] = []


def _sqlite_on_close(dbapi_connection: Any, _record: Any) -> None:
    _OPEN_SQLITE.pop(id(dbapi_connection), None)


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    _OPEN_SQLITE[id(dbapi_connection)] = dbapi_connection
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
    finally:
        cursor.close()


# A statement or lock wait never holds a background thread for long: it fails, is counted and
# retried, while the process keeps serving its last known states.
_PG_TIMEOUTS = "SET LOCAL statement_timeout = '15s'; SET LOCAL lock_timeout = '10s'"


def _sqlite_on_begin(conn: Connection) -> None:
    # pysqlite runs in autocommit; cutover begins transactions itself. Writers take the write
    # lock up front (IMMEDIATE) so two processes never deadlock upgrading a read lock.
    immediate = conn.get_execution_options().get("cutover_write", False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")
