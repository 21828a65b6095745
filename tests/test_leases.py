"""Leases: one holder per role, expiring by the database's clock, and writes fenced by term."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa

from cutover.errors import InvalidInput, LeaseLost, StoreError
from cutover.model import Mode, Rollout, RolloutStatus, State
from cutover.store import MIN_LEASE, Store, open_store
from cutover.store import schema as t
from cutover.store.sql import SqlStore, _db_now


def eventually(condition: Callable[[], bool], what: str, within: float = 60.0) -> None:
    """Poll ``condition`` until it holds; fail (naming ``what``) if it never does."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"never happened: {what}")
        time.sleep(0.05)


def lease_row(store: Store, role: str = "controller") -> Any:
    assert isinstance(store, SqlStore)
    store._ensure_schema()
    with store.engine.connect() as conn:
        return conn.execute(sa.select(t.leases).where(t.leases.c.role == role)).first()


def database_now(store: Store) -> float:
    assert isinstance(store, SqlStore)
    with store.engine.connect() as conn:
        return float(conn.execute(sa.select(_db_now(store.dialect))).scalar_one())


def test_one_holder_at_a_time_and_every_holding_a_higher_term(store_url: str) -> None:
    first, second = (open_store(store_url).leadership(duration=60) for _ in range(2))
    assert first.held() and first.fence().term == 1  # type: ignore[union-attr]
    assert not second.held() and second.fence() is None
    assert second.seen == (first.holder, 1), "it names who holds the lease"
    assert first.held(), "renewed by its holder, same term"
    assert first.fence().term == 1  # type: ignore[union-attr]
    first.release()
    assert first.fence() is None
    assert second.held(), "a released lease is taken at once"
    assert second.fence().term == 2  # type: ignore[union-attr]
    second.release()
    assert first.held() and first.fence().term == 3, "terms only grow"  # type: ignore[union-attr]
    first.release()


def test_the_lease_expires_by_the_database_clock(store_url: str) -> None:
    store = open_store(store_url)
    holder, candidate = store.leadership(duration=MIN_LEASE), store.leadership(duration=60)
    before = database_now(store)
    assert holder.held()
    row = lease_row(store)
    after = database_now(store)
    # Stamped by the database: between two readings of its clock, whatever the client's is.
    assert before <= row.acquired_at <= after
    assert row.expires_at == pytest.approx(row.renewed_at + MIN_LEASE)
    # Once the database's clock passes the expiry, another candidate takes it, in a new term;
    # the holder can no longer renew its own.
    eventually(lambda: database_now(store) > row.expires_at, "the database clock passes expiry")
    assert candidate.held() and candidate.fence().term == 2  # type: ignore[union-attr]
    assert lease_row(store).acquired_at >= row.expires_at
    assert not holder.held() and holder.fence() is None
    assert holder.seen == (candidate.holder, 2)


def test_a_lease_shorter_than_a_second_is_refused(sqlite_url: str) -> None:
    with pytest.raises(InvalidInput, match="a lease must last at least 1s"):
        open_store(sqlite_url).leadership(duration=0.5)


def _rollout(version: int = 0) -> Rollout:
    return Rollout(
        "codec", {}, "plan.yaml", RolloutStatus.RUNNING, 0, 1.0, 1.0, "ops", version=version
    )


