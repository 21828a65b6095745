"""``import cutover`` loads nothing until a name is used, and each name is what it says."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import types
from pathlib import Path

import cutover

HEAVY = ("cutover.runtime", "sqlalchemy", "pydantic", "cutover.store")


def _fresh(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=60
    )
    return done.stdout.strip()


def test_importing_the_package_loads_neither_the_runtime_nor_its_libraries() -> None:
    loaded = _fresh(f"import sys, cutover; print([m for m in {HEAVY!r} if m in sys.modules])")
    assert loaded == "[]"


def test_an_audit_loads_no_runtime(tmp_path: Path) -> None:
    for name in ("a", "b"):
        with sqlite3.connect(tmp_path / f"{name}.db") as db:
            db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
            db.execute("INSERT INTO t VALUES (1, 'x'), (2, 'y')")
    argv = ["cutover", "audit", "--source", str(tmp_path / "a.db"), "--target"]
    argv += [str(tmp_path / "b.db"), "--table", "t", "--key", "id"]
    code = (
        f"import sys; sys.argv = {argv!r}\n"
        "from cutover.cli import main\n"
        "try:\n    main()\nexcept SystemExit as end:\n    assert not end.code, end.code\n"
        "print([m for m in ('cutover.runtime', 'pydantic', 'cutover.store') if m in sys.modules])"
    )
    assert _fresh(code).splitlines()[-1] == "[]"


def test_the_decorator_stays_the_decorator_when_its_module_is_imported() -> None:
    code = (
        "import cutover, sys\n"
        "import cutover.migration\n"
        "from cutover.migration import Migration\n"
        "print(callable(cutover.migration), type(cutover.migration).__name__,"
        " type(sys.modules['cutover.migration']).__name__)"
    )
    assert _fresh(code) == "True function module"


def test_every_public_name_resolves_and_submodules_load_on_first_use() -> None:
    assert set(cutover.__all__) == {*cutover._HOMES, "compare", "errors"}
    for name in cutover.__all__:
        assert getattr(cutover, name) is not None, name
    assert isinstance(cutover.compare, types.ModuleType)
    assert isinstance(cutover.errors, types.ModuleType)
    assert callable(cutover.migration) and not isinstance(cutover.migration, types.ModuleType)
    assert _fresh("import cutover; print(callable(cutover.runtime.shutdown))") == "True"
    assert "Controller" in dir(cutover)


def test_an_unknown_name_is_an_attribute_error() -> None:
    try:
        cutover.no_such_thing  # noqa: B018
    except AttributeError as error:
        assert "no_such_thing" in str(error)
    else:
        raise AssertionError("an unknown name resolved")
    assert not hasattr(cutover, "_private_missing")
