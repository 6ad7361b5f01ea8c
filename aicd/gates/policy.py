"""The Rego policy gate: `data.<package>` evaluated over an input document (the delivery, the stage, the
artifact, the trigger, the approvals so far - as identities in `approvals` and as the spec's people in
`approved_by` -, the time, the reports the build left). Its `deny` messages hold
the stage until a fix (a new commit of the policy in the GitOps repo, read again at every recheck), an
override by one of the policy's `overriders` (with a reason), or an abort; `warn` messages only show.

In process (aicd.governance.rego, regorus) over the modules in the GitOps repository, or by an OPA server's
Data API when `opa.url` is set (the policies are then the server's). A policy that cannot be evaluated holds
too (fail closed), with the engine's message naming file:line."""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from aicd.gates.base import GateAnswer, GateContext, GateHold, GateRequest
from aicd.governance.model import PolicyPlan, SchedulePlan, matches
from aicd.governance.rego import PolicyError, decision_of, evaluate

TEST_SUFFIX = "_test.rego"


def policy_input(request: GateRequest, reports: dict[str, Any]) -> dict[str, Any]:
    """The input document (described in the README, "Policy gates")."""
    return {**request.input_document, "time": request.at, "wave": request.wave, "reports": reports}


class PolicyGate:
    name: ClassVar[str] = "policy"

    def applies(self, request: GateRequest) -> bool:
        policy = request.policy
        return (
            policy is not None
            and matches(policy.stages, request.stage)
            and (request.wave is None or policy.every_wave)
            and "override" not in request.skip
        )

    def plan_lines(self, policy: PolicyPlan | None, schedule: SchedulePlan | None, stage: str) -> list[str]:
        if policy is None or not matches(policy.stages, stage):
            return []
        overriders = f"; override by {', '.join(policy.overriders)}" if policy.overriders else ""
        return [f"policy gate: {policy.describe()}{overriders}"]

    async def check(self, context: GateContext, request: GateRequest, answer: GateAnswer) -> None:
        policy = request.policy
        assert policy is not None
        document = policy_input(request, await context.reports(request.delivery_id))
        try:
            if policy.opa_url:
                decision = decision_of(await context.opa_decision(policy.opa_url, policy.package, document))
            else:
                files = await context.gitops_files(
                    request.gitops_repo, request.gitops_branch, policy.modules, ".rego"
                )
                modules = {path: text for path, text in files.items() if not path.endswith(TEST_SUFFIX)}
                if not modules:
                    raise PolicyError(
                        f"no Rego modules at {', '.join(policy.modules)} on {request.gitops_branch} of the GitOps repo"
                    )
                decision = await asyncio.to_thread(evaluate, modules, policy.package, document)
        except PolicyError as error:
            answer.holds.append(
                GateHold(
                    "policy",
                    f"policy {policy.rule_path} could not be evaluated: {error}",
                    "override",
                    list(policy.overriders),
                    messages=[str(error)],
                    recheck_s=policy.recheck_s,
                )
            )
            return
        answer.warnings += [f"policy: {message}" for message in decision.warn]
        if decision.deny:
            answer.holds.append(
                GateHold(
                    "policy",
                    f"denied by policy {policy.rule_path}: {'; '.join(decision.deny)}",
                    "override",
                    list(policy.overriders),
                    messages=decision.deny,
                    recheck_s=policy.recheck_s,
                )
            )
