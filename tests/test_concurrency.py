"""Several writers, several processes: compare-and-set holds, SQLite is never 'locked'."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys

from cutover import operations
from cutover.store import open_store

from .workers import hammer_sqlite


def cutover_cli(store: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "cutover", "--store", store, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "CUTOVER_ACTOR": "ops"},
    )


def test_relative_changes_from_racing_clis_are_all_applied(store_url: str) -> None:
    setup = cutover_cli(
        store_url, "set", "codec", "--mode", "canary", "--percent", "0", "--reason", "start"
    )
    assert setup.wait(60) == 0
    racers = [
        cutover_cli(store_url, "set", "codec", "--percent", "+1", "--reason", f"racer {n}")
        for n in range(8)
    ]
    outcomes = [(racer.wait(120), racer.stderr.read() if racer.stderr else "") for racer in racers]
    assert [code for code, _ in outcomes] == [0] * 8, outcomes
    store = open_store(store_url)
    state = store.state("codec")
    assert state is not None and state.percent == 8 and state.version == 9
    reasons = sorted(d.reason for d in store.decisions("codec") if d.reason != "start")
    assert reasons == [f"racer {n}" for n in range(8)]
    store.close()


def test_several_processes_share_one_sqlite_file_without_locking_errors(sqlite_url: str) -> None:
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    calls = 3000
    workers = [
        context.Process(target=hammer_sqlite, args=(sqlite_url, "shared", calls, results))
        for _ in range(4)
    ]
    for worker in workers:
        worker.start()
    reports = [results.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(30)
    assert [worker.exitcode for worker in workers] == [0] * 4
    assert all(flushed for _, flushed, _ in reports)
    assert [errors for _, _, errors in reports] == [[]] * 4, "no 'database is locked', no conflict"
    store = open_store(sqlite_url)
    report = operations.stats(store, "shared", 3600, __import__("time").time() + 60)
    assert report.legacy.calls + report.new.calls == 4 * calls
    state = store.state("shared")
    assert state is not None and state.percent == 4 * (calls // 200)
    assert len(store.decisions("shared", limit=1000)) == 4 * (calls // 200)
    store.close()
