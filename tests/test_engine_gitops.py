"""GitOps commits under pressure: concurrent deliveries pushing into one repo lose nothing, and a retried
commit activity finds its own trailer instead of committing twice."""

from __future__ import annotations

import asyncio
import difflib
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from temporalio.client import Client, WorkflowHandle, WorkflowHistory
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from aicd.activities import WorkerSettings
from aicd.activities.gitops import CommitRequest, FileEdit, GitOpsActivities, RollbackRequest
from aicd.client import handle_for, start_delivery
from aicd.messages import Trigger
from aicd.plan import DeliveryPlan
from aicd.testing.engine import (
    commits,
    make_repo,
    plan_from,
    running_worker,
    show,
    spec_document,
    temporal_env,
)
from aicd.worker import build_worker

__all__ = ["temporal_env"]


async def test_ten_deliveries_push_into_one_repo_and_lose_nothing(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    apps = [f"app-{index}" for index in range(10)]
    source, revision = make_repo(tmp_path, "source", {"README": "x\n"})
    gitops, _ = make_repo(
        tmp_path, "gitops", {f"apps/{app}/values.yaml": "image:\n  tag: v0\n" for app in apps}
    )
    plans = [
        plan_from(
            spec_document(
                app,
                source,
                gitops,
                {"web": {"kind": "git", "path": f"apps/{app}/values.yaml"}},
                [
                    {
                        "name": "prod",
                        "targets": ["web"],
                        "strategy": {"canary": {"steps": [{"setWeight": 50}, {"setWeight": 100}]}},
                    }
                ],
            ),
            revision,
        )
        for app in apps
    ]
    client = temporal_env.client
    # Two workers with separate clones race each other, as two worker hosts would.
    async with running_worker(client, tmp_path / "state-a") as queue:
        second_client = await Client.connect(client.service_client.config.target_host)
        async with build_worker(second_client, WorkerSettings(tmp_path / "state-b"), queue):
            await asyncio.gather(
                *(start_delivery(client, plan, Trigger("cli", "t"), queue=queue) for plan in plans)
            )
            results = await asyncio.gather(*(handle_for(client, plan.delivery_id).result() for plan in plans))
    assert {result.phase for result in results} == {"succeeded"}
    log = [entry for entry in commits(gitops) if "Aicd-Step" in entry]
    per_delivery = Counter(entry["Aicd-Delivery"] for entry in log)
    assert per_delivery == {f"{app}@{revision}": 3 for app in apps}  # 2 setWeight + promote each
    assert len({(entry["Aicd-Delivery"], entry["Aicd-Step"]) for entry in log}) == len(log)  # no step twice
    claimed = {sha for result in results for sha in result.commits}
    assert claimed == {entry["sha"] for entry in log}
    for app in apps:
        assert "weight: 0" in show(gitops, "main", f"apps/{app}/values.yaml")


async def test_writes_go_to_the_one_writer_and_wait_for_it(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """Delivery workers never push: every GitOps write of a delivery is scheduled on the writer queue, so a
    fleet of delivery-only workers waits for the writer instead of racing each other's pushes."""
    source, revision = make_repo(tmp_path, "source", {"README": "x\n"})
    gitops, _ = make_repo(tmp_path, "gitops", {"web.yaml": "image:\n  tag: v0\n"})
    plan = plan_from(
        spec_document(
            "roles",
            source,
            gitops,
            {"web": {"kind": "git", "path": "web.yaml"}},
            [
                {
                    "name": "prod",
                    "targets": ["web"],
                    "strategy": {"canary": {"steps": [{"setWeight": 50}, {"setWeight": 100}]}},
                }
            ],
        ),
        revision,
    )
    client = temporal_env.client
    queue = f"roles-{uuid.uuid4().hex[:8]}"
    handle = handle_for(client, plan.delivery_id)
    settings = WorkerSettings(tmp_path / "state-delivery")
    async with build_worker(client, settings, queue, role="delivery") as delivery_only:
        assert delivery_only.task_queues[0] == queue and f"{queue}-gitops" not in delivery_only.task_queues
        await start_delivery(client, plan, Trigger("cli", "t"), queue=queue)
        pending = await wait_for_pending_write(client, handle)
        assert len(commits(gitops)) == 1  # only the seed: nobody served the write
    async with build_worker(client, settings, queue, role="delivery"):
        async with build_worker(
            client, WorkerSettings(tmp_path / "state-writer"), queue, role="gitops-writer"
        ):
            result = await handle.result()
    assert result.phase == "succeeded"
    writes = {"apply_step", "gitops_commit", "gitops_rollback", "gitops_rollback_many"}
    scheduled_writes = [
        child_event.activity_task_scheduled_event_attributes
        for child in await child_histories(client, plan.delivery_id)
        for child_event in child.events
        if child_event.HasField("activity_task_scheduled_event_attributes")
        and child_event.activity_task_scheduled_event_attributes.activity_type.name in writes
    ]
    assert pending in {attributes.activity_type.name for attributes in scheduled_writes}
    assert {attributes.task_queue.name for attributes in scheduled_writes} == {f"{queue}-gitops"}
    assert "tag: " in show(gitops, "main", "web.yaml") and len(commits(gitops)) > 1


async def wait_for_pending_write(client: Client, handle: WorkflowHandle[Any, Any]) -> str:
    """The name of the first pending activity of the delivery's target workflows, once one is pending."""
    for _ in range(300):
        for child in await child_ids(client, handle.id):
            try:
                description = await client.get_workflow_handle(child).describe()
            except RPCError as error:  # initiated in the delivery's history, not started yet
                if error.status != RPCStatusCode.NOT_FOUND:
                    raise
                continue
            for activity in description.raw_description.pending_activities:
                return activity.activity_type.name
        await asyncio.sleep(0.1)
    raise AssertionError("no write was ever scheduled")


async def child_ids(client: Client, delivery_id: str) -> list[str]:
    history = await client.get_workflow_handle(delivery_id).fetch_history()
    return [
        event.start_child_workflow_execution_initiated_event_attributes.workflow_id
        for event in history.events
        if event.HasField("start_child_workflow_execution_initiated_event_attributes")
    ]


async def child_histories(client: Client, delivery_id: str) -> list[WorkflowHistory]:
    histories = [await client.get_workflow_handle(delivery_id).fetch_history()]
    for child in await child_ids(client, delivery_id):
        histories.append(await client.get_workflow_handle(child).fetch_history())
    return histories


async def test_commit_activity_is_idempotent_by_trailer(tmp_path: Path) -> None:
    gitops, _ = make_repo(tmp_path, "gitops", {"v.yaml": "a: 1\n"})
    activities = GitOpsActivities(tmp_path / "state")
    request = CommitRequest(
        gitops, "main", "x@abc", "s/t/0-setWeight", "aicd", "aicd: x", [FileEdit("v.yaml", {"a": 2})]
    )
    first = await activities.commit(request)
    again = await GitOpsActivities(tmp_path / "other-state").commit(request)  # another worker, its own clone
    assert first.sha and not first.already_done
    assert again.sha == first.sha and again.already_done
    assert len(commits(gitops)) == 2
    rollback = RollbackRequest(
        gitops, "main", "x@abc", "s/t/rollback", "carol", "aicd: x rollback", ["v.yaml"]
    )
    undone = await activities.rollback(rollback)
    assert undone.sha and show(gitops, "main", "v.yaml") == "a: 1"
    assert (await activities.rollback(rollback)).already_done
    untouched = RollbackRequest(
        gitops, "main", "y@def", "s/u/rollback", "carol", "aicd: y rollback", ["v.yaml"]
    )
    assert (
        await activities.rollback(untouched)
    ).sha is None  # a delivery that never touched it commits nothing


async def test_path_outside_the_repo_is_refused(tmp_path: Path) -> None:
    gitops, _ = make_repo(tmp_path, "gitops", {"v.yaml": "a: 1\n"})
    request = CommitRequest(
        gitops, "main", "x@abc", "s/t/0", "aicd", "aicd: x", [FileEdit("../escape.yaml", {"a": 2})]
    )
    try:
        await GitOpsActivities(tmp_path / "state").commit(request)
        raise AssertionError("a path outside the repo was written")
    except Exception as error:
        assert "leaves the GitOps repository" in str(error)
    assert len(commits(gitops)) == 1 and not (tmp_path / "state" / "gitops" / "escape.yaml").exists()


KUSTOMIZATION = """apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - ../../base   # the app's manifests
images:
  - name: sidecar
    newTag: v1.31.2
  - name: app
    newName: registry.example.com/shop/app
    newTag: 0000000
"""


def kustomize_delivery(tmp_path: Path, image_path: str) -> tuple[str, DeliveryPlan]:
    source, revision = make_repo(tmp_path, "source", {"README": "x\n"})
    gitops, _ = make_repo(tmp_path, "gitops", {"apps/shop/kustomization.yaml": KUSTOMIZATION})
    # A kustomization.yaml has no canary keys: `weight`/`canaryImage` null, so steps write nothing there.
    document = spec_document(
        "shop",
        source,
        gitops,
        {"web": {"kind": "git", "path": "apps/shop/kustomization.yaml"}},
        [{"name": "prod", "targets": ["web"], "strategy": {"canary": {"steps": [{"setWeight": 100}]}}}],
        write={"image": image_path, "weight": None, "canaryImage": None},
    )
    return gitops, plan_from(document, revision)


async def test_a_kustomization_target_gets_a_one_line_commit(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    gitops, plan = kustomize_delivery(tmp_path, "images[name=app].newTag")
    client = temporal_env.client
    async with running_worker(client, tmp_path / "state") as queue:
        await start_delivery(client, plan, Trigger("cli", "t"), queue=queue)
        result = await handle_for(client, plan.delivery_id).result()
    assert result.phase == "succeeded", result.reason
    after = show(gitops, "main", "apps/shop/kustomization.yaml") + "\n"
    diff = [
        line
        for line in difflib.unified_diff(KUSTOMIZATION.splitlines(True), after.splitlines(True), n=0)
        if line[:1] in "+-" and line[:3] not in ("+++", "---")
    ]
    assert diff == ["-    newTag: 0000000\n", f"+    newTag: {plan.artifact_tag}\n"]
    assert yaml.safe_load(after)["images"][1] == {
        "name": "app",
        "newName": "registry.example.com/shop/app",
        "newTag": plan.artifact_tag,
    }
    steps = [entry["Aicd-Step"] for entry in commits(gitops) if "Aicd-Step" in entry]
    assert steps == ["prod/web/0-setWeight", "prod/web/promote"]


async def test_a_write_path_that_does_not_fit_the_file_fails_the_step_without_a_commit(
    temporal_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    gitops, plan = kustomize_delivery(tmp_path, "images[name=checkout].newTag")
    client = temporal_env.client
    async with running_worker(client, tmp_path / "state") as queue:
        await start_delivery(client, plan, Trigger("cli", "t"), queue=queue)
        result = await handle_for(client, plan.delivery_id).result()
    assert result.phase == "failed"
    # (The activity's message starts with the file's path, see the next test; the delivery's reason keeps the
    # innermost cause only, workflows/common.py cause_of.)
    for fragment in ("images[name=checkout].newTag", "no item of `images` (line 5)", "name: sidecar, app"):
        assert fragment in result.reason, result.reason
    # The setWeight step had nothing to write (no canary keys); the promotion, which writes the image, failed.
    steps = [entry["Aicd-Step"] for entry in commits(gitops) if "Aicd-Step" in entry]
    assert steps == ["prod/web/0-setWeight"]
    assert show(gitops, "main", "apps/shop/kustomization.yaml") + "\n" == KUSTOMIZATION


async def test_a_commit_with_a_path_that_does_not_fit_is_refused_and_commits_nothing(tmp_path: Path) -> None:
    gitops, _ = make_repo(tmp_path, "gitops", {"k.yaml": KUSTOMIZATION})
    request = CommitRequest(
        gitops, "main", "x@abc", "s/t/promote", "aicd", "aicd: x", [FileEdit("k.yaml", {"images.0": "v2"})]
    )
    with pytest.raises(ApplicationError) as raised:
        await GitOpsActivities(tmp_path / "state").commit(request)
    assert raised.value.type == "GitOpsFileInvalid" and raised.value.non_retryable
    assert str(raised.value).endswith(
        "k.yaml: `images.0` is a mapping (line 6); a write path must end at a single value (e.g. `images.0.name`)"
    )
    assert len(commits(gitops)) == 1 and show(gitops, "main", "k.yaml") + "\n" == KUSTOMIZATION
