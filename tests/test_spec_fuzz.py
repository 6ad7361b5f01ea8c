"""Mutated specs only ever give clean results: a valid model (that plans), or located SpecErrors.

Property-based (hypothesis, derandomized and bounded), then thousands of seeded random mutations in-process,
then a batch through the CLI to prove no traceback reaches stderr.
"""

from __future__ import annotations

import copy
import json
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aicd.cli.spec import one_line
from aicd.plan import build_plan, render_tree
from aicd.spec.errors import SpecError
from aicd.spec.loader import parse_spec_bytes
from tests.conftest import REPO_ROOT, aicd_env
from tests.helpers_spec import ERROR_LINE, example_documents

DOCS = example_documents()
SHA = "a1b2c3d" + "0" * 33

KEYS = [
    "name", "kind", "targets", "waves", "steps", "setWeight", "pause", "analysis", "metrics", "approval",
    "approvers", "minApprovals", "batches", "sites", "maxFailures", "noDataLimit", "tolerance", "direction",
    "alpha", "min", "max", "total", "query", "duration", "timeout", "path", "app", "strategy", "canary",
    "command", "artifact", "repo", "branches", "x-unknown",
]  # fmt: skip
INTERESTING = [
    "", "5m", "0s", "1h30m", "-1s", "10%", "100%", "150%", "0%", "release/*", "{{ track }}", "{{ site }}",
    "{{ revision.short }}", "{{ nope }}", "{{", "}}", "prod", "staging", "count", "continuous", "increase",
    "decrease", "either", "edge", "argocd", "local", "git", "http://x", "\u202e", "\u2028", "\x85", "ß", "🚀",
    "a\nb", "'", '"', "&a", "*a", "!!str", "- x", "key: value", "null", "~", "yes", "0x1F", "1e9", ".nan",
]  # fmt: skip

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**20), max_value=10**20)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(INTERESTING)
)
VALUES = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=6,
)


# --- the invariant -------------------------------------------------------------------------------------------


def assert_clean(raw: bytes) -> list[SpecError]:
    """parse_spec_bytes gives a valid model that plans, or well-formed located errors; nothing else."""
    spec, errors = parse_spec_bytes(raw, "fuzz.yaml")
    if errors:
        assert spec is None
        for error in errors:
            assert isinstance(error, SpecError)
            assert error.file == "fuzz.yaml"
            assert isinstance(error.line, int) and error.line >= 0
            assert isinstance(error.col, int) and error.col >= 0
            assert error.path.startswith("$")
            assert isinstance(error.message, str) and error.message
            assert ERROR_LINE.match(one_line(str(error))), str(error)
    else:
        assert spec is not None
        plan = build_plan(spec, SHA)
        render_tree(plan)
        json.dumps(plan.to_dict(), allow_nan=False)
    return errors


# --- mutations -------------------------------------------------------------------------------------------------


def _paths(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield path
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, (*path, index))


