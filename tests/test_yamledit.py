"""Write paths into values files (aicd.yamledit): every scalar of a corpus of real-world-style values files
written one at a time gives a one-line diff and exactly that change in the parsed data; list items by index
and by key; each structural mismatch a clear ValueError; the path syntax the same in the schema, the parser
and the readers."""

from __future__ import annotations

import difflib
import io
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

import aicd.yamledit as yamledit
from aicd.dev.reconciler import LocalTarget, ValueKeys, parse_values
from aicd.plan import WritePlan, build_plan, render_tree
from aicd.spec.loader import parse_spec_bytes, schema
from aicd.yamledit import (
    WRITE_PATH_PATTERN,
    Index,
    Key,
    Select,
    clear_of_writer,
    get_key,
    get_path,
    parse_path,
    place_path,
    scalar_changes,
    set_keys,
    set_path,
    undo_keeping_others,
)
from tests.helpers_spec import DATA, MINIMAL

VALUES = DATA / "values"
CORPUS = sorted(VALUES.glob("*.yaml"))


def variants(text: str) -> dict[str, str]:
    """The file as written, with CRLF line endings, and without its final newline."""
    lf = text.replace("\r\n", "\n")
    return {"as-is": text, "crlf": lf.replace("\n", "\r\n"), "no-final-newline": text.rstrip("\r\n")}


def changed_lines(before: str, after: str) -> tuple[list[str], list[str]]:
    """(removed, added) lines of a line diff, line endings included."""
    diff = list(difflib.unified_diff(before.splitlines(True), after.splitlines(True), n=0))
    removed = [line[1:] for line in diff if line.startswith("-") and not line.startswith("---")]
    added = [line[1:] for line in diff if line.startswith("+") and not line.startswith("+++")]
    return removed, added


def ruamel_load(text: str) -> Any:
    """The document as a YAML 1.2 reader (ruamel, Kustomize's yaml.v3) reads it."""
    return YAML(typ="safe", pure=True).load(io.StringIO(text))


# --- the corpus: every scalar, one at a time ---------------------------------------------------------------


@dataclass
class Leaf:
    path: str  # a write path to it
    where: list[
        Any
    ]  # the same place as keys and list positions, to set it independently of the code under test
    value: Any  # its value now
    node: ScalarNode | None  # None: the value is an alias (`*name`)
    shared: bool  # an anchored value that aliases elsewhere also use


NAME = re.compile(r"[A-Za-z0-9_-]+")


def _key_step(name: str, first: bool) -> str:
    if NAME.fullmatch(name):
        return name if first else f".{name}"
    return f'["{name}"]'


def _uses(root: Node) -> dict[int, int]:
    counts: dict[int, int] = {}

    def walk(node: Node) -> None:
        counts[id(node)] = counts.get(id(node), 0) + 1
        if counts[id(node)] > 1:
            return
        if isinstance(node, MappingNode):
            for key, value in node.value:
                walk(key)
                walk(value)
        elif isinstance(node, SequenceNode):
            for item in node.value:
                walk(item)

    walk(root)
    return counts


def leaves(text: str) -> Iterator[Leaf]:
    """Every scalar a write path can name without going through an alias or a merge key."""
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    data = yaml.safe_load(text)
    uses = _uses(root)

    def walk(node: Node, path: str, where: list[Any], value: Any, alias: bool) -> Iterator[Leaf]:
        if isinstance(node, ScalarNode):
            yield Leaf(path, where, value, None if alias else node, not alias and uses[id(node)] > 1)
            return
        if alias:
            return  # writing through an alias is refused (tested below)
        if isinstance(node, MappingNode):
            for key, child in node.value:
                if key.tag == "tag:yaml.org,2002:merge" or not isinstance(key, ScalarNode):
                    continue
                child_alias = child.start_mark.index < key.end_mark.index
                step = _key_step(key.value, not path)
                yield from walk(child, path + step, [*where, key.value], value[key.value], child_alias)
        elif isinstance(node, SequenceNode):
            names = [_name_of(item) for item in node.value]
            for position, item in enumerate(node.value):
                name = names[position]
                if name is not None and names.count(name) == 1:
                    step = f"[name={name}]"
                else:
                    step = f".{position}" if position % 2 else f"[{position}]"  # both index forms
                item_alias = item.start_mark.index < node.start_mark.index or any(
                    other is item for other in node.value[:position]
                )
                yield from walk(item, path + step, [*where, position], value[position], item_alias)

    yield from walk(root, "", [], data, False)


