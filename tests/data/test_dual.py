"""Dual write and read: strategies from the state, failures, the outbox, reads, the guardrail."""

from __future__ import annotations

import json
import random
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from cutover import operations
from cutover.data.dual import (
    DualStore,
    GuardrailError,
    MemoryRepository,
    ReadStrategy,
    Strategies,
    TableRepository,
    WriteStrategy,
    strategies_for,
)
from cutover.errors import CutoverError, InvalidInput
from cutover.model import Arm, Mode, State
from cutover.routing import bucket
from cutover.runtime import Runtime

from ..helpers import put, stored

W, R = WriteStrategy, ReadStrategy


class Refused(ConnectionError):
    """What a repository told to fail raises."""


class Flaky(MemoryRepository):
    """A repository in memory whose operations fail when told to.

    ``fail("put", after=1, times=2)`` lets one put through, then fails the next two;
    ``applied=True`` makes a failing write land before it raises (a lost acknowledgement).
    """

    def __init__(self) -> None:
        super().__init__()
        self._plans: dict[str, list[Any]] = {}
        self._plan_lock = threading.Lock()
        self.chance = 0.0  # share of every operation that fails at random
        self.random = random.Random(0)

    def fail(
        self, op: str, *, after: int = 0, times: int | None = None, applied: bool = False
    ) -> None:
        with self._plan_lock:
            self._plans[op] = [after, times, applied]

    def heal(self) -> None:
        with self._plan_lock:
            self._plans.clear()
            self.chance = 0.0

    def _failing(self, op: str) -> tuple[bool, bool]:
        with self._plan_lock:
            if self.chance and self.random.random() < self.chance:
                return True, self.random.random() < 0.5
            plan = self._plans.get(op)
            if plan is None:
                return False, False
            if plan[0] > 0:
                plan[0] -= 1
                return False, False
            if plan[1] is not None:
                if plan[1] <= 0:
                    return False, False
                plan[1] -= 1
            return True, plan[2]

    def get(self, key: Any) -> dict[str, Any] | None:
        if self._failing("get")[0]:
            raise Refused(f"get {key!r} refused")
        return super().get(key)

    def put(self, key: Any, row: Any) -> None:
        failing, applied = self._failing("put")
        if failing and not applied:
            raise Refused(f"put {key!r} refused")
        super().put(key, row)
        if failing:
            raise Refused(f"put {key!r} lost its acknowledgement")

    def delete(self, key: Any) -> None:
        failing, applied = self._failing("delete")
        if failing and not applied:
            raise Refused(f"delete {key!r} refused")
        super().delete(key)
        if failing:
            raise Refused(f"delete {key!r} lost its acknowledgement")


def drain(runtime: Runtime) -> None:
    """Wait for the off-path comparisons of compare reads."""
    assert runtime.pool.drain(10)


def pair() -> tuple[Flaky, Flaky]:
    return Flaky(), Flaky()


# -- the state table -------------------------------------------------------------------------

LEGACY = Strategies(W.LEGACY_ONLY, R.LEGACY)
SHADOW = Strategies(W.LEGACY_PRIMARY, R.COMPARE)
DUAL = Strategies(W.MIRROR, R.COMPARE)
PREFER_NEW = Strategies(W.MIRROR, R.PREFER_NEW)
NEW_FIRST = Strategies(W.NEW_PRIMARY, R.PREFER_NEW)
NEW = Strategies(W.NEW_ONLY, R.NEW)


def routed(name: str, percent: float, to_new: bool) -> str:
    """A tenant that canary at ``percent`` routes to new (or to legacy)."""
    for n in range(10_000):
        tenant = f"t{n}"
        if (bucket(name, tenant) < round(percent * 100)) is to_new:
            return tenant
    raise AssertionError("no such tenant")


TABLE = [
    # (state, tenant, expected)
    (State(), "acme", LEGACY),
    (State(pins_new=frozenset({"acme"})), "acme", PREFER_NEW),
    (State(pins_new=frozenset({"acme"})), "beta", LEGACY),
    (State(pins_legacy=frozenset({"acme"})), "acme", LEGACY),
    (State(mode=Mode.SHADOW), "acme", SHADOW),
    (State(mode=Mode.SHADOW, pins_new=frozenset({"acme"})), "acme", PREFER_NEW),
    (State(mode=Mode.SHADOW, pins_legacy=frozenset({"acme"})), "acme", LEGACY),
    (State(mode=Mode.CANARY, percent=0), "acme", DUAL),
    (State(mode=Mode.CANARY, percent=100), "acme", PREFER_NEW),
    (State(mode=Mode.CANARY, percent=30), routed("orders", 30, True), PREFER_NEW),
    (State(mode=Mode.CANARY, percent=30), routed("orders", 30, False), DUAL),
    (State(mode=Mode.CANARY, percent=0, pins_new=frozenset({"acme"})), "acme", PREFER_NEW),
    (State(mode=Mode.CANARY, percent=100, pins_legacy=frozenset({"acme"})), "acme", LEGACY),
    (State(mode=Mode.NEW), "acme", NEW_FIRST),
    (State(mode=Mode.NEW, pins_new=frozenset({"acme"})), "acme", NEW_FIRST),
    (State(mode=Mode.NEW, pins_legacy=frozenset({"acme"})), "acme", LEGACY),
    (State(mode=Mode.NEW, fallback=False), "acme", NEW),
    (State(mode=Mode.NEW, fallback=False, pins_legacy=frozenset({"acme"})), "acme", LEGACY),
]


