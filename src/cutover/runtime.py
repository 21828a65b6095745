"""The one configured runtime: store, clock, cached states, off-path pool, flushing, fork safety.

``cutover.configure()`` replaces it; everything else reads it through :func:`current`.
Background threads keep it going: one refreshes the cached states (so the caller's path never
waits for the store, and a slow write never delays a rollback), one flushes telemetry, and on
PostgreSQL one listens for change notifications. They survive any error and are re-created in
a forked child.
"""

from __future__ import annotations

import atexit
import collections
import itertools
import logging
import multiprocessing
import multiprocessing.util
import os
import secrets
import signal
import socket
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from cutover._version import __version__
from cutover.clock import Clock, configured_clock
from cutover.errors import InvalidInput, StoreError
from cutover.model import State
from cutover.offpath import TaskTracker, WorkerPool
from cutover.routing import override_variable
from cutover.store import (
    DEFAULT_STORE,
    FlushBatch,
    InstanceInfo,
    Store,
    normalize_url,
    open_store,
    redact_url,
)
from cutover.telemetry.drift import DriftSample, DriftSampler, Redactor
from cutover.telemetry.events import EventLog
from cutover.telemetry.windows import MigrationTelemetry

if TYPE_CHECKING:
    from cutover.migration import Migration

log = logging.getLogger("cutover")


class Settings(BaseModel):
    """Everything ``cutover.configure()`` accepts, validated."""

    # The store URL may hold a password: errors never quote it, the repr leaves it out.
    model_config = ConfigDict(
        arbitrary_types_allowed=True, extra="forbid", frozen=True, hide_input_in_errors=True
    )

    store: str = Field(
        default_factory=lambda: os.environ.get("CUTOVER_STORE") or DEFAULT_STORE, repr=False
    )
    clock: Clock = Field(default_factory=configured_clock)  # $CUTOVER_CLOCK, else the system's
    refresh_interval: float = Field(1.0, gt=0, description="seconds between state refreshes")
    flush_interval: float = Field(5.0, gt=0, description="seconds between telemetry flushes")
    window_seconds: int = Field(60, ge=1, le=3600, description="span of one stored window")
    wait: float = Field(1.0, ge=0, description="seconds configure() waits for the first states")
    offpath_workers: int = Field(4, ge=1, le=256)
    offpath_queue: int = Field(1000, ge=1)
    offpath_tasks: int = Field(1000, ge=1, description="async off-path tasks in flight at most")
    serving_workers: int = Field(8, ge=1, le=256, description="threads that bound sync timeouts")
    abandoned_per_migration: int = Field(
        4,
        ge=1,
        le=1000,
        description="runs past their timeout one migration may leave running in a pool (threads"
        " cannot be stopped) or as tasks ignoring cancellation; past that its runs are refused",
    )
    abandoned_total: int = Field(
        64,
        ge=0,
        le=10_000,
        description="abandoned threads (or tasks) each pool replaces in all; past that a run"
        " past its timeout keeps its worker until it returns",
    )
    drift_samples_per_minute: int = Field(10, ge=0)
    drift_sample_chars: int = Field(8192, ge=256)
    redact: Redactor | None = None
    events: str | None = Field(default_factory=lambda: os.environ.get("CUTOVER_EVENTS") or None)
    buffer_limit: int = Field(
        1440, ge=1, description="window slots kept in memory while the store is away"
    )
    prometheus: bool = True
    telemetry_url: str | None = Field(
        default_factory=lambda: os.environ.get("CUTOVER_TELEMETRY_URL") or None,
        description="a Prometheus server scraping every instance: windows stay in /metrics,"
        " only states, decisions, drift samples and heartbeats go to the store",
    )
    instance: str | None = Field(None, min_length=1, max_length=100)

    @field_validator("store")
    @classmethod
    def _store_url(cls, value: str) -> str:
        normalize_url(value)  # raises InvalidInput with the fix
        return value

    @field_validator("telemetry_url")
    @classmethod
    def _telemetry_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        from cutover.telemetry.source import telemetry_url

        return telemetry_url(value)  # raises InvalidInput with the fix


