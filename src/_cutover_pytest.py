"""cutover's pytest plugin: ``--cutover-golden FILE --cutover-target module:function`` runs one
test per golden vector, and ``@pytest.mark.cutover_golden(PATH)`` parametrizes a test over a
golden file's vectors through the ``golden_vector`` fixture.

pytest loads it in every session of an environment where cutover is installed, so it lives
outside the package and imports cutover only when a session asks for golden vectors: a test
run that does not use them pays nothing for it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from cutover.testing._cases import GoldenCase


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("cutover", "cutover golden vectors")
    group.addoption(
        "--cutover-golden",
        action="append",
        default=[],
        metavar="FILE",
        help="Run one test per vector of this golden file (repeatable).",
    )
    group.addoption(
        "--cutover-target",
        default=None,
        metavar="MODULE:FUNCTION",
        help="The implementation --cutover-golden vectors are replayed through.",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "cutover_golden(path, target=None): run the test once per vector of the golden file at"
        " path (relative to the test file), given as the golden_vector fixture",
    )
    files = config.getoption("cutover_golden", default=[]) or []
    if not files:
        return
    if not config.getoption("cutover_target"):
        raise pytest.UsageError(
            "--cutover-golden needs --cutover-target module:function, the implementation to"
            " replay the vectors through"
        )
    config.stash[_FILES] = {Path(name).resolve() for name in files}
    for name in files:  # collected like a test file named on the command line
        if not os.path.isfile(name):
            raise pytest.UsageError(f"--cutover-golden {name}: no such file")
        if name not in config.args:
            config.args.append(name)


_FILES = pytest.StashKey[set[Path]]()


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    files = parent.config.stash.get(_FILES, None)
    if files and file_path.resolve() in files:
        return GoldenFile.from_parent(parent, path=file_path)
    return None


class GoldenFile(pytest.File):
    """A golden file named by --cutover-golden: one item per vector."""

    def collect(self) -> Iterator[pytest.Item]:
        from cutover.errors import InvalidInput
        from cutover.replay import _golden as golden
        from cutover.testing._cases import cases

        target = self.config.getoption("cutover_target")
        try:
            found = cases(self.path, golden.callable_at(target, "--cutover-target"))
        except InvalidInput as error:
            raise pytest.UsageError(str(error)) from None
        for case in found:
            yield GoldenItem.from_parent(self, name=case.id, case=case)


class GoldenItem(pytest.Item):
    """One golden vector replayed through the target."""

    def __init__(self, *, case: GoldenCase, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.case = case

    def runtest(self) -> None:
        self.case.check()

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        from cutover.testing._cases import GoldenMismatch

        if isinstance(excinfo.value, GoldenMismatch):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, f"golden vector {self.name}"


@pytest.fixture
def golden_vector(request: pytest.FixtureRequest) -> GoldenCase:
    """One vector of the golden file the test's ``cutover_golden`` marker names."""
    pytest.fail(
        f"{request.node.nodeid} uses golden_vector without a golden file; mark it with"
        " @pytest.mark.cutover_golden('vectors.jsonl')",
        pytrace=False,
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    marker = metafunc.definition.get_closest_marker("cutover_golden")
    if marker is None:
        return
    if "golden_vector" not in metafunc.fixturenames:
        raise pytest.UsageError(
            f"{metafunc.definition.nodeid} is marked cutover_golden but takes no golden_vector"
            " argument; add it to the test's parameters"
        )
    if not marker.args:
        raise pytest.UsageError(
            f"{metafunc.definition.nodeid}: cutover_golden needs the golden file's path,"
            " like @pytest.mark.cutover_golden('vectors.jsonl')"
        )
    from cutover.errors import InvalidInput
    from cutover.testing._cases import cases

    path = Path(metafunc.definition.path).parent / marker.args[0]
    try:
        found = cases(path, marker.kwargs.get("target"), marker.kwargs.get("compare"))
    except InvalidInput as error:
        raise pytest.UsageError(f"{metafunc.definition.nodeid}: {error}") from None
    metafunc.parametrize("golden_vector", found, ids=[case.id for case in found])
