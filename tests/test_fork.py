"""fork(): children re-create threads and connections, count only their own calls, obey changes."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import cutover
from cutover import operations
from cutover import runtime as rt
from cutover.model import Mode
from cutover.store import open_store

from .helpers import put, quiet, stored, waits_for

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def in_child(body: object) -> int:
    """Run ``body()`` in a forked child; returns the child's exit status (0 when body returned)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            body()  # type: ignore[operator]
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_child_counts_only_its_own_calls_and_parent_keeps_its_pending_work(
    sqlite_url: str, clock: cutover.ManualClock
) -> None:
    runtime = quiet(sqlite_url, clock=clock)
    gate = threading.Event()
    codec = cutover.Migration("codec", lambda x: x, waits_for(gate))
    put(runtime, "codec", mode="shadow")
    for i in range(30):
        codec(i)  # unflushed, with off-path runs waiting on the gate

    def child() -> None:
        gate.set()  # the child's copy of the gate: its own runs must not wait
        for i in range(50):
            assert codec(i) == i
        assert cutover.flush(timeout=10)

    assert in_child(child) == 0
    gate.set()
    stats = stored(runtime, "codec")
    assert stats.legacy.served == 80
    assert stats.comparisons == 80
    instances = {i.instance for i in runtime.store.instances()}
    assert len(instances) == 2, "the child reports as an instance of its own"


def test_preloaded_children_follow_a_change_and_flush(store_url: str, tmp_path: Path) -> None:
    # Polling is slow here on purpose where the store can announce changes (PostgreSQL): the
    # children must have re-created their listener after the fork.
    refresh = 5.0 if store_url.startswith("postgresql") else 0.05
    runtime = cutover.configure(store_url, refresh_interval=refresh, flush_interval=0.2, wait=1)
    codec = cutover.Migration("codec", lambda: "legacy", lambda: "new")
    put(runtime, "codec", mode="legacy")
    marks = tmp_path / "marks"
    marks.mkdir()

    listens = store_url.startswith("postgresql")

    def child(number: int) -> None:
        deadline = time.monotonic() + 20
        ready = marks / f"ready-{number}"
        while time.monotonic() < deadline:
            if not ready.exists() and (not listens or rt.current().health().listening):
                ready.touch()
            if codec() == "new":
                (marks / f"{number}").write_text(repr(time.time()))
                break
            time.sleep(0.005)
        assert cutover.flush(timeout=5)

    pids = []
    for number in range(3):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            code = 1
            try:
                child(number)
                code = 0
            finally:
                os._exit(code)
        pids.append(pid)
    # The children are up, serving legacy, and listening where the store can announce.
    deadline = time.monotonic() + 15
    while len(list(marks.glob("ready-*"))) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    decision = operations.set_state(
        runtime.store,
        "codec",
        operations.Change(mode=Mode.NEW),
        reason="switch",
        actor="test",
        clock=time.time,
    )
    codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids]
    assert codes == [0, 0, 0]
    assert sorted(p.name for p in marks.glob("[0-9]")) == ["0", "1", "2"]
    assert decision is not None
    delays = [float(p.read_text()) - decision.at for p in marks.glob("[0-9]")]
    assert max(delays) < 1.0, delays
    report = stored(runtime, "codec")
    assert report.new.served == 3, "each child served new exactly once, then flushed"


def count_calls(calls: int) -> None:
    codec = cutover.Migration("mp", abs, abs)
    for i in range(calls):
        codec(-i)  # no explicit flush: the child's exit must write it


def test_multiprocessing_children_flush_on_exit(sqlite_url: str) -> None:
    import multiprocessing

    runtime = quiet(sqlite_url, wait=1)
    context = multiprocessing.get_context("fork")
    children = [context.Process(target=count_calls, args=(100,)) for _ in range(4)]
    for child in children:
        child.start()
    for child in children:
        child.join(30)
    assert [child.exitcode for child in children] == [0, 0, 0, 0]
    assert stored(runtime, "mp").legacy.calls == 400


@pytest.mark.parametrize(
    ("method", "kind", "declare"),
    [
        ("fork", "pool", "import"),
        ("fork", "executor", "import"),
        ("forkserver", "pool", "import"),
        ("forkserver", "executor", "import"),
        ("forkserver", "executor", "first-call"),
        ("spawn", "pool", "import"),
        ("spawn", "pool", "first-call"),
        ("spawn", "executor", "import"),
    ],
)
def test_process_pool_workers_write_their_counts(
    method: str, kind: str, declare: str, sqlite_url: str
) -> None:
    """``with Pool() as pool: pool.map(...)`` ends its workers with SIGTERM; executors and
    forkserver workers leave through os._exit. Every count must reach the store all the same,
    whether the workers declared the migration as they started or on their first call."""
    done = subprocess.run(
        [sys.executable, "-m", "tests.pool_app", method, kind, "4000"],
        check=False,
        cwd=Path(__file__).parent.parent,
        env={**os.environ, "CUTOVER_STORE": sqlite_url, "POOL_APP_DECLARE": declare},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    store = open_store(sqlite_url)
    try:
        stats = operations.stats(store, "pooled", 86400, time.time() + 60)
    finally:
        store.close()
    assert stats.legacy.calls == 100 + 4000


def test_a_child_forked_while_threads_use_sqlite_never_hangs(sqlite_url: str) -> None:
    """SQLite holds process-wide mutexes for a moment while a thread opens, locks or closes a
    file; a child forked in that moment would inherit them locked and hang on its first open.
    Forks wait until no thread is inside SQLite (without that, about a third of these children
    hung)."""
    store = open_store(sqlite_url)
    store.states()
    stop = threading.Event()

    def busy() -> None:
        while not stop.is_set():
            store.states()

    threads = [threading.Thread(target=busy, daemon=True) for _ in range(2)]
    for thread in threads:
        thread.start()
    hung = 0
    try:
        for _ in range(30):
            pid = os.fork()
            if pid == 0:  # pragma: no cover - runs in the child
                store.after_fork_in_child()
                store.states()
                os._exit(0)
            deadline = time.monotonic() + 3  # a liveness bound: a healthy child takes ms
            while not os.waitpid(pid, os.WNOHANG)[0]:
                if time.monotonic() > deadline:
                    hung += 1
                    os.kill(pid, 9)
                    os.waitpid(pid, 0)
                    break
                time.sleep(0.005)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        store.close()
    assert hung == 0, f"{hung} of 30 forked children hung in SQLite"
