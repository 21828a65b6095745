"""Reconcile from an audit report: re-read each differing row by key and make one side equal to
the other, as readable SQL first (a dry run) and then in batches, with an undo script written
before anything changes."""

from __future__ import annotations

import functools
import json
import math
import os
import re
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.sql.expression import Executable

from cutover.clock import Clock, system_clock
from cutover.data._dialects import (
    MYSQL_SESSION,
    POSTGRES_SESSION,
    as_stored,
    connect,
    database_url,
    first_line,
    raw_type,
    reflect,
    stored,
)
from cutover.data._encoding import (
    Kind,
    Unreadable,
    canonical,
    common_kind,
    equal,
    from_json,
    kind_of,
    to_param,
)
from cutover.data._encoding import to_json as value_json
from cutover.data.audit import check_report, load_report
from cutover.errors import CutoverError, InvalidInput
from cutover.store import redact_url
from cutover.urls import holds_redacted

"""The audit report format this module reads."""

SIDES = ("source", "target")
_KINDS = ("missing", "extra", "changed", "pending")
_READ_CHUNK = 500
_TIMES = (Kind.TIMESTAMP, Kind.TIMESTAMPTZ, Kind.DATE, Kind.TIME)


@dataclass(frozen=True, slots=True)
class Statement:
    """One write that makes a row of the written side equal to the preferred side, and the SQL
    that puts the row back as it was. Its SQL writes every value as a literal that the database
    reads back as exactly the value ``clause`` binds. Immutable."""

    kind: str  # insert | update | delete
    key: tuple[Any, ...]  # the row's key on the written side, in key-column order
    tenant: str | None
    columns: tuple[str, ...]  # written-side columns the statement sets (none for a delete)
    sql: str  # the statement with literal values, for the written side's dialect, ending with ;
    undo: str  # literal SQL restoring the row's values before this statement, ending with ;
    clause: Executable = field(repr=False, compare=False)  # what runs, with bound values

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "key": [value_json(value) for value in self.key],
            "tenant": self.tenant,
            "columns": list(self.columns),
            "sql": self.sql,
        }


@dataclass(frozen=True, slots=True)
class PlanCounts:
    """What a plan does with the report's diffs, each counted once. Immutable."""

    insert: int = 0
    update: int = 0
    delete: int = 0
    unchanged: int = 0  # the row no longer differs: skipped
    extra_kept: int = 0  # a row only the written side holds, kept without allow_delete
    out_of_scope: int = 0  # the row no longer matches the report's where condition: skipped
    pending: int = 0  # diffs the audit could not settle: not reconciled

    @property
    def writes(self) -> int:
        return self.insert + self.update + self.delete

    def to_json(self) -> dict[str, int]:
        return {
            "insert": self.insert,
            "update": self.update,
            "delete": self.delete,
            "unchanged": self.unchanged,
            "extra_kept": self.extra_kept,
            "out_of_scope": self.out_of_scope,
            "pending": self.pending,
        }


@dataclass(frozen=True, slots=True)
class ReconcilePlan:
    """The writes that make the written side equal to the preferred side for every diff of a
    report, as read at planning time. Immutable; ``apply`` carries it out."""

    prefer: str  # the side whose rows win: source | target
    side: str  # the side written: the other one
    table: str  # the written table, as named in the report
    dialect: str
    url: str  # the written side's URL, password redacted
    statements: tuple[Statement, ...]
    counts: PlanCounts
    allow_delete: bool
    truncated: bool  # the report held only some of the diffs the audit found
    report_drift: int  # diffs the audit counted (missing + extra + changed)
    report_diffs: int  # diffs the report holds, pending ones included
    planned_at: float
    session: tuple[str, ...]  # SQL to run first in a session of the written side's own client
    connect_url: str = field(repr=False, compare=False)

    @property
    def empty(self) -> bool:
        return not self.statements

    def to_json(self) -> dict[str, Any]:
        tenants: dict[str, dict[str, int]] = {}
        for statement in self.statements:
            if statement.tenant is not None:
                per = tenants.setdefault(statement.tenant, {"insert": 0, "update": 0, "delete": 0})
                per[statement.kind] += 1
        return {
            "prefer": self.prefer,
            "side": self.side,
            "table": self.table,
            "dialect": self.dialect,
            "url": self.url,
            "allow_delete": self.allow_delete,
            "truncated": self.truncated,
            "report_drift": self.report_drift,
            "report_diffs": self.report_diffs,
            "planned_at": datetime.fromtimestamp(self.planned_at, UTC).isoformat(),
            "counts": self.counts.to_json(),
            "tenants": tenants,
            "statements": [statement.to_json() for statement in self.statements],
        }


