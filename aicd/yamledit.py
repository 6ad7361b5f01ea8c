"""Write paths into a target's YAML file: one syntax, one reader, one exact writer.

A write path names one value in a values file or a kustomization.yaml:

    image.tag                                 mapping keys, separated by dots
    images.0.newTag   images[0].newTag        a list item by position (from 0; `[-1]` is the last one)
    images[name=checkout-api].newTag          the one list item whose `name` is checkout-api (as
                                              `kustomize edit set image` finds images)
    podAnnotations["prometheus.io/scrape"]    a key with dots or other characters, quoted

`set_keys` edits the text of the scalars it writes and nothing else, so a one-value change is a one-line
diff: comments and their spacing, quoting, indentation, line endings and key order stay byte for byte. A key
the file does not have yet is added in the file's own indentation (intermediate mappings too: a fresh values
file gets `image:` / `  tag: ...`). Every result is parsed again and must equal the input with exactly the
written values changed; should the text edit ever miss that, a round trip through ruamel (indentation detected
from the file) is tried, and failing that nothing is written.

A write path never turns a list or a scalar into a mapping, never adds list items, never writes through an
alias or a merge key (that would change every user of the anchor) and never replaces a whole mapping or list.
Each of these is a ValueError naming the path and what the file holds there; activities/gitops.py turns it
into a failed step without a commit. `get_path` reads plain parsed data (dicts and lists) with the same syntax.
"""

from __future__ import annotations

import functools
import logging
import math
import re
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

log = logging.getLogger(__name__)

# ------------------------------------------------------------------------------------------ path syntax

_NAME = r"[A-Za-z0-9_-]+"
# [0] and [-1]; [name=checkout-api] and [name="a b"]; ["prometheus.io/scrape"]. No backslash before a quote:
# editors compile the schema's pattern as a JavaScript unicode regex, which refuses such escapes.
_BRACKET = r"""\[(?:-?[0-9]+|[A-Za-z0-9_-]+=(?:"[^"]*"|'[^']*'|[^\]\["'=\s]+)|"[^"]+"|'[^']+')\]"""
# The schema's pattern for write paths (schemas/delivery-spec.v1alpha1.json, $defs.writePath): kept equal to
# what parse_path accepts by tests/test_yamledit.py.
WRITE_PATH_PATTERN = rf"^(?:{_NAME}|{_BRACKET})(?:\.{_NAME}|{_BRACKET})*$"
WRITE_PATH_EXAMPLES = "image.tag, images[0].newTag, images[name=app].newTag"

_NAME_RE = re.compile(_NAME)
_INDEX_RE = re.compile(r"-?[0-9]+")
_BARE_VALUE_RE = re.compile(r"""[^\]\["'=\s]+""")


@dataclass(frozen=True)
class Key:
    """A mapping key; all digits (`images.0`), on a list it addresses the item at that position."""

    name: str
    text: str


@dataclass(frozen=True)
class Index:
    """A list item by position (`[0]`; negative counts from the end)."""

    position: int
    text: str


@dataclass(frozen=True)
class Select:
    """The one list item (a mapping) whose `field` is `value` (`[name=checkout-api]`)."""

    field: str
    value: str
    text: str


Step = Key | Index | Select


@dataclass(frozen=True)
class WritePath:
    text: str
    steps: tuple[Step, ...]

    def prefix(self, count: int) -> str:
        """The path's first `count` steps as written (for messages); "" is the top of the file."""
        parts = []
        for index, step in enumerate(self.steps[:count]):
            parts.append(f".{step.text}" if isinstance(step, Key) and index else step.text)
        return "".join(parts)

    def normalized(self) -> tuple[tuple[str, ...], ...]:
        """Steps compared by what they address: `images.0` and `images[0]` are the same place."""
        out: list[tuple[str, ...]] = []
        for step in self.steps:
            if isinstance(step, Key):
                out.append(("i", step.name) if step.name.isdigit() else ("k", step.name))
            elif isinstance(step, Index):
                out.append(("i", str(step.position)))
            else:
                out.append(("s", step.field, step.value))
        return tuple(out)


def _quoted(text: str, start: int) -> tuple[str, int]:
    """The quoted string at text[start] (no escapes: the other quote character goes inside) and its end."""
    quote = text[start]
    end = text.find(quote, start + 1)
    if end < 0:
        raise _PathSyntax(f"the quote {quote} at character {start + 1} is not closed")
    return text[start + 1 : end], end + 1


class _PathSyntax(ValueError):
    """What is wrong with a write path, and where (parse_path adds the path and examples)."""


@functools.lru_cache(maxsize=1024)  # the same few paths, for every step and every edge site file
def parse_path(text: str) -> WritePath:
    """The steps of a write path; ValueError says what is wrong and where."""
    if not isinstance(text, str):
        raise ValueError(f"write path {text!r} is not a string; write e.g. {WRITE_PATH_EXAMPLES}")
    if not text:
        raise ValueError(f"write path '' is empty; write e.g. {WRITE_PATH_EXAMPLES}")
    try:
        return WritePath(text, tuple(_steps(text)))
    except _PathSyntax as error:
        raise ValueError(f"write path {text!r}: {error}; write e.g. {WRITE_PATH_EXAMPLES}") from None


