"""`aicd validate` and `aicd plan` through a real subprocess: exit codes, every error line, JSON output."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import RunAicd
from tests.helpers_spec import (
    BROKEN,
    ERROR_LINE,
    EXAMPLE_SPECS,
    MINIMAL,
    broken_fixtures,
    expected_lines,
    rel,
)

SHA = "4f2c1d9e5b6a7c8d9e0f1a2b3c4d5e6f7a8b9c0d"
CHECKOUT = "delivery_specs/checkout-api.yaml"


def assert_no_traceback(done: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in done.stderr and "Traceback" not in done.stdout, done.stderr


# --- aicd validate ---------------------------------------------------------------------------------------------


def test_validate_examples_ok(run_aicd: RunAicd) -> None:
    done = run_aicd("validate", *(rel(path) for path in EXAMPLE_SPECS))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"ok: {rel(path)}" for path in EXAMPLE_SPECS]
    assert done.stderr == ""


def test_validate_directory_ok(run_aicd: RunAicd) -> None:
    done = run_aicd("validate", "delivery_specs")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"ok: {rel(path)}" for path in EXAMPLE_SPECS]


def test_validate_broken_spec_prints_every_error_line(run_aicd: RunAicd) -> None:
    path = BROKEN / "semantic-edge-targets.yaml"
    done = run_aicd("validate", rel(path))
    assert_no_traceback(done)
    assert done.returncode == 2
    assert done.stdout.splitlines() == expected_lines(path)
    assert len(expected_lines(path)) == 5
    assert done.stderr.splitlines() == ["aicd: 5 error(s) in 1 of 1 file(s)"]


def test_validate_directory_with_broken_specs(run_aicd: RunAicd) -> None:
    # Every broken fixture's golden lines (schema, semantic and YAML problems), in order, in one run.
    done = run_aicd("validate", rel(BROKEN), "delivery_specs")
    assert_no_traceback(done)
    assert done.returncode == 2
    expected = [line for path in broken_fixtures() for line in expected_lines(path)]
    expected += [f"ok: {rel(path)}" for path in EXAMPLE_SPECS]
    assert done.stdout.splitlines() == expected
    errors = len(expected) - len(EXAMPLE_SPECS)
    files = len(broken_fixtures()) + len(EXAMPLE_SPECS)
    assert done.stderr.splitlines() == [
        f"aicd: {errors} error(s) in {len(broken_fixtures())} of {files} file(s)"
    ]


def test_validate_json(run_aicd: RunAicd) -> None:
    broken = BROKEN / "semantic-edge-targets.yaml"
    done = run_aicd("validate", "--format", "json", rel(MINIMAL), rel(broken))
    assert done.returncode == 2
    report = json.loads(done.stdout)
    assert report["ok"] is False
    assert [(entry["file"], entry["ok"]) for entry in report["files"]] == [
        (rel(MINIMAL), True),
        (rel(broken), False),
    ]
    lines = [
        f"{e['file']}:{e['line']}:{e['col']}: error: {e['path']}: {e['message']}" for e in report["errors"]
    ]
    assert lines == expected_lines(broken)
    assert report["files"][1]["errors"] == report["errors"]

    ok = run_aicd("validate", "-f", "json", rel(MINIMAL))
    assert ok.returncode == 0
    assert json.loads(ok.stdout) == {
        "ok": True,
        "files": [{"file": rel(MINIMAL), "ok": True, "errors": [], "notes": []}],
        "errors": [],
    }


def test_validate_odd_inputs_exit_2_cleanly(run_aicd: RunAicd, tmp_path: Path) -> None:
    empty_dir = tmp_path / "no-specs"
    empty_dir.mkdir()
    (empty_dir / "notes.txt").write_text("not a spec")
    cases: list[tuple[Path, str | None]] = [
        (tmp_path / "missing.yaml", "cannot read: No such file or directory"),
        (empty_dir, "no delivery specs (*.yaml, *.yml) in this directory"),
        (Path("/dev/null"), "not a regular file"),
        (
            _sparse(tmp_path / "huge.yaml", 50 * 1024 * 1024),
            "file is 52428800 bytes; the limit is 1048576 bytes",
        ),
        (_write(tmp_path / "empty.yaml", b""), None),
        (_write(tmp_path / "nul.yaml", b"\x00\x01binary"), None),
        (_write(tmp_path / "latin1.yaml", b"name: caf\xe9\n"), None),
        (_write(tmp_path / "bomb.yaml", (BROKEN / "yaml-alias-bomb.yaml").read_bytes()), None),
        (_write(tmp_path / "deep.yaml", b"[" * 50_000), None),
    ]
    done = run_aicd("validate", *(str(path) for path, _ in cases))
    assert_no_traceback(done)
    assert done.returncode == 2
    lines = done.stdout.splitlines()
    # Directory problems first, then each file in the order named: one line each.
    ordered = [cases[1], cases[0], *cases[2:]]
    assert len(lines) == len(ordered), lines
    for line, (path, message) in zip(lines, ordered, strict=True):
        match = ERROR_LINE.match(line)
        assert match and match["file"] == str(path), line
        if message is not None:
            assert line == f"{path}:0:0: error: $: {message}"


def test_validate_escapes_control_characters(run_aicd: RunAicd, tmp_path: Path) -> None:
    # A key with a line separator, a bidi override and an escape sequence stays on one visible line.
    path = _write(tmp_path / "odd.yaml", b'"a\\u2028b\\u202e\\x1b[31m": 1\n')
    done = run_aicd("validate", str(path))
    assert done.returncode == 2
    for line in done.stdout.splitlines():
        assert ERROR_LINE.match(line), line
        assert "\u2028" not in line and "\u202e" not in line and "\x1b" not in line
    assert "a\\u2028b\\u202e\\x1b[31m" in done.stdout


def test_validate_usage_errors(run_aicd: RunAicd) -> None:
    for args in (("validate",), ("validate", "--format", "xml", CHECKOUT)):
        done = run_aicd(*args)
        assert_no_traceback(done)
        assert done.returncode == 2, args
        assert "Usage" in done.stderr


# --- aicd plan -------------------------------------------------------------------------------------------------


def test_plan_text_shows_stages_waves_targets_steps(run_aicd: RunAicd) -> None:
    done = run_aicd("plan", CHECKOUT, "--revision", SHA)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert done.stderr == ""
    for fragment in (
        "delivery delivery-checkout-api-4f2c1d9e5b6a",
        "artifact registry.example.com/payments/checkout-api:4f2c1d9",
        "build: make image TAG=4f2c1d9",
        "test unit: pytest -q",
        "provision database: terraform apply -auto-approve",
        "approval gate: 1 of U024BE7LH, oncall-payments within 24h",
        "wave 1: prod-use1",
        "wave 2: prod-euw1",
        "wave 3: edge-pops",
        "target prod-euw1 [argocd eu-west-1] apps/checkout-api/prod/eu-west-1/values.yaml",
        "fleet file fleets/edge-pops.yaml in batches 1%, 10%, 50%, 100%, max failures 2%",
        "Argo CD Application argocd/checkout-api-prod-euw1 (context prod-euw1)",
        "1-pause: pause 5m",
        "2-analysis: analysis 10m",
        "5-setWeight: setWeight 100",
    ):
        assert fragment in out, fragment
    # Plain text, never a Python dict or list repr.
    assert not any(marker in out for marker in ("{'", "['", "': ")), out
    # Order: staging before production, waves in order.
    positions = [
        out.index(text)
        for text in ("stage staging", "stage production", "wave 1: prod-use1", "wave 3: edge-pops")
    ]
    assert positions == sorted(positions)


def test_plan_json(run_aicd: RunAicd) -> None:
    done = run_aicd("plan", CHECKOUT, "--revision", SHA, "--format", "json")
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    assert plan["revision"] == SHA and plan["revision_short"] == SHA[:7]
    assert [stage["name"] for stage in plan["stages"]] == ["staging", "production"]
    assert plan["stages"][1]["waves"] == [["prod-use1"], ["prod-euw1"], ["edge-pops"]]
    assert [step["kind"] for step in plan["stages"][1]["steps"]] == [
        "setWeight", "pause", "analysis", "setWeight", "analysis", "setWeight",
    ]  # fmt: skip
    assert set(plan["targets"]) == {"staging-use1", "prod-use1", "prod-euw1", "edge-pops"}


def test_plan_without_revision_uses_the_announced_placeholder(run_aicd: RunAicd) -> None:
    done = run_aicd("plan", CHECKOUT)
    assert done.returncode == 0, done.stderr
    assert "app checkout-api @ " + "0" * 40 in done.stdout
    assert done.stderr.splitlines() == [
        f"aicd: no --revision given; planning with the placeholder revision {'0' * 40}"
    ]


def test_plan_without_revision_uses_the_local_source_repo(run_aicd: RunAicd, tmp_path: Path) -> None:
    source = tmp_path / "source"

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(source), *args], check=True, capture_output=True, text=True,
            env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t",
                 "GIT_COMMITTER_EMAIL": "t@x", "HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
        ).stdout.strip()  # fmt: skip

    source.mkdir()
    git("init", "-q", "-b", "main")
    git("commit", "-q", "--allow-empty", "-m", "main")
    git("checkout", "-q", "-b", "release/1.0")
    git("commit", "-q", "--allow-empty", "-m", "release")
    release = git("rev-parse", "HEAD")
    git("checkout", "-q", "main")
    git("commit", "-q", "--allow-empty", "-m", "later on main")
    spec = _write(
        tmp_path / "spec.yaml", MINIMAL.read_bytes().replace(b"https://git.example.com/shop.git", b"source")
    )
    done = run_aicd("plan", str(spec), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"app shop @ {release}" in done.stdout
    assert done.stderr.splitlines() == [
        f"aicd: planning release/1.0 of source at {release} (pass --revision to choose)"
    ]

    # A directory inside that repository but not one itself: no revision from the enclosing repository.
    (source / "sub").mkdir()
    inner = _write(
        tmp_path / "inner.yaml",
        MINIMAL.read_bytes().replace(b"https://git.example.com/shop.git", b"source/sub"),
    )
    done = run_aicd("plan", str(inner), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "placeholder revision" in done.stderr


@pytest.mark.parametrize("revision", ["g" * 40, "123456"])
def test_plan_bad_revision(run_aicd: RunAicd, revision: str) -> None:
    done = run_aicd("plan", CHECKOUT, "--revision", revision)
    assert_no_traceback(done)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        f"aicd: --revision {revision!r} is not a commit SHA (7 to 64 hex digits)"
    ]


def test_plan_invalid_spec_prints_the_validate_lines(run_aicd: RunAicd) -> None:
    broken = BROKEN / "semantic-edge-targets.yaml"
    done = run_aicd("plan", rel(broken), "--revision", SHA)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.splitlines() == expected_lines(broken)

    machine = run_aicd("plan", rel(broken), "--revision", SHA, "--format", "json")
    assert machine.returncode == 2
    report = json.loads(machine.stdout)
    assert report["ok"] is False and len(report["errors"]) == len(expected_lines(broken))


def test_plan_missing_file_and_usage(run_aicd: RunAicd) -> None:
    done = run_aicd("plan", "nowhere.yaml", "--revision", SHA)
    assert done.returncode == 2
    assert done.stderr.splitlines() == ["nowhere.yaml:0:0: error: $: cannot read: No such file or directory"]
    for args in (("plan",), ("plan", CHECKOUT, "--format", "yaml")):
        usage = run_aicd(*args)
        assert_no_traceback(usage)
        assert usage.returncode == 2, args


def _write(path: Path, raw: bytes) -> Path:
    path.write_bytes(raw)
    return path


def _sparse(path: Path, size: int) -> Path:
    with open(path, "wb") as handle:
        handle.truncate(size)
    return path


# --- paths the run would refuse -------------------------------------------------------------------------------
PROD_LINE = b"    prod: {kind: argocd, app: shop-prod, path: apps/shop/prod.yaml}\n"
BAD_PATHS: list[tuple[str, bytes, str, str]] = [
    ("parent", b'path: "../../etc/passwd"', "$.spec.targets.prod.path", "leaves the GitOps repository"),
    ("absolute", b'path: "/etc/passwd"', "$.spec.targets.prod.path", "is absolute"),
    ("dot-git", b'path: ".git/config"', "$.spec.targets.prod.path", "Git's own .git directory"),
    ("inner-dot-git", b'path: "apps/.GIT/hooks/pre-commit"', "$.spec.targets.prod.path", ".git directory"),
    ("dot", b'path: "."', "$.spec.targets.prod.path", "'.' or empty part"),
    ("double-slash", b'path: "apps//prod.yaml"', "$.spec.targets.prod.path", "'.' or empty part"),
    ("empty", b'path: ""', "$.spec.targets.prod.path", "should be non-empty"),
    ("nul", b'path: "apps/prod\\0.yaml"', "$.spec.targets.prod.path", "control character"),
    ("backslash", b"path: 'apps\\prod.yaml'", "$.spec.targets.prod.path", "backslash"),
    ("artifact", b'path: "apps/{{ artifact }}.yaml"', "$.spec.targets.prod.path", "{{ artifact }}"),
    (
        "fleet-file",
        b'kind: edge, sites: {file: "../fleets/pops.yaml"}, path: "apps/{{ site }}.yaml", batches: ["100%"]',
        "$.spec.targets.prod.sites.file",
        "fleet file '../fleets/pops.yaml' leaves the GitOps repository",
    ),
]


def _bad_path_spec(tmp_path: Path, name: str, replacement: bytes) -> Path:
    raw = MINIMAL.read_bytes()
    assert PROD_LINE in raw
    line = b"    prod: {kind: argocd, app: shop-prod, " + replacement + b"}\n"
    if b"kind: edge" in replacement:
        line = b"    prod: {" + replacement + b"}\n"
    path = tmp_path / f"{name}.yaml"
    path.write_bytes(raw.replace(PROD_LINE, line))
    return path


def test_validate_refuses_paths_outside_the_repo(run_aicd: RunAicd, tmp_path: Path) -> None:
    files = [_bad_path_spec(tmp_path, name, replacement) for name, replacement, _, _ in BAD_PATHS]
    done = run_aicd("validate", *map(str, files))
    assert_no_traceback(done)
    assert done.returncode == 2
    lines = done.stdout.splitlines()
    assert len(lines) == len(BAD_PATHS), done.stdout
    for file, line, (_, _, json_path, message) in zip(files, lines, BAD_PATHS, strict=True):
        match = ERROR_LINE.match(line)
        assert match, line
        assert (match["file"], match["line"], match["path"]) == (str(file), "17", json_path), line
        assert message in match["message"], line


@pytest.mark.parametrize(
    ("name", "replacement", "json_path", "message"), BAD_PATHS, ids=[p[0] for p in BAD_PATHS]
)
def test_plan_refuses_paths_outside_the_repo(
    run_aicd: RunAicd, tmp_path: Path, name: str, replacement: bytes, json_path: str, message: str
) -> None:
    spec = _bad_path_spec(tmp_path, name, replacement)
    done = run_aicd("plan", str(spec), "--revision", SHA)
    assert_no_traceback(done)
    assert done.returncode == 2 and done.stdout == ""
    (line,) = done.stderr.splitlines()
    match = ERROR_LINE.match(line)
    assert match and (match["file"], match["line"], match["path"]) == (str(spec), "17", json_path), line
    assert message in match["message"]


def test_validate_names_a_bad_write_path_with_file_line_and_problem(run_aicd: RunAicd) -> None:
    path = BROKEN / "schema-write-path.yaml"
    done = run_aicd("validate", rel(path))
    assert_no_traceback(done)
    assert done.returncode == 2
    assert done.stdout.splitlines() == expected_lines(path)
    assert done.stdout.splitlines()[0] == (
        f"{rel(path)}:25:5: error: $.spec.write.image: write path 'images[name=shop.newTag': the [ at character 7"
        " is not closed; write e.g. image.tag, images[0].newTag, images[name=app].newTag"
    )