@pytest.mark.parametrize(("state", "tenant", "expected"), TABLE)
def test_the_state_table(state: State, tenant: str, expected: Strategies) -> None:
    assert strategies_for("orders", state, tenant) == expected
    write, read = strategies_for("orders", state, tenant)  # unpacks as a pair
    assert (write, read) == (expected.write, expected.read)


def test_a_kill_switch_overrides_mode_and_pins() -> None:
    pinned = State(mode=Mode.CANARY, percent=100, pins_new=frozenset({"acme"}))
    assert strategies_for("orders", pinned, "acme", override=Mode.LEGACY) == LEGACY
    held = State(pins_legacy=frozenset({"acme"}))
    assert strategies_for("orders", held, "acme", override=Mode.NEW) == NEW_FIRST
    no_fallback = State(fallback=False)
    assert strategies_for("orders", no_fallback, "acme", override=Mode.NEW) == NEW


def test_the_stored_state_drives_the_store_row_by_row(runtime: Runtime) -> None:
    legacy, new = pair()
    orders = DualStore("orders", legacy, new)
    for state, tenant, expected in TABLE:
        put(runtime, "orders", **{f: getattr(state, f) for f in _SETTINGS})
        assert orders.strategies(tenant) == expected, (state, tenant)
        assert orders.strategies(tenant) == strategies_for("orders", orders.state, tenant)


_SETTINGS = ("mode", "percent", "fallback", "pins_new", "pins_legacy")


def test_writes_and_reads_follow_the_mode(runtime: Runtime) -> None:
    legacy, new = pair()
    orders = DualStore("orders", legacy, new)
    orders.put(1, {"v": 1}, tenant="acme")  # mode legacy: legacy alone
    assert (legacy.rows(), new.rows()) == ({1: {"v": 1}}, {})
    put(runtime, "orders", mode=Mode.SHADOW)
    orders.put(2, {"v": 2}, tenant="acme")
    assert new.rows() == {2: {"v": 2}}
    put(runtime, "orders", mode=Mode.CANARY, percent=0, pins_new=frozenset({"acme"}))
    new.put(2, {"v": "new"})
    assert orders.get(2, tenant="acme") == {"v": "new"}  # prefer-new for the pinned tenant
    assert orders.get(2, tenant="beta") == {"v": 2}  # compare: legacy serves
    put(runtime, "orders", mode=Mode.NEW, fallback=False)
    orders.put(3, {"v": 3}, tenant="beta")
    assert 3 not in legacy.rows() and new.rows()[3] == {"v": 3}
    assert orders.get(1, tenant="beta") is None  # new alone: legacy's row is not consulted
    put(runtime, "orders", pins_legacy=frozenset({"beta"}), pins_new=frozenset())
    assert orders.get(1, tenant="beta") == {"v": 1}  # a cohort rolled back reads legacy