def _steps(text: str) -> Iterator[Step]:
    position = 0
    first = True
    while position < len(text):
        char = text[position]
        if char == "[":
            step, position = _bracket(text, position)
            yield step
        elif char == "." and not first:
            match = _NAME_RE.match(text, position + 1)
            if not match:
                raise _PathSyntax(f"a key must follow the dot at character {position + 1}")
            yield Key(match.group(), match.group())
            position = match.end()
        elif first and (match := _NAME_RE.match(text, position)):
            yield Key(match.group(), match.group())
            position = match.end()
        elif first:
            raise _PathSyntax(f"it must start with a key or a [...], not {char!r}")
        else:
            raise _PathSyntax(
                f"{char!r} at character {position + 1} is not allowed here"
                ' (keys are [A-Za-z0-9_-]; quote others as ["..."])'
            )
        first = False


def _bracket(text: str, start: int) -> tuple[Step, int]:
    close = _closing_bracket(text, start)
    inner = text[start + 1 : close]
    raw = text[start : close + 1]
    if not inner:
        raise _PathSyntax(f"empty [] at character {start + 1}")
    if _INDEX_RE.fullmatch(inner):
        return Index(int(inner), raw), close + 1
    if inner[0] in "\"'":
        name, end = _quoted(text, start + 1)
        if end != close or not name:
            raise _PathSyntax(f"[{inner}] at character {start + 1} is not one quoted key")
        return Key(name, raw), close + 1
    field, equals, value = inner.partition("=")
    if not equals:
        raise _PathSyntax(f"[{inner}] at character {start + 1} is neither an index nor field=value")
    if not _NAME_RE.fullmatch(field):
        raise _PathSyntax(f"the field {field!r} in [{inner}] must be [A-Za-z0-9_-]+")
    if value[:1] in ("'", '"'):
        value_start = start + 1 + len(field) + 1
        value, end = _quoted(text, value_start)
        if end != close:
            raise _PathSyntax(f"[{inner}] at character {start + 1}: text after the quoted value")
    elif not _BARE_VALUE_RE.fullmatch(value):
        raise _PathSyntax(
            f"the value {value!r} in [{inner}] needs quotes (it is empty or has spaces, = or quotes)"
        )
    return Select(field, value, raw), close + 1


def _closing_bracket(text: str, start: int) -> int:
    position = start + 1
    while position < len(text):
        char = text[position]
        if char in "\"'":
            _, position = _quoted(text, position)
            continue
        if char == "]":
            return position
        if char == "[":
            break
        position += 1
    raise _PathSyntax(f"the [ at character {start + 1} is not closed")


# ------------------------------------------------------------------------------- reading parsed data


def get_path(data: Any, path: str | WritePath) -> Any:
    """The value at `path` in parsed YAML (dicts and lists), or None where the file has nothing there."""
    parsed = path if isinstance(path, WritePath) else parse_path(path)
    node = data
    for step in parsed.steps:
        try:
            node = _data_child(node, step)
        except _NotThere:
            return None
    return node


def get_key(text: str, path: str | WritePath) -> Any:
    """The value at `path` in YAML text (None when absent)."""
    return get_path(yaml.load(text, Loader=_SafeLoader) if text.strip() else None, path)


class _NotThere(LookupError):
    pass


def _data_child(node: Any, step: Step) -> Any:
    if isinstance(node, Mapping):
        key = _data_key(node, step.name) if isinstance(step, Key) else _MISSING
        if key is _MISSING:
            raise _NotThere
        return node[key]
    if isinstance(node, list):
        return node[_data_position(node, step)]
    raise _NotThere


def _data_position(items: list[Any], step: Step) -> int:
    if isinstance(step, Key) and step.name.isdigit():
        step = Index(int(step.name), step.text)
    if isinstance(step, Index):
        if not -len(items) <= step.position < len(items):
            raise _NotThere
        return step.position % len(items)
    if isinstance(step, Select):
        found = [i for i, item in enumerate(items) if isinstance(item, Mapping) and _data_matches(item, step)]
        if len(found) == 1:
            return found[0]
    raise _NotThere


_MISSING = object()
_BOOL_WORDS = {True: {"true", "yes", "on", "y"}, False: {"false", "no", "off", "n"}}


def _data_key(mapping: Mapping[Any, Any], name: str) -> Any:
    """The key of `mapping` written as `name` in the file (YAML may have made it an int or a bool)."""
    if name in mapping:
        return name
    for key in mapping:
        if isinstance(key, bool):
            if name.lower() in _BOOL_WORDS[key]:
                return key
        elif isinstance(key, int | float) and str(key) == name:
            return key
    return _MISSING


def _data_matches(item: Mapping[Any, Any], step: Select) -> bool:
    key = _data_key(item, step.field)
    if key is _MISSING:
        return False
    value = item[key]
    return _scalar_text(value) == step.value if not isinstance(value, str) else value == step.value


def _scalar_text(value: Any) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return None


