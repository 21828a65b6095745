"""``import cutover`` loads nothing until a name is used, and each name is what it says."""

from __future__ import annotations

import subprocess
import sys
import types

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


def test_the_audit_command_loads_no_runtime() -> None:
    code = (
        "import sys; sys.argv = ['cutover', 'audit', '--help']\n"
        "from cutover.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
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
    assert set(cutover.__all__) == set(cutover._HOMES)
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
