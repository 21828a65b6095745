"""Bounded execution off the caller's path: a thread pool for sync arms, tracked tasks for async.

Nothing here ever blocks a caller: a full queue refuses the job at once (the caller counts
the drop), workers that die of a BaseException are replaced, and after ``fork()`` the child
starts its own threads on first use.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import logging
import queue
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

log = logging.getLogger("cutover")

_STOP = object()


class ThreadEnded(Exception):
    """An off-path arm raised a BaseException (SystemExit) that ended its worker thread."""


class WorkerPool:
    """``workers`` daemon threads fed by a queue of at most ``capacity`` jobs."""

    def __init__(self, workers: int, capacity: int, name: str = "cutover-offpath") -> None:
        if workers < 1 or capacity < 1:
            raise ValueError("a worker pool needs at least one worker and room for one job")
        self.workers = workers
        self.capacity = capacity
        self.name = name
        self._reset()

    def _reset(self) -> None:
        self._queue: queue.Queue[Any] = queue.Queue(self.capacity)
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._unfinished = 0
        self._threads: list[threading.Thread] = []
        self._closed = False

    def submit(self, job: Callable[[], Any], context: contextvars.Context | None = None) -> bool:
        """Queue ``job``; False (at once, never waiting) when the queue is full or closed, or
        when no worker thread can be started."""
        if self._closed:
            return False
        if len(self._threads) < self.workers:
            try:
                self._start_workers()
            except RuntimeError:  # "can't start new thread": the caller counts a drop
                if not self._threads:
                    return False
        with self._lock:
            if self._unfinished >= self.capacity + self.workers:
                return False  # full: refuse without the cost of raising queue.Full
            self._unfinished += 1
        try:
            self._queue.put_nowait((job, context))
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
    ) -> concurrent.futures.Future[Any] | None:
        """Run ``function(*args, **kwargs)`` on a worker; its future, or None if refused.

        ``for_caller``: a caller is waiting as if it had made the call itself, so even a
        BaseException (SystemExit) is handed to it. Otherwise a BaseException ends the worker
        thread as it would any thread (the pool replaces it), and the future fails with
        :class:`ThreadEnded` so that nothing waits for it forever.
        """
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def job() -> None:
            if not future.set_running_or_notify_cancel():
                return
            if for_caller:
                try:
                    future.set_result(function(*args, **kwargs))
                except BaseException as error:  # noqa: BLE001 - re-raised in the caller's thread
                    future.set_exception(error)
                return
            try:
                future.set_result(function(*args, **kwargs))
            except Exception as error:  # noqa: BLE001 - the awaiting task gets it
                future.set_exception(error)
            finally:
                if not future.done():  # a BaseException is ending this thread; it goes on
                    future.set_exception(ThreadEnded(f"{function!r} ended its worker thread"))

        return future if self.submit(job, context) else None

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until every queued job has finished; False if ``timeout`` passed first."""
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
        self._closed = True
        for _ in self._threads:
            try:
                self._queue.put_nowait(_STOP)
            except queue.Full:
                break
        return drained

    def after_fork_in_child(self) -> None:
        """The parent's threads and queued jobs stay with the parent."""
        self._reset()

    def _finished(self) -> None:
        with self._idle:
            self._unfinished -= 1
            if not self._unfinished:
                self._idle.notify_all()

    def _start_workers(self) -> None:
        with self._lock:
            self._threads = [thread for thread in self._threads if thread.is_alive()]
            missing = self.workers - len(self._threads)
            for _ in range(missing):
                thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                thread.start()  # may raise RuntimeError; only started threads are kept
                self._threads.append(thread)

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
                    self._threads = [
                        t for t in self._threads if t is not threading.current_thread()
                    ]
                self._start_workers()

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            job, context = item
            try:
                if context is None:
                    job()
                else:
                    context.run(job)
            except Exception:
                log.exception("cutover off-path job failed")
            finally:
                self._finished()


class TaskTracker:
    """Keeps a reference to every off-path asyncio task (so none is garbage collected mid-run)
    and bounds how many run at once."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._tasks: set[asyncio.Task[Any]] = set()
        self._lock = threading.Lock()  # loops in several threads may share the tracker

    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> bool:
        """Run ``coroutine`` as a task of the running loop; at the limit, close it, return False."""
        with self._lock:
            if len(self._tasks) >= self.limit:
                coroutine.close()
                return False
            task = asyncio.get_running_loop().create_task(coroutine)  # copies the context
            self._tasks.add(task)
        task.add_done_callback(self._forget)
        return True

    def _forget(self, task: asyncio.Task[Any]) -> None:
        with self._lock:
            self._tasks.discard(task)

    async def drain(self, timeout: float | None = None) -> bool:
        """Wait for the tasks of the running loop; False if ``timeout`` passed first."""
        loop = asyncio.get_running_loop()
        with self._lock:
            mine = [task for task in self._tasks if task.get_loop() is loop]
        if not mine:
            return True
        _done, pending = await asyncio.wait(mine, timeout=timeout)
        return not pending

    def after_fork_in_child(self) -> None:
        self._tasks = set()
        self._lock = threading.Lock()