def _get(value: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        value = value[part]
    return value


def _dump(document: Any) -> bytes:
    return yaml.safe_dump(document, allow_unicode=True, sort_keys=False).encode("utf-8", "surrogatepass")


def mutate_document(document: Any, rnd: random.Random, new_value: Any) -> None:
    """One structural change in place: delete a key/item, replace a value (other type, random value),
    duplicate a list item, add a key, or replace a container by its own copy somewhere else."""
    paths = [path for path in _paths(document) if path]
    if not paths:
        return
    path = rnd.choice(paths)
    parent, key = _get(document, path[:-1]), path[-1]
    op = rnd.randrange(6)
    if op == 0:
        del parent[key]
    elif op == 1:
        parent[key] = new_value
    elif op == 2 and isinstance(parent, list):
        parent.insert(key, copy.deepcopy(parent[key]))
    elif op == 3 and isinstance(parent, dict):
        parent[rnd.choice(KEYS)] = new_value
    elif op == 4:
        parent[key] = copy.deepcopy(_get(document, rnd.choice(paths)))
    else:
        parent[key] = [parent[key]] if rnd.random() < 0.5 else {"value": parent[key]}


def mutate_bytes(raw: bytes, rnd: random.Random, noise: bytes) -> bytes:
    """One textual change: truncate, insert/overwrite bytes, delete/duplicate/swap lines, re-indent a line."""
    op = rnd.randrange(7)
    position = rnd.randrange(len(raw) + 1)
    if op == 0:
        return raw[:position]
    if op == 1:
        return raw[:position] + noise + raw[position:]
    if op == 2:
        return raw[:position] + noise + raw[position + len(noise) :]
    lines = raw.split(b"\n")
    index = rnd.randrange(len(lines))
    if op == 3:
        del lines[index]
    elif op == 4:
        lines.insert(index, lines[index])  # often a duplicate key
    elif op == 5:
        other = rnd.randrange(len(lines))
        lines[index], lines[other] = lines[other], lines[index]
    else:
        lines[index] = b" " * rnd.randrange(5) + lines[index].lstrip()
    return b"\n".join(lines)


# --- property-based ----------------------------------------------------------------------------------------------


def fuzz_settings(examples: int) -> settings:
    return settings(
        derandomize=True,  # the same examples every run: a failure here is reproducible, never flaky
        database=None,
        max_examples=examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


@fuzz_settings(150)
@given(
    index=st.integers(min_value=0, max_value=len(DOCS) - 1),
    seed=st.integers(min_value=0, max_value=2**32),
    values=st.lists(VALUES, min_size=1, max_size=4),
)
def test_structural_mutations_are_clean(index: int, seed: int, values: list[Any]) -> None:
    document = copy.deepcopy(DOCS[index][2])
    rnd = random.Random(seed)
    for value in values:
        mutate_document(document, rnd, value)
    assert_clean(_dump(document))


@fuzz_settings(150)
@given(
    index=st.integers(min_value=0, max_value=len(DOCS) - 1),
    seed=st.integers(min_value=0, max_value=2**32),
    noises=st.lists(st.binary(max_size=8) | st.text(max_size=4).map(str.encode), min_size=1, max_size=3),
)
def test_textual_mutations_are_clean(index: int, seed: int, noises: list[bytes]) -> None:
    raw = DOCS[index][1]
    rnd = random.Random(seed)
    for noise in noises:
        raw = mutate_bytes(raw, rnd, noise)
    assert_clean(raw)


@fuzz_settings(200)
@given(st.binary(max_size=300))
def test_random_bytes_are_clean(raw: bytes) -> None:
    assert assert_clean(raw), "random bytes are never a valid spec"


@fuzz_settings(100)
@given(VALUES)
def test_random_documents_are_clean(document: Any) -> None:
    assert_clean(_dump(document))


# --- many seeded mutations in-process ------------------------------------------------------------------------


def seeded_inputs(count: int, seed: int) -> Iterator[bytes]:
    rnd = random.Random(seed)
    values = [None, True, 0, -1, 10**30, 1.5, float("nan"), float("inf"), [], {}, [1], {"a": 1}, *INTERESTING]
    for _ in range(count):
        _name, raw, document = DOCS[-1] if rnd.random() < 0.5 else rnd.choice(DOCS)  # mostly the small one
        if rnd.random() < 0.6:
            document = copy.deepcopy(document)
            for _ in range(rnd.randint(1, 4)):
                mutate_document(document, rnd, copy.deepcopy(rnd.choice(values)))
            raw = _dump(document)
        for _ in range(rnd.choice((0, 0, 1, 2))):
            raw = mutate_bytes(raw, rnd, bytes(rnd.randrange(256) for _ in range(rnd.randint(1, 6))))
        yield raw


def test_thousands_of_seeded_mutations_are_clean() -> None:
    outcomes = {"valid": 0, "invalid": 0}
    for raw in seeded_inputs(2000, seed=20261122):
        outcomes["invalid" if assert_clean(raw) else "valid"] += 1
    # The mix exercises both outcomes (the model and plan builders too, not just the error paths).
    assert outcomes["valid"] >= 20 and outcomes["invalid"] >= 1000, outcomes


# --- through the CLI ---------------------------------------------------------------------------------------------


def test_cli_never_shows_a_traceback(tmp_path: Path) -> None:
    files = []
    for number, raw in enumerate(seeded_inputs(40, seed=7)):
        path = tmp_path / f"m{number:02d}.yaml"
        path.write_bytes(raw)
        files.append(path)
    (tmp_path / "bomb.yaml").write_bytes(
        b'a: &a ["x","x","x","x","x","x","x","x","x"]\n'
        + b"".join(
            f"{c}: &{c} [{','.join([f'*{p}'] * 9)}]\n".encode()
            for p, c in zip("abcdefg", "bcdefgh", strict=True)
        )
    )
    (tmp_path / "binary.yaml").write_bytes(bytes(range(256)) * 4)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "aicd", *args],
            cwd=REPO_ROOT,
            env=aicd_env(),
            capture_output=True,
            encoding="utf-8",
            errors="strict",  # the CLI's output must be valid UTF-8 whatever the input
            timeout=300,
        )
        assert "Traceback" not in done.stderr, done.stderr
        assert done.returncode in (0, 2), done
        return done

    text = run("validate", str(tmp_path))
    assert text.returncode == 2
    for line in text.stdout.splitlines():
        assert line.startswith("ok: ") or ERROR_LINE.match(line), line

    machine = run("validate", "--format", "json", str(tmp_path))
    report = json.loads(machine.stdout)
    assert len(report["files"]) == len(files) + 2
    assert report["ok"] is False and all(error["line"] >= 0 for error in report["errors"])

    for path in files[:3]:
        run("plan", str(path), "--revision", SHA)