def _name_of(item: Node) -> str | None:
    if isinstance(item, MappingNode):
        for key, value in item.value:
            if isinstance(key, ScalarNode) and key.value == "name" and isinstance(value, ScalarNode):
                return str(value.value) if NAME.fullmatch(value.value) else None
    return None


def new_value(old: Any, index: int) -> Any:
    if isinstance(old, bool):
        return not old
    if isinstance(old, int):
        return old + 7
    if isinstance(old, float):
        return old + 0.5
    # Alternately a tag that reads as a string unquoted and one that must be quoted (a number-like short SHA).
    return f"v9.{index}.0-corpus" if index % 2 else f"{1234567 + index}"


def assign(document: Any, where: list[Any], value: Any) -> Any:
    node = document
    for step in where[:-1]:
        node = node[step]
    node[where[-1]] = value
    return document


def dig(document: Any, where: list[Any]) -> Any:
    for step in where:
        document = document[step]
    return document


def corpus_cases() -> Iterator[Any]:
    for file in CORPUS:
        for variant in ("as-is", "crlf", "no-final-newline"):
            yield pytest.param(file, variant, id=f"{file.stem}-{variant}")


@pytest.fixture
def exact(monkeypatch: pytest.MonkeyPatch) -> None:
    """The text edit alone must do it: the round-trip fallback fails the test."""

    def no_round_trip(text: str, writes: Any) -> str:
        raise AssertionError(f"the text edit of {[path.text for path, _ in writes]} did not verify")

    monkeypatch.setattr(yamledit, "_round_trip", no_round_trip)


@pytest.mark.usefixtures("exact")
@pytest.mark.parametrize(("file", "variant"), list(corpus_cases()))
def test_every_scalar_of_the_corpus_is_a_one_line_diff(file: Path, variant: str) -> None:
    text = variants(file.read_bytes().decode("utf-8"))[variant]
    found = list(leaves(text))
    assert len(found) >= 4, f"{file.name}: the walker found too little"
    written = 0
    for index, leaf in enumerate(found):
        value = new_value(leaf.value, index)
        if leaf.shared:
            with pytest.raises(ValueError, match="anchor also used elsewhere"):
                set_keys(text, {leaf.path: value})
            continue
        result = set_keys(text, {leaf.path: value})
        written += 1
        expected = assign(yaml.safe_load(text), leaf.where, value)
        assert yaml.safe_load(result) == expected, leaf.path
        assert ruamel_load(result) == assign(ruamel_load(text), leaf.where, value), leaf.path  # YAML 1.2 too
        removed, added = changed_lines(text, result)
        assert len(added) == 1, (leaf.path, removed, added)
        if leaf.node is None or leaf.node.start_mark.line == leaf.node.end_mark.line:
            assert len(removed) == 1, (leaf.path, removed, added)
            before, after = removed[0], added[0]
            if leaf.node is not None:
                # Everything left of the value and right of it (comment, its spacing, line end) is kept.
                start, end = leaf.node.start_mark.column, leaf.node.end_mark.column
                assert after.startswith(before[:start]) and after.endswith(before[end:]), (before, after)
        else:  # a multi-line scalar (block or wrapped) becomes one line
            lines = text.splitlines(True)
            first, last = leaf.node.start_mark.line, leaf.node.end_mark.line
            assert all(line in lines[first : last + 1] for line in removed), (leaf.path, removed)
        assert ("\r\n" in result) == ("\r\n" in text) and result.endswith("\n") == text.endswith("\n")
    assert written >= 4


@pytest.mark.usefixtures("exact")
@pytest.mark.parametrize("file", CORPUS, ids=lambda path: path.stem)
def test_both_yaml_versions_read_the_written_values_back(file: Path) -> None:
    # Values that need quoting (a number-like SHA, a version, yes/no) stay strings for YAML 1.1 and 1.2 readers.
    text = file.read_text(encoding="utf-8")
    for index, leaf in enumerate(leaves(text)):
        if leaf.shared or not isinstance(leaf.value, str):
            continue
        for value in (f"{1234567 + index}", "1.10", "yes", "on", "null", "1e5", "0o17", "a: b", "# x"):
            result = set_keys(text, {leaf.path: value})
            assert dig(yaml.safe_load(result), leaf.where) == value, (leaf.path, value)
            assert dig(ruamel_load(result), leaf.where) == value, (leaf.path, value)


