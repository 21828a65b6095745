"""The tenant data move, end to end: legacy.db to new.db with dual writes, audits, cohorts.

It follows the hybrid migration playbook phase by phase on three SQLite files (the legacy
database, the new one and the cutover store): a backfill with a bug that the audit gate
catches and reconcile repairs; shadow reads with legacy-primary writes through an outage of
the new database, replayed from the outbox; mirror writes; cohorts promoted in waves, one
rolled back after a drift in its tenant's data; the final cutover and the decision log.
Operator steps are the real ``cutover`` commands; application traffic goes through a
:class:`cutover.data.DualStore`. Run it with ``make demo-tenants``.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa

import cutover
import cutover.runtime
from cutover.cli._app import console
from cutover.data import DualStore, TableRepository

ROOT = Path(__file__).resolve().parents[2]
FOLDER = Path(os.environ.get("DEMO_FOLDER", ROOT / "cutover-tenants-demo"))
LEGACY, NEW = FOLDER / "legacy.db", FOLDER / "new.db"
STORE = f"sqlite:///{FOLDER / 'cutover.db'}"
REPORTS = Path(os.environ.get("DEMO_REPORTS", ROOT / "reports"))
TENANTS = ("acme", "globex", "initech", "umbrella", "hooli", "stark")
ORDERS = 3000


def banner(text: str) -> None:
    console.print(f"\n[bold]== {text} ==[/bold]")


def run(*args: str, expect: int = 0) -> int:
    """Run ``cutover ARGS`` against the demo's store, as an operator would, and show it."""
    console.print(f"[dim]$ cutover {' '.join(args)}[/dim]")
    sys.stdout.flush()
    done = subprocess.run(
        [sys.executable, "-m", "cutover", "--store", STORE, *args], check=False, cwd=FOLDER
    )
    if done.returncode != expect:
        raise SystemExit(f"cutover {args[0]} exited {done.returncode}, expected {expect}")
    return done.returncode


def audit(name: str, *extra: str, expect: int = 0) -> None:
    run(
        "audit",
        "--source",
        "legacy.db",
        "--target",
        "new.db",
        "--table",
        "orders",
        "--tenant-column",
        "tenant",
        "--json",
        name,
        "--fail-on-drift",
        *extra,
        expect=expect,
    )


def create(path: Path) -> sa.Engine:
    engine = sa.create_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE orders (id INTEGER PRIMARY KEY, tenant TEXT NOT NULL,"
            " status TEXT NOT NULL, amount NUMERIC(12, 2) NOT NULL, note TEXT)"
        )
    return engine


def order(rng: random.Random, number: int) -> dict[str, Any]:
    return {
        "id": number,
        "tenant": TENANTS[number % len(TENANTS)],
        "status": rng.choice(["open", "paid", "shipped"]),
        "amount": str(Decimal(rng.randrange(100, 100_000)) / 100),
        "note": rng.choice([None, "", "gift", "café"]),
    }


class NewDatabase(TableRepository):
    """The new database as the application sees it, with the faults of a real rollout: an
    outage, and a writer bug that drops status changes of one tenant."""

    down = False
    buggy_tenant: str | None = None

    def put(self, key: Any, row: Any) -> None:
        if self.down:
            raise ConnectionError("new database unreachable")
        if row.get("tenant") == self.buggy_tenant and row.get("status") == "refunded":
            row = {**row, "status": "paid"}  # the new writer maps refunded to paid: a bug
        super().put(key, row)


def traffic(orders: DualStore, rng: random.Random, calls: int, *, refunds: bool = False) -> None:
    """Application traffic: reads and writes of random orders, each under its tenant."""
    for _ in range(calls):
        number = rng.randrange(1, ORDERS + 1)
        tenant = TENANTS[number % len(TENANTS)]
        if rng.random() < 0.3:
            row = orders.get(number, tenant=tenant) or order(rng, number)
            status = "refunded" if refunds and rng.random() < 0.5 else "shipped"
            orders.put(number, {**row, "status": status}, tenant=tenant)
        else:
            orders.get(number, tenant=tenant)
    cutover.flush()


