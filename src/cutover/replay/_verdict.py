"""The verdict of a run that compares two sides (a replay, golden vectors): tallies, gates, targets.

A :class:`Tally` accumulates, per group (a route template, a vector group), what each call
gave: matched, drifted (with the diff's fingerprint, as ``cutover drifts --group`` counts
them) or failed; how far numeric fields moved and whether categorical fields kept their value;
and how long each side took. :meth:`Tally.verdict` judges it against :class:`Gates` (the
runbook's "mean delta < 5%, max delta < 10%, all segments matched") and :class:`Targets`
(latency bounds per route, judged with the quantile's confidence interval) and gives a
:class:`Verdict` that prints as a table, JSON, JUnit XML or Markdown.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from array import array
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from cutover.compare import Difference, format_path
from cutover.compare._paths import PathSet
from cutover.errors import InvalidInput
from cutover.model import Comparison
from cutover.model import Verdict as Outcome

__all__ = ["NOTHING", "Check", "Gates", "GroupReport", "Tally", "Targets", "Verdict"]


class _Nothing:
    """Marks a value that was not given (None is a value: JSON null)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NOTHING"


NOTHING: Any = _Nothing()

MAX_LEAVES = 10_000
"""Leaves of one value walked for deltas: a huge body is judged on its first ten thousand."""

EXAMPLES = 3
"""Drift fingerprints kept with an example per group, most frequent first, in every output."""

Status = Literal["passed", "failed", "inconclusive", "skipped"]


# -- the inputs: gates and targets ---------------------------------------------------------


def share(value: Any, what: str) -> float:
    """A share from 0 to 1, written ``0.05`` or ``5%``."""
    text = str(value).strip()
    try:
        number = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise InvalidInput(f"{what} {value!r} is not a share; write it like 0.05 or 5%") from None
    if not math.isfinite(number) or number < 0:
        raise InvalidInput(f"{what} {value!r} must be a share of at least 0, like 0.05 or 5%")
    return number


class _GatesFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_mean_delta: float | str | None = None
    max_delta: float | str | None = None
    min_match: float | str | None = None
    max_drift_share: float | str | None = None
    max_error_share: float | str | None = None
    allow_inconclusive: bool = False


@dataclass(frozen=True, slots=True)
class Gates:
    """What a run must meet, per group: ``None`` leaves a gate out.

    - ``max_mean_delta`` / ``max_delta``: the mean and the largest relative delta of the numeric
      fields (``|new - legacy| / |legacy|``);
    - ``min_match``: the share of categorical values (strings, booleans, null, and a number
      whose other side is not a number) that are equal on both sides;
    - ``max_drift_share``: the share of calls that drifted by the comparison's own rules;
    - ``max_error_share``: the share of calls that could not be compared (a side unreachable,
      a comparator that raised);
    - ``allow_inconclusive``: a latency target whose interval straddles its bound passes the
      run instead of failing it (it is reported as inconclusive either way).
    """

    max_mean_delta: float | None = None
    max_delta: float | None = None
    min_match: float | None = None
    max_drift_share: float | None = None
    max_error_share: float | None = 0.0
    allow_inconclusive: bool = False

    def __post_init__(self) -> None:
        for name in (
            "max_mean_delta",
            "max_delta",
            "min_match",
            "max_drift_share",
            "max_error_share",
        ):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, share(value, f"--{name.replace('_', '-')}"))
        if self.min_match is not None and self.min_match > 1:
            raise InvalidInput(f"--min-match {self.min_match:g} is above 1 (100%); lower it")

    @classmethod
    def of(cls, given: Mapping[str, Any], base: Gates | None = None) -> Gates:
        """Gates from flags (``None`` = not given) over ``base`` (a gates file). With no
        comparison gate at all, any drift fails the run: a run that judges nothing passes
        nothing."""
        values = asdict(base) if base is not None else {}
        values.update({key: value for key, value in given.items() if value is not None})
        gates = cls(**values)
        judged = (gates.max_mean_delta, gates.max_delta, gates.min_match, gates.max_drift_share)
        if all(value is None for value in judged):
            gates = cls(**{**asdict(gates), "max_drift_share": 0.0})
        return gates

    @classmethod
    def load(cls, path: str | Path) -> Gates:
        """A gates file (YAML or JSON) with the fields above, shares as 0.05 or ``5%``."""
        from cutover._yaml import load_model

        spec = load_model(path, _GatesFile, "the gates file", "docs/replay.md")
        given = {key: value for key, value in spec.model_dump().items() if value is not None}
        try:
            return cls(**given)
        except InvalidInput as error:
            text = str(error).replace("--", "", 1)
            field_name, _, rest = text.partition(" ")
            raise InvalidInput(f"{path}: {field_name.replace('-', '_')} {rest}") from None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class _TargetsFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    quantile: float = Field(0.95, gt=0, lt=1)
    confidence: float = Field(0.95, gt=0, lt=1)
    arm: Literal["new", "legacy"] = "new"
    targets: dict[str, float | str]

    @field_validator("targets")
    @classmethod
    def _bounds(cls, value: dict[str, float | str]) -> dict[str, float | str]:
        if not value:
            raise ValueError("needs at least one route: bound, e.g. 'GET /health: 100ms'")
        return value


