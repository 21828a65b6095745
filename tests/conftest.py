"""Shared fixtures: stores on SQLite and on the real PostgreSQL, and a fresh runtime per test."""

from __future__ import annotations

import os
import secrets
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import cutover
from cutover import runtime as rt
from cutover.flags import _core as flags

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

MARIADB_HOST = os.environ.get("CUTOVER_TEST_MARIADB", "mysql+pymysql://root@127.0.0.1:3306/test")


def _mariadb_reason() -> str | None:
    """Why MariaDB (or MySQL) cannot be used here, or None when it can."""
    try:
        import pymysql
    except ImportError:
        return "PyMySQL is not installed (pip install 'cutover[mysql]')"
    address = urllib.parse.urlsplit(MARIADB_HOST)
    try:
        pymysql.connect(
            host=address.hostname,
            port=address.port or 3306,
            user=address.username or "root",
            password=address.password or "",
            connect_timeout=3,
        ).close()
        return None
    except pymysql.MySQLError as error:
        return f"MariaDB is not reachable at {address.hostname}:{address.port}: {error}"


_MARIADB_REASON = _mariadb_reason()


def need(reason: str | None) -> None:
    """Skip the test for ``reason`` (a missing server or tool), or fail it where services are
    required; nothing when ``reason`` is None."""
    if reason is not None:
        if REQUIRE:
            pytest.fail(f"CUTOVER_REQUIRE_SERVICES=1 but {reason}")
        pytest.skip(reason)


def need_postgres() -> None:
    need(_PG_REASON)


def need_mariadb() -> None:
    need(_MARIADB_REASON)


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
def fresh_pg() -> Iterator[Callable[[], str]]:
    """Makes schemas of their own on the real PostgreSQL and returns SQLAlchemy URLs into
    them; every schema is dropped afterwards."""
    need_postgres()
    import psycopg

    made: list[str] = []

    def make() -> str:
        schema = f"cutover_test_{secrets.token_hex(5)}"
        with psycopg.connect(PG_HOST, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
        made.append(schema)
        return schema_url(schema, PG_HOST.replace("postgresql://", "postgresql+psycopg://", 1))

    yield make
    with psycopg.connect(PG_HOST, autocommit=True) as conn:
        for schema in made:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
def fresh_mariadb() -> Iterator[Callable[[], str]]:
    """Makes databases of their own on the real MariaDB and returns SQLAlchemy URLs to them;
    every database is dropped afterwards."""
    need_mariadb()
    import sqlalchemy as sa

    made: list[str] = []
    admin = sa.create_engine(MARIADB_HOST, isolation_level="AUTOCOMMIT")

    def make() -> str:
        name = f"cutover_test_{secrets.token_hex(5)}"
        with admin.connect() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE {name} CHARACTER SET utf8mb4")
        made.append(name)
        return MARIADB_HOST.rsplit("/", 1)[0] + f"/{name}?charset=utf8mb4"

    yield make
    with admin.connect() as conn:
        for name in made:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name}")
    admin.dispose()


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
        if key.startswith(("CUTOVER_FORCE_", "CUTOVER_ACTOR")) or key in (
            "CUTOVER_EVENTS",
            "CUTOVER_TELEMETRY_URL",
        ):
            monkeypatch.delenv(key)
    monkeypatch.setenv("CUTOVER_STORE", f"sqlite:///{tmp_path / 'default.db'}")
    yield
    rt.shutdown()
    rt._declared.clear()  # a test's migrations do not follow it into the next test
    flags._flags.clear()
