"""Each layer imports only downward: no two of cutover's modules import each other, directly or
round a circle, lazy imports inside functions included (those under ``TYPE_CHECKING`` are for
annotations and never run). A package's ``__init__`` may load its own submodules on use (the
store's ``open_store`` loads its SQL implementation): that is the package's door, not a circle."""

from __future__ import annotations

import ast
import graphlib
from collections.abc import Container, Iterator
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def modules() -> dict[str, Path]:
    found = {}
    for path in SRC.joinpath("cutover").rglob("*.py"):
        parts = path.relative_to(SRC).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imported(tree: ast.AST, package: str, known: Container[str]) -> Iterator[str]:
    """Every module an import statement outside ``if TYPE_CHECKING:`` loads: for ``from x
    import y``, the module x.y when there is one, else x (y is a member of it)."""
    if isinstance(tree, ast.If) and _type_checking(tree.test):
        for node in tree.orelse:
            yield from _imported(node, package, known)
        return
    if isinstance(tree, ast.Import):
        yield from (alias.name for alias in tree.names)
    elif isinstance(tree, ast.ImportFrom):
        base = tree.module or ""
        if tree.level:
            up = package.split(".")[: len(package.split(".")) - tree.level + 1]
            base = ".".join([*up, base] if base else up)
        for alias in tree.names:
            yield f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
    for child in ast.iter_child_nodes(tree):
        yield from _imported(child, package, known)


def graph() -> dict[str, set[str]]:
    known = modules()
    edges = {}
    for name, path in known.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        own = path.name == "__init__.py"
        edges[name] = {
            m
            for m in _imported(ast.parse(path.read_text()), package, known)
            if m in known and m != name and not (own and m.startswith(name + "."))
        }
    return edges


def circle(edges: dict[str, set[str]]) -> list[str] | None:
    """A circle of imports as the standard library's topological sort finds one (its first
    module repeated last), or None."""
    try:
        graphlib.TopologicalSorter(edges).prepare()
    except graphlib.CycleError as error:
        return list(error.args[1])
    return None


def test_no_module_imports_its_way_back_to_itself() -> None:
    assert circle(graph()) is None


def test_the_check_finds_a_circle_where_there_is_one() -> None:
    edges = graph()
    assert "cutover.runtime" in edges["cutover.migration"]
    edges["cutover.runtime"] = {*edges["cutover.runtime"], "cutover.migration"}
    found = circle(edges)
    assert found is not None and {"cutover.migration", "cutover.runtime"} <= set(found), found


def test_type_checking_imports_and_lazy_imports_are_told_apart() -> None:
    edges = graph()
    # runtime names Migration for annotations only; the collector is handed the runtime
    assert "cutover.migration" not in edges["cutover.runtime"]
    assert "cutover.runtime" not in edges["cutover.telemetry.prometheus"]
    # a lazy import inside a function is an import all the same
    assert "cutover.telemetry.prometheus" in edges["cutover.runtime"]
