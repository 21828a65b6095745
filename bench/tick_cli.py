"""`cutover rollout tick` as cron runs it: a whole process, started, judging one rollout, ended.

A SQLite store holds one rollout in its canary step with half an hour of per-minute windows
(2,000 calls a minute, comparisons, latency histograms), judged by controller_tick.py's checks
(drift, two error rates, a p99 ratio with its rank test), all on the default (always-valid)
methods.
Each run is ``python -m cutover --store URL rollout tick --dry-run`` in a process of its own:
start-up, imports, the pass, exit. With ``--anchor-src DIR`` (an earlier cutover's source tree,
``git archive COMMIT src | tar -x -C DIR``), runs of that tree alternate with runs of this one
on the same store: both medians, the ratio, whether both would take the same decisions on
the same checks' outcomes, and which SciPy modules each loaded. The step's hold has passed, so
a run would promote: every check is judged.

    python bench/tick_cli.py [--anchor-src DIR/src] [--runs 7]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from _harness import emit
from controller_tick import CHECKS
from cutover.clock import ManualClock
from cutover.control.controller import Controller
from cutover.control.plan import parse_plan
from cutover.model import Arm
from cutover.store import FlushBatch, open_store
from cutover.telemetry import windows as w
from cutover.telemetry.histogram import Histogram, index_of
from cutover.telemetry.windows import ArmCounts, WindowDelta

HERE = Path(__file__).resolve().parent
PLAN = {
    "migration": "codec",
    "steps": [{"mode": "canary", "percent": 25, "hold": "20m", "sample": 0.5}, {"mode": "new"}],
    "checks": CHECKS,  # controller_tick.py's
}


def arm(rng: np.random.Generator, runs: int, offpath: int) -> ArmCounts:
    counts = ArmCounts()
    counts.counts[w.CALLS] = runs
    counts.counts[w.OFFPATH] = counts.counts[w.COMPARISONS] = offpath
    latencies = rng.lognormal(np.log(2e6), 0.1, runs)
    indexes, tally = np.unique([index_of(int(x)) for x in latencies], return_counts=True)
    counts.histogram = Histogram(zip(indexes.tolist(), tally.tolist(), strict=True))
    return counts


def build(url: str, minutes: int) -> None:
    """The rollout started ``minutes`` ago, with a minute of windows for each since."""
    now = time.time()
    store = open_store(url)
    controller = Controller(store, clock=ManualClock(now - minutes * 60))
    controller.start(parse_plan(PLAN), actor="bench")
    rng = np.random.default_rng(0)
    for minute in range(minutes):
        at = now - (minutes - minute) * 60
        arms = {Arm.LEGACY: arm(rng, 1750, 125), Arm.NEW: arm(rng, 750, 250)}
        batch = FlushBatch("bench", minute + 1, at, run="tick-cli")
        batch.add_window(int(at) // 60 * 60, WindowDelta("codec", arms))
        store.write_flush(batch)
    store.close()


def tick(url: str, src: Path | None, importtime: bool = False) -> tuple[float, str, str]:
    """One cron run: its seconds, the decisions it would take with each check's outcome, and
    what it wrote to stderr. (The values judged move with the clock as a window slides over
    the minutes, so runs a minute apart may differ in the last digits, not in the outcome.)"""
    env = {**os.environ, "CUTOVER_ACTOR": "cron"}
    if src is not None:
        env["PYTHONPATH"] = str(src)
    argv = [sys.executable, *(["-X", "importtime"] if importtime else [])]
    argv += ["-m", "cutover", "--store", url, "rollout", "tick", "--dry-run", "--json"]
    began = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=env, check=True, timeout=120)
    took = time.perf_counter() - began
    decisions = [
        f"{d['kind']}: " + ", ".join(f"{c['name']} {c['outcome']}" for c in d["evidence"]["checks"])
        for d in json.loads(done.stdout)["decisions"]
    ]
    return took, "; ".join(decisions), done.stderr


def scipy_loaded(url: str, src: Path | None) -> list[str]:
    _, _, stderr = tick(url, src, importtime=True)
    modules = {line.rsplit("|", 1)[-1].strip() for line in stderr.splitlines() if "|" in line}
    return sorted(m for m in ("scipy.special", "scipy.stats") if m in modules)


def run(anchor_src: Path | None = None, runs: int = 7, minutes: int = 30) -> dict[str, Any]:
    this = HERE.parent / "src"
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{Path(folder) / 'cron.db'}"
        build(url, minutes)
        trees = {"this": this, **({"anchor": anchor_src} if anchor_src else {})}
        for src in trees.values():
            tick(url, src)  # warm: bytecode written, files in the page cache
        seconds: dict[str, list[float]] = {name: [] for name in trees}
        printed: dict[str, set[str]] = {name: set() for name in trees}
        for _ in range(runs):
            for name, src in trees.items():
                took, decided, _ = tick(url, src)
                seconds[name].append(took)
                printed[name].add(decided)
        results: dict[str, Any] = {"runs": runs, "minutes_of_windows": minutes}
        for name, src in trees.items():
            results[name] = {
                "median_s": round(statistics.median(seconds[name]), 3),
                "runs_s": [round(s, 3) for s in sorted(seconds[name])],
                "scipy_loaded": scipy_loaded(url, src),
                "decided": sorted(printed[name]),
            }
    if anchor_src:
        results["anchor_over_this"] = round(
            results["anchor"]["median_s"] / results["this"]["median_s"], 2
        )
        results["same_decisions"] = printed["this"] == printed["anchor"]
    return emit("tick_cli", results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--anchor-src", type=Path, help="an earlier cutover's src folder")
    parser.add_argument("--runs", type=int, default=7, help="runs of each, alternating")
    parser.add_argument("--minutes", type=int, default=30)
    args = parser.parse_args()
    run(args.anchor_src, args.runs, args.minutes)


if __name__ == "__main__":
    main()