@dataclass(frozen=True, slots=True)
class ReconcileResult:
    """What ``apply`` wrote. Immutable."""

    inserted: int
    updated: int
    deleted: int
    not_found: int  # updates and deletes whose row was gone when they ran
    batches: int
    undo_path: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "inserted": self.inserted,
            "updated": self.updated,
            "deleted": self.deleted,
            "not_found": self.not_found,
            "batches": self.batches,
            "undo_path": self.undo_path,
        }


def plan(
    report: Mapping[str, Any] | str | os.PathLike[str],
    *,
    prefer: str = "source",
    allow_delete: bool = False,
    source: str | None = None,
    target: str | None = None,
    clock: Clock = system_clock,
) -> ReconcilePlan:
    """The writes that make the other side equal to ``prefer`` for every diff in ``report`` (a
    report dict or the path of its JSON). Rows are re-read by key from both sides now, so a
    row that changed since the audit is written as it is now, and one that no longer differs
    is skipped. ``source``/``target`` override the report's URLs (whose passwords are
    redacted). Nothing is written."""
    if prefer not in SIDES:
        raise InvalidInput(f"prefer must be 'source' or 'target', got {prefer!r}")
    data = report if isinstance(report, Mapping) else load_report(report)
    if isinstance(report, Mapping):
        check_report(data, "the report")
    parsed = _parse(data)
    written = "target" if prefer == "source" else "source"
    urls = {"source": source, "target": target}
    sides: dict[str, _Side] = {}
    engines: list[sa.Engine] = []
    try:
        for name in SIDES:
            given = urls[name] or parsed.url[name]
            url = database_url(_checked_url(given, name, overridden=bool(urls[name])), name)
            # Planning only reads: its connections cannot write.
            engines.append(connect(url, name, pool_size=1, read_only=True))
            sides[name] = _reflect(engines[-1], url, name, parsed)
        planner = _Planner(parsed, sides[prefer], sides[written], allow_delete)
        statements, counts = planner.run()
    finally:
        for engine in engines:
            engine.dispose()
    out = sides[written]
    return ReconcilePlan(
        prefer=prefer,
        side=written,
        table=parsed.table[written],
        dialect=out.dialect.name,
        url=redact_url(out.url),
        statements=statements,
        counts=counts,
        allow_delete=allow_delete,
        truncated=parsed.truncated,
        report_drift=parsed.drift,
        report_diffs=len(parsed.diffs),
        planned_at=clock(),
        session=_session(out.dialect.name),
        connect_url=out.url,
    )