def set_path(data: Any, path: str | WritePath, value: Any) -> Any:
    """Set `path` in parsed data (dicts and lists), creating missing mapping keys; returns the root."""
    parsed = path if isinstance(path, WritePath) else parse_path(path)
    root = data if data is not None else {}
    node = root
    for index, step in enumerate(parsed.steps):
        last = index == len(parsed.steps) - 1
        slot: Any
        if isinstance(node, dict) and isinstance(step, Key):
            slot = _data_key(node, step.name)
            if slot is _MISSING:
                slot = step.name
                if not last:
                    node[slot] = {}
            elif not last and node[slot] is None:
                node[slot] = {}
        elif isinstance(node, list):
            try:
                slot = _data_position(node, step)
            except _NotThere:
                raise ValueError(
                    f"`{parsed.text}`: {parsed.prefix(index) or 'the file'} has no {step.text}"
                ) from None
        else:
            raise ValueError(f"`{parsed.text}`: {parsed.prefix(index) or 'the file'} cannot hold {step.text}")
        if last:
            node[slot] = value
        else:
            node = node[slot]
    return root


# ------------------------------------------------------------------------ undoing one writer's edits

Place = tuple[str | int, ...]  # a value's place in parsed data: mapping keys and list positions


def undo_keeping_others(before: str, edits: list[tuple[bool, str, str]]) -> str | None:
    """What a file would hold had one writer never written it: `before` (the file before its first write)
    with every later edit by others set on top, except at places the writer itself set (those were about
    its own release and go back with it). `edits`: (by the writer, content before, content after), oldest
    first. None when an edit by others did more than set scalars (removed a key, resized a list) or a kept
    value has no write path: the caller then decides what to restore. The writer's own edits may do more
    (a flag rollout adds a `targeting` rule): every place they changed, as a whole, goes back with it."""
    ours: set[Place] = set()
    theirs: dict[Place, Any] = {}
    for mine, old, new in edits:
        if mine:
            places = changed_places(old, new)
            if places is None:
                return None
            ours.update(places)
            continue
        changes = scalar_changes(old, new)
        if changes is None:
            return None
        theirs.update(changes)  # a later edit of a place wins
    kept: dict[str, Any] = {}
    for place, value in theirs.items():
        if _overlaps(place, ours):
            continue
        path = place_path(place)
        if path is None:
            return None
        kept[path] = value
    try:
        return set_keys(before, kept)
    except ValueError:
        return None


def clear_of_writer(edits: list[tuple[bool, str, str]]) -> bool:
    """Whether the edits by others after the writer's last edit (`edits` as for undo_keeping_others) set values
    none at, inside or around a place the writer changed (and every edit by others only set values):
    undoing the writer then takes nothing of theirs back (a human who scaled the app while a canary ran), so a
    rollback may go ahead and keep them. False when they touched the writer's places: whoever made them took
    the file over."""
    mine_at = [index for index, (mine, _old, _new) in enumerate(edits) if mine]
    if not mine_at:
        return False
    ours: set[Place] = set()
    for _mine, old, new in (edits[index] for index in mine_at):
        places = changed_places(old, new)
        if places is None:
            return False
        ours.update(places)
    for index, (mine, old, new) in enumerate(edits):
        if mine:
            continue
        changes = scalar_changes(
            old, new
        )  # an earlier one too: undo_keeping_others must carry every edit over
        if changes is None or (index > mine_at[-1] and any(_overlaps(place, ours) for place in changes)):
            return False
    return True


def _overlaps(place: Place, places: set[Place]) -> bool:
    """`place` is one of `places`, inside one, or holds one."""
    return any(place[: len(other)] == other or other[: len(place)] == place for other in places)


def scalar_changes(before: str, after: str) -> dict[Place, Any] | None:
    """The scalars an edit from `before` to `after` set (added keys included), by place; None when it did more
    than set scalars, or either side is not a YAML mapping."""
    try:
        old = yaml.load(before, Loader=_SafeLoader) if before.strip() else None
        new = yaml.load(after, Loader=_SafeLoader) if after.strip() else None
    except yaml.YAMLError:
        return None
    changes: dict[Place, Any] = {}
    if not isinstance(old, Mapping | None) or not isinstance(new, Mapping | None):
        return None
    return changes if _collect_changes(old or {}, new or {}, (), changes) else None


def changed_places(before: str, after: str) -> set[Place] | None:
    """Every place an edit from `before` to `after` changed: a scalar set, and where it did more (a key added
    with a mapping or list under it, a key removed, a list resized, a type changed) that place as a whole;
    None when either side is not a YAML mapping."""
    try:
        old = yaml.load(before, Loader=_SafeLoader) if before.strip() else None
        new = yaml.load(after, Loader=_SafeLoader) if after.strip() else None
    except yaml.YAMLError:
        return None
    if not isinstance(old, Mapping | None) or not isinstance(new, Mapping | None):
        return None
    places: set[Place] = set()
    _collect_places(old or {}, new or {}, (), places)
    return places


def _collect_places(old: Any, new: Any, place: Place, places: set[Place]) -> None:
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        for key in old:
            if key not in new:
                places.add((*place, key))
        for key, value in new.items():
            _collect_places(old.get(key, _MISSING), value, (*place, key), places)
    elif isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        for index, (a, b) in enumerate(zip(old, new, strict=True)):
            _collect_places(a, b, (*place, index), places)
    elif (old is _MISSING or old is None) and isinstance(new, Mapping) and new:
        # a new mapping: its keys one by one, as scalar_changes has them
        _collect_places({}, new, place, places)
    elif old is _MISSING or old != new or type(old) is not type(new):
        places.add(place)


