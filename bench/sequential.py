"""False rollbacks and detection time of rate checks read on every pass: fixed versus sequential.

Simulates ``--runs`` rollouts of one canary step held for ``--days`` days, with a controller pass
every ``--interval`` seconds; both arms run on every call (a canary with ``sample: 1.0``), with
``--calls`` calls per arm per pass and legacy's error rate ``--rate``. Two checks are judged on
every pass, each with both methods on the same simulated telemetry:

- ``ratio``: ``error_rate``, ``max_ratio_to: legacy``, ``max: 1`` ("new errs no more than
  legacy");
- ``absolute``: ``error_rate``, ``max:`` legacy's rate;
- ``ratio_1.5``: as ``ratio`` with ``max: 1.5``, a margin a team would more likely write.

In the A/A runs new errs exactly as legacy does, so the first two checks' truth sits on their
bound: the case where looking often does the most harm, and the one a bound on false rollbacks
must cover. The third shows the harm with a margin.
A run counts as a false rollback when the check fails on any pass of the step. In the
regression runs new's error rate is twice legacy's from the step's start; what is measured is
the time to the first failing pass (the rollback).

``fixed`` judges the last 5 minutes (the default window) with the fixed-sample interval;
``sequential`` judges everything since the step began with the confidence sequence
(docs/rollouts.md, "Sequential and fixed"). Both at 95%.

The decisions for all runs come from the real interval functions (the sequences from
``cutover.control.sequential.rate_bounds``, which takes arrays; the fixed intervals from the same
formulas vectorised with SciPy); every decision of a validating subset (``--validate`` runs, at
every tenth pass) is also taken by ``cutover.control.checks.evaluate`` itself, the function
the controller calls, and the two must agree.

    python bench/sequential.py [--runs 1000] [--days 3] [--interval 10] [--calls 100]
                               [--rate 0.01] [--validate 10] [--seed 1]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import stats

from _harness import emit
from cutover.control.checks import RATIO_CENTRE, Outcome, Telemetry, evaluate
from cutover.control.plan import Plan, parse_plan
from cutover.control.sequential import rate_bounds
from cutover.model import Arm, Mode
from cutover.telemetry import windows as w
from cutover.telemetry.windows import ArmCounts

CONFIDENCE = 0.95
WINDOW = 300.0  # the fixed check's window: the default 5m
CHECKS = {"ratio": 1.0, "ratio_1.5": 1.5, "absolute": None}
"""Each check's max: a ratio of new's error rate to legacy's, or (None) legacy's rate itself."""
METHODS = ("fixed", "sequential")
CHUNK = 100  # runs simulated at once
BLOCK = 720  # passes judged at once: enough to vectorise, small enough to drop decided runs


@dataclass(frozen=True)
class Setup:
    runs: int
    passes: int
    interval: float
    calls: int
    rate: float

    @property
    def window_passes(self) -> int:
        return max(1, round(WINDOW / self.interval))


def plans(rate: float) -> dict[tuple[str, str], Plan]:
    """The plan each (check, method) is judged under, for the validating subset."""
    rules = {
        check: {"metric": "error_rate", "max": rate}
        if ratio is None
        else {"metric": "error_rate", "max_ratio_to": "legacy", "max": ratio}
        for check, ratio in CHECKS.items()
    }
    return {
        (check, method): parse_plan(
            {
                "migration": "bench",
                "steps": [{"mode": "canary", "percent": 50, "sample": 1.0}],
                "method": method,
                "confidence": CONFIDENCE,
                "checks": [{"name": check, "window": "5m", **rules[check]}],
            }
        )
        for check in CHECKS
        for method in METHODS
    }


def fails(
    check: str,
    method: str,
    new: NDArray[np.int64],
    legacy: NDArray[np.int64],
    trials: NDArray[np.int64],
    rate: float,
) -> NDArray[np.bool_]:
    """Whether the check fails, elementwise, on (errors on new, errors on legacy, calls per arm)."""
    out = np.zeros(new.shape, dtype=bool)
    ratio = CHECKS[check]
    if ratio is None:
        candidates = new > rate * trials  # a failure needs the estimate beyond the bound
        e, n = new[candidates], trials[candidates]
        if method == "sequential":
            low, _ = rate_bounds(e, n, CONFIDENCE, rate, ends="low")
        else:
            low = stats.beta.ppf((1 - CONFIDENCE) / 2, e, n - e + 1)
        out[candidates] = low > rate
        return out
    candidates = new > ratio * legacy  # the estimate of the ratio is above its max
    a, b, n = new[candidates], legacy[candidates], trials[candidates]
    if method == "sequential":
        each = 1 - (1 - CONFIDENCE) / 2
        low, _ = rate_bounds(a, n, each, RATIO_CENTRE, ends="low")
        _, high = rate_bounds(b, n, each, RATIO_CENTRE, ends="high")
        out[candidates] = low / high > ratio
        return out
    # Katz's log interval with the Haldane-Anscombe correction, as statistics.ratio_interval.
    a, b, na, nb = a.astype(float), b.astype(float), n.astype(float), n.astype(float)
    empty = (a == 0) | (b == 0)
    a, b = np.where(empty, a + 0.5, a), np.where(empty, b + 0.5, b)
    na, nb = np.where(empty, na + 1, na), np.where(empty, nb + 1, nb)
    z = stats.norm.ppf(0.5 + CONFIDENCE / 2)
    se = np.sqrt(np.maximum(0.0, 1 / a - 1 / na + 1 / b - 1 / nb))
    out[candidates] = np.exp(np.log((a / na) / (b / nb)) - z * se) > ratio
    return out


def simulate(
    setup: Setup, factor: float, rng: np.random.Generator
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Errors per pass on new and on legacy, shape (runs, passes)."""
    shape = (setup.runs, setup.passes)
    new = rng.binomial(setup.calls, min(1.0, setup.rate * factor), size=shape)
    legacy = rng.binomial(setup.calls, setup.rate, size=shape)
    return new.astype(np.int32), legacy.astype(np.int32)


