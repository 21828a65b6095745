"""Credentials in database URLs, in every form users write them, never leave the process: not
in output, messages, logs, reports, undo scripts, nor as the name of a file."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

import cutover
from cutover.data._dialects import connect, database_url
from cutover.errors import InvalidInput, StoreError
from cutover.store import normalize_url, redact_url
from cutover.store.sql import SqlStore

from .conftest import PG_HOST, need_postgres
from .helpers import cutover_cli, free_port
from .http.conftest import running_server

# Distinctive halves of the password: neither may show up anywhere, whole or alone.
HEAD, TAIL = "Hunter2Zq", "Tail9Xv"
PIECES = (HEAD, TAIL)


def forms(host: str, port: int, user: str, db: str, schema: str | None = None) -> dict[str, str]:
    """The same password in each way a database URL can carry one."""
    options = f"options=-csearch_path%3D{schema}" if schema else "application_name=t"
    keyword_options = f" options='-csearch_path={schema}'" if schema else ""
    return {
        "userinfo": f"postgresql://{user}:{HEAD}-{TAIL}@{host}:{port}/{db}?{options}",
        "userinfo with @": f"postgresql://{user}:{HEAD}@{TAIL}@{host}:{port}/{db}?{options}",
        "query password": (
            f"postgresql://{host}:{port}/{db}?user={user}&password={HEAD}%40{TAIL}&{options}"
        ),
        "query sslpassword": (
            f"postgresql://{user}@{host}:{port}/{db}?sslpassword={HEAD}-{TAIL}&{options}"
        ),
        "keyword string": (
            f"host={host} port={port} user={user} dbname={db}"
            f" password='{HEAD} {TAIL}'{keyword_options}"
        ),
    }


FORMS = tuple(forms("h", 1, "u", "d"))


def unreachable(form: str) -> str:
    return forms("127.0.0.1", 1, "app", "shop")[form]


def assert_hidden(text: str, where: str) -> None:
    for piece in PIECES:
        assert piece not in text, f"{piece!r} leaked in {where}:\n{text}"


# -- one function hides them -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:secret@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u:p%40ss@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u:p@ss@word@h:5/db", "postgresql://u:***@h:5/db"),
        ("postgresql://u:p@ss/wo@rd@h/db", "postgresql://u:***@h/db"),
        ("postgresql://h/db?user=u&password=secret", "postgresql://h/db?user=u&password=***"),
        ("postgresql://h/db?PassWord=secret&x=1", "postgresql://h/db?PassWord=***&x=1"),
        ("postgresql://u@h/db?sslpassword=a+b", "postgresql://u@h/db?sslpassword=***"),
        ("postgresql://u@h/db?passfile=/p/.pgpass", "postgresql://u@h/db?passfile=***"),
        (
            "postgresql://u@h/db?sslkey=/k.pem&sslmode=require",
            "postgresql://u@h/db?sslkey=***&sslmode=require",
        ),
        ("mysql+pymysql://u@h/db?passwd=secret", "mysql+pymysql://u@h/db?passwd=***"),
        ("host=h password=secret dbname=d", "host=h password=*** dbname=d"),
        ("host=h password = 'se cr\\'et' dbname=d", "host=h password = *** dbname=d"),
        ("host=h sslpassword=s passfile=/p user=u", "host=h sslpassword=*** passfile=*** user=u"),
        ("host=h password='never closed dbname=d", "host=h password=***"),
        ("host=h password=two words dbname=d", "host=h password=*** ***"),
        ("sqlite:///tmp/cutover.db", "sqlite:///tmp/cutover.db"),
        (
            "postgresql://u@h:5432/db?options=-csearch_path%3Dx",
            "postgresql://u@h:5432/db?options=-csearch_path%3Dx",
        ),
    ],
)
def test_redact_url_hides_every_credential(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_a_keyword_string_is_postgresql_and_never_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    dsn = f"host=127.0.0.1 port=1 user=app dbname=shop password='{HEAD} {TAIL}'"
    url = sa.engine.make_url(normalize_url(dsn))
    assert url.drivername == "postgresql+psycopg"
    assert dict(url.query) == {
        "host": "127.0.0.1",
        "port": "1",
        "user": "app",
        "dbname": "shop",
        "password": f"{HEAD} {TAIL}",
    }
    assert database_url(dsn, "source").startswith("postgresql+psycopg:///?")
    with pytest.raises(StoreError) as caught:
        SqlStore(dsn, connect_timeout=1).states()
    assert "host=127.0.0.1 port=1 user=app dbname=shop password=***:" in str(caught.value)
    assert_hidden(str(caught.value), "the store error")
    assert os.listdir(tmp_path) == [], "no file is named after a connection string"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (f"host=h dbname=d password={HEAD} {TAIL}", "no keyword=value after password"),
        (f"host=h password='{HEAD} {TAIL}", "the quoted value of password is not closed"),
        (f"host=h passwort={HEAD}", "'passwort' is not a libpq keyword"),
        (f"app:{HEAD}@db/shop", "without a scheme"),
        (f"postgresql://app:{HEAD}@{TAIL}@db/shop", "'@' in its password"),
    ],
)
def test_what_cannot_be_read_is_refused_without_quoting_it(
    text: str, problem: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for attempt in (normalize_url, lambda t: database_url(t, "source"), cutover.configure):
        with pytest.raises(InvalidInput, match=problem) as caught:
            attempt(text)
        assert_hidden(str(caught.value), "the refusal")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("form", FORMS)
def test_store_errors_hold_no_credential(
    form: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    url = unreachable(form)
    try:
        SqlStore(url, connect_timeout=1).states()
    except (StoreError, InvalidInput) as error:
        assert_hidden(str(error), "the store error")
        if isinstance(error, StoreError):
            assert str(error).startswith(f"cannot open the store at {redact_url(url)}: ")
    else:
        raise AssertionError("a store on port 1 cannot open")


def test_a_driver_message_about_an_unencoded_at_is_scrubbed() -> None:
    from cutover.urls import scrub

    url = f"postgresql://app:{HEAD}@{TAIL}@nowhere.invalid:5432/shop"
    message = f"failed to resolve host '{TAIL}@nowhere.invalid': [Errno -2] Name unknown"
    assert (
        scrub(message, url)
        == "failed to resolve host '***@nowhere.invalid': [Errno -2] Name unknown"
    )
    assert scrub(f"password {HEAD}%40{TAIL} or {HEAD}@{TAIL}", url) == "password *** or ***"


@pytest.mark.parametrize("form", FORMS)
def test_data_connections_fail_without_a_credential(
    form: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InvalidInput) as caught:
        connect(unreachable(form), "source").dispose()
    assert_hidden(str(caught.value), "the connection error")


@pytest.mark.parametrize("form", FORMS)
def test_runtime_logs_and_health_hold_no_credential(
    form: str, caplog: pytest.LogCaptureFixture, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    url = unreachable(form)
    caplog.set_level(logging.INFO, logger="cutover")
    try:
        runtime = cutover.configure(url, wait=5, refresh_interval=3600, flush_interval=3600)
    except InvalidInput as error:
        assert form == "userinfo with @"
        assert_hidden(str(error), "configure()")
        return
    health = runtime.health()
    assert health.reachable is False
    assert "cannot open the store at" in caplog.text
    assert_hidden(caplog.text, "the log")
    assert_hidden(repr(health), "the store health")
    assert_hidden(repr(runtime.settings), "the settings")


def test_reconcile_wants_a_redacted_query_password_given_again(tmp_path: Path) -> None:
    from cutover.data.reconcile import _checked_url

    report_url = redact_url(f"postgresql://db/shop?user=app&password={HEAD}")
    with pytest.raises(InvalidInput, match="needs its password"):
        _checked_url(report_url, "target", overridden=False)
    with pytest.raises(InvalidInput, match="needs its password"):
        _checked_url(redact_url(f"host=db password={HEAD}"), "target", overridden=True)
    assert _checked_url(f"postgresql://db/shop?password={HEAD}", "target", overridden=True)


# -- the real command, in every form -------------------------------------------------------


@pytest.fixture
def pg_tables() -> Iterator[str]:
    """A schema of its own on the real PostgreSQL with ``src`` and ``tgt`` that differ by a row."""
    need_postgres()
    import secrets

    schema = f"cutover_test_{secrets.token_hex(5)}"
    engine = sa.create_engine(PG_HOST.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
        for table in ("src", "tgt"):
            conn.exec_driver_sql(f"CREATE TABLE {schema}.{table} (id int PRIMARY KEY, v text)")
        conn.exec_driver_sql(f"INSERT INTO {schema}.src VALUES (1, 'a'), (2, 'b')")
        conn.exec_driver_sql(f"INSERT INTO {schema}.tgt VALUES (1, 'a')")
    try:
        yield schema
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        engine.dispose()


def run_cli(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return cutover_cli(*args, env={"CUTOVER_STORE": None}, cwd=workdir)


@pytest.mark.slow
@pytest.mark.parametrize("form", FORMS)
def test_the_cli_never_shows_a_credential(form: str, pg_tables: str, tmp_path: Path) -> None:
    schema = pg_tables
    pg = urllib.parse.urlsplit(PG_HOST)
    live = forms(
        pg.hostname or "127.0.0.1",
        pg.port or 5432,
        pg.username or "postgres",
        pg.path.lstrip("/"),
        schema,
    )[form]
    dead = unreachable(form)
    refused = form == "userinfo with @"  # refused before any connection: exit 2
    workdir = tmp_path / "work"
    workdir.mkdir()
    outputs: dict[str, str] = {}

    def run(label: str, *args: str, code: int) -> subprocess.CompletedProcess[str]:
        done = run_cli(workdir, *args)
        outputs[label] = done.stdout + done.stderr
        assert done.returncode == (2 if refused else code), f"{label}: {outputs[label]}"
        return done

    # A store that does not answer, and one that does.
    run("status, store away", "--store", dead, "status", code=1)
    run("set", "--store", live, "set", "m", "--mode", "shadow", "--reason", "r", code=0)
    status = run("status --json", "--store", live, "status", "--json", code=0)
    run("status", "--store", live, "status", code=0)
    if not refused:
        assert json.loads(status.stdout)["store"] == redact_url(live)

    # serve: its start line, and the log of a request while its store is away.
    if refused:
        run("serve", "--store", dead, "serve", "--port", str(free_port()), code=2)
    else:
        with running_server(dead, workdir, "--public-read") as server:
            answer = httpx.get(f"{server.url}/api/v1/migrations", timeout=30)
            assert answer.status_code == 503
            served = server.log.read_text()
        assert "cutover serving " + redact_url(dead) in served
        assert "cutover server: cannot open the store at" in served
        outputs["serve"] = served

    # audit: a database that does not answer, then a report (with a checkpoint) and reconcile.
    run(
        "audit, database away",
        *("audit", "--source", dead, "--target", dead, "--table", "src"),
        code=2,
    )
    run(
        "audit",
        *("audit", "--source", live, "--target", live),
        *("--table", f"{schema}.src", "--target-table", f"{schema}.tgt"),
        *("--json", "report.json", "--checkpoint", "audit.checkpoint"),
        code=0,
    )
    if not refused:
        report = json.loads((workdir / "report.json").read_text())
        assert report["counts"]["missing"] == 1
        assert report["source"]["url"].count("***") == 1
        run("reconcile, no password", "reconcile", "report.json", code=2)
        dry = run(
            "reconcile",
            *("reconcile", "report.json", "--source", live, "--target", live),
            code=0,
        )
        assert "INSERT INTO" in dry.stdout
        run(
            "reconcile --apply",
            *("reconcile", "report.json", "--source", live, "--target", live),
            *("--apply", "--undo", "undo.sql"),
            code=0,
        )
        assert (workdir / "undo.sql").exists()

    for label, text in outputs.items():
        assert_hidden(text, label)
    written = [path for path in workdir.rglob("*") if path.is_file()]
    for path in written:
        assert_hidden(path.read_text(errors="replace"), str(path))
        assert_hidden(path.name, "a file name")
    assert {path.name for path in written} <= {
        "report.json",
        "undo.sql",
        "tokens.yaml",
        "server.log",
    }