def _collect_changes(old: Any, new: Any, place: Place, changes: dict[Place, Any]) -> bool:
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        if any(key not in new for key in old):
            return False
        return all(
            isinstance(key, str) and _collect_changes(old.get(key, _MISSING), value, (*place, key), changes)
            for key, value in new.items()
        )
    if isinstance(old, list) and isinstance(new, list):
        return len(old) == len(new) and all(
            _collect_changes(a, b, (*place, index), changes)
            for index, (a, b) in enumerate(zip(old, new, strict=True))
        )
    if (old is _MISSING or old is None) and isinstance(new, Mapping):
        # a new mapping of scalars: its keys are added one by one
        return bool(new) and _collect_changes({}, new, place, changes)
    if _is_scalar_value(new) and (old is _MISSING or _is_scalar_value(old)):
        if old is _MISSING or old != new or type(old) is not type(new):  # 1 == True, but not in the file
            changes[place] = new
        return True
    return False


def place_path(place: Place) -> str | None:
    """The write path of a place (None: a key no write path can name, e.g. one holding both quotes)."""
    parts: list[str] = []
    for step in place:
        if isinstance(step, int):
            parts.append(f"[{step}]")
        elif _NAME_RE.fullmatch(step) and not step.isdigit():
            parts.append(f".{step}" if parts else step)
        elif '"' not in step:
            parts.append(f'["{step}"]')
        elif "'" not in step:
            parts.append(f"['{step}']")
        else:
            return None
    return "".join(parts)


# ------------------------------------------------------------------------------------------ the writer

if hasattr(yaml, "CSafeLoader"):
    _SafeLoader: Any = yaml.CSafeLoader
else:  # pragma: no cover - PyYAML built without libyaml
    _SafeLoader = yaml.SafeLoader

_MERGE_TAG = "tag:yaml.org,2002:merge"
_PROPERTIES_RE = re.compile(r"(?:[&!][^\s]*[ \t]+)+")
_ALIAS_AFTER_KEY_RE = re.compile(r"[ \t]*:[ \t]*(\*[^\s,\[\]{}]+)")
_ALIAS_RE = re.compile(r"\*[^\s,\[\]{}]+")
# A string that YAML 1.1 (PyYAML, Helm's go-yaml) or 1.2 (ruamel, Kustomize's yaml.v3) reads as something
# else must be quoted.
_PLAIN_SAFE_RE = re.compile(r"[A-Za-z0-9_./+-][A-Za-z0-9_./:@+~=-]*")
_YAML12_NOT_STR_RE = re.compile(
    r"null|Null|NULL|~|true|True|TRUE|false|False|FALSE"
    r"|[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+"
    r"|[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?"
    r"|[-+]?\.(inf|Inf|INF)|\.nan|\.NaN|\.NAN"
)
_RESOLVER = yaml.resolver.Resolver()
_STR_TAG = "tag:yaml.org,2002:str"


def set_keys(text: str, values: Mapping[str, Any]) -> str:
    """`text` with the value at each write path in `values` set, everything else unchanged.

    ValueError (naming the path and what the file holds there) when a path does not fit the file, or when
    the file is not a single YAML mapping."""
    if not values:
        return text
    writes = [(parse_path(path), value) for path, value in values.items()]
    for path, value in writes:
        if not _is_scalar_value(value):
            raise ValueError(f"`{path.text}`: only single values are written, not a {type(value).__name__}")
    edited, original = _edit_text(text, writes)
    if edited == text:
        return text
    expected = original
    for path, value in writes:
        expected = set_path(expected, path, value)
    if _parses_to(edited, expected):
        return edited
    # The text edit should never miss; should it (a YAML corner no test met), the round trip is exact in data.
    log.warning("exact text edit of %s did not verify; falling back to a round trip", ", ".join(values))
    rewritten = _round_trip(text, writes)
    if _parses_to(rewritten, expected):
        return rewritten
    raise ValueError(f"cannot write {', '.join(values)} without changing other values of the file")


