"""DeliveryWorkflow end to end on `git` targets: real Temporal, real bare Git repos."""

from __future__ import annotations

import asyncio
from pathlib import Path

from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from aicd.client import ActionRefused, get_status, handle_for, send_action, start_delivery
from aicd.messages import HumanAction, Trigger, rollout_workflow_id
from aicd.testing.engine import (
    commits,
    git,
    make_repo,
    plan_from,
    running_worker,
    show,
    spec_document,
    temporal_env,
    wait_for,
)
from aicd.workflows.target_rollout import TargetRolloutWorkflow
from tests.record_histories import BUG_IN_STEP_2, ROLLOUT_BUG

__all__ = ["temporal_env"]

VALUES = "# values for {name}\nimage:\n  repository: example/app  # keep me\n  tag: v0\nreplicas: 2\n"


def two_stage_spec(
    tmp_path: Path, *, approval: dict | None = None, steps: list | None = None, scope: str = "stage"
) -> tuple[dict, str, str]:
    source, revision = make_repo(tmp_path, "source", {"README": "app\n"})
    names = ["staging", "prod-a", "prod-b"]
    gitops, _ = make_repo(
        tmp_path, "gitops", {f"apps/{name}/values.yaml": VALUES.format(name=name) for name in names}
    )
    targets = {name: {"kind": "git", "path": f"apps/{name}/values.yaml"} for name in names}
    production: dict = {
        "name": "production",
        "waves": [["prod-a"], ["prod-b"]],
        "strategy": {"canary": {"steps": steps or [{"setWeight": 20}, {"setWeight": 100}]}},
    }
    if approval:
        production["approval"] = approval
    stages = [{"name": "staging", "targets": ["staging"]}, production]
    document = spec_document("shop", source, gitops, targets, stages, rollback={"scope": scope})
    return document, gitops, revision