@pytest.mark.usefixtures("exact")
def test_helm_values_step_and_promote_writes(tmp_path: Path) -> None:
    text = (VALUES / "helm-web-2space.yaml").read_text()
    step = set_keys(text, {"canary.tag": "9a8b7c6", "canary.weight": 10})
    assert changed_lines(text, step) == (
        ['  tag: "4f2c1d9"\n', "  weight: 0   # percent of requests, set by aicd\n"],
        ['  tag: "9a8b7c6"\n', "  weight: 10   # percent of requests, set by aicd\n"],
    )
    promote = set_keys(step, {"image.tag": "9a8b7c6", "canary.weight": 0, "canary.tag": "9a8b7c6"})
    assert changed_lines(step, promote) == (
        ['  tag: "4f2c1d9"\n', "  weight: 10   # percent of requests, set by aicd\n"],
        ['  tag: "9a8b7c6"\n', "  weight: 0   # percent of requests, set by aicd\n"],
    )
    assert set_keys(promote, {"image.tag": "9a8b7c6", "canary.weight": 0}) == promote  # nothing to change


# --- list items by index and by key ------------------------------------------------------------------------

KUSTOMIZATION = (VALUES / "kustomization.yaml").read_text()


@pytest.mark.usefixtures("exact")
@pytest.mark.parametrize(
    ("path", "before", "after"),
    [
        ("images.0.newTag", "    newTag: 4f2c1d9\n", "    newTag: 9a8b7c6\n"),
        ("images[0].newTag", "    newTag: 4f2c1d9\n", "    newTag: 9a8b7c6\n"),
        ("images[name=checkout-api].newTag", "    newTag: 4f2c1d9\n", "    newTag: 9a8b7c6\n"),
        ('images[name="checkout-api"].newTag', "    newTag: 4f2c1d9\n", "    newTag: 9a8b7c6\n"),
        ("images[name=envoy].newTag", "    newTag: v1.31.2\n", "    newTag: 9a8b7c6\n"),
        ("images[-2].newTag", "    newTag: v1.31.2\n", "    newTag: 9a8b7c6\n"),
        ("configMapGenerator[0].literals[1]", "      - REGION=us-east-1\n", "      - 9a8b7c6\n"),
    ],
)
def test_list_items_by_index_and_by_key(path: str, before: str, after: str) -> None:
    result = set_keys(KUSTOMIZATION, {path: "9a8b7c6"})
    assert changed_lines(KUSTOMIZATION, result) == ([before], [after])
    assert get_key(result, path) == "9a8b7c6"
    images = yaml.safe_load(result)["images"]
    assert isinstance(images, list) and len(images) == 3  # the list stays a list


@pytest.mark.usefixtures("exact")
def test_a_selector_compares_the_fields_text() -> None:
    # `count: 4` is selected by [count=4] in the writer and in the readers alike.
    result = set_keys(KUSTOMIZATION, {"replicas[count=4].count": 6})
    assert changed_lines(KUSTOMIZATION, result) == (["    count: 4\n"], ["    count: 6\n"])
    assert get_path(yaml.safe_load(KUSTOMIZATION), "replicas[count=4].name") == "checkout-api"


@pytest.mark.usefixtures("exact")
def test_a_key_missing_in_a_selected_item_is_added_inside_it() -> None:
    result = set_keys(KUSTOMIZATION, {"images[name=envoy].newName": "mirror.example.com/envoy"})
    assert changed_lines(KUSTOMIZATION, result) == ([], ["    newName: mirror.example.com/envoy\n"])
    assert yaml.safe_load(result)["images"][1] == {
        "name": "envoy",
        "newTag": "v1.31.2",
        "newName": "mirror.example.com/envoy",
    }


def test_the_issue_19_write_no_longer_turns_the_list_into_a_mapping() -> None:
    # `write.image: images.0.newTag` used to commit `images: {'0': {newTag: ...}}`.
    result = set_keys(KUSTOMIZATION, {"images.0.newTag": "9a8b7c6"})
    assert yaml.safe_load(result)["images"][0]["newTag"] == "9a8b7c6"
    assert "'0'" not in result and len(changed_lines(KUSTOMIZATION, result)[1]) == 1


# --- structural mismatches: a clear ValueError ------------------------------------------------------------

ANCHORS = (VALUES / "anchors.yaml").read_text()
HELM = (VALUES / "helm-web-2space.yaml").read_text()