def _is_scalar_value(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def _parses_to(text: str, expected: Any) -> bool:
    try:
        actual = yaml.load(text, Loader=_SafeLoader) if text.strip() else None
    except yaml.YAMLError:
        return False
    return bool(actual == expected)


@dataclass
class _Found:
    """The scalar to replace: text[start:end] (after any anchor or tag, which stay)."""

    start: int
    end: int
    style: str
    flow: bool  # inside a flow collection ({...} or [...])


@dataclass
class _Missing:
    """Keys to add: under `mapping` (block or flow), or in place of the empty value `holder` of `key`, or
    at the end of an empty document (both None)."""

    keys: list[str]
    mapping: MappingNode | None = None
    holder: ScalarNode | None = None
    key: ScalarNode | None = None
    flow: bool = False  # the holder is inside a flow collection


def _compose(text: str) -> Node | None:
    """The node graph of `text` (one document whose top is a mapping, or nothing)."""
    loader = _SafeLoader(text)
    try:
        node = loader.get_single_node()
    except yaml.composer.ComposerError as error:
        if "single document" in str(error):
            raise ValueError("the file holds more than one YAML document; a values file holds one") from None
        raise ValueError(f"not valid YAML: {_yaml_problem(error)}") from None
    except yaml.YAMLError as error:
        raise ValueError(f"not valid YAML: {_yaml_problem(error)}") from None
    finally:
        loader.dispose()
    if node is not None and not isinstance(node, MappingNode) and not _is_null(node):
        kind = "a list" if isinstance(node, SequenceNode) else "a single value"
        raise ValueError(f"the file is not a YAML mapping (it holds {kind})")
    return node


def _construct(node: Node | None) -> Any:
    """The data of a node graph (this flattens merge keys inside the graph: construct last)."""
    return None if node is None else yaml.constructor.SafeConstructor().construct_document(node)


def _yaml_problem(error: yaml.YAMLError) -> str:
    if isinstance(error, yaml.MarkedYAMLError) and error.problem_mark is not None:
        mark = error.problem_mark
        return f"{error.problem} (line {mark.line + 1}, column {mark.column + 1})"
    return str(error).splitlines()[0]


def _edit_text(text: str, writes: list[tuple[WritePath, Any]]) -> tuple[str, Any]:
    """The text with every write applied as a span edit, and the data of the original text."""
    root = _compose(text)
    original: Any = _MISSING
    pending: dict[int, tuple[int, str]] = {}  # start -> (end, replacement), applied right to left
    current = text
    for path, value in writes:
        target = _resolve(root, path, current)
        if isinstance(target, _Found):
            rendered = _render(value, target.style, target.flow)
            if target.start == target.end and not current[target.start - 1 : target.start].isspace():
                rendered = " " + rendered  # `key:` with no value: the colon needs a space after it
            old_end = pending.get(target.start, (target.end, ""))[0]
            pending[target.start] = (max(old_end, target.end), rendered)
            continue
        # An insertion moves what follows it: apply the pending edits first and locate it in their result.
        if original is _MISSING:
            original = _construct(root)  # the last use of the original graph (constructing alters it)
        if pending:
            current, pending = _apply(current, pending), {}
            root = _compose(current)
            target = _resolve(root, path, current)
            assert isinstance(target, _Missing)  # the edits replaced values only
        current = _insert(current, root, target, value)
        root = _compose(current)
    if original is _MISSING:
        original = _construct(root)
    return _apply(current, pending), original


def _apply(text: str, edits: dict[int, tuple[int, str]]) -> str:
    for start in sorted(edits, reverse=True):
        end, replacement = edits[start]
        text = text[:start] + replacement + text[end:]
    return text


def _line(node: Node) -> int:
    return int(node.start_mark.line) + 1


def _describe(node: Node, line: int) -> str:
    """What the file holds at a place; `line` is where the place is written (its key's line)."""
    if isinstance(node, MappingNode):
        return f"a mapping (line {line})"
    if isinstance(node, SequenceNode):
        return f"a list of {len(node.value)} item(s) (line {line})"
    shown = node.value if len(node.value) <= 40 else node.value[:37] + "..."
    return f"the value {shown!r} (line {line})"


def _is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == "tag:yaml.org,2002:null"


def _resolve(root: Node | None, path: WritePath, text: str) -> _Found | _Missing:
    if root is None or _is_null(root):
        return _Missing(_keys_to_create(path, 0, "the file is empty"))
    node: Node = root
    line = 1  # where the current place is written: its key's line, or a list item's own
    flow = False
    alias_span: tuple[int, int] | None = None
    for index, step in enumerate(path.steps):
        where = f"`{path.prefix(index)}`" if index else "the top level"
        last = index == len(path.steps) - 1
        flow = flow or bool(getattr(node, "flow_style", False))
        if isinstance(node, MappingNode):
            if not isinstance(step, Key):
                raise ValueError(
                    f"`{path.text}`: {where} is {_describe(node, line)}, not a list; {step.text} addresses a list item"
                )
            key, child = _lookup(node, step.name, path, index)
            if key is None or child is None:
                return _Missing(
                    _keys_to_create(path, index, f"{where} has no key {step.name!r}"), mapping=node
                )
            if child.start_mark.index < key.end_mark.index:  # an alias: its anchor comes earlier
                if not last or not isinstance(child, ScalarNode):
                    raise ValueError(
                        f"`{path.text}`: `{path.prefix(index + 1)}` (line {_line(key)}) is an alias of the anchor at"
                        f" line {_line(child)}; writing through it would change every place that uses the anchor."
                        " Write the anchor's own path, or give this key its own value"
                    )
                alias_span = _alias_after_key(text, key, path)
            elif not last and isinstance(child, ScalarNode) and _is_null(child):
                # `canary:` with nothing (or ~ / null) below it: the missing keys go there.
                context = f"`{path.prefix(index + 1)}` is empty"
                keys = _keys_to_create(path, index + 1, context)
                return _Missing(keys, holder=child, key=key, flow=flow or bool(node.flow_style))
            node, line = child, _line(key)
        elif isinstance(node, SequenceNode):
            node = _item(node, step, path, index, where, line)
            line = _line(node)
        else:
            raise ValueError(
                f"`{path.text}`: {where} is {_describe(node, line)}, not a"
                f" {'mapping' if isinstance(step, Key) and not step.name.isdigit() else 'list'};"
                " a write never replaces a value with a mapping or a list"
            )
    if not isinstance(node, ScalarNode):
        if isinstance(node, MappingNode):
            inside = f"{path.text}.{node.value[0][0].value}" if node.value else f"{path.text}.tag"
        else:
            inside = f"{path.text}[0]"
        raise ValueError(
            f"`{path.text}` is {_describe(node, line)}; a write path must end at a single value (e.g. `{inside}`)"
        )
    if alias_span is not None:
        return _Found(alias_span[0], alias_span[1], "", flow)
    return _found_scalar(root, node, path, text, flow)


def _found_scalar(root: Node, node: ScalarNode, path: WritePath, text: str, flow: bool) -> _Found:
    start, end = node.start_mark.index, node.end_mark.index
    properties = _PROPERTIES_RE.match(text, start, end)
    if properties:
        if "&" in properties.group() and _uses(root, node) > 1:
            raise ValueError(
                f"`{path.text}` (line {_line(node)}) is an anchor also used elsewhere through an alias; writing it"
                " would change those places too. Give each place its own value, or write one that is not shared"
            )
        start = properties.end()
    if node.style in ("|", ">"):
        # A block scalar's span runs over the blank lines after it: they stay.
        end = start + len(text[start:end].rstrip(" \t\r\n"))
    return _Found(start, end, node.style or "", flow)


def _uses(root: Node, target: Node) -> int:
    """How often `target` appears in the graph (more than once: it is aliased)."""
    count = 0
    seen: set[int] = set()
    stack: list[Node] = [root]
    while stack:
        node = stack.pop()
        if node is target:
            count += 1
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, MappingNode):
            for key, value in node.value:
                stack.extend((key, value))
        elif isinstance(node, SequenceNode):
            stack.extend(node.value)
    return count