@dataclass(frozen=True, slots=True)
class Targets:
    """Latency bounds per group (``perf.yaml``): the ``quantile`` of ``arm``'s latency must be
    under each bound, judged with the quantile's distribution-free confidence interval.

    A key names a group exactly (``GET /api/v1/predict``) or by its path alone
    (``/api/v1/predict`` takes every method's template of that path)."""

    bounds: Mapping[str, float]  # key -> milliseconds
    quantile: float = 0.95
    confidence: float = 0.95
    arm: str = "new"

    @classmethod
    def load(cls, path: str | Path) -> Targets:
        from cutover._yaml import load_model
        from cutover.durations import parse_duration

        spec = load_model(path, _TargetsFile, "the perf file", "docs/replay.md")
        bounds = {}
        for key, bound in spec.targets.items():
            what = f"{path}: targets.{key}"
            text = f"{bound}ms" if isinstance(bound, int | float) else str(bound)
            bounds[str(key).strip()] = parse_duration(text, what) * 1000
        return cls(bounds, spec.quantile, spec.confidence, spec.arm)

    def bound_for(self, group: str) -> tuple[str, float] | None:
        """The (key, bound in ms) that applies to ``group``, or None."""
        if group in self.bounds:
            return group, self.bounds[group]
        path = group.split(" ", 1)[-1]
        if path in self.bounds:
            return path, self.bounds[path]
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "quantile": self.quantile,
            "confidence": self.confidence,
            "arm": self.arm,
            "bounds_ms": dict(self.bounds),
        }


# -- accumulating ----------------------------------------------------------------------------


@dataclass(slots=True)
class _Field:
    """What one field path did across the calls of a group."""

    numeric: int = 0
    delta_sum: float = 0.0
    delta_max: float = 0.0
    categorical: int = 0
    matched: int = 0
    example: tuple[Any, Any] | None = None  # a categorical mismatch: (legacy, new)


@dataclass(slots=True)
class _Group:
    requests: int = 0
    matches: int = 0
    drifts: int = 0
    errors: int = 0
    fingerprints: Counter[str] = field(default_factory=Counter)
    examples: dict[str, Difference] = field(default_factory=dict)
    error_texts: Counter[str] = field(default_factory=Counter)
    fields: dict[str, _Field] = field(default_factory=dict)
    latency: dict[str, array[float]] = field(
        default_factory=lambda: {"legacy": array("d"), "new": array("d")}
    )