@pytest.mark.parametrize(
    ("text", "path", "fragments"),
    [
        (
            KUSTOMIZATION,
            "images.newTag",
            ["`images` is a list of 3 item(s) (line 16)", "images[0]", "images[name=...]"],
        ),
        (KUSTOMIZATION, "images.3.newTag", ["it has no item 3", "never adds list items"]),
        (
            KUSTOMIZATION,
            "images[name=checkout].newTag",
            [
                "no item of `images` (line 16) has name=checkout",
                "checkout-api, envoy, busybox",
                "add the item",
            ],
        ),
        (
            KUSTOMIZATION,
            "namespace.tag",
            ["`namespace` is the value 'checkout' (line 4), not a mapping", "never replaces a value"],
        ),
        (KUSTOMIZATION, "kind[0]", ["`kind` is the value 'Kustomization' (line 2), not a list"]),
        (KUSTOMIZATION, "resources[0].path", ["`resources[0]` is the value '../../base'"]),
        (
            KUSTOMIZATION,
            "images",
            ["`images` is a list of 3 item(s)", "must end at a single value", "images[0]"],
        ),
        (KUSTOMIZATION, "images[1]", ["`images[1]` is a mapping (line 20)", "images[1].name"]),
        (KUSTOMIZATION, "labels[0].pairs", ["a mapping"]),
        (HELM, "image[0]", ["`image` is a mapping (line 7), not a list", "[0] addresses a list item"]),
        (HELM, "image.tag.major", ["`image.tag` is the value '4f2c1d9' (line 11), not a mapping"]),
        (
            HELM,
            "fresh.0.tag",
            ["the top level has no key 'fresh'", "0 addresses a list item that is not there"],
        ),
        (HELM, "image[name=x]", ["`image` is a mapping"]),
        (
            ANCHORS,
            "useast1.image.tag",
            ["takes 'image' from the merge key `<<` (line 12)", "change the merged anchor"],
        ),
        (
            ANCHORS,
            "euwest1.resources.limits.cpu",
            ["`euwest1.resources` (line 20) is an alias of the anchor at line 6"],
        ),
        (ANCHORS, "sidecar.image.tag", ["`sidecar.image` (line 23) is an alias"]),
        (ANCHORS, "sidecar.tag", ["(line 24) is an anchor also used elsewhere through an alias"]),
        ("a: 1\na: 2\n", "a", ["the key 'a' appears 2 times (lines 1, 2)"]),
        ("- a\n- b\n", "a", ["the file is not a YAML mapping (it holds a list)"]),
        ("just text\n", "a", ["the file is not a YAML mapping (it holds a single value)"]),
        ("a: 1\n---\nb: 2\n", "a", ["more than one YAML document"]),
        ("a: [1, 2\n", "a", ["not valid YAML", "line 2"]),
    ],
)
def test_structural_mismatch_is_a_clear_error(text: str, path: str, fragments: list[str]) -> None:
    with pytest.raises(ValueError) as raised:
        set_keys(text, {path: "9a8b7c6"})
    message = str(raised.value)
    for fragment in fragments:
        assert fragment in message, message
    if not message.startswith(("the file", "not valid", "the key")):
        assert f"`{path}`" in message  # the path as written


def test_a_failed_write_changes_nothing_even_after_earlier_keys() -> None:
    # Two keys, the second one bad: no half-applied result comes back (the caller writes nothing).
    with pytest.raises(ValueError, match=r"images\.newTag"):
        set_keys(KUSTOMIZATION, {"images[0].newTag": "ok", "images.newTag": "bad"})


def test_only_single_values_are_written() -> None:
    with pytest.raises(ValueError, match="only single values"):
        set_keys(HELM, {"image.tag": {"major": 1}})


# --- missing keys: created in the file's own layout ---------------------------------------------------------


@pytest.mark.usefixtures("exact")
def test_missing_keys_are_created_in_the_files_indentation() -> None:
    four = (VALUES / "helm-platform-4space.yaml").read_text()
    result = set_keys(four, {"canary.analysis.template": "success-rate"})
    assert changed_lines(four, result) == ([], ["    analysis:\n", "        template: success-rate\n"])
    two = set_keys(HELM, {"canary.analysis.template": "success-rate"})
    assert changed_lines(HELM, two) == ([], ["  analysis:\n", "    template: success-rate\n"])


@pytest.mark.usefixtures("exact")
def test_a_fresh_values_file_gets_nested_mappings() -> None:
    assert set_keys("", {"canary.tag": "abc", "canary.weight": 10}) == "canary:\n  tag: abc\n  weight: 10\n"
    assert (
        set_keys("# values for prod\n", {"image.tag": "1234567"})
        == "# values for prod\nimage:\n  tag: '1234567'\n"
    )
    assert set_keys("---\n", {"image.tag": "abc"}) == "---\nimage:\n  tag: abc\n"


