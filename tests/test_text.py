"""Text a store cannot keep (a NUL, an actor longer than its column) is bad input on every engine,
refused before anything is written: one sentence and exit 2, never a store "refusing the
operation"; and the one name rule holds in cohorts and plans as in the library."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from cutover.clock import system_clock
from cutover.control.controller import Controller
from cutover.control.plan import parse_plan
from cutover.errors import InvalidInput
from cutover.model import Mode, State
from cutover.operations import Change, set_state
from cutover.store import open_store

from .helpers import cutover_cli

LONG = "a" * 201


def test_the_store_refuses_what_it_could_not_keep_before_writing(store_url: str) -> None:
    store = open_store(store_url)
    try:
        for actor, reason, message in (
            ("ops", "why\x00not", "the reason contains a NUL character (\\x00); remove it"),
            ("ops\x00", "why", "the actor contains a NUL character (\\x00); remove it"),
            (LONG, "why", "the actor is 201 characters long; keep it to 200 or fewer"),
        ):
            with pytest.raises(InvalidInput) as refused:
                store.write_state(
                    "pay", State(mode=Mode.SHADOW), expected_version=0, actor=actor,
                    reason=reason, at=1.0,
                )  # fmt: skip
            assert str(refused.value) == message
        with pytest.raises(InvalidInput, match="migration name 'a b' must be"):
            store.write_state("a b", State(), expected_version=0, actor="ops", reason="r", at=1.0)
        controller = Controller(store, clock=system_clock)
        plan = parse_plan({"migration": "pay", "steps": [{"mode": "shadow"}]})
        with pytest.raises(InvalidInput, match="the plan's source contains a NUL"):
            controller.start(plan, actor="ops", reason="r", source="plan\x00.yaml")
        with pytest.raises(InvalidInput, match="the actor is 201 characters long"):
            controller.start(plan, actor=LONG, reason="r")
        controller.close()
        assert store.decisions() == [] and store.states() == {} and store.rollouts() == {}
        set_state(store, "pay", Change(mode=Mode.SHADOW), reason="r", actor="a" * 200,
                  clock=system_clock)  # fmt: skip
        assert store.state("pay").updated_by == "a" * 200
    finally:
        store.close()


def cutover(store_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return cutover_cli("--store", store_url, *args)


def one_sentence(result: subprocess.CompletedProcess[str], *expected: str) -> None:
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert "the store" not in result.stderr, result.stderr
    for text in expected:
        assert text in result.stderr, result.stderr


def test_the_cli_refuses_a_nul_in_a_plan_and_an_overlong_actor(pg_url: str, tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text('migration: pay\nsteps:\n  - mode: shadow\n    name: "shadow\\0"\n')
    one_sentence(
        cutover(pg_url, "rollout", "start", str(plan)),
        f"{plan}: steps[0].name: contains a NUL character",
    )
    plan.write_text("migration: pay\nsteps:\n  - mode: shadow\n")
    one_sentence(
        cutover(pg_url, "rollout", "start", str(plan), "--actor", LONG),
        "the actor is 201 characters long",
    )
    one_sentence(
        cutover(pg_url, "set", "pay", "--mode", "shadow", "--reason", "r", "--actor", LONG),
        "the actor is 201 characters long",
    )
    assert open_store(pg_url).decisions() == []


def test_cohorts_and_plans_hold_names_to_the_one_rule(sqlite_url: str, tmp_path: Path) -> None:
    rule = "must be 1 to 200 letters, digits or _ . : / -, starting with a letter or digit"
    for name in ("a b", "\u202epay", ""):
        result = cutover(
            sqlite_url,
            "cohort",
            "add",
            "wave-1",
            "--migration",
            name,
            "--tenants",
            "acme",
            "--wave",
            "1",
        )
        one_sentence(result, f"migration name {name!r} {rule}")
        with pytest.raises(InvalidInput, match=rf"plan.yaml: migration: .*{rule}"):
            parse_plan({"migration": name, "steps": [{"mode": "shadow"}]}, "plan.yaml")
    assert parse_plan({"migration": "team/codec", "steps": [{"mode": "shadow"}]}).migration