class Tally:
    """Outcomes of one run (replay or golden verify), accumulated per group (route template or
    vector group). Not thread-safe: one event loop or one thread adds."""

    def __init__(self, label: str = "group") -> None:
        self.label = label  # what a group is called in reports: "route", "vector group"
        self.groups: dict[str, _Group] = {}
        self._ignored: dict[tuple[str, ...], PathSet] = {}

    def add(
        self,
        group: str,
        comparison: Comparison | None,
        *,
        legacy: Any = NOTHING,
        new: Any = NOTHING,
        legacy_ms: float | None = None,
        new_ms: float | None = None,
        error: str | None = None,
        ignore: Iterable[str] = (),
    ) -> None:
        """Count one call. ``comparison`` is None when there was nothing to compare, with
        ``error`` saying why; ``legacy`` and ``new`` are the decoded values whose numeric and
        categorical fields are measured (paths in ``ignore``, like ``$.body.meta.generated_at``,
        are not)."""
        tally = self.groups.get(group)
        if tally is None:
            tally = self.groups[group] = _Group()
        tally.requests += 1
        if legacy_ms is not None:
            tally.latency["legacy"].append(legacy_ms)
        if new_ms is not None:
            tally.latency["new"].append(new_ms)
        if comparison is None or comparison.verdict is Outcome.ERROR:
            tally.errors += 1
            text = error or (
                f"the comparison failed: {comparison.error!r}"
                if comparison is not None
                else "no comparison"
            )
            tally.error_texts[text] += 1
            return
        if comparison.matched:
            tally.matches += 1
        else:
            tally.drifts += 1
            diff = comparison.diff
            fingerprint = diff.fingerprint if diff else "$"
            tally.fingerprints[fingerprint] += 1
            if fingerprint not in tally.examples and diff:
                tally.examples[fingerprint] = diff.differences[0]
        if legacy is not NOTHING and new is not NOTHING:
            key = tuple(ignore)
            ignored = self._ignored.get(key)
            if ignored is None:
                ignored = self._ignored[key] = PathSet(key)
            _measure(tally.fields, legacy, new, ignored)

    def verdict(self, gates: Gates, targets: Targets | None = None) -> Verdict:
        reports = tuple(
            _report(name, group, gates, targets) for name, group in sorted(self.groups.items())
        )
        missing = ()
        if targets is not None:
            seen = {name for name in self.groups} | {n.split(" ", 1)[-1] for n in self.groups}
            missing = tuple(key for key in targets.bounds if key not in seen)
        checks = [check for report in reports for check in report.checks]
        checks += [
            Check(
                key,
                _latency_label(targets, key),
                "inconclusive",
                None,
                targets.bounds[key],
                "no calls",
                "ms",
            )
            for key in missing
            if targets is not None
        ]
        return Verdict(reports, tuple(checks), gates, targets, _overall(self.groups), self.label)


def _measure(fields: dict[str, _Field], legacy: Any, new: Any, ignored: PathSet) -> None:
    """Walk ``legacy`` and, where it leads, ``new``: numbers give relative deltas, other
    scalars a match or not. Field names are built as the walk goes down (``$.items[*].p``),
    and the path as tokens only when there are ignore patterns to test it against."""
    stack: list[tuple[str, tuple[str | int, ...], Any, Any]] = [("$", (), legacy, new)]
    testing = bool(ignored)
    leaves = 0
    while stack and leaves < MAX_LEAVES:
        name, path, left, right = stack.pop()
        if testing and path in ignored:
            continue
        if isinstance(left, dict | Mapping):
            mapping = isinstance(right, dict | Mapping)
            for key, value in left.items():
                other = right.get(key, NOTHING) if mapping else NOTHING
                step = _KEYS.get(key) or _key(key)
                stack.append((name + step, (*path, str(key)) if testing else path, value, other))
            continue
        if isinstance(left, list | tuple):
            size = len(right) if isinstance(right, list | tuple) else 0
            child = name + "[*]"
            for index, value in enumerate(left):
                other = right[index] if index < size else NOTHING
                stack.append((child, (*path, index) if testing else path, value, other))
            continue
        leaves += 1
        figures = fields.get(name)
        if figures is None:
            figures = fields[name] = _Field()
        if _is_number(left) and _is_number(right):
            delta = _relative_delta(float(left), float(right))
            figures.numeric += 1
            figures.delta_sum += delta
            figures.delta_max = max(figures.delta_max, delta)
            continue
        figures.categorical += 1
        if left == right and type(left) is type(right):
            figures.matched += 1
        elif figures.example is None:
            figures.example = (left, None if right is NOTHING else right)