@pytest.mark.usefixtures("exact")
def test_new_keys_keep_crlf_and_a_missing_final_newline() -> None:
    crlf = (VALUES / "crlf-windows.yaml").read_bytes().decode()
    result = set_keys(crlf, {"image.pullPolicy": "Always"})
    assert changed_lines(crlf, result) == ([], ["  pullPolicy: Always\r\n"])
    bare = (VALUES / "no-final-newline.yaml").read_text()
    result = set_keys(bare, {"canary.enabled": True})
    assert result == bare + "\n  enabled: true"


@pytest.mark.usefixtures("exact")
def test_empty_and_flow_values_take_new_keys_in_place() -> None:
    assert (
        set_keys("canary:\nimage: {tag: a}\n", {"canary.weight": 5})
        == "canary:\n  weight: 5\nimage: {tag: a}\n"
    )
    assert set_keys("canary: ~  # later\n", {"canary.weight": 5}) == "canary: {weight: 5}  # later\n"
    assert set_keys("canary: {}  # later\n", {"canary.weight": 5}) == "canary: {weight: 5}  # later\n"
    edge = (VALUES / "edge-site.yaml").read_text()
    result = set_keys(edge, {"image.pullPolicy": "Always"})
    assert changed_lines(edge, result) == (
        ["image: {repository: registry.example.com/edge/router, tag: 8c1f0ab}\n"],
        ["image: {repository: registry.example.com/edge/router, tag: 8c1f0ab, pullPolicy: Always}\n"],
    )


@pytest.mark.usefixtures("exact")
def test_a_new_key_goes_after_an_entry_that_ends_in_an_alias() -> None:
    result = set_keys(ANCHORS, {"euwest1.zone": "b"})
    assert changed_lines(ANCHORS, result) == ([], ["  zone: b\n"])
    assert yaml.safe_load(result)["euwest1"]["zone"] == "b"


def test_writing_an_alias_replaces_it_and_nothing_else() -> None:
    result = set_keys(ANCHORS, {"sidecar.mirror": "v1.0.0"})
    assert changed_lines(ANCHORS, result) == (["  mirror: *sidecarTag\n"], ["  mirror: v1.0.0\n"])


def test_an_anchor_nobody_aliases_keeps_its_anchor() -> None:
    result = set_keys(ANCHORS, {"stable": 42})
    assert changed_lines(ANCHORS, result) == (["stable: &stable 41\n"], ["stable: &stable 42\n"])


# --- the safety net: every result is parsed again ------------------------------------------------------------


def test_a_text_edit_that_does_not_verify_falls_back_to_the_round_trip(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(yamledit, "_render", lambda value, style="", flow=False: "[broken")
    with caplog.at_level(logging.WARNING, logger="aicd.yamledit"):
        result = set_keys(HELM, {"image.tag": "9a8b7c6"})
    assert yaml.safe_load(result) == assign(yaml.safe_load(HELM), ["image", "tag"], "9a8b7c6")
    assert "did not verify" in caplog.text


def test_no_result_at_all_when_neither_edit_verifies(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(yamledit, "_render", lambda value, style="", flow=False: "[broken")
    monkeypatch.setattr(yamledit, "_round_trip", lambda text, writes: text)
    with pytest.raises(ValueError, match="without changing other values"):
        set_keys(HELM, {"image.tag": "9a8b7c6"})


def test_the_round_trip_keeps_the_files_indentation() -> None:
    four = (VALUES / "helm-platform-4space.yaml").read_text()
    writes = [(parse_path("image.tag"), "9.9.9")]
    result = yamledit._round_trip(four, writes)
    assert "        - name: regcred\n" in result and "    - name: JAVA_OPTS\n" in result
    assert yaml.safe_load(result) == assign(yaml.safe_load(four), ["image", "tag"], "9.9.9")


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=0, max_size=20))
def test_any_string_reads_back_in_block_and_flow_slots(value: str) -> None:
    slots = (
        ("a:\n  b: x  # c\n", "a.b"),
        ("a: {b: x, c: 1}\n", "a.b"),
        ("a: [x, y]\n", "a[0]"),
        ("a:\n", "a.b"),
    )
    for text, path in slots:
        with mock.patch.object(yamledit, "_round_trip", side_effect=AssertionError("the text edit missed")):
            result = set_keys(text, {path: value})
        assert get_path(yaml.safe_load(result), path) == value
        assert get_path(ruamel_load(result), path) == value


