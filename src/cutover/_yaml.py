"""Reading the YAML (and JSON) files people write, plans and token files, strictly and safely.

Every file cutover reads as YAML goes through :func:`parse_yaml`: PyYAML's safe loader, with a
key given twice refused rather than silently overwritten, and with nesting, alias expansion and
size bounded, so a hostile or mistaken file is one sentence naming its line, never a crash.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from cutover.errors import InvalidInput

MAX_DEPTH = 32
"""Levels of nesting a file may have; a plan needs five, a tokens file three."""

MAX_NODES = 100_000
"""Values (keys included) a file may hold once its aliases are expanded: far more than any plan
or tokens file, far fewer than a "billion laughs" file that expands exponentially."""

_MERGE = "tag:yaml.org,2002:merge"


class _Refused(yaml.MarkedYAMLError):
    """A file that parses but that cutover will not read; ``fix`` says what to do instead."""

    def __init__(self, problem: str, fix: str, mark: Any) -> None:
        super().__init__(problem=problem, problem_mark=mark)
        self.fix = fix


class _Loader(yaml.SafeLoader):
    """The safe loader, measuring each node as it is composed and checking each mapping's keys
    before any merge (``<<``) adds to them."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._measured: dict[Node, tuple[int, int]] = {}  # node -> (values, levels), expanded
        self._checked: set[Node] = set()

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        event = self.peek_event()
        mark = event.start_mark
        if isinstance(event, AliasEvent):
            target = self.anchors.get(event.anchor)
            if target is not None and target not in self._measured:  # still being composed
                raise _Refused(
                    "an alias refers to the value that contains it",
                    "write the value out instead",
                    mark,
                )
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _Refused(
                    f"nested deeper than {MAX_DEPTH} levels",
                    "cutover's files need only a few, so flatten it",
                    mark,
                )
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        values, levels = self._measure(node)
        if self._depth + levels > MAX_DEPTH:  # an alias can place a deep value deeper still
            raise _Refused(
                f"an alias here nests deeper than {MAX_DEPTH} levels",
                "write the value out or flatten it",
                mark,
            )
        if values > MAX_NODES:
            raise _Refused(
                f"expands to more than {MAX_NODES:,} values",
                "write fewer values or use fewer aliases",
                mark,
            )
        return node

    def _measure(self, node: Node) -> tuple[int, int]:
        known = self._measured.get(node)
        if known is not None:
            return known  # an alias of a node composed before
        if isinstance(node, ScalarNode):
            children: list[Node] = []
        elif isinstance(node, SequenceNode):
            children = list(node.value)
        elif isinstance(node, MappingNode):
            children = [part for pair in node.value for part in pair]
        else:  # pragma: no cover - the composer makes only these three
            children = []
        values, levels = 1, 0
        for child in children:
            measured = self._measured[child]  # composed (and measured) before its parent
            values += measured[0]
            levels = max(levels, measured[1])
        self._measured[node] = (values, levels + 1)
        return values, levels + 1

    def flatten_mapping(self, node: MappingNode) -> None:
        # Only flattening rewrites a mapping's pairs (merged ones first, then its own), so the
        # first time a mapping comes here it still holds exactly the keys the file wrote.
        if node not in self._checked:
            self._checked.add(node)
            self._refuse_repeated_keys(node)
        super().flatten_mapping(node)

    def _refuse_repeated_keys(self, node: MappingNode) -> None:
        seen: dict[Any, Node] = {}
        for key_node, _ in node.value:
            if key_node.tag == _MERGE or not isinstance(key_node, ScalarNode):
                continue  # merges may repeat keys on purpose; odd keys fail in the constructor
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node)
            except TypeError:
                continue
            if first is not key_node:
                raise _Refused(
                    f"the key {key!r} is given twice (first on line {first.start_mark.line + 1})",
                    "keep one of them",
                    key_node.start_mark,
                )


class Marked(dict):  # type: ignore[type-arg]
    """A mapping read with ``marks=True``: ``lines`` maps each key to the line it is on."""

    lines: dict[Any, int]


class MarkedList(list):  # type: ignore[type-arg]
    """A sequence read with ``marks=True``: ``lines`` maps each index to its line."""

    lines: dict[int, int]


