"""The codec cutover driven by a rollout plan, end to end on the embedded SQLite store.

The controller walks `examples/codec/plan.yaml` on a simulated clock, a minute of synthetic
traffic at a time. The first port drifts in shadow mode, so the controller returns to legacy
and the grouped drifts name both bugs. The fixed port is retried: the controller promotes it
through 5% and 25% on its own, catches the drift its overflow path causes at 50%, and rolls
back to 25%. The decision log shows every step with its evidence. Run it with `make demo`
(or `python -m examples.codec.demo`); afterwards the same store answers the CLI.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import cutover
from cutover.cli._app import console
from cutover.cli.rollout import render as render_status
from cutover.control.controller import Controller, step_label
from cutover.control.plan import load_plan
from cutover.model import Decision
from examples.codec.payments import FixedPort, legacy_encode, new_encode

ROOT = Path(__file__).resolve().parents[2]
DATABASE = Path(os.environ.get("DEMO_DATABASE", ROOT / "cutover-demo.db"))
REPORTS = Path(os.environ.get("DEMO_REPORTS", ROOT / "reports"))
STORE = f"sqlite:///{DATABASE}"
PLAN = Path(__file__).with_name("plan.yaml")
CALLS_PER_MINUTE = int(os.environ.get("DEMO_CALLS", "1000"))


def synthetic_message(rng: random.Random, number: int) -> dict[str, object]:
    cents = rng.randrange(100, 500_000)
    amount = f"{cents / 100:.2f}"
    if rng.random() < 0.02:  # a few amounts carry a half cent
        amount = f"{cents / 100:.2f}5"
    memo = rng.choice(["", "rent", "groceries ", "café", "refund"])
    if rng.random() < 0.02:
        memo = "  " + memo + "gift"
    lines = {f"sku-{rng.randrange(40)}": rng.randrange(1, 5) for _ in range(rng.randrange(0, 4))}
    return {
        "id": f"msg-{number}",
        "user": f"user-{rng.randrange(5000)}",
        "amount": amount,
        "currency": rng.choice(["eur", "usd", "gbp"]),
        "memo": memo,
        "lines": lines,
    }


def banner(text: str) -> None:
    console.print(f"\n[bold]== {text} ==[/bold]")


class Demo:
    """The app (a migration called with synthetic traffic) and the controller, on one clock."""

    def __init__(self) -> None:
        start = (int(time.time()) // 3600 - 8) * 3600  # eight hours ago, on the hour
        self.clock = cutover.ManualClock(start=start)
        self.began = start
        self.runtime = cutover.configure(
            STORE, clock=self.clock, flush_interval=3600, refresh_interval=3600, wait=0
        )
        self.port = FixedPort(capacity=int(CALLS_PER_MINUTE * 0.45))
        self.implementation = new_encode
        self.encode = cutover.Migration(
            "codec",
            legacy_encode,
            self.new,
            compare=cutover.compare.structural(),
            unit=lambda message: message["user"],
        )
        self.controller = Controller(self.runtime.store, clock=self.clock)
        self.rng = random.Random(2)
        random.seed(2)  # which calls are compared is drawn from it: every run is the same
        self.number = 0

    def new(self, message: dict[str, object]) -> dict[str, object]:
        return self.implementation(message)

    def minute(self) -> list[Decision]:
        """A minute of traffic, then a controller pass; the app follows the new state."""
        self.port.next_minute()
        for _ in range(CALLS_PER_MINUTE):
            self.number += 1
            self.encode(synthetic_message(self.rng, self.number))
        cutover.flush()
        self.clock.advance(60)
        decisions = self.controller.tick()
        for decision in decisions:
            self.show(decision)
        self.runtime.refresh()
        return decisions

    def until(self, kinds: set[str], limit: int) -> None:
        for _ in range(limit):
            if any(d.kind in kinds for d in self.minute()):
                return
        raise SystemExit(f"the demo expected one of {sorted(kinds)} within {limit} minutes")

    def show(self, decision: Decision) -> None:
        at = (decision.at - self.began) / 60
        print(f"  +{at:5.0f} min  {decision.actor:<14} {decision.kind:<8} {decision.reason}")


def main() -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{DATABASE}{suffix}").unlink(missing_ok=True)
    started = time.perf_counter()
    demo = Demo()
    plan = load_plan(PLAN)
    relative = PLAN.relative_to(ROOT)

    banner("1. the first port, under the plan")
    print(f"$ cutover rollout start {relative}")
    demo.show(demo.controller.start(plan, actor="team-payments", source=str(relative)))
    demo.until({"abort"}, 30)
    banner("drifts by root cause: two bugs")
    store = demo.runtime.store
    for group in store.drift_groups("codec"):
        example = group.example
        entry = example.diff[0] if example and example.diff else {}
        drifts = f"{group.count} drift{'s' if group.count != 1 else ''}"
        print(
            f"  {drifts:>11}  {group.fingerprint:<18} e.g. legacy"
            f" {entry.get('legacy')!r} vs new {entry.get('new')!r}"
        )

    banner("2. both bugs fixed: walk the plan again")
    demo.implementation = demo.port
    print("$ cutover rollout retry codec --reason 'decimal rounding and memo fixed'")
    demo.show(
        demo.controller.retry(
            "codec", actor="team-payments", reason="decimal rounding and memo fixed"
        )
    )
    demo.until({"rollback"}, 200)
    for _ in range(20):  # rolled back, it holds at 25%: guarded, not promoted again
        demo.minute()
    rollout = store.rollout("codec")
    state = store.state("codec")
    assert rollout is not None and state is not None
    print(
        f"\n  now: {rollout.status.value} at {step_label(plan, rollout.step)},"
        f" {state.mode.value} {state.percent:g}%, serving normally"
    )

    banner("the evidence behind the rollback")
    rollback = next(d for d in reversed(store.decisions("codec")) if d.kind == "rollback")
    for check in rollback.evidence["checks"]:
        print(f"  {check['name']:<10} {check['outcome']:<13} {check['reason']}")

    banner("cutover rollout status codec (at the demo's simulated time)")
    render_status(demo.controller.evaluate("codec"))
    cutover.runtime.shutdown()
    demo.controller.close()

    banner("the same store, through the CLI")
    # The demo ran on a simulated clock: reports over "the last hour" of real time are empty,
    # so the commands name the simulated span.
    span = ["--since", iso(demo.began), "--until", iso(demo.clock())]
    command = cli_command()
    for args in (["history", "codec"], ["stats", "codec", *span]):
        print(f"$ {command} --store {STORE} {' '.join(args)}")
        subprocess.run([sys.executable, "-m", "cutover", "--store", STORE, *args], check=True)
    banner(f"the reports, written into {REPORTS}")
    REPORTS.mkdir(parents=True, exist_ok=True)
    for args in (
        ["report", "weekly", "codec", *span, "-o", str(REPORTS / "codec-weekly.md")],
        ["report", "slo", "codec", *span, "-o", str(REPORTS / "codec-slo.md")],
        ["report", "monthly", "codec", *span, "-o", str(REPORTS / "codec-monthly.md")],
        ["generate", "prometheus-rules", "codec", "-o", str(REPORTS / "codec-rules.yaml")],
        ["generate", "grafana-dashboard", "codec", "-o", str(REPORTS / "codec-dashboard.json")],
    ):
        print(f"$ {command} --store {STORE} {' '.join(args)}")
        subprocess.run([sys.executable, "-m", "cutover", "--store", STORE, *args], check=True)
    elapsed = time.perf_counter() - started
    print(f"\nDone in {elapsed:.1f}s. Try:")
    for args in (["drifts", "codec", "--group"], ["stats", "codec", *span, "--json"]):
        print(f"  {command} --store {STORE} {' '.join(args)}")


def iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%MZ")


def cli_command() -> str:
    """How to run `cutover` from the shell that started the demo: the virtual environment's
    script, unless that environment is active (its scripts then on PATH)."""
    script = Path(sys.executable).parent / "cutover"
    if shutil.which("cutover") == str(script):
        return "cutover"
    try:
        return str(script.relative_to(Path.cwd()))
    except ValueError:
        return str(script)


if __name__ == "__main__":
    main()