def _alias_after_key(text: str, key: ScalarNode, path: WritePath) -> tuple[int, int]:
    match = _ALIAS_AFTER_KEY_RE.match(text, key.end_mark.index)
    if not match:
        raise ValueError(
            f"`{path.text}` (line {_line(key)}) is an alias this writer cannot locate in the text"
        )
    return match.start(1), match.end(1)


def _lookup(
    mapping: MappingNode, name: str, path: WritePath, index: int
) -> tuple[ScalarNode | None, Node | None]:
    found = [
        (key, value) for key, value in mapping.value if isinstance(key, ScalarNode) and key.value == name
    ]
    if len(found) > 1:
        lines = ", ".join(str(_line(key)) for key, _ in found)
        raise ValueError(
            f"`{path.text}`: the key {name!r} appears {len(found)} times (lines {lines}); YAML keys are unique"
        )
    if found:
        return found[0]
    for key, value in mapping.value:
        if key.tag == _MERGE_TAG and _merged_has(value, name):
            where = f"`{path.prefix(index)}`" if index else "the top level"
            raise ValueError(
                f"`{path.text}`: {where} takes {name!r} from the merge key `<<` (line {_line(key)}); writing it would"
                f" change the merged anchor for every user. Give {where} its own {name!r}, or write the anchor's path"
            )
    return None, None


def _merged_has(node: Node, name: str) -> bool:
    sources = node.value if isinstance(node, SequenceNode) else [node]
    for source in sources:
        if isinstance(source, MappingNode):
            for key, value in source.value:
                if isinstance(key, ScalarNode) and key.value == name:
                    return True
                if key.tag == _MERGE_TAG and _merged_has(value, name):
                    return True
    return False


def _item(sequence: SequenceNode, step: Step, path: WritePath, index: int, where: str, line: int) -> Node:
    items = sequence.value
    if isinstance(step, Key) and step.name.isdigit():
        step = Index(int(step.name), step.text)
    if isinstance(step, Key):
        raise ValueError(
            f"`{path.text}`: {where} is {_describe(sequence, line)}, not a mapping; address an item by position"
            f" (`{path.prefix(index)}[0]`) or by a field (`{path.prefix(index)}[name=...]`)"
        )
    if isinstance(step, Index):
        if not -len(items) <= step.position < len(items):
            raise ValueError(
                f"`{path.text}`: {where} is {_describe(sequence, line)}, it has no item {step.position};"
                " a write never adds list items"
            )
        position = step.position % len(items)
    else:
        position = _select(sequence, step, path, where, line)
    item = items[position]
    if _is_alias_item(sequence, position):
        raise ValueError(
            f"`{path.text}`: `{path.prefix(index + 1)}` is an alias of the anchor at line {_line(item)};"
            " a write changes one place only. Give the item its own value in the file"
        )
    return item