@dataclass(frozen=True, slots=True)
class StoreHealth:
    """What the runtime knows about its store right now."""

    url: str
    reachable: bool | None  # reads work (refreshing states); None until the first attempt
    writable: bool | None  # writes work (flushing telemetry); None until the first attempt
    states_loaded_at: float | None  # clock time of the last successful refresh
    last_error: str | None
    buffered_windows: int  # window slots waiting for the store
    dropped_windows: int  # window entries lost because the store was away too long
    rejected_flushes: int
    listening: bool  # a LISTEN connection is up (PostgreSQL)


def _instance_name(configured: str | None) -> str:
    """How this process names itself: the configured name and its pid (every worker of a
    pre-forking server configured alike is still an instance of its own), else
    host:pid:random. Called again in a forked child."""
    if configured:
        return f"{configured}:{os.getpid()}"
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


# Every Migration declared in this process, whatever runtime it is attached to, so that
# configure() after shutdown() (or a fork) finds them all.
_declared: weakref.WeakSet[Migration] = weakref.WeakSet()
_declared_lock = threading.Lock()  # a WeakSet cannot be iterated while another thread adds


def declared() -> list[Migration]:
    """Every migration declared in this process and still alive."""
    with _declared_lock:
        return list(_declared)


# Called with the names whose stored state changed, after a refresh that saw any change (on
# PostgreSQL as soon as NOTIFY arrives); like the migrations, they outlive a configure().
_watchers: list[Callable[[list[str]], Any]] = []


def watch(callback: Callable[[list[str]], Any]) -> None:
    """Call ``callback(names)`` from the refresh thread whenever stored states change."""
    _watchers.append(callback)


def unwatch(callback: Callable[[list[str]], Any]) -> None:
    if callback in _watchers:
        _watchers.remove(callback)


class _Limited:
    """Logs an error at most once a minute per key, so a broken hook cannot flood the log."""

    KEEP = 1024
    """Keys remembered before those older than a minute (which no longer hold anything back)
    are forgotten: keys name migrations, and migrations come and go."""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}

    def error(self, key: str, message: str, *args: Any, exc_info: Any = None) -> None:
        now = time.monotonic()
        if now - self._last.get(key, -1e9) >= 60:
            if len(self._last) >= self.KEEP:
                self._last = {k: at for k, at in self._last.items() if now - at < 60}
            self._last[key] = now
            log.error(message, *args, exc_info=exc_info)


limited = _Limited()

MERGE_STARTS = 60
"""Window slots one buffered batch may hold before a new one starts (an hour of minutes)."""


