# Tests of the example policies: `opa test policies/` runs them, and so does aicd's test suite
# (tests/test_governance_policy.py) with the in-process engine.
package aicd.delivery_test

import rego.v1

import data.aicd.delivery

production_release := {
	"stage": {"name": "production", "regions": ["us-east-1"], "targets": ["prod-use1"]},
	"trigger": {"source": "github", "actor": "alice", "branch": "release/1.4"},
	"approvals": {"production": ["alice"]},
	"reports": {"trivy": {"Results": [{"Target": "app", "Vulnerabilities": []}]}},
}

test_clean_release_passes if {
	count(delivery.deny) == 0 with input as production_release
}

test_critical_cve_denied if {
	report := {"Results": [{"Target": "app (debian 12)", "Vulnerabilities": [{
		"VulnerabilityID": "CVE-2024-0001", "PkgName": "openssl", "InstalledVersion": "3.0.1",
		"Severity": "CRITICAL",
	}]}]}
	delivery.deny == {"critical vulnerability CVE-2024-0001 in openssl 3.0.1 (app (debian 12))"} with input as object.union(production_release, {"reports": {"trivy": report}})
}

test_critical_cve_allowed_in_staging if {
	report := {"Results": [{"Target": "app", "Vulnerabilities": [{"VulnerabilityID": "CVE-1", "PkgName": "x", "InstalledVersion": "1", "Severity": "CRITICAL"}]}]}
	count(delivery.deny) == 0 with input as object.union(production_release, {"stage": {"name": "staging", "regions": ["us-east-1"]}, "reports": {"trivy": report}})
}

test_feature_branch_denied_in_production if {
	delivery.deny == {"production deliveries come from release/* branches; this one came from branch feature/x"} with input as object.union(production_release, {"trigger": {"source": "github", "actor": "bob", "branch": "feature/x"}})
}

test_cli_delivery_without_branch_denied_in_production if {
	delivery.deny == {"production deliveries come from release/* branches; this one came from no branch (cli by carol)"} with input as object.union(production_release, {"trigger": {"source": "cli", "actor": "carol", "branch": null}})
}

test_many_regions_need_two_approvers if {
	stage := {"name": "production", "regions": ["us-east-1", "eu-west-1"]}
	delivery.deny == {"stage production touches 2 regions: it needs 2 distinct approvals, it has 1"} with input as object.union(production_release, {"stage": stage})
	count(delivery.deny) == 0 with input as object.union(production_release, {"stage": stage, "approvals": {"production": ["alice", "bob"]}})
}

test_missing_report_warns_without_a_build if {
	delivery.warn == {"no Trivy report: this delivery has no build to scan its image"} with input as object.remove(production_release, ["reports"])
	count(delivery.deny) == 0 with input as object.remove(production_release, ["reports"])
}

test_a_build_without_a_report_is_denied if {
	built := object.union(object.remove(production_release, ["reports"]), {"commands": {"build": "succeeded"}})
	delivery.deny == {"no Trivy report from the build: it must write $AICD_REPORTS_DIR/trivy.json (rebuild to scan again)"} with input as built
	count(delivery.deny) == 0 with input as object.union(built, {"reports": production_release.reports})
}
