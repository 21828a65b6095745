"""The one configured runtime: store, clock, cached states, off-path pool, flushing, fork safety.

``cutover.configure()`` replaces it; everything else reads it through :func:`current`. A
background thread refreshes the cached states (so the caller's path never waits for the
store) and flushes telemetry every few seconds; both are re-created in a forked child.
"""

from __future__ import annotations

import atexit
import collections
import itertools
import logging
import os
import secrets
import socket
import threading
import time
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from cutover.clock import Clock, system_clock
from cutover.errors import InvalidInput, StoreError
from cutover.model import State
from cutover.offpath import TaskTracker, WorkerPool
from cutover.store import DEFAULT_STORE, FlushBatch, InstanceInfo, Store, open_store, redact_url
from cutover.telemetry.drift import DriftSample, DriftSampler, Redactor
from cutover.telemetry.events import EventLog
from cutover.telemetry.windows import MigrationTelemetry

if TYPE_CHECKING:
    from cutover.migration import Migration

log = logging.getLogger("cutover")

__version__ = "0.1.0"


class Settings(BaseModel):
    """Everything ``cutover.configure()`` accepts, validated."""

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid", frozen=True)

    store: str = Field(default_factory=lambda: os.environ.get("CUTOVER_STORE") or DEFAULT_STORE)
    clock: Clock = system_clock
    refresh_interval: float = Field(1.0, gt=0, description="seconds between state refreshes")
    flush_interval: float = Field(5.0, gt=0, description="seconds between telemetry flushes")
    window_seconds: int = Field(60, ge=1, le=3600, description="span of one stored window")
    wait: float = Field(1.0, ge=0, description="seconds configure() waits for the first states")
    offpath_workers: int = Field(4, ge=1, le=256)
    offpath_queue: int = Field(1000, ge=1)
    offpath_tasks: int = Field(1000, ge=1, description="async off-path tasks in flight at most")
    serving_workers: int = Field(8, ge=1, le=256, description="threads that bound sync timeouts")
    drift_samples_per_minute: int = Field(10, ge=0)
    drift_sample_chars: int = Field(8192, ge=256)
    redact: Redactor | None = None
    events: str | None = Field(default_factory=lambda: os.environ.get("CUTOVER_EVENTS") or None)
    buffer_limit: int = Field(
        720, ge=1, description="flushes kept in memory while the store is down"
    )
    prometheus: bool = True
    instance: str | None = None

    @field_validator("store")
    @classmethod
    def _store_url(cls, value: str) -> str:
        from cutover.store import normalize_url

        normalize_url(value)  # raises InvalidInput with the fix
        return value


@dataclass(frozen=True, slots=True)
class StoreHealth:
    """What the runtime knows about its store right now."""

    url: str
    reachable: bool | None  # None until the first attempt
    states_loaded_at: float | None  # clock time of the last successful refresh
    last_error: str | None
    buffered_flushes: int
    dropped_flushes: int