class _MarkingLoader(_Loader):
    """The same loader, keeping where each key and item was written (for messages that name
    the line of a value that is valid YAML but not what the file's schema wants)."""

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> Any:
        out = Marked(super().construct_mapping(node, deep=True))
        out.lines = {}
        for key_node, _ in node.value:
            if isinstance(key_node, ScalarNode):
                try:
                    out.lines[self.construct_object(key_node)] = key_node.start_mark.line + 1
                except TypeError:
                    continue
        return out

    def construct_sequence(self, node: SequenceNode, deep: bool = False) -> Any:
        out = MarkedList(super().construct_sequence(node, deep=True))
        out.lines = {index: item.start_mark.line + 1 for index, item in enumerate(node.value)}
        return out


_MarkingLoader.add_constructor("tag:yaml.org,2002:map", _MarkingLoader.construct_mapping)
_MarkingLoader.add_constructor("tag:yaml.org,2002:seq", _MarkingLoader.construct_sequence)


def parse_yaml(text: str, source: str, *, marks: bool = False) -> Any:
    """The one document in ``text`` (YAML, or JSON, which is YAML), read safely; InvalidInput
    names ``source``, the line and the fix when the text is not valid, repeats a key, nests too
    deep or expands too far. With ``marks``, mappings and sequences come as :class:`Marked` and
    :class:`MarkedList`, which say on which line each key and item was written."""
    loader = None
    try:
        loader = (_MarkingLoader if marks else _Loader)(text)  # refuses control characters
        return loader.get_single_data()
    except _Refused as error:
        raise InvalidInput(f"{source}:{_at(error)} {error.problem}; {error.fix}") from None
    except yaml.MarkedYAMLError as error:
        raise InvalidInput(
            f"{source}:{_at(error)} not valid YAML or JSON ({error.problem});"
            " check the indentation and quotes"
        ) from None
    except yaml.reader.ReaderError as error:
        line = text.count("\n", 0, error.position) + 1
        raise InvalidInput(
            f"{source}: line {line}: not valid YAML or JSON (character U+{error.character:04X} is"
            " not allowed); remove it"
        ) from None
    except yaml.YAMLError as error:
        problem = " ".join(str(error).split())
        raise InvalidInput(f"{source}: not valid YAML or JSON ({problem})") from None
    finally:
        if loader is not None:
            loader.dispose()


def _at(error: yaml.MarkedYAMLError) -> str:
    mark = error.problem_mark
    return f" line {mark.line + 1}, column {mark.column + 1}:" if mark else ""


Model = TypeVar("Model", bound=BaseModel)


def load_model(path: str | Path, model: type[Model], what: str, doc: str) -> Model:
    """The file at ``path`` (``what``, e.g. "the routes file") read as YAML and validated as
    ``model``; a mistake is one sentence naming the file, the line and the fix (``doc`` says
    where the file's fields are described)."""
    source = Path(path)
    try:
        text = source.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or "it is not UTF-8 text"
        raise InvalidInput(f"cannot read {what} {source}: {reason}") from None
    data = parse_yaml(text, str(source), marks=True)
    try:
        return model.model_validate(plain(data) or {})
    except ValidationError as error:
        raise InvalidInput(_problem(source, error, data, doc)) from None


def plain(data: Any) -> Any:
    """The parsed value without the line marks parse_yaml(marks=True) keeps."""
    if isinstance(data, Mapping):
        return {key: plain(value) for key, value in data.items()}
    if isinstance(data, list | tuple):
        return [plain(value) for value in data]
    return data


def _problem(source: Path, error: ValidationError, data: Any, doc: str) -> str:
    problem = error.errors()[0]
    location: Sequence[Any] = problem["loc"]
    field_path = ".".join(str(part) for part in location)
    line = _line_of(data, location)
    where = f"{source}, line {line}" if line else str(source)
    message = problem["msg"].removeprefix("Value error, ")
    if problem["type"] == "extra_forbidden":
        message = f"is not a known field (see {doc})"
    elif problem["type"] == "missing":
        message = "is required"
    return f"{where}: {field_path or 'the file'} {message}"


def _line_of(data: Any, location: Sequence[Any]) -> int | None:
    """The line parse_yaml marked for the deepest part of ``location`` it can find."""
    line = None
    node = data
    for part in location:
        marks = getattr(node, "lines", None)
        found = (isinstance(node, Mapping) and part in node) or (
            isinstance(node, list | tuple) and isinstance(part, int) and part < len(node)
        )
        if not found:
            break
        line = marks.get(part, line) if marks else line
        node = node[part]
    return line