_KEYS: dict[Any, str] = {}
"""Path steps of the keys seen (``.score``, ``['a b']``): a body's keys repeat on every call."""


def _key(key: Any) -> str:
    step = format_path((str(key),))[1:]
    if len(_KEYS) < 100_000:
        _KEYS[key] = step
    return step


def _is_number(value: Any) -> bool:
    kind = type(value)
    return (
        kind is float
        or kind is int
        or (isinstance(value, int | float) and not isinstance(value, bool))
    )


def _relative_delta(legacy: float, new: float) -> float:
    """``|new - legacy| / |legacy|``; against a legacy 0, any other value is a 100% delta
    (there is no scale to measure it by), and NaN on both sides is no delta."""
    if legacy == new or (math.isnan(legacy) and math.isnan(new)):
        return 0.0
    if legacy == 0 or not math.isfinite(legacy) or not math.isfinite(new):
        return 1.0
    return abs(new - legacy) / abs(legacy)


# -- judging -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Check:
    """One gate or target judged on one group: passed, failed, inconclusive or skipped (it
    does not apply, e.g. a delta gate on a group without numeric fields)."""

    group: str
    name: str
    status: Status
    value: float | None
    bound: float | None
    detail: str
    unit: Literal["share", "ms"] = "share"  # how value and bound read: 0.05 is 5%, or ms

    def counts_as_failure(self, allow_inconclusive: bool) -> bool:
        return self.status == "failed" or (self.status == "inconclusive" and not allow_inconclusive)

    def to_json(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "name": self.name,
            "status": self.status,
            "value": _finite(self.value),
            "bound": self.bound,
            "detail": self.detail,
            "unit": self.unit,
        }


@dataclass(frozen=True, slots=True)
class FieldReport:
    """What one field path did: its numeric deltas, or its categorical match share."""

    path: str
    numeric: int
    mean_delta: float | None
    max_delta: float | None
    categorical: int
    matched: int
    example: tuple[Any, Any] | None

    @property
    def match_share(self) -> float | None:
        return self.matched / self.categorical if self.categorical else None

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "numeric": self.numeric,
            "mean_delta": self.mean_delta,
            "max_delta": self.max_delta,
            "categorical": self.categorical,
            "matched": self.matched,
            "match_share": self.match_share,
            "mismatch_example": (
                None
                if self.example is None
                else {"legacy": _jsonable(self.example[0]), "new": _jsonable(self.example[1])}
            ),
        }


@dataclass(frozen=True, slots=True)
class Latency:
    """One side's latency in a group: p50, p95 and p99 in milliseconds, over ``count`` calls."""

    count: int
    p50: float | None
    p95: float | None
    p99: float | None

    def to_json(self) -> dict[str, Any]:
        return {"count": self.count, "p50_ms": self.p50, "p95_ms": self.p95, "p99_ms": self.p99}


@dataclass(frozen=True, slots=True)
class Figures:
    """Counts and deltas of a group, or of the whole run."""

    requests: int
    matches: int
    drifts: int
    errors: int
    numeric: int
    mean_delta: float | None
    max_delta: float | None
    categorical: int
    matched: int

    @property
    def match_share(self) -> float | None:
        return self.matched / self.categorical if self.categorical else None

    @property
    def compared(self) -> int:
        return self.matches + self.drifts

    def to_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "matches": self.matches,
            "drifts": self.drifts,
            "errors": self.errors,
            "numeric_values": self.numeric,
            "mean_delta": self.mean_delta,
            "max_delta": self.max_delta,
            "categorical_values": self.categorical,
            "categorical_matched": self.matched,
            "match_share": self.match_share,
        }


