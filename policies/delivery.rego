# Example delivery policies for aicd's policy gate (spec.policy: {package: aicd.delivery, modules: [policies/]}).
# aicd evaluates data.aicd.delivery before each stage; every `deny` message holds the stage, and shows in
# `aicd status` and Slack, until a fix (a new commit of this file, a new build) or an override by a listed
# approver. The input document is described in the README ("Policy gates").
package aicd.delivery

import rego.v1

# A stage touching more than this many regions needs two distinct approvals.
max_regions_single_approval := 1

production if startswith(input.stage.name, "prod")

# No critical CVEs in production: the build writes Trivy's JSON report to $AICD_REPORTS_DIR/trivy.json.
deny contains msg if {
	production
	some result in input.reports.trivy.Results
	some vulnerability in result.Vulnerabilities
	vulnerability.Severity == "CRITICAL"
	msg := sprintf("critical vulnerability %s in %s %s (%s)", [
		vulnerability.VulnerabilityID,
		vulnerability.PkgName,
		vulnerability.InstalledVersion,
		result.Target,
	])
}

# Production only from release/* branches.
deny contains msg if {
	production
	not from_release_branch
	msg := sprintf("production deliveries come from release/* branches; this one came from %s", [origin])
}

from_release_branch if {
	is_string(input.trigger.branch)
	glob.match("release/*", ["/"], input.trigger.branch)
}

origin := sprintf("branch %s", [input.trigger.branch]) if is_string(input.trigger.branch)

else := sprintf("no branch (%s by %s)", [input.trigger.source, input.trigger.actor])

# Two approvers for a stage touching more than N regions.
deny contains msg if {
	regions := count(input.stage.regions)
	regions > max_regions_single_approval
	approvers := {actor | some actor in object.get(input.approvals, input.stage.name, [])}
	count(approvers) < 2
	msg := sprintf("stage %s touches %d regions: it needs 2 distinct approvals, it has %d", [
		input.stage.name,
		regions,
		count(approvers),
	])
}

# Warnings show in status without holding the stage.
warn contains msg if {
	production
	some result in input.reports.trivy.Results
	some vulnerability in result.Vulnerabilities
	vulnerability.Severity == "HIGH"
	msg := sprintf("high-severity vulnerability %s in %s", [vulnerability.VulnerabilityID, vulnerability.PkgName])
}

# A build that ran and left no scan is held, not waved through: its report may never have been written, or
# be on a worker that is gone (aicd then says so in the delivery's warnings).
deny contains msg if {
	production
	input.commands.build == "succeeded"
	not input.reports.trivy
	msg := "no Trivy report from the build: it must write $AICD_REPORTS_DIR/trivy.json (rebuild to scan again)"
}

warn contains msg if {
	production
	not input.commands.build
	not input.reports.trivy
	msg := "no Trivy report: this delivery has no build to scan its image"
}