def blocks(passes: int) -> Iterator[slice]:
    for start in range(0, passes, BLOCK):
        yield slice(start, min(passes, start + BLOCK))


def first_failures(
    setup: Setup, check: str, method: str, new: NDArray[np.int64], legacy: NDArray[np.int64]
) -> NDArray[np.int64]:
    """The pass (from 1) of each run's first failure, or 0 when the check never failed."""
    cum_new = np.cumsum(new, axis=1)
    cum_legacy = np.cumsum(legacy, axis=1)
    k = setup.window_passes
    first = np.zeros(setup.runs, dtype=np.int64)
    alive = np.arange(setup.runs)
    for span in blocks(setup.passes):
        looks = np.arange(span.start, span.stop)  # pass index from 0: data of passes 0..look
        cn, cl = cum_new[np.ix_(alive, looks)], cum_legacy[np.ix_(alive, looks)]
        if method == "sequential":
            trials = np.broadcast_to((looks + 1) * setup.calls, cn.shape)
            a, b = cn, cl
        else:
            start = looks - k  # the window holds the last k passes (fewer at the start)
            before = np.where(start >= 0, start, 0)
            has = start >= 0
            a = cn - np.where(has, cum_new[np.ix_(alive, before)], 0)
            b = cl - np.where(has, cum_legacy[np.ix_(alive, before)], 0)
            trials = np.broadcast_to(np.minimum(looks + 1, k) * setup.calls, cn.shape)
        failed = fails(check, method, a, b, np.ascontiguousarray(trials), setup.rate)
        hit = failed.any(axis=1)
        first[alive[hit]] = span.start + failed[hit].argmax(axis=1) + 1
        alive = alive[~hit]
        if alive.size == 0:
            break
    return first


