"""A real ``cutover serve`` process on a free port, with a token per role."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from cutover.http import hash_token, new_token

from ..helpers import free_port

ROLES = ("viewer", "operator", "admin")


@dataclass
class Server:
    """A running server: its base URL, the store it serves, and a token per person."""

    url: str
    store_url: str
    tokens: dict[str, str]  # person -> token; persons are named after their role, plus "olga"
    log: Path

    def client(self, who: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.tokens[who]}"} if who else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


@contextmanager
def running_server(store_url: str, workdir: Path, *flags: str) -> Iterator[Server]:
    """Start ``cutover serve`` on ``store_url`` and stop it afterwards."""
    tokens = {}
    lines = ["tokens:"]
    # Two operators, so four-eyes approvals can be shown, and two who approve as plan roles.
    people = [*((r, r, "") for r in ROLES), ("olga", "operator", "")]
    people += [("sam", "operator", "[sre]"), ("pia", "operator", "[product, support]")]
    for person, role, approval_roles in people:
        tokens[person] = new_token()
        lines += [
            f"  - name: {person}",
            f"    role: {role}",
            f"    sha256: {hash_token(tokens[person])}",
        ]
        if approval_roles:
            lines.append(f"    approval_roles: {approval_roles}")
    tokens_file = workdir / "tokens.yaml"
    tokens_file.write_text("\n".join(lines) + "\n")
    port = free_port()
    log = workdir / "server.log"
    env = {**os.environ, "CUTOVER_STORE": store_url}
    env.pop("CUTOVER_TOKENS", None)
    with log.open("w") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cutover",
                "serve",
                "--port",
                str(port),
                "--tokens",
                str(tokens_file),
                *flags,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise AssertionError(f"cutover serve exited: {log.read_text()}")
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code in (200, 503):
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"cutover serve did not answer: {log.read_text()}")
            time.sleep(0.1)
        yield Server(url, store_url, tokens, log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """``serve(store_url, *flags)`` starts a server that stops when the test ends."""
    stack = []

    def start(store_url: str, *flags: str) -> Server:
        workdir = tmp_path / f"server{len(stack)}"
        workdir.mkdir()
        context = running_server(store_url, workdir, *flags)
        server = context.__enter__()
        stack.append(context)
        return server

    yield start
    for context in reversed(stack):
        context.__exit__(None, None, None)