async def test_two_stages_two_waves_one_commit_per_step(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    document, gitops, revision = two_stage_spec(tmp_path)
    plan = plan_from(document, revision)
    client = temporal_env.client
    async with running_worker(client, tmp_path / "state") as queue:
        started = await start_delivery(client, plan, Trigger("cli", "tester"), queue=queue)
        assert started.started and started.delivery_id == plan.delivery_id
        again = await start_delivery(client, plan, Trigger("cli", "tester"), queue=queue)
        assert again.delivery_id == plan.delivery_id and not again.started
        result = await handle_for(client, plan.delivery_id).result()
    assert result.phase == "succeeded", result.reason
    log = commits(gitops)[1:]  # after the seed commit
    steps = [entry["Aicd-Step"] for entry in log]
    assert steps == [
        "staging/staging/0-setWeight",
        "staging/staging/promote",
        "production/prod-a/0-setWeight",
        "production/prod-a/1-setWeight",
        "production/prod-a/promote",
        "production/prod-b/0-setWeight",
        "production/prod-b/1-setWeight",
        "production/prod-b/promote",
    ]
    assert {entry["Aicd-Delivery"] for entry in log} == {f"shop@{revision}"}
    assert {entry["Aicd-Actor"] for entry in log} == {"aicd"}
    tag = plan.artifact_tag
    for name in ("staging", "prod-a", "prod-b"):
        values = show(gitops, "main", f"apps/{name}/values.yaml")
        assert f"tag: {tag}" in values and "weight: 0" in values
        assert "# keep me" in values and values.startswith(f"# values for {name}")
    first_prod = show(gitops, log[2]["sha"], "apps/prod-a/values.yaml")
    assert "weight: 20" in first_prod and "tag: v0" in first_prod  # stable untouched during the canary


async def test_approval_refusals_and_acceptance(temporal_env: WorkflowEnvironment, tmp_path: Path) -> None:
    document, gitops, revision = two_stage_spec(
        tmp_path, approval={"approvers": ["alice", "bob"], "minApprovals": 2, "timeout": "1h"}
    )
    plan = plan_from(document, revision)
    client = temporal_env.client
    async with running_worker(client, tmp_path / "state") as queue:
        await start_delivery(client, plan, Trigger("cli", "tester"), queue=queue)
        for _ in range(100):
            status = await get_status(client, plan.delivery_id)
            if status.pending_approval:
                break
            await asyncio.sleep(0.1)
        assert status.phase == "awaiting-approval" and status.pending_approval == "production"
        try:
            await send_action(client, plan.delivery_id, "approve", HumanAction("mallory"))
            raise AssertionError("a non-approver was accepted")
        except ActionRefused as refused:
            assert "not an approver" in str(refused)
        await send_action(client, plan.delivery_id, "approve", HumanAction("alice", stage="production"))
        try:
            await send_action(client, plan.delivery_id, "approve", HumanAction("alice"))
            raise AssertionError("a duplicate approval was accepted")
        except ActionRefused as refused:
            assert "already approved" in str(refused)
        assert (await get_status(client, plan.delivery_id)).phase == "awaiting-approval"
        await send_action(client, plan.delivery_id, "approve", HumanAction("bob"))
        result = await handle_for(client, plan.delivery_id).result()
        status_actions = [(a.kind, a.actor) for a in (await get_status(client, plan.delivery_id)).actions]
    assert result.phase == "succeeded"
    production = [entry for entry in commits(gitops) if entry.get("Aicd-Step", "").startswith("production/")]
    assert production[0]["Aicd-Actor"] == "bob"  # the approval that opened the gate
    assert status_actions == [("approve", "alice"), ("approve", "bob")]


async def _refused(client: Client, delivery_id: str, kind: str, action: HumanAction) -> str:
    try:
        outcome = await send_action(client, delivery_id, kind, action)
    except ActionRefused as refused:
        return str(refused)
    raise AssertionError(f"{action} was accepted: {outcome}")


async def test_one_person_approving_from_two_channels_counts_once(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """spec.people: Alice, listed by her Slack user ID and by her CLI name, does not pass a minApprovals: 2
    gate alone from Slack and the dashboard; Bob's approval does."""
    document, gitops, revision = two_stage_spec(
        tmp_path, approval={"approvers": ["U0ALICE", "alice", "bob"], "minApprovals": 2, "timeout": "1h"}
    )
    document["spec"]["people"] = {
        "alice": {"slack": "U0ALICE", "dashboard": "alice@example.com", "cli": "alice"}
    }
    plan = plan_from(document, revision)
    client = temporal_env.client
    async with running_worker(client, tmp_path / "state") as queue:
        await start_delivery(client, plan, Trigger("cli", "tester"), queue=queue)
        await wait_for(client, plan.delivery_id, lambda status: status.pending_approval == "production")
        await send_action(client, plan.delivery_id, "approve", HumanAction("U0ALICE", via="slack"))
        again = "alice (as U0ALICE via slack) already approved stage production; each person counts once"
        from_dashboard = HumanAction("alice@example.com", via="dashboard")
        assert await _refused(client, plan.delivery_id, "approve", from_dashboard) == again
        assert await _refused(client, plan.delivery_id, "approve", HumanAction("alice", via="cli")) == again
        # Her Slack ID is hers from Slack only: a dashboard sign-in that reads U0ALICE is someone else.
        impostor = HumanAction("U0ALICE", via="dashboard")
        assert (
            await _refused(client, plan.delivery_id, "approve", impostor)
            == "actor 'U0ALICE' via 'dashboard' refused: a Slack user ID acts only through Slack's signed requests,"
            " not via dashboard"
        )
        status = await get_status(client, plan.delivery_id)
        assert status.phase == "awaiting-approval"
        assert status.approved_by("production") == ["alice (as U0ALICE via slack)"]
        await send_action(client, plan.delivery_id, "approve", HumanAction("bob", via="cli"))
        result = await handle_for(client, plan.delivery_id).result()
        status = await get_status(client, plan.delivery_id)
    assert result.phase == "succeeded", result.reason
    approvals = [(a.actor, a.via, a.person) for a in status.actions if a.kind == "approve"]
    assert approvals == [("U0ALICE", "slack", "alice"), ("bob", "cli", "")]
    production = [entry for entry in commits(gitops) if entry.get("Aicd-Step", "").startswith("production/")]
    assert production[0]["Aicd-Actor"] == "bob"  # the approval that opened the gate


async def test_a_rejection_names_the_person(temporal_env: WorkflowEnvironment, tmp_path: Path) -> None:
    document, _, revision = two_stage_spec(
        tmp_path, approval={"approvers": ["alice", "bob"], "timeout": "1h"}
    )
    document["spec"]["people"] = {"alice": {"slack": "U0ALICE", "cli": "alice"}}
    plan = plan_from(document, revision)
    client = temporal_env.client
    async with running_worker(client, tmp_path / "state") as queue:
        await start_delivery(client, plan, Trigger("cli", "tester"), queue=queue)
        await wait_for(client, plan.delivery_id, lambda status: status.pending_approval == "production")
        await send_action(
            client, plan.delivery_id, "reject", HumanAction("U0ALICE", "not today", via="slack")
        )
        result = await handle_for(client, plan.delivery_id).result()
        status = await get_status(client, plan.delivery_id)
    assert [(a.kind, a.who()) for a in status.actions] == [("reject", "alice (as U0ALICE via slack)")]
    assert result.phase == "rejected"
    assert result.reason == "stage production rejected by alice (as U0ALICE via slack): not today"


async def test_a_bug_in_the_rollout_ends_it_failed_and_the_delivery_rolls_its_commit_back(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """The rollout commits its first canary weight, then its code raises a plain Python exception as it schedules
    the second step's `apply_step` (a bug: no Temporal failure). Temporal failed the rollout's workflow task and
    retried it for ever: the delivery waited on its rollout until someone terminated it. Now the rollout ends
    failed with the commit it made in its result, and the delivery's rollback puts the file back byte for byte."""
    seed = "# values for web\nimage: {tag: v0}  # stable\ncanary: {weight: 0, tag: v0}\n"
    source, revision = make_repo(tmp_path, "source", {"README": "app\n"})
    gitops, seeded = make_repo(tmp_path, "gitops", {"apps/web/values.yaml": seed})
    steps = [{"setWeight": 20}, {"setWeight": 100}]
    document = spec_document(
        "shop",
        source,
        gitops,
        {"web": {"kind": "git", "path": "apps/web/values.yaml"}},
        [{"name": "production", "targets": ["web"], "strategy": {"canary": {"steps": steps}}}],
    )
    plan = plan_from(document, revision)
    client = temporal_env.client
    async with running_worker(client, tmp_path / "state", [BUG_IN_STEP_2]) as queue:
        await start_delivery(client, plan, Trigger("cli", "tester"), queue=queue)
        # No one terminates anything: a rollout stuck on its bug leaves the delivery running past this.
        result = await asyncio.wait_for(handle_for(client, plan.delivery_id).result(), timeout=60)
        status = await get_status(client, plan.delivery_id)
        rollout_id = rollout_workflow_id(plan.delivery_id, "production", "web")
        rollout = await client.get_workflow_handle_for(TargetRolloutWorkflow.run, rollout_id).result()
    bug = f"the rollout failed on a bug: BugInWorkflow: {ROLLOUT_BUG}"
    log = [entry for entry in commits(gitops) if "Aicd-Step" in entry]
    assert [entry["Aicd-Step"] for entry in log] == ["production/web/0-setWeight", "production/web/rollback"]
    assert "weight: 20" in show(gitops, log[0]["sha"], "apps/web/values.yaml")
    assert rollout.outcome == "failed" and rollout.reason.startswith(bug), rollout.reason
    assert rollout.commits == [log[0]["sha"]]
    assert result.phase == "failed" and result.reason.startswith(f"web: {bug}"), result.reason
    assert git("--git-dir", gitops, "diff", "--name-only", seeded, "main") == ""  # byte for byte
    assert "canary: {weight: 0, tag: v0}" in show(gitops, "main", "apps/web/values.yaml")
    web = status.targets["web"]
    assert web.state == "rolled-back" and web.weight == 0, web
    assert web.commits == [log[0]["sha"], log[1]["sha"]], web.commits
    assert bug in web.message, web.message
