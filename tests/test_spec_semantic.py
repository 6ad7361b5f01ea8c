"""Every semantic check in aicd.spec.semantic: a fixture per check with its exact golden lines
(file:line:col, JSON path, message), and proof that the lines come from that check."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from aicd.spec.loader import parse_spec_bytes
from aicd.spec.semantic import SEMANTIC_CHECKS
from tests.helpers_spec import ERROR_LINE, MINIMAL, broken_fixtures, expected_lines, fixture_header, rel

CHECKS = {check.__name__: check for check in SEMANTIC_CHECKS}
SEMANTIC_FIXTURES = [path for path in broken_fixtures() if fixture_header(path)[0] == "check"]


def test_every_semantic_check_has_a_fixture() -> None:
    covered = {fixture_header(path)[1] for path in SEMANTIC_FIXTURES}
    assert covered == set(CHECKS), f"checks without a fixture: {sorted(set(CHECKS) - covered)}"


@pytest.mark.parametrize("path", SEMANTIC_FIXTURES, ids=lambda p: f"{fixture_header(p)[1]}:{p.stem}")
def test_semantic_fixture_golden(path: Path) -> None:
    spec, errors = parse_spec_bytes(path.read_bytes(), rel(path))
    assert spec is None
    assert [str(error) for error in errors] == expected_lines(path)


@pytest.mark.parametrize("path", SEMANTIC_FIXTURES, ids=lambda p: f"{fixture_header(p)[1]}:{p.stem}")
def test_fixture_errors_come_from_its_check(path: Path) -> None:
    """The golden lines are exactly what the named check finds (so a broken check fails here too)."""
    check = CHECKS[fixture_header(path)[1]]
    document = yaml.safe_load(path.read_bytes())
    findings = list(check(document["spec"]))
    assert findings, f"{check.__name__} finds nothing in {path.name}"
    golden = [ERROR_LINE.match(line) for line in expected_lines(path)]
    assert all(golden), "every golden line is file:line:col: error: path: message"
    found = sorted((_json_path(finding_path), message) for finding_path, message in findings)
    assert found == sorted((match["path"], match["message"]) for match in golden if match)


def _json_path(path: tuple[str | int, ...]) -> str:
    from aicd.spec.errors import json_path

    return json_path(path)


def test_valid_spec_passes_every_check() -> None:
    document = yaml.safe_load(MINIMAL.read_bytes())
    for name, check in CHECKS.items():
        assert list(check(document["spec"])) == [], name


def test_checks_run_in_file_order_across_checks() -> None:
    # Two checks' findings in one file come out sorted by position, not grouped by check.
    raw = (
        MINIMAL.read_bytes()
        .replace(b"targets: [prod]", b"targets: [prd]")
        .replace(b'"TAG={{ revision.short }}"', b'"TAG={{ sha }}"')
    )
    errors = parse_spec_bytes(raw, "spec.yaml")[1]
    assert [(error.line, error.path) for error in errors] == [
        (11, "$.spec.build.command[2]"),
        (28, "$.spec.stages[1].targets[0]"),
    ]


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            b"{duration: 1m}",
            b"{duration: 0ms}",
            "spec.yaml:33:26: error: $.spec.stages[1].strategy.canary.steps[1].analysis.duration:"
            " duration '0ms' must be greater than zero",
        ),
        (
            b"    - name: production\n",
            b"    - name: production\n      approval: {approvers: [a], minApprovals: 2}\n",
            "spec.yaml:28:34: error: $.spec.stages[1].approval.minApprovals: minApprovals 2 exceeds the 1 distinct"
            " people among the approvers",
        ),
        (
            b"            - setWeight: 100\n",
            b"            - setWeight: 100\n            - setWeight: 50\n",
            "spec.yaml:35:15: error: $.spec.stages[1].strategy.canary.steps[3].setWeight:"
            " setWeight 50 is lower than the step before (100); weights never decrease",
        ),
        (
            b"    - name: staging\n      targets: [staging]\n",
            b"    - name: staging\n      targets: [staging, staging]\n",
            "spec.yaml:26:26: error: $.spec.stages[0].targets[1]: target 'staging' appears twice in one wave of stage 'staging'",
        ),
        (
            b"        kind: count\n",
            b"        kind: count\n        direction: either\n        tolerance: 150%\n",
            "spec.yaml:25:9: error: $.spec.analysis.metrics[0].tolerance:"
            " tolerance 150% must be below 100% when decreases are bad (direction either)",
        ),
    ],
    ids=["zero-ms", "min-approvals", "weight-down-after-100", "twice-in-targets", "tolerance-either"],
)
def test_more_semantic_cases(old: bytes, new: bytes, expected: str) -> None:
    raw = MINIMAL.read_bytes()
    assert raw.count(old) == 1
    assert [str(error) for error in parse_spec_bytes(raw.replace(old, new), "spec.yaml")[1]] == [expected]


def test_blue_green_analysis_checks_are_checked_like_a_canarys() -> None:
    """An analysis step in a blue-green's checks gets the checks one in a canary's steps gets: `maxDuration`
    without `onInconclusive: extend` used to pass validation there, silently meaningless."""
    raw = MINIMAL.read_bytes()
    canary = b"strategy:\n        canary:\n          steps:\n"
    assert raw.count(canary) == 1 and raw.count(b"{duration: 1m}") == 1
    blue_green = raw.replace(canary, b"strategy:\n        blueGreen:\n          prePromotionAnalysis:\n")
    blue_green = blue_green.replace(b"{duration: 1m}", b"{duration: 1m, maxDuration: 30s}")
    errors = [str(error) for error in parse_spec_bytes(blue_green, "spec.yaml")[1]]
    assert any(
        "$.spec.stages[1].strategy.blueGreen.prePromotionAnalysis[1].analysis.maxDuration:"
        " maxDuration applies with onInconclusive: extend" in error
        for error in errors
    ), errors


def test_increase_metrics_may_tolerate_more_than_100_percent() -> None:
    raw = MINIMAL.read_bytes().replace(
        b"        kind: count\n", b"        kind: count\n        tolerance: 150%\n"
    )
    spec, errors = parse_spec_bytes(raw, "spec.yaml")
    assert errors == [] and spec is not None