def validate(
    setup: Setup,
    new: NDArray[np.int64],
    legacy: NDArray[np.int64],
    runs: int,
    computed: dict[tuple[str, str], NDArray[np.int64]],
) -> dict[str, int]:
    """Judge every tenth pass of the first ``runs`` runs with checks.evaluate, through the
    controller's Telemetry, and compare with the vectorised decisions."""
    judged = disagreements = 0
    k = setup.window_passes
    for (check, method), plan in plans(setup.rate).items():
        first = computed[(check, method)]
        for run in range(min(runs, setup.runs)):
            last = first[run] - 1 if first[run] else setup.passes - 1
            for look in [*range(0, last, 10), last]:
                now = (look + 1) * setup.interval
                if method == "sequential":
                    series = {0: _arms(new[run, : look + 1], legacy[run, : look + 1], setup)}
                else:
                    series = {
                        int(p * setup.interval): _arms(
                            new[run, p : p + 1], legacy[run, p : p + 1], setup
                        )
                        for p in range(max(0, look + 1 - k), look + 1)
                    }
                result = evaluate(
                    plan.checks[0],
                    plan,
                    Mode.CANARY,
                    Telemetry(series),
                    now=now,
                    step_started_at=0.0,
                )
                judged += 1
                # Only the pass of the first failure may fail (the last one judged).
                disagreements += int((result.outcome is Outcome.FAIL) != (look == first[run] - 1))
    return {"decisions_judged": judged, "disagreements": disagreements}


def _arms(new: NDArray[np.int64], legacy: NDArray[np.int64], setup: Setup) -> dict[Arm, ArmCounts]:
    """Both arms' counts over some passes, as the store would sum them."""
    arms = {}
    for arm, errors in ((Arm.NEW, new), (Arm.LEGACY, legacy)):
        counts = ArmCounts()
        counts.counts[w.CALLS] = setup.calls * len(errors)
        counts.counts[w.ERRORS] = int(errors.sum())
        arms[arm] = counts
    return arms


def run(
    runs: int = 1000,
    days: float = 3.0,
    interval: float = 10.0,
    calls: int = 100,
    rate: float = 0.01,
    validate_runs: int = 10,
    seed: int = 1,
) -> dict[str, Any]:
    setup = Setup(runs, round(days * 86400 / interval), interval, calls, rate)
    rng = np.random.default_rng(seed)
    results: dict[str, Any] = {
        "setup": {
            "runs": runs,
            "days": days,
            "passes_per_run": setup.passes,
            "pass_interval_s": interval,
            "calls_per_arm_per_pass": calls,
            "legacy_error_rate": rate,
            "confidence": CONFIDENCE,
            "fixed_window_s": WINDOW,
            "checks": {
                check: f"error_rate of new, max {rate:g}"
                if ratio is None
                else f"error_rate new/legacy, max {ratio:g}"
                for check, ratio in CHECKS.items()
            },
        }
    }
    began = time.perf_counter()
    validation: dict[str, dict[str, int]] = {}
    for scenario, factor in (("a_a", 1.0), ("regression_2x", 2.0)):
        parts: dict[tuple[str, str], list[NDArray[np.int64]]] = {}
        for chunk in range(0, runs, CHUNK):  # a chunk of runs at a time bounds the memory
            part = Setup(min(CHUNK, runs - chunk), setup.passes, interval, calls, rate)
            new, legacy = simulate(part, factor, rng)
            computed = {
                (check, method): first_failures(part, check, method, new, legacy)
                for check in CHECKS
                for method in METHODS
            }
            if chunk == 0:
                validation[scenario] = validate(part, new, legacy, validate_runs, computed)
            for key, first in computed.items():
                parts.setdefault(key, []).append(first)
        for (check, method), pieces in parts.items():
            first = np.concatenate(pieces)
            caught = first[first > 0] * interval
            entry: dict[str, Any] = {"rollback_share": round(float((first > 0).mean()), 4)}
            if scenario == "regression_2x" and caught.size:
                entry.update(
                    {
                        "minutes_to_rollback_median": round(float(np.median(caught)) / 60, 1),
                        "minutes_to_rollback_p90": round(float(np.quantile(caught, 0.9)) / 60, 1),
                    }
                )
            if scenario == "a_a" and caught.size:
                entry["hours_to_false_rollback_median"] = round(float(np.median(caught)) / 3600, 2)
            results.setdefault(scenario, {}).setdefault(check, {})[method] = entry
    results["validation"] = validation
    results["seconds"] = round(time.perf_counter() - began, 1)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--days", type=float, default=3.0)
    parser.add_argument("--interval", type=float, default=10.0)
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--rate", type=float, default=0.01)
    parser.add_argument("--validate", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1)
    a = parser.parse_args()
    emit(
        "sequential",
        run(a.runs, a.days, a.interval, a.calls, a.rate, a.validate, a.seed),
    )


if __name__ == "__main__":
    main()