def test_a_write_under_a_term_that_is_over_is_refused_and_writes_nothing(store_url: str) -> None:
    store = open_store(store_url)
    store.write_state(
        "codec", State(mode=Mode.SHADOW), expected_version=0, actor="ops", reason="setup", at=1.0
    )
    old, new = store.leadership(duration=MIN_LEASE), store.leadership(duration=60)
    assert old.held()
    stale = old.fence()
    assert stale is not None
    # The holder freezes past its lease; another takes over.
    eventually(new.held, "the other candidate takes the expired lease")
    canary = State(mode=Mode.CANARY, percent=5)
    before = store.decisions("codec")
    with pytest.raises(LeaseLost, match=f"{new.holder} holds term 2"):
        store.commit(
            "codec",
            kind="promote",
            actor="controller",
            reason="late",
            at=2.0,
            state=canary,
            expected_version=1,
            rollout=_rollout(),
            expected_rollout=0,
            fence=stale,
        )
    with pytest.raises(LeaseLost):
        store.write_state(
            "codec",
            canary,
            expected_version=1,
            actor="controller",
            reason="late",
            at=2.0,
            fence=stale,
        )
    assert store.decisions("codec") == before, "no decision"
    assert store.state("codec").mode is Mode.SHADOW, "no state"  # type: ignore[union-attr]
    assert store.rollout("codec") is None, "no rollout"
    # The current term writes; an operator's write needs no term at all.
    done = store.write_state(
        "codec",
        canary,
        expected_version=1,
        actor="controller",
        reason="on time",
        at=3.0,
        fence=new.fence(),
    )
    assert done.new.version == 2
    assert (
        store.write_state(
            "codec", State(), expected_version=2, actor="ops", reason="op", at=4.0
        ).new.version
        == 3
    )
    new.release()


def test_a_released_or_expired_term_cannot_write_even_if_nobody_took_over(
    store_url: str,
) -> None:
    store = open_store(store_url)
    released = store.leadership(duration=60)
    assert released.held()
    fence = released.fence()
    released.release()
    with pytest.raises(LeaseLost, match="it expired or was released"):
        store.write_state(
            "codec",
            State(),
            expected_version=0,
            actor="controller",
            reason="r",
            at=1.0,
            fence=fence,
        )
    lapsed = store.leadership(duration=MIN_LEASE)
    assert lapsed.held()
    fence = lapsed.fence()
    expires = lease_row(store).expires_at
    eventually(lambda: database_now(store) > expires, "the database clock passes expiry")
    with pytest.raises(LeaseLost, match="term 2 is over"):
        store.write_state(
            "codec",
            State(),
            expected_version=0,
            actor="controller",
            reason="r",
            at=1.0,
            fence=fence,
        )
    assert store.state("codec") is None and store.decisions("codec") == []
    assert lapsed.held() and lapsed.fence().term == 3, "taken again, as a new term"  # type: ignore[union-attr]
    lapsed.release()


def test_many_candidates_at_once_elect_exactly_one(pg_url: str) -> None:
    store = open_store(pg_url)
    leases = [open_store(pg_url).leadership(duration=60) for _ in range(8)]
    barrier = threading.Barrier(len(leases))
    won: list[bool] = [False] * len(leases)

    def race(index: int) -> None:
        barrier.wait()
        won[index] = leases[index].held()

    threads = [threading.Thread(target=race, args=(i,)) for i in range(len(leases))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert won.count(True) == 1
    assert lease_row(store).term == 1
    for lease in leases:
        lease.release()


def test_a_writer_frozen_inside_its_fenced_write_does_not_keep_the_lease(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = open_store(pg_url)
    lease = store.leadership(duration=MIN_LEASE)
    successor = open_store(pg_url).leadership(duration=60)
    assert lease.held()
    write_rollout = SqlStore._cas_rollout

    def frozen(self: SqlStore, *args: Any, **kwargs: Any) -> None:
        # Stopped in the middle of the transaction, which share-locks the lease row: the
        # server ends it after a quarter of the lease, so the successor is not kept waiting.
        try:
            eventually(successor.held, "another controller takes the expired lease")
        except StoreError as error:
            pytest.fail(f"the successor waited on the frozen writer's locks: {error}")
        write_rollout(self, *args, **kwargs)

    monkeypatch.setattr(SqlStore, "_cas_rollout", frozen)
    with pytest.raises(StoreError):
        store.commit(
            "codec",
            kind="start",
            actor="controller",
            reason="frozen",
            at=1.0,
            rollout=_rollout(),
            expected_rollout=0,
            fence=lease.fence(),
        )
    monkeypatch.undo()
    assert store.rollout("codec") is None and store.decisions("codec") == []
    assert lease_row(store).holder == successor.holder
    successor.release()