class Runtime:
    """Owns the store connection, the cached states, the pools and the background threads."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.clock: Clock = settings.clock
        self.store: Store = open_store(
            settings.store,
            telemetry_url=settings.telemetry_url,
            window_seconds=settings.window_seconds,
        )
        self.instance = _instance_name(settings.instance)
        limits = {
            "lane_limit": settings.abandoned_per_migration,
            "abandoned_limit": settings.abandoned_total,
        }
        self.pool = WorkerPool(settings.offpath_workers, settings.offpath_queue, **limits)
        self.serving_pool = WorkerPool(
            settings.serving_workers, settings.serving_workers, name="cutover-serving", **limits
        )
        self.tasks = TaskTracker(settings.offpath_tasks, **limits)
        self.events = EventLog(settings.events) if settings.events else None
        self.telemetry: dict[str, MigrationTelemetry] = {}
        self.states: dict[str, State] = {}  # the snapshot, replaced whole, never mutated
        self._samples: collections.deque[DriftSample] = collections.deque(maxlen=10_000)
        self._pending: collections.deque[FlushBatch] = collections.deque()
        self._registry_lock = threading.Lock()
        self._closed = False
        self._fresh_process()

    def _fresh_process(self) -> None:
        """Everything that belongs to one process: reset at start and in a forked child."""
        settings = self.settings
        self.started_at = self.clock()
        self.run = secrets.token_hex(8)  # makes flush keys unique even if instance names repeat
        self._seq = itertools.count(1)
        self.sampler = DriftSampler(
            settings.drift_samples_per_minute, settings.drift_sample_chars, settings.redact
        )
        self._flush_lock = threading.Lock()
        self._flushing: int | None = None  # the thread flushing now
        self._terminate_after_flush = False
        self._start_lock = threading.Lock()
        self._stop = threading.Event()
        self._refresh_now = threading.Event()  # set by LISTEN/NOTIFY: refresh without waiting
        self._listening = False
        self._dropped_windows = 0
        self._dropped_samples = 0
        self._loaded = threading.Event()
        self._threads: dict[str, threading.Thread] = {}
        self._reachable: bool | None = None  # reads (refreshing states)
        self._writable: bool | None = None  # writes (flushing telemetry)
        self._last_error: str | None = None
        self._store_errors = 0
        self._rejected_flushes = 0
        self._loaded_at: float | None = None
        self._refresh_lock = threading.Lock()
        self._refresh_tickets = itertools.count(1)
        self._refresh_applied = 0
        # Reports to the store (heartbeats) start with the first counts: a pre-forking master
        # that only imported the app serves nothing and is not listed as an instance.
        self._served = False

    # -- registration and routing --------------------------------------------------------

    def register(self, migration: Migration) -> MigrationTelemetry:
        """Give ``migration`` its telemetry here; route it by this runtime's states once loaded."""
        with self._registry_lock:
            telemetry = self.telemetry.get(migration.name)
            if telemetry is None:
                telemetry = self.telemetry[migration.name] = MigrationTelemetry(migration.name)
        if self._loaded_at is not None:
            migration._apply(self.states.get(migration.name))
        self.ensure_started()
        return telemetry

    @property
    def migrations(self) -> list[Migration]:
        # A migration being built is declared a moment before it is attached: skip it.
        return [m for m in declared() if getattr(m, "_runtime", None) is self]

    # -- background work -----------------------------------------------------------------

    def ensure_started(self) -> None:
        """Start the background threads that are not running (all of them the first time)."""
        threads = self._threads
        if threads and all(thread.is_alive() for thread in threads.values()):
            return
        with self._start_lock:
            flush_every = self.settings.flush_interval
            wanted: dict[str, Callable[[], threading.Thread]] = {
                "cutover-refresh": lambda: self._spawn(
                    "cutover-refresh",
                    self.refresh,
                    self.settings.refresh_interval,
                    wake=self._refresh_now,
                ),
                # A fresh process has nothing to flush: the first flush waits one interval.
                "cutover-flush": lambda: self._spawn(
                    "cutover-flush", self._background_flush, flush_every, flush_every
                ),
            }
            if getattr(self.store, "notifies", False):
                wanted["cutover-listen"] = self._start_listener
            for name, start in wanted.items():
                thread = self._threads.get(name)
                if thread is None or not thread.is_alive():
                    self._threads[name] = start()

    def _start_listener(self) -> threading.Thread:
        listener = threading.Thread(
            target=self.store.listen,  # type: ignore[attr-defined]
            args=(self._refresh_now.set, self._stop, self._set_listening),
            name="cutover-listen",
            daemon=True,
        )
        listener.start()
        return listener

    def _set_listening(self, up: bool) -> None:
        self._listening = up

    def _spawn(
        self,
        name: str,
        work: Callable[[], Any],
        interval: float,
        first_delay: float = 0.0,
        wake: threading.Event | None = None,
    ) -> threading.Thread:
        thread = threading.Thread(
            target=self._every,
            args=(name, work, interval, first_delay, wake or self._stop),
            name=name,
            daemon=True,
        )
        thread.start()
        return thread

    def _every(
        self,
        name: str,
        work: Callable[[], Any],
        interval: float,
        first_delay: float,
        wake: threading.Event,
    ) -> None:
        """Run ``work`` every ``interval`` seconds, or at once when ``wake`` is set, until
        stopped; no error ends the thread."""
        if first_delay:
            self._stop.wait(first_delay)
        while not self._stop.is_set():
            if wake is not self._stop:
                wake.clear()  # before the work: a change announced during it runs it again
            try:
                work()
            except Exception:  # noqa: BLE001 - the thread must outlive any failure
                self._store_errors += 1
                limited.error(name, "cutover %s failed; retrying", name, exc_info=True)
            wake.wait(interval)

    def _background_flush(self) -> None:
        self.flush(drain_timeout=0)

    def wait_until_loaded(self, timeout: float) -> bool:
        """Block up to ``timeout`` for the first refresh attempt (success or failure)."""
        self.ensure_started()
        return self._loaded.wait(timeout)

    def refresh(self) -> bool:
        """Reload every state from the store and recompile the routes that changed.

        Refreshes may run at once (the background thread, and a caller that has just written a
        state and must read it back): the snapshot of a read that began later is never replaced
        by that of one that began earlier."""
        with self._refresh_lock:
            ticket = next(self._refresh_tickets)
        try:
            states = self.store.states()
        except StoreError as error:
            self._store_failed(error)
            return False
        finally:
            self._loaded.set()
        self._store_ok()
        with self._refresh_lock:
            if ticket < self._refresh_applied:
                return True  # a read that began after this one is already in place
            self._refresh_applied = ticket
            previous, self.states = self.states, states
            self._loaded_at = self.clock()
            for migration in self.migrations:
                migration._apply(states.get(migration.name))
        if _watchers:
            changed = sorted(
                n for n in previous.keys() | states.keys() if previous.get(n) != states.get(n)
            )
            if changed:
                for callback in _watchers:
                    try:
                        callback(changed)
                    except Exception:  # noqa: BLE001 - a watcher cannot stop the refresh
                        limited.error("watch", "cutover: a state watcher raised", exc_info=True)
        return True

    def _store_failed(self, error: BaseException, *, writing: bool = False) -> None:
        """Count a failure; log one line when the store starts failing reads (or writes),
        not one per attempt."""
        self._store_errors += 1
        message = str(error)
        self._last_error = message
        if writing:
            if self._writable is not False:
                log.error(
                    "cutover cannot write to its store, telemetry waits in memory: %s", message
                )
            self._writable = False
            return
        if self._reachable is not False:
            log.error("cutover store unreachable, serving the last known states: %s", message)
        self._reachable = False

    def _store_ok(self, *, writing: bool = False) -> None:
        if writing:
            if self._writable is False:
                log.warning("cutover can write to its store again; buffered telemetry is written")
            self._writable = True
        else:
            if self._reachable is False:
                log.warning("cutover store reachable again at %s", redact_url(self.settings.store))
            self._reachable = True
        if self._reachable is not False and self._writable is not False:
            self._last_error = None

    # -- telemetry -----------------------------------------------------------------------

    def keep_sample(self, sample: DriftSample) -> None:
        self._samples.append(sample)

    def window_start(self, at: float) -> int:
        width = self.settings.window_seconds
        return int(at // width) * width

    def flush(self, drain_timeout: float | None = 5.0, lock_timeout: float | None = None) -> bool:
        """Write every count and drift sample to the store; True when nothing is left unwritten.

        With ``drain_timeout`` it first waits that long for queued off-path runs to finish,
        so their comparisons are included. With ``lock_timeout`` it gives up (False) if another
        flush, stuck on a dead link, holds the flush that long.
        """
        if drain_timeout:
            self.pool.drain(drain_timeout)
        if not self._flush_lock.acquire(timeout=-1 if lock_timeout is None else lock_timeout):
            log.error("cutover could not flush: the store is not answering")
            return False
        self._flushing = threading.get_ident()
        try:
            return self._flush_now()
        finally:
            self._flushing = None
            self._flush_lock.release()
            if self._terminate_after_flush:
                os.kill(os.getpid(), signal.SIGTERM)  # see _flush_then_die

    def _flush_now(self) -> bool:
        """One flush: collect what every thread counted, queue it, write what is queued.

        The telemetry of names no live migration has any more is collected one last time and
        forgotten: once the last Migration of a name is gone, nothing can count for it again.
        """
        now = self.clock()
        start = self.window_start(now)
        with self._registry_lock:
            live = {migration.name for migration in declared()}
            gone = [name for name in self.telemetry if name not in live]
            released = [self.telemetry.pop(name) for name in gone]
            telemetries = [*self.telemetry.values(), *released]
        deltas = [(start, d) for d in (t.collect() for t in telemetries) if not d.empty]
        samples = []
        while self._samples:
            samples.append(self._samples.popleft())
        fingerprints = [
            (start, migration, fingerprint, count)
            for migration, counts in self.sampler.take_counts().items()
            for fingerprint, count in counts.items()
        ]
        if gone:
            self.sampler.forget(gone)
        if self.events is not None:
            self.events.drain()
        batch = FlushBatch(
            self.instance, 0, now, deltas, samples, run=self.run, fingerprints=fingerprints
        )
        if not batch.empty:
            self._served = True
            self._buffer(batch)
        return self._write_pending(now)

    def _buffer(self, batch: FlushBatch) -> None:
        """Queue a batch for the store. While the store is away, batches merge (the counts add
        up exactly) up to MERGE_STARTS window slots each, so memory grows with the minutes of
        the outage rather than the flushes, every batch stays small enough to write in one go,
        and the whole queue is capped at ``buffer_limit`` window slots: past that the oldest
        go, counted."""
        last = self._pending[-1] if self._pending else None
        if last is not None and not last.attempted and len(last.starts()) < MERGE_STARTS:
            self._dropped_samples += last.absorb(batch)
        else:
            batch.seq = next(self._seq)
            self._pending.append(batch)
        while len(set().union(*(pending.starts() for pending in self._pending))) > (
            self.settings.buffer_limit
        ):
            oldest = min((b for b in self._pending if b.starts()), key=lambda b: min(b.starts()))
            self._dropped_windows += oldest.drop_oldest()
            if oldest.empty:
                self._pending.remove(oldest)
            limited.error(
                "buffer",
                "cutover dropped buffered windows (%d so far): the store has been"
                " unreachable longer than buffer_limit allows",
                self._dropped_windows,
            )

    def _write_pending(self, now: float) -> bool:
        heartbeat = self.heartbeat(now)
        try:
            if not self._pending and self._served:
                self.store.write_flush(
                    FlushBatch(self.instance, 0, now, heartbeat=heartbeat, run=self.run)
                )
            while self._pending:
                batch = self._pending[0]
                batch.heartbeat = heartbeat if len(self._pending) == 1 else None
                first_try = not batch.attempted
                batch.attempted = True  # from here on its outcome may be unknown: never merge
                if not self._write_one(batch) and first_try:
                    log.warning(
                        "cutover flush %s/%s was already in the store", batch.run, batch.seq
                    )
                self._pending.popleft()
        except StoreError as error:
            self._store_failed(error, writing=True)
            return False
        self._store_ok(writing=True)
        return True

    def _write_one(self, batch: FlushBatch) -> bool:
        """Write a batch. If the store refuses it outright (not a lost connection), write the
        counters alone, without the drift samples and texts that may be what it refuses;
        if even that is refused, drop the batch and count it. Transient errors propagate."""
        try:
            return self.store.write_flush(batch)
        except StoreError as error:
            if error.transient:
                raise
            refused = error
        if batch.samples or batch.fingerprints:
            self._dropped_samples += len(batch.samples)
            batch.samples = []
            batch.fingerprints = {}
            try:
                applied = self.store.write_flush(batch)
            except StoreError as error:
                if error.transient:
                    raise
            else:
                limited.error(
                    "rejected-parts",
                    "cutover wrote a flush without its drift samples, which the store refused: %s",
                    refused,
                )
                return applied
        self._rejected_flushes += 1
        limited.error("rejected", "cutover dropped a flush the store refused: %s", refused)
        return True

    def heartbeat(self, now: float) -> InstanceInfo:
        migrations = self.migrations
        overrides = {}
        for migration in migrations:
            mode = migration.route.override
            if mode is not None:
                overrides[migration.name] = {
                    "mode": mode.value,
                    "variable": override_variable(migration.name),
                }
        return InstanceInfo(
            instance=self.instance,
            host=socket.gethostname(),
            pid=os.getpid(),
            started_at=self.started_at,
            last_seen=now,
            info={
                "versions": {m.name: m.route.state.version for m in migrations},
                "overrides": overrides,
                "states_loaded_at": self._loaded_at,
                "store_errors": self._store_errors,
                "dropped_windows": self._dropped_windows,
                "dropped_samples": self._dropped_samples,
                "rejected_flushes": self._rejected_flushes,
                "abandoned_runs": sum(self.abandoned_runs().values()),
                "listening": self._listening,
                "flush_interval": self.settings.flush_interval,
                "cutover": __version__,
            },
        )

    def abandoned_runs(self) -> dict[str, int]:
        """Per migration, its runs past their timeout still holding a thread (off-path or
        serving) or a task that ignores its cancellation."""
        total: dict[str, int] = {}
        pools = (self.pool, self.serving_pool, self.tasks)
        for counts in (pool.abandoned() for pool in pools):
            for name, count in counts.items():
                total[name] = total.get(name, 0) + count
        return total

    @property
    def states_loaded_at(self) -> float | None:
        """Clock time of the last successful refresh; None before the first."""
        return self._loaded_at

    @property
    def states_reachable(self) -> bool | None:
        """Whether the last refresh could read the store; None before the first attempt."""
        return self._reachable

    def health(self) -> StoreHealth:
        return StoreHealth(
            url=redact_url(self.settings.store),
            reachable=self._reachable,
            writable=self._writable,
            states_loaded_at=self.states_loaded_at,
            last_error=self._last_error,
            buffered_windows=sum(len(batch.windows) for batch in list(self._pending)),
            dropped_windows=self._dropped_windows,
            rejected_flushes=self._rejected_flushes,
            listening=self._listening,
        )

    # -- lifecycle -----------------------------------------------------------------------

    def close(self, timeout: float = 5.0) -> None:
        """Drain off-path work, flush, stop the background threads and pools. Once: the exit
        hooks of a process may all call it."""
        if self._closed:
            return
        self._closed = True
        self.pool.close(timeout)
        self.serving_pool.close(0)
        self._stop.set()
        self._refresh_now.set()
        for thread in self._threads.values():
            if thread is not threading.current_thread():
                thread.join(timeout)
        # A flush stuck on a dead link must not hold up interpreter exit.
        self.flush(drain_timeout=0, lock_timeout=timeout)

    def after_fork_in_child(self) -> None:
        self.instance = _instance_name(self.settings.instance)
        loaded_at = self._loaded_at
        self._fresh_process()
        self._loaded_at = loaded_at
        if loaded_at is not None:
            self._loaded.set()  # the parent's states are the child's last known states
        self._registry_lock = threading.Lock()
        self._pending.clear()  # the parent writes what it had buffered
        self._samples.clear()
        self.pool.after_fork_in_child()
        self.serving_pool.after_fork_in_child()
        self.tasks.after_fork_in_child()
        if self.events is not None:
            self.events.after_fork_in_child()
        self.store.after_fork_in_child()
        for telemetry in self.telemetry.values():
            telemetry.after_fork_in_child()
        if self.migrations:
            self.ensure_started()  # refreshes at once: the parent may have missed changes


_runtime: Runtime | None = None
_runtime_lock = threading.Lock()
_default_lock = threading.Lock()


def current() -> Runtime:
    """The configured runtime, created from the environment on first use."""
    runtime = _runtime
    if runtime is not None:
        return runtime
    with _default_lock:
        if _runtime is None:
            configure()
    assert _runtime is not None
    return _runtime


def configured() -> Runtime | None:
    """The configured runtime, if there is one; unlike :func:`current`, never creates one."""
    return _runtime


def declare(migration: Migration) -> None:
    """Remember a migration for every runtime to come (called by Migration itself)."""
    with _declared_lock:
        _declared.add(migration)


def configure(store: str | os.PathLike[str] | None = None, **options: Any) -> Runtime:
    """Configure cutover for this process. ``store`` defaults to ``$CUTOVER_STORE``, else
    ``sqlite:///cutover.db``. Other options: see :class:`Settings`.

    Waits up to ``wait`` seconds (default 1) for the first states, then returns whether or not
    the store answered: an unreachable store never blocks a process from starting. Migrations
    declared earlier move to the new runtime and keep routing as they did until its states
    arrive.
    """
    global _runtime
    if store is not None:
        options["store"] = os.fspath(store)
    try:
        settings = Settings(**options)
    except ValidationError as error:
        raise InvalidInput(_first_problem(error)) from None
    runtime = Runtime(settings)
    if settings.prometheus:
        from cutover.telemetry.prometheus import install_collector

        install_collector(configured)
    runtime.ensure_started()
    if settings.wait:
        runtime.wait_until_loaded(settings.wait)
    with _runtime_lock:
        previous, _runtime = _runtime, runtime
    for migration in declared():
        migration._attach(runtime)
    if previous is not None:
        previous.close()
        previous.store.close()
    return runtime


def _first_problem(error: ValidationError) -> str:
    problem = error.errors()[0]
    field = ".".join(str(part) for part in problem["loc"]) or "configure()"
    context = problem.get("ctx", {}).get("error")
    if isinstance(context, InvalidInput):
        return str(context)
    if problem["type"] == "extra_forbidden":
        known = ", ".join(sorted(Settings.model_fields))
        return f"configure() has no option {field!r}; the options are {known}"
    return f"configure(): {field}: {problem['msg']}"


def shutdown(timeout: float = 5.0) -> None:
    """Flush and stop the runtime; the next use configures a fresh one from the environment
    and takes over the migrations already declared."""
    global _runtime
    with _runtime_lock:
        runtime, _runtime = _runtime, None
    if runtime is not None:
        runtime.close(timeout)
        runtime.store.close()


def flush(timeout: float = 5.0) -> bool:
    """Wait up to ``timeout`` for pending off-path runs, then write all telemetry to the store."""
    return current().flush(drain_timeout=timeout)


async def aflush(timeout: float = 5.0) -> bool:
    """Like :func:`flush`, and first awaits the off-path tasks of the running event loop."""
    import asyncio

    runtime = current()
    await runtime.tasks.drain(timeout)
    return await asyncio.to_thread(runtime.flush, timeout)


def _after_fork_in_child() -> None:
    global _runtime_lock, _default_lock, _declared_lock
    _runtime_lock = threading.Lock()
    _default_lock = threading.Lock()
    _declared_lock = threading.Lock()
    runtime = _runtime
    if runtime is not None:
        runtime.after_fork_in_child()


def _at_exit() -> None:
    runtime = _runtime
    if runtime is not None:
        try:
            runtime.close(timeout=5.0)
        except Exception:
            log.exception("cutover could not flush at exit")


TERM_FLUSH_SECONDS = 5.0
"""How long a multiprocessing child told to terminate (SIGTERM) may spend flushing first."""

_exit_finalizer: multiprocessing.util.Finalize | None = None


def _hook_process_exit() -> None:
    """Flush on every way out of this process, including those that skip ``atexit``.

    multiprocessing ends its fork and forkserver children with ``os._exit``, after running its
    own exit finalizers (spawn children also run ``atexit``): register one. Fork and forkserver
    children clear them before running their after-fork hooks, so this runs again there; spawn
    children run no after-fork hooks and keep what their imports registered. A pool's
    ``terminate()`` (``with Pool() as pool:``, ``Process.terminate()``) sends SIGTERM, which
    runs nothing at all: in such a child whose SIGTERM does what it does by default, flush
    first, then die of the signal as before.
    """
    global _exit_finalizer
    if _exit_finalizer is None or not _exit_finalizer.still_active():
        _exit_finalizer = multiprocessing.util.Finalize(None, _at_exit, exitpriority=10)
    if not _multiprocessing_child():
        return  # its signals are the application's business
    if threading.current_thread() is not threading.main_thread():
        return  # signal handlers can only be set from the main thread
    try:
        if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _flush_then_die)
    except (OSError, ValueError):  # no SIGTERM here, or an embedded interpreter
        pass


