"""Tokens: minted by the CLI, stored hashed, loaded from a file and the environment, checked
against every entry; mistakes in their configuration are one clear sentence."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from cutover.cli import cli
from cutover.errors import InvalidInput
from cutover.http import Role, Tokens, hash_token, new_token


def mint(tmp_path: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["token", "create", *args], catch_exceptions=True)
    if isinstance(result.exception, InvalidInput):
        return 2, str(result.exception)
    return result.exit_code, result.output


def token_in(output: str) -> str:
    return output.strip().splitlines()[-1].rsplit(" ", 1)[-1]


def test_a_minted_token_is_kept_only_as_its_hash(tmp_path: Path) -> None:
    path = tmp_path / "tokens.yaml"
    code, out = mint(tmp_path, "alice", "--role", "operator", "--file", str(path))
    assert code == 0, out
    secret = token_in(out)
    assert secret.startswith("cut_") and len(secret) > 40
    text = path.read_text()
    assert secret not in text and hash_token(secret) in text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    code, out = mint(tmp_path, "bob", "--role", "viewer", "--file", str(path))
    tokens = Tokens.load(path, env="")
    assert tokens.check(secret).name == "alice"
    assert tokens.check(secret).role is Role.OPERATOR
    assert tokens.check(token_in(out)).role is Role.VIEWER
    assert tokens.check(secret + "x") is None
    assert tokens.names() == {"alice", "bob"}


def test_a_name_is_never_minted_twice_into_one_file(tmp_path: Path) -> None:
    path = tmp_path / "tokens.yaml"
    mint(tmp_path, "alice", "--file", str(path))
    before = path.read_text()
    code, message = mint(tmp_path, "alice", "--file", str(path))
    assert code == 2
    assert message == f"{path} already has a token named 'alice'; pick another name"
    assert path.read_text() == before


def test_an_inline_list_is_left_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "tokens.yaml"
    path.write_text("tokens: []\n")
    code, message = mint(tmp_path, "alice", "--file", str(path))
    assert code == 2 and "block list" in message
    assert path.read_text() == "tokens: []\n"


def test_without_a_file_the_entry_is_printed_for_the_environment(tmp_path: Path) -> None:
    code, out = mint(tmp_path, "ci-bot", "--role", "admin")
    assert code == 0
    line = next(part for part in out.split() if part.startswith("CUTOVER_TOKENS="))
    tokens = Tokens.load(None, env=line.split("=", 1)[1])
    assert tokens.check(token_in(out)).role is Role.ADMIN


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ("alice:operator", "$CUTOVER_TOKENS entry 1 must be name:role:sha256-hex"),
        ("alice:root:" + "a" * 64, "role 'root' is not one of viewer, operator, admin"),
        ("alice:viewer:not-hex", "sha256 must be the 64 hex digits"),
        ("al ice:viewer:" + "a" * 64, "name 'al ice' must be 1 to 80 letters"),
        (f"a:viewer:{'a' * 64},a:admin:{'b' * 64}", "token name 'a' is given twice"),
    ],
)
def test_a_bad_environment_entry_is_named(env: str, message: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        Tokens.load(None, env=env)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("tokens: {}\n", "expected a list under `tokens:`"),
        ("tokens:\n  - name: a\n    role: viewer\n", "tokens[1]: sha256 must be"),
        ("tokens:\n  - name: a\n    role: viewer\n    token: x\n", "unknown field 'token'"),
        ("tokens: [\n", "not valid YAML or JSON"),
    ],
)
def test_a_bad_tokens_file_is_named(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "tokens.yaml"
    path.write_text(text)
    with pytest.raises(InvalidInput) as caught:
        Tokens.load(path, env="")
    assert message in str(caught.value)
    assert str(path) in str(caught.value)


def test_a_missing_tokens_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="cannot read the tokens file"):
        Tokens.load(tmp_path / "absent.yaml", env="")


@given(st.lists(st.text(min_size=1, max_size=60), min_size=1, max_size=5, unique=True))
def test_only_the_exact_token_is_accepted(presented: list[str]) -> None:
    secret = new_token()
    tokens = Tokens([("alice", Role.ADMIN, hash_token(secret))])
    assert tokens.check(secret).name == "alice"
    for other in presented:
        if other != secret:
            assert tokens.check(other) is None


def test_serve_refuses_a_bad_tokens_file_with_exit_2(tmp_path: Path) -> None:
    import subprocess
    import sys

    (tmp_path / "tokens.yaml").write_text("tokens:\n  - name: a\n    role: boss\n    sha256: x\n")
    result = subprocess.run(
        [sys.executable, "-m", "cutover", "serve", "--tokens", str(tmp_path / "tokens.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"CUTOVER_STORE": f"sqlite:///{tmp_path / 'c.db'}", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 2
    assert "role 'boss' is not one of viewer, operator, admin" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_token_lands_in_the_tokens_list_or_the_file_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "tokens.yaml"
    code, out = mint(tmp_path, "2024", "--role", "operator", "--file", str(path))
    assert code == 0, out
    assert Tokens.load(path, env="").check(token_in(out)).name == "2024"  # not the number 2024
    path.write_text(path.read_text() + "others:\n  - x\n")
    before = path.read_text()
    code, message = mint(tmp_path, "bob", "--file", str(path))
    assert code == 2 and "last block of the file" in message
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["tokens.yaml"]  # no scratch file left


def test_tokens_carry_the_plan_roles_they_approve_as(tmp_path: Path) -> None:
    path = tmp_path / "tokens.yaml"
    code, out = mint(
        tmp_path,
        "sam",
        "--role",
        "operator",
        "--approval-role",
        "sre",
        "--approval-role",
        "engineering",
        "--file",
        str(path),
    )
    assert code == 0, out
    assert "approval_roles: [sre, engineering]" in path.read_text()
    found = Tokens.load(path, env="").check(token_in(out))
    assert found is not None and found.approval_roles == {"sre", "engineering"}
    secret = new_token()
    env = Tokens.load(env=f"pia:operator:{hash_token(secret)}:product+support")
    found = env.check(secret)
    assert found is not None and found.approval_roles == {"product", "support"}
    assert found.role is Role.OPERATOR


def test_a_bad_approval_role_is_one_sentence(tmp_path: Path) -> None:
    code, message = mint(tmp_path, "sam", "--approval-role", "On Call")
    assert code == 2 and message.startswith("--approval-role: role 'On Call' must be")
    with pytest.raises(InvalidInput, match=r"entry 1: approval_roles: role 'SRE' must be"):
        Tokens.load(env=f"sam:operator:{hash_token(new_token())}:SRE")
    path = tmp_path / "tokens.yaml"
    path.write_text(
        f"tokens:\n  - name: sam\n    role: operator\n    sha256: {hash_token(new_token())}\n"
        "    approval_roles: sre\n"
    )
    with pytest.raises(InvalidInput, match=r"tokens\[1\]: approval_roles must be a list"):
        Tokens.load(path, env="")
