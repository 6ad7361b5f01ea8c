"""DeliveryWorkflow end to end on `git` targets: real Temporal, real bare Git repos."""

from __future__ import annotations

import asyncio
from pathlib import Path

from temporalio.testing import WorkflowEnvironment

from aicd.client import ActionRefused, get_status, handle_for, send_action, start_delivery
from aicd.messages import HumanAction, Trigger
from aicd.testing.engine import (
    commits,
    make_repo,
    plan_from,
    running_worker,
    show,
    spec_document,
    temporal_env,
)

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
