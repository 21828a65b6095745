"""Running the controller for real: two at once, webhooks, and a real Prometheus server."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cutover.clock import ManualClock
from cutover.control.controller import Controller
from cutover.control.notify import Notifier
from cutover.control.plan import Webhook
from cutover.model import Decision, RolloutStatus
from cutover.store import open_store

from ..prometheus_server import need_prometheus, running_prometheus, serving_gauge
from .test_scenarios import drive, kinds, plan
from .traffic import Traffic


def _race(controllers: list[Controller], traffic: Traffic, minutes: int) -> list[Decision]:
    """Minutes of traffic; after each, every controller ticks at the same moment."""
    taken: list[Decision] = []
    lock = threading.Lock()
    for _ in range(minutes):
        traffic.minute()
        seen = len(taken)
        barrier = threading.Barrier(len(controllers))

        def one(controller: Controller, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            decisions = controller.tick()
            with lock:
                taken.extend(decisions)

        threads = [threading.Thread(target=one, args=(c,)) for c in controllers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        if any(d.kind == "approval_needed" for d in taken[seen:]):
            controllers[0].approve("codec", by="cab", reason="ok")
    return taken


def _no_duplicates(url: str, clock: ManualClock, minutes: int) -> list[Decision]:
    controllers = [Controller(open_store(url), clock=clock) for _ in range(2)]
    controllers[0].start(plan(), actor="alice")
    taken = _race(controllers, Traffic(controllers[0].store, "codec", clock), minutes)
    history = controllers[0].store.decisions("codec", limit=1000)
    # Every transition happened exactly once: one decision per (kind, step it led to).
    transitions = [(d.kind, d.evidence["rollout"]["to"]["step"]) for d in history]
    assert len(transitions) == len(set(transitions)), transitions
    assert len(taken) == len({d.id for d in taken}), "no decision reported by both"
    for controller in controllers:
        controller.close()
    return taken


def test_two_controllers_on_postgresql_take_no_duplicate_action(pg_url: str) -> None:
    clock = ManualClock()
    taken = _no_duplicates(pg_url, clock, 90)
    assert kinds(taken).count("promote") == 5
    assert open_store(pg_url).rollout("codec").status is RolloutStatus.COMPLETED  # type: ignore[union-attr]


def test_only_one_postgresql_controller_holds_the_lease(pg_url: str) -> None:
    first, second = (Controller(open_store(pg_url), clock=ManualClock()) for _ in range(2))
    try:
        assert first._lease.held()
        assert not second._lease.held(), "the advisory lock is taken"
        assert second.tick() == [], "a standby controller does nothing"
        first.close()  # the leader goes away: the lock is released with its session
        assert second._lease.held()
    finally:
        first.close()
        second.close()


def test_two_controllers_on_sqlite_take_no_duplicate_action(tmp_path: Path) -> None:
    # No advisory lock on SQLite: the compare-and-set of every write is what keeps them apart.
    taken = _no_duplicates(f"sqlite:///{tmp_path / 'shared.db'}", ManualClock(), 90)
    assert kinds(taken).count("promote") == 5


class _Receiver(http.server.BaseHTTPRequestHandler):
    received: list[dict[str, object]]
    status = 200
    delay = 0.0

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        time.sleep(self.delay)
        type(self).received.append(json.loads(body))
        self.send_response(self.status)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[str, type[_Receiver]]]:
    handler = type("Receiver", (_Receiver,), {"received": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hooks", handler
    finally:
        server.shutdown()


def test_webhooks_receive_every_decision_with_its_evidence(
    tmp_path: Path, receiver: tuple[str, type[_Receiver]]
) -> None:
    url, handler = receiver
    clock = ManualClock()
    controller = Controller(open_store(f"sqlite:///{tmp_path / 'r.db'}"), clock=clock)
    hooks = [{"webhook": url}, {"webhook": url + "/approvals", "events": ["approval_needed"]}]
    controller.start(plan(notify=hooks), actor="alice")
    taken = drive(controller, Traffic(controller.store, "codec", clock), 60)
    controller.close()
    events = [p["event"] for p in handler.received]
    assert events.count("approval_needed") == 2, "sent to both hooks"
    assert [e for e in events if e != "approval_needed"] == [
        k for k in ["start", *kinds(taken)] if k != "approval_needed"
    ]
    promoted = next(p for p in handler.received if p["event"] == "promote")
    assert promoted["migration"] == "codec" and promoted["actor"] == "controller"
    assert promoted["decision"]["evidence"]["checks"]  # type: ignore[index]


def test_a_slow_or_failing_webhook_never_blocks_the_loop(
    tmp_path: Path, receiver: tuple[str, type[_Receiver]]
) -> None:
    url, handler = receiver
    handler.status, handler.delay = 500, 0.3
    clock = ManualClock()
    notifier = Notifier(backoff=0.05, attempts=3)
    controller = Controller(
        open_store(f"sqlite:///{tmp_path / 'r.db'}"), clock=clock, notifier=notifier
    )
    controller.start(plan(notify=[{"webhook": url}]), actor="alice")
    traffic = Traffic(controller.store, "codec", clock)
    for _ in range(11):
        traffic.minute()
    # The first pass that judges a rate imports SciPy (a second on a slow machine); imported
    # already, the pass timed below measures the loop alone, as in a running controller.
    import scipy.stats  # noqa: F401

    began = time.perf_counter()
    assert kinds(controller.tick()) == ["promote"]
    assert time.perf_counter() - began < 0.3, "the tick did not wait for the receiver"
    assert notifier.close(timeout=10)
    assert notifier.failed == 2 and notifier.delivered == 0
    assert len(handler.received) == 6, "two notifications, three attempts each"


@pytest.mark.slow
def test_a_prometheus_check_reads_a_real_server_and_rolls_back(tmp_path: Path) -> None:
    need_prometheus()
    with (
        serving_gauge("app_resident_memory_bytes", 1.0e9) as (memory, target),
        running_prometheus([target]) as prometheus,
    ):
        clock = ManualClock()
        controller = Controller(open_store(f"sqlite:///{tmp_path / 'r.db'}"), clock=clock)
        steps = [
            {"mode": "shadow", "hold": "10m"},
            {"mode": "canary", "percent": 5, "hold": "10m"},
            {"mode": "canary", "percent": 25, "hold": "10m"},
        ]
        memory_check = {
            "name": "memory",
            "source": "prometheus",
            "query": 'max(max_over_time(app_resident_memory_bytes{job="app"}[$window]))',
            "max": 2.0e9,
            "window": "1m",
        }
        controller.start(
            plan(steps=steps, checks=[memory_check], prometheus={"url": prometheus}),
            actor="alice",
        )
        assert "a query needs a minute of it" in controller.evaluate("codec").checks[0].reason
        clock.advance(60)
        evaluation = controller.evaluate("codec")
        deadline = time.monotonic() + 30
        while evaluation.checks[0].outcome.value != "pass" and time.monotonic() < deadline:
            time.sleep(0.5)  # the first scrape lands a few seconds after start
            evaluation = controller.evaluate("codec")
        assert evaluation.checks[0].outcome.value == "pass", evaluation.checks[0].reason
        assert evaluation.checks[0].value == 1.0e9
        traffic = Traffic(controller.store, "codec", clock)
        assert kinds(drive(controller, traffic, 12)) == ["promote"]
        memory.set(3.0e9)  # the new arm leaks
        clock.advance(60)
        taken: list[Decision] = []
        deadline = time.monotonic() + 30
        while not taken and time.monotonic() < deadline:
            time.sleep(0.5)
            taken = controller.tick()
        assert kinds(taken) == ["rollback"], controller.evaluate("codec").checks
        assert "memory failed: 3e+09 is beyond 2e+09" in taken[0].reason
        controller.close()


def test_an_unreachable_prometheus_is_inconclusive_not_a_failure(tmp_path: Path) -> None:
    from ..helpers import free_port

    clock = ManualClock()
    controller = Controller(open_store(f"sqlite:///{tmp_path / 'r.db'}"), clock=clock)
    check = {"name": "memory", "source": "prometheus", "query": "max(up)", "max": 1}
    controller.start(
        plan(checks=[check], prometheus={"url": f"http://127.0.0.1:{free_port()}"}), actor="a"
    )
    clock.advance(60)
    result = controller.evaluate("codec").checks[0]
    assert result.outcome.value == "inconclusive" and "127.0.0.1" in result.reason
    assert drive(controller, Traffic(controller.store, "codec", clock), 15) == []


def test_a_notifier_delivers_again_after_it_was_closed(
    receiver: tuple[str, type[_Receiver]],
) -> None:
    url, handler = receiver
    notifier = Notifier()
    hook = [Webhook(webhook=url)]
    notifier.send(hook, {"event": "pause"})
    assert notifier.close(timeout=10)
    assert notifier.close(timeout=10), "closing twice is harmless"
    notifier.send(hook, {"event": "resume"})
    assert notifier.close(timeout=10)
    assert [p["event"] for p in handler.received] == ["pause", "resume"]
