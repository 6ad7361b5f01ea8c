"""Safe YAML reading that remembers where every node came from.

PyYAML's composer gives us a node tree with marks; we build plain Python values from it ourselves so that:
aliases cannot expand into a bomb (a node budget), tags beyond YAML's core schema are refused, duplicate keys
are an error rather than silently overwritten, and every value's `line:col` is known by its JSON path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import yaml

MAX_FILE_BYTES = 1024 * 1024
MAX_NODES = 100_000
MAX_DEPTH = 64

_CORE_TAGS = {
    "tag:yaml.org,2002:map",
    "tag:yaml.org,2002:seq",
    "tag:yaml.org,2002:str",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:null",
}

_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"
# Which kind of node each tag fits: a mapping, a sequence, or (anything else) a scalar.
_SCALAR = "scalar"
_NODE_TAG: dict[object, str] = {
    yaml.MappingNode: "mapping",
    yaml.SequenceNode: "sequence",
    "tag:yaml.org,2002:map": "mapping",
    "tag:yaml.org,2002:seq": "sequence",
}

Path = tuple[str | int, ...]


@dataclass(frozen=True)
class Mark:
    line: int  # 1-based
    col: int  # 1-based


class YamlReadError(Exception):
    def __init__(self, message: str, mark: Mark, path: Path = ()) -> None:
        super().__init__(message)
        self.message = message
        self.mark = mark
        self.path = path


def _mark(node: yaml.Node) -> Mark:
    return Mark(node.start_mark.line + 1, node.start_mark.column + 1)


class _Builder:
    def __init__(self) -> None:
        self.marks: dict[Path, Mark] = {}
        self.key_marks: dict[Path, Mark] = {}
        self.nodes = 0
        self._scalar_loader = yaml.SafeLoader("")

    def build(self, node: yaml.Node, path: Path, depth: int) -> Any:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise YamlReadError(
                f"document expands to more than {MAX_NODES} nodes (alias bomb?)", _mark(node), path
            )
        if depth > MAX_DEPTH:
            raise YamlReadError(f"nesting deeper than {MAX_DEPTH} levels", _mark(node), path)
        if node.tag not in _CORE_TAGS and node.tag != _TIMESTAMP_TAG:
            raise YamlReadError(f"unsupported YAML tag {node.tag!r}", _mark(node), path)
        if _NODE_TAG.get(type(node), _SCALAR) != _NODE_TAG.get(node.tag, _SCALAR):
            # `!!map x`, `!!str [1]`: an explicit tag on the wrong kind of node.
            raise YamlReadError(
                f"YAML tag {node.tag!r} does not fit a {_NODE_TAG.get(type(node), _SCALAR)}",
                _mark(node),
                path,
            )
        self.marks.setdefault(path, _mark(node))
        if isinstance(node, yaml.MappingNode):
            result: dict[str, Any] = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                    raise YamlReadError("mapping keys must be plain scalars", _mark(key_node), path)
                key = str(key_node.value)
                if key in result:
                    raise YamlReadError(f"duplicate key {key!r}", _mark(key_node), (*path, key))
                self.key_marks[(*path, key)] = _mark(key_node)
                result[key] = self.build(value_node, (*path, key), depth + 1)
            return result
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*path, index), depth + 1) for index, item in enumerate(node.value)]
        assert isinstance(node, yaml.ScalarNode)
        if len(node.value) > 64 * 1024:
            raise YamlReadError("scalar longer than 64 KiB", _mark(node), path)
        if node.tag == _TIMESTAMP_TAG:
            # A date-looking value is just text to a delivery spec.
            return str(node.value)
        try:
            value = self._scalar_loader.construct_object(node, deep=False)
        except (ValueError, KeyError, TypeError, OverflowError):
            # An explicit tag on a value it cannot hold: `!!int abc`, `!!bool maybe`.
            raise YamlReadError(
                f"{node.value[:40]!r} is not a valid {node.tag.rsplit(':', 1)[-1]}", _mark(node), path
            ) from None
        if isinstance(value, float) and not math.isfinite(value):
            # JSON Schema's bounds do not reject NaN, and nothing in a spec means infinity.
            raise YamlReadError(f"{node.value!r} is not a finite number", _mark(node), path)
        return value


@dataclass(frozen=True)
class YamlDocument:
    data: Any
    marks: dict[Path, Mark]
    key_marks: dict[Path, Mark]

    def mark_for(self, path: Path) -> Mark:
        """The closest known position of `path`: the node itself, else its nearest ancestor."""
        probe = tuple(path)
        while probe:
            if probe in self.marks:
                return self.marks[probe]
            probe = probe[:-1]
        return self.marks.get((), Mark(1, 1))


def read_yaml(raw: bytes) -> YamlDocument:
    """The one YAML document of a spec file (a second document is an error)."""
    return _read(raw, multiple=False)[0]


def read_yaml_documents(raw: bytes) -> list[YamlDocument]:
    """Every document of a multi-document file (Kubernetes manifests), each with its own marks."""
    return _read(raw, multiple=True)


def _read(raw: bytes, *, multiple: bool) -> list[YamlDocument]:
    if len(raw) > MAX_FILE_BYTES:
        raise YamlReadError(f"file is {len(raw)} bytes; the limit is {MAX_FILE_BYTES} bytes", Mark(1, 1))
    if b"\x00" in raw:
        raise YamlReadError("binary content (NUL byte); a delivery spec is UTF-8 YAML", Mark(1, 1))
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise YamlReadError(f"not UTF-8 text: {error.reason} at byte {error.start}", Mark(line, 1)) from None
    try:
        documents = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = Mark(mark.line + 1, mark.column + 1) if mark else Mark(1, 1)
        raise YamlReadError(f"invalid YAML: {error.problem or error.context}", where) from None
    except yaml.reader.ReaderError as error:
        # Control characters PyYAML refuses; its message spans lines, so say it in one.
        before = text[: error.position]
        where = Mark(before.count("\n") + 1, error.position - (before.rfind("\n") + 1) + 1)
        raise YamlReadError(f"invalid YAML: unacceptable character #x{error.character:04x}", where) from None
    except yaml.YAMLError as error:
        raise YamlReadError(f"invalid YAML: {' '.join(str(error).split())}", Mark(1, 1)) from None
    except RecursionError:
        raise YamlReadError(f"nesting deeper than {MAX_DEPTH} levels", Mark(1, 1)) from None
    documents = [document for document in documents if document is not None]
    if not documents:
        raise YamlReadError("empty document" + ("" if multiple else "; expected a DeliverySpec"), Mark(1, 1))
    if len(documents) > 1 and not multiple:
        raise YamlReadError("more than one YAML document; one spec per file", _mark(documents[1]))
    built = []
    nodes = 0
    for node in documents:
        builder = _Builder()
        builder.nodes = nodes  # the node budget holds for the whole file
        try:
            data = builder.build(node, (), 0)
        except yaml.constructor.ConstructorError as error:
            mark = error.problem_mark
            where = Mark(mark.line + 1, mark.column + 1) if mark else Mark(1, 1)
            raise YamlReadError(f"invalid value: {error.problem}", where) from None
        except RecursionError:
            raise YamlReadError(f"nesting deeper than {MAX_DEPTH} levels", Mark(1, 1)) from None
        nodes = builder.nodes
        built.append(YamlDocument(data, builder.marks, builder.key_marks))
    return built
