"""Rego in process (aicd.governance.rego, regorus): the example policies in policies/ pass their own Rego
tests, decide real input documents as documented, and a broken module names file:line."""

from __future__ import annotations

from pathlib import Path

import pytest

from aicd.governance.rego import PolicyError, evaluate, run_tests

POLICIES = Path(__file__).resolve().parents[1] / "policies"


def modules(*, tests: bool = False) -> dict[str, str]:
    return {
        f"policies/{path.name}": path.read_text()
        for path in sorted(POLICIES.glob("*.rego"))
        if tests or not path.name.endswith("_test.rego")
    }


def release_input(**changes: object) -> dict[str, object]:
    document: dict[str, object] = {
        "stage": {"name": "production", "regions": ["us-east-1"], "targets": ["prod-use1"]},
        "trigger": {"source": "github", "actor": "alice", "branch": "release/1.4"},
        "approvals": {"production": ["alice"]},
        "reports": {"trivy": {"Results": [{"Target": "app", "Vulnerabilities": []}]}},
    }
    document.update(changes)
    return document


def test_example_policies_pass_their_rego_tests() -> None:
    results = run_tests(modules(tests=True))
    assert len(results) >= 7
    failed = [(name, error) for name, passed, error in results if not passed]
    assert failed == []


def test_clean_release_passes_and_feature_branch_is_denied() -> None:
    assert evaluate(modules(), "aicd.delivery", release_input()).deny == []
    denied = evaluate(
        modules(),
        "aicd.delivery",
        release_input(trigger={"source": "github", "actor": "b", "branch": "feat/x"}),
    )
    assert denied.deny == [
        "production deliveries come from release/* branches; this one came from branch feat/x"
    ]


def test_critical_cve_from_a_trivy_report_is_denied_with_its_details() -> None:
    report = {
        "Results": [
            {
                "Target": "registry/app:1 (debian 12.5)",
                "Vulnerabilities": [
                    {
                        "VulnerabilityID": "CVE-2024-6387",
                        "PkgName": "openssh",
                        "InstalledVersion": "9.2",
                        "Severity": "CRITICAL",
                    },
                    {
                        "VulnerabilityID": "CVE-2024-1",
                        "PkgName": "zlib",
                        "InstalledVersion": "1.2",
                        "Severity": "HIGH",
                    },
                ],
            }
        ]
    }
    decision = evaluate(modules(), "aicd.delivery", release_input(reports={"trivy": report}))
    assert decision.deny == [
        "critical vulnerability CVE-2024-6387 in openssh 9.2 (registry/app:1 (debian 12.5))"
    ]
    assert decision.warn == ["high-severity vulnerability CVE-2024-1 in zlib"]


def test_two_regions_need_two_distinct_approvers() -> None:
    stage = {"name": "production", "regions": ["us-east-1", "eu-west-1"], "targets": ["a", "b"]}
    one = evaluate(modules(), "aicd.delivery", release_input(stage=stage))
    assert one.deny == ["stage production touches 2 regions: it needs 2 distinct approvals, it has 1"]
    two = evaluate(
        modules(), "aicd.delivery", release_input(stage=stage, approvals={"production": ["a", "b"]})
    )
    assert two.deny == []


def test_broken_module_names_file_and_line() -> None:
    with pytest.raises(PolicyError) as raised:
        evaluate(
            {"policies/bad.rego": "package aicd.delivery\n\ndeny contains msg if {\n  msg :=\n}\n"},
            "aicd.delivery",
            {},
        )
    assert "policies/bad.rego:" in str(raised.value)


def test_missing_package_is_an_error_not_an_allow() -> None:
    with pytest.raises(PolicyError, match=r"no module declares package aicd\.other"):
        evaluate(modules(), "aicd.other", release_input())
