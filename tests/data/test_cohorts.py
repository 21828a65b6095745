"""Tenant cohorts on SQLite and the real PostgreSQL: waves, one change per move, the rollback
window, audit gates, and the ``cutover cohort`` commands."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cutover.cli import main
from cutover.clock import ManualClock
from cutover.data import cohorts
from cutover.errors import ConflictError, InvalidInput, UnknownMigration
from cutover.model import Arm, Mode, State
from cutover.routing import compile_route, serving_arm
from cutover.store import Cohort, CohortStatus, Store, open_store

HOUR = 3600.0


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    opened = open_store(store_url)
    yield opened
    opened.close()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


def orders(store: Store, clock: ManualClock, **fields: Any) -> State:
    """The migration ``orders`` in dual write (canary 0%), as the tenant playbook has it."""
    state = State(mode=Mode.CANARY, percent=0, **fields)
    decision = store.write_state(
        "orders", state, expected_version=0, actor="ops", reason="dual write", at=clock()
    )
    return decision.new


def plan(store: Store, clock: ManualClock, name: str, tenants: str, wave: int, **kw: Any) -> Cohort:
    change = cohorts.add(
        store,
        "orders",
        name,
        tenants=tenants.split(","),
        wave=wave,
        actor="ana",
        clock=clock,
        **kw,
    )
    assert change.cohort is not None
    return change.cohort


def state_of(store: Store) -> State:
    found = store.state("orders")
    assert found is not None
    return found


def status_of(store: Store, name: str) -> CohortStatus:
    found = store.cohort("orders", name)
    assert found is not None
    return found.status


def move(verb: Callable[..., cohorts.CohortChange], store: Store, name: str, **kw: Any) -> Any:
    kw.setdefault("reason", "scheduled")
    kw.setdefault("actor", "ana")
    return verb(store, "orders", name, **kw)


def test_waves_move_tenants_in_one_change_each(store: Store, clock: ManualClock) -> None:
    orders(store, clock, pins_legacy=frozenset({"acme"}), pins_new=frozenset({"staff"}))
    first = plan(store, clock, "wave-1", "acme,globex, globex", 1, reason="pilot tenants")
    assert (first.tenants, first.status, first.version, first.window) == (
        ("acme", "globex"),
        CohortStatus.PLANNED,
        1,
        48 * HOUR,
    )
    plan(store, clock, "wave-2", "initech", 2)
    assert state_of(store).version == 1  # adding changes no state

    with pytest.raises(InvalidInput, match=r"wave 1 is not promoted yet \(cohort 'wave-1' is"):
        move(cohorts.promote, store, "wave-2", clock=clock)

    clock.advance(HOUR)
    promoted = move(cohorts.promote, store, "wave-1", clock=clock, reason="audit clean")
    state = store.state("orders")
    assert state is not None and state.version == 2
    assert (state.mode, state.percent) == (Mode.CANARY, 0.0)
    assert state.pins_new == {"staff", "acme", "globex"} and state.pins_legacy == frozenset()
    route = compile_route(state)
    assert serving_arm("orders", route, "acme") is Arm.NEW
    assert serving_arm("orders", route, "initech") is Arm.LEGACY
    decision = promoted.decision
    assert (decision.kind, decision.changed, decision.new.version) == ("cohort-promote", True, 2)
    assert decision.reason == "cohort wave-1 (wave 1, 2 tenants) pinned to new: audit clean"
    assert decision.evidence["cohort"]["status"] == "promoted"
    assert decision.evidence["cohort"]["rollback_until"] == clock() + 48 * HOUR
    assert store.cohort("orders", "wave-1") == promoted.cohort
    assert promoted.cohort.version == 2 and promoted.cohort.promoted_at == clock()
    with pytest.raises(InvalidInput, match="already promoted"):
        move(cohorts.promote, store, "wave-1", clock=clock)

    move(cohorts.promote, store, "wave-2", clock=clock)
    clock.advance(47 * HOUR)
    back = move(cohorts.rollback, store, "wave-1", clock=clock, reason="latency")
    state = store.state("orders")
    assert state is not None and state.version == 4
    assert state.pins_new == {"staff", "initech"} and state.pins_legacy == {"acme", "globex"}
    assert back.cohort.status is CohortStatus.ROLLED_BACK and not back.decision.evidence["forced"]
    with pytest.raises(InvalidInput, match="was already rolled back at"):
        move(cohorts.rollback, store, "wave-1", clock=clock)

    log = store.decisions("orders")
    assert [(d.kind, d.changed) for d in log] == [
        ("set", True),
        ("cohort-add", False),
        ("cohort-add", False),
        ("cohort-promote", True),
        ("cohort-promote", True),
        ("cohort-rollback", True),
    ]
    assert log[1].evidence["cohort"]["tenants"] == ["acme", "globex"]
    assert log[1].reason == "cohort wave-1 planned in wave 1 (2 tenants): pilot tenants"
    # A rolled-back cohort is promoted again once its cause is fixed.
    again = move(cohorts.promote, store, "wave-1", clock=clock, reason="fixed")
    assert again.cohort.status is CohortStatus.PROMOTED and again.cohort.rolled_back_at is None
    assert [c.name for c in cohorts.cohorts(store, "orders")] == ["wave-1", "wave-2"]


def test_the_rollback_window_closes_and_force_opens_it(store: Store, clock: ManualClock) -> None:
    orders(store, clock)
    plan(store, clock, "wave-1", "acme", 1, window=2 * HOUR)
    plan(store, clock, "wave-2", "globex", 2, window=2 * HOUR)
    move(cohorts.promote, store, "wave-1", clock=clock)
    move(cohorts.promote, store, "wave-2", clock=clock)
    clock.advance(2 * HOUR)  # the last moment of the window still rolls back
    move(cohorts.rollback, store, "wave-1", clock=clock)
    clock.advance(1)
    with pytest.raises(InvalidInput) as refused:
        move(cohorts.rollback, store, "wave-2", clock=clock)
    message = str(refused.value)
    assert "the rollback window of cohort 'wave-2' closed at" in message
    assert "(2h after its promotion); roll back anyway with --force" in message
    assert status_of(store, "wave-2") is CohortStatus.PROMOTED
    forced = move(cohorts.rollback, store, "wave-2", clock=clock, force=True)
    assert forced.decision.evidence["forced"] is True
    assert state_of(store).pins_legacy == {"acme", "globex"}
    plan(store, clock, "wave-3", "hooli", 3)
    with pytest.raises(InvalidInput, match="is planned, not promoted"):
        move(cohorts.rollback, store, "wave-3", clock=clock)


def test_a_tenant_belongs_to_one_cohort_until_its_cohort_is_removed(
    store: Store, clock: ManualClock
) -> None:
    orders(store, clock)
    plan(store, clock, "wave-1", "acme,globex", 1)
    with pytest.raises(InvalidInput, match="tenant 'globex' is already in cohort 'wave-1'"):
        plan(store, clock, "wave-2", "initech,globex", 2)
    with pytest.raises(InvalidInput, match="'wave-1' of 'orders' already exists"):
        plan(store, clock, "wave-1", "hooli", 1)
    assert [c.name for c in store.cohorts("orders")] == ["wave-1"]

    removed = move(cohorts.remove, store, "wave-1", clock=clock, reason="regroup")
    assert removed.cohort is None and removed.decision.kind == "cohort-remove"
    assert not removed.decision.changed and store.cohort("orders", "wave-1") is None
    plan(store, clock, "wave-2", "initech,globex", 2)
    move(cohorts.promote, store, "wave-2", clock=clock)
    with pytest.raises(InvalidInput, match="cohort 'wave-2' is promoted; roll it back first"):
        move(cohorts.remove, store, "wave-2", clock=clock)
    move(cohorts.rollback, store, "wave-2", clock=clock)
    move(cohorts.remove, store, "wave-2", clock=clock)  # its tenants stay pinned to legacy
    assert state_of(store).pins_legacy == {"initech", "globex"}
    assert [d.kind for d in store.decisions("orders")][-2:] == ["cohort-rollback", "cohort-remove"]


def test_concurrent_cohorts_never_share_a_tenant_nor_lose_a_pin(
    store: Store, clock: ManualClock
) -> None:
    orders(store, clock)
    outcomes: list[str] = []
    barrier = threading.Barrier(6)

    def claim(index: int) -> None:
        barrier.wait()
        try:
            plan(store, clock, f"c{index}", f"own-{index},shared", 1)
            outcomes.append("added")
        except InvalidInput as error:
            assert "tenant 'shared' is already in cohort" in str(error)
            outcomes.append("refused")

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["added"] + ["refused"] * 5
    for index in range(6):
        if store.cohort("orders", f"c{index}") is None:
            plan(store, clock, f"c{index}", f"own-{index}", 1)

    def promote(index: int) -> None:
        barrier.wait()
        move(cohorts.promote, store, f"c{index}", clock=clock)

    threads = [threading.Thread(target=promote, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    state = store.state("orders")
    assert state is not None and state.version == 7  # one change per promotion, none lost
    assert state.pins_new == {f"own-{i}" for i in range(6)} | {"shared"}
    assert all(c.status is CohortStatus.PROMOTED for c in store.cohorts("orders"))


def test_a_stale_expected_version_writes_nothing(store: Store, clock: ManualClock) -> None:
    orders(store, clock)
    plan(store, clock, "wave-1", "acme", 1)
    with pytest.raises(ConflictError, match="'orders' is at version 1 \\(written by ops\\), not 0"):
        move(cohorts.promote, store, "wave-1", clock=clock, expected_version=0)
    assert status_of(store, "wave-1") is CohortStatus.PLANNED
    assert state_of(store).pins_new == frozenset()
    stale = store.cohort("orders", "wave-1")
    move(cohorts.promote, store, "wave-1", clock=clock, expected_version=1)
    with pytest.raises(ConflictError, match="the cohort 'wave-1' of 'orders' is at version 2"):
        store.commit(
            "orders", kind="cohort-promote", actor="x", reason="r", at=clock(),
            cohort=stale, expected_cohort=1,
        )  # fmt: skip


def test_tenants_already_pinned_record_a_decision_without_a_new_state(
    store: Store, clock: ManualClock
) -> None:
    orders(store, clock, pins_new=frozenset({"acme"}))
    plan(store, clock, "wave-1", "acme", 1)
    promoted = move(cohorts.promote, store, "wave-1", clock=clock)
    assert not promoted.decision.changed and state_of(store).version == 1
    assert promoted.cohort.status is CohortStatus.PROMOTED


def report(tenants: dict[str, dict[str, int]], **fields: Any) -> dict[str, Any]:
    """An audit report as ``cutover audit --json`` writes it (the parts cohorts read)."""
    return {
        "format": "cutover-audit/1",
        "source": {"url": "sqlite:///legacy.db", "table": "orders", "rows": 10},
        "target": {"url": "sqlite:///new.db", "table": "orders_v2", "rows": 10},
        "tenant_column": "tenant_id",
        "counts": {},
        "tenants": tenants,
        "finished_at": "2026-11-23T10:00:00Z",
        **fields,
    }


def test_an_audit_gates_promotion_per_tenant(
    sqlite_url: str, clock: ManualClock, tmp_path: Path
) -> None:
    store = open_store(sqlite_url)
    orders(store, clock)
    plan(store, clock, "wave-1", "acme,globex,initech", 1)
    drift = {"acme": {"missing": 1, "extra": 0, "changed": 2, "pending": 4}, "hooli": {"extra": 9}}
    path = tmp_path / "report.json"
    path.write_text(json.dumps(report(drift)))
    with pytest.raises(InvalidInput) as refused:
        move(cohorts.promote, store, "wave-1", clock=clock, audit=str(path))
    assert str(refused.value) == (
        "tenant 'acme' of cohort 'wave-1' has 3 rows of drift (1 missing, 0 extra, 2 changed),"
        " more than the 0 allowed; reconcile and audit again, or allow more with --max-drift"
    )
    with pytest.raises(InvalidInput, match="more than the 2 allowed"):
        move(cohorts.promote, store, "wave-1", clock=clock, audit=path, max_drift=2)
    assert status_of(store, "wave-1") is CohortStatus.PLANNED
    with pytest.raises(InvalidInput, match="rows of drift"):  # force skips waves, not drift
        move(cohorts.promote, store, "wave-1", clock=clock, audit=path, force=True)

    promoted = move(cohorts.promote, store, "wave-1", clock=clock, audit=str(path), max_drift=3)
    audit = promoted.decision.evidence["audit"]
    assert audit["file"] == str(path) and audit["max_drift"] == 3
    assert (audit["source_table"], audit["target_table"]) == ("orders", "orders_v2")
    assert audit["tenants"] == {
        "acme": {"missing": 1, "extra": 0, "changed": 2, "pending": 4, "drift": 3},
        "globex": {"missing": 0, "extra": 0, "changed": 0, "pending": 0, "drift": 0},
        "initech": {"missing": 0, "extra": 0, "changed": 0, "pending": 0, "drift": 0},
    }
    store.close()


@pytest.mark.parametrize(
    ("audit", "message"),
    [
        ({"format": "other/1"}, r"the report is not an audit report \(format 'other/1'\)"),
        (report({}, tenant_column=None), "has no counts per tenant; audit again with --tenant"),
        (report({"acme": {"missing": -1}}), "unreadable counts for tenant 'acme'"),
        ("missing.json", "no audit report at missing.json"),
    ],
)
def test_an_audit_report_that_cannot_judge_tenants_is_refused(audit: Any, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        cohorts.load_audit(audit)


@pytest.mark.parametrize(
    ("name", "fields", "message"),
    [
        ("wave 1", {}, "cohort name 'wave 1' is not valid"),
        ("-x", {}, "cohort name '-x' is not valid"),
        ("w", {"tenants": [" ", ""]}, "a cohort needs at least one tenant"),
        ("w", {"wave": 0}, "--wave must be a whole number from 1"),
        ("w", {"wave": True}, "--wave must be a whole number from 1"),
        ("w", {"window": 0}, "--window must be a positive duration"),
        ("w", {"window": float("inf")}, "--window must be a positive duration"),
        ("w", {"tenants": ["t" * 401]}, "longer than 400 characters"),
        ("w", {"tenants": [str(i) for i in range(10_001)]}, "at most 10000 tenants"),
    ],
)
def test_add_validates_what_it_is_given(
    sqlite_url: str, clock: ManualClock, name: str, fields: dict[str, Any], message: str
) -> None:
    store = open_store(sqlite_url)
    orders(store, clock)
    arguments = {"tenants": ["acme"], "wave": 1, **fields}
    with pytest.raises(InvalidInput, match=message):
        cohorts.add(store, "orders", name, actor="ana", clock=clock, **arguments)
    with pytest.raises(UnknownMigration):
        cohorts.add(store, "nope", "w", tenants=["a"], wave=1, actor="ana", clock=clock)
    with pytest.raises(InvalidInput, match="a reason is required"):
        cohorts.promote(store, "orders", "w", reason=" ", actor="ana", clock=clock)
    with pytest.raises(InvalidInput, match="no cohort named 'w' in 'orders'"):
        cohorts.get(store, "orders", "w")
    assert store.cohorts("orders") == [] and len(store.decisions("orders")) == 1
    store.close()


# -- the command line --------------------------------------------------------------------


@pytest.fixture
def cutover(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, sqlite_url: str
) -> Callable[..., tuple[int, str, str]]:
    """Runs ``cutover --store URL ARGS`` in this process: (exit code, stdout, stderr)."""
    monkeypatch.setenv("CUTOVER_ACTOR", "ops@test")

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        with pytest.raises(SystemExit) as exited:
            main(["--store", sqlite_url, *args])
        out = capsys.readouterr()
        return int(exited.value.code or 0), out.out, out.err

    return run


def test_cohort_commands_from_plan_to_rollback(
    cutover: Callable[..., tuple[int, str, str]], sqlite_url: str, tmp_path: Path
) -> None:
    assert cutover("set", "orders", "--mode", "canary", "--percent", "0", "--reason", "dw")[0] == 0
    tenants = tmp_path / "wave2.txt"
    tenants.write_text("initech\nhooli  # pilot\n\numbrella\n")
    code, out, err = cutover(
        "cohort", "add", "wave-1", "--migration", "orders", "--tenants", "acme,globex",
        "--wave", "1", "--window", "1h", "--reason", "pilot",
    )  # fmt: skip
    assert code == 0, err
    assert "orders: cohort-add: cohort wave-1 planned in wave 1 (2 tenants): pilot" in out
    code, out, err = cutover(
        "cohort", "add", "wave-2", "--migration", "orders", "--tenants-file", str(tenants),
        "--wave", "2", "--json",
    )  # fmt: skip
    assert code == 0, err
    added = json.loads(out)
    assert added["cohort"]["tenants"] == ["initech", "hooli", "umbrella"]
    assert (
        added["cohort"]["window_seconds"] == 48 * HOUR and added["decision"]["kind"] == "cohort-add"
    )

    code, out, _ = cutover("cohort", "list", "--migration", "orders")
    assert code == 0 and "cohorts · orders" in out
    assert "wave-1" in out and "2: acme, globex" in out and "3: initech, hooli, umbrella" in out

    audit = tmp_path / "audit.json"
    audit.write_text(json.dumps(report({"globex": {"missing": 2, "extra": 0, "changed": 0}})))
    promote = ["cohort", "promote", "wave-1", "--migration", "orders", "--reason", "go"]
    code, _, err = cutover(*promote, "--audit", str(audit))
    assert code == 2 and err.startswith("cutover: tenant 'globex' of cohort 'wave-1' has 2 rows")
    code, out, err = cutover(*promote, "--audit", str(audit), "--max-drift", "2")
    assert code == 0, err
    assert "cohort wave-1 (wave 1, 2 tenants) pinned to new: go" in out
    assert "decision 4, state version 2; rollback without --force until" in out

    code, out, _ = cutover("cohort", "show", "wave-1", "--migration", "orders")
    assert code == 0 and "promoted" in out and "rollback window 1h" in out
    assert "acme" in out and "new" in out
    shown = json.loads(cutover("cohort", "show", "wave-1", "--migration", "orders", "--json")[1])
    assert shown["status"] == "promoted" and shown["pins"] == {"acme": "new", "globex": "new"}

    rollback = ["cohort", "rollback", "wave-1", "--migration", "orders", "--reason", "slow"]
    code, out, err = cutover(*rollback, "--expect-version", "1")
    assert code == 1 and "'orders' is at version 2 (written by ops@test), not 1" in err
    code, out, err = cutover(*rollback, "--json")
    assert code == 0, err
    rolled = json.loads(out)
    assert rolled["decision"]["new"]["pins"] == {"new": [], "legacy": ["acme", "globex"]}
    assert rolled["cohort"]["status"] == "rolled-back"

    history = json.loads(cutover("history", "orders", "--json")[1])["decisions"]
    assert [d["kind"] for d in history] == [
        "set",
        "cohort-add",
        "cohort-add",
        "cohort-promote",
        "cohort-rollback",
    ]
    assert history[3]["evidence"]["audit"]["tenants"]["globex"]["drift"] == 2
    assert "cohort-promote" in cutover("history", "orders")[1]
    listed = json.loads(cutover("cohort", "list", "--migration", "orders", "--json")[1])
    assert [(c["name"], c["status"]) for c in listed["cohorts"]] == [
        ("wave-1", "rolled-back"),
        ("wave-2", "planned"),
    ]
    code, out, _ = cutover("cohort", "remove", "wave-2", "--migration", "orders", "--reason", "x")
    assert code == 0 and "cohort-remove: cohort wave-2 removed: x" in out


def test_the_window_refusal_says_how_to_force(
    cutover: Callable[..., tuple[int, str, str]], sqlite_url: str
) -> None:
    import time

    long_ago = ManualClock(time.time() - 3 * 86400)
    store = open_store(sqlite_url)
    orders(store, long_ago)
    plan(store, long_ago, "wave-1", "acme", 1)
    move(cohorts.promote, store, "wave-1", clock=long_ago)
    store.close()
    rollback = ["cohort", "rollback", "wave-1", "--migration", "orders", "--reason", "late"]
    code, out, err = cutover(*rollback)
    assert code == 2 and out == ""
    assert err.startswith("cutover: the rollback window of cohort 'wave-1' closed at")
    assert "roll back anyway with --force" in err and "Traceback" not in err
    code, out, err = cutover(*rollback, "--force")
    assert code == 0 and "pinned to legacy: late" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["add", "w", "--migration", "orders", "--wave", "1"], "at least one tenant"),
        (["add", "w", "--migration", "orders", "--tenants", "a", "--wave", "0"], "--wave must"),
        (["add", "w", "--migration", "orders", "--tenants", "a", "--wave", "x"], "'x' is not"),
        (
            ["add", "w", "--migration", "orders", "--tenants", "a", "--wave", "1", "--window", "0"],
            "--window must be longer than zero",
        ),
        (
            [
                "add",
                "w",
                "--migration",
                "orders",
                "--tenants",
                "a",
                "--wave",
                "1",
                "--tenants-file",
                "nope.txt",
            ],
            "cannot read --tenants-file 'nope.txt'",
        ),
        (["add", "w", "--migration", "nope", "--tenants", "a", "--wave", "1"], "no migration"),
        (["list", "--migration", "nope"], "no migration named 'nope'"),
        (["show", "w", "--migration", "orders"], "no cohort named 'w' in 'orders'"),
        (["promote", "w", "--migration", "orders"], "Missing option '--reason'"),
        (["promote", "w", "--migration", "orders", "--reason", "r"], "no cohort named 'w'"),
        (
            ["promote", "w", "--migration", "orders", "--reason", "r", "--max-drift", "3"],
            "--max-drift applies to an audit report",
        ),
        (
            ["promote", "w", "--migration", "orders", "--reason", "r", "--audit", "nope.json"],
            "no audit report at nope.json",
        ),
        (["rollback", "w", "--migration", "orders", "--reason", "r"], "no cohort named 'w'"),
        (["remove", "w", "--migration", "orders", "--reason", "r"], "no cohort named 'w'"),
    ],
)
def test_bad_input_exits_2_with_one_sentence(
    cutover: Callable[..., tuple[int, str, str]], args: list[str], message: str
) -> None:
    cutover("set", "orders", "--mode", "shadow", "--reason", "exists")
    code, _, err = cutover("cohort", *args)
    assert code == 2, err
    assert message in err and "Traceback" not in err


def test_a_drift_refusal_names_the_tenants_and_their_counts() -> None:
    tenants = [f"t{n}" for n in range(8)]
    cohort = Cohort("orders", "big", 1, tuple(tenants))
    report = {"tenants": {tenant: {"missing": n + 1} for n, tenant in enumerate(tenants)}}
    with pytest.raises(InvalidInput) as refused:
        cohorts.judge_drift(report, cohort, 1)
    assert str(refused.value) == (
        "tenants 't1' (2: 2 missing, 0 extra, 0 changed), 't2' (3: 3 missing, 0 extra, 0"
        " changed), 't3' (4: 4 missing, 0 extra, 0 changed), 't4' (5: 5 missing, 0 extra, 0"
        " changed), 't5' (6: 6 missing, 0 extra, 0 changed) and 2 more of cohort 'big' have"
        " more rows of drift than the 1 allowed; reconcile and audit again, or allow more with"
        " --max-drift"
    )
    assert cohorts.judge_drift(report, cohort, 8)["tenants"]["t7"]["drift"] == 8
