"""How small a latency ratio a check decides from 10,000 calls per arm, looked at many times.

Simulates ``--runs`` canary steps in which both arms' latencies are lognormal (median 2 ms,
log-spread ``--sigma``) and new's are legacy's times a true ratio. Each run counts ``--calls``
calls per arm into latency histograms and judges a ``p95_ms`` check with ``max_ratio_to:
legacy`` after every ``--every`` calls per arm (20 looks by default), with the very interval
function the controller calls (``cutover.control.checks.quantile_ratio_interval``): a
confidence sequence per arm (``method: sequential``) or order-statistic intervals over
everything counted (``method: fixed``), at 95%, each with the current histograms (64 buckets per
power of two) and with the coarse ones of schema 6 and before (8 per power of two), the same
calls counted both ways.

What it reports, per method and resolution:

- ``false_fail``: true ratio on the bound (1.05), check ``max: 1.05``: the share of runs that
  failed on any look (a false rollback; the goal is at most 1 - confidence = 5%);
- ``false_pass``: true ratio on the bound, the share that passed on any look (a false
  promotion; the same goal);
- ``aa_upper_end_p90``: identical arms, the 90th percentile over runs of the ratio interval's
  upper end after all calls: the smallest ``max`` that identical arms pass by then in 90% of
  runs (the resolution reached);
- ``passes_max_1.05`` / ``passes_max_0.8``: the share of runs passed by the last look with true
  ratio 1.0 against ``max: 1.05`` ("at most 5% slower"), and 0.7 against ``max: 0.8`` ("at
  least 20% faster");
- ``fails_max_1.05``: true ratio 1.15, the share failed by the last look.

    python bench/latency_resolution.py [--runs 200] [--calls 10000] [--every 500]
                                       [--sigma 0.3] [--seed 1]
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from typing import Any

import numpy as np

from _harness import emit
from cutover.control.checks import quantile_ratio_interval
from cutover.control.plan import Method
from cutover.telemetry.histogram import COARSE_BITS, SUB_BITS, Histogram, index_of

CONFIDENCE = 0.95
Q = 0.95
BOUND = 1.05
MEDIAN_NS = 2e6
RESOLUTIONS = {"fine_64": SUB_BITS, "coarse_8": COARSE_BITS}
METHODS = {"sequential": Method.SEQUENTIAL, "fixed": Method.FIXED}


def _indexes(values: np.ndarray, bits: int) -> list[int]:
    return [index_of(int(ns), bits) for ns in values]


def _looks(
    rng: np.random.Generator, ratio: float, calls: int, every: int, sigma: float
) -> dict[str, list[tuple[Histogram, Histogram]]]:
    """Per resolution, (new, legacy) histograms at every look of one run."""
    legacy = rng.lognormal(np.log(MEDIAN_NS), sigma, calls)
    new = rng.lognormal(np.log(MEDIAN_NS), sigma, calls) * ratio
    out: dict[str, list[tuple[Histogram, Histogram]]] = {}
    for name, bits in RESOLUTIONS.items():
        new_index, legacy_index = _indexes(new, bits), _indexes(legacy, bits)
        counted_new, counted_legacy = Counter[int](), Counter[int]()
        looks = []
        for start in range(0, calls, every):
            counted_new.update(new_index[start : start + every])
            counted_legacy.update(legacy_index[start : start + every])
            looks.append(
                (
                    Histogram.of_counts(dict(counted_new), bits),
                    Histogram.of_counts(dict(counted_legacy), bits),
                )
            )
        out[name] = looks
    return out


def _intervals(
    looks: list[tuple[Histogram, Histogram]], method: Method
) -> list[tuple[float, float]]:
    return [quantile_ratio_interval(new, legacy, Q, CONFIDENCE, method) for new, legacy in looks]


def run(runs: int, calls: int, every: int, sigma: float, seed: int = 1) -> dict[str, Any]:
    began = time.perf_counter()
    rng = np.random.default_rng(seed)
    scenarios = {"aa": 1.0, "bound": BOUND, "slower": 1.15, "faster": 0.7}
    # [resolution][method][scenario] -> one list of intervals per run
    found: dict[str, dict[str, dict[str, list[list[tuple[float, float]]]]]] = {
        r: {m: {s: [] for s in scenarios} for m in METHODS} for r in RESOLUTIONS
    }
    for _ in range(runs):
        for scenario, ratio in scenarios.items():
            for resolution, looks in _looks(rng, ratio, calls, every, sigma).items():
                for method_name, method in METHODS.items():
                    found[resolution][method_name][scenario].append(_intervals(looks, method))
    results: dict[str, Any] = {}
    for resolution, methods in found.items():
        for method_name, by in methods.items():
            at_bound = by["bound"]
            aa_last = [intervals[-1] for intervals in by["aa"]]
            results[f"{method_name}_{resolution}"] = {
                "false_fail": _share(any(low > BOUND for low, _ in run) for run in at_bound),
                "false_pass": _share(any(high <= BOUND for _, high in run) for run in at_bound),
                "aa_upper_end_p90": round(float(np.quantile([h for _, h in aa_last], 0.9)), 4),
                "aa_interval_median": [
                    round(float(np.median([low for low, _ in aa_last])), 4),
                    round(float(np.median([high for _, high in aa_last])), 4),
                ],
                "passes_max_1.05": _share(run[-1][1] <= BOUND for run in by["aa"]),
                "fails_max_1.05": _share(run[-1][0] > BOUND for run in by["slower"]),
                "passes_max_0.8": _share(run[-1][1] <= 0.8 for run in by["faster"]),
            }
    return {
        "runs": runs,
        "calls_per_arm": calls,
        "looks": -(-calls // every),
        "sigma": sigma,
        "quantile": Q,
        "confidence": CONFIDENCE,
        "results": results,
        "seconds": round(time.perf_counter() - began, 1),
    }


def _share(flags: Any) -> float:
    values = list(flags)
    return round(sum(values) / len(values), 4)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--calls", type=int, default=10_000)
    parser.add_argument("--every", type=int, default=500)
    parser.add_argument("--sigma", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    emit("latency_resolution", run(args.runs, args.calls, args.every, args.sigma, args.seed))


if __name__ == "__main__":
    main()
