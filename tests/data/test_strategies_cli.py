"""`cutover strategies`: the flag matrix of a data migration, as the stored state gives it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cutover.cli import main


def cutover(capsys: pytest.CaptureFixture[str], store: str, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exited:
        main(["--store", store, *args])
    out, err = capsys.readouterr()
    return int(exited.value.code or 0), out, err


def matrix(capsys: pytest.CaptureFixture[str], store: str, *tenants: str) -> dict[str, tuple]:
    args = [arg for tenant in tenants for arg in ("--tenant", tenant)]
    code, out, err = cutover(capsys, store, "strategies", "orders", *args, "--json")
    assert code == 0, err
    return {
        row["tenant"]: (row["write"], row["read"], row["cohort"], row["pinned"])
        for row in json.loads(out)["tenants"]
    }


def test_each_phase_of_the_playbook_gives_its_strategies(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    store = f"sqlite:///{tmp_path / 'store.db'}"

    def run(*args: str) -> None:
        code, _, err = cutover(capsys, store, *args, "--reason", "test")
        assert code == 0, err

    run("set", "orders", "--mode", "legacy")
    assert matrix(capsys, store, "acme") == {"acme": ("legacy-only", "legacy", None, None)}
    run("set", "orders", "--mode", "shadow")
    assert matrix(capsys, store, "acme")["acme"][:2] == ("legacy-primary", "compare")
    run("set", "orders", "--mode", "canary", "--percent", "0")
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
    )
    assert matrix(capsys, store, "initech") == {
        "initech": ("mirror", "compare", None, None),
        "acme": ("mirror", "compare", "wave-1", None),
        "globex": ("mirror", "compare", "wave-1", None),
    }
    run("cohort", "promote", "wave-1", "--migration", "orders")
    assert matrix(capsys, store)["acme"] == ("mirror", "prefer-new", "wave-1", "new")
    run("cohort", "rollback", "wave-1", "--migration", "orders")
    assert matrix(capsys, store)["globex"] == ("legacy-only", "legacy", "wave-1", "legacy")
    run("set", "orders", "--mode", "new", "--unpin", "acme", "--unpin", "globex")
    assert matrix(capsys, store, "acme")["acme"][:2] == ("new-primary", "prefer-new")
    run("set", "orders", "--no-fallback")
    code, out, _ = cutover(capsys, store, "strategies", "orders", "--tenant", "hooli")
    assert code == 0
    assert "new-only" in out and "other tenants: new-only / new" in out


def test_the_kill_switch_and_an_unknown_migration(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = f"sqlite:///{tmp_path / 'store.db'}"
    assert cutover(capsys, store, "set", "orders", "--mode", "shadow", "--reason", "t")[0] == 0
    monkeypatch.setenv("CUTOVER_FORCE_ORDERS", "legacy")
    code, out, _ = cutover(capsys, store, "strategies", "orders", "--tenant", "acme")
    assert code == 0
    assert "forced legacy by the environment" in out and "legacy-only" in out
    code, _, err = cutover(capsys, store, "strategies", "nothing")
    assert code == 2 and "no migration named 'nothing'" in err
