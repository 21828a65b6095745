"""Shared fixtures: stores on SQLite and on the real PostgreSQL, and a fresh runtime per test."""

from __future__ import annotations

import os
import secrets
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

import cutover
from cutover import runtime as rt

from .helpers import quiet
from .tcpproxy import TcpProxy

PG_HOST = os.environ.get("CUTOVER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
REQUIRE = os.environ.get("CUTOVER_REQUIRE_SERVICES") == "1"


def _pg_reason() -> str | None:
    """Why PostgreSQL cannot be used here, or None when it can."""
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (pip install 'cutover[postgres]')"
    try:
        with psycopg.connect(PG_HOST, connect_timeout=3):
            return None
    except psycopg.OperationalError as error:
        return f"PostgreSQL is not reachable at {PG_HOST}: {str(error).strip().splitlines()[0]}"


_PG_REASON = _pg_reason()


def need(reason: str | None) -> None:
    """Skip the test for ``reason`` (a missing server or tool), or fail it where services are
    required; nothing when ``reason`` is None."""
    if reason is not None:
        if REQUIRE:
            pytest.fail(f"CUTOVER_REQUIRE_SERVICES=1 but {reason}")
        pytest.skip(reason)


def need_postgres() -> None:
    need(_PG_REASON)


@pytest.fixture
def pg_schema() -> Iterator[str]:
    """A schema of its own on the real PostgreSQL, dropped afterwards."""
    need_postgres()
    import psycopg

    schema = f"cutover_test_{secrets.token_hex(5)}"
    with psycopg.connect(PG_HOST, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield schema
    finally:
        with psycopg.connect(PG_HOST, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def schema_url(schema: str, host: str = PG_HOST) -> str:
    return f"{host}?options=-csearch_path%3D{schema}"


@pytest.fixture
def pg_url(pg_schema: str) -> str:
    """A store URL on the real PostgreSQL, in a schema of its own."""
    return schema_url(pg_schema)


@pytest.fixture
def pg_proxy(pg_schema: str) -> Iterator[tuple[TcpProxy, str]]:
    """A proxy in front of the real PostgreSQL that the test can cut, and a store URL through it."""
    address = urllib.parse.urlsplit(PG_HOST)
    proxy = TcpProxy((address.hostname or "127.0.0.1", address.port or 5432))
    through = address._replace(netloc=f"{address.username}@127.0.0.1:{proxy.port}").geturl()
    try:
        yield proxy, schema_url(pg_schema, through)
    finally:
        proxy.close()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'cutover.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Every store test runs on both backends."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'cutover.db'}"
    else:
        yield request.getfixturevalue("pg_url")


@pytest.fixture
def clock() -> cutover.ManualClock:
    return cutover.ManualClock()


@pytest.fixture
def runtime(sqlite_url: str, clock: cutover.ManualClock) -> Iterator[rt.Runtime]:
    """A runtime on a fresh SQLite file with a manual clock; background flushing effectively off."""
    configured = quiet(sqlite_url, clock=clock)
    try:
        yield configured
    finally:
        rt.shutdown()


@pytest.fixture(autouse=True)
def _no_leftover_runtime(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No test sees another's runtime or kill switches, or writes a store outside its tmp dir."""
    for key in list(os.environ):
        if key.startswith(("CUTOVER_FORCE_", "CUTOVER_ACTOR")) or key == "CUTOVER_EVENTS":
            monkeypatch.delenv(key)
    monkeypatch.setenv("CUTOVER_STORE", f"sqlite:///{tmp_path / 'default.db'}")
    yield
    rt.shutdown()
    rt._declared.clear()  # a test's migrations do not follow it into the next test