@dataclass(frozen=True, slots=True)
class DriftGroup:
    """Drifts of one root cause in a group: the fingerprint ``cutover drifts --group`` shows."""

    fingerprint: str
    count: int
    path: str
    legacy: Any
    new: Any

    def to_json(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint,
            "count": self.count,
            "example": {
                "path": self.path,
                "legacy": _jsonable(self.legacy),
                "new": _jsonable(self.new),
            },
        }


@dataclass(frozen=True, slots=True)
class GroupReport:
    """Everything judged about one group."""

    name: str
    figures: Figures
    drift_groups: tuple[DriftGroup, ...]
    errors: tuple[tuple[str, int], ...]
    fields: tuple[FieldReport, ...]
    latency: Mapping[str, Latency]
    checks: tuple[Check, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "group": self.name,
            **self.figures.to_json(),
            "drift_groups": [g.to_json() for g in self.drift_groups],
            "errors_seen": [{"error": text, "count": n} for text, n in self.errors],
            "fields": [f.to_json() for f in self.fields],
            "latency": {arm: latency.to_json() for arm, latency in self.latency.items()},
            "checks": [c.to_json() for c in self.checks],
        }


def _figures(groups: Iterable[_Group]) -> Figures:
    requests = matches = drifts = errors = numeric = categorical = matched = 0
    delta_sum = 0.0
    delta_max: float | None = None
    for group in groups:
        requests += group.requests
        matches += group.matches
        drifts += group.drifts
        errors += group.errors
        for figures in group.fields.values():
            numeric += figures.numeric
            delta_sum += figures.delta_sum
            categorical += figures.categorical
            matched += figures.matched
            if figures.numeric:
                delta_max = max(delta_max or 0.0, figures.delta_max)
    return Figures(
        requests,
        matches,
        drifts,
        errors,
        numeric,
        delta_sum / numeric if numeric else None,
        delta_max,
        categorical,
        matched,
    )


def _overall(groups: Mapping[str, _Group]) -> Figures:
    return _figures(groups.values())


def _quantile(ordered: list[float], q: float) -> float | None:
    """The nearest-rank q-quantile: a value that was observed, never an interpolation."""
    if not ordered:
        return None
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def _report(name: str, group: _Group, gates: Gates, targets: Targets | None) -> GroupReport:
    figures = _figures([group])
    ordered = {arm: sorted(values) for arm, values in group.latency.items()}
    latency = {
        arm: Latency(len(values), *(_quantile(values, q) for q in (0.5, 0.95, 0.99)))
        for arm, values in ordered.items()
        if values
    }
    checks = [*_gate_checks(name, figures, gates)]
    if targets is not None:
        found = targets.bound_for(name)
        if found is not None:
            checks.append(_latency_check(name, ordered[targets.arm], found[1], targets))
    fields = tuple(
        FieldReport(
            path,
            f.numeric,
            f.delta_sum / f.numeric if f.numeric else None,
            f.delta_max if f.numeric else None,
            f.categorical,
            f.matched,
            f.example,
        )
        for path, f in sorted(group.fields.items())
    )
    drift_groups = tuple(
        DriftGroup(
            fingerprint,
            count,
            group.examples[fingerprint].path if fingerprint in group.examples else "$",
            group.examples[fingerprint].legacy if fingerprint in group.examples else None,
            group.examples[fingerprint].new if fingerprint in group.examples else None,
        )
        for fingerprint, count in group.fingerprints.most_common()
    )
    return GroupReport(
        name,
        figures,
        drift_groups,
        tuple(group.error_texts.most_common(EXAMPLES)),
        fields,
        latency,
        tuple(checks),
    )


