"""Bearer tokens with roles: how they are configured (hashed), checked, and minted."""

from __future__ import annotations

import enum
import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cutover.control.plan import check_role
from cutover.errors import InvalidInput

TOKENS_ENV = "CUTOVER_TOKENS"
"""Tokens given in the environment: ``name:role:sha256-hex`` entries, comma separated, each
with ``:sre+engineering`` after it when the token approves in those roles."""

TOKEN_PREFIX = "cut_"
_HEX = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,79}$")


class Role(enum.IntEnum):
    """What a token may do; each role may do everything the ones below it may."""

    VIEWER = 1  # read states, stats, drifts, decisions, rollouts
    OPERATOR = 2  # set states and steer rollouts: start, promote, pause, resume, approve, ...
    ADMIN = 3  # also force a promotion, replace an active rollout, start an inline plan

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str, where: str) -> Role:
        try:
            return cls[text.strip().upper()]
        except KeyError:
            raise InvalidInput(
                f"{where}: role {text!r} is not one of viewer, operator, admin"
            ) from None


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the name decisions record, and the role that bounds what they may do."""

    name: str
    role: Role
    approval_roles: frozenset[str] = frozenset()  # the plan roles this token approves as


def hash_token(token: str) -> str:
    """The SHA-256 of a token, as stored: tokens are random, so a plain digest cannot be
    reversed, and checking one costs microseconds on every request."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    """A fresh token: 256 random bits."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class _Entry:
    digest: bytes
    principal: Principal


class Tokens:
    """The configured tokens, by hash only. :meth:`check` compares the presented token's
    hash with every entry in constant time, so timing reveals neither a match nor its place."""

    def __init__(self, entries: Iterable[tuple[str, Role, str] | _Config] = ()) -> None:
        self._entries: list[_Entry] = []
        names: set[str] = set()
        for name, role, digest, *more in entries:
            if name in names:
                raise InvalidInput(f"token name {name!r} is given twice; names must be unique")
            names.add(name)
            roles = frozenset(more[0]) if more else frozenset()
            self._entries.append(_Entry(bytes.fromhex(digest), Principal(name, role, roles)))

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> set[str]:
        return {entry.principal.name for entry in self._entries}

    def check(self, token: str) -> Principal | None:
        presented = hashlib.sha256(token.encode()).digest()
        found = None
        for entry in self._entries:
            if hmac.compare_digest(entry.digest, presented):
                found = entry.principal
        return found

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None, env: str | None = None) -> Tokens:
        """Tokens from a YAML or JSON file (``tokens: [{name, role, sha256}]``) and from
        ``$CUTOVER_TOKENS`` (``name:role:sha256``, comma separated)."""
        entries = []
        if path is not None:
            entries.extend(_from_file(Path(path)))
        text = os.environ.get(TOKENS_ENV, "") if env is None else env
        for position, raw in enumerate(filter(None, (p.strip() for p in text.split(","))), 1):
            parts = raw.split(":")
            where = f"${TOKENS_ENV} entry {position}"
            if len(parts) not in (3, 4):
                raise InvalidInput(
                    f"{where} must be name:role:sha256-hex, with :role1+role2 after it for"
                    " approval roles; make one with `cutover token create`"
                )
            roles = parts[3].split("+") if len(parts) == 4 else []
            entries.append(_entry(parts[0], parts[1], parts[2], where, roles))
        return cls(entries)


_Config = tuple[str, Role, str, frozenset[str]]


def _from_file(path: Path) -> list[_Config]:
    from cutover._yaml import parse_yaml

    try:
        data = parse_yaml(path.read_text(), str(path)) or {}
    except OSError as error:
        raise InvalidInput(f"cannot read the tokens file {path}: {error.strerror}") from None
    except UnicodeDecodeError:
        raise InvalidInput(
            f"the tokens file {path} is not UTF-8 text; give the YAML file that"
            " `cutover token create --file` writes"
        ) from None
    items = data.get("tokens") if isinstance(data, Mapping) else None
    if not isinstance(items, list):
        raise InvalidInput(f"{path}: expected a list under `tokens:` of name, role and sha256")
    out = []
    for position, item in enumerate(items, 1):
        where = f"{path}: tokens[{position}]"
        if not isinstance(item, Mapping):
            raise InvalidInput(f"{where} must be a mapping with name, role and sha256")
        unknown = set(item) - {"name", "role", "sha256", "approval_roles"}
        if unknown:
            raise InvalidInput(f"{where}: unknown field {sorted(unknown)[0]!r}")
        roles = item.get("approval_roles", [])
        if not isinstance(roles, list):
            raise InvalidInput(f"{where}: approval_roles must be a list, like [sre, engineering]")
        out.append(_entry(item.get("name"), item.get("role"), item.get("sha256"), where, roles))
    return out


def check_name(name: Any, where: str) -> str:
    """A token's name, as decisions record it."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidInput(
            f"{where}: name {name!r} must be 1 to 80 letters, digits or ._@+- characters,"
            " starting with a letter or digit"
        )
    return name


def _entry(
    name: Any, role: Any, digest: Any, where: str, approval_roles: Iterable[Any] = ()
) -> _Config:
    check_name(name, where)
    if not isinstance(role, str):
        raise InvalidInput(f"{where}: role must be viewer, operator or admin")
    parsed = Role.parse(role, where)
    if not isinstance(digest, str) or not _HEX.match(digest.strip().lower()):
        raise InvalidInput(
            f"{where}: sha256 must be the 64 hex digits `cutover token create` prints,"
            " never the token itself"
        )
    try:
        roles = frozenset(check_role(r) for r in approval_roles)
    except ValueError as error:
        raise InvalidInput(f"{where}: approval_roles: {error}") from None
    return name, parsed, digest.strip().lower(), roles
