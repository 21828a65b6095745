"""Golden vectors: recorded inputs with legacy's outputs, in a reviewable JSON Lines file, and
their replay through an implementation with a migration's comparator.

A golden file is one header line, then one vector a line, sorted by group and id so that
recording the same inputs again gives the same lines::

    {"cutover_golden": 1, "migration": "codec", "legacy": "payments.codec:encode", ...}
    {"id": "5d41402abc4b", "group": "encode", "args": [...], "kwargs": {}, "output": ...}
    {"id": "9f86d081884c", "group": "encode", "args": [...], "kwargs": {}, "raised": {...}}

Values are typed JSON (:mod:`cutover.typedjson`), so bytes, Decimal, datetimes, tuples and
dataclasses come back as what they were.
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import dataclasses
import datetime as dt
import decimal
import enum
import hashlib
import importlib
import json
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cutover import runtime as rt
from cutover import typedjson
from cutover.compare import Comparator, Diff, exact, exceptions, judge
from cutover.compare._judge import describe_exception
from cutover.errors import InvalidInput
from cutover.model import Arm, Comparison, Observation, Verdict
from cutover.replay._verdict import NOTHING

FORMAT = 1
"""The golden file format this code writes and reads."""


@dataclass(frozen=True, slots=True)
class Call:
    """The arguments of one call: what a generator yields for a function of several arguments
    (a bare value is the one positional argument)."""

    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    def __call__(self, function: Callable[..., Any]) -> Any:
        return function(*self.args, **self.kwargs)

    def show(self, width: int = 60) -> str:
        """``(1000, mode='strict')``, cut to ``width`` characters: a readable label."""
        parts = [repr(arg) for arg in self.args]
        parts += [f"{key}={item!r}" for key, item in self.kwargs.items()]
        text = f"({', '.join(parts)})"
        return text if len(text) <= width else text[: width - 1] + "…"


def call(*args: Any, **kwargs: Any) -> Call:
    """``call(1, mode="strict")``: the arguments of one call, for a generator of inputs."""
    return Call(args, kwargs)


def as_call(value: Any) -> Call:
    return value if isinstance(value, Call) else Call((value,))


def function_path(function: Any) -> str:
    """``module:qualname`` of a function (what ``--from`` takes), or its repr."""
    module = getattr(function, "__module__", None)
    qualname = getattr(function, "__qualname__", None)
    return f"{module}:{qualname}" if module and qualname else repr(function)


@dataclass(frozen=True, slots=True)
class Raised:
    """An exception a function raised, as a golden file keeps it: type path and message."""

    type: str  # module:QualName
    message: str

    @property
    def name(self) -> str:
        return self.type.rpartition(":")[2].rpartition(".")[2]

    @classmethod
    def of(cls, error: BaseException) -> Raised:
        try:
            message = str(error)
        except Exception:  # noqa: BLE001 - an exception whose __str__ fails is still recorded
            message = object.__repr__(error)
        return cls(typedjson.type_path(type(error)), message)

    def exception(self) -> Exception:
        """A stand-in with the recorded type's name and message, for the exception comparator
        (which compares names, so the original class need not be importable)."""
        module, _, _ = self.type.partition(":")
        stand_in = type(self.name, (Exception,), {"__module__": module})
        return stand_in(self.message)


@dataclass(frozen=True, slots=True)
class Vector:
    """One golden vector: a call's arguments and what legacy returned or raised for them."""

    args: tuple[Any, ...]
    kwargs: Mapping[str, Any]
    output: Any = NOTHING
    raised: Raised | None = None
    group: str = ""
    note: str = ""
    id: str = ""

    def __post_init__(self) -> None:
        if not self.id:
            object.__setattr__(self, "id", vector_id(self.args, self.kwargs))

    @property
    def call(self) -> Call:
        return Call(self.args, self.kwargs)

    @property
    def label(self) -> str:
        """A stable, readable test id: ``group-id``."""
        return f"{self.group}-{self.id}" if self.group else self.id

    def observation(self) -> Observation:
        """What legacy did, as an observation to judge against."""
        if self.raised is not None:
            return Observation(Arm.LEGACY, exception=self.raised.exception())
        return Observation(Arm.LEGACY, value=self.output)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"id": self.id, "group": self.group}
        data["args"] = [_encode(arg, "args", index) for index, arg in enumerate(self.args)]
        data["kwargs"] = {key: _encode(item, "kwargs", key) for key, item in self.kwargs.items()}
        if self.raised is not None:
            data["raised"] = {"type": self.raised.type, "message": self.raised.message}
        else:
            data["output"] = _encode(self.output, "output")
        if self.note:
            data["note"] = self.note
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Vector:
        raised = data.get("raised")
        return cls(
            args=tuple(typedjson.decode(data.get("args", []))),
            kwargs=typedjson.decode(data.get("kwargs", {})),
            output=NOTHING if raised is not None else typedjson.decode(data.get("output")),
            raised=None if raised is None else Raised(str(raised["type"]), str(raised["message"])),
            group=str(data.get("group", "")),
            note=str(data.get("note", "")),
            id=str(data.get("id", "")),
        )


