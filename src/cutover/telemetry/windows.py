"""In-process counters and latency histograms per migration and arm, exact under threads.

Each thread counts into its own flat list of integers (a block), so the caller's path takes
no lock and loses no increment: a block has a single writer. Blocks only grow; the flusher
reads them and turns the growth since its last read into a :class:`WindowDelta`. Prometheus
reads the same cumulative numbers, so the two never disagree.
"""

from __future__ import annotations

import itertools
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
    "expected",
    "exposures",
)
"""What a window counts for each arm.

calls              runs of the arm, serving or off-path
errors             runs that raised an exception the migration does not expect
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
expected           runs that raised an exception the migration expects (bad input answered
                   with an error): compared like values, never counted as errors or fallen
                   back from
exposures          flag evaluations that chose this arm: ``cutover.choose``, the OpenFeature
                   provider and OFREP (code that branches itself; no run is implied)
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
    EXPECTED,
    EXPOSURES,
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


def _split(values: dict[int, int]) -> dict[Arm, ArmCounts]:
    """Per-arm counts from the nonzero positions of a block (position -> value)."""
    out = {}
    for arm in ARMS:
        base = counter_offset(arm, 0)
        hist = hist_offset(arm)
        out[arm] = ArmCounts(
            [values.get(base + counter, 0) for counter in range(NC)],
            Histogram.of_counts(
                {i - hist: n for i, n in values.items() if hist <= i < hist + SIZE}
            ),
        )
    return out


_POSITIONS = range(BLOCK_SIZE)


def _nonzero(data: list[int]) -> dict[int, int]:
    """The nonzero positions of a block and their values (a block is mostly zeros)."""
    return {i: data[i] for i in itertools.compress(_POSITIONS, data)}


class _Block:
    """One thread's counts for one migration, and what the flusher last read of them.

    ``last`` keeps only the nonzero positions, and ``seen`` their sum: the counts only grow, so
    an unchanged sum means an unchanged block, and the flusher skips it without a copy.
    """

    __slots__ = ("data", "last", "seen", "thread")

    def __init__(self, thread: threading.Thread) -> None:
        self.data = [0] * BLOCK_SIZE
        self.last: dict[int, int] = {}
        self.seen = 0
        self.thread = thread


class MigrationTelemetry:
    """Counting for one migration name: per-thread blocks, deltas for the store, totals."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.local = threading.local()
        self._blocks: list[_Block] = []
        self._retired: dict[int, int] = {}  # counts of finished threads, already collected
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
        delta: dict[int, int] = {}
        finished = []
        for entry in blocks:
            # Liveness first: a thread seen dead cannot count after the reads below.
            alive = entry.thread.is_alive()
            if sum(entry.data) != entry.seen:
                now = _nonzero(entry.data.copy())  # a C-level copy: a consistent read
                last = entry.last
                for position, value in now.items():
                    grown = value - last.get(position, 0)
                    if grown:
                        delta[position] = delta.get(position, 0) + grown
                entry.last = now
                entry.seen = sum(now.values())
            if not alive:
                finished.append(entry)
        if finished:
            with self._lock:
                gone = {id(entry) for entry in finished}
                self._blocks = [entry for entry in self._blocks if id(entry) not in gone]
                retired = self._retired
                for entry in finished:
                    for position, value in entry.last.items():
                        retired[position] = retired.get(position, 0) + value
        return WindowDelta(self.name, _split(delta))

    def totals(self) -> dict[Arm, ArmCounts]:
        """Cumulative counts since the process started (or forked), for Prometheus.

        Retired counts and the live blocks are read under one lock, so a block moving from
        one to the other is counted exactly once and the totals never go backwards.
        """
        with self._lock:
            total = dict(self._retired)
            blocks = list(self._blocks)
        for entry in blocks:
            for position, value in _nonzero(entry.data.copy()).items():
                total[position] = total.get(position, 0) + value
        return _split(total)

    def after_fork_in_child(self) -> None:
        """Forget the parent's counts: the parent reports them itself."""
        current = threading.current_thread()
        self._lock = threading.Lock()
        self._retired = {}
        keep = []
        for entry in self._blocks:
            if entry.thread is current:
                for position in range(BLOCK_SIZE):
                    entry.data[position] = 0
                entry.last = {}
                entry.seen = 0
                keep.append(entry)
        self._blocks = keep