def _gate_checks(name: str, figures: Figures, gates: Gates) -> Iterable[Check]:
    if gates.max_error_share is not None:
        value = figures.errors / figures.requests if figures.requests else 0.0
        yield _at_most(
            name, "errors", value, gates.max_error_share, f"{figures.errors} of {figures.requests}"
        )
    if gates.max_drift_share is not None:
        if figures.compared:
            value = figures.drifts / figures.compared
            detail = f"{figures.drifts} of {figures.compared} compared"
            yield _at_most(name, "drifts", value, gates.max_drift_share, detail)
        else:
            yield Check(name, "drifts", "skipped", None, gates.max_drift_share, "nothing compared")
    numeric = f"over {figures.numeric} numeric values"
    for gate, value, bound in (
        ("mean delta", figures.mean_delta, gates.max_mean_delta),
        ("max delta", figures.max_delta, gates.max_delta),
    ):
        if bound is None:
            continue
        if value is None:
            yield Check(name, gate, "skipped", None, bound, "no numeric field was compared")
        else:
            yield _at_most(name, gate, value, bound, numeric)
    if gates.min_match is not None:
        value = figures.match_share
        if value is None:
            yield Check(
                name, "match", "skipped", None, gates.min_match, "no categorical field compared"
            )
        else:
            status: Status = "passed" if value >= gates.min_match else "failed"
            detail = f"{figures.matched} of {figures.categorical} categorical values equal"
            yield Check(name, "match", status, value, gates.min_match, detail)


def _at_most(name: str, gate: str, value: float, bound: float, detail: str) -> Check:
    return Check(name, gate, "passed" if value <= bound else "failed", value, bound, detail)


def _latency_check(name: str, ordered: list[float], bound: float, targets: Targets) -> Check:
    """Pass when the interval's upper end is under the bound, fail when its lower end is over
    it, and inconclusive in between (or with too few calls to bound the quantile)."""
    from cutover.control.statistics import sample_quantile_interval

    label = _latency_label(targets, name)
    interval = sample_quantile_interval(ordered, targets.quantile, targets.confidence)
    if interval is None:
        return Check(name, label, "inconclusive", None, bound, f"no {targets.arm} latencies", "ms")
    low, high = interval
    point = _quantile(ordered, targets.quantile)
    shown = f"{high:.4g}" if math.isfinite(high) else "∞ (too few calls)"
    detail = f"{targets.confidence:.0%} interval {low:.4g}–{shown} ms over {len(ordered)} calls"
    if high < bound:
        status: Status = "passed"
    elif low > bound:
        status = "failed"
    else:
        status = "inconclusive"
    return Check(name, label, status, point, bound, detail, "ms")


def _latency_label(targets: Targets, group: str) -> str:
    found = targets.bound_for(group)
    bound = found[1] if found else 0.0
    return f"p{targets.quantile * 100:g} {targets.arm} < {bound:g} ms"


