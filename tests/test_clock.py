"""A clock shared through a file: every process given ``CUTOVER_CLOCK=file:PATH`` reads the
time the simulation wrote, and the CLI stamps its decisions with it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cutover.clock import FileClock, configured_clock, system_clock
from cutover.errors import InvalidInput

from .helpers import cutover_cli


def test_two_readers_see_the_time_one_writer_moves(tmp_path: Path) -> None:
    path = tmp_path / "clock"
    writer, reader = FileClock(path), FileClock(path)
    writer.set(1_800_000_000)
    assert reader() == 1_800_000_000
    assert writer.advance(7 * 86400) == 1_800_604_800
    assert reader() == 1_800_604_800
    with pytest.raises(ValueError, match="only moves forward"):
        writer.set(1_800_000_000)
    with pytest.raises(ValueError, match="only moves forward"):
        writer.advance(-1)


def test_a_reader_keeps_the_last_time_while_the_file_is_away(tmp_path: Path) -> None:
    path = tmp_path / "clock"
    clock = FileClock(path)
    with pytest.raises(InvalidInput, match="holds no time"):
        clock()
    path.write_text("1800000000\n")
    assert clock() == 1_800_000_000
    path.unlink()
    assert clock() == 1_800_000_000
    path.write_text("1700000000")  # written back by hand: the clock never runs backwards
    assert clock() == 1_800_000_000


def test_the_environment_names_the_clock(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("CUTOVER_CLOCK", raising=False)
    assert configured_clock() is system_clock
    monkeypatch.setenv("CUTOVER_CLOCK", "system")
    assert configured_clock() is system_clock
    monkeypatch.setenv("CUTOVER_CLOCK", f"file:{tmp_path / 'clock'}")
    clock = configured_clock()
    assert isinstance(clock, FileClock) and clock.path == tmp_path / "clock"
    monkeypatch.setenv("CUTOVER_CLOCK", "fast")
    with pytest.raises(InvalidInput, match="'file:PATH'"):
        configured_clock()


def test_the_command_line_records_decisions_at_the_shared_time(tmp_path: Path) -> None:
    path = tmp_path / "clock"
    FileClock(path).set(1_900_000_000)
    store = f"sqlite:///{tmp_path / 'store.db'}"
    env = {"CUTOVER_CLOCK": f"file:{path}"}
    done = cutover_cli("--store", store, "set", "api", "--mode", "shadow", "--reason", "r", env=env)
    assert done.returncode == 0, done.stderr
    shown = cutover_cli("--store", store, "history", "api", "--json", env=env)
    assert [entry["at"] for entry in json.loads(shown.stdout)["decisions"]] == [1_900_000_000]
    wrong = cutover_cli("--store", store, "status", env={"CUTOVER_CLOCK": "fast"})
    assert wrong.returncode == 2
    assert "CUTOVER_CLOCK='fast' is not a clock" in wrong.stderr
