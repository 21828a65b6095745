"""In-process counters and latency histograms per migration and arm, exact under threads.

Each thread counts into its own flat list of integers (a block), so the caller's path takes
no lock and loses no increment: a block has a single writer. Blocks only grow; the flusher
reads them and turns the growth since its last read into a :class:`WindowDelta`. Prometheus
reads the same cumulative numbers, so the two never disagree.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from cutover.model import Arm
from cutover.telemetry.histogram import SIZE, Histogram

COUNTERS = (
    "calls",
    "errors",
    "timeouts",
    "offpath",
    "fallbacks",
    "comparisons",
    "drifts",
    "comparator_errors",
    "offpath_dropped",
    "hook_errors",
)
"""What a window counts for each arm.

calls              runs of the arm, serving or off-path
errors             runs that raised
timeouts           runs that exceeded the migration's timeout
offpath            runs off the caller's path (to compare); the others served the caller,
                   except new's runs that failed and fell back
fallbacks          (new) calls where new failed and legacy served instead
comparisons        comparisons completed after this arm ran off-path
drifts             of those, the ones whose outputs differ
comparator_errors  comparisons the comparator could not decide (it raised)
offpath_dropped    off-path runs of this arm skipped because the pool was full
hook_errors        unit extractors, redactors and publishers that raised (caught, counted)
"""

(
    CALLS,
    ERRORS,
    TIMEOUTS,
    OFFPATH,
    FALLBACKS,
    COMPARISONS,
    DRIFTS,
    COMPARATOR_ERRORS,
    DROPPED,
    HOOK_ERRORS,
) = range(len(COUNTERS))
NC = len(COUNTERS)

# Offsets into a block: [legacy counters | new counters | legacy histogram | new histogram].
LEGACY_BASE = 0
NEW_BASE = NC
LEGACY_HIST = 2 * NC
NEW_HIST = 2 * NC + SIZE
BLOCK_SIZE = 2 * NC + 2 * SIZE

ARMS = (Arm.LEGACY, Arm.NEW)


def counter_offset(arm: Arm, counter: int) -> int:
    return (NEW_BASE if arm is Arm.NEW else LEGACY_BASE) + counter


def hist_offset(arm: Arm) -> int:
    return NEW_HIST if arm is Arm.NEW else LEGACY_HIST


@dataclass(slots=True)
class ArmCounts:
    """The counters and latency histogram of one arm over some span."""

    counts: list[int] = field(default_factory=lambda: [0] * NC)
    histogram: Histogram = field(default_factory=Histogram)

    def __getitem__(self, name: str) -> int:
        return self.counts[COUNTERS.index(name)]

    def add(self, other: ArmCounts) -> None:
        for position, value in enumerate(other.counts):
            self.counts[position] += value
        self.histogram.merge(other.histogram)

    @property
    def empty(self) -> bool:
        return not any(self.counts) and self.histogram.count == 0


@dataclass(slots=True)
class WindowDelta:
    """What one migration counted since the previous flush, per arm."""

    migration: str
    arms: dict[Arm, ArmCounts]

    @property
    def empty(self) -> bool:
        return all(counts.empty for counts in self.arms.values())


def _split(block: list[int]) -> dict[Arm, ArmCounts]:
    out = {}
    for arm in ARMS:
        base = counter_offset(arm, 0)
        hist = hist_offset(arm)
        out[arm] = ArmCounts(
            list(block[base : base + NC]),
            Histogram((i, n) for i, n in enumerate(block[hist : hist + SIZE]) if n),
        )
    return out


class _Block:
    __slots__ = ("data", "last", "thread")

    def __init__(self, thread: threading.Thread) -> None:
        self.data = [0] * BLOCK_SIZE
        self.last = [0] * BLOCK_SIZE
        self.thread = thread


class MigrationTelemetry:
    """Counting for one migration object: per-thread blocks, deltas for the store, totals."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.local = threading.local()
        self._blocks: list[_Block] = []
        self._retired = [0] * BLOCK_SIZE  # counts of finished threads, already collected
        self._lock = threading.Lock()

    def block(self) -> list[int]:
        """This thread's block; the caller's path holds on to ``local.b`` after the first call."""
        try:
            return self.local.b  # type: ignore[no-any-return]
        except AttributeError:
            entry = _Block(threading.current_thread())
            with self._lock:
                self._blocks.append(entry)
            self.local.b = entry.data
            return entry.data

    def count(self, arm: Arm, counter: int, amount: int = 1) -> None:
        """Count from off the caller's path (workers, comparators)."""
        self.block()[counter_offset(arm, counter)] += amount

    def observe(self, arm: Arm, ns: int) -> None:
        from cutover.telemetry.histogram import index_of

        block = self.block()
        block[counter_offset(arm, CALLS)] += 1
        block[hist_offset(arm) + index_of(ns)] += 1

    def collect(self) -> WindowDelta:
        """Everything counted since the previous collect, exactly once."""
        delta = [0] * BLOCK_SIZE
        with self._lock:
            keep = []
            for entry in self._blocks:
                now = entry.data.copy()  # one C-level copy: a consistent read under the GIL
                if now != entry.last:
                    for position, (value, before) in enumerate(zip(now, entry.last, strict=True)):
                        if value != before:
                            delta[position] += value - before
                    entry.last = now
                if entry.thread.is_alive():
                    keep.append(entry)
                else:
                    for position, value in enumerate(now):
                        if value:
                            self._retired[position] += value
            self._blocks = keep
        return WindowDelta(self.name, _split(delta))

    def totals(self) -> dict[Arm, ArmCounts]:
        """Cumulative counts since the process started (or forked), for Prometheus."""
        total = self._retired.copy()
        with self._lock:
            blocks = list(self._blocks)
        for entry in blocks:
            for position, value in enumerate(entry.data.copy()):
                if value:
                    total[position] += value
        return _split(total)

    def after_fork_in_child(self) -> None:
        """Forget the parent's counts: the parent reports them itself."""
        current = threading.current_thread()
        self._lock = threading.Lock()
        self._retired = [0] * BLOCK_SIZE
        keep = []
        for entry in self._blocks:
            if entry.thread is current:
                for position in range(BLOCK_SIZE):
                    entry.data[position] = 0
                entry.last = [0] * BLOCK_SIZE
                keep.append(entry)
        self._blocks = keep
