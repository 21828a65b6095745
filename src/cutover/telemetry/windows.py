"""In-process counters and latency histograms per migration and arm, exact under threads.

Each thread counts into its own block: a flat list of the counters of both arms, then one
dict per arm of latency bucket -> count, holding only the buckets that counted something. The
caller's path takes no lock and loses no increment: a block has a single writer. Blocks only
grow; the flusher reads them and turns the growth since its last read into a
:class:`WindowDelta`. Prometheus reads the same cumulative numbers, so the two never disagree.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from cutover.model import Arm
from cutover.telemetry.histogram import Histogram

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
    "gone",
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
gone               (legacy) requests the HTTP proxy answered 410 itself on a route marked
                   ``gone`` once the migration was in new: counted in ``calls`` too (a call
                   on a legacy endpoint), though legacy did not run
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
    GONE,
    EXPOSURES,
) = range(len(COUNTERS))
NC = len(COUNTERS)

# A block: [legacy counters | new counters | legacy buckets (dict) | new buckets (dict)].
LEGACY_BASE = 0
NEW_BASE = NC
COUNTS = 2 * NC
LEGACY_HIST = COUNTS
NEW_HIST = COUNTS + 1

Block = list[Any]
"""One thread's block: ``COUNTS`` integers, then two dicts (latency bucket -> count)."""

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


def new_block() -> Block:
    return [0] * COUNTS + [{}, {}]


Reading = tuple[dict[int, int], dict[int, int], dict[int, int]]
"""What a block held at one read: its nonzero counters (position -> value) and both arms'
buckets."""


def _empty() -> Reading:
    return {}, {}, {}


def _split(reading: Reading) -> dict[Arm, ArmCounts]:
    """Per-arm counts from a reading of a block, or a sum or difference of readings."""
    values = reading[0]
    out = {}
    for arm in ARMS:
        base = counter_offset(arm, 0)
        out[arm] = ArmCounts(
            [values.get(base + counter, 0) for counter in range(NC)],
            Histogram.of_counts(reading[1 if arm is Arm.LEGACY else 2]),
        )
    return out


_POSITIONS = range(COUNTS)


def _read(data: Block) -> Reading:
    """A consistent copy of a block's nonzero counters and its buckets (C-level copies, each
    atomic under the GIL)."""
    counters = data[:COUNTS]
    legacy, new = data[LEGACY_HIST].copy(), data[NEW_HIST].copy()
    return {i: counters[i] for i in itertools.compress(_POSITIONS, counters)}, legacy, new


def _total(reading: Reading) -> int:
    return sum(reading[0].values()) + sum(reading[1].values()) + sum(reading[2].values())


def _add_into(total: Reading, reading: Reading) -> None:
    for mine, theirs in zip(total, reading, strict=True):
        for key, value in theirs.items():
            mine[key] = mine.get(key, 0) + value


def _grown(now: Reading, last: Reading) -> Reading:
    """What a block counted between two readings."""
    out = _empty()
    for into, mine, before in zip(out, now, last, strict=True):
        for key, value in mine.items():
            grown = value - before.get(key, 0)
            if grown:
                into[key] = grown
    return out


class _Block:
    """One thread's counts for one migration, and what the flusher last read of them.

    ``last`` keeps only the nonzero counters and the buckets that counted, and ``seen`` their
    sum: the counts only grow, so an unchanged sum means an unchanged block, and the flusher
    skips it without a copy.
    """

    __slots__ = ("data", "last", "seen", "thread")

    def __init__(self, thread: threading.Thread) -> None:
        self.data = new_block()
        self.last: Reading = _empty()
        self.seen = 0
        self.thread = thread

    def total(self) -> int:
        data = self.data
        return sum(data[:COUNTS]) + sum(data[LEGACY_HIST].values()) + sum(data[NEW_HIST].values())


class MigrationTelemetry:
    """Counting for one migration name: per-thread blocks, deltas for the store, totals."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.local = threading.local()
        self._blocks: list[_Block] = []
        self._retired: Reading = _empty()  # counts of finished threads, already collected
        self._lock = threading.Lock()

    def block(self) -> Block:
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
        delta = _empty()
        finished = []
        for entry in blocks:
            # Liveness first: a thread seen dead cannot count after the reads below.
            alive = entry.thread.is_alive()
            if entry.total() != entry.seen:
                now = _read(entry.data)
                _add_into(delta, _grown(now, entry.last))
                entry.last = now
                entry.seen = _total(now)
            if not alive:
                finished.append(entry)
        if finished:
            with self._lock:
                gone = {id(entry) for entry in finished}
                self._blocks = [entry for entry in self._blocks if id(entry) not in gone]
                for entry in finished:
                    _add_into(self._retired, entry.last)
        return WindowDelta(self.name, _split(delta))

    def totals(self) -> dict[Arm, ArmCounts]:
        """Cumulative counts since the process started (or forked), for Prometheus.

        Retired counts and the live blocks are read under one lock, so a block moving from
        one to the other is counted exactly once and the totals never go backwards.
        """
        with self._lock:
            retired = self._retired
            total: Reading = (dict(retired[0]), dict(retired[1]), dict(retired[2]))
            blocks = list(self._blocks)
        for entry in blocks:
            _add_into(total, _read(entry.data))
        return _split(total)

    def after_fork_in_child(self) -> None:
        """Forget the parent's counts: the parent reports them itself."""
        current = threading.current_thread()
        self._lock = threading.Lock()
        self._retired = _empty()
        keep = []
        for entry in self._blocks:
            if entry.thread is current:
                for position in range(COUNTS):
                    entry.data[position] = 0
                entry.data[LEGACY_HIST].clear()
                entry.data[NEW_HIST].clear()
                entry.last = _empty()
                entry.seen = 0
                keep.append(entry)
        self._blocks = keep


class TelemetrySource(Protocol):
    """The reads of windows the controller, ``cutover stats``/``check``, reports and the
    dashboard make: every :class:`cutover.store.Store` answers them, and so does
    :class:`cutover.telemetry.source.PrometheusTelemetry`."""

    def windows(
        self, name: str, since: float, until: float | None = None, *, histograms: bool = True
    ) -> dict[Arm, ArmCounts]: ...

    def totals(
        self, since: float, until: float | None = None
    ) -> dict[str, dict[Arm, ArmCounts]]: ...

    def series(
        self,
        name: str,
        since: float,
        until: float | None = None,
        *,
        histograms_since: float | None = None,
    ) -> dict[int, dict[Arm, ArmCounts]]: ...

    def windows_of(
        self,
        spans: Mapping[str, tuple[float, float | None]],
        *,
        histograms: Collection[str] = (),
    ) -> dict[str, dict[Arm, ArmCounts]]: ...

    def series_of(
        self, spans: Mapping[str, tuple[float, float | None, float | None]]
    ) -> dict[str, dict[int, dict[Arm, ArmCounts]]]: ...
