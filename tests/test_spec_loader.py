"""Spec loading: the examples validate; schema errors and YAML problems are clean, located SpecErrors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aicd.cli.spec import read_spec
from aicd.plan import build_plan, render_tree
from aicd.spec.errors import SpecError, SpecInvalid
from aicd.spec.loader import load_spec, parse_spec_bytes, spec_files
from aicd.spec.yamlsafe import MAX_DEPTH, MAX_FILE_BYTES
from tests.helpers_spec import (
    ERROR_LINE,
    EXAMPLE_SPECS,
    MINIMAL,
    broken_fixtures,
    expected_lines,
    fixture_header,
    rel,
)

SHA = "4f2c1d9e" + "0" * 32


def lines(raw: bytes, file: str = "spec.yaml") -> list[str]:
    spec, errors = parse_spec_bytes(raw, file)
    assert spec is None and errors, "expected validation errors"
    assert all(isinstance(error, SpecError) for error in errors)
    return [str(error) for error in errors]


# --- valid specs ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [*EXAMPLE_SPECS, MINIMAL], ids=lambda p: p.name)
def test_valid_specs_load_and_plan(path: Path) -> None:
    spec = load_spec(path)
    assert spec.stages and spec.targets
    plan = build_plan(spec, SHA)
    assert plan.app == spec.name
    assert render_tree(plan)
    json.dumps(plan.to_dict(), allow_nan=False)


def test_example_specs_are_the_documented_ones() -> None:
    names = {path.name for path in EXAMPLE_SPECS}
    assert {"checkout-api.yaml", "demo.yaml"} <= names


def test_checkout_api_model() -> None:
    spec = load_spec(EXAMPLE_SPECS[[p.name for p in EXAMPLE_SPECS].index("checkout-api.yaml")])
    assert spec.name == "checkout-api"
    assert [stage.name for stage in spec.stages] == ["staging", "production"]
    production = spec.stages[1]
    assert production.waves == (("prod-use1",), ("prod-euw1",), ("edge-pops",))
    assert [step.kind for step in production.steps] == [
        "setWeight", "pause", "analysis", "setWeight", "analysis", "setWeight",
    ]  # fmt: skip
    assert production.steps[1].duration_s == 300
    assert production.approval is not None and production.approval.min_approvals == 1
    assert spec.targets["edge-pops"].kind == "edge"
    assert spec.analysis is not None and [m.name for m in spec.analysis.metrics] == [
        "error-rate",
        "latency-p99",
    ]


def test_minimal_spec_defaults() -> None:
    spec = load_spec(MINIMAL)
    staging = spec.stages[0]
    assert [(step.kind, step.weight) for step in staging.steps] == [("setWeight", 100)]
    assert spec.gitops_branch == "main"
    assert spec.rollback_scope == "stage"


# --- golden schema and YAML errors ----------------------------------------------------------------------------


def test_command_env_and_secret_names_reach_the_plan() -> None:
    raw = MINIMAL.read_bytes().replace(
        b'    artifact: "registry.example.com/shop:{{ revision.short }}"\n',
        b'    artifact: "registry.example.com/shop:{{ revision.short }}"\n'
        b'    env: {TAG: "{{ revision.short }}", GOFLAGS: -mod=vendor}\n'
        b"    secretEnv: [NPM_TOKEN]\n"
        b"  test:\n"
        b"    - {name: unit, command: [pytest], secretEnv: [DB_PASSWORD]}\n",
    )
    spec, errors = parse_spec_bytes(raw, "spec.yaml")
    assert errors == [] and spec is not None and spec.build is not None
    assert spec.build.env == {"TAG": "{{ revision.short }}", "GOFLAGS": "-mod=vendor"}
    assert spec.build.secret_env == ("NPM_TOKEN",) and spec.tests[0].secret_env == ("DB_PASSWORD",)
    plan = build_plan(spec, SHA)
    assert plan.build is not None and plan.build.env == {"TAG": SHA[:7], "GOFLAGS": "-mod=vendor"}
    assert plan.build.secret_env == ["NPM_TOKEN"] and plan.tests[0].secret_env == ["DB_PASSWORD"]
    tree = render_tree(plan)
    assert f"    env: TAG={SHA[:7]}, GOFLAGS=-mod=vendor" in tree
    assert "    secretEnv: NPM_TOKEN (values from the worker's allowed secrets)" in tree


SCHEMA_AND_YAML = [path for path in broken_fixtures() if fixture_header(path)[0] in ("schema", "yaml")]


@pytest.mark.parametrize("path", SCHEMA_AND_YAML, ids=lambda p: p.stem)
def test_schema_and_yaml_fixture_golden(path: Path) -> None:
    assert lines(path.read_bytes(), rel(path)) == expected_lines(path)


def test_schema_errors_cover_the_basic_kinds() -> None:
    kinds = {path.stem for path in SCHEMA_AND_YAML}
    for required in ("schema-unknown-key", "schema-wrong-type", "schema-bad-duration", "schema-bad-enum"):
        assert required in kinds


def test_unknown_key_golden() -> None:
    raw = MINIMAL.read_bytes().replace(b"  build:\n", b"  biuld: {}\n  build:\n")
    assert lines(raw) == [
        "spec.yaml:10:3: error: $.spec.biuld: unknown key(s) ['biuld']; allowed here: ['analysis', 'build',"
        " 'concurrency', 'gitops', 'notifications', 'people', 'policy', 'provision', 'rollback', 'schedule',"
        " 'source', 'stages', 'targets', 'test', 'write']"
    ]


def test_every_schema_error_of_a_file_is_reported_at_once() -> None:
    raw = (
        MINIMAL.read_bytes()
        .replace(b"kind: count", b"kind: counter")
        .replace(b"{duration: 1m}", b"{duration: soon}")
        .replace(b'branches: ["release/*"]', b"branches: 7")
    )
    assert lines(raw) == [
        "spec.yaml:9:5: error: $.spec.source.branches: 7 is not of type 'array'",
        "spec.yaml:23:9: error: $.spec.analysis.metrics[0].kind: 'counter' is not one of ['count', 'continuous']",
        "spec.yaml:33:26: error: $.spec.stages[1].strategy.canary.steps[1].analysis.duration:"
        " unparsable duration 'soon' (use e.g. 30s, 5m, 1h30m, 24h)",
    ]


def test_schema_and_semantic_errors_come_together_in_file_order() -> None:
    # An unknown target (semantic) is reported in the same run as a wrong shape elsewhere (schema), by position.
    raw = (
        MINIMAL.read_bytes()
        .replace(b"targets: [prod]", b"targets: [nowhere]")
        .replace(b"kind: count", b"kind: x")
    )
    assert lines(raw) == [
        "spec.yaml:23:9: error: $.spec.analysis.metrics[0].kind: 'x' is not one of ['count', 'continuous']",
        "spec.yaml:28:17: error: $.spec.stages[1].targets[0]: unknown target 'nowhere'; targets are ['prod', 'staging']",
    ]


# --- YAML problems ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"", "spec.yaml:1:1: error: $: empty document; expected a DeliverySpec"),
        (b"\n  \n# only a comment\n", "spec.yaml:1:1: error: $: empty document; expected a DeliverySpec"),
        (
            b"kind: x\x00\x01\x02",
            "spec.yaml:1:1: error: $: binary content (NUL byte); a delivery spec is UTF-8 YAML",
        ),
        (
            b"\x89PNG\r\n\x1a\n\x00\x00",
            "spec.yaml:1:1: error: $: binary content (NUL byte); a delivery spec is UTF-8 YAML",
        ),
        (b"kind: caf\xe9\n", "spec.yaml:1:1: error: $: not UTF-8 text: invalid continuation byte at byte 9"),
        (b"a: 1\nb: \xff\n", "spec.yaml:2:1: error: $: not UTF-8 text: invalid start byte at byte 8"),
        (b"a: 1\nb: x\x07y\n", "spec.yaml:2:5: error: $: invalid YAML: unacceptable character #x0007"),
        (b"a: [1, 2\n", "spec.yaml:2:1: error: $: invalid YAML: expected ',' or ']', but got '<stream end>'"),
        (
            b"\ta: 1\n",
            "spec.yaml:1:1: error: $: invalid YAML: found character '\\t' that cannot start any token",
        ),
        (b"a: *nowhere\n", "spec.yaml:1:4: error: $: invalid YAML: found undefined alias 'nowhere'"),
        (b"a: 1\na: 2\n", "spec.yaml:2:1: error: $.a: duplicate key 'a'"),
        (b"a: 1\n---\nb: 2\n", "spec.yaml:3:1: error: $: more than one YAML document; one spec per file"),
        (b"- 1\n- 2\n", "spec.yaml:1:1: error: $: expected a mapping (a DeliverySpec), got list"),
        (b"just text\n", "spec.yaml:1:1: error: $: expected a mapping (a DeliverySpec), got str"),
        (
            b"a: !!binary aGVsbG8=\n",
            "spec.yaml:1:4: error: $.a: unsupported YAML tag 'tag:yaml.org,2002:binary'",
        ),
        (b"a: !!set {x}\n", "spec.yaml:1:4: error: $.a: unsupported YAML tag 'tag:yaml.org,2002:set'"),
        (b"a: !local x\n", "spec.yaml:1:4: error: $.a: unsupported YAML tag '!local'"),
        (b"a: !!int abc\n", "spec.yaml:1:4: error: $.a: 'abc' is not a valid int"),
        (b"a: !!bool maybe\n", "spec.yaml:1:4: error: $.a: 'maybe' is not a valid bool"),
        (
            b"a: !!map x\n",
            "spec.yaml:1:4: error: $.a: YAML tag 'tag:yaml.org,2002:map' does not fit a scalar",
        ),
        (
            b"a: !!str [1]\n",
            "spec.yaml:1:4: error: $.a: YAML tag 'tag:yaml.org,2002:str' does not fit a sequence",
        ),
        (b"a: .nan\n", "spec.yaml:1:4: error: $.a: '.nan' is not a finite number"),
        (b"a: -.inf\n", "spec.yaml:1:4: error: $.a: '-.inf' is not a finite number"),
        (b"<<: {a: 1}\n", "spec.yaml:1:1: error: $: mapping keys must be plain scalars"),
        (b"? [a]\n: 1\n", "spec.yaml:1:3: error: $: mapping keys must be plain scalars"),
    ],
    ids=lambda value: value[:24].decode("utf-8", "replace") if isinstance(value, bytes) else None,
)
def test_yaml_problem(raw: bytes, expected: str) -> None:
    assert lines(raw) == [expected]


def test_unsafe_python_tag_is_refused_and_not_run(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    raw = f'metadata: !!python/object/apply:os.system ["touch {marker}"]\n'.encode()
    assert lines(raw) == [
        "spec.yaml:1:11: error: $.metadata: unsupported YAML tag 'tag:yaml.org,2002:python/object/apply:os.system'"
    ]
    raw = f'!!python/object/new:subprocess.Popen [["touch", "{marker}"]]\n'.encode()
    assert lines(raw) == [
        "spec.yaml:1:1: error: $: unsupported YAML tag 'tag:yaml.org,2002:python/object/new:subprocess.Popen'"
    ]
    assert not marker.exists()


def test_billion_laughs_is_refused_quickly() -> None:
    rows = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    rows += [f"{c}: &{c} [{','.join([f'*{p}'] * 9)}]" for p, c in zip("abcdefgh", "bcdefghi", strict=True)]
    (error,) = parse_spec_bytes("\n".join(rows).encode(), "bomb.yaml")[1]
    assert error.message == "document expands to more than 100000 nodes (alias bomb?)"


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 200 + b"]" * 200,  # flow nesting, deeper than the limit
        b"[" * 20_000,  # deeper than Python's recursion limit, and unterminated
        b"{a: " * 5000 + b"1" + b"}" * 5000,
        "".join(f"{'  ' * depth}k{depth}:\n" for depth in range(MAX_DEPTH + 5)).encode()
        + b"  " * 80
        + b"x: 1\n",
    ],
    ids=["flow-200", "flow-20000", "mapping-5000", "block-70"],
)
def test_deep_nesting(raw: bytes) -> None:
    (error,) = parse_spec_bytes(raw, "deep.yaml")[1]
    assert error.message == f"nesting deeper than {MAX_DEPTH} levels"
    assert error.line >= 1 and error.col >= 1


def test_nesting_within_the_limit_is_fine() -> None:
    raw = b"x: " + b"[" * (MAX_DEPTH - 2) + b"]" * (MAX_DEPTH - 2)
    messages = [error.message for error in parse_spec_bytes(raw, "ok.yaml")[1]]
    assert not any("nesting" in message for message in messages)


def test_big_file() -> None:
    raw = b"# " + b"x" * (MAX_FILE_BYTES + 10) + b"\n"
    assert lines(raw) == [
        f"spec.yaml:1:1: error: $: file is {len(raw)} bytes; the limit is {MAX_FILE_BYTES} bytes"
    ]


def test_node_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    # The real budget (100000) takes PyYAML seconds to compose; the same check with a small one.
    monkeypatch.setattr("aicd.spec.yamlsafe.MAX_NODES", 1000)
    (error,) = parse_spec_bytes(b"- 1\n" * 1500, "many.yaml")[1]
    assert (
        str(error)
        == "many.yaml:1000:3: error: $[999]: document expands to more than 1000 nodes (alias bomb?)"
    )


def test_long_scalar() -> None:
    (error,) = parse_spec_bytes(b"a: " + b"x" * 70_000, "long.yaml")[1]
    assert str(error) == "long.yaml:1:4: error: $.a: scalar longer than 64 KiB"


def test_byte_order_mark_is_fine() -> None:
    spec, errors = parse_spec_bytes(b"\xef\xbb\xbf" + MINIMAL.read_bytes(), "bom.yaml")
    assert errors == [] and spec is not None


def test_dates_are_text() -> None:
    raw = MINIMAL.read_bytes().replace(b"name: shop\n", b"name: shop\n  labels: {since: 2024-01-31}\n", 1)
    spec, errors = parse_spec_bytes(raw, "dates.yaml")
    assert errors == [] and spec is not None
    assert spec.raw["metadata"]["labels"] == {"since": "2024-01-31"}


# --- files ----------------------------------------------------------------------------------------------------


def test_load_spec_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SpecInvalid) as raised:
        load_spec(tmp_path / "nope.yaml")
    assert [str(e) for e in raised.value.errors] == [
        f"{tmp_path / 'nope.yaml'}:0:0: error: $: cannot read: No such file or directory"
    ]


def test_read_spec_refuses_what_is_not_a_spec_file(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    with open(big, "wb") as handle:
        handle.truncate(50 * 1024 * 1024)  # sparse: 50 MB without writing them
    cases = {
        tmp_path: "is a directory",
        Path("/dev/null"): "not a regular file",
        tmp_path / "missing.yaml": "cannot read: No such file or directory",
        big: f"file is {50 * 1024 * 1024} bytes; the limit is {MAX_FILE_BYTES} bytes",
    }
    for path, message in cases.items():
        spec, errors = read_spec(path)
        assert spec is None
        assert [str(error) for error in errors] == [f"{path}:0:0: error: $: {message}"]


def test_read_spec_unreadable(tmp_path: Path) -> None:
    import os

    if os.geteuid() == 0:
        pytest.skip("root reads files whatever their mode")
    path = tmp_path / "secret.yaml"
    path.write_bytes(MINIMAL.read_bytes())
    path.chmod(0)
    assert [e.message for e in read_spec(path)[1]] == ["cannot read: Permission denied"]


def test_spec_files_walks_directories(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ("a/one.yaml", "a/b/two.yml", "a/skip.json", "three.yaml"):
        (tmp_path / name).write_text("x: 1\n")
    found = spec_files([str(tmp_path)])
    assert [path.relative_to(tmp_path).as_posix() for path in found] == [
        "a/b/two.yml",
        "a/one.yaml",
        "three.yaml",
    ]


def test_schema_and_semantic_errors_are_reported_at_once() -> None:
    """`validate` promises all problems at once: a semantic problem (an unknown target) shows up in the same
    run as a schema problem elsewhere (an unknown key), not only after the schema problem is fixed."""
    raw = (
        MINIMAL.read_bytes()
        .replace(b"  build:\n", b"  biuld: {}\n  build:\n")
        .replace(b"targets: [prod]", b"targets: [prd]")
    )
    found = lines(raw)
    assert any("$.spec.biuld: unknown key(s)" in line for line in found), found
    assert any("unknown target 'prd'" in line for line in found), found


def test_semantic_checks_never_crash_on_a_malformed_spec() -> None:
    """The semantic checks run on documents with shape errors: a stage that is a string, steps that are a
    number, targets that are a list must give schema errors, never an exception."""
    raw = MINIMAL.read_bytes()
    for broken in (
        raw.replace(b"  stages:\n", b"  stages: oops\n  stagez:\n"),
        raw.replace(b"targets: [prod]", b"targets: 7"),
        raw.replace(b"  targets:\n", b"  targets: [a, b]\n  targetz:\n"),
    ):
        assert broken != raw
        found = lines(broken)
        assert found and all(ERROR_LINE.match(line) for line in found), found


def test_errors_that_quote_a_value_never_quote_a_token() -> None:
    """A schema error quotes the value it refuses; a token in that value (the check of literal secrets names
    it without quoting) must not reach `aicd validate`'s output, CI logs or the gateway's log."""
    token = "ghp_" + "a1B2c3D4e5" * 4
    key = "-----BEGIN OPENSSH PRIVATE KEY-----\\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmU\\n-----END OPENSSH PRIVATE KEY-----"
    raw = MINIMAL.read_bytes().replace(
        b'    command: ["make", "image", "TAG={{ revision.short }}"]\n',
        f'    command: "make image TOKEN={token}"\n    env: {{KEY: ["{key}"]}}\n'.encode(),
    )
    errors = [str(error) for error in parse_spec_bytes(raw, "spec.yaml")[1]]
    assert any("is not of type 'array'" in error for error in errors), errors
    assert any("is not of type 'string'" in error for error in errors), errors
    assert not any(token[4:20] in error or "b3BlbnNzaC1rZXktdjE" in error for error in errors), errors
