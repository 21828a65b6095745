"""Hostile and mistaken YAML: every file cutover reads (plans, token files) is refused in one
sentence naming the file and the line when it repeats a key, nests too deep or expands too far."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from cutover._yaml import MAX_DEPTH, MAX_NODES, parse_yaml
from cutover.control.plan import load_plan
from cutover.errors import InvalidInput
from cutover.http import Tokens, hash_token, new_token

from .helpers import cutover_cli

DEEP = "migration: " + "[" * 900 + "]" * 900 + "\n"  # 1.8 KB
LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{name}: &{name} [{', '.join([f'*{previous}'] * 10)}]\n"
    for previous, name in zip("abcdefgh", "bcdefghi", strict=True)
)
PLAN = "migration: pay\nsteps:\n  - mode: shadow\n"
TOKEN = f"    role: viewer\n    sha256: {hash_token(new_token())}\n"


def refused(text: str) -> str:
    with pytest.raises(InvalidInput) as caught:
        parse_yaml(text, "f.yaml")
    return str(caught.value)


def test_a_key_given_twice_is_refused_with_both_lines() -> None:
    assert refused("migration: a\nsteps: []\nmigration: b\n") == (
        "f.yaml: line 3, column 1: the key 'migration' is given twice (first on line 1);"
        " keep one of them"
    )
    assert "the key 'max' is given twice (first on line 3)" in refused(
        "checks:\n  - name: x\n    max: 1\n    window: 5m\n    max: 2\n"
    )
    assert "the key 'a' is given twice" in refused('{"a": 1, "b": 2, "a": 3}')  # JSON too
    assert "the key 1 is given twice" in refused("1: a\n0x1: b\n")  # equal once read


def test_merge_keys_may_be_overridden_but_not_repeated() -> None:
    text = "base: &b {hold: 1h, min_calls: 5}\nstep:\n  <<: *b\n  hold: 2h\n"
    assert parse_yaml(text, "f.yaml")["step"] == {"hold": "2h", "min_calls": 5}
    assert "the key 'hold' is given twice (first on line 4)" in refused(text + "  hold: 3h\n")


def test_nesting_aliases_and_size_are_bounded() -> None:
    assert refused(DEEP).startswith(
        f"f.yaml: line 1, column {11 + MAX_DEPTH}: nested deeper than {MAX_DEPTH} levels;"
    )
    assert parse_yaml("a: " + "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1), "f.yaml")
    half = MAX_DEPTH // 2 + 1
    stacked = f"a: &a {'[' * half}1{']' * half}\nb: {'[' * half}*a{']' * half}\n"
    assert f"an alias here nests deeper than {MAX_DEPTH} levels" in refused(stacked)
    assert f"expands to more than {MAX_NODES:,} values" in refused(LAUGHS)
    assert "an alias refers to the value that contains it" in refused("a: &a [1, *a]\n")


def test_control_characters_and_syntax_errors_are_one_line() -> None:
    assert refused("a: b\x00c\n") == (
        "f.yaml: line 1: not valid YAML or JSON (character U+0000 is not allowed); remove it"
    )
    for text in ("migration: [\n", "a: 1\n---\nb: 2\n", "a: *nowhere\n"):
        message = refused(text)
        assert message.startswith("f.yaml: line ") and "not valid YAML or JSON" in message
        assert "\n" not in message


def test_a_plan_file_with_a_repeated_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "plan.yaml"
    path.write_text(PLAN + "migration: other\n")
    with pytest.raises(InvalidInput, match=r"plan.yaml: line 4, column 1: the key 'migration'"):
        load_plan(path)


def test_a_tokens_file_with_a_repeated_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "tokens.yaml"
    path.write_text(f"tokens:\n  - name: alice\n{TOKEN}    role: admin\n")
    with pytest.raises(InvalidInput, match=r"tokens.yaml: line 5, column 5: the key 'role'"):
        Tokens.load(path, env="")
    path.write_text(f"tokens:\n  - name: alice\n{TOKEN}tokens: []\n")
    with pytest.raises(InvalidInput, match=r"tokens.yaml: line 5, column 1: the key 'tokens'"):
        Tokens.load(path, env="")


def cutover(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return cutover_cli(*args, env={"CUTOVER_STORE": f"sqlite:///{tmp_path / 'c.db'}"})


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (DEEP, f"nested deeper than {MAX_DEPTH} levels"),
        (PLAN + "migration: other\n", "the key 'migration' is given twice"),
    ],
    ids=["deep", "repeated"],
)
def test_the_cli_refuses_a_hostile_file_in_one_line(
    tmp_path: Path, text: str, problem: str
) -> None:
    path = tmp_path / "hostile.yaml"
    path.write_text(text)
    for args in (
        ("rollout", "validate", str(path)),
        ("rollout", "start", str(path), "--reason", "r"),
        ("serve", "--tokens", str(path), "--port", "0"),
    ):
        result = cutover(tmp_path, *args)
        assert result.returncode == 2, (args, result.stderr)
        assert result.stderr.startswith(f"cutover: {path}: line "), args
        assert problem in result.stderr, args
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, args