def undo_script(plan: ReconcilePlan, path: str | os.PathLike[str] | None = None) -> str:
    """SQL that restores every row ``plan`` changes to its values when the plan was made: one
    transaction, one statement per line, last write undone first. Running it after a partial
    apply is safe: undoing a write that never ran changes nothing. ``path``, where the script
    goes, only fills in the comment that says how to run it."""
    script = "THIS_FILE" if path is None else os.fspath(path)
    database = sa.engine.make_url(plan.connect_url).database or "DATABASE"
    client = {
        "sqlite": f"sqlite3 {database} < {script}",
        "postgresql": f"psql URL -v ON_ERROR_STOP=1 -f {script}",
        "mysql": f"mysql {database} < {script}",
        "mariadb": f"mysql {database} < {script}",
    }.get(plan.dialect, f"the {plan.dialect} client")
    planned = datetime.fromtimestamp(plan.planned_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    lines = [
        "-- cutover reconcile: undo script",
        f"-- Restores {len(plan.statements)} rows of {plan.table} on the {plan.side}"
        f" ({plan.url}) to their values at {planned}.",
        f"-- Run it with: {client}",
        *plan.session,
        "BEGIN;",
        *(statement.undo for statement in reversed(plan.statements)),
        "COMMIT;",
    ]
    return "\n".join(lines) + "\n"


def apply(
    plan: ReconcilePlan,
    *,
    batch_size: int = 500,
    undo_path: str | os.PathLike[str] | None,
) -> ReconcileResult:
    """Carry out ``plan``: first write the undo script to ``undo_path`` (flushed to disk; None
    writes none), then run the statements in batches of ``batch_size``, each batch in one
    transaction. A batch that fails is rolled back and stops the run with a CutoverError that
    says how much was committed."""
    if batch_size < 1:
        raise InvalidInput(f"the batch size must be at least 1, got {batch_size}")
    if plan.empty:
        return ReconcileResult(0, 0, 0, 0, 0, None)
    undo = None if undo_path is None else os.fspath(undo_path)
    if undo is not None:
        _write_durably(undo, undo_script(plan, undo))
    # Sessions speak UTC, as the audit's do, so zoned times are written as they were read.
    engine = connect(plan.connect_url, plan.side, pool_size=1, read_only=False)
    done = {"insert": 0, "update": 0, "delete": 0}
    not_found = 0
    batches = list(_chunks(plan.statements, batch_size))
    try:
        for number, batch in enumerate(batches, 1):
            counted = {"insert": 0, "update": 0, "delete": 0}
            missed = 0
            try:
                with engine.begin() as conn:
                    for statement in batch:
                        result = conn.execute(statement.clause)
                        if statement.kind != "insert" and result.rowcount == 0:
                            missed += 1
                        else:
                            counted[statement.kind] += 1
            except sa.exc.DBAPIError as error:
                committed = sum(len(b) for b in batches[: number - 1])
                restore = f"; undo it with {undo}" if undo and committed else ""
                raise CutoverError(
                    f"batch {number} of {len(batches)} failed on the {plan.side} and was rolled"
                    f" back ({first_line(error)}); {committed} earlier statements stay"
                    f" committed{restore}; run reconcile again to re-read the rows"
                ) from None
            for kind, count in counted.items():
                done[kind] += count
            not_found += missed
    finally:
        engine.dispose()
    return ReconcileResult(
        inserted=done["insert"],
        updated=done["update"],
        deleted=done["delete"],
        not_found=not_found,
        batches=len(batches),
        undo_path=undo,
    )


def default_undo_path(report_path: str | os.PathLike[str]) -> str:
    """Where the undo script goes by default: next to the report, ``<report>.undo.sql``."""
    return os.fspath(report_path) + ".undo.sql"


# --- the report ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Report:
    url: dict[str, str]
    table: dict[str, str]
    key: tuple[str, ...]  # source names, in key order
    names: dict[str, dict[str, str]]  # side -> source column name -> that side's column name
    compared: tuple[str, ...]  # source names
    kinds: dict[str, Kind | None]  # source name -> the kind both sides compare as, if named
    tolerance: dict[str, float]
    where: dict[str, str | None]  # side -> the condition the audit applied there
    tenant_column: str | None
    diffs: tuple[dict[str, Any], ...]
    truncated: bool
    drift: int


def _parse(data: Mapping[str, Any]) -> _Report:
    def field_of(obj: Any, key: str, kind: type | tuple[type, ...], where: str) -> Any:
        if not isinstance(obj, Mapping) or not isinstance(obj.get(key), kind):
            raise InvalidInput(
                f"the audit report lacks a valid {where}{key!r}; give the unchanged file that"
                " `cutover audit --json` wrote"
            )
        return obj[key]

    url = {s: field_of(field_of(data, s, Mapping, ""), "url", str, f"{s} ") for s in SIDES}
    table = {s: field_of(data[s], "table", str, f"{s} ") for s in SIDES}
    names: dict[str, dict[str, str]] = {"source": {}, "target": {}}
    kinds: dict[str, Kind | None] = {}
    key: list[str] = []
    for entry in field_of(data, "key_columns", list, ""):
        pair = _pair(entry, "key_columns")
        key.append(pair[0])
        names["source"][pair[0]], names["target"][pair[0]] = pair
        kinds[pair[0]] = _kind(entry)
    if not key:
        raise InvalidInput("the audit report names no key columns; run the audit again")
    compared: list[str] = []
    tolerance: dict[str, float] = {}
    for entry in field_of(data, "columns", list, ""):
        pair = _pair(entry, "columns")
        compared.append(pair[0])
        names["source"][pair[0]], names["target"][pair[0]] = pair
        kinds[pair[0]] = _kind(entry)
        if entry.get("tolerance") is not None:
            try:
                tolerance[pair[0]] = float(entry["tolerance"])
            except (TypeError, ValueError):
                raise InvalidInput(
                    f"the audit report's tolerance for {pair[0]!r} is not a number:"
                    f" {entry['tolerance']!r}"
                ) from None
    diffs = field_of(data, "diffs", list, "")
    for diff in diffs:
        if (
            not isinstance(diff, Mapping)
            or diff.get("kind") not in _KINDS
            or not isinstance(diff.get("key"), list)
            or len(diff["key"]) != len(key)
        ):
            raise InvalidInput(
                f"the audit report holds a diff that is not one: {json.dumps(diff)[:120]};"
                f" each needs a kind ({', '.join(_KINDS)}) and a key of {len(key)} values"
            )
    where = data.get("where")
    where = where if isinstance(where, str) and where.strip() else None
    target_where = data.get("target_where")
    target_where = target_where if isinstance(target_where, str) and target_where.strip() else None
    tenant = data.get("tenant_column")
    counts = data.get("counts") if isinstance(data.get("counts"), Mapping) else {}
    drift = counts.get("drift")
    if not isinstance(drift, int):
        drift = sum(1 for d in diffs if d["kind"] != "pending")
    return _Report(
        url=url,
        table=table,
        key=tuple(key),
        names=names,
        compared=tuple(compared),
        kinds=kinds,
        tolerance=tolerance,
        # The audit applies its where to the target too, unless it had one of its own there.
        where={"source": where, "target": target_where or where},
        tenant_column=tenant if isinstance(tenant, str) and tenant else None,
        diffs=tuple(diffs),
        truncated=bool(data.get("truncated")),
        drift=drift,
    )


def _kind(entry: Mapping[str, Any]) -> Kind | None:
    try:
        return Kind(entry.get("kind"))
    except ValueError:
        return None


def _pair(entry: Any, where: str) -> tuple[str, str]:
    if (
        not isinstance(entry, Mapping)
        or not isinstance(entry.get("source"), str)
        or not isinstance(entry.get("target"), str)
    ):
        raise InvalidInput(
            f"the audit report's {where} entry {json.dumps(entry)[:80]} needs 'source' and"
            " 'target' column names; run the audit again"
        )
    return entry["source"], entry["target"]


# --- connecting and reading ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Side:
    name: str  # source | target
    url: str
    table: sa.Table
    labels: dict[str, str]  # source column name -> this side's column name, every column
    dialect: Dialect
    engine: sa.Engine

    def column(self, source_name: str) -> sa.Column[Any]:
        return self.table.c[self.labels[source_name]]


def _checked_url(text: str, side: str, *, overridden: bool) -> str:
    """``text``, unless a credential in it is the redacted one a report holds."""
    if holds_redacted(text):
        given = "the URL you gave" if overridden else "the report's URL"
        raise InvalidInput(
            f"the {side} database needs its password, which {given} does not hold:"
            f" pass --{side} with the full URL"
        )
    return text


def _reflect(engine: sa.Engine, url: str, side: str, report: _Report) -> _Side:
    name = report.table[side]
    try:
        table = reflect(engine, name, side, f"check the report's table or pass --{side}")
    except sa.exc.DBAPIError as error:
        raise CutoverError(
            f"reading the {side} table {name!r} failed: {first_line(error)}"
        ) from None
    dialect = engine.dialect
    mapping = report.names[side]
    for source_name, column_name in mapping.items():
        if column_name not in table.c:
            raise InvalidInput(
                f"the {side} table {name!r} has no column {column_name!r} that the report"
                f" compares ({source_name}); the table changed since the audit: run it again"
            )
    labels = dict(mapping)
    taken = set(mapping.values())
    for column in table.c:
        if column.name not in taken and column.name not in labels:
            labels[column.name] = column.name
    return _Side(side, url, table, labels, dialect, engine)


class _Planner:
    """Reads the report's rows on both sides and decides one write per differing row."""

    def __init__(self, report: _Report, preferred: _Side, written: _Side, allow_delete: bool):
        self.report = report
        self.preferred = preferred
        self.written = written
        self.allow_delete = allow_delete
        # Between two databases of one engine, values are written exactly as they were stored.
        self.same_engine = preferred.dialect.name == written.dialect.name
        source, target = (
            (preferred, written) if preferred.name == "source" else (written, preferred)
        )
        # What "equal" means is the audit's: each column compares as the kind the report names
        # (the kind both sides share), so a row the audit would call equal is left alone.
        self.kinds = {
            name: kind
            or common_kind(kind_of(source.column(name).type), kind_of(target.column(name).type))
            for name, kind in report.kinds.items()
        }

    def run(self) -> tuple[tuple[Statement, ...], PlanCounts]:
        counts = dict.fromkeys(PlanCounts.__dataclass_fields__, 0)
        todo: list[tuple[dict[str, Any], tuple[Any, ...]]] = []
        seen: set[tuple[Any, ...]] = set()
        for diff in self.report.diffs:
            if diff["kind"] == "pending":
                counts["pending"] += 1
                continue
            key = self._decode(diff["key"])
            if key not in seen:
                seen.add(key)
                todo.append((diff, key))
        inserts: list[Statement] = []
        updates: list[Statement] = []
        deletes: list[Statement] = []
        # Plain reads on read-only sessions: leaving the blocks rolls them back.
        with (
            self.preferred.engine.connect() as preferred_conn,
            self.written.engine.connect() as written_conn,
        ):
            for chunk in _chunks(todo, _READ_CHUNK):
                keys = [key for _, key in chunk]
                have = self._fetch(preferred_conn, self.preferred, keys)
                held = self._fetch(written_conn, self.written, keys)
                for diff, key in chunk:
                    tenant = None if diff.get("tenant") is None else str(diff["tenant"])
                    wanted, current = have.get(key), held.get(key)
                    if wanted is not None and not wanted[1]:
                        counts["out_of_scope"] += 1
                    elif wanted is not None and current is None:
                        inserts.append(self._insert(wanted[0], tenant))
                    elif wanted is not None and current is not None:
                        update = self._update(wanted[0], current[0], tenant)
                        if update is None:
                            counts["unchanged"] += 1
                        else:
                            updates.append(update)
                    elif current is None:
                        counts["unchanged"] += 1
                    elif not current[1]:
                        counts["out_of_scope"] += 1
                    elif self.allow_delete:
                        deletes.append(self._delete(current[0], tenant))
                    else:
                        counts["extra_kept"] += 1
        counts.update(insert=len(inserts), update=len(updates), delete=len(deletes))
        # Deletes first and inserts last, so a row that moves between keys under a unique
        # constraint other than the key does not collide with itself.
        return (*deletes, *updates, *inserts), PlanCounts(**counts)

    def _decode(self, values: list[Any]) -> tuple[Any, ...]:
        """A report key (JSON values) as the canonical values the audit compared."""
        decoded = []
        for name, value in zip(self.report.key, values, strict=True):
            kind = self.kinds[name]
            try:
                result = canonical(kind, from_json(kind, value))
            except (ValueError, TypeError, InvalidOperation):
                result = Unreadable(value)
            # Times that Python cannot hold (infinity, years before 1) are keys as their text.
            as_text = kind in _TIMES and isinstance(value, str)
            if value is not None and isinstance(result, Unreadable) and not as_text:
                raise InvalidInput(
                    f"the report's key {json.dumps(values)} does not fit the key column {name}"
                    f" ({kind}); give the unchanged report, or run the audit again"
                )
            decoded.append(result)
        return tuple(decoded)

    def _canonical_key(self, row: Mapping[str, Any]) -> tuple[Any, ...]:
        return tuple(canonical(self.kinds[name], row[name]) for name in self.report.key)

    def _param(self, side: _Side, name: str, value: Any) -> Any:
        """A canonical key value as a bound parameter for ``side``'s column."""
        column = side.column(name)
        return _adapt(to_param(kind_of(column.type), value), column)

    def _fetch(
        self, conn: Connection, side: _Side, keys: Sequence[tuple[Any, ...]]
    ) -> dict[tuple[Any, ...], tuple[dict[str, Any], bool]]:
        """The rows of ``side`` with these keys, by canonical key: every column under its
        source name, and whether the row matches the condition the audit applied there."""
        names = list(side.labels)
        dialect = side.dialect.name
        selected: list[Any] = [stored(side.table.c[side.labels[name]], dialect) for name in names]
        where = self.report.where[side.name]
        if where is not None:  # unnamed: any name could be a column's too
            selected.append(sa.case((sa.text(f"({where})"), sa.literal(1)), else_=sa.literal(0)))
        columns = [
            sa.type_coerce(c, raw_type(c.type))
            for c in (side.column(name) for name in self.report.key)
        ]
        params = [
            tuple(self._param(side, n, v) for n, v in zip(self.report.key, key, strict=True))
            for key in keys
        ]
        if len(columns) == 1:
            condition = columns[0].in_([p[0] for p in params])
        else:
            condition = sa.tuple_(*columns).in_(params)
        try:
            query = sa.select(*selected).select_from(side.table).where(condition)
            rows = conn.execute(query).all()
        except sa.exc.DBAPIError as error:
            if where is not None:
                raise InvalidInput(
                    f"the audit's where condition {where!r} fails on the {side.name}"
                    f" ({first_line(error)}); run the audit again with one that works there"
                ) from None
            raise CutoverError(
                f"reading {self.report.table[side.name]} on the {side.name} failed:"
                f" {first_line(error)}"
            ) from None
        found: dict[tuple[Any, ...], tuple[dict[str, Any], bool]] = {}
        for row in rows:
            values = dict(zip(names, row, strict=False))
            in_scope = where is None or bool(row[-1])
            found[self._canonical_key(values)] = (values, in_scope)
        return found

    def _insert(self, wanted: Mapping[str, Any], tenant: str | None) -> Statement:
        side = self.written
        values = {
            side.labels[name]: self._written(value, side.column(name))
            for name, value in wanted.items()
            if name in side.labels and _writable(side.column(name))
        }
        key = tuple(values[side.labels[name]] for name in self.report.key)
        undo = _sql(_delete(side.table, self._key_columns(), key, side.dialect), side.dialect)
        return self._statement("insert", key, tenant, values, undo=undo)

    def _update(
        self, wanted: Mapping[str, Any], current: Mapping[str, Any], tenant: str | None
    ) -> Statement | None:
        side = self.written
        changes: dict[str, Any] = {}
        before: dict[str, Any] = {}
        for name in self.report.compared:
            kind = self.kinds[name]
            if not equal(
                kind,
                canonical(kind, wanted[name]),
                canonical(kind, current[name]),
                self.report.tolerance.get(name),
            ):
                column = side.column(name)
                changes[column.name] = self._written(wanted[name], column)
                before[column.name] = current[name]
        if not changes:
            return None
        key = tuple(current[name] for name in self.report.key)
        undo = _sql(
            _update(side.table, self._key_columns(), key, before, side.dialect), side.dialect
        )
        return self._statement("update", key, tenant, changes, undo=undo)

    def _delete(self, current: Mapping[str, Any], tenant: str | None) -> Statement:
        side = self.written
        key = tuple(current[name] for name in self.report.key)
        row = {
            side.labels[name]: value
            for name, value in current.items()
            if _writable(side.column(name))
        }
        undo = _sql(_restore(side.table, row, side.dialect), side.dialect)
        return self._statement("delete", key, tenant, {}, undo=undo)

    def _written(self, value: Any, column: sa.Column[Any]) -> Any:
        """A value of the preferred side as the written side's ``column`` takes it: as it was
        stored, when both sides are of one engine."""
        if self.same_engine:
            return bytes(value) if isinstance(value, memoryview | bytearray) else value
        return _adapt(value, column)

    def _key_columns(self) -> list[sa.Column[Any]]:
        return [self.written.column(name) for name in self.report.key]

    def _statement(
        self,
        kind: str,
        key: tuple[Any, ...],
        tenant: str | None,
        values: dict[str, Any],
        *,
        undo: str,
    ) -> Statement:
        side = self.written
        table, columns = side.table, self._key_columns()
        bound = {name: as_stored(table.c[name], value) for name, value in values.items()}
        if kind == "insert":
            clause: Any = sa.insert(table).values(bound).inline()
            shown: Any = sa.insert(table).values(_literals(table, values, side.dialect)).inline()
        elif kind == "update":
            clause = sa.update(table).where(*_key_match(columns, key)).values(bound)
            shown = _update(table, columns, key, values, side.dialect)
        else:
            clause = sa.delete(table).where(*_key_match(columns, key))
            shown = _delete(table, columns, key, side.dialect)
        return Statement(
            kind=kind,
            key=key,
            tenant=tenant,
            columns=tuple(values),
            sql=_sql(shown, side.dialect),
            undo=undo,
            clause=clause,
        )


# --- values ----------------------------------------------------------------------------------


def _python_type(column: sa.Column[Any]) -> type | None:
    if isinstance(column.type, sa.JSON):
        return dict
    try:
        kind = column.type.python_type
    except NotImplementedError:
        return None
    if kind is uuid.UUID and not getattr(column.type, "as_uuid", True):
        return str
    return kind


def _adapt(value: Any, column: sa.Column[Any]) -> Any:
    """``value`` read from one side, as the other side's ``column`` takes it."""
    if value is None:
        return None
    if isinstance(value, (memoryview, bytearray)):
        value = bytes(value)
    kind = _python_type(column)
    if kind is datetime and isinstance(value, datetime):
        aware = bool(getattr(column.type, "timezone", False))
        if aware and value.tzinfo is None:
            return value.replace(tzinfo=UTC)  # a naive time meets a zoned column as UTC
        if not aware and value.tzinfo is not None:
            return value.astimezone(UTC).replace(tzinfo=None)
        return value
    if kind is time and isinstance(value, timedelta) and timedelta(0) <= value < timedelta(days=1):
        return (datetime.min + value).time()  # MySQL's TIME is a duration; within a day, a time
    if kind is bool and isinstance(value, (int, Decimal)) and not isinstance(value, bool):
        return bool(value)
    if kind is int and isinstance(value, bool):
        return int(value)
    if kind is Decimal and isinstance(value, float):
        return Decimal(repr(value))
    if kind is float and isinstance(value, Decimal):
        return float(value)
    if kind is str and isinstance(value, uuid.UUID):
        return str(value)
    if kind is uuid.UUID and isinstance(value, str):
        return uuid.UUID(value)
    if kind is str and isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return value


def _writable(column: sa.Column[Any]) -> bool:
    identity = column.identity
    return column.computed is None and not (identity is not None and identity.always)


# --- SQL text --------------------------------------------------------------------------------


def _literal(value: Any, column_type: sa.types.TypeEngine[Any], dialect: Dialect) -> str:
    """``value`` as an SQL literal of ``dialect`` on one line, which the database reads as
    exactly the value ``apply`` binds for a column of ``column_type``: the same number (NaN,
    the infinities and a negative zero included), text, bytes, time or document."""
    value = _bound(value, column_type, dialect)
    name = dialect.name
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return ("true" if value else "false") if name == "postgresql" else str(int(value))
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _float_literal(value, name)
    if isinstance(value, Decimal):
        return _decimal_literal(value, name)
    if isinstance(value, bytes | bytearray | memoryview):
        digits = bytes(value).hex()
        return f"decode('{digits}', 'hex')" if name == "postgresql" else f"X'{digits}'"
    if isinstance(value, list) and isinstance(column_type, sa.ARRAY):
        return _render(value, column_type, dialect)
    return _text_literal(_as_text(value), name)


def _bound(value: Any, column_type: sa.types.TypeEngine[Any], dialect: Dialect) -> Any:
    """``value`` as ``apply`` hands it to the driver for a column of ``column_type``."""
    if value is None:
        return None
    convert = raw_type(column_type).dialect_impl(dialect).bind_processor(dialect)
    return value if convert is None else convert(value)


def _as_text(value: Any) -> str:
    """A value that SQL takes as quoted text: times in ISO form, MySQL's TIME (a duration) as
    it prints it, documents as JSON, anything else as it prints."""
    if isinstance(value, datetime):
        return value.isoformat(" ")
    if isinstance(value, date | time):
        return value.isoformat()
    if isinstance(value, timedelta):
        return str(value_json(value))
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _float_literal(value: float, dialect: str) -> str:
    if dialect == "postgresql":
        if math.isnan(value):
            return "'NaN'::float8"
        if math.isinf(value):
            return "'Infinity'::float8" if value > 0 else "'-Infinity'::float8"
        if value == 0 and math.copysign(1, value) < 0:
            return "'-0'::float8"  # a bare -0.0 is minus a numeric zero: zero
        return repr(value)  # read as a numeric, then by the float's own correctly rounded input
    if math.isnan(value):
        raise InvalidInput(
            f"the value NaN cannot be written to {dialect} (it stores no NaN); repair this row"
            " by hand"
        )
    if dialect == "sqlite":
        if math.isinf(value):
            return "9e999" if value > 0 else "-9e999"
        return _sqlite_float(value)
    if math.isinf(value):
        raise InvalidInput(
            f"the value {value!r} cannot be written to {dialect} (it stores no infinity); repair"
            " this row by hand"
        )
    text = repr(value)
    return text if "e" in text else f"{text}e0"  # a double, not an exact decimal, in MySQL


_TWO_62 = 2**62


def _sqlite_float(value: float) -> str:
    """A double as SQLite arithmetic that makes exactly it: SQLite's own reading of decimal
    text rounds some values to a neighbour (0.5% of all doubles in 3.40), but an integer
    below 2**53 times or divided by powers of two is exact."""
    if value == int(value) and abs(value) < 2**53:
        return repr(value)  # 3.0, -0.0: read exactly
    mantissa, exponent = math.frexp(value)
    digits, shift = int(math.ldexp(mantissa, 53)), exponent - 53  # value = digits * 2**shift
    while digits % 2 == 0:
        digits, shift = digits // 2, shift + 1
    parts = [f"{digits} * 1.0"]
    operator = " * " if shift > 0 else " / "
    left = abs(shift)
    while left:
        step = min(left, 62)
        parts.append(str(2**step if step < 62 else _TWO_62))
        left -= step
    return "(" + operator.join(parts) + ")"


def _decimal_literal(value: Decimal, dialect: str) -> str:
    if value.is_finite():
        return str(value) if dialect == "postgresql" else format(value, "f")
    if dialect == "postgresql":
        return f"'{value}'::numeric"  # NaN, Infinity, -Infinity
    if dialect == "sqlite":
        return _float_literal(float(value), dialect)
    raise InvalidInput(f"the value {value} cannot be written to {dialect}; repair this row by hand")


# Characters written apart from quoted text: controls (NUL, line breaks), the other line
# separators, and in MySQL the backslash, which its quoted text reads as an escape.
_UNQUOTABLE = re.compile(r"([\x00-\x1f\x7f\x85\u2028\u2029])")
_UNQUOTABLE_MYSQL = re.compile(r"([\x00-\x1f\x7f\x85\u2028\u2029\\])")


def _text_literal(text: str, dialect: str) -> str:
    """Text as one SQL expression on one line that means exactly ``text``.

    PostgreSQL: an escape string (E'...') where needed, still one literal that takes the type
    of the column it meets. SQLite and MySQL: quoted runs joined with the characters quoted
    text cannot hold, made by char() or CHAR(... USING utf8mb4)."""
    if dialect == "postgresql":
        if not _UNQUOTABLE.search(text) and "\\" not in text:
            return "'" + text.replace("'", "''") + "'"
        return "E'" + "".join(_escaped(char) for char in text) + "'"
    mysql = dialect in ("mysql", "mariadb")
    parts: list[str] = []
    # Split by a capturing pattern: quoted runs at even places, special characters at odd.
    for index, piece in enumerate((_UNQUOTABLE_MYSQL if mysql else _UNQUOTABLE).split(text)):
        if index % 2:
            code = int.from_bytes(piece.encode("utf-8"), "big")
            parts.append(f"CHAR({code} USING utf8mb4)" if mysql else f"char({ord(piece)})")
        elif piece or len(text) == 0:
            parts.append("'" + piece.replace("'", "''") + "'")
    if len(parts) == 1:
        return parts[0]
    return f"CONCAT({', '.join(parts)})" if mysql else f"({' || '.join(parts)})"


def _escaped(char: str) -> str:
    """One character inside a PostgreSQL escape string."""
    if char in ("\\", "'"):
        return "\\" + char
    if char in _ESCAPES:
        return _ESCAPES[char]
    if _UNQUOTABLE.match(char):
        return f"\\x{ord(char):02x}" if ord(char) < 0x80 else f"\\u{ord(char):04x}"
    return char


_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _render(value: Any, type_: sa.types.TypeEngine[Any], dialect: Dialect) -> str:
    compiled = sa.literal(value, type_).compile(
        dialect=_script_dialect(type(dialect)), compile_kwargs={"literal_binds": True}
    )
    return str(compiled)


def _literals(table: sa.Table, values: Mapping[str, Any], dialect: Dialect) -> dict[str, Any]:
    return {
        name: sa.literal_column(_literal(value, table.c[name].type, dialect))
        for name, value in values.items()
    }


def _key_match(
    columns: Sequence[sa.Column[Any]], key: tuple[Any, ...], dialect: Dialect | None = None
) -> list[Any]:
    if dialect is None:
        pairs = zip(columns, key, strict=True)
        return [column == as_stored(column, value) for column, value in pairs]
    return [
        column == sa.literal_column(_literal(value, column.type, dialect))
        for column, value in zip(columns, key, strict=True)
    ]


def _update(
    table: sa.Table,
    columns: Sequence[sa.Column[Any]],
    key: tuple[Any, ...],
    values: Mapping[str, Any],
    dialect: Dialect,
) -> Any:
    return (
        sa.update(table)
        .where(*_key_match(columns, key, dialect))
        .values(_literals(table, values, dialect))
    )


def _delete(
    table: sa.Table, columns: Sequence[sa.Column[Any]], key: tuple[Any, ...], dialect: Dialect
) -> Any:
    return sa.delete(table).where(*_key_match(columns, key, dialect))


def _restore(table: sa.Table, row: Mapping[str, Any], dialect: Dialect) -> Any:
    """An insert of ``row`` that does nothing when the row is there, so that undoing a delete
    that never ran is harmless."""
    values = _literals(table, row, dialect)
    if dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table).values(values).on_conflict_do_nothing().inline()
    if dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(table).values(values).on_conflict_do_nothing().inline()
    if dialect.name in ("mysql", "mariadb"):
        return sa.insert(table).values(values).prefix_with("IGNORE").inline()
    return sa.insert(table).values(values).inline()