def _new_instance_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class Runtime:
    """Owns the store connection, the cached states, the pools and the background thread."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.clock: Clock = settings.clock
        self.store: Store = open_store(settings.store)
        self.instance = settings.instance or _new_instance_id()
        self.started_at = self.clock()
        self.pool = WorkerPool(settings.offpath_workers, settings.offpath_queue)
        self.serving_pool = WorkerPool(
            settings.serving_workers, settings.serving_workers, name="cutover-serving"
        )
        self.tasks = TaskTracker(settings.offpath_tasks)
        self.sampler = DriftSampler(
            settings.drift_samples_per_minute, settings.drift_sample_chars, settings.redact
        )
        self.events = EventLog(settings.events) if settings.events else None
        self.telemetry: dict[str, MigrationTelemetry] = {}
        self.migrations: weakref.WeakSet[Migration] = weakref.WeakSet()
        self.states: dict[str, State] = {}  # the snapshot, replaced whole, never mutated
        self._samples: collections.deque[DriftSample] = collections.deque(maxlen=10_000)
        self._pending: collections.deque[FlushBatch] = collections.deque()
        self._seq = itertools.count(1)
        self._flush_lock = threading.Lock()
        self._registry_lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._loaded_at: float | None = None
        self._loaded = threading.Event()
        self._reachable: bool | None = None
        self._last_error: str | None = None
        self._dropped_flushes = 0
        self._store_errors = 0
        self._last_refresh = 0.0
        self._last_flush = time.monotonic()

    # -- registration and routing --------------------------------------------------------

    def register(self, migration: Migration) -> MigrationTelemetry:
        with self._registry_lock:
            telemetry = self.telemetry.get(migration.name)
            if telemetry is None:
                telemetry = self.telemetry[migration.name] = MigrationTelemetry(migration.name)
            self.migrations.add(migration)
        migration._apply(self.states.get(migration.name))
        self.ensure_started()
        return telemetry

    def adopt(self, previous: Runtime) -> None:
        """Take over the migrations of a runtime being replaced by ``configure()``."""
        with previous._registry_lock:
            migrations = list(previous.migrations)
        for migration in migrations:
            migration._attach(self)

    def state_of(self, name: str) -> State | None:
        return self.states.get(name)

    # -- background work -----------------------------------------------------------------

    def ensure_started(self) -> None:
        thread = self._thread
        if thread is not None and thread.is_alive():
            return
        with self._registry_lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stopping = False
            self._thread = threading.Thread(target=self._loop, name="cutover-runtime", daemon=True)
            self._thread.start()

    def wait_until_loaded(self, timeout: float) -> bool:
        """Block up to ``timeout`` for the first refresh attempt (success or failure)."""
        self.ensure_started()
        return self._loaded.wait(timeout)

    def _loop(self) -> None:
        settings = self.settings
        while not self._stopping:
            now = time.monotonic()
            if now - self._last_refresh >= settings.refresh_interval:
                self._last_refresh = now
                self.refresh()
            if now - self._last_flush >= settings.flush_interval:
                self._last_flush = now
                self.flush(drain_timeout=0)
            next_refresh = self._last_refresh + settings.refresh_interval
            next_flush = self._last_flush + settings.flush_interval
            self._wake.wait(max(0.01, min(next_refresh, next_flush) - time.monotonic()))
            self._wake.clear()

    def refresh(self) -> bool:
        """Reload every state from the store and recompile the routes that changed."""
        try:
            states = self.store.states()
        except StoreError as error:
            self._store_failed(error)
            self._loaded.set()
            return False
        self._store_ok()
        self.states = states
        self._loaded_at = self.clock()
        for migration in list(self.migrations):
            migration._apply(states.get(migration.name))
        self._loaded.set()
        return True

    def _store_failed(self, error: BaseException) -> None:
        self._store_errors += 1
        message = str(error)
        if self._reachable is not False:
            # One line per outage, not one per attempt.
            log.error("cutover store unreachable, serving the last known states: %s", message)
        self._reachable = False
        self._last_error = message

    def _store_ok(self) -> None:
        if self._reachable is False:
            log.warning("cutover store reachable again at %s", redact_url(self.settings.store))
        self._reachable = True
        self._last_error = None

    # -- telemetry -----------------------------------------------------------------------

    def keep_sample(self, sample: DriftSample) -> None:
        self._samples.append(sample)

    def window_start(self, at: float) -> int:
        width = self.settings.window_seconds
        return int(at // width) * width

    def flush(self, drain_timeout: float | None = 5.0) -> bool:
        """Write every count and drift sample to the store; True when nothing is left unwritten.

        With ``drain_timeout`` it first waits that long for queued off-path runs to finish,
        so their comparisons are included.
        """
        if drain_timeout:
            self.pool.drain(drain_timeout)
        with self._flush_lock:
            now = self.clock()
            start = self.window_start(now)
            with self._registry_lock:
                telemetries = list(self.telemetry.values())
            deltas = [
                (start, delta) for delta in (t.collect() for t in telemetries) if not delta.empty
            ]
            samples = []
            while self._samples:
                samples.append(self._samples.popleft())
            if self.events is not None:
                self.events.drain()
            if deltas or samples:
                self._pending.append(
                    FlushBatch(self.instance, next(self._seq), now, deltas, samples)
                )
                while len(self._pending) > self.settings.buffer_limit:
                    self._pending.popleft()
                    self._dropped_flushes += 1
                    if self._dropped_flushes == 1 or self._dropped_flushes % 100 == 0:
                        log.error(
                            "cutover dropped %d buffered flushes: the store has been"
                            " unreachable too long",
                            self._dropped_flushes,
                        )
            return self._write_pending(now)

    def _write_pending(self, now: float) -> bool:
        heartbeat = self.heartbeat(now)
        try:
            if not self._pending:
                self.store.write_flush(FlushBatch(self.instance, 0, now, heartbeat=heartbeat))
            while self._pending:
                batch = self._pending[0]
                batch.heartbeat = heartbeat if len(self._pending) == 1 else None
                self.store.write_flush(batch)
                self._pending.popleft()
        except StoreError as error:
            self._store_failed(error)
            return False
        self._store_ok()
        return True

    def heartbeat(self, now: float) -> InstanceInfo:
        from cutover.routing import override_variable

        migrations = list(self.migrations)
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
                "dropped_flushes": self._dropped_flushes,
                "cutover": __version__,
            },
        )

    def health(self) -> StoreHealth:
        return StoreHealth(
            url=redact_url(self.settings.store),
            reachable=self._reachable,
            states_loaded_at=self._loaded_at,
            last_error=self._last_error,
            buffered_flushes=len(self._pending),
            dropped_flushes=self._dropped_flushes,
        )

    # -- lifecycle -----------------------------------------------------------------------

    def close(self, timeout: float = 5.0) -> None:
        """Drain off-path work, flush, stop the background thread."""
        self.pool.close(timeout)
        self.flush(drain_timeout=0)
        self._stopping = True
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def after_fork_in_child(self) -> None:
        self.instance = self.settings.instance or _new_instance_id()
        self.started_at = self.clock()
        self._seq = itertools.count(1)
        self._flush_lock = threading.Lock()
        self._registry_lock = threading.Lock()
        self._wake = threading.Event()
        self._thread = None
        self._pending.clear()  # the parent writes what it had buffered
        self._samples.clear()
        self._loaded = threading.Event()
        if self._loaded_at is not None:
            self._loaded.set()
        self.pool.after_fork_in_child()
        self.serving_pool.after_fork_in_child()
        self.tasks.after_fork_in_child()
        self.sampler = DriftSampler(
            self.settings.drift_samples_per_minute,
            self.settings.drift_sample_chars,
            self.settings.redact,
        )
        if self.events is not None:
            self.events.after_fork_in_child()
        self.store.after_fork_in_child()
        for telemetry in self.telemetry.values():
            telemetry.after_fork_in_child()
        self._last_refresh = 0.0  # refresh at once: the parent may have missed changes
        if self.migrations:
            self.ensure_started()


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


def _install(runtime: Runtime) -> None:
    global _runtime
    _runtime = runtime


def configure(store: str | os.PathLike[str] | None = None, **options: Any) -> Runtime:
    """Configure cutover for this process. ``store`` defaults to ``$CUTOVER_STORE``, else
    ``sqlite:///cutover.db``. Other options: see :class:`Settings`.

    Waits up to ``wait`` seconds (default 1) for the first states, then returns whether or not
    the store answered: an unreachable store never blocks a process from starting.
    """
    if store is not None:
        options["store"] = os.fspath(store)
    try:
        settings = Settings(**options)
    except ValidationError as error:
        raise InvalidInput(_first_problem(error)) from None
    runtime = Runtime(settings)
    with _runtime_lock:
        previous = _runtime
        _install(runtime)
    if previous is not None:
        previous.close()
        previous.store.close()
        runtime.adopt(previous)
    if settings.prometheus:
        from cutover.telemetry.prometheus import install_collector

        install_collector()
    runtime.ensure_started()
    if settings.wait:
        runtime.wait_until_loaded(settings.wait)
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
    """Flush and stop the runtime; the next use configures a fresh one from the environment."""
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


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_at_exit)