# --- path syntax: parser, schema pattern, readers -----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "steps"),
    [
        ("image.tag", [Key("image", "image"), Key("tag", "tag")]),
        ("images.0.newTag", [Key("images", "images"), Key("0", "0"), Key("newTag", "newTag")]),
        ("images[0].newTag", [Key("images", "images"), Index(0, "[0]"), Key("newTag", "newTag")]),
        ("images[-1]", [Key("images", "images"), Index(-1, "[-1]")]),
        (
            "images[name=checkout-api]",
            [Key("images", "images"), Select("name", "checkout-api", "[name=checkout-api]")],
        ),
        ('images[name="a b"]', [Key("images", "images"), Select("name", "a b", '[name="a b"]')]),
        (
            "images[name=reg.io/x:1]",
            [Key("images", "images"), Select("name", "reg.io/x:1", "[name=reg.io/x:1]")],
        ),
        (
            'podAnnotations["prometheus.io/port"]',
            [Key("podAnnotations", "podAnnotations"), Key("prometheus.io/port", '["prometheus.io/port"]')],
        ),
        ("['a.b'].c", [Key("a.b", "['a.b']"), Key("c", "c")]),
        ("a[0][1]", [Key("a", "a"), Index(0, "[0]"), Index(1, "[1]")]),
    ],
)
def test_path_syntax(text: str, steps: list[Any]) -> None:
    assert list(parse_path(text).steps) == steps
    assert re.fullmatch(WRITE_PATH_PATTERN, text)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "is empty"),
        ("image..tag", "a key must follow the dot at character 6"),
        ("image.", "a key must follow the dot at character 6"),
        (".image", "it must start with a key"),
        ("images[0", "the [ at character 7 is not closed"),
        ("images[]", "empty [] at character 7"),
        ("images[name]", "neither an index nor field=value"),
        ("images[name=]", "needs quotes"),
        ("images[name=a b]", "needs quotes"),
        ('images[name="a].x', "is not closed"),
        ("image tag", "' ' at character 6 is not allowed here"),
        ("image/tag", "'/' at character 6 is not allowed here"),
        ("images[0]x", "'x' at character 10 is not allowed here"),
        ("a[na.me=x]", "the field 'na.me'"),
    ],
)
def test_bad_path_syntax_is_a_clear_error(text: str, problem: str) -> None:
    with pytest.raises(ValueError) as raised:
        parse_path(text)
    assert problem in str(raised.value) and "write e.g. image.tag" in str(raised.value)
    assert not re.fullmatch(WRITE_PATH_PATTERN, text)


@settings(max_examples=2000, deadline=None)
@given(st.text(alphabet="ab0-_.[]=\"' x/", max_size=14))
def test_the_schema_pattern_accepts_exactly_what_the_parser_accepts(text: str) -> None:
    try:
        parse_path(text)
        parsed = True
    except ValueError:
        parsed = False
    assert parsed == bool(re.fullmatch(WRITE_PATH_PATTERN, text)), text


def test_the_schema_uses_the_parsers_pattern() -> None:
    definitions = schema()["$defs"]
    assert definitions["writePath"]["pattern"] == WRITE_PATH_PATTERN
    assert definitions["optionalWritePath"]["pattern"] == WRITE_PATH_PATTERN
    assert '\\"' not in WRITE_PATH_PATTERN  # a JavaScript unicode regex (editors) refuses an escaped quote


def test_readers_use_the_same_syntax() -> None:
    data = yaml.safe_load(KUSTOMIZATION)
    assert get_path(data, "images[name=envoy].newTag") == "v1.31.2"
    assert get_path(data, "images.1.newTag") == get_path(data, "images[1].newTag") == "v1.31.2"
    assert get_path(data, "replicas[name=checkout-api].count") == 4
    assert get_path(data, "images[name=nope].newTag") is None
    assert get_path(data, "images.newTag") is None and get_path(data, "namespace.x") is None
    assert get_path({"on": {"x": 1}, True: 2, 0: "zero"}, "on.x") == 1
    assert get_path({True: 2}, "yes") == 2 and get_path({0: "zero"}, "0") == "zero"
    assert set_path({"a": [{"name": "x", "v": 1}]}, "a[name=x].v", 2) == {"a": [{"name": "x", "v": 2}]}
    assert set_path(None, "a.b", 1) == {"a": {"b": 1}}
    with pytest.raises(ValueError, match="has no"):
        set_path({"a": []}, "a[0]", 1)