def _select(sequence: SequenceNode, step: Select, path: WritePath, where: str, line: int) -> int:
    def field_of(item: Node) -> ScalarNode | None:
        if isinstance(item, MappingNode):
            for key, value in item.value:
                if isinstance(key, ScalarNode) and key.value == step.field and isinstance(value, ScalarNode):
                    return value
        return None

    fields = [field_of(item) for item in sequence.value]
    matches = [i for i, value in enumerate(fields) if value is not None and value.value == step.value]
    if not matches:
        have = [value.value for value in fields if value is not None]
        listed = (
            f"the items have {step.field}: {', '.join(have)}" if have else f"no item has a {step.field!r}"
        )
        raise ValueError(
            f"`{path.text}`: no item of {where} (line {line}) has {step.field}={step.value} ({listed});"
            " a write never adds list items: add the item to the file first"
        )
    if len(matches) > 1:
        lines = ", ".join(str(_line(sequence.value[i])) for i in matches)
        raise ValueError(
            f"`{path.text}`: {len(matches)} items of {where} have {step.field}={step.value} (lines {lines});"
            " the selector must pick one"
        )
    return matches[0]


def _is_alias_item(sequence: SequenceNode, position: int) -> bool:
    item = sequence.value[position]
    return item.start_mark.index < sequence.start_mark.index or any(
        other is item for other in sequence.value[:position]
    )


def _keys_to_create(path: WritePath, start: int, context: str) -> list[str]:
    keys = []
    for index in range(start, len(path.steps)):
        step = path.steps[index]
        if not isinstance(step, Key) or step.name.isdigit():
            raise ValueError(
                f"`{path.text}`: {context}, and {step.text} addresses a list item that is not there;"
                " a write creates missing mapping keys but never lists or list items"
            )
        keys.append(step.name)
    return keys


# ------------------------------------------------------------------------------------ rendering values


def _render(value: Any, style: str = "", flow: bool = False) -> str:
    """`value` as a YAML scalar on one line, keeping the old quoting where it still applies."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return ".nan"
        if math.isinf(value):
            return ".inf" if value > 0 else "-.inf"
        return repr(value)
    text = str(value)
    if style == '"' or not text.isprintable():
        return _double_quoted(text)
    if style == "'" or not _plain_ok(text, flow):
        return "'" + text.replace("'", "''") + "'"
    return text


_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r", "\0": "\\0"}


def _double_quoted(text: str) -> str:
    """A double-quoted scalar on one line: every character that is not printable (line breaks, NEL, U+2028,
    controls, non-breaking spaces) escaped, as both YAML 1.1 and 1.2 read escapes."""
    out = []
    for char in text:
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif char.isprintable():
            out.append(char)
        elif ord(char) <= 0xFF:
            out.append(f"\\x{ord(char):02x}")
        elif ord(char) <= 0xFFFF:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(f"\\U{ord(char):08x}")
    return '"' + "".join(out) + '"'


def _plain_ok(text: str, flow: bool = False) -> bool:
    """`text` can go unquoted and every YAML reader (1.1 and 1.2) reads it back as this string."""
    if not _PLAIN_SAFE_RE.fullmatch(text) or text.endswith(":") or (flow and ":" in text):
        return False
    if text == "-":  # a lone `-` is a block sequence entry, not a scalar
        return False
    if _YAML12_NOT_STR_RE.fullmatch(text):
        return False
    return bool(_RESOLVER.resolve(ScalarNode, text, (True, False)) == _STR_TAG)


# ---------------------------------------------------------------------------------------- insertions


def _newline(text: str) -> str:
    first = text.find("\n")
    return "\r\n" if first > 0 and text[first - 1] == "\r" else "\n"


def _insert(text: str, root: Node | None, target: _Missing, value: Any) -> str:
    newline = _newline(text)
    if target.mapping is not None and target.mapping.flow_style:
        return _insert_flow(text, target.mapping, target.keys, _render(value, flow=True))
    rendered = _render(value)
    if target.mapping is not None:
        mapping = target.mapping
        indent = int(mapping.value[0][0].start_mark.column)
        last_key, last_value = mapping.value[-1]
        at = _line_after(text, _node_end(text, last_key.end_mark.index, last_value))
        return _insert_lines(
            text, at, _block(target.keys, rendered, indent, _indent_step(root), newline), newline
        )
    if target.holder is not None and target.key is not None:
        holder, key = target.holder, target.key
        start, end = holder.start_mark.index, holder.end_mark.index
        if start == end and not target.flow:  # `canary:` and nothing: the keys go below it, indented
            step = _indent_step(root)
            at = _line_after(text, start)
            lines = _block(target.keys, rendered, int(key.start_mark.column) + step, step, newline)
            return _insert_lines(text, at, lines, newline)
        # `canary: ~`, or an empty value inside {...}: a flow mapping in its place.
        replacement = _flow(target.keys, _render(value, flow=True))
        if start == end and not text[start - 1 : start].isspace():
            replacement = " " + replacement
        return text[:start] + replacement + text[end:]
    # An empty document (nothing, comments, or a bare `---`).
    lines = _block(target.keys, rendered, 0, 2, newline)
    if not text or text.endswith("\n"):
        return text + lines + newline
    return text + newline + lines


def _insert_lines(text: str, at: int, lines: str, newline: str) -> str:
    if at == len(text) and not text.endswith("\n"):
        return text + newline + lines  # a file without a final newline stays so
    return text[:at] + lines + newline + text[at:]


def _block(keys: list[str], rendered: str, indent: int, step: int, newline: str) -> str:
    lines = []
    for depth, key in enumerate(keys):
        prefix = " " * (indent + depth * step) + _render(key) + ":"
        lines.append(prefix + (f" {rendered}" if depth == len(keys) - 1 else ""))
    return newline.join(lines)


def _flow(keys: list[str], rendered: str) -> str:
    text = rendered
    for key in reversed(keys):
        text = "{" + f"{_render(key, flow=True)}: {text}" + "}"
    return text


def _insert_flow(text: str, mapping: MappingNode, keys: list[str], rendered: str) -> str:
    close = mapping.end_mark.index - 1
    if text[close] != "}":
        raise ValueError(f"cannot find the end of the flow mapping at line {_line(mapping)}")
    entry = _flow(keys, rendered)[1:-1]
    if not mapping.value:
        return text[:close] + entry + text[close:]
    last_key, last_value = mapping.value[-1]
    last_end = _node_end(text, last_key.end_mark.index, last_value)
    between = text[last_end:close]
    if "," in between:  # a trailing comma already separates
        at = last_end + between.index(",") + 1
        return text[:at] + " " + entry + text[at:]
    return text[:last_end] + ", " + entry + text[last_end:]


def _node_end(text: str, after: int, node: Node) -> int:
    """Where the text of `node` ends, the file writing it at or after `after` (an alias there: `*name`)."""
    if node.start_mark.index < after:  # an alias: the anchored node is earlier in the file
        alias = _ALIAS_RE.search(text, after)
        return alias.end() if alias else after
    if isinstance(node, MappingNode) and not node.flow_style and node.value:
        key, value = node.value[-1]
        return _node_end(text, key.end_mark.index, value)
    if isinstance(node, SequenceNode) and not node.flow_style and node.value:
        if _is_alias_item(node, len(node.value) - 1):
            previous = (
                _node_end(text, node.start_mark.index, node.value[-2]) if len(node.value) > 1 else after
            )
            alias = _ALIAS_RE.search(text, previous)
            return alias.end() if alias else previous
        return _node_end(text, node.start_mark.index, node.value[-1])
    end = int(node.end_mark.index)
    if isinstance(node, ScalarNode) and node.style in ("|", ">"):
        # A block scalar's span runs to the start of the next line (or over blank lines): step back.
        end = node.start_mark.index + len(text[node.start_mark.index : end].rstrip(" \t\r\n"))
    return end


def _line_after(text: str, position: int) -> int:
    """Just past the line break of the line holding `position` (len(text) on a last line without one)."""
    found = text.find("\n", position)
    return len(text) if found < 0 else found + 1


def _indent_step(root: Node | None) -> int:
    """The file's own indentation step: the commonest offset between a key and its nested keys (2 without)."""
    steps: Counter[int] = Counter()
    for parent_key, child in _nested_block_mappings(root):
        offset = int(child.value[0][0].start_mark.column) - int(parent_key.start_mark.column)
        if offset > 0:
            steps[offset] += 1
    return steps.most_common(1)[0][0] if steps else 2


