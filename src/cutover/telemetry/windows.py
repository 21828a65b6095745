"""In-process counters and latency histograms per migration and arm, exact under threads.

Each thread counts into its own flat list of integers (a block), so the caller's path takes
no lock and loses no increment: a block has a single writer. Blocks only grow; the flusher
reads them and turns the growth since its last read into a :class:`WindowDelta`. Prometheus
reads the same cumulative numbers, so the two never disagree.
"""

from __future__ import annotations

import operator
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
timeouts           runs that exceeded the migration's timeout, counted when it passed
offpath            runs off the caller's path (to compare); the others served the caller,
                   except new's runs that failed and fell back
fallbacks          (new) calls where new failed and legacy served instead
comparisons        comparisons completed after this arm ran off-path
drifts             of those, the ones whose outputs differ
comparator_errors  comparisons the comparator could not decide (it raised)
offpath_dropped    off-path runs of this arm skipped because the pool was full, or because
                   the migration held its share of runs abandoned past their timeout
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

    def collect(self) -> WindowDelta:
        """Everything counted since the previous collect, exactly once.

        Only the flusher calls this. The lock is held just to copy the list of blocks and to
        retire finished ones, so a thread registering its first block never waits for the diff.
        """
        with self._lock:
            blocks = list(self._blocks)
        delta = [0] * BLOCK_SIZE
        finished = []
        for entry in blocks:
            # Liveness first: a thread seen dead cannot count after the copy below.
            alive = entry.thread.is_alive()
            now = entry.data.copy()  # one C-level copy: a consistent read under the GIL
            if now != entry.last:
                delta = list(map(operator.add, delta, map(operator.sub, now, entry.last)))
                entry.last = now
            if not alive:
                finished.append(entry)
        if finished:
            with self._lock:
                gone = {id(entry) for entry in finished}
                self._blocks = [entry for entry in self._blocks if id(entry) not in gone]
                for entry in finished:
                    self._retired = list(map(operator.add, self._retired, entry.last))
        return WindowDelta(self.name, _split(delta))

    def totals(self) -> dict[Arm, ArmCounts]:
        """Cumulative counts since the process started (or forked), for Prometheus.

        Retired counts and the live blocks are read under one lock, so a block moving from
        one to the other is counted exactly once and the totals never go backwards.
        """
        with self._lock:
            total = self._retired.copy()
            blocks = list(self._blocks)
        for entry in blocks:
            total = list(map(operator.add, total, entry.data.copy()))
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