def test_the_local_reconciler_reads_write_paths() -> None:
    keys = ValueKeys(image="images[name=app].newTag", canary=None, weight=None)
    desired = parse_values("images:\n- name: app\n  newTag: '1234567'\n", keys)
    assert (desired.stable, desired.canary, desired.weight) == ("1234567", None, 0)
    listed = ValueKeys(image="app.versions[0]", canary="app.versions[1]", weight="app.split.1")
    desired = parse_values("app:\n  versions: [a1, b2]\n  split: [90, 10]\n", listed)
    assert (desired.stable, desired.canary, desired.weight) == ("a1", "b2", 10)
    target = LocalTarget.from_config(
        "t", {"path": "v.yaml", "keys": {"image": "images[0].newTag", "weight": None}}
    )
    assert target.keys.image == "images[0].newTag" and target.keys.weight is None
    with pytest.raises(ValueError, match=r"target t: keys.image: write path 'images\[0'"):
        LocalTarget.from_config("t", {"path": "v.yaml", "keys": {"image": "images[0"}})


def test_a_file_without_canary_keys_gets_none_written_by_steps() -> None:
    plan = WritePlan("images[name=app].newTag", None, None)
    assert plan.canary_values("abc", 100) == {}
    assert plan.promote_values("abc") == {"images[name=app].newTag": "abc"}
    default = WritePlan("image.tag", "canary.weight", "canary.tag")
    assert default.canary_values("abc", 10) == {"canary.tag": "abc", "canary.weight": 10}
    assert default.promote_values("abc") == {"image.tag": "abc", "canary.weight": 0, "canary.tag": "abc"}


def test_the_plan_shows_what_each_step_writes() -> None:
    raw = MINIMAL.read_text().replace(
        "spec:\n", "spec:\n  write: {image: 'images[name=app].newTag', weight: null, canaryImage: null}\n", 1
    )
    raw = re.sub(r"setWeight: [0-9]+", "setWeight: 100", raw)
    spec, errors = parse_spec_bytes(raw.encode(), "spec.yaml")
    assert not errors and spec is not None, errors
    tree = render_tree(build_plan(spec, "4f2c1d9e5b6a7c8d9e0f1a2b3c4d5e6f7a8b9c0d"))
    assert "setWeight 100: nothing written (no canary keys)" in tree
    promotions = [line.strip() for line in tree.splitlines() if "promote:" in line]
    assert promotions and set(promotions) == {"promote: images[name=app].newTag=4f2c1d9"}


@pytest.mark.usefixtures("exact")
def test_replacements_and_insertions_in_one_write() -> None:
    # A longer value before an insertion point moves it: each edit still lands on its own line.
    values = {
        "image.tag": "a-much-longer-tag",
        "canary.analysis.template": "rate",
        "service.port": 8080,
        "zz.a": 1,
    }
    result = set_keys(HELM, values)
    assert changed_lines(HELM, result) == (
        ['  tag: "4f2c1d9"\n', "  port: 80\n"],
        [
            '  tag: "a-much-longer-tag"\n',
            "  analysis:\n",
            "    template: rate\n",
            "  port: 8080\n",
            "zz:\n",
            "  a: 1\n",
        ],
    )
    expected = yaml.safe_load(HELM)
    for where, value in ((["image", "tag"], "a-much-longer-tag"), (["service", "port"], 8080)):
        assign(expected, where, value)
    expected["canary"]["analysis"] = {"template": "rate"}
    expected["zz"] = {"a": 1}
    assert yaml.safe_load(result) == expected


@pytest.mark.usefixtures("exact")
@pytest.mark.parametrize(
    ("text", "path", "expected"),
    [
        ("a: {canary: , x: 1}\n", "a.canary.w", "a: {canary: {w: 5}, x: 1}\n"),
        ("a: {canary: null}\n", "a.canary.w", "a: {canary: {w: 5}}\n"),
        ("a: [{b: }]\n", "a[0].b.c", "a: [{b: {c: 5}}]\n"),
        ("a:\n  - b:\n    x: 1\n", "a[0].b.c", "a:\n  - b:\n      c: 5\n    x: 1\n"),
    ],
)
def test_empty_values_inside_flow_collections_and_lists(text: str, path: str, expected: str) -> None:
    assert set_keys(text, {path: 5}) == expected


@pytest.mark.parametrize("value", ["-", "-x", "--"])
def test_dash_values_read_back_in_every_slot(value: str) -> None:
    # A lone "-" is a sequence entry in YAML: it must be quoted wherever it is written (found by hypothesis).
    for text, path in (
        ("a:\n  b: x  # c\n", "a.b"),
        ("a: {b: x, c: 1}\n", "a.b"),
        ("a: [x, y]\n", "a[0]"),
        ("a:\n", "a.b"),
    ):
        with mock.patch.object(yamledit, "_round_trip", side_effect=AssertionError("the text edit missed")):
            result = set_keys(text, {path: value})
        assert get_path(yaml.safe_load(result), path) == value, result
        assert get_path(ruamel_load(result), path) == value, result