# -- the verdict ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a run found and whether it passes its gates and targets."""

    groups: tuple[GroupReport, ...]
    checks: tuple[Check, ...]
    gates: Gates
    targets: Targets | None
    overall: Figures
    label: str = "group"

    @property
    def failures(self) -> tuple[Check, ...]:
        allow = self.gates.allow_inconclusive
        return tuple(check for check in self.checks if check.counts_as_failure(allow))

    @property
    def passed(self) -> bool:
        return bool(self.groups) and not self.failures

    def as_json(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "overall": self.overall.to_json(),
            "gates": self.gates.to_json(),
            "targets": None if self.targets is None else self.targets.to_json(),
            "groups": [group.to_json() for group in self.groups],
            "failures": [check.to_json() for check in self.failures],
            "checks": [check.to_json() for check in self.checks],
        }

    def write_junit(self, path: str | Path, suite: str = "cutover") -> None:
        """One test suite per group and one test case per gate or target: a failed or (unless
        allowed) inconclusive check is a ``<failure>``, a check that does not apply or an
        allowed inconclusive one is ``<skipped>``."""
        from cutover.cli._app import write_file

        write_file(path, self.junit(suite), "--junit")

    def junit(self, suite: str = "cutover") -> str:
        allow = self.gates.allow_inconclusive
        root = ET.Element("testsuites", name=suite)
        by_group: dict[str, list[Check]] = {}
        for check in self.checks:
            by_group.setdefault(check.group, []).append(check)
        totals = Counter[str]()
        for group, checks in by_group.items():
            failed = sum(check.counts_as_failure(allow) for check in checks)
            skipped = sum(
                check.status == "skipped" or (check.status == "inconclusive" and allow)
                for check in checks
            )
            element = ET.SubElement(
                root,
                "testsuite",
                name=group,
                tests=str(len(checks)),
                failures=str(failed),
                errors="0",
                skipped=str(skipped),
            )
            totals.update(tests=len(checks), failures=failed, skipped=skipped)
            for check in checks:
                case = ET.SubElement(element, "testcase", classname=f"{suite}.{group}")
                case.set("name", check.name)
                message = _sentence(check)
                if check.counts_as_failure(allow):
                    ET.SubElement(
                        case, "failure", message=message, type=check.status
                    ).text = message
                elif check.status != "passed":
                    ET.SubElement(case, "skipped", message=message)
                else:
                    ET.SubElement(case, "system-out").text = message
        root.set("tests", str(totals["tests"]))
        root.set("failures", str(totals["failures"]))
        root.set("errors", "0")
        root.set("skipped", str(totals["skipped"]))
        ET.indent(root)
        return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, "unicode") + "\n"

    def write_markdown(self, path: str | Path, title: str = "cutover") -> None:
        from cutover.cli._app import write_file

        write_file(path, self.markdown(title), "--markdown")

    def markdown(self, title: str = "cutover") -> str:
        verdict = "passed" if self.passed else "failed"
        lines = [f"## {title}: {verdict}", ""]
        lines += _markdown_table(
            (self.label, *_COLUMNS),
            [(report.name, *_cells(report)) for report in self.groups],
        )
        overall = self.overall
        lines += [
            "",
            f"Overall: {overall.requests} calls, {overall.matches} matched, {overall.drifts}"
            f" drifted, {overall.errors} failed; mean delta {_pct(overall.mean_delta)}, max"
            f" delta {_pct(overall.max_delta)}, categorical match {_pct(overall.match_share)}.",
            "",
        ]
        if self.checks:
            lines += ["### Gates and targets", ""]
            lines += _markdown_table(
                (self.label, "check", "result", "value", "bound", "detail"),
                [
                    (
                        c.group,
                        c.name,
                        _status(c, self.gates.allow_inconclusive),
                        _value(c),
                        _bound(c),
                        c.detail,
                    )
                    for c in self.checks
                ],
            )
            lines.append("")
        drifts = [(r.name, g) for r in self.groups for g in r.drift_groups]
        if drifts:
            lines += ["### Drifts by root cause", ""]
            lines += _markdown_table(
                (self.label, "drifts", "fingerprint", "example"),
                [(name, str(g.count), g.fingerprint, _example(g)) for name, g in drifts],
            )
            lines.append("")
        return "\n".join(lines)

    def render(self, console: Any, title: str = "cutover") -> None:
        """The verdict as rich tables on ``console``."""
        from rich.table import Table

        table = Table(title=f"{title} · per {self.label}", title_justify="left")
        for column in (self.label, *_COLUMNS):
            table.add_column(column, justify="right" if column in _COLUMNS[:-1] else "left")
        for report in self.groups:
            table.add_row(report.name, *_cells(report))
        console.print(table)
        drifts = [(r.name, g) for r in self.groups for g in r.drift_groups]
        if drifts:
            causes = Table(title="drifts by root cause", title_justify="left")
            for column in (self.label, "drifts", "fingerprint", "example"):
                causes.add_column(column, justify="right" if column == "drifts" else "left")
            for name, g in drifts[: EXAMPLES * max(1, len(self.groups))]:
                causes.add_row(name, str(g.count), g.fingerprint, _example(g))
            console.print(causes)
        fields = [
            (r.name, f)
            for r in self.groups
            for f in r.fields
            if f.numeric or f.matched < f.categorical
        ]
        if fields:
            shown = Table(title="fields", title_justify="left")
            for column in (self.label, "field", "numeric", "mean Δ", "max Δ", "match"):
                shown.add_column(
                    column, justify="left" if column in (self.label, "field") else "right"
                )
            for name, f in fields[:40]:
                shown.add_row(
                    name,
                    f.path,
                    str(f.numeric),
                    _pct(f.mean_delta),
                    _pct(f.max_delta),
                    _pct(f.match_share),
                )
            console.print(shown)
        allow = self.gates.allow_inconclusive
        for check in self.checks:
            if check.status != "passed":
                style = "red" if check.counts_as_failure(allow) else "yellow"
                console.print(f"[{style}]{_status(check, allow)}[/{style}]  ", end="")
                console.print(_sentence(check), markup=False)
        overall = self.overall
        word = "[green]passed[/green]" if self.passed else "[red]failed[/red]"
        console.print(
            f"{word}: {overall.requests} calls, {overall.matches} matched, {overall.drifts}"
            f" drifted, {overall.errors} failed; mean delta {_pct(overall.mean_delta)}, max delta"
            f" {_pct(overall.max_delta)}, categorical match {_pct(overall.match_share)}"
        )