def _encode(value: Any, *path: str | int) -> Any:
    return typedjson.encode(value, list(path))


def vector_id(args: Sequence[Any], kwargs: Mapping[str, Any]) -> str:
    """12 hex digits of the input's hash: the same input always gets the same id."""
    text = json.dumps(
        [_encode(list(args), "args"), _encode(dict(kwargs), "kwargs")], sort_keys=True
    )
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


@dataclass(frozen=True, slots=True)
class Header:
    """The first line of a golden file: what was recorded, from what, when, compared how."""

    migration: str | None
    legacy: str
    created_at: str
    compare: str
    format: int = FORMAT

    def to_json(self, count: int) -> dict[str, Any]:
        return {
            "cutover_golden": self.format,
            "migration": self.migration,
            "legacy": self.legacy,
            "created_at": self.created_at,
            "compare": self.compare,
            "vectors": count,
        }


def now_text(clock: Callable[[], float] = time.time) -> str:
    return dt.datetime.fromtimestamp(clock(), dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class Golden:
    """A golden file's content: its header and its vectors in file order."""

    header: Header
    vectors: tuple[Vector, ...]

    def merged(self, more: Iterable[Vector]) -> Golden:
        """These vectors and ``more``, one per input (the first recorded wins), sorted."""
        return Golden(self.header, _ordered([*self.vectors, *more]))

    def text(self) -> str:
        lines = [json.dumps(self.header.to_json(len(self.vectors)), ensure_ascii=False)]
        lines += [
            json.dumps(vector.to_json(), ensure_ascii=False, allow_nan=False)
            for vector in self.vectors
        ]
        return "\n".join(lines) + "\n"

    def write(self, path: str | os.PathLike[str]) -> None:
        from cutover.data._files import replace_durably

        text = self.text()  # encoded whole before anything is replaced
        try:
            replace_durably(path, text)
        except OSError as error:
            raise InvalidInput(
                f"cannot write golden file {os.fspath(path)}: {error.strerror or error};"
                " give a path you can write to"
            ) from None


def _ordered(vectors: Iterable[Vector]) -> tuple[Vector, ...]:
    seen: dict[str, Vector] = {}
    for vector in vectors:
        seen.setdefault(vector.id, vector)
    return tuple(sorted(seen.values(), key=lambda v: (v.group, v.id)))


def read(path: str | os.PathLike[str]) -> Golden:
    """The golden file at ``path``; InvalidInput naming the line when it is not one."""
    name = os.fspath(path)
    try:
        with open(name, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except FileNotFoundError:
        raise InvalidInput(
            f"golden file {name} does not exist; record one with `cutover golden record`"
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise InvalidInput(f"cannot read golden file {name}: {error}") from None
    if not lines:
        raise InvalidInput(f"golden file {name} is empty; record it with `cutover golden record`")
    try:
        head = json.loads(lines[0])
    except json.JSONDecodeError:
        head = None
    if not isinstance(head, dict) or "cutover_golden" not in head:
        raise InvalidInput(
            f"{name} line 1 is not a golden file header; record the file with"
            " `cutover golden record`"
        )
    if head["cutover_golden"] != FORMAT:
        raise InvalidInput(
            f"{name} is golden format {head['cutover_golden']!r}; this cutover reads format"
            f" {FORMAT}, so record it again or upgrade cutover"
        )
    header = Header(
        migration=head.get("migration"),
        legacy=str(head.get("legacy", "")),
        created_at=str(head.get("created_at", "")),
        compare=str(head.get("compare", "")),
    )
    vectors = []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            if not isinstance(data, dict):
                raise InvalidInput("it is not a JSON object")
            vectors.append(Vector.from_json(data))
        except (json.JSONDecodeError, InvalidInput, KeyError, TypeError) as error:
            raise InvalidInput(f"{name} line {number} is not a golden vector: {error}") from None
    return Golden(header, tuple(vectors))


# -- finding code by its import path --------------------------------------------------------


def resolve(spec: str, what: str) -> Any:
    """The object ``module:attribute`` names (given as ``what``, e.g. ``--from``)."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise InvalidInput(f"{what} {spec!r} must be module:function, like payments.codec:encode")
    try:
        found: Any = importlib.import_module(module_name)
    except ImportError as error:
        raise InvalidInput(
            f"{what} {spec!r}: cannot import {module_name} ({error}); is it on PYTHONPATH?"
        ) from None
    for part in attribute.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise InvalidInput(f"{what} {spec!r}: {module_name} has no {attribute}") from None
    return found


def callable_at(spec: str, what: str) -> Callable[..., Any]:
    """The function ``spec`` names; a migration stands for its legacy arm (calling the
    migration itself would route by its state)."""
    from cutover.migration import Migration

    found = resolve(spec, what)
    if isinstance(found, Migration):
        return found.legacy
    if not callable(found):
        raise InvalidInput(f"{what} {spec!r} is not callable; name a function")
    return found


@dataclass(frozen=True, slots=True)
class Comparators:
    """How two outcomes are compared, and where that came from (for the report)."""

    values: Comparator
    exceptions: Comparator
    source: str


def comparators(
    migration: str | None, compare: Comparator | None = None, legacy: str = ""
) -> Comparators:
    """The comparator to verify with: ``compare`` if given, else the declared migration's
    (declared by the code under test, or by importing ``legacy``, the module:function the
    vectors were recorded from), else exact comparison."""
    if compare is not None:
        return Comparators(compare, exceptions(), "given")
    found = _declared(migration)
    if found is None and migration and ":" in legacy:
        with contextlib.suppress(InvalidInput):  # verifying does not need legacy itself
            resolve(legacy, "the golden file's legacy")
        found = _declared(migration)
    if found is not None:
        return Comparators(found._compare, found._compare_exceptions, f"migration {migration!r}")
    return Comparators(exact(), exceptions(), "exact (no declared migration)")


def _declared(name: str | None) -> Any:
    return next((m for m in rt.declared() if m.name == name), None)


# -- recording ------------------------------------------------------------------------------


def observe(
    function: Callable[..., Any], call: Call, arm: Arm = Arm.NEW
) -> tuple[Observation, float]:
    """Run ``function`` as ``arm`` on ``call``: what it did, and how long it took in ms."""
    start = time.perf_counter_ns()
    try:
        value = call(function)
    except Exception as error:  # noqa: BLE001 - a raised exception is the function's answer
        return Observation(arm, exception=error), (time.perf_counter_ns() - start) / 1e6
    return Observation(arm, value=value), (time.perf_counter_ns() - start) / 1e6


def vector_of(call: Call, observed: Observation, group: str, note: str = "") -> Vector:
    if observed.exception is not None:
        raised = Raised.of(observed.exception)
        return Vector(call.args, dict(call.kwargs), raised=raised, group=group, note=note)
    return Vector(call.args, dict(call.kwargs), observed.value, group=group, note=note)


def record(
    function: Callable[..., Any],
    inputs: Iterable[Any],
    *,
    group: str,
    note: str = "",
) -> list[Vector]:
    """Run ``function`` on each input (a :class:`Call` or one argument): one vector each."""
    vectors = []
    for position, item in enumerate(inputs):
        one = as_call(item)
        observed, _ = observe(function, one, Arm.LEGACY)
        try:
            vectors.append(vector_of(one, observed, group, note))
        except typedjson.Unencodable as error:
            raise typedjson.Unencodable(f"input {position + 1} {one.show()}: {error}") from None
    return vectors


def golden(
    vectors: Iterable[Vector],
    *,
    migration: str | None,
    legacy: str,
    compare: str,
    clock: Callable[[], float] = time.time,
) -> Golden:
    return Golden(Header(migration, legacy, now_text(clock), compare), _ordered(vectors))


def append(
    path: str | os.PathLike[str],
    vectors: Iterable[Vector],
    *,
    legacy: str,
    compare: str,
    migration: str | None = None,
) -> Golden:
    """Add ``vectors`` to the golden file at ``path`` (created if missing) and write it."""
    if os.path.exists(path):
        existing = read(path)
    else:
        existing = golden((), migration=migration, legacy=legacy, compare=compare)
    merged = existing.merged(vectors)
    merged.write(path)
    return merged


def read_inputs(path: str | os.PathLike[str]) -> list[Call]:
    """Inputs from a JSON Lines file: each line one argument in typed JSON, or an object with
    only the keys ``args`` and ``kwargs`` for a call's whole arguments."""
    name = os.fspath(path)
    try:
        with open(name, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise InvalidInput(f"cannot read --inputs-file {name}: {error}") from None
    calls = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            if isinstance(data, dict) and data and set(data) <= {"args", "kwargs"}:
                args, kwargs = typedjson.decode(data.get("args", [])), data.get("kwargs", {})
                calls.append(Call(tuple(args), typedjson.decode(kwargs)))
            else:
                calls.append(Call((typedjson.decode(data),)))
        except (json.JSONDecodeError, InvalidInput, TypeError) as error:
            raise InvalidInput(
                f"--inputs-file {name} line {number} is not a typed JSON input: {error}"
            ) from None
    return calls


def generated_inputs(spec: str) -> Iterable[Any]:
    """What ``--inputs module:generator`` yields: a generator function (called), or an
    iterable of inputs."""
    found = resolve(spec, "--inputs")
    items = found() if callable(found) else found
    try:
        return iter(items)
    except TypeError:
        raise InvalidInput(
            f"--inputs {spec!r} gave {type(items).__name__}, not an iterable of inputs;"
            " name a generator function or a list"
        ) from None


# -- drift samples --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Skipped:
    """A drift sample that could not become a vector, and why."""

    sample_id: int | None
    reason: str


def sample_call(sample: Any) -> Call:
    """The arguments a drift sample kept, decoded; InvalidInput when they were not kept whole."""
    stored = sample.input
    if sample.truncated and isinstance(stored, dict) and stored.get("truncated"):
        raise InvalidInput("its input was cut to the size cap")
    if not isinstance(stored, dict) or "args" not in stored:
        raise InvalidInput("its input is not the arguments of a call (a redactor replaced it?)")
    if stored.get("inexact"):
        raise InvalidInput(f"its {', '.join(stored['inexact'])} could not be kept exactly")
    return Call(tuple(typedjson.decode(stored["args"])), typedjson.decode(stored["kwargs"]))


def sample_vectors(
    samples: Iterable[Any], legacy: Callable[..., Any] | None = None
) -> tuple[list[Vector], list[Skipped]]:
    """Vectors from drift samples: each sample's input, with the output ``legacy`` gives for it
    now (or, without ``legacy``, the legacy output the sample kept). Grouped by fingerprint."""
    vectors, skipped = [], []
    for sample in samples:
        try:
            one = sample_call(sample)
            if legacy is not None:
                observed, _ = observe(legacy, one, Arm.LEGACY)
            else:
                if isinstance(sample.input, dict) and "legacy" in sample.input.get("inexact", ()):
                    raise InvalidInput("its legacy output could not be kept exactly")
                observed = _stored_legacy(sample)
            note = f"drift sample {sample.id}" if sample.id is not None else "drift sample"
            vectors.append(vector_of(one, observed, sample.fingerprint[:200], note))
        except InvalidInput as error:
            skipped.append(Skipped(sample.id, str(error)))
    return vectors, skipped


def _stored_legacy(sample: Any) -> Observation:
    """What legacy answered, as the sample kept it: an exception when its diff says legacy
    raised (the sample keeps the exception's repr, ``ValueError('bad')``), else the value."""
    stored = sample.legacy
    raised = None
    for entry in sample.diff:
        note, path = str(entry.get("note", "")), str(entry.get("path", ""))
        if note.startswith("legacy raised "):
            raised = note.removeprefix("legacy raised ")
        elif path == "$.exception.type":
            raised = str(entry.get("legacy"))
        elif path.startswith("$.exception.") and isinstance(stored, str):
            raised = stored.partition("(")[0]
    if raised is not None:
        kind = f"builtins:{raised}" if isinstance(getattr(builtins, raised, None), type) else raised
        return Observation(Arm.LEGACY, exception=Raised(kind, _message(stored)).exception())
    if isinstance(stored, dict) and stored.get("truncated") and "preview" in stored:
        raise InvalidInput("its legacy output was cut to the size cap; give --from to recompute it")
    return Observation(Arm.LEGACY, value=typedjson.decode(stored))


def _message(described: Any) -> str:
    """The message in an exception's repr: ``ValueError('bad')`` -> ``bad``."""
    match = re.fullmatch(r"[\w.]+\((.*)\)", str(described), re.S)
    if match is None:
        return str(described)
    try:
        value = ast.literal_eval(match.group(1) or "''")
    except (ValueError, SyntaxError):
        return match.group(1)
    return value if isinstance(value, str) else str(value)


# -- verifying ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Outcome:
    """One vector replayed: the comparison with legacy's recorded answer, and the new value."""

    vector: Vector
    comparison: Comparison
    new_ms: float

    @property
    def matched(self) -> bool:
        return self.comparison.verdict is Verdict.MATCH

    @property
    def new_value(self) -> Any:
        observed = self.comparison.new
        return NOTHING if observed.exception is not None else observed.value

    def message(self) -> str:
        """Why this vector failed, in words, with the structural diff."""
        return explain(self.comparison, self.vector.call)


def check(
    vector: Vector,
    target: Callable[..., Any],
    compare: Comparators,
    migration: str = "golden",
) -> Outcome:
    """Replay ``vector`` through ``target`` and judge it against the recorded answer."""
    observed, elapsed = observe(target, vector.call)
    return Outcome(vector, compared(migration, vector.call, vector.observation(), observed,
                                    compare), elapsed)  # fmt: skip


def compared(
    migration: str, one: Call, legacy: Observation, new: Observation, compare: Comparators
) -> Comparison:
    """The comparison of two observations of one call, as a migration would judge it."""
    verdict, diff, problem = judge(compare.values, compare.exceptions, legacy, new)
    return Comparison(
        migration=migration,
        verdict=verdict,
        legacy=legacy,
        new=new,
        diff=diff,
        error=problem,
        args=one.args,
        kwargs=dict(one.kwargs),
    )


def verify(golden: Golden, target: Callable[..., Any], compare: Comparators) -> Iterator[Outcome]:
    name = golden.header.migration or "golden"
    for vector in golden.vectors:
        yield check(vector, target, compare, name)


def measured(value: Any) -> Any:
    """``value`` as the verdict measures fields: Decimals as numbers (an amount's delta is what
    a gate bounds), dataclasses as their fields, enums as their values, tuples and sets as
    lists, times and UUIDs as text."""
    if value is NOTHING or value is None or isinstance(value, str | bool | int | float | bytes):
        return value
    if isinstance(value, decimal.Decimal):
        return float(value) if value.is_finite() else str(value)
    if isinstance(value, enum.Enum):
        return measured(value.value)
    if isinstance(value, Mapping):
        return {key: measured(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [measured(item) for item in value]
    if isinstance(value, set | frozenset):
        return sorted((measured(item) for item in value), key=repr)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: measured(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    return str(value)


def ignored_paths(compare: Comparators) -> tuple[str, ...]:
    """The paths the comparator ignores, which the verdict's field figures skip too."""
    ignore = getattr(compare.values, "ignore", None)
    return tuple(getattr(ignore, "source", ()) or ())


def _shown(value: Any, width: int = 200) -> str:
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - a broken __repr__ still gets a description
        text = object.__repr__(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def describe(diff: Diff) -> list[str]:
    """One line per differing path: ``$.total: legacy 10, new 11``."""
    lines = []
    for difference in diff.differences:
        note = f" ({difference.note})" if difference.note else ""
        lines.append(
            f"{difference.path}: legacy {_shown(difference.legacy)},"
            f" new {_shown(difference.new)}{note}"
        )
    if diff.truncated:
        lines.append("… more differences were found than are kept")
    return lines


def explain(comparison: Comparison, one: Call) -> str:
    """A comparison that did not match, in words: the input, then the diff path by path."""
    head = f"legacy and new differ on {one.show(200)}"
    if comparison.verdict is Verdict.ERROR:
        problem = comparison.error
        described = "?" if problem is None else describe_exception(problem)
        return f"{head}: the comparator raised {described}"
    lines = describe(comparison.diff or Diff())
    return "\n".join([f"{head}:", *(f"  {line}" for line in lines)])
