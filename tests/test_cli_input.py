"""Malformed input on the real command line: one sentence on standard error and exit 2, never a
traceback, and nothing lost or replaced on the way."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from .conftest import PG_HOST, need_postgres
from .helpers import cutover_cli

BINARY = bytes(range(128, 256)) * 4  # no UTF-8 text, no database, no YAML


def cutover(workdir: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {"CUTOVER_STORE": f"sqlite:///{workdir / 'store.db'}", "CUTOVER_TOKENS": None}
    return cutover_cli(*args, env=env, cwd=workdir, timeout=timeout)


def assert_refused(done: subprocess.CompletedProcess[str], *words: str) -> None:
    """Exit 2 with one line on standard error that says what is wrong."""
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cutover: "), done.stderr
    for word in words:
        assert word in lines[0], lines[0]


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A folder with a migration in its store, a binary file, a folder and a FIFO."""
    (tmp_path / "binary.dat").write_bytes(BINARY)
    (tmp_path / "folder").mkdir()
    os.mkfifo(tmp_path / "fifo")
    created = cutover(tmp_path, "set", "codec", "--mode", "shadow", "--reason", "start")
    assert created.returncode == 0, created.stderr
    return tmp_path


# -- times: the parsing every --since and --until share ------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("stats", "codec", "--until", "0001-01-01"),
        ("stats", "codec", "--until", "9999-12-31T23:59:59-14:00"),
        ("stats", "codec", "--since", "0001-01-01T00:00Z"),
        ("check", "codec", "--until", "0001-01-01", "--max-drift-rate", "0.1"),
    ],
)
def test_a_time_out_of_range_is_one_sentence(workdir: Path, args: tuple[str, ...]) -> None:
    assert_refused(cutover(workdir, *args), "outside 1970-01-01 to 9999-12-31")


def test_the_edges_of_the_range_still_report(workdir: Path) -> None:
    done = cutover(workdir, "stats", "codec", "--until", "1970-01-01T00:30Z", "--json")
    assert done.returncode == 0, done.stderr
    done = cutover(workdir, "stats", "codec", "--since", "9999-12-31T23:00Z", "--json")
    assert_refused(done, "--since must be before --until")


# -- files the CLI writes: one shared writer -------------------------------------------------


def test_a_token_file_in_a_missing_folder_is_one_sentence(workdir: Path) -> None:
    done = cutover(workdir, "token", "create", "ana", "--file", "/nonexistent/dir/t.yaml")
    assert_refused(done, "--file /nonexistent/dir/t.yaml", "does not exist")


def test_a_token_file_that_is_not_text_is_kept(workdir: Path) -> None:
    done = cutover(workdir, "token", "create", "ana", "--file", "binary.dat")
    assert_refused(done, "--file binary.dat is not UTF-8 text")
    assert (workdir / "binary.dat").read_bytes() == BINARY


def test_a_token_file_that_is_no_file_is_never_replaced(workdir: Path) -> None:
    done = cutover(workdir, "token", "create", "ana", "--file", "fifo", timeout=30)
    assert_refused(done, "--file fifo is not a regular file")
    assert (workdir / "fifo").is_fifo()


def test_a_token_file_is_written_for_its_owner_alone(workdir: Path) -> None:
    for name in ("ana", "bo"):
        done = cutover(workdir, "token", "create", name, "--file", "tokens.yaml")
        assert done.returncode == 0, done.stderr
    assert (workdir / "tokens.yaml").stat().st_mode & 0o777 == 0o600
    assert (workdir / "tokens.yaml").read_text().count("sha256:") == 2
    assert not list(workdir.glob("*.tmp"))


def test_serve_names_a_tokens_file_that_is_not_text(workdir: Path) -> None:
    done = cutover(workdir, "serve", "--port", "0", "--tokens", "binary.dat")
    assert_refused(done, "the tokens file binary.dat is not UTF-8 text")


# -- audit: its paths, its databases, its condition ----------------------------------------


def sqlite_pair(workdir: Path) -> tuple[str, str]:
    urls = []
    for side in ("source", "target"):
        url = f"sqlite:///{workdir / f'{side}.db'}"
        engine = sa.create_engine(url)
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE items (id INTEGER PRIMARY KEY, v TEXT)")
            conn.exec_driver_sql("INSERT INTO items VALUES (1, 'a')")
        engine.dispose()
        urls.append(url)
    return urls[0], urls[1]


@pytest.mark.parametrize(
    ("option", "path", "words"),
    [
        ("--json", "folder", ("--json folder is not a regular file",)),
        ("--json", "fifo", ("--json fifo is not a regular file",)),
        ("--checkpoint", "folder", ("--checkpoint folder is not a regular file",)),
        ("--checkpoint", "/nonexistent/dir/cp", ("--checkpoint /nonexistent/dir/cp", "create")),
        ("--checkpoint", "binary.dat", ("checkpoint binary.dat is not an audit checkpoint",)),
    ],
)
def test_audit_paths_it_cannot_use_are_one_sentence(
    workdir: Path, option: str, path: str, words: tuple[str, ...]
) -> None:
    source, target = sqlite_pair(workdir)
    done = cutover(
        workdir, "audit", "--source", source, "--target", target, "--table", "items", option, path
    )
    assert_refused(done, *words)
    assert (workdir / "folder").is_dir() and (workdir / "fifo").is_fifo()
    assert (workdir / "binary.dat").read_bytes() == BINARY
    assert not list(workdir.glob("*.tmp"))


def test_audit_of_a_file_that_is_no_database(workdir: Path) -> None:
    done = cutover(
        workdir, "audit", "--source", "binary.dat", "--target", "binary.dat", "--table", "t"
    )
    assert_refused(done, "cannot connect to the source database", "check --source")


def test_audit_of_a_url_whose_port_is_not_a_number(workdir: Path) -> None:
    done = cutover(
        workdir, "audit", "--source", "postgresql://db:abc/shop", "--target", "x.db", "--table", "t"
    )
    assert_refused(done, "the source URL is not valid")


@pytest.fixture
def pg_table() -> Iterator[tuple[str, Callable[[], int]]]:
    """A table of its own on the real PostgreSQL with two rows: its name, and its row count."""
    need_postgres()
    import secrets

    name = f"cutover_where_{secrets.token_hex(4)}"
    engine = sa.create_engine(PG_HOST.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE TABLE {name} (id int PRIMARY KEY, v text)")
        conn.exec_driver_sql(f"INSERT INTO {name} VALUES (1, 'a'), (2, 'b')")

    def rows() -> int:
        with engine.connect() as conn:
            return int(conn.exec_driver_sql(f"SELECT count(*) FROM {name}").scalar_one())

    try:
        yield name, rows
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {name}")
        engine.dispose()


def test_a_second_statement_in_where_is_refused_and_writes_nothing(
    workdir: Path, pg_table: tuple[str, Callable[[], int]]
) -> None:
    table, rows = pg_table
    done = cutover(
        workdir,
        *("audit", "--source", PG_HOST, "--target", PG_HOST, "--table", table),
        *("--where", f"1=1; DROP TABLE {table}"),
    )
    assert_refused(done, "the source database rejected the query with --where", "read-only")
    assert rows() == 2