@functools.cache
def _script_dialect(dialect_class: type[Dialect]) -> Dialect:
    """A dialect that prints SQL for a script: the driver's own dialect doubles every % for
    its parameter syntax, which a script has none of."""
    return dialect_class(paramstyle="named")


def _sql(statement: Any, dialect: Dialect) -> str:
    compiled = statement.compile(dialect=_script_dialect(type(dialect)))
    return str(compiled).replace("\n", " ") + ";"


# --- small things ----------------------------------------------------------------------------


def _session(dialect: str) -> tuple[str, ...]:
    """What a session of the dialect's own client needs first: values written as text here
    (zoned times, dates, intervals, MySQL's text) are read as cutover's own sessions read them."""
    if dialect == "postgresql":
        return tuple(f"{statement};" for statement in POSTGRES_SESSION)
    if dialect in ("mysql", "mariadb"):
        return tuple(f"{statement};" for statement in MYSQL_SESSION)
    return ()


def _write_durably(path: str, text: str) -> None:
    """Write ``text`` to a new file at ``path`` and flush it to disk before returning."""
    folder = os.path.dirname(os.path.abspath(path))
    try:
        with open(path, "x", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
    except FileExistsError:
        raise InvalidInput(
            f"the undo script {path} already exists (from an earlier apply?); keep it, and pass"
            " --undo with a new file name"
        ) from None
    except OSError as error:
        raise InvalidInput(
            f"cannot write the undo script {path}: {error.strerror}; pass --undo with a"
            " writable path"
        ) from None
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


__all__ = [
    "PlanCounts",
    "ReconcilePlan",
    "ReconcileResult",
    "Statement",
    "apply",
    "default_undo_path",
    "plan",
    "undo_script",
]
