"""Leadership of the controller: one leader by a lease that must be renewed, writes fenced by
its term, and a frozen leader replaced and kept from writing when it wakes."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cutover.clock import ManualClock, system_clock
from cutover.control.controller import Controller, Evaluation
from cutover.model import Decision, Mode
from cutover.store import MIN_LEASE, Store, open_store

from ..http.conftest import running_server
from ..test_cli import run
from ..test_leases import database_now, eventually, lease_row
from .test_scenarios import kinds, plan
from .traffic import Traffic


def _due(url: str, clock: ManualClock, lease: float = 60.0) -> Controller:
    """A controller on a started rollout whose first promotion is due on its next tick."""
    controller = Controller(open_store(url), clock=clock, lease=lease)
    controller.start(plan(), actor="alice")
    traffic = Traffic(controller.store, "codec", clock)
    for _ in range(11):
        traffic.minute()
    return controller


def test_a_leader_frozen_mid_tick_writes_nothing_after_a_takeover(
    store_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    clock = ManualClock()
    leader = _due(store_url, clock, lease=MIN_LEASE)
    successor = open_store(store_url).leadership(duration=60)
    decide = leader.evaluate

    def frozen(name: str, **given: Any) -> Evaluation:
        evaluation = decide(name, **given)
        assert evaluation.action == "promote"
        # Stopped here (SIGSTOP, a paused VM) past its lease: another controller takes over.
        eventually(successor.held, "another controller takes the expired lease")
        return evaluation

    leader.evaluate = frozen  # type: ignore[method-assign]
    caplog.set_level(logging.INFO, logger="cutover.controller")
    assert leader.tick() == [], "the step is not applied"
    assert leader.standby
    assert "the controller lease of term 1 is over" in caplog.text
    assert f"{successor.holder} holds term 2" in caplog.text
    rollout = leader.store.rollout("codec")
    assert rollout is not None and rollout.step == 0, "the rollout did not move"
    assert leader.store.state("codec").mode is Mode.SHADOW  # type: ignore[union-attr]
    assert kinds(leader.store.decisions("codec")) == ["start"]

    # Woken, it stands by while the other leads, and takes the lease back once it is free.
    leader.evaluate = decide  # type: ignore[method-assign]
    assert leader.tick() == [] and leader.standby
    successor.release()
    promoted = leader.tick()
    assert kinds(promoted) == ["promote"] and not leader.standby
    assert promoted[0].evidence["lease"] == {"holder": leader._lease.holder, "term": 3}
    assert "took the lease on this store (term 3" in caplog.text
    leader.close()


def test_the_lease_runs_on_the_database_clock_not_the_controllers(store_url: str) -> None:
    clock = ManualClock(start=1_000_000_000.0)  # years from the database's clock
    leader = _due(store_url, clock)
    standby = Controller(open_store(store_url), clock=clock, lease=60)
    assert kinds(leader.tick()) == ["promote"]
    row = lease_row(leader.store)
    clock.advance(30 * 86400)  # a month of the controllers' (simulated) time
    assert standby.tick() == [] and standby.standby, "the lease has not expired"
    assert 0 < row.expires_at - database_now(leader.store) <= 60
    assert row.expires_at - clock() > 365 * 86400, "stamped by the database, not the controller"
    leader.tick()
    assert not leader.standby
    assert lease_row(leader.store).term == row.term, "renewed, not taken again"
    leader.close()
    standby.close()


def test_an_operator_action_is_not_fenced_by_the_lease(store_url: str) -> None:
    clock = ManualClock()
    leader = _due(store_url, clock)
    assert leader.tick()  # the leader holds the lease
    operator = Controller(open_store(store_url), clock=clock)
    paused = operator.pause("codec", actor="ops", reason="look")
    assert paused.kind == "pause" and "lease" not in paused.evidence
    leader.close()
    operator.close()


def test_run_renews_between_long_ticks_and_a_standby_acts_as_soon_as_it_leads(
    store_url: str,
) -> None:
    clock = ManualClock()
    leader = _due(store_url, clock, lease=30)
    assert leader.tick()
    standby = Controller(open_store(store_url), clock=clock, lease=30)
    stop = threading.Event()
    pauses: list[float] = []
    ticks: list[tuple[int, bool]] = []  # (pauses waited before the tick, leading after it)

    def sleep(seconds: float) -> None:
        pauses.append(seconds)
        if len(pauses) == 2:
            leader.close()  # a clean shutdown releases the lease
        if len(pauses) == 5:
            stop.set()

    def on_tick(_decisions: list[Decision]) -> None:
        ticks.append((len(pauses), not standby.standby))

    standby.run(interval=60, stop=stop, on_tick=on_tick, sleep=sleep)
    # It tries every third of the lease, not every minute, and ticks on taking over.
    assert pauses == [10.0] * 5
    assert ticks == [(0, False), (2, True)]
    after = open_store(store_url).leadership(duration=60)
    assert after.held(), "run() released the lease on its way out"
    after.release()


def test_run_keeps_its_lease_through_an_interval_longer_than_the_lease(store_url: str) -> None:
    clock = ManualClock()
    controller = _due(store_url, clock, lease=30)
    renewals: list[int] = []
    held = controller._lease.held

    def counted() -> bool:
        leading = held()
        renewals.append(lease_row(controller.store).term)
        return leading

    controller._lease.held = counted  # type: ignore[method-assign]
    stop = threading.Event()
    pauses: list[float] = []

    def sleep(seconds: float) -> None:
        pauses.append(seconds)
        if len(pauses) == 20:
            stop.set()

    controller.run(interval=100, stop=stop, sleep=sleep)
    assert pauses == [10.0] * 20, "a third of the lease at a time"
    assert len(renewals) == 20, "two ticks and nine renewals after each"
    assert set(renewals) == {1}, "one term throughout"


PLAN = "migration: codec\nsteps:\n" + "".join(
    f"  - {{mode: canary, percent: {percent}, hold: 1s}}\n" for percent in range(1, 101)
)


LEASED = ("--interval", "500ms", "--lease", "2s")


def _holder_pid(holder: str) -> int:
    return int(holder.rsplit(":", 2)[1])


def _controller_decisions(store: Store) -> list[Decision]:
    return [d for d in store.decisions("codec", limit=1000) if "lease" in d.evidence]


def _by(decisions: list[Decision], pid: int) -> list[Decision]:
    return [d for d in decisions if _holder_pid(d.evidence["lease"]["holder"]) == pid]


@pytest.fixture
def controllers(pg_url: str, tmp_path: Path) -> Iterator[list[tuple[subprocess.Popen[str], Path]]]:
    """Starts ``cutover rollout run`` processes on the store (2 s lease, a pass every 500 ms),
    each logging to a file; all are stopped afterwards, frozen ones too."""
    started: list[tuple[subprocess.Popen[str], Path]] = []
    yield started
    for process, _log in started:
        if process.poll() is None:
            process.send_signal(signal.SIGCONT)
            process.kill()
        process.wait(30)


def _start(pg_url: str, tmp_path: Path, started: list[Any]) -> tuple[subprocess.Popen[str], Path]:
    log = tmp_path / f"controller-{len(started)}.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "cutover", "--store", pg_url, "rollout", "run", *LEASED],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "CUTOVER_ACTOR": "ops@test"},
    )
    started.append((process, log))
    return process, log


@pytest.mark.slow
def test_a_sigstopped_leader_is_replaced_and_writes_nothing_when_continued(
    pg_url: str, tmp_path: Path, controllers: list[Any]
) -> None:
    store = open_store(pg_url)
    starter = Controller(store, clock=system_clock)
    starter.start(plan(PLAN), actor="alice")
    starter.close()
    first, first_log = _start(pg_url, tmp_path, controllers)
    eventually(lambda: _by(_controller_decisions(store), first.pid) != [], "the first one acts")
    second, second_log = _start(pg_url, tmp_path, controllers)
    eventually(lambda: "standing by" in second_log.read_text(), "the second one stands by")
    assert _holder_pid(lease_row(store).holder) == first.pid

    first.send_signal(signal.SIGSTOP)
    frozen = lease_row(store)  # its last renewal: a stopped process renews no more
    assert _holder_pid(frozen.holder) == first.pid
    eventually(lambda: _holder_pid(lease_row(store).holder) == second.pid, "a takeover")
    taken = lease_row(store)
    assert taken.term == frozen.term + 1
    assert taken.acquired_at >= frozen.expires_at, "never before the frozen lease ran out"
    print(
        f"takeover {taken.acquired_at - frozen.renewed_at:.2f}s after the frozen leader's last"
        f" renewal (lease 2s, pass 500ms), {taken.acquired_at - frozen.expires_at:.2f}s after"
        " its expiry, by the database's clock"
    )
    eventually(lambda: _by(_controller_decisions(store), second.pid) != [], "the rollout advances")

    first.send_signal(signal.SIGCONT)
    eventually(
        lambda: re.search("stands by|standing by", first_log.read_text()) is not None,
        "the woken leader stands by",
    )
    woken_at = len(_controller_decisions(store))
    # The rollout goes on under the new leader while the old one is awake.
    eventually(lambda: len(_controller_decisions(store)) >= woken_at + 2, "two more steps")
    decisions = _controller_decisions(store)
    since = [d for d in decisions if d.evidence["lease"]["term"] > frozen.term]
    assert since and _by(since, second.pid) == since
    after_takeover = [d for d in decisions if d.id > since[0].id]
    assert _by(after_takeover, first.pid) == [], "the woken leader wrote nothing"
    assert all(d.evidence["lease"]["term"] == taken.term for d in after_takeover)
    steps = [d.evidence["rollout"]["to"]["step"] for d in decisions]
    assert steps == sorted(steps) and len(set(steps)) == len(steps), "each step once, in order"
    assert _holder_pid(lease_row(store).holder) == second.pid

    # A clean shutdown releases the lease (the first one, stopped again, cannot take it
    # meanwhile); continued, the first one takes it back and acts again.
    first.send_signal(signal.SIGSTOP)
    second.send_signal(signal.SIGTERM)
    assert second.wait(60) == 0
    released = lease_row(store)
    assert released.term == taken.term and released.expires_at <= database_now(store)
    first.send_signal(signal.SIGCONT)
    eventually(lambda: lease_row(store).term == taken.term + 1, "the first one leads again")
    assert _holder_pid(lease_row(store).holder) == first.pid
    eventually(
        lambda: any(
            d.evidence["lease"]["term"] == taken.term + 1 for d in _controller_decisions(store)
        ),
        "the first one acts again",
    )
    first.send_signal(signal.SIGTERM)
    assert first.wait(60) == 0


def test_a_lease_shorter_than_a_second_is_refused_by_the_commands(sqlite_url: str) -> None:
    for command in (["rollout", "run"], ["serve", "--controller"]):
        refused = run(sqlite_url, *command, "--lease", "500ms")
        assert refused.returncode == 2
        assert "a lease must last at least 1s" in refused.stderr
        assert "Traceback" not in refused.stderr


def test_a_server_runs_its_controller_with_the_lease_it_was_given(
    sqlite_url: str, tmp_path: Path
) -> None:
    store = open_store(sqlite_url)
    with running_server(sqlite_url, tmp_path, "--controller", "--lease", "7s"):
        eventually(lambda: lease_row(store) is not None, "the server's controller leads")
        row = lease_row(store)
        assert row.expires_at - row.renewed_at == pytest.approx(7)
    assert lease_row(store).expires_at <= database_now(store), "released on shutdown"
