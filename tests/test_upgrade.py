"""A store written by the first release is upgraded in place, its decisions kept."""

from __future__ import annotations

import sqlalchemy as sa

from cutover.model import Rollout, RolloutStatus, State
from cutover.store import normalize_url, open_store

V1_DECISIONS = """
CREATE TABLE cutover_decisions (
    id {id} PRIMARY KEY,
    migration VARCHAR(200) NOT NULL,
    version BIGINT NOT NULL,
    at FLOAT NOT NULL,
    actor VARCHAR(200) NOT NULL,
    reason TEXT NOT NULL,
    old_state {json},
    new_state {json} NOT NULL,
    evidence {json} NOT NULL,
    CONSTRAINT cutover_decisions_one_per_version UNIQUE (migration, version)
)
"""


def test_a_first_release_store_is_upgraded_and_keeps_its_decisions(store_url: str) -> None:
    engine = sa.create_engine(normalize_url(store_url))
    postgres = engine.dialect.name == "postgresql"
    with engine.begin() as conn:
        ddl = V1_DECISIONS.format(
            id="BIGSERIAL" if postgres else "INTEGER", json="JSON" if postgres else "TEXT"
        )
        conn.exec_driver_sql(ddl)
        conn.exec_driver_sql(
            "CREATE INDEX cutover_decisions_by_migration ON cutover_decisions (migration, id)"
        )
        conn.exec_driver_sql(
            "CREATE TABLE cutover_meta (key VARCHAR(64) PRIMARY KEY, value VARCHAR(255) NOT NULL)"
        )
        conn.exec_driver_sql("INSERT INTO cutover_meta VALUES ('schema_version', '1')")
        conn.exec_driver_sql(
            "INSERT INTO cutover_decisions (migration, version, at, actor, reason, new_state,"
            " evidence) VALUES ('codec', 1, 1.0, 'ops', 'before the upgrade',"
            """ '{"mode": "shadow", "version": 1}', '{}')"""
        )
    engine.dispose()

    store = open_store(store_url)
    [old] = store.decisions("codec")
    assert (old.kind, old.reason, old.changed, old.new.mode.value) == (
        "set",
        "before the upgrade",
        True,
        "shadow",
    )
    rollout = Rollout("codec", {}, "plan.yaml", RolloutStatus.PAUSED, 0, 2.0, 2.0, "ops")
    paused = store.commit(
        "codec",
        kind="pause",
        actor="ops",
        reason="after",
        at=2.0,
        rollout=rollout,
        expected_rollout=0,
    )
    assert not paused.changed and store.decisions("codec")[-1].kind == "pause"
    assert store.write_state("other", State(), expected_version=0, actor="o", reason="r", at=3)
    with store.engine.connect() as conn:  # type: ignore[attr-defined]
        version = conn.exec_driver_sql(
            "SELECT value FROM cutover_meta WHERE key = 'schema_version'"
        ).scalar()
    assert version == "2"