# --- undoing one writer's edits (a rollback keeps others' edits) ------------------------------------------------
def test_scalar_changes_name_each_value_set_and_refuse_anything_more() -> None:
    before = 'a:\n  b: 1\n  "x.y": on\nl:\n- n: 1\n'
    after = 'a:\n  b: 2\n  "x.y": off\n  c: {d: 3}\nl:\n- n: 1\nnew: true\n'
    assert scalar_changes(before, after) == {
        ("a", "b"): 2,
        ("a", "x.y"): False,
        ("a", "c", "d"): 3,
        ("new",): True,
    }
    assert scalar_changes("a: 1\n", "a: true\n") == {("a",): True}  # 1 == True, but not in the file
    assert scalar_changes("a: 1\nb: 2\n", "a: 1\n") is None  # a key removed
    assert scalar_changes("l: [1]\n", "l: [1, 2]\n") is None  # a list resized
    assert scalar_changes("a: 1\n", "a: {b: 1}\n") is None  # a value turned into a mapping
    assert [place_path(place) for place in [("a", "x.y"), ("l", 0, "n"), ("7",), ("a", "q'\"")]] == [
        'a["x.y"]',
        "l[0].n",
        '["7"]',
        None,
    ]


def test_undo_keeping_others_keeps_their_values_except_where_the_writer_wrote() -> None:
    before = "# stable\nimage: v0  # pinned\nreplicas: 3\n"
    ours = "# stable\nimage: v0  # pinned\nreplicas: 3\ncanary: {weight: 10, tag: v1}\n"
    theirs = ours.replace("replicas: 3", "replicas: 6").replace("tag: v1", "tag: v2")
    ours_again = theirs.replace("weight: 10", "weight: 50")
    undone = undo_keeping_others(
        before, [(True, before, ours), (False, ours, theirs), (True, theirs, ours_again)]
    )
    assert undone == "# stable\nimage: v0  # pinned\nreplicas: 6\n"
    removed = theirs.replace("replicas: 6\n", "")
    assert undo_keeping_others(before, [(True, before, ours), (False, ours, removed)]) is None


def test_undo_keeping_others_takes_back_what_the_writer_added_beyond_scalars_and_keeps_their_values() -> None:
    """The writer's own edit may add more than scalars (a flag rollout adds a `targeting` rule with a list):
    that place goes back as a whole, and others' scalar edits elsewhere are still kept."""
    before = "flags:\n  a: {state: ENABLED}\n  b: {state: ENABLED}\n"
    ours = "flags:\n  a: {state: ENABLED, targeting: {fractional: [[on, 10], [off, 90]]}}\n  b: {state: ENABLED}\n"
    theirs = ours.replace("b: {state: ENABLED}", "b: {state: DISABLED}").replace(
        "10], [off, 90", "5], [off, 95"
    )
    ours_again = theirs.replace("5], [off, 95", "50], [off, 50")
    undone = undo_keeping_others(
        before, [(True, before, ours), (False, ours, theirs), (True, theirs, ours_again)]
    )
    assert undone == "flags:\n  a: {state: ENABLED}\n  b: {state: DISABLED}\n"


def test_clear_of_writer_lets_a_rollback_keep_values_set_away_from_the_writers() -> None:
    """After the writer's last edit, a human scaled the app: clear (the rollback restores around it). A human
    who touched the canary, or removed a key, took the file over: not clear."""
    before = "image: {tag: v0}\ncanary: {weight: 0, tag: v0}\nreplicas: 2\n"
    ours = before.replace("weight: 0, tag: v0", "weight: 10, tag: v1")
    scaled = ours.replace("replicas: 2", "replicas: 5")
    assert clear_of_writer([(True, before, ours), (False, ours, scaled)])
    killed = ours.replace("weight: 10", "weight: 0")
    assert not clear_of_writer([(True, before, ours), (False, ours, killed)])
    assert not clear_of_writer([(True, before, ours), (False, ours, ours.replace("replicas: 2\n", ""))])
    # An edit of the writer's place *before* its last write was about its release (a resume accepted it).
    ours_again = killed.replace("weight: 0, tag: v1", "weight: 50, tag: v1")
    scaled_again = ours_again.replace("replicas: 2", "replicas: 5")
    assert clear_of_writer(
        [
            (True, before, ours),
            (False, ours, killed),
            (True, killed, ours_again),
            (False, ours_again, scaled_again),
        ]
    )
    assert not clear_of_writer([(False, before, scaled)])  # the writer never wrote it: nothing to undo around