_COLUMNS = (
    "requests",
    "matches",
    "drifts",
    "errors",
    "mean Δ",
    "max Δ",
    "match",
    "legacy p50/p95/p99 ms",
    "new p50/p95/p99 ms",
    "result",
)


def _cells(report: GroupReport) -> tuple[str, ...]:
    f = report.figures
    failed = [c for c in report.checks if c.status in ("failed", "inconclusive")]
    result = "passed" if not failed else ", ".join(f"{c.name}: {c.status}" for c in failed)
    return (
        str(f.requests),
        str(f.matches),
        str(f.drifts),
        str(f.errors),
        _pct(f.mean_delta),
        _pct(f.max_delta),
        _pct(f.match_share),
        _quantiles(report.latency.get("legacy")),
        _quantiles(report.latency.get("new")),
        result,
    )


def _quantiles(latency: Latency | None) -> str:
    if latency is None:
        return "-"
    return "/".join(_ms(v) for v in (latency.p50, latency.p95, latency.p99))


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.3g}%"


def _value(check: Check) -> str:
    if check.value is None:
        return "-"
    return f"{check.value:.4g} ms" if check.unit == "ms" else _pct(check.value)


def _bound(check: Check) -> str:
    if check.bound is None:
        return "-"
    return f"{check.bound:g} ms" if check.unit == "ms" else _pct(check.bound)


def _status(check: Check, allow: bool) -> str:
    if check.status == "inconclusive":
        return "inconclusive (allowed)" if allow else "inconclusive (fails)"
    return check.status


def _sentence(check: Check) -> str:
    """One line for a check: where, what, the figure, the bound and the evidence."""
    return (
        f"{check.group}: {check.name} {check.status}: {_value(check)} against {_bound(check)}"
        f" ({check.detail})"
    )


def _example(group: DriftGroup) -> str:
    import json

    def short(value: Any) -> str:
        text = json.dumps(_jsonable(value), ensure_ascii=False, default=str)
        return text if len(text) <= 40 else text[:40] + "…"

    return f"{group.path}: {short(group.legacy)} -> {short(group.new)}"


def _markdown_table(header: tuple[str, ...], rows: Iterable[tuple[str, ...]]) -> list[str]:
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return lines


def _finite(value: float | None) -> float | None:
    return value if value is None or math.isfinite(value) else None


def _jsonable(value: Any) -> Any:
    from cutover.telemetry.drift import jsonable

    return None if value is NOTHING else jsonable(value)
