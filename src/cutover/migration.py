"""Migration and the ``@migration`` decorator: the drop-in wrapper, with sync and async call paths.

The caller's path does only this: read the cached route, find the unit's bucket, call the
serving arm, count. Running the other arm, comparing, diffing, redacting, publishing and
flushing all happen off that path, and nothing they do can raise into it or block it. What
little of cutover's own work must happen on the caller's thread for a sampled call (copying
arguments, queueing the off-path run) is guarded: if it fails, the comparison is skipped and
counted, and the caller still gets exactly what the serving arm gave.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import copy
import functools
import inspect
import random
import time
import types
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from cutover import runtime as rt
from cutover.compare import Comparator, exact, exceptions, judge
from cutover.errors import ArmTimeout, InvalidInput
from cutover.model import Arm, Comparison, Mode, Observation, State, Verdict
from cutover.offpath import Refused
from cutover.routing import (
    BUCKETS,
    LEGACY_ONLY,
    NEW_ONLY,
    Route,
    compile_route,
    env_override,
    serving_arm,
    unit_hash,
)
from cutover.runtime import limited
from cutover.telemetry.drift import Redactor
from cutover.telemetry.histogram import index_of
from cutover.telemetry.windows import (
    CALLS,
    COMPARATOR_ERRORS,
    COMPARISONS,
    DRIFTS,
    DROPPED,
    ERRORS,
    EXPECTED,
    FALLBACKS,
    HOOK_ERRORS,
    LEGACY_BASE,
    LEGACY_HIST,
    NEW_BASE,
    NEW_HIST,
    OFFPATH,
    TIMEOUTS,
    Block,
    MigrationTelemetry,
    counter_offset,
    hist_offset,
)
from cutover.text import check_name

_now = time.perf_counter_ns  # tests replace this to control measured durations
_random = random.random

# Offsets of the counters the caller's path touches.
L_CALLS, N_CALLS = LEGACY_BASE + CALLS, NEW_BASE + CALLS
N_FALLBACKS = NEW_BASE + FALLBACKS

_unit: contextvars.ContextVar[str | None] = contextvars.ContextVar("cutover_unit", default=None)
_unit_get = _unit.get

_NEW = Arm.NEW  # an Enum member lookup costs as much as the hash

_BROKEN = object()
"""The unit of a call whose extractor raised: legacy serves it."""

_FALL_BACK = object()
"""New failed and legacy serves the call instead."""


@contextlib.contextmanager
def unit_scope(unit: object) -> Iterator[None]:
    """Route every migration called inside this block by ``unit`` (a user, tenant, session).

    Meant for web middleware; a migration's own ``unit=`` extractor takes precedence.
    """
    token = _unit.set(None if unit is None else f"{unit}")
    try:
        yield
    finally:
        _unit.reset(token)


def _sampled(route: Route) -> bool:
    """Whether this call also runs the other arm off-path."""
    share = route.sample
    return share >= 1.0 or (share > 0.0 and _random() < share)


def _record(block: Block, arm: Arm, elapsed: int, counter: int | None = None) -> None:
    """Count one run of ``arm`` (and ``counter`` if it failed) with its duration. The plainest
    paths (serving without sampling) inline this for speed."""
    block[counter_offset(arm, CALLS)] += 1
    if counter is not None:
        block[counter_offset(arm, counter)] += 1
    buckets = block[hist_offset(arm)]
    bucket = index_of(elapsed)
    buckets[bucket] = buckets.get(bucket, 0) + 1


class _Timeout(Exception):
    """The serving new arm did not answer in time (internal)."""


ExpectedExceptions = (
    type[Exception] | tuple[type[Exception], ...] | Callable[[Exception], bool] | None
)
"""What ``expected_exceptions=`` takes: exception classes, or a predicate on the exception."""


def _expectation(name: str, given: ExpectedExceptions) -> Callable[[Exception], bool] | None:
    """The predicate behind ``expected_exceptions``, or None when the migration expects none."""
    if given is None:
        return None
    classes = given if isinstance(given, tuple) else (given,)
    if all(isinstance(c, type) and issubclass(c, Exception) for c in classes) and classes:
        return lambda error: isinstance(error, classes)
    if callable(given) and not isinstance(given, type):
        return given
    raise InvalidInput(
        f"expected_exceptions of migration {name!r} must be exception classes (ValueError, or"
        f" a tuple of them) or a predicate taking the exception, got {given!r}"
    )


def _is_async(function: Callable[..., Any]) -> bool:
    target = function
    while isinstance(target, functools.partial):
        target = target.func
    return inspect.iscoroutinefunction(target) or inspect.iscoroutinefunction(
        getattr(target, "__call__", None)  # noqa: B004 - async callable objects
    )


def _timeout_error(name: str, timeout: float | None) -> ArmTimeout:
    return ArmTimeout(
        f"the new arm of {name!r} did not answer within {timeout:g}s and fallback is off"
    )


class Migration:
    """One named switch between a ``legacy`` and a ``new`` implementation of the same callable.

    Call it exactly as you would call ``legacy``. Its mode, percent, sample, fallback and
    pins come from the store (cached in process); ``default`` applies until a state is stored.
    """

    def __new__(cls, name: str, legacy: Callable[..., Any], *args: Any, **kwargs: Any) -> Migration:
        if cls is Migration and callable(legacy) and _is_async(legacy):
            return super().__new__(AsyncMigration)
        return super().__new__(cls)

    def __init__(
        self,
        name: str,
        legacy: Callable[..., Any],
        new: Callable[..., Any],
        *,
        compare: Comparator | None = None,
        compare_exceptions: Comparator | None = None,
        expected_exceptions: ExpectedExceptions = None,
        unit: Callable[..., Any] | None = None,
        default: Mode | str | State = Mode.LEGACY,
        timeout: float | None = None,
        copy_args: bool = False,
        redact: Redactor | None = None,
        publish: Callable[[Comparison], Any] | None = None,
    ) -> None:
        check_name(name)
        for label, function in (
            ("legacy", legacy),
            ("new", new),
            ("compare", compare),
            ("compare_exceptions", compare_exceptions),
            ("unit", unit),
            ("redact", redact),
            ("publish", publish),
        ):
            if not callable(function) and (function is not None or label in ("legacy", "new")):
                raise InvalidInput(
                    f"{label} of migration {name!r} must be callable, got {function!r}"
                )
        is_async = _is_async(legacy)
        if _is_async(new) and not is_async:
            raise InvalidInput(
                f"migration {name!r}: new is async but legacy is not, and a sync caller cannot"
                " await it; make both async or give a sync new"
            )
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0
        ):
            raise InvalidInput(
                f"timeout of migration {name!r} must be a positive number of seconds"
            )
        # Name, docstring and signature of legacy; never its instance attributes, which could
        # shadow the migration's own (a callable object with a ``name`` or ``timeout``).
        functools.update_wrapper(self, legacy, updated=())
        self.name = name
        self._prefix = name + ":"
        self.legacy = legacy
        self.new = new
        self.is_async = is_async
        self.timeout = None if timeout is None else float(timeout)
        self.copy_args = copy_args
        self._timeout_ns = None if timeout is None else int(timeout * 1e9)
        self._compare: Comparator = compare or exact()
        self._compare_exceptions: Comparator = compare_exceptions or exceptions()
        self._expected = _expectation(name, expected_exceptions)
        self._unit_fn = unit
        self._redact = redact
        self._publish = publish
        self._new_is_async = _is_async(new)
        self._default = default if isinstance(default, State) else State(mode=Mode.parse(default))
        self._override: Mode | None = env_override(name)  # a bad kill switch value fails here
        self._route: Route = compile_route(self._default, self._override)
        rt.declare(self)
        self._attach(rt.current())

    # -- state ---------------------------------------------------------------------------

    def _attach(self, runtime: rt.Runtime) -> None:
        self._runtime = runtime
        telemetry: MigrationTelemetry = runtime.register(self)
        self._telemetry = telemetry
        self._local = telemetry.local

    def _apply(self, state: State | None) -> None:
        """Recompile the route from a stored state (None: the code's default)."""
        try:
            self._override = env_override(self.name)
        except InvalidInput as error:
            limited.error(f"override:{self.name}", "cutover ignores a bad kill switch: %s", error)
        route = compile_route(state or self._default, self._override)
        if route != self._route:
            self._route = route

    @property
    def route(self) -> Route:
        """The compiled state this process routes by right now."""
        return self._route

    @property
    def state(self) -> State:
        return self._route.state

    @property
    def mode(self) -> Mode:
        """The mode in force here, after any ``CUTOVER_FORCE_<NAME>`` override."""
        return self._route.mode

    def serving_arm(self, unit: object) -> Arm:
        """Which arm would serve ``unit`` right now (pins and percent; sampling aside)."""
        return serving_arm(self.name, self._route, unit)

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        # Decorating a method: bind like a function would.
        return self if instance is None else types.MethodType(self, instance)

    def __repr__(self) -> str:
        route = self._route
        return (
            f"<Migration {self.name!r} mode={route.mode.value} percent={route.effective_percent:g}>"
        )

    # -- the caller's path (sync) --------------------------------------------------------

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        route = self._route
        try:
            block = self._local.b
        except AttributeError:
            block = self._telemetry.block()
        kind = route.kind
        if kind != LEGACY_ONLY:
            unit = None
            if kind == NEW_ONLY:
                new_serves = True
            else:  # shadow or canary; sampled calls and bounded new arms take the slower path
                share = route.sample
                if share and (share >= 1.0 or _random() < share):
                    return self._call_slow(route, block, args, kwargs, True)
                if self._timeout_ns is not None:
                    return self._call_slow(route, block, args, kwargs, False)
                # The rule of routing.serving_arm, inlined: this is the hottest code there is.
                extract = self._unit_fn
                if extract is not None:
                    try:
                        unit = extract(*args, **kwargs)
                        if unit is not None and type(unit) is not str:
                            unit = f"{unit}"
                    except Exception as error:  # noqa: BLE001 - must not break calls
                        unit = self._extractor_failed(block, error)
                if unit is None:
                    unit = _unit_get()
                limit = route.threshold
                if unit is None:  # every call is its own unit
                    new_serves = limit >= 10_000 or (limit > 0 and _random() * 10_000 < limit)
                elif unit is _BROKEN:
                    new_serves = False
                else:
                    pins = route.pins
                    pinned = None if pins is None else pins.get(unit)
                    if pinned is not None:
                        new_serves = pinned
                    elif limit <= 0:
                        new_serves = False
                    elif limit >= 10_000:
                        new_serves = True
                    else:
                        new_serves = unit_hash(self._prefix + unit) % 10_000 < limit
            if new_serves:
                failure = None
                start = _now()
                try:
                    result = self.new(*args, **kwargs)
                except Exception as error:  # noqa: BLE001 - falls back or is re-raised below
                    failure = error
                elapsed = _now() - start
                if failure is not None:
                    counter = self._failed(failure)
                    _record(block, Arm.NEW, elapsed, counter)
                    if route.fallback and counter == ERRORS:  # never in `new` mode
                        return self._fall_back(block, args, kwargs, unit, failure)
                    raise failure
                block[N_CALLS] += 1
                bits = elapsed.bit_length()  # the bucket, as histogram.index_of computes it
                bucket = (((bits - 7) << 6) + (elapsed >> (bits - 7))) if bits > 7 else elapsed
                buckets = block[NEW_HIST]
                buckets[bucket] = buckets.get(bucket, 0) + 1
                return result
        start = _now()
        try:
            result = self.legacy(*args, **kwargs)
        except Exception as error:
            _record(block, Arm.LEGACY, _now() - start, self._failed(error))
            raise
        elapsed = _now() - start
        block[L_CALLS] += 1
        bits = elapsed.bit_length()
        bucket = (((bits - 7) << 6) + (elapsed >> (bits - 7))) if bits > 7 else elapsed
        buckets = block[LEGACY_HIST]
        buckets[bucket] = buckets.get(bucket, 0) + 1
        return result

    def _failed(self, error: BaseException) -> int:
        """The counter a run that raised ``error`` goes to: EXPECTED for an exception the
        migration expects (an answer, like a value), else ERRORS. A predicate that raises
        expects nothing."""
        expected = self._expected
        if expected is None or not isinstance(error, Exception):
            return ERRORS
        try:
            return EXPECTED if expected(error) else ERRORS
        except Exception:  # noqa: BLE001 - a broken predicate must not break calls
            limited.error(
                f"expected:{self.name}",
                "cutover: the expected_exceptions predicate of %r raised; counted as an error",
                self.name,
                exc_info=True,
            )
            return ERRORS

    def _extractor_failed(self, block: Block, error: Exception) -> object:
        """Count a unit extractor that raised; its calls are served by legacy."""
        block[LEGACY_BASE + HOOK_ERRORS] += 1
        limited.error(
            f"unit:{self.name}",
            "cutover: the unit extractor of %r raised %r; those calls are served by legacy",
            self.name,
            error,
        )
        return _BROKEN

    def _unit_of(self, block: Block, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """The unit of this call as a str; None when the call is its own unit; _BROKEN when the
        extractor raised (legacy serves)."""
        extract = self._unit_fn
        if extract is not None:
            try:
                unit = extract(*args, **kwargs)
                if unit is not None:
                    return unit if type(unit) is str else f"{unit}"
            except Exception as error:  # noqa: BLE001 - a broken extractor must not break calls
                return self._extractor_failed(block, error)
        return _unit_get()

    def _serves_new(self, route: Route, unit: Any) -> bool:
        """Whether new serves this call, for the slow and async paths and the proxy: the one
        routing rule (``routing.serving_arm``); a call without a unit is routed at random in
        proportion, one whose extractor raised goes to legacy."""
        if unit is _BROKEN:
            return False
        if unit is None:
            limit = route.threshold
            return limit >= BUCKETS or (limit > 0 and _random() * BUCKETS < limit)
        return serving_arm(self.name, route, unit) is _NEW

    def _offpath_arguments(
        self, block: Block, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
        """The arguments the off-path arm gets: the caller's, or a deep copy (``copy_args``).
        None when the copy fails: that call is not compared, and the failure is counted."""
        if not self.copy_args:
            return args, kwargs
        try:
            return copy.deepcopy((args, kwargs))
        except Exception as error:  # noqa: BLE001 - an uncopyable argument skips the comparison
            block[LEGACY_BASE + HOOK_ERRORS] += 1
            limited.error(
                f"copy:{self.name}",
                "cutover: cannot copy the arguments of %r (%r); those calls are not compared",
                self.name,
                error,
            )
            return None

    def _call_slow(
        self,
        route: Route,
        block: Block,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        sampled: bool,
    ) -> Any:
        """Shadow or canary when the other arm runs off-path too, or new has a timeout."""
        unit = self._unit_of(block, args, kwargs)
        offpath = self._offpath_arguments(block, args, kwargs) if sampled else None
        if self._serves_new(route, unit):
            return self._serve_new(route, block, args, kwargs, unit, offpath)
        start = _now()
        try:
            result = self.legacy(*args, **kwargs)
        except Exception as error:
            elapsed = _now() - start
            _record(block, Arm.LEGACY, elapsed, self._failed(error))
            if offpath is not None:
                self._submit(block, Arm.NEW, Arm.LEGACY, None, error, elapsed, offpath, unit)
            raise
        elapsed = _now() - start
        _record(block, Arm.LEGACY, elapsed)
        if offpath is not None:
            self._submit(block, Arm.NEW, Arm.LEGACY, result, None, elapsed, offpath, unit)
        return result

    def _serve_new(
        self,
        route: Route,
        block: Block,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        unit: Any,
        offpath: tuple[tuple[Any, ...], dict[str, Any]] | None,
    ) -> Any:
        failure: Exception | None = None
        timed_out = False
        start = _now()
        try:
            if self._timeout_ns is None:
                result = self.new(*args, **kwargs)
            else:
                result = self._call_new_bounded(args, kwargs)
        except _Timeout:
            timed_out = True
        except Exception as error:  # noqa: BLE001 - falls back or is re-raised below
            failure = error
        elapsed = _now() - start
        # Fallbacks run outside the except blocks, so legacy's own exception (if any) reaches
        # the caller without new's failure chained to it as context.
        next_step = self._settle(route, block, Arm.NEW, elapsed, timed_out, failure)
        if next_step is _FALL_BACK:
            return self._fall_back(block, args, kwargs, unit, failure, offpath, elapsed)
        if offpath is not None and not timed_out:
            value = None if failure is not None else result
            self._submit(block, Arm.LEGACY, Arm.NEW, value, failure, elapsed, offpath, unit)
        if next_step is not None:
            raise next_step
        return result

    def _settle(
        self,
        route: Route,
        block: Block,
        arm: Arm,
        elapsed: int,
        timed_out: bool,
        failure: Exception | None,
    ) -> Any:
        """Count how the serving arm did and say what the caller gets: its result (None),
        legacy's instead (_FALL_BACK), or an exception to raise."""
        if timed_out:
            _record(block, Arm.NEW, elapsed, TIMEOUTS)
            return _FALL_BACK if route.fallback else _timeout_error(self.name, self.timeout)
        if failure is not None:
            counter = self._failed(failure)
            _record(block, arm, elapsed, counter)
            if arm is Arm.NEW and route.fallback and counter == ERRORS:
                return _FALL_BACK
            return failure  # an expected exception is new's answer: compared, not fallen back
        _record(block, arm, elapsed)
        return None

    def _fall_back(
        self,
        block: Block,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        unit: Any,
        failure: Exception | None,
        offpath: tuple[tuple[Any, ...], dict[str, Any]] | None = None,
        new_ns: int = 0,
    ) -> Any:
        """New failed (``failure``, or None for a timeout): legacy serves this call, whatever it
        returns or raises. A sampled call (``offpath``) is also a comparison of the two: new
        failed where legacy answered is a drift, so failing never passes a parity check."""
        block[N_FALLBACKS] += 1
        self._emit_fallback(unit, failure)
        start = _now()
        try:
            result = self.legacy(*args, **kwargs)
        except Exception as error:
            self._fell_back(block, failure, new_ns, None, error, _now() - start, offpath, unit)
            raise
        self._fell_back(block, failure, new_ns, result, None, _now() - start, offpath, unit)
        return result

    def _call_new_bounded(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Run new on a serving thread and wait at most the timeout (sync code cannot be
        interrupted: a late call is abandoned to its thread, which the pool replaces, and its
        result is dropped)."""
        future = self._runtime.serving_pool.call(
            self.new,
            args,
            kwargs,
            contextvars.copy_context(),
            for_caller=True,
            lane=self.name,
            timeout=self.timeout,
        )
        if future is None:
            limited.error(
                f"serving:{self.name}",
                "cutover: the serving threads of %r are all busy or hung in its new arm;"
                " calls fall back at once",
                self.name,
            )
            raise _Timeout
        done, _ = concurrent.futures.wait([future], timeout=self.timeout)
        if not done:
            future.cancel()
            raise _Timeout
        try:
            return future.result()
        except Refused:
            raise _Timeout from None

    # -- off the caller's path -----------------------------------------------------------

    def _submit(
        self,
        block: Block,
        arm: Arm,
        served_by: Arm,
        value: Any,
        failure: BaseException | None,
        elapsed: int,
        offpath: tuple[tuple[Any, ...], dict[str, Any]],
        unit: Any,
    ) -> None:
        """Start the off-path run of ``arm`` to compare with what ``served_by`` gave. Never
        raises: if it cannot start, the run is counted as dropped."""
        try:
            runtime = self._runtime
            args, kwargs = offpath
            observed = Observation(served_by, value, failure, elapsed)
            run = _OffpathRun(self, runtime, arm, observed, args, kwargs, unit, runtime.clock())
            if self._start(run):
                return
        except Exception:  # noqa: BLE001 - the caller gets the serving arm's outcome regardless
            limited.error(
                f"submit:{self.name}", "cutover: cannot start an off-path run", exc_info=True
            )
        block[counter_offset(arm, DROPPED)] += 1

    def _start(self, run: _OffpathRun) -> bool:
        """Queue ``run`` on the worker pool; False when it is full or this migration holds as
        many abandoned runs as allowed."""
        return self._runtime.pool.start(run, contextvars.copy_context())

    def _fell_back(
        self,
        block: Block,
        failure: Exception | None,
        new_ns: int,
        value: Any,
        error: Exception | None,
        legacy_ns: int,
        offpath: tuple[tuple[Any, ...], dict[str, Any]] | None,
        unit: Any,
    ) -> None:
        """Count legacy's run in place of new and, for a sampled call (``offpath``), queue the
        comparison of new's failure (or timeout) with what legacy gave. Both arms already
        ran, so only judging happens off the caller's path. Never raises; a full pool counts
        the comparison as dropped."""
        _record(block, Arm.LEGACY, legacy_ns, None if error is None else self._failed(error))
        if offpath is None:
            return
        try:
            runtime = self._runtime
            if failure is None:
                new = Observation(
                    Arm.NEW, None, _timeout_error(self.name, self.timeout), new_ns, True
                )
            else:
                new = Observation(Arm.NEW, None, failure, new_ns)
            legacy = Observation(Arm.LEGACY, value, error, legacy_ns)
            args, kwargs = offpath
            judge = functools.partial(
                self._judged, runtime, legacy, new, args, kwargs, unit, runtime.clock()
            )
            if runtime.pool.submit(judge, contextvars.copy_context()):
                return
        except Exception:  # noqa: BLE001 - the caller gets legacy's outcome regardless
            limited.error(f"submit:{self.name}", "cutover: cannot judge a fallback", exc_info=True)
        block[counter_offset(Arm.LEGACY, DROPPED)] += 1

    def _judged(
        self,
        runtime: rt.Runtime,
        legacy: Observation,
        new: Observation,
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        unit: Any,
        at: float,
    ) -> None:
        """Judge a fallback on a worker, counted where legacy's comparisons are."""
        block = self._telemetry.block()
        self._compared(
            runtime, block, counter_offset(Arm.LEGACY, 0), legacy, new, args, kwargs, unit, at
        )

    def _count_timeout(self, arm: Arm, elapsed: int) -> None:
        """Count an off-path run of ``arm`` that passed the timeout (at the deadline, from the
        thread that noticed)."""
        block = self._telemetry.block()
        block[counter_offset(arm, OFFPATH)] += 1
        _record(block, arm, elapsed, TIMEOUTS)

    def _conclude(
        self,
        runtime: rt.Runtime,
        arm: Arm,
        observed: Observation,
        value: Any,
        failure: BaseException | None,
        elapsed: int,
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        unit: Any,
        at: float,
    ) -> None:
        """Count the off-path run, compare it, keep a drift sample, publish. Never raises."""
        if self._timeout_ns is not None and elapsed > self._timeout_ns:
            # Finished late, before the deadline's watchdog noticed: a timeout all the same.
            self._count_timeout(arm, elapsed)
            return
        block = self._telemetry.block()
        base = counter_offset(arm, 0)
        block[base + OFFPATH] += 1
        _record(block, arm, elapsed, None if failure is None else self._failed(failure))
        mine = Observation(arm, value, failure, elapsed)
        legacy, new = (observed, mine) if arm is Arm.NEW else (mine, observed)
        self._compared(runtime, block, base, legacy, new, args, kwargs, unit, at)

    def _compared(
        self,
        runtime: rt.Runtime,
        block: Block,
        base: int,
        legacy: Observation,
        new: Observation,
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        unit: Any,
        at: float,
        compare: Comparator | None = None,
    ) -> Verdict:
        """Judge two observations (by ``compare``, else the migration's comparator), count the
        verdict at ``base`` (the arm that ran to compare), keep a drift sample, publish, log
        the event. Never raises."""
        verdict, diff, problem = judge(
            compare or self._compare, self._compare_exceptions, legacy, new
        )
        if verdict is Verdict.ERROR:
            block[base + COMPARATOR_ERRORS] += 1
            limited.error(
                f"compare:{self.name}",
                "cutover: the comparator of %r raised; counted as a comparator error",
                self.name,
                exc_info=problem,
            )
        else:
            block[base + COMPARISONS] += 1
            if verdict is Verdict.DRIFT:
                block[base + DRIFTS] += 1
        comparison = Comparison(
            migration=self.name,
            verdict=verdict,
            legacy=legacy,
            new=new,
            unit=unit if isinstance(unit, str) else None,
            diff=diff,
            error=problem,
            at=at,
            args=tuple(args),
            kwargs=dict(kwargs),
        )
        fingerprint = diff.fingerprint if diff else None  # sorted once, used thrice
        keep = False
        if verdict is Verdict.DRIFT and fingerprint is not None:
            runtime.sampler.count(self.name, fingerprint)
            keep = runtime.sampler.admit(self.name, fingerprint, at)
        if keep:
            try:
                sample = runtime.sampler.sample(comparison, self._redact, fingerprint)
                runtime.keep_sample(sample)
            except Exception:  # noqa: BLE001 - a broken redactor drops the sample, never stores it raw
                block[base + HOOK_ERRORS] += 1
                limited.error(
                    f"redact:{self.name}",
                    "cutover: building a drift sample of %r failed (redactor?); sample dropped",
                    self.name,
                    exc_info=True,
                )
        if self._publish is not None:
            try:
                self._publish(comparison)
            except Exception:  # noqa: BLE001 - a publisher cannot break anything
                block[base + HOOK_ERRORS] += 1
                limited.error(
                    f"publish:{self.name}",
                    "cutover: the publisher of %r raised",
                    self.name,
                    exc_info=True,
                )
        events = runtime.events
        if events is not None:
            event: dict[str, Any] = {
                "at": at,
                "migration": self.name,
                "event": "comparison",
                "result": verdict.value,
                "legacy_ms": round(legacy.duration_ns / 1e6, 6),
                "new_ms": round(new.duration_ns / 1e6, 6),
                "unit": comparison.unit,
            }
            if diff:
                event["fingerprint"] = fingerprint
                event["paths"] = diff.paths()[:20]
            events.emit(event)
        return verdict

    def _emit_fallback(self, unit: Any, failure: Exception | None) -> None:
        """Queue a fallback event for the event log (on the caller's path: guarded, no I/O)."""
        events = self._runtime.events
        if events is None:
            return
        try:
            events.emit(
                {
                    "at": self._runtime.clock(),
                    "migration": self.name,
                    "event": "fallback",
                    "unit": unit if isinstance(unit, str) else None,
                    "reason": "timeout" if failure is None else type(failure).__name__,
                }
            )
        except Exception:  # noqa: BLE001 - the event is lost, the call is not
            limited.error(f"event:{self.name}", "cutover: cannot log a fallback", exc_info=True)


class AsyncMigration(Migration):
    """A migration of coroutine functions: calling it returns an awaitable.

    Off-path arms run as tracked tasks (context variables carry over); a sync arm runs
    off-path on cutover's worker pool, never on the loop's default executor. A sync new arm
    that serves runs on the loop's thread, unless the migration has a timeout: then it runs on
    a serving thread and the call waits at most that long.
    """

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        route = self._route
        try:
            block = self._local.b
        except AttributeError:
            block = self._telemetry.block()
        kind = route.kind
        if kind in (LEGACY_ONLY, NEW_ONLY):
            arm = Arm.LEGACY if kind == LEGACY_ONLY else Arm.NEW
            start = _now()
            try:
                result = await self._invoke(arm, args, kwargs)
            except Exception as error:
                _record(block, arm, _now() - start, self._failed(error))
                raise
            _record(block, arm, _now() - start)
            return result
        unit = self._unit_of(block, args, kwargs)
        offpath = self._offpath_arguments(block, args, kwargs) if _sampled(route) else None
        arm = Arm.NEW if self._serves_new(route, unit) else Arm.LEGACY
        failure: Exception | None = None
        timed_out = False
        start = _now()
        try:
            result = await self._serve(arm, args, kwargs)
        except _Timeout:
            timed_out = True
        except Exception as error:  # noqa: BLE001 - falls back or is re-raised below
            failure = error
        elapsed = _now() - start
        next_step = self._settle(route, block, arm, elapsed, timed_out, failure)
        if next_step is _FALL_BACK:
            return await self._afall_back(block, args, kwargs, unit, failure, offpath, elapsed)
        if offpath is not None and not timed_out:
            value = None if failure is not None else result
            self._submit(block, arm.other, arm, value, failure, elapsed, offpath, unit)
        if next_step is not None:
            raise next_step
        return result

    async def _serve(self, arm: Arm, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Any:
        """Run the serving arm; a new arm past its timeout is abandoned and raises _Timeout."""
        if arm is Arm.LEGACY or self.timeout is None:
            return await self._invoke(arm, args, kwargs)
        try:
            async with asyncio.timeout(self.timeout) as scope:
                if self._new_is_async:
                    return await self.new(*args, **kwargs)
                future = self._runtime.serving_pool.call(
                    self.new,
                    tuple(args),
                    dict(kwargs),
                    contextvars.copy_context(),
                    for_caller=True,
                    lane=self.name,
                    timeout=self.timeout,
                )
                if future is None:  # the serving threads are all busy or hung in new
                    raise _Timeout
                return await asyncio.wrap_future(future)
        except Refused:
            raise _Timeout from None
        except TimeoutError:
            if scope.expired():
                raise _Timeout from None
            raise

    async def _invoke(self, arm: Arm, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Any:
        if arm is Arm.LEGACY:
            return await self.legacy(*args, **kwargs)
        if self._new_is_async:
            return await self.new(*args, **kwargs)
        return self.new(*args, **kwargs)

    async def _afall_back(
        self,
        block: Block,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        unit: Any,
        failure: Exception | None,
        offpath: tuple[tuple[Any, ...], dict[str, Any]] | None = None,
        new_ns: int = 0,
    ) -> Any:
        """The async twin of :meth:`Migration._fall_back`."""
        block[N_FALLBACKS] += 1
        self._emit_fallback(unit, failure)
        start = _now()
        try:
            result = await self._invoke(Arm.LEGACY, args, kwargs)
        except Exception as error:
            self._fell_back(block, failure, new_ns, None, error, _now() - start, offpath, unit)
            raise
        self._fell_back(block, failure, new_ns, result, None, _now() - start, offpath, unit)
        return result

    def _start(self, run: _OffpathRun) -> bool:
        """Start the run as a tracked task, cancelled at the timeout; False at the task limit
        or while this migration holds as many abandoned tasks as allowed."""
        return self._runtime.tasks.spawn(
            self._arun_offpath(run),
            lane=self.name,
            timeout=self.timeout,
            expired=functools.partial(self._count_timeout, run.arm),
        )

    async def _arun_offpath(self, run: _OffpathRun) -> None:
        runtime, arm = run.runtime, run.arm
        value: Any = None
        failure: Exception | None = None
        start = _now()
        try:
            if arm is Arm.LEGACY or self._new_is_async:
                function = self.legacy if arm is Arm.LEGACY else self.new
                value = await function(*run.args, **run.kwargs)
            else:
                future = runtime.pool.call(
                    self.new,
                    tuple(run.args),
                    dict(run.kwargs),
                    contextvars.copy_context(),
                    lane=self.name,
                    timeout=self.timeout,
                )
                if future is None:
                    raise Refused
                value = await asyncio.wrap_future(future)
        except Refused:
            if runtime.tasks.claim():
                self._telemetry.block()[counter_offset(arm, DROPPED)] += 1
            return
        except Exception as error:  # noqa: BLE001 - the off-path arm's failure is data
            failure = error
        elapsed = _now() - start
        if runtime.tasks.claim():  # else it was abandoned at the deadline, and counted then
            run.then((value, failure, elapsed))


class _OffpathRun:
    """One off-path run of an arm, to compare with what the serving arm gave: a job for the
    worker pool (see :class:`cutover.offpath.Job`), or the makings of an async task."""

    __slots__ = ("args", "arm", "at", "kwargs", "migration", "observed", "runtime", "unit")

    def __init__(
        self,
        migration: Migration,
        runtime: rt.Runtime,
        arm: Arm,
        observed: Observation,
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        unit: Any,
        at: float,
    ) -> None:
        self.migration = migration
        self.runtime = runtime
        self.arm = arm
        self.observed = observed
        self.args = args
        self.kwargs = kwargs
        self.unit = unit
        self.at = at  # the call's time

    @property
    def lane(self) -> str:
        return self.migration.name

    @property
    def timeout(self) -> float | None:
        return self.migration.timeout

    def run(self) -> tuple[Any, Exception | None, int]:
        migration = self.migration
        function = migration.new if self.arm is Arm.NEW else migration.legacy
        value: Any = None
        failure: Exception | None = None
        start = _now()
        try:
            value = function(*self.args, **self.kwargs)
        except Exception as error:  # noqa: BLE001 - the off-path arm's failure is data
            failure = error
        return value, failure, _now() - start

    def then(self, outcome: tuple[Any, Exception | None, int]) -> None:
        value, failure, elapsed = outcome
        self.migration._conclude(
            self.runtime,
            self.arm,
            self.observed,
            value,
            failure,
            elapsed,
            self.args,
            self.kwargs,
            self.unit,
            self.at,
        )

    def expired(self, elapsed_ns: int) -> None:
        self.migration._count_timeout(self.arm, elapsed_ns)

    def refused(self) -> None:
        self.migration._telemetry.block()[counter_offset(self.arm, DROPPED)] += 1


class ReportedMigration(Migration):
    """A migration whose arms something else runs and reports on: a DualStore's repositories,
    the HTTP proxy's upstreams. It routes by the stored state as any migration does, and counts
    and compares what its owner tells it, so its telemetry, drift samples and events are any
    migration's: every command, check and the dashboard read them unchanged."""

    def count(self, arm: Arm, elapsed: int, *counters: int) -> None:
        """One run of ``arm`` that took ``elapsed`` ns, and the ``counters`` it adds to."""
        block = self._telemetry.block()
        block[counter_offset(arm, CALLS)] += 1
        for counter in counters:
            block[counter_offset(arm, counter)] += 1
        buckets = block[hist_offset(arm)]
        bucket = index_of(elapsed)
        buckets[bucket] = buckets.get(bucket, 0) + 1

    def bump(self, arm: Arm, counter: int) -> None:
        self._telemetry.block()[counter_offset(arm, counter)] += 1

    def judge(
        self,
        ran: Arm,
        legacy: Observation,
        new: Observation,
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        unit: str | None,
        compare: Comparator | None = None,
    ) -> Verdict:
        """Judge and count one comparison at ``ran`` (the arm that did not serve), keeping a
        drift sample of ``args`` and ``kwargs``; ``compare`` overrides the migration's
        comparator for this one. Never raises."""
        try:
            runtime = self._runtime
            return self._compared(
                runtime,
                self._telemetry.block(),
                counter_offset(ran, 0),
                legacy,
                new,
                args,
                kwargs,
                unit,
                runtime.clock(),
                compare,
            )
        except Exception:  # noqa: BLE001 - recording a comparison never breaks the owner's work
            limited.error(
                f"judge:{self.name}", "cutover: cannot record a comparison", exc_info=True
            )
            return Verdict.ERROR

    def clock(self) -> float:
        return self._runtime.clock()

    def submit(self, job: Callable[[], Any]) -> bool:
        """Run ``job`` on the off-path pool; False (at once) when it is full."""
        return self._runtime.pool.submit(job, contextvars.copy_context())

    def emit(self, event: dict[str, Any]) -> None:
        """Queue an event for the JSON Lines event log, if there is one. Never raises."""
        events = self._runtime.events
        if events is None:
            return
        try:
            events.emit({"at": self._runtime.clock(), "migration": self.name, **event})
        except Exception:  # noqa: BLE001 - the event is lost, the owner's work is not
            limited.error(f"event:{self.name}", "cutover: cannot log an event", exc_info=True)


def migration(
    name: str,
    *,
    new: Callable[..., Any],
    **options: Any,
) -> Callable[[Callable[..., Any]], Migration]:
    """Decorate the legacy function: ``@cutover.migration("pricing", new=new_price)``."""

    def wrap(legacy: Callable[..., Any]) -> Migration:
        return Migration(name, legacy, new, **options)

    return wrap


__all__ = ["AsyncMigration", "Migration", "ReportedMigration", "migration", "unit_scope"]
