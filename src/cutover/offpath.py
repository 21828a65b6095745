"""Bounded execution off the caller's path: a thread pool for sync arms, tracked tasks for async.

Nothing here ever blocks a caller: a full queue refuses the job at once (the caller counts
the drop), workers that die of a BaseException are replaced, and after ``fork()`` the child
starts its own threads on first use.

A run may have a timeout. When it passes, the run is *abandoned* at that moment: its job hears
of it then (and counts the timeout), and whatever the run returns later is discarded. Python
cannot stop a thread, so an abandoned run keeps its thread until it returns; the pool starts a
fresh worker in its place, so one migration's hung arm never takes the others' workers.

The pool replaces at most ``lane_limit`` abandoned threads of one lane (a migration) and
``abandoned_limit`` in all; past either, an abandoned run keeps its worker's place until it
returns, so threads never grow without bound. While a lane holds abandoned runs, those and its
running ones stay within ``lane_limit``: its further runs are refused (at once, when it holds
that many abandoned ones), counted by their job, never queued or waited for.

Async runs get the same treatment as tasks: cancelled at the deadline, and a task that ignores
its cancellation is abandoned like a thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

log = logging.getLogger("cutover")

_STOP = object()

_QUEUED, _RUNNING, _DONE, _ABANDONED = range(4)


class ThreadEnded(Exception):
    """An off-path arm raised a BaseException (SystemExit) that ended its worker thread."""


class Refused(Exception):
    """The pool did not start a queued run: its lane holds as many abandoned runs as allowed."""


class Job(Protocol):
    """What a :class:`WorkerPool` runs: ``run()`` on a worker, then ``then(outcome)`` only if
    it finished within ``timeout``; ``expired`` instead, at the deadline, from the pool's
    watchdog thread; ``refused`` when it was due to start while its lane was full."""

    lane: str | None
    timeout: float | None

    def run(self) -> Any: ...

    def then(self, outcome: Any) -> None: ...

    def expired(self, elapsed_ns: int) -> None: ...

    def refused(self) -> None: ...


class _Entry:
    """A job's passage through the pool (guarded by the pool's lock)."""

    __slots__ = ("context", "deadline", "job", "replaced", "started", "state", "thread")

    def __init__(self, job: Job, context: contextvars.Context | None) -> None:
        self.job = job
        self.context = context
        self.state = _QUEUED
        self.started = 0.0
        self.deadline = math.inf
        self.replaced = False
        self.thread: threading.Thread | None = None


class _Plain:
    """A function to run, with no lane and no deadline (see :meth:`WorkerPool.submit`)."""

    __slots__ = ("run",)

    lane = None
    timeout = None

    def __init__(self, function: Callable[[], Any]) -> None:
        self.run = function

    def then(self, outcome: Any) -> None:
        pass

    def expired(self, elapsed_ns: int) -> None:
        pass

    def refused(self) -> None:
        pass


class _Call:
    """A function call whose outcome goes to a future (see :meth:`WorkerPool.call`)."""

    __slots__ = ("args", "for_caller", "function", "future", "kwargs", "lane", "timeout")

    def __init__(
        self,
        function: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        for_caller: bool,
        lane: str | None,
        timeout: float | None,
    ) -> None:
        self.function = function
        self.args = args
        self.kwargs = kwargs
        self.for_caller = for_caller
        self.lane = lane
        self.timeout = timeout
        self.future: concurrent.futures.Future[Any] = concurrent.futures.Future()

    def run(self) -> None:
        future = self.future
        if not future.set_running_or_notify_cancel():
            return
        if self.for_caller:
            try:
                future.set_result(self.function(*self.args, **self.kwargs))
            except BaseException as error:  # noqa: BLE001 - re-raised in the caller's thread
                future.set_exception(error)
            return
        try:
            future.set_result(self.function(*self.args, **self.kwargs))
        except Exception as error:  # noqa: BLE001 - the awaiting task gets it
            future.set_exception(error)
        finally:
            if not future.done():  # a BaseException is ending this thread; it goes on
                future.set_exception(ThreadEnded(f"{self.function!r} ended its worker thread"))

    def then(self, outcome: Any) -> None:
        pass

    def expired(self, elapsed_ns: int) -> None:
        pass  # whoever waits for the future has a timeout of its own and counts it

    def refused(self) -> None:
        if self.future.set_running_or_notify_cancel():
            self.future.set_exception(Refused(f"{self.lane!r} holds too many abandoned runs"))


class WorkerPool:
    """``workers`` daemon threads fed by a queue of at most ``capacity`` jobs, with deadlines."""

    def __init__(
        self,
        workers: int,
        capacity: int,
        name: str = "cutover-offpath",
        *,
        lane_limit: int = 4,
        abandoned_limit: int = 64,
    ) -> None:
        if workers < 1 or capacity < 1 or lane_limit < 1 or abandoned_limit < 0:
            raise ValueError("a worker pool needs at least one worker and room for one job")
        self.workers = workers
        self.capacity = capacity
        self.name = name
        self.lane_limit = lane_limit
        self.abandoned_limit = abandoned_limit
        self._reset()

    def _reset(self) -> None:
        self._queue: queue.Queue[Any] = queue.Queue(self.capacity)
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._watch = threading.Condition(self._lock)
        self._unfinished = 0  # queued and running jobs, not abandoned ones
        self._workers: set[threading.Thread] = set()  # threads taking jobs from the queue
        self._running: set[_Entry] = set()  # running jobs that have a deadline
        self._lanes: dict[str, int] = {}  # lane -> abandoned runs still in their threads
        self._timed: dict[str, int] = {}  # lane -> running jobs with a deadline
        self._replaced = 0  # abandoned threads the pool has replaced, not yet returned
        self._wake_at = math.inf  # when the watchdog wakes next
        self._watchdog: threading.Thread | None = None
        self._closed = False

    # -- what callers use ----------------------------------------------------------------

    def submit(self, job: Callable[[], Any], context: contextvars.Context | None = None) -> bool:
        """Queue ``job()`` (no lane, no deadline); False (at once, never waiting) when the queue
        is full or closed, or when no worker thread can be started."""
        return self.start(_Plain(job), context)

    def start(self, job: Job, context: contextvars.Context | None = None) -> bool:
        """Queue ``job``; False (at once, never waiting) when the queue is full or closed, when
        the job's lane holds as many abandoned runs as allowed, or when no worker thread can
        be started."""
        if self._closed:
            return False
        if len(self._workers) < self.workers:
            try:
                self._start_workers()
            except RuntimeError:  # "can't start new thread": the caller counts a drop
                if not self._workers:
                    return False
        lane = job.lane
        with self._lock:
            if self._unfinished >= self.capacity + self.workers:
                return False  # full: refuse without the cost of raising queue.Full
            if lane is not None and self._lanes.get(lane, 0) >= self.lane_limit:
                return False
            self._unfinished += 1
        try:
            self._queue.put_nowait(_Entry(job, context))
        except queue.Full:
            self._finished()
            return False
        return True

    def call(
        self,
        function: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        context: contextvars.Context | None = None,
        *,
        for_caller: bool = False,
        lane: str | None = None,
        timeout: float | None = None,
    ) -> concurrent.futures.Future[Any] | None:
        """Run ``function(*args, **kwargs)`` on a worker; its future, or None if refused.

        ``for_caller``: a caller is waiting as if it had made the call itself, so even a
        BaseException (SystemExit) is handed to it. Otherwise a BaseException ends the worker
        thread as it would any thread (the pool replaces it), and the future fails with
        :class:`ThreadEnded` so that nothing waits for it forever. Past ``timeout`` the run is
        abandoned (its thread replaced) and the future is left to whoever waits, with a
        timeout of their own; a run refused when due to start fails with :class:`Refused`.
        """
        job = _Call(function, args, kwargs, for_caller, lane, timeout)
        return job.future if self.start(job, context) else None

    def abandoned(self) -> dict[str, int]:
        """Abandoned runs per lane that are still in their threads."""
        with self._lock:
            return dict(self._lanes)

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until every queued job has finished or been abandoned; False if ``timeout``
        passed first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._idle:
            while self._unfinished:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._idle.wait(remaining)
        return True

    def close(self, timeout: float | None = 5.0) -> bool:
        """Finish queued work (up to ``timeout``) and stop the threads."""
        drained = self.drain(timeout)
        with self._lock:
            self._closed = True
            self._watch.notify_all()
            count = len(self._workers)
        for _ in range(count):
            try:
                self._queue.put_nowait(_STOP)
            except queue.Full:
                break
        return drained

    def after_fork_in_child(self) -> None:
        """The parent's threads and queued jobs stay with the parent."""
        self._reset()

    # -- workers -------------------------------------------------------------------------

    def _finished(self) -> None:
        with self._idle:
            self._done_locked()

    def _done_locked(self) -> None:
        self._unfinished -= 1
        if not self._unfinished:
            self._idle.notify_all()

    def _start_workers(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._workers = {thread for thread in self._workers if thread.is_alive()}
            for _ in range(self.workers - len(self._workers)):
                thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                thread.start()  # may raise RuntimeError; only started threads are kept
                self._workers.add(thread)

    def _run(self) -> None:
        clean = False
        try:
            self._loop()
            clean = True
        finally:
            if not clean and not self._closed:
                # A job raised a BaseException (SystemExit, KeyboardInterrupt in a thread).
                # It propagates and ends this thread; a replacement keeps the pool whole.
                with self._lock:
                    self._workers.discard(threading.current_thread())
                self._start_workers()

    def _loop(self) -> None:
        while True:
            entry = self._queue.get()
            if entry is _STOP:
                return
            stays = self._take(entry)
            del entry  # nor the job nor what it holds (a migration) outlives it here
            if not stays:
                return  # an abandoned run came back to a pool whose workers are all there

    def _take(self, entry: _Entry) -> bool:
        """Start ``entry`` (or refuse it); whether this thread goes on as a worker."""
        job = entry.job
        lane = job.lane
        with self._lock:
            refused = self._full(lane)
            if not refused:
                self._begin(entry, lane, job.timeout)
        if refused:
            self._finished()
            try:
                job.refused()
            except Exception:
                log.exception("cutover off-path job failed")
            return True
        try:
            if entry.context is None:
                return self._execute(entry)
            return entry.context.run(self._execute, entry)  # type: ignore[no-any-return]
        except Exception:
            log.exception("cutover off-path job failed")
            return True

    def _full(self, lane: str | None) -> bool:
        """Whether a run of ``lane`` must not start (under the lock): while a lane holds
        abandoned runs, those and its running ones together stay within ``lane_limit``."""
        if lane is None:
            return False
        abandoned = self._lanes.get(lane, 0)
        return abandoned > 0 and abandoned + self._timed.get(lane, 0) >= self.lane_limit

    def _begin(self, entry: _Entry, lane: str | None, timeout: float | None) -> None:
        """Mark ``entry`` running on this thread (under the lock), under watch if it has a
        deadline."""
        entry.state = _RUNNING
        entry.thread = threading.current_thread()
        if timeout is None:
            return
        entry.started = time.monotonic()
        entry.deadline = entry.started + timeout
        self._running.add(entry)
        if lane is not None:
            self._timed[lane] = self._timed.get(lane, 0) + 1
        if self._watchdog is None or not self._watchdog.is_alive():
            self._watchdog = threading.Thread(
                target=self._watch_deadlines, name=f"{self.name}-watchdog", daemon=True
            )
            self._watchdog.start()
        elif entry.deadline < self._wake_at:
            self._watch.notify()

    def _execute(self, entry: _Entry) -> bool:
        """Run the job; conclude it if it finished in time. Whether this thread stays a worker."""
        job = entry.job
        try:
            outcome = job.run()
        except BaseException:  # ends this thread (see _run); the books must balance first
            with self._lock:
                if self._settle(entry)[0]:
                    self._done_locked()
            raise
        with self._lock:
            in_time, stays = self._settle(entry)
        if in_time:
            try:
                job.then(outcome)
            finally:
                self._finished()  # only now: a drain waits for the conclusion too
        return stays

    def _settle(self, entry: _Entry) -> tuple[bool, bool]:
        """A run returned (under the lock): whether it was in time, and whether its thread
        goes on as a worker."""
        lane = entry.job.lane
        if entry.state == _RUNNING:
            entry.state = _DONE
            if entry.deadline != math.inf:
                self._running.discard(entry)
                _less(self._timed, lane)
            return True, True
        _less(self._lanes, lane)
        if not entry.replaced:
            return False, True  # it kept its worker slot all along
        self._replaced -= 1
        if self._closed or len(self._workers) >= self.workers:
            return False, False
        self._workers.add(threading.current_thread())
        return False, True

    # -- the watchdog --------------------------------------------------------------------

    def _watch_deadlines(self) -> None:
        """Abandon runs at their deadline; sleeps until the earliest one."""
        while True:
            with self._lock:
                if self._closed:
                    return
                now = time.monotonic()
                due = [entry for entry in self._running if entry.deadline <= now]
                if not due:
                    self._wake_at = min((e.deadline for e in self._running), default=math.inf)
                    self._watch.wait(None if self._wake_at == math.inf else self._wake_at - now)
                    continue
                replace = False
                for entry in due:
                    replace |= self._abandon(entry)
            for entry in due:
                try:
                    entry.job.expired(int((now - entry.started) * 1e9))
                except Exception:
                    log.exception("cutover could not count an off-path timeout")
            if replace:
                try:
                    self._start_workers()
                except RuntimeError:
                    log.error("cutover cannot start a thread to replace a hung one")

    def _abandon(self, entry: _Entry) -> bool:
        """``entry`` passed its deadline (under the lock); whether its thread is replaced."""
        entry.state = _ABANDONED
        self._running.discard(entry)
        self._done_locked()  # drain and the queue's room no longer wait for it
        lane = entry.job.lane
        held = 0
        if lane is not None:
            _less(self._timed, lane)
            held = self._lanes.get(lane, 0)
            self._lanes[lane] = held + 1
        if held >= self.lane_limit or self._replaced >= self.abandoned_limit:
            return False  # no thread beyond the limits: this one keeps its worker's place
        self._replaced += 1
        entry.replaced = True
        self._workers.discard(entry.thread)  # type: ignore[arg-type]
        return True


def _less(counts: dict[str, int], lane: str | None) -> None:
    """One fewer for ``lane``; a lane at zero is forgotten, so lanes cost nothing once idle."""
    if lane is None:
        return
    left = counts[lane] - 1
    if left:
        counts[lane] = left
    else:
        del counts[lane]


class _Task:
    """What the tracker knows of one task (guarded by the tracker's lock)."""

    __slots__ = ("abandoned", "expired", "handle", "lane", "started")

    def __init__(self, lane: str | None, expired: Callable[[int], Any] | None) -> None:
        self.lane = lane
        self.expired = expired
        self.handle: asyncio.TimerHandle | None = None
        self.started = 0.0
        self.abandoned = False


class TaskTracker:
    """Keeps a reference to every off-path asyncio task (so none is garbage collected mid-run),
    bounds how many run at once, and cancels them at their deadline."""

    def __init__(self, limit: int, *, lane_limit: int = 4, abandoned_limit: int = 64) -> None:
        self.limit = limit
        self.lane_limit = lane_limit
        self.abandoned_limit = abandoned_limit
        self.after_fork_in_child()

    def spawn(
        self,
        coroutine: Coroutine[Any, Any, Any],
        *,
        lane: str | None = None,
        timeout: float | None = None,
        expired: Callable[[int], Any] | None = None,
    ) -> bool:
        """Run ``coroutine`` as a task of the running loop; False (the coroutine closed) at the
        limit, or while ``lane`` holds as many abandoned tasks as allowed.

        Past ``timeout`` the task is cancelled and abandoned: ``expired(elapsed_ns)`` is called
        then, and :meth:`claim` tells the task, should it still finish, that it is too late.
        """
        loop = asyncio.get_running_loop()
        with self._lock:
            if len(self._tasks) >= self.limit or (
                lane is not None and self._lanes.get(lane, 0) >= self.lane_limit
            ):
                coroutine.close()
                return False
            task = loop.create_task(coroutine)  # copies the context
            self._tasks.add(task)
            info = self._info[task] = _Task(lane, expired)
            if timeout is not None:
                info.started = loop.time()
                info.handle = loop.call_later(timeout, self._expire, task)
        task.add_done_callback(self._forget)
        return True

    def claim(self) -> bool:
        """Called by a tracked task as it concludes: False when it was abandoned at its deadline
        (its timeout is counted already), True otherwise (and its deadline no longer applies)."""
        task = asyncio.current_task()
        with self._lock:
            info = self._info.get(task)  # type: ignore[arg-type]
            if info is None:
                return True
            if info.abandoned:
                return False
            if info.handle is not None:
                info.handle.cancel()
                info.handle = None
            return True

    def abandoned(self) -> dict[str, int]:
        """Abandoned tasks per lane that have not ended yet."""
        with self._lock:
            return dict(self._lanes)

    def _expire(self, task: asyncio.Task[Any]) -> None:
        with self._lock:
            info = self._info.get(task)
            if info is None or info.handle is None or task.done():
                return
            info.handle = None
            info.abandoned = True
            if info.lane is not None:
                self._lanes[info.lane] = self._lanes.get(info.lane, 0) + 1
            if len(self._abandoned) < self.abandoned_limit:
                self._tasks.discard(task)  # its place is free for another
                self._abandoned.add(task)
        if info.expired is not None:
            try:
                info.expired(int((task.get_loop().time() - info.started) * 1e9))
            except Exception:
                log.exception("cutover could not count an off-path timeout")
        task.cancel()

    def _forget(self, task: asyncio.Task[Any]) -> None:
        with self._lock:
            self._tasks.discard(task)
            self._abandoned.discard(task)
            info = self._info.pop(task, None)
            if info is None:
                return
            if info.handle is not None:
                info.handle.cancel()
            if info.abandoned:
                _less(self._lanes, info.lane)

    async def drain(self, timeout: float | None = None) -> bool:
        """Wait for the running loop's tasks, not those abandoned; False if ``timeout`` passed
        first."""
        loop = asyncio.get_running_loop()
        with self._lock:
            mine = [task for task in self._tasks if task.get_loop() is loop]
        if not mine:
            return True
        _done, pending = await asyncio.wait(mine, timeout=timeout)
        return not pending

    def after_fork_in_child(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()  # in flight, within the limit
        self._abandoned: set[asyncio.Task[Any]] = set()  # cancelled at the deadline, not ended
        self._info: dict[asyncio.Task[Any], _Task] = {}
        self._lanes: dict[str, int] = {}
        self._lock = threading.Lock()  # loops in several threads may share the tracker