def _nested_block_mappings(root: Node | None) -> Iterator[tuple[Node, MappingNode]]:
    stack = [root] if root is not None else []
    seen: set[int] = set()
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, MappingNode):
            for key, value in node.value:
                nested = isinstance(value, MappingNode) and not value.flow_style and value.value
                if nested and value.start_mark.index > key.end_mark.index:  # not an alias
                    yield key, value
                stack.append(value)
        elif isinstance(node, SequenceNode):
            stack.extend(node.value)


# -------------------------------------------------------------------------------- round-trip fallback


def _round_trip(text: str, writes: list[tuple[WritePath, Any]]) -> str:
    """The writes through ruamel's round trip, in the file's own indentation (the fallback)."""
    import io

    from ruamel.yaml import YAML
    from ruamel.yaml.comments import CommentedMap

    root = _compose(text)
    mapping_step, sequence_indent, offset = _layout(root)
    rt = YAML(typ="rt")
    rt.preserve_quotes = True
    rt.width = 4096
    rt.indent(mapping=mapping_step, sequence=sequence_indent, offset=offset)
    document = rt.load(text) if text.strip() else None
    if document is None:
        document = CommentedMap()
    for path, value in writes:
        document = set_path(document, path, value)
    out = io.StringIO()
    rt.dump(document, out)
    result = out.getvalue()
    if _newline(text) == "\r\n":
        result = result.replace("\n", "\r\n")
    if text and not text.endswith("\n"):
        result = result.rstrip("\r\n")
    return result


def _layout(root: Node | None) -> tuple[int, int, int]:
    """(mapping step, sequence indent, dash offset) as ruamel's `indent()` takes them, read from the file."""
    offsets: Counter[tuple[int, int]] = Counter()
    stack = [root] if root is not None else []
    while stack:
        node = stack.pop()
        if isinstance(node, MappingNode):
            for key, value in node.value:
                if isinstance(value, SequenceNode) and not value.flow_style and value.value:
                    dash = int(value.start_mark.column) - int(key.start_mark.column)
                    content = int(value.value[0].start_mark.column) - int(key.start_mark.column)
                    offsets[(content, dash)] += 1
                stack.append(value)
        elif isinstance(node, SequenceNode):
            stack.extend(node.value)
    sequence_indent, offset = offsets.most_common(1)[0][0] if offsets else (2, 0)
    return _indent_step(root), max(sequence_indent, offset + 2), offset