def _multiprocessing_child() -> bool:
    """Whether multiprocessing started this process. A spawned child learns its parent only
    after importing the main module (where migrations are declared); until then multiprocessing
    marks it as inheriting."""
    if multiprocessing.parent_process() is not None:
        return True
    return bool(getattr(multiprocessing.current_process(), "_inheriting", False))


def _flush_then_die(signum: int, frame: object) -> None:
    """SIGTERM in a multiprocessing child: flush (for a few seconds at most), then die of it."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends it at once
    runtime = _runtime
    if runtime is not None:
        if runtime._flushing == threading.get_ident():
            # This interrupted a flush (at exit, say): it ends the process once it is written.
            runtime._terminate_after_flush = True
            return
        # On a thread of its own: this handler may have interrupted the main thread while it
        # held a lock the flush needs, and then the flush must give up rather than hang.
        flusher = threading.Thread(
            target=_flush_quietly, args=(runtime,), name="cutover-exit-flush", daemon=True
        )
        flusher.start()
        flusher.join(TERM_FLUSH_SECONDS)
    os.kill(os.getpid(), signal.SIGTERM)


def _flush_quietly(runtime: Runtime) -> None:
    try:
        runtime.flush(drain_timeout=1.0, lock_timeout=TERM_FLUSH_SECONDS / 2)
    except Exception:
        log.exception("cutover could not flush before terminating")


class _ExitHooks:
    """Holds the after-fork registration (multiprocessing keeps only a weak reference)."""


_exit_hooks = _ExitHooks()

if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
multiprocessing.util.register_after_fork(_exit_hooks, lambda _: _hook_process_exit())
atexit.register(_at_exit)
_hook_process_exit()