def test_a_kill_switch_in_the_environment_applies_on_refresh(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    orders = DualStore("orders", *pair())
    put(runtime, "orders", mode=Mode.NEW)
    assert orders.strategies("acme") == NEW_FIRST
    monkeypatch.setenv("CUTOVER_FORCE_ORDERS", "legacy")
    runtime.refresh()
    assert orders.strategies("acme") == LEGACY


def test_a_tenant_callable_routes_by_the_derived_tenant(runtime: Runtime) -> None:
    legacy, new = pair()
    orders = DualStore("orders", legacy, new, tenant=lambda key, row: key[0])
    put(runtime, "orders", mode=Mode.CANARY, percent=0, pins_new=frozenset({"acme"}))
    orders.put(("acme", 1), {"v": 1})
    new.put(("acme", 1), {"v": "new"})
    legacy.put(("beta", 1), {"v": "legacy"})
    new.put(("beta", 1), {"v": "new"})
    assert orders.get(("acme", 1)) == {"v": "new"}
    assert orders.get(("beta", 1)) == {"v": "legacy"}
    assert orders.strategies(key=("beta", 1)) == DUAL  # without a tenant the key routes
    assert orders.get(("beta", 1), tenant="acme") == {"v": "new"}  # an explicit tenant wins


def test_fixed_strategies_ignore_the_state(runtime: Runtime) -> None:
    orders = DualStore("orders", *pair(), write="new-primary", read="prefer_new")
    put(runtime, "orders", mode=Mode.LEGACY)
    assert orders.strategies("acme") == NEW_FIRST
    half = DualStore("half", *pair(), read=R.NEW)
    put(runtime, "half", mode=Mode.SHADOW)
    assert half.strategies("acme") == Strategies(W.LEGACY_PRIMARY, R.NEW)


# -- write failures ---------------------------------------------------------------------------


def test_legacy_primary_records_a_failing_new_and_replay_repairs_it(runtime: Runtime) -> None:
    legacy, new = pair()
    orders = DualStore("orders", legacy, new, write="legacy-primary", read="legacy")
    orders.put(1, {"v": 1}, tenant="acme")
    new.fail("put", times=1)
    orders.put(1, {"v": 2}, tenant="acme")  # not raised
    new.fail("delete", times=1)
    orders.put(2, {"v": 2}, tenant="beta")
    orders.delete(2, tenant="beta")  # not raised either
    assert legacy.rows() == {1: {"v": 2}}  # the truth has every acknowledged write
    assert new.rows() == {1: {"v": 1}, 2: {"v": 2}}
    pending = orders.pending()
    assert [(e.key, e.tenant, e.truth, e.operation, e.drift) for e in pending] == [
        (1, "acme", Arm.LEGACY, "put", True),
        (2, "beta", Arm.LEGACY, "delete", True),
    ]
    assert "Refused" in (pending[0].error or "")
    assert orders.drift_rate("acme") == 0.5 and orders.drift_rate("beta") == 0.5
    result = orders.replay()
    assert result.clean and set(result.repaired) == {1, 2}
    assert new.rows() == legacy.rows() == {1: {"v": 2}}
    assert orders.pending() == ()
    stats = stored(runtime, "orders")
    assert (stats.comparisons, stats.drifts) == (4, 2)
    assert (stats.new.errors, stats.legacy.served, stats.new.served) == (2, 4, 0)
    samples = runtime.store.drift_samples("orders")
    assert {s.unit for s in samples} == {"acme", "beta"}
    assert {s.input["args"][0] for s in samples} == {1, 2}
    assert all("new raised Refused" in s.fingerprint for s in samples)


def test_legacy_primary_raises_a_failing_legacy_and_writes_nothing(runtime: Runtime) -> None:
    legacy, new = pair()
    orders = DualStore("orders", legacy, new, write="legacy-primary")
    legacy.fail("put", times=1)
    with pytest.raises(Refused):
        orders.put(1, {"v": 1}, tenant="acme")
    assert legacy.rows() == new.rows() == {}
    # A failed commit may still have applied, so the key waits for a replay to make sure.
    assert [(e.key, e.drift) for e in orders.pending()] == [(1, False)]
    assert orders.drift_rate("acme") == 0.0
    assert orders.replay().clean and legacy.rows() == new.rows() == {}


def test_a_lost_acknowledgement_on_the_truth_side_is_repaired(runtime: Runtime) -> None:
    legacy, new = pair()
    orders = DualStore("orders", legacy, new, write="legacy-primary")
    legacy.fail("put", times=1, applied=True)
    with pytest.raises(Refused):
        orders.put(1, {"v": 1})
    assert (legacy.rows(), new.rows()) == ({1: {"v": 1}}, {})
    assert orders.replay().clean
    assert new.rows() == legacy.rows()


@pytest.mark.parametrize("previous", [None, {"v": 0}])
def test_mirror_undoes_legacy_when_new_fails(runtime: Runtime, previous: Any) -> None:
    legacy, new = pair()
    orders = DualStore("orders", legacy, new, write="mirror")
    if previous is not None:
        orders.put(1, previous, tenant="acme")
    new.fail("put", times=1)
    with pytest.raises(Refused) as raised:
        orders.put(1, {"v": 1}, tenant="acme")
    assert "legacy was restored" in "".join(raised.value.__notes__)
    expected = {} if previous is None else {1: previous}
    assert legacy.rows() == new.rows() == expected
    assert orders.pending() == ()  # nothing differs, nothing to replay
    new.fail("delete", times=1)
    if previous is not None:
        with pytest.raises(Refused):
            orders.delete(1, tenant="acme")
        assert legacy.rows() == new.rows() == expected
    stats = stored(runtime, "orders")
    assert stats.drifts == 0 and stats.new.errors == (2 if previous else 1)


def test_mirror_records_a_failed_undo_and_replay_repairs_it(runtime: Runtime) -> None:
    legacy, new = pair()
    orders = DualStore("orders", legacy, new, write="mirror")
    orders.put(1, {"v": 0}, tenant="acme")
    new.fail("put", times=1)
    legacy.fail("put", after=1, times=1)  # the write passes, putting the old row back fails
    with pytest.raises(Refused) as raised:
        orders.put(1, {"v": 1}, tenant="acme")
    assert "outbox" in "".join(raised.value.__notes__)
    assert (legacy.rows(), new.rows()) == ({1: {"v": 1}}, {1: {"v": 0}})
    [entry] = orders.pending()
    assert (entry.key, entry.truth, entry.drift) == (1, Arm.LEGACY, True)
    assert orders.drift_rate("acme") == 0.5
    assert orders.replay().clean
    assert legacy.rows() == new.rows() == {1: {"v": 1}}
    assert stored(runtime, "orders").drifts == 1


def test_mirror_checks_new_after_a_lost_acknowledgement(runtime: Runtime) -> None:
    legacy, new = pair()
    orders = DualStore("orders", legacy, new, write="mirror")
    orders.put(1, {"v": 0})
    new.fail("put", times=1, applied=True)  # new kept the write but reported a failure
    with pytest.raises(Refused):
        orders.put(1, {"v": 1})
    assert (legacy.rows(), new.rows()) == ({1: {"v": 0}}, {1: {"v": 1}})
    [entry] = orders.pending()
    assert (entry.truth, entry.drift) == (Arm.LEGACY, False)
    assert orders.replay().clean
    assert legacy.rows() == new.rows() == {1: {"v": 0}}


def test_mirror_raises_a_failing_legacy_and_leaves_new_alone(runtime: Runtime) -> None:
    legacy, new = pair()
    orders = DualStore("orders", legacy, new, write="mirror")
    legacy.fail("get", times=1)  # the read before the write
    with pytest.raises(Refused):
        orders.put(1, {"v": 1})
    legacy.fail("put", times=1)
    with pytest.raises(Refused):
        orders.put(1, {"v": 1})
    assert legacy.rows() == new.rows() == {}
    assert orders.replay().clean and legacy.rows() == new.rows() == {}


def test_new_primary_records_a_failing_legacy_and_raises_a_failing_new(runtime: Runtime) -> None:
    legacy, new = pair()
    orders = DualStore("orders", legacy, new, write="new-primary")
    legacy.fail("put", times=1)
    orders.put(1, {"v": 1}, tenant="acme")  # legacy follows: its failure is recorded
    assert (legacy.rows(), new.rows()) == ({}, {1: {"v": 1}})
    [entry] = orders.pending()
    assert (entry.truth, entry.drift) == (Arm.NEW, True)
    new.fail("put", times=1)
    with pytest.raises(Refused):
        orders.put(2, {"v": 2}, tenant="acme")
    assert 2 not in legacy.rows() and 2 not in new.rows()
    assert orders.replay().clean
    assert legacy.rows() == new.rows() == {1: {"v": 1}}
    stats = stored(runtime, "orders")
    assert (stats.drifts, stats.legacy.errors, stats.new.errors) == (1, 1, 1)


@pytest.mark.parametrize(("write", "truth"), [("legacy-only", "legacy"), ("new-only", "new")])
def test_single_side_writes_raise_and_record_nothing(
    runtime: Runtime, write: str, truth: str
) -> None:
    legacy, new = pair()
    orders = DualStore("orders", legacy, new, write=write)
    side = legacy if truth == "legacy" else new
    side.fail("put", times=1)
    with pytest.raises(Refused):
        orders.put(1, {"v": 1})
    orders.put(2, {"v": 2})
    assert side.rows() == {2: {"v": 2}}
    assert (new if truth == "legacy" else legacy).rows() == {}
    assert orders.pending() == ()


def test_a_later_write_moves_the_truth_of_a_pending_key(runtime: Runtime) -> None:
    legacy, new = pair()
    orders = DualStore("orders", legacy, new)
    put(runtime, "orders", mode=Mode.SHADOW)
    new.fail("put", times=1)
    orders.put(1, {"v": 1})  # recorded: legacy is the truth of key 1
    put(runtime, "orders", mode=Mode.NEW, fallback=False)
    orders.put(1, {"v": 2})  # new alone holds the latest acknowledged row now
    [entry] = orders.pending()
    assert entry.truth is Arm.NEW
    assert orders.replay().clean
    assert legacy.rows() == new.rows() == {1: {"v": 2}}


@pytest.mark.parametrize("write", ["legacy-primary", "mirror", "new-primary"])
def test_random_failures_on_both_sides_lose_nothing(runtime: Runtime, write: str) -> None:
    legacy, new = pair()
    orders = DualStore("orders", legacy, new, write=write, read="legacy")
    truth = legacy if WriteStrategy(write).truth is Arm.LEGACY else new
    legacy.chance = new.chance = 0.2
    legacy.random, new.random = random.Random(1), random.Random(2)
    script = random.Random(3)
    acknowledged: dict[int, Any] = {}
    for step in range(300):
        key = script.randrange(12)
        row = None if script.random() < 0.2 else {"v": step}
        try:
            if row is None:
                orders.delete(key, tenant=f"t{key % 3}")
            else:
                orders.put(key, row, tenant=f"t{key % 3}")
        except Refused:
            acknowledged.pop(key, None)  # the caller knows this write may not have happened
            continue
        acknowledged[key] = row
        assert truth.rows().get(key) == row  # an acknowledged write is on the truth side
    for attempt in range(20):  # replays on a flaky link: whatever fails stays for the next
        if orders.replay().clean:
            break
        if attempt == 10:
            legacy.heal()
            new.heal()
    assert orders.pending() == ()
    assert legacy.rows() == new.rows()
    for key, row in acknowledged.items():
        assert truth.rows().get(key) == row


def test_concurrent_mirror_writes_converge(runtime: Runtime) -> None:
    legacy, new = pair()
    orders = DualStore("orders", legacy, new, write="mirror")
    new.chance = 0.1
    errors: list[BaseException] = []

    def writer(seed: int) -> None:
        script = random.Random(seed)
        for step in range(100):
            key = script.randrange(10)
            try:
                orders.put(key, {"v": step, "by": seed}, tenant="acme")
            except Refused:
                pass
            except BaseException as error:
                errors.append(error)

    threads = [threading.Thread(target=writer, args=(seed,)) for seed in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    new.heal()
    assert orders.replay().clean
    assert legacy.rows() == new.rows()


# -- reads -----------------------------------------------------------------------------------


def test_compare_serves_legacy_and_records_the_diff(runtime: Runtime) -> None:
    legacy, new = pair()
    orders = DualStore("orders", legacy, new, write="legacy-only", read="compare")
    legacy.put(1, {"id": 1, "amount": 5, "note": "x"})
    new.put(1, {"id": 1, "amount": 6, "note": "x"})
    legacy.put(2, {"id": 2, "amount": 1})
    new.put(2, {"id": 2, "amount": 1})
    assert orders.get(1, tenant="acme") == {"id": 1, "amount": 5, "note": "x"}
    assert orders.get(2, tenant="acme") == {"id": 2, "amount": 1}
    drain(runtime)
    assert orders.drift_rate("acme") == 0.5
    stats = stored(runtime, "orders")
    assert (stats.comparisons, stats.drifts, stats.legacy.served, stats.new.served) == (2, 1, 2, 0)
    [sample] = runtime.store.drift_samples("orders")
    assert sample.unit == "acme" and sample.input["args"] == [1]
    assert sample.diff == [{"path": "$.amount", "kind": "changed", "legacy": 5, "new": 6}]
    assert sample.legacy["amount"] == 5 and sample.new["amount"] == 6


def test_compare_records_a_failing_new_without_raising(runtime: Runtime) -> None:
    legacy, new = pair()
    orders = DualStore("orders", legacy, new, read="compare")
    legacy.put(1, {"v": 1})
    new.fail("get")
    assert orders.get(1, tenant="acme") == {"v": 1}
    drain(runtime)
    assert orders.drift_rate("acme") == 1.0
    stats = stored(runtime, "orders")
    assert (stats.drifts, stats.new.errors) == (1, 1)
    [sample] = runtime.store.drift_samples("orders")
    assert "new raised Refused" in sample.fingerprint
    legacy.fail("get")
    with pytest.raises(Refused):  # legacy serves, so its failure is the caller's
        orders.get(1, tenant="acme")


def test_compare_rechecks_a_row_that_changed_between_the_reads(runtime: Runtime) -> None:
    class Stale(Flaky):
        """Answers the first read with the row as it was before the latest write."""

        def __init__(self) -> None:
            super().__init__()
            self.stale = True

        def get(self, key: Any) -> dict[str, Any] | None:
            if self.stale:
                self.stale = False
                return {"v": "old"}
            return super().get(key)

    legacy, new = Flaky(), Stale()
    orders = DualStore("orders", legacy, new, write="mirror", read="compare")
    orders.put(1, {"v": "current"})
    new.stale = True
    assert orders.get(1) == {"v": "current"}
    drain(runtime)
    stats = stored(runtime, "orders")
    assert (stats.comparisons, stats.drifts) == (2, 0)  # the write and the read, no drift


def test_compare_follows_the_sample_share(runtime: Runtime) -> None:
    legacy, new = pair()
    orders = DualStore("orders", legacy, new)
    put(runtime, "orders", mode=Mode.SHADOW, sample=0.0)
    legacy.put(1, {"v": 1})
    assert orders.get(1) == {"v": 1}
    drain(runtime)
    assert stored(runtime, "orders").comparisons == 0


def test_prefer_new_serves_new_and_falls_back_to_legacy(runtime: Runtime) -> None:
    legacy, new = pair()
    # A tolerance of 100%: the guardrail never downgrades these reads.
    orders = DualStore(
        "orders", legacy, new, write="mirror", read="prefer-new", default_tolerance=1.0
    )
    for side in (legacy, new):
        side.put(1, {"v": 1})
    legacy.put(2, {"v": "legacy only"})
    legacy.put(4, {"v": "legacy"})
    new.put(4, {"v": "new"})
    assert orders.get(1, tenant="acme") == {"v": 1}  # new serves; legacy is compared off-path
    assert orders.get(2, tenant="acme") == {"v": "legacy only"}  # new lacks it: drift
    assert orders.get(3, tenant="acme") is None  # neither has it: a match
    new.fail("get", times=1)
    assert orders.get(1, tenant="acme") == {"v": 1}  # new fails: legacy serves, drift
    assert orders.get(4, tenant="acme") == {"v": "new"}  # new serves a row that drifted
    drain(runtime)
    assert orders.drift_rate("acme") == pytest.approx(3 / 5)
    stats = stored(runtime, "orders")
    assert (stats.new.calls, stats.new.served, stats.new.fallbacks, stats.new.errors) == (
        5,
        3,
        2,
        1,
    )
    assert (stats.legacy.calls, stats.legacy.served) == (5, 2)
    assert (stats.comparisons, stats.drifts) == (5, 3)
    samples = runtime.store.drift_samples("orders")
    by_key = {s.input["args"][0]: s for s in samples}
    assert "new raised Refused" in by_key[1].fingerprint
    assert by_key[2].legacy == {"v": "legacy only"} and by_key[2].new is None
    assert by_key[4].diff == [{"path": "$.v", "kind": "changed", "legacy": "legacy", "new": "new"}]
    new.fail("get")
    legacy.fail("get")
    with pytest.raises(Refused):  # neither side answers
        orders.get(1, tenant="acme")


def test_single_side_reads(runtime: Runtime) -> None:
    legacy, new = pair()
    legacy.put(1, {"v": "legacy"})
    new.put(1, {"v": "new"})
    assert DualStore("a", legacy, new, read="legacy").get(1) == {"v": "legacy"}
    only_new = DualStore("b", legacy, new, read="new")
    assert only_new.get(1) == {"v": "new"} and only_new.get(2) is None
    new.fail("get")
    with pytest.raises(Refused):
        only_new.get(1)


def test_a_dual_store_is_a_migration_in_status_and_stats(runtime: Runtime) -> None:
    orders = DualStore("orders", *pair())
    put(runtime, "orders", mode=Mode.SHADOW)
    orders.put(1, {"v": 1}, tenant="acme")
    assert orders.get(1, tenant="acme") == {"v": 1}
    drain(runtime)
    stats = stored(runtime, "orders")
    assert (stats.mode, stats.comparisons, stats.drifts, stats.legacy.calls) == (
        Mode.SHADOW,
        2,
        0,
        2,
    )
    [line] = [s for s in operations.status(runtime.store, runtime.clock()) if s.name == "orders"]
    assert line.instances == 1 and line.versions == (orders.state.version,)


# -- the guardrail ---------------------------------------------------------------------------


def drifting(runtime: Runtime, **options: Any) -> tuple[DualStore, Flaky, Flaky]:
    """A store reading prefer-new where tenant acme has 2 drifts in 5 compared writes."""
    legacy, new = pair()
    orders = DualStore("orders", legacy, new, write="legacy-primary", read="prefer-new", **options)
    for key in range(3):
        orders.put(key, {"v": key}, tenant="acme")
    new.fail("put", times=2)
    orders.put(10, {"v": 10}, tenant="acme")
    orders.put(11, {"v": 11}, tenant="acme")
    new.put(0, {"v": "new"})
    return orders, legacy, new


def test_the_guardrail_downgrades_prefer_new_past_the_tolerance(runtime: Runtime) -> None:
    orders, _, _ = drifting(runtime, tolerance={"acme": 0.5, "beta": 0.1})
    assert orders.drift_rate("acme") == 0.4
    assert orders.strategies("acme").read is R.PREFER_NEW  # 40% <= 50%
    assert orders.get(0, tenant="acme") == {"v": "new"}
    orders, _, _ = drifting(runtime, tolerance={"acme": 0.25}, default_tolerance=0.5)
    assert orders.tolerance("acme") == 0.25 and orders.tolerance("zed") == 0.5
    assert orders.strategies("acme") == Strategies(W.LEGACY_PRIMARY, R.COMPARE)
    assert orders.get(0, tenant="acme") == {"v": 0}  # legacy serves, new is compared
    assert orders.get(0, tenant="beta") == {"v": "new"}  # another tenant is not held back
    [event] = orders.guardrail_events()
    assert (event.tenant, event.action, event.drift_rate, event.tolerance) == (
        "acme",
        "downgrade",
        0.4,
        0.25,
    )
    assert (event.compared, event.drifted) == (5, 2)
    drain(runtime)
    assert orders.drift_rate("acme") == pytest.approx(3 / 6)  # the compared read drifted too
    orders.reset_drift("acme")
    assert orders.get(0, tenant="acme") == {"v": "new"}
    assert [e.action for e in orders.guardrail_events()] == ["downgrade", "clear"]


def test_the_guardrail_can_refuse_instead(runtime: Runtime) -> None:
    orders, _, _ = drifting(runtime, guardrail="raise")
    with pytest.raises(GuardrailError, match="tenant 'acme'") as raised:
        orders.get(0, tenant="acme")
    assert isinstance(raised.value, CutoverError)
    assert raised.value.rate == 0.4 and raised.value.tolerance == 0.0
    assert orders.get(0, tenant="beta") == {"v": "new"}
    assert [e.action for e in orders.guardrail_events()] == ["raise"]


def test_the_guardrail_leaves_other_read_strategies_alone(runtime: Runtime) -> None:
    legacy, new = pair()
    orders = DualStore("orders", legacy, new, write="legacy-primary", read="new")
    new.fail("put", times=1)
    orders.put(1, {"v": 1}, tenant="acme")
    assert orders.drift_rate("acme") == 1.0
    assert orders.strategies("acme").read is R.NEW
    assert orders.guardrail_events() == ()


# -- the journal -----------------------------------------------------------------------------


def test_the_journal_keeps_pending_keys_across_processes(runtime: Runtime, tmp_path: Path) -> None:
    journal = tmp_path / "orders.outbox.jsonl"
    legacy, new = pair()
    keys = [("acme", 1), uuid.UUID(int=7), "plain"]
    first = DualStore("orders", legacy, new, write="legacy-primary", journal=journal)
    new.fail("put")
    for key in keys:
        first.put(key, {"v": 1}, tenant="acme")
    lines = [json.loads(line) for line in journal.read_text().splitlines()]
    assert [line["op"] for line in lines] == ["pending"] * 3
    assert lines[0]["key"] == ["acme", 1] and lines[1]["key"] == {"$uuid": str(keys[1])}
    again = DualStore("orders", legacy, new, write="legacy-primary", journal=journal)
    assert [e.key for e in again.pending()] == keys
    assert [e.id for e in again.pending()] == [e.id for e in first.pending()]
    new.heal()
    assert again.replay().clean
    assert legacy.rows() == new.rows()
    assert journal.read_text() == ""  # compacted to what remains
    assert DualStore("orders", legacy, new, journal=journal).pending() == ()


def test_a_journal_line_that_does_not_parse_is_skipped(runtime: Runtime, tmp_path: Path) -> None:
    journal = tmp_path / "outbox.jsonl"
    entry = {"v": 1, "op": "pending", "id": 4, "key": 9, "tenant": None, "truth": "legacy"}
    done = {"v": 1, "op": "done", "id": 3}
    journal.write_text("not json\n" + json.dumps(entry) + "\n" + json.dumps(done) + "\n")
    orders = DualStore("orders", *pair(), journal=journal)
    assert [(e.id, e.key) for e in orders.pending()] == [(4, 9)]


def test_a_key_json_cannot_hold_stays_pending_in_memory(runtime: Runtime, tmp_path: Path) -> None:
    journal = tmp_path / "outbox.jsonl"
    legacy, new = pair()
    key = frozenset({1, 2})  # hashable, but no JSON form
    orders = DualStore("orders", legacy, new, journal=journal)
    put(runtime, "orders", mode=Mode.SHADOW)
    new.fail("put", times=1)
    orders.put(key, {"v": 1})
    assert [e.key for e in orders.pending()] == [key] and orders.journal_errors == 1
    put(runtime, "orders", mode=Mode.NEW, fallback=False)
    orders.put(key, {"v": 2})  # the truth moves to new: journaling that fails quietly too
    assert orders.pending()[0].truth is Arm.NEW and orders.journal_errors == 2
    assert orders.replay().clean and legacy.rows() == new.rows() == {key: {"v": 2}}


# -- input -----------------------------------------------------------------------------------


def test_bad_input_is_one_clear_error(runtime: Runtime) -> None:
    legacy, new = pair()
    with pytest.raises(InvalidInput, match="unknown write strategy 'both'"):
        DualStore("orders", legacy, new, write="both")
    with pytest.raises(InvalidInput, match="read strategy"):
        DualStore("orders", legacy, new, read="newest")
    with pytest.raises(InvalidInput, match="tolerance of tenant 'acme'"):
        DualStore("orders", legacy, new, tolerance={"acme": 2})
    with pytest.raises(InvalidInput, match="guardrail"):
        DualStore("orders", legacy, new, guardrail="ignore")
    with pytest.raises(InvalidInput, match="has no get"):
        DualStore("orders", legacy, object())  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="migration name"):
        DualStore("", legacy, new)
    orders = DualStore("orders", legacy, new)
    with pytest.raises(InvalidInput, match="cannot be used"):
        orders.get({"id": 1})
    with pytest.raises(InvalidInput, match="must be a mapping"):
        orders.put(1, [1, 2])  # type: ignore[arg-type]


# -- SQL tables ------------------------------------------------------------------------------


def orders_table(metadata: sa.MetaData) -> sa.Table:
    return sa.Table(
        "orders",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("tenant", sa.String(20), nullable=False),
        sa.Column("amount", sa.Integer, nullable=False),
        sa.Column("note", sa.String(50)),
    )


class Side:
    """One database side: an engine, its orders table, and a guard that refuses negative
    amounts (the database raises, as a stricter new schema would)."""

    def __init__(self, url: str) -> None:
        self.engine = sa.create_engine(url)
        if self.engine.dialect.name == "sqlite":  # no fsync per commit: the files are scratch

            @sa.event.listens_for(self.engine, "connect")
            def _scratch(connection: Any, _: Any) -> None:
                connection.execute("PRAGMA synchronous=OFF")

        self.table = orders_table(sa.MetaData())
        self.table.metadata.create_all(self.engine)
        self.repository = TableRepository(self.engine, "orders")
        self.sqlite = self.engine.dialect.name == "sqlite"

    def guard(self) -> None:
        with self.engine.begin() as conn:
            if self.sqlite:
                for event in ("INSERT", "UPDATE"):
                    conn.exec_driver_sql(
                        f"CREATE TRIGGER refuse_{event.lower()} BEFORE {event} ON orders"
                        " WHEN NEW.amount < 0 BEGIN SELECT RAISE(ABORT, 'negative amount'); END"
                    )
            else:
                conn.exec_driver_sql(
                    "ALTER TABLE orders ADD CONSTRAINT refuse CHECK (amount >= 0) NOT VALID"
                )

    def heal(self) -> None:
        with self.engine.begin() as conn:
            if self.sqlite:
                conn.exec_driver_sql("DROP TRIGGER refuse_insert")
                conn.exec_driver_sql("DROP TRIGGER refuse_update")
            else:
                conn.exec_driver_sql("ALTER TABLE orders DROP CONSTRAINT refuse")

    def contents(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(self.table).order_by(self.table.c.id)).mappings()
            return [dict(row) for row in rows]


@pytest.fixture(params=["sqlite", "postgresql"])
def sides(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[[], tuple[Side, Side]]]:
    made: list[Side] = []
    if request.param == "sqlite":
        urls = iter([f"sqlite:///{tmp_path / 'legacy.db'}", f"sqlite:///{tmp_path / 'new.db'}"])
        url: Callable[[], str] = lambda: next(urls)  # noqa: E731
    else:
        url = request.getfixturevalue("fresh_pg")

    def make() -> tuple[Side, Side]:
        legacy, new = Side(url()), Side(url())
        made.extend((legacy, new))
        return legacy, new

    yield make
    for side in made:
        side.engine.dispose()


def row(key: int, amount: int, note: str | None = None) -> dict[str, Any]:
    return {"tenant": "acme" if key % 2 else "beta", "amount": amount, "note": note}


@pytest.mark.parametrize("write", ["legacy-primary", "mirror", "new-primary"])
def test_tables_converge_after_a_follower_refuses_writes(
    runtime: Runtime, sides: Callable[[], tuple[Side, Side]], write: str
) -> None:
    legacy, new = sides()
    strategy = WriteStrategy(write)
    truth, follower = (legacy, new) if strategy.truth is Arm.LEGACY else (new, legacy)
    orders = DualStore(
        "orders",
        legacy.repository,
        new.repository,
        write=write,
        read="legacy",
        tenant=lambda key, row: None if row is None else row["tenant"],
    )
    for key in range(1, 7):
        orders.put(key, row(key, key * 10, "first"))
    follower.guard()
    expected = {key: row(key, key * 10, "first") for key in range(1, 7)}
    raised = []
    for key, amount in [(1, -5), (2, 25), (3, -7), (7, -1), (8, 80)]:
        try:
            orders.put(key, row(key, amount))
        except sa.exc.DBAPIError:
            raised.append(key)
            continue
        expected[key] = row(key, amount)
    orders.delete(4)
    del expected[4]
    by_key = {r["id"]: {k: v for k, v in r.items() if k != "id"} for r in truth.contents()}
    assert by_key == expected  # every acknowledged write is on the truth side
    if write == "mirror":
        assert raised == [1, 3, 7]  # new refused, legacy was put back, the caller was told
        assert orders.pending() == ()
        assert legacy.contents() == new.contents()
    else:
        assert raised == []  # the follower's refusals are recorded, never raised
        assert sorted(e.key for e in orders.pending()) == [1, 3, 7]
        assert legacy.contents() != new.contents()
        assert not orders.replay().clean  # still refused: the keys stay pending
        assert sorted(e.key for e in orders.pending()) == [1, 3, 7]
    follower.heal()
    assert orders.replay().clean
    assert legacy.contents() == new.contents()
    stats = stored(runtime, "orders")
    assert stats.drifts == (0 if write == "mirror" else 3)
    assert (stats.legacy if follower is legacy else stats.new).errors == 3  # replays uncounted


def test_a_refusing_truth_side_raises_and_writes_nothing(
    runtime: Runtime, sides: Callable[[], tuple[Side, Side]]
) -> None:
    legacy, new = sides()
    orders = DualStore("orders", legacy.repository, new.repository, write="new-primary")
    orders.put(1, row(1, 10))
    new.guard()
    with pytest.raises(sa.exc.IntegrityError):
        orders.put(1, row(1, -10))
    with pytest.raises(sa.exc.IntegrityError):
        orders.put(2, row(2, -20))
    assert legacy.contents() == new.contents() == [{"id": 1, **row(1, 10)}]
    assert orders.replay().clean  # the checks find nothing to repair
    assert legacy.contents() == new.contents()


def test_compare_reads_on_tables_record_drift(
    runtime: Runtime, sides: Callable[[], tuple[Side, Side]]
) -> None:
    legacy, new = sides()
    orders = DualStore("orders", legacy.repository, new.repository, read="compare")
    legacy.repository.put(1, row(1, 10))
    new.repository.put(1, row(1, 11))
    assert orders.get(1, tenant="acme") == {"id": 1, **row(1, 10)}
    assert stored(runtime, "orders").drifts == 1
    [sample] = runtime.store.drift_samples("orders")
    assert sample.diff == [{"path": "$.amount", "kind": "changed", "legacy": 10, "new": 11}]
    assert orders.reconcile([1], tenant="acme").repaired == (1,)
    assert legacy.contents() == new.contents()


def test_table_repository_upserts_and_checks_its_input(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'repo.db'}")
    metadata = sa.MetaData()
    orders_table(metadata)
    lines = sa.Table(
        "lines",
        metadata,
        sa.Column("order_id", sa.Integer, primary_key=True),
        sa.Column("n", sa.Integer, primary_key=True),
        sa.Column("sku", sa.String(10)),
    )
    sa.Table("loose", metadata, sa.Column("code", sa.String(10)), sa.Column("v", sa.Integer))
    metadata.create_all(engine)
    orders = TableRepository(engine, "orders")
    orders.put(1, row(1, 10))
    orders.put((1,), {"amount": 11, "tenant": "acme"})  # an update keeps the unnamed columns
    assert orders.get(1) == {"id": 1, "tenant": "acme", "amount": 11, "note": None}
    orders.delete(1)
    assert orders.get(1) is None
    composite = TableRepository(engine, lines)
    composite.put((1, 2), {"sku": "a"})
    composite.put([1, 2], {"sku": "b"})
    assert composite.rows() == {(1, 2): {"order_id": 1, "n": 2, "sku": "b"}}
    loose = TableRepository(engine, "loose", key="code")  # no unique key: update, then insert
    loose.put("x", {"v": 1})
    loose.put("x", {"v": 2})
    assert loose.rows() == {"x": {"code": "x", "v": 2}}
    with pytest.raises(InvalidInput, match="does not exist"):
        TableRepository(engine, "missing")
    with pytest.raises(InvalidInput, match="no primary key"):
        TableRepository(engine, "loose")
    with pytest.raises(InvalidInput, match="key column 'nope'"):
        TableRepository(engine, "orders", key="nope")
    with pytest.raises(InvalidInput, match="tuple of 2 values"):
        composite.get(1)
    with pytest.raises(InvalidInput, match="column 'colour'"):
        orders.put(2, {"colour": "red"})
    with pytest.raises(InvalidInput, match="disagrees with its key"):
        orders.put(2, {"id": 3, "tenant": "acme", "amount": 1})
    engine.dispose()


def test_table_repository_upserts_on_mariadb(
    fresh_mariadb: Callable[[], str],
) -> None:
    side = Side(fresh_mariadb())
    try:
        side.repository.put(1, row(1, 10))
        side.repository.put(1, row(1, 12, "again"))
        assert side.contents() == [{"id": 1, **row(1, 12, "again")}]
        side.repository.delete(1)
        assert side.contents() == []
    finally:
        side.engine.dispose()


def test_a_replay_after_new_only_keeps_what_another_process_wrote(runtime: Runtime) -> None:
    """A key left in this process's outbox under shadow is written by another process once the
    tenant writes new only; the replay must copy that newer row to legacy, not legacy's older
    row over it."""
    legacy, new = pair()
    orders = DualStore("orders", legacy, new)
    put(runtime, "orders", mode=Mode.SHADOW)
    new.fail("put")
    orders.put(1, {"amount": 100}, tenant="acme")  # legacy has it, new failed: outbox
    new.heal()
    put(runtime, "orders", mode=Mode.NEW, fallback=False)
    new.put(1, {"amount": 250})  # another process, writing new only
    assert orders.replay().clean
    assert legacy.rows()[1] == new.rows()[1] == {"amount": 250}
