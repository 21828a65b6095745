"""The codec cutover, end to end on the embedded SQLite store, in simulated time.

legacy -> shadow -> canary 5% -> 25% -> 50% -> 100% -> new, an hour of synthetic traffic at
each step; `cutover stats` after every step, and the grouped drifts that reveal the port's bugs.
Run it with `make demo` (or `python -m examples.codec.demo`); afterwards the same store
answers the CLI (the commands are printed at the end).
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from pathlib import Path

import cutover
from cutover import operations
from cutover.cli._app import console
from cutover.cli.stats import render
from cutover.model import Mode
from cutover.stats import check
from examples.codec.payments import legacy_encode, new_encode

ROOT = Path(__file__).resolve().parents[2]
DATABASE = Path(os.environ.get("DEMO_DATABASE", ROOT / "cutover-demo.db"))
STORE = f"sqlite:///{DATABASE}"
CALLS_PER_STEP = int(os.environ.get("DEMO_CALLS", "20000"))
STEPS = [
    ("legacy", dict(mode=Mode.LEGACY), "baseline: legacy only"),
    ("shadow", dict(mode=Mode.SHADOW, sample=1.0), "shadow every call to find drift"),
    ("canary 5%", dict(mode=Mode.CANARY, percent=5, sample=0.2), "canary 5%"),
    ("canary 25%", dict(mode=Mode.CANARY, percent=25), "canary 25%"),
    ("canary 50%", dict(mode=Mode.CANARY, percent=50), "canary 50%"),
    ("canary 100%", dict(mode=Mode.CANARY, percent=100), "canary 100%, legacy as fallback"),
    ("new", dict(mode=Mode.NEW), "retire legacy: new only"),
]


def synthetic_message(rng: random.Random, number: int) -> dict[str, object]:
    cents = rng.randrange(100, 500_000)
    amount = f"{cents / 100:.2f}"
    if rng.random() < 0.02:  # a few amounts carry a half cent
        amount = f"{cents / 100:.2f}5"
    memo = rng.choice(["", "rent", "groceries ", "café", "refund"])
    if rng.random() < 0.01:
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


def main() -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{DATABASE}{suffix}").unlink(missing_ok=True)
    started = time.perf_counter()
    clock = cutover.ManualClock(start=time.time() - len(STEPS) * 3600)
    runtime = cutover.configure(STORE, clock=clock, flush_interval=3600, wait=0)
    encode = cutover.Migration(
        "codec",
        legacy_encode,
        new_encode,
        compare=cutover.compare.structural(),
        unit=lambda message: message["user"],
    )
    rng = random.Random(2026)
    number = 0
    for label, change, reason in STEPS:
        banner(f"step: {label}")
        print(f"$ cutover set codec {' '.join(_flags(change))} --reason {reason!r}")
        operations.set_state(
            runtime.store,
            "codec",
            operations.Change(**change),
            reason=reason,
            actor="demo@cutover",
            clock=clock,
        )
        runtime.refresh()
        for _ in range(CALLS_PER_STEP):
            number += 1
            encode(synthetic_message(rng, number))
        cutover.flush()
        report = operations.stats(runtime.store, "codec", 3600, clock())
        render(report)
        if label == "shadow":
            gate = check(report, max_drift_rate=0.001)[0]
            print(f"$ cutover check codec --max-drift-rate 0.001  ->  {gate.describe()}")
            banner("drifts by root cause: two bugs")
            for group in runtime.store.drift_groups("codec", since=clock() - 3600):
                example = group.example
                entry = example.diff[0] if example and example.diff else {}
                drifts = f"{group.count} drift{'s' if group.count != 1 else ''}"
                print(
                    f"  {drifts:>11}  {group.fingerprint:<18} e.g. legacy"
                    f" {entry.get('legacy')!r} vs new {entry.get('new')!r}"
                    f"  (unit {example.unit if example else '-'})"
                )
        clock.advance(3600)
    runtime.refresh()
    cutover.flush()
    banner("decision log")
    for decision in runtime.store.decisions("codec"):
        print(
            f"  v{decision.new.version}  {decision.actor}  {decision.new.mode.value:<7}"
            f" {decision.new.effective_percent:>5g}%  {decision.reason}"
        )
    cutover.runtime.shutdown()
    banner("the same store, through the CLI")
    for args in (["status"], ["drifts", "codec", "--group", "--limit", "3"]):
        print(f"$ cutover --store {STORE} {' '.join(args)}")
        subprocess.run([sys.executable, "-m", "cutover", "--store", STORE, *args], check=True)
    elapsed = time.perf_counter() - started
    print(f"\nDone in {elapsed:.1f}s. Try: cutover --store {STORE} history codec")


def _flags(change: dict[str, object]) -> list[str]:
    flags = []
    for key, value in change.items():
        flags += [f"--{key}", value.value if isinstance(value, Mode) else f"{value:g}"]
    return flags


if __name__ == "__main__":
    main()
