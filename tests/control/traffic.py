"""Synthetic telemetry for controller scenarios: a minute of calls per step of a manual clock,
written to the store the way app instances write it, shaped by the migration's current state."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from cutover.clock import ManualClock
from cutover.model import Arm, Mode, State
from cutover.store import FlushBatch, Store
from cutover.telemetry import windows as w
from cutover.telemetry.histogram import Histogram, index_of
from cutover.telemetry.windows import ArmCounts, WindowDelta

Shape = Callable[[State], float]


@dataclass
class Traffic:
    """``calls`` calls a minute; ``drift`` and ``new_errors`` give rates for the state at hand,
    latencies are lognormal around ``legacy_ms`` and ``new_ms(state)``."""

    store: Store
    name: str
    clock: ManualClock
    calls: int = 2000
    legacy_ms: float = 2.0
    new_ms: Shape = field(default=lambda state: 2.0)
    sigma: float = 0.1
    drift: Shape = field(default=lambda state: 0.0)
    new_errors: Shape = field(default=lambda state: 0.0)
    seed: int = 0
    _seq: int = 0

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)
        self.run = secrets.token_hex(8)

    def minute(self) -> None:
        """One minute of traffic in the current window, then the clock moves a minute on."""
        state = self.store.state(self.name) or State()
        mode, n = state.mode, self.calls
        share = {Mode.LEGACY: 0.0, Mode.NEW: 1.0, Mode.SHADOW: 0.0}.get(mode, state.percent / 100)
        new_serves = int(self.rng.binomial(n, share))
        legacy_serves = n - new_serves
        compares = mode in (Mode.SHADOW, Mode.CANARY)
        new_offpath = int(self.rng.binomial(legacy_serves, state.sample)) if compares else 0
        legacy_offpath = int(self.rng.binomial(new_serves, state.sample)) if compares else 0
        legacy = self._arm(legacy_serves + legacy_offpath, legacy_offpath, self.legacy_ms, 0.0)
        new = self._arm(
            new_serves + new_offpath, new_offpath, self.new_ms(state), self.new_errors(state)
        )
        # A comparison is counted on the arm that ran off the caller's path.
        for counts, runs in ((legacy, legacy_offpath), (new, new_offpath)):
            counts.counts[w.COMPARISONS] = runs
            counts.counts[w.DRIFTS] = int(self.rng.binomial(runs, self.drift(state))) if runs else 0
        now = self.clock()
        self._seq += 1
        batch = FlushBatch(
            "synthetic",
            self._seq,
            now,
            windows=[
                (int(now) // 60 * 60, WindowDelta(self.name, {Arm.LEGACY: legacy, Arm.NEW: new}))
            ],
            run=self.run,
        )
        self.store.write_flush(batch)
        self.clock.advance(60)

    def _arm(self, runs: int, offpath: int, median_ms: float, error_rate: float) -> ArmCounts:
        counts = ArmCounts()
        counts.counts[w.CALLS] = runs
        counts.counts[w.OFFPATH] = offpath
        counts.counts[w.ERRORS] = int(self.rng.binomial(runs, error_rate)) if runs else 0
        if runs:
            latencies = self.rng.lognormal(np.log(median_ms * 1e6), self.sigma, runs)
            indexes, tally = np.unique([index_of(int(x)) for x in latencies], return_counts=True)
            counts.histogram = Histogram(zip(indexes.tolist(), tally.tolist(), strict=True))
        return counts