def main() -> None:
    shutil.rmtree(FOLDER, ignore_errors=True)
    FOLDER.mkdir(parents=True)
    rng = random.Random(7)
    legacy_db, new_db = create(LEGACY), create(NEW)
    rows = [order(rng, number) for number in range(1, ORDERS + 1)]
    with legacy_db.begin() as conn:
        conn.execute(
            sa.text("INSERT INTO orders VALUES (:id, :tenant, :status, :amount, :note)"), rows
        )

    banner("Preparation: backfill new.db, then the audit gate")
    backfilled = [dict(row) for row in rows]
    for row in backfilled[::500]:  # the backfill job added a cent to some amounts
        row["amount"] = str(Decimal(row["amount"]) + Decimal("0.01"))
    del backfilled[1234]  # and lost one order
    with new_db.begin() as conn:
        conn.execute(
            sa.text("INSERT INTO orders VALUES (:id, :tenant, :status, :amount, :note)"), backfilled
        )
    tour = FOLDER / "tour"  # the README's tour starts from here, with a store of its own
    tour.mkdir()
    for database in (LEGACY, NEW):
        shutil.copy(database, tour / database.name)
    audit("backfill.json", expect=1)
    run("reconcile", "backfill.json", "--apply")
    audit("backfill-after.json")

    cutover.configure(STORE, instance="demo-app")
    new = NewDatabase(new_db, "orders")
    orders = DualStore(
        "orders",
        legacy=TableRepository(legacy_db, "orders"),
        new=new,
        journal=str(FOLDER / "orders.outbox.jsonl"),
        tolerance={tenant: 0.02 for tenant in TENANTS},
    )

    banner("Shadow read: legacy-primary writes, compared reads, through an outage of new.db")
    run("set", "orders", "--mode", "shadow", "--reason", "phase 1: shadow reads, CAB-101")
    cutover.current().refresh()
    new.down = True
    traffic(orders, rng, 200)
    console.print(f"during the outage: {len(orders.pending())} writes wait in the outbox")
    new.down = False
    result = orders.replay()
    console.print(f"replayed {len(result.repaired)} writes, {result.remaining} left")
    orders.reset_drift(every=True)  # the outage's drift is repaired: tenants start afresh
    audit("shadow.json")

    banner("Dual write: mirror writes for every tenant")
    run("set", "orders", "--mode", "canary", "--percent", "0", "--reason", "phase 2: mirror")
    cutover.current().refresh()
    traffic(orders, rng, 300)
    audit("dual-write.json")

    banner("Cutover read, wave 1: acme and globex read from new.db")
    run(
        "cohort",
        "add",
        "wave-1",
        "--migration",
        "orders",
        "--tenants",
        "acme,globex",
        "--wave",
        "1",
        "--reason",
        "low volume first",
    )
    run(
        "cohort",
        "add",
        "wave-2",
        "--migration",
        "orders",
        "--tenants",
        "initech,umbrella",
        "--wave",
        "2",
        "--reason",
        "strategic accounts",
    )
    run(
        "cohort",
        "promote",
        "wave-1",
        "--migration",
        "orders",
        "--audit",
        "dual-write.json",
        "--reason",
        "CAB-102 go",
    )
    cutover.current().refresh()
    traffic(orders, rng, 300)
    audit("wave-1.json")

    banner("Wave 2, a drift in initech's data, and the cohort's rollback")
    run(
        "cohort",
        "promote",
        "wave-2",
        "--migration",
        "orders",
        "--audit",
        "wave-1.json",
        "--reason",
        "CAB-103 go",
    )
    cutover.current().refresh()
    new.buggy_tenant = "initech"
    traffic(orders, rng, 300, refunds=True)
    audit("wave-2.json", "--where", "tenant IN ('initech', 'umbrella')", expect=1)
    run(
        "cohort", "rollback", "wave-2", "--migration", "orders", "--reason", "initech refunds drift"
    )
    cutover.current().refresh()
    new.buggy_tenant = None  # the writer is fixed
    run("reconcile", "wave-2.json", "--apply")
    audit("wave-2-after.json", "--where", "tenant IN ('initech', 'umbrella')")
    run("strategies", "orders")

    banner("Final cutover: new.db is the truth, then legacy.db is retired")
    run(
        "cohort",
        "promote",
        "wave-2",
        "--migration",
        "orders",
        "--audit",
        "wave-2-after.json",
        "--reason",
        "CAB-104 go after the fix",
    )
    run("set", "orders", "--mode", "new", "--reason", "phase 4: new is primary, CAB-105")
    cutover.current().refresh()
    traffic(orders, rng, 300)
    audit("final.json")
    run(
        "set",
        "orders",
        "--mode",
        "new",
        "--no-fallback",
        "--reason",
        "decommission legacy, CAB-106",
    )
    run("strategies", "orders", "--tenant", "hooli")
    run("history", "orders", "--limit", "20")
    cutover.runtime.shutdown()

    banner(f"The change board's papers, written into {REPORTS}")
    REPORTS.mkdir(parents=True, exist_ok=True)
    run("report", "cab", "orders", "--audit", str(FOLDER / "final.json"),
        "-o", str(REPORTS / "cab-pack-orders.md"))  # fmt: skip
    run("report", "closure", "orders", "-o", str(REPORTS / "closure-orders.md"))
    console.print("[dim]$ cutover history orders --format markdown > cab_decision_log.md[/dim]")
    log = subprocess.run(
        [sys.executable, "-m", "cutover", "--store", STORE, "history", "orders", "--format",
         "markdown"], check=True, cwd=FOLDER, capture_output=True, text=True,
    )  # fmt: skip
    (REPORTS / "cab_decision_log.md").write_text(log.stdout)
    messages = REPORTS / "messages"
    messages.mkdir(exist_ok=True)
    run("notify", "render", str(ROOT / "examples" / "notify" / "complete.txt.j2"),
        "--migration", "orders", "--cohort", "wave-1",
        "--tenants", str(ROOT / "examples" / "notify" / "customers.yaml"),
        "--output-dir", str(messages))  # fmt: skip
    console.print(
        f"\nThe playbook's files stay in {FOLDER}. To walk it yourself from the backfill,"
        f" follow the README's tenant tour in {tour}, which holds the two databases as the"
        " backfill left them and no store yet (activate the environment first:"
        " . .venv/bin/activate).",
        markup=False,
    )


if __name__ == "__main__":
    main()
